"""HNDesc recipe: self-supervised descriptor learning from synthetic homography + photometric pairs.

Melekhov, Laskar, Li, Wang, Kannala, "Digging Into Self-Supervised Learning of Feature
Descriptors", 3DV 2021, arXiv 2110.04773 (code: github.com/imelekhov/HNDesc).

What the paper does: two crops of one image related by a random homography, one of them
photometrically augmented and/or replaced by a photorealistic stylisation of the image; keypoints
of one crop are mapped exactly to the other by the homography — the only supervision. Its main
findings: hard negatives mined from the whole mini-batch (in-batch) beat in-pair mining, and the
homography + colour augmentation + stylisation mix gives viewpoint and illumination invariance.

Published defaults (``configs/main.yaml``, ``hndesc/pipeline.py``, ``data/dataset.py``,
``data/augmentations.py``): batch 16 image crops of 256 x 256 with up to 200 keypoints each,
Adam lr 1e-4, StepLR x0.5 every 50,000 steps, 220,000 iterations, seed 1984; the second crop is
the stylised image with probability 0.5-0.7; colour augmentation with p = 0.6 one of brightness /
contrast (0.3 / 0.2), hue / saturation (10 / 30), CLAHE, to-gray, channel shuffle; blur p = 0.3,
noise p = 0.1. Loss variants in the paper / code: triplet margin (margin 1) with in-pair or
in-batch hardest negatives, and an AP loss with in-batch (k = 20) hard negatives; dense CAPS
backbone.

What matches the paper / code here:

- loss (default ``loss='ap'``): the AP loss of ``hndesc/pipeline.py`` (``APCriterion``):
  per keypoint the ranked list [its positive, its k = 20 most similar keypoints of the OTHER image
  pairs of the batch], quantised differentiable AP with nq = 20 bins on cosine similarity in
  [0, 1] (R2D2's ``APLoss``), loss = mean (1 - AP) (``descriptors.losses.hndesc_ap_loss``);
  ``loss='triplet'`` keeps the paper's hardest-in-batch triplet margin variant (margin 1, anchor
  swap; ``losses.hardest_triplet_margin``) for the ablation and for the last stage of the shipped
  weights (README);
- data (``descriptors.data.pairs``): two views of one photo crop under two independent random
  homographies (``PairConf.two_homographies``) with HNDesc's mild geometry (zoom 0.8-1:
  ``pair_homography_scale``, rotation +-15 deg: ``pair_max_rotation_deg``), keypoints detected
  once and mapped exactly into both; the second view gets a strong stylisation-like change with
  p = 0.7 (HNDesc uses the stylised image with p = 0.7) plus colour / photometric augmentation;
- batches: ``pairs_per_batch`` = 16 crops (pairs) with up to ``max_per_pair`` = 200 keypoints
  each (HNDesc's 16 crops x up to 200 keypoints), so the AP loss ranks each keypoint against the
  keypoints of the 15 other crops;
- Adam lr 1e-4, x0.5 every 50,000 steps, 220,000 steps.

Added here: a night rendering of view B with probability ``pair_p_night`` = 0.3
(``synth.day_to_night``, the project's synthetic night model: darkening, gamma, colour cast,
street-light pools, sensor noise), so the descriptor also learns day-night illumination change.

What differs (the toolkit trains one patch network per recipe):

- network: the L2-Net body (``arch='l2net'``) on 32 x 32 patches cut at DoG keypoints with the
  toolkit-wide support, instead of dense CAPS features sampled at SuperPoint keypoints;
- stylisation: no neural network is downloaded; ``synth.stylize`` stands in (Reinhard Lab colour
  transfer from another training photo + edge-preserving smoothing + tone curve), with night
  rendering (``synth.day_to_night``) and ``color_style_shift`` for the colour augmentation;
- photos: the bundled TRAIN photos (or ``--photos DIR`` = the option ``photos``) instead of
  MegaDepth.

``default_data`` (``datasets/phototour-synth``) is only the evaluation root for
``pipelines.train --eval``: the training pairs need no dataset folder.

``recipe(quick=False)``: batches of 16 crops x up to 200 keypoints (``batch_size`` 3200 is the
pool capacity needed before the first batch), Adam lr 1e-4, step decay x0.5 / 50k, 220k steps.
``quick`` (CPU budget): 1000 steps of 8 crops x up to 64 keypoints, Adam lr 1e-3 decayed x0.5
every 334 steps, a pool of 96 pairs refreshed slowly (the paper's lr 1e-4 barely moves in 1000
steps).
Options (:class:`HNDescOptions`): loss ('ap'|'triplet'), ap_k, ap_nq, margin, anchor_swap, negatives ('hardest'|'random',
triplet only), photos (a photo folder), pool_size, initial_pairs, new_per_batch,
refresh_per_batch, pairs_per_batch, max_per_pair, weighting ('uniform'|'response'), swap_prob,
``pair_*`` (any ``PairConf`` field, e.g. ``pair_p_night``, ``pair_redetect``: positives
re-detected in each view; kept in ``options.pair``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from descriptors.losses import hndesc_ap_loss
from descriptors.recipes import Recipe, RecipeOptions, TrainState


@dataclass
class PairSamplerOptions(RecipeOptions):
    """Options of the self-supervised pair stream (``descriptors.data.pairs.PairPatchSampler``)."""

    photos: str | None = None  # photo folder (None: the bundled TRAIN photos)
    pool_size: int = 400
    initial_pairs: int = 16
    new_per_batch: int = 2
    refresh_per_batch: float = 0.5
    pairs_per_batch: int = 16
    max_per_pair: int = 200
    weighting: str = "uniform"  # 'uniform' | 'response'
    swap_prob: float = 0.5
    pair: dict[str, Any] = field(default_factory=dict)  # PairConf overrides (``pair_<field>``)


@dataclass
class PatchPairOptions(PairSamplerOptions):
    """Options of a patch recipe that trains on Brown-layout patches (``data='phototour'``) or on
    the pair stream (``data='pairs'``: B keypoints spread over a pool of 96 pairs, at most B // 8
    from one pair); hardnet's and fracking's options extend it."""

    data: str = "phototour"  # 'phototour' | 'pairs'
    pool_size: int = 96
    pairs_per_batch: int = 0  # B keypoints spread over the pool ...
    max_per_pair: int = 0  # ... at most B // 8 from one pair


@dataclass
class HNDescOptions(PairSamplerOptions):
    """HNDesc's options (defaults: the published ones)."""

    loss: str = "ap"  # 'ap' | 'triplet'
    ap_k: int = 20
    ap_nq: int = 20
    margin: float = 1.0  # triplet only
    anchor_swap: bool = True
    negatives: str = "hardest"  # 'hardest' | 'random'
    # HNDesc's milder geometry (crop zoom 0.8-1, rotation +-15 deg) and a night rendering of
    # view B (synth.day_to_night) with probability 0.3
    pair: dict[str, Any] = field(
        default_factory=lambda: {
            "homography_scale": (0.8, 1.0),
            "max_rotation_deg": 15.0,
            "p_night": 0.3,
        }
    )


def pair_data(recipe: Recipe, data_dir: Path, seed: int) -> Iterator[Any]:
    """Infinite ``(a, p, pair_ids)`` batches of self-supervised pair patches (``data_dir`` is
    unused: the pairs are rendered on the fly from the bundled TRAIN photos or ``photos``);
    ``recipe.options`` is a :class:`PairSamplerOptions`."""
    from descriptors.data.pairs import PairPatchSampler, conf_from_options

    o = recipe.options
    return PairPatchSampler(
        recipe.batch_size,
        np.random.default_rng(seed),
        conf_from_options(o),
        pool_size=int(o.pool_size),
        initial_pairs=int(o.initial_pairs),
        new_per_batch=int(o.new_per_batch),
        refresh_per_batch=float(o.refresh_per_batch),
        max_per_pair=int(o.max_per_pair),
        weighting=o.weighting,
        swap_prob=float(o.swap_prob),
        return_pair_ids=True,
        pairs_per_batch=int(o.pairs_per_batch),
    )


def pair_data_source(recipe: Recipe, data_dir: Path) -> str:
    """``Recipe.data_source`` of a recipe that trains on pairs: the photos they come from
    (hndesc; hardnet and sdb with ``data='pairs'``), else the patch folder ``data_dir``."""
    from descriptors.data.photos import describe_photos

    if getattr(recipe.options, "data", "pairs") != "pairs":
        return str(data_dir)
    return describe_photos(recipe.options.photos)


def hndesc_step(
    model: nn.Module, batch: Any, step: int, state: TrainState
) -> tuple[torch.Tensor, dict]:
    """One step on an ``(a, p, pair_ids)`` batch: the AP loss (``loss='ap'``) or the
    hardest-in-batch triplet margin loss (``loss='triplet'``, HardNet's step)."""
    o = state.options
    if o.loss == "triplet":
        from descriptors.recipe_defs.hardnet import triplet_loss

        return triplet_loss(model, batch[0], batch[1], o.margin, o.anchor_swap, o.negatives)
    if o.loss != "ap":
        raise ValueError(f"recipe hndesc: loss must be 'ap' or 'triplet', got '{o.loss}'")
    if len(batch) < 3:
        raise ValueError("recipe hndesc: the AP loss needs (a, p, pair_ids) batches")
    a, p, ids = batch[0], batch[1], batch[2]
    b = a.shape[0]
    d = model(torch.cat([a, p], 0))
    loss, ap = hndesc_ap_loss(d[:b], d[b:], ids, k=int(o.ap_k), nq=int(o.ap_nq))
    return loss, {"ap": float(ap.detach())}


def recipe(quick: bool = False) -> Recipe:
    r = Recipe(
        name="hndesc",
        make_data=pair_data,
        step_loss=hndesc_step,
        data_source=pair_data_source,
        arch="l2net",
        arch_kwargs={"dim": 128},
        steps=220_000,
        batch_size=3200,
        optimizer="adam",
        lr=1e-4,
        weight_decay=0.0,
        lr_schedule="step",
        lr_step=50_000,
        lr_gamma=0.5,
        default_data="datasets/phototour-synth",
        options=HNDescOptions(),
        description="L2-Net + AP loss (in-batch hard negatives) on self-supervised "
        "two-homography / stylised pairs (HNDesc)",
    )
    if quick:
        r = r.with_options(
            steps=1000,
            batch_size=512,
            lr=1e-3,
            lr_step=334,
            pool_size=96,
            initial_pairs=8,
            new_per_batch=1,
            refresh_per_batch=0.1,
            pairs_per_batch=8,
            max_per_pair=64,
        )
    return r
