//! A CUDA driver that sees no device (a stub `libcuda.so.1` whose `cuInit` returns
//! CUDA_ERROR_NO_DEVICE, as a real driver on a machine without a GPU does) gives `Status::NoDevice`,
//! from Rust and from C, never a panic. The test re-runs itself in a child process with the stub first on
//! `LD_LIBRARY_PATH`, because the driver library is loaded once per process.
#![cfg(feature = "cuda")]

use std::path::PathBuf;
use std::process::Command;

use specblock::Status;
use specblock::cuda::Gpu;

const STUB: &str = r#"
int cuInit(unsigned flags) { (void)flags; return 100; }
int cuDriverGetVersion(int* v) { *v = 13000; return 0; }
int cuGetErrorName(int e, const char** s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }
int cuGetErrorString(int e, const char** s) { (void)e; *s = "no CUDA-capable device is detected"; return 0; }
"#;

fn child_checks() {
    let e = Gpu::open(0).unwrap_err();
    assert_eq!(e.status(), Status::NoDevice, "{e}");
    assert!(!Gpu::available());
    let mut dev = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    let s = unsafe { specblock::ffi::sb_cuda_device_open(0, &mut dev) };
    assert_eq!(s, Status::NoDevice);
    assert!(dev.is_null());
}

#[test]
fn a_driver_without_a_device_is_no_device() {
    if std::env::var_os("SPECBLOCK_STUB_CHILD").is_some() {
        child_checks();
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stub-libcuda");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("stub.c"), STUB).unwrap();
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(dir.join("libcuda.so.1"))
        .arg(dir.join("stub.c"))
        .status();
    match built {
        Ok(s) if s.success() => {}
        other => {
            if std::env::var("SPECBLOCK_REQUIRE_C_TOOLS").is_ok_and(|v| v == "1") {
                panic!("cc could not build the stub driver: {other:?}");
            }
            eprintln!("skipping: no C compiler for the stub driver ({other:?})");
            return;
        }
    }
    let _ = std::fs::remove_file(dir.join("libcuda.so"));
    std::os::unix::fs::symlink("libcuda.so.1", dir.join("libcuda.so")).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_driver_without_a_device_is_no_device",
            "--nocapture",
        ])
        .env("SPECBLOCK_STUB_CHILD", "1")
        .env("LD_LIBRARY_PATH", &dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "child did not run the checks:\n{text}"
    );
}
