"""Dataset configs and the loader registry: every config in configs/dataset/ loads,
agrees with the download registry, rejects unknown keys by name, and reads the
real shared datasets (ML-100K, the Criteo and YOOCHOOSE samples) through itself.
Downloads are tested with file:// URLs written here; no network is used."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from recsys.data.download import UnverifiedDownloadError
from recsys.data.frame import DataConfigError, DatasetNotFoundError, MalformedDataError
from recsys.data.movielens import load_ml100k
from recsys.data.paths import DATASETS
from recsys.data.registry import LOADERS, DatasetConfig, load, load_config_file, resolve

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset"
ALL_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


def _config(name: str, **changes: object) -> DatasetConfig:
    raw = load_config_file(CONFIGS / f"{name}.yaml")
    return DatasetConfig.from_dict({**_as_dict(raw), **changes})


def _as_dict(cfg: DatasetConfig) -> dict[str, object]:
    from recsys.data.config import to_dict

    return to_dict(cfg)


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_every_dataset_config_builds_and_names_a_registered_loader(path: Path) -> None:
    cfg = load_config_file(path)
    assert cfg.loader in LOADERS
    assert isinstance(cfg.read, LOADERS[cfg.loader].config_type)
    assert cfg.required_files() and cfg.download in (True, False) and not cfg.offline
    if cfg.schema is not None:
        assert (CONFIGS.parents[1] / cfg.schema).is_file(), cfg.schema


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_every_config_key_has_an_inline_comment(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        assert "#" in text, f"{path.name}:{number}: key without a comment: {line!r}"


def test_configs_agree_with_the_download_registry() -> None:
    seen = set()
    for path in ALL_CONFIGS:
        cfg = load_config_file(path)
        source = DATASETS.get(cfg.name)
        if source is None:
            continue  # a generic config (interactions, event_log) names no public dataset
        seen.add(cfg.name)
        mine = cfg.source_of()
        assert (mine.url, mine.md5, mine.sha256, mine.archive_folder) == (
            source.url,
            source.md5,
            source.sha256,
            source.archive_folder,
        ), path.name
        assert set(mine.required_files) <= set(source.required_files), path.name
    for name in ("ml-100k", "ml-1m", "ml-20m", "ml-25m", "ml-32m", "criteo", "criteo-sample"):
        assert name in seen, f"no config for {name}"
    assert {"yoochoose", "yoochoose-rsc15-100k"} <= seen


def test_grouplens_archives_keep_their_published_checksums() -> None:
    assert _config("ml100k").source.md5 == "0e33842e24a9c977be4e0107933c0723"
    assert _config("ml1m").source.md5 == "c4d9eecfca2ab87c1945afe126590906"
    assert _config("ml25m").source.md5 == "6b51fb2759a8657d3bfcbfc42b592ada"
    ml32m = _config("ml32m").source
    assert ml32m.md5 is None and ml32m.sha256 is None  # none known: downloads need opting in


def test_unknown_keys_and_loaders_are_named() -> None:
    base = {"name": "ml-100k", "loader": "ml100k"}
    with pytest.raises(DataConfigError, match=r"unknown key dataset\.read\.delimter"):
        DatasetConfig.from_dict({**base, "read": {"delimter": ","}})
    with pytest.raises(DataConfigError, match=r"unknown key dataset\.sources"):
        DatasetConfig.from_dict({**base, "sources": {}})
    with pytest.raises(DataConfigError, match=r"unknown key dataset\.cleaning\.userk"):
        DatasetConfig.from_dict({**base, "cleaning": {"userk": 5}})
    with pytest.raises(DataConfigError, match=r"unknown loader 'nope'.*movielens_csv"):
        DatasetConfig.from_dict({**base, "loader": "nope"})
    with pytest.raises(DataConfigError, match=r"dataset\.strict: expected true or false"):
        DatasetConfig.from_dict({**base, "strict": "sometimes"})
    with pytest.raises(
        DataConfigError, match=r"dataset\.read\.rating_scale\.min: expected a number"
    ):
        DatasetConfig.from_dict({**base, "read": {"rating_scale": {"min": "one"}}})
    with pytest.raises(DataConfigError, match=r"required key dataset\.loader"):
        DatasetConfig.from_dict({"name": "x"})
    # Values from environment variables arrive as text.
    assert DatasetConfig.from_dict({**base, "offline": "1"}).offline is True


def test_real_ml100k_through_its_config_equals_the_direct_loader(
    ml100k_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSYS_OFFLINE", "1")  # found locally: never a download
    loaded = load(_config("ml100k", dir=str(ml100k_dir.parent)))
    direct = load_ml100k(ml100k_dir)
    assert loaded.data is not None and loaded.folder == ml100k_dir
    assert loaded.data.interactions.equals(direct.interactions)
    assert loaded.data.users is not None and loaded.data.users.equals(direct.users)
    assert [f.name for f in loaded.files] == ["u.data", "u.user", "u.item", "u.genre"]
    summary = loaded.summary()
    assert "dataset ml-100k (loader ml100k)" in summary and "read 100,000 rows" in summary


def test_real_criteo_sample_through_its_config(criteo_dir: Path) -> None:
    loaded = load(_config("criteo_sample", dir=str(criteo_dir.parent)))
    assert loaded.data is None and loaded.table is not None
    assert len(loaded.table) == 1_000 and loaded.table.shape[1] == 40
    (report,) = loaded.reports
    assert report.repaired == {"padded": 498} and report.rows_rejected == 0
    # The other sample file: the CSV-with-header variant, picked by read.file.
    csv = load(
        _config(
            "criteo_sample",
            dir=str(criteo_dir.parent),
            read={"file": "deepctr_criteo_sample.txt", "delimiter": ","},
        )
    )
    assert csv.table is not None and len(csv.table) == 200


def test_real_yoochoose_sample_through_its_config(yoochoose_dir: Path) -> None:
    loaded = load(_config("yoochoose_sample", dir=str(yoochoose_dir.parent)))
    assert loaded.data is not None and loaded.data.name == "yoochoose-rsc15-100k"
    df = loaded.data.interactions
    assert len(df) == 70_278 and loaded.data.n_users == 17_794 and loaded.data.n_items == 2_933
    assert (df["event_type"] == "click").all()


def test_the_same_sample_through_the_generic_event_log_loader(yoochoose_dir: Path) -> None:
    cfg = DatasetConfig.from_dict(
        {
            "name": "yoochoose-rsc15-100k",
            "loader": "event_log",
            "dir": str(yoochoose_dir.parent),
            "read": {
                "file": "yoochoose-clicks-100k_train_full.txt",
                "format": "tsv",
                "columns": {"SessionId": "session_id", "ItemId": "item_id", "Time": "timestamp"},
                "anonymous": "session",
                "default_event_type": "click",
                "timestamp": {"format": "epoch_s"},
            },
        }
    )
    loaded = load(cfg)
    assert loaded.data is not None
    df = loaded.data.interactions
    assert len(df) == 70_278 and df["user_id"].iloc[0] == "anon:3"
    assert loaded.reports[0].repaired == {"missing user_id set to anon:<session_id>": 70_278}
    assert df["timestamp"].iloc[0].isoformat() == "2014-04-02T11:17:46.940000+00:00"


def _zip(folder: Path, root: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"{root}/{path.name}")
    return buffer.getvalue()


def test_config_download_refuses_a_null_checksum_unless_allowed(
    write_ml100k: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECSYS_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    archive = tmp_path / "www" / "toy.zip"
    archive.parent.mkdir()
    archive.write_bytes(_zip(write_ml100k("built/ml-100k"), "ml-100k"))
    raw = {
        "name": "toy-100k",
        "loader": "ml100k",
        "dir": str(tmp_path / "data"),
        "source": {"url": archive.as_uri(), "archive_folder": "ml-100k"},
    }
    with pytest.raises(UnverifiedDownloadError, match=r"dataset\.allow_unverified=true"):
        load(raw)
    assert not (tmp_path / "data" / "toy-100k").exists()
    # Offline wins over download: a clear not-found error, nothing fetched.
    with pytest.raises(DatasetNotFoundError, match="downloads are off"):
        load({**raw, "offline": True})
    loaded = load({**raw, "allow_unverified": True})
    assert loaded.data is not None and len(loaded.data.interactions) == 3
    assert loaded.folder == tmp_path / "data" / "toy-100k"
    # With the checksum pinned, the same archive downloads without opting in.
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    pinned = {**raw, "name": "toy-pinned", "source": {**raw["source"], "sha256": digest}}  # type: ignore[dict-item]
    folder, files = resolve(pinned, progress=False)
    assert folder.name == "toy-pinned" and all(f.is_file() for f in files)


def test_download_false_gives_the_not_found_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"dataset 'ml-25m' not found.*ratings\.csv"):
        load(_config("ml25m", dir=str(tmp_path), download=False))


def test_strict_from_config_turns_a_rejection_into_an_error(
    write_ml100k: Callable[..., Path],
) -> None:
    folder = write_ml100k(u_data=b"1\t10\t5\t881250949\nNA\t10\t3\t891717742\n")
    raw = {"name": "ml-100k", "loader": "ml100k", "dir": str(folder.parent)}
    loaded = load(raw)
    assert loaded.data is not None and len(loaded.data.interactions) == 1
    assert loaded.reports[0].rejected == {"missing user_id": 1}
    with pytest.raises(MalformedDataError, match=r"dataset\.strict=true.*missing user_id"):
        load({**raw, "strict": True})


def test_half_star_ratings_are_kept_by_the_ml25m_config(tmp_path: Path) -> None:
    folder = tmp_path / "ml-25m"
    folder.mkdir()
    ratings = [0.5, 1.0, 1.5, 2.5, 3.5, 4.5, 5.0]
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u},{10 + u},{r},9649827{u:02d}\n" for u, r in enumerate(ratings, 1))
        + "9,10,5.5,964982703\n9,10,0.25,964982703\n"
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        + "".join(f"{10 + u},Movie {u} (1999),Drama|Comedy\n" for u in range(1, 8))
    )
    loaded = load(_config("ml25m", dir=str(tmp_path)))
    assert loaded.data is not None
    np.testing.assert_array_equal(loaded.data.interactions["rating"].to_numpy(), ratings)
    assert loaded.reports[0].rejected == {"rating out of range": 2}
    assert loaded.data.users is None
