"""LossEstimator: what the regressor and the classifier share.

An estimator holds a `.loss` model (a path or source text) and names the model's
inputs that receive scikit-learn's `X`, `y` and `sample_weight`, and the outputs that
are its predictions. Fitting compiles the model for the data's dims (through
lossc.sklearn.models, once per process), then runs lossc.train; `partial_fit` takes one
pass of a first-order optimizer over each chunk of a stream.

The parameter `predict` (the output that is the prediction) shares its name with the
method: it is kept as `_predict_param`, and get_params and set_params read and write it
there.

The model's hyperparameters are the estimator's parameters by their own names. Their
names depend on the model, so they cannot stand in `__init__`'s signature, where
scikit-learn looks for parameters: `__init__` takes them as keywords (`C=0.5`) into a
private dict, `get_params` adds every hyper the model declares (the value given, else
the file's default) to the parameters of the signature, and `set_params` takes them.
`clone` (get_params, then the class called with them) and `GridSearchCV(est, {"C":
[...]})` work through these two. A hyper named like one of the estimator's own
parameters (`lr`, `epochs`, ...) could not be told from it: fit refuses the model.
"""
from __future__ import annotations

import copy
import functools
import math
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

import lossc
from lossc.optim import Optimizer, by_name
from lossc.optim.config import count
from lossc.optim.freeze import check_frozen, frozen, frozen_names
from lossc.optim.fullbatch import FullBatchOptimizer
from lossc.optim.names import FULL_BATCH
from lossc.options import Options
from lossc.sklearn.declarations import declarations, dims_from_data, source_of
from lossc.sklearn.models import shared_model
from lossc.source import Source

# train()'s options the estimator sets itself: train_options may not hold them
OWN_OPTIONS = {"hypers": "the model's hypers are the estimator's parameters",
               "seed": "it is random_state", "init": "it comes from warm_start",
               "batch_size": "it is batch_size", "epochs": "it is epochs",
               "tol_grad": "it is tol_grad", "tol_loss": "it is tol_loss",
               "config": "the options go in train_options", "data": "it is fit's X and y"}
SEED_LIMIT = 2 ** 31 - 1      # the seeds drawn from a RandomState (or None)
# L-BFGS's and Newton-CG's tol_grad by default, relative to the initial objective's
# size: scikit-learn's LogisticRegression default `tol` (docs/sklearn.md, "Stopping")
DEFAULT_TOL = 1e-4


def _as_before_on_error(fit):
    """A fit that raises (a wrong argument found after others were taken, a failed
    warm start, an interrupt) leaves the estimator's attributes as they were before
    it: classes_, model_ and params_ stay those of the last fit, together, and so does
    the state of partial_fit's optimizer (Adam's moments, its step count), which its
    steps change in place."""
    @functools.wraps(fit)
    def guarded(self, *args, **kwargs):
        before = dict(self.__dict__)
        opt = before.get("optimizer_")
        state = copy.deepcopy((opt.t, opt.state)) if opt is not None else None
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            if opt is not None:
                opt.t, opt.state = state
            raise
    return guarded


class LossEstimator(BaseEstimator):
    """The base of LossRegressor and LossClassifier (see their docstrings and
    docs/sklearn.md for the parameters)."""

    def __init__(self, model, *, X="x", y="y", predict=None, sample_weight=None,
                 optimizer="lbfgs", lr=None, batch_size="auto", epochs=None,
                 tol_grad=None, tol_loss=None, train_options=None, dims=None,
                 dtype="float64", warm_start=False, random_state=None, **hypers):
        self.model = model
        self.X = X
        self.y = y
        self._predict_param = predict     # (see get_params: `predict` is the method)
        self.sample_weight = sample_weight
        self.optimizer = optimizer
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.tol_grad = tol_grad
        self.tol_loss = tol_loss
        self.train_options = train_options
        self.dims = dims
        self.dtype = dtype
        self.warm_start = warm_start
        self.random_state = random_state
        self._hypers = dict(hypers)

    # ------------------------------------------------------------ parameters

    @classmethod
    def _get_param_names(cls):
        """The parameters of __init__'s signature (scikit-learn reads the signature on
        every get_params; it does not change)."""
        return _param_names(cls)

    def _declared_hypers(self):
        """{name: default} of the model's hypers, or None when the model cannot be read
        (fit then says why; get_params, and so repr and clone, keep working)."""
        try:
            return declarations(source_of(self.model)).hypers
        except Exception:
            return None

    def get_params(self, deep=True):
        """The parameters of the signature, and every hyper of the model by its name
        (the value given, else the file's default)."""
        params = super().get_params(deep=deep)
        params["predict"] = self._predict_param
        own = set(params)
        declared = self._declared_hypers() or {}
        for name, default in declared.items():
            if name not in own:
                params[name] = self._hypers.get(name, default)
        for name, value in self._hypers.items():
            params.setdefault(name, value)       # (not declared: fit refuses it)
        return params

    def set_params(self, **params):
        """Set parameters, the model's hypers among them. A new `model` drops the
        values given for hypers it does not declare."""
        own = set(self._get_param_names())
        hypers = {k: params.pop(k) for k in list(params) if k not in own and "__" not in k}
        if "predict" in params:
            self._predict_param = params.pop("predict")
        super().set_params(**params)
        declared = self._declared_hypers()
        if "model" in params and declared is not None:
            self._hypers = {k: v for k, v in self._hypers.items() if k in declared}
        for name, value in hypers.items():
            if declared is not None and name not in declared:
                raise ValueError(f"Invalid parameter {name!r} for {type(self).__name__}: it is "
                                 f"neither an estimator parameter nor a hyper of the model "
                                 f"(hypers: {', '.join(declared) or 'none'})")
            self._hypers[name] = value
        return self

    def _hyper_values(self, declared: dict) -> dict:
        """The hypers to train and predict with: those whose value is not the file's
        default (the compiled model holds the defaults, shaped by its dims)."""
        own = set(self._get_param_names())
        for name in declared:
            if name in own:
                raise ValueError(f"the model's hyper {name!r} has the name of a "
                                 f"parameter of {type(self).__name__}; rename it in the "
                                 f".loss file")
            if "__" in name:
                raise ValueError(f"the model's hyper {name!r} has '__' in its name, "
                                 f"which scikit-learn's set_params reads as a parameter "
                                 f"of a nested estimator; rename it in the .loss file")
        unknown = [k for k in self._hypers if k not in declared]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a hyper of the model (hypers: "
                             f"{', '.join(declared) or 'none'})")
        return {k: v for k, v in self._hypers.items()
                if not _same_value(v, declared[k])}

    # ------------------------------------------------------------ fitting

    @_as_before_on_error
    def fit(self, X, y, sample_weight=None):
        """Train the model on X and y (and sample_weight, through the input named by
        the sample_weight parameter) with lossc.train; returns self."""
        X, y = self._validate_xy(X, y, reset=True)
        source, decl = self._read_model()
        target = self._fit_target(y, decl, classes=None, refit=True)
        data = self._data(decl, X, target, sample_weight)
        model = self._compile(source, decl, data)
        options = self._train_options()
        init = self._warm_start_params(model)
        hypers = self._hypers_for(decl)
        result = lossc.train(model, data, self._optimizer(model, len(X)), hypers=hypers,
                             seed=self._seed(), init=init, **options)
        if result.stopped == "interrupted":
            raise KeyboardInterrupt
        self._warn_if_unconverged(result)
        self.params_ = result.params
        self.hypers_ = hypers
        self.history_ = list(result.history)
        self.result_ = result
        self.n_iter_ = result.epochs
        self.__dict__.pop("optimizer_", None)    # (a later partial_fit starts afresh)
        return self

    @_as_before_on_error
    def _partial_fit(self, X, y, sample_weight, classes):
        """One pass of the optimizer over the chunk X, y in batches of batch_size (the
        whole chunk by default), in the order given; the optimizer's state (Adam's
        moments, momentum) carries over to the next call."""
        first = not hasattr(self, "params_")
        X, y = self._validate_xy(X, y, reset=first)
        source, decl = self._read_model()
        target = self._fit_target(y, decl, classes=classes, refit=first)
        data = self._data(decl, X, target, sample_weight)
        if first:
            model = self._compile(source, decl, data)
            self.params_ = model.init_params(self._seed())
            self.history_ = []
            self.n_iter_ = 0
        if not hasattr(self, "optimizer_"):
            self.optimizer_ = self._optimizer()
        theta = self._steps(data, decl)
        self.params_ = self.model_.unpack_params(theta)
        self.hypers_ = self._hypers_for(decl)
        self.n_iter_ += 1
        return self

    def _steps(self, data: dict, decl) -> np.ndarray:
        """The optimizer's steps over `data` from params_; the flat parameters after
        them. A step whose objective or gradient is not finite is a ValueError, and
        params_ stay as they were before the call."""
        model, opt = self.model_, self.optimizer_
        theta = model.pack_params(self.params_)
        names = frozen_names((self.train_options or {}).get("freeze"))
        check_frozen(model, names)
        held = frozen(model, names, theta)
        hypers = self._hypers_for(decl)
        n = len(next(iter(data.values())))
        size = self._chunk_batch_size() or n
        total = 0.0
        for start in range(0, n, size):
            batch = {k: v[start:start + size] for k, v in data.items()}
            value, grad = model.value_and_grad_flat(theta, model.bind(batch, hypers))
            if not (math.isfinite(value) and np.isfinite(grad).all()):
                raise ValueError(f"partial_fit: the objective or its gradient is not finite "
                                 f"at the batch starting at sample {start} (a smaller lr may "
                                 f"help); the parameters are left as before this call")
            if held is not None:
                held.zero_grad(grad)
            opt.step(theta, grad)
            if held is not None:
                held.restore(theta)
            total += value * (len(batch[self.X]) if model.reduce == "mean" else 1)
        self.history_.append(total / n if model.reduce == "mean" else total)
        return theta

    def _chunk_batch_size(self):
        """partial_fit's batch size, checked as fit's (lossc.train's) is: None for the
        whole chunk ("auto", None or 0)."""
        if isinstance(self.batch_size, str) and self.batch_size == "auto":
            return None
        return count("batch_size", self.batch_size, 0,
                     "a positive integer (or None/0 for the whole chunk, or 'auto')") or None

    def _validate_xy(self, X, y, reset: bool):
        return validate_data(self, X, y, reset=reset, multi_output=True,
                             dtype=(np.float64, np.float32), y_numeric=self._y_numeric)

    def _read_model(self) -> tuple:
        """(source, declarations) of the model; ValueErrors naming the parameter whose
        input the model lacks."""
        source = source_of(self.model)
        decl = declarations(source)
        self._check_inputs(decl)
        return source, decl

    def _data(self, decl, X, target: dict, sample_weight) -> dict:
        """The model's inputs: X, the encoded target and the sample weights."""
        data = {self.X: self._features(decl, X), **target}
        if self.sample_weight is not None:
            data[self.sample_weight] = _check_sample_weight(sample_weight, X,
                                                            dtype=np.float64)
        elif sample_weight is not None:
            raise ValueError(f"sample_weight was given, but the estimator names no input "
                             f"of the model for it: declare one (`input w`), use it in the "
                             f"loss (`loss = w * ...`) and pass sample_weight='w'")
        return data

    def _check_inputs(self, decl) -> None:
        roles = {"X": self.X, "y": self.y}
        if self.sample_weight is not None:
            roles["sample_weight"] = self.sample_weight
        for role, name in roles.items():
            if name not in decl.inputs:
                raise ValueError(f"{role}={name!r} is not an input of the model (inputs: "
                                 f"{', '.join(decl.inputs) or 'none'})")
        if len(set(roles.values())) != len(roles):
            raise ValueError(f"X, y and sample_weight must name different inputs, got "
                             f"{roles}")
        others = [name for name in decl.inputs if name not in roles.values()]
        if others:
            raise ValueError(f"the model's input {others[0]!r} is none of X={self.X!r}, "
                             f"y={self.y!r}, sample_weight={self.sample_weight!r}: the "
                             f"estimator has no data for it")

    def _features(self, decl, X: np.ndarray) -> np.ndarray:
        sizes, is_int = decl.inputs[self.X]
        if len(sizes) > 1:
            raise ValueError(f"input {self.X!r} holds a matrix a sample; X gives a vector "
                             f"of features a sample")
        if not sizes:
            if X.shape[1] != 1:
                raise ValueError(f"input {self.X!r} is one number a sample, but X has "
                                 f"{X.shape[1]} features")
            return X[:, 0]
        return X

    def _compile(self, source: Source, decl, data: dict):
        """The model compiled for the data's dims (shared within the process); sets
        model_, source_ and dims_."""
        given = self._given_dims(decl)
        extra = self._extra_dims(decl)
        for name, size in extra.items():
            if name in given and given[name] != size:
                raise ValueError(f"dims={{{name!r}: {given[name]!r}}} contradicts the data: "
                                 f"{name} is the number of classes, {size}")
        dims = dims_from_data(decl, data, given)
        dims.update(extra)
        unset = [d for d in decl.unsized if d not in dims]
        if unset:
            raise ValueError(f"dim {unset[0]!r} has no size: the data do not set it and the "
                             f"file gives none; give it in dims={{{unset[0]!r}: ...}}"
                             + self._unset_dim_hint(unset[0]))
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        model = shared_model(source, dims, self.dtype, Options.from_env())
        self._check_outputs(model)
        self.model_, self.source_, self.dims_ = model, source.text, dims
        self._source_name = source.name
        return model

    def _given_dims(self, decl) -> dict:
        if self.dims is None:
            return {}
        if not isinstance(self.dims, dict):
            raise TypeError(f"dims must be a dict of dim sizes, got "
                            f"{type(self.dims).__name__}")
        return dict(self.dims)

    def _extra_dims(self, decl) -> dict:
        """Dims the estimator sets itself (the classifier's classes_dim)."""
        return {}

    def _unset_dim_hint(self, dim: str) -> str:
        return ""

    def _check_outputs(self, model) -> None:
        """Each output the estimator predicts with exists and depends on X alone."""
        outputs = {o.name: o for o in model.outputs}
        for role, name in self._output_roles(model):
            if name not in outputs:
                raise ValueError(f"{role}={name!r} is not an output of the model (outputs: "
                                 f"{', '.join(outputs) or 'none; declare one with `output`'})")
            extra = [i for i in outputs[name].inputs if i != self.X]
            if extra:
                raise ValueError(f"output {name!r} ({role}=) depends on input {extra[0]!r}; "
                                 f"a prediction may depend on X={self.X!r} alone")

    def _output_roles(self, model) -> list:
        """(parameter, output name) of each output the estimator predicts with."""
        return []

    def _train_options(self) -> dict:
        options = dict(self.train_options or {})
        for name in options:
            if name in OWN_OPTIONS:
                raise ValueError(f"train_options may not set {name!r}: "
                                 f"{OWN_OPTIONS[name]}")
        if self.batch_size != "auto":
            options["batch_size"] = self.batch_size
        for name in ("epochs", "tol_grad", "tol_loss"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        return options

    def _optimizer(self, model=None, n_samples: int = 0) -> Optimizer:
        """A fresh optimizer: by name (with lr), or a copy of the one given (fit must
        leave the estimator's parameters as they were). L-BFGS and Newton-CG by name,
        with neither tol_grad nor tol_loss given, stop as scikit-learn's solvers do by
        default (_default_tol_grad)."""
        opt = self.optimizer
        if isinstance(opt, str):
            made = by_name(opt, lr=self.lr)
            if isinstance(made, FullBatchOptimizer) and self.tol_grad is None \
                    and self.tol_loss is None and model is not None:
                made.tol_grad, made.relative_tol_grad = self._default_tol_grad(model,
                                                                               n_samples)
            return made
        if isinstance(opt, Optimizer):
            if self.lr is not None:
                raise ValueError("lr applies to an optimizer given by name; an optimizer "
                                 "object carries its own lr")
            return copy.deepcopy(opt)
        raise TypeError(f"optimizer must be a name ('lbfgs', 'adam', ...) or a lossc "
                        f"optimizer, got {type(opt).__name__}")

    def _default_tol_grad(self, model, n_samples: int) -> tuple:
        """(tol_grad, relative_tol_grad) of L-BFGS and Newton-CG by name without
        tolerances: scikit-learn's LogisticRegression's test, relative to the initial
        objective (docs/sklearn.md, "Stopping")."""
        return DEFAULT_TOL, True

    def _first_order(self) -> bool:
        opt = self.optimizer
        if isinstance(opt, str):
            return opt.lower() not in FULL_BATCH
        return not getattr(opt, "full_batch_only", False)

    def _seed(self) -> int:
        """random_state as lossc.train's seed: an int is the seed itself (the run is
        lossc.train's with seed=random_state); None or a RandomState gives one."""
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            return int(rs)
        return int(check_random_state(rs).randint(SEED_LIMIT))

    def _hypers_for(self, decl) -> dict:
        return self._hyper_values(decl.hypers)

    def _warm_start_params(self, model):
        """With warm_start, the parameters of the last fit (if their shapes are the
        model's); otherwise None: train draws them from the seed."""
        if not (self.warm_start and hasattr(self, "params_")):
            return None
        for p in model.params:
            if np.shape(self.params_.get(p.name)) != p.shape:
                raise ValueError(f"warm_start: parameter {p.name!r} of the last fit has "
                                 f"shape {np.shape(self.params_.get(p.name))}, the model "
                                 f"now {p.shape} (the data's dims changed); fit with "
                                 f"warm_start=False")
        return self.params_

    def _warn_if_unconverged(self, result) -> None:
        """A ConvergenceWarning for a fit that ended short of a minimum (stacklevel:
        the caller of fit, past _as_before_on_error)."""
        if result.stopped in ("diverged", "bad_lr"):
            warnings.warn(f"training stopped early: {result.stopped_reason}; the best "
                          f"parameters seen are kept", ConvergenceWarning, stacklevel=4)
        elif result.stopped == "epochs" and not self._first_order():
            warnings.warn(f"{result.stopped_reason} before the optimizer's tolerances were "
                          f"met; raise epochs or loosen tol_grad", ConvergenceWarning,
                          stacklevel=4)
        elif result.stopped == "line_search" and result.epochs == 0:
            # (scikit-learn warns on L-BFGS-B's ABNORMAL stop likewise)
            warnings.warn(f"the fit took no step ({result.stopped_reason}): its "
                          f"parameters are the initial ones; scaling the features may help",
                          ConvergenceWarning, stacklevel=4)
        elif result.stopped in ("tol_grad", "tol_loss") and result.epochs == 0 \
                and not (self.warm_start and hasattr(self, "params_")):
            # (the test is absolute for a regressor: targets of 1e-5 meet it at zero)
            warnings.warn(f"the fit took no step: the initial parameters already pass "
                          f"the stopping test ({result.stopped_reason}); give a smaller "
                          f"tol_grad, or scale the targets", ConvergenceWarning,
                          stacklevel=4)

    # ------------------------------------------------------------ predicting

    def _outputs(self, X) -> dict:
        """The model's outputs for X (validated against what fit saw)."""
        check_is_fitted(self, "params_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        decl = declarations(Source(self.source_, self._source_name))
        # (the hypers of the fit: set_params takes effect at the next fit, as
        # scikit-learn's estimators do; an estimator pickled before hypers_ was kept
        # predicts with its parameters' values)
        hypers = self.hypers_ if hasattr(self, "hypers_") else self._hypers_for(decl)
        return self.model_.predict(self.params_, **{self.X: self._features(decl, X)},
                                   **hypers)

    # ------------------------------------------------------------ pickling

    def __getstate__(self):
        """The state without the compiled model: it is compiled again (or taken from
        the compile cache) from its source when unpickled."""
        state = dict(super().__getstate__())
        model = state.pop("model_", None)
        if model is not None:
            state["_model_dtype"] = model.dtype.name
        return state

    def __setstate__(self, state):
        state = dict(state)
        dtype = state.pop("_model_dtype", None)
        super().__setstate__(state)
        if dtype is not None:
            self.model_ = shared_model(Source(self.source_, self._source_name), self.dims_,
                                       dtype, Options.from_env())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


@functools.lru_cache(maxsize=None)
def _param_names(cls) -> list:
    return BaseEstimator._get_param_names.__func__(cls)


def _same_value(value, default) -> bool:
    try:
        return bool(np.array_equal(np.asarray(value, dtype=np.float64), default))
    except (TypeError, ValueError):
        return False


def partial_fit_applies(estimator) -> bool:
    """partial_fit exists for first-order optimizers (sgd, adam, ...): L-BFGS and
    Newton-CG minimize over the whole data set at once."""
    return estimator._first_order()
