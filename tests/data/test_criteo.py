"""Criteo loader and DLRM preprocessing on the real samples and on broken files.

What the sample files hold is measured here from their raw bytes, not assumed:
``pytorch-fm_train.txt`` has 1,000 rows (999 newlines: the last row has no
terminator, so ``wc -l`` says 999), of which 498 have 37 or 38 fields.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.criteo import (
    CRITEO_COLUMNS,
    DENSE_COLUMNS,
    SPARSE_COLUMNS,
    criteo_transform,
    load_criteo,
    stable_hash,
)
from recsys.data.frame import DatasetNotFoundError, MalformedDataError


def _raw_rows(path: Path, sep: str, skip: int = 0) -> list[list[str]]:
    return [line.split(sep) for line in path.read_text().splitlines()[skip:] if line]


def test_pytorch_fm_sample_pads_short_rows_and_loses_nothing(criteo_dir: Path) -> None:
    path = criteo_dir / "pytorch-fm_train.txt"
    raw = _raw_rows(path, "\t")
    field_counts = Counter(len(r) for r in raw)
    short = sum(n for count, n in field_counts.items() if 37 <= count < 40)
    assert len(raw) == 1_000 and short == 498 and field_counts[40] == 502

    df, report = load_criteo(path)
    assert report.rows_read == len(raw)
    assert report.repaired == {"padded": short}
    assert report.rows_rejected == 0
    assert report.rows_kept == report.rows_read - report.rows_rejected == len(df)
    assert tuple(df.columns) == CRITEO_COLUMNS
    assert df["label"].dtype == np.int8
    assert all(df[c].dtype == np.float32 for c in DENSE_COLUMNS)
    assert all(pd.api.types.is_string_dtype(df[c].dtype) for c in SPARSE_COLUMNS)
    assert df[list(SPARSE_COLUMNS)].notna().all().all()  # missing is "", never NaN

    padded = [i for i, r in enumerate(raw) if len(r) < 40]
    for i in (padded[0], padded[-1], 0, len(raw) - 1):
        fields = raw[i] + [""] * (40 - len(raw[i]))
        assert df["label"].iloc[i] == int(fields[0])
        dense = [float(v) if v else np.nan for v in fields[1:14]]
        np.testing.assert_array_equal(df.loc[i, list(DENSE_COLUMNS)].to_numpy(float), dense)
        assert df[list(SPARSE_COLUMNS)].iloc[i].tolist() == fields[14:]


def test_deepctr_sample_with_header_and_float_integers(criteo_dir: Path) -> None:
    path = criteo_dir / "deepctr_criteo_sample.txt"
    raw = _raw_rows(path, ",", skip=1)
    df, report = load_criteo(path)
    assert len(df) == len(raw) == 200 and report.rows_read == 200
    assert report.rows_rejected == 0 and not report.repaired
    assert raw[0][3] == "260.0" and df["I3"].iloc[0] == 260.0
    assert np.isnan(df["I1"].iloc[0]) and raw[0][1] == ""
    assert df["C19"].iloc[0] == "" and raw[0][33] == ""
    assert df["label"].sum() == sum(int(r[0]) for r in raw)


def test_max_rows(criteo_dir: Path) -> None:
    df, report = load_criteo(criteo_dir / "deepctr_criteo_sample.txt", max_rows=7)
    assert len(df) == 7 and report.rows_read == 7


def test_transform_matches_dlrm_preprocessing(criteo_dir: Path) -> None:
    df, _ = load_criteo(criteo_dir / "pytorch-fm_train.txt")
    buckets = [1000 + 17 * j for j in range(26)]
    dense, sparse, labels = criteo_transform(df, buckets)
    assert dense.dtype == np.float32 and dense.shape == (len(df), 13)
    assert sparse.dtype == np.int64 and sparse.shape == (len(df), 26)
    assert labels.dtype == np.float32 and set(np.unique(labels)) <= {0.0, 1.0}
    raw = df[list(DENSE_COLUMNS)].to_numpy(np.float64)
    expected = np.where(np.isnan(raw), 0.0, np.log(1.0 + np.clip(raw, 0.0, None)))
    np.testing.assert_allclose(dense, expected, rtol=1e-6)
    assert (raw < 0).any() and (dense >= 0).all()  # I2 holds -1 values
    assert np.isnan(raw).any() and (dense[np.isnan(raw)] == 0).all()
    missing = (df[list(SPARSE_COLUMNS)] == "").to_numpy()
    assert missing.any()
    np.testing.assert_array_equal(sparse == 0, missing)
    assert (sparse < np.asarray(buckets)).all()
    # Equal strings in a column share a bucket; the hash is per value, not per row.
    c1 = df["C1"].to_numpy()
    for value in np.unique(c1[c1 != ""])[:5]:
        assert len(np.unique(sparse[c1 == value, 0])) == 1
    np.testing.assert_array_equal(sparse[:, 0], np.where(c1 == "", 0, stable_hash(c1, buckets[0])))
    single, _, _ = criteo_transform(df, 1000)
    assert single.shape == dense.shape
    with pytest.raises(ValueError, match="26 bucket counts"):
        criteo_transform(df, [10, 10])


def test_stable_hash_is_identical_across_processes() -> None:
    values = ["68fd1e64", "80e26c9b", "", "fb936136"]
    here = stable_hash(values, 1_000_003).tolist()
    assert all(1 <= b < 1_000_003 for b in here) and len(set(here)) == 4
    code = (
        "from recsys.data.criteo import stable_hash; "
        f"print(stable_hash({values!r}, 1_000_003).tolist())"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == str(here)
    with pytest.raises(ValueError, match="bucket 0 is reserved"):
        stable_hash(values, 1)


def test_broken_rows_are_rejected(tmp_path: Path) -> None:
    good = "\t".join(["1", *["3"] * 13, *["abcdef12"] * 26])
    short = "\t".join(["0", *["1"] * 13, *["abcdef12"] * 23])  # 37 fields: padded
    rows = [
        good,
        short,
        "\t".join(["0"] * 30),  # wrong field count
        good.replace("1", "2", 1),  # label 2
        good.replace("\t3\t", "\tabc\t", 1),  # non-numeric integer feature
        ",".join(good.split("\t")),  # commas in a tab file
        good,
    ]
    path = tmp_path / "train.txt"
    path.write_text("\n".join(rows) + "\n")
    df, report = load_criteo(path)
    assert len(df) == 3 and report.repaired == {"padded": 1}
    assert report.rejected == {
        "wrong field count (expected 40)": 1,
        "bad label (not 0/1)": 1,
        "non-numeric integer feature": 1,
        "wrong separator": 1,
    }
    assert df["C26"].tolist() == ["abcdef12", "", "abcdef12"]
    with pytest.raises(MalformedDataError, match="bad label"):
        load_criteo(path, strict=True)
    with pytest.raises(DatasetNotFoundError, match="RECSYS_DATA_DIR"):
        load_criteo(tmp_path / "missing.txt")
