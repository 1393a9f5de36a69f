//! The target's sampling distribution for one logits row, without materialising it.
//!
//! With temperature `T > 0`, top-k `k` and top-p `P` (applied in that order, as Hugging Face does), the
//! distribution is `p(x) = exp((l_x - max) / T) / Z` over the tokens whose logit is at least a single cut
//! `l_x >= cut`, because both filters keep a prefix of the tokens sorted by logit:
//!
//! - top-k keeps every token whose logit is at least the k-th largest (ties at the boundary are kept);
//! - top-p then keeps every token whose strictly-more-probable tokens hold less than `P` of the mass
//!   (the smallest prefix reaching `P`, ties kept together).
//!
//! Both cuts are found exactly with a three-pass radix search over the logits' order-preserving bit keys,
//! so nothing is sorted and nothing is allocated.

use arrayvec::ArrayVec;

use super::Sampling;
use crate::error::Error;
use crate::math::exp_nonpositive;

/// Order-preserving map from `f32` to `u32` (larger float, larger key).
#[inline(always)]
fn key(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Inverse of [`key`].
fn unkey(k: u32) -> f32 {
    if k & 0x8000_0000 != 0 {
        f32::from_bits(k & 0x7fff_ffff)
    } else {
        f32::from_bits(!k)
    }
}

/// Capacity of the candidate buffer of the fast top-k / top-p paths (4 KiB on the stack).
const CAND_CAP: usize = 1024;
/// Largest top-k the candidate path serves, and the probe size for top-p.
const FAST_K: usize = 256;

/// The largest logits of a row, sorted descending: a one-pass filter that keeps a running threshold
/// (the k-th largest seen so far), so almost every logit costs one vector compare.
struct Candidates {
    /// While filling, the logits collected so far; after [`fill`](Self::fill), the logits `>=` the value
    /// it returned, sorted descending (empty when it returned `None`).
    kept: ArrayVec<f32, CAND_CAP>,
}

impl Candidates {
    fn new() -> Self {
        Candidates {
            kept: ArrayVec::new(),
        }
    }

    /// Collects every logit `>= v`, where `v` is the k-th largest logit `>= floor` (or the smallest such
    /// logit when fewer than k are), sorted descending, and returns `v`. `None` (and an empty buffer)
    /// when ties at the threshold overflow the buffer. `1 <= k <= FAST_K`.
    fn fill(&mut self, row: &[f32], k: usize, floor: f32) -> Option<f32> {
        debug_assert!((1..=FAST_K).contains(&k));
        let desc = |a: &f32, b: &f32| b.total_cmp(a);
        let mut thresh = floor;
        let kept = &mut self.kept;
        kept.clear();
        for chunk in row.chunks(LANES) {
            if !chunk.iter().fold(false, |any, &l| any | (l >= thresh)) {
                continue;
            }
            for &l in chunk {
                if l < thresh {
                    continue;
                }
                if kept.is_full() {
                    // Keep the k largest and their ties; the final k-th largest is at least this.
                    kept.select_nth_unstable_by(k - 1, desc);
                    thresh = kept[k - 1];
                    kept.retain(|x| *x >= thresh);
                    if kept.len() + LANES > CAND_CAP {
                        kept.clear();
                        return None;
                    }
                    if l < thresh {
                        continue;
                    }
                }
                kept.push(l);
            }
        }
        kept.sort_unstable_by(desc);
        let v = match kept.len() {
            0 => return Some(floor),
            n => kept[k.min(n) - 1],
        };
        let above = kept.partition_point(|&l| l >= v);
        kept.truncate(above);
        Some(v)
    }

    /// The top-p cut among the candidates: the value of the first tie group at which the mass of the
    /// groups so far reaches `target`. `None` if the candidates never reach it.
    fn top_p_cut(&self, max: f32, inv_t: f32, target: f64) -> Option<f32> {
        let sorted = &self.kept[..];
        let mut above = 0.0f64;
        let mut i = 0;
        while i < sorted.len() {
            let v = sorted[i];
            let mut group = 0.0f64;
            while i < sorted.len() && sorted[i] == v {
                group += exp_nonpositive((sorted[i] - max) * inv_t) as f64;
                i += 1;
            }
            if above + group >= target {
                return Some(v);
            }
            above += group;
        }
        None
    }
}

/// Radix digits: 11 + 11 + 10 bits, most significant first.
const DIGITS: [(u32, u32); 3] = [(21, 11), (10, 11), (0, 10)];

/// f32 lanes of the mass loop: one AVX-512 register, two AVX2 or four SSE2 registers.
const LANES: usize = 16;
/// Elements summed in f32 lanes before flushing to f64 (16 per lane: error far below sampling noise).
const FLUSH: usize = 256;

/// Sum of `exp((l - max) * inv_t)` over `l >= cut`. The summation order is fixed (16 lanes, flushed to
/// f64 every 256 elements, lanes added in order), so the result is the same on every platform and with
/// every instruction set; only the speed differs.
#[inline(always)]
fn mass_portable(row: &[f32], max: f32, inv_t: f32, cut: f32) -> f64 {
    let mut total = [0f64; LANES];
    let mut acc = [0f32; LANES];
    let blocks = row.chunks_exact(FLUSH);
    let tail = blocks.remainder();
    for block in blocks {
        for c in block.chunks_exact(LANES) {
            for i in 0..LANES {
                let l = c[i];
                let e = exp_nonpositive((l - max) * inv_t);
                acc[i] += if l >= cut { e } else { 0.0 };
            }
        }
        for i in 0..LANES {
            total[i] += acc[i] as f64;
            acc[i] = 0.0;
        }
    }
    for (j, &l) in tail.iter().enumerate() {
        let e = exp_nonpositive((l - max) * inv_t);
        acc[j % LANES] += if l >= cut { e } else { 0.0 };
    }
    for i in 0..LANES {
        total[i] += acc[i] as f64;
    }
    total.iter().sum()
}

/// [`mass_portable`] compiled for AVX2 (same operations, no FMA contraction, so the same result).
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
fn mass_avx2(row: &[f32], max: f32, inv_t: f32, cut: f32) -> f64 {
    mass_portable(row, max, inv_t, cut)
}

/// [`mass_portable`] compiled for AVX-512.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx512f")]
fn mass_avx512(row: &[f32], max: f32, inv_t: f32, cut: f32) -> f64 {
    mass_portable(row, max, inv_t, cut)
}

/// Sum of `exp((l - max) * inv_t)` over `l >= cut`, with the widest vector unit the CPU has (std builds
/// on x86-64 detect it at run time; the result does not depend on which one runs).
fn mass(row: &[f32], max: f32, inv_t: f32, cut: f32) -> f64 {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { mass_avx512(row, max, inv_t, cut) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked above).
            return unsafe { mass_avx2(row, max, inv_t, cut) };
        }
    }
    mass_portable(row, max, inv_t, cut)
}

/// The target distribution of one row; see the [module docs](self).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowDist {
    max: f32,
    inv_t: f32,
    cut: f32,
    z: f64,
}

impl RowDist {
    /// Validates `row` (no NaN, no `+inf`, at least one finite value) and finds the cut and normaliser.
    /// `row_index` only labels errors.
    pub(crate) fn new(row: &[f32], s: &Sampling, row_index: usize) -> Result<Self, Error> {
        let max = row_max(row, row_index)?;
        let inv_t = 1.0 / s.temperature;
        let mut cut = f32::NEG_INFINITY;
        let k = s.top_k as usize;
        // The candidates >= cut, sorted descending, when the fast path found them all.
        let mut cands = Candidates::new();
        let mut have_all_above_cut = false;
        if s.top_k > 0 && k < row.len() {
            match cands.fill(row, k, f32::NEG_INFINITY) {
                Some(c) => {
                    cut = c;
                    have_all_above_cut = true;
                }
                None => cut = kth_largest(row, k),
            }
        }
        let mut z = mass(row, max, inv_t, cut);
        if s.top_p < 1.0 {
            let target = s.top_p as f64 * z;
            // Top-p keeps a prefix of the sorted order, so if the FAST_K largest tokens already reach
            // the target, the cut lies among them; otherwise fall back to the radix search.
            if !have_all_above_cut && cands.fill(row, FAST_K, cut).is_some() {
                have_all_above_cut = cands.kept.len() < FAST_K;
            }
            let p_cut = match cands.top_p_cut(max, inv_t, target) {
                Some(c) => c,
                None if have_all_above_cut => cut,
                None => top_p_cut(row, max, inv_t, cut, target),
            };
            if p_cut > cut {
                cut = p_cut;
                z = mass(row, max, inv_t, cut);
            }
        }
        Ok(RowDist { max, inv_t, cut, z })
    }

    /// Unnormalised weight of a token (0 outside the kept set).
    #[inline(always)]
    pub(crate) fn weight(&self, logit: f32) -> f64 {
        if logit >= self.cut {
            exp_nonpositive((logit - self.max) * self.inv_t) as f64
        } else {
            0.0
        }
    }

    /// Normalised probability of a token with this logit.
    pub(crate) fn prob(&self, logit: f32) -> f64 {
        self.weight(logit) / self.z
    }

    /// Samples a token by inverse CDF over the vocabulary in index order, skipping the tokens in
    /// `excluded` (ascending, distinct, each `< row.len()`). `u` is in `[0, 1)`. Returns `None` when the
    /// remaining mass is zero (everything kept is excluded).
    ///
    /// Two levels keep it one vectorised pass: chunk masses first, then a scalar scan of the one chunk
    /// where the running sum crosses the target.
    pub(crate) fn sample_excluding(
        &self,
        row: &[f32],
        excluded: impl Iterator<Item = usize> + Clone,
        u: f64,
    ) -> Option<usize> {
        let excluded_mass: f64 = excluded.clone().map(|tok| self.weight(row[tok])).sum();
        let rest = self.z - excluded_mass;
        if rest <= 0.0 {
            return None;
        }
        let target = u * rest;
        let mut acc = 0.0f64;
        let mut ex = excluded.peekable();
        let mut last_nonempty = None;
        for (ci, chunk) in row.chunks(SAMPLE_CHUNK).enumerate() {
            let base = ci * SAMPLE_CHUNK;
            let end = base + chunk.len();
            let ex_in_chunk = ex.clone();
            let mut m = mass(chunk, self.max, self.inv_t, self.cut);
            while let Some(&tok) = ex.peek().filter(|&&tok| tok < end) {
                m -= self.weight(row[tok]);
                ex.next();
            }
            if m <= 0.0 {
                continue;
            }
            last_nonempty = Some((base, ex_in_chunk.clone()));
            if acc + m > target {
                return self.scan_chunk(row, base, end, ex_in_chunk, target - acc);
            }
            acc += m;
        }
        // Rounding left the running sum just short of the target: take the last token with mass.
        let (base, ex_in_chunk) = last_nonempty?;
        let end = (base + SAMPLE_CHUNK).min(row.len());
        self.scan_chunk(row, base, end, ex_in_chunk, f64::INFINITY)
    }

    /// Scans `row[base..end]` for the first non-excluded token at which the running weight exceeds
    /// `target`; if none does (rounding, or an infinite target), the last token with weight.
    fn scan_chunk(
        &self,
        row: &[f32],
        base: usize,
        end: usize,
        excluded: impl Iterator<Item = usize>,
        target: f64,
    ) -> Option<usize> {
        let mut ex = excluded.peekable();
        let mut acc = 0.0f64;
        let mut last = None;
        for (j, &l) in row.iter().enumerate().take(end).skip(base) {
            if ex.peek() == Some(&j) {
                ex.next();
                continue;
            }
            let w = self.weight(l);
            if w > 0.0 {
                acc += w;
                last = Some(j);
                if acc > target {
                    return Some(j);
                }
            }
        }
        last
    }
}

/// Vocabulary chunk for two-level residual sampling.
const SAMPLE_CHUNK: usize = 1024;

/// Maximum of a row, rejecting NaN and `+inf` (`-inf` is a masked token and allowed).
pub(crate) fn row_max(row: &[f32], row_index: usize) -> Result<f32, Error> {
    let mut max = f32::NEG_INFINITY;
    let mut bad = false;
    for &l in row {
        bad |= l.is_nan() | (l == f32::INFINITY);
        max = if l > max { l } else { max };
    }
    if bad {
        let col = row
            .iter()
            .position(|l| l.is_nan() || *l == f32::INFINITY)
            .unwrap_or(0);
        return Err(Error::NonFinite {
            what: "logits",
            row: row_index,
            col,
        });
    }
    if max == f32::NEG_INFINITY {
        return Err(Error::InvalidArgument(
            "a logits row is entirely -inf: no token can be sampled",
        ));
    }
    Ok(max)
}

/// Index of the largest logit (the first one on ties). The row must already be validated.
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &l) in row.iter().enumerate() {
        if l > row[best] {
            best = j;
        }
    }
    best
}

/// The k-th largest value of `row` (1-based `k <= row.len()`), by radix search on bit keys.
fn kth_largest(row: &[f32], k: usize) -> f32 {
    let mut prefix = 0u32; // key bits fixed so far
    let mut prefix_mask = 0u32;
    let mut remaining = k; // rank still to find inside the current prefix
    for (shift, bits) in DIGITS {
        let mut hist = [0u32; 2048];
        let digit_mask = (1u32 << bits) - 1;
        for &l in row {
            let kk = key(l);
            if kk & prefix_mask == prefix {
                hist[((kk >> shift) & digit_mask) as usize] += 1;
            }
        }
        let mut d = digit_mask as usize;
        loop {
            let c = hist[d] as usize;
            if c >= remaining || d == 0 {
                break;
            }
            remaining -= c;
            d -= 1;
        }
        prefix |= (d as u32) << shift;
        prefix_mask |= digit_mask << shift;
    }
    unkey(prefix)
}

/// The top-p cut: the largest logit value `v` such that the kept tokens with logit `>= v` hold at least
/// `target` mass (unnormalised), searched over tokens with logit `>= cut`.
fn top_p_cut(row: &[f32], max: f32, inv_t: f32, cut: f32, target: f64) -> f32 {
    let mut prefix = 0u32;
    let mut prefix_mask = 0u32;
    let mut above = 0.0f64; // mass of tokens whose key is above the current prefix range
    let mut lowest_nonempty = None;
    for (shift, bits) in DIGITS {
        let mut hist = [0f64; 2048];
        let mut seen = [false; 2048];
        let digit_mask = (1u32 << bits) - 1;
        for &l in row {
            let kk = key(l);
            if l >= cut && kk & prefix_mask == prefix {
                let d = ((kk >> shift) & digit_mask) as usize;
                hist[d] += exp_nonpositive((l - max) * inv_t) as f64;
                seen[d] = true;
            }
        }
        let mut chosen = None;
        for d in (0..=digit_mask as usize).rev() {
            if !seen[d] {
                continue;
            }
            lowest_nonempty = Some(d);
            if above + hist[d] >= target {
                chosen = Some(d);
                break;
            }
            above += hist[d];
        }
        // Summation order can leave the total a hair below the target: keep everything down to the
        // lowest non-empty bucket.
        let d = match chosen.or(lowest_nonempty) {
            Some(d) => d,
            None => return cut,
        };
        prefix |= (d as u32) << shift;
        prefix_mask |= digit_mask << shift;
    }
    unkey(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn key_preserves_order() {
        let xs = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-30,
            -0.0,
            0.0,
            1e-30,
            2.0,
            f32::MAX,
        ];
        for w in xs.windows(2) {
            assert!(key(w[0]) <= key(w[1]), "{} {}", w[0], w[1]);
            assert_eq!(unkey(key(w[0])).to_bits(), w[0].to_bits());
        }
    }

    #[test]
    fn kth_largest_matches_sort() {
        let rng = crate::rng::CounterRng::new(5);
        for trial in 0..50u64 {
            let n = 1 + (rng.bits(trial * 1000) % 300) as usize;
            let row: Vec<f32> = (0..n)
                .map(|i| ((rng.uniform(trial * 1000 + 1 + i as u64) * 40.0 - 20.0) as f32).round())
                .collect();
            let mut sorted = row.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            for k in [1, n / 2 + 1, n] {
                assert_eq!(kth_largest(&row, k), sorted[k - 1], "n={n} k={k}");
            }
        }
    }

    /// Rows of a few shapes: heavy ties, masked (-inf) entries, long rows that force compaction.
    fn test_rows() -> Vec<Vec<f32>> {
        let rng = crate::rng::CounterRng::new(11);
        let mut rows = Vec::new();
        for trial in 0..40u64 {
            let n = [5usize, 300, 3000, 20_000][trial as usize % 4];
            let levels = [4.0f64, 40.0, 4000.0][trial as usize % 3];
            let row: Vec<f32> = (0..n)
                .map(|i| {
                    let u = rng.uniform(trial * 100_000 + i as u64);
                    if u < 0.05 {
                        f32::NEG_INFINITY
                    } else {
                        ((u * levels).round() / levels * 16.0 - 8.0) as f32
                    }
                })
                .collect();
            rows.push(row);
        }
        rows.push(vec![f32::NEG_INFINITY; 2000]);
        rows.push(vec![1.5; 2000]);
        rows
    }

    #[test]
    fn candidate_top_k_matches_radix() {
        for row in test_rows() {
            for k in [1usize, 2, 7, 50, 256] {
                if k >= row.len() {
                    continue;
                }
                let mut c = Candidates::new();
                let want = kth_largest(&row, k);
                match c.fill(&row, k, f32::NEG_INFINITY) {
                    Some(v) => {
                        assert_eq!(v, want, "k={k} n={}", row.len());
                        let above = row.iter().filter(|&&l| l >= v).count();
                        assert_eq!(c.kept.len(), above, "every logit >= the cut is collected");
                        assert!(c.kept.windows(2).all(|w| w[0] >= w[1]));
                    }
                    // Only a tie overflow may refuse.
                    None => assert!(row.iter().filter(|&&l| l >= want).count() > CAND_CAP - LANES),
                }
            }
        }
    }

    #[test]
    fn candidate_top_p_matches_radix() {
        for row in test_rows() {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
            if max == f32::NEG_INFINITY {
                continue;
            }
            for inv_t in [0.5f32, 1.0, 4.0] {
                let z = mass(&row, max, inv_t, f32::NEG_INFINITY);
                for p in [0.05f64, 0.5, 0.9, 0.99] {
                    let mut c = Candidates::new();
                    if c.fill(&row, FAST_K, f32::NEG_INFINITY).is_none() {
                        continue;
                    }
                    if let Some(fast) = c.top_p_cut(max, inv_t, p * z) {
                        let slow = top_p_cut(&row, max, inv_t, f32::NEG_INFINITY, p * z);
                        assert_eq!(fast, slow, "p={p} inv_t={inv_t} n={}", row.len());
                    }
                }
            }
        }
    }

    #[test]
    fn mass_is_the_same_with_every_instruction_set() {
        for row in test_rows() {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
            if max == f32::NEG_INFINITY {
                continue; // rejected by row_max before any mass is taken
            }
            for cut in [f32::NEG_INFINITY, 0.0] {
                let portable = mass_portable(&row, max, 0.7, cut);
                assert_eq!(mass(&row, max, 0.7, cut).to_bits(), portable.to_bits());
                let exact: f64 = row
                    .iter()
                    .filter(|&&l| l >= cut)
                    .map(|&l| (((l - max) * 0.7) as f64).exp())
                    .sum();
                assert!(
                    (portable - exact).abs() <= 1e-5 * exact.max(1e-30),
                    "{portable} {exact}"
                );
            }
        }
    }
}
