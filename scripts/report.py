"""PNG reports: radiograph with mask overlays, depth maps and orthogonal mesh renderings."""

from __future__ import annotations

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
    return BONE_COLOURS.get(bone, "#b0b0b0")


def overlay_masks(ax: plt.Axes, image: np.ndarray, masks: np.ndarray, bones: Sequence[str], title: str = "radiograph") -> None:
    """Radiograph (H, W) in grey with each bone's mask (H, W, B) outlined in its colour."""
    ax.imshow(image, cmap="gray")
    for b, bone in enumerate(bones):
        if masks[..., b].any():
            ax.contour(masks[..., b].astype(float), levels=[0.5], colors=[bone_colour(bone)], linewidths=1.0)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def depth_panel(ax: plt.Axes, depth: np.ndarray, title: str) -> None:
    """One depth map (H, W) in mm, 0 = no bone (shown transparent)."""
    shown = np.where(depth > 0, depth, np.nan)
    im = ax.imshow(shown, cmap="viridis")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    plt.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="mm")


def render_mesh(ax: plt.Axes, meshes: Mapping[str, trimesh.Trimesh], axes: tuple[int, int], view_axis: int, title: str) -> None:
    """Orthographic, flat-shaded rendering of camera-frame meshes looked at along ``view_axis`` (painter's algorithm)."""
    polys, colours, keys = [], [], []
    light = np.zeros(3)
    light[view_axis] = -1.0
    for bone, mesh in meshes.items():
        if mesh is None or len(mesh.faces) == 0:
            continue
        tri = mesh.vertices[mesh.faces]
        shade = np.abs(mesh.face_normals @ light) * 0.75 + 0.25
        base = np.array(matplotlib.colors.to_rgb(bone_colour(bone)))
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
    image: np.ndarray,
    masks: np.ndarray,
    depth: np.ndarray,
    meshes: Mapping[str, trimesh.Trimesh],
    bones: Sequence[str],
    title: str = "",
) -> None:
    """report.png: radiograph + mask outlines, nearest front / farthest back depth, three mesh views.

    ``masks`` (H, W, B), ``depth`` (H, W, 2B) bone-major in mm, ``meshes`` in the camera frame (mm).
    """
    seen = masks.astype(bool)
    front = np.where(seen.any(-1), np.min(np.where(seen, depth[..., 0::2], np.inf), axis=-1), 0.0)
    back = np.max(np.where(seen, depth[..., 1::2], 0.0), axis=-1)
    fig, axs = plt.subplots(2, 3, figsize=(13, 8.5))
    overlay_masks(axs[0, 0], image, masks, bones)
    depth_panel(axs[0, 1], front, "front-face depth (nearest bone)")
    depth_panel(axs[0, 2], back, "back-face depth (farthest bone)")
    for ax, (name, axes, view_axis) in zip(axs[1], MESH_VIEWS):
        render_mesh(ax, meshes, axes, view_axis, name)
    handles = [plt.Line2D([], [], color=bone_colour(b), lw=4, label=b) for b in bones]
    fig.legend(handles=handles, loc="lower center", ncol=len(bones), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    save_figure(fig, path)


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
