"""Versioned Parquet tables, processed-dataset directories and the rebuild cache."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.data.movielens import load_ml100k
from recsys.data.splits import stratified_split
from recsys.features.build import build_features
from recsys.features.schema import SCHEMA_VERSION, FeatureSchema
from recsys.features.store import (
    MANIFEST,
    ProcessedDataset,
    StoreError,
    config_hash,
    file_sha256,
    load_or_build,
    read_metadata,
    read_table,
    sources_sha256,
    write_table,
)
from recsys.features.vocab import flatten_lists

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "configs" / "schema" / "ml100k.yaml"
ML100K_FILES = ("u.data", "u.user", "u.item", "u.genre")
META = {"recsys.source_sha256": "s" * 64, "recsys.config_hash": "c" * 64}


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(SCHEMA_FILE)


def _mixed_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": np.array([3, 1, 2], dtype=np.int64),
            "genres": [["Drama", "War"], [], ["Comedy"]],
            "recent_items": [np.array([5, 6, 7]), np.array([], dtype=np.int64), np.array([1])],
            "year": pd.array([1995, None, 1977], dtype="Int64"),
            "title": pd.Series(["a", "b", None], dtype="str"),
            "timestamp": pd.to_datetime([1, 2, 3], unit="s", utc=True).as_unit("ns"),
            "rating": np.array([1.0, 2.5, 5.0], dtype=np.float32),
        }
    )


def test_write_read_round_trips_list_columns_types_and_metadata(tmp_path: Path) -> None:
    frame = _mixed_frame()
    extra = {"recsys.rows": 3, "recsys.note": {"k": [1, 2]}}
    path = write_table(frame, tmp_path / "sub" / "t.parquet", {**META, **extra})
    back, meta = read_table(path)
    assert list(back.columns) == list(frame.columns)
    assert [list(g) for g in back["genres"]] == [["Drama", "War"], [], ["Comedy"]]
    assert [r.tolist() for r in back["recent_items"]] == [[5, 6, 7], [], [1]]
    assert back["recent_items"][0].dtype == np.int64
    pd.testing.assert_series_equal(back["year"], frame["year"])
    pd.testing.assert_series_equal(back["title"], frame["title"])
    pd.testing.assert_series_equal(back["timestamp"], frame["timestamp"])
    assert str(back["timestamp"].dtype) == "datetime64[ns, UTC]"
    pd.testing.assert_series_equal(back["rating"], frame["rating"])
    assert meta["recsys.source_sha256"] == META["recsys.source_sha256"]
    assert meta["recsys.config_hash"] == META["recsys.config_hash"]
    assert meta["recsys.schema_version"] == SCHEMA_VERSION
    assert pd.Timestamp(meta["recsys.created"]).tzinfo is not None
    assert meta["recsys.rows"] == 3 and meta["recsys.note"] == {"k": [1, 2]}
    assert read_metadata(path) == meta
    assert not list(path.parent.glob(".*tmp*"))  # the temporary file was renamed away


def test_write_requires_provenance_and_read_rejects_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"recsys.source_sha256"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet", {"recsys.config_hash": "x"})
    with pytest.raises(ValueError, match="not JSON"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet", {**META, "recsys.x": {1j}})
    pq.write_table(pa.table({"a": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(StoreError, match="not written by recsys"):
        read_table(tmp_path / "foreign.parquet")
    with pytest.raises(StoreError, match="no table"):
        read_table(tmp_path / "missing.parquet")


def test_hashes_of_files_and_configs(ml100k_dir: Path, tmp_path: Path) -> None:
    data = (ml100k_dir / "u.data").read_bytes()
    assert file_sha256(ml100k_dir / "u.data") == hashlib.sha256(data).hexdigest()
    # the prefix the datasets README publishes for this file
    assert file_sha256(ml100k_dir / "u.data").startswith("06416e597f82b734")
    files = [ml100k_dir / f for f in ML100K_FILES]
    assert sources_sha256(files) == sources_sha256(list(reversed(files)))
    moved = tmp_path / "copy"
    moved.mkdir()
    for f in files:
        shutil.copy(f, moved / f.name)
    assert sources_sha256([moved / f.name for f in files]) == sources_sha256(files)
    (moved / "u.data").write_bytes(data[:-1] + b"9")
    assert sources_sha256([moved / f.name for f in files]) != sources_sha256(files)
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def _build(folder: Path, schema: FeatureSchema, ratio: float) -> ProcessedDataset:
    data = load_ml100k(folder)
    train, test = stratified_split(data.interactions, ratio, "item", 42)
    return build_features(data, (train, test), schema)


def test_processed_dataset_save_load_round_trip(
    ml100k_dir: Path, schema: FeatureSchema, tmp_path: Path
) -> None:
    ds = _build(ml100k_dir, schema, 0.75)
    out = ds.save(tmp_path / "ml100k", source_sha256="s", config_hash="c")
    assert sorted(p.name for p in out.iterdir()) == [
        "items.parquet",
        MANIFEST,
        "test.parquet",
        "train.parquet",
        "users.parquet",
        "vocab",
    ]
    back = ProcessedDataset.load(out)
    for name in ("train", "test", "users", "items"):
        a, b = getattr(ds, name), getattr(back, name)
        assert list(a.columns) == list(b.columns), name
        for col in a.columns:
            if a[col].dtype == object:  # list columns come back as numpy arrays per row
                for x, y in zip(flatten_lists(a[col]), flatten_lists(b[col]), strict=True):
                    np.testing.assert_array_equal(x, y, err_msg=f"{name}.{col}")
            else:
                pd.testing.assert_series_equal(a[col], b[col], obj=f"{name}.{col}")
    assert back.valid is None
    assert back.vocabs is not None and ds.vocabs is not None
    assert back.vocabs.versions() == ds.vocabs.versions()
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["vocab"] == ds.vocabs.versions()
    assert manifest["tables"]["train"]["rows"] == len(ds.train) == 75_066
    assert manifest["source_sha256"] == "s" and manifest["config_hash"] == "c"
    # a table that disagrees with the manifest is refused
    write_table(back.test.head(3), out / "test.parquet", {**META})
    with pytest.raises(StoreError, match="differs from the manifest"):
        ProcessedDataset.load(out)


def test_load_or_build_reuses_until_sources_or_config_change(
    ml100k_dir: Path, schema: FeatureSchema, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in ML100K_FILES:
        shutil.copy(ml100k_dir / f, raw / f)
    # the first 20,000 real ratings keep each of the five builds below quick
    head = (ml100k_dir / "u.data").read_text().splitlines(keepends=True)[:20_000]
    (raw / "u.data").write_text("".join(head))
    files = [raw / f for f in ML100K_FILES]
    out = tmp_path / "processed"
    calls: list[float] = []

    def build(ratio: float) -> ProcessedDataset:
        calls.append(ratio)
        return _build(raw, schema, ratio)

    first = load_or_build(out, files, {"ratio": 0.75}, lambda: build(0.75))
    assert calls == [0.75] and first.manifest["cache"] == "built"
    second = load_or_build(out, files, {"ratio": 0.75}, lambda: build(0.75))
    assert calls == [0.75] and second.manifest["cache"] == "hit"
    pd.testing.assert_frame_equal(second.test, first.test)

    # another configuration: rebuilt and the directory replaced
    third = load_or_build(out, files, {"ratio": 0.5}, lambda: build(0.5))
    assert calls == [0.75, 0.5] and third.manifest["cache"] == "built"
    assert len(third.train) == len(ProcessedDataset.load(out).train) != len(first.train)

    # the raw data changed (one rating edited): rebuilt
    lines = (raw / "u.data").read_text().splitlines(keepends=True)
    user, item, rating, ts = lines[0].split("\t")
    lines[0] = "\t".join([user, item, "1" if rating != "1" else "2", ts])
    (raw / "u.data").write_text("".join(lines))
    load_or_build(out, files, {"ratio": 0.5}, lambda: build(0.5))
    assert calls == [0.75, 0.5, 0.5]
    load_or_build(out, files, {"ratio": 0.5}, lambda: build(0.5))
    assert calls == [0.75, 0.5, 0.5]

    # a damaged cache is rebuilt rather than trusted
    (out / "train.parquet").unlink()
    load_or_build(out, files, {"ratio": 0.5}, lambda: build(0.5))
    assert calls == [0.75, 0.5, 0.5, 0.5]


def test_failed_build_leaves_no_directory(tmp_path: Path, ml100k_dir: Path) -> None:
    def broken() -> ProcessedDataset:
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        load_or_build(tmp_path / "out", [ml100k_dir / "u.data"], {}, broken)
    assert list(tmp_path.iterdir()) == []
