//! `specblock bench-spec`: plain decoding and both speculative methods over a prompt file, one JSON line per
//! (prompt, method) run. Methods run back to back on each prompt, so slow drift of the machine hits all of
//! them alike and the speedup over `ar` is measured in the same run. Greedy runs also check losslessness:
//! every speculative answer must equal the plain one token for token.

use std::io::Write;
use std::path::{Path, PathBuf};

use specblock::adapt::{Arm, Shape};
use specblock::drafter::eagle3::Eagle3Policy;
use specblock::drafter::{AnyDrafter, DraftPolicy, DrafterKind, Speculator, default_arms};
use specblock::verify::Sampling;

use crate::decode::generate_ids;
use crate::error::{Error, Result};
use crate::generate::{Adapt, load_drafter, new_speculator, policy_json};
use crate::model::Llama;
use crate::speculate::speculative_generate;
use crate::tokenizer::Tokenizer;

/// One method of a run: plain decoding, or a speculative method at a tree budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodSpec {
    /// Plain autoregressive decoding.
    Ar,
    /// EAGLE-3 at `budget` non-root nodes, `depth` drafting steps, `top_k` children per node.
    Eagle3 {
        /// Draft-tree budget.
        budget: u32,
        /// Drafting steps (tree depth).
        depth: u32,
        /// Children per expanded node and frontier width.
        top_k: u32,
    },
    /// SpecBlock at `budget` non-root nodes with at most `max_seeds` block-2 seeds.
    SpecBlock {
        /// Draft-tree budget.
        budget: u32,
        /// Block-2 seeds (0 = block 1 only; `u32::MAX` = the authors' policy, all of them).
        max_seeds: u32,
    },
    /// The adaptive draft-shape policy over the default arms of SpecBlock (`eagle3: false`) or
    /// EAGLE-3 (`specblock:auto`, `eagle3:auto`).
    Auto {
        /// EAGLE-3's arms instead of SpecBlock's.
        eagle3: bool,
    },
}

/// The short form of an arm: `ar`, `specblock:B:S` (`S` omitted for every seed), `eagle3:B:D:K`, with
/// `@C` for a confidence stop.
pub fn arm_label(arm: &Arm) -> String {
    let base = match arm.shape {
        Shape::Plain => "ar".to_string(),
        Shape::SpecBlock {
            budget,
            max_seeds: u32::MAX,
        } => format!("specblock:{budget}"),
        Shape::SpecBlock { budget, max_seeds } => format!("specblock:{budget}:{max_seeds}"),
        Shape::Eagle3 {
            budget,
            depth,
            top_k,
        } => format!("eagle3:{budget}:{depth}:{top_k}"),
    };
    if arm.min_confidence > 0.0 {
        format!("{base}@{}", arm.min_confidence)
    } else {
        base
    }
}

impl MethodSpec {
    /// Parses `ar`, `eagle3[:BUDGET[:DEPTH[:TOPK]]]`, `specblock[:BUDGET[:SEEDS]]` (defaults: the
    /// authors' settings, EAGLE-3 59 nodes at depth 7 and top-k 10, SpecBlock 90 nodes and every
    /// block-2 seed; `specblock:8:0` drafts block 1 only), `specblock:auto` or `eagle3:auto` (the
    /// adaptive policy).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "specblock:auto" => return Ok(Self::Auto { eagle3: false }),
            "eagle3:auto" => return Ok(Self::Auto { eagle3: true }),
            _ => {}
        }
        let mut parts = s.split(':');
        let name = parts.next().unwrap_or_default();
        let nums: Vec<u32> = parts
            .map(|p| {
                p.parse::<u32>().map_err(|_| {
                    Error::InvalidArgument(format!("method {s:?}: {p:?} is not a number"))
                })
            })
            .collect::<Result<_>>()?;
        // Budgets, depths and widths are positive; a seed limit may be 0.
        let positive = match name {
            "specblock" => nums.len().min(1),
            _ => nums.len(),
        };
        if nums[..positive].contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "method {s:?}: budget, depth and top-k must be >= 1"
            )));
        }
        let e3 = Eagle3Policy::default();
        match (name, nums.as_slice()) {
            ("ar", []) => Ok(Self::Ar),
            ("eagle3", n) if n.len() <= 3 => Ok(Self::Eagle3 {
                budget: n.first().copied().unwrap_or(e3.budget),
                depth: n.get(1).copied().unwrap_or(e3.depth),
                top_k: n.get(2).copied().unwrap_or(e3.top_k),
            }),
            ("specblock", n) if n.len() <= 2 => Ok(Self::SpecBlock {
                budget: n.first().copied().unwrap_or(DraftPolicy::default().budget),
                max_seeds: n.get(1).copied().unwrap_or(u32::MAX),
            }),
            _ => Err(Error::InvalidArgument(format!(
                "method {s:?}: expected ar, eagle3[:BUDGET[:DEPTH[:TOPK]]] or specblock[:BUDGET[:SEEDS]]"
            ))),
        }
    }

    /// Parses one method with an optional online-adaptation suffix: `+on` (the cost-aware bandit) or
    /// `+always` (an update at every decision point); none is [`Adapt::Off`].
    pub fn parse_with_adapt(s: &str) -> Result<(Self, Adapt)> {
        let (base, adapt) = match s.split_once('+') {
            None => (s, Adapt::Off),
            Some((b, "on")) => (b, Adapt::On),
            Some((b, "always")) => (b, Adapt::Always),
            Some((b, "off")) => (b, Adapt::Off),
            Some((_, x)) => {
                return Err(Error::InvalidArgument(format!(
                    "method {s:?}: adaptation suffix {x:?}; expected +on, +always or +off"
                )));
            }
        };
        let m = Self::parse(base)?;
        if m == Self::Ar && adapt != Adapt::Off {
            return Err(Error::InvalidArgument(format!(
                "method {s:?}: plain decoding has no drafter to adapt"
            )));
        }
        Ok((m, adapt))
    }

    /// Parses a comma-separated list of methods with optional adaptation suffixes
    /// ([`parse_with_adapt`](Self::parse_with_adapt)).
    pub fn parse_list_with_adapt(s: &str) -> Result<(Vec<Self>, Vec<Adapt>)> {
        let v: Vec<(Self, Adapt)> = s
            .split(',')
            .filter(|x| !x.trim().is_empty())
            .map(|x| Self::parse_with_adapt(x.trim()))
            .collect::<Result<_>>()?;
        if v.is_empty() {
            return Err(Error::InvalidArgument("--methods: empty list".into()));
        }
        Ok(v.into_iter().unzip())
    }

    /// Parses a comma-separated list.
    pub fn parse_list(s: &str) -> Result<Vec<Self>> {
        let v: Vec<Self> = s
            .split(',')
            .filter(|x| !x.trim().is_empty())
            .map(|x| Self::parse(x.trim()))
            .collect::<Result<_>>()?;
        if v.is_empty() {
            return Err(Error::InvalidArgument("--methods: empty list".into()));
        }
        Ok(v)
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Ar => "ar",
            Self::Eagle3 { .. } | Self::Auto { eagle3: true } => "eagle3",
            Self::SpecBlock { .. } | Self::Auto { eagle3: false } => "specblock",
        }
    }

    fn budget(&self) -> Option<u32> {
        match self {
            Self::Ar | Self::Auto { .. } => None,
            Self::Eagle3 { budget, .. } | Self::SpecBlock { budget, .. } => Some(*budget),
        }
    }

    /// The setting as the command line writes it (`specblock:4:0`, `eagle3:auto`, ...).
    pub fn label(&self) -> String {
        match self {
            Self::Auto { eagle3 } => {
                format!("{}:auto", if *eagle3 { "eagle3" } else { "specblock" })
            }
            m => m.arms().first().map_or_else(|| "ar".to_string(), arm_label),
        }
    }

    /// The policy's arms: one for a fixed shape, the default ladder for `auto`, none for `ar`.
    pub fn arms(&self) -> Vec<Arm> {
        match *self {
            Self::Ar => Vec::new(),
            Self::SpecBlock { budget, max_seeds } => {
                vec![Arm::new(Shape::SpecBlock { budget, max_seeds })]
            }
            Self::Eagle3 {
                budget,
                depth,
                top_k,
            } => vec![Arm::new(Shape::Eagle3 {
                budget,
                depth,
                top_k,
            })],
            Self::Auto { eagle3 } => default_arms(eagle3).to_vec(),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct SuiteConfig {
    /// JSON-lines prompt file (`{"id": ..., "prompt": ...}` per line).
    pub prompts: PathBuf,
    /// Use at most this many prompts (the first ones in the file); 0 = all.
    pub limit: usize,
    /// Methods, run in this order on each prompt.
    pub methods: Vec<MethodSpec>,
    /// New tokens per answer.
    pub max_tokens: usize,
    /// Target sampling (temperature 0 = greedy).
    pub sampling: Sampling,
    /// Sampling seed (per prompt: seed + prompt index).
    pub seed: u64,
    /// SpecBlock drafter directory.
    pub specblock_drafter: PathBuf,
    /// EAGLE-3 drafter directory.
    pub eagle3_drafter: PathBuf,
    /// bf16 drafter weights.
    pub drafter_bf16: bool,
    /// Online adaptation per method (same order as `methods`; missing entries are off). An adapted
    /// method keeps its adapter across the prompts of the run.
    pub adapt: Vec<Adapt>,
}

/// One prompt of a prompt file.
#[derive(Clone, Debug)]
pub struct Prompt {
    /// The prompt's id in its dataset.
    pub id: String,
    /// The user message.
    pub text: String,
}

/// Reads a JSON-lines prompt file; every line needs string fields `id` and `prompt`.
pub fn read_prompts(path: &Path, limit: usize) -> Result<Vec<Prompt>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Io(format!("prompt file {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if limit > 0 && out.len() == limit {
            break;
        }
        let bad = |what: &str| Error::Format(format!("{}:{}: {what}", path.display(), i + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let id = v["id"].as_str().ok_or_else(|| bad("no string \"id\""))?;
        let prompt = v["prompt"]
            .as_str()
            .ok_or_else(|| bad("no string \"prompt\""))?;
        out.push(Prompt {
            id: id.to_string(),
            text: prompt.to_string(),
        });
    }
    if out.is_empty() {
        return Err(Error::Format(format!("{}: no prompts", path.display())));
    }
    Ok(out)
}

/// Runs every method on every prompt and writes one JSON line per run to `out`; progress goes to stderr.
/// Returns the number of greedy speculative answers that differed from plain decoding (0 when lossless).
pub fn run_suite(
    model: &Llama,
    tok: &Tokenizer,
    cfg: &SuiteConfig,
    out: &mut dyn Write,
) -> Result<usize> {
    let prompts = read_prompts(&cfg.prompts, cfg.limit)?;
    let dataset = cfg.prompts.file_stem().map_or_else(
        || "prompts".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let wants = |name: &str| cfg.methods.iter().any(|m| m.name() == name);
    let load =
        |name: &str, dir: &std::path::Path, kind: DrafterKind| -> Result<Option<AnyDrafter>> {
            if wants(name) {
                load_drafter(model, dir, kind, cfg.drafter_bf16).map(Some)
            } else {
                Ok(None)
            }
        };
    let sb = load("specblock", &cfg.specblock_drafter, DrafterKind::SpecBlock)?;
    let e3 = load("eagle3", &cfg.eagle3_drafter, DrafterKind::Eagle3)?;
    let eos = tok.eos();
    let greedy = cfg.sampling.temperature == 0.0;
    let mut mismatches = 0usize;
    let started = std::time::Instant::now();
    let encoded: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            tok.encode(
                &tok.apply_chat_template(&[("user", p.text.as_str())], true),
                true,
            )
        })
        .collect();
    // One speculator per method for the whole run: the session restarts with every prompt, an
    // adaptive policy keeps what it learned (a stream of requests).
    let max_entries = encoded.iter().map(Vec::len).max().unwrap_or(0) + cfg.max_tokens + 1;
    let mut speculators: Vec<Option<Speculator>> = cfg
        .methods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let d = match m.name() {
                "specblock" => sb.as_ref().expect("loaded above"),
                "eagle3" => e3.as_ref().expect("loaded above"),
                _ => return Ok(None),
            };
            let mut s = new_speculator(d, max_entries, &m.arms())?;
            let adapt = cfg.adapt.get(i).copied().unwrap_or_default();
            if adapt != Adapt::Off {
                s.attach_adapter(crate::generate::new_adapter(d, adapt, None)?)?;
            }
            Ok(Some(s))
        })
        .collect::<Result<_>>()?;
    for (pi, (p, ids)) in prompts.iter().zip(&encoded).enumerate() {
        let seed = cfg.seed.wrapping_add(pi as u64);
        let mut plain: Option<Vec<u32>> = None;
        for (mi, (m, spec)) in cfg.methods.iter().zip(speculators.iter_mut()).enumerate() {
            let adapt = cfg.adapt.get(mi).copied().unwrap_or_default();
            let setting = match adapt {
                Adapt::Off => m.label(),
                a => format!("{}+{}", m.label(), a.label()),
            };
            let mut rec = serde_json::json!({
                "dataset": dataset, "id": p.id, "method": m.name(), "budget": m.budget(),
                "setting": setting, "temperature": cfg.sampling.temperature,
                "prompt_tokens": ids.len(), "max_tokens": cfg.max_tokens,
            });
            if m.name() != "ar" {
                rec["adapt"] = adapt.label().into();
            }
            let (tokens, prefill_s, decode_s) = match m {
                MethodSpec::Ar => {
                    let st =
                        generate_ids(model, ids, cfg.max_tokens, &cfg.sampling, seed, eos, |_| {})?;
                    (st.tokens, st.prefill_s, st.decode_s)
                }
                m => {
                    if let MethodSpec::Eagle3 { depth, top_k, .. } = m {
                        rec["depth"] = (*depth).into();
                        rec["top_k"] = (*top_k).into();
                    }
                    if let MethodSpec::SpecBlock { max_seeds, .. } = m
                        && *max_seeds != u32::MAX
                    {
                        rec["max_seeds"] = (*max_seeds).into();
                    }
                    let s = spec.as_mut().expect("a speculator per speculative method");
                    let before = policy_json(s);
                    let r = speculate(model, s, ids, cfg, seed, eos, &mut rec)?;
                    if matches!(m, MethodSpec::Auto { .. }) {
                        rec["policy"] = policy_delta(&before, &policy_json(s));
                    }
                    if let Some(a) = s.adapter()
                        && let Ok(a) = a.lock()
                    {
                        rec["adapter"] = crate::generate::adapter_json(&a);
                    }
                    r
                }
            };
            if greedy {
                match (&plain, m) {
                    (None, MethodSpec::Ar) => plain = Some(tokens.clone()),
                    (
                        Some(reference),
                        MethodSpec::Eagle3 { .. }
                        | MethodSpec::SpecBlock { .. }
                        | MethodSpec::Auto { .. },
                    ) => {
                        let same = *reference == tokens;
                        rec["matches_ar"] = same.into();
                        if !same {
                            // The engine's forward is batch-invariant (verification and one-token
                            // decoding give bit-identical logits), so any difference is a bug; the
                            // logit gap at the first differing token helps find it.
                            let (at, gap) = divergence(model, ids, reference, &tokens)?;
                            rec["diverges_at"] = at.into();
                            rec["divergence_logit_gap"] = gap.into();
                            mismatches += 1;
                            eprintln!(
                                "LOSSLESSNESS VIOLATION: {} on {} differs from plain greedy decoding at \
                                 token {at} (plain-forward logit gap between the two tokens: {gap:.4})",
                                m.name(),
                                p.id
                            );
                        }
                    }
                    _ => {}
                }
            }
            rec["new_tokens"] = tokens.len().into();
            rec["prefill_seconds"] = prefill_s.into();
            rec["decode_seconds"] = decode_s.into();
            // The first token comes from the prefill; the rest from decoding.
            rec["tokens_per_second"] = if decode_s > 0.0 {
                (tokens.len().saturating_sub(1) as f64 / decode_s).into()
            } else {
                0.0.into()
            };
            writeln!(out, "{rec}").map_err(|e| Error::Io(e.to_string()))?;
        }
        out.flush().map_err(|e| Error::Io(e.to_string()))?;
        eprintln!(
            "[{dataset} T={}] {}/{} prompts, {:.0} s",
            cfg.sampling.temperature,
            pi + 1,
            prompts.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(mismatches)
}

/// The first index where `spec` departs from `reference`, and how far apart the two tokens' logits
/// are there in a plain causal forward over the prompt and the common prefix.
fn divergence(
    model: &Llama,
    prompt: &[u32],
    reference: &[u32],
    spec: &[u32],
) -> Result<(usize, f32)> {
    use crate::model::{Capture, Logits, Mask, Segment};
    let at = reference
        .iter()
        .zip(spec)
        .position(|(a, b)| a != b)
        .unwrap_or(reference.len().min(spec.len()));
    let (Some(&want), Some(&got)) = (reference.get(at), spec.get(at)) else {
        // One answer is a prefix of the other: a length difference, never a tie.
        return Ok((at, f32::INFINITY));
    };
    let mut seq = prompt.to_vec();
    seq.extend_from_slice(&reference[..at]);
    let positions: Vec<u32> = (0..seq.len() as u32).collect();
    let mut kv = model.new_cache(seq.len());
    let out = model.forward(
        Segment {
            kv: &mut kv,
            tokens: &seq,
            positions: &positions,
            mask: Mask::Causal,
            logits: Logits::Last,
        },
        &Capture::default(),
    )?;
    Ok((
        at,
        (out.logits[want as usize] - out.logits[got as usize]).abs(),
    ))
}

/// The arms used on one prompt: the policy's per-arm iteration counts after the prompt minus before,
/// as `{"arms": {label: iterations}, "iterations": n}`.
fn policy_delta(before: &serde_json::Value, after: &serde_json::Value) -> serde_json::Value {
    let mut arms = serde_json::Map::new();
    let mut total = 0u64;
    if let (Some(a), Some(b)) = (after["arms"].as_array(), before["arms"].as_array()) {
        for (x, y) in a.iter().zip(b) {
            let n = x["pulls"].as_u64().unwrap_or(0) - y["pulls"].as_u64().unwrap_or(0);
            if n > 0 {
                arms.insert(x["arm"].as_str().unwrap_or("?").to_string(), n.into());
                total += n;
            }
        }
    }
    serde_json::json!({"iterations": total, "arms": arms})
}

/// One speculative answer with `session`; adds its fields to `rec` and returns (tokens, prefill
/// seconds, decode seconds).
fn speculate(
    model: &Llama,
    session: &mut Speculator,
    ids: &[u32],
    cfg: &SuiteConfig,
    seed: u64,
    eos: Option<u32>,
    rec: &mut serde_json::Value,
) -> Result<(Vec<u32>, f64, f64)> {
    let st = speculative_generate(
        model,
        session as &mut dyn crate::speculate::DraftSession,
        ids,
        cfg.max_tokens,
        &cfg.sampling,
        seed,
        eos,
        |_| {},
    )?;
    rec["iterations"] = st.iterations.into();
    rec["accepted"] = st.accepted.into();
    rec["draft_seconds"] = st.draft_s.into();
    rec["verify_seconds"] = st.verify_s.into();
    rec["accepted_at_depth"] = st.accepted_at_depth.clone().into();
    Ok((st.tokens, st.prefill_s, st.draft_s + st.verify_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptation_suffixes_parse() {
        let (m, a) = MethodSpec::parse_list_with_adapt(
            "ar,specblock:4:0+on,eagle3:4:4:1+always,specblock:auto",
        )
        .unwrap();
        assert_eq!(a, vec![Adapt::Off, Adapt::On, Adapt::Always, Adapt::Off]);
        assert_eq!(
            m[1],
            MethodSpec::SpecBlock {
                budget: 4,
                max_seeds: 0
            }
        );
        for bad in ["ar+on", "specblock:4+sometimes", "specblock:4+"] {
            assert!(MethodSpec::parse_with_adapt(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn method_lists_parse_with_budgets_and_reject_nonsense() {
        assert_eq!(
            MethodSpec::parse_list("ar, eagle3:16,specblock, eagle3:8:4:3, specblock:8:0").unwrap(),
            vec![
                MethodSpec::Ar,
                MethodSpec::Eagle3 {
                    budget: 16,
                    depth: 7,
                    top_k: 10
                },
                MethodSpec::SpecBlock {
                    budget: 90,
                    max_seeds: u32::MAX
                },
                MethodSpec::Eagle3 {
                    budget: 8,
                    depth: 4,
                    top_k: 3
                },
                MethodSpec::SpecBlock {
                    budget: 8,
                    max_seeds: 0
                },
            ]
        );
        for bad in [
            "",
            "ar:3",
            "eagle3:x",
            "specblock:0",
            "specblock:8:2:1",
            "specblock:0:2",
            "eagle3:8:0:2",
            "eagle3:1:2:3:4",
            "medusa",
        ] {
            assert!(MethodSpec::parse_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prompt_files_need_id_and_prompt() {
        let dir = std::env::temp_dir().join(format!("sb-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.jsonl");
        std::fs::write(
            &good,
            "{\"id\":\"a\",\"prompt\":\"x\"}\n\n{\"id\":\"b\",\"prompt\":\"y\"}\n{\"id\":\"c\",\"prompt\":\"z\"}\n",
        )
        .unwrap();
        let p = read_prompts(&good, 2).unwrap();
        assert_eq!(
            p.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(read_prompts(&good, 0).unwrap().len(), 3);
        let bad = dir.join("bad.jsonl");
        std::fs::write(&bad, "{\"id\":\"a\"}\n").unwrap();
        let e = read_prompts(&bad, 0).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl:1"), "{e}");
        std::fs::write(&bad, "not json\n").unwrap();
        assert!(read_prompts(&bad, 0).is_err());
        std::fs::write(&bad, "\n").unwrap();
        assert!(read_prompts(&bad, 0).is_err());
        assert!(read_prompts(&dir.join("missing.jsonl"), 0).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
