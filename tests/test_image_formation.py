"""Clinical image formation, each part against a hand-computed case: spectrum, polychromatic attenuation,
heel effect, scatter and grid, detector field and collimation, processing, storage, content."""

import math

import numpy as np
import pytest
import torch
from scripts.data import clinical_content as content
from scripts.data.radiograph_processing import exposure_normalise, look_up, multiscale_equalise, store_and_read
from scripts.data.radiograph_style import DEFAULT_STYLE, style_radiograph
from scripts.data.xray_physics import (
    DENSITY_G_CM3,
    MATERIALS,
    detector_signal,
    detector_weights,
    grid_transmission,
    heel_factor,
    mass_attenuation,
    polychromatic_transmission,
    scatter,
    spectrum,
)
from scripts.io.radiograph_io import bone_bright
from tests.helpers import GEOM


def water_slab(g_cm2: float, shape=(64, 64)) -> torch.Tensor:
    stack = torch.zeros((2,) + shape)
    stack[0] = g_cm2
    return stack


def test_unfiltered_spectrum_is_kramers_and_filtration_hardens_it():
    e, n = spectrum(80.0, 0.0, 0.0, bin_kev=5.0)
    assert e[0] == 22.5 and e[-1] == 77.5
    kramers = (80.0 - e) / e
    np.testing.assert_allclose(n, kramers / kramers.sum(), rtol=1e-12)
    _, n_al = spectrum(80.0, 3.0, 0.0)
    _, n_cu = spectrum(80.0, 3.0, 0.2)
    mean = lambda w: float((w * e).sum())  # noqa: E731
    assert mean(n) < mean(n_al) < mean(n_cu)  # beam hardening by the filters
    with pytest.raises(ValueError):
        spectrum(20.0)


def test_polychromatic_water_slab_lies_between_the_monochromatic_extremes():
    e, n = spectrum(90.0, 2.5, 0.1)
    w = detector_weights(e, n)
    for t_cm in (1.0, 5.0, 20.0):
        p = float(polychromatic_transmission(water_slab(t_cm, (1, 1)), e, w)[0, 0])
        soft = math.exp(-mass_attenuation("water", e[0]) * t_cm)  # lowest energy: most attenuated
        hard = math.exp(-mass_attenuation("water", e[-1]) * t_cm)
        assert soft < p < hard
        assert p == pytest.approx(float(np.sum(w * np.exp(-mass_attenuation("water", e) * t_cm))), rel=1e-5)
    # beam hardening: the effective attenuation per cm falls with thickness
    mu_eff = [
        -math.log(float(polychromatic_transmission(water_slab(t, (1, 1)), e, w)[0, 0])) / t for t in (1.0, 10.0, 30.0)
    ]
    assert mu_eff[0] > mu_eff[1] > mu_eff[2]
    # two energies by hand: half the signal at 40 keV, half at 80 keV, 10 cm water + 1 g/cm^2 bone
    a = torch.zeros((len(MATERIALS), 1, 1))
    a[0], a[1] = 10.0, 1.0
    hand = 0.5 * sum(math.exp(-10.0 * mass_attenuation("water", k) - mass_attenuation("bone", k)) for k in (40.0, 80.0))
    assert float(polychromatic_transmission(a, np.array([40.0, 80.0]), np.array([0.5, 0.5]))[0, 0]) == pytest.approx(
        hand, rel=1e-5
    )


def test_lead_k_edge_and_table_values():
    assert mass_attenuation("lead", 88.0) < mass_attenuation("lead", 88.01)  # the K edge is a step up
    assert float(mass_attenuation("bone", 60.0)) == pytest.approx(0.3148)  # NIST, cortical bone (ICRU-44)
    with pytest.raises(ValueError):
        mass_attenuation("water", 10.0)


def test_heel_effect_is_monotone_along_the_anode_cathode_axis():
    theta = torch.linspace(-0.15, 0.15, 101)  # radians (+-8.6 degrees); anode side negative
    f = heel_factor(theta, anode_angle_deg=12.0, attenuation=0.02)
    assert torch.all(f.diff() > 0)  # intensity rises from the anode to the cathode side
    assert torch.all(
        heel_factor(torch.linspace(-0.4, 0.4, 101), 12.0, 0.02).diff() >= 0
    )  # beyond the target's edge: flat
    assert float(heel_factor(torch.zeros(1), 12.0, 0.02)) == pytest.approx(1.0)
    assert float(f[0]) < 0.9 and float(f[-1]) < 1.2
    # in the image: without a heel effect the slab is symmetric top to bottom (cos^3 falloff); with the anode
    # up, the top (less signal) is brighter than the bottom
    plain = style_radiograph(water_slab(20.0), GEOM)[0]
    heeled = style_radiograph(water_slab(20.0), GEOM, options={"heel_attenuation": 0.02, "anode_up_prob": 1.0})[0]
    assert torch.allclose(plain, plain.flip(0), atol=1e-3)
    assert heeled[:8].mean() > heeled[-8:].mean() + 0.1


def test_grid_removes_scatter_in_a_uniform_slab():
    mu_t = 20.0 * float(mass_attenuation("water", 60.0))  # 20 cm of water at 60 keV
    primary = torch.full((64, 64), math.exp(-mu_t))
    exposed = torch.ones(64, 64)
    kappa = 1.2
    s = scatter(primary, exposed, kappa, sigma_px=3.0, downsample=1)
    centre = float(s[32, 32])
    assert centre == pytest.approx(kappa * mu_t * math.exp(-mu_t), rel=1e-4)  # SPR = kappa * mu t away from the edges
    assert float(s[0, 0]) < 0.5 * centre  # no scatter comes from beyond the field
    spr = {}
    for grid in (False, True):
        tp, ts = grid_transmission(grid, 0.7, 0.1)
        spr[grid] = ts * centre / (tp * float(primary[32, 32]))
    assert spr[False] == pytest.approx(kappa * mu_t, rel=1e-4)
    assert spr[True] == pytest.approx(kappa * mu_t * 0.1 / 0.7, rel=1e-4)
    # scatter only comes from irradiated pixels: a collimated half scatters nothing
    half = exposed.clone()
    half[:, 32:] = 0
    assert float(scatter(primary, half, kappa, 3.0, downsample=1)[32, 60]) < 1e-3 * centre


def test_detector_area_of_a_35_by_43_detector():
    for sid, portrait in ((1100.0, True), (1000.0, False), (1200.0, True)):
        area = content.detector_area(GEOM, sid, portrait)
        x, y = content.detector_mm(GEOM)
        wide, tall = (350.0, 430.0) if portrait else (430.0, 350.0)
        expected = (x.abs() <= wide / 2 * 1100.0 / sid) & (y.abs() <= tall / 2 * 1100.0 / sid)
        assert torch.equal(area.bool(), expected)
        cols = int(area.bool().any(0).sum())
        assert cols == min(
            64, 2 * math.floor(wide / 2 * 1100.0 / sid / 6.25 + 0.5)
        )  # pixel centres at +-3.125 + k 6.25 mm


def test_collimated_border_is_constant_and_padding_is_zero():
    opts = {
        "detector_short_mm": 350.0,
        "detector_long_mm": 430.0,
        "portrait_prob": 1.0,
        "collimation_inset_mm": 40.0,
        "collimation_rotation_deg": 2.0,
        "shutter_prob": 1.0,
        "shutter_white_prob": 0.0,
        "quanta_per_mm2": 20000.0,
        "scatter_per_attenuation": 1.0,
        "grid_prob": 1.0,
        "bits_stored": 12.0,
    }
    image, fov, exposed, drawn = style_radiograph(
        water_slab(15.0), GEOM, options=opts, generator=torch.Generator().manual_seed(0)
    )
    border = (fov > 0.5) & (exposed < 0.5)
    assert border.sum() > 100 and (exposed > 0.5).sum() > 1000
    assert torch.all(image[border] == 0.0)  # the electronic shutter: one constant value
    assert torch.all(image[fov < 0.5] == 0.0)  # padding
    assert image[exposed > 0.5].std() > 0  # noise inside the field
    # without a shutter the blades leave only leakage and scatter: the border is brighter (less signal) than the field
    physical = style_radiograph(
        water_slab(15.0),
        GEOM,
        options={**opts, "shutter_prob": 0.0, "collimator_leakage": 0.02},
        generator=torch.Generator().manual_seed(0),
    )[0]
    assert physical[border].mean() > physical[exposed > 0.5].mean()


def test_monochrome1_storage_reads_back_as_monochrome2():
    image = torch.rand(32, 32, generator=torch.Generator().manual_seed(1))
    image[0, 0], image[0, 1] = 0.0, 1.0
    m2 = store_and_read(image, 12, monochrome1=False)
    m1 = store_and_read(image, 12, monochrome1=True)
    assert torch.allclose(m1, m2, atol=1e-6)
    assert torch.allclose(m2, image, atol=0.5 / 4095 + 1e-6)  # 12-bit quantisation
    assert np.array_equal(bone_bright(np.array([0.0, 3.0, 10.0]), "MONOCHROME1"), [10.0, 7.0, 0.0])


def test_processing_steps_by_hand():
    x = torch.linspace(0, 1, 64).repeat(64, 1) + 0.1 * torch.rand(64, 64, generator=torch.Generator().manual_seed(2))
    exposed = torch.ones(64, 64)
    assert torch.allclose(multiscale_equalise(x, exposed, 1.0, 1.0, 1.0), x, atol=1e-5)  # identity
    flat = multiscale_equalise(x, exposed, 0.3, 1.0, 1.0)
    assert flat.std() < x.std()  # large-scale latitude compressed
    detail = multiscale_equalise(x, exposed, 1.0, 2.0, 1.0) - x
    assert detail.abs().max() > 0.01
    log_signal = 1.0 + x  # the patient: every pixel attenuated (log > 0.5)
    n = exposure_normalise(log_signal, exposed, 0.0, 100.0)
    assert float(n.min()) == pytest.approx(0.0, abs=1e-6) and float(n.max()) == pytest.approx(1.0, abs=1e-6)
    with_air = log_signal.clone()
    with_air[:, :8] = 0.05  # direct exposure beside the patient: outside the values of interest, saturates below 0
    m = exposure_normalise(with_air, exposed, 0.0, 100.0)
    assert torch.allclose(m[:, 8:], exposure_normalise(log_signal[:, 8:], exposed[:, 8:], 0.0, 100.0)) and bool(
        torch.all(m[:, :8] < 0)
    )
    ramp = torch.linspace(0, 1, 11)
    assert torch.allclose(look_up(ramp, 0.0, 1.0), ramp)
    s = look_up(ramp, 8.0, 1.0)
    assert float(s[0]) == 0.0 and float(s[-1]) == pytest.approx(1.0) and torch.all(s.diff() > 0)
    assert float(s[2]) < 0.2  # sigmoid: toe below the linear curve
    assert torch.allclose(look_up(ramp, 0.0, 2.0), ramp**2)


def test_contrast_equalisation_of_a_cosine_by_hand():
    """A cosine of period 64 px along x, 0.3 + 0.5 cos, 48 px (the widest kernel's reach) or more from the left and
    right edges: each Gaussian (normalised, truncated at 3 sigma) scales it by its transfer sum_n w_n cos(2 pi n / 64),
    so band k is the cosine times A (H_{k-1} - H_k) and the residual 0.3 + A H_16 cos. The docstring's step 3 then gives,
    pixel by pixel, m + base_gain (residual - m) + band_1 + sum_k gain sign(b) 0.1 (|b| / 0.1)^power, m the residual's
    mean over the exposed pixels: here the interior columns where the cosine is positive, m = 0.3 + A H_16 mean(cos)."""
    period, width, offset, amplitude = 64, 512, 0.3, 0.5
    cos = np.cos(2 * np.pi * np.arange(width) / period)
    x = torch.tensor(offset + amplitude * np.tile(cos, (64, 1)))  # float64: exact to rounding
    inner = slice(64, width - 64)

    def transfer(sigma: float) -> float:
        n = np.arange(-math.ceil(3 * sigma), math.ceil(3 * sigma) + 1)
        w = np.exp(-0.5 * (n / sigma) ** 2)
        return float((w * np.cos(2 * np.pi * n / period)).sum() / w.sum())

    h = [1.0] + [transfer(s) for s in (1.0, 2.0, 4.0, 8.0, 16.0)]
    band = [amplitude * (h[k] - h[k + 1]) for k in range(5)]  # 0.0024, 0.0070, 0.027, 0.094, 0.22
    residual = offset + amplitude * h[5] * cos
    half = np.zeros(width, bool)
    half[inner] = cos[inner] > 0
    for base_gain, gain, power, exposed_columns in (
        (1.0, 1.5, 0.6, np.ones(width, bool)),
        (0.5, 1.0, 1.0, half),
        (0.5, 1.5, 0.8, half),
    ):
        exposed = torch.tensor(np.tile(exposed_columns, (64, 1)), dtype=torch.float64)
        m = residual[exposed_columns].mean()  # base_gain 1: m cancels, edges or not
        expected = m + base_gain * (residual - m) + band[0] * cos
        for b in band[1:]:
            expected = expected + gain * np.sign(cos) * 0.1 * (np.abs(b * cos) / 0.1) ** power
        got = multiscale_equalise(x, exposed, base_gain, gain, power).numpy()
        np.testing.assert_allclose(got[:, inner], np.tile(expected[inner], (64, 1)), atol=1e-8)


def test_exposure_window_over_the_patient_or_the_whole_field_by_hand():
    """Percentiles 0 and 100 over the patient (exposed, log > 0.5) map to 0 and 1; a patient under 5% of the exposed
    pixels falls back to all exposed pixels. Field: the right 32 of 64 columns (2048 pixels, 5%: 102.4); log 0.1 .. 0.4
    along x there, 0 outside the field (never part of the window)."""
    exposed = torch.zeros(64, 64)
    exposed[:, 32:] = 1.0
    log_signal = torch.zeros(64, 64, dtype=torch.float64)
    log_signal[:, 32:] = torch.linspace(0.1, 0.4, 32, dtype=torch.float64)
    small = log_signal.clone()
    small[:10, 40:50] = 2.0  # 100 patient pixels < 102.4: window over the field, 0.1 .. 2.0
    torch.testing.assert_close(exposure_normalise(small, exposed, 0.0, 100.0), (small - 0.1) / 1.9)
    large = log_signal.clone()
    large[:11, 40:50] = torch.linspace(1.0, 2.0, 110, dtype=torch.float64).reshape(
        11, 10
    )  # 110 >= 102.4: window 1.0 .. 2.0
    torch.testing.assert_close(exposure_normalise(large, exposed, 0.0, 100.0), large - 1.0)


def test_defaults_are_a_plain_log_image_and_unknown_options_fail():
    slab = water_slab(5.0)
    slab[0, :, 32:] = 25.0  # thicker right half
    image, fov, exposed, drawn = style_radiograph(slab, GEOM)
    assert torch.all(fov == 1) and torch.all(exposed == 1)
    assert float(image[:, :32].mean()) == pytest.approx(0.0, abs=0.02) and float(image[:, 32:].mean()) == pytest.approx(
        1.0, abs=0.02
    )
    assert set(drawn) >= {"kvp", "grid", "shutter", "monochrome1"}
    with pytest.raises(ValueError):
        style_radiograph(slab, GEOM, options={"not_an_option": 1})
    assert set(DEFAULT_STYLE) >= {
        "kvp",
        "filtration_al_mm",
        "heel_attenuation",
        "grid_prob",
        "quanta_per_mm2",
        "base_gain",
        "monochrome1_prob",
    }


def two_bone_masks():
    """Pelvis block in the upper middle, two femur bars below it (64 x 64, 6.25 mm pixels)."""
    masks = torch.zeros((3, 64, 64), dtype=torch.bool)
    masks[0, 14:30, 16:48] = True
    masks[1, 26:58, 38:44] = True  # femur_left: image right
    masks[2, 26:58, 20:26] = True
    return masks


def test_implants_shield_and_marker_lie_where_they_belong_and_keep_labels():
    masks = two_bone_masks()
    gen = torch.Generator().manual_seed(3)
    base = style_radiograph(water_slab(15.0), GEOM, masks)[0]
    hip = style_radiograph(water_slab(15.0), GEOM, masks, {"hip_implant_prob": 1.0}, gen)[0]
    brighter = (hip - base) > 0.05
    femurs = masks[1] | masks[2]
    assert brighter.any() and (brighter & femurs).sum() > 0.5 * brighter.sum()  # the stem and head sit on a femur
    assert torch.equal(masks, two_bone_masks())  # labels untouched
    shield = style_radiograph(
        water_slab(15.0), GEOM, masks, {"gonad_shield_prob": 1.0}, torch.Generator().manual_seed(4)
    )[0]
    dark = (shield - base) > 0.2
    rows = torch.nonzero(dark.any(1)).flatten()
    assert dark.any() and int(rows.min()) >= 18  # over the lower pelvis / below it, not over the crests
    marker = style_radiograph(
        water_slab(15.0), GEOM, masks, {"side_marker_prob": 1.0}, torch.Generator().manual_seed(5)
    )[0]
    lead = (marker - base) > 0.2
    assert lead.any() and not lead[16:48, 16:48].any()  # a letter in a corner of the field


def analytic_femur():
    """Object-plane grid (1 mm pixels, x -150..150, y -60..300 mm) and a left-side femur whose pelvis lies at larger x:
    a head disc (radius 22 mm) at the origin, a neck 24 mm wide to the shaft at (-45, 40) (neck-shaft angle 132
    degrees), a straight shaft 30 mm wide (x -60..-30) from y 40 mm down."""
    y, x = torch.meshgrid(torch.arange(-60.0, 300.5), torch.arange(-150.0, 150.5), indexing="ij")
    t = ((x * -45.0 + y * 40.0) / (45.0**2 + 40.0**2)).clamp(0.0, 1.0)
    neck = (x + 45.0 * t) ** 2 + (y - 40.0 * t) ** 2 <= 12.0**2
    femur = (x**2 + y**2 <= 22.0**2) | neck | ((x >= -60.0) & (x <= -30.0) & (y >= 40.0))
    return x, y, femur


def test_hip_fixations_follow_the_neck_and_shaft():
    """On an analytic femur (lateral cortex of the shaft at x = -60 mm): every kind is steel only; the neck screws
    pass the head centre and a point 30 mm down the neck axis at 130 degrees to the shaft (6.25 or 3.25 mm
    radius: within 2.6 mm of any drawn angle 125-135), not the pelvis side of the head; they end at the lateral
    cortex (cannulated: no steel beyond x = -77 mm, the exit 3 mm past the cortex plus a screw's offset and
    radius). A sliding hip screw's side plate stands edge-on just outside the cortex (19 mm of steel at x = -62.5
    mm for 70 mm down the shaft, nothing at x = -70 below the barrel); a nail fills the shaft's axis at y = 130 mm, where cannulated
    screws put nothing. Drawn kinds are seeded; an unknown kind is refused."""
    x, y, femur = analytic_femur()
    head, _ = content.proximal_femur(x, y, femur, 1.0)
    plate = 19.0 * 0.1 * DENSITY_G_CM3["steel"]
    angle = math.radians(180.0 - 130.0)
    down_neck = (head[0] - 30.0 * math.sin(angle), head[1] + 30.0 * math.cos(angle))

    def pixel(p: tuple[float, float]) -> tuple[int, int]:  # (row, column) of an (x, y) point
        return int(round(p[1] + 60.0)), int(round(p[0] + 150.0))

    for k, kind in enumerate(content.HIP_FIXATIONS):
        metal = content.hip_fixation(x, y, femur, 1.0, torch.Generator().manual_seed(k), kind)
        assert set(metal) == {"copper"}
        steel = metal["copper"]
        assert float(steel.min()) >= 0.0
        assert float(steel[pixel(head)]) > 0.0 and float(steel[pixel(down_neck)]) > 0.0
        assert float(steel[pixel((head[0] + 35.0, head[1]))]) == 0.0  # nothing toward the pelvis past the head
        if kind == "cannulated_screws":
            assert float(x[steel > 0].min()) >= -77.0
            assert float(steel[pixel((-45.0, 130.0))]) == 0.0
        if kind == "cephalomedullary_nail":
            assert float(steel[pixel((-45.0, 130.0))]) > 0.0
        if kind == "sliding_hip_screw":
            column = steel[:, pixel((-62.5, 0.0))[1]]
            rows = torch.nonzero(column >= 0.99 * plate).flatten()
            assert len(rows) >= 70 and bool(torch.all(rows.diff() == 1))
            assert float(steel[pixel((-70.0, 100.0))[0] :, pixel((-70.0, 0.0))[1]].max()) == 0.0  # below the barrel
    drawn = [content.hip_fixation(x, y, femur, 1.0, torch.Generator().manual_seed(s))["copper"] for s in (1, 1)]
    assert torch.equal(drawn[0], drawn[1])
    with pytest.raises(ValueError):
        content.hip_fixation(x, y, femur, 1.0, None, "plate")
    sliver = (x - 100.0) ** 2 + (y - 280.0) ** 2 <= 5.0**2  # a femur the field cuts to a few pixels: steel, no failure
    for kind in content.HIP_FIXATIONS:
        steel = content.hip_fixation(x, y, sliver, 1.0, torch.Generator().manual_seed(0), kind)["copper"]
        assert bool(torch.isfinite(steel).all()) and float(steel.max()) > 0.0


def test_hip_fixation_fraction_swaps_the_joint_replacement_without_touching_other_draws():
    """``hip_fixation_fraction`` 0 (the default) draws nothing, so every other draw is what it was before the option
    existed: a tiny fraction, which draws its chance (and then places the same joint replacement), shifts the
    quantum noise that 0 leaves alone. 1 puts steel, not a titanium stem with a CoCr head, on a femur; the
    labels stay those of the bones."""
    masks = two_bone_masks()
    opts = {"hip_implant_prob": 1.0, "quanta_per_mm2": 50000.0}
    default = style_radiograph(water_slab(15.0), GEOM, masks, opts, torch.Generator().manual_seed(3))
    zero = style_radiograph(
        water_slab(15.0), GEOM, masks, {**opts, "hip_fixation_fraction": 0.0}, torch.Generator().manual_seed(3)
    )
    fixed = style_radiograph(
        water_slab(15.0), GEOM, masks, {**opts, "hip_fixation_fraction": 1.0}, torch.Generator().manual_seed(3)
    )
    tiny = style_radiograph(
        water_slab(15.0), GEOM, masks, {**opts, "hip_fixation_fraction": 1e-9}, torch.Generator().manual_seed(3)
    )
    assert torch.equal(default[0], zero[0]) and not torch.equal(zero[0], tiny[0])
    assert not torch.equal(default[0], fixed[0])
    base = style_radiograph(water_slab(15.0), GEOM, masks)[0]
    brighter = (
        style_radiograph(water_slab(15.0), GEOM, masks, {"hip_implant_prob": 1.0, "hip_fixation_fraction": 1.0})[0]
        - base
    ) > 0.05
    assert brighter.any() and (brighter & (masks[1] | masks[2])).sum() > 0.5 * brighter.sum()
    assert torch.equal(masks, two_bone_masks())


def test_style_is_seeded_and_stays_on_the_areal_density_device():
    """One generator seed gives one image and one set of drawn options; another seed draws others. The outputs
    lie on the input's device (CPU here; tests/test_cuda.py renders whole samples on a GPU)."""
    opts = {"quanta_per_mm2": 50000.0, "positioning_aid_prob": 1.0, "text_prob": 1.0, "kvp": [70.0, 90.0]}
    a = style_radiograph(water_slab(15.0), GEOM, two_bone_masks(), opts, torch.Generator().manual_seed(7))
    b = style_radiograph(water_slab(15.0), GEOM, two_bone_masks(), opts, torch.Generator().manual_seed(7))
    c = style_radiograph(water_slab(15.0), GEOM, two_bone_masks(), opts, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and a[3] == b[3]
    assert not torch.equal(a[0], c[0]) and a[3]["kvp"] != c[3]["kvp"]
    assert 70.0 <= a[3]["kvp"] <= 90.0 and 70.0 <= c[3]["kvp"] <= 90.0
    assert all(t.device == water_slab(15.0).device for t in a[:3] if isinstance(t, torch.Tensor))


def test_collimator_penumbra_is_a_linear_ramp_across_the_blade_edge():
    """Exposed fraction 0.5 on the blade line, rising linearly over penumbra_mm: a 40 mm inset on the left of a
    whole-field detector puts the edge at x = -200 + 40 = -160 mm (pixel centres at (u - 31.5) * 6.25 mm); the
    right blade, not inset, stands on the detector's edge at x = 200 mm."""
    detector = torch.ones(64, 64)
    x = (torch.arange(64) - 31.5) * 6.25
    for penumbra in (12.5, 25.0):
        exposed = content.collimation(GEOM, detector, (40.0, 0.0, 0.0, 0.0), 0.0, penumbra)
        expected = (torch.minimum(x + 160.0, 200.0 - x) / penumbra + 0.5).clamp(0.0, 1.0)
        torch.testing.assert_close(exposed[32], expected, rtol=0, atol=1e-5)


def test_detector_blur_quantum_and_electronic_noise_by_hand():
    """Detector response (xray_physics.detector_signal): a Gaussian MTF turns a step into the normal CDF; Poisson
    quanta give a signal variance I / q; electronic noise of s quanta in each of N native pixels adds N s^2 / q^2."""
    step = torch.zeros(64, 64, dtype=torch.float64)
    step[:, 32:] = 1.0
    sigma = 2.0
    blurred = detector_signal(step, 0.0, sigma, 0.0, 1.0)[32]
    u = torch.arange(64, dtype=torch.float64)
    cdf = 0.5 * (
        1.0 + torch.erf((u - 31.5) / (sigma * math.sqrt(2.0)))
    )  # the continuous step response at pixel centres
    torch.testing.assert_close(blurred, cdf, rtol=0, atol=0.01)
    flat = torch.full((256, 256), 0.5, dtype=torch.float64)
    q = 400.0
    quantum = detector_signal(flat, q, 0.0, 0.0, 1.0, torch.Generator().manual_seed(0))
    assert float(quantum.mean()) == pytest.approx(0.5, abs=4 * math.sqrt(0.5 / q / flat.numel()))
    assert float(quantum.var()) == pytest.approx(0.5 / q, rel=0.03)  # 65536 samples: 0.6% SE of a variance
    both = detector_signal(flat, q, 0.0, 3.0, 4.0, torch.Generator().manual_seed(1))
    assert float(both.var()) == pytest.approx((0.5 * q + 4 * 3.0**2) / q**2, rel=0.03)


def test_spine_implant_positioning_aids_and_text_by_construction():
    """Spine rods: titanium only, mirror-symmetric about the pelvis's middle column, a rod 3 mm in radius 2 x 3 mm
    thick on its axis, nothing more than 30 mm + a screw below the pelvis top. Positioning aids: water, a titanium
    buckle and a copper board line, all thin. Burned-in text: in the detector area only, 5-9 mm tall."""
    x, y = content.detector_mm(GEOM)
    pelvis = (x.abs() <= 100.0) & (y >= -50.0) & (y <= 80.0)  # symmetric about x = 0; top at the first row >= -50 mm
    top = float(y[pelvis].min())
    spine = content.spine_implant(x, y, pelvis, torch.Generator().manual_seed(2))
    assert set(spine) == {"titanium"}
    ti = spine["titanium"]
    torch.testing.assert_close(ti, torch.flip(ti, dims=[1]), rtol=0, atol=1e-5)  # mirror image about x = 0
    assert ti.max() > 0 and not ti[y > top + 30.0 + 3.2 + 4.0 + 6.25].any()  # rods end 30 mm below the pelvis top
    assert (
        float(ti.max()) >= 0.1 * 6.0 * 4.506 - 1e-4
    )  # at least a rod's diameter of titanium where rods and screws meet
    aids = content.positioning_aids(x, y, torch.Generator().manual_seed(3))
    assert set(aids) == {"water", "titanium", "copper"}
    assert 0 < float(aids["water"].max()) <= 0.1 * (6.0 + 3.0) + 1e-6  # strap plus wedge: at most 9 mm of water
    assert (
        float(aids["copper"].max()) <= 0.1 * 0.3 * 8.96 + 1e-6 and aids["copper"].gt(0).any(1).sum() <= 2
    )  # one thin line
    detector = torch.zeros(64, 64)
    detector[8:56, 4:60] = 1.0
    text = content.burned_in_text(detector, GEOM, torch.Generator().manual_seed(4))
    rows = torch.nonzero(text.any(1)).flatten()
    assert text.any() and not text[detector == 0].any() and not text[20:44, 20:44].any()  # in corners of the detector
    assert 1 <= len(rows) <= 3 * math.ceil(9.0 / 6.25) + 3  # up to three lines of 5-9 mm letters
