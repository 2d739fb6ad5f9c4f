"""The package's import graph, read with ``ast``: layered, without cycles or cross-file private names.

Three rules (issue 15):

* no import cycle between jloss modules (top-level imports; a function-level import would only
  hide one, so:)
* no function-level ("lazy") import of a jloss module inside the package: lazy imports are for
  optional dependencies only (tqdm, matplotlib, torch, scipy);
* a name with a leading underscore is used only in its own file: no ``from jloss.x import _name``
  and no ``module._name`` on a jloss module, in the package, its tests, scripts and benchmarks.
  What another module needs is a public name, of a private module if need be (``jloss._loops``).

The checks themselves are tested on planted sources at the end of this file.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "jloss"
#: Where cross-file private names are looked for (the import rules apply to the package only).
CLIENT_DIRS = ("tests", "scripts", "benchmarks")
#: jloss modules that may be imported inside a function, like an optional dependency, and why.
OPTIONAL = {
    "jloss.benchmarks": "the benchmark suite, an optional part of an installation: `jloss bench` "
    "imports it when run and says so when it is missing",
}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_sources(root: Path = ROOT) -> dict[str, str]:
    """``{module name: source}`` for every module of the package."""
    return {module_name(p, root): p.read_text() for p in sorted((root / PACKAGE).rglob("*.py"))}


def client_sources(root: Path = ROOT) -> dict[str, str]:
    """``{relative path: source}`` for the files that use the package from outside."""
    out = {}
    for d in CLIENT_DIRS:
        for p in sorted((root / d).rglob("*.py")) if (root / d).is_dir() else []:
            out[str(p.relative_to(root))] = p.read_text()
    return out


def _resolve(modules: set[str], current: str, node: ast.ImportFrom) -> str | None:
    """The absolute module an ``ImportFrom`` names (relative imports resolved), or None."""
    if not node.level:
        return node.module
    base = current.split(".")
    is_package = current in modules and any(m.startswith(current + ".") for m in modules)
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _ours(name: str | None) -> bool:
    return name is not None and (name == PACKAGE or name.startswith(PACKAGE + "."))


def imports(modules: set[str], current: str, tree: ast.AST):
    """``(module imported, names taken from it, top-level?, line)`` for every jloss import."""
    top = set(id(n) for n in getattr(tree, "body", []))
    # Imports under a top-level if/try (optional dependencies, TYPE_CHECKING) count as top level.
    for n in getattr(tree, "body", []):
        if isinstance(n, (ast.If, ast.Try)):
            top |= {id(m) for m in ast.walk(n) if isinstance(m, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _ours(alias.name):
                    yield alias.name, [], id(node) in top, node.lineno
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(modules, current, node)
            if not _ours(mod):
                continue
            names = [a.name for a in node.names]
            subs = [n for n in names if f"{mod}.{n}" in modules]
            # ``from jloss import checks``: an import of the submodule jloss.checks
            for n in subs:
                yield f"{mod}.{n}", [], id(node) in top, node.lineno
            others = [n for n in names if n not in subs]
            if others or not subs:
                yield mod, others, id(node) in top, node.lineno
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and _ours(node.args[0].value)
        ):
            yield node.args[0].value, [], False, node.lineno


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """``{module: modules it imports at top level}`` within the package."""
    modules = set(sources)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, src in sources.items():
        for target, _, top, _ in imports(modules, mod, ast.parse(src)):
            if top and target in modules and target != mod:
                graph[mod].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]``, or None (a depth-first search)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def lazy_imports(sources: dict[str, str]) -> list[str]:
    """Function-level imports of jloss modules inside the package."""
    modules = set(sources)
    out = []
    for mod, src in sources.items():
        for target, _, top, line in imports(modules, mod, ast.parse(src)):
            if not top and target not in OPTIONAL:
                out.append(f"{mod}:{line} imports {target} inside a function")
    return out


SYS_MODULES = "<sys.modules>"


def _dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]`` (``sys.modules["jloss.x"].c`` as ``[SYS_MODULES, "jloss.x", "c"]``)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
        and _ours(node.slice.value)
    ):
        return [SYS_MODULES, node.slice.value] + parts[::-1]
    return None


def private_uses(modules: set[str], where: str, current: str | None, src: str) -> list[str]:
    """Private names of other jloss modules used in ``src`` (the file ``where``)."""
    tree = ast.parse(src)
    bound: dict[str, str] = {}  # local name -> jloss module
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _ours(a.name):
                    if a.asname:
                        bound[a.asname] = a.name
                    else:
                        bound[a.name.split(".")[0]] = PACKAGE
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(modules, current or "", node) if current else node.module
            if not _ours(mod):
                continue
            for a in node.names:
                full = f"{mod}.{a.name}"
                if full in modules:
                    bound[a.asname or a.name] = full
                elif _is_private(a.name) and mod != current:
                    out.append(f"{where}:{node.lineno}: from {mod} import {a.name}")
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            parts = _dotted(node.value)  # m = sys.modules["jloss.x"]
            if parts and parts[0] == SYS_MODULES and len(parts) == 2:
                bound[node.targets[0].id] = parts[1]

    def module_of(parts: list[str]) -> tuple[str, list[str]] | None:
        """The longest jloss module a dotted name starts with, and the attributes after it."""
        if parts[0] == SYS_MODULES:
            base, rest = parts[1], parts[2:]
        elif parts[0] in bound:
            base, rest = bound[parts[0]], parts[1:]
        else:
            return None
        while rest and f"{base}.{rest[0]}" in modules:
            base, rest = f"{base}.{rest[0]}", rest[1:]
        return base, rest

    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "ctx", None), ast.Del):
            parts = _dotted(node)
            if parts:
                found = module_of(parts)
                if found and len(found[1]) == 1:
                    target = (found[0], found[1][0])
        elif (
            isinstance(node, ast.Call)
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "hasattr", "delattr"))
                or (isinstance(node.func, ast.Attribute) and node.func.attr in ("setattr", "delattr"))
            )
        ):  # getattr(module, "_x"), monkeypatch.setattr(module, "_x", ...)
            parts = _dotted(node.args[0])
            found = module_of(parts) if parts else None
            if found and not found[1]:
                target = (found[0], node.args[1].value)
        if target and _is_private(target[1]) and target[0] != current:
            out.append(f"{where}:{node.lineno}: {target[0]}.{target[1]}")
    return out


def all_private_uses(sources: dict[str, str], clients: dict[str, str]) -> list[str]:
    modules = set(sources)
    out = []
    for mod, src in sources.items():
        out += private_uses(modules, mod, mod, src)
    for path, src in clients.items():
        out += private_uses(modules, path, None, src)
    return sorted(set(out))


# ----------------------------------------------------------------------------------------------
# The rules on the package
# ----------------------------------------------------------------------------------------------


def test_no_import_cycle():
    cycle = find_cycle(import_graph(package_sources()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_lazy_import_of_a_jloss_module():
    found = lazy_imports(package_sources())
    assert found == [], "import these at the top of the module:\n" + "\n".join(found)


def test_no_private_name_used_across_files():
    found = all_private_uses(package_sources(), client_sources())
    assert found == [], (
        "private names used outside their file (make them public names, of a private module if "
        "need be):\n" + "\n".join(found)
    )


# ----------------------------------------------------------------------------------------------
# The checks find what they should (planted sources)
# ----------------------------------------------------------------------------------------------


def test_a_planted_cycle_is_found():
    sources = {
        "jloss": "from jloss.a import f\n",
        "jloss.a": "from jloss.b import g\ndef f(): return g()\n",
        "jloss.b": "from jloss import c\ng = 1\n",
        "jloss.c": "import jloss.a\n",
    }
    assert find_cycle(import_graph(sources)) == ["jloss.a", "jloss.b", "jloss.c", "jloss.a"]
    sources["jloss.c"] = "import numpy\n"
    assert find_cycle(import_graph(sources)) is None


def test_a_planted_lazy_import_is_found():
    sources = {
        "jloss": "",
        "jloss.a": "def f():\n    from jloss.b import g\n    return g\n",
        "jloss.b": (
            "import importlib\n"
            "def h():\n"
            "    import tqdm\n"
            "    importlib.import_module('jloss.benchmarks')\n"
            "    return importlib.import_module('jloss.a')\n"
        ),
    }
    found = lazy_imports(sources)
    assert found == ["jloss.a:2 imports jloss.b inside a function", "jloss.b:5 imports jloss.a inside a function"]


def test_planted_private_uses_are_found():
    sources = {
        "jloss": "",
        "jloss._loops": "PAIR_MAX_BYTES = 1\n_LOCAL = 2\nprint(_LOCAL)\n",
        "jloss.minimize": "_solve_jit = None\n",
        "jloss.sweep": "from jloss.minimize import _solve_jit\nfrom jloss._loops import PAIR_MAX_BYTES\n",
    }
    clients = {
        "tests/t.py": (
            "import sys, jloss\n"
            "import jloss._loops\n"
            "from jloss import minimize as m\n"
            "jloss._loops.PAIR_MAX_BYTES\n"  # fine: a public name of a private module
            "jloss._loops._LOCAL\n"
            "m._solve_jit\n"
            "sys.modules['jloss.minimize']._solve_jit\n"
            "mod = sys.modules['jloss.minimize']\n"
            "mod._solve_jit\n"
            "def test(monkeypatch):\n"
            "    monkeypatch.setattr(jloss._loops, '_LOCAL', 0)\n"
            "    monkeypatch.setattr(jloss._loops, 'PAIR_MAX_BYTES', 0)\n"
            "    obj._private\n"  # not a module
        )
    }
    assert all_private_uses(sources, clients) == sorted(
        [
            "jloss.sweep:1: from jloss.minimize import _solve_jit",
            "tests/t.py:5: jloss._loops._LOCAL",
            "tests/t.py:6: jloss.minimize._solve_jit",
            "tests/t.py:7: jloss.minimize._solve_jit",
            "tests/t.py:9: jloss.minimize._solve_jit",
            "tests/t.py:11: jloss._loops._LOCAL",
        ]
    )
