"""Real-image checks of the shipped model, one command each (results: docs/real_radiographs.md).

    python -m benchmarks.real_images gallery [--radiographs DIR] [--pixel-spacing-mm 0.9] [--docs docs]
    python -m benchmarks.real_images ct [--ct CT --labels LABELS --label-map totalsegmentator] [--poses 4] [--docs docs]
                                        [--posterior-fat-mm MM]   # what-if, prints only (with_posterior_fat)
                                        [--phantom-bone CORTEX_HU TRABECULAR_HU]   # what-if, prints only (with_phantom_bone)

``gallery``: the inference workflow (configs/inference.yaml) on every real radiograph of
``../shared/data/real_radiographs`` -> ``docs/figures/real_<name>.png`` (its report.png) and the
gallery section of docs/real_radiographs.md: per image the bones found, the mask pixels predicted
outside the radiograph's own area (the padding of the standard field) and whether each bone's mask
lies on its side of the principal point's column (femur_left at larger u, scripts/geometry.py; :data:`SIDE_FRACTION`).

``ct``: radiographs simulated (configs/simulate.yaml, with ``--config`` merged over it; ``--poses``
seeded poses) from the shared real
CT with its TotalSegmentator masks -> the shipped model's mask Dice per bone in view (target at
least :data:`DICE_TARGET`) and how high its masks sit (:func:`scripts.reconstruction.evaluate.mask_top_edge_px`), the
ASSD (mm) of the dual-face and dual-face + shape-model surfaces (truth and prediction
clipped to the exposed field and the CT's box) per bone with the evaluation's depth shifts
(network centre depth, fixed-geometry prior, true centre: :func:`scripts.reconstruction.evaluate.evaluate_sample`),
and the centre-depth error (mm); writes docs/figures/drr_real_ct.png (pose 0: radiograph, true masks,
depth) and docs/figures/real_ct_check.png (predicted vs true masks) and the real-CT section of
docs/real_radiographs.md. Exit status :data:`BELOW_TARGET` when a bone in view misses the Dice target.

Both rerun with another checkpoint (``--ckpt_path``, ``--ssm_path``) after a model release. Work files
go to ``--work`` (default: a temporary folder, removed afterwards).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from scripts import BUNDLE_ROOT  # noqa: E402
from scripts.data.simulate import Case, case_name_of, load_config, simulate  # noqa: E402
from scripts.data.volumes import load_label_map, read_ct, read_labels, remove_couch  # noqa: E402
from scripts.geometry import Geometry, read_standard_geometry  # noqa: E402
from scripts.io.files import (  # noqa: E402
    atomic_path,
    exits_on_input_error,
    read_depth_and_mask,
    read_json,
    shared_data_dir,
    write_json,
    write_nifti,
)
from scripts.io.radiograph_io import field_of_view, iter_radiographs, load_radiograph  # noqa: E402
from scripts.io.report import bone_colour, overlay_masks, save_figure  # noqa: E402
from scripts.model.training import load_datalist  # noqa: E402
from scripts.reconstruction.evaluate import evaluate_sample, load_sample, mask_dice, mask_top_edge_px  # noqa: E402
from scripts.reconstruction.plausibility import side_fractions  # noqa: E402
from scripts.reconstruction.reconstruct import (  # noqa: E402
    INFERENCE_CONFIG,
    build_reconstructor,
    mean_masked_depth,
    true_face_mask,
)
from scripts.reconstruction.runner import ReconstructionRunner  # noqa: E402
from scripts.reconstruction.surface_metrics import surface_metrics  # noqa: E402
from tqdm import tqdm  # noqa: E402

DICE_TARGET = 0.85
BELOW_TARGET = 3  # exit status of `ct` when a bone's Dice is below DICE_TARGET (1: bad input, 2: bad options)
DOCS = BUNDLE_ROOT / "docs"
SHARED = shared_data_dir() or Path("/nonexistent")
REAL_RADIOGRAPHS = SHARED / "real_radiographs"
REAL_CT_DIR = SHARED / "real_ct"
GALLERY_PIXEL_SPACING_MM = 0.9  # NOTICE.md: about 0.8-1.0 mm per pixel at the detector for these infant films


# ---------------------------------------------------------------------- gallery
SIDE_FRACTION = {
    "femur_left": 0.95,
    "femur_right": 0.95,
    "pelvis": 0.25,
}  # least fraction on its side (pelvis: on each side)


def sides_ok(sides: Mapping[str, float]) -> bool:
    """Every bone found and its mask on its side (:func:`scripts.reconstruction.plausibility.side_fractions`
    about the principal point's column, at least :data:`SIDE_FRACTION`)."""
    return all(sides.get(bone, -1.0) >= least for bone, least in SIDE_FRACTION.items())


def run_gallery(
    radiographs: Path, out_dir: Path, pixel_spacing_mm: float, overrides: Mapping | None = None
) -> list[dict]:
    """Reconstruct every radiograph under ``radiographs`` into ``out_dir/<name>/``; per image the checks above."""
    reconstructor = build_reconstructor(INFERENCE_CONFIG, **dict(overrides or {}))
    rows = []
    for path in iter_radiographs(radiographs):
        name = path.name.split(".")[0]
        ReconstructionRunner(
            reconstructor, path, out_dir / name, pixel_spacing_mm=pixel_spacing_mm, overwrite=True
        ).run()
        folder = next(d for d in (out_dir / name).iterdir() if (d / "result.json").is_file())
        geometry = Geometry.from_dict(read_json(folder / "result.json")["geometry"])
        _, mask = read_depth_and_mask(folder / "depth.nii.gz", folder / "mask.nii.gz")
        mask = mask.astype(bool)
        native = Geometry.from_dict(
            load_radiograph(path, Geometry.standard(), pixel_spacing_mm=pixel_spacing_mm)[2]["native_geometry"]
        )
        area = field_of_view(native, geometry) > 0.5  # pixels whose ray meets the radiograph, not the padding
        sides = side_fractions(mask, geometry.bones, geometry.principal_point_px[0])
        rows.append(
            {
                "name": name,
                "report": folder / "report.png",
                "found": [b for b in geometry.bones if b in sides],
                "outside_px": int((mask & ~area).sum()),
                "mask_px": int(mask.sum()),
                "side_fraction": sides,
                "sides_ok": sides_ok(sides),
                "mask": mask,
                "image_area": area,
            }
        )
    return rows


# ---------------------------------------------------------------------- simulated real CT
def checkpoint_label(path: str | Path) -> str:
    """The checkpoint a run uses as its progress bar shows it: relative to the bundle inside it (models/model.pt: the
    shipped one)."""
    resolved = Path(path).resolve()
    return (
        resolved.relative_to(BUNDLE_ROOT.resolve()).as_posix()
        if BUNDLE_ROOT.resolve() in resolved.parents
        else str(path)
    )


def run_ct_check(
    ct: Path,
    labels: Path,
    label_map: str | None,
    poses: int,
    seed: int,
    work: Path,
    overrides: Mapping | None = None,
    surfaces: bool = True,
    config: Path | None = None,
) -> dict:
    """Simulate ``poses`` radiographs of the CT (simulator ``config`` merged over configs/simulate.yaml) into ``work``
    and score the shipped model on each (all in the test list); ``surfaces=False``: masks only (no meshing,
    shape-model fit or ASSD). The CT is rendered as it is (``ct_end`` and ``ct_sides`` off: its box ends in the field already).
    """
    cfg = {**load_config(config), "ct_end": {"probability": 0.0}, "ct_sides": {"probability": 0.0}}
    geometry, s2o = read_standard_geometry()
    _, errors = simulate(
        [Case(case_name_of(ct), ct, labels)],
        work,
        poses,
        seed,
        cfg,
        geometry,
        s2o,
        load_label_map(label_map),
        split="test",
        overwrite=True,
    )
    if errors:
        raise RuntimeError("; ".join(errors))
    reconstructor = build_reconstructor(INFERENCE_CONFIG, **dict(overrides or {})).load()
    samples = []
    for entry in tqdm(load_datalist(work, "test"), desc=checkpoint_label(reconstructor.ckpt_path), unit="radiograph"):
        sample = load_sample(entry, work, reconstructor.image_size)
        pred = reconstructor.predict(sample.image, sample.geometry, sample.fov)
        in_view = [b for b, m in zip(sample.geometry.bones, sample.mask, strict=True) if m.any()]
        assd = {}
        if (
            surfaces
        ):  # the evaluation's variants and shifts; the prior is the standard geometry's source-object distance
            rows, shown = evaluate_sample(sample, {"dual_face": pred}, {"dual_face": reconstructor}, {2: s2o, 1: s2o})
            assd = {f"{r['variant']}/{r['shift']}/{r['bone']}": r["assd_mm"] for r in rows if r["bone"] in in_view}
            for bone in in_view:  # as evaluated before the CT's box was taken into account: the cone only
                if bone in shown.get("meshes", {}) and bone in sample.meshes:
                    assd[f"dual_face_ssm/centre_cone_only/{bone}"] = surface_metrics(
                        shown["meshes"][bone], sample.meshes[bone], pred.geometry
                    )["assd_mm"]
        samples.append(
            {
                "name": sample.name,
                "in_view": in_view,
                "dice": {
                    b: d for b, d in mask_dice(pred.mask, sample.mask, sample.geometry.bones).items() if b in in_view
                },
                "top_edge_px": {
                    b: d
                    for b, d in mask_top_edge_px(pred.mask, sample.mask, sample.geometry.bones).items()
                    if b in in_view
                },
                "assd_mm": assd,
                "centre_mm": {
                    "estimated": pred.centre_mm,
                    "true": mean_masked_depth(sample.depth, true_face_mask(sample.depth, sample.mask, 2)),
                },  # truth at the network size (load_sample)
                "pelvis_table_clearance_mm": read_json(Path(entry["image"]).parent / "sample.json").get(
                    "pelvis_table_clearance_mm"
                ),
                "image": sample.image,
                "mask": sample.mask,
                "pred_mask": pred.mask,
                "entry": entry,
            }
        )
    bones = list(dict.fromkeys(b for s in samples for b in s["in_view"]))
    mean = lambda values: float(np.nanmean(values)) if len(values) else float("nan")  # noqa: E731
    summary = {
        "ct": str(ct),
        "labels": str(labels),
        "poses": poses,
        "seed": seed,
        "dice_target": DICE_TARGET,
        "config": str(config or "configs/simulate.yaml"),
        "dice": {b: mean([s["dice"][b] for s in samples if b in s["dice"]]) for b in bones},
        "dice_min": {b: float(np.min([s["dice"][b] for s in samples if b in s["dice"]])) for b in bones},
        "top_edge_px": {b: [s["top_edge_px"][b] for s in samples if b in s["top_edge_px"]] for b in bones},
        "assd_mm": {
            k: mean([s["assd_mm"][k] for s in samples if k in s["assd_mm"]])
            for k in sorted({k for s in samples for k in s["assd_mm"]})
        },
        "centre_error_mm": mean([s["centre_mm"]["estimated"] - s["centre_mm"]["true"] for s in samples]),
        "centre_true_mm": mean([s["centre_mm"]["true"] for s in samples]),
        "prior_centre_mm": s2o,
        "pelvis_table_clearance_mm": mean(
            [s["pelvis_table_clearance_mm"] for s in samples if s["pelvis_table_clearance_mm"] is not None]
        ),
        "per_pose": [
            {
                k: s[k]
                for k in ("name", "in_view", "dice", "top_edge_px", "assd_mm", "centre_mm", "pelvis_table_clearance_mm")
            }
            for s in samples
        ],
    }
    summary["meets_dice_target"] = all(v >= DICE_TARGET for v in summary["dice_min"].values())
    summary["samples"] = samples
    return summary


def with_posterior_fat(
    ct_path: Path,
    labels_path: Path,
    label_map: str | None,
    fat_mm: float,
    out_dir: Path,
    fat_hu: float = -100.0,
    body_hu: float = -500.0,
    contact_mm: float = 6.0,
) -> tuple[Path, Path]:
    """A what-if for the centre depth: copies of a CT (couch removed) and its bone labels (ids 1..3) with about
    ``fat_mm`` (mm) of fat (``fat_hu``) laid under the back, the tissue under the pelvis that an AP radiograph
    hardly shows. The voxel axis nearest RAS y is extended posteriorly by ``round(fat_mm / spacing)`` rows, filled
    from the new posterior surface up to the skin in every column whose skin lies within ``contact_mm`` of its
    axial slice's most posterior skin (where the back rests on the table). Returns (CT, labels) in ``out_dir``; the CT
    keeps its case name, so the simulator draws the same poses as for the original (a paired comparison)."""
    ct = remove_couch(read_ct(ct_path), body_hu)[0]
    labels = read_labels(labels_path, ct, load_label_map(label_map))
    axis = int(np.argmax(np.abs(ct.affine[1, :3])))
    spacing = float(ct.spacing[axis])
    rows, reach = int(round(fat_mm / spacing)), int(round(contact_mm / spacing))
    step = 1 if ct.affine[1, axis] > 0 else -1  # voxel index growing anteriorly: posterior rows go first
    hu, bone = (np.moveaxis(v.array, axis, 1)[:, ::step] for v in (ct, labels))
    body = hu > body_hu
    skin = np.where(body.any(1), body.argmax(1), hu.shape[1])  # (i, k): first body row from the back
    hu = np.concatenate([np.full((hu.shape[0], rows, hu.shape[2]), -1000.0, hu.dtype), hu], axis=1)
    bone = np.concatenate([np.zeros((bone.shape[0], rows, bone.shape[2]), bone.dtype), bone], axis=1)
    for k in np.flatnonzero(body.any(axis=(0, 1))):
        back = int(skin[:, k].min())
        for i in np.flatnonzero(skin[:, k] <= back + reach):
            hu[i, back : skin[i, k] + rows, k] = fat_hu
    affine = ct.affine.copy()
    if step == 1:
        affine[:3, 3] -= affine[:3, axis] * rows
    hu, bone = (np.ascontiguousarray(np.moveaxis(a[:, ::step], 1, axis)) for a in (hu, bone))
    return _write_what_if(ct_path, out_dir, hu, bone, affine)


def with_phantom_bone(
    ct_path: Path,
    labels_path: Path,
    label_map: str | None,
    cortex_hu: float,
    trabecular_hu: float,
    out_dir: Path,
    metal_hu: float = 2000.0,
) -> tuple[Path, Path]:
    """A what-if for the bones' look: copies of a CT and its bone labels (ids 1..3) whose voxels inside each bone label
    get the phantoms' kind of bone (scripts/data/phantom.py): ``cortex_hu`` on the label's outermost voxels (those with a
    6-connected neighbour outside it), ``trabecular_hu`` inside; metal (at least ``metal_hu``) is kept. Shapes, poses,
    soft tissue and everything else stay the CT's. Returns (CT, labels) in ``out_dir``; the CT keeps its case name, so
    the simulator draws the same poses as for the original (a paired comparison)."""
    ct = read_ct(ct_path)
    labels = read_labels(labels_path, ct, load_label_map(label_map))
    hu = ct.array.copy()
    for label in np.unique(labels.array[labels.array > 0]):
        bone = labels.array == label
        inner = ndimage.binary_erosion(bone, border_value=0)
        keep = hu >= metal_hu
        hu[bone & ~inner & ~keep] = cortex_hu
        hu[inner & ~keep] = trabecular_hu
    return _write_what_if(ct_path, out_dir, np.round(hu).astype(np.int16), labels.array.astype(np.uint8), ct.affine)


def _write_what_if(
    ct_path: Path, out_dir: Path, hu: np.ndarray, labels: np.ndarray, affine: np.ndarray
) -> tuple[Path, Path]:
    """A what-if's CT and labels written into ``out_dir`` under the CT's case name (so the simulator draws its poses)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    case = case_name_of(ct_path)
    paths = out_dir / f"{case}.nii.gz", out_dir / f"{case}_labels.nii.gz"
    for path, array in zip(paths, (hu, labels), strict=True):
        write_nifti(path, array, affine)
    return paths


def save_ct_check_figure(path: Path, samples: Sequence[dict], bones: Sequence[str]) -> None:
    """Per pose: the simulated radiograph with the true (solid) and predicted (dashed) masks."""
    fig, axs = plt.subplots(1, len(samples), figsize=(3.6 * len(samples), 3.9), squeeze=False)
    for ax, s in zip(axs[0], samples, strict=True):
        overlay_masks(
            ax,
            s["image"] if s["image"].shape == s["mask"].shape[1:] else _area_resize(s["image"], s["mask"].shape[1:]),
            np.moveaxis(s["mask"], 0, -1),
            bones,
            s["name"],
        )
        for b, bone in enumerate(bones):
            if s["pred_mask"][b].any():
                ax.contour(
                    s["pred_mask"][b].astype(float),
                    levels=[0.5],
                    colors=[bone_colour(bone)],
                    linewidths=1.0,
                    linestyles="dashed",
                )
    handles = [plt.Line2D([], [], color=bone_colour(b), lw=2, label=b) for b in bones]
    handles += [
        plt.Line2D([], [], color="k", lw=1, label="truth"),
        plt.Line2D([], [], color="k", lw=1, ls="--", label="shipped model"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    save_figure(fig, path)


def _area_resize(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    import torch

    return torch.nn.functional.interpolate(torch.as_tensor(image)[None, None], size=tuple(shape), mode="area")[
        0, 0
    ].numpy()


# ---------------------------------------------------------------------- docs
def replace_section(doc: Path, name: str, text: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``doc`` (appended when absent), atomically."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    old = doc.read_text() if doc.exists() else ""
    block = f"{start}\n{text.rstrip()}\n{end}"
    new = (
        old[: old.index(start)] + block + old[old.index(end) + len(end) :]
        if start in old and end in old
        else old.rstrip() + "\n\n" + block + "\n"
    )
    with atomic_path(doc) as tmp:
        tmp.write_text(new)


def gallery_markdown(rows: Sequence[dict], pixel_spacing_mm: float, command: str) -> str:
    lines = [
        f"Generated by `{command}` (pixel pitch {pixel_spacing_mm} mm assumed, standard SID).",
        "",
        "| image | bones found | mask pixels outside the image / all | fraction of each mask on its side "
        "(femur_left: larger u; pelvis: the smaller side) | sides right |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        sides = ", ".join(f"{b} {f:.2f}" for b, f in r["side_fraction"].items())
        lines.append(
            f"| {r['name']} | {', '.join(r['found']) or '-'} | {r['outside_px']} / {r['mask_px']} | "
            f"{sides} | {'yes' if r['sides_ok'] else 'NO'} |"
        )
    lines.append("")
    lines += [f"![{r['name']}](figures/real_{r['name']}.png)" for r in rows]
    return "\n".join(lines)


def ct_markdown(summary: Mapping, command: str) -> str:
    fmt = lambda v: "-" if v is None or not np.isfinite(v) else f"{v:.2f}"  # noqa: E731
    bones = list(summary["dice"])
    columns = (
        ("dual_face", "centre"),
        ("dual_face_ssm", "centre"),
        ("dual_face_ssm", "prior"),
        ("dual_face_ssm", "oracle"),
        ("dual_face_ssm", "centre_cone_only"),
    )
    lines = [
        f"Generated by `{command}`: {summary['poses']} simulated poses (seed {summary['seed']}, "
        f"{Path(summary['config']).name}) of the shared",
        "real CT with its TotalSegmentator masks; surfaces clipped to the exposed field and to the CT's "
        "box, as the evaluation does. ASSD in mm with the network's",
        f"centre depth, the fixed-geometry prior ({summary['prior_centre_mm']:.0f} mm from the source) "
        "and the true centre depth (oracle). Mask top edge:",
        "the prediction's topmost row minus the truth's, median over the columns both reach (negative: "
        "the prediction sits higher).",
        "",
        f"| bone | mask Dice mean (min), target >= {summary['dice_target']} | mask top edge, px (per "
        "pose) | dual-face | dual-face + shape model | same, prior | same, oracle | same as the second, "
        "clipped to the cone only |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in bones:
        assd = [fmt(summary["assd_mm"].get(f"{v}/{shift}/{b}")) for v, shift in columns]
        edges = " / ".join("-" if not np.isfinite(v) else f"{v:+.0f}" for v in summary["top_edge_px"].get(b, []))
        lines.append(
            f"| {b} | {fmt(summary['dice'][b])} ({fmt(summary['dice_min'][b])}) | {edges or '-'} | {' | '.join(assd)} |"
        )
    lines += [
        "",
        f"Centre depth: the network's estimate minus the truth {fmt(summary['centre_error_mm'])} mm on "
        f"average (true centre {fmt(summary['centre_true_mm'])} mm from the source;",
        f"the pelvis {fmt(summary['pelvis_table_clearance_mm'])} mm in front of the table, "
        "`pelvis_table_clearance_mm` of docs/simulation.md).",
        "",
        f"Dice target met: **{'yes' if summary['meets_dice_target'] else 'no'}**.",
        "",
        "![real CT check](figures/real_ct_check.png)",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- CLI
@exits_on_input_error
def main(argv: Sequence[str] | None = None) -> int:
    """CLI (``gallery``, ``ct``); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real_images", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for p in (g := sub.add_parser("gallery", help="shipped model on the real radiographs")), (
        c := sub.add_parser("ct", help="shipped model on radiographs simulated from the real CT")
    ):
        p.add_argument("--docs", default=str(DOCS), help="docs folder receiving figures/ and real_radiographs.md")
        p.add_argument("--work", default=None, help="keep work files here (default: temporary)")
        p.add_argument("--ckpt_path", default=None)
        p.add_argument("--ssm_path", default=None)
        p.add_argument("--device", default=None)
    g.add_argument("--radiographs", default=str(REAL_RADIOGRAPHS))
    g.add_argument("--pixel-spacing-mm", type=float, default=GALLERY_PIXEL_SPACING_MM)
    c.add_argument("--ct", default=str(REAL_CT_DIR / "example_ct.nii.gz"))
    c.add_argument("--labels", default=str(REAL_CT_DIR / "example_seg"), help="label volume or TotalSegmentator folder")
    c.add_argument("--label-map", default="totalsegmentator")
    c.add_argument("--poses", type=int, default=4)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument(
        "--config",
        default=None,
        help="simulator YAML merged over configs/simulate.yaml (default: none, the clinical image formation)",
    )
    c.add_argument(
        "--posterior-fat-mm",
        type=float,
        default=0.0,
        help="what-if: lay this much fat (mm) under the CT's back first (with_posterior_fat); prints the "
        "table, writes nothing into --docs",
    )
    c.add_argument(
        "--phantom-bone",
        type=float,
        nargs=2,
        default=None,
        metavar=("CORTEX_HU", "TRABECULAR_HU"),
        help="what-if: the bone labels' voxels get the phantoms' kind of bone first, a one-voxel cortex over a uniform interior "
        "(with_phantom_bone; metal kept); prints the table, writes nothing into --docs",
    )
    args = parser.parse_args(argv)
    overrides = {"ckpt_path": args.ckpt_path, "ssm_path": args.ssm_path, "device": args.device}
    docs = Path(args.docs)
    command = "python -m benchmarks.real_images " + " ".join(argv if argv is not None else sys.argv[1:])
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="real_images_"))
    try:
        if args.command == "gallery":
            rows = run_gallery(Path(args.radiographs), work, args.pixel_spacing_mm, overrides)
            (docs / "figures").mkdir(parents=True, exist_ok=True)
            for r in rows:
                shutil.copyfile(r["report"], docs / "figures" / f"real_{r['name']}.png")
                print(
                    f"{r['name']}: found {r['found']}, {r['outside_px']} of {r['mask_px']} mask pixels "
                    f"outside the image, sides {'right' if r['sides_ok'] else 'WRONG'}"
                )
            replace_section(
                docs / "real_radiographs.md", "gallery", gallery_markdown(rows, args.pixel_spacing_mm, command)
            )
            return 0
        ct, labels, label_map = Path(args.ct), Path(args.labels), args.label_map
        if args.posterior_fat_mm:
            ct, labels = with_posterior_fat(ct, labels, label_map, args.posterior_fat_mm, work / "with_posterior_fat")
            label_map = None
        if args.phantom_bone:
            ct, labels = with_phantom_bone(ct, labels, label_map, *args.phantom_bone, work / "with_phantom_bone")
            label_map = None
        what_if = bool(args.posterior_fat_mm or args.phantom_bone)
        summary = run_ct_check(ct, labels, label_map, args.poses, args.seed, work, overrides, config=args.config)
        samples = summary.pop("samples")
        if what_if:
            print(ct_markdown(summary, command))
            return 0 if summary["meets_dice_target"] else BELOW_TARGET
        bones = list(Geometry.standard().bones)
        (docs / "figures").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(samples[0]["entry"]["image"]).parent / "preview.png", docs / "figures" / "drr_real_ct.png")
        save_ct_check_figure(docs / "figures" / "real_ct_check.png", samples, bones)
        write_json(work / "real_ct_check.json", summary)
        replace_section(docs / "real_radiographs.md", "real-ct-check", ct_markdown(summary, command))
        print(ct_markdown(summary, command))
        return 0 if summary["meets_dice_target"] else BELOW_TARGET
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
