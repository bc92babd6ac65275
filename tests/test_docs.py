"""The documentation against the code: README.md, docs/*.md and the header comments of configs/*.yaml name files,
sections and commands a user copies; these tests keep them true as options, config keys and headings change."""

from __future__ import annotations

import contextlib
import csv
import importlib
import inspect
import json
import re
import runpy
import sys
import warnings
from pathlib import Path

import numpy as np
import yaml
from tests.helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# monai.bundle's own options of the commands the docs show (run, ckpt_export, verify_metadata, verify_net_in_out)
MONAI_OPTIONS = {"config_file", "meta_file", "logging_file", "args_file", "filepath", "ckpt_file", "key_in_ckpt"}
COMMAND = re.compile(r"python (?:-m ([\w.]+)|(deploy/app|benchmarks/\w+\.py))((?: [^`|;\n]*)?)")
NOT_BUNDLE_COMMANDS = {"pytest", "black", "isort", "flake8", "venv", "pip"}
BONES_ALL = ("pelvis", "femur_left", "femur_right", "all")
REMOVED_COMMANDS = {"scripts.data.volumes"}  # named as removed (docs/simulation.md: the threshold labeller)


def documented_text(text: str, config: bool = False) -> str:
    """The text a user reads: a config's comment lines, a document whole; continuation lines (a trailing backslash, or
    a line of further ``[--options]``, as config headers write them) joined to their command."""
    if config:
        text = "\n".join(line.lstrip()[1:] for line in text.splitlines() if line.lstrip().startswith("#"))
    text = re.sub(r"\\\n\s*", " ", text)
    return re.sub(r"\n\s*(?=\[--)", " ", text)


def commands(text: str) -> list[tuple[str, str]]:
    """``(module, arguments)`` of every ``python -m MODULE ...`` / ``python deploy/app ...`` / ``python
    benchmarks/X.py ...`` in ``text``, in code blocks and inline code (an inline span may wrap), each up to the end of
    its line or span, a table cell's ``|``, a ``;`` or a `` # `` comment."""
    spans = [s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))]
    found = []
    for chunk in [*spans, *text.splitlines()]:
        for m in COMMAND.finditer(chunk):
            found.append((m.group(1) or m.group(2), m.group(3).split(" # ")[0]))
    return found


def options(arguments: str) -> list[str]:
    """The ``--option`` names in a command's arguments (without the dashes)."""
    return re.findall(r"(?<![\w-])--([\w#-]+)", arguments)


def cli_help(module: str, subcommand: str | None, capsys) -> str:
    """The ``--help`` text of a documented command, run as the user runs it (``python -m module`` or ``python path``)."""
    argv = [module, *([subcommand] if subcommand else []), "--help"]
    saved, path, code = sys.argv, list(sys.path), None
    sys.argv = argv
    if "/" in module:  # python runs a script with its folder first on the path
        sys.path.insert(0, str((ROOT / module).parent if module.endswith(".py") else ROOT / module))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy of a module already imported
            if "/" in module:
                runpy.run_path(str(ROOT / module), run_name="__main__")
            else:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.argv, sys.path[:] = saved, path
    assert code == 0, f"python {module} {subcommand or ''} --help exits {code}"
    return capsys.readouterr().out


def every_command() -> list[tuple[Path, str, str]]:
    return [
        (p, module, args)
        for p in [*DOCS, *CONFIGS]
        for module, args in commands(documented_text(p.read_text(), p in CONFIGS))
    ]


def test_commands_are_found_in_code_blocks_inline_code_and_config_headers():
    """The extraction itself, on hand-written text: continued lines belong to their command, a comment or a table
    cell's end does not."""
    header = "# Run:\n#   python -m monai.bundle run --config_file c.yaml --input_dir IN\n#       [--device cpu] [--shard i/n]\n"
    assert commands(documented_text(header + "a: 1  # python -m x --no\n", config=True)) == [
        ("monai.bundle", " run --config_file c.yaml --input_dir IN [--device cpu] [--shard i/n]")
    ]
    md = (
        "| x | `python -m scripts.ssm build --cases own\n--out o.npz` | y |\n"
        "```\npython -m scripts.simulate --cases C --out D \\\n    [--split test]   # the test subjects\n```\n"
    )
    found = commands(documented_text(md))
    assert ("scripts.ssm", " build --cases own --out o.npz") in found
    assert [options(a) for m, a in found if m == "scripts.simulate"] == [["cases", "out", "split"]]
    assert ("scripts.ssm", " build --cases own") in found  # the same span's first line, read as a line too
    assert options(" run --train#checkpoint_saver#n_saved 3 --image_size 64") == [
        "train#checkpoint_saver#n_saved",
        "image_size",
    ]


def test_documented_bundle_options_are_keys_of_their_configs():
    """Every ``--key`` of a documented ``monai.bundle`` command is a key of the configs it names (``--a#b``: key a) or
    an option of monai.bundle itself: a renamed key (e.g. inference's ``runner``, now ``evaluator``) shows here."""
    keys: dict[str, set[str]] = {}
    wrong = []
    for path, module, arguments in every_command():
        if module != "monai.bundle":
            continue
        config = re.search(r"--config_file\s+(\"\[[^\]]*\]\"|\S+)", arguments)
        names = re.findall(r"configs/[\w/]+\.yaml", config.group(1)) if config else []
        if not names:  # e.g. verify_metadata, or a recipe's "$3"
            continue
        for name in names:
            keys.setdefault(name, set(yaml.safe_load((ROOT / name).read_text())))
        known = MONAI_OPTIONS.union(*(keys[n] for n in names))
        wrong += [
            f"{path.name}: --{o} ({', '.join(names)})" for o in options(arguments) if o.split("#")[0] not in known
        ]
    assert not wrong, wrong


def test_documented_script_options_are_taken_by_their_commands(capsys):
    """Every ``--option`` of a documented ``python -m scripts.X`` / ``deploy`` / ``benchmarks`` command is one its
    ``--help`` lists (subcommands such as ``ssm build`` asked for theirs); the usage line of a ``python -m`` command (and
    the Deploy app's) names it as the user types it (it said ``phantom.py`` for ``python -m scripts.phantom``)."""
    helps: dict[tuple[str, str | None], str] = {}
    wrong = []
    for path, module, arguments in every_command():
        if module.split(".")[0] in NOT_BUNDLE_COMMANDS or module.startswith("monai") or module in REMOVED_COMMANDS:
            continue
        words = arguments.split()
        subcommand = words[0] if words and re.fullmatch(r"[a-z][\w-]*", words[0]) and module != "deploy/app" else None
        if (module, subcommand) not in helps:
            helps[module, subcommand] = cli_help(module, subcommand, capsys)
            typed = f"python {'-m ' if '/' not in module else ''}{module}"
            if "/" not in module or module == "deploy/app":
                assert helps[module, subcommand].startswith(f"usage: {typed}"), helps[module, subcommand][:80]
        taken = set(re.findall(r"--([\w-]+)", helps[module, subcommand]))
        wrong += [f"{path.name}: python {module} --{o}" for o in options(arguments) if o not in taken]
    assert len(helps) > 10 and not wrong, wrong


def test_relative_links_and_cited_sections_resolve():
    """Every relative link of the docs names a file that exists (and a heading, with ``#anchor``), and every section
    cited by name (``docs/inference.md, "Plausibility"``) is a heading or a bold paragraph lead of that file."""

    def norm(text: str) -> str:
        return re.sub(r"\s+", " ", text).strip().lower()

    def titles(path: Path) -> list[str]:
        text = path.read_text()
        return [norm(t) for t in re.findall(r"^#+\s+(.*)$", text, re.M) + re.findall(r"\*\*(.+?)\*\*", text, re.S)]

    def slug(heading: str) -> str:
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    wrong, cited = [], 0
    for doc in DOCS:
        text = doc.read_text()
        for link in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", link):
                continue
            target, _, anchor = link.partition("#")
            path = (doc.parent / target).resolve() if target else doc
            if not path.exists():
                wrong.append(f"{doc.name}: link {link}")
            elif anchor and anchor not in {slug(h) for h in re.findall(r"^#+\s+(.*)$", path.read_text(), re.M)}:
                wrong.append(f"{doc.name}: anchor {link}")
        for prefix, name, section in re.findall(r"(docs/)?(\w+\.md)[^\"\n]{0,6}\"([^\"]+)\"", text):
            path = ROOT / "docs" / name if prefix or not (doc.parent / name).exists() else doc.parent / name
            cited += 1
            if not path.exists() or not any(norm(section) in t for t in titles(path)):
                wrong.append(f"{doc.name}: {prefix}{name}, {section!r}")
    assert cited > 30 and not wrong, wrong


def summary_table(path: Path) -> dict[tuple[str, str, str], list[float]]:
    """``(variant, shift, bone) -> [ASSD, HD95, Chamfer, Dice, n]`` of an evaluation's summary.md first table."""
    rows = re.findall(
        r"^\| (\w+) \| (\w+) \| (\w+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| [\d.-]+ \| ([\d.]+) \| (\d+) \|$",
        path.read_text(),
        re.M,
    )
    return {row[:3]: [float(v) for v in row[3:]] for row in rows}


def test_published_numbers_agree_with_the_per_sample_metrics():
    """The test-split numbers quoted in docs/evaluation_summary.md, docs/README.md's performance table and
    configs/metadata.json eval_metrics are the means of docs/evaluation_metrics.csv's per-sample rows (recomputed
    here), so that a re-evaluation updating one and not the others shows."""
    per_sample = [r for r in csv.DictReader((ROOT / "docs" / "evaluation_metrics.csv").open()) if r["case"]]
    summary = summary_table(ROOT / "docs" / "evaluation_summary.md")
    summary_text = (ROOT / "docs" / "evaluation_summary.md").read_text()
    assert len(summary) == 4 * 3 * 4  # variants x shifts x (3 bones + all)
    for (variant, shift, bone), quoted in summary.items():
        rows = [r for r in per_sample if (r["variant"], r["shift"]) == (variant, shift) and bone in ("all", r["bone"])]
        means = [np.nanmean([float(r[k]) for r in rows]) for k in ("assd_mm", "hd95_mm", "chamfer_mm", "dice")]
        assert np.allclose(quoted, [*means, len(rows)], atol=0.0051), (variant, shift, bone)

    subjects = re.findall(
        r"^\| (subject_\w+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", summary_text, re.M
    )
    assert len(subjects) == 6  # per subject: dual-face + shape model, estimated shift, mean over its poses
    for subject, poses, *quoted in subjects:
        rows = [r for r in per_sample if (r["case"], r["variant"], r["shift"]) == (subject, "dual_face_ssm", "centre")]
        means = [np.mean([float(r["assd_mm"]) for r in rows if bone in ("all", r["bone"])]) for bone in BONES_ALL]
        assert np.allclose([float(q) for q in quoted], means, atol=0.0051) and len(rows) == 3 * int(poses), subject

    names = {"single-face (front surface)": "single_face", "single-face + shape model": "single_face_ssm"}
    names |= {"dual-face": "dual_face", "dual-face + shape model": "dual_face_ssm"}
    shifts = {"estimated": "centre", "fixed-geometry prior": "prior", "oracle": "oracle"}
    readme = re.findall(
        r"^\| (\**[a-z +()-]+?\**) \| ([a-z -]+) \| (.+) \|$", (ROOT / "docs" / "README.md").read_text(), re.M
    )
    performance = [
        (names[v.strip("*")], shifts[s], cells) for v, s, cells in readme if v.strip("*") in names and s in shifts
    ]
    assert len(performance) == 9
    for variant, shift, cells in performance:
        quoted = [float(c.strip("* ")) for c in cells.split("|")]
        assert quoted == [summary[variant, shift, b][0] for b in BONES_ALL]

    metrics = json.loads((ROOT / "configs" / "metadata.json").read_text())["eval_metrics"]
    bones = BONES_ALL[:3]
    for key, (variant, shift) in {
        "assd_mm_dual_face_ssm_estimated_shift": ("dual_face_ssm", "centre"),
        "assd_mm_dual_face_ssm_oracle_shift": ("dual_face_ssm", "oracle"),
        "assd_mm_dual_face_estimated_shift": ("dual_face", "centre"),
    }.items():
        assert metrics[key] == {b: summary[variant, shift, b][0] for b in bones}, key
    for variant, shift in (
        *(("single_face", "centre"), ("single_face_ssm", "centre"), ("dual_face", "centre")),
        *(("single_face", "oracle"), ("dual_face", "oracle")),
    ):
        key = f"assd_mm_{variant}_{'estimated' if shift == 'centre' else shift}_shift_all_bones"
        assert metrics[key] == summary[variant, shift, "all"][0], key
    assert metrics["mask_dice"] == {b: summary["dual_face", "centre", b][3] for b in bones}
    procedural = summary_table(ROOT / "docs" / "evaluation_procedural_summary.md")
    assert (
        metrics["procedural_split_assd_mm_dual_face_ssm_estimated_shift_all_bones"]
        == procedural["dual_face_ssm", "centre", "all"][0]
    )


def test_code_the_docs_name_exists():
    """Every ``scripts.``/``deploy.``/``benchmarks.`` dotted name in the docs and config comments (a module, or a
    function, class or method in one) imports: a renamed function shows here. Names the docs give as history only
    are listed."""
    historical = {"scripts.data.drr.attenuation_volume"}  # docs/simulation.md: "since replaced"
    wrong = []
    for path in [*DOCS, *CONFIGS]:
        for name in set(re.findall(r"\b((?:scripts|deploy|benchmarks)\.[A-Za-z_][\w.]*\w)", path.read_text())):
            parts = name.split(".")
            if name in historical or parts[-1] in ("py", "md", "yaml", "json", "txt"):
                continue
            obj = importlib.import_module(parts[0])
            for i, attribute in enumerate(parts[1:], 2):
                if not hasattr(obj, attribute) and inspect.ismodule(obj):
                    with contextlib.suppress(ImportError):  # a submodule not imported yet
                        importlib.import_module(".".join(parts[:i]))
                obj = getattr(obj, attribute, None)
            if obj is None:
                wrong.append(f"{path.name}: {name}")
    assert not wrong, wrong


def test_packaging_commands_tag_the_bundle_version():
    """The MAP tags of the packaging and docker commands (docs/deployment.md) are the bundle's version, as app.yaml
    is (a release bumps them together)."""
    version = json.loads((ROOT / "configs" / "metadata.json").read_text())["version"]
    tags = re.findall(r"hip-3ddx[\w-]*:([\w.]+)", "".join(p.read_text() for p in DOCS))
    assert len(tags) >= 2 and set(tags) == {version}, tags
