//! The host side of the acceptance format both acceptance kernels write (`kernels/accept_greedy.cu`
//! through [`super::greedy`], `kernels/accept_sample.cu` through [`super::sample`]): per tree
//! `accept_len, bonus, status: i32`, `accept_nodes, accept_tokens: i32[max_depth + 1]` and
//! `keep: i32[max_depth + 2]` (`[0, nodes...]`), unused entries -1.

use std::vec::Vec;

use super::DeviceBuffer;
use crate::error::Error;

/// One tree's acceptance downloaded to the host (`greedy::HostAcceptance` and `sample::SampleOutput`
/// are this type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAcceptance {
    /// 0, or the [`Status`](crate::Status) code of the tree's error.
    pub status: i32,
    /// Accepted node ids, root excluded (empty on error).
    pub nodes: Vec<i32>,
    /// Their tokens.
    pub tokens: Vec<i32>,
    /// The emitted token after the last accepted node (-1 on error).
    pub bonus: i32,
    /// The KV keep-list `[0, nodes...]` (on error: greedy's `[0]`, sampling's empty list).
    pub keep: Vec<i32>,
    /// The raw output rows as the device wrote them, padding included: nodes, tokens
    /// (`max_depth + 1` each) and keep (`max_depth + 2`).
    pub raw_nodes: Vec<i32>,
    /// See `raw_nodes`.
    pub raw_tokens: Vec<i32>,
    /// See `raw_nodes`.
    pub raw_keep: Vec<i32>,
    /// `accept_len` as written.
    pub accept_len: i32,
    /// The raw rows `(raw_nodes, raw_tokens, raw_keep)` again: the field `greedy::HostAcceptance`
    /// had before both readers became this type, kept for code that reads it.
    #[deprecated(note = "use the raw_nodes, raw_tokens and raw_keep fields")]
    pub padded: (Vec<i32>, Vec<i32>, Vec<i32>),
}

/// The device outputs of an acceptance kernel for a batch.
pub(crate) struct AcceptBuffers<'a> {
    pub accept_len: &'a DeviceBuffer<i32>,
    pub accept_nodes: &'a DeviceBuffer<i32>,
    pub accept_tokens: &'a DeviceBuffer<i32>,
    pub bonus: &'a DeviceBuffer<i32>,
    pub keep: &'a DeviceBuffer<i32>,
    pub status: &'a DeviceBuffer<i32>,
}

impl AcceptBuffers<'_> {
    /// Downloads every tree's outputs (synchronously; the caller synchronises the kernel's stream
    /// first) and splits them per tree. `accept_len` is clamped to `0..=max_accepted` (the most nodes
    /// the kernel accepts) before it trims the rows; `keep` is `raw_keep[..accepted + 1]`.
    pub(crate) fn read(
        &self,
        batch: usize,
        max_depth: usize,
        max_accepted: usize,
    ) -> Result<Vec<HostAcceptance>, Error> {
        let status = self.status.to_vec()?;
        let len = self.accept_len.to_vec()?;
        let nodes = self.accept_nodes.to_vec()?;
        let tokens = self.accept_tokens.to_vec()?;
        let bonus = self.bonus.to_vec()?;
        let keep = self.keep.to_vec()?;
        let (d1, d2) = (max_depth + 1, max_depth + 2);
        Ok((0..batch)
            .map(|b| {
                let raw_nodes = nodes[b * d1..(b + 1) * d1].to_vec();
                let raw_tokens = tokens[b * d1..(b + 1) * d1].to_vec();
                let raw_keep = keep[b * d2..(b + 1) * d2].to_vec();
                let n = (len[b].max(0) as usize).min(max_accepted);
                #[allow(deprecated)] // the old field is still filled
                HostAcceptance {
                    status: status[b],
                    nodes: raw_nodes[..n].to_vec(),
                    tokens: raw_tokens[..n].to_vec(),
                    bonus: bonus[b],
                    keep: raw_keep[..n + 1].to_vec(),
                    padded: (raw_nodes.clone(), raw_tokens.clone(), raw_keep.clone()),
                    raw_nodes,
                    raw_tokens,
                    raw_keep,
                    accept_len: len[b],
                }
            })
            .collect())
    }
}
