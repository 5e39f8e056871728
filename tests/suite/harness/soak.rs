//! Runs `tidings soak` as a process and checks its verdict.

use std::process::Command;

/// Runs `tidings soak` with `args` and returns its verdict and whether it passed.
pub fn soak(args: &[&str]) -> (serde_json::Value, bool) {
    let output = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("soak")
        .args(args)
        .arg("--json")
        .output()
        .expect("the tidings binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let verdict: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no verdict ({e}): {stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    (verdict, output.status.success())
}

/// Asserts that `verdict` passed and that its run was a real one.
pub fn check(verdict: &serde_json::Value, passed: bool) {
    let pretty = serde_json::to_string_pretty(verdict).unwrap();
    for field in ["lost", "sent_twice", "order_violations", "quiet_hour_violations", "feed_failures"] {
        assert_eq!(verdict[field], 0, "{field}:\n{pretty}");
    }
    assert_eq!(verdict["crashes"], serde_json::json!([]), "{pretty}");
    assert!(passed, "{pretty}");
    // The run was one: faults of several kinds, most events delivered, quiet users released.
    let faults = verdict["faults"].as_object().unwrap();
    assert!(faults.len() >= 4, "only {faults:?}");
    let events = verdict["events"].as_u64().unwrap();
    assert!(events >= 500, "{pretty}");
    assert!(verdict["delivered"].as_u64().unwrap() >= events / 2, "{pretty}");
    assert!(verdict["audit"]["ended"].as_u64().unwrap() >= verdict["delivered"].as_u64().unwrap(), "{pretty}");
}
