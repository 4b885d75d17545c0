"""Pieces the command-line modules share: model options, loading, clean failure."""
from __future__ import annotations

import math
import pathlib
import re
import sys
import warnings

import click
from click.core import ParameterSource

from lossc.files import OutputError, check_writable, same_file
from lossc.memory import MemoryLimitError, check_model_fits
from lossc.optim.params_io import load_params, trained_with
from lossc.source import CompileError

DIM_HELP = "Set a dim: --dim D=64 (repeatable)."


def parse_pairs(items, option: str, convert) -> dict:
    """NAME=VALUE options (--dim D=64, --hyper lam=0.1) as a dict; `convert` turns a
    value's text into the value or raises ValueError. A name given twice is an error,
    as a binding given twice in a .loss file is (the last would win silently)."""
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            fail(f"lossc: error: {option}: expected NAME=VALUE, got {item!r}")
        if name.strip() in out:
            fail(f"lossc: error: {option}: {name.strip()} is given twice "
                 f"({name.strip()}={out[name.strip()]!r} and {item.strip()})")
        try:
            out[name.strip()] = convert(value)
        except ValueError:
            kind = "an integer" if convert is decimal_int else "a finite number"
            if convert is hyper_value and ("[" in value or "," in value):
                kind += (", or for a shaped hyperparameter a bracketed list of them "
                         "([1, 0.5, 2])")
            fail(f"lossc: error: {option}: {name.strip()} must be {kind}, got {value!r}")
    return out


def decimal_float(text: str) -> float:
    """float(text) if text is a number as data files write one (NUMBER: ASCII digits,
    or a spelling of NaN or infinity; float() also takes 1_000 and digits of other
    scripts); ValueError otherwise."""
    from lossc.optim.data import NUMBER
    if NUMBER.fullmatch(text.strip()) is None:
        raise ValueError(f"not a number: {text!r}")
    return float(text)


def finite_float(text: str) -> float:
    """decimal_float(text) if that is finite (not nan, inf, or beyond the largest
    float, as 1e400 is); ValueError otherwise."""
    value = decimal_float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def decimal_int(text: str) -> int:
    """int(text) for ASCII digits with an optional sign (int() also takes 1_000 and
    digits of other scripts); ValueError otherwise."""
    if re.fullmatch(r"[+-]?[0-9]+", text.strip(), re.ASCII) is None:
        raise ValueError(f"not an integer: {text!r}")
    return int(text)


class DecimalNumber(click.ParamType):
    """A number option as data files write one (decimal_int, decimal_float: a NaN or
    an infinity then refused by name by check_numbers): click's float and int take
    what Python's do, 1_0 and digits of other scripts among them."""

    def __init__(self, convert, name: str):
        self.convert_text, self.name = convert, name

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value          # (a default)
        try:
            return self.convert_text(value)
        except ValueError:
            self.fail(f"{value!r} is not {'an' if self.name == 'integer' else 'a'} "
                      f"{self.name}", param, ctx)


DECIMAL_INT = DecimalNumber(decimal_int, "integer")
DECIMAL_FLOAT = DecimalNumber(decimal_float, "number")


def parse_dims(items) -> dict:
    return parse_pairs(items, "--dim", decimal_int)


def parse_hypers(items) -> dict:
    return parse_pairs(items, "--hyper", hyper_value)


def hyper_value(text: str):
    """A --hyper value: a finite number (finite_float), or for a shaped hyper its
    elements as a .loss file writes an array literal, `[1, 0.5, 2]` (nested for a
    matrix: `[[1, 0], [0, 1]]`), as a list of floats; ValueError otherwise. (The
    hyper's shape is checked where the model takes it.)"""
    if not text.strip().startswith("["):
        return finite_float(text)
    import json
    try:
        value = json.loads(text, parse_constant=_not_a_number)
    except (ValueError, RecursionError):
        raise ValueError(f"not a list of numbers: {text!r}") from None
    return _finite_elements(value, text)


def _not_a_number(name: str):
    raise ValueError(f"not a finite number: {name}")


def _finite_elements(value, text: str):
    """A nested list of finite numbers as floats, rectangular and not empty."""
    if isinstance(value, list):
        if not value:
            raise ValueError(f"an empty list: {text!r}")
        out = [_finite_elements(v, text) for v in value]
        if len({len(v) if isinstance(v, list) else -1 for v in out}) != 1:
            raise ValueError(f"rows of different lengths: {text!r}")
        return out
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return float(value)


def _model_options(dtype_help: str, dim_help: str, show_default: bool):
    """The FILE argument and the --dim and --dtype options, with their help."""
    def decorate(f):
        f = click.option("--dtype", type=click.Choice(["float64", "float32"]),
                         default="float64", show_default=show_default, help=dtype_help)(f)
        f = click.option("--dim", "dims", multiple=True, metavar="NAME=N", help=dim_help)(f)
        return click.argument("file", type=click.Path(dir_okay=False,
                                                      path_type=pathlib.Path))(f)
    return decorate


model_options = _model_options("Real number type of the compiled code.", DIM_HELP, True)

# for a command that takes trained parameters (load_trained): the dims and dtype default
# to the parameters file's record, and others do not fit it
trained_model_options = _model_options(
    "Real number type of the compiled code (default: the parameters file's record, else "
    "float64; one other than the record's is an error).",
    "Set a dim: --dim D=64 (repeatable; default: the parameters file's record, else the "
    "model's; a value other than the record's is an error).", False)


def fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(1)


def cannot_write(path, error: OSError) -> None:
    """End the command for a write that failed: a full disk, a file-size limit, a
    folder that is gone."""
    fail(f"lossc: error: cannot write {path}: {error.strerror or error}")


# the rules check_numbers applies (every real value must also be finite)
NUMBER_RULES = {"finite": lambda v: True, ">= 0": lambda v: v >= 0, "> 0": lambda v: v > 0}


def check_numbers(options: dict) -> None:
    """End the command if an option's number breaks its rule (option -> (value or None
    when not given, a NUMBER_RULES key)). A real option must be finite: NaN, inf, and
    1e400 (which reads as inf) are refused."""
    for option, (value, rule) in options.items():
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"lossc: error: {option} must be a finite number, got {value}")
        if not NUMBER_RULES[rule](value):
            fail(f"lossc: error: {option} must be {'positive' if rule == '> 0' else rule}, "
                 f"got {value}")


def check_output(option: str, path: pathlib.Path, inputs: dict) -> None:
    """End the command unless it may write `path`: not one of its `inputs` (option ->
    path, None for an option not given), and writable. Checked before the command's
    work, so that the work is not lost to a path it cannot write at the end."""
    for other, source in inputs.items():
        if source is not None and same_file(path, source):
            fail(f"lossc: error: {option} {path} is the same file as {other} {source}; "
                 "refusing to overwrite it (write to another file)")
    try:
        check_writable(path)
    except OutputError as e:
        fail(f"lossc: error: cannot write {option} {path}: {e}")


def check_data_given(model, file, data) -> None:
    """eval's and predict's --data, given where the model has inputs and only there:
    else a ValueError saying what to do."""
    if model.inputs and data is None:
        raise ValueError("the model has inputs (" + ", ".join(i.name for i in model.inputs)
                         + "): give the data with --data")
    if not model.inputs and data is not None:
        raise ValueError(f"{file} has no inputs, so it takes no data: omit --data")


def check_memory(model, batch_rows: int = 0) -> None:
    """End the command if the model's arrays would not fit in memory (lossc/memory.py)."""
    try:
        check_model_fits(model, batch_rows)
    except MemoryLimitError as e:
        fail(f"lossc: error: {e}")


def compile_stage(file, dims, dtype, **kw):
    """Run the compiler front end and passes; user mistakes end the command cleanly."""
    from lossc.compiler import compile_source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = compile_source(file, parse_dims(dims), dtype, **kw)
    except CompileError as e:
        fail(str(e))
    except (FileNotFoundError, ValueError, TypeError) as e:
        fail(f"lossc: error: {e}")
    for w in c.rendered_warnings():
        click.echo(w, err=True)
    return c


def options_from_env():
    """The options the environment asks for (lossc/options.py), read once, at the start
    of a command; a value that is not one ends the command."""
    from lossc.options import Options
    try:
        return Options.from_env()
    except ValueError as e:
        fail(f"lossc: error: {e}")


def load_model(file, dims, dtype):
    import lossc
    options = options_from_env()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = lossc.compile(file, dims=parse_dims(dims), dtype=dtype, options=options)
    except CompileError as e:
        fail(str(e))
    except (FileNotFoundError, ValueError, TypeError) as e:
        fail(f"lossc: error: {e}")
    for w in caught:
        if is_lossc_warning(w.message, w.category):
            click.echo(str(w.message), err=True)
    return m


_python_show_warning = warnings.showwarning


def is_lossc_warning(message, category) -> bool:
    """A LosscWarning, or one of the RuntimeWarnings about the cache ("lossc: ...")."""
    from lossc import LosscWarning
    return issubclass(category, LosscWarning) or str(message).startswith("lossc:")


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning on the command line: lossc's warnings as their one line
    of text, without Python's file and line; others as Python shows them."""
    if is_lossc_warning(message, category):
        click.echo(str(message), err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


def output_path(ctx, param, value):
    """An output option's value as a path (a click callback): not empty, and not a
    folder's name (`x/`, which a pathlib path would take as the file x)."""
    if value is None:
        return None
    option = "/".join(param.opts)
    if not value.strip():
        fail(f"lossc: error: {option} is empty: name the file to write")
    if value.endswith("/"):
        fail(f"lossc: error: {option} {value} names a folder: name the file to write")
    return pathlib.Path(value)


def load_trained(file: pathlib.Path, dims, dtype, params_path: pathlib.Path,
                 hyper_values: dict):
    """(model, params, hypers) for a command that uses trained parameters: the dims,
    dtype and hyperparameters the parameters file records (lossc train writes them),
    hyperparameters the command line gives taking the place of the record's (saying on
    stderr which it takes from the file), and the parameters checked against the model.
    A model whose dims or dtype differ from the record's (given with --dim or --dtype)
    ends the command with a line naming both. A file without
    a record (saved without its model, or by an older lossc) is used as it is."""
    try:
        record = trained_with(params_path)
    except ValueError as e:
        fail(f"lossc: error: {e}")
    if record is None:
        model = load_model(file, dims, dtype)
        check_memory(model)
        return model, _load_params(params_path, model), hyper_values
    ctx = click.get_current_context()
    dtype_given = ctx.get_parameter_source("dtype") is not ParameterSource.DEFAULT
    given = {item.partition("=")[0].strip() for item in dims}
    same_source = _source_sha256(file) == record.source_sha256
    # (dims of a source that changed since may no longer exist: only the given ones)
    taken_dims = {k: v for k, v in record.dims.items() if k not in given} \
        if same_source else {}
    model = load_model(file, tuple(dims) + tuple(f"{k}={v}" for k, v in taken_dims.items()),
                       dtype if dtype_given else record.dtype)
    check_memory(model)
    mismatch = record.mismatch(model)
    if mismatch:
        fail(f"lossc: error: {params_path} does not fit {file.name}: {mismatch}")
    if not same_source:
        click.echo(f"lossc: warning: {file.name} has changed since {params_path} was "
                   "trained (its source hash differs)", err=True)
    taken_hypers = {k: v for k, v in record.hypers.items()
                    if k not in hyper_values and k in {h.name for h in model.hypers}}
    taken = [f"{k}={v}" for k, v in taken_dims.items()]
    taken += [record.dtype] if not dtype_given else []
    taken += [f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}=[...]"
              for k, v in taken_hypers.items()]
    if taken:
        click.echo(f"lossc: using {', '.join(taken)} as {params_path} records (trained "
                   "with them; --hyper can override a hyperparameter, not a dim or the dtype)",
                   err=True)
    return model, _load_params(params_path, model), {**taken_hypers, **hyper_values}


def _load_params(path, model) -> dict:
    try:
        return load_params(path, model)
    except ValueError as e:
        fail(f"lossc: error: {e}")


def _source_sha256(file: pathlib.Path) -> str:
    """The hash a model compiled from `file` records (read as the compiler reads it:
    a device or a pipe is not read without end), or "" if it cannot be read."""
    import hashlib
    from lossc.compiler import read_source
    try:
        return hashlib.sha256(read_source(file).text.encode()).hexdigest()
    except (OSError, ValueError, TypeError):      # (a CompileError is a ValueError)
        return ""      # (load_model reports an unreadable file)
