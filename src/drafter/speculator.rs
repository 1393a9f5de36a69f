//! One sequence's drafting driven by the draft-shape policy: a session of either drafter kind, the
//! [`Policy`] that picks each iteration's shape (plain decoding included), and the clock of the
//! drafting side. Engines (the reference engine, the C API) call `prefill`, then per iteration
//! `draft` -> verify -> `commit` -> `feedback`.

use std::time::Instant;

use super::SpecBlockSession;
use super::adapter::HeadAdapter;
use super::eagle3::{
    DEFAULT_EAGLE3_BUDGET, DEFAULT_EAGLE3_DEPTH, DEFAULT_EAGLE3_TOP_K, Eagle3Policy, Eagle3Session,
};
use super::online::{OnlineAdapter, SharedAdapter, SlotRecord};
use super::session::DEFAULT_SPECBLOCK_BUDGET;
use crate::adapt::{Arm, ArmSummary, Feedback, Policy, PolicyParams, Shape};
use crate::error::Error;
use crate::tree::DraftTree;

/// A drafting session of either kind.
pub enum AnySession<'d> {
    /// SpecBlock.
    SpecBlock(SpecBlockSession<'d>),
    /// The EAGLE-3 baseline.
    Eagle3(Eagle3Session<'d>),
}

impl AnySession<'_> {
    fn prefill(&mut self, embed: &[f32], features: &[f32], tokens: &[u32]) -> Result<(), Error> {
        match self {
            AnySession::SpecBlock(s) => s.prefill(embed, features, tokens),
            AnySession::Eagle3(s) => s.prefill(embed, features, tokens),
        }
    }

    fn commit(
        &mut self,
        embed: &[f32],
        accepted: &[u32],
        bonus: u32,
        features: &[f32],
    ) -> Result<(), Error> {
        match self {
            AnySession::SpecBlock(s) => s.commit(embed, accepted, bonus, features),
            AnySession::Eagle3(s) => s.commit(embed, accepted, bonus, features),
        }
    }

    /// The root of the next draft.
    pub fn root(&self) -> Option<u32> {
        match self {
            AnySession::SpecBlock(s) => s.root(),
            AnySession::Eagle3(s) => s.root(),
        }
    }

    /// Entries in the drafter's context (deferred plain-step entries not included).
    pub fn context_entries(&self) -> usize {
        match self {
            AnySession::SpecBlock(s) => s.context_entries(),
            AnySession::Eagle3(s) => s.context_entries(),
        }
    }

    fn set_recording(&mut self, on: bool) -> Result<(), Error> {
        match self {
            AnySession::SpecBlock(s) => s.set_recording(on),
            AnySession::Eagle3(s) => s.set_recording(on),
        }
    }

    fn record_path(&self, accepted: &[u32], bonus: u32, sink: &mut dyn FnMut(SlotRecord<'_>)) {
        match self {
            AnySession::SpecBlock(s) => s.record_path(accepted, bonus, sink),
            AnySession::Eagle3(s) => s.record_path(accepted, bonus, sink),
        }
    }

    fn record_stream(&mut self, sink: &mut dyn FnMut(SlotRecord<'_>)) {
        match self {
            AnySession::SpecBlock(s) => s.record_stream(sink),
            AnySession::Eagle3(s) => s.record_stream(sink),
        }
    }

    fn head_adapter_slot(&mut self) -> &mut Option<HeadAdapter> {
        match self {
            AnySession::SpecBlock(s) => s.head_adapter_slot(),
            AnySession::Eagle3(s) => s.head_adapter_slot(),
        }
    }

    fn fits(&self, a: &OnlineAdapter) -> bool {
        let s = a.shape();
        match self {
            AnySession::SpecBlock(x) => {
                let c = x.drafter().config();
                a.kind() == super::DrafterKind::SpecBlock
                    && c.hidden == s.hidden
                    && c.draft_vocab == s.draft_vocab
                    && (s.rank_classes == 0 || s.rank_classes == c.rank_classes)
            }
            AnySession::Eagle3(x) => {
                let c = x.drafter().config();
                a.kind() == super::DrafterKind::Eagle3
                    && c.hidden == s.hidden
                    && c.draft_vocab == s.draft_vocab
            }
        }
    }

    /// Forgets the sequence.
    pub fn reset(&mut self) {
        match self {
            AnySession::SpecBlock(s) => s.reset(),
            AnySession::Eagle3(s) => s.reset(),
        }
    }
}

/// The default arms for a drafter kind: plain decoding, small chains (with and without a confidence
/// stop) that pay where verification is expensive (CPUs), and trees up to the published shapes that
/// pay where it is cheap (GPUs). `eagle3` selects the EAGLE-3 ladder.
pub fn default_arms(eagle3: bool) -> &'static [Arm] {
    const fn sb(budget: u32, max_seeds: u32, min_confidence: f32) -> Arm {
        Arm {
            shape: Shape::SpecBlock { budget, max_seeds },
            min_confidence,
        }
    }
    const fn e3(budget: u32, depth: u32, top_k: u32, min_confidence: f32) -> Arm {
        Arm {
            shape: Shape::Eagle3 {
                budget,
                depth,
                top_k,
            },
            min_confidence,
        }
    }
    const PLAIN: Arm = Arm::new(Shape::Plain);
    const SPECBLOCK: [Arm; 9] = [
        PLAIN,
        sb(2, 0, 0.0),
        sb(4, 0, 0.0),
        sb(4, 0, 0.5),
        sb(8, 0, 0.0),
        sb(8, 0, 0.3),
        sb(16, 4, 0.0),
        sb(32, u32::MAX, 0.0),
        sb(DEFAULT_SPECBLOCK_BUDGET, u32::MAX, 0.0),
    ];
    const EAGLE3: [Arm; 9] = [
        PLAIN,
        e3(2, 2, 1, 0.0),
        e3(4, 4, 1, 0.0),
        e3(4, 4, 1, 0.5),
        e3(6, 3, 2, 0.0),
        e3(8, 4, 4, 0.0),
        e3(16, 6, 6, 0.0),
        e3(32, 7, 8, 0.0),
        e3(
            DEFAULT_EAGLE3_BUDGET,
            DEFAULT_EAGLE3_DEPTH,
            DEFAULT_EAGLE3_TOP_K,
            0.0,
        ),
    ];
    if eagle3 { &EAGLE3 } else { &SPECBLOCK }
}

/// What a speculator did: the policy's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SpeculatorStats {
    /// Iterations fed back.
    pub iterations: u64,
    /// Mean tokens per iteration.
    pub mean_accept_length: f64,
    /// The arm of the last draft.
    pub current_arm: usize,
}

/// A sequence's speculative drafting under a draft-shape policy (one arm = a fixed shape).
pub struct Speculator<'d> {
    session: AnySession<'d>,
    policy: Policy,
    arm: usize,
    /// Drafting seconds (draft and commit) since the last feedback.
    draft_s: f64,
    /// A draft succeeded and its feedback has not come yet.
    feedback_due: bool,
    /// The online adapter this speculator records for and drafts with, if any.
    adapter: Option<SharedAdapter>,
    /// Version of the adapter's weights the session drafts with.
    adapter_version: u64,
    /// Depth of the last draft.
    last_depth: u32,
}

impl<'d> Speculator<'d> {
    /// Drives `session` with a policy over `arms` (one arm: a fixed shape). Every drafting arm must
    /// match the session's kind and fit it (EAGLE-3 depth and top-k at most the session's).
    pub fn new(session: AnySession<'d>, arms: &[Arm], params: PolicyParams) -> Result<Self, Error> {
        let eagle3 = matches!(session, AnySession::Eagle3(_));
        for a in arms {
            match (a.shape, &session) {
                (Shape::Plain, _) => {}
                (Shape::SpecBlock { .. }, AnySession::SpecBlock(_)) => {}
                (Shape::Eagle3 { depth, top_k, .. }, AnySession::Eagle3(s)) => {
                    let cap = s.capacity();
                    if depth > cap.depth || top_k > cap.top_k {
                        return Err(Error::InvalidArgument(
                            "an EAGLE-3 arm is deeper or wider than the session was created for",
                        ));
                    }
                }
                _ => {
                    return Err(Error::InvalidArgument(if eagle3 {
                        "a SpecBlock arm for an EAGLE-3 session"
                    } else {
                        "an EAGLE-3 arm for a SpecBlock session"
                    }));
                }
            }
        }
        let slots = match &session {
            AnySession::SpecBlock(s) => s.drafter().config().slots as u32,
            AnySession::Eagle3(_) => 1,
        };
        let policy = Policy::new(arms, PolicyParams { slots, ..params })?;
        Ok(Speculator {
            arm: policy.current(),
            session,
            policy,
            draft_s: 0.0,
            feedback_due: false,
            adapter: None,
            adapter_version: 0,
            last_depth: 0,
        })
    }

    /// Drafts with `adapter`'s live weights from the next draft on, records every verified path into it
    /// and lets it update at each [`feedback`](Self::feedback). Replaces an attached adapter. The
    /// adapter may be shared with other speculators of drafters of the same shape (see
    /// [`crate::drafter::online`]). Errors: [`Error::InvalidArgument`] for an adapter of another
    /// shape; [`Error::OutOfMemory`].
    pub fn attach_adapter(&mut self, adapter: SharedAdapter) -> Result<(), Error> {
        let (weights, version) = {
            let a = adapter
                .lock()
                .map_err(|_| Error::InvalidState("the adapter's lock is poisoned"))?;
            if !self.session.fits(&a) {
                return Err(Error::InvalidArgument(
                    "the adapter was made for a drafter of another shape",
                ));
            }
            let mut w = HeadAdapter::new(*a.shape(), 0)?;
            w.copy_from(a.live());
            (w, a.version())
        };
        self.session.set_recording(true)?;
        *self.session.head_adapter_slot() = Some(weights);
        self.adapter = Some(adapter);
        self.adapter_version = version;
        Ok(())
    }

    /// Stops using the attached adapter (the session drafts with the drafter's own head again) and
    /// returns it.
    pub fn detach_adapter(&mut self) -> Option<SharedAdapter> {
        let _ = self.session.set_recording(false);
        *self.session.head_adapter_slot() = None;
        self.adapter.take()
    }

    /// The attached adapter.
    pub fn adapter(&self) -> Option<&SharedAdapter> {
        self.adapter.as_ref()
    }

    /// Copies the adapter's live weights into the session when they changed and the adapter is free.
    fn refresh_adapter(&mut self) {
        let Some(shared) = &self.adapter else { return };
        let Ok(a) = shared.try_lock() else { return };
        if a.version() == self.adapter_version {
            return;
        }
        if let Some(w) = self.session.head_adapter_slot() {
            w.copy_from(a.live());
            self.adapter_version = a.version();
        }
    }

    /// The session.
    pub fn session(&self) -> &AnySession<'d> {
        &self.session
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The arm the last [`draft`](Self::draft) used.
    pub fn current_arm(&self) -> Arm {
        self.policy.arms()[self.arm]
    }

    /// Statistics of the run so far.
    pub fn stats(&self) -> SpeculatorStats {
        SpeculatorStats {
            iterations: self.policy.iterations(),
            mean_accept_length: self.policy.mean_accept_length(),
            current_arm: self.arm,
        }
    }

    /// Statistics of arm `i`.
    pub fn arm_summary(&self, i: usize) -> Option<ArmSummary> {
        self.policy.summary(i)
    }

    /// After the target's prefill (see [`SpecBlockSession::prefill`]). A new sequence: the session restarts,
    /// the policy keeps what it learned (the machine, the drafter and the kind of text persist).
    pub fn prefill(
        &mut self,
        embed: &[f32],
        features: &[f32],
        tokens: &[u32],
    ) -> Result<(), Error> {
        self.draft_s = 0.0;
        self.policy.reset_sequence();
        self.session.prefill(embed, features, tokens)
    }

    /// Chooses this iteration's arm and drafts its tree into `tree` (the root alone for a plain
    /// step). Returns the arm's index.
    pub fn draft(&mut self, embed: &[f32], tree: &mut DraftTree) -> Result<usize, Error> {
        let t = Instant::now();
        // A new draft withdraws the last one, reported or not.
        self.feedback_due = false;
        self.refresh_adapter();
        let arm = self.policy.choose();
        let a = self.policy.arms()[arm];
        let r = match (&mut self.session, a.shape) {
            (AnySession::SpecBlock(s), Shape::Plain) => s.draft_plain(tree),
            (AnySession::Eagle3(s), Shape::Plain) => s.draft_plain(tree),
            (AnySession::SpecBlock(s), Shape::SpecBlock { budget, max_seeds }) => s
                .set_shape(budget, max_seeds, a.min_confidence)
                .and_then(|_| s.draft(embed, tree)),
            (
                AnySession::Eagle3(s),
                Shape::Eagle3 {
                    budget,
                    depth,
                    top_k,
                },
            ) => s
                .set_shape(
                    Eagle3Policy {
                        budget,
                        depth,
                        top_k,
                    },
                    a.min_confidence,
                )
                .and_then(|_| s.draft(embed, tree)),
            _ => Err(Error::InvalidState("arm kind does not match the session")),
        };
        self.draft_s += t.elapsed().as_secs_f64();
        r?;
        // The draft flushed any plain steps through the drafter: their teacher-forced slots.
        if let Some(shared) = &self.adapter
            && let Ok(mut a) = shared.try_lock()
        {
            self.session.record_stream(&mut |rec| a.record(rec));
        }
        self.arm = arm;
        self.feedback_due = true;
        self.last_depth = tree.depths().iter().copied().max().unwrap_or(0);
        Ok(arm)
    }

    /// After verification (see [`SpecBlockSession::commit`]); the commit of a plain step is deferred to the
    /// next real draft.
    pub fn commit(
        &mut self,
        embed: &[f32],
        accepted: &[u32],
        bonus: u32,
        features: &[f32],
    ) -> Result<(), Error> {
        let t = Instant::now();
        // The verified path is a free lesson for the adapter; recorded before the commit's forward
        // overwrites the drafting rows. A busy adapter (another session updating it) skips it.
        if let Some(shared) = &self.adapter
            && let Ok(mut a) = shared.try_lock()
        {
            self.session
                .record_path(accepted, bonus, &mut |rec| a.record(rec));
        }
        let r = self.session.commit(embed, accepted, bonus, features);
        self.draft_s += t.elapsed().as_secs_f64();
        r
    }

    /// Reports the iteration: `rows` verified, `tokens` emitted (accepted + bonus), the engine's
    /// verification seconds, and its drafting seconds if it timed them (else the speculator's own
    /// clock of draft and commit since the last feedback). Once per successful draft:
    /// [`Error::InvalidState`] without a draft since the last report (checked after the values).
    pub fn feedback(
        &mut self,
        rows: u32,
        tokens: u32,
        verify_s: f64,
        draft_s: Option<f64>,
    ) -> Result<(), Error> {
        let fb = Feedback {
            rows,
            tokens,
            verify_s,
            draft_s: draft_s.unwrap_or(self.draft_s),
        };
        fb.validate()?;
        // One report per draft: a second one (or one before any draft) would count an iteration that
        // never ran and skew the arm's statistics.
        if !self.feedback_due {
            return Err(Error::InvalidState(
                "feedback without a draft since the last feedback",
            ));
        }
        self.policy.feedback(self.arm, &fb)?;
        self.feedback_due = false;
        self.draft_s = 0.0;
        if let Some(shared) = &self.adapter
            && let Ok(mut a) = shared.try_lock()
        {
            a.observe_iteration(fb.verify_s + fb.draft_s, self.last_depth);
            // An update runs here, between iterations; its cost is the bandit's to weigh.
            a.maybe_update()?;
        }
        Ok(())
    }
}

impl<'d> SpecBlockSession<'d> {
    /// The drafter this session runs.
    pub fn drafter(&self) -> &'d super::SpecBlockDrafter {
        self.drafter_ref()
    }
}

impl Eagle3Session<'_> {
    /// The largest shape this session can draft (its creation policy).
    pub fn capacity(&self) -> Eagle3Policy {
        self.capacity_policy()
    }
}
