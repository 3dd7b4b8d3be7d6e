"""Bootstrap 95% intervals over volumes, and paired bootstrap comparisons.

Samples of one volume (its regions, its questions) are not independent, so the resampling
unit is the volume: each replicate draws as many volumes as there are, with replacement,
and takes every sample of each drawn volume (a line without a volume is its own unit). A
replicate's metric is computed from the drawn volumes' summed statistics, so ratios
(precision, recall, F1, CRG, a mean over samples) are recomputed, not averaged.

The interval is the 2.5th and 97.5th percentile of the replicates (percentile bootstrap).
A paired comparison draws the same volumes for both prediction files; its p-value is the
two-sided bootstrap p: twice the share of replicates whose difference has the opposite
sign to the observed one (at most 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_REPLICATES = 1000


class VolumeBootstrap:
    """Replicate weights over the volumes of a set of samples.

    Args:
        volumes: The volume of each sample (N,); "" or None makes a sample its own unit.
        replicates: Number of bootstrap replicates B.
        seed: Seed of the draw (the same seed gives the same intervals).

    Example::

        boot = VolumeBootstrap(["v1", "v1", "v2"], replicates=1000)
        boot.mean_ci([1.0, 0.0, 1.0])  # (low, high)
    """

    def __init__(
        self, volumes: Sequence[str | None], replicates: int = DEFAULT_REPLICATES, seed: int = 0
    ) -> None:
        keys = [v if v else f"\0{i}" for i, v in enumerate(volumes)]
        _, self.unit = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
        self.num_units = int(self.unit.max()) + 1 if len(keys) else 0
        self.replicates = replicates
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, max(self.num_units, 1), size=(replicates, self.num_units))
        # (B, U) how often each volume is drawn in each replicate
        self.weights = np.zeros((replicates, self.num_units))
        if self.num_units:
            np.add.at(self.weights, (np.arange(replicates)[:, None], draws), 1.0)

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per-replicate sums of per-sample ``values`` (N, ...) -> (B, ...)."""
        values = np.asarray(values, dtype=float)
        per_unit = np.zeros((self.num_units, *values.shape[1:]))
        np.add.at(per_unit, self.unit, values)
        return np.tensordot(self.weights, per_unit, axes=1)

    def ci(self, replicates: np.ndarray) -> list[float] | None:
        """[low, high] percentile interval of replicate values (NaN replicates dropped)."""
        vals = np.asarray(replicates, dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            return None
        low, high = np.percentile(vals, [2.5, 97.5])
        return [float(low), float(high)]

    def mean_replicates(self, values: Sequence[float]) -> np.ndarray:
        """(B,) replicate means of per-sample values; NaN values are left out."""
        v = np.asarray(values, dtype=float)
        ok = np.isfinite(v)
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums(np.where(ok, v, 0.0)) / self.sums(ok.astype(float))

    def mean_ci(self, values: Sequence[float]) -> list[float] | None:
        """95% interval of the mean of per-sample values (NaN = not scored)."""
        return self.ci(self.mean_replicates(values))

    def stat_replicates(
        self, counts: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """(B,) replicate values of ``statistic`` applied to summed per-sample counts.

        Args:
            counts: (N, K) per-sample counts (e.g. tp, fp, fn).
            statistic: maps summed counts (B, K) to (B,) values.
        """
        return statistic(self.sums(counts))


def paired_difference(
    boot: VolumeBootstrap, replicates_a: np.ndarray, replicates_b: np.ndarray, observed: float
) -> dict[str, float | list[float] | None]:
    """Difference a - b with its 95% interval and two-sided bootstrap p-value.

    Args:
        boot: The bootstrap both replicate arrays were drawn with (same volumes).
        replicates_a: (B,) replicate values of system a.
        replicates_b: (B,) replicate values of system b.
        observed: a - b on the full set.
    """
    diff = np.asarray(replicates_a, float) - np.asarray(replicates_b, float)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return {"difference": observed, "ci95": None, "p_value": None}
    if observed > 0:
        p = 2 * float(np.mean(diff <= 0))
    elif observed < 0:
        p = 2 * float(np.mean(diff >= 0))
    else:
        p = 1.0
    return {"difference": observed, "ci95": boot.ci(diff), "p_value": min(1.0, p)}
