//! After `Trainer::new`, the head adapter's training (`loss_and_grad`, `train`, `agreement`, the
//! optimizer's reset and copies) and its application perform no heap allocation. A counting global
//! allocator counts allocations made by the current thread while counting is switched on, so this
//! file holds its own test binary. Also a timing of one training step at production size (ignored).

mod counting;

use counting::counted;

use specblock::cpu::{Matrix, Pool};
use specblock::drafter::adapter::{AdapterShape, HeadAdapter, Records, TrainParams, Trainer};
use specblock::rng::CounterRng;

fn uniform(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let rng = CounterRng::new(seed);
    (0..n)
        .map(|i| (2.0 * rng.uniform(i as u64) as f32 - 1.0) * scale)
        .collect()
}

/// Records of `rows` rows for `s`: random hidden states, `W n` from the trainer, targets with every
/// seventh row outside the draft vocabulary.
struct Data {
    normed: Vec<f32>,
    base: Vec<f32>,
    targets: Vec<i32>,
    h1: Vec<f32>,
    base_rank: Vec<f32>,
    labels: Vec<u8>,
}

impl Data {
    fn new(pool: &Pool, lm_head: &Matrix, s: &AdapterShape, rows: usize) -> Data {
        let normed = uniform(rows * s.hidden, 1, 1.5);
        let mut base = vec![0f32; rows * s.draft_vocab];
        Trainer::base_logits(pool, lm_head, s, &normed, rows, &mut base);
        let rng = CounterRng::new(2);
        let has_rank = s.rank_classes > 0;
        Data {
            normed,
            base,
            targets: (0..rows)
                .map(|i| {
                    if i % 7 == 6 {
                        -1
                    } else {
                        (rng.bits(i as u64) % s.draft_vocab as u64) as i32
                    }
                })
                .collect(),
            h1: uniform(rows * s.rank_hidden, 3, 1.0),
            base_rank: uniform(rows * s.rank_classes, 4, 2.0),
            labels: (0..if has_rank { rows } else { 0 })
                .map(|i| (rng.bits(500 + i as u64) % s.rank_classes as u64) as u8)
                .collect(),
        }
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

#[test]
fn training_and_applying_allocate_nothing_after_new() {
    let pool = Pool::new(2);
    let specblock = AdapterShape {
        hidden: 96,
        draft_vocab: 1000,
        rank: 8,
        rank_classes: 4,
        rank_hidden: 256,
    };
    let eagle3 = AdapterShape {
        rank_classes: 0,
        rank_hidden: 0,
        ..specblock
    };
    for (s, bf16) in [(specblock, false), (specblock, true), (eagle3, true)] {
        let lm_head = Matrix::new(uniform(s.draft_vocab * s.hidden, 5, 0.3), bf16);
        let rows = 40;
        let mut data = Data::new(&pool, &lm_head, &s, rows);
        let idx: Vec<usize> = (0..rows).step_by(2).chain([1, 3, 5]).collect();
        let mut tr = Trainer::new(s, 32, &lm_head).unwrap();
        let mut shadow = Trainer::new(s, 32, &lm_head).unwrap();
        let mut w = HeadAdapter::new(s, 6).unwrap();
        let mut w2 = HeadAdapter::new(s, 7).unwrap();
        let mut grad = HeadAdapter::zeros(s).unwrap();
        let mut out = vec![0u8; idx.len()];
        let mut n = data.normed[..4 * s.hidden].to_vec();
        let mut logits = data.base[..4 * s.draft_vocab].to_vec();
        let mut rank_logits = data.base_rank[..4 * s.rank_classes].to_vec();
        let mut scratch = [0f32; 8];
        let p = TrainParams {
            weight_decay: 0.01,
            ..TrainParams::default()
        };
        let (sum, allocs) = counted(|| {
            let recs = data.recs();
            let mut sum = tr
                .loss_and_grad(&pool, &lm_head, &w, &recs, &idx, &mut grad)
                .unwrap();
            sum += tr
                .train(&pool, &lm_head, &mut w, &recs, &idx, 3, &p)
                .unwrap();
            sum += tr
                .agreement(&pool, &lm_head, &w, &recs, &idx, &mut out)
                .unwrap() as f32;
            shadow.copy_state_from(&tr);
            w2.copy_from(&w);
            sum += shadow
                .train(&pool, &lm_head, &mut w2, &recs, &idx, 1, &p)
                .unwrap();
            tr.reset();
            // Errors allocate nothing either.
            assert!(
                tr.train(&pool, &lm_head, &mut w, &recs, &[rows], 1, &p)
                    .is_err()
            );
            sum += w.is_identity() as u8 as f32;
            w.apply_normed(&mut n, 4, &mut scratch);
            w.apply_logits(&mut logits, 4);
            w.apply_rank(&data.h1, &mut rank_logits, 4);
            sum
        });
        assert!(sum.is_finite());
        assert_eq!(allocs, 0, "{s:?}, bf16 {bf16}: {allocs} allocations");
        // A non-finite record: an error, still no allocation.
        data.base[0] = f32::NAN;
        let (r, allocs) = counted(|| {
            tr.train(&pool, &lm_head, &mut w, &data.recs(), &idx, 2, &p)
                .is_err()
        });
        assert!(r);
        assert_eq!(allocs, 0);
    }
}

/// One `train` step at production size: V 8192, hidden 576, rank 8, 4 rank classes of a 256-wide
/// rank head, batch 64, bf16 head, a 2-thread pool. Run with
/// `cargo test --test adapter_alloc_free -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run by hand on a quiet machine"]
fn train_step_timing() {
    let s = AdapterShape {
        hidden: 576,
        draft_vocab: 8192,
        rank: 8,
        rank_classes: 4,
        rank_hidden: 256,
    };
    let pool = Pool::new(2);
    let batch = 64;
    for bf16 in [true, false] {
        let lm_head = Matrix::new(uniform(s.draft_vocab * s.hidden, 9, 0.05), bf16);
        let data = Data::new(&pool, &lm_head, &s, 256);
        let idx: Vec<usize> = (0..batch).map(|j| (j * 3) % 256).collect();
        let mut tr = Trainer::new(s, batch, &lm_head).unwrap();
        let mut w = HeadAdapter::new(s, 10).unwrap();
        let p = TrainParams::default();
        let mut out = vec![0u8; batch];
        let time = |f: &mut dyn FnMut()| {
            f();
            let mut t: Vec<f64> = (0..30)
                .map(|_| {
                    let start = std::time::Instant::now();
                    f();
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            t.sort_by(f64::total_cmp);
            (t[t.len() / 2], t[0])
        };
        let (med, min) = time(&mut || {
            tr.train(&pool, &lm_head, &mut w, &data.recs(), &idx, 1, &p)
                .unwrap();
        });
        let (amed, amin) = time(&mut || {
            tr.agreement(&pool, &lm_head, &w, &data.recs(), &idx, &mut out)
                .unwrap();
        });
        let mut base = vec![0f32; batch * s.draft_vocab];
        let (bmed, bmin) = time(&mut || {
            Trainer::base_logits(
                &pool,
                &lm_head,
                &s,
                &data.normed[..batch * s.hidden],
                batch,
                &mut base,
            );
        });
        println!(
            "{} head, {:?}, batch {batch}: train step median {med:.2} ms (min {min:.2}); \
             agreement {amed:.2} ms (min {amin:.2}); base_logits {bmed:.2} ms (min {bmin:.2})",
            if bf16 { "bf16" } else { "f32" },
            specblock::cpu::Isa::detect(),
        );
    }
}
