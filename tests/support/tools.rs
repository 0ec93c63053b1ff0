//! The programs the tests run besides seglog: `cc` for the `LD_PRELOAD`
//! shims, kcat and the Python Kafka clients, and for the console's test
//! Debian's Chromium, Node.js and the pinned playwright-core. A missing one fails the test
//! that needs it, naming the command that installs it; none is ever
//! skipped. `scripts/test-setup.sh` installs all of them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The script that installs everything the tests need.
pub const SETUP: &str = "scripts/test-setup.sh";

/// The command that installs the pinned Python Kafka clients.
pub const PIP_INSTALL: &str = "python3 -m pip install -r tests/kafka_clients/requirements.txt";

/// The browser the console's test drives: Debian's, never a downloaded one.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The command that installs the console test's npm packages, pinned in
/// `tests/console/package-lock.json`.
pub const CONSOLE_NPM_CI: &str = "npm ci --prefix tests/console";

/// Fails the test unless `probe` runs and succeeds: `what` is missing, and
/// `install` installs it.
pub fn require(what: &str, probe: &mut Command, install: &str) {
    let ran = probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(ran, "{}", missing(what, install));
}

/// kcat, which the Kafka tests run as a client.
pub fn require_kcat() {
    require(
        "kcat",
        Command::new("kcat").arg("-V"),
        "apt-get install -y kcat",
    );
}

/// The Python module `module` of one of the pinned Kafka clients.
pub fn require_python_module(module: &str) {
    require(
        &format!("the Python module {module}"),
        Command::new("python3").args(["-c", &format!("import {module}")]),
        PIP_INSTALL,
    );
}

/// How to install the Kafka tests' npm packages, exactly as in
/// `tests/kafka_clients/package-lock.json`.
pub const KAFKA_NPM_CI: &str = "npm ci --prefix tests/kafka_clients";

/// Node.js and the npm package `package` installed in `dir` (from its
/// package-lock.json), which a Kafka test runs.
pub fn require_node_package(dir: &Path, package: &str) {
    require(
        "Node.js",
        Command::new("node").arg("--version"),
        "apt-get install -y nodejs npm",
    );
    let manifest = dir.join("node_modules").join(package).join("package.json");
    assert!(
        manifest.is_file(),
        "{}",
        missing(&format!("the npm package {package}"), KAFKA_NPM_CI)
    );
}

/// Debian's Chromium, Node.js and playwright-core, which the console's
/// test runs; `console_dir` is `tests/console`.
pub fn require_browser(console_dir: &Path) {
    require(
        "Chromium",
        Command::new(CHROMIUM).arg("--version"),
        "apt-get install -y chromium chromium-driver",
    );
    require(
        "Node.js 20 or later",
        Command::new("node").args([
            "-e",
            "process.exit(+process.versions.node.split('.')[0] >= 20 ? 0 : 1)",
        ]),
        "apt-get install -y nodejs npm",
    );
    let package = console_dir.join("node_modules/playwright-core/package.json");
    assert!(
        package.is_file(),
        "{}",
        missing(
            "playwright-core (the console test's npm package)",
            CONSOLE_NPM_CI
        )
    );
}

/// Builds the C file `source` into the shared library `library` for
/// `LD_PRELOAD`, linking `libs` (such as `-ldl`); fails the test, naming the
/// package to install, if there is no C compiler or it fails.
pub fn build_shim(source: &Path, library: &Path, libs: &[&str]) -> PathBuf {
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(library)
        .arg(source)
        .args(libs)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "{} ({e})",
                missing("cc (a C compiler)", "apt-get install -y gcc libc6-dev")
            )
        });
    assert!(
        status.success(),
        "cc failed on {} ({status}); {}",
        source.display(),
        missing(
            "a working cc with the C library headers",
            "apt-get install -y gcc libc6-dev"
        )
    );
    library.to_path_buf()
}

fn missing(what: &str, install: &str) -> String {
    format!(
        "{what} is missing: install it with `{install}`, or run `{SETUP}`, which installs \
         everything the tests need"
    )
}
