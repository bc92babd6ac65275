"""Grow a trained network: embed its weights into a wider :class:`DualFaceDepthNet` that computes the same maps.

Fine-tuning a larger network from a smaller trained one (``pretrained_widen`` in configs/train.yaml) keeps
what the smaller one learned instead of starting from random weights. Every layer's old channels keep their
weights; the new channels get the wider network's fresh initial weights on their inputs and zero weights
wherever a later layer reads them, so at the start the wider network's output equals the smaller one's
(up to float rounding) while every new weight receives gradients. Instance norm acts per channel, so the
new channels do not disturb the old ones. The network layout (MONAI BasicUNet, its upsampling blocks
concatenating ``[skip, upsampled]`` channels) and its input and output channels must match.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


def _input_dim(module: nn.Module) -> int:
    """The weight dimension that indexes a layer's input channels."""
    return 0 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 1


def _concat_index(old_in: int, new_in: int, old_up: int, new_up: int) -> torch.Tensor:
    """Positions in the wider ``[skip, upsampled]`` concatenation of the old one's channels."""
    old_skip, new_skip = old_in - old_up, new_in - new_up
    return torch.cat([torch.arange(old_skip), new_skip + torch.arange(old_up)])


def widen_state_dict(state: Mapping[str, torch.Tensor], network: nn.Module) -> dict[str, torch.Tensor]:
    """``network``'s state dict with the (narrower or equal) ``state`` of the same layout embedded in it.

    Args:
        state: weights of the trained network (a state dict of a :class:`DualFaceDepthNet` with smaller or
            equal ``features``, same input and output channels).
        network: the wider network (freshly initialised: its own weights fill the new output channels).

    Raises:
        ValueError: other parameter names, fewer channels somewhere, or other input or output channels.
    """
    own = network.state_dict()
    if set(own) != set(state):
        raise ValueError("the weights are of another network layout (parameter names differ)")
    if own["conv_0.conv_0.conv.weight"].shape[1] != state["conv_0.conv_0.conv.weight"].shape[1]:
        raise ValueError("the networks have different input channels (fov_channel)")
    if own["final_conv.bias"].shape != state["final_conv.bias"].shape:
        raise ValueError("the networks have different output maps (bones, faces)")
    modules = dict(network.named_modules())
    out = {}
    for key, new in own.items():
        old = state[key]
        if old.dim() != new.dim() or any(o > n for o, n in zip(old.shape, new.shape, strict=True)):
            raise ValueError(
                f"{key}: {tuple(old.shape)} does not fit into {tuple(new.shape)} (a wider network has at least as many channels)"
            )
        module_name = key.rpartition(".")[0]
        index = [torch.arange(n) for n in old.shape]  # the old channels' positions in the wider tensor, per dimension
        widened = new.clone()
        if old.dim() >= 2:  # a weight: zero where it reads the new input channels
            d = _input_dim(modules[module_name])
            if module_name.startswith("upcat_") and module_name.endswith(
                "convs.conv_0.conv"
            ):  # reads [skip, upsampled]
                deconv = module_name.replace("convs.conv_0.conv", "upsample.deconv.weight")
                index[d] = _concat_index(old.shape[d], new.shape[d], state[deconv].shape[1], own[deconv].shape[1])
            reads_new = torch.ones(new.shape[d], dtype=torch.bool)
            reads_new[index[d]] = False
            widened.index_fill_(d, torch.nonzero(reads_new).flatten(), 0.0)
        widened[torch.meshgrid(*index, indexing="ij")] = old
        out[key] = widened
    return out
