"""What each entry point loads, checked in a fresh interpreter (import-linter checks the code)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
{imports}
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})))
"""


def loaded_by(imports: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("library", ["duckdb", "pyarrow", "storage", "commands"])
def test_tr50gw_call_loads_no_storage(library: str) -> None:
    modules = loaded_by("import gateway.cli, gateway.transports.client\ngateway.cli.build_parser()")
    assert library not in modules


@pytest.mark.parametrize("library", ["paho", "websockets", "aiohttp", "duckdb", "pyarrow"])
def test_the_core_and_the_commands_load_no_io_library(library: str) -> None:
    modules = loaded_by("import gateway.core.dispatcher, commands\ncommands.build_registry()")
    assert library not in modules
