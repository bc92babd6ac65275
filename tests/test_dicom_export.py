"""DICOM Encapsulated STL: written, read back with pydicom, same study, new series/instance, same mesh."""

from __future__ import annotations

import numpy as np
import pydicom
import trimesh
from pydicom.dataset import Dataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid
from scripts.io.dicom_export import NewSeries, write_encapsulated_stl, write_stl
from tests.helpers import read_encapsulated_stl


def source_dataset() -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "MRN123456", "19650101", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.AccessionNumber, ds.StudyDate = "ACC42", "20240102"
    return ds


def test_encapsulated_stl_round_trip(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=20.0)
    mesh.apply_translation([5.0, -3.0, 900.0])
    src = source_dataset()
    series = NewSeries()
    paths = [
        write_encapsulated_stl(mesh, tmp_path / f"{b}.dcm", b, source=src, series=series, instance_number=i + 1)
        for i, b in enumerate(["pelvis", "femur_left"])
    ]
    dss = [pydicom.dcmread(str(p)) for p in paths]
    for ds in dss:
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.3" == ds.file_meta.MediaStorageSOPClassUID
        assert ds.Modality == "M3D" and ds.MIMETypeOfEncapsulatedDocument == "model/stl"
        assert ds.StudyInstanceUID == src.StudyInstanceUID != series.study_instance_uid
        assert ds.SeriesInstanceUID == series.series_instance_uid != src.SeriesInstanceUID
        assert ds.FrameOfReferenceUID == series.frame_of_reference_uid  # one frame for the bones of one series
        assert ds.SOPInstanceUID != src.SOPInstanceUID and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert (ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber) == (
            "Doe^Jane",
            "MRN123456",
            "19650101",
            "ACC42",
        )
        assert ds.SourceInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        (series_ref,) = ds.ReferencedSeriesSequence  # Common Instance Reference: the radiograph's series in this study
        assert series_ref.SeriesInstanceUID == src.SeriesInstanceUID
        (instance_ref,) = series_ref.ReferencedInstanceSequence
        assert (instance_ref.ReferencedSOPClassUID, instance_ref.ReferencedSOPInstanceUID) == (
            src.SOPClassUID,
            src.SOPInstanceUID,
        )
        assert ds.Manufacturer and ds.ManufacturerModelName and ds.SoftwareVersions
        back = read_encapsulated_stl(ds)
        assert len(back.faces) == len(mesh.faces)
        np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-3)  # STL stores float32
        assert abs(back.volume - mesh.volume) / mesh.volume < 1e-5
    assert dss[0].SOPInstanceUID != dss[1].SOPInstanceUID
    assert [d.DocumentTitle for d in dss] == ["pelvis surface", "femur_left surface"]


def test_without_source_new_study_and_plain_stl(tmp_path):
    mesh = trimesh.creation.box(extents=(10, 20, 30))
    ds = pydicom.dcmread(str(write_encapsulated_stl(mesh, tmp_path / "b.dcm", "pelvis")))
    assert ds.StudyInstanceUID and ds.PatientName == "" and "SourceInstanceSequence" not in ds
    stl = trimesh.load(str(write_stl(mesh, tmp_path / "b.stl")))
    assert abs(stl.volume - 6000.0) < 1e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dcm", "b.stl"]  # no temporary leftovers


def test_bones_of_one_reconstruction_share_study_series_and_frame_whatever_the_source(tmp_path):
    """The bones of one reconstruction are one series in one study and one Frame of Reference (they share the
    radiograph's patient frame), also without a source (PNG input: each bone once got its own study and frame) and from
    a source whose StudyInstanceUID is blank and which has no SOPClassUID (an anonymised export; the reference to it,
    type 1 in its item, once raised AttributeError): type 1 values present, and valid UIDs of at most 64 characters."""
    mesh = trimesh.creation.box(extents=(10, 20, 30))
    bare = source_dataset()
    bare.StudyInstanceUID = ""
    del bare.SOPClassUID
    for k, src in enumerate([None, bare]):
        series = NewSeries()
        dss = [
            pydicom.dcmread(str(write_encapsulated_stl(mesh, tmp_path / f"{k}{b}.dcm", b, source=src, series=series)))
            for b in ("pelvis", "femur_left", "femur_right")
        ]
        for kw, shared in (
            ("StudyInstanceUID", series.study_instance_uid),
            ("SeriesInstanceUID", series.series_instance_uid),
            ("FrameOfReferenceUID", series.frame_of_reference_uid),
        ):
            assert {d[kw].value for d in dss} == {shared}
            assert pydicom.uid.UID(shared).is_valid and len(shared) <= 64
        assert len({d.SOPInstanceUID for d in dss}) == 3
        assert all("SourceInstanceSequence" not in d and "ReferencedSeriesSequence" not in d for d in dss)
