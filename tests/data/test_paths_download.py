"""Dataset location and download: precedence of roots, clear errors, verified downloads.

Downloads are tested against a local http.server on 127.0.0.1 serving a zip built
here from synthetic content in the publisher's layout; no real network is used.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import logging
import threading
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from recsys.data.download import (
    PROVENANCE_FILE,
    ChecksumMismatchError,
    UnverifiedDownloadError,
    download_file,
    main,
    resolve_dataset,
)
from recsys.data.frame import DatasetNotFoundError, MalformedDataError
from recsys.data.movielens import load_ml100k
from recsys.data.paths import DATASETS, DatasetSource, data_dir, default_cache_dir, get_source

Server = tuple[str, Path, list[str]]


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No RECSYS_DATA_DIR and a fresh HOME, so only what a test sets is visible."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RECSYS_DATA_DIR", raising=False)
    return home


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[Server]:
    """Serves ``tmp_path/www`` on 127.0.0.1; yields (base URL, folder, requested paths)."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", www, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _zip_folder(folder: Path, arcname_root: str, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"{arcname_root}/{path.name}")
        for name, content in (extra or {}).items():
            zf.writestr(name, content)
    return buffer.getvalue()


def _toy_source(url: str, **checksums: str | None) -> DatasetSource:
    return DatasetSource(
        name="toy-ml",
        url=url,
        archive_folder="ml-100k",
        required_files=("u.data", "u.item", "u.user", "u.genre"),
        **checksums,  # type: ignore[arg-type]
    )


@pytest.fixture
def served_zip(
    http_server: Server, write_ml100k: Callable[..., Path], tmp_path: Path
) -> tuple[str, bytes, list[str]]:
    """A synthetic ml-100k archive on the local server: (url, archive bytes, requests)."""
    base, www, requests = http_server
    folder = write_ml100k("built/ml-100k")
    archive = _zip_folder(folder, "ml-100k")
    (www / "toy.zip").write_bytes(archive)
    return f"{base}/toy.zip", archive, requests


def test_data_dir_precedence(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert data_dir() is None  # nothing configured, no cache folder yet
    default_cache_dir().mkdir(parents=True)
    assert data_dir() == isolated_env / ".cache" / "recsys" / "datasets"
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_dir(str(tmp_path / "s")) == tmp_path / "s"


def test_registry_sources_are_complete() -> None:
    for name in ("ml-100k", "ml-1m", "ml-latest-small", "ml-20m", "ml-25m", "ml-32m"):
        source = DATASETS[name]
        assert source.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert source.archive_folder == name and source.required_files
        for digest, width in ((source.sha256, 64), (source.md5, 32)):
            assert digest is None or (
                len(digest) == width and all(c in "0123456789abcdef" for c in digest)
            )
    with pytest.raises(DatasetNotFoundError, match=r"known datasets: .*ml-100k"):
        get_source("ml-999k")


def test_resolve_finds_real_ml100k_from_env(
    ml100k_dir: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSYS_DATA_DIR", str(ml100k_dir.parent))
    assert resolve_dataset("ml-100k") == ml100k_dir
    # An explicit root wins, and the dataset folder itself is accepted as a root.
    assert resolve_dataset("ml-100k", data_dir=ml100k_dir) == ml100k_dir


def test_missing_dataset_error_names_both_fixes(isolated_env: Path, tmp_path: Path) -> None:
    partial_copy = tmp_path / "root" / "ml-100k"
    partial_copy.mkdir(parents=True)
    (partial_copy / "u.data").write_text("1\t1\t5\t1\n")
    with pytest.raises(DatasetNotFoundError) as info:
        resolve_dataset("ml-100k", data_dir=tmp_path / "root")
    message = str(info.value)
    for expected in (
        "'ml-100k'",
        "RECSYS_DATA_DIR",
        "dataset.dir",
        "dataset.download=true",
        "recsys download ml-100k",
        "u.data, u.item, u.user, u.genre",
        f"{partial_copy} (missing u.item, u.user, u.genre)",
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    ):
        assert expected in message, f"{expected!r} not in: {message}"


def test_local_only_dataset_is_not_downloadable(isolated_env: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="cannot be downloaded"):
        resolve_dataset("criteo-sample", data_dir=tmp_path, download=True)


def test_download_verifies_and_unpacks(
    served_zip: tuple[str, bytes, list[str]],
    isolated_env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, archive, requests = served_zip
    source = _toy_source(
        url,
        sha256=hashlib.sha256(archive).hexdigest(),
        md5=hashlib.md5(archive).hexdigest(),
    )
    root = tmp_path / "root"
    with pytest.raises(DatasetNotFoundError):
        resolve_dataset(source, data_dir=root)
    folder = resolve_dataset(source, data_dir=root, download=True)
    assert folder == root / "toy-ml"
    assert requests == ["/toy.zip"]
    # The progress bar ran over the whole archive.
    err = capsys.readouterr().err
    assert "downloading toy.zip" in err and "100%" in err
    record = json.loads((folder / PROVENANCE_FILE).read_text())
    assert record["sha256"] == hashlib.sha256(archive).hexdigest()
    assert record["sha256_verified"] and record["md5_verified"]
    assert record["n_bytes"] == len(archive)
    # Nothing but the dataset folder is left in the root (no .part, no temp dir).
    assert sorted(p.name for p in root.iterdir()) == ["toy-ml"]
    data = load_ml100k(folder)
    assert len(data.interactions) == 3 and data.n_items == 2
    # A second resolve finds the copy and does not download again.
    assert resolve_dataset(source, data_dir=root, download=True) == folder
    assert requests == ["/toy.zip"]


@pytest.mark.parametrize("kind", ["sha256", "md5"])
def test_checksum_mismatch_deletes_download(
    served_zip: tuple[str, bytes, list[str]], isolated_env: Path, tmp_path: Path, kind: str
) -> None:
    url, _, _ = served_zip
    wrong = "0" * (64 if kind == "sha256" else 32)
    source = _toy_source(url, **{kind: wrong})
    root = tmp_path / "root"
    with pytest.raises(ChecksumMismatchError, match=f"{kind} of .* expected {wrong}"):
        resolve_dataset(source, data_dir=root, download=True, progress=False)
    assert list(root.iterdir()) == []
    with pytest.raises(ChecksumMismatchError):
        if kind == "sha256":
            download_file(url, tmp_path / "direct.zip", sha256=wrong, progress=False)
        else:
            download_file(url, tmp_path / "direct.zip", md5=wrong, progress=False)
    assert not (tmp_path / "direct.zip").exists()
    assert not list(tmp_path.glob(".direct.zip*"))


def test_unknown_checksum_is_printed_and_recorded(
    served_zip: tuple[str, bytes, list[str]],
    isolated_env: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, archive, _ = served_zip
    observed = hashlib.sha256(archive).hexdigest()
    with caplog.at_level(logging.WARNING, logger="recsys.data.download"):
        folder = resolve_dataset(
            _toy_source(url),
            data_dir=tmp_path / "r",
            download=True,
            progress=False,
            allow_unverified=True,
        )
    assert f"observed sha256={observed}" in caplog.text
    record = json.loads((folder / PROVENANCE_FILE).read_text())
    assert record["sha256"] == observed and not record["sha256_verified"]


def test_null_checksum_is_refused_without_allow_unverified(
    served_zip: tuple[str, bytes, list[str]], isolated_env: Path, tmp_path: Path
) -> None:
    url, _, requests = served_zip
    with pytest.raises(UnverifiedDownloadError) as info:
        resolve_dataset(_toy_source(url), data_dir=tmp_path / "r", download=True, progress=False)
    message = str(info.value)
    for expected in (
        "no checksum is known",
        url,
        "dataset.allow_unverified=true",
        "--allow-unverified",
    ):
        assert expected in message, f"{expected!r} not in: {message}"
    assert requests == []  # refused before any byte was fetched
    assert not (tmp_path / "r" / "toy-ml").exists()


def test_offline_never_downloads_and_says_so(
    served_zip: tuple[str, bytes, list[str]], isolated_env: Path, tmp_path: Path
) -> None:
    url, archive, requests = served_zip
    source = _toy_source(url, sha256=hashlib.sha256(archive).hexdigest())
    with pytest.raises(DatasetNotFoundError, match=r"downloads are off: dataset\.offline"):
        resolve_dataset(source, data_dir=tmp_path / "r", download=True, offline=True)
    assert requests == []


def test_download_into_default_cache(
    served_zip: tuple[str, bytes, list[str]], isolated_env: Path
) -> None:
    url, archive, _ = served_zip
    folder = resolve_dataset(
        _toy_source(url, md5=hashlib.md5(archive).hexdigest()), download=True, progress=False
    )
    assert folder == isolated_env / ".cache" / "recsys" / "datasets" / "toy-ml"
    assert data_dir() == folder.parent


def test_archive_without_required_files_is_rejected(
    http_server: Server, isolated_env: Path, tmp_path: Path
) -> None:
    base, www, _ = http_server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t1\n")
    (www / "bad.zip").write_bytes(buffer.getvalue())
    with pytest.raises(MalformedDataError, match=r"does not contain u\.item, u\.user, u\.genre"):
        resolve_dataset(
            _toy_source(f"{base}/bad.zip"),
            data_dir=tmp_path / "r",
            download=True,
            progress=False,
            allow_unverified=True,
        )
    assert not (tmp_path / "r" / "toy-ml").exists()


def test_archive_escaping_its_folder_is_refused(
    http_server: Server, isolated_env: Path, tmp_path: Path
) -> None:
    base, www, _ = http_server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("../../escaped.txt", "x")
    (www / "evil.zip").write_bytes(buffer.getvalue())
    with pytest.raises(MalformedDataError, match="outside the archive"):
        resolve_dataset(
            _toy_source(f"{base}/evil.zip"),
            data_dir=tmp_path / "r",
            download=True,
            progress=False,
            allow_unverified=True,
        )
    assert not list(tmp_path.rglob("escaped.txt"))


def test_cli_lists_and_reports_errors(
    isolated_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ml-100k" in out and "not present" in out
    assert main(["criteo-sample", "--data-dir", str(tmp_path)]) == 1
    assert "cannot be downloaded" in capsys.readouterr().err
