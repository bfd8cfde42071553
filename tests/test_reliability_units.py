"""Pure pieces of the reliability work (no services): dead-letter bounds, the log-flood
filter, the lag gauge only for held partitions."""

from __future__ import annotations

import json
import logging

from stream.deadletter import KEY_MAX, dead_letter, dead_letter_key
from stream.message import Message, Outcome, Verdict
from stream.metrics import WorkerStats
from stream.settings import Settings
from stream.worker import Repeats


def test_dead_letters_are_bounded_by_the_setting_and_the_key_cap() -> None:
    m = Message(b"x" * 5000, b"k" * 5000, "claims", 0, 9, None
                ).judged(Verdict(Outcome.INVALID, "why"))
    d = json.loads(dead_letter(m, raw_max=Settings().deadletter_raw_bytes))
    assert d["raw"] == "x" * 5000 and not d["truncated"] and d["error"] == "why"
    d = json.loads(dead_letter(m, raw_max=256))
    assert d["raw"] == "x" * 256 and d["truncated"] and d["size"] == 5000
    assert dead_letter_key(m.key) == b"k" * KEY_MAX and dead_letter_key(None) is None


def test_repeats_lets_a_template_through_once_per_period_with_a_count() -> None:
    f = Repeats(every=10.0)

    def rec(msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, args, None)

    assert f.filter(rec("Unable connect to node with id %s", 1))
    assert not any(f.filter(rec("Unable connect to node with id %s", i)) for i in range(50))
    assert f.filter(rec("another template"))  # templates are counted apart
    key = ("aiokafka", "Unable connect to node with id %s")
    f.seen[key] = (f.seen[key][0] - 11, f.seen[key][1])  # 11 s later
    later = rec("Unable connect to node with id %s", 7)
    assert f.filter(later)
    assert later.getMessage() == "Unable connect to node with id 7 (50 similar suppressed)"


def test_prometheus_lag_lists_only_what_the_worker_reports(prom) -> None:
    stats = WorkerStats()
    stats.lag = {"claims:0": 3, "claims:2": 0}
    m = prom(stats.prometheus().decode())
    assert m['claimscope_consumer_lag{partition="0",topic="claims"}'] == 3
    assert m['claimscope_consumer_lag{partition="2",topic="claims"}'] == 0
    assert [k for k in m if k.startswith("claimscope_consumer_lag")] == [
        'claimscope_consumer_lag{partition="0",topic="claims"}',
        'claimscope_consumer_lag{partition="2",topic="claims"}']
