//! C functions for online drafter adaptation: an adapter learns a low-rank correction of a drafter's
//! head from the verifier's feedback, gated by the cost-aware update bandit (see
//! `crate::drafter::online`), and sessions attached to it draft with its weights.

use std::boxed::Box;
use std::ffi::{CStr, c_char};
use std::path::Path;
use std::sync::{Arc, MutexGuard};

use super::drafter::{sb_drafter, sb_session};
use super::{guard, obj_mut, obj_ref, read_params, write_out};
use crate::adapt::online::{UPDATE_STEPS, UpdateMode, UpdateParams};
use crate::drafter::adapter::{HeadAdapter, TrainParams};
use crate::drafter::online::{AdapterParams, OnlineAdapter, SharedAdapter};
use crate::error::Status;

/// An online adapter: a low-rank residual before a drafter's LM head, a bias over its draft
/// vocabulary and (SpecBlock) a delta on its rank head, learned from the verified paths of the
/// sessions attached to it (`sb_session_attach_adapter`). The drafter's own weights never change; a
/// new adapter is the identity.
///
/// Thread-safety: the handle is internally locked, and every `sb_adapter_*` call except
/// `sb_adapter_free` may run concurrently with any other, on any thread. Any number of sessions, on
/// any threads, may attach the same adapter (their drafters must have its shape): each records its
/// verified paths into it and runs the update bandit at its `sb_session_feedback`. A session that
/// finds the adapter busy (another session updating it) skips that iteration's recording and update
/// and keeps drafting with its own copy of the weights; it picks up newly adopted weights at its next
/// `sb_session_draft`. Attached sessions hold a reference: `sb_adapter_free` may come before the
/// last of them is freed or detached (the memory goes with the last reference).
pub struct sb_adapter {
    inner: SharedAdapter,
}

// The thread-safety promised above: the handle may be shared and freed across threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<sb_adapter>();
};

/// `sb_adapter_params.mode`: never update; the adapter is applied as it is (the identity, or loaded
/// weights) and the feedback is not recorded.
pub const SB_ADAPT_OFF: u32 = 0;
/// `sb_adapter_params.mode`: the cost-aware update bandit (the default): at each decision point it
/// picks skip or an update of 1, 4 or 16 optimizer steps, computed on a shadow copy, replayed on the
/// most recent slots and adopted only when the seconds it saves exceed what it cost.
pub const SB_ADAPT_BANDIT: u32 = 1;
/// `sb_adapter_params.mode`: at every decision point `always_steps` steps, adopted without replay (the
/// cost-blind baseline).
pub const SB_ADAPT_ALWAYS: u32 = 2;

/// Parameters of `sb_adapter_new` and `sb_adapter_set_policy`. Get them from
/// `sb_adapter_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sb_adapter_params {
    /// `sizeof(sb_adapter_params)`; set by `sb_adapter_default_params`.
    pub struct_size: u32,
    /// Rank of the low-rank residual (default 8; 1 to 64). Fixed at creation.
    pub rank: u32,
    /// Verified slots the feedback ring holds (default 1024; at least `holdout + min_train`, at most
    /// 1048576). Fixed at creation.
    pub capacity: u32,
    /// `SB_ADAPT_OFF`, `SB_ADAPT_BANDIT` (the default) or `SB_ADAPT_ALWAYS`.
    pub mode: u32,
    /// New slots recorded between two decision points (default 48; >= 1).
    pub decide_every: u32,
    /// The most recent slots an update is replayed on and not trained on (default 64; 1 to 4096).
    pub holdout: u32,
    /// Training slots needed beyond the held-out ones before the first update (default 64; >= 1).
    pub min_train: u32,
    /// Most training slots per optimizer step, the most recent ones (default 128; 1 to 4096).
    pub batch: u32,
    /// Optimizer steps of an update in `SB_ADAPT_ALWAYS` (default 4; 1 to 1024).
    pub always_steps: u32,
    /// The optimizer's (AdamW) learning rate (default 2e-3; finite, >= 0).
    pub learning_rate: f32,
    /// Tokens an adopted update is expected to serve: the horizon of its seconds saved (default 2048;
    /// finite, > 0).
    pub horizon_tokens: f64,
    /// One-sided width of the replay's confidence bound, in standard errors (default 1; finite,
    /// >= 0).
    pub confidence_z: f64,
}

/// What an adapter has done (`sb_adapter_get_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct sb_adapter_stats {
    /// Decision points reached.
    pub decisions: u64,
    /// Decision points skipped without computing an update.
    pub skipped: u64,
    /// Updates of 1 optimizer step computed.
    pub tried_1: u64,
    /// Updates of 4 steps computed.
    pub tried_4: u64,
    /// Updates of 16 steps computed.
    pub tried_16: u64,
    /// Updates adopted.
    pub adopted: u64,
    /// Updates computed and not adopted (failed ones included).
    pub rejected: u64,
    /// Updates that failed (a non-finite loss).
    pub failed: u64,
    /// Wall seconds spent on updates and their replays.
    pub update_seconds: f64,
    /// Sum of the adopted updates' expected seconds saved.
    pub expected_saved_seconds: f64,
    /// Verified slots recorded since creation.
    pub slots_recorded: u64,
    /// Of them, accepted drafts.
    pub slots_accepted: u64,
    /// Version of the live weights: adoptions and loads since creation.
    pub version: u64,
    /// The last replay's change in top-1 agreement with the target (0 before the first).
    pub last_delta: f64,
}

/// Default adapter parameters: rank 8, 1024 slots, the update bandit deciding every 48 slots, 64
/// held-out and at least 64 training slots, batches of 128, 4 steps in `SB_ADAPT_ALWAYS`, learning
/// rate 2e-3, a horizon of 2048 tokens and a confidence width of 1.
#[unsafe(no_mangle)]
pub extern "C" fn sb_adapter_default_params() -> sb_adapter_params {
    let a = AdapterParams::default();
    let u = UpdateParams::default();
    let t = TrainParams::default();
    sb_adapter_params {
        struct_size: size_of::<sb_adapter_params>() as u32,
        rank: a.rank as u32,
        capacity: a.capacity as u32,
        mode: mode_code(u.mode),
        decide_every: u.decide_every,
        holdout: u.holdout,
        min_train: u.min_train,
        batch: u.batch,
        always_steps: u.always_steps,
        learning_rate: t.lr,
        horizon_tokens: u.horizon_tokens,
        confidence_z: u.confidence_z,
    }
}

fn mode_code(m: UpdateMode) -> u32 {
    match m {
        UpdateMode::Off => SB_ADAPT_OFF,
        UpdateMode::Bandit => SB_ADAPT_BANDIT,
        UpdateMode::Always => SB_ADAPT_ALWAYS,
    }
}

/// The update and optimizer parameters of `p`, over `update` and `train` for the fields C does not
/// set. The finer checks are `UpdateParams::validate`'s.
fn policy_of(
    p: &sb_adapter_params,
    update: UpdateParams,
    train: TrainParams,
) -> Result<(UpdateParams, TrainParams), Status> {
    if !p.learning_rate.is_finite() || !p.horizon_tokens.is_finite() || !p.confidence_z.is_finite()
    {
        return Err(Status::NonFinite);
    }
    let mode = match p.mode {
        SB_ADAPT_OFF => UpdateMode::Off,
        SB_ADAPT_BANDIT => UpdateMode::Bandit,
        SB_ADAPT_ALWAYS => UpdateMode::Always,
        _ => return Err(Status::InvalidArgument),
    };
    if p.learning_rate < 0.0 {
        return Err(Status::InvalidArgument);
    }
    let update = UpdateParams {
        mode,
        decide_every: p.decide_every,
        holdout: p.holdout,
        min_train: p.min_train,
        batch: p.batch,
        horizon_tokens: p.horizon_tokens,
        confidence_z: p.confidence_z,
        always_steps: p.always_steps,
        ..update
    };
    update.validate()?;
    Ok((
        update,
        TrainParams {
            lr: p.learning_rate,
            ..train
        },
    ))
}

/// Locks an adapter. A panic inside an earlier call that held the lock (a specblock bug, reported as
/// `SB_STATUS_PANIC`) leaves it poisoned: `SB_STATUS_INVALID_STATE` from then on.
fn lock(a: &SharedAdapter) -> Result<MutexGuard<'_, OnlineAdapter>, Status> {
    a.lock().map_err(|_| Status::InvalidState)
}

/// A NUL-terminated UTF-8 path.
///
/// # Safety
/// A non-NULL `path` must point to a NUL-terminated string.
unsafe fn utf8_path<'a>(path: *const c_char) -> Result<&'a Path, Status> {
    if path.is_null() {
        return Err(Status::NullArgument);
    }
    // SAFETY: non-NULL, NUL-terminated (caller contract).
    let s = unsafe { CStr::from_ptr(path) }
        .to_str()
        .map_err(|_| Status::InvalidArgument)?;
    Ok(Path::new(s))
}

/// Creates an identity adapter for `drafter`'s heads (it copies what it needs: the drafter may be
/// freed first) and writes it to `*out_adapter`. It fits sessions of drafters of the same shape
/// (hidden width, draft and target vocabularies, rank head). Errors: `SB_STATUS_NULL_ARGUMENT`;
/// `SB_STATUS_STRUCT_SIZE` for a `struct_size` other than `sizeof(sb_adapter_params)`;
/// `SB_STATUS_NON_FINITE` for a NaN or infinite `learning_rate`, `horizon_tokens` or `confidence_z`;
/// `SB_STATUS_INVALID_ARGUMENT` for any other value outside its documented range (an unknown mode, a
/// rank outside 1..=64, a capacity below `holdout + min_train`, ...); `SB_STATUS_OUT_OF_MEMORY`.
/// Nothing is written on error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_adapter_new(
    drafter: *const sb_drafter,
    params: *const sb_adapter_params,
    out_adapter: *mut *mut sb_adapter,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let d = Arc::clone(&unsafe { obj_ref(drafter) }?.inner);
        let p = unsafe { read_params(params) }?;
        if out_adapter.is_null() {
            return Err(Status::NullArgument);
        }
        let defaults = AdapterParams::default();
        let (update, train) = policy_of(&p, defaults.update, defaults.train)?;
        let params = AdapterParams {
            rank: p.rank as usize,
            capacity: p.capacity as usize,
            update,
            train,
            ..defaults
        };
        let adapter = OnlineAdapter::new(&d.drafter, params)?;
        let handle = Box::into_raw(Box::new(sb_adapter {
            inner: adapter.into_shared(),
        }));
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_adapter, handle) }
    })
}

/// Frees an adapter handle. `NULL` is a no-op. Sessions attached to it keep using it; its memory is
/// freed with the last of them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_adapter_free(adapter: *mut sb_adapter) {
    if adapter.is_null() {
        return;
    }
    let _ = guard(|| {
        // SAFETY: the handle came from `sb_adapter_new` and is freed once (caller contract).
        drop(unsafe { Box::from_raw(adapter) });
        Ok(())
    });
}

/// Changes when and how the adapter learns: `mode`, `decide_every`, `holdout`, `min_train`, `batch`,
/// `always_steps`, `learning_rate`, `horizon_tokens` and `confidence_z` take effect from the next
/// decision point; the update bandit's reward estimates restart (the recorded slots, the live weights
/// and the counters of `sb_adapter_get_stats` stay). `rank` and `capacity` are fixed at creation and must
/// equal the creation values. Errors: `SB_STATUS_NULL_ARGUMENT`; `SB_STATUS_STRUCT_SIZE`;
/// `SB_STATUS_NON_FINITE` as `sb_adapter_new`; `SB_STATUS_INVALID_ARGUMENT` for values
/// `sb_adapter_new` refuses, a changed `rank` or `capacity`, or a `holdout` or `batch` above the
/// creation values; `SB_STATUS_INVALID_STATE` after an internal panic (see `SB_STATUS_PANIC`) left the
/// adapter unusable. Nothing changes on error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_adapter_set_policy(
    adapter: *mut sb_adapter,
    params: *const sb_adapter_params,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer. Shared access only: the adapter is locked.
        let h = unsafe { obj_ref(adapter as *const sb_adapter) }?;
        let p = unsafe { read_params(params) }?;
        let mut a = lock(&h.inner)?;
        let current = *a.params();
        let (update, train) = policy_of(&p, current.update, current.train)?;
        if p.rank as usize != current.rank || p.capacity as usize != current.capacity {
            return Err(Status::InvalidArgument);
        }
        // Validates before it changes anything; the setter after it cannot fail.
        a.set_update_params(update)?;
        a.set_train_params(train);
        Ok(())
    })
}

/// Writes the adapter's counters to `*out`. Waits while a session is updating the adapter. Errors:
/// `SB_STATUS_NULL_ARGUMENT`; `SB_STATUS_INVALID_STATE` as `sb_adapter_set_policy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_adapter_get_stats(
    adapter: *const sb_adapter,
    out: *mut sb_adapter_stats,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let h = unsafe { obj_ref(adapter) }?;
        if out.is_null() {
            return Err(Status::NullArgument);
        }
        let st = lock(&h.inner)?.stats();
        let u = &st.updates;
        let tried = |steps: u32| {
            UPDATE_STEPS
                .iter()
                .position(|&s| s == steps)
                .map_or(0, |i| u.tried[i])
        };
        let stats = sb_adapter_stats {
            decisions: u.decisions,
            skipped: u.skipped,
            tried_1: tried(1),
            tried_4: tried(4),
            tried_16: tried(16),
            adopted: u.adopted,
            rejected: u.rejected,
            failed: st.failed,
            update_seconds: u.update_seconds,
            expected_saved_seconds: u.expected_saved_seconds,
            slots_recorded: st.slots_recorded,
            slots_accepted: st.slots_accepted,
            version: st.version,
            last_delta: u.last_delta,
        };
        // SAFETY: checked non-NULL.
        unsafe { write_out(out, stats) }
    })
}

/// Saves the adapter's live weights to the file `path` (UTF-8; safetensors, written to a temporary
/// file beside it and renamed, so a reader never sees a partial file). Sessions keep running
/// meanwhile: the file is written from a copy. Errors: `SB_STATUS_NULL_ARGUMENT`;
/// `SB_STATUS_INVALID_ARGUMENT` for a path that is not UTF-8 or a file that cannot be written;
/// `SB_STATUS_INVALID_STATE` as `sb_adapter_set_policy`; `SB_STATUS_OUT_OF_MEMORY`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_adapter_save(
    adapter: *const sb_adapter,
    path: *const c_char,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let h = unsafe { obj_ref(adapter) }?;
        let path = unsafe { utf8_path(path) }?;
        let copy = {
            let a = lock(&h.inner)?;
            let mut w = HeadAdapter::new(*a.shape(), 0)?;
            w.copy_from(a.live());
            w
        };
        // Outside the lock: sessions are not held up by the file system.
        copy.save(path).map_err(|_| Status::InvalidArgument)
    })
}

/// Loads weights saved by `sb_adapter_save` from an adapter of the same shape (same drafter shape
/// and rank) as the live weights; attached sessions draft with them from their next
/// `sb_session_draft`. The recorded slots and the counters stay; the version changes. Errors:
/// `SB_STATUS_NULL_ARGUMENT`; `SB_STATUS_INVALID_ARGUMENT` for a path that is not UTF-8, a file that
/// cannot be read or is not such an adapter (a tensor missing, of another shape, or holding a
/// non-finite value), as `sb_drafter_load` reports a bad file; `SB_STATUS_INVALID_STATE` as
/// `sb_adapter_set_policy`; `SB_STATUS_OUT_OF_MEMORY`. Nothing changes on error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_adapter_load(adapter: *mut sb_adapter, path: *const c_char) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer. Shared access only: the adapter is locked.
        let h = unsafe { obj_ref(adapter as *const sb_adapter) }?;
        let path = unsafe { utf8_path(path) }?;
        let shape = *lock(&h.inner)?.shape();
        // Read outside the lock; installed under it only once the whole file checked out.
        let w = HeadAdapter::load(path, shape).map_err(|_| Status::InvalidArgument)?;
        lock(&h.inner)?.set_live(&w)?;
        Ok(())
    })
}

/// Attaches `adapter` to `session` (replacing an attached one): from its next `sb_session_draft` the
/// session drafts with the adapter's live weights (its own copy, refreshed when an update is
/// adopted), records every verified path into the adapter at `sb_session_commit`, and lets the
/// adapter decide on an update at `sb_session_feedback` (which then returns the update's errors
/// too). The session holds a reference to the adapter (see `sb_adapter_free`); attach it before a
/// draft or between a feedback and the next draft. Errors: `SB_STATUS_NULL_ARGUMENT`;
/// `SB_STATUS_INVALID_ARGUMENT` when the adapter was made for a drafter of another shape (hidden
/// width, draft or target vocabulary, or a rank head the session's drafter lacks);
/// `SB_STATUS_INVALID_STATE` as `sb_adapter_set_policy`; `SB_STATUS_OUT_OF_MEMORY`. Nothing changes
/// on error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_attach_adapter(
    session: *mut sb_session,
    adapter: *mut sb_adapter,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let s = unsafe { obj_mut(session) }?;
        let h = unsafe { obj_ref(adapter as *const sb_adapter) }?;
        if !lock(&h.inner)?.fits(&s.drafter.drafter) {
            return Err(Status::InvalidArgument);
        }
        s.speculator.attach_adapter(Arc::clone(&h.inner))?;
        Ok(())
    })
}

/// Detaches the session's adapter, if any (a no-op without one): the session drafts with its
/// drafter's own heads again and drops its reference to the adapter. Errors:
/// `SB_STATUS_NULL_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_detach_adapter(session: *mut sb_session) -> Status {
    guard(|| {
        // SAFETY: caller contract.
        let s = unsafe { obj_mut(session) }?;
        drop(s.speculator.detach_adapter());
        Ok(())
    })
}
