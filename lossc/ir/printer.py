"""The graph as text a person can read, one value a line, and as Graphviz DOT.

    %7:f64[6] = mul %5, %6                      # 9:5
    %9:f64 = sum %7  axes=(0,)                  # 9:5

Each value once, with its dtype and shape, the op, its inputs and attributes, and the
source position (line:col) it came from. Per-sample values are marked `|` after the
type; the others are computed once per call.
"""
from __future__ import annotations

from lossc.ir.graph import BOOL, INT, Graph, Node, varying

_DT = {"real": "f64", INT: "int", BOOL: "bool"}


def type_text(n: Node, real: str = "f64") -> str:
    base = real if n.dtype == "real" else _DT[n.dtype]
    return base + ("[" + ", ".join(map(str, n.shape)) + "]" if n.shape else "")


def node_text(n: Node, real: str = "f64", per_sample: bool = False) -> str:
    attrs = dict(n.attrs)
    if n.op in ("param", "input", "hyper"):
        rhs = f"{n.op} {attrs['name']}"
    elif n.op in ("const", "iconst"):
        rhs = f"{n.op} {attrs['value']!r}"
    else:
        args = ", ".join(f"%{i.id}" for i in n.inputs)
        extra = "  ".join(f"{k}={v}" for k, v in sorted(attrs.items()))
        rhs = f"{n.op} {args}" + (f"  {extra}" if extra else "")
    mark = " |" if per_sample else ""
    line = f"%{n.id}:{type_text(n, real)}{mark} = {rhs}"
    if n.span is not None:
        line = f"{line:<52} # {n.span.line}:{n.span.col}"
    return line


def format_graph(graph: Graph, title: str = "", real: str = "f64") -> str:
    vary = varying(graph)
    out = []
    if title:
        out.append(f"# {title}: {len(graph.nodes)} nodes")
    for n in graph.nodes:
        out.append("  " + node_text(n, real, n.id in vary))
    out.append("outputs:")
    for k, v in graph.outputs.items():
        out.append(f"  {k} = %{v.id}")
    if graph.rewrites:
        out.append("rewrites:")
        out.extend(f"  {r}" for r in graph.rewrites)
    return "\n".join(out)


def dot_string(text: str) -> str:
    """text as a DOT quoted string: backslashes and quotes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_dot(graph: Graph, title: str = "lossc", real: str = "f64") -> str:
    vary = varying(graph)
    lines = [f"digraph {dot_string(title)} {{", "  rankdir=TB;",
             '  node [fontname="monospace"];']
    for n in graph.nodes:
        attrs = dict(n.attrs)
        label = attrs.get("name") if n.op in ("param", "input", "hyper") else None
        label = f"{n.op} {label}" if label else (
            f"{attrs['value']:g}" if n.op in ("const", "iconst") else n.op)
        shape = "box" if n.op in ("param", "input", "hyper") else "ellipse"
        style = ', style=filled, fillcolor="#dde8ff"' if n.id in vary else ""
        lines.append(f'  n{n.id} [label="%{n.id} {label}\\n{type_text(n, real)}", '
                     f"shape={shape}{style}];")
        for i in n.inputs:
            lines.append(f"  n{i.id} -> n{n.id};")
    for k, v in graph.outputs.items():
        key = k.replace(".", "_")
        lines.append(f'  out_{key} [label="{k}", shape=doublecircle];')
        lines.append(f"  n{v.id} -> out_{key};")
    lines.append("}")
    return "\n".join(lines)
