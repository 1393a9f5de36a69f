//! The EAGLE-3 baseline drafter (docs/eagle3-forward.md): config, weights with the EAGLE / SpecForge
//! names, the committed context cache with its separate draft region, the one-layer forward, and a
//! session that grows EAGLE-2 dynamic trees into the library's [`DraftTree`](crate::tree::DraftTree).
//!
//! The token embedding E is the checkpoint's own `embed_tokens.weight` when it carries one
//! ([`Eagle3Drafter::has_own_embedding`]); otherwise it is the target's, borrowed: every forward takes
//! it as an argument (`vocab x hidden` f32, row-major) and uses it raw. With an own embedding the
//! argument is ignored (it may be empty).

mod attention;
mod cache;
mod config;
mod forward;
mod random;
mod session;
mod weights;

use std::path::Path;
use std::vec::Vec;

pub use cache::Eagle3Cache;
pub use config::Eagle3Config;
pub use forward::{Eagle3Output, Eagle3Scratch};
pub use random::write_random_eagle3;
pub use session::{
    DEFAULT_EAGLE3_BUDGET, DEFAULT_EAGLE3_DEPTH, DEFAULT_EAGLE3_TOP_K, Eagle3Candidates,
    Eagle3Policy, Eagle3Session,
};

use crate::cpu::Pool;
use crate::io::LoadError;
use crate::io::safetensors::SafeTensors;
use weights::Weights;

/// A loaded EAGLE-3 drafter: immutable, shareable across threads (sessions hold the mutable state).
pub struct Eagle3Drafter {
    cfg: Eagle3Config,
    w: Weights,
    /// `f32(1 / theta^(2i/d))`, computed in f64 (docs/drafter-forward.md).
    inv_freq: Vec<f32>,
    pool: std::sync::Mutex<std::sync::Arc<Pool>>,
}

impl Eagle3Drafter {
    /// Stores every weight matrix as bf16 (round to nearest even): half the bytes, and on CPUs with
    /// AVX512_BF16 the matmuls multiply bf16 pairs with f32 accumulation (activations are rounded to
    /// bf16 once per matmul). Norms and all other arithmetic stay f32.
    pub fn use_bf16_weights(&mut self) {
        self.w.convert_to_bf16();
    }

    /// Loads `config.json` and `model.safetensors` from a directory; forwards run on `threads` threads.
    pub fn load_dir(dir: &Path, threads: usize) -> Result<Self, LoadError> {
        let (text, origin) = super::any::read_config(dir)?;
        let cfg = Eagle3Config::from_json(&text, &origin)?;
        let st = SafeTensors::open(&dir.join("model.safetensors"))?;
        Self::from_safetensors(cfg, &st, threads)
    }

    /// Builds a drafter from a config and a parsed checkpoint (names with or without `model.`).
    pub fn from_safetensors(
        cfg: Eagle3Config,
        st: &SafeTensors,
        threads: usize,
    ) -> Result<Self, LoadError> {
        let w = Weights::load(&cfg, st)?;
        Ok(Eagle3Drafter {
            inv_freq: crate::drafter::ops::rope_inv_freq(cfg.head_dim, cfg.rope_theta),
            cfg,
            w,
            pool: std::sync::Mutex::new(Pool::shared(threads)),
        })
    }

    /// The LM head, the draft-to-target map and the pool's thread count: what an online adapter
    /// copies (`drafter::online`).
    pub(crate) fn head_parts(&self) -> (&crate::cpu::Matrix, &[u32], usize) {
        let threads = self.pool.lock().map_or(1, |p| p.threads());
        (&self.w.lm_head, &self.w.draft_to_target, threads)
    }

    /// The drafter's hyper-parameters.
    pub fn config(&self) -> &Eagle3Config {
        &self.cfg
    }

    /// Width of one target feature row, `3 H_t`.
    pub fn feature_width(&self) -> usize {
        self.cfg.feature_width()
    }

    /// Target vocabulary V (rows of the token embedding; tree tokens are below it).
    pub fn vocab(&self) -> usize {
        self.cfg.vocab
    }

    /// Whether the checkpoint carries its own `embed_tokens.weight`, used in place of the target's.
    pub fn has_own_embedding(&self) -> bool {
        self.w.embed.is_some()
    }

    /// Draft-vocabulary id to target id (`id + d2t[id]`).
    pub fn draft_to_target(&self, draft_id: usize) -> Option<u32> {
        self.w.draft_to_target.get(draft_id).copied()
    }

    /// An empty cache for `capacity` committed entries and `draft_capacity` draft rows.
    pub fn new_cache(&self, capacity: usize, draft_capacity: usize) -> Eagle3Cache {
        self.try_new_cache(capacity, draft_capacity)
            .expect("EAGLE-3 cache allocation (use try_new_cache to handle failure)")
    }

    /// [`new_cache`](Self::new_cache) that answers an error instead of aborting when the memory
    /// cannot be had.
    pub fn try_new_cache(
        &self,
        capacity: usize,
        draft_capacity: usize,
    ) -> Result<Eagle3Cache, crate::error::Error> {
        Eagle3Cache::try_new(&self.cfg, capacity, draft_capacity)
    }

    /// The embedding the forwards use: the checkpoint's own, else the borrowed one.
    fn embedding<'a>(&'a self, borrowed: &'a [f32]) -> &'a [f32] {
        self.w.embed.as_deref().unwrap_or(borrowed)
    }
}
