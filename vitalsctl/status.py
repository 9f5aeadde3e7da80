"""`vitals status`: a running deployment in one screen, from its settings.

Broker reachable and topics as configured, each consumer group's lag, the readiness of the
front doors and of each consumer process (VITALS_STATUS_PROBES), the registry age, the
last alert published, dead letters in the last hour, the database's size and its newest
reading. Each check is bounded in time; the exit code is 1 when any needs a person, so a
cron job or a script can act on it (`--json` for scripts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from vitals.settings import Settings

if TYPE_CHECKING:
    import httpx

CHECK_TIMEOUT_S = 10.0
LAG_ATTENTION = 10_000  # docs/operations.md: lag above 10k that keeps growing
GROUPS = {  # consumer group setting -> the topics it reads
    "processor_group": ("vitals.readings",),
    "sink_group": ("vitals.readings", "vitals.news2"),
    "alerts_group": ("vitals.detections",),
    "fhir_notify_group": ("vitals.alerts",),
}


@dataclass
class Check:
    name: str
    ok: bool  # False: needs a person
    detail: str
    value: float | str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    parser.add_argument(
        "--stale-after-s",
        type=float,
        default=900.0,
        help="the newest reading older than this needs a person (default 900)",
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    checks = await gather(settings, args.stale_after_s)
    if args.json:
        print(json.dumps({"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}))
    else:
        for check in checks:
            print(f"{'ok' if check.ok else '!!':<3}{check.name:<22}{check.detail}")
    return 0 if all(c.ok for c in checks) else 1


async def gather(settings: Settings, stale_after_s: float) -> list[Check]:
    results: list[Check] = []
    for name, probe in (
        ("broker and topics", _topics),
        ("consumer lag", _lag),
        ("dead letters (1 h)", _dead_letters),
    ):
        results += await _bounded(name, probe(settings))
    results += await _bounded("front doors", _front_doors(settings))
    results += await _bounded("consumers", _consumers(settings))
    results += await _bounded("database", _database(settings, stale_after_s))
    return results


async def _bounded(name: str, work) -> list[Check]:  # noqa: ANN001 - a coroutine
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await work
    except TimeoutError:
        return [Check(name, False, f"no answer within {CHECK_TIMEOUT_S:.0f} s")]
    except Exception as exc:  # noqa: BLE001 - one failed check must not hide the others
        return [Check(name, False, f"{type(exc).__name__}: {str(exc)[:160]}")]


async def _topics(settings: Settings) -> list[Check]:
    from vitals.kafka import topic_differences

    differences = await topic_differences(settings)
    if differences:
        return [Check("broker and topics", False, "; ".join(differences))]
    return [Check("broker and topics", True, f"{settings.kafka_bootstrap}: topics as configured")]


async def _lag(settings: Settings) -> list[Check]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import GroupCoordinatorNotAvailableError

    from vitals import kafka

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **kafka.security_options(settings)
    )
    consumer = kafka.consumer(settings, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        checks = []
        for setting, topics in GROUPS.items():
            group = getattr(settings, setting)
            try:
                committed = await admin.list_consumer_group_offsets(group)
            except GroupCoordinatorNotAvailableError:  # no group ever committed here
                committed = {}
            tps = [tp for t in topics for tp in await kafka.partitions(consumer, settings.topic(t))]
            ends = await consumer.end_offsets(tps)
            lag = sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
            # Only this deployment's topics count: a group name may be shared by another
            # topic prefix on the same cluster.
            never = not any(tp in committed for tp in tps)
            detail = "never committed" if never else f"{lag:,} messages behind"
            checks.append(Check(f"lag {group}", not never and lag <= LAG_ATTENTION, detail, lag))
        return checks
    finally:
        await consumer.stop()
        await admin.close()


async def _dead_letters(settings: Settings) -> list[Check]:
    from vitals import contract, kafka

    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = await kafka.partitions(consumer, settings.topic(contract.DEADLETTER))
        ends = await consumer.end_offsets(tps)
        since = int((time.time() - 3600) * 1000)
        count = 0
        for tp in tps:
            count += ends[tp] - await kafka.offset_at(consumer, tp, since)
    finally:
        await consumer.stop()
    return [
        Check(
            "dead letters (1 h)",
            count == 0,
            f"{count:,} parked" + (" (docs/operations.md#dead-letters)" if count else ""),
            count,
        )
    ]


async def _front_doors(settings: Settings) -> list[Check]:
    import httpx

    from vitalsctl import devscreen

    doors = {
        "gateway": f"http://{settings.gateway_host}:{settings.gateway_port}",
        "read API": f"http://{settings.api_host}:{settings.api_port}",
    }
    checks = []
    async with httpx.AsyncClient(timeout=3) as client:
        for door, url in doors.items():
            checks.append(ready := await _readiness(client, door, url))
            if not ready.ok:
                continue
            metrics = devscreen.parse((await client.get(f"{url}/metrics")).text, 0.0)
            bound = settings.registry_age_bound_s()
            for registry, age in metrics.registry_age_s.items():
                detail = f"{registry}: loaded {age:.0f} s ago (bound {bound:.0f} s)"
                checks.append(Check(f"registry {door}", age <= bound, detail, age))
    return checks


async def _consumers(settings: Settings) -> list[Check]:
    import httpx

    probes = settings.probes()
    if not probes:
        why = "not configured: VITALS_STATUS_PROBES=processor=host:port,... (their probe ports)"
        return [Check("ready consumers", True, why)]
    async with httpx.AsyncClient(timeout=3) as client:
        return [
            await _readiness(client, name, f"http://{address}") for name, address in probes.items()
        ]


async def _readiness(client: httpx.AsyncClient, name: str, url: str) -> Check:
    """A process's /readyz: 200 is ready; a 503 says why when it can; no answer is down."""
    import httpx

    try:
        answer = await client.get(f"{url}/readyz")
        ready = answer.status_code == 200
        why = (
            "ready" if ready else answer.json().get("detail") or f"not ready ({answer.status_code})"
        )
    except (httpx.HTTPError, ValueError) as exc:
        ready, why = False, f"no answer ({type(exc).__name__})"
    return Check(f"ready {name}", ready, f"{url}/readyz: {why}")


async def _database(settings: Settings, stale_after_s: float) -> list[Check]:
    import asyncpg

    from vitals.db import retention

    conn = await asyncpg.connect(settings.database_url, timeout=CHECK_TIMEOUT_S)
    try:
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        # Bounded to the last day: the BRIN index (plain) or chunks (hypertable) keep it cheap.
        newest = await conn.fetchval(
            "SELECT max(t) FROM readings WHERE t > now() - interval '1 day'"
        )
        alert = await conn.fetchval("SELECT max(published_at) FROM alerts")
        timescale = await conn.fetchval(retention.HAS_JOBS)
        policies = [dict(r) for r in await conn.fetch(retention.POLICIES)] if timescale else None
    finally:
        await conn.close()
    now = datetime.now(UTC)
    checks = [Check("database size", True, f"{size / 2**20:,.0f} MiB", size)]
    if newest is None:
        checks.append(Check("newest reading", True, "none in the last day"))
    else:
        age = (now - newest).total_seconds()
        fresh = age <= stale_after_s
        checks.append(Check("newest reading", fresh, f"taken {age:,.0f} s ago", age))
    last = "none yet" if alert is None else f"{(now - alert).total_seconds():,.0f} s ago"
    checks.append(Check("last alert published", True, last))
    problems = None if policies is None else retention.policy_problems(policies, settings)
    if problems is None:
        checks.append(Check("retention", True, "plain PostgreSQL: `vitals db prune` daily"))
    else:
        kept = "; ".join(problems) or "as the settings say; alerts and outcomes kept"
        checks.append(Check("retention", not problems, kept))
    return checks
