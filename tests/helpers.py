"""Helpers shared by several test files: tiny data sets and checkpoints, DICOM radiographs, analytic ellipsoid
depth maps, bundle workflow runs and checks of their outputs.

Everything here makes its own small data (nothing is downloaded); truth is analytic or comes from
the simulator's meshes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk  # noqa: N813
import torch
import trimesh
from monai.bundle import ConfigWorkflow
from monai.bundle import run as bundle_run
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid
from scripts.geometry import Geometry, standard_ap_pose
from scripts.io.files import write_json, write_nifti
from scripts.model.networks import DualFaceDepthNet

ROOT = Path(__file__).resolve().parent.parent
FEATURES = [4, 4, 8, 8, 16, 4]  # a tiny DualFaceDepthNet
FAST_FIT = {"n_iterations": 6, "n_rigid_iterations": 3, "max_points": 400}  # a quick shape-model fit
STD = Geometry(
    sid_mm=1000.0, pixel_spacing_mm=(2.0, 2.0), image_size=(64, 64)
)  # standard geometry of the radiograph tests
GEOM = Geometry(
    sid_mm=1100.0, pixel_spacing_mm=(6.25, 6.25), image_size=(64, 64)
)  # the standard 400 mm field at 64 x 64
# camera-frame sphere centres (mm) and radii per bone; camera +x = patient left
SPHERES = {
    "pelvis": ((0.0, -30.0, 950.0), 70.0),
    "femur_left": ((75.0, 60.0, 965.0), 30.0),
    "femur_right": ((-70.0, 65.0, 960.0), 24.0),
}


# ---------------------------------------------------------------------- bundle workflows
TRAIN = str(ROOT / "configs" / "train.yaml")
META = str(ROOT / "configs" / "metadata.json")
TINY = {
    "image_size": 64,
    "batch_size": 2,
    "val_batch_size": 2,
    "features": FEATURES,
    "device": "cpu",
}  # a tiny training run


def train_workflow(dataset: Path, run_dir: Path, configs: tuple[str, ...] = (), **override) -> ConfigWorkflow:
    """Initialised tiny training workflow (:data:`TINY`, on the CPU unless ``device`` is overridden) writing into
    ``run_dir``; the best model goes to run_dir/models unless a variant decides."""
    if not configs:
        override.setdefault("ckpt_dir", str(run_dir / "models"))
    wf = ConfigWorkflow(
        config_file=[TRAIN, *[str(ROOT / c) for c in configs]],
        meta_file=META,
        workflow_type="train",
        dataset_dir=str(dataset),
        output_dir=str(run_dir),
        **(TINY | override),
    )
    wf.initialize()
    return wf


def ddp_train_command(dataset: Path, run_dir: Path, processes: int) -> list[str]:
    """``torchrun`` of the tiny training with ``multi_gpu_train.yaml``: 2 epochs, batch 1 per process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(port),
        "-m", "monai.bundle", "run", "--config_file", f"[{TRAIN!r},{str(ROOT / 'configs' / 'multi_gpu_train.yaml')!r}]",
        "--meta_file", META, "--dataset_dir", str(dataset), "--output_dir", str(run_dir), "--ckpt_dir", str(run_dir / "models"),
        "--epochs", "2", "--batch_size", "1", "--image_size", "64", "--features", str(FEATURES),
    ]  # fmt: skip


def bundle_env() -> dict[str, str]:
    """Environment of a subprocess that imports this bundle's ``scripts``: ROOT ahead of any PYTHONPATH already set."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def run_bundle(config: str, **overrides) -> None:
    """``monai.bundle run`` of ``configs/<config>`` of this bundle in this process, with config-key overrides."""
    bundle_run(
        config_file=str(ROOT / "configs" / config),
        meta_file=META,
        logging_file=str(ROOT / "configs" / "logging.conf"),
        bundle_root=str(ROOT),
        **overrides,
    )


def run_evaluation(data: Path | list[Path], out: Path, device: str = "cpu", **kw) -> dict:
    """The evaluation workflow on a :func:`make_dataset` data set, or a list of such folders beside it (tiny network,
    quick shape-model fits, 3 mm surface sampling) with config-key overrides; returns metrics.json."""
    overrides = {"image_size": 64, "features": FEATURES, "ssm_fit": FAST_FIT}
    first, dataset_dir = (data, str(data)) if isinstance(data, Path) else (data[0], [str(d) for d in data])
    run_bundle(
        "evaluate.yaml",
        dataset_dir=dataset_dir,
        output_dir=str(out),
        ssm_path=str(first.parent / "ssm.npz"),
        device=device,
        surface_spacing_mm=3.0,
        surface_max_samples=600,
        inference_overrides=overrides,
        **kw,
    )
    return json.loads((out / "metrics.json").read_text())


# ---------------------------------------------------------------------- DICOM radiographs
def make_dicom(path, pixels, modality="DX", sop_class=DigitalXRayImageStorageForPresentation, bits_stored=16, **tags):
    """Write a small single-frame DICOM radiograph; ``tags`` set (or, when None, omit) header attributes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "MRN123456", "19650101"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.DistanceSourceToDetector = 1000.0
    ds.ImagerPixelSpacing = [2.0, 2.0]
    for k, v in tags.items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return ds


def jpeg_lossless_copy(ds: Dataset, pixels: np.ndarray, path, work) -> None:
    """Write ``ds`` (a :func:`make_dicom` dataset of ``pixels``) to ``path`` with its pixels compressed as JPEG Lossless
    (SimpleITK/GDCM's encoder, written in the folder ``work``), which pydicom has no decoder for here."""
    import pydicom
    import SimpleITK as sitk  # noqa: N813

    w = sitk.ImageFileWriter()
    w.SetImageIO("GDCMImageIO")
    w.SetFileName(str(Path(work) / "gdcm.dcm"))
    w.SetUseCompression(True)
    w.SetCompressor("JPEG")  # GDCM's JPEG is JPEG Lossless (process 14)
    w.Execute(sitk.GetImageFromArray(pixels))
    compressed = pydicom.dcmread(str(Path(work) / "gdcm.dcm"))
    assert compressed.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLosslessSV1
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PixelData = compressed.PixelData
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = compressed.file_meta.TransferSyntaxUID
    ds.save_as(str(path), enforce_file_format=True)


def make_non_image(path, sop_class: str, modality: str) -> Dataset:
    """Write a DICOM object of ``sop_class`` that holds no image (a presentation state, key object selection, structured
    report or encapsulated PDF of a study: header only, no pixel data), as PACS exports carry beside the images."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName = modality, "Doe^Jane"
    ds.save_as(str(path), enforce_file_format=True)
    return ds


def save_raw(ds: Dataset, path) -> None:
    """Write ``ds`` as a raw DICOM data set: no 128-byte preamble, no DICM prefix, no file meta (implicit VR little
    endian), as some PACS exports and older archives store files."""
    ds = ds.copy()
    del ds.file_meta
    ds.preamble = None
    ds.save_as(str(path), implicit_vr=True, little_endian=True, enforce_file_format=False)


def large_blank_image(path: Path, side: int) -> Path:
    """A ``side`` x ``side`` 8-bit black PNG (``.png``) or tiled zlib TIFF (``.tif``), written in pieces: hundreds of
    megapixels in a file of a few hundred KB, made in about a second, never held in memory."""
    if path.suffix == ".tif":
        import tifffile

        tiles = (np.zeros((512, 512), np.uint8) for _ in range((-(-side // 512)) ** 2))
        tifffile.imwrite(path, data=tiles, shape=(side, side), dtype=np.uint8, tile=(512, 512), compression="zlib")
        return path

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, rows = zlib.compressobj(1), b"\0" * (side + 1) * 64  # 64 rows: filter byte 0, then the pixels
    data = b"".join(packer.compress(rows[: (side + 1) * min(64, side - y)]) for y in range(0, side, 64))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data + packer.flush()) + chunk(b"IEND", b"")
    )
    return path


def ramp(h=64, w=64, hi=1000):
    """A non-constant uint16 test image (H, W) with values 1 .. ``hi``."""
    return (np.arange(h * w).reshape(h, w) % hi + 1).astype(np.uint16)


def read_encapsulated_stl(ds: Dataset):
    """The mesh (trimesh.Trimesh, mm) stored in a DICOM Encapsulated STL dataset (padding byte removed)."""
    import io

    data = bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]
    return trimesh.load(io.BytesIO(data), file_type="stl", force="mesh")


# ---------------------------------------------------------------------- poses
def assert_rigid(matrix: np.ndarray, atol: float = 1e-6) -> None:
    """Assert that a 4x4 transform is a proper rigid motion: orthonormal rotation, determinant +1, last row 0 0 0 1."""
    m = np.asarray(matrix, dtype=np.float64)
    assert m.shape == (4, 4)
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=atol)
    assert abs(np.linalg.det(m[:3, :3]) - 1.0) < atol
    np.testing.assert_allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=atol)


# ---------------------------------------------------------------------- analytic sphere 'bones'
def ellipsoid_depths(geom: Geometry, centre, radii, world: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Analytic front/back distances (mm) from the source along the pixel rays to an ellipsoid (centre and semi-axes
    ``radii`` in mm, axes along the frame's; equal radii: a sphere), 0 where the ray misses, and the hit mask: (H, W)
    each. Camera frame, or with ``world`` the posed geometry's world (RAS mm) rays."""
    if world:
        origin, d = (a.numpy() for a in geom.world_rays(dtype=torch.float64))
    else:
        origin, d = np.zeros(3), geom.ray_directions(dtype=torch.float64).numpy()
    d = d / np.asarray(radii, dtype=np.float64)
    c = (np.asarray(centre, dtype=np.float64) - origin) / np.asarray(radii, dtype=np.float64)
    a, b, cc = (d * d).sum(-1), d @ c, c @ c - 1.0
    disc = b * b - a * cc
    hit = disc > 0
    root = np.sqrt(np.clip(disc, 0, None))
    return np.where(hit, (b - root) / a, 0.0), np.where(hit, (b + root) / a, 0.0), hit


class SphereNet(torch.nn.Module):
    """A 'network' whose pelvis maps are those of a sphere (analytic ray-sphere hits); femurs absent."""

    def __init__(self, front: torch.Tensor, back: torch.Tensor, inside: torch.Tensor, centre_mm: float):
        super().__init__()
        off = torch.full_like(front, 950.0)
        logits = torch.where(inside, 30.0, -30.0)
        maps = torch.stack(
            [
                front,
                back,
                off,
                off,
                off,
                off,
                logits,
                torch.full_like(front, -30.0),
                torch.full_like(front, -30.0),
                torch.full_like(front, centre_mm),
            ]
        )
        self.register_buffer("maps", maps[None].float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps.expand(x.shape[0], -1, -1, -1)


def sphere_model_file(path: Path, geometry: Geometry, centre, radius: float) -> None:
    """TorchScript :class:`SphereNet` of the sphere (camera frame, mm) seen in ``geometry`` resized to the network size
    (``image_size`` of configs/inference.yaml); pixels whose chord is under 2 mm (the grazing rim) are left out."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.yaml"))
    size = int(parser["image_size"])
    front, back, hit = (
        torch.as_tensor(a) for a in ellipsoid_depths(geometry.resized((size, size)), centre, (radius,) * 3)
    )
    inside = hit & (back - front > 2.0)
    front, back = torch.where(inside, front, 0.0), torch.where(inside, back, 0.0)
    centre_mm = float(torch.cat([front[inside], back[inside]]).mean())
    torch.jit.save(torch.jit.script(SphereNet(front, back, inside, centre_mm)), str(path))


def sphere_shape_model_file(path: Path, bones: tuple[str, ...] = ("pelvis", "femur_left", "femur_right")) -> None:
    """One-mode shape model (icosphere, 35 mm mean radius; mode 0 = radius, 5 mm per SD) for each of ``bones``."""
    from scripts.reconstruction.ssm import ShapeModel, save_shape_models

    ico = trimesh.creation.icosphere(2, radius=1.0)
    unit = np.asarray(ico.vertices)
    mode = unit / np.sqrt(len(unit))  # orthonormal over V * 3
    model = ShapeModel(35.0 * unit, np.asarray(ico.faces), mode[None], np.array([25.0 * len(unit)]))
    save_shape_models(path, {b: model for b in bones})


def write_sphere_dataset(root: Path, n_cases: int = 2, size: int = 64, seed: int = 0) -> dict[str, dict]:
    """A tiny dataset in the simulator layout; returns {sample_dir: {bone: (centre, radius)}} (camera frame)."""
    rng = np.random.default_rng(seed)
    truth, entries = {}, []
    for case in range(n_cases):
        name = f"case_{case:04d}_p0"
        spheres = {
            b: (np.asarray(c) + rng.uniform(-10, 10, 3), r * rng.uniform(0.9, 1.1)) for b, (c, r) in SPHERES.items()
        }
        geom = Geometry.standard().resized((size, size)).with_pose(standard_ap_pose((0.0, 0.0, 0.0), 950.0))
        depth, mask = [], []
        for centre, radius in spheres.values():
            front, back, hit = ellipsoid_depths(geom, centre, (radius,) * 3)
            depth += [front, back]
            mask.append(hit)
        depth = np.stack(depth, -1).astype(np.float32)
        mask = np.stack(mask, -1).astype(np.uint8)
        image = (0.02 * (depth[..., 1::2] - depth[..., 0::2]).sum(-1)).astype(np.float32)  # bone-bright line integral
        out = root / name
        out.mkdir(parents=True)
        affine = np.diag([geom.pixel_spacing_mm[1], geom.pixel_spacing_mm[0], 1.0, 1.0])
        write_nifti(out / "image.nii.gz", image, affine)
        write_nifti(out / "depth.nii.gz", depth, affine)
        write_nifti(out / "mask.nii.gz", mask, affine)
        geom.save(out / "geometry.json")
        entries.append(
            {k: f"{name}/{k}.{'json' if k == 'geometry' else 'nii.gz'}" for k in ("image", "depth", "mask", "geometry")}
            | {"case": f"case_{case:04d}", "pose": 0}
        )
        truth[name] = spheres
    (root / "datalist.json").write_text(json.dumps({"training": entries, "validation": entries, "test": entries[:1]}))
    return truth


# ---------------------------------------------------------------------- simulated phantom data set
def make_dataset(root: Path) -> Path:
    """2 phantom cases (3 mm), one pose each at 64x64 (6.25 mm pixels); datalist: case 0 training, case 1 test;
    a shape model from both cases; a tiny untrained network checkpoint. Returns the data set folder."""
    from scripts.data.phantom import generate_cohort
    from scripts.data.simulate import find_cases, simulate
    from scripts.reconstruction.ssm import build_from_cases, save_shape_models

    generate_cohort(2, root / "cohort", seed=0, spacing_mm=3.0, anatomy_name="procedural")
    geometry = Geometry.standard(image_size=[64, 64], pixel_spacing_mm=[6.25, 6.25], principal_point_px=[31.5, 31.5])
    datalist, errors = simulate(find_cases(root / "cohort"), root / "sim", poses=1, geometry=geometry, device="cpu")
    assert not errors
    entries = [e for split in datalist.values() for e in split]
    write_json(
        root / "sim" / "datalist.json",
        {
            "training": [e for e in entries if e["case"] == "case_0000"],
            "validation": [],
            "test": [e for e in entries if e["case"] == "case_0001"],
        },
    )
    models, meta = build_from_cases(root / "cohort")
    save_shape_models(root / "ssm.npz", models, meta)
    tiny_checkpoint(root / "model.pt")
    return root / "sim"


def tiny_checkpoint(path: Path, seed: int = 0, features: list[int] = FEATURES, faces: int = 2) -> Path:
    """State dict of an untrained DualFaceDepthNet (tiny :data:`FEATURES` unless given) made after
    ``torch.manual_seed(seed)``, saved at ``path``; returns ``path``."""
    torch.manual_seed(seed)
    torch.save(DualFaceDepthNet(features=features, faces=faces).state_dict(), path)
    return path


def write_training_record(folder: Path, overrides: dict | None = None, **trained) -> Path:
    """A training run's record, ``folder/training.json`` (scripts.model.run_record's own writer): the network keys of
    configs/inference.yaml under config-key ``overrides``, with ``trained`` in place of some (``image_size=64``: a
    run trained at 64 px); returns its path."""
    from scripts.model.run_record import RECORD_NAME, run_record, write_run_record
    from scripts.reconstruction.reconstruct import bundle_config

    settings = {**bundle_config(overrides=overrides).get_parsed_content("network_settings"), **trained}
    write_run_record(run_record(settings, 1, None, False, folder), folder)
    return folder / RECORD_NAME


def config_copy(path: Path, config: str = "inference.yaml", **values) -> Path:
    """A copy of ``configs/<config>`` at ``path`` with top-level keys set to ``values`` (JSON values, each key's line
    replaced); returns ``path``."""
    text = (ROOT / "configs" / config).read_text()
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^{key}:.*$", f"{key}: {json.dumps(value)}", text)
        assert n == 1, key
    path.write_text(text)
    return path


# ---------------------------------------------------------------------- outputs, files and stderr
def assert_complete(case_dir: Path, report: bool = True) -> dict:
    """Assert one inference output is whole: depth (64, 64, 6) finite, mask, result.json, non-empty PLY surfaces and
    (``report``) a whole report.png; returns result.json."""
    expected = {"depth.nii.gz", "mask.nii.gz", "result.json"} | ({"report.png"} if report else set())
    assert expected <= {p.name for p in case_dir.iterdir()}, case_dir
    depth = nib.load(str(case_dir / "depth.nii.gz")).get_fdata()
    assert depth.shape == (64, 64, 6) and np.isfinite(depth).all()
    for ply in case_dir.glob("*.ply"):
        assert len(trimesh.load(str(ply), process=False).faces) > 0
    if report:
        assert (case_dir / "report.png").read_bytes()[-8:-4] == b"IEND"  # a whole PNG
    return json.loads((case_dir / "result.json").read_text())


def tree(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under ``root``: compared before and after a run."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def error_lines(err: str, needle: str | Path) -> list[str]:
    """Lines of captured stderr containing ``needle`` (tqdm's carriage-return progress bar removed)."""
    return [line.split("\r")[-1] for line in err.splitlines() if str(needle) in line]


class Booby:
    """Unpickling this runs ``os.mkdir(path)``: a safe loader must refuse it (``path`` must not appear)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def write_dicom_series(
    folder: Path, array: np.ndarray, affine: np.ndarray, series: str = "1.2.826.0.1.3680043.2.1125.2"
) -> Path:
    """A CT series (UID ``series``): one DICOM file per slice k of ``array`` ([i, j, k], voxel-to-RAS ``affine`` in mm
    with i and j in the slice plane); slice positions and orientation written in DICOM's LPS, from ``affine`` by hand.
    """
    folder.mkdir()
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # RAS -> LPS: x and y change sign
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    cosines = lps[:3, :2] / spacing[:2]  # along i (a row's columns), along j (a column's rows)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[2]):
        sl = sitk.GetImageFromArray(np.ascontiguousarray(array[:, :, k].T))  # (rows=j, cols=i)
        sl.SetSpacing(tuple(float(v) for v in spacing[:2]))
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series,
            "0008|0018": f"{series}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in (lps @ [0.0, 0.0, k, 1.0])[:3]),
            "0020|0037": "\\".join(f"{v:g}" for v in cosines.T.ravel()),
            "0018|0050": f"{spacing[2]:g}",
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    return folder
