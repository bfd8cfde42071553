"""The `up` feed's pacing (stream.dev.up.Pacer), on a simulated clock."""

from __future__ import annotations

from collections import Counter

from stream.dev.up import Pacer


def run(pace: Pacer, ticks: list[float]) -> Counter[int]:
    """Publish what is due at each tick; claims sent per whole second of the clock."""
    per_second: Counter[int] = Counter()
    for now in ticks:
        n = pace.due(now)
        pace.done(n)
        per_second[int(now)] += n
    return per_second


def test_a_steady_feed_sends_its_rate() -> None:
    sent = run(Pacer(600, start=0.0), [k * 0.02 for k in range(1, 501)])  # 10 s, 50 ticks/s
    assert all(590 <= sent[s] <= 610 for s in range(1, 10)), sent


def test_a_stalled_feed_does_not_burst_to_catch_up() -> None:
    """A 3 s stall (the generator or broker slow) is not paid back at twice the rate: the
    second after it carries at most a quarter second more than the rate."""
    ticks = [k * 0.02 for k in range(1, 100)] + [4.0 + k * 0.02 for k in range(0, 200)]
    sent = run(Pacer(600, start=0.0), ticks)
    assert sent[2] == sent[3] == 0
    assert max(sent.values()) <= 600 + 0.25 * 600 + 1, sent
    assert 590 <= sent[5] <= 610, sent  # and then back on its rate


def test_a_slow_tick_still_gets_what_is_due() -> None:
    pace = Pacer(100, start=0.0)
    assert pace.due(0.1) == 10 and pace.due(0.1) == 10  # due until reported done
    pace.done(10)
    assert pace.due(0.1) == 0 and pace.due(0.2) == 10
