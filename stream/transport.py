"""Faust's aiokafka transport with a bounded fetch wait.

Faust hard-codes `fetch_max_wait_ms=1500` for its consumer, and Tansu holds every fetch
open for that long even when data arrives meanwhile (measured here: p50 delivery latency
413 ms at 1,500 ms, 143 ms at 500 ms, 13 ms at 50 ms). With Apache Kafka a fetch returns as
soon as data is there, so a short wait costs only a few more empty fetches per second when
idle. The only private name touched is aiokafka's `_fetch_max_wait_ms`, read once when the
consumer starts its fetcher.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_wait_ms", 1500)  # module doc
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class App(faust.App):
    """faust.App whose consumer waits at most `fetch_wait_ms` for a fetch."""

    def __init__(self, *args: Any, fetch_wait_ms: int = 50, **kwargs: Any) -> None:
        self.fetch_wait_ms = fetch_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
