"""The read API's Observation ids (vitals/fhir.resource_id): readable back into the row's
key where a FHIR id can hold the patient id, a stable UUID otherwise; never a key that
was not put in."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from vitals import fhir

FITS = st.from_regex(r"[A-Za-z0-9\-]{1,24}", fullmatch=True)
KINDS = st.sampled_from(["heart-rate", "spo2", "bp", "news2", "heart-rate-1m", "steps-1h"])
TIMES = st.integers(min_value=0, max_value=253_402_300_799_999)  # to 9999-12-31


@given(FITS, KINDS, TIMES, st.none() | st.text(min_size=1, max_size=128))
def test_an_id_is_read_back_into_its_key(patient: str, kind: str, t_ms: int,
                                         device: str | None) -> None:  # fmt: skip
    ident = fhir.resource_id(patient, kind, t_ms, device)
    assert len(ident) <= 64 and ident == fhir.resource_id(patient, kind, t_ms, device)
    key = fhir.resource_key(ident)
    assert key is not None
    assert (key.patient_id, key.kind, key.t_ms) == (patient, kind, t_ms)
    assert (key.device_hash is None) == (device is None)


@given(st.text(min_size=1, max_size=128), KINDS, TIMES)
def test_a_patient_id_a_fhir_id_cannot_hold_gets_a_uuid(patient: str, kind: str, t_ms: int
                                                        ) -> None:  # fmt: skip
    ident = fhir.resource_id(patient, kind, t_ms, "w1")
    key = fhir.resource_key(ident)
    if key is None:
        assert str(uuid.UUID(ident)) == ident
    else:
        assert key.patient_id == patient


def test_other_devices_other_ids_and_a_long_patient_id_gets_a_uuid() -> None:
    t = 1_772_352_000_000
    assert fhir.resource_id("p-1", "spo2", t, "w1") != fhir.resource_id("p-1", "spo2", t, "w2")
    patient, kind, time, device = fhir.resource_id("p-1", "spo2", t, "w1").split(".")
    assert (patient, kind, int(time, 36), len(device)) == ("p-1", "spo2", t, 12)
    long = "p" * 60
    assert str(uuid.UUID(fhir.resource_id(long, "spo2", t, "w1")))


def test_what_is_not_an_id_of_ours_is_no_key() -> None:
    for ident in ("", "p-1", "p-1.spo2", "p-1.spo2.zz!.", "p_1.spo2.1", "p-1.Spo2.1",
                  "p-1.spo2.1.2.3", "a.b.-1", str(uuid.uuid4())):  # fmt: skip
        assert fhir.resource_key(ident) is None, ident
