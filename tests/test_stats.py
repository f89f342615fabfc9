"""lib.experiments.stats against hand computations."""
import math

import pytest

from lib.experiments.stats import compare_paired, summarize, t_interval


def test_summary_is_mean_and_sample_std():
    s = summarize([1.0, 2.0, 4.0])
    # mean 7/3; squared deviations 16/9 + 1/9 + 25/9 = 42/9, over n - 1 = 2 -> 7/3
    assert s.n == 3
    assert s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(math.sqrt(7 / 3))
    assert summarize([5.0]).std == 0.0
    assert summarize([1.0, 2.0, 4.0]).format() == "+2.3 ± 1.5"


def test_t_interval_matches_the_table_value():
    # mean 3, std sqrt(2.5), t(0.975, 4) = 2.776445 (tables): half width 2.776445 * sqrt(0.5)
    low, high = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)
    assert (low, high) == (pytest.approx(3 - half, abs=1e-5), pytest.approx(3 + half, abs=1e-5))
    # 90 %: t(0.95, 4) = 2.131847
    low90, _ = t_interval([1.0, 2.0, 3.0, 4.0, 5.0], confidence=0.90)
    assert low90 == pytest.approx(3 - 2.131847 * math.sqrt(0.5), abs=1e-5)


def test_paired_comparison_uses_common_seeds_and_decides():
    cut = {0: 3.0, 1: 5.0, 2: 4.0}
    snip = {0: 1.0, 1: 2.0, 2: 2.0, 3: 9.0}            # seed 3 has no partner: left out
    c = compare_paired(cut, snip, "cut", "snip")
    # differences 2, 3, 2: mean 7/3, std sqrt(1/3); t(0.975, 2) = 4.302653
    half = 4.302653 * math.sqrt(1 / 3) / math.sqrt(3)
    assert c.seeds == (0, 1, 2) and c.n == 3
    assert c.mean == pytest.approx(7 / 3)
    assert c.std == pytest.approx(math.sqrt(1 / 3))
    assert c.low == pytest.approx(7 / 3 - half, abs=1e-5)
    assert c.high == pytest.approx(7 / 3 + half, abs=1e-5)
    assert c.decided and c.winner == "cut"
    assert c.verdict().endswith("decided, cut ahead")
    behind = compare_paired(snip, cut, "snip", "cut")
    assert behind.decided and behind.winner == "cut"
    assert behind.low == pytest.approx(-c.high)


def test_an_interval_containing_zero_is_not_decided():
    c = compare_paired({0: 1.0, 1: -1.0, 2: 2.0}, {0: 0.0, 1: 0.0, 2: 0.0}, "a", "b")
    assert c.low < 0 < c.high and not c.decided and c.winner is None
    assert c.verdict().endswith("not decided")
    tied = compare_paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}, "a", "b")   # identical: [0, 0]
    assert (tied.low, tied.high) == (0.0, 0.0) and not tied.decided
    constant = compare_paired({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0}, "a", "b")  # always +1
    assert constant.decided and constant.winner == "a"


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least 2 common seeds"):
        compare_paired({0: 1.0, 1: 2.0}, {1: 1.0, 2: 3.0}, "a", "b")
    with pytest.raises(ValueError, match="non-finite"):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError, match="no values"):
        summarize([])
    with pytest.raises(ValueError, match="at least 2 values"):
        t_interval([1.0])
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.0)
