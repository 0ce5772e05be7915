"""Serving reads run bundles only: what a bundle holds, and what a broken one does.

The small two-stage recommender on real MovieLens-100K (``fresh_two_stage``) is
written as a bundle; the repository is built from the bundle alone and its
in-process engine answers as the offline recommender did when the bundle was made.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_kit import assert_same_ranking, in_process_engine

from recsys.bundle import layout
from recsys.bundle.layout import BundleError, RunBundle
from recsys.serving.cli import main as cli_main
from recsys.serving.repository import build_repository


@pytest.fixture(scope="module")
def bundle(fresh_two_stage: Any, tmp_path_factory: pytest.TempPathFactory) -> RunBundle:
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    written: RunBundle = fresh_two_stage.bundle(
        out, config={"dataset": {"name": "ml-100k"}, "seed": 42},
        metrics={"Two-stage": {"ndcg@10": 0.1}},
    )  # fmt: skip
    return written


def test_the_bundle_holds_everything_serving_needs(bundle: RunBundle, fresh_two_stage: Any) -> None:
    for rel in (*layout.SERVING_FILES, layout.METRICS, layout.CONFIG, layout.VOCAB_DIR):
        assert bundle.has(rel), rel
    assert bundle.has(layout.model_path("item_tower"))  # for items added after training
    summary = bundle.summary
    ctx = fresh_two_stage.recommender.context
    assert summary["dataset"] == "ml-100k"
    assert (summary["n_users"], summary["n_items"]) == (ctx.n_users, ctx.n_items)
    assert summary["num_candidates"] == fresh_two_stage.recommender.num_candidates
    assert summary["query_dim"] == fresh_two_stage.recommender.index.dim
    served = bundle.read_json(layout.AGGREGATION)["aggregation"]
    assert served["mmr_lambda"] == pytest.approx(fresh_two_stage.recommender.config.mmr_lambda)
    assert bundle.read_json(layout.METRICS)["Two-stage"]["ndcg@10"] == 0.1
    source = fresh_two_stage.dataset.manifest.get("source_sha256")
    assert bundle.provenance["source_sha256"] == source
    assert bundle.provenance["torch"]


def test_the_expected_lists_are_the_offline_recommenders(
    bundle: RunBundle, fresh_two_stage: Any
) -> None:
    expected = bundle.read_json(layout.EXPECTED)
    users = list(expected["lists"])
    assert len(users) == 21  # 20 known users and one unknown (the popularity fallback)
    recs = fresh_two_stage.recommender.recommend(np.asarray([int(u) for u in users]), 10)
    for row, user in enumerate(users):
        got = np.asarray(expected["lists"][user])
        assert got[:, 0].astype(int).tolist() == recs.item_ids[row][recs.valid[row]].tolist()


def test_a_repository_built_from_the_bundle_alone_serves_the_expected_lists(
    bundle: RunBundle, tmp_path: Path
) -> None:
    info = build_repository(bundle.root, tmp_path / "repo")
    assert info.bundle is not None and info.bundle.bundle_id == bundle.bundle_id
    recorded = json.loads((tmp_path / "repo" / "recommend" / "1" / "bundle.json").read_text())
    assert recorded["bundle_id"] == bundle.bundle_id
    engine = in_process_engine(tmp_path / "repo")
    expected = bundle.read_json(layout.EXPECTED)
    for user, pairs in expected["lists"].items():
        (ranked,) = engine.recommend(np.asarray([int(user)]), np.asarray([expected["k"]]))
        want = np.asarray(pairs)
        assert_same_ranking(ranked.item_ids, ranked.scores, want[:, 0].astype(np.int64), want[:, 1],
                            what=f"user {user}")  # fmt: skip


def test_a_damaged_bundle_is_refused_with_what_is_wrong(
    bundle: RunBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle.root, damaged)
    (damaged / layout.INDEX_DIR / "index.faiss").unlink()
    ranker = damaged / layout.model_path(layout.RANKER)
    ranker.write_bytes(ranker.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(BundleError) as error:
        build_repository(damaged, tmp_path / "repo")
    assert "missing index/index.faiss" in str(error.value)
    assert "models/ranker/model.onnx changed" in str(error.value)
    assert not (tmp_path / "repo").exists()  # nothing written from a bad bundle

    assert cli_main(["check-bundle", "--bundle", str(damaged)]) == 1
    assert "index/index.faiss" in capsys.readouterr().err
    assert cli_main(["check-bundle", "--bundle", str(bundle.root)]) == 0
    assert bundle.bundle_id in capsys.readouterr().out
    assert cli_main(["build-repo", "--bundle", str(tmp_path / "none"),
                     "--out", str(tmp_path / "r")]) == 1  # fmt: skip
    assert "no bundle.json" in capsys.readouterr().err
