//! The head adapter's weights: a low-rank residual `n' = n + B (A n)` on the drafter's normed final
//! hidden before the draft LM head, a bias on the draft logits, and a delta `D` on the rank head's last
//! layer (`rank_logits += D h1`), with a safetensors format of their own.

use std::format;
use std::path::Path;
use std::vec;
use std::vec::Vec;

use crate::drafter::try_zeros;
use crate::error::Error;
use crate::io::LoadError;
use crate::io::safetensors::{SafeTensors, TensorData, serialize};
use crate::load_err;
use crate::rng::CounterRng;

/// Largest adapter rank [`AdapterShape::validate`] accepts.
pub const MAX_RANK: usize = 64;

/// Tensor names of the adapter file.
const NAME_A: &str = "adapter.a";
const NAME_B: &str = "adapter.b";
const NAME_BIAS: &str = "adapter.bias";
const NAME_DELTA: &str = "adapter.rank_delta";

/// Sizes of a head adapter, taken from the drafter it adapts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterShape {
    /// Width of the drafter's normed final hidden `n` (the LM head's input).
    pub hidden: usize,
    /// Rows of the draft LM head (the draft vocabulary).
    pub draft_vocab: usize,
    /// Rank of the residual `B A` (`1..=`[`MAX_RANK`]).
    pub rank: usize,
    /// Classes of the rank head (0 for a drafter without one, EAGLE-3).
    pub rank_classes: usize,
    /// Width of the rank head's hidden layer `h1` (0 exactly when `rank_classes` is 0).
    pub rank_hidden: usize,
}

impl AdapterShape {
    /// Checks the sizes: `rank` in `1..=`[`MAX_RANK`], `hidden` and `draft_vocab` above 0,
    /// `rank_classes` 0 exactly when `rank_hidden` is 0, and every tensor's size representable.
    pub fn validate(&self) -> Result<(), Error> {
        if !(1..=MAX_RANK).contains(&self.rank) {
            return Err(Error::InvalidArgument("adapter rank must be in 1..=64"));
        }
        if self.hidden == 0 {
            return Err(Error::InvalidArgument("adapter hidden must be > 0"));
        }
        if self.draft_vocab == 0 {
            return Err(Error::InvalidArgument("adapter draft_vocab must be > 0"));
        }
        if (self.rank_classes == 0) != (self.rank_hidden == 0) {
            return Err(Error::InvalidArgument(
                "adapter rank_classes and rank_hidden must both be 0 (no rank head) or both > 0",
            ));
        }
        let lora = self.hidden.checked_mul(self.rank);
        let delta = self.rank_classes.checked_mul(self.rank_hidden);
        let total = lora
            .and_then(|l| l.checked_mul(2))
            .zip(delta)
            .and_then(|(l, d)| l.checked_add(d))
            .and_then(|t| t.checked_add(self.draft_vocab))
            .and_then(|t| t.checked_mul(4));
        if total.is_none() {
            return Err(Error::InvalidArgument("adapter shape overflows"));
        }
        Ok(())
    }

    /// Elements of `A` (and of `B`): `rank * hidden`.
    pub fn lora_len(&self) -> usize {
        self.rank * self.hidden
    }

    /// Elements of the rank delta: `rank_classes * rank_hidden`.
    pub fn delta_len(&self) -> usize {
        self.rank_classes * self.rank_hidden
    }

    /// Trainable parameters in all: `2 rank hidden + draft_vocab + rank_classes rank_hidden`.
    pub fn params(&self) -> usize {
        2 * self.lora_len() + self.draft_vocab + self.delta_len()
    }
}

/// A head adapter: `n' = n + B (A n)` before the draft LM head, `logits = W n' + bias`, and
/// `rank_logits += D h1` on the rank head. All f32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadAdapter {
    /// The sizes (the vectors below hold exactly these many elements).
    pub shape: AdapterShape,
    /// `A`: `rank x hidden`.
    pub a: Vec<f32>,
    /// `B`: `hidden x rank`.
    pub b: Vec<f32>,
    /// Bias on the draft logits: `draft_vocab`.
    pub bias: Vec<f32>,
    /// `D`, added to the rank head's last layer: `rank_classes x rank_hidden` (empty without a rank
    /// head).
    pub rank_delta: Vec<f32>,
}

impl HeadAdapter {
    /// A fresh adapter: `B`, bias and rank delta zero (so it is the identity), `A` from a deterministic
    /// normal draw for `seed` scaled by `1 / sqrt(hidden)`.
    ///
    /// Errors: [`Error::InvalidArgument`] for a shape [`AdapterShape::validate`] refuses,
    /// [`Error::OutOfMemory`] when the tensors cannot be allocated.
    pub fn new(shape: AdapterShape, seed: u64) -> Result<Self, Error> {
        let mut w = Self::zeros(shape)?;
        let rng = CounterRng::new(seed);
        let scale = 1.0 / (shape.hidden as f64).sqrt();
        for (i, x) in w.a.iter_mut().enumerate() {
            // Box-Muller on two uniforms of the counter stream: a standard normal per element.
            let u1 = rng.uniform(2 * i as u64);
            let u2 = rng.uniform(2 * i as u64 + 1);
            let radius = (-2.0 * (1.0 - u1).ln()).sqrt();
            let normal = radius * (2.0 * core::f64::consts::PI * u2).cos();
            *x = (normal * scale) as f32;
        }
        Ok(w)
    }

    /// An adapter of all zeros, `A` included (a gradient or optimizer-moment buffer).
    ///
    /// Errors: as [`HeadAdapter::new`].
    pub fn zeros(shape: AdapterShape) -> Result<Self, Error> {
        shape.validate()?;
        Ok(HeadAdapter {
            shape,
            a: try_zeros(shape.lora_len())?,
            b: try_zeros(shape.lora_len())?,
            bias: try_zeros(shape.draft_vocab)?,
            rank_delta: try_zeros(shape.delta_len())?,
        })
    }

    /// Copies every tensor of `other` into `self` without allocating (double-buffering).
    ///
    /// # Panics
    /// If the shapes or the tensor lengths differ.
    pub fn copy_from(&mut self, other: &HeadAdapter) {
        assert_eq!(
            self.shape, other.shape,
            "HeadAdapter::copy_from: shapes differ"
        );
        self.a.copy_from_slice(&other.a);
        self.b.copy_from_slice(&other.b);
        self.bias.copy_from_slice(&other.bias);
        self.rank_delta.copy_from_slice(&other.rank_delta);
    }

    /// Whether the adapter changes nothing: `B`, bias and rank delta all zero (`A` is then
    /// irrelevant). Reads every element of those three (a few thousand to tens of thousands).
    pub fn is_identity(&self) -> bool {
        self.b.iter().all(|&x| x == 0.0)
            && self.bias.iter().all(|&x| x == 0.0)
            && self.rank_delta.iter().all(|&x| x == 0.0)
    }

    /// The four tensors in file order: `A`, `B`, bias, rank delta.
    pub(crate) fn tensors(&self) -> [&[f32]; 4] {
        [&self.a, &self.b, &self.bias, &self.rank_delta]
    }

    /// The four tensors, mutable, in file order.
    pub(crate) fn tensors_mut(&mut self) -> [&mut [f32]; 4] {
        [
            &mut self.a,
            &mut self.b,
            &mut self.bias,
            &mut self.rank_delta,
        ]
    }

    /// Whether every tensor holds exactly the elements its shape says.
    pub(crate) fn lengths_match(&self) -> bool {
        let s = &self.shape;
        self.a.len() == s.lora_len()
            && self.b.len() == s.lora_len()
            && self.bias.len() == s.draft_vocab
            && self.rank_delta.len() == s.delta_len()
    }

    /// `n <- n + B (A n)` for `rows` rows of `hidden` values in `normed`; `scratch` holds at least
    /// `rank` floats (no allocation).
    ///
    /// # Panics
    /// If `normed` holds fewer than `rows * hidden` values or `scratch` fewer than `rank`.
    pub fn apply_normed(&self, normed: &mut [f32], rows: usize, scratch: &mut [f32]) {
        let (h, r) = (self.shape.hidden, self.shape.rank);
        assert!(
            normed.len() >= rows * h,
            "HeadAdapter::apply_normed: normed is shorter than rows x hidden"
        );
        assert!(
            scratch.len() >= r,
            "HeadAdapter::apply_normed: scratch is shorter than rank"
        );
        let z = &mut scratch[..r];
        for n in normed[..rows * h].chunks_exact_mut(h) {
            for (zk, ak) in z.iter_mut().zip(self.a.chunks_exact(h)) {
                *zk = super::train::dot(ak, n);
            }
            for (nj, bj) in n.iter_mut().zip(self.b.chunks_exact(r)) {
                *nj += bj.iter().zip(z.iter()).map(|(b, z)| b * z).sum::<f32>();
            }
        }
    }

    /// `logits += bias` on each of `rows` rows of `draft_vocab` values.
    ///
    /// # Panics
    /// If `logits` holds fewer than `rows * draft_vocab` values.
    pub fn apply_logits(&self, logits: &mut [f32], rows: usize) {
        let v = self.shape.draft_vocab;
        assert!(
            logits.len() >= rows * v,
            "HeadAdapter::apply_logits: logits is shorter than rows x draft_vocab"
        );
        for row in logits[..rows * v].chunks_exact_mut(v) {
            for (l, b) in row.iter_mut().zip(&self.bias) {
                *l += b;
            }
        }
    }

    /// `rank_logits += D h1` on each of `rows` rows (`rank_hidden` holds `rows x rank_hidden` values of
    /// `h1`, `rank_logits` `rows x rank_classes`). Nothing to do without a rank head.
    ///
    /// # Panics
    /// If either slice is shorter than its `rows` rows.
    pub fn apply_rank(&self, rank_hidden: &[f32], rank_logits: &mut [f32], rows: usize) {
        let (c, s) = (self.shape.rank_classes, self.shape.rank_hidden);
        if c == 0 {
            return;
        }
        assert!(
            rank_hidden.len() >= rows * s && rank_logits.len() >= rows * c,
            "HeadAdapter::apply_rank: rank_hidden or rank_logits is shorter than rows"
        );
        for (h1, out) in rank_hidden
            .chunks_exact(s)
            .zip(rank_logits.chunks_exact_mut(c))
            .take(rows)
        {
            for (o, d) in out.iter_mut().zip(self.rank_delta.chunks_exact(s)) {
                *o += super::train::dot(d, h1);
            }
        }
    }

    /// Writes the adapter as safetensors (F32): `adapter.a` `[rank, hidden]`, `adapter.b`
    /// `[hidden, rank]`, `adapter.bias` `[draft_vocab]` and, with a rank head, `adapter.rank_delta`
    /// `[rank_classes, rank_hidden]`. The bytes go to a temporary file beside `path` (synced), which
    /// is then renamed over `path`: a reader never sees a partial file.
    pub fn save(&self, path: &Path) -> Result<(), LoadError> {
        let s = &self.shape;
        let mut tensors = vec![
            (NAME_A, vec![s.rank, s.hidden], TensorData::F32(&self.a)),
            (NAME_B, vec![s.hidden, s.rank], TensorData::F32(&self.b)),
            (NAME_BIAS, vec![s.draft_vocab], TensorData::F32(&self.bias)),
        ];
        if s.rank_classes > 0 {
            tensors.push((
                NAME_DELTA,
                vec![s.rank_classes, s.rank_hidden],
                TensorData::F32(&self.rank_delta),
            ));
        }
        let bytes = serialize(&tensors).map_err(|e| load_err!("{}: {e}", path.display()))?;
        let Some(file_name) = path.file_name() else {
            return Err(load_err!("{}: not a file path", path.display()));
        };
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            load_err!("cannot write {}: {e}", path.display())
        })
    }

    /// Reads an adapter written by [`HeadAdapter::save`] and checks it against `expected` (the
    /// drafter's shape): every tensor present with the expected shape (`adapter.rank_delta` present
    /// exactly when the drafter has a rank head), every value finite. Errors name the file and tensor.
    pub fn load(path: &Path, expected: AdapterShape) -> Result<Self, LoadError> {
        let origin = path.display();
        expected
            .validate()
            .map_err(|e| load_err!("{origin}: expected adapter shape {expected:?}: {e}"))?;
        let st = SafeTensors::open(path)?;
        let s = expected;
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>, LoadError> {
            if !st.contains(name) {
                return Err(load_err!("{origin}: missing tensor {name}"));
            }
            let (got, data) = st.f32(name)?;
            if got != shape {
                return Err(load_err!(
                    "{origin}: tensor {name} has shape {got:?}, the drafter needs {shape:?} \
                     (adapter shape {s:?})"
                ));
            }
            if let Some(i) = data.iter().position(|x| !x.is_finite()) {
                return Err(load_err!(
                    "{origin}: tensor {name} holds a non-finite value ({}) at element {i}",
                    data[i]
                ));
            }
            Ok(data)
        };
        let a = read(NAME_A, &[s.rank, s.hidden])?;
        let b = read(NAME_B, &[s.hidden, s.rank])?;
        let bias = read(NAME_BIAS, &[s.draft_vocab])?;
        let rank_delta = if s.rank_classes > 0 {
            read(NAME_DELTA, &[s.rank_classes, s.rank_hidden])?
        } else if st.contains(NAME_DELTA) {
            return Err(load_err!(
                "{origin}: tensor {NAME_DELTA} is present but the drafter has no rank head"
            ));
        } else {
            Vec::new()
        };
        Ok(HeadAdapter {
            shape: s,
            a,
            b,
            bias,
            rank_delta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn shape() -> AdapterShape {
        AdapterShape {
            hidden: 12,
            draft_vocab: 20,
            rank: 3,
            rank_classes: 4,
            rank_hidden: 5,
        }
    }

    /// Values in [-1, 1) from a seed.
    fn fill(v: &mut [f32], seed: u64) {
        let rng = CounterRng::new(seed);
        for (i, x) in v.iter_mut().enumerate() {
            *x = (2.0 * rng.uniform(i as u64) - 1.0) as f32;
        }
    }

    fn random_adapter(s: AdapterShape, seed: u64) -> HeadAdapter {
        let mut w = HeadAdapter::new(s, seed).unwrap();
        fill(&mut w.b, seed + 1);
        fill(&mut w.bias, seed + 2);
        fill(&mut w.rank_delta, seed + 3);
        w
    }

    fn tmp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("specblock-adapter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn new_is_identity_deterministic_and_validates() {
        let s = shape();
        let w = HeadAdapter::new(s, 7).unwrap();
        assert!(w.is_identity());
        assert_eq!(w, HeadAdapter::new(s, 7).unwrap());
        assert_ne!(w.a, HeadAdapter::new(s, 8).unwrap().a);
        assert!(w.a.iter().all(|x| x.is_finite()) && w.a.iter().any(|&x| x != 0.0));
        // Roughly N(0, 1/hidden) on a larger draw.
        let big = HeadAdapter::new(
            AdapterShape {
                hidden: 400,
                rank: 50,
                ..s
            },
            1,
        )
        .unwrap();
        let var = big.a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / big.a.len() as f64;
        assert!(
            (var * 400.0 - 1.0).abs() < 0.05,
            "variance x hidden = {}",
            var * 400.0
        );
        for bad in [
            AdapterShape { rank: 0, ..s },
            AdapterShape { rank: 65, ..s },
            AdapterShape { hidden: 0, ..s },
            AdapterShape {
                draft_vocab: 0,
                ..s
            },
            AdapterShape {
                rank_classes: 0,
                ..s
            },
            AdapterShape {
                rank_hidden: 0,
                ..s
            },
            AdapterShape {
                hidden: usize::MAX / 2,
                ..s
            },
        ] {
            assert!(matches!(
                HeadAdapter::new(bad, 1),
                Err(Error::InvalidArgument(_))
            ));
        }
        let eagle = AdapterShape {
            rank_classes: 0,
            rank_hidden: 0,
            ..s
        };
        assert!(HeadAdapter::new(eagle, 1).unwrap().rank_delta.is_empty());
    }

    #[test]
    fn applies_equal_the_straightforward_formulas() {
        let s = shape();
        let w = random_adapter(s, 11);
        assert!(!w.is_identity());
        let rows = 3;
        let mut n = vec![0f32; rows * s.hidden];
        fill(&mut n, 99);
        let orig = n.clone();
        let mut scratch = [0f32; 3];
        w.apply_normed(&mut n, rows, &mut scratch);
        for i in 0..rows {
            let x = &orig[i * s.hidden..(i + 1) * s.hidden];
            for j in 0..s.hidden {
                let mut want = x[j] as f64;
                for k in 0..s.rank {
                    let z: f64 = (0..s.hidden)
                        .map(|c| w.a[k * s.hidden + c] as f64 * x[c] as f64)
                        .sum();
                    want += w.b[j * s.rank + k] as f64 * z;
                }
                let got = n[i * s.hidden + j] as f64;
                assert!((got - want).abs() < 1e-5, "normed[{i},{j}] {got} vs {want}");
            }
        }

        let mut logits = vec![0f32; rows * s.draft_vocab];
        fill(&mut logits, 5);
        let before = logits.clone();
        w.apply_logits(&mut logits, rows);
        for (i, (g, b)) in logits.iter().zip(&before).enumerate() {
            assert_eq!(*g, b + w.bias[i % s.draft_vocab]);
        }

        let mut h1 = vec![0f32; rows * s.rank_hidden];
        fill(&mut h1, 6);
        let mut rl = vec![0f32; rows * s.rank_classes];
        fill(&mut rl, 7);
        let before = rl.clone();
        w.apply_rank(&h1, &mut rl, rows);
        for i in 0..rows {
            for c in 0..s.rank_classes {
                let want = before[i * s.rank_classes + c] as f64
                    + (0..s.rank_hidden)
                        .map(|j| {
                            w.rank_delta[c * s.rank_hidden + j] as f64
                                * h1[i * s.rank_hidden + j] as f64
                        })
                        .sum::<f64>();
                let got = rl[i * s.rank_classes + c] as f64;
                assert!((got - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn identity_changes_nothing() {
        let s = shape();
        let w = HeadAdapter::new(s, 3).unwrap();
        let mut n = vec![0f32; 2 * s.hidden];
        fill(&mut n, 1);
        let mut logits = vec![0f32; 2 * s.draft_vocab];
        fill(&mut logits, 2);
        let mut h1 = vec![0f32; 2 * s.rank_hidden];
        fill(&mut h1, 3);
        let mut rl = vec![0f32; 2 * s.rank_classes];
        fill(&mut rl, 4);
        let (n0, l0, r0) = (n.clone(), logits.clone(), rl.clone());
        w.apply_normed(&mut n, 2, &mut [0.0; 3]);
        w.apply_logits(&mut logits, 2);
        w.apply_rank(&h1, &mut rl, 2);
        assert_eq!((n, logits, rl), (n0, l0, r0));
    }

    #[test]
    fn copy_from_copies_everything() {
        let s = shape();
        let src = random_adapter(s, 21);
        let mut dst = HeadAdapter::zeros(s).unwrap();
        let ptr = dst.a.as_ptr();
        dst.copy_from(&src);
        assert_eq!(dst, src);
        assert_eq!(ptr, dst.a.as_ptr());
    }

    #[test]
    fn save_load_round_trip() {
        for s in [
            shape(),
            AdapterShape {
                rank_classes: 0,
                rank_hidden: 0,
                ..shape()
            },
        ] {
            let w = random_adapter(s, 31);
            let path = tmp_path(&format!("round_trip_{}.safetensors", s.rank_classes));
            w.save(&path).unwrap();
            assert_eq!(HeadAdapter::load(&path, s).unwrap(), w);
            // Saving again replaces the file; no temporary file is left behind.
            w.save(&path).unwrap();
            let leftovers = std::fs::read_dir(path.parent().unwrap())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .contains(".tmp")
                })
                .count();
            assert_eq!(leftovers, 0);
            std::fs::remove_file(&path).unwrap();
        }
    }

    /// Writes the given tensors and returns `HeadAdapter::load`'s error message.
    fn load_error(name: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> std::string::String {
        let list: Vec<_> = tensors
            .iter()
            .map(|(n, s, v)| (*n, s.clone(), TensorData::F32(v)))
            .collect();
        let path = tmp_path(name);
        std::fs::write(&path, serialize(&list).unwrap()).unwrap();
        let e = HeadAdapter::load(&path, shape()).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        e
    }

    #[test]
    fn load_errors_are_clear() {
        let s = shape();
        let w = random_adapter(s, 41);
        let full = |w: &HeadAdapter| {
            vec![
                (NAME_A, vec![s.rank, s.hidden], w.a.clone()),
                (NAME_B, vec![s.hidden, s.rank], w.b.clone()),
                (NAME_BIAS, vec![s.draft_vocab], w.bias.clone()),
                (
                    NAME_DELTA,
                    vec![s.rank_classes, s.rank_hidden],
                    w.rank_delta.clone(),
                ),
            ]
        };
        let mut missing = full(&w);
        missing.remove(1);
        let e = load_error("missing.safetensors", &missing);
        assert!(e.contains("missing tensor adapter.b"), "{e}");

        let mut no_delta = full(&w);
        no_delta.pop();
        let e = load_error("no_delta.safetensors", &no_delta);
        assert!(e.contains("missing tensor adapter.rank_delta"), "{e}");

        let mut wrong = full(&w);
        wrong[0].1 = vec![s.hidden, s.rank];
        let e = load_error("wrong_shape.safetensors", &wrong);
        assert!(e.contains("adapter.a has shape [12, 3]"), "{e}");

        // Another rank than the drafter's.
        let other = AdapterShape { rank: 2, ..s };
        let w2 = random_adapter(other, 42);
        let mut t = full(&w);
        t[0] = (NAME_A, vec![2, s.hidden], w2.a.clone());
        t[1] = (NAME_B, vec![s.hidden, 2], w2.b.clone());
        let e = load_error("other_rank.safetensors", &t);
        assert!(e.contains("adapter.a has shape [2, 12]"), "{e}");

        let mut nan = full(&w);
        nan[2].2[5] = f32::NAN;
        let e = load_error("nan.safetensors", &nan);
        assert!(
            e.contains("adapter.bias holds a non-finite value (NaN) at element 5"),
            "{e}"
        );
        let mut inf = full(&w);
        inf[3].2[0] = f32::INFINITY;
        let e = load_error("inf.safetensors", &inf);
        assert!(e.contains("adapter.rank_delta holds a non-finite"), "{e}");

        // An EAGLE-3 drafter (no rank head) refuses a file with a rank delta.
        let path = tmp_path("delta_for_eagle.safetensors");
        w.save(&path).unwrap();
        let eagle = AdapterShape {
            rank_classes: 0,
            rank_hidden: 0,
            ..s
        };
        let e = HeadAdapter::load(&path, eagle).unwrap_err().to_string();
        assert!(
            e.contains("present but the drafter has no rank head"),
            "{e}"
        );
        std::fs::remove_file(&path).unwrap();

        let e = HeadAdapter::load(&tmp_path("does_not_exist.safetensors"), s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
