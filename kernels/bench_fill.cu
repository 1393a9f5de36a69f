// Deterministic pseudo-random fills on the device, so benchmarks can build a drafter of billions of
// parameters without uploading them from the host. Value i depends only on (seed, i): a splitmix64 hash.
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float hash_uniform(uint64_t seed, uint64_t i) {
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    // 24 high bits -> [-1, 1).
    return (float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

// out[i] = bf16(offset + scale * u_i), u_i uniform in [-1, 1); grid-stride over n elements.
extern "C" __global__ void sb_fill_random_bf16(__nv_bfloat16* out, uint64_t n, uint64_t seed, float offset,
                                               float scale) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        out[i] = __float2bfloat16_rn(offset + scale * hash_uniform(seed, i));
    }
}

// out[i] = offset + scale * u_i as f32; grid-stride over n elements.
extern "C" __global__ void sb_fill_random_f32(float* out, uint64_t n, uint64_t seed, float offset, float scale) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        out[i] = offset + scale * hash_uniform(seed, i);
    }
}
