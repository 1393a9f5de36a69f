//! The entries of plain steps waiting for the drafter, shared by both session kinds.

use std::vec::Vec;

use arrayvec::ArrayVec;

use super::PLAIN_CONTEXT_WINDOW;

/// Plain-step entries (token and feature row each) that the next real draft runs through the
/// drafter in one batched forward. Holds at most [`PLAIN_CONTEXT_WINDOW`] entries: pushing onto a
/// full queue drops the oldest. The tokens are inline, the feature rows allocated at creation;
/// pushing allocates nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct PlainQueue {
    tokens: ArrayVec<u32, PLAIN_CONTEXT_WINDOW>,
    features: Vec<f32>,
    width: usize,
}

impl PlainQueue {
    /// An empty queue for feature rows of `width` floats.
    pub(crate) fn new(width: usize) -> Self {
        PlainQueue {
            tokens: ArrayVec::new(),
            features: Vec::with_capacity(PLAIN_CONTEXT_WINDOW * width),
            width,
        }
    }

    /// Queued entries.
    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Queued entries after one more [`push`](Self::push).
    pub(crate) fn len_after_push(&self) -> usize {
        (self.tokens.len() + 1).min(PLAIN_CONTEXT_WINDOW)
    }

    /// Queues an entry (`features` is one row); returns whether the oldest entry was dropped to
    /// make room, in which case the caller advances its next position by one.
    pub(crate) fn push(&mut self, token: u32, features: &[f32]) -> bool {
        debug_assert_eq!(features.len(), self.width);
        let full = self.tokens.is_full();
        if full {
            self.tokens.remove(0);
            self.features.drain(..self.width);
        }
        self.tokens.push(token);
        self.features.extend_from_slice(features);
        full
    }

    /// The queued tokens, oldest first.
    pub(crate) fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The queued feature rows, oldest first.
    pub(crate) fn features(&self) -> &[f32] {
        &self.features
    }

    /// Empties the queue (capacity kept).
    pub(crate) fn clear(&mut self) {
        self.tokens.clear();
        self.features.clear();
    }
}
