"""Patch extraction around keypoints with kornia local affine frames (LAFs).

One convention for the whole toolkit (training-patch writers AND test-time extraction use it):

- keypoint ``size`` is OpenCV's ``KeyPoint.size`` (a diameter, = 2 sigma of the DoG blob), pixels;
- ``sigma = size / 2``; a patch covers a square of side ``mr_size * sigma`` pixels, default
  ``MR_SIZE = 12`` (hloc's DoG extractor support: half-width 6 sigma = 3 * size), the support of
  the training patches; ``localize.dog_features`` cuts wider ones by default (its ``default_conf``);
- ``ori`` is in radians in kornia's convention; from OpenCV use ``opencv_angle_to_ori``
  (``ori = -deg2rad(kp.angle)``, checked by rotating an image 90 degrees);
- output patches are (N, 1, P, P) float32 in [0, 1], P = 32 by default.

Also the one place that turns stored uint8 patches (Brown 64x64, HPatches 65x65) into network
input: :func:`resize_patches` (per-patch ``cv2.resize``) and :func:`patches_to_input` (+ / 255).
PhotoTour uses ``cv2.INTER_AREA`` (HardNet's training ``cv2_scale``), HPatches
``cv2.INTER_LINEAR`` (HardNet's HPatches extractor, OpenCV's default). :func:`describe_patches`
/ :func:`describe_rows` run an extractor over stored Brown patches that way (the PhotoTour
evaluations of :mod:`descriptors.phototour_eval` and :mod:`descriptors.fracking_protocol`).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

MR_SIZE: float = 12.0
PATCH_SIZE: int = 32


def resize_patches(
    patches: np.ndarray, size: int = PATCH_SIZE, interpolation: int = cv2.INTER_AREA
) -> np.ndarray:
    """(N, H, W) patches -> (N, size, size), same dtype, ``cv2.resize`` one patch at a time (the
    multi-channel code path rounds differently; ~8 us a patch). Already ``size``: a copy."""
    patches = np.asarray(patches)
    if patches.ndim != 3:
        raise ValueError(f"expected (N, H, W) patches, got shape {patches.shape}")
    if patches.shape[1:] == (size, size):
        return patches.copy()
    out = np.empty((len(patches), size, size), patches.dtype)
    for i in range(len(patches)):
        out[i] = cv2.resize(patches[i], (size, size), interpolation=interpolation)
    return out


def patches_to_input(
    patches_uint8: np.ndarray, size: int = PATCH_SIZE, interpolation: int = cv2.INTER_AREA
) -> np.ndarray:
    """(N, H, W) uint8 -> (N, 1, size, size) float32 in [0, 1]: :func:`resize_patches` on the
    uint8 patch, then / 255 (HardNet's ``cv2.resize(patch, (32, 32)) / 255.``)."""
    return (resize_patches(patches_uint8, size, interpolation).astype(np.float32) / 255.0)[:, None]


def opencv_angle_to_ori(angle_deg: np.ndarray) -> np.ndarray:
    """OpenCV ``KeyPoint.angle`` (degrees, clockwise on screen) -> kornia LAF orientation (rad)."""
    return -np.deg2rad(np.asarray(angle_deg, np.float64)).astype(np.float32)


def detect_dog(
    gray: np.ndarray,
    max_keypoints: int = 4096,
    contrast_threshold: float = 0.02,
    edge_threshold: float = 10.0,
    min_size: float = 2.0,
) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV DoG (SIFT detector) keypoints, strongest first: the one detector of the toolkit
    (extraction, patch-dataset builders, synthetic writers, benchmarks).

    Returns:
        kps (list of cv2.KeyPoint, kept for OpenCV SIFT description), xy (N, 2) float32 pixel
        centres, size (N,) float32 OpenCV diameter (2 sigma), angle (N,) float32 OpenCV degrees,
        response (N,) float32.
    """
    sift = cv2.SIFT_create(
        nfeatures=0, contrastThreshold=contrast_threshold, edgeThreshold=edge_threshold
    )
    kps = [k for k in sift.detect(gray, None) if k.size >= min_size]
    kps.sort(key=lambda k: -k.response)
    if max_keypoints is not None and max_keypoints > 0:
        kps = kps[:max_keypoints]
    if not kps:
        z = np.zeros((0,), np.float32)
        return [], np.zeros((0, 2), np.float32), z, z.copy(), z.copy()
    xy = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
    size = np.array([k.size for k in kps], np.float32)
    angle = np.array([k.angle for k in kps], np.float32)
    resp = np.array([k.response for k in kps], np.float32)
    return kps, xy, size, angle, resp


def _as_image_tensor(
    image: np.ndarray | torch.Tensor, device: torch.device | str | None
) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        t = image.float()
        if t.ndim == 2:
            t = t[None, None]
        elif t.ndim == 3:
            t = t[None]
        if t.max() > 1.5:
            t = t / 255.0
        return t.to(device) if device is not None else t
    a = np.asarray(image)
    if a.ndim == 3:
        a = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
    if a.ndim != 2:
        raise ValueError(f"expected a (H, W) grayscale or (H, W, 3) image, got shape {a.shape}")
    scale = 255.0 if a.dtype == np.uint8 or a.max() > 1.5 else 1.0
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32) / scale)[None, None]
    return t.to(device) if device is not None else t


def extract_patches(
    image: np.ndarray | torch.Tensor,
    xy: np.ndarray,
    size: np.ndarray,
    ori: np.ndarray | None = None,
    patch_size: int = PATCH_SIZE,
    mr_size: float = MR_SIZE,
    device: torch.device | str | None = None,
    batch: int = 4096,
) -> torch.Tensor:
    """Cut oriented, scale-normalised square patches around keypoints.

    Args:
        image: (H, W) uint8/float grayscale, (H, W, 3) RGB, or a (1, 1, H, W) tensor in [0, 1].
        xy: (N, 2) pixel centres (x, y), top-left pixel centre at (0, 0).
        size: (N,) OpenCV keypoint size (diameter, pixels).
        ori: (N,) orientation in radians, kornia convention (None = upright).
        patch_size: output side P in pixels.
        mr_size: patch side in units of sigma = size / 2.
        batch: keypoints per kornia call (memory cap).
    Returns:
        (N, 1, P, P) float32 tensor in [0, 1] (on ``device``; CPU by default).
    """
    import kornia.feature as KF

    img = _as_image_tensor(image, device)
    xy = np.asarray(xy, np.float32).reshape(-1, 2)
    n = len(xy)
    if n == 0:
        return torch.zeros((0, 1, patch_size, patch_size), dtype=torch.float32, device=img.device)
    size = np.asarray(size, np.float32).reshape(-1)
    if len(size) != n:
        raise ValueError(f"size has {len(size)} entries for {n} keypoints")
    if ori is None:
        ori = np.zeros(n, np.float32)
    ori = np.asarray(ori, np.float32).reshape(-1)
    # kornia LAF with scale s covers [-s, s] around the centre -> half side = mr_size*sigma/2
    half = mr_size * (size / 2.0) / 2.0
    out = []
    for i in range(0, n, batch):
        c = torch.from_numpy(xy[i : i + batch]).to(img.device)[None]
        s = torch.from_numpy(half[i : i + batch]).to(img.device)[None, :, None, None]
        o = torch.from_numpy(np.rad2deg(ori[i : i + batch])).to(img.device)[None, :, None]
        laf = KF.laf_from_center_scale_ori(c, s, o)
        p = KF.extract_patches_from_pyramid(img, laf, patch_size)
        out.append(p[0])
    return torch.cat(out, 0).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------- describing
def describe_patches(
    extractor: Any, patches_uint8: np.ndarray, batch: int = 1024, progress: bool = True
) -> np.ndarray:
    """(N, 64, 64) uint8 Brown patches -> (N, D) float32 descriptors (resized to the
    extractor's patch size, 32 by default, with cv2 INTER_AREA as HardNet)."""
    from tqdm import tqdm

    size = int(extractor.patch_size)
    n = len(patches_uint8)
    out = []
    step = max(batch, 1) * 8
    for s in tqdm(
        range(0, n, step),
        desc=f"describe {extractor.name}",
        unit="chunk",
        disable=True if (not progress or n <= step) else None,
    ):
        x = patches_to_input(patches_uint8[s : s + step], size, cv2.INTER_AREA)
        for i in range(0, len(x), batch):
            out.append(np.asarray(extractor(x[i : i + batch]), np.float32))
    if not out:
        return np.zeros((0, int(extractor.dim)), np.float32)
    return np.concatenate(out, 0)


def describe_rows(
    extractor: Any, data: Any, rows: Any, batch: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Describe the patches ``rows`` of ``data`` once -> (sorted unique rows (U,), desc (U, D)).

    ``rows``: an index array, or a list of index arrays (their union; no concatenated copy).
    """
    n = len(data.patches)
    used = np.zeros(n, bool)  # O(N) union, no sort of the rows
    for r in rows if isinstance(rows, list) else [rows]:
        r = np.asarray(r)
        if r.size and (r.min() < 0 or r.max() >= n):
            raise ValueError(
                f"{getattr(data, 'root', 'data')}: patch index out of range for {n} patches"
            )
        used[r.reshape(-1)] = True
    uniq = np.flatnonzero(used)
    return uniq, describe_patches(extractor, data.patches[uniq], batch=batch, progress=progress)
