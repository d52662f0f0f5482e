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
it. Empty: the last one, MINER's `trainer = "fieldlab.fit.miner"` string, went with fit/own_engines.py."""
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


# -- one step implementation per engine ---------------------------------------------------------------------
STEP_METHODS = ("step", "run")


def _steppers_declared() -> dict[str, str | None]:
    """fit/engine.py's STEPPERS, read as a literal (nothing is imported)."""
    tree = ast.parse(MODULES["fieldlab.fit.engine"].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "STEPPERS":
            return ast.literal_eval(node.value)
    raise AssertionError("fit/engine.py declares no STEPPERS")


def _is_protocol(node: ast.ClassDef) -> bool:
    return any(getattr(base, "id", getattr(base, "attr", None)) == "Protocol" for base in node.bases)


def _methods(node: ast.ClassDef) -> set[str]:
    return {item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _step_classes(module: str, tree: ast.Module) -> dict[str, ast.ClassDef]:
    """Classes of `module` (a Protocol aside) that define a step or run method, by qualified name."""
    return {f"{module}.{node.name}": node for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and not _is_protocol(node) and _methods(node) & set(STEP_METHODS)}


def _loose_steps(module: str, tree: ast.Module, allowed: set[str]) -> list[str]:
    """Gradient and optimizer steps (`.backward()`, `torch.autograd.grad`, `<optimizer>.step()`) outside the
    classes in `allowed`: a step written again in a helper function rather than in an engine."""
    inside = {id(n) for node in ast.walk(tree)
              if isinstance(node, ast.ClassDef) and f"{module}.{node.name}" in allowed for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute) or id(node) in inside:
            continue
        receiver = ast.unparse(node.func.value)
        if (node.func.attr == "backward" or (node.func.attr == "grad" and receiver.endswith("autograd"))
                or (node.func.attr == "step" and "optimizer" in receiver)):
            found.append(f"{module}:{node.lineno} {ast.unparse(node.func)}()")
    return found


def _fit_trees() -> dict[str, ast.Module]:
    return {module: ast.parse(path.read_text(encoding="utf-8")) for module, path in MODULES.items()
            if unit(module) == "fit"}


def test_fit_holds_one_step_implementation_per_engine():
    """Every class in fit/ defining `step` or `run` is a declared engine (fit/engine.py's STEPPERS), and no
    gradient or optimizer step is taken outside them: a second copy of a step fails here."""
    declared = _steppers_declared()
    found = {name for module, tree in _fit_trees().items() for name in _step_classes(module, tree)}
    assert found == set(declared), (f"step implementations not declared in fit/engine.py's STEPPERS: "
                                    f"{sorted(found - set(declared))}; declared but gone: "
                                    f"{sorted(set(declared) - found)}")
    loose = [where for module, tree in _fit_trees().items() for where in _loose_steps(module, tree, set(declared))]
    assert not loose, "steps outside the engines:\n" + "\n".join(loose)


def test_the_declared_steppers_keep_the_contract_or_say_why_not():
    """A STEPPERS entry without a reason defines every member of `Stepper` (methods, `name`, `step_count`)."""
    trees = _fit_trees()
    protocol = next(n for n in ast.walk(trees["fieldlab.fit.engine"])
                    if isinstance(n, ast.ClassDef) and n.name == "Stepper")
    attributes = {item.target.id for item in protocol.body if isinstance(item, ast.AnnAssign)}
    wanted = _methods(protocol) | attributes
    assert {"step", "run", "select", "predict", "name", "step_count"} <= wanted
    for name, reason in _steppers_declared().items():
        if reason is not None:
            assert len(reason) > 40, f"{name}: say why it is not a Stepper"
            continue
        module = name.rsplit(".", 1)[0]
        node = _step_classes(module, trees[module])[name]
        assigned = {t.attr for n in ast.walk(node) for t in getattr(n, "targets", [getattr(n, "target", None)])
                    if isinstance(t, ast.Attribute) and getattr(t.value, "id", "") == "self"}
        class_level = {t.id for item in node.body if isinstance(item, ast.Assign) for t in item.targets
                       if isinstance(t, ast.Name)}
        missing = wanted - _methods(node) - assigned - class_level
        assert not missing, f"{name} is declared a Stepper but lacks {sorted(missing)}"


def test_a_second_copy_of_a_step_is_found():
    """The check is only as good as its reader: a new trainer class and a helper stepping an optimizer both
    show."""
    tree = ast.parse("class Trainer:\n    def step(self):\n        self.optimizer.step()\n"
                     "def helper(loss, optimizer):\n    loss.backward()\n    optimizer.step()\n"
                     "def inner(loss, z):\n    return torch.autograd.grad(loss, z)\n")
    assert set(_step_classes("fieldlab.fit.x", tree)) == {"fieldlab.fit.x.Trainer"}
    loose = _loose_steps("fieldlab.fit.x", tree, {"fieldlab.fit.x.Trainer"})
    assert [where.split(" ")[1] for where in loose] == ["loss.backward()", "optimizer.step()", "torch.autograd.grad()"]
