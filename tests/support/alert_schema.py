"""Checks a document against docs/alert.schema.json (the subset of JSON Schema it uses)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

SCHEMA = orjson.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "alert.schema.json").read_bytes()
)


_KEYWORDS = {
    "$schema",
    "$id",
    "title",
    "description",
    "type",
    "additionalProperties",
    "required",
    "properties",
    "const",
    "enum",
    "format",
    "minLength",
    "minimum",
    "oneOf",
    "$ref",
    "$defs",
}

_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
    "object": dict,
}
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def violations(doc: Any, schema: dict[str, Any] = SCHEMA, path: str = "$") -> list[str]:
    """What in `doc` breaks `schema`; a keyword this validator does not know is one too."""
    if unknown := set(schema) - _KEYWORDS:
        return [f"{path}: the test's validator does not know {sorted(unknown)}"]
    if "$ref" in schema:  # local references only: "#/$defs/name"
        return violations(doc, SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]], path)
    if "oneOf" in schema:
        found = [violations(doc, branch, path) for branch in schema["oneOf"]]
        if sum(not problems for problems in found) == 1:
            return []
        return [problem for problems in found for problem in problems] or [
            f"{path}: matches more than one of oneOf"
        ]
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(
            isinstance(doc, _TYPES[t])
            and not (t in {"number", "integer"} and isinstance(doc, bool))
            for t in types
        ):
            return [f"{path}: {doc!r} is not of type {types}"]
    problems = []
    if "const" in schema and doc != schema["const"]:
        problems.append(f"{path}: {doc!r} is not {schema['const']!r}")
    if "enum" in schema and doc not in schema["enum"]:
        problems.append(f"{path}: {doc!r} is not one of {schema['enum']}")
    if "minimum" in schema and isinstance(doc, int | float) and doc < schema["minimum"]:
        problems.append(f"{path}: {doc!r} is below {schema['minimum']}")
    if isinstance(doc, str):
        if len(doc) < schema.get("minLength", 0):
            problems.append(f"{path}: too short")
        if schema.get("format") == "uuid" and not is_uuid(doc):
            problems.append(f"{path}: {doc!r} is not a UUID")
        if schema.get("format") == "date-time" and not is_datetime(doc):
            problems.append(f"{path}: {doc!r} is not an RFC 3339 date-time")
    if isinstance(doc, dict):
        properties = schema.get("properties", {})
        problems += [
            f"{path}: {name} missing" for name in schema.get("required", []) if name not in doc
        ]
        if schema.get("additionalProperties") is False:
            problems += [f"{path}: {name} not allowed" for name in doc if name not in properties]
        for name, sub in properties.items():
            if name in doc:
                problems += violations(doc[name], sub, f"{path}.{name}")
    return problems


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def is_datetime(text: str) -> bool:
    try:
        return bool(_RFC3339.match(text)) and datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False
