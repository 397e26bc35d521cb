"""HPatches readers and format writers: hpatches-release patches, task files, and the
hpatches-sequences full images.

Layout (FORMATS.md section 4, hpatches-benchmark ``python/utils/hpatch.py``)::

    <release>/<seq>/{ref,e1..e5,h1..h5,t1..t5}.png
        8-bit grayscale, 65 px wide and 65*N px tall: N patches of 65x65 stacked vertically,
        patch i = rows [65 i, 65 i + 65). All 16 files of a sequence hold the same N and index i
        is the same reference patch everywhere. ``i_*`` = illumination, ``v_*`` = viewpoint.
    <release>/../tasks/splits/splits.json            {name: {"name", "test", ["train"]}}
    <release>/../tasks/verif_pos_split-X.csv         header s1,t1,idx1,s2,t2,idx2 (t: 0 = ref)
    <release>/../tasks/verif_neg_intra_split-X.csv
    <release>/../tasks/verif_neg_inter_split-X.csv
    <release>/../tasks/retr_queries_split-X.csv      header s,idx (ref patches)
    <release>/../tasks/retr_distractors_split-X.csv  header s,idx
    <seq>/{1..6}.(ppm|png) + H_1_{2..6}             hpatches-sequences: full images, H maps
                                                     pixels of image 1 to image k

Task definitions are generated like the benchmark's ``gen_verif`` / ``gen_retrieval``
(``python/utils/tasks.py``): seed 42; positives = same seq, same idx, two different image ids
drawn from 0..4 (the benchmark draws ``np.random.choice(np.arange(5), 2, replace=False)``, so
image 5 never appears in verification; kept for fidelity); intra negatives = same seq and image
ids, the second idx of the drawn pair; inter negatives = a random seq and idx (may be the same
seq). Retrieval: queries and distractors are ref patches with std > 10, de-duplicated,
distractors exclude the queries.

The synthetic set in this layout is written by ``descriptors.data.hpatches_synth``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from descriptors.util import ToolkitError, atomic_write

logger = logging.getLogger(__name__)

PATCH_SIZE: int = 65
LEVELS: tuple[str, ...] = ("e", "h", "t")
TYPES: tuple[str, ...] = ("ref",) + tuple(f"{L}{k}" for L in LEVELS for k in range(1, 6))
VERIF_HEADER = ("s1", "t1", "idx1", "s2", "t2", "idx2")
RETR_HEADER = ("s", "idx")
SPLIT_PREFIX = {"illum": "i_", "view": "v_"}


class HPatchesError(ToolkitError, RuntimeError):
    """Malformed hpatches-release data (one-line message naming the file)."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def release_dir(root: str | Path) -> Path:
    """Accept either the release folder itself or a folder holding ``hpatches-release``."""
    root = Path(root)
    if not root.is_dir():
        raise HPatchesError(f"{root}: no such hpatches-release folder")
    if not _seq_dirs(root) and (root / "hpatches-release").is_dir():
        return root / "hpatches-release"
    return root


def _seq_dirs(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and (p.name.startswith("i_") or p.name.startswith("v_"))
    )


def list_sequences(root: str | Path) -> list[str]:
    """Sorted ``i_*`` / ``v_*`` sequence folder names of a release folder."""
    return [p.name for p in _seq_dirs(release_dir(root))]


def read_patch_file(path: str | Path) -> np.ndarray:
    """Read one stacked patch file -> (N, 65, 65) uint8.

    Raises:
        HPatchesError: unreadable, not 65 px wide, or height not a multiple of 65.
    """
    path = Path(path)
    if not path.is_file():
        raise HPatchesError(f"{path}: missing patch file")
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise HPatchesError(f"{path}: not a readable image")
    h, w = img.shape
    if w != PATCH_SIZE:
        raise HPatchesError(f"{path}: width {w} px, expected {PATCH_SIZE}")
    if h % PATCH_SIZE != 0 or h == 0:
        raise HPatchesError(f"{path}: height {h} px is not a positive multiple of {PATCH_SIZE}")
    return np.ascontiguousarray(img.reshape(h // PATCH_SIZE, PATCH_SIZE, PATCH_SIZE))


def read_sequence(seq_dir: str | Path) -> dict[str, np.ndarray]:
    """Read the 16 files of one sequence -> {type: (N, 65, 65) uint8}, same N everywhere."""
    seq_dir = Path(seq_dir)
    out: dict[str, np.ndarray] = {}
    n_ref = None
    for t in TYPES:
        p = seq_dir / f"{t}.png"
        arr = read_patch_file(p)
        if n_ref is None:
            n_ref = len(arr)
        elif len(arr) != n_ref:
            raise HPatchesError(f"{p}: {len(arr)} patches but ref.png has {n_ref}")
        out[t] = arr
    return out


def read_hpatches(
    root: str | Path, sequences: Iterable[str] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Read an hpatches-release folder.

    Args:
        root: the ``hpatches-release`` folder (or a folder containing one).
        sequences: names to read (default: every ``i_*`` / ``v_*`` folder).
    Returns:
        {seq: {type: (N, 65, 65) uint8}} with type in :data:`TYPES`.
    Raises:
        HPatchesError: missing folder / file, bad geometry, or N mismatch (names the file).
    """
    rel = release_dir(root)
    names = [p.name for p in _seq_dirs(rel)] if sequences is None else list(sequences)
    if not names:
        raise HPatchesError(f"{rel}: no i_*/v_* sequence folders")
    data = {}
    for s in names:
        d = rel / s
        if not d.is_dir():
            raise HPatchesError(f"{d}: missing sequence folder")
        data[s] = read_sequence(d)
    return data


# --------------------------------------------------------------------------------------------
# Splits and task definition files
# --------------------------------------------------------------------------------------------


def tasks_dir_for(release: str | Path) -> Path:
    """Where the benchmark keeps task files relative to the release folder: ``../tasks``."""
    return release_dir(release).parent / "tasks"


def load_splits(path: str | Path | None = None, root: str | Path | None = None) -> dict[str, dict]:
    """Load ``splits.json`` ({name: {"name", "test", ["train"]}}).

    Args:
        path: a splits.json file. If None or missing, look for ``<tasks>/splits/splits.json``
            next to ``root``; if that is missing too, build ``full`` (every sequence of ``root``),
            ``illum`` (``i_*``) and ``view`` (``v_*``) from the folder.
        root: the hpatches-release folder (needed when building).
    """
    candidates = []
    if path is not None:
        candidates.append(Path(path))
    if root is not None:
        candidates.append(tasks_dir_for(root) / "splits" / "splits.json")
    for c in candidates:
        if c.is_file():
            try:
                splits = json.loads(c.read_text())
            except json.JSONDecodeError as e:
                raise HPatchesError(f"{c}: invalid JSON ({e.msg} at line {e.lineno})") from None
            if not isinstance(splits, dict) or not all(
                isinstance(v, dict) and "test" in v for v in splits.values()
            ):
                raise HPatchesError(f"{c}: expected {{name: {{'name', 'test', ['train']}}}}")
            for k, v in splits.items():
                v.setdefault("name", k)
            return splits
    if path is not None and root is None:
        raise HPatchesError(f"{path}: splits file not found (pass root= to build one)")
    if root is None:
        raise HPatchesError("load_splits needs a splits.json path or the release folder")
    return build_splits(list_sequences(root))


def build_splits(seqs: list[str]) -> dict[str, dict]:
    """Splits ``full``, ``illum``, ``view`` from sequence names (no train lists, as the JSON)."""
    seqs = sorted(seqs)
    out = {"full": {"name": "full", "test": seqs}}
    for name, pre in SPLIT_PREFIX.items():
        out[name] = {"name": name, "test": [s for s in seqs if s.startswith(pre)]}
    return out


def _write_csv(path: Path, header: tuple[str, ...], rows: Iterable[tuple]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    _write_bytes(path, buf.getvalue().encode())


def _read_csv(path: Path, header: tuple[str, ...]) -> list[tuple]:
    if not path.is_file():
        raise HPatchesError(f"{path}: missing task file")
    with open(path, newline="") as f:
        r = csv.reader(f)
        head = tuple(x.strip() for x in next(r, ()))
        if head != header:
            raise HPatchesError(f"{path}: header {','.join(head)!r}, expected {','.join(header)!r}")
        rows = []
        for ln, row in enumerate(r, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise HPatchesError(f"{path}:{ln}: {len(row)} fields, expected {len(header)}")
            try:
                rows.append(tuple(x if h.startswith("s") else int(x) for h, x in zip(header, row)))
            except ValueError:
                raise HPatchesError(f"{path}:{ln}: non-integer index in {row}") from None
    return rows


def make_verification_pairs(
    lengths: dict[str, int], test: list[str], n_pairs: int, seed: int = 42
) -> dict[str, list[tuple]]:
    """Verification pairs as the benchmark's ``gen_verif`` draws them.

    Args:
        lengths: {seq: N patches}.
        test: sequences of the split.
        n_pairs: rows per file (positives = intra negatives = inter negatives).
    Returns:
        {"pos", "neg_intra", "neg_inter"}: lists of (s1, t1, idx1, s2, t2, idx2).
    """
    rng = np.random.RandomState(seed)
    test = list(test)
    s = rng.choice(test, int(n_pairs))
    idx = np.array([rng.choice(np.arange(lengths[k]), 2, replace=False) for k in s])
    typ = np.array([rng.choice(np.arange(5), 2, replace=False) for _ in s])
    s_inter = rng.choice(test, int(n_pairs))
    idx_inter = np.array([rng.randint(lengths[k]) for k in s_inter])
    pos = [(a, int(t[0]), int(i[0]), a, int(t[1]), int(i[0])) for a, i, t in zip(s, idx, typ)]
    intra = [(a, int(t[0]), int(i[0]), a, int(t[1]), int(i[1])) for a, i, t in zip(s, idx, typ)]
    inter = [
        (a, int(t[0]), int(i[0]), b, int(t[1]), int(j))
        for a, i, t, b, j in zip(s, idx, typ, s_inter, idx_inter)
    ]
    return {"pos": pos, "neg_intra": intra, "neg_inter": inter}


def make_retrieval_lists(
    data: dict[str, dict[str, np.ndarray]],
    test: list[str],
    n_queries: int,
    n_distractors: int,
    seed: int = 42,
    min_std: float = 10.0,
) -> tuple[list[tuple], list[tuple]]:
    """Retrieval queries and distractors as the benchmark's ``gen_retrieval`` draws them.

    Ref patches with std <= ``min_std`` are dropped; queries are de-duplicated and cut to
    ``n_queries``; distractors are de-duplicated, exclude every query, cut to ``n_distractors``.
    Returns (queries, distractors), lists of (seq, idx).
    """
    rng = np.random.RandomState(seed)
    test = list(test)

    def draw(n: int) -> list[tuple]:
        ss = rng.choice(test, int(n))
        ii = [rng.randint(len(data[k]["ref"])) for k in ss]
        keep = [(a, int(i)) for a, i in zip(ss, ii) if np.std(data[a]["ref"][i]) > min_std]
        return list(dict.fromkeys(keep))  # drop duplicates, keep first-seen order

    q = draw(n_queries * 4)[:n_queries]
    dset = set(q)
    d = [x for x in draw(n_distractors * 10) if x not in dset][:n_distractors]
    return q, d


def write_tasks(
    tasks_dir: str | Path,
    split: str,
    verif: dict[str, list[tuple]],
    queries: list[tuple],
    distractors: list[tuple],
) -> None:
    """Write the five task csvs of one split in the benchmark's format."""
    td = Path(tasks_dir)
    td.mkdir(parents=True, exist_ok=True)
    for key in ("pos", "neg_intra", "neg_inter"):
        _write_csv(td / f"verif_{key}_split-{split}.csv", VERIF_HEADER, verif[key])
    _write_csv(td / f"retr_queries_split-{split}.csv", RETR_HEADER, queries)
    _write_csv(td / f"retr_distractors_split-{split}.csv", RETR_HEADER, distractors)


def read_tasks(tasks_dir: str | Path, split: str) -> dict[str, list[tuple]]:
    """Read the task csvs of one split -> {"pos", "neg_intra", "neg_inter", "queries",
    "distractors"}. Raises HPatchesError naming a missing or malformed file."""
    td = Path(tasks_dir)
    out = {
        k: _read_csv(td / f"verif_{k}_split-{split}.csv", VERIF_HEADER)
        for k in ("pos", "neg_intra", "neg_inter")
    }
    out["queries"] = _read_csv(td / f"retr_queries_split-{split}.csv", RETR_HEADER)
    out["distractors"] = _read_csv(td / f"retr_distractors_split-{split}.csv", RETR_HEADER)
    return out


def has_tasks(tasks_dir: str | Path, split: str) -> bool:
    td = Path(tasks_dir)
    names = [f"verif_{k}_split-{split}.csv" for k in ("pos", "neg_intra", "neg_inter")] + [
        f"retr_queries_split-{split}.csv",
        f"retr_distractors_split-{split}.csv",
    ]
    return all((td / n).is_file() for n in names)


def task_file_name(key: str, split: str) -> str:
    """Benchmark file name of task ``key`` (pos, neg_intra, neg_inter, queries, distractors)."""
    if key in ("queries", "distractors"):
        return f"retr_{key}_split-{split}.csv"
    return f"verif_{key}_split-{split}.csv"


def validate_tasks(
    tasks: dict[str, list[tuple]],
    data: dict[str, dict[str, np.ndarray]],
    tasks_dir: str | Path | None = None,
    split: str | None = None,
) -> None:
    """Check every (seq, t, idx) of the task rows exists in ``data`` (one-line error otherwise,
    naming ``<tasks_dir>/<task file>`` when the rows were read from files)."""

    def where(key: str, ln: int) -> str:
        """'<file>:<line>' (header = line 1) or '<task> <key> row <n>' for generated rows."""
        if tasks_dir is None or split is None:
            task = "retrieval" if key in ("queries", "distractors") else "verification"
            return f"{task} {key} row {ln - 1}"
        return f"{Path(tasks_dir) / task_file_name(key, split)}:{ln}"

    for key in ("pos", "neg_intra", "neg_inter"):
        for ln, row in enumerate(tasks[key], 2):
            for s, t, i in (row[0:3], row[3:6]):
                if s not in data or not (0 <= t <= 5) or not (0 <= i < len(data[s]["ref"])):
                    raise HPatchesError(f"{where(key, ln)}: {row} refers to a missing patch")
    for key in ("queries", "distractors"):
        for ln, (s, i) in enumerate(tasks[key], 2):
            if s not in data or not (0 <= i < len(data[s]["ref"])):
                raise HPatchesError(f"{where(key, ln)}: {(s, i)} refers to a missing patch")


# --------------------------------------------------------------------------------------------
# Writers (atomic: a crash leaves the old file or the new one)
# --------------------------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def write_patch_file(path: str | Path, patches: np.ndarray) -> None:
    """Write (N, 65, 65) uint8 as a vertical stack PNG (atomic)."""
    p = np.asarray(patches)
    if p.ndim != 3 or p.shape[1:] != (PATCH_SIZE, PATCH_SIZE) or p.dtype != np.uint8:
        raise ValueError(f"{path}: expected (N, 65, 65) uint8 patches, got {p.shape} {p.dtype}")
    ok, buf = cv2.imencode(".png", p.reshape(-1, PATCH_SIZE))
    if not ok:
        raise HPatchesError(f"{path}: PNG encoding failed")
    _write_bytes(Path(path), buf.tobytes())


def _write_image(path: Path, img: np.ndarray) -> None:
    im = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(path.suffix, im)
    if not ok:
        raise HPatchesError(f"{path}: encoding failed")
    _write_bytes(path, buf.tobytes())


def write_homography(path: Path, H: np.ndarray) -> None:
    """3x3 as whitespace-separated text, one row per line (hpatches-sequences ``H_1_k``)."""
    txt = "\n".join(" ".join(f"{v:.10g}" for v in row) for row in np.asarray(H, np.float64))
    _write_bytes(path, (txt + "\n").encode())


def write_image_sequence(
    seq_dir: str | Path, images: list[np.ndarray], Hs: list[np.ndarray]
) -> None:
    """Write ``<seq_dir>/{1..6}.png`` and ``H_1_{2..6}`` (hpatches-sequences layout)."""
    d = Path(seq_dir)
    d.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images, start=1):
        _write_image(d / f"{i}.png", im)
    for k, H in enumerate(Hs, start=2):
        write_homography(d / f"H_1_{k}", H)


def read_image_sequence(
    seq_dir: str | Path,
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Read ``<seq>/{1..6}.(ppm|png|jpg|pgm)`` (grayscale uint8) and ``H_1_{2..6}`` (3x3 float64).

    Returns:
        (images, homographies H_1_k for k = 2..N, image file names).
    Raises:
        HPatchesError: missing folder, unreadable image, missing or malformed ``H_1_k``.
    """
    d = Path(seq_dir)
    if not d.is_dir():
        raise HPatchesError(f"{d}: no such sequence folder")
    imgs, names, Hs = [], [], []
    for i in range(1, 100):
        f = next(
            (
                d / f"{i}{ext}"
                for ext in (".ppm", ".png", ".jpg", ".pgm")
                if (d / f"{i}{ext}").is_file()
            ),
            None,
        )
        if f is None:
            break
        im = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise HPatchesError(f"{f}: not a readable image")
        imgs.append(im)
        names.append(f.name)
        if i > 1:
            hf = d / f"H_1_{i}"
            if not hf.is_file():
                raise HPatchesError(f"{hf}: missing homography file")
            try:
                H = np.loadtxt(hf, dtype=np.float64)
            except ValueError:
                raise HPatchesError(f"{hf}: not a 3x3 matrix of numbers") from None
            if H.shape != (3, 3):
                raise HPatchesError(f"{hf}: shape {H.shape}, expected (3, 3)")
            Hs.append(H)
    if len(imgs) < 2:
        raise HPatchesError(f"{d}: expected images 1.(ppm|png) .. 6.(ppm|png), found {len(imgs)}")
    return imgs, Hs, names
