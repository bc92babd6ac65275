"""Bundle metadata schema: validates configs/metadata.json offline; monai's verify_metadata never downloads."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "configs" / "schema" / "metadata_schema.json"
META = ROOT / "configs" / "metadata.json"

TENSOR = {"type": "image", "format": "magnitude", "num_channels": 1, "spatial_shape": [256, 256], "dtype": "float32",
          "value_range": [], "is_patch_data": False, "channel_def": {"0": "radiograph"}}  # fmt: skip
MINIMAL = {
    "schema": "configs/schema/metadata_schema.json", "version": "0.1.0", "changelog": {"0.1.0": "first"},
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
    """The shipped configs/metadata.json (part of the bundle: missing fails) follows the schema."""
    jsonschema.validate(json.loads(META.read_text()), schema())


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
