"""One image -> DoG keypoints + patch descriptors, in hloc's features layout (the extraction model).

``default_conf`` holds the per-image settings; :func:`extract_image` runs the whole chain on one
grayscale image: resize (longer side <= ``resize_max``), optional contrast stretch, OpenCV DoG
keypoints (``descriptors.patches.detect_dog``), oriented patches of ``mr_size`` sigma cut by kornia
(``descriptors.patches.extract_patches``) and described by a ``descriptors.registry`` extractor
(OpenCV SIFT / RootSIFT describe the full image), keypoints back in original pixels with pixel
centres at integers. :func:`prepare_image` (CPU: resize + DoG) and :func:`describe` (device) are
its two halves; :func:`iter_prepared` runs the first ahead of the second in a thread pool.
``localize.extract_features`` loops over a folder and writes the file.
"""

from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch

from descriptors import registry
from descriptors.patches import detect_dog, extract_patches, opencv_angle_to_ori
from localize import image_io

default_conf: dict[str, Any] = {
    "max_keypoints": 4096,  # strongest DoG responses kept
    "resize_max": 1600,  # longer side (px) the detector sees; None = full size
    "resize_force": False,  # also upscale to resize_max
    # patch side in units of sigma: wider than the training patches' MR_SIZE = 12 (hloc's DoG
    # support), measured better for every learned descriptor on held-out photos (README)
    "mr_size": 16.0,
    "contrast_threshold": 0.02,  # OpenCV SIFT contrastThreshold (OpenCV default 0.04)
    "edge_threshold": 10.0,
    "min_size": 2.0,  # drop keypoints with OpenCV size < this (px, resized image)
    "batch_size": 1024,  # patches per network forward pass (memory cap)
    "patch_batch": 8192,  # keypoints per kornia patch-extraction pass
    "opencv_full_image": True,  # sift/rootsift: OpenCV SIFT on the full image (see docstring)
    # stretch each resized image's grey levels, 1st..99.5th percentile -> 0..255, before
    # detection and description (night photos otherwise give few DoG keypoints)
    "contrast_stretch": False,
}

#: OpenCV's SIFT detects on a 2x upsampled image and halves the coordinates (x = x_up / 2), but
#: an upsampled pixel centre x_up sits at (x_up + 0.5) / 2 - 0.5 in the image: its keypoints lie
#: 0.25 px right of / below the blob (a Gaussian blob at (63.0, 63.0) comes back at 63.23).
#: Subtracted from ``detect_dog``'s xy when keypoints are stored (patches are cut where OpenCV
#: says, as for the training patches).
OPENCV_XY_OFFSET = 0.25


def resize_image(
    gray: np.ndarray, resize_max: int | None, force: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Resize so max(h, w) <= resize_max.

    Returns (image, scale (2,) = original / resized (x, y))."""
    h, w = gray.shape[:2]
    if resize_max and (force or max(h, w) > resize_max):
        s = resize_max / max(h, w)
        nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (nw, nh), interpolation=interp)
    scale = np.array([w / gray.shape[1], h / gray.shape[0]], np.float64)
    return gray, scale


def describe(
    gray: np.ndarray,
    kps: list,
    xy: np.ndarray,
    size: np.ndarray,
    angle: np.ndarray,
    extractor: registry.Extractor,
    conf: dict[str, Any],
    device: torch.device | str | None = None,
) -> np.ndarray:
    """(N, D) float32 unit descriptors of keypoints of one (resized) grayscale image.

    Args:
        kps, xy, size, angle: :func:`descriptors.patches.detect_dog`'s output (OpenCV xy).
        extractor: a ``descriptors.registry`` extractor (OpenCV ones describe the full image
            at the keypoints; the others (B, 1, P, P) patches in [0, 1]).
    """
    dim = int(extractor.dim)
    if len(xy) == 0:
        return np.zeros((0, dim), np.float32)
    if extractor.is_opencv and conf.get("opencv_full_image", True):
        kps_out, d = cv2.SIFT_create().compute(gray, list(kps))
        if d is None or len(kps_out) != len(kps):
            raise RuntimeError(
                f"OpenCV SIFT returned {0 if d is None else len(d)} descriptors "
                f"for {len(kps)} keypoints"
            )
        return np.asarray(extractor.postprocess(d.astype(np.float32)), np.float32)
    ps = int(extractor.patch_size)
    bs = int(conf.get("batch_size", 1024))
    ori = opencv_angle_to_ori(angle)
    # the image goes to the device once; patches of all keypoints are cut in one pass (one
    # pyramid; N x 1 x 32 x 32 float32 = 16 MB for 4096 keypoints), then described in batches
    # of ``batch_size`` (the memory cap for network activations)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cpu":
        img = torch.from_numpy(np.ascontiguousarray(gray, np.float32) / 255.0)[None, None]
    else:  # upload the uint8 image (4x fewer bytes), convert on the device
        img = torch.from_numpy(np.ascontiguousarray(gray, np.uint8)).to(dev, non_blocking=True)
        img = (img.float() / 255.0)[None, None]
    patches = extract_patches(
        img,
        xy,
        size,
        ori,
        patch_size=ps,
        mr_size=float(conf.get("mr_size", default_conf["mr_size"])),
        device=img.device,
        batch=int(conf.get("patch_batch", 8192)),
    )
    half = conf.get("half", False)
    with _autocast(dev, half):
        out = [
            np.asarray(extractor(patches[i : i + bs]), np.float32).reshape(-1, dim)
            for i in range(0, len(patches), bs)
        ]
    d = np.concatenate(out, 0)
    if half:  # the network's own L2 normalisation ran in 16 bit: renormalise in float32
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    return d


def half_dtype(device: torch.device | str) -> torch.dtype:
    """Autocast dtype of ``--half``: float16 on CUDA, bfloat16 elsewhere (CPU autocast)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def _autocast(device: torch.device, half: bool) -> Any:
    if not half:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=half_dtype(device))


def stretch_contrast(gray: np.ndarray, low: float = 1.0, high: float = 99.5) -> np.ndarray:
    """(H, W) uint8 -> (H, W) uint8 with the ``low`` .. ``high`` percentile grey levels mapped
    linearly to 0 .. 255 (clipped); a flat image is returned unchanged."""
    lo, hi = np.percentile(gray, (low, high))
    if hi - lo < 1.0:
        return gray
    out = (gray.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def prepare_image(gray: np.ndarray, conf: dict[str, Any]) -> dict[str, Any]:
    """CPU half of :func:`extract_image` (runs in the worker pool): resize + DoG.

    Returns:
        dict with ``small`` (resized uint8 image), ``scale (2,)`` (original / resized, x y),
        ``kps``, ``xy (N, 2)``, ``size (N,)``, ``angle (N,)``, ``resp (N,)`` (see
        :func:`detect_dog`) and ``hw`` = original (h, w).
    """
    conf = {**default_conf, **conf}
    small, scale = resize_image(gray, conf["resize_max"], conf["resize_force"])
    if conf["contrast_stretch"]:
        small = stretch_contrast(small)
    kps, xy, size, angle, resp = detect_dog(
        small,
        conf["max_keypoints"],
        conf["contrast_threshold"],
        conf["edge_threshold"],
        conf["min_size"],
    )
    return {
        "small": small,
        "scale": scale,
        "kps": kps,
        "xy": xy,
        "size": size,
        "angle": angle,
        "resp": resp,
        "hw": gray.shape[:2],
    }


def finish_image(prep: dict[str, Any], desc: np.ndarray) -> dict[str, Any]:
    """File-layout features (see :func:`extract_image`) from :func:`prepare_image`'s output
    and the (N, D) descriptors."""
    h, w = prep["hw"]
    scale, xy, size, angle = prep["scale"], prep["xy"], prep["size"], prep["angle"]
    xy = xy.astype(np.float64) - OPENCV_XY_OFFSET
    kp = ((xy + 0.5) * scale[None] - 0.5).astype(np.float32).reshape(-1, 2)
    return {
        "keypoints": kp,
        "descriptors": np.ascontiguousarray(desc, np.float32),
        "scores": prep["resp"].astype(np.float32),
        "scales": (size.astype(np.float64) / 2.0 * scale.mean()).astype(np.float32),
        "oris": ((angle.astype(np.float64) + 180.0) % 360.0 - 180.0).astype(np.float32),
        "image_size": np.array([w, h], np.int64),
        "uncertainty": float(1.0 * scale.mean()),
    }


def extract_image(
    gray: np.ndarray, extractor: Any, conf: dict[str, Any], device: torch.device | str | None = None
) -> dict[str, Any]:
    """Features of one full-resolution grayscale uint8 image, in the file layout.

    Returns:
        dict with ``keypoints (N, 2) float32`` (original resolution, pixel centres at
        integers), ``descriptors (N, D) float32``, ``scores (N,)``, ``scales (N,)`` (sigma,
        original px), ``oris (N,)`` (degrees, hloc's DoG convention), ``image_size (2,) int64``
        (w, h), ``uncertainty`` (float).
    """
    conf = {**default_conf, **conf}
    prep = prepare_image(gray, conf)
    desc = describe(
        prep["small"], prep["kps"], prep["xy"], prep["size"], prep["angle"], extractor, conf, device
    )
    return finish_image(prep, desc)


def iter_prepared(
    names: Sequence[str],
    image_dir: str | Path,
    conf: dict[str, Any],
    num_workers: int = 2,
    prefetch: int | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(name, prepare_image(read_image(image_dir / name), conf))`` in ``names`` order.

    Decode + resize + DoG run in a thread pool of ``num_workers`` (OpenCV releases the GIL)
    at most ``prefetch`` images (default ``2 * num_workers``) ahead of the consumer, so the
    descriptor network never waits for the detector. ``num_workers=0``: in the calling thread.
    A worker's exception (e.g. :class:`image_io.ImageReadError`) is raised at that image's turn.
    """
    image_dir = Path(image_dir)

    def load(name: str) -> dict[str, Any]:
        return prepare_image(
            image_io.read_image(
                image_dir / name, grayscale=True, max_pixels=conf.get("max_pixels")
            ),
            conf,
        )

    if num_workers <= 0:
        for name in names:
            yield name, load(name)
        return
    ahead = max(1, prefetch if prefetch is not None else 2 * num_workers)
    pool = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="extract-dog")
    queue: deque[tuple[str, Future]] = deque()
    it = iter(names)
    try:
        for name in it:
            queue.append((name, pool.submit(load, name)))
            if len(queue) >= ahead:
                break
        while queue:
            name, fut = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(load, nxt)))
            yield name, fut.result()
    finally:
        for _, fut in queue:
            fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
