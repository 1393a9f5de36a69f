#![allow(missing_docs, dead_code, clippy::all)]
use super::{AdapterShape, HeadAdapter};
use crate::cpu::{Matrix, Pool};
use crate::error::Error;
pub struct Records<'a> {
    pub normed: &'a [f32],
    pub base_logits: &'a [f32],
    pub targets: &'a [i32],
    pub rank_hidden: &'a [f32],
    pub base_rank_logits: &'a [f32],
    pub rank_labels: &'a [u8],
}
#[derive(Clone, Copy, Debug)]
pub struct TrainParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
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
pub struct Trainer {
    shape: AdapterShape,
}
impl Trainer {
    pub fn new(shape: AdapterShape, _max_batch: usize, _lm_head: &Matrix) -> Result<Self, Error> {
        Ok(Trainer { shape })
    }
    pub fn base_logits(
        pool: &Pool,
        lm_head: &Matrix,
        shape: &AdapterShape,
        normed: &[f32],
        rows: usize,
        out: &mut [f32],
    ) {
        crate::cpu::matmul(
            pool,
            lm_head,
            shape.draft_vocab,
            shape.hidden,
            normed,
            rows,
            out,
        )
    }
    pub fn train(
        &mut self,
        _pool: &Pool,
        _lm_head: &Matrix,
        w: &mut HeadAdapter,
        _recs: &Records,
        _idx: &[usize],
        _steps: usize,
        _p: &TrainParams,
    ) -> Result<f32, Error> {
        for b in w.bias.iter_mut() {
            *b += 0.0;
        }
        Ok(0.0)
    }
    pub fn reset(&mut self) {}
    pub fn copy_state_from(&mut self, _other: &Trainer) {}
    pub fn agreement(
        &mut self,
        _pool: &Pool,
        _lm_head: &Matrix,
        _w: &HeadAdapter,
        _recs: &Records,
        idx: &[usize],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        for o in out.iter_mut().take(idx.len()) {
            *o = 0;
        }
        Ok(0)
    }
}
