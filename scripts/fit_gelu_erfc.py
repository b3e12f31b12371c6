"""Fits the polynomial behind the GPU's bf16 GELU (cuda/launch.cuh: gelu_bf16_cdf_pdf).

erfc(z) = t exp(-z^2 + P(t)) with t = 1 / (1 + z / 2) (the form of Numerical Recipes' erfcc). P
is fitted by least squares at Chebyshev nodes of t in [0.17, 1], i.e. z <= 9.76 (|v| <= 13.8 for
z = |v| / sqrt 2): below v = -13.2 the kernel's phi flushes to 0 and above it Phi rounds to 1, so
no larger z matters. The kernel evaluates Phi(-|v|) = t phi(v) exp2(Q(t)) with
Q = log2(e) P - log2(2 / sqrt(2 pi)), whose coefficients (highest power first) this prints, with
the fit's largest error (the fractional error of erfc) and an fp32 emulation of the kernel's GELU
and slope against the exact function.

    pip install numpy mpmath && python3 scripts/fit_gelu_erfc.py [degree]
"""
import math
import sys

import numpy as np
from mpmath import erfc, log, mp, mpf

mp.dps = 30
DEGREE = int(sys.argv[1]) if len(sys.argv) > 1 else 7
T_LO, T_HI = 0.17, 1.0


def residual(t):
    """ln(erfc(z) / t) + z^2: what P(t) must equal."""
    z = 2 * (1 / t - 1)
    return float(log(erfc(mpf(z)) / mpf(t)) + mpf(z) ** 2)


mid, half = (T_LO + T_HI) / 2, (T_HI - T_LO) / 2
nodes = np.cos(np.linspace(0, math.pi, 6000)) * half + mid
cheb = np.polynomial.chebyshev.chebfit((nodes - mid) / half, [residual(t) for t in nodes], DEGREE)
p = np.polynomial.Polynomial(np.polynomial.chebyshev.cheb2poly(cheb))(
    np.polynomial.Polynomial([-mid / half, 1 / half]))
grid = np.linspace(T_LO, T_HI, 4001)
print(f"degree {DEGREE}: largest fractional error of erfc on t in [{T_LO}, {T_HI}]:",
      max(abs(p(t) - residual(t)) for t in grid))

pdf_scale = 1 / math.sqrt(2 * math.pi)
q = [c / math.log(2) for c in p.coef]
q[0] -= math.log2(2 * pdf_scale)
q = q[::-1]
print("Q, highest power first:", ", ".join(f"{c:.9g}f" for c in q))

# The kernel's arithmetic in fp32 (fused multiply-adds rounded once; exact reciprocal and exp2
# standing in for the hardware approximations).
f32 = np.float32
qf = [f32(c) for c in q]


def fma(a, b, c):
    return f32(np.float64(a) * np.float64(b) + np.float64(c))


def gelu_and_slope(v):
    v = f32(v)
    t = f32(1 / np.float64(fma(abs(v), f32(0.5 / math.sqrt(2)), f32(1))))
    acc = qf[0]
    for c in qf[1:]:
        acc = fma(acc, t, c)
    pdf = f32(np.exp2(np.float64(fma(f32(v * v), f32(-0.5 / math.log(2)),
                                     f32(math.log2(pdf_scale))))))
    tail = f32(f32(t * pdf) * f32(np.exp2(np.float64(acc))))
    cdf = f32(1 - tail) if v >= 0 else tail
    return float(f32(v * cdf)), float(fma(v, pdf, cdf))


worst_value = worst_slope = 0.0
for i in range(-26400, 26401):
    v = float(f32(i * 0.0005))
    cdf = float(0.5 * erfc(mpf(-v) / mp.sqrt(2)))
    value, slope = v * cdf, cdf + v * pdf_scale * math.exp(-v * v / 2)
    got_value, got_slope = gelu_and_slope(v)
    if value != 0:
        worst_value = max(worst_value, abs(got_value / value - 1))
    worst_slope = max(worst_slope, abs(got_slope - slope))
print(f"fp32 emulation, v in [-13.2, 13.2]: GELU relative error {worst_value:.3g}, "
      f"slope absolute error {worst_slope:.3g}")
