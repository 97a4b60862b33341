"""Intervals and the paired test, against scipy on known counts."""

import numpy as np
import pytest
from scipy.stats import binomtest

from classify import stats


@pytest.mark.parametrize("k,n", [(49, 50), (50, 50), (0, 50), (1, 7), (92, 100), (412, 2600), (999_000, 1_000_000)])
def test_wilson_matches_scipy(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = stats.wilson(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


def test_wilson_edges_and_errors():
    assert stats.wilson(0, 0) == (0.0, 1.0)
    assert stats.accuracy_interval(None, 10) is None and stats.accuracy_interval(0.5, 0) is None
    assert stats.accuracy_interval(0.98, 50) == pytest.approx(list(stats.wilson(49, 50)))
    with pytest.raises(ValueError, match="k=11 must be between 0 and n=10"):
        stats.wilson(11, 10)


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (0, 5), (3, 9), (10, 10), (7, 30), (120, 95), (2000, 2100)])
def test_exact_mcnemar_matches_binomtest(b, c):
    expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    assert stats.mcnemar(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_discordant_counts_and_pairing():
    a = np.array([1, 1, 0, 0, 1, 0], bool)
    b = np.array([1, 0, 1, 0, 0, 0], bool)
    assert stats.discordant(a, b) == (2, 1)
    with pytest.raises(ValueError, match="different lengths"):
        stats.discordant(a, b[:3])
    paths = [f"img{i}.jpg" for i in range(6)]
    ra = {"n": 6, **stats.correctness(a.astype(int), np.ones(6, int), paths)}
    rb = {"n": 6, **stats.correctness(b.astype(int), np.ones(6, int), paths)}
    assert stats.paired_p(ra, rb) == pytest.approx(binomtest(1, 3, 0.5).pvalue)
    # The bits are in sorted-path order: the same predictions in another row order pair the same.
    order = np.random.default_rng(0).permutation(6)
    rb2 = {"n": 6, **stats.correctness(b[order].astype(int), np.ones(6, int), [paths[i] for i in order])}
    assert rb2 == rb
    other = {"n": 6, **stats.correctness(b.astype(int), np.ones(6, int), [p + "x" for p in paths])}
    assert stats.paired_p(ra, other) is None  # scored on other images: never paired
    assert stats.paired_p(ra, {"n": 6}) is None


def test_pack_roundtrip():
    bits = np.random.default_rng(1).random(100_003) < 0.7
    assert np.array_equal(stats.unpack(stats.pack(bits), len(bits)), bits)
    with pytest.raises(ValueError, match="hold"):
        stats.unpack(stats.pack(bits[:8]), 20)
