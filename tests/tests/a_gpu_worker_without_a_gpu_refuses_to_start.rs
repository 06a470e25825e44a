//! `tts-worker --device cuda` on a machine or build that cannot use a GPU
//! stops at once with one line saying why and exit code 64: no panic, no
//! silent run on the CPU.

use std::process::Command;

use tts_tests::{binary, free_port, repo_root};

#[test]
fn a_gpu_worker_without_a_gpu_refuses_to_start() {
    for device in ["cuda", "cuda:1"] {
        let out = Command::new(binary("tts-worker"))
            .args(["--device", device, "--log-format", "text"])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
            .current_dir(repo_root())
            .output()
            .expect("the worker runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{device}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        let line = lines[0];
        assert!(line.starts_with("tts-worker: --device cuda:"), "{line}");
        assert!(
            line.contains("no CUDA support") || line.contains("no NVIDIA driver"),
            "says why: {line}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // An unknown device is a usage mistake.
    let out = Command::new(binary("tts-worker"))
        .args(["--device", "tpu"])
        .output()
        .expect("the worker runs");
    assert_eq!(out.status.code(), Some(2));
}
