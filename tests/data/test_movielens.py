"""MovieLens loaders: the real ML-100K, and publisher-format fixtures for the rest.

The reference values for ML-100K are computed in the tests with plain Python and
numpy from the raw files, independently of the loader's pyarrow parsing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.frame import (
    INTERACTION_COLUMNS,
    DatasetNotFoundError,
    InteractionData,
    MalformedDataError,
)
from recsys.data.movielens import (
    ITEM_COLUMNS,
    USER_COLUMNS,
    load_ml1m,
    load_ml100k,
    load_movielens,
    load_movielens_csv,
)

# --- the real MovieLens 100K -----------------------------------------------------


def test_ml100k_counts_and_dtypes(ml100k: InteractionData) -> None:
    df = ml100k.interactions
    assert len(df) == 100_000
    assert ml100k.n_users == 943 and ml100k.n_items == 1_682
    assert tuple(df.columns) == INTERACTION_COLUMNS
    assert [str(t) for t in df.dtypes] == ["int64", "int64", "float32", "datetime64[ns, UTC]"]
    report = ml100k.reports[0]
    assert (report.rows_read, report.rows_kept, report.rows_rejected) == (100_000, 100_000, 0)
    assert all(r.rows_rejected == 0 for r in ml100k.reports)


def test_ml100k_interactions_match_file_in_order(ml100k: InteractionData, ml100k_dir: Path) -> None:
    raw = np.loadtxt(ml100k_dir / "u.data", dtype=np.int64, delimiter="\t")
    df = ml100k.interactions
    np.testing.assert_array_equal(df["user_id"].to_numpy(), raw[:, 0])
    np.testing.assert_array_equal(df["item_id"].to_numpy(), raw[:, 1])
    np.testing.assert_array_equal(df["rating"].to_numpy(), raw[:, 2].astype(np.float32))
    seconds = df["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64) // 10**9
    np.testing.assert_array_equal(seconds, raw[:, 3])
    assert df["timestamp"].iloc[0] == pd.Timestamp(int(raw[0, 3]), unit="s", tz="UTC")


def test_ml100k_users(ml100k: InteractionData, ml100k_dir: Path) -> None:
    users = ml100k.users
    assert users is not None
    assert tuple(users.columns) == USER_COLUMNS
    assert [str(t) for t in users.dtypes] == ["int64", "int64", "str", "str", "str"]
    raw = [line.split("|") for line in (ml100k_dir / "u.user").read_text().splitlines()]
    assert len(users) == len(raw) == 943
    for row, fields in zip(users.itertuples(index=False), raw, strict=True):
        assert (row.user_id, row.age, row.gender, row.occupation, row.zip_code) == (
            int(fields[0]),
            int(fields[1]),
            fields[2],
            fields[3],
            fields[4],
        )
    # Zip codes stay strings: some are not numbers.
    assert not users["zip_code"].str.fullmatch(r"\d{5}").all()


def test_ml100k_items_genres_dates_years(ml100k: InteractionData, ml100k_dir: Path) -> None:
    items = ml100k.items
    assert items is not None
    assert tuple(items.columns) == ITEM_COLUMNS
    assert [str(t) for t in items.dtypes] == ["int64", "str", "datetime64[ns]", "Int64", "object"]
    assert len(items) == 1_682
    toy = items.iloc[0]
    assert toy["title"] == "Toy Story (1995)"
    assert toy["genres"] == ["Animation", "Children's", "Comedy"]
    assert toy["release_date"] == pd.Timestamp("1995-01-01") and toy["year"] == 1995

    genre_names = [
        line.split("|")[0] for line in (ml100k_dir / "u.genre").read_text().splitlines() if line
    ]
    text = (ml100k_dir / "u.item").read_bytes().decode("latin-1")
    raw = [line.split("|") for line in text.splitlines()]
    assert len(raw) == len(items)
    for row, fields in zip(items.itertuples(index=False), raw, strict=True):
        expected = [g for g, flag in zip(genre_names, fields[5:], strict=True) if flag == "1"]
        assert row.genres == expected
    undated = [int(f[0]) for f in raw if f[2] == ""]
    assert undated == [267]  # the file has exactly one item without a release date
    assert items["release_date"].isna().sum() == len(undated)
    dated = items["release_date"].notna()
    assert items.loc[dated, "year"].notna().all()
    unknown = items.set_index("item_id").loc[267]
    assert unknown["title"] == "unknown" and pd.isna(unknown["year"])
    assert unknown["genres"] == ["unknown"]
    # The year is the film's (title) year; the release date may be a later re-release.
    jedi = items[items["title"] == "Return of the Jedi (1983)"].iloc[0]
    assert jedi["year"] == 1983 and jedi["release_date"].year == 1997


def test_ml100k_loads_fast(ml100k_dir: Path) -> None:
    best = min(_timed(lambda: load_ml100k(ml100k_dir)) for _ in range(3))
    assert best < 1.0, f"ML-100K took {best:.2f} s (best of 3)"


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_ml100k_official_fold_file(ml100k_dir: Path) -> None:
    data = load_ml100k(ml100k_dir / "ua.base")
    n_lines = len((ml100k_dir / "ua.base").read_bytes().splitlines())
    assert len(data.interactions) == n_lines == 90_570
    assert data.users is not None and len(data.users) == 943


def test_load_movielens_by_name(ml100k_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_DATA_DIR", str(ml100k_dir.parent))
    assert len(load_movielens("ml-100k").interactions) == 100_000
    with pytest.raises(ValueError, match="not a MovieLens dataset"):
        load_movielens("criteo-sample")


# --- malformed input ---------------------------------------------------------------


def test_malformed_ratings_are_counted_with_examples(write_ml100k: Callable[..., Path]) -> None:
    lines = [
        b"1\t10\t5\t881250949",  # 1 good
        b"1\t10\t4",  # 2 truncated
        b"2,10,3,891717742",  # 3 commas instead of tabs
        b"x\t10\t3\t891717742",  # 4 non-numeric user
        b"2\t1O\t3\t891717742",  # 5 letter O in the item id
        b"2\t10\t9\t891717742",  # 6 rating out of range
        b"2\t10\tfive\t891717742",  # 7 non-numeric rating
        b"2\t10\t3\tyesterday",  # 8 bad timestamp
        b"",  # 9 blank: no data, not a row
        b"2\t20\t3\t891717742\xff",  # 10 stray byte: not a number
        b"3\t20\t2\t878887116",  # 11 good
        b"1\t10\t5\t881250949\t7",  # 12 extra field
    ]
    folder = write_ml100k(u_data=b"\r\n".join(lines) + b"\r\n")
    data = load_ml100k(folder)
    report = data.reports[0]
    assert report.rows_read == 11
    assert report.rejected == {
        "wrong field count (expected 4)": 2,
        "wrong separator": 1,
        "non-numeric user_id": 1,
        "non-numeric item_id": 1,
        "non-numeric rating": 1,
        "rating out of range": 1,
        "bad timestamp": 2,
    }
    assert report.rows_kept == 2 == len(data.interactions)
    assert data.interactions["user_id"].tolist() == [1, 3]  # file order
    assert report.examples["wrong separator"] == [(3, "2,10,3,891717742")]
    assert [n for n, _ in report.examples["bad timestamp"]] == [8, 10]
    assert [n for n, _ in report.examples["wrong field count (expected 4)"]] == [2, 12]
    summary = report.summary()
    assert "rejected" in summary and "line 3: '2,10,3,891717742'" in summary
    with pytest.raises(MalformedDataError, match="wrong separator"):
        load_ml100k(folder, strict=True)


def test_item_file_encodings(
    write_ml100k: Callable[..., Path], item_flags: Callable[[Sequence[str]], str]
) -> None:
    drama = item_flags(["Drama"])
    latin1 = f"10|Misérables, Les (1995)|01-Jan-1995|||{drama}\n".encode("latin-1")
    utf8 = f"20|Café au lait (1993)||||{drama}\n".encode()
    bad_flag = f"30|Bad (1990)|01-Jan-1990|||{drama.replace('0', '2', 1)}\n".encode()
    bad_date = f"40|Odd date (1991)|1991/01/01|||{drama}\n".encode()
    folder = write_ml100k(u_item=latin1 + utf8 + bad_flag + bad_date)
    data = load_ml100k(folder)
    items = data.items
    assert items is not None
    assert items["title"].tolist() == [
        "Misérables, Les (1995)",
        "Café au lait (1993)",
        "Odd date (1991)",
    ]
    assert items["genres"].tolist() == [["Drama"]] * 3
    report = data.reports[2]
    assert report.repaired == {
        "utf-8 line in latin-1 file": 1,
        "unparseable release_date set to NaT": 1,
    }
    assert report.rejected == {"bad genre flag (not 0/1)": 1}
    assert items["year"].tolist() == [1995, 1993, 1991]


def test_missing_files_name_path_and_env(write_ml100k: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="RECSYS_DATA_DIR") as info:
        load_ml100k(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    folder = write_ml100k()
    (folder / "u.genre").unlink()
    with pytest.raises(DatasetNotFoundError, match="RECSYS_DATA_DIR") as info:
        load_ml100k(folder)
    assert str(folder / "u.genre") in str(info.value)


def test_broken_genre_table_is_an_error(write_ml100k: Callable[..., Path]) -> None:
    folder = write_ml100k()
    (folder / "u.genre").write_text("unknown|0\nAction|5\n")
    with pytest.raises(MalformedDataError, match=r"u\.genre"):
        load_ml100k(folder)


# --- ML-1M (publisher's format, a few lines) ---------------------------------------

ML1M_RATINGS = (
    "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n2::73::1::978300000\n"
)
ML1M_USERS = "1::F::1::10::48067\n2::M::56::16::70072\n"
ML1M_MOVIES = (
    "73::Misérables, Les (1995)::Drama|Musical\n"
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
)


def _write_ml1m(folder: Path, ratings: str = ML1M_RATINGS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_bytes(ratings.encode("latin-1"))
    (folder / "users.dat").write_bytes(ML1M_USERS.encode("latin-1"))
    (folder / "movies.dat").write_bytes(ML1M_MOVIES.encode("latin-1"))
    return folder


def test_ml1m_fixture(tmp_path: Path) -> None:
    data = load_ml1m(_write_ml1m(tmp_path / "ml-1m"))
    df = data.interactions
    assert tuple(df.columns) == INTERACTION_COLUMNS
    assert df["item_id"].tolist() == [1193, 661, 1193, 73]
    assert df["rating"].dtype == np.float32 and df["rating"].tolist() == [5, 3, 4, 1]
    assert df["timestamp"].iloc[0] == pd.Timestamp("2000-12-31 22:12:40", tz="UTC")
    users = data.users
    assert users is not None and tuple(users.columns) == USER_COLUMNS
    first = users.iloc[0]
    assert (first["gender"], first["age"], first["occupation"], first["zip_code"]) == (
        "F",
        1,
        "K-12 student",
        "48067",
    )
    assert users.iloc[1]["occupation"] == "self-employed"
    items = data.items
    assert items is not None and tuple(items.columns) == ITEM_COLUMNS
    assert items["title"].iloc[0] == "Misérables, Les (1995)"
    assert items["genres"].iloc[1] == ["Animation", "Children's", "Musical"]
    assert items["year"].tolist() == [1995, 1996, 1975]
    assert items["release_date"].isna().all()


def test_ml1m_malformed_rows(tmp_path: Path) -> None:
    ratings = ML1M_RATINGS + "3\t1193\t4\t978298413\n3::1193::4\n3::1193::4::97829841x\n"
    data = load_ml1m(_write_ml1m(tmp_path / "ml-1m", ratings))
    assert len(data.interactions) == 4
    assert data.reports[0].rejected == {
        "wrong separator": 1,
        "wrong field count (expected 4)": 1,
        "bad timestamp": 1,
    }
    with pytest.raises(MalformedDataError):
        load_ml1m(tmp_path / "ml-1m", strict=True)


# --- CSV layout (ml-latest-small / ml-25m) ----------------------------------------

CSV_RATINGS = (
    "userId,movieId,rating,timestamp\n"
    "1,1,4.0,964982703\n"
    "1,11,0.5,964981247\n"
    "2,208,5.0,964983815\n"
    "2,1,5.5,964983815\n"
    "2,1,4.25,964983815\n"
)
CSV_MOVIES = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
    '11,"American President, The (1995)",Comedy|Drama|Romance\n'
    "208,Waterworld (1995),Action|Adventure|Sci-Fi\n"
    "114335,La cravate (1957),(no genres listed)\n"
)


def _write_csv_layout(folder: Path, ratings: bytes, movies: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_bytes(ratings)
    (folder / "movies.csv").write_bytes(movies)
    return folder


def test_csv_layout_fixture(tmp_path: Path) -> None:
    folder = _write_csv_layout(
        tmp_path / "ml-latest-small", CSV_RATINGS.encode(), CSV_MOVIES.encode()
    )
    data = load_movielens_csv(folder)
    assert data.name == "ml-latest-small" and data.users is None
    df = data.interactions
    assert df["rating"].tolist() == [4.0, 0.5, 5.0]
    assert data.reports[0].rejected == {"rating out of range": 2}
    items = data.items
    assert items is not None
    assert items["title"].tolist()[1] == "American President, The (1995)"
    assert items["genres"].tolist()[1] == ["Comedy", "Drama", "Romance"]
    assert items["genres"].tolist()[3] == []
    assert items["year"].tolist() == [1995, 1995, 1995, 1957]


def test_csv_layout_encoding_errors_reject_one_row(tmp_path: Path) -> None:
    movies = CSV_MOVIES.encode() + "999,Déjà vu (1997),Drama\n".encode("latin-1")
    ratings = CSV_RATINGS.encode() + b"3,1,3.\xe90,964983815\n"
    folder = _write_csv_layout(tmp_path / "ml-latest-small", ratings, movies)
    data = load_movielens_csv(folder)
    items = data.items
    assert items is not None and len(items) == 4
    assert data.reports[1].rejected == {"undecodable bytes (not utf-8)": 1}
    assert data.reports[1].examples["undecodable bytes (not utf-8)"][0][0] == 6
    assert data.reports[0].rejected["undecodable bytes (not utf-8)"] == 1
    assert data.reports[0].rows_read == 6
    with pytest.raises(MalformedDataError, match="undecodable"):
        load_movielens_csv(folder, strict=True)


def test_csv_layout_reads_columns_by_header_name(tmp_path: Path) -> None:
    # Columns are found by their header names, so a reordered file reads the same.
    swapped = "movieId,userId,rating,timestamp\n1,7,4.0,964982703\n"
    folder = _write_csv_layout(tmp_path / "x", swapped.encode(), CSV_MOVIES.encode())
    df = load_movielens_csv(folder).interactions
    assert (df["user_id"].tolist(), df["item_id"].tolist()) == ([7], [1])
    # An unknown header is an error that names the config key to fix it with.
    renamed = CSV_RATINGS.replace("userId,movieId", "uid,movieId").encode()
    folder = _write_csv_layout(tmp_path / "y", renamed, CSV_MOVIES.encode())
    with pytest.raises(MalformedDataError, match=r"unexpected header.*read\.columns"):
        load_movielens_csv(folder)


def test_chunked_reading_matches_whole_file(ml100k_dir: Path, tmp_path: Path) -> None:
    from recsys.data._delimited import read_lines
    from recsys.data.frame import LoadReport

    # CRLF endings, a blank line and no final newline, read in tiny chunks.
    raw = (ml100k_dir / "u.data").read_bytes()
    text = raw[: raw.rfind(b"\n", 0, 50_000)]
    path = tmp_path / "u.data"
    path.write_bytes(text.replace(b"\n", b"\r\n").replace(b"\r\n", b"\r\n\r\n", 1))
    whole = read_lines(path, LoadReport("whole"))
    report = LoadReport("chunks")
    chunked = read_lines(path, report, chunk_bytes=997)
    assert whole.text.equals(chunked.text)
    np.testing.assert_array_equal(whole.numbers, chunked.numbers)
    expected = [line.decode() for line in text.splitlines() if line]
    assert chunked.text.to_pylist() == expected and report.rows_read == len(expected)
    assert chunked.numbers[:3].tolist() == [1, 3, 4]  # line 2 is the blank one
    limited = read_lines(path, LoadReport("head"), chunk_bytes=997, max_rows=1_234)
    assert limited.text.to_pylist() == expected[:1_234]


def test_genres_are_all_kept_unless_a_cap_is_set(ml100k_dir: Path) -> None:
    from recsys.data.movielens import Ml100kConfig

    full = load_ml100k(ml100k_dir)
    assert full.items is not None and full.items["genres"].map(len).max() == 6
    capped = load_ml100k(ml100k_dir, config=Ml100kConfig(max_genres=2))
    assert capped.items is not None and capped.items["genres"].map(len).max() == 2
    longer = int((full.items["genres"].map(len) > 2).sum())
    assert capped.reports[2].repaired == {
        "genres truncated to the first 2 (read.max_genres)": longer
    }
    assert capped.items["genres"].iloc[0] == full.items["genres"].iloc[0][:2]
