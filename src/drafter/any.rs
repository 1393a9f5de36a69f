//! One interface over both drafter kinds, for engines and the C API alike: [`AnyDrafter`] loads a
//! checkpoint directory of either kind (the kind is read from its config.json) and creates sessions,
//! and [`DraftSession`] is the per-sequence protocol that every session implements (SpecBlock,
//! EAGLE-3 and the policy-driven [`Speculator`]), so the speculative loop is written once.

use std::path::Path;
use std::string::{String, ToString};
use std::vec::Vec;

use super::config::resolve_aux_layers;
use super::eagle3::{Eagle3Drafter, Eagle3Policy, Eagle3Session};
use super::{
    AnySession, DraftPolicy, SpecBlockDrafter, SpecBlockSession, Speculator, default_arms,
};
use crate::adapt::{Arm, PolicyParams};
use crate::error::Error;
use crate::io::LoadError;
use crate::load_err;
use crate::tree::DraftTree;

/// The two drafter architectures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrafterKind {
    /// SpecBlock: K slots per block, rank head (the authors' tensor names).
    SpecBlock,
    /// The EAGLE-3 baseline (EAGLE / SpecForge tensor names).
    Eagle3,
}

impl DrafterKind {
    /// The kind a parsed config.json declares: EAGLE-3 when `architectures` names Eagle3 (EAGLE and
    /// SpecForge write `LlamaForCausalLMEagle3`), SpecBlock otherwise.
    pub fn of_config(config: &serde_json::Value) -> Self {
        let eagle3 = config
            .get("architectures")
            .and_then(|a| a.as_array())
            .is_some_and(|a| {
                a.iter().any(|x| {
                    x.as_str()
                        .is_some_and(|s| s.to_ascii_lowercase().contains("eagle3"))
                })
            });
        if eagle3 {
            DrafterKind::Eagle3
        } else {
            DrafterKind::SpecBlock
        }
    }

    /// The kind of the checkpoint in `dir` (its config.json).
    pub fn of_dir(dir: &Path) -> Result<Self, LoadError> {
        let (text, origin) = read_config(dir)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| load_err!("{origin}: not valid JSON: {e}"))?;
        Ok(Self::of_config(&v))
    }
}

/// Reads `dir/config.json`: its text and the path that names it in errors.
pub(crate) fn read_config(dir: &Path) -> Result<(String, String), LoadError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| load_err!("cannot read {}: {e}", path.display()))?;
    Ok((text, path.display().to_string()))
}

/// A loaded drafter of either kind: immutable and shareable across threads (sessions hold the
/// mutable state).
pub enum AnyDrafter {
    /// SpecBlock.
    SpecBlock(SpecBlockDrafter),
    /// The EAGLE-3 baseline.
    Eagle3(Eagle3Drafter),
}

impl AnyDrafter {
    /// Loads `config.json` and `model.safetensors` from `dir`, as the kind config.json declares
    /// ([`DrafterKind::of_config`]); forwards run on `threads` threads.
    pub fn load_dir(dir: &Path, threads: usize) -> Result<Self, LoadError> {
        Ok(match DrafterKind::of_dir(dir)? {
            DrafterKind::SpecBlock => {
                AnyDrafter::SpecBlock(SpecBlockDrafter::load_dir(dir, threads)?)
            }
            DrafterKind::Eagle3 => AnyDrafter::Eagle3(Eagle3Drafter::load_dir(dir, threads)?),
        })
    }

    /// Which architecture this is.
    pub fn kind(&self) -> DrafterKind {
        match self {
            AnyDrafter::SpecBlock(_) => DrafterKind::SpecBlock,
            AnyDrafter::Eagle3(_) => DrafterKind::Eagle3,
        }
    }

    /// Stores every weight matrix as bf16 (see [`SpecBlockDrafter::use_bf16_weights`]).
    pub fn use_bf16_weights(&mut self) {
        match self {
            AnyDrafter::SpecBlock(d) => d.use_bf16_weights(),
            AnyDrafter::Eagle3(d) => d.use_bf16_weights(),
        }
    }

    /// Drafter width (the target's hidden size, unless an EAGLE-3 checkpoint has its own embedding).
    pub fn hidden(&self) -> usize {
        match self {
            AnyDrafter::SpecBlock(d) => d.config().hidden,
            AnyDrafter::Eagle3(d) => d.config().hidden,
        }
    }

    /// Width of one target feature row: 3 x the target's hidden size.
    pub fn feature_width(&self) -> usize {
        match self {
            AnyDrafter::SpecBlock(d) => 3 * d.config().target_hidden,
            AnyDrafter::Eagle3(d) => d.feature_width(),
        }
    }

    /// Target vocabulary (rows of the embedding; every drafted token is below it).
    pub fn vocab(&self) -> usize {
        match self {
            AnyDrafter::SpecBlock(d) => d.config().vocab,
            AnyDrafter::Eagle3(d) => d.config().vocab,
        }
    }

    /// Draft vocabulary (rows of the draft LM head).
    pub fn draft_vocab(&self) -> usize {
        match self {
            AnyDrafter::SpecBlock(d) => d.config().draft_vocab,
            AnyDrafter::Eagle3(d) => d.config().draft_vocab,
        }
    }

    /// Tokens per block (K); 1 for EAGLE-3.
    pub fn slots(&self) -> usize {
        match self {
            AnyDrafter::SpecBlock(d) => d.config().slots,
            AnyDrafter::Eagle3(_) => 1,
        }
    }

    /// Whether the drafter reads its own token embedding rather than the target's (EAGLE-3
    /// checkpoints with `embed_tokens.weight`).
    pub fn has_own_embedding(&self) -> bool {
        matches!(self, AnyDrafter::Eagle3(d) if d.has_own_embedding())
    }

    /// The target layers the drafter's config names for its features (`aux_layer_ids`), if any.
    pub fn aux_layer_ids(&self) -> Option<&[usize]> {
        match self {
            AnyDrafter::SpecBlock(d) => d.config().aux_layer_ids.as_deref(),
            AnyDrafter::Eagle3(d) => d.config().aux_layer_ids.as_deref(),
        }
    }

    /// The target layers whose outputs, concatenated in this order, make a feature row, for a
    /// target of `target_layers` layers: the config's `aux_layer_ids`, else the EAGLE-3 default
    /// `[1, L/2 - 1, L - 4]`. An error when a named layer is not below `target_layers`: the drafter
    /// was trained on another target.
    pub fn aux_layers(&self, target_layers: usize) -> Result<Vec<usize>, Error> {
        resolve_aux_layers(self.aux_layer_ids(), target_layers)
    }

    /// The adaptive policy's default arms for this kind ([`default_arms`]).
    pub fn default_arms(&self) -> &'static [Arm] {
        default_arms(self.kind() == DrafterKind::Eagle3)
    }

    /// A session with room for `max_entries` committed entries, sized for every arm of `arms`
    /// (EAGLE-3: the deepest and widest; SpecBlock: `widths`' beam, whatever the arm's budget).
    pub fn new_session(
        &self,
        max_entries: usize,
        arms: &[Arm],
        widths: DraftPolicy,
    ) -> Result<AnySession<'_>, Error> {
        Ok(match self {
            AnyDrafter::SpecBlock(d) => {
                AnySession::SpecBlock(SpecBlockSession::new(d, max_entries, widths)?)
            }
            AnyDrafter::Eagle3(d) => {
                let cap = Eagle3Policy::covering(arms);
                AnySession::Eagle3(Eagle3Session::new(d, max_entries, cap)?)
            }
        })
    }

    /// A session under a draft-shape policy over `arms` (one arm: a fixed shape), with the default
    /// SpecBlock widths.
    pub fn new_speculator(
        &self,
        max_entries: usize,
        arms: &[Arm],
        params: PolicyParams,
    ) -> Result<Speculator<'_>, Error> {
        let session = self.new_session(max_entries, arms, DraftPolicy::default())?;
        Speculator::new(session, arms, params)
    }
}

/// A per-sequence drafting session: what a speculative decoding loop needs from a drafter. Every
/// session of this crate implements it with the same protocol: features of the committed positions
/// in, a finalized draft tree out.
pub trait DraftSession {
    /// After the target's prefill of `tokens[..S]` (`features`: S rows, one per prompt position)
    /// and its first sampled token `tokens[S]`.
    fn prefill(&mut self, embed: &[f32], features: &[f32], tokens: &[u32]) -> Result<(), Error>;

    /// Grows and finalizes the next draft tree under the current root.
    fn draft(&mut self, embed: &[f32], tree: &mut DraftTree) -> Result<(), Error>;

    /// After verification: the accepted tokens, the bonus token and the features of
    /// `[root, accepted...]`.
    fn commit(
        &mut self,
        embed: &[f32],
        accepted: &[u32],
        bonus: u32,
        features: &[f32],
    ) -> Result<(), Error>;

    /// The iteration's measured cost: `rows` verified, `tokens` emitted (accepted + bonus), the
    /// verification seconds. A draft-shape policy learns from it; fixed-shape sessions ignore it.
    fn feedback(&mut self, rows: u32, tokens: u32, verify_s: f64) -> Result<(), Error> {
        let _ = (rows, tokens, verify_s);
        Ok(())
    }

    /// The arm of the last draft, for sessions with a draft-shape policy.
    fn current_arm(&self) -> Option<usize> {
        None
    }

    /// The target layers whose outputs make this session's feature rows, for a target of
    /// `target_layers` layers (see [`AnyDrafter::aux_layers`]); by default the EAGLE-3 convention.
    fn aux_layers(&self, target_layers: usize) -> Result<Vec<usize>, Error> {
        resolve_aux_layers(None, target_layers)
    }
}

impl DraftSession for SpecBlockSession<'_> {
    fn prefill(&mut self, embed: &[f32], features: &[f32], tokens: &[u32]) -> Result<(), Error> {
        SpecBlockSession::prefill(self, embed, features, tokens)
    }
    fn draft(&mut self, embed: &[f32], tree: &mut DraftTree) -> Result<(), Error> {
        SpecBlockSession::draft(self, embed, tree)
    }
    fn commit(
        &mut self,
        embed: &[f32],
        accepted: &[u32],
        bonus: u32,
        features: &[f32],
    ) -> Result<(), Error> {
        SpecBlockSession::commit(self, embed, accepted, bonus, features)
    }
    fn aux_layers(&self, target_layers: usize) -> Result<Vec<usize>, Error> {
        resolve_aux_layers(
            self.drafter().config().aux_layer_ids.as_deref(),
            target_layers,
        )
    }
}

impl DraftSession for Eagle3Session<'_> {
    fn prefill(&mut self, embed: &[f32], features: &[f32], tokens: &[u32]) -> Result<(), Error> {
        Eagle3Session::prefill(self, embed, features, tokens)
    }
    fn draft(&mut self, embed: &[f32], tree: &mut DraftTree) -> Result<(), Error> {
        Eagle3Session::draft(self, embed, tree)
    }
    fn commit(
        &mut self,
        embed: &[f32],
        accepted: &[u32],
        bonus: u32,
        features: &[f32],
    ) -> Result<(), Error> {
        Eagle3Session::commit(self, embed, accepted, bonus, features)
    }
    fn aux_layers(&self, target_layers: usize) -> Result<Vec<usize>, Error> {
        resolve_aux_layers(
            self.drafter().config().aux_layer_ids.as_deref(),
            target_layers,
        )
    }
}

impl DraftSession for Speculator<'_> {
    fn prefill(&mut self, embed: &[f32], features: &[f32], tokens: &[u32]) -> Result<(), Error> {
        Speculator::prefill(self, embed, features, tokens)
    }
    fn draft(&mut self, embed: &[f32], tree: &mut DraftTree) -> Result<(), Error> {
        Speculator::draft(self, embed, tree).map(|_| ())
    }
    fn commit(
        &mut self,
        embed: &[f32],
        accepted: &[u32],
        bonus: u32,
        features: &[f32],
    ) -> Result<(), Error> {
        Speculator::commit(self, embed, accepted, bonus, features)
    }
    fn feedback(&mut self, rows: u32, tokens: u32, verify_s: f64) -> Result<(), Error> {
        Speculator::feedback(self, rows, tokens, verify_s, None)
    }
    fn current_arm(&self) -> Option<usize> {
        Some(self.stats().current_arm)
    }
    fn aux_layers(&self, target_layers: usize) -> Result<Vec<usize>, Error> {
        match self.session() {
            AnySession::SpecBlock(s) => DraftSession::aux_layers(s, target_layers),
            AnySession::Eagle3(s) => DraftSession::aux_layers(s, target_layers),
        }
    }
}
