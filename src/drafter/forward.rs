//! The block forward of docs/drafter-forward.md: input fusion, decoder layers with the layer-wise
//! shift, final norm, draft LM head, rank features and rank head; context forwards append to the cache,
//! seed forwards (block 2) only read it.

use std::vec::Vec;

use super::ops::fit;
use super::weights::{RANK_FEATURES, RANK_HIDDEN};
use super::{ContextCache, SpecBlockDrafter};
use crate::cpu::{Pool, matmul, rms_norm, softmax_in_place};
use crate::error::Error;

/// Outputs of one forward, `entries x slots` rows, entry-major.
#[derive(Clone, Debug, Default)]
pub struct BlockOutput {
    /// Entries (or seeds) in the batch.
    pub entries: usize,
    /// `rows x draft_vocab` draft logits.
    pub logits: Vec<f32>,
    /// `rows x rank_classes` rank-head logits.
    pub rank_logits: Vec<f32>,
    /// `rows x hidden` pre-norm hiddens (they condition the next block).
    pub hidden: Vec<f32>,
    /// `rows x hidden` normed hiddens (the LM head's input).
    pub normed: Vec<f32>,
}

/// Working buffers of a forward, reused across calls: after the first call with a given batch size
/// a forward allocates nothing. The outputs of the last forward are read from here.
#[derive(Default)]
pub struct Scratch {
    cond: Vec<f32>,
    proj: Vec<f32>,
    tok: Vec<f32>,
    fused_in: Vec<f32>,
    /// `rows x hidden` pre-norm hiddens of the last forward.
    pub hidden: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    xn: Vec<f32>,
    shifted: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    tmp: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
    scores: Vec<f32>,
    q: Vec<f32>,
    cache_scores: Vec<f32>,
    acc: Vec<f32>,
    /// Normed hiddens of the last forward's output rows (`hidden` wide each).
    pub normed: Vec<f32>,
    /// Draft logits of the output rows (`draft_vocab` wide each).
    pub logits: Vec<f32>,
    rank_in: Vec<f32>,
    /// Rank-head hidden activations (`RANK_HIDDEN` wide each) of the output rows.
    pub(crate) rank_hidden: Vec<f32>,
    /// Rank logits of the output rows (`rank_classes` wide each).
    pub rank_logits: Vec<f32>,
    top: Vec<f32>,
    /// The entry whose slots are the first output rows: 0 (every entry's outputs), or, after a session's
    /// context forward, the last entry (the only outputs it reads: block 1).
    pub first_output_entry: usize,
    /// The head adapter the forwards apply (a session's copy of its online adapter's live weights).
    pub(crate) adapter: Option<super::adapter::HeadAdapter>,
    /// Adapted normed hiddens (`n + B A n`), the LM head's input while an adapter is set.
    adapted: Vec<f32>,
    /// `A n` of one row.
    adapter_z: Vec<f32>,
}

impl Scratch {
    /// Buffers for forwards of up to `rows` rows over up to `keys` attention keys, allocated now.
    pub fn with_capacity(d: &SpecBlockDrafter, rows: usize, keys: usize) -> Self {
        let c = &d.cfg;
        let (h, qd, kvd) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        // The widest matmul input, for bf16 weights' rounded activations (see `reserve_bf16_activations`).
        let widest = (3 * c.target_hidden)
            .max(3 * h)
            .max(c.ffn)
            .max(qd)
            .max(h + super::weights::RANK_FEATURES)
            .max(super::weights::RANK_HIDDEN);
        crate::cpu::reserve_bf16_activations(rows * widest);
        let e = rows.div_ceil(c.slots);
        let v = |n: usize| Vec::with_capacity(n);
        Scratch {
            cond: v(e * h),
            proj: v(e * h),
            tok: v(e * h),
            fused_in: v(rows * 3 * h),
            hidden: v(rows * h),
            cos: v(rows * c.head_dim / 2),
            sin: v(rows * c.head_dim / 2),
            xn: v(rows * h),
            shifted: v(rows * 2 * h),
            qkv: v(rows * (qd + 2 * kvd)),
            attn: v(rows * qd),
            tmp: v(rows * h),
            gu: v(rows * 2 * c.ffn),
            act: v(rows * c.ffn),
            scores: v(c.slots * c.heads / c.kv_heads * (keys + c.slots)),
            q: v(c.slots * c.heads / c.kv_heads * c.head_dim),
            cache_scores: v(c.slots * c.heads / c.kv_heads * keys),
            acc: v(c.slots * c.heads / c.kv_heads * c.head_dim),
            normed: v(rows * h),
            logits: v(rows * c.draft_vocab),
            rank_in: v(rows * (h + RANK_FEATURES)),
            rank_hidden: v(rows * RANK_HIDDEN),
            rank_logits: v(rows * c.rank_classes),
            top: v(c.draft_vocab),
            first_output_entry: 0,
            adapter: None,
            adapted: Vec::new(),
            adapter_z: Vec::new(),
        }
    }

    fn output(&self, entries: usize) -> BlockOutput {
        BlockOutput {
            entries,
            logits: self.logits.clone(),
            rank_logits: self.rank_logits.clone(),
            hidden: self.hidden.clone(),
            normed: self.normed.clone(),
        }
    }
}

/// What conditions each entry and which keys its slots see.
enum Kind<'a> {
    /// Target features (`3 x target_hidden` per entry); entries are appended to the cache. With
    /// `last_only`, the heads run on the last entry's slots only.
    Context {
        features: &'a [f32],
        bases: &'a [u32],
        last_only: bool,
    },
    /// Drafter hiddens (`hidden` per seed); seed `i` sees origin-entry slots `0..=visibility[i]`.
    Seed {
        hidden: &'a [f32],
        visibility: &'a [u32],
    },
}

pub(crate) fn check_finite(what: &'static str, xs: &[f32], width: usize) -> Result<(), Error> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::NonFinite {
            what,
            row: i / width.max(1),
            col: i % width.max(1),
        }),
        None => Ok(()),
    }
}

impl SpecBlockDrafter {
    /// Context forward: appends one entry per (feature, token, base) to `cache` and returns every
    /// entry's K slots. The last entry's output is block 1. `embed` is the target's token embedding
    /// (`vocab x hidden`). On error the cache is unchanged.
    pub fn context_forward(
        &self,
        cache: &mut ContextCache,
        embed: &[f32],
        features: &[f32],
        tokens: &[u32],
        bases: &[u32],
    ) -> Result<BlockOutput, Error> {
        let mut scratch = Scratch::default();
        self.context_forward_into(cache, embed, features, tokens, bases, &mut scratch)?;
        Ok(scratch.output(tokens.len()))
    }

    /// [`context_forward`](Self::context_forward) into reusable buffers: the outputs are left in
    /// `scratch.logits`, `.rank_logits`, `.hidden` and `.normed`.
    pub fn context_forward_into(
        &self,
        cache: &mut ContextCache,
        embed: &[f32],
        features: &[f32],
        tokens: &[u32],
        bases: &[u32],
        scratch: &mut Scratch,
    ) -> Result<(), Error> {
        self.context_into(cache, embed, features, tokens, bases, scratch, false)
    }

    /// [`context_forward_into`](Self::context_forward_into) computing the final norm, draft head and
    /// rank head for the last entry only (`scratch.first_output_entry` says which): what a session
    /// reads. Cached keys and values and every pre-norm hidden are the same.
    pub fn context_forward_last_into(
        &self,
        cache: &mut ContextCache,
        embed: &[f32],
        features: &[f32],
        tokens: &[u32],
        bases: &[u32],
        scratch: &mut Scratch,
    ) -> Result<(), Error> {
        self.context_into(cache, embed, features, tokens, bases, scratch, true)
    }

    #[allow(clippy::too_many_arguments)] // the context forward's inputs plus the outputs switch
    fn context_into(
        &self,
        cache: &mut ContextCache,
        embed: &[f32],
        features: &[f32],
        tokens: &[u32],
        bases: &[u32],
        scratch: &mut Scratch,
        last_only: bool,
    ) -> Result<(), Error> {
        let c = &self.cfg;
        let e = tokens.len();
        if features.len() != e * 3 * c.target_hidden {
            return Err(Error::ShapeMismatch {
                what: "features (entries x 3 target_hidden)",
                expected: e * 3 * c.target_hidden,
                got: features.len(),
            });
        }
        if bases.len() != e {
            return Err(Error::ShapeMismatch {
                what: "bases (one per entry)",
                expected: e,
                got: bases.len(),
            });
        }
        if cache.entries() + e > cache.capacity {
            return Err(Error::Capacity {
                what: "drafter context entries",
                capacity: cache.capacity,
            });
        }
        check_finite("features", features, 3 * c.target_hidden)?;
        self.run(
            CacheMode::Append(cache),
            embed,
            tokens,
            Kind::Context {
                features,
                bases,
                last_only,
            },
            scratch,
        )
    }

    /// Seed forward (block 2 and later): one batch of seeds continuing from the last committed entry,
    /// each conditioned on a drafter hidden with a token and a visibility `s` (it sees that entry's
    /// slots `0..=s`). Positions are the last entry's. Nothing is appended.
    pub fn seed_forward(
        &self,
        cache: &ContextCache,
        embed: &[f32],
        hidden: &[f32],
        tokens: &[u32],
        visibility: &[u32],
    ) -> Result<BlockOutput, Error> {
        let mut scratch = Scratch::default();
        self.seed_forward_into(cache, embed, hidden, tokens, visibility, &mut scratch)?;
        Ok(scratch.output(tokens.len()))
    }

    /// [`seed_forward`](Self::seed_forward) into reusable buffers.
    pub fn seed_forward_into(
        &self,
        cache: &ContextCache,
        embed: &[f32],
        hidden: &[f32],
        tokens: &[u32],
        visibility: &[u32],
        scratch: &mut Scratch,
    ) -> Result<(), Error> {
        let c = &self.cfg;
        let e = tokens.len();
        if hidden.len() != e * c.hidden {
            return Err(Error::ShapeMismatch {
                what: "seed hiddens (seeds x hidden)",
                expected: e * c.hidden,
                got: hidden.len(),
            });
        }
        if visibility.len() != e {
            return Err(Error::ShapeMismatch {
                what: "seed visibilities",
                expected: e,
                got: visibility.len(),
            });
        }
        if visibility.iter().any(|&s| s as usize >= c.slots) {
            return Err(Error::InvalidArgument("seed visibility must be < slots"));
        }
        if cache.entries() == 0 {
            return Err(Error::InvalidState("seed forward needs a committed entry"));
        }
        check_finite("seed hiddens", hidden, c.hidden)?;
        self.run(
            CacheMode::Read(cache),
            embed,
            tokens,
            Kind::Seed { hidden, visibility },
            scratch,
        )
    }

    /// The shared forward: checks, then the input layer, the decoder layers and the heads.
    fn run(
        &self,
        mut cache: CacheMode<'_>,
        embed: &[f32],
        tokens: &[u32],
        kind: Kind<'_>,
        sc: &mut Scratch,
    ) -> Result<(), Error> {
        let c = &self.cfg;
        if embed.len() != c.vocab * c.hidden {
            return Err(Error::ShapeMismatch {
                what: "token embedding (vocab x hidden)",
                expected: c.vocab * c.hidden,
                got: embed.len(),
            });
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(Error::TokenOutOfRange {
                what: "drafter input",
                token: t as i64,
                vocab: c.vocab,
            });
        }
        let e = tokens.len();
        if e == 0 {
            for v in [
                &mut sc.logits,
                &mut sc.rank_logits,
                &mut sc.hidden,
                &mut sc.normed,
            ] {
                v.clear();
            }
            return Ok(());
        }
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        // Entries before this batch (context), and the base position of the origin entry (seeds).
        let (n0, origin_base) = match &cache {
            CacheMode::Append(cc) => (cc.entries(), 0),
            CacheMode::Read(cc) => (0, cc.last_base().unwrap_or(0)),
        };
        self.input_layer(&pool, embed, tokens, &kind, origin_base, sc);
        self.size_layer_buffers(e * c.slots, sc);
        for l in 0..self.w.layers.len() {
            self.decoder_layer(&pool, l, &mut cache, n0, &kind, e, sc);
        }
        self.heads(&pool, &kind, e, sc);
        if let (CacheMode::Append(cc), Kind::Context { bases, .. }) = (cache, &kind) {
            cc.bases.extend_from_slice(bases);
        }
        Ok(())
    }

    /// Input fusion (step 1): per row (entry x slot) `fuse([norm(condition), norm(token embedding), slot
    /// query])` into `sc.hidden`, and the RoPE tables of the rows (position = entry base + slot).
    fn input_layer(
        &self,
        pool: &Pool,
        embed: &[f32],
        tokens: &[u32],
        kind: &Kind<'_>,
        origin_base: u32,
        sc: &mut Scratch,
    ) {
        let (c, w) = (&self.cfg, &self.w);
        let (h, k_slots, e) = (c.hidden, c.slots, tokens.len());
        let rows = e * k_slots;
        let Scratch {
            cond,
            proj,
            tok,
            fused_in,
            hidden: x,
            cos,
            sin,
            ..
        } = sc;
        fit(cond, e * h, 0.0);
        match kind {
            Kind::Context { features, .. } => {
                fit(proj, e * h, 0.0);
                matmul(
                    pool,
                    &w.condition_proj,
                    h,
                    3 * c.target_hidden,
                    features,
                    e,
                    proj,
                );
                rms_norm(proj, &w.condition_norm, c.rms_eps, cond);
            }
            Kind::Seed { hidden, .. } => rms_norm(hidden, &w.condition_norm, c.rms_eps, cond),
        }
        fit(tok, e * h, 0.0);
        for (i, &t) in tokens.iter().enumerate() {
            let t = t as usize;
            rms_norm(
                &embed[t * h..(t + 1) * h],
                &w.token_norm,
                c.rms_eps,
                &mut tok[i * h..(i + 1) * h],
            );
        }
        fit(fused_in, rows * 3 * h, 0.0);
        for i in 0..e {
            for k in 0..k_slots {
                let r = &mut fused_in[(i * k_slots + k) * 3 * h..(i * k_slots + k + 1) * 3 * h];
                r[..h].copy_from_slice(&cond[i * h..(i + 1) * h]);
                r[h..2 * h].copy_from_slice(&tok[i * h..(i + 1) * h]);
                r[2 * h..].copy_from_slice(&w.queries_normed[k * h..(k + 1) * h]);
            }
        }
        fit(x, rows * h, 0.0);
        matmul(pool, &w.fuse, h, 3 * h, fused_in, rows, x);

        let half = c.head_dim / 2;
        fit(cos, rows * half, 0.0);
        fit(sin, rows * half, 0.0);
        for i in 0..e {
            let base = match kind {
                Kind::Context { bases, .. } => bases[i],
                Kind::Seed { .. } => origin_base,
            };
            for k in 0..k_slots {
                let p = (base + k as u32) as f32;
                for (j, &f) in self.inv_freq.iter().enumerate() {
                    let a = p * f;
                    cos[(i * k_slots + k) * half + j] = a.cos();
                    sin[(i * k_slots + k) * half + j] = a.sin();
                }
            }
        }
    }

    /// Sizes the decoder layers' buffers for `rows` rows, once per forward (every layer overwrites them).
    fn size_layer_buffers(&self, rows: usize, sc: &mut Scratch) {
        let c = &self.cfg;
        let (h, qd, kvd) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        fit(&mut sc.xn, rows * h, 0.0);
        fit(&mut sc.shifted, rows * 2 * h, 0.0);
        fit(&mut sc.qkv, rows * (qd + 2 * kvd), 0.0);
        fit(&mut sc.attn, rows * qd, 0.0);
        fit(&mut sc.tmp, rows * h, 0.0);
        fit(&mut sc.gu, rows * 2 * c.ffn, 0.0);
        fit(&mut sc.act, rows * c.ffn, 0.0);
    }

    /// Decoder layer `l` (step 2) over `sc.hidden` in place: the layer-wise shift (layers after the
    /// first), attention (appending this batch's keys and values to the cache for a context forward),
    /// MLP.
    #[allow(clippy::too_many_arguments)] // one layer of the forward: its position and state
    fn decoder_layer(
        &self,
        pool: &Pool,
        l: usize,
        cache: &mut CacheMode<'_>,
        n0: usize,
        kind: &Kind<'_>,
        e: usize,
        sc: &mut Scratch,
    ) {
        let (c, w) = (&self.cfg, &self.w);
        let layer = &w.layers[l];
        let (h, d, k_slots) = (c.hidden, c.head_dim, c.slots);
        let (qd, kvd) = (c.heads * d, c.kv_heads * d);
        let (rows, half) = (e * k_slots, d / 2);
        {
            let Scratch {
                hidden: x,
                xn,
                shifted,
                qkv,
                cos,
                sin,
                ..
            } = &mut *sc;
            if l > 0 {
                for i in 0..e {
                    for k in 0..k_slots {
                        let r = i * k_slots + k;
                        let prev = i * k_slots + k.saturating_sub(1);
                        shifted[r * 2 * h..r * 2 * h + h].copy_from_slice(&x[r * h..(r + 1) * h]);
                        shifted[r * 2 * h + h..(r + 1) * 2 * h]
                            .copy_from_slice(&x[prev * h..(prev + 1) * h]);
                    }
                }
                matmul(pool, &w.shift[l - 1], h, 2 * h, shifted, rows, x);
            }
            rms_norm(x, &layer.input_norm, c.rms_eps, xn);
            matmul(pool, &layer.wqkv, qd + 2 * kvd, h, xn, rows, qkv);
            for r in 0..rows {
                let base = r * (qd + 2 * kvd);
                let (cs, sn) = (
                    &cos[r * half..(r + 1) * half],
                    &sin[r * half..(r + 1) * half],
                );
                for head in 0..c.heads + c.kv_heads {
                    let v = &mut qkv[base + head * d..base + (head + 1) * d];
                    for j in 0..half {
                        let (a, b) = (v[j], v[j + half]);
                        v[j] = a * cs[j] - b * sn[j];
                        v[j + half] = b * cs[j] + a * sn[j];
                    }
                }
            }
            if let CacheMode::Append(cc) = cache {
                let cap_rows = cc.capacity * k_slots;
                for r in 0..rows {
                    let src = r * (qd + 2 * kvd) + qd;
                    for kvh in 0..c.kv_heads {
                        let dst = (kvh * cap_rows + n0 * k_slots + r) * d;
                        let (ks, vs) = (src + kvh * d, src + kvd + kvh * d);
                        cc.k[l][dst..dst + d].copy_from_slice(&qkv[ks..ks + d]);
                        cc.v[l][dst..dst + d].copy_from_slice(&qkv[vs..vs + d]);
                    }
                }
            }
        }
        self.attention(l, cache.cache(), n0, kind, e, sc);

        let Scratch {
            hidden: x,
            xn,
            attn,
            tmp,
            gu,
            act,
            ..
        } = sc;
        matmul(pool, &layer.wo, h, qd, attn, rows, tmp);
        for (a, b) in x.iter_mut().zip(tmp.iter()) {
            *a += b;
        }
        rms_norm(x, &layer.post_norm, c.rms_eps, xn);
        matmul(pool, &layer.w_gate_up, 2 * c.ffn, h, xn, rows, gu);
        for r in 0..rows {
            let g = &gu[r * 2 * c.ffn..(r + 1) * 2 * c.ffn];
            let a = &mut act[r * c.ffn..(r + 1) * c.ffn];
            a.copy_from_slice(&g[..c.ffn]);
            crate::cpu::swiglu(a, &g[c.ffn..]);
        }
        matmul(pool, &layer.w_down, h, c.ffn, act, rows, tmp);
        for (a, b) in x.iter_mut().zip(tmp.iter()) {
            *a += b;
        }
    }

    /// Attention of layer `l` from `sc.qkv` into `sc.attn`, per (entry, KV head): the entry's K slots
    /// times the GQA group's heads form one query block; its scores against the head's contiguous
    /// cached keys are one small matmul. Context entries see a cache prefix (their own slots included,
    /// causally); seeds see the prefix up to their visibility plus their own earlier slots, which are
    /// not cached.
    fn attention(
        &self,
        l: usize,
        cc: &ContextCache,
        n0: usize,
        kind: &Kind<'_>,
        e: usize,
        sc: &mut Scratch,
    ) {
        let c = &self.cfg;
        let (d, k_slots) = (c.head_dim, c.slots);
        let (qd, kvd) = (c.heads * d, c.kv_heads * d);
        let scale = 1.0 / (d as f32).sqrt();
        let group = c.heads / c.kv_heads;
        let Scratch {
            qkv,
            attn,
            scores,
            q,
            cache_scores,
            acc,
            ..
        } = sc;
        let cap_rows = cc.capacity * k_slots;
        let seeds = matches!(kind, Kind::Seed { .. });
        let m = k_slots * group;
        for i in 0..e {
            // Cached keys this entry's slots may see: the longest prefix any of its slots sees.
            let (prefix, own) = match kind {
                Kind::Context { .. } => ((n0 + i + 1) * k_slots, 0),
                Kind::Seed { visibility, .. } => (
                    (cc.entries() - 1) * k_slots + visibility[i] as usize + 1,
                    k_slots,
                ),
            };
            let width = prefix + own;
            for kvh in 0..c.kv_heads {
                fit(q, m * d, 0.0);
                for k in 0..k_slots {
                    let r = i * k_slots + k;
                    for g in 0..group {
                        let head = kvh * group + g;
                        let src = r * (qd + 2 * kvd) + head * d;
                        for (dst, &v) in q[(k * group + g) * d..(k * group + g + 1) * d]
                            .iter_mut()
                            .zip(&qkv[src..src + d])
                        {
                            *dst = v * scale;
                        }
                    }
                }
                let off = kvh * cap_rows * d;
                fit(cache_scores, m * prefix, 0.0);
                crate::cpu::matmul_local(
                    &cc.k[l][off..off + prefix * d],
                    prefix,
                    d,
                    q,
                    m,
                    cache_scores,
                );
                fit(scores, m * width, 0.0);
                for qi in 0..m {
                    let k = qi / group;
                    let row = &mut scores[qi * width..(qi + 1) * width];
                    row[..prefix].copy_from_slice(&cache_scores[qi * prefix..(qi + 1) * prefix]);
                    if !seeds {
                        // Own slots after k are in the cache but not yet visible.
                        let visible = (n0 + i) * k_slots + k + 1;
                        row[visible..prefix].fill(f32::NEG_INFINITY);
                    }
                    for j in 0..own {
                        row[prefix + j] = if j <= k {
                            let src = (i * k_slots + j) * (qd + 2 * kvd) + qd + kvh * d;
                            dot(&q[qi * d..(qi + 1) * d], &qkv[src..src + d])
                        } else {
                            f32::NEG_INFINITY
                        };
                    }
                    softmax_in_place(row);
                }
                fit(acc, m * d, 0.0);
                if prefix > 0 {
                    // Cached values: rows of `scores` are `width` apart; gather the prefix part.
                    fit(cache_scores, m * prefix, 0.0);
                    for qi in 0..m {
                        cache_scores[qi * prefix..(qi + 1) * prefix]
                            .copy_from_slice(&scores[qi * width..qi * width + prefix]);
                    }
                    crate::cpu::weighted_rows(
                        cache_scores,
                        m,
                        prefix,
                        &cc.v[l][off..off + prefix * d],
                        d,
                        acc,
                    );
                }
                for qi in 0..m {
                    for j in 0..own {
                        let p = scores[qi * width + prefix + j];
                        if p == 0.0 {
                            continue;
                        }
                        let src = (i * k_slots + j) * (qd + 2 * kvd) + qd + kvd + kvh * d;
                        for (a, &b) in acc[qi * d..(qi + 1) * d].iter_mut().zip(&qkv[src..src + d])
                        {
                            *a += p * b;
                        }
                    }
                }
                for k in 0..k_slots {
                    let r = i * k_slots + k;
                    for g in 0..group {
                        let head = kvh * group + g;
                        let qi = k * group + g;
                        attn[r * qd + head * d..r * qd + (head + 1) * d]
                            .copy_from_slice(&acc[qi * d..(qi + 1) * d]);
                    }
                }
            }
        }
    }

    /// The heads (steps 3 and 4): final norm and draft LM head, then the rank head on [normed, rank
    /// features]; for every row, or (a session's context forward) the last entry's slots only.
    fn heads(&self, pool: &Pool, kind: &Kind<'_>, e: usize, sc: &mut Scratch) {
        let (c, w) = (&self.cfg, &self.w);
        let (h, k_slots) = (c.hidden, c.slots);
        let Scratch {
            hidden: x,
            normed,
            logits,
            rank_in,
            rank_hidden: hidden1,
            rank_logits,
            top,
            first_output_entry,
            adapter,
            adapted,
            adapter_z,
            ..
        } = sc;
        let first = match kind {
            Kind::Context {
                last_only: true, ..
            } => e - 1,
            _ => 0,
        };
        *first_output_entry = first;
        let out_x = &x[first * k_slots * h..];
        let rows = (e - first) * k_slots;
        fit(normed, rows * h, 0.0);
        rms_norm(out_x, &w.norm, c.rms_eps, normed);
        // An online adapter changes the heads' input (n + B A n) and adds its biases; `normed` keeps n,
        // what the adapter learns from.
        let head_in: &[f32] = match adapter {
            Some(a) => {
                fit(adapted, rows * h, 0.0);
                adapted.copy_from_slice(&normed[..rows * h]);
                fit(adapter_z, a.shape.rank, 0.0);
                a.apply_normed(adapted, rows, adapter_z);
                adapted
            }
            None => normed,
        };
        fit(logits, rows * c.draft_vocab, 0.0);
        matmul(pool, &w.lm_head, c.draft_vocab, h, head_in, rows, logits);
        if let Some(a) = adapter {
            a.apply_logits(logits, rows);
        }

        let rin_w = h + RANK_FEATURES;
        fit(rank_in, rows * rin_w, 0.0);
        for r in 0..rows {
            let dst = &mut rank_in[r * rin_w..(r + 1) * rin_w];
            dst[..h].copy_from_slice(&head_in[r * h..(r + 1) * h]);
            rank_features(
                &logits[r * c.draft_vocab..(r + 1) * c.draft_vocab],
                c.rank_topk,
                top,
                &mut dst[h..],
            );
        }
        fit(hidden1, rows * RANK_HIDDEN, 0.0);
        matmul(pool, &w.rank1, RANK_HIDDEN, rin_w, rank_in, rows, hidden1);
        for v in hidden1.iter_mut() {
            *v /= 1.0 + (-*v).exp();
        }
        fit(rank_logits, rows * c.rank_classes, 0.0);
        matmul(
            pool,
            &w.rank2,
            c.rank_classes,
            RANK_HIDDEN,
            hidden1,
            rows,
            rank_logits,
        );
        if let Some(a) = adapter {
            a.apply_rank(hidden1, rank_logits, rows);
        }
    }
}

/// Which context cache a forward uses: a context forward appends its entries' keys and values; a
/// seed forward (block 2 and later) only reads the committed ones.
enum CacheMode<'c> {
    /// Context forward: this batch's entries are appended.
    Append(&'c mut ContextCache),
    /// Seed forward: read only.
    Read(&'c ContextCache),
}

impl CacheMode<'_> {
    fn cache(&self) -> &ContextCache {
        match self {
            CacheMode::Append(cc) => cc,
            CacheMode::Read(cc) => cc,
        }
    }
}

/// The 15 rank features of one row of draft logits (docs/drafter-forward.md §4), using the top `t`
/// logits; `scratch` is reused between calls.
pub(crate) fn rank_features(row: &[f32], t: usize, scratch: &mut Vec<f32>, out: &mut [f32]) {
    scratch.clear();
    scratch.extend_from_slice(row);
    let desc = |a: &f32, b: &f32| b.total_cmp(a);
    if t < scratch.len() {
        scratch.select_nth_unstable_by(t - 1, desc);
        scratch.truncate(t);
    }
    scratch.sort_unstable_by(desc);
    let z = &scratch[..];
    let max = z[0];
    let lse = max + z.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
    for i in 0..10 {
        out[i] = z[i] - lse;
    }
    out[10] = z[0] - z[1];
    out[11] = z[0] - z[2];
    out[12] = z[0] - z[4];
    out[13] = (z[0] - lse).exp();
    out[14] = -z
        .iter()
        .map(|&v| {
            let lp = v - lse;
            lp.exp() * lp
        })
        .sum::<f32>();
}

#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
