//! Helpers shared by the benches: reading criterion's medians and writing reports.

#![allow(dead_code)]

use std::path::PathBuf;

/// The median (ns) criterion stored for a bench id (`group/name`).
pub fn median_ns(id: &str) -> Option<f64> {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    // `c.bench_function("group/name")` stores under `group_name`, a benchmark group under `group/name`.
    let flat = base.join("criterion").join(id.replace('/', "_"));
    let nested = base.join("criterion").join(id);
    let text = [flat, nested]
        .iter()
        .find_map(|dir| std::fs::read_to_string(dir.join("new").join("estimates.json")).ok())?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// Writes a JSON report under the workspace's `data/benchmarks/` (found from the bench's own crate, which
/// may be a member below the workspace root).
pub fn write_report(name: &str, value: &serde_json::Value) {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .ancestors()
        .find(|dir| dir.join("data/benchmarks").is_dir())
        .unwrap_or(&manifest);
    let path = root.join("data/benchmarks").join(name);
    match std::fs::write(&path, serde_json::to_string_pretty(value).expect("json")) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

/// Whether criterion runs in test mode (`cargo test --benches`): no estimates, no report.
pub fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// Runs the criterion benches, then the report (skipped in `cargo test --benches` mode, which runs each
/// bench once and records no estimates).
pub fn run(benches: fn(&mut criterion::Criterion), report: fn()) {
    let mut c = criterion::Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    if !test_mode() {
        report();
    }
}
