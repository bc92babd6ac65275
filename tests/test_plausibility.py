"""Plausibility score of a prediction (scripts.reconstruction.plausibility) on constructed masks and depths with known answers.

Bones are analytic spheres in the camera frame (tests.helpers.SPHERES: pelvis above and between the
femurs, femur_left at +x = the patient's left); each test breaks one property and checks that exactly
the checks it should fail fail, with hand-computed values. End to end, the inference workflow with the
shipped model warns on noise, an inverted image, a lateral view, a chest film and an AP radiograph read with too
small a pixel spacing, and not on a simulated AP radiograph.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scripts.data.simulate as simulate
from benchmarks.plausibility_scores import simulate_chest, simulate_lateral, write_inverted, write_noise
from PIL import Image
from scripts.data.phantom import generate_case, write_case
from scripts.geometry import Geometry
from scripts.io.files import read_nifti
from scripts.io.radiograph_io import load_radiograph
from scripts.reconstruction.plausibility import largest_part, plausibility, side_fractions
from tests.helpers import GEOM, SPHERES, ellipsoid_depths, error_lines, run_bundle

GOOD_FIT = {"pelvis": 1.0, "femur_left": 0.5, "femur_right": 0.5}


def maps(spheres: dict) -> tuple[np.ndarray, np.ndarray]:
    """Depth (2B, H, W) mm and mask (B, H, W) of camera-frame spheres {bone: (centre, radius)}, in GEOM.bones order."""
    depth, mask = [], []
    for bone in GEOM.bones:
        centre, radius = spheres[bone]
        front, back, hit = ellipsoid_depths(GEOM, centre, (radius,) * 3)
        depth += [front, back]
        mask.append(hit)
    return np.stack(depth).astype(np.float32), np.stack(mask)


def failed(result: dict) -> set[str]:
    return {c["name"] for c in result["checks"] if not c["ok"]}


def test_anatomical_layout_passes_every_check():
    depth, mask = maps(SPHERES)
    result = plausibility(mask, depth, GEOM, GOOD_FIT)
    assert result["score"] == 1.0 and result["plausible"] and result["warning"] is None
    assert len(result["checks"]) == 16  # found, one part, width, fit x 3 bones; 2 sides; 2 layout


def test_width_is_the_sphere_diameter():
    """The front-face points of a sphere span its diameter left-right, less at most one pixel footprint at the surface."""
    depth, mask = maps(SPHERES)
    checks = {c["name"]: c for c in plausibility(mask, depth, GEOM, GOOD_FIT)["checks"]}
    for bone, (centre, radius) in SPHERES.items():
        footprint = 6.25 * centre[2] / 1100.0  # mm per pixel at the sphere's depth
        assert 2 * radius - 2 * footprint <= checks[f"{bone} width"]["value"] <= 2 * radius + 0.5


def test_side_fractions_by_hand():
    """femur_left counts at larger u (columns run toward the patient's left), femur_right at smaller u, the pelvis
    its smaller side; a pixel on the midline column is on neither side."""
    mask = np.zeros((3, 4, 9), bool)
    mask[0, 0, 1:8] = True  # pelvis: columns 1..7 about the midline u = 4: 3 left, 3 right, 1 on it
    mask[1, 1, [4, 5, 6, 7]] = True  # femur_left: 3 of 4 beyond the midline, 1 on it
    mask[2, 2, [0, 1, 4, 6]] = True  # femur_right: 2 of 4 before it, 1 on it
    bones = ("pelvis", "femur_left", "femur_right")
    assert side_fractions(mask, bones, 4.0) == {"pelvis": 3 / 7, "femur_left": 0.75, "femur_right": 0.5}
    assert side_fractions(mask, bones, 0.5) == {"pelvis": 0.0, "femur_left": 1.0, "femur_right": 0.25}
    mask[2] = False
    assert "femur_right" not in side_fractions(mask, bones, 4.0)  # a bone not found has no fraction


def test_swapped_femurs_fail_side_and_layout():
    """femur_left's mask on the patient's right (and vice versa): what a mislabelled or mirrored input gives."""
    swapped = {**SPHERES, "femur_left": SPHERES["femur_right"], "femur_right": SPHERES["femur_left"]}
    depth, mask = maps(swapped)
    result = plausibility(mask, depth, GEOM, GOOD_FIT)
    assert failed(result) == {"femur_left side", "femur_right side", "pelvis between the femurs"}
    assert result["score"] == pytest.approx(13 / 16) and not result["plausible"]
    assert "femur_left side" in result["warning"] and "may not be an AP pelvis radiograph" in result["warning"]
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["femur_left side"]["value"] == 0.0 and checks["femur_right side"]["value"] == 0.0


def test_pelvis_below_the_femurs_fails_layout():
    low = {**SPHERES, "pelvis": ((0.0, 120.0, 950.0), 60.0)}
    depth, mask = maps(low)
    assert failed(plausibility(mask, depth, GEOM, GOOD_FIT)) == {"pelvis above the femurs"}


def test_scattered_mask_fails_one_part():
    """Pelvis mask as isolated pixels (as on noise): its largest part is one pixel of many."""
    depth, mask = maps(SPHERES)
    grid = np.zeros((64, 64), bool)
    grid[::4, ::4] = True
    mask[0] &= grid
    result = plausibility(mask, depth, GEOM, GOOD_FIT)
    assert "pelvis one part" in failed(result)
    assert {c["name"]: c for c in result["checks"]}["pelvis one part"]["value"] == pytest.approx(
        1 / mask[0].sum(), abs=1e-3
    )


def test_oversized_femur_and_poor_fits():
    big = {**SPHERES, "femur_left": ((120.0, 60.0, 965.0), 80.0)}  # 160 mm wide: no femur is
    depth, mask = maps(big)
    mask[0] &= ~mask[1]  # keep the masks apart as a network's would be
    result = plausibility(mask, depth, GEOM, {"pelvis": 10.0, "femur_left": 0.5, "femur_right": 3.5})
    assert failed(result) == {"femur_left width", "pelvis shape-model fit", "femur_right shape-model fit"}
    assert {c["name"]: c["value"] for c in result["checks"]}["pelvis shape-model fit"] == 10.0


def test_missing_bone_counts_once_and_thresholds_are_parameters():
    depth, mask = maps(SPHERES)
    mask[2] = False
    result = plausibility(mask, depth, GEOM, GOOD_FIT)
    # femur_right: found fails; its other checks and the layout checks cannot be evaluated
    assert failed(result) == {"femur_right found"} and len(result["checks"]) == 10  # 4 + 4 + 1 + femur_left side
    assert result["score"] == pytest.approx(9 / 10) and result["plausible"]
    assert not plausibility(mask, depth, GEOM, GOOD_FIT, min_score=0.95)["plausible"]
    depth, mask = maps(SPHERES)
    strict = plausibility(mask, depth, GEOM, GOOD_FIT, max_ssm_rms_mm=0.7, width_mm={"pelvis": [200, 300]})
    assert failed(strict) == {"pelvis shape-model fit", "pelvis width"}


def test_size_check_names_the_pixel_spacing():
    """The similarity-fit scale of a bone with a range is one more check; outside the range the warning says to check
    the pixel spacing and SID, with the scale; a bone without a range, or a fit without a scale, is not checked."""
    depth, mask = maps(SPHERES)
    ranges = {"pelvis": (0.9, 1.12)}
    ok = plausibility(mask, depth, GEOM, GOOD_FIT, similarity_scale={"pelvis": 1.03}, scale_range=ranges)
    assert ok["plausible"] and len(ok["checks"]) == 17
    assert {c["name"]: c for c in ok["checks"]}["pelvis size"] == {
        "name": "pelvis size",
        "value": 1.03,
        "expected": "0.9..1.12 x the shape model",
        "ok": True,
    }
    small = plausibility(
        mask, depth, GEOM, GOOD_FIT, 1.0, similarity_scale={"pelvis": 0.8, "femur_left": 0.5}, scale_range=ranges
    )
    assert failed(small) == {"pelvis size"} and small["score"] == round(16 / 17, 4)
    assert small["warning"].endswith(
        "(pelvis at 0.80 x the shape model's size: check the pixel spacing and SID the image was read with)"
    )
    no_scale = plausibility(mask, depth, GEOM, GOOD_FIT, similarity_scale={"pelvis": None}, scale_range=ranges)
    assert len(no_scale["checks"]) == 16
    # any other failure keeps the plain warning
    assert "pixel spacing" not in plausibility(mask, depth, GEOM, {**GOOD_FIT, "pelvis": 9.0}, 1.0)["warning"]


def femur_shaft(hip: tuple[float, float], knee: tuple[float, float], n: int = 200) -> np.ndarray:
    """Vertices (n, 3) of a line from a hip to a knee, each (camera x, y) mm at 950 mm depth: a femur's long axis."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return np.column_stack([(1 - t) * np.array(hip) + t * np.array(knee), np.full(n, 950.0)])


def test_crossed_femurs_fail_the_knee_check():
    """Completed femurs whose distal ends cross (331_DDH_10's completions formed an X) fail ``femurs apart at the
    knees``; the check's value is femur_left's distal x less femur_right's (mean of the 5% most inferior vertices:
    the last 10 of 200 evenly spaced ones, whose mean x is hand-computed)."""
    depth, mask = maps(SPHERES)
    knee_x = {"femur_left": 60.0, "femur_right": -60.0}  # apart: each knee on its own side
    apart = {b: femur_shaft((90.0 * np.sign(x), 40.0), (x, 440.0)) for b, x in knee_x.items()}
    crossed = {b: femur_shaft((90.0 * np.sign(x), 40.0), (-x, 440.0)) for b, x in knee_x.items()}
    last = np.linspace(0.0, 1.0, 200)[-10:].mean()  # the distal 5% of the line, as a fraction of hip -> knee
    want = 2 * (90.0 * (1 - last) - 60.0 * last)  # left: 90 -> -60; right: -90 -> 60
    result = plausibility(mask, depth, GEOM, GOOD_FIT, min_score=1.0, completed=crossed)  # the shipped min_score
    check = {c["name"]: c for c in result["checks"]}["femurs apart at the knees"]
    assert failed(result) == {"femurs apart at the knees"} and "failed: femurs apart at the knees" in result["warning"]
    assert check["value"] == pytest.approx(want, abs=1e-3) and want < 0
    passed = plausibility(mask, depth, GEOM, GOOD_FIT, completed=apart)
    assert passed["score"] == 1.0 and len(passed["checks"]) == 17
    apart_by = 2 * (90.0 * (1 - last) + 60.0 * last)  # left: 90 -> 60; right: -90 -> -60
    assert {c["name"]: c for c in passed["checks"]}["femurs apart at the knees"]["value"] == pytest.approx(
        apart_by, abs=1e-3
    )
    one = plausibility(mask, depth, GEOM, GOOD_FIT, completed={"femur_left": crossed["femur_left"]})
    assert len(one["checks"]) == 16  # one completed femur: not counted


def test_largest_part():
    m = np.zeros((10, 10), bool)
    m[1:3, 1:3] = True  # 4 px
    m[5:9, 5:9] = True  # 16 px
    m[9, 9] = True  # touches the big one diagonally: 8-connected
    assert largest_part(m).sum() == 17 and not largest_part(np.zeros((4, 4), bool)).any()


# ---------------------------------------------------------------------- end to end, shipped model
def _in(root, sample: Path, name: str) -> Path:
    """``sample`` copied to the inference input folder as root/in/<name>."""
    shutil.copytree(sample, root / "in" / name)
    return root / "in" / name


@pytest.fixture(scope="module")
def shipped_model_results(tmp_path_factory):
    """The inference workflow (shipped model and shape models, CPU) on a simulated AP radiograph, its inverse,
    a lateral view of the same phantom, uniform noise and a simulated chest film (builders of
    benchmarks.plausibility_scores);
    returns ({name: result.json}, stderr)."""
    root = tmp_path_factory.mktemp("plausible")
    write_case(generate_case(2026, 3.0, "llp26", subject=20), root / "phantom" / "case_2026")  # a real test subject
    cases = simulate.find_cases(root / "phantom")
    datalist, errors = simulate.simulate(cases, root / "ap", poses=1, seed=3, device="cpu")
    assert not errors
    ap = _in(root, root / "ap" / Path(next(e for split in datalist.values() for e in split)["image"]).parent, "ap")
    (lateral,) = simulate_lateral(cases, root / "lateral", seed=3)
    _in(root, lateral, "lateral")
    write_inverted(ap, root / "in" / "inverted")
    write_noise(root / "in" / "noise.png", 0)
    # the AP radiograph as a PNG read with a pitch 0.75 x its own (every PNG of the run gets it): bones drawn too small
    image = load_radiograph(ap / "image.nii.gz", Geometry.standard())[0]
    Image.fromarray(np.round((image - image.min()) / np.ptp(image) * 65535).astype(np.uint16)).save(
        root / "in" / "pitch_too_small.png"
    )
    (chest,) = simulate_chest(root / "chest", poses=1, seed=3)
    assert (
        not read_nifti(chest / "mask.nii.gz").any() and read_nifti(chest / "image.nii.gz").std() > 0
    )  # no pelvis or femur in it
    assert json.loads((chest / "sample.json").read_text())["couch_voxels_removed"] == 0  # the phantom is whole
    _in(root, chest, "chest")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        run_bundle(
            "inference.yaml",
            input_dir=str(root / "in"),
            output_dir=str(root / "out"),
            device="cpu",
            pixel_spacing_mm=0.75 * Geometry.standard().pixel_spacing_mm[0],
        )
    results = {p.parent.name: json.loads(p.read_text()) for p in (root / "out").glob("*/result.json")}
    return results, err.getvalue(), root / "out"


def test_shipped_model_warns_on_what_is_not_an_ap_pelvis_radiograph(shipped_model_results):
    results, err, out = shipped_model_results
    assert set(results) == {"ap", "pitch_too_small", "lateral", "inverted", "noise", "chest"}
    assert results["ap"]["plausibility"]["plausible"] and results["ap"]["warnings"] == []
    sizes = {n: {c["name"]: c for c in r["plausibility"]["checks"]}["pelvis size"] for n, r in results.items()}
    assert sizes["ap"]["ok"] and not sizes["pitch_too_small"]["ok"] and sizes["pitch_too_small"]["value"] < 0.9
    small = results["pitch_too_small"]
    assert small["geometry_source"]["pixel_spacing_mm"] == "argument pixel_spacing_mm"
    assert small["warnings"] == [small["plausibility"]["warning"]] and "check the pixel spacing" in small["warnings"][0]
    assert not [line for line in err.splitlines() if str(out / "ap") in line]
    for name in ("lateral", "inverted", "noise", "chest"):
        result = results[name]
        assert not result["plausibility"]["plausible"], (name, result["plausibility"])
        assert (
            result["plausibility"]["score"]
            < result["plausibility"]["min_score"]
            <= results["ap"]["plausibility"]["score"]
        )
        assert (
            result["warnings"] == [result["plausibility"]["warning"]]
            and "may not be an AP pelvis radiograph" in result["warnings"][0]
        )
        assert error_lines(err, f"{out / name}: warning: ") == [f"{out / name}: warning: {result['warnings'][0]}"]
