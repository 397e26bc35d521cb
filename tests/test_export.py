"""descriptors.export: TorchScript / ONNX exports of every learned descriptor match the eager model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from descriptors import export, registry
from descriptors.data import synth
from descriptors.patches import extract_patches

LEARNED = [n for n in registry.available() if n not in registry.OPENCV_NAMES]


def _real_patches(n: int = 20, patch_size: int = 32) -> torch.Tensor:
    img = synth.load_photo("camera", gray=True)[:256, :256]
    rng = np.random.default_rng(0)
    xy = rng.uniform(40, 216, (n, 2)).astype(np.float32)
    size, ori = rng.uniform(3, 8, n), rng.uniform(-np.pi, np.pi, n)
    return extract_patches(img, xy, size, ori, patch_size=patch_size)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", LEARNED)
def test_torchscript_export_matches_registry_extractor(name, tmp_path):
    out, worst = export.export(name, "torchscript", tmp_path / f"{name}.pt")
    assert out.is_file() and worst <= 1e-5
    ex = registry.load(name, device="cpu")
    x = _real_patches(patch_size=ex.patch_size)  # 64 for the native fracking CNN3
    with torch.no_grad():
        got = torch.jit.load(str(out))(x).numpy()
    assert got.shape == (len(x), ex.dim)
    np.testing.assert_allclose(got, ex(x), atol=1e-5)


def test_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        export.cli(["sift", "--format", "torchscript", "--out", str(tmp_path / "s.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "'sift' is an OpenCV descriptor" in err[0]
    with pytest.raises(export.ExportError, match="nosuchnet"):
        export.export("nosuchnet", "torchscript", tmp_path / "x.pt")
    with pytest.raises(export.ExportError, match="unknown export format"):
        export.export(LEARNED[0], "tflite", tmp_path / "x.tflite")


def test_disagreement_is_caught(tmp_path, monkeypatch):
    real = export.run_exported
    monkeypatch.setattr(export, "run_exported", lambda p, f, x: real(p, f, x) + 1e-3)
    with pytest.raises(export.ExportError, match="differs from the eager model"):
        export.export(LEARNED[0], "torchscript", tmp_path / "x.pt")


@pytest.mark.skipif(
    all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript")),
    reason="onnx installed: the export itself is tested below",
)
def test_onnx_missing_package_message(tmp_path):
    with pytest.raises(export.ExportError, match="needs the onnx"):
        export.export(LEARNED[0], "onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_onnx_export_matches_eager(tmp_path):
    for m in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(m)
    out, worst = export.export(LEARNED[0], "onnx", tmp_path / "x.onnx")
    assert out.is_file() and worst <= 1e-5
