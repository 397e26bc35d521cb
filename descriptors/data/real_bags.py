"""Real weakly-labelled keypoint bags (recipe ``wlrn``): photos of one scene match, photos of
different scenes do not.

The wlrn paper learns from bags labelled only at bag level (UKB: views of one object match).
Here the labels come from how real photos are filed, with no pose and no correspondence:

- **scenes** (:func:`scenes_from_root`): every direct sub-folder of the root is ONE scene (its
  JPG / PNG photos, recursive, symlinks followed), e.g. ``entry-P10``, ``sceaux_castle``,
  ``lund`` (a street sequence: frames far apart may show different facades, a noisy positive we
  accept). Image files lying directly in the root are grouped by name: the stem up to its first
  ``_``, minus a trailing digit run or one capital letter, names the scene, so the OpenCV sample
  photos ``leuvenA`` / ``leuvenB``, ``aero1`` / ``aero3``, ``aloeL`` / ``aloeR``,
  ``basketball1/2``, ``rubberwhale1/2`` and ``box`` / ``box_in_scene`` are known pairs and every
  other loose photo is a scene of its own (it only ever gives negatives);
- **bags** (:func:`make_real_bags`): per photo and per scale (the photo resized so its longer
  side is ``scale`` px, never upscaled), the ``bag_size`` strongest DoG keypoints
  (``descriptors.patches.detect_dog``), cut as ``patch_size`` patches with
  ``descriptors.patches.extract_patches`` (``mr_size``: 12 sigma by default, OpenCV orientation);
- ``object_ids`` = scene, ``photo`` = photo: ``bags.BagTripletSampler`` then draws a matching
  pair from two DIFFERENT photos of a scene (bags of one photo at two scales never form a
  positive) and a non-matching bag from another scene.

The result is a ``bags.BagSet`` (same file layout, samplers and evaluation as the synthetic
bags); ``recipe_defs.wlrn`` builds it with the option ``scenes=ROOT``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from descriptors.data.bags import BagsError, BagSet
from descriptors.patches import MR_SIZE

logger = logging.getLogger(__name__)

REAL_BAGS_CONF: dict = {
    "scales": (640, 1024),  # longer image side (px) of each bag's photo copy
    "bag_size": 75,  # keypoints per bag (paper: 75 per image)
    "contrast_threshold": 0.02,  # DoG (extraction default)
    "min_size": 2.0,  # OpenCV keypoint size range kept (px)
    "max_size": 64.0,
    "patch_size": 32,
    "mr_size": MR_SIZE,  # patch side in DoG sigmas (12, hloc's support)
}


def loose_scene_name(stem: str) -> str:
    """Scene of a photo lying directly in the root: ``leuvenA`` -> ``leuven``, ``aero3`` ->
    ``aero``, ``box_in_scene`` -> ``box``."""
    head = stem.split("_")[0]
    return re.sub(r"(\d+|[A-Z])$", "", head) or head


def scenes_from_root(root: str | Path) -> dict[str, list[str]]:
    """{scene name: sorted photo paths} under ``root`` (module docstring's rule).

    Raises:
        BagsError: ``root`` is not a folder or holds no JPG / PNG photo.
    """
    from descriptors.data.photos import PHOTO_EXTS, PhotoError, find_photos

    root = Path(root).expanduser()
    if not root.is_dir():
        raise BagsError(f"{root}: scenes folder not found (or not a folder)")
    scenes: dict[str, list[str]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            try:
                scenes[entry.name] = find_photos(entry)
            except PhotoError:
                logger.warning("%s: no photos, skipped", entry)
        elif entry.suffix.lower() in PHOTO_EXTS:
            scenes.setdefault(f"photo:{loose_scene_name(entry.stem)}", []).append(str(entry))
    if not scenes:
        raise BagsError(
            f"{root}: no JPG / PNG photos (scenes are its sub-folders and loose photos)"
        )
    return {k: sorted(v) for k, v in scenes.items()}


def make_real_bags(
    scenes: dict[str, list[str]], conf: dict | None = None, progress: bool = True
) -> BagSet:
    """Bags of the photos of ``scenes`` ({name: photo paths}): one bag per photo and scale.

    Returns:
        BagSet: patches (M, n, P, P) uint8, object_ids (M,) scene index (in ``scenes`` order),
        view_ids (M,) bag index within its scene, photo (M,) index into ``photo_names``,
        keypoints (M, n, 4) [x, y, size, angle_deg] in the resized photo's pixels.
    Raises:
        BagsError: no photo gives ``bag_size`` keypoints, or fewer than two scenes remain.
    """
    import cv2

    from descriptors.data.photos import load_photo_source
    from descriptors.patches import detect_dog, extract_patches, opencv_angle_to_ori

    cfg = {**REAL_BAGS_CONF, **(conf or {})}
    n, ps = int(cfg["bag_size"]), int(cfg["patch_size"])
    patches, kps, obj_ids, view_ids, photo_idx, names = [], [], [], [], [], []
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        total = sum(len(v) for v in scenes.values())
        bar = tqdm(total=total, desc="bags-real", disable=None if progress else True)
        for oid, (scene, photos) in enumerate(scenes.items()):
            nv = 0
            for path in photos:
                gray = load_photo_source(str(path), gray=True)
                side = max(gray.shape)
                done: set[int] = set()
                for scale in cfg["scales"]:
                    s = min(int(scale), side)
                    if s in done:
                        continue
                    done.add(s)
                    f = s / side
                    img = (
                        gray
                        if f == 1.0
                        else cv2.resize(
                            gray,
                            (round(gray.shape[1] * f), round(gray.shape[0] * f)),
                            interpolation=cv2.INTER_AREA,
                        )
                    )
                    _, xy, size, angle, _ = detect_dog(
                        img, 4 * n, cfg["contrast_threshold"], min_size=cfg["min_size"]
                    )
                    keep = size <= cfg["max_size"]
                    xy, size, angle = xy[keep][:n], size[keep][:n], angle[keep][:n]
                    if len(xy) < n:
                        logger.info("%s at %d px: %d keypoints < %d, skipped", path, s, len(xy), n)
                        continue
                    p = extract_patches(
                        img, xy, size, opencv_angle_to_ori(angle), ps, float(cfg["mr_size"])
                    )
                    patches.append((p[:, 0].numpy() * 255.0 + 0.5).astype(np.uint8))
                    kps.append(
                        np.concatenate([xy, size[:, None], angle[:, None]], 1).astype(np.float32)
                    )
                    obj_ids.append(oid)
                    view_ids.append(nv)
                    photo_idx.append(len(names))
                    nv += 1
                names.append(str(path))
                bar.update(1)
        bar.close()
    finally:
        torch.set_num_threads(n_threads)
    if len(set(obj_ids)) < 2:
        raise BagsError(f"bags-real: {len(set(obj_ids))} scene(s) gave {n} keypoints; need two")
    logger.info(
        "bags-real: %d bags of %d photos, %d scenes", len(obj_ids), len(names), len(set(obj_ids))
    )
    return BagSet(
        np.stack(patches),
        np.asarray(obj_ids, np.int64),
        np.asarray(view_ids, np.int64),
        np.asarray(photo_idx, np.int64),
        names,
        np.stack(kps),
        {**cfg, "scales": list(cfg["scales"]), "scenes": list(scenes)},
    )
