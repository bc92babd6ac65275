"""PNG reports: radiograph with mask overlays, depth maps and orthogonal mesh renderings (a small z-buffer
rasteriser, no 3D plotting), error maps and metric bars."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402
from scripts.geometry import camera_to_patient_lps  # noqa: E402
from scripts.io.files import atomic_path  # noqa: E402
from scripts.rasterise import rasterise_triangles  # noqa: E402

BONE_COLOURS = {"pelvis": "#e6a141", "femur_left": "#4aa3df", "femur_right": "#6cc16c"}
# The patient's directions in DICOM patient coordinates (LPS: +x left, +y posterior, +z superior)
PATIENT_DIRECTIONS = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}


def patient_view(right: str, down: str, looking: str) -> np.ndarray:
    """A view of camera-frame meshes as a rotation (3, 3) whose rows are the camera-frame directions of the picture's
    right, its down and the direction the viewer looks along, given as patient directions (letters of
    :data:`PATIENT_DIRECTIONS`) through the nominal patient frame (:func:`scripts.geometry.camera_to_patient_lps`)."""
    to_camera = camera_to_patient_lps()[:3, :3].T
    return np.stack([to_camera @ np.asarray(PATIENT_DIRECTIONS[k], dtype=np.float64) for k in (right, down, looking)])


# The radiograph's own view (looking from the source: the patient's left to the right, feet down), the patient's right
# side (front to the right, feet down) and the view from above (the patient's left to the right, front down).
AP_VIEW = patient_view("L", "I", "P")
LATERAL_VIEW = patient_view("A", "I", "L")
AXIAL_VIEW = patient_view("L", "A", "I")
MESH_VIEWS = (
    ("AP (source view)", AP_VIEW),
    ("lateral (from the patient's right)", LATERAL_VIEW),
    ("axial (from above)", AXIAL_VIEW),
)


def orientation_letters(view: np.ndarray) -> tuple[str, str, str, str]:
    """The patient directions (R/L, A/P, S/I) at the left, right, top and bottom edges of a picture in ``view`` (rows:
    picture right, picture down, looking direction; camera frame), for a patient square to the AP beam
    (:func:`scripts.geometry.camera_to_patient_lps`; left and right as the input's laterality says)."""
    to_patient = camera_to_patient_lps()[:3, :3]

    def letter(direction: np.ndarray) -> str:
        return max(PATIENT_DIRECTIONS, key=lambda k: float(np.dot(PATIENT_DIRECTIONS[k], direction)))

    right, down = to_patient @ view[0], to_patient @ view[1]
    return letter(-right), letter(right), letter(-down), letter(down)


def bone_colour(bone: str) -> str:
    """Matplotlib colour (hex) of a bone in every picture; grey for unknown names."""
    return BONE_COLOURS.get(bone, "#b0b0b0")


def error_rgba(errors: np.ndarray, max_mm: float = 5.0, cmap: str = "viridis") -> np.ndarray:
    """RGBA (N, 4) floats in [0, 1] of distances in mm on ``cmap`` over 0 .. ``max_mm`` (clipped); NaN shows grey."""
    errors = np.asarray(errors, dtype=np.float64)
    rgba = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(errors, nan=0.0) / max_mm, 0, 1))
    rgba[np.isnan(errors)] = (0.6, 0.6, 0.6, 1.0)
    return rgba


def front_back_extent(depth: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest front-face and farthest back-face depth (H, W) in mm over all bones; NaN where no bone.

    ``depth`` (2B, H, W) bone-major [front, back] in mm, ``mask`` (B, H, W).
    """
    seen = np.asarray(mask) > 0
    front = np.where(seen, depth[0::2], np.inf).min(0)
    back = np.where(seen, depth[1::2], -np.inf).max(0)
    any_bone = seen.any(0)
    return np.where(any_bone, front, np.nan), np.where(any_bone, back, np.nan)


def overlay_masks(
    ax: plt.Axes, image: np.ndarray, masks: np.ndarray, bones: Sequence[str], title: str = "radiograph"
) -> None:
    """Radiograph (H, W) in grey with each bone's mask (H, W, B) outlined in its colour, on a matplotlib axis (figures)."""
    ax.imshow(image, cmap="gray")
    for b, bone in enumerate(bones):
        if masks[..., b].any():
            ax.contour(masks[..., b].astype(float), levels=[0.5], colors=[bone_colour(bone)], linewidths=1.0)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def normalised_grey(image: np.ndarray) -> np.ndarray:
    """Image (H, W) scaled to [0, 1] between its 1st and 99.5th percentiles (constant images give 0)."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, (1.0, 99.5)) if image.size else (0.0, 1.0)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(image)


def _projected(meshes: Mapping[str, trimesh.Trimesh], view: np.ndarray) -> dict[str, np.ndarray]:
    """Each non-empty mesh's triangles (F, 3, 3) in ``view``'s frame: picture right, picture down, depth (mm)."""
    view = np.asarray(view, dtype=np.float64)
    return {
        bone: (np.asarray(mesh.vertices, dtype=np.float64) @ view.T)[np.asarray(mesh.faces)]
        for bone, mesh in meshes.items()
        if mesh is not None and len(mesh.faces)
    }


def mesh_view_frame(
    meshes: Mapping[str, trimesh.Trimesh], view: np.ndarray = AP_VIEW, size_px: int = 320
) -> tuple[np.ndarray, float]:
    """Where :func:`render_meshes` puts the meshes: the centre (2,) of their extent in the picture plane (mm) and the
    scale (pixels per mm), the largest extent filling ``size_px`` / 1.1 (a 5% margin each side)."""
    tri = list(_projected(meshes, view).values())
    if not tri:
        return np.zeros(2), 1.0
    xy = np.concatenate(tri)[..., :2].reshape(-1, 2)
    lo, hi = xy.min(0), xy.max(0)
    return (lo + hi) / 2, size_px / (1.1 * max(float((hi - lo).max()), 1e-6))


def render_meshes(
    meshes: Mapping[str, trimesh.Trimesh],
    view: np.ndarray = AP_VIEW,
    size_px: int = 320,
    face_colours: Mapping[str, np.ndarray] | None = None,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Orthographic, flat-shaded z-buffer rendering (H, W, 3) floats in [0, 1] of camera-frame meshes (mm).

    ``view`` (a rotation, e.g. :data:`LATERAL_VIEW`) takes the triangles to (picture right, picture down, depth along
    the looking direction); they are rasterised into one ``size_px`` square picture (equal scale, 5% margin:
    :func:`mesh_view_frame`) and per pixel the triangle nearest the viewer (smallest depth; the source side for
    :data:`AP_VIEW`) wins. Shading: |normal . looking direction| * 0.75 + 0.25 of the bone colour, or of
    ``face_colours`` (per-bone RGB (F, 3) in [0, 1], e.g. an error map).
    """
    picture = np.empty((size_px, size_px, 3))
    picture[:] = background
    projected = _projected(meshes, view)
    if not projected:
        return picture
    tri, colour = [], []
    for bone, t in projected.items():
        normal = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
        shade = np.abs(normal[:, 2]) / np.maximum(np.linalg.norm(normal, axis=1), 1e-12) * 0.75 + 0.25
        base = (
            np.asarray(face_colours[bone], dtype=np.float64)[:, :3]
            if face_colours is not None and bone in face_colours
            else np.array(matplotlib.colors.to_rgb(bone_colour(bone)))[None]
        )
        tri.append(t)
        colour.append(np.clip(shade[:, None] * base, 0.0, 1.0))
    t, colour = np.concatenate(tri), np.concatenate(colour)
    centre, scale = mesh_view_frame(meshes, view, size_px)
    xy = (t[..., :2] - centre) * scale + (size_px - 1) / 2  # pixel centres at integers
    pixel, z, face = rasterise_triangles(xy, t[..., 2], (size_px, size_px))
    order = np.lexsort((z, pixel))
    first = np.ones(len(order), bool)
    first[1:] = pixel[order][1:] != pixel[order][:-1]
    nearest = order[first]
    picture.reshape(-1, 3)[pixel[nearest]] = colour[face[nearest]]
    return picture


def render_mesh(
    ax: plt.Axes,
    meshes: Mapping[str, trimesh.Trimesh],
    view: np.ndarray,
    title: str,
    face_colours: Mapping[str, np.ndarray] | None = None,
    size_px: int = 480,
) -> None:
    """:func:`render_meshes` shown on a matplotlib axis (figures), with ``title``, the patient's directions at its
    edges (:func:`orientation_letters`) and a scale bar at its bottom left (:func:`scale_bar_mm`, at most 25% of the
    picture)."""
    ax.imshow(render_meshes(meshes, view, size_px, face_colours=face_colours))
    ax.set_autoscale_on(False)
    for (x, y), letter in zip(
        ((0.02, 0.5), (0.98, 0.5), (0.5, 0.98), (0.5, 0.02)), orientation_letters(view), strict=True
    ):
        ax.text(x, y, letter, transform=ax.transAxes, ha="center", va="center", color="0.5", fontsize=8)
    px_per_mm = mesh_view_frame(meshes, view, size_px)[1]
    mm = scale_bar_mm(px_per_mm, 0.25 * size_px)  # with its label clear of the bottom edge's letter
    x0, y0 = 0.03 * size_px, 0.97 * size_px
    ax.plot([x0, x0 + mm * px_per_mm], [y0, y0], color="black", linewidth=2, solid_capstyle="butt")
    ax.text(x0 + mm * px_per_mm + 0.02 * size_px, y0, f"{mm:g} mm", va="center", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _hex_rgb(colour: str) -> np.ndarray:
    return np.array(matplotlib.colors.to_rgb(colour))


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels (H, W) of a boolean mask: set pixels with an unset 4-neighbour (or the image edge)."""
    p = np.pad(mask, 1)
    return mask & ~(p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])


def _zoom(shape: Sequence[int], size_px: int) -> int:
    """The largest integer factor (at least 1) by which a picture of ``shape`` (h, w, ...) fits ``size_px``."""
    return max(1, size_px // max(shape[:2]))


def _fit_panel(rgb: np.ndarray, size_px: int) -> np.ndarray:
    """An (h, w, 3) picture enlarged by :func:`_zoom` (nearest), centred on white in a ``size_px`` square."""
    k = _zoom(rgb.shape, size_px)
    big = np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)[:size_px, :size_px]
    panel = np.ones((size_px, size_px, 3))
    oy, ox = (size_px - big.shape[0]) // 2, (size_px - big.shape[1]) // 2
    panel[oy : oy + big.shape[0], ox : ox + big.shape[1]] = big
    return panel


def radiograph_picture(
    image: np.ndarray, masks: np.ndarray, bones: Sequence[str], size_px: int = 320, margin_px: int = 0
) -> np.ndarray:
    """Radiograph (H, W) in grey with each bone's mask (H, W, B) outlined in its colour, as (size_px, size_px, 3),
    enlarged by :func:`_zoom` to fit within ``margin_px`` of white on every side."""
    k = _zoom(image.shape, size_px - 2 * margin_px)
    grey = np.repeat(np.repeat(normalised_grey(image), k, axis=0), k, axis=1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for b, bone in enumerate(bones):
        m = np.repeat(np.repeat(np.asarray(masks[..., b]) > 0, k, axis=0), k, axis=1)
        rgb[_outline(m)] = _hex_rgb(bone_colour(bone))
    return _fit_panel(rgb, size_px)


def depth_picture(depth: np.ndarray, size_px: int = 320, cmap: str = "viridis") -> tuple[np.ndarray, float, float]:
    """A depth map (H, W) in mm (NaN or <= 0: no bone, white) on ``cmap`` between its min and max; returns (picture, min, max)."""
    seen = np.isfinite(depth) & (depth > 0)
    lo, hi = (float(depth[seen].min()), float(depth[seen].max())) if seen.any() else (0.0, 1.0)
    rgb = matplotlib.colormaps[cmap](np.clip((np.where(seen, depth, lo) - lo) / max(hi - lo, 1e-6), 0, 1))[..., :3]
    rgb[~seen] = 1.0
    return _fit_panel(rgb, size_px), lo, hi


class ReportText(NamedTuple):
    """A text drawn on report.png: its top-left corner (x, y) in pixels, the text and its colour (RGB 0-255)."""

    xy: tuple[int, int]
    text: str
    colour: tuple[int, int, int]


REPORT_FONT_PX = 13
LETTER_MARGIN_PX = 16  # white around the radiograph in report.png, where the patient's directions are written
WARNING_RGB, CAUTION_RGB, NOTE_RGB, LETTER_RGB = (200, 0, 0), (175, 85, 0), (60, 60, 60), (128, 128, 128)


def report_font():
    """The font of report.png's texts (Pillow's built-in, :data:`REPORT_FONT_PX` pixels; no font file needed)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=REPORT_FONT_PX)


def wrap_to_width(text: str, width_px: float, font=None) -> list[str]:
    """``text`` as lines at most ``width_px`` pixels wide in ``font`` (default :func:`report_font`), broken at spaces
    (a longer word where it must)."""
    font = font or report_font()
    for chars in range(max(int(width_px // 4), 1), 0, -1):
        lines = textwrap.wrap(text, chars)
        if all(font.getlength(part) <= width_px for part in lines):
            return lines
    return list(text)


def scale_bar_mm(px_per_mm: float, max_px: float) -> float:
    """The length (mm) of a scale bar: the longest of 1, 2, 5, 10, 20, ... 5000 mm that spans at most ``max_px``
    pixels at ``px_per_mm`` (1 mm when none does)."""
    lengths = [m * 10.0**k for k in range(4) for m in (1, 2, 5)]
    return max((mm for mm in lengths if mm * px_per_mm <= max_px), default=1.0)


def save_reconstruction_report(
    path: str | Path,
    image: np.ndarray | None,
    masks: np.ndarray,
    depth: np.ndarray,
    meshes: Mapping[str, trimesh.Trimesh],
    bones: Sequence[str],
    title: str = "",
    warnings: Sequence[str] = (),
    panel_px: int = 320,
    hip_plane: Mapping | None = None,
    cautions: Sequence[str] = (),
    notes: Sequence[str] = (),
    pixel_spacing_mm: float | None = None,
) -> list[ReportText]:
    """report.png: radiograph + mask outlines, nearest front / farthest back depth from the source (colour bars in
    mm), three mesh views; the patient's directions (:func:`orientation_letters`) at the edges of the radiograph and
    of every mesh view, a scale bar under each mesh view and (``pixel_spacing_mm``) under the radiograph. Returns the
    texts drawn (:class:`ReportText`).

    ``masks`` (H, W, B), ``depth`` (H, W, 2B) bone-major in mm, ``meshes`` in the camera frame (mm);
    ``pixel_spacing_mm``: the maps' detector pitch (mm per pixel), the radiograph's scale bar measured at the hip plane
    (its magnification) when ``hip_plane`` is given, else at the detector.
    ``image`` None: the radiograph is left out (outlines on black), e.g. when it carries burned-in text.
    Under the title: ``warnings`` in red ("WARNING: "), ``cautions`` in orange ("CAUTION: ", e.g. an assumed
    laterality), ``notes`` in grey (e.g. the geometry's sources); ``hip_plane``
    (:func:`scripts.reconstruction.hips.hip_plane`) beside the bone legend. Drawn directly into pixels
    (:func:`render_meshes`, no plotting library, so it may run in a background thread) and written atomically.
    """
    from PIL import Image, ImageDraw

    font = report_font()
    front, back = front_back_extent(np.moveaxis(depth, -1, 0), np.moveaxis(masks, -1, 0))
    label, bar, gap, line, scale_row = 18, 14, 10, 16, 16
    cell_w, cell_h = panel_px + bar + 48 + gap, panel_px + label + scale_row + gap
    header = [
        (part, colour)
        for texts_, prefix, colour in (
            (warnings, "WARNING: ", WARNING_RGB),
            (cautions, "CAUTION: ", CAUTION_RGB),
            (notes, "", NOTE_RGB),
        )
        for text in texts_
        for part in wrap_to_width(prefix + text, 3 * cell_w - 2 * gap, font)
    ]
    head = 30 + line * len(header)
    canvas = np.ones((head + 2 * cell_h + 24, 3 * cell_w, 3))
    texts = [ReportText((gap, 6), title, (0, 0, 0))]
    texts += [ReportText((gap, 26 + line * k), text, colour) for k, (text, colour) in enumerate(header)]
    grid_shape = masks.shape[:2]
    shown = np.zeros(grid_shape, np.float32) if image is None else image
    panels = [
        (
            radiograph_picture(shown, masks, bones, panel_px, LETTER_MARGIN_PX),
            "bone outlines (radiograph left out)" if image is None else "radiograph + bone outlines",
        )
    ]
    depth_bars = []
    for name, d in (
        ("front-face depth from the source (nearest bone)", front),
        ("back-face depth from the source (farthest bone)", back),
    ):
        picture, lo, hi = depth_picture(d, panel_px)
        panels.append((picture, name))
        depth_bars.append((lo, hi))
    panels += [(render_meshes(meshes, view, panel_px), name) for name, view in MESH_VIEWS]
    ramp = matplotlib.colormaps["viridis"](np.linspace(1, 0, panel_px))[:, None, :3]
    for i, (picture, name) in enumerate(panels):
        y, x = head + (i // 3) * cell_h + label, gap + (i % 3) * cell_w
        canvas[y : y + panel_px, x : x + panel_px] = picture
        texts.append(ReportText((x, y - label), name, (0, 0, 0)))
        if i in (0, 3, 4, 5):  # the patient's directions at the edges
            left, right, top, bottom = orientation_letters(AP_VIEW if i == 0 else MESH_VIEWS[i - 3][1])
            mid_x, mid_y = x + panel_px // 2 - 4, y + panel_px // 2 - 7
            texts += [
                ReportText(xy, letter, LETTER_RGB)
                for xy, letter in (
                    ((x + 3, mid_y), left),
                    ((x + panel_px - 12, mid_y), right),
                    ((mid_x, y + 2), top),
                    ((mid_x, y + panel_px - 16), bottom),
                )
            ]
        if i in (1, 2):
            lo, hi = depth_bars[i - 1]
            canvas[y : y + panel_px, x + panel_px + 4 : x + panel_px + 4 + bar] = ramp
            texts += [
                ReportText((x + panel_px + bar + 6, y + dy), text, (0, 0, 0))
                for dy, text in ((0, f"{hi:.0f}"), (panel_px - 14, f"{lo:.0f}"), (panel_px // 2 - 7, "mm"))
            ]
        scale = None
        if i >= 3:
            scale = mesh_view_frame(meshes, MESH_VIEWS[i - 3][1], panel_px)[1], ""
        elif i == 0 and pixel_spacing_mm:
            magnification = float(hip_plane["magnification"]) if hip_plane else 1.0
            where = " at the hip plane" if hip_plane else " at the detector"
            scale = _zoom(grid_shape, panel_px - 2 * LETTER_MARGIN_PX) * magnification / float(pixel_spacing_mm), where
        if scale is not None:
            px_per_mm, where = scale
            mm = scale_bar_mm(px_per_mm, 0.3 * panel_px)
            length = int(round(mm * px_per_mm))
            canvas[y + panel_px + 6 : y + panel_px + 9, x : x + length] = 0.0
            texts.append(ReportText((x + length + 6, y + panel_px), f"{mm:g} mm{where}", (0, 0, 0)))
    legend_y, legend_x = canvas.shape[0] - 20, gap
    for bone in bones:
        canvas[legend_y + 4 : legend_y + 14, legend_x : legend_x + 24] = _hex_rgb(bone_colour(bone))
        texts.append(ReportText((legend_x + 30, legend_y), bone, (0, 0, 0)))
        legend_x += 40 + int(font.getlength(bone))
    if hip_plane:
        texts.append(
            ReportText(
                (legend_x + 20, legend_y),
                f"hip plane (femoral head centres): {hip_plane['depth_mm']:.0f} mm from the source, "
                f"magnification {hip_plane['magnification']:.3f}",
                (0, 0, 0),
            )
        )
    picture = Image.fromarray((canvas * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for xy, text, colour in texts:
        draw.text(xy, text, fill=colour, font=font)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="png", compress_level=3)
    return texts


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def save_error_map(
    path: str | Path,
    meshes: Mapping[str, trimesh.Trimesh],
    vertex_errors: Mapping[str, np.ndarray],
    max_mm: float = 5.0,
    title: str = "",
) -> None:
    """:func:`error_map_figure` written as PNG (atomically)."""
    save_figure(error_map_figure(meshes, vertex_errors, max_mm, title), path)


def error_map_figure(
    meshes: Mapping[str, trimesh.Trimesh], vertex_errors: Mapping[str, np.ndarray], max_mm: float = 5.0, title: str = ""
) -> plt.Figure:
    """Three views (:data:`MESH_VIEWS`, with scale bars) of camera-frame meshes coloured by per-vertex distance to the
    truth (mm, 0 .. ``max_mm``, larger at the top colour: the colour bar's arrow; grey: outside the X-ray cone, not
    compared)."""
    cmap = matplotlib.colormaps["viridis"]
    colours = {}
    for bone, mesh in meshes.items():
        err = np.asarray(vertex_errors[bone], dtype=np.float64)[mesh.faces].mean(1)  # NaN if any vertex is out of view
        colours[bone] = error_rgba(err, max_mm, cmap.name)[:, :3]
    fig, axs = plt.subplots(1, 3, figsize=(13, 4.8))
    for ax, (name, view) in zip(axs, MESH_VIEWS, strict=True):
        render_mesh(ax, meshes, view, name, face_colours=colours)
    mappable = plt.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, max_mm), cmap=cmap)
    fig.colorbar(
        mappable,
        ax=list(axs),
        fraction=0.02,
        pad=0.01,
        extend="max",
        label=f"distance to truth (mm; {max_mm:g} and more: top colour)\ngrey: outside the X-ray field, not compared",
    )
    fig.suptitle(title)
    return fig


def metric_bars_figure(
    means: Sequence[Mapping],
    metric: str,
    groups: Sequence[str],
    variants: Sequence[str],
    bones: Sequence[str],
    ylabel: str,
    title: str = "",
    group_titles: Mapping[str, str] | None = None,
) -> plt.Figure:
    """Bar chart per group (subplot; e.g. depth shift, titled by ``group_titles``) of ``metric`` mean +- std per bone
    (x) and variant (bars). A mean that is missing or not a number (e.g. a bone never found) gets no bar (not a bar
    of 0, which would read as no error) and "n/a" at its foot.

    ``means``: rows with keys group ("shift"), "variant", "bone", ``metric`` and ``metric + "_std"``.
    """
    fig, axs = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.8), sharey=True, squeeze=False)
    width = 0.8 / max(len(variants), 1)
    x = np.arange(len(bones))
    for ax, group in zip(axs[0], groups, strict=True):
        for i, variant in enumerate(variants):
            rows = {r["bone"]: r for r in means if r["shift"] == group and r["variant"] == variant}
            if not rows:
                continue
            val = np.array([rows.get(b, {}).get(metric, np.nan) for b in bones], dtype=np.float64)
            std = np.array([rows.get(b, {}).get(f"{metric}_std", np.nan) for b in bones], dtype=np.float64)
            at = x + (i - (len(variants) - 1) / 2) * width
            shown = np.isfinite(val)
            ax.bar(
                at[shown], val[shown], width, yerr=np.nan_to_num(std[shown]), capsize=2, label=variant, color=f"C{i}"
            )
            for where in at[~shown]:
                ax.text(where, 0, "n/a", ha="center", va="bottom", rotation=90, fontsize=7, color=f"C{i}")
        ax.set_xticks(x, bones, fontsize=8)
        ax.set_title((group_titles or {}).get(group, f"shift: {group}"), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axs[0, 0].set_ylabel(ylabel)
    axs[0, -1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
