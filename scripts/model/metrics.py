"""Validation metrics (ignite) for the dual-face depth network: depth MAE (mm) and mask Dice per bone.

Each metric stores its overall value under its attached name (a scalar usable as MONAI key metric)
and the per-channel values under ``{name}_{bone}[_{face}]``, so StatsHandler and
TensorBoardStatsHandler log all of them. Inputs are ``(output, label)`` batches as in
:mod:`scripts.model.losses`; works under torch.distributed (sums are all-reduced).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from scripts.geometry import BONES
from scripts.model.losses import face_masks, label_targets
from scripts.model.networks import absolute_depth, masked_mean_depth, split_output

FACES = ("front", "back")
SHIFTS = ("centre", "oracle", "raw")


class _ChannelMetric(Metric):
    """Accumulates per-channel numerators/denominators; overall value = mean over non-empty channels."""

    def __init__(
        self, names: Sequence[str], output_transform: Callable = lambda x: x, device: str | torch.device = "cpu"
    ):
        self.channel_names = list(names)
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._num = torch.zeros(len(self.channel_names), dtype=torch.float64, device=self._device)
        self._den = torch.zeros(len(self.channel_names), dtype=torch.float64, device=self._device)

    def _add(self, num: torch.Tensor, den: torch.Tensor) -> None:
        self._num += num.detach().to(self._device, torch.float64)
        self._den += den.detach().to(self._device, torch.float64)

    @sync_all_reduce("_num", "_den")
    def _values(self) -> torch.Tensor:
        return torch.where(
            self._den > 0, self._num / self._den.clamp(min=1e-12), torch.full_like(self._num, float("nan"))
        )

    def compute(self) -> float:
        values = self._values()
        valid = values[~torch.isnan(values)]
        return float(valid.mean()) if valid.numel() else float("nan")

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        for channel, value in zip(self.channel_names, self._values().tolist(), strict=True):
            engine.state.metrics[f"{name}_{channel}"] = value


class DepthMAE(_ChannelMetric):
    """Mean absolute depth error (mm) over ground-truth masked pixels, per bone and face.

    Args:
        shift: ``"centre"``: absolute depth from the network's centre-depth estimate
            (:func:`scripts.model.networks.absolute_depth`, weights = predicted mask probabilities);
            ``"oracle"``: the best single shift per image from the ground truth; ``"raw"``: no shift.
        bones, faces: as in the network (faces=1: front only).
    """

    def __init__(
        self,
        shift: str = "centre",
        bones: Sequence[str] = BONES,
        faces: int = 2,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ):
        if shift not in SHIFTS:
            raise ValueError(f"shift must be one of {SHIFTS}, got {shift!r}")
        self.shift, self.bones, self.faces = shift, tuple(bones), int(faces)
        super().__init__([f"{b}_{f}" for b in self.bones for f in FACES[: self.faces]], output_transform, device)

    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Accumulate |error| (mm) and pixel counts of one (pred, label) batch."""
        pred, label = _batch(output)
        nb = len(self.bones)
        out = split_output(pred, nb, self.faces)
        target, mask = label_targets(label, nb, self.faces)
        valid = face_masks(target, mask, self.faces)
        depth = out["depth"]
        if self.shift == "centre":
            weights = torch.sigmoid(out["mask_logits"]).repeat_interleave(self.faces, dim=1)
            depth = absolute_depth(depth, weights, out["centre"])
        elif self.shift == "oracle":
            depth = absolute_depth(depth, valid, masked_mean_depth(target, valid))
        self._add(((depth - target).abs() * valid).sum(dim=(0, 2, 3)), valid.sum(dim=(0, 2, 3)))


class MaskDice(_ChannelMetric):
    """Dice of the thresholded (sigmoid > 0.5) mask per bone, pooled over the data set."""

    def __init__(
        self,
        bones: Sequence[str] = BONES,
        faces: int = 2,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ):
        self.bones, self.faces = tuple(bones), int(faces)
        super().__init__(list(self.bones), output_transform, device)

    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Accumulate Dice numerators and denominators of one (pred, label) batch."""
        pred, label = _batch(output)
        nb = len(self.bones)
        p = (split_output(pred, nb, self.faces)["mask_logits"] > 0).to(pred.dtype)
        t = label_targets(label, nb, self.faces)[1]
        self._add(2.0 * (p * t).sum(dim=(0, 2, 3)), (p + t).sum(dim=(0, 2, 3)))


def _batch(output: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, label) from a batch tensor pair or from lists of per-sample tensors (decollated)."""
    pred, label = output
    if isinstance(pred, (list, tuple)):
        pred, label = torch.stack(list(pred)), torch.stack(list(label))
    return torch.as_tensor(pred), torch.as_tensor(label)
