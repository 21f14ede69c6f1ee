"""Vintage awareness: how much a new release revised a series' history."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.revisions import compare_histories

HISTORY = pd.Series({2010: 10.0, 2011: 10.0, 2012: 10.0, 2013: 10.0})


def test_identical_histories_are_not_a_revision() -> None:
    revision = compare_histories(HISTORY, HISTORY.copy())
    assert (revision.changed_years, revision.dropped_years, revision.material) == (0, 0, False)
    assert revision.year_of_max_change is None
    assert revision.describe() == "history unchanged over 4 years"


def test_a_small_change_is_reported_but_not_material() -> None:
    revised = HISTORY.copy()
    revised[2012] = 10.1  # 1 % of the level
    revision = compare_histories(HISTORY, revised, threshold=0.02)
    assert revision.changed_years == 1 and revision.year_of_max_change == 2012
    assert revision.max_change == pytest.approx(0.1)
    assert revision.max_relative_change == pytest.approx(0.01)
    assert not revision.material


def test_a_change_beyond_the_threshold_is_material() -> None:
    revised = HISTORY.copy()
    revised[2011] = 9.5  # 5 % of the level
    revision = compare_histories(HISTORY, revised, threshold=0.02)
    assert revision.material and revision.year_of_max_change == 2011
    assert revision.max_relative_change == pytest.approx(0.05)
    assert "5.0%" in revision.describe() and "2011" in revision.describe()


def test_new_years_alone_are_no_revision_but_dropped_years_are() -> None:
    longer = pd.concat([HISTORY, pd.Series({2014: 99.0})])
    assert not compare_histories(HISTORY, longer).material
    shorter = HISTORY.drop(2010)
    revision = compare_histories(HISTORY, shorter)
    assert revision.dropped_years == 1 and revision.material
    # A hole made in a new release shortens the modelled stretch: years dropped, none changed.
    assert revision.describe() == "history revised: none of 3 years changed; 1 years dropped (material)"
