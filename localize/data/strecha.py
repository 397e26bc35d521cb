"""Reader for Strecha et al.'s multi-view benchmark cameras (``gt_dense_cameras/*.camera``).

Format (one file per image, ``<image name>.camera``, plain text; as redistributed by openMVG's
SfM_quality_evaluation)::

    K          3 rows of 3 numbers (pixels; the pixel centre of the top-left pixel is (0, 0))
    distortion 1 row (zeros for the undistorted release)
    R          3 rows of 3: camera-to-world rotation
    C          1 row of 3: camera centre in world coordinates (metres)
    w h        image width and height

so a world point X projects to ``x ~ K R^T (X - C)``. :func:`read_strecha_cameras` turns a folder
of them into the ``cameras`` / ``images`` dicts of ``localize.colmap.build_reference_reconstruction``
(PINHOLE cameras in COLMAP's pixel-corner convention, world-to-camera poses).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from descriptors.util import atomic_dir
from localize import geometry
from localize.colmap import write_reference_model
from localize.colmap_model import ColmapError
from localize.geometry import pose_from_center


@dataclass
class StrechaCamera:
    """One ``.camera`` file. K (3, 3) hloc pixels, R (3, 3) camera-to-world, C (3,) metres."""

    name: str
    K: np.ndarray
    R: np.ndarray
    C: np.ndarray
    width: int
    height: int

    def project(self, X: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 2) hloc pixel coordinates (``x ~ K R^T (X - C)``)."""
        return geometry.project(self.K, self.R.T, -self.R.T @ self.C, X)[0]


def read_camera_file(path: str | os.PathLike) -> StrechaCamera:
    """Parse one ``<name>.camera`` file (see the module docstring).

    Raises:
        ColmapError naming the file when it is missing, short, not numeric, not finite, or
        when K is singular (focal lengths must be > 0), R not a rotation or the size < 1.
    """
    path = Path(path)
    try:
        rows = [r.split() for r in path.read_text().splitlines() if r.strip()]
        vals = [[float(v) for v in r] for r in rows]
    except (OSError, UnicodeDecodeError) as e:
        raise ColmapError(f"{path}: cannot read camera file ({e})") from None
    except ValueError:
        raise ColmapError(f"{path}: non-numeric value in a Strecha camera file") from None
    if len(vals) < 9 or any(len(vals[i]) != 3 for i in (0, 1, 2, 4, 5, 6, 7)) or len(vals[8]) != 2:
        raise ColmapError(
            f"{path}: expected K (3 rows), distortion, R (3 rows), C, 'w h' "
            f"(9 rows), got {len(vals)} rows"
        )
    if not np.isfinite(np.array([v for r in vals[:9] for v in r])).all():
        raise ColmapError(f"{path}: non-finite value (nan / inf) in a Strecha camera file")
    K, R, C = np.array(vals[0:3]), np.array(vals[4:7]), np.array(vals[7])
    w, h = (int(round(v)) for v in vals[8])
    if w < 1 or h < 1:
        raise ColmapError(f"{path}: image size {w}x{h}: width and height must be >= 1")
    if not (
        K[0, 0] > 0
        and K[1, 1] > 0
        and K[2, 2] != 0
        and abs(np.linalg.det(K)) > 0
        and np.allclose(K[2, :2], 0)
    ):
        raise ColmapError(
            f"{path}: K is singular or not a camera matrix (focal lengths "
            f"{K[0, 0]:g}, {K[1, 1]:g} must be > 0): {K.tolist()}"
        )
    if not (np.allclose(R.T @ R, np.eye(3), atol=1e-3) and abs(np.linalg.det(R) - 1.0) <= 1e-3):
        raise ColmapError(f"{path}: R is not a rotation matrix")
    name = path.name[: -len(".camera")] if path.name.endswith(".camera") else path.stem
    return StrechaCamera(name, K, R, C, w, h)


def read_strecha_cameras(camera_dir: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """All ``*.camera`` files of a folder, sorted by name.

    Returns:
        (cameras, images) for ``localize.colmap.build_reference_reconstruction``: one PINHOLE
        camera per image (params fx, fy, cx + 0.5, cy + 0.5: COLMAP puts the pixel corner at 0)
        and ``{name, camera_idx, qvec_wxyz, tvec}`` with world-to-camera ``R^T``, ``-R^T C``.
    """
    camera_dir = Path(camera_dir)
    if not camera_dir.is_dir():
        raise ColmapError(f"Strecha camera folder not found: {camera_dir}")
    files = sorted(camera_dir.glob("*.camera"))
    if not files:
        raise ColmapError(f"{camera_dir}: no *.camera files")
    cameras, images = [], []
    for i, f in enumerate(files):
        c = read_camera_file(f)
        cameras.append(
            {
                "model": "PINHOLE",
                "width": c.width,
                "height": c.height,
                "params": [c.K[0, 0], c.K[1, 1], c.K[0, 2] + 0.5, c.K[1, 2] + 0.5],
            }
        )
        q, t = pose_from_center(c.R.T, c.C)
        images.append({"name": c.name, "camera_idx": i, "qvec_wxyz": q, "tvec": t})
    return cameras, images


def _write_jpeg(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"could not write image {path}")


def write_aachen_layout(
    scene_dir: str | os.PathLike,
    out_root: str | os.PathLike,
    query_every: int = 3,
    night_fraction: float = 0.5,
    resize_max: int | None = 1600,
    night_darkness: float = 1.0,
    seed: int = 0,
    both_conditions: bool = False,
) -> Path:
    """Turn a Strecha scene (``images/`` + ``gt_dense_cameras/``) into the Aachen v1.1 layout
    (``localize.data.aachen``) for a real relocalization benchmark.

    Every ``query_every``-th view (the 2nd of each group: 0001, 0004, ...) becomes a query with
    its ground-truth pose in ``queries/ground_truth_poses.txt``; the others are the database
    (reference model with poses, no points). A ``night_fraction`` of the queries is darkened
    with the synthetic night model (``descriptors.data.synth.day_to_night``) and listed as night
    queries; ``both_conditions``: every query view is written twice, as a day and as a night
    query (``night_fraction`` unused). Images are downscaled to ``resize_max`` (cameras rescaled
    with them). Written to a
    temp folder and swapped into place (``descriptors.util.atomic_dir``). Returns ``out_root``.
    """
    from descriptors.data.synth import day_to_night
    from localize.data.aachen import GT_FILE, MODEL_SUBDIR

    scene_dir, out_root = Path(scene_dir), Path(out_root)
    if query_every < 2:
        raise ValueError(f"query_every must be >= 2, got {query_every}")
    cams = [read_camera_file(f) for f in sorted((scene_dir / "gt_dense_cameras").glob("*.camera"))]
    if len(cams) < 3:
        raise ColmapError(f"{scene_dir}: need >= 3 views in gt_dense_cameras/, found {len(cams)}")
    rng = np.random.default_rng(seed)
    q_idx = [i for i in range(len(cams)) if i % query_every == 1]
    night = set(rng.permutation(q_idx)[: int(round(len(q_idx) * night_fraction))].tolist())
    with atomic_dir(out_root) as tmp:
        img_root = tmp / "images_upright"
        cameras, images, lists, gt = [], [], {"day": [], "night": []}, []
        for i, c in enumerate(cams):
            src = scene_dir / "images" / c.name
            img = cv2.imread(str(src), cv2.IMREAD_COLOR)
            if img is None:
                raise ColmapError(f"{src}: cannot read image")
            if img.shape[:2] != (c.height, c.width):
                raise ColmapError(
                    f"{src}: image is {img.shape[1]}x{img.shape[0]} but its camera "
                    f"file says {c.width}x{c.height}"
                )
            s = min(1.0, resize_max / max(c.width, c.height)) if resize_max else 1.0
            w, h = int(round(c.width * s)), int(round(c.height * s))
            if s < 1.0:
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            sx, sy = w / c.width, h / c.height
            # hloc-centre K -> COLMAP corner convention, scaled with the image
            params = [
                c.K[0, 0] * sx,
                c.K[1, 1] * sy,
                (c.K[0, 2] + 0.5) * sx,
                (c.K[1, 2] + 0.5) * sy,
            ]
            q, t = pose_from_center(c.R.T, c.C)
            stem = Path(c.name).stem
            if i in q_idx:
                conds = ["day", "night"] if both_conditions else ["night" if i in night else "day"]
                for cond in conds:
                    name = f"query/{cond}/nexus5x/{stem}.jpg"
                    out = img
                    if cond == "night":
                        out = day_to_night(img[..., ::-1], rng, night_darkness)[..., ::-1]
                    lists[cond].append(
                        f"{name} PINHOLE {w} {h} " + " ".join(repr(float(v)) for v in params)
                    )
                    gt.append(f"{name} " + " ".join(repr(float(v)) for v in (*q, *t)))
                    _write_jpeg(img_root / name, out)
                continue
            else:
                name = f"db/{stem}.jpg"
                cameras.append({"model": "PINHOLE", "width": w, "height": h, "params": params})
                images.append(
                    {"name": name, "camera_idx": len(cameras) - 1, "qvec_wxyz": q, "tvec": t}
                )
            _write_jpeg(img_root / name, img)
        write_reference_model(tmp / MODEL_SUBDIR, cameras, images)
        (tmp / "queries").mkdir(parents=True, exist_ok=True)
        for cond in ("day", "night"):
            (tmp / "queries" / f"{cond}_time_queries_with_intrinsics.txt").write_text(
                "\n".join(lists[cond]) + "\n"
            )
            (img_root / "query" / cond / "nexus5x").mkdir(parents=True, exist_ok=True)
        (tmp / GT_FILE).write_text("\n".join(gt) + "\n")
        (tmp / "strecha_config.json").write_text(
            json.dumps(
                {
                    "scene": str(scene_dir),
                    "query_every": query_every,
                    "night_fraction": night_fraction,
                    "resize_max": resize_max,
                    "night_darkness": night_darkness,
                    "seed": seed,
                    "both_conditions": both_conditions,
                },
                indent=1,
            )
        )
    return out_root
