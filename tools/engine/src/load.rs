//! Loading a Llama GGUF into the engine's [`LoadedModel`] form: `llama.*` metadata to [`LlamaConfig`],
//! GGUF tensor names to Hugging Face names, every tensor dequantized to f32, and the q/k projection rows
//! un-permuted from llama.cpp's interleaved RoPE order back to Hugging Face's rotate-half order.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::weights::{LlamaConfig, LoadedModel, Tensor};

/// Reads a GGUF file and loads its Llama model. The parsed file is returned as well, since it also holds
/// the tokenizer and chat template.
pub fn load_gguf(path: &Path) -> Result<(LoadedModel, GgufFile)> {
    let file = GgufFile::open(path)?;
    let model = model_from_gguf(&file).map_err(|e| match e {
        Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
        Error::Unsupported(m) => Error::Unsupported(format!("{}: {m}", path.display())),
        other => other,
    })?;
    Ok((model, file))
}

/// Builds the loaded model (config and HF-named f32 tensors) from a parsed GGUF file.
pub fn model_from_gguf(file: &GgufFile) -> Result<LoadedModel> {
    let config = config_from_gguf(file)?;
    let expected = expected_shapes(&config);
    let mut tensors = BTreeMap::new();
    for info in &file.tensors {
        let hf = hf_name(&info.name).ok_or_else(|| {
            Error::Unsupported(format!("GGUF tensor {} has no Llama equivalent", info.name))
        })?;
        let want = expected.get(&hf).ok_or_else(|| {
            Error::Format(format!(
                "GGUF tensor {} ({hf}) does not belong to a {}-layer model",
                info.name, config.n_layers
            ))
        })?;
        let (shape, mut data) = file.tensor_f32(&info.name)?;
        if &shape != want {
            return Err(Error::Format(format!(
                "GGUF tensor {} ({hf}) has shape {shape:?}, expected {want:?} from the metadata",
                info.name
            )));
        }
        // llama.cpp's converter interleaved the RoPE halves of q and k; undo it per head.
        if info.name.ends_with(".attn_q.weight") {
            data = unpermute_rows(&data, config.n_heads, config.hidden)?;
        } else if info.name.ends_with(".attn_k.weight") {
            data = unpermute_rows(&data, config.n_kv_heads, config.hidden)?;
        }
        if tensors.insert(hf.clone(), Tensor { shape, data }).is_some() {
            return Err(Error::Format(format!(
                "GGUF tensor {} appears twice",
                info.name
            )));
        }
    }
    if let Some(missing) = expected.keys().find(|k| !tensors.contains_key(*k)) {
        return Err(Error::Format(format!("GGUF has no tensor for {missing}")));
    }
    Ok(LoadedModel { config, tensors })
}

/// Reads the `llama.*` hyper-parameters, checking that they describe a model the engine can run.
pub fn config_from_gguf(file: &GgufFile) -> Result<LlamaConfig> {
    let arch = file.meta_str("general.architecture")?;
    if arch != "llama" {
        return Err(Error::Unsupported(format!(
            "general.architecture is {arch:?}; only \"llama\" is supported"
        )));
    }
    let int = |key: &str| -> Result<usize> {
        let v = file.meta_u64(key)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| Error::Format(format!("GGUF metadata {key} = {v} is out of range")))
    };
    let n_layers = int("llama.block_count")?;
    let hidden = int("llama.embedding_length")?;
    let ffn = int("llama.feed_forward_length")?;
    let n_heads = int("llama.attention.head_count")?;
    // llama.cpp's defaults for optional keys: no GQA, head_dim = hidden / heads, theta 10000.
    let n_kv_heads = match file.meta("llama.attention.head_count_kv") {
        Some(_) => int("llama.attention.head_count_kv")?,
        None => n_heads,
    };
    let head_dim = match file.meta("llama.attention.key_length") {
        Some(_) => int("llama.attention.key_length")?,
        None if hidden.is_multiple_of(n_heads) => hidden / n_heads,
        None => {
            return Err(Error::Format(format!(
                "llama.embedding_length {hidden} is not a multiple of the {n_heads} heads"
            )));
        }
    };
    if file.meta("llama.rope.dimension_count").is_some() {
        let rot = int("llama.rope.dimension_count")?;
        if rot != head_dim {
            return Err(Error::Unsupported(format!(
                "llama.rope.dimension_count {rot} differs from the head dimension {head_dim} (partial RoPE)"
            )));
        }
    }
    if file.meta("llama.rope.scaling.type").is_some() {
        let kind = file.meta_str("llama.rope.scaling.type")?;
        if kind != "none" {
            return Err(Error::Unsupported(format!("RoPE scaling {kind:?}")));
        }
    }
    if !head_dim.is_multiple_of(2) || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(Error::Format(format!(
            "head_dim {head_dim} must be even and {n_heads} heads a multiple of {n_kv_heads} KV heads"
        )));
    }
    let rope_theta = match file.meta("llama.rope.freq_base") {
        Some(_) => file.meta_f64("llama.rope.freq_base")?,
        None => 10_000.0,
    };
    let rms_eps = file.meta_f64("llama.attention.layer_norm_rms_epsilon")?;
    if !(rope_theta.is_finite() && rope_theta > 0.0 && rms_eps.is_finite() && rms_eps >= 0.0) {
        return Err(Error::Format(format!(
            "RoPE base {rope_theta} or RMS epsilon {rms_eps} is out of range"
        )));
    }
    let max_ctx = int("llama.context_length")?;
    let embd = file.tensor_info("token_embd.weight")?;
    let vocab = match embd.dims.as_slice() {
        [cols, rows] if *cols == hidden as u64 => usize::try_from(*rows).ok(),
        _ => None,
    }
    .filter(|&v| v > 0)
    .ok_or_else(|| {
        Error::Format(format!(
            "token_embd.weight has ggml dims {:?}, expected [{hidden}, vocab]",
            embd.dims
        ))
    })?;
    if let Some(v) = file.meta("llama.vocab_size").and_then(|v| v.as_u64())
        && v != vocab as u64
    {
        return Err(Error::Format(format!(
            "llama.vocab_size {v} differs from the {vocab} rows of token_embd.weight"
        )));
    }
    let tie_embeddings = !file.tensors.iter().any(|t| t.name == "output.weight");
    Ok(LlamaConfig {
        n_layers,
        hidden,
        ffn,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab,
        rope_theta: rope_theta as f32,
        rms_eps: rms_eps as f32,
        max_ctx,
        tie_embeddings,
    })
}

/// The Hugging Face name of a GGUF Llama tensor, or `None` if it has none.
pub fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match part {
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// Every tensor a model with this config has, by HF name, with its shape (outermost first).
pub fn expected_shapes(c: &LlamaConfig) -> BTreeMap<String, Vec<usize>> {
    let q = c.n_heads * c.head_dim;
    let kv = c.n_kv_heads * c.head_dim;
    let mut m = BTreeMap::new();
    m.insert("model.embed_tokens.weight".into(), vec![c.vocab, c.hidden]);
    m.insert("model.norm.weight".into(), vec![c.hidden]);
    if !c.tie_embeddings {
        m.insert("lm_head.weight".into(), vec![c.vocab, c.hidden]);
    }
    for i in 0..c.n_layers {
        let p = format!("model.layers.{i}");
        let layer = [
            ("self_attn.q_proj.weight", vec![q, c.hidden]),
            ("self_attn.k_proj.weight", vec![kv, c.hidden]),
            ("self_attn.v_proj.weight", vec![kv, c.hidden]),
            ("self_attn.o_proj.weight", vec![c.hidden, q]),
            ("mlp.gate_proj.weight", vec![c.ffn, c.hidden]),
            ("mlp.up_proj.weight", vec![c.ffn, c.hidden]),
            ("mlp.down_proj.weight", vec![c.hidden, c.ffn]),
            ("input_layernorm.weight", vec![c.hidden]),
            ("post_attention_layernorm.weight", vec![c.hidden]),
        ];
        for (name, shape) in layer {
            m.insert(format!("{p}.{name}"), shape);
        }
    }
    m
}

/// Undoes llama.cpp's q/k row permutation for a `[n_head * head_dim, cols]` matrix: within each head,
/// GGUF row `2b + a` (pair `b`, element `a`) goes back to HF row `a * head_dim / 2 + b`. This is numpy's
/// `w.reshape(n_head, hd/2, 2, cols).swapaxes(1, 2).reshape(rows, cols)`.
pub fn unpermute_rows(w: &[f32], n_head: usize, cols: usize) -> Result<Vec<f32>> {
    let rows = w.len().checked_div(cols).unwrap_or(0);
    if n_head == 0 || cols == 0 || rows * cols != w.len() || !rows.is_multiple_of(2 * n_head) {
        return Err(Error::InvalidArgument(format!(
            "cannot un-permute {} values as {n_head} heads of even size by {cols} columns",
            w.len()
        )));
    }
    let half = rows / n_head / 2;
    let mut out = Vec::with_capacity(w.len());
    for h in 0..n_head {
        for a in 0..2 {
            for b in 0..half {
                let src = (h * 2 * half + 2 * b + a) * cols;
                out.extend_from_slice(w.get(src..src + cols).unwrap_or_default());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
