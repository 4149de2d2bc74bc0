#!/usr/bin/env python3
"""Overhead of the Python binding (issue 5): `assess` per call from Python, and a
small snapshot from Python vs the same from Rust (rollback-core/examples/bench_overhead.rs).

    bash benches/python_overhead.sh          # builds both in release mode, then runs this

or, with a release build of `rollback` importable and the example built:

    python benches/python_overhead.py --rust-bin target/release/examples/bench_overhead

Goals: under 20 µs per `assess` call; the snapshot within 5 % of the Rust time.
Prints a Markdown table. Timings only: nothing here is asserted by the test suite.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rollback


def assess_ns(calls, rounds):
    f = rollback.assess
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            f(error_rate=0.31, perf_degradation=0.55, data_impact="none")
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def baseline_ns(calls, rounds):
    """A Python function taking the same keywords and doing nothing: the floor."""

    def f(*, error_rate=0.0, perf_degradation=0.0, latency_ms=None, data_impact="none", security=False):
        return None

    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            f(error_rate=0.31, perf_degradation=0.55, data_impact="none")
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def make_stack(root: Path, files: int):
    """A small stack: a git repo and a config directory of `files` files."""
    repo = root / "repo"
    repo.mkdir()
    g = ["git", "-c", "user.name=bench", "-c", "user.email=bench@rollback.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    for i in range(20):
        (repo / f"mod{i}.py").write_text(f"VALUE = {i}\n" * 20)
    subprocess.run(g + ["add", "-A"], cwd=repo, check=True)
    subprocess.run(g + ["commit", "-q", "-m", "v1"], cwd=repo, check=True)
    conf = root / "conf"
    conf.mkdir()
    for i in range(files):
        (conf / f"service{i}.toml").write_text(f"[service]\nid = {i}\nthreads = 4\n" * 8)
    config = root / "rollback.toml"
    config.write_text(
        '[[component]]\nname = "code"\ndriver = "git"\nrepo = "repo"\n\n'
        '[[component]]\nname = "config"\ndriver = "files"\nphase = 2\npaths = ["conf"]\n'
    )
    return config


def python_snapshots(config, count):
    stack = rollback.Stack.load(config)
    ms = []
    for _ in range(count):
        start = time.perf_counter()
        stack.snapshot()
        ms.append((time.perf_counter() - start) * 1000)
        stack.gc(keep=1)
    return ms


def rust(bin_path, *args):
    out = subprocess.run([bin_path, *map(str, args)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rust-bin", default=os.environ.get("BENCH_OVERHEAD_BIN", "target/release/examples/bench_overhead"))
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--snapshots", type=int, default=5, help="per round")
    ap.add_argument("--snapshot-rounds", type=int, default=24)
    ap.add_argument("--files", type=int, default=50)
    a = ap.parse_args()

    py_assess = assess_ns(a.calls, a.rounds)
    floor = baseline_ns(a.calls, a.rounds)
    rs_assess = rust(a.rust_bin, "assess", a.calls, a.rounds)["ns_per_call"]

    with tempfile.TemporaryDirectory(prefix="rollback-bench-") as d:
        config = make_stack(Path(d), a.files)
        py_ms, rs_ms = [], []
        python_snapshots(config, 3)  # warm the page cache and the runtime
        # Interleaved rounds, so drift of the machine hits both sides alike.
        for _ in range(a.snapshot_rounds):
            rs_ms += rust(a.rust_bin, "snapshot", config, a.snapshots)["ms"]
            py_ms += python_snapshots(config, a.snapshots)

    py_med, rs_med = statistics.median(py_ms), statistics.median(rs_ms)
    diff = (py_med - rs_med) / rs_med * 100
    # Disk and CPU noise of a shared machine only ever adds time: the low decile is the
    # steadiest estimate of what each side costs.
    py_p10, rs_p10 = statistics.quantiles(py_ms, n=10)[0], statistics.quantiles(rs_ms, n=10)[0]
    diff10 = (py_p10 - rs_p10) / rs_p10 * 100
    print(f"Python {sys.version.split()[0]}, rollback {rollback.__version__}, {os.cpu_count()} cores\n")
    print("| measure | Python | Rust | binding overhead | goal |")
    print("|---|---|---|---|---|")
    print(
        f"| `assess` per call | {py_assess / 1000:.2f} µs | {rs_assess / 1000:.2f} µs | "
        f"{(py_assess - rs_assess) / 1000:.2f} µs (an empty Python function with the same keywords: "
        f"{floor / 1000:.2f} µs) | < 20 µs {'✔' if py_assess < 20_000 else '✘'} |"
    )
    print(
        f"| snapshot, git + {a.files} files, median of {len(py_ms)} | {py_med:.2f} ms | {rs_med:.2f} ms | "
        f"{diff:+.1f} % | within 5 % {'✔' if diff <= 5 else '✘'} |"
    )
    print(
        f"| snapshot, low decile | {py_p10:.2f} ms | {rs_p10:.2f} ms | "
        f"{diff10:+.1f} % | within 5 % {'✔' if diff10 <= 5 else '✘'} |"
    )
    print(
        f"\nsnapshot p10/p90: Python {statistics.quantiles(py_ms, n=10)[0]:.2f}/"
        f"{statistics.quantiles(py_ms, n=10)[-1]:.2f} ms, Rust {statistics.quantiles(rs_ms, n=10)[0]:.2f}/"
        f"{statistics.quantiles(rs_ms, n=10)[-1]:.2f} ms"
    )


if __name__ == "__main__":
    main()
