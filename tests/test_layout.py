"""The architecture as the import graph: layers import only down, no cycles, and the
training package loads neither Optuna nor SQLAlchemy."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "hpo"
# Lower layers first; a module may import its own layer or any layer below it.
LAYERS = {
    "hpo.errors": 0,
    "hpo.tables": 0,  # rendering only (tabulate): every layer shows tables through it
    "hpo.train": 1,
    "hpo.config": 1,
    "hpo.objective": 2,
    "hpo.coord": 3,
    "hpo.insight": 4,
    "hpo.compare": 5,
    "hpo.cli": 6,
    "hpo.__main__": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    for name in sorted(LAYERS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    return None


def hpo_imports(path: Path) -> set[str]:
    """Every ``hpo.*`` module a file imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hpo.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "hpo":
                found |= {f"hpo.{a.name}" for a in node.names}
            elif node.module.startswith("hpo."):
                found.add(node.module)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if module_name(p) != "hpo"}


def test_every_module_belongs_to_a_layer():
    assert [m for m in MODULES if layer_of(m) is None] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down(module):
    mine = LAYERS[layer_of(module)]
    upward = []
    for target in hpo_imports(MODULES[module]):
        layer = layer_of(target)
        assert layer is not None, f"{module} imports {target}, which is in no layer"
        if LAYERS[layer] > mine or (LAYERS[layer] == mine and layer != layer_of(module)):
            upward.append(target)
    assert upward == [], f"{module} imports {upward} from its own level or above"


def test_no_import_cycles():
    graph = {m: {t for t in hpo_imports(p) if t in MODULES} for m, p in MODULES.items()}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for nxt in graph[node]:
            visit(nxt, [*path, node])
        done.add(node)

    for m in graph:
        visit(m, [])


def loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return {m.split(".")[0] for m in json.loads(out.stdout)}


def test_the_training_package_knows_nothing_of_optuna():
    loaded = loaded_after(
        "import hpo.train.trainer, hpo.train.data, hpo.train.backprop, hpo.train.device"
    )
    assert "torch" in loaded
    assert {"optuna", "sqlalchemy", "optuna_dashboard", "plotly"} & loaded == set()


def test_the_config_package_needs_no_torch():
    loaded = loaded_after("import hpo.config.spec, hpo.config.suggest")
    assert "optuna" in loaded
    assert {"torch", "sqlalchemy", "plotly"} & loaded == set()


def test_import_hpo_is_cheap_and_the_api_is_lazy():
    assert {"torch", "optuna", "sqlalchemy"} & loaded_after("import hpo") == set()
    loaded = loaded_after("import hpo; hpo.load_spec")
    assert "optuna" in loaded and "torch" not in loaded


def test_the_public_api_resolves_without_shadowing_the_subpackages():
    code = (
        "import hpo, hpo.train, hpo.compare, hpo.config, hpo.coord, hpo.insight\n"
        "for name in hpo.__all__:\n"
        "    value = getattr(hpo, name)\n"
        "    assert value is not None and type(value).__name__ != 'module', name\n"
        "assert type(hpo.train).__name__ == 'module' and callable(hpo.train_config)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
