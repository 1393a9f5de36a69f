//! A state machine over the C API: the input bytes are a program of `sb_tree_*`, layout, `sb_verify_*`,
//! `sb_sampling_sample_token` and `sb_session_*` calls (two tree slots, two session slots on the SpecBlock and
//! EAGLE-3 test drafters), with hostile arguments: NULLs, wrong struct sizes, capacities, tokens out of
//! range, NaNs, calls out of order, aliasing buffers. No call may panic (`SB_STATUS_PANIC`) or crash, and
//! a handle stays usable after any error: every program ends with a valid decoding iteration.
#![no_main]

use std::ffi::CString;
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use specblock::Status;
use specblock::ffi::*;

/// The input as a stream of typed values (zeros once it runs out).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// A count that is usually small: mostly 0..=max, sometimes a hostile value.
    fn count(&mut self, max: u32) -> u32 {
        match self.u8() {
            250 => u32::MAX,
            251 => u32::MAX / 2 + 1,
            252 => max + 1,
            b => (b as u32) % (max + 1),
        }
    }
    /// A token: mostly in the test vocabulary (300), sometimes negative or past it.
    fn token(&mut self) -> i32 {
        match self.u8() {
            0 => -1,
            1 => i32::MIN,
            2 => 300,
            3 => i32::MAX,
            _ => (self.u16() % 300) as i32,
        }
    }
    /// A float: mostly ordinary, sometimes NaN, infinite or huge.
    fn float(&mut self) -> f32 {
        match self.u8() {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            3 => f32::MAX,
            4 => -0.0,
            5 => f32::from_bits(self.u32()),
            b => (b as f32 - 128.0) / 16.0,
        }
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The two test drafters (tools/engine/tests/fixtures), loaded once per process and shared by every
/// input, as an engine shares one drafter between sessions.
struct Drafters {
    handles: [*mut sb_drafter; 2],
    feature_width: [usize; 2],
}
// SAFETY: the library documents drafters as shareable between threads; the harness is single-threaded.
unsafe impl Send for Drafters {}
unsafe impl Sync for Drafters {}

fn drafters() -> &'static Drafters {
    static D: OnceLock<Drafters> = OnceLock::new();
    D.get_or_init(|| {
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tools/engine/tests/fixtures/"
        );
        let embedding: Vec<f32> = (0..300 * 64)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        // The embedding is borrowed for the drafter's lifetime: keep it for the process.
        let embedding: &'static [f32] = Box::leak(embedding.into_boxed_slice());
        let mut handles = [null_mut(); 2];
        let mut feature_width = [0; 2];
        for (i, name) in ["drafter_tiny", "eagle3_tiny"].iter().enumerate() {
            let dir = CString::new(format!("{root}{name}")).expect("path");
            let p = sb_drafter_default_params();
            // SAFETY: valid pointers and lengths.
            let s = unsafe {
                sb_drafter_load(
                    dir.as_ptr(),
                    &p,
                    embedding.as_ptr(),
                    embedding.len() as u64,
                    &mut handles[i],
                    null_mut(),
                    0,
                )
            };
            assert_eq!(s, Status::Ok, "loading the {name} fixture");
            let mut info = sb_drafter_info {
                hidden: 0,
                feature_width: 0,
                vocab: 0,
                draft_vocab: 0,
                slots: 0,
                kind: 0,
            };
            // SAFETY: live handle.
            assert_eq!(
                unsafe { sb_drafter_get_info(handles[i], &mut info) },
                Status::Ok
            );
            feature_width[i] = info.feature_width as usize;
        }
        Drafters {
            handles,
            feature_width,
        }
    })
}

fn ok(s: Status, what: &str) -> Status {
    assert_ne!(s, Status::Panic, "{what} returned SB_STATUS_PANIC");
    s
}

struct Machine {
    trees: [*mut sb_tree; 2],
    sessions: [*mut sb_session; 2],
    /// Which drafter each session uses.
    kinds: [usize; 2],
    last_accept: Option<sb_accept>,
}

impl Machine {
    fn tree(&self, b: &mut Bytes) -> *mut sb_tree {
        match b.u8() % 8 {
            7 => null_mut(),
            i => self.trees[(i % 2) as usize],
        }
    }

    fn slot(b: &mut Bytes) -> usize {
        (b.u8() % 2) as usize
    }

    fn free_tree(&mut self, i: usize) {
        // SAFETY: the slot holds a live handle or NULL.
        unsafe { sb_tree_free(self.trees[i]) };
        self.trees[i] = null_mut();
    }

    fn free_session(&mut self, i: usize) {
        // SAFETY: the slot holds a live handle or NULL.
        unsafe { sb_session_free(self.sessions[i]) };
        self.sessions[i] = null_mut();
    }

    fn features(&self, session: usize, rows: u32, b: &mut Bytes) -> Vec<f32> {
        let width = drafters().feature_width[self.kinds[session]];
        let fill = b.float();
        vec![fill; width * rows.min(64) as usize]
    }

    // SAFETY (for every call below): the handles are live or NULL, and every buffer holds at least
    // the capacity passed with it (capacities come from the input, buffers are sized to match or larger).
    #[allow(clippy::too_many_lines)]
    unsafe fn step(&mut self, b: &mut Bytes) {
        unsafe {
            match b.u8() % 20 {
                0 => {
                    let i = Self::slot(b);
                    self.free_tree(i);
                    let mut p = sb_tree_default_params();
                    p.max_nodes = b.count(300);
                    p.max_depth = b.count(70);
                    if b.u8() == 0 {
                        p.struct_size = b.u32();
                    }
                    let mut t = null_mut();
                    if ok(sb_tree_new(&p, &mut t), "sb_tree_new") == Status::Ok {
                        self.trees[i] = t;
                    } else {
                        assert!(t.is_null());
                    }
                }
                1 => {
                    let i = Self::slot(b);
                    self.free_tree(i);
                }
                2 => {
                    let t = self.tree(b);
                    ok(sb_tree_reset(t, b.token()), "sb_tree_reset");
                }
                3 => {
                    let t = self.tree(b);
                    let parent = b.u8() as i32 - 2;
                    let mut id = 0;
                    let out = if b.bool() { null_mut() } else { &mut id };
                    ok(
                        sb_tree_add(t, parent, b.token(), b.float(), out),
                        "sb_tree_add",
                    );
                }
                4 => {
                    let t = self.tree(b);
                    ok(sb_tree_finalize(t, b.count(300)), "sb_tree_finalize");
                }
                5 => self.layouts(b),
                6 => {
                    let t = self.tree(b);
                    let n = b.count(300);
                    let argmax: Vec<i32> = (0..n.min(300)).map(|_| b.token()).collect();
                    let mut acc = std::mem::zeroed::<sb_accept>();
                    let ptr = if b.u8() == 0 { null() } else { argmax.as_ptr() };
                    let s = ok(
                        sb_verify_greedy(t, ptr, n.min(argmax.len() as u32), &mut acc),
                        "sb_verify_greedy",
                    );
                    if s == Status::Ok {
                        self.last_accept = Some(acc);
                    }
                }
                7 => {
                    let t = self.tree(b);
                    let n = b.count(40).min(40);
                    let vocab = b.count(64).min(64);
                    let logits: Vec<f32> = (0..n * vocab).map(|_| b.float()).collect();
                    let mut sp = sb_sampling_default_params();
                    sp.temperature = b.float();
                    sp.top_k = b.u8() as i32 - 2;
                    sp.top_p = b.float();
                    if b.u8() == 0 {
                        sp.struct_size = b.u32();
                    }
                    let mut acc = std::mem::zeroed::<sb_accept>();
                    let s = ok(
                        sb_verify_sample(
                            t,
                            logits.as_ptr(),
                            n,
                            vocab,
                            &sp,
                            b.u32() as u64,
                            &mut acc,
                        ),
                        "sb_verify_sample",
                    );
                    if s == Status::Ok {
                        self.last_accept = Some(acc);
                    }
                }
                8 => {
                    let vocab = b.count(64).min(64);
                    let logits: Vec<f32> = (0..vocab).map(|_| b.float()).collect();
                    let mut sp = sb_sampling_default_params();
                    sp.temperature = b.float();
                    sp.top_k = b.u8() as i32 - 2;
                    sp.top_p = b.float();
                    let mut tok = 0;
                    ok(
                        sb_sampling_sample_token(
                            logits.as_ptr(),
                            vocab,
                            &sp,
                            b.u32() as u64,
                            b.u32() as u64,
                            &mut tok,
                        ),
                        "sb_sampling_sample_token",
                    );
                }
                9 => self.session_new(b),
                10 => {
                    let i = Self::slot(b);
                    self.free_session(i);
                }
                11 => {
                    let i = Self::slot(b);
                    let n_tokens = b.count(20);
                    let tokens: Vec<i32> = (0..n_tokens.min(20)).map(|_| b.token()).collect();
                    let rows = if b.bool() {
                        n_tokens.saturating_sub(1)
                    } else {
                        b.count(20)
                    };
                    let f = self.features(i, rows, b);
                    let rows =
                        rows.min((f.len() / drafters().feature_width[self.kinds[i]].max(1)) as u32);
                    ok(
                        sb_session_prefill(
                            self.sessions[i],
                            f.as_ptr(),
                            rows,
                            tokens.as_ptr(),
                            tokens.len() as u32,
                        ),
                        "sb_session_prefill",
                    );
                }
                12 => {
                    let i = Self::slot(b);
                    let t = self.tree(b);
                    ok(sb_session_draft(self.sessions[i], t), "sb_session_draft");
                }
                13 => {
                    let i = Self::slot(b);
                    let n = b.count(10).min(10);
                    let accepted: Vec<i32> = (0..n).map(|_| b.token()).collect();
                    let rows = if b.bool() { n + 1 } else { b.count(12) };
                    let f = self.features(i, rows, b);
                    let rows =
                        rows.min((f.len() / drafters().feature_width[self.kinds[i]].max(1)) as u32);
                    ok(
                        sb_session_commit(
                            self.sessions[i],
                            accepted.as_ptr(),
                            n,
                            b.token(),
                            f.as_ptr(),
                            rows,
                        ),
                        "sb_session_commit",
                    );
                }
                14 => {
                    let i = Self::slot(b);
                    let fb = sb_feedback {
                        struct_size: if b.u8() == 0 {
                            b.u32()
                        } else {
                            size_of::<sb_feedback>() as u32
                        },
                        rows: b.count(100),
                        tokens: b.count(100),
                        flags: b.u8() as u32 % 3,
                        verify_seconds: b.float() as f64,
                        draft_seconds: b.float() as f64,
                    };
                    ok(
                        sb_session_feedback(self.sessions[i], &fb),
                        "sb_session_feedback",
                    );
                }
                15 => {
                    let i = Self::slot(b);
                    let mut st = sb_session_stats::default();
                    let cap = b.count(40).min(40);
                    let mut arms = vec![sb_arm_stats::default(); cap as usize];
                    ok(
                        sb_session_get_stats(
                            self.sessions[i],
                            &mut st,
                            arms.as_mut_ptr(),
                            cap as usize,
                        ),
                        "sb_session_get_stats",
                    );
                }
                16 => {
                    // A tree sized by the session, as an engine creates it.
                    let i = Self::slot(b);
                    let j = Self::slot(b);
                    let mut p = sb_tree_default_params();
                    if ok(
                        sb_session_get_tree_params(self.sessions[i], &mut p),
                        "sb_session_get_tree_params",
                    ) == Status::Ok
                    {
                        self.free_tree(j);
                        let mut t = null_mut();
                        if ok(sb_tree_new(&p, &mut t), "sb_tree_new") == Status::Ok {
                            self.trees[j] = t;
                        }
                    }
                }
                17 => self.valid_iteration(Self::slot(b), b),
                18 => {
                    // Drafter handles are shared: get_info on each, NULL included.
                    let mut info = std::mem::zeroed::<sb_drafter_info>();
                    let d = drafters().handles[(b.u8() % 2) as usize];
                    ok(sb_drafter_get_info(d, &mut info), "sb_drafter_get_info");
                    ok(
                        sb_drafter_get_info(null(), &mut info),
                        "sb_drafter_get_info",
                    );
                    ok(sb_drafter_get_info(d, null_mut()), "sb_drafter_get_info");
                }
                _ => {
                    let _ = sb_status_str(b.u32() as i32);
                    let t = self.tree(b);
                    let _ = (
                        sb_tree_len(t),
                        sb_tree_num_leaves(t),
                        sb_tree_depth(t),
                        sb_tree_is_finalized(t),
                    );
                }
            }
        }
    }

    unsafe fn session_new(&mut self, b: &mut Bytes) {
        let i = Self::slot(b);
        self.free_session(i);
        let kind = (b.u8() % 2) as usize;
        let mut p = sb_session_default_params();
        if b.bool() {
            p.max_entries = b.count(200);
            p.budget = b.count(100);
            p.beam_width = b.count(12);
            p.eagle_depth = b.count(10);
            p.eagle_top_k = b.count(10);
            p.policy = b.count(2);
            p.max_seeds = b.count(10);
            p.min_confidence = b.float();
            p.discount = b.float();
            p.exploration = b.float();
        }
        if b.u8() == 0 {
            p.struct_size = b.u32();
        }
        let n_arms = b.count(33);
        let arms: Vec<sb_arm> = (0..n_arms.min(33))
            .map(|_| sb_arm {
                kind: b.count(3),
                budget: b.count(100),
                max_seeds: b.count(10),
                depth: b.count(10),
                top_k: b.count(10),
                min_confidence: b.float(),
            })
            .collect();
        if !arms.is_empty() {
            p.arms = arms.as_ptr();
            p.n_arms = n_arms.min(arms.len() as u32);
        }
        let mut s = null_mut();
        // SAFETY: valid params (arms outlive the call), live drafter.
        let st = unsafe { sb_session_new(drafters().handles[kind], &p, &mut s) };
        if ok(st, "sb_session_new") == Status::Ok {
            self.sessions[i] = s;
            self.kinds[i] = kind;
        } else {
            assert!(s.is_null());
        }
    }

    /// Every layout on a tree, with capacities from the input (buffers always hold `cap`).
    unsafe fn layouts(&mut self, b: &mut Bytes) {
        let t = self.tree(b);
        let cap = b.count(4096).min(4096);
        let prefix = b.count(100);
        let mut ints = vec![0i32; cap as usize];
        let mut ints2 = vec![0i32; cap as usize];
        let mut bytes = vec![0u8; cap as usize];
        let mut floats = vec![0f32; cap as usize];
        let mut words = vec![0u32; cap as usize];
        unsafe {
            ok(
                sb_tree_tokens(t, ints.as_mut_ptr(), cap as usize),
                "sb_tree_tokens",
            );
            ok(
                sb_tree_parents(t, ints.as_mut_ptr(), cap as usize),
                "sb_tree_parents",
            );
            ok(
                sb_tree_depths(t, ints.as_mut_ptr(), cap as usize),
                "sb_tree_depths",
            );
            ok(
                sb_tree_positions(t, prefix, ints.as_mut_ptr(), cap as usize),
                "sb_tree_positions",
            );
            ok(
                sb_tree_first_child(t, ints.as_mut_ptr(), cap as usize),
                "sb_tree_first_child",
            );
            ok(
                sb_tree_next_sibling(t, ints.as_mut_ptr(), cap as usize),
                "sb_tree_next_sibling",
            );
            ok(
                sb_tree_source_ids(t, ints.as_mut_ptr(), cap as usize),
                "sb_tree_source_ids",
            );
            ok(
                sb_tree_cum_logprobs(t, floats.as_mut_ptr(), cap as usize),
                "sb_tree_cum_logprobs",
            );
            ok(
                sb_tree_mask_dense(t, bytes.as_mut_ptr(), cap as usize),
                "sb_tree_mask_dense",
            );
            ok(
                sb_tree_mask_bias(t, floats.as_mut_ptr(), cap as usize),
                "sb_tree_mask_bias",
            );
            let _ = sb_tree_mask_words_per_row(t, prefix);
            ok(
                sb_tree_mask_bits(t, prefix, words.as_mut_ptr(), cap as usize),
                "sb_tree_mask_bits",
            );
            let _ = sb_tree_mask_flat_bytes(t, prefix);
            ok(
                sb_tree_mask_flat_bits(t, prefix, bytes.as_mut_ptr(), cap as usize),
                "sb_tree_mask_flat_bits",
            );
            let width = b.count(70);
            let mut rows = 0;
            ok(
                sb_tree_retrieve_paths(t, width, ints.as_mut_ptr(), cap as usize, &mut rows),
                "sb_tree_retrieve_paths",
            );
            let first = b.u8() as i32 - 4;
            let max_seq = b.count(300);
            // Sometimes the same buffer twice: the library must refuse aliasing outputs.
            let second = if b.bool() {
                ints.as_mut_ptr()
            } else {
                ints2.as_mut_ptr()
            };
            ok(
                sb_tree_seq_ranges(t, first, max_seq, ints.as_mut_ptr(), second, cap as usize),
                "sb_tree_seq_ranges",
            );
        }
    }

    /// One correct decoding iteration on session `i` (if it exists): a tree of the session's size,
    /// draft, greedy verification against targets from the input, commit, feedback. Its calls may fail
    /// only where the session's state makes them (a draft before any prefill).
    unsafe fn valid_iteration(&mut self, i: usize, b: &mut Bytes) {
        let session = self.sessions[i];
        if session.is_null() {
            return;
        }
        unsafe {
            let mut p = sb_tree_default_params();
            assert_eq!(sb_session_get_tree_params(session, &mut p), Status::Ok);
            let mut t = null_mut();
            if ok(sb_tree_new(&p, &mut t), "sb_tree_new") != Status::Ok {
                return;
            }
            if ok(sb_session_draft(session, t), "sb_session_draft") == Status::Ok {
                let n = sb_tree_len(t);
                let mut tokens = vec![0i32; n as usize];
                assert_eq!(
                    sb_tree_tokens(t, tokens.as_mut_ptr(), n as usize),
                    Status::Ok
                );
                // The target agrees with the drafter's first children as long as the input says so.
                let mut parents = vec![0i32; n as usize];
                assert_eq!(
                    sb_tree_parents(t, parents.as_mut_ptr(), n as usize),
                    Status::Ok
                );
                let argmax: Vec<i32> = (0..n as usize)
                    .map(|node| {
                        let child = (node + 1..n as usize).find(|&c| parents[c] == node as i32);
                        match child {
                            Some(c) if b.u8() % 4 != 0 => tokens[c],
                            _ => (b.u16() % 300) as i32,
                        }
                    })
                    .collect();
                let mut acc = std::mem::zeroed::<sb_accept>();
                assert_eq!(
                    sb_verify_greedy(t, argmax.as_ptr(), n, &mut acc),
                    Status::Ok
                );
                let rows = acc.n_accepted + 1;
                let f = self.features(i, rows, b);
                let s = ok(
                    sb_session_commit(
                        session,
                        acc.tokens.as_ptr(),
                        acc.n_accepted,
                        acc.bonus_token,
                        f.as_ptr(),
                        rows,
                    ),
                    "sb_session_commit",
                );
                // A commit of a verified draft fails only when the context is full or features are
                // non-finite.
                assert!(
                    matches!(s, Status::Ok | Status::Capacity | Status::NonFinite),
                    "commit after a valid verification: {s:?}"
                );
                let fb = sb_feedback {
                    struct_size: size_of::<sb_feedback>() as u32,
                    rows: n,
                    tokens: rows,
                    flags: 0,
                    verify_seconds: 1e-3,
                    draft_seconds: 1e-3,
                };
                assert_eq!(sb_session_feedback(session, &fb), Status::Ok);
            }
            sb_tree_free(t);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut m = Machine {
        trees: [null_mut(); 2],
        sessions: [null_mut(); 2],
        kinds: [0; 2],
        last_accept: None,
    };
    let mut steps = 0;
    while !b.is_empty() && steps < 200 {
        // SAFETY: the machine keeps every handle live or NULL.
        unsafe { m.step(&mut b) };
        steps += 1;
    }
    // Whatever happened, a fresh session on each drafter still decodes.
    for kind in 0..2 {
        let mut p = sb_session_default_params();
        p.max_entries = 64;
        let mut s = null_mut();
        // SAFETY: live drafter, valid params.
        assert_eq!(
            unsafe { sb_session_new(drafters().handles[kind], &p, &mut s) },
            Status::Ok
        );
        m.free_session(0);
        m.sessions[0] = s;
        m.kinds[0] = kind;
        let f = m.features(0, 3, &mut Bytes(&[10]));
        let tokens = [1, 2, 3, 4];
        // SAFETY: buffers hold the counts given.
        assert_eq!(
            unsafe { sb_session_prefill(s, f.as_ptr(), 3, tokens.as_ptr(), 4) },
            Status::Ok
        );
        // SAFETY: live session.
        unsafe { m.valid_iteration(0, &mut Bytes(&[1, 2, 3])) };
    }
    let _ = m.last_accept;
    for i in 0..2 {
        m.free_tree(i);
        m.free_session(i);
    }
});
