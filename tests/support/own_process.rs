//! Runs one test in a process of its own: for a test that changes what the
//! whole process shares (the descriptor limit), so that the other tests of
//! its binary, running beside it, keep theirs.

use std::process::Command;

/// Set in the child to the test it runs.
const OWN_PROCESS_VAR: &str = "SEGLOG_TEST_OWN_PROCESS";

/// Runs `body` in a new process of this test binary that runs only the
/// test `name` (its path in the binary, such as `many_keys::some_test`),
/// and fails if that process did not run exactly that test, passing. Its
/// stderr (what `body` prints) is passed on.
pub fn run(name: &str, body: impl FnOnce()) {
    if std::env::var(OWN_PROCESS_VAR).is_ok_and(|running| running == name) {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(OWN_PROCESS_VAR, name)
        .output()
        .unwrap_or_else(|e| panic!("run {} {name}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    // Indented, so that the child's summary line is not counted as a test
    // binary's by a script adding up `test result:` lines.
    let indented: String = stdout.lines().map(|line| format!("    {line}\n")).collect();
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed;"),
        "{name} in its own process ({}):\n{indented}",
        output.status
    );
}
