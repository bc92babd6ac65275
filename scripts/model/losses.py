"""Training losses: CASI (centre-aligned scale-invariant) depth loss, mask loss, centre-depth loss.

All depth tensors are (N, C, H, W) distances from the X-ray source in mm (camera frame, docs/architecture.md);
masks are {0, 1} (or soft weights) of the same shape. The network output and label layouts are
those of :mod:`scripts.model.networks` (``split_output``) and :mod:`scripts.model.transforms` (label = depth
channels followed by mask channels).
"""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from scripts.model.networks import front_face_channels, masked_mean_depth, split_output
from torch import nn


class CASILoss(nn.Module):
    """Centre-aligned scale-invariant log-depth loss (docs/architecture.md, "CASI loss").

    1. centre alignment (``center_align=True``): one shift per sample over all channels,
       ``shift = sum(m (t - p)) / (sum(m) + eps)``, ``p' = p + shift`` (gradients flow through it);
    2. ``g = log(relu(p') + eps) - log(t + eps)`` on masked pixels, statistics per (sample, channel)
       when ``per_channel`` else pooled per sample: ``m = sum(g) / T``, ``q = sum(g^2) / T``,
       ``T = sum(mask) + eps``;
    3. loss = mean over non-empty groups of ``sqrt(max(q - lam m^2, eps))``; 0 (with a graph) if
       every group is empty.

    Args:
        lam: weight of the scale-invariance term (0: plain log-RMSE, 1: fully scale invariant).
        per_channel: per (sample, channel) statistics if True, pooled over channels if False.
        eps: numerical floor for logs, denominators and the square root.
        center_align: apply step 1; ``False`` gives the plain scale-invariant loss (Eigen et al.).
    """

    def __init__(self, lam: float = 0.85, per_channel: bool = True, eps: float = 1e-8, center_align: bool = True):
        super().__init__()
        self.lam = float(lam)
        self.per_channel = bool(per_channel)
        self.eps = float(eps)
        self.center_align = bool(center_align)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """pred, target: (N, C, H, W) depths in mm; mask: (N, C, H, W) in [0, 1]. Returns a scalar."""
        if pred.shape != target.shape or pred.shape != mask.shape:
            raise ValueError(
                f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} must match"
            )
        mask = mask.to(pred.dtype)
        if self.center_align:
            pred = pred + masked_mean_depth(target - pred, mask, self.eps)[:, None, None, None]
        g = (torch.log(torch.relu(pred) + self.eps) - torch.log(torch.relu(target) + self.eps)) * mask
        dims = (2, 3) if self.per_channel else (1, 2, 3)
        count = mask.sum(dim=dims)
        total = count + self.eps
        mean = g.sum(dim=dims) / total
        mean_sq = (g * g).sum(dim=dims) / total
        per_group = torch.sqrt(torch.clamp(mean_sq - self.lam * mean * mean, min=self.eps))
        valid = (count > 0).to(pred.dtype)
        return (per_group * valid).sum() / valid.sum().clamp(min=1.0)


class CentreDepthLoss(nn.Module):
    """L1 (mm) between the predicted centre depth (N,) and the mean masked target depth; empty samples skipped."""

    def forward(self, centre: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """centre: (N,) mm; target, mask: (N, C, H, W) depths in mm and their weights. Returns a scalar (mm)."""
        valid = (mask.sum(dim=(1, 2, 3)) > 0).to(centre.dtype)
        err = (centre - masked_mean_depth(target, mask)).abs()
        return (err * valid).sum() / valid.sum().clamp(min=1.0)


class DualFaceDepthLoss(nn.Module):
    """Combined training loss on the network output and the label tensor.

    ``label`` = concat(depth (2B, mm, bone-major front/back), mask (B)) along channels. With
    ``faces=1`` only the front faces are supervised (the single-face baseline).

    loss = depth_weight * depth_loss(depth, target depth, face masks)
         + mask_weight * (Dice + BCE)(mask logits, masks) + centre_weight * L1(centre, mean masked depth) [mm].

    Args:
        bones: number of bones B.
        faces: 2 (front and back) or 1 (front only).
        depth_loss: CASI, scale-invariant or any ``(pred, target, mask) -> scalar`` module.
        depth_weight, mask_weight, centre_weight: term weights (centre L1 is in mm, so its weight is small).
    """

    def __init__(
        self,
        bones: int = 3,
        faces: int = 2,
        depth_loss: nn.Module | None = None,
        depth_weight: float = 1.0,
        mask_weight: float = 1.0,
        centre_weight: float = 0.01,
    ):
        super().__init__()
        self.bones, self.faces = int(bones), int(faces)
        self.depth_loss = depth_loss if depth_loss is not None else CASILoss()
        # multi-label (bones overlap): sigmoid Dice + BCE (MONAI's DiceCELoss uses softmax CE for C > 1)
        self.dice_loss = DiceLoss(sigmoid=True, include_background=True)
        self.bce_loss = nn.BCEWithLogitsLoss()
        self.centre_loss = CentreDepthLoss()
        self.weights = (float(depth_weight), float(mask_weight), float(centre_weight))

    def forward(self, output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """output: network output (N, faces*B + B + 1, H, W); label: (N, 3B, H, W) depth (mm) then mask. Returns a scalar."""
        out = split_output(output, self.bones, self.faces)
        target, target_mask = label_targets(label, self.bones, self.faces)
        face_mask = face_masks(target, target_mask, self.faces)
        wd, wm, wc = self.weights
        return (
            wd * self.depth_loss(out["depth"], target, face_mask)
            + wm * (self.dice_loss(out["mask_logits"], target_mask) + self.bce_loss(out["mask_logits"], target_mask))
            + wc * self.centre_loss(out["centre"], target, face_mask)
        )


def label_targets(label: torch.Tensor, bones: int, faces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a label (N, 2B + B, H, W) into the supervised depth (N, faces*B, H, W) and mask (N, B, H, W)."""
    if label.shape[1] != 3 * bones:
        raise ValueError(f"label must have {3 * bones} channels (2B depth + B mask), got {label.shape[1]}")
    depth, mask = label[:, : 2 * bones], label[:, 2 * bones :]
    if faces == 1:
        depth = depth[:, front_face_channels(bones)]
    return depth, mask


def face_masks(depth: torch.Tensor, mask: torch.Tensor, faces: int) -> torch.Tensor:
    """Per depth-channel validity (N, faces*B, H, W) of depth (N, faces*B, H, W) mm and masks (N, B, H, W): the bone
    mask repeated per face and depth > 0."""
    return mask.repeat_interleave(faces, dim=1) * (depth > 0).to(mask.dtype)
