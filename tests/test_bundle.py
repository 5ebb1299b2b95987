import json

import pytest

from embedrt.bundle import FORMAT_VERSION, Bundle, Manifest, Parity, Pooling, Variant, sha256_file, write_manifest
from embedrt.errors import BundleError


def _manifest(**over):
    base = dict(
        source="x",
        dim=4,
        max_seq_length=8,
        pooling=Pooling.MEAN,
        normalize=False,
        variants={"fp32": Variant("model.onnx", "ab" * 32, True, Parity(1.0, 1.0, 3))},
    )
    base.update(over)
    return Manifest(**base)


def test_manifest_round_trips(tmp_path):
    write_manifest(tmp_path, _manifest())
    data = json.loads((tmp_path / "embedrt.json").read_text())
    assert list(data)[0] == "format_version"
    assert data["variants"]["fp32"]["parity"] == {"min_cos": 1.0, "mean_cos": 1.0, "n": 3}
    assert Bundle.open(tmp_path).manifest == _manifest()


def test_missing_and_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        Bundle.open(tmp_path / "nope")
    with pytest.raises(BundleError, match="empty directory, not an embedrt bundle; create one there with"):
        Bundle.open(tmp_path)
    (tmp_path / "notes.txt").write_text("not a bundle")
    # Advice that works: export refuses to replace a non-bundle directory, so do not suggest exporting into it.
    with pytest.raises(BundleError, match=r"no embedrt.json\); pass the directory .* -o NEW_DIR`"):
        Bundle.open(tmp_path)


def test_corrupt_manifest(tmp_path):
    (tmp_path / "embedrt.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(tmp_path)
    (tmp_path / "embedrt.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "dim": 3}))
    with pytest.raises(BundleError, match="malformed"):
        Bundle.open(tmp_path)


def test_unsupported_format_version(tmp_path):
    data = json.loads(_manifest().to_json())
    data["format_version"] = 99
    (tmp_path / "embedrt.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="format_version 99 is not supported"):
        Bundle.open(tmp_path)


def test_checksum_mismatch_names_the_file(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"graph")
    write_manifest(tmp_path, _manifest())
    bundle = Bundle.open(tmp_path)
    with pytest.raises(BundleError, match="model.onnx has sha256"):
        bundle.variant_path("fp32")
    good = _manifest(variants={"fp32": Variant("model.onnx", sha256_file(tmp_path / "model.onnx"), True)})
    write_manifest(tmp_path, good)
    assert Bundle.open(tmp_path).variant_path("fp32") == tmp_path / "model.onnx"


def test_unknown_variant_lists_what_exists(tmp_path):
    write_manifest(tmp_path, _manifest())
    with pytest.raises(BundleError, match=r"no 'int8' variant \(it has: fp32\)"):
        Bundle.open(tmp_path).variant("int8")
