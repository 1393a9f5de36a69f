//! Hostile sizes never abort the process: config.json dimensions far above any drafter are refused with
//! a message naming the field, before anything is allocated; session parameters that would need more
//! memory than a session may reserve are refused with a status; every drafter-load failure through the C
//! API leaves a message.

use std::path::{Path, PathBuf};

use specblock::drafter::eagle3::{Eagle3Drafter, Eagle3Policy, Eagle3Session};
use specblock::drafter::{DraftPolicy, Drafter, Session};
use specblock::ffi::*;
use specblock::{Error, Status};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/engine/tests/fixtures"
    ))
    .join(name)
}

/// A copy of a fixture drafter directory with one config.json field replaced.
fn with_config(name: &str, key: &str, value: serde_json::Value) -> PathBuf {
    let src = fixture(name);
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("sb-bounds-{}-{n}-{name}-{key}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["model.safetensors", "embed.safetensors"] {
        if src.join(f).exists() {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

#[test]
fn huge_config_dimensions_are_named_not_allocated() {
    for (key, value) in [
        (
            "num_hidden_layers",
            serde_json::json!(10_000_000_000_000u64),
        ),
        ("hidden_size", serde_json::json!(1u64 << 40)),
        ("vocab_size", serde_json::json!(1u64 << 33)),
        ("intermediate_size", serde_json::json!(1u64 << 50)),
        ("num_attention_heads", serde_json::json!(1u64 << 30)),
        ("rank_classes", serde_json::json!(1u64 << 20)),
    ] {
        let dir = with_config("drafter_tiny", key, value);
        let e = Drafter::load_dir(&dir, 1)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains(key), "{key}: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    for (key, value) in [
        ("hidden_size", serde_json::json!(1u64 << 40)),
        ("vocab_size", serde_json::json!(1u64 << 33)),
        ("draft_vocab_size", serde_json::json!(1u64 << 33)),
    ] {
        let dir = with_config("eagle3_tiny", key, value);
        let e = Eagle3Drafter::load_dir(&dir, 1)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains(key), "{key}: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn oversized_sessions_are_refused_before_allocating() {
    let d = Drafter::load_dir(&fixture("drafter_tiny"), 1).unwrap();
    for (entries, beam) in [(u32::MAX as usize, 10), (usize::MAX, 10), (64, u32::MAX)] {
        let policy = DraftPolicy {
            beam_width: beam,
            ..DraftPolicy::default()
        };
        let e = Session::new(&d, entries, policy).err().expect("refused");
        assert!(
            matches!(e, Error::InvalidArgument(_) | Error::Capacity { .. }),
            "{entries} entries, beam {beam}: {e:?}"
        );
    }
    let e3 = Eagle3Drafter::load_dir(&fixture("eagle3_tiny"), 1).unwrap();
    for (entries, p) in [
        (usize::MAX, Eagle3Policy::default()),
        (
            64,
            Eagle3Policy {
                budget: u32::MAX,
                ..Eagle3Policy::default()
            },
        ),
    ] {
        assert!(
            Eagle3Session::new(&e3, entries, p).is_err(),
            "{entries} {p:?}"
        );
    }
}

fn c_load(dir: &Path, threads: u32) -> (Status, String) {
    let embed = vec![0.1f32; 300 * 64];
    let mut p = sb_drafter_default_params();
    p.threads = threads;
    let mut out: *mut sb_drafter = std::ptr::null_mut();
    let mut buf = [0x55 as std::ffi::c_char; 256];
    let cdir = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: valid pointers and lengths.
    let s = unsafe {
        sb_drafter_load(
            cdir.as_ptr(),
            &p,
            embed.as_ptr(),
            embed.len() as u64,
            &mut out,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if !out.is_null() {
        unsafe { sb_drafter_free(out) };
    }
    let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    (s, msg)
}

#[test]
fn c_loader_always_explains_and_sessions_refuse_huge_parameters() {
    let (s, msg) = c_load(&fixture("drafter_tiny"), 1_000_000);
    assert_eq!(s, Status::InvalidArgument);
    assert!(msg.contains("threads"), "{msg}");
    let (s, msg) = c_load(Path::new("/nonexistent/drafter"), 1);
    assert_ne!(s, Status::Ok);
    assert!(msg.contains("config.json"), "{msg}");
    let dir = with_config(
        "drafter_tiny",
        "num_hidden_layers",
        serde_json::json!(1u64 << 50),
    );
    let (s, msg) = c_load(&dir, 1);
    assert_ne!(s, Status::Ok);
    assert!(msg.contains("num_hidden_layers"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();

    let (s, _) = c_load(&fixture("drafter_tiny"), 1);
    assert_eq!(s, Status::Ok);
    let embed = vec![0.1f32; 300 * 64];
    let p = sb_drafter_default_params();
    let mut d: *mut sb_drafter = std::ptr::null_mut();
    let cdir = std::ffi::CString::new(fixture("drafter_tiny").to_str().unwrap()).unwrap();
    let s = unsafe {
        sb_drafter_load(
            cdir.as_ptr(),
            &p,
            embed.as_ptr(),
            embed.len() as u64,
            &mut d,
            std::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(s, Status::Ok);
    for edit in [
        |p: &mut sb_session_params| p.max_entries = u32::MAX,
        |p: &mut sb_session_params| p.beam_width = u32::MAX,
        |p: &mut sb_session_params| {
            p.policy = SB_POLICY_FIXED;
            p.budget = u32::MAX
        },
        |p: &mut sb_session_params| p.discount = f32::NAN,
        |p: &mut sb_session_params| p.exploration = -1.0,
        |p: &mut sb_session_params| p.policy = 7,
    ] {
        let mut sp = sb_session_default_params();
        edit(&mut sp);
        let mut s: *mut sb_session = std::ptr::null_mut();
        let st = unsafe { sb_session_new(d, &sp, &mut s) };
        assert!(
            matches!(st, Status::InvalidArgument | Status::Capacity),
            "{st:?}"
        );
        assert!(s.is_null());
    }
    unsafe { sb_drafter_free(d) };
}
