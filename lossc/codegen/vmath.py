"""exp, log, log1p, expm1, tanh and the special functions lgamma, digamma, trigamma,
polygamma2, erf and erfc as straight-line LLVM IR that vectorizes.

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
           its polynomial a Chebyshev fit of degree 10 in float64 (Taylor: 12);
           expm1_2abs is that e up to |x| = 354 (float32: 44), where e + 2 is finite,
           for tanh and its derivative together

The special functions follow SciPy (gammaln, digamma, polygamma(1, x), polygamma(2,
x), erf, erfc), its choices at poles and infinities included. They are written for
float64; float32 widens, computes in float64 and rounds once (_in_float64). Every
lane computes every formula a function has and selects its own, so their cost is the
sum of their parts. Their polynomials come from tools/vmath_coefficients.py, which
derives them with mpmath and checks the values here. Errors in float64, measured
against mpmath, in ulp of the result:

    lgamma     x < 0 by reflection, lgamma(x) = log(pi) - log|x sin(pi x)| - lgamma(-x)
               with -x exact; below 8 the recurrence from lgamma(2 + t) =
               t (1 + t) LGAMMA_2(t + 1/4), |t + 1/4| <= 1/2, so both roots are exact
               factors; from 8 on Stirling's series. Within 3.5 ulp for x > 0
    digamma    x < 0 by reflection from 1 - x; below 8 the recurrence from the base
               [1, 2), where (x - x0) is an exact factor at the root x0 = 1.4616...;
               from 8 on the asymptotic series. Within 4.5 ulp for x > 0
    trigamma   x < 0 by reflection from 1 - x (no cancellation); below 8 shifted up by
               8 (a sum of positive terms), then the asymptotic series. Within 5 ulp
    polygamma2 as trigamma, with cubes; reflection with cos(pi x)/sin(pi x)^3. Within
               6 ulp for x > 0
    erf, erfc  |x| < 3/4: erf = x ERF_SMALL(x^2); beyond, with a = |x|, erfc(a) =
               exp(-a^2) erfcx(a), exp of the exact square (Dekker's product), erfcx
               by a polynomial in (a - 4.5)/(a + 4.5); erf = 1 - erfc, and erfc(x) =
               2 - erfc(a) for x < 0. erf within 3 ulp, erfc within 5.5, subnormal
               results included
    sinpi      the reflections' sin(pi x), cos(pi x): exact reduction to |r| <= 1/4

For x < 0 the error of lgamma, digamma and polygamma2 is within 12 ulp of the larger
of |f(x)| and |f(1 - x)|: of f(x) itself but next to its zeros (lgamma has two
between poles down to about -17, the others one between every two), where the
reflection formula's two terms cancel. float32: within one float32 ulp (correctly
rounded but for the double rounding).
"""
from __future__ import annotations

import functools
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

# The special functions' constants, derived by tools/vmath_coefficients.py (which says
# what each polynomial approximates and checks these values: --check). Each is a
# Chebyshev interpolant at 40 digits of a function without zeros on its interval, so
# that relative accuracy is the polynomial's own; its float64 error there is below
# 2.3e-16 relative.
DIGAMMA_ROOT_HI = 1.4616321449683622     # digamma's positive root x0 = HI + LO
DIGAMMA_ROOT_LO = 9.549995429965697e-17
LOG_PI = 1.1447298858494002
STIRLING_0 = 0.4189385332046727          # log(2 pi)/2 - 1/2
# sin(pi r) = r SINPI(r^2) and cos(pi r) = COSPI(r^2) for |r| <= 1/4
SINPI = (3.141592653589793, -5.167712780049954, 2.5501640398733763, -0.5992645289396449,
         0.08214586918000175, -0.007370021586907771, 0.000461531855383581)
COSPI = (1.0, -4.934802200544679, 4.058712126416747, -1.3352627688519174,
         0.23533063019088787, -0.025806885652951306, 0.0019294657440800042,
         -0.00010356747255199479)
# lgamma(2 + t) = t (1 + t) LGAMMA_2(t + 1/4) for -3/4 <= t <= 1/4 (both roots factors)
LGAMMA_2 = (0.4501393121092563, -0.11948158662524275, 0.04452044719851034,
            -0.019053957830247926, 0.008776370425163885, -0.004226194125865728,
            0.0020955338847148163, -0.0010605660779488247, 0.0005448968670945976,
            -0.00028319055537594635, 0.0001485185844737106, -7.846273965002459e-05,
            4.168915388290168e-05, -2.227253661492844e-05, 1.2039401461060753e-05,
            -6.4860565132902415e-06, 3.207741090760838e-06, -1.7373991814531819e-06,
            1.5050654576547734e-06, -8.213650044261199e-07)
# lgamma(x) = (x - 1/2)(log x - 1) + STIRLING_0 + z LGAMMA_STIRLING(z^2), z = 1/x,
# x >= SERIES_FROM
LGAMMA_STIRLING = (0.0833333333333333, -0.002777777777606244, 0.0007936506649488252,
                   -0.0005952025951802712, 0.0008372834512071336,
                   -0.0016526004455595122)
# digamma(x) = (x - x0) (DIGAMMA_1(x - 3/2) + 1/(x x0)) for 1 <= x <= 2: DIGAMMA_1 is
# (digamma(x + 1) - 1/x0)/(x - x0), analytic out to x = -1
DIGAMMA_1 = (0.49494476150711986, -0.11955334493165182, 0.037826433340914206,
             -0.013260889120668915, 0.004892701830776073, -0.0018581181902805814,
             0.000718157216262706, -0.0002806790256607622, 0.00011050325082067195,
             -4.3718536447291106e-05, 1.7353817898476063e-05, -6.904390206174073e-06,
             2.7531368837527235e-06, -1.098323991093393e-06, 4.3142439877735586e-07,
             -1.723360745935161e-07, 8.396600052949772e-08, -3.35656521731688e-08)
# the asymptotic series' tails in u = 1/x^2, for x >= SERIES_FROM (see _inverse_square)
SERIES_FROM = 8.0
DIGAMMA_ASYMPTOTIC = (-0.08333333333333287, 0.008333333331168558, -0.003968252342841619,
                      0.004166217650696842, -0.007519088230747095, 0.017711160415846534)
TRIGAMMA_ASYMPTOTIC = (0.16666666666666655, -0.03333333333249287, 0.023809522943893217,
                       -0.03333299706371194, 0.07569481310235808, -0.24699740954161503,
                       0.8586880107331692)
POLYGAMMA2_ASYMPTOTIC = (0.16666666666664942, -0.1666666665582501, 0.2999998881052337,
                         -0.8332896856636077, 3.282269374179572, -16.68934844596863,
                         78.57281269309581)
# erf(a) = a ERF_SMALL(a^2) for |a| <= 3/4
ERF_SMALL = (1.1283791670955126, -0.37612638903183715, 0.11283791670952596,
             -0.026866170644428485, 0.005223977615420539, -0.0008548326188759752,
             0.00012055289567541706, -1.4924196305569617e-05, 1.643068417974155e-06,
             -1.5940066854661717e-07, 1.1472499701094691e-08)
# exp(a^2) erfc(a) = ERFCX(t)/(a + ERFC_K) with t = (a - ERFC_K)/(a + ERFC_K), for
# ERF_SMALL_TOP <= a <= ERFC_TOP (which t maps onto [-0.71, 0.72]); erfc(ERFC_TOP) is
# below half the smallest subnormal, so it and everything beyond round to zero
ERFC_K = 4.5
ERF_SMALL_TOP = 0.75
ERFC_TOP = 27.5
ERFCX = (1.1023632384645727, -1.0049269806415522, 0.8339512420846499,
         -0.6281259956147587, 0.42728027748866937, -0.2605239765676688,
         0.1407414803595142, -0.06614072530318628, 0.026198967190745243,
         -0.008209019988549, 0.0017034200683835508, -2.684671417286134e-05,
         -0.00014249150304029558, 5.298649017571293e-05, -2.736211944900019e-06,
         -4.850068537944128e-06, 1.6000964924154903e-06, 1.9184714826482288e-07,
         -2.2619490306116593e-07, 8.44802520753238e-09, 1.9983733117876546e-08)

FUNCTIONS = ("exp", "log", "log1p", "log1p_unit", "expm1", "tanh", "expm1_2abs", "lgamma",
             "digamma", "trigamma", "polygamma2", "erf", "erfc")


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
    # x itself for NaN, and for a zero: -0 + (1 - 1) above is +0, expm1(-0) is -0
    keep = cg.or_(b.fcmp_unordered("uno", x, x), cg.fcmp("==", x, cg.fconst(0.0)))
    return cg.select(keep, x, y)


def tanh(cg, x):
    """sign(x) e / (e + 2), e = expm1(2|x|) with |x| clamped to 20 (tanh(20) is 1 to
    the last bit in both types); the sign is put back with copysign (one bitwise
    operation)."""
    e = _expm1_twice_abs(cg, x, 20.0)
    t = cg.fdiv(e, cg.fadd(e, cg.fconst(2.0)))
    return cg.b.call(cg.intrinsic("copysign", t.type, 2), [t, x])


def expm1_2abs_clamp(T) -> float:
    """The largest |x| expm1_2abs takes as it is: e and e + 2 stay finite."""
    return 354.0 if isinstance(T, ir.DoubleType) else 44.0


def expm1_2abs(cg, x):
    """expm1(2|x|), |x| clamped to expm1_2abs_clamp: tanh and its derivative sech^2
    from one exponential (ir/ops/elementwise.py tanh_with, sech2_with)."""
    return _expm1_twice_abs(cg, x, expm1_2abs_clamp(cg.T))


def _expm1_twice_abs(cg, x, clamp: float):
    """expm1(2 min(|x|, clamp)), for a clamp at which 2^n below is a normal number (so
    one scaling suffices, and the general expm1's clamps and NaN checks are not
    needed: about a third fewer instructions in a model's hottest loop). The reduction
    works on |x| itself, |x| = n ln2/2 + r/2, with the polynomial's coefficients
    scaled by powers of two (exact), which saves doubling |x|. A NaN goes through every
    step as a NaN."""
    fl = _Float(cg.T)
    a = cg.math("fabs", x)
    a = cg.select(cg.fcmp(">", a, cg.fconst(clamp)), cg.fconst(clamp), a)
    # |x| = n ln2/2 + h: 2|x| = n ln2 + 2h, |2h| <= ln2/2
    n, h = _split(cg, a, fl, unit=0.5)
    # expm1(2h) = h P(h): in float64 the minimax-like fit TANH_EXPM1 (11 terms for
    # Taylor's 13), in float32 Taylor's series, 2h sum_k (2h)^k / (k+1)!, to 8 terms
    coeffs = TANH_EXPM1 if fl.bits == 64 else [2.0 ** (k + 1) / math.factorial(k + 1)
                                               for k in range(8)]
    q = cg.fmul(h, _estrin(cg, h, coeffs))
    s = _pow2(cg, n, x, fl)
    return cg.fadd(cg.fmul(s, q), cg.fsub(s, cg.fconst(1.0)))


# ---- special functions: lgamma, digamma, trigamma, polygamma2, erf, erfc ----

def _in_float64(fn):
    """fn, written for float64, for both real types: a float32 argument is widened,
    fn runs in float64 and the result is rounded to float32 once, so float32 results
    are correctly rounded but for that double rounding. (Native float32 code would
    take twice the lanes per instruction, but need fits of its own and its own error
    analysis at every root and pole.)"""
    @functools.wraps(fn)
    def in_float64(cg, x):
        if isinstance(cg.T, ir.DoubleType):
            return fn(cg, x)
        D = ir.DoubleType()
        wide = cg.in_type(D)
        xt = ir.VectorType(D, x.type.count) if isinstance(x.type, ir.VectorType) else D
        return cg.b.fptrunc(fn(wide, cg.b.fpext(x, xt)), x.type)
    return in_float64


def _round(cg, x, fl):
    """x rounded to the nearest integer (ties to even), for |x| < 2^(mant - 1)."""
    magic = cg.fconst(1.5 * 2.0 ** fl.mant)
    return cg.fsub(cg.fadd(x, magic), magic)


def _floor(cg, x, fl):
    """floor(x) for |x| < 2^(mant - 1)."""
    r = _round(cg, x, fl)
    return cg.select(cg.fcmp(">", r, x), cg.fsub(r, cg.fconst(1.0)), r)


def _flip_sign(cg, v, bit, fl):
    """v with its sign flipped where the integer `bit` is 2 (and kept where it is 0)."""
    b = cg.b
    I = _ity(cg, v, fl)
    mask = b.shl(bit, _iconst(cg, v, fl, fl.bits - 2))
    return b.bitcast(b.xor(b.bitcast(v, I), mask), v.type)


def _sinpi_cospi(cg, x):
    """(sin(pi x), cos(pi x)) with exact argument reduction, so that both are accurate
    to the last bit for every x, next to the integers (where the reflection formulas
    meet their poles) as anywhere: y = x - 2 round(x/2) in [-1, 1], then y = k/2 + r
    with |r| <= 1/4, both subtractions exact; sin(pi r) = r SINPI(r^2), cos(pi r) =
    COSPI(r^2), exchanged and negated as k mod 4 says. |x| >= 2^52 is an integer, taken
    as 0 (the sign of cos for the odd integers below 2^53 is lost: the callers treat
    every integer as a pole). NaN gives NaN; infinity gives (0, 1)."""
    fl = _Float(cg.T)
    b = cg.b
    y = cg.fsub(x, cg.fmul(cg.fconst(2.0), _round(cg, cg.fmul(x, cg.fconst(0.5)), fl)))
    y = cg.select(cg.fcmp(">=", cg.math("fabs", x), cg.fconst(2.0 ** fl.mant)),
                  cg.fconst(0.0), y)
    # k = round(2y) in -2..2 as an integer, from the bits of 2y + magic (as _split)
    magic = cg.unify(cg.fconst(1.5 * 2.0 ** fl.mant), x)[0]
    shifted = cg.fadd(cg.fmul(y, cg.fconst(2.0)), magic)
    k = b.sub(b.bitcast(shifted, _ity(cg, x, fl)), b.bitcast(magic, _ity(cg, x, fl)))
    r = cg.fsub(y, cg.fmul(cg.fsub(shifted, magic), cg.fconst(0.5)))
    u = cg.fmul(r, r)
    s, c = cg.fmul(r, _estrin(cg, u, SINPI)), _estrin(cg, u, COSPI)
    # k mod 4 = 0, 1, 2, 3: sin = s, c, -s, -c and cos = c, -s, -c, s
    odd = b.icmp_signed("!=", b.and_(k, _iconst(cg, x, fl, 1)), _iconst(cg, x, fl, 0))
    two = _iconst(cg, x, fl, 2)
    sin = _flip_sign(cg, b.select(odd, c, s), b.and_(k, two), fl)
    k_plus_1 = b.add(k, _iconst(cg, x, fl, 1))
    cos = _flip_sign(cg, b.select(odd, s, c), b.and_(k_plus_1, two), fl)
    return sin, cos


def _reflected(cg, x):
    """(x < 0, the argument 1 - x there and x elsewhere): digamma, trigamma and
    polygamma2 take negative x to their kernels for positive arguments by reflection
    formulas. (1 - x is rounded where x has bits below ulp(1 - x); that changes f by
    about f' times half an ulp of 1 - x, small beside f(x) but next to its zeros.)"""
    neg = cg.fcmp("<", x, cg.fconst(0.0))
    return neg, cg.select(neg, cg.fsub(cg.fconst(1.0), x), x)


def _inverse_square(cg, x, shifted):
    """(z, u) = (1/x', 1/x'^2) where x' = x for x >= SERIES_FROM and x + `shifted`
    below: the variables of the asymptotic series."""
    big = cg.fcmp(">=", x, cg.fconst(SERIES_FROM))
    z = cg.fdiv(cg.fconst(1.0), cg.select(big, x, cg.fadd(x, cg.fconst(shifted))))
    return z, cg.fmul(z, z)


@_in_float64
def lgamma(cg, x):
    """log |Gamma(x)|: _lgamma_positive(|x|), and for x < 0 the reflection formula
    Gamma(x) Gamma(-x) = -pi / (x sin(pi x)), whose -x is exact:
    lgamma(x) = log(pi) - log|x sin(pi x)| - lgamma(-x). Below 2^-60 in magnitude,
    lgamma(x) = lgamma(-x) to the last bit (they differ by 2 gamma |x|), and
    x sin(pi x) would be subnormal. Poles (x = 0, -1, ...) give inf, NaN gives NaN, and
    -inf gives -inf as SciPy's gammaln does."""
    y = cg.math("fabs", x)
    positive = _lgamma_positive(cg, y)
    s, _ = _sinpi_cospi(cg, x)
    # (log for normal numbers: the lanes where x sin(pi x) is zero, subnormal, infinite
    # or NaN take another value below)
    reflected = cg.fsub(cg.fsub(cg.fconst(LOG_PI),
                                log(cg, cg.math("fabs", cg.fmul(x, s)), normal=True)),
                        positive)
    neg = cg.fcmp("<", x, cg.fconst(-(2.0 ** -60)))
    result = cg.select(neg, reflected, positive)
    pole = cg.b.and_(neg, cg.fcmp("==", s, cg.fconst(0.0)))
    result = cg.select(pole, cg.fconst(math.inf), result)
    return cg.select(cg.fcmp("==", x, cg.fconst(-math.inf)), x, result)


def _lgamma_positive(cg, y):
    """lgamma(y) for y >= 0. Below SERIES_FROM, with k = round(y + 1/4) and t = y - k
    in [-3/4, 1/4] (exact but for y in [1/4, 1/2), where its rounding changes
    nothing that shows), the recurrence from lgamma(2 + t) = t(1 + t) LGAMMA_2(t + 1/4):
        lgamma(y) = lgamma(2 + t) + log((2 + t)(3 + t)...(k - 1 + t))   (k >= 2)
                  = lgamma(2 + t) - log(y)   (k = 1)  or  - log(y (y + 1))   (k = 0).
    Both roots are exact factors: near 2 (t = 0) and, for y in [5/4, 2), near 1 the
    result is the product alone; below 5/4 its two terms cancel by a factor of at
    most 3.5 (at 5/4; 2.5 at the root 1). From SERIES_FROM on, Stirling's series
    (y - 1/2)(log y - 1) + STIRLING_0 + z LGAMMA_STIRLING(z^2), z = 1/y. One log serves
    both: of the product below, of y above. 0 gives inf."""
    fl = _Float(cg.T)
    stirling = cg.fcmp(">=", y, cg.fconst(SERIES_FROM))
    k = _round(cg, cg.fadd(y, cg.fconst(0.25)), fl)
    t = cg.fsub(y, k)
    one = cg.fconst(1.0)
    near_2 = cg.fmul(cg.fmul(t, cg.fadd(t, one)),
                     _estrin(cg, cg.fadd(t, cg.fconst(0.25)), LGAMMA_2))
    product = one
    for j in range(2, int(SERIES_FROM)):
        product = cg.fmul(product, cg.select(cg.fcmp(">", k, cg.fconst(j)),
                                             cg.fadd(t, cg.fconst(j)), one))
    below_2 = cg.fcmp("<", k, cg.fconst(1.5))
    y_and_next = cg.fmul(y, cg.select(cg.fcmp("<", k, cg.fconst(0.5)),
                                      cg.fadd(y, one), one))
    L = log(cg, cg.select(stirling, y, cg.select(below_2, y_and_next, product)))
    small = cg.select(below_2, cg.fsub(near_2, L), cg.fadd(near_2, L))
    z, u = _inverse_square(cg, y, 0.0)
    tail = cg.fadd(cg.fconst(STIRLING_0), cg.fmul(z, _estrin(cg, u, LGAMMA_STIRLING)))
    large = cg.fadd(cg.fmul(cg.fsub(y, cg.fconst(0.5)), cg.fsub(L, one)), tail)
    return cg.select(stirling, large, small)


@_in_float64
def digamma(cg, x):
    """digamma(x) = _digamma_positive(x) for x >= 0, and by reflection
    digamma(1 - x) - pi cos(pi x)/sin(pi x) below. Poles: 0 gives -inf (-0: inf), the
    negative integers and -inf give NaN, as in SciPy."""
    neg, y = _reflected(cg, x)
    positive = _digamma_positive(cg, y)
    s, c = _sinpi_cospi(cg, x)
    reflected = cg.fsub(positive, cg.fdiv(cg.fmul(cg.fconst(math.pi), c), s))
    result = cg.select(neg, reflected, positive)
    pole = cg.b.and_(neg, cg.fcmp("==", s, cg.fconst(0.0)))
    return cg.select(pole, cg.fconst(math.nan), result)


def _digamma_positive(cg, y):
    """digamma(y) for y >= 0. Below SERIES_FROM: with k = floor(y), the base argument
    w = y - k + 1 in [1, 2) (exact for k >= 1) and x0 the root 1.4616...,
        digamma(y) = (w - x0) DIGAMMA_1(w - 3/2) + (w - x0)/(w x0) + S,
    S = 1/(y - 1) + ... + 1/(y - k + 1) for k >= 2 and -1/y for k = 0 (the recurrence
    digamma(y + 1) = digamma(y) + 1/y). Both first terms carry the factor w - x0,
    computed exactly, so the root comes out to relative accuracy. The fractions are
    added as one, N/D (N/D + 1/c = (N c + D)/(D c)): one division. From SERIES_FROM
    on, log y - 1/(2y) + u DIGAMMA_ASYMPTOTIC(u), u = 1/y^2, whose 1/y shares that
    division. +0 gives -inf and -0 gives +inf (the sign of -1/y)."""
    fl = _Float(cg.T)
    series = cg.fcmp(">=", y, cg.fconst(SERIES_FROM))
    k = _floor(cg, y, fl)
    w = cg.fsub(y, cg.fsub(k, cg.fconst(1.0)))
    w_x0 = cg.fsub(cg.fsub(w, cg.fconst(DIGAMMA_ROOT_HI)), cg.fconst(DIGAMMA_ROOT_LO))
    num, den = w_x0, cg.fmul(w, cg.fconst(DIGAMMA_ROOT_HI))
    k_is_0 = cg.fcmp("<", k, cg.fconst(0.5))
    for j in range(1, int(SERIES_FROM) - 1):
        c = cg.fsub(y, cg.fconst(j))
        add = cg.fcmp(">", k, cg.fconst(j))
        if j == 1:                                   # k = 0: the term -1/y
            c = cg.select(k_is_0, cg.fneg(y), c)
            add = cg.b.or_(add, k_is_0)
        num = cg.select(add, cg.fadd(cg.fmul(num, c), den), num)
        den = cg.select(add, cg.fmul(den, c), den)
    q = cg.fdiv(cg.select(series, cg.fconst(1.0), num), cg.select(series, y, den))
    small = cg.fadd(cg.fmul(w_x0, _estrin(cg, cg.fsub(w, cg.fconst(1.5)), DIGAMMA_1)), q)
    u = cg.fmul(q, q)                                # (q = 1/y where it is used)
    large = cg.fadd(cg.fsub(log(cg, y), cg.fmul(cg.fconst(0.5), q)),
                    cg.fmul(u, _estrin(cg, u, DIGAMMA_ASYMPTOTIC)))
    return cg.select(series, large, small)


def _recurrence_sum(cg, y, power: int, tiny: float):
    """(y < tiny, q): q is sum_{j=0}^{SERIES_FROM-1} 1/(y + j)^power, added as one
    fraction N/D (one division), but 1/y where y < tiny: there y^power could
    underflow, and the caller's answer is (1/y)^power alone."""
    num, den = cg.fconst(1.0), cg.powi(y, power)
    for j in range(1, int(SERIES_FROM)):
        c = cg.powi(cg.fadd(y, cg.fconst(j)), power)
        num, den = cg.fadd(cg.fmul(num, c), den), cg.fmul(den, c)
    is_tiny = cg.fcmp("<", y, cg.fconst(tiny))
    return is_tiny, cg.fdiv(cg.select(is_tiny, cg.fconst(1.0), num),
                            cg.select(is_tiny, y, den))


@_in_float64
def trigamma(cg, x):
    """polygamma(1, x) = _trigamma_positive(x) for x >= 0, and by reflection
    (pi / sin(pi x))^2 - trigamma(1 - x) below (no cancellation: the first term is at
    least pi^2, the second at most pi^2/6). Poles and -inf give inf, as in SciPy."""
    neg, y = _reflected(cg, x)
    positive = _trigamma_positive(cg, y)
    s, _ = _sinpi_cospi(cg, x)
    w = cg.fdiv(cg.fconst(math.pi), s)
    return cg.select(neg, cg.fsub(cg.fmul(w, w), positive), positive)


def _trigamma_positive(cg, y):
    """trigamma(y) for y >= 0: below SERIES_FROM, trigamma(y + 8) + sum_{j<8} 1/(y + j)^2
    (every term positive), from SERIES_FROM on the asymptotic series
    z + z^2/2 + z^3 TRIGAMMA_ASYMPTOTIC(z^2), z = 1/y; below 2^-30, (1/y)^2 (the rest
    is below its last bit)."""
    series = cg.fcmp(">=", y, cg.fconst(SERIES_FROM))
    tiny, q = _recurrence_sum(cg, y, 2, 2.0 ** -30)
    z, u = _inverse_square(cg, y, SERIES_FROM)
    series_tail = cg.fmul(z, _estrin(cg, u, TRIGAMMA_ASYMPTOTIC))
    tail = cg.fadd(z, cg.fmul(u, cg.fadd(cg.fconst(0.5), series_tail)))
    result = cg.select(series, tail, cg.fadd(q, tail))
    return cg.select(tiny, cg.fmul(q, q), result)


@_in_float64
def polygamma2(cg, x):
    """polygamma(2, x) = _polygamma2_positive(x) for x >= 0, and by reflection
    polygamma2(1 - x) - 2 (pi / sin(pi x))^3 cos(pi x) below. 0, -0, the negative
    integers and -inf give -inf, as SciPy does."""
    neg, y = _reflected(cg, x)
    positive = _polygamma2_positive(cg, y)
    s, c = _sinpi_cospi(cg, x)
    w = cg.fdiv(cg.fconst(math.pi), s)
    w3 = cg.fmul(cg.fmul(w, w), w)
    result = cg.select(neg, cg.fsub(positive, cg.fmul(cg.fmul(cg.fconst(2.0), w3), c)),
                       positive)
    pole = cg.b.or_(cg.fcmp("==", x, cg.fconst(0.0)),
                    cg.b.and_(neg, cg.fcmp("==", s, cg.fconst(0.0))))
    return cg.select(pole, cg.fconst(-math.inf), result)


def _polygamma2_positive(cg, y):
    """polygamma(2, y) for y > 0: below SERIES_FROM,
    polygamma2(y + 8) - 2 sum_{j<8} 1/(y + j)^3 (every term negative), from SERIES_FROM
    on -z^2 - z^3 - z^4/2 + z^6 POLYGAMMA2_ASYMPTOTIC(z^2), z = 1/y; below 2^-20,
    -2 (1/y)^3."""
    series = cg.fcmp(">=", y, cg.fconst(SERIES_FROM))
    tiny, q = _recurrence_sum(cg, y, 3, 2.0 ** -20)
    z, u = _inverse_square(cg, y, SERIES_FROM)
    inner = cg.fsub(cg.fconst(0.5), cg.fmul(u, _estrin(cg, u, POLYGAMMA2_ASYMPTOTIC)))
    tail = cg.fneg(cg.fmul(u, cg.fadd(cg.fadd(cg.fconst(1.0), z), cg.fmul(u, inner))))
    result = cg.select(series, tail, cg.fsub(tail, cg.fmul(cg.fconst(2.0), q)))
    tiny_value = cg.fmul(cg.fconst(-2.0), cg.fmul(cg.fmul(q, q), q))
    return cg.select(tiny, tiny_value, result)


def _square_exact(cg, a):
    """(hi, lo) with hi + lo = a^2 exactly (Dekker's product): a = ah + al with ah the
    leading 26 bits, so that ah^2 and 2 ah al are exact. Without contraction into FMAs,
    which would not change the result but make the argument harder to follow."""
    fl = _Float(cg.T)
    b = cg.b
    I = _ity(cg, a, fl)
    ah = b.bitcast(b.and_(b.bitcast(a, I), _iconst(cg, a, fl, ~((1 << 27) - 1))), a.type)
    al = b.fsub(a, ah)
    hi = b.fmul(a, a)
    lo = b.fadd(b.fadd(b.fsub(b.fmul(ah, ah), hi), b.fmul(b.fadd(ah, ah), al)),
                b.fmul(al, al))
    return hi, lo


def _erf_parts(cg, x):
    """(a = |x|, erf(a) for a < ERF_SMALL_TOP, erfc(a) for a >= ERF_SMALL_TOP), each
    good only on its side. erf(a) = a ERF_SMALL(a^2). erfc(a) = exp(-a^2) erfcx(a),
    erfcx(a) = ERFCX(t)/(a + K) with t = (a - K)/(a + K) (one division for both), and
    exp(-a^2) = exp(-hi)(1 - lo) from the exact square hi + lo: exp of a rounded a^2
    would be wrong by up to 4e-14 relative (a^2 times its rounding) where erfc is
    small. a is clamped to ERFC_TOP, beyond which erfc is 0 in float64."""
    a = cg.math("fabs", x)
    erf_small = cg.fmul(a, _estrin(cg, cg.fmul(a, a), ERF_SMALL))
    ac = cg.select(cg.fcmp(">", a, cg.fconst(ERFC_TOP)), cg.fconst(ERFC_TOP), a)
    inv = cg.fdiv(cg.fconst(1.0), cg.fadd(ac, cg.fconst(ERFC_K)))
    t = cg.fmul(cg.fsub(ac, cg.fconst(ERFC_K)), inv)
    erfcx = cg.fmul(_estrin(cg, t, ERFCX), inv)
    hi, lo = _square_exact(cg, ac)
    erfc_large = cg.fmul(exp(cg, cg.fneg(hi)), cg.fsub(erfcx, cg.fmul(erfcx, lo)))
    return a, erf_small, erfc_large


@_in_float64
def erf(cg, x):
    """sign(x) (a ERF_SMALL(a^2)) for |x| < 3/4, sign(x) (1 - erfc(|x|)) above (erfc is
    below 0.29 there: no cancellation)."""
    a, erf_small, erfc_large = _erf_parts(cg, x)
    small = cg.fcmp("<", a, cg.fconst(ERF_SMALL_TOP))
    y = cg.select(small, erf_small, cg.fsub(cg.fconst(1.0), erfc_large))
    return cg.b.call(cg.intrinsic("copysign", y.type, 2), [y, x])


@_in_float64
def erfc(cg, x):
    """1 - erf(x) for |x| < 3/4 (erfc is above 0.28 there), exp(-x^2) erfcx(x) above,
    2 - erfc(|x|) below -3/4."""
    a, erf_small, erfc_large = _erf_parts(cg, x)
    small = cg.fcmp("<", a, cg.fconst(ERF_SMALL_TOP))
    signed = cg.b.call(cg.intrinsic("copysign", erf_small.type, 2), [erf_small, x])
    large = cg.select(cg.fcmp("<", x, cg.fconst(0.0)),
                      cg.fsub(cg.fconst(2.0), erfc_large), erfc_large)
    return cg.select(small, cg.fsub(cg.fconst(1.0), signed), large)
