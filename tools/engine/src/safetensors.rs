//! safetensors reader (F32, F16 and BF16 tensors, through the library's parser) and an f32 writer.
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON mapping each tensor name to
//! `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the end of the header), an
//! optional `__metadata__` entry, then the data. Every field and offset is checked, so a malformed file
//! gives an error naming the tensor and field.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::quant::{GgmlType, dequantize};
use crate::weights::Tensor;

/// Element types the engine reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
}

impl Dtype {
    fn ggml(self) -> GgmlType {
        match self {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        self.ggml().block_bytes()
    }
}

/// One tensor's header entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Byte range in the data section.
    pub range: std::ops::Range<usize>,
}

/// A parsed safetensors file held in memory: the library's parser (`specblock::io::safetensors`, the one
/// parser of the project) with the engine's float tensor types.
#[derive(Debug)]
pub struct SafeTensors {
    /// Header entries by tensor name (`__metadata__` excluded).
    pub entries: BTreeMap<String, Entry>,
    file: specblock::io::safetensors::SafeTensors,
}

impl SafeTensors {
    /// Reads and parses a file; errors name the path.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
        Self::parse_named(bytes, &path.display().to_string())
    }

    /// Parses safetensors bytes; every entry and the whole layout are checked (see the library's
    /// reader): overlapping or out-of-range data, holes, duplicate names and size mismatches are errors.
    pub fn parse(bytes: Vec<u8>) -> Result<Self> {
        Self::parse_named(bytes, "safetensors")
    }

    fn parse_named(bytes: Vec<u8>, origin: &str) -> Result<Self> {
        use specblock::io::safetensors::Dtype as D;
        let file = specblock::io::safetensors::SafeTensors::parse(bytes, origin)
            .map_err(|e| Error::Format(e.to_string()))?;
        let mut entries = BTreeMap::new();
        for (name, e) in &file.entries {
            let dtype = match e.dtype {
                D::F32 => Dtype::F32,
                D::F16 => Dtype::F16,
                D::BF16 => Dtype::BF16,
                other => {
                    return Err(Error::Unsupported(format!(
                        "{origin}: safetensors tensor {name} has dtype {other:?} (supported: F32, F16, BF16)"
                    )));
                }
            };
            entries.insert(
                name.clone(),
                Entry {
                    dtype,
                    shape: e.shape.clone(),
                    range: e.range.clone(),
                },
            );
        }
        Ok(SafeTensors { entries, file })
    }

    /// A tensor converted to f32.
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| Error::Format(format!("safetensors tensor {name} is missing")))?;
        let (_, raw) = self
            .file
            .raw_bytes(name)
            .map_err(|err| Error::Format(err.to_string()))?;
        let mut data = vec![0f32; raw.len() / e.dtype.size()];
        dequantize(e.dtype.ggml(), raw, &mut data)
            .map_err(|err| Error::Format(format!("safetensors tensor {name}: {err}")))?;
        Ok(Tensor {
            shape: e.shape.clone(),
            data,
        })
    }
}

/// Serializes tensors as an F32 safetensors file (names in order, data packed in the same order).
pub fn to_f32_bytes(tensors: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    let mut header = Map::new();
    let mut offset = 0usize;
    for (name, t) in tensors {
        if t.shape.iter().product::<usize>() != t.data.len() {
            return Err(Error::InvalidArgument(format!(
                "tensor {name}: shape {:?} does not hold {} values",
                t.shape,
                t.data.len()
            )));
        }
        let end = offset + 4 * t.data.len();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = Value::Object(header).to_string().into_bytes();
    // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend((json.len() as u64).to_le_bytes());
    out.extend(json);
    for t in tensors.values() {
        out.extend(t.data.iter().flat_map(|v| v.to_le_bytes()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
