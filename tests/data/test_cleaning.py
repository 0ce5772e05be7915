"""Cleansing steps on the real ML-100K and on small frames built to exercise each rule."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.cleaning import (
    CleaningConfig,
    clean,
    drop_exact_duplicates,
    handle_missing,
    k_core,
    normalize,
    standardize_category,
    to_implicit,
)
from recsys.data.frame import InteractionData


def _frame(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def test_ml100k_defaults_keep_every_rating(ml100k: InteractionData) -> None:
    cleaned, report = clean(ml100k)
    assert len(cleaned.interactions) == 100_000
    assert [s.step for s in report.steps] == [
        "drop_exact_duplicates",
        "handle_missing",
        "normalize",
        "to_implicit",
        "k_core",
    ]
    # The filters that are off say so (and why) in the summary.
    assert "to_implicit: off (implicit_threshold is null: every rating kept)" in report.summary()
    assert "k_core: off (user_k=0, item_k=0)" in report.summary()
    assert report.rows_in == report.rows_out == 100_000
    assert all(s.rows_removed == 0 for s in report.steps)
    assert cleaned.items is not None and ml100k.items is not None
    assert cleaned.items["genres"].iloc[0] == ["animation", "children's", "comedy"]
    assert ml100k.items["genres"].iloc[0] == ["Animation", "Children's", "Comedy"]  # untouched
    assert cleaned.users is not None and set(cleaned.users["gender"]) == {"m", "f"}
    np.testing.assert_array_equal(
        cleaned.interactions["rating"].to_numpy(), ml100k.interactions["rating"].to_numpy()
    )


def test_ml100k_implicit_and_k_core(ml100k: InteractionData, ml100k_dir: Path) -> None:
    raw = np.loadtxt(ml100k_dir / "u.data", dtype=np.int64, delimiter="\t")
    config = CleaningConfig(implicit_threshold=4, user_k=20, item_k=10)
    cleaned, report = clean(ml100k, config)
    implicit = report.step("to_implicit")
    assert implicit.rows_out == int((raw[:, 2] >= 4).sum())
    df = cleaned.interactions
    assert (df["rating"] == 1.0).all() and df["rating"].dtype == np.float32
    assert df.groupby("user_id").size().min() >= 20
    assert df.groupby("item_id").size().min() >= 10
    core = report.step("k_core")
    assert core.details["converged"] and core.details["rounds"] >= 1
    assert core.rows_in - core.rows_out == sum(core.removed.values())
    # File order survives every step ((user, item) pairs are unique in ML-100K).
    source = ml100k.interactions
    key = source["user_id"].to_numpy() * 10_000 + source["item_id"].to_numpy()
    position = pd.Series(np.arange(len(key)), index=key)
    assert position.index.is_unique
    kept = df["user_id"].to_numpy() * 10_000 + df["item_id"].to_numpy()
    assert position.loc[kept].is_monotonic_increasing


def test_drop_exact_duplicates() -> None:
    t = pd.Timestamp("2024-01-01", tz="UTC")
    df = _frame([(1, 1, 5.0, t), (1, 1, 5.0, t), (1, 1, 4.0, t), (2, 1, 5.0, t), (1, 1, 5.0, t)])
    out, report = drop_exact_duplicates(df)
    assert out.values.tolist() == df.iloc[[0, 2, 3]].values.tolist()
    assert report.removed == {"exact duplicate": 2} and report.rows_out == 3


def test_handle_missing_counts_each_row_once() -> None:
    t = pd.Timestamp("2024-01-01", tz="UTC")
    df = _frame(
        [
            ("a", "x", 5.0, t),
            (None, "x", 5.0, t),
            ("  ", None, 5.0, pd.NaT),
            ("b", None, np.nan, t),
            ("c", "y", 3.0, pd.NaT),
            ("d", "y", np.nan, t),
        ]
    )
    out, report = handle_missing(df, default_rating=2.5)
    assert out["user_id"].tolist() == ["a", "d"]
    assert out["rating"].tolist() == [5.0, 2.5]
    assert report.removed == {"missing user_id": 2, "missing item_id": 1, "missing timestamp": 1}
    assert report.changed == {"rating filled with 2.5": 1}
    dropped, report = handle_missing(df, default_rating=None)
    assert dropped["user_id"].tolist() == ["a"]
    assert report.removed["missing rating"] == 1


def test_standardize_category() -> None:
    assert standardize_category("  Sci-Fi ") == "sci-fi"
    assert standardize_category("ＣＬＩＣＫ") == "click"  # full-width letters (NFKC)
    assert standardize_category("Film\u00a0 Noir") == "film noir"
    assert standardize_category("ﬁlm") == "film"  # ligature


def test_normalize_timestamps_ids_and_categories() -> None:
    df = pd.DataFrame(
        {
            "user_id": [" u1", "u2 ", "u3", "u4"],
            "item_id": [1, 2, 3, 4],
            "rating": np.ones(4, np.float32),
            "timestamp": ["2024-01-01T12:00:00+02:00", "2024-01-01 10:00:00", "1704103200", "?"],
            "event_type": [" Click", "CLICK", "view", "Ｖｉｅｗ"],
        }
    )
    items = pd.DataFrame({"item_id": [1], "genres": [["Sci-Fi ", " Film-Noir", ""]]})
    data = InteractionData("toy", df, items=items)
    out, report = normalize(data)
    result = out.interactions
    assert str(result["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert (result["timestamp"] == pd.Timestamp("2024-01-01 10:00", tz="UTC")).all()
    assert report.removed == {"unparseable timestamp": 1}
    assert result["user_id"].tolist() == ["u1", "u2", "u3"]
    assert result["event_type"].tolist() == ["click", "click", "view"]
    assert report.changed["interactions.event_type standardized"] == 2
    assert out.items is not None and out.items["genres"].iloc[0] == ["sci-fi", "film-noir"]
    assert df["event_type"].iloc[0] == " Click"  # input untouched


def test_to_implicit() -> None:
    t = pd.Timestamp("2024-01-01", tz="UTC")
    df = _frame([(1, 1, 5.0, t), (1, 2, 3.5, t), (2, 1, 4.0, t)]).astype({"rating": "float32"})
    out, report = to_implicit(df, 4.0)
    assert out["item_id"].tolist() == [1, 1] and out["rating"].tolist() == [1.0, 1.0]
    assert out["rating"].dtype == np.float32
    assert report.removed == {"rating below 4": 1}
    same, report = to_implicit(df, None)
    assert same is df and report.rows_removed == 0


def test_k_core_cascades_until_stable() -> None:
    # Round 1 drops user 3 (one rating), then item 30 (left with one rating);
    # that leaves user 2 with one rating, dropped in round 2; round 3 finds nothing.
    pairs = [(1, 10), (1, 20), (2, 20), (2, 30), (3, 30), (4, 10), (4, 20)]
    df = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    out, report = k_core(df, user_k=2, item_k=2)
    assert sorted(map(tuple, out[["user_id", "item_id"]].to_numpy().tolist())) == [
        (1, 10),
        (1, 20),
        (4, 10),
        (4, 20),
    ]
    assert report.details["rounds"] == 2 and report.details["converged"]
    assert report.rows_removed == 3
    assert report.removed == {"user with < 2 interactions": 2, "item with < 2 interactions": 1}
    off, report = k_core(df, user_k=0, item_k=1)
    assert len(off) == len(df) and report.details["rounds"] == 0
    stopped, report = k_core(df, user_k=2, item_k=2, max_rounds=1)
    assert not report.details["converged"] and len(stopped) > len(out)


def test_config_documents_every_field() -> None:
    doc = CleaningConfig.__doc__ or ""
    for field in dataclasses.fields(CleaningConfig):
        assert f"{field.name} (" in doc, f"CleaningConfig.{field.name} is not documented"


@pytest.mark.parametrize("threshold", [None, 3.0])
def test_clean_does_not_modify_its_input(ml100k: InteractionData, threshold: float | None) -> None:
    before = ml100k.interactions["rating"].to_numpy().copy()
    clean(ml100k, CleaningConfig(implicit_threshold=threshold, user_k=5))
    np.testing.assert_array_equal(ml100k.interactions["rating"].to_numpy(), before)
