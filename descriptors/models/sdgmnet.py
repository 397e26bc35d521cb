"""SDGMNet128: the HyNet-style body of SDGMNet / SDB (filter response normalisation + TLU).

Architecture (Tian et al., "HyNet", NeurIPS 2020, as adopted by SDGMNet and the SDB reference):

    input  (B, 1, 32, 32) float32 in [0, 1]
    FRN(1) TLU(1)                                   input normalisation (learned)
    conv3x3(1->32)    FRN TLU     -> (B, 32, 32, 32)
    conv3x3(32->32)   FRN TLU     -> (B, 32, 32, 32)
    conv3x3/2(32->64) FRN TLU     -> (B, 64, 16, 16)
    conv3x3(64->64)   FRN TLU     -> (B, 64, 16, 16)
    conv3x3/2(64->128) FRN TLU    -> (B, 128, 8, 8)
    conv3x3(128->128) FRN TLU     -> (B, 128, 8, 8)
    dropout 0.3, conv8x8(128->dim, no bias), BatchNorm (affine-free) -> (B, dim, 1, 1)
    L2 normalise                  -> (B, dim) float32, unit norm

FRN (Singh & Krishnan, CVPR 2020): per sample and channel, x / sqrt(mean_hw(x^2) + |eps|), then a
learned per-channel scale and bias; TLU: max(x, tau) with a learned per-channel tau (init -1).
FRN needs no batch statistics, so every hidden layer behaves the same in train and eval mode;
only the final BatchNorm keeps running statistics (as in the reference). Convolutions 1-6 have
biases (the reference's ``is_bias=True``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from descriptors.models.l2net import check_patches


class FRN(nn.Module):
    """Filter response normalisation: (B, C, H, W) -> (B, C, H, W), per-channel scale / bias."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("eps", torch.tensor([eps]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nu2 = x.square().mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        return torch.addcmul(self.bias, x, torch.rsqrt(nu2 + self.eps.abs()) * self.weight)


class TLU(nn.Module):
    """Thresholded linear unit max(x, tau), tau learned per channel (init -1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.tau = nn.Parameter(torch.full((1, channels, 1, 1), -1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, self.tau)


def _layer(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=True), FRN(cout), TLU(cout)
    )


class SDGMNet128(nn.Module):
    """(B, 1, 32, 32) float in [0, 1] -> (B, dim) L2-normalised descriptors (FRN + TLU body)."""

    patch_size = 32

    def __init__(self, dim: int = 128, dropout: float = 0.3):
        super().__init__()
        self.dim = dim
        self.features = nn.Sequential(
            FRN(1),
            TLU(1),
            _layer(1, 32),
            _layer(32, 32),
            _layer(32, 64, 2),
            _layer(64, 64),
            _layer(64, 128, 2),
            _layer(128, 128),
            nn.Dropout(dropout),
            nn.Conv2d(128, dim, 8, bias=False),
            nn.BatchNorm2d(dim, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_patches(x, self.patch_size)
        y = self.features(x)
        return F.normalize(y.flatten(1), dim=1)
