"""Negative / positive miners. Each recipe's miner lives in its own marked section."""

from __future__ import annotations

import torch


# === hardnet ===
def hardest_in_batch(
    dist: torch.Tensor, anchor_swap: bool = True, duplicate_eps: float = 0.008
) -> torch.Tensor:
    """Distance to the hardest in-batch negative of each pair (HardNet).

    Args:
        dist: (B, B) distances, dist[i, j] = d(anchor_i, positive_j); diagonal = matching pairs.
        anchor_swap: also consider the positive's hardest negative (column minimum).
        duplicate_eps: off-diagonal entries closer than this are treated as duplicates and ignored.
    Returns:
        (B,) distances of the selected negatives.
    """
    b = dist.shape[0]
    eye = torch.eye(b, device=dist.device, dtype=torch.bool)
    big = 10.0
    masked = dist + big * eye.to(dist.dtype)
    masked = torch.where(masked < duplicate_eps, masked + big, masked)
    neg = masked.min(1).values
    if anchor_swap:
        neg = torch.minimum(neg, masked.min(0).values)
    return neg


def random_negatives(dist: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Distance to a uniformly random non-matching column for each row (control for HardNet).

    Args:
        dist: (B, B) distances with matching pairs on the diagonal.
    Returns:
        (B,) distances.
    """
    b = dist.shape[0]
    off = torch.randint(1, b, (b,), generator=generator).to(dist.device)
    j = (torch.arange(b, device=dist.device) + off) % b
    return dist[torch.arange(b, device=dist.device), j]


# === wlrn ===


# === fracking ===


def fracking_mine(
    losses_pos: torch.Tensor, losses_neg: torch.Tensor, r_p: int, r_n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """ "Fracking" (Simo-Serra et al., arXiv 1412.6537 sec. 3.2 / 4.3): keep the hardest pairs.

    Of a pool of B_P positive and B_N negative pairs (already forward-propagated), keep the
    B_P^M = B_P // R_P positives and B_N^M = B_N // R_N negatives with the HIGHEST loss; only
    those are back-propagated. R = 1 keeps everything (no mining). Paper: B^M = 128, R_P/R_N in
    {1/1, 1/2, 2/2, 4/4, 8/8} (8/8 best).

    Args:
        losses_pos: (B_P,) per-pair losses of the positives (e.g. ``hinge_embedding``).
        losses_neg: (B_N,) per-pair losses of the negatives.
        r_p, r_n: mining ratios R_P, R_N (integers >= 1).
    Returns:
        (idx_pos (B_P // R_P,), idx_neg (B_N // R_N,)) int64 indices, hardest first.
    """
    out = []
    for name, losses, r in (("positives", losses_pos, r_p), ("negatives", losses_neg, r_n)):
        r = int(r)
        if r < 1:
            raise ValueError(f"fracking_mine: ratio for {name} must be >= 1, got {r}")
        k = losses.numel() // r
        if k < 1:
            raise ValueError(f"fracking_mine: {losses.numel()} {name} cannot be mined 1/{r}")
        out.append(torch.topk(losses.detach().reshape(-1), k, largest=True, sorted=True).indices)
    return out[0], out[1]


# === sdb ===
