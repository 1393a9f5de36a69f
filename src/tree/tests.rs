use super::*;
use std::vec;

fn tree(max_nodes: u32, max_depth: u32) -> DraftTree {
    let mut t = DraftTree::new(TreeParams {
        max_nodes,
        max_depth,
    })
    .unwrap();
    t.reset(1).unwrap();
    t
}

/// Token path of every node, root excluded, as sorted vectors for order-free comparison.
fn paths(t: &DraftTree) -> std::vec::Vec<std::vec::Vec<i32>> {
    let mut out: std::vec::Vec<_> = (1..t.len())
        .map(|i| {
            let mut p = std::vec::Vec::new();
            let mut a = i as i32;
            while a > 0 {
                p.push(t.tokens()[a as usize]);
                a = t.parents()[a as usize];
            }
            p.reverse();
            p
        })
        .collect();
    out.sort();
    out
}

#[test]
fn dedup_keeps_the_better_duplicate_and_merges_children() {
    let mut t = tree(16, 8);
    let a = t.add(0, 5, -1.0).unwrap(); // loser: same (root, 5) as `b`, lower cum
    let a1 = t.add(a, 6, -0.1).unwrap(); // moves under b, duplicates b's child 6 with a higher cum
    let _a2 = t.add(a1, 7, -0.1).unwrap(); // grandchild follows a1
    let b = t.add(0, 5, -0.5).unwrap();
    let _b1 = t.add(b, 6, -2.0).unwrap();
    let _b2 = t.add(b, 8, -0.3).unwrap();
    t.finalize(16).unwrap();
    assert_eq!(paths(&t), [vec![5], vec![5, 6], vec![5, 6, 7], vec![5, 8]]);
    // Winner of (root, 5) is `b` (cum -0.5); winner of (b, 6) is a1 (cum -1.1 beats -2.5).
    assert_eq!(t.source_ids(), &[0, 4, 6, 2, 3]);
    assert_eq!(t.cum_logprobs(), &[0.0, -0.5, -0.8, -1.1, -1.2]);
    assert_eq!(t.parents(), &[-1, 0, 1, 1, 3]);
}

#[test]
fn duplicate_arriving_later_adopts_children_of_the_earlier_one() {
    let mut t = tree(16, 8);
    let a = t.add(0, 3, -2.0).unwrap();
    t.add(a, 4, -0.1).unwrap();
    let b = t.add(0, 3, -0.2).unwrap(); // displaces a
    t.add(b, 4, -0.05).unwrap(); // duplicates the adopted child, and wins
    let c = t.add(a, 9, -0.1).unwrap(); // added under the loser: resolves to b
    t.finalize(16).unwrap();
    assert_eq!(paths(&t), [vec![3], vec![3, 4], vec![3, 9]]);
    assert_eq!(t.source_ids(), &[0, 3, 4, c]);
}

#[test]
fn budget_is_exact_and_keeps_ancestors() {
    let mut t = tree(32, 8);
    let mut parent = 0;
    for i in 0..6 {
        parent = t.add(parent, 10 + i, -0.01).unwrap(); // long likely chain
    }
    for i in 0..6 {
        t.add(0, 20 + i, -3.0 - i as f32).unwrap();
    }
    t.finalize(8).unwrap();
    assert_eq!(t.len(), 9);
    assert_eq!(t.depths(), &[0, 1, 1, 1, 2, 3, 4, 5, 6]);
    assert_eq!(&t.tokens()[1..4], &[10, 20, 21]);
    for i in 1..t.len() {
        assert!((t.parents()[i] as usize) < i);
    }
    // Zero-probability ties: the parent still ranks first.
    let mut z = tree(8, 8);
    let p = z.add(0, 1, 0.0).unwrap();
    z.add(p, 2, 0.0).unwrap();
    z.add(0, 3, 0.0).unwrap();
    z.finalize(1).unwrap();
    assert_eq!(z.tokens(), &[1, 1]);
}

#[test]
fn positive_logprob_is_clamped_and_bad_values_rejected() {
    let mut t = tree(4, 2);
    let a = t.add(0, 1, 1e-7).unwrap();
    assert_eq!(t.cum_logprobs()[a as usize], 0.0);
    assert!(matches!(
        t.add(0, 2, f32::NAN),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        t.add(0, 2, f32::INFINITY),
        Err(Error::NonFinite { .. })
    ));
    assert!(t.add(0, 2, f32::NEG_INFINITY).is_ok());
    assert!(matches!(
        t.add(9, 2, -1.0),
        Err(Error::InvalidNode { node: 9, .. })
    ));
    let b = t.add(a, 3, -1.0).unwrap();
    assert!(matches!(
        t.add(b, 4, -1.0),
        Err(Error::DepthLimit { max_depth: 2 })
    ));
    t.add(0, 5, -1.0).unwrap();
    assert!(matches!(t.add(0, 6, -1.0), Err(Error::Capacity { .. })));
    assert!(matches!(t.finalize(5), Err(Error::Capacity { .. })));
    t.finalize(4).unwrap();
    assert_eq!(t.len(), 5);
}
