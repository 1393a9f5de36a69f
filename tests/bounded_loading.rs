//! Hostile sizes never abort the process: config.json dimensions far above any drafter are refused with
//! a message naming the field, before anything is allocated; session parameters that would need more
//! memory than a session may reserve are refused with a status; every drafter-load failure through the C
//! API leaves a message.

use std::path::{Path, PathBuf};

use specblock::drafter::eagle3::{Eagle3Drafter, Eagle3Policy, Eagle3Session};
use specblock::drafter::{DraftPolicy, SpecBlockDrafter, SpecBlockSession};
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
        let e = SpecBlockDrafter::load_dir(&dir, 1)
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
    let d = SpecBlockDrafter::load_dir(&fixture("drafter_tiny"), 1).unwrap();
    for (entries, beam) in [(u32::MAX as usize, 10), (usize::MAX, 10), (64, u32::MAX)] {
        let policy = DraftPolicy {
            beam_width: beam,
            ..DraftPolicy::default()
        };
        let e = SpecBlockSession::new(&d, entries, policy)
            .err()
            .expect("refused");
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

/// A copy of a fixture drafter directory whose model.safetensors has the data bytes of tensor `name`
/// rewritten by `edit` (same dtype and shape, so only the values change).
fn with_tensor_bytes(fixture_name: &str, name: &str, edit: impl FnOnce(&mut [u8])) -> PathBuf {
    let dir = with_config(fixture_name, "hidden_size", serde_json::json!(64));
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let offsets = &header[name]["data_offsets"];
    let (start, end) = (
        8 + header_len + offsets[0].as_u64().unwrap() as usize,
        8 + header_len + offsets[1].as_u64().unwrap() as usize,
    );
    edit(&mut bytes[start..end]);
    std::fs::write(&path, bytes).unwrap();
    dir
}

fn set_i64(bytes: &mut [u8], index: usize, value: i64) {
    bytes[8 * index..8 * index + 8].copy_from_slice(&value.to_le_bytes());
}

fn get_i64(bytes: &[u8], index: usize) -> i64 {
    i64::from_le_bytes(bytes[8 * index..8 * index + 8].try_into().unwrap())
}

/// Loads a drafter directory of either kind and returns the error message (panics if it loads).
fn load_error(fixture_name: &str, dir: &Path) -> String {
    let e = if fixture_name.starts_with("eagle3") {
        Eagle3Drafter::load_dir(dir, 1).err().map(|e| e.to_string())
    } else {
        SpecBlockDrafter::load_dir(dir, 1)
            .err()
            .map(|e| e.to_string())
    };
    e.expect("the edited checkpoint must be refused")
}

#[test]
fn draft_vocabulary_maps_are_checked_against_each_other() {
    for kind in ["drafter_tiny", "eagle3_tiny"] {
        // An offset that overflows i64 when added to the draft id (a panic before, in checked builds).
        let dir = with_tensor_bytes(kind, "d2t", |b| set_i64(b, 5, i64::MAX));
        let e = load_error(kind, &dir);
        assert!(e.contains("d2t[5]") && e.contains("outside"), "{kind}: {e}");
        std::fs::remove_dir_all(&dir).unwrap();

        // Two draft ids with one target id.
        let dir = with_tensor_bytes(kind, "d2t", |b| {
            let target_of_0 = get_i64(b, 0);
            set_i64(b, 1, target_of_0 - 1);
        });
        let e = load_error(kind, &dir);
        assert!(e.contains("another draft id"), "{kind}: {e}");
        std::fs::remove_dir_all(&dir).unwrap();

        // t2d missing a target that d2t maps to (draft id 0's target).
        let d2t0 = {
            let bytes = std::fs::read(fixture(kind).join("model.safetensors")).unwrap();
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
            let start = 8 + n + h["d2t"]["data_offsets"][0].as_u64().unwrap() as usize;
            get_i64(&bytes[start..], 0) as usize
        };
        let dir = with_tensor_bytes(kind, "t2d", |b| b[d2t0] = 0);
        let e = load_error(kind, &dir);
        assert!(e.contains("disagree"), "{kind}: {e}");
        std::fs::remove_dir_all(&dir).unwrap();

        // t2d marking one target id too many.
        let dir = with_tensor_bytes(kind, "t2d", |b| {
            let spare = b
                .iter()
                .position(|&x| x == 0)
                .expect("a target outside the draft");
            b[spare] = 1;
        });
        let e = load_error(kind, &dir);
        assert!(e.contains("disagree"), "{kind}: {e}");
        std::fs::remove_dir_all(&dir).unwrap();

        // A BOOL that is neither 0 nor 1.
        let dir = with_tensor_bytes(kind, "t2d", |b| b[d2t0] = 7);
        let e = load_error(kind, &dir);
        assert!(e.contains("expected 0 or 1"), "{kind}: {e}");
        std::fs::remove_dir_all(&dir).unwrap();

        // The unedited maps load.
        let dir = with_tensor_bytes(kind, "t2d", |_| {});
        match kind {
            "eagle3_tiny" => drop(Eagle3Drafter::load_dir(&dir, 1).unwrap()),
            _ => drop(SpecBlockDrafter::load_dir(&dir, 1).unwrap()),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Non-finite weights load (checking every weight at load would cost a pass over the checkpoint); the
/// first forward that meets them reports `SB_STATUS_NON_FINITE` (prefill or draft), never a tree of NaN
/// scores and never a panic, and the session refuses to draft from that state rather than crash.
#[test]
fn non_finite_weights_are_reported_by_the_first_forward() {
    for (kind, tensor) in [
        ("drafter_tiny", "input_layer.condition_norm.weight"),
        ("eagle3_tiny", "norm.weight"),
    ] {
        let dir = with_tensor_bytes(kind, tensor, |b| {
            b[4..8].copy_from_slice(&f32::NAN.to_le_bytes())
        });
        let embed: Vec<f32> = (0..300 * 64)
            .map(|i| (i % 17) as f32 / 17.0 - 0.5)
            .collect();
        let p = sb_drafter_default_params();
        let mut d: *mut sb_drafter = std::ptr::null_mut();
        let cdir = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: valid pointers and lengths; every handle is freed once below.
        unsafe {
            let s = sb_drafter_load(
                cdir.as_ptr(),
                &p,
                embed.as_ptr(),
                embed.len() as u64,
                &mut d,
                std::ptr::null_mut(),
                0,
            );
            assert_eq!(s, Status::Ok, "{kind}: a NaN weight loads");
            let mut sp = sb_session_default_params();
            sp.policy = SB_POLICY_FIXED;
            sp.budget = 8;
            let mut session: *mut sb_session = std::ptr::null_mut();
            assert_eq!(sb_session_new(d, &sp, &mut session), Status::Ok);
            let mut tp = sb_tree_default_params();
            assert_eq!(sb_session_get_tree_params(session, &mut tp), Status::Ok);
            let mut tree: *mut sb_tree = std::ptr::null_mut();
            assert_eq!(sb_tree_new(&tp, &mut tree), Status::Ok);
            let features = vec![0.5f32; 3 * 144];
            let tokens = [1, 2, 3, 4];
            let prefill = sb_session_prefill(session, features.as_ptr(), 3, tokens.as_ptr(), 4);
            let draft = sb_session_draft(session, tree);
            assert!(
                prefill == Status::NonFinite
                    || (prefill == Status::Ok && draft == Status::NonFinite),
                "{kind}: prefill {prefill:?}, draft {draft:?}"
            );
            sb_tree_free(tree);
            sb_session_free(session);
            sb_drafter_free(d);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
