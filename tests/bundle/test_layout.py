"""Opening a run bundle checks it; writing one never leaves half a bundle behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.bundle import layout
from recsys.bundle.layout import BUNDLE_FORMAT, BundleError, BundleWriter, RunBundle


def _small(root: Path) -> RunBundle:
    with BundleWriter(root) as writer:
        writer.write_json(layout.METRICS, {"Two-tower": {"ndcg@10": 0.45}})
        writer.write_text(layout.CONFIG, "seed: 42\n")
        writer.write_json(f"{layout.INDEX_DIR}/metadata.json", {"dim": 8})
        return writer.finish(
            summary={"dataset": "tiny"},
            required=(layout.METRICS, layout.CONFIG, layout.INDEX_DIR),
            provenance={"source_sha256": "abc"},
        )


def test_a_written_bundle_describes_itself(tmp_path: Path) -> None:
    bundle = _small(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / layout.MANIFEST).read_text())
    assert manifest["format"] == BUNDLE_FORMAT
    assert set(manifest["files"]) == {layout.METRICS, layout.CONFIG, "index/metadata.json"}
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in manifest["files"].values())
    prov = bundle.provenance
    assert prov["source_sha256"] == "abc"
    assert prov["package_version"]
    assert prov["git"] is None or len(prov["git"]["commit"]) == 40
    assert len(bundle.bundle_id) == 16
    assert "tiny" in bundle.describe()
    assert not (tmp_path / "b.partial").exists()


def test_the_bundle_id_follows_the_content(tmp_path: Path) -> None:
    first = _small(tmp_path / "a").bundle_id
    assert _small(tmp_path / "b").bundle_id == first
    with BundleWriter(tmp_path / "c") as writer:
        writer.write_json(layout.METRICS, {"Two-tower": {"ndcg@10": 0.46}})
        other = writer.finish(summary={}).bundle_id
    assert other != first


def test_a_changed_file_is_named(tmp_path: Path) -> None:
    _small(tmp_path / "b")
    (tmp_path / "b" / layout.METRICS).write_text('{"Two-tower": {"ndcg@10": 0.99}}\n')
    with pytest.raises(BundleError, match=r"metrics\.json changed"):
        RunBundle.open(tmp_path / "b")


def test_a_same_size_change_is_caught_by_the_checksum(tmp_path: Path) -> None:
    _small(tmp_path / "b")
    path = tmp_path / "b" / layout.CONFIG
    path.write_text("seed: 43\n")  # same size
    with pytest.raises(BundleError, match="sha256"):
        RunBundle.open(tmp_path / "b")
    RunBundle.open(tmp_path / "b", verify=False)  # sizes only: not caught


def test_every_missing_entry_is_named_in_one_message(tmp_path: Path) -> None:
    _small(tmp_path / "b")
    (tmp_path / "b" / layout.CONFIG).unlink()
    (tmp_path / "b" / "index" / "metadata.json").unlink()
    with pytest.raises(BundleError) as error:
        RunBundle.open(tmp_path / "b", required=[layout.model_path(layout.RANKER)])
    message = str(error.value)
    for name in ("missing config.yaml", "empty folder index", "missing models/ranker/model.onnx"):
        assert name in message, message


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    _small(tmp_path / "b")
    path = tmp_path / "b" / layout.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["format"] = BUNDLE_FORMAT + 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"format {BUNDLE_FORMAT + 1}"):
        RunBundle.open(tmp_path / "b")


def test_a_folder_that_is_no_bundle_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle` stage"):
        RunBundle.open(tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        RunBundle.open(tmp_path / "nothing")
    (tmp_path / layout.MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="unreadable"):
        RunBundle.open(tmp_path)


def test_a_failed_write_leaves_the_previous_bundle(tmp_path: Path) -> None:
    before = _small(tmp_path / "b").bundle_id
    with pytest.raises(RuntimeError), BundleWriter(tmp_path / "b") as writer:
        writer.write_json(layout.METRICS, {})
        raise RuntimeError("training crashed")
    assert RunBundle.open(tmp_path / "b").bundle_id == before
    assert not (tmp_path / "b.partial").exists()
    with BundleWriter(tmp_path / "b") as writer, pytest.raises(BundleError, match="not written"):
        writer.finish(summary={}, required=[layout.SCHEMA])


def test_the_writer_never_replaces_a_folder_that_is_no_bundle(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a run bundle"):
        BundleWriter(tmp_path)
    _small(tmp_path / "b")
    with pytest.raises(FileExistsError, match="overwrite"):
        BundleWriter(tmp_path / "b", overwrite=False)


def test_opening_a_bundle_imports_neither_torch_nor_onnx() -> None:
    code = (
        "import sys\n"
        "from recsys.bundle import RunBundle\n"
        "import recsys.serving.repository\n"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'torchrec', 'pandas') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
