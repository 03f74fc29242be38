//! Builds the pause binary of Skiff's sandbox image: a static C program, so the image needs
//! no registry and no libraries.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=pause/pause.c");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let binary = out.join("pause");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&compiler)
        .args(["-static", "-Os", "-s", "-Wall", "-o"])
        .arg(&binary)
        .arg("pause/pause.c")
        .status()
        .unwrap_or_else(|e| panic!("running {compiler} to build the pause binary: {e}"));
    assert!(
        status.success(),
        "building the pause binary failed (a C compiler with static libc is needed: apt-get install build-essential)"
    );
}
