"""descriptors.util: the one atomic writer and the one logging setup."""

from __future__ import annotations

import logging
import os

import pytest

from descriptors.util import atomic_dir, atomic_write, atomic_write_text, setup_logging


def test_atomic_write_replaces_or_keeps_old(tmp_path):
    p = atomic_write_text(tmp_path / "a.json", "old")
    mask = os.umask(0)
    os.umask(mask)
    assert p.read_text() == "old" and (p.stat().st_mode & 0o777) == (0o666 & ~mask)
    with pytest.raises(RuntimeError):
        with atomic_write(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert p.read_text() == "old" and sorted(x.name for x in tmp_path.iterdir()) == ["a.json"]


def test_atomic_dir_swaps_whole_folder(tmp_path):
    d = tmp_path / "out"
    with atomic_dir(d) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(d) as tmp:
            (tmp / "y").write_text("2")
            raise ValueError
    assert [x.name for x in d.iterdir()] == ["x"]
    with atomic_dir(d) as tmp:
        (tmp / "z").write_text("3")
    assert [x.name for x in d.iterdir()] == ["z"] and len(list(tmp_path.iterdir())) == 1


def test_setup_logging_once_and_faiss_quiet():
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        setup_logging()
        setup_logging("WARNING")
        ours = [h for h in root.handlers if getattr(h, "_descloc", False)]
        assert len(ours) == 1 and root.level == logging.WARNING
        assert not logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
    finally:
        for h in root.handlers[:]:
            if h not in before:
                root.removeHandler(h)
