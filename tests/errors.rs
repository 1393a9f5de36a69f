//! Every malformed input through the Rust API returns the documented `Error` / `Status`, writes
//! nothing, and leaves the tree usable with its state unchanged.

mod common;

use specblock::layout;
use specblock::tree::{DraftTree, NodeMeta, TreeParams};
use specblock::verify::{self, Sampling};
use specblock::{Error, Status};

fn params(max_nodes: u32, max_depth: u32) -> TreeParams {
    TreeParams {
        max_nodes,
        max_depth,
    }
}

/// Everything observable about a tree (before or after finalize).
#[derive(Debug, PartialEq)]
struct State {
    finalized: bool,
    len: usize,
    tokens: Vec<i32>,
    parents: Vec<i32>,
    depths: Vec<u32>,
    cum: Vec<u32>,
    lp: Vec<u32>,
    metas: Vec<NodeMeta>,
    sources: Vec<i32>,
}

fn state(t: &DraftTree) -> State {
    State {
        finalized: t.is_finalized(),
        len: t.len(),
        tokens: t.tokens().to_vec(),
        parents: t.parents().to_vec(),
        depths: t.depths().to_vec(),
        cum: t.cum_logprobs().iter().map(|x| x.to_bits()).collect(),
        lp: t.logprobs().iter().map(|x| x.to_bits()).collect(),
        metas: t.metas().to_vec(),
        sources: t.source_ids().to_vec(),
    }
}

/// root 100 -> a(7) -> b(8), root -> c(9): finalized order [root, 7, 9, 8].
fn small_tree() -> DraftTree {
    let mut t = DraftTree::new(params(8, 4)).unwrap();
    t.reset(100).unwrap();
    let a = t.add(0, 7, -0.1).unwrap();
    t.add(a, 8, -0.2).unwrap();
    t.add(0, 9, -1.5).unwrap();
    t.finalize(8).unwrap();
    t
}

fn is_invalid_argument(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument(_)) && e.status() == Status::InvalidArgument
}

fn is_invalid_state(e: &Error) -> bool {
    matches!(e, Error::InvalidState(_)) && e.status() == Status::InvalidState
}

#[test]
fn creation_parameters_are_checked() {
    for (n, d) in [
        (0, 4),
        (65_537, 4),
        (u32::MAX, 4),
        (8, 0),
        (8, 65),
        (8, u32::MAX),
    ] {
        let e = DraftTree::new(params(n, d)).unwrap_err();
        assert!(is_invalid_argument(&e), "({n}, {d}) gave {e:?}");
    }
    // The boundaries themselves are valid.
    let t = DraftTree::new(params(65_536, 64)).unwrap();
    assert_eq!(t.params(), params(65_536, 64));
    assert!(DraftTree::new(params(1, 1)).is_ok());
}

#[test]
fn calls_before_reset_are_invalid_state() {
    let mut t = DraftTree::new(params(4, 4)).unwrap();
    assert!(t.is_empty());
    assert!(is_invalid_state(&t.add(0, 1, -0.1).unwrap_err()));
    assert!(is_invalid_state(&t.finalize(2).unwrap_err()));
    let mut buf = [-5i32; 8];
    assert!(is_invalid_state(&layout::tokens(&t, &mut buf).unwrap_err()));
    assert!(is_invalid_state(&verify::greedy(&t, &[]).unwrap_err()));
    assert!(is_invalid_state(
        &verify::sample(&t, &[], 1, &Sampling::default(), 0).unwrap_err()
    ));
    assert_eq!(buf, [-5; 8]);
    // A negative root token is rejected and the tree stays empty.
    assert!(is_invalid_argument(&t.reset(-1).unwrap_err()));
    assert!(t.is_empty());
    assert!(is_invalid_state(&t.add(0, 1, -0.1).unwrap_err()));
    // Then it works.
    t.reset(3).unwrap();
    assert_eq!(t.add(0, 1, -0.1).unwrap(), 1);
}

#[test]
fn bad_adds_are_rejected_and_change_nothing() {
    let mut t = DraftTree::new(params(3, 2)).unwrap();
    t.reset(50).unwrap();
    let a = t.add(0, 1, -0.5).unwrap();
    let before = state(&t);

    // Unknown parents.
    for parent in [-1, -100, 2, 3, 1000, i32::MAX, i32::MIN] {
        let e = t.add(parent, 4, -0.1).unwrap_err();
        assert_eq!(
            e,
            Error::InvalidNode {
                node: parent as i64,
                len: 2
            }
        );
        assert_eq!(e.status(), Status::InvalidNode);
        assert!(e.to_string().contains(&parent.to_string()), "{e}");
        assert_eq!(state(&t), before);
    }
    // Negative tokens.
    for token in [-1, i32::MIN] {
        let e = t.add(a, token, -0.1).unwrap_err();
        assert!(is_invalid_argument(&e), "{e:?}");
        assert_eq!(state(&t), before);
    }
    // NaN and +inf log-probabilities; the row names the node the add would have created.
    for lp in [f32::NAN, -f32::NAN, f32::INFINITY] {
        let e = t.add(a, 4, lp).unwrap_err();
        assert!(
            matches!(e, Error::NonFinite { row: 2, col: 0, .. }),
            "{lp}: {e:?}"
        );
        assert_eq!(e.status(), Status::NonFinite);
        assert_eq!(state(&t), before);
    }
    // -inf is a valid log-probability; a positive one is treated as 0.
    let b = t.add(a, 4, f32::NEG_INFINITY).unwrap();
    assert_eq!(b, 2);
    assert_eq!(t.cum_logprobs()[2], f32::NEG_INFINITY);
    // Depth limit 2: nothing under b.
    let before = state(&t);
    let e = t.add(b, 5, -0.1).unwrap_err();
    assert_eq!(e, Error::DepthLimit { max_depth: 2 });
    assert_eq!(e.status(), Status::DepthLimit);
    assert!(e.to_string().contains('2'), "{e}");
    assert_eq!(state(&t), before);
    let c = t.add(0, 6, 0.75).unwrap();
    assert_eq!(c, 3);
    assert_eq!(t.logprobs()[3], 0.0);
    assert_eq!(t.cum_logprobs()[3], 0.0);
    // Capacity 3 reached.
    let before = state(&t);
    for parent in [0, a, c] {
        let e = t.add(parent, 9, -0.1).unwrap_err();
        assert!(matches!(e, Error::Capacity { capacity: 3, .. }), "{e:?}");
        assert_eq!(e.status(), Status::Capacity);
        assert!(e.to_string().contains('3'), "{e}");
        assert_eq!(state(&t), before);
    }

    // Budget above max_nodes: capacity error, still building, nothing changed.
    for budget in [4, 100, u32::MAX] {
        let e = t.finalize(budget).unwrap_err();
        assert!(matches!(e, Error::Capacity { capacity: 3, .. }), "{e:?}");
        assert!(!t.is_finalized());
        assert_eq!(state(&t), before);
    }

    // The tree is still usable and finalizes like a tree that never saw the bad calls.
    t.finalize(3).unwrap();
    let mut clean = DraftTree::new(params(3, 2)).unwrap();
    clean.reset(50).unwrap();
    clean.add(0, 1, -0.5).unwrap();
    clean.add(1, 4, f32::NEG_INFINITY).unwrap();
    clean.add(0, 6, 0.0).unwrap();
    clean.finalize(3).unwrap();
    assert_eq!(state(&t), state(&clean));
    assert_eq!(t.tokens(), &[50, 6, 1, 4]);
}

#[test]
fn add_after_finalize_is_invalid_state_and_changes_nothing() {
    let mut t = small_tree();
    let before = state(&t);
    for parent in [0, 1, 3, 99] {
        let e = t.add(parent, 5, -0.1).unwrap_err();
        assert!(is_invalid_state(&e), "{e:?}");
        let e = t
            .add_with_meta(parent, 5, -0.1, NodeMeta::default())
            .unwrap_err();
        assert!(is_invalid_state(&e), "{e:?}");
    }
    assert_eq!(state(&t), before);
    // A budget above capacity on a finalized tree: error, still finalized, unchanged.
    let e = t.finalize(9).unwrap_err();
    assert!(matches!(e, Error::Capacity { capacity: 8, .. }), "{e:?}");
    assert_eq!(state(&t), before);
    // A bad reset leaves the finalized tree as it was.
    assert!(is_invalid_argument(&t.reset(-3).unwrap_err()));
    assert_eq!(state(&t), before);
    let mut out = [0i32; 4];
    layout::tokens(&t, &mut out).unwrap();
    assert_eq!(out, [100, 7, 9, 8]);
    // Reset starts over.
    t.reset(1).unwrap();
    assert!(!t.is_finalized());
    assert_eq!(t.len(), 1);
    assert_eq!(t.add(0, 5, -0.1).unwrap(), 1);
}

/// Calls every layout and both verifiers; each must fail with `InvalidState` and leave `fill` in
/// every buffer.
fn check_all_invalid_state(t: &DraftTree) {
    const FILL: i32 = -77;
    let mut i = vec![FILL; 64];
    let mut i2 = vec![FILL; 64];
    let mut u8s = vec![0xeeu8; 64];
    let mut f = vec![9.5f32; 64];
    let mut u = vec![0xeeee_eeeeu32; 64];
    let errs = [
        layout::tokens(t, &mut i).unwrap_err(),
        layout::parents(t, &mut i).unwrap_err(),
        layout::first_child(t, &mut i).unwrap_err(),
        layout::next_sibling(t, &mut i).unwrap_err(),
        layout::depths(t, &mut i).unwrap_err(),
        layout::positions(t, 5, &mut i).unwrap_err(),
        layout::mask_dense(t, &mut u8s).unwrap_err(),
        layout::mask_bias(t, &mut f).unwrap_err(),
        layout::mask_bits(t, 3, &mut u).unwrap_err(),
        layout::mask_flat_bits(t, 3, &mut u8s).unwrap_err(),
        layout::retrieve_paths(t, 8, &mut i).unwrap_err(),
        layout::seq_ranges(t, 0, 64, &mut i, &mut i2).unwrap_err(),
        verify::greedy(t, &vec![0; t.len()]).unwrap_err(),
        verify::sample(t, &vec![0.0; t.len() * 16], 16, &Sampling::default(), 1).unwrap_err(),
    ];
    for e in errs {
        assert!(is_invalid_state(&e), "{e:?}");
    }
    assert!(i.iter().chain(&i2).all(|&x| x == FILL));
    assert!(u8s.iter().all(|&x| x == 0xee));
    assert!(f.iter().all(|&x| x == 9.5));
    assert!(u.iter().all(|&x| x == 0xeeee_eeee));
}

#[test]
fn layouts_and_verification_before_finalize_are_invalid_state() {
    let mut t = DraftTree::new(params(8, 4)).unwrap();
    check_all_invalid_state(&t); // never reset
    t.reset(100).unwrap();
    check_all_invalid_state(&t); // lone root, building
    let a = t.add(0, 7, -0.1).unwrap();
    t.add(a, 8, -0.2).unwrap();
    t.add(0, 9, -1.5).unwrap();
    check_all_invalid_state(&t); // building
    t.finalize(8).unwrap();
    let mut out = [0i32; 4];
    layout::parents(&t, &mut out).unwrap();
    assert_eq!(out, [-1, 0, 0, 1]);
    t.reset(100).unwrap();
    check_all_invalid_state(&t); // reset after finalize
}

/// Asserts a `BufferTooSmall` error with the given sizes.
fn assert_too_small(e: Error, needed: usize, got: usize) {
    match e {
        Error::BufferTooSmall {
            needed: n, got: g, ..
        } => {
            assert_eq!((n, g), (needed, got), "{e:?}");
        }
        _ => panic!("expected BufferTooSmall, got {e:?}"),
    }
    assert_eq!(e.status(), Status::BufferTooSmall);
    let text = e.to_string();
    assert!(
        text.contains(&needed.to_string()) && text.contains(&got.to_string()),
        "{text}"
    );
}

#[test]
fn short_buffers_are_rejected_untouched() {
    let t = small_tree(); // 4 nodes, 2 leaves, deepest 2
    let n = t.len();
    assert_eq!((n, t.num_leaves(), t.deepest()), (4, 2, 2));
    for got in [0, 1, n - 1] {
        macro_rules! check_i32 {
            ($f:expr) => {{
                let mut buf = vec![-9i32; got];
                assert_too_small($f(&mut buf[..]).unwrap_err(), n, got);
                assert!(buf.iter().all(|&x| x == -9));
            }};
        }
        check_i32!(|b: &mut [i32]| layout::tokens(&t, b));
        check_i32!(|b: &mut [i32]| layout::parents(&t, b));
        check_i32!(|b: &mut [i32]| layout::first_child(&t, b));
        check_i32!(|b: &mut [i32]| layout::next_sibling(&t, b));
        check_i32!(|b: &mut [i32]| layout::depths(&t, b));
        check_i32!(|b: &mut [i32]| layout::positions(&t, 11, b));
        // seq_ranges: either output too short.
        let mut ok = vec![-9i32; n];
        check_i32!(|b: &mut [i32]| layout::seq_ranges(&t, 0, 10, b, &mut ok));
        check_i32!(|b: &mut [i32]| layout::seq_ranges(&t, 0, 10, &mut ok, b));
        assert!(ok.iter().all(|&x| x == -9));
    }
    for got in [0, 1, n * n - 1] {
        let mut d = vec![3u8; got];
        assert_too_small(layout::mask_dense(&t, &mut d).unwrap_err(), n * n, got);
        assert!(d.iter().all(|&x| x == 3));
        let mut f = vec![3.0f32; got];
        assert_too_small(layout::mask_bias(&t, &mut f).unwrap_err(), n * n, got);
        assert!(f.iter().all(|&x| x == 3.0));
    }
    for prefix in [0u32, 37] {
        let words = n * layout::mask_words_per_row(n, prefix);
        let mut u = vec![3u32; words - 1];
        assert_too_small(
            layout::mask_bits(&t, prefix, &mut u).unwrap_err(),
            words,
            words - 1,
        );
        assert!(u.iter().all(|&x| x == 3));
        let bytes = layout::mask_flat_bytes(n, prefix);
        let mut b = vec![3u8; bytes - 1];
        assert_too_small(
            layout::mask_flat_bits(&t, prefix, &mut b).unwrap_err(),
            bytes,
            bytes - 1,
        );
        assert!(b.iter().all(|&x| x == 3));
    }
    // retrieve_paths: row width below deepest + 1, then a short buffer.
    for width in [0, 1, 2] {
        let mut p = vec![-9i32; 100];
        assert_too_small(
            layout::retrieve_paths(&t, width, &mut p).unwrap_err(),
            3,
            width,
        );
        assert!(p.iter().all(|&x| x == -9));
    }
    for width in [3, 5] {
        let need = 2 * width;
        let mut p = vec![-9i32; need - 1];
        assert_too_small(
            layout::retrieve_paths(&t, width, &mut p).unwrap_err(),
            need,
            need - 1,
        );
        assert!(p.iter().all(|&x| x == -9));
        let mut p = vec![-9i32; need];
        assert_eq!(layout::retrieve_paths(&t, width, &mut p).unwrap(), 2);
    }
    // Acceptance keep list.
    let acc = verify::greedy(&t, &[7, 8, 1, 5]).unwrap();
    assert_eq!(acc.keep_len(), 3);
    for got in [0, 1, 2] {
        let mut k = vec![-9i32; got];
        assert_too_small(acc.keep_list(&mut k).unwrap_err(), 3, got);
        assert!(k.iter().all(|&x| x == -9));
    }
    // Everything still works at the exact size.
    let mut out = vec![0i32; n];
    assert_eq!(layout::tokens(&t, &mut out).unwrap(), n);
    assert_eq!(out, [100, 7, 9, 8]);
}

#[test]
fn sequence_and_position_limits() {
    let t = small_tree(); // 2 leaves
    let (mut first, mut count) = (vec![-9i32; 4], vec![-9i32; 4]);
    for (first_seq, max_seq) in [(0, 0), (0, 1), (5, 6), (i32::MAX - 1, i32::MAX as u32)] {
        let e = layout::seq_ranges(&t, first_seq, max_seq, &mut first, &mut count).unwrap_err();
        assert!(
            matches!(e, Error::Capacity { capacity, .. } if capacity == max_seq as usize),
            "{e:?}"
        );
        assert_eq!(e.status(), Status::Capacity);
        assert!(e.to_string().contains(&max_seq.to_string()), "{e}");
        assert!(first.iter().chain(&count).all(|&x| x == -9));
    }
    let e = layout::seq_ranges(&t, -1, 100, &mut first, &mut count).unwrap_err();
    assert!(is_invalid_argument(&e), "{e:?}");
    assert!(first.iter().chain(&count).all(|&x| x == -9));
    assert_eq!(
        layout::seq_ranges(&t, 5, 7, &mut first, &mut count).unwrap(),
        2
    );
    // positions: prefix_len + depth must fit in i32 (deepest is 2).
    let mut pos = vec![-9i32; 4];
    for prefix in [i32::MAX as u32 - 1, i32::MAX as u32, u32::MAX] {
        let e = layout::positions(&t, prefix, &mut pos).unwrap_err();
        assert!(is_invalid_argument(&e), "{prefix}: {e:?}");
        assert!(pos.iter().all(|&x| x == -9));
    }
    let prefix = i32::MAX as u32 - 2;
    layout::positions(&t, prefix, &mut pos).unwrap();
    assert_eq!(pos[3], i32::MAX);
}

/// Sequence ids are `i32`: a range that would run past `i32::MAX` must be refused (an error, buffers
/// untouched), not computed with overflowing arithmetic; one that ends exactly at `i32::MAX` is valid.
#[test]
fn seq_ranges_near_i32_max() {
    // A lone root: one leaf, one sequence id, i32::MAX itself.
    let mut root_only = DraftTree::new(params(4, 4)).unwrap();
    root_only.reset(1).unwrap();
    root_only.finalize(4).unwrap();
    let (mut first, mut count) = (vec![-9i32; 4], vec![-9i32; 4]);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        layout::seq_ranges(&root_only, i32::MAX, u32::MAX, &mut first, &mut count)
    }));
    assert!(
        matches!(r, Ok(Ok(1))),
        "one sequence with id i32::MAX: {r:?}"
    );
    assert_eq!((first[0], count[0]), (i32::MAX, 1));

    // Two leaves starting at i32::MAX: the second id does not exist in i32.
    let t = small_tree();
    let (mut first, mut count) = (vec![-9i32; 4], vec![-9i32; 4]);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        layout::seq_ranges(&t, i32::MAX, u32::MAX, &mut first, &mut count)
    }));
    match r {
        Ok(Err(e)) => assert!(
            matches!(e.status(), Status::Capacity | Status::InvalidArgument),
            "{e:?}"
        ),
        Ok(Ok(k)) => panic!(
            "seq_ranges accepted ids past i32::MAX ({k} sequences): first {first:?} count {count:?}"
        ),
        Err(_) => {
            panic!("seq_ranges panicked (i32 overflow) for first_seq_id = i32::MAX with 2 leaves")
        }
    }
    assert!(first.iter().chain(&count).all(|&x| x == -9));
}

#[test]
fn greedy_input_errors() {
    let t = small_tree();
    for len in [0, 3, 5] {
        let e = verify::greedy(&t, &vec![0; len]).unwrap_err();
        assert!(
            matches!(e, Error::ShapeMismatch { expected: 4, got, .. } if got == len),
            "{e:?}"
        );
        assert_eq!(e.status(), Status::ShapeMismatch);
        let text = e.to_string();
        assert!(
            text.contains('4') && text.contains(&len.to_string()),
            "{text}"
        );
    }
    let e = verify::greedy(&t, &[7, -1, 8, 5]).unwrap_err();
    assert!(is_invalid_argument(&e), "{e:?}");
    // Still usable.
    let acc = verify::greedy(&t, &[7, 8, 1, 5]).unwrap();
    assert_eq!(acc.tokens(), &[7, 8]);
    assert_eq!(acc.bonus_token, 5);
}

const V: usize = 12;

fn finite_logits(t: &DraftTree) -> Vec<f32> {
    (0..t.len() * V).map(|k| (k % 7) as f32 * 0.3).collect()
}

fn temperatures() -> [f32; 2] {
    [1.0, 0.0] // sampling and greedy paths
}

#[test]
fn sample_shape_vocab_and_token_errors() {
    let t = small_tree();
    let logits = finite_logits(&t);
    for temperature in temperatures() {
        let s = Sampling {
            temperature,
            ..Sampling::default()
        };
        let mut longer = logits.clone();
        longer.push(0.0);
        for input in [
            &logits[..0],
            &logits[..4 * V - 1],
            &logits[..3 * V],
            &longer[..],
        ] {
            let e = verify::sample(&t, input, V, &s, 0).unwrap_err();
            assert!(
                matches!(e, Error::ShapeMismatch { expected, got, .. } if expected == 4 * V && got == input.len()),
                "{}: {e:?}",
                input.len()
            );
            assert_eq!(e.status(), Status::ShapeMismatch);
        }
        let e = verify::sample(&t, &logits, 0, &s, 0).unwrap_err();
        assert!(is_invalid_argument(&e), "vocab 0: {e:?}");
        let e = verify::sample(&t, &[], 0, &s, 0).unwrap_err();
        assert!(is_invalid_argument(&e), "vocab 0, no logits: {e:?}");
        // tree length x vocab overflows usize: an error, not a panic.
        for vocab in [usize::MAX, usize::MAX / 2] {
            let e = verify::sample(&t, &logits, vocab, &s, 0).unwrap_err();
            assert!(
                matches!(e.status(), Status::InvalidArgument | Status::ShapeMismatch),
                "{e:?}"
            );
        }
        // Tree tokens go up to 9: a vocabulary of 9 is too small.
        let e = verify::sample(&t, &logits[..4 * 9], 9, &s, 0).unwrap_err();
        assert!(
            matches!(
                e,
                Error::TokenOutOfRange {
                    token: 9,
                    vocab: 9,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.status(), Status::TokenOutOfRange);
        assert!(e.to_string().contains('9'), "{e}");
        // The root token (100) is not a draft token and may be outside the vocabulary.
        assert!(verify::sample(&t, &logits[..4 * 10], 10, &s, 0).is_ok());
    }
}

#[test]
fn sample_non_finite_and_masked_rows() {
    let t = small_tree(); // finalized [100, 7, 9, 8]; node 1 (token 7) has child 3 (token 8)
    // Row 0 allows only token 7, so the walk visits node 1; row 1 allows only token 8 -> node 3.
    let mut base = vec![f32::NEG_INFINITY; 4 * V];
    base[7] = 0.0;
    base[V + 8] = 0.0;
    base[3 * V..4 * V].fill(0.5);
    for temperature in temperatures() {
        let s = Sampling {
            temperature,
            ..Sampling::default()
        };
        let acc = verify::sample(&t, &base, V, &s, 3).unwrap();
        assert_eq!(acc.nodes(), &[1, 3]);
        // A bad value in a visited row: row 0, row 1 (visited after accepting node 1), row 3.
        for (row, col) in [(0usize, 0usize), (0, 7), (1, 11), (3, 4)] {
            for bad in [f32::NAN, f32::INFINITY] {
                let mut l = base.clone();
                l[row * V + col] = bad;
                let e = verify::sample(&t, &l, V, &s, 3).unwrap_err();
                assert!(
                    matches!(e, Error::NonFinite { row: r, col: c, .. } if (r, c) == (row, col)),
                    "T={temperature} bad={bad}: {e:?}"
                );
                assert_eq!(e.status(), Status::NonFinite);
                let text = e.to_string();
                assert!(text.contains(&row.to_string()) && text.contains(&col.to_string()));
            }
        }
        // Row 2 is never visited: a NaN there is not read.
        let mut l = base.clone();
        l[2 * V + 5] = f32::NAN;
        assert_eq!(verify::sample(&t, &l, V, &s, 3).unwrap(), acc);
        // A visited row that is entirely -inf.
        for row in [0usize, 1, 3] {
            let mut l = base.clone();
            l[row * V..(row + 1) * V].fill(f32::NEG_INFINITY);
            let e = verify::sample(&t, &l, V, &s, 3).unwrap_err();
            assert!(is_invalid_argument(&e), "row {row}: {e:?}");
        }
    }
}

#[test]
fn sample_parameter_errors() {
    let t = small_tree();
    let logits = finite_logits(&t);
    let bad = [
        (f32::NAN, 0, 1.0),
        (-0.5, 0, 1.0),
        (-1e-30, 0, 1.0),
        (f32::INFINITY, 0, 1.0),
        (f32::NEG_INFINITY, 0, 1.0),
        (1.0, -1, 1.0),
        (1.0, i32::MIN, 1.0),
        (1.0, 0, 0.0),
        (1.0, 0, -0.0),
        (1.0, 0, -0.1),
        (1.0, 0, 1.0000001),
        (1.0, 0, 1.5),
        (1.0, 0, f32::NAN),
        (1.0, 0, f32::INFINITY),
        (0.0, -1, 1.0),
        (0.0, 0, 0.0),
    ];
    for (temperature, top_k, top_p) in bad {
        let s = Sampling {
            temperature,
            top_k,
            top_p,
        };
        let e = s.validate().unwrap_err();
        assert!(is_invalid_argument(&e), "{s:?}: {e:?}");
        let e = verify::sample(&t, &logits, V, &s, 0).unwrap_err();
        assert!(is_invalid_argument(&e), "{s:?}: {e:?}");
    }
    let good = [
        (0.0, 0, 1.0),
        (-0.0, 0, 1.0),
        (1e-3, 1, 1e-6),
        (100.0, 1_000_000, 1.0),
        (1.0, 0, f32::MIN_POSITIVE),
    ];
    for (temperature, top_k, top_p) in good {
        let s = Sampling {
            temperature,
            top_k,
            top_p,
        };
        s.validate().unwrap();
        verify::sample(&t, &logits, V, &s, 0).unwrap();
    }
}

#[test]
fn status_codes_and_messages() {
    let all = Status::all();
    assert_eq!(all.len(), 16);
    for (k, &s) in all.iter().enumerate() {
        assert_eq!(s as i64, k as i64, "statuses in numeric order");
        assert_eq!(Status::from_code(s as i64), Some(s));
        assert_eq!(Status::from_code(k as i64), Some(s));
        let m = s.message_with_nul();
        assert!(m.ends_with('\0') && !m[..m.len() - 1].contains('\0'));
        assert_eq!(s.message(), &m[..m.len() - 1]);
        assert!(!s.message().is_empty());
    }
    assert_eq!(Status::Ok as i32, 0);
    for code in [-1i64, 16, 17, 100, i64::MIN, i64::MAX] {
        assert_eq!(Status::from_code(code), None, "{code}");
    }
    let messages: std::collections::BTreeSet<&str> = all.iter().map(|s| s.message()).collect();
    assert_eq!(messages.len(), all.len(), "messages are distinct");
}

#[test]
fn error_display_and_status_mapping() {
    let cases: [(Error, Status, &[&str]); 10] = [
        (
            Error::InvalidArgument("top_k must be >= 0"),
            Status::InvalidArgument,
            &["top_k must be >= 0"],
        ),
        (
            Error::Capacity {
                what: "tree nodes",
                capacity: 1234,
            },
            Status::Capacity,
            &["1234", "tree nodes"],
        ),
        (
            Error::BufferTooSmall {
                what: "dense mask",
                needed: 4321,
                got: 17,
            },
            Status::BufferTooSmall,
            &["4321", "17", "dense mask"],
        ),
        (
            Error::InvalidNode { node: -42, len: 9 },
            Status::InvalidNode,
            &["-42", "9"],
        ),
        (
            Error::DepthLimit { max_depth: 37 },
            Status::DepthLimit,
            &["37"],
        ),
        (
            Error::InvalidState("finalize first"),
            Status::InvalidState,
            &["finalize first"],
        ),
        (
            Error::NonFinite {
                what: "logits",
                row: 31,
                col: 4096,
            },
            Status::NonFinite,
            &["31", "4096", "logits"],
        ),
        (
            Error::TokenOutOfRange {
                what: "draft tree",
                token: 65_537,
                vocab: 32_000,
            },
            Status::TokenOutOfRange,
            &["65537", "32000"],
        ),
        (
            Error::ShapeMismatch {
                what: "logits",
                expected: 777,
                got: 778,
            },
            Status::ShapeMismatch,
            &["777", "778"],
        ),
        (Error::OutOfMemory, Status::OutOfMemory, &[]),
    ];
    for (e, status, parts) in cases {
        assert_eq!(e.status(), status);
        let text = e.to_string();
        assert!(!text.is_empty());
        for p in parts {
            assert!(text.contains(p), "{text:?} should mention {p:?}");
        }
        let dynerr: &dyn std::error::Error = &e;
        assert_eq!(dynerr.to_string(), text);
    }
    // Errors from real calls carry their offending values into the text.
    let mut t = DraftTree::new(params(2, 1)).unwrap();
    t.reset(0).unwrap();
    let e = t.add(12345, 1, 0.0).unwrap_err();
    assert!(e.to_string().contains("12345"), "{e}");
    let e = t.finalize(3).unwrap_err();
    assert!(e.to_string().contains('2'), "{e}");
}
