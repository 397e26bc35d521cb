"""Named training recipes. A recipe = model + data sampler + miner/loss + optimizer + schedule.

Each recipe lives in ``descriptors/recipe_defs/<name>.py`` and defines ``recipe(quick) -> Recipe``
and its options dataclass (a :class:`RecipeOptions` subclass, e.g. ``HardNetOptions``).
``quick=True`` gives CPU-sized defaults (minutes on 2 cores); ``quick=False`` the published ones.

The trainer (``descriptors.train``) calls, in order:
    state = TrainState(recipe.options, device, rank, world_size)
    recipe.setup(model, recipe, data_dir, state)          # optional: stats, teacher copies...
    batches = recipe.make_data(recipe, data_dir, seed)    # infinite iterator of batches
    loss, logs = recipe.step_loss(model, batch, step, state)   # per step
and sets the learning rate from ``recipe.lr_at(step)`` (default: the named schedule).
Recipes read their options as ``state.options.margin`` / ``recipe.options.margin``; what they
must keep across a resume goes in ``state.extra`` (saved in training checkpoints as
``recipe_state``: keep it to tensors / numbers / state dicts).

``Recipe.with_options(**kw)`` sets Recipe fields or option fields; unknown keys are an
:class:`~descriptors.util.InputError`. ``Recipe.parse_option(key, text)`` converts a command-line
string to the field's type. Options named ``pair_<field>`` set ``PairConf`` fields (the dict
``options.pair`` of recipes that render self-supervised pairs).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import torch
import torch.nn as nn

from descriptors.util import InputError

RECIPE_MODULES: dict[str, str] = {
    "hardnet": "descriptors.recipe_defs.hardnet",
    "hndesc": "descriptors.recipe_defs.hndesc",
    "sdb": "descriptors.recipe_defs.sdb",
    "wlrn": "descriptors.recipe_defs.wlrn",
    "fracking": "descriptors.recipe_defs.fracking",
}

#: options named ``PAIR_PREFIX + <PairConf field>`` go to ``options.pair`` (recipes that have it)
PAIR_PREFIX = "pair_"
#: Recipe fields that are not settable from the command line
_NOT_CLI = ("name", "make_data", "step_loss", "lr_fn", "setup", "options", "description")


@dataclass
class RecipeOptions:
    """Options every recipe accepts (base class of each recipe's options dataclass)."""

    init: str | None = None  # descriptor checkpoint to start from (fine-tuning)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (``dataclasses.asdict``); ``pair`` entries flattened to ``pair_<name>``."""
        d = asdict(self)
        pair = d.pop("pair", None) or {}
        d.update({PAIR_PREFIX + k: v for k, v in pair.items()})
        return d


@dataclass
class TrainState:
    """What ``setup`` / ``step_loss`` get from the trainer. ``extra`` is recipe-owned (teacher
    copies, running statistics, schedule counters) and saved in training checkpoints."""

    options: Any  # the recipe's RecipeOptions subclass
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def _pair_types() -> dict[str, Any]:
    from descriptors.data.pairs import PairConf

    return typing.get_type_hints(PairConf)


def parse_value(text: str, tp: Any, where: str) -> Any:
    """A command-line string as type ``tp`` (bool, int, float, str, tuple, dict, ``X | None``;
    ``null`` = None); other types: JSON if it parses, else the string. Raises InputError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    try:
        if origin in (Union, types.UnionType):
            if text.strip() == "null" and type(None) in args:
                return None
            rest = [a for a in args if a is not type(None)]
            return parse_value(text, rest[0], where) if len(rest) == 1 else _json_or_str(text)
        if tp is bool:
            low = text.strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            v = float(text)
            if not v.is_integer():
                raise ValueError
            return int(v)
        if tp is float:
            return float(text)
        if tp is str:
            return text
        if tp is tuple or origin is tuple:
            v = json.loads(text) if text.strip().startswith("[") else text.split(",")
            if not isinstance(v, list):
                raise ValueError
            el = args[0] if args else Any
            return tuple(parse_value(str(x), el, where) if el is not Any else x for x in v)
        if tp is dict or origin is dict:
            v = json.loads(text)
            if not isinstance(v, dict):
                raise ValueError
            return v
    except (ValueError, IndexError):
        name = getattr(tp, "__name__", None) or str(tp)
        raise InputError(f"{where}={text}: not a valid {name}") from None
    return _json_or_str(text)


def _json_or_str(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass
class Recipe:
    """Everything that defines one training recipe (defaults = HardNet's published ones)."""

    name: str
    make_data: Callable[["Recipe", Path, int], Iterator[Any]]
    step_loss: Callable[[nn.Module, Any, int, TrainState], tuple[torch.Tensor, dict]]
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
    setup: Callable[[nn.Module, "Recipe", Path, TrainState], None] | None = None
    #: what the recipe trains on when that is not the data folder (photos, scenes); None = it is
    data_source: Callable[["Recipe", Path], str] | None = None
    default_data: str = "datasets/phototour-synth"
    options: RecipeOptions = field(default_factory=RecipeOptions)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.options, RecipeOptions):
            raise TypeError(
                f"recipe {self.name}: options must be a RecipeOptions dataclass, "
                f"got {type(self.options).__name__}"
            )

    def describe_data(self, data_dir: Path) -> str:
        """What a run on ``data_dir`` trains on, for checkpoints and sidecars."""
        return self.data_source(self, Path(data_dir)) if self.data_source else str(data_dir)

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

    def known_options(self, cli: bool = False) -> list[str]:
        """Keys ``with_options`` accepts (``cli``: only those settable by ``--option``);
        ``pair_*`` stands for any ``PairConf`` field where the options have ``pair``."""
        top = [f.name for f in fields(self) if not (cli and f.name in _NOT_CLI)]
        if not cli:
            top.remove("options")
        opt = [f.name for f in fields(self.options) if f.name != "pair"]
        pair = [PAIR_PREFIX + "*"] if self._has_pair() else []
        return sorted(set(top) | set(opt)) + pair

    def _has_pair(self) -> bool:
        return "pair" in {f.name for f in fields(self.options)}

    def option_type(self, key: str, cli: bool = False) -> Any:
        """The declared type of a Recipe field, option or ``pair_*`` option (InputError if
        unknown; ``cli``: also for Recipe fields not settable from the command line)."""
        if key in self.__dataclass_fields__ and key != "options":
            if cli and key in _NOT_CLI:
                self._unknown([key])
            return typing.get_type_hints(Recipe)[key]
        hints = typing.get_type_hints(type(self.options))
        if key in hints and key != "pair":
            return hints[key]
        if key.startswith(PAIR_PREFIX) and self._has_pair():
            ptypes = _pair_types()
            if key[len(PAIR_PREFIX) :] in ptypes:
                return ptypes[key[len(PAIR_PREFIX) :]]
        self._unknown([key])

    def parse_option(self, key: str, text: str) -> Any:
        """A command-line ``KEY=VALUE`` string converted to the type of field ``key``."""
        return parse_value(text, self.option_type(key, cli=True), f"--option {key}")

    def _unknown(self, keys: list[str]) -> typing.NoReturn:
        raise InputError(
            f"recipe {self.name}: unknown option(s) {', '.join(sorted(keys))} "
            f"(known: {', '.join(self.known_options(cli=True))})"
        )

    def with_options(self, **overrides: Any) -> "Recipe":
        """Copy with Recipe fields or option fields overridden (``pair_<name>`` sets
        ``options.pair[name]``). Unknown keys raise InputError naming the recipe."""
        top: dict[str, Any] = {}
        opts: dict[str, Any] = {}
        pair: dict[str, Any] = {}
        bad: list[str] = []
        opt_fields = {f.name for f in fields(self.options)}
        for k, v in overrides.items():
            if k in self.__dataclass_fields__ and k != "options":
                top[k] = v
            elif k in opt_fields:
                opts[k] = v
            elif k.startswith(PAIR_PREFIX) and "pair" in opt_fields:
                pair[k[len(PAIR_PREFIX) :]] = v
            else:
                bad.append(k)
        if pair:
            ptypes = _pair_types()
            bad += [PAIR_PREFIX + k for k in pair if k not in ptypes]
        if bad:
            self._unknown(bad)
        if pair:
            opts["pair"] = {**opts.get("pair", self.options.pair), **pair}
        return replace(self, options=replace(self.options, **opts), **top)


def options_dict(options: Any) -> dict[str, Any]:
    """Options as a plain dict (a RecipeOptions' ``to_dict``; a dict is copied)."""
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return options.to_dict() if hasattr(options, "to_dict") else asdict(options)
    return dict(options or {})


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
