"""The `lossc` command line: a thin layer over lossc.compiler and lossc.api."""
from __future__ import annotations

import errno
import os
import pathlib
import sys
import warnings

import click

from lossc.cli_common import (DECIMAL_FLOAT, DECIMAL_INT, cannot_write, check_memory,
                               check_numbers, check_output, compile_stage, fail, load_model,
                               model_options, options_from_env, output_path, parse_hypers,
                               show_warning)
from lossc.cli_predict import predict_cmd
from lossc.cli_train import eval_cmd, train
from lossc.codegen.units import DERIVED_UNITS, UNITS


# what click raises for a group called without a command, to show its help (click 8.2
# and later; () before: nothing)
_HELP_FOR_NO_ARGUMENTS = getattr(click.exceptions, "NoArgsIsHelpError", ())


class Commands(click.Group):
    """lossc's commands. A usage mistake (an unknown option, a value click cannot
    convert) is one line, as every other mistake is, not click's usage text. Output
    that cannot be written (standard output on a full disk, /dev/full) ends the
    command with one line, and a closed pipe quietly, as click ends it: no traceback,
    and nothing left for Python to fail to flush at exit. A Ctrl-C ends any command
    with "lossc: interrupted" and exit status 130 (lossc train first writes the best
    parameters found)."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        warnings.showwarning = show_warning
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _HELP_FOR_NO_ARGUMENTS as e:       # (lossc alone: the help, as click shows it)
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            hint = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            click.echo(f"lossc: error: {e.format_message()}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort as e:
            if isinstance(e.__cause__, KeyboardInterrupt):
                # (click has ended the line the terminal's ^C stands on)
                click.echo("lossc: interrupted", err=True)
                sys.exit(130)
            click.echo("lossc: error: aborted (end of input)", err=True)
            sys.exit(1)
        except OSError as e:
            sys.stdout = open(os.devnull, "w")
            if e.errno == errno.EPIPE:
                sys.exit(1)
            fail(f"lossc: error: cannot write the output: {e.strerror or e}")
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lossc")
def main():
    """lossc compiles a loss function written as math (a .loss file) into native code
    for the loss and its gradient, and trains models with it.

    \b
      lossc compile model.loss            compiled artifact model.lossc
      lossc graph model.loss              the SSA graph of loss and gradient
      lossc ir model.loss --asm           LLVM IR or machine assembly
      lossc check model.loss              gradient vs finite differences
      lossc train model.loss --data d.csv train it
    """


@main.command("compile")
@model_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), callback=output_path,
              help="Where to write the artifact (default: FILE with suffix .lossc).")
def compile_cmd(file, dims, dtype, output):
    """Compile FILE to a .lossc artifact: machine code for this CPU and the model's
    signature. Load it in Python with lossc.load(path), no recompilation."""
    option = "-o" if output else "the artifact"
    output = output or file.with_suffix(".lossc")
    check_output(option, output, {"FILE": file})
    m = load_model(file, dims, dtype)
    try:
        # (saving compiles the units not compiled yet, and the cache may not take them:
        # its warnings are lines of lossc's, not Python's file:line and source line;
        # dropped if the write fails, whose error says it all)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m.save(output)          # (through files.replacing, as every output is)
    except OSError as e:
        cannot_write(output, e)
    for w in caught:
        click.echo(str(w.message), err=True)
    click.echo(f"wrote {output}")
    for label, items in (("params", m.params), ("inputs", m.inputs), ("outputs", m.outputs)):
        if items:
            click.echo(f"  {label}: " + ", ".join(
                f"{p.name}{list(p.shape) if p.shape else ''}" for p in items))
    if m.hypers:
        click.echo("  hypers: " + ", ".join(
            f"{h.name}={h.default:g}" if not h.shape else f"{h.name}{list(h.shape)}"
            for h in m.hypers))


@main.command("graph")
@model_options
@click.option("--after", default=None, metavar="PASS",
              help="Show the graph after this pass: build, stabilize, autodiff, fold, cse, "
                   "dce, hoist, tidy (the plain graph), lower (the fusions this machine's "
                   "code takes), and forward with --mode forward or hvp (default: after all "
                   "of them).")
@click.option("--mode", type=click.Choice(["reverse", "forward", "hvp"]), default="reverse",
              show_default=True,
              help="reverse: the loss and its gradient; forward: the loss and its tangent "
                   "along a direction (tangent.<param> parameters), what Model.jvp runs; "
                   "hvp: forward mode over the gradient, the Hessian times the direction, "
                   "what Model.hvp runs.")
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "latex"]), default="text",
              show_default=True, help="text: one value a line; dot: Graphviz; latex: "
                                      "equations of the loss and gradient (for small "
                                      "models: a larger one is refused).")
@click.option("--stats", is_flag=True, help="Nodes per stage, rewrites applied, and the "
                                             "size the gradient would have as a tree.")
def graph_cmd(file, dims, dtype, after, mode, fmt, stats):
    """Show the SSA graph of FILE's loss and gradient.

    Each line is one value: %id:type = op inputs  # line:col of the source. A `|` after
    the type marks a per-sample value; the others are computed once per call."""
    from lossc.compiler import host_target
    from lossc.passes import pass_names, pipeline
    names = pass_names(mode)
    if after is not None and after not in names:
        fail(f"lossc: error: unknown pass {after!r}; the passes of mode {mode} are "
             f"{', '.join(names)}")
    if stats and fmt != "text":
        fail(f"lossc: error: --stats prints its counts as text; it takes no --format {fmt}")
    if fmt == "latex" and mode != "reverse":
        fail("lossc: error: --format latex shows the loss and its gradient only (mode "
             "reverse)")
    target = None
    if after is None or any(p.target and p.name == after for p in pipeline(mode)):
        target = host_target(dtype, options_from_env().vector_bits)
    c = compile_stage(file, dims, dtype, until=after, target=target, mode=mode)
    g = c.stages[after] if after else c.graph
    if stats:
        from lossc.ir.stats import format_stats
        click.echo(format_stats(c))
        return
    real = "f32" if dtype == "float32" else "f64"
    if fmt == "dot":
        from lossc.ir.printer import format_dot
        click.echo(format_dot(g, file.stem, real))
    elif fmt == "latex":
        from lossc.ir.latex import to_latex
        try:
            click.echo(to_latex(c.stages.get("autodiff") or g))
        except ValueError as e:
            fail(f"lossc: error: {e}")
    else:
        from lossc.ir.printer import format_graph
        title = f"{file.name}{'' if mode == 'reverse' else ' (' + mode + ' mode)'}"
        click.echo(format_graph(g, f"{title} after {after or 'all passes'}", real))


@main.command("ir")
@model_options
@click.option("--raw", is_flag=True, help="The IR lossc emits, before LLVM optimizes it.")
@click.option("--asm", is_flag=True, help="Machine assembly for this CPU.")
@click.option("--unit", "units", multiple=True, type=click.Choice(UNITS + DERIVED_UNITS),
              help="Only this code unit (repeatable; default: all but jvp, hvp and "
                   "hessian).")
def ir_cmd(file, dims, dtype, raw, asm, units):
    """Show the LLVM IR (optimized for this CPU) or the assembly for FILE.

    A model's code comes in units compiled separately (lossc.compile builds
    value_and_grad; loss, the optimizers' training steps and the shuffle follow on
    first use, and so do jvp, hvp and hessian, forward mode over the loss or the
    gradient); this shows them together unless --unit picks some. The units every
    model shares are optimized as lossc compiles them, with LLVM's O3."""
    from lossc.codegen import jit
    from lossc.codegen.units import LIBRARY_UNITS
    if raw and asm:
        fail("lossc: error: --raw and --asm exclude each other: the assembly is of the "
             "optimized IR")
    options = options_from_env()
    c = compile_stage(file, dims, dtype)
    chosen = list(dict.fromkeys(units)) or UNITS     # (a unit named twice, once)
    groups = {}       # LLVM pipeline -> the units compiled with it
    for u in chosen:
        level = jit.LIBRARY_LEVEL if u in LIBRARY_UNITS else jit.SPEED_LEVEL
        groups.setdefault(level, []).append(u)
    for level, group in groups.items():
        text = c.unit_ir(group, options.vector_bits)[0]
        if asm:
            click.echo(jit.assembly(text, level))
        elif raw:
            click.echo(text)
        else:
            click.echo(jit.optimized_ir(text, level))


@main.command("check")
@model_options
@click.option("--data", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Check on this data (.csv, .npz, .npy, as lossc train reads it) instead "
                   "of a random batch.")
@click.option("--params", "params_path", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Check at these parameters (.npz or .json, as lossc train writes them) "
                   "instead of the file's initial values.")
@click.option("--hyper", "hypers", multiple=True, metavar="NAME=VALUE",
              help="Set a hyperparameter (repeatable).")
@click.option("--seed", type=DECIMAL_INT, default=0, show_default=True,
              help="Seed for the initial parameters and the random batch.")
@click.option("--batch", type=DECIMAL_INT, default=None,
              help="Samples to check on: a random batch of this many (default 8), or with "
                   "--data its first this many rows (default: all of them).")
@click.option("--eps", type=DECIMAL_FLOAT, default=None,
              help="Finite-difference step, relative to max(1, |x|) (default 1e-6; "
                   "float32 1e-3).")
@click.option("--rtol", type=DECIMAL_FLOAT, default=None,
              help="Tolerance on each gradient, beyond what the objective's rounding "
                   "allows (default 1e-5; float32 1e-3).")
def check_cmd(file, dims, dtype, data, params_path, hypers, seed, batch, eps, rtol):
    """Compare the compiled gradient of FILE with central finite differences, per
    parameter: at the initial parameters on a random batch, or at the point you give
    (--params, --data, --hyper). Exits 1 on a mismatch."""
    from lossc.check import gradient_check, format_check
    from lossc.optim.data import DataError, load_data
    from lossc.optim.params_io import load_params
    check_numbers({"--seed": (seed, ">= 0"),
                   "--batch": (batch, "> 0"),
                   **{k: (v, "> 0") for k, v in (("--eps", eps), ("--rtol", rtol))
                      if v is not None}})
    hyper_values = parse_hypers(hypers)
    m = load_model(file, dims, dtype)
    # (with --data, the rows are in memory once the file is read; a random batch is made)
    check_memory(m, batch_rows=0 if data is not None else batch or 8)
    try:
        theta = load_params(params_path, m) if params_path is not None else None
        arrays = None
        if data is not None:
            arrays = load_data(data, m)
            if batch is not None:
                arrays = {k: v[:batch] for k, v in arrays.items()}
        report = gradient_check(m, seed=seed, batch=batch or 8, eps=eps, rtol=rtol,
                                theta=theta, data=arrays, hypers=hyper_values or None)
    except (DataError, ValueError, TypeError) as e:
        fail(f"lossc: error: {e}")
    click.echo(format_check(m, report))
    if not report["ok"]:
        sys.exit(1)


@main.command("cache")
@click.option("--clear", is_flag=True, help="Delete every cached artifact.")
def cache_cmd(clear):
    """Show (or clear) the persistent compile cache: where it is, how many artifacts
    it holds (compiled models, and the code every model shares, compiled once per
    machine) and their size. Set LOSSC_CACHE_DIR to move it. Only lossc's own entries
    are counted or deleted: files named by a cache key that hold an artifact."""
    from lossc.runtime.artifact import ArtifactError, cache_files
    d = options_from_env().cache_dir
    try:
        files = cache_files(d, delete=clear)
    except ArtifactError as e:
        fail(f"lossc: error: {e}")
    size = sum(n for _, n in files)
    what = f"{len(files)} cached artifact{'s' * (len(files) != 1)}"
    if clear:
        click.echo(f"removed {what} ({size / 1e6:.1f} MB) from {d}")
    else:
        click.echo(f"{d}: {what}, {size / 1e6:.1f} MB")


main.add_command(train, "train")
main.add_command(eval_cmd, "eval")
main.add_command(predict_cmd, "predict")

if __name__ == "__main__":
    main(prog_name="lossc")
