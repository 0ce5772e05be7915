"""The ``recsys`` command: one entry point for the project's tools.

    recsys download ml-100k          # fetch a dataset from its publisher (checksummed)
    recsys download --list           # known datasets and where they are
    recsys serve ...                 # Triton serving commands (recsys.serving.cli)
    recsys realtime ...              # events, profiles, segments, privacy (recsys.realtime_cli)
    recsys sim run ...               # simulated users against a served model (recsys.sim)
    recsys experiments report ...    # A/B test analysis and report (recsys.experiments)
    recsys ope evaluate ...          # off-policy evaluation of logged feedback (recsys.ope)

The main job itself is ``scripts/run.sh`` (Hydra app ``training/main.py``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("recsys.data.download", "download public datasets from their publishers"),
    "serve": ("recsys.serving.cli", "build a Triton repository, serve it, query it"),
    "realtime": (
        "recsys.realtime_cli",
        "collect, publish and consume events; segments; access and erasure",
    ),
    "sim": ("recsys.sim.__main__", "simulated users against a repository's recommend model"),
    "experiments": ("recsys.experiments.cli", "A/B tests: analyse exposures and outcomes, report"),
    "ope": ("recsys.ope.cli", "off-policy evaluation: estimate a policy's value from a log"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatches ``recsys <command> [args]`` to the command's module ``main``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print("usage: recsys <command> [args]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:10s} {text}")
        return 0 if not args or args[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    entry: Callable[[list[str]], int] = module.main
    return int(entry(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
