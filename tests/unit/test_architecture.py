"""The core stays pure (STYLE.md): no clock, no files, no threads, no logging, no
Prometheus; just the standard library, numpy and other core modules. Checked with `ast`,
so an import hidden inside a function counts too."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import monitor

PACKAGE = Path(monitor.__file__).parent
CORE = ("parse", "join", "window", "reference", "divergence", "stats", "aggregate")
# decode.py is parse's fast path (part of the parse stage); msgspec and simdjson are its
# declared, measured dependencies and may be used there only.
THIRD_PARTY = {"numpy": set(CORE) | {"decode"}, "msgspec": {"decode"}, "simdjson": {"decode"}}
FORBIDDEN = {"os", "time", "threading", "logging", "socket", "prometheus_client", "subprocess",
             "signal", "asyncio", "multiprocessing", "watchdog"}
# What core modules may import from the package: each other, and config/errors (frozen
# values and exception types). config.py itself reads files, but only when asked.
PACKAGE_ALLOWED = {*CORE, "decode", "config", "errors"}


def imports_in(source: str) -> list[tuple[str, int]]:
    """Every module imported anywhere in `source` (package-relative ones as monitor.x),
    with its line number. `from monitor import divergence` counts as monitor.divergence."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "monitor" + (f".{node.module}" if node.module else "") if node.level else node.module
            if module == "monitor":
                found += [(f"monitor.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((module or "", node.lineno))
    return found


def imports_of(module: str) -> list[tuple[str, int]]:
    return imports_in((PACKAGE / f"{module}.py").read_text())


@pytest.mark.parametrize("module", [*CORE, "decode"])
def test_core_module_imports_only_stdlib_numpy_and_the_core(module):
    wrong = []
    for name, lineno in imports_of(module):
        top = name.split(".")[0]
        if top in FORBIDDEN:
            wrong.append(f"{module}.py:{lineno}: {name} (I/O, clock, threads or logging in the core)")
        elif top == "monitor":
            inner = name.split(".")[1] if "." in name else ""
            if inner not in PACKAGE_ALLOWED:
                wrong.append(f"{module}.py:{lineno}: {name} (a shell module)")
        elif top in THIRD_PARTY:
            if module not in THIRD_PARTY[top]:
                wrong.append(f"{module}.py:{lineno}: {name}")
        elif top not in sys.stdlib_module_names:
            wrong.append(f"{module}.py:{lineno}: {name} (not stdlib, not numpy)")
    assert wrong == []


def test_the_checker_sees_through_function_level_and_package_imports():
    source = ("from monitor import divergence, daemon\n"
              "def f():\n    import time\n    from . import http\n    from .export import x\n")
    assert imports_in(source) == [("monitor.divergence", 1), ("monitor.daemon", 1), ("time", 3),
                                  ("monitor.http", 4), ("monitor.export", 5)]
