"""Dependence estimates from a warm-up: the AR/ARMA fit, its residuals, the long-run variance.

Seeded series with known dependence: a stationary AR(1) of correlation ``rho`` (the
generator's own :func:`traffic.ar1`), an AR(2), a level that wanders under noise (an
ARMA(1, 1) in disguise) and independent draws. Tolerances are a few standard errors of
the estimate at the series length (the lag-1 autocorrelation of 5,000 values has an SE of
``sqrt((1 - rho^2) / n)`` ~ 0.013); the seeds are fixed, so a pass is a pass every time.
"""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors import dependence
from driftline.detectors.dependence import BATCH_SIZES, MAX_THETA, ARFit, BatchMeans
from driftline.detectors.scores import NormalScores, ScoreChain, mean_shape
from driftline.streams.offline.traffic import ar1
from scipy.signal import lfilter


def _lag1(x: np.ndarray) -> float:
    x = x - x.mean()
    return float(x[:-1] @ x[1:] / (x @ x))


def _implied_lag1(fit: ARFit) -> float:
    """The lag-1 autocorrelation an order-1 fit (AR(1) or ARMA(1, 1)) implies."""
    (p,), t = fit.phi, fit.theta
    return (1 + p * t) * (p + t) / (1 + 2 * p * t + t * t)


# -- fit_ar ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_fit_ar_recovers_the_correlation_of_an_ar1(seed: int, rho: float) -> None:
    z = ar1(np.random.default_rng(seed), 5000, rho)
    fit = dependence.fit_ar(z, 5)
    assert fit.order == 1  # BIC does not buy AR(2..5) terms the process does not have
    assert abs(_implied_lag1(fit) - rho) < 0.03
    if fit.theta == 0.0:
        assert fit.phi[0] == pytest.approx(rho, abs=0.03)
    # The innovation share of an AR(1) is 1 - rho^2; the mean of n values is worth
    # n (1 - rho) / (1 + rho) independent ones.
    assert fit.innovation == pytest.approx(1 - rho * rho, rel=0.1)
    assert fit.n_eff == pytest.approx(5000 * (1 - rho) / (1 + rho), rel=0.12)
    assert 0.0 < fit.gain <= 1.0


@pytest.mark.parametrize("seed", range(5))
def test_fit_ar_picks_order_0_on_independent_noise(seed: int) -> None:
    z = np.random.default_rng(seed).standard_normal(5000)
    fit = dependence.fit_ar(z, 5)
    assert fit == ARFit((), 5000)
    assert (fit.order, fit.theta, fit.state_size, fit.gain, fit.n_eff) == (0, 0.0, 0, 1.0, 5000.0)


def test_fit_ar_recovers_an_ar2() -> None:
    e = np.random.default_rng(7).standard_normal(20_500)
    x = lfilter([1.0], [1.0, -0.5, -0.3], e)[500:]  # (the start-up transient cut off)
    fit = dependence.fit_ar(x, 5)
    assert fit.order == 2
    assert fit.theta == 0.0
    np.testing.assert_allclose(fit.phi, (0.5, 0.3), atol=0.02)
    assert fit.gain == pytest.approx(1 - sum(fit.phi))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_level_that_wanders_under_noise_is_fitted_as_an_arma11(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = ar1(rng, 5000, 0.98) + 1.5 * rng.standard_normal(5000)
    fit = dependence.fit_ar(x, 5)
    assert fit.order == 1
    # AR(1) + white noise is ARMA(1, 1) with the AR root of the level and a negative MA
    # term (about -0.87 at this signal-to-noise ratio).
    assert fit.phi[0] == pytest.approx(0.98, abs=0.015)
    assert -0.92 < fit.theta < -0.8
    assert abs(fit.theta) <= MAX_THETA
    assert 0.0 < fit.gain <= 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_negative_dependence_is_left_unfitted(seed: int) -> None:
    # An AR(1) of -0.5 has gain 1.5: its residuals would carry more of a level shift than
    # the values, so no such fit is used (negative dependence only makes alarms rarer).
    z = ar1(np.random.default_rng(seed), 5000, -0.5)
    assert dependence.fit_ar(z, 5) == ARFit((), 5000)
    assert dependence.lrv_factor(z) == 1.0


def test_fit_ar_declines_what_it_cannot_estimate() -> None:
    z = ar1(np.random.default_rng(0), 59, 0.9)
    assert dependence.fit_ar(z, 5).order == 0  # fewer than 10 values a parameter
    assert dependence.fit_ar(ar1(np.random.default_rng(0), 60, 0.9), 5).order >= 1
    assert dependence.fit_ar(ar1(np.random.default_rng(0), 5000, 0.9), 0).order == 0
    assert dependence.fit_ar(np.full(500, 3.0), 5) == ARFit((), 500)  # constant


# -- residuals -------------------------------------------------------------------------------
@pytest.mark.parametrize("rho", [0.6, 0.9])
def test_residuals_are_whitened(rho: float) -> None:
    z = ar1(np.random.default_rng(11), 5000, rho)
    fit = dependence.fit_ar(z, 5)
    e, _ = dependence.residuals(fit, z, np.zeros(fit.state_size))
    assert _lag1(z) == pytest.approx(rho, abs=0.03)
    assert abs(_lag1(e[20:])) < 0.03
    assert float(e[20:].var()) == pytest.approx(fit.innovation * float(z.var()), rel=0.05)


def test_arma_residuals_follow_the_recursion() -> None:
    fit = ARFit((0.9,), 100, 0.5, -0.6)
    z = np.random.default_rng(3).standard_normal(50)
    e, _ = dependence.residuals(fit, z, np.zeros(1))
    expect = np.zeros(50)
    prev_z = prev_e = 0.0
    for t in range(50):  # e_t = z_t - phi z_{t-1} - theta e_{t-1}
        expect[t] = z[t] - 0.9 * prev_z - (-0.6) * prev_e
        prev_z, prev_e = z[t], expect[t]
    np.testing.assert_allclose(e, expect, rtol=0, atol=1e-12)
    b, a = fit.filter()
    np.testing.assert_array_equal(b, [1.0, -0.9])
    np.testing.assert_array_equal(a, [1.0, -0.6])


@pytest.mark.parametrize("fit", [ARFit((0.5, 0.3), 1000, 0.7), ARFit((0.9,), 1000, 0.4, -0.6),
                                 ARFit((0.2, -0.1, 0.05, 0.1, 0.3), 1000, 0.8)])
def test_residuals_carry_their_filter_state_across_batches(fit: ARFit) -> None:
    z = np.random.default_rng(5).standard_normal(3000)
    whole, after = dependence.residuals(fit, z, np.zeros(fit.state_size))
    parts, zi = [], np.zeros(fit.state_size)
    for a, b in ((0, 1), (1, 7), (7, 500), (500, 501), (501, 2222), (2222, 3000)):
        e, zi = dependence.residuals(fit, z[a:b], zi)
        parts.append(e)
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-12)
    np.testing.assert_allclose(zi, after, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dependence.residual_state(fit, z), after, rtol=0, atol=1e-12)


def test_order_0_residuals_are_the_values() -> None:
    z = np.arange(5.0)
    e, zi = dependence.residuals(ARFit((), 5), z, np.zeros(0))
    assert e is z and zi.shape == (0,)


# -- long-run variance -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_lrv_factor_of_an_ar1(seed: int, rho: float) -> None:
    z = ar1(np.random.default_rng(100 + seed), 100_000, rho)
    truth = (1 + rho) / (1 - rho)
    raw = dependence.lrv_factor(z, shrink=0.0)
    shrunk = dependence.lrv_factor(z)
    assert 0.85 * truth < raw < 1.25 * truth
    assert 0.8 * truth < shrunk <= raw  # shrinking only ever lowers the estimate


@pytest.mark.parametrize("seed", range(5))
def test_lrv_factor_of_independent_values_is_about_1(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    assert 1.0 <= dependence.lrv_factor(rng.standard_normal(100_000)) < 1.15
    # 5,000 values fill only 10 batches of 500: over 300 seeds the factor's 99th
    # percentile is 1.30 and its maximum 1.36 (an AR(1) of 0.3 gives ~1.8).
    assert 1.0 <= dependence.lrv_factor(rng.standard_normal(5000)) < 1.4


def test_lrv_factor_needs_ten_batches() -> None:
    z = ar1(np.random.default_rng(0), 99, 0.9)  # 9 batches of the smallest size
    assert dependence.lrv_factor(z) == 1.0
    assert dependence.lrv_factor(np.zeros(0)) == 1.0
    assert dependence.lrv_factor(np.ones(1000)) == 1.0


def test_batch_means_match_lrv_factor_fed_in_any_batches() -> None:
    x = ar1(np.random.default_rng(4), 30_017, 0.6)
    whole = BatchMeans(BATCH_SIZES)
    whole.add(x)
    chunked = BatchMeans(BATCH_SIZES)
    rng = np.random.default_rng(9)
    cuts = np.sort(rng.choice(np.arange(1, x.shape[0]), 40, replace=False))
    for part in np.split(x, cuts):
        chunked.add(part)
    np.testing.assert_allclose(chunked.stats, whole.stats, rtol=1e-11)
    np.testing.assert_allclose(chunked.open, whole.open, rtol=1e-11)
    assert whole.stats[:, 0].tolist() == [30_017 // m for m in BATCH_SIZES]
    assert whole.open[:, 0].tolist() == [30_017 % m for m in BATCH_SIZES]
    assert whole.values == 30_010.0
    for shrink in (0.0, 1.0):
        assert whole.lrv(float(x.var()), shrink) == pytest.approx(
            dependence.lrv_factor(x, shrink), rel=1e-9)
    assert whole.lrv(0.0) == 1.0


def test_batch_means_merge_complete_batches_and_round_trip() -> None:
    x = np.random.default_rng(1).standard_normal(2345)
    a, b = BatchMeans((10, 100)), BatchMeans((10, 100))
    a.add(x[:1234])
    b.add(x[1234:])
    before = a.stats.copy()
    a.merge(b)
    np.testing.assert_array_equal(a.stats, before + b.stats)  # open batches are dropped
    assert a.stats[:, 0].tolist() == [123 + 111, 12 + 11]
    c = BatchMeans((10, 100))
    dumped = a.dump("h")
    c.load(dumped["h.stats"], dumped["h.open"])  # type: ignore[arg-type]
    np.testing.assert_array_equal(c.stats, a.stats)
    np.testing.assert_array_equal(c.open, a.open)
    d = BatchMeans((10, 100, 1000))
    d.load(dumped["h.stats"], dumped["h.open"])  # type: ignore[arg-type]
    assert not d.stats.any()  # other sizes: not taken


# -- rate dispersion (the plain estimate) ----------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_rate_dispersion_of_binomial_outcomes_is_about_0(seed: int) -> None:
    # Shrunk by one standard error: 89% of 300 seeds give exactly 0, the largest 0.048.
    events = (np.random.default_rng(seed).random(100_000) < 0.1).astype(np.float64)
    assert 0.0 <= dependence.rate_dispersion(events, 1000) < 0.05


@pytest.mark.parametrize("seed", range(3))
def test_rate_dispersion_of_block_rates_is_their_cv(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.gamma(1 / 0.3**2, 0.1 * 0.3**2, 200)  # rate per block of 1,000: CV 30%
    events = (rng.random(200_000) < np.repeat(p, 1000)).astype(np.float64)
    assert 0.2 < dependence.rate_dispersion(events, 1000) < 0.36
    assert dependence.rate_dispersion(events[:7000], 1000) == 0.0  # under 8 windows


# -- normal scores and the score chain ---------------------------------------------------------
def test_normal_scores_are_standard_on_the_reference() -> None:
    ref = np.random.default_rng(2).lognormal(5.0, 0.5, 2000)
    ns = NormalScores(ref)
    z = ns.loo_scores(ref)
    assert abs(float(z.mean())) < 1e-12
    assert float(z.std()) == pytest.approx(1.0, abs=1e-12)
    # Monotone in the value, and the same for any monotone transform of the reference.
    order = np.argsort(ref)
    assert (np.diff(z[order]) > 0).all()
    np.testing.assert_allclose(NormalScores(np.log(ref)).loo_scores(np.log(ref)), z, atol=1e-12)
    assert ns.median() == pytest.approx(float(np.median(ref)))


def test_normal_scores_give_ties_mid_ranks() -> None:
    ns = NormalScores(np.array([1.0, 2.0, 2.0, 2.0, 3.0]))
    assert ns.ties
    assert ns.positions(np.array([0.5, 1.0, 2.0, 2.5, 3.0, 9.0])).tolist() == [0, 1, 5, 8, 9, 10]
    # The three tied reference values share one score, that of their mid-rank.
    z = ns.loo_scores(np.array([2.0, 2.0, 2.0, 1.0, 3.0]))
    assert z[0] == z[1] == z[2] == ns.z[4]
    assert z[3] < z[0] < z[4]


@pytest.mark.parametrize("rho", [0.6, 0.9])
def test_score_chain_prewhitens_what_the_bank_scans(rho: float) -> None:
    rng = np.random.default_rng(21)
    ref = np.exp(5.0 + 0.5 * ar1(rng, 2000, rho))
    chain = ScoreChain(ref, [mean_shape(0.5)], 1e-6, 5, lrv=False)
    assert chain.ar.order == 1
    assert chain.resid is not None and chain.scanned is chain.resid
    assert chain.n_ref == 2000 - 20  # the filter's burn-in is left out
    later = np.exp(5.0 + 0.5 * ar1(rng, 5000, rho))
    scanned = chain.scan_values(later)
    assert _lag1(np.log(later)) == pytest.approx(rho, abs=0.04)
    assert abs(_lag1(scanned)) < 0.04
    # A level shift of d reference SDs shows in the residuals as d * gain / sqrt(innovation);
    # level_shift maps it back.
    assert chain.level_shift(chain.ar.gain / chain.ar.innovation**0.5) == pytest.approx(1.0)


def test_score_chain_without_dependence_scans_the_values() -> None:
    ref = np.random.default_rng(1).lognormal(5.0, 0.5, 2000)
    chain = ScoreChain(ref, [mean_shape(0.5)], 1e-6, 0, lrv=False)
    assert chain.resid is None and chain.ar.order == 0
    x = np.array([100.0, 200.0])
    assert chain.scan_values(x) is x
    assert chain.level_shift(0.7) == 0.7
