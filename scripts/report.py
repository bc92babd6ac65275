"""PNG reports: radiograph with mask overlays, depth maps and orthogonal mesh renderings."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from .files import atomic_path  # noqa: E402

BONE_COLOURS = {"pelvis": "#e6a141", "femur_left": "#4aa3df", "femur_right": "#6cc16c"}
# (name, camera axes shown as (horizontal, vertical), axis looked along) for the three orthogonal views
MESH_VIEWS = (("AP (source view)", (0, 1), 2), ("lateral", (2, 1), 0), ("axial", (0, 2), 1))


def bone_colour(bone: str) -> str:
    """Matplotlib colour (hex) of a bone in every picture; grey for unknown names."""
    return BONE_COLOURS.get(bone, "#b0b0b0")


def error_rgba(errors: np.ndarray, max_mm: float = 5.0, cmap: str = "viridis") -> np.ndarray:
    """RGBA (N, 4) floats in [0, 1] of distances in mm on ``cmap`` over 0 .. ``max_mm`` (clipped); NaN shows grey."""
    errors = np.asarray(errors, dtype=np.float64)
    rgba = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(errors, nan=0.0) / max_mm, 0, 1))
    rgba[np.isnan(errors)] = (0.6, 0.6, 0.6, 1.0)
    return rgba


def error_colours(errors: np.ndarray, max_mm: float = 5.0, cmap: str = "viridis") -> np.ndarray:
    """RGBA (V, 4) uint8 vertex colours of :func:`error_rgba` (e.g. for a coloured PLY)."""
    return (error_rgba(errors, max_mm, cmap) * 255).round().astype(np.uint8)


def front_back_extent(depth: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest front-face and farthest back-face depth (H, W) in mm over all bones; NaN where no bone.

    ``depth`` (2B, H, W) bone-major [front, back] in mm, ``mask`` (B, H, W).
    """
    seen = np.asarray(mask) > 0
    front = np.where(seen, depth[0::2], np.inf).min(0)
    back = np.where(seen, depth[1::2], -np.inf).max(0)
    any_bone = seen.any(0)
    return np.where(any_bone, front, np.nan), np.where(any_bone, back, np.nan)


def overlay_masks(ax: plt.Axes, image: np.ndarray, masks: np.ndarray, bones: Sequence[str], title: str = "radiograph") -> None:
    """Radiograph (H, W) in grey with each bone's mask (H, W, B) outlined in its colour."""
    ax.imshow(image, cmap="gray")
    for b, bone in enumerate(bones):
        if masks[..., b].any():
            ax.contour(masks[..., b].astype(float), levels=[0.5], colors=[bone_colour(bone)], linewidths=1.0)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def depth_panel(ax: plt.Axes, depth: np.ndarray, title: str) -> None:
    """One depth map (H, W) in mm, 0 or NaN = no bone (shown transparent)."""
    shown = np.where(depth > 0, depth, np.nan)
    im = ax.imshow(shown, cmap="viridis")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    plt.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="mm")


def render_mesh(
    ax: plt.Axes,
    meshes: Mapping[str, trimesh.Trimesh],
    axes: tuple[int, int],
    view_axis: int,
    title: str,
    face_colours: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Orthographic, flat-shaded rendering of camera-frame meshes looked at along ``view_axis`` (painter's algorithm).

    ``face_colours``: optional per-bone RGB (F, 3) in [0, 1] replacing the bone colour (e.g. an error map).
    """
    polys, colours, keys = [], [], []
    light = np.zeros(3)
    light[view_axis] = -1.0
    for bone, mesh in meshes.items():
        if mesh is None or len(mesh.faces) == 0:
            continue
        tri = mesh.vertices[mesh.faces]
        shade = np.abs(mesh.face_normals @ light) * 0.75 + 0.25
        if face_colours is not None and bone in face_colours:
            base = np.asarray(face_colours[bone], dtype=np.float64)[:, :3]
        else:
            base = np.array(matplotlib.colors.to_rgb(bone_colour(bone)))[None]
        polys.append(tri[:, :, list(axes)])
        colours.append(np.clip(shade[:, None] * base, 0, 1))
        keys.append(-tri[:, :, view_axis].mean(1))  # far first, near last
    if polys:
        order = np.argsort(np.concatenate(keys))
        collection = PolyCollection(np.concatenate(polys)[order], facecolors=np.concatenate(colours)[order], edgecolors="none")
        ax.add_collection(collection)
        allpts = np.concatenate([p.reshape(-1, 2) for p in polys])
        lo, hi = allpts.min(0), allpts.max(0)
        pad = 0.05 * (hi - lo).max()
        ax.set_xlim(lo[0] - pad, hi[0] + pad)
        ax.set_ylim(hi[1] + pad, lo[1] - pad)  # camera y points down the image
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def save_reconstruction_report(
    path: str | Path,
    image: np.ndarray | None,
    masks: np.ndarray,
    depth: np.ndarray,
    meshes: Mapping[str, trimesh.Trimesh],
    bones: Sequence[str],
    title: str = "",
    warnings: Sequence[str] = (),
) -> None:
    """report.png: radiograph + mask outlines, nearest front / farthest back depth, three mesh views.

    ``masks`` (H, W, B), ``depth`` (H, W, 2B) bone-major in mm, ``meshes`` in the camera frame (mm).
    ``image`` None: the radiograph is left out (outlines on black), e.g. when it carries burned-in text.
    ``warnings`` are printed in red above the panels.
    """
    front, back = front_back_extent(np.moveaxis(depth, -1, 0), np.moveaxis(masks, -1, 0))
    fig, axs = plt.subplots(2, 3, figsize=(13, 8.5))
    if image is None:
        overlay_masks(axs[0, 0], np.zeros(masks.shape[:2], np.float32), masks, bones, title="mask outlines (radiograph left out)")
    else:
        overlay_masks(axs[0, 0], image, masks, bones)
    depth_panel(axs[0, 1], front, "front-face depth (nearest bone)")
    depth_panel(axs[0, 2], back, "back-face depth (farthest bone)")
    for ax, (name, axes, view_axis) in zip(axs[1], MESH_VIEWS):
        render_mesh(ax, meshes, axes, view_axis, name)
    handles = [plt.Line2D([], [], color=bone_colour(b), lw=4, label=b) for b in bones]
    fig.legend(handles=handles, loc="lower center", ncol=len(bones), frameon=False)
    fig.suptitle(title)
    top = 0.96
    for text in warnings:
        wrapped = textwrap.fill("WARNING: " + text, 170)
        fig.text(0.5, top, wrapped, ha="center", va="top", color="red", fontsize=8)
        top -= 0.018 * (wrapped.count("\n") + 1) + 0.004
    fig.tight_layout(rect=(0, 0.04, 1, min(top, 0.97)))
    save_figure(fig, path)


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def save_error_map(path: str | Path, meshes: Mapping[str, trimesh.Trimesh], vertex_errors: Mapping[str, np.ndarray], max_mm: float = 5.0, title: str = "") -> None:
    """Three views of camera-frame meshes coloured by per-vertex distance to the truth (mm; grey: outside the cone)."""
    cmap = matplotlib.colormaps["viridis"]
    colours = {}
    for bone, mesh in meshes.items():
        err = np.asarray(vertex_errors[bone], dtype=np.float64)[mesh.faces].mean(1)  # NaN if any vertex is out of view
        colours[bone] = error_rgba(err, max_mm, cmap.name)[:, :3]
    fig, axs = plt.subplots(1, 3, figsize=(13, 4.8))
    for ax, (name, axes, view_axis) in zip(axs, MESH_VIEWS):
        render_mesh(ax, meshes, axes, view_axis, name, face_colours=colours)
    mappable = plt.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, max_mm), cmap=cmap)
    fig.colorbar(mappable, ax=list(axs), fraction=0.02, pad=0.01, label="distance to truth (mm)")
    fig.suptitle(title)
    save_figure(fig, path)


def save_metric_bars(path: str | Path, means: Sequence[Mapping], metric: str, groups: Sequence[str], variants: Sequence[str], bones: Sequence[str], ylabel: str) -> None:
    """Bar chart per group (subplot; e.g. depth shift) of ``metric`` mean +- std per bone (x) and variant (bars).

    ``means``: rows with keys group ("shift"), "variant", "bone", ``metric`` and ``metric + "_std"``.
    """
    fig, axs = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.8), sharey=True, squeeze=False)
    width = 0.8 / max(len(variants), 1)
    x = np.arange(len(bones))
    for ax, group in zip(axs[0], groups):
        for i, variant in enumerate(variants):
            rows = {r["bone"]: r for r in means if r["shift"] == group and r["variant"] == variant}
            if not rows:
                continue
            val = [rows.get(b, {}).get(metric, np.nan) for b in bones]
            std = [rows.get(b, {}).get(f"{metric}_std", np.nan) for b in bones]
            ax.bar(x + (i - (len(variants) - 1) / 2) * width, np.nan_to_num(val), width, yerr=np.nan_to_num(std), capsize=2, label=variant)
        ax.set_xticks(x, bones, fontsize=8)
        ax.set_title(f"shift: {group}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axs[0, 0].set_ylabel(ylabel)
    axs[0, -1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
