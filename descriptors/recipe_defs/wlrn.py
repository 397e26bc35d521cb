"""wlrn recipe: learn descriptors from weakly-labelled keypoint bags.

Source: Markus, Pandzic, Ahlberg, "Learning Local Descriptors by Optimizing the
Keypoint-Correspondence Criterion", arXiv 1603.09095 (papers/000_*.txt; code nenadmarkus/wlrn):

- network: the 32x32 -> 64 net (``descriptors.models.wlrn.WLRN``), unit-length output;
- data: bag triplets (K, K+, K-): K, K+ two views of one object, K- another object; bags of 75
  keypoints per image (UKB, images downsampled 4x); 2200 UKB objects for training;
- loss: L = sum S(K, K-) / (S(K, K+) + eps), S = soft fraction of keypoints of K with a
  descriptor match (d^2 <= tau) in the other bag (``losses.wlrn_bag_loss``, mode 'ratio');
  tau = 0.8, beta = 20, eps = 1e-6;
- optimisation: minibatches of 32 triplets, rmsprop, lr 0.001, 128 rounds x 512 iterations,
  lr halved when the validation loss stops improving.

What matches the released code (``variant='code'``, default; nenadmarkus/wlrn ``wlrn.lua`` at
commit 7931d02 and ``wlrn.py``):

- loss (``losses.wlrn_code_loss``): s = (1 + cos) / 2, each keypoint's best match squashed by
  sigmoid(beta_s (s - 0.8)) with beta_s = ln(99) / 0.2 = 22.98, summed over the bag;
  L = (1 + m(K, K-)) / (1 + m(K, K+)) averaged over the triplets of a minibatch;
- independent (K, K+, K-) triplets (``sampling='triplets'``);
- rmsprop (Torch7 ``optim.rmsprop`` = torch RMSprop: alpha 0.99, eps 1e-8, no momentum),
  lr 1e-4, 128 rounds x 512 iterations, and the growing batch schedule (``schedule='grow'``):
  each round starts with batch 16; after every round the validation loss is measured on a fixed
  held-out triplet set; if it rose above the previous round's, the batch doubles (16 -> 32 ->
  64), and once it is 64 the lr halves and the batch returns to 16.

``variant='paper'`` (``--variant paper``) changes the LOSS only: the paper's form, S = soft
fraction with sigmoid(-beta (d^2 - tau)), tau = 0.8, beta = 20, L = S(K, K-) / (S(K, K+) + eps)
(``losses.wlrn_bag_loss``, option ``mode`` 'ratio' | 'margin'). Optimizer, lr and batches stay
the released code's (rmsprop lr 1e-4, the growing 16 -> 64 batch schedule above), NOT the
paper's (rmsprop lr 1e-3, fixed minibatches of 32, lr halved on a validation plateau). The
paper's lr and batch: ``--variant paper --lr 1e-3 --batch_size 32 --option schedule=fixed``
(``schedule='fixed'`` keeps the lr constant: the paper's plateau halving is not implemented).

What differs (toolkit specifics):

- bags come from ``descriptors.data.bags`` (synthetic UKB-like objects: windows of the TRAIN
  photos, or of ``--photos DIR`` = the option ``photos``, x 4 random homography + photometric
  views, DoG keypoints, the toolkit's 12-sigma patches), cached in ``<data>/<split>/bags.npz``
  (default ``datasets/bags-synth/train``; with ``photos``, ``bags-<hash>.npz``; generated on first
  use). The validation triplets of the schedule come from held-out objects of the training bags
  (every 10th object; the code uses a separate UKB split);
- or, with the option ``scenes=ROOT``, from REAL photos with weak labels
  (``descriptors.data.real_bags``: each sub-folder of ROOT is a scene, two photos of a scene
  match, photos of different scenes do not; one bag per photo and scale), cached in
  ``<data>/<split>/real-bags-<hash>.npz``; ``real_bags_conf`` overrides its settings. Few real
  scenes make a poor validation split: use ``schedule='fixed'`` with them;
- a share ``same_photo_neg`` (0.5) of the negatives is another object of the same photo: with
  few training photos, negatives from other photos can be told apart by texture statistics alone;
- ``sampling='batch'``: every (K, K+, K-) triplet inside a batch of bags (``objects_per_photo``
  objects per photo; ``losses.wlrn_bag_loss_batch``) instead of independent triplets;
- the schedule lives in the recipe (``state.extra`` + ``lr_fn``), since the trainer has no per-round
  hook: ``wlrn_step`` runs the validation every ``round_steps`` steps and updates
  ``state.extra['wlrn_bsize']`` / ``['wlrn_lr_scale']``; ``make_data`` always yields
  ``batch_max`` triplets and the step uses the first ``wlrn_bsize``;
- the WLRN model standardises each patch inside (the released net takes raw pixels).

``quick`` (CPU): 300 steps, rounds of 50 steps, batch 4 -> 8 -> 16 triplets of 24-keypoint bags,
rmsprop lr 1e-4 (the code's), the code loss.
Options (:class:`WLRNOptions`): ``variant`` ('code' | 'paper'), ``thr`` (code), ``tau``, ``beta``,
``eps``, ``mode``, ``margin`` (paper), ``sampling`` ('triplets' | 'batch'), ``schedule`` ('grow' | 'fixed'),
``round_steps``, ``batch_start``, ``batch_max``, ``val_triplets``, ``objects_per_photo``,
``same_photo_neg``, ``bag_size`` (first n keypoints of each stored bag), ``n_objects`` (objects
generated when the bags file is missing; None = every window), ``bags_conf`` (generation
overrides), ``photos`` (photo folder), ``scenes`` (real scenes root), ``real_bags_conf``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from descriptors.losses import (
    bag_soft_correspondence_count,
    wlrn_bag_loss,
    wlrn_bag_loss_batch,
    wlrn_code_loss,
    wlrn_code_score,
)
from descriptors.recipes import Recipe, RecipeOptions, TrainState

logger = logging.getLogger(__name__)


@dataclass
class WLRNOptions(RecipeOptions):
    """wlrn's options (defaults: the released code's)."""

    variant: str = "code"  # 'code' | 'paper' (the loss)
    thr: float = 0.8  # code loss
    tau: float = 0.8  # paper loss
    beta: float = 20.0
    eps: float = 1e-6
    mode: str = "ratio"  # 'ratio' | 'margin'
    margin: float = 0.2
    bag_size: int | None = 75  # first n keypoints of each stored bag (None: all)
    sampling: str = "triplets"  # 'triplets' | 'batch'
    schedule: str = "grow"  # 'grow' | 'fixed'
    round_steps: int = 512
    batch_start: int = 16
    batch_max: int = 64
    val_triplets: int = 256
    objects_per_photo: int = 2
    same_photo_neg: float = 0.5
    n_objects: int | None = None  # objects generated when the bags file is missing (None: all)
    bags_conf: dict | None = field(default_factory=lambda: {"bag_size": 75})
    photos: str | None = None  # photo folder for generated bags
    scenes: str | None = None  # real weak-label scenes root
    real_bags_conf: dict | None = None


_BAGS_CACHE: dict[tuple[str, float], Any] = {}
_LIVE: dict[int, TrainState] = {}  # id(recipe) -> the trainer's state (for ``wlrn_lr``)
_VAL: dict[int, Any] = {}  # id(state) -> validation triplets (not checkpointed)


def _bags_file(data_dir: Path, opts: WLRNOptions) -> Path:
    from descriptors.data.bags import BAGS_FILE

    if opts.scenes:
        from descriptors.data.real_bags import scenes_from_root

        sc = scenes_from_root(opts.scenes)
        key = json.dumps([sc, opts.real_bags_conf or {}], sort_keys=True)
        return Path(data_dir) / f"real-bags-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"
    photos = opts.photos
    if not photos:
        return Path(data_dir) / BAGS_FILE
    from descriptors.data.photos import find_photos

    # a photo folder's generation settings are part of the name: a changed bags_conf (e.g.
    # stronger homographies) never reuses another run's cache
    key = "\n".join(find_photos(photos))
    if opts.bags_conf:
        key += "\n" + json.dumps(opts.bags_conf, sort_keys=True)
    return Path(data_dir) / f"bags-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"


def wlrn_data_source(recipe: Recipe, data_dir: Path) -> str:
    """``Recipe.data_source``: the bag file and where its bags come from."""
    opts = recipe.options
    src = (
        f"real weak-label scenes under {opts.scenes}"
        if opts.scenes
        else f"the photos under {opts.photos}"
        if opts.photos
        else "the bundled photos"
    )
    return f"bags {_bags_file(data_dir, opts)} from {src}"


def load_bags(data_dir: Path, recipe: Recipe) -> Any:
    """The recipe's bag set (read once per process; generated and written if missing)."""
    from descriptors.data.bags import make_bags, read_bags, write_bags

    data_dir = Path(data_dir)
    opts = recipe.options
    f = _bags_file(data_dir, opts)
    if not f.is_file() and opts.scenes:
        from descriptors.data.real_bags import make_real_bags, scenes_from_root

        logger.info("generating real bags (scenes of %s) in %s", opts.scenes, f)
        write_bags(make_real_bags(scenes_from_root(opts.scenes), conf=opts.real_bags_conf), f)
    elif not f.is_file():
        split = data_dir.name if data_dir.name in ("train", "test") else "train"
        conf = dict(opts.bags_conf or {})
        if opts.photos:
            conf["photo_dir"] = str(opts.photos)
        logger.info("generating bags (%s) in %s", opts.photos or f"{split} photos", f)
        write_bags(make_bags(split, n_objects=opts.n_objects, conf=conf), f)
    key = (str(f.resolve()), f.stat().st_mtime)
    if key not in _BAGS_CACHE:
        _BAGS_CACHE.clear()
        _BAGS_CACHE[key] = read_bags(f)
    bags = _BAGS_CACHE[key]
    n = int(opts.bag_size or bags.bag_size)
    if n < bags.bag_size:
        bags = replace(bags, patches=bags.patches[:, :n], keypoints=bags.keypoints[:, :n])
    return bags


def split_objects(bags: Any, every: int = 10) -> tuple[Any, Any]:
    """(training bags, validation bags): every ``every``-th object (id % every == every - 1) is
    held out for the schedule's validation loss."""
    val = (bags.object_ids % every) == every - 1
    if val.all() or not val.any():
        return bags, bags

    def sub(m: np.ndarray) -> Any:
        return replace(
            bags,
            patches=bags.patches[m],
            object_ids=bags.object_ids[m],
            view_ids=bags.view_ids[m],
            photo=bags.photo[m],
            keypoints=bags.keypoints[m],
        )

    return sub(~val), sub(val)


def _grow(opts: WLRNOptions) -> bool:
    return opts.schedule == "grow" and opts.sampling == "triplets"


def make_data(recipe: Recipe, data_dir: Path, seed: int) -> Iterator[Any]:
    from descriptors.data.bags import BagBatchSampler, BagTripletSampler

    opts = recipe.options
    bags = load_bags(data_dir, recipe)
    if _grow(opts):
        bags = split_objects(bags)[0]
    rng = np.random.default_rng(seed)
    if opts.sampling == "triplets":
        n = int(opts.batch_max) if _grow(opts) else recipe.batch_size
        return iter(BagTripletSampler(bags, n, rng, same_photo_neg=float(opts.same_photo_neg)))
    return iter(
        BagBatchSampler(
            bags,
            recipe.batch_size,
            rng,
            views=2,
            objects_per_photo=int(opts.objects_per_photo),
        )
    )


def wlrn_setup(model: nn.Module, recipe: Recipe, data_dir: Path, state: TrainState) -> None:
    """Growing-batch schedule: initial batch / lr scale in ``state.extra``, validation triplets of
    held-out objects, and the link ``wlrn_lr`` uses to read the live schedule."""
    from descriptors.data.bags import BagTripletSampler

    opts = recipe.options
    st = state.extra
    st.setdefault("wlrn_bsize", int(opts.batch_start))
    st.setdefault("wlrn_lr_scale", 1.0)
    st.setdefault("wlrn_best", float("inf"))
    st.setdefault("wlrn_last", float("inf"))
    _LIVE.clear()
    _LIVE[id(recipe)] = state
    _VAL.clear()
    if _grow(opts):
        val = split_objects(load_bags(data_dir, recipe))[1]
        smp = BagTripletSampler(
            val,
            int(opts.val_triplets),
            np.random.default_rng(12345),
            same_photo_neg=float(opts.same_photo_neg),
        )
        _VAL[id(state)] = val.patches[smp.sample_indices()]  # (T, 3, n, P, P) uint8


def wlrn_lr(recipe: Recipe, step: int) -> float:
    """lr = recipe.lr x the schedule's current scale (halved each time the batch wraps)."""
    st = _LIVE.get(id(recipe))
    return recipe.lr * float(st.extra.get("wlrn_lr_scale", 1.0) if st is not None else 1.0)


def _loss(d: torch.Tensor, opts: WLRNOptions) -> torch.Tensor:
    """Loss of (3, T, n, D) triplet descriptors for the recipe's variant."""
    if opts.variant == "code":
        return wlrn_code_loss(d[0], d[1], d[2], thr=float(opts.thr))
    if opts.variant != "paper":
        raise ValueError(f"recipe wlrn: variant must be 'code' or 'paper', got '{opts.variant}'")
    return wlrn_bag_loss(d[0], d[1], d[2], **_paper_kw(opts))


def _paper_kw(opts: WLRNOptions) -> dict:
    return {
        "tau": float(opts.tau),
        "beta": float(opts.beta),
        "eps": float(opts.eps),
        "mode": str(opts.mode),
        "margin": float(opts.margin),
    }


@torch.no_grad()
def validation_loss(
    model: nn.Module, triplets: np.ndarray, opts: WLRNOptions, chunk: int = 16
) -> float:
    """Mean loss over fixed (T, 3, n, P, P) uint8 triplets, model in eval mode."""
    m = model.module if hasattr(model, "module") else model
    was = m.training
    m.eval()
    dev = next(m.parameters()).device
    tot, n = 0.0, 0
    try:
        for i in range(0, len(triplets), chunk):
            x = torch.from_numpy(triplets[i : i + chunk]).to(dev).float().div_(255.0)
            t, _, k = x.shape[:3]
            d = m(x.flatten(0, 2)[:, None]).reshape(t, 3, k, -1).transpose(0, 1)
            tot += float(_loss(d, opts)) * t
            n += t
    finally:
        m.train(was)
    return tot / max(n, 1)


def schedule_round(store: dict, val_loss: float, opts: WLRNOptions) -> None:
    """The code's end-of-round rule: a new best is kept; a validation loss above the previous
    round's doubles the batch, or (batch at ``batch_max``) halves the lr and resets the batch."""
    if val_loss < store["wlrn_best"]:
        store["wlrn_best"] = val_loss
    elif val_loss > store["wlrn_last"]:
        if store["wlrn_bsize"] >= int(opts.batch_max):
            store["wlrn_lr_scale"] = store["wlrn_lr_scale"] / 2.0
            store["wlrn_bsize"] = int(opts.batch_start)
        else:
            store["wlrn_bsize"] = min(2 * store["wlrn_bsize"], int(opts.batch_max))
    store["wlrn_last"] = val_loss


def wlrn_step(
    model: nn.Module, batch: Any, step: int, state: TrainState
) -> tuple[torch.Tensor, dict]:
    """One step: describe every patch of the batch's bags, wlrn bag loss on bag labels only.

    ``batch`` is ``(anchor, positive, negative)`` each (T, n, 1, P, P) (independent triplets; with
    the growing schedule the first ``state.extra['wlrn_bsize']`` are used) or ``(bags (M, n, 1, P, P),
    object_ids (M,))`` (batch-all: every triplet inside the batch, paper loss form only).
    """
    opts, st = state.options, state.extra
    if len(batch) == 2:
        if opts.variant == "code":
            raise ValueError("recipe wlrn: sampling='batch' needs variant='paper'")
        kw = _paper_kw(opts)
        bags, ids = batch
        m, k = bags.shape[:2]
        d = model(bags.flatten(0, 1)).reshape(m, k, -1)
        loss = wlrn_bag_loss_batch(d, ids, **kw)
        with torch.no_grad():
            s = bag_soft_correspondence_count(d[:, None], d[None, :], kw["tau"], kw["beta"])
            same = ids[:, None] == ids[None, :]
            eye = torch.eye(m, dtype=torch.bool, device=s.device)
            s_pos, s_neg = s[same & ~eye].mean().item(), s[~same].mean().item()
        return loss, {"S_pos": s_pos, "S_neg": s_neg}
    logs: dict = {}
    if _grow(opts) and id(state) in _VAL:
        rs = int(opts.round_steps)
        if step > 0 and step % rs == 0 and st.get("wlrn_round_at") != step:
            vl = validation_loss(model, _VAL[id(state)], opts)
            schedule_round(st, vl, opts)
            st["wlrn_round_at"] = step
            logger.info(
                "wlrn round %d: val loss %.4f, batch %d, lr x%.3g",
                step // rs,
                vl,
                st["wlrn_bsize"],
                st["wlrn_lr_scale"],
            )
    a, p, n = batch  # each (T, n, 1, P, P)
    if _grow(opts):
        bs = int(st.get("wlrn_bsize", len(a)))
        a, p, n = a[:bs], p[:bs], n[:bs]
    t, k = a.shape[:2]
    d = model(torch.cat([a, p, n], 0).flatten(0, 1)).reshape(3, t, k, -1)
    loss = _loss(d, opts)
    with torch.no_grad():
        thr = float(opts.thr)
        logs["m_pos"] = wlrn_code_score(d[0], d[1], thr).mean().item()
        logs["m_neg"] = wlrn_code_score(d[0], d[2], thr).mean().item()
        logs["batch"] = float(t)
    return loss, logs


def heldout_bag_auc(
    weights: str | Path, root: str | Path = "datasets/bags-synth", split: str = "test"
) -> dict:
    """Bag-pair ROC-AUC ("same object?") of a checkpoint on held-out bags of TEST photos
    (``<root>/<split>/bags.npz``, generated if missing): best AUC over tau and its tau."""
    from descriptors.data.bags import bag_pair_auc, ensure_bags
    from descriptors.models import load_checkpoint

    model, _ = load_checkpoint(weights)
    bags = ensure_bags(Path(root) / split)
    r = bag_pair_auc(model, bags)
    return {
        "bag_auc": r["auc"],
        "bag_tau": r["tau"],
        "n_pos": r["n_pos"],
        "n_neg": r["n_neg"],
        "bags": str(Path(root) / split),
    }


def recipe(quick: bool = False) -> Recipe:
    r = Recipe(
        name="wlrn",
        make_data=make_data,
        step_loss=wlrn_step,
        setup=wlrn_setup,
        data_source=wlrn_data_source,
        arch="wlrn",
        arch_kwargs={"dim": 64},
        steps=128 * 512,
        batch_size=64,
        optimizer="rmsprop",
        lr=1e-4,
        momentum=0.0,
        weight_decay=0.0,
        lr_fn=wlrn_lr,
        default_data="datasets/bags-synth",
        options=WLRNOptions(),
        description="WLRN 32x32->64 net from weakly-labelled keypoint bags",
    )
    if quick:
        r = r.with_options(
            steps=300,
            batch_size=16,
            bag_size=24,
            round_steps=50,
            batch_start=4,
            batch_max=16,
            val_triplets=32,
        )
    return r
