"""The DEEPMIR network: a U-Net with more resolution levels than the usual four.

Rashid et al. (Sci Rep 2021) deepened the U-Net so that small lesions keep
enough context at standard resolution. deepmir builds it on MONAI's ``UNet``
(residual units, instance norm), 3D by default; input channels are the chosen
modalities, output channels the contract's four labels.

MONAI's ``UNet`` never sees the input at full resolution: its first layer is
a stride-2 convolution, its skip connections join half-resolution features,
and the full-resolution output is one transposed convolution into the four
class channels (instance-normalized) and a 4-channel residual unit. A 1-voxel
CMB has to pass through that bottleneck, and the shipped models miss most of
them, clearly visible ones included, on their own training subjects too.
``full_resolution_channels`` > 0 adds a *full-resolution head*: a 3x3x3
convolution of the input at full resolution (instance norm, PReLU: a local
dot detector of that many channels), joined with the U-Net's logits by one
more 3x3x3 convolution whose output is added to the logits. That last
convolution starts at zero, so a model with the head starts exactly as the
U-Net it was initialized from (zero-initialized residual branches, as in
ControlNet's zero convolutions). The head is kept to two layers because
full-resolution convolutions dominate the cost on a CPU: with 8 channels a
training step took 0.51 s against 0.31 s without it (v0.7 and v0.5 on 2
cores: ``seconds`` / ``iterations_run`` in their config.json). The blocks
are MONAI's ``Convolution``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import UNet

from deepmir.labels import LABELS


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of the network (saved in every model's config.json)."""

    spatial_dims: int = 3
    channels: tuple[int, ...] = (16, 32, 48, 64, 96, 128)  # six resolution levels
    strides: tuple[int, ...] = (2, 2, 2, 2, 2)
    num_res_units: int = 1
    norm: str = "instance"
    dropout: float = 0.0
    out_channels: int = len(LABELS)
    #: width of the full-resolution head (module docstring); 0: none
    full_resolution_channels: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> NetworkConfig:
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        d["strides"] = tuple(d["strides"])
        return NetworkConfig(**d)

    @property
    def divisor(self) -> int:
        """Patch sizes must be multiples of this (product of strides)."""
        out = 1
        for s in self.strides:
            out *= s
        return out


@dataclass(frozen=True)
class TinyNetworkConfig(NetworkConfig):
    """A small network for tests: same code path, a fraction of the cost."""

    channels: tuple[int, ...] = field(default=(4, 8, 16))
    strides: tuple[int, ...] = field(default=(2, 2))


class HeadedUNet(torch.nn.Module):
    """A U-Net plus the full-resolution head of the module docstring."""

    def __init__(self, unet: UNet, config: NetworkConfig, in_channels: int) -> None:
        super().__init__()
        self.unet = unet
        width, dims, out = config.full_resolution_channels, config.spatial_dims, config.out_channels
        self.stem = Convolution(dims, in_channels, width, kernel_size=3, norm=config.norm)
        self.head = Convolution(dims, width + out, out, kernel_size=3, conv_only=True)
        last = self.head.conv
        assert isinstance(last, torch.nn.Conv3d | torch.nn.Conv2d | torch.nn.Conv1d)
        torch.nn.init.zeros_(last.weight)
        assert last.bias is not None
        torch.nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.unet(x)
        return logits + self.head(torch.cat([self.stem(x), logits], dim=1))


def build_network(config: NetworkConfig, in_channels: int) -> torch.nn.Module:
    """The U-Net for ``in_channels`` modalities and the contract's labels, with
    the full-resolution head when ``config.full_resolution_channels`` > 0."""
    if len(config.strides) != len(config.channels) - 1:
        raise ValueError("NetworkConfig: need one stride per level transition")
    if config.full_resolution_channels < 0:
        raise ValueError("NetworkConfig: full_resolution_channels must be >= 0")
    unet = UNet(
        spatial_dims=config.spatial_dims,
        in_channels=in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm=config.norm,
        dropout=config.dropout,
    )
    if config.full_resolution_channels == 0:
        return unet
    return HeadedUNet(unet, config, in_channels)


def unet_of(net: torch.nn.Module) -> torch.nn.Module:
    """The U-Net inside ``net`` (``net`` itself when it has no head): where the
    weights of a model without a head go when it initializes one with a head."""
    return net.unet if isinstance(net, HeadedUNet) else net
