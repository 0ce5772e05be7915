"""The Triton-side code is the ``recsys.runtime`` folder, and it stays light.

Every module of the folder (and the python-backend ``model.py`` files that Triton
loads) imports, at module level, only the standard library, numpy, FAISS, Triton's
``triton_python_backend_utils``, ``recsys.runtime`` and ``recsys.config`` (typed
config building, standard library only). The real-time profile store
is opened lazily (inside functions) by ``user_state``; ``tests/serving/
test_backend_py310.py`` follows those lazy imports for Python 3.10 and the
container's packages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
RUNTIME = SRC / "recsys" / "runtime"
TRITON_MODELS = SRC / "recsys" / "serving" / "triton_models"
THIRD_PARTY = {"numpy", "faiss", "triton_python_backend_utils"}
MODULES = sorted(p for p in RUNTIME.rglob("*.py"))
ENTRY_POINTS = sorted(TRITON_MODELS.glob("*/model.py"))


def _module_level_imports(path: Path) -> set[str]:
    """Top-level package names imported outside functions (``TYPE_CHECKING`` excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 10))
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue  # lazy imports: checked by the Python 3.10 closure test
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, field, []) or [])

    visit(tree.body)
    return found


def test_the_folder_holds_the_served_modules() -> None:
    names = {p.stem for p in MODULES}
    assert {"engine", "python_backend", "ranker_features", "user_state", "ranking",
            "faiss_search", "aggregation", "windows"} <= names  # fmt: skip
    assert {p.parent.name for p in ENTRY_POINTS} == {"recommend", "retrieval"}


@pytest.mark.parametrize(
    "path", [*MODULES, *ENTRY_POINTS], ids=lambda p: p.relative_to(SRC).as_posix()
)
def test_runtime_code_imports_only_the_container_packages(path: Path) -> None:
    stdlib = set(sys.stdlib_module_names)
    bad = sorted(
        name
        for name in _module_level_imports(path)
        if name.split(".")[0] not in stdlib | THIRD_PARTY
        and name not in ("recsys.runtime", "recsys.config")
        and not name.startswith("recsys.runtime.")
    )
    assert not bad, f"{path.relative_to(SRC)} imports {bad} at module level"


def test_importing_the_runtime_loads_neither_torch_nor_tritonclient() -> None:
    code = (
        "import sys\n"
        + "".join(f"import recsys.runtime.{p.stem}\n" for p in MODULES if p.stem != "__init__")
        + "heavy = [m for m in ('torch', 'tritonclient', 'grpc', 'pandas', 'tqdm', "
        "'recsys.serving', 'recsys.recommend') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
