"""On a CUDA GPU the simulator, training, inference, evaluation and DDP give what they give on the CPU.

Skipped without CUDA (CI has none); run on a GPU machine with ``python -m pytest tests/test_cuda.py``.
The CPU run of the same code is the reference: tolerances are physical (mm, pixels), well above
float32/TF32 rounding and well below anything a user would see.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import trimesh
from scripts.data.phantom import generate_cohort
from scripts.data.simulate import find_cases, load_config, simulate
from scripts.io.files import read_depth_and_mask
from scripts.model.checkpoints import load_network
from scripts.model.networks import DualFaceDepthNet
from scripts.model.training import latest_checkpoint
from tests.helpers import (
    FEATURES,
    ROOT,
    ddp_train_command,
    make_dataset,
    run_bundle,
    run_evaluation,
    train_workflow,
    write_sphere_dataset,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ("cpu", "cuda")


def assert_maps_agree(a: Path, b: Path, depth_tol_mm: float, mask_tol: float) -> None:
    """Masks differ on at most ``mask_tol`` of the bone pixels; depths where both masks hold within ``depth_tol_mm``."""
    depth_a, mask_a = read_depth_and_mask(a / "depth.nii.gz", a / "mask.nii.gz")
    depth_b, mask_b = read_depth_and_mask(b / "depth.nii.gz", b / "mask.nii.gz")
    flipped = (mask_a != mask_b).sum() / max(1, (mask_a | mask_b).sum())
    assert flipped <= mask_tol, f"{a.name}: {flipped:.2%} of the bone pixels change mask"
    both = np.repeat(mask_a & mask_b, 2, axis=0)
    err = np.abs(depth_a - depth_b)[both]
    assert (
        err.max() <= depth_tol_mm
    ), f"{a.name}: depth differs by up to {err.max():.4f} mm (median {np.median(err):.4f})"


@pytest.fixture(scope="module")
def spheres(tmp_path_factory) -> Path:
    """The tiny sphere training data set of tests/test_training.py."""
    root = tmp_path_factory.mktemp("cuda_spheres")
    write_sphere_dataset(root, n_cases=2, size=64)
    return root


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """One 3 mm phantom."""
    root = tmp_path_factory.mktemp("cuda_cohort")
    generate_cohort(1, root, seed=7, spacing_mm=3.0, anatomy_name="procedural")
    return root


@pytest.fixture(scope="module")
def radiographs(cohort, tmp_path_factory) -> Path:
    """The phantom's 2 poses at the standard geometry, simulated on the CPU (default style, quantum noise included)."""
    out = tmp_path_factory.mktemp("cuda_sim")
    _, errors = simulate(find_cases(cohort), out, poses=2, device="cpu")
    assert not errors
    return out


def test_simulator_on_cuda_matches_cpu(cohort, tmp_path):
    """DRR, depth maps and masks. Quantum noise is off: a Poisson draw follows its expected count, whose
    last float bit can differ between devices, and one different draw shifts the rest of the stream."""
    cfg = load_config()
    cfg["style"].update(quanta_per_mm2=0.0, electronic_noise=0.0, bits_stored=16.0)
    for device in DEVICES:
        _, errors = simulate(find_cases(cohort), tmp_path / device, poses=2, cfg=cfg, device=device)
        assert not errors
    samples = sorted(p.name for p in (tmp_path / "cpu").glob("case_*"))
    assert samples and samples == sorted(p.name for p in (tmp_path / "cuda").glob("case_*"))
    for name in samples:
        a, b = tmp_path / "cpu" / name, tmp_path / "cuda" / name
        image_a, image_b = (nib.load(str(d / "image.nii.gz")).get_fdata() for d in (a, b))
        assert np.abs(image_a - image_b).max() <= 1e-3 * np.ptp(image_a), name
        assert_maps_agree(a, b, depth_tol_mm=0.01, mask_tol=1e-3)


def test_shipped_model_inference_on_cuda_matches_cpu(radiographs, tmp_path):
    """The inference workflow with the shipped model and shape models, on each device, on the same radiographs."""
    for device in DEVICES:
        run_bundle("inference.yaml", input_dir=str(radiographs), output_dir=str(tmp_path / device), device=device)
    names = sorted(p.name for p in (tmp_path / "cpu").iterdir() if p.is_dir())
    assert names and names == sorted(p.name for p in (tmp_path / "cuda").iterdir() if p.is_dir())
    for name in names:
        a, b = tmp_path / "cpu" / name, tmp_path / "cuda" / name
        assert_maps_agree(a, b, depth_tol_mm=0.1, mask_tol=5e-3)
        result_a, result_b = (json.loads((d / "result.json").read_text()) for d in (a, b))
        for bone, ra in result_a["bones"].items():
            rb = result_b["bones"][bone]
            assert ra["found"] == rb["found"], (name, bone)
            if not ra["found"]:
                continue
            assert rb["centre_depth_mm"] == pytest.approx(ra["centre_depth_mm"], abs=0.05), (name, bone)
            ma, mb = (trimesh.load(str(d / f"{bone}_completed.ply"), process=False) for d in (a, b))
            assert len(ma.vertices) == len(mb.vertices)  # the shape model's topology on both
            rms = float(np.sqrt(((ma.vertices - mb.vertices) ** 2).sum(1).mean()))
            assert rms < 0.1, f"{name} {bone}: completed meshes differ by {rms:.3f} mm RMS"


def test_training_on_cuda_round_trips_to_cpu(spheres, tmp_path):
    """Two epochs on the GPU; the best model loads on the CPU and predicts what the GPU network predicts."""
    wf = train_workflow(spheres, tmp_path / "run", device="cuda", epochs=2)
    assert next(wf.parser.get_parsed_content("network").parameters()).is_cuda
    wf.run()
    wf.finalize()
    assert latest_checkpoint(tmp_path / "run").endswith("checkpoint_epoch=2.pt")
    on_cpu = load_network(tmp_path / "run" / "models" / "model.pt", DualFaceDepthNet(features=FEATURES), "cpu")
    on_gpu = load_network(tmp_path / "run" / "models" / "model.pt", DualFaceDepthNet(features=FEATURES), "cuda")
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = on_cpu(x), on_gpu(x.cuda()).cpu()
    assert torch.isfinite(a).all()
    torch.testing.assert_close(b, a, rtol=1e-2, atol=1e-2 * float(a.abs().max()))


def test_evaluation_on_cuda_matches_cpu(tmp_path):
    data = make_dataset(tmp_path / "data")
    metrics = {}
    for device in DEVICES:
        out = run_evaluation(
            data,
            tmp_path / device,
            device,
            ckpt_path=str(data.parent / "model.pt"),
            single_face_ckpt_path=str(tmp_path / "absent.pt"),
        )
        metrics[device] = {(r["variant"], r["shift"], r["bone"]): r for r in out["means"]}
    assert metrics["cpu"] and metrics["cuda"].keys() == metrics["cpu"].keys()
    for row, cpu in metrics["cpu"].items():
        for key in ("assd_mm", "hd95_mm", "depth_mae_mm", "dice"):
            got = metrics["cuda"][row][key]
            assert (got is None) == (cpu[key] is None) and (
                got is None or got == pytest.approx(cpu[key], rel=0.02, abs=0.05)
            ), (row, key)


def test_ddp_nccl_on_one_gpu(spheres, tmp_path):
    run = tmp_path / "ddp"
    cmd = ddp_train_command(spheres, run, processes=1)
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert latest_checkpoint(run).endswith("checkpoint_epoch=2.pt") and (run / "models" / "model.pt").exists()
