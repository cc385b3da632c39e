"""Paired statistics for two arms trained on the same K seeds (`python -m jaxtrain compare`).

Seed k of arm A and seed k of arm B form a pair; d_k = b_k - a_k. Reported per metric:
- each arm's mean and sample standard deviation (ddof=1) over the seeds;
- the mean difference with a confidence interval from the t distribution with K-1 degrees of
  freedom: mean(d) +- t_{(1+c)/2, K-1} * std(d) / sqrt(K);
- the two-sided paired t-test p-value;
- the two-sided exact sign-flip permutation p-value: the share of all 2^K sign patterns s with
  |sum(s * d)| >= |sum(d)|. It assumes only that each difference is symmetric around 0 under
  the null; its smallest possible value is 2 / 2^K (K >= 8 can reach p < 0.01).

Degenerate cases: when every difference is exactly 0, t is undefined (None) and both p-values
are 1; when all differences are equal but not 0, t is +-inf and the t-test p-value is 0.
"""

import dataclasses
import math

import numpy as np
import scipy.stats

MAX_SIGN_FLIP_PAIRS = 24  # 2^24 sign patterns, enumerated in chunks, take about a second
_CHUNK_BITS = 16


@dataclasses.dataclass(frozen=True)
class PairedStats:
    n: int  # pairs (seeds)
    mean_a: float
    std_a: float  # sample standard deviation over the seeds (ddof=1)
    mean_b: float
    std_b: float
    diff_mean: float  # mean of b - a
    diff_std: float
    ci_low: float  # confidence interval of the mean difference
    ci_high: float
    t: float | None  # None: undefined (every difference is 0)
    p_t: float  # paired t-test, two-sided
    p_sign_flip: float  # exact sign-flip permutation test, two-sided


def paired_stats(a, b, confidence: float = 0.95) -> PairedStats:
    """Statistics of the pairs (a_k, b_k); a and b are 1-D sequences of the same length >= 2."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(f"need two 1-D sequences of equal length >= 2, got {a.shape}, {b.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = b - a
    n = d.size
    mean, std = float(d.mean()), float(d.std(ddof=1))
    half = float(scipy.stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * std / math.sqrt(n)
    t, p_t = paired_t_test(d)
    return PairedStats(
        n=n,
        mean_a=float(a.mean()),
        std_a=float(a.std(ddof=1)),
        mean_b=float(b.mean()),
        std_b=float(b.std(ddof=1)),
        diff_mean=mean,
        diff_std=std,
        ci_low=mean - half,
        ci_high=mean + half,
        t=t,
        p_t=p_t,
        p_sign_flip=sign_flip_p_value(d),
    )


def paired_t_test(d) -> tuple[float | None, float]:
    """(t, two-sided p) of H0: mean(d) = 0, with K-1 degrees of freedom."""
    d = np.asarray(d, dtype=np.float64)
    n, mean, std = d.size, float(d.mean()), float(d.std(ddof=1))
    if not (math.isfinite(mean) and math.isfinite(std)):
        return math.nan, math.nan
    if std == 0.0:
        if mean == 0.0:
            return None, 1.0  # no difference at all: nothing to test
        return math.copysign(math.inf, mean), 0.0
    t = mean / (std / math.sqrt(n))
    return t, float(2.0 * scipy.stats.t.sf(abs(t), n - 1))


def sign_flip_p_value(d) -> float:
    """Exact two-sided sign-flip p-value over all 2^K sign patterns (ties count as extreme)."""
    d = np.asarray(d, dtype=np.float64)
    k = d.size
    if k > MAX_SIGN_FLIP_PAIRS:
        raise ValueError(f"the exact sign-flip test enumerates 2^K patterns; K={k} is over "
                         f"{MAX_SIGN_FLIP_PAIRS}")  # fmt: skip
    if not np.all(np.isfinite(d)):
        return math.nan
    observed = abs(float(d.sum()))
    # Sums of the same numbers in another order differ by rounding only; such ties must count.
    tol = 1e-10 * float(np.abs(d).sum())
    bits = np.arange(k, dtype=np.uint64)
    total, extreme, chunk = 2**k, 0, 2 ** min(k, _CHUNK_BITS)
    for start in range(0, total, chunk):
        patterns = np.arange(start, start + chunk, dtype=np.uint64)
        signs = 1.0 - 2.0 * ((patterns[:, None] >> bits) & np.uint64(1)).astype(np.float64)
        extreme += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    return extreme / total
