"""The compiler core's imports follow the pipeline: source -> syntax -> ir -> passes ->
codegen, never back, and no module of the core imports itself through others. Every
import counts, at the top of a module or inside a function, `import x` and `from x
import y` alike (read from the source with `ast`, nothing is imported)."""
import ast
import pathlib

import lossc

ROOT = pathlib.Path(lossc.__file__).resolve().parent
# the layers of the core, in the order data flows through them
LAYERS = {"lossc.source": 0, "lossc.nested": 0, "lossc.syntax": 1, "lossc.ir": 2,
          "lossc.passes": 3, "lossc.codegen": 4}
# The machine-code loader's calling convention, which codegen/jit.py reads from the
# runtime: part of the runtime's layering (the native frames), not the compiler core's.
OUTSIDE_THE_CORE = {("lossc.codegen.jit", "lossc.runtime.native")}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str):
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def imports(path: pathlib.Path) -> set[str]:
    """The lossc modules a source file imports, anywhere in it (`from lossc.ir import
    ops` counts as lossc.ir.ops when that is a module, else as lossc.ir)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                is_module = (ROOT.parent / (sub.replace(".", "/") + ".py")).exists() or \
                    (ROOT.parent / sub.replace(".", "/") / "__init__.py").exists()
                found.add(sub if is_module else node.module)
    return {m for m in found if m == "lossc" or m.startswith("lossc.")}


def core_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        if layer(name) is not None:
            graph[name] = imports(path)
    return graph


def test_the_core_imports_only_downwards():
    wrong = []
    for importer, targets in core_graph().items():
        for target in targets:
            if (importer, target) in OUTSIDE_THE_CORE:
                continue
            rank = layer(target)
            if rank is None or rank > layer(importer):
                wrong.append(f"{importer} imports {target}")
    assert not wrong, wrong


def test_the_core_has_no_import_cycle():
    graph = core_graph()
    # (a package's __init__ importing its own modules is how packages are made)
    edges = {m: {t for t in ts if t in graph and not m == t.rsplit(".", 1)[0]}
             for m, ts in graph.items()}
    state: dict[str, int] = {}       # 1: on the path being walked, 2: done
    cycles = []

    def walk(m: str, path: list):
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycles.append(path[path.index(t):] + [t] if t in path else [m, t])
            elif t not in state:
                walk(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            walk(m, [m])
    assert not cycles, cycles


def test_the_check_sees_imports_inside_functions(tmp_path):
    """(the test above would pass vacuously if nested imports were not read)"""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from lossc.ir.ops import OPS\n    import lossc.codegen.llvm\n")
    assert imports(f) == {"lossc.ir.ops", "lossc.codegen.llvm"}
