"""What the suite checks after each scenario, against the ledger the load kept.

Observed from the outside only: the readings table, the public alert topic, the
dead-letter topic, and the consumer groups' committed offsets against the topics' ends.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from tests.faults.load import Ledger
from vitals import contract, kafka
from vitals.settings import Settings

Key = tuple[str, str, int]  # patient, metric, event time ms


async def stored_counts(database_url: str, prefix: str) -> Counter[Key]:
    """How many rows the readings table holds per reading of this scenario."""
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT patient_id, metric, (extract(epoch FROM t) * 1000)::bigint AS ms, "
            "count(*) AS n FROM readings WHERE patient_id LIKE $1 GROUP BY 1, 2, 3",
            prefix + "%",
        )
    finally:
        await conn.close()
    return Counter({(r["patient_id"], r["metric"], r["ms"]): r["n"] for r in rows})


class TopicReader:
    """Every message of one topic from its beginning, without a consumer group."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = settings.topic(topic)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self.seen: list[dict] = []

    async def start(self) -> None:
        await self.consumer.start()
        tps = await kafka.partitions(self.consumer, self.topic)
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> list[dict]:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms)
        new = [orjson.loads(r.value) for part in batches.values() for r in part]
        self.seen += new
        return new


async def lag(settings: Settings) -> dict[str, int]:
    """Messages not yet committed, per consumer group (summed over its topics' partitions)."""
    consumed = [
        (settings.processor_group, contract.READINGS),
        (settings.sink_group, contract.READINGS),
        (settings.sink_group, contract.NEWS2_SCORES),
        (settings.alerts_group, contract.DETECTIONS),
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    ends = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await admin.start()
    await ends.start()
    try:
        out: dict[str, int] = {}
        for group, topic in consumed:
            name = settings.topic(topic)
            tps = await kafka.partitions(ends, name)
            end = await ends.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            total = 0
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                total += max(0, end[tp] - done)
            out[group] = out.get(group, 0) + total
        return out
    finally:
        await ends.stop()
        await admin.close()


@dataclass
class Verdict:
    """One scenario's figures; `problems` lists every broken promise (empty = kept)."""

    scenario: str
    load: str
    injection: str
    uploads_accepted: int = 0
    uploads_unknown: int = 0
    uploads_refused: int = 0
    readings_accepted: int = 0
    readings_stored: int = 0
    readings_duplicated: int = 0
    readings_lost: int = 0
    unknown_readings: int = 0
    unknown_landed: int = 0
    refused_stored: int = 0
    alerts_expected: int = 0
    alerts_published: int = 0
    alerts_duplicated: int = 0
    alerts_unexpected: int = 0
    dead_letters: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    recovery_s: float | None = None
    bound_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


async def settle(
    verdict: Verdict,
    ledger: Ledger,
    settings: Settings,
    alerts: TopicReader,
    *,
    since: float,
    bound_s: float,
) -> Verdict:
    """Wait (up to `bound_s` after `since`) until the pipeline caught up, then judge it.

    Caught up: every 202 reading stored, every expected alert published, every group's
    lag zero. Recovery time is measured from `since` (the end of the injection).
    """
    verdict.bound_s = bound_s
    accepted = ledger.readings("accepted")
    expected_alerts = ledger.expected_alerts()
    deadline = since + bound_s
    while True:
        stored = await stored_counts(settings.database_url, ledger.prefix)
        await alerts.poll()
        published = _published(alerts.seen, ledger.prefix)
        current = await lag(settings)
        done = (
            accepted <= stored.keys()
            and expected_alerts <= published.keys()
            and not any(current.values())
        )
        if done:
            verdict.recovery_s = round(max(0.0, time.monotonic() - since), 1)
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    # A duplicate could arrive just after "caught up": keep reading a little.
    for _ in range(4):
        await alerts.poll(timeout_ms=500)
    stored = await stored_counts(settings.database_url, ledger.prefix)
    published = _published(alerts.seen, ledger.prefix)
    _judge(verdict, ledger, stored, published, expected_alerts, current)
    return verdict


def _published(seen: list[dict], prefix: str) -> Counter[tuple[str, str]]:
    return Counter((a["alert_id"], a["state"]) for a in seen if a["patient_id"].startswith(prefix))


def _judge(
    v: Verdict,
    ledger: Ledger,
    stored: Counter[Key],
    published: Counter[tuple[str, str]],
    expected_alerts: set[tuple[str, str]],
    current_lag: dict[str, int],
) -> None:
    accepted = ledger.readings("accepted")
    unknown = ledger.readings("unknown") - accepted
    refused = ledger.rejected_items() | ledger.readings("refused")
    v.uploads_accepted = ledger.count("accepted")
    v.uploads_unknown = ledger.count("unknown")
    v.uploads_refused = ledger.count("refused")
    v.readings_accepted = len(accepted)
    v.readings_stored = sum(1 for k in accepted if stored[k] >= 1)
    v.readings_lost = len(accepted) - v.readings_stored
    v.readings_duplicated = sum(n - 1 for n in stored.values() if n > 1)
    v.unknown_readings = len(unknown)
    v.unknown_landed = sum(1 for k in unknown if stored[k] >= 1)
    v.refused_stored = sum(1 for k in refused if stored[k] >= 1)
    strangers = set(stored) - accepted - unknown
    v.alerts_expected = len(expected_alerts)
    v.alerts_published = sum(1 for k in expected_alerts if published[k] >= 1)
    v.alerts_duplicated = sum(n - 1 for n in published.values() if n > 1)
    v.alerts_unexpected = sum(1 for k in published if k not in expected_alerts)
    v.statuses = {str(k): n for k, n in sorted(ledger.statuses().items())}
    v.lag = current_lag
    if v.recovery_s is None:
        v.problems.append(f"not caught up within {v.bound_s:.0f}s (lag {current_lag})")
    if v.readings_lost:
        v.problems.append(f"{v.readings_lost} readings answered 202 are not stored")
    if v.readings_duplicated:
        v.problems.append(f"{v.readings_duplicated} readings stored more than once")
    if v.refused_stored or strangers:
        v.problems.append(f"{v.refused_stored + len(strangers)} refused readings were stored")
    if v.alerts_published < v.alerts_expected:
        v.problems.append(f"{v.alerts_expected - v.alerts_published} expected alerts missing")
    if v.alerts_duplicated:
        v.problems.append(f"{v.alerts_duplicated} (alert_id, state) published more than once")
    if v.alerts_unexpected:
        v.problems.append(f"{v.alerts_unexpected} alerts for no injected event")


def assert_kept(verdict: Verdict) -> None:
    """Fails the scenario with every promise it broke."""
    assert not verdict.problems, f"{verdict.scenario}: {verdict.problems}"
