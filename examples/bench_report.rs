//! Work–precision diagrams (achieved error against median time per solve, log–log) from the benches'
//! reports in `data/benchmarks/`:
//!
//! - `stiff.json` (`cargo bench --bench stiff`): the implicit methods on Robertson (t = 1e5) and HIRES,
//!   error in units of the tolerance asked for times rtol → `stiff_work_precision_{robertson,hires}.png`;
//! - `peers.json` (`cargo bench -p odesens-peers --bench peers`), if present: odesens against diffsol on
//!   each study (solves, forward sensitivities, adjoints) → `peers_<study>.png`.
//!
//! Figures go to `data/figures` (or `--out DIR`). Run after the benches:
//! `cargo run --release --example bench_report`.

mod common;

use common::{PALETTE, Series, loglog_plot, out_dir};

fn main() {
    let dir = out_dir("data/figures");
    stiff(&dir);
    peers(&dir);
}

/// The implicit methods' work–precision from `stiff.json`.
fn stiff(dir: &std::path::Path) {
    let path = "data/benchmarks/stiff.json";
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run `cargo bench --bench stiff` first)"));
    let report: serde_json::Value = serde_json::from_str(&text).expect("valid json");
    let rows = report["rows"].as_array().expect("rows");
    for problem in ["robertson", "hires"] {
        let mut series = Vec::new();
        for (m, method) in ["TRBDF2", "Kvaerno5", "RadauIIA5"].iter().enumerate() {
            let mut points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r["problem"] == problem && r["method"] == *method)
                .filter_map(|r| {
                    let time = r["median_time_s"].as_f64()?;
                    let rtol = r["rtol"].as_f64()?;
                    // The error in units of the tolerance, times rtol: a relative error.
                    let err = r["error_in_tolerances"].as_f64()?.max(1e-3) * rtol;
                    Some((time, err))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !points.is_empty() {
                series.push(Series {
                    label: method,
                    points,
                    color: PALETTE[m],
                });
            }
        }
        let png = dir.join(format!("stiff_work_precision_{problem}.png"));
        loglog_plot(
            &png,
            &format!("{problem}: achieved error vs time (criterion medians, rtol 1e-6 … 1e-10)"),
            "median time per solve [s]",
            "max |error| / (atol/rtol + |y|)",
            &series,
        )
        .expect("plot");
        eprintln!("wrote {}", png.display());
    }
}

/// odesens against diffsol from `peers.json` (skipped when the peers bench has not been run).
fn peers(dir: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string("data/benchmarks/peers.json") else {
        eprintln!(
            "no data/benchmarks/peers.json: run `cargo bench -p odesens-peers --bench peers`"
        );
        return;
    };
    let report: serde_json::Value = serde_json::from_str(&text).expect("valid json");
    for study in report["studies"].as_array().expect("studies") {
        let name = study["problem"].as_str().expect("name");
        let rows = study["rows"].as_array().expect("rows");
        let mut labels: Vec<(String, String)> = Vec::new();
        for r in rows {
            let key = (
                r["library"].as_str().unwrap_or("").to_string(),
                r["method"].as_str().unwrap_or("").to_string(),
            );
            if !labels.contains(&key) {
                labels.push(key);
            }
        }
        let names: Vec<String> = labels.iter().map(|(l, m)| format!("{l} {m}")).collect();
        let series: Vec<Series> = labels
            .iter()
            .zip(&names)
            .enumerate()
            .map(|(i, ((lib, method), label))| {
                let mut points: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r["library"] == lib.as_str() && r["method"] == method.as_str())
                    .filter_map(|r| Some((r["median_time_s"].as_f64()?, r["error"].as_f64()?)))
                    .filter(|p| p.1 > 0.0)
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    label,
                    points,
                    color: PALETTE[i % PALETTE.len()],
                }
            })
            .collect();
        let png = dir.join(format!("peers_{name}.png"));
        loglog_plot(
            &png,
            &format!("{name}: odesens and diffsol, achieved error vs time (one run)"),
            "median time [s]",
            "achieved error",
            &series,
        )
        .expect("plot");
        eprintln!("wrote {}", png.display());
    }
}
