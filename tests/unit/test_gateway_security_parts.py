"""The pure parts of gateway security: keys, token buckets, the registry checks, auth,
identifiers, and the settings that switch TLS, SASL and the registry on."""

from __future__ import annotations

import ssl

import pytest
from pydantic import ValidationError

from frontdoor import keys
from frontdoor.auth import Authenticator
from frontdoor.errors import Forbidden, Unauthenticated
from frontdoor.ratelimit import TokenBuckets, retry_after_s
from frontdoor.registry import (
    Binding,
    Credential,
    Device,
    Snapshot,
    outside_binding,
    with_env_credentials,
)
from ingest.server import tls_options
from vitals import contract
from vitals.bounds import identifier_problem
from vitals.errors import ConfigError
from vitals.kafka import security_options
from vitals.settings import Settings

# --- keys ------------------------------------------------------------------------------


def test_issued_keys_are_random_well_formed_and_name_their_id() -> None:
    issued = [keys.new_key() for _ in range(200)]
    assert len({key for _, key in issued}) == 200
    for key_id, key in issued:
        assert keys.key_id_of(key) == key_id
        assert len(keys.digest(key)) == 32
    assert keys.key_id_of("vk_0000abcd_short") is None
    assert keys.key_id_of("local-dev-token") is None


# --- token buckets ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=2.0, burst=3, clock=clock)
    assert [buckets.take("gw-a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("gw-a") == pytest.approx(0.5)  # one token takes 1/rate seconds
    assert buckets.take("gw-b") == 0.0  # buckets are per gateway
    clock.now += 0.5
    assert buckets.take("gw-a") == 0.0
    clock.now += 100  # refills up to the burst, not beyond
    assert [buckets.take("gw-a") for _ in range(4)][-1] > 0


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert (retry_after_s(0.01), retry_after_s(1.0), retry_after_s(1.2)) == (1, 1, 2)
    with pytest.raises(ValueError):
        TokenBuckets(0, 1)


# --- the registry check ------------------------------------------------------------------

H = 3_600_000
DEVICE = Device(
    bindings=(Binding("p-old", 0, 10 * H), Binding("p-new", 10 * H)),
    gateways=frozenset({"gw-a"}),
)
SNAPSHOT = Snapshot({}, {"dev-1": DEVICE}, loaded=True)


def times(*hours: float) -> list[int]:
    """Readings' event times, ms, at these hours."""
    return [int(h * H) for h in hours]


@pytest.mark.parametrize(
    ("gateway", "device", "patient", "code"),
    [
        ("gw-b", "dev-1", "p-new", "gateway_not_bound"),
        ("gw-a", "dev-2", "p-new", "device_not_registered"),
        ("gw-a", "dev-1", "p-other", "patient_not_bound"),
    ],
)
def test_someone_elses_device_or_patient_is_forbidden(
    gateway: str, device: str, patient: str, code: str
) -> None:
    with pytest.raises(Forbidden) as caught:
        outside_binding(
            SNAPSHOT, gateway_id=gateway, device_id=device, patient_id=patient, times=times(1)
        )
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("patient", "hours", "outside"),
    [
        ("p-new", (10, 11, 500), []),
        ("p-new", (9.99, 10), [0]),  # before the move: the old patient's
        ("p-old", (0, 9.99, 10, 12), [2, 3]),  # from the move on: the new patient's
    ],
)
def test_each_reading_keeps_the_patient_whose_binding_its_time_is_in(
    patient: str, hours: tuple[float, ...], outside: list[int]
) -> None:
    got = outside_binding(
        SNAPSHOT,
        gateway_id="gw-a",
        device_id="dev-1",
        patient_id=patient,
        times=times(*hours),
    )
    assert got == outside
    assert DEVICE.current_patient == "p-new"


# --- authentication -----------------------------------------------------------------------


def authenticator(*credentials: tuple[str, Credential]) -> Authenticator:
    snapshot = Snapshot({keys.digest(k): c for k, c in credentials}, {}, loaded=True)
    return Authenticator(lambda: with_env_credentials(snapshot, {"env-token-123": "gw-env"}))


@pytest.mark.parametrize(
    ("credential", "code"),
    [
        (Credential("k1", "gateway", "gw-a", revoked=True), "revoked_credential"),
        (Credential("k1", "gateway", "gw-a", expires_ms=1), "expired_credential"),
        (Credential("k1", "admin", "ops"), "invalid_credential"),  # an admin token
    ],
)
def test_a_revoked_expired_or_admin_key_does_not_authenticate_a_gateway(
    credential: Credential, code: str
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        authenticator(("the-key", credential)).gateway_for("Bearer the-key")
    assert caught.value.code == code


def test_live_keys_and_environment_tokens_name_their_gateway() -> None:
    later = contract.now_ms() + 60_000
    auth = authenticator(
        ("key-1", Credential("k1", "gateway", "gw-a", expires_ms=later)),
        ("key-2", Credential("k2", "gateway", "gw-a")),  # rotation: two live keys
        ("adm-1", Credential("k3", "admin", "ops")),
    )
    assert auth.gateway_for("Bearer key-1") == auth.gateway_for("Bearer key-2") == "gw-a"
    assert auth.gateway_for("Bearer env-token-123") == "gw-env"
    assert auth.admin_for("Bearer adm-1") == "ops"
    with pytest.raises(Unauthenticated):
        auth.admin_for("Bearer key-1")  # a gateway key never opens the admin API


# --- identifiers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["watch-8842", "p-00017", "x'); DROP TABLE readings; --", "Zoë-ü", "患者-7"],
)
def test_ordinary_and_sql_looking_identifiers_are_data(value: str) -> None:
    assert identifier_problem(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 129,
        " p-1",
        "p-1\n",
        "p\x00",
        "p\u202e1",  # right-to-left override
        "p\u200b1",  # zero-width space
        "p\u2028",  # line separator
        "e\u0301",  # not NFC: "é" spelt as e + combining accent
        "\ud800",  # a lone surrogate
        17,
        None,
    ],
)
def test_invisible_reordering_or_unnormalised_identifiers_are_refused(value: object) -> None:
    assert identifier_problem(value) is not None


# --- settings: registry, TLS, Kafka security ----------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"require_device_registry": True},
        {"gateway_tls_certfile": "cert.pem"},
        {"gateway_tls_client_ca": "ca.pem"},
        {"gateway_credentials": "gw/1:a-long-token"},  # ids follow one grammar everywhere
        {"reader_credentials": "reader\u202e:a-long-token"},
    ],
)
def test_inconsistent_security_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**fields)


def test_tls_options_turn_on_mutual_tls_only_with_a_client_ca() -> None:
    assert tls_options(Settings()) == {}
    one_way = Settings(gateway_tls_certfile="c.pem", gateway_tls_keyfile="k.pem")
    assert tls_options(one_way) == {"ssl_certfile": "c.pem", "ssl_keyfile": "k.pem"}
    mutual = one_way.model_copy(update={"gateway_tls_client_ca": "ca.pem"})
    assert tls_options(mutual)["ssl_cert_reqs"] == ssl.CERT_REQUIRED


def test_kafka_security_settings_reach_aiokafka() -> None:
    assert security_options(Settings()) == {"security_protocol": "PLAINTEXT"}
    sasl = security_options(
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="gateway",
            kafka_sasl_password="s3cret",
        )
    )
    assert isinstance(sasl.pop("ssl_context"), ssl.SSLContext)
    assert sasl == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "gateway",
        "sasl_plain_password": "s3cret",
    }
    assert "s3cret" not in repr(Settings(kafka_sasl_password="s3cret"))
    with pytest.raises(ConfigError):
        security_options(Settings(kafka_security_protocol="SASL_PLAINTEXT"))
    with pytest.raises(ConfigError):
        security_options(Settings(kafka_security_protocol="TLS"))


def test_the_local_token_is_off_when_the_registry_is_on_unless_set_explicitly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VITALS_GATEWAY_CREDENTIALS", raising=False)
    assert Settings().credentials() != {}  # local use: the built-in token works
    assert Settings(gateway_registry=True).credentials() == {}
    monkeypatch.setenv("VITALS_GATEWAY_CREDENTIALS", "gw-9:a-long-token")
    assert Settings(gateway_registry=True).credentials() == {"a-long-token": "gw-9"}
