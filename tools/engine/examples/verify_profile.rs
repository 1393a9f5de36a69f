//! One verification forward of N rows at a 512-token prefix, repeated: a steady loop to put under
//! `perf record`, and the median time of `bench::verify_ms` (what `specblock bench` reports as t(N))
//! without the rest of the benchmark. Used for the Zen 4 measurements in docs/performance.md.
//!
//! `cargo run --release -p specblock-engine --example verify_profile -- N [REPEATS] [MODEL]`
//! (bf16 weights, 2 threads; N defaults to 8, REPEATS to 200, MODEL to the default GGUF).

use specblock_engine::bench::verify_ms;
use specblock_engine::model::{Llama, WeightFormat};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(Ok(8), |a| a.parse())?;
    let repeats: usize = args.get(2).map_or(Ok(200), |a| a.parse())?;
    let model = args
        .get(3)
        .map_or("models/SmolLM2-135M-Instruct.Q4_1.gguf", |s| s.as_str());
    let (loaded, _) = specblock_engine::load::load_gguf(std::path::Path::new(model))?;
    let m = Llama::new(loaded, WeightFormat::Bf16, 2)?;
    let t = verify_ms(&m, 512, &[n], repeats.max(1))?;
    println!("n={n} median {:.2} ms", t[0]);
    Ok(())
}
