"""The package has no import circle: modules stand on floors, each importing only from the floors below.

The graph is built from the source with ``ast``, counting every import: at module level, inside functions
and under ``if TYPE_CHECKING:``, relative imports resolved. An import of ``dsink.x.y`` is an edge to the module
``dsink.x.y`` and to the ``__init__`` of each package on the way (``dsink.x``: Python runs it first) - unless
the importer lives inside that package; ``from dsink.x import name`` is an edge to ``dsink.x.name`` when that is
a module, else to ``dsink.x``; a package ``__init__`` has the edges of what it imports (re-exports).
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "dsink"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    out = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _targets(name: str, importer: str, modules) -> set[str]:
    """``name`` (a module of ours) and the packages Python initialises on the way to it, less those holding
    the importer (already initialising) and the root package."""
    out = {name}
    parts = name.split(".")
    for i in range(2, len(parts)):
        pkg = ".".join(parts[:i])
        if pkg in modules and not (importer == pkg or importer.startswith(pkg + ".")):
            out.add(pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    """Edges module -> modules of ``dsink`` it imports (see the module docstring)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        package = name if is_pkg else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                found = [f"{src}.{a.name}" if f"{src}.{a.name}" in modules else src for a in node.names]
            else:
                continue
            for target in found:
                while target and target not in modules:  # `import dsink.x.y as z` of a module; else its package
                    target = target.rpartition(".")[0]
                if target and target.split(".")[0] == PACKAGE:
                    edges |= _targets(target, name, modules)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _path_in(comp: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One closed import path through a component, for the message: a -> b -> ... -> a."""
    members = set(comp)
    start = comp[0]
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return comp


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "dsink.runs.rundir" in graph["dsink.train.engine"] or "dsink.runs" in graph["dsink.train.engine"]
    assert "dsink.ot.surrogate" in graph["dsink.eval.audit"]  # imported inside a function
    assert "dsink.methods" in graph["dsink.train.engine"]  # a package: its __init__ and what it imports
    assert "dsink.methods.dsink" in graph["dsink.methods"]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(_path_in(c, graph)) for c in cycles)
