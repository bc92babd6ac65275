"""Writing DICOM: reconstructed bone meshes as STL files and DICOM Encapsulated STL instances, and
radiographs as DICOM DX images with their geometry tags (``python -m scripts.radiograph_io to-dicom``).

The DICOM instance (SOP Class 1.2.840.10008.5.1.4.1.1.104.3, Modality M3D) joins the source study:
the Patient module and the study identifiers are copied from the source radiograph, while the
Series Instance UID, SOP Instance UID and Frame of Reference UID are new (series and frame shared by the bones of one
reconstruction: :class:`NewSeries`). A Frame of Reference is
patient-based (DICOM LPS, mm), so the mesh is given in the patient's nominal coordinates of the
radiograph's AP view (``scripts.geometry.camera_to_patient_lps``: origin at the focal spot), which the
new Frame of Reference stands for. Without a source (PNG/NIfTI input) a new study is created with empty
patient attributes, one for the bones of a reconstruction.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from pathlib import Path

import numpy as np
import trimesh
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DigitalXRayImageStorageForPresentation,
    EncapsulatedSTLStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from scripts.io.files import METADATA, PathLike, atomic_path, read_json

MANUFACTURER = "MONAI 3DDX bundle"
MODEL_NAME = "hip_radiograph_3d_bone_reconstruction"
PATIENT_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "OtherPatientIDsSequence", "PatientIdentityRemoved", "DeidentificationMethod",
)  # fmt: skip
STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
TYPE2_EMPTY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


@functools.lru_cache(maxsize=1)
def bundle_version() -> str:
    """The bundle's version (configs/metadata.json ``version``): the SoftwareVersions of every DICOM it writes."""
    return str(read_json(METADATA)["version"])


def _new_dataset(sop_class_uid: str) -> Dataset:
    """An explicit-VR little-endian dataset of ``sop_class_uid`` with a new instance UID in its file meta
    and the type 2 attributes of ``TYPE2_EMPTY`` present and empty."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    for kw in TYPE2_EMPTY:
        setattr(ds, kw, "")
    return ds


@dataclasses.dataclass(frozen=True)
class NewSeries:
    """The UIDs every instance of one reconstruction shares: its series, its Frame of Reference (the radiograph's
    nominal patient frame, one for all bones: a series has one) and the study used when the source radiograph gives
    none (PNG/NIfTI input, or a blank StudyInstanceUID). Each new; one per reconstruction."""

    series_instance_uid: str = dataclasses.field(default_factory=generate_uid)
    frame_of_reference_uid: str = dataclasses.field(default_factory=generate_uid)
    study_instance_uid: str = dataclasses.field(default_factory=generate_uid)


def write_stl(mesh: trimesh.Trimesh, path: PathLike) -> Path:
    """Write ``mesh`` as binary STL atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(stl_bytes(mesh))
    return path


def stl_bytes(mesh: trimesh.Trimesh) -> bytes:
    """Binary STL encoding of ``mesh`` (vertices in mm)."""
    return trimesh.exchange.stl.export_stl(mesh)


def encapsulated_stl_dataset(
    mesh: trimesh.Trimesh,
    bone: str,
    source: Dataset | None = None,
    series: NewSeries | None = None,
    instance_number: int = 1,
) -> Dataset:
    """Build a DICOM Encapsulated STL dataset of ``mesh`` (a bone surface, patient coordinates LPS, mm).

    Args:
        mesh: the surface; stored as binary STL.
        bone: bone name, used in the document title and series description.
        source: the radiograph's dataset; its Patient module and study identifiers are copied, and it is referenced
            (SourceInstanceSequence) when it has a SOP Class and a SOP Instance UID, and then also by its series
            (Common Instance Reference module, ReferencedSeriesSequence: another series of this study) when it has a
            Series and a Study Instance UID.
        series: the series, Frame of Reference and fallback study UIDs shared by all bones of one reconstruction; new
            when ``None``.
        instance_number: DICOM number of the instance in its series (series number 9001).
    """
    now = datetime.datetime.now()
    data = stl_bytes(mesh)
    ds = _new_dataset(EncapsulatedSTLStorage)
    sop_uid = ds.file_meta.MediaStorageSOPInstanceUID
    # Patient and General Study modules: copied from the source, type 2 attributes empty otherwise
    for kw in PATIENT_KEYWORDS + STUDY_KEYWORDS:
        if source is not None and kw in source:
            ds[kw] = source[kw]
    series = series or NewSeries()
    if not ds.get("StudyInstanceUID"):  # type 1: none in the source, or blanked by an anonymiser
        ds.StudyInstanceUID = series.study_instance_uid
    # SOP Common
    ds.SOPClassUID = EncapsulatedSTLStorage
    ds.SOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = source.get("SpecificCharacterSet", "ISO_IR 192") if source is not None else "ISO_IR 192"
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    # Encapsulated Document Series
    ds.Modality = "M3D"
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.SeriesNumber = 9001
    ds.SeriesDescription = "3DDX bone surfaces (nominal patient LPS, mm)"
    # Frame of Reference: the radiograph's nominal patient frame (LPS, origin at the focal spot)
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # Enhanced General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = bundle_version()
    # Encapsulated Document and Manufacturing 3D Model modules
    ds.InstanceNumber = instance_number
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = f"{bone} surface"
    ds.ConceptNameCodeSequence = Sequence()
    ds.MeasurementUnitsCodeSequence = Sequence([_code("mm", "UCUM", "millimeter")])
    if source is not None and source.get("SOPClassUID") and source.get("SOPInstanceUID"):  # type 1 in the item
        ref = Dataset()
        ref.ReferencedSOPClassUID = source.SOPClassUID
        ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
        ds.SourceInstanceSequence = Sequence([ref])
        if source.get("SeriesInstanceUID") and source.get("StudyInstanceUID"):  # how a viewer finds the radiograph
            referenced = Dataset()
            referenced.SeriesInstanceUID = source.SeriesInstanceUID
            referenced.ReferencedInstanceSequence = Sequence([ref])
            ds.ReferencedSeriesSequence = Sequence([referenced])
    ds.MIMETypeOfEncapsulatedDocument = "model/stl"
    ds.EncapsulatedDocument = data
    ds.EncapsulatedDocumentLength = len(data)
    return ds


def write_encapsulated_stl(
    mesh: trimesh.Trimesh, path: PathLike, bone: str, source: Dataset | None = None, **kwargs
) -> Path:
    """Write the Encapsulated STL instance of ``mesh`` to ``path`` atomically (see :func:`encapsulated_stl_dataset`)."""
    return _save_dataset(encapsulated_stl_dataset(mesh, bone, source=source, **kwargs), path)


def radiograph_dataset(
    image: np.ndarray, sid_mm: float, pixel_spacing_mm: tuple[float, float], lossy_ratio: float | None = None
) -> Dataset:
    """A DICOM DX (For Presentation, MONOCHROME2, 16 bit) of a bone-bright radiograph ``image`` (H, W), with every
    type 1 and 2 attribute of the DX IOD's mandatory modules.

    Geometry tags: DistanceSourceToDetector (0018,1110) = ``sid_mm``, ImagerPixelSpacing (0018,1164) =
    [sv, su] from ``pixel_spacing_mm`` (su, sv) (mm at the detector); BodyPartExamined PELVIS (AnatomicRegionSequence
    SCT 816092008), ImageLaterality U (unpaired), ViewPosition AP. Integer images within 0..65535
    are stored as is; anything else maps its range linearly onto 0..65535 (the DX IOD fixes rescale
    slope 1 and intercept 0; the network's percentile normalisation does not see a linear map). The window (type 1C
    for presentation) spans the stored values exactly (LINEAR: the lowest shown black, the highest white), pixel
    intensity relationship LOG with sign -1 (bone bright: higher values, less X-ray intensity), burned-in annotation NO
    (nothing here can tell), ``lossy_ratio``: the compression ratio of a lossy source (a JPEG), recorded as
    LossyImageCompression 01 (ISO_10918_1); None: 00. Patient attributes are empty.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {image.shape}")
    integral = np.issubdtype(image.dtype, np.integer) or np.array_equal(image, np.round(image))
    lo, hi = float(image.min()), float(image.max())
    if integral and lo >= 0 and hi <= 65535:
        stored = image.astype(np.uint16)
    else:
        stored = np.round((image.astype(np.float64) - lo) * (65535.0 / ((hi - lo) or 1.0))).astype(np.uint16)
    now = datetime.datetime.now()
    ds = _new_dataset(DigitalXRayImageStorageForPresentation)
    sop_uid = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SOPClassUID, ds.SOPInstanceUID = DigitalXRayImageStorageForPresentation, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.Modality, ds.PresentationIntentType, ds.ImageType = "DX", "FOR PRESENTATION", ["DERIVED", "SECONDARY"]
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.SeriesDescription = "converted by scripts.radiograph_io to-dicom"
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = MANUFACTURER, MODEL_NAME, bundle_version()
    ds.BodyPartExamined, ds.ViewPosition = "PELVIS", "AP"
    ds.PatientOrientation = [
        "L",
        "F",
    ]  # columns toward the patient's left, rows toward the feet (AP, radiological display)
    ds.DistanceSourceToDetector = f"{float(sid_mm):.10g}"
    ds.ImagerPixelSpacing = [f"{float(pixel_spacing_mm[1]):.10g}", f"{float(pixel_spacing_mm[0]):.10g}"]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "0", "US"
    low, high = int(stored.min()), int(stored.max())
    ds.WindowCenter, ds.WindowWidth = f"{(low + high + 1) / 2:g}", str(high - low + 1)  # low -> black, high -> white
    ds.WindowCenterWidthExplanation = "stored range"
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", -1
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00" if lossy_ratio is None else "01"
    if lossy_ratio is not None:
        ds.LossyImageCompressionRatio, ds.LossyImageCompressionMethod = f"{lossy_ratio:.4g}", "ISO_10918_1"
    ds.ImageLaterality = "U"  # the pelvis: unpaired
    ds.AnatomicRegionSequence = Sequence([_code("816092008", "SCT", "Pelvis")])
    ds.DetectorType = ""
    ds.AcquisitionContextSequence = Sequence()
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return ds


def write_radiograph_dicom(
    path: PathLike,
    image: np.ndarray,
    sid_mm: float,
    pixel_spacing_mm: tuple[float, float],
    lossy_ratio: float | None = None,
) -> Path:
    """Write :func:`radiograph_dataset` to ``path`` atomically; returns the path."""
    return _save_dataset(radiograph_dataset(image, sid_mm, pixel_spacing_mm, lossy_ratio), path)


def _save_dataset(ds: Dataset, path: PathLike) -> Path:
    """Write ``ds`` as a DICOM file (with its file meta) to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.save_as(str(tmp), enforce_file_format=True)
    return path


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c
