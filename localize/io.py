"""hloc-compatible HDF5 files: features, matches, global descriptors.

Layouts (``features.h5``, ``matches.h5``, ``global-feats.h5``) are hloc's, readable by
``hloc.utils.io`` both ways, plus our attributes (fingerprints, features ids, provenance:
:mod:`localize.provenance`); they are listed in README.md ("File formats, crash safety").
Descriptors are (N, D) in memory and (D, N) in the file; the conversion happens here and
nowhere else. Every read error raises :class:`H5Error`,
one line naming the file and the entry. Crash safety is :mod:`localize.h5`'s job; image files
are :mod:`localize.image_io`, name lists and pairs files :mod:`localize.parsers`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from descriptors.util import atomic_write
from localize import parsers
from localize.h5 import (
    H5Error,
    H5Writer,
    attr_str,
    delete_entry,
    finish_entry,
    get_group,
    has_dataset,
    incomplete_error,
    list_h5_names,
    open_h5,
    read_dataset,
    start_entry,
)
from localize.provenance import FEATURES_ID_ATTR, FINGERPRINT_ATTR, content_id, features_id

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

FEATURE_KEYS = ("keypoints", "descriptors", "scores", "image_size", "scales", "oris")


class PairKeyError(H5Error):
    """A matches file holds another pair of images under a pair's hloc key."""


# ------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------
def write_features(
    dest: PathLike | h5py.File,
    name: str,
    feats: Mapping[str, Any],
    as_half: bool = False,
    fingerprint: str | None = None,
) -> None:
    """Write one image's features (replacing an existing entry of that name).

    Args:
        dest: an open (writable) ``h5py.File`` (fast; normally ``H5Writer.file``) or a path
            (opens an :class:`H5Writer` for this one entry: fine for one-off writes).
        name: image name relative to the image root; ``/`` makes nested groups.
        feats: ``keypoints (N, 2)`` (pixel centres at integers), ``descriptors (N, D)``
            (stored transposed, (D, N), as hloc), ``scores (N,)``, ``image_size (2,)`` (w, h),
            optional ``scales (N,)`` (sigma, px), ``oris (N,)`` (degrees, hloc's DoG convention),
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
    parsers.check_name(name, f"{dest.file.filename}: features entry")
    feats = dict(feats)
    uncertainty = feats.pop("uncertainty", None)
    kp = np.asarray(feats.get("keypoints", np.zeros((0, 2))), np.float32).reshape(-1, 2)
    feats["keypoints"] = kp
    n = len(kp)
    if "descriptors" in feats:
        d = np.asarray(feats["descriptors"])
        if d.ndim != 2 or d.shape[0] != n:
            raise ValueError(f"features of {name!r}: descriptors must be (N={n}, D), got {d.shape}")
        feats["descriptors"] = d.T
    for k in ("scores", "scales", "oris"):
        if k in feats and np.asarray(feats[k]).reshape(-1).shape[0] != n:
            raise ValueError(
                f"features of {name!r}: {k} has {np.asarray(feats[k]).size} "
                f"entries for {n} keypoints"
            )
    try:
        grp = start_entry(dest, name)
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
        grp.attrs[FEATURES_ID_ATTR] = content_id(grp)
    except BaseException:
        # never leave a half-written group behind (the writer commits after an exception)
        try:
            delete_entry(dest, name)
        finally:
            raise
    finish_entry(grp)


def _check_finite(a: np.ndarray, path: PathLike, name: str, key: str) -> np.ndarray:
    """``a`` unchanged; :class:`H5Error` naming the file and entry when a float array holds
    NaN / inf (bytes overwritten inside the dataset)."""
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise H5Error(
            f"{path}: {name}/{key} holds {bad} non-finite value(s) of {a.size} "
            "(damaged file): re-extract it (--overwrite) or rebuild the file"
        )
    return a


def read_features(path: PathLike, name: str) -> dict[str, Any]:
    """All datasets of one image; ``descriptors`` as (N, D) float32 (the file stores (D, N)).

    ``keypoints`` is returned as (N, 2) float32; ``uncertainty`` (float) is added when the
    attribute exists. Raises :class:`H5Error` naming the file when it or the name is missing.
    """
    with open_h5(path) as fd:
        g = get_group(fd, name, path)
        out: dict[str, Any] = {}
        for k in g.keys():
            if isinstance(g[k], h5py.Dataset):
                out[k] = _check_finite(np.asarray(read_dataset(g, k, path, name)), path, name, k)
        if "keypoints" in out:
            out["keypoints"] = np.asarray(out["keypoints"], np.float32).reshape(-1, 2)
            u = g["keypoints"].attrs.get("uncertainty")
            if u is not None:
                out["uncertainty"] = float(np.asarray(u))
    if "descriptors" in out:
        out["descriptors"] = _descriptors_nd(out["descriptors"], path, name)
    return out


@contextlib.contextmanager
def _reading(src: PathLike | h5py.File) -> Iterator[tuple[h5py.File, PathLike]]:
    """(open file, its path) for a path (opened and closed here) or an already open file
    (left open: loops over many entries open a file once, not once per entry)."""
    if isinstance(src, h5py.File):
        yield src, src.filename
        return
    with open_h5(src) as fd:
        yield fd, src


def open_for_reading(stack: contextlib.ExitStack, path: PathLike) -> PathLike | h5py.File:
    """``path`` opened once for a loop of reads (closed with ``stack``), or ``path`` itself
    when there is no such file (the readers then report it missing)."""
    return stack.enter_context(open_h5(path)) if Path(path).is_file() else path


def get_keypoints(
    path: PathLike | h5py.File, name: str, return_uncertainty: bool = False
) -> np.ndarray | tuple[np.ndarray, float | None]:
    """(N, 2) float32 keypoints (x, y, pixel centres at integers) of one image.

    ``path``: the features file or an open ``h5py.File`` of it. With ``return_uncertainty``
    also the ``uncertainty`` attribute (None when absent), as hloc.
    """
    with _reading(path) as (fd, path):
        g = get_group(fd, name, path)
        kp = np.asarray(read_dataset(g, "keypoints", path, name), np.float32).reshape(-1, 2)
        _check_finite(kp, path, name, "keypoints")
        u = g["keypoints"].attrs.get("uncertainty")
    if return_uncertainty:
        return kp, (None if u is None else float(np.asarray(u)))
    return kp


def read_keypoints(
    path: PathLike, names: Iterable[str], desc: str = "keypoints", progress: bool = True
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Keypoints of many images from one features file (opened once): ({name: (N, 2) float
    pixel xy}, [names without features, in the order given])."""
    keypoints: dict[str, np.ndarray] = {}
    missing: list[str] = []
    with contextlib.ExitStack() as files:
        src = open_for_reading(files, path)
        for name in tqdm(list(names), desc=desc, unit="img", disable=None if progress else True):
            if has_features(src, name):
                keypoints[name] = get_keypoints(src, name)
            else:
                missing.append(name)
    return keypoints, missing


def get_descriptors(path: PathLike, name: str) -> np.ndarray:
    """(N, D) float32 descriptors of one image (the file stores (D, N), any float dtype)."""
    with open_h5(path) as fd:
        g = get_group(fd, name, path)
        d = read_dataset(g, "descriptors", path, name)
    return _descriptors_nd(_check_finite(np.asarray(d), path, name, "descriptors"), path, name)


def _descriptors_nd(d: np.ndarray, path: PathLike, name: str) -> np.ndarray:
    """Stored (D, N) descriptors -> (N, D) float32 C-contiguous (the one read boundary)."""
    if d.ndim != 2:
        raise H5Error(f"{path}: descriptors of {name!r} have shape {d.shape}, expected (D, N)")
    return np.ascontiguousarray(d.T, dtype=np.float32)


def read_descriptors(
    path: PathLike, names: Sequence[str] | None = None
) -> tuple[list[str], list[np.ndarray], dict[str, np.ndarray]]:
    """Descriptors of many images of one features file (opened once).

    Args:
        names: images to read (default: every complete entry, sorted).
    Returns:
        names, [(N_i, D) float32] in that order, {name: image_size (2,)} where stored.
    """
    names = list(names) if names is not None else list_h5_names(path)
    descs, sizes = [], {}
    with open_h5(path) as fd:
        for n in names:
            g = get_group(fd, n, path)
            d = _check_finite(
                np.asarray(read_dataset(g, "descriptors", path, n)), path, n, "descriptors"
            )
            descs.append(_descriptors_nd(d, path, n))
            if "image_size" in g:
                sizes[n] = np.asarray(g["image_size"][()])
    return names, descs, sizes


class FeatureReader:
    """Features of images spread over one or more features files, read through ONE LRU cache.

    Each name is looked up in ``paths`` (earlier files win). ``convert`` maps each (N, D)
    float32 descriptor array once when it enters the cache (e.g. to a GPU tensor, so it stays
    on the device while cached).
    """

    def __init__(
        self,
        paths: PathLike | Sequence[PathLike],
        cache_size: int = 64,
        convert: Callable[[np.ndarray], Any] | None = None,
    ):
        self.paths = (
            [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
        )
        self.where: dict[str, Path] = {}
        seen: dict[str, list[Path]] = {}
        for p in self.paths:
            for n in list_h5_names(p):
                seen.setdefault(n, []).append(p)
        for n, ps in seen.items():
            self.where[n] = ps[0]
            if len(ps) > 1:
                self._same_features(n, ps)
        self.cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self.cache_size = int(cache_size)
        self.convert = convert

    @staticmethod
    def _same_features(name: str, paths: Sequence[Path]) -> None:
        """An image in several files must have the same features in all (else which one the
        matches index would be a silent choice)."""
        ids = []
        for p in paths:
            with open_h5(p) as fd:
                ids.append(features_id(fd, name))
        other = next((p for p, i in zip(paths, ids) if i != ids[0]), None)
        if other is not None:
            raise H5Error(
                f"image {name!r} is in {paths[0]} and {other} with different "
                "features: remove it from one of them"
            )

    def ids(self, names: Iterable[str]) -> dict[str, str]:
        """{name: :func:`features_id`} (each file opened once)."""
        by_file: dict[Path, list[str]] = {}
        for n in names:
            by_file.setdefault(self.check(n), []).append(n)
        out = {}
        for p, ns in by_file.items():
            with open_h5(p) as fd:
                for n in ns:
                    out[n] = features_id(fd, n)
        return out

    def check(self, name: str) -> Path:
        """The features file holding ``name``; :class:`H5Error` naming the files otherwise."""
        if name not in self.where:
            raise H5Error(
                f"image {name!r} is not in the features file(s) "
                f"{', '.join(str(p) for p in self.paths)}"
            )
        return self.where[name]

    def _get(self, name: str, key: str) -> Any:
        k = (name, key)
        if k in self.cache:
            self.cache.move_to_end(k)
            return self.cache[k]
        path = self.check(name)
        if key == "descriptors":
            v = get_descriptors(path, name)
            v = self.convert(v) if self.convert is not None else v
        else:
            v = get_keypoints(path, name)
        self.cache[k] = v
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return v

    def descriptors(self, name: str) -> Any:
        """(N, D) float32 descriptors of ``name`` (after ``convert``)."""
        return self._get(name, "descriptors")

    def keypoints(self, name: str) -> np.ndarray:
        """(N, 2) float32 keypoints of ``name`` (pixel centres at integers)."""
        return self._get(name, "keypoints")


def has_features(path: PathLike | h5py.File, name: str) -> bool:
    """True when ``path`` (a file or an open ``h5py.File``) holds a complete
    ``name/keypoints`` (False for a missing file)."""
    if not isinstance(path, h5py.File) and not Path(path).is_file():
        return False
    with _reading(path) as (fd, _):
        return has_dataset(fd, name, "keypoints", complete_only=True)


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
    return (
        (names_to_pair(name0, name1), False),
        (names_to_pair(name1, name0), True),
        (names_to_pair_old(name0, name1), False),
        (names_to_pair_old(name1, name0), True),
    )


def find_pair(hfile: h5py.File, name0: str, name1: str) -> tuple[str, bool]:
    """Key of a pair in an open matches file and whether it is stored reversed.

    Tries, as hloc: (n0, n1, '/'), (n1, n0, '/'), (n0, n1, '_'), (n1, n0, '_'); entries whose
    writer was interrupted (``complete=0``) do not count.
    Raises:
        H5Error when none exists (saying so when only an incomplete one does).
    """
    keys = _pair_keys(name0, name1)
    for key, rev in keys:
        if has_dataset(hfile, key, "matches0", complete_only=True):
            stored = _stored_names(hfile[key])
            if stored is not None and set(stored) != {name0, name1}:
                raise PairKeyError(
                    f"{hfile.filename}: the matches under key {key!r} are of pair ({stored[0]}, "
                    f"{stored[1]}), not ({name0}, {name1}) (hloc's key replaces '/' by '-'); "
                    "rename one of the images or use another matches file"
                )
            return key, rev
    if any(has_dataset(hfile, key, "matches0") for key, _ in keys):
        raise incomplete_error(hfile.filename, f"pair ({name0}, {name1})")
    raise H5Error(
        f"{hfile.filename}: no matches for pair ({name0}, {name1}) in either order; "
        "was it matched with a different pairs file?"
    )


def _stored_names(g: h5py.Group) -> tuple[str, str] | None:
    """(name0, name1) recorded with a pair (None for hloc's pairs, which record none)."""
    a, b = attr_str(g, "name0"), attr_str(g, "name1")
    return None if a is None or b is None else (a, b)


def pair_is_current(fd: h5py.File, name0: str, name1: str, id0: str, id1: str) -> bool:
    """True when the pair is in the open matches file (either order) and was computed from
    the features entries whose :func:`features_id` are ``id0`` / ``id1`` (pairs recording no
    ids, hloc's, count as current). A stored pair of other images under the same key raises
    (:func:`find_pair`)."""
    try:
        key, rev = find_pair(fd, name0, name1)
    except PairKeyError:
        raise
    except H5Error:
        return False
    g = fd[key]
    f0, f1 = attr_str(g, "features0"), attr_str(g, "features1")
    if f0 is None or f1 is None:
        return True
    return (f0, f1) == ((id1, id0) if rev else (id0, id1))


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
                raise ValueError(
                    f"{where}: pairs ({other[0]}, {other[1]}) and ({a}, {b}) share "
                    f"the matches key {key!r} (hloc's key replaces '/' by '-'); "
                    "rename one of the images"
                )


def has_pair(path: PathLike | h5py.File, name0: str, name1: str) -> bool:
    """True when the pair exists (complete) in either order (False for a missing file).
    ``path``: the matches file or an open ``h5py.File`` of it."""
    if not isinstance(path, h5py.File) and not Path(path).is_file():
        return False
    with _reading(path) as (fd, _):
        try:
            find_pair(fd, name0, name1)
            return True
        except H5Error:
            return False


def get_matches(
    path: PathLike | h5py.File, name0: str, name1: str
) -> tuple[np.ndarray, np.ndarray]:
    """Matches of a pair as hloc: ``(M, 2)`` int64 [idx0, idx1] and ``(M,)`` float32 scores.

    ``path``: the matches file or an open ``h5py.File`` of it. Works whichever order / key
    style the pair was stored in (columns swapped when reversed). Scores are 1 when the file
    has no ``matching_scores0``.
    """
    with _reading(path) as (fd, path):
        key, reverse = find_pair(fd, name0, name1)
        g = get_group(fd, key, path)
        m = np.asarray(read_dataset(g, "matches0", path, key)).reshape(-1).astype(np.int64)
        s = (
            np.asarray(read_dataset(g, "matching_scores0", path, key), np.float32).reshape(-1)
            if "matching_scores0" in g
            else np.ones(len(m), np.float32)
        )
    _check_finite(s, path, key, "matching_scores0")
    idx = np.where(m != -1)[0]
    matches = np.stack([idx, m[idx]], -1).reshape(-1, 2)
    if reverse:
        matches = np.ascontiguousarray(matches[:, ::-1])
    return matches, s[idx].astype(np.float32)


def check_match_range(
    matches: np.ndarray, n0: int, n1: int, where: PathLike | str, name0: str, name1: str
) -> np.ndarray:
    """``matches`` (M, 2) [idx0, idx1] unchanged when every index is inside its image's
    keypoints (``0 <= idx0 < n0``, ``0 <= idx1 < n1``).

    Raises:
        H5Error naming ``where`` (the matches file), the pair and the first bad index: matches
        computed from other features (or a damaged file) would index the wrong keypoints.
    """
    m = np.asarray(matches).reshape(-1, 2)
    for col, n, name in ((0, n0, name0), (1, n1, name1)):
        bad = (m[:, col] < 0) | (m[:, col] >= n)
        if bad.any():
            raise H5Error(
                f"{where}: pair ({name0}, {name1}) has a match index "
                f"{int(m[bad, col][0])} outside the {n} keypoints of {name!r} "
                "(matched from other features?): re-match the pair (--overwrite)"
            )
    return m


def write_matches(
    dest: PathLike | h5py.File,
    name0: str,
    name1: str,
    matches0: np.ndarray,
    scores0: np.ndarray | None = None,
    features_ids: tuple[str, str] | None = None,
) -> str:
    """Write one pair (replacing it if present, in any of the 4 key forms).

    Args:
        dest: open writable ``h5py.File`` (see :class:`H5Writer`) or a path (one-off write).
        matches0: (N0,) index into image 1's keypoints, -1 = unmatched; stored int32.
        scores0: (N0,) scores, stored float16 as ``matching_scores0`` (omitted when None).
        features_ids: :func:`features_id` of the two features entries matched, recorded as
            ``attrs`` ``features0`` / ``features1`` (with ``name0`` / ``name1``, always).
    Returns:
        the pair key written (``names_to_pair(name0, name1)``).
    """
    if not isinstance(dest, (h5py.File, h5py.Group)):
        with H5Writer(dest) as w:
            return write_matches(w.file, name0, name1, matches0, scores0, features_ids)
    m = np.asarray(matches0).reshape(-1).astype(np.int32)
    s = None
    if scores0 is not None:
        s = np.asarray(scores0, np.float32).reshape(-1)
        if len(s) != len(m):
            raise ValueError(
                f"pair {names_to_pair(name0, name1)}: {len(s)} scores for {len(m)} matches0 entries"
            )
    key = names_to_pair(name0, name1)
    for k, _ in _pair_keys(name0, name1):
        stored = _stored_names(dest[k]) if has_dataset(dest, k, "matches0") else None
        if stored is not None and set(stored) != {name0, name1}:
            raise PairKeyError(
                f"{dest.file.filename}: key {k!r} holds the matches of pair ({stored[0]}, "
                f"{stored[1]}); refusing to overwrite them with ({name0}, {name1}) (hloc's key "
                "replaces '/' by '-'); rename one of the images or use another matches file"
            )
    for k, _ in _pair_keys(name0, name1)[1:]:
        if has_dataset(dest, k, "matches0"):
            delete_entry(dest, k)
    try:
        grp = start_entry(dest, key)
        grp.create_dataset("matches0", data=m)
        if s is not None:
            grp.create_dataset("matching_scores0", data=s.astype(np.float16))
        grp.attrs["name0"], grp.attrs["name1"] = name0, name1
        if features_ids is not None:
            grp.attrs["features0"], grp.attrs["features1"] = features_ids
    except BaseException:
        try:
            delete_entry(dest, key)
        finally:
            raise
    finish_entry(grp)
    return key


# ------------------------------------------------------------------------------------------
# Global descriptors
# ------------------------------------------------------------------------------------------
def write_global_descriptors(
    path: PathLike,
    descriptors: Mapping[str, np.ndarray],
    image_sizes: Mapping[str, np.ndarray] | None = None,
    as_half: bool = False,
) -> Path:
    """Write a fresh global-features file in hloc's layout (atomically: temp file, rename).

    Args:
        descriptors: {name: (Dg,) vector}, stored as ``<name>/global_descriptor (Dg,)`` float32
            (float16 with ``as_half``).
        image_sizes: {name: (2,) (w, h)} stored as ``<name>/image_size`` where given.
    Returns:
        ``path``.
    """
    path = Path(path)
    with atomic_write(path) as tmp, h5py.File(str(tmp), "w") as fd:
        for n, v in descriptors.items():
            parsers.check_name(n, f"{path}: global descriptor entry")
            g = fd.require_group(n)
            v = np.asarray(v, np.float32).reshape(-1)
            g.create_dataset("global_descriptor", data=v.astype(np.float16) if as_half else v)
            if image_sizes is not None and n in image_sizes:
                g.create_dataset("image_size", data=np.asarray(image_sizes[n]))
    return path


def read_global_descriptors(
    path: PathLike, names: Sequence[str] | None = None, key: str = "global_descriptor"
) -> tuple[list[str], np.ndarray]:
    """(names, (N, Dg) float32) from a global-features file (hloc's or ours); ``names``
    defaults to every entry (sorted). Raises :class:`H5Error` naming the file and the image
    when one has no ``key`` dataset."""
    names = list(names) if names is not None else list_h5_names(path)
    out = []
    with open_h5(path) as fd:
        for n in names:
            g = get_group(fd, n, path)
            v = np.asarray(read_dataset(g, key, path, n), np.float32).reshape(-1)
            out.append(_check_finite(v, path, n, key))
    if not out:
        return names, np.zeros((0, 0), np.float32)
    return names, np.stack(out)


# ------------------------------------------------------------------------------------------
# Pairs
# ------------------------------------------------------------------------------------------
