"""Photo sources and image transforms (photometric, night, colour style, stylisation) shared by
the synthetic dataset writers and the self-supervised pairs.

Photos are the real photographs that ship inside scikit-image (and scikit-learn's two sample
images), so nothing is downloaded. They are split into two DISJOINT lists:

- ``TRAIN_PHOTOS``: used to make training data (patches, bags, self-supervised pairs).
- ``TEST_PHOTOS``: used for every evaluation set (PhotoTour test split, HPatches-synth, the
  synthetic Aachen scene, the synthetic retrieval landmarks).

All functions are pure: they take a ``numpy.random.Generator`` and arrays, and return arrays.
Images are ``uint8`` (H, W) grayscale or (H, W, 3) RGB unless said otherwise.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

# name -> loader; every loader returns an RGB or grayscale uint8 array.
TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "brick",
    "coins",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "cell",
    "sklearn_flower",
)
TEST_PHOTOS: tuple[str, ...] = (
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "grass",
    "retina",
    "rocket",
    "text",
    "sklearn_china",
)
ALL_PHOTOS = TRAIN_PHOTOS + TEST_PHOTOS


def _loader(name: str) -> Callable[[], np.ndarray]:
    if name.startswith("sklearn_"):

        def load() -> np.ndarray:
            from sklearn.datasets import load_sample_image

            return load_sample_image(name[len("sklearn_") :] + ".jpg")

        return load
    import skimage.data

    fn = getattr(skimage.data, name, None)
    if fn is None:
        raise KeyError(f"unknown photo '{name}': choose from {', '.join(ALL_PHOTOS)}")
    return fn


def photo_names(split: str) -> list[str]:
    """Photo names of a split: ``'train'``, ``'test'`` or ``'all'``."""
    if split == "train":
        return list(TRAIN_PHOTOS)
    if split == "test":
        return list(TEST_PHOTOS)
    if split == "all":
        return list(ALL_PHOTOS)
    raise ValueError(f"unknown photo split '{split}' (expected train, test or all)")


def load_photo(name: str, gray: bool = False, min_side: int = 0) -> np.ndarray:
    """Load a bundled photo as uint8.

    Args:
        name: one of ``ALL_PHOTOS``.
        gray: return (H, W) luminance instead of (H, W, 3) RGB.
        min_side: if > 0, upscale (bicubic) so the shorter side is at least this many pixels.
    Returns:
        (H, W) or (H, W, 3) uint8 array.
    """
    img = np.asarray(_loader(name)())
    if img.dtype != np.uint8:
        img = (255 * (img.astype(np.float64) / max(float(img.max()), 1e-9))).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if min_side and min(img.shape[:2]) < min_side:
        s = min_side / min(img.shape[:2])
        img = cv2.resize(
            img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_CUBIC
        )
    if gray:
        return to_gray(img)
    return np.ascontiguousarray(img)


def to_gray(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8; grayscale passes through."""
    if img.ndim == 2:
        return img
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)


def random_homography(
    h: int,
    w: int,
    rng: np.random.Generator,
    strength: float = 0.25,
    max_rotation_deg: float = 30.0,
    scale_range: tuple[float, float] = (0.7, 1.3),
) -> np.ndarray:
    """Random plausible homography mapping pixels of an (h, w) image into an image of the same size.

    Composed of a rotation about the centre, an isotropic scale, a perspective corner jitter of up
    to ``strength`` * side length and a small translation; the image centre stays in view.

    Returns:
        (3, 3) float64 H with x' ~ H @ [x, y, 1].
    """
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ang = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    s = np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1])))
    c, si = np.cos(ang) * s, np.sin(ang) * s
    T1 = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], np.float64)
    RS = np.array([[c, -si, 0], [si, c, 0], [0, 0, 1]], np.float64)
    T2 = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]], np.float64)
    A = T2 @ RS @ T1
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    jitter = rng.uniform(-strength, strength, size=(4, 2)) * np.array([w, h]) * 0.5
    shift = rng.uniform(-0.05, 0.05, size=(1, 2)) * np.array([w, h])
    dst = (src + jitter + shift).astype(np.float32)
    P = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
    H = P @ A
    return H / H[2, 2]


def warp(
    img: np.ndarray, H: np.ndarray, size: tuple[int, int] | None = None, border_value: int = 0
) -> np.ndarray:
    """Warp an image by homography H into an image of ``size`` = (w, h) (default: same size)."""
    if size is None:
        size = (img.shape[1], img.shape[0])
    return cv2.warpPerspective(
        img,
        H,
        size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )


def apply_homography(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map (N, 2) pixel xy through H; returns (N, 2) float64."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    p = np.concatenate([xy, np.ones((len(xy), 1))], 1) @ H.T
    return p[:, :2] / p[:, 2:3]


def homography_jacobian(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N, 2, 2) Jacobian d(H(x))/dx of the homography at the points xy (N, 2)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    u = H[0, 0] * x + H[0, 1] * y + H[0, 2]
    v = H[1, 0] * x + H[1, 1] * y + H[1, 2]
    w = H[2, 0] * x + H[2, 1] * y + H[2, 2]
    J = np.empty((len(xy), 2, 2))
    J[:, 0, 0] = (H[0, 0] * w - u * H[2, 0]) / w**2
    J[:, 0, 1] = (H[0, 1] * w - u * H[2, 1]) / w**2
    J[:, 1, 0] = (H[1, 0] * w - v * H[2, 0]) / w**2
    J[:, 1, 1] = (H[1, 1] * w - v * H[2, 1]) / w**2
    return J


def photometric(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Random illumination change: gain, bias, gamma, a smooth shading ramp, blur and noise.

    Args:
        img: uint8 (H, W) or (H, W, 3).
        strength: 0 = identity, 1 = the default range used for training.
    Returns:
        uint8 array of the same shape.
    """
    x = img.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    gain = np.exp(rng.normal(0, 0.25 * strength))
    bias = rng.normal(0, 0.06 * strength)
    gamma = np.exp(rng.normal(0, 0.3 * strength))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.normal(0, 0.4 * strength, 2)
    ramp = 1.0 + gx * (xx / max(w, 1) - 0.5) + gy * (yy / max(h, 1) - 0.5)
    if x.ndim == 3:
        ramp = ramp[..., None]
        gain = gain * np.exp(rng.normal(0, 0.05 * strength, 3)).astype(np.float32)
    x = np.clip(x, 0, 1) ** gamma * gain * ramp + bias
    if rng.random() < 0.5 * strength:
        k = int(rng.integers(1, 3)) * 2 + 1
        x = cv2.GaussianBlur(x, (k, k), 0)
    x = x + rng.normal(0, 0.02 * strength, x.shape).astype(np.float32)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


#: lowest exposure level of :func:`day_to_night`: below darkness 1.33 the level never gets here;
#: without the floor, darkness 1.35 could render a level <= 0, an image of noise alone.
NIGHT_MIN_LEVEL = 0.05


def day_to_night(img: np.ndarray, rng: np.random.Generator, darkness: float = 1.0) -> np.ndarray:
    """Night-style rendering: strong darkening, gamma, orange/blue colour cast, local "street
    light" pools, sensor noise and JPEG-like blur.

    Args:
        img: uint8 (H, W) or (H, W, 3).
        darkness: 0 = identity, 1 = typical night; above 1 darker still, the exposure level
            floored at ``NIGHT_MIN_LEVEL`` so the scene never vanishes into pure noise.
    Returns:
        uint8 array of the same shape.
    """
    x = img.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    level = 0.25 + 0.2 * rng.random()
    level = max(1.0 - darkness * (1.0 - level), NIGHT_MIN_LEVEL)
    gamma = 1.0 + darkness * rng.uniform(0.4, 1.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.2, 0.6) * max(h, w)
        light += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    light = 1.0 + darkness * 1.2 * light
    if x.ndim == 3:
        cast = np.array([1.15, 0.95, 0.7] if rng.random() < 0.6 else [0.8, 0.9, 1.2], np.float32)
        cast = 1.0 + darkness * (cast - 1.0)
        x = (x**gamma) * level * light[..., None] * cast
    else:
        x = (x**gamma) * level * light
    x = x + rng.normal(0, 0.025 * darkness, x.shape).astype(np.float32)
    x = cv2.GaussianBlur(x, (3, 3), 0.6 * darkness + 1e-3)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def color_style_shift(
    img: np.ndarray, rng: np.random.Generator, strength: float = 1.0
) -> np.ndarray:
    """One random colour / style change of an RGB uint8 image (HNDesc-style colour augmentation).

    One of: hue rotation + saturation scaling (HSV), channel shuffle, random monotone tone curve
    per channel, CLAHE, posterisation (3-5 bits). ``strength`` scales the hue / curve amplitude.
    Grayscale input is returned unchanged except for tone curve / CLAHE / posterisation.
    Returns uint8 of the same shape.
    """
    img = np.ascontiguousarray(img)
    rgb = img.ndim == 3
    ops = (
        ["hsv", "shuffle", "curves", "clahe", "posterize"]
        if rgb
        else ["curves", "clahe", "posterize"]
    )
    op = ops[int(rng.integers(len(ops)))]
    if op == "hsv":
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int32)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-45, 46) * strength)) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * np.exp(rng.normal(0, 0.4 * strength)), 0, 255)
        return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    if op == "shuffle":
        perm = rng.permutation(3)
        while np.all(perm == np.arange(3)):
            perm = rng.permutation(3)
        return np.ascontiguousarray(img[..., perm])
    if op == "curves":
        x = np.linspace(0, 1, 256)
        chans = 3 if rgb else 1
        out = np.empty_like(img)
        for c in range(chans):
            # monotone curve: cumulative sum of positive random increments through 5 knots
            knots = np.cumsum(rng.uniform(1 - 0.8 * strength, 1 + 0.8 * strength, 5).clip(0.05))
            knots = np.concatenate([[0], knots / knots[-1]])
            lut = np.interp(x, np.linspace(0, 1, 6), knots)
            lut = (255 * lut + 0.5).astype(np.uint8)
            if rgb:
                out[..., c] = lut[img[..., c]]
            else:
                out = lut[img]
        return out
    if op == "clahe":
        clahe = cv2.createCLAHE(clipLimit=float(rng.uniform(2, 4)), tileGridSize=(8, 8))
        if rgb:
            lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
            lab[..., 0] = clahe.apply(lab[..., 0])
            return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
        return clahe.apply(img)
    bits = int(rng.integers(3, 6))
    mask = np.uint8((0xFF << (8 - bits)) & 0xFF)
    return (img & mask) + np.uint8(1 << (7 - bits))


def stylize(
    img: np.ndarray, rng: np.random.Generator, style: np.ndarray, smooth: bool = True
) -> np.ndarray:
    """Non-neural photorealistic stylisation of an RGB uint8 image (HNDesc stand-in).

    Reinhard colour transfer: each CIE-Lab channel of ``img`` is shifted / scaled to the mean /
    std of ``style`` (another photo, any size), then (``smooth``) an edge-preserving filter
    (``cv2.edgePreservingFilter``, sigma_s 20-60 px, sigma_r 0.2-0.5) and a random monotone tone
    curve. Returns uint8 of ``img``'s shape (grayscale in -> grayscale out).
    """
    gray_in = img.ndim == 2
    rgb = np.repeat(img[..., None], 3, 2) if gray_in else np.ascontiguousarray(img)
    sty = np.repeat(style[..., None], 3, 2) if style.ndim == 2 else np.ascontiguousarray(style)
    if max(sty.shape[:2]) > 128:  # statistics only: a small copy is enough
        f = 128 / max(sty.shape[:2])
        sty = cv2.resize(
            sty,
            (max(1, round(sty.shape[1] * f)), max(1, round(sty.shape[0] * f))),
            interpolation=cv2.INTER_AREA,
        )
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(sty, cv2.COLOR_RGB2LAB).astype(np.float32).reshape(-1, 3)
    mu, sd = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0) + 1e-3
    lab = (lab - mu) / sd * (ref.std(0) + 1e-3) + ref.mean(0)
    out = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    if smooth:
        out = cv2.edgePreservingFilter(
            out,
            flags=cv2.RECURS_FILTER,
            sigma_s=float(rng.uniform(20, 60)),
            sigma_r=float(rng.uniform(0.2, 0.5)),
        )
        gamma = float(np.exp(rng.normal(0, 0.3)))
        lut = (255 * (np.linspace(0, 1, 256) ** gamma) + 0.5).astype(np.uint8)
        out = lut[out]
    return to_gray(out) if gray_in else out
