"""One training loop for every recipe: tqdm, checkpoints + resume, seeds, CPU/GPU, DDP.

Single process::

    python -m pipelines.train --recipe hardnet --data datasets/phototour-synth --train train

Several processes (DistributedDataParallel; gloo on CPU, nccl on GPU)::

    torchrun --nproc_per_node=2 -m pipelines.train --recipe hardnet ...

Each rank draws its own batches (seed + rank); gradients are averaged by DDP; rank 0 writes
checkpoints. A training checkpoint (``<out>.ckpt``) holds model, optimizer, recipe state and the
step; ``resume=True`` continues from it at the same step. The final weights file ``<out>`` is a
plain descriptor checkpoint (see ``descriptors.models``) that ``descriptors.registry.load`` reads.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from descriptors.models import (
    CheckpointError,
    atomic_torch_save,
    build_model,
    read_checkpoint,
    save_checkpoint,
)
from descriptors.recipes import Recipe, TrainState, get_recipe, options_dict

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _dist_info() -> tuple[bool, int, int]:
    """(is_distributed, rank, world_size) from torchrun's environment."""
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws > 1:
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def make_optimizer(recipe: Recipe, params: Any) -> torch.optim.Optimizer:
    """The recipe's optimizer. SGD follows the HardNet reference / Torch7 ``optim.sgd``:
    ``dampening = momentum`` unless the recipe sets ``dampening`` (0 makes each step
    1 / (1 - momentum) = 10x larger at the same lr)."""
    if recipe.optimizer == "sgd":
        damp = recipe.momentum if recipe.dampening is None else recipe.dampening
        return torch.optim.SGD(
            params,
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            dampening=float(damp),
        )
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=recipe.lr, weight_decay=recipe.weight_decay, momentum=recipe.momentum
        )
    raise ValueError(f"recipe {recipe.name}: unknown optimizer '{recipe.optimizer}'")


def init_from_checkpoint(model: nn.Module, recipe: Recipe) -> None:
    """With recipe option ``init=PATH`` (any recipe), start from that descriptor checkpoint's
    weights (fine-tuning, e.g. train-on-the-map). Its architecture must be the recipe's; its
    architecture arguments may differ where the parameters still fit (e.g. CNN3 ``input_norm``):
    the model keeps the recipe's arguments and a warning names the difference."""
    path = recipe.options.init
    if not path:
        return
    ck = read_checkpoint(path)
    theirs, ours = dict(ck.get("arch_kwargs", {})), dict(recipe.arch_kwargs)
    refuse = CheckpointError(
        f"{path}: --option init needs a {recipe.arch} {ours} checkpoint, this one is "
        f"{ck.get('arch')} {theirs}"
    )
    if ck.get("arch") != recipe.arch:
        raise refuse
    try:  # strict: missing / unexpected keys or another shape raise
        model.load_state_dict({k: v.float() for k, v in ck["state_dict"].items()})
    except RuntimeError:
        raise refuse from None
    if theirs != ours:
        logger.warning(
            "%s: init weights of a %s %s checkpoint into the recipe's %s %s",
            path,
            recipe.arch,
            theirs,
            recipe.arch,
            ours,
        )


def train(
    recipe: Recipe | str,
    data_root: str | Path | None,
    out_path: str | Path,
    split: str = "train",
    steps: int | None = None,
    seed: int = 0,
    resume: bool = False,
    device: str | None = None,
    ckpt_every: int = 500,
    quick: bool = False,
    half: bool = True,
    meta: dict | None = None,
    progress: bool = True,
) -> dict:
    """Train a recipe and write its weights.

    Args:
        recipe: a Recipe or a registered name (``quick`` picks the CPU-sized defaults).
        data_root: dataset root (e.g. ``datasets/phototour-synth``); None: the recipe's default.
        out_path: final weights file (``.pt``); the resumable checkpoint is ``<out_path>.ckpt``.
        split: sub-folder of ``data_root`` to train on.
        steps: override the recipe's number of steps.
    Returns:
        dict with recipe, steps, seconds, final (smoothed) loss, loss history, out path.
    """
    if isinstance(recipe, str):
        recipe = get_recipe(recipe, quick=quick)
    if steps is not None:
        recipe = recipe.with_options(steps=int(steps))
    is_dist, rank, world = _dist_info()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and is_dist:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(dev)
    seed_everything(seed + rank)
    data_root = Path(data_root if data_root is not None else recipe.default_data)
    data_dir = data_root / split if split else data_root

    model = build_model(recipe.arch, **recipe.arch_kwargs).to(dev)
    state = TrainState(recipe.options, device=dev, rank=rank, world_size=world)
    init_from_checkpoint(model, recipe)
    if recipe.setup is not None:
        recipe.setup(model, recipe, data_dir, state)
    opt = make_optimizer(recipe, model.parameters())
    out_path = Path(out_path)
    ckpt_path = out_path.with_name(out_path.name + ".ckpt")
    start = 0
    history: list[float] = []
    if resume and ckpt_path.exists():
        ck = read_checkpoint(ckpt_path)
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        # recipe-owned state; checkpoints before TrainState also held the options: dropped
        st = {k: v for k, v in (ck.get("recipe_state") or {}).items() if k != "options"}
        state.extra.update(st)
        start = int(ck["step"])
        history = list(ck.get("history", []))
        logger.info("resumed %s from %s at step %d", recipe.name, ckpt_path, start)
    elif resume:
        logger.warning("--resume: no checkpoint at %s, starting from scratch", ckpt_path)

    net: nn.Module = model
    if is_dist:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    batches = recipe.make_data(recipe, data_dir, seed * 100_003 + start * 7 + rank)

    def _save_train_ckpt(step: int) -> None:
        if rank != 0:
            return
        atomic_torch_save(
            {
                "arch": recipe.arch,
                "arch_kwargs": recipe.arch_kwargs,
                "state_dict": model.state_dict(),
                "optimizer": opt.state_dict(),
                "recipe": recipe.name,
                "step": step,
                "recipe_state": dict(state.extra),
                "history": history,
                "meta": {"seed": seed},
            },
            ckpt_path,
        )

    t0 = time.time()
    net.train()
    ema = None
    bar = tqdm(
        range(start, recipe.steps),
        initial=start,
        total=recipe.steps,
        desc=f"train {recipe.name}",
        disable=True if (not progress or rank != 0) else None,
        dynamic_ncols=True,
    )
    step = start
    for step in bar:
        lr = recipe.lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = _to_device(next(batches), dev)
        loss, logs = recipe.step_loss(net, batch, step, state)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"recipe {recipe.name}: loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lv = float(loss.detach())
        history.append(lv)
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        if step % 10 == 0:
            rate = (step + 1 - start) * recipe.batch_size / max(time.time() - t0, 1e-9)
            bar.set_postfix(
                loss=f"{ema:.4f}",
                lr=f"{lr:.3g}",
                pps=f"{rate:.0f}",
                **{k: f"{v:.3f}" for k, v in logs.items() if isinstance(v, (int, float))},
            )
        if ckpt_every and (step + 1) % ckpt_every == 0 and step + 1 < recipe.steps:
            _save_train_ckpt(step + 1)
    end_step = max(step + 1, start) if recipe.steps > start else start
    seconds = time.time() - t0
    result = {
        "recipe": recipe.name,
        "steps": end_step,
        "start_step": start,
        "seconds": round(seconds, 1),
        "final_loss": ema,
        "batch_size": recipe.batch_size,
        "world_size": world,
        "out": str(out_path),
        "loss_first": history[0] if history else None,
        "loss_last_mean": float(np.mean(history[-20:])) if history else None,
    }
    if rank == 0:
        _save_train_ckpt(end_step)
        model.eval()
        save_checkpoint(
            out_path,
            model,
            recipe.arch,
            recipe.arch_kwargs,
            recipe.name,
            end_step,
            meta={
                **(meta or {}),
                "seed": seed,
                "options": _jsonable(options_dict(recipe.options)),
                "data": recipe.describe_data(data_dir),
            },
            half=half,
        )
    if is_dist:
        dist.barrier()
    return result


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = repr(v)
    return out
