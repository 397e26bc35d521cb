"""SDGMNet128 (FRN + TLU body): shapes, unit norm, checkpoint round trip, sdb's default network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from descriptors import registry
from descriptors.models import build_model, load_checkpoint, save_checkpoint
from descriptors.models.sdgmnet import FRN, TLU, SDGMNet128
from descriptors.recipes import get_recipe


def test_shape_unit_norm_and_bad_input():
    torch.manual_seed(0)
    m = build_model("sdgmnet128")
    assert isinstance(m, SDGMNet128)
    x = torch.rand(5, 1, 32, 32)
    for mode in (True, False):
        d = m.train(mode)(x)
        assert d.shape == (5, 128) and d.dtype == torch.float32
        assert torch.allclose(d.norm(dim=1), torch.ones(5), atol=1e-5)
    assert build_model("sdgmnet128", dim=64).eval()(x).shape == (5, 64)
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
        m(torch.rand(2, 1, 64, 64))
    # FRN + TLU: per-sample, per-channel normalisation (no batch statistics), threshold at tau
    f, t = FRN(3), TLU(3)
    y = f(torch.randn(4, 3, 8, 8) * 7.0)
    assert torch.allclose(y.square().mean((2, 3)), torch.ones(4, 3), atol=1e-3)
    with torch.no_grad():
        assert float(t(torch.full((1, 3, 2, 2), -5.0)).min()) == -1.0


def test_checkpoint_round_trip_through_registry(tmp_path: Path):
    torch.manual_seed(1)
    m = build_model("sdgmnet128").eval()
    path = save_checkpoint(tmp_path / "sdgm.pt", m, "sdgmnet128", {"dim": 128}, "sdb", 7)
    back, ck = load_checkpoint(path)
    assert ck["arch"] == "sdgmnet128" and isinstance(back, SDGMNet128)
    x = torch.rand(6, 1, 32, 32)
    with torch.no_grad():
        ref = m(x).numpy()
    ext = registry.load(str(path), device="cpu")  # what --features path.pt uses
    assert ext.dim == 128
    assert abs(ext(x) - ref).max() < 1e-5


def test_sdb_uses_sdgmnet128_and_keeps_l2net_as_an_option():
    assert get_recipe("sdb").arch == "sdgmnet128"
    assert get_recipe("sdb", quick=True).arch == "sdgmnet128"
    r = get_recipe("sdb", quick=True).with_options(arch="l2net")  # --option arch=l2net
    assert r.arch == "l2net" and not hasattr(r.options, "arch")
