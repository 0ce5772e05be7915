"""Versioned Parquet storage of feature tables, and a cache of processed datasets.

Every table the feature layer writes is a Parquet file whose schema metadata
records where it came from and how it was made:

========================= ==================================================
key                       value
========================= ==================================================
``recsys.schema_version`` :data:`~recsys.features.schema.SCHEMA_VERSION` used
``recsys.source_sha256``  sha256 over the raw input files (:func:`sources_sha256`)
``recsys.created``        ISO-8601 UTC time of writing
``recsys.config_hash``    sha256 of the build configuration (:func:`config_hash`)
========================= ==================================================

Metadata values are stored JSON-encoded, so :func:`read_table` returns them
with their Python types (ints stay ints). List columns (genres, recent items)
are stored as Parquet lists and read back as one 1-D ``numpy`` array per row.

A :class:`ProcessedDataset` is a directory::

    out_dir/
      manifest.json     provenance, file list, row counts, vocabulary versions
      train.parquet     one example row per training interaction
      valid.parquet     (optional) validation interactions
      test.parquet      test interactions
      users.parquet     user features (state at the end of training)
      items.parquet     item features
      vocab/            one Parquet file per vocabulary (see recsys.features.vocab)

:func:`load_or_build` reloads that directory when its manifest matches the
current raw files and configuration, and rebuilds it otherwise.

Example:
    >>> import pandas as pd, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.parquet")
    >>> _ = write_table(pd.DataFrame({"a": [1, 2]}), path,
    ...                 {"recsys.source_sha256": "abc", "recsys.config_hash": "def"})
    >>> df, meta = read_table(path)
    >>> meta["recsys.source_sha256"], df["a"].tolist()
    ('abc', [1, 2])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.features.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from recsys.features.vocab import VocabularySet

logger = logging.getLogger(__name__)

META_SCHEMA_VERSION = "recsys.schema_version"
META_SOURCE_SHA256 = "recsys.source_sha256"
META_CREATED = "recsys.created"
META_CONFIG_HASH = "recsys.config_hash"
REQUIRED_METADATA: tuple[str, ...] = (
    META_SCHEMA_VERSION,
    META_SOURCE_SHA256,
    META_CREATED,
    META_CONFIG_HASH,
)
_PREFIX = "recsys."
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


class StoreError(Exception):
    """A stored table or dataset directory is missing, incomplete or inconsistent."""


# -- hashing ---------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of one file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sources_sha256(paths: Iterable[str | Path]) -> str:
    """One sha256 over several raw input files.

    Each file contributes its base name and content hash; the pairs are sorted,
    so the result depends neither on the order the files are given in nor on the
    folder they sit in (a moved copy of the same data hashes the same).

    Args:
        paths: the raw files a dataset is built from.

    Returns:
        Hex sha256.

    Raises:
        FileNotFoundError: a file does not exist.
    """
    parts = sorted((Path(p).name, file_sha256(p)) for p in paths)
    if not parts:
        raise ValueError("sources_sha256 needs at least one file")
    digest = hashlib.sha256()
    for name, sha in parts:
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest()


def config_hash(config: Mapping[str, Any]) -> str:
    """Hex sha256 of a configuration mapping, independent of key order.

    Values that JSON cannot encode (paths, enums) are hashed by their ``str``.
    """
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def utc_now() -> str:
    """The current UTC time in ISO-8601 with seconds, e.g. ``2024-05-01T12:00:00+00:00``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- one table -------------------------------------------------------------------


def write_table(df: pd.DataFrame, path: str | Path, metadata: Mapping[str, Any]) -> Path:
    """Writes ``df`` to a Parquet file with provenance metadata.

    The file is written to a temporary name and renamed, so a reader never sees
    a half-written table. The frame's index is not stored.

    Args:
        df: the table; list-valued columns become Parquet lists.
        path: destination ``.parquet`` file; parent folders are created.
        metadata: ``recsys.source_sha256`` and ``recsys.config_hash`` are
            required; ``recsys.schema_version`` defaults to
            :data:`SCHEMA_VERSION` and ``recsys.created`` to now. Extra keys are
            kept. Values must be JSON-serializable.

    Returns:
        The path written.

    Raises:
        ValueError: a required key is missing or a value is not JSON-serializable.
    """
    meta: dict[str, Any] = {META_SCHEMA_VERSION: SCHEMA_VERSION, META_CREATED: utc_now()}
    meta.update(metadata)
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ValueError(f"write_table({path}): metadata lacks required keys {missing}")
    encoded: dict[bytes, bytes] = {}
    for key, value in meta.items():
        try:
            encoded[key.encode()] = json.dumps(value).encode()
        except TypeError as e:
            raise ValueError(f"write_table({path}): metadata {key!r} is not JSON: {e}") from e
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **encoded})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``recsys.*`` metadata of a Parquet file, without reading its rows."""
    raw = pq.read_schema(path).metadata or {}
    return _decode_metadata(raw)


def _decode_metadata(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode()
        if name.startswith(_PREFIX):
            out[name] = json.loads(value)
    return out


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Reads a table written by :func:`write_table`.

    Args:
        path: the ``.parquet`` file.

    Returns:
        ``(frame, metadata)``: list columns hold one 1-D numpy array per row;
        metadata holds the ``recsys.*`` keys with their JSON-decoded values.

    Raises:
        StoreError: the file does not exist or carries no ``recsys`` metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no table at {path}")
    table = pq.read_table(path)
    meta = _decode_metadata(table.schema.metadata or {})
    if META_SCHEMA_VERSION not in meta:
        raise StoreError(f"{path} was not written by recsys (no {META_SCHEMA_VERSION!r})")
    return table.to_pandas(), meta


# -- a processed dataset ---------------------------------------------------------

_TABLES: tuple[str, ...] = ("train", "valid", "test", "users", "items")


@dataclass
class ProcessedDataset:
    """Feature tables of one dataset and split, with their vocabularies.

    Attributes:
        train: one example row per training interaction (see
            :func:`recsys.features.build.build_examples`).
        test: test interactions (raw ids, rating, timestamp).
        users: one row per user: static features plus the user's state at the
            end of training (see :func:`recsys.features.build.user_features_at`).
        items: one row per catalogue item with its features.
        vocabs: the fitted vocabularies, or None before fitting.
        valid: validation interactions, if the split has them.
        manifest: provenance: ``schema_version``, ``source_sha256``,
            ``config_hash``, ``created``, row counts, vocabulary versions.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    vocabs: VocabularySet | None = None
    valid: pd.DataFrame | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The frames present, by file stem (``train``, ``test``, ...)."""
        out = {name: getattr(self, name) for name in _TABLES}
        return {k: v for k, v in out.items() if v is not None}

    def save(
        self,
        out_dir: str | Path,
        source_sha256: str | None = None,
        config_hash: str | None = None,
    ) -> Path:
        """Writes the dataset directory; replaces an existing one atomically.

        The tables go to a temporary sibling folder first, which is renamed into
        place at the end, so an interrupted save never leaves a directory that
        :func:`load_or_build` would take for a complete one.

        Args:
            out_dir: destination folder.
            source_sha256: overrides ``manifest["source_sha256"]``.
            config_hash: overrides ``manifest["config_hash"]``.

        Returns:
            ``out_dir``.
        """
        out_dir = Path(out_dir)
        sha = source_sha256 if source_sha256 is not None else self.manifest.get("source_sha256")
        cfg = config_hash if config_hash is not None else self.manifest.get("config_hash")
        if sha is None or cfg is None:
            raise ValueError("ProcessedDataset.save needs source_sha256 and config_hash")
        created = utc_now()
        meta = {
            META_SCHEMA_VERSION: SCHEMA_VERSION,
            META_SOURCE_SHA256: sha,
            META_CREATED: created,
            META_CONFIG_HASH: cfg,
        }
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # mkdir (not mkdtemp, which makes the folder private) so the result has normal modes.
        tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            files: dict[str, dict[str, Any]] = {}
            for name, frame in self.tables().items():
                write_table(frame, tmp / f"{name}.parquet", meta)
                files[name] = {"file": f"{name}.parquet", "rows": len(frame)}
            vocab_versions: dict[str, str] = {}
            if self.vocabs is not None:
                self.vocabs.save(tmp / "vocab")
                vocab_versions = self.vocabs.versions()
            manifest = {
                **self.manifest,
                "format": MANIFEST_FORMAT,
                "schema_version": SCHEMA_VERSION,
                "source_sha256": sha,
                "config_hash": cfg,
                "created": created,
                "tables": files,
                "vocab": vocab_versions,
            }
            # The manifest is written last: its presence marks a complete directory.
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            old = None
            if out_dir.exists():
                old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
                os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.manifest = manifest
        return out_dir

    @classmethod
    def load(cls, out_dir: str | Path) -> ProcessedDataset:
        """Reads a directory written by :meth:`save`.

        Raises:
            StoreError: the manifest or a listed table is missing, or a table's
                metadata disagrees with the manifest.
        """
        # vocab imports store for its Parquet I/O, so the reverse import waits until here.
        from recsys.features.vocab import VocabularySet

        out_dir = Path(out_dir)
        manifest = read_manifest(out_dir)
        if manifest is None:
            raise StoreError(f"{out_dir} holds no {MANIFEST}: not a processed dataset")
        frames: dict[str, pd.DataFrame] = {}
        for name, entry in manifest.get("tables", {}).items():
            frame, meta = read_table(out_dir / entry["file"])
            for key, mkey in (
                (META_SOURCE_SHA256, "source_sha256"),
                (META_CONFIG_HASH, "config_hash"),
            ):
                if meta.get(key) != manifest[mkey]:
                    raise StoreError(
                        f"{out_dir / entry['file']}: {key} {meta.get(key)!r} differs from "
                        f"the manifest's {manifest[mkey]!r}"
                    )
            if len(frame) != entry["rows"]:
                raise StoreError(
                    f"{out_dir / entry['file']}: {len(frame)} rows, manifest says {entry['rows']}"
                )
            frames[name] = frame
        for name in ("train", "test", "users", "items"):
            if name not in frames:
                raise StoreError(f"{out_dir}: manifest lists no {name!r} table")
        vocabs = VocabularySet.load(out_dir / "vocab") if (out_dir / "vocab").is_dir() else None
        return cls(
            train=frames["train"],
            test=frames["test"],
            users=frames["users"],
            items=frames["items"],
            vocabs=vocabs,
            valid=frames.get("valid"),
            manifest=manifest,
        )


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a dataset directory, or None if there is none."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def load_or_build(
    out_dir: str | Path,
    source_files: Iterable[str | Path],
    config_dict: Mapping[str, Any],
    build_fn: Callable[[], ProcessedDataset],
) -> ProcessedDataset:
    """Loads a processed dataset from ``out_dir``, building it only when stale.

    The directory is reused when its manifest records the same sha256 of
    ``source_files`` and the same hash of ``config_dict`` (and the same
    :data:`SCHEMA_VERSION`); otherwise ``build_fn`` runs and its result is saved
    there, replacing the old one.

    Args:
        out_dir: the cache directory.
        source_files: raw input files; their contents decide staleness.
        config_dict: every setting that changes the output (schema, split, ...).
        build_fn: builds the dataset from scratch; called at most once.

    Returns:
        The dataset; ``manifest["cache"]`` is ``"hit"`` or ``"built"``.

    Example:
        >>> ds = load_or_build("artifacts/ml100k", files, {"split": "item75"},
        ...                    lambda: build_features(data, split, schema))  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    sha = sources_sha256(source_files)
    cfg = config_hash(config_dict)
    manifest = read_manifest(out_dir)
    if (
        manifest is not None
        and manifest.get("source_sha256") == sha
        and manifest.get("config_hash") == cfg
        and manifest.get("schema_version") == SCHEMA_VERSION
        and manifest.get("format") == MANIFEST_FORMAT
    ):
        try:
            dataset = ProcessedDataset.load(out_dir)
        except StoreError as e:
            logger.warning("cached dataset at %s is unreadable (%s); rebuilding", out_dir, e)
        else:
            logger.info("reusing processed dataset at %s", out_dir)
            dataset.manifest["cache"] = "hit"
            return dataset
    elif manifest is not None:
        logger.info("processed dataset at %s is stale (sources or config changed)", out_dir)
    dataset = build_fn()
    dataset.manifest.pop("cache", None)
    dataset.save(out_dir, source_sha256=sha, config_hash=cfg)
    dataset.manifest["cache"] = "built"
    return dataset
