//! Drafter weights from a checkpoint with the authors' tensor names, checked against the config.

use std::string::String;
use std::vec::Vec;

use super::DrafterConfig;
use crate::cpu::Matrix;
use crate::io::LoadError;
use crate::io::safetensors::SafeTensors;
use crate::load_err;

/// Width of the rank head's hidden layer (fixed by the authors' architecture). The one definition
/// (re-exported by [`super::ops`] for the GPU drafter; `write_random_drafter` uses it too).
pub(crate) const RANK_HIDDEN: usize = 256;
/// Rank features appended to the normed hidden (docs/drafter-forward.md §4). The one definition;
/// public as `drafter::ops::RANK_FEATURES` (and `cuda::drafter::ops::RANK_FEATURES`).
pub const RANK_FEATURES: usize = 15;

pub(crate) struct Layer {
    pub input_norm: Vec<f32>,
    /// q, k, v stacked: `[(heads + 2 kv_heads) * head_dim, hidden]`.
    pub wqkv: Matrix,
    pub wo: Matrix,
    pub post_norm: Vec<f32>,
    /// gate and up stacked: `[2 ffn, hidden]`.
    pub w_gate_up: Matrix,
    pub w_down: Matrix,
}

pub(crate) struct Weights {
    pub condition_proj: Matrix,
    pub condition_norm: Vec<f32>,
    pub token_norm: Vec<f32>,
    /// `RMSNorm_q(P[k])` for every slot, precomputed: `[slots, hidden]`.
    pub queries_normed: Vec<f32>,
    pub fuse: Matrix,
    pub layers: Vec<Layer>,
    /// `shift_proj.{l}`: `[hidden, 2 hidden]`.
    pub shift: Vec<Matrix>,
    pub norm: Vec<f32>,
    pub lm_head: Matrix,
    pub rank1: Matrix,
    pub rank2: Matrix,
    pub draft_to_target: Vec<u32>,
}

impl Weights {
    /// Every matrix to bf16 (norms, queries and maps stay f32 / integer), packed for the broadcast
    /// kernel where the host runs it ([`Matrix::convert_to_bf16_packed`]).
    pub(crate) fn convert_to_bf16(&mut self) {
        let h = self.norm.len();
        let to_h = |m: &mut Matrix| to_bf16_with_rows(m, h);
        to_h(&mut self.condition_proj);
        to_h(&mut self.fuse);
        self.lm_head.convert_to_bf16_packed(h);
        to_bf16_with_rows(&mut self.rank1, RANK_HIDDEN);
        self.rank2.convert_to_bf16_packed(RANK_HIDDEN);
        for m in &mut self.shift {
            to_h(m);
        }
        for l in &mut self.layers {
            l.wqkv.convert_to_bf16_packed(h);
            to_h(&mut l.wo);
            l.w_gate_up.convert_to_bf16_packed(h);
            to_h(&mut l.w_down);
        }
    }
}

/// [`Matrix::convert_to_bf16_packed`] for a matrix of `rows` output rows: its width is what remains.
pub(crate) fn to_bf16_with_rows(m: &mut Matrix, rows: usize) {
    let k = m.elements() / rows.max(1);
    m.convert_to_bf16_packed(k);
}

fn take(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
    let (got, data) = st.f32(name)?;
    if got != shape {
        return Err(load_err!(
            "tensor {name} has shape {got:?}, expected {shape:?}"
        ));
    }
    Ok(data)
}

impl Weights {
    pub fn load(c: &DrafterConfig, st: &SafeTensors) -> Result<Self, LoadError> {
        let (h, d) = (c.hidden, c.head_dim);
        let (qd, kvd) = (c.heads * d, c.kv_heads * d);
        let position_queries = take(st, "input_layer.position_queries.weight", &[c.slots, h])?;
        let query_norm = take(st, "input_layer.query_norm.weight", &[h])?;
        let mut queries_normed = std::vec![0f32; c.slots * h];
        crate::cpu::rms_norm(
            &position_queries,
            &query_norm,
            c.rms_eps,
            &mut queries_normed,
        );
        let mut layers = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let p = |s: &str| -> String { std::format!("layers.{l}.{s}.weight") };
            let mut wqkv = take(st, &p("self_attn.q_proj"), &[qd, h])?;
            wqkv.extend(take(st, &p("self_attn.k_proj"), &[kvd, h])?);
            wqkv.extend(take(st, &p("self_attn.v_proj"), &[kvd, h])?);
            let mut gate_up = take(st, &p("mlp.gate_proj"), &[c.ffn, h])?;
            gate_up.extend(take(st, &p("mlp.up_proj"), &[c.ffn, h])?);
            layers.push(Layer {
                input_norm: take(st, &p("input_layernorm"), &[h])?,
                wqkv: Matrix::F32(wqkv),
                wo: Matrix::F32(take(st, &p("self_attn.o_proj"), &[h, qd])?),
                post_norm: take(st, &p("post_attention_layernorm"), &[h])?,
                w_gate_up: Matrix::F32(gate_up),
                w_down: Matrix::F32(take(st, &p("mlp.down_proj"), &[h, c.ffn])?),
            });
        }
        let shift = (0..c.layers - 1)
            .map(|l| take(st, &std::format!("shift_proj.{l}.weight"), &[h, 2 * h]).map(Matrix::F32))
            .collect::<Result<Vec<_>, _>>()?;
        let (d2t_shape, d2t) = st.i64("d2t")?;
        if d2t_shape != [c.draft_vocab] {
            return Err(load_err!(
                "tensor d2t has shape {d2t_shape:?}, expected [{}]",
                c.draft_vocab
            ));
        }
        let draft_to_target = super::vocab_map::draft_to_target(&d2t, c.vocab, "d2t")?;
        if st.contains("t2d") {
            super::vocab_map::check_t2d(st, "t2d", &draft_to_target, c.vocab)?;
        }
        Ok(Weights {
            condition_proj: Matrix::F32(take(
                st,
                "input_layer.condition_proj.weight",
                &[h, 3 * c.target_hidden],
            )?),
            condition_norm: take(st, "input_layer.condition_norm.weight", &[h])?,
            token_norm: take(st, "input_layer.token_norm.weight", &[h])?,
            queries_normed,
            fuse: Matrix::F32(take(st, "input_layer.fuse.weight", &[h, 3 * h])?),
            layers,
            shift,
            norm: take(st, "norm.weight", &[h])?,
            lm_head: Matrix::F32(take(st, "lm_head.weight", &[c.draft_vocab, h])?),
            rank1: Matrix::F32(take(
                st,
                "rank_head.0.weight",
                &[RANK_HIDDEN, h + RANK_FEATURES],
            )?),
            rank2: Matrix::F32(take(
                st,
                "rank_head.2.weight",
                &[c.rank_classes, RANK_HIDDEN],
            )?),
            draft_to_target,
        })
    }
}
