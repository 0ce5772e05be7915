"""Finding a dataset on disk, or downloading it from its publisher with checks.

:func:`resolve_dataset` is the one entry point the loaders and training scripts
use: it returns the folder holding a dataset's files, looking under the roots of
:func:`recsys.data.paths.candidate_roots`. When the files are missing it either
raises one :class:`~recsys.data.frame.DatasetNotFoundError` that names both ways
to fix it, or (``download=True``) streams the publisher's archive with a progress
bar, verifies its checksums, unpacks it and records where it came from in
``<folder>/.download.json``. An archive without a known checksum is refused
unless the caller passes ``allow_unverified`` (config ``dataset.allow_unverified``).

Command line: ``python -m recsys.data.download ml-100k [--data-dir DIR]`` (the
``recsys download`` command calls :func:`main`).

Example:
    >>> folder = resolve_dataset("ml-100k")  # doctest: +SKIP
    >>> sorted(p.name for p in folder.iterdir())[:2]  # doctest: +SKIP
    ['README', 'u.data']
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from tqdm.auto import tqdm

from recsys.data.frame import DataError, DatasetNotFoundError, MalformedDataError
from recsys.data.paths import (
    DATASETS,
    ENV_VAR,
    DatasetSource,
    candidate_roots,
    default_cache_dir,
    find_dataset,
    get_source,
)
from recsys.data.paths import data_dir as configured_data_dir

logger = logging.getLogger(__name__)

PROVENANCE_FILE = ".download.json"


class ChecksumMismatchError(DataError, ValueError):
    """A downloaded file's checksum differs from the expected one (file deleted)."""


class UnverifiedDownloadError(DataError, ValueError):
    """A download was refused: no checksum is known for the archive and the caller
    did not pass ``allow_unverified`` (config ``dataset.allow_unverified``)."""


@dataclass
class DownloadResult:
    """What :func:`download_file` fetched.

    Attributes:
        url: where it came from.
        path: where it was written.
        n_bytes: size in bytes.
        sha256: observed SHA-256 (hex).
        md5: observed MD5 (hex).
        sha256_verified: the SHA-256 matched an expected value.
        md5_verified: the MD5 matched an expected value.
    """

    url: str
    path: Path
    n_bytes: int
    sha256: str
    md5: str
    sha256_verified: bool = False
    md5_verified: bool = False


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_bytes: int = 1 << 20,
) -> DownloadResult:
    """Streams ``url`` to ``dest`` through a temporary file, verifying checksums.

    The bytes go to a hidden ``.part`` file beside ``dest``; only after every
    given checksum matches is it renamed to ``dest``, so a failed or corrupt
    download never leaves a file that looks complete.

    Args:
        url: http(s) or file URL.
        dest: final path of the file.
        sha256: expected SHA-256 (hex), or None to only record the observed one.
        md5: expected MD5 (hex), or None.
        progress: show a tqdm progress bar (bytes, with total when the server
            sends ``Content-Length``).
        timeout: socket timeout in seconds.
        chunk_bytes: read size.

    Returns:
        The observed size and hashes.

    Raises:
        ChecksumMismatchError: a checksum differs; the partial file is deleted.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    md = hashlib.md5(usedforsecurity=False)
    n_bytes = 0
    handle, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=timeout) as response,
        ):
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=f"downloading {dest.name}",
                disable=not progress,
            ) as bar:
                while block := response.read(chunk_bytes):
                    out.write(block)
                    sha.update(block)
                    md.update(block)
                    n_bytes += len(block)
                    bar.update(len(block))
        result = DownloadResult(
            url=url, path=dest, n_bytes=n_bytes, sha256=sha.hexdigest(), md5=md.hexdigest()
        )
        for kind, expected, observed in (
            ("sha256", sha256, result.sha256),
            ("md5", md5, result.md5),
        ):
            if expected is not None and expected.lower() != observed:
                raise ChecksumMismatchError(
                    f"{kind} of {url} is {observed}, expected {expected.lower()}; the "
                    "download is corrupt or the publisher changed the file. The partial "
                    "file was deleted."
                )
        result.sha256_verified = sha256 is not None
        result.md5_verified = md5 is not None
        os.replace(tmp, dest)
        return result
    finally:
        tmp.unlink(missing_ok=True)


def _extract_zip(archive: Path, target: Path) -> None:
    """Unpacks a zip, refusing members that would land outside ``target``."""
    root = target.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            dest = (root / member).resolve()
            if dest != root and root not in dest.parents:
                raise MalformedDataError(f"{archive}: member {member!r} points outside the archive")
        zf.extractall(root)


def unverified_message(source: DatasetSource) -> str:
    """Why a download without a known checksum is refused, and the ways on."""
    return (
        f"dataset {source.name!r}: no checksum is known for {source.url}, so its download "
        "cannot be verified and is refused. To download it anyway, allow it explicitly: "
        "config `dataset.allow_unverified=true`, `recsys download "
        f"{source.name} --allow-unverified`, or allow_unverified=True; the observed SHA-256 "
        "is then printed so you can pin it (`source.sha256` in the dataset config). Or "
        "place the files by hand (see `recsys download --list`)."
    )


def download_dataset(
    source: DatasetSource | str,
    root: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    allow_unverified: bool = False,
) -> Path:
    """Downloads, verifies and unpacks a dataset into ``<root>/<name>/``.

    Args:
        source: a registered name or a :class:`DatasetSource`.
        root: data root; defaults to :func:`recsys.data.paths.data_dir` or the
            download cache ``~/.cache/recsys/datasets``.
        progress: show a progress bar.
        allow_unverified: download even when the source has neither a SHA-256
            nor an MD5 to verify against (the observed hashes are recorded).

    Returns:
        The dataset folder, holding every required file and ``.download.json``.

    Raises:
        DatasetNotFoundError: the source has no download URL.
        UnverifiedDownloadError: no checksum is known and ``allow_unverified``
            is False (nothing is downloaded).
        ChecksumMismatchError: the archive's checksum differs (nothing kept).
        MalformedDataError: the archive lacks required files.

    Example:
        >>> download_dataset("ml-100k", "/tmp/data")  # doctest: +SKIP
        PosixPath('/tmp/data/ml-100k')
    """
    source = get_source(source) if isinstance(source, str) else source
    if source.url is None:
        raise DatasetNotFoundError(_not_found_message(source, None))
    if source.sha256 is None and source.md5 is None and not allow_unverified:
        raise UnverifiedDownloadError(unverified_message(source))
    root_path = Path(root) if root is not None else (configured_data_dir() or default_cache_dir())
    root_path.mkdir(parents=True, exist_ok=True)
    archive_name = Path(urlparse(source.url).path).name or f"{source.name}.zip"
    with tempfile.TemporaryDirectory(dir=root_path, prefix=f".{source.name}-") as work:
        work_dir = Path(work)
        result = download_file(
            source.url,
            work_dir / archive_name,
            sha256=source.sha256,
            md5=source.md5,
            progress=progress,
        )
        if not result.sha256_verified:
            # No trusted SHA-256 is known: show the observed one so it can be
            # compared across machines and pinned in the registry.
            logger.warning(
                "%s: no published SHA-256 to verify against; observed sha256=%s (md5 %s)",
                source.name,
                result.sha256,
                "verified" if result.md5_verified else f"not published, observed {result.md5}",
            )
        unpacked = work_dir / "unpacked"
        _extract_zip(result.path, unpacked)
        folder = unpacked / source.archive_folder
        if not folder.is_dir():
            folder = unpacked
        missing = source.missing_files(folder)
        if missing:
            raise MalformedDataError(
                f"archive {source.url} does not contain {', '.join(missing)} "
                f"in folder {source.archive_folder!r}"
            )
        target = root_path / source.name
        if target.exists():
            # Keep whatever the user already has; add only what is absent.
            for item in folder.iterdir():
                if not (target / item.name).exists():
                    shutil.move(str(item), target / item.name)
        else:
            os.replace(folder, target)
    record = asdict(result) | {
        "path": str(result.path.name),
        "dataset": source.name,
        "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (target / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return target


def _not_found_message(
    source: DatasetSource, explicit: str | os.PathLike[str] | None, offline: bool = False
) -> str:
    files = ", ".join(source.required_files)
    looked = []
    for root in candidate_roots(explicit):
        folder = root / source.name
        if folder.is_dir():
            state = "missing " + ", ".join(source.missing_files(folder))
        else:
            state = "does not exist"
        looked.append(f"  - {folder} ({state})")
    if source.url is None:
        how_to_download = (
            "this dataset cannot be downloaded by the project: copy its files there by hand."
        )
    else:
        how_to_download = (
            f"or download it from the publisher ({source.url}): run `recsys download "
            f"{source.name}` (or `python -m recsys.data.download {source.name}`), pass "
            "download=True, or set config `dataset.download=true`"
            + (
                " and `dataset.offline=false` (downloads are off: dataset.offline or "
                "RECSYS_OFFLINE is set)."
                if offline
                else "."
            )
        )
    return (
        f"dataset {source.name!r} not found: no folder holding {files}. Looked in:\n"
        + "\n".join(looked)
        + f"\nTo fix: set {ENV_VAR} (or pass data_dir / config key `dataset.dir`) to a folder "
        f"containing `{source.name}/` with those files, {how_to_download}"
    )


def resolve_dataset(
    name: str | DatasetSource,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    *,
    progress: bool = True,
    allow_unverified: bool = False,
    offline: bool = False,
) -> Path:
    """Returns the folder holding a dataset's files, downloading it if allowed.

    Args:
        name: registered dataset name (see :data:`recsys.data.paths.DATASETS`)
            or a :class:`DatasetSource`.
        data_dir: root to look in first and to download into (config ``dataset.dir``);
            otherwise ``$RECSYS_DATA_DIR``, then ``~/.cache/recsys/datasets``.
        download: fetch the publisher's archive when no complete copy exists
            (config ``dataset.download``).
        progress: show a progress bar while downloading.
        allow_unverified: download even without a known checksum (config
            ``dataset.allow_unverified``).
        offline: never download, whatever ``download`` says (config
            ``dataset.offline`` / ``RECSYS_OFFLINE``); the error says so.

    Returns:
        A folder containing every file in ``source.required_files``.

    Raises:
        DatasetNotFoundError: no complete copy and ``download`` is False (or the
            dataset cannot be downloaded); the message lists where it looked and
            both ways to fix it.
        UnverifiedDownloadError: a download is needed but no checksum is known
            and ``allow_unverified`` is False.
        ChecksumMismatchError: the downloaded archive failed verification.

    Example:
        >>> resolve_dataset("ml-100k", "/data", download=True)  # doctest: +SKIP
        PosixPath('/data/ml-100k')
    """
    source = get_source(name) if isinstance(name, str) else name
    found = find_dataset(source, data_dir)
    if found is not None:
        return found
    if offline or not download or source.url is None:
        raise DatasetNotFoundError(_not_found_message(source, data_dir, offline and download))
    root = Path(data_dir) if data_dir is not None else None
    return download_dataset(source, root, progress=progress, allow_unverified=allow_unverified)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: download datasets, or list the registry.

    Args:
        argv: arguments without the program name (defaults to ``sys.argv[1:]``).

    Returns:
        Process exit status (0 on success).
    """
    parser = argparse.ArgumentParser(
        prog="recsys download", description="Download public datasets from their publishers."
    )
    parser.add_argument("names", nargs="*", help="dataset names, e.g. ml-100k")
    parser.add_argument("--data-dir", default=None, help=f"root folder (default: ${ENV_VAR})")
    parser.add_argument("--list", action="store_true", help="list known datasets and exit")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="download archives without a known checksum (the observed SHA-256 is printed)",
    )
    args = parser.parse_args(argv)
    if args.list or not args.names:
        for source in DATASETS.values():
            where = find_dataset(source, args.data_dir)
            state = f"present at {where}" if where else "not present"
            print(f"{source.name:24s} {source.description} [{state}]")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    status = 0
    for name in args.names:
        try:
            folder = resolve_dataset(
                name,
                args.data_dir,
                download=True,
                progress=not args.no_progress,
                allow_unverified=args.allow_unverified,
            )
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: {folder}")
    return status


if __name__ == "__main__":
    sys.exit(main())
