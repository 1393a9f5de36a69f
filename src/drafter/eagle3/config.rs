//! The EAGLE-3 drafter's config.json (docs/eagle3-forward.md, "Config"): the field names shared by
//! EAGLE, SpecForge and SGLang. Everything outside the contract (more than one decoder layer, scaled
//! RoPE, a biased `fc`) is rejected here, so a loaded drafter always computes the contract's forward.

use std::string::String;
use std::vec::Vec;

use crate::io::LoadError;
use crate::load_err;

/// EAGLE-3 drafter hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Eagle3Config {
    /// Drafter width H (`hidden_size`).
    pub hidden: usize,
    /// Query heads (`num_attention_heads`).
    pub heads: usize,
    /// Key/value heads (`num_key_value_heads`).
    pub kv_heads: usize,
    /// Head dimension (`head_dim`, default `hidden / heads`).
    pub head_dim: usize,
    /// SwiGLU inner size (`intermediate_size`).
    pub ffn: usize,
    /// Target vocabulary V (`vocab_size`): rows of the token embedding.
    pub vocab: usize,
    /// Draft vocabulary V_d (`draft_vocab_size`, default V): rows of `lm_head`.
    pub draft_vocab: usize,
    /// Width of one target feature layer H_t (`target_hidden_size`, default H); features are `3 H_t`.
    pub target_hidden: usize,
    /// RMSNorm epsilon (`rms_norm_eps`, default 1e-6).
    pub rms_eps: f32,
    /// RoPE base (`rope_theta`, default 10000: the EAGLE trainer's value).
    pub rope_theta: f32,
    /// Target layers whose outputs are the features (`aux_layer_ids`; absent: the EAGLE-3 default
    /// [`default_aux_layers`](crate::drafter::config::default_aux_layers) of the target).
    pub aux_layer_ids: Option<Vec<usize>>,
}

impl Eagle3Config {
    /// Width of one feature row, `3 H_t`.
    pub fn feature_width(&self) -> usize {
        3 * self.target_hidden
    }

    /// Parses config.json text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, LoadError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| load_err!("{origin}: not valid JSON: {e}"))?;
        let absent = |key: &str| matches!(v.get(key), None | Some(serde_json::Value::Null));
        let int = |key: &str| -> Result<Option<usize>, LoadError> {
            if absent(key) {
                return Ok(None);
            }
            v[key]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| load_err!("{origin}: {key} must be a non-negative integer"))
        };
        let need = |key: &str| -> Result<usize, LoadError> {
            int(key)?.ok_or_else(|| load_err!("{origin}: {key} is missing"))
        };
        let float = |key: &str, default: f64| -> Result<f32, LoadError> {
            if absent(key) {
                return Ok(default as f32);
            }
            v[key]
                .as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| load_err!("{origin}: {key} must be a number"))
        };
        // Outside the contract: say so rather than compute something else.
        let layers = int("num_hidden_layers")?.unwrap_or(1);
        if layers != 1 {
            return Err(load_err!(
                "{origin}: num_hidden_layers is {layers}; the EAGLE-3 drafter has exactly one decoder layer"
            ));
        }
        if !absent("rope_scaling") {
            return Err(load_err!(
                "{origin}: rope_scaling is set; scaled RoPE is not supported for EAGLE-3 drafters"
            ));
        }
        if v.get("bias").and_then(|b| b.as_bool()) == Some(true) {
            return Err(load_err!(
                "{origin}: bias is true; a biased fc is not supported for EAGLE-3 drafters"
            ));
        }
        let hidden = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        let vocab = need("vocab_size")?;
        let c = Eagle3Config {
            hidden,
            heads,
            kv_heads: need("num_key_value_heads")?,
            head_dim: int("head_dim")?.unwrap_or(hidden.checked_div(heads).unwrap_or(0)),
            ffn: need("intermediate_size")?,
            vocab,
            draft_vocab: int("draft_vocab_size")?.unwrap_or(vocab),
            target_hidden: int("target_hidden_size")?.unwrap_or(hidden),
            rms_eps: float("rms_norm_eps", 1e-6)?,
            rope_theta: float("rope_theta", 10000.0)?,
            aux_layer_ids: crate::drafter::config::parse_aux_layer_ids(&v, origin)?,
        };
        match c.problem() {
            Some(p) => Err(load_err!("{origin}: {p}")),
            None => Ok(c),
        }
    }

    fn problem(&self) -> Option<String> {
        let bounds = crate::drafter::config::dimension_problem(&[
            ("hidden_size", self.hidden),
            ("num_attention_heads", self.heads),
            ("num_key_value_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("intermediate_size", self.ffn),
            ("vocab_size", self.vocab),
            ("draft_vocab_size", self.draft_vocab),
            ("target_hidden_size", self.target_hidden),
        ]);
        if bounds.is_some() {
            bounds
        } else if self.hidden == 0
            || self.heads == 0
            || self.kv_heads == 0
            || self.ffn == 0
            || self.target_hidden == 0
        {
            Some("sizes must be positive".into())
        } else if let Some(p) = crate::drafter::config::attention_shape_problem(
            self.heads,
            self.kv_heads,
            self.head_dim,
        ) {
            Some(p)
        } else if self.draft_vocab == 0 || self.draft_vocab > self.vocab {
            Some(std::format!(
                "draft_vocab_size {} must be in 1..=vocab_size ({})",
                self.draft_vocab,
                self.vocab
            ))
        } else if self.vocab > i32::MAX as usize {
            Some("vocab_size must fit a tree token (i32)".into())
        } else if self.rms_eps.is_nan()
            || self.rms_eps <= 0.0
            || self.rope_theta.is_nan()
            || self.rope_theta <= 0.0
        {
            Some("rms_norm_eps and rope_theta must be positive".into())
        } else {
            None
        }
    }
}
