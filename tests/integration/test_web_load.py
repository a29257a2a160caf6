"""`python -m bench.web_load` at a tiny size: it runs, every page gets every event,
and the figures it reports are sane."""

from __future__ import annotations

import pytest

from bench.web_load import parse_args, run


@pytest.mark.timeout(90)
def test_the_load_test_runs_at_a_tiny_size() -> None:
    # Given 40 jobs and 4 open pages, when the load test runs
    result = run(parse_args(["--jobs", "40", "--clients", "4", "--idle", "1", "--events", "3"]))
    # then every page loaded every row, and each event reached the last page in time
    assert result["rows_per_page"] == 40
    assert result["clients"] == 4 and result["events"] == 3
    assert 0 < result["latency_ms_median"] <= result["latency_ms_max"] < 1000
    assert 0 <= result["idle_cpu_percent"] < 50
