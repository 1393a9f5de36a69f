//! The draft-shape policy on synthetic environments (`specblock::adapt::sim`): for each environment,
//! the arms' expected tokens/s, then each algorithm's speed relative to the best arm over 3000
//! iterations (mean of 8 seeds) and where its pulls went. `cargo run --release --example policy_sim`
//! prints the table in docs/adaptive.md.

use specblock::adapt::sim::{Environment, cpu_cost, gpu_cost, ladder, run};
use specblock::adapt::{Algorithm, Policy, PolicyParams};

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
            for seed in 0..8 {
                let mut p = Policy::new(
                    &arms,
                    PolicyParams {
                        algorithm: alg,
                        exploration: c,
                        discount: g,
                        ..PolicyParams::default()
                    },
                )
                .unwrap();
                let r = run(&env, &mut p, 3000, seed);
                let from = if shift > 0 { shift } else { 0 };
                let (tok, sec) = r.trace[from..].iter().fold((0.0, 0.0), |(a, b), it| {
                    (a + it.tokens as f64, b + it.seconds)
                });
                sum += tok / sec / env.best_throughput(2999);
                for (i, n) in r.pulls_after(from).into_iter().enumerate() {
                    pulls[i] += n;
                }
            }
            println!(
                "  {alg:?}: {:.3} of the best arm; pulls {pulls:?}",
                sum / 8.0
            );
        }
    }
}
