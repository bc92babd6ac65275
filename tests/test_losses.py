"""CASI / scale-invariant / combined losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from scripts.model.losses import CASILoss, CentreDepthLoss, DualFaceDepthLoss


def t(values) -> torch.Tensor:
    """(1, C, 1, W) float64 tensor from nested lists [channel][pixel]."""
    return torch.tensor(values, dtype=torch.float64)[None, :, None, :]


def si_value(p: list[float], q: list[float], lam: float = 0.85) -> float:
    """sqrt(mean g^2 - lam mean(g)^2) for g = log p - log q, written out by hand."""
    g = [math.log(a) - math.log(b) for a, b in zip(p, q, strict=True)]
    m = sum(g) / len(g)
    return math.sqrt(sum(x * x for x in g) / len(g) - lam * m * m)


def test_casi_hand_computed():
    # shift = ((2 - 1) + (3 - 5)) / 2 = -0.5, so p' = [0.5, 4.5]
    loss = CASILoss()(t([[1.0, 5.0]]), t([[2.0, 3.0]]), torch.ones(1, 1, 1, 2, dtype=torch.float64))
    assert loss.item() == pytest.approx(si_value([0.5, 4.5], [2.0, 3.0]), rel=1e-6)
    assert loss.item() == pytest.approx(0.9157934, rel=1e-5)


def test_scale_invariant_hand_computed_and_not_shift_invariant():
    pred, target, mask = t([[1.0, 5.0]]), t([[2.0, 3.0]]), torch.ones(1, 1, 1, 2, dtype=torch.float64)
    si = CASILoss(center_align=False)
    assert si(pred, target, mask).item() == pytest.approx(si_value([1.0, 5.0], [2.0, 3.0]), rel=1e-6)
    assert abs(si(pred + 50.0, target, mask).item() - si(pred, target, mask).item()) > 0.1
    # with lam = 1 it is exactly invariant to a global scale
    full = CASILoss(lam=1.0, center_align=False)
    assert full(3.0 * pred, target, mask).item() == pytest.approx(full(pred, target, mask).item(), rel=1e-6)


def test_casi_shift_invariant_and_zero_at_target():
    g = torch.Generator().manual_seed(0)
    target = 900.0 + 100.0 * torch.rand(2, 6, 8, 8, generator=g, dtype=torch.float64)
    mask = (torch.rand(2, 6, 8, 8, generator=g) > 0.3).double()
    pred = target + 5.0 * torch.randn(2, 6, 8, 8, generator=g, dtype=torch.float64)
    casi = CASILoss()
    base = casi(pred, target, mask)
    assert base.item() > 1e-3
    for offset in (-120.0, 37.5, 400.0):
        assert casi(pred + offset, target, mask).item() == pytest.approx(base.item(), rel=1e-9)
    assert casi(target, target, mask).item() == pytest.approx(0.0, abs=1e-3)  # sqrt(eps) floor
    assert casi(target - 80.0, target, mask).item() == pytest.approx(0.0, abs=1e-3)


def test_per_channel_versus_pooled():
    pred, target = t([[1.0, 5.0], [4.0, 2.0]]), t([[2.0, 3.0], [3.0, 3.0]])
    mask = torch.ones_like(pred)
    # one shift over both channels: sum(t - p) / 4 = (1 - 2 - 1 + 1) / 4 = -0.25
    p1, p2 = [0.75, 4.75], [3.75, 1.75]
    per_channel = (si_value(p1, [2.0, 3.0]) + si_value(p2, [3.0, 3.0])) / 2
    pooled = si_value(p1 + p2, [2.0, 3.0, 3.0, 3.0])
    assert CASILoss(per_channel=True)(pred, target, mask).item() == pytest.approx(per_channel, rel=1e-6)
    assert CASILoss(per_channel=False)(pred, target, mask).item() == pytest.approx(pooled, rel=1e-6)
    assert abs(per_channel - pooled) > 1e-3


def test_empty_channel_left_out():
    pred, target = t([[1.0, 5.0], [4.0, 9.0]]), t([[2.0, 3.0], [3.0, 3.0]])
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64).reshape(1, 2, 1, 2)
    expected = CASILoss()(pred[:, :1], target[:, :1], mask[:, :1]).item()
    assert CASILoss()(pred, target, mask).item() == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(si_value([0.5, 4.5], [2.0, 3.0]), rel=1e-6)


@pytest.mark.parametrize("loss", [CASILoss(), CASILoss(per_channel=False), CASILoss(center_align=False)])
def test_gradients_finite(loss):
    g = torch.Generator().manual_seed(1)
    target = 900.0 + 100.0 * torch.rand(2, 4, 6, 6, generator=g)
    mask = (torch.rand(2, 4, 6, 6, generator=g) > 0.5).float()
    mask[1] = 0.0  # one sample without any bone
    pred = (300.0 * torch.randn(2, 4, 6, 6, generator=g)).requires_grad_()  # negatives hit the relu
    value = loss(pred, target, mask)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # an all-empty mask gives 0 with a graph and finite (zero) gradients
    pred.grad = None
    empty = loss(pred, target, torch.zeros_like(mask))
    empty.backward()
    assert empty.item() == 0.0 and torch.isfinite(pred.grad).all()


def test_centre_depth_loss_l1_mm():
    target = t([[950.0, 970.0], [0.0, 0.0]]).repeat(2, 1, 1, 1)
    mask = t([[1.0, 1.0], [0.0, 0.0]]).repeat(2, 1, 1, 1)
    mask[1] = 0.0
    # sample 0: |940 - 960| = 20; sample 1 has no bone and is left out
    assert CentreDepthLoss()(torch.tensor([940.0, 0.0], dtype=torch.float64), target, mask).item() == pytest.approx(
        20.0
    )


def _perfect_output(label: torch.Tensor, bones: int, faces: int) -> torch.Tensor:
    depth, mask = label[:, : 2 * bones], label[:, 2 * bones :]
    if faces == 1:
        depth = depth[:, 0::2]
    face_mask = mask.repeat_interleave(faces, 1)
    centre = (depth * face_mask).sum((1, 2, 3)) / face_mask.sum((1, 2, 3))
    logits = 30.0 * (2.0 * mask - 1.0)
    return torch.cat([depth - 40.0, logits, centre[:, None, None, None].expand(-1, 1, *depth.shape[2:])], 1)


@pytest.mark.parametrize("faces", [2, 1])
def test_combined_loss(faces):
    g = torch.Generator().manual_seed(2)
    mask = (torch.rand(2, 3, 8, 8, generator=g) > 0.4).float()
    depth = (900.0 + 50.0 * torch.rand(2, 6, 8, 8, generator=g)) * mask.repeat_interleave(2, 1)
    label = torch.cat([depth, mask], 1)
    out = _perfect_output(label, 3, faces)  # relative depth off by 40 mm: CASI does not care
    loss = DualFaceDepthLoss(bones=3, faces=faces)
    assert loss(out, label).item() == pytest.approx(0.0, abs=2e-3)
    worse = out.clone()
    worse[:, -1] += 100.0  # centre estimate 100 mm off: 0.01 * 100 = 1
    assert loss(worse, label).item() == pytest.approx(1.0, abs=2e-3)
    with pytest.raises(ValueError):
        loss(out[:, :-1], label)
