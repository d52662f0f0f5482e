"""The package's import graph, read from its source with `ast` (nothing is imported).

Units: each sub-package of fieldlab (`fields`, `fit`, `kernels`, …) and each public top-level module
(`fieldlab.distributed`) is one unit; each private top-level module (`fieldlab._errors`, `_validate`,
`_safety`, `_progress`, `_precision`, …) is a unit of its own, shared by all (the root's internals).

Rules:
1. no import cycle between units, counting every import that runs (inside functions too) and module names
   passed as strings (`importlib.import_module("fieldlab.x")`, a ClassVar naming a module);
   imports under `if TYPE_CHECKING:` never run and do not count here;
2. `fields/` imports nothing from `fit/`, `learn/`, `signals/` or `cli/`, in any of those ways, type
   hints included: a field maps coordinates to values and knows nothing of how it is fitted or used;
3. a private name of a sub-package (an `_x` module in it, or an `_x` name from it) is imported only inside
   that sub-package: others use what its `__init__` or public modules export. The root's `_x` modules are
   the exception (shared by every sub-package), not their `_x` names.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fieldlab"
FIELDS_MUST_NOT_IMPORT = ("fit", "learn", "signals", "cli")
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()
"""(importing module, imported module) pairs let through, each with a comment naming the change that removes
it. Empty: the last one, MINER's `trainer = "fieldlab.fit.miner"` string, went with fit/engines.py."""
_MODULE_STRING = re.compile(r"fieldlab(\.[A-Za-z_][A-Za-z0-9_]*)+")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. fieldlab.fit.loop
    target: str  # the imported module, e.g. fieldlab.kernels.fused
    name: str  # the name taken from it ("" for the module itself)
    line: int
    typing_only: bool  # under `if TYPE_CHECKING:`
    by_string: bool  # a module named in a string

    def where(self) -> str:
        what = f"{self.target}.{self.name}" if self.name else self.target
        return f"{self.source}:{self.line} -> {what}{' (by string)' if self.by_string else ''}"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("fieldlab",) + path.relative_to(PACKAGE).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _known_module(dotted: str) -> str | None:
    """The longest prefix of `dotted` that is a module of the package (None if not even fieldlab.<unit>)."""
    parts = dotted.split(".")
    for end in range(len(parts), 1, -1):
        if ".".join(parts[:end]) in MODULES:
            return ".".join(parts[:end])
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
            or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Reader(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool):
        self.module, self.is_package = module, is_package
        self.imports: list[Import] = []
        self._typing = 0

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._typing += 1
            for child in node.body:
                self.visit(child)
            self._typing -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _add(self, target: str, name: str, line: int, by_string: bool = False) -> None:
        self.imports.append(Import(self.module, target, name, line, self._typing > 0, by_string))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == "fieldlab":
                self._add(alias.name, "", node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: from the importing module's package
            package = self.module.split(".")
            package = package if self.is_package else package[:-1]
            package = package[:len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        if base.split(".")[0] != "fieldlab":
            return
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in MODULES:  # `from fieldlab.fields import _config` takes a module
                self._add(submodule, "", node.lineno)
            else:
                self._add(base, alias.name, node.lineno)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and _MODULE_STRING.fullmatch(node.value):
            target = _known_module(node.value)
            if target is not None:
                self._add(target, "", node.lineno, by_string=True)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:  # f"fieldlab.signals.{kind}"
        first = node.values[0] if node.values else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.startswith("fieldlab."):
            target = _known_module(first.value.rstrip("."))
            if target is not None:
                self._add(target, "", node.lineno, by_string=True)
        self.generic_visit(node)


def _read_imports() -> list[Import]:
    imports = []
    for module, path in MODULES.items():
        reader = _Reader(module, path.name == "__init__.py")
        reader.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        imports += reader.imports
    return imports


IMPORTS = _read_imports()


def unit(module: str) -> str:
    """fieldlab.fit.loop -> fit; fieldlab._errors -> _errors; fieldlab (the root's __init__) -> fieldlab."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else "fieldlab"


def _private(imp: Import) -> bool:
    """Whether `imp` takes a private name of a unit other than its own (the root's `_x` modules excepted)."""
    if unit(imp.source) == unit(imp.target):
        return False
    inner = imp.target.split(".")[2:]  # below the unit: fieldlab.fields._config -> [_config]
    names = inner + ([imp.name] if imp.name else [])
    return any(part.startswith("_") and not part.startswith("__") for part in names)


def _cycles(edges: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, {}):
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _unit_edges(imports: list[Import]) -> dict[str, dict[str, list[Import]]]:
    edges: dict[str, dict[str, list[Import]]] = {}
    for imp in imports:
        a, b = unit(imp.source), unit(imp.target)
        if a != b and a != "fieldlab" and not imp.typing_only:  # the root's __init__ is the façade over all
            edges.setdefault(a, {}).setdefault(b, []).append(imp)
    return edges


def _allowed(imp: Import) -> bool:
    return (imp.source, imp.target) in KNOWN_EXCEPTIONS


def test_the_reader_sees_every_kind_of_import():
    """The graph is only as good as the reader: each way of importing is found (a guard against a reader
    that silently finds nothing)."""
    reader = _Reader("fieldlab.fit.x", False)
    reader.visit(ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import fieldlab.fields.siren\n"
        "from fieldlab.kernels import FusedSpec\n"
        "from fieldlab.fields import _config\n"
        "from . import loop\n"
        "from ..store import _schema\n"
        "if TYPE_CHECKING:\n    from fieldlab.learn import nets\n"
        "def f():\n    from fieldlab.signals import image\n    return importlib.import_module('fieldlab.edit.crop')\n"
        "class C:\n    trainer = 'fieldlab.fit.miner'\n    kind = f'fieldlab.signals.{x}'\n"
        "FORMAT = 'fieldlab.field'\n"))
    seen = {(i.target, i.name, i.typing_only, i.by_string) for i in reader.imports}
    assert seen == {
        ("fieldlab.fields.siren", "", False, False), ("fieldlab.kernels", "FusedSpec", False, False),
        ("fieldlab.fields._config", "", False, False), ("fieldlab.fit.loop", "", False, False),
        ("fieldlab.store._schema", "", False, False), ("fieldlab.learn.nets", "", True, False),
        ("fieldlab.signals.image", "", False, False), ("fieldlab.edit.crop", "", False, True),
        ("fieldlab.fit.miner", "", False, True), ("fieldlab.signals", "", False, True),
    }
    assert _cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == [["a", "b", "c"]]
    assert len(IMPORTS) > 100 and {"fields", "fit", "kernels", "learn"} <= {unit(i.source) for i in IMPORTS}


def test_no_import_cycle_between_the_sub_packages():
    edges = _unit_edges([i for i in IMPORTS if not _allowed(i)])
    report = []
    for component in _cycles(edges):
        report.append("cycle " + " <-> ".join(component) + ":")
        report += [f"  {imp.where()}" for a in component for b in component if b in edges.get(a, {})
                   for imp in edges[a][b]]
    assert not report, "\n".join(report)


@pytest.mark.parametrize("forbidden", FIELDS_MUST_NOT_IMPORT)
def test_fields_imports_nothing_of_the_stages_after_it(forbidden):
    found = [imp.where() for imp in IMPORTS if unit(imp.source) == "fields" and unit(imp.target) == forbidden
             and not _allowed(imp)]
    assert not found, f"fields/ imports {forbidden}/:\n" + "\n".join(found)


def test_no_private_name_is_imported_across_sub_packages():
    found = [imp.where() for imp in IMPORTS if _private(imp) and not _allowed(imp)]
    assert not found, "private names imported from another sub-package:\n" + "\n".join(found)


def test_kernels_import_no_field_at_run_time():
    """fields/ imports kernels (a config answers its FusedSpec): kernels takes fields only for type hints."""
    found = [imp.where() for imp in IMPORTS if unit(imp.source) == "kernels" and unit(imp.target) == "fields"
             and not imp.typing_only]
    assert not found, "\n".join(found)


def test_no_package_folder_is_ignored_by_an_unanchored_gitignore_line():
    """`.gitignore`'s `dist/` once ignored every new file under src/fieldlab/dist/: root-only patterns are
    anchored (`/dist/`), so no folder of the package matches a pattern meant for the repository's root."""
    gitignore = PACKAGE.parents[1] / ".gitignore"
    if not gitignore.exists():
        pytest.skip("no .gitignore beside the sources")
    patterns = [line.strip().rstrip("/") for line in gitignore.read_text().splitlines()
                if line.strip() and not line.startswith(("#", "/", "!"))]
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    ignored = [f"{folder.relative_to(PACKAGE.parent)} matches {pattern!r}" for folder in sorted(folders)
               for pattern in patterns if fnmatch.fnmatch(folder.name, pattern)]
    assert not ignored, "\n".join(ignored)
