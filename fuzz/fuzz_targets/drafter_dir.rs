//! Drafter loading from a directory through the C API (`sb_drafter_load`, both kinds): the input is
//! `[u32 LE: config length][config.json][model.safetensors]`, written to a scratch directory. A load
//! that succeeds is driven once (session, prefill, draft) so that hostile weights reach the forward.
//! Every failure must give a specific status and a NUL-terminated message; nothing may panic.
#![no_main]

use std::ffi::{CStr, CString, c_char};
use std::path::PathBuf;
use std::ptr::null_mut;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use specblock::Status;
use specblock::ffi::*;

/// A scratch directory per fuzzing process.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("specblock-fuzz-dir-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch directory");
        d
    })
}

/// `vocab_size * hidden_size` of the config when it is small enough to hand a matching embedding.
fn embedding_len(config: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(config).ok()?;
    let vocab = usize::try_from(v.get("vocab_size")?.as_u64()?).ok()?;
    let hidden = usize::try_from(v.get("hidden_size")?.as_u64()?).ok()?;
    vocab.checked_mul(hidden).filter(|&n| n <= 1 << 22)
}

fn check(s: Status, what: &str) {
    assert_ne!(s, Status::Panic, "{what} panicked inside the library");
}

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (config, model) = rest.split_at(len);
    let dir = scratch();
    std::fs::write(dir.join("config.json"), config).expect("write config.json");
    std::fs::write(dir.join("model.safetensors"), model).expect("write model.safetensors");

    let n = embedding_len(config).unwrap_or(300 * 64);
    let embedding: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let cdir = CString::new(dir.to_str().expect("utf-8 temp dir")).expect("no NUL");
    let params = sb_drafter_default_params();
    let mut drafter: *mut sb_drafter = null_mut();
    let mut err = [0x55 as c_char; 512];
    // SAFETY: every pointer is valid for the lengths given.
    let s = unsafe {
        sb_drafter_load(
            cdir.as_ptr(),
            &params,
            embedding.as_ptr(),
            embedding.len() as u64,
            &mut drafter,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    check(s, "sb_drafter_load");
    if s != Status::Ok {
        assert!(drafter.is_null());
        // SAFETY: the library promises a NUL-terminated message within the buffer on failure.
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
        assert!(!msg.to_bytes().is_empty(), "empty error message for {s:?}");
        return;
    }
    drive(drafter);
    // SAFETY: a live handle, freed once.
    unsafe { sb_drafter_free(drafter) };
});

/// One session on a loaded drafter: prefill, draft, commit, draft. Statuses are free (hostile weights
/// may give non-finite drafts), panics are not.
fn drive(drafter: *mut sb_drafter) {
    let mut info = sb_drafter_info {
        hidden: 0,
        feature_width: 0,
        vocab: 0,
        draft_vocab: 0,
        slots: 0,
        kind: 0,
    };
    // SAFETY: live handle, valid out pointer.
    check(
        unsafe { sb_drafter_get_info(drafter, &mut info) },
        "get_info",
    );
    let width = info.feature_width as usize;
    if width == 0 || width > 1 << 16 {
        return;
    }
    let mut sp = sb_session_default_params();
    sp.max_entries = 16;
    let mut session: *mut sb_session = null_mut();
    // SAFETY: live handle, valid params and out pointer.
    let s = unsafe { sb_session_new(drafter, &sp, &mut session) };
    check(s, "sb_session_new");
    if s != Status::Ok {
        return;
    }
    let mut tp = sb_tree_default_params();
    // SAFETY: live session.
    check(
        unsafe { sb_session_get_tree_params(session, &mut tp) },
        "tree_params",
    );
    let mut tree: *mut sb_tree = null_mut();
    // SAFETY: valid params.
    if unsafe { sb_tree_new(&tp, &mut tree) } == Status::Ok {
        let features = vec![0.25f32; 3 * width];
        let tokens = [1i32, 2, 3, 4];
        // SAFETY: buffers hold the counts given; handles are live.
        unsafe {
            check(
                sb_session_prefill(session, features.as_ptr(), 3, tokens.as_ptr(), 4),
                "prefill",
            );
            check(sb_session_draft(session, tree), "draft");
            check(
                sb_session_commit(session, null_mut(), 0, 5, features.as_ptr(), 1),
                "commit",
            );
            check(sb_session_draft(session, tree), "draft");
            sb_tree_free(tree);
        }
    }
    // SAFETY: live session, freed once.
    unsafe { sb_session_free(session) };
}
