"""IndexConfig validation, dict round trip, automatic nlist and device resolution."""

from __future__ import annotations

import json
from typing import Any

import pytest

from recsys.index import (
    Device,
    GpuUnavailableError,
    IndexConfig,
    IndexKind,
    auto_nlist,
    gpu_available,
    gpu_unavailable_reason,
)
from recsys.index.device import resolve_device


def test_strings_become_enums_and_dict_round_trips_through_json() -> None:
    cfg = IndexConfig(kind="ivf_pq", nlist=256, nprobe=8, pq_m=8, device="cpu", num_threads=1)
    assert cfg.kind is IndexKind.IVF_PQ
    assert cfg.device is Device.CPU
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["kind"] == "ivf_pq"
    assert IndexConfig.from_dict(data) == cfg


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "lsh"}, "kind must be one of"),
        ({"metric": "l2"}, "metric must be one of"),
        ({"device": "tpu"}, "device must be one of"),
        ({"nprobe": 0}, "nprobe must be a positive int"),
        ({"nlist": -4}, "nlist must be a positive int"),
        ({"ef_search": 1.5}, "ef_search must be a positive int"),
        ({"hnsw_m": True}, "hnsw_m must be a positive int"),
        ({"pq_nbits": 0}, "pq_nbits must be in"),
        ({"num_threads": 0}, "num_threads must be a positive int"),
    ],
)
def test_invalid_fields_are_rejected_with_the_field_name(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        IndexConfig(**changes)


def test_from_dict_rejects_unknown_keys_instead_of_ignoring_them() -> None:
    with pytest.raises(ValueError, match=r"unknown key index\.nprob"):
        IndexConfig.from_dict({"kind": "ivf_flat", "nprob": 8})


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1_000_000, 4096), (100_000, 1024), (20_000, 512), (1682, 32), (100, 2), (10, 1)],
)
def test_auto_nlist_follows_the_sqrt_rule_and_keeps_39_points_per_list(
    n: int, expected: int
) -> None:
    assert auto_nlist(n) == expected
    assert auto_nlist(n) * 39 <= n or auto_nlist(n) == 1


def test_train_size_defaults_to_64_points_per_list_capped_at_n() -> None:
    cfg = IndexConfig(kind="ivf_flat")
    assert cfg.resolved_train_size(1_000_000) == 64 * 4096
    assert cfg.resolved_train_size(5_000) == 5_000
    pq = IndexConfig(kind="ivf_pq", nlist=16)
    assert pq.resolved_train_size(100_000) == 64 * 256  # enough for the PQ codebooks
    assert IndexConfig(kind="ivf_flat", train_size=500).resolved_train_size(10_000) == 500


def test_cpu_request_is_always_honoured() -> None:
    for kind in IndexKind:
        assert resolve_device(Device.CPU, kind) is Device.CPU


def test_hnsw_stays_on_the_cpu_under_auto() -> None:
    assert resolve_device(Device.AUTO, IndexKind.HNSW) is Device.CPU


def test_auto_picks_the_gpu_exactly_when_one_is_usable() -> None:
    expected = Device.GPU if gpu_available() else Device.CPU
    assert resolve_device(Device.AUTO, IndexKind.FLAT) is expected


def test_gpu_request_without_a_gpu_is_a_clear_error() -> None:
    if gpu_available():
        pytest.skip("a FAISS GPU is usable here; the error path needs a machine without one")
    assert gpu_unavailable_reason()
    with pytest.raises(GpuUnavailableError, match="device='gpu' but"):
        resolve_device(Device.GPU, IndexKind.IVF_FLAT)
