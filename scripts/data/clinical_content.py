"""What clinical AP pelvis radiographs hold besides the patient: detector field, collimation, lead
markers, burned-in text, gonad shields, positioning aids and implants.

Positions are in the standard detector frame (mm at the standard SID, from the principal point,
+x along columns, +y along rows: :func:`detector_mm`). Objects in or on the patient (implants,
shields, straps) are sized in mm at the object plane and drawn at ``magnification`` = SID /
source-to-object distance; markers lie on the detector cover (magnification 1). Physical objects
return areal densities (g/cm^2) of a material of :data:`scripts.data.xray_physics.MATERIALS`, to be
attenuated with the patient; burned-in text is a display overlay. Shapes are analytic: a rod of
radius r at lateral distance d is ``2 sqrt(r^2 - d^2)`` thick, a ball likewise. Placement uses the
simulated bone masks (the bone labels are never changed). Random draws use the caller's
``torch.Generator`` so samples are reproducible.
"""

from __future__ import annotations

import math
import string

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from scripts.data.xray_physics import DENSITY_G_CM3
from scripts.geometry import Geometry, magnification


def uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    """A uniform draw in [low, high]."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def chance(generator: torch.Generator | None, probability: float) -> bool:
    """True with ``probability``."""
    return float(torch.rand((), generator=generator)) < probability


def detector_mm(geometry: Geometry, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of every pixel centre (H, W) on the standard detector, mm from the principal point (float32)."""
    points = geometry.detector_points(*geometry.pixel_grid(device=device, dtype=torch.float32))
    return points[..., 0], points[..., 1]


def detector_area(
    geometry: Geometry,
    sid_mm: float,
    portrait: bool,
    short_mm: float = 350.0,
    long_mm: float = 430.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Float mask (H, W): pixels of the standard field that a ``short_mm`` x ``long_mm`` detector at ``sid_mm`` covers.

    The detector is centred on the central ray (as the Bucky tray follows the tube); portrait puts
    the short side along x (columns). Its extent in the standard field is scaled by standard SID / ``sid_mm``.
    """
    x, y = detector_mm(geometry, device)
    scale = magnification(geometry.sid_mm, sid_mm)  # the real detector is a plane at sid_mm from the source
    half_x = 0.5 * (short_mm if portrait else long_mm) * scale
    half_y = 0.5 * (long_mm if portrait else short_mm) * scale
    return ((x.abs() <= half_x) & (y.abs() <= half_y)).float()


def _in_turned_axes(x: torch.Tensor, y: torch.Tensor, angle_rad: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates (mm) of the points (x, y) along axes turned by ``angle_rad`` from x toward y."""
    return math.cos(angle_rad) * x + math.sin(angle_rad) * y, -math.sin(angle_rad) * x + math.cos(angle_rad) * y


def rectangle_distance(
    x: torch.Tensor, y: torch.Tensor, box: tuple[float, float, float, float], rotation_deg: float
) -> torch.Tensor:
    """Signed distance (mm, positive inside) to the rectangle ``box`` = (x0, x1, y0, y1) rotated by ``rotation_deg``
    about its centre."""
    x0, x1, y0, y1 = box
    xr, yr = _in_turned_axes(x - 0.5 * (x0 + x1), y - 0.5 * (y0 + y1), math.radians(rotation_deg))
    return torch.minimum(0.5 * (x1 - x0) - xr.abs(), 0.5 * (y1 - y0) - yr.abs())


def collimation(
    geometry: Geometry,
    detector: torch.Tensor,
    insets_mm: tuple[float, float, float, float],
    rotation_deg: float,
    penumbra_mm: float,
) -> torch.Tensor:
    """Exposed fraction (H, W) in [0, 1]: the detector area narrowed by collimator insets (left, right, top, bottom; mm at
    the detector), rotated by ``rotation_deg``, with a linear penumbra of ``penumbra_mm``."""
    x, y = detector_mm(geometry, detector.device)
    inside = detector > 0.5
    if not bool(inside.any()):
        return torch.zeros_like(detector)
    xs, ys = x[inside], y[inside]
    hx, hy = 0.5 * geometry.pixel_spacing_mm[0], 0.5 * geometry.pixel_spacing_mm[1]  # the detector's outer pixel edges
    box = (
        float(xs.min()) - hx + insets_mm[0],
        float(xs.max()) + hx - insets_mm[1],
        float(ys.min()) - hy + insets_mm[2],
        float(ys.max()) + hy - insets_mm[3],
    )
    d = rectangle_distance(x, y, box, rotation_deg)
    return (d / max(penumbra_mm, 1e-3) + 0.5).clamp(0.0, 1.0) * detector


def rod(
    x: torch.Tensor, y: torch.Tensor, p0: tuple[float, float], p1: tuple[float, float], r0: float, r1: float
) -> torch.Tensor:
    """Thickness (mm) of a rod from ``p0`` to ``p1`` (mm) whose radius tapers from ``r0`` to ``r1`` (mm), seen side-on."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = max(dx * dx + dy * dy, 1e-9)
    t = (((x - p0[0]) * dx + (y - p0[1]) * dy) / length2).clamp(0.0, 1.0)
    d2 = (x - p0[0] - t * dx) ** 2 + (y - p0[1] - t * dy) ** 2
    r = r0 + (r1 - r0) * t
    return 2.0 * torch.sqrt(torch.clamp(r * r - d2, min=0.0))


def ball(x: torch.Tensor, y: torch.Tensor, centre: tuple[float, float], radius: float) -> torch.Tensor:
    """Thickness (mm) of a ball of ``radius`` (mm) at ``centre`` (mm)."""
    return 2.0 * torch.sqrt(torch.clamp(radius**2 - (x - centre[0]) ** 2 - (y - centre[1]) ** 2, min=0.0))


def _g_cm2(thickness_mm: torch.Tensor, material: str) -> torch.Tensor:
    return thickness_mm * 0.1 * DENSITY_G_CM3[material]


def proximal_femur(
    x: torch.Tensor, y: torch.Tensor, femur: torch.Tensor, medial_sign: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Head centre (object-plane mm) and unit shaft axis (pointing down the shaft) of a femur mask (H, W).

    ``x``, ``y``: object-plane mm of every pixel; ``medial_sign``: +1 if the pelvis' midline lies at larger x.
    The head centre is the centroid of the medial half of the mask's proximal 40 mm; the axis is the
    mask's principal axis.
    """
    xs, ys = x[femur], y[femur]
    band = ys < ys.min() + 40.0
    bx, by = xs[band], ys[band]
    medial = (bx - bx.mean()) * medial_sign >= 0
    head = (float(bx[medial].mean()), float(by[medial].mean()))
    pts = torch.stack([xs - xs.mean(), ys - ys.mean()], 1)
    axis = torch.linalg.eigh(pts.T @ pts)[1][:, -1]
    axis = axis if axis[1] > 0 else -axis
    return head, (float(axis[0]), float(axis[1]))


def hip_implant(
    x: torch.Tensor, y: torch.Tensor, femur: torch.Tensor, medial_sign: float, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """Total hip replacement on a femur mask (H, W): titanium stem and cup, CoCr head (areal densities g/cm^2).

    The head sits on the femoral head centre and the stem follows the shaft axis (:func:`proximal_femur`)
    for 110-150 mm.
    """
    head, axis = proximal_femur(x, y, femur, medial_sign)
    r_head = uniform(generator, 14.0, 18.0)
    neck = (head[0] - medial_sign * 25.0, head[1] + 35.0)  # stem shoulder, lateral and below the head
    length = uniform(generator, 110.0, 150.0)
    tip = (neck[0] + axis[0] * length, neck[1] + axis[1] * length)
    titanium = rod(x, y, neck, tip, uniform(generator, 8.0, 10.0), 4.0) + rod(x, y, head, neck, 6.0, 7.0)
    r_in, r_out = r_head + 1.0, r_head + uniform(generator, 4.0, 7.0)
    shell = ball(x, y, head, r_out) - ball(x, y, head, r_in)
    cup_side = ((y - head[1]) - medial_sign * (x - head[0]) * 0.3) <= 0  # the half facing the acetabulum (up, medial)
    titanium = titanium + shell * cup_side
    head_ball = ball(x, y, head, r_head)
    return {"titanium": _g_cm2(titanium * (head_ball == 0), "titanium"), "copper": _g_cm2(head_ball, "cocr")}


def _shaft(xs: torch.Tensor, ys: torch.Tensor, head_y: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """A point on the shaft's axis and the unit axis pointing down it (object mm) from the femur's pixels: their
    part 50 mm and more below the head centre (its centroid and principal axis) where it spans 40 mm or more,
    else the pixels below the head centre and straight down (an image that cuts the femur at its neck); straight
    down as well where that axis leans more than 45 degrees."""
    shaft = ys > head_y + 50.0
    if int(shaft.sum()) < 2 or float(ys[shaft].max() - ys[shaft].min()) < 40.0:
        below = ys > head_y if bool((ys > head_y).any()) else torch.ones_like(ys, dtype=torch.bool)
        return (float(xs[below].mean()), float(ys[below].mean())), (0.0, 1.0)
    centre = (float(xs[shaft].mean()), float(ys[shaft].mean()))
    pts = torch.stack([xs[shaft] - centre[0], ys[shaft] - centre[1]], 1)
    axis = torch.linalg.eigh(pts.T @ pts)[1][:, -1]
    axis = axis if axis[1] > 0 else -axis
    if float(axis[1]) < math.cos(math.radians(45.0)):  # not a shaft seen in an AP view
        return centre, (0.0, 1.0)
    return centre, (float(axis[0]), float(axis[1]))


HIP_FIXATIONS = ("sliding_hip_screw", "cephalomedullary_nail", "cannulated_screws")


def hip_fixation(
    x: torch.Tensor,
    y: torch.Tensor,
    femur: torch.Tensor,
    medial_sign: float,
    generator: torch.Generator | None,
    kind: str | None = None,
) -> dict[str, torch.Tensor]:
    """Fixation of a proximal femur fracture on a femur mask (H, W), stainless steel (g/cm^2).

    ``kind``: one of :data:`HIP_FIXATIONS` (None: drawn with equal chance). The neck axis leaves the head
    centre (:func:`proximal_femur`) laterally and down at a neck-shaft angle of 125-135 degrees to the shaft
    (:func:`_shaft`); screw tips lie 5-12 mm beyond the head centre, toward the head's top; the neck ends
    at the lateral cortex (the femur pixel within 3 mm of the axis farthest along it). A sliding hip screw
    is a lag screw (6.25 mm radius), a barrel and a side plate seen edge-on (5.5 mm wide, 19 mm deep) on
    the lateral cortex for 80-150 mm down the shaft with 2-4 cortical screws; a cephalomedullary nail runs
    down the shaft's axis from 15-30 mm above the head centre for 180-240 mm (8 mm radius for 50 mm, then
    5.5) with a lag screw into the head and a distal locking screw; cannulated screws are three 6.5 mm
    screws along the neck, 7 mm apart across it.
    """
    head, _ = proximal_femur(x, y, femur, medial_sign)
    xs, ys = x[femur], y[femur]
    centre, axis = _shaft(xs, ys, head[1])
    if kind is None:
        kind = HIP_FIXATIONS[min(int(uniform(generator, 0.0, len(HIP_FIXATIONS))), len(HIP_FIXATIONS) - 1)]
    if kind not in HIP_FIXATIONS:
        raise ValueError(f"hip fixation must be one of {HIP_FIXATIONS}, got {kind!r}")
    lateral = (
        (-axis[1], axis[0]) if -axis[1] * medial_sign < 0 else (axis[1], -axis[0])
    )  # across the shaft, away from the pelvis
    angle = math.radians(
        180.0 - uniform(generator, 125.0, 135.0)
    )  # between the neck axis (pointing down it) and the shaft's
    neck = (
        math.cos(angle) * axis[0] + math.sin(angle) * lateral[0],
        math.cos(angle) * axis[1] + math.sin(angle) * lateral[1],
    )
    across = (-neck[1], neck[0])

    def at(t: float, offset: float = 0.0) -> tuple[float, float]:
        """The point ``t`` mm down the neck axis from the head centre, ``offset`` mm across it."""
        return (head[0] + t * neck[0] + offset * across[0], head[1] + t * neck[1] + offset * across[1])

    along = (xs - head[0]) * neck[0] + (ys - head[1]) * neck[1]
    off_axis = (xs - head[0]) * across[0] + (ys - head[1]) * across[1]
    near = off_axis.abs() <= 3.0
    cortex = float(along[near].max()) if bool(near.any()) else 0.0
    tip = -uniform(generator, 5.0, 12.0)
    steel = torch.zeros_like(x)
    if kind == "cannulated_screws":
        for offset in (-7.0, 0.0, 7.0):
            steel = steel + rod(x, y, at(tip, offset), at(cortex + 3.0, offset), 3.25, 3.25)
        return {"copper": _g_cm2(steel, "steel")}
    nail = kind == "cephalomedullary_nail"
    steel = steel + rod(x, y, at(tip), at(cortex + 5.0), 5.25 if nail else 6.25, 5.25 if nail else 6.25)
    if nail:
        top = (head[1] - uniform(generator, 15.0, 30.0) - centre[1]) / axis[
            1
        ]  # the shaft axis level with the trochanter tip
        length = uniform(generator, 180.0, 240.0)

        def point(s: float) -> tuple[float, float]:
            """The point ``s`` mm down the nail from its top."""
            return (centre[0] + (top + s) * axis[0], centre[1] + (top + s) * axis[1])

        steel = steel + rod(x, y, point(0.0), point(50.0), 8.0, 8.0) + rod(x, y, point(50.0), point(length), 5.5, 5.5)
        lock = point(length - 25.0)  # the distal locking screw, across the shaft
        ends = [(lock[0] + r * lateral[0], lock[1] + r * lateral[1]) for r in (20.0, -20.0)]
        steel = steel + rod(x, y, ends[0], ends[1], 2.5, 2.5)
        return {"copper": _g_cm2(steel, "steel")}
    exit_point = at(cortex + 3.0)
    steel = steel + rod(x, y, at(cortex - 35.0), exit_point, 6.5, 6.5)  # the barrel around the lag screw
    length = uniform(generator, 80.0, 150.0)
    down = (xs - exit_point[0]) * axis[0] + (ys - exit_point[1]) * axis[1]
    side = (xs - exit_point[0]) * lateral[0] + (ys - exit_point[1]) * lateral[1]
    level = (down - length).abs() <= 3.0  # the plate's end rests on the lateral cortex where the femur reaches that far
    reach_side = float(side[level].max()) + 2.75 if bool(level.any()) else 0.0
    end = (
        exit_point[0] + length * axis[0] + reach_side * lateral[0],
        exit_point[1] + length * axis[1] + reach_side * lateral[1],
    )
    steel = (
        steel + 19.0 * (rod(x, y, exit_point, end, 2.75, 2.75) > 0).float()
    )  # the side plate, seen edge-on: 19 mm deep
    run = ((end[0] - exit_point[0]) / length, (end[1] - exit_point[1]) / length)
    for k in range(int(uniform(generator, 2.0, 5.0 - 1e-6))):
        screw = (exit_point[0] + (25.0 + 16.0 * k) * run[0], exit_point[1] + (25.0 + 16.0 * k) * run[1])
        reach = uniform(generator, 32.0, 40.0)
        steel = steel + rod(x, y, screw, (screw[0] - reach * lateral[0], screw[1] - reach * lateral[1]), 2.25, 2.25)
    return {"copper": _g_cm2(steel, "steel")}


def spine_implant(
    x: torch.Tensor, y: torch.Tensor, pelvis: torch.Tensor, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """Lumbar instrumentation above the pelvis mask: two titanium rods and paired pedicle screws (g/cm^2)."""
    xs, ys = x[pelvis], y[pelvis]
    mid, top = float(xs.mean()), float(ys.min())
    half = uniform(generator, 18.0, 25.0)
    length = uniform(generator, 90.0, 160.0)
    y0, y1 = top + 30.0, top + 30.0 - length
    t = torch.zeros_like(x)
    for side in (-1.0, 1.0):
        t = t + rod(x, y, (mid + side * half, y0), (mid + side * half, y1), 3.0, 3.0)
        for k in range(int(length // 35.0) + 1):
            yk = y0 - k * 35.0
            t = t + rod(x, y, (mid + side * (half + 8.0), yk), (mid + side * (half - 22.0), yk + 4.0), 3.2, 2.5)
    return {"titanium": _g_cm2(t, "titanium")}


def gonad_shield(
    x: torch.Tensor, y: torch.Tensor, pelvis: torch.Tensor, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """A 0.35-0.5 mm lead gonad shield: male type (rounded, below the symphysis) or female type (oval over the lower pelvis)."""
    xs, ys = x[pelvis], y[pelvis]
    mid, top, bottom = float(xs.mean()), float(ys.min()), float(ys.max())
    if chance(generator, 0.5):
        cx, cy, ax, ay = (
            mid,
            bottom + uniform(generator, 0.0, 30.0),
            uniform(generator, 25.0, 40.0),
            uniform(generator, 30.0, 45.0),
        )
    else:
        cx, cy, ax, ay = (
            mid,
            top + 0.62 * (bottom - top),
            uniform(generator, 40.0, 55.0),
            uniform(generator, 25.0, 35.0),
        )
    inside = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0
    return {"lead": _g_cm2(inside.float() * uniform(generator, 0.35, 0.5), "lead")}


def positioning_aids(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """A compression strap across the pelvis or thighs (2-6 mm water-equivalent) with a metal buckle, foam
    wedges at the sides (1-3 mm water-equivalent) and a thin radiolucent board edge (0.1-0.3 mm copper-equivalent line).
    """
    water = torch.zeros_like(x)
    angle = math.radians(uniform(generator, -8.0, 8.0))
    yc = uniform(generator, -60.0, 120.0)
    _, across = _in_turned_axes(x, y - yc, angle)
    width = uniform(generator, 40.0, 70.0)
    strap = (across.abs() <= width / 2).float()
    water = water + strap * uniform(generator, 2.0, 6.0)
    bx = uniform(generator, -60.0, 60.0)
    buckle = ((x - bx).abs() <= 20.0) & (across.abs() <= width / 2 + 5.0) & ((x - bx).abs() >= 15.0)
    reach = uniform(generator, 40.0, 90.0)
    side = ((x.abs() - (x.abs().max() - reach)) / reach).clamp(0.0, 1.0)  # wedges thickening toward both sides
    water = water + side * uniform(generator, 1.0, 3.0)
    edge_y = uniform(generator, -180.0, 180.0)
    edge = ((y - edge_y).abs() <= 1.0).float() * uniform(generator, 0.1, 0.3)
    return {
        "water": _g_cm2(water, "water"),
        "titanium": _g_cm2(buckle.float() * 1.5, "titanium"),
        "copper": _g_cm2(edge, "copper"),
    }


def _glyphs(text: str, height_px: int) -> np.ndarray:
    """Rendered ``text`` (bool array) with a font of about ``height_px`` pixels."""
    font = ImageFont.load_default(size=max(6, int(height_px)))
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    im = Image.new("L", (max(1, right - left), max(1, bottom - top)))
    ImageDraw.Draw(im).text((-left, -top), text, fill=255, font=font)
    return np.asarray(im) > 127


def stamp(shape: tuple[int, int], glyphs: np.ndarray, row: int, col: int) -> torch.Tensor:
    """Float mask (H, W) with ``glyphs`` placed at (row, col), clipped to the image."""
    out = np.zeros(shape, dtype=np.float32)
    h, w = glyphs.shape
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + h, shape[0]), min(col + w, shape[1])
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = glyphs[r0 - row : r1 - row, c0 - col : c1 - col]
    return torch.from_numpy(out)


def _corner(
    exposed: torch.Tensor, size: tuple[int, int], right: bool, bottom: bool, margin: int, generator
) -> tuple[int, int]:
    rows = torch.nonzero(exposed.amax(1) > 0.5).flatten()
    cols = torch.nonzero(exposed.amax(0) > 0.5).flatten()
    r = int(rows.max()) - size[0] - margin if bottom else int(rows.min()) + margin
    c = int(cols.max()) - size[1] - margin if right else int(cols.min()) + margin
    jitter = int(uniform(generator, 0, 2 * margin))
    return r + (-jitter if bottom else jitter), c + (-jitter if right else jitter)


def side_marker(
    exposed: torch.Tensor, geometry: Geometry, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """A lead letter R (image left: the patient's right on an AP film) or L (image right), 15-25 mm tall, 1-2 mm lead."""
    right_side = chance(generator, 0.5)
    letter = _glyphs("L" if right_side else "R", round(geometry.length_px(uniform(generator, 15.0, 25.0))[1]))
    r, c = _corner(
        exposed, letter.shape, right_side, chance(generator, 0.5), max(2, round(geometry.length_px(10.0)[0])), generator
    )
    mask = stamp(tuple(exposed.shape), letter, r, c).to(exposed.device)
    return {"lead": _g_cm2(mask * uniform(generator, 1.0, 2.0), "lead")}


def burned_in_text(detector: torch.Tensor, geometry: Geometry, generator: torch.Generator | None) -> torch.Tensor:
    """Float mask (H, W) of 1-3 lines of annotation (site, exposure, IDs) in corners of the detector area, 5-9 mm tall."""
    out = torch.zeros_like(detector)
    size_px = round(geometry.length_px(uniform(generator, 5.0, 9.0))[1])
    pool = string.ascii_uppercase + string.digits
    for _ in range(1 + int(uniform(generator, 0, 2.99))):
        words = [
            "AP PELVIS",
            "HIP",
            f"{int(uniform(generator, 70, 90))}kV",
            f"{int(uniform(generator, 5, 40))}mAs",
            "SUPINE",
            "PORTABLE",
        ]
        text = (
            words[int(uniform(generator, 0, len(words) - 0.01))]
            + " "
            + "".join(pool[int(uniform(generator, 0, len(pool) - 0.01))] for _ in range(int(uniform(generator, 0, 8))))
        )
        g = _glyphs(text.strip(), size_px)
        r, c = _corner(detector, g.shape, chance(generator, 0.5), chance(generator, 0.5), 2, generator)
        out = torch.maximum(out, stamp(tuple(detector.shape), g, r, c).to(detector.device))
    return out * detector
