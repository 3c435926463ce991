"""The layers of docs/architecture.md hold: no import cycle, no import of a higher layer (imports
made inside functions count), and a method is added by adding its file."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tailcon"

# unit -> layer, as docs/architecture.md draws them (0 at the bottom)
LAYERS = {
    "rundir": 0, "distributed": 0, "plugins": 0, "errors": 0, "defaults": 0,
    "config": 1,
    "data": 2, "losses": 2, "memory": 2,
    "models": 3,
    "methods": 4,
    "resolution": 5,
    "engine": 6,
    "inference": 7,
    "tools": 8,
    "cli": 9, "__main__": 9,
}


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(path: Path) -> set[str]:
    """The tailcon units a file imports, at module level or inside functions."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = ["tailcon", *rel.parts]
    package = parts[:-1]  # the package a relative import starts from (an __init__'s own: its folder)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        for name in names:
            bits = (name or "").split(".")
            if len(bits) > 1 and bits[0] == "tailcon" and bits[1] in LAYERS:
                found.add(bits[1])
    return found


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue  # the package's own entry point: tailcon.load and the version
        unit = _unit(path)
        edges.setdefault(unit, set()).update(u for u in _imported_units(path) if u != unit)
    return edges


def test_every_unit_of_the_package_has_a_layer():
    assert set(_graph()) == set(LAYERS), "a new top-level module or folder needs its place in docs/architecture.md"


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets if LAYERS[b] > LAYERS[a])
    assert upward == []


def test_the_import_graph_has_no_cycle():
    edges, state = _graph(), {}

    def visit(unit, path):
        state[unit] = "open"
        for nxt in edges.get(unit, ()):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[unit] = "done"

    for unit in edges:
        if unit not in state:
            visit(unit, [unit])


def test_the_foundations_import_nothing_of_tailcon_but_the_error_base():
    graph = _graph()
    assert graph["rundir"] == set() and graph["errors"] == set()
    assert graph["distributed"] <= {"errors"} and graph["plugins"] <= {"errors"}


def test_the_layer_table_is_the_one_the_docs_draw():
    drawn = (REPO / "docs" / "architecture.md").read_text()
    for unit, layer in LAYERS.items():
        if unit == "__main__":
            continue
        row = next(line for line in drawn.splitlines() if re.match(rf"\s*{layer}\s", line))
        assert unit in row, f"docs/architecture.md draws {unit} on another layer than {layer}"


def test_a_new_method_file_registers_itself(tmp_path):
    """Adding a method is adding its file: nothing else in the package changes."""
    copy = tmp_path / "tailcon"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "methods" / "my_method.py").write_text(
        "from .base import Method, register\n\n\n"
        "@register\nclass MyMethod(Method):\n    name = 'my_method'\n    defaults = {'weight': 1.0}\n\n"
        "    def training_step(self, views, labels):\n"
        "        import torch.nn.functional as F\n"
        "        return {'loss': self.hparams['weight'] * F.cross_entropy(self(views[0]), labels)}\n")
    code = ("from tailcon import resolution\n"
            "cfg = resolution.resolve(None, ['method.name=my_method', 'method.weight=2.0'])\n"
            "print(cfg['method'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'name': 'my_method', 'weight': 2.0" in proc.stdout


@pytest.mark.parametrize("name", sorted(__import__("tailcon.methods", fromlist=["METHODS"]).METHODS))
def test_every_method_has_its_file_config_docs_row_and_test(name):
    from tailcon import config
    from tailcon.methods import METHODS

    module = METHODS[name].__module__
    assert module.startswith("tailcon.methods.") and module != "tailcon.methods.base", "its own file"
    configs = [n for n in config.shipped_config_names()
               if (config.load_yaml(config.locate(n)).get("method") or {}).get("name") == name]
    assert configs, f"no shipped config trains {name}"
    assert re.search(rf"^\| (`\w+`, )*`{name}`[ ,|]", (REPO / "README.md").read_text(), flags=re.MULTILINE), \
        f"no row for {name} in the README's method table"
    tests = (REPO / "tests").rglob("test_*.py")
    assert any(re.search(rf"""method\.name={name}\b|["']{name}["']""", t.read_text()) for t in tests), \
        f"no test names {name}"
