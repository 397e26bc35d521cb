"""revisitop retrieval evaluation: mAP, mP@k and the Easy / Medium / Hard protocols.

``compute_map`` is a line-by-line re-implementation of revisitop ``python/evaluate.py`` (junk
removal shifting positive positions, queries without positives dropped, P@k denominator
``min(max positive position, k)``). ``evaluate_protocols`` builds the Easy / Medium / Hard setups
of ``example_evaluate.py`` from the ``easy`` / ``hard`` / ``junk`` lists of
``localize.data.roxford.RevisitopData.gnd``. Ranks are (n_db, nq): column q lists database
indices by decreasing similarity (``localize.retrieve.ranks_from_topk`` builds them).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from descriptors.tables import format_table

KAPPAS = (1, 5, 10)
SETUPS = (("E", "Easy"), ("M", "Medium"), ("H", "Hard"))


def compute_ap(ranks: np.ndarray, nres: int) -> float:
    """AP from sorted 0-based positions of the positives (junk removed); trapezoid rule."""
    ap = 0.0
    recall_step = 1.0 / nres
    for j, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def compute_map(
    ranks: np.ndarray, gnd: Sequence[dict], kappas: Sequence[int] = KAPPAS
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Mean average precision and mean precision@k, exactly as revisitop.

    Args:
        ranks: (n_db, nq) int; column q = database indices by decreasing similarity.
        gnd: nq dicts with ``ok`` (positives) and optionally ``junk`` (ignored) index lists.
        kappas: the k of precision@k.
    Returns:
        map (float, fraction), aps (nq,) (NaN for queries without positives),
        mpr (len(kappas),), prs (nq, len(kappas)) (NaN rows for queries without positives).
    Quirks kept: a positive's position is lowered by the number of junk images ranked before
    it; queries without positives are dropped from both averages; P@k divides by
    ``min(max 1-based positive position, k)``. One deviation: if no positive appears in
    ``ranks`` at all (only possible with truncated rankings; revisitop would crash on
    ``max([])``) the query scores AP = 0 and P@k = 0.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] != len(gnd):
        raise ValueError(f"ranks must be (n_db, nq={len(gnd)}), got shape {ranks.shape}")
    kappas = list(kappas)
    mean_ap = 0.0
    nq = len(gnd)
    aps = np.zeros(nq)
    pr = np.zeros(len(kappas))
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in range(nq):
        qgnd = np.asarray(gnd[i]["ok"], dtype=np.int64).reshape(-1)
        if qgnd.shape[0] == 0:
            aps[i] = float("nan")
            prs[i, :] = float("nan")
            nempty += 1
            continue
        qgndj = np.asarray(gnd[i].get("junk", []), dtype=np.int64).reshape(-1)
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while ip < len(pos):
                while ij < len(junk) and pos[ip] > junk[ij]:
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = compute_ap(pos, len(qgnd))
        mean_ap += ap
        aps[i] = ap
        pos = pos + 1
        for j, kap in enumerate(kappas):
            if len(pos) == 0:
                prs[i, j] = 0.0
                continue
            kq = min(max(pos), kap)
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    if nq - nempty == 0:
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    mean_ap = mean_ap / (nq - nempty)
    pr = pr / (nq - nempty)
    return float(mean_ap), aps, pr, prs


def protocol_gnd(gnd: Sequence[dict], setup: str) -> list[dict]:
    """Easy: ok=easy, junk=junk+hard; Medium: ok=easy+hard, junk=junk; Hard: ok=hard,
    junk=junk+easy (revisitop example_evaluate.py)."""
    out = []
    for g in gnd:
        easy = np.asarray(g.get("easy", []), np.int64)
        hard = np.asarray(g.get("hard", []), np.int64)
        junk = np.asarray(g.get("junk", []), np.int64)
        if setup == "E":
            out.append({"ok": easy, "junk": np.concatenate([junk, hard])})
        elif setup == "M":
            out.append({"ok": np.concatenate([easy, hard]), "junk": junk})
        elif setup == "H":
            out.append({"ok": hard, "junk": np.concatenate([junk, easy])})
        else:
            raise ValueError(f"unknown revisitop setup '{setup}' (expected E, M or H)")
    return out


def evaluate_protocols(
    ranks: np.ndarray, gnd: Sequence[dict], kappas: Sequence[int] = KAPPAS
) -> dict[str, dict]:
    """revisitop E / M / H evaluation.

    Returns:
        {'E'|'M'|'H': {'map': float, 'mpr': [float]*len(kappas), 'kappas': [...],
        'aps': (nq,) array, 'prs': (nq, K) array, 'n_valid': int}} - fractions, not x100.
    """
    out = {}
    for setup, _ in SETUPS:
        g = protocol_gnd(gnd, setup)
        m, aps, mpr, prs = compute_map(ranks, g, kappas)
        out[setup] = {
            "map": m,
            "mpr": [float(x) for x in mpr],
            "kappas": list(kappas),
            "aps": aps,
            "prs": prs,
            "n_valid": int(np.sum(~np.isnan(aps))),
        }
    return out


def format_results(results: dict[str, dict], title: str = "") -> str:
    """Table of E/M/H mAP and mP@k in percent, 2 decimals (revisitop print style)."""
    kappas = results["E"]["kappas"]
    head = ["setup", "mAP"] + [f"mP@{k}" for k in kappas] + ["#q"]
    rows = [
        [label, f"{100 * results[s]['map']:.2f}"]
        + [f"{100 * p:.2f}" for p in results[s]["mpr"]]
        + [results[s]["n_valid"]]
        for s, label in SETUPS
    ]
    return format_table(head, rows, title=title or None)
