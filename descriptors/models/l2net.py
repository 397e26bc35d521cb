"""L2-Net body as used by HardNet, HNDesc and the difficulty-balancing recipe.

Architecture (Tian et al. 2017, as in the HardNet repo ``HardNet.py``):
conv3x3(1->32) BN ReLU, conv3x3(32->32) BN ReLU, conv3x3/2(32->64) BN ReLU, conv3x3(64->64) BN
ReLU, conv3x3/2(64->128) BN ReLU, conv3x3(128->128) BN ReLU, dropout 0.3, conv8x8(128->128) BN,
L2 normalise. BatchNorms are affine-free, as in HardNet.

Input normalisation is done inside (per-patch: subtract the patch mean, divide by its std), so
callers pass raw (B, 1, 32, 32) float32 patches in [0, 1]. Output (B, 128) float32, unit L2 norm.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout, affine=False),
        nn.ReLU(inplace=True),
    ]


def check_patches(x: torch.Tensor, size: int) -> None:
    """Raise ValueError with a one-line message unless x is (B, 1, size, size) floating point."""
    if (
        not isinstance(x, torch.Tensor)
        or x.ndim != 4
        or x.shape[1] != 1
        or x.shape[2] != size
        or x.shape[3] != size
    ):
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"expected patches of shape (B, 1, {size}, {size}), got {shape}")
    if not torch.is_floating_point(x):
        raise ValueError(f"expected float patches in [0, 1], got dtype {x.dtype}")


class L2Net(nn.Module):
    """(B, 1, 32, 32) float in [0, 1] -> (B, dim) L2-normalised descriptors."""

    patch_size = 32

    def __init__(self, dim: int = 128, dropout: float = 0.3):
        super().__init__()
        self.dim = dim
        self.features = nn.Sequential(
            *_block(1, 32),
            *_block(32, 32),
            *_block(32, 64, 2),
            *_block(64, 64),
            *_block(64, 128, 2),
            *_block(128, 128),
            nn.Dropout(dropout),
            nn.Conv2d(128, dim, 8, bias=False),
            nn.BatchNorm2d(dim, affine=False),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight, gain=0.6)

    @staticmethod
    def normalize_input(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
        flat = x.flatten(1)
        mu = flat.mean(1).view(-1, 1, 1, 1)
        sd = flat.std(1).view(-1, 1, 1, 1)
        return (x - mu) / (sd + eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_patches(x, self.patch_size)
        x = self.normalize_input(x)
        if x.device.type == "cpu" and x.dtype == torch.float32:
            # oneDNN float32 convolutions run faster channels-last on CPU (as kornia's HardNet)
            x = x.to(memory_format=torch.channels_last)
        y = self.features(x)
        return F.normalize(y.flatten(1), dim=1)
