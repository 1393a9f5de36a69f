//! The EAGLE-3 drafter's K/V storage: the committed context (one row per committed entry, append-only)
//! and the draft region (rows written by the drafting steps of the tree being grown, each with the row
//! of its parent node). Both are GQA-compact and head-major (per KV head a contiguous `rows x head_dim`
//! block) so one head's visible keys are a single slice for the score matmul. Keys are post-RoPE.

use std::vec::Vec;

use crate::error::Error;

use super::Eagle3Config;

/// Committed cache plus draft region of one sequence, with capacities fixed at creation.
pub struct Eagle3Cache {
    /// `kv_heads x capacity x head_dim` committed keys.
    pub(crate) k: Vec<f32>,
    /// Committed values, same layout.
    pub(crate) v: Vec<f32>,
    pub(crate) entries: usize,
    pub(crate) capacity: usize,
    pub(crate) last_position: Option<u32>,
    /// `kv_heads x draft_capacity x head_dim` draft keys.
    pub(crate) dk: Vec<f32>,
    /// Draft values, same layout.
    pub(crate) dv: Vec<f32>,
    /// Parent draft row of every draft row (-1: a child of the root).
    pub(crate) draft_parent: Vec<i32>,
    pub(crate) draft_capacity: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Eagle3Cache {
    /// A cache for `capacity` entries and `draft_capacity` draft rows, or [`Error::OutOfMemory`] when
    /// the memory cannot be had (never an abort).
    pub(crate) fn try_new(
        c: &Eagle3Config,
        capacity: usize,
        draft_capacity: usize,
    ) -> Result<Self, Error> {
        let row = c.kv_heads * c.head_dim;
        let size = |n: usize| {
            n.checked_mul(row).ok_or(Error::Capacity {
                what: "EAGLE-3 cache entries (size overflows)",
                capacity: usize::MAX / row.max(1),
            })
        };
        let mut draft_parent = Vec::new();
        draft_parent
            .try_reserve_exact(draft_capacity)
            .map_err(|_| Error::OutOfMemory)?;
        Ok(Eagle3Cache {
            k: crate::drafter::try_zeros(size(capacity)?)?,
            v: crate::drafter::try_zeros(size(capacity)?)?,
            entries: 0,
            capacity,
            last_position: None,
            dk: crate::drafter::try_zeros(size(draft_capacity)?)?,
            dv: crate::drafter::try_zeros(size(draft_capacity)?)?,
            draft_parent,
            draft_capacity,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
        })
    }

    /// Committed entries.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Maximum committed entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Position of the last committed entry.
    pub fn last_position(&self) -> Option<u32> {
        self.last_position
    }

    /// Rows in the draft region.
    pub fn draft_rows(&self) -> usize {
        self.draft_parent.len()
    }

    /// Maximum draft rows.
    pub fn draft_capacity(&self) -> usize {
        self.draft_capacity
    }

    /// Parent row of every draft row (-1: a child of the root).
    pub fn draft_parents(&self) -> &[i32] {
        &self.draft_parent
    }

    /// Forgets every committed entry and draft row (buffers are kept).
    pub fn clear(&mut self) {
        self.entries = 0;
        self.last_position = None;
        self.clear_draft();
    }

    /// Drops the draft region (the committed cache is untouched).
    pub fn clear_draft(&mut self) {
        self.draft_parent.clear();
    }

    /// Committed keys `entries x kv_heads x head_dim` (for inspection and tests; allocates).
    pub fn keys_row_major(&self) -> Vec<f32> {
        self.row_major(&self.k, self.capacity, self.entries)
    }

    /// Committed values, like [`keys_row_major`](Self::keys_row_major).
    pub fn values_row_major(&self) -> Vec<f32> {
        self.row_major(&self.v, self.capacity, self.entries)
    }

    /// Draft keys `draft_rows x kv_heads x head_dim` (allocates).
    pub fn draft_keys_row_major(&self) -> Vec<f32> {
        self.row_major(&self.dk, self.draft_capacity, self.draft_rows())
    }

    /// Draft values, like [`draft_keys_row_major`](Self::draft_keys_row_major).
    pub fn draft_values_row_major(&self) -> Vec<f32> {
        self.row_major(&self.dv, self.draft_capacity, self.draft_rows())
    }

    fn row_major(&self, data: &[f32], cap_rows: usize, rows: usize) -> Vec<f32> {
        let d = self.head_dim;
        let mut out = Vec::with_capacity(rows * self.kv_heads * d);
        for r in 0..rows {
            for h in 0..self.kv_heads {
                let src = (h * cap_rows + r) * d;
                out.extend_from_slice(&data[src..src + d]);
            }
        }
        out
    }
}
