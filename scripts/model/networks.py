"""The dual-face depth network: one radiograph in, per-bone depth maps, mask logits and a centre depth out.

The network returns ONE tensor (N, faces*B + B + 1, H, W) so that TorchScript, ONNX, MONAI's
``verify_net_in_out`` and MONAI Deploy can handle it. Channels:

- ``0 .. faces*B-1``: depth (mm from the source), bone-major ``[b0 front, b0 back, b1 front, ...]``
  (front only when ``faces=1``); relative ("shift-free") when trained with CASI;
- ``faces*B .. faces*B+B-1``: mask logits, one per bone (overlapping bones allowed, sigmoid);
- last: the centre-depth estimate (mm), a scalar per image broadcast over (H, W).

Depths are ``prior_mean_mm + prior_scale_mm * raw`` so the raw activations stay O(1).
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.nets import BasicUNet
from torch import nn


class DualFaceDepthNet(BasicUNet):
    """MONAI BasicUNet (2D, four 2x downsamplings: H, W multiples of 16) with a global centre-depth head.

    Args:
        in_channels: radiograph channels (1).
        bones: number of bones B.
        faces: 2 (front and back faces) or 1 (front only).
        features: BasicUNet feature sizes (6 values).
        depth_prior_mm: (mean, scale) of the per-pixel depth affine, mm.
        centre_prior_mm: (mean, scale) of the centre-depth affine, mm.
        dropout: BasicUNet dropout.
    """

    def __init__(
        self,
        in_channels: int = 1,
        bones: int = 3,
        faces: int = 2,
        features: Sequence[int] = (16, 16, 32, 64, 128, 16),
        depth_prior_mm: Sequence[float] = (950.0, 50.0),
        centre_prior_mm: Sequence[float] = (950.0, 50.0),
        dropout: float = 0.0,
    ):
        if faces not in (1, 2):
            raise ValueError(f"faces must be 1 or 2, got {faces}")
        super().__init__(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=faces * bones + bones,
            features=tuple(features),
            dropout=dropout,
        )
        self.bones, self.faces = int(bones), int(faces)
        self.n_depth = self.faces * self.bones
        deep = int(features[4])
        self.centre_head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(deep, deep), nn.ReLU(inplace=True), nn.Linear(deep, 1)
        )
        self.depth_mean, self.depth_scale = float(depth_prior_mm[0]), float(depth_prior_mm[1])
        self.centre_mean, self.centre_scale = float(centre_prior_mm[0]), float(centre_prior_mm[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, in_channels, H, W) normalised radiograph -> (N, faces*B + B + 1, H, W)."""
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        u4 = self.upcat_4(x4, x3)
        u3 = self.upcat_3(u4, x2)
        u2 = self.upcat_2(u3, x1)
        u1 = self.upcat_1(u2, x0)
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):  # output layers in float32
            maps = self.final_conv(u1.float())
            centre = self.centre_mean + self.centre_scale * self.centre_head(x4.float())
        depth = self.depth_mean + self.depth_scale * maps[:, : self.n_depth]
        centre_map = centre[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return torch.cat([depth, maps[:, self.n_depth :], centre_map], dim=1)


def front_face_channels(bones: int) -> list[int]:
    """Indices of the front-face channels among 2B bone-major depth channels."""
    return list(range(0, 2 * bones, 2))


def split_output(output: torch.Tensor, bones: int = 3, faces: int = 2) -> dict[str, torch.Tensor]:
    """Split the network output into ``depth`` (N, faces*B, H, W) mm, ``mask_logits`` (N, B, H, W), ``centre`` (N,) mm."""
    n_depth = faces * bones
    if output.shape[1] != n_depth + bones + 1:
        raise ValueError(
            f"output has {output.shape[1]} channels, expected {n_depth + bones + 1} for {bones} bones x {faces} faces"
        )
    return {
        "depth": output[:, :n_depth],
        "mask_logits": output[:, n_depth : n_depth + bones],
        "centre": output[:, -1].mean(dim=(1, 2)),
    }


def masked_mean_depth(depth: torch.Tensor, weights: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Weighted mean depth (mm) per sample over all channels: (N, C, H, W) -> (N,)."""
    weights = weights.to(depth.dtype)
    return (depth * weights).sum(dim=(1, 2, 3)) / (weights.sum(dim=(1, 2, 3)) + eps)


def absolute_depth(depth: torch.Tensor, weights: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Absolute depths (mm): ``depth + (centre - weighted mean depth)`` per sample.

    Args:
        depth: (N, C, H, W) relative depths in mm.
        weights: (N, C, H, W) mask or mask probabilities selecting the pixels of the mean; a sample
            with all-zero weights is left unshifted.
        centre: (N,) centre-depth estimate in mm (or the oracle mean masked target depth).
    """
    has = (weights.sum(dim=(1, 2, 3)) > 0).to(depth.dtype)
    shift = has * (centre - masked_mean_depth(depth, weights))
    return depth + shift[:, None, None, None]
