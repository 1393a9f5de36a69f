//! config.json parsing (transformers 4 and 5 layouts, defaults, rejections) and tensor selection.

use serde_json::json;

use super::*;
use crate::safetensors::to_f32_bytes;
use crate::weights::Tensor;

fn smollm2_v5() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": true,
        "attention_bias": false,
        "mlp_bias": false
    })
}

fn edit(f: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut v = smollm2_v5();
    f(v.as_object_mut().unwrap());
    v
}

fn err(v: Value) -> String {
    config_from_hf_json(&v).unwrap_err().to_string()
}

#[test]
fn smollm2_config_in_both_layouts() {
    let want = LlamaConfig {
        n_layers: 30,
        hidden: 576,
        ffn: 1536,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        vocab: 49152,
        rope_theta: 100_000.0,
        rms_eps: 1e-5,
        max_ctx: 8192,
        tie_embeddings: true,
    };
    assert_eq!(config_from_hf_json(&smollm2_v5()).unwrap(), want);
    // transformers 4: top-level rope_theta, rope_scaling null, no head_dim.
    let v4 = edit(|o| {
        o.remove("rope_parameters");
        o.remove("head_dim");
        o.insert("rope_theta".into(), json!(100000.0));
        o.insert("rope_scaling".into(), Value::Null);
    });
    assert_eq!(config_from_hf_json(&v4).unwrap(), want);
}

#[test]
fn optional_fields_default_like_transformers() {
    let c = config_from_hf_json(&edit(|o| {
        o.remove("rope_parameters");
        o.remove("num_key_value_heads");
        o.remove("tie_word_embeddings");
        o.remove("head_dim");
        o.insert("num_attention_heads".into(), json!(8));
    }))
    .unwrap();
    assert_eq!(c.rope_theta, 10_000.0);
    assert_eq!(c.n_kv_heads, 8);
    assert_eq!(c.head_dim, 72);
    assert!(!c.tie_embeddings);
}

#[test]
fn unsupported_or_malformed_configs_name_the_field() {
    let cases: Vec<(Value, &str)> = vec![
        (
            edit(|o| drop(o.remove("architectures"))),
            "LlamaForCausalLM is required",
        ),
        (
            edit(|o| drop(o.insert("architectures".into(), json!(["Gemma3ForCausalLM"])))),
            "architectures is [\"Gemma3ForCausalLM\"]",
        ),
        (
            edit(|o| drop(o.remove("hidden_size"))),
            "hidden_size is missing",
        ),
        (
            edit(|o| drop(o.insert("intermediate_size".into(), json!("big")))),
            "intermediate_size is \"big\", not a positive integer",
        ),
        (
            edit(|o| drop(o.insert("num_hidden_layers".into(), json!(0)))),
            "num_hidden_layers is 0",
        ),
        (
            edit(|o| drop(o.insert("num_key_value_heads".into(), json!(4)))),
            "multiple of num_key_value_heads 4",
        ),
        (
            edit(|o| {
                o.remove("head_dim");
                o.insert("num_attention_heads".into(), json!(7));
            }),
            "hidden_size 576 is not a multiple of num_attention_heads 7",
        ),
        (
            edit(|o| drop(o.remove("rms_norm_eps"))),
            "rms_norm_eps is missing",
        ),
        (
            edit(|o| {
                o.insert(
                    "rope_parameters".into(),
                    json!({"rope_type": "yarn", "factor": 4.0}),
                );
            }),
            "RoPE scaling Some(\"yarn\")",
        ),
        (
            edit(|o| {
                o.remove("rope_parameters");
                o.insert(
                    "rope_scaling".into(),
                    json!({"type": "linear", "factor": 2.0}),
                );
            }),
            "RoPE scaling Some(\"linear\")",
        ),
        (
            edit(|o| drop(o.insert("rope_parameters".into(), json!({"rope_theta": -1.0})))),
            "rope_theta -1 is out of range",
        ),
        (
            edit(|o| drop(o.insert("attention_bias".into(), json!(true)))),
            "attention_bias = true",
        ),
        (
            edit(|o| drop(o.insert("hidden_act".into(), json!("gelu")))),
            "hidden_act \"gelu\"",
        ),
        (
            edit(|o| drop(o.insert("tie_word_embeddings".into(), json!(1)))),
            "tie_word_embeddings is 1, not a bool",
        ),
        (json!([1, 2]), "config is not a JSON object"),
    ];
    for (v, want) in cases {
        let e = err(v);
        assert!(e.contains(want), "got {e:?}, want {want:?}");
    }
}

/// Tiny config: 1 layer, hidden 4, ffn 6, 2 heads, 1 KV head, head_dim 2, vocab 3.
fn tiny() -> LlamaConfig {
    LlamaConfig {
        n_layers: 1,
        hidden: 4,
        ffn: 6,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 2,
        vocab: 3,
        rope_theta: 10_000.0,
        rms_eps: 1e-6,
        max_ctx: 16,
        tie_embeddings: true,
    }
}

fn tensors_for(c: &LlamaConfig) -> BTreeMap<String, Tensor> {
    expected_shapes(c)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let data = (0..n).map(|j| (i * 1000 + j) as f32).collect();
            (name, Tensor { shape, data })
        })
        .collect()
}

fn st(ts: &BTreeMap<String, Tensor>) -> SafeTensors {
    SafeTensors::parse(to_f32_bytes(ts).unwrap()).unwrap()
}

#[test]
fn tensors_are_taken_by_name_and_checked() {
    let c = tiny();
    let ts = tensors_for(&c);
    let m = model_from_safetensors(c.clone(), &st(&ts)).unwrap();
    assert_eq!(m.tensors, ts);
    assert_eq!(m.config, c);

    // A saved copy of a tied head and an old RoPE table are ignored.
    let mut extra = ts.clone();
    for name in [
        "lm_head.weight",
        "model.layers.0.self_attn.rotary_emb.inv_freq",
    ] {
        let t = Tensor {
            shape: vec![1],
            data: vec![0.0],
        };
        extra.insert(name.into(), t);
    }
    assert_eq!(
        model_from_safetensors(c.clone(), &st(&extra))
            .unwrap()
            .tensors,
        ts
    );

    // An untied model needs lm_head.
    let untied = LlamaConfig {
        tie_embeddings: false,
        ..c.clone()
    };
    let e = model_from_safetensors(untied, &st(&ts))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tensor lm_head.weight is missing"), "{e}");

    let mut unknown = ts.clone();
    let t = Tensor {
        shape: vec![1],
        data: vec![0.0],
    };
    unknown.insert("model.layers.1.input_layernorm.weight".into(), t);
    let e = model_from_safetensors(c.clone(), &st(&unknown))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.1.input_layernorm.weight is not part of a 1-layer Llama"),
        "{e}"
    );

    let mut wrong = ts.clone();
    let up = wrong.get_mut("model.layers.0.mlp.up_proj.weight").unwrap();
    up.shape = vec![4, 6];
    let e = model_from_safetensors(c, &st(&wrong))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.0.mlp.up_proj.weight has shape [4, 6], expected [6, 4]"),
        "{e}"
    );
}
