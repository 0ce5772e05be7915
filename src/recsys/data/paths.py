"""Where datasets live on disk, and the registry of datasets the project knows.

A dataset ``<name>`` is a folder ``<root>/<name>/`` holding the publisher's files
unchanged. The root is, in order: an explicit argument (config key ``data.dir``),
the environment variable ``RECSYS_DATA_DIR``, or the download cache
``~/.cache/recsys/datasets``. :func:`recsys.data.download.resolve_dataset` finds
(or downloads) a dataset folder using :data:`DATASETS`.

Example:
    >>> source = get_source("ml-100k")
    >>> source.required_files[:2]
    ('u.data', 'u.item')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recsys.data.frame import DatasetNotFoundError

ENV_VAR = "RECSYS_DATA_DIR"


def default_cache_dir() -> Path:
    """The folder downloads go to when no data directory is configured."""
    return Path.home() / ".cache" / "recsys" / "datasets"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Returns the configured dataset root, or None if nothing is configured.

    Args:
        explicit: a directory given by the caller (config ``data.dir``); wins
            over everything else.

    Returns:
        ``explicit`` if given, else ``$RECSYS_DATA_DIR`` if set and non-empty,
        else ``~/.cache/recsys/datasets`` if that folder exists, else None.
    """
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    cache = default_cache_dir()
    return cache if cache.is_dir() else None


@dataclass(frozen=True)
class DatasetSource:
    """How to obtain one public dataset and how to recognise a complete copy.

    Attributes:
        name: the dataset's key and the folder name under the data root.
        url: the publisher's archive (a ``.zip``), or None if the project
            cannot download it (the files must be placed by hand).
        archive_folder: folder inside the archive that holds the files.
        required_files: files that must exist in the dataset folder.
        sha256: expected SHA-256 of the archive, or None if no trusted value is
            known (the downloader then prints the observed hash).
        md5: expected MD5 of the archive as published next to it by the
            publisher (``<archive>.md5``), or None.
        description: one line for error messages and ``recsys download --list``.
    """

    name: str
    url: str | None
    archive_folder: str
    required_files: tuple[str, ...]
    sha256: str | None = None
    md5: str | None = None
    description: str = ""

    def missing_files(self, folder: Path) -> list[str]:
        """Names of required files absent from ``folder``."""
        return [f for f in self.required_files if not (folder / f).is_file()]


_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"

# MD5 values are the ones GroupLens publishes beside each archive
# (``<archive>.md5``). ml-latest-small is rebuilt by GroupLens from time to time,
# so it has no fixed checksum. No SHA-256 is published by GroupLens.
DATASETS: dict[str, DatasetSource] = {
    s.name: s
    for s in (
        DatasetSource(
            name="ml-100k",
            url=_GROUPLENS + "ml-100k.zip",
            archive_folder="ml-100k",
            required_files=("u.data", "u.item", "u.user", "u.genre"),
            md5="0e33842e24a9c977be4e0107933c0723",
            description="MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies (1998)",
        ),
        DatasetSource(
            name="ml-1m",
            url=_GROUPLENS + "ml-1m.zip",
            archive_folder="ml-1m",
            required_files=("ratings.dat", "users.dat", "movies.dat"),
            md5="c4d9eecfca2ab87c1945afe126590906",
            description="MovieLens 1M: 1,000,209 ratings, 6,040 users, about 3,900 movies (2003)",
        ),
        DatasetSource(
            name="ml-latest-small",
            url=_GROUPLENS + "ml-latest-small.zip",
            archive_folder="ml-latest-small",
            required_files=("ratings.csv", "movies.csv"),
            description="MovieLens latest small: about 100,000 half-star ratings (updated)",
        ),
        DatasetSource(
            name="ml-25m",
            url=_GROUPLENS + "ml-25m.zip",
            archive_folder="ml-25m",
            required_files=("ratings.csv", "movies.csv"),
            md5="6b51fb2759a8657d3bfcbfc42b592ada",
            description="MovieLens 25M: 25,000,095 half-star ratings, 162,541 users, 62,423 movies",
        ),
        DatasetSource(
            name="criteo-sample",
            url=None,
            archive_folder="criteo-sample",
            required_files=("pytorch-fm_train.txt", "deepctr_criteo_sample.txt"),
            description="first rows of the Criteo Kaggle display-ads log (test fixture)",
        ),
        DatasetSource(
            name="yoochoose-rsc15-100k",
            url=None,
            archive_folder="yoochoose-rsc15-100k",
            required_files=(
                "yoochoose-clicks-100k_train_full.txt",
                "yoochoose-clicks-100k_test.txt",
            ),
            description="RecSys Challenge 2015 click-stream sample (test fixture)",
        ),
    )
}


def get_source(name: str) -> DatasetSource:
    """Looks a dataset up in :data:`DATASETS`.

    Args:
        name: dataset key, e.g. ``"ml-100k"``.

    Returns:
        Its source description.

    Raises:
        DatasetNotFoundError: the name is not registered (message lists the known names).
    """
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise DatasetNotFoundError(f"unknown dataset {name!r}; known datasets: {known}") from None


def candidate_roots(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every root a dataset folder is looked for in, highest priority first.

    Args:
        explicit: caller-given root (config ``data.dir``).

    Returns:
        Existing-or-not roots, without duplicates: explicit, ``$RECSYS_DATA_DIR``,
        the download cache.
    """
    roots: list[Path] = []
    if explicit is not None and str(explicit) != "":
        roots.append(Path(explicit).expanduser())
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        roots.append(Path(env).expanduser())
    roots.append(default_cache_dir())
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def find_dataset(
    source: DatasetSource, explicit: str | os.PathLike[str] | None = None
) -> Path | None:
    """Returns the first complete copy of ``source`` under the candidate roots, or None.

    A root may hold the dataset as ``<root>/<name>/``, as
    ``<root>/<archive_folder>/`` or be the dataset folder itself.

    Args:
        source: the dataset.
        explicit: caller-given root (config ``data.dir``).

    Returns:
        The folder holding every required file, or None.
    """
    for root in candidate_roots(explicit):
        for folder in (root / source.name, root / source.archive_folder, root):
            if folder.is_dir() and not source.missing_files(folder):
                return folder
    return None
