"""The data stage honours the real-time store's erasure ledger (``data.erasure_ledger``):
an erased user's rows are gone from every split and table, the report counts them,
a ledger that cannot be opened stops the stage, and the default (null) changes nothing.
Data: a tiny MovieLens-100K (integer user ids) in the publisher's layout."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recsys.events.sqlite_store import SqliteStore
from recsys.pipeline import ErasureLedger, ErasureLedgerError, Prepared, prepare
from recsys.privacy.erasure import erase_user, filter_erased

REPO = Path(__file__).resolve().parents[2]
USERS = range(1, 21)
ITEMS = range(1, 9)
ERASED = 7
# u.genre of MovieLens 100K, in the publisher's order.
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def _config(overrides: list[str]) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="main", overrides=["tracking=none", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


@pytest.fixture
def data_root(tmp_path: Path, item_flags: Callable[[Sequence[str]], str]) -> Path:
    """20 users x 8 movies, every user rating every movie (u.data, u.user, u.item, u.genre)."""
    folder = tmp_path / "data" / "ml-100k"
    folder.mkdir(parents=True)
    (folder / "u.data").write_text(
        "".join(
            f"{u}\t{i}\t{1 + (u + i) % 5}\t{881_250_949 + 3_600 * (u * 10 + i)}\n"
            for u in USERS
            for i in ITEMS
        )
    )
    (folder / "u.user").write_text(
        "".join(f"{u}|{20 + u}|{'MF'[u % 2]}|writer|{10_000 + u}\n" for u in USERS)
    )
    url = "http://us.imdb.com/M/title-exact?x"
    (folder / "u.item").write_bytes(
        "".join(
            f"{i}|Movie {i} (1995)|01-Jan-1995||{url}|{item_flags([GENRES[i]])}\n" for i in ITEMS
        ).encode("latin-1")
    )
    (folder / "u.genre").write_text("".join(f"{g}|{n}\n" for n, g in enumerate(GENRES)) + "\n")
    return tmp_path / "data"


def _prepare(data_root: Path, art: Path, *extra: str) -> Prepared:
    # Stratified by user: every user has rows in train, test and validation.
    base = ["dataset=ml100k", f"dataset.dir={data_root}", "dataset.offline=true", "split.by=user"]
    cfg = _config([*base, *extra])
    return prepare(cfg, art)


def _ledger(tmp_path: Path, *users: str) -> str:
    db = tmp_path / "rt.db"
    store = SqliteStore(db)
    try:
        for user in users:
            erase_user(store, user, actor="dpo:test")
    finally:
        store.close()
    return f"sqlite://{db}"


def _user_ids(prep: Prepared) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for name, ds in (("main", prep.main), ("selection", prep.selection)):
        for table, frame in ds.tables().items():
            if "user_id" in frame.columns:
                out[f"{name}.{table}"] = set(frame["user_id"].astype(int))
    return out


def test_erased_users_are_absent_from_every_split_and_counted(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = _prepare(data_root, tmp_path / "plain")  # the default: data.erasure_ledger=null
    assert plain.erasure is None and "erasure" not in plain.main.manifest
    assert plain.data is not None and plain.data.interactions["user_id"].dtype.kind == "i"
    tables = _user_ids(plain)
    assert {"main.train", "main.test", "main.users", "selection.train", "selection.test"} <= set(
        tables
    )
    assert all(ERASED in ids for ids in tables.values())
    assert "erasure:" not in capsys.readouterr().out

    url = _ledger(tmp_path, str(ERASED), "someone-else")
    prep = _prepare(data_root, tmp_path / "art", f"data.erasure_ledger={url}")
    for table, ids in _user_ids(prep).items():
        assert ERASED not in ids, table
        assert ids == set(tables[table]) - {ERASED}, table
    assert prep.data is not None and prep.data.users is not None
    assert ERASED not in set(prep.data.users["user_id"])
    assert prep.erasure is not None
    assert (prep.erasure.erased, prep.erasure.rows_dropped, prep.erasure.users_dropped) == (
        2,
        len(ITEMS),
        1,
    )
    assert prep.erasure.user_rows_dropped == 1
    rows = plain.main.manifest["rows"]
    assert prep.main.manifest["rows"]["train"] + prep.main.manifest["rows"]["test"] == (
        rows["train"] + rows["test"] - len(ITEMS)
    )
    for ds in (prep.main, prep.selection):
        assert ds.manifest["erasure"]["rows_dropped"] == len(ITEMS)
    out = capsys.readouterr().out
    assert "erasure: ledger sqlite://" in out
    assert "dropped 8 interactions of 1 users and 1 rows of the user table" in out

    # Unchanged ledger: the processed data is reused, and the report comes with it.
    again = _prepare(data_root, tmp_path / "art", f"data.erasure_ledger={url}")
    assert again.main.manifest["cache"] == "hit" and again.erasure == prep.erasure
    assert "the cached processed data was built so" in capsys.readouterr().out
    # A new erasure changes the ledger: the data is rebuilt without that user too.
    _ledger(tmp_path, "3")
    later = _prepare(data_root, tmp_path / "art", f"data.erasure_ledger={url}")
    assert later.main.manifest["cache"] == "built"
    assert later.erasure is not None and later.erasure.users_dropped == 2
    assert all({3, ERASED}.isdisjoint(ids) for ids in _user_ids(later).values())


def test_a_ledger_that_cannot_be_opened_stops_the_stage(data_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    with pytest.raises(ErasureLedgerError, match=f"data.erasure_ledger=sqlite://{missing}"):
        _prepare(data_root, tmp_path / "art", f"data.erasure_ledger=sqlite://{missing}")
    assert not missing.exists()  # never created
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    url = f"redis://:secret@127.0.0.1:{port}/0"
    with pytest.raises(ErasureLedgerError, match="cannot open the store") as err:
        ErasureLedger.read(url, timeout_s=2.0)
    assert "secret" not in str(err.value) and ":***@" in str(err.value)
    with pytest.raises(ErasureLedgerError, match="expected redis://"):
        ErasureLedger.read("http://example.org/ledger")
    with pytest.raises(ValueError, match=r"data\.erasure_legder"):  # a typo is named
        _prepare(data_root, tmp_path / "art", "+data.erasure_legder=x")


@pytest.mark.redis
def test_a_redis_ledger(redis_url: str, data_root: Path, tmp_path: Path) -> None:
    from recsys.events.redis_store import RedisStore

    store = RedisStore(redis_url, prefix="ledgertest")
    try:
        erase_user(store, str(ERASED), actor="dpo:test")
    finally:
        store.close()
    ledger = ErasureLedger.read(f"{redis_url}?prefix=ledgertest")
    assert len(ledger.tombstones) == 1
    frame = pd.DataFrame({"user_id": [ERASED, 8, ERASED], "item_id": [1, 2, 3]})
    kept, dropped = filter_erased(frame, ledger.tombstones)
    assert dropped == 2 and kept["user_id"].tolist() == [8]
    # A URL with "?" and "=" is quoted in a Hydra override.
    prep = _prepare(
        data_root, tmp_path / "art", f"data.erasure_ledger='{redis_url}?prefix=ledgertest'"
    )
    assert prep.erasure is not None and prep.erasure.rows_dropped == len(ITEMS)


def test_ids_match_as_their_text() -> None:
    from recsys.privacy.audit import subject_pseudonym

    ledger = {subject_pseudonym("7"), subject_pseudonym("u1")}
    floats = pd.DataFrame({"user_id": [7.0, 8.0, float("nan")]})  # a column with gaps
    assert filter_erased(floats, ledger)[1] == 1
    padded = pd.DataFrame({"user_id": [" u1", "u1", "u2"]})
    assert filter_erased(padded, ledger)[0]["user_id"].tolist() == ["u2"]
    assert filter_erased(pd.DataFrame({"user_id": [70, 17]}), ledger)[1] == 0


def test_real_movielens_100k_without_an_erased_user(
    data_dir: Path, ml100k_dir: Path, tmp_path: Path
) -> None:
    url = _ledger(tmp_path, "196")  # MovieLens ids are integers: erased as their text
    cfg = _config([f"dataset.dir={data_dir}", "dataset.offline=true", f"data.erasure_ledger={url}"])
    prep = prepare(cfg, tmp_path / "art")
    assert prep.erasure is not None
    assert (prep.erasure.rows_dropped, prep.erasure.users_dropped) == (39, 1)
    assert prep.erasure.user_rows_dropped == 1
    rows = prep.main.manifest["rows"]
    assert rows["train"] + rows["test"] == 100_000 - 39
    assert all(196 not in ids for ids in _user_ids(prep).values())
