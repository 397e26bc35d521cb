"""Typed recipe options (``RecipeOptions`` subclasses), ``--option`` conversion, TrainState and
resuming a training checkpoint's recipe state."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from descriptors.models import load_checkpoint, read_checkpoint
from descriptors.recipe_defs.hardnet import HardNetOptions, triplet_step
from descriptors.recipes import Recipe, RecipeOptions, TrainState, get_recipe, list_recipes
from descriptors.train import train
from descriptors.util import InputError
from pipelines.train import check_options


@pytest.mark.parametrize("name", list_recipes())
def test_options_are_typed_and_round_trip(name):
    for quick in (False, True):
        r = get_recipe(name, quick=quick)
        assert isinstance(r.options, RecipeOptions) and dataclasses.is_dataclass(r.options)
        names = {f.name for f in dataclasses.fields(r.options)}
        assert not names & set(Recipe.__dataclass_fields__)  # no option shadows a Recipe field
        d = r.options.to_dict()  # plain dict with the --option names (pair_* flattened)
        assert "init" in d and "pair" not in d
        assert r.with_options(**d) == r


@pytest.mark.parametrize("name", list_recipes())
def test_unknown_option_is_a_one_line_input_error(name):
    r = get_recipe(name, quick=True)
    with pytest.raises(InputError) as e:
        r.with_options(bogus=1, steps=3)
    msg = str(e.value)
    assert "\n" not in msg and f"recipe {name}" in msg and "bogus" in msg and "steps" in msg
    with pytest.raises(InputError, match="pair_nope"):
        r.with_options(pair_nope=1)  # no PairConf field (or no pair options at all)
    with pytest.raises(InputError, match="not an option of recipe"):
        check_options(r, {"bogus": "1"})
    with pytest.raises(InputError, match="not an option of recipe"):
        check_options(r, {"make_data": "x"})  # a Recipe field, not settable from the CLI


def test_cli_strings_are_converted_to_the_field_types(tmp_path):
    sdb = get_recipe("sdb", quick=True)
    o = check_options(
        sdb,
        {
            "arch": "l2net",
            "jitter": "false",
            "npos": "2",
            "B": "null",
            "threshold": "-1",
            "jitter_scale": "[1, 1.2]",
            "dampening": "0",
            "teacher": "none",
        },
    )
    assert o == {
        "arch": "l2net",
        "jitter": False,
        "npos": 2,
        "B": None,
        "threshold": -1.0,
        "jitter_scale": (1.0, 1.2),
        "dampening": 0.0,
        "teacher": "none",
    }
    assert isinstance(o["threshold"], float) and isinstance(o["npos"], int)
    r = sdb.with_options(**o)
    assert r.arch == "l2net" and r.options.jitter is False and r.options.jitter_scale == (1, 1.2)
    h = get_recipe("hndesc", quick=True)
    o = check_options(
        h,
        {
            "pairs_per_batch": "0",
            "max_per_pair": "8",
            "pair_homography_scale": "[0.7,1.3]",
            "pair_max_rotation_deg": "30",
            "anchor_swap": "True",
        },
    )
    r = h.with_options(**o)
    assert r.options.pair["homography_scale"] == (0.7, 1.3)
    assert r.options.pair["max_rotation_deg"] == 30.0 and r.options.pair["p_night"] == 0.3
    assert r.options.to_dict()["pair_homography_scale"] == (0.7, 1.3)
    w = get_recipe("wlrn", quick=True)
    o = check_options(w, {"schedule": "fixed", "bag_size": "48", "scenes": "x/y"})
    assert o == {"schedule": "fixed", "bag_size": 48, "scenes": "x/y"}
    assert check_options(get_recipe("fracking"), {"r_p": "4"}) == {"r_p": 4}
    for key, bad in (("npos", "abc"), ("npos", "2.5"), ("jitter", "maybe"), ("R", "x")):
        with pytest.raises(InputError, match=f"--option {key}={bad}"):
            check_options(sdb, {key: bad})
    with pytest.raises(InputError, match="checkpoint not found"):
        check_options(sdb, {"init": str(tmp_path / "missing.pt")})


def _toy_data(recipe: Recipe, data_dir: Path, seed: int):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(16, 1, 32, 32, generator=g)
    while True:
        a = base[torch.randperm(16, generator=g)[: recipe.batch_size]]
        yield a, (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(0, 1)


def _setup(model, recipe, data_dir, state: TrainState) -> None:
    assert state.device == torch.device("cpu") and state.options is recipe.options
    state.extra.setdefault("seen", 0)


def _counting_step(model, batch, step, state: TrainState):
    state.extra["seen"] += 1
    state.extra["last_margin"] = state.options.margin
    return triplet_step(model, batch, step, state)


def test_resume_restores_recipe_state(tmp_path):
    torch.set_num_threads(1)
    recipe = Recipe(
        name="hardnet",
        make_data=_toy_data,
        step_loss=_counting_step,
        setup=_setup,
        steps=3,
        batch_size=8,
        lr=0.01,
        options=HardNetOptions(margin=0.5),
    )
    out = tmp_path / "r.pt"
    train(recipe, tmp_path, out, split="", progress=False, ckpt_every=0, device="cpu")
    ck = read_checkpoint(str(out) + ".ckpt")
    assert ck["recipe_state"] == {"seen": 3, "last_margin": 0.5}
    assert load_checkpoint(out)[1]["meta"]["options"]["margin"] == 0.5  # a plain dict
    res = train(
        recipe.with_options(steps=5),
        tmp_path,
        out,
        split="",
        progress=False,
        resume=True,
        device="cpu",
    )
    assert res["start_step"] == 3
    assert read_checkpoint(str(out) + ".ckpt")["recipe_state"]["seen"] == 5  # 3 restored + 2
    # a checkpoint written before TrainState (options inside recipe_state) still resumes
    ck = read_checkpoint(str(out) + ".ckpt")
    ck["recipe_state"]["options"] = {"margin": 9.0}
    torch.save(ck, str(out) + ".ckpt")
    train(
        recipe.with_options(steps=6),
        tmp_path,
        out,
        split="",
        progress=False,
        resume=True,
        device="cpu",
    )
    rs = read_checkpoint(str(out) + ".ckpt")["recipe_state"]
    assert rs == {"seen": 6, "last_margin": 0.5}
