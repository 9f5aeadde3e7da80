"""The private PostgreSQL cluster of `make test`, `vitals dev` and the benchmarks, when one
is already running in its folder: another session's (two test runs in one checkout) or
one a killed run left behind. It is used, never started twice, and stopped only by the
session that started it."""

from __future__ import annotations

import shutil
import uuid

import pytest

from tests.conftest import LOCAL
from vitalsctl import localinfra

pytestmark = pytest.mark.integration


def test_a_cluster_already_running_in_the_folder_is_used_and_left_to_its_starter() -> None:
    # Under .local/ (not the system's temp folder): as root, the cluster runs as the
    # postgres user, who must be able to reach it.
    folder = LOCAL / f"pg-shared-{uuid.uuid4().hex[:8]}"
    try:
        with localinfra.private_cluster(folder) as first:
            assert localinfra.server_answers(first)
            with localinfra.private_cluster(folder) as second:
                assert second == first
            assert localinfra.server_answers(first)  # the second session did not stop it
        assert not localinfra.server_answers(first)  # its starter did
    finally:
        shutil.rmtree(folder, ignore_errors=True)
