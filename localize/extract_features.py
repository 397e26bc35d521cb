"""Local feature extraction: DoG keypoints + patch descriptors -> hloc ``features.h5``.

Usage::

    python -m localize.extract_features --conf hardnet --image_dir IMAGES --export_dir OUT
    python -m localize.extract_features --conf hardnet --features weights/my.pt ...
    python -m localize.extract_features ... --shard 0/4   (one per process); then --merge 4

Per image, :mod:`localize.dog_features` (its ``default_conf``): grayscale, longer side resized to
at most ``resize_max``, OpenCV DoG keypoints, descriptors from oriented patches of ``mr_size``
sigma (or OpenCV SIFT / RootSIFT on the full image). Stored in hloc's layout (:mod:`localize.io`):
keypoints in original-image pixels with pixel centres at integers, ``scales`` = sigma (px),
``oris`` in degrees, descriptors (N, D) in memory and (D, N) in the file. :func:`main` takes
hloc's positional order ``(conf, image_dir, export_dir, as_half, image_list, feature_path,
overwrite)`` and hloc DoG confs naming one of our descriptors.
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from descriptors import registry
from localize import h5, image_io, io, parsers
from localize.cli import (
    ArgumentParser,
    InputError,
    existing_dir,
    existing_file,
    nonneg_int,
    output_dir,
    output_file,
    positive_float,
    positive_int,
    run_cli,
)
from localize.cli import device as device_arg
from localize.dog_features import default_conf, describe, finish_image, half_dtype, iter_prepared
from localize.provenance import check_provenance, features_provenance, resumable_features

logger = logging.getLogger(__name__)

IMAGE_GLOBS = ("*.jpg", "*.png", "*.jpeg", "*.JPG", "*.PNG")

#: conf keys that change the features written (recorded in the file, ``localize.provenance``)
PROVENANCE_KEYS = (
    "max_keypoints",
    "resize_max",
    "resize_force",
    "mr_size",
    "contrast_threshold",
    "edge_threshold",
    "min_size",
    "opencv_full_image",
    "contrast_stretch",
    "half",
)


def output_name(descriptor: str | Path, max_keypoints: int | None, resize_max: int | None) -> str:
    """The features file stem ``feats-<descriptor stem>-n<max_keypoints>-r<resize_max>``
    (``nall`` / ``rfull`` when None); the one place it is computed."""
    n = "all" if max_keypoints is None else max_keypoints
    r = "full" if resize_max is None else resize_max
    return f"feats-{Path(str(descriptor)).stem}-n{n}-r{r}"


confs: dict[str, dict[str, Any]] = {
    name: {
        **default_conf,
        "descriptor": name,
        "output": output_name(name, default_conf["max_keypoints"], default_conf["resize_max"]),
    }
    for name in registry.NAMES
}
# global descriptors for retrieval pairs (hloc's ``netvlad`` slot): VLAD over the collection's
# own local features (``localize.retrieve``; see :func:`extract_global`)
confs["vlad"] = {
    "global": "vlad",
    "descriptor": "rootsift",
    "num_words": 64,
    "max_keypoints": default_conf["max_keypoints"],
    "resize_max": 1024,
    "output": "global-feats-vlad",
}


def resolve_conf(
    conf: dict[str, Any] | str, features_override: str | Path | None = None
) -> dict[str, Any]:
    """Conf name or dict (ours, or hloc's with ``model`` / ``preprocessing``) -> full conf
    (defaults filled in). ``features_override`` (a registry name or a checkpoint path) replaces
    ``descriptor`` and the output name."""
    if isinstance(conf, str):
        if conf not in confs:
            raise ValueError(f"unknown extraction conf '{conf}': choose from {', '.join(confs)}")
        conf = confs[conf]
    conf = copy.deepcopy(dict(conf))
    if "model" in conf:
        conf = _from_hloc(conf)
    c = {**default_conf, **conf}
    if "descriptor" not in c:
        raise ValueError("extraction conf needs a 'descriptor' entry")
    if features_override is not None:
        c["descriptor"] = str(features_override)
        c["output"] = output_name(features_override, c["max_keypoints"], c["resize_max"])
    c.setdefault("output", output_name(c["descriptor"], c["max_keypoints"], c["resize_max"]))
    _check_limits(c)
    return c


#: hloc's ``dog`` extractor's default ``mr_size`` (used for hloc confs that do not set one)
HLOC_DOG_MR_SIZE = 12.0

#: hloc DoG descriptors that name PUBLISHED weights (kornia's HardNet / SOSNet in hloc)
HLOC_PUBLISHED = ("hardnet", "sosnet")


def _from_hloc(conf: dict[str, Any]) -> dict[str, Any]:
    """An hloc extraction conf -> ours. Only hloc's ``dog`` extractor with one of our
    descriptors can run (hloc's defaults: ``rootsift``, all keypoints, no resize); pycolmap's
    detector ``options`` do not apply to OpenCV's detector (logged)."""
    model = dict(conf.get("model") or {})
    pre = dict(conf.get("preprocessing") or {})
    name = model.get("name")
    if name != "dog":
        raise ValueError(
            f"hloc extractor {name!r} cannot run here: only hloc's 'dog' with a "
            f"descriptor of {', '.join(registry.NAMES)}"
        )
    desc = model.get("descriptor", "rootsift")
    if desc in HLOC_PUBLISHED:
        # hloc means the published (kornia) weights here, never descloc's own recipe weights
        if not model.get("weights"):
            raise ValueError(
                f"hloc DoG descriptor {desc!r} means the published {desc} weights, which are "
                f"not shipped (nothing is downloaded): add 'weights': <path to the published "
                f"checkpoint file> to the model conf, or use descloc's own weights with "
                f"extract_features.confs[{desc!r}]"
            )
        desc = str(model["weights"])
    elif desc not in registry.NAMES:
        raise ValueError(
            f"hloc DoG descriptor {desc!r} cannot run here: choose from {', '.join(registry.NAMES)}"
        )
    unknown = set(model) - {
        "name",
        "descriptor",
        "max_keypoints",
        "patch_size",
        "mr_size",
        "options",
        "weights",
    }
    if unknown:
        raise ValueError(f"hloc DoG conf: unknown option(s) {', '.join(sorted(unknown))}")
    if model.get("options"):
        logger.info(
            "hloc DoG options %s are pycolmap's; the OpenCV detector uses its own "
            "(contrast_threshold, edge_threshold)",
            model["options"],
        )
    if "patch_size" in model:
        logger.info(
            "hloc DoG patch_size %s: the descriptor's own patch size is used", model["patch_size"]
        )
    mk = model.get("max_keypoints", -1)
    out = {
        "descriptor": desc,
        "max_keypoints": None if mk in (-1, None) else mk,
        "resize_max": pre.get("resize_max"),
        "resize_force": bool(pre.get("resize_force")),
    }
    # hloc's conf means hloc's DoG support unless it names its own
    out["mr_size"] = model.get("mr_size", HLOC_DOG_MR_SIZE)
    if "output" in conf:
        out["output"] = conf["output"]
    return out


# ------------------------------------------------------------------------------------------
# Image lists
# ------------------------------------------------------------------------------------------
def list_images(
    image_dir: str | Path, image_list: Sequence[str] | str | Path | None = None
) -> list[str]:
    """Image names relative to ``image_dir`` (POSIX), sorted and deduplicated.

    ``image_list``: a sequence of names, or a text file with one name per line (the first
    whitespace-separated field, so Aachen query lists with intrinsics work). None = recursive glob
    of ``*.jpg *.png *.jpeg *.JPG *.PNG`` (as hloc). Listed names must be relative POSIX paths
    inside ``image_dir`` (``localize.parsers.check_name``): ValueError naming the list file and line.
    """
    image_dir = Path(image_dir)
    if image_list is None:
        if not image_dir.is_dir():
            raise FileNotFoundError(f"image directory not found: {image_dir}")
        names = {
            p.relative_to(image_dir).as_posix()
            for g in IMAGE_GLOBS
            for p in image_dir.rglob(g)
            if p.is_file()
        }
        for n in sorted(names):
            try:
                n.encode("utf-8")
            except UnicodeEncodeError:
                raise InputError(
                    f"{image_dir}: file name {n!r} is not valid UTF-8 (HDF5 "
                    "names must be); rename it"
                ) from None
        if not names:
            raise FileNotFoundError(f"no images ({' '.join(IMAGE_GLOBS)}) under {image_dir}")
        return sorted(names)
    if isinstance(image_list, (str, Path)):
        return list(dict.fromkeys(parsers.read_image_list(image_list)))
    names = [str(n) for n in image_list]
    for i, n in enumerate(names):
        parsers.check_name(n, f"image list entry {i} (image_dir {image_dir})")
    return list(dict.fromkeys(names))


def _default_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------
def main(
    conf: dict[str, Any] | str,
    image_dir: str | Path,
    export_dir: str | Path | None = None,
    as_half: bool = False,
    image_list: Sequence[str] | str | Path | None = None,
    feature_path: str | Path | None = None,
    overwrite: bool = False,
    *,
    device: torch.device | str | None = None,
    features_override: str | Path | None = None,
    shard: str | tuple[int, int] | None = None,
    extractor: Any = None,
    commit_every_s: float = 60.0,
    num_workers: int = 2,
    half: bool = False,
    fingerprints: dict[str, str] | None = None,
    max_pixels: int | None = None,
) -> Path:
    """Extract features for every image and write (append to) an hloc features file.

    The positional order is hloc's ``extract_features.main(conf, image_dir, export_dir,
    as_half, image_list, feature_path, overwrite)``; the rest is keyword-only.

    Args:
        conf: a key of :data:`confs` or a conf dict (``descriptor``, ``output``, see
            ``dog_features.default_conf``; or an hloc conf, see :func:`resolve_conf`).
        image_dir: image root; names in the file are relative to it.
        export_dir: where ``<conf['output']>.h5`` goes (used when ``feature_path`` is None).
        feature_path: explicit output file.
        image_list: names (or a list file) to process instead of globbing ``image_dir``.
        as_half: store descriptors / scores / scales / oris as float16 (keypoints stay float32).
        device: torch device for patches + network (default: cuda if available).
        features_override: registry name or checkpoint path replacing ``conf['descriptor']``.
        shard: ``'i/K'`` -> process every K-th image starting at i, write the shard file.
        overwrite: re-extract images already in the file.
        extractor: an already loaded extractor (tests / callers that extract several sets).
        commit_every_s: seconds between commits (a hard kill loses at most this much work;
            see ``localize.h5.H5Writer``).
        num_workers: threads decoding images + detecting DoG ahead of the network (0 = none).
        half: network inference under autocast (float16 on CUDA, bfloat16 on CPU; descriptors
            re-normalised in float32, accuracy in README.md); the default float32 output is
            byte-identical to ``dog_features.extract_image`` image by image.
        fingerprints: {name: ``image_io.image_fingerprint``} already computed by the caller
            (computed here for the names it lacks); stored with each entry, and an entry whose
            image changed on disk since is recomputed.
        max_pixels: refuse images whose header declares more pixels (default
            ``image_io.MAX_IMAGE_PIXELS``), before decoding them.
    Returns:
        path of the written features file (the shard file when sharding).
    Raises:
        image_io.ImageReadError naming a missing / unreadable image; registry.DescriptorError for an
        unknown descriptor; h5.H5Error for a corrupt existing output file or one that another
        process is writing.
    """
    conf = resolve_conf(conf, features_override)
    if conf.get("global"):
        return extract_global(
            conf, image_dir, export_dir, image_list, feature_path, overwrite, device=device
        )
    if half:
        conf["half"] = True
    if max_pixels is not None:
        conf["max_pixels"] = int(max_pixels)
    image_dir = Path(image_dir)
    if feature_path is None:
        if export_dir is None:
            raise ValueError("give export_dir or feature_path")
        feature_path = Path(export_dir) / f"{conf['output']}.h5"
    feature_path = Path(feature_path)
    names = list_images(image_dir, image_list)
    sh = h5.parse_shard(shard)
    if sh is not None:
        names = names[sh[0] :: sh[1]]
        feature_path = h5.shard_path(feature_path, *sh)

    prints = image_fingerprints(image_dir, names, fingerprints)
    prov = provenance(conf)
    if feature_path.is_file():  # another descriptor / conf / weights: refused before any work
        with h5.open_h5(feature_path) as fd:
            check_provenance(fd, prov, stamp=False)
    # a first look without the lock: nothing to do -> no model load; another process writing
    # the file -> its one-line error (naming the writer's pid) before any model is loaded
    if not overwrite and not _todo(names, feature_path, prints, log=True):
        if not feature_path.exists():  # nothing at all to write: still produce a valid file
            with h5.H5Writer(feature_path):
                pass
        return feature_path
    dev = _default_device(device)
    if extractor is None:
        extractor = registry.load(conf["descriptor"], device=dev, batch_size=conf["batch_size"])
    if half and extractor.is_opencv:
        logger.warning("--half has no effect on OpenCV descriptors (%s)", conf["descriptor"])
    with h5.H5Writer(feature_path, commit_every_s=commit_every_s) as w:
        check_provenance(w.file, prov)
        todo = names if overwrite else _todo(names, feature_path, prints)  # again, locked
        logger.info(
            "extracting %s (%s, dim %d%s) for %d images -> %s",
            conf["descriptor"],
            type(extractor).__name__,
            extractor.dim,
            ", autocast " + str(half_dtype(dev)).replace("torch.", "") if half else "",
            len(todo),
            feature_path,
        )
        for name, prep in tqdm(
            iter_prepared(todo, image_dir, conf, num_workers),
            total=len(todo),
            desc=f"extract {conf['output']}",
            unit="img",
            disable=None,
        ):
            desc = describe(
                prep["small"],
                prep["kps"],
                prep["xy"],
                prep["size"],
                prep["angle"],
                extractor,
                conf,
                dev,
            )
            feats = finish_image(prep, desc)
            if len(feats["keypoints"]) == 0:
                logger.warning(
                    "no keypoints in image %s (flat or tiny?); writing empty arrays", name
                )
            io.write_features(w.file, name, feats, as_half=as_half, fingerprint=prints.get(name))
            w.maybe_commit()
    return feature_path


def extract_global(
    conf: dict[str, Any],
    image_dir: str | Path,
    export_dir: str | Path | None = None,
    image_list: Sequence[str] | str | Path | None = None,
    feature_path: str | Path | None = None,
    overwrite: bool = False,
    device: torch.device | str | None = None,
) -> Path:
    """A global-descriptor conf (``confs['vlad']``): local features of ``conf['descriptor']``
    (``<export_dir>/<output_name>.h5``, reused when complete), a ``num_words`` VLAD vocabulary
    learned on them (``<output>-vocabulary.npz``), and one VLAD vector per image in
    ``<export_dir>/<conf['output']>.h5`` (or ``feature_path``), hloc's global-features layout
    read by ``localize.pairs_from_retrieval``, shifted to non-negative similarities
    (``retrieve.main(nonnegative=True)``). Returns the global-descriptor file."""
    from localize import retrieve

    if feature_path is None:
        if export_dir is None:
            raise ValueError("give export_dir or feature_path")
        feature_path = Path(export_dir) / f"{conf['output']}.h5"
    feature_path = Path(feature_path)
    local_conf = {k: v for k, v in conf.items() if k in default_conf or k == "descriptor"}
    local_conf["output"] = output_name(
        conf["descriptor"], conf["max_keypoints"], conf["resize_max"]
    )
    local = main(
        local_conf,
        image_dir,
        feature_path=feature_path.parent / f"{local_conf['output']}.h5",
        image_list=image_list,
        device=device,
    )
    names = list_images(image_dir, image_list)
    rconf = retrieve.resolve_conf({"num_words": conf["num_words"]})
    vocab_path = feature_path.with_name(f"{feature_path.stem}-vocabulary.npz")
    if overwrite or not vocab_path.is_file() or not feature_path.is_file():
        retrieve.learn_vocabulary_from_features(local, rconf, names=names, out_path=vocab_path)
    return retrieve.main(local, vocab_path, feature_path, names, rconf, nonnegative=True)


def provenance(conf: dict[str, Any]) -> dict[str, str]:
    """Root attributes of a features file made with ``conf``
    (``localize.provenance.features_provenance``): the descriptor, the :data:`PROVENANCE_KEYS`
    of the conf, the weights file's hash ('opencv' for sift / rootsift, 'unknown' when no file
    is found)."""
    d = str(conf["descriptor"])
    path = registry.weights_path(d) if d in registry.NAMES else Path(d)
    if d in registry.OPENCV_NAMES:
        weights = "opencv"
    elif path.is_file():
        weights = image_io.image_fingerprint(path)
    else:
        weights = "unknown"
    c = {k: conf.get(k, default_conf.get(k)) for k in PROVENANCE_KEYS}
    c["half"] = bool(c["half"])
    if not c["contrast_stretch"]:  # off: the provenance of files written before the key existed
        del c["contrast_stretch"]
    return features_provenance(Path(d).stem if path.is_file() else d, c, weights)


def image_fingerprints(
    image_dir: str | Path, names: Sequence[str], known: dict[str, str] | None = None
) -> dict[str, str]:
    """{name: ``image_io.image_fingerprint(image_dir / name)``}, reusing the entries of ``known``.

    A missing / unreadable image gets none here: its one-line error comes when it is read, in
    list order, after the images before it are written.
    """
    known = known or {}
    out: dict[str, str] = {}
    for n in names:
        if n in known:
            out[n] = known[n]
            continue
        try:
            out[n] = image_io.image_fingerprint(Path(image_dir) / n)
        except image_io.ImageReadError:
            pass
    return out


def _todo(
    names: Sequence[str],
    feature_path: Path,
    fingerprints: dict[str, str] | None = None,
    log: bool = False,
) -> list[str]:
    """``names`` not resumable from ``feature_path`` (see
    ``localize.provenance.resumable_features``; entries whose image fingerprint changed are not)."""
    done = resumable_features(feature_path, fingerprints=fingerprints)
    todo = [n for n in names if n not in done]
    if log and len(todo) < len(names):
        logger.info(
            "%d/%d images already in %s, skipping them",
            len(names) - len(todo),
            len(names),
            feature_path,
        )
    return todo


def _keypoint_count(v: str) -> int | str:
    """argparse type for --max_keypoints: an integer >= 1, or 'all' (no limit)."""
    return "all" if v == "all" else positive_int(v)


def _check_limits(c: dict[str, Any]) -> None:
    """max_keypoints: None (all) or an int >= 1; resize_max: None (full size) or an int >= 1;
    mr_size: a number > 0."""
    for k in ("max_keypoints", "resize_max"):
        v = c.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"extraction conf: {k} must be None or an integer >= 1, got {v!r}")
    v = c.get("mr_size")
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not 0 < v < np.inf:
        raise ValueError(f"extraction conf: mr_size must be a number > 0, got {v!r}")


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--conf",
        default="hardnet",
        choices=list(confs),
        help="extraction conf (descriptor); hloc conf dicts work from Python",
    )
    p.add_argument(
        "--image_dir",
        type=existing_dir,
        required=True,
        help="image root (names are relative to it)",
    )
    p.add_argument(
        "--export_dir",
        type=output_dir,
        help="output folder: the features file is <export_dir>/<conf output>.h5",
    )
    p.add_argument(
        "--feature_path", type=output_file, help="features file to write (instead of --export_dir)"
    )
    p.add_argument("--image_list", type=existing_file, help="text file, one image name per line")
    p.add_argument("--features", help="descriptor name or checkpoint path overriding the conf")
    p.add_argument(
        "--max_keypoints",
        type=_keypoint_count,
        help="strongest DoG keypoints kept per image: an integer >= 1, or 'all'",
    )
    p.add_argument(
        "--resize_max",
        type=positive_int,
        help="longer image side seen by the detector, pixels (>= 1)",
    )
    p.add_argument(
        "--mr_size",
        type=positive_float,
        help=f"patch side in units of sigma (default {default_conf['mr_size']:g}; hloc's DoG "
        f"uses {HLOC_DOG_MR_SIZE:g})",
    )
    p.add_argument(
        "--as_half", action="store_true", help="store descriptors as float16 (hloc as_half)"
    )
    p.add_argument("--device", type=device_arg, help="torch device (default: cuda if available)")
    p.add_argument("--shard", help="i/K: process every K-th image starting at i")
    p.add_argument("--merge", type=positive_int, metavar="K", help="merge K shard files, then exit")
    p.add_argument("--overwrite", action="store_true", help="re-extract images already in the file")
    p.add_argument(
        "--commit_interval",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="seconds between commits (a hard kill loses at most this much work)",
    )
    p.add_argument(
        "--num_workers",
        type=nonneg_int,
        default=2,
        help="threads decoding images + detecting keypoints ahead of the network",
    )
    p.add_argument(
        "--half",
        action="store_true",
        help="network under autocast: float16 on CUDA, bfloat16 on CPU",
    )
    p.add_argument(
        "--max_pixels",
        type=positive_int,
        default=image_io.MAX_IMAGE_PIXELS,
        help="refuse images declaring more pixels (w * h) than this, before decoding them",
    )
    return p.parse_args(None if argv is None else list(argv))


def cli(argv: Iterable[str] | None = None) -> Path:
    """Command line (see the module docstring); known errors exit 2 with one line."""
    args = _parse_args(argv)
    return run_cli("localize.extract_features", _run_cli, args)


def _run_cli(args: argparse.Namespace) -> Path:
    conf = dict(confs[args.conf])
    for k in ("max_keypoints", "resize_max"):
        if getattr(args, k) is not None:
            conf[k] = None if getattr(args, k) == "all" else getattr(args, k)
            conf["output"] = output_name(
                conf["descriptor"], conf["max_keypoints"], conf["resize_max"]
            )
    if args.mr_size is not None:
        conf["mr_size"] = args.mr_size
    conf = resolve_conf(conf, args.features)
    if args.export_dir is None and args.feature_path is None:
        raise InputError("give --export_dir or --feature_path")
    if args.merge:
        fp = args.feature_path or (args.export_dir / f"{conf['output']}.h5")
        out = h5.merge_shards(fp, args.merge)
    else:
        out = main(
            conf,
            args.image_dir,
            args.export_dir,
            args.as_half,
            args.image_list,
            args.feature_path,
            args.overwrite,
            device=args.device,
            shard=args.shard,
            commit_every_s=args.commit_interval,
            num_workers=args.num_workers,
            half=args.half,
            max_pixels=args.max_pixels,
        )
    return out


if __name__ == "__main__":
    cli()
