//! Loading a Hugging Face Llama directory (`config.json` + `model.safetensors`) into [`LoadedModel`].

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::load::expected_shapes;
use crate::safetensors::SafeTensors;
use crate::weights::{LlamaConfig, LoadedModel};

/// Loads `dir/config.json` and `dir/model.safetensors`, checking every tensor's shape against the config.
pub fn load_hf_dir(dir: &Path) -> Result<LoadedModel> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| Error::Io(format!("cannot read {}: {e}", config_path.display())))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Format(format!("{}: not valid JSON: {e}", config_path.display())))?;
    let config = config_from_hf_json(&json).map_err(|e| match e {
        Error::Format(m) => Error::Format(format!("{}: {m}", config_path.display())),
        Error::Unsupported(m) => Error::Unsupported(format!("{}: {m}", config_path.display())),
        other => other,
    })?;
    let st_path = dir.join("model.safetensors");
    if !st_path.is_file() && dir.join("model.safetensors.index.json").is_file() {
        return Err(Error::Unsupported(format!(
            "{}: sharded checkpoints (model.safetensors.index.json) are not supported",
            dir.display()
        )));
    }
    let st = SafeTensors::open(&st_path)?;
    model_from_safetensors(config, &st).map_err(|e| match e {
        Error::Format(m) => Error::Format(format!("{}: {m}", st_path.display())),
        other => other,
    })
}

/// Takes the tensors the config calls for out of a safetensors file, as f32.
pub fn model_from_safetensors(config: LlamaConfig, st: &SafeTensors) -> Result<LoadedModel> {
    let expected = expected_shapes(&config);
    for name in st.entries.keys() {
        // A tied head may still be saved, and old checkpoints carry RoPE tables; neither is needed.
        let ignorable = (name == "lm_head.weight" && config.tie_embeddings)
            || name.ends_with(".self_attn.rotary_emb.inv_freq");
        if !expected.contains_key(name) && !ignorable {
            return Err(Error::Format(format!(
                "tensor {name} is not part of a {}-layer Llama",
                config.n_layers
            )));
        }
    }
    let mut tensors = BTreeMap::new();
    for (name, shape) in expected {
        let t = st.tensor_f32(&name)?;
        if t.shape != shape {
            return Err(Error::Format(format!(
                "tensor {name} has shape {:?}, expected {shape:?} from config.json",
                t.shape
            )));
        }
        tensors.insert(name, t);
    }
    Ok(LoadedModel { config, tensors })
}

/// Reads a Llama `config.json` (transformers 4 or 5 layout).
pub fn config_from_hf_json(json: &Value) -> Result<LlamaConfig> {
    let obj = json
        .as_object()
        .ok_or_else(|| Error::Format("config is not a JSON object".into()))?;
    let archs = obj.get("architectures").and_then(Value::as_array);
    if !archs.is_some_and(|a| a.iter().any(|v| v.as_str() == Some("LlamaForCausalLM"))) {
        return Err(Error::Unsupported(format!(
            "architectures is {}; LlamaForCausalLM is required",
            obj.get("architectures").unwrap_or(&Value::Null)
        )));
    }
    if let Some(act) = obj.get("hidden_act").and_then(Value::as_str)
        && act != "silu"
    {
        return Err(Error::Unsupported(format!(
            "hidden_act {act:?} (only silu)"
        )));
    }
    for key in ["attention_bias", "mlp_bias"] {
        if obj.get(key).and_then(Value::as_bool) == Some(true) {
            return Err(Error::Unsupported(format!(
                "{key} = true (no bias tensors)"
            )));
        }
    }
    let hidden = size(obj, "hidden_size")?;
    let n_heads = size(obj, "num_attention_heads")?;
    let n_kv_heads = opt_size(obj, "num_key_value_heads")?.unwrap_or(n_heads);
    let head_dim = match opt_size(obj, "head_dim")? {
        Some(d) => d,
        None if hidden.is_multiple_of(n_heads) => hidden / n_heads,
        None => {
            return Err(Error::Format(format!(
                "hidden_size {hidden} is not a multiple of num_attention_heads {n_heads}"
            )));
        }
    };
    if !head_dim.is_multiple_of(2) || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(Error::Format(format!(
            "head_dim {head_dim} must be even and num_attention_heads {n_heads} a multiple of \
             num_key_value_heads {n_kv_heads}"
        )));
    }
    let rope_theta = rope_theta(obj)?;
    let rms_eps = number(obj, "rms_norm_eps")?;
    if !(rms_eps.is_finite() && rms_eps >= 0.0) {
        return Err(Error::Format(format!(
            "rms_norm_eps {rms_eps} is out of range"
        )));
    }
    let tie_embeddings = match obj.get("tie_word_embeddings") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(Error::Format(format!(
                "tie_word_embeddings is {v}, not a bool"
            )));
        }
    };
    Ok(LlamaConfig {
        n_layers: size(obj, "num_hidden_layers")?,
        hidden,
        ffn: size(obj, "intermediate_size")?,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab: size(obj, "vocab_size")?,
        rope_theta: rope_theta as f32,
        rms_eps: rms_eps as f32,
        max_ctx: size(obj, "max_position_embeddings")?,
        tie_embeddings,
    })
}

/// RoPE base: `rope_theta` (transformers 4) or `rope_parameters.rope_theta` (5), default 10000; any
/// scaling other than the default is refused.
fn rope_theta(obj: &Map<String, Value>) -> Result<f64> {
    let params = match obj
        .get("rope_parameters")
        .or_else(|| obj.get("rope_scaling"))
    {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(p),
        Some(v) => {
            return Err(Error::Format(format!(
                "rope_parameters is {v}, not an object"
            )));
        }
    };
    if let Some(p) = params {
        let kind = p
            .get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(Value::as_str);
        if kind.is_some_and(|k| k != "default") {
            return Err(Error::Unsupported(format!("RoPE scaling {kind:?}")));
        }
    }
    let theta = match (
        obj.get("rope_theta"),
        params.and_then(|p| p.get("rope_theta")),
    ) {
        (Some(_), _) => number(obj, "rope_theta")?,
        (None, Some(v)) => v.as_f64().ok_or_else(|| {
            Error::Format(format!("rope_parameters.rope_theta is {v}, not a number"))
        })?,
        (None, None) => 10_000.0,
    };
    if !(theta.is_finite() && theta > 0.0) {
        return Err(Error::Format(format!("rope_theta {theta} is out of range")));
    }
    Ok(theta)
}

fn number(obj: &Map<String, Value>, key: &str) -> Result<f64> {
    match obj.get(key) {
        None => Err(Error::Format(format!("{key} is missing"))),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| Error::Format(format!("{key} is {v}, not a number"))),
    }
}

fn opt_size(obj: &Map<String, Value>, key: &str) -> Result<Option<usize>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
            .map(Some)
            .ok_or_else(|| Error::Format(format!("{key} is {v}, not a positive integer"))),
    }
}

fn size(obj: &Map<String, Value>, key: &str) -> Result<usize> {
    opt_size(obj, key)?.ok_or_else(|| Error::Format(format!("{key} is missing")))
}

#[cfg(test)]
mod tests;
