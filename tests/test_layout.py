"""The rules of the house, read from the code's own imports (every import, lazy ones included):

- nothing under edge/ imports train/ or export/ (the device has neither torch nor the tools);
- no import circle between files;
- no folder holds more than 15 modules side by side.

Each rule is also run on a small made-up tree that breaks it, so that a checker that cannot
fail would fail here.
"""
import ast
import os

import pytest

from conftest import ROOT

SOURCE_FOLDERS = ("edge", "export", "train", "bench", "scripts", "tests")
MAX_MODULES = 15


def python_files(root, folders=SOURCE_FOLDERS):
    """{relative path: module name} of every .py file under ``folders`` of ``root``."""
    found = {}
    for folder in folders:
        for base, dirs, names in os.walk(os.path.join(root, folder)):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__"))]
            for name in names:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(base, name), root)
                    module = rel[:-3].replace(os.sep, ".")
                    found[rel] = module[:-len(".__init__")] if module.endswith(".__init__") else module
    return found


def imported_modules(path, module):
    """Every module name ``path`` imports, at any depth (lazy imports and importlib literals too)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".") if package else []
                parent = parent[:len(parent) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            names.append(base)
            names += [(base + "." if base else "") + alias.name for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            names.append(node.args[0].value)
    return [n for n in names if n]


def import_graph(root, folders=SOURCE_FOLDERS):
    """{file: set of files it imports}, for the files of the tree."""
    files = python_files(root, folders)
    by_module = dict((m, f) for f, m in files.items())
    graph = {}
    for path, module in files.items():
        targets = set()
        for name in imported_modules(os.path.join(root, path), module):
            if name in by_module and by_module[name] != path:
                targets.add(by_module[name])
        graph[path] = targets
    return graph


def circles(graph):
    """The strongly connected components of more than one file (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def forbidden_imports(root, part="edge", forbidden=("train", "export")):
    """(file, module) pairs where a file under ``part`` imports a ``forbidden`` package."""
    bad = []
    for path, module in sorted(python_files(root, (part,)).items()):
        for name in imported_modules(os.path.join(root, path), module):
            if name.split(".")[0] in forbidden:
                bad.append((path, name))
    return bad


def crowded_folders(root, folders=SOURCE_FOLDERS, limit=MAX_MODULES):
    """{folder: module count} of the folders with more than ``limit`` modules side by side."""
    counts = {}
    for path in python_files(root, folders):
        folder = os.path.dirname(path)
        counts[folder] = counts.get(folder, 0) + 1
    return dict((f, n) for f, n in counts.items() if n > limit)


# -- the rules on this repository ----------------------------------------------------------

def test_edge_never_imports_train_or_export():
    assert forbidden_imports(ROOT) == []


def test_no_import_circles():
    assert circles(import_graph(ROOT)) == []


def test_no_folder_holds_more_than_15_modules():
    assert crowded_folders(ROOT) == {}


# -- the checkers fail on a tree that breaks the rules -------------------------------------

def _write(root, files):
    for rel, text in files.items():
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def test_checkers_catch_a_broken_tree(tmp_path):
    _write(tmp_path, {
        "edge/__init__.py": "",
        "edge/a.py": "from edge import b\n",
        "edge/b.py": "def f():\n    from .c import g\n",          # lazy and relative
        "edge/c.py": "import edge.a\n",
        "edge/d.py": "import importlib\nimportlib.import_module('train.models')\n",
        "edge/e.py": "from export.onnx import export_onnx\n",
        "train/__init__.py": "", "train/models.py": "",
        "export/__init__.py": "", "export/onnx.py": "",
    })
    _write(tmp_path, dict(("bench/m%02d.py" % i, "") for i in range(16)))
    assert circles(import_graph(str(tmp_path))) == [["edge/a.py", "edge/b.py", "edge/c.py"]]
    assert forbidden_imports(str(tmp_path)) == [("edge/d.py", "train.models"), ("edge/e.py", "export.onnx"),
                                                ("edge/e.py", "export.onnx.export_onnx")]
    assert crowded_folders(str(tmp_path)) == {"bench": 16}


@pytest.mark.parametrize("source, expected", [
    ("from . import sibling\n", "pkg.sibling"),
    ("from .. import top\n", "top"),
    ("from ..other import x\n", "other.x"),
])
def test_relative_imports_resolve(tmp_path, source, expected):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/mod.py": source})
    assert expected in imported_modules(os.path.join(str(tmp_path), "pkg", "mod.py"), "pkg.mod")
