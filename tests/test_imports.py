"""The import graph follows the pipeline: source -> syntax -> ir -> passes -> codegen ->
runtime -> optim -> api/cli, with no circle anywhere.

Every module's imports are read from its source (at the top and inside functions,
`import x` and `from x import y`, with `from package import module` an import of the
module); an import may go to a module of its own layer or a lower one, never a higher,
and no chain of imports may come back to where it started."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# the layers, lowest first: a module is in the layer of the longest name listed that is
# it or a package holding it; a top-level module listed nowhere is in the last
LAYERS = (
    ("base", ("lossc.version", "lossc.options", "lossc.source", "lossc.nested",
              "lossc.files", "lossc.memory", "lossc.pairwise")),
    ("syntax", ("lossc.syntax",)),
    ("ir", ("lossc.ir",)),
    ("passes", ("lossc.passes",)),
    ("codegen", ("lossc.codegen",)),
    ("runtime", ("lossc.runtime",)),
    ("optim", ("lossc.optim",)),
    # the API and the commands (lossc/__init__.py, api.py, cli*.py)
    ("api", ("lossc",)),
)

def module_sources(root: pathlib.Path) -> dict:
    """{module name: source text} of the lossc package under `root`."""
    out = {}
    for path in sorted((root / "lossc").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path.read_text()
    return out


def _known(name: str, modules) -> str | None:
    """The module `name` is, or the package holding it that is one of `modules`."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports(sources: dict) -> dict:
    """{module: set of lossc modules it imports}."""
    graph = {}
    for name, text in sources.items():
        package = name if _is_package(name, sources) else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                # `from package import module` imports the module; a name, the package
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in sources else base
                           for a in node.names]
            else:
                continue
            for target in targets:
                module = _known(target, sources)
                if module is not None and module != name:
                    found.add(module)
        graph[name] = found
    return graph


def _is_package(name: str, sources: dict) -> bool:
    return any(other.startswith(name + ".") for other in sources)


def layer_of(name: str) -> int:
    best, best_len = len(LAYERS) - 1, -1
    for k, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = k, len(prefix)
    return best


def upward(graph: dict) -> list:
    """(importer, imported) pairs where the imported module is in a higher layer."""
    return sorted((a, b) for a, targets in graph.items() for b in targets
                  if layer_of(b) > layer_of(a))


def cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan's algorithm,
    iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(component)
    return out


def test_no_module_imports_from_a_higher_layer():
    assert upward(imports(module_sources(ROOT))) == []


def test_no_import_cycles():
    assert [sorted(c) for c in cycles(imports(module_sources(ROOT)))] == []


def packages(graph: dict) -> dict:
    """The import graph between lossc's subpackages (lossc.ir, lossc.codegen, ...; a
    top-level module stands for itself): a cycle of packages is a cycle too, even where
    no chain of modules closes one."""
    def package(m: str) -> str:
        return ".".join(m.split(".")[:2])
    out = {}
    for a, targets in graph.items():
        for b in targets:
            if package(a) != package(b):
                out.setdefault(package(a), set()).add(package(b))
    return out


def test_no_import_cycles_between_packages():
    assert [sorted(c) for c in cycles(packages(imports(module_sources(ROOT))))] == []


@pytest.mark.parametrize("sources, problem", [
    ({"lossc.runtime.a": "def f():\n    from lossc.runtime import b\n",
      "lossc.runtime.b": "import lossc.runtime.a\n"}, "cycle"),
    ({"lossc.runtime.a": "from . import b\n", "lossc.runtime.b": "from .a import f\n"},
     "cycle"),
    ({"lossc.codegen.jit": "def load():\n    from lossc.runtime.native import x\n",
      "lossc.runtime.native": ""}, "upward"),
    ({"lossc.runtime.artifact": "from lossc import __version__\n",
      "lossc": "from lossc.runtime import artifact\n"}, "upward"),
    ({"lossc.runtime.fused": "from lossc.optim import optimizers\n",
      "lossc.optim.optimizers": ""}, "upward"),
])
def test_the_checks_find_what_they_look_for(sources, problem):
    graph = imports(sources)
    assert (cycles if problem == "cycle" else upward)(graph)


def test_a_cycle_of_packages_is_found_where_modules_close_none():
    graph = imports({"lossc.ir.a": "from lossc.passes import b\n",
                     "lossc.passes.b": "", "lossc.passes.c": "from lossc.ir import d\n",
                     "lossc.ir.d": ""})
    assert cycles(graph) == []
    assert [sorted(c) for c in cycles(packages(graph))] == [["lossc.ir", "lossc.passes"]]
