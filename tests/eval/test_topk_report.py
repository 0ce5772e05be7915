"""Top-k lists written in original ids (Parquet and CSV) and the markdown metric table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.eval.report import metrics_table, topk_frame, write_topk

TOPK = np.array([[2, 0, -1], [1, 2, 0]])
SCORES = np.array([[0.9, 0.4, -np.inf], [3.0, 2.5, 1.0]])
USER_IDS = np.array(["u7", "u3"])  # original id of each row
ITEM_IDS = np.array([101, 205, 309])  # original id of each item index


@pytest.mark.parametrize("name", ["topk.parquet", "sub/dir/topk.csv"])
def test_write_topk_round_trip_in_original_ids(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    n = write_topk(path, TOPK, SCORES, USER_IDS, ITEM_IDS)
    assert n == 5  # the -1 padding is not written
    back = pd.read_csv(path) if name.endswith(".csv") else pd.read_parquet(path)
    assert list(back.columns) == ["user", "item", "rank", "score"]
    assert back["user"].tolist() == ["u7", "u7", "u3", "u3", "u3"]
    assert back["item"].tolist() == [309, 101, 205, 309, 101]
    assert back["rank"].tolist() == [1, 2, 1, 2, 3]
    np.testing.assert_allclose(back["score"], [0.9, 0.4, 3.0, 2.5, 1.0], rtol=1e-6)


def test_explicit_csv_format_and_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "lists.out"
    write_topk(path, TOPK, SCORES, USER_IDS, ITEM_IDS, fmt="csv")
    assert path.read_text().splitlines()[0] == "user,item,rank,score"
    frame = topk_frame(TOPK, SCORES, USER_IDS, ITEM_IDS)
    assert frame["rank"].dtype == np.int32 and frame["score"].dtype == np.float32


def test_topk_frame_rejects_mismatched_ids() -> None:
    with pytest.raises(ValueError, match="one id per topk row"):
        topk_frame(TOPK, SCORES, USER_IDS[:1], ITEM_IDS)
    with pytest.raises(ValueError, match="item ids"):
        topk_frame(TOPK, SCORES, USER_IDS, ITEM_IDS[:2])
    with pytest.raises(ValueError, match="same 2-D shape"):
        topk_frame(TOPK, SCORES[:, :2], USER_IDS, ITEM_IDS)


def test_metrics_table_markdown() -> None:
    table = metrics_table(
        {
            "popularity": {"ndcg@10": 0.252353, "map@10": 0.055959},
            "bpr": {"ndcg@10": 0.45, "precision@10": float("nan")},
        }
    )
    assert table.splitlines() == [
        "| model | ndcg@10 | map@10 | precision@10 |",
        "|---|---:|---:|---:|",
        "| popularity | 0.2524 | 0.0560 | n/a |",
        "| bpr | 0.4500 | n/a | n/a |",
    ]
    only = metrics_table({"bpr": {"ndcg@10": 0.45, "map@10": 0.1}}, metrics=["map@10"], digits=2)
    assert only.splitlines()[-1] == "| bpr | 0.10 |"
