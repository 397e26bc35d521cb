"""Self-supervised sample difficulty balancing (``sdb``): ExpTeacher stage + annealing stage.

Zhang & Tian, "Self-supervised Training Sample Difficulty Balancing for Local Descriptor
Learning", arXiv 2303.06124 (ACML 2023, PMLR 222:1654-1669); hyperparameters from the authors'
README commands and ``ftrain.py`` / ``Learning/losses.py``. Loss formulas: ``descriptors.losses``
section ``# === sdb ===`` (``sdb_exp_teacher_loss``, ``sdb_anneal_loss``).

Stage 1 (``--loss=ExpTeacher --teacher=self``), the first ``1 - stage2_frac`` of the steps:
  per class (3D point) the hardest positive pair and the hardest in-batch negative pair are
  mined from the student's distances; a teacher re-measures the same pairs, and its margin
  c = d_neg^T - d_pos^T sets a confidence weight w(c) (``weight_fn``, default the code's
  quadratic ``generate_weight``: 0 at c <= threshold = -0.55, rising to 1 at c >= upper = 0.10):
  samples the teacher finds extremely hard (negative much closer than the positive -> most likely
  label noise) are removed, moderately hard ones kept. The exponential-form loss
  L = w (R d_pos^2 + b~^2 - B b~), b~ = min(d_neg, B/2), B = 2 (median d_neg + A median d_pos)
  (``--use_stB``, A = 1.05, R = 1.0) gives trivially easy negatives (beyond B/2) zero gradient
  and trivially close positives a gradient ~ d_pos: both ends of the difficulty range are damped.
  Teacher: ``'self'`` (paper) = the student itself run in eval mode without gradient (BN running
  statistics, no dropout; the authors' ``TeacherNet`` with ``--teacher=self``), ``'ema'`` = an
  exponential moving average of the student's weights (decay ``ema_decay``, also eval mode),
  ``'detached'`` = the student's own train-mode distances of this batch (no extra forward pass),
  ``'none'`` = w = 1 (control).
Stage 2 (``--loss=tripletMargin++ --use_finetune``), the remaining ``stage2_frac``:
  ``stage2_cycles`` annealing cycles; in cycle i the learning rate is
  ``stage2_lr * stage2_lr_factor**i`` (flat for ``stage2_pct_flat`` = 60% of the cycle, then
  cosine to lr_i / 1e5), the optimizer state is reset at the start of every cycle
  (``stage2_reset_opt``; each cycle is a fresh fit), each point contributes ``stage2_npos`` = 2
  patches (views 0 and 1 of the stage-1 tuples; the reference's stage-2 command has no
  ``--Npos``, so its default 2 applies), and the batch shrinks linearly from ``stage2_batch``
  (cycle 0) to ``stage2_batch_end`` (last cycle). Samples with their own margin
  d_neg - d_pos <= ``stage2_threshold + 0.05 i`` are dropped; loss ``stage2_loss='exp'`` is the
  code's generalized form with fixed B = 4.25 (``tripletMargin++``), ``'triplet'`` the HardNet
  hinge max(0, 1 + d_pos - d_neg) with the same mask.

Network: ``arch='sdgmnet128'`` (``descriptors.models.sdgmnet.SDGMNet128``, the reference's
``--arch=SDGMNet128``: HyNet body with FRN + TLU); ``--option arch=l2net`` trains the L2-Net body
instead (needed to fine-tune the earlier L2-Net sdb weights with ``--option init=...``).

Augmentation (``PointTupleSampler``): one random flip / transpose per point applied to all its
views (``fliprot``), then an independent affine warp of every patch (``jitter``;
``affine_jitter``: rotation U(+-``jitter_rot_deg`` = 5) degrees, zoom U(``jitter_scale`` =
1-1.14), shear U(+-``jitter_shear`` = 0.1)), the reference's per-patch rotation + resized-crop
jitter.

Full run (``recipe(quick=False)``): stage 1: AdamW, peak lr 0.0033 with a one-cycle schedule
(cosine warm-up from lr / 25 over the first 25%, then cosine decay), batch 2560 points, Npos 3,
weight decay 0.1, 39,551 steps (the reference's 25 epochs x 4.05M tuples / 2560); stage 2:
lr 1.5e-6, lr_factor 0.75, 15 cycles of 1400 steps (21,000 steps), batch 2944 in cycle 0 down to
1024 in the last (linear; the reference command gives only the 2944 start), B = 4.25, threshold
-0.10 (+0.05 per cycle). Total 60,551 steps, ``stage2_frac`` = 21000 / 60551. Quick runs with
``stage2_batch`` / ``stage2_batch_end`` = None use the same ratios (2944 / 2560, 1024 / 2560) of
``batch_size``.
Optimizer: torch ``AdamW`` (decoupled weight decay ``p <- p (1 - lr wd)``, as fastai's
``Adam(..., wd=0.1, decouple_wd=True)``) with torch's betas (0.9, 0.999) and eps 1e-8. Not
reproduced: fastai's one-cycle momentum schedule (beta1 cycled 0.95 -> 0.85 -> 0.95), its beta2
0.99 and eps 1e-5 (the ``Recipe`` has no betas / eps fields).
Optimizer reset per cycle: the trainer owns the optimizer, so ``sdb_setup`` registers a torch
optimizer step pre-hook (``torch.optim.optimizer.register_optimizer_step_pre_hook``) that acts
only on the optimizer of this run's model and clears its state (Adam moments, step counts) before
the first step of each annealing cycle; ``state.extra['opt_reset_cycle']`` records the last reset (so a
resumed run does not reset twice).

Data (``options.data``): Brown-layout patch folders (``descriptors.data.phototour``;
``read_phototour_scenes`` concatenates every scene folder under the data root, e.g. the real
patch sets ``pipelines.make_patches`` builds from Strecha entry-P10 and the SfM'd collections),
by default the synthetic PhotoTour train split (``datasets/phototour-synth/train``): the paper
trains on Brown PhotoTour with labels from 3D points, and the "self-supervised" in the method's
name is the teacher judging sample difficulty, not label-free data. ``data='pairs'`` switches to
the self-supervised homography pairs of ``descriptors.data.pairs`` (2 views per keypoint) if no
labelled patches exist.

``quick`` (CPU budget): batch 64 points, 1000 steps (10% stage 2 in 3 cycles), Npos 2,
stage-1 lr 0.0033, stage-2 lr 3.3e-5 (the paper's 1.5e-6 barely moves weights in a hundred CPU
steps).
Options (:class:`SDBOptions`, ``recipe.with_options(...)``): data, npos, stage2_npos, fliprot,
jitter, jitter_rot_deg, jitter_scale, jitter_shear, p_night (share of views 2..npos put through the
synthetic night model; 0 by default), teacher ('self'|'ema'|'detached'|'none'),
ema_decay, weight_fn ('quadratic'|'linear'|'step'|'bump'|'none'), threshold, upper, easy_width,
R, A, B (None = use_stB), stage2_frac, stage2_cycles, stage2_loss ('exp'|'triplet'), stage2_R,
stage2_B, stage2_threshold, stage2_threshold_step, stage2_lr, stage2_lr_factor, stage2_batch,
stage2_batch_end, stage2_reset_opt, stage2_pct_flat, stage2_margin, one_cycle_div, one_cycle_pct,
pool_size (pairs data), photos (a photo folder for data='pairs') and ``pair_*`` (``PairConf``
fields).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from descriptors.losses import pairwise_distance, sdb_anneal_loss, sdb_exp_teacher_loss
from descriptors.recipe_defs.hndesc import pair_data_source
from descriptors.recipes import Recipe, RecipeOptions, TrainState

logger = logging.getLogger(__name__)

PAPER_STAGE1_STEPS = 39_551  # 25 epochs x 4,050,000 tuples / 2560
PAPER_STAGE2_STEPS = 21_000  # 15 cycles x 1400 batches
PAPER_BATCH, PAPER_STAGE2_BATCH, PAPER_STAGE2_BATCH_END = 2560, 2944, 1024


@dataclass
class SDBOptions(RecipeOptions):
    """sdb's options (defaults: the paper's full run)."""

    data: str = "phototour"  # 'phototour' | 'pairs'
    npos: int = 3
    fliprot: bool = True
    stage2_npos: int = 2
    # per-patch affine jitter (reference: rotation +-5 deg, zoom 1-1.14, shear); 0 / (1, 1) = off
    jitter: bool = True
    jitter_rot_deg: float = 5.0
    jitter_scale: tuple[float, float] = (1.0, 1.14)
    jitter_shear: float = 0.1
    p_night: float = 0.0  # share of views 2..npos put through the night model (data='phototour')
    # stage 1: ExpTeacher
    teacher: str = "self"  # 'self' | 'ema' | 'detached' | 'none'
    ema_decay: float = 0.99
    weight_fn: str = "quadratic"  # 'quadratic' | 'linear' | 'step' | 'bump' | 'none'
    threshold: float = -0.55
    upper: float = 0.10
    easy_width: float = 0.5
    R: float = 1.0
    A: float = 1.05
    B: float | None = None  # None = --use_stB (dynamic); paper B=3.7 unused
    one_cycle_div: float = 25.0
    one_cycle_pct: float = 0.25
    # stage 2: annealing
    stage2_frac: float = PAPER_STAGE2_STEPS / (PAPER_STAGE1_STEPS + PAPER_STAGE2_STEPS)
    stage2_cycles: int = 15
    stage2_loss: str = "exp"  # 'exp' | 'triplet'
    stage2_R: float = 1.0
    stage2_B: float = 4.25
    stage2_margin: float = 1.0
    stage2_threshold: float = -0.10
    stage2_threshold_step: float = 0.05
    stage2_lr: float = 1.5e-6
    stage2_lr_factor: float = 0.75
    stage2_batch: int | None = None
    stage2_batch_end: int | None = None
    stage2_reset_opt: bool = True
    stage2_pct_flat: float = 0.6
    # pair data (data='pairs')
    pool_size: int = 400
    photos: str | None = None
    pair: dict[str, Any] = field(default_factory=dict)  # PairConf overrides (``pair_<field>``)


# ------------------------------------------------------------------------------------ schedule
def stage_bounds(steps: int, options: SDBOptions) -> tuple[int, int]:
    """(first stage-2 step, steps per annealing cycle) for a run of ``steps`` steps."""
    o = options
    n2 = int(round(steps * float(o.stage2_frac)))
    cycles = max(1, int(o.stage2_cycles))
    if n2 < cycles:
        n2 = 0
    return steps - n2, max(1, n2 // cycles) if n2 else 1


def stage2_batches(batch_size: int, options: SDBOptions) -> list[int]:
    """Points per batch in each annealing cycle: linear from ``stage2_batch`` (cycle 0) to
    ``stage2_batch_end`` (last cycle); None = ``batch_size`` x 2944 / 2560 and x 1024 / 2560."""
    o = options
    b0 = o.stage2_batch or round(batch_size * PAPER_STAGE2_BATCH / PAPER_BATCH)
    b1 = o.stage2_batch_end or round(batch_size * PAPER_STAGE2_BATCH_END / PAPER_BATCH)
    c = max(1, int(o.stage2_cycles))
    return [max(2, int(round(b0 + (b1 - b0) * i / max(1, c - 1)))) for i in range(c)]


def anneal_cycle(step: int, steps: int, options: SDBOptions) -> int:
    """Annealing cycle index of a step (-1 during stage 1)."""
    s1, per = stage_bounds(steps, options)
    if step < s1:
        return -1
    return min((step - s1) // per, max(1, int(options.stage2_cycles)) - 1)


def sdb_lr(recipe: Recipe, step: int) -> float:
    """Two-stage learning rate: fastai one-cycle in stage 1, flat-then-cosine per annealing cycle.

    Stage 1 (n1 steps, peak lr = ``recipe.lr``): cosine warm-up from lr/div over the first
    ``one_cycle_pct``, cosine decay to lr/(div*1e5) after (fastai ``fit_one_cycle``).
    Stage 2, cycle i (L steps): lr_i = stage2_lr * stage2_lr_factor**i for the first
    ``stage2_pct_flat`` of the cycle, then cosine to lr_i/1e5 (fastai ``fit_flat_cos``).
    """
    o = recipe.options
    s1, per = stage_bounds(recipe.steps, o)

    def cos(a: float, b: float, t: float) -> float:
        return b + (a - b) * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0))) / 2

    if step < s1:
        div, pct = float(o.one_cycle_div), float(o.one_cycle_pct)
        warm = max(1, int(s1 * pct))
        if step < warm:
            return cos(recipe.lr / div, recipe.lr, step / warm)
        return cos(recipe.lr, recipe.lr / (div * 1e5), (step - warm) / max(1, s1 - warm))
    i = anneal_cycle(step, recipe.steps, o)
    lr_i = float(o.stage2_lr) * float(o.stage2_lr_factor) ** i
    t = (step - s1 - i * per) / per
    flat = float(o.stage2_pct_flat)
    if t < flat:
        return lr_i
    return cos(lr_i, lr_i / 1e5, (t - flat) / max(1e-9, 1 - flat))


# ---------------------------------------------------------------------------------------- data
def affine_jitter(
    x: torch.Tensor,
    rng: np.random.Generator,
    rot_deg: float = 5.0,
    scale: tuple[float, float] = (1.0, 1.14),
    shear: float = 0.1,
) -> torch.Tensor:
    """Independent random affine warp of every patch about its centre (bilinear, reflected
    border): rotation U(-rot_deg, rot_deg) degrees, zoom-in U(scale) (1.14 = the patch content
    appears 14 % larger), horizontal shear U(-shear, shear) (x' = x + shear * y).

    x: (N, 1, P, P) float32 -> (N, 1, P, P) float32.
    """
    n = x.shape[0]
    if n == 0:
        return x
    t = np.deg2rad(rng.uniform(-rot_deg, rot_deg, n))
    z = rng.uniform(scale[0], scale[1], n)
    sh = rng.uniform(-shear, shear, n)
    c, s = np.cos(t), np.sin(t)
    # output -> input sampling map in normalised coordinates: R(t) @ Shear(sh) / z
    a = (
        np.stack(
            [np.stack([c, c * sh - s, np.zeros(n)], 1), np.stack([s, s * sh + c, np.zeros(n)], 1)],
            1,
        )
        / z[:, None, None]
    )
    theta = torch.from_numpy(a.astype(np.float32))
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(
        x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


class PointTupleSampler:
    """Batches of ``npos`` patches of each of B distinct 3D points from a PhotoTour scene.

    Yields ``(x, labels)``: x (B*npos, 1, 32, 32) float32 in [0, 1] ordered view-major
    (``x[v*B + i]`` is view v of point i), labels (B*npos,) int64 = point index in the batch.
    Only points with >= npos patches are used; views are distinct patches. ``fliprot`` applies
    one random flip / transpose per point to all its views (HardNet's augmentation); ``jitter``
    (a dict of :func:`affine_jitter` arguments, None = off) then warps every patch independently
    (the reference's per-patch rotation / resized-crop augmentation).
    """

    def __init__(
        self,
        data: Any,
        batch_size: int,
        rng: np.random.Generator,
        npos: int = 3,
        fliprot: bool = True,
        jitter: dict | None = None,
        p_night: float = 0.0,
    ):
        from descriptors.data.phototour import to_32

        if npos < 2:
            raise ValueError(f"{data.root}: npos must be >= 2, got {npos}")
        self.rng = rng
        self.npos = int(npos)
        self.fliprot = fliprot
        self.jitter = jitter
        self.p_night = float(p_night)
        self.patches32 = to_32(data.patches)
        ids = np.asarray(data.point_ids, np.int64)
        order = np.argsort(ids, kind="stable")
        _, start, counts = np.unique(ids[order], return_index=True, return_counts=True)
        keep = counts >= self.npos
        if keep.sum() < 2:
            raise ValueError(f"{data.root}: fewer than 2 3D points have {npos} patches")
        self._order, self._start, self._counts = order, start[keep], counts[keep]
        self.batch_size = int(min(batch_size, keep.sum()))
        if self.batch_size < batch_size:
            logger.warning(
                "sdb: batch size %d capped at %d usable 3D points", batch_size, self.batch_size
            )

    def __iter__(self) -> "PointTupleSampler":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, V = self.batch_size, self.npos
        k = self.rng.choice(len(self._start), B, replace=False)
        # V distinct views per point: argsort of random keys restricted to the point's count
        keys = self.rng.random((B, int(self._counts[k].max())))
        keys[np.arange(keys.shape[1])[None, :] >= self._counts[k][:, None]] = np.inf
        views = np.argsort(keys, 1)[:, :V]  # (B, V)
        idx = self._order[self._start[k][:, None] + views]  # (B, V)
        x = self.patches32[torch.from_numpy(idx.T.reshape(-1))]  # view-major
        if self.fliprot:
            rot = torch.from_numpy(np.tile(self.rng.random(B) < 0.5, V))
            flip = torch.from_numpy(np.tile(self.rng.random(B) < 0.5, V))
            x = torch.where(rot[:, None, None, None], x.transpose(2, 3), x)
            x = torch.where(flip[:, None, None, None], x.flip(3), x).contiguous()
        if self.jitter is not None:
            x = affine_jitter(x, self.rng, **self.jitter)
        if self.p_night > 0:  # views 2..V only: each point keeps a day view
            from descriptors.data.phototour import night_patches

            x = torch.cat([x[:B], night_patches(x[B:], self.rng, self.p_night)])
        labels = torch.arange(B, dtype=torch.int64).repeat(V)
        return x, labels


def sdb_data(recipe: Recipe, data_dir: Path, seed: int) -> Iterator[Any]:
    """The recipe's batch iterator: PhotoTour point tuples (default) or self-supervised pairs.

    Batches hold max(batch_size, largest stage-2 batch) points; ``sdb_step`` keeps the first
    ``batch_size`` of them in stage 1 and the cycle's count in stage 2."""
    o = recipe.options
    rng = np.random.default_rng(seed)
    n = max([int(recipe.batch_size)] + stage2_batches(recipe.batch_size, o))
    if o.data == "pairs":
        from descriptors.data.pairs import PairPatchSampler, conf_from_options

        return PairPatchSampler(n, rng, conf_from_options(o), pool_size=int(o.pool_size))
    if o.data != "phototour":
        raise ValueError(f"recipe sdb: data must be 'phototour' or 'pairs', got '{o.data}'")
    from descriptors.data.phototour import read_phototour_scenes
    from descriptors.data.phototour_synth import ensure_synthetic_phototour

    data_dir = Path(data_dir)
    if not data_dir.exists() and data_dir.parent == Path(recipe.default_data):
        ensure_synthetic_phototour(data_dir.parent)
    data = read_phototour_scenes(data_dir, progress=False)
    jitter = None
    if o.jitter:
        jitter = {
            "rot_deg": float(o.jitter_rot_deg),
            "shear": float(o.jitter_shear),
            "scale": tuple(float(v) for v in o.jitter_scale),
        }
    return PointTupleSampler(
        data,
        n,
        rng,
        npos=int(o.npos),
        fliprot=bool(o.fliprot),
        jitter=jitter,
        p_night=float(o.p_night),
    )


# ------------------------------------------------------------------------------ step function
def _views(batch: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(patches (N,1,P,P), labels (N,), points B) from an (a, p[, ids]) or (x, labels) batch."""
    if (
        isinstance(batch, (list, tuple))
        and len(batch) >= 2
        and batch[1].ndim == 1
        and not torch.is_floating_point(batch[1])
    ):
        x, labels = batch[0], batch[1]
        return x, labels, int(labels.max().item()) + 1
    a, p = batch[0], batch[1]
    b = a.shape[0]
    labels = torch.arange(b, device=a.device).repeat(2)
    return torch.cat([a, p], 0), labels, b


def _subset_points(
    x: torch.Tensor, labels: torch.Tensor, keep_points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    m = labels < keep_points
    return x[m], labels[m]


def _first_views(
    x: torch.Tensor, labels: torch.Tensor, n_points: int, views: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``views`` views of every point of a view-major batch (rows v*B + i)."""
    n = min(int(views) * n_points, x.shape[0])
    return x[:n], labels[:n]


def _base(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


@torch.no_grad()
def teacher_forward(
    model: nn.Module, x: torch.Tensor, store: dict, kind: str = "self", decay: float = 0.99
) -> torch.Tensor:
    """Teacher descriptors of a batch, no gradient, network in eval mode (BN running stats, no
    dropout), as the authors' ``TeacherNet.forward`` with ``--teacher=self``.

    ``kind='self'``: the student itself. ``kind='ema'``: the student's architecture with an
    exponential moving average of its parameters (``store['ema']``, tensors only, updated here:
    ema = decay * ema + (1 - decay) * params of the last optimizer step) and its BN statistics.
    """
    from torch.func import functional_call

    m = _base(model)
    was_training = m.training
    m.eval()
    try:
        if kind == "self":
            return m(x)
        params = dict(m.named_parameters())
        ema = store.get("ema")
        if ema is None or set(ema) != set(params):
            ema = {k: v.detach().clone() for k, v in params.items()}
        else:
            for k, v in params.items():
                ema[k].mul_(decay).add_(v.detach(), alpha=1.0 - decay)
        store["ema"] = ema
        return functional_call(m, ema, (x,), strict=False)
    finally:
        m.train(was_training)


_RESET_HOOKS: list[Any] = []


def install_cycle_reset(model: nn.Module, store: dict) -> None:
    """Reset the optimizer of ``model``'s parameters at the start of each annealing cycle.

    A global optimizer step pre-hook that ignores every optimizer not holding these parameters;
    before a step with ``store['cycle_now'] = c >= 0`` and ``store['opt_reset_cycle'] != c`` it
    clears the optimizer's state (the step then runs as the first step of a fresh optimizer).
    Hooks of earlier runs in this process are removed first.
    """
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    while _RESET_HOOKS:
        _RESET_HOOKS.pop().remove()
    mine = {id(p) for p in model.parameters()}

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not any(id(p) in mine for g in opt.param_groups for p in g["params"]):
            return
        c = int(store.get("cycle_now", -1))
        if c >= 0 and int(store.get("opt_reset_cycle", -1)) != c:
            opt.state.clear()
            store["opt_reset_cycle"] = c
            logger.info("sdb: optimizer state reset for annealing cycle %d", c)

    _RESET_HOOKS.append(register_optimizer_step_pre_hook(hook))


def sdb_setup(model: nn.Module, recipe: Recipe, data_dir: Path, state: TrainState) -> None:
    """Record the run length (stage boundary); install the per-cycle optimizer reset."""
    state.extra["total_steps"] = int(recipe.steps)
    state.extra["batch_size"] = int(recipe.batch_size)
    if recipe.options.stage2_reset_opt:
        install_cycle_reset(model, state.extra)


def sdb_step(
    model: nn.Module, batch: Any, step: int, state: TrainState
) -> tuple[torch.Tensor, dict]:
    """One training step's loss: ExpTeacher (stage 1) or the annealing loss (stage 2)."""
    o = state.options
    total = int(state.extra.get("total_steps", 0) or 0)
    x, labels, n_points = _views(batch)
    cycle = anneal_cycle(step, total, o) if total else -1
    state.extra["cycle_now"] = cycle
    b1 = int(state.extra.get("batch_size", n_points) or n_points)
    keep = stage2_batches(b1, o)[cycle] if cycle >= 0 else b1
    if cycle >= 0 and x.shape[0] > int(o.stage2_npos) * n_points:
        x, labels = _first_views(x, labels, n_points, int(o.stage2_npos))
    if keep < n_points:
        x, labels = _subset_points(x, labels, keep)
    desc = model(x)
    dist = pairwise_distance(desc, desc)
    if cycle < 0:
        teacher = o.teacher
        if teacher in ("self", "ema"):
            emb_t = teacher_forward(model, x, state.extra, teacher, float(o.ema_decay))
            td, wfn = pairwise_distance(emb_t, emb_t), o.weight_fn
        elif teacher == "detached":
            td, wfn = None, o.weight_fn
        elif teacher == "none":
            td, wfn = None, "none"
        else:
            raise ValueError(
                f"recipe sdb: teacher must be 'self', 'ema', 'detached' or 'none', got '{teacher}'"
            )
        loss, logs = sdb_exp_teacher_loss(
            dist,
            labels,
            td,
            R=float(o.R),
            B=None if o.B is None else float(o.B),
            A=float(o.A),
            threshold=float(o.threshold),
            upper=float(o.upper),
            weight_fn=wfn,
            easy_width=float(o.easy_width),
        )
        logs["stage"] = 1.0
        return loss, logs
    thr = float(o.stage2_threshold) + float(o.stage2_threshold_step) * cycle
    loss, logs = sdb_anneal_loss(
        dist,
        labels,
        threshold=thr,
        kind=o.stage2_loss,
        R=float(o.stage2_R),
        B=float(o.stage2_B),
        margin=float(o.stage2_margin),
    )
    logs["stage"] = 2.0
    return loss, logs


def recipe(quick: bool = False) -> Recipe:
    r = Recipe(
        name="sdb",
        make_data=sdb_data,
        step_loss=sdb_step,
        data_source=pair_data_source,
        arch="sdgmnet128",
        arch_kwargs={"dim": 128},
        steps=PAPER_STAGE1_STEPS + PAPER_STAGE2_STEPS,
        batch_size=PAPER_BATCH,
        optimizer="adamw",
        lr=0.0033,
        weight_decay=0.1,
        lr_fn=sdb_lr,
        setup=sdb_setup,
        default_data="datasets/phototour-synth",
        options=SDBOptions(),
        description="SDGMNet128 + self-supervised difficulty balancing (ExpTeacher, "
        "then annealing)",
    )
    if quick:
        r = r.with_options(
            steps=1000,
            batch_size=64,
            npos=2,
            stage2_frac=0.1,
            stage2_cycles=3,
            stage2_lr=3.3e-5,
            pool_size=96,
        )
    return r
