//! `load_hf_dir` on Hugging Face directories written here (a tiny model and malformed variants), and,
//! when `SPECBLOCK_HF_DIR` names the output of `tools/engine/scripts/gguf_to_hf.py`, equality with
//! `load_gguf` on the same model, tensor for tensor.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use specblock_engine::Error;
use specblock_engine::hf::load_hf_dir;
use specblock_engine::load::{expected_shapes, load_gguf};
use specblock_engine::safetensors::to_f32_bytes;
use specblock_engine::weights::{LlamaConfig, Tensor};

fn config_json() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 8,
        "intermediate_size": 12,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-6,
        "rope_theta": 500000.0,
        "vocab_size": 7,
        "max_position_embeddings": 32,
        "tie_word_embeddings": false
    })
}

fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        n_layers: 2,
        hidden: 8,
        ffn: 12,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 4,
        vocab: 7,
        rope_theta: 500_000.0,
        rms_eps: 1e-6,
        max_ctx: 32,
        tie_embeddings: false,
    }
}

fn tiny_tensors() -> BTreeMap<String, Tensor> {
    expected_shapes(&tiny_config())
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let data = (0..n).map(|j| i as f32 + j as f32 / 64.0).collect();
            (name, Tensor { shape, data })
        })
        .collect()
}

/// A fresh directory under the target's temp dir holding `config.json` and `model.safetensors`.
fn hf_dir(test: &str, config: &Value, safetensors: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hf_dir-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("model.safetensors"), safetensors).unwrap();
    dir
}

/// safetensors bytes with a hand-written header.
fn raw_safetensors(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string();
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend(h.as_bytes());
    b.extend(data);
    b
}

#[test]
fn tiny_hf_dir_loads() {
    let ts = tiny_tensors();
    let dir = hf_dir("tiny", &config_json(), &to_f32_bytes(&ts).unwrap());
    let m = load_hf_dir(&dir).unwrap();
    assert_eq!(m.config, tiny_config());
    assert_eq!(m.tensors.len(), 2 * 9 + 3);
    assert_eq!(m.tensors, ts);
    assert_eq!(m.tensors["lm_head.weight"].shape, [7, 8]);
}

#[test]
fn malformed_hf_dirs_give_clear_errors() {
    let good = to_f32_bytes(&tiny_tensors()).unwrap();

    let dir = hf_dir("truncated-header", &config_json(), &good[..20]);
    let e = load_hf_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("header length"),
        "{e}"
    );

    let dir = hf_dir("truncated-data", &config_json(), &good[..good.len() - 4]);
    let e = load_hf_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("model.safetensors")
            && e.contains("do not hold 32 bytes inside the 4444-byte data"),
        "{e}"
    );

    let header =
        json!({"model.norm.weight": {"dtype": "F32", "shape": [8], "data_offsets": [0, 64]}});
    let dir = hf_dir(
        "offsets",
        &config_json(),
        &raw_safetensors(&header, &[0; 32]),
    );
    let e = load_hf_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains(
            "model.norm.weight: data_offsets [0, 64] do not hold 32 bytes inside the 32-byte data"
        ),
        "{e}"
    );

    let header =
        json!({"model.norm.weight": {"dtype": "I32", "shape": [8], "data_offsets": [0, 32]}});
    let dir = hf_dir("dtype", &config_json(), &raw_safetensors(&header, &[0; 32]));
    let e = load_hf_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("tensor model.norm.weight: unsupported dtype I32"),
        "{e}"
    );

    let mut config = config_json();
    config["intermediate_size"] = json!(10);
    let dir = hf_dir("shape", &config, &good);
    let e = load_hf_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("model.layers.0.mlp.down_proj.weight has shape [8, 12], expected [8, 10] from config.json"),
        "{e}"
    );

    let mut config = config_json();
    config["architectures"] = json!(["MistralForCausalLM"]);
    let dir = hf_dir("arch", &config, &good);
    let e = load_hf_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("config.json") && e.contains("LlamaForCausalLM is required"),
        "{e}"
    );

    let dir = hf_dir("bad-json", &config_json(), &good);
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": ").unwrap();
    let e = load_hf_dir(&dir).unwrap_err().to_string();
    assert!(e.contains("config.json: not valid JSON"), "{e}");

    let dir = hf_dir("no-config", &config_json(), &good);
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = load_hf_dir(&dir).unwrap_err();
    assert!(
        matches!(&e, Error::Io(m) if m.contains("config.json")),
        "{e}"
    );

    let dir = hf_dir("sharded", &config_json(), &good);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let e = load_hf_dir(&dir).unwrap_err();
    assert!(
        matches!(&e, Error::Io(m) if m.contains("model.safetensors")),
        "{e}"
    );
    std::fs::write(dir.join("model.safetensors.index.json"), "{}").unwrap();
    let e = load_hf_dir(&dir).unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("sharded")),
        "{e}"
    );
}

/// Needs `SPECBLOCK_HF_DIR` (made by `python tools/engine/scripts/gguf_to_hf.py DIR`) and the GGUF.
#[test]
fn converted_hf_dir_equals_the_gguf() {
    let Some(hf) = std::env::var_os("SPECBLOCK_HF_DIR") else {
        eprintln!(
            "skipping converted_hf_dir_equals_the_gguf: set SPECBLOCK_HF_DIR to a directory made by \
             tools/engine/scripts/gguf_to_hf.py"
        );
        return;
    };
    let Some(gguf) = support::model_path("converted_hf_dir_equals_the_gguf") else {
        return;
    };
    let from_hf = load_hf_dir(Path::new(&hf)).unwrap();
    let (from_gguf, _) = load_gguf(&gguf).unwrap();
    assert_eq!(from_hf.config, from_gguf.config);
    let names = |m: &BTreeMap<String, Tensor>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&from_hf.tensors), names(&from_gguf.tensors));
    for (name, a) in &from_hf.tensors {
        let b = &from_gguf.tensors[name];
        assert_eq!(a.shape, b.shape, "{name}: shape");
        let first_diff = a
            .data
            .iter()
            .zip(&b.data)
            .position(|(x, y)| x.to_bits() != y.to_bits());
        assert_eq!(first_diff, None, "{name}: values differ from the GGUF's");
    }
}
