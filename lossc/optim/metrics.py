"""Per-sample losses and classification accuracy, computed from the compiled loss alone.

A `.loss` file defines a loss, not a prediction, but for a classifier written as a
negative log-likelihood (logistic, softmax) the predicted class of a sample is the label
value that gives it the lowest loss. `accuracy` uses exactly that: it evaluates each
sample's loss with the label set to every class seen in the data and counts how often
the argmin is the true label. Terms without inputs (a penalty on the weights) are the
same for every class, so they do not change the argmin.
"""
from __future__ import annotations

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
