"""Reading radiographs (simulator NIfTI, PNG/TIFF, DICOM DX/CR/secondary capture) into the standard geometry.

Every reader returns ``(image, geometry, info)``: ``image`` float32 (H, W) indexed ``[v, u]`` with bone
bright, ``geometry`` the :class:`scripts.geometry.Geometry` the image is sampled in, and ``info`` a
JSON-able dict without patient identifiers (format, native geometry, which tag or argument gave each
geometry value, coverage of the standard field by the input).

DICOM geometry (see docs/real_radiographs.md):

- detector pixel pitch: ImagerPixelSpacing (0018,1164), defined at the detector, is used as is, and so is a scanned
  film's NominalScannedPixelSpacing (0018,2010) (the film lies in the detector plane);
  otherwise PixelSpacing (0028,0030): when EstimatedRadiographicMagnificationFactor (0018,1114) is
  present, PixelSpacing is taken as calibrated to the object plane and pitch = PixelSpacing * factor;
  when PixelSpacingCalibrationType (0028,0A02) says it is calibrated but no factor is given, the
  factor is SID / SOD (DistanceSourceToDetector / DistanceSourceToPatient); uncalibrated
  PixelSpacing (CR plates, scanned film) is the detector pitch. Spacing tags are [row, column], i.e.
  (sv, su); anisotropic pixels are supported;
- SID: DistanceSourceToDetector (0018,1110);
- DistanceSourceToPatient (0018,1111) is reported in ``info`` (and used only as above);
- principal point: the image centre (no standard tag carries it).

Values missing from the header are taken from the ``sid_mm`` / ``pixel_spacing_mm`` arguments, which
only fill gaps (header values win); without them the file is refused, naming the missing tag. The arguments are
checked once, before any file is read (:func:`fill_ins`).

PNG/TIFF carry no geometry tags: the pitch is ``pixel_spacing_mm``, else the standard one when the size matches, else
the resolution the file states (PNG pHYs, TIFF XResolution/YResolution in inch or cm; not 72 or 96 dpi, screen
defaults) (:func:`_raster_geometry`).

Command line: turn a PNG/JPEG/TIFF (or simulator NIfTI) radiograph into a DICOM DX with the geometry tags,
e.g. to try the Deploy app::

    python -m scripts.radiograph_io to-dicom hip.png hip.dcm [--sid_mm 1100] [--pixel_spacing_mm 0.15]
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import stat
import struct
import sys
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from scipy import ndimage
from scripts.config_flags import as_positive, is_null, path_argument
from scripts.geometry import (
    IMAGE_SIZE_RANGE_PX,
    PIXEL_PITCH_RANGE_MM,
    SID_RANGE_MM,
    Geometry,
    GeometryError,
    check_magnification,
    check_room_range,
    magnification,
    read_geometry,
)
from scripts.io.dicom_export import write_radiograph_dicom
from scripts.io.files import (
    MAX_NAME_CHARS,
    InputFileError,
    OneLineParser,
    PathLike,
    exits_on_input_error,
    first_line,
    read_nifti,
    refuse_existing,
    sha256,
    shown_path,
    written_by_bundle,
)

MIN_SIZE_PX, MAX_SIZE_PX = IMAGE_SIZE_RANGE_PX
NIFTI_SUFFIXES = (".nii", ".nii.gz")
RASTER_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
# image formats not read here: listed as inputs and refused in one line (:func:`_check_format`), never passed over unsaid
OTHER_IMAGE_SUFFIXES = tuple(".bmp .dib .gif .webp .jp2 .j2k .jpx .jxl .heic .heif .avif .pgm .ppm .pnm".split())
JPEG_GREY_TOLERANCE = 12  # JPEG chroma rounding: R, G, B of a grey JPEG differ by a few levels
RADIOGRAPH_MODALITIES = ("DX", "CR", "RG")
SECONDARY_CAPTURE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
)
SECONDARY_CAPTURE_MODALITIES = ("OT", "")
# colour DICOM (3 samples; pydicom decodes each as RGB): read when its channels agree, a grey image stored as colour (a
# viewer's or a teleradiology export's secondary capture), as a grey RGB PNG is; real colour refused
COLOUR_PHOTOMETRIC = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")
LOSSY_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.91")  # JPEG, JPEG 2000
BURNED_IN_WARNING = (
    "BurnedInAnnotation (0028,0301) YES: the image may show identifying text; the radiograph panel is left "
    "out of report.png"
)
# A radiograph (quantum noise, soft tissue, bone) has hundreds of grey levels or more; one with fewer is a mask,
# drawing, thresholded or posterised image, on which the network still draws bones
MIN_GREY_LEVELS = 16
FEW_GREY_LEVELS_WARNING = (
    "only {levels} grey levels: a mask, drawing or thresholded image, not a radiograph (which has hundreds); do not "
    "trust these surfaces"
)
# the share of the radiograph's own pixels a VOI window may newly whiten at the bone end (_window_clipping)
MAX_WINDOW_CLIPPING = 0.05
FOR_PROCESSING_WARNING = (
    "PresentationIntentType (0008,0068) FOR PROCESSING: raw detector data, before the vendor's image processing; the model "
    "knows radiographs for presentation, so its masks and depths may not be trusted"
)
# BodyPartExamined (0018,0015) values (DICOM CID 4031 and common variants) that say the image shows
# another body part; anything else (PELVIS, HIP, ABDOMEN, local-language or empty) is accepted.
OTHER_BODY_PARTS = frozenset(
    "CHEST THORAX LUNG HEART RIB RIBS STERNUM CLAVICLE SCAPULA SHOULDER ARM HUMERUS ELBOW FOREARM WRIST HAND FINGER THUMB "
    "HEAD SKULL BRAIN FACE SINUS JAW MANDIBLE TMJ ORBIT NECK CSPINE TSPINE CERVICALSPINE THORACICSPINE KNEE PATELLA LEG "
    "LOWERLEG TIBIA FIBULA ANKLE FOOT TOE HEEL CALCANEUS BREAST".split()
)
PELVIS_BODY_PARTS = frozenset(
    {"PELVIS", "HIP", "HIPS"}
)  # a value naming one of these is accepted whatever else it names
# ViewPosition (0018,5101): only an AP view (or no value) is what the model knows.
AP_VIEW_POSITIONS = ("AP", "")
# Where the left-right sense of an input comes from (info "laterality", result.json): a DICOM PatientOrientation
# (0020,0020) states it, and a simulator radiograph's geometry.json; every other input is taken as displayed the
# radiological way.
LATERALITY_ASSUMED = "assumed: radiological display (columns toward the patient's left); not checked"
# a simulator radiograph (NIfTI + geometry.json): rendered in the standard AP pose from the CT's RAS frame
LATERALITY_SIMULATED = "geometry.json: simulated in the standard AP pose (columns toward the patient's left)"
# EXIF/TIFF Orientation (0x0112) 2..8: how a viewer turns the stored pixels [row, col] into the displayed image
# (ImageOps.exif_transpose's operations); 1 (or no tag) is the stored image itself.
EXIF_ORIENTATION_TAG = 0x0112
EXIF_ORIENTATIONS = {
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180 degrees
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.T,  # transposed
    6: lambda a: np.rot90(a, -1),  # rotated 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].T,  # transposed across the other diagonal
    8: lambda a: np.rot90(a, 1),  # rotated 90 degrees counter-clockwise
}
EXIF_TRANSPOSING = (5, 6, 7, 8)  # the orientations that swap the stored image's rows and columns
TIFF_SUBFILE_TYPE_TAG, TIFF_REDUCED = 254, 1  # NewSubfileType; its bit 0: a reduced-resolution copy of the image
# BitsPerSample; PlanarConfiguration 2: each sample in a plane of its own (Pillow decodes planes of over 8 bits wrongly)
TIFF_BITS_TAG, TIFF_PLANAR_TAG, TIFF_BY_PLANE = 258, 284, 2
EIGHT_OF_SIXTEEN_WARNING = (
    "16-bit colour or grey+alpha samples read as 8 bits (Pillow keeps their high byte); save the radiograph as 16-bit "
    "grayscale for its full precision"
)
# TIFF PhotometricInterpretation (262) 0, MinIsWhite: low values bright (DICOM's MONOCHROME1), turned over on reading
TIFF_PHOTOMETRIC_TAG, TIFF_MIN_IS_WHITE = 262, 0
# A PNG (pHYs chunk) or TIFF (XResolution, YResolution, ResolutionUnit 2 or 3) may state its physical resolution; for a
# scanned film or a digitiser's file it is the detector pitch (the film lies in the detector plane). Its kinds, as
# result.json geometry_source names them, and the units they count pixels per (mm).
RESOLUTION_SOURCES = ("PNG pHYs", "TIFF resolution tags")
RESOLUTION_UNITS_MM = {"inch": 25.4, "cm": 10.0, "m": 1000.0}
TIFF_RESOLUTION_TAGS = (282, 283, 296)  # XResolution, YResolution, ResolutionUnit
TIFF_RESOLUTION_UNITS = {2: "inch", 3: "cm"}  # ResolutionUnit (0x0128); 1 (no unit) or none: not a physical resolution
SCREEN_DPI = (72.0, 96.0)  # what many programs write whatever the image is: not a pitch
# geometry_source values that a --sid_mm / --pixel_spacing_mm argument would replace (a rerun compares the argument)
REPLACEABLE_SOURCES = ("argument ", "standard geometry", *RESOLUTION_SOURCES)
_DATE_LIKE = re.compile(r"(19|20)\d{2}[-_.]?[01]\d[-_.]?[0-3]\d")
_LONG_NUMBER = re.compile(r"\d{6,}")
_PHI_WORDS = re.compile(r"(patient|mrn|dob|birth|name|accession|ssn)", re.IGNORECASE)


# ---------------------------------------------------------------------- public API
def load_radiograph(
    path: PathLike,
    standard: Geometry,
    sid_mm: float | None = None,
    pixel_spacing_mm: float | Sequence[float] | None = None,
) -> tuple[np.ndarray, Geometry, dict]:
    """``(image, geometry, info)`` of :func:`load_radiograph_with_field` (the radiograph's own area left out)."""
    return load_radiograph_with_field(path, standard, sid_mm, pixel_spacing_mm)[:3]


def load_radiograph_with_field(
    path: PathLike,
    standard: Geometry,
    sid_mm: float | None = None,
    pixel_spacing_mm: float | Sequence[float] | None = None,
    header: Dataset | None = None,
) -> tuple[np.ndarray, Geometry, dict, np.ndarray]:
    """Read one radiograph and bring it into ``standard`` (simulator NIfTI keeps its own geometry).

    Args:
        path: image.nii(.gz) with geometry.json beside it, PNG/TIFF, or a DICOM file.
        standard: the bundle's standard geometry (SID mm, detector pitch mm, size, principal point).
        sid_mm: source-to-detector distance (mm) for inputs whose header lacks it.
        pixel_spacing_mm: detector pixel pitch (mm), one value or (su, sv), for inputs lacking it.
        header: the DICOM file's header as ``read_dicom(path, stop_before_pixels=True)`` read it (its pixel data are
            read from the file here), so the file is parsed once; None: read here.

    Returns:
        image float32 (H, W) bone bright, its Geometry, an info dict free of patient identifiers, and the
        radiograph's own area (H, W) float32 (1 inside; 0 on the padding of the standard field and on DICOM pixel
        padding, PixelPaddingValue (0028,0120) / PixelPaddingRangeLimit (0028,0121): pixels that are not image).
        PNG/JPEG/TIFF are read as a viewer shows them (EXIF/TIFF Orientation applied: info ``exif_orientation``);
        info ``laterality`` says where the left-right sense comes from (:data:`LATERALITY_ASSUMED` unless a DICOM
        PatientOrientation states it).

    Raises:
        InputFileError: not a readable file, unsupported file, non-radiograph, bad pixels, missing geometry; a bad
            ``sid_mm`` / ``pixel_spacing_mm`` names the option (:func:`fill_ins`).
    """
    sid_mm, spacing = fill_ins(sid_mm, pixel_spacing_mm)
    path = Path(path)
    _check_format(path)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES + RASTER_SUFFIXES):
        _check_readable_file(path)  # a DICOM's reader checks it (read_dicom), a given header was read that way
    if name.endswith(NIFTI_SUFFIXES):
        image, geometry, info = _load_nifti(path)
        return image, geometry, info, _nifti_field(path, geometry)
    padding = None
    if name.endswith(RASTER_SUFFIXES):
        image, orientation, resolution, warned = _read_raster(path)
        native, source = _raster_geometry(
            path, image.shape, standard, sid_mm, spacing, resolution, orientation
        )  # the displayed image's size and pitch
        info = {
            "format": _raster_format(name),
            "laterality": LATERALITY_ASSUMED,
            **({"warnings": warned} if warned else {}),
        }
        if orientation is not None:
            info["exif_orientation"] = orientation
            if orientation != 1:
                info["laterality"] += f" (image as its EXIF Orientation {orientation} displays it)"
    else:
        ds = read_dicom(path) if header is None else header
        native, source = _dicom_geometry(path, ds, sid_mm, spacing)  # from the header: refused before decoding pixels
        window_problem = _window_problem(path, ds)
        image, padding, clipping = _dicom_pixels(path, ds, window=window_problem is None)
        window_problem = window_problem or clipping
        shown = "\\".join(_patient_orientation(ds))  # L\\F (read_dicom refused any other)
        info = {
            "format": "dicom",
            "modality": str(ds.get("Modality", "")),
            "photometric": str(ds.PhotometricInterpretation),
            "laterality": f"DICOM PatientOrientation (0020,0020) {shown}" if shown else LATERALITY_ASSUMED,
        }
        if padding is not None:
            if padding.all():
                raise InputFileError(path, "every pixel is padding (PixelPaddingValue (0028,0120)): no image")
            info["padding_pixels"] = int(padding.sum())
            image = np.where(
                padding, image[~padding].min(), image
            )  # padding as the darkest image pixel, as the standard field's
        if "DistanceSourceToPatient" in ds:
            info["source_to_object_mm"] = _tag_number(path, ds, "DistanceSourceToPatient")
        warned = [window_problem] if window_problem else []
        if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
            info["burned_in_annotation"] = True
            warned.append(BURNED_IN_WARNING)
        if str(ds.get("PresentationIntentType", "") or "").strip().upper() == "FOR PROCESSING":
            warned.append(FOR_PROCESSING_WARNING)
        warned += _one_side(ds)
        if warned:
            info["warnings"] = warned
    _check_pixels(path, image)
    levels = grey_levels(image, MIN_GREY_LEVELS)
    if levels < MIN_GREY_LEVELS:
        info["warnings"] = [*info.get("warnings", []), FEW_GREY_LEVELS_WARNING.format(levels=levels)]
    resampled = resample_to(image, native, standard)
    field = field_of_view(native, standard)
    if padding is not None:  # the image's own pixels, resampled like the image
        field *= resample_to((~padding).astype(np.float32), native, standard) >= 0.5
    info.update(native_geometry=native.to_dict(), geometry_source=source, coverage=float(field.mean()))
    return resampled, standard, info, field


def resample_to(image: np.ndarray, native: Geometry, target: Geometry) -> np.ndarray:
    """Resample ``image`` (H, W) taken with ``native`` into ``target`` along the same rays.

    Both share the focal spot and central ray (crop/pad about the principal point, aspect kept).
    Bilinear sampling after a Gaussian anti-alias prefilter of sigma (ratio - 1) / 2 native pixels
    per axis when the target pixel is coarser. Outside the native detector (its outer pixel edges, as
    :func:`field_of_view`) the image minimum (air) is used; within half a pixel of them, the edge pixel (a target pixel
    whose ray falls a hair outside the outer pixel centres, e.g. for a SID 1e-10 mm off the target's, is not air).
    Returns the float32 image.
    """
    uv = target.sample_from(native)  # (H, W, 2) [u, v] in native pixels
    ratio = target.pixel_scale_in(native)  # target pixel footprint in native pixels, along u and v
    sigma = np.maximum((ratio[::-1] - 1.0) / 2.0, 0.0)  # (rows, cols)
    src = image.astype(np.float32, copy=False)
    if np.any(sigma > 0):
        src = ndimage.gaussian_filter(src, sigma=tuple(sigma), mode="nearest")
    out = ndimage.map_coordinates(src, [uv[..., 1], uv[..., 0]], order=1, mode="nearest")
    return np.where(field_of_view(native, target) > 0, out, float(image.min())).astype(np.float32)


def field_of_view(native: Geometry, target: Geometry) -> np.ndarray:
    """(H, W) float32 of ``target``: 1 where a pixel's ray meets the ``native`` detector (the radiograph's own area), 0
    on padding."""
    return native.in_field_of_view(target.detector_points(*target.pixel_grid())).numpy().astype(np.float32)


def _nifti_field(path: Path, geometry: Geometry) -> np.ndarray:
    """The radiograph's own area (H, W) float32 of a simulator NIfTI: the ``fov.nii.gz`` beside it, else all of it."""
    fov_file = path.parent / "fov.nii.gz"
    if not fov_file.exists():
        return np.ones((geometry.height, geometry.width), dtype=np.float32)
    fov = read_nifti(fov_file)
    if fov.shape != (geometry.height, geometry.width):
        raise InputFileError(
            fov_file, f"shape {fov.shape} differs from the image's (H, W)=({geometry.height}, {geometry.width})"
        )
    return (fov > 0.5).astype(np.float32)


def read_dicom(path: PathLike, stop_before_pixels: bool = False) -> Dataset:
    """Read a DICOM file, refusing corrupt or truncated files, non-radiograph modalities, multi-frame, colour and bad sizes.

    A file without the 128-byte preamble that starts with a data element of group 0002 or 0008 (a raw data set, as
    some PACS exports write them: :func:`_dicom_layout`) is read too, its transfer syntax, when no file meta
    gives it, the encoding pydicom found. ``stop_before_pixels``: pixel data (and other values over 4 KB) are not
    loaded, only located.

    Raises:
        InputFileError: the one line refusing it; :class:`NoImageError` for an object that holds no image.
    """
    path = Path(path)
    _check_readable_file(path)
    raw = _dicom_layout(path) == "raw"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on odd values; corruption is judged below
            # header-only reads still walk the whole file (large values deferred), so truncation is seen
            ds = pydicom.dcmread(str(path), defer_size="4 KB" if stop_before_pixels else None, force=raw)
    except InvalidDicomError:
        raise InputFileError(path, "not a DICOM file (no DICM preamble)") from None
    except Exception as e:  # pydicom raises many types on truncated/corrupt files
        raise InputFileError(path, f"corrupt or truncated DICOM ({type(e).__name__}: {e})") from None
    if raw and "TransferSyntaxUID" not in ds.file_meta:  # little endian: what _dicom_layout admits
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if ds.original_encoding[0] else ExplicitVRLittleEndian
    _check_dicom_header(path, ds)
    return ds


RESULT_KINDS = ("reconstruction", "deploy result")  # folders of results (scripts.io.files marker): never read as inputs


def iter_radiographs(
    input_path: PathLike, output_dir: PathLike | None = None, copies: dict[Path, Path] | None = None
) -> Iterator[Path]:
    """Yield the radiograph files under ``input_path`` (a file, or a folder searched recursively).

    A folder yields PNG/JPEG/TIFF files (and those of the image formats not read here, :data:`OTHER_IMAGE_SUFFIXES`:
    reading refuses each in one line, none is passed over unsaid),
    simulator ``image.nii(.gz)`` files (a folder holding geometry.json
    contributes only that image, not its depth/mask/preview), and DICOM files (recognised by the DICM
    preamble or, without one, by a first data element of group 0002 or 0008: :func:`_dicom_layout`; ``.dcm``
    files always, any case), one per SOP Instance UID (a file whose UID is blank is its own input; each further
    copy of an instance is added to ``copies``, mapped to the file yielded, so that it can be reported). Hidden
    files and DICOMDIR are skipped, and so is the IHE_PDI folder beside a DICOMDIR (the media's web viewer: HTML and
    JPEG previews of the DICOM images, IHE Portable Data for Imaging), and so are ``output_dir`` and every result
    folder this bundle wrote (:data:`RESULT_KINDS`), so outputs inside the input folder are never read back as
    inputs. What cannot be looked into (a folder or file without read permission, a FIFO, socket or device, a broken
    link) is yielded too, never opened here: reading it fails with its one line (:func:`_check_readable_file`) instead
    of it being skipped unseen.

    Raises:
        InputFileError: ``input_path`` missing, or ``output_dir`` is the input folder itself.
    """
    input_path = Path(input_path)
    if output_dir is not None and input_path.is_dir() and Path(output_dir).resolve() == input_path.resolve():
        raise InputFileError(
            output_dir, "the output folder is the input folder; choose another one (a folder inside it is fine)"
        )
    if input_path.exists() and not input_path.is_dir():
        yield input_path
        return
    if not input_path.is_dir():
        raise InputFileError(input_path, "input not found")
    skip = Path(output_dir).resolve() if output_dir is not None else None
    files: list[Path] = []
    for folder, dirs, names in os.walk(
        input_path, onerror=lambda e: files.append(Path(e.filename))
    ):  # unreadable folders too
        here = Path(folder)
        media = any(n.lower() == "dicomdir" for n in names)  # the root of DICOM media (a CD / PACS export)
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".")
            and not (media and d.lower() == "ihe_pdi")
            and (here / d).resolve() != skip
            and _not_results(here / d)
        ]
        files += [here / n for n in names]
    seen_uids: dict[str, Path] = {}
    for path in sorted(files):
        name = path.name.lower()
        if name.startswith(".") or name == "dicomdir":
            continue
        if (path.parent / "geometry.json").exists():
            if name in ("image.nii", "image.nii.gz"):
                yield path
            continue
        if name.endswith(NIFTI_SUFFIXES + RASTER_SUFFIXES + OTHER_IMAGE_SUFFIXES):
            yield path
        elif name.endswith(".dcm") or _dicom_layout(path) is not None:
            uid = _sop_instance_uid(path)
            if uid is not None and uid in seen_uids:
                if copies is not None:
                    copies[path] = seen_uids[uid]
                continue
            if uid is not None:
                seen_uids[uid] = path
            yield path


def _not_results(folder: Path) -> bool:
    marker = written_by_bundle(folder)
    return marker is None or marker["kind"] not in RESULT_KINDS


def output_name(path: PathLike, ds: Dataset | None = None, root: PathLike | None = None) -> str:
    """A file-name-safe output folder name, unique per input, without patient identifiers.

    The input's path relative to ``root`` (the input folder; simulator ``image.nii.gz``: its folder),
    suffix dropped, folders joined by ``.``, each part reduced to ``[A-Za-z0-9_-]``: ``PAT_A/hip.dcm`` ->
    ``PAT_A.hip``. When that reduction changed a part (``hip a.png`` -> ``hip_a``), or the name is longer
    than :data:`scripts.io.files.MAX_NAME_CHARS`, a stable suffix ``-<6 hex of SHA-256 of the relative
    path>`` keeps it apart from other inputs. PHI-like names become ``rg_<12 hex>``: a SHA-256 of the SOP
    Instance UID for DICOM, else of the relative path. A name is PHI-like when it holds a date, a run of
    6+ digits (MRN, accession, UID), words like "patient"/"dob", or any part of the DICOM
    PatientName/PatientID/PatientBirthDate.
    """
    path = Path(path)
    unit, stem = path, path.name
    for suffix in NIFTI_SUFFIXES[::-1] + RASTER_SUFFIXES + (".dcm", ".dicom"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if stem.lower() == "image" and path.name.lower().endswith(NIFTI_SUFFIXES):
        unit, stem = path.parent, path.parent.name
    folders: tuple[str, ...] = ()
    if root is not None:
        try:
            folders = unit.parent.resolve().relative_to(Path(root).resolve()).parts
        except ValueError:
            folders = ()
    raw = [*folders, stem]
    safe = [re.sub(r"[^A-Za-z0-9_-]+", "_", part).strip("_") for part in raw]
    name = ".".join(part for part in safe if part)
    digest = hashlib.sha256(_path_bytes("/".join(raw))).hexdigest()
    if not name or _phi_like(name, ds):
        uid = instance_uid(ds)
        key = uid if uid is not None else "/".join(raw)
        return "rg_" + hashlib.sha256(_path_bytes(key)).hexdigest()[:12]
    if safe != raw or len(name) > MAX_NAME_CHARS:
        name = f"{name[: MAX_NAME_CHARS - 7]}-{digest[:6]}"
    return name


def _path_bytes(text: str) -> bytes:
    """A path's text as the bytes hashed for output names and keys: UTF-8, where a file name's bytes that are not
    UTF-8 (a Latin-1 name from an old share: Python keeps them as surrogate escapes) are the bytes on disk."""
    return text.encode("utf-8", "surrogateescape")


def input_key(path: PathLike, ds: Dataset | None = None, by_content: bool = False) -> str:
    """A stable identifier of one input for the output marker, without identifiers: SHA-256 of the SOP Instance
    UID for DICOM (:func:`instance_uid`), else of the resolved file path (a rerun on the same input finds its own
    output), or with ``by_content`` the SHA-256 of the file's bytes (a moved or renamed input folder, or the same
    folder mounted elsewhere, still finds its outputs; a file changed in place is another input). 16 hex."""
    uid = instance_uid(ds)
    if uid is None and by_content:
        return sha256(path)[:16]
    key = f"dicom:{uid}" if uid is not None else f"file:{Path(path).resolve()}"
    return hashlib.sha256(_path_bytes(key)).hexdigest()[:16]


def error_line(path: PathLike, error: Exception) -> str:
    """The one line refusing input ``path`` for ``error``: an :class:`InputFileError` as it is (it names its file), a
    ValueError ``<path>: <message>``, anything else ``<path>: failed (<type>: <message>)``."""
    if isinstance(error, InputFileError):
        return str(error)
    shown = shown_path(path)
    return (
        f"{shown}: {error}" if isinstance(error, ValueError) else f"{shown}: failed ({type(error).__name__}: {error})"
    )


@dataclasses.dataclass
class RadiographFile:
    """One input of a run as :class:`RadiographInputs` read it: ``name`` its output folder (:func:`output_name`; "" when
    not even its header could be read), ``key`` its identifier in the output marker (:func:`input_key`; ``origin``, for
    a file keyed by its content, that of its path; ``changed``: its output folder holds the result of an earlier version
    of this file, recorded with this ``origin`` and other content: :meth:`RadiographInputs.read`), ``header``
    its DICOM header (None for NIfTI/PNG/TIFF); once loaded ``image``, ``geometry``, ``info`` and ``fov`` of
    :func:`load_radiograph_with_field` (``image`` None: not loaded); ``error``: the one line refusing it ("" if none);
    ``no_image``: for a DICOM object that holds no image (:class:`NoImageError`, ``error`` says so) its kind, the
    modality (e.g. ``SR``), else "".
    """

    path: Path
    name: str = ""
    key: str = ""
    header: Dataset | None = None
    image: np.ndarray | None = None
    geometry: Geometry | None = None
    info: dict = dataclasses.field(default_factory=dict)
    fov: np.ndarray | None = None
    error: str = ""
    no_image: str = ""
    origin: str | None = None
    changed: bool = False


class RadiographInputs:
    """The radiographs under ``input_path`` (not ``output_dir``'s results) with their output names, as the bundle's
    batch inference (:class:`scripts.reconstruction.runner.ReconstructionRunner`) and the Deploy app
    (``deploy/app/pipeline.py``) both list, read, name and refuse them. It lives here, beside :func:`iter_radiographs`,
    :func:`output_name`, :func:`input_key` and :func:`load_radiograph_with_field` which it combines, so that neither
    workflow owns the other's naming. :meth:`read` (picklable: the runner calls it in DataLoader workers) and
    :meth:`claim` (in the one process that writes) are separate steps; :meth:`items` does both in turn.
    ``sid_mm``, ``pixel_spacing_mm``: fill-ins for inputs lacking them (:func:`load_radiograph_with_field`), checked
    here, once for all inputs (:func:`fill_ins`: a bad one raises :class:`InputFileError` naming the option).
    """

    def __init__(
        self,
        input_path: PathLike,
        standard: Geometry,
        sid_mm: float | None = None,
        pixel_spacing_mm: float | Sequence[float] | None = None,
        output_dir: PathLike | None = None,
    ):
        self.input_path, self.output_dir = Path(input_path), output_dir
        self.root = self.input_path if self.input_path.is_dir() else None  # output names are relative to it
        self.standard = standard
        self.sid_mm, self.pixel_spacing_mm = fill_ins(sid_mm, pixel_spacing_mm)
        self._claimed: dict[str, Path] = {}  # output name -> the input that has it in this run
        self.copies: dict[Path, Path] = {}  # a further copy of a DICOM instance -> the input file read for it

    def paths(self) -> list[Path]:
        """The input files (:func:`iter_radiographs`; raises its :class:`InputFileError`); further copies of a DICOM
        instance left out are in :attr:`copies`."""
        self.copies.clear()
        return list(iter_radiographs(self.input_path, self.output_dir, self.copies))

    def copy_lines(self) -> list[str]:
        """One line per further copy of a DICOM instance that :meth:`paths` left out (not a failure)."""
        return [
            f"{shown_path(copy)}: the same DICOM instance (SOP Instance UID) as {shown_path(first)}; read once, skipped"
            for copy, first in self.copies.items()
        ]

    def read(self, path: PathLike, before_load: Callable[[RadiographFile], bool] | None = None) -> RadiographFile:
        """``path`` named from its header (DICOM read once, pixel data when loaded) and loaded into the standard
        geometry unless ``before_load(item)`` returns False (e.g. its finished output exists: not loaded). Never
        raises: a refusal, also one ``before_load`` raises (:class:`InputFileError`), becomes ``item.error`` (:func:`error_line`).
        """
        item = RadiographFile(Path(path))
        try:
            _check_format(item.path)
            if not item.path.name.lower().endswith(NIFTI_SUFFIXES + RASTER_SUFFIXES):
                item.header = read_dicom(item.path, stop_before_pixels=True)
            item.name = output_name(item.path, item.header, self.root)
            self._identify(item)
            if before_load is None or before_load(item):
                item.image, item.geometry, item.info, item.fov = load_radiograph_with_field(
                    item.path, self.standard, self.sid_mm, self.pixel_spacing_mm, item.header
                )
                if item.header is not None and "PixelData" in item.header:
                    del item.header.PixelData  # now in ``image``: the header holds no pixels, as before loading
        except Exception as e:  # anything else refuses this input only; KeyboardInterrupt still stops the run
            item.error = error_line(item.path, e)
            item.no_image = e.kind if isinstance(e, NoImageError) else ""
        return item

    def _identify(self, item: RadiographFile) -> None:
        """Set ``item.key``: its :func:`input_key` by content; the key of its path where the folder it would write holds
        a result recorded under it (bundle 0.10.8 and earlier keyed files by their path), so that such results are still
        this input's. A file's ``origin`` is the key of its resolved path (bundle 0.10.9 recorded none), so that a result
        recorded with it and other content is known as one of an earlier version of this file (``changed``), not as
        another input's. A file that cannot be read is refused here (:func:`_check_readable_file`), before its bytes are.
        """
        if instance_uid(item.header) is not None:
            item.key = input_key(item.path, item.header)
            return
        _check_readable_file(item.path)  # a FIFO would block the hash
        item.origin = input_key(item.path, item.header)
        marker = written_by_bundle(Path(self.output_dir) / item.name) if self.output_dir is not None else None
        recorded = (marker or {}).get("source")
        item.key = item.origin if recorded == item.origin else input_key(item.path, None, True)
        item.changed = recorded != item.key and (marker or {}).get("origin") == item.origin

    def claim(self, item: RadiographFile) -> bool:
        """Give ``item`` its output name in this run: False, with ``item.error`` set, when an earlier input of the run
        has that name (it keeps it; nothing is written for this one). An item without a name claims nothing."""
        other = self._claimed.setdefault(item.name, item.path) if item.name else item.path
        if other != item.path:
            item.error = (
                f"{shown_path(item.path)}: its output name {item.name!r} is that of {shown_path(other)} too; rename one of them "
                "(nothing written for this one)"
            )
        return other == item.path

    def items(
        self, paths: Sequence[Path], before_load: Callable[[RadiographFile], bool] | None = None
    ) -> Iterator[RadiographFile]:
        """Each of ``paths`` in turn, read (:meth:`read`) and its name claimed (:meth:`claim`)."""
        for path in paths:
            item = self.read(path, before_load)
            self.claim(item)
            yield item


# ---------------------------------------------------------------------- NIfTI
def _load_nifti(path: Path) -> tuple[np.ndarray, Geometry, dict]:
    try:
        shape = tuple(int(n) for n in nib.load(str(path)).shape)  # header only
    except Exception as e:  # nibabel raises many types for corrupt/truncated headers
        raise InputFileError(path, f"unreadable or truncated NIfTI ({type(e).__name__}: {e})") from None
    if sum(n > 1 for n in shape) > 2:
        raise InputFileError(path, f"3D volume (shape {shape}) given as a radiograph; one 2D projection image per file")
    _check_size(path, (shape + (1, 1))[:2])
    geometry_file = path.parent / "geometry.json"
    if not geometry_file.exists():
        raise InputFileError(path, f"missing {geometry_file.name} beside the NIfTI image (its geometry)")
    try:
        geometry = read_geometry(geometry_file, check_range=True)
    except InputFileError as e:  # named by the image, as every other refusal of this input
        raise InputFileError(path, f"{geometry_file.name}: {e.problem}") from None
    image = read_nifti(path)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.shape != (geometry.height, geometry.width):
        raise InputFileError(
            path,
            f"image shape {image.shape} does not match geometry.json size (H, W)=({geometry.height}, {geometry.width})",
        )
    _check_pixels(path, image)
    info = {
        "format": "nifti",
        "geometry_source": {"all": "geometry.json"},
        "coverage": 1.0,
        "laterality": LATERALITY_SIMULATED,
    }
    return image.astype(np.float32), geometry, info


# ---------------------------------------------------------------------- PNG / TIFF
def _raster_format(name: str) -> str:
    return "png" if name.endswith(".png") else "jpeg" if name.endswith((".jpg", ".jpeg")) else "tiff"


def _read_raster(path: Path) -> tuple[np.ndarray, int | None, StatedResolution | None, list[str]]:
    """Grayscale 8/16-bit PNG/JPEG/TIFF or float (16/32/64-bit) TIFF pixels as a viewer displays them (a MinIsWhite
    TIFF turned over: :data:`TIFF_MIN_IS_WHITE`), the EXIF/TIFF Orientation (0x0112) applied to get there
    (:data:`EXIF_ORIENTATIONS`; None: no valid tag) and the physical resolution the file states
    (:class:`StatedResolution`; None: none, or no unit; JPEG: never read); RGB(A) accepted only when R == G == B (JPEG:
    within :data:`JPEG_GREY_TOLERANCE` levels) and alpha opaque; and warnings (16-bit colour or grey+alpha samples,
    which Pillow reads as their high byte: :data:`EIGHT_OF_SIXTEEN_WARNING`)."""
    from PIL import UnidentifiedImageError

    if path.name.lower().endswith((".tif", ".tiff")) and not _pillow_reads(path):
        arr, orientation, resolution = _read_tiff(path)  # float64/float16 and other TIFFs Pillow does not know
        return *_displayed(arr, orientation), resolution, []
    try:
        with _open_image(path) as im:
            _check_size(path, im.size[::-1])  # before any pixel is decoded
            wide = [str(t.args) for t in im.tile if ";16" in str(t.args)] if im.mode in ("RGB", "RGBA", "LA") else []
            im.load()
            orientation = im.getexif().get(EXIF_ORIENTATION_TAG)
            resolution = _pillow_resolution(im)
            min_is_white = im.format == "TIFF" and im.tag_v2.get(TIFF_PHOTOMETRIC_TAG) == TIFF_MIN_IS_WHITE
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                types = []
                for k in range(frames):
                    im.seek(k)
                    types.append(int(im.tag_v2.get(TIFF_SUBFILE_TYPE_TAG, 0)) if im.format == "TIFF" else 0)
                im.seek(0)
                if not _one_image(types):
                    raise InputFileError(path, f"multi-page image ({frames} frames); one radiograph per file")
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA")
                mode = im.mode
            arr = np.asarray(im)
    except UnidentifiedImageError:
        raise InputFileError(path, _not_an_image(path)) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputFileError(path, f"unreadable or truncated image ({type(e).__name__}: {e})") from None
    if mode in ("RGB", "RGBA", "LA"):
        color = arr[..., :-1] if mode in ("RGBA", "LA") else arr
        if mode in ("RGBA", "LA") and not np.all(arr[..., -1] == arr[..., -1].max()):
            raise InputFileError(path, "image has a transparent alpha channel; give a grayscale radiograph")
        arr = _grey_of_colour(path, color, _raster_format(path.name.lower()) == "jpeg", mode)
    elif mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
        raise InputFileError(path, f"unsupported image mode {mode}; give an 8/16-bit grayscale radiograph")
    if arr.ndim != 2:
        raise InputFileError(path, f"expected a 2D grayscale image, got shape {arr.shape}")
    arr = arr.astype(np.float32)
    if min_is_white and mode != "L":  # Pillow turns 8-bit MinIsWhite over itself, not 16-bit or float
        arr = bone_bright(arr, "MONOCHROME1")
    return *_displayed(arr, orientation), resolution, [EIGHT_OF_SIXTEEN_WARNING] if wide else []


def _grey_of_colour(path: Path, colour: np.ndarray, lossy: bool, kind: str) -> np.ndarray:
    """The grey image (H, W) a colour one (H, W, 3) holds when its channels agree: R == G == B, or within
    :data:`JPEG_GREY_TOLERANCE` levels for a ``lossy`` file (JPEG chroma rounding; their mean then); any real colour
    refused, naming the ``kind`` (``RGB``)."""
    spread = int(np.abs(colour.astype(np.int32) - colour[..., :1]).max())
    if spread > (JPEG_GREY_TOLERANCE if lossy else 0):
        raise InputFileError(path, f"colour ({kind}) image; give a grayscale radiograph")
    return colour.mean(axis=-1) if spread else colour[..., 0]


def _displayed(arr: np.ndarray, orientation) -> tuple[np.ndarray, int | None]:
    """Stored pixels (H, W) turned as EXIF/TIFF Orientation ``orientation`` tells a viewer (a rotation by 90 degrees
    swaps H and W), and the orientation applied (None when absent or not one of 1..8, which viewers ignore)."""
    try:
        orientation = int(orientation)
    except (TypeError, ValueError):
        return arr, None
    if orientation == 1:
        return arr, 1
    if orientation not in EXIF_ORIENTATIONS:
        return arr, None
    return np.ascontiguousarray(EXIF_ORIENTATIONS[orientation](arr)), orientation


def _one_image(subfile_types: Sequence[int]) -> bool:
    """Whether a TIFF's pages, by their NewSubfileType (254) values in order, hold one image: a full-resolution first
    page and after it only reduced-resolution copies (bit 0: the previews some scanners add), which are not read."""
    return not subfile_types[0] & TIFF_REDUCED and all(t & TIFF_REDUCED for t in subfile_types[1:])


def _pillow_reads(path: Path) -> bool:
    """Whether Pillow reads the TIFF ``path`` right: it opens it, and its samples are not planes of over 8 bits
    (:data:`TIFF_BY_PLANE`; Pillow decodes each as 8-bit planes, an image of scrambled bytes without a word)."""
    from PIL import UnidentifiedImageError

    try:
        with _open_image(path) as im:
            if im.format != "TIFF":
                return True
            bits = im.tag_v2.get(TIFF_BITS_TAG, 8)
            bits = bits if isinstance(bits, tuple) else (bits,)
            return not (im.tag_v2.get(TIFF_PLANAR_TAG) == TIFF_BY_PLANE and len(bits) > 1 and max(bits) > 8)
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def _no_record(record: logging.LogRecord) -> bool:
    return False


_PILLOW_LIMIT = threading.Lock()  # Image.MAX_IMAGE_PIXELS is Pillow's process-wide setting


def _open_image(path: Path):
    """``PIL.Image.open(path)`` (header only, lazily decoded) without Pillow's decompression-bomb limit, which refuses an
    image past 179 M pixels as a DecompressionBombError without its size and warns past 89 M in two lines of a Python
    warning: the caller checks the size (:func:`_check_size`, at most 8000 px a side, 64 M pixels) before any pixel is
    decoded, and refuses it in one line saying how large it is."""
    from PIL import Image

    with _PILLOW_LIMIT:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _not_an_image(path: Path) -> str:
    """Why Pillow identified no image in a file named as one: what the file holds when that can be told."""
    if _dicom_layout(path) is not None:
        return f"a DICOM file named {path.suffix}: rename it .dcm to read it as DICOM"
    return f"not a {_raster_format(path.name.lower()).upper()} image: Pillow finds no image format it reads in the file"


def _check_format(path: Path) -> None:
    """Refuse a file of an image format not read here (:data:`OTHER_IMAGE_SUFFIXES`), naming what is read."""
    if path.name.lower().endswith(OTHER_IMAGE_SUFFIXES):
        raise InputFileError(
            path,
            f"{path.suffix.lstrip('.').upper()} image: a format not read here; save the radiograph as PNG (16-bit "
            "grayscale for its full precision), TIFF, JPEG or DICOM",
        )


def _read_tiff(path: Path) -> tuple[np.ndarray, int | None, StatedResolution | None]:
    """A one-page grayscale TIFF with tifffile (float16/float64 and others Pillow does not read), stored pixels, its
    Orientation (0x0112) tag value (None: no tag) and its stated resolution (:func:`_tiff_resolution`)."""
    import tifffile

    log = logging.getLogger("tifffile")  # its warnings on a corrupt file would come before the line refusing it
    log.addFilter(_no_record)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise InputFileError(path, "TIFF without an image (no pages): a truncated or unfinished file")
            if len(tif.pages) > 1 and not _one_image([int(p.subfiletype) for p in tif.pages]):
                raise InputFileError(path, f"multi-page image ({len(tif.pages)} frames); one radiograph per file")
            page = tif.pages[0]
            if page.ndim != 2:
                planes = ", stored by plane" if page.planarconfig == TIFF_BY_PLANE else ""
                raise InputFileError(
                    path,
                    f"colour or multi-sample TIFF ({page.samplesperpixel} samples/pixel, {page.bitspersample}-bit"
                    f"{planes}); give a grayscale radiograph",
                )
            _check_size(path, page.shape)
            arr = page.asarray()
            tag = page.tags.get(EXIF_ORIENTATION_TAG)
            orientation = None if tag is None else tag.value
            min_is_white = page.photometric == TIFF_MIN_IS_WHITE
            resolution = _tiff_resolution(
                *(
                    page.tags[k].value if k in page.tags else None
                    for k in ("XResolution", "YResolution", "ResolutionUnit")
                )
            )
    except InputFileError:
        raise
    except Exception as e:  # tifffile raises many types for corrupt files and unsupported compressions
        raise InputFileError(path, f"unreadable or truncated image ({type(e).__name__}: {e})") from None
    finally:
        log.removeFilter(_no_record)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputFileError(path, f"unsupported pixel type {arr.dtype}; give a grayscale radiograph")
    arr = arr.astype(np.float32)
    return (bone_bright(arr, "MONOCHROME1") if min_is_white else arr), orientation, resolution


@dataclasses.dataclass(frozen=True)
class StatedResolution:
    """The physical resolution a PNG or TIFF file states: ``density`` pixels per ``unit`` (a key of
    :data:`RESOLUTION_UNITS_MM`) along the stored image's columns (x) and rows (y); ``kind`` one of
    :data:`RESOLUTION_SOURCES`. ``str()``: what the file holds, e.g. ``TIFF resolution tags (600 dpi)``."""

    kind: str
    density: tuple[float, float]
    unit: str

    @property
    def dpi(self) -> tuple[float, float]:
        """Pixels per inch (x, y)."""
        return tuple(d * 25.4 / RESOLUTION_UNITS_MM[self.unit] for d in self.density)

    @property
    def screen_default(self) -> bool:
        """Either direction at 72 or 96 dpi (:data:`SCREEN_DPI`), within half a dot."""
        return any(abs(d - s) < 0.5 for d in self.dpi for s in SCREEN_DPI)

    def pitch_mm(self, orientation: int | None) -> tuple[float, float]:
        """(su, sv) mm of the displayed image (EXIF/TIFF ``orientation`` applied: 5-8 swap the stored directions); a
        density that is not positive gives an infinite pitch."""
        su, sv = (RESOLUTION_UNITS_MM[self.unit] / d if d > 0 else float("inf") for d in self.density)
        return (sv, su) if orientation in EXIF_TRANSPOSING else (su, sv)

    def __str__(self) -> str:
        def pair(values, fmt):
            x, y = (format(v, fmt) for v in values)
            return x if x == y else f"{x} x {y}"

        if self.unit == "inch":
            return f"{self.kind} ({pair(self.density, 'g')} dpi)"
        return f"{self.kind} ({pair(self.density, 'g')} pixels/{self.unit} = {pair(self.dpi, '.4g')} dpi)"


def _pillow_resolution(im) -> StatedResolution | None:
    """The resolution a PNG's pHYs chunk (in pixels per metre: Pillow's ``dpi``, which it sets for no other unit) or a
    TIFF's tags (:func:`_tiff_resolution`) state; None for other formats (a JPEG's density is not read: a JPEG is more
    often a photograph or a re-saved copy than a scan)."""
    if im.format == "PNG" and "dpi" in im.info:
        return StatedResolution("PNG pHYs", tuple(float(round(d / 0.0254)) for d in im.info["dpi"]), "m")
    if im.format == "TIFF":
        return _tiff_resolution(*(im.tag_v2.get(tag) for tag in TIFF_RESOLUTION_TAGS))
    return None


def _tiff_resolution(x, y, unit) -> StatedResolution | None:
    """XResolution, YResolution (rationals: Pillow's, or tifffile's (numerator, denominator)) and ResolutionUnit as a
    :class:`StatedResolution`; None unless both are given and the unit is stated as inch or centimetre (a missing
    ResolutionUnit is not taken as the TIFF default, inch: the file does not say it)."""
    if x is None or y is None or unit is None or int(unit) not in TIFF_RESOLUTION_UNITS:
        return None

    def number(v) -> float:
        if isinstance(v, tuple):
            return v[0] / v[1] if v[1] else float("nan")
        return float(v)

    return StatedResolution("TIFF resolution tags", (number(x), number(y)), TIFF_RESOLUTION_UNITS[int(unit)])


def _resolution_pitch(
    resolution: StatedResolution | None, orientation: int | None, size: tuple[int, int]
) -> tuple[tuple[float, float] | None, str]:
    """The displayed image's pitch (su, sv) mm from the file's stated ``resolution`` when the geometry accepts it for
    an image of ``size`` (W, H) px (pitch and detector field: :meth:`Geometry.check_radiography_range`), else None; and
    why not ("" when it is used): no resolution, a screen default, or a pitch the geometry refuses."""
    if resolution is None:
        return None, "the file has no pixel spacing"
    if resolution.screen_default:
        return None, f"the resolution in the file's {resolution} is a screen default, not a detector pitch"
    pitch = resolution.pitch_mm(orientation)
    try:  # the SID does not bear on pitch and field: the range's own is used
        Geometry(sid_mm=SID_RANGE_MM[0], pixel_spacing_mm=pitch, image_size=size).check_radiography_range()
    except GeometryError as e:
        return None, f"the pitch from the file's {resolution} is refused ({e})"
    return pitch, ""


def _raster_geometry(
    path: Path,
    shape: tuple[int, int],
    standard: Geometry,
    sid_mm: float | None,
    spacing: tuple[float, float] | None,
    resolution: StatedResolution | None = None,
    orientation: int | None = None,
) -> tuple[Geometry, dict]:
    """PNG/TIFF carry no geometry tags. The pitch: the given ``spacing`` (the argument wins), else the standard one when
    the size matches (an image made for this bundle; a resized copy often keeps its original's resolution), else the one
    the file's stated ``resolution`` gives (:func:`_resolution_pitch`); the SID: the given one, else the standard one.
    A usable stated resolution that is not used is named in the source. ``shape`` and the pitch (su, sv) are the
    displayed image's (EXIF/TIFF ``orientation`` applied)."""
    h, w = shape
    stated, why_not = _resolution_pitch(resolution, orientation, (w, h))
    unused = f"the file's {resolution} not used" if stated is not None else ""
    if spacing is not None:
        spacing_source = "argument pixel_spacing_mm" + (f" ({unused})" if unused else "")
    elif (w, h) == standard.image_size:
        spacing = standard.pixel_spacing_mm
        spacing_source = "standard geometry (size matches" + (f"; {unused})" if unused else ")")
    elif stated is not None:
        spacing, spacing_source = stated, str(resolution)
    else:
        raise InputFileError(
            path,
            f"size {w}x{h} differs from the standard geometry {standard.width}x{standard.height} and {why_not}; "
            "pass --pixel_spacing_mm (detector pitch, mm) to resample",
        )
    sid, sid_source = (sid_mm, "argument sid_mm") if sid_mm is not None else (standard.sid_mm, "standard geometry")
    source = {"sid_mm": sid_source, "pixel_spacing_mm": spacing_source}
    return _geometry(path, sid, spacing, (w, h), source), source


# ---------------------------------------------------------------------- DICOM
class NoImageError(InputFileError):
    """A DICOM object that holds no image: no pixel data and a SOP Class that is not an Image Storage class (a
    presentation state, key object selection, structured report, encapsulated PDF, raw data, waveform). Its line
    names the kind; the batch workflow reports it as skipped, not failed (docs/robustness.md). ``kind``: its modality
    (e.g. ``SR``), else its SOP Class keyword (an attribute: it pickles with the error's ``__dict__``)."""

    kind: str = ""


def _holds_no_image(ds: Dataset, sop_class: str) -> bool:
    """True for a dataset without pixel data whose SOP Class is a known class other than an Image Storage one, and for a
    segmentation (SEG: its pixel data are labels drawn on an image, e.g. an earlier AI result in the study's export)."""
    keyword = UID(sop_class).keyword if sop_class else ""
    pixels = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    no_pixels = "ImageStorage" not in keyword and not any(k in ds for k in pixels)
    return bool(keyword) and (no_pixels or keyword.endswith("SegmentationStorage"))


def _check_dicom_header(path: Path, ds: Dataset) -> None:
    modality = str(ds.get("Modality", "")).upper()
    sop_class = str(ds.get("SOPClassUID", ""))
    is_sc = sop_class in SECONDARY_CAPTURE_CLASSES
    if len(ds) == 0:
        raise InputFileError(path, "corrupt or truncated DICOM (no readable data elements)")
    if _holds_no_image(ds, sop_class):
        error = NoImageError(
            path, f"no image: {UID(sop_class).name} (modality {modality or 'missing'}), not a radiograph; skipped"
        )
        error.kind = modality or UID(sop_class).keyword
        raise error
    if "PixelData" not in ds and (not modality or modality in RADIOGRAPH_MODALITIES or is_sc):
        raise InputFileError(path, "corrupt or truncated DICOM (no pixel data (7FE0,0010))")
    if modality not in RADIOGRAPH_MODALITIES and not (is_sc and modality in SECONDARY_CAPTURE_MODALITIES):
        raise InputFileError(
            path,
            f"modality {modality or 'missing'} is not a projection radiograph (accepted: DX, CR, RG, secondary capture)",
        )
    if "Rows" not in ds or "Columns" not in ds:
        raise InputFileError(path, "no image (Rows/Columns missing)")
    _check_size(path, (int(ds.Rows), int(ds.Columns)))
    frames = int(_tag_number(path, ds, "NumberOfFrames")) if _present(ds, "NumberOfFrames") else 1
    if frames > 1:
        raise InputFileError(path, f"multi-frame / volume DICOM ({frames} frames); one 2D radiograph per file")
    samples = int(_tag_number(path, ds, "SamplesPerPixel")) if _present(ds, "SamplesPerPixel") else 1
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if (samples, photometric) not in [(1, "MONOCHROME1"), (1, "MONOCHROME2"), *((3, p) for p in COLOUR_PHOTOMETRIC)]:
        raise InputFileError(
            path,
            f"colour or unsupported photometric interpretation ({photometric}, {samples} samples/pixel); need "
            "MONOCHROME1/2 (or a grey image stored as RGB)",
        )
    _transfer_syntax(path, ds)
    _check_pixel_data_length(path, ds, frames, samples)
    _check_view(path, ds)


def _transfer_syntax(path: Path, ds: Dataset) -> UID | None:
    """The file's TransferSyntaxUID (0002,0010), None without one; one pydicom does not know as a transfer syntax (a
    newer one, e.g. JPEG XL, or a private one) refused: its pixel data cannot be decoded here."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and not syntax.is_transfer_syntax:
        raise InputFileError(
            path,
            f"TransferSyntaxUID (0002,0010) {str(syntax)[:64]} is no transfer syntax pydicom {pydicom.__version__} knows "
            "(a newer one such as JPEG XL, or a private one): its pixel data cannot be decoded here",
        )
    return syntax


def _check_pixel_data_length(path: Path, ds: Dataset, frames: int, samples: int) -> None:
    """Refuse native (uncompressed) pixel data whose size disagrees with Rows x Columns x frames x samples x
    BitsAllocated (pydicom would crop or pad it with a warning only, moving the principal point); read from the
    header, the pixels are not loaded. Compressed data are sized by their codestream (checked when decoded)."""
    syntax = _transfer_syntax(path, ds)
    if syntax is not None and syntax.is_compressed:
        return
    element = ds.get_item("PixelData", keep_deferred=True)
    length = element.length if isinstance(element, RawDataElement) else len(element.value or b"")
    try:
        expected = int(get_expected_length(ds, unit="bytes"))
    except (AttributeError, KeyError, TypeError, ValueError):
        return  # a missing BitsAllocated and the like: the decoder names it
    if length not in (expected, expected + expected % 2):  # odd lengths are padded to even
        raise InputFileError(
            path,
            f"corrupt or undecodable pixel data: PixelData (7FE0,0010) holds {length} bytes, but Rows x Columns x frames x "
            f"samples ({int(ds.Rows)} x {int(ds.Columns)} x {frames} x {samples}) at BitsAllocated "
            f"{ds.get('BitsAllocated')} needs {expected}",
        )


def _check_view(path: Path, ds: Dataset) -> None:
    """Refuse what the tags say is not an AP pelvis/hip view in the radiological display: BodyPartExamined of another
    part, ViewPosition other than AP, PatientOrientation other than L\\F (lateral, mirrored or rotated)."""
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    words = {*re.findall(r"[A-Z]+", body_part), re.sub(r"[^A-Z]", "", body_part)}  # "CHEST PA" and "C-SPINE" both
    if words & OTHER_BODY_PARTS and not words & PELVIS_BODY_PARTS:
        raise InputFileError(
            path,
            f"BodyPartExamined (0018,0015) is {body_part}: not a pelvis/hip radiograph (the model knows AP pelvis views only)",
        )
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    if view not in AP_VIEW_POSITIONS:
        raise InputFileError(
            path, f"ViewPosition (0018,5101) is {view}: not an AP view (the model knows AP pelvis views only)"
        )
    orientation = _patient_orientation(ds)
    if orientation:
        shown = "\\".join(orientation)
        columns, rows = orientation[0][0], orientation[1][0]  # the main direction of each
        if columns in "AP" or rows in "AP":
            raise InputFileError(
                path, f"PatientOrientation (0020,0020) is {shown}: a lateral or axial view, not an AP view"
            )
        if (columns, rows) != ("L", "F"):
            raise InputFileError(
                path,
                f"PatientOrientation (0020,0020) is {shown}: the image is mirrored or rotated; the model needs the radiological "
                "AP display L\\F (columns toward the patient's left, rows toward the feet)",
            )


def _one_side(ds: Dataset) -> list[str]:
    """A warning when ImageLaterality (0020,0062), or else the series' Laterality (0020,0060), says the image shows one
    side (L or R: a view of one hip, centred on it); none for B (both), U (unpaired: the pelvis) or no value."""
    for keyword, tag in (("ImageLaterality", "0020,0062"), ("Laterality", "0020,0060")):
        side = str(ds.get(keyword, "") or "").strip().upper()
        if side in ("L", "R"):
            return [
                f"{keyword} ({tag}) {side}: a view of one hip; the model knows AP views of the whole pelvis, so the other "
                "femur and that half of the pelvis may be missing or made up"
            ]
        if side:
            return []
    return []


def _patient_orientation(ds: Dataset) -> list[str]:
    """PatientOrientation (0020,0020) as [columns, rows] direction codes, upper case; [] unless both are given."""
    value = ds.get("PatientOrientation") or []
    orientation = [str(v).strip().upper() for v in (value.split("\\") if isinstance(value, str) else value)]
    return orientation if len(orientation) == 2 and all(orientation) else []


def _window_problem(path: Path, ds: Dataset) -> str | None:
    """Why the VOI window (the first WindowCenter/WindowWidth pair; a VOILUTSequence takes its place) cannot be applied,
    as a warning, or None: a WindowWidth (0028,1051) below 1 (LINEAR, the default VOILUTFunction) or not above 0
    (LINEAR_EXACT, SIGMOID), which DICOM does not allow. The window only maps grey values for display: without it the
    image is still read (the network normalises it)."""
    if "VOILUTSequence" in ds or not (_present(ds, "WindowCenter") and _present(ds, "WindowWidth")):
        return None
    width = _tag_numbers(path, ds, "WindowWidth")[0]
    function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    if width >= 1 or (function != "LINEAR" and width > 0):
        return None
    return f"WindowWidth (0028,1051) {width:g} is not a {function} window DICOM allows; the VOI window was not applied"


def _dicom_pixels(path: Path, ds: Dataset, window: bool = True) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Stored values -> modality LUT (slope/intercept) -> VOI LUT/window (``window`` False: not applied) -> MONOCHROME1
    inverted (bone bright); the pixel padding (bool, True where a stored value is PixelPaddingValue (0028,0120) or
    within it and PixelPaddingRangeLimit (0028,0121): not image), None without the tag; and a warning when the VOI
    transform was not applied because it clips bone (:func:`_window_clipping`), else None."""
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if _present(ds, keyword):
            _tag_numbers(path, ds, keyword)  # a value that does not parse is named, not reported as corrupt pixels
    arr, rescaled = _compressed_pixels(path, ds)
    monochrome1 = str(ds.PhotometricInterpretation) == "MONOCHROME1"
    clipping = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array if arr is None else arr
            if arr.ndim == 3 and str(ds.PhotometricInterpretation) in COLOUR_PHOTOMETRIC:  # decoded as RGB
                lossy = str(ds.get("LossyImageCompression", "")) == "01" or _transfer_syntax(path, ds) in LOSSY_SYNTAXES
                arr = _grey_of_colour(path, arr, lossy, str(ds.PhotometricInterpretation))
            if arr.shape != (int(ds.Rows), int(ds.Columns)):
                raise ValueError(f"pixel array shape {arr.shape} != (Rows, Columns)")
            padding = _pixel_padding(path, ds, arr, rescaled)
            arr = (arr if rescaled else apply_modality_lut(arr, ds)).astype(np.float64)
            if (
                rescaled and monochrome1
            ):  # GDCM inverted it already (bone bright, an offset from ours); the window is skipped
                pass
            elif window and ("WindowCenter" in ds or "VOILUTSequence" in ds):
                shown = apply_voi_lut(arr, ds, index=0).astype(np.float64)
                clipping = _window_clipping(path, ds, arr, shown, padding)
                arr = arr if clipping else shown
    except InputFileError:
        raise
    except Exception as e:  # truncated/undecodable pixel data, bad LUTs
        raise InputFileError(path, f"corrupt or undecodable pixel data ({type(e).__name__}: {e})") from None
    if rescaled:  # GDCM made MONOCHROME1 bone bright already
        return arr.astype(np.float32), padding, clipping
    return bone_bright(arr, str(ds.PhotometricInterpretation)).astype(np.float32), padding, clipping


def _window_clipping(
    path: Path, ds: Dataset, plain: np.ndarray, shown: np.ndarray, padding: np.ndarray | None
) -> str | None:
    """A warning when the VOI transform (the first window, or the VOILUTSequence) turns more than
    :data:`MAX_WINDOW_CLIPPING` of the radiograph's own pixels (padding left out) white at the bone end that were not
    already there without it (within 1% of the range of the top: a window or LUT that clips, or a sigmoid that all but
    does); else None. Vendors' processing saturates the direct exposure, never bone (docs/simulation.md: at most 3% of
    the patient); on bone whitened flat the network loses the cortical outline it finds bones by, so such a window (a
    soft-tissue one first, say) is not applied: the image is read over its full range."""
    inside = ~padding if padding is not None else slice(None)

    def at_top(values: np.ndarray) -> float:
        bright = bone_bright(values, str(ds.PhotometricInterpretation))[inside]
        low, high = float(bright.min()), float(bright.max())
        return float((bright >= high - 0.01 * (high - low)).mean())

    extra = at_top(shown) - at_top(plain)
    if extra <= MAX_WINDOW_CLIPPING:
        return None
    if "VOILUTSequence" in ds:
        window = "VOILUTSequence (0028,3010)"
    else:
        centre, width = _tag_numbers(path, ds, "WindowCenter")[0], _tag_numbers(path, ds, "WindowWidth")[0]
        window = f"window WindowCenter/WindowWidth (0028,1050/1051) {centre:g}/{width:g}"
    return (
        f"the {window} whitens {extra:.0%} of the image at the bone end (bone clipped flat, which the model never saw); "
        "not applied: the image was read over its full range"
    )


def _pixel_padding(path: Path, ds: Dataset, arr: np.ndarray, rescaled: bool) -> np.ndarray | None:
    """True where ``arr`` holds padding (PixelPaddingValue (0028,0120), up to PixelPaddingRangeLimit (0028,0121) when
    given; both stored values); None without the tag. ``rescaled``: ``arr`` came from GDCM (:func:`_compressed_pixels`),
    which applied the modality rescale and turned MONOCHROME1 over within BitsStored (``2**BitsStored - 1 - stored``):
    the padding values are mapped the same way."""
    if not _present(ds, "PixelPaddingValue"):
        return None
    ends = [_tag_number(path, ds, "PixelPaddingValue")]
    if _present(ds, "PixelPaddingRangeLimit"):
        ends.append(_tag_number(path, ds, "PixelPaddingRangeLimit"))
    if rescaled:
        if str(ds.PhotometricInterpretation) == "MONOCHROME1":
            ends = [2.0 ** int(ds.BitsStored) - 1.0 - v for v in ends]
        slope = _tag_number(path, ds, "RescaleSlope") if _present(ds, "RescaleSlope") else 1.0
        intercept = _tag_number(path, ds, "RescaleIntercept") if _present(ds, "RescaleIntercept") else 0.0
        ends = [slope * v + intercept for v in ends]
    return (arr >= min(ends)) & (arr <= max(ends))


def bone_bright(arr: np.ndarray, photometric: str) -> np.ndarray:
    """Pixel values with bone bright: MONOCHROME1 (low values bright) is mirrored within its own range, MONOCHROME2 kept."""
    if photometric == "MONOCHROME1" and np.isfinite(arr).all():
        return arr.max() + arr.min() - arr
    return arr


def _compressed_pixels(path: Path, ds: Dataset) -> tuple[np.ndarray | None, bool]:
    """Pixels of compressed DICOM that pydicom cannot decode here (no pylibjpeg / gdcm: JPEG Lossless, JPEG-LS),
    decoded by SimpleITK's GDCM, which applies the modality LUT itself and inverts MONOCHROME1 (bone bright, up
    to a constant offset from pydicom's values): ``(pixels, True)``. ``(None, False)``
    when pydicom decodes the file (uncompressed, RLE, JPEG baseline, JPEG 2000) or it is not compressed.
    """
    syntax = _transfer_syntax(path, ds)
    if syntax is None or not syntax.is_compressed or "PixelData" not in ds:
        return None, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.pixel_array  # noqa: B018  (decoded and cached by pydicom when it has a decoder)
        return None, False
    except Exception as e:
        pydicom_failed = _pydicom_lacks(syntax) or f"pydicom's decoder failed ({first_line(e)[:80]}: corrupt data?)"
    import SimpleITK as sitk  # noqa: N813

    try:
        reader = sitk.ImageFileReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileName(str(path))
        arr = sitk.GetArrayFromImage(reader.Execute())
    except Exception:  # GDCM lacks the codec too, or the data are corrupt
        raise InputFileError(
            path,
            f"compressed pixel data ({syntax.name}, {syntax}) cannot be decoded here: {pydicom_failed}, and "
            "SimpleITK/GDCM could not decode it either; docs/real_radiographs.md lists the transfer syntaxes read here",
        ) from None
    return arr.reshape(arr.shape[-2:]) if arr.ndim == 3 and arr.shape[0] == 1 else arr, True


def _pydicom_lacks(syntax: UID) -> str:
    """Why pydicom has no decoder for ``syntax`` here, naming the packages one of its plugins needs; "" when it has
    one."""
    try:
        decoder = pydicom.pixels.get_decoder(syntax)
    except NotImplementedError:
        return "pydicom has no decoder for it"
    if decoder.is_available:
        return ""
    return "pydicom has no decoder for it installed (" + "; ".join(decoder.missing_dependencies) + ")"


def _dicom_geometry(
    path: Path, ds: Dataset, sid_mm: float | None, spacing: tuple[float, float] | None
) -> tuple[Geometry, dict]:
    source: dict = {}
    if "DistanceSourceToDetector" in ds and ds.DistanceSourceToDetector not in (None, ""):
        sid, source["sid_mm"] = (
            _tag_number(path, ds, "DistanceSourceToDetector"),
            "DistanceSourceToDetector (0018,1110)",
        )
    elif sid_mm is not None:
        sid, source["sid_mm"] = sid_mm, "argument sid_mm"
    else:
        raise InputFileError(path, "missing DistanceSourceToDetector (0018,1110); pass --sid_mm")
    pitch = None
    if _present(ds, "ImagerPixelSpacing"):
        pitch, source["pixel_spacing_mm"] = (
            _row_col(_tag_numbers(path, ds, "ImagerPixelSpacing")),
            "ImagerPixelSpacing (0018,1164)",
        )
    elif _present(ds, "NominalScannedPixelSpacing"):  # a film digitiser's secondary capture: the pitch on the film
        pitch, source["pixel_spacing_mm"] = (
            _row_col(_tag_numbers(path, ds, "NominalScannedPixelSpacing")),
            "NominalScannedPixelSpacing (0018,2010)",
        )
    elif _present(ds, "PixelSpacing"):
        ps = _row_col(_tag_numbers(path, ds, "PixelSpacing"))
        if _present(ds, "EstimatedRadiographicMagnificationFactor"):
            m = _magnification(
                path,
                _tag_number(path, ds, "EstimatedRadiographicMagnificationFactor"),
                "EstimatedRadiographicMagnificationFactor (0018,1114)",
            )
            stated = _present(ds, "PixelSpacingCalibrationType")  # else DICOM cannot tell (PS3.3 10.7.1.1)
            pitch, source["pixel_spacing_mm"] = (
                ps * m,
                "PixelSpacing (0028,0030) x EstimatedRadiographicMagnificationFactor (0018,1114)"
                + ("" if stated else " (PixelSpacing taken as calibrated to the patient: no tag says whether it is)"),
            )
        elif _present(ds, "PixelSpacingCalibrationType"):
            if not _present(ds, "DistanceSourceToPatient"):
                raise InputFileError(
                    path,
                    "PixelSpacing (0028,0030) is calibrated to the object plane but EstimatedRadiographicMagnificationFactor "
                    "(0018,1114) and DistanceSourceToPatient (0018,1111) are missing; pass --pixel_spacing_mm",
                )
            distance = _tag_number(path, ds, "DistanceSourceToPatient")
            if not (np.isfinite(distance) and distance > 0):
                raise InputFileError(
                    path, f"DistanceSourceToPatient (0018,1111) must be a positive distance in mm, got {distance:g}"
                )
            m = _magnification(path, magnification(sid, distance), "SID / DistanceSourceToPatient (0018,1111)")
            pitch, source["pixel_spacing_mm"] = (
                ps * m,
                "PixelSpacing (0028,0030) x SID / DistanceSourceToPatient (0018,1111)",
            )
        else:
            pitch, source["pixel_spacing_mm"] = ps, "PixelSpacing (0028,0030), uncalibrated (detector pitch)"
    if pitch is None:
        if spacing is None:
            raise InputFileError(
                path, "missing ImagerPixelSpacing (0018,1164) and PixelSpacing (0028,0030); pass --pixel_spacing_mm"
            )
        pitch, source["pixel_spacing_mm"] = np.asarray(spacing, dtype=float), "argument pixel_spacing_mm"
    return _geometry(path, sid, tuple(pitch), (int(ds.Columns), int(ds.Rows)), source), source


def _tag_numbers(path: Path, ds: Dataset, keyword: str) -> list[float]:
    """The numeric value(s) of a DICOM attribute; text that does not parse raises InputFileError naming the tag."""
    element = ds[keyword]
    values = element.value if isinstance(element.value, (list, tuple, pydicom.multival.MultiValue)) else [element.value]
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raw = "\\".join(str(v) for v in values)[:40]
        raise InputFileError(
            path, f"{keyword} ({element.tag.group:04X},{element.tag.element:04X}) does not parse as a number: {raw!r}"
        ) from None


def _tag_number(path: Path, ds: Dataset, keyword: str) -> float:
    return _tag_numbers(path, ds, keyword)[0]


def _row_col(value) -> np.ndarray:
    """DICOM [row spacing, column spacing] -> (su, sv) as float array."""
    v = [float(x) for x in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value, value])]
    if len(v) == 1:
        v = v * 2
    return np.array([v[1], v[0]])


def _present(ds: Dataset, keyword: str) -> bool:
    return keyword in ds and ds[keyword].value not in (None, "", [])


def _dicom_layout(path: Path) -> str | None:
    """How an input-folder file holds DICOM, from its first 132 bytes: "preamble" (the 128-byte preamble and DICM),
    "raw" (no preamble, but it starts like a little-endian DICOM data element: a tag of group 0002 (file meta) or 0008
    (identification), element below 0100, then an explicit VR (two capital letters) or an implicit value length that
    fits in the file; PACS exports and older archives hold such raw data sets, often without a suffix, and pydicom reads
    them with ``force=True``), "unread" for what cannot be looked into (not a regular file, no read permission: its
    reader then reports it), else None. Never opens anything but a regular file (a FIFO would block)."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            return "unread"
        with open(path, "rb") as f:
            start = f.read(132)
    except OSError:
        return "unread"
    if start[128:132] == b"DICM":
        return "preamble"
    if len(start) < 8:
        return None
    group, element, length = struct.unpack("<HHI", start[:8])
    explicit_vr = start[4:6].isalpha() and start[4:6].isupper()
    raw = group in (0x0002, 0x0008) and element < 0x0100 and (explicit_vr or length <= st.st_size - 8)
    return "raw" if raw else None


def instance_uid(ds: Dataset | None) -> str | None:
    """The SOP Instance UID of a DICOM header, or None when it has none: absent, or blanked (some anonymisers empty
    it, so that every file of a folder would carry the same "UID")."""
    uid = str(ds.get("SOPInstanceUID", "") or "").strip() if ds is not None else ""
    return uid or None


def _sop_instance_uid(path: Path) -> str | None:
    if not path.is_file():  # regular files (and links to them) only: reading a FIFO blocks
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a corrupt file is reported when it is read
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPInstanceUID"], force=True)
            return instance_uid(ds)
    except Exception:
        return None


# ---------------------------------------------------------------------- shared checks
FILE_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _check_readable_file(path: Path) -> None:
    """Refuse, before any reader opens it, what is not a readable regular file (links followed): a folder, a FIFO
    (reading one blocks), socket or device, a broken link, a file or folder without read permission, an empty file.

    Raises:
        InputFileError: naming the file and what it is.
    """
    try:
        st = path.stat()
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            with os.scandir(path):
                pass
            raise InputFileError(path, "a folder, not a radiograph file")
        if not stat.S_ISREG(mode):
            raise InputFileError(
                path, f"{FILE_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not a radiograph file"
            )
        with open(path, "rb"):
            pass
        if st.st_size == 0:
            raise InputFileError(path, "empty file (0 bytes)")
    except FileNotFoundError:
        raise InputFileError(path, "broken symbolic link" if path.is_symlink() else "file not found") from None
    except OSError as e:
        reason = e.strerror or type(e).__name__
        problem = (
            f"folder cannot be read ({reason}): its radiographs were not looked for"
            if path.is_dir()
            else f"file cannot be read ({reason})"
        )
        raise InputFileError(path, problem) from None


def _geometry(path: Path, sid: float, spacing: Sequence[float], size: tuple[int, int], source: dict) -> Geometry:
    """The input's native geometry, refused (naming where each value came from) outside what radiography rooms use."""
    try:
        return Geometry(sid_mm=sid, pixel_spacing_mm=tuple(spacing), image_size=size).check_radiography_range()
    except GeometryError as e:
        given = "; ".join(f"{k} from {v}" for k, v in source.items())
        raise InputFileError(path, f"invalid geometry: {e} ({given})") from None


def _magnification(path: Path, factor: float, source: str) -> float:
    try:
        return check_magnification(factor, source)
    except GeometryError as e:
        raise InputFileError(path, f"invalid geometry: {e}") from None


def fill_ins(
    sid_mm: float | None = None, pixel_spacing_mm: float | Sequence[float] | None = None
) -> tuple[float | None, tuple[float, float] | None]:
    """The ``sid_mm`` / ``pixel_spacing_mm`` fill-ins as (SID mm, detector pitch (su, sv) mm; one number: both), None
    where not given (None or the text ``null``: :func:`scripts.config_flags.is_null`). Checked once for all inputs,
    before any is read: positive numbers (:func:`scripts.config_flags.as_positive`: ``true`` is not 1 mm), one or two
    for the pitch (a text such as ``"0.15 0.16"`` refused), within what radiography rooms use
    (:func:`scripts.geometry.check_room_range`); else :class:`InputFileError` naming the option (``--sid_mm``)."""
    sid = None if is_null(sid_mm) else _option_mm("sid_mm", sid_mm, SID_RANGE_MM)
    if is_null(pixel_spacing_mm):
        return sid, None
    values = list(pixel_spacing_mm) if isinstance(pixel_spacing_mm, (list, tuple, np.ndarray)) else [pixel_spacing_mm]
    if isinstance(pixel_spacing_mm, str) or len(values) not in (1, 2):  # MONAI's command line: "0.15 0.16" is text
        raise InputFileError(
            "--pixel_spacing_mm",
            f"must be one or two numbers (mm: 0.15, or su,sv as 0.15,0.16), got {pixel_spacing_mm!r}",
        )
    pitch = [_option_mm("pixel_spacing_mm", v, PIXEL_PITCH_RANGE_MM) for v in values]
    return sid, (pitch[0], pitch[-1])


def _option_mm(name: str, value, bounds: tuple[float, float]) -> float:
    """Option ``--name`` as mm (:func:`scripts.config_flags.as_positive`) within ``bounds``; else
    :class:`InputFileError` naming the option."""
    mm = as_positive(value, name)
    try:
        check_room_range(name, [mm], bounds, "mm")
    except GeometryError as e:
        raise InputFileError(f"--{name}", str(e)) from None
    return mm


def _check_size(path: Path, shape: tuple[int, int]) -> None:
    h, w = shape
    if min(h, w) < MIN_SIZE_PX:
        raise InputFileError(path, f"image too small ({w}x{h} px; minimum {MIN_SIZE_PX})")
    if max(h, w) > MAX_SIZE_PX:
        raise InputFileError(path, f"image too large ({w}x{h} px; maximum {MAX_SIZE_PX})")


def _check_pixels(path: Path, image: np.ndarray) -> None:
    if image.ndim != 2:
        raise InputFileError(path, f"expected a 2D image, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise InputFileError(path, "contains NaN or Inf pixel values")
    if float(image.max()) == float(image.min()):
        raise InputFileError(path, f"constant image (all pixels {float(image.min()):g})")


def grey_levels(image: np.ndarray, enough: int) -> int:
    """The number of distinct pixel values of ``image``, counted exactly below ``enough`` (at least ``enough``
    otherwise): a subsample of about a million pixels first, the whole image only when that holds fewer."""
    step = max(1, int(np.sqrt(image.size / 2**20)))
    levels = np.unique(image[::step, ::step]).size
    return levels if levels >= enough else np.unique(image).size


def _phi_like(stem: str, ds: Dataset | None) -> bool:
    if _DATE_LIKE.search(stem) or _LONG_NUMBER.search(stem) or _PHI_WORDS.search(stem):
        return True
    if ds is None:
        return False
    tokens = re.split(
        r"[\^\s,_.-]+", f"{ds.get('PatientName', '')} {ds.get('PatientID', '')} {ds.get('PatientBirthDate', '')}"
    )
    low = stem.lower()
    return any(len(t) >= 2 and t.lower() in low for t in tokens)


# ---------------------------------------------------------------------- to-dicom
def to_dicom(
    input_path: PathLike,
    output_path: PathLike,
    standard: Geometry | None = None,
    sid_mm: float | None = None,
    pixel_spacing_mm: float | Sequence[float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a PNG/JPEG/TIFF or simulator NIfTI radiograph as a DICOM DX with its geometry tags; returns the output path.

    The geometry is what :func:`load_radiograph` would use: a NIfTI's geometry.json; for PNG/TIFF the
    given ``pixel_spacing_mm`` / ``sid_mm``, else the ``standard`` one when the size matches, else the file's stated
    resolution (:func:`_raster_geometry`). The pixels
    are not resampled (PNG/JPEG/TIFF: as displayed, EXIF orientation applied). An existing ``output_path`` is
    refused unless ``overwrite``, and the input file itself always.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    standard = standard or Geometry.standard()
    sid_mm, spacing = fill_ins(sid_mm, pixel_spacing_mm)
    _check_readable_file(input_path)
    if output_path.exists() and os.path.samefile(input_path, output_path):  # the same path, a link or a hard link
        raise InputFileError(
            output_path, f"the output is the input file {input_path} itself; choose another output file"
        )
    refuse_existing(output_path, overwrite)
    name, lossy_ratio = input_path.name.lower(), None
    if name.endswith(NIFTI_SUFFIXES):
        image, native, _ = _load_nifti(input_path)
        if (
            native.principal_point_px
            != Geometry(native.sid_mm, native.pixel_spacing_mm, native.image_size).principal_point_px
        ):
            raise InputFileError(
                input_path,
                f"principal point {list(native.principal_point_px)} is off the image centre; DICOM has no tag for it",
            )
    elif name.endswith(RASTER_SUFFIXES):
        image, orientation, resolution, _ = _read_raster(input_path)
        native, _ = _raster_geometry(input_path, image.shape, standard, sid_mm, spacing, resolution, orientation)
        _check_pixels(input_path, image)
        if _raster_format(name) == "jpeg":  # lossy: about its 8-bit samples' bytes over the file's
            lossy_ratio = image.size / input_path.stat().st_size
    else:
        raise InputFileError(
            input_path,
            f"to-dicom reads PNG/JPEG/TIFF or simulator NIfTI ({', '.join(RASTER_SUFFIXES + NIFTI_SUFFIXES)})",
        )
    return write_radiograph_dicom(output_path, image, native.sid_mm, native.pixel_spacing_mm, lossy_ratio)


@exits_on_input_error
def main(argv: Sequence[str] | None = None) -> int:
    """CLI ``python -m scripts.radiograph_io to-dicom IN OUT ...``; returns the exit status."""
    parser = OneLineParser(prog="python -m scripts.radiograph_io", description="Radiograph file tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "to-dicom",
        help="PNG/JPEG/TIFF or simulator NIfTI radiograph -> DICOM DX with geometry tags (SID, detector pitch, AP pelvis)",
    )
    p.add_argument(
        "input", type=path_argument, help="image.nii.gz (geometry.json beside it), PNG, JPEG or TIFF (bone bright)"
    )
    p.add_argument("output", type=path_argument, help="DICOM file to write (refused if it exists, unless --overwrite)")
    p.add_argument(
        "--sid_mm",
        type=float,
        default=None,
        help="source-to-detector distance, mm (PNG/JPEG/TIFF; default: the standard geometry's)",
    )
    p.add_argument(
        "--pixel_spacing_mm",
        type=float,
        nargs="+",
        default=None,
        help="detector pixel pitch, mm, one value or su sv (PNG/JPEG/TIFF; default: the standard geometry's when the "
        "size is the standard one, else a PNG/TIFF's stated resolution)",
    )
    p.add_argument(
        "--standard_geometry",
        default=None,
        type=path_argument,
        help="standard geometry JSON (default configs/geometry.json)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    try:
        standard = Geometry.standard(args.standard_geometry)
    except (GeometryError, OSError, ValueError) as e:  # the message names the file
        print(e, file=sys.stderr)
        return 1
    out = to_dicom(args.input, args.output, standard, args.sid_mm, args.pixel_spacing_mm, args.overwrite)
    print(f"wrote {out}")
    return 0
