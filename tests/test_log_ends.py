"""A log's end as the sink's rebase check needs it (broker.fetched_log_ends): Tansu answers
ListOffsets with the start of its last batch + 1, so a fully stored partition whose last batch
held several records looked shorter than what was stored from it, and its next owner stored
the log's next records at shifted offsets (found by the two-worker test, tests/test_scale_out.py:
reconcile saw offsets "lost"). A fetch's high watermark is right."""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from stocktake.broker import create_topics, fetched_log_ends


def test_a_log_end_is_checked_by_a_fetch(broker: Any) -> None:
    topic = f"ends-{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap, {topic: 2})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200})
    for i in range(5):   # one batch of five records, in partition 0
        producer.produce(topic, f"{{\"n\": {i}}}".encode(), partition=0)
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "t"})
    listed = {(topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
              for p in (0, 1)}
    consumer.close()
    assert listed[(topic, 1)] == 0
    assert listed[(topic, 0)] < 5, "Tansu lists the log's end right now: this check is no longer needed"
    assert fetched_log_ends(broker.bootstrap, listed) == {(topic, 0): 5, (topic, 1): 0}
