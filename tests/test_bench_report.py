"""The README's benchmark table is what the committed benchmark lines give, and it says "met" only when they do."""

from __future__ import annotations

import json

import pytest

from bench import report


def writer_line(responses: int, bound: int, met: bool) -> dict:
    return {"date": "2026-12-03", "machine": "x86_64 2 cores, Python 3.11.7", "bench": "writer", "messages": 100000,
            "batch_size": 1000, "responses_per_s": responses, "baseline_naive_per_s": 500,
            "bound_raw_update_per_s": bound, "bound_before_and_after_per_s": [bound, bound],
            "ratio_to_bound": round(responses / bound, 2), "met_ratio_to_bound": met}


def test_the_readme_table_is_regenerated_from_the_committed_lines():
    readme = report.README.read_text()
    assert report.spliced(readme, report.render(report.read(report.RESULTS))) == readme, \
        "README.md's benchmark table is stale: python -m bench.report --write"


def test_every_goal_of_issue_19_has_a_row_in_the_committed_run():
    run = report.read(report.RESULTS)
    assert {"writer", "publisher", "cleanup", "e2e_latency", "growth", "growth-cleanup"} <= {r["bench"] for r in run}
    assert {r["publish_wait_seconds"] for r in run if r["bench"] == "publisher"} == {"default", "0"}
    # the figures a commit's latency moves, also with a replicated commit's stand-in (issue 19's rules)
    assert {r["bench"] for r in run if r.get("commit_delay_us")} == {"writer", "publisher"}


def test_a_run_with_a_commit_delay_says_so_in_its_row():
    delayed = writer_line(9_000, 20_000, False) | {"commit_delay_us": 5000}
    [plain, slowed] = [line for line in report.render([writer_line(9_000, 20_000, False), delayed]).splitlines()
                       if line.startswith("| `writer_throughput`")]
    assert "commit delayed" not in plain
    assert "every commit delayed 5 ms (`BENCH_COMMIT_DELAY_US=5000`)" in slowed


@pytest.mark.parametrize(("responses", "met", "shown"), [(20_000, True, "| 0.8× | **yes** |"),
                                                         (12_000, False, "| 0.48× | no |")])
def test_a_goal_reads_met_only_when_its_bench_said_so(responses, met, shown):
    table = report.render([writer_line(responses, 25_000, met)])
    [row] = [line for line in table.splitlines() if line.startswith("| `writer_throughput`")]
    assert row.endswith(shown)
    assert f"{responses:,} responses/s" in row and "25,000 rows/s" in row


def test_progress_lines_are_skipped_and_a_readme_without_its_block_is_refused(tmp_path):
    lines = tmp_path / "run.jsonl"
    lines.write_text("==> bench/writer_throughput\n" + json.dumps(writer_line(1, 2, False)) + "\n\n")
    assert [r["bench"] for r in report.read(lines)] == ["writer"]
    with pytest.raises(ValueError, match="bench-table"):
        report.spliced("# no block here\n", "table")
    with pytest.raises(ValueError, match="no benchmark lines"):
        report.render([])
    with pytest.raises(ValueError, match="of kind new_bench"):  # a new benchmark is never dropped silently
        report.render([writer_line(1, 2, False), {"bench": "new_bench", "figure": 1}])
