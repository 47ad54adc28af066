"""Every benchmark scenario, against every contender, at a tiny size: none can rot.

These tests check that the harness measures something sane, never how fast anything is.
One module-scoped run of all scenarios (about 40 s) feeds the per-scenario checks.
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.contenders import CONTENDERS, Contender
from benchmarks.fanout import SETUPS, run_fanout
from benchmarks.profile import summarize
from benchmarks.runner import Results, run_scenarios
from benchmarks.scenarios import SCENARIOS, SMOKE, Figures, Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def results() -> Iterator[Results]:
    lines: list[str] = []
    yield run_scenarios(SMOKE, log=lines.append)


@pytest.fixture(scope="module")
def fanout() -> dict[str, Figures]:
    lines: list[str] = []
    return run_fanout(SMOKE, log=lines.append)


def _cases() -> list[tuple[Scenario, Contender]]:
    return [(s, c) for s in SCENARIOS for c in CONTENDERS if c.batch or not s.batch_only]


def _figures(results: Results, scenario: Scenario, contender: Contender) -> dict[str, float | None]:
    failure = results.failures.get(scenario.name, {}).get(contender.name)
    assert failure is None, failure
    runs = results.figures[scenario.name][contender.name]
    assert len(runs) == 1
    return runs[0]


def _number(figures: dict[str, float | None], key: str) -> float:
    value = figures[key]
    assert value is not None and math.isfinite(value), f"{key} = {value}"
    return value


@pytest.mark.parametrize(
    ("scenario", "contender"), _cases(), ids=[f"{s.name}-{c.name}" for s, c in _cases()]
)
def test_scenario_measures_sane_figures(
    results: Results, scenario: Scenario, contender: Contender
) -> None:
    figures = _figures(results, scenario, contender)
    name = scenario.name
    if name in ("batch", "streams", "llm"):
        assert figures["errors"] == 0
        assert 0 < _number(figures, "p50_ms") <= _number(figures, "p99_ms")
    if name == "batch":
        assert figures["items_per_response"] == 100
        assert _number(figures, "requests_s") > 0
    elif name == "streams":
        assert figures["events_per_response"] == 100
        assert _number(figures, "events_s") == pytest.approx(_number(figures, "streams_s") * 100)
    elif name == "llm":
        assert figures["events_per_response"] == SMOKE.llm_tokens + 1  # the tokens and [DONE]
        assert _number(figures, "tokens_s") > 0
    elif name == "long_stream":
        assert figures["events"] == SMOKE.long_events
        assert _number(figures, "events_s") > 0
    elif name == "first_event":
        assert 0 < _number(figures, "p50_ms") <= _number(figures, "p99_ms") < 10_000
    elif name == "idle_memory":
        assert 10 < _number(figures, "base_rss_mb") < 2000
        for count in SMOKE.idle_counts:
            assert abs(_number(figures, f"kb_per_stream_{count}")) < 10_000
    elif name == "non_reading":
        assert abs(_number(figures, "growth_kb")) < 100_000
        assert abs(_number(figures, "late_growth_kb")) < 100_000
    elif name == "disconnect":
        # Every contender watches for a disconnect while its producer sleeps.
        assert figures["paced_stopped"] == 1
        assert 0 <= _number(figures, "paced_ms") < 1000
        assert figures["send_only_trials"] == SMOKE.disconnect_trials
        if contender.name == "asgistream":
            assert figures["send_only_stopped"] == 1
            assert 0 <= _number(figures, "send_only_ms") < 1000
    else:
        pytest.fail(f"no checks for scenario {name}")


def test_fanout_measures_sane_figures(fanout: dict[str, Figures]) -> None:
    assert list(fanout) == list(SETUPS)
    for setup, figures in fanout.items():
        assert figures["processes"] == (1 if setup == "memory" else SMOKE.fanout_processes)
        assert figures["subscribers"] == SMOKE.fanout_subscribers
        # Every published event reached every subscriber, none dropped.
        assert figures["lost"] == 0 and figures["dropped_events"] == 0
        assert _number(figures, "deliveries_s") > 0
        assert 0 < _number(figures, "p50_ms") <= _number(figures, "p99_ms") < 10_000
        assert _number(figures, "server_cpu_s") >= 0
    assert fanout["memory"]["redis_cpu_s"] is None
    assert _number(fanout["redis"], "redis_cpu_s") >= 0


def test_report_and_chart_are_written(
    results: Results, fanout: dict[str, Figures], tmp_path: Path
) -> None:
    results.fanout = fanout
    results.fanout_run = {"date": "today", "subscribers": 20, "rate": 10, "seconds": 1}
    results.micro = [
        {"name": "test_sse_asgistream", "group": "SSE", "median": 8e-7, "doc": "ours"},
        {"name": "test_sse_raw", "group": "SSE", "median": 5e-7, "doc": "the floor"},
    ]
    results.profiles = {"streams": summarize("main (a.py:1);pump (asgistream/streaming.py:9) 3\n")}
    document = report.write(results, tmp_path)
    text = document.read_text()
    for contender in CONTENDERS:
        assert contender.label in text
    for scenario in SCENARIOS:
        assert f"### {scenario.title}" in text
    assert "## Targets" in text and "| `test_sse_raw`: the floor | 500 ns | 0.62x |" in text
    assert "## Fan-out across processes on Redis" in text
    assert "| in-memory broker, one process |" in text
    assert f"| Redis (`RedisFanout`), {SMOKE.fanout_processes} processes |" in text
    assert "fan-out on Redis, 20 subscribers: p99 <= 50 ms" in text
    png = (tmp_path / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 800 and height > 400
    assert Results.load(tmp_path / "results.json").figures == results.figures


def test_profile_summary_adds_up_a_functions_lines() -> None:
    collapsed = (
        "run (asyncio/runners.py:118);pump (asgistream/streaming.py:230) 6\n"
        "run (asyncio/runners.py:118);pump (asgistream/streaming.py:231) 2\n"
        "run (asyncio/runners.py:118);encode (asgistream/sse.py:70) 2\n"
    )
    summary = summarize(collapsed)
    assert summary["self"][0] == ("pump (asgistream/streaming.py)", 0.8)
    assert ("encode (asgistream/sse.py)", 0.2) in summary["inclusive"]


def test_micro_benchmarks_run_once_each() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "benchmarks/test_micro.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "--benchmark-disable",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    benchmarks = (ROOT / "benchmarks" / "test_micro.py").read_text().count("\ndef test_")
    assert f"{benchmarks} passed" in completed.stdout
