import json

import numpy as np
import pytest
import torch
from scripts.geometry import (
    STANDARD_AP_ROTATION,
    Geometry,
    GeometryError,
    camera_to_patient_lps,
    camera_to_world_directions,
    check_magnification,
    magnification,
    read_standard_geometry,
    rotation_matrix,
    standard_ap_pose,
    voxel_spacing,
)
from scripts.io.files import InputFileError
from tests.helpers import assert_rigid


@pytest.fixture
def geom() -> Geometry:
    pose = standard_ap_pose(
        [12.0, -30.0, 85.0], 950.0, rotation_deg=(4.0, -7.0, 11.0), translation_mm=(15.0, -8.0, 20.0)
    )
    return Geometry(
        sid_mm=1100.0, pixel_spacing_mm=(1.5, 2.0), image_size=(40, 30), principal_point_px=(18.2, 16.7)
    ).with_pose(pose)


def test_standard_geometry_file_defaults():
    g = Geometry.standard()
    assert g.sid_mm == 1100.0 and g.image_size == (256, 256) and g.pixel_spacing_mm == (1.5625, 1.5625)
    assert g.principal_point_px == (127.5, 127.5)
    assert g.bones == ("pelvis", "femur_left", "femur_right")


def test_pixel_centres_on_detector(geom):
    # hand-computed: pixel (u, v) = (0, 0) sits at ((0 - 18.2) * 1.5, (0 - 16.7) * 2.0, 1100)
    p = geom.detector_points(np.array(0.0), np.array(0.0))
    np.testing.assert_allclose(p, [-27.3, -33.4, 1100.0])
    dirs = geom.ray_directions(dtype=torch.float64)
    np.testing.assert_allclose(dirs[0, 0].numpy(), p / np.linalg.norm(p), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.norm(dirs, dim=-1).numpy(), 1.0, atol=1e-12)


def test_backproject_project_round_trip(geom):
    rng = np.random.default_rng(0)
    depth = rng.uniform(800.0, 1050.0, size=(2, geom.height, geom.width))
    pts = geom.backproject(depth)
    assert isinstance(pts, np.ndarray) and pts.shape == (2, geom.height, geom.width, 3)
    np.testing.assert_allclose(np.linalg.norm(pts, axis=-1), depth, rtol=1e-12)
    uv, d = geom.project(pts)
    v, u = np.mgrid[0 : geom.height, 0 : geom.width]
    np.testing.assert_allclose(uv[..., 0], np.broadcast_to(u, uv.shape[:-1]), atol=1e-9)
    np.testing.assert_allclose(uv[..., 1], np.broadcast_to(v, uv.shape[:-1]), atol=1e-9)
    np.testing.assert_allclose(d, depth, rtol=1e-12)
    # torch in, torch out
    t = geom.backproject(torch.as_tensor(depth))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), pts, atol=1e-9)


def test_cached_numpy_rays_match_torch_per_geometry(geom):
    depth = np.random.default_rng(3).uniform(800.0, 1000.0, (geom.height, geom.width))
    expected = geom.backproject(torch.as_tensor(depth)).numpy()
    np.testing.assert_array_equal(geom.backproject(depth), expected)
    other = Geometry(sid_mm=1000.0, pixel_spacing_mm=(2.0, 3.0), image_size=(40, 30), principal_point_px=(20.0, 10.0))
    np.testing.assert_array_equal(other.backproject(depth), other.backproject(torch.as_tensor(depth)).numpy())
    assert not np.array_equal(other.backproject(depth), expected)  # the cache is keyed per detector geometry
    posed = other.with_pose(np.diag([-1.0, -1.0, 1.0, 1.0]))  # camera-frame rays do not depend on the pose
    np.testing.assert_array_equal(posed.backproject(depth), other.backproject(depth))


def test_standard_ap_pose_axes_and_centre():
    centre = np.array([5.0, -20.0, 100.0])
    m = standard_ap_pose(centre, 950.0)
    assert_rigid(m)
    np.testing.assert_allclose(m[:3, :3], STANDARD_AP_ROTATION)
    np.testing.assert_allclose(m[:3, :3] @ np.array([-1.0, 0, 0]), [1, 0, 0])  # patient left -> +u
    np.testing.assert_allclose(m[:3, :3] @ np.array([0, 0, -1.0]), [0, 1, 0])  # inferior -> +v
    np.testing.assert_allclose(m[:3, :3] @ np.array([0, -1.0, 0]), [0, 0, 1])  # posterior -> toward detector
    g = Geometry.standard().with_pose(m)
    np.testing.assert_allclose(g.world_to_camera_points(centre), [0, 0, 950.0], atol=1e-9)
    # the patient's left side projects to larger u than the right side
    uv, _ = g.project(
        g.world_to_camera_points(
            np.array([[centre[0] - 100, centre[1], centre[2]], [centre[0] + 100, centre[1], centre[2]]])
        )
    )
    assert uv[0, 0] > uv[1, 0]


def test_camera_to_patient_lps_of_the_standard_ap_view():
    """Points 100 mm to the patient's left, 50 mm superior and 30 mm anterior of the centre (RAS world), seen in the
    standard AP pose and taken from the camera to DICOM patient coordinates (LPS: +x left, +y posterior, +z superior),
    land 100 mm along +x, 50 mm along +z and 30 mm along -y of the centre's image there."""
    centre = np.array([5.0, -20.0, 100.0])
    m = camera_to_patient_lps() @ standard_ap_pose(centre, 950.0)
    assert_rigid(m)
    left, superior, anterior = centre + [-100.0, 0, 0], centre + [0, 0, 50.0], centre + [0, 30.0, 0]
    at = m @ [*centre, 1.0]
    np.testing.assert_allclose(m @ [*left, 1.0] - at, [100.0, 0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(m @ [*superior, 1.0] - at, [0, 0, 50.0, 0], atol=1e-9)
    np.testing.assert_allclose(m @ [*anterior, 1.0] - at, [0, -30.0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(camera_to_patient_lps()[:3, 3], 0.0)  # the origin stays at the focal spot


def test_perturbed_pose_is_rigid_and_keeps_centre(geom):
    m = standard_ap_pose([1.0, 2.0, 3.0], 950.0, rotation_deg=(15, -15, 15), translation_mm=(30, -40, 50))
    assert_rigid(m)
    np.testing.assert_allclose(m @ [1.0, 2.0, 3.0, 1.0], [30, -40, 1000, 1], atol=1e-9)
    np.testing.assert_allclose(rotation_matrix((0, 0, 90)) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_world_camera_round_trip(geom):
    pts = np.random.default_rng(1).normal(size=(50, 3)) * 100
    np.testing.assert_allclose(geom.camera_to_world_points(geom.world_to_camera_points(pts)), pts, atol=1e-9)
    origin, dirs = geom.world_rays(dtype=torch.float64)
    np.testing.assert_allclose(geom.world_to_camera_points(origin.numpy()), 0.0, atol=1e-9)
    cam_dirs = dirs.numpy() @ geom.matrix[:3, :3].T
    np.testing.assert_allclose(cam_dirs, geom.ray_directions(dtype=torch.float64).numpy(), atol=1e-12)


def test_field_of_view(geom):
    depth = np.full((geom.height, geom.width), 900.0)
    pts = geom.backproject(depth)
    assert geom.in_field_of_view(pts).all()
    outside = pts[0, 0] + np.array([-50.0, 0.0, 0.0])
    behind = -pts[5, 5]
    assert not geom.in_field_of_view(outside)
    assert not geom.in_field_of_view(behind)


def test_flipped_lr_mirrors_image_and_points(geom):
    rng = np.random.default_rng(2)
    depth = rng.uniform(850, 1000, size=(geom.height, geom.width))
    flipped = geom.flipped_lr()
    assert flipped.flipped_lr() == geom
    pts = geom.backproject(depth)
    pts_f = flipped.backproject(depth[:, ::-1].copy())
    # the flipped image seen through the flipped geometry is the camera-x mirror of the original
    np.testing.assert_allclose(pts_f[:, ::-1], pts * np.array([-1.0, 1.0, 1.0]), atol=1e-9)
    # and the mirrored world maps to the same camera points: world points are unchanged
    np.testing.assert_allclose(
        flipped.camera_to_world_points(pts_f[:, ::-1]), geom.camera_to_world_points(pts), atol=1e-9
    )


def test_resized_keeps_field_of_view():
    g = Geometry.standard()
    small = g.resized((64, 64))
    assert small.pixel_spacing_mm == (6.25, 6.25)
    # the outer pixel edges stay at the same detector positions
    edge = g.detector_points(np.array(-0.5), np.array(-0.5))
    np.testing.assert_allclose(small.detector_points(np.array(-0.5), np.array(-0.5)), edge)


def test_sample_from_maps_same_rays():
    std = Geometry.standard().resized((32, 32))
    other = Geometry(sid_mm=1000.0, pixel_spacing_mm=(0.7, 0.7), image_size=(700, 600))
    uv = std.sample_from(other)
    # pixel coordinate in `other` whose ray is parallel to the standard pixel's ray
    u, v = std.pixel_grid()
    d_std = std.detector_points(u, v).numpy()
    d_oth = other.detector_points(uv[..., 0], uv[..., 1])
    np.testing.assert_allclose(np.cross(d_std, d_oth), 0.0, atol=1e-6)
    np.testing.assert_allclose(std.sample_from(std)[..., 0], u.numpy(), atol=1e-9)


def test_json_round_trip_and_errors(tmp_path, geom):
    path = tmp_path / "geometry.json"
    geom.save(path)
    d = json.loads(path.read_text())
    assert set(d) == {"sid_mm", "pixel_spacing_mm", "image_size", "principal_point_px", "world_to_camera", "bones"}
    assert Geometry.load(path) == geom
    (tmp_path / "bad.json").write_text(json.dumps({"sid_mm": 1000.0}))
    with pytest.raises(GeometryError, match="bad.json.*pixel_spacing_mm"):
        Geometry.load(tmp_path / "bad.json")
    (tmp_path / "trunc.json").write_text('{"sid_mm": 10')
    with pytest.raises(GeometryError, match="trunc.json"):
        Geometry.load(tmp_path / "trunc.json")
    with pytest.raises(GeometryError, match="sid_mm"):
        Geometry(sid_mm=float("nan"), pixel_spacing_mm=(1, 1), image_size=(4, 4))
    with pytest.raises(GeometryError, match="not found"):
        Geometry.load(tmp_path / "missing.json")


def test_magnification_and_its_range_by_hand():
    assert magnification(1100.0, 950.0) == pytest.approx(1.157894737)  # the standard patient: 1100 / 950
    np.testing.assert_allclose(magnification(1100.0, np.array([1100.0, 550.0])), [1.0, 2.0])
    assert check_magnification(1.5, "a tag") == 1.5
    for factor in (0.99, 2.01):
        with pytest.raises(GeometryError, match=f"magnification {factor:g} from a tag outside 1..2"):
            check_magnification(factor, "a tag")


def test_pixel_spacing_at_another_sid_by_hand():
    g = Geometry.standard()
    assert g.pixel_spacing_at(1000.0) == pytest.approx((1.420454545, 1.420454545))  # 1.5625 * 1000 / 1100
    other = Geometry(sid_mm=1000.0, pixel_spacing_mm=(0.5, 0.25), image_size=(800, 1600))
    np.testing.assert_allclose(g.pixel_scale_in(other), [2.840909091, 5.681818182])


def test_length_px_by_hand():
    """A detector length in pixels along u and v: 10 mm at a 0.5 x 0.25 mm pitch is 20 and 40 pixels."""
    g = Geometry(sid_mm=1000.0, pixel_spacing_mm=(0.5, 0.25), image_size=(800, 1600))
    assert g.length_px(10.0) == (20.0, 40.0)
    assert g.resized((400, 800)).length_px(10.0) == (10.0, 20.0)  # half the pixels, twice the pitch


def test_ray_obliquity_by_hand():
    g = Geometry.standard()
    cos_phi, along_v = g.ray_obliquity(dtype=torch.float64)
    corner = -127.5 * 1.5625  # pixel (0, 0): x = y = -199.21875 mm on the detector
    assert float(cos_phi[0, 0]) == pytest.approx(1100.0 / np.sqrt(2 * corner**2 + 1100.0**2), rel=1e-12)  # 0.968718
    assert float(along_v[0, 0]) == pytest.approx(
        np.arctan(corner / 1100.0), rel=1e-12
    )  # -0.17921 rad, toward the top row
    assert float(along_v[0, 255]) == float(along_v[0, 0]) and float(along_v[255, 0]) == -float(along_v[0, 0])
    np.testing.assert_allclose(cos_phi.numpy(), g.ray_directions(dtype=torch.float64)[..., 2].numpy(), rtol=1e-12)
    centred = Geometry(sid_mm=1000.0, pixel_spacing_mm=(2.0, 2.0), image_size=(5, 5))  # pixel (2, 2) on the central ray
    cos_phi, along_v = centred.ray_obliquity(dtype=torch.float64)
    assert float(cos_phi[2, 2]) == 1.0 and float(along_v[2, 2]) == 0.0
    assert float(cos_phi[4, 2]) == pytest.approx(1000.0 / np.sqrt(4.0**2 + 1000.0**2)) and float(
        along_v[4, 2]
    ) == pytest.approx(np.arctan(0.004))


def test_voxel_spacing_of_an_oblique_affine():
    """The voxel size along i, j, k survives any rotation of the voxel axes and ignores the translation."""
    affine = np.eye(4)
    affine[:3, :3] = rotation_matrix((20.0, -35.0, 50.0)) @ np.diag([0.8, 0.7, 2.5])
    affine[:3, 3] = (-180.0, 12.0, 95.0)
    np.testing.assert_allclose(voxel_spacing(affine), [0.8, 0.7, 2.5], atol=1e-12)


def test_camera_to_world_directions(geom):
    m = standard_ap_pose([5.0, -20.0, 100.0], 950.0)
    np.testing.assert_allclose(
        camera_to_world_directions(m, np.eye(3)), [[-1, 0, 0], [0, 0, -1], [0, -1, 0]], atol=1e-12
    )  # left, inferior, posterior
    rays = np.random.default_rng(3).normal(size=(10, 3))
    world = camera_to_world_directions(geom.matrix, rays)  # a rotated pose: the rotation's inverse, no translation
    np.testing.assert_allclose(world @ geom.matrix[:3, :3].T, rays, atol=1e-12)
    np.testing.assert_allclose(
        camera_to_world_directions(geom.matrix, torch.as_tensor(rays)).numpy(), world, atol=1e-12
    )


def test_read_standard_geometry(tmp_path):
    geometry, distance = read_standard_geometry()
    assert geometry == Geometry.standard() and distance == 950.0
    own = tmp_path / "geometry.json"
    own.write_text(json.dumps({"sid_mm": 1000, "pixel_spacing_mm": [2.0, 2.0], "image_size": [100, 100]}))
    assert read_standard_geometry(own) == (
        Geometry(1000.0, (2.0, 2.0), (100, 100)),
        950.0,
    )  # no distance: the standard file's
    own.write_text(
        json.dumps(
            {"sid_mm": 1000, "pixel_spacing_mm": [2.0, 2.0], "image_size": [100, 100], "source_to_object_mm": 800}
        )
    )
    assert read_standard_geometry(own)[1] == 800.0
    for bad in (400, 0, -950, None, "950", True):  # magnification 2.5; not a positive distance; not a number
        own.write_text(
            json.dumps(
                {"sid_mm": 1000, "pixel_spacing_mm": [2.0, 2.0], "image_size": [100, 100], "source_to_object_mm": bad}
            )
        )
        with pytest.raises(InputFileError, match="source_to_object_mm must be a distance"):
            read_standard_geometry(own)
    with pytest.raises(InputFileError, match="missing.json: geometry file not found"):
        read_standard_geometry(tmp_path / "missing.json")
