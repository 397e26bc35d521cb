"""Registry, L2-Net, HardNet loss/miner, trainer (resume, DDP) on tiny in-memory data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from descriptors import registry
from descriptors.losses import hardest_triplet_margin, pairwise_distance
from descriptors.mining import hardest_in_batch, random_negatives
from descriptors.models import CheckpointError, build_model, load_checkpoint, save_checkpoint
from descriptors.recipe_defs.hardnet import HardNetOptions, triplet_step
from descriptors.recipes import Recipe, get_recipe, list_recipes
from descriptors.train import train

ROOT = Path(__file__).resolve().parent.parent


def toy_data(recipe: Recipe, data_dir: Path, seed: int):
    """Infinite (anchor, positive) batches: 64 random textures + noise."""
    g = torch.Generator().manual_seed(1234)
    base = torch.rand(64, 1, 32, 32, generator=g)
    g2 = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randperm(64, generator=g2)[: recipe.batch_size]
        a = base[idx]
        yield a, (a + 0.05 * torch.randn(a.shape, generator=g2)).clamp(0, 1)


def toy_recipe(steps: int = 6) -> Recipe:
    return Recipe(
        name="hardnet",
        make_data=toy_data,
        step_loss=triplet_step,
        steps=steps,
        batch_size=16,
        lr=0.1,
        options=HardNetOptions(margin=1.0),
    )


def test_l2net_shapes_and_unit_norm():
    m = build_model("l2net").eval()
    y = m(torch.rand(3, 1, 32, 32))
    assert y.shape == (3, 128)
    assert torch.allclose(y.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
        m(torch.rand(3, 1, 64, 64))


def test_pairwise_distance_and_hardest_negatives():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
    d = pairwise_distance(a, p)
    ref = torch.cdist(a, p)
    assert torch.allclose(d, ref, atol=1e-3)
    neg_anchor_only = hardest_in_batch(d, anchor_swap=False)
    # row minima excluding the diagonal
    expect = torch.tensor(
        [min(ref[0, 1], ref[0, 2]), min(ref[1, 0], ref[1, 2]), min(ref[2, 0], ref[2, 1])]
    )
    assert torch.allclose(neg_anchor_only, expect, atol=1e-3)
    neg_swap = hardest_in_batch(d, anchor_swap=True)
    assert torch.all(neg_swap <= neg_anchor_only + 1e-6)
    r = random_negatives(d, generator=torch.Generator().manual_seed(0))
    assert all(any(torch.isclose(r[i], d[i, j]) for j in range(3) if j != i) for i in range(3))


def test_triplet_margin_value_and_gradient_sign():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    p = torch.tensor([[0.8, 0.6], [0.6, 0.8]])
    loss = hardest_triplet_margin(a, p, margin=1.0, anchor_swap=False)
    d = torch.cdist(a.detach(), p)
    expect = ((1 + d[0, 0] - d[0, 1]).clamp_min(0) + (1 + d[1, 1] - d[1, 0]).clamp_min(0)) / 2
    assert abs(loss.item() - expect.item()) < 1e-3
    loss.backward()
    # moving a0 towards p0 (along p0 - a0) must decrease the loss
    assert float((a.grad[0] * (p[0] - a.detach()[0])).sum()) < 0
    # a margin of 0 with well separated pairs gives zero loss
    far = torch.eye(4)
    assert hardest_triplet_margin(far, far, margin=0.0).item() == 0.0


def test_registry_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(registry.DescriptorError, match="unknown descriptor"):
        registry.load("no-such-descriptor")
    with pytest.raises(registry.DescriptorError, match="not found"):
        registry.load(str(tmp_path / "missing.pt"))
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(registry.DescriptorError, match="corrupt.pt"):
        registry.load(str(bad))
    sift = registry.load("sift")
    with pytest.raises(registry.DescriptorError, match=r"\(B, 1, 32, 32\)"):
        sift(np.zeros((2, 1, 31, 31), np.float32))
    with pytest.raises(registry.DescriptorError, match="dtype"):
        sift(torch.zeros((2, 1, 32, 32), dtype=torch.int32))
    # a recipe without weights: the error says how to train them (every recipe, in an empty
    # weights folder)
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "no-weights")
    for name in list_recipes():
        with pytest.raises(registry.DescriptorError, match="pipelines.train"):
            registry.load(name)


def test_sift_and_rootsift_unit_vectors():
    rng = np.random.default_rng(0)
    patches = rng.random((5, 1, 32, 32)).astype(np.float32)
    for name in ("sift", "rootsift"):
        d = registry.load(name)(patches)
        assert d.shape == (5, 128) and d.dtype == np.float32
        assert np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-4)
    assert registry.load("rootsift")(patches).min() >= 0


def test_checkpoint_roundtrip_half(tmp_path):
    m = build_model("l2net").eval()
    path = save_checkpoint(tmp_path / "w.pt", m, "l2net", {"dim": 128}, "hardnet", 7, half=True)
    m2, ck = load_checkpoint(path)
    x = torch.rand(4, 1, 32, 32)
    assert ck["step"] == 7
    assert torch.allclose(m(x), m2(x), atol=2e-2)
    ext = registry.load(str(path))
    assert ext(x.numpy()).shape == (4, 128)
    # batching with a memory cap gives the same result as one batch
    ext_small = registry.load(str(path), batch_size=3)
    assert np.allclose(ext(x.numpy()), ext_small(x.numpy()), atol=1e-5)


def test_train_loss_decreases_and_resume_continues(tmp_path):
    torch.set_num_threads(2)
    out = tmp_path / "w.pt"
    r = toy_recipe(steps=40)
    res = train(r, tmp_path, out, split="", progress=False, ckpt_every=20)
    assert res["steps"] == 40 and out.exists()
    assert res["loss_last_mean"] < res["loss_first"]
    # train 10 steps, "crash", resume to 16: continues at step 10
    out2 = tmp_path / "r.pt"
    train(toy_recipe(steps=10), tmp_path, out2, split="", progress=False, ckpt_every=5)
    ck = torch.load(str(out2) + ".ckpt", weights_only=False)
    assert ck["step"] == 10
    res2 = train(toy_recipe(steps=16), tmp_path, out2, split="", progress=False, resume=True)
    assert res2["start_step"] == 10 and res2["steps"] == 16
    assert torch.load(str(out2) + ".ckpt", weights_only=False)["step"] == 16


def test_init_option_fine_tunes_any_recipe(tmp_path):
    """``init=PATH`` starts any recipe from a checkpoint; another architecture is refused."""
    torch.set_num_threads(2)
    first = train(toy_recipe(steps=5), tmp_path, tmp_path / "a.pt", split="", progress=False)
    r = toy_recipe(steps=1).with_options(init=first["out"], lr=0.0)
    train(r, tmp_path, tmp_path / "b.pt", split="", progress=False)
    a, _ = load_checkpoint(tmp_path / "a.pt")
    b, _ = load_checkpoint(tmp_path / "b.pt")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        if va.is_floating_point() and "running" not in k:
            assert torch.allclose(va, vb, atol=1e-2), k
    bad = save_checkpoint(
        tmp_path / "c.pt", build_model("l2net", dim=64), "l2net", {"dim": 64}, "hardnet", 1
    )
    with pytest.raises(CheckpointError, match="init needs"):
        train(
            toy_recipe(steps=1).with_options(init=str(bad)),
            tmp_path,
            tmp_path / "d.pt",
            split="",
            progress=False,
        )


def test_recipes_are_registered():
    assert set(list_recipes()) >= {"hardnet", "hndesc", "sdb", "wlrn", "fracking"}
    r = get_recipe("hardnet", quick=True)
    assert r.steps < get_recipe("hardnet").steps
    assert r.lr_at(0) == r.lr and r.lr_at(r.steps) == 0.0
    with pytest.raises(KeyError, match="unknown recipe"):
        get_recipe("nope")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_process_gloo(tmp_path):
    """A 2-process gloo DDP run of a few steps: both ranks stay in sync, rank 0 writes weights."""
    script = tmp_path / "ddp_run.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        torch.set_num_threads(1)
        from test_core import toy_recipe
        from descriptors.train import train
        import torch.distributed as dist
        res = train(toy_recipe(steps=4), {str(tmp_path)!r}, {str(tmp_path / "ddp.pt")!r},
                    split='', progress=False, ckpt_every=0)
        print('RANK', dist.get_rank(), 'WORLD', res['world_size'], 'STEPS', res['steps'])
        dist.destroy_process_group()
    """)
    )
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        "--master_addr=127.0.0.1",
        str(script),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WORLD 2 STEPS 4" in proc.stdout
    assert (tmp_path / "ddp.pt").exists()


def test_train_cli_default_out_resume_check_and_photos(tmp_path, monkeypatch, capsys):
    """pipelines.train: no --out writes under outputs/train (never weights/); --resume with a
    checkpoint of another recipe / arch fails in one line naming what differs; a bad --photos
    folder fails in one line."""
    import pipelines.train as PT
    from descriptors.models import atomic_torch_save

    assert PT.default_out("hardnet") == Path("outputs/train/hardnet.pt")
    monkeypatch.chdir(tmp_path)
    ck = tmp_path / "outputs" / "train" / "hardnet.pt.ckpt"
    atomic_torch_save(
        {
            "arch": "cnn3",
            "arch_kwargs": {"input_size": 64},
            "state_dict": {},
            "recipe": "fracking",
            "step": 3,
        },
        ck,
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        PT.main(["--recipe", "hardnet", "--quick", "--resume", "--steps", "1"])
    msg = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and msg.startswith("pipelines.train: ")
    assert str(ck.relative_to(tmp_path)) in msg
    assert "recipe 'fracking'" in msg and "arch 'cnn3'" in msg and "arch_kwargs" in msg
    r = get_recipe("fracking")
    atomic_torch_save(
        {
            "arch": r.arch,
            "arch_kwargs": r.arch_kwargs,
            "state_dict": {},
            "recipe": "fracking",
            "step": 3,
        },
        ck,
    )
    PT.check_resume(ck, r)  # same recipe: accepted
    for bad, why in ((tmp_path / "nope", "not found"), (tmp_path, "no JPG / PNG")):
        with pytest.raises(SystemExit) as e:
            PT.main(["--recipe", "hndesc", "--quick", "--photos", str(bad), "--steps", "1"])
        msg = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2 and why in msg and msg.startswith("pipelines.train: ")
    # a real (tiny) run without --out lands in outputs/train/<recipe>.pt
    monkeypatch.setattr(
        PT,
        "train",
        lambda recipe, data, out, **kw: (
            Path(out).parent.mkdir(parents=True, exist_ok=True),
            {"out": str(out)},
        )[1],
    )
    side = PT.main(["--recipe", "hardnet", "--quick", "--steps", "1"])
    assert side["out"] == str(Path("outputs/train/hardnet.pt"))
    assert (tmp_path / "outputs" / "train" / "hardnet.json").exists()
    assert not (tmp_path / "weights").exists()
