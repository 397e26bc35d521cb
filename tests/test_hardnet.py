"""HardNet on synthetic PhotoTour: training helps, and the shipped weights beat SIFT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from descriptors import registry
from descriptors.data.phototour import read_phototour
from descriptors.data.phototour_synth import write_synthetic_phototour
from descriptors.models import build_model, save_checkpoint
from descriptors.phototour_eval import evaluate_pairs
from descriptors.recipes import get_recipe
from descriptors.train import train


@pytest.fixture(scope="module")
def tiny_phototour(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pt")
    write_synthetic_phototour(root, "train", 600, n_pairs=1000, seed=1)
    write_synthetic_phototour(root, "test", 400, n_pairs=1000, seed=2)
    return root


def test_short_hardnet_run_lowers_heldout_fpr95(tiny_phototour, tmp_path):
    torch.manual_seed(0)
    test = read_phototour(tiny_phototour / "test")
    untrained = tmp_path / "untrained.pt"
    save_checkpoint(untrained, build_model("l2net").eval(), "l2net", {"dim": 128}, "hardnet", 0)
    before = evaluate_pairs(registry.load(str(untrained)), test)["fpr95"]
    recipe = get_recipe("hardnet", quick=True).with_options(steps=60, batch_size=32, lr=1.0)
    out = tmp_path / "hardnet.pt"
    res = train(recipe, tiny_phototour, out, split="train", progress=False, ckpt_every=0)
    after = evaluate_pairs(registry.load(str(out)), test)["fpr95"]
    print(f"FPR95 untrained {before:.3f} -> trained {after:.3f} ({res['seconds']} s)")
    assert after < before - 0.02


def test_shipped_hardnet_beats_sift_on_synthetic_test_split(tiny_phototour):
    test = read_phototour(tiny_phototour / "test")
    sift = evaluate_pairs(registry.load("sift"), test)["fpr95"]
    ours = evaluate_pairs(registry.load("hardnet"), test)["fpr95"]
    print(f"FPR95 sift {sift:.3f} hardnet {ours:.3f}")
    assert ours < sift


def test_two_pass_option_runs_anchors_and_positives_separately():
    """``two_pass``: the reference's two forward passes; BatchNorm in training mode then sees
    each half alone (another loss), in eval mode the two forms agree."""
    from descriptors.recipe_defs.hardnet import HardNetOptions, triplet_step
    from descriptors.recipes import TrainState

    torch.manual_seed(0)
    m = build_model("l2net", dim=128)
    a, p = torch.rand(16, 1, 32, 32), torch.rand(16, 1, 32, 32) * 0.5
    one = lambda: float(triplet_step(m, (a, p), 0, TrainState(HardNetOptions()))[0])
    two = lambda: float(triplet_step(m, (a, p), 0, TrainState(HardNetOptions(two_pass=True)))[0])
    with torch.no_grad():
        m.train()
        assert abs(one() - two()) > 1e-4
        m.eval()
        assert abs(one() - two()) < 1e-5
