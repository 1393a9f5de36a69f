//! CPU twins of the drafter's GPU ops (`kernels/drafter.cu`, wrapped by `cuda::drafter::ops`): small,
//! plain functions computing exactly what each kernel computes, in f32, so the parity tests can compare
//! the device against the library. A kernel that writes bf16 is twinned by a function that writes the
//! f32 values; the device output equals [`bf16_round`] of them up to the f32 rounding of reductions
//! (sums run in a different order on the GPU). RMSNorm and SwiGLU are twinned by
//! [`crate::cpu::rms_norm`] and [`crate::cpu::swiglu`] directly.

use std::vec::Vec;

use crate::cpu::{rms_norm, softmax_in_place};
use crate::num::f32_to_bf16;

/// The rank head's sizes, defined once with the drafter's weights and shared with the GPU drafter
/// (`cuda::drafter`): the rank features appended to the normed hidden, and the rank head's hidden width.
pub use super::weights::RANK_FEATURES;
#[cfg(feature = "cuda")]
pub(crate) use super::weights::RANK_HIDDEN;

/// Status bit of [`fuse_inputs`] (and `sb_fuse_inputs`): a token is outside the embedding's rows.
pub const STATUS_TOKEN_OUT_OF_RANGE: i32 = 1;

/// A bf16 bit pattern widened to f32 (exact): [`crate::num::bf16_to_f32`].
pub use crate::num::bf16_to_f32;

/// `x` rounded to bf16 (nearest even) and widened back: the value a bf16 kernel output holds.
pub fn bf16_round(x: f32) -> f32 {
    bf16_to_f32(f32_to_bf16(x))
}

/// `rope_inv_freq[i] = f32(1 / theta^(2i/d))` for `i < head_dim / 2`, computed in f64: the formula the
/// CPU drafter uses (`SpecBlockDrafter::from_safetensors`), uploaded as `sb_rope`'s `inv_freq`.
pub fn rope_inv_freq(head_dim: usize, theta: f32) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| (1.0 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64)) as f32)
        .collect()
}

/// The three norm weights and the position queries of the input fusion.
#[derive(Clone, Copy, Debug)]
pub struct FuseNorms<'a> {
    /// `[slots, hidden]` position queries P (not normed).
    pub queries: &'a [f32],
    /// `[hidden]` condition norm weight.
    pub w_cond: &'a [f32],
    /// `[hidden]` token norm weight.
    pub w_tok: &'a [f32],
    /// `[hidden]` query norm weight.
    pub w_query: &'a [f32],
    /// RMSNorm epsilon.
    pub eps: f32,
}

/// Twin of `sb_fuse_inputs`: for group g (`cond` row g, token `tokens[g]`) and slot k, row
/// `g * slots + k` of `out` (`3 * hidden` wide, contiguous) is
/// `concat(RMSNorm_c(cond_g), RMSNorm_t(E[tokens[g]]), RMSNorm_q(P[k]))`. `embed` is bf16 `[vocab,
/// hidden]` (bit patterns). A token outside `0..vocab` gets a zero token part and sets
/// [`STATUS_TOKEN_OUT_OF_RANGE`] in the returned status (0 when every token is valid).
pub fn fuse_inputs(
    cond: &[f32],
    tokens: &[i32],
    embed: &[u16],
    n: &FuseNorms<'_>,
    slots: usize,
    out: &mut [f32],
) -> i32 {
    let h = n.w_cond.len();
    let vocab = embed.len() / h.max(1);
    let mut status = 0;
    let (mut c, mut t, mut row) = (vec_f32(h), vec_f32(h), vec_f32(h));
    for (g, &tok) in tokens.iter().enumerate() {
        rms_norm(&cond[g * h..(g + 1) * h], n.w_cond, n.eps, &mut c);
        if tok >= 0 && (tok as usize) < vocab {
            let e = &embed[tok as usize * h..(tok as usize + 1) * h];
            for (r, &b) in row.iter_mut().zip(e) {
                *r = bf16_to_f32(b);
            }
            rms_norm(&row, n.w_tok, n.eps, &mut t);
        } else {
            status |= STATUS_TOKEN_OUT_OF_RANGE;
            t.fill(0.0);
        }
        for k in 0..slots {
            let o = &mut out[(g * slots + k) * 3 * h..(g * slots + k + 1) * 3 * h];
            o[..h].copy_from_slice(&c);
            o[h..2 * h].copy_from_slice(&t);
            rms_norm(
                &n.queries[k * h..(k + 1) * h],
                n.w_query,
                n.eps,
                &mut o[2 * h..],
            );
        }
    }
    status
}

fn vec_f32(n: usize) -> Vec<f32> {
    std::vec![0.0; n]
}

/// Twin of `sb_add_rmsnorm`: `x += delta`, then `out = RMSNorm(x) * w` per `w.len()`-wide row.
pub fn add_rms_norm(x: &mut [f32], delta: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    for (a, &b) in x.iter_mut().zip(delta) {
        *a += b;
    }
    rms_norm(x, w, eps, out);
}

/// Twin of `sb_rope` for one tensor: rotate-half RoPE in place on `heads` heads of `2 *
/// inv_freq.len()` dims in each row of `x` (rows `stride` apart), row r at `positions[r]`, with the CPU
/// drafter's numerics (angle = f32(pos) * inv_freq in f32, Rust's `cos`/`sin`).
pub fn rope(x: &mut [f32], stride: usize, heads: usize, positions: &[i32], inv_freq: &[f32]) {
    let half = inv_freq.len();
    for (r, &pos) in positions.iter().enumerate() {
        let p = pos as f32;
        for head in 0..heads {
            let v = &mut x[r * stride + head * 2 * half..r * stride + (head + 1) * 2 * half];
            for (j, &f) in inv_freq.iter().enumerate() {
                let angle = p * f;
                let (s, c) = (angle.sin(), angle.cos());
                let (a, b) = (v[j], v[j + half]);
                v[j] = a * c - b * s;
                v[j + half] = b * c + a * s;
            }
        }
    }
}

/// Shape of one layer's GQA-compact, head-major context cache: `[n_kv][capacity][head_dim]` f32.
#[derive(Clone, Copy, Debug)]
pub struct CacheShape {
    /// KV heads.
    pub n_kv: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Rows per KV head (entries x slots).
    pub capacity: usize,
}

/// Twin of `sb_cache_append` for one tensor (keys or values): row r of `src` (`n_kv * head_dim`
/// values, rows `src_stride` apart) goes to cache row `row_offset + r` of every KV head.
pub fn cache_append(
    src: &[f32],
    src_stride: usize,
    rows: usize,
    shape: CacheShape,
    cache: &mut [f32],
    row_offset: usize,
) {
    let d = shape.head_dim;
    for r in 0..rows {
        for h in 0..shape.n_kv {
            let dst = (h * shape.capacity + row_offset + r) * d;
            let s = r * src_stride + h * d;
            cache[dst..dst + d].copy_from_slice(&src[s..s + d]);
        }
    }
}

/// Inputs of [`attention`] (the meaning of every field is `sb_attention`'s).
#[derive(Clone, Copy, Debug)]
pub struct AttentionInputs<'a> {
    /// `[rows, n_heads * head_dim]` post-RoPE queries, rows `q_stride` apart.
    pub q: &'a [f32],
    /// Row stride of `q`.
    pub q_stride: usize,
    /// `[n_kv, capacity, head_dim]` key cache.
    pub cache_k: &'a [f32],
    /// Value cache, same layout.
    pub cache_v: &'a [f32],
    /// Cache shape (`n_kv`, `head_dim`, `capacity`).
    pub shape: CacheShape,
    /// Query heads (a multiple of `shape.n_kv`).
    pub n_heads: usize,
    /// Per row: cache rows `0..prefix_len[r]` are visible (clamped to `0..=capacity`).
    pub prefix_len: &'a [i32],
    /// `[rows, n_kv * head_dim]` own-group keys, rows `own_stride` apart (may be empty with `own_len`).
    pub own_k: &'a [f32],
    /// Own-group values, same layout.
    pub own_v: &'a [f32],
    /// Row stride of `own_k` / `own_v`.
    pub own_stride: usize,
    /// Per row: own rows `r - own_len[r] + 1 ..= r` are visible after the cache keys (clamped to
    /// `0..=r + 1`); empty = all zero.
    pub own_len: &'a [i32],
    /// Score scale (normally `1 / sqrt(head_dim)`).
    pub scale: f32,
}

/// Twin of `sb_attention`: `out` is `[rows, n_heads * head_dim]` (contiguous), rows =
/// `prefix_len.len()`. Scores `(q * scale) . k`, an exact f32 softmax ([`softmax_in_place`]), then the
/// probability-weighted sum of values. A row with no visible key gets zeros.
pub fn attention(a: &AttentionInputs<'_>, out: &mut [f32]) {
    let (d, n_kv, cap) = (a.shape.head_dim, a.shape.n_kv, a.shape.capacity);
    let group = a.n_heads / n_kv;
    let qd = a.n_heads * d;
    let mut qs = vec_f32(d);
    let mut scores = Vec::new();
    for (r, &pl) in a.prefix_len.iter().enumerate() {
        let prefix = (pl.max(0) as usize).min(cap);
        let own = a
            .own_len
            .get(r)
            .map_or(0, |&o| (o.max(0) as usize).min(r + 1));
        let first = r + 1 - own;
        for head in 0..a.n_heads {
            let kvh = head / group;
            let key = |j: usize| -> (&[f32], &[f32]) {
                if j < prefix {
                    let o = (kvh * cap + j) * d;
                    (&a.cache_k[o..o + d], &a.cache_v[o..o + d])
                } else {
                    let o = (first + j - prefix) * a.own_stride + kvh * d;
                    (&a.own_k[o..o + d], &a.own_v[o..o + d])
                }
            };
            for (s, &x) in qs.iter_mut().zip(&a.q[r * a.q_stride + head * d..]) {
                *s = x * a.scale;
            }
            scores.clear();
            scores.extend(
                (0..prefix + own)
                    .map(|j| key(j).0.iter().zip(&qs).map(|(k, q)| k * q).sum::<f32>()),
            );
            softmax_in_place(&mut scores);
            let o = &mut out[r * qd + head * d..r * qd + (head + 1) * d];
            o.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                for (acc, &v) in o.iter_mut().zip(key(j).1) {
                    *acc += p * v;
                }
            }
        }
    }
}

/// Twin of `sb_silu_bf16`: `x / (1 + e^-x)` in place (the CPU drafter's rank-head activation).
pub fn silu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v /= 1.0 + (-*v).exp();
    }
}

/// Twin of `sb_shift_concat`: row `g * slots + k` of `out` (`2 * hidden` wide, contiguous) is
/// `concat(x[g*slots + k], x[g*slots + max(k-1, 0)])`; `x` is `[rows, hidden]` contiguous.
pub fn shift_concat(x: &[f32], slots: usize, hidden: usize, out: &mut [f32]) {
    let rows = x.len() / hidden.max(1);
    for r in 0..rows {
        let prev = r - usize::from(r % slots > 0);
        let o = &mut out[r * 2 * hidden..(r + 1) * 2 * hidden];
        o[..hidden].copy_from_slice(&x[r * hidden..(r + 1) * hidden]);
        o[hidden..].copy_from_slice(&x[prev * hidden..(prev + 1) * hidden]);
    }
}

/// What [`head_features`] computes for one row of draft logits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeadRow {
    /// The 15 rank features over the top `topk_t` logits (docs/drafter-forward.md §4).
    pub features: [f32; RANK_FEATURES],
    /// The top `kc` draft ids, best first (ties: lower id first), with their log-softmax over the
    /// whole row.
    pub candidates: Vec<(u32, f32)>,
    /// The row's log-sum-exp.
    pub lse: f32,
}

/// Twin of `sb_head_features` for one row: the rank features exactly as the CPU forward computes
/// them, the top `kc` candidates (draft ids; the kernel maps them to target ids with `d2t`) with their
/// log-softmax, and the log-sum-exp (max + ln Σ e^(x - max), as the CPU session computes it).
pub fn head_features(logits: &[f32], topk_t: usize, kc: usize) -> HeadRow {
    let mut features = [0f32; RANK_FEATURES];
    let mut scratch = Vec::with_capacity(logits.len());
    super::forward::rank_features(logits, topk_t, &mut scratch, &mut features);
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let lse = max + logits.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let candidates = idx
        .iter()
        .take(kc)
        .map(|&i| (i as u32, logits[i] - lse))
        .collect();
    HeadRow {
        features,
        candidates,
        lse,
    }
}

/// Resizes `v` to `n` copies of `x` without giving back capacity (no allocation once large enough): how
/// both drafters' forwards size their reused buffers.
pub(crate) fn fit<T: Copy>(v: &mut Vec<T>, n: usize, x: T) {
    v.clear();
    v.resize(n, x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_concat_slot0_receives_itself() {
        let x: Vec<f32> = (0..6).map(|v| v as f32).collect(); // 3 rows of 2, slots 3
        let mut out = vec_f32(12);
        shift_concat(&x, 3, 2, &mut out);
        assert_eq!(out, [0., 1., 0., 1., 2., 3., 0., 1., 4., 5., 2., 3.]);
    }

    #[test]
    fn attention_over_one_key_returns_its_value() {
        let shape = CacheShape {
            n_kv: 1,
            head_dim: 2,
            capacity: 4,
        };
        let cache_k = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let cache_v = [3.0, -2.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0];
        let a = AttentionInputs {
            q: &[0.5, 0.5, 1.0, 1.0],
            q_stride: 4,
            cache_k: &cache_k,
            cache_v: &cache_v,
            shape,
            n_heads: 2,
            prefix_len: &[1],
            own_k: &[],
            own_v: &[],
            own_stride: 0,
            own_len: &[],
            scale: 1.0,
        };
        let mut out = vec_f32(4);
        attention(&a, &mut out);
        assert_eq!(out, [3.0, -2.0, 3.0, -2.0]);
    }

    #[test]
    fn head_features_breaks_ties_by_lower_id() {
        let mut row: Vec<f32> = (0..20).map(|i| -(i as f32)).collect();
        row[7] = 5.0;
        row[3] = 5.0;
        let h = head_features(&row, 10, 3);
        let ids: Vec<u32> = h.candidates.iter().map(|c| c.0).collect();
        assert_eq!(ids, [3, 7, 0]);
        assert_eq!(h.features[10], 0.0); // z1 - z2 with a tie
    }
}
