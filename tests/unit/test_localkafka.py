"""Choosing and preparing the local broker (vitalsctl.localkafka), and the pins that must agree.

The brokers themselves are started by every integration suite; these are the decisions and
the failures around them, each on the real tools (java, mvn) of this machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from processors.rules import rules_from_settings
from vitals import contract, kafka
from vitals.errors import InfrastructureError
from vitals.settings import Settings
from vitalsctl import localkafka

ROOT = Path(__file__).resolve().parents[2]


def test_the_pom_compose_and_the_code_pin_one_kafka_version() -> None:
    pom = localkafka.POM.read_text()
    assert f"<kafka.version>{localkafka.KAFKA_VERSION}</kafka.version>" in pom
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{localkafka.KAFKA_VERSION}"


def test_an_unknown_broker_kind_is_refused_by_name() -> None:
    with pytest.raises(InfrastructureError, match="kafka, tansu"):
        localkafka.broker_kind("redpanda")


def test_kafka_asked_for_without_java_is_an_error_not_a_quiet_tansu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert localkafka.java_major() is None
    with pytest.raises(InfrastructureError, match="needs Java 17"):
        localkafka.broker_kind("kafka")
    kind, why = localkafka.broker_kind(None)
    assert kind == "tansu" and "no Java 17+" in why


@pytest.mark.skipif(shutil.which("java") is None, reason="needs java on PATH")
def test_java_17_or_newer_chooses_apache_kafka() -> None:
    major = localkafka.java_major()
    assert major is not None
    kind, why = localkafka.broker_kind(None)
    assert (kind == "kafka") == (major >= 17), why


def test_no_maven_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InfrastructureError, match="`mvn` is not on PATH"):
        localkafka.ensure_jars(tmp_path / "local")


@pytest.mark.skipif(shutil.which("mvn") is None, reason="needs Maven on PATH")
def test_a_failed_maven_fetch_is_one_clear_error_and_leaves_no_stamp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Maven really runs and really fails: offline, with an empty local repository.
    monkeypatch.setenv("MAVEN_OPTS", f"-Dmaven.repo.local={tmp_path / 'repo'}")
    broken = tmp_path / "settings.xml"
    broken.write_text("<settings><offline>true</offline></settings>")
    monkeypatch.setattr(localkafka, "POM", _copy_pom_with_settings(tmp_path, broken))
    with pytest.raises(InfrastructureError, match="Maven could not fetch") as caught:
        localkafka.ensure_jars(tmp_path / "local")
    assert "\n" not in str(caught.value)
    assert not (
        tmp_path / "local" / "kafka" / localkafka.KAFKA_VERSION / "libs" / ".complete"
    ).exists()


def _copy_pom_with_settings(folder: Path, settings: Path) -> Path:
    """The real pom in a folder whose .mvn/maven.config points Maven at `settings`."""
    project = folder / "project"
    (project / ".mvn").mkdir(parents=True)
    (project / ".mvn" / "maven.config").write_text(f"-s {settings}\n")
    pom = project / "pom.xml"
    pom.write_text(localkafka.POM.read_text())
    return pom


def test_prepare_says_which_broker_in_one_line() -> None:
    env = {**os.environ, "VITALS_TEST_BROKER": "tansu"}
    done = subprocess.run(
        [sys.executable, "-m", "vitalsctl.localkafka", "prepare"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "broker for the suites: tansu (as asked)"


def test_kafka_properties_size_replication_to_the_cluster() -> None:
    def parsed(size: int) -> dict[str, str]:
        text = localkafka.kafka_properties(1, 9092, 9093, "1@127.0.0.1:9093", Path("/d"), size)
        return dict(line.split("=", 1) for line in text.splitlines())

    one, three = parsed(1), parsed(3)
    assert one["offsets.topic.replication.factor"] == "1"
    assert one["min.insync.replicas"] == "1"
    assert three["offsets.topic.replication.factor"] == "3"
    assert three["min.insync.replicas"] == "2"
    assert three["transaction.state.log.min.isr"] == "2"
    assert one["auto.create.topics.enable"] == "false"


def test_readings_are_kept_well_beyond_the_replay_horizon() -> None:
    horizon_ms = rules_from_settings(Settings()).horizon_ms
    # The processor replays up to its horizon on assignment; a sink outage of days
    # catches up from the topic too.
    assert kafka.RETENTION_MS[contract.READINGS] >= 2 * horizon_ms
    assert kafka.RETENTION_MS[contract.READINGS] >= 3 * kafka.DAY_MS
    assert set(kafka.RETENTION_MS) == set(contract.ALL_TOPICS)


def test_topic_configs_require_two_replicas_on_a_replicated_cluster() -> None:
    single = kafka.topic_configs(Settings(topic_replication=1), contract.READINGS)
    replicated = kafka.topic_configs(Settings(topic_replication=3), contract.READINGS)
    assert single["min.insync.replicas"] == "1"
    assert replicated["min.insync.replicas"] == "2"
    assert replicated["cleanup.policy"] == "delete"


def test_the_processor_state_topic_is_compacted_and_the_others_are_not() -> None:
    configs = {t: kafka.topic_configs(Settings(), t) for t in contract.ALL_TOPICS}
    assert contract.PROCESSOR_STATE in contract.ALL_TOPICS
    assert configs[contract.PROCESSOR_STATE]["cleanup.policy"] == "compact"
    others = {t for t, c in configs.items() if c["cleanup.policy"] == "delete"}
    assert others == set(contract.ALL_TOPICS) - {contract.PROCESSOR_STATE}


def test_deployments_create_topics_with_the_same_command_and_enough_brokers() -> None:
    # Both make the topics with `vitals topics create`, so with kafka.topic_configs.
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    brokers = [
        n for n, svc in compose["services"].items() if "apache/kafka" in svc.get("image", "")
    ]
    replication = int(_compose_env(compose).get("VITALS_TOPIC_REPLICATION", 1))
    assert 1 <= replication <= len(brokers)
    env = (ROOT / "deploy" / "k8s" / "settings.env").read_text()
    found = re.search(r"^VITALS_TOPIC_REPLICATION=(\d+)$", env, re.M)
    assert found is not None
    # Production: three brokers; min.insync.replicas 2 follows (kafka.topic_configs).
    assert int(found.group(1)) == 3
    assert (
        kafka.topic_configs(Settings(topic_replication=3), contract.READINGS)["min.insync.replicas"]
        == "2"
    )


def _compose_env(compose: dict) -> dict[str, str]:
    for service in compose["services"].values():
        if service.get("command") == ["topics", "create"]:
            return {k: str(v) for k, v in service.get("environment", {}).items()}
    raise AssertionError("no topics-create service")
