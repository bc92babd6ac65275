"""MONAI dictionary transforms for dual-face depth training.

Samples follow docs/architecture.md: ``image`` (1, H, W) bone-bright radiograph, ``depth``
(2B, H, W) mm bone-major [front, back] per bone, ``mask`` (B, H, W), ``geometry`` a
:class:`scripts.geometry.Geometry`. Arrays are indexed ``[..., v, u]``. Nothing here moves pixels
off their rays except the geometry-aware left-right flip, which mirrors the geometry with them.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import GaussianSmooth, MapTransform, RandomizableTransform
from scripts.geometry import Geometry, GeometryError, match_bone_channels, read_geometry
from scripts.io.files import InputFileError


class LoadGeometryd(MapTransform):
    """Replace ``geometry.json`` paths by :class:`Geometry` objects, resized to ``image_size`` (W, H) if given.

    ``bones``: the network's channel names. A sample whose geometry lists its bones in another order
    gets its ``depth`` (2 per bone) and ``mask`` channels reordered by name, and the geometry those
    names; a sample lacking one of them is refused. Raises :class:`InputFileError` naming the file.
    """

    def __init__(
        self,
        keys: KeysCollection = "geometry",
        image_size: Sequence[int] | None = None,
        bones: Sequence[str] | None = None,
        depth_key: str = "depth",
        mask_key: str = "mask",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.bones = None if bones is None else tuple(bones)
        self.depth_key, self.mask_key = depth_key, mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            geom = d[key] if isinstance(d[key], Geometry) else read_geometry(d[key])
            if self.bones is not None:
                try:
                    geom, depth, mask = match_bone_channels(
                        geom, self.bones, d.get(self.depth_key), d.get(self.mask_key)
                    )
                except GeometryError as e:
                    raise InputFileError(data[key] if not isinstance(data[key], Geometry) else key, str(e)) from None
                d.update({k: v for k, v in ((self.depth_key, depth), (self.mask_key, mask)) if v is not None})
            if self.image_size is not None and geom.image_size != self.image_size:
                geom = geom.resized(self.image_size)
            d[key] = geom
        return d


class ResizeDepthd(MapTransform):
    """Resample depth (2B, H, W) and mask (B, H, W) to ``spatial_size`` (H, W) over the same detector field.

    Area averaging: a new pixel is in a bone's mask when at least half its area was; its depth is
    the mean of the valid (> 0) old depths it covers, so depths stay on the surface along the
    resized geometry's rays (unlike nearest-neighbour picks, which are half a pixel off).
    """

    def __init__(self, depth_key: str = "depth", mask_key: str = "mask", spatial_size: Sequence[int] = (256, 256)):
        super().__init__([depth_key, mask_key])
        self.depth_key, self.mask_key = depth_key, mask_key
        self.spatial_size = (int(spatial_size[0]), int(spatial_size[1]))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        depth, mask = torch.as_tensor(d[self.depth_key]).float(), torch.as_tensor(d[self.mask_key]).float()
        if tuple(depth.shape[-2:]) == self.spatial_size:
            return d

        def area(x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(x[None], size=self.spatial_size, mode="area")[0]

        valid = (depth > 0).float()
        num, den = area(depth * valid), area(valid)
        new_mask = (area(mask) >= 0.5).float()
        keep = new_mask.repeat_interleave(depth.shape[0] // mask.shape[0], dim=0) * (den > 0).float()
        d[self.depth_key] = torch.where(keep > 0, num / den.clamp(min=1e-6), torch.zeros_like(num))
        d[self.mask_key] = new_mask
        return d


class NormalizeRadiographd(MapTransform):
    """Robust radiograph normalisation: percentiles ``lower``..``upper`` of the image -> [0, 1], clipped.

    Fits both unnormalised DRR line integrals and processed clinical radiographs (bone bright): a
    different energy, gain or window lands in the same range. With ``fov_key`` the percentiles are
    taken over the radiograph's own area only (``fov`` > 0.5), so padding does not shift them.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        lower: float = 1.0,
        upper: float = 99.5,
        fov_key: str | None = None,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.lower, self.upper, self.fov_key = float(lower), float(upper), fov_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        fov = d.get(self.fov_key) if self.fov_key else None
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key]).float()
            inside = img[torch.as_tensor(fov).expand_as(img) > 0.5] if fov is not None else img.flatten()
            if inside.numel() == 0:
                inside = img.flatten()
            lo, hi = torch.quantile(inside, torch.tensor([self.lower / 100.0, self.upper / 100.0], dtype=inside.dtype))
            out = ((img - lo) / (hi - lo)).clamp(0.0, 1.0) if hi > lo else img - lo
            d[key] = MetaTensor(out, meta=d[key].meta) if isinstance(d[key], MetaTensor) else out
        return d


class EnsureFieldOfViewd(MapTransform):
    """Give every sample a field-of-view map ``fov_key`` (1, H, W) float: 1 on the radiograph's own area, 0 on padding.

    A sample without one (data sets simulated before padding existed, radiographs filling the
    standard field) gets ones like ``image_key``.
    """

    def __init__(self, image_key: str = "image", fov_key: str = "fov"):
        super().__init__([image_key, fov_key], allow_missing_keys=True)
        self.image_key, self.fov_key = image_key, fov_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        image = torch.as_tensor(d[self.image_key])
        fov = d.get(self.fov_key)
        d[self.fov_key] = (
            torch.ones_like(image, dtype=torch.float32)
            if fov is None
            else (torch.as_tensor(fov).float().reshape(image.shape) > 0.5).float()
        )
        return d


class FillOutsideFieldd(MapTransform):
    """The same input for padding in training and inference: image pixels outside the field of view
    (``fov`` <= 0.5) set to ``fill``; with ``channel`` the field of view is appended as a second image channel."""

    def __init__(self, image_key: str = "image", fov_key: str = "fov", fill: float = 0.0, channel: bool = False):
        super().__init__([image_key, fov_key])
        self.image_key, self.fov_key, self.fill, self.channel = image_key, fov_key, float(fill), bool(channel)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        image = torch.as_tensor(d[self.image_key]).float()
        fov = (torch.as_tensor(d[self.fov_key]).float() > 0.5).float().to(image.device)
        image = torch.where(fov > 0, image, torch.full_like(image, self.fill))
        d[self.image_key] = torch.cat([image, fov], 0) if self.channel else image
        return d


class RandHazed(RandomizableTransform, MapTransform):
    """Scatter/veiling-glare haze: ``(1 - s) * img + s * blur(img)``, s ~ U(strength), blur sigma in pixels."""

    def __init__(
        self,
        keys: KeysCollection = "image",
        prob: float = 0.3,
        strength: Sequence[float] = (0.05, 0.3),
        sigma_px: float = 16.0,
    ):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.strength = (float(strength[0]), float(strength[1]))
        self.blur = GaussianSmooth(sigma=sigma_px)
        self._s = 0.0

    def randomize(self, data: object = None) -> None:
        """Draw whether to apply the haze and its strength."""
        super().randomize(None)
        self._s = self.R.uniform(*self.strength)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            d[key] = (1.0 - self._s) * img + self._s * self.blur(img)
        return d


def lr_swap_permutation(bones: Sequence[str]) -> list[int]:
    """Bone index permutation exchanging every ``*left*`` bone with its ``*right*`` partner."""
    index = {b: i for i, b in enumerate(bones)}
    perm = []
    for b in bones:
        partner = b.replace("left", "\0").replace("right", "left").replace("\0", "right")
        perm.append(index.get(partner, index[b]))
    return perm


def flip_bone_maps_lr(maps: torch.Tensor, bones: Sequence[str], per_bone: int) -> torch.Tensor:
    """Bone-major maps (..., per_bone * B, H, W) mirrored along u (columns), left/right bone channels swapped."""
    index = [per_bone * p + k for p in lr_swap_permutation(bones) for k in range(per_bone)]
    return torch.flip(maps, dims=(-1,))[..., index, :, :]


class RandFlipLRd(RandomizableTransform, MapTransform):
    """Geometry-aware left-right flip along u (columns), with probability ``prob``.

    Flips the image, depth and mask columns, mirrors the geometry (:meth:`Geometry.flipped_lr`),
    and swaps the left/right bone channels (depth: both faces of a bone move together) so the
    flipped sample shows the mirror-image patient with correctly named bones.
    """

    def __init__(
        self,
        image_keys: KeysCollection = "image",
        depth_key: str = "depth",
        mask_key: str = "mask",
        geometry_key: str = "geometry",
        prob: float = 0.5,
    ):
        RandomizableTransform.__init__(self, prob)
        keys = [image_keys] if isinstance(image_keys, str) else list(image_keys)
        MapTransform.__init__(self, keys + [depth_key, mask_key, geometry_key], allow_missing_keys=True)
        self.image_keys, self.depth_key, self.mask_key, self.geometry_key = keys, depth_key, mask_key, geometry_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        geom: Geometry = d[self.geometry_key]
        for key in self.image_keys:
            if key in d:
                d[key] = torch.flip(d[key], dims=(-1,))
        if self.mask_key in d:
            d[self.mask_key] = flip_bone_maps_lr(d[self.mask_key], geom.bones, 1)
        if self.depth_key in d:
            d[self.depth_key] = flip_bone_maps_lr(
                d[self.depth_key], geom.bones, d[self.depth_key].shape[0] // len(geom.bones)
            )
        d[self.geometry_key] = geom.flipped_lr()
        return d


def check_sample_shapes(
    data: Mapping[Hashable, object], bones: int, keys: Sequence[str] = ("image", "depth", "mask")
) -> None:
    """Raise :class:`InputFileError` if image/depth/mask sizes or channel counts disagree (1, 2B, B channels)."""
    expected = {keys[0]: 1, keys[1]: 2 * bones, keys[2]: bones}
    shapes = {k: tuple(np.shape(data[k])) for k in keys if k in data}
    sizes = {s[1:] for s in shapes.values()}
    for k, s in shapes.items():
        if s[0] != expected[k] or len(sizes) != 1:
            source = getattr(data[k], "meta", {}).get("filename_or_obj", k)
            raise InputFileError(
                source, f"{k} has shape {s}; expected {expected[k]} channels and one common size, got {shapes}"
            )


class CheckSampled(MapTransform):
    """Validate a loaded sample's shapes with :func:`check_sample_shapes` (bad simulator output fails loudly)."""

    def __init__(self, keys: KeysCollection = ("image", "depth", "mask"), bones: int = 3):
        super().__init__(keys, allow_missing_keys=True)
        self.bones = int(bones)

    def __call__(self, data: Mapping[Hashable, object]) -> Mapping[Hashable, object]:
        check_sample_shapes(data, self.bones, tuple(self.keys))
        return data
