"""Analysis of a finished sweep Dataset: best learning rates, seed means, slopes.

The Dataset's layout is described in :mod:`specdyn.storage`, which also writes and
reads it; :func:`save` and :func:`load` are re-exported here for convenience.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import numpy as np
import xarray as xr

from specdyn.storage import CellStore, coordinate_values, load, save

__all__ = [
    "CellStore",
    "BestRateRule",
    "best_learning_rate",
    "coordinate_values",
    "learning_rate_scores",
    "log_log_slope",
    "load",
    "mean_over_seeds",
    "paired_comparison",
    "picks_rates_by",
    "problem_of",
    "save",
    "seed_statistics",
    "select",
]


def log_log_slope(x, y) -> float:
    """Least-squares slope of log y against log x over the finite positive points (NaN if < 2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def problem_of(ds: xr.Dataset, **grid_values):
    """The problem instance of one grid point of a sweep Dataset.

    Its class and fields come from ``attrs["config"]`` (the sweep's base problem);
    ``grid_values`` override fields, e.g. ``problem_of(ds, width=ds.width.values[2])``.
    As in sweep files, the string "none" means None and lists become tuples.
    """
    import importlib

    config = json.loads(ds.attrs.get("config", "{}"))
    if "problem" not in config or "fields" not in config:
        raise ValueError("the Dataset has no sweep config in attrs['config'] (was it made by specdyn.sweep?)")
    module, qualname = config["problem"].split(":")
    cls = getattr(importlib.import_module(module), qualname)

    def value(v):
        if isinstance(v, str) and v.lower() == "none":
            return None
        if isinstance(v, list):
            return tuple(value(x) for x in v)
        return v.item() if isinstance(v, np.generic) else v

    fields = {k: value(v) for k, v in {**config["fields"], **grid_values}.items()}
    return cls(**fields)


def converged_runs(ds: xr.Dataset) -> xr.DataArray:
    """True for runs that never diverged."""
    return ds["diverged_at"] < 0


def mean_over_seeds(ds: xr.Dataset, metric: str) -> xr.DataArray:
    """Mean of ``metric`` over seeds, leaving diverged runs out (never averaged in)."""
    return ds[metric].where(converged_runs(ds)).mean("seed")


def learning_rate_scores(ds: xr.Dataset, metric: str, *, mode: str = "min", rule: str = "final") -> xr.DataArray:
    """The score of every learning rate: the seed-mean of ``metric`` at the last recorded
    step (``rule="final"``) or at its best recorded step (``rule="peak"``: early
    stopping with an oracle, the fair choice when a finite data set is overfitted late
    in training); ``mode`` is "min" (losses) or "max" (accuracies). A learning rate at
    which any seed diverged scores NaN: a rate that sometimes diverges is never the
    best one. Axes of array-valued metrics are averaged. Dims: those of ``diverged_at``
    less ``seed``."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode=!r}")
    if rule not in ("final", "peak"):
        raise ValueError(f"rule must be 'final' or 'peak', got {rule=!r}")
    if metric not in ds:
        raise ValueError(f"no metric {metric!r} in the results; have {sorted(ds.data_vars)}")
    values = ds[metric]
    extra = [d for d in values.dims if d not in ds["diverged_at"].dims and d != "step"]
    if extra:
        values = values.mean(extra)
    mean = values.mean("seed")
    if rule == "final":
        score = mean.isel(step=-1)
    else:
        score = mean.min("step") if mode == "min" else mean.max("step")
    any_diverged = (~converged_runs(ds)).any("seed")
    return score.where(~any_diverged).drop_vars("step", errors="ignore")


def best_learning_rate(ds: xr.Dataset, metric: str, *, mode: str = "min", rule: str = "final") -> xr.Dataset:
    """Pick, per optimizer (and grid point), the learning rate with the best
    :func:`learning_rate_scores` (an lr where any seed diverged is never picked; if
    every lr diverged somewhere, the first is returned). Returns ``ds`` with the
    ``lr`` dimension selected away: its ``lr`` and ``learning_rate`` coordinates
    say which rate each optimizer got."""
    score = learning_rate_scores(ds, metric, mode=mode, rule=rule)
    fill = np.inf if mode == "min" else -np.inf
    best = score.fillna(fill).argmin("lr") if mode == "min" else score.fillna(fill).argmax("lr")
    return ds.isel(lr=best)


def select(ds: xr.Dataset, optimizer: str | None = None, learning_rate=None, *, rtol: float = 1e-6) -> xr.Dataset:
    """The runs of one optimizer and/or one learning rate, the rate given by value.

    ``lr`` is an index (optimizers have their own rate grids, so the rates are the 2-D
    coordinate ``learning_rate(optimizer, lr)``): ``ds.sel(lr=0.03)`` cannot work, and
    ``select(ds, "gd", 0.03)`` is ``ds.sel(optimizer="gd")`` at the ``lr`` whose rate
    equals 0.03 to relative tolerance ``rtol``, with the ``optimizer`` and ``lr`` dims
    selected away (their coordinates stay, as ``.sel`` leaves them). Without
    ``optimizer``, the rate must sit at the same ``lr`` index for every optimizer
    (one list of rates for all); without ``learning_rate``, the optimizer alone. With
    rates from a rule, ``learning_rate`` holds the rule's multipliers. An optimizer or a
    rate the Dataset lacks raises ValueError naming it and those it has.
    """
    names = [str(n) for n in ds["optimizer"].values]
    if optimizer is not None:
        if optimizer not in names:
            raise ValueError(f"no optimizer={optimizer!r} in the results; they hold {names}")
        ds = ds.sel(optimizer=optimizer)
    if learning_rate is None:
        return ds
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, int | float | np.number):
        raise ValueError(f"learning_rate must be a number, got {learning_rate=!r}")
    rates = np.atleast_2d(ds["learning_rate"].transpose(..., "lr").values)  # (optimizers, lr)
    hit = np.isclose(rates, float(learning_rate), rtol=rtol, atol=0.0).all(axis=0)
    if not hit.any():
        have = {n: [float(r) for r in row] for n, row in zip([optimizer] if optimizer else names, rates, strict=True)}
        where = f"optimizer {optimizer!r}" if optimizer else "every optimizer at one lr index"
        raise ValueError(
            f"no learning_rate={learning_rate!r} for {where} (to rtol={rtol:g}); the rates are {have}"
            + ("" if optimizer else "; pass optimizer= to pick one optimizer's grid")
        )
    return ds.isel(lr=int(np.flatnonzero(hit)[0]))


@dataclasses.dataclass(frozen=True)
class BestRateRule:
    """One rule for "the best learning rate", shared by a figure and the printed summary.

    ``scores(ds)`` gives every rate's score, a DataArray over the dims of
    ``diverged_at`` less ``seed`` (NaN: the rate is out, e.g. a seed diverged);
    ``mode`` says whether the lowest ("min") or highest ("max") score is best;
    ``tiebreak(ds)`` (optional, same dims, same ``mode``) decides between rates of
    equal score; ``description`` states the rule in words (printed on figures and in
    the summary); ``score_name`` names the score. A figure function that picks rates
    carries its rule as the attribute ``learning_rate_rule`` (see :func:`picks_rates_by`),
    which ``specdyn sweep`` then uses for its summary too.
    """

    description: str
    scores: Callable[[xr.Dataset], xr.DataArray]
    mode: str = "min"
    score_name: str = "score"
    tiebreak: Callable[[xr.Dataset], xr.DataArray] | None = None

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got mode={self.mode!r}")
        if not callable(self.scores):
            raise ValueError(f"scores must be a function of the Dataset, got scores={self.scores!r}")

    @classmethod
    def of_metric(cls, metric: str, *, mode: str = "min", rule: str = "final") -> BestRateRule:
        """The rule of :func:`best_learning_rate`: the seed-mean ``metric`` at the last
        recorded step (``rule="final"``) or at its best one (``"peak"``)."""
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode=!r}")
        if rule not in ("final", "peak"):
            raise ValueError(f"rule must be 'final' or 'peak', got {rule=!r}")
        best = "lowest" if mode == "min" else "highest"
        when = "at the last recorded step" if rule == "final" else "reached during training (peak)"
        return cls(
            description=f"best lr = the {best} seed-mean {metric} {when} among rates where no seed diverged",
            scores=lambda ds: learning_rate_scores(ds, metric, mode=mode, rule=rule),
            mode=mode,
            score_name=f"{rule} {metric}",
        )

    def best_index(self, ds: xr.Dataset) -> xr.DataArray:
        """Index along ``lr`` of the best rate per optimizer and grid point (lexicographic:
        score, then tiebreak; a NaN score is never chosen unless every rate is NaN: index 0)."""
        score = self.scores(ds).drop_vars("step", errors="ignore")
        if self.tiebreak is None:
            return best_lr_index(score, mode=self.mode)
        sign = 1.0 if self.mode == "min" else -1.0
        key = (sign * score).fillna(np.inf)
        tied = key == key.min("lr")
        second = (sign * self.tiebreak(ds).drop_vars("step", errors="ignore")).fillna(np.inf)
        best = second.where(tied, np.inf).argmin("lr")
        return best.where(np.isfinite(key.min("lr")), 0).astype(int)

    def best(self, ds: xr.Dataset) -> xr.Dataset:
        """``ds`` at each optimizer's best rate (the ``lr`` dimension selected away), as
        :func:`best_learning_rate`."""
        return ds.isel(lr=self.best_index(ds))


def picks_rates_by(rule: BestRateRule):
    """Mark a figure function as picking each optimizer's rate by ``rule`` (sets its
    ``learning_rate_rule`` attribute, read by ``specdyn sweep``'s summary)."""
    if not isinstance(rule, BestRateRule):
        raise ValueError(f"rule must be a BestRateRule, got {rule!r}")

    def mark(func):
        func.learning_rate_rule = rule
        return func

    return mark



# ------------------------------------------------------------ seed statistics

_INTERVALS = ("t", "bootstrap")
_PAIRED_TESTS = ("t", "wilcoxon")


def _check_confidence(confidence) -> None:
    if isinstance(confidence, bool) or not isinstance(confidence, int | float | np.floating) or not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence=!r}")


def _t_interval(values: np.ndarray, confidence: float):
    """Mean, Student-t interval and count over the last axis, NaNs left out."""
    from scipy import stats

    n = np.sum(np.isfinite(values), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(values, axis=-1) / np.where(n > 0, n, np.nan)
        dev = np.where(np.isfinite(values), values - mean[..., None], 0.0)
        sd = np.sqrt(np.sum(dev**2, axis=-1) / np.where(n > 1, n - 1, np.nan))
        half = stats.t.ppf((1 + confidence) / 2, np.where(n > 1, n - 1, np.nan)) * sd / np.sqrt(n)
    return mean, mean - half, mean + half, n


def _bootstrap_interval(values: np.ndarray, confidence: float, resamples: int, seed: int):
    """Percentile bootstrap of the mean over the last axis (``scipy.stats.bootstrap``).

    Rows with the same finite seeds (runs that did not diverge) are resampled in
    one vectorized call; rows with fewer than two finite values get NaN bounds.
    """
    import warnings

    from scipy import stats

    flat = values.reshape(-1, values.shape[-1])
    mean, _, _, n = _t_interval(flat, confidence)
    low, high = np.full(len(flat), np.nan), np.full(len(flat), np.nan)
    finite = np.isfinite(flat)
    patterns, which = np.unique(finite, axis=0, return_inverse=True)
    rng = np.random.default_rng(seed)
    for i, keep in enumerate(patterns):
        rows = np.flatnonzero(which.ravel() == i)
        if keep.sum() < 2:
            continue
        data = flat[np.ix_(rows, np.flatnonzero(keep))]
        batch = max(1, int(2e7 // data.size))  # bounds memory: rows x batch x seeds floats
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # degenerate rows (all seeds equal) give a zero-width interval
            res = stats.bootstrap(
                (data,), np.mean, axis=-1, vectorized=True, n_resamples=resamples, batch=batch,
                confidence_level=confidence, method="percentile", rng=rng,
            )
        low[rows], high[rows] = res.confidence_interval.low, res.confidence_interval.high
    shape = values.shape[:-1]
    return mean.reshape(shape), low.reshape(shape), high.reshape(shape), n.reshape(shape)


def seed_statistics(
    ds: xr.Dataset,
    metric: str,
    *,
    confidence: float = 0.95,
    method: str = "t",
    resamples: int = 2000,
    seed: int = 0,
) -> xr.Dataset:
    """Mean of ``metric`` over seeds with a confidence interval for it.

    Diverged runs are left out (as in :func:`mean_over_seeds`). ``method="t"``:
    the Student-t interval mean ± t_{(1+c)/2, n-1}·s/√n (``scipy.stats.t``; exact
    for normally distributed seeds); ``method="bootstrap"``: the percentile
    bootstrap of the mean (``scipy.stats.bootstrap``, ``resamples`` resamples drawn
    from ``numpy.random.default_rng(seed)``), which needs no normality but
    under-covers at few seeds (about 0.90 for a nominal 0.95 at 8 normal seeds).
    Returns a Dataset with ``mean``, ``low``, ``high`` (NaN where fewer than two
    runs are left) and ``n`` (runs used), with ``metric``'s dims less ``seed``;
    ``attrs`` state the method and confidence.
    """
    _check_confidence(confidence)
    if method not in _INTERVALS:
        raise ValueError(f"method must be one of {_INTERVALS}, got {method=!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"resamples must be an integer >= 100, got {resamples=!r}")
    if metric not in ds:
        raise ValueError(f"no metric {metric!r} in the results; have {sorted(ds.data_vars)}")
    da = ds[metric].where(converged_runs(ds))
    if "seed" not in da.dims:
        raise ValueError(f"metric {metric!r} has no seed dimension (dims {da.dims})")
    dims = [d for d in da.dims if d != "seed"]
    values = np.asarray(da.transpose(*dims, "seed").values, float)
    if method == "t":
        mean, low, high, n = _t_interval(values, confidence)
    else:
        mean, low, high, n = _bootstrap_interval(values, confidence, resamples, seed)
    coords = {k: v for k, v in da.coords.items() if "seed" not in v.dims}
    label = {"t": "Student-t interval", "bootstrap": "percentile bootstrap"}[method]
    return xr.Dataset(
        {name: (dims, arr) for name, arr in (("mean", mean), ("low", low), ("high", high), ("n", n))},
        coords=coords,
        attrs={"metric": metric, "method": method, "confidence": confidence,
               "description": f"{confidence:.0%} {label} of the mean over seeds (diverged runs left out)"},
    )


def _per_seed_scores(ds: xr.Dataset, metric: str, *, mode: str, rule: str) -> xr.DataArray:
    """Each seed's value of ``metric`` at the step :func:`learning_rate_scores` scores:
    the last one (``"final"``) or the one where the seed-mean is best (``"peak"``).
    NaN for diverged runs."""
    values = ds[metric]
    extra = [d for d in values.dims if d not in ds["diverged_at"].dims and d != "step"]
    if extra:
        values = values.mean(extra)
    values = values.where(converged_runs(ds))
    if rule == "final":
        return values.isel(step=-1).drop_vars("step", errors="ignore")
    mean = values.mean("seed")
    fill = np.inf if mode == "min" else -np.inf
    at = mean.fillna(fill).argmin("step") if mode == "min" else mean.fillna(fill).argmax("step")
    return values.isel(step=at).drop_vars("step", errors="ignore")


def paired_comparison(
    ds: xr.Dataset,
    metric: str,
    a: str,
    b: str,
    *,
    mode: str = "min",
    rule: str = "final",
    test: str = "t",
    confidence: float = 0.95,
    rate_rule: BestRateRule | None = None,
) -> xr.Dataset:
    """Compare optimizers ``a`` and ``b`` at their best rates, paired by seed.

    Each optimizer's rate is picked by :func:`best_learning_rate` (``mode``,
    ``rule``), or by ``rate_rule`` when given (a figure's :class:`BestRateRule`,
    so that the comparison is at the rates the figure shows); each seed's score is ``metric`` at the last recorded step
    (``rule="final"``) or at the step where that rate's seed-mean is best
    (``"peak"``). Seeds where either run diverged are left out. The difference is
    a − b (negative: ``a`` has the lower value). ``test="t"``: the paired t-test
    (``scipy.stats.ttest_rel``); ``test="wilcoxon"``: the Wilcoxon signed-rank test
    (``scipy.stats.wilcoxon``), which assumes no normality. Both two-sided. The
    interval is the Student-t interval of the mean difference in either case.

    Returns a Dataset over the grid dims with ``mean_difference``, ``low``,
    ``high``, ``p_value``, ``n`` (pairs used) and each optimizer's chosen rate
    (``learning_rate_a``, ``learning_rate_b``); ``attrs`` state the test.
    """
    from scipy import stats

    _check_confidence(confidence)
    if test not in _PAIRED_TESTS:
        raise ValueError(f"test must be one of {_PAIRED_TESTS}, got {test=!r}")
    names = [str(o) for o in ds["optimizer"].values]
    for arg, name in (("a", a), ("b", b)):
        if name not in names:
            raise ValueError(f"{arg}={name!r} is not an optimizer of the results; have {names}")
    if a == b:
        raise ValueError(f"a and b must be two different optimizers, got a=b={a!r}")
    best = best_learning_rate(ds, metric, mode=mode, rule=rule)  # validates metric, mode, rule
    if rate_rule is not None:
        if not isinstance(rate_rule, BestRateRule):
            raise ValueError(f"rate_rule must be a BestRateRule or None, got {rate_rule=!r}")
        best = rate_rule.best(ds)
    scores = _per_seed_scores(best, metric, mode=mode, rule=rule)
    # drop only the optimizer label: with no grid dims, each chosen learning_rate is a scalar coordinate
    sa, sb = (scores.sel(optimizer=name).drop_vars("optimizer") for name in (a, b))
    diff = (sa - sb).drop_vars(["lr", "learning_rate"], errors="ignore")
    dims = [d for d in diff.dims if d != "seed"]
    d = np.asarray(diff.transpose(*dims, "seed").values, float)
    mean, low, high, n = _t_interval(d, confidence)
    xa = np.where(np.isfinite(d), np.asarray(sa.transpose(*dims, "seed").values, float), np.nan)
    xb = np.where(np.isfinite(d), np.asarray(sb.transpose(*dims, "seed").values, float), np.nan)
    import warnings

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")  # fewer than two pairs, or all differences zero: NaN
        if test == "t":
            p = stats.ttest_rel(xa, xb, axis=-1, nan_policy="omit").pvalue
        else:
            p = stats.wilcoxon(xa, xb, axis=-1, nan_policy="omit").pvalue
    p = np.where(n >= 2, np.asarray(p, float), np.nan)
    coords = {k: v for k, v in diff.coords.items() if "seed" not in v.dims}
    label = {"t": "paired t-test (scipy.stats.ttest_rel)", "wilcoxon": "Wilcoxon signed-rank (scipy.stats.wilcoxon)"}
    return xr.Dataset(
        {
            "mean_difference": (dims, mean),
            "low": (dims, low),
            "high": (dims, high),
            "p_value": (dims, p),
            "n": (dims, n),
            "learning_rate_a": sa["learning_rate"].reset_coords(drop=True),
            "learning_rate_b": sb["learning_rate"].reset_coords(drop=True),
        },
        coords=coords,
        attrs={"metric": metric, "a": a, "b": b, "mode": mode, "rule": rule, "test": test,
               "confidence": confidence,
               "rate_rule": (rate_rule or BestRateRule.of_metric(metric, mode=mode, rule=rule)).description,
               "description": f"{a} - {b} at their best rates, paired by seed: two-sided {label[test]}, "
                              f"{confidence:.0%} t-interval of the mean difference"},
    )


# ---- shared helpers of the experiments: threshold crossings, the best-rate index, one run
__all__ += ["best_lr_index", "first_crossing", "first_step", "index_zero_except"]

def first_step(hit, steps, *, stay: bool = False, axis: int = -1) -> np.ndarray:
    """First entry of ``steps`` where the boolean ``hit`` holds along ``axis`` (NaN if never).

    With ``stay=True``: the first step from which ``hit`` holds up to the last entry (a
    crossing that later reverts does not count). ``steps`` has the length of that axis.
    """
    hit = np.moveaxis(np.asarray(hit, dtype=bool), axis, -1)
    steps = np.asarray(steps)
    if steps.shape != hit.shape[-1:]:
        raise ValueError(f"steps must have one entry per step, got {steps.shape=} for hit of shape {hit.shape}")
    if stay:
        hit = np.flip(np.logical_and.accumulate(np.flip(hit, -1), -1), -1)
    first = np.asarray(steps)[np.argmax(hit, axis=-1)].astype(float)
    return np.where(hit.any(axis=-1), first, np.nan)


def first_crossing(x, threshold, steps, *, stay: bool = False) -> np.ndarray:
    """First entry of ``steps`` where ``x`` (..., step) is > ``threshold`` (NaN if never);
    with ``stay=True``, the first step from which it stays > threshold to the last entry.
    NaN values (a diverged run) count as below the threshold."""
    return first_step(np.asarray(x, dtype=float) > threshold, steps, stay=stay)


def best_lr_index(score: xr.DataArray, *, mode: str = "min") -> xr.DataArray:
    """Index along ``lr`` of the best score (a NaN score, e.g. a rate where a seed diverged,
    is never chosen unless every rate is NaN: then index 0), as :func:`best_learning_rate`."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode=!r}")
    if mode == "min":
        return score.fillna(np.inf).argmin("lr")
    return score.fillna(-np.inf).argmax("lr")


def index_zero_except(da, keep=()):
    """``da`` (DataArray or Dataset) with every dim not in ``keep`` taken at index 0."""
    return da.isel({d: 0 for d in da.dims if d not in keep})
