"""Each process's --help lists the settings it reads, with defaults, from the one
Settings object (vitals.settings.READ_BY), and operator commands describe their options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vitals.settings import READ_BY, Settings


def help_of(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "vitalsctl.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.mark.parametrize(
    ("command", "process"),
    [
        (("gateway",), "gateway"),
        (("api",), "api"),
        (("process",), "process"),
        (("sink", "timescale"), "sink"),
    ],
)
def test_a_process_help_lists_every_setting_it_reads_with_its_default(
    command: tuple[str, ...], process: str
) -> None:
    text = help_of(*command)
    for section in READ_BY[process]:
        for name in section.model_fields:
            assert f"VITALS_{name.upper()} " in text, (name, text)


def test_the_help_shows_defaults_and_only_what_the_process_reads() -> None:
    gateway, api = help_of("gateway"), help_of("api")
    assert "VITALS_GATEWAY_PORT" in gateway and "8080" in gateway
    assert "VITALS_HEADER_TIMEOUT_S" in gateway and "VITALS_HEADER_TIMEOUT_S" in api
    assert "VITALS_API_PAGE_MAX" in api and "VITALS_API_PAGE_MAX" not in gateway
    assert "VITALS_RATE_LIMIT_PER_S " not in api and "VITALS_KAFKA_BOOTSTRAP" not in api
    assert "local-reader-token" not in gateway  # each door its own credentials


def test_every_setting_is_in_a_section() -> None:
    """A field added to Settings itself would be in no process's help."""
    sections = [c for c in Settings.__mro__[1:] if c.__module__ == "vitals.settings"]
    assert set().union(*(c.model_fields for c in sections)) == set(Settings.model_fields)


def test_devices_register_describes_patient() -> None:
    assert "the patient who wears the device" in help_of("devices", "register")
