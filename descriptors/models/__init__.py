"""Descriptor networks, registered by architecture name, and checkpoint I/O.

Every model maps (B, 1, P, P) float32 patches in [0, 1] to (B, D) L2-normalised float32 and does
its own input normalisation. Checkpoint file layout (``torch.save`` dict)::

    {"arch": str, "arch_kwargs": dict, "state_dict": dict, "recipe": str, "step": int,
     "meta": dict}            # training checkpoints add "optimizer", "history", "recipe_state"

Checkpoints hold tensors and plain data only (dicts, lists, tuples, str, int, float, bool, None):
:func:`atomic_torch_save` converts numpy arrays / scalars, ``torch.device``, ``torch.dtype`` and
paths on the way in and refuses anything else, and every read goes through
:func:`safe_torch_load` (``torch.load(weights_only=True)``), so a file whose pickle would build
arbitrary objects (and run their ``__reduce__``) is refused before any of it executes.
"""

from __future__ import annotations

import importlib
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from descriptors.util import ToolkitError, atomic_write

ARCHS: dict[str, str] = {
    "l2net": "descriptors.models.l2net:L2Net",
    "wlrn": "descriptors.models.wlrn:WLRN",
    "cnn3": "descriptors.models.cnn3:CNN3",
    "sdgmnet128": "descriptors.models.sdgmnet:SDGMNet128",
}


class CheckpointError(ToolkitError, RuntimeError):
    """A checkpoint file is missing, unreadable, unsafe or not a descriptor checkpoint."""


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Instantiate a registered architecture by name."""
    if arch not in ARCHS:
        raise KeyError(f"unknown architecture '{arch}' (known: {', '.join(sorted(ARCHS))})")
    mod, cls = ARCHS[arch].split(":")
    return getattr(importlib.import_module(mod), cls)(**kwargs)


_PLAIN = (str, int, float, bool, type(None))


def to_safe(obj: Any, where: str = "checkpoint") -> Any:
    """Copy of ``obj`` that ``torch.load(weights_only=True)`` can read back.

    Tensors (moved to CPU, detached), dicts / OrderedDicts (``_metadata`` kept), lists, tuples and
    str / int / float / bool / None pass; numpy arrays become tensors, numpy scalars Python
    numbers, ``torch.device`` / ``torch.dtype`` / paths strings. Anything else raises
    ``TypeError`` naming where it sits (``where`` is the key path, for the message).
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.generic):  # before the plain types: np.float64 subclasses float
        return obj.item()
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"{where}: numpy array of Python objects cannot be stored")
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, (torch.device, torch.dtype, Path)):
        return str(obj)
    if isinstance(obj, dict):
        out: dict = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(
                    f"{where}: dict key {k!r} of type {type(k).__name__} (keys must be str or int)"
                )
            out[k] = to_safe(v, f"{where}[{k!r}]")
        meta = getattr(obj, "_metadata", None)
        if meta is not None:  # module state_dict versions (plain dicts of ints)
            out._metadata = to_safe(meta, f"{where}._metadata")  # type: ignore[attr-defined]
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_safe(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(
        f"{where}: {type(obj).__module__}.{type(obj).__qualname__} cannot be stored "
        f"(checkpoints hold tensors, numbers, strings, lists and dicts only)"
    )


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through ``descriptors.util.atomic_write`` (never a half-written file).

    ``obj`` is first made weights-only loadable with :func:`to_safe`; a value that cannot be
    raises :class:`CheckpointError` naming the file and the key, and nothing is written."""
    path = Path(path)
    try:
        obj = to_safe(obj)
    except TypeError as e:
        raise CheckpointError(f"{path}: refusing to save: {e}") from None
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)
    return path


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU with one-line errors.

    Raises:
        CheckpointError: missing file, a file torch cannot read, or a pickle that would build
        anything but tensors and plain containers (refused before any of it runs; the message
        names the first forbidden global).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        msg = str(e)
        if "Weights only load failed" in msg or "weights_only" in msg:
            m = re.search(r"unsupported (?:GLOBAL|global|operand)[^\n]*", msg, re.IGNORECASE)
            why = m.group(0).split(". ")[0].strip().rstrip(".") if m else type(e).__name__
            raise CheckpointError(
                f"{path}: refused: the file holds objects other than tensors "
                f"and plain data, which could run code on load ({why})"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(e).__name__})"
        ) from None


def is_descriptor_checkpoint(obj: Any) -> bool:
    """True for this project's checkpoint dicts (``arch`` and ``state_dict`` keys)."""
    return isinstance(obj, dict) and "arch" in obj and "state_dict" in obj


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    arch: str,
    arch_kwargs: dict,
    recipe: str,
    step: int,
    meta: dict | None = None,
    half: bool = False,
    **extra: Any,
) -> Path:
    """Write a descriptor checkpoint; ``half`` stores float tensors as float16 (small files)."""
    sd = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
        for k, v in model.state_dict().items()
    }
    ckpt = {
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs),
        "state_dict": sd,
        "recipe": recipe,
        "step": int(step),
        "meta": dict(meta or {}),
        **extra,
    }
    return atomic_torch_save(ckpt, path)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict on CPU (weights only) with a one-line error if it is missing,
    corrupt, unsafe or not a descriptor checkpoint."""
    ckpt = safe_torch_load(path)
    if not is_descriptor_checkpoint(ckpt):
        raise CheckpointError(
            f"{path}: not a descriptor checkpoint (needs 'arch' and 'state_dict')"
        )
    return ckpt


def average_checkpoints(
    paths: list[str | Path],
    out: str | Path,
    meta: dict | None = None,
    recipe: str | None = None,
) -> Path:
    """Write the uniform average of descriptor checkpoints' weights to ``out`` (a "model soup" of
    runs fine-tuned from one init; Wortsman et al. 2022). Float tensors (BatchNorm running
    statistics included) are averaged, integer ones (e.g. ``num_batches_tracked``) taken from the
    first, each stored in the first's dtype. The checkpoints must share arch, arch_kwargs and
    parameter names / shapes (one-line CheckpointError naming the file otherwise); the result
    keeps the first one's recipe and records the inputs in ``meta['average_of']``; with
    ``recipe``, each must be of that recipe."""
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs two or more checkpoints, got {len(paths)}")
    cks = [read_checkpoint(p) for p in paths]
    if recipe is not None:
        for p, ck in zip(paths, cks):
            if ck.get("recipe") != recipe:
                raise CheckpointError(f"{p}: not a {recipe} checkpoint")
    first = cks[0]
    shapes = {k: tuple(v.shape) for k, v in first["state_dict"].items()}
    for p, ck in zip(paths[1:], cks[1:]):
        same = ck["arch"] == first["arch"] and ck.get("arch_kwargs") == first.get("arch_kwargs")
        if not same or {k: tuple(v.shape) for k, v in ck["state_dict"].items()} != shapes:
            raise CheckpointError(
                f"{p}: cannot average with {paths[0]}: {ck['arch']} {ck.get('arch_kwargs')} vs "
                f"{first['arch']} {first.get('arch_kwargs')} (or other parameters)"
            )
    sd = {}
    for k, v in first["state_dict"].items():
        if v.is_floating_point():
            mean = torch.stack([ck["state_dict"][k].float() for ck in cks]).mean(0)
            sd[k] = mean.to(v.dtype)  # stored as the first one stores it (e.g. float16)
        else:
            sd[k] = v
    ckpt = {
        **first,
        "state_dict": sd,
        "meta": {**dict(meta or {}), "average_of": [str(p) for p in paths]},
    }
    return atomic_torch_save(ckpt, out)


def model_from_checkpoint(ckpt: dict, path: str | Path) -> nn.Module:
    """Build the model a checkpoint dict describes, load its weights (float32), eval mode."""
    model = build_model(ckpt["arch"], **ckpt.get("arch_kwargs", {}))
    sd = ckpt["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: 'state_dict' is not a dict of tensors")
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not fit arch '{ckpt['arch']}': {str(e).splitlines()[0]}"
        ) from None
    return model.eval()


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """Build the model stored in a checkpoint, load its weights (float32), eval mode."""
    ckpt = read_checkpoint(path)
    return model_from_checkpoint(ckpt, path), ckpt
