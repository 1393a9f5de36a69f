//! The EAGLE-3 layer of docs/eagle3-forward.md, for both of its forwards:
//!
//! - context forward (a): committed entries `(f_t, x_{t+1})` at given positions, incoming hidden
//!   `fc · f`, appended to the committed cache; entry i sees the cache and the batch causally;
//! - drafting step (b): tree nodes with their parents' pre-norm hidden, appended to the draft region;
//!   node i sees every committed row, the draft rows on its parent chain, and itself.
//!
//! One formula serves both: `u = [RMSNorm_in(E[y]), RMSNorm_hid(g)]`, `r = g + o(Attn(u))`,
//! `h = r + MLP(RMSNorm_post r)`, `n = RMSNorm_f h`, `logits = lm_head n`.

use std::vec::Vec;

use super::attention::ATTN_ROWS;
use super::{Eagle3Cache, Eagle3Drafter};
use crate::cpu::{matmul, rms_norm, swiglu};
use crate::drafter::forward::check_finite;
use crate::drafter::ops::{CacheShape, cache_append};
use crate::error::Error;

/// Outputs of one forward, one row per entry or node.
#[derive(Clone, Debug, Default)]
pub struct Eagle3Output {
    /// Rows (entries or nodes).
    pub rows: usize,
    /// `rows x draft_vocab` draft logits.
    pub logits: Vec<f32>,
    /// `rows x hidden` pre-norm outputs h (what a child receives).
    pub hidden: Vec<f32>,
    /// `rows x hidden` final-normed outputs n (the LM head's input).
    pub normed: Vec<f32>,
    /// `rows x kv_heads x head_dim` keys written to the cache (post-RoPE).
    pub k: Vec<f32>,
    /// `rows x kv_heads x head_dim` values written to the cache.
    pub v: Vec<f32>,
}

/// Working buffers of the forwards, reused across calls: once sized (at creation, or by a first call)
/// a forward allocates nothing. The outputs of the last forward's final chunk are read from here.
#[derive(Default)]
pub struct Eagle3Scratch {
    /// Rows per chunk (0: no limit). Longer batches run as consecutive chunks, which is the same
    /// computation: later entries see earlier ones through the cache, nodes never see each other.
    max_rows: usize,
    /// Rows of the last chunk.
    rows: usize,
    g: Vec<f32>,
    u: Vec<f32>,
    pub(super) qkv: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    pub(super) attn: Vec<f32>,
    tmp: Vec<f32>,
    xn: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
    pub(super) q: Vec<f32>,
    pub(super) scores: Vec<f32>,
    pub(super) cache_scores: Vec<f32>,
    pub(super) acc: Vec<f32>,
    pub(super) chain: Vec<i32>,
    /// `rows x hidden` pre-norm outputs h of the last chunk.
    pub hidden: Vec<f32>,
    /// `rows x hidden` final-normed outputs of the last chunk.
    pub normed: Vec<f32>,
    /// `rows x draft_vocab` logits of the last chunk (a session's context forwards leave only the
    /// last entry's row here).
    pub logits: Vec<f32>,
    /// The head adapter the forwards apply (a session's copy of its online adapter's live weights).
    pub(crate) adapter: Option<crate::drafter::adapter::HeadAdapter>,
    /// Adapted normed rows (`n + B A n`), the LM head's input while an adapter is set.
    adapted: Vec<f32>,
    /// `A n` of one row.
    adapter_z: Vec<f32>,
}

pub(super) use crate::drafter::ops::fit;

/// What feeds each query and where its K/V row goes.
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
    /// Committed entries: target features (`3 H_t` each); rows go to the committed cache.
    Context { features: &'a [f32] },
    /// Tree nodes: parent hidden (`H` each) and parent draft row; rows go to the draft region.
    Draft {
        hidden: &'a [f32],
        parent_rows: &'a [i32],
    },
}

impl Input<'_> {
    fn rows(&self, a: usize, b: usize, fw: usize, h: usize) -> Self {
        match *self {
            Input::Context { features } => Input::Context {
                features: &features[a * fw..b * fw],
            },
            Input::Draft {
                hidden,
                parent_rows,
            } => Input::Draft {
                hidden: &hidden[a * h..b * h],
                parent_rows: &parent_rows[a..b],
            },
        }
    }
}

impl Eagle3Scratch {
    /// Buffers for chunks of up to `rows` rows over up to `keys` committed keys and parent chains of
    /// up to `max_chain` draft rows, allocated now.
    pub fn with_capacity(d: &Eagle3Drafter, rows: usize, keys: usize, max_chain: usize) -> Self {
        Self::sized(d, rows, rows, keys, max_chain)
    }

    /// [`with_capacity`](Self::with_capacity) with room for `logit_rows` rows of logits only (a
    /// session's context forwards keep one row; V_d-wide rows dominate the scratch otherwise).
    pub(super) fn sized(
        d: &Eagle3Drafter,
        rows: usize,
        logit_rows: usize,
        keys: usize,
        max_chain: usize,
    ) -> Self {
        let c = &d.cfg;
        let (h, qd, kvd) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let rows = rows.max(1);
        // The widest matmul input, for bf16 weights' rounded activations (see `reserve_bf16_activations`).
        let widest = c.feature_width().max(2 * h).max(c.ffn).max(qd);
        crate::cpu::reserve_bf16_activations(rows * widest);
        let m = rows.min(ATTN_ROWS) * (c.heads / c.kv_heads);
        let v = |n: usize| Vec::with_capacity(n);
        Eagle3Scratch {
            max_rows: rows,
            rows: 0,
            g: v(rows * h),
            u: v(rows * 2 * h),
            qkv: v(rows * (qd + 2 * kvd)),
            cos: v(rows * c.head_dim / 2),
            sin: v(rows * c.head_dim / 2),
            attn: v(rows * qd),
            tmp: v(rows * h),
            xn: v(rows * h),
            gu: v(rows * 2 * c.ffn),
            act: v(rows * c.ffn),
            q: v(m * c.head_dim),
            scores: v(m * (keys + max_chain + 1)),
            cache_scores: v(m * keys),
            acc: v(m * c.head_dim),
            chain: Vec::with_capacity(rows.min(ATTN_ROWS) * (max_chain + 1)),
            hidden: v(rows * h),
            normed: v(rows * h),
            logits: v(logit_rows * c.draft_vocab),
            adapter: None,
            adapted: Vec::new(),
            adapter_z: Vec::new(),
        }
    }

    /// Rows of the last chunk (the last forward's final rows).
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn output(&self, d: &Eagle3Drafter) -> Eagle3Output {
        let c = &d.cfg;
        let (qd, kvd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let stride = qd + 2 * kvd;
        let part = |off: usize| -> Vec<f32> {
            (0..self.rows)
                .flat_map(|r| {
                    self.qkv[r * stride + off..r * stride + off + kvd]
                        .iter()
                        .copied()
                })
                .collect()
        };
        Eagle3Output {
            rows: self.rows,
            logits: self.logits.clone(),
            hidden: self.hidden.clone(),
            normed: self.normed.clone(),
            k: part(qd),
            v: part(qd + kvd),
        }
    }
}

impl Eagle3Drafter {
    /// Context forward: appends the entries `(features[i], tokens[i])` at `positions[i]` to the
    /// committed cache and returns every entry's outputs. `embed` is the target's token embedding
    /// (`vocab x hidden`; ignored with an own embedding). On error the cache is unchanged.
    pub fn context_forward(
        &self,
        cache: &mut Eagle3Cache,
        embed: &[f32],
        features: &[f32],
        tokens: &[u32],
        positions: &[u32],
    ) -> Result<Eagle3Output, Error> {
        let mut sc = Eagle3Scratch::with_capacity(self, tokens.len(), cache.capacity, 0);
        self.context_forward_into(cache, embed, features, tokens, positions, &mut sc)?;
        Ok(sc.output(self))
    }

    /// [`context_forward`](Self::context_forward) into reusable buffers: the outputs of the final
    /// chunk (its last row is the last entry's) are left in `scratch`.
    pub fn context_forward_into(
        &self,
        cache: &mut Eagle3Cache,
        embed: &[f32],
        features: &[f32],
        tokens: &[u32],
        positions: &[u32],
        scratch: &mut Eagle3Scratch,
    ) -> Result<(), Error> {
        self.context(cache, embed, features, tokens, positions, scratch, true)
    }

    /// The context forward; with `all_logits` false only the last entry's logits are computed (the
    /// only ones a session reads: they rank the root's children), and `scratch.logits` holds that row.
    #[allow(clippy::too_many_arguments)] // the forward's inputs plus the logits switch
    pub(super) fn context(
        &self,
        cache: &mut Eagle3Cache,
        embed: &[f32],
        features: &[f32],
        tokens: &[u32],
        positions: &[u32],
        scratch: &mut Eagle3Scratch,
        all_logits: bool,
    ) -> Result<(), Error> {
        let e = tokens.len();
        let fw = self.cfg.feature_width();
        if features.len() != e * fw {
            return Err(Error::ShapeMismatch {
                what: "features (entries x 3 target_hidden)",
                expected: e * fw,
                got: features.len(),
            });
        }
        if positions.len() != e {
            return Err(Error::ShapeMismatch {
                what: "positions (one per entry)",
                expected: e,
                got: positions.len(),
            });
        }
        if cache.entries + e > cache.capacity {
            return Err(Error::Capacity {
                what: "drafter context entries",
                capacity: cache.capacity,
            });
        }
        check_finite("features", features, fw)?;
        self.run(
            cache,
            embed,
            tokens,
            positions,
            Input::Context { features },
            scratch,
            all_logits,
        )
    }

    /// Drafting step: tree nodes with their parents' pre-norm `hidden` (`nodes x hidden`), `tokens`
    /// (target ids), `positions`, and `parent_rows` (the parent's draft row, -1 for a child of the
    /// root; rows written by earlier steps only). Appends one draft row per node, in order.
    pub fn draft_step(
        &self,
        cache: &mut Eagle3Cache,
        embed: &[f32],
        hidden: &[f32],
        tokens: &[u32],
        positions: &[u32],
        parent_rows: &[i32],
    ) -> Result<Eagle3Output, Error> {
        let mut sc =
            Eagle3Scratch::with_capacity(self, tokens.len(), cache.entries, cache.draft_rows());
        self.draft_step_into(
            cache,
            embed,
            hidden,
            tokens,
            positions,
            parent_rows,
            &mut sc,
        )?;
        Ok(sc.output(self))
    }

    /// [`draft_step`](Self::draft_step) into reusable buffers (outputs of the final chunk in
    /// `scratch`).
    #[allow(clippy::too_many_arguments)] // the step's inputs, as the contract lists them
    pub fn draft_step_into(
        &self,
        cache: &mut Eagle3Cache,
        embed: &[f32],
        hidden: &[f32],
        tokens: &[u32],
        positions: &[u32],
        parent_rows: &[i32],
        scratch: &mut Eagle3Scratch,
    ) -> Result<(), Error> {
        let n = tokens.len();
        let h = self.cfg.hidden;
        if hidden.len() != n * h {
            return Err(Error::ShapeMismatch {
                what: "node hiddens (nodes x hidden)",
                expected: n * h,
                got: hidden.len(),
            });
        }
        for (what, len) in [
            ("positions (one per node)", positions.len()),
            ("parent rows (one per node)", parent_rows.len()),
        ] {
            if len != n {
                return Err(Error::ShapeMismatch {
                    what,
                    expected: n,
                    got: len,
                });
            }
        }
        let before = cache.draft_rows();
        if parent_rows.iter().any(|&p| p < -1 || p >= before as i32) {
            return Err(Error::InvalidArgument(
                "parent rows must be -1 or a draft row written by an earlier step",
            ));
        }
        if before + n > cache.draft_capacity {
            return Err(Error::Capacity {
                what: "drafter draft rows",
                capacity: cache.draft_capacity,
            });
        }
        check_finite("node hiddens", hidden, h)?;
        self.run(
            cache,
            embed,
            tokens,
            positions,
            Input::Draft {
                hidden,
                parent_rows,
            },
            scratch,
            true,
        )
    }

    /// Checks the shared inputs, then runs the batch in chunks of the scratch's row capacity.
    #[allow(clippy::too_many_arguments)] // the forward's inputs plus the logits switch
    fn run(
        &self,
        cache: &mut Eagle3Cache,
        embed: &[f32],
        tokens: &[u32],
        positions: &[u32],
        input: Input<'_>,
        sc: &mut Eagle3Scratch,
        all_logits: bool,
    ) -> Result<(), Error> {
        let c = &self.cfg;
        let embed = self.embedding(embed);
        if embed.len() != c.vocab * c.hidden {
            return Err(Error::ShapeMismatch {
                what: "token embedding (vocab x hidden)",
                expected: c.vocab * c.hidden,
                got: embed.len(),
            });
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(Error::TokenOutOfRange {
                what: "EAGLE-3 drafter input",
                token: t as i64,
                vocab: c.vocab,
            });
        }
        if positions.iter().any(|&p| p > i32::MAX as u32) {
            return Err(Error::InvalidArgument("positions must be below 2^31"));
        }
        let e = tokens.len();
        sc.rows = 0;
        if e == 0 {
            for v in [&mut sc.logits, &mut sc.hidden, &mut sc.normed] {
                v.clear();
            }
            return Ok(());
        }
        let chunk = if sc.max_rows == 0 { e } else { sc.max_rows };
        let mut a = 0;
        while a < e {
            let b = (a + chunk).min(e);
            let part = input.rows(a, b, c.feature_width(), c.hidden);
            // Logits from this chunk row on: all, the batch's last row only, or none.
            let logits_from = match (all_logits, b == e) {
                (true, _) => 0,
                (false, true) => b - a - 1,
                (false, false) => b - a,
            };
            let (t, p) = (&tokens[a..b], &positions[a..b]);
            self.chunk(cache, embed, t, p, part, logits_from, sc);
            a = b;
        }
        Ok(())
    }

    /// One chunk of a checked batch: the layer, then the rows are appended to their region. Logits
    /// are computed for rows `logits_from..`.
    #[allow(clippy::too_many_arguments)] // the chunk's inputs
    fn chunk(
        &self,
        cache: &mut Eagle3Cache,
        embed: &[f32],
        tokens: &[u32],
        positions: &[u32],
        input: Input<'_>,
        logits_from: usize,
        sc: &mut Eagle3Scratch,
    ) {
        let c = &self.cfg;
        let (h, d, ffn) = (c.hidden, c.head_dim, c.ffn);
        let (qd, kvd) = (c.heads * d, c.kv_heads * d);
        let stride = qd + 2 * kvd;
        let n = tokens.len();
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let w = &self.w;
        sc.rows = n;

        // Incoming hidden g: fc · f for entries, the parent's h for nodes.
        fit(&mut sc.g, n * h, 0.0);
        match input {
            Input::Context { features } => {
                matmul(&pool, &w.fc, h, c.feature_width(), features, n, &mut sc.g)
            }
            Input::Draft { hidden, .. } => sc.g.copy_from_slice(hidden),
        }
        // u = [RMSNorm_in(E[y]), RMSNorm_hid(g)]: embedding half first.
        fit(&mut sc.u, n * 2 * h, 0.0);
        for (r, &t) in tokens.iter().enumerate() {
            let t = t as usize;
            let (emb, hid) = sc.u[r * 2 * h..(r + 1) * 2 * h].split_at_mut(h);
            rms_norm(&embed[t * h..(t + 1) * h], &w.input_norm, c.rms_eps, emb);
            rms_norm(&sc.g[r * h..(r + 1) * h], &w.hidden_norm, c.rms_eps, hid);
        }
        fit(&mut sc.qkv, n * stride, 0.0);
        matmul(&pool, &w.wqkv, stride, 2 * h, &sc.u, n, &mut sc.qkv);
        // RoPE (rotate-half, angle = f32(pos) * inv_freq) on the q heads and the k heads, which are
        // contiguous in each row; one cos/sin table per row serves all its heads.
        let half = d / 2;
        fit(&mut sc.cos, n * half, 0.0);
        fit(&mut sc.sin, n * half, 0.0);
        for (r, &p) in positions.iter().enumerate() {
            for (j, &f) in self.inv_freq.iter().enumerate() {
                let (s, co) = (p as f32 * f).sin_cos();
                sc.cos[r * half + j] = co;
                sc.sin[r * half + j] = s;
            }
        }
        for r in 0..n {
            let (cs, sn) = (
                &sc.cos[r * half..(r + 1) * half],
                &sc.sin[r * half..(r + 1) * half],
            );
            for head in 0..c.heads + c.kv_heads {
                let v = &mut sc.qkv[r * stride + head * d..r * stride + (head + 1) * d];
                let (lo, hi) = v.split_at_mut(half);
                for j in 0..half {
                    let (a, b) = (lo[j], hi[j]);
                    lo[j] = a * cs[j] - b * sn[j];
                    hi[j] = b * cs[j] + a * sn[j];
                }
            }
        }

        // Write this chunk's K/V rows first: entries then see themselves through the cache.
        let (row0, cap) = match input {
            Input::Context { .. } => (cache.entries, cache.capacity),
            Input::Draft { .. } => (cache.draft_rows(), cache.draft_capacity),
        };
        let shape = CacheShape {
            n_kv: c.kv_heads,
            head_dim: d,
            capacity: cap,
        };
        let (dk, dv) = match input {
            Input::Context { .. } => (&mut cache.k, &mut cache.v),
            Input::Draft { .. } => (&mut cache.dk, &mut cache.dv),
        };
        cache_append(&sc.qkv[qd..], stride, n, shape, dk, row0);
        cache_append(&sc.qkv[qd + kvd..], stride, n, shape, dv, row0);

        fit(&mut sc.attn, n * qd, 0.0);
        let mut a0 = 0;
        while a0 < n {
            let a1 = (a0 + ATTN_ROWS).min(n);
            self.attend(cache, input, row0, a0, a1, sc);
            a0 = a1;
        }

        // r = g + o(attn); h = r + down(SiLU(gate) ⊙ up)(RMSNorm_post r).
        fit(&mut sc.tmp, n * h, 0.0);
        matmul(&pool, &w.wo, h, qd, &sc.attn, n, &mut sc.tmp);
        fit(&mut sc.hidden, n * h, 0.0);
        for ((x, &g), &t) in sc.hidden.iter_mut().zip(&sc.g).zip(&sc.tmp) {
            *x = g + t;
        }
        fit(&mut sc.xn, n * h, 0.0);
        rms_norm(&sc.hidden, &w.post_norm, c.rms_eps, &mut sc.xn);
        fit(&mut sc.gu, n * 2 * ffn, 0.0);
        matmul(&pool, &w.w_gate_up, 2 * ffn, h, &sc.xn, n, &mut sc.gu);
        fit(&mut sc.act, n * ffn, 0.0);
        for r in 0..n {
            let gu = &sc.gu[r * 2 * ffn..(r + 1) * 2 * ffn];
            let act = &mut sc.act[r * ffn..(r + 1) * ffn];
            act.copy_from_slice(&gu[..ffn]);
            swiglu(act, &gu[ffn..]);
        }
        matmul(&pool, &w.w_down, h, ffn, &sc.act, n, &mut sc.tmp);
        for (x, &t) in sc.hidden.iter_mut().zip(&sc.tmp) {
            *x += t;
        }
        fit(&mut sc.normed, n * h, 0.0);
        rms_norm(&sc.hidden, &w.norm, c.rms_eps, &mut sc.normed);
        let lr = n - logits_from;
        fit(&mut sc.logits, lr * c.draft_vocab, 0.0);
        if lr > 0 {
            // An online adapter changes the LM head's input (n + B A n) and adds its bias; `normed`
            // keeps n, what the adapter learns from.
            let head_in: &[f32] = match &sc.adapter {
                Some(a) => {
                    fit(&mut sc.adapted, lr * h, 0.0);
                    sc.adapted
                        .copy_from_slice(&sc.normed[logits_from * h..n * h]);
                    fit(&mut sc.adapter_z, a.shape.rank, 0.0);
                    a.apply_normed(&mut sc.adapted, lr, &mut sc.adapter_z);
                    &sc.adapted
                }
                None => &sc.normed[logits_from * h..],
            };
            matmul(
                &pool,
                &w.lm_head,
                c.draft_vocab,
                h,
                head_in,
                lr,
                &mut sc.logits,
            );
            if let Some(a) = &sc.adapter {
                a.apply_logits(&mut sc.logits, lr);
            }
        }

        match input {
            Input::Context { .. } => {
                cache.entries += n;
                cache.last_position = positions.last().copied();
            }
            Input::Draft { parent_rows, .. } => cache.draft_parent.extend_from_slice(parent_rows),
        }
    }
}
