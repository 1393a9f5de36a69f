//! The target's KV cache for one sequence, GQA-compact and head-major: per layer and KV head, a
//! contiguous `capacity x head_dim` block of keys (and one of values), so attention reads each head's
//! keys as one matrix. Rows are in cache order, which need not equal position order after a tree
//! verify: positions are carried by RoPE, not by the row index.

use crate::error::{Error, Result};
use crate::weights::LlamaConfig;

/// KV cache of one sequence.
pub struct KvCache {
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) n_kv_heads: usize,
    pub(crate) head_dim: usize,
    capacity: usize,
    len: usize,
}

impl KvCache {
    /// An empty cache for `capacity` tokens.
    pub fn new(cfg: &LlamaConfig, capacity: usize) -> Self {
        let size = cfg.n_layers * cfg.n_kv_heads * capacity * cfg.head_dim;
        KvCache {
            k: vec![0.0; size],
            v: vec![0.0; size],
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            capacity,
            len: 0,
        }
    }

    /// Offset of row 0 of (layer, KV head) in `k` / `v`.
    #[inline]
    pub(crate) fn head_offset(&self, layer: usize, kv_head: usize) -> usize {
        (layer * self.n_kv_heads + kv_head) * self.capacity * self.head_dim
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
        let hd = self.head_dim;
        let blocks = self.k.len() / (self.capacity * hd).max(1);
        for block in 0..blocks {
            let off = block * self.capacity * hd;
            for (dst, &src) in keep.iter().enumerate() {
                let (d, s) = (off + (base + dst) * hd, off + (base + src as usize) * hd);
                if d != s {
                    self.k.copy_within(s..s + hd, d);
                    self.v.copy_within(s..s + hd, d);
                }
            }
        }
        self.len = base + keep.len();
        Ok(())
    }
}
