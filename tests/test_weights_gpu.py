"""pipelines.weights_gpu helpers: which patch sets count, the link folders (no training here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.weights_gpu import (
    GPU_ARGS,
    GPU_AVERAGE,
    GPU_STAGES,
    GPU_STEPS,
    link_folder,
    patch_sets,
)


def test_patch_sets_prefers_finished_sets_and_links(tmp_path: Path):
    root = tmp_path / "patches"
    for name, done in (("a-r800", True), ("b-r1200", False), ("c-r800", True)):
        (root / name).mkdir(parents=True)
        (root / name / "info.txt").write_text("0 0\n")
        if done:
            (root / name / "DONE").write_text("")
    (root / "notes").mkdir()  # no info.txt: not a set
    assert [d.name for d in patch_sets(root)] == ["a-r800", "c-r800"]
    (root / "a-r800" / "DONE").unlink()
    (root / "c-r800" / "DONE").unlink()
    assert [d.name for d in patch_sets(root)] == ["a-r800", "b-r1200", "c-r800"]
    photo = tmp_path / "aero1.jpg"
    photo.write_bytes(b"jpg")
    out = link_folder(
        tmp_path / "links", {"a": root / "a-r800", "missing": root / "nope", photo.name: photo}
    )
    assert sorted(p.name for p in out.iterdir()) == ["a", "aero1.jpg"]
    assert (out / "a" / "info.txt").is_file() and (out / "aero1.jpg").read_bytes() == b"jpg"
    with pytest.raises(SystemExit, match="no Brown patch set"):
        patch_sets(root / "notes")
    assert set(GPU_STEPS) == {"hardnet", "sdb", "hndesc", "fracking", "wlrn"}
    assert set(GPU_ARGS) <= set(GPU_STEPS) and set(GPU_STAGES) <= set(GPU_STEPS)
    for name, stages in GPU_AVERAGE.items():  # an average of two stages the recipe runs
        assert set(stages) <= {s[0] for s in GPU_STAGES[name]}
