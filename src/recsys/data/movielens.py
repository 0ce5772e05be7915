"""Loaders for the MovieLens datasets in the publisher's (GroupLens) file layouts.

Three layouts are read:

* ML-100K (``u.data``, ``u.user``, ``u.item``, ``u.genre``): :func:`load_ml100k`;
* ML-1M (``ratings.dat``, ``users.dat``, ``movies.dat``, ``::``-separated):
  :func:`load_ml1m`;
* the CSV layout of ML-20M, ML-25M, ML-32M and ml-latest(-small)
  (``ratings.csv``, ``movies.csv``; half-star ratings, no user table):
  :func:`load_movielens_csv`.

Each loader takes a config dataclass (:class:`Ml100kConfig`, :class:`Ml1mConfig`,
:class:`MovieLensCsvConfig`; the ``read:`` block of ``configs/dataset/*.yaml``)
with its file names, delimiters, encoding, column maps (CSV layout), rating
scale and an optional cap on genres per item; the defaults are the publisher's
layout.

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

Malformed rows (wrong field count or separator, missing ids such as ``NA`` or
an empty field, non-numeric ids, ratings off the configured scale, bad
timestamps, undecodable bytes) are rejected and counted in the
:class:`~recsys.data.frame.LoadReport` of their file with examples; with
``strict=True`` the first file with rejections raises
:class:`~recsys.data.frame.MalformedDataError` instead.

Example:
    >>> data = load_movielens("ml-100k")  # doctest: +SKIP
    >>> len(data.interactions), data.n_users, data.n_items  # doctest: +SKIP
    (100000, 943, 1682)
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
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
    DataConfigError,
    DatasetNotFoundError,
    InteractionData,
    LoadReport,
    MalformedDataError,
)
from recsys.data.missing import MISSING_TOKENS, missing_text
from recsys.data.ratings import HALF_STARS, STARS, RatingScale

# Unix seconds at 2100-01-01: later values are treated as corrupt timestamps.
MAX_UNIX_SECONDS = 4_102_444_800
NO_GENRES = "(no genres listed)"
USER_COLUMNS = (USER, "age", "gender", "occupation", "zip_code")
ITEM_COLUMNS = (ITEM, "title", "release_date", "year", "genres")
MOVIELENS_DATASETS = ("ml-100k", "ml-1m", "ml-latest-small", "ml-20m", "ml-25m", "ml-32m")
RATINGS_CSV_COLUMNS: dict[str, str] = {
    "userId": USER,
    "movieId": ITEM,
    "rating": RATING,
    "timestamp": TIMESTAMP,
}
MOVIES_CSV_COLUMNS: dict[str, str] = {"movieId": ITEM, "title": "title", "genres": "genres"}


@dataclass(frozen=True)
class Ml100kConfig:
    """Files and formats of the ML-100K layout (``loader: ml100k``; keys of ``read:``).

    Attributes:
        ratings: the rating file (``u.data``, or a fold such as ``ua.base``).
        users: the user table.
        items: the item table.
        genres: the genre names (``name|index``).
        delimiter: separator of the rating file.
        side_delimiter: separator of the user, item and genre files.
        encoding: ``latin-1`` (the publisher's) or ``utf-8``.
        rating_scale: valid ratings; others are rejected and counted.
        max_genres: keep at most this many genres per item (truncation
            reported); None keeps all.
        missing_values: spellings of a missing value that are never an id.

    Example:
        >>> Ml100kConfig().required_files()
        ('u.data', 'u.user', 'u.item', 'u.genre')
    """

    ratings: str = "u.data"
    users: str = "u.user"
    items: str = "u.item"
    genres: str = "u.genre"
    delimiter: str = "\t"
    side_delimiter: str = "|"
    encoding: Encoding = "latin-1"
    rating_scale: RatingScale = STARS
    max_genres: int | None = None
    missing_values: tuple[str, ...] = MISSING_TOKENS

    def required_files(self) -> tuple[str, ...]:
        """Files the dataset folder must hold."""
        return (self.ratings, self.users, self.items, self.genres)


@dataclass(frozen=True)
class Ml1mConfig:
    """Files and formats of the ML-1M layout (``loader: ml1m``; keys of ``read:``).

    Attributes:
        ratings: ``UserID::MovieID::Rating::Timestamp`` file.
        users: ``UserID::Gender::Age::Occupation::Zip-code`` file.
        items: ``MovieID::Title::Genres`` file.
        delimiter: field separator of all three files.
        encoding: ``latin-1`` (the publisher's) or ``utf-8``.
        rating_scale: valid ratings; others are rejected and counted.
        max_genres: keep at most this many genres per item (truncation reported).
        missing_values: spellings of a missing value that are never an id.

    Example:
        >>> Ml1mConfig().required_files()
        ('ratings.dat', 'users.dat', 'movies.dat')
    """

    ratings: str = "ratings.dat"
    users: str = "users.dat"
    items: str = "movies.dat"
    delimiter: str = "::"
    encoding: Encoding = "latin-1"
    rating_scale: RatingScale = STARS
    max_genres: int | None = None
    missing_values: tuple[str, ...] = MISSING_TOKENS

    def required_files(self) -> tuple[str, ...]:
        """Files the dataset folder must hold."""
        return (self.ratings, self.users, self.items)


@dataclass(frozen=True)
class MovieLensCsvConfig:
    """The ``ratings.csv`` + ``movies.csv`` layout of ML-20M, ML-25M, ML-32M and
    ml-latest(-small) (``loader: movielens_csv``; keys of ``read:``).

    Attributes:
        ratings: the rating file (header ``userId,movieId,rating,timestamp``,
            or no header with the columns in that order).
        items: the movie file (``movieId,title,genres``), or None to read
            ratings only.
        delimiter: field separator (double quotes are honoured).
        encoding: ``utf-8`` (the publisher's) or ``latin-1``.
        columns: header name in the rating file -> canonical name
            (``user_id``, ``item_id``, ``rating``, ``timestamp``); other columns
            are ignored.
        item_columns: header name in the movie file -> ``item_id``, ``title``,
            ``genres``.
        genre_separator: separator inside the genres field.
        rating_scale: valid ratings (half stars 0.5..5 by default); others are
            rejected and counted.
        max_genres: keep at most this many genres per item (truncation reported).
        missing_values: spellings of a missing value that are never an id.

    Example:
        >>> MovieLensCsvConfig().required_files()
        ('ratings.csv', 'movies.csv')
    """

    ratings: str = "ratings.csv"
    items: str | None = "movies.csv"
    delimiter: str = ","
    encoding: Encoding = "utf-8"
    columns: dict[str, str] = field(default_factory=lambda: dict(RATINGS_CSV_COLUMNS))
    item_columns: dict[str, str] = field(default_factory=lambda: dict(MOVIES_CSV_COLUMNS))
    genre_separator: str = "|"
    rating_scale: RatingScale = HALF_STARS
    max_genres: int | None = None
    missing_values: tuple[str, ...] = MISSING_TOKENS

    def required_files(self) -> tuple[str, ...]:
        """Files the dataset folder must hold."""
        return (self.ratings,) if self.items is None else (self.ratings, self.items)


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
        "config `dataset.download=true`."
    )


def _id_checks(
    name: str, column: pa.Array, tokens: tuple[str, ...]
) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """``(ids, checks)``: a missing id (``NA``, empty, ...) is reported as missing,
    anything else that is not an integer as non-numeric."""
    values, numeric = parse_int(column)
    present = ~missing_text(column, tokens)
    return values, [(f"missing {name}", present), (f"non-numeric {name}", numeric)]


def _header_positions(
    path: Path,
    header: list[str],
    mapping: dict[str, str],
    needed: tuple[str, ...],
    key: str,
) -> list[int]:
    """Field positions of the ``needed`` canonical columns in a header row."""
    names = [mapping.get(h, h) for h in header]
    absent = [c for c in needed if c not in names]
    if absent:
        expected = ", ".join(k for k, v in mapping.items() if v in needed)
        raise MalformedDataError(
            f"{path}: unexpected header {header}; expected the columns {expected}. Map other "
            f"names with {key}, e.g. {{{header[0]}: {absent[0]}}}"
        )
    return [names.index(c) for c in needed]


def _parse_ratings(
    path: Path,
    sep: str,
    scale: RatingScale,
    encoding: Encoding,
    *,
    strict: bool,
    tokens: tuple[str, ...] = MISSING_TOKENS,
    columns: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    """Reads a ``user, item, rating, unix seconds`` file into the interaction columns.

    With ``columns`` (header name -> canonical name) a header row is expected
    when the first field is not a number, and the four columns are found by name.
    """
    report = LoadReport(source=str(path))
    skip = 0
    n_fields = 4
    positions = [0, 1, 2, 3]
    if columns is not None:
        first = peek_first_line(path, encoding)
        header = [f.strip() for f in first.split(sep)]
        if header[0] and not header[0].lstrip("+-").isdigit():
            positions = _header_positions(
                path, header, columns, (USER, ITEM, RATING, TIMESTAMP), "read.columns"
            )
            n_fields = len(header)
            skip = 1
    lines = read_lines(path, report, encoding=encoding, skip_lines=skip)
    table = split_fields(lines, sep, n_fields, report)
    users, user_checks = _id_checks(USER, table.columns[positions[0]], tokens)
    items, item_checks = _id_checks(ITEM, table.columns[positions[1]], tokens)
    ratings, ratings_ok = parse_float(table.columns[positions[2]])
    seconds, seconds_ok = parse_int(table.columns[positions[3]])
    keep = apply_checks(
        report,
        table,
        [
            *user_checks,
            *item_checks,
            ("non-numeric rating", ratings_ok),
            ("rating out of range", scale.valid(ratings)),
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


def _cap_genres(genres: list[list[str]], cap: int | None, report: LoadReport) -> list[list[str]]:
    """Keeps every genre, or the first ``cap`` of each list with the truncation reported."""
    if cap is None:
        return genres
    if cap < 1:
        raise DataConfigError(f"read.max_genres must be >= 1 or null, got {cap}")
    longer = sum(len(g) > cap for g in genres)
    if longer:
        report.repair(f"genres truncated to the first {cap} (read.max_genres)", longer)
    return [g[:cap] for g in genres]


def _parse_users(
    path: Path,
    sep: str,
    order: tuple[int, int, int, int, int],
    encoding: Encoding,
    *,
    strict: bool,
    tokens: tuple[str, ...] = MISSING_TOKENS,
    occupation_codes: dict[int, str] | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    """Reads a user table; ``order`` gives the field index of (id, age, gender, occupation, zip)."""
    table, report = _read_table(path, sep, 5, encoding)
    i_id, i_age, i_gender, i_occ, i_zip = order
    user_ids, id_checks = _id_checks(USER, table.columns[i_id], tokens)
    ages, ages_ok = parse_int(table.columns[i_age])
    checks = [*id_checks, ("non-numeric age", ages_ok)]
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


def _read_genre_names(path: Path, sep: str = "|", encoding: Encoding = "latin-1") -> list[str]:
    """u.genre: ``name|index`` per line; returns names ordered by index."""
    table, report = _read_table(path, sep, 2, encoding)
    index, index_ok = parse_int(table.columns[1])
    names = table.columns[0].to_pylist()
    if report.rows_rejected or not index_ok.all() or sorted(index) != list(range(len(index))):
        raise MalformedDataError(
            f"{path}: expected lines 'name|index' with indices 0..n-1; {report.summary()}"
        )
    return [str(names[i]) for i in np.argsort(index)]


def _parse_ml100k_items(
    path: Path,
    genre_names: list[str],
    *,
    strict: bool,
    sep: str = "|",
    encoding: Encoding = "latin-1",
    tokens: tuple[str, ...] = MISSING_TOKENS,
    max_genres: int | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    n_genres = len(genre_names)
    table, report = _read_table(path, sep, 5 + n_genres, encoding)
    item_ids, id_checks = _id_checks(ITEM, table.columns[0], tokens)
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
            *id_checks,
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
    genres = [list(names[row]) for row in flags[keep]]
    items = pd.DataFrame(
        {
            ITEM: item_ids[keep],
            "title": title,
            "release_date": release,
            "year": _year(release, title),
            "genres": _cap_genres(genres, max_genres, report),
        }
    )
    finish(report, len(items), strict)
    return items, report


def _genre_lists(column: pa.Array, sep: str = "|") -> list[list[str]]:
    """Separated genres -> lists of every genre; ``(no genres listed)`` and empty -> []."""
    lists: list[list[str]] = []
    for value in column.to_pylist():
        text = (value or "").strip()
        if text in ("", NO_GENRES):
            lists.append([])
        else:
            lists.append([g.strip() for g in text.split(sep) if g.strip()])
    return lists


def _parse_titled_movies(
    path: Path,
    sep: str,
    encoding: Encoding,
    *,
    quoted: bool,
    header: bool,
    strict: bool,
    tokens: tuple[str, ...] = MISSING_TOKENS,
    columns: dict[str, str] | None = None,
    genre_separator: str = "|",
    max_genres: int | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    """movies.dat / movies.csv: ``id, title, genre|genre`` (by name when ``columns``)."""
    n_fields, positions = 3, [0, 1, 2]
    if header and columns is not None:
        first = peek_first_line(path, encoding)
        names = (
            [f.strip() for f in next(csv.reader([first], delimiter=sep))]
            if quoted
            else [f.strip() for f in first.split(sep)]
        )
        positions = _header_positions(
            path, names, columns, (ITEM, "title", "genres"), "read.item_columns"
        )
        n_fields = len(names)
    table, report = _read_table(path, sep, n_fields, encoding, quoted=quoted, skip=int(header))
    item_ids, id_checks = _id_checks(ITEM, table.columns[positions[0]], tokens)
    keep = apply_checks(
        report,
        table,
        [
            *id_checks,
            ("empty title", ~is_empty(table.columns[positions[1]])),
            ("duplicate item_id", _first_occurrence(item_ids)),
        ],
    )
    mask = pa.array(keep)
    title = _str_series(table.columns[positions[1]].filter(mask))
    release = pd.Series(pd.NaT, index=title.index, dtype="datetime64[ns]")
    genres = _genre_lists(table.columns[positions[2]].filter(mask), genre_separator)
    items = pd.DataFrame(
        {
            ITEM: item_ids[keep],
            "title": title,
            "release_date": release,
            "year": _year(release, title),
            "genres": _cap_genres(genres, max_genres, report),
        }
    )
    finish(report, len(items), strict)
    return items, report


def load_ml100k(
    path_or_dir: str | os.PathLike[str],
    strict: bool = False,
    *,
    config: Ml100kConfig | None = None,
    name: str = "ml-100k",
) -> InteractionData:
    """Loads MovieLens 100K in the publisher's layout.

    Args:
        path_or_dir: the ``ml-100k`` folder, or one of its rating files (``u.data``,
            ``ua.base``, ``u1.test``, ...) whose folder also holds ``u.user``,
            ``u.item`` and ``u.genre``.
        strict: raise :class:`MalformedDataError` on the first file with
            malformed rows instead of rejecting and reporting them.
        config: file names, delimiters, encoding, rating scale and genre cap
            (defaults: the publisher's layout).
        name: dataset name to record.

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
    cfg = config or Ml100kConfig()
    folder, ratings_path = _dataset_dir(path_or_dir, cfg.ratings)
    for file in (cfg.users, cfg.items, cfg.genres):
        require_file(folder / file)
    tokens = cfg.missing_values
    ratings, ratings_report = _parse_ratings(
        require_file(ratings_path),
        cfg.delimiter,
        cfg.rating_scale,
        cfg.encoding,
        strict=strict,
        tokens=tokens,
    )
    users, users_report = _parse_users(
        folder / cfg.users,
        cfg.side_delimiter,
        (0, 1, 2, 3, 4),
        cfg.encoding,
        strict=strict,
        tokens=tokens,
    )
    genre_names = _read_genre_names(folder / cfg.genres, cfg.side_delimiter, cfg.encoding)
    items, items_report = _parse_ml100k_items(
        folder / cfg.items,
        genre_names,
        strict=strict,
        sep=cfg.side_delimiter,
        encoding=cfg.encoding,
        tokens=tokens,
        max_genres=cfg.max_genres,
    )
    return InteractionData(
        name=name,
        interactions=ratings,
        users=users,
        items=items,
        reports=[ratings_report, users_report, items_report],
    )


def load_ml1m(
    path_or_dir: str | os.PathLike[str],
    strict: bool = False,
    *,
    config: Ml1mConfig | None = None,
    name: str = "ml-1m",
) -> InteractionData:
    """Loads MovieLens 1M (``ratings.dat``, ``users.dat``, ``movies.dat``; ``::``, latin-1).

    Ages are the publisher's age-group codes (1, 18, 25, 35, 45, 50, 56);
    occupation codes are replaced by their names from the ML-1M README.

    Args:
        path_or_dir: the ``ml-1m`` folder, or its ``ratings.dat``.
        strict: raise instead of rejecting malformed rows.
        config: file names, delimiter, encoding, rating scale and genre cap.
        name: dataset name to record.

    Returns:
        Same shape as :func:`load_ml100k` (``release_date`` is NaT; ``year``
        comes from the title).

    Raises:
        DatasetNotFoundError: a file is missing.
        MalformedDataError: ``strict`` and a file has malformed rows.

    Example:
        >>> load_ml1m("/data/ml-1m").users.columns.tolist()  # doctest: +SKIP
        ['user_id', 'age', 'gender', 'occupation', 'zip_code']
    """
    cfg = config or Ml1mConfig()
    folder, ratings_path = _dataset_dir(path_or_dir, cfg.ratings)
    for file in (cfg.users, cfg.items):
        require_file(folder / file)
    tokens = cfg.missing_values
    ratings, ratings_report = _parse_ratings(
        require_file(ratings_path),
        cfg.delimiter,
        cfg.rating_scale,
        cfg.encoding,
        strict=strict,
        tokens=tokens,
    )
    # users.dat: UserID::Gender::Age::Occupation::Zip-code
    users, users_report = _parse_users(
        folder / cfg.users,
        cfg.delimiter,
        (0, 2, 1, 3, 4),
        cfg.encoding,
        strict=strict,
        tokens=tokens,
        occupation_codes=ML1M_OCCUPATIONS,
    )
    items, items_report = _parse_titled_movies(
        folder / cfg.items,
        cfg.delimiter,
        cfg.encoding,
        quoted=False,
        header=False,
        strict=strict,
        tokens=tokens,
        max_genres=cfg.max_genres,
    )
    return InteractionData(
        name=name,
        interactions=ratings,
        users=users,
        items=items,
        reports=[ratings_report, users_report, items_report],
    )


def load_movielens_csv(
    path_or_dir: str | os.PathLike[str],
    strict: bool = False,
    name: str | None = None,
    *,
    config: MovieLensCsvConfig | None = None,
) -> InteractionData:
    """Loads the CSV layout of ML-20M / ML-25M / ML-32M / ml-latest(-small).

    ``ratings.csv`` (``userId,movieId,rating,timestamp``; half-star ratings
    0.5-5.0, all kept) and ``movies.csv`` (``movieId,title,genres``; titles with
    commas are double-quoted; genres pipe-separated, every genre kept,
    ``(no genres listed)`` -> ``[]``), UTF-8, each with a header row. The layout
    has no user table: ``users`` is None, and the feature schema must not ask
    for demographics (``configs/schema/movielens_csv.yaml``).

    Args:
        path_or_dir: the dataset folder, or its ``ratings.csv``.
        strict: raise instead of rejecting malformed rows.
        name: dataset name to record (defaults to the folder name).
        config: file names, delimiter, column maps, rating scale and genre cap.

    Returns:
        Interactions and items (``users`` is None: the layout has no user table).

    Raises:
        DatasetNotFoundError: a file is missing.
        MalformedDataError: ``strict`` and a file has malformed rows, or a header
            row lacks a needed column (the message names ``read.columns``).

    Example:
        >>> data = load_movielens_csv("/data/ml-25m")  # doctest: +SKIP
        >>> sorted(data.interactions["rating"].unique())[:2]  # doctest: +SKIP
        [0.5, 1.0]
    """
    cfg = config or MovieLensCsvConfig()
    folder, ratings_path = _dataset_dir(path_or_dir, cfg.ratings)
    movies_path = require_file(folder / cfg.items) if cfg.items is not None else None
    quoted = len(cfg.delimiter) == 1
    ratings, ratings_report = _parse_ratings(
        require_file(ratings_path),
        cfg.delimiter,
        cfg.rating_scale,
        cfg.encoding,
        strict=strict,
        tokens=cfg.missing_values,
        columns=cfg.columns,
    )
    reports = [ratings_report]
    items = None
    if movies_path is not None:
        first = peek_first_line(movies_path, cfg.encoding)
        first_field = first.split(cfg.delimiter)[0].strip().strip('"')
        has_header = bool(first_field) and not first_field.lstrip("+-").isdigit()
        items, items_report = _parse_titled_movies(
            movies_path,
            cfg.delimiter,
            cfg.encoding,
            quoted=quoted,
            header=has_header,
            strict=strict,
            tokens=cfg.missing_values,
            columns=cfg.item_columns,
            genre_separator=cfg.genre_separator,
            max_genres=cfg.max_genres,
        )
        reports.append(items_report)
    return InteractionData(
        name=name or folder.name,
        interactions=ratings,
        users=None,
        items=items,
        reports=reports,
    )


def load_movielens(
    name: str = "ml-100k",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    strict: bool = False,
) -> InteractionData:
    """Finds (or downloads) a registered MovieLens dataset and loads it.

    Args:
        name: ``ml-100k``, ``ml-1m``, ``ml-latest-small``, ``ml-20m``, ``ml-25m``
            or ``ml-32m``.
        data_dir: dataset root (config ``dataset.dir``); see
            :func:`recsys.data.download.resolve_dataset`.
        download: fetch from GroupLens when missing (config ``dataset.download``).
        strict: raise instead of rejecting malformed rows.

    Returns:
        The loaded dataset.

    Raises:
        ValueError: ``name`` is not a MovieLens dataset.

    Example:
        >>> load_movielens("ml-100k").n_users  # doctest: +SKIP
        943
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
