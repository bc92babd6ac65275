"""Radiograph reading: DICOM header variants, geometry resampling, PNG/TIFF/NIfTI, and every refusal."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)
from scripts.geometry import Geometry
from scripts.io.files import InputFileError, write_nifti
from scripts.io.radiograph_io import (
    NoImageError,
    RadiographInputs,
    field_of_view,
    input_key,
    iter_radiographs,
    load_radiograph,
    load_radiograph_with_field,
    output_name,
    read_dicom,
    resample_to,
)
from tests.helpers import STD, jpeg_lossless_copy, large_blank_image, make_dicom, make_non_image, ramp, save_raw

HYP = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------- DICOM intensity variants
@HYP
@given(
    mono1=st.booleans(),
    slope=st.sampled_from([0.5, 1.0, 2.0]),
    intercept=st.sampled_from([-1024.0, 0.0, 100.0]),
    bits=st.sampled_from([10, 12, 16]),
    window=st.booleans(),
)
def test_dicom_intensity_pipeline(tmp_path, mono1, slope, intercept, bits, window):
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 2**bits, size=(64, 64)).astype(np.uint16)
    # a window over 3/4 of the range that darkens the lowest quarter of the bone-bright image, never whitens bone
    centre_fraction = 0.375 if mono1 else 0.625  # MONOCHROME1: low stored values are bone
    center, width = 2.0**bits * centre_fraction * slope + intercept, 2.0**bits * 0.75 * slope
    tags = dict(RescaleSlope=slope, RescaleIntercept=intercept)
    if window:
        tags.update(WindowCenter=center, WindowWidth=width)
    if mono1:
        tags["PhotometricInterpretation"] = "MONOCHROME1"
    make_dicom(tmp_path / "a.dcm", stored, bits_stored=bits, **tags)
    img, geom, info = load_radiograph(tmp_path / "a.dcm", STD)
    # hand computation: modality LUT, then linear window (DICOM C.11.2.1.2), then inversion for MONOCHROME1
    x = stored * slope + intercept
    if window:
        lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
        x = np.clip(((x - (center - 0.5)) / (width - 1) + 0.5), 0, 1)
        x = np.where(stored * slope + intercept <= lo, 0, np.where(stored * slope + intercept > hi, 1, x))
    if mono1:
        x = x.max() + x.min() - x
    assert geom == STD and img.dtype == np.float32 and info["photometric"] in ("MONOCHROME1", "MONOCHROME2")
    corr = np.corrcoef(img.ravel(), x.ravel())[0, 1]
    assert corr > 0.999  # same values up to the window's output scale


def test_monochrome1_makes_bright_dark(tmp_path):
    px = np.full((64, 64), 100, np.uint16)
    px[20:40, 20:40] = 900  # in MONOCHROME1 high stored values display dark
    make_dicom(tmp_path / "m1.dcm", px, PhotometricInterpretation="MONOCHROME1")
    img, _, _ = load_radiograph(tmp_path / "m1.dcm", STD)
    assert img[30, 30] < img[5, 5]


# ---------------------------------------------------------------------- DICOM geometry variants
def blob_image(native: Geometry, points_cam: np.ndarray, sigma_px=1.5) -> np.ndarray:
    uv, _ = native.project(points_cam)
    vv, uu = np.mgrid[: native.height, : native.width]
    img = np.full((native.height, native.width), 10.0)
    for u, v in uv:
        img += 1000 * np.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * sigma_px**2))
    return img


def centroid(img, u, v, r=4):
    ui, vi = int(round(u)), int(round(v))
    patch = img[vi - r : vi + r + 1, ui - r : ui + r + 1] - np.median(img)
    patch = np.clip(patch, 0, None)
    vv, uu = np.mgrid[vi - r : vi + r + 1, ui - r : ui + r + 1]
    return (patch * uu).sum() / patch.sum(), (patch * vv).sum() / patch.sum()


POINTS = np.array([[0.0, 0.0, 900.0], [-25.0, 20.0, 880.0], [30.0, -18.0, 920.0], [20.0, 28.0, 900.0]])


@HYP
@given(
    sid=st.floats(800, 1300),
    su=st.floats(0.9, 1.6),
    aniso=st.sampled_from([1.0, 1.25]),
    mode=st.sampled_from(["imager", "pixel_mag", "pixel_sod", "pixel_plain", "argument"]),
)
def test_dicom_geometry_lands_points_where_projected(tmp_path, sid, su, aniso, mode):
    sv = su * aniso
    native = Geometry(sid_mm=sid, pixel_spacing_mm=(su, sv), image_size=(128, 112))
    img = blob_image(native, POINTS)
    sod = 0.8 * sid  # the object between source and detector: magnification 1.25
    mag = sid / sod
    tags = {"DistanceSourceToDetector": sid, "ImagerPixelSpacing": None}
    kwargs = {}
    if mode == "imager":
        tags["ImagerPixelSpacing"] = [sv, su]
    elif mode == "pixel_mag":  # object-plane calibrated PixelSpacing with its magnification factor
        tags.update(PixelSpacing=[sv / mag, su / mag], EstimatedRadiographicMagnificationFactor=mag)
    elif mode == "pixel_sod":  # calibrated, factor from SID / SOD
        tags.update(
            PixelSpacing=[sv / mag, su / mag], PixelSpacingCalibrationType="GEOMETRY", DistanceSourceToPatient=sod
        )
    elif mode == "pixel_plain":  # uncalibrated: detector pitch
        tags.update(PixelSpacing=[sv, su])
    else:
        tags["DistanceSourceToDetector"] = None
        kwargs = dict(sid_mm=sid, pixel_spacing_mm=(su, sv))
    make_dicom(tmp_path / "g.dcm", np.round(img).astype(np.uint16), **tags)
    out, geom, info = load_radiograph(tmp_path / "g.dcm", STD, **kwargs)
    assert out.shape == (64, 64) and geom == STD
    assert info["native_geometry"]["pixel_spacing_mm"] == pytest.approx([su, sv], rel=1e-6)
    expect, _ = STD.project(POINTS)
    for u, v in expect:
        cu, cv = centroid(out, u, v)
        assert abs(cu - u) < 0.35 and abs(cv - v) < 0.35


def test_resample_identity_and_coverage():
    img = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    out, cov = resample_to(img, STD, STD), field_of_view(STD, STD).mean()
    np.testing.assert_allclose(out, img, atol=1e-5)
    assert cov == 1.0
    small = Geometry(sid_mm=1000.0, pixel_spacing_mm=(2.0, 2.0), image_size=(32, 64))  # half the width
    cov = field_of_view(small, STD).mean()
    assert cov == pytest.approx(0.5, abs=0.02)


def test_a_geometry_a_hair_off_the_standard_keeps_the_edge_pixels(tmp_path):
    """A DICOM of the standard size and pitch whose SID text is 1e-10 mm off (float text) is the standard image, edge rows
    and columns included: its outer pixel centres then lie a hair outside 0..W-1, where sampling once gave air."""
    img = ramp(hi=4000)
    std = (STD.sid_mm, STD.pixel_spacing_mm[0], STD.pixel_spacing_mm[1])
    make_dicom(
        tmp_path / "g.dcm", img, DistanceSourceToDetector=f"{std[0] + 1e-10!r}", ImagerPixelSpacing=[std[2], std[1]]
    )
    out, _, info = load_radiograph(tmp_path / "g.dcm", STD)
    assert info["native_geometry"]["sid_mm"] != STD.sid_mm  # resampled, not taken as is
    np.testing.assert_allclose(out, img, atol=1e-3)
    wider = Geometry(sid_mm=STD.sid_mm, pixel_spacing_mm=STD.pixel_spacing_mm, image_size=(66, 66))
    air = resample_to(img.astype(np.float32), STD, wider)  # a ring one pixel beyond the image's outer edges: air
    np.testing.assert_allclose(air[1:-1, 1:-1], img, atol=1e-3)
    ring = np.concatenate([air[0], air[-1], air[:, 0], air[:, -1]])
    assert ring.min() == ring.max() == img.min()


def test_secondary_capture_accepted(tmp_path):
    make_dicom(tmp_path / "sc.dcm", ramp(), modality="OT", sop_class=SecondaryCaptureImageStorage)
    img, _, info = load_radiograph(tmp_path / "sc.dcm", STD)
    assert info["format"] == "dicom" and img.std() > 0


# ---------------------------------------------------------------------- refusals (each named)
@pytest.mark.parametrize(
    "kwargs, pixels, needle",
    [
        (dict(DistanceSourceToDetector=None), ramp(), "DistanceSourceToDetector (0018,1110); pass --sid_mm"),
        (
            dict(ImagerPixelSpacing=None),
            ramp(),
            "ImagerPixelSpacing (0018,1164) and PixelSpacing (0028,0030); pass --pixel_spacing_mm",
        ),
        (
            dict(ImagerPixelSpacing=None, PixelSpacing=[1, 1], PixelSpacingCalibrationType="GEOMETRY"),
            ramp(),
            "EstimatedRadiographicMagnificationFactor",
        ),
        (
            dict(
                ImagerPixelSpacing=None,
                PixelSpacing=[1, 1],
                PixelSpacingCalibrationType="GEOMETRY",
                DistanceSourceToPatient=0,
            ),
            ramp(),
            "DistanceSourceToPatient (0018,1111) must be a positive distance in mm, got 0",
        ),
        (dict(modality="CT", sop_class=CTImageStorage), ramp(), "modality CT"),
        (dict(modality="MR"), ramp(), "modality MR"),
        (dict(modality="OT"), ramp(), "modality OT"),  # OT only as secondary capture
        (dict(PhotometricInterpretation="RGB"), ramp(), "photometric"),
        (dict(), np.zeros((64, 64), np.uint16), "constant image"),
        (dict(), np.full((64, 64), 7, np.uint16), "constant image"),
        (dict(), ramp(32, 64), "too small"),
    ],
)
def test_dicom_refusals(tmp_path, kwargs, pixels, needle):
    kw = dict(kwargs)
    modality = kw.pop("modality", "DX")
    sop_class = kw.pop("sop_class", DigitalXRayImageStorageForPresentation)
    make_dicom(tmp_path / "bad.dcm", pixels, modality=modality, sop_class=sop_class, **kw)
    with pytest.raises(InputFileError) as e:
        load_radiograph(tmp_path / "bad.dcm", STD)
    assert needle in str(e.value) and "bad.dcm" in str(e.value)


def test_multiframe_volume_refused(tmp_path):
    ds = make_dicom(tmp_path / "mf.dcm", ramp(), NumberOfFrames=2)
    ds.PixelData = np.concatenate([ramp(), ramp()]).tobytes()
    ds.save_as(str(tmp_path / "mf.dcm"), enforce_file_format=True)
    with pytest.raises(InputFileError, match="multi-frame"):
        load_radiograph(tmp_path / "mf.dcm", STD)


def test_huge_dicom_refused_before_decoding(tmp_path):
    ds = make_dicom(tmp_path / "huge.dcm", ramp())
    ds.Rows, ds.Columns = 9000, 9000  # header only; pixel data would be 162 MB, never decoded
    ds.save_as(str(tmp_path / "huge.dcm"), enforce_file_format=True)
    with pytest.raises(InputFileError, match="too large"):
        load_radiograph(tmp_path / "huge.dcm", STD)


@pytest.mark.parametrize("name, side", [("warned.png", 9500), ("bomb.png", 13378), ("bomb.tif", 13824)])
def test_images_past_pillows_own_limit_are_too_large_in_one_line(tmp_path, name, side):
    """Pillow warns past 89 M pixels (a Python warning of two lines on stderr) and refuses past 179 M
    (DecompressionBombError, without the size; a TIFF's escaped as ``failed (...)``): such an image is refused from its
    header with its size, as any past 8000 px a side, without a warning; Pillow's own limit is left as it was."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    path = large_blank_image(tmp_path / name, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputFileError, match=rf"image too large \({side}x{side} px; maximum 8000\)$"):
            load_radiograph(path, STD)
    assert Image.MAX_IMAGE_PIXELS == limit


def test_tiffs_pillow_would_misread_or_that_hold_no_image_are_one_line(tmp_path, caplog):
    """Grey stored as 16-bit RGB planes (PlanarConfiguration 2), which Pillow decoded as 8-bit planes (an image of
    scrambled bytes, reconstructed without a word), is refused; the same at 8 bits is the grey image. A TIFF whose
    header holds no page is refused in one line (it was tifffile's warning line, then ``IndexError: index 0 out of
    range(0)``), tifffile logging nothing."""
    import tifffile

    grey = ramp(64, 64, hi=4000) * 16
    tifffile.imwrite(tmp_path / "planes16.tif", np.stack([grey] * 3), planarconfig="separate", photometric="rgb")
    with pytest.raises(
        InputFileError,
        match=r"colour or multi-sample TIFF \(3 samples/pixel, 16-bit, stored by plane\); give a grayscale",
    ):
        load_radiograph(tmp_path / "planes16.tif", STD)
    grey8 = (grey >> 8).astype(np.uint8)
    tifffile.imwrite(tmp_path / "planes8.tif", np.stack([grey8] * 3), planarconfig="separate", photometric="rgb")
    Image.fromarray(grey8).save(tmp_path / "grey8.png")
    assert np.array_equal(
        load_radiograph(tmp_path / "planes8.tif", STD)[0], load_radiograph(tmp_path / "grey8.png", STD)[0]
    )
    (tmp_path / "empty.tif").write_bytes(b"II*\0" + bytes(4))  # little-endian TIFF header, first page offset 0
    caplog.clear()
    with pytest.raises(InputFileError, match=r"TIFF without an image \(no pages\): a truncated or unfinished file$"):
        load_radiograph(tmp_path / "empty.tif", STD)
    assert [r for r in caplog.records if r.name.startswith("tifffile")] == []


def test_nan_pixels_refused(tmp_path):
    make_dicom(tmp_path / "nan.dcm", ramp(), RescaleSlope=float("nan"), RescaleIntercept=0.0)
    with pytest.raises(InputFileError, match="NaN or Inf"):
        load_radiograph(tmp_path / "nan.dcm", STD)


@pytest.mark.parametrize(
    "syntax, why",
    [
        ("1.2.840.10008.1.2.4.201", "pydicom has no decoder for it installed (pylibjpeg - requires pylibjpeg"),  # HTJ2K
        ("1.2.840.10008.1.2.4.100", "pydicom has no decoder for it, and"),  # MPEG2: a video syntax
        ("1.2.840.10008.1.2.4.91", "pydicom's decoder failed ("),  # JPEG 2000: Pillow decodes it, the data are corrupt
        ("1.2.840.10008.1.2.4.110", None),  # JPEG XL: newer than pydicom 3.0
    ],
)
def test_undecodable_pixel_data_is_one_line_naming_the_syntax_and_why(tmp_path, syntax, why):
    """Compressed pixel data nothing here decodes: one line naming the file, the transfer syntax and why (which decoder
    pydicom lacks, and the packages it would need, or that its decoder failed on the data); a transfer syntax pydicom
    does not know is named as such (it once raised pydicom's bare 'UID is not a transfer syntax.')."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    ds = make_dicom(tmp_path / "c.dcm", ramp())
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])  # a J2K start, then nothing
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    known = UID(syntax).is_transfer_syntax
    ds.file_meta.TransferSyntaxUID = syntax if known else "1.2.840.10008.1.2.4.100"  # pydicom writes known ones only
    ds.save_as(str(tmp_path / "c.dcm"), enforce_file_format=True)
    if not known:  # the same length, so the file meta group length holds
        data = (tmp_path / "c.dcm").read_bytes()
        (tmp_path / "c.dcm").write_bytes(data.replace(b"1.2.840.10008.1.2.4.100\0", syntax.encode() + b"\0"))
    with pytest.raises(InputFileError) as e:
        load_radiograph(tmp_path / "c.dcm", STD)
    line = str(e.value)
    assert line.startswith(f"{tmp_path / 'c.dcm'}: ") and "\n" not in line
    if known:
        assert f"compressed pixel data ({UID(syntax).name}, {syntax}) cannot be decoded here: {why}" in line
    else:
        assert f"TransferSyntaxUID (0002,0010) {syntax} is no transfer syntax pydicom" in line


def test_corrupt_and_truncated_dicom(tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    with pytest.raises(InputFileError, match="junk.dcm"):
        load_radiograph(tmp_path / "junk.dcm", STD)
    (tmp_path / "text.dcm").write_text("not dicom at all")
    with pytest.raises(InputFileError, match="not a DICOM"):
        load_radiograph(tmp_path / "text.dcm", STD)
    make_dicom(tmp_path / "t.dcm", ramp())
    data = (tmp_path / "t.dcm").read_bytes()
    (tmp_path / "t.dcm").write_bytes(data[: len(data) - 3000])
    with pytest.raises(InputFileError, match="t.dcm"):
        load_radiograph(tmp_path / "t.dcm", STD)


# ---------------------------------------------------------------------- PNG / TIFF / NIfTI
def test_png_16bit_standard_size_and_resampled(tmp_path):
    px = ramp(64, 64, hi=60000)
    Image.fromarray(px).save(tmp_path / "a.png")
    img, geom, info = load_radiograph(tmp_path / "a.png", STD)
    np.testing.assert_allclose(img, px.astype(np.float32))
    assert geom == STD and info["format"] == "png"
    Image.fromarray(ramp(128, 128, hi=250).astype(np.uint8)).save(tmp_path / "b.tif")
    with pytest.raises(InputFileError, match="pass --pixel_spacing_mm"):
        load_radiograph(tmp_path / "b.tif", STD)
    img, _, info = load_radiograph(tmp_path / "b.tif", STD, pixel_spacing_mm=1.0)  # 128 px x 1 mm -> 64 px x 2 mm
    assert img.shape == (64, 64) and info["coverage"] == 1.0 and info["format"] == "tiff"


@pytest.mark.parametrize("jpeg", [False, True])
def test_dicom_grey_stored_as_colour_accepted_colour_refused(tmp_path, jpeg):
    """A DICOM secondary capture in RGB whose channels agree (a grey radiograph a viewer or teleradiology export saved
    as colour; JPEG baseline as YBR_FULL_422, within its chroma rounding) is read as the grey image, as a grey RGB PNG
    is (it was refused as 'colour or unsupported photometric interpretation'); one with real colour is refused."""
    import io

    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    grey = (ramp(hi=250) + 3).astype(np.uint8)

    def write(name, rgb):
        ds = make_dicom(tmp_path / name, grey, modality="OT", sop_class=SecondaryCaptureImageStorage)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = np.ascontiguousarray(rgb).tobytes()
        if jpeg:
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
            ds.PixelData, ds.PhotometricInterpretation = encapsulate([buffer.getvalue()]), "YBR_FULL_422"
            ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
            ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.save_as(str(tmp_path / name), enforce_file_format=True)
        return tmp_path / name

    img, _, info = load_radiograph(write("grey.dcm", np.stack([grey] * 3, -1)), STD)
    np.testing.assert_allclose(img, grey, atol=8 if jpeg else 0)  # JPEG: lossy, a few levels at the ramp's steps
    assert info["photometric"] == ("YBR_FULL_422" if jpeg else "RGB")
    with pytest.raises(InputFileError, match=r"colour \((RGB|YBR_FULL_422)\) image; give a grayscale radiograph"):
        load_radiograph(write("colour.dcm", np.stack([grey, grey, np.roll(grey, 7, axis=1)], -1)), STD)


def test_png_gray_rgb_accepted_colour_refused(tmp_path):
    g = ramp(64, 64, hi=250).astype(np.uint8)
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "gray_rgb.png")
    img, _, _ = load_radiograph(tmp_path / "gray_rgb.png", STD)
    np.testing.assert_array_equal(img, g.astype(np.float32))
    rgb = np.stack([g, g, np.roll(g, 1)], -1)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(InputFileError, match="colour"):
        load_radiograph(tmp_path / "colour.png", STD)
    Image.fromarray(g[:40, :40]).save(tmp_path / "tiny.png")
    with pytest.raises(InputFileError, match="too small"):
        load_radiograph(tmp_path / "tiny.png", STD)
    (tmp_path / "cut.png").write_bytes((tmp_path / "colour.png").read_bytes()[:100])
    with pytest.raises(InputFileError, match="cut.png"):
        load_radiograph(tmp_path / "cut.png", STD)


def test_nifti_uses_its_own_geometry(tmp_path):
    g = Geometry(sid_mm=1100.0, pixel_spacing_mm=(1.5, 1.5), image_size=(70, 66))
    case = tmp_path / "case_0001_p0"
    img = np.random.default_rng(2).random((66, 70)).astype(np.float32)
    write_nifti(case / "image.nii.gz", img)
    with pytest.raises(InputFileError, match="missing geometry.json"):
        load_radiograph(case / "image.nii.gz", STD)
    g.save(case / "geometry.json")
    out, geom, info = load_radiograph(case / "image.nii.gz", STD)
    np.testing.assert_array_equal(out, img)
    assert geom == g and info["format"] == "nifti"


# ---------------------------------------------------------------------- iteration and names
def test_iter_radiographs_and_output_names(tmp_path):
    (tmp_path / "in").mkdir()
    ds = make_dicom(tmp_path / "in" / "Doe_Jane_19650101.dcm", ramp())
    ds.save_as(str(tmp_path / "in" / "IM000001"), enforce_file_format=True)  # same SOP UID, no suffix
    case = tmp_path / "in" / "case_0002_p1"
    write_nifti(case / "image.nii.gz", np.ones((4, 4), np.float32))
    write_nifti(case / "depth.nii.gz", np.ones((4, 4, 6), np.float32))
    Image.fromarray(ramp(64, 64, 250).astype(np.uint8)).save(case / "preview.png")
    STD.save(case / "geometry.json")
    Image.fromarray(ramp(64, 64, 250).astype(np.uint8)).save(tmp_path / "in" / "hip_ap.png")
    (tmp_path / "in" / "notes.txt").write_text("x")
    found = list(iter_radiographs(tmp_path / "in"))
    names = sorted(p.name for p in found)
    assert names == ["Doe_Jane_19650101.dcm", "hip_ap.png", "image.nii.gz"]
    assert output_name(case / "image.nii.gz") == "case_0002_p1"
    assert output_name(tmp_path / "in" / "hip_ap.png") == "hip_ap"
    dname = output_name(tmp_path / "in" / "Doe_Jane_19650101.dcm", ds)
    assert dname.startswith("rg_") and "Doe" not in dname and "1965" not in dname
    assert dname == output_name(tmp_path / "in" / "IM_20240101", ds)  # hash of the SOP Instance UID, not of the name
    assert output_name(tmp_path / "jane_left_hip.dcm", ds).startswith("rg_")  # patient name token in the file name
    assert output_name(tmp_path / "MRN123456.dcm").startswith("rg_")  # long number


def test_dicoms_with_a_blank_sop_instance_uid_are_each_an_input(tmp_path):
    """An anonymiser that blanks SOP Instance UIDs gives every file the same empty "UID": each file is still its own
    input, with its own output name and marker key (its path), while two files of one real UID stay one input."""
    (tmp_path / "in").mkdir()
    blank = [make_dicom(tmp_path / "in" / f"Doe{i}", ramp(hi=900 + i), SOPInstanceUID="") for i in range(3)]
    twice = make_dicom(tmp_path / "in" / "IMA", ramp())
    twice.save_as(str(tmp_path / "in" / "IMB"), enforce_file_format=True)
    found = sorted(p.name for p in iter_radiographs(tmp_path / "in"))
    assert found == ["Doe0", "Doe1", "Doe2", "IMA"]
    paths = [tmp_path / "in" / f"Doe{i}" for i in range(3)]
    names = {output_name(p, ds, tmp_path / "in") for p, ds in zip(paths, blank, strict=True)}
    keys = {input_key(p, ds) for p, ds in zip(paths, blank, strict=True)}
    assert len(names) == 3 and all(n.startswith("rg_") for n in names)  # PHI-like: the patient's name is in the file's
    assert len(keys) == 3
    assert input_key(tmp_path / "in" / "IMA", twice) == input_key(tmp_path / "in" / "IMB", twice)


def test_raw_dicom_without_preamble_is_found_and_read(tmp_path):
    """A raw DICOM data set (no 128-byte preamble, no DICM, no file meta; IHE PDI style name without suffix, or upper
    case .DCM) is found in a folder and read like the same data set with a preamble (it used to be skipped unseen:
    without the preamble it was not recognised); a text file named .dcm is still refused, not read by force."""
    (tmp_path / "in").mkdir()
    ds = make_dicom(tmp_path / "hip.dcm", ramp(), ViewPosition="AP")
    save_raw(ds, tmp_path / "in" / "IM000001")
    save_raw(make_dicom(tmp_path / "other.dcm", ramp(hi=700)), tmp_path / "in" / "HIP2.DCM")
    (tmp_path / "in" / "README").write_text("exported by PACS\n")  # neither DICOM nor a radiograph: not an input
    # a binary file that happens to start with a group 0008 tag, then neither a VR nor a length that fits: no input
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)
    noise[:6] = [0x08, 0x00, 0x05, 0x00, 0xFF, 0xFF]
    (tmp_path / "in" / "BLOB").write_bytes(noise.tobytes())
    assert sorted(p.name for p in iter_radiographs(tmp_path / "in")) == ["HIP2.DCM", "IM000001"]
    raw = read_dicom(tmp_path / "in" / "IM000001")
    assert raw.SOPInstanceUID == ds.SOPInstanceUID and raw.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    expected, _, _ = load_radiograph(tmp_path / "hip.dcm", STD)
    image, _, info = load_radiograph(tmp_path / "in" / "IM000001", STD)
    np.testing.assert_array_equal(image, expected)
    assert info["format"] == "dicom" and info["modality"] == "DX"
    (tmp_path / "text.dcm").write_text("not DICOM\n")
    with pytest.raises(InputFileError, match="not a DICOM file"):
        read_dicom(tmp_path / "text.dcm")


@pytest.mark.parametrize(
    "sop_class, modality, kind",
    [
        ("1.2.840.10008.5.1.4.1.1.11.1", "PR", "Grayscale Softcopy Presentation State Storage"),
        ("1.2.840.10008.5.1.4.1.1.88.59", "KO", "Key Object Selection Document Storage"),
        ("1.2.840.10008.5.1.4.1.1.88.11", "SR", "Basic Text SR Storage"),
        ("1.2.840.10008.5.1.4.1.1.104.1", "DOC", "Encapsulated PDF Storage"),
        ("1.2.840.10008.5.1.4.1.1.66.4", "SEG", "Segmentation Storage"),
    ],
)
def test_objects_without_an_image_are_named_by_kind(tmp_path, sop_class, modality, kind):
    """A presentation state, key object selection, structured report, encapsulated PDF or segmentation (its pixel data
    are labels: it failed the run as 'modality SEG is not a projection radiograph') is refused as holding no
    image, naming its kind (NoImageError, which the batch workflow counts as skipped); RadiographInputs.read records
    its modality as ``no_image``. Image objects stay plain refusals: a CT slice (modality), a DX radiograph whose
    pixel data are missing (truncated)."""
    if modality == "SEG":  # with pixel data, as a segmentation has
        make_dicom(tmp_path / "obj", ramp(), modality=modality, sop_class=sop_class)
    else:
        make_non_image(tmp_path / "obj", sop_class, modality)
    with pytest.raises(NoImageError) as e:
        read_dicom(tmp_path / "obj")
    assert str(e.value) == f"{tmp_path / 'obj'}: no image: {kind} (modality {modality}), not a radiograph; skipped"
    assert e.value.kind == modality
    item = RadiographInputs(tmp_path, STD).read(tmp_path / "obj")
    assert item.no_image == modality and item.error == str(e.value) and item.image is None
    make_dicom(tmp_path / "ct.dcm", ramp(), modality="CT", sop_class=CTImageStorage)
    ds = make_dicom(tmp_path / "dx.dcm", ramp())
    del ds.PixelData
    ds.save_as(str(tmp_path / "dx.dcm"), enforce_file_format=True)
    for name, problem in (("ct.dcm", "modality CT is not a projection radiograph"), ("dx.dcm", "no pixel data")):
        with pytest.raises(InputFileError, match=problem) as e:
            read_dicom(tmp_path / name)
        assert not isinstance(e.value, NoImageError)
        assert RadiographInputs(tmp_path, STD).read(tmp_path / name).no_image == ""


def test_fill_ins_are_checked_once_for_the_run_naming_the_option(tmp_path, capsys):
    """The --sid_mm / --pixel_spacing_mm fill-ins become (SID, (su, sv)) mm, one pitch number for both directions; a bad
    one is refused when the inputs are set up (nothing listed or read: the input folder need not exist) and by to-dicom
    before its input is read, in one line naming the option, nothing written."""
    from scripts.io.radiograph_io import fill_ins, main

    assert fill_ins() == (None, None)
    assert fill_ins(1100, 0.15) == (1100.0, (0.15, 0.15))
    assert fill_ins(None, [0.15, 0.16]) == (None, (0.15, 0.16))
    inputs = RadiographInputs(tmp_path / "absent", STD, 1100, (0.15, 0.16))
    assert (inputs.sid_mm, inputs.pixel_spacing_mm) == (1100.0, (0.15, 0.16))
    for sid, pitch, line in [
        (0, None, "--sid_mm: must be a positive number (mm), got 0"),
        (5000, None, "--sid_mm: sid_mm 5000 mm outside 700..2000 mm (what radiography rooms use)"),
        (None, -0.15, "--pixel_spacing_mm: must be a positive number (mm), got -0.15"),
        (None, float("inf"), "--pixel_spacing_mm: must be a positive number (mm), got inf"),
        (None, 0.01, "--pixel_spacing_mm: pixel_spacing_mm 0.01 mm outside 0.025..10 mm (what radiography rooms use)"),
        (None, [], "--pixel_spacing_mm: must be one or two numbers (mm: 0.15, or su,sv as 0.15,0.16), got []"),
        (None, [0.15, "x"], "--pixel_spacing_mm: must be a positive number (mm), got 'x'"),
    ]:
        with pytest.raises(InputFileError) as e:
            RadiographInputs(tmp_path / "absent", STD, sid, pitch)
        assert str(e.value) == line
    Image.fromarray(ramp(hi=250).astype(np.uint8)).save(tmp_path / "a.png")
    assert main(["to-dicom", str(tmp_path / "a.png"), str(tmp_path / "a.dcm"), "--pixel_spacing_mm", "nan"]) == 1
    assert capsys.readouterr().err.strip() == "--pixel_spacing_mm: must be a positive number (mm), got nan"
    assert not (tmp_path / "a.dcm").exists()


# ---------------------------------------------------------------------- to-dicom (python -m scripts.radiograph_io to-dicom)
def test_to_dicom_round_trip_png(tmp_path, capsys):
    """A 16-bit PNG with a given pitch and SID -> DICOM DX -> the reader: the same stored pixels, shown through a window
    spanning them (the PNG's lowest value black, its highest white: the same network input), the same geometry from the
    tags; every type 1 and 2 attribute of the DX IOD's mandatory modules present (PS3.3 A.26.3; to-dicom once lacked
    ImageLaterality, PresentationLUTShape, the window, PixelIntensityRelationship and others), a JPEG's lossy
    compression recorded."""
    from scripts.io.radiograph_io import main

    img = (np.arange(96 * 80).reshape(96, 80) * 7 % 60000 + 10).astype(np.uint16)
    Image.fromarray(img).save(tmp_path / "hip.png")
    args = [
        "to-dicom",
        str(tmp_path / "hip.png"),
        str(tmp_path / "hip.dcm"),
        "--sid_mm",
        "1050",
        "--pixel_spacing_mm",
        "1.5",
        "1.75",
    ]
    assert main(args) == 0 and "wrote" in capsys.readouterr().out
    from_png = load_radiograph(tmp_path / "hip.png", STD, sid_mm=1050.0, pixel_spacing_mm=(1.5, 1.75))
    from_dcm = load_radiograph(tmp_path / "hip.dcm", STD)
    low, high = float(img.min()), float(img.max())
    np.testing.assert_allclose(from_dcm[0], (from_png[0] - low) / (high - low) * 65535.0, rtol=1e-5, atol=0.05)
    assert from_dcm[2]["native_geometry"] == from_png[2]["native_geometry"]
    assert from_dcm[2]["geometry_source"] == {
        "sid_mm": "DistanceSourceToDetector (0018,1110)",
        "pixel_spacing_mm": "ImagerPixelSpacing (0018,1164)",
    }
    import pydicom

    ds = pydicom.dcmread(str(tmp_path / "hip.dcm"))
    assert (ds.Modality, ds.SOPClassUID, ds.BodyPartExamined, ds.ViewPosition) == (
        "DX",
        DigitalXRayImageStorageForPresentation,
        "PELVIS",
        "AP",
    )
    assert list(ds.PatientOrientation) == ["L", "F"]  # radiological AP display: accepted by the reader
    assert (
        [float(x) for x in ds.ImagerPixelSpacing] == [1.75, 1.5] and ds.Rows == 96 and ds.Columns == 80
    )  # [row, column]
    np.testing.assert_array_equal(ds.pixel_array, img)
    type1 = (
        "PatientOrientation ImageType SamplesPerPixel PhotometricInterpretation BitsAllocated BitsStored HighBit "
        "PixelRepresentation BurnedInAnnotation PixelIntensityRelationship PixelIntensityRelationshipSign RescaleIntercept "
        "RescaleSlope RescaleType LossyImageCompression PresentationLUTShape WindowCenter WindowWidth ImageLaterality "
        "ImagerPixelSpacing Modality PresentationIntentType SeriesInstanceUID StudyInstanceUID SOPClassUID SOPInstanceUID "
        "Rows Columns PixelData"
    ).split()
    type2 = (
        "PatientName PatientID PatientBirthDate PatientSex StudyDate StudyTime ReferringPhysicianName StudyID "
        "AccessionNumber SeriesNumber Manufacturer InstanceNumber ContentDate ContentTime AnatomicRegionSequence "
        "DetectorType AcquisitionContextSequence"
    ).split()
    assert [k for k in type1 if k not in ds or ds[k].value in (None, "", [], b"")] == []
    assert [k for k in type2 if k not in ds] == []
    assert (ds.PresentationLUTShape, ds.PixelIntensityRelationshipSign, ds.LossyImageCompression) == (
        "IDENTITY",
        -1,
        "00",
    )
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == ((low + high + 1) / 2, high - low + 1)
    assert all(
        pydicom.uid.UID(ds[k].value).is_valid for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    )
    Image.fromarray((img >> 8).astype(np.uint8)).save(tmp_path / "hip.jpg", quality=90)
    assert main([*args[:1], str(tmp_path / "hip.jpg"), str(tmp_path / "jpg.dcm"), *args[3:]]) == 0
    lossy = pydicom.dcmread(str(tmp_path / "jpg.dcm"))
    ratio = 96 * 80 / (tmp_path / "hip.jpg").stat().st_size  # 8-bit samples over the JPEG's bytes
    assert (lossy.LossyImageCompression, lossy.LossyImageCompressionMethod) == ("01", "ISO_10918_1")
    assert float(lossy.LossyImageCompressionRatio) == pytest.approx(ratio, rel=1e-3)
    # the user's file is never replaced without --overwrite; a bad geometry is refused in one line
    before = (tmp_path / "hip.dcm").read_bytes()
    assert (
        main(args) == 1
        and capsys.readouterr().err.strip() == f"{tmp_path / 'hip.dcm'}: exists; pass --overwrite to replace it"
    )
    assert (tmp_path / "hip.dcm").read_bytes() == before
    assert (
        main(
            [
                "to-dicom",
                str(tmp_path / "hip.png"),
                str(tmp_path / "far.dcm"),
                "--sid_mm",
                "1e7",
                "--pixel_spacing_mm",
                "1.5",
            ]
        )
        == 1
    )
    assert "sid_mm 1e+07 mm outside 700..2000 mm" in capsys.readouterr().err and not (tmp_path / "far.dcm").exists()


def test_to_dicom_round_trip_simulator_nifti(tmp_path):
    """A float simulator image keeps its geometry.json values in the tags; the pixels come back as their range mapped
    linearly onto 0..65535 (the DX IOD stores 16-bit integers), which the network's percentile normalisation does not see.
    """
    from scripts.io.radiograph_io import to_dicom

    g = Geometry(sid_mm=1100.0, pixel_spacing_mm=(1.5, 1.5), image_size=(70, 66))
    img = np.random.default_rng(3).random((66, 70)).astype(np.float32) * 3.0 - 1.0
    write_nifti(tmp_path / "s" / "image.nii.gz", img)
    g.save(tmp_path / "s" / "geometry.json")
    to_dicom(tmp_path / "s" / "image.nii.gz", tmp_path / "s.dcm")
    back, geom, info = load_radiograph(tmp_path / "s.dcm", g)
    assert geom == g and Geometry.from_dict(info["native_geometry"]) == g.with_pose(np.eye(4))
    lo, hi = float(img.min()), float(img.max())
    np.testing.assert_array_equal(
        back, np.round((img.astype(np.float64) - lo) * 65535.0 / (hi - lo))
    )  # range -> 0..65535


def test_dicom_pixel_padding_is_outside_the_radiograph(tmp_path):
    """Stored values equal to PixelPaddingValue (or within it and PixelPaddingRangeLimit) are not image: with the
    geometry of the standard field (no resampling) the field is 0 exactly there, coverage the rest's share, the padded
    pixels take the darkest image value and the others are read as without the tag; MONOCHROME1 with a range, and the
    same file JPEG-Lossless-compressed (decoded by GDCM, rescaled), give the same field; all padding is refused."""
    px = ramp()  # stored values 1..1000
    make_dicom(tmp_path / "plain.dcm", px)
    plain_image, _, plain_info, plain_field = load_radiograph_with_field(tmp_path / "plain.dcm", STD)
    padded = px.copy()
    padded[:, :16] = 0
    make_dicom(tmp_path / "pad.dcm", padded, PixelPaddingValue=0)
    img, _, info, field = load_radiograph_with_field(tmp_path / "pad.dcm", STD)
    expected = np.ones((64, 64), np.float32)
    expected[:, :16] = 0.0
    np.testing.assert_array_equal(field, expected)
    assert info["coverage"] == pytest.approx(0.75) and info["padding_pixels"] == 64 * 16
    np.testing.assert_allclose(img[:, 16:], plain_image[:, 16:], atol=1e-5)
    assert np.all(img[:, :16] == img[:, 16:].min())
    assert plain_field.min() == 1.0 and plain_info["coverage"] == 1.0 and "padding_pixels" not in plain_info
    mono1 = px.copy()
    mono1[40:, :] = np.arange(64 * 24).reshape(24, 64) % 96 + 4000  # a padding range 4000..4095, bone dark below it
    tags = dict(
        PhotometricInterpretation="MONOCHROME1",
        BitsStored=12,
        PixelPaddingValue=4000,
        PixelPaddingRangeLimit=4095,
        RescaleSlope=2.0,
        RescaleIntercept=-5.0,
    )
    ds = make_dicom(tmp_path / "m1.dcm", mono1, **tags)
    expected = np.ones((64, 64), np.float32)
    expected[40:] = 0.0
    np.testing.assert_array_equal(load_radiograph_with_field(tmp_path / "m1.dcm", STD)[3], expected)
    jpeg_lossless_copy(ds, mono1, tmp_path / "m1_lossless.dcm", tmp_path)
    np.testing.assert_array_equal(load_radiograph_with_field(tmp_path / "m1_lossless.dcm", STD)[3], expected)
    make_dicom(tmp_path / "all.dcm", np.zeros((64, 64), np.uint16), PixelPaddingValue=0)
    with pytest.raises(InputFileError, match="every pixel is padding"):
        load_radiograph(tmp_path / "all.dcm", STD)


# ---------------------------------------------------------------------- orientation and laterality
# the stored image whose EXIF Orientation o makes a viewer show the displayed one: the inverse of the viewer's turn
STORED_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _save_oriented(path, displayed: Image.Image, orientation: int, **kwargs) -> None:
    op = STORED_FOR_ORIENTATION[orientation]
    stored = displayed if op is None else displayed.transpose(op)
    exif = stored.getexif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, **kwargs)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_read_as_displayed(tmp_path, orientation):
    """A PNG/JPEG whose EXIF Orientation mirrors or turns the stored pixels gives the pixels a viewer shows (what a
    plain file of the displayed image gives; 90-degree turns swap the stored width and height, and the given
    anisotropic pitch is the displayed image's), and says so in its info."""
    from PIL import ImageOps
    from scripts.io.radiograph_io import LATERALITY_ASSUMED

    displayed = Image.fromarray(
        ramp(64, 96, hi=250).astype(np.uint8) * np.tri(64, 96, 20, dtype=np.uint8)
    )  # no symmetry
    displayed.save(tmp_path / "plain.png")
    _save_oriented(tmp_path / "tagged.png", displayed, orientation)
    with Image.open(
        tmp_path / "tagged.png"
    ) as im:  # the test's own stored image is right: Pillow's viewer turn shows `displayed`
        np.testing.assert_array_equal(np.asarray(ImageOps.exif_transpose(im)), np.asarray(displayed))
    pitch = (5.0, 4.0)  # (su, sv) of the displayed image
    plain = load_radiograph_with_field(tmp_path / "plain.png", STD, pixel_spacing_mm=pitch)
    tagged = load_radiograph_with_field(tmp_path / "tagged.png", STD, pixel_spacing_mm=pitch)
    np.testing.assert_array_equal(tagged[0], plain[0])
    np.testing.assert_array_equal(tagged[3], plain[3])
    assert tagged[2]["native_geometry"] == plain[2]["native_geometry"] and plain[2]["native_geometry"][
        "image_size"
    ] == [96, 64]
    assert tagged[2]["exif_orientation"] == orientation and "exif_orientation" not in plain[2]
    assert plain[2]["laterality"] == LATERALITY_ASSUMED
    assert tagged[2]["laterality"] == LATERALITY_ASSUMED + (
        "" if orientation == 1 else f" (image as its EXIF Orientation {orientation} displays it)"
    )
    # a JPEG (lossy) gives exactly what Pillow's viewer turn of the same file shows
    _save_oriented(tmp_path / "tagged.jpg", displayed, orientation, quality=95)
    with Image.open(tmp_path / "tagged.jpg") as im:
        shown = np.asarray(ImageOps.exif_transpose(im))
    Image.fromarray(shown).save(tmp_path / "shown.png")
    np.testing.assert_array_equal(
        load_radiograph(tmp_path / "tagged.jpg", STD, pixel_spacing_mm=pitch)[0],
        load_radiograph(tmp_path / "shown.png", STD, pixel_spacing_mm=pitch)[0],
    )


def test_tiff_orientation_tag_of_a_float_tiff(tmp_path):
    """A float64 TIFF (read by tifffile, not Pillow) with Orientation 6 (turned 90 degrees clockwise for display)."""
    import tifffile

    displayed = ramp(64, 96).astype(np.float64) * np.tri(64, 96, 20)
    tifffile.imwrite(tmp_path / "plain.tif", displayed)
    tifffile.imwrite(
        tmp_path / "tagged.tif", np.rot90(displayed, 1), extratags=[(0x0112, "H", 1, 6, True)]
    )  # stored turned back
    plain, _, _ = load_radiograph(tmp_path / "plain.tif", STD, pixel_spacing_mm=(5.0, 4.0))
    tagged, _, info = load_radiograph(tmp_path / "tagged.tif", STD, pixel_spacing_mm=(5.0, 4.0))
    np.testing.assert_array_equal(tagged, plain)
    assert info["exif_orientation"] == 6


def test_laterality_says_where_it_comes_from(tmp_path):
    """A DICOM PatientOrientation states the left-right sense, and a simulator radiograph's geometry.json (rendered in
    the standard AP pose: report.png cautioned that it was assumed); every other input is assumed radiological."""
    from scripts.io.radiograph_io import LATERALITY_ASSUMED, LATERALITY_SIMULATED

    make_dicom(tmp_path / "stated.dcm", ramp(), PatientOrientation=["L", "F"])
    make_dicom(tmp_path / "silent.dcm", ramp())
    make_dicom(tmp_path / "half.dcm", ramp(), PatientOrientation=["L", ""])  # one direction only: states nothing
    Image.fromarray(ramp(hi=250).astype(np.uint8)).save(tmp_path / "a.png")
    assert load_radiograph(tmp_path / "stated.dcm", STD)[2]["laterality"] == "DICOM PatientOrientation (0020,0020) L\\F"
    for name in ("silent.dcm", "half.dcm", "a.png"):
        assert load_radiograph(tmp_path / name, STD)[2]["laterality"] == LATERALITY_ASSUMED
    write_nifti(tmp_path / "sim" / "image.nii.gz", ramp().astype(np.float32))
    Geometry(sid_mm=1100.0, pixel_spacing_mm=(1.5, 1.5), image_size=ramp().shape[::-1]).save(
        tmp_path / "sim" / "geometry.json"
    )
    assert load_radiograph(tmp_path / "sim" / "image.nii.gz", STD)[2]["laterality"] == LATERALITY_SIMULATED


@pytest.mark.parametrize(
    "body_part, refused",
    [
        ("CHEST PA", True),
        ("KNEE LEFT", True),
        ("LEFT HAND", True),
        ("C-SPINE", True),
        ("CHEST", True),
        ("PELVIS", False),
        ("HIP LEFT", False),
        ("HIP KNEE", False),
        ("ABDOMEN", False),
        ("L-SPINE", False),
        ("BECKEN", False),
    ],
)
def test_body_part_examined_is_judged_by_its_words(tmp_path, body_part, refused):
    """A value naming another body part among other words is refused; one naming the pelvis or hip is not (long-leg films)."""
    make_dicom(tmp_path / "bp.dcm", ramp(), BodyPartExamined=body_part)
    if refused:
        with pytest.raises(
            InputFileError, match=f"BodyPartExamined \\(0018,0015\\) is {body_part}: not a pelvis/hip radiograph"
        ):
            load_radiograph(tmp_path / "bp.dcm", STD)
    else:
        assert load_radiograph(tmp_path / "bp.dcm", STD)[0].std() > 0


def test_pixel_data_size_must_match_rows_and_columns(tmp_path):
    """331 x 331 pixels under Rows 300 (pydicom would crop them with a warning) are refused from the header, before any
    pixel is decoded; an odd byte count padded to even (8-bit 65 x 65: 4225 bytes stored as 4226) is accepted."""
    from scripts.io.radiograph_io import read_dicom

    make_dicom(tmp_path / "rows.dcm", ramp(331, 331), Rows=300)
    needle = (
        r"PixelData \(7FE0,0010\) holds 219122 bytes, but Rows x Columns x frames x samples \(300 x 331 x 1 x "
        r"1\) at BitsAllocated 16 needs 198600"
    )
    for read in (
        lambda: read_dicom(tmp_path / "rows.dcm", stop_before_pixels=True),
        lambda: load_radiograph(tmp_path / "rows.dcm", STD),
    ):
        with pytest.raises(InputFileError, match=needle):
            read()
    px = ramp(65, 65, hi=250).astype(np.uint8)
    ds = make_dicom(tmp_path / "odd.dcm", px)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelData = 8, 8, 7, px.tobytes()
    ds.save_as(str(tmp_path / "odd.dcm"), enforce_file_format=True)
    img, geometry, info = load_radiograph(tmp_path / "odd.dcm", STD)
    assert info["native_geometry"]["image_size"] == [65, 65] and img.std() > 0


def test_to_dicom_never_writes_over_its_input(tmp_path, capsys):
    """``to-dicom a.png a.png --overwrite`` (or a link to a.png as the output) is refused in one line; a.png is unchanged."""
    import os

    from scripts.io.radiograph_io import main

    Image.fromarray(ramp(hi=250).astype(np.uint8)).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    os.link(tmp_path / "a.png", tmp_path / "hard.png")
    (tmp_path / "soft.dcm").symlink_to(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    for output in ("a.png", "hard.png", "soft.dcm", "sub/../a.png"):
        assert main(["to-dicom", str(tmp_path / "a.png"), str(tmp_path / output), "--overwrite"]) == 1
        assert (
            capsys.readouterr().err.strip()
            == f"{tmp_path / output}: the output is the input file {tmp_path / 'a.png'} itself; choose another output file"
        )
    assert (tmp_path / "a.png").read_bytes() == before and (tmp_path / "hard.png").read_bytes() == before
    for overwrite in ([], ["--overwrite"]):  # a folder as the output: never "pass --overwrite", with it never replaced
        assert main(["to-dicom", str(tmp_path / "a.png"), str(tmp_path / "sub"), *overwrite]) == 1
        assert capsys.readouterr().err.strip() == (
            f"{tmp_path / 'sub'}: is a folder; give the output file's path (a new file's name inside it)"
        )
        assert (tmp_path / "sub").is_dir() and list((tmp_path / "sub").iterdir()) == []


# ---------------------------------------------------------------------- stated resolution of PNG / TIFF
def _film(h=1300, w=1200) -> np.ndarray:
    """A scanned-film-sized 8-bit image (H, W), no symmetry."""
    return (ramp(h, w, hi=250) * np.tri(h, w, 40)).astype(np.uint8)


def _save_tiff_float_cm(path, pixels, per_cm):
    import tifffile

    tifffile.imwrite(path, pixels.astype(np.float64), resolution=per_cm, resolutionunit="CENTIMETER")


@pytest.mark.parametrize(
    "name, save, pitch, stated",
    [
        (  # pHYs holds pixels per metre: 254 dpi = 10000 /m exactly
            "hip.png",
            lambda p, a: Image.fromarray(a).save(p, dpi=(254, 127)),
            (25.4 / 254, 25.4 / 127),
            "PNG pHYs (10000 x 5000 pixels/m = 254 x 127 dpi)",
        ),
        (
            "hip.tif",
            lambda p, a: Image.fromarray(a).save(p, dpi=(600, 600)),
            (25.4 / 600,) * 2,
            "TIFF resolution tags (600 dpi)",
        ),
        (  # float64: read by tifffile, not Pillow; ResolutionUnit centimetre
            "hip64.tif",
            lambda p, a: _save_tiff_float_cm(p, a, (100, 50)),
            (10 / 100, 10 / 50),
            "TIFF resolution tags (100 x 50 pixels/cm = 254 x 127 dpi)",
        ),
    ],
)
def test_stated_resolution_is_the_detector_pitch(tmp_path, name, save, pitch, stated):
    """A PNG/TIFF that states its resolution in a physical unit is read at that pitch (su = mm per unit / pixels per
    unit along the columns, sv along the rows): the same image and field as the plain file given that pitch; the
    geometry source says what the file held. The argument wins over the file."""
    film = _film()
    save(tmp_path / name, film)
    Image.fromarray(film).save(tmp_path / "plain.png")
    img, _, info, fov = load_radiograph_with_field(tmp_path / name, STD)
    plain, _, _, plain_fov = load_radiograph_with_field(tmp_path / "plain.png", STD, pixel_spacing_mm=pitch)
    np.testing.assert_allclose(img, plain, rtol=1e-6)  # 25.4 / 254 and 1000 / 10000 mm differ in the last bit
    np.testing.assert_array_equal(fov, plain_fov)
    assert info["native_geometry"]["pixel_spacing_mm"] == pytest.approx(list(pitch), rel=1e-12)
    assert info["geometry_source"] == {"sid_mm": "standard geometry", "pixel_spacing_mm": stated}
    _, _, info = load_radiograph(tmp_path / name, STD, pixel_spacing_mm=0.3)
    assert info["native_geometry"]["pixel_spacing_mm"] == [0.3, 0.3]
    assert info["geometry_source"]["pixel_spacing_mm"] == f"argument pixel_spacing_mm (the file's {stated} not used)"


def test_an_image_of_the_standard_size_keeps_the_standard_pitch(tmp_path):
    """At the standard size (64 x 64 px) the standard pitch is used, not a stated 25.4 dpi (1 mm, a 64 mm field the
    geometry would accept): such an image was made for the bundle, and a resized copy often keeps its original's
    resolution. The source names what was not used."""
    Image.fromarray(_film(64, 64)).save(tmp_path / "std.png", dpi=(25.4, 25.4))
    _, _, info = load_radiograph(tmp_path / "std.png", STD)
    assert info["native_geometry"]["pixel_spacing_mm"] == [2.0, 2.0]
    assert info["geometry_source"]["pixel_spacing_mm"] == (
        "standard geometry (size matches; the file's PNG pHYs (1000 pixels/m = 25.4 dpi) not used)"
    )


def test_stated_resolution_of_a_turned_image_is_the_displayed_images(tmp_path):
    """The resolution is the stored image's: a PNG stored turned (EXIF Orientation 6) at 254 x 127 dpi along its stored
    columns x rows is displayed with 0.2 mm along the displayed columns and 0.1 mm along the rows."""
    displayed = Image.fromarray(_film())
    displayed.save(tmp_path / "plain.png")
    _save_oriented(tmp_path / "turned.png", displayed, 6, dpi=(254, 127))
    turned, _, info = load_radiograph(tmp_path / "turned.png", STD)
    plain = load_radiograph(tmp_path / "plain.png", STD, pixel_spacing_mm=(0.2, 0.1))[0]
    np.testing.assert_allclose(turned, plain, rtol=1e-6)
    assert info["native_geometry"]["pixel_spacing_mm"] == pytest.approx([0.2, 0.1], rel=1e-12)


@pytest.mark.parametrize(
    "name, save, held",
    [
        (
            "screen72.png",
            lambda p, a: Image.fromarray(a).save(p, dpi=(72, 72)),
            "the resolution in the file's PNG pHYs (2835 pixels/m = 72.01 dpi) is a screen default, not a detector pitch",
        ),
        (
            "screen96.tif",
            lambda p, a: Image.fromarray(a).save(p, dpi=(96, 96)),
            "the resolution in the file's TIFF resolution tags (96 dpi) is a screen default, not a detector pitch",
        ),
        (
            "screen72cm.tif",
            lambda p, a: _save_tiff_float_cm(p, a, (28.35, 28.35)),
            "the resolution in the file's TIFF resolution tags (28.35 pixels/cm = 72.01 dpi) is a screen default, not a "
            "detector pitch",
        ),
        (  # 25.4 / 2000 = 0.0127 mm, under the 0.025 mm the geometry accepts
            "fine.tif",
            lambda p, a: Image.fromarray(a).save(p, dpi=(2000, 2000)),
            "the pitch from the file's TIFF resolution tags (2000 dpi) is refused (pixel_spacing_mm 0.0127 mm outside "
            "0.025..10 mm (what radiography rooms use))",
        ),
        (  # tifffile writes XResolution = YResolution = 1 with ResolutionUnit NONE: no physical unit
            "nounit.tif",
            lambda p, a: __import__("tifffile").imwrite(p, a.astype(np.float64)),
            "the file has no pixel spacing",
        ),
        (  # XResolution and YResolution without a ResolutionUnit: the file states no unit
            "nounit2.tif",
            lambda p, a: Image.fromarray(a).save(p, tiffinfo={282: 300.0, 283: 300.0}),
            "the file has no pixel spacing",
        ),
    ],
)
def test_screen_default_or_unusable_resolution_is_refused_saying_what_the_file_held(tmp_path, name, save, held):
    """72 or 96 dpi (what many programs write whatever the image is), a pitch the geometry refuses, or a resolution
    without a physical unit is not a pitch: an image of another size than the standard one is refused as before, its
    line saying what the file held; at the standard size the standard geometry is used; the argument is used as
    before."""
    save(tmp_path / name, _film())
    with pytest.raises(InputFileError) as e:
        load_radiograph(tmp_path / name, STD)
    assert str(e.value) == (
        f"{tmp_path / name}: size 1200x1300 differs from the standard geometry 64x64 and {held}; "
        "pass --pixel_spacing_mm (detector pitch, mm) to resample"
    )
    _, _, info = load_radiograph(tmp_path / name, STD, pixel_spacing_mm=0.1)
    assert info["geometry_source"]["pixel_spacing_mm"] == "argument pixel_spacing_mm"
    save(tmp_path / f"std_{name}", _film(64, 64))
    _, _, info = load_radiograph(tmp_path / f"std_{name}", STD)
    assert info["geometry_source"]["pixel_spacing_mm"] == "standard geometry (size matches)"


def test_to_dicom_takes_the_stated_resolution(tmp_path, capsys):
    """``to-dicom`` of a 254 x 127 dpi PNG without --pixel_spacing_mm writes ImagerPixelSpacing [row, column] =
    [0.2, 0.1] mm; a 72 dpi one of another size than the standard is refused in the reader's line, nothing written."""
    import pydicom
    from scripts.io.radiograph_io import main

    Image.fromarray(_film()).save(tmp_path / "hip.png", dpi=(254, 127))
    assert main(["to-dicom", str(tmp_path / "hip.png"), str(tmp_path / "hip.dcm")]) == 0
    ds = pydicom.dcmread(str(tmp_path / "hip.dcm"))
    assert [float(x) for x in ds.ImagerPixelSpacing] == pytest.approx([0.2, 0.1], rel=1e-12)
    Image.fromarray(_film()).save(tmp_path / "screen.png", dpi=(72, 72))
    capsys.readouterr()
    assert main(["to-dicom", str(tmp_path / "screen.png"), str(tmp_path / "screen.dcm")]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"{tmp_path / 'screen.png'}: size 1200x1300 differs") and "72.01 dpi) is a screen default" in err
    )
    assert not (tmp_path / "screen.dcm").exists()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_min_is_white_tiff_is_turned_over(tmp_path, dtype):
    """A TIFF whose PhotometricInterpretation is MinIsWhite (low values bright, as DICOM MONOCHROME1) stores 255 (8-bit),
    65535 (16-bit) or 1000 (float) minus the displayed values: it is read as the MinIsBlack file of the displayed values,
    up to a constant (Pillow turned only 8-bit over; 16-bit and float were read dark bone)."""
    import tifffile

    displayed = (ramp(64, 64, hi=200) * np.tri(64, 64, 10)).astype(dtype)
    top = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1000)
    tifffile.imwrite(tmp_path / "black.tif", displayed, photometric="minisblack")
    tifffile.imwrite(
        tmp_path / "white.tif", (top - displayed.astype(np.float64)).astype(dtype), photometric="miniswhite"
    )
    black, _, _ = load_radiograph(tmp_path / "black.tif", STD)
    white, _, _ = load_radiograph(tmp_path / "white.tif", STD)
    np.testing.assert_allclose(white - black, np.full_like(black, (white - black).mean()), atol=1e-3)
    assert np.corrcoef(white.ravel(), black.ravel())[0, 1] > 0.999


def test_16bit_colour_samples_read_as_8_bits_say_so(tmp_path):
    """A grey radiograph saved as 16-bit RGB (PNG, TIFF) is read as Pillow reads it, the high byte of each sample
    (value >> 8), and its info warns that 8 of the 16 bits were read; 8-bit RGB and 16-bit grey files do not warn."""
    import SimpleITK
    import tifffile
    from scripts.io.radiograph_io import EIGHT_OF_SIXTEEN_WARNING

    grey = ramp(64, 64, hi=60000)
    rgb48 = SimpleITK.GetImageFromArray(np.stack([grey] * 3, -1), isVector=True)
    SimpleITK.WriteImage(rgb48, str(tmp_path / "rgb48.png"))  # Pillow does not write 16-bit colour
    tifffile.imwrite(tmp_path / "rgb48.tif", np.stack([grey] * 3, -1), photometric="rgb")
    for name in ("rgb48.png", "rgb48.tif"):
        img, _, info = load_radiograph(tmp_path / name, STD)
        np.testing.assert_array_equal(img, (grey >> 8).astype(np.float32))
        assert info["warnings"] == [EIGHT_OF_SIXTEEN_WARNING]
    Image.fromarray(np.stack([(grey >> 8).astype(np.uint8)] * 3, -1)).save(tmp_path / "rgb24.png")
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    for name in ("rgb24.png", "grey16.png"):
        assert "warnings" not in load_radiograph(tmp_path / name, STD)[2]


@pytest.mark.parametrize("dtype", [np.uint16, np.float64])  # read by Pillow, by tifffile
def test_tiff_with_a_reduced_resolution_preview_is_one_radiograph(tmp_path, dtype):
    """A TIFF whose second page is a reduced-resolution copy (NewSubfileType bit 0, a scanner's preview) is read as
    its first page, the same as the one-page file; two full-resolution pages are refused as before."""
    import tifffile

    image = ramp(64, 64, hi=60000).astype(dtype)
    tifffile.imwrite(tmp_path / "plain.tif", image)
    for name, second, subfiletype in (("preview.tif", image[::2, ::2], 1), ("two.tif", image[::-1], 0)):
        tifffile.imwrite(tmp_path / name, image)
        tifffile.imwrite(tmp_path / name, second, append=True, subfiletype=subfiletype)
    plain = load_radiograph(tmp_path / "plain.tif", STD)[0]
    np.testing.assert_array_equal(load_radiograph(tmp_path / "preview.tif", STD)[0], plain)
    with pytest.raises(InputFileError, match=r"two.tif: multi-page image \(2 frames\); one radiograph per file"):
        load_radiograph(tmp_path / "two.tif", STD)


@pytest.mark.parametrize("width, function", [(0.0, None), (-5.0, None), (0.5, None), (0.0, "SIGMOID")])
def test_a_window_dicom_does_not_allow_is_not_applied(tmp_path, width, function):
    """A WindowWidth below 1 (LINEAR, the default) or not above 0 (SIGMOID) is no window: the image is read as without
    one, with a warning naming the tag (it was refused as "corrupt or undecodable pixel data"). A valid window still
    maps the values (here: 1..1000 clipped to the window 700 +- 300)."""
    tags = {"VOILUTFunction": function} if function else {}
    make_dicom(tmp_path / "bad.dcm", ramp(), WindowCenter=400.0, WindowWidth=width, **tags)
    make_dicom(tmp_path / "none.dcm", ramp())
    make_dicom(tmp_path / "good.dcm", ramp(), WindowCenter=700.0, WindowWidth=600.0)
    img, _, info = load_radiograph(tmp_path / "bad.dcm", STD)
    np.testing.assert_array_equal(img, load_radiograph(tmp_path / "none.dcm", STD)[0])
    assert info["warnings"] == [
        f"WindowWidth (0028,1051) {width:g} is not a {function or 'LINEAR'} window DICOM allows; the VOI window was not "
        "applied"
    ]
    assert not np.array_equal(load_radiograph(tmp_path / "good.dcm", STD)[0], img)


@pytest.mark.parametrize("mono1", [False, True])
def test_a_window_that_whitens_bone_is_not_applied(tmp_path, mono1):
    """A VOI window that turns more than 5% of the image white at the bone end (a soft-tissue window given first: bone
    clipped flat, which cost the network its cortical outlines, Dice 0.65-0.87 and an implausibility warning on a
    simulated radiograph) is not applied: the image is read over its full range, with a warning naming the window and
    the share it whitens. One that darkens the other end only, or whitens a few pixels, is applied. MONOCHROME1: the
    bone end is its low stored values."""
    values = (np.arange(64 * 64).reshape(64, 64) % 1024 + 1).astype(np.uint16)  # 1..1024, each 4 times
    stored = (1025 - values).astype(np.uint16) if mono1 else values
    photometric = "MONOCHROME1" if mono1 else "MONOCHROME2"

    def read(name, centre, width, **tags):
        centre = 1025 - centre if mono1 else centre
        make_dicom(
            tmp_path / name, stored, PhotometricInterpretation=photometric, WindowCenter=centre, WindowWidth=width
        )
        return load_radiograph(tmp_path / name, STD)

    # values 400..1024 white and 398, 399 within 1% of it (61.2%), less 1014..1024 within 1% of the top unwindowed (1.1%)
    img, _, info = read("soft.dcm", 300.0, 200.0)
    np.testing.assert_array_equal(img, values.astype(np.float32))  # as stored, bone bright, no window
    centre = 725 if mono1 else 300
    (warning,) = info["warnings"]
    assert warning == (
        f"the window WindowCenter/WindowWidth (0028,1050/1051) {centre}/200 whitens 60% of the image at the bone end "
        "(bone clipped flat, which the model never saw); not applied: the image was read over its full range"
    )
    img, _, info = read("dark.dcm", 800.0, 400.0)  # values up to 600 black, none but 1000.. near white: applied
    assert "warnings" not in info and (img == img.min()).mean() == pytest.approx(600 / 1024, abs=0.002)
    img, _, info = read("few.dcm", 520.0, 960.0)  # 1000..1024 white (2.4%), 990..999 near it, less 1.1%: applied
    assert "warnings" not in info and (img == img.max()).mean() == pytest.approx(25 / 1024, abs=0.002)


@pytest.mark.parametrize(
    "tags, side",
    [
        (dict(ImageLaterality="L"), "ImageLaterality (0020,0062) L"),
        (dict(ImageLaterality=None, Laterality="R"), "Laterality (0020,0060) R"),
        (dict(ImageLaterality="B", Laterality="R"), None),  # the image's own laterality wins: both hips
        (dict(ImageLaterality="U"), None),  # unpaired: the pelvis
    ],
)
def test_a_view_of_one_hip_is_read_with_a_warning(tmp_path, tags, side):
    """ImageLaterality (or else the series' Laterality) L or R: a view of one hip, centred on it, not the AP pelvis the
    model knows; read (some sites set it from the side of the complaint on a whole-pelvis film), with a warning naming
    the tag (it passed without a word). B, U: no warning."""
    make_dicom(tmp_path / "hip.dcm", ramp(), **tags)
    _, _, info = load_radiograph(tmp_path / "hip.dcm", STD)
    if side is None:
        assert "warnings" not in info
    else:
        assert info["warnings"] == [
            f"{side}: a view of one hip; the model knows AP views of the whole pelvis, so the other femur and that half "
            "of the pelvis may be missing or made up"
        ]


def test_a_scanned_films_nominal_scanned_pixel_spacing_is_the_detector_pitch(tmp_path):
    """A film digitiser's secondary capture states the pitch on the film, NominalScannedPixelSpacing (0018,2010), [row,
    column] mm; the film lies in the detector plane, so it is the detector pitch, before a PixelSpacing (which, when it
    differs, is calibrated to the patient: DICOM PS3.3 10.7.1.1). Without it such a file was refused for want of a
    pitch."""
    film = dict(ImagerPixelSpacing=None, NominalScannedPixelSpacing=[2.5, 2.0], ConversionType="DF")
    for name, tags in (("film.dcm", film), ("calibrated.dcm", {**film, "PixelSpacing": [2.2, 1.8]})):
        make_dicom(tmp_path / name, ramp(), modality="OT", sop_class=SecondaryCaptureImageStorage, **tags)
        _, _, info = load_radiograph(tmp_path / name, STD)
        assert info["native_geometry"]["pixel_spacing_mm"] == [2.0, 2.5]  # (su, sv)
        assert info["geometry_source"]["pixel_spacing_mm"] == "NominalScannedPixelSpacing (0018,2010)"


def test_pixel_spacing_with_a_magnification_factor_says_what_it_assumed(tmp_path):
    """PixelSpacing with EstimatedRadiographicMagnificationFactor and neither ImagerPixelSpacing nor
    PixelSpacingCalibrationType: DICOM cannot tell whether PixelSpacing was calibrated (PS3.3 10.7.1.1); it is taken as
    calibrated (pitch = PixelSpacing x factor), and geometry_source says that this was assumed. With
    PixelSpacingCalibrationType GEOMETRY the file says so: no such note."""
    for name, tags in (("bare.dcm", {}), ("stated.dcm", dict(PixelSpacingCalibrationType="GEOMETRY"))):
        make_dicom(
            tmp_path / name,
            ramp(),
            ImagerPixelSpacing=None,
            PixelSpacing=[1.6, 1.6],
            EstimatedRadiographicMagnificationFactor=1.25,
            **tags,
        )
        _, _, info = load_radiograph(tmp_path / name, STD)
        assert info["native_geometry"]["pixel_spacing_mm"] == pytest.approx([2.0, 2.0])  # 1.6 x 1.25
        assumed = info["geometry_source"]["pixel_spacing_mm"].endswith(
            "(PixelSpacing taken as calibrated to the patient: no tag says whether it is)"
        )
        assert assumed == (name == "bare.dcm")
