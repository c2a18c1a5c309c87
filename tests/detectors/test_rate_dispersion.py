"""A rate's dispersion across windows (rate.Windows): counts, folding, merging, the estimate.

Independent outcomes at one rate (binomial window counts) must read as 0: anything more
raises the Bernoulli thresholds for nothing. Blocks whose rate varies (a gamma-distributed
rate per block of 1,000 outcomes, CV 30%, as ``traffic``'s ``refusal_blocks``) must read as
about their CV.
"""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors import state
from driftline.detectors.rate import CV_GRID, RateSignal, Windows


def binomial(seed: int, n: int, p: float) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(np.float64)


def blocks(seed: int, n: int, p: float, cv: float = 0.3, length: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = 1.0 / (cv * cv)
    rate = rng.gamma(shape, p / shape, n // length + 1)
    return (rng.random(n) < np.repeat(rate, length)[:n]).astype(np.float64)


def windows(events: np.ndarray, cuts: int = 0, seed: int = 0) -> Windows:
    w = Windows()
    if not cuts:
        w.add(events)
        return w
    at = np.sort(np.random.default_rng(seed).choice(np.arange(1, events.shape[0]), cuts,
                                                    replace=False))
    for part in np.split(events, at):
        w.add(part)
    return w


def test_windows_count_events_per_window_in_any_batches() -> None:
    e = binomial(1, 12_345, 0.1)
    whole = windows(e)
    assert whole.base == 100
    assert whole.counts.tolist() == e[:12_300].reshape(123, 100).sum(axis=1).tolist()
    assert whole.open.tolist() == [45.0, float(e[12_300:].sum())]
    parts = windows(e, cuts=200)
    assert parts.counts.tolist() == whole.counts.tolist()
    assert parts.open.tolist() == whole.open.tolist()


def test_windows_fold_beyond_their_maximum() -> None:
    e = binomial(2, 60_000, 0.1)
    w = windows(e)
    # 600 windows of 100 -> 300 of 200 -> 150 of 400 (at most 256 are kept).
    assert w.base == 400
    assert w.counts.shape == (150,)
    assert w.counts.tolist() == e.reshape(150, 400).sum(axis=1).tolist()


def test_windows_fold_the_same_in_any_batches() -> None:
    e = binomial(0, 25_800, 0.1)
    whole, parts = Windows(), Windows()
    whole.add(e)
    parts.add(e[:25_700])
    parts.add(e[25_700:])
    assert whole.counts.sum() == e.sum()
    assert (parts.base, parts.counts.tolist()) == (whole.base, whole.counts.tolist())


def test_windows_merge_at_the_coarser_base() -> None:
    a, b = windows(binomial(3, 60_000, 0.1)), windows(binomial(4, 20_050, 0.1))
    assert (a.base, b.base) == (400, 100)
    before = a.counts.copy()
    a.merge(b)  # b's 200 windows of 100 become 50 of 400 (its open one is dropped)
    assert a.base == 400
    assert a.counts.shape == (200,)
    assert a.counts[:150].tolist() == before.tolist()
    assert a.counts[150:].tolist() == b.counts.reshape(50, 4).sum(axis=1).tolist()


def test_windows_round_trip() -> None:
    w = windows(binomial(5, 33_333, 0.1))
    fields = state.decode(state.encode(w.dump("refw")))
    v = Windows()
    v.load(state.Reader(fields).sub("refw"))
    assert (v.base, v.counts.tolist(), v.open.tolist()) == (
        w.base, w.counts.tolist(), w.open.tolist())
    e = binomial(6, 5000, 0.1)
    w.add(e)
    v.add(e)
    assert v.counts.tolist() == w.counts.tolist() and v.open.tolist() == w.open.tolist()


@pytest.mark.parametrize("seed", range(20))
def test_binomial_counts_with_many_events_a_window_read_as_about_0(seed: int) -> None:
    # 50 expected events a window of 100 (and more at the coarser ones): over 200 seeds
    # 90% read exactly 0, none more than 0.08 (real overdispersion of CV 30%: ~0.25).
    assert windows(binomial(seed, 15_000, 0.5)).dispersion(0.5) <= 0.08


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [20_000, 50_000])
def test_block_rates_read_as_about_their_cv(seed: int, n: int) -> None:
    cv = windows(blocks(seed, n, 0.1)).dispersion(0.1)
    assert 0.16 <= cv <= 0.36
    assert cv == pytest.approx(round(cv / CV_GRID) * CV_GRID)  # on the grid


def test_too_few_windows_read_as_0() -> None:
    assert windows(blocks(0, 700, 0.1, cv=1.0, length=100)).dispersion(0.1) == 0.0


_FALSE_DISPERSION = pytest.mark.xfail(strict=True, reason=(
    "Windows.dispersion can still read 0.16-0.24 on independent outcomes when a window "
    "holds ~10 expected events: the MAD of 8-50 windows is noisy and the largest of several "
    "window lengths is kept, less one standard error. (Spreading the counts over their "
    "unit interval fixed the quantised MAD: seed 13 reads 0 now.) The Bernoulli thresholds "
    "then price a spread that is not there: slower detection, not false alarms"))


@pytest.mark.parametrize(("seed", "n", "p"), [
    (13, 15_000, 0.05), pytest.param(193, 15_000, 0.1, marks=_FALSE_DISPERSION),
    pytest.param(18, 50_000, 0.05, marks=_FALSE_DISPERSION)])
def test_binomial_counts_with_few_events_a_window_read_as_about_0(seed: int, n: int,
                                                                    p: float) -> None:
    assert windows(binomial(seed, n, p)).dispersion(p) <= 0.08


def test_dispersion_is_priced_into_the_rate_thresholds() -> None:
    e = blocks(1, 20_000, 0.1)
    priced = RateSignal("error_rate", 0.8e-6, 20_000, min_events=200, down=False)
    plain = RateSignal("error_rate", 0.8e-6, 20_000, min_events=200, down=False,
                       dispersion=False)
    assert priced.update(e, np.arange(20_000.0)) == []
    assert plain.update(e, np.arange(20_000.0)) == []
    assert priced.p0 == plain.p0 == float(e.mean())
    assert priced.cv >= 0.16 and plain.cv == 0.0
    assert priced.dets[0].h > 1.5 * plain.dets[0].h


def _false_alarm_stream() -> np.ndarray:
    """A 2,000-outcome reference at 10%, more of it, a busy session of 60 at 50% (an alarm
    of a reference too short to price sessions, over before the candidate sees it), then
    10% again."""
    rng = np.random.default_rng(4)
    p = np.concatenate([np.full(5000, 0.1), np.full(60, 0.5), np.full(5000, 0.1)])
    return (rng.random(p.shape[0]) < p).astype(np.float64)


def test_a_false_alarm_and_the_stretch_before_it_join_the_reference() -> None:
    e = _false_alarm_stream()
    sig = RateSignal("error_rate", 1e-6, 2000, min_events=200, down=False)
    alarms = sig.update(e, np.arange(e.shape[0], dtype=np.float64))
    assert [a.index for a in alarms] == [5033] and sig.suppressed == 0
    assert sig.phase == "monitoring" and not sig.relearning
    # Nothing seen is lost: the reference holds the warm-up, the stretch up to the alarm
    # and the candidate (which saw no change); the rest is the window being monitored.
    assert sig._n + sig._wn == e.shape[0]
    assert sig._events + sig._wev == int(e.sum())
    assert sig.p0 == sig._events / sig._n > float(e[:2000].mean())


def test_the_stretch_before_an_alarm_survives_a_checkpoint() -> None:
    e = _false_alarm_stream()
    ts = np.arange(e.shape[0], dtype=np.float64)
    whole = RateSignal("error_rate", 1e-6, 2000, min_events=200, down=False)
    whole.update(e, ts)
    cut = RateSignal("error_rate", 1e-6, 2000, min_events=200, down=False)
    first = cut.update(e[:5800], ts[:5800])
    assert first and cut.relearning  # the checkpoint falls inside the candidate
    back = RateSignal("error_rate", 1e-6, 2000, min_events=200, down=False)
    back.load(state.Reader(state.decode(state.encode(cut.dump("sig")))).sub("sig"))
    back.update(e[5800:], ts[5800:])
    assert (back._n, back._events, back.p0, [d.h for d in back.dets]) == (
        whole._n, whole._events, whole.p0, [d.h for d in whole.dets])
