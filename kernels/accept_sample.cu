// Lossless sampling acceptance from target logits (the "target-only" rule), one thread block per
// sequence walking its draft tree.
//
// CPU twin: `specblock::verify::sample` (src/verify/mod.rs, src/verify/dist.rs, src/rng.rs,
// src/math.rs). At node v one coin u = CounterRng(seed).uniform(2v) accepts the first child (ascending
// id) with u < p(c_1) + ... + p(c_i) (strict); if none, the emitted token is drawn from p restricted to
// the non-children with the coin at 2v + 1 (the bonus at a leaf is drawn from p with that coin).
// p(x) = exp((l_x - max) / T) / Z over the tokens with l_x >= cut, where the cut combines top-k and
// top-p (radix searches over order-preserving keys, as the CPU does). T == 0 (or a subnormal T whose
// reciprocal overflows) is greedy: follow the child equal to the argmax (ties to the lowest id).
//
// Arithmetic. Token weights are bit-identical to the CPU (the same exp polynomial, no FMA contraction:
// every operation is an explicit round-to-nearest intrinsic). Masses are summed in fixed point with a
// 72-bit fraction (two u64 words per sum: units 2^-32 and 2^-72; integer atomics and reductions), so
// every sum is exact given the per-token weights truncated to 2^-72, independent of thread order and
// deterministic. The CPU sums in f32 lanes
// flushed to f64 (about 1e-7 relative); outcomes differ only when a coin lies within that distance of a
// decision boundary. Child probabilities w / Z, the running sum and the coin comparison are the CPU's
// f64 operations in the CPU's order.
//
// Device format (see src/cuda/sample.rs): cap = max_nodes + 1 slots per tree, tree b uses
// [b * cap, (b + 1) * cap); children lists ascend by id and end with -1. Logits are row-major
// [batch, cap, vocab] (f32 or bf16). Limits: vocab <= 2^20, max_depth <= 64, at most 512 children per
// node are excluded from a residual draw (more gives SB_CAPACITY); the Rust side checks the sizes.
#include <cuda_bf16.h>
#include <stdint.h>

// Status codes (src/error.rs `Status`).
#define SB_OK 0
#define SB_INVALID_ARGUMENT 2
#define SB_CAPACITY 3
#define SB_INVALID_NODE 5
#define SB_DEPTH_LIMIT 6
#define SB_NON_FINITE 8
#define SB_TOKEN_OUT_OF_RANGE 9
#define SB_SHAPE_MISMATCH 10

typedef unsigned long long u64;

namespace {

constexpr int NT = 512;              // threads per block (one block per sequence)
constexpr int NW = NT / 32;          // warps per block
constexpr int BUCKETS = 2048;        // radix histogram size (11-bit digits)
constexpr int BPT = BUCKETS / NT;    // buckets (or residual chunks) owned by one thread in a scan
constexpr int CHUNK = NT;            // tokens per residual chunk (one per thread in the final scan)
constexpr int MAX_CHUNKS = BUCKETS;  // chunk masses reuse the histogram arrays: vocab <= 2^20
constexpr int MAX_KIDS = 512;        // children remembered for the residual exclusion (one per thread)
constexpr int MAX_DEPTH = 64;        // crate::MAX_DEPTH
constexpr int FX_SHIFT = 40;         // bits per fixed-point word
constexpr u64 FX_LO_MASK = (1ull << FX_SHIFT) - 1;

static_assert(BUCKETS % NT == 0, "buckets split evenly over threads");
static_assert(MAX_KIDS <= NT, "one excluded child per thread");
static_assert(MAX_CHUNKS * CHUNK >= (1 << 20), "chunk masses cover the largest vocabulary");

// Radix digits, most significant first: 11 + 11 + 10 bits (as the CPU; any exact split gives the same
// cut, this one keeps the histogram at 2048 buckets).
__device__ __constant__ int kShift[3] = {21, 10, 0};
__device__ __constant__ int kBits[3] = {11, 11, 10};

struct Shared {
  unsigned cnt[BUCKETS];  // radix counts
  u64 hi[BUCKETS];        // radix masses (high word, units 2^-32), or residual chunk masses
  u64 lo[BUCKETS];        // (low word, units 2^-72)
  int kids[MAX_KIDS];     // tokens of the current node's children, in list order
  int path[MAX_DEPTH];    // accepted nodes
  u64 red[3][NW];         // reduction scratch
  float redf[NW];
  int redi[NW];
  int bi[4];  // broadcast slots
  u64 bu[4];
  // Walk state, written by thread 0 between barriers.
  int status, cur, nacc, bonus, done, accepted, last_possible, nkids, err;
  double coin_final;
};

// ---------------------------------------------------------------------------------------------------
// Scalar helpers shared with the CPU twin.

// SplitMix64 output function (src/rng.rs `mix64`).
__device__ __forceinline__ u64 mix64(u64 z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// CounterRng::new(seed).uniform(counter): 53 random bits scaled by 2^-53 (both steps exact).
__device__ __forceinline__ double uniform(u64 seed, u64 counter) {
  const u64 key = mix64(seed ^ 0x5bd1e995cafef00dull);
  const u64 bits = mix64(key + (counter + 1) * 0x9e3779b97f4a7c15ull);
  return __dmul_rn(__ull2double_rn(bits >> 11), 0x1p-53);
}

// src/math.rs `exp_nonpositive`, operation for operation (explicit _rn intrinsics: no FMA contraction).
__device__ __forceinline__ float exp_nonpositive(float x) {
  const float LOG2E = __uint_as_float(0x3fb8aa3bu);
  const float LN2_HI = __uint_as_float(0x3f317200u);
  const float LN2_LO = __uint_as_float(0x35bfbe8eu);
  const float MAGIC = __uint_as_float(0x4b400000u);  // 1.5 * 2^23
  const float C6 = __uint_as_float(0x3e2aaaabu);
  const float C24 = __uint_as_float(0x3d2aaaabu);
  const float C120 = __uint_as_float(0x3c088889u);
  const float C720 = __uint_as_float(0x3ab60b61u);
  const float clamped = x < -87.0f ? -87.0f : x;
  const float shifted = __fadd_rn(__fmul_rn(clamped, LOG2E), MAGIC);
  const float n = __fsub_rn(shifted, MAGIC);
  const float r = __fsub_rn(__fsub_rn(clamped, __fmul_rn(n, LN2_HI)), __fmul_rn(n, LN2_LO));
  float t = __fmul_rn(r, C720);
  t = __fmul_rn(r, __fadd_rn(C120, t));
  t = __fmul_rn(r, __fadd_rn(C24, t));
  t = __fmul_rn(r, __fadd_rn(C6, t));
  t = __fmul_rn(r, __fadd_rn(0.5f, t));
  t = __fmul_rn(r, __fadd_rn(1.0f, t));
  const float p = __fadd_rn(1.0f, t);
  const unsigned n_bits = __float_as_uint(shifted) - __float_as_uint(MAGIC);
  const float scale = __uint_as_float((n_bits + 127u) << 23);
  return x < -87.0f ? 0.0f : __fmul_rn(p, scale);
}

// RowDist::weight before the f64 conversion: exp((l - max) / T) for l >= cut, else 0.
__device__ __forceinline__ float weight(float l, float mx, float inv_t, float cut) {
  return l >= cut ? exp_nonpositive(__fmul_rn(__fsub_rn(l, mx), inv_t)) : 0.0f;
}

// Order-preserving f32 -> u32 (src/verify/dist.rs `key`) and its inverse.
__device__ __forceinline__ unsigned key_of(float x) {
  const unsigned b = __float_as_uint(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float unkey(unsigned k) {
  return (k & 0x80000000u) ? __uint_as_float(k & 0x7fffffffu) : __uint_as_float(~k);
}

// A weight w in [0, 1] as fixed point: hi = floor(w * 2^32), lo = the next 40 bits. Both steps are
// exact in f64 (w has 24 significant bits), so only the bits below 2^-72 are dropped.
__device__ __forceinline__ void to_fx(float w, u64& hi, u64& lo) {
  const double s = __dmul_rn((double)w, 0x1p32);
  const double h = floor(s);
  hi = (u64)h;
  lo = (u64)__dmul_rn(__dsub_rn(s, h), 0x1p40);
}

// The value of a fixed-point sum (hi, lo not yet normalised). After normalisation hi < 2^53 for
// vocab <= 2^21, so the conversion is exact and the one rounding is the final add: monotone in the
// exact sum, which keeps every "first crossing" search below unique.
__device__ __forceinline__ double fx_value(u64 hi, u64 lo) {
  const u64 h = hi + (lo >> FX_SHIFT);
  const u64 l = lo & FX_LO_MASK;
  return __dadd_rn(__dmul_rn(__ull2double_rn(h), 0x1p-32), __dmul_rn(__ull2double_rn(l), 0x1p-72));
}

template <typename T>
__device__ __forceinline__ float ld(const T* row, int j);
template <>
__device__ __forceinline__ float ld<float>(const float* row, int j) {
  return __ldg(row + j);
}
template <>
__device__ __forceinline__ float ld<__nv_bfloat16>(const __nv_bfloat16* row, int j) {
  return __bfloat162float(row[j]);
}

// Calls f(j, logit) for this thread's tokens j = tid, tid + NT, ... (ascending), with UNROLL loads in
// flight per thread: one block streams a whole row, so memory-level parallelism sets the speed.
constexpr int UNROLL = 8;
template <typename T, typename F>
__device__ __forceinline__ void for_row(const T* row, int vocab, F f) {
  int j = threadIdx.x;
  for (; j + (UNROLL - 1) * NT < vocab; j += UNROLL * NT) {
    float v[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) v[u] = ld(row, j + u * NT);
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) f(j + u * NT, v[u]);
  }
  for (; j < vocab; j += NT) f(j, ld(row, j));
}

// ---------------------------------------------------------------------------------------------------
// Block-wide reductions and scans. Every one is called by all threads of the block (they contain
// __syncthreads) and leaves the scratch free for the next call.

__device__ __forceinline__ u64 warp_sum(u64 v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sums (a, b) over the block; every thread gets the totals (warps added in a fixed order).
__device__ void block_sum2(Shared& s, u64& a, u64& b) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) {
    s.red[0][w] = a;
    s.red[1][w] = b;
  }
  __syncthreads();
  a = 0;
  b = 0;
  for (int i = 0; i < NW; ++i) {
    a += s.red[0][i];
    b += s.red[1][i];
  }
  __syncthreads();
}

// Exclusive scan of three values over threads: with `suffix`, out = sum over threads t' > t; else
// over threads t' < t.
__device__ void block_excl_scan3(Shared& s, const u64 v[3], u64 out[3], bool suffix) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  u64 inc[3] = {v[0], v[1], v[2]};
  for (int off = 1; off < 32; off <<= 1) {
    for (int k = 0; k < 3; ++k) {
      const u64 y = suffix ? __shfl_down_sync(0xffffffffu, inc[k], off)
                           : __shfl_up_sync(0xffffffffu, inc[k], off);
      const bool take = suffix ? (lane + off < 32) : (lane >= off);
      if (take) inc[k] += y;
    }
  }
  // The warp total sits in lane 0 (suffix) or lane 31 (prefix).
  if (lane == (suffix ? 0 : 31)) {
    for (int k = 0; k < 3; ++k) s.red[k][w] = inc[k];
  }
  __syncthreads();
  for (int k = 0; k < 3; ++k) {
    u64 other = 0;
    if (suffix) {
      for (int i = w + 1; i < NW; ++i) other += s.red[k][i];
    } else {
      for (int i = 0; i < w; ++i) other += s.red[k][i];
    }
    out[k] = other + inc[k] - v[k];
  }
  __syncthreads();
}

// ---------------------------------------------------------------------------------------------------
// Per-row passes.

// Validates a row and finds its maximum and the first index holding it (float comparison, so -0.0 and
// +0.0 tie, as the CPU's argmax). Returns whether a NaN or +inf occurs.
template <typename T>
__device__ bool row_scan(Shared& s, const T* row, int vocab, float& mx, int& amax) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  float best = -INFINITY;
  int bi = 0x7fffffff;
  int bad = 0;
  for_row(row, vocab, [&](int j, float l) {
    bad |= (l != l) | (l == INFINITY);
    if (l > best) {  // strict, ascending j: keeps this thread's first occurrence
      best = l;
      bi = j;
    }
  });
  for (int off = 16; off > 0; off >>= 1) {
    const float ob = __shfl_xor_sync(0xffffffffu, best, off);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, off);
    if (ob > best || (ob == best && oi < bi)) {
      best = ob;
      bi = oi;
    }
  }
  if (lane == 0) {
    s.redf[w] = best;
    s.redi[w] = bi;
  }
  const int any_bad = __syncthreads_or(bad);  // also orders the scratch writes above
  best = s.redf[0];
  bi = s.redi[0];
  for (int i = 1; i < NW; ++i) {
    const float ob = s.redf[i];
    const int oi = s.redi[i];
    if (ob > best || (ob == best && oi < bi)) {
      best = ob;
      bi = oi;
    }
  }
  __syncthreads();
  mx = best;
  amax = bi;
  return any_bad != 0;
}

// The k-th largest logit (1 <= k < vocab) by a three-level radix select over keys (counts only).
template <typename T>
__device__ float topk_cut(Shared& s, const T* row, int vocab, int k) {
  unsigned prefix = 0, pmask = 0;
  unsigned rem = (unsigned)k;  // rank still to find inside the current prefix
  for (int lev = 0; lev < 3; ++lev) {
    const int shift = kShift[lev];
    const unsigned dmask = (1u << kBits[lev]) - 1u;
    for (int i = threadIdx.x; i < BUCKETS; i += NT) s.cnt[i] = 0;
    if (threadIdx.x == 0) {
      s.bi[0] = 0;
      s.bu[0] = 0;
    }
    __syncthreads();
    for_row(row, vocab, [&](int, float l) {
      const unsigned kk = key_of(l);
      if ((kk & pmask) == prefix) atomicAdd(&s.cnt[(kk >> shift) & dmask], 1u);
    });
    __syncthreads();
    // Thread t owns buckets [t*BPT, (t+1)*BPT); the digit is the largest d whose suffix count
    // S(d) = sum_{d' >= d} cnt[d'] reaches rem (exactly one d has S(d) >= rem > S(d+1)).
    const int b0 = threadIdx.x * BPT;
    u64 v[3] = {0, 0, 0}, ex[3];
    for (int q = 0; q < BPT; ++q) v[0] += s.cnt[b0 + q];
    block_excl_scan3(s, v, ex, true);
    u64 above = ex[0];
    for (int q = BPT - 1; q >= 0; --q) {
      const u64 here = above + s.cnt[b0 + q];
      if (here >= rem && above < rem) {
        s.bi[0] = b0 + q;
        s.bu[0] = above;
      }
      above = here;
    }
    __syncthreads();
    const unsigned d = (unsigned)s.bi[0];
    rem -= (unsigned)s.bu[0];
    prefix |= d << shift;
    pmask |= dmask << shift;
    __syncthreads();  // everyone has read the broadcast before the next level overwrites it
  }
  return unkey(prefix);
}

// Sum of the fixed-point weights of the tokens with l >= cut, by chunks of CHUNK tokens (one warp per
// chunk, all its loads in flight): the chunk masses stay in s.hi / s.lo (zero past the last chunk) for
// the residual draw, the total goes to (zh, zl).
template <typename T>
__device__ void row_mass(Shared& s, const T* row, int vocab, float mx, float inv_t, float cut,
                         u64& zh, u64& zl) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int nchunks = (vocab + CHUNK - 1) / CHUNK;
  u64 th = 0, tl = 0;
  for (int c = w; c < nchunks; c += NW) {  // warp-uniform loop
    float x[CHUNK / 32];
#pragma unroll
    for (int i = 0; i < CHUNK / 32; ++i) {
      const int j = c * CHUNK + i * 32 + lane;
      x[i] = j < vocab ? ld(row, j) : -INFINITY;
    }
    u64 h = 0, l = 0;
#pragma unroll
    for (int i = 0; i < CHUNK / 32; ++i) {
      if (x[i] >= cut) {  // a real branch: under a top-k / top-p cut most warps skip the exp
        u64 a, b;
        to_fx(weight(x[i], mx, inv_t, cut), a, b);  // -inf (past the end) weighs 0
        h += a;
        l += b;
      }
    }
    h = warp_sum(h);
    l = warp_sum(l);
    if (lane == 0) {
      s.hi[c] = h;
      s.lo[c] = l;
      th += h;
      tl += l;
    }
  }
  for (int c = nchunks + threadIdx.x; c < MAX_CHUNKS; c += NT) {
    s.hi[c] = 0;
    s.lo[c] = 0;
  }
  block_sum2(s, th, tl);  // its barriers also publish the chunk masses
  zh = th;
  zl = tl;
}

// The top-p cut: the largest logit value v such that the tokens with logit >= v (and >= cut) hold at
// least `target` mass; a three-level radix search over keys with mass histograms (src/verify/dist.rs
// `top_p_cut`, including its fall-backs).
template <typename T>
__device__ float topp_cut(Shared& s, const T* row, int vocab, float mx, float inv_t, float cut,
                          double target) {
  unsigned prefix = 0, pmask = 0;
  u64 above_h = 0, above_l = 0;  // mass of the tokens whose key lies above the current prefix
  for (int lev = 0; lev < 3; ++lev) {
    const int shift = kShift[lev];
    const unsigned dmask = (1u << kBits[lev]) - 1u;
    for (int i = threadIdx.x; i < BUCKETS; i += NT) {
      s.cnt[i] = 0;
      s.hi[i] = 0;
      s.lo[i] = 0;
    }
    if (threadIdx.x == 0) {
      s.bi[0] = -1;       // chosen digit
      s.bi[1] = BUCKETS;  // lowest non-empty digit
    }
    __syncthreads();
    for_row(row, vocab, [&](int, float l) {
      if (!(l >= cut)) return;
      const unsigned kk = key_of(l);
      if ((kk & pmask) != prefix) return;
      const unsigned d = (kk >> shift) & dmask;
      u64 a, b;
      to_fx(weight(l, mx, inv_t, cut), a, b);
      atomicAdd(&s.cnt[d], 1u);
      if (a) atomicAdd(&s.hi[d], a);
      if (b) atomicAdd(&s.lo[d], b);
    });
    __syncthreads();
    const int b0 = threadIdx.x * BPT;
    u64 v[3] = {0, 0, 0}, ex[3];
    for (int q = 0; q < BPT; ++q) {
      v[0] += s.hi[b0 + q];
      v[1] += s.lo[b0 + q];
    }
    block_excl_scan3(s, v, ex, true);
    u64 ah = above_h + ex[0], al = above_l + ex[1];
    // The digit is the largest d with value(above + S(d)) >= target; fx_value is monotone, so exactly
    // one d has value(S(d)) >= target > value(S(d+1)).
    for (int q = BPT - 1; q >= 0; --q) {
      const int d = b0 + q;
      const u64 nh = ah + s.hi[d], nl = al + s.lo[d];
      if (fx_value(nh, nl) >= target && !(fx_value(ah, al) >= target)) {
        s.bi[0] = d;
        s.bu[0] = ah;
        s.bu[1] = al;
      }
      if (s.cnt[d] > 0) atomicMin(&s.bi[1], d);
      ah = nh;
      al = nl;
    }
    if (threadIdx.x == 0) {  // thread 0 ends on bucket 0: above + every bucket
      s.bu[2] = ah;
      s.bu[3] = al;
    }
    __syncthreads();
    int d = s.bi[0];
    if (d >= 0) {
      above_h = s.bu[0];
      above_l = s.bu[1];
    } else {
      // Rounding kept the total below the target: the CPU keeps everything down to the lowest
      // non-empty bucket (its running mass then includes every bucket).
      d = s.bi[1];
      above_h = s.bu[2];
      above_l = s.bu[3];
    }
    __syncthreads();
    if (d >= BUCKETS) return cut;  // no token in range (uniform: every thread read the same d)
    prefix |= (unsigned)d << shift;
    pmask |= dmask << shift;
  }
  return unkey(prefix);
}

// Whether `tok` is one of the first `nk` remembered children.
__device__ __forceinline__ bool is_kid(const Shared& s, int nk, int tok) {
  for (int q = 0; q < nk; ++q)
    if (s.kids[q] == tok) return true;
  return false;
}

// Draws from p restricted to the tokens outside s.kids[0..nkids) with coin u (inverse CDF in index
// order: the first token whose running mass exceeds u * rest; if rounding leaves none, the last token
// with mass). Returns -1 when the children hold all the mass. (zh, zl) is the row's mass.
template <typename T>
__device__ int residual_draw(Shared& s, const T* row, int vocab, float mx, float inv_t, float cut,
                             u64 zh, u64 zl, double u) {
  const int nk = s.nkids;
  // The chunk masses of the final cut are in s.hi / s.lo (row_mass ran last).
  if (threadIdx.x == 0) {
    s.bi[0] = -1;  // crossing chunk
    s.bi[1] = -1;  // last chunk with mass
    s.bi[2] = -1;  // crossing token
    s.bi[3] = -1;  // last token with mass in the chunk
  }
  __syncthreads();
  // 1. Remove the children (each distinct token once) from their chunks and from the total.
  u64 eh = 0, el = 0;
  if (threadIdx.x < nk) {
    const int tok = s.kids[threadIdx.x];
    bool first = true;
    for (int q = 0; q < (int)threadIdx.x; ++q) first &= s.kids[q] != tok;
    if (first) {
      to_fx(weight(ld(row, tok), mx, inv_t, cut), eh, el);
      atomicAdd(&s.hi[tok / CHUNK], 0ull - eh);  // exact: the chunk mass holds this weight
      atomicAdd(&s.lo[tok / CHUNK], 0ull - el);
    }
  }
  block_sum2(s, eh, el);  // its barriers also publish the chunk updates
  const u64 rh = zh - eh, rl = zl - el;  // exact, both words stay >= 0
  if (rh == 0 && rl == 0) return -1;     // uniform
  const double target = __dmul_rn(u, fx_value(rh, rl));
  // 2. The chunk where the running mass first exceeds the target (thread t owns chunks
  //    [t*BPT, (t+1)*BPT)); also the last chunk with mass, for the rounding fall-back.
  const int c0 = threadIdx.x * BPT;
  u64 v[3] = {0, 0, 0}, ex[3];
  for (int q = 0; q < BPT; ++q) {
    v[0] += s.hi[c0 + q];
    v[1] += s.lo[c0 + q];
  }
  block_excl_scan3(s, v, ex, false);
  u64 bh = ex[0], bl = ex[1];
  for (int q = 0; q < BPT; ++q) {
    const int c = c0 + q;
    const u64 nh = bh + s.hi[c], nl = bl + s.lo[c];
    if (fx_value(nh, nl) > target && !(fx_value(bh, bl) > target)) {
      s.bi[0] = c;
      s.bu[0] = bh;
      s.bu[1] = bl;
    }
    if (s.hi[c] != 0 || s.lo[c] != 0) atomicMax(&s.bi[1], c);
    bh = nh;
    bl = nl;
  }
  __syncthreads();
  const bool crossed = s.bi[0] >= 0;
  const int chunk = crossed ? s.bi[0] : s.bi[1];
  const u64 carry_h = crossed ? s.bu[0] : 0, carry_l = crossed ? s.bu[1] : 0;
  __syncthreads();
  if (chunk < 0) return -1;  // unreachable: rest > 0 means some chunk has mass
  // 3. Inside that chunk, one token per thread.
  const int j = chunk * CHUNK + threadIdx.x;
  u64 a = 0, b = 0;
  if (j < vocab && !is_kid(s, nk, j)) to_fx(weight(ld(row, j), mx, inv_t, cut), a, b);
  u64 tv[3] = {a, b, 0}, tex[3];
  block_excl_scan3(s, tv, tex, false);
  if (crossed) {
    const u64 bh2 = carry_h + tex[0], bl2 = carry_l + tex[1];
    if (fx_value(bh2 + a, bl2 + b) > target && !(fx_value(bh2, bl2) > target)) s.bi[2] = j;
  }
  if (a != 0 || b != 0) atomicMax(&s.bi[3], j);
  __syncthreads();
  const int tok = s.bi[2] >= 0 ? s.bi[2] : s.bi[3];
  __syncthreads();
  return tok;
}

// ---------------------------------------------------------------------------------------------------
// The kernel.

template <typename T>
__device__ void accept_sample(const int* __restrict__ tree_len, const int* __restrict__ tree_token,
                              const int* __restrict__ first_child,
                              const int* __restrict__ next_sibling, const T* __restrict__ logits,
                              const float* __restrict__ temperature, const int* __restrict__ top_k,
                              const float* __restrict__ top_p, const u64* __restrict__ seed, int batch,
                              int cap, int vocab, int max_depth, int* __restrict__ accept_len,
                              int* __restrict__ accept_nodes, int* __restrict__ accept_tokens,
                              int* __restrict__ bonus, int* __restrict__ keep,
                              int* __restrict__ status) {
  __shared__ Shared s;
  const int b = blockIdx.x;
  if (b >= batch) return;  // uniform per block
  const int tid = threadIdx.x;
  const size_t base = (size_t)b * (size_t)cap;
  const int n = tree_len[b];
  const float temp = temperature[b];
  const int k = top_k[b];
  const float tp = top_p[b];
  const u64 sd = seed[b];

  // Checks in the CPU's order: parameters, then (GPU only) the tree length, then every draft token.
  int st = SB_OK;
  if (!(temp >= 0.0f && temp <= 3.402823466e38f) || k < 0 || !(tp > 0.0f && tp <= 1.0f))
    st = SB_INVALID_ARGUMENT;
  else if (vocab <= 0 || max_depth < 1 || max_depth > MAX_DEPTH)
    st = SB_INVALID_ARGUMENT;
  else if (n < 1 || n > cap)
    st = SB_SHAPE_MISMATCH;
  int bad_tok = 0;
  if (st == SB_OK) {
    for (int i = tid + 1; i < n; i += NT) {
      const int t = tree_token[base + i];
      bad_tok |= (t < 0) | (t >= vocab);
    }
  }
  if (__syncthreads_or(bad_tok) && st == SB_OK) st = SB_TOKEN_OUT_OF_RANGE;

  const float inv_t = __fdiv_rn(1.0f, temp);
  const bool greedy = temp == 0.0f || inv_t == INFINITY;
  if (tid == 0) {
    s.status = st;
    s.cur = 0;
    s.nacc = 0;
    s.bonus = -1;
    s.done = st != SB_OK;
  }
  __syncthreads();

  while (!s.done) {  // uniform: s.done changes only between barriers
    const int cur = s.cur;
    const T* row = logits + (base + (size_t)cur) * (size_t)vocab;
    float mx;
    int amax;
    const bool bad = row_scan(s, row, vocab, mx, amax);
    if (bad || mx == -INFINITY) {
      if (tid == 0) {
        s.status = bad ? SB_NON_FINITE : SB_INVALID_ARGUMENT;
        s.done = 1;
      }
      __syncthreads();
      break;
    }
    float cut = -INFINITY;
    u64 zh = 0, zl = 0;
    if (!greedy) {
      if (k > 0 && k < vocab) cut = topk_cut(s, row, vocab, k);
      row_mass(s, row, vocab, mx, inv_t, cut, zh, zl);
      if (tp < 1.0f) {
        const double target = __dmul_rn((double)tp, fx_value(zh, zl));
        const float pc = topp_cut(s, row, vocab, mx, inv_t, cut, target);
        if (pc > cut) cut = pc;
        // Always: the histograms overwrote the chunk masses the residual draw needs.
        row_mass(s, row, vocab, mx, inv_t, cut, zh, zl);
      }
    }
    // Thread 0 walks the children: validates the list, applies the coin, remembers the tokens.
    if (tid == 0) {
      const double z = fx_value(zh, zl);
      const double coin = greedy ? 0.0 : uniform(sd, 2ull * (u64)cur);
      double cdf = 0.0;
      int accepted = -1, last_possible = -1, nk = 0, err = SB_OK;
      int prev = cur;
      int c = first_child[base + cur];
      while (c != -1) {
        if (c <= prev || c >= n) {  // ids ascend and stay in the tree: the walk terminates
          err = SB_INVALID_NODE;
          break;
        }
        const int tok = tree_token[base + c];
        if (greedy) {
          if (tok == amax) {
            accepted = c;
            break;
          }
        } else {
          const double pc =
              __ddiv_rn((double)weight(ld(row, tok), mx, inv_t, cut), z);
          if (pc > 0.0) last_possible = c;
          cdf = __dadd_rn(cdf, pc);
          if (coin < cdf) {
            accepted = c;
            break;
          }
          if (nk < MAX_KIDS) s.kids[nk] = tok;
          ++nk;
        }
        prev = c;
        c = next_sibling[base + c];
      }
      s.accepted = accepted;
      s.last_possible = last_possible;
      s.nkids = nk;
      s.coin_final = greedy ? 0.0 : uniform(sd, 2ull * (u64)cur + 1ull);
      s.err = err;
    }
    __syncthreads();
    int err = s.err;
    int accepted = s.accepted;
    int tok = -1;
    if (err == SB_OK && accepted < 0) {
      if (greedy) {
        tok = amax;
      } else if (s.nkids > MAX_KIDS) {
        err = SB_CAPACITY;
      } else {
        tok = residual_draw(s, row, vocab, mx, inv_t, cut, zh, zl, s.coin_final);
        if (tok < 0) {
          accepted = s.last_possible;  // the children hold all the mass
          if (accepted < 0) err = SB_INVALID_ARGUMENT;
        }
      }
    }
    __syncthreads();  // every thread has read the walk state
    if (tid == 0) {
      if (err != SB_OK) {
        s.status = err;
        s.done = 1;
      } else if (accepted >= 0) {
        if (s.nacc >= max_depth) {
          s.status = SB_DEPTH_LIMIT;
          s.done = 1;
        } else {
          s.path[s.nacc] = accepted;
          s.nacc += 1;
          s.cur = accepted;
        }
      } else {
        s.bonus = tok;
        s.done = 1;
      }
    }
    __syncthreads();
  }

  // Outputs: every slot written (padding -1); on an error only the status and accept_len = 0.
  const bool ok = s.status == SB_OK;
  const int na = ok ? s.nacc : 0;
  int* nodes_out = accept_nodes + (size_t)b * (size_t)(max_depth + 1);
  int* tokens_out = accept_tokens + (size_t)b * (size_t)(max_depth + 1);
  int* keep_out = keep + (size_t)b * (size_t)(max_depth + 2);
  for (int i = tid; i < max_depth + 1; i += NT) {
    const int node = i < na ? s.path[i] : -1;
    nodes_out[i] = node;
    tokens_out[i] = node >= 0 ? tree_token[base + node] : -1;
  }
  for (int i = tid; i < max_depth + 2; i += NT) {
    int v = -1;
    if (ok) v = i == 0 ? 0 : (i <= na ? s.path[i - 1] : -1);
    keep_out[i] = v;
  }
  if (tid == 0) {
    accept_len[b] = na;
    bonus[b] = ok ? s.bonus : -1;
    status[b] = s.status;
  }
}

}  // namespace

// Lossless sampling acceptance, f32 logits. Grid: one block of 512 threads per sequence.
extern "C" __global__ void __launch_bounds__(NT, 1)
    sb_accept_sample_f32(const int* tree_len, const int* tree_token, const int* first_child,
                         const int* next_sibling, const float* logits, const float* temperature,
                         const int* top_k, const float* top_p, const u64* seed, int batch, int cap,
                         int vocab, int max_depth, int* accept_len, int* accept_nodes,
                         int* accept_tokens, int* bonus, int* keep, int* status) {
  accept_sample<float>(tree_len, tree_token, first_child, next_sibling, logits, temperature, top_k,
                       top_p, seed, batch, cap, vocab, max_depth, accept_len, accept_nodes,
                       accept_tokens, bonus, keep, status);
}

// The same with bf16 logits (widened to f32 on load, exactly).
extern "C" __global__ void __launch_bounds__(NT, 1)
    sb_accept_sample_bf16(const int* tree_len, const int* tree_token, const int* first_child,
                          const int* next_sibling, const __nv_bfloat16* logits,
                          const float* temperature, const int* top_k, const float* top_p,
                          const u64* seed, int batch, int cap, int vocab, int max_depth,
                          int* accept_len, int* accept_nodes, int* accept_tokens, int* bonus,
                          int* keep, int* status) {
  accept_sample<__nv_bfloat16>(tree_len, tree_token, first_child, next_sibling, logits,
                               temperature, top_k, top_p, seed, batch, cap, vocab, max_depth,
                               accept_len, accept_nodes, accept_tokens, bonus, keep, status);
}
