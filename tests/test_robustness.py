"""Robustness of the inference workflow (``monai.bundle run`` of configs/inference.yaml) against bad inputs.

Every bad input, checkpoint or shape model gets one line on stderr naming the file and the problem,
exit status 1 and no output (partial or complete) for it; legitimate variants (16-bit PNG, grey
saved as RGB, non-square detector, geometry given as arguments) work. Batches skip bad files,
resume after an interruption and never leave ``*.partial`` folders. docs/robustness.md lists them.
Tiny everything: 64x64 radiographs (the standard 400 mm field at 6.25 mm), an untrained tiny network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import zipfile
from datetime import date
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scripts.reconstruction.reconstruct as reconstruct
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.uid import CTImageStorage, MRImageStorage
from scripts.geometry import Geometry
from scripts.io.files import OUTPUT_MARKER, input_error_of, shared_data_dir, write_nifti
from scripts.io.radiograph_io import (
    FEW_GREY_LEVELS_WARNING,
    FOR_PROCESSING_WARNING,
    field_of_view,
    load_radiograph,
    output_name,
)
from scripts.model.networks import DualFaceDepthNet
from tests.helpers import (
    FEATURES,
    GEOM,
    ROOT,
    Booby,
    assert_complete,
    bundle_env,
    error_lines,
    jpeg_lossless_copy,
    large_blank_image,
    make_dicom,
    make_non_image,
    run_bundle,
    save_raw,
    tiny_checkpoint,
    tree,
)

PHI = ("Doe", "Jane", "MRN123456", "19650101")
HYP = settings(max_examples=10, deadline=None)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> dict:
    """A tiny random checkpoint and the 64x64 standard geometry, as workflow overrides."""
    root = tmp_path_factory.mktemp("bundle")
    tiny_checkpoint(root / "model.pt")
    GEOM.save(root / "geometry.json")
    return {
        "ckpt_path": str(root / "model.pt"),
        "standard_geometry": str(root / "geometry.json"),
        "ssm_path": "",
        "features": FEATURES,
        "image_size": 64,
        "device": "cpu",
    }


def run_workflow(input_path: Path, output_dir: Path, bundle: dict, **overrides) -> int:
    """``monai.bundle run`` of configs/inference.yaml in this process; returns the exit status."""
    try:
        run_bundle("inference.yaml", input_dir=str(input_path), output_dir=str(output_dir), **{**bundle, **overrides})
    except SystemExit as e:
        return int(e.code)
    return 0


def image64(seed: int = 0, hi: float = 1000.0) -> np.ndarray:
    """A smooth non-constant 64x64 'radiograph' (blob on a ramp), values in [0, hi]."""
    v, u = np.mgrid[:64, :64]
    img = 0.3 * u / 63 + np.exp(-((u - 30 - seed) ** 2 + (v - 34) ** 2) / 200.0)
    return (hi * img / img.max()).astype(np.float32)


def dicom(path: Path, pixels: np.ndarray | None = None, **tags):
    tags = {"DistanceSourceToDetector": 1100.0, "ImagerPixelSpacing": [6.25, 6.25], **tags}
    return make_dicom(path, np.round(image64() if pixels is None else pixels).astype(np.uint16), **tags)


def assert_no_output(out: Path) -> None:
    assert not out.exists() or list(out.iterdir()) == []  # nothing, not even a hidden *.partial folder


# ---------------------------------------------------------------------- bad inputs: one line, exit 1, no output
def _corrupt_dicom(d):
    (d / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    return d / "junk.dcm"


def _dcm(name: str, pixels: np.ndarray | None = None, **tags):
    """Maker of a DICOM input ``name`` (standard geometry tags unless overridden)."""

    def make(d: Path) -> Path:
        dicom(d / name, pixels, **tags)
        return d / name

    return make


def _truncated(d, cut):
    dicom(d / "cut.dcm")
    data = (d / "cut.dcm").read_bytes()
    (d / "cut.dcm").write_bytes(data[:cut])
    return d / "cut.dcm"


def _text(d):
    (d / "notes.dcm").write_text("hello")
    return d / "notes.dcm"


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _text_as(suffix: str):
    def make(d: Path) -> Path:
        (d / f"notes{suffix}").write_text("not an image")
        return d / f"notes{suffix}"

    return make


def _multiframe(d):
    ds = dicom(d / "volume.dcm", NumberOfFrames=2)
    ds.PixelData = ds.PixelData * 2
    ds.save_as(str(d / "volume.dcm"), enforce_file_format=True)
    return d / "volume.dcm"


def _huge_dicom(d):
    ds = dicom(d / "huge.dcm")
    ds.Rows, ds.Columns = 9000, 9000  # header only: 162 MB of pixels are never decoded
    ds.save_as(str(d / "huge.dcm"), enforce_file_format=True)
    return d / "huge.dcm"


def _png(d, name, array, **kwargs):
    Image.fromarray(array).save(d / name, **kwargs)
    return d / name


def _tiff_stack(d):
    frames = [Image.fromarray(image64(k).astype(np.uint16)) for k in range(3)]
    frames[0].save(d / "stack.tif", save_all=True, append_images=frames[1:])
    return d / "stack.tif"


def _nifti(d, array, geometry=True, name="image.nii.gz"):
    write_nifti(d / "case" / name, array)
    if geometry:
        GEOM.save(d / "case" / "geometry.json")
    return d / "case" / name


def _with_nan(a):
    a = a.copy()
    a[10, 10] = np.nan
    return a


def _with_inf(a):
    a = a.copy()
    a[5, 7] = np.inf
    return a


def _rgb(d):
    g = (image64(hi=250)).astype(np.uint8)
    return _png(d, "colour.png", np.stack([g, g, np.roll(g, 3, axis=1)], -1))


def _rgb_dicom(d):
    """A DICOM secondary capture in colour: its blue channel shifted 3 columns from red and green."""
    g = np.round(image64()).astype(np.uint16)
    ds = dicom(d / "rgb.dcm", g, SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0)
    ds.PixelData = np.ascontiguousarray(np.stack([g, g, np.roll(g, 3, axis=1)], -1)).tobytes()
    ds.save_as(str(d / "rgb.dcm"), enforce_file_format=True)
    return d / "rgb.dcm"


def _truncated_png(d):
    _png(d, "full.png", image64(hi=250).astype(np.uint8))
    (d / "cut.png").write_bytes((d / "full.png").read_bytes()[:120])
    (d / "full.png").unlink()
    return d / "cut.png"


def _nifti_geometry(d, **changes):
    """A simulator-layout NIfTI whose geometry.json has ``changes`` (None: key removed)."""
    path = _nifti(d, image64())
    g = {**GEOM.to_dict(), **changes}
    (path.parent / "geometry.json").write_text(json.dumps({k: v for k, v in g.items() if v is not None}))
    return path


def _huge_nifti(d):
    """12000 x 12000 px of zeros: 0.6 MB compressed, 144 MB decoded; refused from the header."""
    (d / "case").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((12000, 12000), np.uint8), np.eye(4)), str(d / "case" / "image.nii.gz"))
    GEOM.save(d / "case" / "geometry.json")
    return d / "case" / "image.nii.gz"


def _dcm_raw_tag(name: str, keyword: str, raw: bytes = b"not-a-num!", **tags):
    """Maker of a DICOM whose ``keyword`` holds text that does not parse (written over a 10-byte placeholder)."""

    def make(d: Path) -> Path:
        placeholder = "12345.6789"
        value = [placeholder, "6.25"] if keyword in ("ImagerPixelSpacing", "PixelSpacing") else placeholder
        dicom(d / name, **{keyword: value, **tags})
        data = (d / name).read_bytes()
        assert data.count(placeholder.encode()) == 1
        (d / name).write_bytes(data.replace(placeholder.encode(), raw))
        return d / name

    return make


def _jpeg_ls_undecodable(d: Path) -> Path:
    """JPEG-LS transfer syntax whose data no decoder here can read: the missing decoders are named."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    ds = dicom(d / "jls.dcm")
    ds.PixelData = encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.save_as(str(d / "jls.dcm"), enforce_file_format=True)
    return d / "jls.dcm"


BAD_INPUTS = {
    "corrupt DICOM": (_corrupt_dicom, "corrupt or truncated DICOM"),
    "DICOM truncated in the header": (
        lambda d: _truncated(d, 400),
        "corrupt or truncated DICOM (no pixel data (7FE0,0010))",
    ),
    "DICOM truncated in the pixel data": (lambda d: _truncated(d, -3000), "corrupt or undecodable pixel data"),
    "DICOM Rows 64 over 72 x 72 pixels": (
        _dcm("rows.dcm", np.tile(image64(), (2, 2))[:72, :72], Rows=64),
        "PixelData (7FE0,0010) holds 10368 bytes, but Rows x Columns x frames x samples (64 x 72 x 1 x "
        "1) at BitsAllocated 16 needs 9216",
    ),
    "not DICOM (text named .dcm)": (_text, "not a DICOM file"),
    "CT slice": (_dcm("ct.dcm", modality="CT", sop_class=CTImageStorage), "modality CT is not a projection radiograph"),
    "MR image": (_dcm("mr.dcm", modality="MR", sop_class=MRImageStorage), "modality MR is not a projection radiograph"),
    "multi-frame DICOM (volume)": (_multiframe, "multi-frame / volume DICOM (2 frames)"),
    "3D NIfTI volume": (
        lambda d: _nifti(
            d, np.random.default_rng(0).random((64, 64, 20), np.float32), geometry=False, name="ct.nii.gz"
        ),
        "3D volume (shape (64, 64, 20)) given as a radiograph",
    ),
    "multi-page TIFF": (_tiff_stack, "multi-page image (3 frames)"),
    "RGB colour PNG": (_rgb, "colour (RGB) image; give a grayscale radiograph"),
    "RGB DICOM with real colour": (_rgb_dicom, "colour (RGB) image; give a grayscale radiograph"),
    "YBR DICOM of one sample": (
        _dcm("ybr.dcm", PhotometricInterpretation="YBR_FULL"),
        "colour or unsupported photometric interpretation (YBR_FULL, 1 samples/pixel)",
    ),
    "all-zero DICOM": (_dcm("zero.dcm", np.zeros((64, 64))), "constant image (all pixels 0)"),
    "constant PNG": (
        lambda d: _png(d, "grey.png", np.full((64, 64), 128, np.uint8)),
        "constant image (all pixels 128)",
    ),
    "NaN pixels (DICOM rescale)": (
        _dcm("nan.dcm", RescaleSlope=float("nan"), RescaleIntercept=0.0),
        "contains NaN or Inf pixel values",
    ),
    "Inf pixels (float TIFF)": (lambda d: _png(d, "inf.tif", _with_inf(image64())), "contains NaN or Inf pixel values"),
    "NaN pixels (NIfTI)": (lambda d: _nifti(d, _with_nan(image64())), "contains NaN or Inf values"),
    "tiny DICOM (32 px)": (_dcm("tiny.dcm", image64()[:32, :32]), "image too small (32x32 px; minimum 64)"),
    "tiny PNG (40 px)": (
        lambda d: _png(d, "tiny.png", image64(hi=250).astype(np.uint8)[:40]),
        "image too small (64x40 px; minimum 64)",
    ),
    "huge DICOM (9000 px)": (_huge_dicom, "image too large (9000x9000 px; maximum 8000)"),
    "huge PNG (8001 px)": (
        lambda d: _png(d, "huge.png", np.tile(image64(hi=250).astype(np.uint8), (1, 126))[:, :8001]),
        "image too large (8001x64 px; maximum 8000)",
    ),
    "missing SID": (
        _dcm("nosid.dcm", DistanceSourceToDetector=None),
        "missing DistanceSourceToDetector (0018,1110); pass --sid_mm",
    ),
    "missing pixel spacing": (
        _dcm("nopitch.dcm", ImagerPixelSpacing=None),
        "missing ImagerPixelSpacing (0018,1164) and PixelSpacing (0028,0030); pass --pixel_spacing_mm",
    ),
    "PNG of another size, no pitch": (
        lambda d: _png(d, "big.png", np.tile(image64(hi=250).astype(np.uint8), (2, 2))),
        "differs from the standard geometry 64x64 and the file has no pixel spacing; pass --pixel_spacing_mm",
    ),
    "PNG of another size at 72 dpi (a screen default)": (
        lambda d: _png(d, "screen.png", np.tile(image64(hi=250).astype(np.uint8), (2, 2)), dpi=(72, 72)),
        "differs from the standard geometry 64x64 and the resolution in the file's PNG pHYs (2835 pixels/m = 72.01 dpi) "
        "is a screen default, not a detector pitch; pass --pixel_spacing_mm",
    ),
    "truncated PNG": (_truncated_png, "unreadable or truncated image"),
    "huge PNG past Pillow's own limit (13378 px)": (
        lambda d: large_blank_image(d / "bomb.png", 13378),
        "image too large (13378x13378 px; maximum 8000)",
    ),
    "empty PNG (0 bytes)": (lambda d: _empty(d / "hip.png"), "empty file (0 bytes)"),
    "empty DICOM (0 bytes)": (lambda d: _empty(d / "hip.dcm"), "empty file (0 bytes)"),
    "text named .png": (_text_as(".png"), "not a PNG image: Pillow finds no image format it reads in the file"),
    "text named .jpg": (_text_as(".jpg"), "not a JPEG image: Pillow finds no image format it reads in the file"),
    "DICOM named .png": (_dcm("hip.png"), "a DICOM file named .png: rename it .dcm to read it as DICOM"),
    "BMP image": (
        lambda d: _png(d, "hip.bmp", image64(hi=250).astype(np.uint8)),
        "BMP image: a format not read here; save the radiograph as PNG (16-bit grayscale for its full precision), "
        "TIFF, JPEG or DICOM",
    ),
    "GIF image": (lambda d: _png(d, "hip.gif", image64(hi=250).astype(np.uint8)), "GIF image: a format not read here"),
    "NIfTI without geometry.json": (
        lambda d: _nifti(d, image64(), geometry=False),
        "missing geometry.json beside the NIfTI image",
    ),
    # geometry outside what radiography rooms use (docs/real_radiographs.md, "Geometry bounds")
    "SID true (geometry.json)": (
        lambda d: _nifti_geometry(d, sid_mm=True),
        "geometry.json: sid_mm must be a number, got True",
    ),
    "SID 1e7 mm (DICOM)": (_dcm("far.dcm", DistanceSourceToDetector=1e7), "sid_mm 1e+07 mm outside 700..2000 mm"),
    "SID 5 mm (DICOM)": (_dcm("near.dcm", DistanceSourceToDetector=5.0), "sid_mm 5 mm outside 700..2000 mm"),
    "SID 5 mm (geometry.json)": (lambda d: _nifti_geometry(d, sid_mm=5.0), "sid_mm 5 mm outside 700..2000 mm"),
    "detector pitch 100 mm (DICOM)": (
        _dcm("coarse.dcm", ImagerPixelSpacing=[100.0, 100.0]),
        "pixel_spacing_mm 100 mm outside 0.025..10 mm",
    ),
    "detector pitch as text (geometry.json)": (
        lambda d: _nifti_geometry(d, pixel_spacing_mm=["6.25", "6.25"]),
        "pixel_spacing_mm must be numbers",
    ),
    "detector field 2 m (DICOM)": (
        _dcm("field.dcm", np.tile(image64(), (32, 32))[:2000, :2000], ImagerPixelSpacing=[1.0, 1.0]),
        "detector field (pixel_spacing_mm x image_size) 2000 mm outside 50..1500 mm",
    ),
    "principal point at 1e6 px (geometry.json)": (
        lambda d: _nifti_geometry(d, principal_point_px=[1e6, 31.5]),
        "principal_point_px [1000000.0, 31.5] lies off the 64x64 px detector",
    ),
    "magnification 5 (DICOM)": (
        _dcm(
            "mag.dcm", ImagerPixelSpacing=None, PixelSpacing=[1.25, 1.25], EstimatedRadiographicMagnificationFactor=5.0
        ),
        "magnification 5 from EstimatedRadiographicMagnificationFactor (0018,1114) outside 1..2",
    ),
    "bones: [] (geometry.json)": (lambda d: _nifti_geometry(d, bones=[]), "bones is empty"),
    "bones named twice (geometry.json)": (
        lambda d: _nifti_geometry(d, bones=["pelvis", "pelvis", "femur_right"]),
        "bones names a channel twice",
    ),
    "tiny NIfTI (8 px)": (lambda d: _nifti(d, image64()[:8, :8]), "image too small (8x8 px; minimum 64)"),
    "huge NIfTI (12000 px)": (_huge_nifti, "image too large (12000x12000 px; maximum 8000)"),
    # what the tags say is not an AP pelvis/hip view
    "chest film (BodyPartExamined CHEST)": (
        _dcm("chest.dcm", BodyPartExamined="CHEST"),
        "BodyPartExamined (0018,0015) is CHEST: not a pelvis/hip radiograph",
    ),
    "chest film (BodyPartExamined CHEST PA)": (
        _dcm("chest_pa.dcm", BodyPartExamined="CHEST PA"),
        "BodyPartExamined (0018,0015) is CHEST PA: not a pelvis/hip radiograph",
    ),
    "knee film (BodyPartExamined KNEE LEFT)": (
        _dcm("knee.dcm", BodyPartExamined="KNEE LEFT"),
        "BodyPartExamined (0018,0015) is KNEE LEFT: not a pelvis/hip radiograph",
    ),
    "lateral view (ViewPosition LL)": (
        _dcm("lat.dcm", ViewPosition="LL"),
        "ViewPosition (0018,5101) is LL: not an AP view",
    ),
    "PA view (ViewPosition PA)": (_dcm("pa.dcm", ViewPosition="PA"), "ViewPosition (0018,5101) is PA: not an AP view"),
    "lateral view (PatientOrientation A\\F)": (
        _dcm("lat_po.dcm", PatientOrientation=["A", "F"]),
        "PatientOrientation (0020,0020) is A\\F: a lateral or axial view, not an AP view",
    ),
    "mirrored AP (PatientOrientation R\\F)": (
        _dcm("mirror.dcm", PatientOrientation=["R", "F"]),
        "PatientOrientation (0020,0020) is R\\F: the image is mirrored or rotated",
    ),
    "DICOM SID tag that does not parse": (
        _dcm_raw_tag("sid.dcm", "DistanceSourceToDetector"),
        "DistanceSourceToDetector (0018,1110) does not parse as a number: 'not-a-num!'",
    ),
    "DICOM spacing tag that does not parse": (
        _dcm_raw_tag("pitch.dcm", "ImagerPixelSpacing"),
        "ImagerPixelSpacing (0018,1164) does not parse as a number: 'not-a-num!\\\\6.25'",
    ),
    "DICOM rescale slope that does not parse": (
        _dcm_raw_tag("slope.dcm", "RescaleSlope", RescaleIntercept=0.0),
        "RescaleSlope (0028,1053) does not parse as a number",
    ),
    "JPEG-LS DICOM no decoder reads": (
        _jpeg_ls_undecodable,
        "cannot be decoded here: pydicom has no decoder for it installed (gdcm - requires gdcm",
    ),
    "JPEG of another size, no pitch": (
        lambda d: _png(d, "xr.jpg", np.tile(image64(hi=250).astype(np.uint8), (2, 2))),
        "differs from the standard geometry 64x64 and the file has no pixel spacing",
    ),
    "colour JPEG": (
        lambda d: _png(
            d,
            "photo.jpeg",
            np.stack(
                [image64(hi=250).astype(np.uint8), np.zeros((64, 64), np.uint8), np.full((64, 64), 200, np.uint8)], -1
            ),
        ),
        "colour (RGB) image; give a grayscale radiograph",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_exit_1_no_output(case, bundle, tmp_path, capsys):
    make, needle = BAD_INPUTS[case]
    d = tmp_path / "in"
    d.mkdir()
    path = make(d)
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle) == 1
    err = capsys.readouterr().err
    lines = error_lines(err, path)
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ") and needle in lines[0], err
    assert "Traceback" not in err and "failed 1" in err
    assert_no_output(out)


# ---------------------------------------------------------------------- legitimate variants that work
def test_16bit_and_grey_rgb_png_accepted(bundle, tmp_path):
    """A 16-bit grey PNG (a common radiograph export) gives exactly what a float TIFF of the same values gives;
    grey saved as RGB/RGBA (opaque) gives exactly what the grey PNG gives."""
    d = tmp_path / "in"
    d.mkdir()
    img = np.round(image64(hi=60000.0)).astype(np.uint16)
    assert len(np.unique(img)) > 1000  # more grey levels than 8 bits hold
    Image.fromarray(img).save(d / "hip16.png")
    Image.fromarray(img.astype(np.float32)).save(d / "hipfloat.tif")
    g = (img >> 8).astype(np.uint8)
    Image.fromarray(g).save(d / "hip8.png")
    Image.fromarray(np.stack([g] * 3, -1)).save(d / "hip8_rgb.png")
    Image.fromarray(np.stack([g] * 3 + [np.full_like(g, 255)], -1)).save(d / "hip8_rgba.png")
    assert run_workflow(d, tmp_path / "out", bundle) == 0
    names = ("hip16", "hipfloat", "hip8", "hip8_rgb", "hip8_rgba")
    depth = {n: nib.load(str(tmp_path / "out" / n / "depth.nii.gz")).get_fdata() for n in names}
    for n in names:
        assert_complete(tmp_path / "out" / n)
    np.testing.assert_array_equal(depth["hip16"], depth["hipfloat"])
    assert not np.array_equal(depth["hip16"], depth["hip8"])  # the low byte matters: not read as 8-bit
    np.testing.assert_array_equal(depth["hip8_rgb"], depth["hip8"])
    np.testing.assert_array_equal(depth["hip8_rgba"], depth["hip8"])


def test_non_square_detector_is_resampled(bundle, tmp_path):
    """96 rows x 64 columns at 4 mm (256 x 384 mm): padded into the 400 mm square; coverage = 0.64 * 0.96."""
    d = tmp_path / "in"
    d.mkdir()
    px = np.tile(image64(), (2, 1))[:96]
    dicom(d / "portrait.dcm", px, ImagerPixelSpacing=[4.0, 4.0])
    assert run_workflow(d, tmp_path / "out", bundle) == 0
    result = assert_complete(tmp_path / "out" / "portrait")
    assert result["coverage"] == pytest.approx((64 * 4.0 / 400) * (96 * 4.0 / 400), abs=0.02)
    assert Geometry.from_dict(result["geometry"]) == GEOM


def test_missing_geometry_given_as_arguments(bundle, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    dicom(d / "nosid.dcm", DistanceSourceToDetector=None, ImagerPixelSpacing=None)
    assert run_workflow(d, tmp_path / "out", bundle, sid_mm=1100.0, pixel_spacing_mm=6.25) == 0
    result = assert_complete(tmp_path / "out" / "nosid")
    assert result["geometry_source"] == {"sid_mm": "argument sid_mm", "pixel_spacing_mm": "argument pixel_spacing_mm"}


def test_stated_resolution_gives_the_pitch_and_result_json_says_so(bundle, tmp_path):
    """A 128 x 96 px PNG at 640 x 320 pixels/m (pHYs; 16.256 x 8.128 dpi) is read at 1000 / 640 = 1.5625 mm along the
    columns and 3.125 mm along the rows: a 200 x 300 mm detector, coverage of the 400 mm standard field 0.5 x 0.75;
    result.json names the pHYs chunk as the pitch's source. The argument wins over it (6.25 mm: the whole field)."""
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.tile(image64(hi=250).astype(np.uint8), (2, 2))[:96]).save(d / "film.png", dpi=(16.256, 8.128))
    assert run_workflow(d, tmp_path / "out", bundle) == 0
    result = assert_complete(tmp_path / "out" / "film")
    assert result["geometry_source"] == {
        "sid_mm": "standard geometry",
        "pixel_spacing_mm": "PNG pHYs (640 x 320 pixels/m = 16.26 x 8.128 dpi)",
    }
    assert result["coverage"] == pytest.approx(0.5 * 0.75, abs=0.02)
    assert run_workflow(d, tmp_path / "given", bundle, pixel_spacing_mm=6.25) == 0
    result = assert_complete(tmp_path / "given" / "film")
    assert result["geometry_source"]["pixel_spacing_mm"] == (
        "argument pixel_spacing_mm (the file's PNG pHYs (640 x 320 pixels/m = 16.26 x 8.128 dpi) not used)"
    )
    assert result["coverage"] == 1.0


@pytest.mark.parametrize(
    "overrides, line",
    [
        ({"sid_mm": True}, "--sid_mm: must be a positive number (mm), got True"),
        ({"sid_mm": "far"}, "--sid_mm: must be a positive number (mm), got 'far'"),
        ({"sid_mm": 5.0}, "--sid_mm: sid_mm 5 mm outside 700..2000 mm (what radiography rooms use)"),
        ({"sid_mm": float("nan")}, "--sid_mm: must be a positive number (mm), got nan"),
        ({"pixel_spacing_mm": True}, "--pixel_spacing_mm: must be a positive number (mm), got True"),
        (
            {"pixel_spacing_mm": 100.0},
            "--pixel_spacing_mm: pixel_spacing_mm 100 mm outside 0.025..10 mm (what radiography rooms use)",
        ),
        ({"pixel_spacing_mm": 0}, "--pixel_spacing_mm: must be a positive number (mm), got 0"),
        ({"pixel_spacing_mm": [6.25, -0.1]}, "--pixel_spacing_mm: must be a positive number (mm), got -0.1"),
        (  # what --pixel_spacing_mm "6.25 6.25" passes: text (a pair is written 6.25,6.25)
            {"pixel_spacing_mm": "6.25 6.25"},
            "--pixel_spacing_mm: must be one or two numbers (mm: 0.15, or su,sv as 0.15,0.16), got '6.25 6.25'",
        ),
        (
            {"pixel_spacing_mm": (6.25, 6.25, 6.25)},
            "--pixel_spacing_mm: must be one or two numbers (mm: 0.15, or su,sv as 0.15,0.16), got (6.25, 6.25, 6.25)",
        ),
    ],
    ids=[
        "sid true",
        "sid text",
        "sid 5 mm",
        "sid nan",
        "pitch true",
        "pitch 100 mm",
        "pitch 0",
        "pitch pair with -0.1",
        "pitch text",
        "pitch of three numbers",
    ],
)
def test_geometry_arguments_must_be_plausible_numbers(overrides, line, bundle, tmp_path, capsys):
    """--sid_mm true is not 1 mm: booleans, text and values outside the rooms' ranges stop the run with ONE line naming
    the option, before any input is read (a corrupt file among them is not reported) and before the model loads (a
    missing checkpoint is not either); nothing written."""
    d = tmp_path / "in"
    d.mkdir()
    for name in ("bare_a.dcm", "bare_b.dcm"):  # both lack SID and pitch: each would use the fill-ins
        dicom(d / name, DistanceSourceToDetector=None, ImagerPixelSpacing=None)
    _corrupt_dicom(d)
    args = {**bundle, "ckpt_path": str(tmp_path / "missing.pt"), "sid_mm": 1100.0, "pixel_spacing_mm": 6.25}
    assert run_workflow(d, tmp_path / "out", args, **overrides) == 1
    assert error_lines(capsys.readouterr().err, ": ") == [line]
    assert_no_output(tmp_path / "out")


def test_standard_geometry_outside_the_rooms_stops_the_run(bundle, tmp_path, capsys):
    bad = tmp_path / "standard.json"
    bad.write_text(json.dumps({**GEOM.to_dict(), "sid_mm": 5.0}))
    d = tmp_path / "in"
    d.mkdir()
    dicom(d / "a.dcm")
    assert run_workflow(d, tmp_path / "out", bundle, standard_geometry=str(bad)) == 1
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == f"{bad}: sid_mm 5 mm outside 700..2000 mm (what radiography rooms use)"
    )
    assert not (tmp_path / "out").exists()


def test_bones_in_another_order_keep_their_names(bundle, tmp_path):
    """geometry.json listing its bones in another order describes its own files; the prediction's channels are the
    network's (configs: bones), so the output is the same as with the standard order: nothing is relabelled."""
    d = tmp_path / "in"
    for name, bones in (("std", list(GEOM.bones)), ("shuffled", ["femur_left", "femur_right", "pelvis"])):
        write_nifti(d / name / "image.nii.gz", image64())
        (d / name / "geometry.json").write_text(json.dumps({**GEOM.to_dict(), "bones": bones}))
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle) == 0
    std, shuffled = assert_complete(out / "std"), assert_complete(out / "shuffled")
    assert list(shuffled["bones"]) == list(std["bones"]) == ["pelvis", "femur_left", "femur_right"]
    assert shuffled["geometry"]["bones"] == ["pelvis", "femur_left", "femur_right"]
    for f in ("depth.nii.gz", "mask.nii.gz"):
        np.testing.assert_array_equal(
            nib.load(str(out / "std" / f)).get_fdata(), nib.load(str(out / "shuffled" / f)).get_fdata()
        )


def test_burned_in_annotation_warns_and_leaves_the_radiograph_out_of_the_report(bundle, tmp_path, monkeypatch, capsys):
    d = tmp_path / "in"
    d.mkdir()
    dicom(d / "annotated.dcm", BurnedInAnnotation="YES")
    dicom(d / "clean.dcm", BurnedInAnnotation="NO")
    real_report, shown = reconstruct.save_reconstruction_report, {}

    def spy(path, image, *args, **kwargs):
        shown[Path(path).parent.name.split(".")[1]] = image  # temporary folder .<name>.XXXX.partial
        return real_report(path, image, *args, **kwargs)

    monkeypatch.setattr(reconstruct, "save_reconstruction_report", spy)
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle) == 0
    assert shown["annotated"] is None and shown["clean"] is not None
    warned = assert_complete(out / "annotated")["warnings"]
    assert warned[0].startswith("BurnedInAnnotation (0028,0301) YES") and all(
        "BurnedIn" not in w for w in assert_complete(out / "clean")["warnings"]
    )
    err = capsys.readouterr().err
    assert error_lines(err, "BurnedInAnnotation") == [f"{out / 'annotated'}: warning: {warned[0]}"]


def test_a_mask_or_drawing_given_as_a_radiograph_warns(bundle, tmp_path, capsys):
    """An image of fewer than 16 grey levels (a binary mask saved as PNG, a posterised radiograph) is reconstructed with
    the warning in result.json and on stderr: the network draws bones on a mask's silhouette too (the shipped model:
    a pelvis whose shape-model fit passes); one of 16 levels, or a radiograph of many, is not warned about."""
    d = tmp_path / "in"
    d.mkdir()
    img = image64()
    levels = {"mask": 2, "posterised": 15, "sixteen": 16}
    for name, k in levels.items():  # k equal steps from the minimum to the maximum: k distinct values
        _png(d, f"{name}.png", (np.round(img / img.max() * (k - 1)) * (255 // (k - 1))).astype(np.uint8))
    _png(d, "radiograph.png", np.round(img * 60).astype(np.uint16))
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle) == 0
    for name in [*levels, "radiograph"]:
        warned = [w for w in assert_complete(out / name)["warnings"] if "grey levels" in w]
        k = levels.get(name, 1000)
        assert warned == ([FEW_GREY_LEVELS_WARNING.format(levels=k)] if k < 16 else []), name
    err = capsys.readouterr().err
    assert error_lines(err, "grey levels") == [
        f"{out / 'mask'}: warning: only 2 grey levels: a mask, drawing or thresholded image, not a radiograph (which has "
        "hundreds); do not trust these surfaces",
        f"{out / 'posterised'}: warning: {FEW_GREY_LEVELS_WARNING.format(levels=15)}",
    ]


def test_raw_detector_data_warns(bundle, tmp_path, capsys):
    """A DX image FOR PROCESSING (raw detector data) is reconstructed with a warning in result.json and on stderr;
    one FOR PRESENTATION, or without the tag, is not warned about."""
    d = tmp_path / "in"
    d.mkdir()
    dicom(d / "raw.dcm", PresentationIntentType="FOR PROCESSING")
    dicom(d / "shown.dcm", PresentationIntentType="FOR PRESENTATION")
    dicom(d / "untagged.dcm")
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle) == 0
    warned = [w for w in assert_complete(out / "raw")["warnings"] if w.startswith("PresentationIntentType")]
    assert warned == [FOR_PROCESSING_WARNING]
    assert all(
        not w.startswith("PresentationIntentType")
        for n in ("shown", "untagged")
        for w in assert_complete(out / n)["warnings"]
    )
    err = capsys.readouterr().err
    assert error_lines(err, "FOR PROCESSING") == [f"{out / 'raw'}: warning: {FOR_PROCESSING_WARNING}"]


# ---------------------------------------------------------------------- bad checkpoints and shape models
def _torchscript_with_garbage(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model/constants.pkl", b"garbage")
        z.writestr("model/data.pkl", b"garbage")


BAD_MODELS = {
    "empty checkpoint": ("ckpt_path", lambda p: p.write_bytes(b""), "checkpoint file is empty"),
    "unreadable checkpoint": (
        "ckpt_path",
        lambda p: p.write_bytes(b"\x80\x02 not a checkpoint" * 50),
        "unreadable checkpoint",
    ),
    "missing checkpoint": ("ckpt_path", lambda p: None, "checkpoint not found"),
    "checkpoint of another bundle version": (
        "ckpt_path",
        lambda p: torch.save(DualFaceDepthNet(features=[4, 4, 8, 8, 32, 4]).state_dict(), p),
        "checkpoint from another bundle version or network configuration: shapes differ for",
    ),
    "single-face checkpoint": (
        "ckpt_path",
        lambda p: torch.save(DualFaceDepthNet(features=FEATURES, faces=1).state_dict(), p),
        "shapes differ for ['final_conv.bias', 'final_conv.weight']",
    ),
    "corrupt TorchScript": (
        "ckpt_path",
        _torchscript_with_garbage,
        "is a TorchScript archive (code, not data): not loaded",
    ),
    "pickle with code": (
        "ckpt_path",
        lambda p: torch.save({"w": Booby(p.parent / "pwned")}, p),
        "unreadable checkpoint",
    ),
    "corrupt shape model": (
        "ssm_path",
        lambda p: p.write_bytes(b"PK\x03\x04 broken zip"),
        "not a readable shape model",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_file_stops_before_any_output(case, bundle, tmp_path, capsys):
    key, make, needle = BAD_MODELS[case]
    bad = tmp_path / ("model.pt" if key == "ckpt_path" else "ssm.npz")
    make(bad)
    d = tmp_path / "in"
    d.mkdir()
    dicom(d / "a.dcm")
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle, **{key: str(bad)}) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"{bad}: ") and needle in err[-1] and len(error_lines("\n".join(err), bad)) == 1
    assert not out.exists()
    assert not (tmp_path / "pwned").exists()  # the pickled code never ran


# ---------------------------------------------------------------------- batches
def test_batch_skips_bad_files_reruns_and_overwrites(bundle, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    dicom(d / "a.dcm")
    Image.fromarray(image64(2, hi=250).astype(np.uint8)).save(d / "b.png")
    dicom(d / "ct.dcm", modality="CT", sop_class=CTImageStorage)
    _truncated_png(d)
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle) == 1
    err = capsys.readouterr().err
    assert len(error_lines(err, d / "ct.dcm")) == 1 and len(error_lines(err, d / "cut.png")) == 1
    assert "reconstructed 2, skipped 0 (already done), failed 2" in err
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    for name in ("a", "b"):
        assert_complete(out / name)
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    assert run_workflow(d, out, bundle) == 1
    assert "reconstructed 0, skipped 2 (already done), failed 2" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")} == before
    (d / "ct.dcm").unlink()
    (d / "cut.png").unlink()
    assert run_workflow(d, out, bundle, overwrite=True) == 0
    assert "reconstructed 2, skipped 0" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns != t for p, t in before.items())


def test_interrupted_batch_resumes(bundle, tmp_path, monkeypatch, capsys):
    """Ctrl-C while writing the 2nd output (one line, exit status 130), plus the leftover of a killed run: the rerun
    completes everything."""
    d = tmp_path / "in"
    d.mkdir()
    for k in range(2):
        dicom(d / f"c{k}.dcm", image64(k))
    out = tmp_path / "out"
    real_report, calls = reconstruct.save_reconstruction_report, []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # depth, mask and meshes of c1 are already in its temporary folder
            raise KeyboardInterrupt
        return real_report(*args, **kwargs)

    monkeypatch.setattr(reconstruct, "save_reconstruction_report", interrupt_second)
    assert run_workflow(d, out, bundle) == 130  # one line, not a traceback
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"{out}: interrupted; finished outputs are kept and unfinished ones removed: the same command again goes on "
        "from there"
    )
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["c0"]  # c1's partial folder was removed on the way out
    assert_complete(out / "c0")
    t0 = (out / "c0" / "result.json").stat().st_mtime_ns
    killed = out / ".c1.x1y2z3.partial"  # what SIGKILL leaves behind mid-write
    killed.mkdir()
    (killed / OUTPUT_MARKER).write_text(
        json.dumps({"kind": "reconstruction", "source": None})
    )  # atomic_dir's first write
    (killed / "depth.nii.gz").write_bytes(b"half")
    assert run_workflow(d, out, bundle) == 0
    assert "reconstructed 1, skipped 1" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["c0", "c1"]  # no *.partial leftovers
    for name in ("c0", "c1"):
        assert_complete(out / name)
    assert (out / "c0" / "result.json").stat().st_mtime_ns == t0


# ---------------------------------------------------------------------- the real CLI, privacy, no network
def _cli(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", *args]
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, encoding="utf-8", errors="replace", timeout=300, env=bundle_env()
    )


def _cli_args(bundle: dict, d: Path, out: Path, **overrides) -> list[str]:
    args = {**bundle, "input_dir": str(d), "output_dir": str(out), **overrides}
    return [x for k, v in args.items() for x in (f"--{k}", json.dumps(v) if isinstance(v, list) else str(v))]


def test_unreadable_and_special_files_fail_one_line_each(bundle, tmp_path, monkeypatch, capsys):
    """A folder and an extension-less DICOM without read permission, and FIFOs (one named like a PNG), beside a good
    PNG: each is one line and counts as failed (exit 1), the PNG is reconstructed, and nothing blocks on a FIFO.
    Read permission is taken away by refusing ``open`` and ``os.scandir`` of those paths (``chmod 000`` does not
    stop root); an alarm turns a run blocked on a FIFO into a failure."""
    import builtins
    import signal

    d = tmp_path / "in"
    (d / "PAT_B").mkdir(parents=True)
    Image.fromarray(image64(hi=250).astype(np.uint8)).save(d / "a_ok.png")
    Image.fromarray(image64(1, hi=250).astype(np.uint8)).save(d / "PAT_B" / "b.png")
    dicom(d / "IM0001")
    os.mkfifo(d / "b_pipe")
    os.mkfifo(d / "c_pipe.png")
    denied = {str(d / "PAT_B"), str(d / "IM0001")}
    real_open, real_scandir = builtins.open, os.scandir

    def refuse(path) -> None:
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(path))

    def guarded_open(file, *args, **kwargs):
        refuse(file)
        return real_open(file, *args, **kwargs)

    def guarded_scandir(path="."):
        refuse(path)
        return real_scandir(path)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "scandir", guarded_scandir)

    def blocked(signum, frame):
        pytest.fail(
            "the run blocked (on a FIFO?)"
        )  # not an OSError: no reader's error handling takes it for a bad file

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(120)
    try:
        status = run_workflow(d, tmp_path / "out", bundle)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert status == 1 and "reconstructed 1, skipped 0 (already done), failed 4" in err and "Traceback" not in err
    expected = {
        "PAT_B": "folder cannot be read (Permission denied): its radiographs were not looked for",
        "IM0001": "file cannot be read (Permission denied)",
        "b_pipe": "a named pipe (FIFO), not a radiograph file",
        "c_pipe.png": "a named pipe (FIFO), not a radiograph file",
    }
    for name, problem in expected.items():
        assert error_lines(err, d / name) == [f"{d / name}: {problem}"], err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_ok"]
    assert_complete(tmp_path / "out" / "a_ok")


def test_pacs_export_reports_every_file_and_skips_objects_without_an_image(bundle, tmp_path, capsys):
    """A study as PACS export it (IHE PDI layout, files without suffix, DICOMDIR, the IHE_PDI web viewer's JPEG
    previews beside it, which are not read): the AP DX, the same radiograph as
    a raw data set without preamble (it used to be skipped unseen), the DX exported twice, and a presentation state,
    key object selection, structured report and PDF of the study. Both radiographs are reconstructed (identically),
    each object without an image and the copy get one line, the summary counts them, and the run exits 0 (each
    object without an image used to be a failure, exit 1). A CT slice beside them still fails the run; a folder of
    objects without an image only is "no radiographs found", exit 1."""
    d = tmp_path / "in"
    series = d / "DICOM" / "ST000001" / "SE000001"
    series.mkdir(parents=True)
    ds = dicom(series / "IM000001")
    cr = dicom(tmp_path / "cr.dcm", modality="CR")
    save_raw(cr, series / "IM000002")
    (d / "EXPORT2").mkdir()
    (d / "EXPORT2" / "IM000001").write_bytes((series / "IM000001").read_bytes())  # the same instance again
    objects = d / "DICOM" / "ST000001" / "SE000002"
    objects.mkdir()
    kinds = {
        "PR": ("1.2.840.10008.5.1.4.1.1.11.1", "Grayscale Softcopy Presentation State Storage"),
        "KO": ("1.2.840.10008.5.1.4.1.1.88.59", "Key Object Selection Document Storage"),
        "SR": ("1.2.840.10008.5.1.4.1.1.88.11", "Basic Text SR Storage"),
        "DOC": ("1.2.840.10008.5.1.4.1.1.104.1", "Encapsulated PDF Storage"),
    }
    for i, (modality, (sop_class, _)) in enumerate(kinds.items()):
        make_non_image(objects / f"IM00000{i + 1}", sop_class, modality)
    make_non_image(d / "DICOMDIR", "1.2.840.10008.1.3.10", "")  # the media's index: not an input
    (d / "README.TXT").write_text("exported by PACS\n")
    (d / "IHE_PDI").mkdir()  # the media's web viewer: previews of the DICOM images, not inputs
    Image.fromarray((image64(1, 250.0)).astype(np.uint8)[:50]).save(d / "IHE_PDI" / "IM000001.JPG")
    (d / "IHE_PDI" / "INDEX.HTM").write_text("<html></html>\n")
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle) == 0
    err = capsys.readouterr().err
    summary = (
        "reconstructed 2, skipped 0 (already done), failed 0; not radiographs, skipped: 4 without an image (DOC 1, KO 1, "
        "PR 1, SR 1), 1 duplicate(s) (a DICOM instance stored twice)"
    )
    assert err.strip().splitlines()[-1] == summary, err
    for i, (modality, (_, kind)) in enumerate(kinds.items()):
        path = objects / f"IM00000{i + 1}"
        assert error_lines(err, path) == [f"{path}: no image: {kind} (modality {modality}), not a radiograph; skipped"]
    assert error_lines(err, d / "EXPORT2") == [
        f"{d / 'EXPORT2' / 'IM000001'}: the same DICOM instance (SOP Instance UID) as {series / 'IM000001'}; "
        "read once, skipped"
    ]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted({output_name(series / "IM000001", ds, d), output_name(series / "IM000002", cr, d)})
    assert len(names) == 2 and all(n.startswith("rg_") for n in names)  # 6-digit runs: PHI-like, hashed
    assert not any(token in n for n in names for token in PHI)
    depths = [nib.load(str(out / n / "depth.nii.gz")).get_fdata() for n in names]
    np.testing.assert_array_equal(depths[0], depths[1])  # the raw data set is read as the file with a preamble
    assert json.loads((out / names[0] / "result.json").read_text())["input_format"] == "dicom"
    assert run_workflow(d, out, bundle) == 0  # a rerun: both done, the rest reported again
    assert capsys.readouterr().err.strip().splitlines()[-1] == summary.replace(
        "reconstructed 2, skipped 0", "reconstructed 0, skipped 2"
    )
    make_dicom(series / "IM000003", image64().astype(np.uint16), modality="CT", sop_class=CTImageStorage)
    assert run_workflow(d, out, bundle) == 1
    err = capsys.readouterr().err
    assert f"{series / 'IM000003'}: modality CT is not a projection radiograph" in err and "failed 1;" in err
    only = tmp_path / "only_objects"
    only.mkdir()
    make_non_image(only / "SR1", kinds["SR"][0], "SR")
    assert run_workflow(only, tmp_path / "out2", bundle) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"{only}: no radiographs found"
    assert_no_output(tmp_path / "out2")


def test_exif_mirrored_radiograph_keeps_the_femurs_apart(bundle, tmp_path):
    """A radiograph stored mirrored with EXIF Orientation 2 (every viewer shows the right AP) gives the maps of the
    plain image, not of its mirror (the femurs swapped); result.json says where the left-right sense came from."""
    from scripts.io.radiograph_io import LATERALITY_ASSUMED

    d = tmp_path / "in"
    d.mkdir()
    shown = Image.fromarray(image64(hi=250).astype(np.uint8))
    shown.save(d / "plain.png")
    stored = shown.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    exif = stored.getexif()
    exif[0x0112] = 2
    stored.save(d / "mirrored.png", exif=exif)
    dicom(d / "stated.dcm", PatientOrientation=["L", "F"])
    assert run_workflow(d, tmp_path / "out", bundle) == 0
    plain, mirrored = (
        nib.load(str(tmp_path / "out" / name / "depth.nii.gz")).get_fdata() for name in ("plain", "mirrored")
    )
    assert plain[..., 2:].any()  # femur channels hold something to compare
    np.testing.assert_array_equal(mirrored, plain)
    results = {name: assert_complete(tmp_path / "out" / name) for name in ("plain", "mirrored", "stated")}
    assert results["plain"]["laterality"] == LATERALITY_ASSUMED
    assert results["mirrored"]["laterality"] == LATERALITY_ASSUMED + " (image as its EXIF Orientation 2 displays it)"
    assert results["stated"]["laterality"] == "DICOM PatientOrientation (0020,0020) L\\F"


def test_cli_bad_input_one_line_each(bundle, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    dicom(d / "ct.dcm", modality="CT", sop_class=CTImageStorage)
    dicom(d / "nosid.dcm", DistanceSourceToDetector=None)
    done = _cli(_cli_args({**bundle, "ssm_path": "''"}, d, tmp_path / "out"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert error_lines(done.stderr, d / "ct.dcm") == [
        f"{d / 'ct.dcm'}: modality CT is not a projection radiograph (accepted: DX, CR, RG, secondary capture)"
    ]
    assert error_lines(done.stderr, d / "nosid.dcm") == [
        f"{d / 'nosid.dcm'}: missing DistanceSourceToDetector (0018,1110); pass --sid_mm"
    ]
    assert_no_output(tmp_path / "out")


def test_no_patient_identifiers_in_names_json_or_logs(bundle, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    ds = dicom(d / "Doe_Jane_19650101.dcm")
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle) == 0
    (case,) = list(out.iterdir())
    assert case.name == "rg_" + hashlib.sha256(str(ds.SOPInstanceUID).encode()).hexdigest()[:12]
    texts = [p.name for p in out.rglob("*")] + [(case / "result.json").read_text(), *capsys.readouterr()]
    assert not [t for t in texts for phi in PHI if phi in t]


def test_runs_without_network(bundle, tmp_path, monkeypatch):
    """Nothing is fetched: any socket use fails the run."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    d = tmp_path / "in"
    d.mkdir()
    dicom(d / "a.dcm")
    assert run_workflow(d, tmp_path / "out", bundle) == 0
    assert_complete(tmp_path / "out" / "a")


# ---------------------------------------------------------------------- properties: DICOM header variants, geometry
@HYP
@given(
    signed=st.booleans(),
    spacing_values=st.sampled_from(["pair", "single", "strings"]),
    sid_text=st.sampled_from([1100.0, "1100.000", "1.1E3"]),
    multi_window=st.booleans(),
    cr=st.booleans(),
)
def test_dicom_header_variants(tmp_path_factory, signed, spacing_values, sid_text, multi_window, cr):
    """Signed pixels, spacing as one/two values or DS strings, SID as DS text, multi-valued windows, CR: same image,
    same geometry."""
    d = tmp_path_factory.mktemp("hdr")
    stored = np.round(image64(hi=2000.0)).astype(np.int32) - (1000 if signed else 0)
    spacing = {"pair": [6.25, 6.25], "single": 6.25, "strings": ["6.2500", "6.25"]}[spacing_values]
    tags = dict(DistanceSourceToDetector=sid_text, ImagerPixelSpacing=spacing, PixelRepresentation=int(signed))
    if multi_window:  # the first window is used
        tags.update(WindowCenter=[0.0 if signed else 1000.0, 50.0], WindowWidth=[4000.0, 10.0])
    make_dicom(d / "v.dcm", stored.astype(np.int16 if signed else np.uint16), modality="CR" if cr else "DX", **tags)
    img, geom, info = load_radiograph(d / "v.dcm", GEOM)
    assert geom == GEOM and info["native_geometry"]["sid_mm"] == pytest.approx(1100.0)
    assert info["native_geometry"]["pixel_spacing_mm"] == pytest.approx([6.25, 6.25])
    assert info["coverage"] == 1.0 and img.shape == stored.shape  # native == standard: the whole field, not resampled
    if multi_window:  # linear window, hand computed (DICOM C.11.2.1.2), up to the output range's scale and offset
        c, w = (0.0 if signed else 1000.0), 4000.0
        expected = (stored - (c - 0.5)) / (w - 1) + 0.5
        slope, offset = np.polyfit(expected.ravel(), img.ravel(), 1)
        assert slope > 0 and np.abs(img - (slope * expected + offset)).max() <= 1e-4 * np.ptp(img)
    else:
        np.testing.assert_array_equal(img, stored.astype(np.float32))


@HYP
@given(
    name=st.text("abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=8),
    pid=st.integers(10**5, 10**9),
    birth=st.dates(date(1900, 1, 1), date(2030, 12, 31)).map(lambda t: t.strftime("%Y%m%d")),
    layout=st.sampled_from(["{n}_{i}", "{n}", "{b}_hip", "xr_{i}", "{n}-{b}"]),
)
def test_output_names_never_carry_identifiers(tmp_path_factory, name, pid, birth, layout):
    """A file named after the patient gets the SOP-UID hash; names without identifiers are kept."""
    d = tmp_path_factory.mktemp("phi")
    ds = make_dicom(
        d / "x.dcm",
        np.round(image64()).astype(np.uint16),
        PatientName=f"{name}^Max",
        PatientID=str(pid),
        PatientBirthDate=birth,
    )
    stem = layout.format(n=name, i=pid, b=birth)
    out = output_name(d / f"{stem}.dcm", ds)
    assert out == "rg_" + hashlib.sha256(str(ds.SOPInstanceUID).encode()).hexdigest()[:12]
    if name not in "left_hip_ap":
        assert output_name(d / "left_hip_ap.dcm", ds) == "left_hip_ap"


@HYP
@given(rows=st.integers(64, 160), cols=st.integers(64, 160), pitch=st.floats(1.0, 8.0), sid=st.floats(900.0, 1300.0))
def test_coverage_of_any_detector(rows, cols, pitch, sid):
    """Fraction of the standard field covered by a centred detector of rows x cols pixels (any SID, pitch), by hand."""
    native = Geometry(sid_mm=sid, pixel_spacing_mm=(pitch, pitch), image_size=(cols, rows))
    coverage = field_of_view(native, GEOM).mean()
    # half extents at the standard detector plane (mm): the native field scaled by SID ratio
    half_u, half_v = cols * pitch / 2 * GEOM.sid_mm / sid, rows * pitch / 2 * GEOM.sid_mm / sid
    centres = (np.arange(64) - 31.5) * 6.25
    inside_u = (np.abs(centres) <= half_u).mean()
    inside_v = (np.abs(centres) <= half_v).mean()
    assert coverage == pytest.approx(inside_u * inside_v, abs=1.5 / 64)


# ---------------------------------------------------------------------- a user's files are sacred (data loss)
def _sample_folder(d: Path, name: str = "case_0000_p0") -> Path:
    """A simulator sample folder (image, geometry, ground truth) as the simulator writes it."""
    write_nifti(d / name / "image.nii.gz", image64())
    GEOM.save(d / name / "geometry.json")
    write_nifti(d / name / "depth.nii.gz", np.full((64, 64, 6), 950.0, np.float32))
    write_nifti(d / name / "mask.nii.gz", np.ones((64, 64, 3), np.uint8))
    return d / name


def test_output_dir_equal_to_input_dir_is_refused(bundle, tmp_path, capsys):
    """--output_dir = --input_dir with the simulator layout: one line, exit 1, the inputs intact (they were deleted)."""
    d = tmp_path / "sim"
    _sample_folder(d)
    before = tree(d)
    assert run_workflow(d, d, bundle) == 1
    err = capsys.readouterr().err
    assert f"{d}: the output folder is the input folder" in err and "Traceback" not in err
    assert tree(d) == before


def test_output_inside_input_is_never_read_back(bundle, tmp_path, capsys):
    """Outputs inside the input folder (their report.png, depth.nii.gz) are not inputs: a rerun skips, never grows."""
    d = tmp_path / "in"
    sample = _sample_folder(d)
    Image.fromarray(image64(2, hi=250).astype(np.uint8)).save(d / "b.png")
    out = d / "results"
    inputs = tree(sample) | {"b.png": (d / "b.png").read_bytes()}
    assert run_workflow(d, out, bundle) == 0
    assert "reconstructed 2, skipped 0 (already done), failed 0" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["b", "case_0000_p0"]
    assert run_workflow(d, out, bundle) == 0  # output folder named explicitly: skipped while scanning
    assert "reconstructed 0, skipped 2 (already done), failed 0" in capsys.readouterr().err
    assert run_workflow(d, tmp_path / "out2", bundle) == 0  # d/results holds results (marker): not read back either
    assert "reconstructed 2, skipped 0 (already done), failed 0" in capsys.readouterr().err
    assert tree(sample) | {"b.png": (d / "b.png").read_bytes()} == inputs


def test_user_folder_with_an_output_name_is_left_untouched(bundle, tmp_path, capsys):
    """OUT/notes/ of the user and an input notes.png: one line naming the folder, the folder intact, others done."""
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(image64(1, hi=250).astype(np.uint8)).save(d / "notes.png")
    Image.fromarray(image64(2, hi=250).astype(np.uint8)).save(d / "b.png")
    out = tmp_path / "out"
    (out / "notes" / "2025").mkdir(parents=True)
    (out / "notes" / "2025" / "thesis.txt").write_text("years of work")
    (out / "notes" / "result.json").write_text("{}")  # looks finished, is not ours
    before = tree(out / "notes")
    for overwrite in (False, True):
        assert run_workflow(d, out, bundle, overwrite=overwrite) == 1
        err = capsys.readouterr().err
        assert error_lines(err, out / "notes") == [
            f"{out / 'notes'}: exists and was not written by this bundle (no {OUTPUT_MARKER}); left "
            "untouched: move it or choose another output folder"
        ]
        assert "failed 1" in err and "Traceback" not in err
        assert tree(out / "notes") == before
    assert_complete(out / "b")


def test_inputs_with_one_name_get_their_own_outputs_and_clashes_are_errors(bundle, tmp_path, capsys):
    """PAT_A/hip.dcm and PAT_B/hip.dcm, 'hip a.png' and 'hip_a.png': four outputs, each from its input; hip.png
    beside hip.tif (one name): the second is an error, never a skip or an overwrite; another input's folder
    from an earlier run is never replaced, not even with --overwrite true."""
    d = tmp_path / "in"
    for k, patient in enumerate(("PAT_A", "PAT_B")):
        (d / patient).mkdir(parents=True)
        dicom(d / patient / "hip.dcm", image64(k))
    Image.fromarray(image64(2, hi=250).astype(np.uint8)).save(d / "hip a.png")
    Image.fromarray(image64(3, hi=250).astype(np.uint8)).save(d / "hip_a.png")
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle) == 0
    suffix = hashlib.sha256("hip a".encode()).hexdigest()[:6]
    assert sorted(p.name for p in out.iterdir()) == sorted(["PAT_A.hip", "PAT_B.hip", "hip_a", f"hip_a-{suffix}"])
    depth = {p.name: nib.load(str(p / "depth.nii.gz")).get_fdata() for p in out.iterdir()}
    assert len({v.tobytes() for v in depth.values()}) == 4  # four different results, none overwritten
    assert run_workflow(d, out, bundle) == 0 and "reconstructed 0, skipped 4" in capsys.readouterr().err
    # one name for two inputs in one run
    Image.fromarray(image64(4).astype(np.float32)).save(d / "hip.tif")
    Image.fromarray(image64(5, hi=250).astype(np.uint8)).save(d / "hip.png")
    assert run_workflow(d, out, bundle) == 1
    err = capsys.readouterr().err
    assert error_lines(err, d / "hip.tif") == [
        f"{d / 'hip.tif'}: its output name 'hip' is that of {d / 'hip.png'} too; rename one of them (nothing written for this one)"
    ]
    first = tree(out / "hip")
    # a later run whose hip.png is another image: the folder of the first is never replaced
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(image64(6, hi=250).astype(np.uint8)).save(other / "hip.png")
    for overwrite in (False, True):
        assert run_workflow(other, out, bundle, overwrite=overwrite) == 1
        assert f"{out / 'hip'}: holds the reconstruction of another input" in capsys.readouterr().err
        assert tree(out / "hip") == first


def test_a_moved_input_folder_finds_its_outputs(bundle, tmp_path, capsys):
    """A PNG's output records the file's content (SHA-256 of its bytes), not its path: after the input folder is moved
    (or mounted elsewhere) a rerun skips it as done (it was "another input", not even --overwrite true could redo it);
    a file changed in place after the move is another input (its result records the path it was read from; changed
    there, it is an earlier version of the same input: tests/test_runner.py). A result recorded under the file's path
    (bundle 0.10.8 and earlier) is still this input's: skipped, and redone with --overwrite true."""
    from scripts.io.files import OUTPUT_MARKER
    from scripts.io.radiograph_io import input_key

    first, moved, out = tmp_path / "in", tmp_path / "moved", tmp_path / "out"
    first.mkdir()
    Image.fromarray(image64(hi=250).astype(np.uint8)).save(first / "hip.png")
    assert run_workflow(first, out, bundle) == 0
    before = tree(out)
    first.rename(moved)
    assert run_workflow(moved, out, bundle) == 0 and "reconstructed 0, skipped 1" in capsys.readouterr().err
    assert tree(out) == before
    Image.fromarray(image64(1, hi=250).astype(np.uint8)).save(moved / "hip.png")  # changed in place
    assert run_workflow(moved, out, bundle) == 1
    assert f"{out / 'hip'}: holds the reconstruction of another input" in capsys.readouterr().err
    assert tree(out) == before
    marker = out / "hip" / OUTPUT_MARKER  # as bundle 0.10.8 recorded it: the input's resolved path
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "source": input_key(moved / "hip.png")}))
    assert run_workflow(moved, out, bundle) == 0 and "reconstructed 0, skipped 1" in capsys.readouterr().err
    assert run_workflow(moved, out, bundle, overwrite=True) == 0 and "reconstructed 1" in capsys.readouterr().err


def test_deploy_app_never_overwrites_or_deletes(tmp_path, capsys):
    """The Deploy app: two inputs with one file name get their own folders, one output name for two inputs of a
    folder is an error for the second; a user folder with an output name stays; a DICOM tag that does not parse
    is one line and the good files after it are still written."""
    from deploy.app.pipeline import run as deploy_run

    def infer(image, geometry, fov=None):  # a sphere whose radius encodes the input
        import trimesh

        return {
            "pelvis": trimesh.creation.icosphere(1, radius=5.0 + float(image.mean()) / 100.0).apply_translation(
                [0, 0, 900.0]
            )
        }

    d = tmp_path / "in"
    for k, patient in enumerate(("PAT_A", "PAT_B")):
        (d / patient).mkdir(parents=True)
        dicom(d / patient / "hip.dcm", image64(k, hi=1000.0 + 500 * k))
    _dcm_raw_tag("a_bad.dcm", "DistanceSourceToDetector")(d)
    Image.fromarray(image64(1, hi=250).astype(np.uint8)).save(d / "notes.png")
    Image.fromarray(image64(3, hi=250).astype(np.uint8)).save(d / "hip.png")
    Image.fromarray(image64(4).astype(np.float32)).save(d / "hip.tif")  # one output name with hip.png
    before = tree(d)
    assert deploy_run(d, d, infer, GEOM) == 1  # -o equal to -i: refused, inputs intact
    assert f"{d}: the output folder is the input folder" in capsys.readouterr().err and tree(d) == before
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "diary.txt").write_text("mine")
    assert deploy_run(d, out, infer, GEOM) == 1
    err = capsys.readouterr().err
    assert error_lines(err, d / "a_bad.dcm") == [
        f"{d / 'a_bad.dcm'}: DistanceSourceToDetector (0018,1110) does not parse as a number: 'not-a-num!'"
    ]
    assert error_lines(err, out / "notes") == [
        f"{out / 'notes'}: exists and was not written by this bundle (no {OUTPUT_MARKER}); left "
        "untouched: move it or choose another output folder"
    ]
    assert (out / "notes" / "diary.txt").read_text() == "mine" and sorted(
        p.name for p in (out / "notes").iterdir()
    ) == ["diary.txt"]
    assert error_lines(err, d / "hip.tif") == [
        f"{d / 'hip.tif'}: its output name 'hip' is that of {d / 'hip.png'} too; rename one of them (nothing written for this one)"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["PAT_A.hip", "PAT_B.hip", "hip", "notes"]
    spheres = {p: trimesh_radius(out / p / "pelvis.stl") for p in ("PAT_A.hip", "PAT_B.hip")}
    assert spheres["PAT_A.hip"] != pytest.approx(
        spheres["PAT_B.hip"], abs=0.01
    )  # each folder holds its own input's result


def test_user_files_added_to_a_result_are_never_deleted(bundle, tmp_path, capsys):
    """OUT/hip/my_notes.txt added to a finished result: a rerun skips it; --overwrite true (it used to delete the
    notes, exit 0) and a rerun after result.json was moved away (with a manual_seg/ folder added) refuse it with one
    line naming the folder and what was added, leave it byte for byte and do the other input; with the additions
    moved out the result is redone."""
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(image64(1, hi=250).astype(np.uint8)).save(d / "hip.jpg")
    Image.fromarray(image64(2, hi=250).astype(np.uint8)).save(d / "b.png")
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle) == 0
    (out / "hip" / "my_notes.txt").write_text("notes")
    before = tree(out / "hip")
    assert (
        run_workflow(d, out, bundle) == 0
        and "reconstructed 0, skipped 2 (already done), failed 0" in capsys.readouterr().err
    )
    assert tree(out / "hip") == before
    refused = (
        f"{out / 'hip'}: holds what this bundle did not write there ({{}}); left untouched: move that out of "
        "it or choose another output folder"
    )
    assert run_workflow(d, out, bundle, overwrite=True) == 1
    err = capsys.readouterr().err
    assert (
        error_lines(err, out / "hip") == [refused.format("my_notes.txt")]
        and "reconstructed 1, skipped 0 (already done), failed 1" in err
    )
    assert tree(out / "hip") == before
    (out / "hip" / "result.json").rename(tmp_path / "result.json")
    (out / "hip" / "manual_seg").mkdir()
    (out / "hip" / "manual_seg" / "pelvis.nii.gz").write_bytes(b"hours of work")
    before = tree(out / "hip")
    assert run_workflow(d, out, bundle) == 1
    err = capsys.readouterr().err
    assert error_lines(err, out / "hip") == [refused.format("manual_seg/, my_notes.txt")] and "Traceback" not in err
    assert tree(out / "hip") == before and sorted(p.name for p in out.iterdir()) == ["b", "hip"]
    (out / "hip" / "my_notes.txt").unlink()
    (out / "hip" / "manual_seg" / "pelvis.nii.gz").unlink()
    (out / "hip" / "manual_seg").rmdir()
    assert (
        run_workflow(d, out, bundle) == 0
        and "reconstructed 1, skipped 1 (already done), failed 0" in capsys.readouterr().err
    )
    assert_complete(out / "hip")


def _deploy_main(monkeypatch, tmp_path: Path, inferred: list | None = None):
    """``python deploy/app``'s ``main`` with a sphere per input (radius from the image mean) for the network, in the 64x64
    geometry; each image inferred is appended to ``inferred``."""
    import deploy.app.__main__ as app_main
    import trimesh

    def infer(image, geometry, fov=None):
        (inferred if inferred is not None else []).append(image)
        return {
            "pelvis": trimesh.creation.icosphere(1, radius=5.0 + float(image.mean()) / 100.0).apply_translation(
                [0, 0, 900.0]
            )
        }

    monkeypatch.setattr(app_main, "reconstruct_image_adapter", lambda model, device, ssm_path: infer)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # main's logging.basicConfig writes to this test's stderr
    GEOM.save(tmp_path / "geometry.json")
    return lambda d, out: app_main.main(
        ["app", "-i", str(d), "-o", str(out), "-m", "models/model.ts", "--geometry", str(tmp_path / "geometry.json")]
    )


def test_deploy_app_never_deletes_what_a_user_added_and_clears_its_leftovers(tmp_path, monkeypatch, capsys):
    """The Deploy app (``main``): a user's file added to DOUT/<case>/ is never deleted (it was, on every plain rerun):
    that case gets one line naming it before its inference, the other is redone; the ``.partial`` folder a killed run
    left is removed (as inference removes its own), a user's folder with a look-alike name stays."""
    inferred: list = []
    app = _deploy_main(monkeypatch, tmp_path, inferred)
    d = tmp_path / "in"
    d.mkdir()
    for k, name in enumerate(("a", "b")):
        dicom(d / f"{name}.dcm", image64(k))
    out = tmp_path / "out"
    assert app(d, out) == 0
    (out / "a" / "my_notes.txt").write_text("notes")
    killed = out / ".b.x1y2z3.partial"  # what SIGKILL leaves behind mid-write
    killed.mkdir()
    (killed / OUTPUT_MARKER).write_text(json.dumps({"kind": "deploy result", "source": None}))
    (killed / "pelvis.stl").write_bytes(b"half")
    (out / ".thesis.final.partial").mkdir()
    (out / ".thesis.final.partial" / "chapter.tex").write_text("mine")
    before, b_written = tree(out / "a"), (out / "b" / "result.json").stat().st_mtime_ns
    inferred.clear()
    assert app(d, out) == 1 and len(inferred) == 1  # b only
    err = capsys.readouterr().err
    assert error_lines(err, out / "a") == [
        f"{out / 'a'}: holds what this bundle did not write there (my_notes.txt); left untouched: move "
        "that out of it or choose another output folder"
    ]
    assert "Traceback" not in err and tree(out / "a") == before
    assert (out / "b" / "result.json").stat().st_mtime_ns != b_written
    assert sorted(p.name for p in out.iterdir()) == [".thesis.final.partial", "a", "b"]
    assert (out / ".thesis.final.partial" / "chapter.tex").read_text() == "mine"


def test_deploy_app_redoes_a_file_changed_in_place(tmp_path, monkeypatch, capsys):
    """The Deploy app, which redoes its cases on every run, redoes a PNG replaced under its name (a corrected
    re-export; it was refused as another input's result on every rerun), recording the new content; another folder's
    PNG of that name is still another input's: refused, its case left as it was."""
    inferred: list = []
    app = _deploy_main(monkeypatch, tmp_path, inferred)
    d, out = tmp_path / "in", tmp_path / "out"
    d.mkdir()
    Image.fromarray(image64(hi=250).astype(np.uint8)).save(d / "a.png")
    assert app(d, out) == 0
    Image.fromarray(image64(1, hi=250).astype(np.uint8)).save(d / "a.png")  # new content, same path
    inferred.clear()
    assert app(d, out) == 0 and len(inferred) == 1
    marker = json.loads((out / "a" / OUTPUT_MARKER).read_text())
    assert marker["source"] == hashlib.sha256((d / "a.png").read_bytes()).hexdigest()[:16]
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(image64(2, hi=250).astype(np.uint8)).save(other / "a.png")
    before = tree(out)
    capsys.readouterr()
    assert app(other, out) == 1
    assert error_lines(capsys.readouterr().err, f"{out / 'a'}: holds") == [
        f"{out / 'a'}: holds the deploy result of another input (two inputs with one output name, or the input "
        "changed since); left untouched: rename one input or choose another output folder"
    ]
    assert tree(out) == before


def test_output_dir_that_cannot_be_a_folder_is_refused_before_any_work(bundle, tmp_path, monkeypatch, capsys):
    """--output_dir naming a file, or a path under a file: one line, exit 1, no input reconstructed (every input used to be
    reconstructed and then fail with 'writing failed (FileExistsError ...)'); the file untouched. The Deploy app's -o alike.
    """
    d = tmp_path / "in"
    d.mkdir()
    dicom(d / "a.dcm")
    (tmp_path / "out.txt").write_text("mine")
    calls = []
    real = reconstruct.Reconstructor.predict_batch
    monkeypatch.setattr(reconstruct.Reconstructor, "predict_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    app = _deploy_main(monkeypatch, tmp_path)
    for out, line in (
        (tmp_path / "out.txt", "exists and is not a folder; {option} names the output folder"),
        (
            tmp_path / "out.txt" / "sub",
            f"cannot be created: {tmp_path / 'out.txt'} is a file, not a folder; {{option}} names the output folder",
        ),
    ):
        assert run_workflow(d, out, bundle) == 1
        assert capsys.readouterr().err.strip().splitlines() == [f"{out}: " + line.format(option="--output_dir")]
        assert app(d, out) == 1
        assert capsys.readouterr().err.strip().splitlines() == [f"{out}: " + line.format(option="-o")]
    assert not calls and (tmp_path / "out.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["geometry.json", "in", "out.txt"]


def test_output_paths_that_cannot_be_written_are_one_line(tmp_path, capsys):
    """to-dicom into a path under a file or onto a folder (--overwrite), simulate --out naming a file or a path under
    one: one line naming the output, exit 1, no traceback (they were PermissionError / FileExistsError /
    IsADirectoryError tracebacks); nothing written."""
    from scripts.data.simulate import main as simulate_main
    from scripts.io.radiograph_io import main as radiograph_io_main

    Image.fromarray(image64(1, hi=250).astype(np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "file.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    (tmp_path / "cohort" / "c0").mkdir(parents=True)
    (tmp_path / "cohort" / "c0" / "ct.nii.gz").write_bytes(b"never read")
    file_in_the_way = f"cannot be written: {tmp_path / 'file.txt'} is a file, not a folder"
    runs = [
        (
            radiograph_io_main,
            ["to-dicom", str(tmp_path / "a.png"), str(tmp_path / "file.txt" / "x.dcm"), "--pixel_spacing_mm", "6.25"],
            f"{tmp_path / 'file.txt' / 'x.dcm'}: {file_in_the_way}",
        ),
        (
            radiograph_io_main,
            [
                "to-dicom",
                str(tmp_path / "a.png"),
                str(tmp_path / "folder"),
                "--pixel_spacing_mm",
                "6.25",
                "--overwrite",
            ],
            f"{tmp_path / 'folder'}: is a folder; give the output file's path (a new file's name inside it)",
        ),
        (
            simulate_main,
            ["--cases", str(tmp_path / "cohort"), "--out", str(tmp_path / "file.txt")],
            f"{tmp_path / 'file.txt'}: exists and is not a folder; --out names the output folder",
        ),
        (
            simulate_main,
            ["--cases", str(tmp_path / "cohort"), "--out", str(tmp_path / "file.txt" / "sim")],
            f"{tmp_path / 'file.txt' / 'sim'}: cannot be created: {tmp_path / 'file.txt'} is a file, not "
            "a folder; --out names the output folder",
        ),
    ]
    for main, argv, line in runs:
        assert main(argv) == 1
        assert capsys.readouterr().err.strip().splitlines() == [line], argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "cohort", "file.txt", "folder"]
    assert (tmp_path / "file.txt").read_text() == "mine" and list((tmp_path / "folder").iterdir()) == []


def trimesh_radius(stl: Path) -> float:
    import trimesh

    mesh = trimesh.load(str(stl), force="mesh")
    return float(np.linalg.norm(mesh.vertices - mesh.vertices.mean(0), axis=1).mean())


# ---------------------------------------------------------------------- clear errors: options, names, formats
def _option_error(bundle: dict, tmp_path: Path, capsys, **overrides) -> str:
    """The one line a bad option gets from the in-process workflow (printed by the runner, or the error that
    ``scripts.io.files.one_line_excepthook`` prints for the CLI)."""
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    dicom(d / "a.dcm")
    try:
        code = run_workflow(d, tmp_path / "out", bundle, **overrides)
    except Exception as e:  # raised while MONAI parses the config: the CLI prints its InputFileError line
        bad = input_error_of(e)
        assert bad is not None, e
        return str(bad)
    assert code == 1
    return capsys.readouterr().err.strip().splitlines()[-1]


OPTION_CASES = {
    "--device cuda without CUDA": (
        {"device": "cuda"},
        "--device: cuda requested but CUDA is not available on this machine; use --device cpu",
    ),
    "--device that is no device": ({"device": "gpu0"}, "--device: not a torch device ('gpu0'"),
    "--overwrite maybe": ({"overwrite": "maybe"}, "--overwrite: must be true or false, got 'maybe'"),
    "--batch_size abc": ({"batch_size": "abc"}, "--batch_size: must be a whole number of at least 1, got 'abc'"),
    "--batch_size 0": ({"batch_size": 0}, "--batch_size: must be a whole number of at least 1, got 0"),
    "--writers abc": ({"writers": "abc"}, "--writers: must be a whole number of at least 0, got 'abc'"),
    "--num_workers -1": ({"num_workers": -1}, "--num_workers: must be a whole number of at least 0, got -1"),
    "--torchscript maybe": ({"torchscript": "maybe"}, "--torchscript: must be true or false, got 'maybe'"),
    "missing --standard_geometry": ({"standard_geometry": "{tmp}/nowhere.json"}, "{tmp}/nowhere.json: file not found"),
    "--standard_geometry not JSON": (
        {"standard_geometry": "{tmp}/geometry.txt"},
        "{tmp}/geometry.txt: unreadable JSON (",
    ),
    "--standard_geometry a JSON list": (
        {"standard_geometry": "{tmp}/list.json"},
        "{tmp}/list.json: not a geometry (a JSON object with keys",
    ),
    # Reconstructor settings: text was a traceback, a negative length or count used as given
    "--min_pixels abc": ({"min_pixels": "abc"}, "--min_pixels: must be a whole number of at least 1, got 'abc'"),
    "--min_pixels 0": ({"min_pixels": 0}, "--min_pixels: must be a whole number of at least 1, got 0"),
    "--max_depth_jump_mm -3": (
        {"max_depth_jump_mm": -3},
        "--max_depth_jump_mm: must be a positive number (mm), got -3",
    ),
    "--ssm_field_margin_mm -1": (
        {"ssm_field_margin_mm": -1},
        "--ssm_field_margin_mm: must be a number of at least 0 (mm), got -1",
    ),
    "--ssm_fit abc": ({"ssm_fit": "abc"}, "--ssm_fit: must be a mapping of names to values, e.g. "),
    "--ssm_fit with a misspelt key": (
        {"ssm_fit": {"max_point": 100}},
        "--ssm_fit: unknown argument(s) max_point; accepted: fit_scale, match_faces, max_points, max_sd,",
    ),
    "--plausibility#min_scor": ({"plausibility#min_scor": 0.5}, "--plausibility: unknown argument(s) min_scor;"),
    # thresholds: each input failed with a traceback's line, or (low > high) every prediction was called implausible
    "--plausibility#min_score abc": (
        {"plausibility#min_score": "abc"},
        "--plausibility#min_score: must be a number, got 'abc'",
    ),
    "--ssm_fit#max_points abc": (
        {"ssm_fit#max_points": "abc"},
        "--ssm_fit#max_points: must be a whole number of at least 10, got 'abc'",
    ),
    # ssm_fit ranges by meaning (scripts.reconstruction.ssm.fit_settings): each ran (0 iterations: no fit at all)
    "--ssm_fit#n_iterations 0": (
        {"ssm_fit#n_iterations": 0},
        "--ssm_fit#n_iterations: must be a whole number of at least 1, got 0",
    ),
    "--ssm_fit#n_rigid_iterations 40": (  # more than the 30 iterations: the shape never fitted
        {"ssm_fit#n_rigid_iterations": 40},
        "--ssm_fit#n_rigid_iterations: must be a whole number from 0 to 30, got 40",
    ),
    "--ssm_fit#max_points 5": (  # fewer than MIN_FIT_POINTS
        {"ssm_fit#max_points": 5},
        "--ssm_fit#max_points: must be a whole number of at least 10, got 5",
    ),
    "--ssm_fit#trim_fraction 1": (
        {"ssm_fit#trim_fraction": 1},
        "--ssm_fit#trim_fraction: must be a number from 0 to below 1 (the share of points dropped), got 1",
    ),
    "--ssm_fit#max_sd 0": ({"ssm_fit#max_sd": 0}, "--ssm_fit#max_sd: must be a positive number (SD), got 0"),
    "--ssm_fit#max_step_mm -1": (
        {"ssm_fit#max_step_mm": -1},
        "--ssm_fit#max_step_mm: must be a positive number (mm), got -1",
    ),
    "--ssm_fit#tol_mm nan": ({"ssm_fit#tol_mm": "nan"}, "--ssm_fit#tol_mm: must be a number of at least 0 (mm), got"),
    "--ssm_fit#fit_scale maybe": (
        {"ssm_fit": {"fit_scale": "maybe"}},
        "--ssm_fit#fit_scale: must be true or false, got",
    ),
    "--plausibility#min_side_fraction 2": (
        {"plausibility#min_side_fraction": 2},
        "--plausibility#min_side_fraction: must be a number from 0 to 1, got 2",
    ),
    "--plausibility#width_mm#pelvis high, low": (
        {"plausibility#width_mm#pelvis": [330, 80]},
        "--plausibility#width_mm#pelvis: must be two positive numbers (mm), low and high, got [330, 80]",
    ),
    "--plausibility#scale_range abc": (
        {"plausibility#scale_range": "abc"},
        "--plausibility#scale_range: must be a mapping of names to values",
    ),
    # network keys (scripts.model.run_record.network_settings): text was a traceback, --bones abc ran as bones a, b, c
    "--bones abc": ({"bones": "abc"}, "--bones: must be a list of distinct bone names, e.g. [pelvis, femur_left, "),
    "--bones twice": ({"bones": ["pelvis", "pelvis", "femur_right"]}, "--bones: must be a list of distinct bone names"),
    "--features abc": ({"features": "abc"}, "--features: must be six channel counts (BasicUNet's levels), got 'abc'"),
    "--features five levels": (
        {"features": [8, 16, 32, 64, 128]},
        "--features: must be six channel counts (BasicUNet's levels), got [8, 16, 32, 64, 128]",
    ),
    "--depth_prior_mm 950": ({"depth_prior_mm": [950]}, "--depth_prior_mm: must be two numbers, mean and scale (mm), "),
    "--centre_prior_mm abc": (
        {"centre_prior_mm": ["abc", 50]},
        "--centre_prior_mm: must be a positive number (mm), got 'abc'",
    ),
    "--fov_fill abc": ({"fov_fill": "abc"}, "--fov_fill: must be a number (normalised image value), got 'abc'"),
    "--ckpt_path ''": ({"ckpt_path": ""}, "--ckpt_path: must be a file or folder path, got ''"),
    "--ssm_path to no file": (
        {"ssm_path": "{tmp}/none"},
        "{tmp}/none: shape model file not found; --ssm_path '' (or null) reconstructs without completion",
    ),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_bad_option_one_line_before_any_output(case, bundle, tmp_path, capsys):
    overrides, needle = OPTION_CASES[case]
    if case.startswith("--device cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "geometry.txt").write_text("sid_mm: 1000")
    (tmp_path / "list.json").write_text("[1, 2]")
    overrides = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in overrides.items()}
    line = _option_error(bundle, tmp_path, capsys, **overrides)
    assert line.startswith(needle.format(tmp=tmp_path)) and "\n" not in line
    assert_no_output(tmp_path / "out")


def test_null_on_the_command_line_is_the_config_null(bundle, tmp_path):
    """The command line passes a config's ``null`` as the text 'null': --ssm_path null (the config's comment: no
    completion; it was 'null: shape model file not found'), --ssm_field_margin_mm null (the whole cone; a traceback),
    --shard null (all inputs) and the fill-ins --sid_mm / --pixel_spacing_mm null (none; refused) run as null does."""
    d = tmp_path / "in"
    d.mkdir()
    dicom(d / "a.dcm")
    nulls = {
        "ssm_path": "null",
        "ssm_field_margin_mm": "NULL",
        "shard": "none",
        "sid_mm": "null",
        "pixel_spacing_mm": "None",
    }
    assert run_workflow(d, tmp_path / "out", bundle, **nulls) == 0
    result = json.loads((tmp_path / "out" / "a" / "result.json").read_text())
    assert result["model"]["shape_model"] is None and result["options"]["ssm_field_margin_mm"] is None


@pytest.mark.parametrize("key", ["input_dir", "output_dir"])
@pytest.mark.parametrize("value", ["", True])
def test_an_empty_folder_option_is_one_line_not_the_working_folder(key, value, bundle, tmp_path, monkeypatch):
    """--output_dir '' wrote the results into the working folder and --input_dir '' read every image under it (the
    bundle's own figures, from its folder); an option left without its value (``--output_dir`` last: True) was a
    traceback. Each is one line naming the option; nothing is read or written."""
    d, cwd = tmp_path / "in", tmp_path / "cwd"
    d.mkdir()
    cwd.mkdir()
    dicom(d / "a.dcm")
    monkeypatch.chdir(cwd)
    with pytest.raises(Exception) as e:
        run_bundle("inference.yaml", **{**bundle, "input_dir": str(d), "output_dir": str(tmp_path / "out"), key: value})
    assert str(input_error_of(e.value)) == f"--{key}: must be a file or folder path, got {value!r}"
    assert list(cwd.iterdir()) == [] and not (tmp_path / "out").exists()


def test_cli_bad_option_one_line_no_traceback(bundle, tmp_path):
    """The real command line: --overwrite maybe (and --device cuda where there is no CUDA) is one line, exit 1."""
    d = tmp_path / "in"
    d.mkdir()
    dicom(d / "a.dcm")
    overrides = {"overwrite": "maybe"} if torch.cuda.is_available() else {"device": "cuda", "overwrite": "maybe"}
    done = _cli(_cli_args({**bundle, "ssm_path": "''", **overrides}, d, tmp_path / "out"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "--device: cuda requested" if "device" in overrides else "--overwrite: must be true or false"
    )
    assert_no_output(tmp_path / "out")


def test_file_names_that_are_not_utf8_are_reconstructed(bundle, tmp_path, capsys):
    """A file name in Latin-1 (``H\\xfcfte.png``, as an old Windows share gives it) is reconstructed into a folder
    of its own, as a UTF-8 name is (each was refused with ``'utf-8' codec can't encode character '\\udcfc'``,
    hiding what else was wrong with it: an empty one is refused as empty, the byte named as ``\\xe9``); a rerun skips
    it."""
    d = tmp_path / "in"
    d.mkdir()
    latin1, utf8 = (os.fsdecode(bytes(d) + b"/" + name) for name in (b"H\xfcfte.png", "H\u00fcfte_b.png".encode()))
    for path in (latin1, utf8):
        _png(d, Path(path).name, image64(hi=250).astype(np.uint8))
    _empty(Path(os.fsdecode(bytes(d) + b"/leer\xe9.png")))
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle) == 1
    err = capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted([output_name(latin1, root=d), output_name(utf8, root=d)])
    assert output_name(latin1, root=d).startswith("H_fte-") and output_name(latin1, root=d) != output_name(utf8, root=d)
    assert "reconstructed 2" in err and "failed 1" in err and "codec" not in err
    assert error_lines(err, "leer") == [f"{d}/leer\\xe9.png: empty file (0 bytes)"]  # the byte on disk, escaped
    assert run_workflow(d, out, bundle) == 1 and "skipped 2 (already done)" in capsys.readouterr().err


def test_a_file_name_with_control_characters_is_named_in_one_line(bundle, tmp_path, capsys):
    """Bad inputs named with a newline, a carriage return or a terminal escape (ESC [31m: red) are each refused in ONE
    line, the character written as its escape (a newline split the line in two; a carriage return let the progress
    bar write over it; an escape sequence coloured the terminal)."""
    d = tmp_path / "in"
    d.mkdir()
    for name in ("hip\nsecond.png", "hip\rback.png", "hip\x1b[31mred.png"):
        _empty(d / name)
    out = tmp_path / "out"
    assert run_workflow(d, out, bundle) == 1
    err = capsys.readouterr().err
    assert error_lines(err, "empty file") == [
        f"{d}/hip\\nsecond.png: empty file (0 bytes)",
        f"{d}/hip\\rback.png: empty file (0 bytes)",
        f"{d}/hip\\x1b[31mred.png: empty file (0 bytes)",
    ]
    assert "\x1b" not in err and "failed 3" in err
    assert_no_output(out)


def test_250_byte_file_name_is_reconstructed(bundle, tmp_path):
    """A 250-byte file name: the output name is cut to 120 characters plus a stable suffix (the temporary
    folder name no longer exceeds the 255-byte limit)."""
    d = tmp_path / "in"
    d.mkdir()
    long = "hip_" + "x" * 242 + ".png"
    assert len(long.encode()) == 250
    Image.fromarray(image64(hi=250).astype(np.uint8)).save(d / long)
    assert run_workflow(d, tmp_path / "out", bundle) == 0
    (case,) = list((tmp_path / "out").iterdir())
    assert len(case.name) == 120 and case.name.startswith("hip_xxx")
    assert case.name.endswith("-" + hashlib.sha256(long[:-4].encode()).hexdigest()[:6])
    assert_complete(case)


def test_jpeg_and_float_tiff_radiographs_are_read(bundle, tmp_path):
    """JPEG (grey, and grey saved as RGB) gives exactly what the 8-bit PNG of the same pixels gives; float64 and
    float16 TIFF give what the float32 TIFF gives; a JPEG Lossless DICOM (decoded by SimpleITK/GDCM) what the
    uncompressed DICOM gives."""
    d = tmp_path / "in"
    d.mkdir()
    g = image64(hi=250).astype(np.uint8)
    Image.fromarray(g).save(d / "ref.png")
    Image.fromarray(g).save(d / "grey.jpg", quality=100)
    jpeg_pixels = np.asarray(Image.open(d / "grey.jpg"))
    Image.fromarray(jpeg_pixels).save(d / "ref_jpeg.png")  # the same pixels, lossless
    Image.fromarray(np.stack([jpeg_pixels] * 3, -1)).save(d / "rgb.jpeg", quality=100, subsampling=0)
    f = np.round(image64(hi=3000.0)).astype(np.float64)
    for name, dtype in (("f64", np.float64), ("f32", np.float32), ("f16", np.float16)):
        tifffile_write(d / f"{name}.tif", f.astype(dtype))
    px = np.round(image64()).astype(np.uint16)
    ds = dicom(d / "plain.dcm", px, RescaleSlope=2.0, RescaleIntercept=-5.0)
    jpeg_lossless_copy(ds, px, d / "lossless.dcm", tmp_path)
    assert run_workflow(d, tmp_path / "out", bundle) == 0
    out = tmp_path / "out"
    depth = {p.name: nib.load(str(p / "depth.nii.gz")).get_fdata() for p in out.iterdir()}
    assert json.loads((out / "grey" / "result.json").read_text())["input_format"] == "jpeg"
    np.testing.assert_array_equal(depth["grey"], depth["ref_jpeg"])
    rgb, ref = (load_radiograph(d / n, GEOM)[0] for n in ("rgb.jpeg", "ref_jpeg.png"))
    assert (
        np.abs(rgb - ref).max() <= 3 and "rgb" in depth
    )  # a grey RGB JPEG: its channels' mean, within chroma rounding
    np.testing.assert_array_equal(depth["f64"], depth["f32"])
    assert np.isfinite(depth["f16"]).all()  # float16 rounds values above 2048: read, not refused
    np.testing.assert_array_equal(depth["lossless"], depth["plain"])


def tifffile_write(path: Path, array: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(str(path), array)


REAL_RADIOGRAPHS = (shared_data_dir() or Path("/nonexistent")) / "real_radiographs"


@pytest.mark.skipif(not REAL_RADIOGRAPHS.is_dir(), reason="../shared/data/real_radiographs not present")
def test_real_jpeg_radiographs_are_read(bundle, tmp_path):
    """The real radiographs are 331 x 331 JPEG without spacing: read (not 'not a DICOM file'), resampled with the pitch given."""
    (src,) = sorted(REAL_RADIOGRAPHS.glob("*.jpg"))[:1]
    img, geom, info = load_radiograph(src, GEOM, pixel_spacing_mm=400.0 / 331)
    assert info["format"] == "jpeg" and img.shape == (64, 64) and geom == GEOM and np.ptp(img) > 0
    assert info["coverage"] == pytest.approx(1.0, abs=0.02)


# the bundle's commands (module, its arguments) with a bad option: (the start of the one line, exit status); argparse's
# refusals exit 2 (config_flags' checks as argument types among them: path_argument, argument), checks after parsing
# exit 1. Run in an empty working folder, which stays empty.
COMMAND_OPTION_CASES = {
    "phantom --n 0": (
        "scripts.data.phantom",
        "--n 0 --out o",
        "--n: must be a whole number from 1 to 1000000, got '0'",
        2,
    ),
    "phantom --posterior_tissue_mm nan 40": (
        "scripts.data.phantom",
        "--n 1 --out o --posterior_tissue_mm nan 40",
        "--posterior_tissue_mm: needs 0 <= LEAN <= HEAVY <= 200 mm, got nan 40; see python -m scripts.phantom --help",
        2,
    ),
    "phantom --start 1e20": (  # a traceback from drawing 1e20 seeds
        "scripts.data.phantom",
        "--n 1 --out o --start 100000000000000000000",
        "--start: must be a whole number from 0 to 999999 with --n 1, got 100000000000000000000",
        2,
    ),
    "phantom --femur_variation 1e300": (  # a BoneOverlapError traceback after the output folder was made
        "scripts.data.phantom",
        "--n 1 --out o --femur_variation 1e300",
        "--femur_variation: must be at most 4.5 SD (its version draws reach +-2.5 x 8 degrees x S: beyond 90 degrees",
        2,
    ),
    "phantom --n abc": (
        "scripts.data.phantom",
        "--n abc --out o",
        "--n: must be a whole number from 1 to 1000000, got 'abc'",
        2,
    ),
    "phantom --out ''": ("scripts.data.phantom", "--n 1 --out ''", "--out: must be a file or folder path, got ''", 2),
    "phantom --out": ("scripts.data.phantom", "--n 1 --out", "--out: expected one argument", 2),
    "phantom --workers 0": (
        "scripts.data.phantom",
        "--n 1 --out o --workers 0",
        "--workers: must be a whole number of at least 1, got '0'",
        2,
    ),
    "phantom --spacing 0": (
        "scripts.data.phantom",
        "--n 1 --out o --spacing 0",
        "--spacing: must be a positive number (mm), got '0'",
        2,
    ),
    "phantom --spacing inf": (
        "scripts.data.phantom",
        "--n 1 --out o --spacing inf",
        "--spacing: must be a positive number (mm), got 'inf'",
        2,
    ),
    "phantom --spacing 0.01": (  # 2e6 GiB: it ran until the machine ran out of memory
        "scripts.data.phantom",
        "--n 1 --out o --spacing 0.01",
        "--spacing: 0.01 mm needs about 2e+06 GiB of memory per case",
        2,
    ),
    "phantom --start -1": (
        "scripts.data.phantom",
        "--n 1 --out o --start -1",
        "--start: must be a whole number of at least 0, got '-1'",
        2,
    ),
    "phantom --seed -1": (
        "scripts.data.phantom",
        "--n 1 --out o --seed -1",
        "--seed: must be a whole number of at least 0, got '-1'",
        2,
    ),
    "phantom --femur_variation nan": (
        "scripts.data.phantom",
        "--n 1 --out o --femur_variation nan",
        "--femur_variation: must be a number of at least 0 (SD), got 'nan'",
        2,
    ),
    "simulate --poses 0": (
        "scripts.data.simulate",
        "--cases c --out o --poses 0",
        "--poses: must be a whole number of at least 1, got '0'",
        2,
    ),
    "simulate --shard 2/2": (
        "scripts.data.simulate",
        "--cases c --out o --shard 2/2",
        "--shard: index must satisfy 0 <= i < n, got '2/2'; see python -m scripts.simulate --help",
        2,
    ),
    "simulate --workers 0": (
        "scripts.data.simulate",
        "--cases c --out o --workers 0",
        "--workers: must be a whole number of at least 1, got '0'",
        2,
    ),
    "simulate --seed abc": (
        "scripts.data.simulate",
        "--cases c --out o --seed abc",
        "--seed: must be a whole number of at least 0, got 'abc'",
        2,
    ),
    "simulate --out ''": ("scripts.data.simulate", "--cases c --out ''", "--out: must be a file or folder path", 2),
    "simulate --cases ''": ("scripts.data.simulate", "--cases '' --out o", "--cases: must be a file or folder path", 2),
    "simulate --ct ''": ("scripts.data.simulate", "--ct '' --labels l --out o", "--ct: must be a file or folder", 2),
    "simulate --config ''": ("scripts.data.simulate", "--cases c --out o --config ''", "--config: must be a file", 2),
    "simulate --split bogus": (
        "scripts.data.simulate",
        "--cases c --out o --split bogus",
        "--split: invalid choice",
        2,
    ),
    "ssm": ("scripts.reconstruction.ssm", "", "the following arguments are required: command", 2),
    "ssm build --variance nan": (
        "scripts.reconstruction.ssm",
        "build --cases c --out m.npz --variance nan",
        "--variance: must be a fraction in (0, 1], got nan; see python -m scripts.ssm build --help",
        2,
    ),
    "ssm build --cases ''": (
        "scripts.reconstruction.ssm",
        "build --cases '' --out m.npz",
        "--cases: must be a file or folder path, got ''; see python -m scripts.ssm build --help",
        2,
    ),
    "ssm build --datalist ''": (
        "scripts.reconstruction.ssm",
        "build --cases c --out m.npz --datalist ''",
        "--datalist: must be a file or folder path",
        2,
    ),
    "ssm build --template ''": (
        "scripts.reconstruction.ssm",
        "build --cases c --out m.npz --template ''",
        "--template: must be a file or folder path",
        2,
    ),
    "ssm meshes --out ''": (
        "scripts.reconstruction.ssm",
        "meshes --labels l --out ''",
        "--out: must be a file or folder path, got ''; see python -m scripts.ssm meshes --help",
        2,
    ),
    "ssm meshes --label-map ''": (
        "scripts.reconstruction.ssm",
        "meshes --labels l --out o --label-map ''",
        "--label-map: must be a file or folder path",
        2,
    ),
    "release": ("scripts.model.release", "", "give at least one file to release", 2),
    "release --model ''": (
        "scripts.model.release",
        "--ssm s.npz --model ''",
        "--model: must be a file or folder path",
        2,
    ),
    "release --model": ("scripts.model.release", "--model", "--model: expected one argument", 2),
    "release --model .": ("scripts.model.release", "--model .", ".: is a folder; give the file to release", 1),
    "export_onnx --ckpt ''": ("scripts.model.export_onnx", "--ckpt '' --out m.onnx", "--ckpt: must be a file or", 2),
    "export_onnx --out ''": ("scripts.model.export_onnx", "--ckpt c.pt --out ''", "--out: must be a file or", 2),
    "export_onnx --opset 0": ("scripts.model.export_onnx", "--ckpt c.pt --out m.onnx --opset 0", "--opset: must be", 1),
    "export_onnx --opset 99": (  # beyond torch.onnx's newest: it exported with warnings (17, below its torchlib's: 18)
        "scripts.model.export_onnx",
        "--ckpt c.pt --out m.onnx --opset 99",
        "--opset: must be a whole number from 18 to 23, got 99",
        1,
    ),
    "export_onnx --override image_size=0": (  # MONAI wrapped it: a 40-line traceback
        "scripts.model.export_onnx",
        "--ckpt c.pt --out m.onnx --override image_size=0",
        "--image_size: must be a whole number of at least 16 and a multiple of 16, got 0",
        1,
    ),
    "export_onnx --override =1": (  # a KeyError traceback
        "scripts.model.export_onnx",
        "--ckpt c.pt --out m.onnx --override =1",
        "--override: expected KEY=VALUE, got '=1'",
        2,
    ),
    "export_onnx --config_file README.md": (  # MONAI's 'unknown file input' traceback
        "scripts.model.export_onnx",
        f"--ckpt c.pt --out m.onnx --config_file {ROOT / 'README.md'}",
        f"{ROOT / 'README.md'}: unreadable bundle config (.yaml or .json: ValueError: unknown file input",
        1,
    ),
    "export_onnx --opset abc": (
        "scripts.model.export_onnx",
        "--ckpt c.pt --out m.onnx --opset abc",
        "--opset: invalid",
        2,
    ),
    "export_onnx --override abc": (
        "scripts.model.export_onnx",
        "--ckpt c.pt --out m.onnx --override abc",
        "--override: expected KEY=VALUE",
        2,
    ),
    "export_onnx --override bogus=1": (
        "scripts.model.export_onnx",
        "--ckpt models/model.pt --out m.onnx --override bogus=1",
        "--override: no such key in",
        1,
    ),
    "to-dicom --sid_mm abc": (
        "scripts.io.radiograph_io",
        "to-dicom h.png h.dcm --sid_mm abc",
        "--sid_mm: invalid float",
        2,
    ),
    "to-dicom --sid_mm 0": ("scripts.io.radiograph_io", "to-dicom h.png h.dcm --sid_mm 0", "--sid_mm: must be a", 1),
    "to-dicom --pixel_spacing_mm nan": (
        "scripts.io.radiograph_io",
        "to-dicom h.png h.dcm --pixel_spacing_mm nan",
        "--pixel_spacing_mm: must be a positive number",
        1,
    ),
    "to-dicom ''": (  # a positional is named as argparse names it (it was '--input')
        "scripts.io.radiograph_io",
        "to-dicom '' h.dcm",
        "input: must be a file or folder path, got ''; see python -m scripts.radiograph_io to-dicom --help",
        2,
    ),
    "to-dicom h.png ''": ("scripts.io.radiograph_io", "to-dicom h.png ''", "output: must be a file or folder path", 2),
    "to-dicom --standard_geometry ''": (
        "scripts.io.radiograph_io",
        "to-dicom h.png h.dcm --standard_geometry ''",
        "--standard_geometry: must be a file or folder path",
        2,
    ),
    "plot_training ''": ("scripts.model.plot_training", "'' p.png", "log_dir: must be a file or folder path", 2),
    "plot_training logs ''": ("scripts.model.plot_training", "logs ''", "output_png: must be a file or folder", 2),
    "deploy.stage ''": ("deploy.stage", "''", "out: must be a file or folder path, got ''", 2),
    "deploy.stage": ("deploy.stage", "", "the following arguments are required: out", 2),
    "demo --spacing 0": ("scripts.io.demo", "--spacing 0", "--spacing: must be a positive number (mm), got '0'", 2),
    "demo --spacing 0.01": ("scripts.io.demo", "--spacing 0.01", "--spacing: 0.01 mm needs about 2e+06 GiB", 2),
    "demo --seed -1": ("scripts.io.demo", "--seed -1", "--seed: must be a whole number of at least 0, got '-1'", 2),
    "demo --out ''": ("scripts.io.demo", "--out ''", "--out: must be a file or folder path, got ''", 2),
    "demo --device bogus": ("scripts.io.demo", "--device bogus", "--device: not a torch device", 1),
    "plot_training logs": (
        "scripts.model.plot_training",
        "logs",
        "the following arguments are required: output_png",
        2,
    ),
}


@pytest.mark.parametrize("case", list(COMMAND_OPTION_CASES))
def test_command_bad_option_one_line_nothing_written(case, tmp_path, monkeypatch, capsys):
    """Each command's bad option: one line naming it (no usage block, no traceback), exit 1 or 2, before any work:
    the working folder (where '' would write) stays empty."""
    module, argv, needle, status = COMMAND_OPTION_CASES[case]
    monkeypatch.chdir(tmp_path)
    main = __import__(module, fromlist=["main"]).main
    try:
        code = main(shlex.split(argv))
    except SystemExit as e:  # argparse
        code = e.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == status and len(lines) == 1 and lines[0].startswith(needle), lines
    assert not list(tmp_path.iterdir())
