"""Elementwise ops: real functions, arithmetic, comparisons and logic, `where`, and the
integer arithmetic of indices."""
from __future__ import annotations

import math

import numpy as np

from lossc.ir.dtypes import BOOL, INT, REAL
from lossc.ir.ops.base import (ANY, POS, UNIT, Example, Math, OpDef, const_value, diagonal_jvp,
                               same_bool, same_real, scalar_int, selected, zero_jvp)


def elementwise(name, arity, *, infer=same_real, eval, sympy, vjp=None, names=(),
                stage="any", differentiable=True, example, doc="", jvp=None,
                **facts) -> OpDef:
    """An elementwise op: `eval(*arrays)` without attributes, `sympy(sp, *exprs)` its
    form; its mask rule selects each adjoint by the mask (`selected`); its forward rule
    is its vjp's (`diagonal_jvp`) unless `jvp` is given."""
    if jvp is None and vjp is not None:
        jvp = diagonal_jvp(vjp)
    return OpDef(name, arity, "elem", infer=infer, eval=lambda a, *xs: eval(*xs),
                 sympy=lambda s, n, *xs: sympy(s.sp, *xs), names=names, axis=False,
                 reduction=False, stage=stage, differentiable=differentiable, vjp=vjp,
                 mask=selected(vjp) if vjp else None, jvp=jvp, single_pass=True,
                 foldable=True, example=example, doc=doc, **facts)


def unary(name, eval, deriv, *, sympy, domain=ANY, names=None, **facts) -> OpDef:
    """A real function of one argument, a function of the language of the same name
    unless `names` says otherwise: `deriv(b, g, out, x)` builds g * f'(x)."""
    vjp = (lambda b, g, out, x: (deriv(b, g, out, x),)) if deriv else None
    return elementwise(name, 1, eval=eval, sympy=sympy, vjp=vjp,
                       names=(name,) if names is None else names,
                       example=facts.pop("example", Example(((3,),), (domain,))), **facts)


def binary(name, eval, vjp, *, sympy, domains=(ANY, ANY), names=(), **facts) -> OpDef:
    """A real function of two arguments of one shape (build.py broadcasts them first)."""
    return elementwise(name, 2, eval=eval, sympy=sympy, vjp=vjp, names=names,
                       example=facts.pop("example", Example(((3,), (3,)), domains)),
                       **facts)


def _sig(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x):
    x = np.asarray(x, dtype=np.float64)
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _log_sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


# sigmoid, softplus and log_sigmoid compute exp(-|x|), which is in [0, 1] (no overflow;
# log1p of it without special cases: log1p_unit). Given it, each is a few operations:
# these are their lowerings, and their `_e` forms' (ops/lowered.py), where the lower
# pass shares one exp(-|x|) among several of them.


def exp_neg_abs(em, x):
    return em.math("exp", em.fneg(em.math("fabs", x)))


def sigmoid_with(em, x, e):
    """1 / (1 + e) for x >= 0, e / (1 + e) below: one division of the chosen numerator."""
    den = em.fadd(em.fconst(1), e)
    return em.fdiv(em.select(em.fcmp(">=", x, em.fconst(0)), em.fconst(1), e), den)


def positive_part(em, x):
    return em.select(em.fcmp(">", x, em.fconst(0)), x, em.fconst(0))


def negative_part(em, x):
    return em.select(em.fcmp("<", x, em.fconst(0)), x, em.fconst(0))


def softplus_with(em, pos, e):
    """max(x, 0) + log1p(e), from the positive part of x."""
    return em.fadd(pos, em.math("log1p_unit", e))


def log_sigmoid_with(em, neg, e):
    """min(x, 0) - log1p(e), from the negative part of x."""
    return em.fsub(neg, em.math("log1p_unit", e))


def _sech2(x):
    """1 / cosh(x)^2, without overflow: 4 e / (1 + e)^2 with e = exp(-2|x|)."""
    e = np.exp(-2 * np.abs(np.asarray(x, dtype=np.float64)))
    return 4 * e / (1 + e) ** 2


def _dsigmoid(x):
    e = np.exp(-np.abs(np.asarray(x, dtype=np.float64)))
    return e / (1 + e) ** 2


# tanh and its derivative from e = expm1(2|x|) (codegen/vmath.py expm1_2abs), with
# r = 1 / (e + 2): tanh(|x|) = e r, and sech(x)^2 = 1 - (e r)^2 = 4 r (1 - r), where
# r <= 1/2 (no cancellation), and 1 - tanh(x)^2 would lose what tanh rounded away


def tanh_with(em, x, e):
    """sign(x) e r."""
    r = em.fdiv(em.fconst(1), em.fadd(e, em.fconst(2)))
    t = em.fmul(e, r)
    return em.b.call(em.intrinsic("copysign", t.type, 2), list(em.unify(t, x)))


def sech2_with(em, x, e):
    """4 r (1 - r); 0 where |x| is past expm1_2abs's clamp: e is held at its value
    there, and 4 r (1 - r) at about 1e-307 (float32: 2e-38), where sech(x)^2 goes on
    falling (and 0 inf is NaN, as IEEE says, not inf)."""
    r = em.fdiv(em.fconst(1), em.fadd(e, em.fconst(2)))
    s = em.fmul(em.fmul(em.fconst(4), r), em.fsub(em.fconst(1), r))
    return em.select(em.past_expm1_2abs_clamp(x), em.fconst(0), s)


def dsigmoid_with(em, e):
    """e / (1 + e)^2, e = exp(-|x|)."""
    den = em.fadd(em.fconst(1), e)
    return em.fdiv(e, em.fmul(den, den))


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _vectorized(f, at_error):
    """A scalar math function over arrays; `at_error` where it raises (a pole)."""
    def safe(v):
        try:
            return f(v)
        except (ValueError, OverflowError):
            return at_error
    return lambda x: np.vectorize(safe, otypes=[np.float64])(np.asarray(x, np.float64))


def _lgamma(x):
    """log |Gamma(x)| as SciPy's gammaln: inf at the poles, -inf at -inf."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x == -np.inf, -np.inf, _vectorized(math.lgamma, math.inf)(x))


def _sinpi_cospi(x):
    """sin(pi x), cos(pi x) from the exact reduction r = x - k, k = round(x), |r| <= 1/2:
    sin(pi x) is exactly 0 at integers however large."""
    k = np.round(x)
    sign = np.where(np.fmod(k, 2) == 0, 1.0, -1.0)
    r = x - k
    return sign * np.sin(np.pi * r), sign * np.cos(np.pi * r)


# the asymptotic series of digamma, trigamma and polygamma(2, .) in z = 1/x, from the
# Bernoulli numbers B2k: sum_k c_k z^(2k) after the leading terms; used from SHIFT_TO on
_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510)
_SHIFT_TO = 16.0


def _shifted(x, power, sign):
    """(y, s): y = x shifted up past _SHIFT_TO by the recurrence, and
    s = sign * sum of 1/(x + j)^power over the steps taken (x >= 0 here)."""
    y, s = x.copy(), np.zeros_like(x)
    for _ in range(int(_SHIFT_TO)):
        low = y < _SHIFT_TO
        s = s + np.where(low, sign / np.where(low, y, 1.0) ** power, 0.0)
        y = np.where(low, y + 1, y)
    return y, s


def _psi_positive(y, n):
    """polygamma(n, y) for y >= 0, n = 0, 1, 2: the recurrence up to _SHIFT_TO, then
    the asymptotic series."""
    sign = (-1.0, 1.0, -2.0)[n]
    z_big, s = _shifted(y, n + 1, sign)
    z = 1 / z_big
    z2 = z * z
    series = 0.0
    for k in range(len(_BERNOULLI), 0, -1):         # Horner in z^2, highest term first
        b2k = _BERNOULLI[k - 1]
        coef = (b2k / (2 * k), b2k, b2k * (2 * k + 1))[n]
        series = series * z2 + coef
    if n == 0:
        tail = np.log(z_big) - z / 2 - z2 * series
    elif n == 1:
        tail = z + z2 / 2 + z * z2 * series
    else:
        tail = -z2 - z2 * z - z2 * z2 * series
    return np.where(np.isinf(y), (np.inf, 0.0, -0.0)[n], tail + s)


def _polygamma(n):
    """polygamma(n, x) for all x, as SciPy: reflection below 0; poles and infinities
    as SciPy gives them."""
    def f(x):
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(all="ignore"):
            neg = x < 0
            y = _psi_positive(np.where(neg, 1 - x, x), n)
            s, c = _sinpi_cospi(np.where(neg, x, 0.5))
            w = np.pi / s
            if n == 0:
                out = np.where(neg, y - np.pi * c / s, y)
                pole = np.where(x == 0, -1 / np.where(x == 0, x, 1.0), np.nan)
                return np.where(neg & (s == 0) | (x == 0) | (x == -np.inf), pole, out)
            if n == 1:
                out = np.where(neg, w * w - y, y)
                return np.where((neg & (s == 0)) | (x == 0) | (x == -np.inf), np.inf, out)
            out = np.where(neg, y - 2 * w * w * w * c, y)
            return np.where((neg & (s == 0)) | (x == 0) | (x == -np.inf), -np.inf, out)
    return f


def _xlogy(x, y):
    """x * log(y), and 0 where x = 0 (also for y = 0 or inf; not for y NaN), as SciPy."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    with np.errstate(all="ignore"):
        return np.where((x == 0) & ~np.isnan(y), 0.0, x * np.log(y))


def _xlogy_vjp(b, g, out, x, y):
    """d/dx = log(y); d/dy = x / y, and 0 where x = 0 (y = 0 or NaN included).

    Where x = 0, d/dy is x / y' with y' = y but inf where y is 0 or NaN: the same 0,
    whose derivative in x is 1/y' (forward mode over the gradient: the Hessian's mixed
    term, 1/y where y > 0, as the smooth x log y has it; 0 where y = 0, as d/dy
    there). A constant 0 would have the value and drop the derivative."""
    at_zero = b.emit("eq", (x, b.zeros_like(x)))
    inf = b.const(math.inf, y.shape)
    usable = b.emit("eq", (y, y))               # (not NaN)
    y_safe = b.where(b.emit("eq", (y, b.zeros_like(y))), inf, b.where(usable, y, inf))
    gx = b.mul(g, x)
    dy = b.where(at_zero, b.div(gx, y_safe), b.div(gx, y))
    return b.mul(g, b.emit("log", (y,))), dy


def _xlogy_lower(em, g, n, x, y):
    zero = em.fconst(0)
    x_zero = em.and_(em.fcmp("==", x, zero), em.fcmp("==", y, y))    # (y == y: not NaN)
    return em.select(x_zero, zero, em.fmul(x, em.math("log", y)))


def _xlogy_form(sp, x, y):
    return sp.Piecewise((0, sp.Eq(x, 0)), (x * sp.log(y), True))


def _erfc_vjp(b, g, out, x):
    return b.mul(g, b.mul(b.const(-2 / math.sqrt(math.pi)),
                          b.emit("exp", (b.neg(b.mul(x, x)),))))


class ThirdDerivativeError(ValueError):
    """A derivative of polygamma2 was asked for: it needs polygamma(3, x)."""


def _polygamma2_jvp(b, out, ts, x):
    """Refused: the tangent of polygamma2 is polygamma(3, x) times x's, and lossc has no
    polygamma(3, x). polygamma2 enters a graph only as the derivative of trigamma, i.e.
    the second derivative of digamma (the third of lgamma); forward mode runs once, over
    the gradient, so a Hessian never differentiates it. Differentiating such a graph
    again (a third derivative) stops here with this error rather than a wrong value."""
    raise ThirdDerivativeError(
        "forward mode cannot differentiate polygamma2 (the second derivative of "
        "digamma): it needs polygamma(3, x), which lossc does not compute; third "
        "derivatives through lgamma or digamma are not available")


# lgamma, digamma and erfc follow SciPy's gammaln, digamma and erfc; digamma's
# derivative is trigamma = polygamma(1, x), whose derivative polygamma(2, x) (for second
# derivatives) is computed too. All are inline vector code (codegen/vmath.py).
SPECIAL = [
    unary("lgamma", _lgamma, lambda b, g, out, x: b.mul(g, b.emit("digamma", (x,))),
          domain=POS, sympy=lambda sp, x: sp.loggamma(x), math=Math("lgamma", "vmath"),
          doc="log |Gamma(x)| (SciPy's gammaln): inf at the poles"),
    unary("digamma", _polygamma(0),
          lambda b, g, out, x: b.mul(g, b.emit("trigamma", (x,))), domain=POS,
          sympy=lambda sp, x: sp.digamma(x), math=Math("digamma", "vmath"),
          doc="the derivative of lgamma; its own derivative is trigamma"),
    unary("trigamma", _polygamma(1),
          lambda b, g, out, x: b.mul(g, b.emit("polygamma2", (x,))), names=(), domain=POS,
          sympy=lambda sp, x: sp.polygamma(1, x), math=Math("trigamma", "vmath"),
          doc="polygamma(1, x): the derivative of digamma (no function of the language)"),
    unary("polygamma2", _polygamma(2), None, names=(), stage="backward", domain=POS,
          jvp=_polygamma2_jvp,
          sympy=lambda sp, x: sp.polygamma(2, x), math=Math("polygamma2", "vmath"),
          doc="backward-only: polygamma(2, x), the derivative of trigamma"),
    unary("erfc", _vectorized(math.erfc, math.nan), _erfc_vjp,
          sympy=lambda sp, x: sp.erfc(x), math=Math("erfc", "vmath"),
          doc="1 - erf(x) without cancellation: erfc(10) = 2.1e-45"),
    binary("xlogy", _xlogy, _xlogy_vjp, names=("xlogy",), sympy=_xlogy_form,
           lower=_xlogy_lower, domains=(ANY, POS),
           doc="x * log(y), 0 where x = 0 (y = 0 included); its gradient in y is 0 there"),
]


def _one_minus_sq(b, x):
    return b.sub(b.const(1.0), b.mul(x, x))


def _sign_lower(em, g, n, x):
    """NumPy's sign: 1, -1, 0 at either zero, NaN at NaN (so abs of a NaN has a NaN
    gradient, as its value is NaN)."""
    signed = em.select(em.fcmp(">", x, em.fconst(0)), em.fconst(1),
                       em.select(em.fcmp("<", x, em.fconst(0)), em.fconst(-1), em.fconst(0)))
    return em.select(em.b.fcmp_unordered("uno", x, x), x, signed)


FUNCTIONS = [
    unary("neg", np.negative, lambda b, g, out, x: b.neg(g), names=(),
          sympy=lambda sp, x: -x, lower=lambda em, g, n, x: em.fneg(x)),
    unary("exp", np.exp, lambda b, g, out, x: b.mul(g, out),
          sympy=lambda sp, x: sp.exp(x), math=Math("exp", "vmath")),
    unary("log", np.log, lambda b, g, out, x: b.div(g, x), domain=POS,
          sympy=lambda sp, x: sp.log(x), math=Math("log", "vmath")),
    unary("log1p", np.log1p, lambda b, g, out, x: b.div(g, b.add(b.const(1.0), x)),
          domain=POS, sympy=lambda sp, x: sp.log(1 + x), math=Math("log1p", "vmath")),
    # exp(x), not out + 1: that cancels to 0 for x below -37 (float64), where
    # exp(x) is as precise as ever
    unary("expm1", np.expm1, lambda b, g, out, x: b.mul(g, b.emit("exp", (x,))),
          sympy=lambda sp, x: sp.exp(x) - 1, math=Math("expm1", "vmath")),
    unary("sqrt", np.sqrt, lambda b, g, out, x: b.div(b.mul(g, b.const(0.5)), out),
          domain=POS, sympy=lambda sp, x: sp.sqrt(x), math=Math("sqrt", "instruction")),
    unary("abs", np.abs, lambda b, g, out, x: b.mul(g, b.emit("sign", (x,))),
          sympy=lambda sp, x: sp.Abs(x), math=Math("fabs", "instruction"),
          example=Example(((4,),), (ANY,)), doc="abs'(0) = 0"),
    unary("sign", np.sign, None, names=(), stage="backward", jvp=zero_jvp,
          sympy=lambda sp, x: sp.sign(x),
          lower=_sign_lower, example="its derivative is zero almost everywhere: it is "
          "abs's, checked through abs", doc="backward-only: the derivative of abs"),
    unary("sin", np.sin, lambda b, g, out, x: b.mul(g, b.emit("cos", (x,))),
          sympy=lambda sp, x: sp.sin(x), math=Math("sin", "intrinsic")),
    unary("cos", np.cos, lambda b, g, out, x: b.neg(b.mul(g, b.emit("sin", (x,)))),
          sympy=lambda sp, x: sp.cos(x), math=Math("cos", "intrinsic")),
    unary("tan", np.tan, lambda b, g, out, x: b.mul(g, b.add(b.const(1.0), b.mul(out, out))),
          domain=UNIT, sympy=lambda sp, x: sp.tan(x), math=Math("tan", "libm")),
    # sech2(x), not 1 - out^2: out rounds to 1 for |x| past 9 (float32) or 19
    # (float64), and 1 - out^2 loses the digits out has lost before that
    unary("tanh", np.tanh, lambda b, g, out, x: b.mul(g, b.emit("sech2", (x,))),
          sympy=lambda sp, x: sp.tanh(x), math=Math("tanh", "vmath")),
    unary("sech2", _sech2, None, names=(), stage="backward",
          jvp=diagonal_jvp(lambda b, g, out, x: (b.mul(g, b.mul(b.const(-2.0), b.mul(
              out, b.emit("tanh", (x,))))),)), sympy=lambda sp, x: 1 / sp.cosh(x) ** 2,
          lower=lambda em, g, n, x: sech2_with(em, x, em.math("expm1_2abs", x)),
          doc="backward-only: 1 / cosh(x)^2, the derivative of tanh, from e = "
              "expm1(2|x|) as 4 r (1 - r), r = 1 / (e + 2)"),
    unary("sinh", np.sinh, lambda b, g, out, x: b.mul(g, b.emit("cosh", (x,))),
          sympy=lambda sp, x: sp.sinh(x), math=Math("sinh", "libm")),
    unary("cosh", np.cosh, lambda b, g, out, x: b.mul(g, b.emit("sinh", (x,))),
          sympy=lambda sp, x: sp.cosh(x), math=Math("cosh", "libm")),
    unary("asin", np.arcsin,
          lambda b, g, out, x: b.div(g, b.emit("sqrt", (_one_minus_sq(b, x),))),
          domain=UNIT, sympy=lambda sp, x: sp.asin(x), math=Math("asin", "libm")),
    unary("acos", np.arccos,
          lambda b, g, out, x: b.neg(b.div(g, b.emit("sqrt", (_one_minus_sq(b, x),)))),
          domain=UNIT, sympy=lambda sp, x: sp.acos(x), math=Math("acos", "libm")),
    unary("atan", np.arctan, lambda b, g, out, x: b.div(g, b.add(b.const(1.0), b.mul(x, x))),
          sympy=lambda sp, x: sp.atan(x), math=Math("atan", "libm")),
    unary("sigmoid", _sig,
          # dsigmoid(x) = sigmoid(x) sigmoid(-x), not out (1 - out): at x = 40 out
          # rounds to 1 and 1 - out to 0, where sigmoid(-40) is 4.2e-18 (the lower
          # pass computes sigmoid and dsigmoid from one exp(-|x|))
          lambda b, g, out, x: b.mul(g, b.emit("dsigmoid", (x,))),
          sympy=lambda sp, x: 1 / (1 + sp.exp(-x)),
          lower=lambda em, g, n, x: sigmoid_with(em, x, exp_neg_abs(em, x)),
          doc="stable for large |x|"),
    # its own op for its derivative -dsigmoid(x) tanh(x / 2): forward mode over
    # sigmoid(x) sigmoid(-x) subtracts two products near 1/8 at x near 0
    unary("dsigmoid", _dsigmoid, None, names=(), stage="backward",
          jvp=diagonal_jvp(lambda b, g, out, x: (b.neg(b.mul(g, b.mul(out, b.emit(
              "tanh", (b.mul(b.const(0.5), x),))))),)),
          sympy=lambda sp, x: sp.exp(-x) / (1 + sp.exp(-x)) ** 2,
          lower=lambda em, g, n, x: dsigmoid_with(em, exp_neg_abs(em, x)),
          doc="backward-only: sigmoid(x) sigmoid(-x) = e / (1 + e)^2, e = exp(-|x|), "
              "the derivative of sigmoid"),
    unary("softplus", _softplus, lambda b, g, out, x: b.mul(g, b.emit("sigmoid", (x,))),
          sympy=lambda sp, x: sp.log(1 + sp.exp(x)),
          lower=lambda em, g, n, x: softplus_with(em, positive_part(em, x),
                                                  exp_neg_abs(em, x)),
          doc="log(1 + exp(x)), stable: softplus(1000) = 1000"),
    unary("log_sigmoid", _log_sigmoid,
          lambda b, g, out, x: b.mul(g, b.emit("sigmoid", (b.neg(x),))),
          sympy=lambda sp, x: -sp.log(1 + sp.exp(-x)),
          lower=lambda em, g, n, x: log_sigmoid_with(em, negative_part(em, x),
                                                     exp_neg_abs(em, x)),
          doc="log(sigmoid(x)) = -softplus(-x), stable: log_sigmoid(-1000) = -1000; its "
              "derivative sigmoid(-x)"),
    unary("relu", lambda x: np.maximum(x, 0),
          lambda b, g, out, x: b.where(b.emit("gt", (x, b.zeros_like(x))), g,
                                       b.zeros_like(g)),
          sympy=lambda sp, x: sp.Max(x, 0),
          # (x <= 0: NaN is not, and stays NaN as in NumPy)
          lower=lambda em, g, n, x: em.select(em.fcmp("<=", x, em.fconst(0)), em.fconst(0), x),
          example=Example(((4,),), (ANY,)), doc="relu'(0) = 0"),
    unary("erf", _erf,
          lambda b, g, out, x: b.mul(g, b.mul(b.const(2 / math.sqrt(math.pi)),
                                              b.emit("exp", (b.neg(b.mul(x, x)),)))),
          sympy=lambda sp, x: sp.erf(x), math=Math("erf", "vmath")),
]


def _powi_vjp(b, g, out, x):
    n = out.attr("n")
    if n == 1:
        return (g,)
    d = x if n == 2 else b.emit("powi", (x,), n=n - 1)
    return (b.mul(g, b.mul(b.const(float(n)), d)),)


POWERS = [
    OpDef("powi", 1, "elem", infer=same_real,
          eval=lambda a, x: np.power(np.asarray(x, dtype=np.float64), a["n"]),
          sympy=lambda s, n, x: x ** n.attr("n"), names=(), axis=False, reduction=False,
          stage="any", differentiable=True, vjp=_powi_vjp, mask=selected(_powi_vjp),
          jvp=diagonal_jvp(_powi_vjp),
          lower=lambda em, g, n, x: em.powi(x, n.attr("n")), single_pass=True,
          foldable=True, example=Example(((3,),), (ANY,), {"n": 3}),
          doc="x ^ n for an integer literal n, by multiplication: exact for negative x"),
    elementwise("to_real", 1, infer=lambda a, x: (x.shape, REAL),
                eval=lambda x: np.asarray(x, dtype=np.float64), sympy=lambda sp, x: x,
                differentiable=False, lower=lambda em, g, n, x: em.to_real(x),
                example="an integer argument: checked through models with int inputs "
                "(tests/test_syntax.py, the conformance cases)",
                doc="an integer used as a number"),
]


def _pow_vjp(b, g, out, x, y):
    """x^y's derivatives where the formulas give 0 inf = NaN, and nowhere else (a where
    also stops the tangent of the branch it drops, so each is as narrow as it can be):
    - d/dx = y x^(y - 1) is 0 where y = 0 and x^(y - 1) is infinite (x^0 is 1 for
      every x; x^-1 is infinite at x = 0 and overflows at subnormal x); for a
      constant y = 0 it is 0 throughout, and a constant y's y - 1 is a constant too.
      One order down, this makes x^1's second derivative 0 at x = 0 and at subnormal
      x, and x^0.0's 0 at any x.
    - d/dy = x^y log x takes log 1 for log 0 at x = 0, as JAX does (x^y is 0 there
      for y > 0: in a Hessian, that term is multiplied by a zero tangent and would make
      a NaN), and is 0 at x = inf where x^y = 0 (y < 0)."""
    zero = b.zeros_like(out)
    y_value = const_value(y)
    if y_value == 0.0:
        dx = zero
    elif y_value is not None:
        dx = b.mul(g, b.mul(y, b.binary("pow", x, b.const(y_value - 1.0, y.shape))))
    else:
        power = b.binary("pow", x, b.sub(y, b.const(1.0)))
        dx = b.mul(g, b.mul(y, power))
        off = b.emit("and", (b.emit("eq", (y, zero)),
                             b.emit("eq", (power, b.const(math.inf, power.shape)))))
        dx = b.where(off, zero, dx)
    x_is_0 = b.emit("eq", (x, zero))
    log_x = b.emit("log", (b.where(x_is_0, b.const(1.0, x.shape), x),))
    dy = b.mul(g, b.mul(out, log_x))
    x_is_inf = b.emit("eq", (x, b.const(math.inf, x.shape)))
    dy = b.where(b.emit("and", (x_is_inf, b.emit("eq", (out, zero)))), zero, dy)
    return dx, dy


def _maxmin_vjp(cmp):
    def vjp(b, g, out, x, y):
        take_x = b.emit(cmp, (x, y))
        zero = b.zeros_like(g)
        return b.where(take_x, g, zero), b.where(take_x, zero, g)
    return vjp


def _maxmin_numpy(take):
    """maximum (take: np.greater_equal) or minimum (np.less_equal) as the compiled code
    computes it (_maxmin_lower), for folding and the reference interpreter: x where
    take(x, y) or x is NaN, else y. NumPy's own give y at a tie, which differs in the
    sign of a zero: max(-0.0, 0.0) folded to +0 where the code gives -0."""
    def f(x, y):
        x, y = np.asarray(x), np.asarray(y)
        with np.errstate(invalid="ignore"):
            return np.where(take(x, y) | np.isnan(x), x, y)[()]
    return f


def _maxmin_lower(em, sym, x, y):
    """maximum (minimum): x where x >= y (x <= y) or x is NaN, else y; a NaN in either
    is the result, as NumPy's, but x at a tie (NumPy's gives y: the sign of a zero)."""
    x, y = em.unify(x, y)
    take_x = em.or_(em.fcmp(sym, x, y), em.b.fcmp_unordered("uno", x, x))
    return em.select(take_x, x, y)


def _atan2_vjp(b, g, out, y, x):
    """(x, -y) g / (x^2 + y^2), from x and y over s = max(|x|, |y|): x^2 + y^2
    underflows to 0 below 1e-154 (float64) and overflows past 1e154. 0 at the origin
    (and where x or y is infinite, the limit)."""
    s = b.binary("maximum", b.emit("abs", (x,)), b.emit("abs", (y,)))
    zero = b.zeros_like(s)
    off = b.emit("or", (b.emit("eq", (s, zero)),
                        b.emit("eq", (s, b.const(math.inf, s.shape)))))
    s = b.where(off, b.const(1.0, s.shape), s)
    xs, ys = b.div(x, s), b.div(y, s)
    den = b.mul(b.add(b.mul(xs, xs), b.mul(ys, ys)), s)
    gy = b.where(off, zero, b.div(b.mul(g, xs), den))
    gx = b.where(off, zero, b.neg(b.div(b.mul(g, ys), den)))
    return gy, gx


ARITHMETIC = [
    binary("add", np.add, lambda b, g, out, x, y: (g, g), sympy=lambda sp, x, y: x + y,
           lower=lambda em, g, n, x, y: em.fadd(x, y)),
    binary("sub", np.subtract, lambda b, g, out, x, y: (g, b.neg(g)),
           sympy=lambda sp, x, y: x - y, lower=lambda em, g, n, x, y: em.fsub(x, y)),
    binary("mul", np.multiply, lambda b, g, out, x, y: (b.mul(g, y), b.mul(g, x)),
           sympy=lambda sp, x, y: x * y, lower=lambda em, g, n, x, y: em.fmul(x, y),
           example=Example(((2, 3), (2, 3)), (ANY, ANY))),
    binary("div", np.divide,
           lambda b, g, out, x, y: (b.div(g, y), b.neg(b.div(b.mul(g, out), y))),
           sympy=lambda sp, x, y: x / y, lower=lambda em, g, n, x, y: em.fdiv(x, y),
           domains=(ANY, POS)),
    binary("pow", np.power, _pow_vjp, names=("pow",), sympy=lambda sp, x, y: x ** y,
           jvp=diagonal_jvp(_pow_vjp, exact_zero=(1,)),
           math=Math("pow", "intrinsic"), domains=(POS, ANY),
           doc="x ^ y for real y; d/dx is 0 where y = 0 and x^-1 is infinite (x = 0, "
           "subnormal x); at x = 0, d/dy is 0 where y >= 0"),
    binary("maximum", _maxmin_numpy(np.greater_equal), _maxmin_vjp("ge"), names=("max",),
           sympy=lambda sp, x, y: sp.Max(x, y),
           lower=lambda em, g, n, x, y: _maxmin_lower(em, ">=", x, y),
           example=Example(((4,), (4,)), (ANY, ANY)),
           doc="max(a, b): the whole gradient goes to a when a >= b"),
    binary("minimum", _maxmin_numpy(np.less_equal), _maxmin_vjp("le"), names=("min",),
           sympy=lambda sp, x, y: sp.Min(x, y),
           lower=lambda em, g, n, x, y: _maxmin_lower(em, "<=", x, y),
           example=Example(((4,), (4,)), (ANY, ANY)),
           doc="min(a, b): the whole gradient goes to a when a <= b"),
    binary("atan2", np.arctan2, _atan2_vjp, names=("atan2",),
           sympy=lambda sp, y, x: sp.atan2(y, x), math=Math("atan2", "libm"),
           doc="atan2(y, x); gradient 0 at the origin"),
]

_BOOLEAN = ("a bool result: checked through `where` (tests/test_where_gradient.py and "
            "the conformance cases)")


def _comparison(name, sym, f, form) -> OpDef:
    return elementwise(name, 2, infer=same_bool, eval=f, sympy=form, differentiable=False,
                       lower=lambda em, g, n, x, y: em.fcmp(sym, x, y), example=_BOOLEAN,
                       doc=f"a {sym} b")


def _logic(name, arity, f, form, lower) -> OpDef:
    return elementwise(name, arity, infer=same_bool, eval=f, sympy=form,
                       differentiable=False, lower=lower, example=_BOOLEAN)


LOGIC = [
    _comparison("lt", "<", np.less, lambda sp, x, y: sp.Lt(x, y)),
    _comparison("le", "<=", np.less_equal, lambda sp, x, y: sp.Le(x, y)),
    _comparison("gt", ">", np.greater, lambda sp, x, y: sp.Gt(x, y)),
    _comparison("ge", ">=", np.greater_equal, lambda sp, x, y: sp.Ge(x, y)),
    _comparison("eq", "==", np.equal, lambda sp, x, y: sp.Eq(x, y)),
    _comparison("ne", "!=", np.not_equal, lambda sp, x, y: sp.Ne(x, y)),
    _logic("and", 2, np.logical_and, lambda sp, x, y: sp.And(x, y),
           lambda em, g, n, x, y: em.and_(x, y)),
    _logic("or", 2, np.logical_or, lambda sp, x, y: sp.Or(x, y),
           lambda em, g, n, x, y: em.or_(x, y)),
    _logic("not", 1, np.logical_not, lambda sp, x: sp.Not(x),
           lambda em, g, n, x: em.not_(x)),
]


def _where_infer(a, c, x, y):
    assert c.dtype == BOOL and c.shape == x.shape == y.shape
    return x.shape, REAL


def _where_vjp(b, g, out, c, x, y):
    zero = b.zeros_like(g)
    return None, b.where(c, g, zero), b.where(c, zero, g)


def _where_jvp(b, out, ts, c, x, y):
    """The chosen branch's tangent: a select, so the other branch's NaN or infinity
    (sqrt'(p) at p < 0) never reaches it."""
    _, tx, ty = ts
    return b.where(c, tx if tx is not None else b.zeros_like(out),
                   ty if ty is not None else b.zeros_like(out))


def _where_mask(b, g, m, out, c, x, y):
    """Each branch's adjoint is g where the branch is chosen (and m holds), exact 0
    elsewhere: masked by the condition, or its negation."""
    _, gx, gy = _where_vjp(b, g, out, c, x, y)
    not_c = b.emit("not", (c,))
    if m is not None:
        c, not_c = b.emit("and", (m, c)), b.emit("and", (m, not_c))
    return (None, None), (gx, c), (gy, not_c)


WHERE = OpDef(
    "where", 3, "elem", infer=_where_infer, eval=lambda a, c, x, y: np.where(c, x, y),
    sympy=lambda s, n, c, x, y: s.sp.Piecewise((x, c), (y, True)), names=("where",),
    axis=False, reduction=False, stage="any", differentiable=True, vjp=_where_vjp,
    mask=_where_mask, jvp=_where_jvp, lower=lambda em, g, n, c, x, y: em.select(c, x, y),
    single_pass=True, foldable=True,
    example="a bool argument: tests/test_where_gradient.py",
    doc="elementwise choice; the gradient flows only through the branch chosen")


# integer scalar arithmetic (indices, counts)


def _int_like(attrs, i):
    """An index, or a vector of them (an int vector input gathering)."""
    assert i.dtype == INT and i.rank <= 1
    return i.shape, INT


def _checked_eval(a, i):
    i = np.asarray(i)
    bad = (i < 0) | (i >= a["size"])
    if np.any(bad):
        v = int(i[bad].flat[0]) if i.ndim else int(i)
        raise IndexError(f"index {v} out of range 0..{a['size'] - 1}")
    return i.astype(np.int64) if i.ndim else np.int64(i)


def _int64(f):
    """Integer arithmetic on scalars or arrays, exact (as Python integers): a result
    that does not fit 64 bits is an index error, as it is in compiled code (which checks
    every step, codegen/index.py)."""
    def eval(*xs):
        v = f(*[np.array(np.asarray(x).tolist(), dtype=object) for x in xs])
        out = np.asarray(v, dtype=object)
        if np.any((out < -2 ** 63) | (out >= 2 ** 63)):
            bad = int(out[(out < -2 ** 63) | (out >= 2 ** 63)].flat[0]) if out.ndim \
                else int(out)
            raise IndexError(f"index arithmetic overflows a 64-bit integer ({bad})")
        return out.astype(np.int64) if out.ndim else np.int64(int(out))
    return eval


_INDEX = ("integers: checked through models that index with int inputs "
          "(tests/test_index_overflow.py)")


def _integer(name, arity, f, form, lower) -> OpDef:
    return elementwise(name, arity, infer=scalar_int, eval=_int64(f), sympy=form,
                       differentiable=False, lower=lower, example=_INDEX)


# Integer arithmetic only computes indices (build.py computes an integer expression used
# as a number in real arithmetic). The lowerings wrap; the index checks the overflow.
INTEGERS = [
    OpDef("checked_index", 1, "elem", infer=_int_like, eval=_checked_eval,
          sympy=lambda s, n, i: i, names=(), axis=False, reduction=False, stage="any",
          differentiable=False, vjp=None, mask=None, jvp=None,
          lower=lambda em, g, n, i: em.check_index(g, n, i), single_pass=True,
          foldable=False, example=_INDEX,
          doc="a data-dependent index (or each of a vector of them), checked against "
              "0..size-1 (and for overflow of the arithmetic computing it) at run time: "
              "never folded, the check is the run time's"),
    _integer("iadd", 2, lambda x, y: x + y, lambda sp, x, y: x + y,
             lambda em, g, n, x, y: em.add(x, y)),
    _integer("isub", 2, lambda x, y: x - y, lambda sp, x, y: x - y,
             lambda em, g, n, x, y: em.sub(x, y)),
    _integer("imul", 2, lambda x, y: x * y, lambda sp, x, y: x * y,
             lambda em, g, n, x, y: em.mul(x, y)),
    _integer("ineg", 1, lambda x: -x, lambda sp, x: -x, lambda em, g, n, x: em.neg(x)),
]

OPS = FUNCTIONS + SPECIAL + POWERS + ARITHMETIC + LOGIC + [WHERE] + INTEGERS
