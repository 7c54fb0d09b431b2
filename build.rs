//! Release builds of the operator for Linux lay out its code hot first.
//!
//! The kernel maps a binary's code 64 KiB around every page a process
//! touches, so functions the operator runs all the time, scattered among
//! ones it never runs, make nearly all of its 10 MB of code resident. lld
//! places the functions listed in `release/hot-functions.txt` (what the
//! operator ran in the scale benchmark's workload, written by
//! `e2e/hot-functions`) first and together. A name the list has and the
//! binary has not (the code changed since the list was made) is skipped;
//! the binary is the same either way, only its layout differs.

use std::path::{Path, PathBuf};
use std::process::Command;

const HOT_FUNCTIONS: &str = "release/hot-functions.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={HOT_FUNCTIONS}");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    if env("PROFILE") != "release" || env("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let list = Path::new(&env("CARGO_MANIFEST_DIR")).join(HOT_FUNCTIONS);
    if !list.is_file() {
        return;
    }
    let Some(gcc_ld) = rustup_lld(&env("RUSTC"), &env("HOST")) else {
        println!("cargo:warning=no lld in this Rust toolchain: the operator's code keeps the default layout");
        return;
    };
    // gcc runs `ld.lld` from the -B directory: rustup ships a gcc-compatible lld there.
    for arg in [
        format!("-B{}", gcc_ld.display()),
        "-fuse-ld=lld".to_string(),
        format!("-Wl,--symbol-ordering-file={}", list.display()),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ] {
        println!("cargo:rustc-link-arg-bin=bulkhead={arg}");
    }
}

/// The directory of the toolchain's gcc-compatible `ld.lld`, if it has one.
fn rustup_lld(rustc: &str, host: &str) -> Option<PathBuf> {
    let out = Command::new(rustc).args(["--print", "sysroot"]).output().ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    let dir = Path::new(sysroot.trim()).join("lib/rustlib").join(host).join("bin/gcc-ld");
    dir.join("ld.lld").is_file().then_some(dir)
}
