"""The web console's files (SPEC §7.1), served by the HTTP transport at `GET /` and
`GET /console/<name>`.

The console is our own HTML, CSS and JavaScript (`console/` in the checkout, no build step) plus
the front-end packages it uses, pinned in `package.json` / `package-lock.json` and installed by
`make node_modules` from the npm registry (uPlot, for its charts). Nothing comes from a CDN: the
console works with no internet. Files are read once, at start, and answered from memory with a
strong ETag (a revalidation is a 304) and gzip when the browser accepts it.

A package that is not installed is not an error at start: its file answers 404 and the console
says which `make` target installs it, where its charts would be.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CHECKOUT", "VENDOR", "Asset", "ConsoleAssets"]

logger = logging.getLogger("tr50gw.http")

CHECKOUT: Final = Path(__file__).resolve().parents[2]
"""The checkout the gateway runs from: `console/` and `node_modules/` are beside `gateway/`."""

VENDOR: Final = {
    "vendor/uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "vendor/uPlot.min.css": "uplot/dist/uPlot.min.css",
}
"""The console's name for a package file -> its path under `node_modules`."""

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


class ConsoleAssets:
    """The console's files by name (`index.html`, `console.js`, `vendor/uPlot.iife.min.js`...)."""

    def __init__(
        self, directory: Path = CHECKOUT / "console", packages: Path = CHECKOUT / "node_modules"
    ) -> None:
        self._assets: dict[str, Asset] = {}
        if directory.is_dir():
            for path in sorted(directory.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    self._assets[path.name] = _asset(path)
        else:
            logger.warning("console: %s not found, GET / answers 404", directory)
        missing = []
        for name, relative in VENDOR.items():
            if (packages / relative).is_file():
                self._assets[name] = _asset(packages / relative)
            else:
                missing.append(relative)
        if missing:
            logger.warning(
                "console: %s not installed (make node_modules): the console runs without charts",
                ", ".join(missing),
            )

    def get(self, name: str) -> Asset | None:
        return self._assets.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self._assets)


def _asset(path: Path) -> Asset:
    body = path.read_bytes()
    content_type = _TYPES.get(path.suffix) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    return Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
