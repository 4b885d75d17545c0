"""Leaves: the values a model function reads from its arguments, and constants."""
from __future__ import annotations

import numpy as np

from lossc.ir.dtypes import INT, REAL
from lossc.ir.ops.base import OpDef


def leaf(name, infer, *, sympy, lower, real=True, eval=lambda a: None, doc="") -> OpDef:
    return OpDef(name, 0, "leaf", infer=infer, eval=eval, sympy=sympy, names=(),
                 axis=False, reduction=False, stage="any", differentiable=real, vjp=None,
                 mask=None, jvp=None, lower=lower, single_pass=False, foldable=False,
                 example="a leaf: in every model", doc=doc)


OPS = [
    leaf("param", lambda a: (tuple(a["shape"]), REAL),
         sympy=lambda s, n: s.symbols(n.attr("name"), n.shape),
         lower=lambda em, g, n, idx: em.param_element(n, idx), doc="a trainable parameter"),
    leaf("input", lambda a: (tuple(a["shape"]), INT if a["is_int"] else REAL),
         sympy=lambda s, n: s.symbols(n.attr("name"), n.shape),
         lower=lambda em, g, n, idx: em.input_element(g, n, idx), doc="one sample's data"),
    leaf("hyper", lambda a: (tuple(a.get("shape", ())), REAL),
         sympy=lambda s, n: s.symbols(n.attr("name"), n.shape),
         lower=lambda em, g, n, idx: em.hyper_element(n, idx),
         doc="a value given at call time: a scalar, or an array of its `shape` (elements "
             "from `index` on in the hyperparameter vector)"),
    leaf("const", lambda a: ((), REAL), eval=lambda a: np.float64(a["value"]),
         sympy=lambda s, n: s.constant(n.attr("value")),
         lower=lambda em, g, n, idx: em.fconst(n.attr("value")), doc="a real scalar constant"),
    leaf("iconst", lambda a: ((), INT), eval=lambda a: np.int64(a["value"]), real=False,
         sympy=lambda s, n: np.array(s.sp.Integer(n.attr("value")), dtype=object),
         lower=lambda em, g, n, idx: em.iconst(n.attr("value")),
         doc="an integer scalar constant"),
]
