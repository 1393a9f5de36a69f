//! The queued work of one planned forward: input fusion, decoder layers, final norm, LM head and rank
//! head, as cuBLAS GEMMs and `kernels/drafter.cu` launches on one stream.

use super::super::Stream;
use super::ops::{
    AddRmsNorm, Attention, CacheAppend, Elementwise, FuseInputs, HeadFeatures, RANK_FEATURES,
    RmsNorm, Rope, ShiftConcat, Swiglu,
};
use super::{GpuDrafter, RANK_HIDDEN};
use crate::error::Error;

impl GpuDrafter<'_> {
    /// Everything after the condition: input fusion, decoder layers, final norm, LM head, rank head.
    ///
    /// # Safety
    /// `cond` holds f32 `[groups, hidden]`, `tokens` i32 `[groups]`.
    pub(super) unsafe fn launch_body(
        &self,
        stream: &Stream,
        cond: u64,
        tokens: u64,
        append: bool,
    ) -> Result<(), Error> {
        let (gpu, d, s, w) = (self.gpu, &self.dims, &self.s, &self.w);
        let (h, hd, kk) = (d.hidden, d.head_dim, d.slots);
        let groups = self.plan_groups;
        let rows = groups * kk;
        let (qd, kvd, qkvd) = (d.heads * hd, d.kv_heads * hd, d.qkv());
        let max_rows = self.staging.len() / 3;
        let (positions, prefix, own) = (
            s.meta.ptr(),
            s.meta.ptr_at(max_rows),
            s.meta.ptr_at(2 * max_rows),
        );
        let cap_rows = self.cap.context_entries * kk;
        let seq_cache = kvd * cap_rows; // f32 elements per sequence per layer
        // SAFETY (whole body): every buffer is sized for max_rows >= rows at creation, the cache for
        // every sequence; `cond` and `tokens` are the caller's (see the public contracts).
        unsafe {
            self.k.clear_status(gpu, stream, s.status.ptr())?;
            self.k.fuse_inputs(
                gpu,
                stream,
                &FuseInputs {
                    cond,
                    cond_stride: h,
                    tokens,
                    embed: w.embed.ptr(),
                    vocab: d.vocab,
                    queries: w.queries.ptr(),
                    w_cond: w.cond_norm.ptr(),
                    w_tok: w.tok_norm.ptr(),
                    w_query: w.query_norm.ptr(),
                    eps: d.rms_eps,
                    groups,
                    slots: kk,
                    hidden: h,
                    out: s.fused.ptr(),
                    out_stride: 3 * h,
                    status: s.status.ptr(),
                },
            )?;
            self.gemm(
                stream,
                rows,
                h,
                3 * h,
                s.fused.ptr(),
                3 * h,
                &w.fuse,
                s.x.ptr(),
                h,
                0.0,
            )?;
            for (l, lw) in w.layers.iter().enumerate() {
                if l > 0 {
                    self.k.shift_concat(
                        gpu,
                        stream,
                        &ShiftConcat {
                            x: s.x.ptr(),
                            x_stride: h,
                            groups,
                            slots: kk,
                            hidden: h,
                            out: s.shift_in.ptr(),
                            out_stride: 2 * h,
                        },
                    )?;
                    self.gemm(
                        stream,
                        rows,
                        h,
                        2 * h,
                        s.shift_in.ptr(),
                        2 * h,
                        &w.shift[l - 1],
                        s.x.ptr(),
                        h,
                        0.0,
                    )?;
                }
                self.k.rmsnorm(
                    gpu,
                    stream,
                    &RmsNorm {
                        x: s.x.ptr(),
                        x_stride: h,
                        w: lw.in_norm.ptr(),
                        eps: d.rms_eps,
                        rows,
                        n: h,
                        out: s.xn.ptr(),
                        out_stride: h,
                        out_f32: 0,
                        out_f32_stride: 0,
                    },
                )?;
                self.gemm(
                    stream,
                    rows,
                    qkvd,
                    h,
                    s.xn.ptr(),
                    h,
                    &lw.wqkv,
                    s.qkv.ptr(),
                    qkvd,
                    0.0,
                )?;
                self.k.rope(
                    gpu,
                    stream,
                    &Rope {
                        q: s.qkv.ptr(),
                        q_stride: qkvd,
                        k: s.qkv.ptr_at(qd),
                        k_stride: qkvd,
                        positions,
                        inv_freq: w.inv_freq.ptr(),
                        rows,
                        n_heads: d.heads,
                        n_kv: d.kv_heads,
                        head_dim: hd,
                    },
                )?;
                for p in &self.plan {
                    let cache_off = p.seq * seq_cache;
                    let (ck, cv) = (
                        self.cache_k[l].ptr_at(cache_off),
                        self.cache_v[l].ptr_at(cache_off),
                    );
                    let row0 = p.first_row * qkvd;
                    if append {
                        self.k.cache_append(
                            gpu,
                            stream,
                            &CacheAppend {
                                k_src: s.qkv.ptr_at(row0 + qd),
                                v_src: s.qkv.ptr_at(row0 + qd + kvd),
                                src_stride: qkvd,
                                rows: p.rows,
                                n_kv: d.kv_heads,
                                head_dim: hd,
                                cache_k: ck,
                                cache_v: cv,
                                capacity: cap_rows,
                                row_offset: p.append_at,
                            },
                        )?;
                    }
                    self.k.attention_split(
                        gpu,
                        stream,
                        &Attention {
                            q: s.qkv.ptr_at(row0),
                            q_stride: qkvd,
                            cache_k: ck,
                            cache_v: cv,
                            capacity: cap_rows,
                            prefix_len: prefix + 4 * p.first_row as u64,
                            own_k: if append { 0 } else { s.qkv.ptr_at(row0 + qd) },
                            own_v: if append {
                                0
                            } else {
                                s.qkv.ptr_at(row0 + qd + kvd)
                            },
                            own_stride: qkvd,
                            own_len: if append {
                                0
                            } else {
                                own + 4 * p.first_row as u64
                            },
                            rows: p.rows,
                            n_heads: d.heads,
                            n_kv: d.kv_heads,
                            head_dim: hd,
                            scale: 1.0 / (hd as f32).sqrt(),
                            out: s.attn.ptr_at(p.first_row * qd),
                            out_stride: qd,
                        },
                        s.attn_ws.ptr(),
                        s.attn_ws.len(),
                    )?;
                }
                self.gemm(
                    stream,
                    rows,
                    h,
                    qd,
                    s.attn.ptr(),
                    qd,
                    &lw.wo,
                    s.tmp.ptr(),
                    h,
                    0.0,
                )?;
                self.k.add_rmsnorm(
                    gpu,
                    stream,
                    &AddRmsNorm {
                        x: s.x.ptr(),
                        delta: s.tmp.ptr(),
                        w: lw.post_norm.ptr(),
                        eps: d.rms_eps,
                        rows,
                        n: h,
                        out: s.xn.ptr(),
                        out_stride: h,
                        out_f32: 0,
                        out_f32_stride: 0,
                    },
                )?;
                self.gemm(
                    stream,
                    rows,
                    2 * d.ffn,
                    h,
                    s.xn.ptr(),
                    h,
                    &lw.w_gate_up,
                    s.gu.ptr(),
                    2 * d.ffn,
                    0.0,
                )?;
                self.k.swiglu(
                    gpu,
                    stream,
                    &Swiglu {
                        gate: s.gu.ptr(),
                        up: s.gu.ptr_at(d.ffn),
                        in_stride: 2 * d.ffn,
                        rows,
                        ffn: d.ffn,
                        out: s.act.ptr(),
                        out_stride: d.ffn,
                    },
                )?;
                if l + 1 < d.layers {
                    // Residual add for free: x += act · W_down^T (beta = 1); the shift follows.
                    self.gemm(
                        stream,
                        rows,
                        h,
                        d.ffn,
                        s.act.ptr(),
                        d.ffn,
                        &lw.w_down,
                        s.x.ptr(),
                        h,
                        1.0,
                    )?;
                } else {
                    // Last layer: x += down, then the final norm, written as bf16 straight into the
                    // rank head's input (columns 0..H, also the LM head's input) and as f32 `normed`.
                    self.gemm(
                        stream,
                        rows,
                        h,
                        d.ffn,
                        s.act.ptr(),
                        d.ffn,
                        &lw.w_down,
                        s.tmp.ptr(),
                        h,
                        0.0,
                    )?;
                    self.k.add_rmsnorm(
                        gpu,
                        stream,
                        &AddRmsNorm {
                            x: s.x.ptr(),
                            delta: s.tmp.ptr(),
                            w: w.norm.ptr(),
                            eps: d.rms_eps,
                            rows,
                            n: h,
                            out: s.rank_in.ptr(),
                            out_stride: self.rank_stride,
                            out_f32: s.normed.ptr(),
                            out_f32_stride: h,
                        },
                    )?;
                }
            }
            self.gemm(
                stream,
                rows,
                d.draft_vocab,
                h,
                s.rank_in.ptr(),
                self.rank_stride,
                &w.lm,
                s.logits.ptr(),
                d.draft_vocab,
                0.0,
            )?;
            let kc = self.cap.candidates;
            self.k.head_features(
                gpu,
                stream,
                &HeadFeatures {
                    logits: s.logits.ptr(),
                    logits_stride: d.draft_vocab,
                    rows,
                    vocab_d: d.draft_vocab,
                    topk_t: d.rank_topk,
                    kc,
                    normed: 0,
                    normed_stride: h,
                    hidden: h,
                    rank_in: s.rank_in.ptr(),
                    rank_stride: self.rank_stride,
                    d2t: w.d2t.ptr(),
                    cand_ids: if kc > 0 { s.cand_ids.ptr() } else { 0 },
                    cand_logprobs: if kc > 0 { s.cand_logprobs.ptr() } else { 0 },
                    cand_draft_ids: 0,
                    row_lse: 0,
                },
            )?;
            self.gemm(
                stream,
                rows,
                RANK_HIDDEN,
                h + RANK_FEATURES,
                s.rank_in.ptr(),
                self.rank_stride,
                &w.rank1,
                s.rank_h.ptr(),
                RANK_HIDDEN,
                0.0,
            )?;
            self.k.silu_bf16(
                gpu,
                stream,
                &Elementwise {
                    x: s.rank_h.ptr(),
                    x_stride: RANK_HIDDEN,
                    rows,
                    n: RANK_HIDDEN,
                    out: s.rank_hb.ptr(),
                    out_stride: RANK_HIDDEN,
                },
            )?;
            self.gemm(
                stream,
                rows,
                d.rank_classes,
                RANK_HIDDEN,
                s.rank_hb.ptr(),
                RANK_HIDDEN,
                &w.rank2,
                s.rank_logits.ptr(),
                d.rank_classes,
                0.0,
            )?;
        }
        Ok(())
    }
}
