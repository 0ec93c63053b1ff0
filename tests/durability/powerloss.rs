//! Simulated power loss under the real binary.
//!
//! A node runs a workload of sends and commits over a few keys, with small
//! segments (rolls) and a checkpoint every few KiB of journal (rotations,
//! checkpoints), under `iolog.c` (beside this file), an `LD_PRELOAD` library
//! that records in order every file operation under the data directory
//! (creations, writes with their bytes, truncations, fdatasync and fsync of
//! files and directories, renames, unlinks) and every write to stdout (the
//! acknowledgements).
//!
//! Replaying that log gives, at every point of the run, what a power loss
//! could leave on disk: for each file, every 4 KiB page as it was at some
//! moment since the file's last fdatasync (pages independently: the kernel
//! writes back whole pages, as they are when it does), and its size as of
//! some moment too; for each directory, its entries at its last fsync plus
//! any subset of the later creations, renames and removals. The test crashes the run after every
//! recorded operation, builds such images (nothing unsynced kept,
//! everything kept, and random subsets), opens the store on each in process
//! and checks: the store opens, every send acknowledged before the crash is
//! read back at its offset with its message, reads stop at no CRC or
//! offset error, and every acknowledged commit is listed; then that one
//! more append per key takes the next offset and all of it survives a
//! reopen.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tempfile::TempDir;

use seglog::{Store, StoreConfig};

use crate::support::dirs::{copy_tree, scratch_dir};
use crate::support::node_process::Node;
use crate::support::{tier, tools};

/// Page size at which unsynced writes survive or not.
const PAGE: u64 = 4096;
/// Random images per crash point, besides "nothing unsynced kept" and
/// "everything kept": by default, and in the long tier
/// (`SEGLOG_POWERLOSS_IMAGES` overrides both).
const RANDOM_IMAGES_SHORT: u64 = 1;
const RANDOM_IMAGES_LONG: u64 = 2;
/// Keys of the workload.
const KEYS: usize = 4;
/// Rounds of the workload, each pipelining one send per key and a commit:
/// by default, and in the long tier (`SEGLOG_POWERLOSS_ROUNDS` overrides
/// both).
const ROUNDS_SHORT: u64 = 40;
const ROUNDS_LONG: u64 = 60;

/// Builds the recorder library into `dir`.
fn build_recorder(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/durability/iolog.c");
    tools::build_shim(&source, &dir.join("iolog.so"), &["-ldl", "-lpthread"])
}

/// One recorded operation.
#[derive(Clone, Debug)]
enum Op {
    Create { path: String, ino: u64 },
    Trunc { ino: u64, len: u64 },
    Write { ino: u64, at: u64, bytes: Vec<u8> },
    Sync { ino: u64 },
    DirSync { path: String },
    Rename { from: String, to: String },
    Unlink { path: String },
    Mkdir { path: String },
    Rmdir { path: String },
    SyncAll,
    Out { bytes: Vec<u8> },
}

fn parse_log(bytes: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut at = 0;
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    while at < bytes.len() {
        let kind = bytes[at];
        let a = u64_at(bytes, at + 1);
        let b = u64_at(bytes, at + 9);
        let n1 = u32_at(bytes, at + 17) as usize;
        let s1 = bytes[at + 21..at + 21 + n1].to_vec();
        let at2 = at + 21 + n1;
        let n2 = u32_at(bytes, at2) as usize;
        let s2 = bytes[at2 + 4..at2 + 4 + n2].to_vec();
        at = at2 + 4 + n2;
        let text = |s: Vec<u8>| String::from_utf8(s).expect("UTF-8 path");
        ops.push(match kind {
            1 => Op::Create {
                path: text(s1),
                ino: a,
            },
            2 => Op::Trunc { ino: a, len: b },
            3 => Op::Write {
                ino: a,
                at: b,
                bytes: s1,
            },
            4 => Op::Sync { ino: a },
            5 => Op::DirSync { path: text(s1) },
            6 => Op::Rename {
                from: text(s1),
                to: text(s2),
            },
            7 => Op::Unlink { path: text(s1) },
            8 => Op::Mkdir { path: text(s1) },
            9 => Op::Rmdir { path: text(s1) },
            10 => Op::SyncAll,
            11 => Op::Out { bytes: s1 },
            other => panic!("unknown record kind {other}"),
        });
    }
    ops
}

/// `op` for a failure message, without the bytes it carries.
fn describe(op: &Op) -> String {
    match op {
        Op::Write { ino, at, bytes } => {
            format!("write of {} bytes at {at} to inode {ino}", bytes.len())
        }
        Op::Out { bytes } => format!("{} bytes to stdout", bytes.len()),
        other => format!("{other:?}"),
    }
}

/// A directory entry: a file or a directory, by the model's id (files get
/// a new id at each creation: the file system reuses inode numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir(usize),
}

#[derive(Clone, Debug)]
enum DirOp {
    Add(String, Entry),
    Remove(String),
}

#[derive(Clone, Debug, Default)]
struct DirState {
    live: BTreeMap<String, Entry>,
    durable: BTreeMap<String, Entry>,
    pending: Vec<DirOp>,
}

#[derive(Clone, Debug)]
enum FileOp {
    Write(u64, Vec<u8>),
    Trunc(u64),
}

#[derive(Clone, Debug, Default)]
struct FileState {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<FileOp>,
}

fn apply_file_op(content: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write(at, bytes) => {
            let at = *at as usize;
            if content.len() < at + bytes.len() {
                content.resize(at + bytes.len(), 0);
            }
            content[at..at + bytes.len()].copy_from_slice(bytes);
        }
        FileOp::Trunc(len) => content.resize(*len as usize, 0),
    }
}

/// The file system as the recorded operations left it: live and durable.
struct Model {
    root: String,
    dirs: Vec<DirState>,
    /// Files by model id.
    files: HashMap<u64, FileState>,
    /// The model id of the file each inode number now stands for.
    inodes: HashMap<u64, u64>,
    next_file: u64,
}

impl Model {
    fn new(root: &str) -> Model {
        Model {
            root: root.to_string(),
            dirs: vec![DirState::default()],
            files: HashMap::new(),
            inodes: HashMap::new(),
            next_file: 0,
        }
    }

    /// The file system under `root` (path text `root_text`) as it is now,
    /// all of it durable: the disk a power loss left.
    fn from_disk(root_text: &str, root: &Path) -> Model {
        let mut model = Model::new(root_text);
        model.load_dir(0, root);
        model
    }

    fn load_dir(&mut self, id: usize, path: &Path) {
        use std::os::unix::fs::MetadataExt;
        for entry in std::fs::read_dir(path).expect("list") {
            let entry = entry.expect("entry");
            let name = entry.file_name().into_string().expect("UTF-8 name");
            let meta = entry.metadata().expect("metadata");
            let node = if meta.is_dir() {
                self.dirs.push(DirState::default());
                let child = self.dirs.len() - 1;
                self.load_dir(child, &entry.path());
                Entry::Dir(child)
            } else {
                let content = std::fs::read(entry.path()).expect("read");
                let id = self.new_file(meta.ino());
                self.files.insert(
                    id,
                    FileState {
                        live: content.clone(),
                        durable: content,
                        pending: Vec::new(),
                    },
                );
                Entry::File(id)
            };
            self.dirs[id].live.insert(name.clone(), node);
            self.dirs[id].durable.insert(name, node);
        }
    }

    /// The directory holding `path` and the entry's name, on the live tree.
    fn parent(&self, path: &str) -> (usize, String) {
        let rest = path
            .strip_prefix(&self.root)
            .unwrap_or_else(|| panic!("{path} is outside the root"));
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        let (name, dirs) = parts.split_last().expect("a path below the root");
        let mut dir = 0;
        for part in dirs {
            dir = match self.dirs[dir].live.get(*part) {
                Some(Entry::Dir(id)) => *id,
                other => panic!("{path}: {part} is {other:?}, not a directory"),
            };
        }
        (dir, (*name).to_string())
    }

    fn dir_of(&self, path: &str) -> usize {
        if path.trim_end_matches('/') == self.root.trim_end_matches('/') {
            return 0;
        }
        let (parent, name) = self.parent(path);
        match self.dirs[parent].live.get(&name) {
            Some(Entry::Dir(id)) => *id,
            other => panic!("{path} is {other:?}, not a directory"),
        }
    }

    fn link(&mut self, path: &str, entry: Entry) {
        let (dir, name) = self.parent(path);
        self.dirs[dir].live.insert(name.clone(), entry);
        self.dirs[dir].pending.push(DirOp::Add(name, entry));
    }

    fn unlink(&mut self, path: &str) -> Entry {
        let (dir, name) = self.parent(path);
        let entry = self.dirs[dir]
            .live
            .remove(&name)
            .unwrap_or_else(|| panic!("{path} is not there"));
        self.dirs[dir].pending.push(DirOp::Remove(name));
        entry
    }

    /// A new file with inode number `ino`: a new model id.
    fn new_file(&mut self, ino: u64) -> u64 {
        self.next_file += 1;
        self.inodes.insert(ino, self.next_file);
        self.next_file
    }

    /// The file inode `ino` stands for; every file written or synced was
    /// created in the model (or found on disk), or the recorder missed it.
    fn file(&mut self, ino: u64) -> &mut FileState {
        let id = *self
            .inodes
            .get(&ino)
            .unwrap_or_else(|| panic!("inode {ino} was never created: the recorder missed it"));
        self.files.get_mut(&id).expect("a known file")
    }

    fn file_op(&mut self, ino: u64, op: FileOp) {
        let file = self.file(ino);
        apply_file_op(&mut file.live, &op);
        file.pending.push(op);
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { path, ino } => {
                let id = self.new_file(*ino);
                self.files.insert(id, FileState::default());
                self.link(path, Entry::File(id));
            }
            Op::Trunc { ino, len } => self.file_op(*ino, FileOp::Trunc(*len)),
            Op::Write { ino, at, bytes } => self.file_op(*ino, FileOp::Write(*at, bytes.clone())),
            Op::Sync { ino } => {
                let file = self.file(*ino);
                file.durable = file.live.clone();
                file.pending.clear();
            }
            Op::DirSync { path } => {
                let id = self.dir_of(path);
                let dir = &mut self.dirs[id];
                dir.durable = dir.live.clone();
                dir.pending.clear();
            }
            Op::Rename { from, to } => {
                let entry = self.unlink(from);
                let (dir, name) = self.parent(to);
                self.dirs[dir].live.insert(name.clone(), entry);
                self.dirs[dir].pending.push(DirOp::Add(name, entry));
            }
            Op::Unlink { path } | Op::Rmdir { path } => {
                self.unlink(path);
            }
            Op::Mkdir { path } => {
                self.dirs.push(DirState::default());
                let id = self.dirs.len() - 1;
                self.link(path, Entry::Dir(id));
            }
            Op::SyncAll => {
                for dir in &mut self.dirs {
                    dir.durable = dir.live.clone();
                    dir.pending.clear();
                }
                for file in self.files.values_mut() {
                    file.durable = file.live.clone();
                    file.pending.clear();
                }
            }
            Op::Out { .. } => {}
        }
    }

    /// Panics unless the live tree is what is on disk under `root` now
    /// (names and contents): the recorder missed nothing.
    fn assert_live_is(&self, root: &Path) {
        self.assert_dir_is(0, root);
    }

    fn assert_dir_is(&self, id: usize, path: &Path) {
        let mut on_disk: Vec<String> = std::fs::read_dir(path)
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("UTF-8"))
            .collect();
        on_disk.sort();
        let modelled: Vec<String> = self.dirs[id].live.keys().cloned().collect();
        assert_eq!(modelled, on_disk, "entries of {}", path.display());
        for (name, entry) in &self.dirs[id].live {
            let child = path.join(name);
            match entry {
                Entry::Dir(dir) => self.assert_dir_is(*dir, &child),
                Entry::File(file) => assert!(
                    self.files[file].live == std::fs::read(&child).expect("read"),
                    "content of {}",
                    child.display()
                ),
            }
        }
    }

    /// Writes what a power loss now could leave under `target`: `keep`
    /// decides, for each unsynced change in order, whether it survived.
    fn image(&self, target: &Path, keep: &mut dyn FnMut() -> bool) {
        let mut contents: HashMap<u64, Vec<u8>> = HashMap::new();
        self.image_dir(0, target, keep, &mut contents);
    }

    fn image_dir(
        &self,
        id: usize,
        target: &Path,
        keep: &mut dyn FnMut() -> bool,
        contents: &mut HashMap<u64, Vec<u8>>,
    ) {
        std::fs::create_dir_all(target).expect("image directory");
        let dir = &self.dirs[id];
        let mut entries = dir.durable.clone();
        for op in &dir.pending {
            if keep() {
                match op {
                    DirOp::Add(name, entry) => {
                        entries.insert(name.clone(), *entry);
                    }
                    DirOp::Remove(name) => {
                        entries.remove(name);
                    }
                }
            }
        }
        for (name, entry) in entries {
            let path = target.join(&name);
            match entry {
                Entry::Dir(child) => self.image_dir(child, &path, keep, contents),
                Entry::File(id) => {
                    let bytes = contents
                        .entry(id)
                        .or_insert_with(|| self.file_image(id, keep))
                        .clone();
                    std::fs::write(&path, bytes).expect("image file");
                }
            }
        }
    }

    /// What a power loss could leave of file `id`. The kernel writes a
    /// page back as it is at that moment, so each 4 KiB page holds its
    /// content after some prefix of the unsynced operations that touched
    /// it (at least its synced content), pages independently of each
    /// other; the size, metadata, after some prefix of all of them.
    fn file_image(&self, id: u64, keep: &mut dyn FnMut() -> bool) -> Vec<u8> {
        let file = &self.files[&id];
        // versions[k]: the content after the first k unsynced operations.
        let mut versions = vec![file.durable.clone()];
        for op in &file.pending {
            let mut next = versions.last().expect("the synced content").clone();
            apply_file_op(&mut next, op);
            versions.push(next);
        }
        let cut = |touching: &[usize], keep: &mut dyn FnMut() -> bool| {
            let kept = touching.iter().filter(|_| keep()).count();
            kept.checked_sub(1).map_or(0, |i| touching[i] + 1)
        };
        let all: Vec<usize> = (0..file.pending.len()).collect();
        let size = versions[cut(&all, keep)].len() as u64;
        let mut content = Vec::with_capacity(size as usize);
        for page in 0..size.div_ceil(PAGE) {
            let (start, end) = (page * PAGE, ((page + 1) * PAGE).min(size));
            let touching: Vec<usize> = file
                .pending
                .iter()
                .enumerate()
                .filter(|(_, op)| match op {
                    FileOp::Write(at, bytes) => *at < end && at + bytes.len() as u64 > start,
                    FileOp::Trunc(len) => *len < end,
                })
                .map(|(i, _)| i)
                .collect();
            let version = &versions[cut(&touching, keep)];
            for position in start..end {
                content.push(version.get(position as usize).copied().unwrap_or(0));
            }
        }
        content
    }
}

/// xorshift64*: enough randomness for choosing subsets, reproducible by seed.
struct Rng(u64);

impl Rng {
    fn bool(&mut self) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 63 == 1
    }
}

/// What the node acknowledged, from its stdout as recorded.
#[derive(Clone, Default)]
struct Acked {
    /// Key, offset, message.
    sends: Vec<(String, u64, Value)>,
    /// Key to the largest committed offset acknowledged.
    commits: BTreeMap<String, u64>,
}

/// Requests by msg_id: (type, body).
type Requests = HashMap<u64, Value>;

fn take_acks(out: &[u8], requests: &Requests, acked: &mut Acked, partial: &mut Vec<u8>) {
    partial.extend_from_slice(out);
    while let Some(end) = partial.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = partial.drain(..=end).collect();
        let reply: Value = serde_json::from_slice(&line).expect("stdout carries JSON");
        let body = &reply["body"];
        let Some(request) = body["in_reply_to"]
            .as_u64()
            .and_then(|id| requests.get(&id))
        else {
            continue;
        };
        match body["type"].as_str() {
            Some("send_ok") => acked.sends.push((
                request["key"].as_str().expect("key").to_string(),
                body["offset"].as_u64().expect("offset"),
                request["msg"].clone(),
            )),
            Some("commit_offsets_ok") => {
                for (key, offset) in request["offsets"].as_object().expect("offsets") {
                    let offset = offset.as_u64().expect("offset");
                    let slot = acked.commits.entry(key.clone()).or_insert(offset);
                    *slot = (*slot).max(offset);
                }
            }
            _ => {}
        }
    }
}

/// Opens the store in `data` and checks it holds everything `acked` says;
/// the error says what is wrong.
fn check_image(data: &Path, acked: &Acked) -> Result<(), String> {
    let config = StoreConfig {
        segment_bytes: SEGMENT_BYTES,
        ..StoreConfig::default()
    };
    let mut store = Store::open(data, config.clone()).map_err(|e| format!("does not open: {e}"))?;
    check_store(&mut store, acked)?;
    // What recovery left must take appends at the next offsets and keep
    // everything across a crash of its own (kill -9: the page cache stays).
    let mut ends = Vec::new();
    for key in (0..KEYS).map(|k| format!("k{k}")) {
        let end = store
            .append(&key, b"\"after recovery\"")
            .map_err(|e| format!("appending to {key} after recovery: {e}"))?;
        ends.push((key, end));
    }
    store
        .sync()
        .map_err(|e| format!("syncing after recovery: {e}"))?;
    // A kill -9 keeps every written byte: a copy of the files is what the
    // next process would find. The copy, not the directory itself, is
    // reopened: a child that another test is spawning right now may still
    // share this store's lock (until its exec closes it), and would make
    // the reopen fail with "locked" for no fault of the store's.
    let again = data.with_extension("reopened");
    copy_tree(data, &again).map_err(|e| format!("copying the store: {e}"))?;
    drop(store);
    let mut store = Store::open(&again, config).map_err(|e| format!("does not reopen: {e}"))?;
    check_store(&mut store, acked).map_err(|e| format!("after one more append and reopen: {e}"))?;
    for (key, end) in ends {
        let next = store
            .durable_next_offset(&key)
            .map_err(|e| format!("{key}: {e}"))?;
        if next != end + 1 {
            return Err(format!(
                "{key}: an append after recovery took offset {end}, but the log now ends at {next}"
            ));
        }
    }
    Ok(())
}

/// Checks `store` holds what `acked` says, and reads cleanly from offset 0.
fn check_store(store: &mut Store, acked: &Acked) -> Result<(), String> {
    for (key, offset, msg) in &acked.sends {
        let mut found = None;
        store
            .read(key, *offset, &mut |at, payload| {
                found = Some((at, payload.to_vec()));
                false
            })
            .map_err(|e| format!("reading {key} at {offset}: {e}"))?;
        let expected = msg.to_string().into_bytes();
        if found.as_ref() != Some(&(*offset, expected)) {
            return Err(format!(
                "acknowledged send of {msg} to {key} at offset {offset} reads back as {:?}",
                found.map(|(at, bytes)| (at, String::from_utf8_lossy(&bytes).into_owned()))
            ));
        }
    }
    for key in (0..KEYS).map(|k| format!("k{k}")) {
        let mut next = 0;
        store
            .read(&key, 0, &mut |at, _| {
                next = at + 1;
                true
            })
            .map_err(|e| format!("reading {key} from 0 stopped at {next}: {e}"))?;
    }
    for (key, offset) in &acked.commits {
        if store.committed(key).is_none_or(|c| c < *offset) {
            return Err(format!(
                "acknowledged commit of {key} at {offset}, listed {:?}",
                store.committed(key)
            ));
        }
    }
    Ok(())
}

/// Segment size of the run: a few records each, so keys roll often.
const SEGMENT_BYTES: u64 = 1024;

/// A node run under the recorder, and what it needs to start again.
struct Recorded {
    tmp: TempDir,
    /// Where the crash images are built and checked: in memory where the
    /// machine allows (`dirs::scratch_dir`). Each image is opened, synced
    /// and thrown away; on a disk shared with other work, those syncs took
    /// most of this test's time.
    scratch: TempDir,
    library: PathBuf,
    root: PathBuf,
    root_text: String,
    log: PathBuf,
    /// The recorder's kill FIFO (`SEGLOG_IOLOG_KILL`).
    kill_fifo: PathBuf,
    requests: Requests,
    /// Messages sent so far (each send's message is unique).
    value: u64,
    /// Keys the workload sends to (the first `keys` of k0, k1, ...).
    keys: usize,
}

impl Recorded {
    fn new() -> Recorded {
        let tmp = TempDir::new().expect("tempdir");
        let library = build_recorder(tmp.path());
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).expect("root");
        let root = root.canonicalize().expect("absolute root");
        let log = tmp.path().join("io.log");
        let kill_fifo = tmp.path().join("kill");
        let fifo_path = std::ffi::CString::new(kill_fifo.as_os_str().as_encoded_bytes())
            .expect("a path without NUL");
        // SAFETY: a valid NUL-terminated path; mkfifo reads nothing else.
        let made = unsafe { libc::mkfifo(fifo_path.as_ptr(), 0o600) };
        assert_eq!(made, 0, "mkfifo: {}", std::io::Error::last_os_error());
        let root_text = root.to_str().expect("UTF-8 root").to_string();
        Recorded {
            tmp,
            scratch: scratch_dir(),
            library,
            root,
            root_text,
            log,
            kill_fifo,
            requests: Requests::new(),
            value: 0,
            keys: KEYS,
        }
    }

    /// Starts a node whose requests' msg_ids start at `first_id` (every
    /// process answers into one log: their ids must differ).
    fn start(&self, first_id: u64) -> Node {
        let segment_bytes = SEGMENT_BYTES.to_string();
        let mut node = Node::start_with_env(
            &[
                "--data-dir",
                &self.root_text,
                "--segment-bytes",
                &segment_bytes,
            ],
            [
                ("LD_PRELOAD", self.library.as_os_str()),
                ("SEGLOG_IOLOG", self.log.as_os_str()),
                ("SEGLOG_IOLOG_ROOT", self.root.as_os_str()),
                ("SEGLOG_IOLOG_KILL", self.kill_fifo.as_os_str()),
                // A checkpoint every few KiB of journal: rotations and
                // checkpoints all through the run.
                ("SEGLOG_CHECKPOINT_BYTES", std::ffi::OsStr::new("3000")),
            ],
        );
        node.next_id = first_id;
        let init = node.call(json!({"type": "init", "node_id": "n0", "node_ids": ["n0"]}));
        assert_eq!(init["body"]["type"], "init_ok", "{init}");
        node
    }

    /// Runs rounds `rounds` of the workload on `node`: in each, one send
    /// per key (one key alone every fifth round: direct sync points) and
    /// now and then a commit, pipelined, all answered before the next.
    fn run(&mut self, node: &mut Node, rounds: std::ops::Range<u64>) {
        for round in rounds {
            let mut ids = Vec::new();
            for k in 0..self.keys {
                if round % 5 == 0 && k > 0 {
                    continue;
                }
                self.value += 1;
                let value = self.value;
                let pad = "x".repeat((value % 90) as usize);
                let body = json!({"type": "send", "key": format!("k{k}"), "msg": {"v": value, "pad": pad}});
                ids.push((node.request(body.clone()), body));
            }
            if round % 3 == 0 {
                let offsets = json!({"k0": round / 2, "k1": round / 3});
                let body = json!({"type": "commit_offsets", "offsets": offsets});
                ids.push((node.request(body.clone()), body));
            }
            for _ in 0..ids.len() {
                let reply = node.reply();
                assert_ne!(reply["body"]["type"], "error", "{reply}");
            }
            self.requests.extend(ids);
        }
    }

    /// Kills `node` with SIGKILL after a fence, a commit answered (so
    /// every earlier request's writes are in the log). The kill goes
    /// through the recorder, which sends it between two recorded
    /// operations: the log then holds every operation the node made. A
    /// kill from here could land between an operation and its record (the
    /// recorder logs each after it returns), and the node still writes
    /// after its last answer: a sync point is acknowledged once durable,
    /// and its journaled records go to their segments after, which with
    /// the Raft groups includes the fence's own applied record in the
    /// group's log key (rolling it to a new segment now and then).
    fn kill(&mut self, node: Node) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut node = node;
        let body = json!({"type": "commit_offsets", "offsets": {"fence": self.value}});
        let id = node.request(body.clone());
        let reply = node.reply();
        assert_eq!(reply["body"]["type"], "commit_offsets_ok", "{reply}");
        self.requests.insert(id, body);
        // Non-blocking: with no node holding the FIFO open, this fails
        // rather than waits.
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.kill_fifo)
            .and_then(|mut fifo| fifo.write_all(b"k"))
            .expect("asking the recorder to kill the node");
        node.wait_for_sigkill();
    }

    fn ops(&self) -> Vec<Op> {
        parse_log(&std::fs::read(&self.log).expect("the log"))
    }
}

/// What checking the crash points of a stretch of the log found.
#[derive(Default)]
struct Checked {
    acked: Acked,
    /// Bytes of stdout not yet ending in a newline.
    partial: Vec<u8>,
    images: usize,
    failures: Vec<String>,
    seed: u64,
}

impl Checked {
    /// Applies `ops` to `model`, and after each checks `2 + random` images
    /// of what a power loss could leave (under `scratch`).
    fn check(
        &mut self,
        model: &mut Model,
        ops: &[Op],
        requests: &Requests,
        random: usize,
        scratch: &Path,
    ) {
        for (i, op) in ops.iter().enumerate() {
            model.apply(op);
            if let Op::Out { bytes } = op {
                take_acks(bytes, requests, &mut self.acked, &mut self.partial);
            }
            // After five failures the rest is only replayed, for the
            // checks that follow.
            let images = if self.failures.len() < 5 {
                2 + random
            } else {
                0
            };
            for image_kind in 0..images {
                let image = scratch.join("image");
                let _ = std::fs::remove_dir_all(&image);
                match image_kind {
                    0 => model.image(&image, &mut || false),
                    1 => model.image(&image, &mut || true),
                    _ => {
                        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                        let mut rng = Rng(self.seed | 1);
                        model.image(&image, &mut || rng.bool());
                    }
                }
                self.images += 1;
                if let Err(why) = check_image(&image.join("n0"), &self.acked) {
                    self.failures.push(format!(
                        "after operation {i} ({}), image {image_kind}: {why}",
                        describe(op)
                    ));
                    if self.failures.len() >= 5 {
                        break;
                    }
                }
            }
        }
    }

    fn assert_passed(&self, what: &str, ops: usize, requests: &Requests) {
        eprintln!(
            "power loss ({what}): {ops} operations recorded, {} crash images checked, \
             {} sends and {} keys' commits acknowledged in all",
            self.images,
            self.acked.sends.len(),
            self.acked.commits.len()
        );
        assert!(self.failures.is_empty(), "{}", self.failures.join("\n"));
        let sends = requests.values().filter(|r| r["type"] == "send").count();
        // (Not the fence: a kill right after its answer may cut the record
        // of that last write.)
        assert!(
            self.acked.commits.contains_key("k0"),
            "commits were recorded as acknowledged"
        );
        assert_eq!(
            self.acked.sends.len(),
            sends,
            "every send was acknowledged, and the recorder logged it"
        );
    }
}

fn syncs(ops: &[Op]) -> usize {
    ops.iter()
        .filter(|op| matches!(op, Op::Sync { .. } | Op::DirSync { .. }))
        .count()
}

impl Recorded {
    /// The first half of the workload's rounds, in a first process, killed.
    fn first_half(&mut self, rounds: u64) {
        let mut node = self.start(1);
        self.run(&mut node, 0..rounds / 2);
        self.kill(node);
    }

    /// The second half in a second process, killed. It leaves k2 and k3
    /// alone: the segments the first run wrote for them are synced by
    /// nothing but the checkpoint (recovery's duty).
    fn second_half(&mut self, rounds: u64) {
        self.keys = 2;
        let mut node = self.start(1_000_000);
        self.run(&mut node, rounds / 2..rounds);
        self.kill(node);
    }
}

impl Checked {
    /// [`Checked::check`], then, if nothing failed, that the model's live
    /// tree is the disk `disk` as the run left it.
    fn check_then_compare(
        &mut self,
        model: &mut Model,
        ops: &[Op],
        run: &Recorded,
        random: usize,
        disk: &Path,
    ) {
        self.check(model, ops, &run.requests, random, run.scratch.path());
        if self.failures.is_empty() {
            model.assert_live_is(disk);
        }
    }
}

/// The workload's rounds and random images per crash point.
fn sizes() -> (u64, usize) {
    let rounds = tier::sized("SEGLOG_POWERLOSS_ROUNDS", ROUNDS_SHORT, ROUNDS_LONG);
    let random = tier::sized(
        "SEGLOG_POWERLOSS_IMAGES",
        RANDOM_IMAGES_SHORT,
        RANDOM_IMAGES_LONG,
    );
    let random = usize::try_from(random).expect("SEGLOG_POWERLOSS_IMAGES fits in usize");
    (rounds, random)
}

/// A power loss after any operation of a run with rolls, checkpoints and a
/// `kill -9` restart half way (which keeps the page cache: the second
/// process recovers from the live state, and its first checkpoint must
/// sync what recovery kept).
#[test]
fn power_loss_after_any_operation_keeps_everything_acknowledged() {
    let (rounds, random) = sizes();
    let mut run = Recorded::new();
    run.first_half(rounds);
    let first = run.ops().len();
    let half_way = run.tmp.path().join("half-way");
    copy_tree(&run.root, &half_way).expect("copy the data directory");
    run.second_half(rounds);
    let ops = run.ops();
    assert!(syncs(&ops) > 50, "the recorder saw the node's syncs");
    let mut checked = Checked::default();
    let mut model = Model::new(&run.root_text);
    checked.check_then_compare(&mut model, &ops[..first], &run, random, &half_way);
    checked.check_then_compare(&mut model, &ops[first..], &run, random, &run.root);
    checked.assert_passed("kill -9 half way", ops.len(), &run.requests);
}

/// A power loss half way, then recovery from what it left, then a power
/// loss after any operation of the second run (recovery included): what
/// was acknowledged before the first is still there after the second.
#[test]
fn power_loss_during_recovery_from_a_power_loss_keeps_everything_acknowledged() {
    let (rounds, random) = sizes();
    let mut run = Recorded::new();
    run.first_half(rounds);
    let first = run.ops();
    let mut checked = Checked::default();
    let mut model = Model::new(&run.root_text);
    checked.check_then_compare(&mut model, &first, &run, random, &run.root);
    // The first power loss: a random image of the end of the first run
    // becomes the disk the second run starts on.
    let restart = run.tmp.path().join("restart");
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    model.image(&restart, &mut || rng.bool());
    let data = run.root.join("n0");
    std::fs::remove_dir_all(&data).expect("remove the data directory");
    copy_tree(&restart.join("n0"), &data).expect("copy the image");
    let mut model = Model::from_disk(&run.root_text, &run.root);
    run.second_half(rounds);
    let ops = run.ops();
    let second = &ops[first.len()..];
    assert!(
        syncs(second) > 20,
        "the recorder saw the second run's syncs"
    );
    checked.check_then_compare(&mut model, second, &run, random, &run.root);
    checked.assert_passed("power loss half way", ops.len(), &run.requests);
}
