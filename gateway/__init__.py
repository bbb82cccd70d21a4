"""tr50gw: a Telit deviceWISE TR50 gateway with a DuckDB usage log."""

__version__ = "0.1.0"
