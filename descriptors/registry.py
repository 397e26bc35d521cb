"""Descriptor registry: one name -> extractor + weights + preprocessing.

``load(name_or_path)`` returns an :class:`Extractor` mapping (B, 1, 32, 32) float32 patches in
[0, 1] to (B, D) float32 unit vectors, batched with a memory cap. Names:

- ``sift``, ``rootsift``: OpenCV SIFT computed on the patch with one keypoint at its centre
  (size chosen so SIFT's 4x4 grid covers the patch, angle 0: the patch is already oriented);
  rootsift = L1-normalise, sqrt (Arandjelovic & Zisserman 2012), then L2 = 1.
- every recipe name (``hardnet``, ``hndesc``, ``sdb``, ``wlrn``, ``fracking``): the shipped
  weights ``weights/<name>.pt``;
- any path to a checkpoint written by ``descriptors.train`` / ``descriptors.models``;
- any path to a published checkpoint as its authors released it (TFeat ``*.params``, affnet
  ``HardTFeat.pth``, HardNet repo ``HardNet++.pth``, kornia's HardNet / HardNet8 / SOSNet / HyNet /
  TFeat weight files): the layout is found from the keys (``descriptors.models.published``), and
  the extractor is named after the file stem. Nothing is ever downloaded.

Every file is read with ``torch.load(weights_only=True)``: a pickle that would build other
objects is refused with a one-line error before any of it runs.
"""

from __future__ import annotations

import abc
import logging
from pathlib import Path

import numpy as np
import torch

from descriptors.models import (
    CheckpointError,
    is_descriptor_checkpoint,
    model_from_checkpoint,
    safe_torch_load,
)
from descriptors.models.published import load_published
from descriptors.recipes import RECIPE_MODULES
from descriptors.util import ToolkitError

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
OPENCV_NAMES = ("sift", "rootsift")
#: every registered descriptor name: the OpenCV baselines, then the recipes (shipped weights)
NAMES: tuple[str, ...] = (*OPENCV_NAMES, *sorted(RECIPE_MODULES))
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".params", ".tar")


class DescriptorError(ToolkitError, RuntimeError):
    """Unknown descriptor name, missing weights or bad patch input (one-line message)."""


def _as_tensor(patches: np.ndarray | torch.Tensor, patch_size: int) -> torch.Tensor:
    if isinstance(patches, np.ndarray):
        if patches.dtype == np.uint8:
            patches = patches.astype(np.float32) / 255.0
        patches = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
    if not isinstance(patches, torch.Tensor):
        raise DescriptorError(
            f"patches must be a numpy array or torch tensor, got {type(patches).__name__}"
        )
    if patches.ndim == 3:
        patches = patches[:, None]
    if (
        patches.ndim != 4
        or patches.shape[1] != 1
        or patches.shape[2] != patch_size
        or patches.shape[3] != patch_size
    ):
        raise DescriptorError(
            f"expected patches of shape (B, 1, {patch_size}, {patch_size}), "
            f"got {tuple(patches.shape)}"
        )
    if patches.dtype == torch.uint8:
        patches = patches.float() / 255.0
    if not torch.is_floating_point(patches):
        raise DescriptorError(f"expected float patches in [0, 1], got dtype {patches.dtype}")
    return patches.float()


class Extractor(abc.ABC):
    """Callable patch descriptor. ``extractor(patches) -> (B, D) float32 numpy``.

    Subclasses implement :meth:`describe_tensor`; ``__call__`` adds input checks, batching with
    the memory cap ``batch_size`` and the conversion to numpy."""

    is_opencv = False

    def __init__(
        self,
        name: str,
        dim: int,
        patch_size: int = 32,
        batch_size: int = 1024,
        device: torch.device | str | None = None,
    ):
        self.name = name
        self.dim = dim
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    @abc.abstractmethod
    def describe_tensor(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, 1, P, P) float patches in [0, 1] -> (B, D) unit descriptors."""

    def __call__(self, patches: np.ndarray | torch.Tensor) -> np.ndarray:
        x = _as_tensor(patches, self.patch_size)
        if len(x) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = [
            self.describe_tensor(x[i : i + self.batch_size]).float().cpu().numpy()
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(out, 0).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={self.device})"


class TorchExtractor(Extractor):
    """A trained network from a checkpoint."""

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        dim: int,
        patch_size: int,
        batch_size: int = 1024,
        device: torch.device | str | None = None,
        meta: dict | None = None,
    ):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        super().__init__(name, dim, patch_size, batch_size, device)
        self.model = model.to(self.device).eval()
        self.meta = meta or {}

    @torch.no_grad()
    def describe_tensor(self, patches: torch.Tensor) -> torch.Tensor:
        patches = _as_tensor(patches, self.patch_size).to(self.device)
        out = []
        for i in range(0, len(patches), self.batch_size):
            out.append(self.model(patches[i : i + self.batch_size]))
        if not out:
            return torch.zeros((0, self.dim), device=self.device)
        return torch.cat(out, 0)


class OpenCVSiftExtractor(Extractor):
    """SIFT / RootSIFT on already-cut patches (keypoint at the patch centre)."""

    is_opencv = True

    def __init__(self, root: bool = False, patch_size: int = 32, batch_size: int = 4096):
        import cv2

        super().__init__("rootsift" if root else "sift", 128, patch_size, batch_size, "cpu")
        self.root = root
        self._sift = cv2.SIFT_create()
        c = (patch_size - 1) / 2.0
        # OpenCV's SIFT window is 4x4 cells of 3 sigma each (sigma = size / 2), i.e. 12 sigma =
        # 6 * size wide; size = P / 6 makes it cover the whole patch (a training patch's 12 sigma).
        self._kp = [cv2.KeyPoint(c, c, patch_size / 6.0, 0)]

    def describe_tensor(self, patches: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.describe_numpy(patches.detach().cpu().numpy()))

    def describe_numpy(self, patches: np.ndarray) -> np.ndarray:
        imgs = np.clip(patches[:, 0] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        out = np.zeros((len(imgs), 128), np.float32)
        for i, im in enumerate(imgs):
            kp, d = self._sift.compute(im, self._kp)
            if d is not None and len(d):
                out[i] = d[0]
        return self.postprocess(out)

    def postprocess(self, d: np.ndarray) -> np.ndarray:
        """(N, 128) raw SIFT -> unit vectors (RootSIFT when ``root``)."""
        d = d.astype(np.float32)
        if self.root:
            d = np.sqrt(d / np.maximum(np.abs(d).sum(1, keepdims=True), 1e-12))
        return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.pt"


def available() -> list[str]:
    """Names that load right now: the OpenCV baselines and recipes whose weights exist."""
    return list(OPENCV_NAMES) + [n for n in sorted(RECIPE_MODULES) if weights_path(n).exists()]


def load(
    name_or_path: str | Path, device: torch.device | str | None = None, batch_size: int = 1024
) -> Extractor:
    """Load a descriptor by registered name or checkpoint path.

    Raises:
        DescriptorError: unknown name, missing weights or an unreadable checkpoint (one line
        saying how to train it or where to put the file).
    """
    s = str(name_or_path)
    if s in OPENCV_NAMES:
        return OpenCVSiftExtractor(root=(s == "rootsift"))
    if s in RECIPE_MODULES:
        path = weights_path(s)
        if not path.exists():
            raise DescriptorError(
                f"no weights for '{s}' at {path}: train them with "
                f"`python -m pipelines.train --recipe {s} --out {path}` or put a checkpoint there"
            )
        name = s
    else:
        path = Path(s)
        if not (path.suffix in CHECKPOINT_SUFFIXES or path.exists()):
            raise DescriptorError(
                f"unknown descriptor '{s}': use one of {', '.join(NAMES)} or a checkpoint path"
            )
        if not path.exists():
            raise DescriptorError(f"checkpoint {path} not found")
        name = path.stem
    try:
        ckpt = safe_torch_load(path)
        if is_descriptor_checkpoint(ckpt):
            model = model_from_checkpoint(ckpt, path)
            meta = ckpt.get("meta", {})
            dim = int(getattr(model, "dim", ckpt.get("arch_kwargs", {}).get("dim", 128)))
        else:
            model = load_published(ckpt, path)
            meta = {"published": model.kind, "source": str(path)}
            dim = model.dim
    except (CheckpointError, KeyError, TypeError) as e:
        raise DescriptorError(str(e)) from None
    ps = int(getattr(model, "patch_size", 32))
    return TorchExtractor(name, model, dim, ps, batch_size=batch_size, device=device, meta=meta)
