"""Broker faults on a three-node Apache Kafka cluster, under load, checked like the rest.

The suite's cluster runs three combined nodes (broker and controller voter each); the
pipeline's topics are replicated three times with min.insync.replicas 2, and producers
send with acks=all. Each scenario kills, freezes or restarts nodes while the load runs,
and the same ledger checks follow: nothing answered 202 lost, nothing stored twice, every
expected alert exactly once. These need Kafka's replication: on tansu (one node, memory
only) they cannot run, and say so.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.checks import TopicReader, assert_kept
from tests.faults.conftest import SCENARIOS
from tests.faults.infra import Broker
from tests.faults.load import LoadGenerator, LoadPlan
from tests.faults.scenario import RECOVERY_BOUND_S, Injection, after, in_thread, run
from tests.support.stages import Stages
from vitals import contract
from vitals.settings import Settings

pytestmark = pytest.mark.faults

SCENARIOS += [
    "broker: leader of the busiest readings partition killed",
    "broker: one node frozen past its session timeout",
    "broker: two of three nodes down",
    "broker: active controller killed",
    "broker: rolling restart of all three",
]

# Long enough that every fault and its healing fall inside the load: 20 uploads a patient
# at one a second.
LONG = LoadPlan(interval_s=1.0, minutes=20)
PRODUCE_TIMEOUT_S = 2.0  # tests/support/stages.py environment()


async def under_load(
    name: str,
    text: str,
    stages: Stages,
    settings: Settings,
    alerts: TopicReader,
    inject: Injection,
    bound_s: float = RECOVERY_BOUND_S,
) -> LoadGenerator:
    """One broker scenario under the long load; fails with its broken promises."""
    verdict, generator = await run(
        name, text, stages, settings, alerts, inject, plan=LONG, bound_s=bound_s
    )
    assert_kept(verdict)
    return generator


@pytest.fixture
def cluster(broker: Broker) -> Broker:
    if len(broker.nodes) != 3:
        pytest.skip("broker faults need the three-node Apache Kafka cluster (not tansu)")
    for node_id in (1, 2, 3):  # a scenario that failed half-way may have left one down
        if not broker.local.node(node_id).alive:
            broker.start_node(node_id)
    return broker


async def test_leader_of_the_busiest_partition_killed(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader, cluster: Broker
) -> None:
    killed: list[int] = []

    async def inject() -> float:
        await after(3)
        _, leader = await cluster.leader_of_busiest(fault_settings, contract.READINGS)
        killed.append(leader)
        return await cluster.down_for([leader], 10, fault_settings)

    await under_load(
        "broker: leader of the busiest readings partition killed",
        "SIGKILL at 3 s of the node leading the readings partition with the most messages; "
        "started again 10 s later, then waited until every replica was back in sync",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
    )
    assert killed, "the injection did not run"


async def test_one_node_frozen_past_its_session_timeout(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader, cluster: Broker
) -> None:
    async def inject() -> float:
        await after(3)
        _, leader = await cluster.leader_of_busiest(fault_settings, contract.READINGS)
        node = cluster.local.node(leader)
        node.freeze()
        try:
            # Past the broker's session with the controller (9 s) and the consumers'
            # sessions (10 s): the cluster fences it and moves its leaderships away.
            await after(15)
        finally:
            node.thaw()
        await cluster.until_in_sync(fault_settings)
        return time.monotonic()

    await under_load(
        "broker: one node frozen past its session timeout",
        "SIGSTOP at 3 s of the busiest readings partition's leader for 15 s (broker "
        "session 9 s, consumer sessions 10 s), SIGCONT, then waited for replicas in sync",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
        # The processor restores checkpoints from partitions whose leaders this moves; a
        # read that cannot finish falls back to a full replay after 3 s (state_topic.py),
        # and the group may rebalance twice meanwhile: more than the suite's usual bound.
        bound_s=180,
    )


async def test_two_of_three_nodes_down_is_503_and_loses_nothing(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader, cluster: Broker
) -> None:
    window: list[float] = []
    down_s = 10.0

    async def inject() -> float:
        await after(3)
        leader = await in_thread(cluster.local.quorum_leader)
        # The active controller and one more: the survivor has neither a quorum nor a
        # second in-sync replica for any partition.
        victims = [leader, next(n for n in (1, 2, 3) if n != leader)]
        return await cluster.down_for(victims, down_s, fault_settings, window)

    generator = await under_load(
        "broker: two of three nodes down",
        f"SIGKILL at 3 s of two nodes (the active controller among them) for {down_s:g} s; "
        "min.insync.replicas 2: every upload sent while they were down must be 503",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
    )
    # Sent once both were down (and past the produce timeout, for uploads already on the
    # wire when they died) and answered before they came back: none may be a 202.
    down, up = window[0] + PRODUCE_TIMEOUT_S, window[1]
    during = [
        status
        for u in generator.ledger.uploads
        for status, sent, took in zip(u.attempts, u.sent_at, u.answered_after_s, strict=True)
        if sent >= down and sent + took <= up
    ]
    assert during, "no upload was sent while two nodes were down"
    assert 202 not in during, f"accepted with one broker of three: {during.count(202)}"
    assert set(during) <= {503, 0}, sorted(set(during))


async def test_active_controller_killed(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader, cluster: Broker
) -> None:
    killed: list[int] = []

    async def inject() -> float:
        await after(3)
        leader = await in_thread(cluster.local.quorum_leader)
        killed.append(leader)
        return await cluster.down_for([leader], 5, fault_settings)

    await under_load(
        "broker: active controller killed",
        "SIGKILL at 3 s of the KRaft quorum's leader (MetadataQuorumCommand), started "
        "again 5 s later, then waited for replicas in sync",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
    )
    assert killed and await in_thread(cluster.local.quorum_leader) in (1, 2, 3)


async def test_rolling_restart_of_all_three(
    pipeline: Stages, fault_settings: Settings, alert_topic: TopicReader, cluster: Broker
) -> None:
    waits: list[float] = []

    async def inject() -> float:
        await after(2)
        for node_id in (1, 2, 3):
            await in_thread(cluster.local.node(node_id).stop)  # SIGTERM: controlled shutdown
            await in_thread(cluster.start_node, node_id)
            # As an operator does: the next node only once every replica is back.
            waits.append(await cluster.until_in_sync(fault_settings))
        return time.monotonic()

    await under_load(
        "broker: rolling restart of all three",
        "from 2 s: each node in turn SIGTERM, started again, and the next only once every "
        "replica is back in sync",
        pipeline,
        fault_settings,
        alert_topic,
        inject,
    )
    assert len(waits) == 3
