"""Loaders for the MovieLens datasets in the publisher's (GroupLens) file layouts.

Three layouts are read:

* ML-100K (``u.data``, ``u.user``, ``u.item``, ``u.genre``): :func:`load_ml100k`;
* ML-1M (``ratings.dat``, ``users.dat``, ``movies.dat``, ``::``-separated):
  :func:`load_ml1m`;
* the CSV layout of ml-latest-small, ml-20m and ml-25m (``ratings.csv``,
  ``movies.csv``): :func:`load_movielens_csv`.

All return an :class:`~recsys.data.frame.InteractionData` of the same shape:

``interactions`` (file order kept: published splits depend on it)
    ``user_id`` int64, ``item_id`` int64, ``rating`` float32,
    ``timestamp`` datetime64[ns, UTC].
``users`` (None for the CSV layout)
    ``user_id`` int64, ``age`` int64 (ML-1M: the age-group code, e.g. 25 for
    25-34), ``gender`` str, ``occupation`` str, ``zip_code`` str.
``items``
    ``item_id`` int64, ``title`` str, ``release_date`` datetime64[ns] (NaT when
    absent; only ML-100K has it), ``year`` Int64 (the film's year: the last
    ``(1995)`` in the title, else the release date's year, else <NA>), ``genres`` object holding a
    ``list[str]`` per row (publisher's names, e.g. ``["Animation", "Children's"]``;
    ML-100K's ``unknown`` flag is kept as genre ``"unknown"``).

Malformed rows (wrong field count or separator, non-numeric ids, ratings out of
range, bad timestamps, undecodable bytes) are rejected and counted in the
:class:`~recsys.data.frame.LoadReport` of their file with examples; with
``strict=True`` the first file with rejections raises
:class:`~recsys.data.frame.MalformedDataError` instead.

Example:
    >>> data = load_movielens("ml-100k")  # doctest: +SKIP
    >>> len(data.interactions), data.n_users, data.n_items  # doctest: +SKIP
    (100000, 943, 1682)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data._delimited import (
    Encoding,
    Lines,
    Table,
    apply_checks,
    finish,
    is_empty,
    parse_float,
    parse_int,
    peek_first_line,
    read_lines,
    require_file,
    split_fields,
    utc_from_seconds,
)
from recsys.data.download import resolve_dataset
from recsys.data.frame import (
    ITEM,
    RATING,
    TIMESTAMP,
    USER,
    DatasetNotFoundError,
    InteractionData,
    LoadReport,
    MalformedDataError,
)

# Unix seconds at 2100-01-01: later values are treated as corrupt timestamps.
MAX_UNIX_SECONDS = 4_102_444_800
ML_STAR_RATINGS = np.arange(1.0, 6.0)
ML_HALF_STAR_RATINGS = np.arange(0.5, 5.5, 0.5)
NO_GENRES = "(no genres listed)"
USER_COLUMNS = (USER, "age", "gender", "occupation", "zip_code")
ITEM_COLUMNS = (ITEM, "title", "release_date", "year", "genres")
MOVIELENS_DATASETS = ("ml-100k", "ml-1m", "ml-latest-small", "ml-25m")

# ML-1M users.dat stores occupations as codes; names from the ML-1M README.
ML1M_OCCUPATIONS: dict[int, str] = {
    0: "other",
    1: "academic/educator",
    2: "artist",
    3: "clerical/admin",
    4: "college/grad student",
    5: "customer service",
    6: "doctor/health care",
    7: "executive/managerial",
    8: "farmer",
    9: "homemaker",
    10: "K-12 student",
    11: "lawyer",
    12: "programmer",
    13: "retired",
    14: "sales/marketing",
    15: "scientist",
    16: "self-employed",
    17: "technician/engineer",
    18: "tradesman/craftsman",
    19: "unemployed",
    20: "writer",
}


def _str_series(column: pa.Array) -> pd.Series:
    return pd.Series(column.to_numpy(zero_copy_only=False), dtype="str")


def _dataset_dir(path_or_dir: str | os.PathLike[str], first_file: str) -> tuple[Path, Path]:
    """Splits a dataset folder or a ratings file path into (folder, ratings file)."""
    path = Path(path_or_dir)
    if path.is_dir():
        return path, path / first_file
    if path.is_file():
        return path.parent, path
    raise DatasetNotFoundError(
        f"MovieLens path not found: {path}. Pass the dataset folder (holding {first_file}), "
        "set RECSYS_DATA_DIR to its parent, or download it with `recsys download <name>` / "
        "config `data.download=true`."
    )


def _parse_ratings(
    path: Path,
    sep: str,
    allowed: np.ndarray,
    encoding: Encoding,
    *,
    strict: bool,
    header: tuple[str, ...] | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    """Reads a ``user, item, rating, unix seconds`` file into the interaction columns."""
    report = LoadReport(source=str(path))
    skip = 0
    if header is not None:
        first = peek_first_line(path, encoding)
        first_field = first.split(sep)[0].strip()
        if first_field and not first_field.lstrip("+-").isdigit():
            if tuple(f.strip() for f in first.split(sep)) != header:
                raise MalformedDataError(
                    f"{path}: unexpected header {first!r}; expected {sep.join(header)!r}"
                )
            skip = 1
    lines = read_lines(path, report, encoding=encoding, skip_lines=skip)
    table = split_fields(lines, sep, 4, report)
    users, users_ok = parse_int(table.columns[0])
    items, items_ok = parse_int(table.columns[1])
    ratings, ratings_ok = parse_float(table.columns[2])
    seconds, seconds_ok = parse_int(table.columns[3])
    keep = apply_checks(
        report,
        table,
        [
            ("non-numeric user_id", users_ok),
            ("non-numeric item_id", items_ok),
            ("non-numeric rating", ratings_ok),
            ("rating out of range", np.isin(ratings, allowed)),
            ("bad timestamp", seconds_ok & (seconds >= 0) & (seconds < MAX_UNIX_SECONDS)),
        ],
    )
    frame = pd.DataFrame(
        {
            USER: users[keep],
            ITEM: items[keep],
            RATING: ratings[keep].astype(np.float32),
        }
    )
    frame[TIMESTAMP] = utc_from_seconds(seconds[keep])
    finish(report, len(frame), strict)
    return frame, report


def _read_table(
    path: Path, sep: str, n_fields: int, encoding: Encoding, *, quoted: bool = False, skip: int = 0
) -> tuple[Table, LoadReport]:
    report = LoadReport(source=str(path))
    lines: Lines = read_lines(path, report, encoding=encoding, skip_lines=skip)
    return split_fields(lines, sep, n_fields, report, quoted=quoted), report


def _first_occurrence(ids: np.ndarray) -> np.ndarray:
    """Mask that is False for every repeat of an id already seen earlier in the file."""
    return ~pd.Series(ids).duplicated(keep="first").to_numpy()


def _year(release_date: pd.Series, title: pd.Series) -> pd.Series:
    """The film's year: the last ``(1995)`` in the title, else the release date's year.

    The title year comes first because ML-100K's ``release date`` is often a later
    (video or re-)release, e.g. "Return of the Jedi (1983)" has 14-Mar-1997, and
    ML-1M and the CSV layouts only have the title year.
    """
    from_title = pd.to_numeric(
        title.str.extract(r"\((\d{4})\)(?!.*\(\d{4}\))", expand=False), errors="coerce"
    ).astype("Int64")
    from_date = release_date.dt.year.astype("Int64")
    return from_title.fillna(from_date)


def _parse_users(
    path: Path,
    sep: str,
    order: tuple[int, int, int, int, int],
    encoding: Encoding,
    *,
    strict: bool,
    occupation_codes: dict[int, str] | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    """Reads a user table; ``order`` gives the field index of (id, age, gender, occupation, zip)."""
    table, report = _read_table(path, sep, 5, encoding)
    i_id, i_age, i_gender, i_occ, i_zip = order
    user_ids, ids_ok = parse_int(table.columns[i_id])
    ages, ages_ok = parse_int(table.columns[i_age])
    checks = [("non-numeric user_id", ids_ok), ("non-numeric age", ages_ok)]
    occupation = _str_series(pc.utf8_trim_whitespace(table.columns[i_occ]))
    if occupation_codes is not None:
        codes, codes_ok = parse_int(table.columns[i_occ])
        checks.append(("non-numeric occupation code", codes_ok))
        # An unlisted code is kept as its number rather than dropped.
        occupation = pd.Series([occupation_codes.get(int(c), str(c)) for c in codes], dtype="str")
    checks.append(("duplicate user_id", _first_occurrence(user_ids)))
    keep = apply_checks(report, table, checks)
    users = pd.DataFrame(
        {
            USER: user_ids[keep],
            "age": ages[keep],
            "gender": _str_series(pc.utf8_trim_whitespace(table.columns[i_gender]))[keep],
            "occupation": occupation[keep],
            "zip_code": _str_series(pc.utf8_trim_whitespace(table.columns[i_zip]))[keep],
        }
    ).reset_index(drop=True)
    finish(report, len(users), strict)
    return users, report


def _read_genre_names(path: Path) -> list[str]:
    """u.genre: ``name|index`` per line; returns names ordered by index."""
    table, report = _read_table(path, "|", 2, "latin-1")
    index, index_ok = parse_int(table.columns[1])
    names = table.columns[0].to_pylist()
    if report.rows_rejected or not index_ok.all() or sorted(index) != list(range(len(index))):
        raise MalformedDataError(
            f"{path}: expected lines 'name|index' with indices 0..n-1; {report.summary()}"
        )
    return [str(names[i]) for i in np.argsort(index)]


def _parse_ml100k_items(
    path: Path, genre_names: list[str], *, strict: bool
) -> tuple[pd.DataFrame, LoadReport]:
    n_genres = len(genre_names)
    table, report = _read_table(path, "|", 5 + n_genres, "latin-1")
    item_ids, ids_ok = parse_int(table.columns[0])
    flags = np.zeros((len(table), n_genres), dtype=bool)
    flags_ok = np.ones(len(table), dtype=bool)
    for j in range(n_genres):
        text = pc.utf8_trim_whitespace(table.columns[5 + j])
        flags[:, j] = np.asarray(pc.equal(text, "1"), dtype=bool)
        flags_ok &= flags[:, j] | np.asarray(pc.equal(text, "0"), dtype=bool)
    keep = apply_checks(
        report,
        table,
        [
            ("non-numeric item_id", ids_ok),
            ("bad genre flag (not 0/1)", flags_ok),
            ("duplicate item_id", _first_occurrence(item_ids)),
        ],
    )
    dates_text = _str_series(pc.utf8_trim_whitespace(table.columns[2]))[keep].reset_index(drop=True)
    release = pd.to_datetime(dates_text, format="%d-%b-%Y", errors="coerce").astype(
        "datetime64[ns]"
    )
    unparsed = int((release.isna() & (dates_text != "")).sum())
    if unparsed:
        report.repair("unparseable release_date set to NaT", unparsed)
    title = _str_series(table.columns[1])[keep].reset_index(drop=True)
    names = np.asarray(genre_names, dtype=object)
    items = pd.DataFrame(
        {
            ITEM: item_ids[keep],
            "title": title,
            "release_date": release,
            "year": _year(release, title),
            "genres": [list(names[row]) for row in flags[keep]],
        }
    )
    finish(report, len(items), strict)
    return items, report


def _genre_lists(column: pa.Array) -> list[list[str]]:
    """Pipe-separated genres -> lists; ``(no genres listed)`` and empty -> []."""
    lists: list[list[str]] = []
    for value in column.to_pylist():
        text = (value or "").strip()
        lists.append([] if text in ("", NO_GENRES) else [g.strip() for g in text.split("|")])
    return lists


def _parse_titled_movies(
    path: Path, sep: str, encoding: Encoding, *, quoted: bool, header: bool, strict: bool
) -> tuple[pd.DataFrame, LoadReport]:
    """movies.dat / movies.csv: ``id, title, genre|genre``."""
    table, report = _read_table(path, sep, 3, encoding, quoted=quoted, skip=int(header))
    item_ids, ids_ok = parse_int(table.columns[0])
    keep = apply_checks(
        report,
        table,
        [
            ("non-numeric item_id", ids_ok),
            ("empty title", ~is_empty(table.columns[1])),
            ("duplicate item_id", _first_occurrence(item_ids)),
        ],
    )
    mask = pa.array(keep)
    title = _str_series(table.columns[1].filter(mask))
    release = pd.Series(pd.NaT, index=title.index, dtype="datetime64[ns]")
    items = pd.DataFrame(
        {
            ITEM: item_ids[keep],
            "title": title,
            "release_date": release,
            "year": _year(release, title),
            "genres": _genre_lists(table.columns[2].filter(mask)),
        }
    )
    finish(report, len(items), strict)
    return items, report


def load_ml100k(path_or_dir: str | os.PathLike[str], strict: bool = False) -> InteractionData:
    """Loads MovieLens 100K in the publisher's layout.

    Args:
        path_or_dir: the ``ml-100k`` folder, or one of its rating files (``u.data``,
            ``ua.base``, ``u1.test``, ...) whose folder also holds ``u.user``,
            ``u.item`` and ``u.genre``.
        strict: raise :class:`MalformedDataError` on the first file with
            malformed rows instead of rejecting and reporting them.

    Returns:
        Interactions in file order plus ``users`` and ``items`` tables (see the
        module docstring for columns); ``reports`` holds one LoadReport per file
        (ratings, users, items).

    Raises:
        DatasetNotFoundError: a file is missing (the message names its path).
        MalformedDataError: ``strict`` and a file has malformed rows, or
            ``u.genre`` is unusable.

    Example:
        >>> data = load_ml100k("/data/ml-100k")  # doctest: +SKIP
        >>> data.items.loc[0, "genres"]  # doctest: +SKIP
        ['Animation', "Children's", 'Comedy']
    """
    folder, ratings_path = _dataset_dir(path_or_dir, "u.data")
    for name in ("u.user", "u.item", "u.genre"):
        require_file(folder / name)
    ratings, ratings_report = _parse_ratings(
        require_file(ratings_path), "\t", ML_STAR_RATINGS, "latin-1", strict=strict
    )
    users, users_report = _parse_users(
        folder / "u.user", "|", (0, 1, 2, 3, 4), "latin-1", strict=strict
    )
    genre_names = _read_genre_names(folder / "u.genre")
    items, items_report = _parse_ml100k_items(folder / "u.item", genre_names, strict=strict)
    return InteractionData(
        name="ml-100k",
        interactions=ratings,
        users=users,
        items=items,
        reports=[ratings_report, users_report, items_report],
    )


def load_ml1m(path_or_dir: str | os.PathLike[str], strict: bool = False) -> InteractionData:
    """Loads MovieLens 1M (``ratings.dat``, ``users.dat``, ``movies.dat``; ``::``, latin-1).

    Ages are the publisher's age-group codes (1, 18, 25, 35, 45, 50, 56);
    occupation codes are replaced by their names from the ML-1M README.

    Args:
        path_or_dir: the ``ml-1m`` folder, or its ``ratings.dat``.
        strict: raise instead of rejecting malformed rows.

    Returns:
        Same shape as :func:`load_ml100k` (``release_date`` is NaT; ``year``
        comes from the title).

    Raises:
        DatasetNotFoundError: a file is missing.
        MalformedDataError: ``strict`` and a file has malformed rows.
    """
    folder, ratings_path = _dataset_dir(path_or_dir, "ratings.dat")
    for name in ("users.dat", "movies.dat"):
        require_file(folder / name)
    ratings, ratings_report = _parse_ratings(
        require_file(ratings_path), "::", ML_STAR_RATINGS, "latin-1", strict=strict
    )
    # users.dat: UserID::Gender::Age::Occupation::Zip-code
    users, users_report = _parse_users(
        folder / "users.dat",
        "::",
        (0, 2, 1, 3, 4),
        "latin-1",
        strict=strict,
        occupation_codes=ML1M_OCCUPATIONS,
    )
    items, items_report = _parse_titled_movies(
        folder / "movies.dat", "::", "latin-1", quoted=False, header=False, strict=strict
    )
    return InteractionData(
        name="ml-1m",
        interactions=ratings,
        users=users,
        items=items,
        reports=[ratings_report, users_report, items_report],
    )


def load_movielens_csv(
    path_or_dir: str | os.PathLike[str], strict: bool = False, name: str | None = None
) -> InteractionData:
    """Loads the CSV layout of ml-latest-small / ml-20m / ml-25m.

    ``ratings.csv`` (``userId,movieId,rating,timestamp``; half-star ratings
    0.5-5.0) and ``movies.csv`` (``movieId,title,genres``; titles with commas are
    double-quoted; genres pipe-separated, ``(no genres listed)`` -> ``[]``), UTF-8,
    each with a header row.

    Args:
        path_or_dir: the dataset folder, or its ``ratings.csv``.
        strict: raise instead of rejecting malformed rows.
        name: dataset name to record (defaults to the folder name).

    Returns:
        Interactions and items (``users`` is None: the layout has no user table).

    Raises:
        DatasetNotFoundError: a file is missing.
        MalformedDataError: ``strict`` and a file has malformed rows, or a header
            row differs from the publisher's.
    """
    folder, ratings_path = _dataset_dir(path_or_dir, "ratings.csv")
    movies_path = require_file(folder / "movies.csv")
    ratings, ratings_report = _parse_ratings(
        require_file(ratings_path),
        ",",
        ML_HALF_STAR_RATINGS,
        "utf-8",
        strict=strict,
        header=("userId", "movieId", "rating", "timestamp"),
    )
    first = peek_first_line(movies_path)
    has_header = first.replace(" ", "").startswith("movieId,")
    items, items_report = _parse_titled_movies(
        movies_path, ",", "utf-8", quoted=True, header=has_header, strict=strict
    )
    return InteractionData(
        name=name or folder.name,
        interactions=ratings,
        users=None,
        items=items,
        reports=[ratings_report, items_report],
    )


def load_movielens(
    name: str = "ml-100k",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    strict: bool = False,
) -> InteractionData:
    """Finds (or downloads) a registered MovieLens dataset and loads it.

    Args:
        name: ``ml-100k``, ``ml-1m``, ``ml-latest-small`` or ``ml-25m``.
        data_dir: dataset root (config ``data.dir``); see
            :func:`recsys.data.download.resolve_dataset`.
        download: fetch from GroupLens when missing (config ``data.download``).
        strict: raise instead of rejecting malformed rows.

    Returns:
        The loaded dataset.
    """
    if name not in MOVIELENS_DATASETS:
        raise ValueError(
            f"{name!r} is not a MovieLens dataset; expected one of {MOVIELENS_DATASETS}"
        )
    folder = resolve_dataset(name, data_dir, download=download)
    if name == "ml-100k":
        return load_ml100k(folder, strict=strict)
    if name == "ml-1m":
        return load_ml1m(folder, strict=strict)
    return load_movielens_csv(folder, strict=strict, name=name)
