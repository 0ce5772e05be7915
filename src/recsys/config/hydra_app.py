"""Command-line apps over ``configs/<group>/<name>.yaml`` with Hydra: overrides, output
folders and multirun, and the project's exit statuses.

An app is a config file and a task ``task(values, output_dir) -> exit status``: the task
builds its typed config from ``values`` (:func:`recsys.config.build`, so unknown keys and
wrong types are errors naming the key) and calls the same function as the app's
argparse CLI. :func:`run_hydra_app` runs it under ``hydra.main`` (version_base 1.3, as
``training/main.py``). Exit status 2 is a user error: an override Hydra cannot apply
(an unknown key, a malformed override; Hydra prints why) or a config value the task
refuses (the task prints one line and returns 2). Anything else that fails inside the
task is a bug: Hydra prints it and the status is 1.

Hydra is imported when an app runs, so this module stays standard library at import.

Example::

    def task(values, out_dir):
        config = build(MyConfig, values, "my")   # ConfigError -> print, return 2
        return my_run(config)

    sys.exit(run_hydra_app(CONFIG_DIR / "my", "run", task, sys.argv[1:], prog="my-app"))
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

USER_ERROR = 2
"""Exit status of a user error (bad override, bad config value, missing input)."""

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"
"""The repository's ``configs/`` folder (the apps run from a source checkout)."""

Task = Callable[[dict[str, Any], Path], int]
"""``(resolved config values, Hydra's output folder) -> exit status``."""


def run_hydra_app(
    config_dir: Path, config_name: str, task: Task, argv: Sequence[str], *, prog: str
) -> int:
    """Runs ``task`` as a Hydra app over ``config_dir/config_name.yaml``.

    Args:
        config_dir: the folder of the app's config (absolute).
        config_name: the config's name, without ``.yaml``.
        task: the app's work (see :data:`Task`).
        argv: Hydra's command line (overrides such as ``steps=100``, ``--multirun``,
            ``hydra.run.dir=...``).
        prog: the program name Hydra's help shows.

    Returns:
        The exit status: the task's, :data:`USER_ERROR` when Hydra could not compose
        the config, 1 when the task raised.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    state = {"started": False, "status": 0}

    def body(cfg: DictConfig) -> None:
        state["started"] = True
        try:
            values: dict[str, Any] = OmegaConf.to_container(  # type: ignore[assignment]
                cfg, resolve=True, throw_on_missing=True
            )
        except OmegaConfBaseException as error:  # e.g. a bad interpolation
            print(f"{prog}: config error: {error}", file=sys.stderr)
            state["status"] = USER_ERROR
            return
        state["status"] = int(task(values, Path(HydraConfig.get().runtime.output_dir)))

    app = hydra.main(config_path=str(config_dir), config_name=config_name, version_base="1.3")(body)
    saved = sys.argv
    sys.argv = [prog, *argv]
    try:
        app()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        # Hydra exits 1 both for a config it cannot compose (before the task) and for
        # an exception in the task: only the first is the user's to fix
        return USER_ERROR if code == 1 and not state["started"] else code
    finally:
        sys.argv = saved
    return int(state["status"])
