//! The SpecBlock drafter (feature `std`): config, weights with the authors' tensor names, the
//! GQA-compact context cache, and the block forward of docs/drafter-forward.md.
//!
//! The target's token embedding is borrowed: every forward takes it as an argument (`vocab x hidden`
//! f32, row-major), so the drafter never copies it.
//!
//! [`eagle3`] holds the EAGLE-3 baseline drafter (docs/eagle3-forward.md) with the same session API.
//!
//! [`adapter`] holds the online head adapter (a low-rank residual before the draft LM head, a logit
//! bias and a rank-head delta) and its trainer, fed by verifier feedback.

pub mod adapter;
mod any;
pub mod config;
pub mod eagle3;
mod forward;
pub mod online;
pub mod ops;
mod plain_queue;
mod session;
mod speculator;
mod vocab_map;
mod weights;

use std::path::Path;
use std::string::ToString;
use std::vec::Vec;

pub use any::{AnyDrafter, DraftSession, DrafterKind};
pub use config::{
    AUX_LAYERS, ContextProtocol, DrafterConfig, default_aux_layers, resolve_aux_layers,
};
pub use forward::{BlockOutput, Scratch};
pub use session::{DEFAULT_SPECBLOCK_BUDGET, DraftPolicy, SpecBlockSession};
pub use speculator::{AnySession, Speculator, SpeculatorStats, default_arms};

use crate::cpu::Pool;
use crate::error::Error;
use crate::io::LoadError;
use crate::io::safetensors::SafeTensors;
use crate::load_err;
use weights::Weights;

/// The name of [`SpecBlockDrafter`] before both drafter kinds were named alike.
#[deprecated(note = "renamed SpecBlockDrafter (beside Eagle3Drafter)")]
pub type Drafter = SpecBlockDrafter;

/// The name of [`SpecBlockSession`] before both drafter kinds were named alike.
#[deprecated(note = "renamed SpecBlockSession (beside Eagle3Session)")]
pub type Session<'d> = SpecBlockSession<'d>;

/// A loaded drafter: immutable, shareable across threads (sessions hold the mutable state).
pub struct SpecBlockDrafter {
    cfg: DrafterConfig,
    w: Weights,
    /// `rope_inv_freq[i] = f32(1 / theta^(2i/d))`, computed in f64.
    inv_freq: Vec<f32>,
    pool: std::sync::Mutex<std::sync::Arc<Pool>>,
}

/// The drafter's per-sequence context cache: for each layer, post-RoPE keys and values of every slot of
/// every committed entry, GQA-compact and head-major (per KV head a contiguous `rows x head_dim` block,
/// rows entry-major then slot), with a capacity fixed at creation.
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

    /// Drops the last committed entry (its rows are overwritten by the next append); returns its base.
    pub fn pop(&mut self) -> Option<u32> {
        self.bases.pop()
    }

    /// Keys of one layer for the first `rows` cache rows, laid out `rows x kv_heads x head_dim` (for
    /// inspection and tests; allocates).
    pub fn keys_row_major(
        &self,
        layer: usize,
        rows: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Vec<f32> {
        Self::row_major(
            &self.k[layer],
            self.k[layer].len() / (kv_heads * head_dim).max(1),
            rows,
            kv_heads,
            head_dim,
        )
    }

    /// Values of one layer, like [`keys_row_major`](Self::keys_row_major).
    pub fn values_row_major(
        &self,
        layer: usize,
        rows: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Vec<f32> {
        Self::row_major(
            &self.v[layer],
            self.v[layer].len() / (kv_heads * head_dim).max(1),
            rows,
            kv_heads,
            head_dim,
        )
    }

    fn row_major(
        data: &[f32],
        cap_rows: usize,
        rows: usize,
        kv_heads: usize,
        d: usize,
    ) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows * kv_heads * d);
        for r in 0..rows {
            for h in 0..kv_heads {
                let src = (h * cap_rows + r) * d;
                out.extend_from_slice(&data[src..src + d]);
            }
        }
        out
    }
}

impl SpecBlockDrafter {
    /// Stores every weight matrix as bf16 (round to nearest even): half the bytes, and on CPUs with
    /// AVX512_BF16 the matmuls multiply bf16 pairs with f32 accumulation (activations are rounded to
    /// bf16 once per matmul). Norms and all other arithmetic stay f32.
    pub fn use_bf16_weights(&mut self) {
        self.w.convert_to_bf16();
    }

    /// Loads `config.json` and `model.safetensors` from a directory.
    pub fn load_dir(dir: &Path, threads: usize) -> Result<Self, LoadError> {
        let (text, origin) = any::read_config(dir)?;
        let cfg = DrafterConfig::from_json(&text, &origin)?;
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
        let inv_freq = ops::rope_inv_freq(cfg.head_dim, cfg.rope_theta);
        Ok(SpecBlockDrafter {
            cfg,
            w,
            inv_freq,
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
    pub fn config(&self) -> &DrafterConfig {
        &self.cfg
    }

    /// Draft-vocabulary id to target id (`id + d2t[id]`).
    pub fn draft_to_target(&self, draft_id: usize) -> Option<u32> {
        self.w.draft_to_target.get(draft_id).copied()
    }

    /// An empty context cache for `capacity` entries.
    pub fn new_cache(&self, capacity: usize) -> ContextCache {
        self.try_new_cache(capacity)
            .expect("context cache allocation (use try_new_cache to handle failure)")
    }

    /// [`new_cache`](Self::new_cache) that answers [`Error::OutOfMemory`] (or a capacity error for a size
    /// that overflows) instead of aborting when the memory cannot be had.
    pub fn try_new_cache(&self, capacity: usize) -> Result<ContextCache, Error> {
        let row = self.cfg.slots * self.cfg.kv_heads * self.cfg.head_dim;
        let n = capacity.checked_mul(row).ok_or(Error::Capacity {
            what: "drafter context entries (size overflows)",
            capacity: usize::MAX / row.max(1),
        })?;
        let mut k = Vec::new();
        let mut v = Vec::new();
        for _ in 0..self.cfg.layers {
            k.push(try_zeros(n)?);
            v.push(try_zeros(n)?);
        }
        let mut bases = Vec::new();
        bases
            .try_reserve_exact(capacity)
            .map_err(|_| Error::OutOfMemory)?;
        Ok(ContextCache {
            k,
            v,
            bases,
            capacity,
        })
    }
}

/// `n` zeros, or [`Error::OutOfMemory`] when they cannot be allocated (never an abort).
pub(crate) fn try_zeros(n: usize) -> Result<Vec<f32>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory)?;
    v.resize(n, 0.0);
    Ok(v)
}

/// Most entries a session's context may hold (about 16 M tokens).
pub const MAX_SESSION_ENTRIES: usize = 1 << 24;

/// Plain-step entries a session keeps for its drafter while the policy does not draft. A plain step
/// costs the drafter nothing: its entry waits in a queue that the next draft runs in one batched
/// forward. A run of plain steps longer than this keeps only its last `PLAIN_CONTEXT_WINDOW` entries
/// (the older ones never reach the drafter's context; positions stay exact), so that when drafting
/// does not pay, the drafter costs next to nothing per token, and a probe after a long plain run
/// catches up in one forward of at most this many entries. Output is unaffected (verification is
/// lossless); only the drafts right after a long plain run see a context with a gap.
pub const PLAIN_CONTEXT_WINDOW: usize = 16;

/// Floats a session may reserve at creation (16 GiB): larger requests are refused with a capacity error
/// naming the parameter, before anything is allocated.
pub(crate) const MAX_SESSION_FLOATS: usize = 1 << 32;

/// Writes a SpecBlock drafter with random weights (`config.json` + `model.safetensors`) into `dir`:
/// for tests and benchmarks that need a drafter of a given shape before one is trained. The draft
/// vocabulary is the first `draft_vocab` target ids. Deterministic for a seed.
pub fn write_random_drafter(
    dir: &Path,
    cfg_json: &serde_json::Value,
    seed: u64,
) -> Result<(), LoadError> {
    use crate::io::safetensors::{TensorData, serialize};
    let text = cfg_json.to_string();
    let c = DrafterConfig::from_json(&text, "random drafter config")?;
    let (h, d) = (c.hidden, c.head_dim);
    let rng = crate::rng::CounterRng::new(seed);
    let mut counter = 0u64;
    let mut normal = |n: usize, scale: f32, base: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                counter += 1;
                base + scale * (rng.uniform(counter) as f32 * 2.0 - 1.0) * 1.732
            })
            .collect()
    };
    let mut named: Vec<(std::string::String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut put = |name: std::string::String, shape: Vec<usize>, scale: f32, base: f32| {
        let n = shape.iter().product();
        let v = normal(n, scale, base);
        named.push((name, shape, v));
    };
    let fan = |n: usize| 1.0 / (n as f32).sqrt();
    put(
        "input_layer.condition_proj.weight".into(),
        std::vec![h, 3 * c.target_hidden],
        fan(3 * c.target_hidden),
        0.0,
    );
    for n in ["condition_norm", "token_norm", "query_norm"] {
        put(
            std::format!("input_layer.{n}.weight"),
            std::vec![h],
            0.1,
            1.0,
        );
    }
    put(
        "input_layer.position_queries.weight".into(),
        std::vec![c.slots, h],
        0.5,
        0.0,
    );
    put(
        "input_layer.fuse.weight".into(),
        std::vec![h, 3 * h],
        fan(3 * h),
        0.0,
    );
    for l in 0..c.layers {
        let p = |s: &str| std::format!("layers.{l}.{s}.weight");
        put(p("input_layernorm"), std::vec![h], 0.1, 1.0);
        put(p("post_attention_layernorm"), std::vec![h], 0.1, 1.0);
        put(
            p("self_attn.q_proj"),
            std::vec![c.heads * d, h],
            fan(h),
            0.0,
        );
        put(
            p("self_attn.k_proj"),
            std::vec![c.kv_heads * d, h],
            fan(h),
            0.0,
        );
        put(
            p("self_attn.v_proj"),
            std::vec![c.kv_heads * d, h],
            fan(h),
            0.0,
        );
        put(
            p("self_attn.o_proj"),
            std::vec![h, c.heads * d],
            fan(c.heads * d),
            0.0,
        );
        put(p("mlp.gate_proj"), std::vec![c.ffn, h], fan(h), 0.0);
        put(p("mlp.up_proj"), std::vec![c.ffn, h], fan(h), 0.0);
        put(p("mlp.down_proj"), std::vec![h, c.ffn], fan(c.ffn), 0.0);
    }
    for l in 0..c.layers - 1 {
        put(
            std::format!("shift_proj.{l}.weight"),
            std::vec![h, 2 * h],
            fan(2 * h),
            0.0,
        );
    }
    put("norm.weight".into(), std::vec![h], 0.1, 1.0);
    put(
        "lm_head.weight".into(),
        std::vec![c.draft_vocab, h],
        3.0 * fan(h),
        0.0,
    );
    put(
        "rank_head.0.weight".into(),
        std::vec![weights::RANK_HIDDEN, h + weights::RANK_FEATURES],
        fan(h + weights::RANK_FEATURES),
        0.0,
    );
    put(
        "rank_head.2.weight".into(),
        std::vec![c.rank_classes, weights::RANK_HIDDEN],
        fan(weights::RANK_HIDDEN),
        0.0,
    );
    let d2t = std::vec![0i64; c.draft_vocab];
    let mut tensors: Vec<(&str, Vec<usize>, TensorData<'_>)> = named
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.clone(), TensorData::F32(v)))
        .collect();
    tensors.push(("d2t", std::vec![c.draft_vocab], TensorData::I64(&d2t)));
    let bytes = serialize(&tensors)?;
    std::fs::create_dir_all(dir).map_err(|e| load_err!("create {}: {e}", dir.display()))?;
    std::fs::write(dir.join("config.json"), text)
        .map_err(|e| load_err!("write config.json: {e}"))?;
    std::fs::write(dir.join("model.safetensors"), bytes)
        .map_err(|e| load_err!("write model.safetensors: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod old_names {
    /// The names before the rename still name the same types, for code written against them.
    #[test]
    #[allow(deprecated)]
    fn deprecated_names_are_the_renamed_types() {
        use core::any::TypeId;
        assert_eq!(
            TypeId::of::<super::Drafter>(),
            TypeId::of::<super::SpecBlockDrafter>()
        );
        assert_eq!(
            TypeId::of::<super::Session<'static>>(),
            TypeId::of::<super::SpecBlockSession<'static>>()
        );
    }
}
