//! Generates the C header with cbindgen into OUT_DIR, next to the built library, and (with
//! `SPECBLOCK_UPDATE_HEADER=1`, see `make header`) into `include/specblock.h`. A test compares the committed
//! header with the generated one. Also writes `specblock.pc` for pkg-config next to the library.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=SPECBLOCK_UPDATE_HEADER");

    let crate_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let version = env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");

    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_kernels(&crate_dir, &out_dir);
    }

    if env::var_os("CARGO_FEATURE_STD").is_none() {
        // The C ABI needs std (panic guard); nothing to generate for the bare core.
        return;
    }

    let mut config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    let mut parts = version.split('.');
    let after = config.after_includes.take().unwrap_or_default();
    config.after_includes = Some(
        after
            .replace("@MAJOR@", parts.next().unwrap_or("0"))
            .replace("@MINOR@", parts.next().unwrap_or("0"))
            .replace("@PATCH@", parts.next().unwrap_or("0"))
            .replace("@VERSION@", &version),
    );
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed to generate include/specblock.h");
    let generated = out_dir.join("specblock.h");
    bindings.write_to_file(&generated);

    if env::var_os("SPECBLOCK_UPDATE_HEADER").is_some_and(|v| v == "1") {
        let committed = crate_dir.join("include/specblock.h");
        let new = fs::read(&generated).expect("read generated header");
        if fs::read(&committed).ok().as_deref() != Some(&new[..]) {
            fs::write(&committed, new).expect("write include/specblock.h");
        }
    }

    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: the library lands in <target>/<profile>.
    if let Some(profile_dir) = out_dir.ancestors().nth(3) {
        install_next_to_library(profile_dir, &crate_dir, &generated, &version);
    }
}

/// Copies the header to `<profile>/include/` and writes `<profile>/specblock.pc`, so C builds can use the
/// target directory directly (`PKG_CONFIG_PATH=target/release pkg-config --cflags --libs specblock`).
fn install_next_to_library(profile_dir: &Path, crate_dir: &Path, header: &Path, version: &str) {
    let include_dir = profile_dir.join("include");
    if fs::create_dir_all(&include_dir).is_err() {
        return;
    }
    let _ = fs::copy(header, include_dir.join("specblock.h"));
    let _ = crate_dir;
    let pc = format!(
        "prefix={prefix}\nlibdir=${{prefix}}\nincludedir=${{prefix}}/include\n\n\
         Name: specblock\nDescription: SpecBlock speculative decoding for LLM inference engines\n\
         Version: {version}\nCflags: -I${{includedir}}\nLibs: -L${{libdir}} -lspecblock\n\
         Libs.private: -lpthread -ldl -lm\n",
        prefix = profile_dir.display(),
    );
    let _ = fs::write(profile_dir.join("specblock.pc"), pc);
}

/// Finds nvcc: `SPECBLOCK_NVCC`, then the pinned PyPI toolchain in `.venv-cuda` (`make cuda-toolchain`),
/// then `nvcc` on the PATH, then `/usr/local/cuda/bin/nvcc`.
fn find_nvcc(crate_dir: &Path) -> Option<PathBuf> {
    if let Some(p) = env::var_os("SPECBLOCK_NVCC") {
        return Some(PathBuf::from(p));
    }
    if let Ok(entries) = fs::read_dir(crate_dir.join(".venv-cuda/lib")) {
        for e in entries.flatten() {
            let nvcc = e.path().join("site-packages/nvidia/cu13/bin/nvcc");
            if nvcc.is_file() {
                return Some(nvcc);
            }
        }
    }
    let on_path = std::process::Command::new("nvcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Some(PathBuf::from("nvcc"));
    }
    let cuda = PathBuf::from("/usr/local/cuda/bin/nvcc");
    cuda.is_file().then_some(cuda)
}

/// Compiles every `kernels/*.cu` into a fatbin holding sm_80 and sm_90 machine code plus compute_90 PTX
/// (warnings are errors), and writes `kernels.rs`, which embeds them as `(name, bytes)` pairs.
fn compile_kernels(crate_dir: &Path, out_dir: &Path) {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=SPECBLOCK_NVCC");
    let nvcc = find_nvcc(crate_dir).unwrap_or_else(|| {
        panic!(
            "the `cuda` feature needs nvcc 13.0: run `make cuda-toolchain` (pinned PyPI wheels into \
             .venv-cuda), put nvcc on the PATH, or set SPECBLOCK_NVCC"
        )
    });
    let mut sources: Vec<PathBuf> = fs::read_dir(crate_dir.join("kernels"))
        .expect("read kernels/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    let mut table = String::from(
        "/// Embedded kernel modules (fatbins), by file stem.\npub(crate) const MODULES: &[(&str, &[u8])] = &[\n",
    );
    for src in &sources {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("kernel file name");
        let out = out_dir.join(format!("{stem}.fatbin"));
        let status = std::process::Command::new(&nvcc)
            .args([
                "-fatbin",
                "-O3",
                "-std=c++17",
                "-lineinfo",
                "-Werror",
                "all-warnings",
            ])
            .args(["-gencode", "arch=compute_80,code=sm_80"])
            .args(["-gencode", "arch=compute_90,code=[sm_90,compute_90]"])
            .arg("-I")
            .arg(crate_dir.join("kernels"))
            .arg("-o")
            .arg(&out)
            .arg(src)
            .status()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
        assert!(status.success(), "nvcc failed on {}", src.display());
        table.push_str(&format!(
            "    (\"{stem}\", include_bytes!(\"{}\")),\n",
            out.display()
        ));
    }
    table.push_str("];\n");
    fs::write(out_dir.join("kernels.rs"), table).expect("write kernels.rs");
}
