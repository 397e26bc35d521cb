"""Image files: decoding with the checks every reader needs (truncated JPEG / PNG refused, a
pixel cap read from the header before decoding) and the content fingerprint that decides
whether features extracted from an image are still current."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import cv2
import numpy as np

from descriptors.util import ToolkitError

PathLike = str | os.PathLike


class ImageReadError(ToolkitError, RuntimeError):
    """An image file is missing or cannot be decoded (one line naming the file)."""


#: default cap on decoded image size, pixels (w * h, read from the header before decoding);
#: ``read_image(max_pixels=...)`` / ``localize.extract_features --max_pixels`` raise it
MAX_IMAGE_PIXELS = 100_000_000


#: bytes read per step while :func:`image_fingerprint` hashes a whole file
FINGERPRINT_CHUNK = 1024 * 1024


def _truncation(data: bytes) -> str | None:
    """Why a JPEG / PNG byte string looks truncated, or None when it ends properly.

    JPEG: an EOI marker (FF D9) must follow the last start-of-scan (FF DA); FF D9 cannot occur
    inside entropy-coded data, so trailing padding or appended data still pass. PNG: an IEND
    chunk must follow the last IDAT. Other formats are not checked.
    """
    if data[:3] == b"\xff\xd8\xff":
        if data.rfind(b"\xff\xd9") < max(data.rfind(b"\xff\xda"), 2):
            return "truncated JPEG (no end-of-image marker FFD9 after the last scan)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if data.rfind(b"IEND") < max(data.rfind(b"IDAT"), 8):
            return "truncated PNG (no IEND chunk after the image data)"
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) an encoded image declares in its header (PIL reads only the header),
    or None when PIL does not know the format (OpenCV then decodes it under its own cap)."""
    import io as _bytes_io

    from PIL import Image  # matplotlib's dependency; only the header is parsed

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(_bytes_io.BytesIO(data)) as im:
                    return int(im.size[0]), int(im.size[1])
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except Exception:  # noqa: BLE001 - unknown / broken header: OpenCV decides
        return None


def read_image(path: PathLike, grayscale: bool = True, max_pixels: int | None = None) -> np.ndarray:
    """Read an image with OpenCV (EXIF orientation ignored, as hloc).

    A JPEG without its end-of-image marker or a PNG without its IEND chunk (a truncated copy,
    which OpenCV would decode with a grey bottom part and only a warning on stderr) is refused.
    An image whose header declares more than ``max_pixels`` (default :data:`MAX_IMAGE_PIXELS`)
    is refused before it is decoded (a small file can declare gigapixels).

    Returns:
        (H, W) uint8 if ``grayscale`` else (H, W, 3) uint8 RGB.
    Raises:
        ImageReadError naming the file when it does not exist, is truncated or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"cannot read image {path}: {e.strerror}") from None
    why = _truncation(data)
    if why is not None:
        raise ImageReadError(f"cannot use image {path}: {why}; copy it again")
    cap = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    wh = header_size(data)
    if wh is not None and wh[0] * wh[1] > cap:
        raise ImageReadError(
            f"image {path} declares {wh[0]}x{wh[1]} = {wh[0] * wh[1] / 1e6:.0f} "
            f"MP, over the cap of {cap / 1e6:g} MP (raise it with "
            "--max_pixels if the image is genuine)"
        )
    flags = (
        cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    ) | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if image is None or image.size == 0:
        raise ImageReadError(f"cannot decode image {path} (corrupt or unsupported format)")
    if not grayscale:
        image = np.ascontiguousarray(image[:, :, ::-1])
    return image


def image_fingerprint(path: PathLike) -> str:
    """Identity of an image file's current content, stored with its features.

    ``"size=<bytes> blake2b=<hex>"``, the hash over the WHOLE file (streamed in
    :data:`FINGERPRINT_CHUNK` reads; blake2b runs at about 1 GB/s). Any byte changing makes
    the stored features stale; touching the file (mtime only) does not.

    Raises:
        ImageReadError naming the file when it does not exist or cannot be read.
    """
    path = Path(path)
    try:
        h = hashlib.blake2b(digest_size=16)
        size = 0
        with open(path, "rb") as f:
            while chunk := f.read(FINGERPRINT_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise ImageReadError(f"image not found: {path}") from None
    except OSError as e:
        raise ImageReadError(f"cannot read image {path}: {e.strerror}") from None
    return f"size={size} blake2b={h.hexdigest()}"
