"""The README's benchmark table, regenerated from the JSON lines the benchmarks print (issue 19's goals).

    python -m bench.report [--results bench/results/latest.jsonl] [--write | --check]

`bash scripts/dev.sh bench` writes every line of a full run to bench/results/latest.jsonl and then runs
`--write`, which replaces the block between the two markers in README.md. `--check` exits 1 when the README's
block is not what the committed lines give (tests/test_bench_report.py runs it, as the plans are checked).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "latest.jsonl"
README = REPO / "README.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def _n(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _met(flag: bool) -> str:
    return "**yes**" if flag else "no"


def _delay(r: dict) -> str:
    """How the run's commits were slowed to stand in for a replicated one (PostgreSQL's commit_delay)."""
    delay = r.get("commit_delay_us", 0)
    return f", every commit delayed {delay / 1000:g} ms (`BENCH_COMMIT_DELAY_US={delay}`)" if delay else ""


def _publisher(r: dict) -> list[str]:
    wait = "answer once committed (`--publish-wait 0`)" if r["publish_wait_seconds"] == "0" else \
        "answer after Kafka's ack (default)"
    bare = r["baseline_bare_endpoint"]
    rows = r["rows_by_status"]
    return [f"`publisher_load`, {r['connections']} connections, {wait}{_delay(r)}: ≥ 0.15× bare, p99 < 15 ms",
            f"{_n(r['requests_per_s'])} req/s, p50 {_n(r['p50_ms'], 1)} ms, p99 {_n(r['p99_ms'], 1)} ms, "
            f"{r['non_2xx']} non-2xx, rows {', '.join(f'{k} {v:,}' for k, v in sorted(rows.items()))}; "
            f"{r['cpu_ms_per_call']} ms of the publisher's CPU per call",
            f"bare endpoint {_n(bare['requests_per_s'])} req/s, {bare['cpu_ms_per_call']} ms per call",
            f"{r['ratio_to_bare']}×", _met(r["met"])]


def _writer(r: dict) -> list[str]:
    before, after = r["bound_before_and_after_per_s"]
    return [f"`writer_throughput`, {r['messages']:,} responses, batch {r['batch_size']}{_delay(r)}: ≥ 0.8× the bound",
            f"{_n(r['responses_per_s'])} responses/s (naive writer {_n(r['baseline_naive_per_s'])}/s)",
            f"`UPDATE … FROM unnest` alone {_n(r['bound_raw_update_per_s'])} rows/s "
            f"(before {_n(before)}, after {_n(after)})",
            f"{r['ratio_to_bound']}×", _met(r["met_ratio_to_bound"])]


def _cleanup(r: dict) -> list[str]:
    busy, quiet = r["publisher_during_cleanup"], r["baseline_publisher_without_cleanup"]
    goal = r["goal"]
    return [f"`cleanup_rate`, {r['rows']:,} expired rows, batch {r['batch_size']}, pace {_n(r['pace_rows_per_s'])}/s: "
            "publisher p99 ≤ 1.2×, throughput ≥ 0.9×, < 60 s",
            f"{r['seconds']} s ({_n(r['rows_per_s'])} rows/s); publisher during it {_n(busy['requests_per_s'])} "
            f"req/s, p99 {_n(busy['p99_ms'], 1)} ms",
            f"publisher without cleanup {_n(quiet['requests_per_s'])} req/s, p99 {_n(quiet['p99_ms'], 1)} ms",
            f"p99 {r['ratio_p99']}×, throughput {r['ratio_throughput']}×", _met(goal["met"])]


def _e2e(r: dict) -> list[str]:
    goal = r["goal"]
    parts, bounds = [], []
    for rate in r["rates"]:
        sent = sum(rate["codes"].values())  # vegeta's workers cap what it sends once answers queue
        parts.append(f"{rate['rate_per_s']:,}/s: p50 {_n(rate['p50_ms'], 1)}, p99 {_n(rate['p99_ms'], 1)}, "
                     f"max {_n(rate['max_ms'], 1)} ms ({sent:,} of {rate['calls']:,} calls sent, "
                     f"{rate['terminal']:,} answered)")
        bound = rate["bound_bare_round_trip"]
        bounds.append(f"{rate['rate_per_s']:,}/s: p99 {_n(bound['p99_ms'], 1)} ms")
    crossing, lowest = r["p99_crosses_100ms_at_rate"], r["rates"][0]["rate_per_s"]
    where = f"p99 over 100 ms already at the lowest rate tried, {lowest:,}/s" if crossing == lowest else \
        f"p99 crosses 100 ms between the rates tried, at {crossing:,}/s" if crossing else \
        "p99 under 100 ms at every rate tried"
    return [f"`e2e_latency`, {r['seconds_per_rate']} s per rate, action call → row `completed`: "
            f"p99 < {goal['p99_ms_below']} ms at {goal['at_rate']:,}/s",
            "; ".join(parts), "bare produce→consume round trip " + "; ".join(bounds),
            where, _met(goal["met"])]


def _growth(r: dict) -> list[str]:
    p, w = r["publisher"], r["writer"]
    return [f"{r['rows_in_table']:,} ({r['table_mb']:,} MB)",
            f"{_n(p['requests_per_s'])}, {_n(p['p99_ms'], 1)} ms ({p['ratio_to_bare']}×)",
            f"{_n(w['responses_per_s'])} ({_n(w['bound_raw_update_per_s'])}, {w['ratio_to_bound']}×)"]


def _growth_cleanup(r: dict) -> list[str]:
    return [f"{r['expired_rows']:,} beside {r['live_rows']:,}", _n(r["rows_per_s"]), str(r["seconds"]),
            f"{r['vs_first_size_rows_per_s']}×"]


def _parser(r: dict) -> list[str]:
    return [r["body"], f"{r['bytes']:,}", str(r["bounded_us"]), str(r["baseline_json_loads_us"]), str(r["ratio"])]


GOAL_ROWS: dict[str, Callable[[dict], list[str]]] = {
    "publisher": _publisher, "writer": _writer, "cleanup": _cleanup, "e2e_latency": _e2e}


def _goal(r: dict) -> list[str]:
    return GOAL_ROWS[r["bench"]](r)


# one table per entry, in this order: its header and the row each of its benchmark lines gives
TABLES: dict[tuple[str, ...], tuple[list[str], Callable[[dict], list[str]]]] = {
    tuple(GOAL_ROWS): (["bench and goal (issue 19)", "figure", "same-run baseline / bound", "ratio", "goal met"],
                       _goal),
    ("growth",): (["rows in the table (size)", "publisher req/s, p99 (× bare)", "writer responses/s (bound, ×)"],
                  _growth),
    ("growth-cleanup",): (["cleanup, unpaced: expired rows beside live ones", "rows/s", "seconds", "vs the first size"],
                          _growth_cleanup),
    ("bounded_json_cost",): (["body parsed with the limits (`bounded_json`)", "bytes", "µs", "`json.loads` µs", "×"],
                             _parser),
}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header), *(f"| {' | '.join(row)} |" for row in rows)]


def render(records: list[dict]) -> str:
    """The Markdown block: one row per goal, the growth figures, the JSON parsers' cost, the run's date and machine."""
    if not records:
        raise ValueError("no benchmark lines to render")
    unknown = sorted({str(r.get("bench")) for r in records} - {kind for kinds in TABLES for kind in kinds})
    if unknown:  # never dropped silently: a new benchmark needs its place in the table
        raise ValueError(f"no table row for benchmark lines of kind {', '.join(unknown)}")
    dates = sorted({r["date"] for r in records if "date" in r})
    machines = sorted({r["machine"] for r in records if "machine" in r})
    lines = [f"Regenerated by `python -m bench.report --write` from `bench/results/latest.jsonl` "
             f"(`bash scripts/dev.sh bench`, {', '.join(dates)}; {'; '.join(machines)})."]
    for kinds, (header, row) in TABLES.items():
        of_kinds = [row(r) for r in records if r["bench"] in kinds]
        if of_kinds:
            lines += ["", *_table(header, of_kinds)]
    return "\n".join(lines)


def read(path: Path) -> list[dict]:
    """Every JSON object line of a run; other lines (the benches' progress on stdout) are skipped."""
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def spliced(readme: str, block: str) -> str:
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.index(START) > readme.index(END):
        raise ValueError(f"README.md needs exactly one {START} … {END} block")
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=Path, default=RESULTS)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the README's block")
    mode.add_argument("--check", action="store_true", help="exit 1 when the README's block is stale")
    args = parser.parse_args()
    block = render(read(args.results))
    if not (args.write or args.check):
        print(block)
        return
    readme = README.read_text()
    updated = spliced(readme, block)
    if args.check:
        if updated != readme:
            print(f"README.md's benchmark table is not what {args.results} gives: python -m bench.report --write",
                  file=sys.stderr)
            sys.exit(1)
        return
    README.write_text(updated)


if __name__ == "__main__":
    main()
