//! The dequantizer against `gguf.quants.dequantize` (gguf==0.19.0), bit for bit, on blocks recorded by
//! `tools/engine/scripts/quant_fixture.py` (real SmolLM2 tensors and gguf-quantized random blocks).

use serde_json::Value;
use specblock_engine::quant::{GgmlType, dequantize};

const FIXTURE: &str = include_str!("fixtures/quant.json");

fn ggml_type(name: &str) -> GgmlType {
    match name {
        "F32" => GgmlType::F32,
        "F16" => GgmlType::F16,
        "BF16" => GgmlType::BF16,
        "Q8_0" => GgmlType::Q8_0,
        "Q4_0" => GgmlType::Q4_0,
        "Q4_1" => GgmlType::Q4_1,
        other => panic!("fixture names unknown type {other}"),
    }
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn dequantize_matches_gguf_python_bit_for_bit() {
    let root: Value = serde_json::from_str(FIXTURE).unwrap();
    let cases = root["cases"].as_array().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let ty = ggml_type(c["type"].as_str().unwrap());
        let n = c["n"].as_u64().unwrap() as usize;
        let bytes = hex(c["bytes"].as_str().unwrap());
        let want: Vec<u32> = c["expected_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(want.len(), n, "{name}: fixture value count");
        let mut got = vec![0f32; n];
        dequantize(ty, &bytes, &mut got).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, (g, &w)) in got.iter().zip(&want).enumerate() {
            let w = f32::from_bits(w);
            // NaN payloads are not compared; every other value must be identical, sign of zero included.
            let same = if w.is_nan() {
                g.is_nan()
            } else {
                g.to_bits() == w.to_bits()
            };
            assert!(same, "{name}: value {i} is {g:e}, gguf gives {w:e}");
        }
        seen.insert(format!("{ty:?}"));
    }
    // Every supported type is covered by at least one case.
    assert_eq!(seen.len(), 6, "types covered: {seen:?}");
}
