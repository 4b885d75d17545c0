"""`lossc train` and `lossc eval`: training and evaluation from the shell."""
from __future__ import annotations

import json
import pathlib
import sys
import time

import click
import numpy as np

from lossc.cli_common import fail, load_model, model_options, parse_pairs
from lossc.optim.data import DataError, load_data
from lossc.optim.driver import train as run_training
from lossc.optim.optimizers import NAMES, by_name
from lossc.optim.schedules import parse_schedule


class Progress:
    """A progress bar on stderr: epoch, steps, current loss, samples per second. On a
    terminal it redraws one line; elsewhere (logs, CI) it prints a line per epoch."""

    def __init__(self, total_epochs, total_steps, steps_per_epoch, quiet: bool):
        self.tty = sys.stderr.isatty()
        self.quiet = quiet
        self.total_epochs, self.total_steps = total_epochs, total_steps
        self.per_epoch = steps_per_epoch
        self.start = time.perf_counter()
        self.samples = 0
        self.last_draw = 0.0
        self.epoch_seen = -1

    def __call__(self, step, epoch, loss, samples):
        self.samples += samples
        if self.quiet:
            return
        now = time.perf_counter()
        if self.tty and now - self.last_draw > 0.05:
            self.last_draw = now
            click.echo("\r" + self.line(step, epoch, loss, now), err=True, nl=False)
        elif not self.tty and epoch != self.epoch_seen and self.total_epochs:
            self.epoch_seen = epoch

    def line(self, step, epoch, loss, now) -> str:
        total = self.total_steps or (self.total_epochs or 1) * self.per_epoch
        frac = min(1.0, step / max(total, 1))
        bar = "#" * int(frac * 24) + "-" * (24 - int(frac * 24))
        rate = self.samples / max(now - self.start, 1e-9)
        where = f"epoch {epoch + 1}/{self.total_epochs}" if self.total_epochs else \
            f"step {step}/{self.total_steps}"
        return f"[{bar}] {where}  loss {loss:.6g}  {rate:,.0f} samples/s"

    def epoch_done(self, epoch, loss, params=None):
        if self.quiet:
            return True
        if self.tty:
            click.echo("\r" + " " * 90 + "\r", err=True, nl=False)
        click.echo(f"epoch {epoch:>4}  loss {loss:.6g}", err=True)
        return True

    def finish(self):
        if self.tty and not self.quiet:
            click.echo("", err=True)


def save_params(path: pathlib.Path, params: dict) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in params.items()},
                                   indent=1))
    else:
        np.savez(path, **params)


def read_params(path: pathlib.Path, model) -> dict:
    if not path.exists():
        fail(f"lossc: error: {path}: no such file")
    if path.suffix == ".json":
        raw = json.loads(path.read_text())
        params = {k: np.asarray(v, dtype=float) for k, v in raw.items()}
    else:
        with np.load(path) as z:
            params = {k: z[k] for k in z.files}
    try:
        model.pack_params(params)
    except (ValueError, TypeError) as e:
        fail(f"lossc: error: {path}: {e}")
    return params


def model_has_epochs(result) -> bool:
    return result.epochs > 0 and len(result.history) > 1


def plot_curve(path: pathlib.Path, result, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("lossc: error: --plot needs matplotlib (pip install 'lossc[plot]'); the "
             "parameters were saved")
    fig, ax = plt.subplots(figsize=(6.4, 4))
    from matplotlib.ticker import MaxNLocator
    if model_has_epochs(result):
        ax.plot(range(len(result.history)), result.history, marker="o", label="training")
        if result.val_history:
            ax.plot(range(len(result.val_history)), result.val_history, marker="s",
                    label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.plot(range(1, len(result.step_losses) + 1), result.step_losses, label="training")
        ax.set_xlabel("step")
    losses = [v for v in (result.history or result.step_losses) if np.isfinite(v)]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 100:
        ax.set_yscale("log")
    ax.set_ylabel("objective")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command("train")
@model_options
@click.option("--data", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Training data: .csv (header names inputs), .npz or .npy.")
@click.option("--optimizer", type=click.Choice(NAMES), default="adam", show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True, help="Learning rate.")
@click.option("--momentum", type=float, default=0.9, show_default=True,
              help="For momentum and nesterov.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--clip-norm", type=float, default=None, help="Clip the gradient's norm.")
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Samples per step; 0 for the whole data set (batch descent), 1 for "
                   "stochastic descent.")
@click.option("--epochs", type=int, default=None, help="Passes over the data (default 10).")
@click.option("--steps", type=int, default=None, help="Stop after this many steps.")
@click.option("--schedule", default="constant", show_default=True,
              help="constant, step:SIZE[:GAMMA], exponential:GAMMA, cosine[:T[:FLOOR]].")
@click.option("--validation", type=float, default=None,
              help="Hold out this fraction for early stopping.")
@click.option("--patience", type=int, default=5, show_default=True)
@click.option("--tol-grad", type=float, default=None, help="Stop when the gradient norm is "
                                                          "below this.")
@click.option("--tol-loss", type=float, default=None, help="Stop when an epoch changes the "
                                                          "loss by less than this.")
@click.option("--hyper", "hypers", multiple=True, metavar="NAME=VALUE",
              help="Set a hyperparameter (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=pathlib.Path), default=None,
              help="Where to write the parameters: .npz (default FILE.params.npz) or .json.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=pathlib.Path), default=None,
              help="Draw the loss curve to this PNG (needs matplotlib).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def train(file, dims, dtype, data, optimizer, lr, momentum, weight_decay, clip_norm,
          batch_size, epochs, steps, schedule, validation, patience, tol_grad, tol_loss,
          hypers, seed, out, plot, quiet):
    """Train the model in FILE and save the best parameters found.

    \b
      lossc train model.loss --data train.csv --optimizer adam --lr 0.01 --epochs 20
      lossc train rosenbrock.loss --optimizer momentum --lr 1e-3 --steps 5000

    If the loss becomes NaN or infinite, or on Ctrl-C, training stops and the best
    parameters so far are still written."""
    model = load_model(file, dims, dtype)
    hyper_values = parse_pairs(hypers, "--hyper", float)
    try:
        train_data = load_data(data, model) if data is not None else None
        opt = by_name(optimizer, lr, momentum, weight_decay, clip_norm)
        length = epochs or (steps if not model.inputs else 10) or 10
        sched = parse_schedule(schedule, length)
        if model.inputs and train_data is None:
            fail(f"lossc: error: the model has inputs "
                 f"({', '.join(i.name for i in model.inputs)}): give --data")
        n = len(next(iter(train_data.values()))) if train_data else 1
        bs = n if batch_size == 0 else batch_size
        per_epoch = -(-n // bs) if bs else 1
        progress = Progress(epochs or (None if steps else 10) if model.inputs else None,
                            steps or (1000 if not model.inputs and not epochs else None),
                            per_epoch, quiet)
        result = run_training(model, train_data, opt, batch_size=bs or None, epochs=epochs,
                              steps=steps, seed=seed, hypers=hyper_values, schedule=sched,
                              tol_grad=tol_grad, tol_loss=tol_loss, validation=validation,
                              patience=patience, progress=progress,
                              callback=progress.epoch_done)
    except (DataError, ValueError) as e:
        fail(f"lossc: error: {e}")
    progress.finish()
    out = out or file.with_name(file.stem + ".params.npz")
    save_params(out, result.params)
    rate = progress.samples / max(result.seconds, 1e-9)
    where = (f"epoch {result.best_epoch}" if model.inputs else f"step {result.best_step}")
    epochs = f", {result.epochs} epochs" if model.inputs else ""
    summary = (f"{result.stopped}: {result.steps} steps{epochs} in {result.seconds:.2f} s "
               f"({rate:,.0f} samples/s); best objective {result.best_loss:.6g} ({where})")
    click.echo(summary)
    if result.message:
        click.echo(result.message, err=not result.ok)
    click.echo(f"wrote {out}")
    if plot is not None:
        plot_curve(plot, result, f"{file.name}: {optimizer}, lr {lr:g}")
        click.echo(f"wrote {plot}")
    if result.stopped == "interrupted":
        sys.exit(130)
    if not result.ok:
        sys.exit(1)


@click.command("eval")
@model_options
@click.option("--data", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Data to evaluate on (.csv, .npz, .npy).")
@click.option("--params", "params_path", required=True,
              type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Parameters saved by lossc train (.npz or .json).")
@click.option("--hyper", "hypers", multiple=True, metavar="NAME=VALUE")
def eval_cmd(file, dims, dtype, data, params_path, hypers):
    """Print the objective of FILE's model with saved parameters, on a data file, and
    the gradient's norm there."""
    model = load_model(file, dims, dtype)
    params = read_params(params_path, model)
    hyper_values = parse_pairs(hypers, "--hyper", float)
    try:
        arrays = load_data(data, model) if data is not None else {}
        value, grads = model.value_and_grad(params, **arrays, **hyper_values)
    except (DataError, ValueError, TypeError) as e:
        fail(f"lossc: error: {e}")
    norm = float(np.sqrt(sum(np.sum(np.square(g)) for g in grads.values())))
    n = len(next(iter(arrays.values()))) if arrays else 1
    click.echo(f"objective {value:.10g} on {n} samples; gradient norm {norm:.4g}")
