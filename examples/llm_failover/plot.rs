//! `--plot FILE.svg`: the scenario's two runs as one SVG (plotters, SVG backend only: text is
//! SVG `<text>`, so no font file or font library is read).
//!
//! Two columns, breakers on and breakers off, over the same time axis; in each, from top to
//! bottom: requests served per second by each provider, user-visible failures per second, the
//! p99 latency of the requests that ended over the last second, and each breaker's state as a
//! band. The first row shades the scripted faults. Every row has the same scale in both
//! columns.

use std::{path::Path, time::Duration};

use plotters::{coord::Shift, prelude::*};
use tower_breaker::{BoxError, State};

use crate::scenario::{Progress, Scenario, Summary};

/// One run: its summary and its samples (about every 200 ms).
pub struct Run {
    pub summary: Summary,
    pub samples: Vec<Progress>,
}

const PROVIDER: [RGBColor; 4] = [
    RGBColor(9, 105, 218),
    RGBColor(191, 135, 0),
    RGBColor(26, 127, 55),
    RGBColor(130, 80, 223),
];
const FAILURES: RGBColor = RGBColor(207, 34, 46);
const LATENCY: RGBColor = RGBColor(130, 80, 223);
const GRID: RGBColor = RGBColor(234, 238, 242);

fn state_color(s: State) -> RGBColor {
    match s {
        State::Closed => RGBColor(26, 127, 55),
        State::Open => RGBColor(207, 34, 46),
        State::HalfOpen => RGBColor(212, 167, 44),
        State::ForcedOpen => RGBColor(130, 80, 223),
        State::Disabled => RGBColor(175, 184, 193),
    }
}

/// An axis label without decimals.
fn whole(x: &f64) -> String {
    format!("{x:.0}")
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Writes the chart of `runs` (breakers on first) to `path`.
pub fn write(path: &Path, scenario: &Scenario, runs: &[Run]) -> Result<(), BoxError> {
    let names: Vec<&str> = scenario.sims.iter().map(|s| s.name).collect();
    let t_max = runs
        .iter()
        .flat_map(|r| r.samples.last())
        .map(|p| secs(p.elapsed))
        .fold(1.0, f64::max)
        .ceil();
    let max_of =
        |f: &dyn Fn(&Progress) -> f64| runs.iter().flat_map(|r| &r.samples).map(f).fold(0.0, f64::max);
    let served_max = max_of(&|p| p.served.iter().copied().max().unwrap_or(0) as f64) * 1.1 + 1.0;
    let failures_max = (max_of(&|p| p.failures as f64) * 1.1).max(10.0);
    let p99_max = (max_of(&|p| p.p99.map_or(0.0, |d| d.as_millis() as f64)) * 1.1).max(100.0);

    let root = SVGBackend::new(path, (1500, 1080)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(64);
    let l = &scenario.load;
    title.draw_text(
        "llm_failover: the same outage with circuit breakers and without",
        &("sans-serif", 26)
            .into_font()
            .style(FontStyle::Bold)
            .color(&BLACK),
        (20, 10),
    )?;
    title.draw_text(
        &format!(
            "{} requests at {}/s, at most {} in flight, {} s deadline; {}",
            l.requests,
            l.rate,
            l.concurrency,
            l.deadline.as_secs_f64(),
            faults(scenario)
        ),
        &("sans-serif", 15).into_font().color(&RGBColor(87, 96, 106)),
        (20, 42),
    )?;
    for (column, run) in body.split_evenly((1, runs.len())).iter().zip(runs) {
        column_chart(
            column,
            scenario,
            run,
            &names,
            t_max,
            [served_max, failures_max, p99_max],
        )?;
    }
    root.present()?;
    Ok(())
}

fn faults(scenario: &Scenario) -> String {
    let mut out = Vec::new();
    for sim in &scenario.sims {
        for f in &sim.faults {
            let what = f.kind.short();
            out.push(match f.until.as_secs() {
                3600.. => format!("{} answers {what} from {} s on", sim.name, secs(f.from)),
                _ => format!(
                    "{} answers {what} from {} s to {} s",
                    sim.name,
                    secs(f.from),
                    secs(f.until)
                ),
            });
        }
    }
    out.join(", ")
}

fn column_chart(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    scenario: &Scenario,
    run: &Run,
    names: &[&str],
    t_max: f64,
    [served_max, failures_max, p99_max]: [f64; 3],
) -> Result<(), BoxError> {
    let s = &run.summary;
    let head = format!(
        "breakers {}: {} user-visible failures, p50 / p99 {} / {} ms",
        if s.breakers_on { "on" } else { "off" },
        s.failures,
        s.p50.as_millis(),
        s.p99.as_millis()
    );
    let (top, rest) = area.split_vertically(34);
    top.draw_text(
        &head,
        &("sans-serif", 19)
            .into_font()
            .style(FontStyle::Bold)
            .color(&BLACK),
        (70, 8),
    )?;
    let (_, h) = rest.dim_in_pixel();
    let unit = h as i32 / 20;
    let rows = rest.split_by_breakpoints([] as [i32; 0], [unit * 7, unit * 11, unit * 16]);
    let t = |p: &Progress| secs(p.elapsed);

    // 1. Requests served per second, by provider, over the scripted faults.
    let mut chart = ChartBuilder::on(&rows[0])
        .margin(8)
        .caption("requests served per second, by provider", ("sans-serif", 15))
        .x_label_area_size(22)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..t_max, 0f64..served_max)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .bold_line_style(GRID)
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .y_desc("req/s")
        .draw()?;
    for (i, sim) in scenario.sims.iter().enumerate() {
        for f in &sim.faults {
            let color = PROVIDER[i % PROVIDER.len()];
            let what = f.kind.short();
            chart.draw_series([Rectangle::new(
                [(secs(f.from), 0.0), (secs(f.until).min(t_max), served_max)],
                color.mix(0.10).filled(),
            )])?;
            chart.draw_series([Text::new(
                format!("{} {what}", sim.name),
                (secs(f.from) + 0.08, served_max * (0.98 - 0.07 * i as f64)),
                ("sans-serif", 12).into_font().color(&color),
            )])?;
        }
    }
    for (i, name) in names.iter().enumerate() {
        let color = PROVIDER[i % PROVIDER.len()];
        chart
            .draw_series(LineSeries::new(
                run.samples.iter().map(|p| (t(p), p.served[i] as f64)),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(GRID)
        .label_font(("sans-serif", 13))
        .draw()?;

    // 2. User-visible failures per second.
    let mut chart = ChartBuilder::on(&rows[1])
        .margin(8)
        .caption("user-visible failures per second", ("sans-serif", 15))
        .x_label_area_size(22)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..t_max, 0f64..failures_max)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .bold_line_style(GRID)
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .y_desc("failed/s")
        .draw()?;
    chart.draw_series(LineSeries::new(
        run.samples.iter().map(|p| (t(p), p.failures as f64)),
        FAILURES.stroke_width(2),
    ))?;

    // 3. p99 latency.
    let mut chart = ChartBuilder::on(&rows[2])
        .margin(8)
        .caption(
            "p99 latency of the requests that ended in the last second",
            ("sans-serif", 15),
        )
        .x_label_area_size(22)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..t_max, 0f64..p99_max)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .bold_line_style(GRID)
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .y_desc("ms")
        .draw()?;
    chart.draw_series(LineSeries::new(
        run.samples
            .iter()
            .filter_map(|p| p.p99.map(|d| (t(p), d.as_millis() as f64))),
        LATENCY.stroke_width(2),
    ))?;

    // 4. The breakers' states as bands.
    let n = names.len();
    let label = |y: &f64| {
        let i = n as f64 - 1.0 - y.floor();
        if y.fract() == 0.5 && i >= 0.0 {
            names.get(i as usize).map_or(String::new(), |s| s.to_string())
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(&rows[3])
        .margin(8)
        .caption(
            "breaker states: closed (green), open (red), half-open (amber), disabled (grey)",
            ("sans-serif", 15),
        )
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..t_max, 0f64..n as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .bold_line_style(GRID)
        .x_label_formatter(&whole)
        .y_labels(n * 2 + 1)
        .y_label_formatter(&label)
        .x_desc("seconds from the start")
        .draw()?;
    for (i, _) in names.iter().enumerate() {
        let row = (n - 1 - i) as f64;
        chart.draw_series(run.samples.windows(2).map(|w| {
            Rectangle::new(
                [(t(&w[0]), row + 0.15), (t(&w[1]), row + 0.85)],
                state_color(w[1].states[i]).filled(),
            )
        }))?;
    }
    Ok(())
}
