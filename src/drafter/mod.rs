//! The SpecBlock drafter (feature `std`): config, weights with the authors' tensor names, the
//! GQA-compact context cache, and the block forward of docs/drafter-forward.md.
//!
//! The target's token embedding is borrowed: every forward takes it as an argument (`vocab x hidden`
//! f32, row-major), so the drafter never copies it.

pub mod config;
mod forward;
mod weights;

use std::path::Path;
use std::string::ToString;
use std::vec::Vec;

pub use config::{ContextProtocol, DrafterConfig};
pub use forward::BlockOutput;

use crate::cpu::Pool;
use crate::io::LoadError;
use crate::io::safetensors::SafeTensors;
use crate::load_err;
use weights::Weights;

/// A loaded drafter: immutable, shareable across threads (sessions hold the mutable state).
pub struct Drafter {
    cfg: DrafterConfig,
    w: Weights,
    /// `rope_inv_freq[i] = f32(1 / theta^(2i/d))`, computed in f64.
    inv_freq: Vec<f32>,
    pool: std::sync::Mutex<Pool>,
}

/// The drafter's per-sequence context cache: for each layer, post-RoPE keys and values of every slot of
/// every committed entry (KV heads only), entry-major then slot, with a capacity fixed at creation.
pub struct ContextCache {
    /// Per layer: `capacity_entries * slots * kv_heads * head_dim` keys.
    k: Vec<Vec<f32>>,
    /// Per layer: values, same layout.
    v: Vec<Vec<f32>>,
    /// Base position of each committed entry.
    bases: Vec<u32>,
    capacity: usize,
}

impl ContextCache {
    /// Committed entries.
    pub fn entries(&self) -> usize {
        self.bases.len()
    }

    /// Maximum entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Base position of the last committed entry.
    pub fn last_base(&self) -> Option<u32> {
        self.bases.last().copied()
    }

    /// Forgets every entry (buffers are kept).
    pub fn clear(&mut self) {
        self.bases.clear();
    }

    /// Keys of one layer for the first `rows` cache rows (`rows x kv_heads x head_dim`).
    pub fn keys(&self, layer: usize, rows: usize, row_len: usize) -> &[f32] {
        &self.k[layer][..rows * row_len]
    }

    /// Values of one layer for the first `rows` cache rows.
    pub fn values(&self, layer: usize, rows: usize, row_len: usize) -> &[f32] {
        &self.v[layer][..rows * row_len]
    }
}

impl Drafter {
    /// Loads `config.json` and `model.safetensors` from a directory.
    pub fn load_dir(dir: &Path, threads: usize) -> Result<Self, LoadError> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| load_err!("cannot read {}: {e}", cfg_path.display()))?;
        let cfg = DrafterConfig::from_json(&text, &cfg_path.display().to_string())?;
        let st = SafeTensors::open(&dir.join("model.safetensors"))?;
        Self::from_safetensors(cfg, &st, threads)
    }

    /// Builds a drafter from a config and a parsed checkpoint (the authors' tensor names).
    pub fn from_safetensors(
        cfg: DrafterConfig,
        st: &SafeTensors,
        threads: usize,
    ) -> Result<Self, LoadError> {
        let w = Weights::load(&cfg, st)?;
        let d = cfg.head_dim;
        let inv_freq = (0..d / 2)
            .map(|i| (1.0 / (cfg.rope_theta as f64).powf(2.0 * i as f64 / d as f64)) as f32)
            .collect();
        Ok(Drafter {
            cfg,
            w,
            inv_freq,
            pool: std::sync::Mutex::new(Pool::new(threads)),
        })
    }

    /// The drafter's hyper-parameters.
    pub fn config(&self) -> &DrafterConfig {
        &self.cfg
    }

    /// Draft-vocabulary id to target id (`id + d2t[id]`).
    pub fn draft_to_target(&self, draft_id: usize) -> Option<u32> {
        self.w.draft_to_target.get(draft_id).copied()
    }

    /// An empty context cache for `capacity` entries.
    pub fn new_cache(&self, capacity: usize) -> ContextCache {
        let row = self.cfg.slots * self.cfg.kv_heads * self.cfg.head_dim;
        ContextCache {
            k: (0..self.cfg.layers)
                .map(|_| std::vec![0.0; capacity * row])
                .collect(),
            v: (0..self.cfg.layers)
                .map(|_| std::vec![0.0; capacity * row])
                .collect(),
            bases: Vec::with_capacity(capacity),
            capacity,
        }
    }
}
