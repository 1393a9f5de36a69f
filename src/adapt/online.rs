//! The update bandit of online drafter adaptation: whether to spend time updating the drafter's head
//! adapter on the verifier's feedback, and whether to adopt an update, judged in seconds.
//!
//! Every verification says, for free, which token the target wanted after each drafted slot. The
//! drafter can learn from that (a low-rank adapter before its LM head, see
//! `drafter::online`), but learning costs wall time, and an update can make the drafter worse on
//! the text to come. So each decision point (every [`UpdateParams::decide_every`] new slots):
//!
//! 1. the bandit picks an arm: skip, or an update of 1, 4 or 16 optimizer steps ([`UPDATE_STEPS`]),
//!    by an upper confidence bound on each arm's past reward; when no arm's bound is positive, it
//!    skips without spending anything;
//! 2. the update is computed on a shadow copy and, at the next decision point, replayed on the slots
//!    recorded since, which it was not trained on (often from the next request: what an update must
//!    generalise to): top-1 agreement with the target before and after, paired per slot ([`Replay`]);
//! 3. the change in per-slot acceptance becomes a change in tokens per iteration ([`chain_tau`]), then
//!    seconds saved over the next [`UpdateParams::horizon_tokens`] tokens at the measured iteration
//!    time ([`seconds_saved`]);
//! 4. the cost is the measured wall time of the update and the replay; the reward is seconds saved
//!    minus cost. The update is adopted only when the reward computed from the replay's *lower*
//!    confidence bound is positive, so an update that the replay finds harmful is never adopted.
//!
//! [`UpdateMode::Always`] is the cost-blind baseline: a fixed number of steps at every decision point,
//! adopted without replay.
//!
//! Every statistic lives in fixed-size arrays; nothing here allocates.

use crate::error::Error;
use crate::math::sqrt_f64;

/// Optimizer steps of each update arm; arm 0 skips.
pub const UPDATE_STEPS: [u32; 4] = [0, 1, 4, 16];

/// Number of update arms, skip included.
pub const UPDATE_ARMS: usize = UPDATE_STEPS.len();

/// When the adapter learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    /// Never: the adapter is applied as loaded (or is the identity) and the feedback is not recorded.
    Off,
    /// At every decision point, [`UpdateParams::always_steps`] steps, adopted without replay (the
    /// cost-blind baseline).
    Always,
    /// The cost-aware bandit (the default).
    Bandit,
}

/// How updates are decided. Defaults: [`UpdateParams::default`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateParams {
    /// The mode (default [`UpdateMode::Bandit`]).
    pub mode: UpdateMode,
    /// New slots recorded between two decision points (default 48).
    pub decide_every: u32,
    /// Most slots a candidate update is replayed on: the most recent of those recorded after it was
    /// trained, which it never saw (default 64).
    pub holdout: u32,
    /// Slots recorded before the first update (default 64).
    pub min_train: u32,
    /// Most training slots per optimizer step (default 128; the most recent ones).
    pub batch: u32,
    /// Tokens an adopted update is expected to serve (default 2048): the horizon of the seconds saved.
    pub horizon_tokens: f64,
    /// One-sided width of the replay's confidence bound, in standard errors (default 1.0).
    pub confidence_z: f64,
    /// Per-decision decay of the arms' reward statistics, in (0, 1] (default 0.95): an arm that lost
    /// is tried again after its evidence fades.
    pub discount: f64,
    /// Width of the arms' upper confidence bound, in standard deviations of their reward (default 0.5).
    pub exploration: f64,
    /// Steps of an update in [`UpdateMode::Always`] (default 4).
    pub always_steps: u32,
}

impl Default for UpdateParams {
    fn default() -> Self {
        UpdateParams {
            mode: UpdateMode::Bandit,
            decide_every: 48,
            holdout: 64,
            min_train: 64,
            batch: 128,
            horizon_tokens: 2048.0,
            confidence_z: 1.0,
            discount: 0.95,
            exploration: 0.5,
            always_steps: 4,
        }
    }
}

impl UpdateParams {
    /// Checks every field: counts positive, `batch` at most 4096 and `holdout` at most 4096, horizon
    /// finite and positive, `discount` in (0, 1], widths finite and non-negative.
    pub fn validate(&self) -> Result<(), Error> {
        let ok = self.decide_every > 0
            && (1..=4096).contains(&self.holdout)
            && self.min_train > 0
            && (1..=4096).contains(&self.batch)
            && self.always_steps > 0
            && self.always_steps <= 1024
            && self.horizon_tokens.is_finite()
            && self.horizon_tokens > 0.0
            && self.confidence_z.is_finite()
            && self.confidence_z >= 0.0
            && self.discount > 0.0
            && self.discount <= 1.0
            && self.exploration.is_finite()
            && self.exploration >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(
                "update params: decide_every, min_train, always_steps (<= 1024) > 0; holdout and batch \
                 in 1..=4096; horizon_tokens finite > 0; confidence_z, exploration finite >= 0; \
                 discount in (0, 1]",
            ))
        }
    }
}

/// Paired top-1 outcomes of a candidate update on the held-out slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Slots replayed (those whose target token is in the draft vocabulary).
    pub rows: u32,
    /// Slots the live adapter predicts right.
    pub before_hits: u32,
    /// Slots the candidate predicts right.
    pub after_hits: u32,
    /// Slots only the candidate predicts right.
    pub gained: u32,
    /// Slots only the live adapter predicts right.
    pub lost: u32,
}

impl Replay {
    /// Mean change in top-1 agreement per slot (0 without rows).
    pub fn delta(&self) -> f64 {
        if self.rows == 0 {
            0.0
        } else {
            (self.gained as f64 - self.lost as f64) / self.rows as f64
        }
    }

    /// One-sided lower confidence bound of [`delta`](Self::delta), `z` standard errors below it (the
    /// paired per-slot differences are -1, 0 or 1). Without rows: -1 (nothing is known).
    pub fn delta_lower_bound(&self, z: f64) -> f64 {
        if self.rows == 0 {
            return -1.0;
        }
        let n = self.rows as f64;
        let d = self.delta();
        let second = (self.gained as f64 + self.lost as f64) / n;
        let var = (second - d * d).max(0.0);
        d - z * sqrt_f64(var / n)
    }
}

/// Expected tokens per iteration of a drafted chain of `depth` slots, each accepted with probability
/// `accept` given its predecessors were: `1 + a + a^2 + ... + a^depth` (the bonus token included).
/// `accept` is clamped to [0, 1]; `depth` is rounded and clamped to 0..=64.
pub fn chain_tau(accept: f64, depth: f64) -> f64 {
    let a = if accept.is_nan() {
        0.0
    } else {
        accept.clamp(0.0, 1.0)
    };
    let d = if depth.is_nan() {
        0
    } else {
        (depth.clamp(0.0, 64.0) + 0.5) as u32
    };
    let (mut tau, mut p) = (1.0, 1.0);
    for _ in 0..d {
        p *= a;
        tau += p;
    }
    tau
}

/// What the stream looks like at a decision point.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StreamState {
    /// Measured per-slot acceptance of recent drafts.
    pub accept: f64,
    /// Mean depth of recent drafts (slots on the deepest path).
    pub depth: f64,
    /// Mean seconds per iteration (drafting and verification).
    pub iteration_s: f64,
    /// Share of recent iterations that drafted, in [0, 1]: a plain step (the draft-shape policy chose
    /// not to draft) gains nothing from a better drafter.
    pub drafting_share: f64,
}

/// Seconds saved over `horizon_tokens` tokens when per-slot acceptance moves by `delta_accept`:
/// `horizon x drafting_share x iteration_s x (1 / tau_before - 1 / tau_after)` (negative when it
/// falls).
pub fn seconds_saved(state: &StreamState, delta_accept: f64, horizon_tokens: f64) -> f64 {
    let before = chain_tau(state.accept, state.depth);
    let after = chain_tau(state.accept + delta_accept, state.depth);
    let share = if state.drafting_share.is_nan() {
        0.0
    } else {
        state.drafting_share.clamp(0.0, 1.0)
    };
    horizon_tokens * share * state.iteration_s * (1.0 / before - 1.0 / after)
}

/// The bandit's verdict on one tried update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// Adopt the candidate.
    pub adopt: bool,
    /// The reward booked to the arm, seconds: expected seconds saved (if adopted) minus the cost.
    pub reward_s: f64,
    /// Expected seconds saved at the replay's point estimate.
    pub saved_s: f64,
    /// Seconds saved at the replay's lower bound.
    pub saved_lower_s: f64,
}

/// Counters of a bandit's decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UpdateStats {
    /// Decision points reached.
    pub decisions: u64,
    /// Decision points skipped without computing an update.
    pub skipped: u64,
    /// Updates computed, per arm ([`UPDATE_STEPS`]; arm 0 stays 0).
    pub tried: [u64; UPDATE_ARMS],
    /// Updates adopted.
    pub adopted: u64,
    /// Updates computed and rejected by the replay.
    pub rejected: u64,
    /// Wall seconds spent on updates and replays.
    pub update_seconds: f64,
    /// Sum of the adopted updates' expected seconds saved.
    pub expected_saved_seconds: f64,
    /// The last replay's change in top-1 agreement.
    pub last_delta: f64,
    /// Slots replayed over all updates, and how many the live and the candidate heads predicted right.
    pub replay_rows: u64,
    /// Of them, right before the update (live head).
    pub replay_before_hits: u64,
    /// Of them, right after it (candidate head).
    pub replay_after_hits: u64,
}

/// The update bandit: per arm, discounted statistics of the reward (seconds) its updates earned.
#[derive(Clone, Debug)]
pub struct UpdateBandit {
    params: UpdateParams,
    weight: [f64; UPDATE_ARMS],
    sum: [f64; UPDATE_ARMS],
    sum_sq: [f64; UPDATE_ARMS],
    stats: UpdateStats,
}

impl UpdateBandit {
    /// A bandit with no history. Errors: [`UpdateParams::validate`].
    pub fn new(params: UpdateParams) -> Result<Self, Error> {
        params.validate()?;
        Ok(UpdateBandit {
            params,
            weight: [0.0; UPDATE_ARMS],
            sum: [0.0; UPDATE_ARMS],
            sum_sq: [0.0; UPDATE_ARMS],
            stats: UpdateStats::default(),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &UpdateParams {
        &self.params
    }

    /// The counters.
    pub fn stats(&self) -> &UpdateStats {
        &self.stats
    }

    /// An arm's discounted mean reward and weight (`None` before it ran).
    pub fn arm_reward(&self, arm: usize) -> Option<(f64, f64)> {
        let w = *self.weight.get(arm)?;
        (w > 0.0).then(|| (self.sum[arm] / w, w))
    }

    /// Upper confidence bound of an arm's reward; untried arms are +inf (tried first, cheapest first).
    fn ucb(&self, arm: usize) -> f64 {
        let w = self.weight[arm];
        if w < 1e-9 {
            return f64::INFINITY;
        }
        let mean = self.sum[arm] / w;
        // At least the mean's own size: an arm that always loses c seconds is tried again once its
        // weight falls below exploration^2 (about every 30-60 decisions at the defaults).
        let measured = if w >= 2.0 {
            sqrt_f64((self.sum_sq[arm] / w - mean * mean).max(0.0))
        } else {
            0.0
        };
        let spread = measured.max(mean.abs());
        mean + self.params.exploration * spread.max(1e-6) / sqrt_f64(w.max(1e-9))
    }

    /// A decision point: the number of optimizer steps to try (0 = skip). Counts the decision and
    /// decays the statistics. [`UpdateMode::Off`] always skips.
    pub fn choose(&mut self) -> u32 {
        self.stats.decisions += 1;
        let d = self.params.discount;
        for a in 0..UPDATE_ARMS {
            self.weight[a] *= d;
            self.sum[a] *= d;
            self.sum_sq[a] *= d;
        }
        let steps = match self.params.mode {
            UpdateMode::Off => 0,
            UpdateMode::Always => self.params.always_steps,
            UpdateMode::Bandit => {
                let mut best = (0usize, 0.0f64);
                for a in 1..UPDATE_ARMS {
                    let u = self.ucb(a);
                    // Ties (two untried arms) go to the cheaper arm.
                    if u > best.1 {
                        best = (a, u);
                    }
                }
                UPDATE_STEPS[best.0]
            }
        };
        if steps == 0 {
            self.stats.skipped += 1;
        }
        steps
    }

    /// Judges a computed update of `steps` steps from its `replay` on the held-out slots, the
    /// `state` of the stream, and its measured `cost_s` (update plus replay), books the reward to its
    /// arm and returns the verdict. [`UpdateMode::Always`] adopts without looking at the replay.
    pub fn judge(
        &mut self,
        steps: u32,
        replay: &Replay,
        state: &StreamState,
        cost_s: f64,
    ) -> Verdict {
        let p = &self.params;
        let saved_s = seconds_saved(state, replay.delta(), p.horizon_tokens);
        let saved_lower_s = seconds_saved(
            state,
            replay.delta_lower_bound(p.confidence_z),
            p.horizon_tokens,
        );
        let adopt = match p.mode {
            UpdateMode::Always => true,
            UpdateMode::Off => false,
            UpdateMode::Bandit => replay.rows > 0 && saved_lower_s - cost_s > 0.0,
        };
        let reward_s = if adopt { saved_s - cost_s } else { -cost_s };
        if let Some(arm) = UPDATE_STEPS.iter().position(|&s| s == steps) {
            self.weight[arm] += 1.0;
            self.sum[arm] += reward_s;
            self.sum_sq[arm] += reward_s * reward_s;
            self.stats.tried[arm] += 1;
        }
        self.stats.update_seconds += cost_s;
        self.stats.last_delta = replay.delta();
        self.stats.replay_rows += replay.rows as u64;
        self.stats.replay_before_hits += replay.before_hits as u64;
        self.stats.replay_after_hits += replay.after_hits as u64;
        if adopt {
            self.stats.adopted += 1;
            self.stats.expected_saved_seconds += saved_s;
        } else {
            self.stats.rejected += 1;
        }
        Verdict {
            adopt,
            reward_s,
            saved_s,
            saved_lower_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_tau_is_the_geometric_sum() {
        assert_eq!(chain_tau(0.0, 4.0), 1.0);
        assert_eq!(chain_tau(1.0, 4.0), 5.0);
        assert!((chain_tau(0.5, 3.0) - 1.875).abs() < 1e-12);
        // Clamped inputs.
        assert_eq!(chain_tau(2.0, 2.0), 3.0);
        assert_eq!(chain_tau(-1.0, 2.0), 1.0);
        assert_eq!(chain_tau(f64::NAN, 2.0), 1.0);
        assert_eq!(chain_tau(0.5, f64::NAN), 1.0);
    }

    #[test]
    fn seconds_saved_follows_the_sign_of_the_change() {
        let s = StreamState {
            accept: 0.3,
            depth: 4.0,
            iteration_s: 0.03,
            drafting_share: 1.0,
        };
        assert!(seconds_saved(&s, 0.05, 1000.0) > 0.0);
        assert!(seconds_saved(&s, -0.05, 1000.0) < 0.0);
        assert_eq!(seconds_saved(&s, 0.0, 1000.0), 0.0);
        // By hand: tau 1.4251 -> 1.5304 (a 0.3 -> 0.35), 1000 x 0.03 x (1/1.4251 - 1/1.5406).
        let by_hand = 1000.0 * 0.03 * (1.0 / 1.4251 - 1.0 / 1.530_381_25);
        assert!((seconds_saved(&s, 0.05, 1000.0) - by_hand).abs() < 1e-3);
        // Where the policy drafts half the time, half of it; where it never drafts, nothing.
        let half = StreamState {
            drafting_share: 0.5,
            ..s
        };
        assert!((seconds_saved(&half, 0.05, 1000.0) - by_hand / 2.0).abs() < 1e-3);
        let never = StreamState {
            drafting_share: 0.0,
            ..s
        };
        assert_eq!(seconds_saved(&never, 0.05, 1000.0), 0.0);
    }

    #[test]
    fn replay_bounds() {
        let r = Replay {
            rows: 100,
            before_hits: 30,
            after_hits: 40,
            gained: 12,
            lost: 2,
        };
        assert!((r.delta() - 0.10).abs() < 1e-12);
        let lb = r.delta_lower_bound(1.0);
        // var = 0.14 - 0.01 = 0.13; se = sqrt(0.0013) = 0.03606.
        assert!((lb - (0.10 - 0.036_055_5)).abs() < 1e-6);
        assert!(r.delta_lower_bound(0.0) == r.delta());
        assert_eq!(Replay::default().delta_lower_bound(1.0), -1.0);
    }

    fn state() -> StreamState {
        StreamState {
            accept: 0.3,
            depth: 4.0,
            iteration_s: 0.03,
            drafting_share: 1.0,
        }
    }

    #[test]
    fn a_harmful_update_is_never_adopted() {
        let mut b = UpdateBandit::new(UpdateParams::default()).unwrap();
        let harmful = Replay {
            rows: 64,
            before_hits: 20,
            after_hits: 15,
            gained: 1,
            lost: 6,
        };
        let steps = b.choose();
        assert_eq!(steps, 1, "untried arms are tried cheapest first");
        let v = b.judge(steps, &harmful, &state(), 0.001);
        assert!(!v.adopt);
        assert_eq!(v.reward_s, -0.001);
        // Even at zero cost, an update whose lower bound is not positive is rejected.
        let neutral = Replay {
            rows: 64,
            before_hits: 20,
            after_hits: 21,
            gained: 3,
            lost: 2,
        };
        assert!(!b.judge(4, &neutral, &state(), 0.0).adopt);
        let clear_gain = Replay {
            rows: 64,
            before_hits: 20,
            after_hits: 30,
            gained: 10,
            lost: 0,
        };
        assert!(b.judge(4, &clear_gain, &state(), 0.01).adopt);
        // A clear gain that costs more than it saves is rejected.
        assert!(!b.judge(16, &clear_gain, &state(), 1e3).adopt);
        let st = b.stats();
        assert_eq!((st.adopted, st.rejected), (1, 3));
        assert_eq!(st.tried, [0, 1, 2, 1]);
    }

    #[test]
    fn the_bandit_stops_paying_for_updates_that_never_help_and_probes_again_later() {
        let mut b = UpdateBandit::new(UpdateParams::default()).unwrap();
        let useless = Replay {
            rows: 64,
            before_hits: 20,
            after_hits: 20,
            gained: 0,
            lost: 0,
        };
        let mut tried = 0;
        let mut first_skip = None;
        for i in 0..400 {
            let steps = b.choose();
            if steps == 0 {
                first_skip.get_or_insert(i);
                continue;
            }
            tried += 1;
            // Cost grows with the steps.
            b.judge(steps, &useless, &state(), 0.01 * steps as f64);
        }
        assert!(
            first_skip.is_some_and(|i| i <= 10),
            "skips soon: {first_skip:?}"
        );
        assert!(
            tried < 100,
            "tries {tried} of 400 decisions, fewer as the evidence accumulates"
        );
        assert!(
            tried > 3,
            "but probes again when the evidence fades: {tried}"
        );
        assert_eq!(b.stats().adopted, 0);
    }

    #[test]
    fn the_bandit_keeps_updating_when_updates_pay() {
        let mut b = UpdateBandit::new(UpdateParams::default()).unwrap();
        let gain = Replay {
            rows: 64,
            before_hits: 20,
            after_hits: 28,
            gained: 9,
            lost: 1,
        };
        let mut skips = 0;
        for _ in 0..100 {
            let steps = b.choose();
            if steps == 0 {
                skips += 1;
            } else {
                b.judge(steps, &gain, &state(), 0.002 * steps as f64);
            }
        }
        assert_eq!(skips, 0);
        assert!(b.stats().adopted >= 99);
    }

    #[test]
    fn off_and_always() {
        let mut off = UpdateBandit::new(UpdateParams {
            mode: UpdateMode::Off,
            ..UpdateParams::default()
        })
        .unwrap();
        assert_eq!(off.choose(), 0);
        let mut always = UpdateBandit::new(UpdateParams {
            mode: UpdateMode::Always,
            always_steps: 4,
            ..UpdateParams::default()
        })
        .unwrap();
        assert_eq!(always.choose(), 4);
        let harmful = Replay {
            rows: 64,
            before_hits: 20,
            after_hits: 10,
            gained: 0,
            lost: 10,
        };
        assert!(always.judge(4, &harmful, &state(), 0.5).adopt);
    }

    #[test]
    fn params_are_checked() {
        for bad in [
            UpdateParams {
                decide_every: 0,
                ..UpdateParams::default()
            },
            UpdateParams {
                discount: 0.0,
                ..UpdateParams::default()
            },
            UpdateParams {
                horizon_tokens: f64::NAN,
                ..UpdateParams::default()
            },
            UpdateParams {
                batch: 5000,
                ..UpdateParams::default()
            },
        ] {
            assert!(UpdateBandit::new(bad).is_err());
        }
    }
}
