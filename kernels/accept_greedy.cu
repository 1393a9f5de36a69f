// Greedy acceptance fused with the argmax over the target's logits: two launches, no host sync.
//
// CPU twin: `verify::sample` at temperature 0 (argmax per visited row, ties to the lowest id; a
// visited row with NaN or +inf is NonFinite, an all -inf one InvalidArgument) and `verify::greedy`.
//
// 1. sb_greedy_argmax_{f32,bf16}: grid (cap, batch), one block per logits row; rows >= len[b] are
//    skipped. Writes argmax[b * cap + row] and flag[b * cap + row] (0 ok, 1 NaN/+inf, 2 all -inf).
// 2. sb_greedy_walk: one block per tree stages the tree in shared memory, then one thread follows the
//    child whose token equals the argmax.
#include <stdint.h>
#include <cuda_bf16.h>

#define SB_OK 0
#define SB_INVALID_ARGUMENT 2
#define SB_INVALID_STATE 7
#define SB_NON_FINITE 8

#define SB_ARGMAX_THREADS 512

__device__ __forceinline__ float sb_to_f32(float x) { return x; }
__device__ __forceinline__ float sb_to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

// Keeps the first maximum of a thread's values, visited in increasing index order (strict >).
__device__ __forceinline__ void sb_take(float v, int j, float& best, int& at, int& bad) {
    if (isnan(v) || v == __int_as_float(0x7f800000)) {
        bad = 1;
        return;
    }
    if (v > best) {
        best = v;
        at = j;
    }
}

// (best, at) of a and b: larger value, ties to the lower index; at = INT_MAX means "nothing > -inf".
__device__ __forceinline__ void sb_merge(float& best, int& at, float ob, int oa) {
    if (ob > best || (ob == best && oa < at)) {
        best = ob;
        at = oa;
    }
}

template <typename T>
__device__ void sb_argmax_row(const T* __restrict__ logits, int vocab, int cap, const int* __restrict__ len,
                              int* __restrict__ argmax, int* __restrict__ flag) {
    const int row = blockIdx.x, b = blockIdx.y;
    if (row >= cap || row >= len[b]) return;  // uniform per block
    const T* x = logits + ((size_t)b * cap + row) * (size_t)vocab;
    const int tid = threadIdx.x, nth = blockDim.x;
    float best = __int_as_float(0xff800000);
    int at = 0x7fffffff, bad = 0;
    // 16-byte vector loads when the row is aligned; each thread still visits its indices in order.
    constexpr int per = 16 / sizeof(T);
    if (((uintptr_t)x & 15) == 0) {
        const int chunks = vocab / per;
        const uint4* xv = (const uint4*)x;
        // Four independent 16-byte loads in flight per thread, visited in increasing index order.
        int c = tid;
        for (; c + 3 * nth < chunks; c += 4 * nth) {
            uint4 raw[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) raw[u] = xv[c + u * nth];
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                const T* e = (const T*)&raw[u];
#pragma unroll
                for (int k = 0; k < per; ++k) sb_take(sb_to_f32(e[k]), (c + u * nth) * per + k, best, at, bad);
            }
        }
        for (; c < chunks; c += nth) {
            uint4 raw = xv[c];
            const T* e = (const T*)&raw;
#pragma unroll
            for (int k = 0; k < per; ++k) sb_take(sb_to_f32(e[k]), c * per + k, best, at, bad);
        }
        for (int j = chunks * per + tid; j < vocab; j += nth) sb_take(sb_to_f32(x[j]), j, best, at, bad);
    } else {
        for (int j = tid; j < vocab; j += nth) sb_take(sb_to_f32(x[j]), j, best, at, bad);
    }
    // Warp then block reduction.
    for (int off = 16; off > 0; off >>= 1) {
        float ob = __shfl_down_sync(0xffffffffu, best, off);
        int oa = __shfl_down_sync(0xffffffffu, at, off);
        sb_merge(best, at, ob, oa);
    }
    bad = __syncthreads_or(bad);
    __shared__ float s_best[SB_ARGMAX_THREADS / 32];
    __shared__ int s_at[SB_ARGMAX_THREADS / 32];
    const int warp = tid >> 5, lane = tid & 31, warps = (nth + 31) >> 5;
    if (lane == 0) {
        s_best[warp] = best;
        s_at[warp] = at;
    }
    __syncthreads();
    if (tid == 0) {
        float fb = s_best[0];
        int fa = s_at[0];
        for (int w = 1; w < warps; ++w) sb_merge(fb, fa, s_best[w], s_at[w]);
        const size_t o = (size_t)b * cap + row;
        argmax[o] = fa == 0x7fffffff ? 0 : fa;  // an all -inf row's CPU argmax is 0
        flag[o] = bad ? 1 : (fa == 0x7fffffff ? 2 : 0);
    }
}

// Block size must be SB_ARGMAX_THREADS (a multiple of 32).
extern "C" __global__ void __launch_bounds__(SB_ARGMAX_THREADS)
    sb_greedy_argmax_f32(const float* __restrict__ logits, int vocab, int cap, const int* __restrict__ len,
                         int* __restrict__ argmax, int* __restrict__ flag) {
    sb_argmax_row<float>(logits, vocab, cap, len, argmax, flag);
}

extern "C" __global__ void __launch_bounds__(SB_ARGMAX_THREADS)
    sb_greedy_argmax_bf16(const __nv_bfloat16* __restrict__ logits, int vocab, int cap,
                          const int* __restrict__ len, int* __restrict__ argmax, int* __restrict__ flag) {
    sb_argmax_row<__nv_bfloat16>(logits, vocab, cap, len, argmax, flag);
}

// The walk, one block per tree (grid = batch; dynamic shared memory 5 * cap ints). Outputs per tree
// b: accept_len, accept_nodes/accept_tokens [max_depth + 1] (unused entries -1), bonus,
// keep [max_depth + 2] = [0, nodes..., -1...], status (0, InvalidState for a failed/unfinalized tree,
// NonFinite / InvalidArgument for a bad row on the path).
extern "C" __global__ void sb_greedy_walk(int batch, int cap, int max_depth, const int* __restrict__ len,
                                          const int* __restrict__ token, const int* __restrict__ first_child,
                                          const int* __restrict__ next_sibling, const int* __restrict__ argmax,
                                          const int* __restrict__ flag, int* __restrict__ accept_len,
                                          int* __restrict__ accept_nodes, int* __restrict__ accept_tokens,
                                          int* __restrict__ bonus, int* __restrict__ keep, int* __restrict__ status) {
    const int b = blockIdx.x;
    if (b >= batch) return;
    const size_t base = (size_t)b * cap;
    const int L = len[b];
    const int n = (L < 1 || L > cap) ? 0 : L;
    extern __shared__ int wsm[];
    int* s_tok = wsm;
    int* s_fc = s_tok + cap;
    int* s_ns = s_fc + cap;
    int* s_am = s_ns + cap;
    int* s_fl = s_am + cap;
    // One coalesced pass instead of a chain of dependent global loads.
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        s_tok[i] = token[base + i];
        s_fc[i] = first_child[base + i];
        s_ns[i] = next_sibling[base + i];
        s_am[i] = argmax[base + i];
        s_fl[i] = flag[base + i];
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    const int stride = max_depth + 1;
    int* nodes = accept_nodes + (size_t)b * stride;
    int* toks = accept_tokens + (size_t)b * stride;
    int* kp = keep + (size_t)b * (stride + 1);
    int k = 0, st = SB_OK, bon = -1;
    if (n == 0) {
        st = SB_INVALID_STATE;
    } else {
        int cur = 0;
        while (true) {
            int f = s_fl[cur];
            if (f == 1) { st = SB_NON_FINITE; break; }
            if (f == 2) { st = SB_INVALID_ARGUMENT; break; }
            int want = s_am[cur];
            int c = s_fc[cur];
            while (c > 0 && c < n && s_tok[c] != want) c = s_ns[c];
            if (c <= 0 || c >= n || k >= stride) {
                bon = want;
                break;
            }
            nodes[k] = c;
            toks[k] = s_tok[c];
            ++k;
            cur = c;
        }
    }
    if (st != SB_OK) {
        k = 0;
        bon = -1;
    }
    for (int j = k; j < stride; ++j) {
        nodes[j] = -1;
        toks[j] = -1;
    }
    kp[0] = 0;
    for (int j = 0; j < stride; ++j) kp[j + 1] = j < k ? nodes[j] : -1;
    accept_len[b] = k;
    bonus[b] = bon;
    status[b] = st;
}
