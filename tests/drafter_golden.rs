//! The Rust drafter forward against the PyTorch reference (tools/train/golden.py): a tiny random
//! SpecBlock drafter, a prefill context forward, a commit context forward and a block-2 seed forward
//! must match every output within 1e-4 relative.

mod golden;

use golden::{close, close_block, embedding, f32s, fixture, u32s as ids};
use specblock::drafter::SpecBlockDrafter;
use specblock::io::safetensors::SafeTensors;

#[test]
fn forward_matches_the_pytorch_reference() {
    let dir = fixture("drafter_tiny");
    let drafter = SpecBlockDrafter::load_dir(&dir, 2).expect("tiny drafter loads");
    let embed = embedding(&dir);
    let g = golden::open("drafter_golden.safetensors");
    let mut cache = drafter.new_cache(16);

    let pre = drafter
        .context_forward(
            &mut cache,
            &embed,
            &f32s(&g, "prefill.features"),
            &ids(&g, "prefill.tokens"),
            &ids(&g, "prefill.bases"),
        )
        .unwrap();
    close_block(&pre, &g, "prefill");
    let commit = drafter
        .context_forward(
            &mut cache,
            &embed,
            &f32s(&g, "commit.features"),
            &ids(&g, "commit.tokens"),
            &ids(&g, "commit.bases"),
        )
        .unwrap();
    close_block(&commit, &g, "commit");
    assert_eq!(cache.entries(), 8);
    let c = drafter.config();
    for layer in 0..c.layers {
        let rows = 8 * c.slots;
        let (k, v) = (
            cache.keys_row_major(layer, rows, c.kv_heads, c.head_dim),
            cache.values_row_major(layer, rows, c.kv_heads, c.head_dim),
        );
        close(
            &k,
            &f32s(&g, &format!("cache.layer{layer}.k")),
            "cache keys",
        );
        close(
            &v,
            &f32s(&g, &format!("cache.layer{layer}.v")),
            "cache values",
        );
    }
    let seeds = drafter
        .seed_forward(
            &cache,
            &embed,
            &f32s(&g, "seed.hidden"),
            &ids(&g, "seed.tokens"),
            &ids(&g, "seed.visibility"),
        )
        .unwrap();
    close_block(&seeds, &g, "seed");
    assert_eq!(cache.entries(), 8, "a seed forward appends nothing");
}

#[test]
fn bad_inputs_are_errors_and_leave_the_cache_unchanged() {
    let dir = fixture("drafter_tiny");
    let drafter = SpecBlockDrafter::load_dir(&dir, 1).unwrap();
    let embed = embedding(&dir);
    let c = drafter.config().clone();
    let f = vec![0.1f32; 3 * c.target_hidden];
    let mut cache = drafter.new_cache(2);
    assert!(
        drafter
            .seed_forward(&cache, &embed, &vec![0.0; c.hidden], &[1], &[0])
            .is_err(),
        "seed without an entry"
    );
    assert!(
        drafter
            .context_forward(&mut cache, &embed, &f[1..], &[1], &[1])
            .is_err(),
        "feature width"
    );
    assert!(
        drafter
            .context_forward(&mut cache, &embed, &f, &[c.vocab as u32], &[1])
            .is_err(),
        "token out of vocab"
    );
    assert!(
        drafter
            .context_forward(&mut cache, &embed[1..], &f, &[1], &[1])
            .is_err(),
        "embedding shape"
    );
    let mut nan = f.clone();
    nan[3] = f32::NAN;
    assert!(
        drafter
            .context_forward(&mut cache, &embed, &nan, &[1], &[1])
            .is_err(),
        "NaN feature"
    );
    let three = [f.clone(), f.clone(), f.clone()].concat();
    assert!(
        drafter
            .context_forward(&mut cache, &embed, &three, &[1, 2, 3], &[1, 2, 3])
            .is_err(),
        "capacity"
    );
    assert_eq!(cache.entries(), 0);
    drafter
        .context_forward(&mut cache, &embed, &f, &[1], &[1])
        .expect("still usable");
    let vis_bad = [c.slots as u32];
    assert!(
        drafter
            .seed_forward(&cache, &embed, &vec![0.0; c.hidden], &[1], &vis_bad)
            .is_err(),
        "visibility"
    );
    assert_eq!(cache.entries(), 1);
}

#[test]
fn checkpoint_errors_name_the_tensor() {
    let dir = fixture("drafter_tiny");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = specblock::drafter::DrafterConfig::from_json(&text, "config.json").unwrap();
    let mut bigger = cfg.clone();
    bigger.hidden += 1;
    let st = SafeTensors::open(&dir.join("model.safetensors")).unwrap();
    let err = SpecBlockDrafter::from_safetensors(bigger, &st, 1)
        .err()
        .expect("shape mismatch is an error");
    assert!(
        err.0.contains("input_layer.position_queries.weight") || err.0.contains("shape"),
        "{err}"
    );
    let bad_json = text.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": -2");
    assert!(specblock::drafter::DrafterConfig::from_json(&bad_json, "c").is_err());
    assert!(SafeTensors::parse(vec![1, 2, 3], "tiny").is_err());
}

/// The same checkpoint stored in bf16 and in f16 (the authors release bf16) loads and gives outputs
/// close to the f32 ones; the f16 conversion round-trips exactly representable values.
#[test]
fn half_precision_checkpoints_load() {
    use specblock::io::safetensors::{TensorData, f16_to_f32, f32_to_f16, serialize};
    for x in [
        0.0f32,
        1.0,
        -2.5,
        65504.0,
        6.1035156e-5,
        5.9604645e-8,
        -0.333,
    ] {
        let back = f16_to_f32(f32_to_f16(x));
        assert!((back - x).abs() <= x.abs() * 1e-3 + 1e-7, "{x} -> {back}");
    }
    let dir = fixture("drafter_tiny");
    let st = SafeTensors::open(&dir.join("model.safetensors")).unwrap();
    let embed = embedding(&dir);
    let g = golden::open("drafter_golden.safetensors");
    let reference = SpecBlockDrafter::load_dir(&dir, 1).unwrap();
    let mut cache = reference.new_cache(8);
    let want = reference
        .context_forward(
            &mut cache,
            &embed,
            &f32s(&g, "prefill.features"),
            &ids(&g, "prefill.tokens"),
            &ids(&g, "prefill.bases"),
        )
        .unwrap();
    for (name, to_bits) in [
        (
            "bf16",
            (|x: f32| (x.to_bits() >> 16) as u16) as fn(f32) -> u16,
        ),
        ("f16", f32_to_f16),
    ] {
        let floats: Vec<(String, Vec<usize>, Vec<u16>)> = st
            .entries
            .iter()
            .filter(|(_, e)| e.dtype == specblock::io::safetensors::Dtype::F32)
            .map(|(n, _)| {
                let (shape, v) = st.f32(n).unwrap();
                (n.clone(), shape, v.iter().map(|&x| to_bits(x)).collect())
            })
            .collect();
        let (d2t_shape, d2t) = st.i64("d2t").unwrap();
        let mut tensors: Vec<(&str, Vec<usize>, TensorData)> = floats
            .iter()
            .map(|(n, s, v)| {
                (
                    n.as_str(),
                    s.clone(),
                    if name == "bf16" {
                        TensorData::BF16(v)
                    } else {
                        TensorData::F16(v)
                    },
                )
            })
            .collect();
        tensors.push(("d2t", d2t_shape, TensorData::I64(&d2t)));
        let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("drafter_tiny_{name}"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::copy(dir.join("config.json"), out.join("config.json")).unwrap();
        std::fs::write(out.join("model.safetensors"), serialize(&tensors).unwrap()).unwrap();
        let d = SpecBlockDrafter::load_dir(&out, 1)
            .unwrap_or_else(|e| panic!("{name} checkpoint: {e}"));
        let mut cache = d.new_cache(8);
        let got = d
            .context_forward(
                &mut cache,
                &embed,
                &f32s(&g, "prefill.features"),
                &ids(&g, "prefill.tokens"),
                &ids(&g, "prefill.bases"),
            )
            .unwrap();
        let scale = want.logits.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got
            .logits
            .iter()
            .zip(&want.logits)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err < 0.1 * scale,
            "{name}: logits differ by {err} (scale {scale})"
        );
        assert!(err > 0.0, "{name}: the weights must actually be rounded");
    }
}

/// bf16 weights (`use_bf16_weights`) keep the forward close to the f32 reference: the relative error
/// of the logits is at the bf16 rounding level (about 2^-8 per weight, averaged down), far below 3e-2.
#[test]
fn bf16_weights_stay_close_to_the_reference() {
    let dir = fixture("drafter_tiny");
    let mut drafter = SpecBlockDrafter::load_dir(&dir, 1).expect("tiny drafter loads");
    drafter.use_bf16_weights();
    let embed = embedding(&dir);
    let g = golden::open("drafter_golden.safetensors");
    let mut cache = drafter.new_cache(16);
    let pre = drafter
        .context_forward(
            &mut cache,
            &embed,
            &f32s(&g, "prefill.features"),
            &ids(&g, "prefill.tokens"),
            &ids(&g, "prefill.bases"),
        )
        .unwrap();
    let want = f32s(&g, "prefill.logits");
    let err: f64 = pre
        .logits
        .iter()
        .zip(&want)
        .map(|(&a, &b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = want.iter().map(|&b| (b as f64).powi(2)).sum::<f64>().sqrt();
    assert!(
        err / norm < 3e-2,
        "bf16 logits: relative error {}",
        err / norm
    );
    assert!(err > 0.0, "bf16 weights should change the result at all");
}
