"""`make fuzz` in small, so `make test` runs it: the fuzzer's own loop over 2,000 payloads
(grammar envelopes, mutations, deep nesting, huge numbers, bad UTF-8...) through the codec and the
full dispatcher must find nothing, and every payload's usage records must be stored."""

from __future__ import annotations

from devtools import fuzz

CASES = 2_000
SEED = 20_240_301


def test_two_thousand_fuzz_cases_find_nothing() -> None:
    lines: list[str] = []
    report = fuzz.run(CASES, SEED, out=lines.append)
    transcript = "\n".join(lines)
    assert report.cases == CASES
    assert report.findings == [], transcript
    assert report.stored_records == report.submitted_records == report.expected_records, transcript
    assert report.expected_records >= CASES  # every payload is at least one record
    # The run reached past the codec: sessions were used, params validated, commands unknown.
    assert {-90001, -90002, -90005, -90010, -90011} <= set(report.codes), transcript
    assert report.ok
