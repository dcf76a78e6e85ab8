//! The bench's report: `report.json` (the run, one summary per contender and
//! fault, and the comparisons of homeostat against the baselines),
//! `report.md` (the tables) and three plots: `recovery.svg` (seconds to
//! recovery, every trial a dot), `availability.svg` (the share of
//! service_a's requests that did not fail) and `learned.svg` (the learned
//! contender's seconds to recovery in the order it ran its trials).
//!
//! In `report.json`, a number of seconds that is ∞ (not recovered within
//! the timeout) is `null`; see [`stats::Spread`].

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use super::stats::{self, contenders, faults, Comparison, Difference, Spread, Summary, RESAMPLES};
use super::{BenchReport, Contender, Trial};
use crate::Fault;

/// What `report.json` holds.
#[derive(Serialize)]
struct Document<'a> {
    /// The run as measured: its settings and every trial.
    run: &'a BenchReport,
    summaries: &'a [Summary],
    comparisons: &'a [Comparison],
}

/// Writes `report.json`, `report.md`, `recovery.svg`, `availability.svg`
/// and `learned.svg` into `dir`, creating it. `learned.svg` is written even
/// when no trial ran under the learned contender, and then says so.
pub fn write(report: &BenchReport, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let summaries = stats::summarize(&report.trials);
    let comparisons = stats::comparisons(&summaries);
    let document = Document {
        run: report,
        summaries: &summaries,
        comparisons: &comparisons,
    };
    let json = serde_json::to_string_pretty(&document).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json + "\n")?;
    std::fs::write(dir.join("report.md"), render(report, &summaries, &comparisons))?;
    let plots = [
        ("recovery.svg", recovery(report)),
        ("availability.svg", availability(report, &summaries)),
        ("learned.svg", learned(report)),
    ];
    for (name, svg) in plots {
        std::fs::write(dir.join(name), svg.map_err(std::io::Error::other)?)?;
    }
    Ok(())
}

/// The report as Markdown: the run's settings, a table per fault, homeostat
/// against the baselines, and the learned contender's first trial against
/// its last.
pub fn markdown(report: &BenchReport) -> String {
    let summaries = stats::summarize(&report.trials);
    let comparisons = stats::comparisons(&summaries);
    render(report, &summaries, &comparisons)
}

/// Seconds to one decimal; ∞ as longer than the timeout.
fn seconds(value: f64, timeout: f64) -> String {
    if value.is_finite() {
        format!("{value:.1}")
    } else {
        format!("> {timeout:.1} s")
    }
}

/// An interval of seconds, `[low, high]`.
fn interval(spread: &Spread, timeout: f64) -> String {
    format!("[{}, {}]", seconds(spread.low, timeout), seconds(spread.high, timeout))
}

/// A median of seconds to recovery with its interval; an infinite median
/// reads "not recovered".
fn recovered(spread: &Spread, timeout: f64) -> String {
    let median = if spread.median.is_finite() {
        format!("{:.1}", spread.median)
    } else {
        "not recovered".to_owned()
    };
    format!("{median} {}", interval(spread, timeout))
}

/// A share from 0 to 1 as a percentage to one decimal, or a dash.
fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "—".to_owned(), |s| format!("{:.1}%", 100.0 * s))
}

/// A difference to one decimal with its sign, `0.0` when it rounds to
/// nothing.
fn signed(value: f64) -> String {
    if value.abs() < 0.05 {
        "0.0".to_owned()
    } else {
        format!("{value:+.1}")
    }
}

/// A trial's seconds to recovery, or "not recovered".
fn trial_seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "not recovered".to_owned(), |s| format!("{s:.1}"))
}

fn render(report: &BenchReport, summaries: &[Summary], comparisons: &[Comparison]) -> String {
    let contenders: Vec<&str> = report.contenders.iter().map(|c| c.name()).collect();
    let faults_run: Vec<&str> = report.faults.iter().map(|f| f.name()).collect();
    let minutes = (report.finished_at - report.started_at).num_seconds() as f64 / 60.0;
    let mut out = format!(
        "# homeostat bench, {}\n\n\
         Seed {}; {} trials of each fault per contender; contenders: {}; faults: {}; a fault not healed \
         within {:.1} s counts as not recovered. The run took {minutes:.1} minutes, {} trials in all.\n\n{}\n\n",
        report.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        report.seed,
        report.trials_per_fault,
        contenders.join(", "),
        faults_run.join(", "),
        report.fault_timeout_s,
        report.trials.len(),
        report.settings,
    );
    let _ = write!(
        out,
        "Seconds count from the fault's injection. _Detected_ is the median over the trials in which the \
         contender noticed the fault, and in how many of all it did: homeostat when an alert on the target \
         reached it (or the runtime restarted the target first), a baseline when it acted. _Recovered_ is the median over all \
         trials, a trial not healed within the timeout counting as longer than any other, with the 95% \
         interval of the median in brackets (percentile bootstrap, {RESAMPLES} resamples); it reads \
         \"not recovered\" when at least half of the trials were not healed. Requests are service_a's \
         over the same horizon for every contender, from injection until the timeout later (those due \
         after a trial ended early, recovered and settled, count as served at the load's rate); \
         availability is the share of them that did not fail. Harmful actions are actions after which more requests failed in the next 10 s than in the \
         10 s before.\n\n"
    );
    if !report.failures.is_empty() {
        let _ = writeln!(
            out,
            "**Incomplete run:** a contender's stack failed part-way; its later trials are missing: {}.\n",
            report.failures.join("; ")
        );
    }
    out.push_str("## Results\n\n");
    let faults = faults(&report.trials);
    if faults.is_empty() {
        out.push_str("No trial ran.\n\n");
    }
    for &fault in &faults {
        results(&mut out, fault, summaries);
    }
    out.push_str(
        "![recovery](recovery.svg)\n\n![availability](availability.svg)\n\n\
         ## homeostat against the baselines\n\n\
         Recovery is _faster_ or _slower_ where the 95% intervals of the median do not overlap, and \
         _no clear difference_ where they do. Availability is homeostat's less the baseline's, in \
         percentage points: a point estimate, without an interval. For the control (no fault) only \
         availability and actions are compared.\n\n",
    );
    if comparisons.is_empty() {
        out.push_str("Nothing to compare: the run had no homeostat contender or no baseline.\n\n");
    } else {
        against(&mut out, &faults, summaries, comparisons);
    }
    learned_table(&mut out, summaries);
    out
}

/// The table of one fault: a row per contender.
fn results(out: &mut String, fault: Fault, summaries: &[Summary]) {
    let control = fault == Fault::None;
    if control {
        let _ = writeln!(out, "### none (the control: no fault)\n");
    } else {
        let _ = writeln!(out, "### {fault}\n");
    }
    out.push_str(
        "| contender | detected (s) | recovered (s) | p90 (s) | recovered within timeout | \
         requests failed / sent | availability | actions per trial | harmful actions | escalations |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in summaries.iter().filter(|s| s.fault == fault) {
        let detected = match &s.detect {
            Some(d) => format!("{:.1} ({}/{})", d.median, s.detected, s.n),
            None => format!("— ({}/{})", s.detected, s.n),
        };
        let (median, p90) = match &s.recover {
            Some(r) => (recovered(r, s.timeout_s), seconds(r.p90, s.timeout_s)),
            None => ("—".to_owned(), "—".to_owned()),
        };
        let within = s.recovered.map_or_else(|| "—".to_owned(), |k| format!("{k}/{}", s.n));
        let _ = writeln!(
            out,
            "| {} | {detected} | {median} | {p90} | {within} | {} / {} | {} | {:.1} | {} | {} |",
            s.contender,
            s.requests_failed,
            s.requests_total,
            percent(s.availability),
            s.actions_per_trial,
            s.harmful_actions,
            s.escalations,
        );
    }
    out.push('\n');
}

/// Per fault, each homeostat contender against each baseline, and then, in
/// words, where a baseline wins.
fn against(out: &mut String, faults: &[Fault], summaries: &[Summary], comparisons: &[Comparison]) {
    let find =
        |contender: Contender, fault: Fault| summaries.iter().find(|s| s.contender == contender && s.fault == fault);
    let interval_of = |contender: Contender, fault: Fault| {
        find(contender, fault)
            .and_then(|s| s.recover.as_ref().map(|r| interval(r, s.timeout_s)))
            .unwrap_or_else(|| "—".to_owned())
    };
    let mut wins = Vec::new();
    for &fault in faults {
        let rows: Vec<&Comparison> = comparisons.iter().filter(|c| c.fault == fault).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "### {fault}\n");
        out.push_str(
            "| homeostat | baseline | recovery | homeostat's interval (s) | baseline's interval (s) | \
             availability (points) | actions per trial |\n|---|---|---|---|---|---|---|\n",
        );
        for c in rows {
            let (mine, theirs) = (interval_of(c.candidate, fault), interval_of(c.baseline, fault));
            let recovery = c.recovery.map_or("—", Difference::words);
            let points = c.availability_points.map_or_else(|| "—".to_owned(), signed);
            let _ = writeln!(
                out,
                "| {} | {} | {recovery} | {mine} | {theirs} | {points} | {} |",
                c.candidate,
                c.baseline,
                signed(c.actions_per_trial)
            );
            if c.recovery == Some(Difference::Slower) {
                wins.push(format!(
                    "{fault}: {} recovers faster than {} (interval of the median {theirs} against {mine}).",
                    c.baseline, c.candidate
                ));
            }
            if let Some(points) = c.availability_points.filter(|p| *p <= -0.05) {
                wins.push(format!(
                    "{fault}: {} keeps more requests: its availability is {:.1} points above {}'s.",
                    c.baseline, -points, c.candidate
                ));
            }
            if fault == Fault::None && c.actions_per_trial > 0.0 {
                let base = find(c.baseline, fault).map_or(0.0, |s| s.actions_per_trial);
                wins.push(format!(
                    "none: with no fault to heal, {} acted {:.1} times per trial, {} {base:.1}.",
                    c.candidate,
                    base + c.actions_per_trial,
                    c.baseline
                ));
            }
        }
        out.push('\n');
    }
    if wins.is_empty() {
        out.push_str("No baseline recovers faster, keeps more requests or acts less than homeostat.\n\n");
    } else {
        out.push_str("Where a baseline wins:\n\n");
        for win in wins {
            let _ = writeln!(out, "- {win}");
        }
        out.push('\n');
    }
}

/// The learned contender's first trial of each fault against its last.
fn learned_table(out: &mut String, summaries: &[Summary]) {
    out.push_str("## The learned contender, first trial against last\n\n");
    let learned: Vec<&Summary> = summaries
        .iter()
        .filter(|s| s.contender == Contender::Learned && s.fault != Fault::None)
        .collect();
    if learned.is_empty() {
        out.push_str("No trial of a fault ran under the learned contender.\n");
        return;
    }
    out.push_str(
        "The learned contender carries its policy's state from trial to trial: does it get faster? Seconds \
         to recovery of each fault's first and last trial, and the median over all; `learned.svg` shows \
         every trial in the order run.\n\n\
         | fault | trials | first (s) | last (s) | median (s) |\n|---|---|---|---|---|\n",
    );
    for s in learned {
        let median = s.recover.as_ref().map_or_else(
            || "—".to_owned(),
            |r| {
                if r.median.is_finite() {
                    format!("{:.1}", r.median)
                } else {
                    "not recovered".to_owned()
                }
            },
        );
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {median} |",
            s.fault,
            s.n,
            trial_seconds(s.first_recover_s),
            trial_seconds(s.last_recover_s)
        );
    }
    out.push_str("\n![learned](learned.svg)\n");
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type Root<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The plots' size in pixels, and the width on the right kept for the
/// legend.
const SIZE: (u32, u32) = (1300, 480);
const LEGEND_WIDTH: u32 = 170;

/// A plotting error, as text.
fn why(error: impl std::fmt::Display) -> String {
    error.to_string()
}

/// Each contender's colour.
fn colour(contender: Contender) -> RGBAColor {
    let RGBColor(r, g, b) = match contender {
        Contender::None => RGBColor(128, 128, 128),
        Contender::RestartPolicy => RGBColor(230, 130, 20),
        Contender::Healthcheck => RGBColor(150, 60, 180),
        Contender::Playbook => RGBColor(30, 100, 220),
        Contender::Learned => RGBColor(20, 160, 80),
    };
    RGBAColor(r, g, b, 1.0)
}

/// A deterministic spread of a trial's dot across its slot, from -0.5 to
/// 0.5: the fractional parts of multiples of the golden ratio, so that
/// neighbouring trial numbers land apart.
fn jitter(trial: usize) -> f64 {
    (trial as f64 * 0.618_033_988_749_895).fract() - 0.5
}

/// The timeout unrecovered trials are drawn at (the longest of the
/// faults'), and the y axis' top, above it and every recovery.
fn time_axis(report: &BenchReport) -> (f64, f64) {
    let faults = report.trials.iter().filter(|t| t.fault != Fault::None);
    let timeout = faults
        .clone()
        .map(|t| t.timeout_s)
        .chain([report.fault_timeout_s])
        .filter(|s| s.is_finite())
        .fold(0.0, f64::max);
    let timeout = if timeout > 0.0 { timeout } else { 1.0 };
    let longest = faults
        .filter_map(|t| t.recover_s)
        .filter(|s| s.is_finite())
        .fold(timeout, f64::max);
    (timeout, longest * 1.15)
}

/// The dashed line unrecovered trials are drawn on, labelled above its
/// left end.
fn timeout_line<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, x: (f64, f64), timeout: f64) -> Result<(), String> {
    let line = DashedLineSeries::new([(x.0, timeout), (x.1, timeout)], 6, 4, BLACK.mix(0.5).into());
    chart.draw_series(line).map_err(why)?;
    let area = chart.plotting_area();
    let (left, y) = chart.backend_coord(&(x.0, timeout));
    let (base_x, base_y) = area.get_base_pixel();
    let style = ("sans-serif", 12)
        .into_font()
        .color(&BLACK.mix(0.7))
        .pos(Pos::new(HPos::Left, VPos::Bottom));
    let label = Text::new(
        format!("timeout {timeout:.1} s: not recovered"),
        (left - base_x + 4, y - base_y - 10),
        style,
    );
    area.strip_coord_spec().draw(&label).map_err(why)
}

/// Faint lines between the x groups at 0, 1, …, `groups - 1`.
fn separators<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, groups: usize, y: (f64, f64)) -> Result<(), String> {
    let lines = (1..groups).map(|i| {
        let x = i as f64 - 0.5;
        PathElement::new(vec![(x, y.0), (x, y.1)], BLACK.mix(0.15))
    });
    chart.draw_series(lines).map_err(why)?;
    Ok(())
}

/// Writes each group's name under the x axis, centred on 0, 1, …; in two
/// rows when there are many, so that long names do not run into each other.
fn group_labels(root: &Root, chart: &Chart, names: &[&str], y: f64) -> Result<(), String> {
    let style = ("sans-serif", 13)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (i, name) in names.iter().enumerate() {
        let (x, top) = chart.backend_coord(&(i as f64, y));
        let row = if names.len() > 6 && i % 2 == 1 { 18 } else { 0 };
        root.draw(&Text::new(name.to_string(), (x, top + 6 + row), style.clone()))
            .map_err(why)?;
    }
    Ok(())
}

/// A line of text in the middle of the plot, for a plot with nothing to
/// show.
fn nothing(root: &Root, text: &str) -> Result<(), String> {
    let (w, h) = root.dim_in_pixel();
    let style = ("sans-serif", 16)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(text.to_owned(), ((w / 2) as i32, (h / 2) as i32), style))
        .map_err(why)
}

/// How a legend entry is marked.
enum Mark {
    Dot(RGBAColor),
    Cross(RGBAColor),
    Bar(RGBAColor),
    Line(RGBAColor),
}

/// The legend, top down in the width kept for it on the right.
fn legend(root: &Root, entries: &[(&str, Mark)]) -> Result<(), String> {
    let x = (SIZE.0 - LEGEND_WIDTH) as i32 + 16;
    let style = ("sans-serif", 13)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (label, mark)) in entries.iter().enumerate() {
        let y = 60 + 20 * i as i32;
        match *mark {
            Mark::Dot(c) => root.draw(&Circle::new((x + 6, y), 4, c.filled())),
            Mark::Cross(c) => root.draw(&Cross::new((x + 6, y), 5, c.stroke_width(2))),
            Mark::Bar(c) => root.draw(&Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled())),
            Mark::Line(c) => root.draw(&PathElement::new(vec![(x - 2, y), (x + 14, y)], c.stroke_width(2))),
        }
        .map_err(why)?;
        root.draw(&Text::new(label.to_string(), (x + 22, y), style.clone()))
            .map_err(why)?;
    }
    Ok(())
}

/// A chart on `root` with a numeric x and y axis, room for the legend on
/// the right, and the x axis' labels left to the caller.
fn chart<'a, 'b>(
    root: &'a Root<'b>,
    caption: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Chart<'a, 'b>, String> {
    ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(48)
        .y_label_area_size(48)
        .build_cartesian_2d(x, y)
        .map_err(why)
}

/// Seconds to recovery per fault (x groups, the control left out) and
/// contender (a colour each): every trial a dot, an unrecovered one a cross
/// on the timeout line.
fn recovery(report: &BenchReport) -> Result<String, String> {
    let faults: Vec<Fault> = faults(&report.trials)
        .into_iter()
        .filter(|f| *f != Fault::None)
        .collect();
    let contenders = contenders(&report.trials);
    let (timeout, top) = time_axis(report);
    let right = faults.len().max(1) as f64 - 0.5;
    let slot = 0.8 / contenders.len().max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(why)?;
        let caption = "homeostat bench: seconds from injection to recovery, every trial a dot";
        let mut chart = chart(&root, caption, -0.5..right, 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("seconds to recovery")
            .draw()
            .map_err(why)?;
        separators(&mut chart, faults.len(), (0.0, top))?;
        timeout_line(&mut chart, (-0.5, right), timeout)?;
        let mut entries = Vec::new();
        for (j, &contender) in contenders.iter().enumerate() {
            let colour = colour(contender);
            let place = |t: &Trial| -> Option<(f64, f64)> {
                let i = faults.iter().position(|f| *f == t.fault)?;
                let x = i as f64 - 0.4 + (j as f64 + 0.5 + 0.6 * jitter(t.trial)) * slot;
                Some((x, t.recover_s.unwrap_or(timeout)))
            };
            let trials = report.trials.iter().filter(|t| t.contender == contender);
            let dots = trials.clone().filter(|t| t.recover_s.is_some()).filter_map(place);
            chart
                .draw_series(dots.map(|p| Circle::new(p, 4, colour.mix(0.8).filled())))
                .map_err(why)?;
            let crosses = trials.filter(|t| t.recover_s.is_none()).filter_map(place);
            chart
                .draw_series(crosses.map(|p| Cross::new(p, 5, colour.stroke_width(2))))
                .map_err(why)?;
            entries.push((contender.name(), Mark::Dot(colour)));
        }
        if report
            .trials
            .iter()
            .any(|t| t.fault != Fault::None && t.recover_s.is_none())
        {
            entries.push(("not recovered", Mark::Cross(BLACK.to_rgba())));
        }
        legend(&root, &entries)?;
        let names: Vec<&str> = faults.iter().map(|f| f.name()).collect();
        group_labels(&root, &chart, &names, 0.0)?;
        if faults.is_empty() {
            nothing(&root, "no fault to recover from in this run")?;
        }
        root.present().map_err(why)?;
    }
    Ok(svg)
}

/// Availability per fault (x groups, the control included) and contender
/// (a bar each). The y axis starts at the tens below the lowest bar less
/// 2 points (at most 90, at least 0), so that small differences show.
fn availability(report: &BenchReport, summaries: &[Summary]) -> Result<String, String> {
    let faults = faults(&report.trials);
    let contenders = contenders(&report.trials);
    let lowest = summaries
        .iter()
        .filter_map(|s| s.availability)
        .map(|a| 100.0 * a)
        .fold(100.0, f64::min);
    let floor = (((lowest - 2.0) / 10.0).floor() * 10.0).clamp(0.0, 90.0);
    let top = 100.0 + 0.1 * (100.0 - floor);
    let right = faults.len().max(1) as f64 - 0.5;
    let slot = 0.8 / contenders.len().max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(why)?;
        let caption = "homeostat bench: availability, the share of requests that did not fail";
        let mut chart = chart(&root, caption, -0.5..right, floor..top)?;
        let percent_label = |v: &f64| {
            if *v > 100.0 + 1e-9 {
                String::new()
            } else {
                format!("{v:.0}")
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&percent_label)
            .y_desc("availability (%)")
            .draw()
            .map_err(why)?;
        separators(&mut chart, faults.len(), (floor, top))?;
        let mut entries = Vec::new();
        for (j, &contender) in contenders.iter().enumerate() {
            let colour = colour(contender);
            let bars = summaries.iter().filter(|s| s.contender == contender).filter_map(|s| {
                let i = faults.iter().position(|f| *f == s.fault)? as f64;
                let left = i - 0.4 + j as f64 * slot;
                let value = (100.0 * s.availability?).max(floor);
                Some(Rectangle::new(
                    [(left + 0.1 * slot, floor), (left + 0.9 * slot, value)],
                    colour.filled(),
                ))
            });
            chart.draw_series(bars).map_err(why)?;
            entries.push((contender.name(), Mark::Bar(colour)));
        }
        legend(&root, &entries)?;
        let names: Vec<&str> = faults.iter().map(|f| f.name()).collect();
        group_labels(&root, &chart, &names, floor)?;
        if faults.is_empty() {
            nothing(&root, "no trial in this run")?;
        }
        root.present().map_err(why)?;
    }
    Ok(svg)
}

/// The learned contender's seconds to recovery over its trials, in the
/// order run (x: the trial's `order`), a colour per fault, the control
/// left out; an unrecovered trial a cross on the timeout line. Without
/// learned trials, the plot says so.
fn learned(report: &BenchReport) -> Result<String, String> {
    let mut trials: Vec<&Trial> = report
        .trials
        .iter()
        .filter(|t| t.contender == Contender::Learned && t.fault != Fault::None)
        .collect();
    trials.sort_by_key(|t| t.order);
    let faults: Vec<Fault> = faults(&report.trials)
        .into_iter()
        .filter(|f| trials.iter().any(|t| t.fault == *f))
        .collect();
    let (timeout, top) = time_axis(report);
    let last = trials.iter().map(|t| t.order).max().unwrap_or(1).max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(why)?;
        let caption = "homeostat bench: the learned contender's seconds to recovery, in the order run";
        let mut chart = chart(&root, caption, 0.5..last + 0.5, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("trial, in the order run")
            .y_desc("seconds to recovery")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .map_err(why)?;
        if trials.is_empty() {
            nothing(&root, "no trial of a fault ran under the learned contender")?;
        } else {
            timeout_line(&mut chart, (0.5, last + 0.5), timeout)?;
            let mut entries = Vec::new();
            for (i, &fault) in faults.iter().enumerate() {
                let colour = Palette99::pick(i).to_rgba();
                let points: Vec<(f64, f64, bool)> = trials
                    .iter()
                    .filter(|t| t.fault == fault)
                    .map(|t| (t.order as f64, t.recover_s.unwrap_or(timeout), t.recover_s.is_some()))
                    .collect();
                let line = LineSeries::new(points.iter().map(|p| (p.0, p.1)), colour.mix(0.4));
                chart.draw_series(line).map_err(why)?;
                let dots = points
                    .iter()
                    .filter(|p| p.2)
                    .map(|p| Circle::new((p.0, p.1), 4, colour.filled()));
                chart.draw_series(dots).map_err(why)?;
                let crosses = points
                    .iter()
                    .filter(|p| !p.2)
                    .map(|p| Cross::new((p.0, p.1), 5, colour.stroke_width(2)));
                chart.draw_series(crosses).map_err(why)?;
                entries.push((fault.name(), Mark::Line(colour)));
            }
            if trials.iter().any(|t| t.recover_s.is_none()) {
                entries.push(("not recovered", Mark::Cross(BLACK.to_rgba())));
            }
            legend(&root, &entries)?;
        }
        root.present().map_err(why)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every trial of a fault restarts, harmlessly and without escalating.
    fn trial(contender: Contender, fault: Fault, n: usize, recover: Option<f64>) -> Trial {
        Trial {
            actions: if fault == Fault::None {
                vec![]
            } else {
                vec!["restart".into()]
            },
            harmful_actions: 0,
            escalations: 0,
            ..Trial::example(contender, fault, n, recover, if recover.is_some() { 5 } else { 40 })
        }
    }

    fn report(trials: Vec<Trial>) -> BenchReport {
        BenchReport {
            started_at: chrono::DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
                .unwrap()
                .into(),
            finished_at: chrono::DateTime::parse_from_rfc3339("2024-05-01T10:30:00Z")
                .unwrap()
                .into(),
            seed: 7,
            trials_per_fault: 3,
            contenders: vec![Contender::RestartPolicy, Contender::Learned],
            faults: vec![Fault::Crash, Fault::None],
            fault_timeout_s: 60.0,
            settings: "the demo's alert path".into(),
            trials,
            failures: Vec::new(),
        }
    }

    fn sample() -> BenchReport {
        use Contender::{Learned, RestartPolicy};
        report(vec![
            trial(RestartPolicy, Fault::Crash, 1, Some(10.0)),
            trial(RestartPolicy, Fault::Crash, 2, None),
            trial(RestartPolicy, Fault::Crash, 3, None),
            trial(RestartPolicy, Fault::None, 1, None),
            trial(Learned, Fault::Crash, 1, Some(9.0)),
            trial(Learned, Fault::Crash, 2, Some(5.0)),
            trial(Learned, Fault::Crash, 3, Some(4.0)),
            trial(Learned, Fault::None, 1, None),
        ])
    }

    #[test]
    fn the_files_are_written_with_summaries_and_tables() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("bench");
        write(&sample(), &out).unwrap();
        for name in [
            "report.json",
            "report.md",
            "recovery.svg",
            "availability.svg",
            "learned.svg",
        ] {
            assert!(out.join(name).is_file(), "{name}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(json["run"]["seed"], 7);
        assert_eq!(json["run"]["trials"].as_array().unwrap().len(), 8);
        let summaries = json["summaries"].as_array().unwrap();
        assert_eq!(summaries.len(), 4);
        assert_eq!(summaries[0]["contender"], "restart-policy");
        assert_eq!(summaries[0]["fault"], "crash");
        // 10, ∞, ∞: the median is ∞, null in JSON.
        assert_eq!(summaries[0]["recover"]["median"], serde_json::Value::Null);
        assert_eq!(summaries[2]["recover"]["median"], 5.0);
        assert_eq!(summaries[3]["recover"], serde_json::Value::Null);
        let comparisons = json["comparisons"].as_array().unwrap();
        assert_eq!(comparisons.len(), 2);
        assert_eq!(comparisons[0]["baseline"], "restart-policy");

        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(md.starts_with("# homeostat bench, 2024-05-01 10:00:00 UTC\n"), "{md}");
        assert!(md.contains("Seed 7; 3 trials of each fault per contender"), "{md}");
        assert!(
            md.contains(
                "| restart-policy | 5.0 (1/3) | not recovered [10.0, > 60.0 s] | > 60.0 s | 1/3 | 85 / 300 | 71.7% | 1.0 | 0 | 0 |"
            ),
            "{md}"
        );
        assert!(md.contains("| learned | 2.5 (3/3) | 5.0 ["), "{md}");
        assert!(md.contains("| 3/3 | 15 / 300 | 95.0% | 1.0 | 0 | 0 |"), "{md}");
        assert!(
            md.contains("| restart-policy | — (0/1) | — | — | — | 40 / 100 | 60.0% | 0.0 | 0 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| learned | restart-policy | faster | [4.0, 9.0] | [10.0, > 60.0 s] | +23.3 | 0.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| learned | restart-policy | — | — | — | 0.0 | 0.0 |"),
            "{md}"
        );
        assert!(md.contains("No baseline recovers faster"), "{md}");
        assert!(md.contains("| crash | 3 | 9.0 | 4.0 | 5.0 |"), "{md}");

        let recovery = std::fs::read_to_string(out.join("recovery.svg")).unwrap();
        assert!(recovery.starts_with("<svg") && recovery.contains("crash") && recovery.contains("timeout 60.0 s"));
        assert!(!recovery.contains(">none<"), "the control is left out");
        let learned = std::fs::read_to_string(out.join("learned.svg")).unwrap();
        assert!(learned.contains("crash"), "{learned}");
    }

    #[test]
    fn a_baseline_that_wins_is_named() {
        use Contender::{Learned, RestartPolicy};
        let md = markdown(&report(vec![
            trial(RestartPolicy, Fault::Crash, 1, Some(3.0)),
            trial(RestartPolicy, Fault::Crash, 2, Some(3.0)),
            trial(Learned, Fault::Crash, 1, None),
            trial(Learned, Fault::Crash, 2, None),
            trial(Learned, Fault::None, 1, None),
            Trial {
                actions: vec!["restart".into()],
                ..trial(RestartPolicy, Fault::None, 1, None)
            },
        ]));
        assert!(
            md.contains(
                "- crash: restart-policy recovers faster than learned (interval of the median [3.0, 3.0] against \
                 [> 60.0 s, > 60.0 s])."
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "- crash: restart-policy keeps more requests: its availability is 35.0 points above learned's."
            ),
            "{md}"
        );
        assert!(
            md.contains("| crash | 2 | not recovered | not recovered | not recovered |"),
            "{md}"
        );
    }

    #[test]
    fn an_empty_run_writes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        write(&report(vec![]), dir.path()).unwrap();
        for name in [
            "report.json",
            "report.md",
            "recovery.svg",
            "availability.svg",
            "learned.svg",
        ] {
            assert!(dir.path().join(name).is_file(), "{name}");
        }
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("No trial ran.") && md.contains("No trial of a fault ran under the learned contender."));
        let learned = std::fs::read_to_string(dir.path().join("learned.svg")).unwrap();
        assert!(learned.contains("no trial of a fault ran under the learned contender"));
    }
}
