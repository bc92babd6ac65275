"""Bundle metadata schema: validates configs/metadata.json offline; monai's verify_metadata never downloads.

configs/metadata.json names the MONAI model zoo's schema by URL (the zoo's CI downloads it); the suite validates
against configs/schema/metadata_schema.json, a stricter offline stand-in, and against the zoo schema's required keys
and their types, copied by hand below.
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import json
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "configs" / "schema" / "metadata_schema.json"
META = ROOT / "configs" / "metadata.json"
ZOO_SCHEMA_URL = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)
# meta_schema_20240725.json (copied verbatim to https://project-monai.github.io/schema/): its rules, transcribed by
# hand: the required keys and their JSON types; each network's inputs, outputs and post_processed_outputs name numbers,
# strings, booleans or tensors, a tensor needing type, format, num_channels, spatial_shape, dtype and value_range;
# besides network_data_format, every key ending in _data_format describes a network so
ZOO_TENSOR = {
    "type": "object",
    "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"],
    "properties": {
        "type": {"type": "string"},
        "format": {"type": "string"},
        "num_channels": {"type": "integer"},
        "spatial_shape": {"type": "array", "items": {"type": ["string", "integer"]}},
        "dtype": {"type": "string"},
        "value_range": {"type": "array", "items": {"type": "number"}},
        "is_patch_data": {"type": "boolean"},
        "channel_def": {"type": "object"},
    },
}
ZOO_VALUES = {
    "type": "object",
    "additionalProperties": {"anyOf": [{"type": ["number", "string", "boolean"]}, ZOO_TENSOR]},
}
ZOO_NETWORK = {
    "type": "object",
    "required": ["inputs", "outputs"],
    "properties": {key: ZOO_VALUES for key in ("inputs", "outputs", "post_processed_outputs")},
}
ZOO_SCHEMA = {
    "type": "object",
    "required": [
        "schema", "version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
        "task", "description", "authors", "copyright", "network_data_format",
    ],
    "properties": {
        **{key: {"type": "string"} for key in (
            "schema", "version", "monai_version", "pytorch_version", "numpy_version", "task", "description",
            "authors", "copyright", "data_source", "data_type", "image_classes", "label_classes", "pred_classes",
            "intended_use",
        )},
        **{key: {"type": "object"} for key in ("changelog", "required_packages_version", "eval_metrics", "supported_apps")},
        "references": {"type": "array", "items": {"type": "string"}},
        "network_data_format": ZOO_NETWORK,
    },
    "patternProperties": {"^[_a-zA-Z0-9]+_data_format$": ZOO_NETWORK},
}  # fmt: skip

TENSOR = {"type": "image", "format": "magnitude", "num_channels": 1, "spatial_shape": [256, 256], "dtype": "float32",
          "value_range": [], "is_patch_data": False, "channel_def": {"0": "radiograph"}}  # fmt: skip
MINIMAL = {
    "schema": ZOO_SCHEMA_URL, "version": "0.1.0", "changelog": {"0.1.0": "first"},
    "monai_version": "1.6.1", "pytorch_version": "2.13", "numpy_version": "2.4", "required_packages_version": {"nibabel": "5"},
    "task": "t", "description": "d", "authors": "a", "copyright": "c", "data_source": "s", "data_type": "nifti",
    "image_classes": "i", "label_classes": "l", "pred_classes": "p", "eval_metrics": {"assd_mm": 1.0},
    "intended_use": "research", "references": ["r"],
    "network_data_format": {"inputs": {"image": TENSOR}, "outputs": {"pred": TENSOR}},
}  # fmt: skip


def schema() -> dict:
    return json.loads(SCHEMA.read_text())


def test_schema_accepts_minimal_and_rejects_missing_fields():
    jsonschema.validate(MINIMAL, schema())
    for key in ("version", "network_data_format", "intended_use"):
        bad = {k: v for k, v in MINIMAL.items() if k != key}
        with pytest.raises(jsonschema.ValidationError, match=key):
            jsonschema.validate(bad, schema())
    bad = copy.deepcopy(MINIMAL)
    del bad["network_data_format"]["inputs"]["image"]["dtype"]
    with pytest.raises(jsonschema.ValidationError, match="dtype"):
        jsonschema.validate(bad, schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**MINIMAL, "version": "one"}, schema())


def test_verify_metadata_runs_offline(tmp_path, monkeypatch):
    """monai.bundle.verify_metadata skips the download when --filepath exists; any network use fails here."""
    import monai.apps.utils as mutils
    from monai.bundle import verify_metadata

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(mutils, "_download_with_progress", no_network)
    monkeypatch.setattr(mutils, "urlopen", no_network)
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({**MINIMAL, "schema": "https://example.invalid/meta_schema.json"}))
    verify_metadata(meta_file=str(meta), filepath=str(SCHEMA))
    meta.write_text(json.dumps({k: v for k, v in MINIMAL.items() if k != "task"}))
    with pytest.raises(ValueError, match="task"):
        verify_metadata(meta_file=str(meta), filepath=str(SCHEMA))


def test_bundle_metadata_valid():
    """The shipped configs/metadata.json (part of the bundle: missing fails) follows the offline schema and the zoo's,
    and names the zoo's by URL (the zoo's CI downloads it; a path fails there)."""
    meta = json.loads(META.read_text())
    jsonschema.validate(meta, schema())
    jsonschema.validate(meta, ZOO_SCHEMA)
    assert meta["schema"] == ZOO_SCHEMA_URL


def test_offline_schema_is_as_strict_as_the_zoos():
    """Metadata the offline schema accepts passes the zoo's: it requires each key the zoo's does, with its type, in the
    metadata, in each tensor of network_data_format, and in any other <network>_data_format."""
    jsonschema.validate(MINIMAL, ZOO_SCHEMA)
    for key in ZOO_SCHEMA["required"]:
        with pytest.raises(jsonschema.ValidationError, match=key):
            jsonschema.validate({k: v for k, v in MINIMAL.items() if k != key}, schema())
    for key in ZOO_SCHEMA["properties"]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**MINIMAL, key: 1}, schema())
    for key in ZOO_TENSOR["required"]:
        bad = copy.deepcopy(MINIMAL)
        del bad["network_data_format"]["outputs"]["pred"][key]
        for rules in (ZOO_SCHEMA, schema()):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(bad, rules)
    for key in ZOO_TENSOR["properties"]:
        bad = copy.deepcopy(MINIMAL)
        bad["network_data_format"]["inputs"]["image"][key] = None
        for rules in (ZOO_SCHEMA, schema()):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(bad, rules)
    broken = {"inputs": {"image": {**TENSOR, "num_channels": "one"}}, "outputs": {"pred": TENSOR}}
    for extra in (
        {"autoencoder_data_format": broken},
        {"autoencoder_data_format": {"inputs": {"image": TENSOR}}},
        {"network_data_format": {**MINIMAL["network_data_format"], "post_processed_outputs": {"pred": [1]}}},
    ):
        for rules in (ZOO_SCHEMA, schema()):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate({**MINIMAL, **extra}, rules)
    jsonschema.validate({**MINIMAL, "autoencoder_data_format": MINIMAL["network_data_format"]}, schema())


def test_monai_reads_the_required_packages_as_written():
    """MONAI 1.6 reads optional_packages_version as a deprecated name and puts it in place of
    required_packages_version (bundle runs, ckpt_export's embedded metadata): the schema refuses it."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_meta(str(META))
    assert parser["_meta_"]["required_packages_version"] == json.loads(META.read_text())["required_packages_version"]
    with pytest.raises(jsonschema.ValidationError, match="optional_packages_version"):
        jsonschema.validate({**MINIMAL, "optional_packages_version": {"onnx": "1.23.2"}}, schema())


def test_script_imports_are_declared():
    """Each third-party package imported at module level in scripts/ is in required_packages_version (or is MONAI,
    PyTorch or NumPy, declared by their own keys); import names are mapped to distributions by the installed ones."""
    meta = json.loads(META.read_text())
    declared = {name.lower() for name in meta["required_packages_version"]} | {"monai", "torch", "numpy"}
    distributions = importlib.metadata.packages_distributions()
    imported = set()
    for path in (ROOT / "scripts").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = sorted(imported - set(sys.stdlib_module_names) - {"scripts"})
    assert {"tqdm", "PIL", "igl"} <= set(third_party)
    for module in third_party:
        names = {name.lower() for name in distributions.get(module, [])}
        assert names & declared, f"{module} ({names or 'not installed'}) missing from required_packages_version"


def test_metadata_package_versions_are_the_pins():
    """metadata.json's monai / torch / numpy and required_packages_version name the versions requirements.txt pins."""
    pins = dict(
        line.split("==")
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    pins = {name.strip().lower(): version.strip() for name, version in pins.items()}
    meta = json.loads(META.read_text())
    for package, version in meta["required_packages_version"].items():
        assert pins.get(package.lower()) == version, package
    assert (
        pins["monai"] == meta["monai_version"]
        and pins["torch"].startswith(meta["pytorch_version"])
        and pins["numpy"].startswith(meta["numpy_version"])
    )


def test_monai_meta_properties_are_the_metadatas():
    """MONAI's meta properties, which the zoo's CI checks with an app's infer properties (none missing), read the
    shipped metadata: the input tensor is `image`, the output `pred`."""
    from monai.bundle import ConfigWorkflow
    from monai.bundle.properties import MetaProperties

    meta = json.loads(META.read_text())
    wf = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "inference.yaml"), meta_file=str(META), workflow_type="infer"
    )
    wf.properties = {**MetaProperties, **wf.properties}
    wf.initialize()
    assert wf.check_properties() == []
    network = meta["network_data_format"]
    assert (wf.version, wf.monai_version, wf.description) == (
        meta["version"],
        meta["monai_version"],
        meta["description"],
    )
    assert wf.spatial_shape == network["inputs"]["image"]["spatial_shape"]
    assert wf.channel_def == network["outputs"]["pred"]["channel_def"]
