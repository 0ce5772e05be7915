"""Segment definitions reload in a running consumer: an edited file is used from the
next event, removed segments' members leave, a broken file keeps the old definitions
and reports its error at line and column."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rt_testkit import BASE_US, HOUR_US, raw_event

from recsys.events.producer import EventProducer
from recsys.events.sqlite_store import SqliteStore
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.segments.engine import SegmentEngine
from recsys.segments.loader import load_segments_text
from recsys.segments.reload import SegmentSource

CLICKERS = """\
segments:
  - name: clickers
    enter: count(click) >= 1
"""
BUYERS = """\
segments:
  - name: buyers
    enter: purchase_count >= 1
"""
BROKEN = """\
segments:
  - name: buyers
    enter: purchase_count >= 1
  - name: big_spenders
    enter: purchase_totl >= 100
"""


def _replace(path: Path, text: str) -> None:
    """Replaces the file's content in one step, as an editor's save does: a reader never
    sees it truncated or half written (write_text truncates first)."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    os.replace(partial, path)


def wait_for(cond: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Running:
    """A consumer loop (``StreamConsumer.run``) in a thread, over a SQLite file."""

    def __init__(self, store: SqliteStore, engine: SegmentEngine) -> None:
        self.store = store
        self.engine = engine
        proc = EventProcessor(
            store, ProcessorConfig(consent=ConsentPolicy.grant_all()), hooks=[engine]
        )
        cfg = ConsumerConfig(
            block_ms=20, sweep_interval_s=None, reload_check_s=0.05, gc_freeze_interval_s=None
        )
        self.consumer = StreamConsumer(store, proc, cfg)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.n = 0

    def _run(self) -> None:
        try:
            self.consumer.run(stop=self.stop)
        except BaseException as e:  # reported by the test
            self.error = e

    def publish(self, user: str, etype: str = "click") -> str:
        self.n += 1
        ev = raw_event(self.n, user=user, etype=etype, ts_us=BASE_US + self.n * HOUR_US)
        EventProducer(self.store).publish([ev])
        return str(ev["event_id"])


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Running, Path]]:
    folder = tmp_path / "segments"
    folder.mkdir()
    path = folder / "main.yaml"
    path.write_text(CLICKERS)
    store = SqliteStore(tmp_path / "rt.db")
    r = Running(store, SegmentEngine.from_yaml(folder))
    r.thread.start()
    try:
        yield r, path
    finally:
        r.stop.set()
        r.thread.join(timeout=30)
        store.close()
    assert not r.thread.is_alive()
    assert r.error is None, r.error


def test_an_edited_file_is_used_from_the_next_event(running: tuple[Running, Path]) -> None:
    r, path = running
    store, engine = r.store, r.engine
    r.publish("u1")
    wait_for(lambda: store.segment_members("clickers") == {"u1"}, "u1 in clickers")

    _replace(path, BUYERS)  # clickers removed, buyers added
    # The consumer counts a reload after the engine has installed it: wait for
    # the count, not for the new definitions, or the check races the thread.
    wait_for(lambda: r.consumer.reloads == 1, "the reload")
    assert "buyers" in engine.segments
    stats = engine.reload_stats
    assert stats is not None and (stats.reloads, stats.errors) == (1, 0)
    # The removed segment's members leave at the sweep that follows the reload.
    wait_for(lambda: store.segment_members("clickers") == set(), "clickers emptied")
    last = store.segment_log(segment="clickers")[-1]
    assert (last.user_id, last.entered, last.trigger) == ("u1", False, "reload")
    # The new segment gets members from the next event; removed ones are not evaluated.
    eid = r.publish("u2", "purchase")
    r.publish("u3")
    wait_for(lambda: store.segment_members("buyers") == {"u2"}, "u2 in buyers")
    (entered,) = store.segment_log(segment="buyers")
    assert (entered.user_id, entered.entered, entered.trigger) == ("u2", True, eid)
    wait_for(lambda: r.consumer.processor.stats.applied == 3, "u3's click applied")
    assert store.segment_members("clickers") == set()
    assert "clickers" not in (store.load_users(["u1"])["u1"].profile or "")


def test_a_broken_file_keeps_the_old_definitions_and_reports_where(
    running: tuple[Running, Path], caplog: pytest.LogCaptureFixture
) -> None:
    r, path = running
    store, engine = r.store, r.engine
    _replace(path, BUYERS)
    wait_for(lambda: "buyers" in engine.segments, "the first reload")
    caplog.set_level(logging.ERROR, logger="recsys.segments.reload")

    _replace(path, BROKEN)
    stats = engine.reload_stats
    assert stats is not None
    wait_for(lambda: stats.errors == 1, "the reload error")
    assert (stats.last_error_source, stats.last_error_line, stats.last_error_column) == (
        str(path),
        5,
        12,
    )
    assert stats.last_error is not None
    assert stats.last_error.startswith(f"{path}:5:12: unknown feature 'purchase_totl'")
    assert f"{path}:5:12: unknown feature" in caplog.text
    assert sorted(engine.segments) == ["buyers"]  # the old definitions run on
    r.publish("u4", "purchase")
    wait_for(lambda: store.segment_members("buyers") == {"u4"}, "u4 in buyers")
    time.sleep(0.3)  # several more checks of the same broken content
    assert stats.errors == 1 and stats.reloads == 1
    assert r.thread.is_alive() and r.error is None

    _replace(path, BROKEN.replace("purchase_totl", "purchase_total"))  # fixed
    wait_for(lambda: "big_spenders" in engine.segments, "the fixed file")
    assert stats.reloads == 2 and stats.last_error is None


def test_yaml_errors_missing_files_and_new_files_in_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "segs"
    folder.mkdir()
    (folder / "a.yaml").write_text(CLICKERS)
    source = SegmentSource(folder)
    assert [s.name for s in source.load()] == ["clickers"]
    assert source.poll() is None and source.stats.checks == 1
    (folder / "b.yaml").write_text(BUYERS)  # a new file in the folder is a change
    assert [s.name for s in source.poll() or []] == ["clickers", "buyers"]
    (folder / "b.yaml").write_text("segments: [{name: buyers, enter: 'x >= 1'")
    assert source.poll() is None
    assert source.stats.errors == 1 and source.stats.last_error_line == 1
    assert str(source.stats.last_error).startswith(f"{folder / 'b.yaml'}:1:")
    (folder / "b.yaml").write_text(CLICKERS)  # the same name twice across files
    assert source.poll() is None and "also defined" in str(source.stats.last_error)
    single = SegmentSource(folder / "a.yaml")
    single.load()
    (folder / "a.yaml").unlink()
    assert single.poll() is None and single.stats.errors == 1
    assert single.poll() is None and single.stats.errors == 1  # reported once
    assert "FileNotFoundError" in str(single.stats.last_error)


def test_replace_reports_and_retires() -> None:
    engine = SegmentEngine(load_segments_text(CLICKERS + "  - name: x\n    enter: age > 1\n"))
    done = engine.replace(load_segments_text(BUYERS + "  - name: x\n    enter: age > 2\n"))
    assert (done.added, done.removed, done.changed) == (("buyers",), ("clickers",), ("x",))
    assert engine.retired == {"clickers"} and [s.name for s in engine._by_type["click"]] == ["x"]
    engine.replace(load_segments_text(CLICKERS))  # defined again: no longer retired
    assert engine.retired == {"buyers", "x"}
    assert SegmentEngine([]).reload_if_changed() is False  # not made from files


def test_consume_command_reports_reloads_and_takes_an_entry_horizon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recsys.realtime_cli import main

    db = str(tmp_path / "rt.db")
    seg = tmp_path / "s.yaml"
    seg.write_text(CLICKERS)
    store = SqliteStore(db)
    EventProducer(store).publish([raw_event(1, user="u1")])
    store.close()
    argv = ["--sqlite", db, "consume", "--until-idle", "--grant-all", "--segments", str(seg)]
    assert main([*argv, "--entry-horizon", "36h", "--reload-check", "0"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["applied"] == 1
    assert (doc["segment_reloads"], doc["segment_reload_errors"]) == (0, 0)
    assert doc["segment_reload_error"] is None
    assert main([*argv, "--entry-horizon", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err
