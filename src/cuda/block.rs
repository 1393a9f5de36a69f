//! The GPU drafter's old path: it moved to [`super::drafter`] (which mirrors [`crate::drafter`], with
//! the per-op kernel wrappers in [`super::drafter::ops`]). The old names stay usable as deprecated
//! aliases (a `#[deprecated]` on a module or a `pub use` has no effect, so these are type aliases and
//! a forwarding function).

use crate::cuda::{DeviceBuffer, DeviceCopy, Gpu, Stream};
use crate::error::Error;

/// Deprecated alias of [`super::drafter::GpuDrafter`].
#[deprecated(note = "moved to `specblock::cuda::drafter::GpuDrafter`")]
pub type GpuDrafter<'g> = super::drafter::GpuDrafter<'g>;

/// Deprecated alias of [`super::drafter::GpuDrafterCapacity`].
#[deprecated(note = "moved to `specblock::cuda::drafter::GpuDrafterCapacity`")]
pub type GpuDrafterCapacity = super::drafter::GpuDrafterCapacity;

/// Deprecated alias of [`super::drafter::GpuDrafterDims`].
#[deprecated(note = "moved to `specblock::cuda::drafter::GpuDrafterDims`")]
pub type GpuDrafterDims = super::drafter::GpuDrafterDims;

/// Deprecated alias of [`super::drafter::fill_random`].
#[deprecated(note = "moved to `specblock::cuda::drafter::fill_random`")]
pub fn fill_random<T: DeviceCopy>(
    gpu: &Gpu,
    stream: &Stream,
    buf: &mut DeviceBuffer<T>,
    seed: u64,
    offset: f32,
    scale: f32,
) -> Result<(), Error> {
    super::drafter::fill_random(gpu, stream, buf, seed, offset, scale)
}
