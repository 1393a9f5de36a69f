// Draft-tree finalize and the verification layouts, one thread block per tree.
//
// CPU twins: src/tree/finalize.rs (dedup, budget prune, order) and src/layout/mod.rs (every layout).
// Integer outputs are bit-identical to the CPU library; cumulative log-probabilities are the same f32
// sums in the same order (cum[i] = cum[parent] + min(logprob, 0), parent first).
//
// Device format (see src/cuda/tree.rs): `cap = max_nodes + 1` slots per tree, tree b uses
// [b * cap, (b + 1) * cap). Limit: max_nodes <= 1024 (one node per thread of a 1024-thread block,
// shared-memory arrays sized by cap); the Rust side refuses larger trees with Capacity.
#include <stdint.h>

// Status codes (src/error.rs `Status`).
#define SB_OK 0
#define SB_INVALID_ARGUMENT 2
#define SB_CAPACITY 3
#define SB_BUFFER_TOO_SMALL 4
#define SB_INVALID_NODE 5
#define SB_DEPTH_LIMIT 6
#define SB_INVALID_STATE 7
#define SB_NON_FINITE 8

#define SB_TREE_THREADS 1024
#define SB_NO_ERROR 0x7fffffff
#define SB_EMPTY_KEY 0xffffffffffffffffull

typedef unsigned long long u64;

// f32 -> u32 whose unsigned order is Rust's `f32::total_cmp` order (-0.0 < +0.0; NaN never occurs
// here because finalize rejects it).
__device__ __forceinline__ uint32_t sb_total_key(float f) {
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Dedup compares with `>` (not total_cmp), so -0.0 and +0.0 must tie: canonicalise zero first.
__device__ __forceinline__ uint32_t sb_cmp_key(float f) {
    return f == 0.0f ? 0x80000000u : sb_total_key(f);
}

__device__ __forceinline__ uint32_t sb_hash(u64 k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (uint32_t)k;
}

// Edge log-probability as `DraftTree::add` stores it: positive values become 0 (NaN is rejected
// before this is used; -0.0 stays -0.0).
__device__ __forceinline__ float sb_clamp_lp(float lp) { return lp > 0.0f ? 0.0f : lp; }

// Finalize a batch of raw trees (grid = batch blocks of SB_TREE_THREADS threads).
//
// Dynamic shared memory (bytes, see `finalize_shared_bytes` in src/cuda/tree.rs):
//   u64 hkey[table], u64 hval[table], u64 key[cap], then 13 int arrays of cap entries.
// `table` is a power of two >= 2 * cap (the group hash table of one depth level).
extern "C" __global__ void __launch_bounds__(SB_TREE_THREADS) sb_tree_finalize(
    int batch, int max_nodes, int max_depth, int table,
    const int* __restrict__ in_len, const int* __restrict__ in_token,
    const int* __restrict__ in_parent, const float* __restrict__ in_logprob,
    const uint32_t* __restrict__ in_meta, const int* __restrict__ budget,
    int* __restrict__ status, int* __restrict__ out_len, int* __restrict__ out_token,
    int* __restrict__ out_parent, int* __restrict__ out_depth, int* __restrict__ out_source,
    float* __restrict__ out_cum, float* __restrict__ out_logprob, uint32_t* __restrict__ out_meta,
    int* __restrict__ out_first_child, int* __restrict__ out_next_sibling,
    int* __restrict__ out_num_leaves, int* __restrict__ out_deepest) {
    const int b = blockIdx.x;
    if (b >= batch) return;  // whole block leaves together
    const int cap = max_nodes + 1;
    const size_t base = (size_t)b * cap;
    const int tid = threadIdx.x, nth = blockDim.x;

    extern __shared__ u64 smem[];
    u64* hkey = smem;
    u64* hval = hkey + table;
    u64* key = hval + table;
    int* s_parent = (int*)(key + cap);  // parent as inserted (old ids)
    int* s_depth = s_parent + cap;      // -1 until resolved
    float* s_cum = (float*)(s_depth + cap);
    int* s_rep = (int*)(s_cum + cap);   // survivor of the node's group (itself for survivors)
    int* s_fpar = s_rep + cap;          // parent after dedup (old ids)
    int* s_slot = s_fpar + cap;         // hash slot of the node's group
    int* s_rank = s_slot + cap;         // budget rank among survivors
    int* s_new = s_rank + cap;          // old id -> new id, -1 = dropped
    int* s_old = s_new + cap;           // new id -> old id
    int* s_npar = s_old + cap;          // new parent by new id
    int* s_fc = s_npar + cap;           // first child by new id
    int* s_token = s_fc + cap;          // input tokens (read from global once)
    float* s_lp = (float*)(s_token + cap);  // input edge logprobs, clamped as `add` stores them

    __shared__ int sh_err, sh_len, sh_budget, sh_live, sh_deepest, sh_leaves;

    if (tid == 0) {
        sh_len = in_len[b];
        sh_budget = budget[b];
        sh_live = 0;
        sh_deepest = 0;
        sh_leaves = 0;
        int err = SB_NO_ERROR;
        // Check order as the CPU: reset (root token), each add in order, finalize (budget).
        if (sh_len < 1) err = 0 * 16 + SB_INVALID_STATE;
        else if (in_token[base] < 0) err = 0 * 16 + SB_INVALID_ARGUMENT;
        else if (sh_len > cap) err = cap * 16 + SB_CAPACITY;  // node `cap` would overflow
        sh_err = err;
    }
    __syncthreads();
    const int n = min(max(sh_len, 0), cap);

    // Load; root resolved.
    // Every input is read from global memory once, here; later phases work in shared memory.
    for (int i = tid; i < n; i += nth) {
        s_parent[i] = i == 0 ? -1 : in_parent[base + i];
        s_token[i] = in_token[base + i];
        s_lp[i] = i == 0 ? 0.0f : in_logprob[base + i];
        s_depth[i] = i == 0 ? 0 : -1;
        s_cum[i] = 0.0f;
        s_rep[i] = i;
    }
    __syncthreads();

    // Depth and cum, level by level: a node resolves in round d iff its parent has depth d - 1 (its
    // cum was written in an earlier round). Reads and writes are split by barriers (s_slot holds the
    // "resolves now" flags until dedup needs it).
    for (int d = 1; d <= max_depth + 1; ++d) {
        int changed = 0;
        for (int i = tid + 1; i < n; i += nth) {
            int p = s_parent[i];
            int ready = p >= 0 && p < i && s_depth[i] < 0 && s_depth[p] == d - 1;
            s_slot[i] = ready;
            changed |= ready;
        }
        if (!__syncthreads_or(changed)) break;
        for (int i = tid + 1; i < n; i += nth) {
            if (s_slot[i]) {
                int p = s_parent[i];
                s_depth[i] = d;
                s_cum[i] = s_cum[p] + sb_clamp_lp(s_lp[i]);
            }
        }
        __syncthreads();
    }

    // Per-node validation, in `add`'s check order; the first failing node decides the status.
    for (int i = tid + 1; i < n; i += nth) {
        int p = s_parent[i];
        float lp = s_lp[i];
        int code = 0;
        if (p < 0 || p >= i) code = SB_INVALID_NODE;
        else if (s_token[i] < 0) code = SB_INVALID_ARGUMENT;
        else if (isnan(lp) || lp == __int_as_float(0x7f800000)) code = SB_NON_FINITE;
        else if (s_depth[i] > max_depth) code = SB_DEPTH_LIMIT;
        // s_depth < 0 with a valid parent: an ancestor failed first (smaller id).
        if (code != 0) atomicMin(&sh_err, i * 16 + code);
        else if (s_depth[i] > 0) atomicMax(&sh_deepest, s_depth[i]);
    }
    __syncthreads();
    if (tid == 0 && sh_err == SB_NO_ERROR && (sh_budget < 0 || sh_budget > max_nodes)) {
        sh_err = SB_CAPACITY;  // finalize: budget above max_nodes (negative = huge as u32)
    }
    __syncthreads();
    if (sh_err != SB_NO_ERROR) {
        if (tid == 0) {
            status[b] = sh_err & 15;
            out_len[b] = 0;
            out_num_leaves[b] = 0;
            out_deepest[b] = 0;
        }
        return;  // uniform: every thread read the same shared value
    }
    const int deepest = sh_deepest;

    // Dedup level by level. Group = (survivor of the parent's group, token); the survivor is the
    // member with the highest cum (compared with `>`), ties to the earliest id: atomicMax on
    // (cmp_key(cum) << 32 | ~id).
    for (int d = 1; d <= deepest; ++d) {
        for (int k = tid; k < table; k += nth) {
            hkey[k] = SB_EMPTY_KEY;
            hval[k] = 0ull;
        }
        __syncthreads();
        for (int i = tid + 1; i < n; i += nth) {
            if (s_depth[i] != d) continue;
            int rp = s_rep[s_parent[i]];
            s_fpar[i] = rp;
            u64 g = ((u64)(uint32_t)rp << 32) | (uint32_t)s_token[i];
            uint32_t h = sb_hash(g) & (uint32_t)(table - 1);
            // Linear probing; at most cap - 1 groups in a table of >= 2 * cap slots, so it ends.
            while (true) {
                u64 old = atomicCAS(&hkey[h], SB_EMPTY_KEY, g);
                if (old == SB_EMPTY_KEY || old == g) break;
                h = (h + 1) & (uint32_t)(table - 1);
            }
            s_slot[i] = (int)h;
            u64 score = ((u64)sb_cmp_key(s_cum[i]) << 32) | (uint32_t)(0xffffffffu - (uint32_t)i);
            atomicMax(&hval[h], score);
        }
        __syncthreads();
        for (int i = tid + 1; i < n; i += nth) {
            if (s_depth[i] != d) continue;
            s_rep[i] = (int)(0xffffffffu - (uint32_t)(hval[s_slot[i]] & 0xffffffffull));
        }
        __syncthreads();
    }

    // Budget rank among survivors: (cum total_cmp desc, depth asc, id asc) as one descending u64
    // key; ids are distinct, so keys are. Rank = number of survivors with a larger key.
    for (int i = tid; i < n; i += nth) {
        bool live = i > 0 && s_rep[i] == i;
        key[i] = live ? (((u64)sb_total_key(s_cum[i]) << 32) |
                         ((uint32_t)(127 - s_depth[i]) << 16) | (uint32_t)(0xffff - i))
                      : 0ull;
        if (live) atomicAdd(&sh_live, 1);
    }
    __syncthreads();
    const int kept = min(sh_budget, sh_live);
    for (int i = tid + 1; i < n; i += nth) {
        if (s_rep[i] != i) continue;
        u64 ki = key[i];
        int r = 0;
#pragma unroll 8
        for (int j = 1; j < n; ++j) r += (key[j] > ki) ? 1 : 0;  // dead nodes have key 0
        s_rank[i] = r;
    }
    __syncthreads();
    // Final position: root, then kept nodes by (depth asc, budget rank asc).
    if (tid == 0) {
        s_new[0] = 0;
        s_old[0] = 0;
    }
    for (int i = tid + 1; i < n; i += nth) {
        int pos = -1;
        if (s_rep[i] == i && s_rank[i] < kept) {
            int di = s_depth[i], ri = s_rank[i];
            pos = 1;
#pragma unroll 8
            for (int j = 1; j < n; ++j) {
                if (s_rep[j] != j || s_rank[j] >= kept) continue;
                int dj = s_depth[j];
                pos += (dj < di || (dj == di && s_rank[j] < ri)) ? 1 : 0;
            }
            s_old[pos] = i;
        }
        s_new[i] = pos;
    }
    __syncthreads();

    const int len = kept + 1;
    for (int k = tid; k < len; k += nth) {
        int old = s_old[k];
        int np = k == 0 ? -1 : s_new[s_fpar[old]];  // ancestors of kept nodes are kept
        s_npar[k] = np;
        s_fc[k] = 0x7fffffff;
        out_token[base + k] = s_token[old];
        out_parent[base + k] = np;
        out_depth[base + k] = s_depth[old];
        out_source[base + k] = old;
        out_cum[base + k] = s_cum[old];
        out_logprob[base + k] = k == 0 ? 0.0f : sb_clamp_lp(s_lp[old]);
        out_meta[base + k] = k == 0 ? 0u : in_meta[base + old];
    }
    __syncthreads();
    for (int k = tid + 1; k < len; k += nth) atomicMin(&s_fc[s_npar[k]], k);
    __syncthreads();
    for (int k = tid; k < len; k += nth) {
        int fc = s_fc[k] == 0x7fffffff ? -1 : s_fc[k];
        out_first_child[base + k] = fc;
        if (fc < 0) atomicAdd(&sh_leaves, 1);
        // Next sibling: the next larger id with the same parent. Siblings share a depth and each
        // depth is one contiguous id range in the final order, so scan until the depth changes.
        int ns = -1;
        if (k > 0) {
            int dk = s_depth[s_old[k]], pk = s_npar[k];
            for (int j = k + 1; j < len && s_depth[s_old[j]] == dk; ++j) {
                if (s_npar[j] == pk) {
                    ns = j;
                    break;
                }
            }
        }
        out_next_sibling[base + k] = ns;
    }
    __syncthreads();
    if (tid == 0) {
        int dmax = 0;
        // Kept nodes' depths: the deepest is the last node (depth-major order).
        if (len > 1) dmax = s_depth[s_old[len - 1]];
        status[b] = SB_OK;
        out_len[b] = len;
        out_num_leaves[b] = sh_leaves;
        out_deepest[b] = dmax;
    }
}

// --------------------------------------------------------------------------------------------------
// Layouts

// 32 bits of a little-endian bit string `row` (`nw` words) starting at bit `start` (may be negative:
// bits before 0 read as 0; bits past the end read as 0).
__device__ __forceinline__ uint32_t sb_bits32(const uint32_t* row, int nw, long long start) {
    if (start <= -32) return 0u;
    if (start < 0) return nw > 0 ? row[0] << (int)(-start) : 0u;
    long long q = start >> 5;
    int r = (int)(start & 31);
    uint32_t lo = q < nw ? row[q] : 0u;
    if (r == 0) return lo;
    uint32_t hi = q + 1 < nw ? row[q + 1] : 0u;
    return (lo >> r) | (hi << (32 - r));
}

// Ones for bit columns c in [32 w, 32 w + 32) with c < prefix.
__device__ __forceinline__ uint32_t sb_prefix_word(long long w, long long prefix) {
    long long lo = w * 32;
    if (prefix >= lo + 32) return 0xffffffffu;
    if (prefix <= lo) return 0u;
    return (1u << (int)(prefix - lo)) - 1u;
}

// Every layout of a finalized batch (grid = batch blocks of SB_TREE_THREADS threads). Per-tree regions
// (elements): positions cap, dense/bias cap*cap, bits cap*ceil(cap/32), bits_prefix
// cap*ceil((max_prefix+cap)/32), flat ceil(cap*(max_prefix+cap)/8) bytes, paths cap*row_width,
// seq_first/seq_count cap. Tree b's layout is packed at the start of its region exactly as the CPU
// function writes it for that tree's n. `bits` (prefix 0) is required (it is the source of the
// others); every other output may be 0 (skipped). lstatus[b]: 0, or the CPU's status for the first
// failing check (tree not finalized, prefix above max_prefix, positions overflow, sequence ranges).
//
// Dynamic shared memory: 6 int arrays of cap entries, (max_depth + 2) ints, then the ancestor bit
// rows, cap * ceil(cap / 32) words (at most 160 KiB for cap 1025: fits sm_80 and sm_90 with opt-in).
extern "C" __global__ void __launch_bounds__(SB_TREE_THREADS) sb_tree_layouts(
    int batch, int max_nodes, int max_depth, int row_width, int max_prefix, int first_seq_id,
    uint32_t max_seq, int want_seq,
    const int* __restrict__ t_len, const int* __restrict__ t_parent, const int* __restrict__ t_depth,
    const int* __restrict__ t_first_child, const int* __restrict__ t_next_sibling,
    const int* __restrict__ t_num_leaves, const int* __restrict__ t_deepest,
    const uint32_t* __restrict__ prefix_len, int* __restrict__ lstatus,
    int* __restrict__ positions, uint8_t* __restrict__ dense, float* __restrict__ bias,
    uint32_t* __restrict__ bits, uint32_t* __restrict__ bits_prefix, uint8_t* __restrict__ flat,
    int* __restrict__ paths, int* __restrict__ seq_first, int* __restrict__ seq_count) {
    const int b = blockIdx.x;
    if (b >= batch) return;
    const int cap = max_nodes + 1;
    const size_t base = (size_t)b * cap;
    const int tid = threadIdx.x, nth = blockDim.x;

    extern __shared__ int ismem[];
    int* s_par = ismem;
    int* s_dep = s_par + cap;
    int* s_fc = s_dep + cap;
    int* s_ns = s_fc + cap;
    int* s_lc = s_ns + cap;     // leaves in the subtree
    int* s_fl = s_lc + cap;     // leaves before the node in depth-first order
    int* s_lstart = s_fl + cap; // first id of each depth (max_depth + 2 entries)
    uint32_t* rows = (uint32_t*)(s_lstart + max_depth + 2);  // ancestor bit rows, w0 words each

    __shared__ int sh_status;
    const int n = t_len[b];
    const int deepest = t_deepest[b];
    const int leaves = t_num_leaves[b];
    const long long prefix = prefix_len[b];
    if (tid == 0) {
        int st = SB_OK;
        if (n < 1 || n > cap || deepest > max_depth) st = SB_INVALID_STATE;
        else if (prefix > max_prefix) st = SB_BUFFER_TOO_SMALL;
        else if (prefix + deepest > 0x7fffffffll) st = SB_INVALID_ARGUMENT;
        else if (row_width < deepest + 1) st = SB_BUFFER_TOO_SMALL;
        else if (want_seq && (long long)first_seq_id + leaves > (long long)max_seq) st = SB_CAPACITY;
        else if (want_seq && (long long)first_seq_id + leaves - 1 > 0x7fffffffll) st = SB_INVALID_ARGUMENT;
        sh_status = st;
        lstatus[b] = st;
    }
    __syncthreads();
    if (sh_status != SB_OK) return;

    for (int i = tid; i < n; i += nth) {
        s_par[i] = t_parent[base + i];
        s_dep[i] = t_depth[base + i];
        s_fc[i] = t_first_child[base + i];
        s_ns[i] = t_next_sibling[base + i];
        s_lc[i] = s_fc[i] < 0 ? 1 : 0;
        s_fl[i] = 0;
    }
    for (int d = tid; d <= deepest + 1; d += nth) s_lstart[d] = n;
    __syncthreads();
    // Depth-major order: depth d occupies [lstart[d], lstart[d + 1]).
    for (int i = tid; i < n; i += nth) {
        if (i == 0 || s_dep[i] != s_dep[i - 1]) s_lstart[s_dep[i]] = i;
    }
    __syncthreads();

    // Ancestor bit rows (prefix 0), level by level like the CPU: row = parent's row | own bit.
    const int w0 = (n + 31) / 32;
    for (int w = tid; w < w0; w += nth) rows[w] = w == 0 ? 1u : 0u;
    __syncthreads();
    for (int d = 1; d <= deepest; ++d) {
        int lo = s_lstart[d], hi = s_lstart[d + 1];
        for (int t = tid; t < (hi - lo) * w0; t += nth) {
            int i = lo + t / w0, w = t % w0;
            uint32_t v = rows[(size_t)s_par[i] * w0 + w];
            if (w == (i >> 5)) v |= 1u << (i & 31);
            rows[(size_t)i * w0 + w] = v;
        }
        __syncthreads();
    }

    // Leaf counts bottom-up, then depth-first leaf offsets top-down (children ascend by id).
    for (int d = deepest; d >= 1; --d) {
        for (int i = s_lstart[d] + tid; i < s_lstart[d + 1]; i += nth) atomicAdd(&s_lc[s_par[i]], s_lc[i]);
        __syncthreads();
    }
    for (int d = 0; d < deepest; ++d) {
        for (int p = s_lstart[d] + tid; p < s_lstart[d + 1]; p += nth) {
            int acc = s_fl[p];
            for (int c = s_fc[p]; c >= 0; c = s_ns[c]) {
                s_fl[c] = acc;
                acc += s_lc[c];
            }
        }
        __syncthreads();
    }

    {
        uint32_t* out = bits + (size_t)b * cap * ((cap + 31) / 32);
        for (int t = tid; t < n * w0; t += nth) out[t] = rows[t];
    }
    if (positions) {
        for (int i = tid; i < n; i += nth) positions[base + i] = (int)(prefix + s_dep[i]);
    }
    if (dense || bias) {
        const size_t reg = (size_t)b * cap * cap;
        for (int t = tid; t < n * n; t += nth) {
            int i = t / n, j = t % n;
            bool on = (rows[(size_t)i * w0 + (j >> 5)] >> (j & 31)) & 1u;
            if (dense) dense[reg + t] = on ? 1 : 0;
            if (bias) bias[reg + t] = on ? 0.0f : __int_as_float(0xff800000);
        }
    }
    if (bits_prefix) {
        const long long wp = (prefix + n + 31) / 32;
        uint32_t* out = bits_prefix + (size_t)b * cap * ((max_prefix + cap + 31) / 32);
        const bool small = n * wp < 0x7fffffffll;  // 32-bit division is several times cheaper
        for (long long t = tid; t < n * wp; t += nth) {
            int i = small ? (int)((uint32_t)t / (uint32_t)wp) : (int)(t / wp);
            long long w = t - (long long)i * wp;
            out[t] = sb_prefix_word(w, prefix) | sb_bits32(rows + (size_t)i * w0, w0, w * 32 - prefix);
        }
    }
    if (flat) {
        // Byte k holds bits 8k..8k+8 of the row-major n x (prefix + n) string. One division per byte,
        // then 32-bit windows of the rows the byte covers.
        const long long kv = prefix + n;
        const long long nbits = (long long)n * kv;
        const long long nbytes = (nbits + 7) / 8;
        uint8_t* out = flat + (size_t)b * (((long long)cap * (max_prefix + cap) + 7) / 8);
        for (long long k = tid; k < nbytes; k += nth) {
            long long bit = k * 8;
            long long i = nbits < 0x7fffffffll ? (long long)((uint32_t)bit / (uint32_t)kv) : bit / kv;
            long long c = bit - i * kv;
            uint32_t v = 0;
            int filled = 0;
            // Short rows (kv < 8) make a byte span several rows.
            while (filled < 8 && bit < nbits) {
                uint32_t chunk = sb_prefix_word(0, prefix - c) | sb_bits32(rows + i * w0, w0, c - prefix);
                long long cnt = min((long long)(8 - filled), kv - c);
                v |= (chunk & ((1u << cnt) - 1u)) << filled;
                filled += (int)cnt;
                bit += cnt;
                ++i;
                c = 0;
            }
            out[k] = (uint8_t)v;
        }
    }
    if (paths) {
        int* reg = paths + (size_t)b * cap * row_width;
        for (int l = tid; l < n; l += nth) {
            if (s_fc[l] >= 0) continue;
            int* row = reg + (size_t)s_fl[l] * row_width;
            for (int c = s_dep[l] + 1; c < row_width; ++c) row[c] = -1;
            for (int a = l; a >= 0; a = s_par[a]) row[s_dep[a]] = a;
        }
    }
    if (want_seq) {
        for (int i = tid; i < n; i += nth) {
            if (seq_first) seq_first[base + i] = first_seq_id + s_fl[i];
            if (seq_count) seq_count[base + i] = s_lc[i];
        }
    }
}
