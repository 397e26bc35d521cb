"""One-line errors for command-line entry points.

``with cli_errors("localize.extract_features"): ...`` turns the toolkit's own errors into one line
``<prog>: <message>`` on stderr and exit status 2 (argparse's status for bad input), instead of
a traceback. Known errors: :class:`localize.h5.H5Error`, :class:`localize.io.ImageReadError`,
:class:`localize.colmap.ColmapError`, ``descriptors.registry.DescriptorError``,
``descriptors.models.CheckpointError``, any ``FileNotFoundError``, and a ``ValueError`` raised
by our own code (its innermost frame is in ``localize``, ``descriptors`` or ``pipelines``).
Anything else (a bug) keeps its traceback; SIGTERM's exit 143 and Ctrl-C pass through.
:func:`run_cli` wraps a stage's ``cli()``: logging setup, one-line errors, result path on stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from descriptors.util import setup_logging

#: (module, class name) of the toolkit's error types, looked up lazily in ``sys.modules`` (an
#: error can only come from a module already imported; no torch import here)
KNOWN_ERRORS: tuple[tuple[str, str], ...] = (
    ("localize.h5", "H5Error"), ("localize.io", "ImageReadError"),
    ("localize.colmap_model", "ColmapError"), ("localize.data.roxford", "RevisitopError"),
    ("descriptors.registry", "DescriptorError"), ("descriptors.models", "CheckpointError"),
)
_OUR_PACKAGES = tuple(str(Path(__file__).resolve().parents[1] / p) for p in
                      ("localize", "descriptors", "pipelines"))


def _raised_by_us(e: BaseException) -> bool:
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_OUR_PACKAGES)


def is_known_error(e: BaseException) -> bool:
    """True for the error types listed in the module docstring."""
    if isinstance(e, FileNotFoundError):
        return True
    for mod, cls in KNOWN_ERRORS:
        t = getattr(sys.modules.get(mod), cls, None)
        if isinstance(t, type) and isinstance(e, t):
            return True
    return isinstance(e, ValueError) and _raised_by_us(e)


def one_line(e: BaseException) -> str:
    """First line of an exception's message (its type name when it has none)."""
    s = str(e).strip()
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        s = f"{e.filename}: {e.strerror}"
    return s.splitlines()[0] if s else type(e).__name__


@contextlib.contextmanager
def cli_errors(prog: str, status: int = 2) -> Iterator[None]:
    """Exit with ``status`` and ``<prog>: <message>`` on stderr on a known error."""
    try:
        yield
    except Exception as e:
        if not is_known_error(e):
            raise
        print(f"{prog}: {one_line(e)}", file=sys.stderr)
        raise SystemExit(status) from None


def run_cli(prog: str, run: Callable[[Any], Path], args: Any) -> Path:
    """A stage's command line: the one logging setup, ``run(args)`` under :func:`cli_errors`,
    then the written path printed on stdout (the CLI's only output there). Returns it."""
    setup_logging()
    with cli_errors(prog):
        out = run(args)
    print(out)
    return out


def positive_int(v: str) -> int:
    """argparse ``type=``: an integer >= 1 (else argparse's one-line usage error)."""
    try:
        x = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v!r}") from None
    if x < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {x}")
    return x


def positive_float(v: str) -> float:
    """argparse ``type=``: a finite number > 0 (else argparse's one-line usage error)."""
    try:
        x = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {v!r}") from None
    if not (x > 0 and x < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {v}")
    return x
