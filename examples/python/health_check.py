#!/usr/bin/env python3
"""Emergency health check: roll back the failing phase, in process.

The runbooks' health script, with rollback called from Python instead of a pile of
shell: check the service's /health, turn what it says into symptoms, ask the
decision matrix (docs/decision-matrix.md) what to do, and when the answer is to roll back, find the
phase whose health checks fail, show the plan, roll that phase back to the newest
snapshot taken while healthy, verify it, and print the record.

    ROLLBACK_CONFIG=/opt/app/rollback.toml \\
    HEALTH_URL=http://127.0.0.1:3000/health \\
    python3 health_check.py

Environment: ROLLBACK_CONFIG (default rollback.toml), HEALTH_URL (required),
ROLLBACK_TARGET (default last-good), HEALTH_TIMEOUT (seconds, default 5),
DRY_RUN=1 to stop after the plan. Exit 0: healthy, or rolled back and verified;
1: the rollback failed or did not verify; 2: bad input (config, no snapshot).
Log records of the library arrive through `logging` under the logger `rollback`.
"""

import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from typing import List, Optional, TypedDict

import rollback
from rollback.types import DataImpact, Event, Level

log = logging.getLogger("health_check")


class Symptoms(TypedDict):
    """What /health says, as the arguments of `Stack.assess()`."""

    error_rate: float
    perf_degradation: float
    latency_ms: Optional[float]
    data_impact: DataImpact


def probe(url: str, timeout: float) -> Symptoms:
    """One GET of /health as symptoms; an unreachable service is a 100% error rate."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        log.warning("health endpoint unreachable: %s", e)
        return {"error_rate": 1.0, "perf_degradation": 1.0, "latency_ms": None, "data_impact": "none"}
    latency_ms = (time.monotonic() - started) * 1000
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        body = {}
    healthy = status == 200 and body.get("status", "healthy") == "healthy"
    return {
        "error_rate": float(body.get("error_rate", 0.0 if healthy else 1.0)),
        "perf_degradation": float(body.get("perf_degradation", 0.0)),
        "latency_ms": float(body.get("latency_ms", latency_ms)),
        "data_impact": body.get("data_impact", "none"),
    }


def trigger_of(assessment: rollback.Assessment) -> str:
    """The record's trigger: the signal that drove the decision."""
    first = assessment.reasons[0] if assessment.reasons else ""
    for prefix, name in (
        ("error rate", "error_rate"),
        ("performance", "performance_degradation"),
        ("latency", "latency"),
        ("data", "data_impact"),
        ("security", "security"),
    ):
        if first.startswith(prefix):
            return name
    return "health_check"


def failing_phases(stack: rollback.Stack, snap: rollback.Snapshot) -> List[int]:
    """Phases of the components whose own health checks fail now."""
    phase_of = {p["component"]: p["phase"] for p in snap.parts}
    failing = sorted(
        {phase_of[c] for c, results in stack.health().items() if c in phase_of and any(not r["ok"] for r in results)}
    )
    return failing


def progress(event: Event) -> None:
    if event["kind"] == "step_finished":
        index = event["index"] or 0
        print(f"  {index + 1}/{event['total']} {event['component']:<10} {event['action']:<11} "
              f"{event['status']} ({event['duration_ms']} ms)", flush=True)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = os.environ.get("ROLLBACK_CONFIG", "rollback.toml")
    url = os.environ.get("HEALTH_URL")
    if not url:
        print("HEALTH_URL is not set", file=sys.stderr)
        return 2
    target = os.environ.get("ROLLBACK_TARGET", "last-good")

    symptoms = probe(url, float(os.environ.get("HEALTH_TIMEOUT", "5")))
    stack = rollback.Stack.load(config)
    assessment = stack.assess(**symptoms)
    print(f"health: {symptoms}")
    print(f"assessment: severity={assessment.severity} decision={assessment.decision} "
          f"({'; '.join(assessment.reasons)})")
    if not assessment.should_roll_back:
        print("no rollback: fix forward")
        return 0

    snap = stack.show(target)
    failing = failing_phases(stack, snap)
    level: Level = "phase"
    phases: Optional[List[int]] = failing
    if not failing or assessment.severity == "critical":
        # Critical, or no component's checks point at a phase: everything goes back.
        level, phases = "complete", None
    plan = stack.plan(snap, level=level, phases=phases)
    print(plan)
    if os.environ.get("DRY_RUN") == "1":
        return 0

    record = stack.rollback(
        snap, level=level, phases=phases, trigger=trigger_of(assessment), severity=assessment.severity,
        on_event=progress,
    )
    verification = stack.verify(snap, components=record.components)
    print(record.to_json())
    if not record.succeeded or not verification:
        print(f"rollback {record.rollback_id} {record.status}: {record.error or verification.drift}", file=sys.stderr)
        return 1
    print(f"rolled back {', '.join(record.components)} (phase {', '.join(map(str, record.phases))}) "
          f"to {snap.id} in {record.duration_ms} ms, objective met: {record.rto_met}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (rollback.ConfigError, rollback.SnapshotNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except rollback.RollbackError as e:
        print(f"error ({e.code}, component {e.component}): {e}", file=sys.stderr)
        sys.exit(1)
