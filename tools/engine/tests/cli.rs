//! The `specblock` command line. Without the model: help per subcommand, unknown options and bad values
//! rejected with a message naming them and a non-zero exit. On the real model: `generate --prompt-file
//! FILE --max-new N --json` for every method prints one result line per prompt with the documented
//! fields, and the speculative methods (adaptive and fixed) answer exactly what plain decoding answers.

mod support;

use std::path::PathBuf;
use std::process::Command;

fn drafter(name: &str) -> String {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/drafters"
    ))
    .join(name)
    .display()
    .to_string()
}

fn specblock(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_specblock"))
        .args(args)
        .output()
        .expect("runs the specblock binary")
}

#[test]
fn help_lists_subcommands_and_each_subcommand_has_its_own() {
    for args in [&[][..], &["--help"], &["help"]] {
        let out = specblock(args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for sub in [
            "fetch-model",
            "generate",
            "bench",
            "bench-drafter",
            "datagen",
            "bench-spec",
            "tokenize",
            "random-drafter",
            "trace-arms",
            "replay-policy",
        ] {
            assert!(text.contains(sub), "{args:?} lists {sub}: {text}");
        }
    }
    for (sub, flags) in [
        (
            "generate",
            &["--prompt-file", "--max-new", "--budget", "--eagle-depth"][..],
        ),
        (
            "bench-spec",
            &["--methods", "--eagle3-drafter", "--temperature"],
        ),
        ("fetch-model", &["--models-dir"]),
        ("datagen", &["--answers", "--batch", "--target-tokens"]),
        (
            "trace-arms",
            &["--prompts", "--method", "--drafter", "--out"],
        ),
        (
            "replay-policy",
            &["--trace", "--seeds", "--noise", "--timings"],
        ),
    ] {
        let out = specblock(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("specblock {sub}")), "{text}");
        for flag in flags {
            assert!(text.contains(flag), "{sub} --help names {flag}: {text}");
        }
    }
}

#[test]
fn unknown_options_and_bad_values_fail_naming_them() {
    for (args, names) in [
        (&["generate", "--bogus"][..], "--bogus"),
        (&["generate", "--max-new"], "--max-tokens"),
        (&["generate", "--budget", "0"], "--budget"),
        (&["generate", "--method", "medusa"], "medusa"),
        (
            &[
                "bench-spec",
                "--prompts",
                "p.jsonl",
                "--methods",
                "eagle3:8:0:2",
            ],
            "eagle3:8:0:2",
        ),
        (&["tokenize", "--prompts", "p.jsonl", "--json"], "--json"),
        (&["no-such-command"], "no-such-command"),
    ] {
        let out = specblock(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(names), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

fn generate(
    model: &std::path::Path,
    file: &std::path::Path,
    extra: &[&str],
) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_specblock"))
        .args(["generate", "--bf16", "--max-new", "24", "--json"])
        .arg("--model")
        .arg(model)
        .arg("--prompt-file")
        .arg(file)
        .args(extra)
        .output()
        .expect("runs the specblock binary");
    assert!(
        out.status.success(),
        "specblock generate {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn prompt_file_runs_every_method_with_identical_greedy_answers() {
    let Some(model) = support::model_path("prompt_file_runs_every_method") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sb-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prompts.jsonl");
    std::fs::write(
        &file,
        "{\"id\": \"a\", \"prompt\": \"Name three colors of the rainbow.\"}\n\
         {\"id\": 2, \"prompt_ids\": [1, 4093, 198, 52, 2663, 253, 2, 198, 1, 520, 9531, 198]}\n",
    )
    .unwrap();
    let (sb, e3) = (drafter("specblock"), drafter("eagle3"));
    let plain = generate(&model, &file, &["--method", "ar"]);
    assert_eq!(plain.len(), 2);
    assert_eq!(plain[0]["id"], "a");
    assert_eq!(plain[1]["id"], 2);
    assert_eq!(
        plain[1]["prompt_ids"].as_array().unwrap().len(),
        12,
        "prompt_ids used as given"
    );
    for r in &plain {
        for key in [
            "id",
            "method",
            "prompt_ids",
            "output_ids",
            "text",
            "new_tokens",
            "seconds",
            "tokens_per_second",
        ] {
            assert!(r.get(key).is_some(), "ar result lacks {key}: {r}");
        }
        assert_eq!(r["new_tokens"], r["output_ids"].as_array().unwrap().len());
    }
    // --max-tokens after the helper's --max-new 24: the same option, the last value wins.
    let short = generate(&model, &file, &["--method", "ar", "--max-tokens", "5"]);
    for (s, p) in short.iter().zip(&plain) {
        assert_eq!(s["new_tokens"], 5);
        assert_eq!(
            s["output_ids"].as_array().unwrap()[..],
            p["output_ids"].as_array().unwrap()[..5]
        );
    }
    for extra in [
        &["--method", "specblock", "--drafter", &sb][..],
        &[
            "--method",
            "specblock",
            "--drafter",
            &sb,
            "--budget",
            "4",
            "--max-seeds",
            "0",
        ],
        &["--method", "eagle3", "--drafter", &e3],
        &[
            "--method",
            "eagle3",
            "--drafter",
            &e3,
            "--budget",
            "6",
            "--eagle-depth",
            "3",
            "--eagle-topk",
            "2",
        ],
    ] {
        let spec = generate(&model, &file, extra);
        assert_eq!(spec.len(), 2, "{extra:?}");
        for (s, p) in spec.iter().zip(&plain) {
            assert_eq!(s["output_ids"], p["output_ids"], "{extra:?} on {}", p["id"]);
            for key in [
                "iterations",
                "mean_accept_length",
                "draft_seconds",
                "verify_seconds",
            ] {
                assert!(s.get(key).is_some(), "{extra:?} result lacks {key}");
            }
        }
        let adaptive = !extra.contains(&"--budget");
        assert_eq!(
            spec[0].get("policy").is_some(),
            adaptive,
            "{extra:?}: policy summary"
        );
    }
    // Errors are clear: an unknown option, a bad prompt file.
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": 1}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_specblock"))
        .args(["generate", "--prompt-file"])
        .arg(&bad)
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.jsonl:1"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn trace_arms_then_replay_policy() {
    let Some(model) = support::model_path("trace_arms_then_replay_policy") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sb-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(
        &prompts,
        "{\"id\": \"a\", \"prompt\": \"Count from one to ten.\"}\n",
    )
    .unwrap();
    // `specblock trace-arms` with the committed EAGLE-3 drafter, and `specblock replay-policy`.
    let trace_arms = |max_tokens: &str, out: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_specblock"))
            .args(["trace-arms", "--bf16", "--method", "eagle3"])
            .args(["--max-tokens", max_tokens])
            .arg("--drafter")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../models/drafters/eagle3"
            ))
            .arg("--model")
            .arg(&model)
            .arg("--prompts")
            .arg(&prompts)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let replay = |file: &std::path::Path, extra: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_specblock"))
            .args(["replay-policy", "--seeds", "2", "--trace"])
            .arg(file)
            .args(extra)
            .output()
            .unwrap()
    };
    let trace = dir.join("trace.json");
    let out = trace_arms("16", &trace);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    assert_eq!(v["method"], "eagle3");
    assert_eq!(v["arms"][0], "ar");
    let seq = &v["sequences"][0];
    let len = seq["len"].as_u64().unwrap() as usize;
    assert!(len > 1);
    assert_eq!(seq["accepted"][1].as_array().unwrap().len(), len - 1);

    let out = replay(&trace, &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("best") && text.contains("of the best static"),
        "{text}"
    );

    // Timings from another trace: the same acceptance, other seconds (here 10x the verification).
    let mut slow = v.clone();
    for x in slow["verify_seconds"].as_array_mut().unwrap() {
        x[1] = serde_json::json!(x[1].as_f64().unwrap() * 10.0);
    }
    let slow_file = dir.join("slow.json");
    std::fs::write(&slow_file, slow.to_string()).unwrap();
    let out = replay(&trace, &["--timings".as_ref(), slow_file.as_os_str()]);
    assert!(out.status.success());
    let slow_text = String::from_utf8_lossy(&out.stdout);
    let plain_tps = |t: &str| -> f64 {
        let line = t
            .lines()
            .find(|l| l.trim_start().starts_with("ar "))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    // Speeds print with one decimal: allow the rounding of both (0.05 each, the slow one times 10).
    let (fast, slow) = (plain_tps(&text), plain_tps(&slow_text));
    assert!(
        (fast - 10.0 * slow).abs() <= 0.55 + 1e-9,
        "{text}\n{slow_text}"
    );

    // Nothing to record or replay: a message, not a panic.
    let out = trace_arms("0", &dir.join("none.json"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-tokens 0"));
    let mut empty = v.clone();
    empty["sequences"] = serde_json::json!([]);
    let empty_file = dir.join("empty.json");
    std::fs::write(&empty_file, empty.to_string()).unwrap();
    let out = replay(&empty_file, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to replay"));

    // A trace cut short is refused with a message, not a panic.
    let mut bad = v.clone();
    bad["sequences"][0]["accepted"][1]
        .as_array_mut()
        .unwrap()
        .pop();
    let bad_file = dir.join("bad.json");
    std::fs::write(&bad_file, bad.to_string()).unwrap();
    let out = replay(&bad_file, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trace"));
    let _ = std::fs::remove_dir_all(&dir);
}
