"""The accuracy benchmark's paired bootstrap of OWA gaps, on made-up per-series rows."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from unittest import mock

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"


@pytest.fixture(scope="module")
def accuracy() -> ModuleType:
    """The script as a module; the thread settings it exports at import stay out of later tests."""
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ):
        spec.loader.exec_module(module)
    return module


def rows(seed: int = 1, n: int = 40) -> pd.DataFrame:
    """co2cast, naive, one method worse on every series by 20 %, one identical to co2cast."""
    rng = np.random.default_rng(seed)
    smape, mase = rng.uniform(2, 20, n), rng.uniform(0.5, 4, n)
    naive = (rng.uniform(0.8, 1.4, n), rng.uniform(0.8, 1.4, n))
    methods = {
        "co2cast": (smape, mase),
        "sf_Naive": (smape * naive[0], mase * naive[1]),
        "sf_AutoETS": (smape * 1.2, mase * 1.2),
        "sf_AutoARIMA": (smape, mase),
    }
    out = []
    for method, (s, m) in methods.items():
        for i in range(n):
            out.append(
                {
                    "panel": "full",
                    "variable": "co2",
                    "entity": f"e{i}",
                    "method": method,
                    "smape": s[i],
                    "mase": m[i],
                    "msis_95": 1.0,
                    "hits_80": 3,
                    "hits_95": 4,
                    "points": 4,
                    "seconds": 1.0,
                    "cpu": 1.0,
                    "negative": False,
                }
            )
    return pd.DataFrame(out)


def test_point_values_match_the_summary_table(accuracy: ModuleType) -> None:
    data = rows()
    (value, low, high), gaps = accuracy.bootstrap(data)
    table = accuracy.summarise(data, data)
    # M4's OWA from the rows themselves: half co2cast's mean sMAPE over naive's plus the same for MASE.
    by = {method: frame for method, frame in data.groupby("method")}
    expected = 0.5 * (
        by["co2cast"]["smape"].mean() / by["sf_Naive"]["smape"].mean() + by["co2cast"]["mase"].mean() / by["sf_Naive"]["mase"].mean()
    )
    assert value == pytest.approx(expected, rel=1e-12) and table.loc["co2cast", "owa"] == pytest.approx(expected, rel=1e-12)
    assert low < value < high
    # AutoETS is 1.2 times co2cast on both errors of every series: its OWA is 1.2 times, the gap -0.2 times co2cast's.
    assert table.loc["sf_AutoETS", "owa"] == pytest.approx(1.2 * expected, rel=1e-12)
    assert gaps.loc["sf_AutoETS", "gap"] == pytest.approx(-0.2 * expected, rel=1e-12)
    assert set(gaps.index) == {"sf_AutoETS", "sf_AutoARIMA"}


def test_a_method_worse_on_every_series_is_beaten_on_every_draw(accuracy: ModuleType) -> None:
    (_, _, _), gaps = accuracy.bootstrap(rows())
    worse = gaps.loc["sf_AutoETS"]
    # 20 % worse on both errors of every series: OWA is exactly 1.2 times co2cast's on every draw.
    assert worse["share_below"] == 1.0
    assert worse["gap_95%"] < 0
    same = gaps.loc["sf_AutoARIMA"]
    assert (same["gap"], same["gap_5%"], same["gap_95%"], same["share_below"]) == (0.0, 0.0, 0.0, 0.0)


def test_draws_are_seeded_and_resample_series(accuracy: ModuleType) -> None:
    data = rows()
    first, second, other = accuracy.bootstrap(data, seed=3), accuracy.bootstrap(data, seed=3), accuracy.bootstrap(data, seed=4)
    assert first[0] == second[0]
    pd.testing.assert_frame_equal(first[1], second[1])
    assert first[0][1:] != other[0][1:]


def test_a_candidate_missing_on_some_series_is_compared_with_naive_on_the_series_it_has(accuracy: ModuleType) -> None:
    """A candidate of ours that failed on the hardest series has no row there (--candidates): its OWA compared its mean
    over the others with naive's over all, and a candidate no better than naive scored far below 1."""
    data = rows()
    naive = data[data["method"] == "sf_Naive"]
    hardest = naive.nlargest(5, "smape")["entity"]
    same_as_naive = naive[~naive["entity"].isin(hardest)].assign(method="c_like_naive")
    table = accuracy.summarise(data, pd.concat([data, same_as_naive], ignore_index=True))
    assert table.loc["c_like_naive", "series"] == len(naive) - 5
    assert table.loc["c_like_naive", "owa"] == pytest.approx(1.0, rel=1e-12)
    assert table.loc["sf_Naive", "owa"] == pytest.approx(1.0, rel=1e-12)
