//! Loading synthetic GGUF files: metadata, name mapping, q/k un-permutation and every rejection path.

use super::*;

/// A metadata value for the test writer.
enum V {
    U32(u32),
    F32(f32),
    Str(&'static str),
}

/// Writes a GGUF v3 file with F32 tensors (ggml dims innermost first).
fn gguf(kv: &[(&str, V)], tensors: &[(&str, Vec<u64>, Vec<f32>)]) -> Vec<u8> {
    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        string(&mut b, k);
        match v {
            V::U32(x) => {
                b.extend(4u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            V::F32(x) => {
                b.extend(6u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            V::Str(s) => {
                b.extend(8u32.to_le_bytes());
                string(&mut b, s);
            }
        }
    }
    let mut offset = 0u64;
    for (name, dims, data) in tensors {
        string(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(0u32.to_le_bytes());
        b.extend(offset.to_le_bytes());
        offset += (data.len() as u64 * 4).div_ceil(32) * 32;
    }
    for (_, _, data) in tensors {
        b.resize(b.len().div_ceil(32) * 32, 0);
        b.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    }
    b
}

/// Tiny model: 1 layer, hidden 8, ffn 12, 2 heads, 1 KV head, head_dim 4, vocab 5.
fn tiny_kv() -> Vec<(&'static str, V)> {
    vec![
        ("general.architecture", V::Str("llama")),
        ("llama.block_count", V::U32(1)),
        ("llama.embedding_length", V::U32(8)),
        ("llama.feed_forward_length", V::U32(12)),
        ("llama.attention.head_count", V::U32(2)),
        ("llama.attention.head_count_kv", V::U32(1)),
        ("llama.rope.dimension_count", V::U32(4)),
        ("llama.rope.freq_base", V::F32(100_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
        ("llama.context_length", V::U32(64)),
    ]
}

/// A tensor whose value at (row, col) is `row * 100 + col + base`.
fn t(name: &'static str, rows: u64, cols: u64, base: f32) -> (&'static str, Vec<u64>, Vec<f32>) {
    let data = (0..rows * cols)
        .map(|i| (i / cols * 100 + i % cols) as f32 + base)
        .collect();
    let dims = if rows == 1 {
        vec![cols]
    } else {
        vec![cols, rows]
    };
    (name, dims, data)
}

fn tiny_tensors() -> Vec<(&'static str, Vec<u64>, Vec<f32>)> {
    vec![
        t("token_embd.weight", 5, 8, 0.5),
        t("blk.0.attn_norm.weight", 1, 8, 0.25),
        t("blk.0.attn_q.weight", 8, 8, 0.0),
        t("blk.0.attn_k.weight", 4, 8, 0.0),
        t("blk.0.attn_v.weight", 4, 8, 0.0),
        t("blk.0.attn_output.weight", 8, 8, 0.0),
        t("blk.0.ffn_norm.weight", 1, 8, 0.75),
        t("blk.0.ffn_gate.weight", 12, 8, 1.0),
        t("blk.0.ffn_up.weight", 12, 8, 2.0),
        t("blk.0.ffn_down.weight", 8, 12, 3.0),
        t("output_norm.weight", 1, 8, 0.125),
    ]
}

fn load(kv: &[(&str, V)], tensors: &[(&str, Vec<u64>, Vec<f32>)]) -> Result<LoadedModel> {
    model_from_gguf(&GgufFile::parse(gguf(kv, tensors))?)
}

/// The first column of each row, divided by 100: the GGUF row each HF row came from.
fn source_rows(m: &LoadedModel, name: &str) -> Vec<usize> {
    let t = &m.tensors[name];
    t.data
        .chunks(t.shape[1])
        .map(|r| (r[0] / 100.0) as usize)
        .collect()
}

#[test]
fn tiny_model_loads_with_hf_names_and_config() {
    let m = load(&tiny_kv(), &tiny_tensors()).unwrap();
    let want = LlamaConfig {
        n_layers: 1,
        hidden: 8,
        ffn: 12,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 4,
        vocab: 5,
        rope_theta: 100_000.0,
        rms_eps: 1e-5,
        max_ctx: 64,
        tie_embeddings: true,
    };
    assert_eq!(m.config, want);
    let names: Vec<&str> = m.tensors.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 11);
    assert!(!names.contains(&"lm_head.weight"));
    assert_eq!(m.tensors["model.embed_tokens.weight"].shape, [5, 8]);
    assert_eq!(
        m.tensors["model.embed_tokens.weight"].data[8..10],
        [100.5, 101.5]
    );
    assert_eq!(
        m.tensors["model.layers.0.mlp.down_proj.weight"].shape,
        [8, 12]
    );
    assert_eq!(m.tensors["model.layers.0.mlp.up_proj.weight"].data[0], 2.0);
    assert_eq!(
        m.tensors["model.layers.0.mlp.gate_proj.weight"].data[0],
        1.0
    );
    assert_eq!(
        m.tensors["model.layers.0.input_layernorm.weight"].data[1],
        1.25
    );
    assert_eq!(
        m.tensors["model.layers.0.post_attention_layernorm.weight"].data[0],
        0.75
    );
    assert_eq!(m.tensors["model.norm.weight"].data[0], 0.125);
    // Per head (4 rows), HF row a*2 + b comes from GGUF row 2b + a.
    assert_eq!(
        source_rows(&m, "model.layers.0.self_attn.q_proj.weight"),
        [0, 2, 1, 3, 4, 6, 5, 7]
    );
    assert_eq!(
        source_rows(&m, "model.layers.0.self_attn.k_proj.weight"),
        [0, 2, 1, 3]
    );
    // v and o are not permuted.
    assert_eq!(
        source_rows(&m, "model.layers.0.self_attn.v_proj.weight"),
        [0, 1, 2, 3]
    );
    assert_eq!(
        source_rows(&m, "model.layers.0.self_attn.o_proj.weight"),
        [0, 1, 2, 3, 4, 5, 6, 7]
    );
    // Columns are untouched.
    assert_eq!(
        m.tensors["model.layers.0.self_attn.q_proj.weight"].data[9],
        201.0
    );
}

#[test]
fn output_weight_unties_the_head_and_defaults_apply() {
    let kv: Vec<_> = tiny_kv()
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                *k,
                "llama.rope.freq_base"
                    | "llama.attention.head_count_kv"
                    | "llama.rope.dimension_count"
            )
        })
        .collect();
    let mut tensors = tiny_tensors();
    tensors.push(t("output.weight", 5, 8, 7.0));
    // Without head_count_kv there is no GQA: k and v have as many heads as q.
    tensors[3] = t("blk.0.attn_k.weight", 8, 8, 0.0);
    tensors[4] = t("blk.0.attn_v.weight", 8, 8, 0.0);
    let m = load(&kv, &tensors).unwrap();
    assert!(!m.config.tie_embeddings);
    assert_eq!(m.config.n_kv_heads, 2);
    assert_eq!(m.config.head_dim, 4);
    assert_eq!(m.config.rope_theta, 10_000.0);
    assert_eq!(m.tensors["lm_head.weight"].data[0], 7.0);
    assert_eq!(
        source_rows(&m, "model.layers.0.self_attn.k_proj.weight"),
        [0, 2, 1, 3, 4, 6, 5, 7]
    );
}

fn load_err(kv: &[(&str, V)], tensors: &[(&str, Vec<u64>, Vec<f32>)]) -> String {
    load(kv, tensors).unwrap_err().to_string()
}

fn with(key: &'static str, v: V) -> Vec<(&'static str, V)> {
    let mut kv: Vec<_> = tiny_kv().into_iter().filter(|(k, _)| *k != key).collect();
    kv.push((key, v));
    kv
}

#[test]
fn bad_metadata_is_rejected_by_name() {
    let e = load_err(
        &with("general.architecture", V::Str("gemma3")),
        &tiny_tensors(),
    );
    assert!(e.contains("general.architecture is \"gemma3\""), "{e}");
    let kv: Vec<_> = tiny_kv()
        .into_iter()
        .filter(|(k, _)| *k != "llama.block_count")
        .collect();
    let e = load_err(&kv, &tiny_tensors());
    assert!(e.contains("llama.block_count is missing"), "{e}");
    let e = load_err(&with("llama.block_count", V::Str("one")), &tiny_tensors());
    assert!(e.contains("llama.block_count"), "{e}");
    let e = load_err(&with("llama.embedding_length", V::U32(0)), &tiny_tensors());
    assert!(e.contains("llama.embedding_length = 0"), "{e}");
    let e = load_err(
        &with("llama.rope.dimension_count", V::U32(2)),
        &tiny_tensors(),
    );
    assert!(e.contains("partial RoPE"), "{e}");
    let e = load_err(
        &with("llama.attention.head_count_kv", V::U32(3)),
        &tiny_tensors(),
    );
    assert!(e.contains("multiple of 3 KV heads"), "{e}");
    let e = load_err(
        &with("llama.rope.scaling.type", V::Str("yarn")),
        &tiny_tensors(),
    );
    assert!(e.contains("RoPE scaling \"yarn\""), "{e}");
    let e = load_err(&with("llama.vocab_size", V::U32(6)), &tiny_tensors());
    assert!(e.contains("llama.vocab_size 6 differs"), "{e}");
    let e = load_err(&with("llama.rope.freq_base", V::F32(-1.0)), &tiny_tensors());
    assert!(e.contains("RoPE base -1"), "{e}");
}

#[test]
fn bad_tensors_are_rejected_by_name() {
    let mut ts = tiny_tensors();
    ts[8] = t("blk.0.ffn_up.weight", 8, 12, 0.0);
    let e = load_err(&tiny_kv(), &ts);
    assert!(
        e.contains("blk.0.ffn_up.weight (model.layers.0.mlp.up_proj.weight) has shape [8, 12], expected [12, 8]"),
        "{e}"
    );

    let mut ts = tiny_tensors();
    ts.retain(|t| t.0 != "blk.0.ffn_norm.weight");
    let e = load_err(&tiny_kv(), &ts);
    assert!(
        e.contains("no tensor for model.layers.0.post_attention_layernorm.weight"),
        "{e}"
    );

    let mut ts = tiny_tensors();
    ts.push(t("blk.0.attn_q_norm.weight", 1, 8, 0.0));
    let e = load_err(&tiny_kv(), &ts);
    assert!(
        e.contains("blk.0.attn_q_norm.weight has no Llama equivalent"),
        "{e}"
    );

    let mut ts = tiny_tensors();
    ts.push(t("blk.1.attn_norm.weight", 1, 8, 0.0));
    let e = load_err(&tiny_kv(), &ts);
    assert!(e.contains("does not belong to a 1-layer model"), "{e}");

    let mut ts = tiny_tensors();
    ts.push(t("blk.0.attn_norm.weight", 1, 8, 0.0));
    let e = load_err(&tiny_kv(), &ts);
    assert!(e.contains("blk.0.attn_norm.weight appears twice"), "{e}");

    // A metadata key given twice (found by the gguf fuzz target with duplicate tensor names: a lookup
    // by name saw only the first of two).
    let mut kv = tiny_kv();
    kv.push(("llama.block_count", V::U32(2)));
    let e = load_err(&kv, &tiny_tensors());
    assert!(
        e.contains("metadata key llama.block_count appears twice"),
        "{e}"
    );

    let mut ts = tiny_tensors();
    ts[0] = t("token_embd.weight", 5, 7, 0.0);
    let e = load_err(&tiny_kv(), &ts);
    assert!(e.contains("token_embd.weight has ggml dims [7, 5]"), "{e}");
}

#[test]
fn load_gguf_reports_the_path() {
    let dir = std::env::temp_dir().join(format!("specblock-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.gguf");
    assert!(matches!(load_gguf(&missing), Err(Error::Io(m)) if m.contains("missing.gguf")));

    let bytes = gguf(
        &with("general.architecture", V::Str("qwen2")),
        &tiny_tensors(),
    );
    let bad = dir.join("qwen.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let e = load_gguf(&bad).unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("qwen.gguf")),
        "{e}"
    );

    let truncated = dir.join("truncated.gguf");
    let good = gguf(&tiny_kv(), &tiny_tensors());
    std::fs::write(&truncated, &good[..good.len() - 10]).unwrap();
    let e = load_gguf(&truncated).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");

    let ok = dir.join("ok.gguf");
    std::fs::write(&ok, &good).unwrap();
    let (m, file) = load_gguf(&ok).unwrap();
    assert_eq!(m.config.n_layers, 1);
    assert_eq!(file.meta_str("general.architecture").unwrap(), "llama");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hf_names() {
    assert_eq!(
        hf_name("token_embd.weight").unwrap(),
        "model.embed_tokens.weight"
    );
    assert_eq!(hf_name("output.weight").unwrap(), "lm_head.weight");
    assert_eq!(
        hf_name("blk.29.attn_output.weight").unwrap(),
        "model.layers.29.self_attn.o_proj.weight"
    );
    assert_eq!(
        hf_name("blk.3.ffn_norm.weight").unwrap(),
        "model.layers.3.post_attention_layernorm.weight"
    );
    assert_eq!(hf_name("blk.x.ffn_norm.weight"), None);
    assert_eq!(hf_name("blk.3.ffn_norm.bias"), None);
    assert_eq!(hf_name("rope_freqs.weight"), None);
}

/// llama.cpp's forward permutation (convert_hf_to_gguf.py LlamaModel.permute), written independently.
fn permute(w: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let half = rows / n_head / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_head {
        for a in 0..2 {
            for b in 0..half {
                let dst = (h * 2 * half + 2 * b + a) * cols;
                let src = (h * 2 * half + a * half + b) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

#[test]
fn unpermute_inverts_llama_cpp_permute() {
    let (n_head, hd, cols) = (3, 8, 5);
    let w: Vec<f32> = (0..n_head * hd * cols).map(|i| i as f32).collect();
    let p = permute(&w, n_head, cols);
    assert_ne!(p, w);
    assert_eq!(unpermute_rows(&p, n_head, cols).unwrap(), w);
    // One head of 4 rows by hand: GGUF rows [r0, r2, r1, r3] hold HF rows [0, 1, 2, 3].
    let gguf_rows = [0.0, 2.0, 1.0, 3.0];
    assert_eq!(
        unpermute_rows(&gguf_rows, 1, 1).unwrap(),
        [0.0, 1.0, 2.0, 3.0]
    );
}

#[test]
fn unpermute_rejects_bad_shapes() {
    assert!(unpermute_rows(&[0.0; 12], 2, 2).is_err()); // 6 rows: odd head size
    assert!(unpermute_rows(&[0.0; 12], 0, 2).is_err());
    assert!(unpermute_rows(&[0.0; 12], 1, 0).is_err());
    assert!(unpermute_rows(&[0.0; 13], 1, 2).is_err());
}

/// A file whose metadata would take far more memory than the file itself (a large array of one-byte
/// elements: ~32 bytes each once parsed) is refused with a message, not an allocation the size of the
/// counts; a real vocabulary's worth of metadata is fine.
#[test]
fn metadata_memory_is_bounded_by_the_file_size() {
    fn u8_array(n: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes()); // tensors
        b.extend(1u64.to_le_bytes()); // one key
        b.extend(4u64.to_le_bytes());
        b.extend(b"junk");
        b.extend(9u32.to_le_bytes()); // array
        b.extend(0u32.to_le_bytes()); // of u8
        b.extend(n.to_le_bytes());
        b.resize(b.len() + n as usize, 7);
        b
    }
    let small = crate::gguf::GgufFile::parse(u8_array(100_000)).unwrap();
    assert!(small.metadata.contains_key("junk"));
    // 40 MB of one-byte elements would be ~1.3 GB of parsed values: over 2x the file + 64 MiB.
    let e = crate::gguf::GgufFile::parse(u8_array(40_000_000))
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk") && e.contains("in memory"), "{e}");
}
