"""Train a descriptor recipe and write weights + a JSON sidecar.

    python -m pipelines.train --recipe hardnet --data datasets/phototour-synth --train train \
        [--steps N] [--quick] [--out outputs/train/hardnet.pt] [--resume] [--eval test]
    python -m pipelines.train --recipe hndesc --quick --photos ~/my_photos   # own JPG/PNG folder
    torchrun --nproc_per_node=2 -m pipelines.train --recipe hardnet --quick   # DDP (gloo on CPU)

Without ``--out`` the weights go to ``outputs/train/<recipe>.pt``: the shipped ``weights/`` are
only replaced by an explicit ``--out weights/<recipe>.pt``. ``--resume`` refuses a training
checkpoint of another recipe / architecture (one-line error saying what differs).
``--photos DIR`` (hndesc, hardnet and sdb with ``data=pairs``, wlrn) makes the self-supervised
pairs / bags from every JPG / PNG under DIR (recursively) instead of the bundled photos; it is
passed to the recipe as the option ``photos``.

The sidecar ``<out>.json`` records the recipe, the exact command, data, steps, seconds and (with
``--eval``) FPR95 / PR-AUC / ROC-AUC / CMC@1 on the held-out PhotoTour split (wlrn adds the
held-out bag-pair ROC-AUC, ``metrics.bags``). ``--average A.pt B.pt ... --out C.pt`` trains
nothing: it writes the uniform average of the checkpoints' weights (runs fine-tuned from one
init, a "model soup"; ``descriptors.models.average_checkpoints``).

Arguments are checked before any training (one line, exit 2): numbers in range, ``--data``,
``--eval`` and ``--option init=`` paths present, ``--option`` keys known to the recipe, ``--out``
writable; errors during the run are one line too (``--verbose``: the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from descriptors.recipes import get_recipe, list_recipes, options_dict
from descriptors.train import train
from descriptors.util import atomic_write_text, setup_logging
from localize.cli import (
    ArgumentParser,
    InputError,
    cli_errors,
    existing_dir,
    nonneg_int,
    output_file,
    positive_float,
    positive_int,
)
from localize.cli import device as device_arg

logger = logging.getLogger(__name__)


def evaluate_weights(weights: Path, data_root: Path, split: str) -> dict:
    """FPR95 & co. of a checkpoint on a PhotoTour split (generated if it is the synthetic one)."""
    from descriptors.data.phototour import read_phototour
    from descriptors.data.phototour_synth import ensure_synthetic_phototour
    from descriptors.phototour_eval import evaluate_pairs
    from descriptors.registry import load

    if not (data_root / split).exists():
        ensure_synthetic_phototour(data_root)
    data = read_phototour(data_root / split)
    return evaluate_pairs(load(str(weights)), data)


DEFAULT_OUT_DIR = Path("outputs/train")


def default_out(recipe: str) -> Path:
    """Where training writes without ``--out`` (never the shipped ``weights/``)."""
    return DEFAULT_OUT_DIR / f"{recipe}.pt"


def check_resume(ckpt_path: Path, recipe: Any) -> None:
    """Raise ValueError (one line) if a training checkpoint belongs to another recipe or
    architecture than ``recipe`` (a Recipe); a missing checkpoint is left to the trainer."""
    from descriptors.models import read_checkpoint

    if not ckpt_path.exists():
        return
    ck = read_checkpoint(ckpt_path)
    diffs = []
    for key, want in (
        ("recipe", recipe.name),
        ("arch", recipe.arch),
        ("arch_kwargs", dict(recipe.arch_kwargs)),
    ):
        have = ck.get(key)
        if have != want:
            diffs.append(f"{key} {have!r} (checkpoint) vs {want!r} (this run)")
    if diffs:
        raise ValueError(f"{ckpt_path}: cannot --resume: " + "; ".join(diffs))


def eval_only(out: Path, data_root: Path, split: str) -> dict:
    """Evaluate existing weights and (re)write their sidecar from the checkpoint metadata."""
    from descriptors.models import read_checkpoint

    ck = read_checkpoint(out)
    side_path = out.with_suffix(".json")
    sidecar = json.loads(side_path.read_text()) if side_path.exists() else {}
    meta = ck.get("meta", {})
    sidecar.update(
        {
            "recipe": ck.get("recipe"),
            "command": meta.get("command"),
            "data": meta.get("data"),
            "steps": ck.get("step"),
            "options": meta.get("options", {}),
        }
    )
    sidecar.setdefault("metrics", {})[split] = evaluate_weights(out, data_root, split)
    atomic_write_text(side_path, json.dumps(sidecar, indent=2, default=str))
    return sidecar


def _key_values(
    p: argparse.ArgumentParser, flag: str, items: list[str], parse_json: bool = True
) -> dict:
    """``KEY=VALUE`` strings -> dict, each value parsed as JSON when it is JSON (else the
    string; ``parse_json=False``: always the string); a malformed item is argparse's one-line
    usage error."""
    out: dict = {}
    for kv in items:
        if "=" not in kv:
            p.error(f"{flag} expects KEY=VALUE, got '{kv}'")
        k, v = kv.split("=", 1)
        if not parse_json:
            out[k] = v
            continue
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def check_options(recipe: Any, over: dict[str, str]) -> dict[str, Any]:
    """``--option`` strings converted to the types of the recipe's fields / options dataclass
    (``Recipe.parse_option``). Refuses unknown keys (a typo would be recorded and silently
    ignored), unconvertible values and an ``init`` checkpoint that does not exist. Raises
    InputError (one line)."""
    known = recipe.known_options(cli=True)
    bad = []
    for k in over:
        try:
            recipe.option_type(k, cli=True)
        except InputError:
            bad.append(k)
    if bad:
        raise InputError(
            f"--option {', '.join(sorted(bad))}: not an option of recipe {recipe.name} "
            f"(known: {', '.join(known)})"
        )
    out = {k: recipe.parse_option(k, v) for k, v in over.items()}
    if out.get("init") and not Path(str(out["init"])).is_file():
        raise InputError(f"--option init={out['init']}: checkpoint not found")
    return out


def _check_eval(eval_data: str, split: str) -> None:
    """``--eval SPLIT`` must be a folder of ``--eval_data`` or a split of the synthetic set
    (generated on first use); checked before training, not after it."""
    if not (Path(eval_data) / split).is_dir() and split not in ("train", "test"):
        raise InputError(
            f"--eval {split}: no folder {Path(eval_data) / split} (the synthetic "
            "PhotoTour set has the splits train and test)"
        )


def main(argv: list[str] | None = None) -> dict:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, choices=list_recipes(), help="recipe to train")
    p.add_argument(
        "--data", default=None, type=existing_dir, help="dataset root (default: the recipe's)"
    )
    p.add_argument("--train", default="train", help="split sub-folder to train on")
    p.add_argument(
        "--steps", type=positive_int, default=None, help="training steps (default: the recipe's)"
    )
    p.add_argument(
        "--batch_size", type=positive_int, default=None, help="batch size (default: the recipe's)"
    )
    p.add_argument(
        "--lr", type=positive_float, default=None, help="base learning rate (default: the recipe's)"
    )
    p.add_argument("--quick", action="store_true", help="CPU-sized defaults")
    p.add_argument(
        "--out",
        default=None,
        type=output_file,
        help="weights file (default outputs/train/<recipe>.pt; the shipped weights "
        "are replaced only by an explicit --out weights/<recipe>.pt)",
    )
    p.add_argument(
        "--photos",
        default=None,
        metavar="DIR",
        type=existing_dir,
        help="folder of JPG/PNG photos (recursive) for the self-supervised pairs / "
        "bags (hndesc, hardnet / sdb data=pairs, wlrn) instead of the bundled ones",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the training checkpoint <out>.ckpt at its step",
    )
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--ckpt_every",
        type=nonneg_int,
        default=500,
        help="write the training checkpoint every N steps (0: only at the end)",
    )
    p.add_argument(
        "--device",
        default=None,
        type=device_arg,
        help="torch device (default: cuda if present, else cpu)",
    )
    p.add_argument(
        "--eval",
        default=None,
        metavar="SPLIT",
        help="evaluate on this PhotoTour split after training (e.g. test)",
    )
    p.add_argument(
        "--eval_data",
        default="datasets/phototour-synth",
        help="PhotoTour root holding the --eval split (whatever the training data)",
    )
    p.add_argument(
        "--bags_data",
        default="datasets/bags-synth",
        help="wlrn: bags root whose test split (TEST photos) gives the bag-pair ROC-AUC",
    )
    p.add_argument(
        "--variant",
        default=None,
        choices=["code", "paper"],
        help="wlrn: the released code's loss (default) or the paper's (beta = 20)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe field or option override (repeatable), value converted to the option's "
        "type (bool: true/false; tuples: JSON lists; null: None); unknown keys are refused; "
        "init=PATH (any recipe) fine-tunes from a descriptor checkpoint",
    )
    p.add_argument(
        "--arch_option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="architecture argument override (repeatable, JSON value), e.g. "
        "normalize=false for fracking's raw CNN3 output",
    )
    p.add_argument(
        "--average",
        nargs="+",
        default=None,
        metavar="CKPT",
        help="do not train: write the uniform average of these checkpoints' weights (runs "
        "fine-tuned from one init; a model soup) to --out",
    )
    p.add_argument(
        "--eval_only",
        action="store_true",
        help="do not train: evaluate the existing --out weights on --eval and "
        "(re)write the sidecar from the checkpoint's metadata",
    )
    args = p.parse_args(argv)
    setup_logging()
    with cli_errors("pipelines.train"):
        return _main(p, args, argv)


def _command(argv: list[str] | None) -> str:
    """The command line recorded in the checkpoint and sidecar (``argv``, else ``sys.argv``)."""
    args = argv if argv is not None else sys.argv[1:]
    return "python -m pipelines.train " + " ".join(shlex.quote(a) for a in args)


def average(args: argparse.Namespace, out: Path, argv: list[str] | None) -> dict:
    """``--average``: the checkpoints' weight average to ``out`` with its sidecar."""
    from descriptors.models import average_checkpoints

    command = _command(argv)
    average_checkpoints(args.average, out, meta={"command": command}, recipe=args.recipe)
    sidecar = {"recipe": args.recipe, "command": command, "average_of": list(args.average)}
    atomic_write_text(out.with_suffix(".json"), json.dumps(sidecar, indent=2, default=str))
    print(json.dumps(sidecar, indent=2))
    return sidecar


def _main(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> dict:
    """:func:`main` after parsing, under the one-line error handler."""
    recipe = get_recipe(args.recipe, quick=args.quick)
    over: dict = {}
    if args.batch_size:
        over["batch_size"] = args.batch_size
    if args.lr is not None:
        over["lr"] = args.lr
    if args.variant is not None:
        over["variant"] = args.variant
    over.update(check_options(recipe, _key_values(p, "--option", args.option, parse_json=False)))
    if args.photos is not None:
        from descriptors.data.photos import find_photos

        find_photos(args.photos)
        over["photos"] = str(Path(args.photos).expanduser())
    if over:
        recipe = recipe.with_options(**over)
    arch_over = _key_values(p, "--arch_option", args.arch_option)
    if arch_over:
        from dataclasses import replace

        recipe = replace(recipe, arch_kwargs={**recipe.arch_kwargs, **arch_over})
    data_root = Path(args.data or recipe.default_data)
    out = Path(args.out) if args.out else default_out(args.recipe)
    if args.eval:
        _check_eval(args.eval_data, args.eval)
    if args.average:
        return average(args, out, argv)
    if args.eval_only:
        if not out.is_file():
            raise InputError(f"--eval_only: no weights at {out} (give --out)")
        sidecar = eval_only(out, Path(args.eval_data), args.eval or "test")
        print(json.dumps(sidecar, indent=2, default=str))
        return sidecar
    if args.resume:
        check_resume(out.with_name(out.name + ".ckpt"), recipe)
    command = _command(argv)
    res = train(
        recipe,
        data_root,
        out,
        split=args.train,
        steps=args.steps,
        seed=args.seed,
        resume=args.resume,
        device=args.device,
        ckpt_every=args.ckpt_every,
        meta={"command": command},
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return res
    sidecar = {
        "recipe": args.recipe,
        "command": command,
        "data": recipe.describe_data(data_root / args.train),
        "quick": args.quick,
        "options": {
            k: v
            for k, v in options_dict(recipe.options).items()
            if isinstance(v, (int, float, str, bool))
        },
        "lr": recipe.lr,
        "optimizer": recipe.optimizer,
        **res,
    }
    if args.eval:
        eval_root = Path(args.eval_data)
        sidecar["metrics"] = {args.eval: evaluate_weights(out, eval_root, args.eval)}
        sidecar["eval_data"] = str(eval_root / args.eval)
        print(
            f"{args.recipe} on {eval_root / args.eval}: "
            + ", ".join(
                f"{k}={v:.4f}"
                for k, v in sidecar["metrics"][args.eval].items()
                if isinstance(v, float)
            )
        )
        if args.recipe == "wlrn":
            from descriptors.recipe_defs.wlrn import heldout_bag_auc

            # always the TEST-photo bags: another --eval split name (e.g. fountain-P11) would
            # make ensure_bags generate bags of the TRAIN photos under that name
            sidecar["metrics"]["bags"] = heldout_bag_auc(out, Path(args.bags_data), "test")
            print(f"wlrn held-out bag-pair ROC-AUC {sidecar['metrics']['bags']['bag_auc']:.4f}")
    atomic_write_text(out.with_suffix(".json"), json.dumps(sidecar, indent=2, default=str))
    print(json.dumps(res, indent=2, default=str))
    return sidecar


if __name__ == "__main__":
    main()
