"""Fixtures of the data-layer tests: real dataset folders and publisher-format writers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from recsys.data.frame import InteractionData
from recsys.data.movielens import load_ml100k

# u.genre of MovieLens 100K, in the publisher's order.
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


@pytest.fixture(scope="session")
def criteo_dir(data_dir: Path) -> Path:
    d = data_dir / "criteo-sample"
    if not (d / "pytorch-fm_train.txt").is_file():
        pytest.skip(f"criteo-sample not found under {data_dir}")
    return d


@pytest.fixture(scope="session")
def yoochoose_dir(data_dir: Path) -> Path:
    d = data_dir / "yoochoose-rsc15-100k"
    if not (d / "yoochoose-clicks-100k_train_full.txt").is_file():
        pytest.skip(f"yoochoose-rsc15-100k not found under {data_dir}")
    return d


@pytest.fixture(scope="session")
def ml100k(ml100k_dir: Path) -> InteractionData:
    """The real MovieLens 100K, loaded once per session (tests must not modify it)."""
    return load_ml100k(ml100k_dir)


def _flags(genres: Sequence[str]) -> str:
    return "|".join("1" if g in genres else "0" for g in ML100K_GENRES)


WriteMl100k = Callable[..., Path]


@pytest.fixture
def write_ml100k(tmp_path: Path) -> WriteMl100k:
    """Returns ``write(folder_name="ml-100k", u_data=None, u_item=None) -> folder``.

    Writes a tiny dataset in exactly the publisher's formats: ``u.data`` (tab),
    ``u.user`` / ``u.item`` / ``u.genre`` (``|``; ``u.item`` in latin-1). ``u_data``
    and ``u_item`` (bytes) replace the default content of those files.
    """

    def write(
        folder_name: str = "ml-100k", u_data: bytes | None = None, u_item: bytes | None = None
    ) -> Path:
        folder = tmp_path / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        if u_data is None:
            u_data = b"1\t10\t5\t881250949\n2\t10\t3\t891717742\n1\t20\t1\t878887116\n"
        (folder / "u.data").write_bytes(u_data)
        (folder / "u.user").write_text(
            "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n"
        )
        if u_item is None:
            url = "http://us.imdb.com/M/title-exact?x"
            u_item = (
                f"10|Toy Story (1995)|01-Jan-1995||{url}|"
                + _flags(["Animation", "Children's", "Comedy"])
                + "\n"
                + f"20|Misérables, Les (1995)|01-Jan-1995||{url}|"
                + _flags(["Drama", "Musical"])
                + "\n"
                + "30|unknown||||"
                + _flags(["unknown"])
                + "\n"
            ).encode("latin-1")
        (folder / "u.item").write_bytes(u_item)
        (folder / "u.genre").write_text(
            "".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)) + "\n"
        )
        return folder

    return write


@pytest.fixture
def item_flags() -> Callable[[Sequence[str]], str]:
    """``flags(["Drama"])`` -> the 19 ``0|1`` genre flags of a u.item line."""
    return _flags
