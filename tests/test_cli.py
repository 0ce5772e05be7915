"""The ``recsys`` command dispatches to its subcommands."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.cli import main


def test_download_list_finds_the_local_copy(
    ml100k_dir: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["download", "--list", "--data-dir", str(data_dir)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("ml-100k"))
    assert "present at" in line and str(ml100k_dir) in line


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "commands:" in capsys.readouterr().out
