"""Pose an unposed photo collection with pycolmap, for ``pipelines.make_patches --model``.

    python -m pipelines.pose_collection --images ../shared/data/collections/sceaux_castle/images \
        --out outputs/sfm/sceaux_castle [--mapper incremental|global] [--max_image_size 1600]

COLMAP SIFT (one camera for the collection, longer side <= ``max_image_size``, <= 8192
features), exhaustive matching with geometric verification, then ``pycolmap.incremental_mapping``
or ``pycolmap.global_mapping`` (GLOMAP; the Lund street sequence needs it: the incremental mapper
registers only part of it). Writes ``<out>/database.db``, ``<out>/sparse-<mapper>/<k>/`` and the
model with the most registered images as ``<out>/model`` (binary COLMAP). A stop-gap for the
training-patch builder until ``pipelines.sfm`` (full SfM with the toolkit's own features) lands.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from descriptors.util import setup_logging

logger = logging.getLogger(__name__)


def pose(images: Path, out: Path, mapper: str = "incremental", max_image_size: int = 1600,
         num_threads: int = 1) -> Path:
    """Extract, match, map; returns the folder of the largest model (``<out>/model``).

    Raises:
        RuntimeError: no model could be reconstructed (one line).
    """
    import pycolmap
    out.mkdir(parents=True, exist_ok=True)
    db = out / "database.db"
    t0 = time.time()
    if not db.exists():
        ext = pycolmap.FeatureExtractionOptions()
        ext.num_threads = num_threads
        ext.max_image_size = int(max_image_size)
        ext.sift.max_num_features = 8192
        pycolmap.extract_features(db, images, camera_mode=pycolmap.CameraMode.SINGLE,
                                  extraction_options=ext, device=pycolmap.Device.cpu)
        mo = pycolmap.FeatureMatchingOptions()
        mo.num_threads = num_threads
        pycolmap.match_exhaustive(db, matching_options=mo, device=pycolmap.Device.cpu)
        logger.info("features and matches in %.1f s", time.time() - t0)
    sparse = out / f"sparse-{mapper}"
    shutil.rmtree(sparse, ignore_errors=True)
    sparse.mkdir()
    if mapper == "incremental":
        opts = pycolmap.IncrementalPipelineOptions()
        opts.num_threads = num_threads
        recs = pycolmap.incremental_mapping(db, images, sparse, options=opts)
    elif mapper == "global":
        opts = pycolmap.GlobalPipelineOptions()
        opts.num_threads = num_threads
        recs = pycolmap.global_mapping(db, images, sparse, options=opts)
    else:
        raise ValueError(f"mapper must be 'incremental' or 'global', got {mapper!r}")
    if not recs:
        raise RuntimeError(f"{images}: pycolmap {mapper} mapping reconstructed no model")
    best = max(recs.values(), key=lambda r: r.num_reg_images())
    model = out / "model"
    shutil.rmtree(model, ignore_errors=True)
    model.mkdir()
    best.write(model)
    logger.info("%s mapping: %d models, largest %d images, %d points (%.1f s) -> %s", mapper,
                len(recs), best.num_reg_images(), best.num_points3D(), time.time() - t0, model)
    return model


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=Path, required=True, help="folder of the collection's photos")
    p.add_argument("--out", type=Path, required=True, help="output folder (database, models)")
    p.add_argument("--mapper", choices=["incremental", "global"], default="incremental")
    p.add_argument("--max_image_size", type=int, default=1600,
                   help="longer side (px) SIFT is extracted at")
    p.add_argument("--num_threads", type=int, default=1)
    args = p.parse_args(argv)
    setup_logging()
    if not args.images.is_dir():
        p.error(f"--images {args.images}: not a folder")
    try:
        return pose(args.images, args.out, args.mapper, args.max_image_size, args.num_threads)
    except RuntimeError as e:
        raise SystemExit(f"pose_collection: {e}") from None


if __name__ == "__main__":
    main()
