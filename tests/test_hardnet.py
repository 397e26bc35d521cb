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


def test_pairs_option_trains_on_photo_pairs(tmp_path):
    """``data='pairs'``: (a, p) batches of B keypoints from two homographies of the photos of a
    folder (hndesc's pair stream); the checkpoint names the photos; a bad value is one line."""
    import cv2

    from descriptors.data import synth
    from descriptors.models import read_checkpoint

    torch.set_num_threads(1)
    photos = tmp_path / "photos"
    photos.mkdir()
    for n in synth.photo_names("train")[:2]:
        cv2.imwrite(str(photos / f"{n}.jpg"), cv2.cvtColor(synth.load_photo(n), cv2.COLOR_RGB2BGR))
    r = get_recipe("hardnet", quick=True).with_options(
        data="pairs",
        photos=str(photos),
        batch_size=32,
        lr=1.0,
        pool_size=4,
        initial_pairs=4,
        new_per_batch=0,
        refresh_per_batch=0.0,
        pair_out_size=160,
        pair_max_keypoints=60,
    )
    a, p = next(r.make_data(r, tmp_path, 0))[:2]
    assert a.shape == p.shape == (32, 1, 32, 32)
    train(r, tmp_path, tmp_path / "h.pt", split="", steps=2, progress=False, ckpt_every=0)
    data = read_checkpoint(tmp_path / "h.pt")["meta"]["data"]
    assert str(photos) in data and data != str(tmp_path), data
    bad = r.with_options(data="patches")
    with pytest.raises(ValueError, match="data must be 'phototour' or 'pairs'") as e:
        bad.make_data(bad, tmp_path, 0)
    assert "\n" not in str(e.value)
