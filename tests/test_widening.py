"""Growing a trained network (scripts.model.widening, `pretrained_widen`): the wider network starts out computing
the trained one's maps, and its new channels learn."""

from __future__ import annotations

import pytest
import torch
from scripts.io.files import InputFileError
from scripts.model.checkpoints import load_weights
from scripts.model.networks import DualFaceDepthNet
from scripts.model.widening import widen_state_dict

SMALL = [4, 4, 8, 8, 16, 4]


def trained(features=SMALL, **kw) -> DualFaceDepthNet:
    """A network whose weights are far from their initial values (as after training), in eval mode."""
    torch.manual_seed(0)
    net = DualFaceDepthNet(features=features, **kw)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


@pytest.mark.parametrize(
    "wide, kw",
    [
        ([8, 8, 16, 16, 32, 8], {}),  # every level doubled
        ([5, 7, 8, 11, 17, 6], {}),  # uneven growth, odd widths (the upsampling halves 17 channels to 8)
        ([8, 8, 16, 16, 32, 8], {"faces": 1}),  # the single-face baseline
        ([8, 8, 16, 16, 32, 8], {"in_channels": 2}),  # with the field-of-view channel
    ],
)
def test_wider_network_starts_with_the_same_maps(wide, kw):
    small = trained(**kw)
    torch.manual_seed(1)
    big = DualFaceDepthNet(features=wide, **kw)
    big.load_state_dict(widen_state_dict(small.state_dict(), big))
    big.eval()
    x = torch.randn(3, kw.get("in_channels", 1), 32, 32)
    with torch.no_grad():
        want, got = small(x), big(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3)  # mm depths near 950: float32 rounding only
    fresh = DualFaceDepthNet(features=wide, **kw).eval()
    with torch.no_grad():
        assert (fresh(x) - want).abs().max() > 1.0  # an unrelated network of that size gives other maps


def test_new_channels_learn():
    """The new channels are live: their weights get gradients (the ones reading them start at zero)."""
    small = trained()
    big = DualFaceDepthNet(features=[8, 8, 16, 16, 32, 8])
    big.load_state_dict(widen_state_dict(small.state_dict(), big))
    big(torch.randn(2, 1, 32, 32)).square().mean().backward()
    read_new = big.down_2.convs.conv_0.conv.weight  # (16, 8, 3, 3): input channels 4..7 are new in down_1's output
    assert torch.all(read_new.detach()[:, 4:] == 0) and read_new.grad[:, 4:].abs().sum() > 0
    assert big.final_conv.weight.grad[:, 4:].abs().sum() > 0 and big.centre_head[4].weight.grad[:, 16:].abs().sum() > 0


@pytest.mark.parametrize(
    "other, problem",
    [
        (dict(features=[2, 4, 8, 8, 16, 4]), "does not fit"),  # narrower at one level
        (dict(features=[8, 8, 16, 16, 32, 8], faces=1), "different output maps"),
        (dict(features=[8, 8, 16, 16, 32, 8], in_channels=2), "different input channels"),
    ],
)
def test_what_cannot_be_widened_is_refused(tmp_path, other, problem):
    path = tmp_path / "small.pt"
    torch.save(trained().state_dict(), path)
    with pytest.raises(InputFileError, match=f"{path}: cannot widen into network_def: .*{problem}"):
        load_weights(path, DualFaceDepthNet(**other), widen=True)


def test_load_weights_widens_only_when_asked(tmp_path):
    path = tmp_path / "small.pt"
    small = trained()
    torch.save(small.state_dict(), path)
    with pytest.raises(InputFileError, match="another bundle version or network configuration"):
        load_weights(path, DualFaceDepthNet(features=[8, 8, 16, 16, 32, 8]))
    big = load_weights(path, DualFaceDepthNet(features=[8, 8, 16, 16, 32, 8]), widen=True).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=0, atol=1e-3)
