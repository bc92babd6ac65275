"""report.png's z-buffer mesh renderer against analytic pictures (a sphere's disc, the nearer of two squares), its
layout (texts drawn in full, inside, never overlapping) and its scale bars against hand-computed lengths."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import trimesh
from PIL import Image
from scripts.geometry import camera_to_patient_lps
from scripts.io.report import (
    AP_VIEW,
    BONE_COLOURS,
    CAUTION_RGB,
    LATERAL_VIEW,
    LETTER_RGB,
    MESH_VIEWS,
    NOTE_RGB,
    WARNING_RGB,
    error_map_figure,
    metric_bars_figure,
    orientation_letters,
    render_mesh,
    render_meshes,
    report_font,
    save_reconstruction_report,
)


def square(z: float, half: float, centre=(0.0, 0.0)) -> trimesh.Trimesh:
    """A square in the plane camera z = ``z`` (mm), facing the source."""
    cx, cy = centre
    v = np.array(
        [[cx - half, cy - half, z], [cx + half, cy - half, z], [cx + half, cy + half, z], [cx - half, cy + half, z]]
    )
    return trimesh.Trimesh(v, [[0, 1, 2], [0, 2, 3]], process=False)


def test_sphere_renders_as_its_disc():
    """AP view of a 50 mm sphere: covered pixels = the disc of radius 50 mm at the picture's scale (size / 1.1 diameters)."""
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=50.0)
    sphere.apply_translation([10.0, -20.0, 1000.0])
    size = 200
    picture = render_meshes({"pelvis": sphere}, AP_VIEW, size)
    covered = (picture != 1.0).any(-1)
    radius_px = 50.0 * size / (1.1 * 100.0)
    assert abs(covered.sum() / (np.pi * radius_px**2) - 1) < 0.01
    v, u = np.nonzero(covered)
    assert abs(u.mean() + 0.5 - size / 2) < 0.5 and abs(v.mean() + 0.5 - size / 2) < 0.5  # centred
    # flat shading |n . view| * 0.75 + 0.25: brightest at the centre, darkest at the rim
    base = np.array([int(BONE_COLOURS["pelvis"][i : i + 2], 16) / 255 for i in (1, 3, 5)])
    np.testing.assert_allclose(picture[size // 2, size // 2], base, atol=0.02)
    assert picture[covered].sum(-1).min() < 0.4 * base.sum()


def test_nearer_surface_wins_whatever_the_order():
    """Two overlapping squares: the one nearer the source (smaller z) covers the overlap, in either drawing order."""
    near, far = square(900.0, 20.0, (-10.0, 0.0)), square(1000.0, 20.0, (10.0, 0.0))
    red, blue = np.array([[1.0, 0.0, 0.0]] * 2), np.array([[0.0, 0.0, 1.0]] * 2)
    for meshes, colours in (
        ({"a": near, "b": far}, {"a": red, "b": blue}),
        ({"a": far, "b": near}, {"a": blue, "b": red}),
    ):
        picture = render_meshes(meshes, AP_VIEW, 100, face_colours=colours)
        row = picture[50]
        # picture spans x in [-30, 30] mm * 1.1 -> 100 px; overlap x in [-10, 10] mm -> pixels about 35..65
        assert (row[40:60] == [1.0, 0.0, 0.0]).all()
        assert (row[70:80] == [0.0, 0.0, 1.0]).all() and (row[20:30] == [1.0, 0.0, 0.0]).all()
    # seen from the side (lateral view, along camera x) the far square is the one at larger z
    lateral = render_meshes({"a": near, "b": far}, LATERAL_VIEW, 100, face_colours={"a": red, "b": blue})
    assert (lateral == 1.0).all(-1).sum() > 0.9 * 100 * 100  # edge-on squares cover (almost) nothing


def test_views_are_true_views_with_the_patient_directions_at_their_edges():
    """No view is a mirror image (each is a proper rotation), and each shows the patient as an onlooker there sees
    them: from the source (AP) the patient's right on the left and the head up; from the patient's right side the
    front on the right; from above the back up and the patient's right on the left. Checked on pictures of two balls:
    one to the patient's front, right and top (camera: smaller z, smaller x, smaller y) of the other."""
    expected = {"AP (source view)": "RLSI", "lateral (from the patient's right)": "PASI", "axial (from above)": "RLPA"}
    assert [name for name, _ in MESH_VIEWS] == list(expected)
    for name, view in MESH_VIEWS:
        np.testing.assert_allclose(view @ view.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(view) == 1.0
        assert "".join(orientation_letters(view)) == expected[name]
    ball = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    front_right_top = ball.copy().apply_translation([-40.0, -40.0, 900.0])  # camera: patient's right, up, anterior
    other = ball.copy().apply_translation([40.0, 40.0, 980.0])
    red, blue = np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 1.0]])
    for name, view in MESH_VIEWS:
        faces = {"a": np.repeat(red, len(ball.faces), 0), "b": np.repeat(blue, len(ball.faces), 0)}
        picture = render_meshes({"a": front_right_top, "b": other}, view, 100, face_colours=faces)
        red_v, red_u = np.argwhere(picture[..., 0] > picture[..., 2] + 0.1).mean(0)
        blue_v, blue_u = np.argwhere(picture[..., 2] > picture[..., 0] + 0.1).mean(0)
        left, right, top, bottom = orientation_letters(view)
        # where the red ball lies from the blue one, in the patient's directions, decides its side of the picture
        offset = camera_to_patient_lps()[:3, :3] @ (front_right_top.centroid - other.centroid)
        letters = {"L" if offset[0] > 0 else "R", "P" if offset[1] > 0 else "A", "S" if offset[2] > 0 else "I"}
        assert (red_u < blue_u) == (left in letters) and (red_u > blue_u) == (right in letters), name
        assert (red_v < blue_v) == (top in letters) and (red_v > blue_v) == (bottom in letters), name


def test_report_png(tmp_path):
    """report.png: a whole PNG with the radiograph, the depth colours and every bone's colour in it."""
    h = w = 64
    image = np.random.default_rng(0).random((h, w)).astype(np.float32)
    masks = np.zeros((h, w, 3), bool)
    masks[10:30, 10:50, 0] = masks[35:60, 5:20, 1] = masks[35:60, 40:55, 2] = True
    depth = np.zeros((h, w, 6), np.float32)
    for b in range(3):
        depth[..., 2 * b][masks[..., b]], depth[..., 2 * b + 1][masks[..., b]] = 900.0 + 10 * b, 950.0 + 10 * b
    meshes = {
        "pelvis": square(950.0, 40.0),
        "femur_left": square(960.0, 10.0, (50.0, 60.0)),
        "femur_right": square(970.0, 10.0, (-50.0, 60.0)),
    }
    save_reconstruction_report(
        tmp_path / "report.png", image, masks, depth, meshes, ["pelvis", "femur_left", "femur_right"], title="x"
    )
    picture = np.asarray(Image.open(tmp_path / "report.png").convert("RGB"))
    assert picture.shape[0] > 600 and picture.shape[1] > 900
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    for hex_colour in BONE_COLOURS.values():
        assert tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)) in colours
    assert not list(tmp_path.glob(".*"))  # written atomically
    # the hip plane is written beside the bone legend: the bottom band gains dark text pixels, nothing above it changes
    save_reconstruction_report(
        tmp_path / "hips.png",
        image,
        masks,
        depth,
        meshes,
        ["pelvis", "femur_left", "femur_right"],
        title="x",
        hip_plane={"depth_mm": 951.6, "magnification": 1100.0 / 951.6, "femurs": ["femur_left", "femur_right"]},
    )
    with_plane = np.asarray(Image.open(tmp_path / "hips.png").convert("RGB"))
    assert with_plane.shape == picture.shape
    changed = np.flatnonzero((with_plane != picture).any(axis=(1, 2)))
    assert changed.size and changed.min() >= picture.shape[0] - 24
    assert (with_plane[-24:].sum(-1) < 200).sum() > (picture[-24:].sum(-1) < 200).sum()


def test_report_radiograph_panel_keeps_orientation_and_sides(tmp_path):
    """A 32 x 64 (H x W) black radiograph with a bright top-right corner (rows 0-7, columns 56-63), femur_left masked at
    rows 4-11, columns 40-59 (image right, where the patient's left lies in an AP view) and femur_right at rows 20-27,
    columns 4-23. In report.png the radiograph panel shows it enlarged 4x ((320 - 2 * 16) // 64: a 16-pixel margin for
    the patient's directions), not transposed, not mirrored: its black area is 128 x 256 pixels, the corner white, and
    each bone's colour exactly on its mask's 1-pixel outline there, rows 4*r0 .. 4*r1 - 1 and columns 4*c0 .. 4*c1 - 1.
    """
    h, w, k = 32, 64, 4
    image = np.zeros((h, w), np.float32)
    image[:8, 56:] = 1.0
    boxes = {"femur_left": (4, 12, 40, 60), "femur_right": (20, 28, 4, 24)}
    bones = ["pelvis", "femur_left", "femur_right"]
    masks = np.zeros((h, w, 3), bool)
    for bone, (r0, r1, c0, c1) in boxes.items():
        masks[r0:r1, c0:c1, bones.index(bone)] = True
    depth = np.where(np.repeat(masks, 2, axis=-1), 950.0, 0.0).astype(np.float32)
    meshes = {"femur_left": square(960.0, 10.0, (50.0, 60.0)), "femur_right": square(970.0, 10.0, (-50.0, 60.0))}
    save_reconstruction_report(tmp_path / "report.png", image, masks, depth, meshes, bones, title="x")
    picture = np.asarray(Image.open(tmp_path / "report.png").convert("RGB")).astype(int)
    # the radiograph's black pixels fill most of every column, then of every row, of its image (text is too thin to)
    black = (picture == 0).all(-1)
    cols = np.flatnonzero(black.sum(0) >= 50)
    rows = np.flatnonzero(black[:, cols].sum(1) >= 100)
    assert rows.size == h * k and cols.size == w * k and np.ptp(rows) == h * k - 1 and np.ptp(cols) == w * k - 1
    panel = picture[rows[0] : rows[0] + h * k, cols[0] : cols[0] + w * k]
    expected = np.zeros((h * k, w * k, 3), int)
    expected[: 8 * k, 56 * k :] = 255
    for bone, (r0, r1, c0, c1) in boxes.items():
        outline = np.zeros((h * k, w * k), bool)
        outline[r0 * k : r1 * k, c0 * k : c1 * k] = True
        outline[r0 * k + 1 : r1 * k - 1, c0 * k + 1 : c1 * k - 1] = False
        expected[outline] = [int(BONE_COLOURS[bone][i : i + 2], 16) for i in (1, 3, 5)]
    np.testing.assert_array_equal(panel, expected)
    # and nowhere else in the panel's square (white above and below the image)
    assert (picture[rows[0] - (w - h) * k // 2 : rows[0], cols[0] : cols[0] + w * k] == 255).all()
    assert (picture[rows[0] + h * k : rows[0] + h * k + (w - h) * k // 2, cols[0] : cols[0] + w * k] == 255).all()


def _report_inputs():
    """A 64 x 64 radiograph with three box masks at 950-990 mm and three squares facing the source: the pelvis
    (half 40 mm at the centre) and femurs (half 10 mm at x = +-50, y = 60 mm), so the meshes span 120 mm across
    (x -60..60), 110 mm top to bottom (y -40..70) and 20 mm in depth (z 950..970)."""
    h = w = 64
    image = np.random.default_rng(0).random((h, w)).astype(np.float32)
    masks = np.zeros((h, w, 3), bool)
    masks[10:30, 10:50, 0] = masks[35:60, 5:20, 1] = masks[35:60, 40:55, 2] = True
    depth = np.where(np.repeat(masks, 2, axis=-1), 950.0, 0.0).astype(np.float32)
    meshes = {
        "pelvis": square(950.0, 40.0),
        "femur_left": square(960.0, 10.0, (50.0, 60.0)),
        "femur_right": square(970.0, 10.0, (-50.0, 60.0)),
    }
    return image, masks, depth, meshes, ["pelvis", "femur_left", "femur_right"]


def test_report_texts_say_the_warnings_and_fit_without_overlap(tmp_path):
    """Every warning, caution and note is drawn in full (wrapped lines joined give it back) in its colour, the patient's
    directions stand at the radiograph's edges as at the AP view's, and no text leaves the picture or overlaps another.
    """
    image, masks, depth, meshes, bones = _report_inputs()
    warning = "implausible prediction (score 0.82 < 1; failed: " + ", ".join(f"check {k}" for k in range(30)) + ")"
    caution = "left/right assumed: radiological display (columns toward the patient's left); not checked"
    note = "SID 1100 mm: standard geometry; pixel spacing: argument pixel_spacing_mm"
    hip = {"depth_mm": 951.6, "magnification": 1100.0 / 951.6}
    texts = save_reconstruction_report(
        tmp_path / "r.png", image, masks, depth, meshes, bones, "x", [warning], hip_plane=hip,
        cautions=[caution], notes=[note], pixel_spacing_mm=3.125,
    )  # fmt: skip
    for prefix, text, colour in (
        ("WARNING: ", warning, WARNING_RGB),
        ("CAUTION: ", caution, CAUTION_RGB),
        ("", note, NOTE_RGB),
    ):
        lines = [t.text for t in texts if t.colour == colour]
        assert " ".join(lines) == prefix + text and (len(lines) > 1) == (text is warning)
    assert any(t.text.startswith("hip plane (femoral head centres): 952 mm") and "1.156" in t.text for t in texts)
    letters = [t.text for t in texts if t.colour == LETTER_RGB]
    assert letters[:4] == list(orientation_letters(AP_VIEW)) == ["R", "L", "S", "I"]
    width, height = Image.open(tmp_path / "r.png").size
    font = report_font()
    boxes = []
    for (x, y), text, _ in texts:
        left, top, right, bottom = font.getbbox(text)
        boxes.append((x + left, y + top, x + right, y + bottom, text))
    for i, (x0, y0, x1, y1, text) in enumerate(boxes):
        assert 0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height, text
        for u0, v0, u1, v1, other in boxes[i + 1 :]:
            assert x1 <= u0 or u1 <= x0 or y1 <= v0 or v1 <= y0, (text, other)


def test_report_scale_bars_measure_the_views(tmp_path):
    """Scale bars of the longest 1/2/5 x 10^k mm within 30% of a 320-pixel panel (96 px): the mesh views span
    120 mm (AP: 120 x 110; lateral: 20 x 110; axial: 120 x 20), so 320 / (1.1 * 120) = 2.42 px/mm (AP, axial) and
    320 / (1.1 * 110) = 2.64 px/mm (lateral): 20 mm bars of 48 and 53 px; the 64-pixel radiograph, shown 4x, with
    3.125 mm detector pixels and magnification 1.25 has 4 * 1.25 / 3.125 = 1.6 px/mm at the hip plane: 50 mm, 80 px.
    Each bar is drawn black, its label 6 px right of its end."""
    image, masks, depth, meshes, bones = _report_inputs()
    hip = {"depth_mm": 880.0, "magnification": 1.25}
    texts = save_reconstruction_report(
        tmp_path / "r.png", image, masks, depth, meshes, bones, "x", hip_plane=hip, pixel_spacing_mm=3.125
    )
    picture = np.asarray(Image.open(tmp_path / "r.png").convert("RGB")).astype(int)
    titles = {t.text: t.xy for t in texts}
    expected = {
        "radiograph + bone outlines": ("50 mm at the hip plane", 80),
        "AP (source view)": ("20 mm", 48),
        "lateral (from the patient's right)": ("20 mm", 53),
        "axial (from above)": ("20 mm", 48),
    }
    for title, (label, length) in expected.items():
        x, y = titles[title]
        bar_y = y + 18 + 320 + 7  # under the panel (title 18 px above it)
        ((lx, ly),) = [
            t.xy for t in texts if t.text == label and x < t.xy[0] < x + 320 and abs(t.xy[1] - (bar_y - 7)) < 2
        ]
        assert lx == x + length + 6, title
        black = np.flatnonzero((picture[bar_y, x : x + length + 6] == 0).all(-1))
        np.testing.assert_array_equal(black, np.arange(length))
    assert not any(t.text.endswith("at the detector") for t in texts)
    # without the hip plane the radiograph's bar is measured at the detector: 4 / 3.125 = 1.28 px/mm, 50 mm = 64 px
    texts = save_reconstruction_report(
        tmp_path / "d.png", image, masks, depth, meshes, bones, "x", pixel_spacing_mm=3.125
    )
    assert "50 mm at the detector" in [t.text for t in texts]


def test_figure_mesh_views_carry_a_scale_bar():
    """render_mesh (evaluation's error map, benchmarks): a 50 mm ball fills 480 px / 1.1 of its view, 4.36 px/mm, so
    the bar is 20 mm (87.3 px; 50 mm would pass 25% of the picture, 120 px), labelled."""
    ball = trimesh.creation.icosphere(subdivisions=3, radius=50.0).apply_translation([0.0, 0.0, 950.0])
    fig, ax = plt.subplots()
    render_mesh(ax, {"pelvis": ball}, AP_VIEW, "AP")
    (bar,) = ax.lines
    assert np.ptp(bar.get_xdata()) == pytest.approx(20.0 * 480 / (1.1 * 100.0), rel=1e-3)
    assert "20 mm" in [t.get_text() for t in ax.texts]
    assert ax.get_xlim() == (-0.5, 479.5)  # the bar did not widen the picture
    plt.close(fig)


def test_metric_bars_leave_a_missing_mean_out_rather_than_at_zero():
    """A mean that is NaN (a bone never found) has no bar, "n/a" instead; the others are drawn at their values with
    their SD; panels are titled by group_titles and the figure by its title."""
    means = [
        {"shift": "centre", "variant": "dual_face", "bone": "pelvis", "assd_mm": 2.5, "assd_mm_std": 0.5},
        {"shift": "centre", "variant": "dual_face", "bone": "femur_left", "assd_mm": float("nan"), "assd_mm_std": 0.0},
    ]
    fig = metric_bars_figure(
        means, "assd_mm", ["centre"], ["dual_face"], ["pelvis", "femur_left"], "ASSD (mm)", "n = 1", {"centre": "c"}
    )
    (ax,) = fig.axes
    heights = [p.get_height() for p in ax.patches]
    assert heights == [2.5] and [t.get_text() for t in ax.texts] == ["n/a"]
    assert ax.get_title() == "c" and fig._suptitle.get_text() == "n = 1"
    plt.close(fig)


def test_error_map_says_what_grey_and_the_top_colour_mean():
    """The error map's colour bar runs 0 .. max_mm with an arrow for more (clipped), and its label says grey is
    outside the X-ray field."""
    ball = trimesh.creation.icosphere(subdivisions=2, radius=50.0).apply_translation([0.0, 0.0, 950.0])
    errors = np.linspace(0.0, 10.0, len(ball.vertices))
    errors[:5] = np.nan
    fig = error_map_figure({"pelvis": ball}, {"pelvis": errors}, max_mm=5.0, title="t")
    colorbar = fig.axes[-1]
    assert "grey: outside the X-ray field" in colorbar.get_ylabel() and "5 and more" in colorbar.get_ylabel()
    assert len(fig.axes) == 4 and all(len(ax.lines) == 1 for ax in fig.axes[:3])  # three views with scale bars
    assert colorbar.get_ylim()[1] >= 5.0
    plt.close(fig)
