//! The `specblock` command line: fetch the model, generate text, benchmark the engine.
//!
//! One [`Command`] per subcommand, each with its own options struct; the groups that several
//! subcommands share ([`ModelArgs`], [`SamplingArgs`], [`MaxTokens`]) are flattened into them. Draft-tree
//! defaults come from the library (`DEFAULT_SPECBLOCK_BUDGET`, `DEFAULT_EAGLE3_*`, [`DraftPolicy`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use specblock::adapt::{Arm, Shape};
use specblock::drafter::eagle3::{
    DEFAULT_EAGLE3_BUDGET, DEFAULT_EAGLE3_DEPTH, DEFAULT_EAGLE3_TOP_K, Eagle3Policy,
};
use specblock::drafter::{DEFAULT_SPECBLOCK_BUDGET, DraftPolicy};
use specblock_engine::bench;
use specblock_engine::error::{Error, Result};
use specblock_engine::evaluate::MethodSpec;
use specblock_engine::generate::{DEFAULT_EAGLE3_DRAFTER, DEFAULT_SPECBLOCK_DRAFTER};
use specblock_engine::gguf::GgufFile;
use specblock_engine::model::{Llama, WeightFormat};
use specblock_engine::speculate::DraftSession;

/// Where `fetch-model` puts the model, and where `--model` looks for it by default.
const MODELS_DIR: &str = "models";

/// `generate`'s user message when `--prompt` is not given.
const DEFAULT_PROMPT: &str = "What is the capital of France? Answer in one sentence.";

/// specblock — SpecBlock speculative decoding, reference engine (SmolLM2-135M-Instruct on the CPU)
#[derive(Debug, Parser)]
#[command(name = "specblock", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// The subcommands (see [`command`] for settings common to all).
#[derive(Debug, Subcommand)]
enum Command {
    /// Put the model (SmolLM2-135M-Instruct Q4_1) under --models-dir, checked by SHA-256
    FetchModel(FetchModelArgs),
    /// Answer a prompt (or every prompt of --prompt-file): plain decoding or speculative
    Generate(GenerateArgs),
    /// Benchmark the engine: read bandwidth, plain decoding, verification cost by tree size
    Bench(BenchArgs),
    /// Drafting time per iteration, SpecBlock vs EAGLE-3, against verification
    BenchDrafter(BenchDrafterArgs),
    /// Self-distilled training data: tokens, loss mask, aux features, final hidden
    Datagen(DatagenArgs),
    /// Plain and speculative methods on a prompt file, one JSON line per run
    ///
    /// Each method on each prompt, back to back; one JSON line per run, appended to --out or printed;
    /// greedy runs check every speculative answer against plain decoding.
    BenchSpec(BenchSpecArgs),
    /// JSON lines {id, prompt} -> {id, prompt_ids} with the model's tokenizer
    ///
    /// JSON lines {id, prompt} -> {id, prompt_ids}: the chat template applied unless --raw, then the
    /// model's tokenizer (for tools without the tokenizer, such as tools/train/datagen_torch.py).
    Tokenize(TokenizeArgs),
    /// Write an untrained SpecBlock drafter, or EAGLE-3 baseline, shaped for the model
    RandomDrafter(RandomDrafterArgs),
    /// Record what every default arm would accept at every position of real greedy answers
    ///
    /// For the draft-shape policy's replay (`specblock replay-policy`): per prompt, plain greedy
    /// decoding, then per arm of the method's default ladder and per answer position the draft tokens
    /// an iteration starting there accepts and the rows it verifies; then each arm's drafting time and
    /// the verification time by rows (run it on an idle machine for those).
    TraceArms(TraceArmsArgs),
    /// Replay the draft-shape policy over a trace from `specblock trace-arms`
    ///
    /// Prints every arm's static tokens/s over the recorded answers, the best static arm in
    /// hindsight, and the default policy's speed relative to it (mean and worst over --seeds runs
    /// with timing noise) and to plain decoding.
    ReplayPolicy(ReplayPolicyArgs),
}

/// `--model` alone (commands that only read the tokenizer).
#[derive(Debug, Args)]
struct ModelPath {
    /// GGUF file
    #[arg(
        long,
        value_name = "PATH",
        env = "SPECBLOCK_MODEL",
        default_value_os_t = Path::new(MODELS_DIR).join(specblock_engine::fetch::MODEL_FILE)
    )]
    model: PathBuf,
}

/// The target model and how it runs: every command that loads the model.
#[derive(Debug, Args)]
struct ModelArgs {
    #[command(flatten)]
    path: ModelPath,
    /// bf16 weights (f32 accumulation) instead of f32, for the target and the drafter
    #[arg(long)]
    bf16: bool,
    /// Threads [default: all cores]
    #[arg(
        long,
        value_name = "N",
        default_value_t = all_cores(),
        hide_default_value = true,
        value_parser = parse_threads
    )]
    threads: usize,
}

fn parse_threads(v: &str) -> std::result::Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be >= 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// New tokens per answer.
#[derive(Debug, Args)]
struct MaxTokens {
    /// Tokens to generate per answer
    #[arg(
        long = "max-tokens",
        visible_alias = "max-new",
        value_name = "N",
        default_value_t = 128
    )]
    max_tokens: usize,
}

/// The target's sampling parameters and seed.
#[derive(Debug, Args)]
struct SamplingArgs {
    /// 0 = greedy
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    temperature: f32,
    /// 0 = off
    #[arg(long, value_name = "K", default_value_t = 0)]
    top_k: i32,
    /// 1 = off
    #[arg(long, value_name = "P", default_value_t = 1.0)]
    top_p: f32,
    /// Sampling seed
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
}

impl SamplingArgs {
    fn sampling(&self) -> specblock::verify::Sampling {
        specblock::verify::Sampling {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
        }
    }
}

/// `--budget auto|N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Budget {
    /// The adaptive draft-shape policy.
    Auto,
    /// A fixed tree of this many nodes (>= 1).
    Fixed(u32),
}

fn parse_budget(v: &str) -> std::result::Result<Budget, String> {
    if v == "auto" {
        return Ok(Budget::Auto);
    }
    match v.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Budget::Fixed(n)),
        _ => Err("auto or a number of nodes >= 1".into()),
    }
}

/// `generate --method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Method {
    /// Plain decoding
    Ar,
    /// SpecBlock speculative decoding
    Specblock,
    /// The EAGLE-3 baseline
    Eagle3,
}

/// `bench-spec --methods`: a comma-separated list of method specs.
#[derive(Clone, Debug, PartialEq)]
struct MethodList(Vec<MethodSpec>, Vec<specblock_engine::generate::Adapt>);

fn parse_methods(v: &str) -> std::result::Result<MethodList, String> {
    MethodSpec::parse_list_with_adapt(v)
        .map(|(m, a)| MethodList(m, a))
        .map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
struct FetchModelArgs {
    /// Where fetch-model puts the model
    #[arg(long, value_name = "DIR", default_value = MODELS_DIR)]
    models_dir: PathBuf,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// User message
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_PROMPT, allow_hyphen_values = true)]
    prompt: String,
    /// Do not apply the chat template
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    max_tokens: MaxTokens,
    /// Every prompt of a JSON-lines file ({id, prompt} or {id, prompt_ids} per line) with one model
    /// load; with --json one result line per prompt
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Plain decoding or a speculative method
    #[arg(long, value_name = "M", value_enum, default_value_t = Method::Ar)]
    method: Method,
    /// Drafter directory: config.json + model.safetensors [default: the committed trained drafter,
    /// models/drafters/specblock or models/drafters/eagle3]
    #[arg(long, value_name = "DIR")]
    drafter: Option<PathBuf>,
    /// auto: the adaptive draft-shape policy picks each iteration's tree, plain decoding included, from
    /// measured speed; N: a fixed tree of N nodes
    #[arg(long, value_name = "auto|N", default_value = "auto", value_parser = parse_budget)]
    budget: Budget,
    /// SpecBlock with --budget N: most block-2 seeds (0 = block 1 only) [default: all]
    #[arg(long, value_name = "S")]
    max_seeds: Option<u32>,
    /// EAGLE-3 with --budget N: tree depth (drafting steps per iteration)
    #[arg(long, value_name = "D", default_value_t = DEFAULT_EAGLE3_DEPTH)]
    eagle_depth: u32,
    /// EAGLE-3 with --budget N: children per node and frontier width
    #[arg(long, value_name = "K", default_value_t = DEFAULT_EAGLE3_TOP_K)]
    eagle_topk: u32,
    /// Print one JSON object (text, tokens, timings, and for the speculative methods: iterations,
    /// mean_accept_length, draft_seconds, verify_seconds; with an adapter: updates, updates_rejected,
    /// update_seconds and the adapter's totals) instead of streaming
    #[arg(long)]
    json: bool,
    /// Online adaptation of the drafter's head from the verifier's feedback (speculative methods): on
    /// = the cost-aware update bandit; always = update at every decision point (a benchmark baseline).
    /// Adaptation persists across the prompts of one --prompt-file run
    #[arg(long, value_name = "on|off|always", value_enum, default_value_t = AdaptArg::Off)]
    adapt: AdaptArg,
    /// Load the drafter-head adapter's weights (safetensors, from --save-adapter) before the first prompt
    #[arg(long, value_name = "FILE")]
    load_adapter: Option<PathBuf>,
    /// Save the drafter-head adapter's weights after the last prompt
    #[arg(long, value_name = "FILE")]
    save_adapter: Option<PathBuf>,
}

/// `--adapt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AdaptArg {
    On,
    Off,
    Always,
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Args)]
struct BenchDrafterArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// SpecBlock drafter directory [default: an untrained drafter shaped like the authors']
    #[arg(long, value_name = "DIR")]
    drafter: Option<PathBuf>,
    /// The first budget compared (then EAGLE-3's default and 32); auto: SpecBlock's default
    #[arg(long, value_name = "auto|N", default_value = "auto", value_parser = parse_budget)]
    budget: Budget,
}

#[derive(Debug, Args)]
struct DatagenArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON-lines training prompts: {prompt} per line, or {messages: [{role, content}, ...]} ending on
    /// a user turn for later turns (e.g. data/prompts/sharegpt_train_turns.jsonl)
    #[arg(
        long,
        value_name = "FILE",
        default_value = "data/prompts/sharegpt_train.jsonl"
    )]
    prompts: PathBuf,
    /// Output directory (shards and manifest; an existing one is continued)
    #[arg(long, value_name = "DIR", default_value = "data/datagen")]
    out: PathBuf,
    /// Sequences decoded together
    #[arg(long, value_name = "B", default_value_t = 8)]
    batch: usize,
    #[command(flatten)]
    max_tokens: MaxTokens,
    /// Stop once this many assistant tokens exist (over all shards)
    #[arg(long, value_name = "T", default_value_t = 500_000)]
    target_tokens: usize,
    /// Seed for temperatures and sampling
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Teacher forcing: feed each line's "answer" (the original reply, e.g. from
    /// data/prompts/sharegpt_train_answers.jsonl) after its prompt in one prefill instead of
    /// generating; the target's features and soft labels are stored as in generation
    #[arg(long)]
    answers: bool,
}

#[derive(Debug, Args)]
struct BenchSpecArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON-lines prompt file ({id, prompt} per line)
    #[arg(long, value_name = "FILE")]
    prompts: PathBuf,
    /// Use at most this many prompts (the first ones); 0 = all
    #[arg(long, value_name = "N", default_value_t = 0)]
    limit: usize,
    /// Comma-separated: ar, eagle3[:BUDGET[:DEPTH[:TOPK]]], specblock[:BUDGET[:SEEDS]], specblock:auto,
    /// eagle3:auto; a speculative method may end in +on or +always: online adaptation of its drafter's
    /// head (the cost-aware bandit, or an update at every decision point), kept across the prompts
    #[arg(long, value_name = "LIST", default_value = "ar,eagle3,specblock", value_parser = parse_methods)]
    methods: MethodList,
    /// Append the JSON lines to this file instead of printing them
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// SpecBlock drafter directory
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SPECBLOCK_DRAFTER)]
    drafter: PathBuf,
    /// EAGLE-3 drafter directory
    #[arg(long, value_name = "DIR", default_value = DEFAULT_EAGLE3_DRAFTER)]
    eagle3_drafter: PathBuf,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    max_tokens: MaxTokens,
}

#[derive(Debug, Args)]
struct TokenizeArgs {
    #[command(flatten)]
    model: ModelPath,
    /// JSON-lines prompt file ({id, prompt} per line)
    #[arg(long, value_name = "FILE")]
    prompts: PathBuf,
    /// Write the JSON lines to this file instead of printing them
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Do not apply the chat template
    #[arg(long)]
    raw: bool,
}

#[derive(Debug, Args)]
struct TraceArmsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON-lines prompt file ({id, prompt} per line)
    #[arg(long, value_name = "FILE")]
    prompts: PathBuf,
    /// Use at most this many prompts (the first ones); 0 = all
    #[arg(long, value_name = "N", default_value_t = 20)]
    limit: usize,
    /// specblock or eagle3: whose default arm ladder
    #[arg(long, value_name = "NAME", default_value = "specblock", value_parser = ["specblock", "eagle3"])]
    method: String,
    /// Drafter directory (default: the committed drafter of --method)
    #[arg(long, value_name = "DIR")]
    drafter: Option<PathBuf>,
    /// Write the trace (JSON) here
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    max_tokens: MaxTokens,
}

#[derive(Debug, Args)]
struct ReplayPolicyArgs {
    /// A trace file from `specblock trace-arms`
    #[arg(long, value_name = "FILE")]
    trace: PathBuf,
    /// Policy runs, each with its own timing noise
    #[arg(long, value_name = "N", default_value_t = 8)]
    seeds: u64,
    /// Relative timing noise (uniform; 0.1 = +-5%)
    #[arg(long, value_name = "X", default_value_t = 0.1)]
    noise: f64,
    /// Take the drafting and verification times from this trace instead (the same method's arms):
    /// acceptance is a property of the drafter and the text, timings of the machine, so a long trace
    /// recorded beside other work can be timed by a short one recorded on an idle machine
    #[arg(long, value_name = "FILE")]
    timings: Option<PathBuf>,
    /// The policy's exploration width (default: the library's)
    #[arg(long, value_name = "C")]
    exploration: Option<f64>,
    /// The policy's per-iteration discount (default: the library's)
    #[arg(long, value_name = "G")]
    discount: Option<f64>,
}

#[derive(Debug, Args)]
struct RandomDrafterArgs {
    /// Output directory (config.json + model.safetensors)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Weight seed
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// The EAGLE-3 baseline instead of a SpecBlock drafter
    #[arg(long)]
    eagle3: bool,
}

/// `specblock tokenize`: prompt texts to token ids with the model's tokenizer and chat template.
fn cmd_tokenize(a: &TokenizeArgs) -> Result<()> {
    use std::io::Write;
    let path = &a.prompts;
    let gguf = GgufFile::open(&a.model.model)?;
    let tok = specblock_engine::tokenizer::Tokenizer::from_gguf(&gguf)?;
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let mut out: Box<dyn Write> = match &a.out {
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
        let ids = if a.raw {
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

fn load_model(o: &ModelArgs) -> Result<(Llama, GgufFile)> {
    let path = &o.path.model;
    if !path.is_file() {
        return Err(Error::Io(format!(
            "model file {} not found: run `specblock fetch-model` (or `make model`) first",
            path.display()
        )));
    }
    let t = std::time::Instant::now();
    let (loaded, gguf) = specblock_engine::load::load_gguf(path)?;
    let format = if o.bf16 {
        WeightFormat::Bf16
    } else {
        WeightFormat::F32
    };
    let m = Llama::new(loaded, format, o.threads)?;
    eprintln!(
        "loaded {} ({:?} weights, {:.0} MB per token, {} threads) in {:.1} s",
        path.display(),
        format,
        m.weight_bytes() as f64 / 1e6,
        o.threads,
        t.elapsed().as_secs_f64()
    );
    Ok((m, gguf))
}

fn cmd_bench(o: &ModelArgs) -> Result<()> {
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
    // The compute floor of N tokens: the matmuls' 2 x parameters FLOP per token at the arithmetic
    // peak of the instruction the bf16 (or f32) matmul runs, measured now like the bandwidth.
    let peak = specblock::cpu::kernels::arithmetic_peak_gflops(o.threads, 300);
    let params = bytes / if o.bf16 { 2.0 } else { 4.0 };
    println!(
        "arithmetic peak: {peak:.0} GFLOP/s ({} threads, {} multiply-adds); {:.2} GFLOP per token",
        o.threads,
        specblock::cpu::Isa::detect().name(),
        2.0 * params / 1e9
    );
    let ns = [1usize, 4, 8, 16, 32, 64];
    let ms = bench::verify_ms(&m, 512, &ns, 7)?;
    // Floor of one forward of N tokens: the weights read once at the measured bandwidth, or the
    // arithmetic at the measured peak, whichever is longer (attention not counted).
    let floor_ms =
        |n: usize| (bytes / (bw * 1e9)).max(n as f64 * 2.0 * params / (peak * 1e9)) * 1e3;
    println!(
        "\n| N | t(N) ms | t(N)/t(1) | floor ms | floor(N)/t(1) |\n|---:|---:|---:|---:|---:|"
    );
    for (n, t) in ns.iter().zip(&ms) {
        println!(
            "| {n} | {t:.1} | {:.2} | {:.1} | {:.2} |",
            t / ms[0],
            floor_ms(*n),
            floor_ms(*n) / ms[0]
        );
    }
    Ok(())
}

/// Drafting cost per iteration, SpecBlock against the EAGLE-3 baseline at the same budgets, beside the
/// verification cost, on untrained drafters shaped like the authors' for this target (or `--drafter DIR`
/// for SpecBlock). Untrained drafters accept almost nothing, so every iteration drafts a full tree: this
/// measures the cost of drafting, not its benefit.
fn cmd_bench_drafter(a: &BenchDrafterArgs) -> Result<()> {
    use specblock::drafter::eagle3::{Eagle3Drafter, Eagle3Session};
    use specblock::drafter::{SpecBlockDrafter, SpecBlockSession};
    let o = &a.model;
    bench::wait_for_idle(Duration::from_secs(120));
    let (m, _) = load_model(o)?;
    let dir = match &a.drafter {
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
    let mut d =
        SpecBlockDrafter::load_dir(&dir, o.threads).map_err(|e| Error::Format(e.to_string()))?;
    let mut e3 =
        Eagle3Drafter::load_dir(&e3_dir, o.threads).map_err(|e| Error::Format(e.to_string()))?;
    if o.bf16 {
        d.use_bf16_weights();
        e3.use_bf16_weights();
    }
    let prompt: Vec<u32> = (0..64).map(|i| 200 + (i * 7919) % 40000).collect();
    println!(
        "# Drafting cost per iteration: SpecBlock (drafter {}) vs EAGLE-3 (depth {}, top-k {}), {} threads, \
         {} weights (target and drafters); medians of 3 runs of 48 tokens after a 64-token prompt",
        dir.display(),
        DEFAULT_EAGLE3_DEPTH,
        DEFAULT_EAGLE3_TOP_K,
        o.threads,
        if o.bf16 { "bf16" } else { "f32" }
    );
    println!(
        "\n| method | budget | iterations | draft ms/iter | verify ms/iter | drafting share |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    let first = match a.budget {
        Budget::Auto => DEFAULT_SPECBLOCK_BUDGET,
        Budget::Fixed(n) => n,
    };
    let mut ratios = Vec::new();
    for budget in [first, DEFAULT_EAGLE3_BUDGET, 32] {
        let sb = bench_row(&m, &prompt, "specblock", budget, &mut || {
            let policy = DraftPolicy {
                budget,
                ..DraftPolicy::default()
            };
            Ok(Box::new(SpecBlockSession::new(&d, 512, policy)?))
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
fn cmd_bench_spec(a: &BenchSpecArgs) -> Result<()> {
    use specblock_engine::evaluate::{SuiteConfig, run_suite};
    let cfg = SuiteConfig {
        prompts: a.prompts.clone(),
        limit: a.limit,
        methods: a.methods.0.clone(),
        adapt: a.methods.1.clone(),
        max_tokens: a.max_tokens.max_tokens,
        sampling: a.sampling.sampling(),
        seed: a.sampling.seed,
        specblock_drafter: a.drafter.clone(),
        eagle3_drafter: a.eagle3_drafter.clone(),
        drafter_bf16: a.model.bf16,
    };
    bench::wait_for_idle(Duration::from_secs(120));
    let (model, gguf) = load_model(&a.model)?;
    let tok = specblock_engine::tokenizer::Tokenizer::from_gguf(&gguf)?;
    let mismatches = match &a.out {
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
    let greedy = specblock_engine::decode::GREEDY;
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

/// `specblock datagen`.
fn cmd_datagen(a: &DatagenArgs) -> Result<()> {
    let (model, gguf) = load_model(&a.model)?;
    let tok = specblock_engine::tokenizer::Tokenizer::from_gguf(&gguf)?;
    let path = &a.prompts;
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Io(format!(
            "{}: {e} (run `make prompts` first)",
            path.display()
        ))
    })?;
    // Each line parsed once (None: not JSON), then each wanted field taken from it.
    let rows: Vec<Option<serde_json::Value>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).ok())
        .collect();
    let field = |name: &'static str| -> Result<Vec<String>> {
        rows.iter()
            .enumerate()
            .map(|(n, row)| {
                row.as_ref()
                    .and_then(|v| v[name].as_str().map(str::to_string))
                    .ok_or_else(|| {
                        Error::Format(format!(
                            "{}: line {} has no \"{name}\" string",
                            path.display(),
                            n + 1
                        ))
                    })
            })
            .collect()
    };
    let cfg = specblock_engine::datagen::DatagenConfig {
        max_new_tokens: a.max_tokens.max_tokens,
        batch: a.batch,
        target_tokens: a.target_tokens,
        shard_sequences: 64,
        seed: a.seed,
    };
    let has_messages = rows
        .first()
        .and_then(|r| r.as_ref())
        .is_some_and(|v| v.get("messages").is_some());
    if has_messages {
        if a.answers {
            return Err(Error::Format(format!(
                "{}: --answers takes single-turn {{prompt, answer}} lines, not messages",
                path.display()
            )));
        }
        let conversations = rows
            .iter()
            .enumerate()
            .map(|(n, row)| {
                row.as_ref().and_then(parse_messages).ok_or_else(|| {
                    Error::Format(format!(
                        "{}: line {} has no \"messages\" array of {{role, content}} strings \
                             ending on a user turn",
                        path.display(),
                        n + 1
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        return specblock_engine::datagen::run_conversations(
            &model,
            &tok,
            &conversations,
            &a.out,
            &cfg,
        );
    }
    let prompts = field("prompt")?;
    if a.answers {
        let answers = field("answer")?;
        specblock_engine::datagen::run_with_answers(&model, &tok, &prompts, &answers, &a.out, &cfg)
    } else {
        specblock_engine::datagen::run(&model, &tok, &prompts, &a.out, &cfg)
    }
}

/// A `messages` array of `{role, content}` strings, non-empty and ending on a user turn.
fn parse_messages(v: &serde_json::Value) -> Option<Vec<specblock_engine::datagen::Message>> {
    let messages = v.get("messages")?.as_array()?;
    let conv: Vec<_> = messages
        .iter()
        .map(|m| {
            Some((
                m["role"].as_str()?.to_string(),
                m["content"].as_str()?.to_string(),
            ))
        })
        .collect::<Option<_>>()?;
    (conv.last()?.0 == "user").then_some(conv)
}

/// The request of `specblock generate`: the method's drafter and arms from --drafter, --budget and the
/// fixed-shape options, every default from the library.
fn generate_request(a: &GenerateArgs) -> specblock_engine::generate::Request {
    use specblock_engine::generate::Method as M;
    let drafter = |default: &str| a.drafter.clone().unwrap_or_else(|| PathBuf::from(default));
    let method = match a.method {
        Method::Ar => M::Ar,
        Method::Specblock => M::SpecBlock {
            drafter: drafter(DEFAULT_SPECBLOCK_DRAFTER),
            arms: match a.budget {
                Budget::Auto => specblock::drafter::default_arms(false).to_vec(),
                Budget::Fixed(budget) => vec![Arm::new(Shape::SpecBlock {
                    budget,
                    max_seeds: a.max_seeds.unwrap_or(DraftPolicy::default().max_seeds),
                })],
            },
        },
        Method::Eagle3 => M::Eagle3 {
            drafter: drafter(DEFAULT_EAGLE3_DRAFTER),
            arms: match a.budget {
                Budget::Auto => specblock::drafter::default_arms(true).to_vec(),
                Budget::Fixed(budget) => vec![Arm::new(Shape::Eagle3 {
                    budget,
                    depth: a.eagle_depth,
                    top_k: a.eagle_topk,
                })],
            },
        },
    };
    specblock_engine::generate::Request {
        prompt: a.prompt.clone(),
        chat: !a.raw,
        max_tokens: a.max_tokens.max_tokens,
        sampling: a.sampling.sampling(),
        seed: a.sampling.seed,
        method,
        json: a.json,
        drafter_bf16: a.model.bf16,
        adapt: match a.adapt {
            AdaptArg::On => specblock_engine::generate::Adapt::On,
            AdaptArg::Off => specblock_engine::generate::Adapt::Off,
            AdaptArg::Always => specblock_engine::generate::Adapt::Always,
        },
        load_adapter: a.load_adapter.clone(),
        save_adapter: a.save_adapter.clone(),
    }
}

/// `specblock generate`.
fn cmd_generate(a: &GenerateArgs) -> Result<()> {
    let (model, gguf) = load_model(&a.model)?;
    let req = generate_request(a);
    match &a.prompt_file {
        Some(path) => specblock_engine::generate::run_prompt_file(&model, &gguf, &req, path),
        None => specblock_engine::generate::run_cli(&model, &gguf, &req),
    }
}

/// `specblock random-drafter`.
fn cmd_random_drafter(a: &RandomDrafterArgs) -> Result<()> {
    if a.eagle3 {
        specblock::drafter::eagle3::write_random_eagle3(&a.out, &random_eagle3_config(), a.seed)
    } else {
        specblock::drafter::write_random_drafter(&a.out, &random_drafter_config(), a.seed)
    }
    .map_err(|e| Error::Io(e.to_string()))?;
    println!("{}", a.out.display());
    Ok(())
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::FetchModel(a) => {
            let p = specblock_engine::fetch::fetch_model(&a.models_dir)?;
            println!("{}", p.display());
            Ok(())
        }
        Command::Generate(a) => cmd_generate(&a),
        Command::Bench(a) => cmd_bench(&a.model),
        Command::BenchDrafter(a) => cmd_bench_drafter(&a),
        Command::Datagen(a) => cmd_datagen(&a),
        Command::BenchSpec(a) => cmd_bench_spec(&a),
        Command::Tokenize(a) => cmd_tokenize(&a),
        Command::RandomDrafter(a) => cmd_random_drafter(&a),
        Command::TraceArms(a) => cmd_trace_arms(&a),
        Command::ReplayPolicy(a) => cmd_replay_policy(&a),
    }
}

/// `specblock trace-arms`.
fn cmd_trace_arms(a: &TraceArmsArgs) -> Result<()> {
    use specblock::drafter::DrafterKind;
    let (kind, default_dir) = match a.method.as_str() {
        "eagle3" => (DrafterKind::Eagle3, DEFAULT_EAGLE3_DRAFTER),
        _ => (DrafterKind::SpecBlock, DEFAULT_SPECBLOCK_DRAFTER),
    };
    let dir = a
        .drafter
        .clone()
        .unwrap_or_else(|| PathBuf::from(default_dir));
    let prompts = specblock_engine::evaluate::read_prompts(&a.prompts, a.limit)?;
    let (model, gguf) = load_model(&a.model)?;
    let tok = specblock_engine::tokenizer::Tokenizer::from_gguf(&gguf)?;
    let drafter = specblock_engine::generate::load_drafter(&model, &dir, kind, a.model.bf16)?;
    let encoded: Vec<(String, Vec<u32>)> = prompts
        .iter()
        .map(|p| {
            let text = tok.apply_chat_template(&[("user", p.text.as_str())], true);
            (p.id.clone(), tok.encode(&text, true))
        })
        .collect();
    let cfg = specblock_engine::trace::RecordConfig {
        prompts: &encoded,
        method: &a.method,
        max_tokens: a.max_tokens.max_tokens,
        eos: tok.eos(),
        about: serde_json::json!({"prompts": a.prompts.display().to_string(),
            "drafter": dir.display().to_string(), "bf16": a.model.bf16,
            "max_tokens": a.max_tokens.max_tokens}),
    };
    let v = specblock_engine::trace::record_all(&model, &drafter, &cfg)?;
    std::fs::write(&a.out, serde_json::to_string(&v).unwrap_or_default())
        .map_err(|e| Error::Io(format!("{}: {e}", a.out.display())))?;
    println!("{}", a.out.display());
    Ok(())
}

/// `specblock replay-policy`.
fn cmd_replay_policy(a: &ReplayPolicyArgs) -> Result<()> {
    let (arms, mut replay) = specblock_engine::trace::read_json(&a.trace)?;
    if let Some(path) = &a.timings {
        let (timed_arms, timed) = specblock_engine::trace::read_json(path)?;
        if timed_arms != arms {
            return Err(Error::InvalidArgument(format!(
                "--timings {}: a trace of the other method's arms",
                path.display()
            )));
        }
        replay.draft_s = timed.draft_s;
        replay.verify_s = timed.verify_s;
    }
    let mut params = specblock::adapt::PolicyParams::default();
    if let Some(c) = a.exploration {
        params.exploration = c;
    }
    if let Some(g) = a.discount {
        params.discount = g;
    }
    if !(a.noise >= 0.0 && a.noise < 2.0) || a.seeds == 0 {
        return Err(Error::InvalidArgument(
            "--noise must be in [0, 2) and --seeds >= 1".into(),
        ));
    }
    print!(
        "{}",
        specblock_engine::trace::replay_report(&replay, arms, params, a.seeds, a.noise)?
    );
    Ok(())
}

/// The command line of [`Cli`], where in every subcommand an option given twice takes its last value
/// and numeric options take negative values (`--top-k -1`), as the hand-written parser before clap did.
fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |s| {
            s.args_override_self(true).allow_negative_numbers(true)
        });
    }
    cmd
}

/// Parses `args` (the program name first). `Err` carries clap's message: a usage error, or the help
/// or version text that was asked for.
fn parse<I, T>(args: I) -> std::result::Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches_mut(&mut matches)
}

fn main() -> ExitCode {
    let cli = match parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; a usage error exits with 1, as every
            // other failure of this program does.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let Some(command) = cli.command else {
        // No subcommand: the overview, as `specblock --help` prints it.
        let _ = command().print_help();
        return ExitCode::SUCCESS;
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("specblock: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(args: &str) -> Command {
        let argv = std::iter::once("specblock").chain(args.split_whitespace());
        match parse(argv) {
            Ok(Cli {
                command: Some(c), ..
            }) => c,
            Ok(_) => panic!("{args:?}: no subcommand"),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn err(args: &str) -> String {
        let argv = std::iter::once("specblock").chain(args.split_whitespace());
        match parse(argv) {
            Ok(c) => panic!("{args:?} parsed: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn generate(args: &str) -> GenerateArgs {
        match ok(&format!("generate {args}")) {
            Command::Generate(a) => a,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn max_new_is_max_tokens() {
        assert_eq!(generate("--max-new 24").max_tokens.max_tokens, 24);
        assert_eq!(generate("--max-tokens 24").max_tokens.max_tokens, 24);
        assert_eq!(generate("").max_tokens.max_tokens, 128);
        // Last one wins, whichever spelling.
        assert_eq!(
            generate("--max-new 5 --max-tokens 6").max_tokens.max_tokens,
            6
        );
        for sub in ["datagen", "bench-spec --prompts p.jsonl"] {
            let a = ok(&format!("{sub} --max-new 9"));
            let n = match a {
                Command::Datagen(a) => a.max_tokens.max_tokens,
                Command::BenchSpec(a) => a.max_tokens.max_tokens,
                c => panic!("{c:?}"),
            };
            assert_eq!(n, 9, "{sub}");
        }
    }

    #[test]
    fn unknown_options_and_commands_are_errors_naming_them() {
        let e = err("generate --bogus");
        assert!(e.contains("--bogus"), "{e}");
        let e = err("frob");
        assert!(e.contains("frob"), "{e}");
        // An option of another subcommand is unknown here.
        let e = err("tokenize --prompts p.jsonl --bf16");
        assert!(e.contains("--bf16"), "{e}");
        let e = err("random-drafter --out d --json");
        assert!(e.contains("--json"), "{e}");
    }

    #[test]
    fn bad_values_are_errors_naming_the_option() {
        for (args, flag) in [
            ("generate --budget 0", "--budget"),
            ("generate --budget x", "--budget"),
            ("generate --threads 0", "--threads"),
            ("generate --max-tokens -3", "--max-tokens"),
            ("generate --method medusa", "--method"),
            ("generate --temperature warm", "--temperature"),
            (
                "bench-spec --prompts p --methods ar,specblock:0",
                "--methods",
            ),
            ("bench-spec --prompts p --methods", "--methods"),
            ("bench-spec", "--prompts"),
            ("tokenize", "--prompts"),
            ("random-drafter", "--out"),
        ] {
            let e = err(args);
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }

    #[test]
    fn defaults_are_the_libraries() {
        let a = generate("");
        let model = std::env::var_os("SPECBLOCK_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new("models").join(specblock_engine::fetch::MODEL_FILE));
        assert_eq!(a.model.path.model, model);
        assert!(!a.model.bf16);
        assert_eq!(a.model.threads, all_cores());
        assert_eq!(a.prompt, DEFAULT_PROMPT);
        assert_eq!(a.method, Method::Ar);
        assert_eq!(a.budget, Budget::Auto);
        assert_eq!(a.eagle_depth, Eagle3Policy::default().depth);
        assert_eq!(a.eagle_topk, Eagle3Policy::default().top_k);
        assert_eq!(a.sampling.sampling().temperature, 0.0);
        assert_eq!(
            (a.sampling.top_k, a.sampling.top_p, a.sampling.seed),
            (0, 1.0, 0)
        );
        // A fixed SpecBlock tree keeps every block-2 seed unless --max-seeds says otherwise.
        let req = generate_request(&generate("--method specblock --budget 7"));
        match req.method {
            specblock_engine::generate::Method::SpecBlock { drafter, arms } => {
                assert_eq!(drafter, Path::new(DEFAULT_SPECBLOCK_DRAFTER));
                assert_eq!(
                    arms,
                    [Arm::new(Shape::SpecBlock {
                        budget: 7,
                        max_seeds: u32::MAX
                    })]
                );
            }
            m => panic!("{m:?}"),
        }
        // --budget auto (the default) is the adaptive policy over the library's default arms.
        for args in ["--method eagle3", "--method eagle3 --budget auto"] {
            match generate_request(&generate(args)).method {
                specblock_engine::generate::Method::Eagle3 { drafter, arms } => {
                    assert_eq!(drafter, Path::new(DEFAULT_EAGLE3_DRAFTER));
                    assert_eq!(arms, specblock::drafter::default_arms(true));
                }
                m => panic!("{m:?}"),
            }
        }
        match ok("bench-spec --prompts p.jsonl") {
            Command::BenchSpec(a) => {
                assert_eq!(
                    a.methods.0,
                    MethodSpec::parse_list("ar,eagle3,specblock").unwrap()
                );
                assert_eq!(a.limit, 0);
                assert_eq!(a.drafter, Path::new(DEFAULT_SPECBLOCK_DRAFTER));
                assert_eq!(a.eagle3_drafter, Path::new(DEFAULT_EAGLE3_DRAFTER));
                assert!(a.out.is_none());
            }
            c => panic!("{c:?}"),
        }
        match ok("datagen") {
            Command::Datagen(a) => {
                assert_eq!(a.prompts, Path::new("data/prompts/sharegpt_train.jsonl"));
                assert_eq!(a.out, Path::new("data/datagen"));
                assert_eq!((a.batch, a.target_tokens, a.seed), (8, 500_000, 0));
            }
            c => panic!("{c:?}"),
        }
        match ok("fetch-model") {
            Command::FetchModel(a) => assert_eq!(a.models_dir, Path::new("models")),
            c => panic!("{c:?}"),
        }
        match ok("bench-drafter") {
            Command::BenchDrafter(a) => assert_eq!(a.budget, Budget::Auto),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn values_keep_their_old_syntax() {
        let a = generate(
            "--model m.gguf --bf16 --threads 3 --raw --prompt-file f.jsonl --temperature 0.7 \
             --top-k -1 --top-p 0.9 --seed 5 --method eagle3 --drafter d --budget 6 --max-seeds 2 \
             --eagle-depth 3 --eagle-topk 2 --json",
        );
        assert_eq!(a.model.path.model, Path::new("m.gguf"));
        assert!(a.model.bf16 && a.raw && a.json);
        assert_eq!(a.model.threads, 3);
        assert_eq!(a.prompt_file.as_deref(), Some(Path::new("f.jsonl")));
        assert_eq!(
            (a.sampling.temperature, a.sampling.top_k, a.sampling.top_p),
            (0.7, -1, 0.9)
        );
        assert_eq!(a.sampling.seed, 5);
        assert_eq!(a.method, Method::Eagle3);
        assert_eq!(a.drafter.as_deref(), Some(Path::new("d")));
        assert_eq!(a.budget, Budget::Fixed(6));
        assert_eq!(a.max_seeds, Some(2));
        assert_eq!((a.eagle_depth, a.eagle_topk), (3, 2));
        // A prompt may start with a hyphen; repeated options take the last value.
        let p = parse([
            "specblock",
            "generate",
            "--prompt",
            "- a list",
            "--bf16",
            "--bf16",
        ])
        .unwrap();
        match p.command {
            Some(Command::Generate(a)) => assert_eq!(a.prompt, "- a list"),
            c => panic!("{c:?}"),
        }
        assert_eq!(generate("--budget 4 --budget auto").budget, Budget::Auto);
        assert_eq!(
            generate("--method specblock --method ar").method,
            Method::Ar
        );
        // `--flag=value` works too.
        assert_eq!(generate("--budget=9").budget, Budget::Fixed(9));
    }

    /// Every command line of the Makefile, README, docs, tools/bench/report.py and tools/llamacpp/check.py.
    #[test]
    fn documented_command_lines_parse() {
        for args in [
            "fetch-model --models-dir models",
            "generate --model M --bf16 --max-tokens 96 --prompt x",
            "generate --model M --bf16 --max-tokens 96 --method specblock --prompt x",
            "generate --model M --bf16 --max-tokens 96 --method eagle3 --prompt x",
            "generate --bf16 --raw --prompt def",
            "generate --bf16 --method specblock --json",
            "generate --bf16 --method specblock --budget 4 --max-seeds 0",
            "generate --bf16 --method specblock --budget 90",
            "generate --bf16 --method eagle3 --budget 59",
            "generate --bf16 --method specblock --prompt-file data/prompts/mtbench.jsonl --max-new 64 --json",
            "generate --method specblock --drafter /tmp/rd --budget 90 --json",
            "generate --model M --method specblock --max-tokens 512 --json --prompt x --bf16 --drafter d",
            "generate --model M --prompt-file p --max-new 64 --method eagle3 --budget 8 --drafter d --json",
            "bench --model M",
            "bench --model M --bf16",
            "bench-drafter --model M --drafter d",
            "bench-drafter --bf16 --budget 32",
            "datagen --model M --prompts p --out data/datagen --batch 16 --bf16 --max-tokens 256 \
             --target-tokens 3000000 --seed 20261206",
            "bench-spec --model M --prompts p --limit 10 --methods ar,eagle3:4:4:1,eagle3:6:3:2,\
             eagle3:59:7:10,specblock:4:0,specblock:8:2,specblock:32,specblock:90 --temperature 0.0 \
             --max-tokens 128 --seed 1 --out o.jsonl --bf16",
            "bench-spec --model M --prompts p --limit 10 --methods ar,eagle3:4:4:1,specblock:4:0,\
             eagle3:auto,specblock:auto --temperature 1.0 --max-tokens 128 --seed 1 --out o --bf16 \
             --drafter d --eagle3-drafter e",
            "tokenize --prompts p --out o",
            "tokenize --model M --prompts p --raw",
            "random-drafter --out /tmp/rd",
            "random-drafter --eagle3 --out /tmp/rde --seed 3",
        ] {
            ok(args);
        }
    }

    #[test]
    fn help_is_per_subcommand() {
        for sub in [
            "fetch-model",
            "generate",
            "bench",
            "bench-drafter",
            "datagen",
            "bench-spec",
            "tokenize",
            "random-drafter",
        ] {
            let e = parse(["specblock", sub, "--help"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{sub}");
            assert!(!e.use_stderr());
            assert!(e.to_string().contains(&format!("specblock {sub}")), "{sub}");
        }
        let help = parse(["specblock", "generate", "-h"])
            .unwrap_err()
            .to_string();
        for flag in [
            "--max-tokens",
            "--max-new",
            "--budget",
            "--eagle-topk",
            "--prompt-file",
        ] {
            assert!(help.contains(flag), "{flag} in {help}");
        }
    }
}
