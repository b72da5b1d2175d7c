"""The import graph of jav/ and data_pipelines/ has no cycle, and its layers hold.

Every module is parsed with `ast` (nothing is imported). An import anywhere in a
file, at module level or inside a function, is an edge: a function-level import
that would close a cycle is the same cycle, only deferred. Importing `a.b.c` also
runs the packages `a` and `a.b`, so those are edges too (except the importer's
own packages, which are already running when it runs).

The layers checked besides: model code (jav/models/) reaches no training code
(jav/train/); the signal processing of jav/audio/ reaches no data code (jav/data/);
library modules import no command-line tool (a module with a `__main__` block, or
a package's `__main__`) and no training loop.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("jav", "data_pipelines")
TRAINING_LOOPS = ("jav.train.loop", "jav.train.diffusion", "jav.train.autoencoder", "jav.train.distill", "jav.train.reward")


def find_modules(root: pathlib.Path, packages=PACKAGES) -> dict[str, pathlib.Path]:
    """{dotted module name: path} of every .py file under the packages."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _owner(name: str, modules) -> str | None:
    """The project module that defines `name` (a module, or a name inside one); None if outside."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importer's package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([node.module] if node.module else []))
    # `from pkg import name` imports the submodule pkg.name when there is one, else reads pkg
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def import_graph(modules: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    """{module: the project modules it imports, anywhere in the file}."""
    graph = {}
    for module, path in modules.items():
        edges = set()
        own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in _imported_names(node, module, path.name == "__init__.py", modules):
                target = _owner(name, modules)
                if target is None:
                    continue
                parts = target.split(".")
                edges.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in modules and p not in own_packages)
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) through each strongly connected component of more than one module."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):  # Tarjan; the graph is a few hundred nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_through(graph, c, min(c)) for c in components]


def _cycle_through(graph, component: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside a strongly connected component."""
    paths, frontier = {start: [start]}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def reachable(graph: dict[str, set[str]], sources) -> dict[str, list[str]]:
    """{module: a shortest import chain from one of `sources` to it} for every module they reach."""
    chains = {s: [s] for s in sources}
    frontier = sorted(chains)
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in chains:
                    chains[w] = chains[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return chains


def command_line_tools(modules: dict[str, pathlib.Path]) -> set[str]:
    """Modules run as programs: a package's __main__, or a module with an `if __name__ == "__main__":` block."""
    tools = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        if module.endswith(".__main__") or any(
            isinstance(n, ast.If) and isinstance(n.test, ast.Compare) and isinstance(n.test.left, ast.Name) and n.test.left.id == "__name__" for n in tree.body
        ):
            tools.add(module)
    return tools


@pytest.fixture(scope="module")
def project():
    modules = find_modules(ROOT)
    return modules, import_graph(modules)


def _violations(graph, sources, forbidden) -> list[str]:
    return [" -> ".join(chain) for target, chain in sorted(reachable(graph, sources).items()) if forbidden(target)]


def test_the_import_graph_has_no_cycle(project):
    modules, graph = project
    assert {"jav.models.av_dit", "jav.train.diffusion", "data_pipelines.encode"} <= set(modules)  # the walk found the tree
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_model_code_reaches_no_training_code(project):
    _, graph = project
    models = [m for m in graph if m.startswith("jav.models.")]
    assert len(models) > 10
    bad = _violations(graph, models, lambda m: m == "jav.train" or m.startswith("jav.train."))
    assert not bad, "model code imports training code:\n" + "\n".join(bad)


def test_signal_processing_reaches_no_data_code(project):
    _, graph = project
    dsp = [m for m in graph if m == "jav.audio" or m.startswith("jav.audio.")]
    assert {"jav.audio.stft", "jav.audio.log_mel", "jav.audio.griffin_lim"} <= set(dsp)
    bad = _violations(graph, dsp, lambda m: m == "jav.data" or m.startswith("jav.data."))
    assert not bad, "jav/audio imports data code:\n" + "\n".join(bad)


def test_libraries_import_no_command_line_tool_or_training_loop(project):
    modules, graph = project
    tools = command_line_tools(modules)
    assert {"jav.sample", "jav.evaluate", "jav.train.__main__", "data_pipelines.run"} <= tools
    libraries = set(graph) - tools
    bad = [f"{a} -> {b}" for a in sorted(libraries) for b in sorted(graph[a]) if b in tools or (b in TRAINING_LOOPS and not a.startswith("jav.train."))]
    assert not bad, "library modules import a command-line tool or a training loop:\n" + "\n".join(bad)


def test_a_function_level_import_that_closes_a_loop_is_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.c import C\n")
    (pkg / "sub" / "c.py").write_text("from pkg.sub import d\nimport pkg.e\nC = 1\n")  # its own package: no edge
    (pkg / "sub" / "d.py").write_text("")
    (pkg / "e.py").write_text("class E:\n    def m(self):\n        import pkg.sub.d\n")
    graph = import_graph(find_modules(tmp_path, ("pkg",)))
    assert graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.sub.c"] == {"pkg.sub.d", "pkg.e"}
    assert graph["pkg.e"] == {"pkg.sub", "pkg.sub.d"}  # importing pkg.sub.d runs pkg/sub/__init__ first
    assert sorted(cycles(graph)) == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.e", "pkg.sub", "pkg.sub.c", "pkg.e"]]
