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
        "reconciliation found 0 envelope(s)",
    ] {
        assert!(stdout.contains(step), "the demo reports {step:?}:\n{stdout}");
    }
    assert!(stdout.contains("Demo complete"));
    assert!(dir.path().join("demo-data/countersign.db").exists(), "--data keeps the demo's files");
    // The service logs to a file the demo names, not between the tour's lines.
    let log = std::fs::read_to_string(dir.path().join("demo-data/countersign.log")).unwrap();
    assert!(log.contains("INFO"), "{log}");
    assert!(stdout.contains("countersign's log: demo-data/countersign.log"), "{stdout}");
    assert!(!stderr.contains("INFO") && !stderr.contains("WARN"), "no log lines on the terminal:\n{stderr}");
}
