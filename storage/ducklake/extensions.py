"""DuckDB's `ducklake`, `postgres` and `httpfs` extensions from their PyPI wheels, with no network.

The wheels (`duckdb-extension-<name>==<duckdb's version>`) hold each extension's file under
`duckdb_extension_<name>/extensions/v<version>/`. DuckDB loads an extension only from its
extension directory once it is INSTALLed there (loading the postgres file straight from the
wheel's path fails), so tr50gw keeps a directory of its own (`cache_directory`: under
$XDG_CACHE_HOME, else ~/.cache), INSTALLs the files there from the wheels' paths when they are
not there yet (under a file lock: several gateways may start at once), and LOADs them.
Autoloading and autoinstalling stay off: nothing is ever fetched from DuckDB's extension
repository.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
from pathlib import Path
from typing import Final

import duckdb

__all__ = ["EXTENSIONS", "ExtensionMissing", "cache_directory", "extension_file", "load"]

EXTENSIONS: Final = ("ducklake", "postgres", "httpfs")
_LOADED_AS: Final = {"postgres": "postgres_scanner"}  # the name DuckDB lists it under


class ExtensionMissing(RuntimeError):
    """An extension's wheel is not installed (or is for another DuckDB)."""


def extension_file(name: str) -> Path:
    """The `.duckdb_extension` file of `name` in its wheel, for this DuckDB's version."""
    package = f"duckdb_extension_{name}"
    spec = importlib.util.find_spec(package)
    wheel = f"duckdb-extension-{name}=={duckdb.__version__}"
    if spec is None or not spec.submodule_search_locations:
        raise ExtensionMissing(f"DuckDB's {name} extension is not installed: pip install {wheel}")
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        found = sorted(p.parent.name for p in root.glob("extensions/*/*.duckdb_extension"))
        raise ExtensionMissing(
            f"{package} holds the {name} extension for {', '.join(found) or 'no version'},"
            f" not for DuckDB {duckdb.__version__}: pip install {wheel}"
        )
    return path


def cache_directory() -> Path:
    """Where tr50gw's DuckDB connections keep their extensions (`extension_directory`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tr50gw" / "duckdb-extensions"


def load(connection: duckdb.DuckDBPyConnection, names: tuple[str, ...] = EXTENSIONS) -> None:
    """INSTALL each extension from its wheel into the connection's extension directory (set
    when it was opened: `extension_directory`) unless it is there already, then LOAD it."""
    directory = Path(
        str(connection.execute("SELECT current_setting('extension_directory')").fetchone()[0])  # type: ignore[index]
    )
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".install-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        installed = {
            row[0]
            for row in connection.execute(
                "SELECT extension_name FROM duckdb_extensions() WHERE installed"
            ).fetchall()
        }
        for name in names:
            if _LOADED_AS.get(name, name) not in installed:
                path = str(extension_file(name)).replace("'", "''")
                connection.execute(f"INSTALL '{path}'")
    for name in names:
        connection.execute(f"LOAD {name}")
    loaded = {
        row[0]
        for row in connection.execute(
            "SELECT extension_name FROM duckdb_extensions() WHERE loaded"
        ).fetchall()
    }
    missing = [name for name in names if _LOADED_AS.get(name, name) not in loaded]
    if missing:
        raise ExtensionMissing(f"DuckDB did not load: {', '.join(missing)}")
