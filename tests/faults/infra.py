"""Infrastructure the fault suite owns, so that it may freeze, stop and restart it.

Never the machine's shared PostgreSQL or another engineer's broker: a broker and a
PostgreSQL cluster of our own, each a process we hold the id of.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import LOCAL, test_broker_kind
from vitals import contract, kafka
from vitals.settings import Settings
from vitalsctl import localinfra, localkafka


class Broker:
    """The suite's own broker, of the session's kind (tests/conftest.py): one Apache Kafka
    node, a three-node cluster for broker faults, or tansu. Every node is a process the
    scenarios may freeze, kill and start again. (tansu keeps messages in memory only: it
    is frozen, never killed, which is tansu's limit, not the pipeline's.)"""

    def __init__(self, folder: Path, size: int = 1) -> None:
        kind, _ = test_broker_kind()
        self.local = localkafka.start_broker(kind, folder, LOCAL, size)
        self.address = self.local.bootstrap

    @property
    def nodes(self) -> list[localkafka.BrokerNode]:
        return self.local.nodes

    def describe(self) -> str:
        return self.local.describe()

    def freeze(self) -> None:
        for node in self.nodes:
            node.freeze()

    def start_node(self, node_id: int) -> None:
        """Start a stopped node again (same ports, same data) and wait until it serves."""
        node = self.local.node(node_id)
        node.start()
        node.wait_ready()

    async def down_for(
        self,
        node_ids: list[int],
        seconds: float,
        settings: Settings,
        window: list[float] | None = None,
    ) -> float:
        """kill -9 these nodes, start them again `seconds` later, wait until every replica
        is back in sync; returns when that was. `window` gets (all down, restarting)."""
        for node_id in node_ids:
            self.local.node(node_id).kill()
        down = time.monotonic()
        await asyncio.sleep(seconds)
        if window is not None:
            window += [down, time.monotonic()]
        for node_id in node_ids:
            self.local.node(node_id).start()
        for node_id in node_ids:
            await asyncio.to_thread(self.local.node(node_id).wait_ready)
        await self.until_in_sync(settings)
        return time.monotonic()

    async def leader_of_busiest(self, settings: Settings, topic: str) -> tuple[int, int]:
        """(partition, leader node id) of the partition of `topic` with the most messages."""
        name = settings.topic(topic)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.address)
        reader = AIOKafkaConsumer(bootstrap_servers=self.address, group_id=None)
        await admin.start()
        await reader.start()
        try:
            [described] = await admin.describe_topics([name])
            ends = await reader.end_offsets(await kafka.partitions(reader, name))
        finally:
            await reader.stop()
            await admin.close()
        busiest = max(ends, key=lambda tp: ends[tp]).partition
        leaders = {p["partition"]: p["leader"] for p in described["partitions"]}
        return busiest, leaders[busiest]

    async def until_in_sync(self, settings: Settings, within_s: float = 90) -> float:
        """Wait until every partition of the pipeline's topics has all its replicas in
        sync (what a rolling restart waits for between nodes); returns the seconds."""
        names = [settings.topic(t) for t in contract.ALL_TOPICS]
        started = time.monotonic()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.address)
        await admin.start()
        try:
            while True:
                described = await admin.describe_topics(names)
                lagging = [
                    (t["topic"], p["partition"])
                    for t in described
                    for p in t["partitions"]
                    if len(p["isr"]) < len(p["replicas"]) or p["leader"] < 0
                ]
                if not lagging:
                    return time.monotonic() - started
                if time.monotonic() - started > within_s:
                    raise AssertionError(f"replicas out of sync after {within_s} s: {lagging}")
                await asyncio.sleep(0.5)
        finally:
            await admin.close()

    def thaw(self) -> None:
        for node in self.nodes:
            node.thaw()

    def stop(self) -> None:
        self.local.stop()


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary folder, on a port that survives restarts."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: that is root-only, and postgres runs as its own user.
        self.folder = Path(tempfile.mkdtemp(prefix="vitals-faults-pg-"))
        self.data = self.folder / "data"
        self.port = localinfra.free_port()
        self._bin = localinfra.pg_bindir()
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.folder, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust")
        self.start()

    @property
    def server_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self._bin / tool), *args], check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends sessions and rolls back what is open; `immediate` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)
