"""exp, log, log1p, expm1 and tanh as straight-line LLVM IR that vectorizes.

LLVM turns `llvm.exp` on a vector into one libm call per lane, which would leave the
hot loop of a model like logistic regression scalar. These versions use only
arithmetic, compares, selects and bit casts, so they run on whole vectors, and the
scalar code (no SIMD) computes bit-identical results (a sample's value never depends
on which lane it landed in). Accuracy, tested against NumPy over the whole domain
(tests/test_vmath.py): within a few ulp; inf, nan, overflow, underflow and
subnormals handled as IEEE libm does.

    exp    Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2; a Chebyshev fit of
           degree 11 (float32: Taylor, degree 8) by Estrin's scheme; scaling by 2^n
           in two steps so that results in the subnormal range come out right
    log    fdlibm's e_log: x = 2^k m, m in [sqrt(2)/2, sqrt(2)), s = (m-1)/(m+1),
           minimax polynomial Lg1..Lg7 in s^2
    log1p  log(u) + (x - (u - 1)) / u with u = 1 + x (Goldberg's correction);
           log1p_unit for x in [0, 1]: e_log's kernel on x or (x - 1)/2, both exact
    expm1  2^n expm1(r) + (2^n - 1) after exp's reduction, expm1(r) by its Taylor
           polynomial
    tanh   sign(x) e / (e + 2) with e = expm1(2|x|), expm1 inlined for 0 <= 2|x| <= 40,
           its polynomial a Chebyshev fit of degree 10 in float64 (Taylor: 12)
"""
from __future__ import annotations

import math

from llvmlite import ir

LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
      2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
      1.479819860511658591e-01)

# exp(r) for |r| <= ln2/2: the Chebyshev fit of degree 11 (mpmath.chebyfit at 40 digits),
# within 1.7e-17 relative with these float64 coefficients (Taylor needs degree 13)
EXP = (1.0, 1.0, 0.5000000000000019, 0.1666666666666668, 0.0416666666664881,
       0.008333333333319601, 0.0013888888952314775, 0.00019841269890047113,
       2.4801485482328494e-05, 2.755724091857897e-06, 2.763263963904103e-07,
       2.5110037605963777e-08)
# R(z) / z of fdlibm's log kernel (R = log1p(f) - f + f^2/2 - s f^2/2 over s, z = s^2)
# for z in [0, 0.04] (|s| <= 1/5, log1p_unit's range): Chebyshev fit (mpmath.chebyfit
# at 50 digits), within 2.6e-17 relative
LOG1P_UNIT = (0.6666666666666666, 0.400000000000078, 0.2857142856733919,
              0.22222223037807243, 0.18181738454723026, 0.15388834677801916,
              0.1321036048513262, 0.13604015707124079)
# expm1(2h) / h for |h| <= ln2/4: the Chebyshev fit of degree 10 (mpmath.chebyfit at 40
# digits); with these float64 coefficients within 2.4e-17 relative of the function
TANH_EXPM1 = (2.0, 2.000000000000002, 1.3333333333333337, 0.6666666666651703,
              0.2666666666664365, 0.08888888916792703, 0.02539682543974463,
              0.006349185112831408, 0.0014109314777982175, 0.00028289389815241956,
              5.141546265386396e-05)

FUNCTIONS = ("exp", "log", "log1p", "log1p_unit", "expm1", "tanh")


class _Float:
    """Bit layout of the real type."""

    def __init__(self, T):
        double = isinstance(T, ir.DoubleType)
        self.bits = 64 if double else 32
        self.mant = 52 if double else 23
        self.bias = 1023 if double else 127
        self.I = ir.IntType(self.bits)
        self.exp_terms = 8        # float32's Taylor polynomial (float64: EXP)
        self.max_arg = 750.0 if double else 110.0   # beyond: exp is inf or 0 anyway
        # ln 2 split so that n * hi is exact for every n in range (Cody-Waite)
        self.ln2_hi, self.ln2_lo = (LN2_HI, LN2_LO) if double else (0.693359375,
                                                                    -2.12194440e-4)


def _ity(cg, x, fl):
    return ir.VectorType(fl.I, x.type.count) if isinstance(x.type, ir.VectorType) else fl.I


def _iconst(cg, x, fl, v):
    return cg.splat(ir.Constant(fl.I, v), x.type.count) if isinstance(x.type, ir.VectorType) \
        else ir.Constant(fl.I, v)


def _pow2(cg, k, x, fl):
    """2.0 ** k for integer k (as fl.I) in the normal range."""
    b = cg.b
    bits = b.shl(b.add(k, _iconst(cg, x, fl, fl.bias)), _iconst(cg, x, fl, fl.mant))
    return b.bitcast(bits, x.type)


def _horner(cg, x, coeffs):
    """coeffs[0] + x * (coeffs[1] + x * (...))."""
    acc = cg.fconst(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = cg.fadd(cg.fmul(acc, x), cg.fconst(c))
    return cg.unify(acc, x)[0]


def _estrin(cg, x, coeffs):
    """sum coeffs[k] x^k by Estrin's scheme: pairs c0 + c1 x, then pairs of pairs with
    x^2, x^4, ...: log2(degree) dependent steps instead of Horner's degree, so the
    long exp polynomials do not leave the vector units waiting on one chain."""
    terms = [cg.fconst(c) for c in coeffs]
    power = x
    while len(terms) > 1:
        nxt = [cg.fadd(terms[k], cg.fmul(terms[k + 1], power))
               for k in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
        if len(terms) > 1:
            power = cg.fmul(power, power)
    return cg.unify(terms[0], x)[0]


def _reduce(cg, x, fl, lo: float, hi: float):
    """x clamped to [lo, hi] = n ln2 + r with |r| <= ln2/2 (Cody-Waite). Returns (n as
    an integer vector, r). A NaN passes the clamps (its comparisons are false) and
    gives r = NaN, with n meaningless but harmless: 2^n built from it has a zero
    mantissa, so it is a number or infinity, never NaN, and every result made from r
    is the input's NaN."""
    xc = cg.select(cg.fcmp(">", x, cg.fconst(hi)), cg.fconst(hi), x)
    xc = cg.select(cg.fcmp("<", xc, cg.fconst(lo)), cg.fconst(lo), xc)
    return _split(cg, xc, fl)


def _split(cg, x, fl, unit: float = 1.0):
    """x = n (unit ln2) + r, |r| <= unit ln2/2, for x already in range; unit a power of
    two (so unit ln2's two parts stay exact). Returns (n, r)."""
    b = cg.b
    # n = round(x / (unit ln2)) by the 1.5 * 2^mant trick: the integer lands in the low bits
    magic = 1.5 * 2.0 ** fl.mant
    t = cg.fadd(cg.fmul(x, cg.fconst(1 / (unit * math.log(2)))), cg.fconst(magic))
    nf = cg.fsub(t, cg.fconst(magic))
    n = b.sub(b.bitcast(t, _ity(cg, x, fl)), b.bitcast(cg.unify(cg.fconst(magic), x)[0],
                                                        _ity(cg, x, fl)))
    r = cg.fsub(cg.fsub(x, cg.fmul(nf, cg.fconst(fl.ln2_hi * unit))),
                cg.fmul(nf, cg.fconst(fl.ln2_lo * unit)))
    return n, r


def _expm1_reduced(cg, r, fl):
    """expm1(r) for |r| <= ln2/2, by its Taylor polynomial."""
    terms = 13 if fl.bits == 64 else 8
    return cg.fmul(r, _estrin(cg, r, [1.0 / math.factorial(k + 1) for k in range(terms)]))


def exp(cg, x):
    fl = _Float(cg.T)
    b = cg.b
    n, r = _reduce(cg, x, fl, -fl.max_arg, fl.max_arg)
    p = _estrin(cg, r, EXP if fl.bits == 64 else
                [1.0 / math.factorial(k) for k in range(fl.exp_terms + 1)])
    half = b.ashr(n, _iconst(cg, x, fl, 1))
    # (NaN in: p is NaN, so is the result; see _reduce)
    return cg.fmul(cg.fmul(p, _pow2(cg, half, x, fl)), _pow2(cg, b.sub(n, half), x, fl))


def log(cg, x, normal: bool = False):
    """normal: x is known to be a positive normal number (no special cases)."""
    fl = _Float(cg.T)
    b = cg.b
    I = _ity(cg, x, fl)
    if normal:
        bits = b.bitcast(x, I)
        k = b.sub(b.lshr(bits, _iconst(cg, x, fl, fl.mant)), _iconst(cg, x, fl, fl.bias))
    else:
        tiny = cg.fcmp("<", x, cg.fconst(2.0 ** (1 - fl.bias)))      # subnormal (or <= 0)
        xs = cg.select(tiny, cg.fmul(x, cg.fconst(2.0 ** 54)), x)
        bits = b.bitcast(xs, I)
        k = b.sub(b.lshr(bits, _iconst(cg, x, fl, fl.mant)), _iconst(cg, x, fl, fl.bias))
        k = b.sub(k, b.select(tiny, _iconst(cg, x, fl, 54), _iconst(cg, x, fl, 0)))
    mant_mask = (1 << fl.mant) - 1
    m_bits = b.or_(b.and_(bits, _iconst(cg, x, fl, mant_mask)),
                   _iconst(cg, x, fl, fl.bias << fl.mant))
    m = b.bitcast(m_bits, x.type)                                 # m in [1, 2)
    big = cg.fcmp(">", m, cg.fconst(math.sqrt(2)))
    m = cg.select(big, cg.fmul(m, cg.fconst(0.5)), m)
    k = b.add(k, b.select(big, _iconst(cg, x, fl, 1), _iconst(cg, x, fl, 0)))
    kf = b.sitofp(k, x.type)
    f = cg.fsub(m, cg.fconst(1.0))
    s = cg.fdiv(f, cg.fadd(cg.fconst(2.0), f))
    z = cg.fmul(s, s)
    w = cg.fmul(z, z)
    t1 = cg.fmul(w, _horner(cg, w, [LG[1], LG[3], LG[5]]))
    t2 = cg.fmul(z, _horner(cg, w, [LG[0], LG[2], LG[4], LG[6]]))
    R = cg.fadd(t2, t1)
    hfsq = cg.fmul(cg.fconst(0.5), cg.fmul(f, f))
    inner = cg.fadd(cg.fmul(s, cg.fadd(hfsq, R)), cg.fmul(kf, cg.fconst(LN2_LO)))
    y = cg.fsub(cg.fmul(kf, cg.fconst(LN2_HI)), cg.fsub(cg.fsub(hfsq, inner), f))
    if normal:
        return y
    # special values: log(0) = -inf, log(x < 0) = nan, log(inf) = inf, log(nan) = nan
    y = cg.select(cg.fcmp("==", x, cg.fconst(0)), cg.fconst(-math.inf), y)
    y = cg.select(cg.fcmp("<", x, cg.fconst(0)), cg.fconst(math.nan), y)
    y = cg.select(cg.fcmp("==", x, cg.fconst(math.inf)), x, y)
    return cg.select(b.fcmp_unordered("uno", x, x), x, y)


def log1p(cg, x):
    u = cg.fadd(cg.fconst(1.0), x)
    d = cg.fsub(u, cg.fconst(1.0))
    # log(u) is exact for u; (x - d)/u corrects for the rounding of 1 + x
    corrected = cg.fadd(log(cg, u), cg.fdiv(cg.fsub(x, d), u))
    y = cg.select(cg.fcmp("==", d, cg.fconst(0)), x, corrected)
    y = cg.select(cg.fcmp("==", u, cg.fconst(0)), cg.fconst(-math.inf), y)
    y = cg.select(cg.fcmp("==", u, cg.fconst(math.inf)), u, y)
    return cg.select(cg.b.fcmp_unordered("uno", x, x), x, y)


def log1p_unit(cg, x):
    """log1p(x) for x in [0, 1] (softplus's log1p(exp(-|z|))) without forming 1 + x,
    so there is no rounding of it to correct (log1p's second division) and no
    exponent to extract: for x <= 1/2 the argument of fdlibm's kernel is f = x itself;
    above, 1 + x = 2 (1 + f) with f = (x - 1)/2, exact by Sterbenz's lemma, and
    log1p(x) = ln2 + log1p(f). The kernel, log1p(f) = f - (f^2/2 - s (f^2/2 + R)) with
    s = f/(2 + f), then has s in [-1/7, 1/5], a little beyond e_log's range: R is the
    fit LOG1P_UNIT over it. NaN in gives NaN out."""
    big = cg.fcmp(">", x, cg.fconst(0.5))
    f = cg.select(big, cg.fmul(cg.fsub(x, cg.fconst(1.0)), cg.fconst(0.5)), x)
    s = cg.fdiv(f, cg.fadd(cg.fconst(2.0), f))
    z = cg.fmul(s, s)
    w = cg.fmul(z, z)
    c = LOG1P_UNIT
    R = cg.fadd(cg.fmul(z, _horner(cg, w, [c[0], c[2], c[4], c[6]])),
                cg.fmul(w, _horner(cg, w, [c[1], c[3], c[5], c[7]])))
    hfsq = cg.fmul(cg.fconst(0.5), cg.fmul(f, f))
    k_hi = cg.select(big, cg.fconst(LN2_HI), cg.fconst(0.0))
    k_lo = cg.select(big, cg.fconst(LN2_LO), cg.fconst(0.0))
    inner = cg.fadd(cg.fmul(s, cg.fadd(hfsq, R)), k_lo)
    return cg.fsub(k_hi, cg.fsub(cg.fsub(hfsq, inner), f))


def expm1(cg, x):
    """expm1(x) = 2^n expm1(r) + (2^n - 1) with x = n ln2 + r: one reduction and one
    polynomial, exact in form for n = 0 (|x| < ln2/2), where exp(x) - 1 would cancel.
    2^n is applied in two halves, s1 s2, as s1 (s2 q + (s2 - 1/s1)), so that nothing
    overflows before the result does."""
    fl = _Float(cg.T)
    b = cg.b
    lo = -60.0 if fl.bits == 64 else -20.0         # below: -1 to the last bit
    n, r = _reduce(cg, x, fl, lo, fl.max_arg)
    q = _expm1_reduced(cg, r, fl)
    half = b.ashr(n, _iconst(cg, x, fl, 1))
    s1, s2 = _pow2(cg, half, x, fl), _pow2(cg, b.sub(n, half), x, fl)
    inv_s1 = _pow2(cg, b.neg(half), x, fl)      # 1/s1, exactly, without a division
    y = cg.fmul(s1, cg.fadd(cg.fmul(s2, q), cg.fsub(s2, inv_s1)))
    return cg.select(b.fcmp_unordered("uno", x, x), x, y)


def tanh(cg, x):
    """sign(x) e / (e + 2), e = expm1(2|x|) with |x| clamped to 20 (tanh(20) is 1 to
    the last bit in both types). expm1 is inlined for this range: 2|x| = n ln2 + r
    with 0 <= n <= 58, so 2^n is a normal number and one scaling suffices, and the
    general version's clamps and NaN checks are not needed: about a third fewer
    instructions in a model's hottest loop. The reduction works on |x| itself,
    |x| = n ln2/2 + r/2, with the polynomial's coefficients scaled by powers of two
    (exact), which saves doubling |x|. A NaN goes through every step as a NaN, and
    the sign is put back with copysign (one bitwise operation)."""
    fl = _Float(cg.T)
    a = cg.math("fabs", x)
    a = cg.select(cg.fcmp(">", a, cg.fconst(20.0)), cg.fconst(20.0), a)
    # |x| = n ln2/2 + h: 2|x| = n ln2 + 2h, |2h| <= ln2/2
    n, h = _split(cg, a, fl, unit=0.5)
    # expm1(2h) = h P(h): in float64 the minimax-like fit TANH_EXPM1 (11 terms for
    # Taylor's 13), in float32 Taylor's series, 2h sum_k (2h)^k / (k+1)!, to 8 terms
    coeffs = TANH_EXPM1 if fl.bits == 64 else [2.0 ** (k + 1) / math.factorial(k + 1)
                                               for k in range(8)]
    q = cg.fmul(h, _estrin(cg, h, coeffs))
    s = _pow2(cg, n, x, fl)
    e = cg.fadd(cg.fmul(s, q), cg.fsub(s, cg.fconst(1.0)))
    t = cg.fdiv(e, cg.fadd(e, cg.fconst(2.0)))
    return cg.b.call(cg.intrinsic("copysign", t.type, 2), [t, x])
