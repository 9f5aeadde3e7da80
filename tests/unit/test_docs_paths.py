"""Every path the README and the docs name exists: a reader who follows one finds the file.

Paths are recognised by the tree's top-level folders (`ingest/…`, `docs/…`, …); a test
named as `file.py::test_name` must exist in that file; a markdown link resolves from the
document's folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = (
    "vitals", "frontdoor", "ingest", "readapi", "processors", "sinks", "vitalsctl",
    "evaluation", "bench", "deploy", "docs", "tests",
)  # fmt: skip
# A path: one of the top folders, then path characters; ends before punctuation.
PATH = re.compile(rf"(?<![\w./-])((?:{'|'.join(TOP)})/[\w./-]*[\w/])(?:::(\w+))?")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# Paths made at run time, and files the runbook has an operator create (the Compose
# secrets file, a production overlay).
NOT_FILES = ("bench/results/", ".local/", "deploy/.env", "deploy/overlays/")


def named_paths(doc: Path) -> list[tuple[str, str | None]]:
    text = doc.read_text()
    found = [(m.group(1), m.group(2)) for m in PATH.finditer(text)]
    for target in LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        resolved = (doc.parent / target).resolve()
        found.append((str(resolved.relative_to(ROOT)), None))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_path_a_document_names_exists(doc: Path) -> None:
    missing = []
    for path, test in named_paths(doc):
        if path.startswith(NOT_FILES) or "<" in path or "*" in path:
            continue
        target = ROOT / path
        if not target.exists():
            missing.append(path)
        elif test and f"def {test}(" not in target.read_text():
            missing.append(f"{path}::{test}")
    assert not missing, f"{doc.relative_to(ROOT)} names what does not exist: {missing}"
