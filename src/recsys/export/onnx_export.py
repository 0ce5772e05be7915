"""ONNX export of the padded twins, checked, with a manifest, in plain or Triton layout.

:func:`export_onnx` exports one module with ``torch.onnx.export`` (the TorchScript
exporter by default: it turns the padded bags into plain Gather / MatMul;
the dynamo exporter is available with ``exporter="dynamo"``), with a dynamic batch
axis only (``F``, ``L`` and the dense width stay fixed, so Triton's dynamic
batcher can merge requests). It then

* runs ``onnx.checker`` on the written model;
* refuses graphs holding control-flow or sequence ops (``Loop``, ``Scan``,
  ``SequenceAt``, ...): they are slow in onnxruntime and break TensorRT;
* runs the model in onnxruntime on the example inputs and compares with PyTorch.

Weights of :data:`EXTERNAL_DATA_THRESHOLD` bytes or more (protobuf cannot hold a
2 GiB model) go to an external data file: ``model.onnx`` + ``model.onnx.data``.
With ``triton_layout=True`` such a model is written as a FOLDER named after the
target (``.../1/model.onnx/``) holding both files, which is how a Triton model
repository stores a multi-file ONNX model.

:func:`export_two_tower` and :func:`export_ranker` build the twins, export them
and merge their entries into ``manifest.json`` (see :mod:`recsys.export.manifest`).
:func:`time_ranker` measures PyTorch eager vs onnxruntime latency of scoring a
candidate list.

Example:
    >>> result = export_two_tower(model, schema, "exports/ml100k", vocabs=vocabs)  # doctest: +SKIP
    >>> result.manifest["user_tower"].inputs  # doctest: +SKIP
    [TensorSpec(name='ids', dtype='int64', shape=(-1, 7, 50))]
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import torch
from torch import nn
from torchrec import KeyedJaggedTensor
from torchrec.models.dlrm import DLRM
from tqdm import tqdm

from recsys.export.manifest import (
    MANIFEST_FILE,
    ExportManifest,
    ManifestError,
    ModelManifest,
    TensorSpec,
    file_checksums,
)
from recsys.export.twins import ItemTowerTwin, RankerTwin, UserTowerTwin, padded_to_kjt
from recsys.features.schema import FeatureSchema, Role
from recsys.features.vocab import VocabularySet
from recsys.models.dlrm import Ranker
from recsys.models.retrieval import RetrievalModel

DEFAULT_OPSET = 17
"""ONNX opset of exports (onnxruntime >= 1.14 and Triton 23.x+ run it)."""

EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2
"""Weight bytes from which the weights go to an external data file (2 GiB minus headroom
for the graph itself: a serialized protobuf cannot exceed 2 GiB)."""

FORBIDDEN_OPS: frozenset[str] = frozenset(
    {
        "Loop",
        "Scan",
        "If",
        "SequenceAt",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceErase",
        "SequenceInsert",
        "SequenceLength",
        "SequenceMap",
        "SplitToSequence",
        "ConcatFromSequence",
    }
)
"""Ops an exported twin must not contain (per-bag loops, sequences, control flow)."""

Exporter = Literal["torchscript", "dynamo"]


class ExportError(RuntimeError):
    """An export failed a check (checker, forbidden ops, parity)."""


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and measured.

    Attributes:
        path: the deployable target: the ``.onnx`` file, or (Triton layout with
            external data) the folder named ``model.onnx``.
        model_file: the ONNX file to hand to onnxruntime.
        files: every file written (model and external data).
        external_data: weights sit in ``<model_file>.data``.
        inputs: input tensors (``-1`` = batch axis).
        outputs: output tensors.
        opset: ONNX opset.
        op_counts: node count per op type (subgraphs included).
        parameter_bytes: bytes of all initializers.
        max_abs_diff: largest |onnxruntime - PyTorch| over all outputs on the
            example inputs (None when the check was skipped).
        exporter: ``"torchscript"`` or ``"dynamo"``.
    """

    path: Path
    model_file: Path
    files: list[Path]
    external_data: bool
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int
    op_counts: dict[str, int]
    parameter_bytes: int
    max_abs_diff: float | None
    exporter: Exporter


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.detach().cpu().numpy().dtype) if t.numel() else str(t.dtype).split(".")[-1]


Axes = Mapping[str, Mapping[int, str]]
"""Free axes of an ONNX graph: tensor name -> {axis: dimension name}."""


def _spec(name: str, t: torch.Tensor, axes: Axes | None) -> TensorSpec:
    free = (axes or {}).get(name, {})
    shape = tuple(-1 if axis in free else int(d) for axis, d in enumerate(t.shape))
    return TensorSpec(name, _dtype_name(t), shape)


def _free_axes(
    twin: nn.Module, input_names: Sequence[str], output_names: Sequence[str], dynamic_batch: bool
) -> Axes | None:
    """The twin's own ``dynamic_axes`` where it has them, else axis 0 of every tensor."""
    if not dynamic_batch:
        return None
    own = getattr(twin, "dynamic_axes", None)
    if own is not None:
        return cast(Axes, own)
    return {n: {0: "batch"} for n in [*input_names, *output_names]}


def _as_tuple(out: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def graph_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type in the graph and every subgraph (If/Loop bodies)."""
    counts: Counter[str] = Counter()
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for node in graph.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                stack.extend(attr.graphs)
    return dict(counts)


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return int(onnx.numpy_helper.to_array(tensor).nbytes)


def _remove_target(path: Path) -> None:
    """Removes a previous export at ``path`` (the file, or the Triton folder's own files)."""
    if path.is_dir():
        for name in (path.name, f"{path.name}.data"):
            (path / name).unlink(missing_ok=True)
        path.rmdir()  # fails, on purpose, when the folder holds anything else
    else:
        path.unlink(missing_ok=True)
        Path(f"{path}.data").unlink(missing_ok=True)


def _torch_export(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    axes: Axes | None,
    opset: int,
    exporter: Exporter,
) -> None:
    if exporter == "torchscript":
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo; it is kept
            # because it exports this graph faster and to the same plain ops.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            # DLRM's interaction indexes with its constant, non-negative triu indices;
            # the warning is about negative indices (and parity is checked below).
            warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning)
            torch.onnx.export(
                module,
                inputs,
                str(path),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={n: dict(a) for n, a in axes.items()} if axes else None,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    elif exporter == "dynamo":
        dims: dict[str, Any] = {}
        shapes = None
        if axes is not None:
            shapes = tuple(
                {a: dims.setdefault(d, torch.export.Dim(d, min=1)) for a, d in axes[n].items()}
                for n in input_names
            )
        torch.onnx.export(
            module,
            inputs,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=shapes,
            opset_version=opset,
            dynamo=True,
            external_data=True,
            verbose=False,
        )
    else:
        raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")


def export_onnx(
    twin: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    *,
    triton_layout: bool = False,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
    exporter: Exporter = "torchscript",
    check_parity: bool = True,
    atol: float = 1e-5,
) -> ExportResult:
    """Exports a module taking fixed-shape tensors to ONNX and checks the result.

    Args:
        twin: the module (a twin from :mod:`recsys.export.twins`); put in eval mode.
        example_inputs: one example of each input, in forward order (batch
            axis first).
        path: target, e.g. ``out/user_tower.onnx`` or ``repo/user_tower/1/model.onnx``.
        input_names: ONNX names of the inputs.
        output_names: ONNX names of the outputs.
        dynamic_batch: make axis 0 of every input and output dynamic (or the
            twin's own ``dynamic_axes`` where it has them).
        opset: ONNX opset.
        triton_layout: with external data, write ``path`` as a folder holding
            ``model.onnx`` and ``model.onnx.data`` (Triton's multi-file ONNX
            layout); otherwise the two files sit side by side.
        external_data_threshold: weight bytes from which external data is used
            (default just under 2 GiB; 0 forces it).
        exporter: ``"torchscript"`` (default) or ``"dynamo"``.
        check_parity: run onnxruntime on ``example_inputs`` and compare.
        atol: largest allowed absolute difference in that comparison.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ExportError: the checker fails, a forbidden op appears, or the parity
            check exceeds ``atol``.

    Example:
        >>> twin = RankerTwin(ranker)  # doctest: +SKIP
        >>> export_onnx(twin, twin.example_inputs(8), "ranker.onnx",
        ...             twin.input_names, twin.output_names)  # doctest: +SKIP
    """
    path = Path(path)
    inputs = tuple(example_inputs)
    if len(input_names) != len(inputs):
        raise ValueError(f"{len(input_names)} input names for {len(inputs)} example inputs")
    axes = _free_axes(twin, input_names, output_names, dynamic_batch)
    twin.eval()
    with torch.no_grad():
        expected = _as_tuple(twin(*inputs))
    if len(output_names) != len(expected):
        raise ValueError(f"{len(output_names)} output names for {len(expected)} outputs")

    with tempfile.TemporaryDirectory(prefix="recsys-onnx-") as tmp:
        raw_path = Path(tmp) / "model.onnx"
        with torch.no_grad():
            _torch_export(twin, inputs, raw_path, input_names, output_names, axes, opset, exporter)
        model = onnx.load(str(raw_path), load_external_data=True)

    parameter_bytes = sum(_tensor_bytes(t) for t in model.graph.initializer)
    external = parameter_bytes >= external_data_threshold
    if path.exists():
        _remove_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external and triton_layout:
        path.mkdir()
        model_file = path / "model.onnx"
    else:
        model_file = path
    data_name = f"{model_file.name}.data"
    if external:
        onnx.save_model(
            model,
            str(model_file),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=0,
        )
    else:
        onnx.save_model(model, str(model_file))
    files = [model_file] + ([model_file.parent / data_name] if external else [])

    try:
        onnx.checker.check_model(str(model_file), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{model_file}: onnx.checker failed: {e}") from e
    op_counts = graph_op_counts(model)
    forbidden = sorted(set(op_counts) & FORBIDDEN_OPS)
    if forbidden:
        raise ExportError(
            f"{model_file}: the graph holds {forbidden}; exported twins must use plain "
            "Gather/MatMul (an nn.EmbeddingBag or a KJT slipped into the module?)"
        )

    max_diff: float | None = None
    if check_parity:
        session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(input_names, inputs, strict=True)}
        got = session.run(list(output_names), feeds)
        max_diff = max(
            float(np.max(np.abs(g - e.detach().cpu().numpy()), initial=0.0))
            for g, e in zip(got, expected, strict=True)
        )
        if not max_diff <= atol:
            raise ExportError(
                f"{model_file}: onnxruntime differs from PyTorch by {max_diff:.3g} > {atol:g}"
            )

    return ExportResult(
        path=path,
        model_file=model_file,
        files=files,
        external_data=external,
        inputs=[_spec(n, t, axes) for n, t in zip(input_names, inputs, strict=True)],
        outputs=[_spec(n, t, axes) for n, t in zip(output_names, expected, strict=True)],
        opset=opset,
        op_counts=op_counts,
        parameter_bytes=parameter_bytes,
        max_abs_diff=max_diff,
        exporter=exporter,
    )


# -- manifest entries --------------------------------------------------------------


def _vocab_versions(
    vocabs: VocabularySet | None, features: Sequence[str], num_embeddings: Mapping[str, int]
) -> dict[str, str]:
    if vocabs is None:
        return {}
    versions = vocabs.versions()
    out: dict[str, str] = {}
    for f in features:
        try:
            vocab = vocabs[f]
        except KeyError:
            raise ManifestError(f"the vocabularies have no feature {f!r}") from None
        if vocab.num_embeddings > num_embeddings[f]:
            raise ManifestError(
                f"feature {f!r}: its vocabulary has {vocab.num_embeddings} rows but the "
                f"model's table only {num_embeddings[f]} (model trained on older vocabularies?)"
            )
        out[f] = versions[vocabs.owner(f)]
    return out


def model_manifest(
    name: str,
    result: ExportResult,
    twin: UserTowerTwin | ItemTowerTwin | RankerTwin,
    base_dir: str | Path,
    *,
    vocabs: VocabularySet | None = None,
    schema: FeatureSchema | None = None,
    model_version: int = 1,
    extra: Mapping[str, Any] | None = None,
) -> ModelManifest:
    """The manifest entry of an exported twin.

    Args:
        name: model name.
        result: what :func:`export_onnx` returned.
        twin: the exported twin (feature order, ``max_len``, table sizes).
        base_dir: the folder the manifest sits in (paths are relative to it).
        vocabs: vocabularies whose versions are recorded (all features must have one).
        schema: the feature schema (its name and version are recorded).
        model_version: integer model version.
        extra: further facts to record.
    """
    base = Path(base_dir).resolve()
    dense_input = "dense" if "dense" in [t.name for t in result.inputs] else None
    dense_features = list(getattr(twin, "dense_names", []))
    info: dict[str, Any] = {
        "exporter": result.exporter,
        "parameter_bytes": result.parameter_bytes,
        "export_max_abs_diff": result.max_abs_diff,
        "op_counts": result.op_counts,
    }
    info.update(extra or {})
    return ModelManifest(
        name=name,
        file=result.path.resolve().relative_to(base).as_posix(),
        inputs=result.inputs,
        outputs=result.outputs,
        feature_order=list(twin.feature_names),
        max_len=twin.max_len,
        seq_len=twin.seq_len,
        num_embeddings=twin.num_embeddings,
        ids_input="ids",
        list_ids_input="list_ids" if getattr(twin, "per_list", False) else None,
        list_feature_order=list(getattr(twin, "list_feature_names", [])),
        list_seq_len=int(getattr(twin, "list_seq_len", 0)),
        dense_input=dense_input,
        dense_features=dense_features,
        vocab_versions=_vocab_versions(vocabs, list(twin.max_len), twin.num_embeddings),
        model_version=int(model_version),
        checksums=file_checksums(base, result.files),
        schema_name=schema.name if schema is not None else "",
        schema_version=schema.version if schema is not None else 0,
        opset=result.opset,
        external_data=result.external_data,
        extra=info,
    )


def _target(out_dir: Path, name: str, model_version: int, triton_layout: bool) -> Path:
    if triton_layout:
        return out_dir / name / str(model_version) / "model.onnx"
    return out_dir / f"{name}.onnx"


def _merge_manifest(out_dir: Path, entries: Iterable[ModelManifest]) -> ExportManifest:
    path = out_dir / MANIFEST_FILE
    manifest = ExportManifest.load(path) if path.is_file() else ExportManifest()
    manifest.add(*entries)
    manifest.save(out_dir)
    return manifest


@dataclass
class ExportBundle:
    """Models exported together and the manifest they were merged into.

    Attributes:
        results: per model name, the :class:`ExportResult`.
        entries: per model name, its :class:`ModelManifest`.
        manifest: the whole manifest after the merge.
        manifest_path: ``<out_dir>/manifest.json``.
    """

    results: dict[str, ExportResult]
    entries: dict[str, ModelManifest]
    manifest: ExportManifest
    manifest_path: Path
    paths: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.paths = {name: r.path for name, r in self.results.items()}


def export_two_tower(
    model: RetrievalModel,
    schema: FeatureSchema | None,
    out_dir: str | Path,
    *,
    vocabs: VocabularySet | None = None,
    model_version: int = 1,
    names: tuple[str, str] = ("user_tower", "item_tower"),
    triton_layout: bool = False,
    opset: int = DEFAULT_OPSET,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
    exporter: Exporter = "torchscript",
    example_batch: int = 8,
) -> ExportBundle:
    """Exports both towers of a two-tower model and writes their manifest entries.

    Plain layout: ``<out_dir>/user_tower.onnx``, ``<out_dir>/item_tower.onnx``;
    Triton layout: ``<out_dir>/<name>/<model_version>/model.onnx``. Either way
    ``<out_dir>/manifest.json`` receives (or updates) both entries.

    Args:
        model: the trained model (weights are copied into twins).
        schema: the feature schema (defaults to ``model.schema``); recorded in the
            manifest; every tower feature must be in it.
        out_dir: the export folder.
        vocabs: vocabularies whose versions are recorded.
        model_version: integer version.
        names: model names of the user and the item tower.
        triton_layout: write a Triton model repository layout.
        opset: ONNX opset.
        external_data_threshold: see :func:`export_onnx`.
        exporter: see :func:`export_onnx`.
        example_batch: rows of the random example batch used to trace and check.

    Returns:
        An :class:`ExportBundle`.

    Example:
        >>> bundle = export_two_tower(model, schema, "out", vocabs=vocabs)  # doctest: +SKIP
        >>> bundle.paths["user_tower"]  # doctest: +SKIP
        PosixPath('out/user_tower.onnx')
    """
    schema = schema if schema is not None else model.schema
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, ExportResult] = {}
    entries: dict[str, ModelManifest] = {}
    twins: list[UserTowerTwin | ItemTowerTwin] = [UserTowerTwin(model), ItemTowerTwin(model)]
    for name, twin in zip(names, twins, strict=True):
        absent = [f for f in twin.feature_names if f not in schema]
        if absent:
            raise ManifestError(f"{name}: features {absent} are not in schema {schema.name!r}")
        result = export_onnx(
            twin,
            twin.example_inputs(example_batch),
            _target(out, name, model_version, triton_layout),
            twin.input_names,
            twin.output_names,
            opset=opset,
            triton_layout=triton_layout,
            external_data_threshold=external_data_threshold,
            exporter=exporter,
        )
        results[name] = result
        entries[name] = model_manifest(
            name,
            result,
            twin,
            out,
            vocabs=vocabs,
            schema=schema,
            model_version=model_version,
            # Scores are dot products of the two outputs times this (ranking ignores it).
            extra={"inv_temperature": float(model.inv_temperature.detach())},
        )
    manifest = _merge_manifest(out, entries.values())
    return ExportBundle(results, entries, manifest, out / MANIFEST_FILE)


def export_ranker(
    model: Ranker | DLRM,
    features: FeatureSchema | Sequence[str],
    out_dir: str | Path,
    *,
    max_len: int | Mapping[str, int] | None = None,
    vocabs: VocabularySet | None = None,
    model_version: int = 1,
    name: str = "ranker",
    triton_layout: bool = False,
    opset: int = DEFAULT_OPSET,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
    exporter: Exporter = "torchscript",
    example_batch: int = 8,
    per_list: bool = False,
) -> ExportBundle:
    """Exports a DLRM ranker (``RankerTwin``: inputs ``dense``, ``ids`` and, per
    list, ``list_ids``; outputs ``logits``, ``probabilities``) and writes its
    manifest entry.

    Args:
        model: a :class:`~recsys.models.dlrm.Ranker` or a TorchRec ``DLRM``.
        features: the feature schema (the model's features in the model's order,
            ``max_len`` from the schema) or the feature names in input order.
        out_dir: the export folder.
        max_len: ids per feature; overrides the schema; default 1 without a schema.
        vocabs: vocabularies whose versions are recorded.
        model_version: integer version.
        name: model name.
        triton_layout: write ``<out_dir>/<name>/<model_version>/model.onnx``.
        opset: ONNX opset.
        external_data_threshold: see :func:`export_onnx`.
        exporter: see :func:`export_onnx`.
        example_batch: rows (per list: lists) of the random example batch.
        per_list: the features that are not the item's (user, context and request
            features: the same for every candidate of a request) enter once per
            candidate list (``RankerTwin``'s per-list layout); needs a schema.

    Returns:
        An :class:`ExportBundle` with one model.
    """
    schema: FeatureSchema | None = None
    lengths: int | Mapping[str, int]
    if isinstance(features, FeatureSchema):
        schema = features
        names = list(model.feature_names) if isinstance(model, Ranker) else None
        if names is None:
            names = [f.name for f in schema.sparse() if f.name in _dlrm_features(model)]
        absent = [f for f in names if f not in schema]
        if absent:
            raise ManifestError(f"{name}: features {absent} are not in schema {schema.name!r}")
        lengths = {f: schema[f].max_len for f in names}
    else:
        names = list(features)
        lengths = 1
    if max_len is not None:
        if isinstance(max_len, int):
            lengths = max_len
        else:
            base = dict.fromkeys(names, 1) if isinstance(lengths, int) else dict(lengths)
            base.update(max_len)
            lengths = base
    listed: list[str] = []
    if per_list:
        if schema is None:
            raise ValueError("per_list needs the feature schema (which features are the item's)")
        listed = [f for f in names if schema[f].role is not Role.ITEM]
    twin = RankerTwin(model, names, lengths, list_features=listed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = export_onnx(
        twin,
        twin.example_inputs(example_batch),
        _target(out, name, model_version, triton_layout),
        twin.input_names,
        twin.output_names,
        opset=opset,
        triton_layout=triton_layout,
        external_data_threshold=external_data_threshold,
        exporter=exporter,
    )
    entry = model_manifest(
        name, result, twin, out, vocabs=vocabs, schema=schema, model_version=model_version
    )
    manifest = _merge_manifest(out, [entry])
    return ExportBundle({name: result}, {name: entry}, manifest, out / MANIFEST_FILE)


def ranker_twin(model: Ranker | DLRM, entry: ModelManifest) -> RankerTwin:
    """The twin of ``model`` with the inputs of an exported ranker's manifest entry
    (its feature orders, ``max_len`` and layout: per pair or per candidate list).

    Example:
        >>> entry = ExportManifest.load("bundle/export")["ranker"]  # doctest: +SKIP
        >>> twin = ranker_twin(ranker, entry)  # doctest: +SKIP
    """
    names = [*entry.feature_order, *entry.list_feature_order]
    return RankerTwin(model, names, entry.max_len, list_features=entry.list_feature_order)


def _dlrm_features(model: Ranker | DLRM) -> list[str]:
    dlrm = model.dlrm if isinstance(model, Ranker) else model
    return list(dlrm.sparse_arch.sparse_feature_names)


# -- latency -----------------------------------------------------------------------


@dataclass
class RankerLatency:
    """Latency of scoring one candidate list (milliseconds per call).

    Attributes:
        n_candidates: rows per call.
        repeats: timed calls per engine (after warm-up).
        threads: intra-op threads of both engines.
        eager_p50_ms: PyTorch eager twin, median.
        eager_mean_ms: PyTorch eager twin, mean.
        onnxruntime_p50_ms: onnxruntime (CPU provider), median.
        onnxruntime_mean_ms: onnxruntime, mean.
        torchrec_p50_ms: the TorchRec model on a prebuilt KJT, median (if given).
        torchrec_mean_ms: same, mean.
        max_abs_diff: largest |onnxruntime - eager| of the probabilities.
    """

    n_candidates: int
    repeats: int
    threads: int
    eager_p50_ms: float
    eager_mean_ms: float
    onnxruntime_p50_ms: float
    onnxruntime_mean_ms: float
    torchrec_p50_ms: float | None = None
    torchrec_mean_ms: float | None = None
    max_abs_diff: float = 0.0


def _interleaved(engines: Mapping[str, Any], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call of each engine, timed in turns (one call of each per round),
    so that load from other processes hits all engines alike."""
    for fn in engines.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in tqdm(range(repeats), desc="time_ranker", leave=False, mininterval=2.0):
        for name, fn in engines.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def time_ranker(
    twin: RankerTwin,
    onnx_path: str | Path,
    n_candidates: int = 200,
    repeats: int = 200,
    *,
    warmup: int = 20,
    threads: int = 1,
    model: Ranker | None = None,
    seed: int = 0,
) -> RankerLatency:
    """PyTorch eager vs onnxruntime latency of scoring ``n_candidates`` rows in one call.

    Both engines get the same random valid inputs (``twin.example_inputs``) and the
    same number of intra-op threads; input tensors are built once, outside the
    timing, and the engines run in turns (one call each per round) so that other
    load on the machine affects them alike. With ``model`` the TorchRec ranker is
    timed too, on a prebuilt KJT.

    Args:
        twin: the ranker twin.
        onnx_path: its exported model file.
        n_candidates: rows per call (candidates of one request).
        repeats: timed calls per engine.
        warmup: untimed calls first.
        threads: intra-op threads of each engine. Default 1: the latency of one
            request on one core, which stays meaningful on a busy machine (with 2
            threads on 2 shared cores, PyTorch's OpenMP threads measured 20-100x
            slower under load from other processes).
        model: the source TorchRec ranker, to time as well.
        seed: seed of the inputs.

    Returns:
        A :class:`RankerLatency`.

    Example:
        >>> time_ranker(twin, "exports/ranker.onnx", n_candidates=200)  # doctest: +SKIP
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    if twin.per_list:
        inputs = twin.example_inputs(1, seed=seed, candidates=n_candidates)
        flat_dense, flat_ids, names, lengths = twin.pair_inputs(*inputs)
    else:
        inputs = twin.example_inputs(n_candidates, seed=seed)
        flat_dense, flat_ids = inputs
        names, lengths = twin.feature_names, twin.max_len
    feeds = {n: t.numpy() for n, t in zip(twin.input_names, inputs, strict=True)}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    twin.eval()
    engines: dict[str, Any] = {
        "eager": lambda: twin(*inputs),
        "onnxruntime": lambda: session.run(None, feeds),
    }
    if model is not None:
        model.eval()
        kjt: KeyedJaggedTensor = padded_to_kjt(flat_ids, names, lengths)
        engines["torchrec"] = lambda: model(flat_dense, kjt)
    try:
        with torch.inference_mode():
            eager_probs = twin(*inputs)[1].numpy()
            times = _interleaved(engines, repeats, warmup)
    finally:
        torch.set_num_threads(previous)
    onnx_probs = session.run(["probabilities"], feeds)[0]
    eager, ort_times = times["eager"], times["onnxruntime"]
    torchrec = times.get("torchrec")
    return RankerLatency(
        n_candidates=n_candidates,
        repeats=repeats,
        threads=threads,
        eager_p50_ms=statistics.median(eager),
        eager_mean_ms=statistics.fmean(eager),
        onnxruntime_p50_ms=statistics.median(ort_times),
        onnxruntime_mean_ms=statistics.fmean(ort_times),
        torchrec_p50_ms=statistics.median(torchrec) if torchrec else None,
        torchrec_mean_ms=statistics.fmean(torchrec) if torchrec else None,
        max_abs_diff=float(np.max(np.abs(onnx_probs - eager_probs))),
    )


__all__ = [
    "DEFAULT_OPSET",
    "EXTERNAL_DATA_THRESHOLD",
    "FORBIDDEN_OPS",
    "ExportBundle",
    "ExportError",
    "ExportResult",
    "RankerLatency",
    "export_onnx",
    "export_ranker",
    "export_two_tower",
    "graph_op_counts",
    "model_manifest",
    "time_ranker",
]
