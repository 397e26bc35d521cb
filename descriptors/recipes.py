"""Named training recipes. A recipe = model + data sampler + miner/loss + optimizer + schedule.

Each recipe lives in ``descriptors/recipe_defs/<name>.py`` and defines ``recipe(quick) -> Recipe``.
``quick=True`` gives CPU-sized defaults (minutes on 2 cores); ``quick=False`` the published ones.

The trainer (``descriptors.train``) calls, in order:
    state = {}
    recipe.setup(model, recipe, data_dir, state)          # optional: stats, teacher copies...
    batches = recipe.make_data(recipe, data_dir, seed)    # infinite iterator of batches
    loss, logs = recipe.step_loss(model, batch, step, state)   # per step
and sets the learning rate from ``recipe.lr_at(step)`` (default: the named schedule).
``state`` is saved in training checkpoints (keep it to tensors / numbers / state dicts).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

RECIPE_MODULES: dict[str, str] = {
    "hardnet": "descriptors.recipe_defs.hardnet",
    "hndesc": "descriptors.recipe_defs.hndesc",
    "sdb": "descriptors.recipe_defs.sdb",
    "wlrn": "descriptors.recipe_defs.wlrn",
    "fracking": "descriptors.recipe_defs.fracking",
}


@dataclass
class Recipe:
    """Everything that defines one training recipe (defaults = HardNet's published ones)."""

    name: str
    make_data: Callable[["Recipe", Path, int], Iterator[Any]]
    step_loss: Callable[[nn.Module, Any, int, dict], tuple[torch.Tensor, dict]]
    arch: str = "l2net"
    arch_kwargs: dict = field(default_factory=dict)
    steps: int = 50_000
    batch_size: int = 1024
    optimizer: str = "sgd"  # 'sgd' | 'adam' | 'adamw' (decoupled wd) | 'rmsprop'
    lr: float = 10.0  # HardNet repo default lr=10 with linear decay (SGD, wd 1e-4)
    momentum: float = 0.9
    dampening: float | None = None  # SGD dampening; None = momentum (HardNet / Torch7 optim.sgd)
    weight_decay: float = 1e-4
    lr_schedule: str = "linear"  # 'linear' (to 0 at `steps`) | 'step' | 'const'
    lr_step: int = 10_000  # for 'step': multiply by lr_gamma every lr_step steps
    lr_gamma: float = 0.1
    lr_fn: Callable[["Recipe", int], float] | None = None  # overrides the schedule if set
    setup: Callable[[nn.Module, "Recipe", Path, dict], None] | None = None
    default_data: str = "datasets/phototour-synth"
    options: dict = field(default_factory=dict)
    description: str = ""

    def lr_at(self, step: int) -> float:
        """Learning rate for a 0-based step."""
        if self.lr_fn is not None:
            return float(self.lr_fn(self, step))
        if self.lr_schedule == "linear":
            return self.lr * max(0.0, 1.0 - step / max(self.steps, 1))
        if self.lr_schedule == "step":
            return self.lr * self.lr_gamma ** (step // max(self.lr_step, 1))
        if self.lr_schedule == "const":
            return self.lr
        raise ValueError(f"recipe {self.name}: unknown lr_schedule '{self.lr_schedule}'")

    def with_options(self, **overrides: Any) -> "Recipe":
        """Copy with top-level fields or entries of ``options`` overridden (unknown -> options)."""
        fields = {k: v for k, v in overrides.items() if k in self.__dataclass_fields__}
        opts = dict(self.options)
        opts.update({k: v for k, v in overrides.items() if k not in self.__dataclass_fields__})
        return replace(self, options=opts, **fields)


def list_recipes() -> list[str]:
    return sorted(RECIPE_MODULES)


def get_recipe(name: str, quick: bool = False) -> Recipe:
    """Build a named recipe. Unknown names raise KeyError listing the known ones."""
    if name not in RECIPE_MODULES:
        raise KeyError(f"unknown recipe '{name}' (known: {', '.join(list_recipes())})")
    try:
        mod = importlib.import_module(RECIPE_MODULES[name])
    except ModuleNotFoundError as e:
        raise KeyError(f"recipe '{name}' is registered but its module is missing ({e})") from None
    return mod.recipe(quick=quick)
