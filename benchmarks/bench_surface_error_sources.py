"""Where does the surface error come from? The shape-model completions' ASSD (mm, estimated shift, as in
the evaluation) split into pose and shape: the same surfaces with the hip-joint angle an AP view hardly
shows (femur flexion, pelvic tilt) set right, with their translation set right, and with their whole
rigid pose set right; plus what guessing that angle alone would cost a perfect reconstruction.

    python benchmarks/bench_surface_error_sources.py --dataset_dir runs/sim_test [--split test] [--n 60]
        [--ckpt models/model.pt] [--output_dir bench_surface_error_sources] [--name test]

Needs real-anatomy samples (``--anatomy llp26`` cohorts, the test and validation subjects): their true
meshes share the shipped shape models' vertices, and their ``params.json`` holds the true hip pose.
Each correction moves the completed surface (world frame of the case, mm) onto the truth over the
vertices inside the X-ray field and the CT's box, and is scored with the evaluation's clipped ASSD:

- ``angle``: the rotation about the world left-right axis (x) that the best rigid fit of completion to
  truth contains, taken out about the femoral head centre (femurs) or the acetabular midpoint (pelvis);
- ``translation``: the mean vertex offset taken out;
- ``rigid``: the best rigid fit (Kabsch) applied: what is left is shape.

``floor``: the true surface turned from its true angle to the cohort's mean (femur flexion 3.5 degrees,
pelvic tilt 0; scripts/data/real_anatomy.py), i.e. the error of a reconstruction perfect but for that
angle. Writes surface_error_sources_<name>.json and .png; prints a Markdown table for docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import trimesh  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from tqdm import tqdm  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_centre_depth import rms  # noqa: E402
from benchmarks.bench_depth_offsets import fixed_subset  # noqa: E402
from scripts.io.files import read_json  # noqa: E402
from scripts.reconstruction.evaluate import load_sample  # noqa: E402
from scripts.reconstruction.reconstruct import Reconstructor, build_reconstructor  # noqa: E402
from scripts.reconstruction.surface_metrics import ReferenceSurface, inside_planes  # noqa: E402
from scripts.shape_maths import kabsch, rotation_about  # noqa: E402

MEAN_ANGLE_DEG = {
    "pelvis": 0.0,
    "femur_left": 3.5,
    "femur_right": 3.5,
}  # cohort means of tilt and flexion (sample_pose)
HEAD_RADIUS_MM = 25.0  # true femur vertices this close to the head centre are the head
ACETABULUM_RADIUS_MM = 35.0  # true pelvis vertices this close to a head centre are its socket
CORRECTIONS = ("estimated", "angle", "translation", "rigid")


def about_x(angle_deg: float) -> np.ndarray:
    """Rotation (3, 3) by ``angle_deg`` about the world x axis (left-right: femur flexion, pelvic tilt)."""
    return rotation_about(np.array([1.0, 0.0, 0.0]), math.radians(angle_deg))


def turned(verts: np.ndarray, rot: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``verts`` (N, 3) turned by ``rot`` about ``centre``."""
    return (verts - centre) @ rot.T + centre


def bone_parts(pred: np.ndarray, truth: np.ndarray, seen: np.ndarray, pivot: np.ndarray) -> dict[str, np.ndarray]:
    """Completed vertices ``pred`` (world, mm) with each correction applied, and ``turn_deg``, the rotation about
    x in the best rigid fit of completion to truth; ``truth`` the true vertices in correspondence, ``seen``
    (N,) bool the vertices in view, ``pivot`` the completion's joint the angle is taken out about."""
    a, b = pred[seen], truth[seen]
    rot = kabsch(a, b)  # completion -> truth
    angle = math.degrees(Rotation.from_matrix(rot).as_rotvec()[0])
    return {
        "estimated": pred,
        "angle": turned(pred, about_x(angle), pivot),
        "translation": pred + (b.mean(0) - a.mean(0)),
        "rigid": (pred - a.mean(0)) @ rot.T + b.mean(0),
        "turn_deg": angle,  # the rotation about x that takes the completion toward the truth
    }


def joint_pose(truth: np.ndarray, params: dict, bone: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The joint a bone's angle turns about (world, mm), its vertices (N,) bool, the true angle (degrees) and
    the sign that angle turns the bone with about x (femur flexion +1; pelvic tilt -1, ``assemble``)."""
    if (
        bone == "pelvis"
    ):  # tilt about the acetabular midpoint, the world origin; the sockets hold the femoral head centres
        heads = [np.asarray(params[f]["head_centre_mm"]) for f in ("femur_left", "femur_right")]
        joint = np.min([np.linalg.norm(truth - h, axis=1) for h in heads], axis=0) < ACETABULUM_RADIUS_MM
        return np.zeros(3), joint, float(params["pelvic_tilt_deg"]), -1.0
    head = np.asarray(params[bone]["head_centre_mm"])
    return head, np.linalg.norm(truth - head, axis=1) < HEAD_RADIUS_MM, float(params[bone]["flexion_deg"]), 1.0


def sample_rows(entry: dict, dataset_dir: Path, rec: Reconstructor) -> list[dict]:
    """One row per bone of one radiograph: ASSD (mm) per correction, floor, true and predicted-minus-true angle."""
    s = load_sample(entry, dataset_dir)
    params = read_json(Path(dataset_dir, entry["meshes"]["pelvis"]).parent.parent / "params.json")
    pred = rec.predict(s.image, s.geometry, s.fov)
    completed = rec.reconstruct(pred, pred.centre_mm).completed
    field = s.field or s.geometry
    rows = []
    for bone, truth_cam in s.meshes.items():
        mesh = completed.get(bone)
        if mesh is None or len(mesh.vertices) != len(truth_cam.vertices):
            raise SystemExit(
                f"{s.name}: {bone} completion and truth are not in vertex correspondence (real-anatomy samples only)"
            )
        ref = ReferenceSurface(truth_cam, field, 1.0, 20000, seed=1, extent_planes=s.extent_planes)
        true_cam = np.asarray(truth_cam.vertices)
        seen = field.in_field_of_view(true_cam)
        if s.extent_planes:
            seen &= inside_planes(true_cam, s.extent_planes)
        truth = s.geometry.camera_to_world_points(true_cam)
        world = s.geometry.camera_to_world_points(np.asarray(mesh.vertices))
        pivot, joint, angle, sign = joint_pose(truth, params, bone)
        parts = bone_parts(world, truth, seen, pivot + world[joint].mean(0) - truth[joint].mean(0))

        def to_cam(v: np.ndarray, faces: np.ndarray = mesh.faces) -> trimesh.Trimesh:
            return trimesh.Trimesh(s.geometry.world_to_camera_points(v), faces, process=False)

        offset = s.geometry.world_to_camera_points(world[seen].mean(0)[None])[0] - true_cam[seen].mean(0)
        row = {
            "sample": s.name,
            "bone": bone,
            "angle_deg": angle,
            "angle_error_deg": -sign * parts.pop("turn_deg"),
            "offset_camera_mm": offset.tolist(),
        }
        row.update({k: ref.metrics(to_cam(v))["assd_mm"] for k, v in parts.items()})
        row["floor"] = ref.metrics(
            to_cam(turned(truth, about_x(sign * (MEAN_ANGLE_DEG[bone] - angle)), pivot), truth_cam.faces)
        )["assd_mm"]
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    """Per bone: mean ASSD per correction and floor (mm), the angle's spread and the completion's angle error
    (degrees), and the RMS offset of the in-view vertices' centroid along camera x, y, z (mm; z: depth)."""
    out = {}
    for bone in dict.fromkeys(r["bone"] for r in rows):
        rs = [r for r in rows if r["bone"] == bone]
        dev = np.array([r["angle_deg"] - MEAN_ANGLE_DEG[bone] for r in rs])
        err = np.array([r["angle_error_deg"] for r in rs])
        out[bone] = {
            "n": len(rs),
            **{k: float(np.mean([r[k] for r in rs])) for k in (*CORRECTIONS, "floor")},
            "angle_sd_deg": rms(dev),
            "angle_error_rms_deg": rms(err),
            "offset_rms_camera_mm": np.sqrt(np.mean(np.square([r["offset_camera_mm"] for r in rs]), axis=0)).tolist(),
            "angle_error_slope": float(np.polyfit(dev, err, 1)[0]) if np.ptp(dev) > 0 else float("nan"),
        }
    return out


def plot(rows: list[dict], summary: dict, name: str, path: Path) -> None:
    """Bars: ASSD per bone and correction; scatter: completion's angle error against the true angle's deviation."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
    bones = list(summary)
    labels = {
        "estimated": "as reconstructed",
        "angle": "flexion / tilt set right",
        "translation": "translation set right",
        "rigid": "rigid pose set right (shape left)",
        "floor": "truth at the mean angle",
    }
    w = 0.8 / len(labels)
    for i, k in enumerate(labels):
        a.bar(np.arange(len(bones)) + i * w, [summary[bn][k] for bn in bones], w, label=labels[k])
    a.set_xticks(np.arange(len(bones)) + 0.4 - w / 2, bones)
    a.set_ylabel("ASSD (mm)")
    a.set_title(f"{name}: completed surfaces, estimated shift")
    a.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    for bone in bones:
        rs = [r for r in rows if r["bone"] == bone]
        b.scatter(
            [r["angle_deg"] - MEAN_ANGLE_DEG[bone] for r in rs], [r["angle_error_deg"] for r in rs], s=12, label=bone
        )
    lim = max(1.0, max(abs(r["angle_deg"] - MEAN_ANGLE_DEG[r["bone"]]) for r in rows))
    b.plot([-lim, lim], [lim, -lim], "k--", lw=1, label="angle not seen (mean guessed)")
    b.axhline(0, color="grey", lw=0.5)
    b.set_xlabel("true flexion / tilt minus the cohort mean (degrees)")
    b.set_ylabel("completion minus truth (degrees)")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset_dir", required=True, help="simulated real-anatomy data set (datalist.json)")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=60, help="radiographs (a fixed random subset; all when fewer)")
    p.add_argument("--ckpt", default=str(ROOT / "models" / "model.pt"))
    p.add_argument("--output_dir", default="bench_surface_error_sources")
    p.add_argument("--name", default=None, help="label of this set in the outputs (default: the split)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    name = args.name or args.split
    rec = build_reconstructor(ckpt_path=args.ckpt, device="cpu").load()
    rows = [
        r
        for e in tqdm(fixed_subset(args.dataset_dir, args.split, args.n), desc=name)
        for r in sample_rows(e, Path(args.dataset_dir), rec)
    ]
    summary = summarise(rows)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"surface_error_sources_{name}.json").write_text(
        json.dumps(
            {
                "ckpt": args.ckpt,
                "dataset_dir": str(args.dataset_dir),
                "split": args.split,
                "summary": summary,
                "rows": rows,
            },
            indent=2,
        )
    )
    plot(rows, summary, name, out / f"surface_error_sources_{name}.png")
    print(
        "| set | bone | radiographs | ASSD as reconstructed | angle set right | translation set right | "
        "rigid pose set right | truth at the mean angle | angle SD / completion's error RMS (deg), slope "
        "| offset RMS x / y / z (mm) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for bone, r in summary.items():
        print(
            f"| {name} | {bone} | {r['n']} | "
            + " | ".join(f"{r[k]:.2f}" for k in (*CORRECTIONS, "floor"))
            + f" | {r['angle_sd_deg']:.1f} / {r['angle_error_rms_deg']:.1f}, {r['angle_error_slope']:.2f} | "
            + " / ".join(f"{x:.1f}" for x in r["offset_rms_camera_mm"])
            + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
