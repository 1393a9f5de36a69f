//! `load_gguf` on the real SmolLM2-135M-Instruct Q4_1 GGUF: the config, the tensor set, and spot values
//! of un-permuted q/k (and other) tensors against `tools/engine/scripts/load_fixture.py`, whose numpy
//! output was checked identical to transformers' own GGUF loader.

mod support;

use serde_json::Value;
use specblock_engine::load::load_gguf;
use specblock_engine::weights::LlamaConfig;

const FIXTURE: &str = include_str!("fixtures/load.json");

#[test]
fn real_model_config_and_tensors_match_transformers() {
    let Some(path) = support::model_path("real_model_config_and_tensors_match_transformers") else {
        return;
    };
    let (model, file) = load_gguf(&path).unwrap();
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
    assert_eq!(model.config, want);
    assert_eq!(model.tensors.len(), 30 * 9 + 2);
    assert!(!model.tensors.contains_key("lm_head.weight"));
    assert_eq!(file.meta_str("tokenizer.ggml.model").unwrap(), "gpt2");

    let doc: Value = serde_json::from_str(FIXTURE).unwrap();
    assert_eq!(doc["checked_against_transformers"], Value::Bool(true));
    let records = doc["tensors"].as_array().unwrap();
    assert!(records.len() >= 4);
    for rec in records {
        let name = rec["name"].as_str().unwrap();
        let t = &model.tensors[name];
        let shape: Vec<usize> = rec["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{name}: shape");
        let cols_n = if shape.len() == 2 { shape[1] } else { shape[0] };
        let rows: Vec<usize> = ints(&rec["rows"]);
        let cols: Vec<usize> = ints(&rec["cols"]);
        for (r, bits) in rows.iter().zip(rec["bits"].as_array().unwrap()) {
            for (c, b) in cols.iter().zip(ints(bits)) {
                let got = t.data[r * cols_n + c];
                let want = f32::from_bits(b as u32);
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{name}[{r}, {c}]: {got} vs {want}"
                );
            }
        }
        // Whole-tensor checksums catch a wrong row anywhere, not only at the sampled rows.
        let sum: f64 = t.data.iter().map(|&v| f64::from(v)).sum();
        let weighted: f64 = t
            .data
            .chunks(cols_n)
            .enumerate()
            .map(|(i, row)| (i + 1) as f64 * row.iter().map(|&v| f64::from(v)).sum::<f64>())
            .sum();
        close(sum, rec["sum"].as_f64().unwrap(), &format!("{name}: sum"));
        close(
            weighted,
            rec["row_weighted_sum"].as_f64().unwrap(),
            &format!("{name}: row-weighted sum"),
        );
    }
}

fn ints(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn close(got: f64, want: f64, what: &str) {
    // Only the f64 summation order differs from numpy.
    let tol = 1e-9 * want.abs().max(1.0);
    assert!((got - want).abs() <= tol, "{what}: {got} vs {want}");
}
