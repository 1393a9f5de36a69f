//! The loaded form of a Llama model, whatever file it came from: hyper-parameters and f32 tensors by
//! Hugging Face name, in Hugging Face layout.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Llama hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Decoder layers.
    pub n_layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// SwiGLU inner size.
    pub ffn: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (GQA).
    pub n_kv_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Trained context length.
    pub max_ctx: usize,
    /// The LM head is the embedding matrix.
    pub tie_embeddings: bool,
}

/// A dense f32 tensor, row-major, shape outermost first (PyTorch order: a Linear weight is `[out, in]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

/// A Llama model as loaded: tensors by Hugging Face name (`model.embed_tokens.weight`,
/// `model.layers.{i}.self_attn.q_proj.weight`, ..., `model.norm.weight`, optionally `lm_head.weight`),
/// with q/k projection rows in Hugging Face's rotate-half RoPE order.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    /// Tensors by Hugging Face name.
    pub tensors: BTreeMap<String, Tensor>,
}

impl LoadedModel {
    /// Removes and returns a tensor, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| Error::Format(format!("tensor {name} is missing")))?;
        if t.shape != shape {
            return Err(Error::Format(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                t.shape
            )));
        }
        Ok(t.data)
    }
}
