"""What the python-backend models import can run in NVIDIA's container (Python 3.10).

The ``recommend`` model imports ``recsys.runtime.user_state``, which opens the real-time
profile store through ``recsys.profiles`` and ``recsys.events`` when a store is
configured. This test follows every ``recsys`` import of the backend's ``model.py``
files (module level and inside functions, package ``__init__`` files included, type
checking blocks excluded) and checks each module of that closure: it parses as Python
3.10, uses none of the names the standard library added in 3.11 or later, and imports
third-party packages only from the serving container's list.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
MODELS = SRC / "recsys" / "serving" / "triton_models"

# Standard-library names added in Python 3.11+ (module -> names).
NEW_IN_311: dict[str, set[str]] = {
    "enum": {"StrEnum", "ReprEnum", "verify", "member", "nonmember", "global_enum",
             "EnumCheck", "FlagBoundary", "property"},
    "datetime": {"UTC"},
    "typing": {"Self", "LiteralString", "Never", "assert_never", "reveal_type", "assert_type",
               "TypeVarTuple", "Unpack", "Required", "NotRequired", "dataclass_transform",
               "get_overloads", "clear_overloads", "override", "TypeAliasType"},
    "asyncio": {"TaskGroup", "timeout", "timeout_at", "Runner"},
    "contextlib": {"chdir"},
    "hashlib": {"file_digest"},
    "operator": {"call"},
    "itertools": {"batched"},
}  # fmt: skip
NEW_MODULES = {"tomllib", "wsgiref.types"}
NEW_BUILTINS = {"ExceptionGroup", "BaseExceptionGroup"}
# What the serving image installs (requirements/serving-gpu.txt plus the clients a
# profile store needs) and the python backend provides.
CONTAINER_PACKAGES = {
    "numpy", "faiss", "yaml", "redis", "cryptography", "orjson", "onnxruntime",
    "triton_python_backend_utils",
}  # fmt: skip


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_311_guard(node: ast.If) -> bool:
    """``if sys.version_info >= (3, 11):`` (its body never runs on 3.10)."""
    test = node.test
    return (
        isinstance(test, ast.Compare)
        and ast.unparse(test.left) == "sys.version_info"
        and isinstance(test.ops[0], ast.GtE)
        and ast.literal_eval(test.comparators[0]) >= (3, 11)
    )


def _walk(tree: ast.AST) -> list[ast.AST]:
    """Every node, except those under ``if TYPE_CHECKING:`` or a 3.11+ version guard."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, ast.If) and (_is_type_checking(node) or _is_311_guard(node)):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return out


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imports(path: Path) -> list[str]:
    """Absolute module names imported by ``path`` (``from p import m`` adds ``p.m``)."""
    found: list[str] = []
    for node in _walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names]
    return found


def backend_closure() -> dict[Path, set[str]]:
    """Every recsys module file the backend models can import -> its other imports."""
    todo = [
        MODELS / "recommend" / "model.py",
        MODELS / "retrieval" / "model.py",
        # the image's entry point and HEALTHCHECK run on the container's Python too
        SRC / "recsys" / "serving" / "container.py",
        SRC / "recsys" / "serving" / "health.py",
    ]
    seen: dict[Path, set[str]] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        foreign: set[str] = set()
        for name in _imports(path):
            if name.split(".")[0] != "recsys":
                foreign.add(name)
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # the packages on the way are imported too
                file = _module_file(".".join(parts[:i]))
                if file is not None and file not in seen:
                    todo.append(file)
        seen[path] = foreign
    return seen


def _py311_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), feature_version=(3, 10))
    problems: list[str] = []
    aliases: dict[str, str] = {}  # local name -> module, for "import datetime as dt"
    for node in _walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module in NEW_MODULES:
                problems.append(f"line {node.lineno}: import {node.module}")
            new = NEW_IN_311.get(node.module, set())
            problems += [
                f"line {node.lineno}: from {node.module} import {a.name}"
                for a in node.names
                if a.name in new
            ]
        elif isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
                if a.name in NEW_MODULES:
                    problems.append(f"line {node.lineno}: import {a.name}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id)
            if module and node.attr in NEW_IN_311.get(module, set()):
                problems.append(f"line {node.lineno}: {module}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in NEW_BUILTINS:
            problems.append(f"line {node.lineno}: {node.id}")
        elif sys.version_info >= (3, 11) and isinstance(node, ast.TryStar):
            problems.append(f"line {node.lineno}: except*")
    return problems


CLOSURE = backend_closure()
# Modules of the closure outside this task's files that still need a 3.10 fix; strict:
# the mark must go once the module is fixed.
PENDING_310_FIX: dict[Path, str] = {}


def test_the_closure_reaches_the_profile_store_modules() -> None:
    names = {p.relative_to(SRC).as_posix() for p in CLOSURE if p.is_relative_to(SRC)}
    # the test would prove nothing if the lazy imports were not followed
    assert {
        "recsys/runtime/user_state.py",
        "recsys/profiles/features.py",
        "recsys/profiles/__init__.py",
        "recsys/events/redis_store.py",
        "recsys/events/sqlite_store.py",
        "recsys/features/schema.py",
    } <= names, sorted(names)
    assert "recsys/serving/client.py" not in names  # Self, tritonclient: never loaded


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=PENDING_310_FIX[p]))
        if p in PENDING_310_FIX
        else p
        for p in sorted(CLOSURE)
    ],
    ids=lambda p: p.relative_to(REPO).as_posix(),
)
def test_backend_module_runs_on_python_310(path: Path) -> None:
    problems = _py311_names(path)
    assert not problems, f"{path.relative_to(REPO)} needs Python 3.11+: {problems}"


@pytest.mark.parametrize("path", sorted(CLOSURE), ids=lambda p: p.relative_to(REPO).as_posix())
def test_backend_module_imports_only_what_the_container_has(path: Path) -> None:
    stdlib = set(sys.stdlib_module_names)
    extra = {
        name
        for name in CLOSURE[path]
        if name.split(".")[0] not in stdlib and name.split(".")[0] not in CONTAINER_PACKAGES
    }
    assert not extra, f"{path.relative_to(REPO)} imports {sorted(extra)}"
