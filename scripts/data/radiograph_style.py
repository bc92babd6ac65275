"""Clinical image formation of a simulated AP pelvis radiograph, every part a per-sample option.

:func:`style_radiograph` turns the patient's water and bone areal densities along the pixel rays
(:func:`scripts.data.drr.line_integrals`) into what a user's reader delivers from a clinical radiograph
(bone bright, [0, 1]), in this order:

1. **field**: a 35 x 43 cm detector in portrait or landscape at SID ``sid_mm`` covers part of the
   standard field (the rest is padding: ``fov`` 0); collimator blades narrow it by
   ``collimation_inset_mm`` per side, rotated by ``collimation_rotation_deg``, with a penumbra
   (``exposed``);
2. **objects** (``scripts.data.clinical_content``, each with its ``*_prob``): hip implant (a joint
   replacement, or with ``hip_fixation_fraction`` a fracture fixation) or spine implant,
   gonad shield, positioning aids, lead side marker, as areal densities of titanium, CoCr, steel, lead,
   water;
3. **physics** (``scripts.data.xray_physics``): filtered Kramers spectrum (``kvp``,
   ``filtration_al_mm``, ``filtration_cu_mm``) through all materials, heel effect along the
   anode-cathode axis (image rows, anode up or down), inverse square and obliquity (cos^3),
   collimator leakage, scatter (``scatter_per_attenuation``, ``scatter_sigma_mm``) with or
   without an anti-scatter grid, detector MTF and resampling blur, quantum and electronic noise
   (``quanta_per_mm2`` behind the patient, as the automatic exposure control sets it,
   ``electronic_noise``, native ``pitch_mm``), gain (flat-field) correction;
4. **processing** (``scripts.data.radiograph_processing``): log, exposure recognition, multi-scale
   contrast equalisation, look-up curve, gamma;
5. **display content**: burned-in text, electronic shutter (constant outside the collimation);
6. **storage**: ``bits_stored``, MONOCHROME1 or 2, read back as the DICOM reader does; padding 0.

Every option is a number, or a ``[low, high]`` range drawn uniformly per image with the given
generator; ``*_prob`` options are chances. :data:`DEFAULT_STYLE` turns every effect off (a plain
80 kVp log image of the whole field); configs/simulate.yaml holds the clinical ranges.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence, Union

import torch
from scripts.data import clinical_content as content
from scripts.data.radiograph_processing import masked_quantile, process, store_and_read
from scripts.data.xray_physics import (
    MATERIALS,
    detector_signal,
    detector_weights,
    grid_transmission,
    heel_factor,
    polychromatic_transmission,
    scatter,
    spectrum,
)
from scripts.geometry import Geometry, magnification, read_standard_geometry

Option = Union[float, Sequence[float]]

DEFAULT_STYLE: dict[str, Option] = {
    # field
    "sid_mm": 0.0,  # real SID (mm); 0: the geometry's own
    "detector_short_mm": 0.0,  # 0: the detector covers the whole standard field
    "detector_long_mm": 0.0,
    "portrait_prob": 1.0,
    "collimation_inset_mm": 0.0,
    "collimation_rotation_deg": 0.0,
    "penumbra_mm": 0.0,
    "collimator_leakage": 0.0,
    # objects
    "hip_implant_prob": 0.0,
    # share of hip implants that fix a fracture (clinical_content.hip_fixation) instead of replacing the joint
    "hip_fixation_fraction": 0.0,
    "spine_implant_prob": 0.0,
    "gonad_shield_prob": 0.0,
    "positioning_aid_prob": 0.0,
    "side_marker_prob": 0.0,
    # physics
    "kvp": 80.0,
    "filtration_al_mm": 2.5,
    "filtration_cu_mm": 0.0,
    "anode_angle_deg": 12.0,
    "heel_attenuation": 0.0,
    "anode_up_prob": 0.5,
    "scatter_per_attenuation": 0.0,
    "scatter_sigma_mm": 60.0,
    "grid_prob": 0.0,
    "grid_primary": 0.7,
    "grid_scatter": 0.1,
    "detector_blur_mm": 0.0,
    "pitch_mm": 0.0,  # native detector pitch (mm); 0: the standard pixel itself
    "quanta_per_mm2": 0.0,  # detected quanta per mm^2 at the exposed area's median (set by the AEC); 0: no quantum noise
    "electronic_noise": 0.0,  # quanta (std) per native pixel
    # processing
    "window_low_percentile": 0.0,
    "window_high_percentile": 100.0,
    "base_gain": 1.0,
    "detail_gain": 1.0,
    "power": 1.0,
    "lut_contrast": 0.0,
    "gamma": 1.0,
    # display and storage
    "text_prob": 0.0,
    "shutter_prob": 0.0,
    "shutter_white_prob": 0.3,
    "bits_stored": 16.0,
    "monochrome1_prob": 0.0,
}


def draw(value: Option, generator: torch.Generator | None = None) -> float:
    """A number as is, or a uniform draw from a ``[low, high]`` range."""
    if isinstance(value, (int, float)):
        return float(value)
    low, high = (float(v) for v in value)
    return content.uniform(generator, low, high)


def draw_options(options: Mapping[str, Option] | None, generator: torch.Generator | None) -> dict:
    """Values of every option for one image (``*_prob`` options become booleans without the suffix)."""
    opts = {**DEFAULT_STYLE, **(options or {})}
    unknown = set(opts) - set(DEFAULT_STYLE)
    if unknown:
        raise ValueError(f"unknown radiograph style option(s) {sorted(unknown)}")
    p = {}
    for key, value in opts.items():
        if key.endswith("_prob"):
            p[key[: -len("_prob")]] = content.chance(generator, draw(value, generator))
        elif key == "collimation_inset_mm":
            p[key] = [draw(value, generator) for _ in range(4)]  # left, right, top, bottom
        else:
            p[key] = draw(value, generator)
    p["bits_stored"] = int(round(p["bits_stored"]))
    return p


def objects_in_beam(
    p: Mapping,
    geometry: Geometry,
    masks: torch.Tensor | None,
    exposed: torch.Tensor,
    source_to_object_mm: float,
    generator: torch.Generator | None,
) -> list[dict[str, torch.Tensor]]:
    """The objects an image of :func:`style_radiograph` shows besides the patient, each ``{material: areal density
    (H, W) g/cm^2}``: a hip implant or fixation, spine implant, gonad shield (each needs a pelvis of more than 50 pixels
    in ``masks``), positioning aids and a side marker, as the drawn options ``p`` say. Implants and shields are sized
    in the patient's plane at ``source_to_object_mm`` from the source (detector mm over its magnification)."""
    x, y = content.detector_mm(geometry, exposed.device)
    object_magnification = magnification(geometry.sid_mm, source_to_object_mm)
    xo, yo = x / object_magnification, y / object_magnification
    placed: list[dict[str, torch.Tensor]] = []
    bones = {b: masks[i].bool() for i, b in enumerate(geometry.bones)} if masks is not None else {}
    pelvis = bones.get("pelvis")
    has_pelvis = pelvis is not None and int(pelvis.sum()) > 50
    if p["hip_implant"] and has_pelvis:
        femurs = [b for b in ("femur_left", "femur_right") if b in bones and int(bones[b].sum()) > 50]
        if femurs:
            femur = femurs[int(content.uniform(generator, 0, len(femurs) - 1e-6))]
            medial = 1.0 if float(xo[pelvis].mean()) > float(xo[bones[femur]].mean()) else -1.0
            fixation = p["hip_fixation_fraction"] > 0 and content.chance(
                generator, p["hip_fixation_fraction"]
            )  # no draw when 0
            placed.append(
                (content.hip_fixation if fixation else content.hip_implant)(xo, yo, bones[femur], medial, generator)
            )
    if p["spine_implant"] and has_pelvis:
        placed.append(content.spine_implant(xo, yo, pelvis, generator))
    if p["gonad_shield"] and has_pelvis:
        placed.append(content.gonad_shield(xo, yo, pelvis, generator))
    if p["positioning_aid"]:
        placed.append(content.positioning_aids(xo, yo, generator))
    if p["side_marker"] and bool((exposed > 0.5).any()):
        placed.append(content.side_marker(exposed, geometry, generator))
    return placed


def style_radiograph(
    areal_density: torch.Tensor,
    geometry: Geometry,
    masks: torch.Tensor | None = None,
    options: Mapping[str, Option] | None = None,
    generator: torch.Generator | None = None,
    source_to_object_mm: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Clinical radiograph of water and bone areal densities (2, H, W) g/cm^2 seen with ``geometry``.

    Args:
        areal_density: (2, H, W) water and cortical-bone areal densities along the pixel rays.
        geometry: the image's geometry (detector frame, SID).
        masks: (B, H, W) bone masks in ``geometry.bones`` order, to place implants and shields; None: none placed.
        options: :data:`DEFAULT_STYLE` keys, numbers or ``[low, high]``.
        generator: CPU generator seeding every draw and the noise.
        source_to_object_mm: distance (mm) of the patient from the source (object-plane sizes of implants and
            shields); None: configs/geometry.json's.

    Returns:
        image (H, W) float32 in [0, 1], bone bright, 0 outside the detector; ``fov`` (H, W) float 1
        on the detector area (the radiograph's own area), 0 on padding; ``exposed`` (H, W) exposed
        fraction inside the collimation; the drawn option values.
    """
    p = draw_options(options, generator)
    device, dtype = areal_density.device, torch.float32
    h, w = areal_density.shape[-2:]
    sid = p["sid_mm"] or geometry.sid_mm
    p["sid_mm"] = sid
    if p["detector_short_mm"] > 0:
        fov = content.detector_area(geometry, sid, p["portrait"], p["detector_short_mm"], p["detector_long_mm"], device)
    else:
        fov = torch.ones((h, w), dtype=dtype, device=device)
    exposed = content.collimation(
        geometry, fov, tuple(p["collimation_inset_mm"]), p["collimation_rotation_deg"], p["penumbra_mm"]
    )

    # ---- objects in the beam
    stack = torch.zeros((len(MATERIALS), h, w), dtype=dtype, device=device)
    stack[:2] = areal_density.to(dtype)
    if source_to_object_mm is None:
        source_to_object_mm = read_standard_geometry()[1]
    for objects in objects_in_beam(p, geometry, masks, exposed, source_to_object_mm, generator):
        for material, density in objects.items():
            stack[MATERIALS.index(material)] += density.to(dtype)

    # ---- physics
    energies, photons = spectrum(p["kvp"], p["filtration_al_mm"], p["filtration_cu_mm"])
    transmitted = polychromatic_transmission(stack, energies, detector_weights(energies, photons))
    cos_phi, along_v = geometry.ray_obliquity(device, dtype)
    toward_cathode = along_v * (1.0 if p["anode_up"] else -1.0)
    beam = heel_factor(toward_cathode, p["anode_angle_deg"], p["heel_attenuation"]) * cos_phi**3
    primary = transmitted * beam * (exposed + p["collimator_leakage"] * (1.0 - exposed))
    pixel_mm = geometry.pixel_spacing_at(sid)[0]  # a standard pixel's size on the real detector
    scattered = scatter(transmitted, exposed, p["scatter_per_attenuation"], p["scatter_sigma_mm"] / pixel_mm) * beam
    t_primary, t_scatter = grid_transmission(p["grid"], p["grid_primary"], p["grid_scatter"])
    intensity = t_primary * primary + t_scatter * scattered
    pitch = p["pitch_mm"] or pixel_mm
    blur_mm = math.hypot(
        p["detector_blur_mm"], max(pixel_mm - pitch, 0.0) / 2.0
    )  # MTF, and the reader's anti-alias prefilter
    intensity = intensity / t_primary  # gain (flat-field) correction: 1 where nothing attenuates
    median = float(masked_quantile(intensity, exposed, 0.5).clamp(min=1e-6))  # the AEC exposes for the patient
    quanta = p["quanta_per_mm2"] * pixel_mm**2 / median
    signal = detector_signal(
        intensity, quanta, blur_mm / pixel_mm, p["electronic_noise"], (pixel_mm / pitch) ** 2, generator
    )

    # ---- processing, display content, storage
    image = process(signal, exposed, p)
    if p["text"]:
        image = torch.maximum(image, content.burned_in_text(fov, geometry, generator))
    if p["shutter"]:
        image = torch.where(exposed < 0.5, torch.full_like(image, 1.0 if p["shutter_white"] else 0.0), image)
    image = store_and_read(image * fov, p["bits_stored"], p["monochrome1"]) * fov
    return image.to(dtype), fov, exposed, dict(p)
