//! Where `cargo xtask test` spends its time: each phase (set-up, unit tests, the agent, the
//! images, the packages, the Debian tree, the fixtures, each scenario) with its wall time, the
//! lanes of the VM scenarios, and the total, printed as a summary at the end of the run (and
//! so in CI's log). A run longer than the budget gets a warning that names the slowest
//! scenarios: time is not an assertion, but it must not creep up unseen.

use bootenv_vmtest::scenarios::Report;
use std::time::Instant;

/// The suite's budget on the host it runs on: CI has 90 minutes and must keep room.
pub const BUDGET_SECS: f64 = 30.0 * 60.0;

/// The phases of a run, in order, with their wall times.
pub struct Phases {
    started: Instant,
    done: Vec<(String, f64)>,
}

impl Phases {
    /// Starts the clock of the whole run.
    pub fn new() -> Phases {
        Phases {
            started: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Runs `f` as the phase `name`, recording its wall time (also when it fails).
    pub fn phase<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let t = Instant::now();
        let r = f();
        self.done.push((name.to_owned(), t.elapsed().as_secs_f64()));
        r
    }

    /// Records a phase timed elsewhere.
    #[cfg(test)]
    pub fn record(&mut self, name: &str, secs: f64) {
        self.done.push((name.to_owned(), secs));
    }

    /// Seconds since [`Phases::new`].
    pub fn total(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The summary: phases, fixtures, lanes, each scenario (slowest first), the total and the
    /// budget's verdict, as lines to print.
    pub fn summary(&self, report: Option<&Report>, host: &str) -> Vec<String> {
        self.summary_at(self.total(), report, host)
    }

    /// [`Phases::summary`] for a run of `total` seconds.
    fn summary_at(&self, total: f64, report: Option<&Report>, host: &str) -> Vec<String> {
        let mut out = vec!["time summary (wall clock, seconds)".to_string()];
        for (name, secs) in &self.done {
            out.push(format!("  {secs:>7.1}  {name}"));
        }
        if let Some(r) = report {
            out.push(format!(
                "  {:>7.1}  VM scenarios: {} in {} lanes (busy: {})",
                r.secs,
                r.outcomes.len(),
                r.lanes.len(),
                r.lanes
                    .iter()
                    .map(|l| format!("{l:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            for f in &r.fixtures {
                out.push(format!(
                    "           {:>7.1}  fixture {}{}",
                    f.secs,
                    f.name,
                    if f.cached { " (cached)" } else { " (built)" }
                ));
            }
            let mut by_time: Vec<_> = r.outcomes.iter().collect();
            by_time.sort_by(|a, b| b.secs.total_cmp(&a.secs));
            for o in &by_time {
                out.push(format!(
                    "           {:>7.1}  {} (lane {}){}",
                    o.secs,
                    o.name,
                    o.lane + 1,
                    if o.failure.is_some() { " FAILED" } else { "" }
                ));
            }
            if total > BUDGET_SECS {
                // The slowest of everything: phases and fixtures can be the culprits too.
                let mut all: Vec<(String, f64)> = by_time
                    .iter()
                    .map(|o| (o.name.clone(), o.secs))
                    .chain(
                        r.fixtures
                            .iter()
                            .map(|f| (format!("fixture {}", f.name), f.secs)),
                    )
                    .chain(self.done.iter().map(|(n, s)| (n.clone(), *s)))
                    .collect();
                all.sort_by(|a, b| b.1.total_cmp(&a.1));
                let slowest: Vec<String> = all
                    .iter()
                    .take(5)
                    .map(|(n, s)| format!("{n} {s:.0} s"))
                    .collect();
                out.push(format!(
                    "WARNING: the suite took {:.1} min on this host, over its budget of {:.0} min; the slowest steps: {}",
                    total / 60.0,
                    BUDGET_SECS / 60.0,
                    slowest.join(", ")
                ));
            }
        } else if total > BUDGET_SECS {
            out.push(format!(
                "WARNING: the run took {:.1} min, over the suite's budget of {:.0} min",
                total / 60.0,
                BUDGET_SECS / 60.0
            ));
        }
        out.push(format!(
            "  {total:>7.1}  total ({:.1} min) on {host}",
            total / 60.0
        ));
        out
    }
}

/// The host, for the summary: cores and CPU model.
pub fn host() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "an unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} x {model}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootenv_vmtest::scenarios::Outcome;

    fn report(secs: &[(&str, f64)]) -> Report {
        Report {
            outcomes: secs
                .iter()
                .map(|(n, s)| Outcome {
                    name: n.to_string(),
                    failure: None,
                    secs: *s,
                    lane: 0,
                })
                .collect(),
            fixtures: Vec::new(),
            lanes: vec![10.0, 20.0],
            secs: 30.0,
        }
    }

    #[test]
    fn the_summary_lists_phases_and_scenarios_slowest_first() {
        let mut p = Phases::new();
        p.record("unit tests", 12.5);
        let lines = p.summary(Some(&report(&[("a", 1.0), ("b", 9.0)])), "2 x cpu");
        let text = lines.join("\n");
        assert!(text.contains("12.5  unit tests"), "{text}");
        let (a, b) = (
            text.find(" a (lane").unwrap(),
            text.find(" b (lane").unwrap(),
        );
        assert!(b < a, "{text}");
        assert!(lines.last().unwrap().contains("total"), "{text}");
        assert!(!text.contains("WARNING"), "{text}");
    }

    #[test]
    fn a_run_over_the_budget_is_warned_about_with_the_slowest_scenarios() {
        let text = Phases::new()
            .summary_at(
                BUDGET_SECS + 60.0,
                Some(&report(&[("quick", 1.0), ("slow", 900.0)])),
                "h",
            )
            .join("\n");
        assert!(
            text.contains("WARNING: the suite took")
                && text.contains("the slowest steps: slow 900 s"),
            "{text}"
        );
    }
}
