//! SGLang's golden greedy-verification example (`sgl-kernel/tests/speculative/test_eagle_utils.py`,
//! SGLang's own greedy-verification test), rebuilt through our API. SGLang numbers nodes in its
//! own candidate order; we map our finalized ids back to those with `source_ids`.

use specblock::layout;
use specblock::tree::{DraftTree, TreeParams};
use specblock::verify;

/// Builds a tree from SGLang-style parent lists (node k's parent is `parents[k]`, nodes in SGLang order),
/// with token `tokens[k]` and log-probabilities that make earlier siblings more probable.
fn build(parents: &[i32], tokens: &[i32]) -> DraftTree {
    let mut t = DraftTree::new(TreeParams {
        max_nodes: 16,
        max_depth: 8,
    })
    .unwrap();
    t.reset(tokens[0]).unwrap();
    for k in 1..parents.len() {
        let id = t.add(parents[k], tokens[k], -0.1 * k as f32).unwrap();
        assert_eq!(id, k as i32, "insertion ids follow SGLang's order");
    }
    t.finalize(16).unwrap();
    t
}

/// Target argmax in our finalized row order, from a table indexed by SGLang node id.
fn rows_in_our_order(t: &DraftTree, by_sglang_id: &[i32]) -> Vec<i32> {
    t.source_ids()
        .iter()
        .map(|&s| by_sglang_id[s as usize])
        .collect()
}

fn to_sglang(t: &DraftTree, ours: &[i32]) -> Vec<i32> {
    ours.iter().map(|&n| t.source_ids()[n as usize]).collect()
}

#[test]
fn request_0_accepts_the_second_branch() {
    // Edges 0->1->2 and 0->3->4->5; candidate token of node k is k.
    let parents = [-1, 0, 1, 0, 3, 4];
    let tokens = [0, 1, 2, 3, 4, 5];
    let t = build(&parents, &tokens);
    // SGLang's retrive_next_token / retrive_next_sibling for this tree, by SGLang id.
    let mut fc = vec![0; 6];
    let mut ns = vec![0; 6];
    layout::first_child(&t, &mut fc).unwrap();
    layout::next_sibling(&t, &mut ns).unwrap();
    let map = |x: i32| {
        if x < 0 {
            -1
        } else {
            t.source_ids()[x as usize]
        }
    };
    let mut fc_sglang = vec![0; 6];
    let mut ns_sglang = vec![0; 6];
    for ours in 0..6 {
        let s = t.source_ids()[ours] as usize;
        fc_sglang[s] = map(fc[ours]);
        ns_sglang[s] = map(ns[ours]);
    }
    assert_eq!(fc_sglang, [1, 2, -1, 4, 5, -1]);
    assert_eq!(ns_sglang, [-1, 3, -1, -1, -1, -1]);

    // The target predicts 3 after the root, 4 after node 3, 5 after node 4, and 18 everywhere else.
    let predicts = [3, 18, 18, 4, 5, 18];
    let acc = verify::greedy(&t, &rows_in_our_order(&t, &predicts)).unwrap();
    assert_eq!(acc.n_accepted, 3);
    assert_eq!(to_sglang(&t, acc.nodes()), [3, 4, 5]);
    assert_eq!(acc.tokens(), &[3, 4, 5]);
    assert_eq!(acc.bonus_token, 18);
    let mut keep = [0; 4];
    acc.keep_list(&mut keep).unwrap();
    assert_eq!(to_sglang(&t, &keep), [0, 3, 4, 5]); // SGLang: accept_index [0, 3, 4, 5]
}

#[test]
fn request_1_accepts_two_nodes_through_the_sibling_link() {
    // First-child links [4, 2, 3, -1, 5, -1] and sibling 4 -> 1: edges 0->4, 0->1, 1->2, 2->3, 4->5.
    let parents = [-1, 0, 1, 2, 0, 4];
    let tokens = [0, 11, 12, 13, 14, 15];
    let mut t = DraftTree::new(TreeParams {
        max_nodes: 16,
        max_depth: 8,
    })
    .unwrap();
    t.reset(0).unwrap();
    // Node 4 is the more probable child of the root in SGLang's sibling order (4 before 1).
    let logprob = [0.0, -1.0, -0.1, -0.1, -0.2, -0.1];
    for k in 1..6 {
        t.add(parents[k], tokens[k], logprob[k]).unwrap();
    }
    t.finalize(16).unwrap();
    let mut fc = vec![0; 6];
    layout::first_child(&t, &mut fc).unwrap();
    assert_eq!(
        t.source_ids()[fc[0] as usize],
        4,
        "root's first child is SGLang node 4"
    );

    // Target: after the root 14 (node 4), after node 4 15 (node 5), after node 5 the bonus 7.
    let predicts = [14, 0, 0, 0, 15, 7];
    let acc = verify::greedy(&t, &rows_in_our_order(&t, &predicts)).unwrap();
    assert_eq!(acc.n_accepted, 2);
    assert_eq!(to_sglang(&t, acc.nodes()), [4, 5]); // SGLang: accept_index [6, 10, 11, -1] = rows 0, 4, 5
    assert_eq!(acc.bonus_token, 7);
}
