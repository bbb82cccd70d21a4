"""Storage back-ends implementing `gateway.core.ports`: `storage.duckdb` (one file)."""
