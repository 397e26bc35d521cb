"""HPatches benchmark (verification, matching, retrieval) and full-image matching accuracy.

    python -m pipelines.hpatches --features sift rootsift hardnet
        [--data datasets/hpatches-release] [--split full] [--outputs outputs/hpatches]
        [--tasks verification matching retrieval] [--synth-seqs 8] [--synth-patches 100]

``--data`` is an hpatches-release folder (``<seq>/{ref,e1..e5,h1..h5,t1..t5}.png``); task files
are read from ``<data>/../tasks`` as in hpatches-benchmark (``tasks/splits/splits.json``,
``verif_*_split-X.csv``, ``retr_*_split-X.csv``). When that folder lacks the split's task files
they are generated in memory with the benchmark's generator semantics (seed 42). When ``--data``
is not given and ``datasets/hpatches-release`` does not exist, the synthetic set
``datasets/hpatches-synth`` is written on first use (``descriptors.data.hpatches``).

Each 65x65 patch is resized to the extractor's input side (32) with ``cv2.INTER_LINEAR`` (as
HardNet's HPatches extractor) and described by ``descriptors.registry.load(name)``; the metrics
are ``descriptors.metrics.hpatches_ap`` / ``hpatches_auc``. Protocols (FORMATS.md section 4, restated
from hpatches-benchmark ``python/utils/tasks.py`` / ``results.py``), L2 distance on the unit
descriptors, for each level L in e(asy), h(ard), t(ough):

- verification: labels [0]*Nneg + [1]*Npos, scores = -[d_neg; d_pos]; balanced = ROC AUC,
  imbalanced = PR AP on the first Npos + int(0.2 Npos) rows; intra and inter negatives
  separately. The per-level number in the table is the mean of intra and inter; the headline
  is the imbalanced AP (as the benchmark's plot).
- matching: per sequence and k = 1..5, nearest neighbour of every ref descriptor among the
  ``Lk`` descriptors; AP = pr(-d_nn, nn == i, numpos=N); mAP(L) = mean over (seq, k).
- retrieval: per query ref patch, pool = [5 distances to L1..L5 of the same idx] + distances to
  the distractor ref patches of other sequences (file order); AP at pool sizes
  (100, 500, 1000, 5000, 10000, 15000, 20000) entries; mAP(L, k) = mean over queries, reported
  for every pool size k. Headline: the full (largest) pool, where every distractor competes;
  small pools inflate mAP. hpatches-benchmark's ``results.py`` summarises retrieval as the mean
  over the 7 pool sizes; that number is reported next to it ("mean of pools",
  ``summary.retrieval_pool_mean``) for comparison with published tables. On small (synthetic)
  sets the pool sizes are clipped to the pool length and de-duplicated (listed in the JSON).

A descriptor that cannot be loaded is reported and skipped; the others are evaluated and
written, then the command exits with status 1. A missing or malformed data folder, split or
task file is a one-line error (status 1).

Numbers are percentages. Outputs: ``<outputs>/results.json`` and ``<outputs>/hpatches.png``.

Also here: :func:`full_image_mma`, matching accuracy on full images of one sequence in the
hpatches-sequences layout (``<seq>/{1..6}.(ppm|png)`` + ``H_1_k``), used by
``benchmarks/hpatches_mma.py``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from descriptors import metrics as M
from descriptors.data import hpatches as hp

logger = logging.getLogger(__name__)

LEVEL_NAMES = {"e": "Easy", "h": "Hard", "t": "Tough"}
POOL_SIZES: tuple[int, ...] = (100, 500, 1000, 5000, 10000, 15000, 20000)
TASKS: tuple[str, ...] = ("verification", "matching", "retrieval")

DEFAULTS: dict[str, Any] = {
    "real_data": Path("datasets") / "hpatches-release",
    "synth_root": Path("datasets") / "hpatches-synth",
    "outputs": Path("outputs") / "hpatches",
    "split": "full",
    "synth_seqs": 8,
    "synth_patches": 200,
    "synth_seed": 0,
    "verif_pairs": 100_000,       # rows per verification file when generated on the fly
    "retr_queries": 10_000,       # when generated on the fly
    "retr_distractors": 20_000,
    "batch_size": 1024,
}

# --------------------------------------------------------------------------------------------
# Retrieval AP in closed form (metrics: descriptors.metrics.hpatches_ap / hpatches_auc)
# --------------------------------------------------------------------------------------------


def _retrieval_aps(pos: np.ndarray, neg: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """``descriptors.metrics.hpatches_ap(scores[:k], labels[:k])`` (hpatches-benchmark
    ``metrics.pr``) for every pool size k, where scores =
    [pos..., neg...] with the P positives first (so they win stable-sort ties against
    negatives), in closed form: rank of the m-th best positive r_m = m + #(negatives in the
    pool scoring strictly higher); trapz over the PR curve then sums, per positive,
    ((m - 1) / (r_m - 1) + m / r_m) / 2 / P (the point before the first hit has precision
    1 at the origin and 1e-10 / (r - 1) otherwise, exactly as ``pr`` computes it).

    Args:
        pos: (P,) positive scores; neg: (M,) negative scores (finite); ks: pool sizes >= P.
    Returns:
        (len(ks),) AP.
    """
    p = len(pos)
    ks = np.asarray(ks, np.int64)
    if p == 0:
        return np.zeros(len(ks))
    pos_sorted = np.sort(np.asarray(pos, np.float64))[::-1]
    greater = np.asarray(neg, np.float64)[None, :] > pos_sorted[:, None]        # (P, M)
    cs = np.concatenate([np.zeros((p, 1), np.int64), np.cumsum(greater, 1)], 1)  # (P, M + 1)
    n_before = cs[:, np.clip(ks - p, 0, len(neg))]                              # (P, K)
    m = np.arange(1, p + 1)[:, None]
    r = m + n_before
    prev = np.where(r > 1, np.maximum(m - 1, 1e-10) / np.maximum(r - 1, 1), 1.0)
    return ((prev + m / r) / 2.0).sum(0) / p


# --------------------------------------------------------------------------------------------
# Descriptors
# --------------------------------------------------------------------------------------------

def hpatches_input(patches: np.ndarray, size: int) -> np.ndarray:
    """(N, 65, 65) uint8 -> (N, 1, size, size) float32 in [0, 1].

    ``cv2.resize(patch, (size, size))`` with OpenCV's default ``INTER_LINEAR`` on the uint8
    patch, then / 255, as HardNet's HPatches extractor (``cv2.resize(patch, (32, 32)) / 255.``).
    PhotoTour's 64 -> 32 step is different on purpose (``INTER_AREA``, HardNet's training
    ``cv2_scale``: ``descriptors.data.phototour.resize_patches``), so it is not reused here.
    """
    p = np.asarray(patches)
    if p.ndim != 3:
        raise ValueError(f"expected (N, H, W) patches, got shape {p.shape}")
    if p.shape[1:] == (size, size):
        out = p.astype(np.float32)
    else:
        out = np.empty((len(p), size, size), np.float32)
        for i in range(len(p)):
            out[i] = cv2.resize(p[i], (size, size), interpolation=cv2.INTER_LINEAR)
    return (out / 255.0)[:, None]


def describe_hpatches(data: dict[str, dict[str, np.ndarray]], extractor: Any,
                      progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Describe every patch: {seq: {type: (N, D) float32}} with the registry extractor."""
    from tqdm import tqdm
    ps = int(getattr(extractor, "patch_size", 32))
    out: dict[str, dict[str, np.ndarray]] = {}
    for seq in tqdm(sorted(data), desc=f"describe {getattr(extractor, 'name', '')}",
                    disable=not progress, leave=False):
        types = list(hp.TYPES)
        n = len(data[seq]["ref"])
        stack = np.concatenate([data[seq][t] for t in types])
        d = np.asarray(extractor(hpatches_input(stack, ps)), np.float32)
        out[seq] = {t: d[i * n:(i + 1) * n] for i, t in enumerate(types)}
    return out


def _type_name(t: int, level: str) -> str:
    return "ref" if t == 0 else f"{level}{t}"


class _Index:
    """All descriptors of one level in one matrix; (seq, image id, idx) -> row."""

    def __init__(self, descr: dict[str, dict[str, np.ndarray]], level: str):
        self.seq_id = {s: i for i, s in enumerate(sorted(descr))}
        blocks, offs, o = [], np.zeros((len(self.seq_id), 6), np.int64), 0
        for s, si in self.seq_id.items():
            for t in range(6):
                a = descr[s][_type_name(t, level)]
                blocks.append(a)
                offs[si, t] = o
                o += len(a)
        self.mat = np.concatenate(blocks).astype(np.float32)
        self.offs = offs

    def rows(self, seqs: Sequence[str], ts: np.ndarray, idx: np.ndarray) -> np.ndarray:
        si = np.array([self.seq_id[s] for s in seqs], np.int64)
        return self.offs[si, np.asarray(ts, np.int64)] + np.asarray(idx, np.int64)


def _pair_dists(index: _Index, rows: list[tuple], chunk: int = 65536) -> np.ndarray:
    if not rows:
        return np.zeros(0)
    s1, t1, i1, s2, t2, i2 = zip(*rows)
    r1 = index.rows(s1, np.array(t1), np.array(i1))
    r2 = index.rows(s2, np.array(t2), np.array(i2))
    out = np.empty(len(rows))
    for i in range(0, len(rows), chunk):  # chunks keep 1e6-row files in memory bounds
        a = index.mat[r1[i:i + chunk]].astype(np.float64)
        out[i:i + chunk] = np.linalg.norm(a - index.mat[r2[i:i + chunk]], axis=1)
    return out


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------

def eval_verification(descr: dict[str, dict[str, np.ndarray]], tasks: dict[str, list[tuple]]
                      ) -> dict[str, dict[str, dict[str, float]]]:
    """-> {L: {"intra"|"inter": {"balanced_auc", "imbalanced_ap"}}} (fractions, not %)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for L in hp.LEVELS:
        index = _Index(descr, L)
        d_pos = _pair_dists(index, tasks["pos"])
        res = {}
        for neg in ("intra", "inter"):
            d_neg = _pair_dists(index, tasks[f"neg_{neg}"])
            labels = np.concatenate([np.zeros(len(d_neg)), np.ones(len(d_pos))])
            dist = np.concatenate([d_neg, d_pos])
            n_imb = len(d_pos) + int(len(d_pos) * 0.2)
            res[neg] = {"balanced_auc": float(M.hpatches_auc(-dist, labels)),
                        "imbalanced_ap": float(M.hpatches_ap(-dist[:n_imb], labels[:n_imb]))}
        out[L] = res
    return out


def eval_matching(descr: dict[str, dict[str, np.ndarray]], seqs: Iterable[str]
                  ) -> dict[str, dict[str, list[float]]]:
    """-> {seq: {L: [AP for k = 1..5]}} (fractions)."""
    out: dict[str, dict[str, list[float]]] = {}
    for seq in seqs:
        ref = descr[seq]["ref"].astype(np.float64)
        gt = np.arange(len(ref))
        out[seq] = {}
        for L in hp.LEVELS:
            aps = []
            for k in range(1, 6):
                d = descr[seq][f"{L}{k}"].astype(np.float64)
                D = _cdist(ref, d)
                nn = np.argmin(D, axis=1)
                aps.append(float(M.hpatches_ap(-D[gt, nn], (nn == gt).astype(np.int64),
                                               numpos=len(gt))))
            out[seq][L] = aps
    return out


def _cdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (Na, Nb), float64 (scipy cdist, as the benchmark's CPU path)."""
    from scipy.spatial.distance import cdist
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return cdist(a, b, "euclidean")


def pool_sizes_for(n_pool: int, sizes: Sequence[int] = POOL_SIZES) -> list[int]:
    """Benchmark pool sizes clipped to the available pool length, de-duplicated."""
    return sorted({min(int(k), int(n_pool)) for k in sizes})


def eval_retrieval(descr: dict[str, dict[str, np.ndarray]], queries: list[tuple],
                   distractors: list[tuple], pool_sizes: Sequence[int] = POOL_SIZES,
                   chunk: int = 1024) -> dict[str, Any]:
    """-> {"pool_sizes": [...], "map": {L: {k: mAP}}} (fractions); pool sizes clipped to the
    smallest pool over queries (5 positives + distractors of other sequences)."""
    if not queries:
        raise hp.HPatchesError("retrieval: no queries")
    q_seq = [s for s, _ in queries]
    d_seq = np.array([s for s, _ in distractors], dtype=object)
    q = np.stack([descr[s]["ref"][i] for s, i in queries]).astype(np.float64)
    dd = np.stack([descr[s]["ref"][i] for s, i in distractors]).astype(np.float64) \
        if distractors else np.zeros((0, q.shape[1]))
    masks = {s: d_seq != s for s in set(q_seq)}
    n_pool = min(5 + int(m.sum()) for m in masks.values())
    ks = pool_sizes_for(n_pool, pool_sizes)
    aps = {L: np.zeros((len(queries), len(ks))) for L in hp.LEVELS}
    for c0 in range(0, len(queries), chunk):
        D = _cdist(q[c0:c0 + chunk], dd)                  # (chunk, Nd), bounded memory
        for qi in range(c0, min(c0 + chunk, len(queries))):
            s, idx = queries[qi]
            neg = -D[qi - c0, masks[s]]                   # distractors of other seqs, in order
            for L in hp.LEVELS:
                pos = -np.linalg.norm(q[qi] - np.stack(
                    [descr[s][f"{L}{k}"][idx] for k in range(1, 6)]), axis=1)
                aps[L][qi] = _retrieval_aps(pos, neg, ks)
    res = {L: {int(k): float(aps[L][:, j].mean()) for j, k in enumerate(ks)} for L in hp.LEVELS}
    return {"pool_sizes": ks, "map": res}


def summarize(verif: dict | None, match: dict | None, retr: dict | None) -> dict[str, dict]:
    """Per-task {L: %, "mean": %} rows of the usual table (+ breakdowns)."""
    out: dict[str, dict] = {}
    if verif is not None:
        for key, name in (("imbalanced_ap", "verification"), ("balanced_auc", "verification_auc")):
            row = {L: 100 * float(np.mean([verif[L][n][key] for n in ("intra", "inter")]))
                   for L in hp.LEVELS}
            row.update({f"{L}_{n}": 100 * verif[L][n][key] for L in hp.LEVELS
                        for n in ("intra", "inter")})
            row["mean"] = float(np.mean([row[L] for L in hp.LEVELS]))
            out[name] = row
    if match is not None:
        row = {L: 100 * float(np.mean([match[s][L] for s in match])) for L in hp.LEVELS}
        for pre in ("i", "v"):
            ss = [s for s in match if s.startswith(pre + "_")]
            for L in hp.LEVELS:
                row[f"{L}_{pre}"] = 100 * float(np.mean([match[s][L] for s in ss])) if ss else None
        row["mean"] = float(np.mean([row[L] for L in hp.LEVELS]))
        out["matching"] = row
    if retr is not None:
        ks = [int(k) for k in retr["pool_sizes"]]
        mp = {L: {int(k): v for k, v in retr["map"][L].items()} for L in hp.LEVELS}

        def level_row(vals: dict[str, float]) -> dict:
            row = {L: 100 * float(vals[L]) for L in hp.LEVELS}
            row["mean"] = float(np.mean([row[L] for L in hp.LEVELS]))
            return row

        by_pool = {str(k): level_row({L: mp[L][k] for L in hp.LEVELS}) for k in ks}
        head = dict(by_pool[str(max(ks))], pool_size=max(ks))     # the full (largest) pool
        out["retrieval"] = head
        out["retrieval_by_pool"] = by_pool
        out["retrieval_pool_mean"] = dict(level_row(
            {L: float(np.mean([mp[L][k] for k in ks])) for L in hp.LEVELS}), pool_sizes=ks)
    return out


# --------------------------------------------------------------------------------------------
# Data resolution
# --------------------------------------------------------------------------------------------

def resolve_data(data: str | Path | None, synth_root: str | Path | None = None,
                 synth_seqs: int = DEFAULTS["synth_seqs"],
                 synth_patches: int = DEFAULTS["synth_patches"],
                 synth_seed: int = DEFAULTS["synth_seed"]) -> tuple[Path, bool]:
    """-> (release folder, is_synthetic). Writes the synthetic set on first use."""
    if data is not None:
        p = Path(data)
        if not p.exists():
            raise hp.HPatchesError(f"{p}: hpatches-release folder not found")
        return hp._release_dir(p), (p / "meta.json").exists() or (p.parent / "meta.json").exists()
    real = Path(DEFAULTS["real_data"])
    if real.is_dir():
        return hp._release_dir(real), False
    root = Path(synth_root or DEFAULTS["synth_root"])
    logger.info("no %s: using the synthetic set %s", real, root)
    return hp.write_synthetic_hpatches(root, synth_seqs, synth_patches, synth_seed), True


def load_task_defs(release: Path, split: str, data: dict[str, dict[str, np.ndarray]],
                   verif_pairs: int = DEFAULTS["verif_pairs"],
                   retr_queries: int = DEFAULTS["retr_queries"],
                   retr_distractors: int = DEFAULTS["retr_distractors"]) -> tuple[dict, list, str]:
    """-> (task rows, test sequences, source) for a split; generated (seed 42) when absent."""
    splits = hp.load_splits(root=release)
    if split not in splits:
        raise hp.HPatchesError(f"{release}: split '{split}' not in "
                               f"{', '.join(sorted(splits))}")
    test = [s for s in splits[split]["test"]]
    missing = [s for s in test if s not in data]
    if missing:
        raise hp.HPatchesError(f"{release}: split '{split}' lists missing sequences "
                               f"{', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}")
    tdir = hp.tasks_dir_for(release)
    if hp.has_tasks(tdir, split):
        tasks = hp.read_tasks(tdir, split)
        source = str(tdir)
        hp.validate_tasks(tasks, data, tdir, split)
    else:
        logger.info("no task files for split %s in %s: generating them (seed 42)", split, tdir)
        lengths = {s: len(data[s]["ref"]) for s in test}
        total = sum(lengths.values())
        tasks = hp.make_verification_pairs(lengths, test, verif_pairs, seed=42)
        # the benchmark's 10k queries / 20k distractors assume ~190k ref patches; on a smaller
        # set keep queries to a quarter of the patches so distractors remain
        tasks["queries"], tasks["distractors"] = hp.make_retrieval_lists(
            data, test, min(retr_queries, max(1, total // 4)), min(retr_distractors, total),
            seed=42)
        source = "generated (seed 42)"
        hp.validate_tasks(tasks, data)
    return tasks, test, source


# --------------------------------------------------------------------------------------------
# Run + report
# --------------------------------------------------------------------------------------------

def evaluate_feature(name: str, data: dict, tasks: dict, test: list[str],
                     which: Sequence[str] = TASKS, device: str | None = None,
                     batch_size: int = DEFAULTS["batch_size"], pool_sizes=POOL_SIZES
                     ) -> dict[str, Any]:
    """Describe the split's patches with registry ``name`` and run the chosen tasks."""
    from descriptors import registry
    ext = registry.load(name, device=device, batch_size=batch_size)
    t0 = time.time()
    descr = describe_hpatches({s: data[s] for s in test}, ext)
    t1 = time.time()
    verif = eval_verification(descr, tasks) if "verification" in which else None
    match = eval_matching(descr, test) if "matching" in which else None
    retr = eval_retrieval(descr, tasks["queries"], tasks["distractors"], pool_sizes) \
        if "retrieval" in which else None
    return {"summary": summarize(verif, match, retr),
            "verification": verif, "matching": match,
            "retrieval": None if retr is None else {
                "pool_sizes": retr["pool_sizes"],
                "map": {L: {str(k): v for k, v in m.items()} for L, m in retr["map"].items()}},
            "dim": int(ext.dim), "describe_s": round(t1 - t0, 2),
            "eval_s": round(time.time() - t1, 2)}


TABLE_ROWS = (("verification", "verification AP (imbal.)"),
              ("verification_auc", "verification AUC (bal.)"),
              ("matching", "matching mAP"),
              ("retrieval", "retrieval mAP (full pool)"))


def _table_rows(summary: dict) -> list[tuple[str, dict]]:
    """(label, row) of one feature: the four task rows; retrieval also per pool size and as
    hpatches-benchmark's mean over pool sizes."""
    rows = []
    for key, label in TABLE_ROWS:
        row = summary.get(key)
        if row is None:
            continue
        if key == "retrieval":
            for k, r in summary.get("retrieval_by_pool", {}).items():
                if int(k) != row["pool_size"]:
                    rows.append((f"  retrieval mAP, pool {k}", r))
            label = f"retrieval mAP (full pool {row['pool_size']})"
            rows.append((label, row))
            if "retrieval_pool_mean" in summary:
                rows.append(("  retrieval, mean of pools", summary["retrieval_pool_mean"]))
            continue
        rows.append((label, row))
    return rows


def format_table(results: dict[str, dict]) -> str:
    """The usual HPatches table: one row per (feature, task), columns Easy Hard Tough mean;
    retrieval per pool size, the full pool (headline) and the benchmark's mean over pools."""
    fw = max([12] + [len(f) for f in results])
    lw = 32
    lines = [f"{'feature':<{fw}} {'task':<{lw}} {'Easy':>7} {'Hard':>7} {'Tough':>7} {'mean':>7}"]
    lines.append("-" * len(lines[0]))
    for feat, r in results.items():
        for label, row in _table_rows(r["summary"]):
            lines.append(f"{feat:<{fw}} {label:<{lw}} " + " ".join(
                f"{row[c]:7.2f}" for c in ("e", "h", "t", "mean")))
    return "\n".join(lines)


def plot_results(results: dict[str, dict], path: Path) -> None:
    """Bar chart: one panel per task, grouped bars Easy/Hard/Tough/mean per feature."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [(k, lbl) for k, lbl in TABLE_ROWS if k != "verification_auc"
              and any(k in r["summary"] for r in results.values())]
    if not panels or not results:
        return
    feats = list(results)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2 + 0.2 * len(feats)),
                             squeeze=False)
    cols = ("e", "h", "t", "mean")
    colors = ("#4c9a2a", "#e0a526", "#c0392b", "#555555")
    w = 0.8 / len(cols)
    for ax, (key, label) in zip(axes[0], panels):
        x = np.arange(len(feats))
        for j, (c, col) in enumerate(zip(cols, colors)):
            vals = [results[f]["summary"].get(key, {}).get(c, np.nan) for f in feats]
            ax.bar(x + (j - 1.5) * w, vals, w, color=col,
                   label=LEVEL_NAMES.get(c, "mean"), edgecolor="k", linewidth=0.5)
        ax.set_xticks(x)
        ax.set_xticklabels(feats, rotation=20)
        ax.set_ylim(0, 100)
        ax.set_title(label)
        ax.grid(axis="y", linestyle="--", alpha=0.5)
    axes[0][0].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def run(features: Sequence[str], data: str | Path | None = None, split: str = "full",
        outputs: str | Path = DEFAULTS["outputs"], tasks: Sequence[str] = TASKS,
        device: str | None = None, synth_root: str | Path | None = None,
        synth_seqs: int = DEFAULTS["synth_seqs"], synth_patches: int = DEFAULTS["synth_patches"],
        synth_seed: int = DEFAULTS["synth_seed"], pool_sizes: Sequence[int] = POOL_SIZES,
        verif_pairs: int = DEFAULTS["verif_pairs"]) -> dict[str, Any]:
    """Evaluate features on HPatches; writes ``<outputs>/results.json`` and ``hpatches.png``.

    Features that cannot be loaded (missing weights) are skipped with a note in ``skipped``.
    """
    from descriptors import registry
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {bad}: choose from {', '.join(TASKS)}")
    release, synthetic = resolve_data(data, synth_root, synth_seqs, synth_patches, synth_seed)
    patches = hp.read_hpatches(release)
    task_defs, test, source = load_task_defs(release, split, patches, verif_pairs=verif_pairs)
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for f in features:
        try:
            results[str(f)] = evaluate_feature(str(f), patches, task_defs, test, tasks, device,
                                               pool_sizes=pool_sizes)
        except registry.DescriptorError as e:
            logger.warning("skipping %s: %s", f, e)
            skipped[str(f)] = str(e)
    out = {"data": str(release), "synthetic": synthetic, "split": split,
           "n_sequences": len(test), "n_patches": int(sum(len(patches[s]["ref"]) for s in test)),
           "tasks_source": source, "metrics_impl": "descriptors.metrics",
           "n_verif_pairs": len(task_defs["pos"]), "n_queries": len(task_defs["queries"]),
           "n_distractors": len(task_defs["distractors"]),
           "features": results, "skipped": skipped}
    outputs = Path(outputs)
    _write_json(outputs / "results.json", out)
    plot_results(results, outputs / "hpatches.png")
    out["table"] = format_table(results)
    return out


# --------------------------------------------------------------------------------------------
# Full-image matching accuracy (hpatches-sequences layout)
# --------------------------------------------------------------------------------------------

MMA_DEFAULTS: dict[str, Any] = {
    "thresholds": tuple(range(1, 11)),   # px, MMA
    "homography_thresholds": (1, 3, 5),  # px, mean corner error
    "max_keypoints": 2000,
    "contrast_threshold": 0.02,
    "ransac_reproj": 3.0,                # cv2.findHomography RANSAC threshold, px
    "max_side": 0,                       # 0 = full resolution (D2-Net); N = downscale long side to N
}


def read_image_sequence(seq_dir: str | Path) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Read ``<seq>/{1..6}.(ppm|png|jpg)`` (grayscale uint8) and ``H_1_{2..6}`` (3x3 float64).

    Returns (images, homographies H_1_k for k = 2..N, image file names).
    """
    d = Path(seq_dir)
    if not d.is_dir():
        raise hp.HPatchesError(f"{d}: no such sequence folder")
    imgs, names, Hs = [], [], []
    for i in range(1, 100):
        f = next((d / f"{i}{ext}" for ext in (".ppm", ".png", ".jpg", ".pgm")
                  if (d / f"{i}{ext}").is_file()), None)
        if f is None:
            break
        im = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise hp.HPatchesError(f"{f}: not a readable image")
        imgs.append(im)
        names.append(f.name)
        if i > 1:
            hf = d / f"H_1_{i}"
            if not hf.is_file():
                raise hp.HPatchesError(f"{hf}: missing homography file")
            try:
                H = np.loadtxt(hf, dtype=np.float64)
            except ValueError:
                raise hp.HPatchesError(f"{hf}: not a 3x3 matrix of numbers") from None
            if H.shape != (3, 3):
                raise hp.HPatchesError(f"{hf}: shape {H.shape}, expected (3, 3)")
            Hs.append(H)
    if len(imgs) < 2:
        raise hp.HPatchesError(f"{d}: expected images 1.(ppm|png) .. 6.(ppm|png), found {len(imgs)}")
    return imgs, Hs, names


def _features(gray: np.ndarray, extractor: Any, max_keypoints: int, contrast_threshold: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """DoG keypoints + patch descriptors -> (xy (N, 2), desc (N, D))."""
    from descriptors.patches import detect_dog
    from descriptors.patches import extract_patches, opencv_angle_to_ori
    _, xy, size, angle, _ = detect_dog(gray, max_keypoints, contrast_threshold)
    if len(xy) == 0:
        return xy, np.zeros((0, int(extractor.dim)), np.float32)
    ps = int(getattr(extractor, "patch_size", 32))
    patches = extract_patches(gray, xy, size, opencv_angle_to_ori(angle), patch_size=ps)
    return xy.astype(np.float64), np.asarray(extractor(patches), np.float32)


def mutual_nn(d0: np.ndarray, d1: np.ndarray) -> np.ndarray:
    """Mutual nearest neighbours of unit descriptors -> (M, 2) index pairs."""
    if len(d0) == 0 or len(d1) == 0:
        return np.zeros((0, 2), np.int64)
    sim = d0.astype(np.float32) @ d1.astype(np.float32).T
    nn01 = sim.argmax(1)
    nn10 = sim.argmax(0)
    i = np.flatnonzero(nn10[nn01] == np.arange(len(d0)))
    return np.stack([i, nn01[i]], 1).astype(np.int64)


def _corner_error(H_est: np.ndarray | None, H_gt: np.ndarray, w: int, h: int) -> float:
    from descriptors.data.synth import apply_homography
    if H_est is None:
        return float("inf")
    c = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    return float(np.mean(np.linalg.norm(apply_homography(H_est, c) - apply_homography(H_gt, c),
                                        axis=1)))


def full_image_mma(seq_dir: str | Path, extractor_name: Any,
                   thresholds: Sequence[float] = MMA_DEFAULTS["thresholds"],
                   max_keypoints: int = MMA_DEFAULTS["max_keypoints"],
                   homography_thresholds: Sequence[float] = MMA_DEFAULTS["homography_thresholds"],
                   contrast_threshold: float = MMA_DEFAULTS["contrast_threshold"],
                   ransac_reproj: float = MMA_DEFAULTS["ransac_reproj"],
                   max_side: int = MMA_DEFAULTS["max_side"], device: str | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """Mean matching accuracy of image 1 against images 2..6 of one sequence.

    Per pair (1, k): DoG keypoints (``descriptors.patches.detect_dog``, strongest ``max_keypoints``),
    oriented patches (``extract_patches``, mr_size 12, 32x32), registry descriptors, mutual
    nearest neighbours; a match is correct at t px when ``|H_1_k x1 - x2| <= t`` (pixels of
    image k). MMA@t = mean over pairs of the per-pair fraction (D2-Net / R2D2 style). Homography:
    ``cv2.findHomography(RANSAC, ransac_reproj)`` on the matches; mean corner error of the 4
    image-1 corners; accuracy@e = fraction of pairs with error <= e px (SuperPoint style).
    Images are used at full resolution, as D2-Net's HPatches-sequences evaluation; with
    ``max_side`` > 0, images whose long side exceeds it are downscaled for detection and
    description (keypoints mapped back; H and errors stay in original pixels).

    Args:
        seq_dir: folder ``<seq>/{1..6}.(ppm|png)`` + ``H_1_k``.
        extractor_name: registry name / checkpoint path, or an already loaded Extractor.
    Returns:
        {"mma": {t: frac}, "homography_acc": {e: frac}, "pairs": [per-pair dicts],
         "n_keypoints": mean, "n_matches": mean, "feature": name}
    """
    from descriptors import registry
    cv2.setRNGSeed(seed)
    ext = registry.load(extractor_name, device=device) if isinstance(extractor_name, (str, Path)) \
        else extractor_name
    imgs, Hs, names = read_image_sequence(seq_dir)
    feats, scales = [], []
    for im in imgs:
        sc = max_side / max(im.shape) if max_side and max(im.shape) > max_side else 1.0
        g = cv2.resize(im, None, fx=sc, fy=sc, interpolation=cv2.INTER_AREA) if sc != 1.0 else im
        xy, d = _features(g, ext, max_keypoints, contrast_threshold)
        feats.append(((xy + 0.5) / sc - 0.5, d))   # back to original pixel centres
        scales.append(sc)
    h0, w0 = imgs[0].shape
    pairs = []
    from descriptors.data.synth import apply_homography
    for k, H in enumerate(Hs, start=2):
        (xy0, d0), (xyk, dk) = feats[0], feats[k - 1]
        m = mutual_nn(d0, dk)
        p0, pk = xy0[m[:, 0]], xyk[m[:, 1]]
        err = np.linalg.norm(apply_homography(H, p0) - pk, axis=1) if len(m) else np.zeros(0)
        acc = {float(t): (float(np.mean(err <= t)) if len(m) else 0.0) for t in thresholds}
        H_est = None
        if len(m) >= 4:
            H_est, _ = cv2.findHomography(p0.astype(np.float32), pk.astype(np.float32),
                                          cv2.RANSAC, ransac_reproj)
        cerr = _corner_error(H_est, H, w0, h0)
        pairs.append({"pair": f"{names[0]}-{names[k - 1]}", "n_matches": int(len(m)),
                      "n_kp": [int(len(xy0)), int(len(xyk))], "mma": acc,
                      "corner_error": cerr if np.isfinite(cerr) else None})
    name = getattr(ext, "name", str(extractor_name))
    return {
        "feature": name, "seq": str(seq_dir), "detector_scale": scales,
        "mma": {float(t): float(np.mean([p["mma"][float(t)] for p in pairs])) for t in thresholds},
        "homography_acc": {float(e): float(np.mean([
            p["corner_error"] is not None and p["corner_error"] <= e for p in pairs]))
            for e in homography_thresholds},
        "n_keypoints": float(np.mean([len(f[0]) for f in feats])),
        "n_matches": float(np.mean([p["n_matches"] for p in pairs])),
        "pairs": pairs,
    }


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", nargs="+", default=["sift"],
                   help="registry names or checkpoint paths")
    p.add_argument("--data", default=None,
                   help="hpatches-release folder (default: datasets/hpatches-release, else the "
                        "synthetic set)")
    p.add_argument("--split", default=DEFAULTS["split"])
    p.add_argument("--outputs", default=str(DEFAULTS["outputs"]))
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--device", default=None)
    p.add_argument("--synth-root", default=str(DEFAULTS["synth_root"]))
    p.add_argument("--synth-seqs", type=int, default=DEFAULTS["synth_seqs"])
    p.add_argument("--synth-patches", type=int, default=DEFAULTS["synth_patches"])
    p.add_argument("--synth-seed", type=int, default=DEFAULTS["synth_seed"])
    p.add_argument("--verif-pairs", type=int, default=DEFAULTS["verif_pairs"],
                   help="rows per verification file when task files must be generated")
    p.add_argument("--pool-sizes", type=int, nargs="+", default=list(POOL_SIZES))
    return p.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> dict[str, Any]:
    """CLI entry point; exits with status 1 (one line on stderr) on bad data, or when a
    requested feature could not be loaded (after evaluating and writing the others)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    a = _parse_args(argv)
    try:
        out = run(a.features, a.data, a.split, a.outputs, a.tasks, a.device, a.synth_root,
                  a.synth_seqs, a.synth_patches, a.synth_seed, a.pool_sizes, a.verif_pairs)
    except hp.HPatchesError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"HPatches split '{out['split']}' on {out['data']}"
          f"{' (synthetic)' if out['synthetic'] else ''}: {out['n_sequences']} sequences, "
          f"{out['n_patches']} patches; tasks: {out['tasks_source']}")
    print(out["table"])
    for f, why in out["skipped"].items():
        print(f"skipped {f}: {why}")
    print(f"wrote {Path(a.outputs) / 'results.json'} and {Path(a.outputs) / 'hpatches.png'}")
    if out["skipped"]:
        raise SystemExit("error: could not load " + "; ".join(
            f"{f}: {str(why).splitlines()[0] if why else ''}" for f, why in out["skipped"].items()))
    return out


if __name__ == "__main__":
    main()
