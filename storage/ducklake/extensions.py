"""DuckDB's `ducklake`, `postgres` and `httpfs` extensions from their PyPI wheels, with no network.

The wheels (`duckdb-extension-<name>==<duckdb's version>`) hold each extension's file under
`duckdb_extension_<name>/extensions/v<version>/`. DuckDB loads an extension only from its
extension directory once it is INSTALLed there (loading the postgres file straight from the
wheel's path fails), so each connection gets a private directory, the files are INSTALLed into
it from the wheels' paths, and then LOADed. Autoloading and autoinstalling stay off: nothing is
ever fetched from DuckDB's extension repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Final

import duckdb

__all__ = ["EXTENSIONS", "ExtensionMissing", "extension_file", "load"]

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


def load(connection: duckdb.DuckDBPyConnection, names: tuple[str, ...] = EXTENSIONS) -> None:
    """INSTALL each extension from its wheel into the connection's extension directory (set
    when it was opened: `extension_directory`), then LOAD it."""
    for name in names:
        path = str(extension_file(name)).replace("'", "''")
        connection.execute(f"INSTALL '{path}'")
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
