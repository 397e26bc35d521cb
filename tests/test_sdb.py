"""Difficulty-balancing (sdb) loss on hand-made distances, its recipe, and a short training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from descriptors.losses import (
    sdb_anneal_loss,
    sdb_confidence_weight,
    sdb_exp_loss,
    sdb_exp_teacher_loss,
    sdb_hardest_pairs,
)
from descriptors.recipe_defs import sdb as S
from descriptors.recipes import TrainState, get_recipe

THR, UP = -0.55, 0.10


def test_confidence_weight_shapes_and_margins():
    c = torch.tensor([-2.0, THR, -0.3, UP, 0.5, 3.0])
    q = sdb_confidence_weight(c, THR, UP, "quadratic")
    # 0 at/below threshold, 1 at/above upper, 1 - ((c-u)/(t-u))^2 in between
    assert q[0] == 0 and q[1] == 0 and q[3] == 1 and q[4] == 1 and q[5] == 1
    assert abs(q[2].item() - (1 - ((-0.3 - UP) / (THR - UP)) ** 2)) < 1e-6
    lin = sdb_confidence_weight(c, THR, UP, "linear")
    assert abs(lin[2].item() - (-0.3 - THR) / (UP - THR)) < 1e-6
    assert torch.equal(
        sdb_confidence_weight(c, THR, UP, "step"), torch.tensor([0.0, 0, 1, 1, 1, 1])
    )
    bump = sdb_confidence_weight(c, THR, UP, "bump", easy_width=0.5)
    assert bump[3] == 1 and bump[4] < 1 and bump[5] < 1e-3  # trivially easy damped too
    assert torch.equal(sdb_confidence_weight(c, THR, UP, "none"), torch.ones(6))
    # monotone between the margins, equal threshold/upper -> 1 (as the code)
    grid = torch.linspace(THR, UP, 50)
    assert torch.all(torch.diff(sdb_confidence_weight(grid, THR, UP)) >= 0)
    assert torch.equal(sdb_confidence_weight(c, 0.0, 0.0), torch.ones(6))
    with pytest.raises(ValueError, match="weight function"):
        sdb_confidence_weight(c, THR, UP, "nope")


def test_exp_loss_value_gradient_sign_and_stB():
    pos = torch.tensor([0.3, 0.5], requires_grad=True)
    neg = torch.tensor([0.9, 2.0], requires_grad=True)
    B, R = 2.8, 1.5
    loss, b_used = sdb_exp_loss(pos, neg, 1.0, R=R, B=B)
    nb = torch.tensor([0.9, 1.4])  # second negative clamped at B/2
    expect = (R * torch.tensor([0.09, 0.25]) + nb**2 - B * nb).mean()
    assert b_used == B and abs(loss.item() - expect.item()) < 1e-6
    loss.backward()
    assert torch.all(pos.grad > 0)  # positives are pulled together
    assert neg.grad[0] < 0  # a close negative is pushed away
    assert neg.grad[1] == 0  # beyond B/2: no gradient (margin reached)
    assert abs(pos.grad[0].item() - 2 * R * 0.3 / 2) < 1e-6
    assert abs(neg.grad[0].item() - (2 * 0.9 - B) / 2) < 1e-6
    # --use_stB: B = 2 (median neg + A median pos) from the detached batch
    p3, n3 = torch.tensor([0.2, 0.4, 0.6]), torch.tensor([0.8, 1.0, 1.2])
    _, b_dyn = sdb_exp_loss(p3, n3, 1.0, B=None, A=1.05)
    assert abs(b_dyn - 2 * (1.0 + 1.05 * 0.4)) < 1e-6


def test_weighting_damps_trivial_and_extreme_samples():
    """Effective gradient (teacher weight x loss gradient) is largest for moderate samples."""
    # trivial: close positive, far negative; moderate: margin ~0.1; extreme: the negative is far
    # closer than the positive (c = -1.0 < threshold): likely label noise
    pos = torch.tensor([0.10, 0.60, 1.20], requires_grad=True)
    neg = torch.tensor([1.80, 0.70, 0.20], requires_grad=True)
    for fn in ("quadratic", "bump", "linear"):
        w = sdb_confidence_weight(neg.detach() - pos.detach(), THR, UP, fn)
        for B in (None, 2.8):
            pos.grad = neg.grad = None
            per, _ = sdb_exp_loss(pos, neg, w, R=1.0, B=B, reduction="none")
            per.sum().backward()
            g = pos.grad.abs() + neg.grad.abs()
            trivial, moderate, extreme = g.tolist()
            assert moderate > 3 * trivial, (fn, B, g)
            assert extreme == 0.0, (fn, B, g)
    # without a teacher the extreme sample would dominate: the weight is what removes it
    pos.grad = neg.grad = None
    per, _ = sdb_exp_loss(pos, neg, 1.0, B=2.8, reduction="none")
    per.sum().backward()
    g = pos.grad.abs() + neg.grad.abs()
    assert g[2] > g[1] > g[0]


def _handmade() -> tuple[torch.Tensor, torch.Tensor]:
    """3 points x 2 views, view-major order [a0 a1 a2 p0 p1 p2]; symmetric distances."""
    d = torch.full((6, 6), 1.9)

    def put(i, j, v):
        d[i, j] = d[j, i] = v

    put(0, 3, 0.2)  # point 0: easy positive
    put(1, 4, 0.5)  # point 1
    put(2, 5, 0.9)  # point 2: hard positive
    put(0, 1, 1.0)  # hardest negative of points 0 and 1 (rows 0 / 1)
    put(5, 1, 0.7)  # hardest negative of point 2 (row 5) and of point 1 (row 1)
    put(3, 4, 0.004)  # a near-duplicate (<= 0.008): never a negative
    d.fill_diagonal_(1e-3)
    return d, torch.tensor([0, 1, 2, 0, 1, 2])


def test_hardest_pairs_on_handmade_matrix():
    d, lab = _handmade()
    pi, pj, ni, nj, valid = sdb_hardest_pairs(d, lab)
    assert valid.all()
    assert d[pi, pj].tolist() == pytest.approx([0.2, 0.5, 0.9])
    assert d[ni, nj].tolist() == pytest.approx([1.0, 0.7, 0.7])
    assert all(lab[ni] != lab[nj]) and all(lab[pi] == lab[pj]) and all(pi != pj)


def test_exp_teacher_loss_value_on_matrix_and_teacher():
    d, lab = _handmade()
    d.requires_grad_(True)
    pos, neg = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([1.0, 0.7, 0.7])
    B = 2 * (0.7 + 1.05 * 0.5)
    w = sdb_confidence_weight(neg - pos, THR, UP)
    nb = neg.clamp(max=B / 2)
    expect = (w * (pos**2 + nb**2 - B * nb)).mean()
    loss, logs = sdb_exp_teacher_loss(d, lab, None, threshold=THR, upper=UP)
    assert abs(loss.item() - expect.item()) < 1e-5 and abs(logs["B"] - B) < 1e-5
    loss.backward()
    assert d.grad[2, 5] + d.grad[5, 2] > 0  # positive pair pulled
    assert d.grad[0, 1] + d.grad[1, 0] < 0  # negative pair pushed
    # a teacher that sees point 2's negative as far closer than its positive zeroes its weight
    t = d.detach().clone()
    t[5, 1] = t[1, 5] = 0.05
    t[2, 5] = t[5, 2] = 1.5
    _, logs_t = sdb_exp_teacher_loss(d.detach(), lab, t, threshold=THR, upper=UP)
    assert logs_t["w_zero"] == pytest.approx(1 / 3)


def test_anneal_loss_masks_below_threshold():
    d = torch.tensor(
        [[1e-3, 0.4, 0.3, 1.0], [0.4, 1e-3, 1.0, 0.2], [0.3, 1.0, 1e-3, 1.5], [1.0, 0.2, 1.5, 1e-3]]
    )
    lab = torch.tensor([0, 1, 0, 1])
    # point 0: pos 0.3, neg 0.4 (margin 0.1); point 1: pos 0.2, neg 0.4 (margin 0.2)
    loss, logs = sdb_anneal_loss(d, lab, threshold=0.15, kind="triplet", margin=1.0)
    assert logs["kept"] == 0.5
    assert loss.item() == pytest.approx((1.0 + 0.2 - 0.4) / 2)
    loss_exp, _ = sdb_anneal_loss(d, lab, threshold=-1.0, kind="exp", B=4.25)
    expect = ((0.3**2 + 0.4**2 - 4.25 * 0.4) + (0.2**2 + 0.4**2 - 4.25 * 0.4)) / 2
    assert loss_exp.item() == pytest.approx(expect, abs=1e-6)


def test_lr_schedule_and_stages():
    r = get_recipe("sdb", quick=True).with_options(
        steps=1000, lr=0.01, stage2_frac=0.2, stage2_cycles=4, stage2_lr=1e-4, stage2_lr_factor=0.5
    )
    s1, per = S.stage_bounds(1000, r.options)
    assert (s1, per) == (800, 50)
    assert r.lr_at(0) == pytest.approx(0.01 / 25)
    assert r.lr_at(200) == pytest.approx(0.01)  # peak after 25% warm-up
    assert r.lr_at(799) < 1e-4
    assert r.lr_at(800) == pytest.approx(1e-4)  # cycle 0, flat part
    assert r.lr_at(850) == pytest.approx(5e-5)  # cycle 1
    assert r.lr_at(849) < r.lr_at(820)  # cosine tail of cycle 0
    assert [S.anneal_cycle(s, 1000, r.options) for s in (799, 800, 851, 999)] == [-1, 0, 1, 3]


def _pair_batch(b: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(b, 1, 32, 32, generator=g)
    return a, (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(0, 1)


def test_step_teachers_and_stage2_subset():
    from descriptors.models import build_model

    torch.manual_seed(0)
    m = build_model("l2net")
    batch = _pair_batch(8)
    for teacher in ("self", "ema", "detached", "none"):
        state = TrainState(S.SDBOptions(teacher=teacher), extra={"total_steps": 100})
        loss, logs = S.sdb_step(m, batch, 0, state)
        assert torch.isfinite(loss) and logs["stage"] == 1.0
        if teacher == "ema":
            assert set(state.extra["ema"]) == {k for k, _ in m.named_parameters()}
            before = {k: v.clone() for k, v in state.extra["ema"].items()}
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.1)
            S.sdb_step(m, batch, 1, state)
            k0 = next(iter(before))
            assert not torch.equal(before[k0], state.extra["ema"][k0])
        if teacher == "none":
            assert logs["w_mean"] == 1.0
        assert m.training  # teacher pass restores mode
    state = TrainState(
        S.SDBOptions(stage2_frac=0.5, stage2_cycles=2, stage2_batch_end=4),
        extra={"total_steps": 100, "batch_size": 8},
    )
    loss, logs = S.sdb_step(m, batch, 99, state)  # cycle 1: keep 4 points
    assert logs["stage"] == 2.0 and torch.isfinite(loss) and state.extra["cycle_now"] == 1
    x, lab = S._subset_points(*S._views(batch)[:2], 4)
    assert x.shape[0] == 8 and set(lab.tolist()) == {0, 1, 2, 3}


def test_point_tuple_sampler_npos3():
    from descriptors.data.phototour import PhotoTourData

    rng = np.random.default_rng(0)
    n_pts, per = 10, 4
    base = rng.integers(0, 255, (n_pts, 1, 64, 64), dtype=np.uint8)
    patches = np.repeat(base, per, 0)[:, 0]
    patches[::per, 0, 0] = 7  # views of a point differ slightly (distinct patches)
    ids = np.repeat(np.arange(n_pts), per)
    data = PhotoTourData(
        patches=patches, point_ids=ids, matches=np.zeros((0, 3), np.int64), root=Path("mem")
    )
    s = S.PointTupleSampler(data, batch_size=6, rng=rng, npos=3, fliprot=False)
    x, lab = next(s)
    assert x.shape == (18, 1, 32, 32) and x.dtype == torch.float32
    assert lab.tolist() == list(range(6)) * 3
    # the three views of a point are (nearly) the same image, different points differ
    v = x.flatten(1)
    for i in range(6):
        assert torch.allclose(v[i, 40:], v[6 + i, 40:], atol=2 / 255)
        assert torch.allclose(v[i, 40:], v[12 + i, 40:], atol=2 / 255)
    assert not torch.allclose(v[0], v[1], atol=0.1)


def test_sdb_trains_and_loss_goes_down(tmp_path: Path):
    """Through descriptors.train.train (stage 1, then 2 annealing cycles). The stage-1 loss of a
    fixed batch (fixed B so values are comparable) drops; per-step values are too noisy at this
    size (hardest negatives get harder as the embedding improves, weights change)."""
    from descriptors.models import build_model
    from descriptors.train import train

    torch.set_num_threads(min(2, torch.get_num_threads()))
    r = get_recipe("sdb", quick=True).with_options(
        batch_size=16,
        data="pairs",
        pool_size=2,
        B=3.7,
        stage2_frac=0.2,
        stage2_cycles=2,
        pair_out_size=160,
        pair_max_keypoints=80,
        arch="l2net",
    )  # the loss, on the cheap body
    res = train(
        r, tmp_path / "data", tmp_path / "sdb.pt", steps=20, seed=0, ckpt_every=0, progress=False
    )
    ck = torch.load(tmp_path / "sdb.pt.ckpt", weights_only=False)
    hist = ck["history"]
    assert res["steps"] == 20 and len(hist) == 20 and np.all(np.isfinite(hist))
    assert S.stage_bounds(20, r.options)[0] == 16
    batch = next(r.make_data(r, tmp_path, 0))  # the run's first batch (same seed)

    def fixed_loss(model: torch.nn.Module) -> float:
        torch.manual_seed(0)  # same dropout mask
        with torch.no_grad():
            return S.sdb_step(model, batch, 0, TrainState(r.options))[0].item()

    torch.manual_seed(0)  # train() seeds the init the same way
    init = build_model(r.arch)
    trained = build_model(r.arch)
    trained.load_state_dict(ck["state_dict"])
    before, after = fixed_loss(init), fixed_loss(trained)
    assert after < before - 0.1, (before, after, hist)
    from descriptors.registry import load

    ext = load(str(tmp_path / "sdb.pt"))
    assert ext(torch.rand(3, 1, 32, 32)).shape == (3, 128)


def test_stage2_batches_adamw_and_optimizer_reset_per_cycle():
    """Stage-2 batch 2944 -> 1024 over the cycles (quick: the same ratios), AdamW wd 0.1, and
    the optimizer state is cleared exactly once at the start of each annealing cycle."""
    from descriptors.train import make_optimizer

    full = get_recipe("sdb")
    assert (full.optimizer, full.weight_decay, full.batch_size) == ("adamw", 0.1, 2560)
    b = S.stage2_batches(full.batch_size, full.options)
    assert len(b) == 15 and b[0] == 2944 and b[-1] == 1024 and b == sorted(b, reverse=True)
    q = get_recipe("sdb", quick=True)
    bq = S.stage2_batches(q.batch_size, q.options)
    assert bq[0] == round(q.batch_size * 2944 / 2560) and bq[-1] == round(q.batch_size * 0.4)
    assert isinstance(make_optimizer(full, [torch.nn.Parameter(torch.ones(2))]), torch.optim.AdamW)
    # the reset hook
    lin, other = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    state: dict = {}
    S.install_cycle_reset(lin, state)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-3, weight_decay=0.1)
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-3)

    def step(cycle: int) -> tuple[int, int]:
        state["cycle_now"] = cycle
        for o, m in ((opt, lin), (opt2, other)):
            o.zero_grad()
            m(torch.ones(4, 3)).sum().backward()
            o.step()
        return (int(opt.state[lin.weight]["step"]), int(opt2.state[other.weight]["step"]))

    try:
        assert [step(c) for c in (-1, -1, 0, 0, 0, 1)] == [
            (1, 1),
            (2, 2),
            (1, 3),
            (2, 4),
            (3, 5),
            (1, 6),
        ]  # other optimizer untouched
        assert state["opt_reset_cycle"] == 1
    finally:
        while S._RESET_HOOKS:
            S._RESET_HOOKS.pop().remove()


def test_affine_jitter_identity_and_per_patch():
    x = torch.rand(6, 1, 32, 32)
    same = S.affine_jitter(x, np.random.default_rng(0), rot_deg=0.0, scale=(1.0, 1.0), shear=0.0)
    assert torch.allclose(same, x, atol=1e-5)
    y = S.affine_jitter(x.repeat(2, 1, 1, 1), np.random.default_rng(0))
    assert y.shape == (12, 1, 32, 32) and y.dtype == torch.float32
    assert not torch.allclose(y[:6], y[6:], atol=1e-3)  # each patch its own warp
    assert 0.0 < float((y[:6] - x).abs().mean()) < 0.3  # mild: +-5 deg, zoom <= 1.14


def test_stage2_uses_two_views_per_point():
    """npos 3 in stage 1; the annealing stage keeps views 0 and 1 of each point."""
    x = torch.rand(12, 1, 32, 32)
    lab = torch.arange(4).repeat(3)
    x2, lab2 = S._first_views(x, lab, 4, 2)
    assert torch.equal(x2, x[:8]) and lab2.tolist() == [0, 1, 2, 3] * 2
    seen: list[int] = []

    class Spy(torch.nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            seen.append(inp.shape[0])
            return torch.nn.functional.normalize(inp.flatten(1)[:, :8] + 0.01, dim=1)

    opts = S.SDBOptions(stage2_frac=0.5, stage2_cycles=1, stage2_batch=4, teacher="none")
    S.sdb_step(Spy(), (x, lab), 0, TrainState(opts, extra={"total_steps": 10, "batch_size": 4}))
    S.sdb_step(Spy(), (x, lab), 9, TrainState(opts, extra={"total_steps": 10, "batch_size": 4}))
    assert seen == [12, 8]


@pytest.fixture(scope="module")
def brown_fixture(tmp_path_factory) -> Path:
    """Brown-layout train / test folders (the real patch sets' format) from disjoint photos."""
    from descriptors.data import synth
    from descriptors.data.phototour_synth import write_synthetic_phototour

    root = tmp_path_factory.mktemp("brown")
    write_synthetic_phototour(
        root,
        "train",
        150,
        n_pairs=400,
        seed=1,
        progress=False,
        photos=synth.photo_names("train")[:2],
    )
    write_synthetic_phototour(
        root, "test", 150, n_pairs=400, seed=2, progress=False, photos=synth.photo_names("test")[:2]
    )
    return root


def test_sdb_short_run_on_brown_fixture_lowers_heldout_fpr95(brown_fixture: Path, tmp_path: Path):
    """SDGMNet128 + sdb (jitter on, both stages) on a Brown folder: held-out FPR95 drops."""
    from descriptors import registry
    from descriptors.data.phototour import read_phototour
    from descriptors.models import build_model, save_checkpoint
    from descriptors.phototour_eval import evaluate_pairs
    from descriptors.train import train

    torch.set_num_threads(1)
    test = read_phototour(brown_fixture / "test", progress=False)
    r = get_recipe("sdb", quick=True).with_options(
        batch_size=24, npos=2, stage2_frac=0.2, stage2_cycles=2
    )
    assert r.arch == "sdgmnet128" and r.options.jitter
    torch.manual_seed(0)
    untrained = save_checkpoint(
        tmp_path / "untrained.pt", build_model(r.arch).eval(), r.arch, r.arch_kwargs, "sdb", 0
    )
    before = evaluate_pairs(registry.load(str(untrained)), test, progress=False)["fpr95"]
    train(
        r, brown_fixture, tmp_path / "sdb.pt", split="train", steps=25, progress=False, ckpt_every=0
    )
    after = evaluate_pairs(registry.load(str(tmp_path / "sdb.pt")), test, progress=False)["fpr95"]
    assert after < before - 0.03, (before, after)
