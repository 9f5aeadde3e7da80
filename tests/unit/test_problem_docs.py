"""Every problem code the front doors answer is in the docs' error tables with the status
and title the code gives it (frontdoor/errors.py, frontdoor/problems.py, the HTTP layer in
frontdoor/protocol.py, and each raise site that names a code)."""

from __future__ import annotations

import ast
import re
from http import HTTPStatus
from pathlib import Path

from frontdoor import errors

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("frontdoor", "ingest", "readapi")
TABLES = ("docs/wire-format.md", "docs/read-api.md", "docs/security.md", "docs/fhir.md")
CLASSES = {
    name: cls
    for name, cls in vars(errors).items()
    if isinstance(cls, type) and issubclass(cls, errors.GatewayError)
}
LITERAL_CALLS = {
    "problem_response",
    "Refused",
    "_refuse",
    "_problem",
}  # (status, code, title, detail)


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def problems_in_code() -> dict[str, set[tuple[int, str]]]:
    """code -> the (status, title) pairs it is answered with."""
    found: dict[str, set[tuple[int, str]]] = {}
    for package in SOURCES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                name, args = _name(node.func), node.args
                if name in CLASSES and isinstance(args[0], ast.Constant):
                    cls = CLASSES[name]
                    found.setdefault(args[0].value, set()).add((cls.status, cls.title))
                elif name in LITERAL_CALLS and len(args) >= 3:
                    if all(isinstance(a, ast.Constant) for a in args[:3]):
                        status, code, title = (a.value for a in args[:3])
                        found.setdefault(code, set()).add((status, title))
    # FastAPI's own errors: the code and title from the status's phrase (problems.py).
    for status in (HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED):
        found[status.phrase.lower().replace(" ", "_")] = {(status.value, status.phrase)}
    return found


def problems_in_docs() -> dict[str, list[tuple[set[int], str, str]]]:
    """code -> (statuses, title, where) from every table headed `| status | code | title |`."""
    documented: dict[str, list[tuple[set[int], str, str]]] = {}
    for doc in TABLES:
        in_table = False
        for number, line in enumerate((ROOT / doc).read_text(encoding="utf-8").splitlines(), 1):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and cells[:3] == ["status", "code", "title"]:
                in_table = True
                continue
            if not line.startswith("|"):
                in_table = False
            if not in_table or set(cells[0]) <= set("-: "):
                continue
            statuses = {int(s) for s in re.findall(r"\d{3}", cells[0])}
            for code in re.findall(r"`([a-z0-9_]+)`", cells[1]):
                documented.setdefault(code, []).append((statuses, cells[2], f"{doc}:{number}"))
    return documented


def test_each_code_has_one_status_and_title() -> None:
    several = {code: pairs for code, pairs in problems_in_code().items() if len(pairs) > 1}
    assert not several, several


def test_the_docs_give_each_code_the_status_and_title_of_the_code() -> None:
    code_side, docs = problems_in_code(), problems_in_docs()
    assert len(docs) > 40, sorted(docs)
    wrong = []
    for code, rows in docs.items():
        assert code in code_side, f"the docs name {code!r}, which no front door answers"
        (status, title), *_ = code_side[code]
        wrong += [
            (code, where, status, title) for s, t, where in rows if status not in s or t != title
        ]
    assert not wrong, wrong


def test_every_code_a_front_door_answers_is_in_the_docs() -> None:
    missing = set(problems_in_code()) - set(problems_in_docs())
    assert not missing, sorted(missing)
