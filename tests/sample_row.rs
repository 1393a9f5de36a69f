//! `verify::sample_row`, plain decoding's sampler: its frequencies match the target distribution
//! (temperature, top-k, top-p) and it agrees with `verify::sample` on a root-only tree.

use specblock::tree::{DraftTree, TreeParams};
use specblock::verify::{self, Sampling};

/// The target distribution computed directly: softmax(l / T), then top-k, then top-p (ties kept).
fn reference(row: &[f32], s: &Sampling) -> Vec<f64> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    let w: Vec<f64> = row
        .iter()
        .map(|&l| ((l as f64 - max) / s.temperature as f64).exp())
        .collect();
    let mut keep = vec![true; row.len()];
    if s.top_k > 0 && (s.top_k as usize) < row.len() {
        let kth = row[idx[s.top_k as usize - 1]];
        for (i, &l) in row.iter().enumerate() {
            keep[i] = l >= kth;
        }
    }
    let z: f64 = (0..row.len()).filter(|&i| keep[i]).map(|i| w[i]).sum();
    if s.top_p < 1.0 {
        let mut above = 0.0;
        let mut cut = f32::NEG_INFINITY;
        let mut i = 0;
        while i < idx.len() {
            let v = row[idx[i]];
            let mut group = 0.0;
            while i < idx.len() && row[idx[i]] == v {
                if keep[idx[i]] {
                    group += w[idx[i]];
                }
                i += 1;
            }
            if above + group >= s.top_p as f64 * z {
                cut = v;
                break;
            }
            above += group;
        }
        for (i, &l) in row.iter().enumerate() {
            keep[i] &= l >= cut;
        }
    }
    let z: f64 = (0..row.len()).filter(|&i| keep[i]).map(|i| w[i]).sum();
    (0..row.len())
        .map(|i| if keep[i] { w[i] / z } else { 0.0 })
        .collect()
}

#[test]
fn frequencies_match_the_target_distribution() {
    let row: Vec<f32> = vec![
        2.0,
        1.5,
        1.5,
        0.2,
        -1.0,
        3.0,
        f32::NEG_INFINITY,
        0.9,
        2.5,
        -0.3,
    ];
    let configs = [
        Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        },
        Sampling {
            temperature: 0.7,
            top_k: 4,
            top_p: 1.0,
        },
        Sampling {
            temperature: 1.3,
            top_k: 0,
            top_p: 0.8,
        },
        Sampling {
            temperature: 0.9,
            top_k: 6,
            top_p: 0.9,
        },
    ];
    let draws = 200_000u64;
    for s in configs {
        let want = reference(&row, &s);
        let mut counts = vec![0u64; row.len()];
        for i in 0..draws {
            counts[verify::sample_row(&row, &s, 77, i).unwrap() as usize] += 1;
        }
        for (tok, (&c, &p)) in counts.iter().zip(&want).enumerate() {
            if p == 0.0 {
                assert_eq!(
                    c, 0,
                    "{s:?}: token {tok} is outside the kept set but was drawn"
                );
                continue;
            }
            let expected = p * draws as f64;
            let sd = (expected * (1.0 - p)).sqrt();
            assert!(
                (c as f64 - expected).abs() < 5.0 * sd + 1.0,
                "{s:?}: token {tok} drawn {c} times, expected {expected:.0} (sd {sd:.0})"
            );
        }
    }
}

#[test]
fn greedy_ties_and_errors() {
    let s0 = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
    };
    assert_eq!(verify::sample_row(&[1.0, 3.0, 3.0, 2.0], &s0, 1, 0), Ok(1));
    assert!(verify::sample_row(&[], &s0, 1, 0).is_err());
    assert!(verify::sample_row(&[1.0, f32::NAN], &Sampling::default(), 1, 0).is_err());
    assert!(verify::sample_row(&[f32::NEG_INFINITY; 3], &Sampling::default(), 1, 0).is_err());
    let bad = Sampling {
        temperature: -1.0,
        top_k: 0,
        top_p: 1.0,
    };
    assert!(verify::sample_row(&[1.0], &bad, 1, 0).is_err());
}

#[test]
fn agrees_in_law_with_verification_of_an_empty_tree() {
    // With only the root, `sample` emits its bonus token from the same distribution.
    let row: Vec<f32> = vec![0.5, 2.0, -1.0, 1.0];
    let s = Sampling {
        temperature: 0.8,
        top_k: 3,
        top_p: 0.95,
    };
    let mut tree = DraftTree::new(TreeParams {
        max_nodes: 4,
        max_depth: 2,
    })
    .unwrap();
    tree.reset(0).unwrap();
    tree.finalize(0).unwrap();
    let draws = 100_000u64;
    let (mut a, mut b) = (vec![0f64; 4], vec![0f64; 4]);
    for i in 0..draws {
        a[verify::sample_row(&row, &s, 5, i).unwrap() as usize] += 1.0;
        b[verify::sample(&tree, &row, 4, &s, i).unwrap().bonus_token as usize] += 1.0;
    }
    for t in 0..4 {
        let (pa, pb) = (a[t] / draws as f64, b[t] / draws as f64);
        assert!((pa - pb).abs() < 0.01, "token {t}: {pa} vs {pb}");
    }
}
