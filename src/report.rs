//! `solive report`: an evacuation's timeline as a standalone SVG.
//!
//! [`evacuation_svg`] is a pure function of the JSON that
//! `GET /v1/evacuations/{id}` returns (the client's view, so it draws what an
//! operator or a cloud manager saw, and needs no server types). It draws:
//!
//! - one horizontal bar per VM on a shared time axis (seconds since the
//!   evacuation was created), from its start to its end, colored by its final
//!   state, with the post-copy switch marked and its duration, downtime and
//!   average rate in its label;
//! - below, the source uplink's reserved % and migration (used) % over time:
//!   each VM's reservation history is offset by that VM's `started_ms`
//!   (its reservation is made when its migration starts), and concurrent
//!   reservations (concurrency above 1) are summed, since they share the
//!   uplink;
//! - when the record has one, the concurrency timeline: how many migrations
//!   were allowed at once (the feedback controller's limit, or the pinned
//!   number) and how many ran, with each of the controller's decisions
//!   marked and its reason in the mark's tooltip.
//!
//! The SVG is written by hand (no dependency): a few rectangles, lines and
//! polylines. Every string from the record goes through [`xml_escape`].

use std::fmt::Write as _;

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReportError {
    #[error("the evacuation record is not a JSON object")]
    NotAnObject,
    #[error("the evacuation record has no VMs")]
    NoVms,
    #[error("field vms of the evacuation record is not an array")]
    VmsNotAnArray,
    #[error("VM {0} of the evacuation record is not an object")]
    VmNotAnObject(usize),
    #[error("VM {index} of the evacuation record: field {field} {problem}")]
    BadField {
        index: usize,
        field: &'static str,
        problem: &'static str,
    },
    #[error("no VM of the evacuation has started migrating: there is no timeline to draw")]
    NotStarted,
}

/// Picture geometry, in SVG user units (pixels).
const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 56.0;
/// One VM: a label line above its bar.
const ROW: f64 = 40.0;
const BAR: f64 = 16.0;
const AXIS_GAP: f64 = 34.0;
const CHART: f64 = 180.0;
const BOTTOM: f64 = 70.0;
/// The concurrency panel, when the record has a timeline.
const CONC_CHART: f64 = 110.0;
const CONC_GAP: f64 = 60.0;

/// One VM as drawn; times in ms since the evacuation was created.
struct VmBar {
    name: String,
    state: String,
    start_ms: Option<u64>,
    end_ms: Option<u64>,
    postcopy_ms: Option<u64>,
    downtime_ms: Option<u64>,
    duration_ms: Option<u64>,
    avg_bps: Option<f64>,
    error: Option<String>,
    /// (absolute ms, reserve %, migration %), in time order.
    history: Vec<(u64, f64, f64)>,
}

fn bad(index: usize, field: &'static str, problem: &'static str) -> ReportError {
    ReportError::BadField {
        index,
        field,
        problem,
    }
}

/// A field that is absent or null gives None; any other non-u64 is an error
/// (a negative or fractional time means the record is not one of ours).
fn opt_u64(v: &Value, index: usize, field: &'static str) -> Result<Option<u64>, ReportError> {
    match &v[field] {
        Value::Null => Ok(None),
        x => x
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(index, field, "is not a whole number of ms")),
    }
}

fn opt_f64(v: &Value, index: usize, field: &'static str) -> Result<Option<f64>, ReportError> {
    match &v[field] {
        Value::Null => Ok(None),
        x => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| bad(index, field, "is not a number")),
    }
}

fn parse_vm(index: usize, v: &Value) -> Result<VmBar, ReportError> {
    if !v.is_object() {
        return Err(ReportError::VmNotAnObject(index));
    }
    let name = v["name"]
        .as_str()
        .ok_or_else(|| bad(index, "name", "is not a string"))?
        .to_string();
    let state = v["state"]
        .as_str()
        .ok_or_else(|| bad(index, "state", "is not a string"))?
        .to_string();
    let start_ms = opt_u64(v, index, "started_ms")?;
    let end_ms = opt_u64(v, index, "ended_ms")?;
    if let (Some(s), Some(e)) = (start_ms, end_ms) {
        if e < s {
            return Err(bad(index, "ended_ms", "is before started_ms"));
        }
    }
    let mut history = Vec::new();
    match &v["reservation_history"] {
        Value::Null => {}
        Value::Array(points) => {
            // Without a start the points cannot be placed on the axis; a
            // record always has one once its reservation exists.
            let base = start_ms.unwrap_or(0);
            for p in points {
                let t = p["t_ms"]
                    .as_u64()
                    .ok_or_else(|| bad(index, "reservation_history", "has a point without t_ms"))?;
                let (Some(reserve), Some(mig)) = (p["reserve_pct"].as_f64(), p["mig_pct"].as_f64())
                else {
                    return Err(bad(
                        index,
                        "reservation_history",
                        "has a point without reserve_pct or mig_pct",
                    ));
                };
                history.push((base.saturating_add(t), reserve, mig));
            }
            if start_ms.is_none() && !history.is_empty() {
                return Err(bad(
                    index,
                    "started_ms",
                    "is missing but the VM has a reservation history",
                ));
            }
            history.sort_by_key(|p| p.0);
        }
        _ => return Err(bad(index, "reservation_history", "is not an array")),
    }
    Ok(VmBar {
        name,
        state,
        start_ms,
        end_ms,
        postcopy_ms: opt_u64(v, index, "postcopy_ms")?,
        downtime_ms: opt_u64(v, index, "downtime_ms")?,
        duration_ms: opt_u64(v, index, "duration_ms")?,
        avg_bps: opt_f64(v, index, "avg_bps")?,
        error: v["error"].as_str().map(str::to_string),
        history,
    })
}

/// Escapes text for XML content and attribute values. Characters XML 1.0
/// does not allow at all (most C0 controls) become U+FFFD, so a VM name
/// cannot make the file unreadable.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn state_color(state: &str) -> &'static str {
    match state {
        "done" => "#2e9e44",
        "failed" => "#d0312d",
        "cancelled" => "#8c8c8c",
        "migrating" | "postcopy" => "#2f6fd0",
        _ => "#c8c8c8",
    }
}

/// A tick step (ms) that gives at most about 10 ticks over `span_ms`.
fn tick_step_ms(span_ms: u64) -> u64 {
    // Sub-second steps too: a fake-cloud or tiny-VM evacuation lasts ~1 s.
    const STEPS_MS: [u64; 17] = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
        600_000, 900_000, 1_800_000, 3_600_000, 7_200_000,
    ];
    for s in STEPS_MS {
        if span_ms / s <= 10 {
            return s;
        }
    }
    // Longer than a day: steps of whole hours.
    (span_ms / 10).div_ceil(3_600_000).max(1) * 3_600_000
}

fn secs(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    if ms.is_multiple_of(1000) {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

/// The label beside a bar: what an operator compares between VMs.
fn label(v: &VmBar) -> String {
    let mut parts = vec![v.name.clone(), v.state.clone()];
    if let Some(d) = v.duration_ms {
        parts.push(format!("{:.1} s", d as f64 / 1000.0));
    }
    if let Some(d) = v.downtime_ms {
        parts.push(format!("downtime {d} ms"));
    }
    if let Some(b) = v.avg_bps {
        parts.push(format!("avg {:.1} Mb/s", b / 1e6));
    }
    if v.postcopy_ms.is_some() {
        parts.push("post-copy".into());
    }
    if let Some(e) = &v.error {
        parts.push(format!("error: {e}"));
    }
    parts.join(" · ")
}

/// Reserved and migration % of the source uplink at every time one of them
/// changes: each VM's history is a step function from its first point until
/// its end (or its last point while it runs), zero outside; concurrent VMs add.
fn uplink_series(vms: &[VmBar]) -> Vec<(u64, f64, f64)> {
    let spans: Vec<(&VmBar, u64)> = vms
        .iter()
        .filter_map(|v| {
            let last = v.history.last()?.0;
            Some((v, v.end_ms.unwrap_or(last).max(last)))
        })
        .collect();
    let mut times: Vec<u64> = spans
        .iter()
        .flat_map(|(v, end)| v.history.iter().map(|p| p.0).chain([*end]))
        .collect();
    times.sort_unstable();
    times.dedup();
    times
        .into_iter()
        .map(|t| {
            let (mut reserve, mut mig) = (0.0, 0.0);
            for (v, end) in &spans {
                if t >= *end {
                    continue;
                }
                if let Some(p) = v.history.iter().rev().find(|p| p.0 <= t) {
                    reserve += p.1;
                    mig += p.2;
                }
            }
            (t, reserve, mig)
        })
        .collect()
}

/// The evacuation record (`GET /v1/evacuations/{id}`) as an SVG document.
pub fn evacuation_svg(record: &Value) -> Result<String, ReportError> {
    if !record.is_object() {
        return Err(ReportError::NotAnObject);
    }
    let vms = match &record["vms"] {
        Value::Array(a) if !a.is_empty() => a,
        Value::Array(_) | Value::Null => return Err(ReportError::NoVms),
        _ => return Err(ReportError::VmsNotAnArray),
    };
    let vms: Vec<VmBar> = vms
        .iter()
        .enumerate()
        .map(|(i, v)| parse_vm(i, v))
        .collect::<Result<_, _>>()?;
    let first = vms
        .iter()
        .filter_map(|v| v.start_ms)
        .min()
        .ok_or(ReportError::NotStarted)?;
    // The axis runs from the evacuation's creation (planning shows as the gap
    // before the first bar) to the last thing known to have happened; a VM
    // still migrating is drawn up to there.
    let last = vms
        .iter()
        .flat_map(|v| {
            [
                v.start_ms,
                v.end_ms,
                v.postcopy_ms,
                v.history.last().map(|p| p.0),
            ]
            .into_iter()
            .flatten()
        })
        .chain(record["ended_ms"].as_u64())
        .max()
        .unwrap_or(first);
    let span = last.max(1000);
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |ms: u64| LEFT + ms.min(span) as f64 / span as f64 * plot_w;
    let step = tick_step_ms(span);

    let bars_h = ROW * vms.len() as f64;
    let chart_top = TOP + bars_h + AXIS_GAP + 30.0;
    let timeline = concurrency_timeline(record);
    let conc_top = chart_top + CHART + CONC_GAP;
    let height = match timeline.is_empty() {
        true => chart_top + CHART + BOTTOM,
        false => conc_top + CONC_CHART + BOTTOM,
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );

    // Title: which evacuation, and its outcome.
    let id = record["id"].to_string();
    let req = &record["request"];
    let mut title = format!(
        "Evacuation {} {} → {}: {}",
        id,
        req["source"].as_str().unwrap_or("?"),
        req["destination"].as_str().unwrap_or("?"),
        record["state"].as_str().unwrap_or("?"),
    );
    if let Some(t) = record["total_migration_ms"].as_u64() {
        let _ = write!(title, ", migrations {:.1} s", t as f64 / 1000.0);
    }
    if let Some(t) = record["eviction_ms"].as_u64() {
        let _ = write!(title, ", eviction {:.1} s", t as f64 / 1000.0);
    }
    if let Some(sc) = record["metrics"]["score_s"].as_f64() {
        let _ = write!(
            title,
            ", mean/max individual {:.1}/{:.1} s, score {sc:.1} s",
            record["metrics"]["mean_individual_s"]
                .as_f64()
                .unwrap_or(0.0),
            record["metrics"]["max_individual_s"]
                .as_f64()
                .unwrap_or(0.0)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        xml_escape(&title)
    );
    // Legend of the bar colors.
    let mut lx = LEFT;
    for (st, text) in [
        ("done", "done"),
        ("failed", "failed"),
        ("cancelled", "cancelled"),
        ("migrating", "running"),
        ("pending", "pending"),
    ] {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="34" width="10" height="10" fill="{}"/><text x="{}" y="43">{text}</text>"#,
            state_color(st),
            lx + 14.0
        );
        lx += 90.0;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{lx}" y1="33" x2="{lx}" y2="45" stroke="#f08c00" stroke-width="3"/><text x="{}" y="43">post-copy switch</text>"##,
        lx + 8.0
    );

    // Vertical grid shared by the bars and the chart, so times line up.
    let grid_bottom = chart_top + CHART;
    let mut t = 0;
    while t <= span {
        let gx = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{grid_bottom}" stroke="#e4e4e4"/>"##
        );
        t += step;
    }

    // The bars.
    for (i, v) in vms.iter().enumerate() {
        let row_y = TOP + ROW * i as f64;
        let bar_y = row_y + ROW - BAR - 6.0;
        let name = xml_escape(&v.name);
        let _ = writeln!(s, r#"<g class="vm" data-vm="{name}">"#);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{:.1}">{}</text>"#,
            bar_y - 4.0,
            xml_escape(&label(v))
        );
        match v.start_ms {
            Some(start) => {
                let end = v.end_ms.unwrap_or(last);
                let (x0, x1) = (x(start), x(end));
                // A VM that ended within a pixel still gets a visible bar.
                let w = (x1 - x0).max(2.0);
                let _ = writeln!(
                    s,
                    r#"<rect class="bar" x="{x0:.1}" y="{bar_y:.1}" width="{w:.1}" height="{BAR}" fill="{}"><title>{name}: {} s to {}</title></rect>"#,
                    state_color(&v.state),
                    secs(start),
                    v.end_ms
                        .map_or("now".to_string(), |e| format!("{} s", secs(e))),
                );
                if let Some(p) = v.postcopy_ms {
                    let px = x(p);
                    let _ = writeln!(
                        s,
                        r##"<line class="postcopy" x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#f08c00" stroke-width="3"><title>{name}: post-copy at {} s</title></line>"##,
                        bar_y - 2.0,
                        bar_y + BAR + 2.0,
                        secs(p)
                    );
                }
            }
            None => {
                // Not started: an outline where its bar would be.
                let _ = writeln!(
                    s,
                    r##"<rect x="{LEFT}" y="{bar_y:.1}" width="{plot_w:.1}" height="{BAR}" fill="none" stroke="#dddddd" stroke-dasharray="4 3"/>"##
                );
            }
        }
        let _ = writeln!(s, "</g>");
    }

    // The shared time axis under the bars.
    let axis_y = TOP + bars_h + 4.0;
    time_axis(&mut s, axis_y, span, step, &x);

    // The uplink chart.
    let series = uplink_series(&vms);
    let ymax = series
        .iter()
        .map(|p| p.1.max(p.2))
        .fold(100.0_f64, f64::max);
    // Round a sum above 100% (overlapping reservations) up to a tens.
    let ymax = (ymax / 10.0).ceil() * 10.0;
    let y = |pct: f64| chart_top + CHART - pct.clamp(0.0, ymax) / ymax * CHART;
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">Source uplink: reserved % and used (migration) % of capacity</text>"#,
        chart_top - 10.0
    );
    let mut pct = 0.0;
    while pct <= ymax {
        let gy = y(pct);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{pct:.0}%</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            gy + 4.0
        );
        pct += ymax / 5.0;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{chart_top:.1}" width="{plot_w:.1}" height="{CHART}" fill="none" stroke="#999999"/>"##
    );
    if series.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#777777">no reservation history (migrated without a reservation, or the source uplink was not measured)</text>"##,
            LEFT + plot_w / 2.0,
            chart_top + CHART / 2.0
        );
    } else {
        for (class, color, pick) in [("reserved", "#7b3fbf", 1usize), ("used", "#2f6fd0", 2usize)] {
            let pts = step_points(
                series
                    .iter()
                    .map(|p| (x(p.0), y(if pick == 1 { p.1 } else { p.2 }))),
                None,
            );
            let _ = writeln!(
                s,
                r#"<polyline class="{class}" points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                pts.trim_end()
            );
        }
        let ly = chart_top + 16.0;
        let lx = WIDTH - RIGHT - 200.0;
        let _ = writeln!(
            s,
            r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="#7b3fbf" stroke-width="2"/><text x="{}" y="{}">reserved %</text>"##,
            lx + 20.0,
            lx + 24.0,
            ly + 4.0
        );
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="#2f6fd0" stroke-width="2"/><text x="{}" y="{}">used %</text>"##,
            lx + 100.0,
            lx + 120.0,
            lx + 124.0,
            ly + 4.0
        );
    }
    time_axis(&mut s, chart_top + CHART, span, step, &x);
    let mut axis_bottom = chart_top + CHART;
    if !timeline.is_empty() {
        concurrency_panel(&mut s, record, &timeline, conc_top, last, &x);
        time_axis(&mut s, conc_top + CONC_CHART, span, step, &x);
        axis_bottom = conc_top + CONC_CHART;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since the evacuation was created (s)</text>"#,
        LEFT + plot_w / 2.0,
        axis_bottom + 40.0
    );
    s.push_str("</svg>\n");
    Ok(s)
}

/// A polyline's points drawing `points` (x, y) as steps: each value holds
/// until the next point, and the last until `end_x` when given.
fn step_points(points: impl Iterator<Item = (f64, f64)>, end_x: Option<f64>) -> String {
    let mut pts = String::new();
    let mut prev: Option<f64> = None;
    for (px, py) in points {
        if let Some(pv) = prev {
            let _ = write!(pts, "{px:.1},{pv:.1} ");
        }
        let _ = write!(pts, "{px:.1},{py:.1} ");
        prev = Some(py);
    }
    if let (Some(pv), Some(ex)) = (prev, end_x) {
        let _ = write!(pts, "{ex:.1},{pv:.1}");
    }
    pts
}

/// The record's concurrency timeline: (ms, limit, running), in order.
fn concurrency_timeline(record: &Value) -> Vec<(u64, f64, f64)> {
    let Some(points) = record["concurrency"]["timeline"].as_array() else {
        return Vec::new();
    };
    points
        .iter()
        .filter_map(|p| {
            Some((
                p["t_ms"].as_u64()?,
                p["limit"].as_f64()?,
                p["running"].as_f64()?,
            ))
        })
        .collect()
}

/// The concurrency panel at `top`: the limit (dashed) and the migrations
/// running (solid) as steps up to `last`, each decision a mark.
fn concurrency_panel(
    s: &mut String,
    record: &Value,
    timeline: &[(u64, f64, f64)],
    top: f64,
    last: u64,
    x: &dyn Fn(u64) -> f64,
) {
    let ymax = timeline
        .iter()
        .map(|p| p.1.max(p.2))
        .fold(1.0_f64, f64::max)
        .ceil();
    let y = |n: f64| top + CONC_CHART - n / ymax * CONC_CHART;
    let mode = match &record["concurrency"]["mode"] {
        Value::String(m) => m.clone(),
        v => v.to_string(),
    };
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">Migrations at once (concurrency {})</text>"#,
        top - 10.0,
        xml_escape(&mode)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{top:.1}" width="{:.1}" height="{CONC_CHART}" fill="none" stroke="#999999"/>"##,
        WIDTH - LEFT - RIGHT
    );
    let mut n = 0.0;
    while n <= ymax {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{n:.0}</text>"#,
            LEFT - 6.0,
            y(n) + 4.0
        );
        n += (ymax / 4.0).ceil().max(1.0);
    }
    for (class, color, dash, pick) in [
        ("limit", "#c2410c", r#" stroke-dasharray="6 3""#, 1usize),
        ("running", "#2f6fd0", "", 2usize),
    ] {
        let pts = step_points(
            timeline
                .iter()
                .map(|p| (x(p.0), y(if pick == 1 { p.1 } else { p.2 }))),
            Some(x(last)),
        );
        let _ = writeln!(
            s,
            r#"<polyline class="{class}" points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            pts.trim_end()
        );
    }
    for d in record["concurrency"]["decisions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let (Some(at), Some(to)) = (d["at_ms"].as_u64(), d["to"].as_f64()) else {
            continue;
        };
        let reason = d["reason"].as_str().unwrap_or("?");
        let _ = writeln!(
            s,
            r##"<circle class="decision" cx="{:.1}" cy="{:.1}" r="3.5" fill="#c2410c"><title>{} s: {} → {to:.0} ({})</title></circle>"##,
            x(at),
            y(to),
            secs(at),
            d["from"].as_u64().unwrap_or(0),
            xml_escape(reason)
        );
    }
    let lx = WIDTH - RIGHT - 220.0;
    let ly = top + 14.0;
    let _ = writeln!(
        s,
        r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="#c2410c" stroke-width="2" stroke-dasharray="6 3"/><text x="{}" y="{}">limit</text><line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="#2f6fd0" stroke-width="2"/><text x="{}" y="{}">running</text>"##,
        lx + 20.0,
        lx + 24.0,
        ly + 4.0,
        lx + 80.0,
        lx + 100.0,
        lx + 104.0,
        ly + 4.0
    );
}

/// A horizontal axis at `y` with a tick and a label in seconds every `step`.
fn time_axis(s: &mut String, y: f64, span: u64, step: u64, x: &dyn Fn(u64) -> f64) {
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#333333"/>"##,
        WIDTH - RIGHT
    );
    let mut t = 0;
    while t <= span {
        let tx = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{y:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#333333"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle">{} s</text>"##,
            y + 5.0,
            y + 18.0,
            secs(t)
        );
        t += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Two VMs, one in post-copy with a name that needs escaping, one failed,
    /// and one never started: the shape `GET /v1/evacuations/{id}` returns.
    fn fixture() -> Value {
        json!({
            "id": 3,
            "request": {"source": "h1", "destination": "h2", "mode": "postcopy", "urgency": 60.0,
                        "threshold": 10.0, "order": "solive", "concurrency": 1,
                        "balance_pct": 5.0, "reserve": true},
            "state": "failed",
            "created_unix_ms": 1_700_000_000_000u64,
            "measurements": [],
            "plan": null,
            "order": ["web<1>&\"x\"", "db", "idle"],
            "vms": [
                {"name": "web<1>&\"x\"", "state": "done", "started_ms": 1200, "ended_ms": 9200,
                 "duration_ms": 8000, "downtime_ms": 5, "bytes": 83886080, "avg_bps": 83886080.0,
                 "reservation_id": 1, "cap_mibs": 8, "progress": null, "postcopy_ms": 6100,
                 "reservation_history": [
                    {"t_ms": 0, "avail_pct": 40.0, "mig_pct": 0.0, "reserve_pct": 60.0},
                    {"t_ms": 1000, "avail_pct": 35.0, "mig_pct": 55.0, "reserve_pct": 60.0},
                    {"t_ms": 2000, "avail_pct": 30.0, "mig_pct": 58.0, "reserve_pct": 70.0}],
                 "error": null},
                {"name": "db", "state": "failed", "started_ms": 9300, "ended_ms": 12000,
                 "duration_ms": 2700, "downtime_ms": null, "bytes": null, "avg_bps": null,
                 "reservation_id": 2, "cap_mibs": 8, "progress": null, "postcopy_ms": null,
                 "reservation_history": [
                    {"t_ms": 0, "avail_pct": 50.0, "mig_pct": 0.0, "reserve_pct": 60.0}],
                 "error": "libvirt: <boom>"},
                {"name": "idle", "state": "cancelled", "started_ms": null, "ended_ms": null,
                 "duration_ms": null, "downtime_ms": null, "bytes": null, "avg_bps": null,
                 "reservation_id": null, "cap_mibs": null, "progress": null, "postcopy_ms": null,
                 "reservation_history": [], "error": null}
            ],
            "total_migration_ms": null, "eviction_ms": null, "left_on_source": ["db", "idle"],
            "ended_ms": 12100, "error": null
        })
    }

    #[test]
    fn draws_one_bar_per_started_vm_with_names_escaped() {
        let svg = evacuation_svg(&fixture()).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        // One group per VM; the one that never started has no bar.
        assert_eq!(svg.matches(r#"<g class="vm""#).count(), 3);
        assert_eq!(svg.matches(r#"class="bar""#).count(), 2);
        assert_eq!(svg.matches(r#"class="postcopy""#).count(), 1);
        assert!(svg.contains("web&lt;1&gt;&amp;&quot;x&quot;"), "{svg}");
        assert!(!svg.contains("web<1>"), "raw name leaked");
        assert!(svg.contains("libvirt: &lt;boom&gt;"));
        // Colors by final state, the label's figures, axis in seconds.
        assert!(svg.contains(r##"fill="#2e9e44""##) && svg.contains(r##"fill="#d0312d""##));
        assert!(svg.contains("downtime 5 ms") && svg.contains("avg 83.9 Mb/s"));
        assert!(svg.contains(">12 s<") && svg.contains(">0 s<"));
        assert!(svg.contains(r#"class="reserved""#) && svg.contains(r#"class="used""#));
        // Every element opened is closed: a cheap well-formedness check.
        assert_eq!(svg.matches("<g ").count(), svg.matches("</g>").count());
        assert_eq!(
            svg.matches("<title>").count(),
            svg.matches("</title>").count()
        );
    }

    #[test]
    fn the_uplink_series_is_offset_by_each_start_and_ends_with_the_vm() {
        let rec = fixture();
        let vms: Vec<VmBar> = rec["vms"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, v)| parse_vm(i, v).unwrap())
            .collect();
        let s = uplink_series(&vms);
        assert_eq!(
            s,
            vec![
                (1200, 60.0, 0.0),
                (2200, 60.0, 55.0),
                (3200, 70.0, 58.0),
                (9200, 0.0, 0.0),
                (9300, 60.0, 0.0),
                (12000, 0.0, 0.0),
            ]
        );
        // Two reservations at once add up.
        let mut a = parse_vm(0, &rec["vms"][0]).unwrap();
        let b = parse_vm(0, &rec["vms"][0]).unwrap();
        a.name = "other".into();
        let s = uplink_series(&[a, b]);
        assert_eq!(s[0], (1200, 120.0, 0.0));
    }

    #[test]
    fn the_concurrency_timeline_is_drawn_with_its_decisions() {
        let mut r = fixture();
        assert!(!evacuation_svg(&r).unwrap().contains("class=\"limit\""));
        r["concurrency"] = json!({
            "mode": "auto",
            "decisions": [
                {"at_ms": 1200, "from": 0, "to": 1, "reason": "start"},
                {"at_ms": 5000, "from": 1, "to": 2, "reason": "probe", "rate_bps": 3e7},
                {"at_ms": 9000, "from": 2, "to": 1, "reason": "not_rising", "before_bps": 3e7, "after_bps": 3.05e7}],
            "timeline": [
                {"t_ms": 1200, "limit": 1, "running": 1},
                {"t_ms": 5000, "limit": 2, "running": 2},
                {"t_ms": 9000, "limit": 1, "running": 1}]
        });
        r["metrics"] = json!({"total_s": 10.8, "mean_individual_s": 5.35, "max_individual_s": 8.0,
                              "score_s": 8.075, "weight": 0.5, "migrations": 2});
        let svg = evacuation_svg(&r).unwrap();
        assert!(svg.contains("class=\"limit\"") && svg.contains("class=\"running\""));
        assert_eq!(svg.matches("class=\"decision\"").count(), 3);
        assert!(svg.contains("2 → 1 (not_rising)"), "{svg}");
        assert!(svg.contains("concurrency auto"));
        assert!(svg.contains("score 8.1 s"));
    }

    #[test]
    fn records_it_cannot_draw_are_typed_errors() {
        assert_eq!(
            evacuation_svg(&json!([1, 2])),
            Err(ReportError::NotAnObject)
        );
        assert_eq!(evacuation_svg(&json!({"id": 1})), Err(ReportError::NoVms));
        assert_eq!(
            evacuation_svg(&json!({"id": 1, "vms": []})),
            Err(ReportError::NoVms)
        );
        let mut r = fixture();
        r["vms"][1]["started_ms"] = json!(-5);
        assert!(matches!(
            evacuation_svg(&r),
            Err(ReportError::BadField {
                index: 1,
                field: "started_ms",
                ..
            })
        ));
        let mut r = fixture();
        r["vms"][0]["ended_ms"] = json!(100);
        assert!(matches!(
            evacuation_svg(&r),
            Err(ReportError::BadField {
                field: "ended_ms",
                ..
            })
        ));
        let mut r = fixture();
        r["vms"][0]["name"] = json!(7);
        assert!(matches!(
            evacuation_svg(&r),
            Err(ReportError::BadField {
                index: 0,
                field: "name",
                ..
            })
        ));
        let mut r = fixture();
        r["vms"][0]["reservation_history"] = json!([{"t_ms": "soon"}]);
        assert!(matches!(
            evacuation_svg(&r),
            Err(ReportError::BadField {
                field: "reservation_history",
                ..
            })
        ));
        let mut r = fixture();
        r["vms"] = json!("abc");
        assert_eq!(evacuation_svg(&r), Err(ReportError::VmsNotAnArray));
        let mut r = fixture();
        r["vms"][2] = json!(null);
        assert_eq!(evacuation_svg(&r), Err(ReportError::VmNotAnObject(2)));
        // The message names the field, for the CLI's stderr.
        let mut r = fixture();
        r["vms"][0]["downtime_ms"] = json!("short");
        let e = evacuation_svg(&r).unwrap_err().to_string();
        assert_eq!(
            e,
            "VM 0 of the evacuation record: field downtime_ms is not a whole number of ms"
        );
        // Planning: no VM started yet.
        let mut r = fixture();
        for v in r["vms"].as_array_mut().unwrap() {
            v["started_ms"] = Value::Null;
            v["ended_ms"] = Value::Null;
            v["postcopy_ms"] = Value::Null;
            v["reservation_history"] = json!([]);
        }
        assert_eq!(evacuation_svg(&r), Err(ReportError::NotStarted));
    }

    #[test]
    fn a_running_evacuation_and_odd_names_still_draw() {
        let mut r = fixture();
        r["vms"][1]["ended_ms"] = Value::Null;
        r["vms"][1]["state"] = json!("migrating");
        r["vms"][1]["name"] = json!("ctl\u{1}char");
        r["ended_ms"] = Value::Null;
        let svg = evacuation_svg(&r).unwrap();
        assert!(svg.contains("ctl\u{FFFD}char"));
        assert!(svg.contains("9.3 s to now"), "{svg}");
    }

    #[test]
    fn ticks_stay_few() {
        for span in [1, 999, 1000, 10_000, 61_000, 3_600_000, 200_000_000] {
            let step = tick_step_ms(span);
            assert!(span / step <= 10, "{span}: {step}");
        }
        // A short evacuation still gets several labelled ticks.
        assert_eq!(tick_step_ms(1_800), 200);
        assert_eq!(secs(1_400), "1.4");
    }
}
