//! The safetensors reader on hand-built files: every dtype, metadata, and each malformed-input error.

use super::*;

/// A file with this JSON header and data section.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

fn err(bytes: Vec<u8>) -> String {
    SafeTensors::parse(bytes).unwrap_err().to_string()
}

#[test]
fn reads_f32_f16_bf16_and_ignores_metadata() {
    let mut data = Vec::new();
    data.extend(1.5f32.to_le_bytes());
    data.extend((-2.0f32).to_le_bytes());
    data.extend([0x00, 0x3c, 0x00, 0xc4]); // f16 1.0, -4.0
    data.extend([0x80, 0x3f, 0x40, 0xc0]); // bf16 1.0, -3.0
    let header = r#"{"__metadata__":{"format":"pt"},
        "a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
        "b":{"dtype":"F16","shape":[2,1],"data_offsets":[8,12]},
        "c":{"dtype":"BF16","shape":[1,2],"data_offsets":[12,16]},
        "empty":{"dtype":"F32","shape":[0,3],"data_offsets":[16,16]}}  "#;
    let st = SafeTensors::parse(file(header, &data)).unwrap();
    assert_eq!(st.entries.len(), 4);
    assert_eq!(st.tensor_f32("a").unwrap().data, [1.5, -2.0]);
    let b = st.tensor_f32("b").unwrap();
    assert_eq!((b.shape, b.data), (vec![2, 1], vec![1.0, -4.0]));
    assert_eq!(st.entries["b"].dtype, Dtype::F16);
    assert_eq!(st.tensor_f32("c").unwrap().data, [1.0, -3.0]);
    assert!(st.tensor_f32("empty").unwrap().data.is_empty());
    let e = st.tensor_f32("__metadata__").unwrap_err().to_string();
    assert!(e.contains("tensor __metadata__ is missing"), "{e}");
}

#[test]
fn f32_writer_round_trips() {
    let mut ts = BTreeMap::new();
    ts.insert(
        "w".to_string(),
        Tensor {
            shape: vec![2, 3],
            data: vec![0.0, -1.0, 2.5, f32::MIN_POSITIVE, 1e30, -0.0],
        },
    );
    ts.insert(
        "n".to_string(),
        Tensor {
            shape: vec![1],
            data: vec![7.0],
        },
    );
    let bytes = to_f32_bytes(&ts).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(header_len % 8, 0, "data must start 8-byte aligned");
    let st = SafeTensors::parse(bytes).unwrap();
    for (name, t) in &ts {
        let got = st.tensor_f32(name).unwrap();
        assert_eq!(got.shape, t.shape);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.data), bits(&t.data), "{name}");
    }
    let bad = BTreeMap::from([(
        "x".to_string(),
        Tensor {
            shape: vec![3],
            data: vec![1.0],
        },
    )]);
    assert!(to_f32_bytes(&bad).is_err());
}

#[test]
fn truncated_or_garbled_headers_are_errors() {
    let e = err(vec![1, 2, 3]);
    assert!(
        e.contains("truncated (3 bytes, need 8 for the header length)"),
        "{e}"
    );
    let mut b = file(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    b.truncate(20);
    let e = err(b);
    assert!(e.contains("header length 54 exceeds the 12 bytes"), "{e}");
    let e = err((u64::MAX).to_le_bytes().to_vec());
    assert!(e.contains("exceeds"), "{e}");
    let e = err(file(r#"{"a": "#, &[]));
    assert!(e.contains("not valid JSON"), "{e}");
    let e = err(file("[1, 2]", &[]));
    assert!(e.contains("not a JSON object"), "{e}");
}

#[test]
fn bad_entries_name_the_tensor_and_field() {
    let cases: [(&str, usize, &str); 10] = [
        (r#"{"t":3}"#, 0, "t: entry is not an object"),
        (
            r#"{"t":{"shape":[1],"data_offsets":[0,4]}}"#,
            4,
            "t: no dtype",
        ),
        (
            r#"{"t":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
            8,
            "t has dtype I64 (supported: F32, F16, BF16)",
        ),
        (
            r#"{"t":{"dtype":"F32","data_offsets":[0,4]}}"#,
            4,
            "t: no shape",
        ),
        (
            r#"{"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            4,
            "t: shape is not a list of sizes",
        ),
        (
            r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[4]}}"#,
            4,
            "t: data_offsets must hold two offsets",
        ),
        (
            r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            6,
            "t: data_offsets [4, 8] do not hold 4 bytes inside the 6-byte data",
        ),
        (
            r#"{"t":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}"#,
            6,
            "t: data_offsets [4, 0] do not hold 0 bytes",
        ),
        (
            r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            4,
            "t: data_offsets [0, 4] do not hold 8 bytes",
        ),
        (
            r#"{"t":{"dtype":"BF16","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#,
            4,
            "overflows",
        ),
    ];
    for (header, data_len, want) in cases {
        let e = err(file(header, &vec![0; data_len]));
        assert!(e.contains(want), "{header}: got {e:?}, want {want:?}");
    }
}

#[test]
fn overlapping_tensors_are_errors() {
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                     "b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let e = err(file(header, &[0; 8]));
    assert!(e.contains("tensors a and b overlap"), "{e}");
    // A hole between tensors, bytes after the last one, and a repeated name are errors too (the
    // format requires the data to be exactly the tensors, each named once).
    let hole = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                   "b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    assert!(err(file(hole, &[0; 12])).contains("invalid layout"));
    let tail = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    assert!(err(file(tail, &[0; 8])).contains("invalid layout"));
    let dup = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                  "a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    assert!(err(file(dup, &[0; 8])).contains("tensor a appears twice"));
}

#[test]
fn open_names_the_path() {
    let dir = std::env::temp_dir().join(format!("specblock-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.safetensors");
    std::fs::write(&p, [1u8, 0, 0]).unwrap();
    let e = SafeTensors::open(&p).unwrap_err().to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("truncated"),
        "{e}"
    );
    let e = SafeTensors::open(&dir.join("none.safetensors")).unwrap_err();
    assert!(
        matches!(&e, Error::Io(m) if m.contains("none.safetensors")),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
