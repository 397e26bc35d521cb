"""Published descriptor checkpoints, loaded from the authors' own files (never downloaded).

``load_published(obj, path)`` takes what :func:`descriptors.models.safe_torch_load` read from a
file, finds the layout from its keys (and a few shapes) and returns a :class:`PublishedNet`:
(B, 1, 32, 32) float32 patches in [0, 1] -> (B, D) float32 unit vectors, like every model here.
Layouts (``kind``): ``tfeat``, ``hardtfeat``, ``hardnet``, ``hardnet_ps``, ``hardnet8``,
``sosnet``, ``hynet``; each network is preprocessed as its authors do (TFeat: raw 0..255 input,
its output L2-normalised here). ``module.`` prefixes (``nn.DataParallel``) are accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from descriptors.models import CheckpointError
from descriptors.models.l2net import L2Net, check_patches

logger = logging.getLogger(__name__)

PATCH_SIZE = 32


class PublishedFormatError(CheckpointError):
    """The file is readable but its keys match no known descriptor layout."""


class HardTFeat(nn.Module):
    """TFeat layout trained with the HardNet loss (ducha-aiki/affnet ``HardTFeatNet``).

    (B, 1, 32, 32) float -> (B, 128) unit vectors: per-patch standardisation
    (``L2Net.normalize_input``), conv7x7(1->32) tanh maxpool2 conv6x6(32->64) tanh,
    dropout 0.1, conv8x8(64->128) tanh, L2 normalisation.
    """

    def __init__(self, dim: int = 128):
        super().__init__()
        self.dim = dim
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=7),
            nn.Tanh(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(32, 64, kernel_size=6),
            nn.Tanh(),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.1), nn.Conv2d(64, dim, kernel_size=8), nn.Tanh()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.classifier(self.features(L2Net.normalize_input(x)))
        return F.normalize(y.flatten(1), dim=1)


class HardNetPS(nn.Module):
    """HardNet trained on the PS dataset (DagnyT/hardnet ``3rd_party/HardNetPS``).

    L2-Net blocks with conv biases and affine BN, final conv8x8 with bias and no BN;
    (B, 1, 32, 32) float -> (B, 128) unit vectors after per-patch standardisation.
    """

    def __init__(self, dim: int = 128):
        super().__init__()
        self.dim = dim
        layers: list[nn.Module] = []
        for cin, cout, stride in (
            (1, 32, 1),
            (32, 32, 1),
            (32, 64, 2),
            (64, 64, 1),
            (64, 128, 2),
            (128, 128, 1),
        ):
            layers += [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
        self.features = nn.Sequential(*layers, nn.Conv2d(128, dim, kernel_size=8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(L2Net.normalize_input(x)).flatten(1), dim=1)


class PublishedNet(nn.Module):
    """A publisher's network behind the project's model contract.

    (B, 1, 32, 32) float32 in [0, 1] -> (B, dim) float32 unit vectors. ``input_scale`` multiplies
    the patch first (255 for TFeat, whose authors feed 0..255); the output is L2-normalised here
    whatever the network does (a no-op for networks that already normalise; TFeat does not).
    """

    patch_size = PATCH_SIZE

    def __init__(self, net: nn.Module, kind: str, dim: int, input_scale: float = 1.0):
        super().__init__()
        self.net = net
        self.kind = kind
        self.dim = int(dim)
        self.input_scale = float(input_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_patches(x, self.patch_size)
        y = self.net(x * self.input_scale if self.input_scale != 1.0 else x)
        return F.normalize(y.flatten(1).float(), dim=1)


def _shape(sd: dict, key: str) -> tuple[int, ...] | None:
    v = sd.get(key)
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def _kornia(name: str, **kwargs: Any) -> Callable[[dict], nn.Module]:
    def build(sd: dict) -> nn.Module:
        import kornia.feature as KF

        return getattr(KF, name)(pretrained=False, **kwargs)

    return build


def _hynet(sd: dict) -> nn.Module:
    import kornia.feature as KF

    return KF.HyNet(
        pretrained=False,
        is_bias="layer1.2.bias" in sd,
        dim_desc=int(sd["layer7.1.weight"].shape[0]),
    )


@dataclass(frozen=True)
class Layout:
    """One published key layout: how to recognise it and how to build its network."""

    kind: str
    matches: Callable[[dict], bool]
    build: Callable[[dict], nn.Module]
    dim: Callable[[dict], int]
    input_scale: float = 1.0
    drop_prefixes: tuple[str, ...] = ()


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "tfeat",
        lambda sd: (
            _shape(sd, "features.1.weight") == (32, 1, 7, 7)
            and _shape(sd, "features.4.weight") == (64, 32, 6, 6)
            and "descr.0.weight" in sd
        ),
        _kornia("TFeat"),
        lambda sd: int(sd["descr.0.weight"].shape[0]),
        input_scale=255.0,
    ),
    Layout(
        "hardtfeat",
        lambda sd: (
            _shape(sd, "features.0.weight") == (32, 1, 7, 7)
            and _shape(sd, "features.3.weight") == (64, 32, 6, 6)
            and "classifier.1.weight" in sd
        ),
        lambda sd: HardTFeat(int(sd["classifier.1.weight"].shape[0])),
        lambda sd: int(sd["classifier.1.weight"].shape[0]),
        drop_prefixes=("SIFT.",),
    ),
    Layout(
        "hardnet8",
        lambda sd: "components" in sd and "mean" in sd and "features.22.weight" in sd,
        _kornia("HardNet8"),
        lambda sd: int(sd["components"].shape[1]),
    ),
    Layout(
        "sosnet",
        lambda sd: _shape(sd, "layers.1.weight") == (32, 1, 3, 3) and "layers.20.weight" in sd,
        _kornia("SOSNet"),
        lambda sd: int(sd["layers.20.weight"].shape[0]),
    ),
    Layout(
        "hynet",
        lambda sd: "layer1.2.weight" in sd and "layer7.1.weight" in sd,
        _hynet,
        lambda sd: int(sd["layer7.1.weight"].shape[0]),
    ),
    Layout(
        "hardnet",
        lambda sd: (
            _shape(sd, "features.0.weight") == (32, 1, 3, 3)
            and "features.0.bias" not in sd
            and "features.19.weight" in sd
            and "features.20.running_mean" in sd
        ),
        lambda sd: L2Net(dim=int(sd["features.19.weight"].shape[0])),
        lambda sd: int(sd["features.19.weight"].shape[0]),
    ),
    Layout(
        "hardnet_ps",
        lambda sd: (
            _shape(sd, "features.0.weight") == (32, 1, 3, 3)
            and "features.0.bias" in sd
            and "features.1.weight" in sd
            and "features.18.weight" in sd
        ),
        lambda sd: HardNetPS(int(sd["features.18.weight"].shape[0])),
        lambda sd: int(sd["features.18.weight"].shape[0]),
    ),
)


def _summary(keys: list[str], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return f"{shown}, ... ({len(keys)} keys)" if len(keys) > n else shown or "none"


def unwrap_state_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The tensor state dict inside a published file (bare, or under ``'state_dict'``)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise PublishedFormatError(
            f"{path}: not a descriptor checkpoint (a {type(obj).__name__}, not a state dict)"
        )
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise PublishedFormatError(
            f"{path}: unknown descriptor checkpoint layout: no tensors "
            f"(keys: {_summary([str(k) for k in obj])})"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def detect_layout(sd: dict[str, torch.Tensor]) -> Layout | None:
    """The first layout in :data:`LAYOUTS` whose key signature ``sd`` has, else None."""
    for layout in LAYOUTS:
        if layout.matches(sd):
            return layout
    return None


def _fill_bn_counters(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    want = model.state_dict()
    out = dict(sd)
    for k, v in want.items():
        if k.endswith("num_batches_tracked") and k not in out:
            out[k] = torch.zeros_like(v)
    return out


def load_published(obj: Any, path: str | Path) -> PublishedNet:
    """Build the network a published checkpoint (already read by ``safe_torch_load``) holds.

    Args:
        obj: the loaded file (a state dict, or a dict with ``'state_dict'``).
        path: the file, for messages.
    Returns:
        PublishedNet in eval mode, float32 weights, on CPU.
    Raises:
        PublishedFormatError: no known layout (message names the file and the keys found).
        CheckpointError: a known layout whose tensors do not fit it.
    """
    sd = unwrap_state_dict(obj, path)
    layout = detect_layout(sd)
    if layout is None:
        raise PublishedFormatError(
            f"{path}: unknown descriptor checkpoint layout (keys: {_summary(list(sd))}); known: "
            f"this project's ('arch' + 'state_dict'), {', '.join(x.kind for x in LAYOUTS)}"
        )
    sd = {
        k: (v.float() if v.is_floating_point() else v)
        for k, v in sd.items()
        if not k.startswith(layout.drop_prefixes)
    }
    try:
        net = layout.build(sd)
        net.load_state_dict(_fill_bn_counters(net, sd), strict=True)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(
            f"{path}: looks like a {layout.kind} checkpoint but its weights do "
            f"not fit: {str(e).splitlines()[0]}"
        ) from None
    model = PublishedNet(net, layout.kind, layout.dim(sd), layout.input_scale).eval()
    logger.info("%s: published %s descriptor, dim %d", path, layout.kind, model.dim)
    return model
