"""The export manifest: what each exported model expects, and a request check for serving.

``manifest.json`` sits next to the exported models. Per model it records the
input and output tensors (name, dtype, shape with ``-1`` for the batch axis), the
order of the sparse features along the ``F`` axis of ``ids`` and each feature's
``max_len``, the table sizes, the versions of the vocabularies that produced the
ids, the model version, the creation time, the sha256 of every file and the
feature schema's name and version. Serving reads it to build requests in the
right layout and calls :func:`validate_request` before inference, so a request
built for another schema or vocabulary fails with a clear message instead of
returning wrong scores.

Example:
    >>> spec = ModelManifest(
    ...     name="user_tower", file="user_tower.onnx",
    ...     inputs=[TensorSpec("ids", "int64", (-1, 1, 1))],
    ...     outputs=[TensorSpec("embeddings", "float32", (-1, 8))],
    ...     feature_order=["user_id"], max_len={"user_id": 1}, seq_len=1,
    ...     num_embeddings={"user_id": 10})
    >>> validate_request(spec, {"ids": np.array([[[3]]], dtype=np.int64)})
    >>> try:
    ...     validate_request(spec, {"ids": np.array([[[12]]], dtype=np.int64)})
    ... except ManifestMismatchError as e:
    ...     print(str(e)[:53])
    user_tower: input 'ids': feature 'user_id' has ids >=
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST_FILE = "manifest.json"
"""File name of the manifest inside an export directory."""

MANIFEST_FORMAT = 1
"""Version of the manifest's JSON layout."""

TRITON_DTYPES: dict[str, str] = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "bool": "TYPE_BOOL",
}
"""numpy dtype name -> Triton ``data_type`` of a model configuration."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks.

    Kept here (not imported from :mod:`recsys.features.store`) so that this module
    needs only numpy and the standard library: serving processes validate requests
    without importing torch, pandas or pyarrow.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def utc_now() -> str:
    """The current UTC time, ISO-8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class ManifestError(Exception):
    """A manifest is missing, malformed, or disagrees with the files beside it."""


class ManifestMismatchError(ManifestError, ValueError):
    """A request does not match what the exported model expects."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of an exported model.

    Attributes:
        name: the ONNX tensor name.
        dtype: numpy dtype name (``"int64"``, ``"float32"``).
        shape: dimensions; ``-1`` marks a dynamic axis (the batch).

    Example:
        >>> TensorSpec("ids", "int64", (-1, 7, 50)).triton_dtype
        'TYPE_INT64'
    """

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def triton_dtype(self) -> str:
        """The Triton ``data_type`` of this tensor."""
        try:
            return TRITON_DTYPES[self.dtype]
        except KeyError:
            raise ManifestError(f"tensor {self.name!r}: no Triton type for {self.dtype}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TensorSpec:
        return cls(str(raw["name"]), str(raw["dtype"]), tuple(int(d) for d in raw["shape"]))


@dataclass
class ModelManifest:
    """Everything serving needs to know about one exported model.

    Attributes:
        name: model name (the Triton model name in a Triton layout).
        file: what to load, relative to the manifest's folder: an ``.onnx``
            file, or a folder named ``model.onnx`` holding ``model.onnx`` and
            ``model.onnx.data`` (a Triton model with external data).
        inputs: input tensors, in call order.
        outputs: output tensors.
        feature_order: the sparse features along the ``F`` axis of ``ids``.
        max_len: ids read per feature (``L_f``); slots ``>= L_f`` must be ``-1``.
        seq_len: ``L``, the last axis of ``ids`` (the largest ``max_len``).
        num_embeddings: table rows per feature (ids must be below it).
        ids_input: name of the padded-ids input: ``[B, F, L]``, or ``[U, C, F, L]``
            for a ranker that scores candidate lists (``list_ids_input`` set).
        dense_input: name of the dense input, or None.
        dense_features: the dense features along the dense input's last axis.
        vocab_versions: per feature, the version (content hash) of the
            vocabulary that maps raw values to its ids.
        model_version: integer model version (the Triton version folder).
        created: creation time, ISO-8601 UTC.
        checksums: sha256 of each file, by path relative to the manifest folder.
        schema_name: feature schema name.
        schema_version: feature schema format version.
        opset: ONNX opset of the graph.
        external_data: the weights sit in a separate ``.data`` file.
        extra: free-form facts (exporter, parity measured at export, ...).
        list_ids_input: name of the per-list ids input ``[U, F_list, L_list]`` of a
            ranker that scores candidate lists, or None.
        list_feature_order: the features along its ``F_list`` axis.
        list_seq_len: its ``L_list``.
    """

    name: str
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    feature_order: list[str]
    max_len: dict[str, int]
    seq_len: int
    num_embeddings: dict[str, int]
    ids_input: str = "ids"
    dense_input: str | None = None
    dense_features: list[str] = field(default_factory=list)
    vocab_versions: dict[str, str] = field(default_factory=dict)
    model_version: int = 1
    created: str = field(default_factory=utc_now)
    checksums: dict[str, str] = field(default_factory=dict)
    schema_name: str = ""
    schema_version: int = 0
    opset: int = 0
    external_data: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    list_ids_input: str | None = None
    list_feature_order: list[str] = field(default_factory=list)
    list_seq_len: int = 0

    @property
    def all_features(self) -> list[str]:
        """The features of ``ids`` and then those of ``list_ids``."""
        return [*self.feature_order, *self.list_feature_order]

    def __post_init__(self) -> None:
        names = [t.name for t in self.inputs]
        if self.ids_input not in names:
            raise ManifestError(f"{self.name}: ids input {self.ids_input!r} not in inputs {names}")
        if self.dense_input is not None and self.dense_input not in names:
            raise ManifestError(
                f"{self.name}: dense input {self.dense_input!r} not in inputs {names}"
            )
        missing = [
            f for f in self.all_features if f not in self.max_len or f not in self.num_embeddings
        ]
        if missing:
            raise ManifestError(f"{self.name}: no max_len / num_embeddings for {missing}")
        ids = self.input(self.ids_input)
        rank = 4 if self.list_ids_input is not None else 3
        if len(ids.shape) != rank or ids.shape[-2:] != (len(self.feature_order), self.seq_len):
            raise ManifestError(
                f"{self.name}: ids shape {ids.shape} disagrees with "
                f"{len(self.feature_order)} features x L={self.seq_len} (rank {rank})"
            )
        if self.list_ids_input is not None:
            lists = self.input(self.list_ids_input)
            want = (len(self.list_feature_order), self.list_seq_len)
            if len(lists.shape) != 3 or lists.shape[1:] != want:
                raise ManifestError(
                    f"{self.name}: list ids shape {lists.shape} disagrees with "
                    f"{want[0]} features x L={want[1]}"
                )

    def input(self, name: str) -> TensorSpec:
        """The input named ``name``."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        names = [t.name for t in self.inputs]
        raise KeyError(f"{self.name} has no input {name!r}; inputs: {names}")

    def verify_files(self, base_dir: str | Path) -> None:
        """Checks every file's sha256 against :attr:`checksums`.

        Raises:
            ManifestError: a file is missing or its content changed.
        """
        base = Path(base_dir)
        if not self.checksums:
            raise ManifestError(f"{self.name}: the manifest lists no files")
        for rel, expected in self.checksums.items():
            path = base / rel
            if not path.is_file():
                raise ManifestError(f"{self.name}: file {path} is missing")
            actual = file_sha256(path)
            if actual != expected:
                raise ManifestError(
                    f"{self.name}: {path} has sha256 {actual[:12]}..., the manifest says "
                    f"{expected[:12]}... (file changed after export?)"
                )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["inputs"] = [t.to_dict() for t in self.inputs]
        out["outputs"] = [t.to_dict() for t in self.outputs]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelManifest:
        data = dict(raw)
        try:
            data["inputs"] = [TensorSpec.from_dict(t) for t in data["inputs"]]
            data["outputs"] = [TensorSpec.from_dict(t) for t in data["outputs"]]
            return cls(**data)
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"malformed model entry {raw.get('name', '?')!r}: {e}") from e


@dataclass
class ExportManifest:
    """The manifest of an export directory: one :class:`ModelManifest` per model.

    Attributes:
        models: the models, by name.
        format_version: :data:`MANIFEST_FORMAT` of the JSON layout.
        updated: time of the last write, ISO-8601 UTC.

    Example:
        >>> manifest = ExportManifest.load("exports/ml100k")  # doctest: +SKIP
        >>> validate_request(manifest["user_tower"], {"ids": ids})  # doctest: +SKIP
    """

    models: dict[str, ModelManifest] = field(default_factory=dict)
    format_version: int = MANIFEST_FORMAT
    updated: str = field(default_factory=utc_now)

    def __getitem__(self, name: str) -> ModelManifest:
        try:
            return self.models[name]
        except KeyError:
            known = sorted(self.models)
            raise KeyError(f"no model {name!r} in the manifest; it has {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def add(self, *entries: ModelManifest) -> ExportManifest:
        """Adds or replaces entries (by name); returns self."""
        for entry in entries:
            self.models[entry.name] = entry
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "updated": self.updated,
            "models": [m.to_dict() for m in self.models.values()],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ExportManifest:
        version = int(raw.get("format_version", -1))
        if version != MANIFEST_FORMAT:
            raise ManifestError(
                f"manifest format {version} is not supported (expected {MANIFEST_FORMAT})"
            )
        models = [ModelManifest.from_dict(m) for m in raw.get("models", [])]
        return cls({m.name: m for m in models}, version, str(raw.get("updated", "")))

    def save(self, directory: str | Path) -> Path:
        """Writes ``<directory>/manifest.json`` (via a temporary file and a rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.updated = utc_now()
        path = directory / MANIFEST_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ExportManifest:
        """Reads a manifest file, or ``manifest.json`` inside a folder.

        Raises:
            ManifestError: the file is missing or malformed.
        """
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_FILE
        if not path.is_file():
            raise ManifestError(f"no export manifest at {path}")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(raw)

    def verify_files(self, directory: str | Path) -> None:
        """:meth:`ModelManifest.verify_files` of every model."""
        for model in self.models.values():
            model.verify_files(directory)


def file_checksums(base_dir: str | Path, files: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of ``files``, keyed by their path relative to ``base_dir`` (POSIX form)."""
    base = Path(base_dir).resolve()
    out: dict[str, str] = {}
    for f in files:
        path = Path(f).resolve()
        out[path.relative_to(base).as_posix()] = file_sha256(path)
    return out


# -- request validation ------------------------------------------------------------


def _first_hit(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def validate_request(model: ModelManifest, inputs: Mapping[str, np.ndarray]) -> None:
    """Checks one inference request against an exported model's manifest entry.

    Checks: input names (none missing, none unknown), dtypes (exact: no silent
    casts), ranks, fixed dimensions (``F`` and ``L`` of ``ids``, the dense
    width), one batch size shared by all inputs and not zero; ids are ``-1``
    (padding) or in ``[0, num_embeddings)`` of their feature, slots at or beyond
    a feature's ``max_len`` hold ``-1``; dense values are finite.

    Args:
        model: the model's manifest entry.
        inputs: input name -> numpy array.

    Raises:
        ManifestMismatchError: the first problem found, naming the input, the
            feature and the first offending position.

    Example:
        >>> validate_request(manifest["ranker"], {"dense": d, "ids": ids})  # doctest: +SKIP
    """
    where = model.name
    expected = [t.name for t in model.inputs]
    missing = [n for n in expected if n not in inputs]
    unknown = [n for n in inputs if n not in expected]
    if missing or unknown:
        raise ManifestMismatchError(
            f"{where}: inputs {sorted(inputs)} do not match the model's {expected} "
            f"(missing {missing}, unknown {unknown})"
        )
    batch: int | None = None
    for spec in model.inputs:
        array = inputs[spec.name]
        if not isinstance(array, np.ndarray):
            raise ManifestMismatchError(
                f"{where}: input {spec.name!r} must be a numpy array, got {type(array).__name__}"
            )
        if array.dtype != np.dtype(spec.dtype):
            raise ManifestMismatchError(
                f"{where}: input {spec.name!r} has dtype {array.dtype}, expected {spec.dtype}"
            )
        if array.ndim != len(spec.shape):
            raise ManifestMismatchError(
                f"{where}: input {spec.name!r} has rank {array.ndim} (shape {array.shape}), "
                f"expected rank {len(spec.shape)} (shape {spec.shape}, -1 = batch)"
            )
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
            if want != -1 and got != want:
                raise ManifestMismatchError(
                    f"{where}: input {spec.name!r} axis {axis} ({_axis_name(model, spec, axis)}) "
                    f"is {got}, expected {want}"
                )
        if batch is None:
            batch = int(array.shape[0])
        elif array.shape[0] != batch:
            raise ManifestMismatchError(
                f"{where}: inputs disagree on the batch size ({batch} vs {array.shape[0]} "
                f"in {spec.name!r})"
            )
    if not batch:
        raise ManifestMismatchError(f"{where}: empty batch (0 rows)")
    ids = inputs[model.ids_input]
    if model.list_ids_input is not None:
        # candidates per list: the same in every per-candidate input
        for spec in model.inputs:
            array = inputs[spec.name]
            if spec.name != model.list_ids_input and array.shape[1] != ids.shape[1]:
                raise ManifestMismatchError(
                    f"{where}: inputs disagree on the candidates per list ({ids.shape[1]} in "
                    f"{model.ids_input!r} vs {array.shape[1]} in {spec.name!r})"
                )
        ids = ids.reshape(-1, *ids.shape[2:])
        _check_ids(model, inputs[model.list_ids_input], model.list_ids_input,
                   model.list_feature_order)  # fmt: skip
    _check_ids(model, ids, model.ids_input, model.feature_order)
    if model.dense_input is not None:
        dense = inputs[model.dense_input]
        bad = ~np.isfinite(dense)
        if bad.any():
            raise ManifestMismatchError(
                f"{where}: input {model.dense_input!r} has {int(bad.sum())} NaN/inf values, "
                f"first at {_first_hit(bad)}"
            )


def _axis_name(model: ModelManifest, spec: TensorSpec, axis: int) -> str:
    if axis == 0:
        return "batch"
    # per candidate list, axis 1 of the per-candidate inputs is the candidates
    axis -= int(model.list_ids_input is not None and spec.name != model.list_ids_input)
    if axis == 0:
        return "candidates per list"
    if spec.name in (model.ids_input, model.list_ids_input):
        return "F = number of features" if axis == 1 else "L = ids per feature"
    if spec.name == model.dense_input and axis == 1:
        return "number of dense features"
    return f"axis {axis}"


def _check_ids(
    model: ModelManifest, ids: np.ndarray, name: str, feature_order: Sequence[str]
) -> None:
    """Checks ``[B, F, L]`` ids of the features ``feature_order`` (input ``name``)."""
    where = f"{model.name}: input {name!r}"
    below = ids < -1
    if below.any():
        b, f, s = _first_hit(below)
        raise ManifestMismatchError(
            f"{where}: {int(below.sum())} ids below -1 (only -1 marks padding), first at "
            f"[batch {b}, feature {feature_order[f]!r}, slot {s}]: {int(ids[b, f, s])}"
        )
    sizes = np.array([model.num_embeddings[f] for f in feature_order], dtype=np.int64)
    over = ids >= sizes[None, :, None]
    if over.any():
        b, f, s = _first_hit(over)
        feature = feature_order[f]
        count = int(over[:, f].sum())
        raise ManifestMismatchError(
            f"{where}: feature {feature!r} has ids >= its table size {int(sizes[f])} "
            f"({count} values, first at [batch {b}, slot {s}]: {int(ids[b, f, s])})"
        )
    lens = np.array([model.max_len[f] for f in feature_order], dtype=np.int64)
    beyond = (ids != -1) & (np.arange(ids.shape[2])[None, None, :] >= lens[None, :, None])
    if beyond.any():
        b, f, s = _first_hit(beyond)
        feature = feature_order[f]
        raise ManifestMismatchError(
            f"{where}: feature {feature!r} reads {int(lens[f])} ids but holds id "
            f"{int(ids[b, f, s])} at slot {s} (batch {b}); slots from {int(lens[f])} on must "
            "be -1, or the model would silently ignore them"
        )
