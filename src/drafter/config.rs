//! The drafter's config.json: the authors' field names plus ours (docs/drafter-forward.md, "Config").

use std::string::String;
use std::vec::Vec;

use crate::error::Error;
use crate::io::LoadError;
use crate::load_err;

/// Which context-entry protocol the session follows (docs/drafter-forward.md, "Context protocol").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextProtocol {
    /// Entries pair each feature with the token that follows it, at consecutive bases (as trained).
    Training,
    /// The authors' inference bookkeeping (duplicate draft entry, shifted chain).
    Reference,
}

/// SpecBlock drafter hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct DrafterConfig {
    /// Drafter width H.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// SwiGLU inner size.
    pub ffn: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base.
    pub rope_theta: f32,
    /// Target vocabulary (rows of the borrowed embedding).
    pub vocab: usize,
    /// Draft vocabulary (LM head rows).
    pub draft_vocab: usize,
    /// Slots per block, K.
    pub slots: usize,
    /// Rank classes.
    pub rank_classes: usize,
    /// Target hidden size (features are 3x this).
    pub target_hidden: usize,
    /// Top-T logits the rank features use (>= 10).
    pub rank_topk: usize,
    /// Target layers whose outputs form the features, if given.
    pub aux_layer_ids: Option<Vec<usize>>,
    /// Context protocol.
    pub protocol: ContextProtocol,
}

impl DrafterConfig {
    /// Parses config.json text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, LoadError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| load_err!("{origin}: not valid JSON: {e}"))?;
        let int = |key: &str| -> Result<Option<usize>, LoadError> {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => x
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| load_err!("{origin}: {key} must be a non-negative integer")),
            }
        };
        let need = |key: &str| -> Result<usize, LoadError> {
            int(key)?.ok_or_else(|| load_err!("{origin}: {key} is missing"))
        };
        let float = |key: &str, default: f64| -> Result<f32, LoadError> {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(default as f32),
                Some(x) => x
                    .as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| load_err!("{origin}: {key} must be a number")),
            }
        };
        let hidden = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        let head_dim = int("head_dim")?.unwrap_or(hidden.checked_div(heads).unwrap_or(0));
        let protocol = match v.get("context_protocol").and_then(|p| p.as_str()) {
            None | Some("training") => ContextProtocol::Training,
            Some("reference") => ContextProtocol::Reference,
            Some(other) => {
                return Err(load_err!(
                    "{origin}: context_protocol {other:?} (training or reference)"
                ));
            }
        };
        let aux_layer_ids = parse_aux_layer_ids(&v, origin)?;
        let c = DrafterConfig {
            hidden,
            layers: need("num_hidden_layers")?,
            heads,
            kv_heads: need("num_key_value_heads")?,
            head_dim,
            ffn: need("intermediate_size")?,
            rms_eps: float("rms_norm_eps", 1e-6)?,
            rope_theta: float("rope_theta", 10000.0)?,
            vocab: need("vocab_size")?,
            draft_vocab: need("draft_vocab_size")?,
            slots: int("diffspec_draft_token_num")?.unwrap_or(4),
            rank_classes: int("rank_classes")?.unwrap_or(4),
            target_hidden: int("target_hidden_size")?.unwrap_or(hidden),
            rank_topk: int("rank_topk")?.unwrap_or(10),
            aux_layer_ids,
            protocol,
        };
        c.validate(origin)?;
        Ok(c)
    }

    fn validate(&self, origin: &str) -> Result<(), LoadError> {
        let bounds = dimension_problem(&[
            ("hidden_size", self.hidden),
            ("num_hidden_layers", self.layers),
            ("num_attention_heads", self.heads),
            ("num_key_value_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("intermediate_size", self.ffn),
            ("vocab_size", self.vocab),
            ("draft_vocab_size", self.draft_vocab),
            ("target_hidden_size", self.target_hidden),
            ("rank_classes", self.rank_classes),
            ("rank_topk", self.rank_topk),
            (
                "aux_layer_ids",
                self.aux_layer_ids.as_ref().map_or(0, Vec::len),
            ),
        ]);
        let problem: Option<String> = if bounds.is_some() {
            bounds
        } else if self.hidden == 0 || self.layers == 0 || self.heads == 0 || self.kv_heads == 0 {
            Some("sizes must be positive".into())
        } else if let Some(p) = attention_shape_problem(self.heads, self.kv_heads, self.head_dim) {
            Some(p)
        } else if self.slots == 0 || self.slots > 16 {
            Some(std::format!(
                "diffspec_draft_token_num {} must be 1..=16",
                self.slots
            ))
        } else if self.rank_topk < 10 || self.rank_topk > self.draft_vocab {
            Some(std::format!(
                "rank_topk {} must be >= 10 and <= draft_vocab_size",
                self.rank_topk
            ))
        } else if self.draft_vocab == 0 || self.draft_vocab > self.vocab || self.rank_classes == 0 {
            Some("draft_vocab_size must be in 1..=vocab_size and rank_classes positive".into())
        } else if self.ffn == 0 || self.target_hidden == 0 {
            Some("intermediate_size and target_hidden_size must be positive".into())
        } else if self.rms_eps.is_nan()
            || self.rms_eps <= 0.0
            || self.rope_theta.is_nan()
            || self.rope_theta <= 0.0
        {
            Some("rms_norm_eps and rope_theta must be positive".into())
        } else {
            None
        };
        match problem {
            Some(p) => Err(load_err!("{origin}: {p}")),
            None => Ok(()),
        }
    }
}

/// Upper bounds on config.json dimensions (far above any drafter in use): a file cannot make the loader
/// reserve more than a few GiB before its tensors are checked, and products of dimensions stay far from
/// overflow.
pub(crate) const DIMENSION_LIMITS: &[(&str, usize)] = &[
    ("hidden_size", 1 << 16),
    ("num_hidden_layers", 256),
    ("num_attention_heads", 1 << 10),
    ("num_key_value_heads", 1 << 10),
    ("head_dim", 1 << 12),
    ("intermediate_size", 1 << 20),
    ("vocab_size", 1 << 24),
    ("draft_vocab_size", 1 << 24),
    ("target_hidden_size", 1 << 16),
    ("rank_classes", 64),
    ("rank_topk", 1 << 24),
    ("aux_layer_ids", 1 << 10),
];

/// The first `(field, value)` above its limit in [`DIMENSION_LIMITS`], as a message naming the field.
pub(crate) fn dimension_problem(fields: &[(&str, usize)]) -> Option<std::string::String> {
    fields.iter().find_map(|&(name, value)| {
        let limit = DIMENSION_LIMITS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(usize::MAX, |&(_, l)| l);
        (value > limit).then(|| std::format!("{name} {value} is above the supported {limit}"))
    })
}

/// What is wrong with an attention shape, if anything: GQA needs the query heads to be a multiple of
/// the KV heads, and rotate-half RoPE an even, positive head dimension. Both drafters check it.
pub(crate) fn attention_shape_problem(
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Option<std::string::String> {
    if !heads.is_multiple_of(kv_heads) {
        Some(std::format!(
            "{heads} heads are not a multiple of {kv_heads} KV heads"
        ))
    } else if head_dim == 0 || !head_dim.is_multiple_of(2) {
        Some(std::format!(
            "head_dim {head_dim} must be even and positive"
        ))
    } else {
        None
    }
}

/// Layers of the target whose outputs form a drafter's features, when its config names none: the
/// EAGLE-3 choice of a low, a middle and a high layer, `[1, L/2 - 1, L - 4]` for a target of `L`
/// layers (`[1, 14, 26]` for SmolLM2-135M's 30).
pub fn default_aux_layers(target_layers: usize) -> Vec<usize> {
    std::vec![
        1,
        (target_layers / 2).saturating_sub(1),
        target_layers.saturating_sub(4)
    ]
}

/// The target layers to capture for a drafter whose config names `configured` (or none: then
/// [`default_aux_layers`]), checked against a target of `target_layers` layers: exactly
/// [`AUX_LAYERS`] indices, each below `target_layers`.
pub fn resolve_aux_layers(
    configured: Option<&[usize]>,
    target_layers: usize,
) -> Result<Vec<usize>, Error> {
    let layers = match configured {
        Some(ids) => ids.to_vec(),
        None if target_layers > AUX_LAYERS => default_aux_layers(target_layers),
        None => {
            return Err(Error::InvalidArgument(
                "the target has too few layers for the default feature layers",
            ));
        }
    };
    if layers.len() != AUX_LAYERS {
        return Err(Error::InvalidArgument(
            "aux_layer_ids must name 3 target layers",
        ));
    }
    if layers.iter().any(|&l| l >= target_layers) {
        return Err(Error::InvalidArgument(
            "the drafter's aux_layer_ids name a layer the target does not have",
        ));
    }
    Ok(layers)
}

/// Target layers whose outputs make one feature row (features are `AUX_LAYERS x target_hidden_size`).
pub const AUX_LAYERS: usize = 3;

/// `aux_layer_ids` of a config.json: absent or null, or a list of [`AUX_LAYERS`] layer indices (the
/// features' width is fixed at three target layers).
pub(crate) fn parse_aux_layer_ids(
    v: &serde_json::Value,
    origin: &str,
) -> Result<Option<Vec<usize>>, LoadError> {
    let ids = match v.get("aux_layer_ids") {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(a) => a
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_u64().and_then(|n| usize::try_from(n).ok()))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| load_err!("{origin}: aux_layer_ids must be a list of layer indices"))?,
    };
    if ids.len() != AUX_LAYERS {
        return Err(load_err!(
            "{origin}: aux_layer_ids names {} layers; the features are {AUX_LAYERS} target layers wide",
            ids.len()
        ));
    }
    Ok(Some(ids))
}
