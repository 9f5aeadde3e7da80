"""The HAPI FHIR validator, offline, for the tests: its jars fetched once by Maven from the
committed pom (vitalsctl/fhir-validator.pom.xml, into .local/fhir-validator/), then
FhirValidate.java run as a single-file program over the resources a test collected."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[3]
POM = ROOT / "vitalsctl" / "fhir-validator.pom.xml"
RUNNER = Path(__file__).with_name("FhirValidate.java")
HAPI_VERSION = "8.8.1"  # as in the pom (tests/unit/test_fhir_ingest.py keeps them equal)
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


@dataclass(frozen=True, slots=True)
class Message:
    severity: str  # ERROR, WARNING, INFORMATION (FATAL counts as an error)
    location: str
    text: str


def pom_version() -> str:
    found = re.search(r"<hapi.version>([^<]+)</hapi.version>", POM.read_text())
    assert found is not None
    return found.group(1)


def ensure_jars(local: Path = ROOT / ".local") -> Path:
    """The validator's jars, fetched by Maven the first time (and after a pom change)."""
    libs = local / "fhir-validator" / HAPI_VERSION / "libs"
    stamp = libs / f".complete-{hashlib.sha256(POM.read_bytes()).hexdigest()[:12]}"
    if stamp.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None or shutil.which("java") is None:
        raise RuntimeError("the HAPI FHIR validator needs Java 17+ and Maven (mvn) on PATH")
    libs.mkdir(parents=True, exist_ok=True)
    log = libs.parent / "maven.log"
    with open(log, "wb") as out:
        done = subprocess.run(
            [mvn, "-B", "-f", str(POM), f"{DEPENDENCY_PLUGIN}:copy-dependencies",
             f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
            stdout=out, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if done.returncode != 0 or not any(libs.glob(f"hapi-fhir-validation-{HAPI_VERSION}.jar")):
        raise RuntimeError(f"Maven could not fetch the HAPI FHIR validator (log: {log})")
    stamp.touch()
    return libs


def validate(resources: dict[str, Any]) -> dict[str, list[Message]]:
    """Every resource validated in one JVM (it takes ~10-30 s to start): name -> messages."""
    libs = ensure_jars()
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for name, resource in resources.items():
            path = Path(folder) / f"{name}.json"
            path.write_bytes(orjson.dumps(resource))
            paths[str(path)] = name
        done = subprocess.run(
            ["java", "-cp", f"{libs}/*", str(RUNNER), *paths],
            capture_output=True, text=True, check=True, timeout=600,
        )  # fmt: skip
    found: dict[str, list[Message]] = {name: [] for name in resources}
    finished = set()
    for line in done.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1] == "DONE":
            finished.add(paths[parts[0]])
        elif len(parts) == 4 and parts[0] in paths:
            found[paths[parts[0]]].append(Message(parts[1], parts[2], parts[3]))
    assert finished == set(resources), done.stderr[-2000:]
    return found
