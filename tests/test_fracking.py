"""Fracking recipe: hinge embedding loss, hard pos/neg miner, CNN3, and a short CPU training run."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from descriptors.losses import hinge_embedding
from descriptors.mining import fracking_mine
from descriptors.models import build_model, load_checkpoint
from descriptors.models.cnn3 import CNN3, L2Pool2d, SubtractiveNorm2d
from descriptors.recipes import TrainState


# ----------------------------------------------------------------------------- loss
def test_hinge_embedding_values_and_margin():
    d = torch.tensor([0.0, 0.3, 1.5, 0.2, 0.9, 1.2])
    pos = torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool)
    l = hinge_embedding(d, pos, margin=1.0)
    # l_P = d ; l_N = max(0, m - d)
    assert torch.allclose(l, torch.tensor([0.0, 0.3, 1.5, 0.8, 0.1, 0.0]))
    assert torch.isclose(hinge_embedding(d, pos, 1.0, reduction="mean"), l.mean())
    # a larger margin only raises the negatives' losses
    l2 = hinge_embedding(d, pos, margin=1.5)
    assert torch.allclose(l2[:3], l[:3]) and (l2[3:] > l[3:]).all()
    with pytest.raises(ValueError):
        hinge_embedding(d, pos, reduction="max")


def test_hinge_embedding_gradient_signs():
    d = torch.tensor([0.5, 0.5, 1.5], requires_grad=True)
    pos = torch.tensor([True, False, False])
    hinge_embedding(d, pos, margin=1.0).sum().backward()
    # positives pulled together (dL/dd = +1), close negatives pushed apart (-1),
    # negatives past the margin get no gradient
    assert d.grad.tolist() == [1.0, -1.0, 0.0]


# ----------------------------------------------------------------------------- miner
@pytest.mark.parametrize("r_p,r_n", [(1, 1), (1, 2), (2, 2), (4, 4), (8, 8)])
def test_fracking_miner_keeps_exactly_the_hardest(r_p, r_n):
    g = torch.Generator().manual_seed(r_p * 10 + r_n)
    lp = torch.rand(64, generator=g)
    ln = torch.rand(128, generator=g)
    ip, ineg = fracking_mine(lp, ln, r_p, r_n)
    assert len(ip) == 64 // r_p and len(ineg) == 128 // r_n
    assert len(set(ip.tolist())) == len(ip) and len(set(ineg.tolist())) == len(ineg)
    # every kept loss >= every dropped loss
    for losses, idx in ((lp, ip), (ln, ineg)):
        kept = torch.zeros(len(losses), dtype=torch.bool)
        kept[idx] = True
        if (~kept).any():
            assert losses[kept].min() >= losses[~kept].max()
        assert torch.equal(idx, torch.argsort(losses, descending=True)[: len(idx)])


def test_fracking_miner_hand_made():
    ip, ineg = fracking_mine(
        torch.tensor([0.1, 0.9, 0.5, 0.7]), torch.tensor([0.0, 0.2, 0.4, 0.3]), 2, 4
    )
    assert ip.tolist() == [1, 3] and ineg.tolist() == [2]
    with pytest.raises(ValueError):
        fracking_mine(torch.rand(4), torch.rand(4), 0, 1)
    with pytest.raises(ValueError):
        fracking_mine(torch.rand(4), torch.rand(4), 1, 8)


# ----------------------------------------------------------------------------- model
def test_cnn3_shapes_params_and_buffers(tmp_path):
    torch.manual_seed(0)
    m = CNN3(input_size=64)
    assert m.n_effective_params() == 45_824  # no L2-pooling parameters
    # Torch7 SpatialLPPooling: one weight + bias per plane -> the paper's 46,272 parameters
    fixed = CNN3(input_size=64, lp_weights="fixed")
    assert fixed.n_effective_params() == 46_272 and fixed.patch_size == 64
    assert not any(q.requires_grad for q in fixed.pool1.parameters())  # Torch7: not trained
    fixed.load_state_dict(m.state_dict(), strict=False)
    xx = torch.rand(3, 1, 64, 64)
    assert torch.allclose(fixed(xx), m(xx), atol=1e-6)  # w = 1, b = 0: the same function
    learned = CNN3(input_size=64, lp_weights="learned")
    assert all(q.requires_grad for q in learned.pool3.parameters())
    learned(xx).sum().backward()
    assert float(learned.pool3.weight.grad.abs().sum()) > 0
    raw = CNN3(input_size=64, normalize=False)
    raw.load_state_dict(m.state_dict())
    yr = raw(xx)
    assert not torch.allclose(yr.norm(dim=1), torch.ones(3))
    assert torch.allclose(torch.nn.functional.normalize(yr, dim=1), m(xx), atol=1e-5)
    # sparse connectivity: 8 inputs per output map, inputs used evenly
    mask = m.conv2.conn_mask[:, :, 0, 0]
    assert (mask.sum(1) == 8).all() and (mask.sum(0) == 16).all()
    y = m(torch.rand(3, 1, 64, 64))
    assert y.shape == (3, 128) and torch.allclose(y.norm(dim=1), torch.ones(3), atol=1e-5)
    assert (y >= 0).all()  # last sub-layer is an L2 pooling
    m32 = build_model("cnn3", input_size=32)
    assert m32.patch_size == 32 and m32(torch.rand(2, 1, 32, 32)).shape == (2, 128)
    with pytest.raises(ValueError):
        m32(torch.rand(2, 1, 64, 64))
    # mean / std are buffers and travel in checkpoints
    m32.set_input_stats(0.41, 0.19)
    from descriptors.models import save_checkpoint

    p = save_checkpoint(tmp_path / "c.pt", m32, "cnn3", {"input_size": 32}, "fracking", 0)
    m2, _ = load_checkpoint(p)
    assert abs(float(m2.mean) - 0.41) < 1e-6 and abs(float(m2.std) - 0.19) < 1e-6
    x = torch.rand(4, 1, 32, 32)
    assert torch.allclose(m2(x), m32.eval()(x), atol=1e-5)


def test_cnn3_patch_input_norm_is_intensity_invariant(tmp_path):
    """input_norm='patch' standardises each patch: a darker, low-contrast copy (night) gives the
    same descriptor; the paper's dataset mean / std does not. Weights of a 'dataset' checkpoint
    initialise a 'patch' recipe (same parameters), with the recipe's arguments kept."""
    torch.manual_seed(0)
    paper, patch = CNN3(input_size=64), CNN3(input_size=64, input_norm="patch")
    patch.load_state_dict(paper.state_dict())
    x = torch.rand(4, 1, 64, 64)
    dark = 0.1 * x + 0.02
    assert torch.allclose(patch(dark), patch(x), atol=1e-4)
    assert (paper(dark) - paper(x)).abs().max() > 0.05
    with pytest.raises(ValueError, match="input_norm"):
        CNN3(input_norm="bogus")
    from descriptors.models import save_checkpoint
    from descriptors.recipes import get_recipe
    from descriptors.train import init_from_checkpoint

    ck = save_checkpoint(tmp_path / "d.pt", paper, "cnn3", {"input_size": 64}, "fracking", 0)
    r = get_recipe("fracking").with_options(
        arch_kwargs={"input_size": 64, "input_norm": "patch"}, init=str(ck)
    )
    fresh = build_model("cnn3", **r.arch_kwargs)
    init_from_checkpoint(fresh, r)
    assert fresh.input_norm == "patch" and torch.allclose(fresh(x), patch(x), atol=1e-5)


def test_cnn3_sublayers():
    x = torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]]])
    assert torch.allclose(L2Pool2d(2)(x), torch.tensor([[[[5.0]]]]), atol=1e-4)
    lp = L2Pool2d(2, 1, "learned")
    with torch.no_grad():
        lp.weight.fill_(4.0)
        lp.bias.fill_(21.0)
    assert torch.allclose(lp(x), torch.tensor([[[[11.0]]]]), atol=1e-4)  # sqrt(4*25 + 21)
    with pytest.raises(ValueError, match="lp_weights"):
        L2Pool2d(2, 1, "bogus")
    n = SubtractiveNorm2d(5)
    c = torch.full((1, 3, 9, 9), 2.0)  # constant maps -> zero everywhere,
    assert n(c).abs().max() < 1e-5  # borders included (coef correction)
    r = torch.randn(2, 4, 12, 12)
    assert n(r).shape == r.shape


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tiny_phototour(tmp_path_factory) -> Path:
    from descriptors.data.phototour_synth import write_synthetic_phototour

    root = tmp_path_factory.mktemp("pt_frack")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny kornia calls: one thread is much cheaper
    try:
        write_synthetic_phototour(
            root,
            "train",
            150,
            views_per_point=(2, 3),
            n_pairs=200,
            seed=3,
            conf={"n_views": 3, "min_photo_side": 256},
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    return root


def test_fracking_recipe_trains_and_loss_goes_down(tiny_phototour, tmp_path):
    """Through ``descriptors.train.train``: the fracking loss of a pool goes down as the trainer
    steps on it, and the training set's mean / std end up in the checkpoint."""
    from descriptors.data.phototour import read_phototour
    from descriptors.recipe_defs.fracking import FrackingSampler, fracking_step, input_stats
    from descriptors.recipes import get_recipe
    from descriptors.train import make_optimizer, train

    recipe = get_recipe("fracking", quick=True)
    assert recipe.options.r_p == 1 and recipe.options.r_n == 2
    full = get_recipe("fracking")
    assert (full.batch_size, full.lr, full.momentum, full.lr_step) == (128, 0.01, 0.9, 10_000)
    assert abs(full.lr_at(10_000) - 1e-3) < 1e-12 and full.options.r_p == 8
    assert full.arch_kwargs["input_size"] == 64 and full.arch_kwargs["lp_weights"] == "fixed"
    opt = make_optimizer(full, build_model(full.arch, **full.arch_kwargs).parameters())
    assert opt.param_groups[0]["dampening"] == 0.9  # Torch7 optim.sgd: = momentum

    data = read_phototour(tiny_phototour / "train")
    recipe = recipe.with_options(steps=8, batch_size=4, r_p=2, r_n=2)
    sampler = FrackingSampler(data, 8, 8, np.random.default_rng(0))  # B_P = B_N = 8
    pool = next(sampler)
    assert all(t.shape[1:] == (1, 64, 64) for t in pool)  # Brown patches as is
    ia = torch.from_numpy(np.asarray(data.patches[:3], np.float32) / 255.0)
    assert torch.equal(sampler._u8[:3, 0].float() / 255.0, ia)
    recipe = replace(recipe, make_data=lambda r, d, s: itertools.repeat(pool))
    state = TrainState(recipe.options)
    torch.manual_seed(0)  # = the trainer's initialisation (seed 0)
    untrained = build_model(recipe.arch, **recipe.arch_kwargs)
    untrained.set_input_stats(*input_stats(data))
    with torch.no_grad():
        before = float(fracking_step(untrained, pool, 0, state)[0])
    out = tmp_path / "fracking.pt"
    res = train(
        recipe, tiny_phototour, out, split="train", progress=False, ckpt_every=0, half=False
    )
    model, ck = load_checkpoint(out)
    with torch.no_grad():
        after = float(fracking_step(model, pool, 0, state)[0])
    print(f"fracking pool loss {before:.4f} -> {after:.4f} ({res['seconds']} s)")
    assert ck["arch"] == "cnn3" and ck["step"] == 8 and ck["arch_kwargs"]["input_size"] == 64
    from descriptors.registry import load

    ext = load(str(out))
    assert ext.patch_size == 64 and ext(np.random.rand(2, 1, 64, 64).astype(np.float32)).shape == (
        2,
        128,
    )
    mean, std = input_stats(data)
    assert abs(float(model.mean) - mean) < 1e-5 and abs(float(model.std) - std) < 1e-5
    assert abs(res["loss_first"] - before) < 1e-4  # same init, same pool
    assert after < before - 0.02


def test_fracking_raw_output_uses_its_own_margin(tiny_phototour):
    """``normalize=False``: the paper's raw CNN3 output, hinge loss with ``margin_raw``."""
    from descriptors.data.phototour import read_phototour
    from descriptors.recipe_defs.fracking import FrackingSampler, fracking_step, recipe

    r = recipe(quick=True, normalize=False)
    assert r.arch_kwargs["normalize"] is False
    pool = next(
        FrackingSampler(read_phototour(tiny_phototour / "train"), 8, 8, np.random.default_rng(0))
    )
    torch.manual_seed(0)
    m = build_model(r.arch, **r.arch_kwargs)
    with torch.no_grad():
        d = m(torch.cat([pool[2], pool[3]])).chunk(2)
        neg = (d[0] - d[1]).norm(dim=1)
        big = float(neg.max()) + 1.0  # every negative inside the margin

        def loss(**kw: float) -> float:
            return float(fracking_step(m, pool, 0, TrainState(replace(r.options, **kw)))[0])

        lo, hi = loss(margin_raw=1e-3), loss(margin_raw=big)
        unit = loss(margin=big, margin_raw=1e-3)
    assert hi > lo and abs(unit - lo) < 1e-6  # raw output ignores ``margin``


def test_fracking_on_a_folder_of_brown_scenes_lowers_heldout_fpr95(tmp_path):
    """Native 64 x 64 fracking on a ``--data`` root of two Brown-layout scene folders (as
    ``pipelines.make_patches`` writes them; ``read_phototour_scenes``), ``split=''``: held-out
    FPR95 on a Brown folder of TEST photos drops below the same network untrained."""
    import os

    from descriptors import registry
    from descriptors.data.phototour import read_phototour
    from descriptors.data.phototour_synth import write_synthetic_phototour
    from descriptors.models import save_checkpoint
    from descriptors.phototour_eval import evaluate_pairs
    from descriptors.recipe_defs.fracking import _load, input_stats
    from descriptors.recipes import get_recipe
    from descriptors.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        conf = {"n_views": 3, "min_photo_side": 256}
        for k, seed in enumerate((11, 12)):
            d = write_synthetic_phototour(
                tmp_path / f"s{k}",
                "train",
                90,
                views_per_point=(2, 3),
                n_pairs=100,
                seed=seed,
                conf=conf,
                progress=False,
            )
            os.renames(d, tmp_path / "scenes" / f"scene{k}")
        test = read_phototour(
            write_synthetic_phototour(
                tmp_path / "pt",
                "test",
                100,
                views_per_point=(2, 3),
                n_pairs=300,
                seed=5,
                conf=conf,
                progress=False,
            )
        )
        # the shipped per-patch input normalisation, no mining, lr 0.3: held-out FPR95 drops by
        # 0.15-0.23 over seeds 0-3 (25 steps of 2 / 2 mining at lr 1 left it within 0.05 of the
        # untrained net's 0.90-0.95, lower for seed 0 only)
        recipe = get_recipe("fracking", quick=True).with_options(
            steps=30, batch_size=12, r_p=1, r_n=1, lr=0.3
        )
        recipe = recipe.with_options(arch_kwargs={**recipe.arch_kwargs, "input_norm": "patch"})
        data = _load(tmp_path / "scenes", recipe)
        assert len(np.unique(data.point_ids)) > 150  # both scenes, ids offset
        torch.manual_seed(0)  # = the trainer's init
        m = build_model(recipe.arch, **recipe.arch_kwargs)
        m.set_input_stats(*input_stats(data))
        untrained = save_checkpoint(
            tmp_path / "u.pt", m, recipe.arch, recipe.arch_kwargs, "fracking", 0
        )
        before = evaluate_pairs(registry.load(str(untrained)), test, progress=False)["fpr95"]
        out = tmp_path / "fracking.pt"
        res = train(recipe, tmp_path / "scenes", out, split="", progress=False, ckpt_every=0)
        after = evaluate_pairs(registry.load(str(out)), test, progress=False)["fpr95"]
    finally:
        torch.set_num_threads(threads)
    print(
        f"fracking on Brown scenes: held-out FPR95 untrained {before:.3f} -> {after:.3f} "
        f"({res['seconds']} s)"
    )
    assert registry.load(str(out)).patch_size == 64
    assert after < before - 0.1
