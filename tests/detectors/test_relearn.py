"""What an alarm does to a signal: the reference stays in force while a candidate is learned.

The streams are seeded lognormal latencies (log-SD 0.5, so "+1 SD" multiplies by e^0.5) and
0/1 outcomes; the signals are built as the monitor builds them (a quarter of 0.8e-6 a
detector, warm-up 2,000, AR order up to 5, long-run variance on). A *blip* is five values
at +5 SD: one alarm, then nothing -- a benign alarm.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from driftline.detectors import state
from driftline.detectors.embedding import EmbeddingSignal
from driftline.detectors.rate import RateSignal
from driftline.detectors.scalar import ScalarSignal
from driftline.detectors.signal import Alarm

from tests.detectors import streams

FA = 0.8e-6
WARMUP = 2000
BLIP = 4000  # five values at +5 SD from here


def latency(seed: int, n: int, shifts: tuple[tuple[int, float], ...] = (),
            blip: bool = False) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal(n)
    if blip:
        z[BLIP: BLIP + 5] = 5.0
    for start, size in shifts:
        z[start:] += size
    return np.exp(5.0 + 0.5 * z)


def run(x: np.ndarray, relearn: bool = True, chunk: int = 0) -> tuple[ScalarSignal, list[Alarm]]:
    sig = ScalarSignal("latency", FA, WARMUP, relearn=relearn)
    ts = np.arange(x.shape[0], dtype=np.float64)
    if not chunk:
        return sig, sig.update(x, ts)
    out: list[Alarm] = []
    for a in range(0, x.shape[0], chunk):
        out += [dataclasses.replace(al, index=a + al.index)
                for al in sig.update(x[a: a + chunk], ts[a: a + chunk])]
    return sig, out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_persisting_shift_alarms_once_and_replaces_the_reference(seed: int) -> None:
    sig, alarms = run(latency(seed, 16_000, ((4000, 1.0),)))
    assert [a.detector for a in alarms] == ["cusum_mean_up"]
    assert 4000 <= alarms[0].index < 4080
    assert alarms[0].baseline == pytest.approx(np.exp(5.0), rel=0.03)
    # The change went on while the candidate was learned: its alarms were not published
    # again, and the candidate (all shifted values) became the reference.
    assert sig.suppressed > 0
    assert sig.phase == "monitoring" and not sig.relearning and not sig.persisted
    assert sig.chain is not None
    assert sig.chain.marginal.median() == pytest.approx(np.exp(5.5), rel=0.03)
    assert sig.reference.shape == (WARMUP,)
    assert float(np.log(sig.reference).mean()) == pytest.approx(5.5, abs=0.05)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_real_shift_soon_after_a_benign_alarm_is_detected(seed: int) -> None:
    x = latency(seed, 14_000, ((4600, 1.0),), blip=True)
    _, alarms = run(x)
    assert [a.detector for a in alarms] == ["cusum_spread_up", "cusum_mean_up"]
    assert BLIP <= alarms[0].index < BLIP + 5
    assert 4600 <= alarms[1].index < 4700
    # The shift is measured against the reference in force, not against a candidate.
    assert alarms[1].baseline == pytest.approx(np.exp(5.0), rel=0.03)
    # Without relearning the signal warms up afresh after the blip, and the shift, 600
    # values into that warm-up, becomes part of the new reference: never reported.
    _, blind = run(x, relearn=False)
    assert [(a.index, a.detector) for a in blind] == [(alarms[0].index, "cusum_spread_up")]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_benign_alarm_keeps_the_reference(seed: int) -> None:
    x = latency(seed, 9000, blip=True)
    sig = ScalarSignal("latency", FA, WARMUP)
    ts = np.arange(x.shape[0], dtype=np.float64)
    assert sig.update(x[:BLIP], ts[:BLIP]) == []
    chain, reference, state_before = sig.chain, sig.reference.copy(), sig.chain.state.copy()
    alarms = sig.update(x[BLIP: BLIP + 100], ts[BLIP: BLIP + 100])
    assert [a.detector for a in alarms] == ["cusum_spread_up"]
    assert sig.phase == "relearning"
    assert sig.update(x[BLIP + 100:], ts[BLIP + 100:]) == []
    # The candidate saw a quiet reference: it is dropped, the reference stays as it was.
    assert sig.phase == "monitoring" and sig.suppressed == 0
    assert sig.chain is chain
    np.testing.assert_array_equal(sig.reference, reference)
    np.testing.assert_array_equal(sig.chain.state, state_before)  # (order 0: no state)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_new_change_after_a_replacement_is_published(seed: int) -> None:
    sig, alarms = run(latency(seed, 20_000, ((4000, 1.0), (12_000, 1.0))))
    assert [a.detector for a in alarms] == ["cusum_mean_up", "cusum_mean_up"]
    assert 4000 <= alarms[0].index < 4080
    assert 12_000 <= alarms[1].index < 12_080
    assert alarms[0].baseline == pytest.approx(np.exp(5.0), rel=0.03)
    assert alarms[1].baseline == pytest.approx(np.exp(5.5), rel=0.03)  # the new reference
    assert sig.chain is not None
    assert sig.chain.marginal.median() == pytest.approx(np.exp(6.0), rel=0.03)


@pytest.mark.parametrize("chunk", [1, 97, 1000])
def test_relearning_is_the_same_in_any_batches(chunk: int) -> None:
    x = latency(2, 9000 if chunk == 1 else 14_000, ((4600, 1.0),), blip=True)
    whole, expect = run(x)
    parts, got = run(x, chunk=chunk)
    assert got == expect
    assert (parts.suppressed, parts.last_alarm, parts.phase) == (
        whole.suppressed, whole.last_alarm, whole.phase)


@pytest.mark.parametrize("cut", [4002, 4300, 4650, 6500])
def test_relearning_survives_a_snapshot(cut: int) -> None:
    # Cut before the blip's alarm, while the candidate is learned, inside the shift's
    # excursion, and after the candidate replaced the reference.
    x = latency(3, 12_000, ((4600, 1.0),), blip=True)
    ts = np.arange(x.shape[0], dtype=np.float64)
    _, expect = run(x)
    first = ScalarSignal("latency", FA, WARMUP)
    got = first.update(x[:cut], ts[:cut])
    fields = state.decode(state.encode(first.dump("latency")))
    second = ScalarSignal("latency", FA, WARMUP)
    second.load(state.Reader(fields).sub("latency"))
    assert (second.relearning, second.persisted, second.last_alarm, second.suppressed) == (
        first.relearning, first.persisted, first.last_alarm, first.suppressed)
    got += [dataclasses.replace(a, index=cut + a.index)
            for a in second.update(x[cut:], ts[cut:])]
    assert got == expect


# -- rates --------------------------------------------------------------------------------------
def outcomes(seed: int, p1: float, n: int = 40_000, start: int = 15_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < np.where(np.arange(n) >= start, p1, 0.05)).astype(np.float64)


@pytest.mark.parametrize("seed", range(6))
def test_a_persisting_large_rate_shift_alarms_once(seed: int) -> None:
    sig = RateSignal("refusal_rate", FA, WARMUP)
    alarms = sig.update(outcomes(seed, 0.2), np.arange(40_000.0))
    assert [a.detector for a in alarms] == ["bernoulli_cusum_up"]
    assert 15_000 <= alarms[0].index < 15_300
    assert sig.suppressed > 0
    assert sig.p0 == pytest.approx(0.2, abs=0.03)  # the candidate replaced the reference


@pytest.mark.parametrize("seed", [182, 196, 333, 391, 392])
def test_a_persisting_rate_shift_of_the_design_ratio_alarms_once(seed: int) -> None:
    """0.05 -> 0.10 is the change the up detector is designed for: its statistic can sit
    at zero for longer than its next excursion lasts although the rate never came back
    (these seeds were published twice by the quiet-gap rule). The outcomes since the
    alarm, taken together, say the change went on."""
    sig = RateSignal("refusal_rate", FA, WARMUP)
    alarms = sig.update(outcomes(seed, 0.1), np.arange(40_000.0))
    assert sig.cv == 0.0  # (no dispersion priced in: the relearn policy alone)
    assert len(alarms) == 1 and 15_000 <= alarms[0].index < 17_000, [a.index for a in alarms]
    assert sig.suppressed > 0 and sig.p0 == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("seed", range(4))
def test_a_rate_change_soon_after_a_burst_is_published(seed: int) -> None:
    """A burst of refusals (30 at 90%: a false alarm), 2,000 quiet outcomes, then a real
    change while the candidate is still learned: two alarms, the second after the change
    (the quiet stretch pulled the walk since the burst down by more than a threshold)."""
    sig = RateSignal("refusal_rate", FA, WARMUP)
    alarms = sig.update(_burst_then_change(seed), np.arange(40_000.0))
    assert [a.detector for a in alarms] == ["bernoulli_cusum_up"] * 2, [a.index for a in alarms]
    assert 15_000 <= alarms[0].index < 15_030 and 17_100 <= alarms[1].index < 19_000


def _burst_then_change(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.full(40_000, 0.05)
    p[15_000:15_030] = 0.9
    p[17_100:] = 0.1
    return (rng.random(40_000) < p).astype(np.float64)


@pytest.mark.parametrize(("seed", "cut"), [(0, 16_000), (0, 17_050), (0, 17_500), (196, 15_600)])
def test_the_walk_since_a_rate_alarm_survives_a_snapshot(seed: int, cut: int) -> None:
    # Cut while the candidate is learned: after the burst's alarm, just before the real
    # change (a walk lost there hides the change), inside it, and inside a persisting
    # design-ratio shift that must stay one alarm.
    x = _burst_then_change(seed) if seed == 0 else outcomes(seed, 0.1)
    ts = np.arange(x.shape[0], dtype=np.float64)
    whole = RateSignal("refusal_rate", FA, WARMUP)
    expect = whole.update(x, ts)
    first = RateSignal("refusal_rate", FA, WARMUP)
    got = first.update(x[:cut], ts[:cut])
    assert first.relearning and first.alarm_detector >= 0
    fields = state.decode(state.encode(first.dump("r")))
    second = RateSignal("refusal_rate", FA, WARMUP)
    second.load(state.Reader(fields).sub("r"))
    assert second.alarm_detector == first.alarm_detector
    got += [dataclasses.replace(a, index=cut + a.index)
            for a in second.update(x[cut:], ts[cut:])]
    assert got == expect and len(expect) == (2 if seed == 0 else 1)


def test_a_persisting_rate_shift_is_not_republished_by_a_stale_reference() -> None:
    sig = RateSignal("refusal_rate", FA, WARMUP)
    alarms = sig.update(outcomes(350, 0.1), np.arange(40_000.0))
    assert len(alarms) == 1, [a.index for a in alarms]


def _embedding_blip() -> np.ndarray:
    """Six topics; at 5,000 ten vectors of an unseen one (an alarm), then the six again."""
    x = streams.topics(0, 9000, 32)
    x[5000:5010] = streams.topics(50, 9000, 32, share=1.0, change=0)[5000:5010]
    return x


def _embedding() -> EmbeddingSignal:
    return EmbeddingSignal("embedding", 1e-6, 1000, 2000)


def test_a_false_embedding_alarm_lengthens_the_held_out_reference() -> None:
    x = _embedding_blip()
    sig = _embedding()
    first = sig.update(x[:5000], np.arange(5000.0))
    assert first == [] and sig.held.shape[0] == 2000
    centroids, tau = sig.centroids, sig.tau
    alarms = sig.update(x[5000:], np.arange(5000.0, 9000.0))
    assert [a.index for a in alarms] == [7] and sig.suppressed == 0
    assert not sig.relearning and sig.centroids is centroids  # the same reference
    # Its held-out distances now also hold the candidate's (1,000 + 2,000 after the alarm),
    # the blip's last three among them: the quantile was estimated again.
    assert sig.held.shape[0] == 2000 + 3000 and sig.tau != tau


def test_the_candidates_distances_survive_a_snapshot() -> None:
    x = _embedding_blip()
    ts = np.arange(9000.0)
    whole = _embedding()
    whole.update(x, ts)
    cut = _embedding()
    assert cut.update(x[:6000], ts[:6000]) and cut.relearning
    back = _embedding()
    back.load(state.Reader(state.decode(state.encode(cut.dump("e")))).sub("e"))
    back.update(x[6000:], ts[6000:])
    assert back.held.tolist() == whole.held.tolist()
    assert (back.tau, [d.h for d in back.dets]) == (whole.tau, [d.h for d in whole.dets])


def test_a_false_alarm_and_its_candidate_join_the_scalar_history() -> None:
    x = latency(1, 9000, blip=True)
    ts = np.arange(x.shape[0], dtype=np.float64)
    sig = ScalarSignal("latency", FA, WARMUP)
    assert sig.update(x[:BLIP], ts[:BLIP]) == []
    before = sig.history[0].values
    assert sig.update(x[BLIP:], ts[BLIP:])  # the blip: one alarm, then a quiet candidate
    assert sig.phase == "monitoring" and sig.suppressed == 0
    # The 2,000 values before the alarm (the history window being filled) and the
    # candidate's 2,000 joined the history in whole batches of 500.
    assert sig.history[0].values == before + 2000 + 2000
    assert sig.history[1].values == sig.history[0].values
