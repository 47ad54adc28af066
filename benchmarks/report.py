"""RESULTS.md and the chart, from a :class:`~benchmarks.runner.Results`."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import paced
from .contenders import BY_NAME as CONTENDERS
from .contenders import CONTENDERS as ORDER
from .runner import Results
from .scenarios import BY_NAME as SCENARIOS
from .scenarios import FULL

HIGHER, LOWER = "higher", "lower"
FLAT_KB = 256.0
"""RSS growth over the second half of the non-reading window that still counts as flat."""

ANALYSIS = Path(__file__).with_name("ANALYSIS.md")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str
    digits: int = 0


def metrics(scenario: str, results: Results) -> list[Metric]:
    """The columns of one scenario's table, its headline figure first."""
    if scenario == "batch":
        return [
            Metric("requests_s", "requests/s", HIGHER),
            Metric("p50_ms", "p50 ms", LOWER, 2),
            Metric("p99_ms", "p99 ms", LOWER, 2),
        ]
    if scenario == "paced_cpu":
        return [
            Metric("cpu_us_per_event", "server CPU µs per event", LOWER, 1),
            Metric("streams_per_core", "streams a core's CPU time covers", HIGHER),
            Metric("p50_ms", "lateness p50 ms", LOWER, 1),
            Metric("p99_ms", "lateness p99 ms", LOWER, 1),
            Metric("max_ms", "lateness max ms", LOWER, 1),
            Metric("events", "events delivered", HIGHER),
            Metric("server_busy", "server core busy", LOWER, 2),
            Metric("server_waited", "server waited for its core", LOWER, 3),
            Metric("client_busy", "client core busy", LOWER, 2),
        ]
    if scenario == "paced_capacity":
        return [
            Metric("streams", "streams sustained", HIGHER),
            Metric("events_s", "events/s there", HIGHER),
            Metric("p99_ms", "lateness p99 ms there", LOWER, 1),
            Metric("cpu_us_per_event", "server CPU µs per event there", LOWER, 1),
            Metric("server_busy", "server core busy there", LOWER, 2),
            Metric("failed_streams", "fewest streams that failed", HIGHER),
            Metric("failed_p99_ms", "its lateness p99 ms", LOWER, 1),
            Metric("failed_waited", "server waited for its core there", LOWER, 3),
            Metric("client_busy", "client core busy, most", LOWER, 2),
            Metric("trials", "trials", LOWER),
        ]
    if scenario == "streams":
        return [
            Metric("events_s", "events/s", HIGHER),
            Metric("streams_s", "streams/s", HIGHER),
            Metric("p50_ms", "p50 ms (whole stream)", LOWER, 2),
            Metric("p99_ms", "p99 ms", LOWER, 2),
        ]
    if scenario == "long_stream":
        return [Metric("events_s", "events/s", HIGHER), Metric("events", "events read", HIGHER)]
    if scenario == "first_event":
        return [Metric("p50_ms", "p50 ms", LOWER, 3), Metric("p99_ms", "p99 ms", LOWER, 3)]
    if scenario == "idle_memory":
        counts = sorted(
            {
                int(key.rsplit("_", 1)[1])
                for runs in results.figures.get(scenario, {}).values()
                for run in runs
                for key in run
                if key.startswith("kb_per_stream_")
            }
        )
        return [
            *(
                Metric(f"kb_per_stream_{n}", f"KB per stream at {n:,}", LOWER, 1)
                for n in counts[::-1]
            ),
            Metric("base_rss_mb", "RSS before, MB", LOWER, 1),
        ]
    if scenario == "non_reading":
        return [
            Metric("late_growth_kb", "RSS growth, 2nd half, KB", LOWER),
            Metric("growth_kb", "largest RSS growth, KB", LOWER),
        ]
    if scenario == "disconnect":
        return [
            Metric("send_only_ms", "send-only producer, ms", LOWER, 2),
            Metric("paced_ms", "paced producer, ms", LOWER, 2),
        ]
    if scenario == "llm":
        return [
            Metric("tokens_s", "tokens/s", HIGHER),
            Metric("p50_ms", "p50 ms (whole stream)", LOWER),
            Metric("p99_ms", "p99 ms", LOWER),
        ]
    raise KeyError(scenario)


def median(results: Results, scenario: str, contender: str, key: str) -> float | None:
    """The median of ``key`` over the runs (``None`` if no run has a value)."""
    values = [
        value
        for run in results.figures.get(scenario, {}).get(contender, [])
        if (value := run.get(key)) is not None
    ]
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None, better: str) -> float | None:
    """How many times better ``a`` is than ``b`` (> 1: better)."""
    if a is None or b is None or a <= 0 or b <= 0:
        return None
    return a / b if better == HIGHER else b / a


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


# -- tables -------------------------------------------------------------------------------


def scenario_table(results: Results, scenario: str) -> list[str]:
    columns = metrics(scenario, results)
    head = columns[0]
    present = [c for c in ORDER if c.name in results.figures.get(scenario, {})]
    lines = [
        "| contender | "
        + " | ".join(m.label for m in columns)
        + f" | runs | vs raw ({head.label}) | asgistream's advantage |",
        "|---" * (len(columns) + 4) + "|",
    ]
    raw = median(results, scenario, "raw", head.key)
    ours = median(results, scenario, "asgistream", head.key)
    for contender in present:
        runs = results.figures[scenario][contender.name]
        cells = []
        for metric in columns:
            cell = _number(median(results, scenario, contender.name, metric.key), metric.digits)
            if scenario == "disconnect":
                cell = _disconnect_cell(runs, metric.key.removesuffix("_ms"), cell)
            cells.append(cell)
        value = median(results, scenario, contender.name, head.key)
        name = f"**{contender.label}**" if contender.name == "asgistream" else contender.label
        advantage = (
            "" if contender.name == "asgistream" else _times(ratio(ours, value, head.better))
        )
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {len(runs)} | {_times(ratio(value, raw, head.better))} | {advantage} |"
        )
    for failed, error in results.failures.get(scenario, {}).items():
        lines.append(f"| {CONTENDERS[failed].label} | failed: {error[:120]} |")
    return lines


def _disconnect_cell(runs: list[dict[str, Any]], name: str, cell: str) -> str:
    run = runs[-1]
    trials = int(run.get(f"{name}_trials") or 0)
    stopped = round((run.get(f"{name}_stopped") or 0) * trials)
    capped = round((run.get(f"{name}_capped") or 0) * trials)
    if stopped == trials:
        return f"{cell} ({trials} trials)"
    if capped:
        return f"not stopped: ran to its cap ({stopped}/{trials} stopped)"
    return f"`finally` never ran ({stopped}/{trials} stopped)"


def micro_tables(results: Results) -> list[str]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for bench in results.micro:
        groups.setdefault(bench["group"], []).append(bench)
    lines: list[str] = []
    for group, benches in groups.items():
        benches.sort(key=lambda b: b["median"])
        ours = next((b["median"] for b in benches if "asgistream" in b["name"]), None)
        lines += [
            f"**{group}**",
            "",
            "| benchmark | median | ÷ asgistream |",
            "|---|---|---|",
        ]
        for bench in benches:
            share = "" if ours is None else f"{bench['median'] / ours:.2f}x"
            doc = " ".join(bench["doc"].split())
            lines.append(f"| `{bench['name']}`: {doc} | {_duration(bench['median'])} | {share} |")
        lines.append("")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e3:.2f} ms"


# -- targets ------------------------------------------------------------------------------


def targets(results: Results) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for every target of the issue."""
    rows: list[tuple[str, str, bool | None]] = []
    rows += fanout_targets(results)

    def versus(scenario: str, key: str, other: str, wanted: float, label: str) -> None:
        ours = median(results, scenario, "asgistream", key)
        theirs = median(results, scenario, other, key)
        value = ratio(ours, theirs, HIGHER)
        met = None if value is None else value >= wanted
        rows.append((f"{label} >= {wanted:g}x {CONTENDERS[other].label}", _times(value), met))

    def costs(scenario: str, key: str, other: str, wanted: float, label: str) -> None:
        ours = median(results, scenario, "asgistream", key)
        theirs = median(results, scenario, other, key)
        value = ratio(ours, theirs, HIGHER)  # ours as a multiple of theirs
        met = None if value is None else value <= wanted
        rows.append((f"{label} <= {wanted:g}x {CONTENDERS[other].label}'s", _times(value), met))

    costs("paced_cpu", "cpu_us_per_event", "raw", 1.1, "paced streams, server CPU per event:")
    costs("paced_cpu", "cpu_us_per_event", "fastapi-orjson", 0.8, "paced streams, CPU per event:")
    for other in ("raw", "fastapi-orjson"):
        value = ratio(
            median(results, "paced_capacity", "asgistream", "streams"),
            median(results, "paced_capacity", other, "streams"),
            HIGHER,
        )
        rows.append(
            (
                f"paced streams sustained at p99 lateness <= {paced.LATE_MS:g} ms, "
                f"vs {CONTENDERS[other].label} (no target)",
                _times(value),
                None,
            )
        )
    versus("streams", "events_s", "raw", 1.5, "100-event streams, events/s:")
    versus("streams", "events_s", "fastapi-orjson", 1.5, "100-event streams:")
    versus("streams", "events_s", "fastapi", 1.5, "100-event streams:")
    versus("streams", "events_s", "sse-starlette", 3, "100-event streams:")
    versus("streams", "events_s", "fastapi-sse", 10, "100-event streams:")
    versus("long_stream", "events_s", "raw", 1.5, "one long stream, events/s:")
    versus("batch", "requests_s", "raw", 0.9, "batch, requests/s:")
    versus("batch", "requests_s", "fastapi-orjson", 2, "batch:")
    versus("batch", "requests_s", "fastapi", 10, "batch:")
    value = ratio(
        median(results, "batch", "asgistream-event", "requests_s"),
        median(results, "batch", "asgistream", "requests_s"),
        HIGHER,
    )
    rows.append(
        (
            "batch, `Event` items: requests/s >= 1x plain dicts",
            _times(value),
            None if value is None else value >= 1,
        )
    )
    for metric in metrics("idle_memory", results)[:-1]:
        value = median(results, "idle_memory", "asgistream", metric.key)
        rows.append(
            (
                f"{metric.label} <= 12 KB",
                _number(value, 1) + " KB",
                None if value is None else value <= 12,
            )
        )
        raw = median(results, "idle_memory", "raw", metric.key)
        times_raw = ratio(value, raw, HIGHER)
        rows.append(
            (
                f"{metric.label} <= 1.15x raw ASGI's ({_number(raw, 1)} KB)",
                _times(times_raw),
                None if times_raw is None else times_raw <= 1.15,
            )
        )
    late = median(results, "non_reading", "asgistream", "late_growth_kb")
    rows.append(
        (
            f"flat RSS under a non-reading client (<= {FLAT_KB:g} KB growth in the 2nd half)",
            _number(late) + " KB",
            None if late is None else late <= FLAT_KB,
        )
    )
    for name, label in (("send_only", "send-only"), ("paced", "paced")):
        value = median(results, "disconnect", "asgistream", f"{name}_ms")
        stopped = median(results, "disconnect", "asgistream", f"{name}_stopped")
        met = None if stopped is None else stopped == 1 and value is not None and value <= 1
        rows.append(
            (
                f"disconnect to `finally`, {label} producer, median <= 1 ms",
                _number(value, 2) + " ms",
                met,
            )
        )
    return rows


# -- fan-out across processes ------------------------------------------------------------

FANOUT_P99_MS = 50.0
FANOUT_CPU_RATIO = 0.5

_FANOUT_SETUPS = {
    "memory": "in-memory broker, one process",
    "redis": "Redis (`RedisFanout`), {processes} processes",
}

_FANOUT_COLUMNS = (
    Metric("deliveries_s", "deliveries/s", HIGHER),
    Metric("p50_ms", "p50 ms", LOWER, 1),
    Metric("p99_ms", "p99 ms", LOWER, 1),
    Metric("max_ms", "max ms", LOWER, 1),
    Metric("lost", "lost", LOWER),
    Metric("cpu_us_per_delivery", "server CPU µs per delivery", LOWER, 1),
    Metric("deliveries_per_cpu_s", "deliveries per server CPU-second", HIGHER),
)


def fanout_targets(results: Results) -> list[tuple[str, str, bool | None]]:
    """The fan-out targets of the scale-out issue (none if it did not run)."""
    redis = results.fanout.get("redis")
    memory = results.fanout.get("memory")
    if redis is None:
        return []
    p99 = redis.get("p99_ms")
    subscribers = int(redis.get("subscribers") or 0)
    per_cpu = ratio(
        redis.get("deliveries_per_cpu_s"), (memory or {}).get("deliveries_per_cpu_s"), HIGHER
    )
    return [
        (
            f"fan-out on Redis, {subscribers:,} subscribers: p99 <= {FANOUT_P99_MS:g} ms",
            _number(p99, 1) + " ms",
            None if p99 is None else p99 <= FANOUT_P99_MS,
        ),
        (
            f"fan-out on Redis: deliveries per server CPU-second >= {FANOUT_CPU_RATIO:g}x "
            "the in-memory broker's",
            _times(per_cpu),
            None if per_cpu is None else per_cpu >= FANOUT_CPU_RATIO,
        ),
    ]


def fanout_section(results: Results) -> list[str]:
    """The fan-out benchmark's table and notes (nothing if it did not run)."""
    failure = results.failures.get("fanout", {}).get("fanout")
    if not results.fanout and failure is None:
        return []
    run = results.fanout_run
    lines = [
        "## Fan-out across processes on Redis",
        "",
        f"Measured by: `benchmarks/fanout.py`, run of {run.get('date', '?')}. "
        f"{run.get('subscribers', 0):,} SSE subscribers of `benchmarks/apps/fanout_app.py` "
        "(the demo's `/broadcast`: a `Broker` with a 100-item queue per subscriber, "
        "`drop_oldest`), split evenly over the servers; a publisher posts "
        f"{run.get('rate', 0):g} times a second for {run.get('seconds', 0):g} s, alternating "
        "between the servers. Payloads carry `time.monotonic()` from just before the publish "
        "request; latency is publish request to the subscriber's read. The servers are pinned "
        "to core 0 (redis-server too, started by the harness on a free port), the client to "
        "core 1. Server CPU is user + system time of the app processes from `/proc`, over the "
        "publishing window and the drain; redis-server's is shown apart.",
        "",
        "| setup | " + " | ".join(m.label for m in _FANOUT_COLUMNS) + " | redis-server CPU s |",
        "|---" * (len(_FANOUT_COLUMNS) + 2) + "|",
    ]
    for setup, label in _FANOUT_SETUPS.items():
        figures = results.fanout.get(setup)
        if figures is None:
            continue
        cells = [_number(figures.get(m.key), m.digits) for m in _FANOUT_COLUMNS]
        redis_cpu = figures.get("redis_cpu_s")
        processes = int(figures.get("processes") or 0)
        lines.append(
            f"| {label.format(processes=processes)} | "
            + " | ".join(cells)
            + f" | {'-' if redis_cpu is None else f'{redis_cpu:.2f}'} |"
        )
    if failure is not None:
        lines.append(f"| failed: {failure[:200]} |")
    lines.append("")
    return lines


# -- the document -------------------------------------------------------------------------

_NOTES = {
    "batch": "wrk, {connections} connections, {wrk_seconds} s per run; `Accept: application/json`.",
    "paced_cpu": "the paced client (`benchmarks/paced.py`: one process, pinned to the client "
    "core, an asyncio `Protocol` per connection on uvloop); {paced_streams} streams opened "
    "evenly over {paced_ramp:g} s, each {paced_events} events due every {paced_delay:g} s "
    "from its request (every contender runs the same producer, `common.paced`, which sleeps "
    "until each item's due time); server CPU time (all threads, `/proc/<pid>/task/*/schedstat`) "
    "from the first connection to the last stream's end, divided by the events delivered. "
    "Lateness: an event's arrival minus its due time, on one clock (`time.monotonic()`). "
    "Core busy: CPU time over the window's wall time; waited for its core: time the server "
    "was ready to run while another process had its core (`schedstat`), over the wall time: "
    "noise from the rest of the machine, 0 on a quiet one. Streams a core's CPU time covers: "
    "{paced_delay:g} s ÷ CPU per event at this load (a rough reference for the capacity, not "
    "a bound: the cost per event falls as the load grows and the event loop does more per "
    "turn).",
    "paced_capacity": "the same client and producer; trials of N streams of "
    "{capacity_events} events every {paced_delay:g} s, opened over {paced_ramp:g} s (all N "
    "at once for the {capacity_steady:g} s between the last opening and the first end); a trial "
    "passes when every event came and p99 lateness is at most {late_ms:g} ms. N doubles from "
    "{capacity_start} until a trial fails (halves if the first fails), then bisects to within "
    "10%; at most {capacity_trials} loads and {capacity_budget:g} s per contender, once per "
    "run. A run that fails while the server waited for its core more than {disturbed:.0%} of "
    "the time is run again (at most three runs per load); the load passes if any run does. A "
    "client core busy near 1 would make the figure a floor (the client, not the server, the "
    "limit).",
    "streams": "wrk, {connections} connections, {wrk_seconds} s per run; each response is a "
    "complete 100-event stream (`Accept: text/event-stream`); events/s = streams/s x 100.",
    "long_stream": "asyncio client (uvloop), one connection reading a {long_events:,}-event "
    "stream as fast as it can; a producer still running after {long_cap:g} s stops, and the "
    "rate is of what it sent by then.",
    "first_event": "asyncio client, {first_event_requests} sequential fresh connections to a "
    "stream whose first event is ready at once; from connect to the end of the first event.",
    "idle_memory": "asyncio client; a fresh server; streams that send one event and then "
    "nothing; RSS growth over the RSS before divided by the number of open streams "
    "(KB = 1000 bytes).",
    "non_reading": "asyncio client; a fresh server; one client opens an endless stream and reads "
    "nothing for {non_reading_seconds:g} s while the server's RSS is sampled.",
    "disconnect": "asyncio client; the client closes after 3 events; the producer writes "
    "`time.monotonic()` (one clock for all processes) in its `finally`. Send-only: a producer "
    "that never awaits anything itself; paced: one that sleeps 10 ms per item. Up to "
    "{disconnect_trials} trials; a producer not stopped runs to its {disconnect_cap:g} s cap.",
    "llm": "wrk, {llm_connections} connections, {llm_seconds} s per run; each stream is "
    "{llm_tokens} tokens, one every {llm_delay:g} s (ideal stream time "
    "{llm_ideal:g} ms), then `[DONE]`.",
}


def render(results: Results) -> str:
    size = {**asdict(FULL), **results.size}  # the defaults: what an older results.json lacks
    env = results.environment
    format_args = {
        **size,
        "llm_ideal": size["llm_tokens"] * size["llm_delay"] * 1000,
        "late_ms": paced.LATE_MS,
        "disturbed": paced.DISTURBED,
        "capacity_steady": size["capacity_events"] * size["paced_delay"] - size["paced_ramp"],
    }
    out = [
        "# Benchmarks: asgistream against FastAPI, Starlette and a raw ASGI app",
        "",
        "Generated by `make bench` (`.venv/bin/python -m benchmarks`); do not edit by hand "
        "(the analysis comes from `benchmarks/ANALYSIS.md`). "
        f"Run of {env.get('date', '?')}, {results.seconds / 60:.1f} minutes.",
        "",
        "Every figure is the median over the runs; **ratios are what to quote**: the machine "
        "is small and shared, absolute numbers move from run to run.",
        "",
        "![chart](results.png)",
        "",
        "## Setup",
        "",
        f"- Machine: {env.get('machine', '?')}.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()) + ".",
        f"- Server, one per contender, pinned to core 0: `{env.get('server_command', '?')}`.",
        f"- Load generators pinned to core {env.get('client_cpu', 1)}: wrk for request rates, "
        f"e.g. `{env.get('wrk_command', '?')}` (the Lua script prints the summary as JSON); "
        "a small asyncio socket client (`benchmarks/client.py`, uvloop) where wrk cannot "
        "express the scenario. Loopback only. Open-files limit raised to "
        f"{env.get('open_files', '?')}.",
        f"- Runs per scenario: {size['runs']} (memory: {size['memory_runs']}), interleaved "
        "across contenders.",
        "- Contenders (`benchmarks/apps/`), all serving the same items from the same async "
        "generators (`benchmarks/apps/common.py`):",
    ]
    for contender in ORDER:
        module = contender.module.rsplit(".", 1)[1]
        out.append(f"  - {contender.label}: `{module}.py`")
    out += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for target, measured, met in targets(results):
        out.append(
            f"| {target} | {measured} | {'-' if met is None else 'yes' if met else '**no**'} |"
        )
    out += ["", "## Scenarios", ""]
    for name, scenario in SCENARIOS.items():
        if name not in results.figures and name not in results.failures:
            continue
        out += [
            f"### {scenario.title}",
            "",
            f"Measured by: {_NOTES[name].format(**format_args)}",
            "",
        ]
        out += scenario_table(results, name)
        out.append("")
    out += fanout_section(results)
    if results.logged_errors:
        out += [
            "Errors the servers logged during the whole run (tracebacks count once): "
            + ", ".join(f"{CONTENDERS[k].label} {v}" for k, v in results.logged_errors.items())
            + ".",
            "",
        ]
    if results.micro:
        out += ["## Micro-benchmarks (pytest-benchmark, medians)", ""]
        out += micro_tables(results)
    if results.profiles:
        out += ["## Profiles of asgistream (py-spy, share of samples)", ""]
        for label, profile in results.profiles.items():
            out += [f"**{label}**", "", "| on top of the stack (self) | share |", "|---|---|"]
            out += [f"| `{n}` | {s:.1%} |" for n, s in profile["self"]]
            out += ["", "| asgistream function (inclusive) | share |", "|---|---|"]
            out += [f"| `{n}` | {s:.1%} |" for n, s in profile["inclusive"]]
            out.append("")
    if ANALYSIS.exists():
        out += [ANALYSIS.read_text().strip(), ""]
    return "\n".join(out)


# -- the chart ----------------------------------------------------------------------------

_CHART = (
    ("paced_cpu", "cpu_us_per_event", "Paced streams: server CPU µs per event (lower is better)"),
    (
        "paced_capacity",
        "streams",
        f"Paced streams sustained at p99 lateness <= {paced.LATE_MS:g} ms",
    ),
    ("batch", "requests_s", "Batch: requests/s"),
    ("streams", "events_s", "100-event streams: events/s"),
    ("long_stream", "events_s", "One long stream: events/s"),
    ("llm", "tokens_s", "LLM-like streams: tokens/s"),
    ("idle_memory", None, "RSS per idle stream, KB (lower is better)"),
    ("first_event", "p50_ms", "Time to first event, p50 ms (lower is better)"),
)


def chart(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 4, figsize=(20, 7.5))
    for ax, (scenario, key, title) in zip(axes.flat, _CHART, strict=True):
        if key is None:
            key = metrics(scenario, results)[0].key
        names, values = [], []
        for contender in ORDER:
            value = median(results, scenario, contender.name, key)
            if value is not None:
                names.append(contender.name)
                values.append(value)
        colors = [
            "#d62728" if n.startswith("asgistream") else "#7f7f7f" if n == "raw" else "#1f77b4"
            for n in names
        ]
        ax.barh(names[::-1], values[::-1], color=colors[::-1])
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=8)
        for i, value in enumerate(values[::-1]):
            ax.text(value, i, f" {value:,.3g}", va="center", fontsize=7)
        ax.margins(x=0.2)
    figure.suptitle(
        "asgistream vs FastAPI, Starlette and a raw ASGI app (uvicorn, 1 worker, medians)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(results: Results, folder: Path) -> Path:
    """Write RESULTS.md, results.png and results.json into ``folder``; return RESULTS.md."""
    folder.mkdir(parents=True, exist_ok=True)
    results.save(folder / "results.json")
    chart(results, folder / "results.png")
    document = folder / "RESULTS.md"
    document.write_text(render(results) + "\n")
    return document
