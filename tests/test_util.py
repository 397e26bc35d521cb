"""descriptors.util: the one atomic writer, the one JSON writer and the one logging setup;
descriptors.tables: the one table formatter."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from descriptors.tables import format_table
from descriptors.util import (
    atomic_dir,
    atomic_write,
    atomic_write_text,
    setup_logging,
    write_json,
)


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


def test_write_json_numpy_and_paths(tmp_path):
    obj = {"i": np.int64(3), "f": np.float32(0.5), "a": np.arange(3), "p": Path("x/y")}
    p = write_json(tmp_path / "sub" / "r.json", obj, indent=1)
    assert json.loads(p.read_text()) == {"i": 3, "f": 0.5, "a": [0, 1, 2], "p": "x/y"}
    assert not list((tmp_path / "sub").glob(".*"))  # no temporary file left


def test_format_table_markdown():
    t = format_table(["name", "n"], [["a|b", 1], ["c"]], title="T")
    lines = t.splitlines()
    assert lines[0] == "T"
    assert lines[1] == "| name |   n |"
    assert lines[2] == "|:-----|----:|"
    assert lines[3] == "| a\\|b |   1 |"
    assert lines[4] == "| c    |     |"
    assert len({len(x) for x in lines[1:]}) == 1  # padded: the plain text lines up
    assert "|:---:|" in format_table(["x"], [[1]], align="c")
    with pytest.raises(ValueError):
        format_table(["a", "b"], [[1, 2]], align="l")
    with pytest.raises(ValueError):
        format_table(["a"], [[1, 2]])
