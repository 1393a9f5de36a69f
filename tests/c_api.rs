//! Compiles and runs the C side of the test suite against the libraries `cargo test` just built:
//!
//! - `tests/c/test_api.c` (the C API test program), `examples/c/tree_demo.c` and `examples/c/speculate.c`
//!   (the C examples; speculate loads the tiny fixture drafter), with gcc
//!   against the static library and against the shared library, and with clang-14 under
//!   AddressSanitizer + UndefinedBehaviorSanitizer (with LeakSanitizer) against the static library;
//! - the gcc builds again under valgrind memcheck (no errors, every heap block freed);
//! - `tests/c/header_check.c` / `.cpp`: the header as C11 and C++17 with warnings as errors;
//! - `tests/c/test_edges.c`: inputs at the edge of their documented ranges;
//! - `tests/c/test_session.c`: error paths of every drafter, session and online adapter call, on the
//!   SpecBlock and the EAGLE-3 fixture, each given the other for the cross-kind adapter checks (gcc,
//!   clang-14 ASan+UBSan, valgrind); its adapter save / load part (`-DSB_TEST_ADAPTER_FILES`) is the
//!   test `adapter_files`.
//!
//! Build products go to `CARGO_TARGET_TMPDIR`, never into the source tree. A missing tool (gcc, g++,
//! clang-14 with its sanitizer runtime, valgrind) skips its test with a message on stderr, or fails it
//! when `SPECBLOCK_REQUIRE_C_TOOLS=1` (as `make test` sets); `make deps` installs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// System libraries the Rust staticlib needs (see the Makefile's STATIC_LIBS).
const STATIC_LIBS: [&str; 3] = ["-lpthread", "-ldl", "-lm"];
/// Warnings every C and C++ build here treats as errors.
const WARNINGS: [&str; 4] = ["-Wall", "-Wextra", "-Wpedantic", "-Werror"];
/// Fewest checks `test_api.c` must report, so a program that silently skipped its tests cannot pass.
const MIN_API_CHECKS: u64 = 1000;
/// Fewest checks `test_session.c` must report on either fixture.
const MIN_SESSION_CHECKS: u64 = 2400;

const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
const TEST_API: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/test_api.c");
const TEST_EDGES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/test_edges.c");
const TEST_SESSION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/test_session.c");
const HEADER_C: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/header_check.c");
const HEADER_CPP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/header_check.cpp");
const TREE_DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/c/tree_demo.c");
const SPECULATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/c/speculate.c");
/// The tiny reference drafter `examples/c/speculate.c` loads.
const DRAFTER_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tools/engine/tests/fixtures/drafter_tiny"
);

/// The tiny EAGLE-3 fixture: the same toy target shape, so the same example drives it through the same
/// C calls (`sb_drafter_load` picks the kind from config.json).
const EAGLE3_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tools/engine/tests/fixtures/eagle3_tiny"
);

/// Where the libraries are and where build products go.
struct Dirs {
    /// `target/<profile>`: holds `libspecblock.a` and `libspecblock.so`.
    profile: PathBuf,
    /// Scratch directory for compiled C programs.
    out: PathBuf,
}

impl Dirs {
    fn staticlib(&self) -> PathBuf {
        self.profile.join("libspecblock.a")
    }

    fn cdylib(&self) -> PathBuf {
        self.profile.join("libspecblock.so")
    }
}

fn dirs() -> &'static Dirs {
    static DIRS: OnceLock<Dirs> = OnceLock::new();
    DIRS.get_or_init(|| {
        // The test executable is target/<profile>/deps/c_api-<hash>; the libraries are in target/<profile>.
        let exe = std::env::current_exe().expect("current_exe");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("cannot find the profile directory above {}", exe.display()))
            .to_path_buf();
        for lib in ["libspecblock.a", "libspecblock.so"] {
            let path = profile.join(lib);
            assert!(
                path.is_file(),
                "{} not found: the C tests link the library that `cargo test` builds next to the test \
                 executable (crate-type staticlib and cdylib in Cargo.toml); run `cargo build` first",
                path.display()
            );
        }
        assert_fresh(&profile.join("libspecblock.a"));
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_api");
        fs::create_dir_all(&out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
        Dirs { profile, out }
    })
}

/// Fails if `lib` is older than any source file: `cargo test` does not rebuild the staticlib, so a
/// stale one would test old code (`make test` runs `cargo build` first).
fn assert_fresh(lib: &Path) {
    fn newest(dir: &Path, best: &mut std::time::SystemTime) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                newest(&path, best);
            } else if let Ok(m) = path.metadata().and_then(|m| m.modified()) {
                *best = (*best).max(m);
            }
        }
    }
    let mut src = std::time::SystemTime::UNIX_EPOCH;
    newest(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut src);
    let built = lib
        .metadata()
        .and_then(|m| m.modified())
        .expect("library mtime");
    assert!(
        built >= src,
        "{} is older than the sources: run `cargo build` before `cargo test` (make test does)",
        lib.display()
    );
}

/// Whether `tool` runs. If not: fails the test when `SPECBLOCK_REQUIRE_C_TOOLS=1`, else prints a skip
/// notice and returns false.
fn have_tool(tool: &str, package: &str) -> bool {
    let runs = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        missing(tool, package);
    }
    runs
}

fn missing(what: &str, package: &str) {
    if std::env::var_os("SPECBLOCK_REQUIRE_C_TOOLS").is_some_and(|v| v == "1") {
        panic!(
            "{what} not found, and SPECBLOCK_REQUIRE_C_TOOLS=1 requires it: install {package} \
             (`make deps` installs gcc, g++, clang-14, libclang-rt-14-dev and valgrind)"
        );
    }
    eprintln!("skipping: {what} not found (install {package}, or run `make deps`)");
}

/// Everything a process printed, for failure messages.
fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `compiler args... -o out`. On failure returns the command line and the compiler's messages, so a
/// caller can tell a missing sanitizer runtime from a real error.
fn compile(compiler: &str, args: &[String], out: &Path) -> Result<PathBuf, String> {
    let output = Command::new(compiler)
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    if output.status.success() {
        Ok(out.to_path_buf())
    } else {
        Err(describe(
            &format!("{compiler} {} -o {}", args.join(" "), out.display()),
            &output,
        ))
    }
}

fn compile_or_panic(compiler: &str, args: &[String], out: &Path) -> PathBuf {
    compile(compiler, args, out).unwrap_or_else(|e| panic!("compilation failed\n{e}"))
}

/// How a C program links the library.
#[derive(Clone, Copy)]
enum Link {
    Static,
    Shared,
}

/// Compiler arguments to build `source` as C11 against the library.
fn c_args(source: &str, extra: &[&str], link: Link) -> Vec<String> {
    let d = dirs();
    let mut args: Vec<String> = vec!["-std=c11".into(), "-g".into()];
    args.extend(WARNINGS.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("-I{INCLUDE_DIR}"));
    args.push(source.into());
    match link {
        Link::Static => args.push(d.staticlib().display().to_string()),
        Link::Shared => {
            args.push(format!("-L{}", d.profile.display()));
            args.push("-lspecblock".into());
            args.push(format!("-Wl,-rpath,{}", d.profile.display()));
        }
    }
    args.extend(STATIC_LIBS.iter().map(|s| s.to_string()));
    args
}

/// The C programs, built one way.
struct Programs {
    test_api: PathBuf,
    tree_demo: PathBuf,
    speculate: PathBuf,
    test_session: PathBuf,
}

fn build_programs(
    compiler: &str,
    tag: &str,
    extra: &[&str],
    link: Link,
) -> Result<Programs, String> {
    let out = &dirs().out;
    Ok(Programs {
        test_api: compile(
            compiler,
            &c_args(TEST_API, extra, link),
            &out.join(format!("test_api_{tag}")),
        )?,
        tree_demo: compile(
            compiler,
            &c_args(TREE_DEMO, extra, link),
            &out.join(format!("tree_demo_{tag}")),
        )?,
        speculate: compile(
            compiler,
            &c_args(SPECULATE, extra, link),
            &out.join(format!("speculate_{tag}")),
        )?,
        test_session: compile(
            compiler,
            &c_args(TEST_SESSION, extra, link),
            &out.join(format!("test_session_{tag}")),
        )?,
    })
}

/// gcc against the static library: built once, shared by the gcc and valgrind tests.
fn gcc_static() -> Option<&'static Programs> {
    static BUILT: OnceLock<Programs> = OnceLock::new();
    if !have_tool("gcc", "gcc") {
        return None;
    }
    Some(BUILT.get_or_init(|| {
        build_programs("gcc", "gcc_static", &["-O2"], Link::Static)
            .unwrap_or_else(|e| panic!("compilation failed\n{e}"))
    }))
}

fn run(mut cmd: Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

/// Asserts a test program exited 0 and reported "N passed, 0 failed" with N >= `min_checks`.
fn assert_checks_passed(what: &str, out: &Output, min_checks: u64) -> u64 {
    assert!(out.status.success(), "{}", describe(what, out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let parsed = last
        .strip_suffix(" failed")
        .and_then(|s| s.split_once(" passed, "))
        .and_then(|(p, f)| Some((p.parse::<u64>().ok()?, f.parse::<u64>().ok()?)));
    let Some((passed, failed)) = parsed else {
        panic!(
            "last line is not `N passed, M failed`\n{}",
            describe(what, out)
        );
    };
    assert_eq!(failed, 0, "{}", describe(what, out));
    assert!(
        passed >= min_checks,
        "only {passed} checks ran (expected at least {min_checks})\n{}",
        describe(what, out)
    );
    eprintln!("{what}: {last}");
    passed
}

/// The demo's output carries a heading per layout and a deterministic greedy result.
fn assert_demo_output(what: &str, out: &Output) {
    assert!(out.status.success(), "{}", describe(what, out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for heading in [
        "finalized tree: 9 nodes (root + 8), 3 leaves, depth 5",
        "== Nodes",
        "== Token ids, parents, depths, positions",
        "== Dense ancestor mask",
        "== Bit-packed mask rows, prefix_len 0",
        "== Flat packed mask",
        "== Retrieve paths",
        "== First child / next sibling",
        "== llama.cpp sequences",
        "== Greedy verification",
        "accepted 4 draft token(s): cat(node 1) sat(node 3) on(node 5) a(node 7)",
        "bonus token: hat (11)",
        "KV keep-list (tree rows kept, in cache order): 0 1 3 5 7",
        "== Sampling verification (vocab 16, temperature 0.8, top_k 8, top_p 0.95, seed 1234)",
    ] {
        assert!(
            stdout.contains(heading),
            "missing `{heading}`\n{}",
            describe(what, out)
        );
    }
    assert!(out.stderr.is_empty(), "{}", describe(what, out));
}

#[test]
fn gcc_static_test_api() {
    let Some(p) = gcc_static() else { return };
    let out = run(Command::new(&p.test_api), "test_api (gcc, static)");
    assert_checks_passed("test_api (gcc, static)", &out, MIN_API_CHECKS);
}

#[test]
fn gcc_static_tree_demo() {
    let Some(p) = gcc_static() else { return };
    let out = run(Command::new(&p.tree_demo), "tree_demo (gcc, static)");
    assert_demo_output("tree_demo (gcc, static)", &out);
}

/// `examples/c/speculate.c` on the tiny drafter: exits 0 only if speculative output equals plain output.
fn speculate_cmd(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(DRAFTER_DIR);
    cmd
}

fn assert_speculate_output(what: &str, out: &Output) {
    assert!(out.status.success(), "{}", describe(what, out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for pass in [
        "adaptive policy:",
        "fixed 24-node tree:",
        "first-layout params:",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(pass) && l.ends_with("identical to plain greedy decoding")),
            "{pass}\n{}",
            describe(what, out)
        );
    }
}

#[test]
fn gcc_static_speculate() {
    let Some(p) = gcc_static() else { return };
    let out = run(speculate_cmd(&p.speculate), "speculate (gcc, static)");
    assert_speculate_output("speculate (gcc, static)", &out);
    let mut cmd = Command::new(&p.speculate);
    cmd.arg(EAGLE3_DIR);
    let out = run(cmd, "speculate with EAGLE-3 (gcc, static)");
    assert_speculate_output("speculate with EAGLE-3 (gcc, static)", &out);
}

/// `tests/c/test_session.c`'s arguments for the fixture `dir`: the fixture, then the fixture of the
/// other kind (for the cross-kind adapter checks).
fn session_args(dir: &str) -> [&str; 2] {
    [
        dir,
        if dir == DRAFTER_DIR {
            EAGLE3_DIR
        } else {
            DRAFTER_DIR
        },
    ]
}

/// `tests/c/test_session.c` on both fixture drafters.
#[test]
fn gcc_static_test_session() {
    let Some(p) = gcc_static() else { return };
    for (dir, what) in [
        (DRAFTER_DIR, "test_session (gcc, static)"),
        (EAGLE3_DIR, "test_session with EAGLE-3 (gcc, static)"),
    ] {
        let mut cmd = Command::new(&p.test_session);
        cmd.args(session_args(dir));
        let out = run(cmd, what);
        assert_checks_passed(what, &out, MIN_SESSION_CHECKS);
    }
}

#[test]
fn gcc_shared_library() {
    let Some(stat) = gcc_static() else { return };
    let p = build_programs("gcc", "gcc_shared", &["-O2"], Link::Shared)
        .unwrap_or_else(|e| panic!("compilation failed\n{e}"));

    // The binaries load our libspecblock.so (glibc's loader lists dependencies, as ldd does).
    let want = fs::canonicalize(dirs().cdylib()).expect("canonicalize libspecblock.so");
    for bin in [&p.test_api, &p.tree_demo] {
        let mut cmd = Command::new(bin);
        cmd.env("LD_TRACE_LOADED_OBJECTS", "1");
        let out = run(cmd, "loader trace");
        let listing = String::from_utf8_lossy(&out.stdout);
        let loaded = listing
            .lines()
            .filter(|l| l.contains("libspecblock.so"))
            .filter_map(|l| l.split("=>").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .any(|path| fs::canonicalize(path).is_ok_and(|p| p == want));
        assert!(
            loaded,
            "{} does not load {}:\n{listing}",
            bin.display(),
            want.display()
        );
    }

    let out = run(Command::new(&p.test_api), "test_api (gcc, shared)");
    assert_checks_passed("test_api (gcc, shared)", &out, MIN_API_CHECKS);
    let shared = run(Command::new(&p.tree_demo), "tree_demo (gcc, shared)");
    assert_demo_output("tree_demo (gcc, shared)", &shared);
    // Same inputs and seed, same output, however the library is linked.
    let static_out = run(Command::new(&stat.tree_demo), "tree_demo (gcc, static)");
    assert_eq!(
        String::from_utf8_lossy(&shared.stdout),
        String::from_utf8_lossy(&static_out.stdout),
        "tree_demo prints different results with the shared and the static library"
    );
}

/// Text a sanitizer prints when it finds something.
const SANITIZER_REPORTS: [&str; 5] = [
    "AddressSanitizer",
    "LeakSanitizer",
    "UndefinedBehaviorSanitizer",
    "runtime error:",
    "SUMMARY:",
];

#[test]
fn clang_asan_ubsan() {
    let Some(stat) = gcc_static() else { return };
    if !have_tool("clang-14", "clang-14") {
        return;
    }
    let flags = [
        "-O1",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
    ];
    let p = match build_programs("clang-14", "clang_asan", &flags, Link::Static) {
        Ok(p) => p,
        // clang-14 without its sanitizer runtimes fails to link libclang_rt.asan / ubsan.
        Err(e) if e.contains("libclang_rt") => {
            missing("the clang-14 sanitizer runtime", "libclang-rt-14-dev");
            return;
        }
        Err(e) => panic!("compilation failed\n{e}"),
    };
    let sanitized = |bin: &Path| {
        let mut cmd = Command::new(bin);
        cmd.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
            .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1");
        cmd
    };
    let check_clean = |what: &str, out: &Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        for report in SANITIZER_REPORTS {
            assert!(
                !stderr.contains(report),
                "sanitizer report (`{report}`)\n{}",
                describe(what, out)
            );
        }
    };

    let what = "test_api (clang-14, ASan+UBSan)";
    let out = run(sanitized(&p.test_api), what);
    check_clean(what, &out);
    assert_checks_passed(what, &out, MIN_API_CHECKS);

    let what = "tree_demo (clang-14, ASan+UBSan)";
    let out = run(sanitized(&p.tree_demo), what);
    check_clean(what, &out);
    assert_demo_output(what, &out);
    let gcc_out = run(Command::new(&stat.tree_demo), "tree_demo (gcc, static)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&gcc_out.stdout),
        "tree_demo prints different results when built with clang and sanitizers"
    );

    for (dir, what) in [
        (DRAFTER_DIR, "speculate (clang-14, ASan+UBSan)"),
        (EAGLE3_DIR, "speculate with EAGLE-3 (clang-14, ASan+UBSan)"),
    ] {
        let mut cmd = sanitized(&p.speculate);
        cmd.arg(dir);
        let out = run(cmd, what);
        check_clean(what, &out);
        assert_speculate_output(what, &out);
    }

    for (dir, what) in [
        (DRAFTER_DIR, "test_session (clang-14, ASan+UBSan)"),
        (
            EAGLE3_DIR,
            "test_session with EAGLE-3 (clang-14, ASan+UBSan)",
        ),
    ] {
        let mut cmd = sanitized(&p.test_session);
        cmd.args(session_args(dir));
        let out = run(cmd, what);
        check_clean(what, &out);
        assert_checks_passed(what, &out, MIN_SESSION_CHECKS);
    }
}

#[test]
fn valgrind_memcheck() {
    let Some(p) = gcc_static() else { return };
    if !have_tool("valgrind", "valgrind") {
        return;
    }
    // The six runs take 1-80 s each under valgrind: run them side by side, then check each.
    let runs = [
        (&p.test_api, None, "test_api under valgrind"),
        (&p.tree_demo, None, "tree_demo under valgrind"),
        (&p.speculate, Some(DRAFTER_DIR), "speculate under valgrind"),
        (
            &p.speculate,
            Some(EAGLE3_DIR),
            "speculate with EAGLE-3 under valgrind",
        ),
        (
            &p.test_session,
            Some(DRAFTER_DIR),
            "test_session under valgrind",
        ),
        (
            &p.test_session,
            Some(EAGLE3_DIR),
            "test_session with EAGLE-3 under valgrind",
        ),
    ];
    let children: Vec<_> = runs
        .iter()
        .map(|&(bin, arg, what)| {
            let mut cmd = Command::new("valgrind");
            cmd.args([
                "--error-exitcode=97",
                "--leak-check=full",
                "--errors-for-leak-kinds=all",
                "--show-leak-kinds=all",
            ])
            .arg(bin)
            .args(arg);
            if what.starts_with("test_session")
                && let Some(dir) = arg
            {
                cmd.arg(session_args(dir)[1]);
            }
            let child = cmd
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
            (child, what)
        })
        .collect();
    for (child, what) in children {
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}", describe(what, &out));
        assert!(
            stderr.contains("ERROR SUMMARY: 0 errors from 0 contexts"),
            "{}",
            describe(what, &out)
        );
        // The Rust staticlib keeps nothing alive at exit: not even "still reachable" blocks.
        assert!(
            stderr.contains("All heap blocks were freed -- no leaks are possible"),
            "{}",
            describe(what, &out)
        );
        if what.starts_with("test_api") {
            assert_checks_passed(what, &out, MIN_API_CHECKS);
        } else if what.starts_with("test_session") {
            assert_checks_passed(what, &out, MIN_SESSION_CHECKS);
        } else if what.starts_with("speculate") {
            assert_speculate_output(what, &out);
        } else {
            assert_demo_output_ignoring_stderr(what, &out);
        }
    }
}

/// [`assert_demo_output`] for a run whose stderr holds valgrind's report.
fn assert_demo_output_ignoring_stderr(what: &str, out: &Output) {
    let mut quiet = out.clone();
    quiet.stderr.clear();
    assert_demo_output(what, &quiet);
}

#[test]
fn header_compiles_as_c11_and_cpp17() {
    let d = dirs();
    let c_extra = [
        "-std=c11",
        "-Wstrict-prototypes",
        "-Wmissing-prototypes",
        "-Wshadow",
        "-Wconversion",
    ];
    let cpp_extra = ["-std=c++17", "-Wshadow", "-Wconversion", "-Wold-style-cast"];
    let mut built = 0;
    for (compiler, package, source, extra) in [
        ("gcc", "gcc", HEADER_C, &c_extra[..]),
        ("clang-14", "clang-14", HEADER_C, &c_extra[..]),
        ("g++", "g++", HEADER_CPP, &cpp_extra[..]),
        ("clang++-14", "clang-14", HEADER_CPP, &cpp_extra[..]),
    ] {
        if !have_tool(compiler, package) {
            continue;
        }
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(WARNINGS.iter().map(|s| s.to_string()));
        args.push(format!("-I{INCLUDE_DIR}"));
        args.push(source.into());
        args.push(d.staticlib().display().to_string());
        args.extend(STATIC_LIBS.iter().map(|s| s.to_string()));
        let bin = compile_or_panic(
            compiler,
            &args,
            &d.out.join(format!("header_check_{compiler}")),
        );
        // Linking proves the C++ declarations are extern "C"; running checks a few calls.
        let what = format!("header check ({compiler})");
        let out = run(Command::new(&bin), &what);
        assert!(out.status.success(), "{}", describe(&what, &out));
        built += 1;
    }
    eprintln!("header checks: {built} compiler(s)");
}

#[test]
fn edge_of_range_inputs() {
    if !have_tool("gcc", "gcc") {
        return;
    }
    let bin = compile_or_panic(
        "gcc",
        &c_args(TEST_EDGES, &["-O2"], Link::Static),
        &dirs().out.join("test_edges_gcc_static"),
    );
    let out = run(Command::new(&bin), "test_edges (gcc, static)");
    assert_checks_passed("test_edges (gcc, static)", &out, 10);
}

/// `tests/c/test_session.c` built with `-DSB_TEST_ADAPTER_FILES`: `sb_adapter_save` / `sb_adapter_load`
/// round trips and their errors, on both fixtures, with files in a scratch directory.
#[test]
fn adapter_files() {
    if !have_tool("gcc", "gcc") {
        return;
    }
    let bin = compile_or_panic(
        "gcc",
        &c_args(
            TEST_SESSION,
            &["-O2", "-DSB_TEST_ADAPTER_FILES"],
            Link::Static,
        ),
        &dirs().out.join("test_session_adapter_files"),
    );
    let scratch = dirs().out.join("adapter_files");
    fs::create_dir_all(&scratch).unwrap_or_else(|e| panic!("create {}: {e}", scratch.display()));
    for (dir, what) in [
        (DRAFTER_DIR, "test_session with adapter files (gcc, static)"),
        (
            EAGLE3_DIR,
            "test_session with EAGLE-3 and adapter files (gcc, static)",
        ),
    ] {
        let mut cmd = Command::new(&bin);
        cmd.args(session_args(dir)).env("SB_TEST_SCRATCH", &scratch);
        let out = run(cmd, what);
        assert_checks_passed(what, &out, MIN_SESSION_CHECKS);
    }
}
