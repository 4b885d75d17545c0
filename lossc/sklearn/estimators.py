"""LossRegressor and LossClassifier: a `.loss` model as a scikit-learn estimator.

    from lossc.sklearn import LossClassifier
    clf = LossClassifier("logreg.loss", X="x", y="y", proba="p1", C=0.5).fit(X, y)
    clf.predict_proba(X_test); clf.score(X_test, y_test)

The regressor's target goes to the y input as it is (a scalar input takes a 1-d y, a
vector input a 2-d one). The classifier's labels (strings, or any values) are mapped
to the model's classes 0..K-1 in sorted order (classes_): a scalar y input gets the
class index (as an integer, or a number for a real input such as logistic
regression's 0/1), a vector input of K elements a one-hot row.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from lossc.sklearn.base import DEFAULT_TOL, LossEstimator, partial_fit_applies
from lossc.sklearn.declarations import declarations, source_of


class LossRegressor(RegressorMixin, LossEstimator):
    """A `.loss` model as a regressor. model: a `.loss` path or source text. X, y,
    sample_weight: the model's inputs that receive them; predict: the output that is
    the prediction (default: the model's only output). optimizer: a name ("lbfgs",
    "newton-cg", "adam", "sgd", ...) or a lossc optimizer, with lr (for a name),
    batch_size ("auto": lossc.train's default), epochs, tol_grad, tol_loss and
    train_options (any other keyword of lossc.train). dims: sizes of dims the data do
    not set; dtype: "float64" or "float32"; warm_start: fit from the last fit's
    parameters; random_state: the seed of the initial parameters and the shuffles.
    Every hyper of the model is a parameter by its own name."""

    _y_numeric = True

    def _default_tol_grad(self, model, n_samples: int) -> tuple:
        """scikit-learn's regressors fitted by L-BFGS (PoissonRegressor, TweedieRegressor,
        HuberRegressor's gtol) test the gradient of the objective per sample: tol 1e-4
        on the mean objective's, n_samples * 1e-4 on a `reduce sum` objective's. Not
        relative to the initial objective, as the classifier's is: a target with an
        offset (300 + X w) makes that objective large, and the test as loose."""
        scale = n_samples if model.reduce == "sum" else 1
        return DEFAULT_TOL * max(scale, 1), False

    def _fit_target(self, y, decl, classes, refit: bool) -> dict:
        sizes, _ = decl.inputs[self.y]
        if refit:
            self._one_target = False
        if not sizes:
            y = column_or_1d(y, warn=True)
        elif y.ndim == 1 and len(sizes) == 1 and (sizes[0] == 1 or isinstance(sizes[0], str)):
            # one target as a 1-d y, as scikit-learn's multi-output regressors take it:
            # a vector of one a sample, and the predictions 1-d again
            y = y[:, None]
            if refit:
                self._one_target = True
        elif y.ndim != 2:
            raise ValueError(f"input {self.y!r} holds a vector a sample: y must be "
                             f"2-d (n_samples, {sizes[0]}), got shape {y.shape}")
        return {self.y: y}

    def _output_roles(self, model) -> list:
        return [("predict", self._prediction_name(model))]

    def _prediction_name(self, model) -> str:
        if self._predict_param is not None:
            return self._predict_param
        outputs = [o.name for o in model.outputs]
        if len(outputs) != 1:
            raise ValueError(f"name the output that is the prediction with predict=; "
                             f"the model's outputs: {', '.join(outputs) or 'none'}")
        return outputs[0]

    def _compile(self, source, decl, data):
        model = super()._compile(source, decl, data)
        self.predict_output_ = self._prediction_name(model)
        return model

    def predict(self, X):
        """The prediction output for each row of X (1-d for a model of vector targets
        fitted on a 1-d y)."""
        out = self._outputs(X)[self.predict_output_]
        if getattr(self, "_one_target", False) and out.ndim == 2 and out.shape[1] == 1:
            return out[:, 0]
        return out

    @available_if(partial_fit_applies)
    def partial_fit(self, X, y, sample_weight=None):
        """One pass of the (first-order) optimizer over this chunk; see fit."""
        return self._partial_fit(X, y, sample_weight, None)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = self._vector_target()
        return tags

    def _vector_target(self) -> bool:
        """Whether the y input holds a vector a sample (a 2-d y: several targets)."""
        try:
            return bool(declarations(source_of(self.model)).inputs[self.y][0])
        except Exception:
            return False


class LossClassifier(ClassifierMixin, LossEstimator):
    """A `.loss` model as a classifier. As LossRegressor, and: proba, the output that
    gives the probability of class 1 (a scalar, two classes) or of each class (a vector
    of K); predict, the output that gives the class index 0..K-1 (default: from
    proba, the most probable class); classes_dim, a dim set to the number of classes
    at fit (`dim K` of a softmax model)."""

    _y_numeric = False

    def __init__(self, model, *, X="x", y="y", predict=None, proba=None,
                 classes_dim=None, sample_weight=None, optimizer="lbfgs", lr=None,
                 batch_size="auto", epochs=None, tol_grad=None, tol_loss=None,
                 train_options=None, dims=None, dtype="float64", warm_start=False,
                 random_state=None, **hypers):
        super().__init__(model, X=X, y=y, predict=predict, sample_weight=sample_weight,
                         optimizer=optimizer, lr=lr, batch_size=batch_size, epochs=epochs,
                         tol_grad=tol_grad, tol_loss=tol_loss, train_options=train_options,
                         dims=dims, dtype=dtype, warm_start=warm_start,
                         random_state=random_state, **hypers)
        self.proba = proba
        self.classes_dim = classes_dim

    def _fit_target(self, y, decl, classes, refit: bool) -> dict:
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if refit:
            self.classes_ = np.unique(y if classes is None else np.asarray(classes))
        if len(self.classes_) < 2:
            raise ValueError(f"a classifier needs samples of at least 2 classes; y holds "
                             f"the one class {self.classes_[0].item()!r}")
        index = np.searchsorted(self.classes_, y)
        unknown = (index >= len(self.classes_)) | (
            self.classes_[np.minimum(index, len(self.classes_) - 1)] != y)
        if unknown.any():
            raise ValueError(f"y holds the label {y[unknown][0].item()!r}, which is not "
                             f"one of the classes {self.classes_.tolist()}")
        sizes, is_int = decl.inputs[self.y]
        if not sizes and not is_int and self.classes_dim is None and len(self.classes_) != 2:
            # (as tagged: a real scalar y is class 1's 0/1; a third class would reach
            # the loss as y = 2)
            raise ValueError(f"Only binary classification is supported. Input {self.y!r} "
                             f"is a real scalar, the 0/1 of two classes; y holds "
                             f"{len(self.classes_)} classes")
        if not sizes:
            return {self.y: index if is_int else index.astype(np.float64)}
        if len(sizes) == 1 and not is_int:
            return {self.y: np.eye(len(self.classes_))[index]}
        raise ValueError(f"input {self.y!r} must be a scalar (the class index) or a vector "
                         f"of one value per class (one-hot) to take a classifier's labels")

    def _extra_dims(self, decl) -> dict:
        if self.classes_dim is None:
            return {}
        if not isinstance(self.classes_dim, str) or self.classes_dim not in decl.dims:
            raise ValueError(f"classes_dim must name a dim of the model (dims: "
                             f"{', '.join(decl.dims) or 'none'}), got {self.classes_dim!r}")
        return {self.classes_dim: len(self.classes_)}

    def _unset_dim_hint(self, dim: str) -> str:
        return (f", or classes_dim={dim!r} if it is the number of classes"
                if self.classes_dim is None else "")

    def _output_roles(self, model) -> list:
        if self._predict_param is None and self.proba is None:
            raise ValueError("name the output that gives the class (predict=) or the "
                             "probabilities (proba=), or both")
        return [(role, name) for role, name in (("predict", self._predict_param),
                                                ("proba", self.proba)) if name is not None]

    def _check_outputs(self, model) -> None:
        super()._check_outputs(model)
        shapes = {o.name: o.shape for o in model.outputs}
        if self._predict_param is not None and shapes[self._predict_param] != ():
            raise ValueError(f"output {self._predict_param!r} (predict=) must be a scalar, "
                             f"the class index 0..K-1 of a sample; it has shape "
                             f"{shapes[self._predict_param]}")
        if self.proba is None:
            return
        shape = shapes[self.proba]
        K = len(self.classes_)
        if shape == () and K != 2:
            raise ValueError(f"Only binary classification is supported. Output "
                             f"{self.proba!r} (proba=) is one probability, that of class 1 "
                             f"of two; y holds {K} classes")
        if shape not in ((), (K,)):
            raise ValueError(f"output {self.proba!r} (proba=) must be a scalar (two classes)"
                             f" or a vector of {K}, one per class; it has shape {shape}")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = self._any_class_count()
        return tags

    def _any_class_count(self) -> bool:
        """Whether the model takes any number of classes: not when y is a real scalar
        (logistic regression's 0/1) and no dim is sized by the classes."""
        try:
            sizes, is_int = declarations(source_of(self.model)).inputs[self.y]
        except Exception:
            return True
        return bool(sizes) or is_int or self.classes_dim is not None

    def predict(self, X):
        """The class of each row of X (one of classes_)."""
        check_is_fitted(self, "params_")
        if self._predict_param is None:
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        name = self._predict_param
        values = self._outputs(X)[name]
        index = np.rint(values).astype(np.int64)
        bad = (values != index) | (index < 0) | (index >= len(self.classes_))
        if bad.any():
            raise ValueError(f"output {name!r} (predict=) gave {values[bad][0]!r}, "
                             f"not a class index 0..{len(self.classes_) - 1}")
        return self.classes_[index]

    @available_if(lambda self: self.proba is not None)
    def predict_proba(self, X):
        """(n_samples, n_classes): the probability of each class, in classes_' order."""
        p = self._outputs(X)[self.proba]
        return np.column_stack([1 - p, p]) if p.ndim == 1 else p

    @available_if(lambda self: self.proba is not None)
    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    @available_if(partial_fit_applies)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One pass of the (first-order) optimizer over this chunk; `classes`, every
        label of the stream, is needed on the first call."""
        if not hasattr(self, "params_") and classes is None:
            raise ValueError("classes must be given on the first call to partial_fit "
                             "(every label the stream holds)")
        if (hasattr(self, "params_") and classes is not None
                and not np.array_equal(np.unique(classes), self.classes_)):
            # (as scikit-learn's: the model's dims and outputs are sized by the first)
            raise ValueError(f"classes={list(classes)!r} is not the same as on the first "
                             f"call to partial_fit, {self.classes_.tolist()!r}")
        return self._partial_fit(X, y, sample_weight, classes)
