"""Two small things every package uses: atomic file writes and the one logging setup.

``descriptors`` is the lowest package (``localize`` and ``pipelines`` import it, never the reverse),
so the helpers that all of them share live here.

- :func:`atomic_write` / :func:`atomic_dir`: write to a temporary sibling, then ``os.replace``; a
  crash leaves either the old file or the new one, never half of one. One permission policy:
  files get ``0o666 & ~umask`` (what a plain ``open(path, 'w')`` gives), folders ``0o777 & ~umask``.
- :func:`write_json`: the one JSON writer (atomic, numpy / Path aware through
  :func:`json_default`); tables are :func:`descriptors.tables.format_table`.
- :class:`ToolkitError`: the one base class of the toolkit's own errors (bad input or a fault of
  the environment); ``localize.cli`` reports them as one line, exit status 2.
- :func:`setup_logging`: called once by each command-line entry point (never by library code);
  one format; the FAISS loader's import chatter is moved to DEBUG.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

LOG_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
LOG_DATEFMT = "%Y/%m/%d %H:%M:%S"
_NOISY_LOGGERS = ("faiss.loader", "faiss")


class ToolkitError(Exception):
    """Base class of the toolkit's own errors: a one-line message naming the file / argument
    and the problem (``localize.cli`` prints it and exits 2)."""


class InputError(ToolkitError, ValueError):
    """Bad input (an argument, a data file's content); a ``ValueError`` too."""


def merge_conf(
    default_conf: Mapping[str, Any], *overrides: Mapping[str, Any] | None, where: str
) -> dict[str, Any]:
    """The one way a stage merges its options: a copy of ``default_conf`` updated by each
    override in turn (None skipped). A key that ``default_conf`` lacks is an
    :class:`InputError` naming ``where`` and the key."""
    out = dict(default_conf)
    for o in overrides:
        if not o:
            continue
        unknown = sorted(set(o) - set(default_conf))
        if unknown:
            raise InputError(f"unknown {where} option(s): {unknown}")
        out.update(o)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fix_mode(path: Path, base: int) -> None:
    os.chmod(path, base & ~_umask())


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Context manager yielding a temporary path next to ``path``; on success it is renamed onto
    ``path`` (mode ``0o666 & ~umask``), on an exception it is removed and ``path`` is untouched.

    ``suffix`` (default: ``path``'s own suffix) keeps writers that look at the extension happy
    (``cv2.imwrite``, ``np.savez``, ``h5py``)::

        with atomic_write(out / "summary.json") as tmp:
            tmp.write_text(json.dumps(summary))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fix_mode(tmp_path, 0o666)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_default(o: Any) -> Any:
    """``json.dumps``' ``default`` of the toolkit: numpy integers / floats -> int / float, numpy
    arrays -> lists, anything else (``Path``, enums, ...) -> ``str(o)``."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, **kwargs: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`atomic_write_text`), values json
    cannot encode through :func:`json_default`; ``kwargs`` go to ``json.dumps`` (e.g.
    ``sort_keys``). Returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=json_default, **kwargs))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Context manager yielding an empty temporary folder next to ``path``; on success it replaces
    ``path`` (the old folder, if any, is removed only after the new one is in place), on an
    exception it is removed. ``overwrite=False`` raises FileExistsError if ``path`` exists."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        _fix_mode(tmp, 0o777)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def setup_logging(level: int | str = logging.INFO) -> None:
    """The one logging configuration (call it from a ``__main__`` / CLI entry point only).

    Idempotent: a second call only changes the level. FAISS's loader messages (which AVX build it
    found, the ``ModuleNotFoundError`` of the builds it did not) go to DEBUG. (Progress bars are
    tqdm's ``disable=None``: shown on a terminal only.)
    """
    level = logging.getLevelName(level) if isinstance(level, str) else level
    root = logging.getLogger()
    if not any(getattr(h, "_descloc", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
        handler._descloc = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level <= logging.DEBUG else logging.WARNING
        )
