"""One direction for every import (README, Layout): parsed from the source, so it stays true.

The shared kernel (`vitals`) imports no stage and no tool; the front doors' machinery
(`frontdoor`) imports only the kernel; no stage imports another stage; the tools
(`vitalsctl`, `evaluation`, `bench`) sit on top and nothing at runtime imports them. Every
import counts, at the top of a module or inside a function.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What each top-level package may import of the project's packages (besides itself).
ALLOWED = {
    "vitals": set(),
    "frontdoor": {"vitals"},
    "ingest": {"vitals", "frontdoor"},
    "readapi": {"vitals", "frontdoor"},
    "processors": {"vitals"},
    "sinks": {"vitals"},
    # Tools on top: the evaluation runs the processor's engine on simulated populations.
    "evaluation": {"vitals", "processors"},
    "vitalsctl": {"vitals", "frontdoor", "ingest", "readapi", "processors", "sinks", "evaluation"},
    "bench": {
        "vitals", "frontdoor", "ingest", "readapi", "processors", "sinks", "vitalsctl",
        "evaluation",
    },
}  # fmt: skip
RUNTIME = ("vitals", "frontdoor", "ingest", "readapi", "processors", "sinks")


def imports_of(package: str) -> dict[str, set[str]]:
    """{module path: the project's top-level packages it imports}."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = (names & ALLOWED.keys()) - {package}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = {
        module: sorted(names - ALLOWED[package])
        for module, names in imports_of(package).items()
        if names - ALLOWED[package]
    }
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}: {wrong}"


def test_the_package_graph_has_no_cycle() -> None:
    graph = {
        package: set().union(*imports_of(package).values()) for package in ALLOWED
    }  # the imports as they are, not as allowed

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    cycles = [package for package in graph if reaches(package, package, set())]
    assert not cycles, graph


def test_nothing_at_runtime_imports_a_tool() -> None:
    tools = {"vitalsctl", "evaluation", "bench"}
    for package in RUNTIME:
        for module, names in imports_of(package).items():
            assert not names & tools, f"{module} imports {sorted(names & tools)}"


def test_every_package_of_the_tree_has_its_rule() -> None:
    # A new top-level package gets a line in ALLOWED (and in README's layout table).
    packages = {
        p.parent.name
        for p in ROOT.glob("*/__init__.py")
        if p.parent.name not in {"tests", "deploy", "docs"}
    }
    assert packages == set(ALLOWED)


def test_vitals_help_imports_no_stage_and_no_evaluation() -> None:
    # Every `vitals` command builds the whole parser: it must stay light.
    code = (
        "import sys\n"
        "from vitalsctl.cli import _parser\n"
        "_parser().format_help()\n"
        "print(sorted(sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(ast.literal_eval(done.stdout))
    stages = {m for m in loaded if m.split(".")[0] in {"ingest", "readapi", "processors", "sinks"}}
    # The simulator's patient model (evaluation.physiology) is plain Python; the evaluation
    # tools and what they need are not loaded.
    tools = loaded & {
        "evaluation.burden", "evaluation.population", "evaluation.rhythm_validation",
        "numpy", "scipy",
    }  # fmt: skip
    assert not stages | tools, sorted(stages | tools)


def test_tests_share_helpers_through_support_never_through_another_test_module() -> None:
    """A test module is collected, not imported: helpers live in tests/support/, fixtures
    in a conftest.py (README, Tests), so that moving or deleting a test breaks nothing."""
    wrong = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
                if (ROOT / node.module.replace(".", "/")).is_dir():  # modules of a package
                    names += [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.startswith("tests.") and name.split(".")[-1].startswith("test_"):
                    wrong.append(f"{path.relative_to(ROOT)}: {name}")
    assert wrong == []
