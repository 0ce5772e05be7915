"""Where datasets live on disk, and the registry of datasets the project knows.

A dataset ``<name>`` is a folder ``<root>/<name>/`` holding the publisher's files
unchanged. The root is, in order: an explicit argument (config key ``dataset.dir``),
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
        explicit: a directory given by the caller (config ``dataset.dir``); wins
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
            known (the downloader then refuses the archive unless told
            ``allow_unverified``, and prints the observed hash).
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

# Checksums of the publishers' archives. MD5: the values GroupLens publishes
# beside each archive (``<archive>.md5``). SHA-256: the values TensorFlow
# Datasets pins for the same URLs (tensorflow_datasets/url_checksums/movielens.txt,
# with the archive sizes 4,924,029 / 5,917,549 / 198,702,078 / 261,978,986 bytes);
# GroupLens publishes none. ml-latest-small is rebuilt by GroupLens from time to
# time and no checksum is known for ml-32m: both are None, and downloading them
# needs an explicit ``allow_unverified`` (config ``dataset.allow_unverified``).
# configs/dataset/*.yaml repeat these values (their ``source:`` blocks);
# tests/data/test_registry.py checks that the two agree.
DATASETS: dict[str, DatasetSource] = {
    s.name: s
    for s in (
        DatasetSource(
            name="ml-100k",
            url=_GROUPLENS + "ml-100k.zip",
            archive_folder="ml-100k",
            required_files=("u.data", "u.item", "u.user", "u.genre"),
            sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            md5="0e33842e24a9c977be4e0107933c0723",
            description="MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies (1998)",
        ),
        DatasetSource(
            name="ml-1m",
            url=_GROUPLENS + "ml-1m.zip",
            archive_folder="ml-1m",
            required_files=("ratings.dat", "users.dat", "movies.dat"),
            sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
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
            name="ml-20m",
            url=_GROUPLENS + "ml-20m.zip",
            archive_folder="ml-20m",
            required_files=("ratings.csv", "movies.csv"),
            sha256="96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
            description="MovieLens 20M: 20,000,263 half-star ratings, 138,493 users, 27,278 movies",
        ),
        DatasetSource(
            name="ml-25m",
            url=_GROUPLENS + "ml-25m.zip",
            archive_folder="ml-25m",
            required_files=("ratings.csv", "movies.csv"),
            sha256="8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
            md5="6b51fb2759a8657d3bfcbfc42b592ada",
            description="MovieLens 25M: 25,000,095 half-star ratings, 162,541 users, 62,423 movies",
        ),
        DatasetSource(
            name="ml-32m",
            url=_GROUPLENS + "ml-32m.zip",
            archive_folder="ml-32m",
            required_files=("ratings.csv", "movies.csv"),
            description="MovieLens 32M: 32,000,204 half-star ratings, 200,948 users, 87,585 movies",
        ),
        DatasetSource(
            name="criteo",
            url=None,
            archive_folder="criteo",
            required_files=("train.txt",),
            description=(
                "Criteo Display Advertising Challenge (Kaggle) train.txt: 45,840,617 "
                "impressions; place it by hand (no verifiable publisher download)"
            ),
        ),
        DatasetSource(
            name="criteo-sample",
            url=None,
            archive_folder="criteo-sample",
            required_files=("pytorch-fm_train.txt", "deepctr_criteo_sample.txt"),
            description="first rows of the Criteo Kaggle display-ads log (test fixture)",
        ),
        DatasetSource(
            name="yoochoose",
            url=None,
            archive_folder="yoochoose-data",
            required_files=("yoochoose-clicks.dat",),
            description=(
                "RecSys Challenge 2015 clicks (yoochoose-clicks.dat); place it by hand "
                "(no verifiable publisher download)"
            ),
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
        explicit: caller-given root (config ``dataset.dir``).

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
        explicit: caller-given root (config ``dataset.dir``).

    Returns:
        The folder holding every required file, or None.
    """
    for root in candidate_roots(explicit):
        for folder in (root / source.name, root / source.archive_folder, root):
            if folder.is_dir() and not source.missing_files(folder):
                return folder
    return None
