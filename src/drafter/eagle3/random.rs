//! A random EAGLE-3 checkpoint of any shape, for tests and benchmarks that need a drafter before one
//! is trained (the counterpart of `write_random_drafter`).

use std::path::Path;
use std::string::{String, ToString};
use std::vec::Vec;

use super::Eagle3Config;
use crate::io::LoadError;
use crate::io::safetensors::{TensorData, serialize};
use crate::load_err;

/// Writes an EAGLE-3 drafter with random weights (`config.json` + `model.safetensors`, f32, the
/// checkpoint names without prefix, no embedding) into `dir`. The draft vocabulary is spread evenly
/// over the target's (`d2t[i] = i * V / V_d - i`). Deterministic for a seed.
pub fn write_random_eagle3(
    dir: &Path,
    cfg_json: &serde_json::Value,
    seed: u64,
) -> Result<(), LoadError> {
    let text = cfg_json.to_string();
    let c = Eagle3Config::from_json(&text, "random EAGLE-3 config")?;
    let (h, d) = (c.hidden, c.head_dim);
    let rng = crate::rng::CounterRng::new(seed);
    let mut counter = 0u64;
    let mut named: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    // Uniform with the variance of N(base, scale^2).
    let mut put = |name: &str, shape: Vec<usize>, scale: f32, base: f32| {
        let n = shape.iter().product();
        let v = (0..n)
            .map(|_| {
                counter += 1;
                base + scale * (rng.uniform(counter) as f32 * 2.0 - 1.0) * 1.732
            })
            .collect();
        named.push((name.into(), shape, v));
    };
    let fan = |n: usize| 1.0 / (n as f32).sqrt();
    let fw = c.feature_width();
    put("fc.weight", std::vec![h, fw], fan(fw), 0.0);
    for n in [
        "midlayer.input_layernorm.weight",
        "midlayer.hidden_norm.weight",
        "midlayer.post_attention_layernorm.weight",
        "norm.weight",
    ] {
        put(n, std::vec![h], 0.1, 1.0);
    }
    let (qd, kvd) = (c.heads * d, c.kv_heads * d);
    put(
        "midlayer.self_attn.q_proj.weight",
        std::vec![qd, 2 * h],
        fan(2 * h),
        0.0,
    );
    for n in [
        "midlayer.self_attn.k_proj.weight",
        "midlayer.self_attn.v_proj.weight",
    ] {
        put(n, std::vec![kvd, 2 * h], fan(2 * h), 0.0);
    }
    put(
        "midlayer.self_attn.o_proj.weight",
        std::vec![h, qd],
        fan(qd),
        0.0,
    );
    for n in [
        "midlayer.mlp.gate_proj.weight",
        "midlayer.mlp.up_proj.weight",
    ] {
        put(n, std::vec![c.ffn, h], fan(h), 0.0);
    }
    put(
        "midlayer.mlp.down_proj.weight",
        std::vec![h, c.ffn],
        fan(c.ffn),
        0.0,
    );
    // Peaked enough that top-k orders are well separated.
    put(
        "lm_head.weight",
        std::vec![c.draft_vocab, h],
        3.0 * fan(h),
        0.0,
    );
    let d2t: Vec<i64> = (0..c.draft_vocab)
        .map(|i| (i * c.vocab / c.draft_vocab) as i64 - i as i64)
        .collect();
    let mut tensors: Vec<(&str, Vec<usize>, TensorData<'_>)> = named
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.clone(), TensorData::F32(v)))
        .collect();
    tensors.push(("d2t", std::vec![c.draft_vocab], TensorData::I64(&d2t)));
    let bytes = serialize(&tensors)?;
    std::fs::create_dir_all(dir).map_err(|e| load_err!("create {}: {e}", dir.display()))?;
    std::fs::write(dir.join("config.json"), text)
        .map_err(|e| load_err!("write config.json: {e}"))?;
    std::fs::write(dir.join("model.safetensors"), bytes)
        .map_err(|e| load_err!("write model.safetensors: {e}"))?;
    Ok(())
}
