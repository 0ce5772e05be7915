"""ONNX exports: onnxruntime parity with the TorchRec models, plain ops, layouts, real data."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from recsys.data.movielens import load_ml100k
from recsys.data.splits import stratified_split
from recsys.export.manifest import ExportManifest, ManifestMismatchError, validate_request
from recsys.export.onnx_export import (
    FORBIDDEN_OPS,
    ExportError,
    export_onnx,
    export_ranker,
    export_two_tower,
    graph_op_counts,
    ranker_twin,
    time_ranker,
)
from recsys.export.twins import ItemTowerTwin, RankerTwin, UserTowerTwin, padded_to_kjt
from recsys.features.batching import JaggedArray, encode_features, make_kjt, to_padded_stack
from recsys.features.build import build_features
from recsys.features.schema import FeatureSchema, Role
from recsys.models.dlrm import Ranker, RankerConfig, build_ranker
from recsys.models.two_tower import TowerConfig, TwoTower, TwoTowerConfig
from recsys.recommend.two_stage import build_bag_ranker

TOL = 1e-5
REPO = Path(__file__).resolve().parents[2]

SCHEMA = FeatureSchema.from_dict(
    {
        "name": "export-test",
        "features": [
            {"name": "user_id", "kind": "categorical", "role": "user"},
            {"name": "recent", "kind": "sequence", "role": "user", "vocab_from": "item_id",
             "max_len": 6},
            {"name": "liked", "kind": "multi_hot", "role": "user", "vocab_from": "item_id",
             "max_len": 3},
            {"name": "activity", "kind": "dense", "role": "user"},
            {"name": "hour", "kind": "categorical", "role": "context",
             "vocab": {"policy": "identity", "size": 24}},
            {"name": "item_id", "kind": "categorical", "role": "item"},
            {"name": "genres", "kind": "multi_hot", "role": "item", "max_len": 4,
             "pooling": "sum", "embedding_dim": 8},
        ],
    }
)  # fmt: skip
SIZES = {"user_id": 30, "hour": 24, "item_id": 50, "genres": 12}
RANKER_FEATURES = ["item", "clicked", "device", "hour"]
RANKER_SIZES = [40, 40, 5, 24]


def _two_tower() -> TwoTower:
    config = TwoTowerConfig(
        embedding_dim=16, user_tower=TowerConfig((32, 16)), item_tower=TowerConfig((24, 16))
    )
    return TwoTower(SCHEMA, SIZES, config).eval()


def _ranker(arch: str = "dlrm") -> Ranker:
    config = RankerConfig(
        arch=arch,  # type: ignore[arg-type]
        embedding_dim=8,
        dense_arch_layer_sizes=(16, 8),
        over_arch_layer_sizes=(16, 8, 1),
        dcn_num_layers=2,
        dcn_low_rank_dim=4,
        shared_tables={"item_table": ("item", "clicked")},
    )
    return build_ranker(config, RANKER_FEATURES, RANKER_SIZES, num_dense=3).eval()


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _assert_plain_graph(path: Path) -> dict[str, int]:
    ops = graph_op_counts(onnx.load(str(path)))
    assert not set(ops) & FORBIDDEN_OPS, f"forbidden ops in {path}: {set(ops) & FORBIDDEN_OPS}"
    # Lookups are Gathers; bags of several ids pool with a MatMul.
    assert ops.get("Gather", 0) > 0 and ops.get("MatMul", 0) > 0
    return ops


def _embedding_lookups(path: Path) -> list[tuple[str, list[int | str], list[str]]]:
    """(table, output shape, consumer op types) of each Gather that reads a table."""
    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    tables = {t.name for t in model.graph.initializer if len(t.dims) == 2}
    shapes = {
        v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param
                 for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.value_info, *inferred.graph.output]
    }  # fmt: skip
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    return [
        (node.input[0], shapes[node.output[0]], consumers.get(node.output[0], []))
        for node in model.graph.node
        if node.op_type == "Gather" and node.input[0] in tables
    ]


# -- two-tower ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_tower_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[TwoTower, Path]:
    model = _two_tower()
    out = tmp_path_factory.mktemp("two_tower")
    export_two_tower(model, SCHEMA, out, model_version=3)
    return model, out


def test_two_tower_export_writes_files_and_manifest(
    two_tower_export: tuple[TwoTower, Path],
) -> None:
    _, out = two_tower_export
    manifest = ExportManifest.load(out)
    user, item = manifest["user_tower"], manifest["item_tower"]
    assert user.file == "user_tower.onnx" and (out / user.file).is_file()
    assert [(t.name, t.dtype, t.shape) for t in user.inputs] == [
        ("ids", "int64", (-1, 4, 6)),
        ("dense", "float32", (-1, 1)),
    ]
    assert [(t.name, t.shape) for t in user.outputs] == [("embeddings", (-1, 16))]
    assert user.feature_order == ["user_id", "recent", "liked", "hour"]
    assert user.max_len == {"user_id": 1, "recent": 6, "liked": 3, "hour": 1}
    assert user.num_embeddings == {"user_id": 30, "recent": 50, "liked": 50, "hour": 24}
    assert user.dense_input == "dense" and user.dense_features == ["activity"]
    assert item.dense_input is None and item.seq_len == 4
    assert user.model_version == item.model_version == 3
    assert user.schema_name == "export-test" and not user.external_data
    assert user.extra["inv_temperature"] == pytest.approx(20.0)  # 1 / default temperature 0.05
    assert user.extra["export_max_abs_diff"] <= TOL
    manifest.verify_files(out)
    for entry in (user, item):
        session = _session(out / entry.file)
        assert session.get_inputs()[0].shape[0] == "batch"
        assert session.get_inputs()[0].shape[1:] == list(entry.inputs[0].shape[1:])
        _assert_plain_graph(out / entry.file)


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_onnx_towers_match_torchrec(two_tower_export: tuple[TwoTower, Path], batch: int) -> None:
    model, out = two_tower_export
    for twin, name in ((UserTowerTwin(model), "user_tower"), (ItemTowerTwin(model), "item_tower")):
        inputs = twin.example_inputs(batch, seed=batch)
        ids = inputs[0]
        # Every feature has empty bags and bags filled up to its max_len.
        lengths = (ids >= 0).sum(dim=2)
        full = torch.tensor([twin.max_len[f] for f in twin.feature_names])
        if batch == 256:
            assert bool((lengths == 0).any(dim=0).all()), "every feature has empty bags"
            assert bool((lengths == full).any(dim=0).all()), "and bags filled to max_len"
        kjt = padded_to_kjt(ids, twin.feature_names, twin.max_len, keys=model.feature_names)
        dense = inputs[1] if len(inputs) > 1 else None
        with torch.no_grad():
            if name == "user_tower":
                expected = model.encode_users(kjt, dense)
            else:
                expected = model.encode_items(kjt, dense)
        feeds = {n: t.numpy() for n, t in zip(twin.input_names, inputs, strict=True)}
        got = _session(out / f"{name}.onnx").run(None, feeds)[0]
        diff = float(np.abs(got - expected.numpy()).max())
        assert got.shape == (batch, 16) and diff <= TOL, (name, batch, diff)


def test_sequences_longer_than_l_are_cut_to_the_last_ids(
    two_tower_export: tuple[TwoTower, Path],
) -> None:
    """Histories longer than L: to_padded_stack keeps the last L ids, and the ONNX
    tower equals TorchRec on histories cut the same way (as encode_features cuts them)."""
    model, out = two_tower_export
    twin = UserTowerTwin(model)
    gen = torch.Generator().manual_seed(5)
    batch, seq = 12, twin.max_len["recent"]
    history = [torch.randint(0, 50, (n,), generator=gen).numpy() for n in range(batch)]
    columns: dict[str, Any] = {
        "user_id": torch.randint(0, 30, (batch,), generator=gen).numpy(),
        "liked": [np.array([1, 2], dtype=np.int64)] * batch,
        "hour": torch.randint(0, 24, (batch,), generator=gen).numpy(),
    }
    padded = to_padded_stack(
        make_kjt({**columns, "recent": history}, twin.feature_names),
        twin.feature_names,
        twin.seq_len,
    )
    for b in range(batch):
        kept = padded[b, 1][padded[b, 1] >= 0].numpy()
        np.testing.assert_array_equal(kept, history[b][-seq:])
    empty = JaggedArray(np.empty(0, np.int64), np.zeros(batch + 1, np.int64))
    cut = make_kjt(
        {**columns, "recent": [h[-seq:] for h in history], "item_id": empty, "genres": empty},
        model.feature_names,
    )
    dense = torch.rand(batch, 1, generator=gen)
    with torch.no_grad():
        expected = model.encode_users(cut, dense).numpy()
    got = _session(out / "user_tower.onnx").run(
        None, {"ids": padded.numpy(), "dense": dense.numpy()}
    )[0]
    assert float(np.abs(got - expected).max()) <= TOL


# -- ranker ------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["dlrm", "dlrm_dcn"])
def test_onnx_ranker_matches_torchrec(tmp_path: Path, arch: str) -> None:
    ranker = _ranker(arch)
    bundle = export_ranker(ranker, RANKER_FEATURES, tmp_path, max_len={"clicked": 5})
    entry = bundle.entries["ranker"]
    assert entry.feature_order == RANKER_FEATURES and entry.seq_len == 5
    assert [t.name for t in entry.outputs] == ["logits", "probabilities"]
    session = _session(bundle.results["ranker"].model_file)
    twin = RankerTwin(ranker, max_len={"clicked": 5})
    ops = _assert_plain_graph(bundle.results["ranker"].model_file)
    assert ops.get("Sigmoid") == 1
    for batch in (1, 7, 256):
        dense, ids = twin.example_inputs(batch, seed=batch)
        validate_request(entry, {"dense": dense.numpy(), "ids": ids.numpy()})
        with torch.no_grad():
            expected = ranker(dense, padded_to_kjt(ids, RANKER_FEATURES, twin.max_len)).numpy()
        logits, probs = session.run(None, {"dense": dense.numpy(), "ids": ids.numpy()})
        assert logits.shape == probs.shape == (batch,)
        assert float(np.abs(logits - expected).max()) <= TOL
        assert float(np.abs(probs - 1 / (1 + np.exp(-expected))).max()) <= TOL


RANKER_SCHEMA = FeatureSchema.from_dict(
    {
        "name": "rank-mean",
        "features": [
            {"name": "item", "kind": "categorical", "role": "item"},
            {"name": "device", "kind": "categorical", "role": "context"},
            {"name": "clicked", "kind": "sequence", "role": "user", "vocab_from": "item",
             "max_len": 7},
            {"name": "tags", "kind": "multi_hot", "role": "item", "max_len": 3},
            {"name": "hour", "kind": "categorical", "role": "context"},
        ],
    }
)  # fmt: skip


def test_mean_pooled_ranker_gathers_each_feature_at_its_own_width(tmp_path: Path) -> None:
    names = ["item", "device", "clicked", "tags", "hour"]
    sizes = {"item": 40, "device": 5, "clicked": 40, "tags": 9, "hour": 24}
    config = RankerConfig(
        embedding_dim=8, dense_arch_layer_sizes=(16, 8), over_arch_layer_sizes=(16, 1)
    )
    ranker = build_bag_ranker(config, RANKER_SCHEMA, names, sizes, num_dense=3).eval()
    bundle = export_ranker(ranker, RANKER_SCHEMA, tmp_path)
    path = bundle.results["ranker"].model_file
    _assert_plain_graph(path)
    lookups = _embedding_lookups(path)
    assert all(isinstance(d, int) for _, shape, _ in lookups for d in shape[1:]), lookups
    # One Gather per (table, width): item shares clicked's table but reads 1 slot, so
    # 1 + 1 + 7 + 3 + 1 rows per example, not 7 + 1 + 7 + 3 + 1. Multi-id bags feed a
    # MatMul, never a Mul over [B, k, L, D].
    assert sorted(math.prod(int(d) for d in shape[1:-1]) for _, shape, _ in lookups) == [
        1,
        1,
        1,
        3,
        7,
    ]
    for table, shape, consumers in lookups:
        assert shape[0] == "batch" and shape[-1] == 8, table
        if len(shape) == 4:
            assert consumers == ["MatMul"], (table, consumers)
    session = _session(path)
    twin = RankerTwin(ranker, names, {f: RANKER_SCHEMA[f].max_len for f in names})
    for batch in (1, 7, 256):
        dense, ids = twin.example_inputs(batch, seed=batch)
        if batch == 7:
            ids[3] = -1  # one example with every bag empty
        kjt = padded_to_kjt(ids, names, twin.max_len)
        with torch.no_grad():
            expected = ranker(dense, kjt).numpy()
            eager = twin(dense, ids)[0].numpy()
        logits, _ = session.run(None, {"dense": dense.numpy(), "ids": ids.numpy()})
        assert float(np.abs(logits - expected).max()) <= TOL, batch
        assert float(np.abs(eager - expected).max()) <= TOL, batch


def test_a_per_list_ranker_reads_the_list_features_once_and_equals_torchrec(
    tmp_path: Path,
) -> None:
    names = ["item", "device", "clicked", "tags", "hour"]
    sizes = {"item": 40, "device": 5, "clicked": 40, "tags": 9, "hour": 24}
    config = RankerConfig(
        embedding_dim=8, dense_arch_layer_sizes=(16, 8), over_arch_layer_sizes=(16, 1)
    )
    ranker = build_bag_ranker(config, RANKER_SCHEMA, names, sizes, num_dense=3).eval()
    per_pair = export_ranker(ranker, RANKER_SCHEMA, tmp_path / "pairs")
    bundle = export_ranker(ranker, RANKER_SCHEMA, tmp_path / "lists", per_list=True)
    entry = bundle.entries["ranker"]
    # item features per candidate, the user's and the context's once per list
    assert (entry.feature_order, entry.list_feature_order) == (
        ["item", "tags"],
        ["device", "clicked", "hour"],
    )
    assert (entry.seq_len, entry.list_seq_len, entry.list_ids_input) == (3, 7, "list_ids")
    shapes = {t.name: t.shape for t in entry.inputs}
    assert shapes == {"dense": (-1, -1, 3), "ids": (-1, -1, 2, 3), "list_ids": (-1, 3, 7)}
    assert [t.shape for t in entry.outputs] == [(-1, -1), (-1, -1)]
    # item and clicked share one table: still one copy of its weights
    result = bundle.results["ranker"]
    assert result.parameter_bytes == per_pair.results["ranker"].parameter_bytes
    _assert_plain_graph(result.model_file)
    session = _session(result.model_file)
    twin = ranker_twin(ranker, entry)  # the twin with the entry's inputs
    assert twin.list_feature_names == entry.list_feature_order
    for lists, candidates in ((1, 1), (3, 5), (2, 200)):
        dense, ids, list_ids = twin.example_inputs(lists, seed=lists, candidates=candidates)
        list_ids[-1] = -1  # a list whose user-side bags are all empty
        flat_dense, flat_ids, order, lengths = twin.pair_inputs(dense, ids, list_ids)
        kjt = padded_to_kjt(flat_ids, order, lengths)
        with torch.no_grad():
            expected = ranker(flat_dense, kjt).numpy().reshape(lists, candidates)
        feeds = {"dense": dense.numpy(), "ids": ids.numpy(), "list_ids": list_ids.numpy()}
        validate_request(entry, feeds)
        logits, probs = session.run(None, feeds)
        assert logits.shape == probs.shape == (lists, candidates)
        assert float(np.abs(logits - expected).max()) <= TOL, (lists, candidates)
    # the manifest checks the per-list inputs too
    feeds["dense"] = feeds["dense"][:, :3]
    with pytest.raises(ManifestMismatchError, match="candidates per list"):
        validate_request(entry, feeds)
    feeds["dense"] = dense.numpy()
    feeds["list_ids"] = feeds["list_ids"].copy()
    feeds["list_ids"][0, 1, 0] = 40  # clicked: an id past its table
    with pytest.raises(ManifestMismatchError, match="'list_ids': feature 'clicked' has ids"):
        validate_request(entry, feeds)
    with pytest.raises(ValueError, match="needs the feature schema"):
        export_ranker(ranker, names, tmp_path / "names", per_list=True)
    # one list of 20 candidates, eager twin against onnxruntime and TorchRec
    latency = time_ranker(twin, result.model_file, 20, repeats=3, warmup=1, model=ranker)
    assert latency.n_candidates == 20 and latency.max_abs_diff <= TOL
    assert latency.torchrec_p50_ms is not None


def test_export_ranker_takes_order_and_max_len_from_a_schema(tmp_path: Path) -> None:
    schema = FeatureSchema.from_dict(
        {
            "name": "rank",
            "features": [
                {"name": "item", "kind": "categorical", "role": "item"},
                {"name": "clicked", "kind": "sequence", "role": "user", "max_len": 4},
                {"name": "device", "kind": "categorical", "role": "context"},
                {"name": "hour", "kind": "categorical", "role": "context"},
            ],
        }
    )
    bundle = export_ranker(_ranker(), schema, tmp_path, model_version=2, triton_layout=True)
    entry = bundle.entries["ranker"]
    assert entry.max_len == {"item": 1, "clicked": 4, "device": 1, "hour": 1}
    assert entry.file == "ranker/2/model.onnx" and (tmp_path / entry.file).is_file()
    assert entry.schema_name == "rank"


# -- external data and Triton layout ----------------------------------------------


@pytest.mark.parametrize("triton_layout", [False, True])
def test_forced_external_data_layouts(tmp_path: Path, triton_layout: bool) -> None:
    ranker = _ranker()
    target = tmp_path / ("ranker/1/model.onnx" if triton_layout else "ranker.onnx")
    twin = RankerTwin(ranker)
    result = export_onnx(
        twin,
        twin.example_inputs(8),
        target,
        twin.input_names,
        twin.output_names,
        triton_layout=triton_layout,
        external_data_threshold=0,
    )
    assert result.external_data and result.path == target
    if triton_layout:
        assert target.is_dir(), "Triton wants a folder named model.onnx"
        assert sorted(p.name for p in target.iterdir()) == ["model.onnx", "model.onnx.data"]
        assert result.model_file == target / "model.onnx"
    else:
        assert target.is_file() and (tmp_path / "ranker.onnx.data").is_file()
    data_file = result.files[1]
    assert data_file.stat().st_size >= result.parameter_bytes > 0
    graph = onnx.load(str(result.model_file), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer), (
        "weights left in the graph file"
    )
    # The model loads from its own folder and still matches PyTorch.
    dense, ids = twin.example_inputs(7, seed=1)
    logits, _ = _session(result.model_file).run(None, {"dense": dense.numpy(), "ids": ids.numpy()})
    expected = ranker(dense, padded_to_kjt(ids, twin.feature_names, twin.max_len))
    assert float(np.abs(logits - expected.detach().numpy()).max()) <= TOL
    # Exporting again over the same target replaces it, and without external data
    # the stale .data file goes away.
    again = export_onnx(twin, twin.example_inputs(8), target, twin.input_names, twin.output_names)
    assert not again.external_data and target.is_file()
    assert not (tmp_path / "ranker.onnx.data").exists()


def test_two_tower_triton_layout_with_external_data(tmp_path: Path) -> None:
    bundle = export_two_tower(
        _two_tower(), None, tmp_path, triton_layout=True, external_data_threshold=0
    )
    user = bundle.manifest["user_tower"]
    assert user.file == "user_tower/1/model.onnx" and user.external_data
    assert sorted(user.checksums) == [
        "user_tower/1/model.onnx/model.onnx",
        "user_tower/1/model.onnx/model.onnx.data",
    ]
    bundle.manifest.verify_files(tmp_path)


# -- the checks catch what they should ---------------------------------------------


class _EmbeddingBagModel(nn.Module):
    """What the twins avoid: nn.EmbeddingBag on [B, L] ids exports as a per-bag Loop."""

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(20, 4, mode="mean")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bag(ids)


def test_export_refuses_a_graph_with_a_loop(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="Loop"):
        export_onnx(
            _EmbeddingBagModel(),
            (torch.randint(0, 20, (4, 5)),),
            tmp_path / "bag.onnx",
            ["ids"],
            ["pooled"],
        )


def test_export_rejects_mismatched_names(tmp_path: Path) -> None:
    twin = RankerTwin(_ranker())
    with pytest.raises(ValueError, match="input names"):
        export_onnx(twin, twin.example_inputs(2), tmp_path / "r.onnx", ["ids"], ["a", "b"])
    with pytest.raises(ValueError, match="output names"):
        export_onnx(twin, twin.example_inputs(2), tmp_path / "r.onnx", ["d", "i"], ["logits"])


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_plain_graph(tmp_path: Path) -> None:
    ranker = _ranker("dlrm_dcn")
    twin = RankerTwin(ranker, max_len={"clicked": 3})
    result = export_onnx(
        twin,
        twin.example_inputs(8),
        tmp_path / "ranker.onnx",
        twin.input_names,
        twin.output_names,
        opset=18,
        exporter="dynamo",
    )
    _assert_plain_graph(result.model_file)
    session = _session(result.model_file)
    for batch in (1, 7, 256):
        dense, ids = twin.example_inputs(batch, seed=batch)
        logits, _ = session.run(None, {"dense": dense.numpy(), "ids": ids.numpy()})
        expected = ranker(dense, padded_to_kjt(ids, twin.feature_names, twin.max_len))
        assert float(np.abs(logits - expected.detach().numpy()).max()) <= TOL


# -- latency helper ----------------------------------------------------------------


def test_time_ranker_measures_both_engines(tmp_path: Path) -> None:
    ranker = _ranker()
    bundle = export_ranker(ranker, RANKER_FEATURES, tmp_path)
    twin = RankerTwin(ranker)
    report = time_ranker(
        twin, bundle.results["ranker"].model_file, n_candidates=200, repeats=20, warmup=3,
        model=ranker,
    )  # fmt: skip
    assert report.n_candidates == 200 and report.repeats == 20
    assert report.eager_p50_ms > 0 and report.onnxruntime_p50_ms > 0
    assert report.torchrec_p50_ms is not None and report.torchrec_p50_ms > 0
    assert report.max_abs_diff <= TOL


# -- real data: MovieLens-100K -----------------------------------------------------


def test_ml100k_towers_onnx_match_torchrec_on_real_features(
    ml100k_dir: Path, tmp_path: Path
) -> None:
    schema = FeatureSchema.from_yaml(REPO / "configs" / "schema" / "ml100k.yaml")
    data = load_ml100k(ml100k_dir)
    train, test = stratified_split(data.interactions, 0.75, "item", 42)
    tables = build_features(data, (train, test), schema)
    vocabs = tables.vocabs
    assert vocabs is not None
    config = TwoTowerConfig(
        embedding_dim=32, user_tower=TowerConfig((64, 32)), item_tower=TowerConfig((64, 32))
    )
    model = TwoTower(schema, vocabs.num_embeddings(), config).eval()
    bundle = export_two_tower(model, schema, tmp_path, vocabs=vocabs)
    user_entry, item_entry = bundle.manifest["user_tower"], bundle.manifest["item_tower"]
    versions = vocabs.versions()
    assert user_entry.vocab_versions["user_recent_items"] == versions["item_id"]
    assert user_entry.vocab_versions["user_id"] == versions["user_id"]
    assert user_entry.seq_len == 50 and item_entry.seq_len == 6

    for entry, frame, roles, encode in (
        (user_entry, tables.users, (Role.USER, Role.CONTEXT), model.encode_users),
        (item_entry, tables.items, (Role.ITEM,), model.encode_items),
    ):
        features = schema.by_role(*roles)
        others = [f for f in model.feature_names if f not in entry.feature_order]
        encoded = encode_features(
            frame, features, vocabs, empty_features=others, key_order=model.feature_names
        )
        kjt = encoded.batch(slice(0, len(encoded))).sparse
        ids = to_padded_stack(kjt, entry.feature_order, entry.seq_len).numpy()
        validate_request(entry, {"ids": ids})
        got = _session(tmp_path / entry.file).run(None, {"ids": ids})[0]
        with torch.no_grad():
            expected = encode(kjt).numpy()
        assert got.shape == (len(frame), 32)
        assert float(np.abs(got - expected).max()) <= TOL, entry.name
        lengths = (ids >= 0).sum(axis=2)
        if entry.name == "user_tower":
            recent = lengths[:, entry.feature_order.index("user_recent_items")]
            assert recent.max() == 50 and recent.min() < 50  # full and partial histories
        # An id past the table is refused before it reaches onnxruntime.
        bad = ids.copy()
        bad[0, 0, 0] = entry.num_embeddings[entry.feature_order[0]]
        with pytest.raises(ManifestMismatchError, match="table size"):
            validate_request(entry, {"ids": bad})
