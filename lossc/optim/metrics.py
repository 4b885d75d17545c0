"""Metrics of a trained model: per-sample losses and classification accuracy, computed
from the compiled loss alone; rmse, mae, r2, logloss and auc, computed from a declared
output (`output NAME = ...`, model.predict) against a label input.

A `.loss` file defines a loss, not a prediction, but for a classifier written as a
negative log-likelihood (logistic, softmax) the predicted class of a sample is the label
value that gives it the lowest loss. `accuracy` uses exactly that: it evaluates each
sample's loss with the label set to every class seen in the data and counts how often
the argmin is the true label. Terms without inputs (a penalty on the weights) are the
same for every class, so they do not change the argmin.

The other metrics need the model to say what it predicts: `metric(model, params, data,
"rmse")` picks the output and the label input as choose_output and metric_label
describe, or as `output=` and `label=` name them. The array functions (rmse, mae, r2,
logloss, auc) take labels and predictions directly. NumPy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

MAX_CLASSES = 100


def per_sample_loss(model, params, data: dict, hypers: Optional[dict] = None) -> np.ndarray:
    """The loss of each sample on its own (an array of length N): the objective of a
    batch of one, which is the same under `reduce mean` and `reduce sum`."""
    theta = params if isinstance(params, np.ndarray) else model.pack_params(params)
    theta = np.ascontiguousarray(theta, dtype=model.dtype)
    bound = model.bind(data, hypers or {})
    # chunks(B) splits the validated batch into views of one sample each: no copies and
    # no validation per sample.
    return np.array([model.loss_flat(theta, one) for one in bound.chunks(bound.B)])


def label_input(model, label: Optional[str] = None):
    """The input holding class labels: `label`, else the only int input, else a scalar
    input named y or label."""
    names = {i.name: i for i in model.inputs}
    if label is not None:
        if label not in names:
            raise ValueError(f"no input named {label!r}; the model's inputs are "
                             f"{', '.join(names)}")
        spec = names[label]
    else:
        ints = [i for i in model.inputs if i.is_int and not i.shape]
        named = [names[n] for n in ("y", "label") if n in names and not names[n].shape]
        if len(ints) == 1:
            spec = ints[0]
        elif named:
            spec = named[0]
        else:
            raise ValueError("cannot tell which input holds the class labels; name it "
                             "(label=... in Python, --label on the command line)")
    if spec.shape:
        raise ValueError(f"input {spec.name!r} is not a scalar, so it cannot hold class "
                         "labels")
    return spec


def accuracy(model, params, data: dict, hypers: Optional[dict] = None,
             label: Optional[str] = None) -> float:
    """The fraction of samples whose true label is the lowest-loss class (see the
    module docstring). The classes are the label values present in `data`."""
    spec = label_input(model, label)
    y = np.asarray(data[spec.name])
    classes = np.unique(y)
    if len(classes) > MAX_CLASSES:
        raise ValueError(f"input {spec.name!r} holds {len(classes)} distinct values; that "
                         "does not look like class labels")
    losses = np.empty((len(classes), len(y)))
    for k, c in enumerate(classes):
        trial = dict(data)
        trial[spec.name] = np.full_like(y, c)
        losses[k] = per_sample_loss(model, params, trial, hypers)
    predicted = classes[np.argmin(losses, axis=0)]
    return float(np.mean(predicted == y))


# ------------------------------------------------------------ metrics of a declared output

# Each metric below compares a declared output (`output NAME = ...`) with a label input:
#   rmse, mae, r2   a real scalar output (the prediction) against a real label;
#   logloss         a scalar output in [0, 1] (P(label = 1)) against 0/1 labels, or a
#                   vector output of class probabilities against int labels 0..K-1;
#   auc             a scalar output (any score; larger means label 1) against 0/1 labels.
# The array functions follow scikit-learn's definitions (sklearn.metrics), which the
# tests compare them with, constant labels and tied scores included.

REGRESSION = ("rmse", "mae", "r2")
PROBABILITY = ("logloss", "auc")
METRICS = ("accuracy",) + REGRESSION + PROBABILITY
# output names taken as the probability without asking, in this order
PROBABILITY_NAMES = ("prob", "p", "proba", "probability")
LABEL_NAMES = ("y", "label")      # the label input without --label / label=


def rmse(y, pred) -> float:
    """Root mean squared error."""
    y, pred = _pair(y, pred)
    return float(np.sqrt(np.mean((y - pred) ** 2)))


def mae(y, pred) -> float:
    """Mean absolute error."""
    y, pred = _pair(y, pred)
    return float(np.mean(np.abs(y - pred)))


def r2(y, pred) -> float:
    """The coefficient of determination, 1 - SS_res / SS_tot. For a constant label
    (SS_tot = 0) it is 1.0 when the predictions are exact and 0.0 otherwise, as
    scikit-learn's r2_score gives (its force_finite default)."""
    y, pred = _pair(y, pred)
    residual = float(np.sum((y - pred) ** 2))
    total = float(np.sum((y - np.mean(y)) ** 2))
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


def logloss(y, prob) -> float:
    """Mean negative log-likelihood of the labels: for a vector of probabilities per
    sample (B, K), -mean(log prob[i, y_i]) with int labels 0..K-1; for one probability
    per sample (B,), P(y = 1), with labels 0 or 1. Probabilities are clipped to
    [eps, 1 - eps] (eps the machine epsilon of their dtype), as scikit-learn's log_loss
    clips them."""
    prob = np.asarray(prob)
    eps = np.finfo(prob.dtype if prob.dtype.kind == "f" else np.float64).eps
    if prob.ndim == 2:
        y = _class_labels(y, prob.shape[1], len(prob))
        picked = np.clip(prob, eps, 1 - eps)[np.arange(len(y)), y]
        return float(-np.mean(np.log(picked)))
    y, prob = _pair(_binary_labels(y), prob)
    _check_probabilities(prob)
    p = np.clip(prob, eps, 1 - eps)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


def auc(y, score) -> float:
    """The area under the ROC curve of `score` for 0/1 labels: the probability that a
    random positive scores above a random negative, ties counting one half (the
    Mann-Whitney statistic over average ranks). NaN where the labels hold one class
    only (scikit-learn's roc_auc_score warns and gives NaN there too)."""
    y, score = _pair(_binary_labels(y), score)
    positives = int(np.sum(y == 1))
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _average_ranks(score)
    u = float(np.sum(ranks[y == 1])) - positives * (positives + 1) / 2
    return u / (positives * negatives)


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks of `a`, each run of equal values sharing the mean of its ranks."""
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    ends = np.r_[starts[1:], len(a)]
    mean_rank = (starts + ends + 1) / 2.0          # (mean of the ranks start+1 .. end)
    ranks = np.empty(len(a))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _pair(y, pred):
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if y.ndim != 1 or pred.shape != y.shape:
        raise ValueError(f"labels of shape {y.shape} and predictions of shape "
                         f"{pred.shape}: expected one of each per sample")
    if len(y) == 0:
        raise ValueError("no samples")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(pred))):
        raise ValueError("the labels or the predictions hold NaN or infinite values")
    return y, pred


def _binary_labels(y) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    odd = np.setdiff1d(np.unique(y), [0.0, 1.0])
    if len(odd):
        raise ValueError(f"binary labels must be 0 or 1, found {odd[0]:g}")
    return y


def _class_labels(y, k: int, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"labels of shape {y.shape} for {n} samples")
    if np.any(y != np.round(y)) or np.any(y < 0) or np.any(y >= k):
        raise ValueError(f"class labels must be integers 0..{k - 1} (the output has {k} "
                         "probabilities per sample)")
    return y.astype(np.int64)


def _check_probabilities(p: np.ndarray) -> None:
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError(f"probabilities must lie in [0, 1], found {p[(p < 0) | (p > 1)][0]:g}")


# --------------------------------------------------- which output and which input a metric uses

@dataclass(frozen=True)
class MetricValue:
    """A metric's value and what it compared: the output and the label input."""

    metric: str
    value: float
    output: str
    label: str


def metric(model, params, data: dict, name: str, hypers: Optional[dict] = None,
           output: Optional[str] = None, label: Optional[str] = None,
           predictions: Optional[dict] = None) -> MetricValue:
    """The metric `name` (one of METRICS) of `model` with `params` on `data`. accuracy
    uses the loss alone (see the module docstring); the others compare a declared output
    with a label input, each chosen as choose_output and regression_label say (`output`
    and `label` name them). `predictions`, model.predict's result on `data` when the
    caller has it already, saves computing it again."""
    if name == "accuracy":
        spec = label_input(model, label)
        return MetricValue(name, accuracy(model, params, data, hypers, spec.name), "",
                           spec.name)
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; the metrics are {', '.join(METRICS)}")
    target = metric_label(model, label)
    if predictions is None:
        predictions = model.predict(params, **data, **(hypers or {}))
    chosen = choose_output(model, name, predictions, output)
    fn = {"rmse": rmse, "mae": mae, "r2": r2, "logloss": logloss, "auc": auc}[name]
    try:
        value = fn(data[target.name], predictions[chosen.name])
    except ValueError as e:
        raise ValueError(f"{name} of output {chosen.name!r} against input "
                         f"{target.name!r}: {e}") from None
    return MetricValue(name, value, chosen.name, target.name)


def metric_label(model, label: Optional[str] = None):
    """The input the metrics other than accuracy compare with: `label`, else the first
    of LABEL_NAMES the model has, scalar."""
    names = {i.name: i for i in model.inputs}
    if label is None:
        label = next((n for n in LABEL_NAMES if n in names), None)
        if label is None:
            scalars = [i.name for i in model.inputs if not i.shape]
            raise ValueError("cannot tell which input holds the labels (no input named "
                             f"{' or '.join(LABEL_NAMES)}); name it with --label (label= in "
                             "Python)" + (f": one of {', '.join(scalars)}" if scalars else
                                          ", though the model has no scalar input"))
    if label not in names:
        raise ValueError(f"no input named {label!r}; the model's inputs are "
                         f"{', '.join(names) or 'none'}")
    if names[label].shape:
        raise ValueError(f"input {label!r} is not a scalar, so it cannot hold labels")
    return names[label]


def choose_output(model, metric_name: str, predictions: dict, output: Optional[str] = None):
    """The declared output a metric compares with the labels:
    - `output`, when given (a scalar; for logloss a vector of class probabilities too);
    - rmse, mae, r2: the model's only scalar output;
    - logloss, auc: the scalar output named prob, p, proba or probability (logloss:
      a vector one too), else the only output whose values on this data lie in [0, 1]
      (logloss: or whose rows are probability vectors).
    Anything else is a ValueError naming the candidates."""
    if not model.outputs:
        raise ValueError(f"{metric_name} compares a declared output with the labels, but "
                         "the model declares no outputs (add 'output NAME = EXPR')")
    by_name = {o.name: o for o in model.outputs}
    takes_vector = metric_name == "logloss"
    if output is not None:
        if output not in by_name:
            raise ValueError(f"no output named {output!r}; the model's outputs are "
                             f"{', '.join(by_name)}")
        spec = by_name[output]
        if len(spec.shape) > (1 if takes_vector else 0):
            kind = "a scalar or a vector of class probabilities" if takes_vector else "a scalar"
            raise ValueError(f"{metric_name} takes {kind}; output {output!r} has shape "
                             f"{list(spec.shape)}")
        return spec
    fits = [o for o in model.outputs
            if not o.shape or (takes_vector and len(o.shape) == 1)]
    if metric_name in REGRESSION:
        candidates = fits
        what = "scalar outputs"
    else:
        named = [by_name[n] for n in PROBABILITY_NAMES if n in by_name and by_name[n] in fits]
        if named:
            return named[0]
        candidates = [o for o in fits if _holds_probabilities(predictions[o.name], o)]
        what = "outputs in [0, 1]" if not takes_vector else \
            "outputs in [0, 1] or of probability vectors"
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(f"{metric_name}: none of the outputs ({', '.join(by_name)}) is "
                         f"one of the {what} it compares with the labels; name one with "
                         "--output (output= in Python)")
    raise ValueError(f"{metric_name}: cannot tell which output to use among the "
                     f"{what} {', '.join(o.name for o in candidates)}; name one with "
                     "--output (output= in Python)")


def _holds_probabilities(values, spec) -> bool:
    a = np.asarray(values, dtype=np.float64)
    if not (a.size and np.all(np.isfinite(a)) and np.all((a >= 0) & (a <= 1))):
        return False
    if spec.shape:       # a probability vector per sample: each row sums to 1
        return bool(np.allclose(a.sum(axis=-1), 1.0, rtol=0, atol=1e-6))
    return True
