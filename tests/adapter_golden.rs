//! The head adapter's loss, gradients and AdamW against PyTorch autograd and torch.optim.AdamW
//! (tools/train/adapter_golden.py, float64 reference of the straightforward form), within 1e-4.

mod golden;

use golden::{close, f32s, i64s};
use specblock::cpu::{Matrix, Pool};
use specblock::drafter::adapter::{AdapterShape, HeadAdapter, Records, TrainParams, Trainer};

const SHAPE: AdapterShape = AdapterShape {
    hidden: 16,
    draft_vocab: 40,
    rank: 4,
    rank_classes: 4,
    rank_hidden: 8,
};

const NAMES: [&str; 4] = ["a", "b", "bias", "rank_delta"];

fn tensors(w: &HeadAdapter) -> [&[f32]; 4] {
    [&w.a, &w.b, &w.bias, &w.rank_delta]
}

#[test]
fn loss_gradients_and_adamw_match_pytorch() {
    let g = golden::open("adapter_golden.safetensors");
    let s = SHAPE;
    let lm_head = Matrix::F32(f32s(&g, "w"));
    let normed = f32s(&g, "normed");
    let rows = normed.len() / s.hidden;
    let targets: Vec<i32> = i64s(&g, "targets").iter().map(|&t| t as i32).collect();
    let labels: Vec<u8> = i64s(&g, "rank_labels").iter().map(|&t| t as u8).collect();
    let rank_hidden = f32s(&g, "rank_hidden");
    let base_rank = f32s(&g, "base_rank_logits");
    assert_eq!((rows, targets.len()), (7, 7));
    assert!(targets.contains(&-1));

    let pool = Pool::new(2);
    let mut base = vec![0f32; rows * s.draft_vocab];
    Trainer::base_logits(&pool, &lm_head, &s, &normed, rows, &mut base);
    close(&base, &f32s(&g, "base_logits"), "base_logits");
    let recs = Records {
        normed: &normed,
        base_logits: &base,
        targets: &targets,
        rank_hidden: &rank_hidden,
        base_rank_logits: &base_rank,
        rank_labels: &labels,
    };
    let mut w = HeadAdapter::zeros(s).unwrap();
    w.a = f32s(&g, "init.a");
    w.b = f32s(&g, "init.b");
    w.bias = f32s(&g, "init.bias");
    w.rank_delta = f32s(&g, "init.rank_delta");
    let idx: Vec<usize> = (0..rows).collect();

    let mut tr = Trainer::new(s, rows, &lm_head).unwrap();
    assert_eq!(f32s(&g, "rank_weight"), [tr.rank_weight()]);
    let mut grad = HeadAdapter::zeros(s).unwrap();
    let loss = tr
        .loss_and_grad(&pool, &lm_head, &w, &recs, &idx, &mut grad)
        .unwrap();
    close(&[loss], &f32s(&g, "loss"), "loss");
    for (name, got) in NAMES.iter().zip(tensors(&grad)) {
        close(
            got,
            &f32s(&g, &format!("grad.{name}")),
            &format!("grad.{name}"),
        );
    }

    let h = f32s(&g, "adamw");
    let p = TrainParams {
        lr: h[0],
        beta1: h[1],
        beta2: h[2],
        eps: h[3],
        weight_decay: h[4],
        rank_weight: 1.0,
    };
    let losses = f32s(&g, "train.losses");
    // Step by step: each call's loss is the loss before its update.
    let mut w1 = w.clone();
    for (t, &want) in losses.iter().enumerate() {
        let got = tr
            .train(&pool, &lm_head, &mut w1, &recs, &idx, 1, &p)
            .unwrap();
        close(&[got], &[want], &format!("train.losses[{t}]"));
    }
    for (name, got) in NAMES.iter().zip(tensors(&w1)) {
        close(
            got,
            &f32s(&g, &format!("train.{name}")),
            &format!("train.{name}"),
        );
    }
    // Three steps in one call from a fresh optimizer: the same weights, the last loss.
    tr.reset();
    let mut w3 = w.clone();
    let last = tr
        .train(&pool, &lm_head, &mut w3, &recs, &idx, 3, &p)
        .unwrap();
    close(&[last], &losses[2..], "train last loss");
    assert_eq!(w3, w1);
}
