"""Checkpoints hold tensors and plain data only and are read with ``weights_only=True``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from descriptors import registry
from descriptors.models import (
    CheckpointError,
    atomic_torch_save,
    build_model,
    load_checkpoint,
    read_checkpoint,
    safe_torch_load,
    save_checkpoint,
    to_safe,
)
from descriptors.recipe_defs.hardnet import HardNetOptions, triplet_step
from descriptors.recipes import Recipe
from descriptors.train import train

ROOT = Path(__file__).resolve().parent.parent


class _WritesMarker:
    """Unpickling this object would create ``path`` (what a malicious checkpoint does)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(
        {
            "arch": "l2net",
            "arch_kwargs": {},
            "state_dict": {},
            "recipe": "hardnet",
            "step": 0,
            "meta": {"x": _WritesMarker(str(marker))},
        },
        path,
    )
    # sanity: the payload really does fire under a plain unpickler
    with open(tmp_path / "probe.pkl", "wb") as f:
        pickle.dump(_WritesMarker(str(tmp_path / "probe")), f)
    with open(tmp_path / "probe.pkl", "rb") as f:
        pickle.load(f)
    assert (tmp_path / "probe").exists()
    return path, marker


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    path, marker = _evil_checkpoint(tmp_path)
    for load in (safe_torch_load, read_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError) as e:
            load(path)
        msg = str(e.value)
        assert str(path) in msg and "refused" in msg and "\n" not in msg
    with pytest.raises(registry.DescriptorError, match="refused"):
        registry.load(str(path))
    assert not marker.exists()


def test_shipped_weights_load_weights_only():
    """weights/<recipe>.pt are committed for every recipe and load with weights_only=True."""
    from descriptors.recipes import list_recipes

    for name in list_recipes():
        assert registry.weights_path(name).is_file(), f"missing shipped weights for {name}"
    for name in registry.available():
        if name in registry.OPENCV_NAMES:
            continue
        ck = safe_torch_load(registry.weights_path(name))
        assert ck["recipe"] == name
        ext = registry.load(name, device="cpu")
        P = ext.patch_size  # 64 for the native fracking CNN3, 32 otherwise
        d = ext(torch.rand(3, 1, P, P))
        assert d.shape == (3, ext.dim)
        assert np.allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-4)


def test_to_safe_converts_numpy_device_paths_and_refuses_objects(tmp_path):
    obj = {
        "a": np.arange(3, dtype=np.float32),
        "b": np.float64(2.5),
        "c": torch.device("cpu"),
        "d": Path("x/y"),
        "e": [1, (2, None)],
        "f": {"g": torch.ones(2)},
    }
    out = tmp_path / "ok.pt"
    atomic_torch_save(obj, out)
    back = safe_torch_load(out)
    assert torch.equal(back["a"], torch.arange(3, dtype=torch.float32))
    assert back["b"] == 2.5 and isinstance(back["b"], float)
    assert back["c"] == "cpu" and back["d"] == str(Path("x/y"))
    assert back["e"] == [1, (2, None)] and torch.equal(back["f"]["g"], torch.ones(2))
    with pytest.raises(CheckpointError, match=r"bad\.pt.*\['opts'\]\['fn'\]"):
        atomic_torch_save({"opts": {"fn": lambda x: x}}, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(TypeError, match="set"):
        to_safe({1, 2})


def test_state_dict_metadata_survives(tmp_path):
    m = build_model("l2net").eval()
    path = save_checkpoint(
        tmp_path / "w.pt", m, "l2net", {"dim": 128}, "hardnet", 3, meta={"arr": np.ones(2)}
    )
    m2, ck = load_checkpoint(path)
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(m(x), m2(x), atol=1e-6)
    assert torch.equal(ck["meta"]["arr"], torch.ones(2, dtype=torch.float64))


def _toy_data(recipe: Recipe, data_dir: Path, seed: int):
    g = torch.Generator().manual_seed(7)
    base = torch.rand(32, 1, 32, 32, generator=g)
    g2 = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randperm(32, generator=g2)[: recipe.batch_size]
        a = base[idx]
        yield a, (a + 0.05 * torch.randn(a.shape, generator=g2)).clamp(0, 1)


def _setup(model, recipe, data_dir, state):
    """Recipe state of the kinds recipes keep: numpy arrays, numpy scalars, tensors, tuples."""
    state.extra["stats"] = np.array([0.5, 0.25])
    state.extra["scale"] = np.float32(2.0)
    state.extra["ema"] = {k: v.detach().clone() for k, v in model.named_parameters()}
    state.extra["pair"] = (1, "a")


def test_training_checkpoint_round_trips_weights_only(tmp_path):
    torch.set_num_threads(1)
    recipe = Recipe(
        name="hardnet",
        make_data=_toy_data,
        step_loss=triplet_step,
        steps=4,
        batch_size=8,
        lr=0.01,
        optimizer="adam",
        setup=_setup,
        options=HardNetOptions(margin=1.0, anchor_swap=True),
    )
    out = tmp_path / "r.pt"
    train(recipe, tmp_path, out, split="", progress=False, ckpt_every=2, device="cpu")
    ck = read_checkpoint(str(out) + ".ckpt")  # weights_only=True inside
    assert ck["step"] == 4 and len(ck["history"]) == 4
    rs = ck["recipe_state"]
    assert torch.equal(rs["stats"], torch.tensor([0.5, 0.25], dtype=torch.float64))
    assert rs["scale"] == 2.0 and rs["pair"] == (1, "a")
    assert set(rs["ema"]) == {k for k, _ in build_model("l2net").named_parameters()}
    assert ck["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    res = train(
        recipe.with_options(steps=6),
        tmp_path,
        out,
        split="",
        progress=False,
        resume=True,
        device="cpu",
    )
    assert res["start_step"] == 4 and res["steps"] == 6
    assert read_checkpoint(str(out) + ".ckpt")["step"] == 6
    assert os.path.getsize(out) > 0 and load_checkpoint(out)[1]["step"] == 6


def test_average_of_checkpoints_and_its_cli(tmp_path):
    """``average_checkpoints`` / ``pipelines.train --average``: float weights (BatchNorm running
    statistics too) are the mean, integer buffers the first's; another architecture or recipe is
    a one-line error and nothing is written."""
    from descriptors.models import average_checkpoints
    from pipelines import train as train_cli

    torch.manual_seed(0)
    paths = []
    for i in range(2):
        m = build_model("l2net", dim=128)
        for t in m.state_dict().values():
            if t.is_floating_point():
                t.normal_()
        paths.append(save_checkpoint(tmp_path / f"m{i}.pt", m, "l2net", {"dim": 128}, "hardnet", 1))
    sds = [read_checkpoint(p)["state_dict"] for p in paths]
    out = average_checkpoints(paths, tmp_path / "avg.pt")
    avg = read_checkpoint(out)
    for k, v in avg["state_dict"].items():
        if v.is_floating_point():
            assert torch.allclose(v.float(), (sds[0][k].float() + sds[1][k].float()) / 2, atol=1e-3)
        else:
            assert torch.equal(v, sds[0][k]), k
    assert avg["meta"]["average_of"] == [str(p) for p in paths] and avg["recipe"] == "hardnet"
    load_checkpoint(out)  # a usable descriptor
    other = save_checkpoint(tmp_path / "o.pt", build_model("wlrn"), "wlrn", {}, "hardnet", 1)
    with pytest.raises(CheckpointError, match="cannot average") as e:
        average_checkpoints([paths[0], other], tmp_path / "bad.pt")
    assert "\n" not in str(e.value) and not (tmp_path / "bad.pt").exists()
    side = train_cli.main(
        ["--recipe", "hardnet", "--average", *map(str, paths), "--out", str(tmp_path / "c.pt")]
    )
    assert side["average_of"] == [str(p) for p in paths] and (tmp_path / "c.json").is_file()
    with pytest.raises(SystemExit):  # another recipe's checkpoints: one line, exit status 2
        train_cli.main(["--recipe", "sdb", "--average", *map(str, paths), "--out", str(out)])
