//! What the demo concludes, as pure functions of what it measured: which
//! fault a decision belongs to ([`place`]), whether homeostat did the right
//! thing about each fault ([`judge`]), and the one line the command fails
//! with when it did not ([`failure`]).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Fault, FaultResult};

/// The most of the control's requests that may fail: more means the stack
/// was not healthy while nothing was injected.
pub const CONTROL_MAX_FAILED: f64 = 0.01;

/// A fault's window: from its injection until the demo moved on (healed
/// and quiet again, or cleared after its deadline).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    fn holds(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at <= self.end
    }
}

/// The fault a decision is listed under, and whether it came after that
/// fault's window closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub fault: usize,
    pub late: bool,
}

/// Which of `windows` (in injection order) a decision made at `decided`
/// on an incident opened at `opened` belongs to: the fault during which it
/// was made; else the fault during which its incident opened, late; else
/// (made between faults) the last fault injected before it, late. `None`
/// for a decision made before the first injection.
pub fn place(windows: &[Window], opened: DateTime<Utc>, decided: DateTime<Utc>) -> Option<Placed> {
    if let Some(fault) = windows.iter().position(|w| w.holds(decided)) {
        return Some(Placed { fault, late: false });
    }
    if let Some(fault) = windows.iter().position(|w| w.holds(opened)) {
        return Some(Placed {
            fault,
            late: decided > windows[fault].end,
        });
    }
    windows
        .iter()
        .rposition(|w| w.start <= decided)
        .map(|fault| Placed { fault, late: true })
}

/// Whether homeostat did the right thing about one fault, and why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Judgement {
    pub passed: bool,
    pub why: String,
}

impl Judgement {
    fn pass(why: impl Into<String>) -> Judgement {
        Judgement {
            passed: true,
            why: why.into(),
        }
    }

    fn fail(why: impl Into<String>) -> Judgement {
        Judgement {
            passed: false,
            why: why.into(),
        }
    }
}

/// What the demo expects of homeostat for `fault`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Act on the target, and the target recovers.
    Heal,
    /// Act on nothing; the target recovers by itself (a failing dependency
    /// ends, a fault fixed before its alert arrives), or stays as its
    /// operator left it (a clean stop).
    LeaveAlone,
    /// No fault: no action, and (almost) every request served.
    Control,
}

impl Expected {
    pub fn of(fault: Fault) -> Expected {
        match fault {
            Fault::DependencyFailure | Fault::StaleAlert | Fault::Stop => Expected::LeaveAlone,
            Fault::None => Expected::Control,
            _ => Expected::Heal,
        }
    }
}

/// An action homeostat took on a service (not a notification), as the
/// report lists them: `restart`, `rollback (late)`, `restart (dry run)`.
fn acted(action: &str) -> bool {
    !action.starts_with("notify")
}

/// Actions on other services than the fault's target (`scale_out on
/// service_a`): not needed to heal it, worth a look.
fn elsewhere(result: &FaultResult) -> Vec<String> {
    result
        .decisions
        .iter()
        .filter(|d| d["verdict"] == "allow" && d["action"] != "notify")
        .filter_map(|d| {
            let service = d["target"].as_str()?.rsplit('/').next()?;
            (service != result.target).then(|| format!("{} on {service}", d["action"].as_str().unwrap_or("?")))
        })
        .collect()
}

/// The actions homeostat took for real (not notifications, not in a dry
/// run), late ones included.
fn real_actions(result: &FaultResult) -> Vec<&str> {
    result
        .actions
        .iter()
        .map(String::as_str)
        .filter(|a| acted(a) && !a.contains("(dry run)"))
        .collect()
}

/// Who healed the fault: `homeostat` when it acted for real and the fault
/// recovered, `runtime` when the runtime's restart policy restarted the
/// target and homeostat did not act, `none` otherwise.
pub fn healed_by(result: &FaultResult) -> &'static str {
    match (
        result.recover_s,
        real_actions(result).is_empty(),
        result.runtime_restarts > 0,
    ) {
        (Some(_), false, _) => "homeostat",
        (Some(_), true, true) => "runtime",
        _ => "none",
    }
}

/// Judges one fault from its result. Actions include late ones: an action
/// after the window closed still acted on a stale or settled incident. A
/// fault to heal is healed by one action of homeostat on its target, or by
/// none where the runtime's restart policy healed it.
pub fn judge(result: &FaultResult) -> Judgement {
    let actions: Vec<&str> = result.actions.iter().map(String::as_str).filter(|a| acted(a)).collect();
    let real = real_actions(result);
    match Expected::of(result.fault) {
        Expected::Heal => match (result.recover_s, real.is_empty()) {
            (Some(at), false) => {
                let elsewhere = elsewhere(result);
                let also = if elsewhere.is_empty() {
                    String::new()
                } else {
                    format!("; also acted elsewhere: {}", elsewhere.join(", "))
                };
                let on_target = real.len().saturating_sub(elsewhere.len());
                if on_target > 1 {
                    return Judgement::fail(format!(
                        "healed in {at:.1} s, but with {on_target} actions on {} ({}): one was expected",
                        result.target,
                        real.join(", ")
                    ));
                }
                Judgement::pass(format!("healed by homeostat in {at:.1} s ({}){also}", real.join(", ")))
            }
            (Some(at), true) if result.runtime_restarts > 0 => Judgement::pass(format!(
                "healed by the runtime's restart policy in {at:.1} s ({} restart(s)); homeostat rightly did not \
                 restart it again",
                result.runtime_restarts
            )),
            (Some(at), true) => Judgement::fail(format!("recovered after {at:.1} s, but homeostat took no action")),
            (None, _) if actions.is_empty() => Judgement::fail("homeostat took no action"),
            (None, _) => Judgement::fail(format!("not recovered despite {}", actions.join(", "))),
        },
        Expected::LeaveAlone => match (actions.is_empty(), result.recover_s) {
            (false, _) => Judgement::fail(format!("acted on {}: {}", result.target, actions.join(", "))),
            (true, Some(at)) => Judgement::pass(format!("rightly left alone; recovered after {at:.1} s")),
            (true, None) if result.fault == Fault::Stop => {
                Judgement::pass("rightly left stopped: it was stopped deliberately")
            }
            (true, None) => Judgement::fail("left alone, but never recovered"),
        },
        Expected::Control => {
            if !actions.is_empty() {
                return Judgement::fail(format!("actions without a fault: {}", actions.join(", ")));
            }
            if result.requests_total == 0 {
                return Judgement::fail("no request was sent");
            }
            let lost = result.requests_failed as f64 / result.requests_total as f64;
            if lost > CONTROL_MAX_FAILED {
                return Judgement::fail(format!(
                    "{} of {} requests failed ({:.1}%, more than {:.0}%)",
                    result.requests_failed,
                    result.requests_total,
                    100.0 * lost,
                    100.0 * CONTROL_MAX_FAILED
                ));
            }
            Judgement::pass(format!(
                "no action; {} of {} requests served",
                result.requests_total - result.requests_failed,
                result.requests_total
            ))
        }
    }
}

/// The one line `homeostat demo` fails with, if it fails: every fault
/// that was not handled right, and why. In a dry run nothing can heal,
/// so only the control and the faults homeostat must leave alone count.
pub fn failure(results: &[FaultResult], dry_run: bool) -> Option<String> {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.judgement.passed)
        .filter(|r| !(dry_run && Expected::of(r.fault) == Expected::Heal))
        .map(|r| format!("{} ({})", r.fault, r.judgement.why))
        .collect();
    if failed.is_empty() {
        return None;
    }
    let of = results.len();
    Some(format!(
        "{} of {of} faults not handled right: {}",
        failed.len(),
        failed.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_000_000 + s, 0).single().unwrap()
    }

    fn windows() -> Vec<Window> {
        vec![
            Window {
                start: at(10),
                end: at(40),
            },
            Window {
                start: at(60),
                end: at(90),
            },
        ]
    }

    #[test]
    fn a_decision_belongs_to_the_fault_during_which_it_was_made() {
        let w = windows();
        assert_eq!(place(&w, at(12), at(15)), Some(Placed { fault: 0, late: false }));
        // An incident left open by the first fault, acted on during the second.
        assert_eq!(place(&w, at(20), at(70)), Some(Placed { fault: 1, late: false }));
        // An incident opened before any fault, acted on during one.
        assert_eq!(place(&w, at(1), at(60)), Some(Placed { fault: 1, late: false }));
    }

    #[test]
    fn a_decision_after_its_fault_window_is_late_under_that_fault() {
        let w = windows();
        // Its incident opened during the first fault; decided between faults.
        assert_eq!(place(&w, at(30), at(50)), Some(Placed { fault: 0, late: true }));
        // Opened between faults, decided between them: the last fault before it.
        assert_eq!(place(&w, at(45), at(50)), Some(Placed { fault: 0, late: true }));
        // After the last window.
        assert_eq!(place(&w, at(80), at(200)), Some(Placed { fault: 1, late: true }));
        // Before the first injection: no fault's.
        assert_eq!(place(&w, at(1), at(5)), None);
        assert_eq!(place(&[], at(1), at(5)), None);
    }

    fn result(fault: Fault, recover: Option<f64>, actions: &[&str]) -> FaultResult {
        let mut r = FaultResult::new(fault, 0.0, true);
        r.recover_s = recover;
        r.actions = actions.iter().map(|a| a.to_string()).collect();
        r.requests_total = 600;
        r
    }

    #[test]
    fn a_fault_is_healed_when_homeostat_acted_and_it_recovered() {
        assert!(judge(&result(Fault::Kill, Some(7.0), &["restart"])).passed);
        // One action on the target is expected, not two.
        let twice = judge(&result(Fault::MemoryLeak, Some(70.0), &["restart", "restart"]));
        assert!(!twice.passed && twice.why.contains("with 2 actions"), "{twice:?}");
        // The runtime's restart policy healed it; homeostat left it to it.
        let mut runtime = result(Fault::Crash, Some(2.0), &["notify"]);
        runtime.runtime_restarts = 1;
        let by_runtime = judge(&runtime);
        assert!(
            by_runtime.passed && by_runtime.why.contains("restart policy"),
            "{by_runtime:?}"
        );
        assert_eq!(healed_by(&runtime), "runtime");
        assert_eq!(healed_by(&result(Fault::Kill, Some(7.0), &["restart"])), "homeostat");
        assert_eq!(healed_by(&result(Fault::Kill, None, &["restart"])), "none");
        let mut other = result(Fault::Kill, Some(7.0), &["restart", "scale_out"]);
        other.decisions = vec![
            serde_json::json!({"action": "restart", "verdict": "allow", "target": "docker/p/service_b"}),
            serde_json::json!({"action": "scale_out", "verdict": "allow", "target": "docker/p/service_a"}),
        ];
        let also = judge(&other);
        assert!(
            also.passed && also.why.ends_with("also acted elsewhere: scale_out on service_a"),
            "{also:?}"
        );
        assert!(judge(&result(Fault::BadDeploy, Some(9.0), &["notify", "rollback (late)"])).passed);
        let not = judge(&result(Fault::Freeze, None, &["restart"]));
        assert!(
            !not.passed && not.why.contains("not recovered despite restart"),
            "{not:?}"
        );
        let idle = judge(&result(Fault::Crash, None, &[]));
        assert!(!idle.passed && idle.why.contains("no action"), "{idle:?}");
        // Recovered without homeostat: not its healing.
        assert!(!judge(&result(Fault::Hang, Some(3.0), &["notify"])).passed);
        // A dry run's would-be action heals nothing.
        assert!(!judge(&result(Fault::Crash, Some(3.0), &["restart (dry run)"])).passed);
    }

    #[test]
    fn a_stale_alert_or_failing_dependency_is_right_only_without_action() {
        assert!(judge(&result(Fault::StaleAlert, Some(4.0), &[])).passed);
        assert!(judge(&result(Fault::DependencyFailure, Some(20.0), &["notify"])).passed);
        let acted = judge(&result(Fault::StaleAlert, Some(4.0), &["rollback (late)"]));
        assert!(!acted.passed && acted.why.contains("acted on service_b"), "{acted:?}");
        assert!(!judge(&result(Fault::DependencyFailure, None, &[])).passed);
    }

    #[test]
    fn the_control_fails_on_any_action_or_more_than_one_percent_lost() {
        assert!(judge(&result(Fault::None, None, &[])).passed);
        assert!(!judge(&result(Fault::None, None, &["restart"])).passed);
        let mut lossy = result(Fault::None, None, &[]);
        lossy.requests_failed = 6;
        assert!(judge(&lossy).passed, "exactly 1% is allowed");
        lossy.requests_failed = 7;
        let lost = judge(&lossy);
        assert!(!lost.passed && lost.why.contains("7 of 600"), "{lost:?}");
        lossy.requests_total = 0;
        assert!(!judge(&lossy).passed);
    }

    #[test]
    fn the_failure_line_names_every_fault_not_handled_right() {
        let mut results = vec![
            result(Fault::Crash, Some(7.0), &["restart"]),
            result(Fault::Kill, None, &[]),
            result(Fault::None, None, &["restart"]),
        ];
        for r in &mut results {
            r.judgement = judge(r);
        }
        let line = failure(&results, false).unwrap();
        assert!(
            line.starts_with("2 of 3 faults not handled right: kill (homeostat took no action)")
                && line.contains("none (actions without a fault: restart)"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        // A dry run heals nothing by design; its control still counts.
        let line = failure(&results, true).unwrap();
        assert!(line.starts_with("1 of 3") && !line.contains("kill"), "{line}");
        results.truncate(1);
        assert_eq!(failure(&results, false), None);
    }
}
