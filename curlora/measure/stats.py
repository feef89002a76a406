"""The statistics behind every "learned", "better" and ± the app shows — exact where it can be, stated where not.

- `wilson(k, n)`: the 95 % Wilson score interval of an accuracy k/n (good at small n and near 0 or 1, unlike
  k/n ± 1.96·SE, which at 64 rows claims ±12 points it cannot back).
- `binom_greater(k, n, p0)`: one-sided exact binomial test, P(X ≥ k) for X ~ Bin(n, p0): "does k/n beat a share
  p0 fixed in advance" (the majority-class share).
- `mcnemar_greater(b, c)`: one-sided exact McNemar test on paired rows: b rows only the first model gets right,
  c only the second; P(X ≥ b) for X ~ Bin(b + c, ½). The same eval rows scored twice: the right test against the
  base model or the head-only control, far sharper than comparing two intervals.
- `mean_ci(xs)`: mean and 95 % Student-t interval over seeds (n − 1 degrees of freedom; no interval from one seed).
- `paired_t(diffs)`: two-sided paired t-test over seeds, with Cohen's d_z as effect size.
- `holm(ps)`: Holm's step-down adjustment of a family of p values (controls the family-wise error rate).
- `tost_paired(diffs, margin)`: two one-sided paired t-tests: is |mean difference| < margin (equivalence)?
- `seeds_needed(mean, sd, margin)`: how many seeds a paired t-test (or TOST) would need at 80 % power, from the
  observed spread: what would decide an inconclusive comparison.
- `isotonic(ys, weights, increasing)`: the monotone least-squares fit (pool adjacent violators).
- `bootstrap(values_by_unit, statistic, ...)`: a percentile interval from resampling whole units (seeds), seeded.
- `spearman(xs, ys)`: Spearman's rank correlation (ties get their average rank).
- `spearman_within(xs, ys, groups)`: the same within groups (ranks taken and centred in each group, pooled), with a
  permutation p that shuffles ys within each group: does x track y beyond what the groups share?
- Bit strings: a cell's per-row correctness stored compactly in metrics.json (`to_bits` / `from_bits`).

Everything here is plain Python (no scipy): the t distribution through the regularised incomplete beta function.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054
ALPHA = 0.05
ROUNDING = 1e-12  # a spread below this share of the values' size is float rounding, not spread


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    if not n:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def _log_binom_pmf(i: int, n: int, p: float) -> float:
    if p <= 0:
        return 0.0 if i == 0 else -math.inf
    if p >= 1:
        return 0.0 if i == n else -math.inf
    return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)


def binom_greater(k: int, n: int, p0: float) -> float:
    """P(X ≥ k), X ~ Binomial(n, p0): the one-sided p-value of k successes in n against the share p0."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return min(1.0, sum(math.exp(_log_binom_pmf(i, n, p0)) for i in range(k, n + 1)))


def mcnemar_greater(b: int, c: int) -> float:
    """One-sided exact McNemar: p that the first model is no better than the second, from the discordant rows."""
    return binom_greater(b, b + c, 0.5) if b + c else 1.0


def mcnemar_two_sided(b: int, c: int) -> float:
    """Two-sided exact McNemar: twice the smaller one-sided p, at most 1."""
    return min(1.0, 2 * min(mcnemar_greater(b, c), mcnemar_greater(c, b)))


def discordant(first: list[bool], second: list[bool]) -> tuple[int, int]:
    """(rows only `first` gets right, rows only `second` gets right) over the same rows."""
    if len(first) != len(second):
        raise ValueError("paired rows: both models must be scored on the same rows")
    b = sum(1 for x, y in zip(first, second) if x and not y)
    c = sum(1 for x, y in zip(first, second) if y and not x)
    return b, c


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-14:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_sf2(t: float, df: int) -> float:
    """Two-sided p-value of Student's t with df degrees of freedom: P(|T| ≥ |t|)."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided critical value: P(|T| ≤ q) = level (bisection on t_sf2)."""
    lo, hi = 0.0, 1000.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_sf2(mid, df) > 1 - level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def summary(xs: list[float | None]) -> dict:
    """{"mean", "ci95": [lo, hi] | None, "n", "sd"} over the values given (None entries are left out). One value
    has no interval: it is reported with n = 1 so nobody reads it as settled."""
    vals = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    n = len(vals)
    if not n:
        return {"mean": None, "ci95": None, "n": 0, "sd": None}
    mean = sum(vals) / n
    if n == 1:
        return {"mean": mean, "ci95": None, "n": 1, "sd": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    if sd <= ROUNDING * max(1.0, max(abs(v) for v in vals)):
        sd = 0.0  # values equal but for float rounding ((4 + 0.3) - (9 + 0.3) is not quite -5): no spread, not p ~ 1e-32
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n, "sd": sd}


def paired_t(diffs: list[float]) -> dict:
    """Two-sided paired t-test of mean(diffs) = 0: {"mean", "ci95", "n", "p_value", "effect_size" (Cohen's d_z)}.
    Differences with no spread (every seed the same) have nothing to test: p_value None, never 0."""
    s = summary(diffs)
    out = {**s, "p_value": None, "effect_size": None}
    if s["n"] < 2 or s["sd"] == 0:
        return out
    t = s["mean"] / (s["sd"] / math.sqrt(s["n"]))
    out.update(p_value=t_sf2(t, s["n"] - 1), effect_size=s["mean"] / s["sd"])
    return out


def t_greater(t: float, df: int) -> float:
    """One-sided p-value P(T ≥ t) of Student's t with df degrees of freedom."""
    half = t_sf2(t, df) / 2
    return half if t > 0 else 1 - half


def holm(ps: list[float | None]) -> list[float | None]:
    """Holm's adjusted p values of a family, in the order given (None entries are no test and stay None): the
    k-th smallest of m is multiplied by m − k + 1, then made monotone and capped at 1."""
    order = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    m, out, running = len(order), [None] * len(ps), 0.0
    for k, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


def tost_paired(diffs: list[float], margin: float) -> float | None:
    """p of the two one-sided tests that the mean paired difference lies within ±margin (equivalence when
    < 0.05); None with fewer than 2 differences or none of them different (no spread to test)."""
    s = summary(diffs)
    if s["n"] < 2 or not s["sd"]:
        return None
    se = s["sd"] / math.sqrt(s["n"])
    return max(t_greater((s["mean"] + margin) / se, s["n"] - 1),  # H0: mean ≤ −margin
               t_greater((margin - s["mean"]) / se, s["n"] - 1))  # H0: mean ≥ +margin


def seeds_needed(mean: float, sd: float, margin: float, power: float = 0.8, most: int = 1000) -> int | None:
    """The fewest seeds (paired runs) at which, if the observed mean difference and spread held, a two-sided
    paired t-test at 0.05 would find the difference, or TOST at 0.05 would find equivalence within ±margin,
    with probability `power` (the noncentral t taken as shifted central t). None without spread or when neither
    would decide below `most`."""
    if not sd or not sd > 0:
        return None
    for n in range(2, most + 1):
        df, se = n - 1, sd / math.sqrt(n)
        beta_q = t_quantile(df, 2 * power - 1)  # one-sided `power` quantile of t
        if abs(mean) / se >= t_quantile(df, 1 - ALPHA) + beta_q:
            return n
        if abs(mean) < margin and (margin - abs(mean)) / se >= t_quantile(df, 1 - 2 * ALPHA) + beta_q:
            return n
    return None


def isotonic(ys: list[float], weights: list[float] | None = None, increasing: bool = True) -> list[float]:
    """The weighted least-squares monotone fit of ys in the order given (pool adjacent violators)."""
    if not increasing:
        return [-v for v in isotonic([-y for y in ys], weights, True)]
    blocks: list[list[float]] = []  # [mean, weight, count]
    for y, w in zip(ys, weights or [1.0] * len(ys)):
        blocks.append([y, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, w1, c1), (m2, w2, c2) = blocks[-2], blocks.pop()
            blocks[-1] = [(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2]
    return [m for m, _, c in blocks for _ in range(c)]


def bootstrap(units: list, statistic, draws: int = 2000, seed: int = 0, level: float = 0.95) -> list | None:
    """Percentile interval of statistic(sample) over samples of `units` drawn with replacement (seeded, so a
    study gives the same interval every time); draws where the statistic is None are left out. None with fewer
    than 2 units or too few usable draws."""
    return bootstrap_many(units, lambda sample: {"x": statistic(sample)}, draws, seed, level).get("x")


def bootstrap_many(units: list, statistics, draws: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """`bootstrap` for several statistics from the same draws: statistics(sample) -> {name: value | None};
    returns {name: [lo, hi] | None}."""
    import random

    if len(units) < 2:
        return {}
    rng, values = random.Random(seed), {}
    for _ in range(draws):
        for name, v in statistics([units[rng.randrange(len(units))] for _ in units]).items():
            values.setdefault(name, [])
            if v is not None:
                values[name].append(v)
    lo, hi = (1 - level) / 2, (1 + level) / 2
    out = {}
    for name, vs in values.items():
        vs.sort()
        out[name] = None if len(vs) < draws // 2 else [vs[int(lo * (len(vs) - 1))], vs[int(round(hi * (len(vs) - 1)))]]
    return out


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation of paired values (Pearson's on their ranks, ties averaged); None with fewer
    than 3 pairs or when either side has no spread."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if not sxx or not syy else sxy / math.sqrt(sxx * syy)


def spearman_p(rho: float | None, n: int) -> float | None:
    """Two-sided p of Spearman's ρ = 0 over n pairs, by the t approximation t = ρ √((n − 2) / (1 − ρ²)) with n − 2
    degrees of freedom (good from about 10 pairs; ties make it approximate). 0 for |ρ| = 1; None without ρ or with
    fewer than 4 pairs."""
    if rho is None or n < 4:
        return None
    if abs(rho) >= 1.0:
        return 0.0
    return t_sf2(rho * math.sqrt((n - 2) / (1 - rho * rho)), n - 2)


def spearman_within(xs: list[float], ys: list[float], groups: list, draws: int = 1999,
                    seed: int = 0) -> tuple[float | None, float | None, int]:
    """(ρ, p, groups used): Spearman's correlation within groups — each group's ranks taken and centred on its own,
    then Pearson's over every pair pooled — with a two-sided permutation p that shuffles ys within each group (seeded:
    a study gives the same p every time; (1 + as extreme) / (1 + draws), so never below 1 / (1 + draws)). A group
    of one pair carries no within-group information and is left out. (None, None, k) with fewer than 4 pairs in
    groups of two or more, or no spread within them."""
    import random

    by: dict = {}
    for x, y, g in zip(xs, ys, groups):
        by.setdefault(g, []).append((x, y))
    cx, cy = [], []
    for pairs in by.values():
        if len(pairs) < 2:
            continue
        rx, ry = _ranks([x for x, _ in pairs]), _ranks([y for _, y in pairs])
        mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
        cx.append([r - mx for r in rx])
        cy.append([r - my for r in ry])
    used = len(cx)
    sxx = sum(a * a for g in cx for a in g)
    syy = sum(b * b for g in cy for b in g)
    if sum(len(g) for g in cx) < 4 or not sxx or not syy:
        return None, None, used
    scale = math.sqrt(sxx * syy)

    def rho_of(ys_by_group) -> float:
        return sum(a * b for gx, gy in zip(cx, ys_by_group) for a, b in zip(gx, gy)) / scale

    rho = rho_of(cy)
    rng, extreme = random.Random(seed), 0
    shuffled = [list(g) for g in cy]
    for _ in range(draws):
        for g in shuffled:
            rng.shuffle(g)
        extreme += abs(rho_of(shuffled)) >= abs(rho) - ROUNDING
    return rho, (1 + extreme) / (1 + draws), used


def overlap(a: list[float] | None, b: list[float] | None) -> bool | None:
    """Whether two intervals overlap (None when either is missing)."""
    if not a or not b:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def to_bits(correct: list[bool]) -> str:
    """Per-row correctness as hex, 4 rows a digit, first row in the highest bit of the first digit."""
    digits = []
    for i in range(0, len(correct), 4):
        chunk = correct[i:i + 4]
        v = 0
        for j, c in enumerate(chunk):
            v |= int(bool(c)) << (3 - j)
        digits.append(format(v, "x"))
    return "".join(digits)


def from_bits(bits: str, n: int) -> list[bool]:
    out = []
    for d in bits:
        v = int(d, 16)
        out += [bool(v >> (3 - j) & 1) for j in range(4)]
    return out[:n]
