"""One-line errors and shared argument types for command-line entry points.

``with cli_errors("localize.extract_features"): ...`` turns the toolkit's own errors into one line
``<prog>: <message>`` on stderr and exit status 2 (argparse's status for bad input), instead of
a traceback. Reported in one line (:func:`is_known_error`):

- every :class:`ToolkitError` (``descriptors.util``; ``H5Error``, ``ImageReadError``,
  ``ColmapError``, ``RevisitopError``, ``DescriptorError``, ``CheckpointError``, ``ExportError``,
  the dataset readers' errors and :class:`InputError` derive from it);
- faults of the environment: any ``OSError`` (missing file, disk full ``ENOSPC``, read-only
  ``EROFS``, ``EISDIR``, ``ENOTDIR``, permissions) and text that is not valid UTF-8
  (``UnicodeError``);
- a ``ValueError`` raised by our own code (its innermost frame is in ``localize``,
  ``descriptors`` or ``pipelines``): older raise sites not yet converted to :class:`InputError`.

Anything else (a bug) keeps its traceback; so does every error under ``--verbose`` (added to
each parser by :class:`ArgumentParser`). SIGTERM's exit 143 and Ctrl-C pass through.
:func:`run_cli` wraps a stage's ``cli()``: logging setup, one-line errors, result path on stdout.

Argument types (``type=`` for argparse, checked at parse time, one-line usage error, exit 2):
:func:`positive_int`, :func:`nonneg_int`, :func:`positive_float`, :func:`nonneg_float`,
:func:`finite_float`, :func:`existing_file`, :func:`existing_dir`, :func:`output_file`,
:func:`output_dir` (writable, checked before any work), :func:`device`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from descriptors.util import InputError, ToolkitError, setup_logging

__all__ = [
    "ToolkitError",
    "InputError",
    "ArgumentParser",
    "cli_errors",
    "run_cli",
    "is_known_error",
    "one_line",
    "check_writable",
]

_OUR_PACKAGES = tuple(
    str(Path(__file__).resolve().parents[1] / p) for p in ("localize", "descriptors", "pipelines")
)
#: set by :class:`ArgumentParser` when ``--verbose`` is given: errors keep their traceback
VERBOSE = {"on": False}


def _raised_by_us(e: BaseException) -> bool:
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_OUR_PACKAGES)


def is_known_error(e: BaseException) -> bool:
    """True for the errors listed in the module docstring (reported as one line)."""
    if isinstance(e, (ToolkitError, OSError, UnicodeError)):
        return True
    return isinstance(e, ValueError) and _raised_by_us(e)


def one_line(e: BaseException) -> str:
    """First line of an exception's message (its type name when it has none)."""
    s = str(e).strip()
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        s = f"{e.filename}: {e.strerror}"
    elif isinstance(e, UnicodeDecodeError):
        s = (
            f"text is not valid {e.encoding} (byte {e.object[e.start : e.start + 1]!r} at "
            f"offset {e.start})"
        )
    elif isinstance(e, UnicodeEncodeError):
        s = f"name {e.object!r} is not valid {e.encoding}; rename the file"
    return s.splitlines()[0] if s else type(e).__name__


@contextlib.contextmanager
def cli_errors(prog: str, status: int = 2) -> Iterator[None]:
    """Exit with ``status`` and ``<prog>: <message>`` on stderr on a known error (not under
    ``--verbose``, which keeps the traceback)."""
    try:
        yield
    except Exception as e:
        if VERBOSE["on"] or not is_known_error(e):
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


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are ONE line ``<prog>: <message>`` (exit
    2; ``--help`` shows the usage), with ``--verbose`` (tracebacks instead of one-line errors).
    ``prog`` defaults to the calling module's dotted name (``localize.extract_features``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        if "prog" not in kwargs and not args:
            g = sys._getframe(1).f_globals
            spec = g.get("__spec__")
            name = spec.name if spec is not None else g.get("__name__", "")
            if name and name != "__main__":
                kwargs["prog"] = name
        kwargs.setdefault("conflict_handler", "resolve")  # a CLI may define its own --verbose
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--verbose",
            action="store_true",
            dest="_cli_verbose",
            help="show the full traceback of an error instead of one line",
        )

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(
            2,
            f"{self.prog}: {message.splitlines()[0] if message else 'bad arguments'} "
            "(see --help)\n",
        )

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, rest = super().parse_known_args(args, namespace)
        # taken out of the namespace (CLIs pass ``**vars(args)`` on); a CLI's own --verbose
        # (it replaces this one) turns tracebacks on too
        VERBOSE["on"] = bool(vars(ns).pop("_cli_verbose", False) or getattr(ns, "verbose", False))
        return ns, rest


# ------------------------------------------------------------------------------------------
# argparse types: one-line usage error (exit 2) at parse time
# ------------------------------------------------------------------------------------------
def _number(v: str, kind: type, want: str) -> Any:
    try:
        x = kind(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {want}, got {v!r}") from None
    if kind is float and not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected {want}, got {v}")
    return x


def positive_int(v: str) -> int:
    """argparse ``type=``: an integer >= 1."""
    x = _number(v, int, "an integer >= 1")
    if x < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {x}")
    return x


def nonneg_int(v: str) -> int:
    """argparse ``type=``: an integer >= 0."""
    x = _number(v, int, "an integer >= 0")
    if x < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {x}")
    return x


def positive_float(v: str) -> float:
    """argparse ``type=``: a finite number > 0."""
    x = _number(v, float, "a finite number > 0")
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {v}")
    return x


def nonneg_float(v: str) -> float:
    """argparse ``type=``: a finite number >= 0."""
    x = _number(v, float, "a finite number >= 0")
    if x < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {v}")
    return x


def finite_float(v: str) -> float:
    """argparse ``type=``: any finite number (no nan / inf)."""
    return _number(v, float, "a finite number")


def existing_file(v: str) -> Path:
    """argparse ``type=``: a path to an existing regular file."""
    p = Path(v)
    if not p.is_file():
        raise argparse.ArgumentTypeError(
            f"{v}: " + ("is a directory, expected a file" if p.is_dir() else "file not found")
        )
    return p


def existing_dir(v: str) -> Path:
    """argparse ``type=``: a path to an existing directory."""
    p = Path(v)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(
            f"{v}: " + ("is a file, expected a directory" if p.exists() else "directory not found")
        )
    return p


def check_writable(path: str | os.PathLike, is_dir: bool = False) -> Path:
    """Check that ``path`` (a file, or a folder with ``is_dir``) can be created or written:
    it is of the right kind if it exists, and its nearest existing ancestor is a writable folder.

    Raises:
        InputError naming the path and the problem (nothing is created).
    """
    p = Path(path)
    if p.exists():
        if is_dir and not p.is_dir():
            raise InputError(f"{p}: exists and is not a directory")
        if not is_dir and p.is_dir():
            raise InputError(f"{p}: is a directory, expected a file")
        if not os.access(p, os.W_OK | (os.X_OK if is_dir else 0)):
            raise InputError(f"{p}: not writable")
        if is_dir:
            return p
    parent = p.parent if not p.exists() or not is_dir else p
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{p}: cannot be created, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{p}: cannot be written, {parent} is not writable")
    return p


def _output(v: str, is_dir: bool) -> Path:
    try:
        return check_writable(v, is_dir)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def output_file(v: str) -> Path:
    """argparse ``type=``: a file we can create or overwrite (checked before any work)."""
    return _output(v, False)


def output_dir(v: str) -> Path:
    """argparse ``type=``: a folder we can create or write into (checked before any work)."""
    return _output(v, True)


def device(v: str) -> str:
    """argparse ``type=``: a torch device that exists here (``cpu``, ``cuda``, ``cuda:N``,
    ``mps``)."""
    import torch  # only when the argument is given

    try:
        d = torch.device(v)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown torch device {v!r} (cpu, cuda, cuda:N)"
        ) from None
    if d.type == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise argparse.ArgumentTypeError(f"{v}: no CUDA device on this machine")
        if d.index is not None and d.index >= n:
            raise argparse.ArgumentTypeError(f"{v}: only {n} CUDA device(s) (0..{n - 1})")
    elif d.type == "mps" and not (
        hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    ):
        raise argparse.ArgumentTypeError(f"{v}: MPS is not available on this machine")
    elif d.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"unsupported torch device {v!r} (cpu, cuda, cuda:N)")
    return v
