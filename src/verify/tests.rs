use super::*;
use crate::tree::TreeParams;
use std::vec;
use std::vec::Vec;

fn tree_with_children(children: &[i32]) -> DraftTree {
    let mut t = DraftTree::new(TreeParams {
        max_nodes: 16,
        max_depth: 4,
    })
    .unwrap();
    t.reset(0).unwrap();
    for (i, &c) in children.iter().enumerate() {
        t.add(0, c, -(i as f32) - 0.1).unwrap();
    }
    t.finalize(16).unwrap();
    t
}

#[test]
fn certain_child_is_always_accepted_and_impossible_never() {
    let t = tree_with_children(&[2, 3]);
    let vocab = 4;
    let mut logits = vec![0.0f32; t.len() * vocab];
    logits[..vocab].copy_from_slice(&[
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        0.0,
    ]);
    for seed in 0..200 {
        let a = sample(&t, &logits, vocab, &Sampling::default(), seed).unwrap();
        assert_eq!(a.tokens(), &[3]);
        assert!((0..4).contains(&a.bonus_token));
    }
}

#[test]
fn residual_never_emits_a_rejected_child() {
    let t = tree_with_children(&[0, 1]);
    let vocab = 3;
    let logits = vec![0.0f32; t.len() * vocab];
    let mut seen = [0u32; 3];
    for seed in 0..3000 {
        let a = sample(&t, &logits, vocab, &Sampling::default(), seed).unwrap();
        let first = if a.n_accepted > 0 {
            a.tokens[0]
        } else {
            a.bonus_token
        };
        seen[first as usize] += 1;
    }
    // Uniform target over 3 tokens: each about 1000.
    for s in seen {
        assert!((850..1150).contains(&s), "{seen:?}");
    }
}

/// Reference cut for top-k then top-p, by sorting (ties at the boundaries kept).
fn reference_kept(row: &[f32], t: f32, k: usize, p: f64) -> Vec<bool> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    let kth = if k > 0 && k < row.len() {
        row[order[k - 1]]
    } else {
        f32::NEG_INFINITY
    };
    let max = row[order[0]] as f64;
    let w: Vec<f64> = row
        .iter()
        .map(|&l| {
            if l >= kth {
                ((l as f64 - max) / t as f64).exp()
            } else {
                0.0
            }
        })
        .collect();
    let z: f64 = w.iter().sum();
    let mut kept = vec![false; row.len()];
    for &j in &order {
        let above: f64 = (0..row.len())
            .filter(|&i| row[i] > row[j])
            .map(|i| w[i])
            .sum();
        kept[j] = w[j] > 0.0 && above / z < p;
    }
    kept
}

#[test]
fn top_k_top_p_cut_matches_sorting_reference() {
    let rng = crate::rng::CounterRng::new(11);
    let mut draws = (0u64..).map(|c| rng.uniform(c));
    for trial in 0..300 {
        let n = 2 + (draws.next().unwrap() * 60.0) as usize;
        let row: Vec<f32> = (0..n)
            // Quarter steps so ties are common.
            .map(|_| ((draws.next().unwrap() * 16.0 - 8.0) as f32 * 4.0).round() / 4.0)
            .collect();
        let s = Sampling {
            temperature: [0.5f32, 1.0, 1.7][trial % 3],
            top_k: (trial % 7) as i32,
            top_p: [1.0f32, 0.9, 0.5, 0.2][trial % 4],
        };
        let d = dist::RowDist::new(&row, &s, 0).unwrap();
        let want = reference_kept(&row, s.temperature, s.top_k as usize, s.top_p as f64);
        for (j, &l) in row.iter().enumerate() {
            // Tokens exactly at the top-p boundary can differ by summation rounding; the test data keeps
            // masses away from it except for exact ties, which both sides keep together.
            assert_eq!(
                d.weight(l) > 0.0,
                want[j],
                "trial {trial} token {j} row {row:?} {s:?}"
            );
        }
    }
}
