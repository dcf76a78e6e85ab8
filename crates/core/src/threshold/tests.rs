use super::*;

fn spec(yaml: &str) -> ThresholdSpec {
    serde_yaml::from_str(yaml).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn config(specs: &str) -> ThresholdsConfig {
    serde_yaml::from_str(&format!("prometheus_url: http://127.0.0.1:9090\nspecs:\n{specs}")).unwrap()
}

const LATENCY: &str = "name: latency\nexpr: histogram_quantile(0.99, sum by (service, le) (rate(x_bucket[5m])))\nalert: LatencyAboveBand\n";

#[test]
fn series_keys_are_canonical_and_escaped() {
    assert_eq!(series_key(&labels(&[])), "{}");
    assert_eq!(
        series_key(&labels(&[("service", "b"), ("job", "a\"q\\")])),
        r#"{job="a\"q\\",service="b"}"#
    );
}

#[test]
fn samples_go_on_the_grid_and_queries_are_split() {
    let grid = to_grid(
        [(100.0, 1.0), (160.0, 2.0), (281.0, 4.0), (1000.0, 9.0)],
        100,
        Duration::from_secs(60),
        4,
    );
    assert_eq!(grid[..2], [1.0, 2.0]);
    assert!(grid[2].is_nan());
    assert_eq!(grid[3], 4.0);
    assert_eq!(
        query_windows(0, Duration::from_secs(60), 25, 10),
        vec![(0, 540), (600, 1140), (1200, 1440)]
    );
    assert_eq!(query_windows(0, Duration::from_secs(60), 10, 10), vec![(0, 540)]);
}

#[test]
fn feedback_steps_are_bounded() {
    let bounds = FeedbackConfig::default();
    let wider = step_coverage(0.99, Adjust::Widen, &bounds);
    assert!((wider - 0.995).abs() < 1e-12, "{wider}");
    let tighter = step_coverage(0.99, Adjust::Tighten, &bounds);
    assert!((tighter - 0.98).abs() < 1e-12, "{tighter}");
    assert_eq!(step_coverage(0.99, Adjust::Keep, &bounds), 0.99);
    let mut c = 0.99;
    for _ in 0..50 {
        c = step_coverage(c, Adjust::Widen, &bounds);
    }
    assert_eq!(c, bounds.max_coverage);
    for _ in 0..50 {
        c = step_coverage(c, Adjust::Tighten, &bounds);
    }
    assert_eq!(c, bounds.min_coverage);
}

fn fitted(series: &[(&str, f64, f64)]) -> SpecFit {
    SpecFit {
        series: series
            .iter()
            .map(|(service, lower, upper)| {
                let l = labels(&[("service", service)]);
                SeriesFit {
                    key: series_key(&l),
                    labels: l,
                    coverage: 0.99,
                    model: "ets".into(),
                    points: 100,
                    lower: *lower,
                    upper: *upper,
                    point: (lower + upper) / 2.0,
                }
            })
            .collect(),
        skipped: vec![],
        insufficient: vec![],
    }
}

#[test]
fn rules_change_only_when_a_bound_moves_past_the_fraction_or_a_series_comes_or_goes() {
    let before = fitted(&[("a", 1.0, 3.0), ("b", 0.0, 0.0)]);
    // a's scale is 3 (its upper bound): 5% of it is 0.15.
    assert!(!changed(&before, &fitted(&[("a", 1.1, 3.13), ("b", 0.0, 0.0)]), 0.05));
    assert!(changed(&before, &fitted(&[("a", 1.0, 3.16), ("b", 0.0, 0.0)]), 0.05));
    assert!(changed(&before, &fitted(&[("a", 0.8, 3.0), ("b", 0.0, 0.0)]), 0.05));
    // A zero-width band at zero has no scale: any move is a change.
    assert!(changed(&before, &fitted(&[("a", 1.0, 3.0), ("b", 0.0, 1e-9)]), 0.05));
    // Series that come, go or are replaced.
    assert!(changed(&before, &fitted(&[("a", 1.0, 3.0)]), 0.05));
    assert!(changed(&before, &fitted(&[("a", 1.0, 3.0), ("c", 0.0, 0.0)]), 0.05));
    assert!(changed(
        &before,
        &fitted(&[("a", 1.0, 3.0), ("b", 0.0, 0.0), ("c", 0.0, 0.0)]),
        0.05
    ));
    // A bound that became NaN is a change; the same fit is not, even at 0.
    assert!(changed(
        &before,
        &fitted(&[("a", 1.0, f64::NAN), ("b", 0.0, 0.0)]),
        0.05
    ));
    assert!(!changed(&before, &before, 0.0));
    assert!(changed(
        &before,
        &fitted(&[("a", 1.0, 3.0 + 1e-12), ("b", 0.0, 0.0)]),
        0.0
    ));
}

#[test]
fn one_rule_per_series_and_side_with_the_series_labels() {
    let mut s = spec(LATENCY);
    s.direction = Direction::Both;
    s.labels.insert("severity".into(), "page".into());
    s.annotations
        .insert("summary".into(), "p99 {{ printf \"%.3f\" $value }}s".into());
    let group = rule_group(&s, &fitted(&[("a", 0.1, 0.5), ("b$1", 0.2, 0.9)]));
    assert_eq!(group.name, "homeostat_threshold_latency");
    assert_eq!(group.rules.len(), 4);
    let above_a = &group.rules[0];
    assert_eq!(above_a.alert, "LatencyAboveBand");
    assert_eq!(
        above_a.expr,
        format!(
            "({}) > 0.5 and on (service) label_replace(vector(1), \"service\", \"a\", \"\", \"\")",
            s.expr
        )
    );
    assert_eq!(above_a.for_, "5m");
    assert_eq!(above_a.labels["severity"], "page");
    assert_eq!(above_a.labels[SPEC_LABEL], "latency");
    assert_eq!(above_a.labels[DIRECTION_LABEL], "above");
    assert_eq!(above_a.annotations[SERIES_ANNOTATION], r#"{service="a"}"#);
    assert!(group.rules[1].expr.contains(") < 0.1 and on (service)"));
    // `$` in a label value is escaped for label_replace's replacement.
    assert!(
        group.rules[2].expr.contains(r#""service", "b$$1""#),
        "{}",
        group.rules[2].expr
    );

    let yaml = render(&s, &fitted(&[("a", 0.1, 0.5)]), Utc::now());
    let parsed: RuleFile = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(parsed.groups.1.rules.len(), 2);
    // The series themselves, recorded with the spec's name for the dashboards.
    let observed = &parsed.groups.0.rules[0];
    assert_eq!(observed.record, OBSERVED);
    assert_eq!(
        observed.expr,
        format!("label_replace({}, \"threshold_spec\", \"latency\", \"\", \"\")", s.expr)
    );
    for key in [
        "groups:",
        "name:",
        "rules:",
        "record:",
        "alert:",
        "expr:",
        "for:",
        "labels:",
        "annotations:",
    ] {
        assert!(yaml.contains(key), "{key} missing from\n{yaml}");
    }
}

#[test]
fn a_series_without_labels_needs_no_filter_and_exhaustion_adds_its_template() {
    let mut s =
        spec("name: heap\nexpr: sum(heap_bytes)\nalert: HeapAboveBand\nexhaustion: {limit: 1e9, window: 30m}\n");
    let mut fit = fitted(&[("x", 1.0, 2.0)]);
    fit.series[0].labels.clear();
    fit.series[0].key = "{}".into();
    let group = rule_group(&s, &fit);
    assert_eq!(group.rules[0].expr, "(sum(heap_bytes)) > 2");
    let template = &group.rules[0].annotations["time_to_exhaustion"];
    assert!(
        template.contains("predict_linear((sum(heap_bytes))[30m:1m], 3600)"),
        "{template}"
    );
    assert!(
        template.starts_with("{{ with query `(1000000000 - (sum(heap_bytes)))"),
        "{template}"
    );
    s.exhaustion = None;
    assert!(!rule_group(&s, &fit).rules[0]
        .annotations
        .contains_key("time_to_exhaustion"));
}

#[test]
fn validation_names_the_key() {
    let check = |specs: &str| config(specs).validate().unwrap_err();
    assert_eq!(
        config(LATENCY.replace("name", "- name").replace('\n', "\n  ").trim_end()).validate(),
        Ok(())
    );
    let (key, message) = check("- {name: 1bad, expr: up, alert: A}");
    assert_eq!(key, "thresholds.specs[0].name");
    assert!(message.contains("letters"), "{message}");
    let (key, _) = check("- {name: a, expr: up, alert: A}\n- {name: a, expr: up, alert: A}");
    assert_eq!(key, "thresholds.specs[1].name");
    let (key, _) = check("- {name: a, expr: up, alert: A, coverage: 1.2}");
    assert_eq!(key, "thresholds.specs[0].coverage");
    let (key, _) = check("- {name: a, expr: ' ', alert: A}");
    assert_eq!(key, "thresholds.specs[0].expr");
    let (key, _) = check("- {name: a, expr: up, alert: A, step: 1s, history: 30d}");
    assert_eq!(key, "thresholds.specs[0].history");
    let (key, _) = check("- {name: a, expr: up, alert: A, labels: {homeostat_threshold: x}}");
    assert_eq!(key, "thresholds.specs[0].labels.homeostat_threshold");
    let (key, _) = check("- {name: a, expr: up, alert: 'not a name'}");
    assert_eq!(key, "thresholds.specs[0].alert");
    for min_change in [-0.1, 1.0, f64::NAN] {
        let mut bad = config("- {name: a, expr: up, alert: A}");
        bad.min_change = min_change;
        assert_eq!(bad.validate().unwrap_err().0, "thresholds.min_change", "{min_change}");
    }
    let mut bad_url = config("- {name: a, expr: up, alert: A}");
    bad_url.prometheus_url = "127.0.0.1:9090".into();
    assert_eq!(bad_url.validate().unwrap_err().0, "thresholds.prometheus_url");
    let unknown = serde_yaml::from_str::<ThresholdsConfig>(
        "prometheus_url: http://x\nspecs: [{name: a, expr: up, alert: A, coverge: 0.9}]",
    )
    .unwrap_err()
    .to_string();
    assert!(unknown.contains("unknown field `coverge`"), "{unknown}");
}

fn incident(id: i64, alertname: &str, labels: LabelSet, start_min: i64, end_min: Option<i64>) -> IncidentSummary {
    let t0 = DateTime::parse_from_rfc3339("2026-11-28T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    IncidentSummary {
        id,
        alertname: alertname.into(),
        labels,
        annotations: LabelSet::new(),
        starts_at: t0 + chrono::Duration::minutes(start_min),
        ended_at: end_min.map(|m| t0 + chrono::Duration::minutes(m)),
        acted: false,
    }
}

#[test]
fn feedback_follows_what_the_alerts_did() {
    let mut s = spec(LATENCY);
    s.slo_alerts = vec!["LatencySLO".into()];
    let a = labels(&[("service", "a")]);
    let b = labels(&[("service", "b")]);
    let adaptive = |id, service: &LabelSet, start, end, acted| {
        let mut l = service.clone();
        l.insert(SPEC_LABEL.into(), "latency".into());
        let mut i = incident(id, "LatencyAboveBand", l, start, end);
        i.annotations.insert(SERIES_ANNOTATION.into(), series_key(service));
        i.acted = acted;
        i
    };
    let slo = |id, service: &str, start, end| {
        incident(
            id,
            "LatencySLO",
            labels(&[("service", service), ("severity", "page")]),
            start,
            end,
        )
    };
    let incidents = vec![
        adaptive(1, &a, 0, Some(10), false), // resolved, nothing done: widen a
        adaptive(2, &a, 20, Some(30), true), // resolved after an action: no feedback
        adaptive(3, &b, 40, None, false),    // still firing: no feedback yet
        slo(4, "a", 100, Some(110)),         // a was silent: tighten a
        slo(5, "b", 35, Some(50)),           // b alerted during it: no miss
        slo(6, "a", 5, Some(8)),             // a alerted during it: no miss
        slo(7, "c", 100, Some(110)),         // no such series
        slo(8, "b", 200, None),              // still firing: judged once resolved
    ];
    let events = feedback_events(&s, &[a.clone(), b.clone()], &incidents);
    let summary: Vec<(i64, FeedbackReason, String)> = events
        .iter()
        .map(|e| (e.incident_id, e.reason, e.series.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, FeedbackReason::ResolvedWithoutAction, series_key(&a)),
            (4, FeedbackReason::SloMiss, series_key(&a)),
        ]
    );
}

/// Two days and a half of a daily cycle at 5 minutes: the band for the next
/// hour holds the cycle, and the thresholds are its extremes.
#[test]
fn a_spec_fit_gives_thresholds_around_the_cycle() {
    let s = spec("name: load\nexpr: load\nalert: LoadOutsideBand\nstep: 5m\nrefit_interval: 1h\n");
    let day = 288;
    let value = |i: usize| {
        10.0 + 3.0 * (2.0 * std::f64::consts::PI * i as f64 / day as f64).sin()
            + 0.1 * ((i * 7919 % 13) as f64 - 6.0) / 6.0
    };
    let n = 2 * day + day / 2;
    let history = vec![Series {
        labels: labels(&[("host", "h1")]),
        start: 0,
        values: (0..n).map(value).collect(),
    }];
    let fit = fit_spec(&s, &history, &|_| 0.99);
    assert!(fit.skipped.is_empty(), "{:?}", fit.skipped);
    let series = &fit.series[0];
    assert!(series.model.starts_with("mstl"), "{}", series.model);
    let next: Vec<f64> = (n..n + 12).map(value).collect();
    let (lo, hi) = next
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    assert!(series.lower <= lo && series.upper >= hi, "{series:?} vs [{lo}, {hi}]");
    assert!(series.upper - series.lower < 6.0, "{series:?}");
    let empty = fit_spec(
        &s,
        &[Series {
            labels: LabelSet::new(),
            start: 0,
            values: vec![f64::NAN; 10],
        }],
        &|_| 0.99,
    );
    assert_eq!(empty.skipped[0].reason, "no value in the history");
}

#[test]
fn numbers_for_people_keep_five_significant_digits() {
    assert_eq!(short(0.418709401755601), "0.41871");
    assert_eq!(short(12345.678), "12346");
    assert_eq!(short(2.5), "2.5");
    assert_eq!(short(0.0), "0");
    assert_eq!(short(-0.0002126679795505515), "-2.1267e-4");
    assert_eq!(short(536870912.0), "5.3687e8");
}

const MINUTE: Duration = Duration::from_secs(60);

/// A band's problems: not finite, zero width, below 0 for a series that
/// never was, or past the bounds (see `forecast::degenerate`).
fn assert_sane(band: &Band, history: &[f64]) {
    assert!(!band.point.is_empty());
    if let Some(why) = forecast::degenerate(band, history) {
        panic!("{} band is degenerate: {why}: {band:?}", band.model);
    }
}

fn insufficient(result: Result<(Band, usize), Unfitted>) -> String {
    match result {
        Err(Unfitted::InsufficientHistory { reason, .. }) => reason,
        other => panic!("expected insufficient_history, got {other:?}"),
    }
}

/// Small deterministic noise in [-0.5, 0.5).
fn jitter(i: usize) -> f64 {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
}

/// What was seen (issue #23): `up` with 35 points in a 30-day window at 1m
/// gave ±8.75e29 from mstl[1440, 10080] fitted to the interpolated grid;
/// `node_load1` on 15 points a negative lower bound. Now both wait for
/// history; with their minimum lowered, their bands are sane.
#[test]
fn short_histories_are_insufficient_or_sane_never_absurd() {
    let window = 30 * 1440;
    let mut up = vec![f64::NAN; window];
    for (k, slot) in up[window - 35..].iter_mut().enumerate() {
        *slot = if k % 7 == 3 { 0.0 } else { 1.0 };
    }
    let reason = insufficient(fit_series(&up, MINUTE, 15, 0.99));
    assert!(reason.contains("35 points of history, 20160 needed"), "{reason}");
    assert!(reason.contains("two seasons of 1w"), "{reason}");
    // The spec's own minimum (`min_history: 16m`): a band from the 35 points alone.
    let lowered = FitRules::for_window(MINUTE, window, Some(16 * MINUTE), None);
    let (band, points) = fit_series_with(&up, MINUTE, 15, 0.99, &lowered).unwrap();
    assert_eq!(points, 35);
    assert!(!band.model.contains("mstl"), "{}", band.model);
    assert_sane(&band, &up[window - 35..]);
    assert!(
        band.lower.iter().all(|l| *l >= 0.0) && band.upper.iter().all(|u| *u <= 2.0),
        "{band:?}"
    );

    let load: Vec<f64> = (0..15).map(|i| 0.3 + 0.4 * jitter(i)).collect();
    let mut week = vec![f64::NAN; 7 * 1440 - 15];
    week.extend(&load);
    let reason = insufficient(fit_series(&week, MINUTE, 5, 0.99));
    assert!(reason.contains("15 points of history, 2880 needed"), "{reason}");
    let any = FitRules::for_window(MINUTE, 15, Some(2 * MINUTE), None);
    let (band, _) = fit_series_with(&load, MINUTE, 5, 0.99, &any).unwrap();
    assert_sane(&band, &load);
    assert!(band.lower.iter().all(|l| *l >= 0.0), "negative load: {band:?}");

    // A window mostly empty since the series' first value: interpolation, not history.
    let sparse: Vec<f64> = (0..400)
        .map(|i| if i % 3 == 0 { 1.0 + jitter(i) } else { f64::NAN })
        .collect();
    let reason = insufficient(fit_series(&sparse, MINUTE, 5, 0.99));
    assert!(reason.contains("values at only 134 of the 400 steps"), "{reason}");
}

/// A constant p99 (a histogram's lowest bucket: 0.00495) got a zero-width
/// band; a constant gets ±10% of its value, and one constant at 0 (nothing
/// to measure a width by) waits in `insufficient_history`.
#[test]
fn constant_series_get_a_width_or_wait() {
    let p99 = vec![0.00495; 200];
    let (band, _) = fit_series(&p99, MINUTE, 10, 0.99).unwrap();
    assert_eq!(band.model, "constant");
    assert_sane(&band, &p99);
    assert!(
        (band.upper[0] - 0.005445).abs() < 1e-12 && (band.lower[0] - 0.004455).abs() < 1e-12,
        "{band:?}"
    );
    let reason = insufficient(fit_series(&[0.0; 200], MINUTE, 10, 0.99));
    assert!(reason.starts_with("constant at 0"), "{reason}");
}

/// A latency with a restart spike (a few seconds for a minute) in its ten
/// minutes at 5 s: the band is about the latency, not ±20 s around it
/// (seen in the demo: ±21.9 s around a 5 ms forecast), and never below 0.
#[test]
fn a_restart_spike_does_not_blow_up_the_band() {
    let step = Duration::from_secs(5);
    let y: Vec<f64> = (0..120)
        .map(|i| {
            if (60..72).contains(&i) {
                3.0 + jitter(i)
            } else {
                0.005 + 0.001 * jitter(i)
            }
        })
        .collect();
    let (band, _) = fit_series(&y, step, 6, 0.99).unwrap();
    assert_sane(&band, &y);
    assert!(band.upper.iter().all(|u| *u < 0.05), "{}: {band:?}", band.model);
    assert!(band.lower.iter().all(|l| *l >= 0.0), "{band:?}");
    assert!(band.upper.iter().zip(&band.lower).all(|(u, l)| u > l), "{band:?}");
}

/// Three days of a daily cycle at 5m with six hours missing in the middle
/// and a scrape outage at the end: a sane band, seasonal.
#[test]
fn a_gap_in_the_history_gives_a_sane_band() {
    let day = 288;
    let y: Vec<f64> = (0..3 * day)
        .map(|i| {
            if (day + 40..day + 112).contains(&i) || i >= 3 * day - 3 {
                f64::NAN
            } else {
                5.0 + 2.0 * (2.0 * std::f64::consts::PI * i as f64 / day as f64).sin() + 0.2 * jitter(i)
            }
        })
        .collect();
    let (band, points) = fit_series(&y, Duration::from_secs(300), 12, 0.99).unwrap();
    assert_eq!(points, 3 * day - 72 - 3);
    assert!(band.model.starts_with("mstl[288]"), "{}", band.model);
    assert_sane(&band, &y);
    assert!(band.upper[0] - band.lower[0] < 4.0, "{band:?}");
}

/// A window of exactly two seasons (2d at 5m) with two scrapes missing is
/// enough: the span counts, not the values; a day is not.
#[test]
fn a_full_window_with_missing_scrapes_is_enough() {
    let day = 288;
    let mut y: Vec<f64> = (0..2 * day)
        .map(|i| 5.0 + 2.0 * (2.0 * std::f64::consts::PI * i as f64 / day as f64).sin() + 0.2 * jitter(i))
        .collect();
    y[100] = f64::NAN;
    y[400] = f64::NAN;
    let (band, points) = fit_series(&y, Duration::from_secs(300), 12, 0.99).unwrap();
    assert_eq!(points, 2 * day - 2);
    assert!(band.model.starts_with("mstl[288]"), "{}", band.model);
    assert_sane(&band, &y);
    y[..day].fill(f64::NAN);
    y[day + 10] = f64::NAN;
    let reason = insufficient(fit_series(&y, Duration::from_secs(300), 12, 0.99));
    assert!(
        reason.starts_with("288 steps of history (286 with a value), 576 needed (two seasons of 1d"),
        "{reason}"
    );
}

#[test]
fn default_minimum_history_follows_the_spec_window() {
    let of = |yaml: &str| FitRules::of_spec(&spec(&format!("{LATENCY}{yaml}")));
    assert_eq!(of("step: 1m\nhistory: 7d\n").min_points, 2 * 1440);
    assert_eq!(of("step: 1m\nhistory: 30d\n").min_points, 2 * 10_080);
    assert_eq!(of("step: 5s\nhistory: 10m\n").min_points, DEFAULT_MIN_POINTS);
    assert_eq!(of("step: 1m\nhistory: 30m\n").min_points, 30);
    assert_eq!(of("step: 1m\nhistory: 7d\nmin_history: 2h\n").min_points, 120);
    assert_eq!(of("non_negative: true\n").non_negative, Some(true));
}

#[test]
fn fallback_and_min_history_are_validated() {
    let check = |specs: &str| config(specs).validate();
    assert_eq!(check("- {name: a, expr: up, alert: A, fallback: {upper: 0.5}}"), Ok(()));
    assert_eq!(
        check("- {name: a, expr: up, alert: A, direction: both, fallback: {lower: 0.1, upper: 0.5}}"),
        Ok(())
    );
    let (key, message) = check("- {name: a, expr: up, alert: A, fallback: {}}").unwrap_err();
    assert_eq!(key, "thresholds.specs[0].fallback");
    assert!(message.contains("`upper` or `lower`"), "{message}");
    let (key, message) = check("- {name: a, expr: up, alert: A, fallback: {lower: 0.1}}").unwrap_err();
    assert_eq!(key, "thresholds.specs[0].fallback.lower");
    assert!(message.contains("direction `above` does not alert below"), "{message}");
    let (key, message) = check("- {name: a, expr: up, alert: A, direction: below, fallback: {upper: 1}}").unwrap_err();
    assert_eq!(key, "thresholds.specs[0].fallback.upper");
    assert!(message.contains("never used"), "{message}");
    let (key, message) =
        check("- {name: a, expr: up, alert: A, direction: both, fallback: {lower: 2, upper: 1}}").unwrap_err();
    assert_eq!(key, "thresholds.specs[0].fallback");
    assert!(message.contains("lower (2) must be below upper (1)"), "{message}");
    let mut infinite = config("- {name: a, expr: up, alert: A, fallback: {upper: 1}}");
    infinite.specs[0].fallback.as_mut().unwrap().upper = Some(f64::INFINITY);
    assert_eq!(
        infinite.validate().unwrap_err(),
        (
            "thresholds.specs[0].fallback.upper".into(),
            "must be a finite number".into()
        )
    );
    let unknown = serde_yaml::from_str::<ThresholdsConfig>(
        "prometheus_url: http://x\nspecs: [{name: a, expr: up, alert: A, fallback: {upper: 1, uper: 2}}]",
    )
    .unwrap_err()
    .to_string();
    assert!(unknown.contains("unknown field `uper`"), "{unknown}");
    let (key, message) = check("- {name: a, expr: up, alert: A, min_history: 10m}").unwrap_err();
    assert_eq!(key, "thresholds.specs[0].min_history");
    assert!(message.contains("at least 16 steps"), "{message}");
    let (key, message) = check("- {name: a, expr: up, alert: A, history: 1d, min_history: 2d}").unwrap_err();
    assert_eq!(key, "thresholds.specs[0].min_history");
    assert!(message.contains("at most `history`"), "{message}");
}

/// A series in `insufficient_history` gets the fallback's static rule, in
/// the direction it sets, or none, and the file says so.
#[test]
fn insufficient_series_get_the_fallback_rule_or_none() {
    let mut s = spec("name: lat\nexpr: p99\nalert: LatencyAboveBand\ndirection: both\nfallback: {upper: 0.5}\n");
    let history = vec![
        Series {
            labels: labels(&[("service", "old")]),
            start: 0,
            values: (0..300).map(|i| 0.2 + 0.02 * jitter(i)).collect(),
        },
        Series {
            labels: labels(&[("service", "new")]),
            start: 0,
            values: (0..300).map(|i| if i < 280 { f64::NAN } else { 0.2 }).collect(),
        },
    ];
    s.history = PromDuration(Duration::from_secs(300 * 60));
    let fit = fit_spec(&s, &history, &|_| 0.99);
    assert_eq!(fit.series.len(), 1, "{fit:?}");
    assert_eq!(fit.insufficient.len(), 1, "{fit:?}");
    let waiting = &fit.insufficient[0];
    assert_eq!(waiting.key, r#"{service="new"}"#);
    assert_eq!(waiting.state, INSUFFICIENT_HISTORY);
    assert_eq!(waiting.points, 20);
    assert!(
        waiting.reason.contains("20 points of history, 60 needed"),
        "{}",
        waiting.reason
    );

    let text = render(&s, &fit, Utc::now());
    let file: RuleFile = serde_yaml::from_str(&text).unwrap();
    let rules = &file.groups.1.rules;
    // old: above and below its band; new: the fallback above only.
    assert_eq!(rules.len(), 3, "{text}");
    let fallback: Vec<&AlertRule> = rules
        .iter()
        .filter(|r| r.annotations[SERIES_ANNOTATION] == waiting.key)
        .collect();
    assert_eq!(fallback.len(), 1, "{text}");
    assert!(
        fallback[0].expr.starts_with("(p99) > 0.5 and on (service)"),
        "{}",
        fallback[0].expr
    );
    assert_eq!(fallback[0].labels[DIRECTION_LABEL], "above");
    assert!(
        fallback[0].annotations["homeostat_band"].contains("static fallback: insufficient_history"),
        "{:?}",
        fallback[0].annotations
    );
    assert!(
        text.contains(r#"# {service="new"} below: insufficient_history (20 points of history, 60 needed"#)
            && text.contains("no fallback.lower configured: no rule."),
        "{text}"
    );

    // Without a fallback: no rule for it at all, and the file says so.
    s.fallback = None;
    let fit = fit_spec(&s, &history, &|_| 0.99);
    let text = render(&s, &fit, Utc::now());
    let file: RuleFile = serde_yaml::from_str(&text).unwrap();
    assert_eq!(file.groups.1.rules.len(), 2, "{text}");
    assert!(text.contains("no fallback.upper configured: no rule."), "{text}");

    // A series that leaves (or enters) the state is a change to publish.
    let mut fitted_now = fit.clone();
    fitted_now.insufficient.clear();
    assert!(changed(&fit, &fitted_now, 0.05));
    assert!(!changed(&fit, &fit.clone(), 0.05));

    // `fit` and `show` say so.
    let reports = band_reports(&history, MINUTE, 5, 0.99, &FitRules::of_spec(&s));
    let text = describe_bands("p99", &reports);
    assert!(
        text.contains(r#"{service="new"}: insufficient_history: no band published: 20 points of history"#),
        "{text}"
    );
    let json = serde_json::to_value(&reports[1]).unwrap();
    assert_eq!(json["state"], INSUFFICIENT_HISTORY);
    let mut waiting = serde_json::to_value(&fit.insufficient[0]).unwrap();
    let state = |fit: serde_json::Value| ThresholdState {
        fits: vec![RecordedFit {
            spec: "lat".into(),
            series: r#"{service="new"}"#.into(),
            fitted_at: Utc::now(),
            fit,
        }],
        ..Default::default()
    };
    let shown = describe(&state(waiting.clone()), None);
    assert!(
        shown.contains(r#"{service="new"} insufficient_history at "#)
            && shown.contains("no fallback configured: no rule"),
        "{shown}"
    );
    waiting["fallback"] = serde_json::json!({"upper": 0.5});
    let shown = describe(&state(waiting), None);
    assert!(shown.contains("rules use the fallback (upper 0.5)"), "{shown}");
}
