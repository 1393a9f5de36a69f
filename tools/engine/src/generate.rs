//! `specblock generate`: a prompt through the chat template, plain (`ar`) or speculative
//! (`specblock`) decoding, streamed text or one JSON line.

use std::path::{Path, PathBuf};

use specblock::adapt::online::{UpdateMode, UpdateParams};
use specblock::adapt::{Arm, PolicyParams};
use specblock::drafter::online::{AdapterParams, OnlineAdapter, SharedAdapter};
use specblock::drafter::{AnyDrafter, DrafterKind, Speculator};
use specblock::verify::Sampling;

use crate::decode::generate_ids;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::Llama;
use crate::speculate::{DraftSession, speculative_generate};
use crate::tokenizer::Tokenizer;

/// One generation request.
#[derive(Clone, Debug)]
pub struct Request {
    /// The user's message (or raw text when `chat` is false).
    pub prompt: String,
    /// Wrap the prompt in the model's chat template (with its default system turn).
    pub chat: bool,
    /// Maximum new tokens.
    pub max_tokens: usize,
    /// Target sampling parameters; temperature 0 is greedy.
    pub sampling: Sampling,
    /// Seed of the counter-based sampler (token `i` uses counter `i`).
    pub seed: u64,
    /// Decoding method.
    pub method: Method,
    /// Print one JSON object instead of streaming text.
    pub json: bool,
    /// Store the drafter's weight matrices as bf16 (as `--bf16` does for the target).
    pub drafter_bf16: bool,
    /// Online adaptation of the drafter's head (speculative methods).
    pub adapt: Adapt,
    /// Load the adapter's weights from this file before the first prompt.
    pub load_adapter: Option<PathBuf>,
    /// Save the adapter's weights to this file after the last prompt.
    pub save_adapter: Option<PathBuf>,
}

/// `--adapt`: whether the drafter's head learns from the verifier's feedback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Adapt {
    /// No adaptation (an adapter loaded with `--load-adapter` is still applied).
    #[default]
    Off,
    /// The cost-aware update bandit ([`UpdateMode::Bandit`]).
    On,
    /// Update at every decision point without replay (the cost-blind baseline, for benchmarks).
    Always,
}

impl Adapt {
    /// The label used in reports.
    pub fn label(self) -> &'static str {
        match self {
            Adapt::Off => "off",
            Adapt::On => "on",
            Adapt::Always => "always",
        }
    }

    fn mode(self) -> UpdateMode {
        match self {
            Adapt::Off => UpdateMode::Off,
            Adapt::On => UpdateMode::Bandit,
            Adapt::Always => UpdateMode::Always,
        }
    }
}

/// How tokens are generated.
#[derive(Clone, Debug)]
pub enum Method {
    /// Plain autoregressive decoding.
    Ar,
    /// SpecBlock speculative decoding with the drafter in `drafter` (config.json + model.safetensors).
    SpecBlock {
        /// Drafter directory.
        drafter: PathBuf,
        /// The draft-shape policy's arms: one for a fixed shape, [`default_arms`](specblock::drafter::default_arms)
        /// for the adaptive default.
        arms: Vec<Arm>,
    },
    /// The EAGLE-3 baseline (one decoder layer, EAGLE-2 dynamic tree) with the drafter in `drafter`.
    Eagle3 {
        /// Drafter directory (config.json + model.safetensors, EAGLE-3 / SpecForge names).
        drafter: PathBuf,
        /// The draft-shape policy's arms.
        arms: Vec<Arm>,
    },
}

/// A speculator (session + draft-shape policy over `arms`) with room for `max_entries`, for a drafter
/// of either kind.
pub fn new_speculator<'d>(
    d: &'d AnyDrafter,
    max_entries: usize,
    arms: &[Arm],
) -> Result<Speculator<'d>> {
    Ok(d.new_speculator(max_entries, arms, PolicyParams::default())?)
}

/// The policy's state: per arm its label, iterations, tokens per second so far and share of the
/// iterations; the current arm; mean accept length.
pub fn policy_json(s: &Speculator) -> serde_json::Value {
    let st = s.stats();
    let total = st.iterations.max(1) as f64;
    let arms: Vec<serde_json::Value> = s
        .policy()
        .arms()
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let m = s.arm_summary(i).unwrap_or_default();
            serde_json::json!({"arm": crate::evaluate::arm_label(a), "pulls": m.pulls,
                "share": m.pulls as f64 / total, "tokens_per_second": m.tokens_per_second(),
                "tokens_per_iteration": m.tokens_per_iteration})
        })
        .collect();
    serde_json::json!({"iterations": st.iterations, "mean_accept_length": st.mean_accept_length,
        "current_arm": crate::evaluate::arm_label(&s.policy().arms()[st.current_arm]), "arms": arms})
}

/// Where `--method specblock` finds its drafter without `--drafter`: the committed trained weights.
pub const DEFAULT_SPECBLOCK_DRAFTER: &str = "models/drafters/specblock";
/// Where `--method eagle3` finds its drafter without `--drafter`: the committed trained baseline.
pub const DEFAULT_EAGLE3_DRAFTER: &str = "models/drafters/eagle3";

fn require_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::Io(format!(
            "no drafter directory at {} (the defaults are relative to the repository root; pass --drafter DIR)",
            dir.display()
        )))
    }
}

fn drafter_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Loads a drafter directory of the kind `kind` and checks that it fits `model`: vocabulary, width,
/// and the target layers its features come from.
pub fn load_drafter(
    model: &Llama,
    dir: &Path,
    kind: DrafterKind,
    bf16: bool,
) -> Result<AnyDrafter> {
    require_dir(dir)?;
    let what = match kind {
        DrafterKind::SpecBlock => "drafter",
        DrafterKind::Eagle3 => "EAGLE-3 drafter",
    };
    let mut d = AnyDrafter::load_dir(dir, drafter_threads())
        .map_err(|e| Error::Format(format!("{what} {}: {e}", dir.display())))?;
    if d.kind() != kind {
        return Err(Error::InvalidArgument(format!(
            "{} holds a {:?} drafter, not a {what} (config.json `architectures`)",
            dir.display(),
            d.kind()
        )));
    }
    if bf16 {
        d.use_bf16_weights();
    }
    let t = model.config();
    if d.vocab() != t.vocab
        || d.feature_width() != 3 * t.hidden
        || (!d.has_own_embedding() && d.hidden() != t.hidden)
    {
        return Err(Error::InvalidArgument(format!(
            "{what} {} (vocab {}, hidden {}, features {}) does not fit the target \
             (vocab {}, hidden {})",
            dir.display(),
            d.vocab(),
            d.hidden(),
            d.feature_width(),
            t.vocab,
            t.hidden
        )));
    }
    d.aux_layers(t.n_layers).map_err(|e| {
        Error::InvalidArgument(format!(
            "{what} {}: {e} (aux_layer_ids {:?}, target layers {})",
            dir.display(),
            d.aux_layer_ids(),
            t.n_layers
        ))
    })?;
    Ok(d)
}

/// Runs speculative generation with `session` and fills the method's fields of the JSON report;
/// returns (tokens, prefill seconds, decode seconds).
#[allow(clippy::too_many_arguments)]
fn speculative_report(
    model: &Llama,
    session: &mut Speculator,
    name: &str,
    prompt: &[u32],
    req: &Request,
    eos: Option<u32>,
    on_token: &mut dyn FnMut(u32),
    report: &mut serde_json::Value,
) -> Result<(Vec<u32>, f64, f64)> {
    let st = speculative_generate(
        model,
        session as &mut dyn DraftSession,
        prompt,
        req.max_tokens,
        &req.sampling,
        req.seed,
        eos,
        on_token,
    )?;
    report["method"] = name.into();
    if session.policy().arms().len() > 1 {
        report["policy"] = policy_json(session);
        report["arm_trace"] = st.arm_trace.clone().into();
    } else {
        report["setting"] = crate::evaluate::arm_label(&session.policy().arms()[0]).into();
    }
    report["iterations"] = st.iterations.into();
    report["mean_accept_length"] = st.mean_accept_length().into();
    report["draft_seconds"] = st.draft_s.into();
    report["verify_seconds"] = st.verify_s.into();
    let it = st.iterations.max(1) as f64;
    report["acceptance_per_depth"] = st
        .accepted_at_depth
        .iter()
        .map(|&n| n as f64 / it)
        .collect::<Vec<f64>>()
        .into();
    Ok((st.tokens, st.prefill_s, st.draft_s + st.verify_s))
}

/// The prompt's token ids for a request.
pub fn prompt_ids(tok: &Tokenizer, req: &Request) -> Vec<u32> {
    if req.chat {
        let text = tok.apply_chat_template(&[("user", req.prompt.as_str())], true);
        tok.encode(&text, true)
    } else {
        tok.encode(&req.prompt, false)
    }
}

/// The loaded drafter of a request's method (none for plain decoding).
struct Loaded(Option<(AnyDrafter, Vec<Arm>)>);

fn load_method(model: &Llama, req: &Request) -> Result<Loaded> {
    let (dir, arms, kind) = match &req.method {
        Method::Ar => return Ok(Loaded(None)),
        Method::SpecBlock { drafter, arms } => (drafter, arms, DrafterKind::SpecBlock),
        Method::Eagle3 { drafter, arms } => (drafter, arms, DrafterKind::Eagle3),
    };
    Ok(Loaded(Some((
        load_drafter(model, dir, kind, req.drafter_bf16)?,
        arms.clone(),
    ))))
}

/// Answers prompt after prompt with one model and, for speculative methods, one speculator (its
/// policy learns across the prompts, as over a stream of requests).
struct Answerer<'d> {
    speculator: Option<(Speculator<'d>, &'static str)>,
    /// The online adapter (with `--adapt on|always` or `--load-adapter`), shared across the prompts.
    adapter: Option<SharedAdapter>,
}

/// A new online adapter for drafter `d` in mode `adapt` (its defaults otherwise), loading the weights
/// at `load` if given, ready to share.
pub fn new_adapter(d: &AnyDrafter, adapt: Adapt, load: Option<&Path>) -> Result<SharedAdapter> {
    let params = AdapterParams {
        update: UpdateParams {
            mode: adapt.mode(),
            ..UpdateParams::default()
        },
        ..AdapterParams::default()
    };
    let mut a = OnlineAdapter::new(d, params)?;
    if let Some(path) = load {
        a.load(path).map_err(|e| Error::Io(e.to_string()))?;
    }
    Ok(a.into_shared())
}

/// The adapter's cumulative statistics as JSON.
pub fn adapter_json(a: &OnlineAdapter) -> serde_json::Value {
    let st = a.stats();
    let u = st.updates;
    serde_json::json!({"decisions": u.decisions, "skipped": u.skipped, "tried": u.tried,
        "adopted": u.adopted, "rejected": u.rejected, "failed": st.failed,
        "update_seconds": u.update_seconds, "expected_saved_seconds": u.expected_saved_seconds,
        "slots_recorded": st.slots_recorded, "slots_drafted": st.slots_drafted,
        "slots_accepted": st.slots_accepted, "replay_rows": u.replay_rows,
        "replay_before_hits": u.replay_before_hits, "replay_after_hits": u.replay_after_hits,
        "version": st.version})
}

impl<'d> Answerer<'d> {
    fn new(loaded: &'d Loaded, max_entries: usize, req: &Request) -> Result<Self> {
        let mut adapter = None;
        let speculator = match &loaded.0 {
            None => None,
            Some((d, arms)) => {
                let mut s = new_speculator(d, max_entries, arms)?;
                if req.adapt != Adapt::Off || req.load_adapter.is_some() {
                    let shared = new_adapter(d, req.adapt, req.load_adapter.as_deref())?;
                    s.attach_adapter(shared.clone())?;
                    adapter = Some(shared);
                }
                Some((
                    s,
                    match d.kind() {
                        DrafterKind::SpecBlock => "specblock",
                        DrafterKind::Eagle3 => "eagle3",
                    },
                ))
            }
        };
        Ok(Answerer {
            speculator,
            adapter,
        })
    }

    /// The adapter's statistics now, if there is one.
    fn adapter_stats(&self) -> Option<specblock::drafter::online::AdapterStats> {
        self.adapter
            .as_ref()
            .and_then(|a| a.lock().ok().map(|a| a.stats()))
    }

    /// Saves the adapter (`--save-adapter`).
    fn save_adapter(&self, req: &Request) -> Result<()> {
        if let (Some(path), Some(a)) = (&req.save_adapter, &self.adapter) {
            let a = a
                .lock()
                .map_err(|_| Error::Io("the adapter's lock is poisoned".into()))?;
            a.save(path).map_err(|e| Error::Io(e.to_string()))?;
        }
        Ok(())
    }

    /// Adds the adapter's fields to a report: this answer's updates (adopted, rejected by replay,
    /// seconds) and the cumulative statistics.
    fn adapter_report(
        &self,
        before: Option<specblock::drafter::online::AdapterStats>,
        req: &Request,
        report: &mut serde_json::Value,
    ) {
        if self.speculator.is_none() {
            return;
        }
        report["adapt"] = req.adapt.label().into();
        let (Some(b), Some(a)) = (before, self.adapter.as_ref()) else {
            return;
        };
        let Ok(a) = a.lock() else { return };
        let now = a.stats();
        report["updates"] = (now.updates.adopted - b.updates.adopted).into();
        report["updates_rejected"] = (now.updates.rejected - b.updates.rejected).into();
        report["update_seconds"] = (now.updates.update_seconds - b.updates.update_seconds).into();
        report["adapter"] = adapter_json(&a);
    }

    /// One answer: (tokens, prefill seconds, decode seconds); the method's fields go into `report`.
    fn answer(
        &mut self,
        model: &Llama,
        prompt: &[u32],
        req: &Request,
        eos: Option<u32>,
        on_token: &mut dyn FnMut(u32),
        report: &mut serde_json::Value,
    ) -> Result<(Vec<u32>, f64, f64)> {
        match &mut self.speculator {
            None => {
                report["method"] = "ar".into();
                let st = generate_ids(
                    model,
                    prompt,
                    req.max_tokens,
                    &req.sampling,
                    req.seed,
                    eos,
                    on_token,
                )?;
                Ok((st.tokens, st.prefill_s, st.decode_s))
            }
            Some((s, name)) => {
                speculative_report(model, s, name, prompt, req, eos, on_token, report)
            }
        }
    }
}

/// One prompt of a `--prompt-file`: `{"id", "prompt"}` (the chat template is applied unless --raw) or
/// `{"id", "prompt_ids"}` (token ids, used as they are).
#[derive(Clone, Debug)]
pub struct FilePrompt {
    /// The prompt's id (a string or a number in the file).
    pub id: serde_json::Value,
    /// Its text, or its token ids.
    pub input: PromptInput,
}

/// What a prompt-file line gives.
#[derive(Clone, Debug)]
pub enum PromptInput {
    /// A user message (the chat template is applied unless --raw).
    Text(String),
    /// Token ids, used as they are.
    Ids(Vec<u32>),
}

/// Reads a `--prompt-file`.
pub fn read_prompt_file(path: &Path) -> Result<Vec<FilePrompt>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Io(format!("prompt file {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| Error::Format(format!("{}:{}: {what}", path.display(), i + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let id = v.get("id").cloned().ok_or_else(|| bad("no \"id\""))?;
        let input = if let Some(p) = v.get("prompt").and_then(|p| p.as_str()) {
            PromptInput::Text(p.to_string())
        } else if let Some(ids) = v.get("prompt_ids").and_then(|p| p.as_array()) {
            PromptInput::Ids(
                ids.iter()
                    .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
                    .collect::<Option<Vec<u32>>>()
                    .filter(|ids| !ids.is_empty())
                    .ok_or_else(|| bad("\"prompt_ids\" must be a non-empty array of token ids"))?,
            )
        } else {
            return Err(bad("needs a string \"prompt\" or an array \"prompt_ids\""));
        };
        out.push(FilePrompt { id, input });
    }
    if out.is_empty() {
        return Err(Error::Format(format!("{}: no prompts", path.display())));
    }
    Ok(out)
}

/// `specblock generate --prompt-file FILE`: every prompt of the file with one model load; with --json
/// one JSON line per prompt (id, method, prompt_ids, output_ids with the end-of-turn token, text,
/// new_tokens, seconds, tokens_per_second, and for speculative methods iterations,
/// mean_accept_length, draft_seconds, verify_seconds, the policy), else each answer's text.
pub fn run_prompt_file(model: &Llama, gguf: &GgufFile, req: &Request, path: &Path) -> Result<()> {
    use std::io::Write;
    let tok = Tokenizer::from_gguf(gguf)?;
    let eos = tok.eos();
    let prompts = read_prompt_file(path)?;
    let encoded: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| match &p.input {
            PromptInput::Text(text) => prompt_ids(
                &tok,
                &Request {
                    prompt: text.clone(),
                    ..req.clone()
                },
            ),
            PromptInput::Ids(ids) => ids.clone(),
        })
        .collect();
    let vocab = model.config().vocab;
    if let Some((i, t)) = encoded
        .iter()
        .enumerate()
        .find_map(|(i, ids)| ids.iter().find(|&&t| t as usize >= vocab).map(|&t| (i, t)))
    {
        return Err(Error::InvalidArgument(format!(
            "{}: prompt {} has token id {t}, outside the vocabulary of {vocab}",
            path.display(),
            i + 1
        )));
    }
    let loaded = load_method(model, req)?;
    let max_entries = encoded.iter().map(Vec::len).max().unwrap_or(0) + req.max_tokens + 1;
    let mut answerer = Answerer::new(&loaded, max_entries, req)?;
    let mut stdout = std::io::stdout().lock();
    for (p, ids) in prompts.iter().zip(&encoded) {
        let mut report = serde_json::json!({"id": p.id, "prompt_ids": ids});
        let before = answerer.adapter_stats();
        let (tokens, prefill_s, decode_s) =
            answerer.answer(model, ids, req, eos, &mut |_| {}, &mut report)?;
        answerer.adapter_report(before, req, &mut report);
        let text_ids: Vec<u32> = tokens.iter().copied().filter(|&t| Some(t) != eos).collect();
        let text = tok.decode(&text_ids)?;
        let n = tokens.len();
        let seconds = prefill_s + decode_s;
        if req.json {
            report["output_ids"] = tokens.clone().into();
            report["text"] = text.into();
            report["new_tokens"] = n.into();
            report["seconds"] = seconds.into();
            report["prefill_seconds"] = prefill_s.into();
            report["decode_seconds"] = decode_s.into();
            report["tokens_per_second"] = if decode_s > 0.0 {
                (n.saturating_sub(1) as f64 / decode_s).into()
            } else {
                0.0.into()
            };
            writeln!(stdout, "{report}").map_err(|e| Error::Io(e.to_string()))?;
        } else {
            writeln!(stdout, "== {}\n{text}\n", p.id).map_err(|e| Error::Io(e.to_string()))?;
        }
        stdout.flush().map_err(|e| Error::Io(e.to_string()))?;
    }
    answerer.save_adapter(req)
}

/// `specblock generate`: streams the answer to stdout and a summary to stderr, or prints one JSON line.
pub fn run_cli(model: &Llama, gguf: &GgufFile, req: &Request) -> Result<()> {
    use std::io::Write;
    let tok = Tokenizer::from_gguf(gguf)?;
    let prompt = prompt_ids(&tok, req);
    let mut stdout = std::io::stdout();
    let mut pending: Vec<u8> = Vec::new();
    let eos = tok.eos();
    let stream = !req.json;
    let mut on_token = |t: u32| {
        if !stream || Some(t) == eos {
            return;
        }
        if let Ok(b) = tok.decode_token_bytes(t) {
            pending.extend_from_slice(b);
        }
        // Print whole UTF-8 characters only; keep a split multi-byte character for the next token.
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => pending.len(),
        };
        let _ = stdout.write_all(&pending[..valid]);
        let _ = stdout.flush();
        pending.drain(..valid);
    };
    let mut report = serde_json::json!({"prompt_tokens": prompt.len()});
    let loaded = load_method(model, req)?;
    let mut answerer = Answerer::new(&loaded, prompt.len() + req.max_tokens + 1, req)?;
    let before = answerer.adapter_stats();
    let (tokens, prefill_s, decode_s) =
        answerer.answer(model, &prompt, req, eos, &mut on_token, &mut report)?;
    answerer.adapter_report(before, req, &mut report);
    answerer.save_adapter(req)?;
    let n = tokens.len();
    let tps = if decode_s > 0.0 {
        n.saturating_sub(1) as f64 / decode_s
    } else {
        0.0
    };
    if req.json {
        let text_ids: Vec<u32> = tokens.iter().copied().filter(|&t| Some(t) != eos).collect();
        report["text"] = tok.decode(&text_ids)?.into();
        report["tokens"] = tokens.clone().into();
        report["new_tokens"] = n.into();
        report["prefill_seconds"] = prefill_s.into();
        report["decode_seconds"] = decode_s.into();
        report["tokens_per_second"] = tps.into();
        println!("{report}");
    } else {
        let _ = stdout.write_all(&pending);
        println!();
        eprintln!(
            "[{} prompt tokens, prefill {prefill_s:.2} s; {n} tokens in {decode_s:.2} s = {tps:.1} tok/s]",
            prompt.len()
        );
        if let Some(m) = report.get("mean_accept_length") {
            eprintln!(
                "[{}: {} iterations, mean accept length {:.2}, drafting {:.0}% of the decode time]",
                report["method"].as_str().unwrap_or_default(),
                report["iterations"],
                m.as_f64().unwrap_or_default(),
                100.0 * report["draft_seconds"].as_f64().unwrap_or_default() / decode_s.max(1e-12)
            );
        }
        if let Some(arms) = report["policy"]["arms"].as_array() {
            let used: Vec<String> = arms
                .iter()
                .filter(|a| a["pulls"].as_u64().unwrap_or(0) > 0)
                .map(|a| {
                    format!(
                        "{} {:.0}%",
                        a["arm"].as_str().unwrap_or("?"),
                        100.0 * a["share"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            eprintln!(
                "[adaptive draft shapes (--budget auto): {}]",
                used.join(", ")
            );
        }
    }
    Ok(())
}
