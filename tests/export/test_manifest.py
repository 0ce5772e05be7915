"""The export manifest: JSON round trip, file checksums, request validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.export.manifest import (
    MANIFEST_FILE,
    ExportManifest,
    ManifestError,
    ManifestMismatchError,
    ModelManifest,
    TensorSpec,
    file_checksums,
    validate_request,
)

FEATURES = ["user_id", "recent", "hour"]


def _entry(tmp_path: Path) -> ModelManifest:
    model_file = tmp_path / "ranker.onnx"
    model_file.write_bytes(b"not really onnx, only bytes to hash")
    return ModelManifest(
        name="ranker",
        file="ranker.onnx",
        inputs=[TensorSpec("dense", "float32", (-1, 2)), TensorSpec("ids", "int64", (-1, 3, 4))],
        outputs=[TensorSpec("logits", "float32", (-1,)),
                 TensorSpec("probabilities", "float32", (-1,))],
        feature_order=FEATURES,
        max_len={"user_id": 1, "recent": 4, "hour": 1},
        seq_len=4,
        num_embeddings={"user_id": 10, "recent": 50, "hour": 24},
        dense_input="dense",
        dense_features=["age", "activity"],
        vocab_versions={"user_id": "a" * 64, "recent": "b" * 64, "hour": "c" * 64},
        model_version=7,
        checksums=file_checksums(tmp_path, [model_file]),
        schema_name="test",
        schema_version=1,
        opset=17,
        extra={"exporter": "torchscript"},
    )  # fmt: skip


def _request(batch: int = 3) -> dict[str, np.ndarray]:
    ids = np.full((batch, 3, 4), -1, dtype=np.int64)
    ids[:, 0, 0] = np.arange(batch) % 10
    ids[:, 1, :2] = [[5, 49]]
    ids[:, 2, 0] = 23
    return {"dense": np.zeros((batch, 2), dtype=np.float32), "ids": ids}


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    manifest = ExportManifest().add(entry)
    path = manifest.save(tmp_path)
    assert path == tmp_path / MANIFEST_FILE
    loaded = ExportManifest.load(tmp_path)
    assert loaded["ranker"] == entry
    assert loaded.to_dict() == manifest.to_dict()
    raw = json.loads(path.read_text())
    assert raw["models"][0]["inputs"][1] == {"name": "ids", "dtype": "int64", "shape": [-1, 3, 4]}
    assert loaded["ranker"].input("ids").triton_dtype == "TYPE_INT64"
    loaded.verify_files(tmp_path)


def test_add_replaces_an_entry_of_the_same_name(tmp_path: Path) -> None:
    manifest = ExportManifest().add(_entry(tmp_path))
    newer = _entry(tmp_path)
    newer.model_version = 8
    manifest.add(newer)
    assert list(manifest.models) == ["ranker"] and manifest["ranker"].model_version == 8
    with pytest.raises(KeyError, match="no model 'user_tower'"):
        manifest["user_tower"]


def test_changed_or_missing_file_fails_verification(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    (tmp_path / "ranker.onnx").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match="sha256"):
        entry.verify_files(tmp_path)
    (tmp_path / "ranker.onnx").unlink()
    with pytest.raises(ManifestError, match="missing"):
        entry.verify_files(tmp_path)


def test_load_rejects_missing_malformed_and_future_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no export manifest"):
        ExportManifest.load(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        ExportManifest.load(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"format_version": 99, "models": []}))
    with pytest.raises(ManifestError, match="format 99"):
        ExportManifest.load(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text(
        json.dumps({"format_version": 1, "models": [{"name": "x", "inputs": []}]})
    )
    with pytest.raises(ManifestError, match="malformed model entry 'x'"):
        ExportManifest.load(tmp_path)


def test_entry_must_agree_with_its_ids_shape(tmp_path: Path) -> None:
    entry = _entry(tmp_path).to_dict()
    entry["seq_len"] = 5
    with pytest.raises(ManifestError, match="L=5"):
        ModelManifest.from_dict(entry)


def test_a_per_list_entry_round_trips_and_checks_its_list_ids(tmp_path: Path) -> None:
    raw = _entry(tmp_path).to_dict()
    raw.update(
        inputs=[TensorSpec("dense", "float32", (-1, -1, 2)).to_dict(),
                TensorSpec("ids", "int64", (-1, -1, 1, 1)).to_dict(),
                TensorSpec("list_ids", "int64", (-1, 2, 4)).to_dict()],
        feature_order=["user_id"], seq_len=1,
        list_ids_input="list_ids", list_feature_order=["recent", "hour"], list_seq_len=4,
    )  # fmt: skip
    entry = ModelManifest.from_dict(raw)
    assert ModelManifest.from_dict(entry.to_dict()) == entry
    assert entry.all_features == ["user_id", "recent", "hour"]
    with pytest.raises(ManifestError, match="list ids shape"):
        ModelManifest.from_dict({**raw, "list_seq_len": 5})
    with pytest.raises(ManifestError, match="rank 3"):
        ModelManifest.from_dict({**raw, "list_ids_input": None, "list_feature_order": []})
    ok = {"dense": np.zeros((2, 3, 2), np.float32), "ids": np.zeros((2, 3, 1, 1), np.int64),
          "list_ids": np.full((2, 2, 4), -1, np.int64)}  # fmt: skip
    validate_request(entry, ok)
    bad = dict(ok, list_ids=ok["list_ids"].copy())
    bad["list_ids"][1, 1, 0] = 24  # hour has 24 rows
    with pytest.raises(ManifestMismatchError, match="'list_ids': feature 'hour' has ids"):
        validate_request(entry, bad)
    with pytest.raises(ManifestMismatchError, match="candidates per list"):
        validate_request(entry, dict(ok, ids=np.zeros((2, 4, 1, 1), np.int64)))


def test_a_well_formed_request_passes(tmp_path: Path) -> None:
    validate_request(_entry(tmp_path), _request(1))
    validate_request(_entry(tmp_path), _request(256))


def _broken(kind: str) -> dict[str, np.ndarray]:
    req = _request()
    if kind == "missing":
        del req["dense"]
    elif kind == "unknown":
        req["extra"] = np.zeros(3)
    elif kind == "dtype":
        req["ids"] = req["ids"].astype(np.int32)
    elif kind == "rank":
        req["ids"] = req["ids"][:, :, 0]
    elif kind == "features":
        req["ids"] = req["ids"][:, :2]
    elif kind == "length":
        req["ids"] = np.concatenate([req["ids"], req["ids"][:, :, :1]], axis=2)
    elif kind == "dense_width":
        req["dense"] = np.zeros((3, 5), dtype=np.float32)
    elif kind == "below_pad":
        req["ids"][1, 1, 3] = -2
    elif kind == "too_large":
        req["ids"][2, 2, 0] = 24
    elif kind == "beyond_max_len":
        req["ids"][0, 0, 1] = 4
    elif kind == "empty":
        req = {k: v[:0] for k, v in req.items()}
    elif kind == "batch_mismatch":
        req["dense"] = req["dense"][:2]
    elif kind == "nan":
        req["dense"][1, 0] = np.nan
    elif kind == "not_numpy":
        req["dense"] = req["dense"].tolist()
    return req


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", r"missing \['dense'\]"),
        ("unknown", r"unknown \['extra'\]"),
        ("dtype", "dtype int32, expected int64"),
        ("rank", "rank 2"),
        ("features", r"axis 1 \(F = number of features\) is 2, expected 3"),
        ("length", r"axis 2 \(L = ids per feature\) is 5, expected 4"),
        ("dense_width", r"axis 1 \(number of dense features\) is 5, expected 2"),
        ("below_pad", r"ids below -1 .* feature 'recent', slot 3\]: -2"),
        ("too_large", "feature 'hour' has ids >= its table size 24"),
        ("beyond_max_len", "feature 'user_id' reads 1 ids but holds id 4 at slot 1"),
        ("empty", "empty batch"),
        ("batch_mismatch", "batch size"),
        ("nan", "NaN/inf"),
        ("not_numpy", "must be a numpy array"),
    ],
)
def test_bad_requests_get_a_clear_error(tmp_path: Path, kind: str, message: str) -> None:
    with pytest.raises(ManifestMismatchError, match=message):
        validate_request(_entry(tmp_path), _broken(kind))


def test_mismatch_error_is_a_value_error_and_a_manifest_error() -> None:
    assert issubclass(ManifestMismatchError, ValueError)
    assert issubclass(ManifestMismatchError, ManifestError)
