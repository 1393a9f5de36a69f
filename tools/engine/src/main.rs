//! The `specblock` command line: fetch the model, generate text, benchmark the engine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use specblock::adapt::{Arm, Shape};
use specblock_engine::bench;
use specblock_engine::error::{Error, Result};
use specblock_engine::gguf::GgufFile;
use specblock_engine::model::{Llama, WeightFormat};
use specblock_engine::speculate::DraftSession;

const USAGE: &str = "\
specblock — SpecBlock speculative decoding, reference engine (SmolLM2-135M-Instruct on the CPU)

USAGE:
  specblock fetch-model [--models-dir DIR]
  specblock generate [OPTIONS] [--prompt TEXT]
  specblock bench [OPTIONS]
  specblock bench-drafter [--drafter DIR] [--budget N] [--bf16]   (drafting time per iteration,
                    SpecBlock vs EAGLE-3, against verification)
  specblock datagen [--prompts FILE] [--out DIR] [--batch B] [--max-tokens N] [--target-tokens T]
                    (self-distilled training data: tokens, loss mask, aux features, final hidden)
  specblock bench-spec --prompts FILE [--limit N] [--methods ar,eagle3:B:D:K,specblock:B:S,specblock:auto] [--out FILE]
                    [--drafter DIR] [--eagle3-drafter DIR] [--temperature T] [--max-tokens N] [--bf16]
                    (each method on each prompt, back to back; one JSON line per run, appended to
                    --out or printed; greedy runs check every speculative answer against plain decoding)
  specblock tokenize --prompts FILE [--out FILE] [--raw]
                    (JSON lines {id, prompt} -> {id, prompt_ids}: the chat template applied
                    unless --raw, then the model's tokenizer; for tools without the tokenizer, such as
                    tools/train/datagen_torch.py)
  specblock random-drafter --out DIR [--seed S] [--eagle3]
                    (an untrained SpecBlock drafter, or EAGLE-3 baseline, shaped for the model)

OPTIONS:
  --model PATH        GGUF file (default: models/SmolLM2-135M-Instruct.Q4_1.gguf, or $SPECBLOCK_MODEL)
  --models-dir DIR    where fetch-model puts the model (default: models)
  --bf16              bf16 weights (f32 accumulation) instead of f32, for the target and the drafter
  --threads N         threads (default: all cores)
  --prompt TEXT       user message (generate; default: a short question)
  --raw               do not apply the chat template (generate)
  --max-tokens N      tokens to generate (default 128); --max-new N is the same
  --prompt-file FILE  generate: every prompt of a JSON-lines file ({id, prompt} or {id, prompt_ids}
                      per line) with one model load; with --json one result line per prompt
  --temperature T     0 = greedy (default 0)
  --top-k K           0 = off (default 0)
  --top-p P           1 = off (default 1)
  --seed S            sampling seed (default 0)
  --method M          ar (plain decoding, default), specblock or eagle3 (speculative)
  --drafter DIR       drafter directory: config.json + model.safetensors (default: the committed
                      trained drafter, models/drafters/specblock or models/drafters/eagle3)
  --budget auto|N     auto (default): the adaptive draft-shape policy picks each iteration's tree,
                      plain decoding included, from measured speed; N: a fixed tree of N nodes
  --max-seeds S       SpecBlock with --budget N: most block-2 seeds (0 = block 1 only; default all)
  --eagle-depth D     EAGLE-3 with --budget N: tree depth (drafting steps per iteration, default 7)
  --eagle-topk K      EAGLE-3 with --budget N: children per node and frontier width (default 10)
  --json              print one JSON object (text, tokens, timings, and for specblock: iterations,
                      mean_accept_length, draft_seconds, verify_seconds) instead of streaming
";

/// Parsed command-line options.
struct Opts {
    command: String,
    model: PathBuf,
    models_dir: PathBuf,
    bf16: bool,
    threads: usize,
    prompt: String,
    raw: bool,
    max_tokens: usize,
    temperature: f32,
    top_k: i32,
    top_p: f32,
    seed: u64,
    method: String,
    drafter: Option<PathBuf>,
    /// `--budget`: None (the command's default), Some(None) = auto, Some(Some(n)) = fixed.
    budget: Option<Option<u32>>,
    eagle_depth: u32,
    eagle_topk: u32,
    eagle3: bool,
    json: bool,
    out_dir: Option<PathBuf>,
    prompts: Option<PathBuf>,
    batch: usize,
    target_tokens: usize,
    limit: usize,
    methods: String,
    eagle3_drafter: Option<PathBuf>,
    max_seeds: Option<u32>,
    prompt_file: Option<PathBuf>,
}

impl Opts {
    /// The target sampling parameters of --temperature, --top-k and --top-p.
    fn sampling(&self) -> specblock::verify::Sampling {
        specblock::verify::Sampling {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
        }
    }
}

fn parse_args() -> Result<Opts> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let default_model = std::env::var_os("SPECBLOCK_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let mut o = Opts {
        command,
        model: default_model,
        models_dir: PathBuf::from("models"),
        bf16: false,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        prompt: "What is the capital of France? Answer in one sentence.".into(),
        raw: false,
        max_tokens: 128,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
        method: "ar".into(),
        drafter: None,
        budget: None,
        eagle_depth: 7,
        eagle_topk: 10,
        eagle3: false,
        json: false,
        out_dir: None,
        prompts: None,
        batch: 8,
        target_tokens: 500_000,
        limit: 0,
        methods: "ar,eagle3,specblock".into(),
        eagle3_drafter: None,
        max_seeds: None,
        prompt_file: None,
    };
    fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T> {
        let v = v.ok_or_else(|| Error::InvalidArgument(format!("{flag} needs a value")))?;
        v.parse()
            .map_err(|_| Error::InvalidArgument(format!("{flag}: cannot parse {v:?}")))
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => o.model = value::<String>(&a, args.next())?.into(),
            "--models-dir" => o.models_dir = value::<String>(&a, args.next())?.into(),
            "--bf16" => o.bf16 = true,
            "--threads" => o.threads = value(&a, args.next())?,
            "--prompt" => o.prompt = value(&a, args.next())?,
            "--raw" => o.raw = true,
            "--max-tokens" | "--max-new" => o.max_tokens = value(&a, args.next())?,
            "--prompt-file" => o.prompt_file = Some(value::<String>(&a, args.next())?.into()),
            "--temperature" => o.temperature = value(&a, args.next())?,
            "--top-k" => o.top_k = value(&a, args.next())?,
            "--top-p" => o.top_p = value(&a, args.next())?,
            "--seed" => o.seed = value(&a, args.next())?,
            "--method" => o.method = value(&a, args.next())?,
            "--drafter" => o.drafter = Some(value::<String>(&a, args.next())?.into()),
            "--budget" => {
                let v: String = value(&a, args.next())?;
                o.budget = Some(if v == "auto" {
                    None
                } else {
                    match v.parse::<u32>() {
                        Ok(n) if n >= 1 => Some(n),
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "--budget {v:?}: auto or a number of nodes >= 1"
                            )));
                        }
                    }
                });
            }
            "--eagle-depth" => o.eagle_depth = value(&a, args.next())?,
            "--eagle-topk" => o.eagle_topk = value(&a, args.next())?,
            "--json" => o.json = true,
            "--eagle3" => o.eagle3 = true,
            "--out" => o.out_dir = Some(value::<String>(&a, args.next())?.into()),
            "--prompts" => o.prompts = Some(value::<String>(&a, args.next())?.into()),
            "--batch" => o.batch = value(&a, args.next())?,
            "--target-tokens" => o.target_tokens = value(&a, args.next())?,
            "--limit" => o.limit = value(&a, args.next())?,
            "--max-seeds" => o.max_seeds = Some(value(&a, args.next())?),
            "--methods" => o.methods = value(&a, args.next())?,
            "--eagle3-drafter" => o.eagle3_drafter = Some(value::<String>(&a, args.next())?.into()),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown option {other:?} (see --help)"
                )));
            }
        }
    }
    if o.threads == 0 {
        return Err(Error::InvalidArgument("--threads must be >= 1".into()));
    }
    Ok(o)
}

/// `specblock tokenize`: prompt texts to token ids with the model's tokenizer and chat template.
fn cmd_tokenize(o: &Opts) -> Result<()> {
    use std::io::Write;
    let path = o
        .prompts
        .clone()
        .ok_or_else(|| Error::InvalidArgument("tokenize needs --prompts FILE".into()))?;
    let gguf = GgufFile::open(&o.model)?;
    let tok = specblock_engine::tokenizer::Tokenizer::from_gguf(&gguf)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let mut out: Box<dyn Write> = match &o.out_dir {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| Error::Io(format!("{}: {e}", p.display())))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::Format(format!("{}:{}: {e}", path.display(), n + 1)))?;
        let prompt = v["prompt"].as_str().ok_or_else(|| {
            Error::Format(format!(
                "{}:{}: no \"prompt\" string",
                path.display(),
                n + 1
            ))
        })?;
        let ids = if o.raw {
            tok.encode(prompt, true)
        } else {
            tok.encode(&tok.apply_chat_template(&[("user", prompt)], true), true)
        };
        let rec = serde_json::json!({"id": v.get("id").cloned().unwrap_or(serde_json::json!(n)),
            "prompt_ids": ids});
        writeln!(out, "{rec}").map_err(|e| Error::Io(e.to_string()))?;
    }
    out.flush().map_err(|e| Error::Io(e.to_string()))
}

fn load_model(o: &Opts) -> Result<(Llama, GgufFile)> {
    if !o.model.is_file() {
        return Err(Error::Io(format!(
            "model file {} not found: run `specblock fetch-model` (or `make model`) first",
            o.model.display()
        )));
    }
    let t = std::time::Instant::now();
    let (loaded, gguf) = specblock_engine::load::load_gguf(&o.model)?;
    let format = if o.bf16 {
        WeightFormat::Bf16
    } else {
        WeightFormat::F32
    };
    let m = Llama::new(loaded, format, o.threads)?;
    eprintln!(
        "loaded {} ({:?} weights, {:.0} MB per token, {} threads) in {:.1} s",
        o.model.display(),
        format,
        m.weight_bytes() as f64 / 1e6,
        o.threads,
        t.elapsed().as_secs_f64()
    );
    Ok((m, gguf))
}

fn cmd_bench(o: &Opts) -> Result<()> {
    bench::wait_for_idle(Duration::from_secs(120));
    println!("# specblock engine benchmark (idle-gated; medians)");
    let bw = bench::read_bandwidth(o.threads);
    println!(
        "read bandwidth: {bw:.1} GB/s ({} threads, best of 5 passes over 1 GiB)",
        o.threads
    );
    let (m, _) = load_model(o)?;
    let bytes = m.weight_bytes() as f64;
    let floor = bw * 1e9 / bytes;
    let tps = bench::decode_tokens_per_s(&m, 64, 3)?;
    println!(
        "plain decode: {tps:.1} tok/s; bandwidth floor {floor:.1} tok/s ({:.0} MB/token); ratio {:.2}",
        bytes / 1e6,
        tps / floor
    );
    let ns = [1usize, 4, 8, 16, 32, 64];
    let ms = bench::verify_ms(&m, 512, &ns, 7)?;
    println!("\n| N | t(N) ms | t(N)/t(1) |\n|---:|---:|---:|");
    for (n, t) in ns.iter().zip(&ms) {
        println!("| {n} | {t:.1} | {:.2} |", t / ms[0]);
    }
    Ok(())
}

/// Drafting cost per iteration, SpecBlock against the EAGLE-3 baseline at the same budgets, beside the
/// verification cost, on untrained drafters shaped like the authors' for this target (or `--drafter DIR`
/// for SpecBlock). Untrained drafters accept almost nothing, so every iteration drafts a full tree: this
/// measures the cost of drafting, not its benefit.
fn cmd_bench_drafter(o: &Opts) -> Result<()> {
    use specblock::drafter::eagle3::{Eagle3Drafter, Eagle3Policy, Eagle3Session};
    use specblock::drafter::{DraftPolicy, Drafter, Session};
    bench::wait_for_idle(Duration::from_secs(120));
    let (m, _) = load_model(o)?;
    let dir = match &o.drafter {
        Some(d) => d.clone(),
        None => {
            let dir = std::env::temp_dir().join("specblock-bench-drafter");
            specblock::drafter::write_random_drafter(&dir, &random_drafter_config(), 1)
                .map_err(|e| Error::Io(e.to_string()))?;
            dir
        }
    };
    let e3_dir = std::env::temp_dir().join("specblock-bench-eagle3");
    specblock::drafter::eagle3::write_random_eagle3(&e3_dir, &random_eagle3_config(), 1)
        .map_err(|e| Error::Io(e.to_string()))?;
    let mut d = Drafter::load_dir(&dir, o.threads).map_err(|e| Error::Format(e.to_string()))?;
    let mut e3 =
        Eagle3Drafter::load_dir(&e3_dir, o.threads).map_err(|e| Error::Format(e.to_string()))?;
    if o.bf16 {
        d.use_bf16_weights();
        e3.use_bf16_weights();
    }
    let prompt: Vec<u32> = (0..64).map(|i| 200 + (i * 7919) % 40000).collect();
    println!(
        "# Drafting cost per iteration: SpecBlock (drafter {}) vs EAGLE-3 (depth 7, top-k 10), {} threads, \
         {} weights (target and drafters); medians of 3 runs of 48 tokens after a 64-token prompt",
        dir.display(),
        o.threads,
        if o.bf16 { "bf16" } else { "f32" }
    );
    println!(
        "\n| method | budget | iterations | draft ms/iter | verify ms/iter | drafting share |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    let mut ratios = Vec::new();
    for budget in [o.budget.flatten().unwrap_or(90), 59, 32] {
        let sb = bench_row(&m, &prompt, "specblock", budget, &mut || {
            let policy = DraftPolicy {
                budget,
                ..DraftPolicy::default()
            };
            Ok(Box::new(Session::new(&d, 512, policy)?))
        })?;
        let eg = bench_row(&m, &prompt, "eagle3", budget, &mut || {
            let policy = Eagle3Policy {
                budget,
                ..Eagle3Policy::default()
            };
            Ok(Box::new(Eagle3Session::new(&e3, 512, policy)?))
        })?;
        ratios.push((budget, sb / eg));
    }
    println!("\n| budget | SpecBlock / EAGLE-3 drafting time (goal <= 0.50) |\n|---:|---:|");
    for (b, r) in ratios {
        println!("| {b} | {r:.2} |");
    }
    Ok(())
}

/// `bench-spec`: see [`specblock_engine::evaluate`].
fn cmd_bench_spec(o: &Opts) -> Result<()> {
    use specblock_engine::evaluate::{MethodSpec, SuiteConfig, run_suite};
    use specblock_engine::generate::{DEFAULT_EAGLE3_DRAFTER, DEFAULT_SPECBLOCK_DRAFTER};
    let cfg = SuiteConfig {
        prompts: o
            .prompts
            .clone()
            .ok_or_else(|| Error::InvalidArgument("bench-spec needs --prompts FILE".into()))?,
        limit: o.limit,
        methods: MethodSpec::parse_list(&o.methods)?,
        max_tokens: o.max_tokens,
        sampling: o.sampling(),
        seed: o.seed,
        specblock_drafter: o
            .drafter
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SPECBLOCK_DRAFTER)),
        eagle3_drafter: o
            .eagle3_drafter
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_EAGLE3_DRAFTER)),
        drafter_bf16: o.bf16,
    };
    bench::wait_for_idle(Duration::from_secs(120));
    let (model, gguf) = load_model(o)?;
    let tok = specblock_engine::tokenizer::Tokenizer::from_gguf(&gguf)?;
    let mismatches = match &o.out_dir {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            run_suite(&model, &tok, &cfg, &mut f)?
        }
        None => run_suite(&model, &tok, &cfg, &mut std::io::stdout().lock())?,
    };
    if mismatches > 0 {
        return Err(Error::Format(format!(
            "{mismatches} greedy speculative answers differed from plain decoding"
        )));
    }
    Ok(())
}

/// One row of the drafting-cost table: the median of 3 greedy runs of 48 tokens (by draft time);
/// returns draft milliseconds per iteration.
fn bench_row<'a>(
    m: &Llama,
    prompt: &[u32],
    name: &str,
    budget: u32,
    make: &mut dyn FnMut() -> Result<Box<dyn DraftSession + 'a>>,
) -> Result<f64> {
    let greedy = specblock::verify::Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
    };
    let mut rows = Vec::new();
    for _ in 0..3 {
        let mut session = make()?;
        let st = specblock_engine::speculate::speculative_generate(
            m,
            session.as_mut(),
            prompt,
            48,
            &greedy,
            0,
            None,
            |_| {},
        )?;
        let it = st.iterations.max(1) as f64;
        rows.push((st.draft_s / it * 1e3, st.verify_s / it * 1e3, st.iterations));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (dm, vm, it) = rows[1];
    println!(
        "| {name} | {budget} | {it} | {dm:.2} | {vm:.2} | {:.0}% |",
        100.0 * dm / (dm + vm)
    );
    Ok(dm)
}

/// An untrained EAGLE-3 drafter at SmolLM2's width (one layer, 8192-token draft vocabulary).
fn random_eagle3_config() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama",
        "hidden_size": 576, "num_hidden_layers": 1, "num_attention_heads": 9,
        "num_key_value_heads": 3, "head_dim": 64, "intermediate_size": 1536,
        "vocab_size": 49152, "draft_vocab_size": 8192, "target_hidden_size": 576,
        "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
    })
}

/// An untrained drafter with the authors' architecture at SmolLM2's width (2 layers, K = 4).
fn random_drafter_config() -> serde_json::Value {
    serde_json::json!({
        "hidden_size": 576, "num_hidden_layers": 2, "num_attention_heads": 9,
        "num_key_value_heads": 3, "head_dim": 64, "intermediate_size": 1536,
        "vocab_size": 49152, "draft_vocab_size": 8192, "diffspec_draft_token_num": 4,
        "rank_classes": 4, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "aux_layer_ids": [1, 14, 26],
    })
}

fn run() -> Result<()> {
    let o = parse_args()?;
    match o.command.as_str() {
        "fetch-model" => {
            let p = specblock_engine::fetch::fetch_model(&o.models_dir)?;
            println!("{}", p.display());
            Ok(())
        }
        "bench" => cmd_bench(&o),
        "bench-drafter" => cmd_bench_drafter(&o),
        "bench-spec" => cmd_bench_spec(&o),
        "tokenize" => cmd_tokenize(&o),
        "datagen" => {
            let (model, gguf) = load_model(&o)?;
            let tok = specblock_engine::tokenizer::Tokenizer::from_gguf(&gguf)?;
            let path = o
                .prompts
                .clone()
                .unwrap_or_else(|| PathBuf::from("data/prompts/sharegpt_train.jsonl"));
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::Io(format!(
                    "{}: {e} (run `make prompts` first)",
                    path.display()
                ))
            })?;
            let prompts: Vec<String> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["prompt"].as_str().map(str::to_string))
                        .ok_or_else(|| {
                            Error::Format(format!(
                                "{}: a line without a \"prompt\" string",
                                path.display()
                            ))
                        })
                })
                .collect::<Result<_>>()?;
            let cfg = specblock_engine::datagen::DatagenConfig {
                max_new_tokens: o.max_tokens,
                batch: o.batch,
                target_tokens: o.target_tokens,
                shard_sequences: 64,
                seed: o.seed,
            };
            let out = o
                .out_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("data/datagen"));
            specblock_engine::datagen::run(&model, &tok, &prompts, &out, &cfg)
        }
        "generate" => {
            let (model, gguf) = load_model(&o)?;
            let req = specblock_engine::generate::Request {
                prompt: o.prompt.clone(),
                chat: !o.raw,
                max_tokens: o.max_tokens,
                sampling: o.sampling(),
                seed: o.seed,
                method: match o.method.as_str() {
                    "ar" => specblock_engine::generate::Method::Ar,
                    "specblock" => specblock_engine::generate::Method::SpecBlock {
                        drafter: o.drafter.clone().unwrap_or_else(|| {
                            PathBuf::from(specblock_engine::generate::DEFAULT_SPECBLOCK_DRAFTER)
                        }),
                        arms: match o.budget.flatten() {
                            None => specblock::drafter::default_arms(false).to_vec(),
                            Some(budget) => vec![Arm::new(Shape::SpecBlock {
                                budget,
                                max_seeds: o.max_seeds.unwrap_or(u32::MAX),
                            })],
                        },
                    },
                    "eagle3" => specblock_engine::generate::Method::Eagle3 {
                        drafter: o.drafter.clone().unwrap_or_else(|| {
                            PathBuf::from(specblock_engine::generate::DEFAULT_EAGLE3_DRAFTER)
                        }),
                        arms: match o.budget.flatten() {
                            None => specblock::drafter::default_arms(true).to_vec(),
                            Some(budget) => vec![Arm::new(Shape::Eagle3 {
                                budget,
                                depth: o.eagle_depth,
                                top_k: o.eagle_topk,
                            })],
                        },
                    },
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "--method {other:?}: ar, specblock or eagle3"
                        )));
                    }
                },
                json: o.json,
                drafter_bf16: o.bf16,
            };
            match &o.prompt_file {
                Some(path) => {
                    specblock_engine::generate::run_prompt_file(&model, &gguf, &req, path)
                }
                None => specblock_engine::generate::run_cli(&model, &gguf, &req),
            }
        }
        "random-drafter" => {
            let dir = o
                .out_dir
                .clone()
                .ok_or_else(|| Error::InvalidArgument("random-drafter needs --out DIR".into()))?;
            if o.eagle3 {
                specblock::drafter::eagle3::write_random_eagle3(
                    &dir,
                    &random_eagle3_config(),
                    o.seed,
                )
            } else {
                specblock::drafter::write_random_drafter(&dir, &random_drafter_config(), o.seed)
            }
            .map_err(|e| Error::Io(e.to_string()))?;
            println!("{}", dir.display());
            Ok(())
        }
        "" | "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(Error::InvalidArgument(format!(
            "unknown command {other:?} (see --help)"
        ))),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("specblock: {e}");
            ExitCode::FAILURE
        }
    }
}
