"""Derives the constants of lossc's vectorizable special functions (lgamma, digamma,
trigamma, polygamma2, erf, erfc and their sin(pi x) helper in lossc/codegen/vmath.py)
with mpmath, so that they can be checked and regenerated.

Each polynomial is the Chebyshev interpolant (mpmath.chebyfit, 40 digits) of a smooth
function that has no zero on its interval, written in the monomial basis of the
variable vmath.py evaluates it in, each coefficient rounded to the nearest float64.
The functions are chosen so that the polynomial only has to be accurate relative to
its own size: a root of the special function (lgamma's at 1 and 2, digamma's at
1.4616...) is a factor that vmath.py applies exactly, and the leading terms of an
asymptotic series are computed there in closed form. For every fit this prints the
polynomial's truncation error (absolute, from chebyfit) and the worst relative error
that the float64 polynomial makes in the special function on a dense grid.

    .venv/bin/python tools/vmath_coefficients.py            # print the constants
    .venv/bin/python tools/vmath_coefficients.py --check    # exit 1 if vmath.py differs
    .venv/bin/python tools/vmath_coefficients.py --table    # tests' reference values

The table (MPMATH_VALUES in tests/test_vmath.py) holds each function at points where
SciPy's value is not good enough to test against: lgamma next to its roots at 1 and 2,
digamma next to its poles, polygamma at large negative x (SciPy sums |x| terms there),
erfc in the subnormal range (SciPy's is 0).

mpmath is a dependency of sympy, so it is in lossc's environment; lossc itself never
imports it (the constants are literals in vmath.py).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from dataclasses import dataclass
from typing import Callable

import mpmath as mp

mp.mp.dps = 40

# the positive root of digamma, x0 = 1.4616...: vmath.py computes x - x0 as
# (x - DIGAMMA_ROOT_HI) - DIGAMMA_ROOT_LO, exact to the last bit near the root
DIGAMMA_ROOT = mp.findroot(mp.digamma, mp.mpf("1.4616321449683623"))
ERFC_K = mp.mpf("4.5")        # erfcx's variable t = (a - K)/(a + K), see ERFCX
ERF_SMALL_TOP = mp.mpf("0.75")  # erf(a) = a ERF_SMALL(a^2) below; erfc by ERFCX above
ERFC_TOP = mp.mpf("27.5")     # erfc(27.5) < 2^-1075: zero in float64 (and so beyond)
SERIES_FROM = 8               # lgamma, digamma, trigamma, polygamma2: series for x >= 8


def _removable(f, at, limit):
    """f with its removable singularity at `at` filled in by `limit`."""
    return lambda v: limit if abs(v - at) < mp.mpf(10) ** -30 else f(v)


def _x(u):
    """x from u = 1/x^2 (infinity at u = 0)."""
    return 1 / mp.sqrt(u) if u else mp.inf


def _erfcx(a):
    return mp.erfc(a) * mp.exp(a * a)


def _erfc_t(a):
    return (a - ERFC_K) / (a + ERFC_K)


@dataclass(frozen=True)
class Fit:
    name: str                      # the tuple's name in vmath.py
    f: Callable                    # the function, of the polynomial's variable
    lo: object
    hi: object
    degree: int
    what: str                      # for the printout
    # the error of the special function, relative to its value, per unit of error in
    # the polynomial at v (by default 1/|f(v)|: the polynomial is the function's factor)
    weight: Callable | None = None

    def coefficients(self) -> tuple:
        c = mp.chebyfit(self.f, [self.lo, self.hi], self.degree + 1)
        return tuple(float(v) for v in reversed(c))          # lowest degree first

    def truncation(self):
        return mp.chebyfit(self.f, [self.lo, self.hi], self.degree + 1, error=True)[1]

    def float64_error(self, points: int = 2000) -> float:
        """Worst relative error that the rounded coefficients, evaluated by Horner's rule
        in float64, make in the special function, on an even grid of the interval."""
        c = self.coefficients()
        worst = 0.0
        for v in mp.linspace(self.lo, self.hi, points):
            t = float(v)
            p = 0.0
            for ck in reversed(c):
                p = p * t + ck
            exact = self.f(mp.mpf(t))
            weight = self.weight(mp.mpf(t)) if self.weight else 1 / abs(exact)
            worst = max(worst, float(abs(mp.mpf(p) - exact) * weight))
        return worst


FITS = (
    Fit("SINPI", lambda u: mp.sin(mp.pi * mp.sqrt(u)) / mp.sqrt(u) if u else +mp.pi,
        0, mp.mpf(1) / 16, 6, "sin(pi r) = r SINPI(r^2), |r| <= 1/4"),
    Fit("COSPI", lambda u: mp.cos(mp.pi * mp.sqrt(u)),
        0, mp.mpf(1) / 16, 7, "cos(pi r) = COSPI(r^2), |r| <= 1/4"),
    Fit("LGAMMA_2", _removable(lambda v: mp.loggamma(v + mp.mpf(1.75))
                               / ((v - mp.mpf(0.25)) * (v + mp.mpf(0.75))),
                               mp.mpf(0.25), 1 - mp.euler),
        mp.mpf(-0.5), mp.mpf(0.5), 19,
        "lgamma(2 + t) = t (1 + t) LGAMMA_2(t + 1/4), -3/4 <= t <= 1/4"),
    Fit("LGAMMA_STIRLING",
        _removable(lambda u: (mp.loggamma(1 / mp.sqrt(u)) - (1 / mp.sqrt(u) - mp.mpf(0.5))
                              * (mp.log(1 / mp.sqrt(u)) - 1) - mp.log(2 * mp.pi) / 2
                              + mp.mpf(0.5)) / mp.sqrt(u), 0, mp.mpf(1) / 12),
        0, mp.mpf(1) / SERIES_FROM ** 2, 5,
        "lgamma(x) = (x - 1/2)(log x - 1) + log(2 pi)/2 - 1/2 + z LGAMMA_STIRLING(z^2), "
        "z = 1/x, x >= 8", lambda u: mp.sqrt(u) / abs(mp.loggamma(_x(u)))),
    Fit("DIGAMMA_1",
        _removable(lambda t: (mp.digamma(t + mp.mpf(2.5)) - 1 / DIGAMMA_ROOT)
                   / (t + mp.mpf(1.5) - DIGAMMA_ROOT), DIGAMMA_ROOT - mp.mpf(1.5),
                   mp.psi(1, DIGAMMA_ROOT + 1)),
        mp.mpf(-0.5), mp.mpf(0.5), 17,
        "digamma(x) = (x - x0)(DIGAMMA_1(x - 3/2) + 1/(x x0)), 1 <= x <= 2"),
    Fit("DIGAMMA_ASYMPTOTIC",
        _removable(lambda u: (mp.digamma(1 / mp.sqrt(u)) - mp.log(1 / mp.sqrt(u))
                              + mp.sqrt(u) / 2) / u, 0, -mp.mpf(1) / 12),
        0, mp.mpf(1) / SERIES_FROM ** 2, 5,
        "digamma(x) = log x - z/2 + z^2 DIGAMMA_ASYMPTOTIC(z^2), z = 1/x, x >= 8",
        lambda u: u / abs(mp.digamma(_x(u)))),
    Fit("TRIGAMMA_ASYMPTOTIC",
        _removable(lambda u: (mp.psi(1, 1 / mp.sqrt(u)) - mp.sqrt(u) - u / 2) / u ** 1.5,
                   0, mp.mpf(1) / 6),
        0, mp.mpf(1) / SERIES_FROM ** 2, 6,
        "trigamma(x) = z + z^2/2 + z^3 TRIGAMMA_ASYMPTOTIC(z^2), z = 1/x, x >= 8",
        lambda u: u ** 1.5 / mp.psi(1, _x(u)) if u else 0),
    Fit("POLYGAMMA2_ASYMPTOTIC",
        _removable(lambda u: (mp.psi(2, 1 / mp.sqrt(u)) + u + u ** 1.5 + u * u / 2)
                   / u ** 3, 0, mp.mpf(1) / 6),
        0, mp.mpf(1) / SERIES_FROM ** 2, 6,
        "polygamma(2, x) = -z^2 - z^3 - z^4/2 + z^6 POLYGAMMA2_ASYMPTOTIC(z^2), x >= 8",
        lambda u: u ** 3 / abs(mp.psi(2, _x(u))) if u else 0),
    Fit("ERF_SMALL", lambda u: mp.erf(mp.sqrt(u)) / mp.sqrt(u) if u else 2 / mp.sqrt(mp.pi),
        0, ERF_SMALL_TOP ** 2, 10, "erf(a) = a ERF_SMALL(a^2), |a| <= 3/4"),
    Fit("ERFCX", lambda t: (ERFC_K * (1 + t) / (1 - t) + ERFC_K)
        * _erfcx(ERFC_K * (1 + t) / (1 - t)),
        _erfc_t(ERF_SMALL_TOP), _erfc_t(ERFC_TOP), 20,
        "exp(a^2) erfc(a) = ERFCX(t)/(a + K), t = (a - K)/(a + K), K = 4.5, "
        "3/4 <= a <= 27.5"),
)


def constants() -> dict:
    """The scalar constants next to the tuples."""
    hi = float(DIGAMMA_ROOT)
    return {"DIGAMMA_ROOT_HI": hi, "DIGAMMA_ROOT_LO": float(DIGAMMA_ROOT - hi),
            "LOG_PI": float(mp.log(mp.pi)),
            "STIRLING_0": float(mp.log(2 * mp.pi) / 2 - mp.mpf(0.5)),
            "SERIES_FROM": float(SERIES_FROM), "ERFC_K": float(ERFC_K),
            "ERF_SMALL_TOP": float(ERF_SMALL_TOP), "ERFC_TOP": float(ERFC_TOP)}


def _trigamma(x):
    # (mpmath's psi sums about |x| terms for negative x: the reflection formula instead)
    return mp.psi(1, x) if x > 0 else (mp.pi / mp.sinpi(x)) ** 2 - mp.psi(1, 1 - x)


def _polygamma2(x):
    return mp.psi(2, x) if x > 0 else (mp.psi(2, 1 - x)
                                       - 2 * mp.pi ** 3 * mp.cospi(x) / mp.sinpi(x) ** 3)


_MP = {"lgamma": lambda x: mp.log(abs(mp.gamma(x))), "digamma": mp.digamma,
       "trigamma": _trigamma, "polygamma2": _polygamma2, "erf": mp.erf, "erfc": mp.erfc}
TABLE_POINTS = {
    "lgamma": (1 - 1e-9, 1 + 2.0 ** -40, 1.25, 1.4616321449683622, 2 - 1e-12, 2 + 3e-7, 0.3,
               2.5, 7.9, 8.0, 1e5, 1e300, 1e-310, -0.5, -1.5 + 1e-10, -100.3, -3.7,
               -1e6 - 0.25),
    "digamma": (1.4616321449683622, 1.4616321449683625, 1.46163214496836, 1e-8, -1e-8, 0.5,
                7.99, 8.0, 1e15, -0.25, -1 + 2.0 ** -52, -2 + 1e-9, -17 + 1e-4, -1e6 - 0.3,
                -50.5),
    "trigamma": (1e-5, 0.5, 3.3, 7.999, 8.0, 1e10, -0.5, -3 + 1e-9, -1e6 - 0.3, -1e8 - 0.5),
    "polygamma2": (1e-5, 0.5, 3.3, 8.0, 1e10, -0.3, -5 + 1e-6, -1e6 - 0.3),
    "erf": (1e-300, 0.1, 0.74999, 0.75, 1.5, 5.9, -2.0),
    "erfc": (-1.0, 0.5, 0.75, 1.0, 5.0, 10.0, 20.0, 26.0, 26.7, 27.0, 27.2),
}


def table() -> str:
    """MPMATH_VALUES for tests/test_vmath.py: (function, x, value) rows."""
    rows = []
    for name, points in TABLE_POINTS.items():
        for x in points:
            value = float(_MP[name](mp.mpf(x)))
            rows.append(f"    ({name!r}, {x!r}, {value!r}),")
    return "MPMATH_VALUES = (\n" + "\n".join(rows) + "\n)"


def _source(name, coeffs) -> str:
    lines, line = [], f"{name} = ("
    for k, c in enumerate(coeffs):
        item = repr(c) + (", " if k < len(coeffs) - 1 else ")")
        if len(line) + len(item.rstrip()) > 88:
            lines.append(line.rstrip())
            line = " " * (len(name) + 4)
        line += item
    return "\n".join(lines + [line])


def check() -> list:
    """The names whose value in vmath.py differs from the derivation."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from lossc.codegen import vmath
    wrong = [f.name for f in FITS if tuple(getattr(vmath, f.name, ())) != f.coefficients()]
    return wrong + [k for k, v in constants().items() if getattr(vmath, k, None) != v]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with lossc/codegen/vmath.py instead of printing")
    parser.add_argument("--table", action="store_true",
                        help="print the tests' table of reference values")
    args = parser.parse_args(argv)
    if args.table:
        print(table())
        return 0
    if args.check:
        wrong = check()
        print("vmath.py differs: " + ", ".join(wrong) if wrong else "vmath.py agrees")
        return 1 if wrong else 0
    for k, v in constants().items():
        print(f"{k} = {v!r}")
    for f in FITS:
        print(f"# {f.what}: truncation {mp.nstr(f.truncation(), 2)}, "
              f"in float64 {f.float64_error():.2g} relative")
        print(_source(f.name, f.coefficients()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
