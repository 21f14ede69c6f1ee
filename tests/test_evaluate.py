"""Many candidates on one backtest: shared windows, robustness, short series, calibration."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from pipeline.backtest import (
    MAX_CALIBRATION_FACTOR,
    MIN_POINTS,
    NoCandidateError,
    SeriesTooShortError,
    Split,
    backtest,
    calibration_factors,
    evaluate_candidates,
    plan_windows,
)
from pipeline.errors import PermanentError
from pipeline.models.base import Forecaster
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster
from pipeline.models.calibrated import CalibratedForecaster
from pipeline.models.combination import CombinationForecaster
from pipeline.models.registry import default_candidates
from pipeline.selection import publishable


class Explodes(Forecaster):
    """Fails to fit whenever the training window is shorter than ``below``."""

    family: ClassVar[str] = "explodes"

    def __init__(self, below: int = 1000) -> None:
        self.below = below

    def _fit(self, y: np.ndarray) -> None:
        if y.size < self.below:
            raise RuntimeError(f"cannot fit {y.size} values")

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        mean = np.full(h, self.y_[-1])
        return mean, {lv: (mean - 1, mean + 1) for lv in levels}


def _walk(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.arange(2014 - n + 1, 2015), 50 + np.cumsum(rng.normal(0.5, 1.0, n))


def test_a_failing_candidate_is_dropped_with_its_reason_and_the_others_go_on() -> None:
    years, values = _walk(40)
    candidates = {"naive": NaiveForecaster(), "explodes": Explodes(below=30), "drift": DriftForecaster()}
    evaluation = evaluate_candidates(candidates, years, values, horizon=4, n_origins=3)
    assert set(evaluation.results) == {"naive", "drift"}
    # The earliest window trains on 28 values, so it fails there; the reason names the window.
    assert evaluation.failed == {"explodes": "RuntimeError: cannot fit 28 values (window 1975-2002)"}
    # The survivors' scores are exactly those of the one-model backtest on the same windows.
    alone = backtest(DriftForecaster, years, values, horizon=4, n_origins=3)
    assert evaluation.results["drift"].metrics == pytest.approx(alone.metrics)
    pd.testing.assert_frame_equal(evaluation.results["drift"].forecasts, alone.forecasts)


def test_every_candidate_failing_is_a_permanent_error() -> None:
    years, values = _walk(30)
    with pytest.raises(NoCandidateError, match="every candidate failed") as caught:
        evaluate_candidates({"explodes": Explodes()}, years, values)
    assert isinstance(caught.value, PermanentError)


def test_a_twelve_point_series_gets_a_reduced_plan_and_eleven_are_refused() -> None:
    years, values = _walk(12)
    plan = plan_windows(12, horizon=5, n_origins=5, min_train=10)
    assert plan.splits == (Split(7, 12),)
    assert any("reduced from 10 to 7" in note for note in plan.notes)
    assert any("1 of 5 backtest origins" in note for note in plan.notes)
    evaluation = evaluate_candidates(default_candidates(plan.min_train), years, values)
    assert evaluation.plan == plan
    assert {"naive", "drift", "ets", "theta"} <= set(evaluation.results)
    assert not evaluation.failed
    with pytest.raises(SeriesTooShortError, match=f"has 11 yearly values; at least {MIN_POINTS}"):
        evaluate_candidates({"naive": NaiveForecaster()}, years[1:], values[1:])
    assert issubclass(SeriesTooShortError, PermanentError)


def test_long_series_plan_is_the_plain_rolling_origin() -> None:
    plan = plan_windows(60, horizon=5, n_origins=3)
    assert plan.splits == (Split(45, 50), Split(50, 55), Split(55, 60)) and plan.notes == ()


def test_combination_is_scored_from_its_members_and_equals_fitting_it() -> None:
    years, values = _walk(45, seed=4)
    members = [NaiveForecaster(), DriftForecaster(), MeanForecaster()]
    candidates = {"naive": members[0], "combo": CombinationForecaster(members, "median"), "drift": members[1]}
    evaluation = evaluate_candidates(candidates, years, values, horizon=3, n_origins=4)
    direct = backtest(lambda: CombinationForecaster(members, "median"), years, values, horizon=3, n_origins=4)
    pd.testing.assert_frame_equal(evaluation.results["combo"].forecasts, direct.forecasts)
    # Independent answer: the median of naive, drift and mean is the middle one of the three.
    rows = evaluation.results["combo"].forecasts
    naive, drift = evaluation.results["naive"].forecasts, evaluation.results["drift"].forecasts
    mean_only = backtest(MeanForecaster, years, values, horizon=3, n_origins=4).forecasts
    stacked = np.stack([naive["mean"], drift["mean"], mean_only["mean"]])
    np.testing.assert_allclose(rows["mean"], np.sort(stacked, axis=0)[1])


def test_calibration_factor_is_the_conformal_order_statistic() -> None:
    # Nine points with half-widths 1 and errors 0.1 .. 0.9 (alternating sides): scores 0.1 .. 0.9.
    errors = np.arange(1, 10) / 10 * np.where(np.arange(9) % 2, 1, -1)
    frame = pd.DataFrame({"step": [1] * 9, "actual": 5 + errors, "mean": 5.0, "lo_80": 4.0, "hi_80": 6.0, "lo_95": 3.0, "hi_95": 7.0})
    factors = calibration_factors(frame, (80, 95), min_factor=0.0, borrow=False)
    # 80 %: rank ceil(10 * 0.8) = 8 -> 0.8; 95 %: scores / 2, rank ceil(9.5) = 10 > 9 -> the largest, 0.45.
    assert factors == {80: [pytest.approx(0.8)], 95: [pytest.approx(0.45)]}
    # Nine scores cannot support 95 %: it takes the 80 % factor on its own bands (0.8 of 2, not 0.45 of 2).
    assert calibration_factors(frame, (80, 95), min_factor=0.0) == {80: [pytest.approx(0.8)], 95: [pytest.approx(0.8)]}


def test_calibration_widens_bands_that_missed_but_never_narrows_by_default() -> None:
    # Half-widths 1 (80 %) and 2 (95 %); errors 0.5 .. 2.5 by 0.5 -> 80 % scores 0.5 .. 2.5.
    errors = np.array([0.5, -1.0, 1.5, -2.0, 2.5])
    frame = pd.DataFrame({"step": [1] * 5, "actual": 5 + errors, "mean": 5.0, "lo_80": 4.0, "hi_80": 6.0, "lo_95": 3.0, "hi_95": 7.0})
    factors = calibration_factors(frame, (80, 95), borrow=False)
    # 80 %: rank ceil(6 * 0.8) = 5 -> 2.5 (widened); 95 %: scores 0.25 .. 1.25, rank 6 > 5 -> 1.25:
    # 1.25 of the 95 % half-width 2 is 2.5, the 80 % band again.
    assert factors == {80: [pytest.approx(2.5)], 95: [pytest.approx(1.25)]}
    # By default 95 % borrows the 80 % factor: 2.5 of 2, a band twice as wide as the 80 % one.
    assert calibration_factors(frame, (80, 95)) == {80: [pytest.approx(2.5)], 95: [pytest.approx(2.5)]}
    # Bands three times too wide: the plain factor would narrow them (2.5 / 3); the default keeps 1.
    wide = frame.assign(lo_80=2.0, hi_80=8.0, lo_95=-1.0, hi_95=11.0)
    assert calibration_factors(wide, (80,))[80] == [1.0]
    assert calibration_factors(wide, (80,), min_factor=0.0)[80] == [pytest.approx(2.5 / 3)]


def _gaussian_backtest(errors: np.ndarray, sigma: float = 0.5) -> pd.DataFrame:
    """Backtest rows with a model's Gaussian bands of scale ``sigma`` (80 %: ±1.2816σ, 95 %: ±1.96σ) around 0."""
    z80, z95 = 1.2815516, 1.9599640
    n = errors.size
    return pd.DataFrame(
        {
            "step": np.arange(n) % 5 + 1,
            "actual": errors,
            "mean": 0.0,
            "lo_80": -z80 * sigma,
            "hi_80": z80 * sigma,
            "lo_95": -z95 * sigma,
            "hi_95": z95 * sigma,
        }
    )


def test_with_one_window_the_published_95_band_is_wider_than_the_80_band() -> None:
    # 15 points: one backtest window, 5 scores. The 80 % rank is the 5th (the largest), the 95 % rank
    # the 6th, past them: the 95 % factor used to be the largest 95 % score, which made the 95 % band
    # exactly the 80 % band (both as wide as the widest miss).
    rng = np.random.default_rng(1)
    years = np.arange(2000, 2015)
    values = np.r_[np.linspace(10, 12, 8), np.linspace(13, 20, 7)] + rng.normal(0, 0.05, 15)
    result = evaluate_candidates({"naive": NaiveForecaster()}, years, values, horizon=5, n_origins=5).results["naive"]
    assert len(result.forecasts) == 5
    published = publishable(result, floor=None).fit(values, years).predict(4)
    assert np.all(published.upper[95] - published.upper[80] > 0.1 * (published.upper[80] - published.mean))
    assert np.all(published.lower[80] - published.lower[95] > 0.1 * (published.mean - published.lower[80]))
    # On five scores directly: the 95 % band (factor x its half-width) is strictly wider than the 80 % one.
    frame = _gaussian_backtest(rng.normal(size=5))
    factors = calibration_factors(frame, (80, 95))
    assert factors[95][0] * frame["hi_95"][0] > factors[80][0] * frame["hi_80"][0]


@pytest.mark.parametrize("n", [5, 10])
def test_calibrated_95_bands_hold_at_least_90_percent_of_fresh_gaussian_errors(n: int) -> None:
    """Monte Carlo: N(0, 1) errors against a model whose Gaussian bands are half as wide (σ = 0.5).

    Independent answer: count fresh N(0, 1) errors inside ±factor·1.96·0.5. With n = 5 scores the
    old rule's 95 % band was the largest error seen, which holds a fresh one with probability
    5/6 = 0.83; with n = 10, 10/11 = 0.91.
    """
    rng = np.random.default_rng(20261206)
    reps, fresh = 600, 400
    covered = 0
    for _ in range(reps):
        frame = _gaussian_backtest(rng.normal(size=n))
        half = calibration_factors(frame, (80, 95))[95][0] * frame["hi_95"][0]
        covered += int(np.sum(np.abs(rng.normal(size=fresh)) <= half))
    coverage = covered / (reps * fresh)
    assert 0.90 <= coverage <= 0.98


def test_levels_whose_rank_fits_keep_the_plain_order_statistic() -> None:
    # Independent answer: the ceil((n + 1) * level / 100)-th smallest score, clipped to [1, 10].
    rng = np.random.default_rng(7)
    levels = (95, 50, 80, 90, 99)
    for n in (5, 8, 10, 15, 19, 25, 60):
        errors = rng.normal(size=n) * rng.choice([0.2, 1.0, 30.0])
        frame = _gaussian_backtest(errors).assign(lo_50=-0.3372, hi_50=0.3372, lo_90=-0.8224, hi_90=0.8224, lo_99=-1.2879, hi_99=1.2879)
        new = calibration_factors(frame, levels, min_points_per_step=100)
        old = calibration_factors(frame, levels, min_points_per_step=100, borrow=False)
        assert list(new) == list(levels)
        for level in levels:
            scores = np.sort(np.abs(errors) / frame[f"hi_{level}"].to_numpy())
            rank = int(np.ceil((n + 1) * level / 100))
            plain = float(np.clip(scores[min(rank, n) - 1], 1.0, MAX_CALIBRATION_FACTOR))
            assert old[level] == [pytest.approx(plain)]
            if rank <= n:
                assert new[level] == old[level]
            else:
                # Unsupported: at least today's factor, and at least the highest supported lower level's.
                below = [lv for lv in levels if lv < level and np.ceil((n + 1) * lv / 100) <= n]
                assert new[level][0] >= plain
                if below:
                    assert new[level][0] == pytest.approx(max(plain, new[max(below)][0]))
    # Per-step groups borrow within their own step: 5 steps of 5 points, each its own 80 % factor.
    frame = _gaussian_backtest(np.repeat([0.4, 0.8, 1.2, 1.6, 2.0], 5) * np.tile([1.0, -0.9, 0.8, -0.7, 0.6], 5))
    frame["step"] = np.repeat(np.arange(1, 6), 5)
    factors = calibration_factors(frame, (80, 95), min_points_per_step=5, min_factor=0.0)
    assert len(set(factors[80])) == 5
    assert factors[95] == [pytest.approx(f) for f in factors[80]]


def test_calibration_factors_by_step_when_each_step_has_enough_points() -> None:
    rows = []
    for step, spread in ((1, 1.0), (2, 3.0)):
        for k in range(1, 21):
            rows.append({"step": step, "actual": 10 + spread * k / 20, "mean": 10.0, "lo_80": 9.0, "hi_80": 11.0})
    factors = calibration_factors(pd.DataFrame(rows), (80,), min_points_per_step=20, min_factor=0.0)
    # rank ceil(21 * 0.8) = 17 -> the 17th of spread * k / 20
    assert factors[80] == [pytest.approx(17 / 20), pytest.approx(3 * 17 / 20)]
    pooled = calibration_factors(pd.DataFrame(rows), (80,), min_points_per_step=21)
    assert len(pooled[80]) == 1


def test_calibration_factor_is_capped_so_one_outlier_cannot_set_it() -> None:
    # 25 points with half-widths 1 (80 %) and 2 (95 %); one error of 5,000: the 95 % rank is the 25th, the outlier.
    errors = np.r_[np.linspace(-0.9, 0.9, 24), 5000.0]
    bands = {"mean": 5.0, "lo_80": 4.0, "hi_80": 6.0, "lo_95": 3.0, "hi_95": 7.0}
    frame = pd.DataFrame({"step": np.tile(np.arange(1, 6), 5), "actual": 5 + errors, **bands})
    assert calibration_factors(frame, (95,), max_factor=np.inf)[95] == [pytest.approx(2500.0)]
    assert calibration_factors(frame, (80, 95)) == {80: [1.0], 95: [MAX_CALIBRATION_FACTOR]}
    with pytest.raises(ValueError, match="below min_factor"):
        calibration_factors(frame, (95,), min_factor=2.0, max_factor=1.0)


def test_a_miss_by_a_zero_width_band_ranks_above_every_finite_score() -> None:
    # 25 pooled points: 22 inside bands of half-width 1 (80 %) and 2 (95 %), 3 missed by 5 from
    # zero-width bands (score +inf: no multiplier covers them). Dropping those three made the
    # 95 % rank the 22nd of 22 finite scores (0.44 -> factor 1); kept, it is the 25th of 25: inf,
    # capped at MAX_CALIBRATION_FACTOR.
    inside = np.r_[np.arange(1, 12), -np.arange(1, 12)] * 0.08
    frame = pd.DataFrame(
        {
            "step": np.tile(np.arange(1, 6), 5),
            "actual": np.r_[np.full(3, 5.0), inside],
            "mean": 0.0,
            "lo_80": np.r_[np.zeros(3), np.full(22, -1.0)],
            "hi_80": np.r_[np.zeros(3), np.full(22, 1.0)],
            "lo_95": np.r_[np.zeros(3), np.full(22, -2.0)],
            "hi_95": np.r_[np.zeros(3), np.full(22, 2.0)],
        }
    )
    assert calibration_factors(frame, (95,))[95] == [MAX_CALIBRATION_FACTOR]
    assert calibration_factors(frame, (95,), max_factor=np.inf)[95] == [np.inf]
    # 80 %: rank ceil(26 * 0.8) = 21 of 25 -> 0.88, the largest finite score (not the 19th of 22, 0.80).
    assert calibration_factors(frame, (80,), min_factor=0.0)[80] == [pytest.approx(0.88)]
    # An undefined score (no actual) and an inverted band are still left out, not ranked.
    extra = pd.DataFrame({"step": [1, 2], "actual": [np.nan, 1.0], "mean": 0.0, "lo_80": [-1.0, 1.0], "hi_80": [1.0, -1.0]})
    with_extra = pd.concat([frame[["step", "actual", "mean", "lo_80", "hi_80"]], extra], ignore_index=True)
    assert calibration_factors(with_extra, (80,), min_factor=0.0)[80] == [pytest.approx(0.88)]


def test_a_spike_in_the_backtest_does_not_blow_up_the_published_interval() -> None:
    """OWID's "Statistical Difference": +-0.004 noise and one spike of 478 inside a backtest test window."""
    rng = np.random.default_rng(3)
    years = np.arange(1951, 2011)
    values = np.round(rng.choice([-0.004, 0.0, 0.004], size=years.size), 3)
    values[years == 1991] = 477.925
    evaluation = evaluate_candidates({"naive": NaiveForecaster()}, years, values, horizon=5, n_origins=5)
    result = evaluation.results["naive"]
    # The window from 1990 forecast the spike with bands of +-0.01: a 95 % score of about 60,000.
    assert calibration_factors(result.forecasts, (95,), max_factor=np.inf)[95][0] > 1000
    assert max(result.calibration[95]) <= MAX_CALIBRATION_FACTOR
    own = NaiveForecaster().fit(values).predict(4)
    published = publishable(result, floor=None).fit(values, years).predict(4)
    # The final fit has the spike in its own residuals (+-170 at one year ahead): the published band
    # is at most ten of those half-widths, still centred and nested.
    width = published.upper[95] - published.mean
    assert np.all(width <= MAX_CALIBRATION_FACTOR * (own.upper[95] - own.mean) + 1e-9)
    np.testing.assert_allclose(published.mean - published.lower[95], width)
    assert np.all(published.lower[95] <= published.lower[80]) and np.all(published.upper[80] <= published.upper[95])


def test_calibrated_intervals_cover_random_walk_futures_at_the_nominal_rate() -> None:
    """Intervals made 2x too narrow are widened back: coverage on simulated futures is near nominal."""
    rng = np.random.default_rng(11)
    too_narrow = CalibratedForecaster(NaiveForecaster(), factors={80: [0.5], 95: [0.5]}, floor=None)
    covered = {80: [], 95: []}
    raw = []
    for _ in range(40):
        y = np.cumsum(rng.standard_normal(80))
        evaluation = evaluate_candidates({"narrow": too_narrow}, np.arange(80), y, horizon=4, n_origins=15, step=1)
        factors = evaluation.results["narrow"].calibration
        fixed = CalibratedForecaster(NaiveForecaster(), factors={lv: [0.5 * f for f in factors[lv]] for lv in factors}, floor=None)
        forecast = fixed.fit(y).predict(4)
        narrow = too_narrow.fit(y).predict(4)
        futures = y[-1] + np.cumsum(rng.standard_normal((200, 4)), axis=1)
        for level in covered:
            covered[level].append(np.mean((futures >= forecast.lower[level]) & (futures <= forecast.upper[level])))
        raw.append(np.mean((futures >= narrow.lower[95]) & (futures <= narrow.upper[95])))
    assert np.mean(raw) < 0.75  # the uncalibrated bands really are too narrow
    assert 0.74 <= np.mean(covered[80]) <= 0.88
    assert 0.90 <= np.mean(covered[95]) <= 0.98


def test_floor_clips_mean_and_bounds_at_zero() -> None:
    y = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.02])
    raw = DriftForecaster().fit(y).predict(5)
    assert raw.mean.min() < 0 and raw.lower[95].min() < 0
    floored = CalibratedForecaster(DriftForecaster()).fit(y).predict(5)
    np.testing.assert_array_equal(floored.mean, np.maximum(raw.mean, 0.0))
    np.testing.assert_array_equal(floored.lower[95], np.maximum(raw.lower[95], 0.0))
    np.testing.assert_array_equal(floored.upper[80], np.maximum(raw.upper[80], 0.0))
    assert floored.mean.min() == 0.0
