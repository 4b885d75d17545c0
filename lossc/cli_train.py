"""`lossc train` and `lossc eval`: training and evaluation from the shell.

Both are click commands that lossc/cli.py registers on the main group: a thin layer
over lossc.optim, whose arithmetic they reuse (the run's plan, for the progress display,
is the one the driver trains by). They belong to the command line, beside cli.py and
cli_common.py, so that lossc.optim, a library, needs nothing of it. User mistakes (bad
data, bad options, a .loss file that does not compile) print one clear message on
stderr and exit with status 1, never a traceback. `train` exits 1 when the loss became
NaN or infinite and 130 on Ctrl-C, after writing the best parameters found in both cases.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import pathlib
import signal
import sys
import threading
import time

import click
import numpy as np

from lossc.cli_common import (DECIMAL_FLOAT, DECIMAL_INT, cannot_write, check_data_given,
                               check_memory, check_numbers, check_output, fail, finite_float,
                               load_model, load_trained, model_options, output_path,
                               parse_hypers, parse_pairs, trained_model_options)
from lossc.files import replacing, written_in_place
from lossc.optim import schedules
from lossc.optim.config import TrainConfig
from lossc.optim.data import DataError, load_data
from lossc.optim.driver import format_seconds, train as run_training
from lossc.optim.metrics import METRICS, metric
from lossc.optim.freeze import check_frozen
from lossc.optim.fullbatch import check_run, train_options
from lossc.optim.names import FULL_BATCH, NAMES, by_name
from lossc.optim.params_io import load_params, params_file, save_params
from lossc.optim.prepare import as_chunks, is_chunked, n_samples
from lossc.optim.prox import l1_weights
from lossc.optim.solver import two_norm

MAX_LINES = 50      # epoch (or step) lines a run prints when stderr is not a terminal


class Progress:
    """Progress on stderr. On a terminal: a bar redrawn in place (at most 10 times a
    second) with the epoch or step, the current loss and the speed, and one line per
    epoch. Elsewhere (logs, CI, tests): up to MAX_LINES lines, evenly spaced."""

    def __init__(self, model, plan, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.by_steps = not model.inputs           # an epoch is a step
        self.total_epochs = plan.epochs
        self.total_steps = plan.total_steps
        self.every = max(1, math.ceil(plan.epochs / MAX_LINES))
        self.start = time.perf_counter()
        self.samples = 0
        self.last_draw = 0.0
        self.drawn = False

    def rate(self, steps: int) -> str:
        dt = max(time.perf_counter() - self.start, 1e-9)
        if self.by_steps:
            return f"{steps / dt:,.0f} steps/s"
        return f"{self.samples / dt:,.0f} samples/s"

    def step(self, step: int, epoch: int, loss: float, samples: int) -> None:
        """After each optimizer step (the driver's `progress` hook)."""
        self.samples += samples
        if self.quiet or not self.tty:
            return
        now = time.perf_counter()
        if now - self.last_draw < 0.1:
            return
        self.last_draw = now
        frac = min(1.0, step / max(self.total_steps, 1))
        bar = "#" * int(frac * 20) + "-" * (20 - int(frac * 20))
        where = (f"step {step}/{self.total_steps}" if self.by_steps else
                 f"epoch {epoch + 1}/{self.total_epochs}  step {step}")
        click.echo(f"\r[{bar}] {where}  loss {loss:.6g}  {self.rate(step)}\x1b[K",
                   err=True, nl=False)
        self.drawn = True

    def epoch(self, info) -> None:
        """After each epoch (the driver's `callback` hook)."""
        if self.quiet:
            return
        if info.epoch % self.every and info.epoch != self.total_epochs:
            return
        if self.by_steps and self.tty:
            return                      # the bar says it all; no line per step
        what = "step" if self.by_steps else "epoch"
        width = len(str(self.total_epochs))
        val = f"  val {info.val_loss:.6g}" if info.val_loss is not None else ""
        line = (f"{what} {info.epoch:>{width}}/{self.total_epochs}  loss {info.loss:.6g}{val}"
                f"  lr {info.lr:.3g}  {self.rate(info.steps)}")
        if self.tty and self.drawn:
            click.echo("\r\x1b[K", err=True, nl=False)
        click.echo(line, err=True)

    def finish(self) -> None:
        if self.tty and self.drawn and not self.quiet:
            click.echo("\r\x1b[K", err=True, nl=False)


def l1_option(model, values: dict):
    """--l1's flat weight vector for the model (None without --l1); a ValueError that
    names the option for an unknown parameter or a negative weight."""
    if not values:
        return None
    for name, weight in values.items():
        if weight < 0:
            raise ValueError(f"--l1: the weight of {name} must be >= 0, got {weight:g}")
    try:
        return l1_weights(model, values)
    except ValueError as e:
        raise ValueError(f"--l1: {e}") from None


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def describe(model) -> str:
    return ", ".join(f"{p.name}{list(p.shape) if p.shape else ''}" for p in model.params)


def describe_optimizer(name: str, opt, l1_values: dict) -> str:
    extra = [f"{k} {getattr(opt, k):g}" for k in ("momentum", "weight_decay", "clip_norm")
             if getattr(opt, k, None)]
    extra += [f"l1 {k} {v:g}" for k, v in l1_values.items()]
    return ", ".join([f"{name} lr {opt.lr:g}"] + extra)


def plot_curve(path: pathlib.Path, result, title: str, by_steps: bool, per_epoch: int):
    fig = draw_curve(result, title, by_steps, per_epoch)
    import matplotlib.pyplot as plt
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=110, format=plot_format(path))
    finally:
        plt.close(fig)


FLAT_SHARE = 0.05    # a tail spanning less than this share of the y range looks flat


def draw_curve(result, title: str, by_steps: bool, per_epoch: int):
    """The loss curve as a matplotlib Figure: the objective after each epoch (and each
    mini-batch's behind it, and the validation objective), the best epoch marked, and
    a logarithmic y axis where a linear one would leave the curve flat."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4))
    xs = np.arange(len(result.history))
    if not by_steps and per_epoch > 1 and result.step_losses:
        # each mini-batch's objective, placed at its fraction of an epoch: the noise
        # around the epoch curve
        sx = np.arange(1, len(result.step_losses) + 1) / per_epoch
        ax.plot(sx, result.step_losses, color="0.75", lw=0.6, label="mini-batches")
    ax.plot(xs, result.history, color="C0", lw=1.6, marker="o" if len(xs) <= 60 else None,
            ms=3, label="training")
    judged = result.history
    if result.val_history:
        judged = result.val_history
        ax.plot(xs[:len(result.val_history)], result.val_history, color="C1", lw=1.6,
                marker="s" if len(xs) <= 60 else None, ms=3, label="validation")
    best = result.best_epoch
    if best < len(judged) and math.isfinite(judged[best]):
        unit = "step" if by_steps else "epoch"
        ax.axvline(best, color="C2", lw=0.8, ls="--")
        ax.plot([best], [judged[best]], marker="*", ms=11, color="C2", ls="none",
                label=f"best: {unit} {best}")
    ax.set_xlabel("step" if by_steps else "epoch")
    scale = y_scale(result.history + result.val_history)
    if scale == "symlog":
        ax.set_yscale("symlog", linthresh=symlog_threshold(result.history))
    else:
        ax.set_yscale(scale)
    ax.set_ylabel("objective")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def y_scale(values) -> str:
    """"linear", or "log" ("symlog" where a value is not positive) when on a linear
    axis the curve would be flat: its values span more than a factor of 100, or after
    the first tenth of the run (at least the first point) they span less than
    FLAT_SHARE of the whole range, the start dwarfing the rest."""
    v = np.array([x for x in values if math.isfinite(x)], dtype=float)
    if len(v) < 3:
        return "linear"
    span = v.max() - v.min()
    tail = v[max(1, len(v) // 10):]
    flat = span > 0 and tail.max() - tail.min() < FLAT_SHARE * span
    wide = v.min() > 0 and v.max() / v.min() > 100
    if not (flat or wide):
        return "linear"
    return "log" if v.min() > 0 else "symlog"


def symlog_threshold(values) -> float:
    """The linear band of a symlog axis: the size of the tail's values."""
    v = np.abs([x for x in values[max(1, len(values) // 10):] if math.isfinite(x)])
    return float(max(v.max() if len(v) else 1.0, 1e-300))


def plot_file(path: pathlib.Path) -> pathlib.Path:
    """The file --plot writes: PATH in the format its suffix names (PNG without one,
    then with .png appended, as matplotlib does, unless PATH is a device or a pipe).
    Checked before the run: matplotlib is installed and can write that format."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        fail("lossc: error: --plot needs matplotlib, an optional extra: "
             "pip install 'lossc[plot]' (or pip install matplotlib)")
    if not path.suffix and not written_in_place(path):
        path = path.with_name(path.name + ".png")
    formats = FigureCanvasBase.get_supported_filetypes()
    if plot_format(path) not in formats:
        fail(f"lossc: error: --plot {path}: matplotlib cannot write {path.suffix} files "
             f"(it writes {', '.join('.' + f for f in sorted(formats))})")
    return path


def plot_format(path: pathlib.Path) -> str:
    return path.suffix[1:].lower() or "png"


def default_params_path(file: pathlib.Path) -> pathlib.Path:
    """Where the parameters go without --out: the model's name with .params.npz, in
    the current folder (the model's folder may be read-only, or shared: samples/)."""
    return pathlib.Path(file.stem + ".params.npz")


def ignore_later_interrupts(signum, frame) -> None:
    """SIGINT's handler once a run was interrupted (first_interrupt_only)."""


def first_interrupt_only(command):
    """`command` with Ctrl-C taken once: the first SIGINT raises KeyboardInterrupt (the
    run stops, keeping its best parameters), any later one is ignored, so that a
    second Ctrl-C cannot cut short the stopping and the writing of the parameters (it
    ended the command with 'Aborted!' and no file, or a traceback). SIGINT stays
    ignored to the end of an interrupted command, which then exits with status 130;
    otherwise the previous handler is put back. (Ignored by a handler that does
    nothing, not by SIG_IGN: a SIGINT that arrived while the first one's handler ran
    would find SIG_IGN, and Python prints "Signal 2 ignored due to race condition"
    with a traceback.)"""
    @functools.wraps(command)
    def run(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return command(*args, **kwargs)      # (signal handlers are the main thread's)
        interrupted = False

        def interrupt(signum, frame):
            nonlocal interrupted
            interrupted = True
            signal.signal(signal.SIGINT, ignore_later_interrupts)
            raise KeyboardInterrupt
        previous = signal.signal(signal.SIGINT, interrupt)
        try:
            return command(*args, **kwargs)
        finally:
            if not interrupted:
                signal.signal(signal.SIGINT, previous)
    return run


@click.command("train")
@model_options
@click.option("--data", type=click.Path(path_type=pathlib.Path),
              help="Training data: .csv (a header names the inputs' columns: y, x.0, x.1, "
                   "...; without one, declaration order), .npz (an array per input) or .npy; "
                   "or chunks streamed from disk: a folder or glob of .npy files (a folder "
                   "per input) or of .parquet files (docs/dask.md).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Train on chunked --data with Dask: the address of a dask.distributed "
                   "scheduler (tcp://host:8786), or 'local' for a LocalCluster of a worker "
                   "per core (needs lossc[dask]).")
@click.option("--optimizer", type=click.Choice(NAMES), default="adam", show_default=True)
@click.option("--lr", type=DECIMAL_FLOAT, default=None,
              help="Learning rate (default 0.01). For lbfgs and newton-cg: the first trial "
                   "step of each line search (default 1).")
@click.option("--momentum", type=DECIMAL_FLOAT, default=None,
              help="Momentum for momentum and nesterov (default 0.9), rmsprop (default 0).")
@click.option("--weight-decay", type=DECIMAL_FLOAT, default=None,
              help="L2 weight decay (decoupled for adamw; default 0, 0.01 for adamw).")
@click.option("--clip-norm", type=DECIMAL_FLOAT, default=None,
              help="Clip the gradient to this global norm before each step.")
@click.option("--l1", "l1_items", multiple=True, metavar="PARAM=WEIGHT",
              help="An L1 penalty on a parameter, weight times the sum of its absolute "
                   "values (repeatable; parameters not named are not penalized): a "
                   "proximal step for the SGD family, adam and adamw, OWL-QN for lbfgs. "
                   "Gives exact zeros.")
@click.option("--batch-size", type=DECIMAL_INT, default=None,
              help="Samples per step (default 64); 0: the whole data set (batch descent, "
                   "the only mode of lbfgs and newton-cg); 1: stochastic.")
@click.option("--epochs", type=DECIMAL_INT, default=None,
              help="Passes over the data (default 10 unless --steps is given); for lbfgs "
                   "and newton-cg, iterations (default at most 1000).")
@click.option("--steps", type=DECIMAL_INT, default=None,
              help="Optimizer steps (a model without inputs: default 1000).")
@click.option("--schedule", default="constant", show_default=True,
              help="Learning-rate schedule, per epoch: constant, step:SIZE[:GAMMA], "
                   "exponential:GAMMA, cosine[:T_MAX[:ETA_MIN]].")
@click.option("--validation", type=DECIMAL_FLOAT, default=None, metavar="FRACTION",
              help="Hold out this fraction of the data: keep the parameters best on it and "
                   "stop early when it stops improving.")
@click.option("--val-data", type=click.Path(path_type=pathlib.Path),
              default=None, metavar="PATH",
              help="A validation set of its own (.csv, .npz, .npy, or chunks as --data "
                   "takes them; a time-ordered or grouped hold-out), instead of "
                   "--validation.")
@click.option("--patience", type=DECIMAL_INT, default=None,
              help="Epochs without improvement before stopping early (default 5 with "
                   "--validation or --val-data).")
@click.option("--tol-grad", type=DECIMAL_FLOAT, default=None,
              help="Stop when the full-data gradient norm is at most this.")
@click.option("--tol-loss", type=DECIMAL_FLOAT, default=None,
              help="Stop when an epoch changes the objective by at most this.")
@click.option("--monitor", type=click.Choice(["full", "batches"]), default="full",
              show_default=True,
              help="The epoch loss: the objective over the training data after each epoch, "
                   "or the epoch's mini-batch objectives combined (no extra pass).")
@click.option("--hyper", "hypers", multiple=True, metavar="NAME=VALUE",
              help="Set a hyperparameter (repeatable).")
@click.option("--freeze", "frozen", multiple=True, metavar="PARAM",
              help="Keep this parameter at its initial value (repeatable; with --init, "
                   "the value given there).")
@click.option("--seed", type=DECIMAL_INT, default=0, show_default=True,
              help="Seed for the initial parameters, shuffling and the validation split.")
@click.option("--init", "init_path", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              default=None, help="Start from saved parameters (.npz or .json).")
@click.option("--out", type=click.Path(dir_okay=False), callback=output_path, default=None,
              help="Where to write the parameters: .npz, or .json if the name ends in "
                   ".json (default: FILE's name with .params.npz, in the current folder; an "
                   "existing file is replaced, and a line says so first).")
@click.option("--plot", type=click.Path(dir_okay=False), callback=output_path, default=None,
              help="Draw the loss curve to this PNG (needs matplotlib).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@first_interrupt_only
def train(file, dims, dtype, data, scheduler, optimizer, lr, momentum, weight_decay,
          clip_norm, l1_items, batch_size, epochs, steps, schedule, validation, val_data,
          patience, tol_grad, tol_loss, monitor, hypers, frozen, seed, init_path, out, plot,
          quiet):
    """Train the model in FILE and save the best parameters found.

    \b
      lossc train model.loss --data train.csv --optimizer adam --lr 0.01 --epochs 20
      lossc train rosenbrock.loss --optimizer momentum --lr 1e-3 --steps 5000

    If the loss becomes NaN or infinite, or on Ctrl-C, training stops and the best
    parameters so far are still written (exit status 1, or 130 for Ctrl-C)."""
    # (the optimizer checks the ranges of its own options, --lr to --clip-norm)
    check_numbers({"--batch-size": (batch_size, ">= 0"), "--epochs": (epochs, "> 0"),
                   "--steps": (steps, "> 0"), "--patience": (patience, "> 0"),
                   "--seed": (seed, ">= 0"), "--lr": (lr, "finite"),
                   "--momentum": (momentum, "finite"), "--clip-norm": (clip_norm, "finite"),
                   "--weight-decay": (weight_decay, "finite"),
                   "--tol-grad": (tol_grad, ">= 0"), "--tol-loss": (tol_loss, ">= 0")})
    if validation is not None and not 0 < validation < 1:
        fail(f"lossc: error: --validation must be a fraction between 0 and 1, got "
             f"{validation:g}")
    if validation is not None and val_data is not None:
        fail("lossc: error: --validation and --val-data are exclusive: hold out a "
             "fraction of --data, or give a validation set, not both")
    hyper_values = parse_hypers(hypers)
    l1_values = parse_pairs(l1_items, "--l1", finite_float)
    # every output is checked before the run, so that none of it is lost at the end
    out, default_out = params_file(out or default_params_path(file)), out is None
    inputs = {"FILE": file, "--data": data, "--val-data": val_data, "--init": init_path}
    check_output("--out" if not default_out else "the parameters file", out, inputs)
    if default_out and out.exists():
        click.echo(f"lossc: {out} exists and will be replaced at the end of the run "
                   "(--out names another file)", err=True)
    if plot is not None:
        plot = plot_file(plot)
        # (a symbolic link or another name can make it --out's file)
        check_output("--plot", plot, {**inputs, "--out": out})
    model = load_model(file, dims, dtype)
    check_memory(model)
    chunked = data is not None and is_chunked(str(data))
    if scheduler is not None and not chunked:
        fail("lossc: error: --scheduler trains on chunked --data (a folder or glob of .npy "
             "or .parquet files)")
    session = contextlib.ExitStack()     # (the Dask client of --scheduler, for the run)
    try:
        sched = schedules.parse(schedule)
        if optimizer in FULL_BATCH:
            # the line search picks each step over the whole training set
            if batch_size:
                raise ValueError(f"--batch-size does not apply to {optimizer}: each of its "
                                 f"iterations takes the whole data set (leave it out, or 0)")
            if schedule != "constant":
                raise ValueError(f"--schedule does not apply to {optimizer}: its line "
                                 f"search picks each step")
        elif lr is None:
            lr = 0.01
        opt = by_name(optimizer, lr, momentum, weight_decay, clip_norm,
                      l1_option(model, l1_values))
        if model.inputs and data is None:
            raise ValueError("the model has inputs (" + ", ".join(i.name for i in model.inputs)
                             + "): give the training data with --data")
        if not model.inputs and data is not None:
            raise ValueError(f"{file.name} has no inputs, so it takes no data: train it "
                             "with --steps")
        if chunked:
            session.enter_context(dask_session(scheduler))
            arrays = as_chunks(model, str(data), "--data")
        else:
            arrays = load_data(data, model) if data is not None else None
        if val_data is not None and not model.inputs:
            raise ValueError(f"{file.name} has no inputs, so it takes no --val-data")
        val_chunked = val_data is not None and is_chunked(str(val_data))
        val_arrays = (as_chunks(model, str(val_data), "--val-data") if val_chunked else
                      load_data(val_data, model) if val_data is not None else None)
        init = load_params(init_path, model) if init_path is not None else None
        options = dict(epochs=epochs, steps=steps, seed=seed, hypers=hyper_values,
                       schedule=sched, tol_grad=tol_grad, tol_loss=tol_loss,
                       validation=validation, val_data=val_arrays, patience=patience,
                       init=init, freeze=frozen, monitor=monitor)
        if batch_size is not None:
            options["batch_size"] = batch_size or None
        config = TrainConfig(**train_options(opt, options))
        check_run(opt, model, config)
        check_frozen(model, config.freeze)
        # the run's, as it will train
        n_val = (val_arrays.n_samples if val_chunked else
                 n_samples(val_arrays) if val_arrays is not None else None)
        plan = (chunked_plan(model, arrays, config, n_val) if chunked
                else config.plan(model, n_samples(arrays), n_val))
        progress = Progress(model, plan, quiet)
        if not quiet:
            held_out = f" (+{plan.n_val} for validation)" if plan.n_val else ""
            what = (f"no data, {plan.total_steps} steps" if not model.inputs else
                    f"{plan.n_train} samples{held_out}, full batch, at most "
                    f"{plan.epochs} iterations" if optimizer in FULL_BATCH else
                    f"{plan.n_train} samples{held_out}, {plan.per_epoch} steps an epoch, "
                    f"{plan.epochs} epochs")
            how = describe_optimizer(optimizer, opt, l1_values)
            click.echo(f"training {file.name}: {what}; {how}", err=True)
        result = run_training(model, arrays, opt, config=dataclasses.replace(
            config, callback=progress.epoch, progress=progress.step))
    except (DataError, ValueError, TypeError) as e:
        fail(f"lossc: error: {e}")
    finally:
        session.close()
    progress.finish()

    rate = progress.rate(result.steps)
    if result.ok:
        click.echo(result.stopped_reason[:1].upper() + result.stopped_reason[1:] + ".")
    unit = "epoch" if model.inputs else "step"
    epochs = f", {plural(result.epochs, 'epoch')}" if model.inputs else ""
    click.echo(f"{plural(result.steps, 'step')}{epochs} in {format_seconds(result.seconds)} ({rate}); "
               f"objective {result.history[0]:.6g} -> {result.history[-1]:.6g}; best "
               f"{result.best_loss:.6g}{' on validation' if result.val_history else ''} "
               f"after {unit} {result.best_epoch}")
    if not result.ok:
        click.echo(f"lossc: {result.stopped_reason}", err=True)
    elif result.best_epoch == 0 and result.epochs > 0:
        click.echo("lossc: warning: the objective never went below its initial value; the "
                   f"learning rate ({opt.lr:g}) may be too large", err=True)
    try:
        save_params(out, result.params, model=model, hypers=hyper_values)
    except OSError as e:
        cannot_write(out, e)
    click.echo(f"wrote {out} ({describe(model)})")
    if plot is not None:
        try:
            plot_curve(plot, result, f"{file.name}: {optimizer}, lr {opt.lr:g}",
                       not model.inputs, plan.per_epoch)
        except OSError as e:
            cannot_write(plot, e)
        except ValueError as e:
            fail(f"lossc: error: cannot draw {plot}: {e}")
        click.echo(f"wrote {plot}")
    if result.stopped == "interrupted":
        sys.exit(130)
    if not result.ok:
        sys.exit(1)


def chunked_plan(model, chunks, config, n_val):
    """The plan of a run on chunked data, its held-out chunks (validation=) apart as
    the run will hold them out (lossc.optim.chunked.held_out, drawn from the seed)."""
    if config.validation:
        from lossc.optim.chunked import held_out
        chunks, val = held_out(chunks, config.validation, config.seed)
        n_val = val.n_samples
    return config.plan(model, chunks.n_samples, n_val, chunk_sizes=chunks.sizes)


@contextlib.contextmanager
def dask_session(scheduler):
    """A dask.distributed client for --scheduler while the run lasts (none without):
    'local' starts a LocalCluster of a worker process per core, one thread each."""
    if scheduler is None:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        fail("lossc: error: --scheduler needs Dask: pip install 'lossc[dask]'")
    cluster = None
    try:
        if scheduler == "local":
            from lossc.options import available_cores
            # (silent workers: a task's error reaches this process, which reports it
            # in one line; a worker would log it with a traceback first. Ctrl-C is
            # this process's to handle, and the workers end when the cluster closes:
            # they ignore SIGINT, set up by lossc.optim.dask_chunks.dask_setup)
            with interrupts_deferred() as interrupted:
                cluster = LocalCluster(n_workers=available_cores(), threads_per_worker=1,
                                       processes=True, dashboard_address=None,
                                       silence_logs=logging.CRITICAL,
                                       preload=["lossc.optim.dask_chunks"])
            if interrupted:
                cluster.close()
                raise KeyboardInterrupt
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as e:
        if cluster is not None:
            cluster.close()
        fail(f"lossc: error: cannot reach the Dask scheduler {scheduler}: {e}")
    # (an interrupted gather leaves the client's tasks failed: asyncio would log each
    # with a traceback, "Task exception was never retrieved")
    asyncio_log = logging.getLogger("asyncio")
    level = asyncio_log.level
    asyncio_log.setLevel(logging.CRITICAL)
    try:
        with client:
            yield client
    finally:
        if cluster is not None:
            cluster.close()
        asyncio_log.setLevel(level)


@contextlib.contextmanager
def interrupts_deferred():
    """A Ctrl-C in the block is taken after it (a list, true if one came): Dask's
    LocalCluster interrupted while it starts leaves workers that its exit handler
    fails to close, with a traceback."""
    came: list = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return
    previous = signal.signal(signal.SIGINT, lambda *_: came.append(True))
    try:
        yield came
    finally:
        signal.signal(signal.SIGINT, previous)


@click.command("eval")
@trained_model_options
@click.option("--data", type=click.Path(path_type=pathlib.Path),
              help="Data to evaluate on (.csv, .npz, .npy), or chunks streamed from disk as "
                   "train takes them (a folder or glob of .npy or .parquet files); none for "
                   "a model without inputs.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Evaluate chunked --data with Dask, as train does: a dask.distributed "
                   "scheduler's address, or 'local'.")
@click.option("--params", "params_path", required=True,
              type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Parameters saved by lossc train (.npz or .json).")
@click.option("--hyper", "hypers", multiple=True, metavar="NAME=VALUE",
              help="Set a hyperparameter (repeatable; default: the value the parameters "
                   "file records, else the model's).")
@click.option("--metric", "metrics", multiple=True, type=click.Choice(METRICS),
              help="Also report this metric (repeatable). accuracy: the fraction of samples "
                   "whose label gives the lowest loss among the labels in the data. rmse, "
                   "mae, r2: the model's only scalar output against the label input. "
                   "logloss: an output in [0, 1], P(label = 1), against 0/1 labels, or "
                   "an output of class probabilities against int labels. auc: a scalar "
                   "output (a probability or any score) against 0/1 labels. logloss and "
                   "auc take the output named prob, p, proba or probability, else the only "
                   "one whose values lie in [0, 1].")
@click.option("--output", "output", default=None, metavar="NAME",
              help="The declared output the metrics other than accuracy use (needed where "
                   "the model has several that fit).")
@click.option("--label", default=None, metavar="NAME",
              help="The input holding the labels (default: for accuracy the int input, or "
                   "y or label; for the other metrics y, or label).")
@click.option("--stderr", "stderr", is_flag=True,
              help="Also print each parameter's estimate, standard error, z, P>|z| and 95% "
                   "interval, from the inverse Hessian of the objective (the Laplace "
                   "approximation: standard errors of a fitted `reduce sum` negative "
                   "log-likelihood).")
def eval_cmd(file, dims, dtype, data, scheduler, params_path, hypers, metrics, output,
             label, stderr):
    """Print the objective of FILE's model with saved parameters (on a data file, or
    chunked data streamed as train streams it), and the norm of its gradient there."""
    model, params, hyper_values = load_trained(file, dims, dtype, params_path,
                                               parse_hypers(hypers))
    chunked = data is not None and is_chunked(str(data))
    if scheduler is not None and not chunked:
        fail("lossc: error: --scheduler evaluates chunked --data (a folder or glob of .npy "
             "or .parquet files)")
    try:
        check_data_given(model, file, data)
        if chunked:
            if metrics or stderr:
                raise ValueError("--metric and --stderr need the data in memory (a .csv, "
                                 ".npz or .npy file); on chunked --data, eval gives the "
                                 "objective and its gradient")
            with dask_session(scheduler):
                value, grads, n = chunked_objective(model, params, str(data), hyper_values)
            scores = []
        else:
            arrays = load_data(data, model) if data is not None else {}
            n = len(next(iter(arrays.values()))) if arrays else 0
            value, grads = model.value_and_grad(params, **arrays, **hyper_values)
            scores = metric_values(model, params, arrays, hyper_values, metrics, output,
                                   label)
        if stderr:
            from lossc.optim.laplace import laplace
            table = laplace(model, params, arrays, hyper_values).summary()
    except (DataError, ValueError, TypeError) as e:
        fail(f"lossc: error: {e}")
    norm = two_norm(model.pack_params(grads))
    on = f" on {n} samples" if n else ""
    click.echo(f"objective {value:.10g}{on}; gradient norm {norm:.4g}")
    for score in scores:
        click.echo(metric_line(score, n))
    if stderr:
        click.echo(table)


def chunked_objective(model, params: dict, data: str, hypers: dict):
    """(objective, gradient as a dict, rows) of the model over chunked data, chunk by
    chunk as a training run computes it (lossc.optim.chunked.ChunkedData)."""
    from lossc.optim.chunked import ChunkedData
    chunked = ChunkedData(model, as_chunks(model, data, "--data"), hypers, "--data")
    try:
        value, grad = chunked.value_and_grad(model.pack_params(params))
    finally:
        chunked.close()
    return value, model.unpack_params(grad), chunked.B


def metric_values(model, params, arrays: dict, hypers: dict, names, output, label) -> list:
    """Each metric asked for (in order, once each), the model's predictions on the
    data computed once for those that use an output."""
    if names and not model.inputs:
        raise ValueError(f"{names[0]} compares predictions with labels, but the model has "
                         "no inputs")
    uses_outputs = [name for name in names if name != "accuracy"]
    if output is not None and not uses_outputs:
        raise ValueError(f"--output {output}: it picks the output of the metrics "
                         f"{', '.join(m for m in METRICS if m != 'accuracy')}; give one "
                         "with --metric")
    predictions = model.predict(params, **arrays, **hypers) if uses_outputs else None
    return [metric(model, params, arrays, name, hypers, output, label, predictions)
            for name in dict.fromkeys(names)]


def metric_line(score, n: int) -> str:
    """`accuracy 0.8470 (847/1000, labels from 'y')`, `rmse 0.1021 (output 'mu'
    against 'y')`."""
    if score.metric == "accuracy":
        return (f"accuracy {score.value:.4f} ({round(score.value * n)}/{n}, labels from "
                f"'{score.label}')")
    if math.isnan(score.value):        # (auc with one class in the labels)
        return (f"{score.metric} undefined: the labels in '{score.label}' hold one class "
                "only")
    return f"{score.metric} {score.value:.6g} (output '{score.output}' against '{score.label}')"
