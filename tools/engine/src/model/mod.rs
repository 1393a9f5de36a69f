//! The Llama forward pass (RMSNorm, rotate-half RoPE, GQA attention, SwiGLU, tied LM head) over one or
//! several sequences at once, with a KV cache per sequence, an arbitrary ancestor mask among the new
//! tokens (tree verification), and capture of intermediate layers' outputs.

use std::sync::{Arc, Mutex};

pub mod kv;

pub use kv::KvCache;
use specblock::cpu::Pool;
use specblock::cpu::{Matrix, SendPtr, kernels, matmul, rms_norm, swiglu};

use crate::error::{Error, Result};
use crate::weights::{LlamaConfig, LoadedModel};

/// Weight storage of the matmuls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// f32 weights (538 MB for SmolLM2-135M).
    F32,
    /// bf16 weights, f32 accumulation (half the bytes to read per token).
    Bf16,
}

struct Layer {
    attn_norm: Vec<f32>,
    /// q, k and v projections stacked: `[(n_heads + 2 n_kv_heads) * head_dim, hidden]`.
    wqkv: Matrix,
    wo: Matrix,
    ffn_norm: Vec<f32>,
    /// gate and up stacked: `[2 ffn, hidden]`.
    w_gate_up: Matrix,
    w_down: Matrix,
}

/// A loaded Llama model ready to run.
pub struct Llama {
    cfg: LlamaConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Matrix,
    /// RoPE inverse frequencies, `head_dim / 2`.
    inv_freq: Vec<f64>,
    /// One forward pass at a time uses the pool (it is not re-entrant); concurrent callers wait.
    pool: Mutex<Arc<Pool>>,
}

/// Which new tokens of a sequence may attend to which (all cached rows are always visible).
#[derive(Clone, Copy, Debug)]
pub enum Mask<'a> {
    /// Token `i` sees new tokens `0..=i` (plain decoding and prefill).
    Causal,
    /// Dense `n x n` ancestor-or-self mask, row-major: token `i` sees new token `j` iff
    /// `mask[i * n + j] != 0` (the library's `layout::mask_dense`).
    Tree(&'a [u8]),
}

/// Which rows get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Every new token.
    All,
    /// Only the last new token.
    Last,
    /// None.
    None,
}

/// The new tokens of one sequence in a forward pass.
pub struct Segment<'a> {
    /// That sequence's cache; the new tokens are appended after its rows.
    pub kv: &'a mut KvCache,
    /// New token ids.
    pub tokens: &'a [u32],
    /// Their RoPE positions.
    pub positions: &'a [u32],
    /// Visibility among the new tokens.
    pub mask: Mask<'a>,
    /// Rows that get logits.
    pub logits: Logits,
}

/// What to capture besides logits.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    /// Decoder layer indices (0-based) whose output (the residual stream after the layer) is captured
    /// for every new token, concatenated in this order: `rows x (layers.len() * hidden)`.
    pub layers: Vec<usize>,
    /// Capture the final normed hidden state (the LM head's input) of every new token.
    pub final_hidden: bool,
}

/// Results of a forward pass, rows in segment order.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// `rows x vocab` logits for the rows each segment asked for.
    pub logits: Vec<f32>,
    /// Per segment: how many logits rows it got.
    pub logits_rows: Vec<usize>,
    /// `tokens x (capture.layers.len() * hidden)`, if layers were asked for.
    pub features: Vec<f32>,
    /// `tokens x hidden`, if asked for.
    pub final_hidden: Vec<f32>,
}

/// One `[out, k]` weight matrix in the requested storage, bf16 packed for the broadcast kernel where
/// that is the kernel this host runs (`Matrix::try_pack`).
fn weights(data: Vec<f32>, out: usize, k: usize, bf16: bool) -> Matrix {
    debug_assert_eq!(data.len(), out * k);
    let mut m = Matrix::new(data, false);
    if bf16 {
        m.convert_to_bf16_packed(k);
    }
    m
}

impl Llama {
    /// Builds the model from loaded tensors, using `threads` threads for every pass.
    pub fn new(mut m: LoadedModel, format: WeightFormat, threads: usize) -> Result<Self> {
        let c = m.config.clone();
        if c.n_heads == 0
            || c.n_kv_heads == 0
            || !c.n_heads.is_multiple_of(c.n_kv_heads)
            || !c.head_dim.is_multiple_of(2)
            || c.head_dim > 256
        {
            return Err(Error::Unsupported(format!(
                "heads {}/{} with head_dim {}",
                c.n_heads, c.n_kv_heads, c.head_dim
            )));
        }
        let bf16 = format == WeightFormat::Bf16;
        let (h, qd, kvd) = (c.hidden, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        let embed = m.take("model.embed_tokens.weight", &[c.vocab, h])?;
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let p = |s: &str| format!("model.layers.{i}.{s}.weight");
            let mut wqkv = m.take(&p("self_attn.q_proj"), &[qd, h])?;
            wqkv.extend(m.take(&p("self_attn.k_proj"), &[kvd, h])?);
            wqkv.extend(m.take(&p("self_attn.v_proj"), &[kvd, h])?);
            let mut gate_up = m.take(&p("mlp.gate_proj"), &[c.ffn, h])?;
            gate_up.extend(m.take(&p("mlp.up_proj"), &[c.ffn, h])?);
            layers.push(Layer {
                attn_norm: m.take(&p("input_layernorm"), &[h])?,
                wqkv: weights(wqkv, qd + 2 * kvd, h, bf16),
                wo: weights(m.take(&p("self_attn.o_proj"), &[h, qd])?, h, qd, bf16),
                ffn_norm: m.take(&p("post_attention_layernorm"), &[h])?,
                w_gate_up: weights(gate_up, 2 * c.ffn, h, bf16),
                w_down: weights(m.take(&p("mlp.down_proj"), &[h, c.ffn])?, h, c.ffn, bf16),
            });
        }
        let norm = m.take("model.norm.weight", &[h])?;
        let lm_head = if m.tensors.contains_key("lm_head.weight") {
            weights(m.take("lm_head.weight", &[c.vocab, h])?, c.vocab, h, bf16)
        } else if c.tie_embeddings {
            weights(embed.clone(), c.vocab, h, bf16)
        } else {
            return Err(Error::Format(
                "lm_head.weight is missing and embeddings are not tied".into(),
            ));
        };
        let inv_freq = (0..c.head_dim / 2)
            .map(|i| 1.0 / (c.rope_theta as f64).powf(2.0 * i as f64 / c.head_dim as f64))
            .collect();
        Ok(Llama {
            cfg: c,
            embed,
            layers,
            norm,
            lm_head,
            inv_freq,
            pool: Mutex::new(Pool::shared_pinned(threads)),
        })
    }

    /// The token embedding (`vocab x hidden`, row-major), lent read-only to a drafter.
    pub fn embedding(&self) -> &[f32] {
        &self.embed
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Bytes of weights read per forward pass (the matmuls and the LM head).
    pub fn weight_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.wqkv.bytes() + l.wo.bytes() + l.w_gate_up.bytes() + l.w_down.bytes())
            .sum::<usize>()
            + self.lm_head.bytes()
    }

    /// A new empty KV cache for `capacity` tokens.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(&self.cfg, capacity)
    }

    /// Runs one sequence's new tokens (see [`Llama::forward_batch`]).
    pub fn forward(&self, seg: Segment<'_>, capture: &Capture) -> Result<Output> {
        self.forward_batch(&mut [seg], capture)
    }

    /// One forward pass over the new tokens of several independent sequences: their rows share every
    /// matmul, attention stays within each sequence. Appends the new keys/values to each cache.
    /// On error nothing is appended.
    pub fn forward_batch(&self, segs: &mut [Segment<'_>], capture: &Capture) -> Result<Output> {
        let c = &self.cfg;
        let (h, hd) = (c.hidden, c.head_dim);
        let (nh, nkv) = (c.n_heads, c.n_kv_heads);
        let (qd, kvd) = (nh * hd, nkv * hd);
        // Validate everything before touching a cache.
        for (s, seg) in segs.iter().enumerate() {
            let n = seg.tokens.len();
            if seg.positions.len() != n {
                return Err(Error::InvalidArgument(format!(
                    "segment {s}: {n} tokens but {} positions",
                    seg.positions.len()
                )));
            }
            if let Some(&t) = seg.tokens.iter().find(|&&t| t as usize >= c.vocab) {
                return Err(Error::InvalidArgument(format!(
                    "segment {s}: token {t} outside the vocabulary ({})",
                    c.vocab
                )));
            }
            if let Mask::Tree(m) = seg.mask {
                if m.len() != n * n {
                    return Err(Error::InvalidArgument(format!(
                        "segment {s}: tree mask has {} entries, expected {n} x {n}",
                        m.len()
                    )));
                }
                if (0..n).any(|i| m[i * n + i] == 0) {
                    return Err(Error::InvalidArgument(format!(
                        "segment {s}: tree mask must let every token see itself"
                    )));
                }
            }
            if seg.kv.len() + n > seg.kv.capacity() {
                return Err(Error::InvalidArgument(format!(
                    "segment {s}: KV cache holds {} rows, {} used + {n} new exceed it",
                    seg.kv.capacity(),
                    seg.kv.len()
                )));
            }
            if seg.kv.n_kv_heads != nkv || seg.kv.head_dim != hd {
                return Err(Error::InvalidArgument(format!(
                    "segment {s}: KV cache of another model"
                )));
            }
        }
        if let Some(&l) = capture.layers.iter().find(|&&l| l >= c.n_layers) {
            return Err(Error::InvalidArgument(format!(
                "capture layer {l} >= {} layers",
                c.n_layers
            )));
        }
        let guard = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let pool: &Pool = &guard;
        let total: usize = segs.iter().map(|s| s.tokens.len()).sum();
        let mut out = Output::default();
        if total == 0 {
            out.logits_rows = vec![0; segs.len()];
            return Ok(out);
        }
        // Row offsets of each segment and where its new KV rows start.
        let mut row0 = Vec::with_capacity(segs.len());
        let mut kv0 = Vec::with_capacity(segs.len());
        let mut r = 0;
        for seg in segs.iter_mut() {
            row0.push(r);
            r += seg.tokens.len();
            kv0.push(seg.kv.grow(seg.tokens.len())?);
        }

        let mut x = vec![0f32; total * h];
        for (i, &t) in segs.iter().flat_map(|s| s.tokens.iter()).enumerate() {
            x[i * h..(i + 1) * h]
                .copy_from_slice(&self.embed[t as usize * h..(t as usize + 1) * h]);
        }
        // RoPE tables per row.
        let half = hd / 2;
        let mut cos = vec![0f32; total * half];
        let mut sin = vec![0f32; total * half];
        for (i, &p) in segs.iter().flat_map(|s| s.positions.iter()).enumerate() {
            for (j, f) in self.inv_freq.iter().enumerate() {
                let a = ((p as f32) * (*f as f32)) as f64;
                cos[i * half + j] = a.cos() as f32;
                sin[i * half + j] = a.sin() as f32;
            }
        }
        if !capture.layers.is_empty() {
            out.features = vec![0f32; total * capture.layers.len() * h];
        }
        let mut xn = vec![0f32; total * h];
        let mut qkv = vec![0f32; total * (qd + 2 * kvd)];
        let mut attn = vec![0f32; total * qd];
        let mut tmp = vec![0f32; total * h];
        let mut gu = vec![0f32; total * 2 * c.ffn];
        let mut act = vec![0f32; total * c.ffn];

        for (li, layer) in self.layers.iter().enumerate() {
            rms_norm(&x, &layer.attn_norm, c.rms_eps, &mut xn);
            matmul(pool, &layer.wqkv, qd + 2 * kvd, h, &xn, total, &mut qkv);
            // RoPE on q and k, then append k and v to the caches.
            for row in 0..total {
                let base = row * (qd + 2 * kvd);
                let (cs, sn) = (
                    &cos[row * half..(row + 1) * half],
                    &sin[row * half..(row + 1) * half],
                );
                for head in 0..nh + nkv {
                    let v = &mut qkv[base + head * hd..base + (head + 1) * hd];
                    for j in 0..half {
                        let (a, b) = (v[j], v[j + half]);
                        v[j] = a * cs[j] - b * sn[j];
                        v[j + half] = b * cs[j] + a * sn[j];
                    }
                }
            }
            for (s, seg) in segs.iter_mut().enumerate() {
                let kv = &mut *seg.kv;
                for i in 0..seg.tokens.len() {
                    let src = (row0[s] + i) * (qd + 2 * kvd);
                    for kvh in 0..nkv {
                        let dst = kv.head_offset(li, kvh) + (kv0[s] + i) * hd;
                        let k_src = src + qd + kvh * hd;
                        let v_src = src + qd + kvd + kvh * hd;
                        kv.k[dst..dst + hd].copy_from_slice(&qkv[k_src..k_src + hd]);
                        kv.v[dst..dst + hd].copy_from_slice(&qkv[v_src..v_src + hd]);
                    }
                }
            }
            self.attention(pool, segs, li, &row0, &kv0, &qkv, &mut attn);
            matmul(pool, &layer.wo, h, qd, &attn, total, &mut tmp);
            for (a, b) in x.iter_mut().zip(&tmp) {
                *a += b;
            }
            rms_norm(&x, &layer.ffn_norm, c.rms_eps, &mut xn);
            matmul(pool, &layer.w_gate_up, 2 * c.ffn, h, &xn, total, &mut gu);
            for row in 0..total {
                let g = &gu[row * 2 * c.ffn..(row + 1) * 2 * c.ffn];
                let a = &mut act[row * c.ffn..(row + 1) * c.ffn];
                a.copy_from_slice(&g[..c.ffn]);
                swiglu(a, &g[c.ffn..]);
            }
            matmul(pool, &layer.w_down, h, c.ffn, &act, total, &mut tmp);
            for (a, b) in x.iter_mut().zip(&tmp) {
                *a += b;
            }
            for (slot, _) in capture.layers.iter().enumerate().filter(|(_, l)| **l == li) {
                let w = capture.layers.len() * h;
                for row in 0..total {
                    out.features[row * w + slot * h..row * w + (slot + 1) * h]
                        .copy_from_slice(&x[row * h..(row + 1) * h]);
                }
            }
        }
        rms_norm(&x, &self.norm, c.rms_eps, &mut xn);
        // Gather the rows that get logits.
        let mut rows = Vec::new();
        for (s, seg) in segs.iter().enumerate() {
            let n = seg.tokens.len();
            let picked: Vec<usize> = match seg.logits {
                Logits::All => (0..n).map(|i| row0[s] + i).collect(),
                Logits::Last if n > 0 => vec![row0[s] + n - 1],
                _ => Vec::new(),
            };
            out.logits_rows.push(picked.len());
            rows.extend(picked);
        }
        if !rows.is_empty() {
            let mut sel = vec![0f32; rows.len() * h];
            for (i, &r) in rows.iter().enumerate() {
                sel[i * h..(i + 1) * h].copy_from_slice(&xn[r * h..(r + 1) * h]);
            }
            out.logits = vec![0f32; rows.len() * c.vocab];
            matmul(
                pool,
                &self.lm_head,
                c.vocab,
                h,
                &sel,
                rows.len(),
                &mut out.logits,
            );
        }
        if capture.final_hidden {
            out.final_hidden = xn;
        }
        Ok(out)
    }

    /// Causal/tree attention of every new row over its own sequence's cache. Work items are (segment,
    /// KV head, block of up to `QUERY_BLOCK` new rows): the block's queries of every head in the GQA
    /// group form one small matrix, so scores are one matmul against that head's contiguous keys and
    /// the output one pass over its values.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        pool: &Pool,
        segs: &[Segment<'_>],
        li: usize,
        row0: &[usize],
        kv0: &[usize],
        qkv: &[f32],
        attn: &mut [f32],
    ) {
        const QUERY_BLOCK: usize = 8;
        let c = &self.cfg;
        let (hd, nh, nkv) = (c.head_dim, c.n_heads, c.n_kv_heads);
        let (qd, kvd) = (nh * hd, nkv * hd);
        let group = nh / nkv;
        let scale = 1.0 / (hd as f32).sqrt();
        // Work items (segment, KV head, first row, rows). A segment of up to 2 x QUERY_BLOCK rows is
        // cut into two equal blocks: with 3 KV heads and 2 threads, one block per head left one
        // thread a third of the attention to itself.
        let mut items = Vec::new();
        for (s, seg) in segs.iter().enumerate() {
            let n = seg.tokens.len();
            let block = if n <= 2 * QUERY_BLOCK {
                n.div_ceil(2).max(1)
            } else {
                QUERY_BLOCK
            };
            for kvh in 0..nkv {
                for i0 in (0..n).step_by(block) {
                    items.push((s, kvh, i0, block.min(n - i0)));
                }
            }
        }
        let ap = SendPtr(attn.as_mut_ptr());
        let items = &items;
        pool.for_each_chunk(items.len(), &|item| {
            let (mut q, mut scores, mut acc) = (Vec::new(), Vec::new(), Vec::new());
            {
                let (s, kvh, i0, rows) = items[item];
                let seg = &segs[s];
                let kv = &*seg.kv;
                let n = seg.tokens.len();
                let m = rows * group;
                // New rows only see new rows at or before themselves (tree ancestors come first in
                // topological order), so keys past the block's last row are never needed.
                let len = kv0[s] + i0 + rows;
                q.clear();
                for r in 0..rows {
                    let base = (row0[s] + i0 + r) * (qd + 2 * kvd);
                    for g in 0..group {
                        let head = kvh * group + g;
                        q.extend(
                            qkv[base + head * hd..base + (head + 1) * hd]
                                .iter()
                                .map(|x| x * scale),
                        );
                    }
                }
                let off = kv.head_offset(li, kvh);
                scores.clear();
                scores.resize(m * len, 0.0);
                kernels::matmul_local(&kv.k[off..off + len * hd], len, hd, &q, m, &mut scores);
                for r in 0..rows {
                    let i = i0 + r;
                    for g in 0..group {
                        let row = &mut scores[(r * group + g) * len..(r * group + g + 1) * len];
                        for (jj, sc) in row[kv0[s]..].iter_mut().enumerate() {
                            let visible = match seg.mask {
                                Mask::Causal => jj <= i,
                                Mask::Tree(mask) => mask[i * n + jj] != 0,
                            };
                            if !visible {
                                *sc = f32::NEG_INFINITY;
                            }
                        }
                        // Sums keyed by key position: a tree row and the one-token decode of the same
                        // path (cached keys at positions = indices) give bit-identical weights.
                        kernels::softmax_in_place_by_position(
                            row,
                            kv0[s],
                            &seg.positions[..len - kv0[s]],
                        );
                    }
                }
                acc.clear();
                acc.resize(m * hd, 0.0);
                kernels::weighted_rows(&scores, m, len, &kv.v[off..off + len * hd], hd, &mut acc);
                for r in 0..rows {
                    let row = row0[s] + i0 + r;
                    for g in 0..group {
                        let head = kvh * group + g;
                        for d in 0..hd {
                            // SAFETY: each (row, head) belongs to exactly one work item, inside attn.
                            unsafe {
                                *ap.get().add(row * qd + head * hd + d) =
                                    acc[(r * group + g) * hd + d]
                            };
                        }
                    }
                }
            }
        });
    }
}
