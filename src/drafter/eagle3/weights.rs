//! EAGLE-3 weights from a checkpoint with the EAGLE / SpecForge names (docs/eagle3-forward.md,
//! "Weights"), checked against the config. Every name may carry a leading `model.` (SGLang's internal
//! names). f16 and bf16 tensors are widened to f32 at load: all computation is f32, and f32 matmuls are
//! the ones that run without allocating.

use std::string::String;
use std::vec::Vec;

use super::Eagle3Config;
use crate::cpu::Matrix;
use crate::io::LoadError;
use crate::io::safetensors::SafeTensors;
use crate::load_err;

pub(crate) struct Weights {
    /// `[H, 3 H_t]`: target features to the incoming hidden of a committed entry.
    pub fc: Matrix,
    /// `midlayer.input_layernorm`: normalises the token embedding.
    pub input_norm: Vec<f32>,
    /// `midlayer.hidden_norm`: normalises the incoming hidden.
    pub hidden_norm: Vec<f32>,
    /// q, k, v stacked: `[(heads + 2 kv_heads) * head_dim, 2 H]`.
    pub wqkv: Matrix,
    pub wo: Matrix,
    pub post_norm: Vec<f32>,
    /// gate and up stacked: `[2 F, H]`.
    pub w_gate_up: Matrix,
    pub w_down: Matrix,
    pub norm: Vec<f32>,
    pub lm_head: Matrix,
    /// Draft id -> target id (`i + d2t[i]`).
    pub draft_to_target: Vec<u32>,
    /// The checkpoint's own `embed_tokens.weight` `[V, H]`, if it has one.
    pub embed: Option<Vec<f32>>,
}

impl Weights {
    /// Every matrix to bf16 (norms, maps and the optional embedding stay f32), packed for the
    /// broadcast kernel where the host runs it ([`Matrix::convert_to_bf16_packed`]).
    pub(crate) fn convert_to_bf16(&mut self) {
        use crate::drafter::weights::to_bf16_with_rows;
        let h = self.norm.len();
        to_bf16_with_rows(&mut self.fc, h);
        // The layer's attention reads the embedding and the fused features side by side: 2h wide.
        self.wqkv.convert_to_bf16_packed(2 * h);
        to_bf16_with_rows(&mut self.wo, h);
        self.w_gate_up.convert_to_bf16_packed(h);
        to_bf16_with_rows(&mut self.w_down, h);
        self.lm_head.convert_to_bf16_packed(h);
    }
}

/// The stored name of `name`: as is, or with the `model.` prefix.
fn stored(st: &SafeTensors, name: &str) -> Option<String> {
    if st.contains(name) {
        return Some(name.into());
    }
    let prefixed = std::format!("model.{name}");
    st.contains(&prefixed).then_some(prefixed)
}

/// A float tensor of an exact shape, as f32; errors name the tensor.
fn take(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
    let key = stored(st, name).ok_or_else(|| {
        load_err!("EAGLE-3 checkpoint: tensor {name} is missing (also looked for model.{name})")
    })?;
    let (got, data) = st.f32(&key)?;
    if got != shape {
        return Err(load_err!(
            "EAGLE-3 checkpoint: tensor {key} has shape {got:?}, expected {shape:?}"
        ));
    }
    Ok(data)
}

impl Weights {
    pub fn load(c: &Eagle3Config, st: &SafeTensors) -> Result<Self, LoadError> {
        let (h, d) = (c.hidden, c.head_dim);
        let (qd, kvd) = (c.heads * d, c.kv_heads * d);
        let attn = |s: &str| std::format!("midlayer.self_attn.{s}.weight");
        let mut wqkv = take(st, &attn("q_proj"), &[qd, 2 * h])?;
        wqkv.extend(take(st, &attn("k_proj"), &[kvd, 2 * h])?);
        wqkv.extend(take(st, &attn("v_proj"), &[kvd, 2 * h])?);
        let mut gate_up = take(st, "midlayer.mlp.gate_proj.weight", &[c.ffn, h])?;
        gate_up.extend(take(st, "midlayer.mlp.up_proj.weight", &[c.ffn, h])?);
        let embed = match stored(st, "embed_tokens.weight") {
            Some(_) => Some(take(st, "embed_tokens.weight", &[c.vocab, h])?),
            None => None,
        };
        let draft_to_target = draft_to_target(c, st)?;
        if let Some(key) = stored(st, "t2d") {
            crate::drafter::vocab_map::check_t2d(st, &key, &draft_to_target, c.vocab)?;
        }
        Ok(Weights {
            fc: Matrix::F32(take(st, "fc.weight", &[h, c.feature_width()])?),
            input_norm: take(st, "midlayer.input_layernorm.weight", &[h])?,
            hidden_norm: take(st, "midlayer.hidden_norm.weight", &[h])?,
            wqkv: Matrix::F32(wqkv),
            wo: Matrix::F32(take(st, &attn("o_proj"), &[h, qd])?),
            post_norm: take(st, "midlayer.post_attention_layernorm.weight", &[h])?,
            w_gate_up: Matrix::F32(gate_up),
            w_down: Matrix::F32(take(st, "midlayer.mlp.down_proj.weight", &[h, c.ffn])?),
            norm: take(st, "norm.weight", &[h])?,
            lm_head: Matrix::F32(take(st, "lm_head.weight", &[c.draft_vocab, h])?),
            draft_to_target,
            embed,
        })
    }
}

/// `d2t` as target ids, checked: in range and one-to-one (two draft ids with the same target would
/// make sibling tree nodes that finalize merges, so the tree would miss its budget). Absent means the
/// identity, allowed only when the draft vocabulary is the target's.
fn draft_to_target(c: &Eagle3Config, st: &SafeTensors) -> Result<Vec<u32>, LoadError> {
    let Some(key) = stored(st, "d2t") else {
        if c.draft_vocab != c.vocab {
            return Err(load_err!(
                "EAGLE-3 checkpoint: tensor d2t is missing; it is required when draft_vocab_size ({}) \
                 differs from vocab_size ({})",
                c.draft_vocab,
                c.vocab
            ));
        }
        return Ok((0..c.draft_vocab as u32).collect());
    };
    let (shape, d2t) = st.i64(&key)?;
    if shape != [c.draft_vocab] {
        return Err(load_err!(
            "EAGLE-3 checkpoint: tensor {key} has shape {shape:?}, expected [{}]",
            c.draft_vocab
        ));
    }
    crate::drafter::vocab_map::draft_to_target(&d2t, c.vocab, &key)
        .map_err(|e| load_err!("EAGLE-3 checkpoint: {e}"))
}
