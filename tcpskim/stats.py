"""Small statistics for tcpskim reports, without scipy.

* ``t_quantile(level, df)``: two-sided Student-t critical value. An exact table (6 decimals)
  for df 1..30 at levels 0.90/0.95/0.99; other (level, df) pairs invert the t CDF numerically
  (regularised incomplete beta, Lentz continued fraction, then bisection), which reproduces
  the table to < 1e-6 and tends to the normal quantile for large df.
* ``mean_ci(values, level)``: mean with a Student-t confidence interval. The replicate is
  the *trial* (one value per trial), not the record: records inside a trial are correlated
  (shared warm caches, the same idle baseline), trials are interleaved and independent.
* ``ratio_ci(a, b)``: mean(a)/mean(b) with Fieller's confidence interval for two independent
  samples (see its docstring for the choice and the degrees of freedom).
* ``paired_ratio_ci(pairs)``: the same ratio with Fieller's interval for paired samples
  (a_i, b_i), e.g. the xdp and tcp trial of one repeat, which share its idle baseline and the
  machine's drift: the covariance enters the interval, t has n-1 degrees of freedom.
* ``percentile(sorted_values, q)``: q in percent, linear interpolation between closest ranks
  (numpy's default "linear" method).
"""

from __future__ import annotations

import math
from statistics import NormalDist

# Two-sided critical values t_{1-(1-level)/2, df}, df = 1..30 (index df-1).
_T_TABLE = {
    0.90: (
        6.313752, 2.919986, 2.353363, 2.131847, 2.015048, 1.943180, 1.894579, 1.859548,
        1.833113, 1.812461, 1.795885, 1.782288, 1.770933, 1.761310, 1.753050, 1.745884,
        1.739607, 1.734064, 1.729133, 1.724718, 1.720743, 1.717144, 1.713872, 1.710882,
        1.708141, 1.705618, 1.703288, 1.701131, 1.699127, 1.697261,
    ),
    0.95: (
        12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
        2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
        2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
        2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
    ),
    0.99: (
        63.656741, 9.924843, 5.840909, 4.604095, 4.032143, 3.707428, 3.499483, 3.355387,
        3.249836, 3.169273, 3.105807, 3.054540, 3.012276, 2.976843, 2.946713, 2.920782,
        2.898231, 2.878440, 2.860935, 2.845340, 2.831360, 2.818756, 2.807336, 2.796940,
        2.787436, 2.778715, 2.770683, 2.763262, 2.756386, 2.749996,
    ),
}


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(ln_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def _t_quantile_numeric(p: float, df: float) -> float:
    """Upper quantile t with P(T <= t) = p, p in (0.5, 1), by bisection on t_cdf."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def t_quantile(level: float, df: float) -> float:
    """Two-sided critical value: P(|T| <= t) = level."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    table = _T_TABLE.get(round(level, 6))
    if table is not None and float(df).is_integer() and 1 <= df <= len(table):
        return table[int(df) - 1]
    if df > 1e7:
        return NormalDist().inv_cdf(1.0 - (1.0 - level) / 2.0)
    return _t_quantile_numeric(1.0 - (1.0 - level) / 2.0, df)


def _clean(values) -> list[float]:
    """Drop None/NaN; the statistics are over the trials that have a value."""
    out = []
    for v in values:
        if v is None:
            continue
        v = float(v)
        if not math.isnan(v):
            out.append(v)
    return out


def mean_ci(values, level: float = 0.95):
    """(mean, lo, hi, n) with a Student-t CI; n=1 -> (x, None, None, 1); n=0 -> all None, 0."""
    xs = _clean(values)
    n = len(xs)
    if n == 0:
        return (None, None, None, 0)
    mean = math.fsum(xs) / n
    if n == 1:
        return (mean, None, None, 1)
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    half = t_quantile(level, n - 1) * math.sqrt(var / n)
    return (mean, mean - half, mean + half, n)


def ratio_ci(a_values, b_values, level: float = 0.95):
    """(ratio, lo, hi) for R = mean(a) / mean(b), a and b independent samples.

    Fieller's theorem rather than the delta method: the ratio's sampling distribution is
    skewed when mean(b) is not many standard errors from zero, and Fieller's interval is the
    set of R for which mean(a) - R*mean(b) is not significantly different from zero:

        (ma - R mb)^2 <= t^2 (va + R^2 vb),   va = s_a^2/n_a, vb = s_b^2/n_b (no covariance)

    The t quantile uses Welch-Satterthwaite degrees of freedom of ma - R mb at R = ma/mb.
    Bounds are None when undefined: fewer than 2 values in either sample, or mean(b) not
    significantly different from zero (g = t^2 vb / mb^2 >= 1), in which case the Fieller
    set is unbounded. ratio is None when mean(b) == 0 or a sample is empty.
    """
    a, b = _clean(a_values), _clean(b_values)
    if not a or not b:
        return (None, None, None)
    ma, mb = math.fsum(a) / len(a), math.fsum(b) / len(b)
    if mb == 0:
        return (None, None, None)
    r = ma / mb
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return (r, None, None)
    va = math.fsum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = math.fsum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    v = va + r * r * vb
    if v == 0:
        return (r, r, r)
    df = v * v / (va * va / (na - 1) + (r * r * vb) ** 2 / (nb - 1))
    t = t_quantile(level, df)
    t2 = t * t
    denom = mb * mb - t2 * vb  # = mb^2 (1 - g)
    if denom <= 0:
        return (r, None, None)
    disc = t2 * (ma * ma * vb + mb * mb * va - t2 * va * vb)
    root = math.sqrt(max(disc, 0.0))  # disc >= 0 whenever denom > 0
    lo, hi = (ma * mb - root) / denom, (ma * mb + root) / denom
    return (r, min(lo, hi), max(lo, hi))


def paired_ratio_ci(pairs, level: float = 0.95):
    """(ratio, lo, hi) for R = mean(a) / mean(b) over paired samples [(a_i, b_i), ...].

    Fieller's interval for paired data: the set of R for which the mean of the paired
    differences a_i - R*b_i is not significantly different from zero,

        (ma - R mb)^2 <= t^2 (s_aa - 2 R s_ab + R^2 s_bb) / n,   t = t_quantile(level, n-1)

    with s_aa, s_bb, s_ab the sample (co)variances (n-1 denominator). Unlike ``ratio_ci``
    the covariance counts: a positive one (shared baseline, common drift) narrows the
    interval. Pairs with a None/NaN member are skipped. Same conventions as ``ratio_ci``:
    bounds None for fewer than 2 pairs or when the set is unbounded
    (mb^2 - t^2 s_bb/n <= 0); (r, r, r) when every (co)variance is zero; ratio None when
    there are no pairs or mean(b) == 0.
    """
    ps = []
    for a, b in pairs:
        if a is None or b is None:
            continue
        a, b = float(a), float(b)
        if not (math.isnan(a) or math.isnan(b)):
            ps.append((a, b))
    n = len(ps)
    if n == 0:
        return (None, None, None)
    ma = math.fsum(a for a, _ in ps) / n
    mb = math.fsum(b for _, b in ps) / n
    if mb == 0:
        return (None, None, None)
    r = ma / mb
    if n < 2:
        return (r, None, None)
    saa = math.fsum((a - ma) ** 2 for a, _ in ps) / (n - 1)
    sbb = math.fsum((b - mb) ** 2 for _, b in ps) / (n - 1)
    sab = math.fsum((a - ma) * (b - mb) for a, b in ps) / (n - 1)
    if saa == 0 and sbb == 0:
        return (r, r, r)
    q = t_quantile(level, n - 1) ** 2 / n
    # A R^2 - 2 h R + C <= 0 with A = mb^2 - q sbb, h = ma mb - q sab, C = ma^2 - q saa
    denom = mb * mb - q * sbb
    if denom <= 0:
        return (r, None, None)
    h = ma * mb - q * sab
    # h^2 - A C, expanded; >= 0 whenever denom > 0 (the quadratic is <= 0 at R = r)
    disc = q * (ma * ma * sbb - 2 * ma * mb * sab + mb * mb * saa - q * (saa * sbb - sab * sab))
    root = math.sqrt(max(disc, 0.0))
    return (r, (h - root) / denom, (h + root) / denom)


def percentile(sorted_values, q: float):
    """q-th percentile (q in 0..100) of already sorted values, linear interpolation; None if empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in [0, 100], got {q}")
    pos = (n - 1) * q / 100.0
    i = int(math.floor(pos))
    frac = pos - i
    if i + 1 >= n:
        return float(sorted_values[-1])
    return float(sorted_values[i]) + frac * (float(sorted_values[i + 1]) - float(sorted_values[i]))
