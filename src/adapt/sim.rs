//! Synthetic environments for draft-shape policies: a verification-cost curve, per-arm drafting costs
//! and a per-level acceptance probability that may shift mid-stream. Used by the policy's tests and by
//! `examples/policy_sim.rs`, which prints the comparison in `docs/adaptive.md`.

use alloc::vec::Vec;

use super::{Arm, Feedback, Policy, Shape};
use crate::rng::CounterRng;

/// A 2-core CPU: verification seconds of `rows` rows (shaped like `specblock bench --bf16` on the
/// AVX2 host: t(1) = 15 ms, t(5) = 18.6 ms, t(9) = 32.6 ms, t(17) = 60.6 ms, then 2.5 ms per row).
pub fn cpu_cost(rows: f64) -> f64 {
    let r = rows - 1.0;
    if r <= 4.0 {
        0.015 + 0.0009 * r
    } else if r <= 16.0 {
        0.0186 + 0.0035 * (r - 4.0)
    } else {
        0.0606 + 0.0025 * (r - 16.0)
    }
}

/// A GPU: verifying up to a hundred rows costs about what one row does.
pub fn gpu_cost(rows: f64) -> f64 {
    0.010 + 0.00002 * (rows - 1.0)
}

/// The arm set of the tests: plain decoding, SpecBlock block-1 chains and trees up to the authors' 90
/// nodes, and two EAGLE-3 trees.
pub fn ladder() -> Vec<Arm> {
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
        Shape::SpecBlock {
            budget: 8,
            max_seeds: 0,
        },
        Shape::SpecBlock {
            budget: 16,
            max_seeds: 8,
        },
        Shape::SpecBlock {
            budget: 32,
            max_seeds: u32::MAX,
        },
        Shape::SpecBlock {
            budget: 90,
            max_seeds: u32::MAX,
        },
        Shape::Eagle3 {
            budget: 6,
            depth: 3,
            top_k: 2,
        },
        Shape::Eagle3 {
            budget: 16,
            depth: 6,
            top_k: 6,
        },
    ]
    .into_iter()
    .map(Arm::new)
    .collect()
}

/// How each ladder arm behaves: (rows, deepest accepted path, width per level, drafting seconds).
fn arm_model(arm: &Arm) -> (f64, u32, u32, f64) {
    match arm.shape {
        Shape::Plain => (1.0, 0, 1, 0.0),
        Shape::SpecBlock { budget, max_seeds } => {
            let depth = if max_seeds == 0 {
                budget.min(4)
            } else {
                budget.min(8)
            };
            let width = (budget / depth.max(1)).max(1);
            let draft = if max_seeds == 0 {
                0.0015
            } else {
                0.002 + 0.00005 * budget as f64
            };
            (budget as f64 + 1.0, depth, width, draft)
        }
        Shape::Eagle3 {
            budget,
            depth,
            top_k,
        } => {
            let d = budget.min(depth + 1);
            let width = top_k.min((budget / d.max(1)).max(1));
            (budget as f64 + 1.0, d, width, 0.0005 * depth as f64)
        }
    }
}

/// A synthetic decoding stream.
pub struct Environment {
    cost: fn(f64) -> f64,
    /// Per-level acceptance of a one-wide chain from each iteration on, `(first iteration, p)` in
    /// ascending order starting at 0; with `period > 0` the schedule repeats every `period` iterations.
    schedule: Vec<(usize, f64)>,
    period: usize,
}

impl Environment {
    /// A stream with verification cost `cost`, acceptance `accept[0]` (and `accept[1]` from
    /// iteration `shift` on; 0 = never).
    pub fn new(cost: fn(f64) -> f64, accept: [f64; 2], shift: usize) -> Self {
        let mut schedule = alloc::vec![(0, accept[0])];
        if shift > 0 {
            schedule.push((shift, accept[1]));
        }
        Environment {
            cost,
            schedule,
            period: 0,
        }
    }

    /// A stream that alternates `good_len` iterations at acceptance `good` with `bad_len` at `bad`:
    /// the bursts of rejections real text has (a prompt whose answer the drafter cannot guess
    /// between prompts it can), which an i.i.d. acceptance never produces.
    pub fn bursts(
        cost: fn(f64) -> f64,
        good: f64,
        good_len: usize,
        bad: f64,
        bad_len: usize,
    ) -> Self {
        Environment {
            cost,
            schedule: alloc::vec![(0, good), (good_len, bad)],
            period: good_len + bad_len,
        }
    }

    /// The per-level acceptance at `iteration`.
    pub fn acceptance(&self, iteration: usize) -> f64 {
        let it = if self.period > 0 {
            iteration % self.period
        } else {
            iteration
        };
        self.schedule
            .iter()
            .take_while(|(from, _)| *from <= it)
            .last()
            .map_or(0.0, |&(_, p)| p)
    }

    fn level_accept(&self, iteration: usize, width: u32, level: u32) -> f64 {
        let p = self.acceptance(iteration);
        // Wider levels hold the right token more often; deeper levels are harder.
        let mut miss = 1.0;
        for _ in 0..width {
            miss *= 1.0 - p;
        }
        let mut decay = 1.0;
        for _ in 0..level {
            decay *= 0.9;
        }
        (1.0 - miss) * decay
    }

    /// Expected tokens per second of arm `arm` at `iteration`.
    pub fn throughput(&self, arm: &Arm, iteration: usize) -> f64 {
        self.expected_tokens(arm, iteration) / self.iteration_seconds(arm)
    }

    /// Seconds of one iteration of `arm`: verification plus drafting.
    fn iteration_seconds(&self, arm: &Arm) -> f64 {
        let (rows, _, _, draft) = arm_model(arm);
        (self.cost)(rows) + draft
    }

    /// Expected tokens per second of `arm` run alone over iterations `from..to` (tokens over seconds,
    /// so slow stretches weigh by their time).
    pub fn static_throughput(&self, arm: &Arm, from: usize, to: usize) -> f64 {
        let tokens: f64 = (from..to).map(|i| self.expected_tokens(arm, i)).sum();
        tokens / (self.iteration_seconds(arm) * (to - from).max(1) as f64)
    }

    /// The best single ladder arm over iterations `from..to` (the best static shape in hindsight)
    /// and its expected tokens per second.
    pub fn best_static(&self, from: usize, to: usize) -> (usize, f64) {
        let arms = ladder();
        (0..arms.len())
            .map(|a| (a, self.static_throughput(&arms[a], from, to)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0))
    }

    fn expected_tokens(&self, arm: &Arm, iteration: usize) -> f64 {
        let (_, depth, width, _) = arm_model(arm);
        let (mut tau, mut reach) = (1.0, 1.0);
        for level in 0..depth {
            reach *= self.level_accept(iteration, width, level);
            tau += reach;
        }
        tau
    }

    /// The best ladder arm at `iteration`.
    pub fn best_arm(&self, iteration: usize) -> usize {
        let arms = ladder();
        (0..arms.len())
            .max_by(|&a, &b| {
                self.throughput(&arms[a], iteration)
                    .total_cmp(&self.throughput(&arms[b], iteration))
            })
            .unwrap_or(0)
    }

    /// The best ladder arm's expected tokens per second at `iteration`.
    pub fn best_throughput(&self, iteration: usize) -> f64 {
        let arms = ladder();
        self.throughput(&arms[self.best_arm(iteration)], iteration)
    }

    /// One iteration of `arm`: the feedback an engine would report (5% timing noise).
    pub fn step(
        &self,
        arm: &Arm,
        iteration: usize,
        rng: &CounterRng,
        counter: &mut u64,
    ) -> Feedback {
        let (rows, depth, width, draft) = arm_model(arm);
        let mut tokens = 1u32;
        for level in 0..depth {
            *counter += 1;
            if rng.uniform(*counter) < self.level_accept(iteration, width, level) {
                tokens += 1;
            } else {
                break;
            }
        }
        *counter += 1;
        let noise = 1.0 + 0.1 * (rng.uniform(*counter) - 0.5);
        Feedback {
            rows: rows as u32,
            tokens,
            verify_s: (self.cost)(rows) * noise,
            draft_s: draft * noise,
        }
    }
}

/// One simulated iteration.
#[derive(Clone, Copy, Debug)]
pub struct Iteration {
    /// The arm chosen.
    pub arm: usize,
    /// Tokens emitted.
    pub tokens: u32,
    /// Seconds it took.
    pub seconds: f64,
}

/// A simulated run.
pub struct Run {
    /// Every iteration.
    pub trace: Vec<Iteration>,
    arms: usize,
}

impl Run {
    pub(crate) fn new(trace: Vec<Iteration>, arms: usize) -> Self {
        Run { trace, arms }
    }

    /// Tokens per second over iterations `from..to` (all tokens over all seconds).
    pub fn tokens_per_second(&self, from: usize, to: usize) -> f64 {
        let (tokens, seconds) = self.trace[from..to].iter().fold((0.0, 0.0), |(t, s), it| {
            (t + it.tokens as f64, s + it.seconds)
        });
        tokens / seconds
    }

    /// Pulls of each arm from iteration `from` on.
    pub fn pulls_after(&self, from: usize) -> Vec<u64> {
        let mut v = alloc::vec![0u64; self.arms];
        for it in &self.trace[from..] {
            v[it.arm] += 1;
        }
        v
    }
}

/// Runs `policy` (over the ladder) for `iterations` in `env`.
pub fn run(env: &Environment, policy: &mut Policy, iterations: usize, seed: u64) -> Run {
    let rng = CounterRng::new(seed);
    let mut counter = 0u64;
    let mut trace = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let arm = policy.choose();
        let fb = env.step(&policy.arms()[arm], i, &rng, &mut counter);
        policy
            .feedback(arm, &fb)
            .expect("simulated feedback is valid");
        trace.push(Iteration {
            arm,
            tokens: fb.tokens,
            seconds: fb.verify_s + fb.draft_s,
        });
    }
    Run {
        trace,
        arms: policy.arms().len(),
    }
}
