"""Apache Kafka for `make test-containers` (VITALS_TEST_CONTAINERS=1, a machine with Docker).

testcontainers' KafkaContainer only runs Confluent images (its KRaft mode refuses an
`apache/kafka` tag and its start script needs /etc/confluent), so the broker is a plain
container of the image Compose deploys, with Compose's own broker settings: the two cannot
drift. Only what faces the network differs: the test reaches the broker on a host port
fixed before start, because the broker must advertise that address to its clients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"
STARTED = r"Kafka Server started"


def compose_kafka() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]["kafka"]


def kafka_environment(host: str, port: int) -> dict[str, str]:
    """Compose's broker settings with the listeners moved to host:port. The controller
    stays inside the container."""
    env = {key: str(value) for key, value in compose_kafka()["environment"].items()}
    env.pop("KAFKA_LOG_DIRS", None)  # Compose mounts a volume there; a test broker is scratch
    env.update(
        KAFKA_LISTENERS=f"PLAINTEXT://:{port},CONTROLLER://:9093",
        KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{host}:{port}",
        KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
    )
    return env


def kafka_container(port: int):  # -> DockerContainer, imported only where Docker is used
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = DockerContainer(compose_kafka()["image"])
    host = container.get_docker_client().host()
    container.with_envs(**kafka_environment(host, port)).with_bind_ports(port, port)
    return container.waiting_for(LogMessageWaitStrategy(STARTED).with_startup_timeout(120))
