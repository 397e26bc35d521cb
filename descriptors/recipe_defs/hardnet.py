"""HardNet recipe (Mishchuk et al., "Working hard to know your neighbor's margins", 2017).

Published defaults (paper sec. 4 / HardNet repo ``HardNet.py``): L2-Net body, 32x32 input,
batch 1024 matching pairs, hardest-in-batch triplet margin loss with margin 1 and anchor swap,
SGD lr 10 (repo default; the paper says 0.1 for its lr scaling) linearly decayed to 0, momentum
0.9, weight decay 1e-4, dropout 0.3, trained ~10 epochs of 5M pairs on one Brown scene.

Data (``options.data``): ``'phototour'`` (default) = Brown PhotoTour layout (real or the synthetic
writer's), ``<data>/<split>``; each batch is B distinct 3D points with two patches each
(``PatchPairSampler``). ``'pairs'`` = the self-supervised pairs hndesc trains on
(``descriptors.data.pairs``: two homographies of one photo, keypoints mapped between them; the
option ``photos`` / ``--photos`` names the photo folder, ``pair_<field>`` sets a ``PairConf``
field, e.g. ``pair_homography_strength``), B keypoints spread over the pair pool (not HNDesc's K
whole crops): a way to fine-tune real-patch weights on stronger perspective change than real
tracks hold. Not the paper's data.

SGD is the reference's: momentum 0.9 with dampening 0.9 (``Recipe.dampening`` None), so lr 10 here
is the repo's lr 10. Forward passes differ from the reference: by default anchors and positives
go through the network in ONE forward pass (``torch.cat([a, p])``), so BatchNorm normalises them
with joint batch statistics; the reference (``HardNet.py``: ``out_a = model(data_a)``,
``out_p = model(data_p)``) runs two passes, each half with its own statistics. The option
``two_pass=True`` runs the reference's two passes (the shipped weights were trained with one).

``quick``: batch 256 pairs (hardest-in-batch mining needs a large batch: at 64 the negatives are
easy), 1500 steps, lr 10 (linear decay) — a CPU run of ~40 min on 2 idle cores. The data folder
may be one Brown folder or a folder of scene folders (``read_phototour_scenes``).
Options (:class:`HardNetOptions`): ``data`` (above; with ``'pairs'`` also the pair-stream fields of
``hndesc.PatchPairOptions``), ``negatives='hardest'|'random'`` (the random-negative
control), ``margin``, ``anchor_swap``, ``fliprot`` (random flips / 90-degree rotations applied to
both patches of a pair, the HardNet repo's ``--fliprot``; off by default), ``two_pass`` (above),
``p_night`` (share of positives put through the synthetic night model; 0 by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from descriptors.losses import hardest_triplet_margin
from descriptors.recipe_defs.hndesc import PatchPairOptions, pair_data, pair_data_source
from descriptors.recipes import Recipe, TrainState


@dataclass
class HardNetOptions(PatchPairOptions):
    """HardNet's options (defaults: the published ones; the pair fields act with data='pairs')."""

    margin: float = 1.0
    anchor_swap: bool = True
    negatives: str = "hardest"  # 'hardest' | 'random' (control)
    two_pass: bool = False  # anchors and positives in two forward passes (the reference)
    fliprot: bool = False  # random flip / rot90 of both patches of a pair
    p_night: float = 0.0  # share of positives put through the night model (PatchPairSampler)


def phototour_pairs(recipe: Recipe, data_dir: Path, seed: int) -> Iterator[Any]:
    """Infinite iterator of (anchor, positive) (B,1,32,32) float32 batches from a PhotoTour folder."""
    from descriptors.data.phototour import PatchPairSampler, read_phototour_scenes
    from descriptors.data.phototour_synth import ensure_synthetic_phototour

    data_dir = Path(data_dir)
    if not data_dir.exists() and data_dir.parent == Path(recipe.default_data):
        ensure_synthetic_phototour(data_dir.parent)
    data = read_phototour_scenes(data_dir)
    return iter(
        PatchPairSampler(
            data,
            recipe.batch_size,
            np.random.default_rng(seed),
            augment=bool(recipe.options.fliprot),
            p_night=float(recipe.options.p_night),
        )
    )


def hardnet_data(recipe: Recipe, data_dir: Path, seed: int) -> Iterator[Any]:
    """The recipe's batch iterator: (anchor, positive) patch pairs of 3D points
    (``data='phototour'``) or of self-supervised photo pairs (``data='pairs'``)."""
    if recipe.options.data == "pairs":
        return pair_data(recipe, data_dir, seed)
    if recipe.options.data != "phototour":
        raise ValueError(
            f"recipe hardnet: data must be 'phototour' or 'pairs', got '{recipe.options.data}'"
        )
    return phototour_pairs(recipe, data_dir, seed)


def triplet_loss(
    model: nn.Module,
    a: torch.Tensor,
    p: torch.Tensor,
    margin: float = 1.0,
    anchor_swap: bool = True,
    negatives: str = "hardest",
    two_pass: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Hardest-in-batch triplet margin loss of (anchor, positive) patch batches and its logs."""
    if two_pass:
        da, dp = model(a), model(p)
    else:
        d = model(torch.cat([a, p], 0))
        da, dp = d[: len(a)], d[len(a) :]
    loss = hardest_triplet_margin(
        da, dp, margin=float(margin), anchor_swap=bool(anchor_swap), negatives=negatives
    )
    with torch.no_grad():
        pos = (da - dp).norm(dim=1).mean().item()
    return loss, {"pos_dist": pos}


def triplet_step(
    model: nn.Module, batch: Any, step: int, state: TrainState
) -> tuple[torch.Tensor, dict]:
    o = state.options
    return triplet_loss(model, batch[0], batch[1], o.margin, o.anchor_swap, o.negatives, o.two_pass)


def recipe(quick: bool = False) -> Recipe:
    r = Recipe(
        name="hardnet",
        make_data=hardnet_data,
        step_loss=triplet_step,
        data_source=pair_data_source,
        arch="l2net",
        arch_kwargs={"dim": 128},
        steps=50_000,
        batch_size=1024,
        optimizer="sgd",
        lr=10.0,
        momentum=0.9,
        weight_decay=1e-4,
        lr_schedule="linear",
        options=HardNetOptions(),
        description="L2-Net + hardest-in-batch triplet margin (HardNet)",
    )
    if quick:
        r = r.with_options(steps=1500, batch_size=256, lr=10.0)
    return r
