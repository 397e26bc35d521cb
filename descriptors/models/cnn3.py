"""CNN3: the fully convolutional siamese descriptor of the "fracking" paper.

Simo-Serra et al., "Fracking Deep Convolutional Image Descriptors", arXiv 1412.6537, Sec. 3.1
(ICCV 2015: "Discriminative Learning of Deep Convolutional Feature Point Descriptors"). Three
layers of filter, tanh, L2 pooling (Torch7 ``SpatialLPPooling``) and subtractive normalisation,
no padding, sparse connectivity in layers 2-3, 46,272 parameters as in the paper::

    layer  input   filter          pooling (L2)   norm     output
    1      64x64   7x7, 1->32      2x2 /2          yes      32 x 29 x 29
    2      29x29   6x6, 32->64     3x3 /3          yes      64 x 8 x 8
    3      8x8     5x5, 64->128    4x4 /4          no       128 x 1 x 1  -> 128-d

Input: (B, 1, 64, 64) float32 patches in [0, 1] (``input_size=32``: 32x32 upsampled inside),
standardised by the training-set ``mean`` / ``std`` buffers (the paper), or with
``input_norm='patch'`` each patch by its own mean / std (the L2-Net / HardNet convention:
invariant to affine intensity change, e.g. night). Output: (B, 128), unit vectors
with components >= 0 when ``normalize=True``, else the paper's raw output.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from descriptors.models.wlrn import normalize_patches

EPS: float = 1e-6


def gaussian_kernel(size: int = 5, sigma_rel: float = 0.25) -> torch.Tensor:
    """Torch7 ``image.gaussian(size)``: un-normalised (size, size) Gaussian.

    sigma = sigma_rel * size pixels (1.25 px for the 5x5 kernel).
    """
    c = (size - 1) / 2.0
    r = torch.arange(size, dtype=torch.float32) - c
    g = torch.exp(-0.5 * (r / (sigma_rel * size)) ** 2)
    return g[:, None] * g[None, :]


def random_connection_mask(c_in: int, c_out: int, fan_in: int, seed: int) -> torch.Tensor:
    """(c_out, c_in) 0/1 mask: each output sees ``fan_in`` distinct inputs; input use balanced.

    Built from concatenated random permutations of the inputs, so each input map feeds
    ``c_out * fan_in / c_in`` outputs (rounded), as Torch7's ``nn.tables.random``-style sparse maps.
    """
    if fan_in >= c_in:
        return torch.ones(c_out, c_in)
    rng = np.random.default_rng(seed)
    n_perm = -(-c_out * fan_in // c_in)
    stream = np.concatenate([rng.permutation(c_in) for _ in range(n_perm)])
    mask = np.zeros((c_out, c_in), np.float32)
    for o in range(c_out):
        chosen = list(dict.fromkeys(stream[o * fan_in : (o + 1) * fan_in].tolist()))
        if len(chosen) < fan_in:  # a repeat across a permutation boundary: fill at random
            rest = [i for i in rng.permutation(c_in).tolist() if i not in chosen]
            chosen += rest[: fan_in - len(chosen)]
        mask[o, chosen] = 1.0
    return torch.from_numpy(mask)


class SparseConv2d(nn.Conv2d):
    """Conv2d whose input->output map connectivity is a fixed random 0/1 mask (buffer)."""

    def __init__(self, c_in: int, c_out: int, k: int, fan_in: int, seed: int) -> None:
        super().__init__(c_in, c_out, k)
        mask = random_connection_mask(c_in, c_out, fan_in, seed)
        self.register_buffer("conn_mask", mask[:, :, None, None])
        # re-initialise for the actual fan-in (fan_in * k * k), as PyTorch's default would do
        bound = 1.0 / math.sqrt(min(fan_in, c_in) * k * k)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound).mul_(self.conn_mask)
            self.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.conn_mask, self.bias)

    def n_effective_params(self) -> int:
        return (
            int(self.conn_mask.sum().item()) * self.kernel_size[0] * self.kernel_size[1]
            + self.out_channels
        )


LP_WEIGHTS: tuple[str, ...] = ("none", "fixed", "learned")


class L2Pool2d(nn.Module):
    """L2 pooling over k x k windows (stride k): sqrt(w_c sum x^2 + b_c + eps) per plane c.

    Args:
        k: window side and stride.
        channels: planes C (needed unless ``lp_weights='none'``).
        lp_weights: 'none' (w = 1, b = 0, no parameters), 'fixed' (Torch7 SpatialLPPooling:
            parameters w = 1, b = 0 that are not trained), 'learned' (trained).
    Forward: (B, C, H, W) -> (B, C, H // k, W // k).
    """

    def __init__(self, k: int, channels: int = 0, lp_weights: str = "none") -> None:
        super().__init__()
        if lp_weights not in LP_WEIGHTS:
            raise ValueError(
                f"L2Pool2d: lp_weights must be one of {LP_WEIGHTS}, got '{lp_weights}'"
            )
        self.k = k
        self.lp_weights = lp_weights
        if lp_weights != "none":
            learn = lp_weights == "learned"
            self.weight = nn.Parameter(torch.ones(channels), requires_grad=learn)
            self.bias = nn.Parameter(torch.zeros(channels), requires_grad=learn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.avg_pool2d(x * x, self.k, self.k) * (self.k * self.k)
        if self.lp_weights != "none":
            s = (s * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)).clamp_min(0.0)
        return torch.sqrt(s + EPS)


class SubtractiveNorm2d(nn.Module):
    """Torch7 ``SpatialSubtractiveNormalization(C, gaussian 5x5)`` (no parameters).

    mean(x)[b, :, i, j] = sum_{c, u, v} w(u, v) x[b, c, i+u, j+v] / coef(i, j), with w the Gaussian
    normalised to sum 1/C over (u, v) (so the sum over c and (u, v) is 1), zero padding, and
    coef = the same filter applied to ones (border correction). Output: x - mean(x).
    """

    def __init__(self, size: int = 5) -> None:
        super().__init__()
        g = gaussian_kernel(size)
        self.register_buffer("kernel", (g / g.sum())[None, None], persistent=False)
        self.pad = size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(1, keepdim=True)  # sum over maps / C
        m = F.conv2d(avg, self.kernel, padding=self.pad)
        coef = F.conv2d(torch.ones_like(avg[:1]), self.kernel, padding=self.pad)
        return x - m / coef


class CNN3(nn.Module):
    """Fracking CNN3, 64x64 (or 32x32, upsampled inside) patches -> ``dim``-d descriptor.

    Args:
        input_size: 64 (paper) or 32 (older toolkit checkpoints; bilinear upsample inside).
        dim: output dimension; must be 128 (the width of the third conv layer).
        fan_in: input maps seen by each output map of layers 2 and 3 (paper/Torch: 8; 0 = dense).
        seed: seed of the random connection tables (stored as buffers, so checkpoints keep them).
        lp_weights: per-plane L2-pooling weights, 'none' | 'fixed' (Torch7) | 'learned'.
        normalize: L2-normalise the output (toolkit); False = the paper's raw output.
        input_norm: 'dataset' (paper: the ``mean`` / ``std`` buffers) or 'patch' (each patch
            to zero mean, unit std).
    Buffers:
        ``mean``, ``std``: training-set pixel mean / std (units of [0, 1] images).
    Forward:
        (B, 1, input_size, input_size) float32 in [0, 1] -> (B, 128) float32 (unit L2 norm if
        ``normalize``).
    """

    def __init__(
        self,
        input_size: int = 64,
        dim: int = 128,
        fan_in: int = 8,
        seed: int = 0,
        lp_weights: str = "none",
        normalize: bool = True,
        input_norm: str = "dataset",
    ) -> None:
        super().__init__()
        if input_norm not in ("dataset", "patch"):
            raise ValueError(f"CNN3 input_norm must be 'dataset' or 'patch', got '{input_norm}'")
        self.input_norm = input_norm
        if input_size not in (32, 64):
            raise ValueError(f"CNN3 input_size must be 64 or 32, got {input_size}")
        if dim != 128:
            raise ValueError(
                f"CNN3 is fully convolutional: dim is the 3rd layer's width 128, got {dim}"
            )
        self.input_size = int(input_size)
        self.patch_size = self.input_size
        self.dim = int(dim)
        self.normalize = bool(normalize)
        fi = fan_in if fan_in and fan_in > 0 else 10**6
        self.conv1 = nn.Conv2d(1, 32, 7)  # 64 -> 58
        self.pool1 = L2Pool2d(2, 32, lp_weights)  # 58 -> 29
        self.norm1 = SubtractiveNorm2d(5)
        self.conv2 = SparseConv2d(32, 64, 6, fi, seed)  # 29 -> 24
        self.pool2 = L2Pool2d(3, 64, lp_weights)  # 24 -> 8
        self.norm2 = SubtractiveNorm2d(5)
        self.conv3 = SparseConv2d(64, self.dim, 5, fi, seed + 1)  # 8 -> 4
        self.pool3 = L2Pool2d(4, self.dim, lp_weights)  # 4 -> 1
        self.register_buffer("mean", torch.tensor(0.5))
        self.register_buffer("std", torch.tensor(0.25))

    @torch.no_grad()
    def set_input_stats(self, mean: float, std: float) -> None:
        """Store the training-set pixel mean / std ([0, 1] units) used to normalise inputs."""
        if not (std > 0):
            raise ValueError(f"CNN3 input std must be > 0, got {std}")
        self.mean.fill_(float(mean))
        self.std.fill_(float(std))

    def n_effective_params(self) -> int:
        """Parameters that are not masked out: 45,824 conv weights + biases, plus 448 L2-pooling
        weights + biases unless ``lp_weights='none'`` (46,272: the paper's CNN3 count)."""
        pools = sum(p.numel() for m in (self.pool1, self.pool2, self.pool3) for p in m.parameters())
        return (
            sum(p.numel() for p in self.conv1.parameters())
            + self.conv2.n_effective_params()
            + self.conv3.n_effective_params()
            + pools
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(
                f"CNN3(input_size={s}) expects (B, 1, {s}, {s}) patches, got {tuple(x.shape)}"
            )
        if self.input_norm == "patch":
            x = normalize_patches(x.float())
        else:
            x = (x.float() - self.mean) / self.std
        if s != 64:
            x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        x = self.norm1(self.pool1(torch.tanh(self.conv1(x))))
        x = self.norm2(self.pool2(torch.tanh(self.conv2(x))))
        x = self.pool3(torch.tanh(self.conv3(x))).flatten(1)
        return F.normalize(x, p=2, dim=1) if self.normalize else x
