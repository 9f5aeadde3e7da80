"""The one settings object. Built once at the edge (CLI, app factory) and passed down.

Every field is read from an environment variable `VITALS_<FIELD>` (upper case).
"""

from __future__ import annotations

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from vitals.bounds import identifier_problem
from vitals.rules_file import increasing_delays

# The credential that `make run`'s simulator uses; documented in the README.
LOCAL_GATEWAY_ID = "gw-local"
LOCAL_GATEWAY_TOKEN = "local-dev-token"
# The read API's local credential (docs/read-api.md); distinct from every gateway token.
LOCAL_READER_ID = "reader-local"
LOCAL_READER_TOKEN = "local-reader-token"


# The settings come in sections, one class each, joined into the one Settings object
# below; READ_BY says which sections each process reads (its --help lists them).


class KafkaSettings(BaseModel):
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = Field("", description="prepended to every topic name")
    topic_partitions: int = 6
    topic_replication: int = 1
    # Idempotent producers: "auto" asks the cluster whether it grants producer ids
    # (vitals/kafka.py idempotence()); "on" / "off" decide without asking.
    kafka_idempotence: str = "auto"


class DatabaseSettings(BaseModel):
    database_url: str = "postgresql://postgres@127.0.0.1:5432/vitals"
    # `vitals db roles`: "process:password,..." for the processes' login roles
    # (vitals/db/logins.py); deployments put it in a secret.
    db_login_passwords: SecretStr = SecretStr("")


# Raw history must outlast every job that reads it back: the per-hour aggregate's refresh
# window (30 days, migration 0004) twice over, so that a refresh never recomputes a bucket
# from dropped chunks (docs/storage.md, Retention). Compression (7 days) and the
# processor's replay (allowed_lateness_s, hours) reach back less far.
MIN_RETENTION_DAYS = 61


class RetentionSettings(BaseModel):
    """How long raw history is kept (docs/storage.md, Retention; vitals/db/retention.py).
    Applied by `vitals db migrate`; alerts and their outcomes have no retention."""

    # 8 years: NHS England's Records Management Code of Practice keeps adult health records
    # 8 years after the last treatment; the research export needs the raw series.
    readings_retention_days: int = 2922
    scores_retention_days: int = 2922  # a score is kept as long as the readings behind it

    @field_validator("readings_retention_days", "scores_retention_days")
    @classmethod
    def _retention_long_enough(cls, value: int, info: ValidationInfo) -> int:
        if value < MIN_RETENTION_DAYS:
            raise ValueError(
                f"{info.field_name} = {value}: must be at least {MIN_RETENTION_DAYS} days "
                "(twice the per-hour aggregate's 30-day refresh window; docs/storage.md)"
            )
        return value


class GatewaySettings(BaseModel):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    # "gateway_id:token,..." for local use and tests; deployments use issued keys.
    gateway_credentials: str = f"{LOCAL_GATEWAY_ID}:{LOCAL_GATEWAY_TOKEN}"
    max_body_bytes: int = 1_048_576  # on the wire
    max_decompressed_bytes: int = 4_194_304  # after gzip
    max_readings_per_upload: int = 5_000
    max_future_skew_s: float = 300.0  # readings further ahead than this are rejected
    produce_timeout_s: float = 5.0  # then 503 with Retry-After
    idempotency_cache_size: int = 100_000  # answers kept, and at most this many bytes:
    idempotency_cache_bytes: int = 64 * 2**20
    # --- gateway security (docs/security.md) ------------------------------------------
    # Load API keys and the device registry from the database (refreshed every
    # registry_refresh_s), write the upload audit trail there, serve the admin API.
    # Off by default for local use: then only gateway_credentials authenticate.
    gateway_registry: bool = False
    # Refuse (403) uploads for devices not registered to this gateway and patient.
    # Needs gateway_registry. A deployment turns both on (docs/security.md).
    require_device_registry: bool = False
    rate_limit_per_s: float = 50.0  # per gateway and replica; 0 = no limit
    rate_limit_burst: int = 200
    # TLS for the gateway; with gateway_tls_client_ca set, clients must present a
    # certificate signed by it (mutual TLS for gateway hubs).
    gateway_tls_certfile: str = ""
    gateway_tls_keyfile: str = ""
    gateway_tls_client_ca: str = ""


class FrontDoorSettings(BaseModel):
    """What both front doors (gateway, read API) read."""

    retry_after_s: int = 5  # the Retry-After of 429 and 503 answers
    # Reloads of keys and devices (gateway) and of reader keys (read API).
    registry_refresh_s: float = 10.0
    # /readyz answers 503 while the registry in memory is older than this (its reloads
    # failing or stopped): 0 means 3 reloads' worth, 3 * registry_refresh_s.
    registry_max_age_s: float = 0.0
    # The request line and headers must arrive within header_timeout_s of the connection
    # (or of a keep-alive request's first byte), the body within body_timeout_s of the
    # headers; else 408 and the connection is closed (frontdoor/protocol.py).
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 16_384  # request line and headers together (431)
    max_header_count: int = 64
    keep_alive_timeout_s: float = 5.0  # idle keep-alive connections are closed after this
    max_connections: int = 1_000  # concurrent connections and tasks; then 503
    audit_queue_max: int = 100_000
    audit_batch_max: int = 500
    audit_flush_s: float = 1.0


class ReadApiSettings(BaseModel):
    """`vitals api` (docs/read-api.md)."""

    api_host: str = "127.0.0.1"
    api_port: int = 8081
    # "reader_id:token,..." for readers (clinician apps, dashboards); never gateway tokens.
    reader_credentials: str = f"{LOCAL_READER_ID}:{LOCAL_READER_TOKEN}"
    # The API's own database URL, for a login role granted only vitals_reader; empty: the
    # database_url. Either way the API's sessions are read-only.
    api_database_url: str = ""
    api_page_max: int = 10_000  # the largest `limit` a request may ask for
    api_statement_timeout_s: float = 10.0
    # Per reader key and replica (docs/security.md#limits): requests (token bucket; 0 = off)
    # and rows returned per minute (0 = off).
    api_rate_limit_per_s: float = 20.0
    api_rate_limit_burst: int = 200
    api_rows_per_minute: int = 300_000
    # HMAC key of the paging cursors; empty: a random key per process (one replica only).
    api_cursor_key: SecretStr = SecretStr("")
    # TLS for the read API, as for the gateway (a client CA turns on mutual TLS).
    api_tls_certfile: str = ""
    api_tls_keyfile: str = ""
    api_tls_client_ca: str = ""
    # The console's live stream (docs/read-api.md#live): a stream's queue of changes (a
    # client further behind is dropped), the quiet time before a heartbeat, the period of
    # its board snapshots, how long a stream ticket may be used to open one.
    api_live_queue_max: int = 1000
    api_live_heartbeat_s: float = 15.0
    api_live_snapshot_s: float = 30.0
    api_live_ticket_s: float = 60.0


class ExportSettings(BaseModel):
    """`vitals export` (docs/storage.md)."""

    # HMAC-SHA256 key that turns patient ids into pseudonyms; export refuses to run without.
    export_pseudonym_key: SecretStr = SecretStr("")


class KafkaSecuritySettings(BaseModel):
    """Passed to aiokafka."""

    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    kafka_sasl_mechanism: str = ""  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""


class RulesSettings(BaseModel):
    """Read by the processors (detectors) and the alerts sink (escalation times)."""

    # The clinical rules file (vitals/rules_file.py); empty: the built-in vitals/rules.toml.
    rules_file: str = ""


class ProcessorSettings(BaseModel):
    processor_group: str = "vitals-processor"
    allowed_lateness_s: float = 3600.0  # older readings are stored; detections retrospective
    silence_after_s: float = 900.0  # device silence: no upload for this long (wall clock)
    silence_check_interval_s: float = 5.0
    # The processor's state checkpoints (docs/state.md): seconds between rounds; 0 turns
    # them off (replay-only on every assignment, the design before them).
    checkpoint_interval_s: float = 60.0
    # Overrides of the rules file's defaults when set (None: the file's value).
    spo2_low_threshold: float | None = None
    spo2_low_clear: float | None = None  # hysteresis: back to this before it resolves
    spo2_low_for_s: float | None = None
    hr_high_threshold: float | None = None
    hr_high_clear: float | None = None
    hr_high_for_s: float | None = None
    clear_for_s: float | None = None  # back in range this long before an episode resolves


class SinkSettings(BaseModel):
    sink_group: str = "vitals-sink-timescale"
    alerts_group: str = "vitals-sink-alerts"
    sink_batch_min: int = 50  # messages per poll; adapts between min and max
    sink_batch_max: int = 2_000
    sink_batch_target_s: float = 0.5
    migrate_on_start: bool = True
    # Escalation of opened alerts nobody acknowledged (sinks/alerts/escalation.py):
    # "severity:s1,s2,...;..." = seconds after the alert opened at which it reaches level
    # 1, 2, ... A severity left out never escalates. The rules file's [escalation] and
    # [cohorts.<name>.escalation] override it per severity (vitals/rules_file.py).
    # Defaults sit well inside NEWS2's response times (high: emergency assessment within
    # 30 min; medium: review within 1 h).
    escalation: str = "high:300,900;medium:900,2700"
    escalation_check_interval_s: float = 5.0
    # FHIR Subscriptions (sinks/fhir_notify/, docs/fhir.md): vitals.alerts -> each matching
    # subscriber's endpoint, at least once. A failing notification is retried with backoff
    # (base doubling up to max) and dead-lettered once it has failed for dead_after_s since
    # it was queued: a day, so an endpoint down for an hour loses nothing.
    fhir_notify_group: str = "vitals-fhir-notify"
    fhir_notify_timeout_s: float = 10.0
    fhir_notify_retry_base_s: float = 2.0
    fhir_notify_retry_max_s: float = 300.0
    fhir_notify_dead_after_s: float = 86_400.0
    fhir_notify_concurrency: int = Field(20, ge=1)
    fhir_notify_poll_s: float = 1.0
    # The read API's FHIR base as the EHR reaches it, for the references in notifications
    # (default: http://VITALS_API_HOST:VITALS_API_PORT/fhir/r4/).
    fhir_public_base: str = ""


class ProbeSettings(BaseModel):
    # Consumers serve /healthz, /readyz and /metrics on this port (0 = disabled).
    probe_host: str = "127.0.0.1"
    probe_port: int = 0


class StatusSettings(BaseModel):
    """`vitals status` (docs/operations.md#vitals-status)."""

    # Where each consumer process serves /readyz, as "name=host:port,..." (each one's
    # VITALS_PROBE_HOST and VITALS_PROBE_PORT); `vitals dev` sets it for its children.
    status_probes: str = ""

    @field_validator("status_probes")
    @classmethod
    def _probes_parse(cls, value: str) -> str:
        parse_probes(value)
        return value


class ProcessSettings(BaseModel):
    """What every long-running process reads."""

    log_level: str = "INFO"
    shutdown_grace_s: float = 10.0


class Settings(
    ProcessSettings,
    StatusSettings,
    ProbeSettings,
    SinkSettings,
    RetentionSettings,
    ProcessorSettings,
    RulesSettings,
    KafkaSecuritySettings,
    ExportSettings,
    ReadApiSettings,
    FrontDoorSettings,
    GatewaySettings,
    DatabaseSettings,
    KafkaSettings,
    BaseSettings,
):
    """Every setting, each from VITALS_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="VITALS_", extra="ignore")

    @field_validator("gateway_credentials")
    @classmethod
    def _credentials_parse(cls, value: str) -> str:
        parse_credentials(value)
        return value

    @field_validator("reader_credentials")
    @classmethod
    def _reader_credentials_parse(cls, value: str) -> str:
        parse_credentials(value, "reader")
        return value

    @field_validator("escalation")
    @classmethod
    def _escalation_parses(cls, value: str) -> str:
        parse_escalation(value)
        return value

    @model_validator(mode="after")
    def _security_consistent(self) -> Settings:
        if self.require_device_registry and not self.gateway_registry:
            raise ValueError("require_device_registry needs gateway_registry (the database)")
        for door in ("gateway", "api"):
            cert, key, ca = (
                getattr(self, f"{door}_tls_{f}") for f in ("certfile", "keyfile", "client_ca")
            )
            if bool(cert) != bool(key):
                raise ValueError(f"{door}_tls_certfile and {door}_tls_keyfile go together")
            if ca and not cert:
                raise ValueError(f"{door}_tls_client_ca (mutual TLS) needs {door}_tls_certfile")
        if self.gateway_registry and "gateway_credentials" not in self.model_fields_set:
            # The built-in local token must never open a deployment that uses issued keys.
            self.gateway_credentials = ""
        if 0 < len(self.api_cursor_key.get_secret_value()) < 32:
            raise ValueError("api_cursor_key must be 32+ characters (or empty: one per process)")
        if self.readings_retention_days * 86_400 <= self.allowed_lateness_s:
            raise ValueError("readings_retention_days must outlast allowed_lateness_s")
        if set(self.credentials()) & set(self.readers()):
            raise ValueError("a reader token must not also be a gateway token")
        return self

    def registry_age_bound_s(self) -> float:
        """How old the registry in memory may grow before /readyz turns 503."""
        return self.registry_max_age_s or 3 * self.registry_refresh_s

    def credentials(self) -> dict[str, str]:
        """token -> gateway id."""
        return parse_credentials(self.gateway_credentials)

    def readers(self) -> dict[str, str]:
        """token -> reader id."""
        return parse_credentials(self.reader_credentials, "reader")

    def fhir_base(self) -> str:
        base = self.fhir_public_base or f"http://{self.api_host}:{self.api_port}/fhir/r4/"
        return base.rstrip("/") + "/"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def probes(self) -> dict[str, str]:
        """consumer process name -> host:port of its probe server (`vitals status`)."""
        return parse_probes(self.status_probes)

    def escalation_delays(self) -> dict[str, tuple[float, ...]]:
        """severity -> seconds after opening at which levels 1, 2, ... are reached."""
        return parse_escalation(self.escalation)


def parse_escalation(value: str) -> dict[str, tuple[float, ...]]:
    """ "high:300,900;medium:900" -> {"high": (300.0, 900.0), "medium": (900.0,)}."""
    delays: dict[str, tuple[float, ...]] = {}
    for part in filter(None, (p.strip() for p in value.split(";"))):
        severity, _, seconds = part.partition(":")
        severity = severity.strip()
        if severity not in ("low", "medium", "high") or severity in delays:
            raise ValueError(f"escalation: {severity!r} is not a severity, or given twice")
        try:
            levels = increasing_delays([float(s) for s in seconds.split(",")])
        except ValueError:
            raise ValueError(
                f"escalation: {part!r} needs severity:seconds,... with delays > 0 and increasing"
            ) from None
        delays[severity] = levels
    return delays


def parse_probes(value: str) -> dict[str, str]:
    """ "processor=10.0.0.5:9100,sink-alerts=h:9100" -> {"processor": "10.0.0.5:9100", ...}."""
    probes: dict[str, str] = {}
    for entry in filter(None, (p.strip() for p in value.split(","))):
        name, _, address = entry.partition("=")
        host, _, port = address.rpartition(":")
        if not name.strip() or not host or not port.isdigit() or name.strip() in probes:
            raise ValueError(f"status_probes: {entry!r} needs name=host:port, each name once")
        probes[name.strip()] = address.strip()
    return probes


_KAFKA = (KafkaSettings, KafkaSecuritySettings)
READ_BY: dict[str, tuple[type[BaseModel], ...]] = {
    "gateway": (*_KAFKA, DatabaseSettings, GatewaySettings, FrontDoorSettings, ProcessSettings),
    "api": (DatabaseSettings, ReadApiSettings, FrontDoorSettings, ProcessSettings),
    "process": (*_KAFKA, ProcessorSettings, RulesSettings, ProbeSettings, ProcessSettings),
    "db": (DatabaseSettings, RetentionSettings),  # `vitals db migrate` and `vitals db prune`
    "status": (*_KAFKA, DatabaseSettings, StatusSettings),
    "sink": (
        *_KAFKA,
        DatabaseSettings,
        SinkSettings,
        RetentionSettings,  # a sink migrates at start (migrate_on_start)
        RulesSettings,  # the alerts sink's escalation times per cohort
        ProbeSettings,
        ProcessSettings,
    ),
}


def settings_help(process: str) -> str:
    """The settings `process` reads with their defaults, for its --help: from the fields
    of its sections (READ_BY), so that it lists what the class holds."""
    lines = ["settings (environment variables; README's Configuration says what each means):"]
    for section in READ_BY[process]:
        for name, field in section.model_fields.items():
            default = field.get_default(call_default_factory=True)
            if isinstance(default, SecretStr):
                shown = "(secret; empty)" if not default.get_secret_value() else "(secret)"
            elif default is None or default == "":
                shown = "(empty)" if default == "" else "(unset)"
            else:
                shown = str(default)
            lines.append(f"  VITALS_{name.upper():<34} {shown}")
    return "\n".join(lines)


def parse_credentials(value: str, kind: str = "gateway") -> dict[str, str]:
    tokens: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        principal, sep, token = entry.partition(":")
        if not sep or not principal or len(token) < 8:
            raise ValueError(
                f"{kind} credentials must be '{kind}_id:token' pairs with tokens of 8+ characters"
            )
        problem = identifier_problem(principal)  # the same grammar as issued keys' names
        if problem is not None:
            raise ValueError(f"{kind} id {principal[:40]!r} in the credentials {problem}")
        tokens[token] = principal
    return tokens
