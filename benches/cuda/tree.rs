//! placeholder
use crate::report::Report;
use specblock::cuda::Gpu;

/// Runs this family.
pub fn run(_gpu: &Gpu, _report: &mut Report) {}
