"""Datasets through the main job's data stage and its entry point: the schema follows
the dataset (ML-25M needs no demographics), a schema/data mismatch names the column
and the fix, ``dataset.strict=true`` works as a Hydra override, and user errors end
the job with one message and exit status 2. Data: tiny files in the publisher's
layout written here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recsys.data.frame import (
    DataConfigError,
    InteractionData,
    MalformedDataError,
    SchemaMismatchError,
)
from recsys.data.schema_check import FeatureNeed, check_schema
from recsys.pipeline import load_dataset, prepare

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def _config(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="main", overrides=["tracking=none", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _write_ml25m(root: Path, extra_ratings: str = "") -> Path:
    """30 users x 6 movies of half-star ratings in the ratings.csv + movies.csv layout."""
    folder = root / "ml-25m"
    folder.mkdir(parents=True)
    stars = [0.5, 1.5, 2.5, 3.0, 4.5, 5.0]
    lines = [
        f"{u},{m},{stars[(u + m) % 6]},{964_982_703 + 3_600 * (u * 6 + m)}"
        for u in range(1, 31)
        for m in range(1, 7)
    ]
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n" + extra_ratings
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        '1,"Heat (1995)",Action|Crime|Thriller\n'
        "2,Casino (1995),Crime|Drama\n"
        "3,Sabrina (1995),Comedy|Romance\n"
        "4,Balto (1995),Adventure|Animation|Children\n"
        "5,Nixon (1995),Drama\n"
        "6,Untitled,(no genres listed)\n"
    )
    return folder


def test_ml25m_builds_features_without_demographics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_ml25m(tmp_path / "data")
    cfg = _config(["dataset=ml25m", f"dataset.dir={tmp_path / 'data'}", "dataset.offline=true"])
    prep = prepare(cfg, tmp_path / "art")
    assert prep.main.users is not None and len(prep.main.users) == 30
    assert "age_bucket" not in prep.main.users.columns
    assert prep.data is not None and prep.data.users is None
    ratings = sorted(prep.data.interactions["rating"].unique().tolist())
    assert ratings == [0.5, 1.5, 2.5, 3.0, 4.5, 5.0]  # half stars kept by the loader
    out = capsys.readouterr().out
    # The loader's and the cleaning's reports are printed for the user to see...
    assert "dataset ml-25m (loader movielens_csv)" in out and "read 180 rows, kept 180" in out
    assert "to_implicit: off (implicit_threshold is null: every rating kept)" in out
    # ...and so is what the split's min_rating leaves out (the 0.5-star ratings).
    assert "split: min_rating 1 leaves out 30 of 180 interactions" in out


def test_a_schema_that_does_not_fit_names_columns_and_the_fix(tmp_path: Path) -> None:
    _write_ml25m(tmp_path / "data")
    cfg = _config(
        [
            "dataset=ml25m",
            f"dataset.dir={tmp_path / 'data'}",
            "dataset.schema=configs/schema/ml100k.yaml",
        ]
    )
    with pytest.raises(SchemaMismatchError) as info:
        prepare(cfg, tmp_path / "art")
    message = str(info.value)
    for expected in (
        "feature schema configs/schema/ml100k.yaml does not fit dataset ml-25m",
        "feature user_age (user) reads column 'age_bucket' (made from users.age), "
        "but ml-25m has no users table",
        "feature user_gender (user) reads column 'gender'",
        "use a schema written for this data: dataset.schema=configs/schema/movielens_csv.yaml",
        "drop the feature(s) user_age, user_gender, user_occupation from "
        "configs/schema/ml100k.yaml",
    ):
        assert expected in message, f"{expected!r} not in:\n{message}"


def test_check_schema_reports_a_cap_on_multi_valued_attributes() -> None:
    data = InteractionData(
        name="toy",
        interactions=pd.DataFrame({"user_id": [1], "item_id": [1], "timestamp": [0]}),
        items=pd.DataFrame({"item_id": [1, 2], "genres": [["a", "b", "c"], ["a"]]}),
    )
    needs = [FeatureNeed("item_genres", "item", "genres", "multi_hot", 2)]
    notes = check_schema(data, needs, schema_file="s.yaml")
    assert notes == [
        "feature item_genres keeps 2 values per example: 1 of 2 rows have more (up to 3); "
        "raise its max_len in the schema to keep them all"
    ]
    missing = [FeatureNeed("item_brand", "item", "brand")]
    with pytest.raises(SchemaMismatchError, match="items table has no column 'brand'"):
        check_schema(data, missing, schema_file="s.yaml", alternatives={"t.yaml": needs})


def test_strict_is_a_hydra_override(tmp_path: Path) -> None:
    _write_ml25m(tmp_path / "data", extra_ratings="NA,1,4.0,964982703\n7,1,4.0,never\n")
    base = ["dataset=ml25m", f"dataset.dir={tmp_path / 'data'}"]
    data, files = load_dataset(_config(base)["dataset"])
    assert len(data.interactions) == 180 and [f.name for f in files] == [
        "ratings.csv",
        "movies.csv",
    ]
    with pytest.raises(MalformedDataError, match=r"1 missing user_id.*1 bad timestamp"):
        load_dataset(_config([*base, "dataset.strict=true"])["dataset"])


def _main(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["RECSYS_OFFLINE"] = "1"  # a test never downloads
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "training" / "main.py"),
            "stages=[data]",
            "tracking=none",
            f"artifacts_dir={tmp_path / 'art'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            *overrides,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_main_job_prints_one_message_and_exits_2_on_user_errors(tmp_path: Path) -> None:
    done = _main(tmp_path, "dataset.loader=nope")
    assert done.returncode == 2, done.stderr
    assert "unknown loader 'nope' in dataset.loader; known loaders:" in done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    done = _main(tmp_path, "dataset=ml32m", f"dataset.dir={tmp_path / 'nothing'}")
    assert done.returncode == 2, done.stderr
    assert "dataset 'ml-32m' not found" in done.stderr
    assert "downloads are off: dataset.offline or RECSYS_OFFLINE is set" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_event_log_through_hydra_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "data" / "shop"
    folder.mkdir(parents=True)
    rows = "".join(
        f"{'NA' if i % 7 == 0 else f'u{i % 5}'};s{i % 9};i{i % 11};"
        f"{1_714_550_400_000 + i * 60_000};{'view' if i % 3 else 'buy'}\n"
        for i in range(200)
    )
    (folder / "log.txt").write_text("user;session;item;ts;what\n" + rows)
    cfg = _config(
        [
            "dataset=event_log",
            "dataset.name=shop",
            f"dataset.dir={tmp_path / 'data'}",
            "dataset.read.file=log.txt",
            "dataset.read.delimiter=';'",
            "dataset.read.columns={user: user_id, session: session_id, item: item_id, "
            "ts: timestamp, what: event_type}",
            "dataset.read.type_map={view: page_view, buy: purchase}",
            "dataset.read.timestamp.format=epoch_ms",
            "dataset.read.anonymous=session",
        ]
    )
    prep = prepare(cfg, tmp_path / "art")
    assert prep.data is not None
    df = prep.data.interactions
    assert len(df) == 200 and set(df["event_type"]) == {"page_view", "purchase"}
    assert df["user_id"].str.startswith("anon:s").sum() == 29  # the 29 "NA" rows
    assert prep.main.manifest["rows"]["train"] + prep.main.manifest["rows"]["test"] == 200
    assert "29 missing user_id set to anon:<session_id>" in capsys.readouterr().out


def test_an_impression_log_is_refused_by_the_interaction_stages(data_dir: Path) -> None:
    if not (data_dir / "criteo-sample" / "pytorch-fm_train.txt").is_file():
        pytest.skip("criteo-sample not found")
    cfg = _config(["dataset=criteo_sample", f"dataset.dir={data_dir}"])
    with pytest.raises(DataConfigError, match=r"labelled ad impressions.*train_ranker"):
        load_dataset(cfg["dataset"])
    with pytest.raises(DataConfigError, match=r"no feature schema \(dataset\.schema is null\)"):
        prepare(cfg, Path("unused"))
