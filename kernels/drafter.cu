// The SpecBlock drafter block forward's non-GEMM ops (docs/drafter-forward.md), for the CUDA path.
//
// Mixed precision: the residual stream X, every GEMM output and the attention caches are f32 in device
// memory; every kernel that produces a GEMM *input* writes it as bf16 (round-to-nearest-even) because the
// GEMMs are bf16 x bf16 -> f32 (cuBLAS). Norm weights, position queries and RoPE inverse frequencies are
// f32; the borrowed token embedding is bf16 [V, H].
//
// Conventions shared by every kernel:
// - Matrices are row-major; every `*_stride` is the distance in ELEMENTS between consecutive rows, so an
//   output can be a column slice of a wider buffer (pass the pointer of its first column): concats are
//   formed in place, without copies.
// - Sizes are `int` (all shapes of a drafter fit); pointers marked "nullable" may be 0 to skip an output.
// - Launch shapes are chosen by the Rust wrappers (src/cuda/drafter/ops.rs); block sizes are multiples of 32
//   (the block reductions below assume it).
// - Every CPU twin is in src/drafter/ops.rs (or src/cpu/kernels.rs where one already existed).
//
// Kernel list (the Rust wrappers' doc comments repeat each contract):
//   sb_fuse_inputs     concat(RMSNorm_c(cond), RMSNorm_t(E[y]), RMSNorm_q(P[k])) -> bf16 [groups*K, 3H]
//   sb_rmsnorm         f32 rows -> bf16 RMSNorm (+ optional f32 copy)
//   sb_add_rmsnorm     x += delta (residual, f32, in place), then bf16 RMSNorm(x) (+ optional f32 copy)
//   sb_rope            rotate-half RoPE in place on f32 q and k heads, one position per row
//   sb_cache_append    copy post-RoPE K/V rows into a layer's [kv_head][capacity][d] f32 cache
//   sb_attention       online-softmax attention over a cache prefix + a row's own-group keys -> bf16
//                      (or, split over keys, partial records merged by sb_attention_combine)
//   sb_attention_combine  merges split-key partial records -> bf16
//   sb_swiglu          silu(gate) * up -> bf16
//   sb_silu_bf16       silu(x) -> bf16 (the rank head's hidden)
//   sb_shift_concat    concat(X_k, X_{max(k-1,0)}) per group -> bf16 [groups*K, 2H]
//   sb_f32_to_bf16     plain f32 -> bf16 cast of a strided matrix (e.g. target features for W_cond)
//   sb_head_features   top-T / log-sum-exp / 15 rank features (bf16, after n_k) + top-kc candidates

#include <cuda_bf16.h>
#include <stdint.h>

// Status bits `sb_fuse_inputs` ORs into its status word (the word is never cleared by a kernel).
#define SB_STATUS_TOKEN_OUT_OF_RANGE 1

// Attention tiling: keys per tile (one per lane of a warp in the softmax), threads per block, largest
// head_dim, most query vectors (rows x heads) per block, then per thread: float4 loads per tile,
// outputs, score pairs per tile, and queries per warp in the softmax.
#define ATT_TILE 32
#define ATT_THREADS 256
#define ATT_MAX_D 128
#define ATT_MAX_Q 16
#define ATT_VPT (ATT_TILE * ATT_MAX_D / 4 / ATT_THREADS)
#define ATT_OPT (ATT_MAX_Q * ATT_MAX_D / ATT_THREADS)
#define ATT_SPT (ATT_MAX_Q * ATT_TILE / ATT_THREADS)
#define ATT_QPW (ATT_MAX_Q / (ATT_THREADS / 32))

// Largest T (rank_topk) and kc of sb_head_features, its threads per block and candidate capacity;
// largest K of sb_fuse_inputs.
#define HEAD_MAX_SEL 64
#define HEAD_THREADS 1024
#define HEAD_CAND_CAP 2048
#define FUSE_MAX_SLOTS 64

__device__ __forceinline__ __nv_bfloat16 to_bf16(float x) { return __float2bfloat16_rn(x); }

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result. `red` is a
// 32-float shared scratch. Must be reached by every thread of the block.
__device__ float block_sum(float v, float* red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads();  // a previous reduction may still be reading red[0]
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nw ? red[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
        if (lane == 0) red[0] = t;
    }
    __syncthreads();
    return red[0];
}

// Maximum over the block, like block_sum.
__device__ float block_max(float v, float* red) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nw ? red[lane] : -INFINITY;
        for (int o = 16; o > 0; o >>= 1) t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, o));
        if (lane == 0) red[0] = t;
    }
    __syncthreads();
    return red[0];
}

// Maximum of 64-bit keys over the block, like block_sum.
__device__ unsigned long long block_max_u64(unsigned long long v, unsigned long long* red) {
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        unsigned long long t = lane < nw ? red[lane] : 0ull;
        for (int o = 16; o > 0; o >>= 1) {
            const unsigned long long w = __shfl_xor_sync(0xffffffffu, t, o);
            t = w > t ? w : t;
        }
        if (lane == 0) red[0] = t;
    }
    __syncthreads();
    return red[0];
}

// 1 / sqrt(mean(x^2) + eps) of an f32 row (block-wide). Same formula as the CPU rms_norm; only the
// order of the sum of squares differs.
__device__ float row_inv_rms_f32(const float* x, int n, float eps, float* red) {
    float ss = 0.0f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) ss = fmaf(x[c], x[c], ss);
    ss = block_sum(ss, red);
    return 1.0f / sqrtf(ss / (float)n + eps);
}

// ---------------------------------------------------------------------------------------------------
/// sb_fuse_inputs: the fuse GEMM's input. Grid (groups), block 256.
/// For group g (an entry or a seed) and slot k < slots, output row g*slots + k (row stride out_stride
/// >= 3*hidden) is concat(RMSNorm(cond_g; w_cond), RMSNorm(E[tokens[g]]; w_tok), RMSNorm(P[k]; w_q)).
/// cond f32 [groups, hidden] (stride cond_stride), tokens i32 [groups], embed bf16 [vocab, hidden],
/// queries f32 [slots, hidden]. A token outside [0, vocab) is never read: its token part is written as
/// zeros and SB_STATUS_TOKEN_OUT_OF_RANGE is ORed into *status (which the caller clears beforehand).
extern "C" __global__ void __launch_bounds__(256) sb_fuse_inputs(
    const float* __restrict__ cond, int cond_stride, const int* __restrict__ tokens,
    const __nv_bfloat16* __restrict__ embed, int vocab, const float* __restrict__ queries,
    const float* __restrict__ w_cond, const float* __restrict__ w_tok, const float* __restrict__ w_q,
    float eps, int groups, int slots, int hidden, __nv_bfloat16* __restrict__ out, int out_stride,
    int* __restrict__ status) {
    __shared__ float red[32];
    __shared__ float inv_q[FUSE_MAX_SLOTS];
    const int g = blockIdx.x;
    if (g >= groups || slots > FUSE_MAX_SLOTS) return;  // uniform over the block
    const float* c_row = cond + (size_t)g * cond_stride;
    const int tok = tokens[g];
    const bool bad = tok < 0 || tok >= vocab;
    if (bad && threadIdx.x == 0) atomicOr(status, SB_STATUS_TOKEN_OUT_OF_RANGE);
    const __nv_bfloat16* e_row = embed + (size_t)(bad ? 0 : tok) * hidden;

    const float inv_c = row_inv_rms_f32(c_row, hidden, eps, red);
    float ss = 0.0f;
    if (!bad) {
        for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
            const float v = __bfloat162float(e_row[c]);
            ss = fmaf(v, v, ss);
        }
    }
    ss = block_sum(ss, red);
    const float inv_t = 1.0f / sqrtf(ss / (float)hidden + eps);
    for (int k = 0; k < slots; ++k) {
        const float inv = row_inv_rms_f32(queries + (size_t)k * hidden, hidden, eps, red);
        if (threadIdx.x == 0) inv_q[k] = inv;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        const float cv = __fmul_rn(__fmul_rn(c_row[c], inv_c), w_cond[c]);
        const float tv = bad ? 0.0f : __fmul_rn(__fmul_rn(__bfloat162float(e_row[c]), inv_t), w_tok[c]);
        const __nv_bfloat16 cb = to_bf16(cv), tb = to_bf16(tv);
        for (int k = 0; k < slots; ++k) {
            __nv_bfloat16* o = out + (size_t)(g * slots + k) * out_stride;
            o[c] = cb;
            o[hidden + c] = tb;
            o[2 * hidden + c] = to_bf16(__fmul_rn(__fmul_rn(queries[(size_t)k * hidden + c], inv_q[k]), w_q[c]));
        }
    }
}

// ---------------------------------------------------------------------------------------------------
/// sb_rmsnorm: out[r] = bf16(x[r] / sqrt(mean(x[r]^2) + eps) * w) for r < rows (n columns).
/// Grid (rows), block 256. out_f32 (nullable, stride out_f32_stride) also receives the f32 values.
extern "C" __global__ void __launch_bounds__(256) sb_rmsnorm(
    const float* __restrict__ x, int x_stride, const float* __restrict__ w, float eps, int rows, int n,
    __nv_bfloat16* __restrict__ out, int out_stride, float* __restrict__ out_f32, int out_f32_stride) {
    __shared__ float red[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + (size_t)r * x_stride;
    const float inv = row_inv_rms_f32(xr, n, eps, red);
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float v = __fmul_rn(__fmul_rn(xr[c], inv), w[c]);
        out[(size_t)r * out_stride + c] = to_bf16(v);
        if (out_f32) out_f32[(size_t)r * out_f32_stride + c] = v;
    }
}

/// sb_add_rmsnorm: x[r] += delta[r] (the residual add, f32, in place; x and delta [rows, n] contiguous),
/// then out[r] = bf16(RMSNorm(x[r]) * w) (stride out_stride) and, if out_f32 is not null, the f32 values
/// (stride out_f32_stride). Grid (rows), block 256.
extern "C" __global__ void __launch_bounds__(256) sb_add_rmsnorm(
    float* __restrict__ x, const float* __restrict__ delta, const float* __restrict__ w, float eps,
    int rows, int n, __nv_bfloat16* __restrict__ out, int out_stride, float* __restrict__ out_f32,
    int out_f32_stride) {
    __shared__ float red[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    float* xr = x + (size_t)r * n;
    const float* dr = delta + (size_t)r * n;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float v = __fadd_rn(xr[c], dr[c]);
        xr[c] = v;  // each thread re-reads only the columns it wrote itself
        ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss, red);
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float v = __fmul_rn(__fmul_rn(xr[c], inv), w[c]);
        out[(size_t)r * out_stride + c] = to_bf16(v);
        if (out_f32) out_f32[(size_t)r * out_f32_stride + c] = v;
    }
}

// ---------------------------------------------------------------------------------------------------
/// sb_rope: rotate-half (NeoX) RoPE in place on q [rows, n_heads*head_dim] (stride q_stride) and
/// k [rows, n_kv*head_dim] (stride k_stride) at position positions[r] for row r. inv_freq f32
/// [head_dim/2] must be the host's f32(1 / theta^(2i/d)) (computed in f64, as the CPU drafter does).
/// angle = f32(pos) * inv_freq[i]; (a, b) = (x[i], x[i+d/2]) -> (a*cos - b*sin, b*cos + a*sin), no
/// FMA contraction, exactly like the CPU; only cosf/sinf may differ from the host libm by an ulp.
/// One thread per (row, head, i < d/2): grid ceil(rows*(n_heads+n_kv)*d/2 / 256), block 256.
extern "C" __global__ void __launch_bounds__(256) sb_rope(
    float* __restrict__ q, int q_stride, float* __restrict__ k, int k_stride,
    const int* __restrict__ positions, const float* __restrict__ inv_freq, int rows, int n_heads,
    int n_kv, int head_dim) {
    const int half = head_dim / 2;
    const long long per_row = (long long)(n_heads + n_kv) * half;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= per_row * rows) return;
    const int r = (int)(idx / per_row);
    const int rem = (int)(idx % per_row);
    const int head = rem / half, i = rem % half;
    float* v = head < n_heads ? q + (size_t)r * q_stride + (size_t)head * head_dim
                              : k + (size_t)r * k_stride + (size_t)(head - n_heads) * head_dim;
    const float angle = __fmul_rn((float)positions[r], inv_freq[i]);
    float s, c;
    sincosf(angle, &s, &c);
    const float a = v[i], b = v[i + half];
    v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    v[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

/// sb_cache_append: for r < rows, KV head h < n_kv and e < head_dim:
/// cache_k[(h*capacity + row_offset + r)*head_dim + e] = k_src[r*src_stride + h*head_dim + e], same for
/// V. The cache is one layer's [n_kv][capacity][head_dim] f32 (capacity in rows = entries * slots).
/// Rows past the capacity are skipped (the wrapper rejects them first).
/// One thread per element: grid ceil(rows*n_kv*head_dim / 256), block 256.
extern "C" __global__ void __launch_bounds__(256) sb_cache_append(
    const float* __restrict__ k_src, const float* __restrict__ v_src, int src_stride, int rows,
    int n_kv, int head_dim, float* __restrict__ cache_k, float* __restrict__ cache_v, int capacity,
    int row_offset) {
    const long long per_row = (long long)n_kv * head_dim;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= per_row * rows) return;
    const int r = (int)(idx / per_row);
    const int rem = (int)(idx % per_row);
    const int h = rem / head_dim, e = rem % head_dim;
    const int dst_row = row_offset + r;
    if (dst_row < 0 || dst_row >= capacity) return;
    const size_t dst = ((size_t)h * capacity + dst_row) * head_dim + e;
    const size_t src = (size_t)r * src_stride + (size_t)h * head_dim + e;
    cache_k[dst] = k_src[src];
    cache_v[dst] = v_src[src];
}

// ---------------------------------------------------------------------------------------------------
/// sb_attention: one block per (heads_per_block query heads sharing one KV head, rows_per_block
/// consecutive rows, key split): grid (n_heads / heads_per_block, ceil(rows / rows_per_block),
/// num_splits), block ATT_THREADS (256); heads_per_block divides n_heads / n_kv and
/// heads_per_block * rows_per_block <= 16. Block (x, y) handles heads [x * hpb, (x + 1) * hpb), all on
/// KV head (x * hpb) / (n_heads / n_kv), for rows [y * rpb, (y + 1) * rpb): each key/value tile is
/// loaded once for all of them, and every (row, key) pair is masked by the row's own visibility.
/// Row r, head j (KV head j / (n_heads / n_kv)) attends to
///   - cache keys/values [0, prefix_len[r]) of the layer cache [n_kv][capacity][head_dim] f32, then
///   - its own group's keys: rows r - own_len[r] + 1 ..= r of own_k / own_v ([rows, n_kv*head_dim] f32,
///     stride own_stride; own_len nullable = all 0). Seeds pass own_len = k + 1 for slot k (their own
///     slots are not in the cache); context rows pass own_len = 0 and prefix_len covering their own
///     already-appended slots (entry_base_row + k + 1).
/// q [rows, n_heads*head_dim] f32 (stride q_stride, post-RoPE); scores = (q * scale) . key; softmax in
/// f32 with a running max (online, tile by tile); out bf16 [rows, n_heads*head_dim] (stride out_stride).
/// prefix_len is clamped to [0, capacity] and own_len to [0, r + 1], so a bad length never reads out of
/// bounds; a row with no key gets zeros. Keys and values are read as float4: head_dim % 4 == 0,
/// head_dim <= 128, cache/own pointers 16-byte aligned and own_stride % 4 == 0 (the wrapper checks).
/// Split keys (flash-decoding): with num_splits > 1, block z takes the z-th of num_splits equal,
/// tile-aligned chunks of the block's key list and writes, instead of `out`, the record
/// partial[((r * n_heads + head) * num_splits + z) * (head_dim + 2) ..] = [running max, sum of
/// exponentials, unnormalised output (head_dim)]; sb_attention_combine merges the records.
extern "C" __global__ void __launch_bounds__(ATT_THREADS) sb_attention(
    const float* __restrict__ q, int q_stride, const float* __restrict__ cache_k,
    const float* __restrict__ cache_v, int capacity, const int* __restrict__ prefix_len,
    const float* __restrict__ own_k, const float* __restrict__ own_v, int own_stride,
    const int* __restrict__ own_len, int rows, int n_heads, int n_kv, int head_dim,
    int heads_per_block, int rows_per_block, float scale, __nv_bfloat16* __restrict__ out,
    int out_stride, int num_splits, float* __restrict__ partial) {
    // Row stride of the shared tiles: d + 4 keeps float4 alignment and, for d % 8 == 0, makes the
    // per-key float4 reads of the score loop conflict-free.
    __shared__ __align__(16) float ks[ATT_TILE * (ATT_MAX_D + 4)];
    __shared__ __align__(16) float vs[ATT_TILE * (ATT_MAX_D + 4)];
    __shared__ __align__(16) float qs[ATT_MAX_Q * (ATT_MAX_D + 4)];
    __shared__ float sc[ATT_MAX_Q][ATT_TILE];  // scores, then probabilities
    __shared__ float corr_s[ATT_MAX_Q];
    __shared__ float l_s[ATT_MAX_Q];
    __shared__ int vis_prefix[ATT_MAX_Q], vis_first[ATT_MAX_Q];  // per block row (first R entries)
    const int G = heads_per_block, R = rows_per_block, d = head_dim, ld = head_dim + 4;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    // Uniform over the block, so the early returns skip no barrier another thread waits at.
    if (G < 1 || R < 1 || G * R > ATT_MAX_Q || d < 4 || d > ATT_MAX_D || (d & 3) != 0 || n_kv <= 0 ||
        n_heads % n_kv != 0 || (n_heads / n_kv) % G != 0)
        return;
    const int head0 = blockIdx.x * G, r0 = blockIdx.y * R;
    if (head0 >= n_heads || r0 >= rows) return;
    const int nr = min(R, rows - r0), nq = nr * G;  // query vectors: qi = row_in_block * G + head
    const int kvh = head0 / (n_heads / n_kv);
    // The block's key list: cache rows [0, P) then own rows [o_lo, o_hi] (P + n_own keys).
    int P = 0, o_lo = rows, o_hi = -1;
    for (int i = 0; i < nr; ++i) {
        const int r = r0 + i;
        const int pre = min(max(prefix_len[r], 0), capacity);
        const int own = own_len ? min(max(own_len[r], 0), r + 1) : 0;
        P = max(P, pre);
        if (own > 0) {
            o_lo = min(o_lo, r - own + 1);
            o_hi = max(o_hi, r);
        }
        if (tid == 0) {
            vis_prefix[i] = pre;
            vis_first[i] = r - own + 1;  // > r when the row sees no own key
        }
    }
    const int total = P + (o_hi >= o_lo ? o_hi - o_lo + 1 : 0);
    // This block's keys [k_begin, k_end): one of num_splits tile-aligned chunks.
    const int splits = max(num_splits, 1), split = blockIdx.z;
    const int chunk = ((total + splits - 1) / splits + ATT_TILE - 1) / ATT_TILE * ATT_TILE;
    const int k_begin = min(split * chunk, total), k_end = min(k_begin + chunk, total);
    const int d4 = d / 4;
    const float* kc = cache_k + (size_t)kvh * capacity * d;
    const float* vc = cache_v + (size_t)kvh * capacity * d;

    for (int i = tid; i < nq * d; i += ATT_THREADS) {
        const int qi = i / d, c = i % d;
        const int r = r0 + qi / G, head = head0 + qi % G;
        qs[qi * ld + c] = __fmul_rn(q[(size_t)r * q_stride + (size_t)head * d + c], scale);
    }
    // Next tile's keys and values, loaded into registers while the current tile is computed.
    float4 kr[ATT_VPT], vr[ATT_VPT];
    auto load = [&](int t0) {
        const int n = min(ATT_TILE, k_end - t0);
#pragma unroll
        for (int u = 0; u < ATT_VPT; ++u) {
            const int e = tid + u * ATT_THREADS;
            if (e < n * d4) {
                const int j = t0 + e / d4, c = (e % d4) * 4;
                const size_t o = j < P ? (size_t)j * d + c
                                       : (size_t)(o_lo + j - P) * own_stride + (size_t)kvh * d + c;
                kr[u] = *reinterpret_cast<const float4*>((j < P ? kc : own_k) + o);
                vr[u] = *reinterpret_cast<const float4*>((j < P ? vc : own_v) + o);
            }
        }
    };
    float m[ATT_QPW], l[ATT_QPW];  // running max and sum of queries warp + 8t (t < ATT_QPW)
#pragma unroll
    for (int t = 0; t < ATT_QPW; ++t) {
        m[t] = -INFINITY;
        l[t] = 0.0f;
    }
    float acc[ATT_OPT];  // outputs tid + u * ATT_THREADS of the nq x d block
#pragma unroll
    for (int u = 0; u < ATT_OPT; ++u) acc[u] = 0.0f;
    if (k_begin < k_end) load(k_begin);
    for (int t0 = k_begin; t0 < k_end; t0 += ATT_TILE) {
        const int n = min(ATT_TILE, k_end - t0);
#pragma unroll
        for (int u = 0; u < ATT_VPT; ++u) {
            const int e = tid + u * ATT_THREADS;
            if (e < n * d4) {
                const int j = e / d4, c = (e % d4) * 4;
                *reinterpret_cast<float4*>(&ks[j * ld + c]) = kr[u];
                *reinterpret_cast<float4*>(&vs[j * ld + c]) = vr[u];
            }
        }
        __syncthreads();  // tiles (and, on the first pass, qs and the visibility table) ready
        if (t0 + ATT_TILE < k_end) load(t0 + ATT_TILE);
#pragma unroll
        for (int u = 0; u < ATT_SPT; ++u) {
            const int i = tid + u * ATT_THREADS;
            const int qi = i / ATT_TILE, j = i % ATT_TILE;
            if (qi < nq) {
                const int br = qi / G, key = t0 + j;
                const int o = o_lo + key - P;  // own row of key (when key >= P)
                const bool visible = j < n && (key < P ? key < vis_prefix[br]
                                                       : o >= vis_first[br] && o <= r0 + br);
                float s = -INFINITY;
                if (visible) {
                    float dot = 0.0f;
                    for (int c = 0; c < d; c += 4) {
                        const float4 a = *reinterpret_cast<const float4*>(&qs[qi * ld + c]);
                        const float4 b = *reinterpret_cast<const float4*>(&ks[j * ld + c]);
                        dot = fmaf(a.x, b.x, dot);
                        dot = fmaf(a.y, b.y, dot);
                        dot = fmaf(a.z, b.z, dot);
                        dot = fmaf(a.w, b.w, dot);
                    }
                    s = dot;
                }
                sc[qi][j] = s;
            }
        }
        __syncthreads();  // scores ready
#pragma unroll
        for (int t = 0; t < ATT_QPW; ++t) {
            // Online softmax of query qi over this tile: one key per lane (ATT_TILE == 32).
            const int qi = warp + t * (ATT_THREADS / 32);
            if (qi < nq) {
                const float s = sc[qi][lane];
                float tmax = s;
                for (int o = 16; o > 0; o >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, o));
                const float m_new = fmaxf(m[t], tmax);
                // Nothing visible yet: keep the (empty) state; m = -inf before the first key -> 0.
                const float corr = m_new == -INFINITY ? 1.0f : expf(m[t] - m_new);
                const float p = s == -INFINITY ? 0.0f : expf(s - m_new);
                sc[qi][lane] = p;
                float ps = p;
                for (int o = 16; o > 0; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
                l[t] = l[t] * corr + ps;
                m[t] = m_new;
                if (lane == 0) corr_s[qi] = corr;
            }
        }
        __syncthreads();  // probabilities and corrections ready
#pragma unroll
        for (int u = 0; u < ATT_OPT; ++u) {
            const int o = tid + u * ATT_THREADS;
            if (o < nq * d) {
                const int qi = o / d, c = o % d;
                float a = acc[u] * corr_s[qi];
                for (int j = 0; j < n; ++j) a = fmaf(sc[qi][j], vs[j * ld + c], a);
                acc[u] = a;
            }
        }
        __syncthreads();  // the next pass overwrites ks, vs, sc and corr_s
    }
    if (splits > 1) {
        // Partial records of this split (m = -inf, l = 0 and zeros for an empty chunk).
        const size_t rec = (size_t)splits * (d + 2);  // per (row, head)
        auto base = [&](int qi) {
            return partial + ((size_t)(r0 + qi / G) * n_heads + head0 + qi % G) * rec + (size_t)split * (d + 2);
        };
#pragma unroll
        for (int t = 0; t < ATT_QPW; ++t) {
            const int qi = warp + t * (ATT_THREADS / 32);
            if (qi < nq && lane == 0) {
                base(qi)[0] = m[t];
                base(qi)[1] = l[t];
            }
        }
#pragma unroll
        for (int u = 0; u < ATT_OPT; ++u) {
            const int o = tid + u * ATT_THREADS;
            if (o < nq * d) base(o / d)[2 + o % d] = acc[u];
        }
        return;  // uniform: no barrier follows
    }
#pragma unroll
    for (int t = 0; t < ATT_QPW; ++t) {
        const int qi = warp + t * (ATT_THREADS / 32);
        if (qi < nq && lane == 0) l_s[qi] = l[t];
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < ATT_OPT; ++u) {
        const int o = tid + u * ATT_THREADS;
        if (o < nq * d) {
            const int qi = o / d, c = o % d;
            const float lq = l_s[qi];
            const int r = r0 + qi / G, head = head0 + qi % G;
            out[(size_t)r * out_stride + (size_t)head * d + c] = to_bf16(lq > 0.0f ? acc[u] / lq : 0.0f);
        }
    }
}

/// sb_attention_combine: merges sb_attention's num_splits partial records per (row, head) into
/// out[r, head*head_dim + c] = bf16(Σ_z acc_z[c] e^(m_z - M) / Σ_z l_z e^(m_z - M)), M = max_z m_z
/// (zeros when no split saw a key). One thread per output element: grid
/// ceil(rows*n_heads*head_dim / 256), block 256.
extern "C" __global__ void __launch_bounds__(256) sb_attention_combine(
    const float* __restrict__ partial, int rows, int n_heads, int head_dim, int num_splits,
    __nv_bfloat16* __restrict__ out, int out_stride) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)rows * n_heads * head_dim) return;
    const int c = (int)(idx % head_dim);
    const long long rh = idx / head_dim;  // r * n_heads + head
    const int r = (int)(rh / n_heads), head = (int)(rh % n_heads);
    const float* rec = partial + (size_t)rh * num_splits * (head_dim + 2);
    float mx = -INFINITY;
    for (int z = 0; z < num_splits; ++z) mx = fmaxf(mx, rec[(size_t)z * (head_dim + 2)]);
    float l = 0.0f, a = 0.0f;
    if (mx != -INFINITY) {
        for (int z = 0; z < num_splits; ++z) {
            const float* p = rec + (size_t)z * (head_dim + 2);
            const float w = expf(p[0] - mx);  // an empty split has m = -inf -> weight 0
            l = fmaf(p[1], w, l);
            a = fmaf(p[2 + c], w, a);
        }
    }
    out[(size_t)r * out_stride + (size_t)head * head_dim + c] = to_bf16(l > 0.0f ? a / l : 0.0f);
}

// ---------------------------------------------------------------------------------------------------
/// sb_swiglu: out[r, c] = bf16(silu(gate[r, c]) * up[r, c]) for c < ffn. gate and up share the row
/// stride in_stride: for the fused gate_up GEMM output [rows, 2F] (gate first, like the CPU drafter's
/// w_gate_up) pass gate = gu, up = gu + F, in_stride = 2F. silu(g) = g / (1 + e^-g) computed as the CPU
/// twin does (e = exp(-|g|)). One thread per element: grid ceil(rows*ffn / 256), block 256.
extern "C" __global__ void __launch_bounds__(256) sb_swiglu(
    const float* __restrict__ gate, const float* __restrict__ up, int in_stride, int rows, int ffn,
    __nv_bfloat16* __restrict__ out, int out_stride) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)rows * ffn) return;
    const int r = (int)(idx / ffn), c = (int)(idx % ffn);
    const float g = gate[(size_t)r * in_stride + c], u = up[(size_t)r * in_stride + c];
    const float e = expf(-fabsf(g));
    const float num = g >= 0.0f ? g : __fmul_rn(g, e);
    out[(size_t)r * out_stride + c] = to_bf16(__fmul_rn(__fdiv_rn(num, __fadd_rn(1.0f, e)), u));
}

/// sb_silu_bf16: out[r, c] = bf16(x / (1 + e^-x)) (the rank head's hidden activation, the CPU
/// drafter's formula). One thread per element: grid ceil(rows*n / 256), block 256.
extern "C" __global__ void __launch_bounds__(256) sb_silu_bf16(
    const float* __restrict__ x, int x_stride, int rows, int n, __nv_bfloat16* __restrict__ out,
    int out_stride) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)rows * n) return;
    const int r = (int)(idx / n), c = (int)(idx % n);
    const float v = x[(size_t)r * x_stride + c];
    out[(size_t)r * out_stride + c] = to_bf16(__fdiv_rn(v, __fadd_rn(1.0f, expf(-v))));
}

/// sb_shift_concat: the layer-wise shift's GEMM input. For row r = g*slots + k (rows = groups*slots),
/// out[r] = bf16(concat(x[r], x[g*slots + max(k-1, 0)])) (2*hidden columns, stride out_stride);
/// x f32 [rows, hidden] (stride x_stride). One thread per output element: grid
/// ceil(rows*2*hidden / 256), block 256.
extern "C" __global__ void __launch_bounds__(256) sb_shift_concat(
    const float* __restrict__ x, int x_stride, int groups, int slots, int hidden,
    __nv_bfloat16* __restrict__ out, int out_stride) {
    const long long width = 2LL * hidden;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= width * groups * slots) return;
    const int r = (int)(idx / width), c = (int)(idx % width);
    const int k = r % slots;
    const int src = c < hidden ? r : r - (k > 0 ? 1 : 0);
    const int col = c < hidden ? c : c - hidden;
    out[(size_t)r * out_stride + c] = to_bf16(x[(size_t)src * x_stride + col]);
}

/// sb_f32_to_bf16: out[r, c] = bf16(x[r, c]) for c < n (strided rows; e.g. target features before the
/// W_cond GEMM). One thread per element: grid ceil(rows*n / 256), block 256.
extern "C" __global__ void __launch_bounds__(256) sb_f32_to_bf16(
    const float* __restrict__ x, int x_stride, int rows, int n, __nv_bfloat16* __restrict__ out,
    int out_stride) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)rows * n) return;
    const int r = (int)(idx / n), c = (int)(idx % n);
    out[(size_t)r * out_stride + c] = to_bf16(x[(size_t)r * x_stride + c]);
}

// ---------------------------------------------------------------------------------------------------
// Selection keys for sb_head_features: the high word orders floats like Rust's f32::total_cmp, the low
// word is ~id so that on equal values the lower id is larger (selected first). Keys are unique and >= 1.
__device__ __forceinline__ unsigned long long select_key(float v, int id) {
    const unsigned int b = __float_as_uint(v);
    const unsigned int ord = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((unsigned long long)ord << 32) | (unsigned long long)(0xFFFFFFFFu - (unsigned int)id);
}
__device__ __forceinline__ float key_value(unsigned long long key) {
    const unsigned int ord = (unsigned int)(key >> 32);
    return __uint_as_float((ord & 0x80000000u) ? (ord & 0x7FFFFFFFu) : ~ord);
}
__device__ __forceinline__ int key_id(unsigned long long key) {
    return (int)(0xFFFFFFFFu - (unsigned int)(key & 0xFFFFFFFFull));
}

/// sb_head_features: one block (1024 threads) per row of draft logits f32 [rows, vocab_d] (stride
/// logits_stride). Selects the top S = max(topk_t, kc) logits (ties -> lower draft id, like
/// f32::total_cmp descending then id ascending): a threshold from the per-thread maxima keeps a few
/// candidates, ranked in shared memory (S block-wide arg-max rounds over the row when a row has more
/// than HEAD_CAND_CAP candidates). Then:
///   - rank_in (bf16, stride rank_stride >= hidden + 15): columns [0, hidden) = bf16(normed[r]) when
///     normed (f32 [rows, hidden], stride normed_stride) is not null (else left untouched, e.g. when
///     sb_add_rmsnorm already wrote n_k there); columns hidden..hidden+15 = the 15 rank features of
///     docs/drafter-forward.md over the top topk_t logits: z_i - L (i < 10), z1-z2, z1-z3, z1-z5, p_1,
///     entropy, with L = logsumexp(top topk_t).
///   - cand_ids i32 [rows, kc]: target ids of the top kc (draft id i -> i + d2t[i], d2t i32 [vocab_d]);
///     cand_logprobs f32 [rows, kc]: their log-softmax over the whole draft vocabulary (z - lse).
///   - cand_draft_ids i32 [rows, kc] and row_lse f32 [rows] (both nullable): draft ids, logsumexp.
/// Requires 10 <= topk_t <= 64, kc <= 64, max(topk_t, kc) <= vocab_d; finite logits.
extern "C" __global__ void __launch_bounds__(HEAD_THREADS) sb_head_features(
    const float* __restrict__ logits, int logits_stride, int rows, int vocab_d, int topk_t, int kc,
    const float* __restrict__ normed, int normed_stride, int hidden, __nv_bfloat16* __restrict__ rank_in,
    int rank_stride, const int* __restrict__ d2t, int* __restrict__ cand_ids,
    float* __restrict__ cand_logprobs, int* __restrict__ cand_draft_ids, float* __restrict__ row_lse) {
    __shared__ unsigned long long sel[HEAD_MAX_SEL];
    __shared__ unsigned long long thread_max[HEAD_THREADS];
    __shared__ unsigned long long cand[HEAD_CAND_CAP];
    __shared__ unsigned long long red64[32];
    __shared__ float red[32];
    __shared__ int n_cand;
    __shared__ unsigned long long tau_s;
    const int r = blockIdx.x, tid = threadIdx.x;
    const int n_sel = max(topk_t, kc);
    if (r >= rows || n_sel > HEAD_MAX_SEL || n_sel > vocab_d || topk_t < 10 || blockDim.x != HEAD_THREADS)
        return;  // uniform
    const float* x = logits + (size_t)r * logits_stride;
    __nv_bfloat16* ri = rank_in + (size_t)r * rank_stride;
    if (normed) {
        for (int c = tid; c < hidden; c += blockDim.x) ri[c] = to_bf16(normed[(size_t)r * normed_stride + c]);
    }
    // Pass 1, per thread: the largest key and an online log-sum-exp of its elements.
    unsigned long long kmax = 0;  // 0 = none (every real key is >= 1)
    float m_loc = -INFINITY, s_loc = 0.0f;
    for (int i = tid; i < vocab_d; i += HEAD_THREADS) {
        const float v = x[i];
        const unsigned long long key = select_key(v, i);
        if (key > kmax) kmax = key;
        if (v > m_loc) {
            s_loc = s_loc * expf(m_loc - v) + 1.0f;  // first element: 0 * e^-inf + 1
            m_loc = v;
        } else {
            s_loc += expf(v - m_loc);
        }
    }
    thread_max[tid] = kmax;
    if (tid == 0) n_cand = 0;
    const float mx = block_max(m_loc, red);  // barriers: thread_max and n_cand visible after
    const float se = block_sum(m_loc == -INFINITY ? 0.0f : s_loc * expf(m_loc - mx), red);
    const float lse = mx + logf(se);
    // tau = the n_sel-th largest per-thread maximum: at least n_sel keys are >= tau, so the top n_sel
    // keys all are. Warp 0, n_sel arg-max rounds; lane l owns thread_max[32k + l].
    if (tid < 32) {
        unsigned long long best = 0, win = 0;
        for (int k = 0; k < HEAD_THREADS / 32; ++k) best = max(best, thread_max[k * 32 + tid]);
        for (int s = 0; s < n_sel; ++s) {
            win = best;
            for (int o = 16; o > 0; o >>= 1) win = max(win, __shfl_xor_sync(0xffffffffu, win, o));
            if (best == win) {  // keys are unique: the owning lane drops it and finds its next best
                best = 0;
                for (int k = 0; k < HEAD_THREADS / 32; ++k) {
                    unsigned long long* t = &thread_max[k * 32 + tid];
                    if (*t == win) *t = 0;
                    best = max(best, *t);
                }
            }
        }
        if (tid == 0) tau_s = win;
    }
    __syncthreads();
    const unsigned long long tau = tau_s;
    // Pass 2: the candidates (keys >= tau; usually a few more than n_sel).
    for (int i = tid; i < vocab_d; i += HEAD_THREADS) {
        const unsigned long long key = select_key(x[i], i);
        if (key >= tau) {
            const int slot = atomicAdd(&n_cand, 1);
            if (slot < HEAD_CAND_CAP) cand[slot] = key;
        }
    }
    __syncthreads();
    const int nc = n_cand;  // uniform
    if (nc <= HEAD_CAND_CAP) {
        // Rank each candidate among the others (keys are unique): the top n_sel land in sel[rank].
        for (int a = tid; a < nc; a += HEAD_THREADS) {
            const unsigned long long ka = cand[a];
            int rank = 0;
            for (int b = 0; b < nc; ++b) rank += cand[b] > ka ? 1 : 0;
            if (rank < n_sel) sel[rank] = ka;
        }
    } else {
        // Too many candidates (adversarial rows): n_sel block-wide arg-max rounds over the row,
        // round s taking the largest key strictly below round s-1's.
        unsigned long long prev = 0;
        for (int s = 0; s < n_sel; ++s) {
            unsigned long long best = 0;
            for (int i = tid; i < vocab_d; i += HEAD_THREADS) {
                const unsigned long long key = select_key(x[i], i);
                if ((s == 0 || key < prev) && key > best) best = key;
            }
            prev = block_max_u64(best, red64);
            if (tid == 0) sel[s] = prev;
        }
    }
    __syncthreads();  // sel[] complete and visible
    if (tid == 0) {
        float z[HEAD_MAX_SEL];
        for (int i = 0; i < n_sel; ++i) z[i] = key_value(sel[i]);
        // Rank features over the top topk_t, summed in order like the CPU twin.
        float sum = 0.0f;
        for (int i = 0; i < topk_t; ++i) sum += expf(z[i] - z[0]);
        const float lt = z[0] + logf(sum);
        float ent = 0.0f;
        for (int i = 0; i < topk_t; ++i) {
            const float lp = z[i] - lt;
            ent += __fmul_rn(expf(lp), lp);
        }
        __nv_bfloat16* f = ri + hidden;
        for (int i = 0; i < 10; ++i) f[i] = to_bf16(z[i] - lt);
        f[10] = to_bf16(z[0] - z[1]);
        f[11] = to_bf16(z[0] - z[2]);
        f[12] = to_bf16(z[0] - z[4]);
        f[13] = to_bf16(expf(z[0] - lt));
        f[14] = to_bf16(-ent);
        for (int i = 0; i < kc; ++i) {
            const int id = key_id(sel[i]);
            cand_ids[(size_t)r * kc + i] = id + d2t[id];
            cand_logprobs[(size_t)r * kc + i] = z[i] - lse;
            if (cand_draft_ids) cand_draft_ids[(size_t)r * kc + i] = id;
        }
        if (row_lse) row_lse[r] = lse;
    }
}
