"""Text files of names (hloc's ``parsers``): image lists, query / pose lists, pairs files
(``name0 name1`` per line, joined by ``\\n``, no trailing newline) and the one name check of
every reader of names from data (:func:`check_name`: relative POSIX paths inside their root)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from descriptors.util import InputError, atomic_write_text

PathLike = str | os.PathLike


#: image pairs ``[(name0, name1), ...]`` as read from / written to a pairs file
Pairs = list[tuple[str, str]]


def check_name(name: str, where: str) -> str:
    """Validate an image / query / pair name: a normalised relative POSIX path inside its root.

    Refuses empty names, absolute paths, and ``..``, ``.`` or empty components (``a//b``): names
    are joined to the image root and used as HDF5 group paths, where these would escape the root
    or not round-trip. Returns ``name``.

    Raises:
        InputError (a ValueError) ``"<where>: ..."`` (``where`` names the list file and line).
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"{where}: empty image name")
    if "\x00" in name:
        raise InputError(f"{where}: image name {name!r} holds a NUL byte")
    if name.startswith("/"):
        raise InputError(
            f"{where}: image name {name!r} is absolute; names must be relative "
            "paths inside the image root"
        )
    parts = name.split("/")
    if ".." in parts:
        raise InputError(
            f"{where}: image name {name!r} has a '..' component; names must stay "
            "inside the image root"
        )
    if any(p in ("", ".") for p in parts):
        raise InputError(
            f"{where}: image name {name!r} is not a normalised relative path "
            "(empty or '.' component)"
        )
    return name


def read_text_lines(path: PathLike) -> list[str]:
    """Lines of a UTF-8 text file (list, pairs, poses files).

    Raises:
        InputError naming the file and line when it is not valid UTF-8; OSError as is.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(
            f"{path}:{line}: not valid UTF-8 text (byte {data[e.start : e.start + 1]!r})"
        ) from None


def read_image_list(path: PathLike) -> list[str]:
    """Image names of a list file (hloc ``parse_image_list``): the first whitespace-separated
    field of each line (Aachen query lists carry intrinsics after it); empty lines and ``#``
    comments skipped; each name checked by :func:`check_name` (error naming file and line).

    Raises:
        FileNotFoundError naming the file when it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image list not found: {path}")
    names = []
    for i, line in enumerate(read_text_lines(path), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(check_name(line.split()[0], f"{path}:{i}"))
    return names


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
    for lineno, line in enumerate(read_text_lines(path), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        fields = s.split()
        if len(fields) != 8:
            raise ValueError(
                f"{path}:{lineno}: expected 'name qw qx qy qz tx ty tz', got {len(fields)} fields"
            )
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
    for i, line in enumerate(read_text_lines(path), 1):
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
    return atomic_write_text(path, "\n".join(lines))
