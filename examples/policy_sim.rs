//! The draft-shape policy on synthetic environments (`specblock::adapt::sim`): for each environment,
//! the arms' expected tokens/s, then each algorithm's speed relative to the best arm over 3000
//! iterations (mean of 8 seeds; `SEEDS=N` for more) and where its pulls went; then the cost-model
//! policy through bursts of rejections against the best static shape in hindsight. `cargo run
//! --release --example policy_sim` prints the tables in docs/adaptive.md.

use specblock::adapt::sim::{Environment, cpu_cost, gpu_cost, ladder, run};
use specblock::adapt::{Algorithm, Arm, Policy, PolicyParams};

/// A named environment: cost curve, acceptance before and after the shift, shift iteration.
type Env = (&'static str, fn(f64) -> f64, [f64; 2], usize);

fn main() {
    let arms = ladder();
    let envs: [Env; 5] = [
        ("CPU, untrained drafter", cpu_cost, [0.05, 0.05], 0),
        ("CPU, weak drafter (p 0.4)", cpu_cost, [0.4, 0.4], 0),
        ("CPU, trained drafter (p 0.75)", cpu_cost, [0.75, 0.75], 0),
        ("GPU, trained drafter", gpu_cost, [0.75, 0.75], 0),
        (
            "CPU, shift 0.05 -> 0.75 at 1500",
            cpu_cost,
            [0.05, 0.75],
            1500,
        ),
    ];
    let args: Vec<String> = std::env::args().collect();
    let c: f64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(PolicyParams::default().exploration);
    let g: f64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(PolicyParams::default().discount);
    println!("exploration {c}, discount {g}");
    for (name, cost, acc, shift) in envs {
        let env = Environment::new(cost, acc, shift);
        let tput: Vec<String> = arms
            .iter()
            .map(|a| format!("{:.0}", env.throughput(a, 2999)))
            .collect();
        println!(
            "\n{name}: arm tok/s at the end [{}], best arm {}",
            tput.join(" "),
            env.best_arm(2999)
        );
        for alg in [Algorithm::CostModel, Algorithm::Throughput] {
            let (mut sum, mut pulls) = (0.0, vec![0u64; arms.len()]);
            for seed in 0..seeds() {
                let mut p = policy(&arms, alg, c, g);
                let r = run(&env, &mut p, 3000, seed);
                let from = if shift > 0 { shift } else { 0 };
                sum += r.tokens_per_second(from, 3000) / env.best_throughput(2999);
                for (i, n) in r.pulls_after(from).into_iter().enumerate() {
                    pulls[i] += n;
                }
            }
            println!(
                "  {alg:?}: {:.3} of the best arm; pulls {pulls:?}",
                sum / seeds() as f64
            );
        }
    }
    bursts(c, g);
}

/// Streams with bursts of rejections (good stretches at acceptance 0.75 or 0.6 between bad ones at
/// 0.03): the policy's speed over 6000 iterations against the best static shape in hindsight and
/// against plain decoding (mean of 8 seeds, the worst seed in brackets).
fn bursts(c: f64, g: f64) {
    let arms = ladder();
    let envs: [(&str, Environment); 4] = [
        (
            "CPU, bursts: 600 at p 0.75, 150 at p 0.03",
            Environment::bursts(cpu_cost, 0.75, 600, 0.03, 150),
        ),
        (
            "CPU, bursts: 300 at p 0.6, 300 at p 0.03",
            Environment::bursts(cpu_cost, 0.6, 300, 0.03, 300),
        ),
        (
            "CPU, bursts: 150 at p 0.75, 150 at p 0.2",
            Environment::bursts(cpu_cost, 0.75, 150, 0.2, 150),
        ),
        (
            "CPU, bursts: 1000 at p 0.05, 100 at p 0.6",
            Environment::bursts(cpu_cost, 0.05, 1000, 0.6, 100),
        ),
    ];
    const N: usize = 6000;
    for (name, env) in envs {
        let (best, best_tput) = env.best_static(0, N);
        let plain = env.static_throughput(&arms[0], 0, N);
        let (mut sum, mut worst, mut sum_plain, mut pulls) =
            (0.0, f64::MAX, 0.0, vec![0u64; arms.len()]);
        for seed in 0..seeds() {
            let mut p = policy(&arms, Algorithm::CostModel, c, g);
            let r = run(&env, &mut p, N, seed);
            let speed = r.tokens_per_second(0, N);
            let x = speed / best_tput;
            sum += x;
            worst = worst.min(x);
            sum_plain += speed / plain;
            for (i, n) in r.pulls_after(0).into_iter().enumerate() {
                pulls[i] += n;
            }
        }
        println!(
            "\n{name}: best static arm {best} ({:.2}x plain)\n  CostModel: {:.3} ({worst:.3}) of the best static, {:.3}x plain; pulls {pulls:?}",
            best_tput / plain,
            sum / seeds() as f64,
            sum_plain / seeds() as f64
        );
    }
}

/// A policy over `arms` with exploration `c` and discount `g`, the other parameters at their defaults.
fn policy(arms: &[Arm], algorithm: Algorithm, c: f64, g: f64) -> Policy {
    Policy::new(
        arms,
        PolicyParams {
            algorithm,
            exploration: c,
            discount: g,
            ..PolicyParams::default()
        },
    )
    .unwrap()
}

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seeds per environment (`SEEDS`, default 8).
fn seeds() -> u64 {
    env_or("SEEDS", 8.0) as u64
}
