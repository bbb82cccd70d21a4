"""All DuckDB access of tr50gw lives in this package, so the backend can change in one place."""
