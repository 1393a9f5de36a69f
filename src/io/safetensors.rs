//! safetensors reader: an 8-byte little-endian header length, a JSON header mapping tensor names to
//! `{dtype, shape, data_offsets}`, then the data. Floats (F32, F16, BF16) are read as f32, I64 and BOOL
//! as they are. The one parser of the library and the engine: each entry is checked here (errors name
//! the tensor and field), duplicate names are refused, and the `safetensors` crate validates the layout
//! as the format requires (offsets contiguous from 0 with no overlap or hole, every size = shape x
//! dtype, the data section exactly as long as the tensors).

use std::collections::BTreeMap;
use std::path::Path;
use std::string::{String, ToString};
use std::vec::Vec;

use super::LoadError;
use crate::load_err;

/// Largest header accepted, so a corrupt length cannot make us parse a huge buffer as JSON.
const MAX_HEADER: u64 = 100_000_000;

/// Element types this reader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit signed integer.
    I64,
    /// One byte, 0 or 1.
    Bool,
}

impl Dtype {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I64" => Dtype::I64,
            "BOOL" => Dtype::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I64 => 8,
            Dtype::Bool => 1,
        }
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
    pub range: core::ops::Range<usize>,
}

/// A parsed safetensors file held in memory.
#[derive(Debug)]
pub struct SafeTensors {
    /// Header entries by name (`__metadata__` excluded).
    pub entries: BTreeMap<String, Entry>,
    data_start: usize,
    bytes: Vec<u8>,
    origin: String,
}

/// The first top-level key of a JSON object that occurs twice, if any (the header was already parsed,
/// so it is valid JSON).
fn first_duplicate_key(header: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::BTreeSet::new();
            let mut dup = None;
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(k.clone()) && dup.is_none() {
                    dup = Some(k);
                }
            }
            Ok(dup)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(header);
    de.deserialize_map(Keys).ok().flatten()
}

/// IEEE half to f32 (subnormals, infinities and NaN included): [`crate::num::f16_to_f32`].
pub use crate::num::f16_to_f32;

impl SafeTensors {
    /// Reads and parses a file; errors name the path.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let bytes =
            std::fs::read(path).map_err(|e| load_err!("cannot read {}: {e}", path.display()))?;
        Self::parse(bytes, &path.display().to_string())
    }

    /// Parses safetensors bytes; `origin` names them in errors.
    pub fn parse(bytes: Vec<u8>, origin: &str) -> Result<Self, LoadError> {
        let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(load_err!(
                "{origin}: truncated ({} bytes, need 8 for the header length)",
                bytes.len()
            ));
        };
        let n = u64::from_le_bytes(*len);
        if n > MAX_HEADER || n > rest.len() as u64 {
            return Err(load_err!(
                "{origin}: header length {n} exceeds the {} bytes that follow",
                rest.len()
            ));
        }
        let (header, data) = rest.split_at(n as usize);
        let json: serde_json::Value = serde_json::from_slice(header)
            .map_err(|e| load_err!("{origin}: header is not valid JSON: {e}"))?;
        let serde_json::Value::Object(map) = json else {
            return Err(load_err!("{origin}: header is not a JSON object"));
        };
        // A JSON object with a repeated name parses to one entry: count the names as written.
        if let Some(name) = first_duplicate_key(header) {
            return Err(load_err!(
                "{origin}: tensor {name} appears twice in the header"
            ));
        }
        let mut entries = BTreeMap::new();
        for (name, v) in &map {
            if name == "__metadata__" {
                continue;
            }
            let bad = |what: &str| load_err!("{origin}: tensor {name}: {what}");
            if !v.is_object() {
                return Err(bad("entry is not an object"));
            }
            let dtype_s = v
                .get("dtype")
                .and_then(|d| d.as_str())
                .ok_or_else(|| bad("no dtype"))?;
            let dtype = Dtype::parse(dtype_s)
                .ok_or_else(|| bad(&std::format!("unsupported dtype {dtype_s}")))?;
            let shape: Vec<usize> = v
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad("no shape"))?
                .iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("shape is not a list of sizes"))?;
            let offs: Vec<usize> = v
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad("no data_offsets"))?
                .iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("data_offsets are not offsets"))?;
            let [begin, end] = offs[..] else {
                return Err(bad("data_offsets must hold two offsets"));
            };
            let count = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .and_then(|c| c.checked_mul(dtype.size()))
                .ok_or_else(|| bad("shape overflows"))?;
            if begin > end || end > data.len() || end - begin != count {
                return Err(bad(&std::format!(
                    "data_offsets [{begin}, {end}] do not hold {count} bytes inside the {}-byte data",
                    data.len()
                )));
            }
            entries.insert(
                name.clone(),
                Entry {
                    dtype,
                    shape,
                    range: begin..end,
                },
            );
        }
        // Overlaps named by both tensors, then the format's own checks of the whole layout
        // (contiguity from offset 0, holes, trailing bytes).
        let mut spans: Vec<(&String, &Entry)> = entries
            .iter()
            .filter(|(_, e)| !e.range.is_empty())
            .collect();
        spans.sort_by_key(|(_, e)| e.range.start);
        for pair in spans.windows(2) {
            if let [(a, ea), (b, eb)] = pair
                && eb.range.start < ea.range.end
            {
                return Err(load_err!(
                    "{origin}: tensors {a} and {b} overlap ({:?} and {:?})",
                    ea.range,
                    eb.range
                ));
            }
        }
        if let Err(e) = safetensors::SafeTensors::read_metadata(&bytes) {
            return Err(load_err!("{origin}: invalid layout: {e}"));
        }
        Ok(SafeTensors {
            entries,
            data_start: 8 + n as usize,
            bytes,
            origin: origin.to_string(),
        })
    }

    /// A tensor's entry and its raw little-endian bytes.
    pub fn raw_bytes(&self, name: &str) -> Result<(&Entry, &[u8]), LoadError> {
        self.raw(name)
    }

    fn raw(&self, name: &str) -> Result<(&Entry, &[u8]), LoadError> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| load_err!("{}: tensor {name} is missing", self.origin))?;
        let start = self.data_start + e.range.start;
        Ok((e, &self.bytes[start..self.data_start + e.range.end]))
    }

    /// A float tensor as f32, with its shape.
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), LoadError> {
        let (e, raw) = self.raw(name)?;
        let data = match e.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| crate::num::bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            other => {
                return Err(load_err!(
                    "{}: tensor {name} is {other:?}, not a float tensor",
                    self.origin
                ));
            }
        };
        Ok((e.shape.clone(), data))
    }

    /// An I64 tensor, with its shape.
    pub fn i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>), LoadError> {
        let (e, raw) = self.raw(name)?;
        if e.dtype != Dtype::I64 {
            return Err(load_err!(
                "{}: tensor {name} is {:?}, not I64",
                self.origin,
                e.dtype
            ));
        }
        let data = raw
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect();
        Ok((e.shape.clone(), data))
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

/// Tensor data to write: f32 or i64 values.
pub enum TensorData<'a> {
    /// Written as F32.
    F32(&'a [f32]),
    /// Written as I64.
    I64(&'a [i64]),
    /// Raw IEEE-half bits, written as F16.
    F16(&'a [u16]),
    /// Raw bfloat16 bits, written as BF16.
    BF16(&'a [u16]),
}

/// f32 to IEEE half bits, round to nearest even (overflow to infinity, NaN kept):
/// [`crate::num::f32_to_f16`].
pub use crate::num::f32_to_f16;

/// Serialises tensors `(name, shape, data)` to safetensors bytes (in the given order).
///
/// Hidden from the documented API: it writes the random drafters of tests and benchmarks and the
/// engine's exports (`tools/engine`); a library user reads checkpoints, and writes them with the
/// `safetensors` crate or PyTorch.
#[doc(hidden)]
pub fn serialize(tensors: &[(&str, Vec<usize>, TensorData<'_>)]) -> Result<Vec<u8>, LoadError> {
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, shape, values) in tensors {
        let count: usize = shape.iter().product();
        let (dtype, len) = match values {
            TensorData::F32(v) => ("F32", v.len()),
            TensorData::I64(v) => ("I64", v.len()),
            TensorData::F16(v) => ("F16", v.len()),
            TensorData::BF16(v) => ("BF16", v.len()),
        };
        if len != count {
            return Err(load_err!("tensor {name}: {len} values for shape {shape:?}"));
        }
        let begin = data.len();
        match values {
            TensorData::F32(v) => v
                .iter()
                .for_each(|x| data.extend_from_slice(&x.to_le_bytes())),
            TensorData::I64(v) => v
                .iter()
                .for_each(|x| data.extend_from_slice(&x.to_le_bytes())),
            TensorData::F16(v) | TensorData::BF16(v) => v
                .iter()
                .for_each(|x| data.extend_from_slice(&x.to_le_bytes())),
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let mut head = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| load_err!("header: {e}"))?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + data.len());
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&data);
    Ok(out)
}
