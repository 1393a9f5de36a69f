//! BPE merging of one word: repeatedly merge the adjacent pair with the lowest merge rank (leftmost
//! first on ties) until no pair has a rank. Short words use a flat scan; long words a heap, so a
//! word of n symbols costs O(n log n) instead of O(n²).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Words up to this many symbols take the flat scan, which is faster when there is little to scan.
const FLAT_MAX: usize = 48;

/// A multiplicative hasher for the packed `(left, right)` pair keys: SipHash costs more than the merge
/// step itself, and the keys are not attacker-chosen in a way that matters for a local tokenizer.
#[derive(Default)]
pub(super) struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, key: u64) {
        let h = (self.0 ^ key ^ (key >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
}

/// The merge table: `(left, right)` → (rank, merged id).
#[derive(Clone, Debug, Default)]
pub(super) struct Merges {
    map: HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>,
}

fn key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

impl Merges {
    /// Adds a merge; returns false if the pair already has one.
    pub(super) fn insert(&mut self, left: u32, right: u32, rank: u32, merged: u32) -> bool {
        match self.map.entry(key(left, right)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((rank, merged));
                true
            }
        }
    }

    /// The (rank, merged id) of a pair.
    pub(super) fn get(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        self.map.get(&key(left, right)).copied()
    }

    /// Number of merges.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Reusable buffers, so that encoding a word allocates nothing.
#[derive(Default)]
pub(super) struct Scratch {
    ranks: Vec<u32>,
    next: Vec<usize>,
    prev: Vec<usize>,
    heap: BinaryHeap<Reverse<(u32, usize)>>,
}

/// Merges the symbols of one word in place.
pub(super) fn merge_word(syms: &mut Vec<u32>, merges: &Merges, scratch: &mut Scratch) {
    if syms.len() <= FLAT_MAX {
        merge_flat(syms, merges, &mut scratch.ranks);
    } else {
        merge_heap(syms, merges, scratch);
    }
}

/// Finds the lowest rank by scanning cached pair ranks: O(n) per merge, cheap for short words.
pub(super) fn merge_flat(syms: &mut Vec<u32>, merges: &Merges, ranks: &mut Vec<u32>) {
    let rank = |a: u32, b: u32| merges.get(a, b).map_or(u32::MAX, |(r, _)| r);
    // ranks[i] is the rank of (syms[i], syms[i + 1]); u32::MAX when the pair has no merge.
    ranks.clear();
    ranks.extend(syms.windows(2).map(|w| rank(w[0], w[1])));
    loop {
        let mut best = None;
        let mut best_rank = u32::MAX;
        for (i, &r) in ranks.iter().enumerate() {
            if r < best_rank {
                best_rank = r;
                best = Some(i);
            }
        }
        let Some(i) = best else { return };
        let Some((_, merged)) = merges.get(syms[i], syms[i + 1]) else {
            return;
        };
        syms[i] = merged;
        syms.remove(i + 1);
        ranks.remove(i);
        if i > 0 {
            ranks[i - 1] = rank(syms[i - 1], merged);
        }
        if i < ranks.len() {
            ranks[i] = rank(merged, syms[i + 1]);
        }
    }
}

/// A linked list of symbols and a heap of candidate merges keyed by (rank, position); entries made stale
/// by earlier merges are recognised and skipped when popped.
pub(super) fn merge_heap(syms: &mut Vec<u32>, merges: &Merges, scratch: &mut Scratch) {
    const NONE: usize = usize::MAX;
    let n = syms.len();
    let Scratch {
        next, prev, heap, ..
    } = scratch;
    next.clear();
    next.extend((1..=n).map(|i| if i < n { i } else { NONE }));
    prev.clear();
    prev.extend((0..n).map(|i| if i > 0 { i - 1 } else { NONE }));
    heap.clear();
    for i in 0..n.saturating_sub(1) {
        if let Some((r, _)) = merges.get(syms[i], syms[i + 1]) {
            heap.push(Reverse((r, i)));
        }
    }
    // A merged-away symbol gets `next[i] = DEAD` so its stale heap entries are skipped.
    const DEAD: usize = usize::MAX - 1;
    while let Some(Reverse((r, i))) = heap.pop() {
        let j = next[i];
        if j == NONE || j == DEAD {
            continue;
        }
        match merges.get(syms[i], syms[j]) {
            Some((rank, merged)) if rank == r => {
                syms[i] = merged;
                let k = next[j];
                next[i] = k;
                next[j] = DEAD;
                if k != NONE {
                    prev[k] = i;
                    if let Some((rk, _)) = merges.get(merged, syms[k]) {
                        heap.push(Reverse((rk, i)));
                    }
                }
                let p = prev[i];
                if p != NONE
                    && let Some((rp, _)) = merges.get(syms[p], merged)
                {
                    heap.push(Reverse((rp, p)));
                }
            }
            _ => {}
        }
    }
    let mut out = 0;
    let mut i = if n > 0 { 0 } else { NONE };
    while i != NONE {
        syms[out] = syms[i];
        out += 1;
        i = next[i];
    }
    syms.truncate(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Symbols 0 = a, 1 = b; every merge of two existing tokens whose concatenation is short gets a
    /// token, ranked by a fixed scramble so ties and cascades both happen.
    fn table() -> Merges {
        let mut strings = vec!["a".to_string(), "b".to_string()];
        let mut merges = Merges::default();
        let mut rank = 0u32;
        for round in 0..3 {
            let n = strings.len();
            for x in 0..n {
                for y in 0..n {
                    let s = format!("{}{}", strings[x], strings[y]);
                    if s.len() > 2 + 2 * round || strings.contains(&s) || (x * 7 + y * 3) % 5 == 0 {
                        continue;
                    }
                    strings.push(s);
                    let id = (strings.len() - 1) as u32;
                    assert!(merges.insert(x as u32, y as u32, rank, id));
                    rank += 1;
                }
            }
        }
        merges
    }

    #[test]
    fn heap_and_flat_agree() {
        let merges = table();
        let mut scratch = Scratch::default();
        let mut state = 0x1234_5678u64;
        for len in 0..200 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let word: Vec<u32> = (0..len).map(|i| ((state >> (i % 60)) & 1) as u32).collect();
            let mut flat = word.clone();
            merge_flat(&mut flat, &merges, &mut Vec::new());
            let mut heap = word.clone();
            merge_heap(&mut heap, &merges, &mut scratch);
            assert_eq!(flat, heap, "word {word:?}");
            if len > 4 {
                assert!(flat.len() < word.len(), "nothing merged in {word:?}");
            }
        }
    }

    #[test]
    fn lowest_rank_then_leftmost() {
        let mut m = Merges::default();
        // a=0 b=1 c=2; "b c" (rank 0) beats "a b" (rank 1); "a a" merges left to right.
        m.insert(1, 2, 0, 10);
        m.insert(0, 1, 1, 11);
        m.insert(0, 0, 2, 12);
        let mut w = vec![0, 1, 2];
        merge_flat(&mut w, &m, &mut Vec::new());
        assert_eq!(w, [0, 10]);
        let mut w = vec![0, 0, 0];
        merge_flat(&mut w, &m, &mut Vec::new());
        assert_eq!(w, [12, 0]);
        let mut w = vec![0; 101];
        merge_heap(&mut w, &m, &mut Scratch::default());
        assert_eq!(w.len(), 51);
        assert_eq!(w[50], 0);
        assert!(!m.insert(0, 0, 9, 13));
    }
}
