"""Aachen Day-Night v1.1 (hloc layout): reader, and a synthetic writer of the same layout.

Layout (see /work/shared/FORMATS.md section 1)::

    <root>/images_upright/db/<i>.jpg                       (or <root>/images/...)
    <root>/images_upright/query/{day,night}/nexus5x/<x>.jpg
    <root>/3D-models/aachen_v_1_1/{cameras,images,points3D}.bin  (+ database_intrinsics_v1_1.txt)
    <root>/queries/{day,night}_time_queries_with_intrinsics.txt  (name MODEL w h params...)
    <root>/queries/ground_truth_poses.txt   (synthetic only: name qw qx qy qz tx ty tz,
                                              world-to-camera, name as in the query list)

Image names are POSIX paths relative to the image root, used unchanged everywhere.
The synthetic writer renders ``localize.data.scene`` (a textured-plane plaza, metres) so that
``pipelines.aachen`` runs unchanged on it and can score itself against the ground truth.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from descriptors.util import atomic_dir
from localize import colmap
from localize.colmap_model import ColmapError, model_format, read_image_names
from localize.data import render as rnd
from localize.data import scene as scn
from localize.geometry import rotmat_to_qvec
from localize.parsers import check_name, read_pose_lines

logger = logging.getLogger(__name__)

MODEL_SUBDIR = Path("3D-models") / "aachen_v_1_1"
QUERY_GLOB = "*_time_queries_with_intrinsics.txt"
GT_FILE = Path("queries") / "ground_truth_poses.txt"
CONFIG_FILE = "synthetic_config.json"
DEFAULT_SYNTH_ROOT = Path("datasets") / "aachen-synth"
JPEG_QUALITY = 95


@dataclass
class AachenData:
    """Everything a localization pipeline needs to know about an Aachen-layout dataset.

    Attributes:
        root: dataset root.
        image_dir: image root (``images_upright/`` or ``images/``); names are relative to it.
        db_names: database image names, from the reference model's images.bin (image-id order).
        queries: (name, pycolmap.Camera) in list order: day file then night file
            (sorted file names), each in file order.
        query_condition: name -> 'day' | 'night' (from which query list names it).
        reference_model: the reference COLMAP model directory (``3D-models/aachen_v_1_1``).
        ground_truth: name -> (qvec_wxyz (4,), tvec (3,)) world-to-camera, or None when
            ``queries/ground_truth_poses.txt`` is absent (the real dataset).
    """

    root: Path
    image_dir: Path
    db_names: list[str]
    queries: list
    query_condition: dict[str, str]
    reference_model: Path
    ground_truth: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    query_lists: list[Path] = field(default_factory=list)

    @property
    def query_names(self) -> list[str]:
        return [n for n, _ in self.queries]


def read_ground_truth(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Parse ``name qw qx qy qz tx ty tz`` lines (empty / # lines skipped), keyed by the full
    query name as written."""
    return {
        check_name(name, f"{path}: ground-truth pose"): (q, t)
        for name, q, t in read_pose_lines(path)
    }


def read_aachen(root: str | os.PathLike) -> AachenData:
    """Read an Aachen v1.1 dataset laid out as hloc expects (real or synthetic).

    Raises:
        FileNotFoundError naming the missing piece (root, image dir, reference model folder,
        query lists), ColmapError for missing / malformed model files, ValueError for
        malformed lists.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Aachen dataset root not found: {root}")
    image_dir = next((root / d for d in ("images_upright", "images") if (root / d).is_dir()), None)
    if image_dir is None:
        raise FileNotFoundError(f"{root}: no image directory (expected images_upright/ or images/)")
    model = root / MODEL_SUBDIR
    if not model.is_dir():
        raise FileNotFoundError(f"{root}: reference model directory {MODEL_SUBDIR} is missing")
    model_format(model)  # ColmapError naming the missing model files
    ids_names = read_image_names(model)
    db_names = [check_name(ids_names[i], f"{model}: image {i}") for i in sorted(ids_names)]
    qdir = root / "queries"
    lists = sorted(qdir.glob(QUERY_GLOB)) if qdir.is_dir() else []
    if not lists:
        raise FileNotFoundError(f"{root}: no queries/{QUERY_GLOB} query lists")
    queries, condition = [], {}
    for path in lists:
        cond = path.name.split("_", 1)[0]
        if cond not in ("day", "night"):
            raise ValueError(f"{path}: cannot tell day/night from the file name")
        for name, cam in colmap.parse_query_list(path):
            if name in condition:
                raise ValueError(f"{path}: query {name} is listed twice")
            queries.append((name, cam))
            condition[name] = cond
    gt = None
    if (root / GT_FILE).is_file():
        gt = read_ground_truth(root / GT_FILE)
        unknown = sorted(set(gt) - set(condition))
        if unknown:
            raise ValueError(
                f"{root / GT_FILE}: poses for names not in any query list, e.g. {unknown[0]}"
            )
    return AachenData(
        root=root,
        image_dir=image_dir,
        db_names=db_names,
        queries=queries,
        query_condition=condition,
        reference_model=model,
        ground_truth=gt,
        query_lists=lists,
    )


# ------------------------------------------------------------------------------------------
# Synthetic writer
# ------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return repr(float(x))


def _write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rnd.write_rgb(path, rgb, JPEG_QUALITY)


@dataclass(frozen=True)
class SyntheticConfig:
    """What a synthetic Aachen scene is generated from (stored in ``synthetic_config.json``).

    ``max_offset_m`` / ``max_yaw_deg`` bound how far a query moves / turns away from its nearest
    database view, ``night_darkness`` scales the night rendering.
    """

    n_db: int = 40
    n_query: int = 21
    night_fraction: float = 1 / 3
    width: int = 640
    height: int = 480
    seed: int = 0
    max_offset_m: float = 3.0
    max_yaw_deg: float = 30.0
    night_darkness: float = 1.0

    def to_json(self) -> dict[str, Any]:
        """The ``synthetic_config.json`` content (with the format ``version``; key order as
        the first version wrote it, so existing scenes keep their fingerprint)."""
        d = dataclasses.asdict(self)
        first = ("n_db", "n_query", "night_fraction", "width", "height", "seed")
        return {**{k: d.pop(k) for k in first}, "version": SYNTHETIC_VERSION, **d}


SYNTHETIC_VERSION = 1


def _synthetic_config(overrides: dict[str, Any]) -> SyntheticConfig:
    unknown = set(overrides) - {f.name for f in dataclasses.fields(SyntheticConfig)}
    if unknown:
        raise TypeError(f"unknown synthetic Aachen option(s): {sorted(unknown)}")
    return SyntheticConfig(**overrides)


def write_synthetic_aachen(root: str | os.PathLike, **overrides: Any) -> Path:
    """Render a synthetic plaza and write it in EXACTLY the Aachen v1.1 (hloc) layout.

    ``overrides``: fields of :class:`SyntheticConfig` (the one home of the defaults).
    Database views: ``n_db`` on a loop a few metres apart (``scene.database_poses``), each with
    its own SIMPLE_RADIAL camera (fov 57-63 deg, k = 0) in the reference model (poses, no
    points). Queries: ``n_query`` new viewpoints (``scene.query_poses``), the first
    ``round(n_query * night_fraction)`` of them (after shuffling) rendered at night; nexus5x
    folders, fov 50-66 deg. Ground truth poses go to ``queries/ground_truth_poses.txt``.

    The dataset is written to a temp dir next to ``root`` and swapped into place
    (``descriptors.util.atomic_dir``; an existing ``root`` is replaced). Returns ``root``.
    """
    cfg = _synthetic_config(overrides)
    n_db, n_query, night_fraction = cfg.n_db, cfg.n_query, cfg.night_fraction
    width, height = cfg.width, cfg.height
    root = Path(root)
    if n_db < 3 or n_query < 1:
        raise ValueError(f"need n_db >= 3 and n_query >= 1, got {n_db}, {n_query}")
    if not 0.0 <= night_fraction <= 1.0:
        raise ValueError(f"night_fraction must be in [0, 1], got {night_fraction}")
    rng = np.random.default_rng(cfg.seed)
    with atomic_dir(root) as tmp:
        world = scn.make_street_scene(rng)
        img_root = tmp / "images_upright"
        # database
        db_poses = scn.database_poses(n_db, rng)
        cameras, images, intr_lines = [], [], []
        for i, p in enumerate(
            tqdm(db_poses, desc="synthetic aachen: database", leave=False, disable=None)
        ):
            K = rnd.intrinsics(width, height, rng.uniform(57.0, 63.0))
            name = f"db/{i + 1}.jpg"
            _write_image(img_root / name, rnd.render(world, K, p["R"], p["t"], width, height))
            params = rnd.colmap_params(K)
            cameras.append(dict(model="SIMPLE_RADIAL", width=width, height=height, params=params))
            q = rotmat_to_qvec(p["R"])
            images.append(dict(name=name, camera_idx=i, qvec_wxyz=q, tvec=p["t"]))
            intr_lines.append(
                f"{name} SIMPLE_RADIAL {width} {height} " + " ".join(_fmt(x) for x in params)
            )
        model_dir = tmp / MODEL_SUBDIR
        colmap.write_reference_model(model_dir, cameras, images)
        _write_text(model_dir / "database_intrinsics_v1_1.txt", intr_lines)
        # queries
        q_poses = scn.query_poses(
            n_query,
            db_poses,
            rng,
            scene=world,
            max_offset_m=cfg.max_offset_m,
            max_yaw_deg=cfg.max_yaw_deg,
        )
        n_night = int(round(n_query * night_fraction))
        is_night = np.zeros(n_query, bool)
        is_night[rng.permutation(n_query)[:n_night]] = True
        lists: dict[str, list[str]] = {"day": [], "night": []}
        gt_lines = []
        for k, p in enumerate(
            tqdm(q_poses, desc="synthetic aachen: queries", leave=False, disable=None)
        ):
            cond = "night" if is_night[k] else "day"
            K = rnd.intrinsics(width, height, rng.uniform(50.0, 66.0))
            name = f"query/{cond}/nexus5x/IMG_{20161227 + k:08d}_{k:06d}.jpg"
            img = rnd.render(
                world,
                K,
                p["R"],
                p["t"],
                width,
                height,
                night=is_night[k],
                rng=rng,
                night_darkness=cfg.night_darkness,
            )
            _write_image(img_root / name, img)
            lists[cond].append(
                f"{name} SIMPLE_RADIAL {width} {height} "
                + " ".join(_fmt(x) for x in rnd.colmap_params(K))
            )
            q = rotmat_to_qvec(p["R"])
            gt_lines.append(f"{name} " + " ".join(_fmt(x) for x in (*q, *p["t"])))
        for cond in ("day", "night"):
            _write_text(tmp / "queries" / f"{cond}_time_queries_with_intrinsics.txt", lists[cond])
            # hloc globs the directory: keep an existing (possibly empty) list per condition
            (img_root / "query" / cond / "nexus5x").mkdir(parents=True, exist_ok=True)
        _write_text(tmp / GT_FILE, gt_lines)
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_json(), indent=1) + "\n")
    logger.info(
        "wrote synthetic Aachen (%d db, %d day + %d night queries) to %s",
        n_db,
        n_query - n_night,
        n_night,
        root,
    )
    return root


# Named synthetic scene configurations (``python -m pipelines.aachen --synthetic NAME``).
# 'default' (the demo): 30 database views, 24 queries of which half at night, queries up to
#   6 m / 45 deg from any database view, a dark night (1.25): SIFT localizes every day query
#   but 11 of 12 night ones at (0.25 m, 2 deg) (1.6 left 7 night queries with no keypoints).
# 'easy': the first version's default (every descriptor at 100 %; fast smoke test).
# 'hard': sparser database, queries up to 8 m / 60 deg away, darker night.
SYNTHETIC_PRESETS: dict[str, dict] = {
    "default": dict(
        n_db=30,
        n_query=24,
        night_fraction=0.5,
        max_offset_m=6.0,
        max_yaw_deg=45.0,
        night_darkness=1.25,
        seed=2,
    ),
    "easy": {},
    "hard": dict(
        n_db=24, n_query=24, max_offset_m=8.0, max_yaw_deg=60.0, night_darkness=1.3, seed=1
    ),
}


def ensure_synthetic_aachen(root: str | os.PathLike = DEFAULT_SYNTH_ROOT, **overrides: Any) -> Path:
    """Return ``root``, generating it with ``write_synthetic_aachen(root, **overrides)`` when it
    is missing or was generated with a different :class:`SyntheticConfig`
    (``synthetic_config.json``)."""
    root = Path(root)
    want = _synthetic_config(overrides).to_json()
    cfg = root / CONFIG_FILE
    if cfg.is_file():
        try:
            have = json.loads(cfg.read_text())
        except json.JSONDecodeError:
            have = None
        if have == want:
            try:
                read_aachen(root)
                return root
            except (FileNotFoundError, ValueError, ColmapError) as e:
                logger.warning("regenerating %s: %s", root, e)
        else:
            logger.info("regenerating %s: configuration changed", root)
    elif root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists but is not a synthetic Aachen dataset "
            f"(no {CONFIG_FILE}); refusing to overwrite it"
        )
    return write_synthetic_aachen(root, **overrides)


__all__ = [
    "AachenData",
    "SyntheticConfig",
    "SYNTHETIC_PRESETS",
    "read_aachen",
    "read_ground_truth",
    "write_synthetic_aachen",
    "ensure_synthetic_aachen",
]
