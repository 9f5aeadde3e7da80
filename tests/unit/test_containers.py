"""The `make test-containers` broker is configured as Compose's, without Docker to run it."""

from __future__ import annotations

from tests.support.containers import compose_kafka, kafka_environment


def test_container_broker_keeps_every_compose_setting_but_the_network_facing_ones() -> None:
    compose = {k: str(v) for k, v in compose_kafka()["environment"].items()}
    env = kafka_environment("docker-host", 39092)
    network = {"KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS", "KAFKA_CONTROLLER_QUORUM_VOTERS"}
    kept = {k: v for k, v in compose.items() if k not in network | {"KAFKA_LOG_DIRS"}}
    assert {k: env[k] for k in kept} == kept
    # What the suite needs of the broker: KRaft, large uploads, no auto-created topics.
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= 8 * 1024 * 1024
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "KAFKA_LOG_DIRS" not in env


def test_container_broker_advertises_the_address_the_fixture_dials() -> None:
    env = kafka_environment("docker-host", 39092)
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://docker-host:39092"
    assert "PLAINTEXT://:39092" in env["KAFKA_LISTENERS"].split(",")
    controller = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(":")[-1]
    assert f"CONTROLLER://:{controller}" in env["KAFKA_LISTENERS"].split(",")
    assert compose_kafka()["image"].startswith("apache/kafka:")
