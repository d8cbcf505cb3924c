//! Work–precision diagrams of the implicit methods from the criterion bench's medians: reads
//! `data/benchmarks/stiff.json` (written by `cargo bench --bench stiff`) and draws the achieved error
//! (in units of the tolerance asked for, atol + rtol·|y|, against the Bari test set's references) versus
//! the median time per solve, log–log, for Robertson (t = 1e5) and HIRES, into
//! `data/figures/stiff_work_precision.png` (or `--out DIR`).
//!
//! Run: `cargo bench --bench stiff && cargo run --release --example stiff_work_precision`.

mod common;

use common::{PALETTE, Series, loglog_plot, out_dir};

fn main() {
    let path = "data/benchmarks/stiff.json";
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run `cargo bench --bench stiff` first)"));
    let report: serde_json::Value = serde_json::from_str(&text).expect("valid json");
    let rows = report["rows"].as_array().expect("rows");
    let dir = out_dir("data/figures");
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
