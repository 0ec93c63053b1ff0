//! The tidy test: what `ARCHITECTURE.md` promises about the code's shape,
//! checked on every test run (after rust-analyzer's `tidy.rs`). Each rule
//! fails with the offending file and line, and says what to do.
//!
//! - Every module opens with a `//!` doc comment saying what it owns.
//! - A layer imports only the layers below it ([`ALLOWED`]): `kafka/` and
//!   `http/` never each other, nothing below `broker/` a front end.
//! - `unsafe` appears only in the modules that justify it ([`UNSAFE_MODULES`]).

use std::fs;
use std::path::{Path, PathBuf};

/// What each top-level module of `src/` may import with `crate::`, besides
/// itself: the layering of `ARCHITECTURE.md`'s code map. `lib.rs`'s
/// re-exports (`crate::Error`, `crate::Result`, `crate::Store`, ...) count
/// as `storage`.
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves: any layer may use them.
    ("log", &[]),
    ("lock", &[]),
    ("lazy_alloc", &[]),
    ("data_dir", &["storage"]),
    ("table", &[]),
    // The engine knows nothing of protocols, clusters or topics.
    ("storage", &["log", "lock"]),
    // Consensus: the Raft groups over the engine; no front end, no wire.
    ("raft", &["storage", "log", "lock"]),
    // The Maelstrom front end: the groups, the engine and the leaves.
    ("node", &["raft", "storage", "log", "lock", "data_dir"]),
    // The cluster of `seglog serve`: membership and peer links, carrying
    // the groups' batches, and the metadata, whose topics follow the
    // broker's catalog rules; no front end.
    ("cluster", &["broker", "raft", "storage", "log", "lock"]),
    // Who may connect and what they may do: no front end, no broker.
    ("auth", &["storage", "log", "lock", "table"]),
    // The broker core: the engine and the leaves, no front end.
    ("broker", &["storage", "log", "lock"]),
    // The two front ends of `seglog serve`: the broker, never each other.
    ("http", &["broker", "auth", "storage", "log", "lock"]),
    ("kafka", &["broker", "auth", "storage", "log", "lock"]),
    // Start-up of `seglog serve`, above both front ends.
    (
        "serve",
        &[
            "http", "kafka", "broker", "auth", "cluster", "storage", "log", "lock", "data_dir",
        ],
    ),
    // The offline inspector: the engine's codecs and the payload format.
    ("inspect", &["storage", "broker", "log", "table"]),
    // The command-line client talks to a server over HTTP only: no server
    // module, only the leaf that prints tables.
    ("cli", &["table"]),
    // The test itself reads files only (and names layers in its own tests).
    ("tidy", &[]),
];

/// The modules that may hold `unsafe` code, each with a `// SAFETY:`
/// paragraph per block: the memory maps and the allocator.
const UNSAFE_MODULES: &[&str] = &["src/storage/mmap.rs", "src/lazy_alloc.rs"];

/// Names `lib.rs` re-exports from `storage`.
const STORAGE_REEXPORTS: &[&str] = &["Error", "Result", "Store", "StoreConfig", "SyncPlan"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `src/...` of a path, for messages.
fn shown(path: &Path) -> String {
    let root = src_dir();
    let rel = path
        .strip_prefix(root.parent().unwrap_or(&root))
        .unwrap_or(path);
    rel.display().to_string()
}

/// The top-level module a file belongs to: `storage` for
/// `src/storage/store/open.rs`, `log` for `src/log.rs`; `None` for
/// `lib.rs` and `main.rs`, which see everything.
fn layer_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src_dir()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        file if file.ends_with(".rs") => Some(file.trim_end_matches(".rs").to_string()),
        dir => Some(dir.to_string()),
    }
}

/// The code of a line without its `//` comment (doc links to other layers
/// are not imports). A `//` inside a string is rare enough in `crate::`
/// lines to ignore.
fn code_of(line: &str) -> &str {
    line.find("//").map_or(line, |at| &line[..at])
}

/// The layers a line names with `crate::`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let before = rest[..at].chars().last();
        // `seglog_crate::` or `$crate::` are not ours.
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            found.push(if STORAGE_REEXPORTS.contains(&name.as_str()) {
                "storage".to_string()
            } else {
                name
            });
        }
        rest = after;
    }
    found
}

#[test]
fn every_module_opens_with_a_doc_comment() {
    let mut missing = Vec::new();
    for path in rust_files(&src_dir()) {
        let text = fs::read_to_string(&path).expect("read a source file");
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            missing.push(format!("{}:1: {first:?}", shown(&path)));
        }
    }
    assert!(
        missing.is_empty(),
        "these modules do not open with a `//!` comment saying what they own and why:\n{}",
        missing.join("\n")
    );
}

#[test]
fn layers_import_only_the_layers_below_them() {
    let mut wrong = Vec::new();
    for path in rust_files(&src_dir()) {
        let Some(layer) = layer_of(&path) else {
            continue;
        };
        if layer == "tidy" {
            // Its own tests name layers in strings.
            continue;
        }
        let Some((_, allowed)) = ALLOWED.iter().find(|(name, _)| *name == layer) else {
            wrong.push(format!(
                "{}: the module `{layer}` is not in tidy.rs's ALLOWED table \
                 (add it, and its place in ARCHITECTURE.md's code map)",
                shown(&path)
            ));
            continue;
        };
        let text = fs::read_to_string(&path).expect("read a source file");
        for (n, line) in text.lines().enumerate() {
            for used in crate_paths(code_of(line)) {
                if used != layer && !allowed.contains(&used.as_str()) {
                    wrong.push(format!(
                        "{}:{}: `{layer}` imports `{used}`: {}",
                        shown(&path),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports across layers that ARCHITECTURE.md rules out (kafka/ and http/ never \
         import each other; nothing below broker/ imports a front end):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn unsafe_code_lives_only_where_it_is_justified() {
    let mut wrong = Vec::new();
    for path in rust_files(&src_dir()) {
        let name = shown(&path);
        if name == "src/tidy.rs" {
            // It names the word in its rules.
            continue;
        }
        let text = fs::read_to_string(&path).expect("read a source file");
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let code = code_of(line);
            if !code.contains("unsafe") {
                continue;
            }
            if !UNSAFE_MODULES.contains(&name.as_str()) {
                wrong.push(format!(
                    "{name}:{}: unsafe outside {UNSAFE_MODULES:?}",
                    n + 1
                ));
            } else if code.contains("unsafe {") {
                // A block's justification is the comment right above the
                // line that opens it.
                let justified = lines[..n]
                    .iter()
                    .rev()
                    .take_while(|l| l.trim_start().starts_with("//"))
                    .any(|l| l.trim_start().starts_with("// SAFETY:"));
                if !justified {
                    wrong.push(format!(
                        "{name}:{}: an unsafe block without a `// SAFETY:` paragraph above it",
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_import_check_sees_what_it_must() {
    assert_eq!(crate_paths("use crate::http::api::now_ms;"), ["http"]);
    assert_eq!(
        crate_paths("let x = crate::Result::Ok(crate::broker::time::now_ms());"),
        ["storage", "broker"]
    );
    assert!(crate_paths("$crate::x; my_crate::y").is_empty());
    assert_eq!(code_of("use x; // see crate::http"), "use x; ");
    assert_eq!(
        layer_of(&src_dir().join("storage/store/open.rs")).as_deref(),
        Some("storage")
    );
    assert_eq!(layer_of(&src_dir().join("log.rs")).as_deref(), Some("log"));
    assert_eq!(layer_of(&src_dir().join("lib.rs")), None);
}
