//! CPU numerics shared by the reference engine's target model and the drafters (feature `std`): a
//! fork-join thread pool and the AVX-512 / portable kernels (weight-streaming matmul in f32 and bf16,
//! RMSNorm, SwiGLU, softmax, attention's weighted sum).

pub mod kernels;
pub mod packed;
pub mod pool;
#[cfg(target_arch = "x86_64")]
mod simd;

#[doc(hidden)] // engine support, see SendPtr
pub use kernels::SendPtr;
pub use kernels::{
    Isa, Matrix, matmul, matmul_local, reserve_bf16_activations, rms_norm, softmax_in_place,
    softmax_in_place_by_position, swiglu, weighted_rows,
};
pub use pool::Pool;
