//! Training a [`HeadAdapter`] from verifier feedback: the hand-written backward of the adapted heads'
//! cross-entropy and AdamW, with every buffer allocated in [`Trainer::new`] (no heap allocation in
//! [`Trainer::loss_and_grad`], [`Trainer::train`] or [`Trainer::agreement`]).
//!
//! The draft logits of a record are computed in factored form, `logits_i = W n_i + (W B) z_i + bias`
//! with `z_i = A n_i`: the caller stores `W n_i` once per record ([`Trainer::base_logits`]) and each
//! step multiplies `W` by the `r` columns of `B` only, never `W n'`.
//!
//! Cost of one step on a batch of `N` rows (`V` draft vocabulary, `h` hidden, `r` rank, `c` rank
//! classes, `s` rank hidden), in multiply-adds (MACs):
//!
//! | part | MACs | how |
//! |---|---|---|
//! | `WB = W B` | `V h r` | matmul kernel, `W` streamed once |
//! | `z = A n` | `N h r` | |
//! | logits `base + (WB) z + bias`, softmax | `N V r` + `N V` exponentials | rows over the pool |
//! | `dz = (WB)^T g` | `N V r` | rows over the pool |
//! | `G = sum g z^T`, `dbias = sum g` | `N V r` | vocabulary columns over the pool |
//! | `dB = W^T G` | `V h r` | matmul kernel on the transposed copy of `W` |
//! | `dA = sum dz n^T` | `N h r` | |
//! | rank head | `2 N c s` | |
//! | AdamW | about 10 flops per parameter (`2 h r + V + c s`) | |
//!
//! In all about `2 V h r + 3 N V r + 2 N h r` MACs: at `V` 8192, `h` 576, `r` 8, `N` 64 that is
//! 75.5 M + 12.6 M + 0.6 M, about 89 M MACs, plus 0.5 M exponentials; `W` is read twice (as `W` and
//! as `W^T`, 9.4 MB each in bf16).

use std::vec::Vec;

use super::weights::{AdapterShape, HeadAdapter};
use crate::cpu::kernels::{Isa, Matrix, SendPtr, matmul_with};
use crate::cpu::{Pool, matmul};
use crate::drafter::try_zeros;
use crate::error::Error;
use crate::math::exp_nonpositive;

/// Training examples, struct-of-arrays over `rows` rows (the caller's ring buffer); only the rows
/// listed in an `idx` argument are read. `rows` is `targets.len()`; every other slice holds exactly
/// `rows` rows.
#[derive(Clone, Copy, Debug)]
pub struct Records<'a> {
    /// `rows x hidden`: the drafter's normed final hidden `n`, without the adapter.
    pub normed: &'a [f32],
    /// `rows x draft_vocab`: `W n`, precomputed by the caller with [`Trainer::base_logits`].
    pub base_logits: &'a [f32],
    /// `rows`: draft-vocabulary id of the target's token; -1 = outside the draft vocabulary (the LM
    /// loss ignores the row).
    pub targets: &'a [i32],
    /// `rows x rank_hidden`: the rank head's SiLU hidden `h1` as the live forward computed it; empty
    /// without a rank head.
    pub rank_hidden: &'a [f32],
    /// `rows x rank_classes`: `R2 h1`, the rank logits without the adapter's delta; empty without a
    /// rank head.
    pub base_rank_logits: &'a [f32],
    /// `rows`: the rank class label (`0..rank_classes`), or [`NO_RANK_LABEL`] for a row without
    /// rank-head values (the rank loss skips it); empty without a rank head.
    pub rank_labels: &'a [u8],
}

/// A rank label meaning "no rank-head values for this row": the rank loss skips the row.
pub const NO_RANK_LABEL: u8 = u8::MAX;

impl Records<'_> {
    /// Rows held: `targets.len()`.
    pub fn rows(&self) -> usize {
        self.targets.len()
    }
}

/// AdamW hyper-parameters (decoupled weight decay, as `torch.optim.AdamW`) and the rank loss weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainParams {
    /// Learning rate (default 2e-3).
    pub lr: f32,
    /// First-moment decay (default 0.9).
    pub beta1: f32,
    /// Second-moment decay (default 0.999).
    pub beta2: f32,
    /// Denominator epsilon (default 1e-8).
    pub eps: f32,
    /// Decoupled weight decay, applied to every tensor, the bias included (default 0).
    pub weight_decay: f32,
    /// Weight of the rank head's cross-entropy in the loss (default 1).
    pub rank_weight: f32,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            lr: 2e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            rank_weight: 1.0,
        }
    }
}

impl TrainParams {
    /// Checks the ranges: `lr`, `weight_decay` and `rank_weight` finite and >= 0, betas in `[0, 1)`,
    /// `eps` finite and > 0.
    pub fn validate(&self) -> Result<(), Error> {
        let nonneg = |x: f32| x.is_finite() && x >= 0.0;
        if !nonneg(self.lr) {
            return Err(Error::InvalidArgument("lr must be finite and >= 0"));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err(Error::InvalidArgument("beta1 and beta2 must be in [0, 1)"));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::InvalidArgument("eps must be finite and > 0"));
        }
        if !nonneg(self.weight_decay) {
            return Err(Error::InvalidArgument(
                "weight_decay must be finite and >= 0",
            ));
        }
        if !nonneg(self.rank_weight) {
            return Err(Error::InvalidArgument(
                "rank_weight must be finite and >= 0",
            ));
        }
        Ok(())
    }
}

/// Adam moments and the step count.
struct Adam {
    m: HeadAdapter,
    v: HeadAdapter,
    t: u64,
}

impl Adam {
    fn new(shape: AdapterShape) -> Result<Self, Error> {
        Ok(Adam {
            m: HeadAdapter::zeros(shape)?,
            v: HeadAdapter::zeros(shape)?,
            t: 0,
        })
    }

    fn copy_from(&mut self, other: &Adam) {
        self.m.copy_from(&other.m);
        self.v.copy_from(&other.v);
        self.t = other.t;
    }

    fn reset(&mut self) {
        for t in self.m.tensors_mut().into_iter().chain(self.v.tensors_mut()) {
            t.fill(0.0);
        }
        self.t = 0;
    }

    /// One AdamW step on `w` with gradient `g`, in `torch.optim.AdamW`'s order of operations.
    fn step(&mut self, w: &mut HeadAdapter, g: &HeadAdapter, p: &TrainParams) {
        self.t += 1;
        let t = self.t as f64;
        let bc1 = 1.0 - (p.beta1 as f64).powf(t);
        let bc2 = 1.0 - (p.beta2 as f64).powf(t);
        let step_size = (p.lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let decay = (1.0 - p.lr as f64 * p.weight_decay as f64) as f32;
        let (b1, b2, eps) = (p.beta1, p.beta2, p.eps);
        let params = w.tensors_mut().into_iter().zip(g.tensors());
        let moments = self.m.tensors_mut().into_iter().zip(self.v.tensors_mut());
        for ((pw, pg), (pm, pv)) in params.zip(moments) {
            for (((x, &gi), m), v) in pw.iter_mut().zip(pg).zip(pm.iter_mut()).zip(pv.iter_mut()) {
                *x *= decay;
                *m += (1.0 - b1) * (gi - *m);
                *v = *v * b2 + (1.0 - b2) * gi * gi;
                let denom = v.sqrt() / bc2_sqrt + eps;
                *x -= step_size * *m / denom;
            }
        }
    }
}

/// The shapes, `W^T` and every scratch buffer of a step.
struct Core {
    shape: AdapterShape,
    max_batch: usize,
    /// `W^T`: `hidden x draft_vocab`, the dtype of `W`.
    wt: Matrix,
    /// Instruction set of the row and column kernels.
    isa: Isa,
    /// Instruction set of the matmuls: never the bf16 x bf16 products, which would round `B` and `G`
    /// to bf16 (and grow a thread-local buffer).
    mm_isa: Isa,
    /// `B^T`: `rank x hidden`.
    bt: Vec<f32>,
    /// `(W B)^T`: `rank x draft_vocab`.
    wbt: Vec<f32>,
    /// `z = A n` per batch row: `max_batch x rank`.
    z: Vec<f32>,
    /// Adapted logits, then `g` (softmax minus one-hot, over `m`) per batch row: `max_batch x vocab`.
    logits: Vec<f32>,
    /// Per batch row: the LM cross-entropy, or the agreement code.
    row_out: Vec<f32>,
    /// `dz = (W B)^T g` per batch row: `max_batch x rank`.
    dz: Vec<f32>,
    /// `G^T = sum z g^T`: `rank x draft_vocab`.
    gt: Vec<f32>,
    /// `dB^T = (W^T G)^T`: `rank x hidden`.
    dbt: Vec<f32>,
    /// One row of rank logits: `rank_classes`.
    rank_row: Vec<f32>,
}

/// What a row pass computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Cross-entropy and its gradient `g` (rows with target -1 skipped).
    Loss,
    /// Whether the argmax hits the target.
    Agree,
}

/// Inputs of the per-row kernel.
struct RowTask<'a> {
    v: usize,
    r: usize,
    wbt: &'a [f32],
    bias: &'a [f32],
    base: &'a [f32],
    targets: &'a [i32],
    idx: &'a [usize],
    z: &'a [f32],
    inv_m: f32,
    pass: Pass,
}

/// Inputs of the per-column-block kernel (`G^T` and `dbias`).
struct ColTask<'a> {
    v: usize,
    r: usize,
    g: &'a [f32],
    z: &'a [f32],
    targets: &'a [i32],
    idx: &'a [usize],
}

/// Vocabulary columns per block of the column pass (`rank` rows of `G^T` of this width stay in L1).
const COL_BLOCK: usize = 256;
/// Vocabulary columns per block of the adapted-logits sum in the row kernel.
const ROW_BLOCK: usize = 512;

impl Core {
    /// Checks every argument against the shapes; returns the number of rows of `idx` with a target.
    fn check(
        &self,
        lm_head: &Matrix,
        w: &HeadAdapter,
        recs: &Records,
        idx: &[usize],
    ) -> Result<usize, Error> {
        let s = &self.shape;
        if w.shape != *s || !w.lengths_match() {
            return Err(Error::InvalidArgument(
                "adapter shape or tensor lengths differ from the trainer's shape",
            ));
        }
        let (len, same_dtype) = match (lm_head, &self.wt) {
            (Matrix::F32(d), Matrix::F32(_)) => (d.len(), true),
            (Matrix::Bf16(d), Matrix::Bf16(_)) => (d.len(), true),
            (Matrix::Bf16Packed(p), Matrix::Bf16(_)) => (p.out() * p.k(), true),
            (Matrix::F32(d), _) => (d.len(), false),
            (Matrix::Bf16(d), _) => (d.len(), false),
            (Matrix::Bf16Packed(p), _) => (p.out() * p.k(), false),
        };
        if len != s.draft_vocab * s.hidden || !same_dtype {
            return Err(Error::InvalidArgument(
                "lm_head is not the draft_vocab x hidden matrix given to Trainer::new",
            ));
        }
        if idx.len() > self.max_batch {
            return Err(Error::InvalidArgument("idx holds more rows than max_batch"));
        }
        let rows = recs.targets.len();
        if rows.checked_mul(s.hidden) != Some(recs.normed.len()) {
            return Err(Error::InvalidArgument(
                "records: normed must hold rows x hidden values (rows = targets.len())",
            ));
        }
        if rows.checked_mul(s.draft_vocab) != Some(recs.base_logits.len()) {
            return Err(Error::InvalidArgument(
                "records: base_logits must hold rows x draft_vocab values",
            ));
        }
        let c = s.rank_classes;
        if c > 0
            && (rows.checked_mul(s.rank_hidden) != Some(recs.rank_hidden.len())
                || rows.checked_mul(c) != Some(recs.base_rank_logits.len())
                || recs.rank_labels.len() != rows)
        {
            return Err(Error::InvalidArgument(
                "records: rank_hidden, base_rank_logits and rank_labels must hold rows x \
                 rank_hidden, rows x rank_classes and rows values",
            ));
        }
        let mut lm_rows = 0;
        for &i in idx {
            if i >= rows {
                return Err(Error::InvalidArgument("idx names a row beyond the records"));
            }
            let t = recs.targets[i];
            if t < -1 || t as i64 >= s.draft_vocab as i64 {
                return Err(Error::InvalidArgument(
                    "records: a target is outside -1..draft_vocab",
                ));
            }
            if t >= 0 {
                lm_rows += 1;
            }
            if c > 0 && recs.rank_labels[i] != NO_RANK_LABEL && recs.rank_labels[i] as usize >= c {
                return Err(Error::InvalidArgument(
                    "records: a rank label is outside 0..rank_classes",
                ));
            }
        }
        Ok(lm_rows)
    }

    /// `z = A n` for the rows of `idx`, and `(W B)^T`.
    fn prepare(
        &mut self,
        pool: &Pool,
        lm_head: &Matrix,
        w: &HeadAdapter,
        recs: &Records,
        idx: &[usize],
    ) {
        let (h, v, r) = (self.shape.hidden, self.shape.draft_vocab, self.shape.rank);
        for (j, &i) in idx.iter().enumerate() {
            let n = &recs.normed[i * h..(i + 1) * h];
            for (zk, ak) in self.z[j * r..(j + 1) * r]
                .iter_mut()
                .zip(w.a.chunks_exact(h))
            {
                *zk = dot(ak, n);
            }
        }
        for (k, row) in self.bt.chunks_exact_mut(h).enumerate() {
            for (x, bj) in row.iter_mut().zip(w.b.chunks_exact(r)) {
                *x = bj[k];
            }
        }
        matmul_with(self.mm_isa, pool, lm_head, v, h, &self.bt, r, &mut self.wbt);
    }

    /// The row kernel over every row of `idx`, in parallel: fills `row_out` (and, for
    /// [`Pass::Loss`], `logits` with `g` and `dz`).
    fn rows(
        &mut self,
        pool: &Pool,
        w: &HeadAdapter,
        recs: &Records,
        idx: &[usize],
        inv_m: f32,
        pass: Pass,
    ) {
        let (v, r) = (self.shape.draft_vocab, self.shape.rank);
        let logits = SendPtr(self.logits.as_mut_ptr());
        let dz = SendPtr(self.dz.as_mut_ptr());
        let out = SendPtr(self.row_out.as_mut_ptr());
        let task = RowTask {
            v,
            r,
            wbt: &self.wbt,
            bias: &w.bias,
            base: recs.base_logits,
            targets: recs.targets,
            idx,
            z: &self.z,
            inv_m,
            pass,
        };
        let isa = self.isa;
        pool.for_each_chunk(idx.len(), &|j| {
            // SAFETY: j < idx.len() <= max_batch, and the buffers hold max_batch rows (logits of `v`,
            // dz of `r`, row_out of 1); chunk j is taken by exactly one thread, which alone touches
            // row j of each buffer while the pass runs.
            let (row, dzj) = unsafe {
                (
                    core::slice::from_raw_parts_mut(logits.get().add(j * v), v),
                    core::slice::from_raw_parts_mut(dz.get().add(j * r), r),
                )
            };
            let res = row_kernel(isa, &task, j, row, dzj);
            // SAFETY: as above.
            unsafe { *out.get().add(j) = res };
        });
    }

    /// `G^T` into `gt` and `dbias` into `bias`, over vocabulary blocks in parallel.
    fn columns(&mut self, pool: &Pool, recs: &Records, idx: &[usize], bias: &mut [f32]) {
        let (v, r) = (self.shape.draft_vocab, self.shape.rank);
        let gt = SendPtr(self.gt.as_mut_ptr());
        let db = SendPtr(bias.as_mut_ptr());
        let task = ColTask {
            v,
            r,
            g: &self.logits[..idx.len() * v],
            z: &self.z,
            targets: recs.targets,
            idx,
        };
        let isa = self.isa;
        pool.for_each_chunk(v.div_ceil(COL_BLOCK), &|b| {
            let c0 = b * COL_BLOCK;
            let c1 = (c0 + COL_BLOCK).min(v);
            col_kernel(isa, &task, c0, c1, gt, db);
        });
    }

    /// Mean loss over `idx` and its gradient into `grad`; arguments already checked (`lm_rows` rows
    /// with a target). No allocation.
    #[allow(clippy::too_many_arguments)]
    fn loss_grad(
        &mut self,
        pool: &Pool,
        lm_head: &Matrix,
        w: &HeadAdapter,
        recs: &Records,
        idx: &[usize],
        lm_rows: usize,
        rank_weight: f32,
        grad: &mut HeadAdapter,
    ) -> f32 {
        let s = self.shape;
        let (h, r) = (s.hidden, s.rank);
        let mut loss = 0f64;
        if lm_rows == 0 {
            grad.a.fill(0.0);
            grad.b.fill(0.0);
            grad.bias.fill(0.0);
        } else {
            self.prepare(pool, lm_head, w, recs, idx);
            let inv_m = 1.0 / lm_rows as f32;
            self.rows(pool, w, recs, idx, inv_m, Pass::Loss);
            let mut sum = 0f64;
            for (j, &i) in idx.iter().enumerate() {
                if recs.targets[i] >= 0 {
                    sum += self.row_out[j] as f64;
                }
            }
            loss += sum / lm_rows as f64;
            self.columns(pool, recs, idx, &mut grad.bias);
            // dB = W^T G, as dB^T (rank x hidden).
            matmul_with(
                self.mm_isa,
                pool,
                &self.wt,
                h,
                s.draft_vocab,
                &self.gt,
                r,
                &mut self.dbt,
            );
            for (j, bj) in grad.b.chunks_exact_mut(r).enumerate() {
                for (k, x) in bj.iter_mut().enumerate() {
                    *x = self.dbt[k * h + j];
                }
            }
            // dA = sum_i dz_i n_i^T.
            grad.a.fill(0.0);
            for (j, &i) in idx.iter().enumerate() {
                if recs.targets[i] < 0 {
                    continue;
                }
                let n = &recs.normed[i * h..(i + 1) * h];
                for (ak, &d) in grad.a.chunks_exact_mut(h).zip(&self.dz[j * r..(j + 1) * r]) {
                    axpy(ak, d, n);
                }
            }
        }
        let c = s.rank_classes;
        if c > 0 {
            grad.rank_delta.fill(0.0);
            if !idx.is_empty() {
                loss += rank_weight as f64 * self.rank_loss_grad(w, recs, idx, rank_weight, grad);
            }
        }
        loss as f32
    }

    /// The rank head's mean cross-entropy over `idx`; adds its gradient (times `rank_weight`) into
    /// `grad.rank_delta`.
    fn rank_loss_grad(
        &mut self,
        w: &HeadAdapter,
        recs: &Records,
        idx: &[usize],
        rank_weight: f32,
        grad: &mut HeadAdapter,
    ) -> f64 {
        let (c, sh) = (self.shape.rank_classes, self.shape.rank_hidden);
        let labelled = idx
            .iter()
            .filter(|&&i| recs.rank_labels[i] != NO_RANK_LABEL)
            .count();
        if labelled == 0 {
            return 0.0;
        }
        let inv = rank_weight / labelled as f32;
        let row = &mut self.rank_row;
        let mut sum = 0f64;
        for &i in idx {
            if recs.rank_labels[i] == NO_RANK_LABEL {
                continue;
            }
            let h1 = &recs.rank_hidden[i * sh..(i + 1) * sh];
            let label = recs.rank_labels[i] as usize;
            let base = &recs.base_rank_logits[i * c..(i + 1) * c];
            for ((x, &b), d) in row.iter_mut().zip(base).zip(w.rank_delta.chunks_exact(sh)) {
                *x = b + dot(d, h1);
            }
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let ly = row[label];
            let mut total = 0f32;
            for x in row.iter_mut() {
                *x = exp_nonpositive(*x - max);
                total += *x;
            }
            sum += ((max - ly) + total.ln()) as f64;
            let scale = inv / total;
            for (k, (&p, dk)) in row
                .iter()
                .zip(grad.rank_delta.chunks_exact_mut(sh))
                .enumerate()
            {
                let q = p * scale - if k == label { inv } else { 0.0 };
                axpy(dk, q, h1);
            }
        }
        sum / labelled as f64
    }
}

/// Trains a [`HeadAdapter`]: the loss, its gradient and AdamW, in buffers allocated once in
/// [`Trainer::new`] (no heap allocation afterwards).
///
/// The loss of a batch `idx` is the mean, over its rows with a target (`>= 0`), of the cross-entropy
/// of the adapted draft logits `W n + (W B)(A n) + bias` against the target, plus `rank_weight` times
/// the mean over all its rows of the cross-entropy of the adapted rank logits `R2 h1 + D h1` against
/// the rank label (only with a rank head).
pub struct Trainer {
    core: Core,
    grad: HeadAdapter,
    adam: Adam,
    /// `w` and the optimizer at the start of a `train` call, restored if a step fails.
    saved_w: HeadAdapter,
    saved_adam: Adam,
    /// The rank loss weight [`Trainer::loss_and_grad`] uses.
    rank_weight: f32,
}

impl Trainer {
    /// A trainer for adapters of `shape` on the draft LM head `lm_head` (`draft_vocab x hidden`, f32
    /// or bf16), for batches of up to `max_batch` rows. Keeps a transposed copy of `lm_head` (same
    /// dtype) so that both `W B` and `W^T G` run on the matmul kernel; later calls must pass the same
    /// `lm_head`.
    ///
    /// Errors: [`Error::InvalidArgument`] for a shape [`AdapterShape::validate`] refuses, `max_batch`
    /// 0, buffer sizes that overflow, or an `lm_head` of another size; [`Error::OutOfMemory`] when
    /// the buffers cannot be allocated.
    pub fn new(shape: AdapterShape, max_batch: usize, lm_head: &Matrix) -> Result<Self, Error> {
        shape.validate()?;
        if max_batch == 0 {
            return Err(Error::InvalidArgument("max_batch must be > 0"));
        }
        let (v, h, r) = (shape.draft_vocab, shape.hidden, shape.rank);
        let batch_vocab = max_batch
            .checked_mul(v)
            .filter(|n| n.checked_mul(4).is_some())
            .ok_or(Error::InvalidArgument("max_batch x draft_vocab overflows"))?;
        let wt = match lm_head {
            Matrix::F32(d) if d.len() == v * h => Matrix::F32(transpose(d, v, h)?),
            Matrix::Bf16(d) if d.len() == v * h => Matrix::Bf16(transpose(d, v, h)?),
            Matrix::Bf16Packed(p) if p.out() == v && p.k() == h => {
                let rows = p.try_to_row_major().map_err(|_| Error::OutOfMemory)?;
                Matrix::Bf16(transpose(&rows, v, h)?)
            }
            _ => {
                return Err(Error::InvalidArgument(
                    "lm_head must hold draft_vocab x hidden weights",
                ));
            }
        };
        // The matmuls W B (r rows of h) and W^T G (r rows of v) copy their activations into this
        // thread's buffer for bf16 weights: grow it now so training allocates nothing.
        crate::cpu::kernels::try_reserve_bf16_activations(r.saturating_mul(h.max(v)))
            .map_err(|_| Error::OutOfMemory)?;
        let isa = Isa::detect();
        let mm_isa = if isa == Isa::Avx512Bf16 {
            Isa::Avx512
        } else {
            isa
        };
        let core = Core {
            shape,
            max_batch,
            wt,
            isa,
            mm_isa,
            bt: try_zeros(r * h)?,
            wbt: try_zeros(r * v)?,
            z: try_zeros(max_batch * r)?,
            logits: try_zeros(batch_vocab)?,
            row_out: try_zeros(max_batch)?,
            dz: try_zeros(max_batch * r)?,
            gt: try_zeros(r * v)?,
            dbt: try_zeros(r * h)?,
            rank_row: try_zeros(shape.rank_classes)?,
        };
        Ok(Trainer {
            core,
            grad: HeadAdapter::zeros(shape)?,
            adam: Adam::new(shape)?,
            saved_w: HeadAdapter::zeros(shape)?,
            saved_adam: Adam::new(shape)?,
            rank_weight: TrainParams::default().rank_weight,
        })
    }

    /// The adapter shape this trainer was made for.
    pub fn shape(&self) -> AdapterShape {
        self.core.shape
    }

    /// The most rows a batch may hold.
    pub fn max_batch(&self) -> usize {
        self.core.max_batch
    }

    /// AdamW steps taken since creation or the last [`Trainer::reset`].
    pub fn steps_taken(&self) -> u64 {
        self.adam.t
    }

    /// The rank loss weight of [`Trainer::loss_and_grad`]: 1 at creation, then the `rank_weight` of
    /// the last [`Trainer::train`] call or [`Trainer::set_rank_weight`].
    pub fn rank_weight(&self) -> f32 {
        self.rank_weight
    }

    /// Sets the rank loss weight of [`Trainer::loss_and_grad`] (finite, >= 0, else
    /// [`Error::InvalidArgument`]).
    pub fn set_rank_weight(&mut self, rank_weight: f32) -> Result<(), Error> {
        if !(rank_weight.is_finite() && rank_weight >= 0.0) {
            return Err(Error::InvalidArgument(
                "rank_weight must be finite and >= 0",
            ));
        }
        self.rank_weight = rank_weight;
        Ok(())
    }

    /// `W n` for `rows` rows of `normed` (`rows x hidden`) into `out` (`rows x draft_vocab`): what the
    /// caller stores as [`Records::base_logits`] for new records. The same matmul as the drafter's
    /// forward (on CPUs with AVX512_BF16 and bf16 weights it rounds `normed` to bf16, as the forward
    /// does, in a per-thread buffer that grows on first use).
    ///
    /// # Panics
    /// If `lm_head` does not hold `draft_vocab x hidden` weights or a slice is shorter than its rows.
    pub fn base_logits(
        pool: &Pool,
        lm_head: &Matrix,
        shape: &AdapterShape,
        normed: &[f32],
        rows: usize,
        out: &mut [f32],
    ) {
        matmul(
            pool,
            lm_head,
            shape.draft_vocab,
            shape.hidden,
            normed,
            rows,
            out,
        );
    }

    /// The mean loss over the rows `idx` of `recs` at weights `w` (see [`Trainer`]; rank weight
    /// [`Trainer::rank_weight`]), and its gradient with respect to every tensor of `w` into `grad`
    /// (same shape; overwritten). No allocation.
    ///
    /// Errors: [`Error::InvalidArgument`] when a slice length disagrees with the shapes, `idx` names a
    /// row beyond the records or holds more than `max_batch` rows, a target is outside
    /// `-1..draft_vocab`, a rank label outside `0..rank_classes`, `w`, `grad` or `lm_head` differ from
    /// the trainer's shapes, or the loss or gradient is not finite (`grad` then holds garbage).
    #[allow(clippy::too_many_arguments)]
    pub fn loss_and_grad(
        &mut self,
        pool: &Pool,
        lm_head: &Matrix,
        w: &HeadAdapter,
        recs: &Records,
        idx: &[usize],
        grad: &mut HeadAdapter,
    ) -> Result<f32, Error> {
        let lm_rows = self.core.check(lm_head, w, recs, idx)?;
        if grad.shape != self.core.shape || !grad.lengths_match() {
            return Err(Error::InvalidArgument(
                "grad shape or tensor lengths differ from the trainer's shape",
            ));
        }
        let loss =
            self.core
                .loss_grad(pool, lm_head, w, recs, idx, lm_rows, self.rank_weight, grad);
        check_finite(loss, grad)?;
        Ok(loss)
    }

    /// `steps` AdamW steps on `w` (full batch `idx` each step) with the hyper-parameters `p`; returns
    /// the loss of the last step (computed before its update). `steps` 0 returns the loss at `w`
    /// without changing it. Sets [`Trainer::rank_weight`] to `p.rank_weight`. No allocation.
    ///
    /// Errors: those of [`Trainer::loss_and_grad`] and [`TrainParams::validate`]. When a step's loss
    /// or gradient is not finite, `w` and the optimizer state are restored to what they were at the
    /// call, and the error is [`Error::InvalidArgument`].
    #[allow(clippy::too_many_arguments)]
    pub fn train(
        &mut self,
        pool: &Pool,
        lm_head: &Matrix,
        w: &mut HeadAdapter,
        recs: &Records,
        idx: &[usize],
        steps: usize,
        p: &TrainParams,
    ) -> Result<f32, Error> {
        p.validate()?;
        let lm_rows = self.core.check(lm_head, w, recs, idx)?;
        self.rank_weight = p.rank_weight;
        let rw = self.rank_weight;
        if steps == 0 {
            let loss =
                self.core
                    .loss_grad(pool, lm_head, w, recs, idx, lm_rows, rw, &mut self.grad);
            check_finite(loss, &self.grad)?;
            return Ok(loss);
        }
        self.saved_w.copy_from(w);
        self.saved_adam.copy_from(&self.adam);
        let mut last = 0.0;
        for _ in 0..steps {
            let loss =
                self.core
                    .loss_grad(pool, lm_head, w, recs, idx, lm_rows, rw, &mut self.grad);
            if let Err(e) = check_finite(loss, &self.grad) {
                w.copy_from(&self.saved_w);
                self.adam.copy_from(&self.saved_adam);
                return Err(e);
            }
            self.adam.step(w, &self.grad, p);
            last = loss;
        }
        Ok(last)
    }

    /// Clears the Adam moments and the step count (a fresh optimizer).
    pub fn reset(&mut self) {
        self.adam.reset();
    }

    /// Copies the optimizer state (moments and step count) of `other`, a trainer of the same shape,
    /// without allocating (shadow copies).
    ///
    /// # Panics
    /// If the shapes differ.
    pub fn copy_state_from(&mut self, other: &Trainer) {
        assert_eq!(
            self.core.shape, other.core.shape,
            "Trainer::copy_state_from: shapes differ"
        );
        self.adam.copy_from(&other.adam);
        self.rank_weight = other.rank_weight;
    }

    /// For each row `idx[j]`, whether the argmax of the adapted draft logits (first index on ties)
    /// equals the target: `out[j]` is 1 for a hit, 0 for a miss and 2 for a row with target -1
    /// (ignored). Returns the hits. No allocation.
    ///
    /// Errors: as [`Trainer::loss_and_grad`] for the arguments (not for non-finite values), and
    /// [`Error::InvalidArgument`] when `out` is shorter than `idx`.
    pub fn agreement(
        &mut self,
        pool: &Pool,
        lm_head: &Matrix,
        w: &HeadAdapter,
        recs: &Records,
        idx: &[usize],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        self.core.check(lm_head, w, recs, idx)?;
        if out.len() < idx.len() {
            return Err(Error::InvalidArgument("out is shorter than idx"));
        }
        if idx.is_empty() {
            return Ok(0);
        }
        self.core.prepare(pool, lm_head, w, recs, idx);
        self.core.rows(pool, w, recs, idx, 0.0, Pass::Agree);
        let mut hits = 0;
        for (o, &code) in out.iter_mut().zip(&self.core.row_out[..idx.len()]) {
            *o = code as u8;
            hits += (*o == 1) as usize;
        }
        Ok(hits)
    }
}

/// [`Error::InvalidArgument`] unless the loss and every gradient element are finite.
fn check_finite(loss: f32, grad: &HeadAdapter) -> Result<(), Error> {
    let finite = loss.is_finite()
        && grad
            .tensors()
            .iter()
            .all(|t| t.iter().all(|x| x.is_finite()));
    if finite {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "non-finite loss or gradient (check the records' logits and hidden states); the \
             adapter was left unchanged",
        ))
    }
}

/// `src` (`rows x cols`, row-major) transposed, in blocks that stay in cache.
fn transpose<T: Copy + Default>(src: &[T], rows: usize, cols: usize) -> Result<Vec<T>, Error> {
    const BLK: usize = 32;
    let mut dst = Vec::new();
    dst.try_reserve_exact(rows * cols)
        .map_err(|_| Error::OutOfMemory)?;
    dst.resize(rows * cols, T::default());
    for r0 in (0..rows).step_by(BLK) {
        for c0 in (0..cols).step_by(BLK) {
            for r in r0..(r0 + BLK).min(rows) {
                for c in c0..(c0 + BLK).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
    Ok(dst)
}

/// The drafter's dot product (16 partial sums): the same summation order as the live forward.
pub(super) use crate::drafter::forward::dot;

/// `y += a x`.
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// Maximum with 16 partial maxima (NaN ignored, as `f32::max`).
#[inline(always)]
fn max16(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let c = x.chunks_exact(16);
    let tail = c
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for ch in c {
        for i in 0..16 {
            acc[i] = if ch[i] > acc[i] { ch[i] } else { acc[i] };
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// `x <- exp(x - max)` in place; returns the sum (16 partial sums).
#[inline(always)]
fn exp_sum16(x: &mut [f32], max: f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut c = x.chunks_exact_mut(16);
    for ch in &mut c {
        for i in 0..16 {
            ch[i] = exp_nonpositive(ch[i] - max);
            acc[i] += ch[i];
        }
    }
    let mut tail = 0f32;
    for v in c.into_remainder() {
        *v = exp_nonpositive(*v - max);
        tail += *v;
    }
    acc.iter().sum::<f32>() + tail
}

/// One batch row `j`: the adapted logits into `row`; then either the agreement code (1 hit, 0 miss,
/// 2 no target) or the cross-entropy, with `g = (softmax - onehot) / m` left in `row` and
/// `dz = (W B)^T g` in `dz` (a row without a target returns 0 with `dz` zero).
///
/// Plain loops the compiler vectorises: measured faster here than hand-tiled register blocks of
/// 16 columns by 4 rank rows (1.6 ms against 3.1 ms for 64 rows at V 8192, r 8 on one AVX2 core).
#[inline(always)]
fn row_generic(t: &RowTask, j: usize, row: &mut [f32], dz: &mut [f32]) -> f32 {
    let (v, r) = (t.v, t.r);
    let i = t.idx[j];
    let target = t.targets[i];
    if target < 0 {
        dz.fill(0.0);
        return if t.pass == Pass::Agree { 2.0 } else { 0.0 };
    }
    let y = target as usize;
    let base = &t.base[i * v..(i + 1) * v];
    let z = &t.z[j * r..(j + 1) * r];
    let mut c0 = 0;
    while c0 < v {
        let c1 = (c0 + ROW_BLOCK).min(v);
        let block = &mut row[c0..c1];
        for ((o, &b), &bb) in block.iter_mut().zip(&base[c0..c1]).zip(&t.bias[c0..c1]) {
            *o = b + bb;
        }
        for (k, &zk) in z.iter().enumerate() {
            axpy(block, zk, &t.wbt[k * v + c0..k * v + c1]);
        }
        c0 = c1;
    }
    let max = max16(row);
    if t.pass == Pass::Agree {
        let first = row.iter().position(|&x| x == max);
        return if first == Some(y) { 1.0 } else { 0.0 };
    }
    let ly = row[y];
    let total = exp_sum16(row, max);
    let loss = (max - ly) + total.ln();
    let scale = t.inv_m / total;
    for x in row.iter_mut() {
        *x *= scale;
    }
    row[y] -= t.inv_m;
    for (k, d) in dz.iter_mut().enumerate() {
        *d = dot(&t.wbt[k * v..(k + 1) * v], row);
    }
    loss
}

/// Columns `c0..c1` of `G^T = sum_j z_j g_j^T` and of `dbias = sum_j g_j` over the rows with a target.
#[inline(always)]
fn col_generic(t: &ColTask, c0: usize, c1: usize, gt: SendPtr, db: SendPtr) {
    let (v, r, len) = (t.v, t.r, c1 - c0);
    // SAFETY: c0..c1 lies inside 0..v and each block of columns is handled by exactly one thread;
    // `db` points at v values and `gt` at r x v values, so the slices below are in bounds and
    // disjoint from every other thread's.
    let dbias = unsafe { core::slice::from_raw_parts_mut(db.get().add(c0), len) };
    dbias.fill(0.0);
    for k in 0..r {
        // SAFETY: as above.
        unsafe { core::slice::from_raw_parts_mut(gt.get().add(k * v + c0), len) }.fill(0.0);
    }
    for (j, &i) in t.idx.iter().enumerate() {
        if t.targets[i] < 0 {
            continue;
        }
        let g = &t.g[j * v + c0..j * v + c1];
        axpy(dbias, 1.0, g);
        for k in 0..r {
            // SAFETY: as above.
            let gk = unsafe { core::slice::from_raw_parts_mut(gt.get().add(k * v + c0), len) };
            axpy(gk, t.z[j * r + k], g);
        }
    }
}

/// [`row_generic`] on the best instruction set `isa` allows.
fn row_kernel(isa: Isa, t: &RowTask, j: usize, row: &mut [f32], dz: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: `isa` is Isa::detect(), so the CPU has the features.
        Isa::Avx512Bf16 | Isa::Avx512 => return unsafe { row_avx512(t, j, row, dz) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { row_avx2(t, j, row, dz) },
        Isa::Portable => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    row_generic(t, j, row, dz)
}

/// [`col_generic`] on the best instruction set `isa` allows.
fn col_kernel(isa: Isa, t: &ColTask, c0: usize, c1: usize, gt: SendPtr, db: SendPtr) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: `isa` is Isa::detect(), so the CPU has the features.
        Isa::Avx512Bf16 | Isa::Avx512 => return unsafe { col_avx512(t, c0, c1, gt, db) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { col_avx2(t, c0, c1, gt, db) },
        Isa::Portable => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    col_generic(t, c0, c1, gt, db)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn row_avx512(t: &RowTask, j: usize, row: &mut [f32], dz: &mut [f32]) -> f32 {
    row_generic(t, j, row, dz)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_avx2(t: &RowTask, j: usize, row: &mut [f32], dz: &mut [f32]) -> f32 {
    row_generic(t, j, row, dz)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn col_avx512(t: &ColTask, c0: usize, c1: usize, gt: SendPtr, db: SendPtr) {
    col_generic(t, c0, c1, gt, db)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn col_avx2(t: &ColTask, c0: usize, c1: usize, gt: SendPtr, db: SendPtr) {
    col_generic(t, c0, c1, gt, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::CounterRng;
    use std::vec;

    /// Values in [-scale, scale) from a seed.
    fn uniform(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let rng = CounterRng::new(seed);
        (0..n)
            .map(|i| (2.0 * rng.uniform(i as u64) as f32 - 1.0) * scale)
            .collect()
    }

    /// A random training case; `w` is the LM head's values as f32.
    struct Case {
        s: AdapterShape,
        w: Vec<f32>,
        normed: Vec<f32>,
        base: Vec<f32>,
        targets: Vec<i32>,
        h1: Vec<f32>,
        base_rank: Vec<f32>,
        labels: Vec<u8>,
    }

    impl Case {
        fn new(s: AdapterShape, rows: usize, seed: u64, bf16: bool) -> (Case, Matrix) {
            let w = uniform(s.draft_vocab * s.hidden, seed, 1.0);
            let lm = Matrix::new(w.clone(), bf16);
            let w = lm.try_to_f32().unwrap();
            let normed = uniform(rows * s.hidden, seed + 1, 1.5);
            let mut base = vec![0f32; rows * s.draft_vocab];
            Trainer::base_logits(&Pool::new(1), &lm, &s, &normed, rows, &mut base);
            let rng = CounterRng::new(seed + 2);
            let targets = (0..rows)
                .map(|i| {
                    if i % 5 == 3 {
                        -1
                    } else {
                        (rng.bits(i as u64) % s.draft_vocab as u64) as i32
                    }
                })
                .collect();
            let h1 = uniform(rows * s.rank_hidden, seed + 3, 1.0);
            let base_rank = uniform(rows * s.rank_classes, seed + 4, 2.0);
            let labels = (0..if s.rank_classes > 0 { rows } else { 0 })
                .map(|i| (rng.bits(1000 + i as u64) % s.rank_classes as u64) as u8)
                .collect();
            let c = Case {
                s,
                w,
                normed,
                base,
                targets,
                h1,
                base_rank,
                labels,
            };
            (c, lm)
        }

        fn recs(&self) -> Records<'_> {
            Records {
                normed: &self.normed,
                base_logits: &self.base,
                targets: &self.targets,
                rank_hidden: &self.h1,
                base_rank_logits: &self.base_rank,
                rank_labels: &self.labels,
            }
        }
    }

    fn shape() -> AdapterShape {
        AdapterShape {
            hidden: 10,
            draft_vocab: 13,
            rank: 3,
            rank_classes: 3,
            rank_hidden: 5,
        }
    }

    fn random_adapter(s: AdapterShape, seed: u64) -> HeadAdapter {
        let mut a = HeadAdapter::new(s, seed).unwrap();
        a.b = uniform(a.b.len(), seed + 10, 0.3);
        a.bias = uniform(a.bias.len(), seed + 11, 0.3);
        a.rank_delta = uniform(a.rank_delta.len(), seed + 12, 0.3);
        a
    }

    /// Adapter tensors in f64 (A, B, bias, D).
    type P64 = [Vec<f64>; 4];

    fn to64(a: &HeadAdapter) -> P64 {
        a.tensors().map(|t| t.iter().map(|&x| x as f64).collect())
    }

    fn ce(logits: &[f64], y: usize) -> f64 {
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln() - logits[y]
    }

    /// The loss in the straightforward form: n' = n + B (A n), logits = W n' + bias, in f64, with
    /// `W n` taken from the records' base logits as the trainer takes it. (Recomputing `W n` in f64
    /// differs from the runtime's matmul where it rounds the activations to bf16, as `vdpbf16ps` does,
    /// by more than this check's tolerance.)
    fn naive_loss(c: &Case, p: &P64, idx: &[usize], rank_weight: f64) -> f64 {
        let s = c.s;
        let (h, v, r) = (s.hidden, s.draft_vocab, s.rank);
        let [a, b, bias, d] = p;
        let (mut lm, mut m) = (0.0, 0);
        for &i in idx {
            let Ok(y) = usize::try_from(c.targets[i]) else {
                continue;
            };
            let n: Vec<f64> = c.normed[i * h..(i + 1) * h]
                .iter()
                .map(|&x| x as f64)
                .collect();
            let z: Vec<f64> = (0..r)
                .map(|k| (0..h).map(|j| a[k * h + j] * n[j]).sum())
                .collect();
            let delta: Vec<f64> = (0..h)
                .map(|j| (0..r).map(|k| b[j * r + k] * z[k]).sum::<f64>())
                .collect();
            let logits: Vec<f64> = (0..v)
                .map(|o| {
                    c.base[i * v + o] as f64
                        + bias[o]
                        + (0..h)
                            .map(|j| c.w[o * h + j] as f64 * delta[j])
                            .sum::<f64>()
                })
                .collect();
            lm += ce(&logits, y);
            m += 1;
        }
        let mut loss = if m > 0 { lm / m as f64 } else { 0.0 };
        let (cl, sh) = (s.rank_classes, s.rank_hidden);
        if cl > 0 && !idx.is_empty() {
            let mut rk = 0.0;
            for &i in idx {
                let logits: Vec<f64> = (0..cl)
                    .map(|k| {
                        c.base_rank[i * cl + k] as f64
                            + (0..sh)
                                .map(|j| d[k * sh + j] * c.h1[i * sh + j] as f64)
                                .sum::<f64>()
                    })
                    .collect();
                rk += ce(&logits, c.labels[i] as usize);
            }
            loss += rank_weight * rk / idx.len() as f64;
        }
        loss
    }

    /// Checks `loss_and_grad` against the naive loss and its central differences.
    fn check_grads(c: &Case, lm: &Matrix, w: &HeadAdapter, idx: &[usize], rank_weight: f32) {
        let pool = Pool::new(2);
        let mut tr = Trainer::new(c.s, 8, lm).unwrap();
        tr.set_rank_weight(rank_weight).unwrap();
        let mut grad = HeadAdapter::zeros(c.s).unwrap();
        let loss = tr
            .loss_and_grad(&pool, lm, w, &c.recs(), idx, &mut grad)
            .unwrap();
        let p = to64(w);
        let want = naive_loss(c, &p, idx, rank_weight as f64);
        assert!(
            (loss as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
            "loss {loss} vs {want}"
        );
        for (t, got) in grad.tensors().iter().enumerate() {
            let mut fd = vec![0f64; got.len()];
            for (e, f) in fd.iter_mut().enumerate() {
                let mut hi = p.clone();
                hi[t][e] += 1e-5;
                let mut lo = p.clone();
                lo[t][e] -= 1e-5;
                *f = (naive_loss(c, &hi, idx, rank_weight as f64)
                    - naive_loss(c, &lo, idx, rank_weight as f64))
                    / 2e-5;
            }
            let scale = fd.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
            for (e, (&g, &f)) in got.iter().zip(&fd).enumerate() {
                assert!(
                    (g as f64 - f).abs() <= 1e-4 * scale,
                    "tensor {t}[{e}]: {g} vs finite difference {f}"
                );
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let s = shape();
        let (c, lm) = Case::new(s, 9, 1, false);
        let w = random_adapter(s, 2);
        // Rows 3 and 8 have target -1; row 2 twice.
        check_grads(&c, &lm, &w, &[0, 2, 3, 5, 8, 2, 7], 1.0);
        check_grads(&c, &lm, &w, &[4, 1], 0.5);
        // No row with a target: only the rank term.
        check_grads(&c, &lm, &w, &[3, 8], 1.0);
        // A fresh adapter (B = 0) still has gradients for B and the bias.
        check_grads(&c, &lm, &HeadAdapter::new(s, 3).unwrap(), &[0, 1, 2], 1.0);
    }

    #[test]
    fn every_instruction_set_gives_the_same_step() {
        let s = shape();
        let (c, lm) = Case::new(s, 9, 12, false);
        let pool = Pool::new(2);
        let idx = [0, 1, 2, 3, 4, 5, 6, 7];
        let mut results = Vec::new();
        for isa in Isa::available() {
            let mut tr = Trainer::new(s, 8, &lm).unwrap();
            tr.core.isa = isa;
            tr.core.mm_isa = if isa == Isa::Avx512Bf16 {
                Isa::Avx512
            } else {
                isa
            };
            let mut w = random_adapter(s, 13);
            let mut out = [0u8; 8];
            let hits = tr
                .agreement(&pool, &lm, &w, &c.recs(), &idx, &mut out)
                .unwrap();
            let loss = tr
                .train(
                    &pool,
                    &lm,
                    &mut w,
                    &c.recs(),
                    &idx,
                    2,
                    &TrainParams::default(),
                )
                .unwrap();
            results.push((isa, hits, out, loss, w));
        }
        let (_, hits0, out0, loss0, w0) = &results[0];
        for (isa, hits, out, loss, w) in &results[1..] {
            assert_eq!((hits, out), (hits0, out0), "{isa:?}");
            assert!((loss - loss0).abs() < 1e-5 * loss0.abs(), "{isa:?}");
            for (a, b) in w.tensors().iter().zip(w0.tensors()) {
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() < 1e-5, "{isa:?}: {x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn gradients_with_bf16_head_and_without_rank_head() {
        let s = shape();
        let (c, lm) = Case::new(s, 9, 4, true);
        check_grads(&c, &lm, &random_adapter(s, 5), &[0, 1, 2, 3, 4, 5], 1.0);
        let e3 = AdapterShape {
            rank_classes: 0,
            rank_hidden: 0,
            ..s
        };
        let (c, lm) = Case::new(e3, 9, 6, false);
        assert!(c.h1.is_empty() && c.labels.is_empty());
        check_grads(&c, &lm, &random_adapter(e3, 7), &[0, 1, 2, 3, 4, 5], 1.0);
    }

    #[test]
    fn rows_outside_idx_are_not_read() {
        let s = shape();
        let (mut c, lm) = Case::new(s, 6, 8, false);
        let w = random_adapter(s, 9);
        let pool = Pool::new(2);
        let mut tr = Trainer::new(s, 4, &lm).unwrap();
        let mut grad = HeadAdapter::zeros(s).unwrap();
        let idx = [0, 2, 5];
        let before = tr
            .loss_and_grad(&pool, &lm, &w, &c.recs(), &idx, &mut grad)
            .unwrap();
        let g0 = grad.clone();
        for i in [1, 3, 4] {
            c.normed[i * s.hidden] = f32::NAN;
            c.base[i * s.draft_vocab + 1] = f32::INFINITY;
            c.h1[i * s.rank_hidden] = f32::NAN;
        }
        let after = tr
            .loss_and_grad(&pool, &lm, &w, &c.recs(), &idx, &mut grad)
            .unwrap();
        assert_eq!((before, &g0), (after, &grad));
    }

    /// A case whose targets a rank-4 adapter can fit: the argmax of a teacher adapter's logits.
    fn learnable(bf16: bool) -> (Case, Matrix) {
        let s = AdapterShape {
            hidden: 32,
            draft_vocab: 64,
            rank: 4,
            rank_classes: 4,
            rank_hidden: 16,
        };
        let rows = 48;
        let (mut c, lm) = Case::new(s, rows, 20, bf16);
        let mut teacher = HeadAdapter::new(s, 21).unwrap();
        teacher.b = uniform(teacher.b.len(), 22, 1.5);
        let mut n = c.normed.clone();
        teacher.apply_normed(&mut n, rows, &mut [0.0; 4]);
        let mut logits = vec![0f32; rows * s.draft_vocab];
        Trainer::base_logits(&Pool::new(1), &lm, &s, &n, rows, &mut logits);
        for (i, row) in logits.chunks_exact(s.draft_vocab).enumerate() {
            let best = (0..s.draft_vocab)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            c.targets[i] = if i % 7 == 6 { -1 } else { best as i32 };
            // Rank labels: a function of h1 the delta can learn.
            let h1 = &c.h1[i * s.rank_hidden..(i + 1) * s.rank_hidden];
            c.labels[i] = (0..4).max_by(|&a, &b| h1[a].total_cmp(&h1[b])).unwrap() as u8;
        }
        (c, lm)
    }

    fn learns(bf16: bool) {
        let (c, lm) = learnable(bf16);
        let s = c.s;
        let pool = Pool::new(2);
        let idx: Vec<usize> = (0..c.targets.len()).collect();
        let mut tr = Trainer::new(s, idx.len(), &lm).unwrap();
        let mut w = HeadAdapter::new(s, 23).unwrap();
        let mut out = vec![0u8; idx.len()];
        let before = tr
            .agreement(&pool, &lm, &w, &c.recs(), &idx, &mut out)
            .unwrap();
        assert!(
            out.iter()
                .enumerate()
                .all(|(j, &o)| (o == 2) == (j % 7 == 6))
        );
        let p = TrainParams {
            lr: 0.05,
            ..TrainParams::default()
        };
        let mut losses = Vec::new();
        for _ in 0..20 {
            losses.push(
                tr.train(&pool, &lm, &mut w, &c.recs(), &idx, 1, &p)
                    .unwrap(),
            );
        }
        let last = tr
            .train(&pool, &lm, &mut w, &c.recs(), &idx, 0, &p)
            .unwrap();
        assert_eq!(tr.steps_taken(), 20);
        assert!(
            last < 0.6 * losses[0] && losses.windows(2).filter(|p| p[1] > p[0]).count() <= 2,
            "losses {losses:?} then {last}"
        );
        let after = tr
            .agreement(&pool, &lm, &w, &c.recs(), &idx, &mut out)
            .unwrap();
        let valid = out.iter().filter(|&&o| o != 2).count();
        assert!(
            after > before + valid / 4,
            "agreement {before} -> {after} of {valid}"
        );
        assert_eq!(after, out.iter().filter(|&&o| o == 1).count());
    }

    #[test]
    fn loss_falls_and_agreement_rises() {
        learns(false);
    }

    #[test]
    fn trains_on_a_bf16_head() {
        learns(true);
    }

    #[test]
    fn agreement_matches_argmax_of_adapted_logits() {
        let s = shape();
        let (mut c, lm) = Case::new(s, 9, 30, false);
        let w = random_adapter(s, 31);
        // Make some targets hits: the adapted argmax.
        let mut n = c.normed.clone();
        w.apply_normed(&mut n, 9, &mut [0.0; 3]);
        let mut logits = vec![0f32; 9 * s.draft_vocab];
        Trainer::base_logits(&Pool::new(1), &lm, &s, &n, 9, &mut logits);
        w.apply_logits(&mut logits, 9);
        let argmax: Vec<i32> = logits
            .chunks_exact(s.draft_vocab)
            .map(|row| {
                (0..s.draft_vocab)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                    .unwrap() as i32
            })
            .collect();
        for i in [0, 2, 4, 5] {
            c.targets[i] = argmax[i];
        }
        let pool = Pool::new(2);
        let mut tr = Trainer::new(s, 8, &lm).unwrap();
        let idx = [0, 1, 2, 3, 4, 5, 6, 8];
        let mut out = [9u8; 8];
        let hits = tr
            .agreement(&pool, &lm, &w, &c.recs(), &idx, &mut out)
            .unwrap();
        for (j, &i) in idx.iter().enumerate() {
            let want = match c.targets[i] {
                -1 => 2,
                t => (t == argmax[i]) as u8,
            };
            assert_eq!(out[j], want, "row {i}");
        }
        assert_eq!(hits, out.iter().filter(|&&o| o == 1).count());
        assert!(hits >= 4);
    }

    #[test]
    fn adamw_matches_the_formula() {
        // One parameter tensor at a time against the textbook AdamW in f64.
        let s = AdapterShape {
            hidden: 2,
            draft_vocab: 3,
            rank: 1,
            rank_classes: 0,
            rank_hidden: 0,
        };
        let mut w = random_adapter(s, 40);
        let mut g = HeadAdapter::zeros(s).unwrap();
        let mut adam = Adam::new(s).unwrap();
        let p = TrainParams {
            lr: 0.1,
            weight_decay: 0.05,
            ..TrainParams::default()
        };
        let mut x = w.bias[1] as f64;
        let (mut m, mut v) = (0f64, 0f64);
        for t in 1..=4 {
            let gi = 0.3 - 0.2 * t as f64;
            g.bias[1] = gi as f32;
            adam.step(&mut w, &g, &p);
            x -= 0.1 * 0.05 * x;
            m = 0.9 * m + 0.1 * gi;
            v = 0.999 * v + 0.001 * gi * gi;
            let (mh, vh) = (m / (1.0 - 0.9f64.powi(t)), v / (1.0 - 0.999f64.powi(t)));
            x -= 0.1 * mh / (vh.sqrt() + 1e-8);
            assert!((w.bias[1] as f64 - x).abs() < 1e-6, "step {t}");
        }
    }

    #[test]
    fn invalid_arguments_are_errors() {
        let s = shape();
        let (c, lm) = Case::new(s, 6, 50, false);
        let pool = Pool::new(1);
        let mut tr = Trainer::new(s, 4, &lm).unwrap();
        let mut w = random_adapter(s, 51);
        let w0 = w.clone();
        let mut grad = HeadAdapter::zeros(s).unwrap();
        let p = TrainParams::default();
        let inval = |r: Result<f32, Error>| assert!(matches!(r, Err(Error::InvalidArgument(_))));

        inval(tr.loss_and_grad(&pool, &lm, &w, &c.recs(), &[0, 6], &mut grad));
        inval(tr.loss_and_grad(&pool, &lm, &w, &c.recs(), &[0, 1, 2, 3, 4], &mut grad));
        inval(tr.train(&pool, &lm, &mut w, &c.recs(), &[0, 1, 2, 3, 4], 1, &p));
        let mut bad = c.targets.clone();
        bad[1] = s.draft_vocab as i32;
        let recs = Records {
            targets: &bad,
            ..c.recs()
        };
        inval(tr.loss_and_grad(&pool, &lm, &w, &recs, &[1], &mut grad));
        bad[1] = -2;
        let recs = Records {
            targets: &bad,
            ..c.recs()
        };
        inval(tr.loss_and_grad(&pool, &lm, &w, &recs, &[1], &mut grad));
        let mut labels = c.labels.clone();
        labels[0] = s.rank_classes as u8;
        let recs = Records {
            rank_labels: &labels,
            ..c.recs()
        };
        inval(tr.loss_and_grad(&pool, &lm, &w, &recs, &[0], &mut grad));
        let recs = Records {
            normed: &c.normed[1..],
            ..c.recs()
        };
        inval(tr.loss_and_grad(&pool, &lm, &w, &recs, &[0], &mut grad));
        let recs = Records {
            base_logits: &c.base[..c.base.len() - 1],
            ..c.recs()
        };
        inval(tr.loss_and_grad(&pool, &lm, &w, &recs, &[0], &mut grad));
        let recs = Records {
            rank_hidden: &[],
            ..c.recs()
        };
        inval(tr.loss_and_grad(&pool, &lm, &w, &recs, &[0], &mut grad));
        // Other shapes of grad, adapter or head.
        let other = AdapterShape { rank: 2, ..s };
        let mut g2 = HeadAdapter::zeros(other).unwrap();
        inval(tr.loss_and_grad(&pool, &lm, &w, &c.recs(), &[0], &mut g2));
        inval(tr.loss_and_grad(
            &pool,
            &lm,
            &HeadAdapter::zeros(other).unwrap(),
            &c.recs(),
            &[0],
            &mut grad,
        ));
        let lm16 = Matrix::new(c.w.clone(), true);
        inval(tr.loss_and_grad(&pool, &lm16, &w, &c.recs(), &[0], &mut grad));
        let mut out = [0u8; 1];
        assert!(
            tr.agreement(&pool, &lm, &w, &c.recs(), &[0, 1], &mut out)
                .is_err()
        );
        // Hyper-parameters.
        for bad in [
            TrainParams { lr: f32::NAN, ..p },
            TrainParams { beta1: 1.0, ..p },
            TrainParams { beta2: -0.1, ..p },
            TrainParams { eps: 0.0, ..p },
            TrainParams {
                weight_decay: -1.0,
                ..p
            },
            TrainParams {
                rank_weight: f32::INFINITY,
                ..p
            },
        ] {
            inval(tr.train(&pool, &lm, &mut w, &c.recs(), &[0], 1, &bad));
        }
        assert_eq!(w, w0);
        assert_eq!(tr.steps_taken(), 0);
        // Construction.
        assert!(Trainer::new(s, 0, &lm).is_err());
        assert!(Trainer::new(AdapterShape { hidden: 11, ..s }, 4, &lm).is_err());
        assert!(Trainer::new(AdapterShape { rank: 0, ..s }, 4, &lm).is_err());
        assert!(Trainer::new(s, usize::MAX / 8, &lm).is_err());
    }

    #[test]
    fn non_finite_steps_leave_everything_unchanged() {
        let s = shape();
        let (mut c, lm) = Case::new(s, 6, 60, false);
        let pool = Pool::new(2);
        let mut tr = Trainer::new(s, 6, &lm).unwrap();
        let mut w = random_adapter(s, 61);
        let idx = [0, 1, 2, 4];
        tr.train(
            &pool,
            &lm,
            &mut w,
            &c.recs(),
            &idx,
            2,
            &TrainParams::default(),
        )
        .unwrap();
        let (w0, t0) = (w.clone(), tr.steps_taken());
        // A step that blows up after the first: everything back as at the call.
        let huge = TrainParams {
            lr: 1e30,
            ..TrainParams::default()
        };
        let e = tr.train(&pool, &lm, &mut w, &c.recs(), &idx, 3, &huge);
        assert!(matches!(e, Err(Error::InvalidArgument(m)) if m.contains("non-finite")));
        assert_eq!((&w, tr.steps_taken()), (&w0, t0));
        // NaN in a listed row.
        c.base[2 * s.draft_vocab + 4] = f32::NAN;
        let e = tr.train(
            &pool,
            &lm,
            &mut w,
            &c.recs(),
            &idx,
            1,
            &TrainParams::default(),
        );
        assert!(e.is_err());
        let mut grad = HeadAdapter::zeros(s).unwrap();
        assert!(
            tr.loss_and_grad(&pool, &lm, &w, &c.recs(), &idx, &mut grad)
                .is_err()
        );
        assert_eq!((&w, tr.steps_taken()), (&w0, t0));
        // The same trainer still trains on good rows.
        tr.train(
            &pool,
            &lm,
            &mut w,
            &c.recs(),
            &[0, 1],
            1,
            &TrainParams::default(),
        )
        .unwrap();
        assert_eq!(tr.steps_taken(), t0 + 1);
    }

    #[test]
    fn reset_and_copied_state_reproduce_training() {
        let s = shape();
        let (c, lm) = Case::new(s, 8, 70, false);
        let pool = Pool::new(2);
        let idx = [0, 1, 2, 3, 5, 6];
        let p = TrainParams::default();
        let mut a = Trainer::new(s, 8, &lm).unwrap();
        let mut wa = random_adapter(s, 71);
        a.train(&pool, &lm, &mut wa, &c.recs(), &idx, 3, &p)
            .unwrap();
        // A shadow trainer with the copied state takes the same next step.
        let mut b = Trainer::new(s, 8, &lm).unwrap();
        b.copy_state_from(&a);
        assert_eq!(b.steps_taken(), 3);
        let mut wb = wa.clone();
        a.train(&pool, &lm, &mut wa, &c.recs(), &idx, 2, &p)
            .unwrap();
        b.train(&pool, &lm, &mut wb, &c.recs(), &idx, 2, &p)
            .unwrap();
        assert_eq!(wa, wb);
        // After reset, the same as a fresh trainer.
        a.reset();
        assert_eq!(a.steps_taken(), 0);
        let mut fresh = Trainer::new(s, 8, &lm).unwrap();
        let mut wf = wa.clone();
        a.train(&pool, &lm, &mut wa, &c.recs(), &idx, 2, &p)
            .unwrap();
        fresh
            .train(&pool, &lm, &mut wf, &c.recs(), &idx, 2, &p)
            .unwrap();
        assert_eq!(wa, wf);
    }

    #[test]
    fn transpose_is_exact() {
        let src: Vec<u16> = (0..35 * 70).map(|x| x as u16).collect();
        let t = transpose(&src, 35, 70).unwrap();
        for r in 0..35 {
            for c in 0..70 {
                assert_eq!(t[c * 35 + r], src[r * 70 + c]);
            }
        }
    }
}
