//! safetensors reader (F32, F16 and BF16 tensors) and an f32 writer.
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

/// Largest header accepted (the reference implementation's limit), so a corrupt length cannot make us
/// parse hundreds of megabytes as JSON.
const MAX_HEADER: u64 = 100_000_000;

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
    fn parse(s: &str) -> Option<Self> {
        match s {
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            _ => None,
        }
    }

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

/// A parsed safetensors file held in memory.
#[derive(Debug)]
pub struct SafeTensors {
    /// Header entries by tensor name (`__metadata__` excluded).
    pub entries: BTreeMap<String, Entry>,
    data_start: usize,
    bytes: Vec<u8>,
}

impl SafeTensors {
    /// Reads and parses a file; errors name the path.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(bytes).map_err(|e| match e {
            Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
            Error::Unsupported(m) => Error::Unsupported(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses safetensors bytes and checks every entry against the data that follows the header.
    pub fn parse(bytes: Vec<u8>) -> Result<Self> {
        let (len, rest) = bytes.split_first_chunk::<8>().ok_or_else(|| {
            Error::Format(format!(
                "safetensors truncated: {} bytes, the header length alone needs 8",
                bytes.len()
            ))
        })?;
        let n = u64::from_le_bytes(*len);
        if n > MAX_HEADER || n > rest.len() as u64 {
            return Err(Error::Format(format!(
                "safetensors header length {n} exceeds the {} bytes that follow (or the {MAX_HEADER}-byte limit)",
                rest.len()
            )));
        }
        let (header, data) = rest.split_at(n as usize);
        let json: Value = serde_json::from_slice(header)
            .map_err(|e| Error::Format(format!("safetensors header is not valid JSON: {e}")))?;
        let Value::Object(map) = json else {
            return Err(Error::Format(
                "safetensors header is not a JSON object".into(),
            ));
        };
        let mut entries = BTreeMap::new();
        for (name, v) in &map {
            if name == "__metadata__" {
                continue;
            }
            entries.insert(name.clone(), entry(name, v, data.len())?);
        }
        check_overlaps(&entries)?;
        Ok(SafeTensors {
            entries,
            data_start: 8 + n as usize,
            bytes,
        })
    }

    /// A tensor converted to f32.
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| Error::Format(format!("safetensors tensor {name} is missing")))?;
        let start = self.data_start + e.range.start;
        let end = self.data_start + e.range.end;
        let raw = self.bytes.get(start..end).ok_or_else(|| {
            Error::Format(format!("safetensors tensor {name}: data out of range"))
        })?;
        let mut data = vec![0f32; raw.len() / e.dtype.size()];
        dequantize(e.dtype.ggml(), raw, &mut data)
            .map_err(|err| Error::Format(format!("safetensors tensor {name}: {err}")))?;
        Ok(Tensor {
            shape: e.shape.clone(),
            data,
        })
    }
}

/// Parses and checks one header entry.
fn entry(name: &str, v: &Value, data_len: usize) -> Result<Entry> {
    let bad = |what: &str| Error::Format(format!("safetensors tensor {name}: {what}"));
    let obj = v.as_object().ok_or_else(|| bad("entry is not an object"))?;
    let dtype_s = field(obj, "dtype", name)?
        .as_str()
        .ok_or_else(|| bad("dtype is not a string"))?;
    let dtype = Dtype::parse(dtype_s).ok_or_else(|| {
        Error::Unsupported(format!(
            "safetensors tensor {name} has dtype {dtype_s} (supported: F32, F16, BF16)"
        ))
    })?;
    let shape =
        usizes(field(obj, "shape", name)?).ok_or_else(|| bad("shape is not a list of sizes"))?;
    let offsets = usizes(field(obj, "data_offsets", name)?);
    let [begin, end] = offsets.as_deref().unwrap_or_default() else {
        return Err(bad("data_offsets is not [begin, end]"));
    };
    let (begin, end) = (*begin, *end);
    if begin > end || end > data_len {
        return Err(bad(&format!(
            "data_offsets [{begin}, {end}] lie outside the {data_len} data bytes"
        )));
    }
    let want = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(&format!("shape {shape:?} overflows")))?;
    if end - begin != want {
        return Err(bad(&format!(
            "shape {shape:?} of {dtype:?} needs {want} bytes, data_offsets give {}",
            end - begin
        )));
    }
    Ok(Entry {
        dtype,
        shape,
        range: begin..end,
    })
}

fn field<'a>(obj: &'a Map<String, Value>, key: &str, name: &str) -> Result<&'a Value> {
    obj.get(key)
        .ok_or_else(|| Error::Format(format!("safetensors tensor {name}: no {key}")))
}

fn usizes(v: &Value) -> Option<Vec<usize>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_u64().and_then(|x| usize::try_from(x).ok()))
        .collect()
}

/// Rejects tensors whose data overlap (each byte belongs to at most one tensor).
fn check_overlaps(entries: &BTreeMap<String, Entry>) -> Result<()> {
    let mut spans: Vec<(&str, &std::ops::Range<usize>)> = entries
        .iter()
        .filter(|(_, e)| !e.range.is_empty())
        .map(|(n, e)| (n.as_str(), &e.range))
        .collect();
    spans.sort_by_key(|(_, r)| r.start);
    for pair in spans.windows(2) {
        if let [(a, ra), (b, rb)] = pair
            && rb.start < ra.end
        {
            return Err(Error::Format(format!(
                "safetensors tensors {a} and {b} overlap ({ra:?} and {rb:?})"
            )));
        }
    }
    Ok(())
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
