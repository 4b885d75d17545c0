"""`lossc predict`: a trained model's outputs (`output name = ...`) for a data file.

    lossc predict model.loss --params p.npz --data test.csv --out pred.csv
    lossc predict model.loss --params p.npz --data 'test/*.parquet' --out pred.npz

The model is compiled with the dims and dtype the parameters file records (lossc train
writes the record) and takes the hypers it records unless --hyper gives others, as
`lossc eval` does (cli_common.load_trained); a line on stderr says what it took. The
data holds every input of the model, or only those the outputs depend on (labels the
loss alone uses may be left out; outputs that use no input take the number of samples
from any one input); or chunks as lossc train streams them (a folder or
glob of .npy or .parquet files, docs/dask.md), read one at a time, every input present,
the predictions of each kept in chunk order. Only the inputs the outputs depend on are
read and checked: the others' cells, where the data has them, may be empty or NaN (a
test set's blank labels). The predictions go to a .csv (one column per element,
named as input columns are: prob.0, prob.1, ..., top), a .npz (one array per output,
samples first) or a .npy (a model with one output). A mistake is one line on
stderr and exit status 1; --out is checked before the work and is never one of the
command's inputs.
"""
from __future__ import annotations

import pathlib
from types import SimpleNamespace

import click
import numpy as np

from lossc.cli_common import (cannot_write, check_data_given, check_output, fail,
                               load_trained, output_path, parse_hypers,
                               trained_model_options)
from lossc.files import replacing, same_file
from lossc.optim.data import DataError, InputMissing, column_names, load_data
from lossc.optim.npfiles import save_npz
from lossc.optim.prepare import is_chunked

SUFFIXES = (".csv", ".npz", ".npy")


@click.command("predict")
@trained_model_options
@click.option("--params", "params_path", required=True,
              type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Parameters saved by lossc train (.npz or .json).")
@click.option("--data", type=click.Path(path_type=pathlib.Path),
              help="The samples (.csv, .npz, .npy): every input, or those the outputs use; "
                   "or chunks streamed from disk (a folder or glob of .npy or .parquet "
                   "files, as train takes them); none for a model without inputs.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), callback=output_path,
              help="Where the predictions go: .csv (a column per element: prob.0, prob.1, "
                   "..., top), .npz (an array per output) or .npy (one output).")
@click.option("--hyper", "hypers", multiple=True, metavar="NAME=VALUE",
              help="Set a hyperparameter (repeatable; default: the value the parameters "
                   "file records, else the model's).")
def predict_cmd(file, dims, dtype, params_path, data, out, hypers):
    """Write the outputs FILE declares (`output name = ...`) for each sample of --data.

    The dims, dtype and hypers are those the parameters file records (lossc train
    writes them); --hyper overrides a hyper, and a --dim or --dtype other than the
    record's is an error."""
    hyper_values = parse_hypers(hypers)
    if out.suffix.lower() not in SUFFIXES:
        fail(f"lossc: error: --out {out}: the file name must end in .csv, .npz or .npy")
    chunked = data is not None and is_chunked(str(data))
    check_output("--out", out, {"FILE": file, "--params": params_path,
                                "--data": None if chunked else data})
    if chunked:
        check_not_among_chunks(out, data)
    # the dims, dtype and hypers the parameters were trained with, as lossc eval takes them
    model, params, hyper_values = load_trained(file, dims, dtype, params_path, hyper_values)
    try:
        if not model.outputs:
            raise ValueError(f"{file} declares no outputs: add 'output NAME = EXPR' for "
                             "each value to predict")
        if out.suffix.lower() == ".npy" and len(model.outputs) != 1:
            raise ValueError(f"--out {out}: a .npy file holds one array, but the model has "
                             f"outputs {', '.join(o.name for o in model.outputs)}; use a "
                             ".npz or a .csv")
        check_data_given(model, file, data)
        if chunked:
            predictions, n = chunked_predictions(model, params, str(data), hyper_values)
        else:
            arrays = read_inputs(data, model) if data is not None else {}
            predictions = model.predict(params, **arrays, **hyper_values)
            n = len(next(iter(arrays.values()))) if arrays else 1
    except (DataError, ValueError, TypeError) as e:
        fail(f"lossc: error: {e}")
    try:
        write_predictions(out, model, predictions)
    except OSError as e:
        cannot_write(out, e)
    except (ValueError, TypeError) as e:
        fail(f"lossc: error: {e}")
    click.echo(f"wrote {out}: {', '.join(o.name for o in model.outputs)} for "
               f"{n} sample{'s' * (n != 1)}")


def check_not_among_chunks(out: pathlib.Path, data: pathlib.Path) -> None:
    """End the command if --out is one of the chunk files --data names."""
    from lossc.optim.chunk_files import files_named
    try:
        files = files_named(data, "--data")
    except DataError as e:
        fail(f"lossc: error: {e}")
    for f in files:
        if same_file(out, f):
            fail(f"lossc: error: --out {out} is one of the files of --data {data}; "
                 "refusing to overwrite it (write to another file)")


def chunked_predictions(model, params: dict, data: str, hypers: dict) -> tuple[dict, int]:
    """The outputs over chunked data, computed a chunk at a time in this process
    (each chunk checked as a data file is, NaN and infinity included) and joined in
    chunk order; and the rows."""
    from lossc.optim.chunked import check_chunk_finite, chunk_arrays
    from lossc.optim.prepare import as_chunks
    chunks = as_chunks(model, data, "--data")
    only = inputs_read(model)
    try:
        parts = []
        for c, label in enumerate(chunks.labels):
            arrays = chunk_arrays(model, chunks.arrays(c), f"--data: {label}", only)
            check_chunk_finite(inputs_view(model, only), arrays, f"--data: {label}")
            parts.append(model.predict(params, **arrays, **hypers))
    finally:
        chunks.close()
    joined = {}
    for o in model.outputs:
        per_row = np.ndim(parts[0][o.name]) > len(o.shape)   # (else one value for all)
        joined[o.name] = (np.concatenate([p[o.name] for p in parts]) if per_row
                          else parts[0][o.name])
    return joined, chunks.n_samples


def inputs_read(model):
    """The names of the inputs predict reads and checks, those the outputs depend on;
    None for every input, where the outputs depend on all of them or on none (any
    input then gives the batch size)."""
    needed = {i for o in model.outputs for i in o.inputs}
    return needed if needed and len(needed) < len(model.inputs) else None


def inputs_view(model, names):
    """`model` as far as data go (its .inputs, and its dtype, which bounds a float32
    model's numbers) with the inputs `names` alone (None: every input)."""
    if names is None:
        return model
    return SimpleNamespace(inputs=[s for s in model.inputs if s.name in names],
                           dtype=model.dtype)


def read_inputs(path: pathlib.Path, model) -> dict:
    """The inputs the outputs need from the file, which holds every input (the others'
    cells are not read: they may be empty or NaN) or, lacking some the outputs do not
    need, the others; or exactly those the outputs need. Outputs that use no input
    take the number of samples from an input the file holds (any_input)."""
    needed = {i for o in model.outputs for i in o.inputs}
    if not needed:
        return any_input(path, model)
    absent: set = set()
    first = None                # (the error of the file read for every input)
    while True:
        held = {s.name for s in model.inputs} - absent
        try:
            return load_data(path, inputs_view(model, held if absent else None),
                             inputs_read(model))
        except InputMissing as missing:
            if missing.input in needed:
                raise           # (the file lacks an input the outputs need)
            first = first or missing
            if missing.input is None:
                break
            absent.add(missing.input)
    if len(needed) == len(model.inputs):
        raise first
    view = inputs_view(model, needed)
    try:
        return load_data(path, view)
    except DataError as some:
        raise DataError(f"{some} (the outputs need only "
                        f"{', '.join(s.name for s in view.inputs)})") from None


def any_input(path: pathlib.Path, model) -> dict:
    """For outputs that use no input: one input of the file, the first in the model's
    order whose cells read (the others' are not read), for the number of samples; the
    file holds every input or some of them (a .npy file, one)."""
    names = [s.name for s in model.inputs]
    absent: set = set()
    first = None
    while len(absent) < len(names):
        held = [n for n in names if n not in absent]
        view = inputs_view(model, set(held) if absent else None)
        for name in held:
            try:
                return load_data(path, view, {name})
            except InputMissing as missing:
                first = first or missing
                if missing.input is None or missing.input not in held:
                    absent = set(names)         # (not a layout of these inputs)
                else:
                    absent.add(missing.input)
                break
            except DataError as e:
                first = first or e             # (its cells do not read: the next one)
        else:
            break
    for s in model.inputs:      # (a .npy file's one array, or a file of other columns)
        try:
            return load_data(path, inputs_view(model, {s.name}))
        except DataError:
            pass
    raise DataError(f"{first} (the outputs use no input: any one of them gives the "
                    "number of samples)")


def write_predictions(path: pathlib.Path, model, predictions: dict) -> None:
    """One file, replaced in one step (a failed write leaves the old one whole)."""
    suffix = path.suffix.lower()
    with replacing(path) as tmp:
        if suffix == ".npz":
            with open(tmp, "wb") as f:
                save_npz(f, predictions)
        elif suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, next(iter(predictions.values())))
        else:
            header, columns = [], []
            for o in model.outputs:
                a = np.asarray(predictions[o.name])
                a = a.reshape((-1,) + o.shape)           # (no batch axis: one row)
                header += [names[0] for names in column_names(o)]
                columns.append(a.reshape(len(a), -1))
            table = np.concatenate(columns, axis=1)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(",".join(header) + "\n")
                for row in table:
                    f.write(",".join(repr(float(v)) for v in row) + "\n")
