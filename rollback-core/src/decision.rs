//! The decision matrix: symptoms in, severity and decision out (SPEC §7).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

crate::names::word_enum! {
    /// How bad an incident is; ordered, so the worst of several is their `max`.
    #[derive(PartialOrd, Ord)]
    pub enum Severity ("severity") {
        /// Fix forward.
        Low = "low",
        /// Fix forward or roll back.
        Medium = "medium",
        /// Roll back.
        High = "high",
        /// Roll back now.
        Critical = "critical",
    }
}

impl Severity {
    /// What the matrix says to do at this severity.
    pub fn decision(self) -> Decision {
        match self {
            Severity::Low => Decision::FixForward,
            Severity::Medium => Decision::FixForwardOrRollback,
            Severity::High => Decision::Rollback,
            Severity::Critical => Decision::ImmediateRollback,
        }
    }
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Keep the deploy, fix it.
    FixForward,
    /// Operator's call.
    FixForwardOrRollback,
    /// Roll back.
    Rollback,
    /// Roll back without waiting.
    ImmediateRollback,
}

impl Decision {
    /// Words for a person.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::FixForward => "fix forward",
            Decision::FixForwardOrRollback => "fix forward or rollback",
            Decision::Rollback => "rollback",
            Decision::ImmediateRollback => "immediate rollback",
        }
    }

    /// The level the decision suggests: complete for critical, otherwise the operator
    /// picks (phase or component) from what is failing.
    pub fn should_roll_back(self) -> bool {
        matches!(self, Decision::Rollback | Decision::ImmediateRollback)
    }
}

crate::names::word_enum! {
    /// What the data looks like.
    #[derive(Default)]
    pub enum DataImpact ("data impact") {
        /// No data affected.
        #[default]
        None = "none",
        /// Data written wrongly.
        Corruption = "corruption",
        /// Data lost.
        Loss = "loss",
    }
}

/// The symptoms of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Symptoms {
    /// Fraction of requests failing, 0..=1.
    pub error_rate: f64,
    /// Fraction of performance lost, 0..=1.
    pub perf_degradation: f64,
    /// Observed latency.
    pub latency_ms: Option<f64>,
    /// Data impact.
    pub data_impact: DataImpact,
    /// A security issue is present.
    pub security: bool,
}

/// Thresholds of the matrix; every one configurable under `[decision]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Error rate above which severity is critical.
    pub error_rate_critical: f64,
    /// ... high (at or above).
    pub error_rate_high: f64,
    /// ... medium (at or above).
    pub error_rate_medium: f64,
    /// Performance degradation above which severity is critical.
    pub perf_critical: f64,
    /// ... high (at or above).
    pub perf_high: f64,
    /// ... medium (at or above).
    pub perf_medium: f64,
    /// Latency above which severity is high.
    pub latency_high_ms: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            error_rate_critical: 0.50,
            error_rate_high: 0.25,
            error_rate_medium: 0.10,
            perf_critical: 0.75,
            perf_high: 0.50,
            perf_medium: 0.25,
            latency_high_ms: 500.0,
        }
    }
}

impl Thresholds {
    /// Checks that each ladder rises.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let ok = |m: f64, h: f64, c: f64| m <= h && h <= c && m >= 0.0;
        if !ok(self.error_rate_medium, self.error_rate_high, self.error_rate_critical) {
            return Err("error_rate thresholds must satisfy medium <= high <= critical".into());
        }
        if !ok(self.perf_medium, self.perf_high, self.perf_critical) {
            return Err("perf thresholds must satisfy medium <= high <= critical".into());
        }
        Ok(())
    }
}

/// The matrix's answer, with the signals that drove it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Worst severity of any signal.
    pub severity: Severity,
    /// What to do.
    pub decision: Decision,
    /// Why: one line per signal that reached the severity.
    pub reasons: Vec<String>,
}

fn ladder(v: f64, medium: f64, high: f64, critical: f64) -> Severity {
    if v > critical {
        Severity::Critical
    } else if v >= high {
        Severity::High
    } else if v >= medium {
        Severity::Medium
    } else {
        Severity::Low
    }
}

impl Symptoms {
    /// Refuses what no monitor should send: a rate that is not a number (a division
    /// by zero requests), negative, or above 1; a negative or infinite latency.
    ///
    /// Why here: NaN compares false with every threshold, so the matrix would answer
    /// "low, fix forward" to a monitor that has lost sight of its service.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("error_rate", self.error_rate), ("perf_degradation", self.perf_degradation)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::config(format!("`{name}` = {v} is not a fraction between 0 and 1")));
            }
        }
        if let Some(l) = self.latency_ms {
            if !(l.is_finite() && l >= 0.0) {
                return Err(Error::config(format!("`latency_ms` = {l} is not a latency (0 or more milliseconds)")));
            }
        }
        Ok(())
    }
}

/// Applies the matrix: the worst signal wins. Symptoms that are not numbers, or out
/// of range, are an error ([`Symptoms::validate`]), never a quiet "low".
pub fn assess(s: &Symptoms, t: &Thresholds) -> Result<Assessment> {
    s.validate()?;
    let mut signals: Vec<(Severity, String)> = vec![
        (
            ladder(s.error_rate, t.error_rate_medium, t.error_rate_high, t.error_rate_critical),
            format!("error rate {:.1}%", s.error_rate * 100.0),
        ),
        (
            ladder(s.perf_degradation, t.perf_medium, t.perf_high, t.perf_critical),
            format!("performance degradation {:.1}%", s.perf_degradation * 100.0),
        ),
    ];
    match s.data_impact {
        DataImpact::Loss => signals.push((Severity::Critical, "data loss".into())),
        DataImpact::Corruption => signals.push((Severity::High, "data corruption".into())),
        DataImpact::None => {}
    }
    if s.security {
        signals.push((Severity::Critical, "security issue".into()));
    }
    if let Some(l) = s.latency_ms {
        if l > t.latency_high_ms {
            signals.push((Severity::High, format!("latency {l:.0} ms > {:.0} ms", t.latency_high_ms)));
        }
    }
    let severity = signals.iter().map(|(s, _)| *s).max().unwrap_or(Severity::Low);
    let reasons = signals.into_iter().filter(|(s, _)| *s == severity).map(|(_, r)| r).collect();
    Ok(Assessment { severity, decision: severity.decision(), reasons })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sev(e: f64, p: f64) -> Severity {
        assess(&Symptoms { error_rate: e, perf_degradation: p, ..Default::default() }, &Thresholds::default())
            .unwrap()
            .severity
    }

    #[test]
    fn matrix_rows() {
        assert_eq!(sev(0.6, 0.0), Severity::Critical);
        assert_eq!(sev(0.31, 0.55), Severity::High);
        assert_eq!(sev(0.5, 0.0), Severity::High);
        assert_eq!(sev(0.12, 0.0), Severity::Medium);
        assert_eq!(sev(0.05, 0.1), Severity::Low);
        assert_eq!(sev(0.05, 0.8), Severity::Critical);
    }

    #[test]
    fn worst_signal_wins() {
        let t = Thresholds::default();
        let a = assess(&Symptoms { security: true, ..Default::default() }, &t).unwrap();
        assert_eq!(a.decision, Decision::ImmediateRollback);
        let a = assess(&Symptoms { latency_ms: Some(900.0), ..Default::default() }, &t).unwrap();
        assert_eq!(a.severity, Severity::High);
        let a = assess(&Symptoms { data_impact: DataImpact::Corruption, ..Default::default() }, &t).unwrap();
        assert_eq!(a.decision, Decision::Rollback);
    }

    #[test]
    fn nonsense_symptoms_are_refused_not_rated_low() {
        let t = Thresholds::default();
        for s in [
            Symptoms { error_rate: f64::NAN, ..Default::default() },
            Symptoms { error_rate: -0.2, ..Default::default() },
            Symptoms { error_rate: 1.5, ..Default::default() },
            Symptoms { perf_degradation: f64::NAN, ..Default::default() },
            Symptoms { perf_degradation: f64::NEG_INFINITY, ..Default::default() },
            Symptoms { latency_ms: Some(f64::NAN), ..Default::default() },
            Symptoms { latency_ms: Some(-1.0), ..Default::default() },
            Symptoms { latency_ms: Some(f64::INFINITY), ..Default::default() },
        ] {
            let e = assess(&s, &t).expect_err(&format!("{s:?}"));
            assert_eq!(e.kind(), crate::ErrorKind::ConfigInvalid);
        }
    }
}
