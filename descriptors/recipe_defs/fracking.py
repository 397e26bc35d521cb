"""Fracking recipe: CNN3 + hinge embedding loss + hard positive AND negative mining.

Source: Simo-Serra, Trulls, Ferraz, Kokkinos, Moreno-Noguer, "Fracking Deep Convolutional Image
Descriptors", arXiv 1412.6537 (papers/001_*.txt), Sec. 3.2-4.3:

- siamese CNN3 (``descriptors.models.cnn3``), hinge embedding loss on the L2 distance
  (l_P = d, l_N = max(0, m - d); ``losses.hinge_embedding``);
- each step draws B_P = R_P * B_P^M random corresponding pairs (two patches of one 3D point) and
  B_N = R_N * B_N^M random non-corresponding pairs, forward-propagates all of them, and
  back-propagates only the B_P^M hardest positives and B_N^M hardest negatives (highest loss;
  ``mining.fracking_mine``). B_P^M = B_N^M = 128 (``batch_size``); R_P / R_N are the options
  ``r_p`` / ``r_n``: 1/1 (no mining), 1/2 (the paper's default), 2/2, 4/4, 8/8 (best, and the
  authors' released ``CNN3_p8_n8`` models);
- SGD, lr 0.01 divided by 10 every 10,000 iterations, momentum 0.9, no weight decay ("no
  techniques to cope with overfitting are used"), as Torch7 ``optim.sgd`` computes it: dampening
  = momentum (``Recipe.dampening=None``; the trainer's SGD follows Torch7 / HardNet);
- inputs normalised by the training set's mean and std: ``setup`` measures them on the training
  patches and stores them in the model's ``mean`` / ``std`` buffers (so they are in every
  checkpoint);
- native 64 x 64 input end to end: ``FrackingSampler`` yields the Brown 64 x 64 patches as they
  are (``PatchPairSampler.sample_indices`` on ``data.patches``, no 64 -> 32 resize) and
  ``CNN3(input_size=64)`` has ``patch_size = 64``, so extraction / evaluation cut 64 x 64 patches
  for it (``registry.load`` reads ``model.patch_size``);
- Torch7 ``SpatialLPPooling`` weights (one weight + bias per plane, 448 parameters, the paper's
  46,272 total): ``lp_weights='fixed'`` (default) stores them as Torch7 does and, as Torch7's
  module, does not train them (its ``accGradParameters`` is a no-op); ``'learned'`` trains them.

What differs: descriptors are L2-normalised by default (toolkit convention; the paper's are not),
so distances lie in [0, sqrt 2] and the margin m = ``margin`` = 1.0 is our choice for that range.
``normalize=False`` gives the paper's raw output, trained with its own margin ``margin_raw``
(default 1.0 = Torch7 ``nn.HingeEmbeddingCriterion``'s default; the paper's text does not state
m). The paper warm-starts the 2/2 .. 8/8 runs from an early 1/2 checkpoint; here every run starts
from scratch. ``--arch_option input_norm=patch`` standardises each patch instead of using the
training set's mean / std (not the paper's; the shipped ``weights/fracking.pt`` uses it: with the
dataset statistics a dark patch becomes a nearly constant input and night queries fail).

Data (``options.data``): ``'phototour'`` (default, the paper's) = Brown-layout patches of 3D
points; ``'pairs'`` = hndesc's self-supervised photo pairs (``descriptors.data.pairs``: two
homographies of one photo; ``photos`` / ``pair_<field>`` as for hardnet), cut at the network's
input size (64 x 64 for CNN3): positives are the two views of one keypoint, negatives a view of
one keypoint against a view of another. Not the paper's data: a way to fine-tune real-patch
weights on stronger perspective change than real tracks hold.

``quick``: B^M = 16, 1/2 mining, 400 steps (lr 0.01, no decay within the run) on 2 CPU cores.
At CPU budgets the paper's SGD barely moves CNN3 on real patches; the shipped weights train with
Adam (``--option optimizer=adam --lr 0.001``, 8/8 mining, B^M = 32, 600 steps; README).
Options (:class:`FrackingOptions`): ``data`` (above; with ``'pairs'`` also the pair-stream fields
of ``hndesc.PatchPairOptions``), ``r_p``, ``r_n``, ``margin``, ``margin_raw``, ``p_night``
(share of second views, of positives and negatives alike, put through the synthetic night model;
0 by default). Architecture arguments (recorded in the
checkpoint): ``normalize``, ``lp_weights``, ``input_norm`` (``recipe(quick, normalize=False)`` or
``python -m pipelines.train --recipe fracking --arch_option normalize=false``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from descriptors.losses import hinge_embedding
from descriptors.mining import fracking_mine
from descriptors.recipe_defs.hndesc import PatchPairOptions, pair_data, pair_data_source
from descriptors.recipes import Recipe, TrainState

logger = logging.getLogger(__name__)


@dataclass
class FrackingOptions(PatchPairOptions):
    """Fracking's options (defaults: the paper's best, 8/8 mining; the pair fields act with
    data='pairs', where B is the pool of positives)."""

    r_p: int = 8  # pool of r_p x batch_size positives, the batch_size hardest back-propagated
    r_n: int = 8  # likewise for negatives
    margin: float = 1.0  # hinge margin for L2-normalised descriptors
    margin_raw: float = 1.0  # ... for the raw CNN3 output (normalize=False)
    p_night: float = 0.0  # share of second views put through the night model (data='phototour')


_DATA_CACHE: dict[tuple[str, tuple[float, ...]], Any] = {}


def _load(data_dir: Path, recipe: Recipe) -> Any:
    """``read_phototour_scenes(data_dir)`` (one Brown folder, or a folder of scene folders)
    once per process; the synthetic default is written if missing."""
    from descriptors.data.phototour import read_phototour_scenes
    from descriptors.data.phototour_synth import ensure_synthetic_phototour

    data_dir = Path(data_dir)
    if not data_dir.exists() and data_dir.parent == Path(recipe.default_data):
        ensure_synthetic_phototour(data_dir.parent)
    infos = (
        [data_dir / "info.txt"]
        if (data_dir / "info.txt").is_file()
        else sorted(data_dir.glob("*/info.txt"))
    )
    key = (str(data_dir.resolve()), tuple(f.stat().st_mtime for f in infos))
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = read_phototour_scenes(data_dir)
    return _DATA_CACHE[key]


class FrackingSampler:
    """Infinite iterator of fracking pools from a PhotoTour scene.

    Each item ``(pos_a, pos_b, neg_a, neg_b)``: ``n_pos`` corresponding pairs (two different
    patches of one 3D point; distinct points within a pool) and ``n_neg`` random non-corresponding
    pairs (different 3D points), all (k, 1, P, P) float32 in [0, 1]; ``patch_size`` P = 64 gives
    the Brown patches unchanged (the paper), 32 the toolkit's 64 -> 32 resized ones.
    """

    def __init__(
        self,
        data: Any,
        n_pos: int,
        n_neg: int,
        rng: np.random.Generator | int | None = None,
        patch_size: int = 64,
        p_night: float = 0.0,
    ) -> None:
        from descriptors.data.phototour import PatchPairSampler

        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._pairs = PatchPairSampler(data, n_pos, self.rng)  # positives (distinct points)
        if patch_size == 64:
            p = np.asarray(data.patches)
            if p.ndim != 3 or p.shape[1:] != (64, 64):
                raise ValueError(f"{data.root}: expected (N, 64, 64) patches, got {p.shape}")
            self._u8 = torch.from_numpy(np.ascontiguousarray(p, np.uint8))[:, None]
        elif patch_size == 32:
            self._u8 = None
        else:
            raise ValueError(f"FrackingSampler: patch_size must be 64 or 32, got {patch_size}")
        self.patch_size = int(patch_size)
        self.patches32 = self._pairs.patches32
        self.point_ids = self._pairs.point_ids
        self.n_pos = self._pairs.batch_size
        self.n_neg = int(n_neg)
        self.p_night = float(p_night)
        if len(np.unique(self.point_ids)) < 2:
            raise ValueError(f"{data.root}: need two 3D points for negatives")

    def negative_indices(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.point_ids)
        a = self.rng.integers(0, n, self.n_neg)
        b = self.rng.integers(0, n, self.n_neg)
        bad = self.point_ids[a] == self.point_ids[b]
        while bad.any():
            b[bad] = self.rng.integers(0, n, int(bad.sum()))
            bad = self.point_ids[a] == self.point_ids[b]
        return a, b

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        from descriptors.data.phototour import night_patches

        pa, pb = self._pairs.sample_indices()
        na, nb = self.negative_indices()
        if self._u8 is not None:  # 64 x 64 uint8 -> float [0, 1] per pool (small memory)
            out = [self._u8[torch.from_numpy(i)].float().div_(255.0) for i in (pa, pb, na, nb)]
        else:
            out = [self.patches32[torch.from_numpy(i)] for i in (pa, pb, na, nb)]
        for k in (1, 3):  # the second views: day-night positives, and negatives alike
            out[k] = night_patches(out[k], self.rng, self.p_night)
        return tuple(out)


class PairFrackingSampler:
    """Fracking pools ``(pos_a, pos_b, neg_a, neg_b)`` from a pair stream.

    ``pairs`` yields ``(a, b, ...)`` batches of ``n_pos`` keypoints, ``a[i]`` / ``b[i]`` two views
    of keypoint i ((n_pos, 1, P, P) float32); negatives pair ``a[i]`` with ``b[j]``, i != j
    (``n_neg`` random draws).
    """

    def __init__(self, pairs: Iterator[Any], n_neg: int, rng: np.random.Generator) -> None:
        self.pairs, self.n_neg, self.rng = pairs, int(n_neg), rng

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        batch = next(self.pairs)
        a, b = batch[0], batch[1]
        n = len(a)
        if n < 2:
            raise ValueError("fracking data='pairs': need two keypoints per batch for negatives")
        i = self.rng.integers(0, n, self.n_neg)
        j = (i + self.rng.integers(1, n, self.n_neg)) % n  # any other keypoint
        return a, b, a[torch.from_numpy(i)], b[torch.from_numpy(j)]


def make_data(recipe: Recipe, data_dir: Path, seed: int) -> Iterator[Any]:
    opts = recipe.options
    size = int(recipe.arch_kwargs.get("input_size", 64))
    if opts.data == "pairs":
        pr = replace(
            recipe,
            batch_size=int(opts.r_p) * recipe.batch_size,
            options=replace(opts, pair={**opts.pair, "patch_size": size}),
        )
        rng = np.random.default_rng(seed + 1)  # negatives: a stream apart from the pairs'
        return PairFrackingSampler(
            pair_data(pr, data_dir, seed), int(opts.r_n) * recipe.batch_size, rng
        )
    if opts.data != "phototour":
        raise ValueError(f"recipe fracking: data must be 'phototour' or 'pairs', got '{opts.data}'")
    data = _load(data_dir, recipe)
    return iter(
        FrackingSampler(
            data,
            int(opts.r_p) * recipe.batch_size,
            int(opts.r_n) * recipe.batch_size,
            np.random.default_rng(seed),
            patch_size=size,
            p_night=float(opts.p_night),
        )
    )


def input_stats(data: Any, size: int = 64) -> tuple[float, float]:
    """Mean and std of the training patches as the model sees them (size x size, [0, 1])."""
    from descriptors.patches import resize_patches

    p = np.asarray(data.patches) if size == 64 else resize_patches(data.patches, size)
    x = p.astype(np.float64) / 255.0
    return float(x.mean()), float(x.std())


def setup(model: nn.Module, recipe: Recipe, data_dir: Path, state: TrainState) -> None:
    """Store the training set's mean / std in the model buffers (paper Sec. 3.3); with
    data='pairs' the buffers are kept (the init checkpoint's, or the defaults)."""
    if recipe.options.data == "pairs":
        if getattr(_base(model), "input_norm", "patch") == "dataset" and not recipe.options.init:
            logger.warning("fracking data='pairs': no dataset mean / std, default buffers kept")
        return
    mean, std = input_stats(_load(data_dir, recipe), int(recipe.arch_kwargs.get("input_size", 64)))
    model.set_input_stats(mean, std)
    state.extra["input_mean"], state.extra["input_std"] = mean, std
    logger.info("fracking: training patches mean %.4f std %.4f", mean, std)


def _base(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def fracking_step(
    model: nn.Module, batch: Any, step: int, state: TrainState
) -> tuple[torch.Tensor, dict]:
    """Forward the whole pool without gradients, keep the hardest B/R, back-propagate those."""
    pa, pb, na, nb = batch
    opts = state.options
    raw = not _base(model).normalize
    margin = float(opts.margin_raw if raw else opts.margin)
    r_p, r_n = int(opts.r_p), int(opts.r_n)
    n_p = len(pa)
    with torch.no_grad():
        d = model(torch.cat([pa, na, pb, nb], 0))
        h = len(d) // 2
        dist = (d[:h] - d[h:]).norm(dim=1)
        is_pos = torch.zeros(h, dtype=torch.bool, device=dist.device)
        is_pos[:n_p] = True
        losses = hinge_embedding(dist, is_pos, margin)
        ip, ineg = fracking_mine(losses[:n_p], losses[n_p:], r_p, r_n)
    xa = torch.cat([pa[ip], na[ineg]], 0)
    xb = torch.cat([pb[ip], nb[ineg]], 0)
    e = model(torch.cat([xa, xb], 0))
    k = len(xa)
    dk = (e[:k] - e[k:]).norm(dim=1)
    lab = torch.zeros(k, dtype=torch.bool, device=dk.device)
    lab[: len(ip)] = True
    loss = hinge_embedding(dk, lab, margin, reduction="mean")
    logs = {
        "pool_loss": float(losses.mean()),
        "pos_dist": float(dist[:n_p].mean()),
        "neg_dist": float(dist[n_p:].mean()),
    }
    return loss, logs


def recipe(quick: bool = False, normalize: bool = True, lp_weights: str = "fixed") -> Recipe:
    """The fracking recipe; ``normalize`` / ``lp_weights`` pick the CNN3 output and L2-pooling
    weights (architecture arguments, recorded in the checkpoint)."""
    r = Recipe(
        name="fracking",
        make_data=make_data,
        step_loss=fracking_step,
        setup=setup,
        data_source=pair_data_source,
        arch="cnn3",
        arch_kwargs={
            "input_size": 64,
            "dim": 128,
            "fan_in": 8,
            "lp_weights": lp_weights,
            "normalize": bool(normalize),
        },
        steps=30_000,
        batch_size=128,
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        dampening=None,
        weight_decay=0.0,
        lr_schedule="step",
        lr_step=10_000,
        lr_gamma=0.1,
        default_data="datasets/phototour-synth",
        options=FrackingOptions(),
        description="CNN3 + hinge embedding + fracking (hard pos/neg mining)",
    )
    if quick:
        r = r.with_options(steps=400, batch_size=16, r_p=1, r_n=2)
    return r
