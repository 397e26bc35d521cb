"""Train a descriptor recipe, then localize Aachen (or its synthetic stand-in) with it.

    python -m pipelines.train_and_localize --recipe hndesc [--steps N] [--quick]
        [--data ROOT] [--out CKPT] [--dataset datasets/aachen_v1.1]
        [--outputs outputs/train_and_localize] [--max_keypoints N] [--num_covis 20] [--num_loc 10]
    python -m pipelines.train_and_localize --recipe hardnet|sdb|fracking|hndesc --from-map
        [--dataset DIR] [--steps N] [--night 1]

``descriptors.train.train`` writes the checkpoint (default under ``--outputs``, never over the
shipped ``weights/<recipe>.pt``), then ``pipelines.aachen.run`` localizes with it and the
summary goes to ``<outputs>/<recipe>_summary.json``. ``--from-map`` fine-tunes the shipped
weights of a patch recipe (``FROM_MAP_CONFS``: its last stage's settings) on patches cut from the
map's DATABASE images and poses only (``localize.make_patches``), each observation also cut from
``--night`` night renderings of its image (``night_copies``); the self-supervised ``hndesc``
renders its pairs from the database photos instead (no poses; its night renderings are its
``pair_p_night`` views). It prints the recall next to the shipped descriptor's and RootSIFT's;
a ``pipelines.sfm`` map (``sfm-*`` folder or ``results-*.json``) has no queries, so only the
fine-tuning runs.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from descriptors.recipes import list_recipes
from descriptors.util import setup_logging, write_json
from localize import colmap, parsers
from localize.cli import (
    ArgumentParser,
    cli_errors,
    existing_dir,
    nonneg_int,
    output_dir,
    output_file,
    positive_int,
)
from localize.cli import device as device_arg
from localize.data.aachen import SYNTHETIC_PRESETS
from pipelines import aachen

logger = logging.getLogger(__name__)


def run(
    recipe: str,
    steps: int | None = None,
    quick: bool = False,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    dataset: str | os.PathLike | None = None,
    outputs: str | os.PathLike = "outputs/train_and_localize",
    seed: int = 0,
    resume: bool = False,
    device: str | None = None,
    **loc_conf: Any,
) -> dict:
    """Train ``recipe`` then run the Aachen pipeline with the checkpoint.

    Args:
        recipe: registered recipe name (``descriptors.recipes.list_recipes()``).
        steps / quick / data / seed / resume / device: passed to ``descriptors.train.train``.
        out: checkpoint path (default ``<outputs>/<recipe>.pt``).
        dataset / outputs / loc_conf: passed to ``pipelines.aachen.run``.
    Returns:
        {"train": train() summary, "checkpoint", "localization": aachen.run() summary}.
    """
    from descriptors.train import train

    outputs = Path(outputs)
    ckpt = Path(out) if out is not None else outputs / f"{recipe}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tr = train(
        recipe, data, ckpt, steps=steps, seed=seed, resume=resume, device=device, quick=quick
    )
    train_s = time.perf_counter() - t0
    if not ckpt.is_file():
        raise RuntimeError(f"training of {recipe} finished but wrote no checkpoint at {ckpt}")
    loc = aachen.run(str(ckpt), dataset, outputs, device=device, **loc_conf)
    summary = {
        "recipe": recipe,
        "checkpoint": str(ckpt),
        "train_seconds": train_s,
        "train": tr,
        "localization": loc,
    }
    write_json(outputs / f"{recipe}_summary.json", summary)
    return summary


#: fine-tuning settings per recipe (those of its shipped weights' last stage, see their sidecars)
FROM_MAP_CONFS: dict[str, dict[str, Any]] = {
    "hardnet": {"lr": 1.0, "batch_size": 256},
    "sdb": {"lr": 0.001, "batch_size": 128, "arch": "l2net"},
    "fracking": {"optimizer": "adam", "lr": 0.001, "batch_size": 32, "r_p": 8, "r_n": 8},
    # self-supervised: pairs rendered from the map's database photos (FROM_MAP_PHOTOS)
    "hndesc": {
        "lr": 0.0002,
        "loss": "triplet",
        "pair_redetect": True,
        "pair_max_keypoints": 600,
        "pair_p_night": 0.5,
        "pair_night_darkness": (0.6, 1.3),
        "pair_homography_strength": 0.8,
        "pair_mr_size": 16.0,
    },
}
#: recipes fine-tuned on pairs rendered from the database photos rather than on the map's tracks
FROM_MAP_PHOTOS = ("hndesc",)
FROM_MAP_RECIPES = tuple(FROM_MAP_CONFS)
FROM_MAP_STEPS = 300
#: night renderings per database view cut into the map's patch set (the map holds day views only)
FROM_MAP_NIGHT = 1


def finetune_on_map(
    recipe: str,
    dataset: str | os.PathLike | None = None,
    outputs: str | os.PathLike = "outputs/train_and_localize",
    steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    patch_conf: dict | str = "default",
    synthetic: str = "default",
    night: int = FROM_MAP_NIGHT,
) -> dict:
    """Fine-tune ``recipe``'s shipped weights on patches of a map's database views and poses
    (:data:`FROM_MAP_PHOTOS`: on self-supervised pairs of the database photos).

    ``dataset``: an Aachen-layout root (its reference model) or a ``pipelines.sfm`` map.
    ``night``: night renderings per database view cut into the patch set (K extra patches per
    observation, ``make_patches`` ``night_copies``; not for :data:`FROM_MAP_PHOTOS`).
    Returns {"dataset", "sfm_map" (bool), "patches": make_patches summary (for
    :data:`FROM_MAP_PHOTOS` {"photos": the linked folder, "view_ids"}), "checkpoint"
    (``<outputs>/<recipe>-from-map.pt``), "train", "train_seconds"}.
    """
    from descriptors.models import read_checkpoint
    from descriptors.recipes import get_recipe
    from descriptors.registry import weights_path
    from descriptors.train import train
    from localize.data.aachen import read_aachen

    if recipe not in FROM_MAP_CONFS:
        raise ValueError(
            f"--from-map fine-tunes a recipe trained on patches of tracks or of photo pairs "
            f"({', '.join(FROM_MAP_RECIPES)}), not {recipe!r}"
        )
    shipped = weights_path(recipe)
    if not shipped.is_file():
        raise FileNotFoundError(f"--from-map fine-tunes the shipped weights, {shipped} is missing")
    outputs = Path(outputs)
    sfm_map = _sfm_map(dataset)
    if sfm_map is not None:  # a map built by pipelines.sfm: images + model, no queries
        root, model = sfm_map
        image_dir = root
        db_names = sorted(colmap.image_ids_by_name(colmap.read_model(model)))
    else:
        root = aachen.resolve_dataset(dataset, synthetic)
        data = read_aachen(root)
        image_dir, model, db_names = data.image_dir, data.reference_model, data.db_names
    if recipe in FROM_MAP_PHOTOS:  # self-supervised: pairs of the database photos, no poses
        photos = _link_photos(image_dir, db_names, outputs / "map-photos", root)
        data_root, split, extra = None, "", {"photos": str(photos)}
        patches = {"photos": str(photos), "view_ids": sorted(db_names)}
        meta = {"photos": len(db_names)}
    else:
        data_root, split, extra = outputs / "map-patches", "map", {}  # one set for every recipe
        patches = _map_patches(data_root / split, image_dir, model, db_names, patch_conf, night)
        meta = {"night_copies": int(night)}
    ckpt = outputs / f"{recipe}-from-map.pt"
    r = get_recipe(recipe, quick=True).with_options(
        init=str(shipped), **extra, **FROM_MAP_CONFS[recipe]
    )
    # the shipped network as it is (e.g. fracking's CNN3 with input_norm='patch')
    r = r.with_options(arch_kwargs=dict(read_checkpoint(shipped).get("arch_kwargs", r.arch_kwargs)))
    t0 = time.perf_counter()
    tr = train(
        r,
        data_root,
        ckpt,
        split=split,
        steps=steps or FROM_MAP_STEPS,
        seed=seed,
        device=device,
        meta={"from_map": str(root), "init": str(shipped), **meta},
    )
    return {
        "dataset": str(root),
        "sfm_map": sfm_map is not None,
        "patches": patches,
        "checkpoint": str(ckpt),
        "train": tr,
        "train_seconds": time.perf_counter() - t0,
    }


def _map_patches(
    out: Path,
    image_dir: Path,
    model: Path,
    db_names: list[str],
    patch_conf: dict | str,
    night: int,
) -> dict:
    """The map's patch set under ``out`` (``make_patches`` summary): cut from the database views
    at the extraction support (how the queries will be described) unless ``patch_conf`` names
    one, with ``night`` night renderings per view; a cached set is reused only if built with the
    same settings."""
    from localize import extract_features, make_patches

    mr_size = extract_features.default_conf["mr_size"]
    if isinstance(patch_conf, str):
        patch_conf = {**make_patches.resolve_conf(patch_conf), "mr_size": mr_size}
    else:
        patch_conf = {"mr_size": mr_size, **patch_conf}
    patch_conf = make_patches.resolve_conf({**patch_conf, "night_copies": night})
    summary_file = out / "summary.json"
    patches = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    if (
        patches.get("images") != str(image_dir)
        or set(patches.get("view_ids", {})) != set(db_names)
        or patches.get("conf") != patch_conf
    ):
        patches = make_patches.build(patch_conf, image_dir, out, reference=model, names=db_names)
    return patches


def _link_photos(image_dir: Path, db_names: list[str], out: Path, root: Path) -> Path:
    """``out`` (emptied first) holding one link per database image, at its name: the photo
    folder a self-supervised recipe (:data:`FROM_MAP_PHOTOS`) renders its pairs from. An ``out``
    holding anything but links and folders is refused (InputError), never emptied."""
    import shutil

    from descriptors.util import InputError

    if out.is_symlink() or out.is_file():
        raise InputError(f"{out}: not a folder of photo links; remove it or give another --outputs")
    if out.exists():
        for f in out.rglob("*"):
            if not (f.is_symlink() or f.is_dir()):
                raise InputError(
                    f"{out} holds {f.relative_to(out)}, which is not a link to a database image: "
                    "remove it or give another --outputs"
                )
        shutil.rmtree(out)  # links and folders only (checked above)
    for name in db_names:
        parsers.check_name(name, f"{root}: database image")  # the link stays inside ``out``
        link = out / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((Path(image_dir) / name).resolve())
    return out


def run_from_map(
    recipe: str,
    dataset: str | os.PathLike | None = None,
    outputs: str | os.PathLike = "outputs/train_and_localize",
    steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    patch_conf: dict | str = "default",
    synthetic: str = "default",
    baselines: tuple[str, ...] = ("rootsift",),
    night: int = FROM_MAP_NIGHT,
    **loc_conf: Any,
) -> dict:
    """:func:`finetune_on_map`, then relocalize with the fine-tuned, the generic (shipped)
    descriptor and ``baselines`` (an SfM map has no queries: training only).

    Returns:
        :func:`finetune_on_map`'s dict with "recipe" and "rows": {name: aachen.run() summary}.
    """
    out = {"recipe": recipe}
    out.update(
        finetune_on_map(recipe, dataset, outputs, steps, seed, device, patch_conf, synthetic, night)
    )
    rows = {}
    if not out["sfm_map"]:
        for f in (out["checkpoint"], recipe, *baselines):
            rows[aachen.features_tag(f)] = aachen.run(
                f, out["dataset"], outputs, device=device, **loc_conf
            )
    out["rows"] = rows
    write_json(Path(outputs) / f"{recipe}_from_map_summary.json", out)
    return out


def _sfm_map(dataset: str | os.PathLike | None) -> tuple[Path, Path] | None:
    """(image folder, model) when ``dataset`` is a ``pipelines.sfm`` run (its ``sfm-*`` model
    folder or ``results-*.json``), else None (an Aachen-layout dataset)."""
    if dataset is None:
        return None
    p = Path(dataset)
    if (p.is_dir() and p.name.startswith("sfm-")) or (p.is_file() and p.suffix == ".json"):
        from pipelines.sfm import map_paths

        return map_paths(p)
    return None


def _train_line(tr: dict, seconds: float) -> str:
    keys = [k for k in ("steps", "seconds", "loss_first", "final_loss") if k in tr]
    parts = []
    for k in keys:
        v = tr[k]
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts) or f"{seconds:.1f} s"


def main(argv: list[str] | None = None) -> dict:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--recipe",
        required=True,
        choices=list_recipes(),
        help="training recipe (hardnet, hndesc, sdb, wlrn, fracking)",
    )
    p.add_argument(
        "--steps", type=positive_int, default=None, help="training steps (default: the recipe's)"
    )
    p.add_argument("--quick", action="store_true", help="CPU-sized training defaults")
    p.add_argument(
        "--data", default=None, type=existing_dir, help="training data root (default: the recipe's)"
    )
    p.add_argument(
        "--out",
        default=None,
        type=output_file,
        help="checkpoint path (default <outputs>/<recipe>.pt)",
    )
    p.add_argument("--seed", type=nonneg_int, default=0, help="training seed")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument(
        "--device", default=None, type=device_arg, help="torch device (default: cuda if available)"
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="Aachen-layout root (default: datasets/aachen_v1.1 if present, else the "
        "synthetic scene); with --from-map also a pipelines.sfm map (its sfm-* "
        "folder or results-*.json)",
    )
    p.add_argument(
        "--outputs",
        default="outputs/train_and_localize",
        type=output_dir,
        help="output root of the pipeline runs",
    )
    p.add_argument(
        "--num_covis",
        type=positive_int,
        default=aachen.default_conf["num_covis"],
        help="db-db pairs per db image for triangulation",
    )
    p.add_argument(
        "--num_loc",
        type=positive_int,
        default=aachen.default_conf["num_loc"],
        help="retrieved db images per query",
    )
    p.add_argument(
        "--max_keypoints", type=positive_int, default=None, help="DoG keypoints per image"
    )
    p.add_argument(
        "--from-map",
        dest="from_map",
        action="store_true",
        help="build training patches from the dataset's database images + reference "
        "poses and fine-tune the shipped weights on them (hndesc: self-supervised pairs "
        "rendered from the database images)",
    )
    p.add_argument(
        "--night",
        type=nonneg_int,
        default=FROM_MAP_NIGHT,
        help="--from-map: night renderings per database view in the patch set (not for "
        "hndesc; default %(default)s)",
    )
    p.add_argument(
        "--synthetic",
        default="default",
        choices=sorted(SYNTHETIC_PRESETS),
        help="synthetic scene preset used when --dataset does not exist",
    )
    p.add_argument("--verbose", action="store_true", help="keep COLMAP's INFO log lines")
    args = p.parse_args(argv)
    setup_logging()
    colmap.set_verbose(args.verbose)
    if args.from_map:
        with cli_errors("pipelines.train_and_localize"):
            s = run_from_map(
                args.recipe,
                args.dataset,
                args.outputs,
                steps=args.steps,
                seed=args.seed,
                device=args.device,
                synthetic=args.synthetic,
                night=args.night,
                num_covis=args.num_covis,
                num_loc=args.num_loc,
                max_keypoints=args.max_keypoints,
            )
        from localize import evaluate as ev

        pt = s["patches"]
        print(
            f"== map patches: {pt['views']} database views, {pt['tracks']} tracks, "
            f"{pt['patches']} patches, track length {pt['track_length_mean']:.2f}"
        )
        print(
            f"== fine-tuned {args.recipe} from its shipped weights -> {s['checkpoint']} "
            f"({s['train_seconds']:.1f} s): {_train_line(s['train'], s['train_seconds'])}"
        )
        evals = {k: v["evaluation"] for k, v in s["rows"].items() if v["evaluation"]}
        if evals:
            print(ev.format_table(evals))
        else:
            for v in s["rows"].values():
                aachen.print_summary(v)
        return s
    with cli_errors("pipelines.train_and_localize"):
        s = run(
            args.recipe,
            steps=args.steps,
            quick=args.quick,
            data=args.data,
            out=args.out,
            dataset=args.dataset,
            outputs=args.outputs,
            seed=args.seed,
            resume=args.resume,
            device=args.device,
            num_covis=args.num_covis,
            num_loc=args.num_loc,
            max_keypoints=args.max_keypoints,
        )
    print(
        f"== training {args.recipe} -> {s['checkpoint']} "
        f"({s['train_seconds']:.1f} s): {_train_line(s['train'], s['train_seconds'])}"
    )
    print(
        "   command: python -m pipelines.train_and_localize "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    )
    print("== localization")
    aachen.print_summary(s["localization"])
    return s


if __name__ == "__main__":
    main()
