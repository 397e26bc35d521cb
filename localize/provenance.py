"""What made a features file and whether its entries can be reused.

Our attributes on top of hloc's layout (README "File formats, crash safety"): the root
attributes :data:`PROVENANCE_ATTRS` (descriptor, conf, weights) that keep one file to one
extractor; per entry the fingerprint of its image (stale entries are recomputed) and the id of
its content (matches record the ids of the entries they index). hloc ignores all of them; its
files, which carry none, are accepted unchecked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from localize.h5 import H5Error, attr_str, entry_names, entry_state, get_group, open_h5

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: attribute of a features entry: the fingerprint of the image it was extracted from
FINGERPRINT_ATTR = "image_fingerprint"
#: attribute of a features entry: :func:`features_id` of its keypoints and descriptors
FEATURES_ID_ATTR = "features_id"
#: root attributes of a features file recording what made it (:func:`check_provenance`)
PROVENANCE_ATTRS = ("descloc_descriptor", "descloc_conf", "descloc_weights")


def content_id(g: h5py.Group) -> str:
    """blake2b of an entry's stored keypoints and descriptors (dtype, shape and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for k in ("keypoints", "descriptors"):
        if k in g and isinstance(g[k], h5py.Dataset):
            a = np.ascontiguousarray(g[k][()])
            h.update(f"{k}:{a.dtype.str}:{a.shape};".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def features_id(fd: h5py.File, name: str) -> str:
    """Identity of a features entry's content (``attrs['features_id']``, written with it;
    computed from the stored keypoints and descriptors for hloc's entries). Matches record
    the ids of the entries they index (:func:`pair_is_current`)."""
    g = get_group(fd, name, fd.filename)
    v = attr_str(g, FEATURES_ID_ATTR)
    if v is not None:
        return v
    try:
        return content_id(g)
    except (OSError, RuntimeError) as e:
        raise H5Error(f"corrupt HDF5 file {fd.filename} at {name!r}: {e}") from None


def features_provenance(descriptor: str, conf: Mapping[str, Any], weights: str) -> dict[str, str]:
    """Root attributes recording what made a features file (:data:`PROVENANCE_ATTRS`):
    the descriptor name, the conf (JSON, sorted keys) and the weights hash."""
    return dict(
        zip(
            PROVENANCE_ATTRS,
            (str(descriptor), json.dumps(dict(conf), sort_keys=True, default=str), weights),
        )
    )


def read_provenance(fd: h5py.File) -> dict[str, str]:
    """The :data:`PROVENANCE_ATTRS` a file records ({} for hloc's and older files)."""
    have = {k: attr_str(fd, k) for k in PROVENANCE_ATTRS}
    return {k: v for k, v in have.items() if v is not None}


def check_provenance(
    fd: h5py.File, want: Mapping[str, str], stamp: bool = True, source: PathLike | None = None
) -> None:
    """Refuse to extend a features file made by another descriptor / conf / weights.

    A file recording other :data:`PROVENANCE_ATTRS` raises; one recording none is stamped
    with ``want`` when it holds no entry yet (``stamp`` and writable), else (hloc's or an
    older file) accepted with a log line (it cannot be checked). ``source``: the file whose
    entries are being merged into ``fd`` (``h5.merge_h5``), named in the error.

    Raises:
        H5Error naming the file, the field and both values (one line).
    """
    have = read_provenance(fd)
    if not have:
        if entry_names(fd, fd.filename, include_incomplete=True):
            logger.info(
                "%s records no descriptor / conf / weights (hloc or older file): "
                "extending it unchecked",
                fd.filename,
            )
        elif stamp and fd.mode != "r":
            for k, v in want.items():
                fd.attrs[k] = v
        return
    for k in PROVENANCE_ATTRS:
        if have.get(k) != want.get(k):
            what = k.replace("descloc_", "")
            if source is not None:
                raise H5Error(
                    f"cannot merge {source} into {fd.filename}: made with another {what} "
                    f"({want.get(k)!r}, not {have.get(k)!r})"
                )
            raise H5Error(
                f"{fd.filename} holds features made with another {what} "
                f"({have.get(k)!r}, not {want.get(k)!r}): give another output "
                "file, or delete it to start over"
            )


def stored_fingerprint(g: h5py.Group) -> str | None:
    """The ``image_fingerprint`` attribute of a features entry (None: hloc / older files)."""
    return attr_str(g, FINGERPRINT_ATTR)


def resumable_features(
    path: PathLike,
    required: Sequence[str] = ("keypoints", "descriptors"),
    fingerprints: Mapping[str, str] | None = None,
) -> set[str]:
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
        for name in entry_names(fd, path):
            g = fd[name]
            if fingerprints is not None and name in fingerprints:
                old = stored_fingerprint(g)
                if old is None:
                    unchecked += 1
                elif old != fingerprints[name]:
                    logger.info(
                        "%s: image %r changed on disk since its features were "
                        "extracted (%s -> %s): recomputing it",
                        path,
                        name,
                        old,
                        fingerprints[name],
                    )
                    continue
            if entry_state(g) == 1:
                out.add(name)
                continue
            if not all(k in g and isinstance(g[k], h5py.Dataset) for k in required):
                logger.info(
                    "%s: entry %r lacks %s: it will be recomputed",
                    path,
                    name,
                    "/".join(k for k in required if k not in g),
                )
                continue
            if "keypoints" in g and "descriptors" in g:
                kp, d = g["keypoints"].shape, g["descriptors"].shape
                if len(d) != 2 or len(kp) < 1 or d[1] != kp[0]:
                    logger.info(
                        "%s: entry %r has keypoints %s but descriptors %s: it will be recomputed",
                        path,
                        name,
                        kp,
                        d,
                    )
                    continue
            out.add(name)
    if unchecked:
        logger.info(
            "%s: %d entries carry no image fingerprint (hloc or older files): reused "
            "without a freshness check",
            path,
            unchecked,
        )
    return out
