//! GPU microbenchmarks (feature `cuda`), run by scripts/gpu-check.sh: each case beside a baseline
//! measured in the same run. `cargo bench --features cuda --bench cuda [-- FILTER] [--json PATH]`.

mod block;
mod report;
mod sample;
mod tree;

use report::Report;
use specblock::cuda::Gpu;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut json = None;
    let mut filter = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = it.next().cloned(),
            "--bench" => {}
            other if !other.starts_with('-') => filter = Some(other.to_string()),
            _ => {}
        }
    }
    let gpu = match Gpu::open(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping the GPU benchmarks: {e}");
            return;
        }
    };
    println!(
        "device: {} (compute capability {}.{}, {} SMs)",
        gpu.name(),
        gpu.compute_capability().0,
        gpu.compute_capability().1,
        gpu.multiprocessors()
    );
    let mut report = Report::default();
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    // The drafter block first: the heaviest and least measured family.
    if wanted("block") {
        block::run(&gpu, &mut report);
    }
    if wanted("tree") {
        tree::run(&gpu, &mut report);
    }
    if wanted("sample") {
        sample::run(&gpu, &mut report);
    }
    if let Some(path) = json {
        let rows: Vec<serde_json::Value> = report
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "group": r.group, "case": r.case, "median_us": r.median_us,
                    "baseline": r.baseline.map(|(n, t)| serde_json::json!({"name": n, "median_us": t})),
                    "note": r.note,
                })
            })
            .collect();
        let doc = serde_json::json!({"device": gpu.name(), "rows": rows});
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).expect("write json");
    }
}
