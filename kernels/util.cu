// Small utility kernels: fills used to poison outputs in tests and to exercise the runtime.
#include <stdint.h>

// Writes `value` to x[0..n), grid-stride.
extern "C" __global__ void sb_fill_u32(uint32_t* x, uint64_t n, uint32_t value) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        x[i] = value;
    }
}

// y[i] = x[i] * a + b over n floats, grid-stride (a runtime smoke test with data flowing through).
extern "C" __global__ void sb_axpb_f32(const float* x, float* y, uint64_t n, float a, float b) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        y[i] = x[i] * a + b;
    }
}
