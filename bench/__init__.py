"""Benchmarks for tr50gw (`make bench`): never part of `make test`."""
