"""hloc-compatible I/O: images, ``features.h5``, ``matches.h5``, ``pairs.txt``.

Files written here are readable by hloc (``hloc.utils.io``) and hloc's files are readable here.
Layouts (see /work/shared/FORMATS.md section 2):

features.h5
    one group per image, keyed by its relative name (``/`` inside the name makes nested groups,
    e.g. ``db`` -> ``1.jpg``), holding ``keypoints (N, 2)`` x, y (pixel centres at integers;
    float32 here, hloc may store float16) with an ``uncertainty`` attribute (float32 scalar),
    ``descriptors (D, N)`` float32 or float16 (TRANSPOSED, as hloc), ``scores (N,)``,
    ``image_size (2,)`` = original (w, h) int64, and ours ``scales (N,)`` (sigma = OpenCV
    ``KeyPoint.size / 2``, original-image pixels) and ``oris (N,)`` (radians, kornia convention,
    what ``descriptors.patches.extract_patches`` takes). Our entries also carry
    ``attrs['image_fingerprint']`` (:func:`image_fingerprint` of the image they were extracted
    from: size, mtime_ns, blake2b of its first and last 64 KiB); extraction recomputes an entry
    whose image changed. hloc ignores it; hloc's files have none (not checked).
matches.h5
    group ``names_to_pair(n0, n1)`` (``/`` inside names replaced by ``-``, joined by ``/``, hence
    nested) holding ``matches0 (N0,)`` (index into image 1's keypoints or -1; int32 here, int16 in
    hloc) and ``matching_scores0 (N0,)`` float16. Legacy files join with ``_``.
pairs.txt
    ``name0 name1`` per line, joined by ``\\n``, no trailing newline.

Every entry group we write also carries ``attrs['complete']`` (uint8): 0 while it is being
written, 1 once committed. hloc ignores the attribute; hloc's files have none.

Crash safety (how writes work)
------------------------------
:class:`H5Writer` appends IN PLACE (no copy of the file, ever) under an exclusive lock:

- lock: ``fcntl.flock`` on the sidecar ``<file>.lock`` (holds the writer's pid). A second writer
  of the same file fails at once with a one-line :class:`H5Error` naming the file and the
  holder's pid; the kernel drops the lock when the holder dies, so a stale sidecar never blocks.
  While a writer holds a file, HDF5's own lock makes readers in OTHER processes fail too;
  :func:`open_h5` then names the writer's pid instead of calling the file corrupt.
- entries: :func:`write_features` / :func:`write_matches` create the group with
  ``complete=0``, write all its datasets, and hand it to the writer as pending. A commit
  (every ``commit_every_s`` seconds via :meth:`H5Writer.maybe_commit`, and on close) flushes
  the file, ``fsync``-s it, sets ``complete=1`` on the pending groups and flushes again, so an
  entry is marked complete only after its data is on disk.
- resume: entries with ``complete=1`` are kept; entries with ``complete=0`` (ours, interrupted)
  are invisible to the readers (:func:`list_h5_names`, :func:`find_pair`, the ``get_*``
  functions raise a one-line "incomplete" error) and are deleted and recomputed when the name
  comes up again. FOREIGN entries (no attribute: hloc, or any other tool) are complete for
  reading; extraction resumes over a foreign features entry only if it holds ``keypoints`` and
  ``descriptors`` with matching N (otherwise it is recomputed, e.g. descriptors without
  keypoints), and matching over a foreign pair holding ``matches0``.
- exit: an exception, Ctrl-C (SIGINT) or SIGTERM commits every finished entry, closes the
  file, removes the lock sidecar and propagates; a half-written group is deleted first. While
  a writer is open in the main thread, SIGTERM finishes the current entry and then raises
  :class:`Terminated` (exit status 143) at the next entry boundary; a second SIGTERM raises at
  once.
- a hard kill (SIGKILL, OOM, power loss) loses the entries since the last commit (they stay
  ``complete=0`` and are recomputed); HDF5 has no journal, so if the kill hit the metadata of
  an earlier entry the file may need :func:`repair_h5` (copies its complete entries into a new
  file, once).
- deleting / replacing entries never shrinks the file (HDF5 does not reclaim space);
  ``h5repack`` or :func:`repair_h5` compacts it.

Every read error (missing, unreadable or corrupt HDF5, missing name/pair, NaN / inf in
keypoints, descriptors or matching scores) raises :class:`H5Error`, a one-line message naming
the file and the entry. Names read from list / pairs files must be relative POSIX paths inside
their root (:func:`check_name`); pairs whose hloc keys collide are refused
(:func:`check_pair_keys`). :func:`read_image` refuses truncated JPEG / PNG files.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import cv2
import h5py
import numpy as np

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

FEATURE_KEYS = ("keypoints", "descriptors", "scores", "image_size", "scales", "oris")
COMPLETE_ATTR = "complete"
#: attribute of a features entry: the fingerprint of the image it was extracted from
FINGERPRINT_ATTR = "image_fingerprint"
#: bytes hashed at each end of an image file by :func:`image_fingerprint`
FINGERPRINT_CHUNK = 64 * 1024


class H5Error(RuntimeError):
    """Missing / unreadable / corrupt HDF5 file, or a name or pair missing from it (one line)."""


class ImageReadError(RuntimeError):
    """An image file is missing or cannot be decoded (one line naming the file)."""


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM while an :class:`H5Writer` is open (exit 143)."""


# ------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------
def _truncation(data: bytes) -> str | None:
    """Why a JPEG / PNG byte string looks truncated, or None when it ends properly.

    JPEG: an EOI marker (FF D9) must follow the last start-of-scan (FF DA); FF D9 cannot occur
    inside entropy-coded data, so trailing padding or appended data still pass. PNG: an IEND
    chunk must follow the last IDAT. Other formats are not checked.
    """
    if data[:3] == b"\xff\xd8\xff":
        if data.rfind(b"\xff\xd9") < max(data.rfind(b"\xff\xda"), 2):
            return "truncated JPEG (no end-of-image marker FFD9 after the last scan)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if data.rfind(b"IEND") < max(data.rfind(b"IDAT"), 8):
            return "truncated PNG (no IEND chunk after the image data)"
    return None


def read_image(path: PathLike, grayscale: bool = True) -> np.ndarray:
    """Read an image with OpenCV (EXIF orientation ignored, as hloc).

    A JPEG without its end-of-image marker or a PNG without its IEND chunk (a truncated copy,
    which OpenCV would decode with a grey bottom part and only a warning on stderr) is refused.

    Returns:
        (H, W) uint8 if ``grayscale`` else (H, W, 3) uint8 RGB.
    Raises:
        ImageReadError naming the file when it does not exist, is truncated or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"cannot read image {path}: {e.strerror}") from None
    why = _truncation(data)
    if why is not None:
        raise ImageReadError(f"cannot use image {path}: {why}; copy it again")
    flags = (cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if image is None or image.size == 0:
        raise ImageReadError(f"cannot decode image {path} (corrupt or unsupported format)")
    if not grayscale:
        image = np.ascontiguousarray(image[:, :, ::-1])
    return image


def image_fingerprint(path: PathLike) -> str:
    """Cheap identity of an image file's current content, stored with its features.

    ``"size=<bytes> mtime_ns=<ns> blake2b=<hex>"``, the hash over the size and the first and
    last :data:`FINGERPRINT_CHUNK` bytes (two reads, whatever the file size). Any field
    changing (rewritten, truncated or touched file) makes the stored features stale.

    Raises:
        ImageReadError naming the file when it does not exist or cannot be read.
    """
    path = Path(path)
    try:
        st = path.stat()
        h = hashlib.blake2b(str(st.st_size).encode(), digest_size=16)
        with open(path, "rb") as f:
            h.update(f.read(FINGERPRINT_CHUNK))
            if st.st_size > FINGERPRINT_CHUNK:
                f.seek(max(FINGERPRINT_CHUNK, st.st_size - FINGERPRINT_CHUNK))
                h.update(f.read(FINGERPRINT_CHUNK))
    except FileNotFoundError:
        raise ImageReadError(f"image not found: {path}") from None
    except OSError as e:
        raise ImageReadError(f"cannot read image {path}: {e.strerror}") from None
    return f"size={st.st_size} mtime_ns={st.st_mtime_ns} blake2b={h.hexdigest()}"


def check_name(name: str, where: str) -> str:
    """Validate an image / query / pair name: a normalised relative POSIX path inside its root.

    Refuses empty names, absolute paths, and ``..``, ``.`` or empty components (``a//b``): names
    are joined to the image root and used as HDF5 group paths, where these would escape the root
    or not round-trip. Returns ``name``.

    Raises:
        ValueError ``"<where>: ..."`` (``where`` names the list file and line).
    """
    if not name:
        raise ValueError(f"{where}: empty image name")
    if name.startswith("/"):
        raise ValueError(f"{where}: image name {name!r} is absolute; names must be relative "
                         "paths inside the image root")
    parts = name.split("/")
    if ".." in parts:
        raise ValueError(f"{where}: image name {name!r} has a '..' component; names must stay "
                         "inside the image root")
    if any(p in ("", ".") for p in parts):
        raise ValueError(f"{where}: image name {name!r} is not a normalised relative path "
                         "(empty or '.' component)")
    return name


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

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.lock_path = lock_path(self.path)
        self.fd: int | None = None

    def acquire(self) -> None:
        if self.fd is not None:
            return
        for attempt in range(50):
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise H5Error(f"cannot create lock file {self.lock_path} for {self.path}: "
                              f"{e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                pid = _read_pid(fd)
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise H5Error(f"cannot lock {self.path} ({self.lock_path}): {e.strerror}") \
                        from None
                if attempt < 3:  # a reader probing the lock (lock_holder) holds it for a moment
                    time.sleep(0.05)
                    continue
                raise H5Error(f"{self.path} is being written by another process (pid {pid}, "
                              f"lock {self.lock_path}): wait for it, or write separate files "
                              "(--shard i/K) and merge them") from None
            try:  # the previous holder may have unlinked the sidecar between our open and lock
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
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


# ------------------------------------------------------------------------------------------
# HDF5 helpers
# ------------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def open_h5(path: PathLike, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning every failure into a one-line :class:`H5Error`."""
    path = Path(path)
    if mode == "r" and not path.is_file():
        raise H5Error(f"HDF5 file not found: {path}")
    try:
        return h5py.File(str(path), mode)
    except (OSError, ValueError) as e:
        msg = _first_line(e)
        if "lock" in msg:
            pid = lock_holder(path)
            who = f"pid {pid} (lock {lock_path(path)})" if pid else "another process"
            raise H5Error(f"cannot open HDF5 file {path}: it is being written by {who}; "
                          "wait for that writer to finish") from None
        raise H5Error(f"cannot open HDF5 file {path} (corrupt or not HDF5): {msg}") from None


def entry_state(g: h5py.Group) -> int | None:
    """``attrs['complete']`` of an entry group: 1 committed, 0 being written / interrupted,
    None for a foreign entry (hloc or another tool), which counts as complete for reading."""
    v = g.attrs.get(COMPLETE_ATTR)
    return None if v is None else int(np.asarray(v))


def _entry_names(fd: h5py.File, path: PathLike, include_incomplete: bool = False) -> set[str]:
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
        raise H5Error(f"corrupt HDF5 file {path}: {_first_line(e)}") from None


def list_h5_names(path: PathLike, include_incomplete: bool = False) -> list[str]:
    """Names of all groups that hold datasets (hloc ``list_h5_names``), sorted.

    For a features file these are the image names (``db/1.jpg``); for a matches file the pair keys.
    Entries whose writer was interrupted (``complete=0``) are left out unless
    ``include_incomplete``.
    """
    with open_h5(path) as fd:
        return sorted(_entry_names(fd, path, include_incomplete))


def _has_dataset(fd: h5py.File | h5py.Group, name: str, key: str,
                 complete_only: bool = False) -> bool:
    try:
        if not (name in fd and isinstance(fd[name], h5py.Group) and key in fd[name]):
            return False
        return not complete_only or entry_state(fd[name]) != 0
    except (KeyError, OSError, ValueError):
        return False


def _incomplete_error(path: PathLike, what: str) -> H5Error:
    return H5Error(f"{path}: {what} is incomplete (its writer stopped before committing it); "
                   "rerun the step that writes it to recompute it")


def _group(fd: h5py.File, name: str, path: PathLike) -> h5py.Group:
    try:
        g = fd[name]
    except KeyError:
        raise H5Error(f"{path}: no entry named {name!r}") from None
    except (OSError, RuntimeError) as e:
        raise H5Error(f"corrupt HDF5 file {path} at {name!r}: {_first_line(e)}") from None
    if not isinstance(g, h5py.Group):
        raise H5Error(f"{path}: {name!r} is a dataset, expected a group")
    if entry_state(g) == 0:
        raise _incomplete_error(path, f"entry {name!r}")
    return g


def _read(g: h5py.Group, key: str, path: PathLike, name: str) -> np.ndarray:
    try:
        return g[key][()]
    except KeyError:
        raise H5Error(f"{path}: entry {name!r} has no dataset {key!r}") from None
    except (OSError, RuntimeError) as e:
        raise H5Error(f"corrupt HDF5 file {path} at {name}/{key}: {_first_line(e)}") from None


def _delete(fd: h5py.File | h5py.Group, name: str) -> None:
    try:
        if name in fd:
            del fd[name]
    except (KeyError, OSError, RuntimeError) as e:
        raise H5Error(f"{fd.file.filename}: cannot delete damaged entry {name!r} "
                      f"({_first_line(e)}); rebuild the file with localize.io.repair_h5") from None


def _start_entry(dest: h5py.File | h5py.Group, name: str) -> h5py.Group:
    """Create an entry group marked ``complete=0`` (replacing any entry of that name)."""
    _delete(dest, name)
    grp = dest.create_group(name)
    grp.attrs[COMPLETE_ATTR] = np.uint8(0)
    return grp


def _finish_entry(grp: h5py.Group) -> None:
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
# Features
# ------------------------------------------------------------------------------------------
def write_features(dest: PathLike | h5py.File, name: str, feats: Mapping[str, Any],
                   as_half: bool = False, fingerprint: str | None = None) -> None:
    """Write one image's features (replacing an existing entry of that name).

    Args:
        dest: an open (writable) ``h5py.File`` (fast; normally ``H5Writer.file``) or a path
            (opens an :class:`H5Writer` for this one entry: fine for one-off writes).
        name: image name relative to the image root; ``/`` makes nested groups.
        feats: ``keypoints (N, 2)``, ``descriptors (D, N)`` (file layout, transposed),
            ``scores (N,)``, ``image_size (2,)`` (w, h), optional ``scales (N,)``, ``oris (N,)``,
            any other arrays (written as datasets), and optional ``uncertainty`` (float, written
            as the ``keypoints`` attribute).
        as_half: store float32 arrays other than ``keypoints`` and ``image_size`` as float16
            (hloc also halves keypoints; we keep them float32: float16 has a 1 px step above
            1024 px). Readers accept both.
        fingerprint: :func:`image_fingerprint` of the image the features come from, stored as
            the group attribute ``image_fingerprint`` (extraction recomputes the entry when the
            image on disk no longer has it; hloc ignores the attribute).
    Raises:
        ValueError when the shapes are inconsistent or the name is not a relative path.
    """
    if not isinstance(dest, (h5py.File, h5py.Group)):
        with H5Writer(dest) as w:
            write_features(w.file, name, feats, as_half=as_half, fingerprint=fingerprint)
        return
    check_name(name, f"{dest.file.filename}: features entry")
    feats = dict(feats)
    uncertainty = feats.pop("uncertainty", None)
    kp = np.asarray(feats.get("keypoints", np.zeros((0, 2))), np.float32).reshape(-1, 2)
    feats["keypoints"] = kp
    n = len(kp)
    if "descriptors" in feats:
        d = np.asarray(feats["descriptors"])
        if d.ndim != 2 or d.shape[1] != n:
            raise ValueError(f"features of {name!r}: descriptors must be (D, N={n}), got {d.shape}")
    for k in ("scores", "scales", "oris"):
        if k in feats and np.asarray(feats[k]).reshape(-1).shape[0] != n:
            raise ValueError(f"features of {name!r}: {k} has {np.asarray(feats[k]).size} "
                             f"entries for {n} keypoints")
    try:
        grp = _start_entry(dest, name)
        for k, v in feats.items():
            v = np.asarray(v)
            if k in ("scores", "scales", "oris"):
                v = v.reshape(-1)
            if as_half and v.dtype == np.float32 and k not in ("keypoints", "image_size"):
                v = v.astype(np.float16)
            grp.create_dataset(k, data=v)
        if uncertainty is not None:
            grp["keypoints"].attrs["uncertainty"] = np.float32(uncertainty)
        if fingerprint is not None:
            grp.attrs[FINGERPRINT_ATTR] = str(fingerprint)
    except BaseException:
        # never leave a half-written group behind (the writer commits after an exception)
        try:
            _delete(dest, name)
        finally:
            raise
    _finish_entry(grp)


def stored_fingerprint(g: h5py.Group) -> str | None:
    """The ``image_fingerprint`` attribute of a features entry (None: hloc / older files)."""
    v = g.attrs.get(FINGERPRINT_ATTR)
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


def resumable_features(path: PathLike, required: Sequence[str] = ("keypoints", "descriptors"),
                       fingerprints: Mapping[str, str] | None = None) -> set[str]:
    """Image names extraction may skip: committed entries (``complete=1``) and foreign entries
    (no attribute) holding every ``required`` dataset with one N (keypoints (N, 2), descriptors
    (D, N)). Everything else is recomputed. Empty for a missing file.

    ``fingerprints`` ({name: :func:`image_fingerprint`} of the images on disk): an entry whose
    stored fingerprint differs is stale (the image changed since) and left out, with one log
    line; entries without a stored fingerprint (hloc's, older files) cannot be checked and are
    kept.
    """
    path = Path(path)
    if not path.is_file():
        return set()
    out: set[str] = set()
    unchecked = 0
    with open_h5(path) as fd:
        for name in _entry_names(fd, path):
            g = fd[name]
            if fingerprints is not None and name in fingerprints:
                old = stored_fingerprint(g)
                if old is None:
                    unchecked += 1
                elif old != fingerprints[name]:
                    logger.info("%s: image %r changed on disk since its features were "
                                "extracted (%s -> %s): recomputing it", path, name, old,
                                fingerprints[name])
                    continue
            if entry_state(g) == 1:
                out.add(name)
                continue
            if not all(k in g and isinstance(g[k], h5py.Dataset) for k in required):
                logger.info("%s: entry %r lacks %s: it will be recomputed", path, name,
                            "/".join(k for k in required if k not in g))
                continue
            if "keypoints" in g and "descriptors" in g:
                kp, d = g["keypoints"].shape, g["descriptors"].shape
                if len(d) != 2 or len(kp) < 1 or d[1] != kp[0]:
                    logger.info("%s: entry %r has keypoints %s but descriptors %s: it will be "
                                "recomputed", path, name, kp, d)
                    continue
            out.add(name)
    if unchecked:
        logger.info("%s: %d entries carry no image fingerprint (hloc or older files): reused "
                    "without a freshness check", path, unchecked)
    return out


def _check_finite(a: np.ndarray, path: PathLike, name: str, key: str) -> np.ndarray:
    """``a`` unchanged; :class:`H5Error` naming the file and entry when a float array holds
    NaN / inf (bytes overwritten inside the dataset)."""
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise H5Error(f"{path}: {name}/{key} holds {bad} non-finite value(s) of {a.size} "
                      "(damaged file): re-extract it (--overwrite) or rebuild the file")
    return a


def read_features(path: PathLike, name: str) -> dict[str, Any]:
    """All datasets of one image, as stored (``descriptors`` stays (D, N)).

    ``keypoints`` is returned as float32; ``uncertainty`` (float) is added when the attribute
    exists. Raises :class:`H5Error` naming the file when it or the name is missing.
    """
    with open_h5(path) as fd:
        g = _group(fd, name, path)
        out: dict[str, Any] = {}
        for k in g.keys():
            if isinstance(g[k], h5py.Dataset):
                out[k] = _check_finite(np.asarray(_read(g, k, path, name)), path, name, k)
        if "keypoints" in out:
            out["keypoints"] = np.asarray(out["keypoints"], np.float32).reshape(-1, 2)
            u = g["keypoints"].attrs.get("uncertainty")
            if u is not None:
                out["uncertainty"] = float(np.asarray(u))
    return out


def get_keypoints(path: PathLike, name: str, return_uncertainty: bool = False
                  ) -> np.ndarray | tuple[np.ndarray, float | None]:
    """(N, 2) float32 keypoints (x, y, pixel centres at integers) of one image.

    With ``return_uncertainty`` also the ``uncertainty`` attribute (None when absent), as hloc.
    """
    with open_h5(path) as fd:
        g = _group(fd, name, path)
        kp = np.asarray(_read(g, "keypoints", path, name), np.float32).reshape(-1, 2)
        _check_finite(kp, path, name, "keypoints")
        u = g["keypoints"].attrs.get("uncertainty")
    if return_uncertainty:
        return kp, (None if u is None else float(np.asarray(u)))
    return kp


def get_descriptors(path: PathLike, name: str) -> np.ndarray:
    """(N, D) float32 descriptors of one image (the file stores (D, N), any float dtype)."""
    with open_h5(path) as fd:
        g = _group(fd, name, path)
        d = _read(g, "descriptors", path, name)
    d = _check_finite(np.asarray(d), path, name, "descriptors")
    if d.ndim != 2:
        raise H5Error(f"{path}: descriptors of {name!r} have shape {d.shape}, expected (D, N)")
    return np.ascontiguousarray(d.T, dtype=np.float32)


def has_features(path: PathLike, name: str) -> bool:
    """True when ``path`` exists and holds a complete ``name/keypoints`` (False for a missing
    file)."""
    if not Path(path).is_file():
        return False
    with open_h5(path) as fd:
        return _has_dataset(fd, name, "keypoints", complete_only=True)


# ------------------------------------------------------------------------------------------
# Matches
# ------------------------------------------------------------------------------------------
def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """hloc pair key: ``name0.replace('/', '-') + separator + name1.replace('/', '-')``."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


def names_to_pair_old(name0: str, name1: str) -> str:
    """Legacy hloc pair key (``_`` separator, one flat group)."""
    return names_to_pair(name0, name1, separator="_")


def _pair_keys(name0: str, name1: str) -> tuple[tuple[str, bool], ...]:
    return ((names_to_pair(name0, name1), False), (names_to_pair(name1, name0), True),
            (names_to_pair_old(name0, name1), False), (names_to_pair_old(name1, name0), True))


def find_pair(hfile: h5py.File, name0: str, name1: str) -> tuple[str, bool]:
    """Key of a pair in an open matches file and whether it is stored reversed.

    Tries, as hloc: (n0, n1, '/'), (n1, n0, '/'), (n0, n1, '_'), (n1, n0, '_'); entries whose
    writer was interrupted (``complete=0``) do not count.
    Raises:
        H5Error when none exists (saying so when only an incomplete one does).
    """
    keys = _pair_keys(name0, name1)
    for key, rev in keys:
        if _has_dataset(hfile, key, "matches0", complete_only=True):
            return key, rev
    if any(_has_dataset(hfile, key, "matches0") for key, _ in keys):
        raise _incomplete_error(hfile.filename, f"pair ({name0}, {name1})")
    raise H5Error(f"{hfile.filename}: no matches for pair ({name0}, {name1}) in either order; "
                  "was it matched with a different pairs file?")


def check_pair_keys(pairs: Iterable[tuple[str, str]], where: PathLike | str) -> None:
    """Refuse pairs whose matches would share one entry of a matches file.

    hloc's key flattens ``/`` to ``-`` (:func:`names_to_pair`), so ``(a-b.jpg, c.jpg)`` and
    ``(a/b.jpg, c.jpg)`` -- or ``(c.jpg, a-b.jpg)``, found through the reversed key -- would
    read and overwrite each other's matches. The layout stays hloc's; such a pairs list is an
    error. (a, b) and (b, a) of the same images are one pair, not a collision.

    Raises:
        ValueError naming ``where`` (the pairs file), both pairs and the shared key.
    """
    owner: dict[str, tuple[str, str]] = {}
    for a, b in pairs:
        same = {(a, b), (b, a)}
        for key in (names_to_pair(a, b), names_to_pair(b, a)):
            other = owner.setdefault(key, (a, b))
            if other not in same:
                raise ValueError(f"{where}: pairs ({other[0]}, {other[1]}) and ({a}, {b}) share "
                                 f"the matches key {key!r} (hloc's key replaces '/' by '-'); "
                                 "rename one of the images")


def has_pair(path: PathLike, name0: str, name1: str) -> bool:
    """True when the pair exists (complete) in either order (False for a missing file)."""
    if not Path(path).is_file():
        return False
    with open_h5(path) as fd:
        try:
            find_pair(fd, name0, name1)
            return True
        except H5Error:
            return False


def get_matches(path: PathLike, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
    """Matches of a pair as hloc: ``(M, 2)`` int64 [idx0, idx1] and ``(M,)`` float32 scores.

    Works whichever order / key style the pair was stored in (columns swapped when reversed).
    Scores are 1 when the file has no ``matching_scores0``.
    """
    with open_h5(path) as fd:
        key, reverse = find_pair(fd, name0, name1)
        g = _group(fd, key, path)
        m = np.asarray(_read(g, "matches0", path, key)).reshape(-1).astype(np.int64)
        s = (np.asarray(_read(g, "matching_scores0", path, key), np.float32).reshape(-1)
             if "matching_scores0" in g else np.ones(len(m), np.float32))
    _check_finite(s, path, key, "matching_scores0")
    idx = np.where(m != -1)[0]
    matches = np.stack([idx, m[idx]], -1).reshape(-1, 2)
    if reverse:
        matches = np.ascontiguousarray(matches[:, ::-1])
    return matches, s[idx].astype(np.float32)


def write_matches(dest: PathLike | h5py.File, name0: str, name1: str, matches0: np.ndarray,
                  scores0: np.ndarray | None = None) -> str:
    """Write one pair (replacing it if present, in any of the 4 key forms).

    Args:
        dest: open writable ``h5py.File`` (see :class:`H5Writer`) or a path (one-off write).
        matches0: (N0,) index into image 1's keypoints, -1 = unmatched; stored int32.
        scores0: (N0,) scores, stored float16 as ``matching_scores0`` (omitted when None).
    Returns:
        the pair key written (``names_to_pair(name0, name1)``).
    """
    if not isinstance(dest, (h5py.File, h5py.Group)):
        with H5Writer(dest) as w:
            return write_matches(w.file, name0, name1, matches0, scores0)
    m = np.asarray(matches0).reshape(-1).astype(np.int32)
    s = None
    if scores0 is not None:
        s = np.asarray(scores0, np.float32).reshape(-1)
        if len(s) != len(m):
            raise ValueError(f"pair {names_to_pair(name0, name1)}: {len(s)} scores for "
                             f"{len(m)} matches0 entries")
    key = names_to_pair(name0, name1)
    for k, _ in _pair_keys(name0, name1)[1:]:
        if _has_dataset(dest, k, "matches0"):
            _delete(dest, k)
    try:
        grp = _start_entry(dest, key)
        grp.create_dataset("matches0", data=m)
        if s is not None:
            grp.create_dataset("matching_scores0", data=s.astype(np.float16))
    except BaseException:
        try:
            _delete(dest, key)
        finally:
            raise
    _finish_entry(grp)
    return key


# ------------------------------------------------------------------------------------------
# Writer: in place, locked, committed periodically
# ------------------------------------------------------------------------------------------
_WRITERS: dict[str, "H5Writer"] = {}   # h5py filename -> open writer (pending entries)
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
    """Append to an HDF5 file in place, under a lock, committing entries crash-safely (see the
    module docstring).

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
        self.dirty = False

    def _remove_stale_tmp(self) -> None:
        """Delete temp copies left by older versions of this writer whose process died."""
        for p in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            try:
                pid = int(p.name[len(self.path.name) + 2:-len(".tmp")])
            except ValueError:
                continue
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                p.unlink(missing_ok=True)
                logger.info("removed stale temp file %s (its writer died)", p)
            except PermissionError:
                pass

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._remove_stale_tmp()
            if self.path.exists():
                # validate first so corruption is reported against the file's name
                with open_h5(self.path):
                    pass
            try:
                self.file = h5py.File(str(self.path), "a")
            except (OSError, ValueError) as e:
                raise H5Error(f"cannot write HDF5 file {self.path}: {_first_line(e)}") from None
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
        return _entry_names(self.file, self.path, include_incomplete)

    @property
    def pending(self) -> int:
        """Entries written but not yet committed."""
        return len(self._pending)

    def mark_dirty(self) -> None:
        self.dirty = True

    def commit(self, reopen: bool = True, sync: bool = True) -> None:
        """Flush, (``sync``) fsync, mark pending entries ``complete=1``, flush again.

        ``reopen`` is kept for compatibility (the file stays open until the writer closes).
        """
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
        self.dirty = False
        self._last_commit = time.monotonic()

    def maybe_commit(self) -> bool:
        """Commit when ``commit_every_s`` passed since the last commit. Returns True if it did."""
        self.dirty = True
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
            logger.error("could not commit the finished entries of %s: %s", self.path,
                         _first_line(e))
        finally:
            try:
                self.file.close()
            except Exception as e:
                logger.error("could not close %s cleanly: %s", self.path, _first_line(e))
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
            logger.warning("%s: saving %d finished entries after %s", self.path, self.pending,
                           exc_type.__name__)
        self.close(exc_type)


def merge_h5(sources: Iterable[PathLike], dest: PathLike, overwrite: bool = False) -> Path:
    """Copy every complete entry (image group / pair group) of ``sources`` into ``dest``.

    Used to join extraction shards. Entries already in ``dest`` are kept unless ``overwrite``.
    Returns ``dest``.
    """
    dest = Path(dest)
    with H5Writer(dest) as w:
        have = w.names()
        for src in sources:
            with open_h5(src) as fs:
                for name in sorted(_entry_names(fs, src)):
                    if name in have and not overwrite:
                        continue
                    _delete(w.file, name)
                    parent = name.rsplit("/", 1)[0] if "/" in name else None
                    if parent:
                        w.file.require_group(parent)
                    try:
                        fs.copy(fs[name], w.file, name=name)
                        w.file[name].attrs[COMPLETE_ATTR] = np.uint8(0)
                    except BaseException:
                        try:
                            _delete(w.file, name)
                        finally:
                            raise
                    _finish_entry(w.file[name])
                    have.add(name)
    return dest


def repair_h5(path: PathLike) -> tuple[int, int]:
    """Rebuild a damaged file from its complete, readable entries (one copy, under the lock).

    Returns:
        (entries kept, entries dropped). Raises :class:`H5Error` when the file cannot be opened.
    """
    path = Path(path)
    lock = FileLock(path)
    lock.acquire()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.repair.tmp")
    kept = dropped = 0
    try:
        with open_h5(path) as fs, h5py.File(str(tmp), "w") as fo:
            for name in sorted(_entry_names(fs, path, include_incomplete=True)):
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
                    logger.warning("%s: dropping entry %r (%s)", path, name, _first_line(e))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        lock.release()
    logger.info("repaired %s: kept %d entries, dropped %d", path, kept, dropped)
    return kept, dropped


# ------------------------------------------------------------------------------------------
# Pairs
# ------------------------------------------------------------------------------------------
def read_pose_lines(path: PathLike) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Read an Aachen submission-format file (``name qw qx qy qz tx ty tz`` per line,
    world-to-camera; empty lines and ``#`` comments skipped).

    Returns:
        [(name as written, q wxyz (4,) float64, t (3,) float64), ...] in file order.
    Raises:
        FileNotFoundError / ValueError naming the file and line when missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: poses file does not exist")
    out: list[tuple[str, np.ndarray, np.ndarray]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            fields = s.split()
            if len(fields) != 8:
                raise ValueError(f"{path}:{lineno}: expected 'name qw qx qy qz tx ty tz', "
                                 f"got {len(fields)} fields")
            try:
                vals = np.array([float(x) for x in fields[1:]], np.float64)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: non-numeric pose in {s!r}") from None
            out.append((fields[0], vals[:4], vals[4:]))
    return out


def parse_pairs(path: PathLike) -> list[tuple[str, str]]:
    """Read a pairs file: ``name0 name1`` per line, empty lines and ``#`` comments skipped.

    Raises:
        FileNotFoundError / ValueError naming the file and line when malformed or when a name
        is not a relative path inside the image root (:func:`check_name`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    pairs: list[tuple[str, str]] = []
    with open(path, "r") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{i}: expected 'name0 name1', got {line!r}")
            for n in parts:
                check_name(n, f"{path}:{i}")
            pairs.append((parts[0], parts[1]))
    return pairs


def parse_retrieval(path: PathLike) -> dict[str, list[str]]:
    """Pairs file -> {name0: [name1, ...]} in file order (hloc ``parse_retrieval``)."""
    out: dict[str, list[str]] = {}
    for a, b in parse_pairs(path):
        out.setdefault(a, []).append(b)
    return out


def write_pairs(path: PathLike, pairs: Iterable[tuple[str, str]]) -> Path:
    """Write pairs as hloc: ``"\\n".join(" ".join(p))``, no trailing newline (atomic).

    Raises ValueError when a name is empty or contains whitespace.
    """
    path = Path(path)
    lines = []
    for a, b in pairs:
        for n in (a, b):
            if not n or any(c.isspace() for c in n):
                raise ValueError(f"pair name {n!r} is empty or contains whitespace ({path})")
        lines.append(f"{a} {b}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, path)
    return path

