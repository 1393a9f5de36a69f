//! Shared by the GPU parity tests: the device, or a skip message where there is none.

use specblock::cuda::Gpu;

/// The first GPU, or `None` after printing why the test is skipped. With `SPECBLOCK_REQUIRE_GPU=1`
/// (set by scripts/gpu-check.sh) a missing GPU fails the test instead, so the GPU run cannot pass by
/// skipping.
pub fn gpu() -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            if std::env::var("SPECBLOCK_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("SPECBLOCK_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("skipping: no GPU ({e})");
            None
        }
    }
}
