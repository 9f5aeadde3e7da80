"""The one rule for which PostgreSQL server the tools use (vitalsctl.localinfra.postgres_server)."""

from __future__ import annotations

from pathlib import Path

from vitalsctl import localinfra


def test_a_given_url_is_used_as_it_is_even_when_nothing_answers_there(tmp_path: Path) -> None:
    # Naming a server is a promise to test or bench on that one: never a silent stand-in.
    given = f"postgresql://postgres@127.0.0.1:{localinfra.free_port()}/postgres"
    with localinfra.postgres_server(given, tmp_path / "pg") as url:
        assert url == given
    assert not (tmp_path / "pg").exists()
