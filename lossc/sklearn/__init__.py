"""scikit-learn estimators over lossc models (needs scikit-learn: `pip install
'lossc[sklearn]'`; `import lossc` never imports it).

    from lossc.sklearn import LossClassifier
    clf = LossClassifier("logreg.loss", X="x", y="y", proba="p1", optimizer="lbfgs",
                         C=0.5)
    GridSearchCV(clf, {"C": [0.1, 1, 10]}).fit(X, y)

base.py holds what the estimators share (parameters, the model's hypers among them,
fit, partial_fit, pickling), estimators.py the regressor and the classifier,
declarations.py what is read of a model before compiling it, models.py the compiled
models shared within a process. docs/sklearn.md tells the design.
"""
from lossc.sklearn.base import LossEstimator
from lossc.sklearn.estimators import LossClassifier, LossRegressor

__all__ = ["LossEstimator", "LossRegressor", "LossClassifier"]
