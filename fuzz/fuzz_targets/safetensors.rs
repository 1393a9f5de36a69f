//! The safetensors parser (`specblock::io::safetensors`, shared by the library and the engine): any
//! bytes either parse into a layout whose every tensor can be read, or give an error. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use specblock::io::safetensors::{Dtype, SafeTensors};

fuzz_target!(|data: &[u8]| {
    let Ok(st) = SafeTensors::parse(data.to_vec(), "fuzz input") else {
        return;
    };
    for (name, entry) in &st.entries {
        let (e, raw) = st.raw_bytes(name).expect("a listed tensor is readable");
        assert_eq!(e, entry);
        let elements: usize = entry.shape.iter().product();
        assert_eq!(
            raw.len(),
            elements * entry.dtype.size(),
            "{name}: size = shape x dtype"
        );
        match entry.dtype {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => {
                let (shape, values) = st.f32(name).expect("a float tensor reads as f32");
                assert_eq!(shape, entry.shape);
                assert_eq!(values.len(), elements);
            }
            Dtype::I64 => {
                let (_, values) = st.i64(name).expect("an I64 tensor reads");
                assert_eq!(values.len(), elements);
            }
            Dtype::Bool => assert!(st.f32(name).is_err() && st.i64(name).is_err()),
        }
    }
    assert!(st.raw_bytes("\u{0}not a tensor").is_err());
});
