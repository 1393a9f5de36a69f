use super::*;
use crate::tree::TreeParams;
use std::vec;

/// root(0) -> a(1) -> c(3); root -> b(2); finalized ids by depth then probability.
fn small() -> DraftTree {
    let mut t = DraftTree::new(TreeParams {
        max_nodes: 8,
        max_depth: 4,
    })
    .unwrap();
    t.reset(50).unwrap();
    let a = t.add(0, 51, -0.1).unwrap();
    t.add(0, 52, -1.0).unwrap();
    t.add(a, 53, -0.2).unwrap();
    t.finalize(8).unwrap();
    t
}

#[test]
fn masks_and_positions() {
    let t = small();
    let mut pos = [0; 4];
    positions(&t, 10, &mut pos).unwrap();
    assert_eq!(pos, [10, 11, 11, 12]);
    let mut dense = [9u8; 16];
    mask_dense(&t, &mut dense).unwrap();
    assert_eq!(dense, [1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 1]);
    let mut bits = [0u32; 4];
    mask_bits(&t, 0, &mut bits).unwrap();
    assert_eq!(bits, [0b1, 0b11, 0b101, 0b1011]);
    // 30 prefix columns: node j is column 30 + j, so rows span two words.
    let mut wide = [0u32; 8];
    mask_bits(&t, 30, &mut wide).unwrap();
    let prefix = (1u32 << 30) - 1;
    assert_eq!(wide[0], prefix | 1 << 30);
    assert_eq!(wide[6], prefix | 1 << 30 | 1 << 31);
    assert_eq!(wide[7], 0b10); // node 3 is column 33
    let mut flat = [0u8; 2];
    assert_eq!(mask_flat_bits(&t, 0, &mut flat).unwrap(), 2);
    assert_eq!(flat, [0b0011_0001, 0b1011_0101]);
}

#[test]
fn paths_siblings_and_sequences() {
    let t = small();
    let mut paths = [0; 6];
    assert_eq!(retrieve_paths(&t, 3, &mut paths).unwrap(), 2);
    assert_eq!(paths, [0, 1, 3, 0, 2, -1]);
    assert!(matches!(
        retrieve_paths(&t, 2, &mut paths),
        Err(Error::BufferTooSmall { .. })
    ));
    let (mut fc, mut ns) = ([0; 4], [0; 4]);
    first_child(&t, &mut fc).unwrap();
    next_sibling(&t, &mut ns).unwrap();
    assert_eq!(fc, [1, 3, -1, -1]);
    assert_eq!(ns, [-1, 2, -1, -1]);
    let (mut first, mut count) = ([0; 4], [0; 4]);
    assert_eq!(seq_ranges(&t, 5, 7, &mut first, &mut count).unwrap(), 2);
    assert_eq!(first, [5, 5, 6, 5]);
    assert_eq!(count, [2, 1, 1, 1]);
    assert!(matches!(
        seq_ranges(&t, 6, 7, &mut first, &mut count),
        Err(Error::Capacity { .. })
    ));
}

#[test]
fn short_buffers_are_rejected_untouched() {
    let t = small();
    let mut out = vec![7i32; 3];
    assert!(matches!(
        tokens(&t, &mut out),
        Err(Error::BufferTooSmall {
            needed: 4,
            got: 3,
            ..
        })
    ));
    assert_eq!(out, [7, 7, 7]);
}
