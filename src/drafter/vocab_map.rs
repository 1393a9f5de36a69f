//! The draft vocabulary's mapping to target ids, shared by both drafter kinds: `d2t` (an offset per
//! draft id: target id = `i + d2t[i]`) and the optional `t2d` mask (one bool per target id: whether it
//! is in the draft vocabulary), checked against each other at load.

use std::vec::Vec;

use crate::io::LoadError;
use crate::io::safetensors::{Dtype, SafeTensors};
use crate::load_err;

/// `d2t` offsets as target ids, checked: every target id in `0..vocab` and no two draft ids mapping to
/// the same target id (two would make sibling tree nodes with one token, which finalize merges, so a
/// tree would miss its budget). `key` names the tensor in errors.
pub(crate) fn draft_to_target(d2t: &[i64], vocab: usize, key: &str) -> Result<Vec<u32>, LoadError> {
    let mut ids = Vec::new();
    ids.try_reserve_exact(d2t.len())
        .map_err(|_| load_err!("{key}: cannot allocate {} target ids", d2t.len()))?;
    let mut seen = Vec::new();
    seen.try_reserve_exact(vocab)
        .map_err(|_| load_err!("{key}: cannot allocate a vocabulary of {vocab} flags"))?;
    seen.resize(vocab, false);
    for (i, &off) in d2t.iter().enumerate() {
        let target = i64::try_from(i).ok().and_then(|i| i.checked_add(off));
        let Some(t) = target.filter(|t| (0..vocab as i64).contains(t)) else {
            return Err(load_err!(
                "{key}[{i}] = {off} maps draft id {i} outside the target vocabulary (0..{vocab})"
            ));
        };
        if core::mem::replace(&mut seen[t as usize], true) {
            return Err(load_err!(
                "{key}[{i}] maps draft id {i} to target id {t}, which another draft id already maps to"
            ));
        }
        ids.push(t as u32);
    }
    Ok(ids)
}

/// Checks a stored `t2d` (`key`) against the checked `d2t` image: shape `[vocab]`, BOOL (or I64 0/1,
/// as some exporters write it), and true exactly at the target ids some draft id maps to.
pub(crate) fn check_t2d(
    st: &SafeTensors,
    key: &str,
    draft_to_target: &[u32],
    vocab: usize,
) -> Result<(), LoadError> {
    let (entry, raw) = st.raw_bytes(key)?;
    if entry.shape[..] != [vocab] {
        return Err(load_err!(
            "tensor {key} has shape {:?}, expected [{vocab}]",
            entry.shape
        ));
    }
    let flag = |t: usize| -> Result<bool, LoadError> {
        let v = match entry.dtype {
            Dtype::Bool => raw[t] as i64,
            Dtype::I64 => {
                let b = &raw[8 * t..8 * t + 8];
                i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
            other => {
                return Err(load_err!("tensor {key} is {other:?}, expected BOOL"));
            }
        };
        match v {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(load_err!("{key}[{t}] = {v}, expected 0 or 1")),
        }
    };
    let mut in_draft = 0usize;
    for t in 0..vocab {
        in_draft += flag(t)? as usize;
    }
    for (i, &t) in draft_to_target.iter().enumerate() {
        if !flag(t as usize)? {
            return Err(load_err!(
                "{key}[{t}] is false but d2t maps draft id {i} to target id {t}: d2t and {key} disagree"
            ));
        }
    }
    // d2t is one-to-one, so equal counts mean the true entries are exactly its image.
    if in_draft != draft_to_target.len() {
        return Err(load_err!(
            "{key} marks {in_draft} target ids as in the draft vocabulary, but d2t maps {} draft ids: \
             d2t and {key} disagree",
            draft_to_target.len()
        ));
    }
    Ok(())
}
