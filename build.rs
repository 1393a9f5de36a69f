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
