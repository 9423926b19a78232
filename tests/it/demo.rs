//! README's first command: `countersign demo` runs the tour and exits 0.

use std::process::Command;

#[test]
fn the_demo_runs_end_to_end_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["demo", "--data", "demo-data"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for step in [
        "DocuSign sandbox",
        "consent",
        "JSON SIM",
        "legacy XML",
        "Combined.pdf",
        "matches DocuSign's",
        "token request(s)",
        "employee.onboarding.signed",
        "signature verified",
        "the bytes match the event's sha256",
    ] {
        assert!(stdout.contains(step), "the demo reports {step:?}:\n{stdout}");
    }
    assert!(stdout.contains("Demo complete"));
    assert!(dir.path().join("demo-data/countersign.db").exists(), "--data keeps the demo's files");
}
