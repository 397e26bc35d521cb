"""Export a registered learned descriptor to TorchScript or ONNX, checked against the eager model.

    python -m descriptors.export hardnet --format torchscript --out exports/hardnet.ts.pt
    python -m descriptors.export weights/my.pt --format onnx --out exports/my.onnx

The graph is the network (``descriptors.registry.TorchExtractor``): input ``patches``
(B, 1, P, P) float32 in [0, 1] (P = 32), output ``descriptors`` (B, D) float32 unit vectors,
free batch size. The file is loaded back and run at two other batch sizes; the export fails
(leaving no file) unless the largest absolute difference to the eager model is <= ``atol``
(default 1e-5). ONNX needs ``onnx``, ``onnxscript`` and ``onnxruntime`` (not dependencies).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from descriptors import registry
from descriptors.util import ToolkitError, atomic_write, setup_logging

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")


class ExportError(ToolkitError, RuntimeError):
    """The descriptor cannot be exported, or the export disagrees with the eager model."""


def load_model(name: str | Path) -> tuple[torch.nn.Module, int, int]:
    """(eval-mode CPU model, descriptor dim D, patch size P) of a registered learned descriptor
    or a checkpoint path. Raises :class:`ExportError` for the OpenCV baselines."""
    if str(name) in registry.OPENCV_NAMES:
        raise ExportError(
            f"'{name}' is an OpenCV descriptor, not a network: nothing to export "
            f"(learned: {', '.join(n for n in registry.available() if n not in registry.OPENCV_NAMES)})"
        )
    try:
        ex = registry.load(name, device="cpu")
    except registry.DescriptorError as e:
        raise ExportError(str(e)) from None
    if not isinstance(ex, registry.TorchExtractor):
        raise ExportError(f"'{name}' is not a network descriptor ({type(ex).__name__})")
    return ex.model.eval(), int(ex.dim), int(ex.patch_size)


def _patches(batch: int, patch_size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 1, patch_size, patch_size), generator=g)


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, out: Path) -> None:
    """Trace ``model`` on ``example`` (B, 1, P, P) and save it to ``out``."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about the python-side input checks
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(out))  # deprecated in torch 2.13 in favour of torch.export


def export_onnx(model: torch.nn.Module, example: torch.Tensor, out: Path, opset: int = 17) -> None:
    """``torch.onnx.export`` with a dynamic batch axis (needs the ``onnx`` package)."""
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(
            f"ONNX export needs the {' and '.join(missing)} package(s), not "
            "installed (pip install onnx onnxscript onnxruntime), or use "
            "--format torchscript"
        )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(out),
            input_names=["patches"],
            output_names=["descriptors"],
            opset_version=opset,
            dynamic_axes={"patches": {0: "batch"}, "descriptors": {0: "batch"}},
        )


def run_exported(path: Path, fmt: str, patches: torch.Tensor) -> np.ndarray:
    """Run an exported file on (B, 1, P, P) patches -> (B, D) float32 numpy."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            m = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return m(patches).float().numpy()
    if importlib.util.find_spec("onnxruntime") is None:
        raise ExportError(
            f"wrote {path} but cannot check it: the 'onnxruntime' package is not "
            "installed (pip install onnxruntime)"
        )
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"patches": patches.numpy()})[0], np.float32)


def export(
    name: str | Path, fmt: str, out: str | Path, trace_batch: int = 8, atol: float = 1e-5
) -> tuple[Path, float]:
    """Export descriptor ``name`` to ``out`` in ``fmt`` and check it against the eager model.

    Returns:
        (path written, max absolute difference over the check batches).
    Raises:
        ExportError (one line) for an unknown / OpenCV descriptor, a missing package, or
        outputs that differ by more than ``atol``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}': choose from {', '.join(FORMATS)}")
    if not (np.isfinite(atol) and atol >= 0):
        raise ExportError(f"atol must be a finite number >= 0, got {atol}")
    model, dim, ps = load_model(name)
    out = Path(out)
    example = _patches(trace_batch, ps, seed=0)
    with atomic_write(out) as tmp:  # renamed onto out only after the check passes
        if fmt == "torchscript":
            export_torchscript(model, example, tmp)
        else:
            export_onnx(model, example, tmp)
        worst = 0.0
        for i, batch in enumerate((trace_batch + 5, 1)):
            x = _patches(batch, ps, seed=1 + i)
            with torch.no_grad():
                ref = model(x).float().numpy()
            got = run_exported(tmp, fmt, x)
            if got.shape != (batch, dim):
                raise ExportError(
                    f"{out}: exported model returns {got.shape} for {batch} "
                    f"patches, expected {(batch, dim)}"
                )
            worst = max(worst, float(np.abs(got - ref).max()))
        if worst > atol:
            raise ExportError(
                f"{out}: exported {fmt} model differs from the eager model by "
                f"{worst:.2e} > {atol:.0e}; nothing written"
            )
    logger.info(
        "exported %s (dim %d) to %s (%s), max |diff| to eager %.2e", name, dim, out, fmt, worst
    )
    return out, worst


def cli(argv: Iterable[str] | None = None) -> Path:
    """Command line; every error exits 2 with one line ``descriptors.export: <message>``."""
    # the toolkit's one CLI machinery (only the command line uses it; the library code of
    # ``descriptors`` does not import ``localize``)
    from localize.cli import ArgumentParser, cli_errors, nonneg_float, output_file

    p = ArgumentParser(prog="descriptors.export", description=__doc__.split("\n")[0])
    p.add_argument("name", help="registered descriptor name or checkpoint path")
    p.add_argument(
        "--format", choices=FORMATS, required=True, help="torchscript (.pt) or onnx (.onnx)"
    )
    p.add_argument("--out", type=output_file, required=True, help="exported model file")
    p.add_argument(
        "--atol",
        type=nonneg_float,
        default=1e-5,
        help="largest accepted |exported - eager| on random patches (finite, >= 0)",
    )
    args = p.parse_args(None if argv is None else list(argv))
    setup_logging()
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    with cli_errors("descriptors.export"):
        out, _ = export(args.name, args.format, args.out, atol=args.atol)
    return out


if __name__ == "__main__":
    cli()
