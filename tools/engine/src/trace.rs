//! Arm traces of real answers (`specblock trace-arms`) and policy replays over them (`specblock
//! replay-policy`), the library's [`specblock::adapt::replay`] fed by this engine.
//!
//! A trace is recorded per prompt: plain greedy decoding gives the answer; one prefill over prompt and
//! answer gives the target's features at every position; then, for each drafting arm, a fixed-shape
//! session drafts at every position `p`, the tree is walked against the answer (greedy verification
//! accepts exactly the path that matches it, since the target's argmax at a matching node is the
//! answer's next token), and the position is committed as a fully rejected iteration would commit it
//! (the root's features and the answer's token as the bonus). The drafter's context at `p` is the
//! same whichever iterations led there, so each (arm, position) is drafted once. Timings come from real
//! fixed-shape decoding of the first prompts with each arm ([`measure_timings`]); they need an idle
//! machine, the acceptance does not.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};
use specblock::adapt::replay::{ArmTrace, Replay, SequenceTrace};
use specblock::adapt::{Arm, Shape};
use specblock::drafter::AnyDrafter;
use specblock::tree::{DraftTree, TreeParams};
use specblock::verify;

use crate::error::{Error, Result};

/// The library's result, which [`DraftSession`] methods return.
type LibResult<T> = core::result::Result<T, specblock::Error>;
use crate::evaluate::arm_label;
use crate::generate::new_speculator;
use crate::model::{Capture, Llama, Logits, Mask, Segment};
use crate::speculate::DraftSession;

/// One answer's trace: per arm (in `arms` order) what an iteration starting at each position
/// accepts and verifies.
pub struct Recorded {
    /// The answer's tokens (plain greedy decoding; the prefill's first token included).
    pub answer: Vec<u32>,
    /// The library's form: per arm, `None` for plain decoding.
    pub trace: SequenceTrace,
}

/// Records every arm of `arms` over the greedy answer to `prompt` (token ids, chat template applied)
/// of up to `max_tokens` tokens, stopping after `eos`.
pub fn record(
    model: &Llama,
    drafter: &AnyDrafter,
    arms: &[Arm],
    prompt: &[u32],
    max_tokens: usize,
    eos: Option<u32>,
) -> Result<Recorded> {
    if prompt.is_empty() || max_tokens == 0 {
        return Err(Error::InvalidArgument(
            "trace-arms: an empty prompt or --max-tokens 0".into(),
        ));
    }
    let mut answer = Vec::new();
    crate::decode::generate_ids(
        model,
        prompt,
        max_tokens,
        &crate::decode::GREEDY,
        0,
        eos,
        |t| answer.push(t),
    )?;
    if answer.is_empty() {
        return Err(Error::Format(
            "trace-arms: plain decoding gave no token".into(),
        ));
    }
    let cfg = model.config();
    let fw = 3 * cfg.hidden;
    let cap = Capture {
        layers: drafter.aux_layers(cfg.n_layers)?,
        final_hidden: false,
    };
    // The target's features at every position but the answer's last (never fed).
    let fed: Vec<u32> = prompt
        .iter()
        .chain(&answer[..answer.len() - 1])
        .copied()
        .collect();
    let mut kv = model.new_cache(fed.len());
    let pos: Vec<u32> = (0..fed.len() as u32).collect();
    let feats = model
        .forward(
            Segment {
                kv: &mut kv,
                tokens: &fed,
                positions: &pos,
                mask: Mask::Causal,
                logits: Logits::None,
            },
            &cap,
        )?
        .features;
    let embed = model.embedding();
    let n = answer.len();
    let mut tree = DraftTree::new(TreeParams {
        max_nodes: 4096,
        max_depth: 64,
    })?;
    let mut trace = SequenceTrace {
        len: n,
        arms: Vec::with_capacity(arms.len()),
    };
    for arm in arms {
        if arm.shape == Shape::Plain {
            trace.arms.push(None);
            continue;
        }
        let mut spec = new_speculator(drafter, prompt.len() + n + 1, std::slice::from_ref(arm))?;
        let mut chain = prompt.to_vec();
        chain.push(answer[0]);
        spec.prefill(embed, &feats[..prompt.len() * fw], &chain)?;
        let mut t = ArmTrace::default();
        for p in 1..n {
            DraftSession::draft(&mut spec, embed, &mut tree)?;
            // The target's argmax at a node on the answer's path is the answer's next token; off it,
            // nothing matches.
            let argmax: Vec<i32> = tree
                .depths()
                .iter()
                .map(|&d| answer.get(p + d as usize).map_or(i32::MAX, |&x| x as i32))
                .collect();
            let acc = verify::greedy(&tree, &argmax)?;
            t.accepted.push(acc.n_accepted.min(u8::MAX as u32) as u8);
            t.rows.push(tree.len().min(u16::MAX as usize) as u16);
            let root = prompt.len() + p - 1;
            DraftSession::commit(
                &mut spec,
                embed,
                &[],
                answer[p],
                &feats[root * fw..(root + 1) * fw],
            )?;
            DraftSession::feedback(&mut spec, tree.len() as u32, 1, 0.0)?;
        }
        trace.arms.push(Some(t));
    }
    Ok(Recorded { answer, trace })
}

/// The trace file: method, arm labels, timings and sequences (see [`write_json`]).
pub fn to_json(method: &str, arms: &[Arm], replay: &Replay, ids: &[String], extra: Value) -> Value {
    let seqs: Vec<Value> = replay
        .sequences
        .iter()
        .zip(ids)
        .map(|(s, id)| {
            let acc: Vec<Value> = s
                .arms
                .iter()
                .map(|t| t.as_ref().map_or(json!([]), |t| json!(t.accepted)))
                .collect();
            let rows: Vec<Value> = s
                .arms
                .iter()
                .map(|t| t.as_ref().map_or(json!([]), |t| json!(t.rows)))
                .collect();
            json!({"id": id, "len": s.len, "accepted": acc, "rows": rows})
        })
        .collect();
    json!({
        "method": method,
        "arms": arms.iter().map(arm_label).collect::<Vec<_>>(),
        "draft_seconds": replay.draft_s,
        "verify_seconds": replay.verify_s.iter().map(|&(r, s)| json!([r, s])).collect::<Vec<_>>(),
        "recording": extra,
        "sequences": seqs,
    })
}

/// Reads a trace file written by `specblock trace-arms`: the default arms of its method (their labels
/// must match the file's, in order) and the replay.
pub fn read_json(path: &Path) -> Result<(&'static [Arm], Replay)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Io(format!("trace {}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Format(format!("trace {}: {e}", path.display())))?;
    let bad = |what: &str| Error::Format(format!("trace {}: {what}", path.display()));
    let arms = specblock::drafter::default_arms(v["method"].as_str() == Some("eagle3"));
    let labels: Vec<String> = arms.iter().map(arm_label).collect();
    let file_labels: Vec<&str> = v["arms"]
        .as_array()
        .ok_or_else(|| bad("no \"arms\" array"))?
        .iter()
        .map(|x| x.as_str().unwrap_or_default())
        .collect();
    if file_labels != labels {
        return Err(bad(&format!(
            "arms {file_labels:?} are not this build's {labels:?} (record it again)"
        )));
    }
    let floats =
        |x: &Value| -> Option<Vec<f64>> { x.as_array()?.iter().map(Value::as_f64).collect() };
    let draft_s = floats(&v["draft_seconds"]).ok_or_else(|| bad("\"draft_seconds\""))?;
    let verify_s = v["verify_seconds"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(|p| Some((u32::try_from(p[0].as_u64()?).ok()?, p[1].as_f64()?)))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| bad("\"verify_seconds\" must be [[rows, seconds], ...]"))?;
    let ints = |x: &Value, max: u64| -> Option<Vec<u64>> {
        x.as_array()?
            .iter()
            .map(|e| e.as_u64().filter(|&u| u <= max))
            .collect()
    };
    let mut sequences = Vec::new();
    for (k, s) in v["sequences"]
        .as_array()
        .ok_or_else(|| bad("no \"sequences\" array"))?
        .iter()
        .enumerate()
    {
        let what = format!("sequence {k}: \"len\", and per arm \"accepted\" and \"rows\"");
        let len = s["len"].as_u64().ok_or_else(|| bad(&what))? as usize;
        let (acc, rows) = (s["accepted"].as_array(), s["rows"].as_array());
        let (Some(acc), Some(rows)) = (acc, rows) else {
            return Err(bad(&what));
        };
        if acc.len() != arms.len() || rows.len() != arms.len() {
            return Err(bad(&what));
        }
        let mut traces = Vec::with_capacity(arms.len());
        for ((arm, a), r) in arms.iter().zip(acc).zip(rows) {
            if arm.shape == Shape::Plain {
                traces.push(None);
                continue;
            }
            let a = ints(a, u8::MAX as u64).ok_or_else(|| bad(&what))?;
            let r = ints(r, u16::MAX as u64).ok_or_else(|| bad(&what))?;
            traces.push(Some(ArmTrace {
                accepted: a.into_iter().map(|x| x as u8).collect(),
                rows: r.into_iter().map(|x| x as u16).collect(),
            }));
        }
        sequences.push(SequenceTrace { len, arms: traces });
    }
    if sequences.iter().all(|s| s.len < 2) {
        return Err(bad("no answer longer than one token: nothing to replay"));
    }
    let replay = Replay {
        draft_s,
        verify_s,
        sequences,
    };
    replay.validate(arms).map_err(|e| bad(&format!("{e:?}")))?;
    Ok((arms, replay))
}

/// What `specblock trace-arms` records.
pub struct RecordConfig<'a> {
    /// The prompts' ids and token ids (chat template applied).
    pub prompts: &'a [(String, Vec<u32>)],
    /// `"specblock"` or `"eagle3"`: which default arm ladder.
    pub method: &'a str,
    /// Most answer tokens.
    pub max_tokens: usize,
    /// The end-of-turn token.
    pub eos: Option<u32>,
    /// Stored with the trace (drafter, prompt file, weights).
    pub about: Value,
}

/// Prompts whose real decoding times the arms (see [`measure_timings`]).
const TIMED_PROMPTS: usize = 2;

/// Forwards every call to a drafting session and keeps what it saw: the rows of its drafts and the
/// accepted count of each commit (for timing arms, and for tests that compare real iterations with a
/// trace).
pub struct Observed<'a, S: DraftSession> {
    inner: &'a mut S,
    /// Rows of every draft so far, summed.
    pub rows: usize,
    /// Accepted draft tokens of each commit, in order.
    pub accepted: Vec<usize>,
}

impl<'a, S: DraftSession> Observed<'a, S> {
    /// Observes `inner`.
    pub fn new(inner: &'a mut S) -> Self {
        Observed {
            inner,
            rows: 0,
            accepted: Vec::new(),
        }
    }
}

impl<S: DraftSession> DraftSession for Observed<'_, S> {
    fn prefill(&mut self, e: &[f32], f: &[f32], t: &[u32]) -> LibResult<()> {
        self.inner.prefill(e, f, t)
    }
    fn draft(&mut self, e: &[f32], tree: &mut DraftTree) -> LibResult<()> {
        let r = self.inner.draft(e, tree);
        self.rows += tree.len();
        r
    }
    fn commit(&mut self, e: &[f32], a: &[u32], b: u32, f: &[f32]) -> LibResult<()> {
        self.accepted.push(a.len());
        self.inner.commit(e, a, b, f)
    }
    fn feedback(&mut self, rows: u32, tokens: u32, verify_s: f64) -> LibResult<()> {
        self.inner.feedback(rows, tokens, verify_s)
    }
    fn current_arm(&self) -> Option<usize> {
        self.inner.current_arm()
    }
    fn aux_layers(&self, n: usize) -> LibResult<Vec<usize>> {
        self.inner.aux_layers(n)
    }
}

/// Per arm, drafting seconds per iteration; verification seconds by rows, `(rows, seconds)` ascending.
pub struct Timings {
    /// Drafting, commit and feedback seconds per iteration of each arm (0 for plain decoding).
    pub draft_s: Vec<f64>,
    /// Verification seconds per iteration by rows verified.
    pub verify_s: Vec<(u32, f64)>,
}

/// Each arm's real cost, timed as the benchmark times it: one fixed-shape greedy speculative run per
/// arm over `prompts`. Returns per arm the drafting seconds per iteration (draft, commit, feedback: the
/// commit's cost grows with the tokens accepted, which a trace's one-token commits would miss), and
/// the verification cost by rows: each arm's mean rows (rounded) against its mean verification
/// seconds per iteration (forward, acceptance, KV compaction), averaged where arms share a size.
pub fn measure_timings(
    model: &Llama,
    drafter: &AnyDrafter,
    arms: &[Arm],
    prompts: &[(String, Vec<u32>)],
    max_tokens: usize,
    eos: Option<u32>,
) -> Result<Timings> {
    let max_entries = prompts.iter().map(|p| p.1.len()).max().unwrap_or(0) + max_tokens + 1;
    let mut draft_s = Vec::with_capacity(arms.len());
    let mut by_rows: Vec<(u32, f64, usize)> = Vec::new();
    for arm in arms {
        let mut spec = new_speculator(drafter, max_entries, std::slice::from_ref(arm))?;
        let mut counter = Observed::new(&mut spec);
        let (mut draft, mut verify, mut iterations) = (0.0, 0.0, 0usize);
        for (_, prompt) in prompts {
            let st = crate::speculate::speculative_generate(
                model,
                &mut counter,
                prompt,
                max_tokens,
                &crate::decode::GREEDY,
                0,
                eos,
                |_| {},
            )?;
            draft += st.draft_s;
            verify += st.verify_s;
            iterations += st.iterations;
        }
        let n = iterations.max(1) as f64;
        draft_s.push(if arm.shape == Shape::Plain {
            0.0
        } else {
            draft / n
        });
        let rows = ((counter.rows as f64 / n).round() as u32).max(1);
        match by_rows.iter_mut().find(|e| e.0 == rows) {
            Some(e) => {
                e.1 += verify / n;
                e.2 += 1;
            }
            None => by_rows.push((rows, verify / n, 1)),
        }
    }
    by_rows.sort_by_key(|e| e.0);
    Ok(Timings {
        draft_s,
        verify_s: by_rows
            .into_iter()
            .map(|(r, s, k)| (r, s / k as f64))
            .collect(),
    })
}

/// Records the default arms of `cfg.method` over every prompt, then times each arm in real decoding
/// of the first prompts ([`measure_timings`]); returns the trace file's JSON. Progress goes to stderr.
pub fn record_all(model: &Llama, drafter: &AnyDrafter, cfg: &RecordConfig) -> Result<Value> {
    let arms = specblock::drafter::default_arms(cfg.method == "eagle3");
    let mut replay = Replay {
        draft_s: vec![0.0; arms.len()],
        ..Replay::default()
    };
    let mut ids = Vec::new();
    let started = Instant::now();
    for (k, (id, prompt)) in cfg.prompts.iter().enumerate() {
        let r = record(model, drafter, arms, prompt, cfg.max_tokens, cfg.eos)?;
        eprintln!(
            "trace-arms: {}/{} {id}: {} tokens, {:.0} s so far",
            k + 1,
            cfg.prompts.len(),
            r.answer.len(),
            started.elapsed().as_secs_f64()
        );
        replay.sequences.push(r.trace);
        ids.push(id.clone());
    }
    let timed = &cfg.prompts[..cfg.prompts.len().min(TIMED_PROMPTS)];
    let timings = measure_timings(model, drafter, arms, timed, cfg.max_tokens, cfg.eos)?;
    replay.draft_s = timings.draft_s;
    replay.verify_s = timings.verify_s;
    eprintln!(
        "trace-arms: drafting ms per iteration {:?}; verification ms by rows {:?}",
        replay
            .draft_s
            .iter()
            .map(|s| (s * 1e4).round() / 10.0)
            .collect::<Vec<_>>(),
        replay
            .verify_s
            .iter()
            .map(|&(r, s)| (r, (s * 1e4).round() / 10.0))
            .collect::<Vec<_>>()
    );
    Ok(to_json(cfg.method, arms, &replay, &ids, cfg.about.clone()))
}

/// What `specblock replay-policy` reports: every arm's static speed over the trace, the best one, and
/// the default policy's speed over `seeds` timing-noise seeds, as text.
pub fn replay_report(
    replay: &Replay,
    arms: &[Arm],
    params: specblock::adapt::PolicyParams,
    seeds: u64,
    noise: f64,
) -> Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    let plain = arms.iter().position(|a| a.shape == Shape::Plain);
    let statics: Vec<f64> = (0..arms.len())
        .map(|a| replay.static_throughput(a))
        .collect();
    let (best, best_tps) = replay.best_static();
    let base = plain.map_or(best_tps, |p| statics[p]);
    let tokens: usize = replay
        .sequences
        .iter()
        .map(|s| s.len.saturating_sub(1))
        .sum();
    let _ = writeln!(
        out,
        "{} answers, {tokens} tokens after the first; static arms (tok/s, x plain):",
        replay.sequences.len()
    );
    for (a, tps) in statics.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:<22} {tps:8.1}  {:.3}{}",
            arm_label(&arms[a]),
            tps / base,
            if a == best { "  best" } else { "" }
        );
    }
    let mut ratios = Vec::new();
    let mut shares = vec![0u64; arms.len()];
    for seed in 0..seeds {
        let mut policy = specblock::adapt::Policy::new(arms, params)?;
        let run = replay.run(&mut policy, noise, seed)?;
        let n = run.trace.len();
        ratios.push(run.tokens_per_second(0, n) / best_tps);
        for (s, p) in shares.iter_mut().zip(run.pulls_after(0)) {
            *s += p;
        }
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len().max(1) as f64;
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let total: u64 = shares.iter().sum::<u64>().max(1);
    let mut used: Vec<(usize, u64)> = shares
        .iter()
        .copied()
        .enumerate()
        .filter(|x| x.1 > 0)
        .collect();
    used.sort_by_key(|x| std::cmp::Reverse(x.1));
    let used: Vec<String> = used
        .iter()
        .take(5)
        .map(|&(a, s)| {
            format!(
                "{} {:.0}%",
                arm_label(&arms[a]),
                100.0 * s as f64 / total as f64
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "policy (exploration {}, discount {}), {seeds} seeds, {:.0}% timing noise: {:.3} of the best \
         static (min {:.3}), {:.3}x plain; arms: {}",
        params.exploration,
        params.discount,
        noise * 100.0,
        mean,
        min,
        mean * best_tps / base,
        used.join(", ")
    );
    Ok(out)
}
