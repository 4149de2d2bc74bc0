#!/usr/bin/env python3
"""The options system's EmergencyRollback, on `import rollback`.

The runbook's class kept its own backup paths, phase table and timing code; here
the library does the work and the class keeps only the operator's policy: which
phase owns a symptom, and which level the severity calls for.

    python3 emergency_rollback.py SNAPSHOT --failing-phase analysis_engine \\
        --error-rate 0.31 --perf-degradation 0.55 --trigger signal_quality

Prints the record's metrics as JSON on stdout; exit 0 when the rollback succeeded
and verified.
"""

import argparse
import json
import logging
import sys
from typing import Any, Dict, List, Optional, Tuple

import rollback
from rollback.types import Level

Scope = Tuple[Level, Optional[List[int]]]

PHASES = {"data_ingestion": 1, "analysis_engine": 2, "integration": 3, "production": 4}


class EmergencyRollback:
    """Assess, pick the level, roll back, verify, report metrics."""

    def __init__(self, config: str = "rollback.toml") -> None:
        self.stack = rollback.Stack.load(config)

    def pre_deployment_backup(self, label: str) -> rollback.Snapshot:
        """The snapshot before a deploy (the runbook's backup step)."""
        return self.stack.snapshot(label=label)

    def level_for(self, assessment: rollback.Assessment, failing_phase: str) -> Scope:
        """Critical: everything back. High: the failing phase and the ones after it
        (they consume its output). Otherwise no rollback."""
        if assessment.severity == "critical":
            return "complete", None
        first = PHASES[failing_phase]
        return "phase", [p for p in PHASES.values() if p >= first]

    def execute(
        self, snapshot: str, failing_phase: str, trigger: str, error_rate: float, perf_degradation: float
    ) -> Tuple[rollback.Assessment, Optional[rollback.Record], Optional[rollback.Verification]]:
        assessment = rollback.assess(error_rate=error_rate, perf_degradation=perf_degradation)
        logging.info("assessment: %s -> %s (%s)", assessment.severity, assessment.decision,
                     "; ".join(assessment.reasons))
        if not assessment.should_roll_back:
            return assessment, None, None
        level, phases = self.level_for(assessment, failing_phase)
        print(self.stack.plan(snapshot, level=level, phases=phases), file=sys.stderr)
        record = self.stack.rollback(
            snapshot, trigger=trigger, severity=assessment.severity, level=level, phases=phases
        )
        verification = self.stack.verify(snapshot, components=record.components)
        return assessment, record, verification

    @staticmethod
    def metrics(
        assessment: rollback.Assessment, record: rollback.Record, verification: Optional[rollback.Verification]
    ) -> Dict[str, Any]:
        """The metrics JSON the runbook appended to its incident log."""
        return {
            "severity": assessment.severity,
            "decision": assessment.decision,
            "rollback_id": record.rollback_id,
            "level": record.level,
            "phases": record.phases,
            "components": record.components,
            "status": record.status,
            "duration_ms": record.duration_ms,
            "rto_target_ms": record.rto_target_ms,
            "rto_met": record.rto_met,
            "data_loss": record.data_loss,
            "discarded": record.discarded,
            "verified": bool(verification),
        }


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("snapshot")
    p.add_argument("--config", default="rollback.toml")
    p.add_argument("--failing-phase", choices=sorted(PHASES), required=True)
    p.add_argument("--error-rate", type=float, required=True)
    p.add_argument("--perf-degradation", type=float, default=0.0)
    p.add_argument("--trigger", default="error_rate")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    er = EmergencyRollback(a.config)
    assessment, record, verification = er.execute(
        a.snapshot, a.failing_phase, a.trigger, error_rate=a.error_rate, perf_degradation=a.perf_degradation
    )
    if record is None:
        print(json.dumps({"severity": assessment.severity, "decision": assessment.decision}))
        return 0
    print(json.dumps(er.metrics(assessment, record, verification), indent=2))
    return 0 if record.status == "succeeded" and verification else 1


if __name__ == "__main__":
    sys.exit(main())
