"""benchmarks/ann_benchmark.py end to end on a tiny catalogue: synthetic and given
embeddings, the jittered large catalogue, and the JSON / markdown / PNG outputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ann_benchmark.py"
TINY = [
    "--single-queries", "10", "--batched-queries", "120", "--batch-size", "50",
    "--k", "20", "--nprobe", "2,8", "--pq-nprobe", "8", "--pq-m", "4",
    "--ef-search", "32", "--repeats", "1", "--threads", "1", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_WAIT_POLICY", "PASSIVE")  # the script sets it; keep it contained
        spec = importlib.util.spec_from_file_location("ann_benchmark", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        mp.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
        spec.loader.exec_module(module)
    return module


def test_jittered_copies_stay_near_their_source(bench: ModuleType) -> None:
    base = bench.synthetic_items(100, 16, 5, 0.5, seed=0)
    big = bench.jittered_catalogue(base, 1000, sigma=0.1, seed=1, chunk=128)
    assert big.shape == (1000, 16) and big.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(big, axis=1), 1.0, atol=1e-5)
    cos = np.einsum("ij,ij->i", big, base[np.arange(1000) % 100])
    assert cos.min() > 0.9 and cos.max() < 1.0  # near, but jittered
    again = bench.jittered_catalogue(base, 1000, sigma=0.1, seed=1, chunk=300)
    np.testing.assert_array_equal(big, again)  # seeded, independent of the chunking


def test_synthetic_run_writes_json_markdown_and_plot(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "ann"
    args = ["--n-items", "600", "--dim", "16", "--clusters", "12", "--catalogue-size", "3000"]
    report = bench.main([*args, *TINY, "--out", str(out)])

    saved = json.loads((out / "results.json").read_text())
    assert saved["results"] == report["results"]
    rows = saved["results"]
    assert {r["catalogue"] for r in rows} == {"original", "large"}
    for catalogue, n in (("original", 600), ("large", 3000)):
        mine = [r for r in rows if r["catalogue"] == catalogue]
        assert [r["kind"] for r in mine] == ["flat", "ivf_flat", "ivf_flat", "ivf_pq", "hnsw"]
        assert all(r["n"] == n for r in mine)
        assert mine[0]["recall"] == 1.0 and mine[0]["speedup_batched"] == 1.0
        assert all(0.0 <= r["recall"] <= 1.0 and r["qps_batch1"] > 0 for r in mine)
        ivf = [r for r in mine if r["kind"] == "ivf_flat"]
        assert ivf[0]["params"]["nprobe"] == 2 and ivf[1]["params"]["nprobe"] == 8
        assert ivf[1]["recall"] >= ivf[0]["recall"]
    for r in rows:
        expected = r["recall"] >= 0.95 and r["speedup_batched"] >= 10
        assert r["meets_target_batched"] == expected
    assert saved["machine"]["faiss_version"]
    table = (out / "results.md").read_text()
    assert table.count("| large |") == 5 and table.count("| original |") == 5
    assert (out / "recall_vs_qps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_given_embeddings_and_queries_are_used(bench: ModuleType, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((500, 8)).astype(np.float32)
    users = rng.standard_normal((40, 8)).astype(np.float32)
    np.save(tmp_path / "items.npy", emb)
    np.save(tmp_path / "users.npy", users)
    given = ["--embeddings", str(tmp_path / "items.npy"), "--catalogue-size", "2000"]
    report = bench.main(
        [*given, "--queries", str(tmp_path / "users.npy"), "--skip-original", *TINY,
         "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert report["embeddings"] == str(tmp_path / "items.npy")
    assert {r["catalogue"] for r in report["results"]} == {"large"}
    assert all(r["dim"] == 8 and r["n"] == 2000 for r in report["results"])
    np.save(tmp_path / "bad.npy", users[:, :4])
    with pytest.raises(SystemExit, match="--queries dim 4"):
        bench.main([*given, "--queries", str(tmp_path / "bad.npy"), *TINY])
