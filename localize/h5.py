"""Crash-safe HDF5 entry files under :mod:`localize.io`: the write lock, entry states, the
in-place writer (:class:`H5Writer`), shard merging and repair.

Each entry we write carries ``attrs['complete']`` (uint8): 0 while written, 1 once committed
after an ``fsync``; readers skip incomplete entries, hloc ignores the attribute. The writer
holds ``fcntl.flock`` on ``<file>.lock``. The full contract (resume, SIGTERM = exit 143, hard
kills, :func:`repair_h5`) is in README.md ("File formats, crash safety").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from descriptors.util import ToolkitError, atomic_write

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

COMPLETE_ATTR = "complete"


class H5Error(ToolkitError, RuntimeError):
    """Missing / unreadable / corrupt HDF5 file, or a name or pair missing from it (one line)."""


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM while an :class:`H5Writer` is open (exit 143)."""


# ------------------------------------------------------------------------------------------
# Write lock (sidecar ``<file>.lock``)
# ------------------------------------------------------------------------------------------
def lock_path(path: PathLike) -> Path:
    """The lock sidecar of an output file: ``<file>.lock``."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        s = os.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        s = ""
    return s or "unknown"


def lock_holder(path: PathLike) -> str | None:
    """pid (as text) of the process holding the write lock of ``path``; None when unlocked."""
    lp = lock_path(path)
    try:
        fd = os.open(lp, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class FileLock:
    """Exclusive, non-blocking ``fcntl.flock`` on ``<path>.lock`` holding our pid.

    The kernel releases it when the process dies (a stale sidecar never blocks); the sidecar is
    removed on :meth:`release`. Raises :class:`H5Error` naming the file and the holder's pid.
    """

    def __init__(self, path: PathLike, busy: str | None = None):
        self.path = Path(path)
        self.lock_path = lock_path(self.path)
        self.fd: int | None = None
        self.busy = busy

    def acquire(self) -> None:
        if self.fd is not None:
            return
        for attempt in range(50):
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise H5Error(
                    f"cannot create lock file {self.lock_path} for {self.path}: {e.strerror}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                pid = _read_pid(fd)
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise H5Error(
                        f"cannot lock {self.path} ({self.lock_path}): {e.strerror}"
                    ) from None
                if attempt < 3:  # a reader probing the lock (lock_holder) holds it for a moment
                    time.sleep(0.05)
                    continue
                if self.busy is not None:
                    raise H5Error(
                        self.busy.replace("{pid}", pid).replace("{lock}", str(self.lock_path))
                    ) from None
                raise H5Error(
                    f"{self.path} is being written by another process (pid {pid}, "
                    f"lock {self.lock_path}): wait for it, or write separate files "
                    "(--shard i/K) and merge them"
                ) from None
            try:  # the previous holder may have unlinked the sidecar between our open and lock
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError as e:  # disk full: no 0-byte sidecar left behind
                with contextlib.suppress(OSError):
                    self.lock_path.unlink()
                os.close(fd)
                raise H5Error(
                    f"cannot write lock file {self.lock_path} for {self.path}: {e.strerror}"
                ) from None
            self.fd = fd
            return
        raise H5Error(f"cannot lock {self.path}: {self.lock_path} keeps being replaced")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.lock_path.unlink()  # before unlocking: nobody can lock the old inode after us
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def run_lock(folder: PathLike) -> FileLock:
    """The run lock of a pipeline's output folder, ``<folder>.lock`` NEXT to it (so wiping the
    folder never removes it): ``with run_lock(out): ...``. A second run on the same folder fails
    at once with one line naming the holder's pid; released (and the sidecar removed) on every
    exit path, dropped by the kernel if the holder dies."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(
        folder,
        busy=f"{folder} is in use by another run"
        " (pid {pid}, lock {lock}); "
        "wait for it to finish, or give another output folder",
    )


# ------------------------------------------------------------------------------------------
# HDF5 helpers
# ------------------------------------------------------------------------------------------
def first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def open_h5(path: PathLike, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning every failure into a one-line :class:`H5Error`."""
    path = Path(path)
    if mode == "r" and not path.is_file():
        raise H5Error(f"HDF5 file not found: {path}")
    try:
        return h5py.File(str(path), mode)
    except (OSError, ValueError) as e:
        msg = first_line(e)
        # HDF5's own lock: "unable to lock file, errno = 11" (not "sblock" of a truncated file)
        if "unable to lock file" in msg.lower():
            pid = lock_holder(path)
            who = f"pid {pid} (lock {lock_path(path)})" if pid else "another process"
            raise H5Error(
                f"cannot open HDF5 file {path}: it is being written by {who}; "
                "wait for that writer to finish"
            ) from None
        if "truncated file" in msg:
            raise H5Error(
                f"cannot open HDF5 file {path}: truncated ({msg}); copy it again, or recompute it"
            ) from None
        raise H5Error(f"cannot open HDF5 file {path} (corrupt or not HDF5): {msg}") from None


def attr_str(obj: h5py.File | h5py.Group, key: str) -> str | None:
    """Attribute ``key`` of a file or group as str (h5py gives bytes or str); None if absent."""
    v = obj.attrs.get(key)
    return None if v is None else (v.decode() if isinstance(v, bytes) else str(v))


def entry_state(g: h5py.Group) -> int | None:
    """``attrs['complete']`` of an entry group: 1 committed, 0 being written / interrupted,
    None for a foreign entry (hloc or another tool), which counts as complete for reading."""
    v = g.attrs.get(COMPLETE_ATTR)
    return None if v is None else int(np.asarray(v))


def entry_names(fd: h5py.File, path: PathLike, include_incomplete: bool = False) -> set[str]:
    """Group paths holding datasets; without ``include_incomplete`` those with complete=0 are
    left out."""
    parents: set[str] = set()

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            parents.add(name.rsplit("/", 1)[0] if "/" in name else "")

    try:
        fd.visititems(visit)
        if include_incomplete:
            return {p for p in parents if p}
        return {p for p in parents if p and entry_state(fd[p]) != 0}
    except (OSError, RuntimeError, KeyError) as e:
        raise H5Error(f"corrupt HDF5 file {path}: {first_line(e)}") from None


def list_h5_names(path: PathLike, include_incomplete: bool = False) -> list[str]:
    """Names of all groups that hold datasets (hloc ``list_h5_names``), sorted.

    For a features file these are the image names (``db/1.jpg``); for a matches file the pair keys.
    Entries whose writer was interrupted (``complete=0``) are left out unless
    ``include_incomplete``.
    """
    with open_h5(path) as fd:
        return sorted(entry_names(fd, path, include_incomplete))


def has_dataset(
    fd: h5py.File | h5py.Group, name: str, key: str, complete_only: bool = False
) -> bool:
    try:
        if not (name in fd and isinstance(fd[name], h5py.Group) and key in fd[name]):
            return False
        return not complete_only or entry_state(fd[name]) != 0
    except (KeyError, OSError, ValueError):
        return False


def incomplete_error(path: PathLike, what: str) -> H5Error:
    return H5Error(
        f"{path}: {what} is incomplete (its writer stopped before committing it); "
        "rerun the step that writes it to recompute it"
    )


def get_group(fd: h5py.File, name: str, path: PathLike) -> h5py.Group:
    try:
        g = fd[name]
    except KeyError:
        raise H5Error(f"{path}: no entry named {name!r}") from None
    except (OSError, RuntimeError) as e:
        raise H5Error(f"corrupt HDF5 file {path} at {name!r}: {first_line(e)}") from None
    if not isinstance(g, h5py.Group):
        raise H5Error(f"{path}: {name!r} is a dataset, expected a group")
    if entry_state(g) == 0:
        raise incomplete_error(path, f"entry {name!r}")
    return g


def read_dataset(g: h5py.Group, key: str, path: PathLike, name: str) -> np.ndarray:
    try:
        return g[key][()]
    except KeyError:
        raise H5Error(f"{path}: entry {name!r} has no dataset {key!r}") from None
    except (OSError, RuntimeError) as e:
        raise H5Error(f"corrupt HDF5 file {path} at {name}/{key}: {first_line(e)}") from None


def delete_entry(fd: h5py.File | h5py.Group, name: str) -> None:
    try:
        if name in fd:
            del fd[name]
    except (KeyError, OSError, RuntimeError) as e:
        raise H5Error(
            f"{fd.file.filename}: cannot delete damaged entry {name!r} "
            f"({first_line(e)}); rebuild the file with localize.h5.repair_h5"
        ) from None


def start_entry(dest: h5py.File | h5py.Group, name: str) -> h5py.Group:
    """Create an entry group marked ``complete=0`` (replacing any entry of that name)."""
    delete_entry(dest, name)
    grp = dest.create_group(name)
    grp.attrs[COMPLETE_ATTR] = np.uint8(0)
    return grp


def finish_entry(grp: h5py.Group) -> None:
    """Hand a fully written entry to its file's open :class:`H5Writer` (marked complete at the
    next commit); with no writer (a bare ``h5py.File``) flush and mark it now."""
    writer = _WRITERS.get(grp.file.filename)
    if writer is not None and writer.file is not None:
        writer._pending.append(grp.name)
    else:
        grp.file.flush()
        grp.attrs[COMPLETE_ATTR] = np.uint8(1)
    check_terminated()


# ------------------------------------------------------------------------------------------
# Writer: in place, locked, committed periodically
# ------------------------------------------------------------------------------------------
_WRITERS: dict[str, "H5Writer"] = {}  # h5py filename -> open writer (pending entries)
_SIGTERM = {"depth": 0, "previous": None, "fired": False}


def _on_sigterm(signum: int, frame: Any) -> None:
    """First SIGTERM: set a flag; the writer raises :class:`Terminated` at the next entry
    boundary (:func:`check_terminated`). A raise from inside a signal handler could land in a
    finaliser and be swallowed. A second SIGTERM raises at once."""
    if _SIGTERM["fired"]:
        raise Terminated(128 + signum)
    _SIGTERM["fired"] = True
    logger.warning("SIGTERM: finishing the current entry, committing, then exiting")


def check_terminated() -> None:
    """Raise :class:`Terminated` (exit 143) if SIGTERM arrived while a writer is open. Called
    by :meth:`H5Writer.maybe_commit` and after each entry; long loops may call it too."""
    if _SIGTERM["fired"] and _SIGTERM["depth"] > 0:
        raise Terminated(128 + signal.SIGTERM)


def _sigterm_enter() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    if _SIGTERM["depth"] == 0:
        try:
            _SIGTERM["previous"] = signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # not the main interpreter
            return False
        _SIGTERM["fired"] = False
    _SIGTERM["depth"] += 1
    return True


def _sigterm_exit() -> None:
    _SIGTERM["depth"] -= 1
    if _SIGTERM["depth"] == 0:
        prev = _SIGTERM["previous"]
        signal.signal(signal.SIGTERM, prev if prev is not None else signal.SIG_DFL)
        _SIGTERM["previous"] = None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class H5Writer:
    """Append to an HDF5 file in place, under a lock, committing entries crash-safely (see
    README.md, "File formats, crash safety").

    Usage::

        with H5Writer(path, commit_every_s=60) as w:   # locks path (<path>.lock), opens it 'a'
            for name in todo:
                write_features(w.file, name, feats)      # group complete=0, pending
                w.maybe_commit()                         # every commit_every_s: mark complete
        # closed: pending entries committed, lock released

    ``w.file`` is the open ``h5py.File`` (the real file). On an exception, Ctrl-C or SIGTERM
    inside the block the finished entries are committed, then the exception propagates
    (SIGTERM as :class:`Terminated`, exit status 143).
    """

    def __init__(self, path: PathLike, commit_every_s: float = 600.0):
        self.path = Path(path)
        self.commit_every_s = float(commit_every_s)
        self.file: h5py.File | None = None
        self._pending: list[str] = []
        self._lock = FileLock(self.path)
        self._signals = False
        self._last_commit = time.monotonic()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            if self.path.exists():
                # validate first so corruption is reported against the file's name
                with open_h5(self.path):
                    pass
            try:
                self.file = h5py.File(str(self.path), "a")
            except (OSError, ValueError) as e:
                raise H5Error(f"cannot write HDF5 file {self.path}: {first_line(e)}") from None
        except BaseException:
            self._lock.release()
            raise
        _WRITERS[self.file.filename] = self
        self._signals = _sigterm_enter()
        self._last_commit = time.monotonic()

    def __enter__(self) -> "H5Writer":
        self._open()
        return self

    def names(self, include_incomplete: bool = False) -> set[str]:
        """Group paths holding datasets in the open file (image names / pair keys); entries not
        yet committed (``complete=0``) only with ``include_incomplete``."""
        assert self.file is not None
        return entry_names(self.file, self.path, include_incomplete)

    @property
    def pending(self) -> int:
        """Entries written but not yet committed."""
        return len(self._pending)

    def commit(self, sync: bool = True) -> None:
        """Flush, (``sync``) fsync, mark pending entries ``complete=1``, flush again."""
        if self.file is None:
            return
        if self._pending:
            self.file.flush()
            if sync:
                _fsync(self.path)
            for name in self._pending:
                self.file[name].attrs[COMPLETE_ATTR] = np.uint8(1)
            self._pending.clear()
        self.file.flush()
        self._last_commit = time.monotonic()

    def maybe_commit(self) -> bool:
        """Commit when ``commit_every_s`` passed since the last commit. Returns True if it did."""
        check_terminated()
        if time.monotonic() - self._last_commit >= self.commit_every_s:
            self.commit()
            return True
        return False

    def close(self, exc_type: type[BaseException] | None = None) -> None:
        """Commit what is finished (no fsync: the data is in the OS page cache), close the file,
        release the lock. Raises a commit failure only when no other exception is in flight."""
        if self.file is None:
            return
        err: BaseException | None = None
        try:
            self.commit(sync=False)
        except BaseException as e:  # disk full, second Ctrl-C, ...
            err = e
            logger.error(
                "could not commit the finished entries of %s: %s", self.path, first_line(e)
            )
        finally:
            try:
                self.file.close()
            except Exception as e:
                logger.error("could not close %s cleanly: %s", self.path, first_line(e))
            for k in [k for k, v in _WRITERS.items() if v is self]:
                del _WRITERS[k]
            self.file = None
            if self._signals:
                _sigterm_exit()
                self._signals = False
            self._lock.release()
        if err is not None and exc_type is None:
            raise err

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.pending:
            logger.warning(
                "%s: saving %d finished entries after %s",
                self.path,
                self.pending,
                exc_type.__name__,
            )
        self.close(exc_type)


def merge_h5(sources: Iterable[PathLike], dest: PathLike, overwrite: bool = False) -> Path:
    """Copy every complete entry (image group / pair group) of ``sources`` into ``dest``.

    Used to join extraction shards. Entries already in ``dest`` are kept unless ``overwrite``.
    Returns ``dest``.
    """
    from localize.provenance import check_provenance, read_provenance  # it builds on this module

    dest = Path(dest)
    with H5Writer(dest) as w:
        have = w.names()
        for src in sources:
            with open_h5(src) as fs:
                want = read_provenance(fs)
                if want:  # one extractor per features file
                    check_provenance(w.file, want, source=src)
                for name in sorted(entry_names(fs, src)):
                    if name in have and not overwrite:
                        continue
                    delete_entry(w.file, name)
                    parent = name.rsplit("/", 1)[0] if "/" in name else None
                    if parent:
                        w.file.require_group(parent)
                    try:
                        fs.copy(fs[name], w.file, name=name)
                        w.file[name].attrs[COMPLETE_ATTR] = np.uint8(0)
                    except BaseException:
                        try:
                            delete_entry(w.file, name)
                        finally:
                            raise
                    finish_entry(w.file[name])
                    have.add(name)
    return dest


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``'i/K'`` or (i, K) -> (i, K) with 0 <= i < K; None stays None."""
    if shard is None:
        return None
    if isinstance(shard, str):
        try:
            i, k = (int(v) for v in shard.split("/"))
        except ValueError:
            raise ValueError(f"--shard must look like i/K (e.g. 0/4), got {shard!r}") from None
    else:
        i, k = shard
    if k < 1 or not 0 <= i < k:
        raise ValueError(f"bad shard {i}/{k}: need 0 <= i < K")
    return int(i), int(k)


def shard_path(path: PathLike, i: int, k: int) -> Path:
    """Shard ``i`` of ``k`` of an output file: ``<stem>.shard<i>of<k><suffix>``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.shard{i}of{k}{p.suffix}")


def merge_shards(
    path: PathLike, num_shards: int, overwrite: bool = False, remove: bool = False
) -> Path:
    """Join the shard files (:func:`shard_path`, i < ``num_shards``) of ``path`` into it
    (:func:`merge_h5`); ``remove`` deletes them afterwards. Missing shards raise
    FileNotFoundError naming them."""
    srcs = [shard_path(path, i, num_shards) for i in range(num_shards)]
    missing = [str(s) for s in srcs if not s.exists()]
    if missing:
        raise FileNotFoundError(f"missing shard files: {', '.join(missing)}")
    out = merge_h5(srcs, path, overwrite=overwrite)
    if remove:
        for s in srcs:
            s.unlink()
    return out


def repair_h5(path: PathLike) -> tuple[int, int]:
    """Rebuild a damaged file from its complete, readable entries (one copy, under the lock).

    Returns:
        (entries kept, entries dropped). Raises :class:`H5Error` when the file cannot be opened.
    """
    path = Path(path)
    lock = FileLock(path)
    lock.acquire()
    kept = dropped = 0
    try:
        with atomic_write(path) as tmp, open_h5(path) as fs, h5py.File(str(tmp), "w") as fo:
            for name in sorted(entry_names(fs, path, include_incomplete=True)):
                try:
                    g = fs[name]
                    if entry_state(g) == 0:
                        raise H5Error("incomplete")
                    for k in g:
                        if isinstance(g[k], h5py.Dataset):
                            g[k][()]
                    if "/" in name:
                        fo.require_group(name.rsplit("/", 1)[0])
                    fs.copy(g, fo, name=name)
                    kept += 1
                except (H5Error, OSError, RuntimeError, KeyError, ValueError) as e:
                    dropped += 1
                    logger.warning("%s: dropping entry %r (%s)", path, name, first_line(e))
    finally:
        lock.release()
    logger.info("repaired %s: kept %d entries, dropped %d", path, kept, dropped)
    return kept, dropped
