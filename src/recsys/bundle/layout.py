"""The run bundle's file layout: the one module that names its files.

A run bundle is the folder that training's last stage writes and that everything
serving reads (``build-repo``, ``serve``, the demo, the benchmarks). It is
self-describing: ``bundle.json`` records the format version, every file with its
sha256 and size, the provenance (package version, git commit, the dataset's source
checksums, the config) and a summary of the contents. Nothing at serving time
rebuilds a torch model or reads ``configs/``.

Layout (relative to the bundle folder; only this module spells these names)::

    bundle.json                   format, files + sha256, provenance, summary
    config.yaml                   the run's resolved configuration
    metrics.json                  the run's test metrics, per model
    aggregation.json              the served aggregation weights (as tuned) + tuning
    schema.json                   the feature schema
    vocab/                        the vocabularies the served ids come from
    models/manifest.json          the ONNX export manifest
    models/user_tower/model.onnx  the exported user encoder (a folder with external data)
    models/ranker/model.onnx      the exported ranker
    index/                        the FAISS index over the item vectors
    runtime/                      the ``recommend`` model's tables (recsys.runtime)
    checks/expected.json          offline lists of sample users: what serving must return

:class:`RunBundle` opens and checks a bundle (format version, required files,
checksums) and fails with one :class:`BundleError` that names every problem.
:class:`BundleWriter` writes one into a staging folder and moves it into place
only when complete, so a reader never sees half a bundle.

This module uses the standard library only: serving opens bundles without torch.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()) / "bundle"
    >>> with BundleWriter(root) as w:
    ...     _ = w.write_json(METRICS, {"Two-tower": {"ndcg@10": 0.45}})
    ...     _ = w.write_text(CONFIG, "seed: 42\\n")
    ...     w.finish(summary={"dataset": "ml-100k"}, required=(METRICS, CONFIG))
    >>> RunBundle.open(root).read_json(METRICS)["Two-tower"]["ndcg@10"]
    0.45
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

BUNDLE_FORMAT = 1
"""Version of the layout; a reader refuses other versions (it cannot know their files)."""

MANIFEST = "bundle.json"
CONFIG = "config.yaml"
METRICS = "metrics.json"
AGGREGATION = "aggregation.json"
SCHEMA = "schema.json"
VOCAB_DIR = "vocab"
MODELS_DIR = "models"
EXPORT_MANIFEST = f"{MODELS_DIR}/manifest.json"
INDEX_DIR = "index"
RUNTIME_DIR = "runtime"
EXPECTED = "checks/expected.json"

USER_TOWER = "user_tower"
RANKER = "ranker"

SERVING_FILES: tuple[str, ...] = (
    SCHEMA,
    AGGREGATION,
    EXPORT_MANIFEST,
    f"{MODELS_DIR}/{USER_TOWER}/model.onnx",
    f"{MODELS_DIR}/{RANKER}/model.onnx",
    INDEX_DIR,
    RUNTIME_DIR,
)
"""What a bundle must hold to be served (files, or folders that must not be empty)."""


class BundleError(ValueError):
    """A bundle is missing, incomplete, corrupted or of another format."""


def model_path(name: str) -> str:
    """The relative path of exported model ``name`` (a file, or a folder with external data)."""
    return f"{MODELS_DIR}/{name}/model.onnx"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def git_commit(start: Path | None = None) -> dict[str, Any] | None:
    """The git commit of the checkout holding ``start`` (this package by default).

    Returns:
        ``{"commit": sha, "dirty": bool}``, or None outside a git checkout (an
        installed package) or without git.
    """
    where = start if start is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(status.strip())} if sha else None


@dataclass
class RunBundle:
    """An opened, checked run bundle.

    Attributes:
        root: the bundle folder.
        manifest: the parsed ``bundle.json``.
    """

    root: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(
        cls, root: str | os.PathLike[str], *, verify: bool = True, required: Iterable[str] = ()
    ) -> RunBundle:
        """Opens the bundle at ``root`` and checks it.

        Args:
            root: the bundle folder.
            verify: compare every file's sha256 with ``bundle.json`` (False: sizes only).
            required: relative paths that must be present besides those the bundle
                itself lists as required (e.g. :data:`SERVING_FILES`).

        Returns:
            The :class:`RunBundle`.

        Raises:
            BundleError: one message naming every problem (missing ``bundle.json``,
                another format version, missing or changed files).
        """
        path = Path(root)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            hint = "it is not a run bundle" if path.is_dir() else "the folder does not exist"
            raise BundleError(
                f"{path}: no {MANIFEST} ({hint}); run the training job's `bundle` stage "
                "(scripts/run.sh) to write one"
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BundleError(f"{manifest_path}: unreadable ({error})") from error
        fmt = manifest.get("format")
        if fmt != BUNDLE_FORMAT:
            raise BundleError(
                f"{path}: bundle format {fmt!r}, this recsys reads format {BUNDLE_FORMAT}; "
                "write the bundle again with this version (the training job's `bundle` stage)"
            )
        files: dict[str, dict[str, Any]] = manifest.get("files") or {}
        problems: list[str] = []
        for rel in sorted({*manifest.get("required", []), *required}):
            target = path / rel
            if not target.exists():
                problems.append(f"missing {rel}")
            elif target.is_dir() and not any(target.iterdir()):
                problems.append(f"empty folder {rel}")
        for rel, meta in files.items():
            target = path / rel
            if not target.is_file():
                if f"missing {rel}" not in problems:
                    problems.append(f"missing {rel}")
                continue
            if target.stat().st_size != int(meta.get("bytes", -1)):
                problems.append(
                    f"{rel} changed (size {target.stat().st_size}, recorded {meta.get('bytes')})"
                )
            elif verify and sha256_of(target) != meta.get("sha256"):
                problems.append(f"{rel} changed (sha256 differs from {MANIFEST})")
        if problems:
            raise BundleError(
                f"{path}: the bundle is incomplete or changed: " + "; ".join(problems)
            )
        return cls(path, manifest)

    # -- contents ----------------------------------------------------------------------

    def path(self, rel: str) -> Path:
        """The absolute path of a bundle entry (e.g. ``layout.INDEX_DIR``)."""
        return self.root / rel

    def read_json(self, rel: str) -> Any:
        return json.loads((self.root / rel).read_text(encoding="utf-8"))

    def read_text(self, rel: str) -> str:
        return (self.root / rel).read_text(encoding="utf-8")

    def has(self, rel: str) -> bool:
        return (self.root / rel).exists()

    @property
    def bundle_id(self) -> str:
        """A short content hash: equal ids mean the same files."""
        return str(self.manifest.get("bundle_id", ""))

    @property
    def summary(self) -> dict[str, Any]:
        return dict(self.manifest.get("summary") or {})

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.manifest.get("provenance") or {})

    def describe(self) -> str:
        """One line for logs: id, dataset, creation time, commit."""
        prov = self.provenance
        git = prov.get("git") or {}
        commit = git.get("commit", "")[:12] + ("+dirty" if git.get("dirty") else "")
        return (
            f"bundle {self.bundle_id} ({self.summary.get('dataset', '?')}, "
            f"created {self.manifest.get('created', '?')}, recsys "
            f"{prov.get('package_version', '?')}{', ' + commit if commit else ''})"
        )


class BundleWriter:
    """Writes a bundle into ``<root>.partial`` and moves it to ``root`` on :meth:`finish`.

    Args:
        root: the bundle folder to write.
        overwrite: replace an existing bundle at ``root`` (only a bundle: a folder
            without ``bundle.json`` is never deleted).

    Example:
        See the module docstring.
    """

    def __init__(self, root: str | os.PathLike[str], *, overwrite: bool = True) -> None:
        self.root = Path(root)
        if self.root.exists() and any(self.root.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{self.root} exists (pass overwrite=True)")
            if not (self.root / MANIFEST).is_file():
                raise FileExistsError(
                    f"{self.root} is not empty and not a run bundle; refusing to replace it"
                )
        self.staging = self.root.with_name(self.root.name + ".partial")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        self._finished = False

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._finished:
            shutil.rmtree(self.staging, ignore_errors=True)

    def path(self, rel: str) -> Path:
        """Where entry ``rel`` goes while writing (parents created)."""
        target = self.staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, rel: str, value: Any) -> Path:
        target = self.path(rel)
        target.write_text(
            json.dumps(value, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
        )
        return target

    def write_text(self, rel: str, text: str) -> Path:
        target = self.path(rel)
        target.write_text(text, encoding="utf-8")
        return target

    def copy(self, src: str | os.PathLike[str], rel: str) -> Path:
        """Copies a file or a folder into the bundle at ``rel``."""
        source, target = Path(src), self.path(rel)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        return target

    def finish(
        self,
        *,
        summary: Mapping[str, Any],
        required: Iterable[str] = (),
        provenance: Mapping[str, Any] | None = None,
    ) -> RunBundle:
        """Records every file's checksum in ``bundle.json`` and moves the bundle in place.

        Args:
            summary: what the bundle holds, for people (dataset, sizes, versions).
            required: entries a reader must find (they must exist now).
            provenance: extra provenance (source checksums, ...); the package version,
                git commit and creation time are added here.

        Returns:
            The finished bundle, opened and checked.
        """
        from recsys import __version__

        required = sorted(set(required))
        absent = [rel for rel in required if not (self.staging / rel).exists()]
        if absent:
            raise BundleError(f"cannot finish the bundle: {absent} were not written")
        files = {
            p.relative_to(self.staging).as_posix(): {
                "sha256": sha256_of(p),
                "bytes": p.stat().st_size,
            }
            for p in _files_under(self.staging)
        }
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        manifest = {
            "format": BUNDLE_FORMAT,
            "bundle_id": digest[:16],
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "required": required,
            "summary": dict(summary),
            "provenance": {
                "package_version": __version__,
                "git": git_commit(),
                **dict(provenance or {}),
            },
            "files": files,
        }
        (self.staging / MANIFEST).write_text(
            json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
        )
        old = self.root.with_name(self.root.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.root.exists():
            self.root.rename(old)
        self.staging.rename(self.root)
        shutil.rmtree(old, ignore_errors=True)
        self._finished = True
        return RunBundle.open(self.root)
