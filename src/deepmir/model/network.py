"""The DEEPMIR network: a U-Net with more resolution levels than the usual four.

Rashid et al. (Sci Rep 2021) deepened the U-Net so that small lesions keep
enough context at standard resolution. deepmir builds it on MONAI's ``UNet``
(residual units, instance norm), 3D by default; input channels are the chosen
modalities, output channels the contract's four labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
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


def build_network(config: NetworkConfig, in_channels: int) -> torch.nn.Module:
    """The U-Net for ``in_channels`` modalities and the contract's labels."""
    if len(config.strides) != len(config.channels) - 1:
        raise ValueError("NetworkConfig: need one stride per level transition")
    return UNet(
        spatial_dims=config.spatial_dims,
        in_channels=in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm=config.norm,
        dropout=config.dropout,
    )
