//! GGUF reader: header, metadata, tensor table, alignment, and tensors dequantized to f32.
//!
//! Every length and offset read from the file is checked against the bytes that remain, so a truncated
//! or corrupt file gives an error naming the field, never a panic or a huge allocation.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::quant::{self, GgmlType};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// uint8
    U8(u8),
    /// int8
    I8(i8),
    /// uint16
    U16(u16),
    /// int16
    I16(i16),
    /// uint32
    U32(u32),
    /// int32
    I32(i32),
    /// float32
    F32(f32),
    /// bool
    Bool(bool),
    /// UTF-8 string (invalid UTF-8 is replaced, never an error: vocabularies hold raw bytes)
    String(String),
    /// homogeneous array
    Array(Vec<MetaValue>),
    /// uint64
    U64(u64),
    /// int64
    I64(i64),
    /// float64
    F64(f64),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v as i64),
            MetaValue::I16(v) => Some(v as i64),
            MetaValue::I32(v) => Some(v as i64),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float, if it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
}

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml dimensions, innermost first (`ne[0]` is the row length).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Number of values.
    pub n_values: usize,
    /// Bytes of data.
    pub n_bytes: usize,
}

/// A parsed GGUF file held in memory.
#[derive(Debug)]
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in key order.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensor table in file order.
    pub tensors: Vec<TensorInfo>,
    data_start: usize,
    bytes: Vec<u8>,
}

/// Bounds-checked little-endian reader over the file bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Bytes of parsed metadata the reader may still build: a metadata element costs far more in
    /// memory (a `MetaValue`, a `String`) than in the file, so the total is capped relative to the
    /// file's size instead of trusting the counts.
    budget: usize,
}

impl Reader<'_> {
    /// Charges `bytes` of parsed metadata against the budget.
    fn charge(&mut self, bytes: usize, what: &str) -> Result<()> {
        self.budget = self.budget.checked_sub(bytes).ok_or_else(|| {
            Error::Format(format!(
                "GGUF {what}: the metadata would take more than {} bytes in memory \
                 (2x the file + 64 MiB)",
                metadata_budget(self.bytes.len())
            ))
        })?;
        Ok(())
    }
}

/// The most memory a file's parsed metadata may take: twice the file's size plus 64 MiB (a real
/// model's vocabulary takes a few percent of its file).
fn metadata_budget(file_bytes: usize) -> usize {
    file_bytes.saturating_mul(2).saturating_add(64 << 20)
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Error::Format(format!(
                "GGUF truncated: {what} needs {n} bytes at offset {}, file has {}",
                self.pos,
                self.bytes.len()
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must fit in the remaining bytes at `min_bytes_each` bytes per item.
    fn count(&mut self, min_bytes_each: usize, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_bytes_each.max(1) as u64) > remaining {
            return Err(Error::Format(format!(
                "GGUF {what} = {n} at offset {} exceeds the {remaining} bytes left",
                self.pos - 8
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(1, what)?;
        self.charge(n + size_of::<String>(), what)?;
        let s = self.take(n, what)?;
        Ok(String::from_utf8_lossy(s).into_owned())
    }

    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(what)?[0]),
            1 => MetaValue::I8(self.array::<1>(what)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => MetaValue::U32(self.u32(what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(Error::Format(format!("GGUF {what}: bool byte {b}"))),
            },
            8 => MetaValue::String(self.string(what)?),
            9 => {
                if depth > 4 {
                    return Err(Error::Format(format!(
                        "GGUF {what}: arrays nested too deep"
                    )));
                }
                let elem = self.u32(what)?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                let n = self.count(min, what)?;
                self.charge(n.saturating_mul(size_of::<MetaValue>()), what)?;
                let mut v = Vec::new();
                v.try_reserve_exact(n).map_err(|_| {
                    Error::Format(format!("GGUF {what}: cannot allocate {n} array elements"))
                })?;
                for _ in 0..n {
                    v.push(self.value(elem, what, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(Error::Format(format!(
                    "GGUF {what}: unknown value type {other}"
                )));
            }
        })
    }
}

impl GgufFile {
    /// Reads and parses a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(bytes).map_err(|e| match e {
            Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses GGUF bytes (header, metadata, tensor table) and checks that every tensor's data lies
    /// inside the file.
    pub fn parse(bytes: Vec<u8>) -> Result<Self> {
        let mut r = Reader {
            bytes: &bytes,
            pos: 0,
            budget: metadata_budget(bytes.len()),
        };
        let magic = r.take(4, "magic")?;
        if magic != MAGIC {
            return Err(Error::Format(format!(
                "not a GGUF file (magic {magic:02x?}, expected \"GGUF\")"
            )));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::Unsupported(format!(
                "GGUF version {version} (supported: 2, 3)"
            )));
        }
        // Each tensor entry takes at least 8 + 4 + 4 + 8 bytes; each key-value at least 8 + 4 + 1.
        let n_tensors = r.count(24, "tensor count")?;
        let n_kv = r.count(13, "metadata count")?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = r.string(&format!("metadata key #{i}"))?;
            let ty = r.u32(&format!("type of metadata {key}"))?;
            let value = r.value(ty, &format!("metadata {key}"), 0)?;
            // Keys are unique in GGUF; a second value would silently replace the first.
            if metadata.contains_key(&key) {
                return Err(Error::Format(format!("metadata key {key} appears twice")));
            }
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut names = std::collections::BTreeSet::new();
        for i in 0..n_tensors {
            let name = r.string(&format!("name of tensor #{i}"))?;
            // Names are unique in GGUF: lookups by name would see only the first of two.
            if !names.insert(name.clone()) {
                return Err(Error::Format(format!("tensor {name} appears twice")));
            }
            let n_dims = r.u32(&format!("dimension count of {name}"))?;
            if n_dims == 0 || n_dims > 4 {
                return Err(Error::Format(format!(
                    "tensor {name} has {n_dims} dimensions (1 to 4 allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(r.u64(&format!("dimension {d} of {name}"))?);
            }
            let ty = GgmlType::from_id(r.u32(&format!("type of {name}"))?)
                .map_err(|e| Error::Unsupported(format!("tensor {name}: {e}")))?;
            let offset = r.u64(&format!("offset of {name}"))?;
            let n_values = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    Error::Format(format!("tensor {name}: dimensions {dims:?} overflow"))
                })?;
            let n_bytes = ty
                .bytes_for(n_values)
                .map_err(|e| Error::Format(format!("tensor {name}: {e}")))?;
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                n_values,
                n_bytes,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(Error::Format(format!(
                        "general.alignment {v:?} is not a power of two"
                    )));
                }
            },
        };
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        for t in &tensors {
            if t.offset % alignment != 0 {
                return Err(Error::Format(format!(
                    "tensor {} offset {} is not a multiple of the alignment {alignment}",
                    t.name, t.offset
                )));
            }
            let end = data_start
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.n_bytes as u64));
            if end.is_none_or(|e| e > bytes.len() as u64) {
                return Err(Error::Format(format!(
                    "tensor {} ({} bytes at data offset {}) runs past the end of the file ({} bytes): truncated?",
                    t.name,
                    t.n_bytes,
                    t.offset,
                    bytes.len()
                )));
            }
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            data_start: data_start as usize,
            bytes,
        })
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    fn require(&self, key: &str) -> Result<&MetaValue> {
        self.meta(key)
            .ok_or_else(|| Error::Format(format!("GGUF metadata {key} is missing")))
    }

    /// A string metadata value.
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            MetaValue::String(s) => Ok(s),
            v => Err(Error::Format(format!(
                "GGUF metadata {key} is {v:?}, not a string"
            ))),
        }
    }

    /// A non-negative integer metadata value (any integer width).
    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| {
            Error::Format(format!(
                "GGUF metadata {key} is {v:?}, not a non-negative integer"
            ))
        })
    }

    /// A numeric metadata value as f64.
    pub fn meta_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64()
            .ok_or_else(|| Error::Format(format!("GGUF metadata {key} is {v:?}, not a number")))
    }

    /// An array metadata value.
    pub fn meta_array(&self, key: &str) -> Result<&[MetaValue]> {
        match self.require(key)? {
            MetaValue::Array(a) => Ok(a),
            v => Err(Error::Format(format!(
                "GGUF metadata {key} is {}, not an array",
                short(v)
            ))),
        }
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn meta_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.meta_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                MetaValue::String(s) => Ok(s.as_str()),
                v => Err(Error::Format(format!(
                    "GGUF metadata {key}[{i}] is {}, not a string",
                    short(v)
                ))),
            })
            .collect()
    }

    /// An array of integers as i64 (e.g. `tokenizer.ggml.token_type`).
    pub fn meta_int_array(&self, key: &str) -> Result<Vec<i64>> {
        self.meta_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64().ok_or_else(|| {
                    Error::Format(format!(
                        "GGUF metadata {key}[{i}] is {}, not an integer",
                        short(v)
                    ))
                })
            })
            .collect()
    }

    /// The tensor table entry for `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::Format(format!("GGUF tensor {name} is missing")))
    }

    /// The raw bytes of a tensor.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_start + info.offset as usize;
        &self.bytes[start..start + info.n_bytes]
    }

    /// A tensor dequantized to f32, with its shape outermost first (PyTorch order: ggml's dims
    /// reversed).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self.tensor_info(name)?;
        let mut out = vec![0f32; info.n_values];
        quant::dequantize(info.ty, self.tensor_bytes(info), &mut out)
            .map_err(|e| Error::Format(format!("tensor {name}: {e}")))?;
        let shape = info.dims.iter().rev().map(|&d| d as usize).collect();
        Ok((shape, out))
    }
}

/// A short description of a metadata value for error messages (arrays can hold 49152 strings).
fn short(v: &MetaValue) -> String {
    match v {
        MetaValue::Array(a) => format!("an array of {}", a.len()),
        v => format!("{v:?}"),
    }
}
