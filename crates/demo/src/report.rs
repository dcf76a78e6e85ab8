//! The demo's report: `report.json` (one object per fault), `report.md`
//! (the table and the alert-path settings) and `timeline.svg` (failed
//! requests per second, with injections, actions and recoveries marked).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::{EventKind, FaultResult, Report};

/// The alert path the demo runs with, for the report and the docs.
pub const SETTINGS: &str = "Prometheus scrape every 1 s (timeout 800 ms), rule evaluation every 1 s; \
    `for:` 3 s (down, hung), 5 s (error ratio, bad deploy, upstream errors, memory leak); \
    Alertmanager group_wait 1 s, group_interval 1 s, repeat_interval 30 s; \
    homeostat: Docker executor, cooldown 10 s, verify_timeout 90 s.";

/// Writes the three files into `dir`, creating it.
pub fn write(report: &Report, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(&report.faults).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json + "\n")?;
    std::fs::write(dir.join("report.md"), markdown(report))?;
    let svg = timeline(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("timeline.svg"), svg)
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |s| format!("{s:.1}"))
}

/// The per-fault table, as Markdown (it reads as well in a terminal).
pub fn table(faults: &[FaultResult]) -> String {
    let mut out = String::from(
        "| fault | target | detected (s) | recovered (s) | healed by | actions | requests | failed | availability | result |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for f in faults {
        let availability = if f.requests_total == 0 {
            "—".to_owned()
        } else {
            let ok = f.requests_total - f.requests_failed;
            format!("{:.1}%", 100.0 * ok as f64 / f.requests_total as f64)
        };
        let actions = if f.actions.is_empty() {
            "none".to_owned()
        } else {
            f.actions.join(", ")
        };
        let verdict = if f.judgement.passed { "ok" } else { "FAILED" };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {verdict}: {} |",
            f.fault,
            f.target,
            seconds(f.detect_s),
            seconds(f.recover_s),
            f.healed_by,
            actions,
            f.requests_total,
            f.requests_failed,
            availability,
            f.judgement.why
        );
    }
    out
}

fn markdown(report: &Report) -> String {
    let mut out = format!(
        "# homeostat demo, {}\n\n{}\n\nSeconds count from the fault's injection. Requests are service_a's \
         (which calls service_b) from injection to recovery.\n\n",
        report.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        SETTINGS
    );
    out.push_str(&table(&report.faults));
    match report.failure() {
        Some(failure) => {
            let _ = writeln!(out, "\n**FAILED**: {failure}");
        }
        None => out.push_str("\nEvery fault was handled right.\n"),
    }
    out.push_str("\n![timeline](timeline.svg)\n\n## Decisions\n\n");
    out.push_str(
        "Each decision is listed under the fault during which it was made; one made after its \
         fault's window (from injection until healed and quiet, or cleared) and before the next \
         fault's is listed under the fault of its incident, or the last one before it, marked late.\n\n",
    );
    for f in &report.faults {
        let _ = writeln!(out, "### {}\n", f.fault);
        if let Some(note) = &f.note {
            let _ = writeln!(out, "_{note}_\n");
        }
        if !f.cleared.is_empty() {
            let _ = writeln!(
                out,
                "_fault {} was not healed; cleared to known good: {}_\n",
                f.fault,
                f.cleared.join("; ")
            );
        }
        if f.decisions.is_empty() {
            out.push_str("No decision.\n\n");
        }
        for d in &f.decisions {
            let late = if d["late"] == true { " (late)" } else { "" };
            let _ = writeln!(
                out,
                "- {}{late} on `{}`: {} — {}; result {}, outcome {}",
                d["action"].as_str().unwrap_or("?"),
                d["target"].as_str().unwrap_or("?"),
                d["verdict"].as_str().unwrap_or("?"),
                d["reason"].as_str().unwrap_or(""),
                d["result"].as_str().unwrap_or("—"),
                d["outcome"].as_str().unwrap_or("—"),
            );
        }
        out.push('\n');
    }
    out
}

/// Failed requests per second over the whole run, with every fault's
/// injection (red), the actions (blue) and recoveries (green) marked.
fn timeline(report: &Report) -> Result<String, String> {
    let mut svg = String::new();
    {
        let last_event = report.events.iter().map(|e| e.at_s).fold(0.0, f64::max);
        let seconds = (report.load.len() as f64).max(last_event + 1.0);
        let peak = report.load.iter().map(|(sent, _)| *sent).max().unwrap_or(1).max(1) as f64;
        let root = SVGBackend::with_string(&mut svg, (1200, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption("homeostat demo: requests per second to service_a", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(44)
            .build_cartesian_2d(0.0..seconds, 0.0..peak * 1.25)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc("requests")
            .draw()
            .map_err(|e| e.to_string())?;
        let series = |pick: fn(&(u64, u64)) -> u64| {
            report
                .load
                .iter()
                .enumerate()
                .map(move |(s, counts)| (s as f64, pick(counts) as f64))
        };
        chart
            .draw_series(LineSeries::new(series(|c| c.0), &BLACK))
            .map_err(|e| e.to_string())?
            .label("sent")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
        chart
            .draw_series(LineSeries::new(series(|c| c.1), RED.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label("failed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        for event in &report.events {
            let (color, top) = match event.kind {
                EventKind::Injected => (RED, peak * 1.2),
                EventKind::Action => (BLUE, peak * 1.1),
                EventKind::Recovered => (GREEN, peak * 1.15),
                EventKind::Cleared => (MAGENTA, peak * 1.05),
                EventKind::Alert => continue,
            };
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(event.at_s, 0.0), (event.at_s, top)],
                    color.mix(0.6),
                )))
                .map_err(|e| e.to_string())?;
            if event.kind == EventKind::Injected {
                let label = event.text.split(':').next().unwrap_or_default().to_owned();
                chart
                    .draw_series(std::iter::once(Text::new(label, (event.at_s, top), ("sans-serif", 12))))
                    .map_err(|e| e.to_string())?;
            }
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Fault};

    fn result(fault: Fault, detect: Option<f64>, recover: Option<f64>, actions: &[&str]) -> FaultResult {
        let mut r = FaultResult::new(fault, 10.0, true);
        r.detect_s = detect;
        r.recover_s = recover;
        r.actions = actions.iter().map(|a| a.to_string()).collect();
        r.requests_total = 200;
        r.requests_failed = 50;
        r.healed_by = crate::judge::healed_by(&r);
        r.judgement = crate::judge::judge(&r);
        r
    }

    #[test]
    fn the_table_shows_missing_times_and_availability() {
        let table = table(&[
            result(Fault::Crash, Some(4.25), Some(7.0), &["restart"]),
            result(Fault::None, None, None, &[]),
        ]);
        assert!(
            table.contains(
                "| crash | service_b | 4.2 | 7.0 | homeostat | restart | 200 | 50 | 75.0% | ok: healed by homeostat in 7.0 s (restart) |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| none | service_a | — | — | none | none | 200 | 50 | 75.0% | FAILED: 50 of 200 requests failed"
            ),
            "{table}"
        );
    }

    #[test]
    fn the_files_are_written_with_one_json_object_per_fault() {
        let dir = tempfile::tempdir().unwrap();
        let report = Report {
            started_at: chrono::Utc::now(),
            faults: vec![result(Fault::Hang, Some(5.0), Some(9.5), &["restart"]), {
                let mut kill = result(Fault::Kill, Some(4.0), None, &["restart (late)"]);
                kill.decisions = vec![serde_json::json!({"action": "restart", "target": "t", "late": true,
                    "verdict": "allow", "reason": "within every limit"})];
                kill.cleared = vec!["service_b: started (it was not running)".into()];
                kill
            }],
            events: vec![Event {
                at_s: 10.0,
                kind: EventKind::Injected,
                text: "hang: injected into service_a".into(),
            }],
            load: vec![(20, 0), (20, 5), (20, 20)],
            dry_run: false,
        };
        write(&report, &dir.path().join("out")).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/report.json")).unwrap()).unwrap();
        assert_eq!(json[0]["fault"], "hang");
        assert_eq!(json[0]["detect_s"], 5.0);
        assert_eq!(json[0]["recover_s"], 9.5);
        assert_eq!(json[0]["actions"], serde_json::json!(["restart"]));
        assert_eq!(json[0]["requests_failed"], 50);
        let svg = std::fs::read_to_string(dir.path().join("out/timeline.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("hang"), "{svg}");
        let md = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
        assert!(
            md.contains("| hang | service_a | 5.0 | 9.5 | homeostat | restart |"),
            "{md}"
        );
        assert!(
            md.contains("**FAILED**: 1 of 2 faults not handled right: kill (not recovered despite restart (late))"),
            "{md}"
        );
        assert!(
            md.contains("- restart (late) on `t`: allow")
                && md.contains("fault kill was not healed; cleared to known good: service_b: started"),
            "{md}"
        );
        assert_eq!(json[1]["judgement"]["passed"], false);
        assert_eq!(json[1]["cleared"][0], "service_b: started (it was not running)");
    }
}
