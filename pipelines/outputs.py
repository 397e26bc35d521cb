"""Run bookkeeping shared by the pipelines (``pipelines.aachen``, ``pipelines.sfm``): output
folder names, the fingerprint that decides whether a run's outputs can be reused, stage timers
and the timing table (JSON goes through ``descriptors.util.write_json``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from descriptors import registry
from descriptors.recipes import RECIPE_MODULES
from descriptors.tables import format_table
from descriptors.util import json_default, write_json

logger = logging.getLogger(__name__)


class RunFolder(Protocol):
    """What :func:`invalidate_outputs` needs of a run's outputs."""

    root: Path
    fingerprint: Path


def features_tag(features: str | os.PathLike) -> str:
    """Directory name for a descriptor: the registry name, or the checkpoint file stem."""
    s = str(features)
    p = Path(s)
    return p.stem if (p.suffix in (".pt", ".pth", ".ckpt") or os.sep in s or "/" in s) else s


def default_matcher(features: str) -> str:
    """``nn-ratio`` for the OpenCV descriptors, ``nn-ratio-0.9`` for learned ones."""
    return "nn-ratio" if str(features) in registry.OPENCV_NAMES else "nn-ratio-0.9"


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    """blake2b (128 bit, hex) of a whole file's content."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def features_fingerprint(features: str) -> dict:
    """What identifies the descriptor: its name and the CONTENT hash of its weights file
    (retrained or replaced weights invalidate old outputs; a mere ``touch`` does not)."""
    s = str(features)
    if s in registry.OPENCV_NAMES:
        return {"features": s}
    path = registry.weights_path(s) if s in RECIPE_MODULES else Path(s)
    if path.is_file():
        return {
            "features": s,
            "weights_size": path.stat().st_size,
            "weights_blake2b": file_hash(path),
        }
    return {"features": s}


def images_fingerprint(prints: dict[str, str]) -> dict[str, Any]:
    """What identifies a set of images' content: their count and a digest of every
    ``{name: image_io.image_fingerprint}`` entry (not the folder's path)."""
    h = hashlib.blake2b(digest_size=16)
    for n in sorted(prints):
        h.update(f"{n}\0{prints[n]}\n".encode())
    return {"num_images": len(prints), "images_blake2b": h.hexdigest()}


def wipe(out: Path, keep: str | None = None) -> None:
    """Delete ``out`` (all of it, or everything but the entry named ``keep``)."""
    if keep is None:
        shutil.rmtree(out)
        return
    for p in out.iterdir():
        if p.name == keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def invalidate_outputs(outputs: RunFolder, fingerprint: dict, overwrite: bool) -> None:
    """Make ``outputs.root`` hold only results of ``fingerprint``, then write it.

    Outputs of another fingerprint (or all of them with ``overwrite``) are deleted, with a
    warning naming the folder and what changed; when only the dataset's images changed,
    ``features.h5`` is kept (extraction recomputes the entries of changed images).
    """
    out = outputs.root
    new = json.loads(json.dumps(fingerprint, default=json_default))
    if out.exists():
        old = None
        if outputs.fingerprint.is_file():
            try:
                old = json.loads(outputs.fingerprint.read_text())
            except json.JSONDecodeError:
                old = None
        if overwrite or old != new:
            changed = sorted(k for k in new if not old or old.get(k) != new[k])
            keep = "features.h5" if (not overwrite and changed == ["dataset"]) else None
            logger.warning(
                "deleting the outputs in %s%s (%s)",
                out,
                f" except {keep}" if keep else "",
                "--overwrite" if overwrite else f"changed: {', '.join(changed)}",
            )
            wipe(out, keep)
    write_json(outputs.fingerprint, new)


class StageTimer:
    """``with stage(name):`` records wall and process-CPU seconds per stage. CPU time (all
    threads of this process) is the robust number on a shared machine."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.name = ""

    def __call__(self, name: str) -> "StageTimer":
        self.name, self.t0, self.c0 = name, time.perf_counter(), time.process_time()
        return self

    def __enter__(self) -> "StageTimer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall[self.name] = time.perf_counter() - self.t0
        self.cpu[self.name] = time.process_time() - self.c0


def format_timings(
    timings: dict[str, float], cpu: dict[str, float] | None = None, title: str | None = None
) -> str:
    """Table: stage, wall seconds (+ process CPU seconds when given), and a total row."""
    rows = [
        [k, f"{v:.2f}"] + ([f"{cpu[k]:.2f}" if k in cpu else ""] if cpu else [])
        for k, v in timings.items()
    ]
    rows.append(
        ["total", f"{sum(timings.values()):.2f}"] + ([f"{sum(cpu.values()):.2f}"] if cpu else [])
    )
    return format_table(["stage", "wall s"] + (["CPU s"] if cpu else []), rows, title=title)
