"""WLRN: the 32x32 -> 64 descriptor network learned from weakly-labelled keypoint bags.

Source: N. Markus, I. S. Pandzic, J. Ahlberg, "Learning Local Descriptors by Optimizing the
Keypoint-Correspondence Criterion", arXiv 1603.09095 (Table 1), and the authors' released Torch7
net ``nn/32x32_to_64.net`` (papers/000_*.txt)::

    conv 1->32 3x3, ReLU          32x32 -> 30x30
    conv 32->64 4x4 stride 2, ReLU 30x30 -> 14x14
    conv 64->128 3x3 (no activation) 14x14 -> 12x12
    max-pool 2x2 stride 2          12x12 -> 6x6
    conv 128->32 1x1 (no activation) -> 32 x 6 x 6 = 1152
    linear 1152 -> 64, L2 normalise

(~180k parameters as in the paper: 320 + 32832 + 73856 + 4128 + 73792 = 184,928.)

Input: (B, 1, 32, 32) float32 in [0, 1]. Difference to the released net: it takes raw [0, 1)
pixels; this toolkit's convention is that every model normalises its own input, so each patch is
standardised inside (zero mean, unit std per patch), which makes the descriptor invariant to affine
intensity changes. Output: (B, 64) float32, unit L2 norm.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

PATCH_SIZE: int = 32
EPS: float = 1e-6


def normalize_patches(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-patch standardisation: (x - mean(x)) / (std(x) + eps) over each patch's pixels.

    Args:
        x: (B, C, H, W) float.
    Returns:
        same shape, each patch zero-mean and (unless flat) unit std.
    """
    flat = x.reshape(x.shape[0], -1)
    mu = flat.mean(1).view(-1, 1, 1, 1)
    sd = flat.std(1, unbiased=False).view(-1, 1, 1, 1)
    return (x - mu) / (sd + eps)


class WLRN(nn.Module):
    """The wlrn 32x32 -> ``dim`` network (published: ``dim=64``).

    Args:
        dim: output descriptor dimension (64 in the paper).
    Forward:
        (B, 1, 32, 32) float32 in [0, 1] -> (B, dim) float32, unit L2 norm.
    """

    patch_size: int = PATCH_SIZE

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.dim = int(dim)
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3),  # 32 -> 30
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 4, stride=2),  # 30 -> 14
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3),  # 14 -> 12
            nn.MaxPool2d(2, 2),  # 12 -> 6
            nn.Conv2d(128, 32, 1),  # 32 x 6 x 6
        )
        self.fc = nn.Linear(32 * 6 * 6, self.dim)  # 1152 -> dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != PATCH_SIZE or x.shape[3] != PATCH_SIZE:
            raise ValueError(
                f"WLRN expects (B, 1, {PATCH_SIZE}, {PATCH_SIZE}) patches, got {tuple(x.shape)}"
            )
        x = normalize_patches(x.float())
        f = self.features(x)
        return F.normalize(self.fc(f.flatten(1)), p=2, dim=1)
