"""Ablation: every training recipe and its controls, same step budget, one PhotoTour test table.

    python -m pipelines.ablation [--steps N] [--quick] [--rows hardnet sdb ...] [--data native]

Rows (``ROWS``):

- ``sift``: OpenCV SIFT on the patch (``descriptors.registry.load('sift')``), no training;
- ``untrained``: the L2-Net body at its random initialisation (seeded), no training;
- ``hardnet``: L2-Net + hardest-in-batch triplet margin (synthetic PhotoTour train split);
- ``hardnet-random``: control — the same with a *random* in-batch negative instead of the hardest
  (recipe option ``negatives='random'``): what hard-negative mining buys;
- ``hndesc``: the paper's AP loss on self-supervised two-homography / stylised pairs
  (``descriptors.data.pairs``): what the label-free data costs or buys against 3D-point labels;
- ``hndesc-triplet``: the same pairs with the hardest-in-batch triplet loss (the first version's
  recipe): what the AP loss buys;
- ``sdb``: the same data as hardnet, difficulty-balanced ExpTeacher loss + annealing: what the
  loss buys;
- ``wlrn``: the 32x32 -> 64 net from weakly-labelled bags (its own bag data);
- ``fracking-R1/1``, ``-R1/2``, ``-R2/2``, ``-R4/4``: CNN3 + hinge embedding with fracking pools
  of R_P x and R_N x the back-propagated batch (1/1 = no mining).
Optional rows (``--rows``): ``sdb-ema`` (EMA teacher), ``sdb-noteacher`` (w = 1: the teacher's
contribution), ``sdb-triplet`` (stage 2 with the HardNet hinge).

Every trained row uses the same number of steps (``--steps``; default 200 with ``--quick``,
else 20,000) and the recipe's own batch size and optimizer (``--quick``: the CPU-sized ones).
``--batch-size`` sets one batch size for the pair-based rows;
``--data phototour|pairs`` puts the pair-based rows (hardnet*, hndesc, sdb*) on one common
stream instead of their native data (``native``, the default).

Evaluation: the held-out synthetic PhotoTour test split (``<data-root>/test``, TEST photos
only; generated on first use) or, with ``--eval-data``, any Brown-layout folder (e.g. the real
fountain-P11 patches of ``pipelines.make_patches``), with
``descriptors.phototour_eval.evaluate_pairs``: FPR95, PR-AUC and CMC@1 (``--eval-pairs N``: the
first N pairs of the m50 list).

Real data (the command is in README, "Real data"): ``--train-data DIR`` trains the patch rows
(hardnet*, sdb*, fracking*) on a folder of Brown scenes, ``--photos DIR`` gives hndesc its photos
and ``--scenes DIR`` gives wlrn its real weak-label scenes (``descriptors.data.real_bags``).

Outputs under ``--out`` (default ``outputs/ablation``): ``ablation.json`` (table, training
logs, options), ``pr_curves.png`` (precision-recall of every row on the test pairs) and the
trained weights in ``weights/``.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from descriptors import tables
from descriptors.util import atomic_write, setup_logging, write_json
from localize.cli import ArgumentParser, cli_errors, nonneg_int, output_dir, positive_int
from localize.cli import device as device_arg

logger = logging.getLogger(__name__)

default_conf: dict[str, Any] = {
    "out": "outputs/ablation",
    "data_root": "datasets/phototour-synth",
    "eval_split": "test",
    "steps_quick": 200,
    "steps_full": 20_000,
    "seed": 0,
}


@dataclass
class Row:
    """One line of the table: a recipe (or None for an untrained / hand-crafted baseline)."""

    name: str
    recipe: str | None  # registered recipe name; None = no training
    overrides: dict = field(default_factory=dict)
    note: str = ""
    pair_based: bool = False  # consumes (a, p) batches (for --data)


#: sdb rows train hardnet's network on hardnet's augmentation, so the row isolates the loss
SDB_LIKE_HARDNET: dict = {"arch": "l2net", "jitter": False}
ROWS: list[Row] = [
    Row("sift", None, note="OpenCV SIFT on the patch"),
    Row("untrained", None, note="L2-Net at random init"),
    Row("hardnet", "hardnet", note="hardest-in-batch triplet", pair_based=True),
    Row(
        "hardnet-random",
        "hardnet",
        {"negatives": "random"},
        note="control: random in-batch negative",
        pair_based=True,
    ),
    Row("hndesc", "hndesc", note="self-supervised pairs + AP loss (the paper's)", pair_based=True),
    Row(
        "hndesc-triplet",
        "hndesc",
        {"loss": "triplet"},
        note="self-supervised pairs + hardest triplet (the first version)",
        pair_based=True,
    ),
    Row("sdb", "sdb", {**SDB_LIKE_HARDNET}, note="ExpTeacher + annealing", pair_based=True),
    Row("wlrn", "wlrn", note="weakly-labelled bags"),
    Row("fracking-R1/1", "fracking", {"r_p": 1, "r_n": 1}, note="control: no mining"),
    Row("fracking-R1/2", "fracking", {"r_p": 1, "r_n": 2}, note="fracking R_P/R_N = 1/2"),
    Row("fracking-R2/2", "fracking", {"r_p": 2, "r_n": 2}, note="fracking R_P/R_N = 2/2"),
    Row("fracking-R4/4", "fracking", {"r_p": 4, "r_n": 4}, note="fracking R_P/R_N = 4/4"),
]
OPTIONAL_ROWS: list[Row] = [
    Row(
        "sdb-ema",
        "sdb",
        {**SDB_LIKE_HARDNET, "teacher": "ema"},
        note="EMA teacher",
        pair_based=True,
    ),
    Row(
        "sdb-noteacher",
        "sdb",
        {**SDB_LIKE_HARDNET, "teacher": "none"},
        note="control: weight 1",
        pair_based=True,
    ),
    Row(
        "sdb-triplet",
        "sdb",
        {**SDB_LIKE_HARDNET, "stage2_loss": "triplet"},
        note="stage 2 hinge",
        pair_based=True,
    ),
]
ALL_ROWS = {r.name: r for r in ROWS + OPTIONAL_ROWS}


# ------------------------------------------------------------------------------------ helpers
TABLE_METRICS = ("fpr95", "pr_auc", "cmc1")  # ``evaluate_pairs`` keys shown in the table


def build_recipe(row: Row, quick: bool, data_mode: str, batch_size: int | None = None) -> Any:
    """The row's Recipe with its overrides and, for ``--data``, a common batch stream."""
    from descriptors.recipes import get_recipe

    r = get_recipe(row.recipe, quick=quick).with_options(**row.overrides)
    if batch_size and row.pair_based:
        r = r.with_options(batch_size=int(batch_size))
    if data_mode == "native" or not row.pair_based:
        return r
    if data_mode == "pairs":
        from descriptors.recipe_defs import hndesc

        h = get_recipe("hndesc", quick=quick)
        if row.recipe == "sdb":  # sdb's own pair stream, with HNDesc's pair geometry
            return r.with_options(data="pairs", pair=dict(h.options.pair))
        if row.recipe == "hndesc":
            return r

        def pair_data(rr: Any, data_dir: Path, seed: int) -> Any:
            """hndesc's pair stream (its options) at this recipe's batch size."""
            return hndesc.pair_data(replace(h, batch_size=rr.batch_size), data_dir, seed)

        if hasattr(r.options, "data"):  # hardnet: its data option names the stream
            return r.with_options(make_data=pair_data, data="pairs")
        return r.with_options(make_data=pair_data)
    if data_mode == "phototour":
        if row.recipe == "hndesc":
            from descriptors.recipe_defs.hardnet import phototour_pairs

            return r.with_options(make_data=phototour_pairs)
        if row.recipe == "sdb":
            return r.with_options(data="phototour")
        return r
    raise ValueError(f"--data must be native, phototour or pairs, got '{data_mode}'")


def evaluate(extractor: Any, data: Any) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """``descriptors.phototour_eval.evaluate_pairs`` numbers and the PR curve (precision, recall)."""
    from descriptors.metrics import pr_curve
    from descriptors.phototour_eval import evaluate_pairs

    raw = evaluate_pairs(extractor, data, return_arrays=True, progress=False)
    prec, rec, _ = pr_curve(raw.pop("distances"), raw.pop("labels"))
    raw.pop("cmc", None)
    return raw, (prec, rec)


def plot_pr(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    metrics: dict[str, dict],
    path: Path,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    colors = plt.cm.tab20(np.linspace(0, 1, 20))
    for k, (name, (prec, rec)) in enumerate(curves.items()):
        auc = metrics.get(name, {}).get("pr_auc")
        ax.plot(
            rec,
            prec,
            color=colors[(2 * k) % 20 + (k // 10) % 2],
            linestyle=("-", "--", ":")[(k // 10) % 3],
            label=f"{name} (PR-AUC {auc:.3f})" if auc is not None else name,
        )
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def describe_data(recipe: Any) -> str:
    """Short name of the batch stream a recipe trains on (for the table)."""
    if hasattr(recipe.options, "data"):
        return str(recipe.options.data)
    fn = recipe.make_data.__name__
    if fn == "pair_data":
        return "pairs"
    if fn == "phototour_pairs" or recipe.default_data.endswith("phototour-synth"):
        return "phototour"
    return Path(recipe.default_data).name


def format_table(rows: list[dict]) -> str:
    def f(v: Any, nd: int = 4) -> str:
        return "-" if v is None else f"{v:.{nd}f}"

    head = ["row", "data", "steps", "batch", "FPR95", "PR-AUC", "CMC@1", "train s", "note"]
    body = [
        [
            r["name"],
            r.get("data", "-"),
            r.get("steps", 0),
            r.get("batch_size") or "-",
            f(r["metrics"]["fpr95"]),
            f(r["metrics"]["pr_auc"]),
            f(r["metrics"]["cmc1"]),
            f(r.get("train_seconds"), 0),
            r.get("note", ""),
        ]
        for r in rows
    ]
    return tables.format_table(head, body, align="llrrrrrrl")


# --------------------------------------------------------------------------------------- main
def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    p = ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help=f"training steps for every trained row (default {default_conf['steps_quick']}"
        f" with --quick, else {default_conf['steps_full']})",
    )
    p.add_argument("--quick", action="store_true", help="CPU-sized recipe defaults")
    p.add_argument(
        "--rows",
        nargs="+",
        default=None,
        choices=sorted(ALL_ROWS),
        help="subset / extra rows (default: the standard table)",
    )
    p.add_argument(
        "--data",
        default="native",
        choices=("native", "phototour", "pairs"),
        help="batch stream of the pair-based rows (native: each recipe's own)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="override the batch size of the pair-based rows (hardnet*, hndesc, sdb*)",
    )
    p.add_argument(
        "--data-root",
        default=default_conf["data_root"],
        help="synthetic PhotoTour root holding the evaluation split",
    )
    p.add_argument(
        "--eval-split",
        default=default_conf["eval_split"],
        help="split under --data-root to evaluate on (default: test)",
    )
    p.add_argument(
        "--out",
        default=default_conf["out"],
        type=output_dir,
        help="folder for ablation.json, pr_curves.png and weights/ (default: outputs/ablation)",
    )
    p.add_argument(
        "--seed",
        type=nonneg_int,
        default=default_conf["seed"],
        help="training seed of every row (and of the untrained net's init)",
    )
    p.add_argument(
        "--device",
        default=None,
        type=device_arg,
        help="torch device (default: cuda if present, else cpu)",
    )
    p.add_argument(
        "--eval-data", default=None, help="Brown folder to evaluate on (instead of the split)"
    )
    p.add_argument(
        "--eval-pairs",
        type=positive_int,
        default=None,
        help="evaluate on the first N pairs of the m50 list only",
    )
    p.add_argument(
        "--train-data",
        default=None,
        help="folder of Brown scenes the patch rows (hardnet*, sdb*, fracking*) train on",
    )
    p.add_argument("--photos", default=None, help="photo folder for the hndesc rows")
    p.add_argument("--scenes", default=None, help="real scenes root for the wlrn row")
    p.add_argument("--no-progress", action="store_true", help="no tqdm training bars")
    return p.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> dict:
    """Command line; errors exit 2 with one line ``pipelines.ablation: <message>``."""
    args = _parse_args(argv)
    setup_logging()
    with cli_errors("pipelines.ablation"):
        return _main(args)


def _main(args: argparse.Namespace) -> dict:
    """:func:`main` after parsing."""
    from descriptors.data.phototour import read_phototour
    from descriptors.data.phototour_synth import ensure_synthetic_phototour
    from descriptors.models import build_model, save_checkpoint
    from descriptors.recipes import options_dict
    from descriptors.registry import load
    from descriptors.train import train

    steps = (
        args.steps
        if args.steps is not None
        else (default_conf["steps_quick"] if args.quick else default_conf["steps_full"])
    )
    out = Path(args.out)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    data_root = Path(args.data_root)
    eval_dir = Path(args.eval_data) if args.eval_data else data_root / args.eval_split
    if not args.eval_data and not (eval_dir / "info.txt").is_file():
        ensure_synthetic_phototour(data_root)
    test = read_phototour(eval_dir, progress=False)
    if args.eval_pairs:
        test.matches = test.matches[: args.eval_pairs]
    rows = [ALL_ROWS[n] for n in args.rows] if args.rows else list(ROWS)

    results: list[dict] = []
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for row in rows:
        rec: dict[str, Any] = {
            "name": row.name,
            "recipe": row.recipe,
            "note": row.note,
            "overrides": row.overrides,
        }
        t0 = time.time()
        if row.recipe is None:
            if row.name == "sift":
                ext = load("sift")
                rec.update(data="-", steps=0)
            else:
                torch.manual_seed(args.seed)
                model = build_model("l2net").eval()
                path = out / "weights" / "untrained.pt"
                save_checkpoint(
                    path, model, "l2net", {}, "untrained", 0, meta={"seed": args.seed}, half=False
                )
                ext = load(str(path), device=args.device)
                rec.update(data="-", steps=0, weights=str(path))
        else:
            recipe = build_recipe(row, args.quick, args.data, args.batch_size)
            train_root, split = None, "train"
            if row.recipe == "hndesc" and args.photos:
                recipe = recipe.with_options(photos=str(args.photos))
            elif row.recipe == "wlrn" and args.scenes:
                recipe = recipe.with_options(scenes=str(args.scenes), schedule="fixed")
                train_root, split = out / "bags-real", ""
            elif row.recipe in ("hardnet", "sdb", "fracking") and args.train_data:
                train_root, split = Path(args.train_data), ""
            path = out / "weights" / (row.name.replace("/", "_") + ".pt")
            data_desc = describe_data(recipe)
            logger.info(
                "training %s (%s, %d steps, batch %d)",
                row.name,
                row.recipe,
                steps,
                recipe.batch_size,
            )
            tr = train(
                recipe,
                train_root,
                path,
                split=split,
                steps=steps,
                seed=args.seed,
                device=args.device,
                ckpt_every=0,
                progress=not args.no_progress,
                meta={"pipeline": "ablation", "row": row.name},
            )
            ext = load(str(path), device=args.device)
            rec.update(
                data=str(train_root or getattr(recipe.options, "photos", None) or data_desc),
                steps=tr["steps"],
                batch_size=tr["batch_size"],
                train_seconds=tr["seconds"],
                loss_first=tr.get("loss_first"),
                loss_last=tr.get("loss_last_mean"),
                weights=str(path),
                options={
                    k: v
                    for k, v in options_dict(recipe.options).items()
                    if isinstance(v, (int, float, str, bool, type(None)))
                },
            )
        raw, curves[row.name] = evaluate(ext, test)
        rec["metrics"] = {k: float(raw[k]) for k in TABLE_METRICS}
        rec["metrics_raw"] = {k: v for k, v in raw.items() if isinstance(v, (int, float))}
        rec["eval_seconds"] = round(time.time() - t0 - (rec.get("train_seconds") or 0), 1)
        results.append(rec)
        logger.info("%s: %s", row.name, rec["metrics"])

    table = format_table(results)
    print(table)
    summary = {
        "pipeline": "ablation",
        "steps": steps,
        "quick": args.quick,
        "data_mode": args.data,
        "seed": args.seed,
        "eval": str(eval_dir),
        "eval_pairs": int(len(test.matches)),
        "metrics_source": "descriptors.phototour_eval.evaluate_pairs",
        "rows": results,
        "table": table,
    }
    write_json(out / "ablation.json", summary)
    if curves:
        plot_pr(
            curves,
            {r["name"]: r["metrics"] for r in results if "metrics" in r},
            out / "pr_curves.png",
            f"{eval_dir.name}: {steps} steps{' (quick)' if args.quick else ''}",
        )
    print(f"wrote {out / 'ablation.json'} and {out / 'pr_curves.png'}")
    return summary


if __name__ == "__main__":
    main()
