//! The target's KV cache for one sequence: per layer, `capacity` rows of `n_kv_heads * head_dim` keys
//! and values (GQA-compact), rows in cache order (which need not equal position order after a tree
//! verify: positions are carried by RoPE, not by the row index).

use crate::error::{Error, Result};
use crate::weights::LlamaConfig;

/// KV cache of one sequence.
pub struct KvCache {
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) row: usize,
    pub(crate) layer_stride: usize,
    capacity: usize,
    len: usize,
}

impl KvCache {
    /// An empty cache for `capacity` tokens.
    pub fn new(cfg: &LlamaConfig, capacity: usize) -> Self {
        let row = cfg.n_kv_heads * cfg.head_dim;
        let layer_stride = row * capacity;
        KvCache {
            k: vec![0.0; layer_stride * cfg.n_layers],
            v: vec![0.0; layer_stride * cfg.n_layers],
            row,
            layer_stride,
            capacity,
            len: 0,
        }
    }

    /// Rows in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no row is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum rows.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drops every row from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Reserves `n` more rows (written by the forward pass); errors if they do not fit.
    pub(crate) fn grow(&mut self, n: usize) -> Result<usize> {
        let start = self.len;
        if start + n > self.capacity {
            return Err(Error::InvalidArgument(format!(
                "KV cache holds {} rows; {start} used + {n} new exceed it",
                self.capacity
            )));
        }
        self.len += n;
        Ok(start)
    }

    /// Keeps, of the rows from `base` on, only `keep` (indices relative to `base`, strictly
    /// increasing), moved down to `base..base + keep.len()`: the tree rows of the accepted path after a
    /// verify (the library's keep-list).
    pub fn compact(&mut self, base: usize, keep: &[u32]) -> Result<()> {
        let mut prev: Option<u32> = None;
        for &r in keep {
            if prev.is_some_and(|p| r <= p) || base + r as usize >= self.len {
                return Err(Error::InvalidArgument(format!(
                    "keep-list {keep:?} must be increasing and inside the {} rows after {base}",
                    self.len.saturating_sub(base)
                )));
            }
            prev = Some(r);
        }
        let layers = self.k.len() / self.layer_stride.max(1);
        for layer in 0..layers {
            let off = layer * self.layer_stride;
            for (dst, &src) in keep.iter().enumerate() {
                let (d, s) = (
                    off + (base + dst) * self.row,
                    off + (base + src as usize) * self.row,
                );
                if d != s {
                    self.k.copy_within(s..s + self.row, d);
                    self.v.copy_within(s..s + self.row, d);
                }
            }
        }
        self.len = base + keep.len();
        Ok(())
    }
}
