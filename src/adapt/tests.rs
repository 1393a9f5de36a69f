//! The policy against synthetic environments with a known best arm (see `sim`).

use alloc::vec::Vec;

use super::sim::{Environment, cpu_cost, gpu_cost, ladder, run};
use super::*;

fn policy(algorithm: Algorithm) -> Policy {
    Policy::new(
        &ladder(),
        PolicyParams {
            algorithm,
            ..PolicyParams::default()
        },
    )
    .unwrap()
}

/// Throughput of the policy over iterations `from..to` against the best arm's expected throughput.
fn ratio(env: &Environment, p: &mut Policy, from: usize, to: usize, seed: u64) -> (f64, Vec<u64>) {
    let r = run(env, p, to, seed);
    let best = env.best_throughput(to - 1);
    (r.tokens_per_second(from, to) / best, r.pulls_after(from))
}

#[test]
fn weak_drafter_on_a_cpu_stops_drafting() {
    // Acceptance of an untrained drafter: drafting never pays; plain decoding is the best arm.
    let env = Environment::new(cpu_cost, [0.05; 2], 0);
    for seed in 0..8 {
        let mut p = policy(Algorithm::CostModel);
        let (r, pulls) = ratio(&env, &mut p, 1000, 3000, seed);
        assert!(r >= 0.95, "seed {seed}: {r:.3} of the best arm");
        assert!(
            pulls[0] as f64 >= 0.9 * 2000.0,
            "plain most of the time: {pulls:?}"
        );
    }
}

#[test]
fn trained_drafter_on_a_cpu_finds_the_small_chain() {
    // A good drafter: a short chain pays on a CPU, big trees cost more than they give.
    let env = Environment::new(cpu_cost, [0.75; 2], 0);
    let best = env.best_arm(0);
    assert!(matches!(
        ladder()[best].shape,
        Shape::SpecBlock { budget: 2..=8, .. }
    ));
    for seed in 0..8 {
        let mut p = policy(Algorithm::CostModel);
        let (r, _) = ratio(&env, &mut p, 1000, 3000, seed);
        assert!(r >= 0.95, "seed {seed}: {r:.3} of the best arm");
    }
}

#[test]
fn flat_gpu_cost_chooses_large_trees() {
    let env = Environment::new(gpu_cost, [0.75; 2], 0);
    let best = env.best_arm(0);
    assert!(
        ladder()[best].shape.max_rows() >= 32,
        "{:?}",
        ladder()[best]
    );
    for seed in 0..8 {
        let mut p = policy(Algorithm::CostModel);
        let (r, pulls) = ratio(&env, &mut p, 1000, 3000, seed);
        assert!(r >= 0.95, "seed {seed}: {r:.3} of the best arm");
        // On this curve the trees of 9, 17 and 33 rows are within 6% of each other, too close to
        // rank reliably in 2000 iterations: the policy must stay off the CPU's small shapes and
        // spend most of its iterations on the trees of 17+ rows.
        let pulls_with = |min_rows: u32| -> u64 {
            pulls
                .iter()
                .enumerate()
                .filter(|(i, _)| ladder()[*i].shape.max_rows() >= min_rows)
                .map(|(_, &n)| n)
                .sum()
        };
        assert!(
            pulls_with(9) as f64 >= 0.9 * 2000.0,
            "trees of 9+ rows: {pulls:?}"
        );
        assert!(
            pulls_with(17) as f64 >= 0.6 * 2000.0,
            "trees of 17+ rows: {pulls:?}"
        );
    }
}

/// The text becomes predictable halfway (acceptance 0.05 -> 0.75) and unpredictable again: the policy
/// starts drafting, then stops, each within `TRACK` iterations.
#[test]
fn tracks_an_acceptance_shift_both_ways() {
    const SHIFT: usize = 3000;
    const TRACK: usize = 600;
    for (before, after) in [(0.05, 0.75), (0.75, 0.05)] {
        let env = Environment::new(cpu_cost, [before, after], SHIFT);
        for seed in 0..8 {
            let mut p = policy(Algorithm::CostModel);
            let r = run(&env, &mut p, 2 * SHIFT, seed);
            let got =
                r.tokens_per_second(SHIFT + TRACK, 2 * SHIFT) / env.best_throughput(2 * SHIFT - 1);
            assert!(
                got >= 0.95,
                "{before}->{after} seed {seed}: {got:.3} of the new best arm"
            );
        }
    }
}

#[test]
fn cost_model_beats_independent_arms_on_the_cpu() {
    // The comparison docs/adaptive.md reports: judging arms by a shared cost model wastes less time
    // on expensive shapes than judging each arm's throughput alone.
    let mut sums = [0.0; 2];
    for (e, acc) in [(cpu_cost as fn(f64) -> f64, 0.05), (cpu_cost, 0.75)] {
        let env = Environment::new(e, [acc; 2], 0);
        for seed in 0..8 {
            for (k, alg) in [Algorithm::CostModel, Algorithm::Throughput]
                .into_iter()
                .enumerate()
            {
                let mut p = policy(alg);
                sums[k] += ratio(&env, &mut p, 0, 3000, seed).0;
            }
        }
    }
    assert!(
        sums[0] > sums[1],
        "cost model {:.3} vs throughput UCB {:.3}",
        sums[0] / 8.0,
        sums[1] / 8.0
    );
}

#[test]
fn feedback_is_validated() {
    let mut p = policy(Algorithm::CostModel);
    let ok = Feedback {
        rows: 5,
        tokens: 2,
        verify_s: 0.01,
        draft_s: 0.001,
    };
    assert!(p.feedback(0, &ok).is_ok());
    for bad in [
        Feedback {
            verify_s: f64::NAN,
            ..ok
        },
        Feedback {
            draft_s: -1.0,
            ..ok
        },
        Feedback { tokens: 6, ..ok },
        Feedback { tokens: 0, ..ok },
        Feedback {
            rows: 0,
            tokens: 0,
            ..ok
        },
        Feedback {
            verify_s: f64::INFINITY,
            ..ok
        },
    ] {
        assert!(p.feedback(0, &bad).is_err(), "{bad:?}");
    }
    assert!(p.feedback(99, &ok).is_err());
    assert_eq!(p.iterations(), 1, "rejected feedback changes nothing");
    assert!(Policy::new(&[], PolicyParams::default()).is_err());
    let bad_discount = PolicyParams {
        discount: 1.5,
        ..PolicyParams::default()
    };
    assert!(Policy::new(&ladder(), bad_discount).is_err());
}

#[test]
fn cost_model_fits_a_line() {
    let mut m = CostModel::new(1.0);
    assert_eq!(m.predict(3.0), None);
    m.observe(1.0, 0.010);
    assert_eq!(m.predict(50.0), Some(0.010), "one size seen: flat");
    for r in [1.0, 5.0, 9.0, 17.0] {
        m.observe(r, 0.010 + 0.002 * (r - 1.0));
    }
    let (a, b) = m.line();
    assert!(
        (b - 0.002).abs() < 1e-9 && (a - 0.008).abs() < 1e-9,
        "{a} {b}"
    );
}

/// Bursts of rejections between predictable stretches, repeatedly (prompts the drafter cannot guess
/// between prompts it can), which an i.i.d. acceptance never produces: over the stream the policy
/// must stay near the best static shape in hindsight. Measured over 32 seeds: 0.964 and 0.973 of it
/// on average, 0.89-0.90 in the worst seed (docs/adaptive.md).
#[test]
fn stays_near_the_best_static_shape_through_repeated_bursts() {
    const N: usize = 6000;
    const SEEDS: u64 = 16;
    for (good, good_len, bad, bad_len) in [(0.75, 600, 0.03, 150), (0.6, 300, 0.03, 300)] {
        let env = Environment::bursts(cpu_cost, good, good_len, bad, bad_len);
        let (_, best) = env.best_static(0, N);
        let mut sum = 0.0;
        for seed in 0..SEEDS {
            let mut p = policy(Algorithm::CostModel);
            let x = run(&env, &mut p, N, seed).tokens_per_second(0, N) / best;
            assert!(
                x >= 0.85,
                "{good}/{bad} seed {seed}: {x:.3} of the best static shape"
            );
            sum += x;
        }
        let mean = sum / SEEDS as f64;
        assert!(
            mean >= 0.95,
            "{good}/{bad}: mean {mean:.3} of the best static shape"
        );
    }
}
