//! Trace replay: draft-shape policies judged on real text instead of a synthetic acceptance process.
//!
//! Greedy decoding emits the same tokens whatever the draft shape, so how many draft tokens an arm
//! would accept when an iteration starts at answer position `p` depends only on the text, the drafter
//! and the arm, not on the policy that led there. An engine records it once per (arm, position) on real
//! prompts (`specblock trace-arms`); [`Replay`] then runs any policy over those answers in
//! microseconds, with the engine's measured drafting and verification times. This is the acceptance
//! process the policy meets in deployment (runs of a few predictable tokens, hard prompts between easy
//! ones), which the i.i.d. and burst environments of [`super::sim`] only imitate.

use alloc::vec::Vec;

use super::sim::{Iteration, Run};
use super::{Feedback, Policy, Shape};
use crate::error::Error;
use crate::rng::CounterRng;

/// What one arm does at each position of one answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArmTrace {
    /// `accepted[p - 1]`: draft tokens accepted by an iteration that starts with `p` answer tokens
    /// committed (`p` = 1 .. the answer's length; the first token comes from the prefill).
    pub accepted: Vec<u8>,
    /// `rows[p - 1]`: the rows that iteration verifies (the root included).
    pub rows: Vec<u16>,
}

/// One recorded answer: its length and, per arm, its trace (`None` for plain decoding, which accepts
/// nothing and verifies one row).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SequenceTrace {
    /// Answer tokens (the prefill's first token included).
    pub len: usize,
    /// Per arm, in the policy's arm order.
    pub arms: Vec<Option<ArmTrace>>,
}

/// Recorded answers plus the engine's timings: a deterministic stand-in for decoding them.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// Drafting seconds per iteration of each arm (0 for plain decoding).
    pub draft_s: Vec<f64>,
    /// Verification seconds by rows verified, `(rows, seconds)` ascending by rows; interpolated
    /// linearly between entries and extrapolated from the last two.
    pub verify_s: Vec<(u32, f64)>,
    /// The answers, decoded one after another.
    pub sequences: Vec<SequenceTrace>,
}

impl Replay {
    /// Checks the shapes: one drafting time per arm, a non-empty ascending cost table of finite
    /// non-negative seconds, and per sequence one entry per arm whose traces cover every position.
    pub fn validate(&self, arms: &[super::Arm]) -> Result<(), Error> {
        if self.draft_s.len() != arms.len() {
            return Err(Error::InvalidArgument("replay: one drafting time per arm"));
        }
        if self.verify_s.is_empty()
            || self.verify_s.windows(2).any(|w| w[0].0 >= w[1].0)
            || self
                .verify_s
                .iter()
                .any(|&(r, s)| r == 0 || !s.is_finite() || s < 0.0)
            || self.draft_s.iter().any(|s| !s.is_finite() || *s < 0.0)
        {
            return Err(Error::InvalidArgument(
                "replay: timings must be finite, non-negative, by ascending rows >= 1",
            ));
        }
        for seq in &self.sequences {
            if seq.arms.len() != arms.len() {
                return Err(Error::InvalidArgument("replay: one trace slot per arm"));
            }
            for (arm, t) in arms.iter().zip(&seq.arms) {
                match (arm.shape, t) {
                    (Shape::Plain, None) => {}
                    (Shape::Plain, Some(_)) | (_, None) => {
                        return Err(Error::InvalidArgument(
                            "replay: plain decoding has no trace, every drafting arm has one",
                        ));
                    }
                    (_, Some(t)) => {
                        let n = seq.len.saturating_sub(1);
                        if t.accepted.len() != n
                            || t.rows.len() != n
                            || t.accepted.iter().zip(&t.rows).any(|(&a, &r)| a as u16 >= r)
                        {
                            return Err(Error::InvalidArgument(
                                "replay: a trace needs len - 1 positions, fewer accepted than rows",
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Verification seconds of `rows` rows from the table.
    pub fn verify_seconds(&self, rows: u32) -> f64 {
        let t = &self.verify_s;
        match t.iter().position(|&(r, _)| r >= rows) {
            Some(0) => t[0].1,
            Some(i) if t[i].0 == rows => t[i].1,
            Some(i) => lerp(t[i - 1], t[i], rows),
            None if t.len() >= 2 => lerp(t[t.len() - 2], t[t.len() - 1], rows),
            None => t[t.len() - 1].1,
        }
    }

    /// One iteration of arm `arm` on sequence `seq` with `p` tokens committed: (tokens emitted,
    /// rows verified, seconds). The last iteration emits only what is left of the answer.
    pub fn iteration(&self, arm: usize, seq: usize, p: usize) -> (u32, u32, f64) {
        let s = &self.sequences[seq];
        let (accepted, rows) = match &s.arms[arm] {
            None => (0, 1),
            Some(t) => (t.accepted[p - 1] as usize, t.rows[p - 1] as u32),
        };
        let tokens = (accepted + 1).min(s.len - p) as u32;
        (tokens, rows, self.draft_s[arm] + self.verify_seconds(rows))
    }

    /// Tokens per second of arm `arm` alone over every answer (no timing noise).
    pub fn static_throughput(&self, arm: usize) -> f64 {
        let (mut tokens, mut seconds) = (0.0, 0.0);
        for seq in 0..self.sequences.len() {
            let mut p = 1;
            while p < self.sequences[seq].len {
                let (t, _, s) = self.iteration(arm, seq, p);
                tokens += t as f64;
                seconds += s;
                p += t as usize;
            }
        }
        tokens / seconds
    }

    /// The best single arm in hindsight and its tokens per second.
    pub fn best_static(&self) -> (usize, f64) {
        (0..self.draft_s.len())
            .map(|a| (a, self.static_throughput(a)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0))
    }

    /// Runs `policy` over every answer in order, as an engine would (a new sequence per answer, the
    /// policy's memory kept), with `noise` relative timing noise (uniform, e.g. 0.1 for ±5%) drawn
    /// from `seed`. The policy's arms must be the trace's.
    pub fn run(&self, policy: &mut Policy, noise: f64, seed: u64) -> Result<Run, Error> {
        self.validate(policy.arms())?;
        let rng = CounterRng::new(seed);
        let mut counter = 0u64;
        let mut trace = Vec::new();
        for seq in 0..self.sequences.len() {
            policy.reset_sequence();
            let mut p = 1;
            while p < self.sequences[seq].len {
                let arm = policy.choose();
                let (tokens, rows, _) = self.iteration(arm, seq, p);
                counter += 1;
                let jitter = 1.0 + noise * (rng.uniform(counter) - 0.5);
                let fb = Feedback {
                    rows,
                    tokens,
                    verify_s: self.verify_seconds(rows) * jitter,
                    draft_s: self.draft_s[arm] * jitter,
                };
                policy.feedback(arm, &fb)?;
                trace.push(Iteration {
                    arm,
                    tokens,
                    seconds: fb.verify_s + fb.draft_s,
                });
                p += tokens as usize;
            }
        }
        Ok(Run::new(trace, policy.arms().len()))
    }
}

fn lerp(a: (u32, f64), b: (u32, f64), rows: u32) -> f64 {
    let f = (rows as f64 - a.0 as f64) / (b.0 as f64 - a.0 as f64);
    (a.1 + f * (b.1 - a.1)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::{Arm, PolicyParams};

    fn arms() -> Vec<Arm> {
        [
            Shape::Plain,
            Shape::SpecBlock {
                budget: 2,
                max_seeds: 0,
            },
            Shape::SpecBlock {
                budget: 4,
                max_seeds: 0,
            },
        ]
        .into_iter()
        .map(Arm::new)
        .collect()
    }

    /// Answers of `len` tokens where the 2-chain accepts `short` and the 4-chain `long` at every
    /// position, with a CPU-like cost table.
    fn replay(answers: usize, len: usize, short: u8, long: u8) -> Replay {
        let trace = |a: u8, rows: u16| ArmTrace {
            accepted: alloc::vec![a; len - 1],
            rows: alloc::vec![rows; len - 1],
        };
        Replay {
            draft_s: alloc::vec![0.0, 0.001, 0.002],
            verify_s: alloc::vec![(1, 0.010), (3, 0.011), (5, 0.012), (9, 0.020)],
            sequences: (0..answers)
                .map(|_| SequenceTrace {
                    len,
                    arms: alloc::vec![None, Some(trace(short, 3)), Some(trace(long, 5))],
                })
                .collect(),
        }
    }

    #[test]
    fn static_throughput_walks_the_answer() {
        // 2-chain accepting 2 every time: positions 1, 4, 7 emit 3 tokens each, then 1 (len 11);
        // 4 iterations of 1 + 11 ms.
        let r = replay(1, 11, 2, 0);
        let want = 10.0 / (4.0 * 0.012);
        assert!((r.static_throughput(1) - want).abs() < 1e-9);
        // Plain: 10 iterations of 10 ms.
        assert!((r.static_throughput(0) - 100.0).abs() < 1e-9);
        assert!((r.verify_seconds(2) - 0.0105).abs() < 1e-12);
        assert!((r.verify_seconds(15) - 0.032).abs() < 1e-12, "extrapolated");
        assert_eq!(r.best_static().0, 1);
    }

    #[test]
    fn the_policy_finds_the_best_arm_of_the_recorded_text() {
        // The 4-chain accepts 4 (5 tokens per 14 ms) against the 2-chain's 2 (3 per 12 ms).
        let r = replay(20, 129, 2, 4);
        let (best, best_tps) = r.best_static();
        assert_eq!(best, 2);
        let mut p = Policy::new(&arms(), PolicyParams::default()).unwrap();
        let run = r.run(&mut p, 0.1, 7).unwrap();
        let n = run.trace.len();
        let tps = run.tokens_per_second(0, n);
        assert!(tps >= 0.9 * best_tps, "{tps} vs {best_tps}");
        assert!(run.pulls_after(n / 2)[2] as f64 >= 0.9 * (n - n / 2) as f64);
        let emitted: u32 = run.trace.iter().map(|i| i.tokens).sum();
        assert_eq!(
            emitted as usize,
            20 * 128,
            "every answer replayed to its end"
        );
    }

    #[test]
    fn malformed_replays_are_refused() {
        let mut p = Policy::new(&arms(), PolicyParams::default()).unwrap();
        let mut r = replay(1, 11, 2, 4);
        r.sequences[0].arms[1].as_mut().unwrap().accepted.pop();
        assert!(r.run(&mut p, 0.0, 1).is_err());
        let mut r = replay(1, 11, 2, 4);
        r.sequences[0].arms[2].as_mut().unwrap().accepted[0] = 5;
        assert!(
            r.run(&mut p, 0.0, 1).is_err(),
            "accepted must be below rows"
        );
        let mut r = replay(1, 11, 2, 4);
        r.verify_s.reverse();
        assert!(r.run(&mut p, 0.0, 1).is_err());
        let mut r = replay(1, 11, 2, 4);
        r.draft_s.pop();
        assert!(r.run(&mut p, 0.0, 1).is_err());
        let mut r = replay(1, 11, 2, 4);
        r.sequences[0].arms[0] = r.sequences[0].arms[1].clone();
        assert!(r.run(&mut p, 0.0, 1).is_err());
    }
}
