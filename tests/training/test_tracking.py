"""Experiment tracking with a real (offline) W&B run."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from recsys.training.tracking import Tracker, TrackingConfig


@pytest.fixture
def tracker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tracker:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    t = Tracker(TrackingConfig(mode="offline", dir=str(tmp_path), project="recsys-test"))
    assert t.active
    return t


def test_phases_that_restart_their_epochs_are_all_kept(tracker: Tracker) -> None:
    run = tracker._run
    steps = []  # the run's step after each logged epoch, across both phases
    for epoch in (1, 2, 3):
        tracker.log_phase("select", {"loss": 1.0 / epoch}, epoch)
        steps.append(run.step)
    for epoch in (1, 2):
        tracker.log_phase("final", {"loss": 0.1 * epoch}, epoch)
        steps.append(run.step)
    assert all(b > a for a, b in pairwise(steps)), steps
    # W&B keeps a point only if its step does not go back; the final phase's last
    # point reaching the summary (at the run's last step) shows it was accepted.
    assert run.summary["_step"] == steps[-1] - 1  # run.step is the next step to write
    assert run.summary["final/epoch"] == 2
    assert run.summary["final/loss"] == pytest.approx(0.2)
    assert run.summary["select/loss"] == pytest.approx(1.0 / 3)
    tracker.finish()


def test_explicit_steps_that_go_back_are_dropped_by_wandb(tracker: Tracker) -> None:
    # The failure log_phase avoids: a second phase logging from step 1 again.
    run = tracker._run
    for epoch in (1, 2, 3):
        tracker.log({"select/loss": 1.0 / epoch}, step=epoch)
    tracker.log({"final/loss": 0.5}, step=1)
    assert "final/loss" not in dict(run.summary)
    tracker.finish()
