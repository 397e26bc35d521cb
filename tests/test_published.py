"""Published checkpoints (TFeat, HardTFeat, HardNet, HardNetPS, kornia's HardNet8 / SOSNet / HyNet)
load through ``registry.load(path)`` with the authors' preprocessing.

The files are built here with random weights in each publisher's on-disk layout; the outputs
are checked against functional re-implementations of the published forward passes."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import kornia.feature as KF
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from descriptors import registry
from descriptors.models import save_checkpoint
from descriptors.models.l2net import L2Net

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _randomise(sd: dict[str, torch.Tensor], seed: int = 0) -> OrderedDict:
    """The module's own random init plus random BN statistics (eval BN is not the identity)."""
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for k, v in sd.items():
        if k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            out[k] = 0.1 * torch.randn(v.shape, generator=g)
        else:
            out[k] = v.clone()
    return out


def _patches(n: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 32, 32, generator=g)


def _check_extractor(ext: registry.Extractor, name: str, kind: str, dim: int = 128) -> np.ndarray:
    assert (ext.name, ext.dim, ext.patch_size, ext.meta["published"]) == (name, dim, 32, kind)
    d = ext(_patches())
    assert d.shape == (6, dim) and d.dtype == np.float32
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    assert np.abs(d[0] - d[1]).max() > 1e-3  # not a constant output
    return d


def _tfeat_reference(sd: dict, x255: torch.Tensor) -> torch.Tensor:
    """vbalnt/tfeat TNet forward (InstanceNorm, conv7 tanh pool conv6 tanh, linear tanh)."""
    y = F.instance_norm(x255, eps=1e-5)
    y = F.max_pool2d(torch.tanh(F.conv2d(y, sd["features.1.weight"], sd["features.1.bias"])), 2, 2)
    y = torch.tanh(F.conv2d(y, sd["features.4.weight"], sd["features.4.bias"]))
    return torch.tanh(F.linear(y.flatten(1), sd["descr.0.weight"], sd["descr.0.bias"]))


def test_tfeat_params_file_gets_0_255_patches_and_unit_output(tmp_path):
    sd = _randomise(KF.TFeat(pretrained=False).state_dict())
    path = tmp_path / "tfeat-liberty.params"
    torch.save(sd, path)  # the authors' file: a bare state dict
    ext = registry.load(str(path), device="cpu")
    seen: list[float] = []
    ext.model.net.features[0].register_forward_pre_hook(lambda m, a: seen.append(float(a[0].max())))
    x = _patches()
    d = _check_extractor(ext, "tfeat-liberty", "tfeat")
    assert seen and abs(seen[-1] - 255.0 * float(x.max())) < 1e-3
    ref = F.normalize(_tfeat_reference(sd, x * 255.0), dim=1)
    assert np.allclose(d, ref.numpy(), atol=1e-5)
    # on a low-contrast patch the 0..255 scale is what the authors' InstanceNorm eps sees
    flat = 0.5 + 0.002 * _patches(2, seed=3)
    low = ext(flat)
    assert np.allclose(
        low, F.normalize(_tfeat_reference(sd, flat * 255.0), dim=1).numpy(), atol=1e-5
    )
    assert not np.allclose(low, F.normalize(_tfeat_reference(sd, flat), dim=1).numpy(), atol=1e-3)


def _hardtfeat_state_dict() -> OrderedDict:
    g = torch.Generator().manual_seed(5)
    sd = OrderedDict()
    for k, shape in [
        ("features.0.weight", (32, 1, 7, 7)),
        ("features.0.bias", (32,)),
        ("features.3.weight", (64, 32, 6, 6)),
        ("features.3.bias", (64,)),
        ("classifier.1.weight", (128, 64, 8, 8)),
        ("classifier.1.bias", (128,)),
        ("SIFT.gx.0.weight", (1, 1, 1, 3)),
        ("SIFT.gy.0.weight", (1, 1, 3, 1)),
        ("SIFT.pk.0.weight", (1, 1, 11, 11)),
    ]:
        sd[k] = 0.1 * torch.randn(shape, generator=g)
    return sd


def test_hardtfeat_pth_standardises_patches_and_drops_sift_keys(tmp_path):
    sd = _hardtfeat_state_dict()
    path = tmp_path / "HardTFeat.pth"
    torch.save({"epoch": 2, "state_dict": sd}, path)  # ducha-aiki/affnet's layout
    ext = registry.load(str(path), device="cpu")
    d = _check_extractor(ext, "HardTFeat", "hardtfeat")
    x = _patches()
    flat = x.flatten(1)
    xs = (x - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + 1e-7)
    y = F.max_pool2d(torch.tanh(F.conv2d(xs, sd["features.0.weight"], sd["features.0.bias"])), 2)
    y = torch.tanh(F.conv2d(y, sd["features.3.weight"], sd["features.3.bias"]))
    y = torch.tanh(F.conv2d(y, sd["classifier.1.weight"], sd["classifier.1.bias"]))
    assert np.allclose(d, F.normalize(y.flatten(1), dim=1).numpy(), atol=1e-5)
    # per-patch standardisation: a gain and offset of the patch change nothing
    assert np.allclose(ext(0.5 * x + 0.2), d, atol=1e-4)


def _hardnet_ps_reference() -> nn.Sequential:
    """The HardNetPS definition from DagnyT/hardnet's 3rd_party README."""
    layers: list[nn.Module] = []
    for cin, cout, s in (
        (1, 32, 1),
        (32, 32, 1),
        (32, 64, 2),
        (64, 64, 1),
        (64, 128, 2),
        (128, 128, 1),
    ):
        layers += [
            nn.Conv2d(cin, cout, 3, stride=s, padding=1, bias=True),
            nn.BatchNorm2d(cout, affine=True),
            nn.ReLU(),
        ]
    return nn.Sequential(*layers, nn.Conv2d(128, 128, kernel_size=8, bias=True))


def _standardise(x: torch.Tensor) -> torch.Tensor:
    return L2Net.normalize_input(x)


@pytest.mark.parametrize("kind", ["hardnet", "hardnet_ps", "hardnet8", "sosnet", "hynet"])
def test_hardnet_family_and_kornia_layouts(tmp_path, monkeypatch, kind):
    """Each layout is detected and gives the publisher's network output (unit rows)."""
    # HardNet8's orthogonal init of its 512x16384 conv takes seconds and is overwritten anyway
    monkeypatch.setattr(
        nn.init,
        "orthogonal_",
        lambda w, gain=1.0: nn.init.normal_(w, 0, gain / w[0].numel() ** 0.5),
    )
    if kind == "hardnet_ps":
        ref_net = _hardnet_ps_reference()
        ref_net.load_state_dict(_randomise(ref_net.state_dict()))
        ref = lambda x: F.normalize(ref_net.eval()(_standardise(x)).flatten(1), dim=1)  # noqa: E731
        obj: dict = {
            "state_dict": OrderedDict((f"features.{k}", v) for k, v in ref_net.state_dict().items())
        }
    else:
        cls = {
            "hardnet": KF.HardNet,
            "hardnet8": KF.HardNet8,
            "sosnet": KF.SOSNet,
            "hynet": KF.HyNet,
        }[kind]
        ref_net = cls(pretrained=False)
        ref_net.load_state_dict(_randomise(ref_net.state_dict()))
        ref_net.eval()
        ref = lambda x: F.normalize(ref_net(x), dim=1)  # noqa: E731
        sd = ref_net.state_dict()
        # HardNet repo checkpoints wrap the weights (and an optimizer state); kornia's are bare
        obj = (
            {"epoch": 9, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}
            if kind == "hardnet"
            else sd
        )
    path = tmp_path / f"{kind}.pth"
    torch.save(obj, path)
    ext = registry.load(str(path), device="cpu")
    d = _check_extractor(ext, kind, kind)
    with torch.no_grad():
        assert np.allclose(d, ref(_patches()).numpy(), atol=1e-4)


def test_dataparallel_prefix_and_old_bn_counters(tmp_path):
    net = KF.HardNet(pretrained=False)
    sd = _randomise(net.state_dict())
    net.load_state_dict(sd)
    old = OrderedDict(
        (f"module.{k}", v) for k, v in sd.items() if not k.endswith("num_batches_tracked")
    )
    path = tmp_path / "HardNet++.pth"
    torch.save({"state_dict": old}, path)
    d = _check_extractor(registry.load(str(path), device="cpu"), "HardNet++", "hardnet")
    with torch.no_grad():
        assert np.allclose(d, net.eval()(_patches()).numpy(), atol=1e-4)


def test_unknown_and_misfit_layouts_give_one_line_errors(tmp_path):
    path = tmp_path / "mystery.pth"
    torch.save(
        {
            "state_dict": {
                "encoder.conv.weight": torch.zeros(3, 1, 3, 3),
                "head.weight": torch.zeros(8, 3),
            }
        },
        path,
    )
    with pytest.raises(registry.DescriptorError) as e:
        registry.load(str(path))
    msg = str(e.value)
    assert str(path) in msg and "encoder.conv.weight" in msg and "head.weight" in msg
    assert "unknown" in msg and "\n" not in msg
    path2 = tmp_path / "notensors.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path2)
    with pytest.raises(registry.DescriptorError, match=r"notensors\.pt.*epoch"):
        registry.load(str(path2))
    sd = KF.TFeat(pretrained=False).state_dict()
    sd["descr.0.weight"] = torch.zeros(128, 100)  # TFeat keys, wrong linear width
    path3 = tmp_path / "bad-tfeat.params"
    torch.save(sd, path3)
    with pytest.raises(registry.DescriptorError, match=r"bad-tfeat\.params.*tfeat.*not fit"):
        registry.load(str(path3))


def test_project_checkpoints_are_not_taken_for_published(tmp_path):
    path = save_checkpoint(tmp_path / "own.pt", L2Net().eval(), "l2net", {"dim": 128}, "hardnet", 5)
    ext = registry.load(str(path), device="cpu")
    assert "published" not in ext.meta and ext.dim == 128


def _wormhole_patches(n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    import cv2

    from descriptors.patches import detect_dog, extract_patches

    seq = SHARED / "hpatches_v_wormhole"
    im1 = cv2.imread(str(seq / "1.png"), cv2.IMREAD_GRAYSCALE)
    im2 = cv2.imread(str(seq / "2.png"), cv2.IMREAD_GRAYSCALE)
    H = np.loadtxt(seq / "H_1_2")
    _, xy, size, _, _ = detect_dog(im1, max_keypoints=3 * n)

    def warp(p: np.ndarray) -> np.ndarray:
        q = np.c_[p, np.ones(len(p))] @ H.T
        return q[:, :2] / q[:, 2:]

    xy2 = warp(xy)
    e = 0.5  # local scale of H: sqrt |det J| by finite differences
    jx, jy = (warp(xy + [e, 0]) - xy2) / e, (warp(xy + [0, e]) - xy2) / e
    s = np.sqrt(np.abs(jx[:, 0] * jy[:, 1] - jx[:, 1] * jy[:, 0]))
    r1, r2 = 6 * size, 6 * size * s
    (h1, w1), (h2, w2) = im1.shape, im2.shape
    ok = (
        (xy[:, 0] > r1)
        & (xy[:, 1] > r1)
        & (xy[:, 0] < w1 - r1)
        & (xy[:, 1] < h1 - r1)
        & (xy2[:, 0] > r2)
        & (xy2[:, 1] > r2)
        & (xy2[:, 0] < w2 - r2)
        & (xy2[:, 1] < h2 - r2)
    )
    idx = np.flatnonzero(ok)[:n]
    return (
        extract_patches(im1, xy[idx], size[idx]),
        extract_patches(im2, xy2[idx], (size * s)[idx].astype(np.float32)),
    )


@pytest.mark.skipif(not (SHARED / "published").is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("fname", ["tfeat-liberty.params", "HardTFeat.pth"])
def test_real_published_files_match_wormhole_patches(fname):
    """On real HPatches patches, matching patches are nearer than random ones."""
    ext = registry.load(str(SHARED / "published" / fname), device="cpu")
    p1, p2 = _wormhole_patches()
    d1, d2 = ext(p1), ext(p2)
    dist = np.sqrt(np.maximum(2 - 2 * d1 @ d2.T, 0))
    shuffled = dist[np.arange(len(d1)), np.random.default_rng(0).permutation(len(d1))]
    assert np.median(dist.diagonal()) < 0.7 * np.median(shuffled)
    assert (dist.argmin(1) == np.arange(len(d1))).mean() > 0.3
