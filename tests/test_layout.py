"""The package's layout (hpac's modules, read with ``ast``, nothing imported): no import
circles between modules or between sub-packages, and no private name reached across modules."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "hpac"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    if not level:
        return name or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imports(modules: dict[str, Path]) -> dict[str, list[tuple[str, str, int]]]:
    """module -> [(imported module, name taken from it or "", line)] for every hpac import,
    module level or inside functions alike."""
    out: dict[str, list[tuple[str, str, int]]] = {}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        found = out.setdefault(mod, [])
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "hpac"]
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(mod, path.name == "__init__.py", node.level, node.module)
                if target.split(".")[0] != "hpac":
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    found.append((sub, "", node.lineno) if sub in modules else (target, a.name, node.lineno))
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_is_read_whole():
    modules = _modules()
    assert {"hpac", "hpac.codec", "hpac.shards", "hpac.nn.integer", "hpac.entropy.afc", "hpac.io.readers"} <= set(modules)
    graph = _imports(modules)
    assert any(m == "hpac.nn.integer" for m, _, _ in graph["hpac.nn.csi"])


def test_no_import_circles_between_modules():
    modules = _modules()
    graph = {m: {t for t, _, _ in imps if t in modules and t != m and not m.startswith(t + ".")}
             for m, imps in _imports(modules).items()}
    # a package's __init__ is run by importing any of its modules: an edge to the package
    # itself counts only where the __init__ holds code, and none of hpac's sub-packages does
    graph = {m: {t for t in ts if not (modules[t].name == "__init__.py" and t != "hpac")} for m, ts in graph.items()}
    assert _cycle(graph) is None


def test_no_import_circles_between_sub_packages():
    """The data flow reads one way: each sub-package (hpac.io, hpac.nn, ...) counted as one
    node and each top-level module (hpac.codec, hpac.container, ...) as another, no circle."""
    modules = _modules()
    subs = {m.split(".")[1] for m in modules if m.count(".") >= 2}

    def node(m: str) -> str | None:
        parts = m.split(".")
        return None if len(parts) < 2 else parts[1] if parts[1] in subs else m

    graph: dict[str, set[str]] = {}
    for m, imps in _imports(modules).items():
        if (src := node(m)) is None:
            continue
        for t, _, _ in imps:
            if (dst := node(t)) is not None and dst != src:
                graph.setdefault(src, set()).add(dst)
    assert {"io", "nn", "entropy", "adapters", "zoo", "tools", "hpac.container"} <= set(graph)
    assert _cycle(graph) is None, graph


def test_no_private_name_is_imported_or_reached_across_modules():
    modules = _modules()
    bad = []
    for mod, imps in _imports(modules).items():
        bad += [f"{mod}:{line} imports {t}.{name}" for t, name, line in imps if name.startswith("_") and not name.startswith("__") and t != mod]
        bad += [f"{mod}:{line} imports module {t}" for t, _, line in imps if t.rsplit(".", 1)[-1].startswith("_")
                and not t.endswith("__init__")]
        tree = ast.parse(modules[mod].read_text())
        local_modules = set()
        for node in ast.walk(tree):  # names bound to hpac modules: `from . import afc`, `import hpac.x as y`
            if isinstance(node, ast.ImportFrom):
                target = _resolve(mod, modules[mod].name == "__init__.py", node.level, node.module)
                local_modules |= {a.asname or a.name for a in node.names if f"{target}.{a.name}" in modules}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in local_modules
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{mod}:{node.lineno} reaches {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)
