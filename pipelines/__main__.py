"""The ``descloc`` command: ``descloc <command> [options]`` runs ``python -m pipelines.<command>``
(or a stage of ``localize``), e.g. ``descloc aachen --features hardnet``, ``descloc train
--recipe sdb --quick``, ``descloc extract_features --help``."""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

#: command -> (module, entry function taking argv)
COMMANDS: dict[str, tuple[str, str]] = {
    **{
        name: (f"pipelines.{name}", "main")
        for name in (
            "aachen",
            "sfm",
            "train",
            "train_and_localize",
            "make_patches",
            "retrieval",
            "hpatches",
            "phototour",
            "ablation",
        )
    },
    **{
        name: (f"localize.{name}", "cli")
        for name in (
            "extract_features",
            "match_features",
            "pairs_from_exhaustive",
            "pairs_from_covisibility",
            "pairs_from_poses",
            "pairs_from_retrieval",
            "pairs_from_sequential",
            "reconstruction",
            "triangulation",
            "localize_sfm",
            "evaluate",
        )
    },
    "export": ("descriptors.export", "cli"),
}


def _usage() -> str:
    return (
        "usage: descloc <command> [options]   (descloc <command> --help for its options)\n"
        "commands: " + ", ".join(sorted(COMMANDS))
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the command's entry point with the remaining arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(f"descloc: unknown command {args[0]!r}\n{_usage()}", file=sys.stderr)
        return 2
    module, func = COMMANDS[args[0]]
    try:
        entry = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        print(f"descloc: command {args[0]!r} is not available in this version", file=sys.stderr)
        return 2
    sys.argv = [f"descloc {args[0]}", *args[1:]]
    entry(args[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
