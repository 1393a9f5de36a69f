#![allow(missing_docs, dead_code, clippy::all)]
use crate::error::Error;
use std::vec;
use std::vec::Vec;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterShape {
    pub hidden: usize,
    pub draft_vocab: usize,
    pub rank: usize,
    pub rank_classes: usize,
    pub rank_hidden: usize,
}
#[derive(Clone, Debug)]
pub struct HeadAdapter {
    pub shape: AdapterShape,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub bias: Vec<f32>,
    pub rank_delta: Vec<f32>,
}
impl HeadAdapter {
    pub fn new(shape: AdapterShape, _seed: u64) -> Result<Self, Error> {
        Ok(HeadAdapter {
            shape,
            a: vec![0.01; shape.rank * shape.hidden],
            b: vec![0.0; shape.rank * shape.hidden],
            bias: vec![0.0; shape.draft_vocab],
            rank_delta: vec![0.0; shape.rank_classes * shape.rank_hidden],
        })
    }
    pub fn copy_from(&mut self, o: &HeadAdapter) {
        self.a.copy_from_slice(&o.a);
        self.b.copy_from_slice(&o.b);
        self.bias.copy_from_slice(&o.bias);
        self.rank_delta.copy_from_slice(&o.rank_delta);
    }
    pub fn is_identity(&self) -> bool {
        self.b.iter().all(|&x| x == 0.0)
            && self.bias.iter().all(|&x| x == 0.0)
            && self.rank_delta.iter().all(|&x| x == 0.0)
    }
    pub fn apply_normed(&self, normed: &mut [f32], rows: usize, scratch: &mut [f32]) {
        let (h, r) = (self.shape.hidden, self.shape.rank);
        for n in normed.chunks_exact_mut(h).take(rows) {
            for j in 0..r {
                scratch[j] = (0..h).map(|k| self.a[j * h + k] * n[k]).sum();
            }
            for k in 0..h {
                n[k] += (0..r).map(|j| self.b[k * r + j] * scratch[j]).sum::<f32>();
            }
        }
    }
    pub fn apply_logits(&self, logits: &mut [f32], rows: usize) {
        for l in logits.chunks_exact_mut(self.shape.draft_vocab).take(rows) {
            for (x, b) in l.iter_mut().zip(&self.bias) {
                *x += b;
            }
        }
    }
    pub fn apply_rank(&self, rank_hidden: &[f32], rank_logits: &mut [f32], rows: usize) {
        let (c, rh) = (self.shape.rank_classes, self.shape.rank_hidden);
        for i in 0..rows {
            for j in 0..c {
                rank_logits[i * c + j] += (0..rh)
                    .map(|k| self.rank_delta[j * rh + k] * rank_hidden[i * rh + k])
                    .sum::<f32>();
            }
        }
    }
    pub fn save(&self, _path: &std::path::Path) -> Result<(), crate::io::LoadError> {
        unimplemented!()
    }
    pub fn load(
        _path: &std::path::Path,
        _expected: AdapterShape,
    ) -> Result<Self, crate::io::LoadError> {
        unimplemented!()
    }
}
