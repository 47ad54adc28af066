"""``python -m benchmarks``: micro-benchmarks, every scenario, a profile, the fan-out across
processes on Redis, RESULTS.md and the chart. ``--size smoke`` runs everything tiny (seconds,
not minutes)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import report
from .contenders import ASGISTREAM, CONTENDERS
from .contenders import BY_NAME as CONTENDERS_BY_NAME
from .fanout import run_fanout
from .profile import profile, py_spy
from .runner import Results, environment, run_scenarios
from .scenarios import BY_NAME as SCENARIOS_BY_NAME
from .scenarios import FULL, SCENARIOS, SMOKE, Size, warm_up
from .server import CLIENT_CPU, ROOT, pinned, serve
from .wrk import run_wrk

HERE = Path(__file__).resolve().parent


def run_micro(*, quick: bool) -> list[dict[str, Any]]:
    """Run ``test_micro.py`` under pytest-benchmark; the median and docstring of each."""
    from . import test_micro

    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "micro.json"
        command = [
            sys.executable,
            "-m",
            "pytest",
            str(HERE / "test_micro.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            f"--benchmark-json={output}",
            f"--benchmark-max-time={0.05 if quick else 1.0}",
            f"--benchmark-min-rounds={3 if quick else 20}",
        ]
        subprocess.run(pinned(command, CLIENT_CPU), cwd=ROOT, check=True, timeout=600)
        data = json.loads(output.read_text())
    return [
        {
            "name": bench["name"],
            "group": bench["group"],
            "median": bench["stats"]["median"],
            "doc": (getattr(test_micro, bench["name"]).__doc__ or "").split("\n\n")[0].strip(),
        }
        for bench in data["benchmarks"]
    ]


def run_profiles(size: Size, seconds: int) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """Profile asgistream's server under the streams and the batch load."""
    profiles = {}
    loads = (
        ("100-event streams", "/items?n=100", "text/event-stream"),
        ("batch", "/items", "application/json"),
    )
    for label, path, accept in loads:
        with serve(ASGISTREAM.app) as server:
            warm_up(server, size, batch=True)

            def load(path: str = path, accept: str = accept) -> None:
                run_wrk(
                    server.url + path,
                    connections=size.connections,
                    seconds=seconds + 1,
                    accept=accept,
                )

            profiles[label] = profile(server, load, seconds)
    return profiles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--size", choices=("full", "smoke"), default="full")
    parser.add_argument("--contenders", help="comma-separated names (default: all)")
    parser.add_argument(
        "--scenarios", help="comma-separated names, `fanout` among them (default: all)"
    )
    parser.add_argument(
        "--no-fanout", action="store_true", help="skip the fan-out benchmark (needs redis-server)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the output's results.json figures of what this run does not measure",
    )
    parser.add_argument("--no-micro", action="store_true", help="skip the micro-benchmarks")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--output", type=Path, default=HERE, help="folder for RESULTS.md")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rewrite RESULTS.md and the chart from the output's results.json",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        print(report.write(Results.load(args.output / "results.json"), args.output))
        return 0

    size = FULL if args.size == "full" else SMOKE
    contenders = (
        [CONTENDERS_BY_NAME[n] for n in args.contenders.split(",")]
        if args.contenders
        else CONTENDERS
    )
    names = args.scenarios.split(",") if args.scenarios else None
    scenarios = (
        [SCENARIOS_BY_NAME[n] for n in names if n != "fanout"] if names is not None else SCENARIOS
    )
    fanout = not args.no_fanout and (names is None or "fanout" in names)
    started = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)

    # The harness's own client work (the asyncio client) runs on the client core.
    if CLIENT_CPU in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {CLIENT_CPU})
    results = Results(size={**size.__dict__})
    results.environment = environment()
    if not args.no_micro:
        log("micro-benchmarks")
        results.micro = run_micro(quick=args.size == "smoke")
    if scenarios:
        log("scenarios")
        run_scenarios(size, contenders=contenders, scenarios=scenarios, log=log, results=results)
    if fanout:
        log("fan-out across processes on Redis")
        try:
            results.fanout = run_fanout(size, log=log)
        except Exception as exc:
            results.fail("fanout", "fanout", exc)
            log(f"fanout FAILED {exc}")
        results.fanout_run = {
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "subscribers": size.fanout_subscribers,
            "rate": size.fanout_rate,
            "seconds": size.fanout_seconds,
            "processes": size.fanout_processes,
        }
    if not args.no_profile and py_spy() is not None:
        log("profiling asgistream")
        results.profiles = run_profiles(size, seconds=2 if args.size == "smoke" else 5)
    results.seconds = time.monotonic() - started
    if args.merge and (args.output / "results.json").exists():
        results = results.merged_into(Results.load(args.output / "results.json"))
    document = report.write(results, args.output)
    log(f"wrote {document}")
    failed = sum(len(v) for v in results.failures.values())
    if failed:
        log(f"{failed} measurements failed; see RESULTS.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
