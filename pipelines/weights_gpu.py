"""Train all five recipes on real data on ONE GPU, then measure them on real photos.

    python -m pipelines.weights_gpu --shared ../shared/data --patches PATCH_ROOT \
        [--photos PHOTO_DIR] [--out outputs/weights-gpu] [--steps N] [--device cuda]

``PATCH_ROOT`` holds Brown-layout patch sets built by ``pipelines.make_patches`` (one folder per
set, e.g. ``entry-P10-r800``, ``sceaux_castle-r1024``; a set with a ``DONE`` file next to it
counts as finished: when any set has one, only those are used). ``PHOTO_DIR`` (default: a folder
of links this script makes under ``--out`` to ``<shared>/photos``, ``<shared>/strecha/entry-P10/
images`` and ``<shared>/collections/*/images``) feeds hndesc; wlrn's weak labels come from
``<out>/scenes`` (entry-P10, each collection, the loose shared photos). Held-out data
(fountain-P11, the wormhole / graffiti sequences, the image pairs) is never read for training.

Each recipe runs its full (published) configuration, ``quick=False``, with the step count of
:data:`GPU_STEPS` (sized so the five runs together take about 12 minutes on one H100; these are
estimates, not measured here) and writes ``<out>/<recipe>.pt`` + ``.json`` through
``pipelines.train``; then ``benchmarks/real_matching.py`` measures the five checkpoints against
SIFT / RootSIFT / the shipped weights and writes ``<out>/real_matching/real_matching.json`` and
``<out>/real_matching.txt``. ``--steps N`` / ``--batch_size B`` override every recipe's (a CPU
smoke run: ``--steps 2 --batch_size 32 --device cpu --sequences graffiti``). Nothing under
``weights/`` is touched: copy a checkpoint there only if it beats the shipped one on the real
benchmark. Not here: the later stages of the shipped CPU weights (``make weights``: hardnet's and
sdb's pair stages, sdb's weight average, hndesc's and wlrn's perspective stages).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from descriptors.util import atomic_write_text, setup_logging, write_json

logger = logging.getLogger("weights_gpu")

#: steps per recipe at the full published batch (about 12 min for all five on one H100, estimated)
GPU_STEPS: dict[str, int] = {
    "hardnet": 3000,
    "sdb": 1500,
    "hndesc": 1000,
    "fracking": 3000,
    "wlrn": 2000,
}
#: per-recipe extra ``pipelines.train`` arguments: hndesc's pool is refilled more slowly so the
#: CPU pair rendering (~0.2 s per pair) does not starve the GPU, its positives are re-detected
#: (``PairConf.redetect``) and its perspective is stronger than the default (0.6: the CPU stages
#: 0.4 -> 0.8 lifted held-out matching); fracking standardises each patch (``input_norm=patch``:
#: what lifted the CPU-trained net on wormhole and at night) with the recipe's own 8 / 8 mining
#: and lr 0.01; wlrn learns from the real weak-label scenes with the fixed schedule (few scenes
#: make a poor validation split)
GPU_ARGS: dict[str, list[str]] = {
    "hndesc": [
        "--option",
        "pool_size=200",
        "--option",
        "new_per_batch=1",
        "--option",
        "refresh_per_batch=0.25",
        "--option",
        "pair_redetect=true",
        "--option",
        "pair_max_keypoints=600",
        "--option",
        "pair_homography_strength=0.6",
    ],
    "fracking": ["--arch_option", "input_norm=patch"],
    "wlrn": ["--option", "schedule=fixed"],
}


def patch_sets(root: Path) -> list[Path]:
    """Finished Brown patch sets under ``root`` (those with ``DONE`` if any has one)."""
    sets = sorted(d for d in root.iterdir() if (d / "info.txt").is_file())
    done = [d for d in sets if (d / "DONE").is_file()]
    if not sets:
        raise SystemExit(f"weights_gpu: {root}: no Brown patch set (a folder with info.txt)")
    return done or sets


def link_folder(out: Path, targets: dict[str, Path]) -> Path:
    """``out`` with one symlink per existing target (a training root, photo folder or photo)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, target in targets.items():
        if target.exists():
            link = out / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target.resolve(), target_is_directory=target.is_dir())
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shared", type=Path, required=True, help="shared data folder")
    p.add_argument("--patches", type=Path, required=True, help="folder of Brown patch sets")
    p.add_argument("--photos", type=Path, default=None, help="photo folder (default: see doc)")
    p.add_argument("--out", type=Path, default=Path("outputs/weights-gpu"))
    p.add_argument("--steps", type=int, default=None, help="override every recipe's steps")
    p.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="override every recipe's batch size (CPU smoke runs only)",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    p.add_argument("--recipes", nargs="*", default=list(GPU_STEPS), choices=list(GPU_STEPS))
    p.add_argument("--sequences", nargs="*", default=None, help="real_matching sequences")
    args = p.parse_args(argv)
    setup_logging()
    from pipelines import train as train_cli

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import real_matching

    out = args.out
    sets = patch_sets(args.patches)
    brown = link_folder(out / "patches", {d.name: d for d in sets})
    scene_dirs = {
        "entry-P10": args.shared / "strecha/entry-P10/images",
        **{c.name: c / "images" for c in sorted((args.shared / "collections").glob("*"))},
    }
    photos = args.photos or link_folder(
        out / "photos", {"opencv": args.shared / "photos", **scene_dirs}
    )
    # wlrn's scenes: each folder one scene, the loose shared photos grouped by name
    loose = {f.name: f for f in sorted((args.shared / "photos").glob("*")) if f.is_file()}
    scenes = link_folder(out / "scenes", {**scene_dirs, **loose})
    (out / "bags").mkdir(parents=True, exist_ok=True)
    summary: dict = {"patch_sets": [d.name for d in sets], "photos": str(photos), "runs": {}}
    for name in args.recipes:
        steps = args.steps or GPU_STEPS[name]
        argv_r = [
            "--recipe",
            name,
            "--steps",
            str(steps),
            "--out",
            str(out / f"{name}.pt"),
            "--ckpt_every",
            "0",
        ]
        if name in ("hardnet", "sdb", "fracking"):
            argv_r += ["--data", str(brown), "--train", ""]
        elif name == "wlrn":  # weak labels: photos of one scene match
            argv_r += ["--data", str(out / "bags"), "--train", "", "--option", f"scenes={scenes}"]
        else:  # hndesc: self-supervised from photos
            argv_r += ["--photos", str(photos)]
        argv_r += GPU_ARGS.get(name, [])
        if args.batch_size:
            argv_r += ["--batch_size", str(args.batch_size)]
        if args.device:
            argv_r += ["--device", args.device]
        t0 = time.time()
        res = train_cli.main(argv_r)
        summary["runs"][name] = {
            "steps": steps,
            "seconds": round(time.time() - t0, 1),
            "command": res.get("command"),
        }
        logger.info("%s: %d steps in %.0f s", name, steps, time.time() - t0)
    rows = [str(out / f"{n}.pt") for n in args.recipes]
    rm_argv = [
        "--shared",
        str(args.shared),
        "--only",
        "sift",
        "rootsift",
        *args.recipes,
        "--features",
        *rows,
        "--out",
        str(out / "real_matching"),
    ]
    if args.sequences:
        rm_argv += ["--sequences", *args.sequences]
    results = real_matching.main(rm_argv)
    atomic_write_text(out / "real_matching.txt", real_matching.format_table(results) + "\n")
    summary["real_matching"] = results
    summary["seconds_total"] = round(sum(r["seconds"] for r in summary["runs"].values()), 1)
    write_json(out / "summary.json", summary)
    print(
        f"weights_gpu: trained {', '.join(args.recipes)} in {summary['seconds_total']} s; "
        f"table in {out / 'real_matching.txt'}"
    )
    return summary


if __name__ == "__main__":
    main()
