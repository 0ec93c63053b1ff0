//! A simulated disk for tests: [`SimFs`] implements [`Backend`] in memory,
//! deterministically, and keeps for every file and directory what is
//! durable apart from what is only written, so that a test can cut the
//! power at any moment and open the real engine on what a disk could hold
//! afterwards.
//!
//! # The model
//! * **Inodes apart from names.** Files and directories are inodes;
//!   directories map names to inodes. An open handle refers to its inode, so
//!   writes to a file that was renamed or unlinked go to that file.
//! * **Files.** Each file has its live bytes (what reads see) and its
//!   durable bytes and size (as of its last successful `sync_data` or
//!   `sync_all`). Every change since then is remembered per 4 KiB page
//!   ([`PAGE_BYTES`]): each version a page took, and each size the file took.
//! * **Directories.** Each directory has its live entries and its durable
//!   entries (as of its last `sync_dir`), and the list of creations,
//!   removals and renames of its entries since then, in order.
//!   `remove_dir_all` is the unlink of every entry below the directory,
//!   deepest first, then the unlink of the directory itself. A rename moves
//!   an entry within one directory; across directories it fails with
//!   `EXDEV` (the engine never does one).
//! * **Power loss.** [`SimFs::power_loss`] builds a new disk holding one
//!   image of what survives: for each directory its durable entries plus any
//!   subset of the later operations, applied in order (one that no longer
//!   applies, such as a rename whose source is gone, is skipped); for each
//!   file reachable in that tree, a size it had at some moment since its
//!   last sync, and each page as it was at some moment since then, chosen
//!   independently of the other pages and of the size (bytes past the
//!   durable end read as zeros where the page's data did not reach the
//!   disk). [`Keep`] says which image: only what is durable, everything
//!   written, or a seeded random choice. (At most [`PAGE_VERSIONS_MAX`]
//!   versions of a page and [`SIZES_MAX`] sizes are remembered between
//!   syncs: fewer choices, never an impossible one.)
//! * **Lost writeback.** A `sync_data` or `sync_all` that fails (an
//!   injected fault) leaves every page written since the last sync
//!   undetermined for good, as Linux does when writeback fails: the pages
//!   are marked clean, so a later successful sync does not write them. Only
//!   a page written again after the failure becomes durable at the next
//!   successful sync. `sync_file_system` does not resolve them either.
//!   [`SimFs::evict_lost_writeback`] drops those pages from the cache, as
//!   memory pressure may: reads then see what the disk holds.
//! * **Crash point.** Every operation that changes or syncs anything is
//!   counted (see [`FaultOp::counted`]): `open` with
//!   [`OpenMode::CreateNew`] or [`OpenMode::Truncate`], `write_all_at`,
//!   `set_len`, `sync_data`, `sync_all`, `create_dir`, `remove_file`,
//!   `remove_dir_all`, `rename`, `sync_dir`, `sync_file_system` and
//!   `try_lock`. After [`SimFs::crash_at`]`(n)`, the counted operation
//!   number `n` (from 0) and every later one fail and change nothing: the
//!   process is dead from then on. Reads keep working, so the dead
//!   process can be dropped cleanly.
//! * **Faults.** [`SimFs::fail`] arms a [`Fault`]: the matching operation
//!   after `after` matching ones fails with the given errno (once, or every
//!   time until [`SimFs::heal`]); a torn write leaves the first half of its
//!   bytes written, a torn `remove_dir_all` the first half of its unlinks
//!   done. A failed operation changes nothing else (a failed sync
//!   loses its writeback, as above).
//!
//! Syncs run on the calling thread ([`Backend::parallel_syncs`] is false),
//! so a run of the engine performs its operations in one order, and a crash
//! at operation `n` of one run hits the same operation in a rerun.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use crate::storage::backend::{Backend, DirEntry, FileIo, LockGuard, OpenMode, Stat};
use crate::storage::mmap::MappedFile;

/// The unit in which unsynced data reaches the disk: a power loss keeps
/// each page of a file whole as of some moment, never half of one write to
/// it and half of the next (the kernel writes back whole pages).
pub const PAGE_BYTES: usize = 4096;

/// Versions of one page remembered since the file's last sync. A page that
/// is appended to record by record takes a version per record; past this
/// many, the oldest versions after the durable one are forgotten, which
/// only narrows the images a power loss can choose from (never yields one
/// a disk could not hold), and bounds the memory a long unsynced run takes.
pub const PAGE_VERSIONS_MAX: usize = 64;

/// Sizes of one file remembered since its last sync, bounded for the same
/// reason as [`PAGE_VERSIONS_MAX`].
pub const SIZES_MAX: usize = 64;

/// The inode of the root directory.
const ROOT: u64 = 0;

/// Which image of the disk survives a power loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Only what was made durable: what a disk that wrote nothing back on
    /// its own would hold.
    Nothing,
    /// Everything written: what `kill -9` leaves in the page cache.
    Everything,
    /// For each file page, file size and directory operation not yet
    /// durable, a choice drawn from this seed. The seed also sets how far
    /// the choices lean to the latest state (`seed % 3`: rarely, half the
    /// time, mostly), so a few consecutive seeds cover images close to
    /// the durable state, close to the live one, and in between.
    Random(u64),
}

/// The operations a [`Fault`] can target (and [`SimFs::count`] counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultOp {
    /// `open` of an existing file ([`OpenMode::Read`] or [`OpenMode::Write`]).
    Open,
    /// `open` that creates or truncates ([`OpenMode::CreateNew`], [`OpenMode::Truncate`]).
    Create,
    /// [`FileIo::write_all_at`].
    Write,
    /// [`FileIo::set_len`].
    SetLen,
    /// [`FileIo::sync_data`].
    SyncData,
    /// [`FileIo::sync_all`].
    SyncAll,
    /// [`FileIo::size`].
    Size,
    /// [`FileIo::map`].
    Map,
    /// [`Backend::read`].
    Read,
    /// [`Backend::stat`] (and so [`Backend::exists`]).
    Stat,
    /// [`Backend::list`].
    List,
    /// [`Backend::create_dir`].
    CreateDir,
    /// [`Backend::remove_file`] and [`Backend::remove_dir_all`].
    Remove,
    /// [`Backend::rename`].
    Rename,
    /// [`Backend::sync_dir`].
    SyncDir,
    /// [`Backend::sync_file_system`].
    SyncFileSystem,
    /// [`Backend::try_lock`].
    Lock,
}

impl FaultOp {
    /// Whether the operation changes or syncs something, and so counts
    /// towards [`SimFs::ops`] and the crash point. ([`FaultOp::Open`] never
    /// does; [`FaultOp::Create`] always does.)
    pub fn counted(self) -> bool {
        !matches!(
            self,
            FaultOp::Open
                | FaultOp::Size
                | FaultOp::Map
                | FaultOp::Read
                | FaultOp::Stat
                | FaultOp::List
        )
    }
}

/// A failure to inject: built with [`Fault::new`] and its setters, armed
/// with [`SimFs::fail`].
///
/// ```
/// use seglog::storage::sim::{Fault, FaultOp, SimFs};
/// let fs = SimFs::new();
/// // The third fdatasync of a journal file fails with EIO, once.
/// fs.fail(Fault::new(FaultOp::SyncData).after(2).path_contains("journal"));
/// // Every write fails with ENOSPC, leaving half its bytes, until healed.
/// fs.fail(Fault::new(FaultOp::Write).errno(libc::ENOSPC).persist().torn());
/// fs.heal();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The operation that fails.
    pub op: FaultOp,
    /// Matching operations that succeed before the one that fails.
    pub after: u64,
    /// The errno of the error returned (`EIO` by default).
    pub errno: i32,
    /// Every later matching operation fails too, until [`SimFs::heal`].
    pub persist: bool,
    /// A failing write leaves the first half of its bytes written (a short
    /// write followed by an error); a failing `remove_dir_all` the first
    /// half of its unlinks done (it removes entry by entry).
    pub torn: bool,
    /// Only operations on a path containing this string match.
    pub path: Option<String>,
}

impl Fault {
    /// The next `op` fails with `EIO`, once.
    pub fn new(op: FaultOp) -> Fault {
        Fault {
            op,
            after: 0,
            errno: libc::EIO,
            persist: false,
            torn: false,
            path: None,
        }
    }

    /// Lets `n` matching operations succeed first.
    pub fn after(mut self, n: u64) -> Fault {
        self.after = n;
        self
    }

    /// Fails with `errno` (`libc::EIO`, `libc::ENOSPC`, ...).
    pub fn errno(mut self, errno: i32) -> Fault {
        self.errno = errno;
        self
    }

    /// Keeps failing every matching operation until [`SimFs::heal`].
    pub fn persist(mut self) -> Fault {
        self.persist = true;
        self
    }

    /// A failing write leaves the first half of its bytes written, a
    /// failing `remove_dir_all` the first half of its unlinks done.
    pub fn torn(mut self) -> Fault {
        self.torn = true;
        self
    }

    /// Matches only operations on paths containing `part`.
    pub fn path_contains(mut self, part: &str) -> Fault {
        self.path = Some(part.to_string());
        self
    }

    fn matches(&self, op: FaultOp, path: &Path) -> bool {
        self.op == op
            && self
                .path
                .as_deref()
                .is_none_or(|part| path.to_string_lossy().contains(part))
    }
}

/// The error of every counted operation from the crash point on.
#[derive(Debug)]
struct Crashed;

impl fmt::Display for Crashed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "simulated power loss: the process is dead")
    }
}

impl std::error::Error for Crashed {}

/// One page's bytes, [`PAGE_BYTES`] long.
type Page = Box<[u8]>;

/// A file inode.
#[derive(Clone, Debug)]
struct FileNode {
    /// What reads see.
    live: Vec<u8>,
    /// The content at the last successful sync.
    durable: Vec<u8>,
    /// Pages whose durable content is one of these rather than the page of
    /// `durable`: written before a sync that failed, and not since.
    unsure: BTreeMap<u64, Vec<Page>>,
    /// The sizes the file may have durably: one after a successful sync,
    /// more after a failed one.
    durable_lens: Vec<u64>,
    /// Each version each page took since the last sync, oldest first.
    history: BTreeMap<u64, Vec<Page>>,
    /// Each size the file took since the last sync.
    lens_since: Vec<u64>,
    /// The time of the last change.
    modified: SystemTime,
}

/// A directory inode.
#[derive(Clone, Debug, Default)]
struct DirNode {
    /// What lookups and listings see.
    live: BTreeMap<OsString, u64>,
    /// The entries at the last `sync_dir`.
    durable: BTreeMap<OsString, u64>,
    /// Changes to the entries since then, in order.
    pending: Vec<DirOp>,
}

/// One change to a directory's entries.
#[derive(Clone, Debug)]
enum DirOp {
    /// `name` now refers to `ino` (replacing what it referred to).
    Link { name: OsString, ino: u64 },
    /// `name`, which referred to `ino`, is gone.
    Unlink { name: OsString, ino: u64 },
    /// `ino` moved from `from` to `to`, replacing what `to` referred to.
    Rename {
        from: OsString,
        to: OsString,
        ino: u64,
    },
}

#[derive(Clone, Debug)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

/// What [`State::gate`] lets an operation do.
enum Gate {
    Go,
    /// At or past the crash point: fail and change nothing.
    Crash(io::Error),
    /// An injected fault.
    Fail(io::Error),
    /// A torn write: write the first half, then return the error.
    Torn(io::Error),
}

/// The whole disk, behind one lock.
#[derive(Debug)]
struct State {
    nodes: BTreeMap<u64, Node>,
    next_ino: u64,
    /// Counted operations so far (crashed ones included).
    ops: u64,
    /// The counted operation from which everything fails.
    crash_at: Option<u64>,
    /// Set once the crash point is reached.
    crashed: bool,
    /// Armed faults, each with the matching operations left before it fires.
    faults: Vec<Fault>,
    /// Faults that fired so far.
    fired: u64,
    /// Inodes of the files locked with `try_lock`.
    locked: BTreeSet<u64>,
    /// Calls of each kind of operation so far.
    calls: BTreeMap<FaultOp, u64>,
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn page_count(len: u64) -> u64 {
    len.div_ceil(PAGE_BYTES as u64)
}

/// Page `index` of `bytes`, zero-padded past their end.
fn page_of(bytes: &[u8], index: u64) -> Page {
    let mut page = vec![0u8; PAGE_BYTES].into_boxed_slice();
    let start = (index as usize).saturating_mul(PAGE_BYTES);
    if start < bytes.len() {
        let end = bytes.len().min(start + PAGE_BYTES);
        page[..end - start].copy_from_slice(&bytes[start..end]);
    }
    page
}

/// Pushes `item` unless it equals the last one, forgetting the oldest
/// entries past `max` (the first one, the durable reference, is kept).
fn push_bounded<T: PartialEq>(list: &mut Vec<T>, item: T, max: usize) {
    if list.last() == Some(&item) {
        return;
    }
    list.push(item);
    if list.len() > max {
        list.remove(1.min(list.len() - 1));
    }
}

/// A small deterministic generator (SplitMix64): images must be
/// reproducible from a seed, and the library has no `rand`.
struct Rng {
    state: u64,
    /// In eighths, how often a choice leans to the latest state: the
    /// seed picks 1, 4 or 7, so that among the images of several seeds are
    /// some that keep almost nothing unsynced and some that keep almost
    /// everything but one operation, which an even coin rarely draws.
    lean: u64,
}

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng {
            state: seed,
            lean: [1, 4, 7][(seed % 3) as usize],
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Whether to keep an operation not yet durable.
    fn keep(&mut self) -> bool {
        self.next() % 8 < self.lean
    }

    /// One of `n` states in order of time: the latest as often as the
    /// seed leans, else any.
    fn pick(&mut self, n: usize) -> usize {
        if self.keep() {
            n.saturating_sub(1)
        } else {
            self.below(n)
        }
    }
}

impl FileNode {
    fn new() -> FileNode {
        FileNode {
            live: Vec::new(),
            durable: Vec::new(),
            unsure: BTreeMap::new(),
            durable_lens: vec![0],
            history: BTreeMap::new(),
            lens_since: Vec::new(),
            modified: SystemTime::now(),
        }
    }

    /// A file whose only state is `bytes`, durable.
    fn durable(bytes: Vec<u8>, modified: SystemTime) -> FileNode {
        FileNode {
            durable_lens: vec![bytes.len() as u64],
            durable: bytes.clone(),
            live: bytes,
            unsure: BTreeMap::new(),
            history: BTreeMap::new(),
            lens_since: Vec::new(),
            modified,
        }
    }

    /// Records the live versions of pages `[first, end)` and the live size,
    /// after a change.
    fn changed(&mut self, first: u64, end: u64) {
        for index in first..end {
            let page = page_of(&self.live, index);
            let versions = self.history.entry(index).or_default();
            push_bounded(versions, page, PAGE_VERSIONS_MAX);
        }
        push_bounded(&mut self.lens_since, self.live.len() as u64, SIZES_MAX);
        self.modified = SystemTime::now();
    }

    fn write(&mut self, bytes: &[u8], position: u64) -> io::Result<()> {
        let start = usize::try_from(position).map_err(|_| errno(libc::EFBIG))?;
        let end = start
            .checked_add(bytes.len())
            .ok_or_else(|| errno(libc::EFBIG))?;
        if bytes.is_empty() {
            return Ok(());
        }
        let old_len = self.live.len();
        if end > self.live.len() {
            self.live.resize(end, 0);
        }
        self.live[start..end].copy_from_slice(bytes);
        // A write past the end zero-fills the gap: those pages change too.
        let first = (start.min(old_len) / PAGE_BYTES) as u64;
        self.changed(first, page_count(end as u64));
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len_usize = usize::try_from(len).map_err(|_| errno(libc::EFBIG))?;
        let old_len = self.live.len();
        if len_usize == old_len {
            return Ok(());
        }
        self.live.resize(len_usize, 0);
        let low = len_usize.min(old_len);
        let high = len_usize.max(old_len);
        self.changed((low / PAGE_BYTES) as u64, page_count(high as u64));
        Ok(())
    }

    /// A successful sync: the live content is durable, except pages still
    /// undetermined by an earlier failed sync and not written since.
    fn synced(&mut self) {
        for index in self.history.keys() {
            self.unsure.remove(index);
        }
        self.history.clear();
        self.lens_since.clear();
        self.durable = self.live.clone();
        self.durable_lens = vec![self.live.len() as u64];
    }

    /// A failed sync: whatever was written since the last sync may or may
    /// not be on the disk, and stays so (the dirty state is dropped).
    fn sync_failed(&mut self) {
        let history = std::mem::take(&mut self.history);
        for (index, versions) in history {
            let durable = page_of(&self.durable, index);
            let entry = self.unsure.entry(index).or_insert_with(|| vec![durable]);
            for version in versions {
                if !entry.contains(&version) {
                    entry.push(version);
                }
            }
        }
        for len in std::mem::take(&mut self.lens_since) {
            if !self.durable_lens.contains(&len) {
                self.durable_lens.push(len);
            }
        }
    }

    /// The kernel drops the pages a failed sync left: each page whose
    /// writeback failed and that was not written since is read back from
    /// the disk, as it was at the last successful sync (the oldest of the
    /// contents the disk may hold; none of the failed writes reached it).
    /// The file's size stays (the kernel keeps it in memory).
    fn evict_lost_writeback(&mut self) {
        for (index, versions) in &mut self.unsure {
            if self.history.contains_key(index) {
                continue;
            }
            let page = versions[0].clone();
            let start = *index as usize * PAGE_BYTES;
            if start < self.live.len() {
                let end = self.live.len().min(start + PAGE_BYTES);
                self.live[start..end].copy_from_slice(&page[..end - start]);
            }
            *versions = vec![page];
        }
    }

    /// The bytes one image of the disk holds for this file.
    fn image(&self, keep: Keep, rng: &mut Rng) -> Vec<u8> {
        let len = match keep {
            Keep::Everything => return self.live.clone(),
            Keep::Nothing => self.durable_lens[0],
            Keep::Random(_) => {
                let choices = self.durable_lens.len() + self.lens_since.len();
                let pick = rng.pick(choices);
                match self.durable_lens.get(pick) {
                    Some(len) => *len,
                    None => self.lens_since[pick - self.durable_lens.len()],
                }
            }
        };
        let mut out = vec![0u8; len as usize];
        for index in 0..page_count(len) {
            let durable = self.unsure.get(&index);
            let later = self.history.get(&index).map_or(&[][..], Vec::as_slice);
            let durable_count = durable.map_or(1, Vec::len);
            let pick = match keep {
                Keep::Random(_) => rng.pick(durable_count + later.len()),
                _ => 0,
            };
            let page = if pick < durable_count {
                match durable {
                    Some(versions) => versions[pick].clone(),
                    None => page_of(&self.durable, index),
                }
            } else {
                later[pick - durable_count].clone()
            };
            let start = index as usize * PAGE_BYTES;
            let end = out.len().min(start + PAGE_BYTES);
            out[start..end].copy_from_slice(&page[..end - start]);
        }
        out
    }
}

impl DirNode {
    /// The entries one image of the disk holds for this directory.
    fn image(&self, keep: Keep, rng: &mut Rng) -> BTreeMap<OsString, u64> {
        if keep == Keep::Everything {
            return self.live.clone();
        }
        let mut entries = self.durable.clone();
        if keep == Keep::Nothing {
            return entries;
        }
        for op in &self.pending {
            if !rng.keep() {
                continue;
            }
            match op {
                DirOp::Link { name, ino } => {
                    entries.insert(name.clone(), *ino);
                }
                DirOp::Unlink { name, ino } => {
                    if entries.get(name) == Some(ino) {
                        entries.remove(name);
                    }
                }
                DirOp::Rename { from, to, ino } => {
                    if entries.get(from) == Some(ino) {
                        entries.remove(from);
                        entries.insert(to.clone(), *ino);
                    }
                }
            }
        }
        entries
    }
}

/// The names of `path`, from the root (`.` and a leading `/` ignored).
fn names(path: &Path) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err(errno(libc::ENOENT));
                }
            }
        }
    }
    Ok(out)
}

impl State {
    fn new() -> State {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        State {
            nodes,
            next_ino: ROOT + 1,
            ops: 0,
            crash_at: None,
            crashed: false,
            faults: Vec::new(),
            fired: 0,
            locked: BTreeSet::new(),
            calls: BTreeMap::new(),
        }
    }

    /// Counts the operation if it is counted, and decides whether it fails:
    /// at or past the crash point, or by an armed fault.
    fn gate(&mut self, op: FaultOp, path: &Path) -> Gate {
        *self.calls.entry(op).or_default() += 1;
        if op.counted() {
            let number = self.ops;
            self.ops += 1;
            if self.crashed || self.crash_at.is_some_and(|at| number >= at) {
                self.crashed = true;
                return Gate::Crash(io::Error::other(Crashed));
            }
        }
        let mut fire = None;
        for (index, fault) in self.faults.iter_mut().enumerate() {
            if !fault.matches(op, path) {
                continue;
            }
            if fault.after == 0 {
                fire = Some(index);
                break;
            }
            fault.after -= 1;
        }
        let Some(index) = fire else {
            return Gate::Go;
        };
        self.fired += 1;
        let fault = if self.faults[index].persist {
            self.faults[index].clone()
        } else {
            self.faults.remove(index)
        };
        let error = errno(fault.errno);
        if fault.torn && matches!(op, FaultOp::Write | FaultOp::Remove) {
            Gate::Torn(error)
        } else {
            Gate::Fail(error)
        }
    }

    /// Fails unless `gate` lets the operation go (a torn write aside).
    fn check(&mut self, op: FaultOp, path: &Path) -> io::Result<()> {
        match self.gate(op, path) {
            Gate::Go => Ok(()),
            Gate::Crash(e) | Gate::Fail(e) | Gate::Torn(e) => Err(e),
        }
    }

    fn node(&self, ino: u64) -> &Node {
        self.nodes.get(&ino).expect("an inode that was created")
    }

    fn node_mut(&mut self, ino: u64) -> &mut Node {
        self.nodes.get_mut(&ino).expect("an inode that was created")
    }

    fn file_mut(&mut self, ino: u64) -> &mut FileNode {
        match self.node_mut(ino) {
            Node::File(file) => file,
            Node::Dir(_) => panic!("inode {ino} is a directory, opened as a file"),
        }
    }

    fn dir(&self, ino: u64) -> io::Result<&DirNode> {
        match self.node(ino) {
            Node::Dir(dir) => Ok(dir),
            Node::File(_) => Err(errno(libc::ENOTDIR)),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> io::Result<&mut DirNode> {
        match self.node_mut(ino) {
            Node::Dir(dir) => Ok(dir),
            Node::File(_) => Err(errno(libc::ENOTDIR)),
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let mut ino = ROOT;
        for name in names(path)? {
            ino = *self
                .dir(ino)?
                .live
                .get(name)
                .ok_or_else(|| errno(libc::ENOENT))?;
        }
        Ok(ino)
    }

    /// The directory holding `path`'s last name, and that name.
    fn parent(&self, path: &Path) -> io::Result<(u64, OsString)> {
        let mut names = names(path)?;
        let name = names.pop().ok_or_else(|| errno(libc::EINVAL))?;
        let mut ino = ROOT;
        for part in names {
            ino = *self
                .dir(ino)?
                .live
                .get(part)
                .ok_or_else(|| errno(libc::ENOENT))?;
        }
        self.dir(ino)?;
        Ok((ino, name.to_os_string()))
    }

    fn create(&mut self, parent: u64, name: OsString, node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        let dir = self.dir_mut(parent).expect("the parent is a directory");
        dir.live.insert(name.clone(), ino);
        dir.pending.push(DirOp::Link { name, ino });
        ino
    }

    fn unlink(&mut self, parent: u64, name: &OsStr) {
        let dir = self.dir_mut(parent).expect("the parent is a directory");
        if let Some(ino) = dir.live.remove(name) {
            dir.pending.push(DirOp::Unlink {
                name: name.to_os_string(),
                ino,
            });
        }
    }

    /// Unlinks everything below directory `ino`, deepest first.
    /// The entries below directory `ino` as `(directory, name)`, deepest
    /// first: the order `remove_dir_all` unlinks them in.
    fn entries_below(&self, ino: u64, out: &mut Vec<(u64, OsString)>) {
        let Node::Dir(dir) = self.node(ino) else {
            return;
        };
        for (name, child) in &dir.live {
            self.entries_below(*child, out);
            out.push((ino, name.clone()));
        }
    }

    /// Opens or creates the file at `path` and returns its inode.
    fn open(&mut self, path: &Path, mode: OpenMode) -> io::Result<u64> {
        let creates = matches!(mode, OpenMode::CreateNew | OpenMode::Truncate);
        self.check(
            if creates {
                FaultOp::Create
            } else {
                FaultOp::Open
            },
            path,
        )?;
        let existing = self.lookup(path);
        let ino = match (mode, existing) {
            (OpenMode::CreateNew, Ok(_)) => return Err(errno(libc::EEXIST)),
            (OpenMode::Read | OpenMode::Write, Err(e)) => return Err(e),
            (OpenMode::Read | OpenMode::Write | OpenMode::Truncate, Ok(ino)) => ino,
            (OpenMode::CreateNew | OpenMode::Truncate, Err(_)) => {
                let (parent, name) = self.parent(path)?;
                return Ok(self.create(parent, name, Node::File(FileNode::new())));
            }
        };
        match self.node_mut(ino) {
            Node::Dir(_) => Err(errno(libc::EISDIR)),
            Node::File(file) => {
                if mode == OpenMode::Truncate {
                    file.set_len(0)?;
                }
                Ok(ino)
            }
        }
    }

    fn sync_everything(&mut self) {
        for node in self.nodes.values_mut() {
            match node {
                Node::File(file) => file.synced(),
                Node::Dir(dir) => {
                    dir.durable = dir.live.clone();
                    dir.pending.clear();
                }
            }
        }
    }

    /// Copies inode `ino` of `self`, as `keep` chooses, into `image`;
    /// returns its number there.
    fn build(
        &self,
        ino: u64,
        image: &mut State,
        keep: Keep,
        rng: &mut Rng,
        built: &mut BTreeMap<u64, u64>,
    ) -> u64 {
        if let Some(done) = built.get(&ino) {
            return *done;
        }
        let new_ino = if ino == ROOT {
            ROOT
        } else {
            let new_ino = image.next_ino;
            image.next_ino += 1;
            new_ino
        };
        built.insert(ino, new_ino);
        let node = match self.node(ino) {
            Node::File(file) => Node::File(FileNode::durable(file.image(keep, rng), file.modified)),
            Node::Dir(dir) => {
                let mut entries = BTreeMap::new();
                for (name, child) in dir.image(keep, rng) {
                    entries.insert(name, self.build(child, image, keep, rng, built));
                }
                Node::Dir(DirNode {
                    durable: entries.clone(),
                    live: entries,
                    pending: Vec::new(),
                })
            }
        };
        image.nodes.insert(new_ino, node);
        new_ino
    }

    /// Every path below directory `ino` with its length (`None` for a
    /// directory), for [`SimFs::tree`].
    fn walk(&self, ino: u64, prefix: &Path, out: &mut Vec<(PathBuf, Option<u64>)>) {
        let Node::Dir(dir) = self.node(ino) else {
            return;
        };
        for (name, child) in &dir.live {
            let path = prefix.join(name);
            match self.node(*child) {
                Node::File(file) => out.push((path, Some(file.live.len() as u64))),
                Node::Dir(_) => {
                    out.push((path.clone(), None));
                    self.walk(*child, &path, out);
                }
            }
        }
    }
}

/// The simulated disk. Cheap to share: handles and lock guards keep the
/// disk's state alive.
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("SimFs")
            .field("inodes", &state.nodes.len())
            .field("ops", &state.ops)
            .field("crash_at", &state.crash_at)
            .field("faults", &state.faults)
            .finish()
    }
}

/// Locks the state; a panic in another thread holding it (a failed test
/// assertion) leaves it consistent, since every change is made whole.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimFs {
    /// An empty disk: a root directory `/`, durable.
    pub fn new() -> Arc<SimFs> {
        Arc::new(SimFs {
            state: Arc::new(Mutex::new(State::new())),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// A new disk holding what survives a power loss now, as `keep`
    /// chooses. Everything on it is durable; it has no crash point, no
    /// faults and no locks, and its operation count starts at 0.
    pub fn power_loss(&self, keep: Keep) -> Arc<SimFs> {
        let state = self.lock();
        let mut rng = Rng::new(match keep {
            Keep::Random(seed) => seed,
            Keep::Nothing | Keep::Everything => 0,
        });
        let mut image = State::new();
        state.build(ROOT, &mut image, keep, &mut rng, &mut BTreeMap::new());
        Arc::new(SimFs {
            state: Arc::new(Mutex::new(image)),
        })
    }

    /// The disk as the next process finds it after this one died without a
    /// power loss (`kill -9`): everything written is there, and only what
    /// was durable is durable, so a later [`SimFs::power_loss`] may still
    /// drop the rest. The crash point, faults, locks and counters are
    /// cleared.
    pub fn restart(&self) -> Arc<SimFs> {
        let state = self.lock();
        let mut next = State::new();
        next.nodes = state.nodes.clone();
        next.next_ino = state.next_ino;
        Arc::new(SimFs {
            state: Arc::new(Mutex::new(next)),
        })
    }

    /// Makes counted operation number `n` (from 0, see the module comment)
    /// and every later one fail without effect, as if the power went out
    /// just before it. `n` at or below [`SimFs::ops`] crashes at the next one.
    pub fn crash_at(&self, n: u64) {
        self.lock().crash_at = Some(n);
    }

    /// Whether the crash point was reached.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Counted operations so far, including any that failed.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Arms `fault`. Faults are checked in the order they were armed; every
    /// armed fault that matches an operation counts it down.
    pub fn fail(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Disarms every fault, persistent ones included.
    pub fn heal(&self) {
        self.lock().faults.clear();
    }

    /// Evicts from the page cache every page a failed sync left and
    /// nothing wrote since, as memory pressure may: reads of those pages
    /// then see what the disk holds, here the content of the file's last
    /// successful sync (see "Lost writeback" above: the pages were marked
    /// clean, so the kernel is free to drop them). What a recovery reads
    /// after it is no longer what the process wrote.
    pub fn evict_lost_writeback(&self) {
        for node in self.lock().nodes.values_mut() {
            if let Node::File(file) = node {
                file.evict_lost_writeback();
            }
        }
    }

    /// How many times `op` was called so far (failed calls included): to
    /// size a sweep of fault countdowns over a run.
    pub fn count(&self, op: FaultOp) -> u64 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// How many operations an armed fault has failed so far.
    pub fn faults_fired(&self) -> u64 {
        self.lock().fired
    }

    /// Every file and directory, with each file's live length, sorted by
    /// path: for test failure messages.
    pub fn tree(&self) -> Vec<(PathBuf, Option<u64>)> {
        let mut out = Vec::new();
        self.lock().walk(ROOT, Path::new("/"), &mut out);
        out
    }
}

/// An open file of a [`SimFs`]: the inode it was opened on.
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    /// The path it was opened at, for faults that match on paths.
    path: PathBuf,
    writable: bool,
}

impl SimFile {
    fn sync(&self, op: FaultOp) -> io::Result<()> {
        let mut state = lock(&self.state);
        let gate = state.gate(op, &self.path);
        let file = state.file_mut(self.ino);
        match gate {
            Gate::Go => {
                file.synced();
                Ok(())
            }
            Gate::Crash(e) => Err(e),
            Gate::Fail(e) | Gate::Torn(e) => {
                // Writeback failed: the dirty state is dropped.
                file.sync_failed();
                Err(e)
            }
        }
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(errno(libc::EBADF))
        }
    }
}

impl FileIo for SimFile {
    fn write_all_at(&self, bytes: &[u8], position: u64) -> io::Result<()> {
        let mut state = lock(&self.state);
        match state.gate(FaultOp::Write, &self.path) {
            Gate::Go => {
                self.check_writable()?;
                state.file_mut(self.ino).write(bytes, position)
            }
            Gate::Crash(e) | Gate::Fail(e) => Err(e),
            Gate::Torn(e) => {
                self.check_writable()?;
                let kept = &bytes[..bytes.len() / 2];
                state.file_mut(self.ino).write(kept, position)?;
                Err(e)
            }
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.check(FaultOp::SetLen, &self.path)?;
        self.check_writable()?;
        state.file_mut(self.ino).set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync(FaultOp::SyncData)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync(FaultOp::SyncAll)
    }

    fn size(&self) -> io::Result<u64> {
        let mut state = lock(&self.state);
        state.check(FaultOp::Size, &self.path)?;
        Ok(state.file_mut(self.ino).live.len() as u64)
    }

    fn map(&self, len: usize) -> io::Result<MappedFile> {
        let mut state = lock(&self.state);
        state.check(FaultOp::Map, &self.path)?;
        let live = &state.file_mut(self.ino).live;
        match live.get(..len) {
            Some(bytes) => Ok(MappedFile::copied(bytes.to_vec())),
            // A real map past the end would raise SIGBUS when read.
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "map of {len} bytes of {}, which has {}",
                    self.path.display(),
                    live.len()
                ),
            )),
        }
    }
}

/// A lock taken with [`Backend::try_lock`]; released when dropped.
struct SimLock {
    state: Arc<Mutex<State>>,
    ino: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        lock(&self.state).locked.remove(&self.ino);
    }
}

impl Backend for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileIo>> {
        let ino = self.lock().open(path, mode)?;
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
            path: path.to_path_buf(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut state = self.lock();
        state.check(FaultOp::Read, path)?;
        match state.node(state.lookup(path)?) {
            Node::File(file) => Ok(file.live.clone()),
            Node::Dir(_) => Err(errno(libc::EISDIR)),
        }
    }

    fn stat(&self, path: &Path) -> io::Result<Stat> {
        let mut state = self.lock();
        state.check(FaultOp::Stat, path)?;
        Ok(match state.node(state.lookup(path)?) {
            Node::File(file) => Stat {
                is_dir: false,
                len: file.live.len() as u64,
                modified: Some(file.modified),
            },
            Node::Dir(_) => Stat {
                is_dir: true,
                len: 0,
                modified: None,
            },
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut state = self.lock();
        state.check(FaultOp::List, dir)?;
        let dir = state.dir(state.lookup(dir)?)?;
        Ok(dir
            .live
            .iter()
            .map(|(name, ino)| DirEntry {
                name: name.clone(),
                is_dir: matches!(state.node(*ino), Node::Dir(_)),
            })
            .collect())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check(FaultOp::CreateDir, path)?;
        if state.lookup(path).is_ok() {
            return Err(errno(libc::EEXIST));
        }
        let (parent, name) = state.parent(path)?;
        state.create(parent, name, Node::Dir(DirNode::default()));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check(FaultOp::Remove, path)?;
        let ino = state.lookup(path)?;
        if let Node::Dir(_) = state.node(ino) {
            return Err(errno(libc::EISDIR));
        }
        let (parent, name) = state.parent(path)?;
        state.unlink(parent, &name);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let gate = state.gate(FaultOp::Remove, path);
        if let Gate::Crash(e) | Gate::Fail(e) = gate {
            return Err(e);
        }
        let ino = state.lookup(path)?;
        state.dir(ino)?;
        if ino == ROOT {
            return Err(errno(libc::EBUSY));
        }
        let (parent, name) = state.parent(path)?;
        let mut entries = Vec::new();
        state.entries_below(ino, &mut entries);
        entries.push((parent, name));
        let failure = match gate {
            Gate::Go => None,
            Gate::Crash(e) | Gate::Fail(e) => return Err(e),
            // Entry by entry, as the real one: a failure part way leaves
            // the first half of the tree removed.
            Gate::Torn(e) => {
                entries.truncate(entries.len() / 2);
                Some(e)
            }
        };
        for (dir, name) in entries {
            state.unlink(dir, &name);
        }
        failure.map_or(Ok(()), Err)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check(FaultOp::Rename, from)?;
        let ino = state.lookup(from)?;
        let (parent, from_name) = state.parent(from)?;
        let (to_parent, to_name) = state.parent(to)?;
        if parent != to_parent {
            // The engine renames within one directory only; a move between
            // directories would need both directories' syncs modelled.
            return Err(errno(libc::EXDEV));
        }
        if from_name == to_name {
            return Ok(());
        }
        if let Ok(target) = state.lookup(to) {
            match (state.node(ino), state.node(target)) {
                (Node::File(_), Node::Dir(_)) => return Err(errno(libc::EISDIR)),
                (Node::Dir(_), Node::File(_)) => return Err(errno(libc::ENOTDIR)),
                (Node::Dir(_), Node::Dir(dir)) if !dir.live.is_empty() => {
                    return Err(errno(libc::ENOTEMPTY));
                }
                _ => {}
            }
        }
        let dir = state.dir_mut(parent)?;
        dir.live.remove(&from_name);
        dir.live.insert(to_name.clone(), ino);
        dir.pending.push(DirOp::Rename {
            from: from_name,
            to: to_name,
            ino,
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check(FaultOp::SyncDir, dir)?;
        let ino = state.lookup(dir)?;
        let node = state.dir_mut(ino)?;
        node.durable = node.live.clone();
        node.pending.clear();
        Ok(())
    }

    fn sync_file_system(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check(FaultOp::SyncFileSystem, dir)?;
        state.lookup(dir)?;
        state.sync_everything();
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut state = self.lock();
        state.check(FaultOp::Lock, path)?;
        let ino = match state.lookup(path) {
            Ok(ino) => ino,
            Err(_) => {
                let (parent, name) = state.parent(path)?;
                state.create(parent, name, Node::File(FileNode::new()))
            }
        };
        if !state.locked.insert(ino) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock {
            state: Arc::clone(&self.state),
            ino,
        })))
    }

    fn parallel_syncs(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds tried where a test needs an image to show both of two outcomes:
    /// each unsynced choice is a coin flip, so 64 seeds miss one outcome
    /// with probability about 2^-64.
    const SEEDS: u64 = 64;

    fn every_keep() -> impl Iterator<Item = Keep> {
        [Keep::Nothing, Keep::Everything]
            .into_iter()
            .chain((0..SEEDS).map(Keep::Random))
    }

    fn path(p: &str) -> &Path {
        Path::new(p)
    }

    /// `/d/name` holding `bytes`, synced and its directory synced.
    fn durable_file(fs: &SimFs, name: &str, bytes: &[u8]) -> Arc<dyn FileIo> {
        if !fs.exists(path("/d")).expect("stat") {
            fs.create_dir(path("/d")).expect("create /d");
            fs.sync_dir(path("/")).expect("sync /");
        }
        let file = fs
            .open(&Path::new("/d").join(name), OpenMode::CreateNew)
            .expect("create");
        file.write_all_at(bytes, 0).expect("write");
        file.sync_data().expect("sync");
        fs.sync_dir(path("/d")).expect("sync /d");
        file
    }

    fn read(fs: &SimFs, p: &str) -> Option<Vec<u8>> {
        fs.read(path(p)).ok()
    }

    #[test]
    fn a_synced_file_survives_every_image() {
        let fs = SimFs::new();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        durable_file(&fs, "a", &bytes);
        for keep in every_keep() {
            assert_eq!(
                read(&fs.power_loss(keep), "/d/a"),
                Some(bytes.clone()),
                "{keep:?}"
            );
        }
    }

    #[test]
    fn an_unsynced_creation_can_vanish() {
        let fs = SimFs::new();
        durable_file(&fs, "a", b"a");
        let file = fs
            .open(path("/d/new"), OpenMode::CreateNew)
            .expect("create");
        file.write_all_at(b"new", 0).expect("write");
        // The data is durable, the directory entry is not (KAFKA-3968).
        file.sync_data().expect("sync");
        assert_eq!(read(&fs.power_loss(Keep::Nothing), "/d/new"), None);
        assert_eq!(
            read(&fs.power_loss(Keep::Everything), "/d/new"),
            Some(b"new".to_vec())
        );
        let kept: BTreeSet<Option<Vec<u8>>> = (0..SEEDS)
            .map(|s| read(&fs.power_loss(Keep::Random(s)), "/d/new"))
            .collect();
        assert_eq!(kept, BTreeSet::from([None, Some(b"new".to_vec())]));
        fs.sync_dir(path("/d")).expect("sync /d");
        for keep in every_keep() {
            assert_eq!(
                read(&fs.power_loss(keep), "/d/new"),
                Some(b"new".to_vec()),
                "{keep:?}"
            );
        }
    }

    #[test]
    fn a_rename_without_a_directory_sync_can_be_undone() {
        let fs = SimFs::new();
        durable_file(&fs, "a", b"old");
        let tmp = fs
            .open(path("/d/a.tmp"), OpenMode::CreateNew)
            .expect("create");
        tmp.write_all_at(b"new", 0).expect("write");
        tmp.sync_data().expect("sync");
        fs.rename(path("/d/a.tmp"), path("/d/a")).expect("rename");
        // The handle follows the inode to its new name.
        tmp.write_all_at(b"!", 3).expect("write after the rename");
        tmp.sync_data().expect("sync");
        assert_eq!(read(&fs, "/d/a"), Some(b"new!".to_vec()));
        let nothing = fs.power_loss(Keep::Nothing);
        assert_eq!(read(&nothing, "/d/a"), Some(b"old".to_vec()));
        assert_eq!(
            read(&nothing, "/d/a.tmp"),
            None,
            "its creation was not synced either"
        );
        let outcomes: BTreeSet<[Option<Vec<u8>>; 2]> = (0..SEEDS)
            .map(|s| {
                let image = fs.power_loss(Keep::Random(s));
                [read(&image, "/d/a"), read(&image, "/d/a.tmp")]
            })
            .collect();
        // Both the creation and the rename kept, only the creation, or
        // neither (the rename alone does not apply: its source is missing).
        assert_eq!(
            outcomes,
            BTreeSet::from([
                [Some(b"old".to_vec()), None],
                [Some(b"old".to_vec()), Some(b"new!".to_vec())],
                [Some(b"new!".to_vec()), None],
            ])
        );
        fs.sync_dir(path("/d")).expect("sync /d");
        assert_eq!(
            read(&fs.power_loss(Keep::Nothing), "/d/a"),
            Some(b"new!".to_vec())
        );
    }

    #[test]
    fn unsynced_pages_survive_whole_and_independently() {
        let fs = SimFs::new();
        let file = durable_file(&fs, "a", &vec![b'a'; 3 * PAGE_BYTES]);
        // One write across all three pages, starting mid-page.
        file.write_all_at(&vec![b'b'; 2 * PAGE_BYTES], PAGE_BYTES as u64 / 2)
            .expect("write");
        let mut seen = BTreeSet::new();
        for seed in 0..SEEDS {
            let bytes = read(&fs.power_loss(Keep::Random(seed)), "/d/a").expect("durable");
            assert_eq!(bytes.len(), 3 * PAGE_BYTES);
            let pages: Vec<bool> = bytes
                .chunks(PAGE_BYTES)
                .enumerate()
                .map(|(index, page)| {
                    let written = page != vec![b'a'; PAGE_BYTES].as_slice();
                    if written {
                        // Whole: as after the write, never part of it.
                        assert_eq!(
                            page,
                            &fs.read(path("/d/a")).expect("live")[index * PAGE_BYTES..]
                                [..PAGE_BYTES]
                        );
                    }
                    written
                })
                .collect();
            seen.insert(pages);
        }
        // Each page chosen on its own: all 8 combinations turn up.
        assert_eq!(seen.len(), 8, "{seen:?}");
    }

    #[test]
    fn an_unsynced_size_may_come_with_zeros() {
        let fs = SimFs::new();
        let file = durable_file(&fs, "a", b"abc");
        file.write_all_at(b"def", 3).expect("write");
        let outcomes: BTreeSet<Vec<u8>> = (0..SEEDS)
            .map(|s| read(&fs.power_loss(Keep::Random(s)), "/d/a").expect("durable"))
            .collect();
        // The size and the page are chosen apart: the new size without the
        // new data reads zeros, as some file systems show after a crash.
        assert_eq!(
            outcomes,
            BTreeSet::from([b"abc".to_vec(), b"abcdef".to_vec(), b"abc\0\0\0".to_vec()])
        );
    }

    #[test]
    fn a_failed_sync_leaves_its_pages_undetermined() {
        let fs = SimFs::new();
        let file = durable_file(&fs, "a", &vec![b'a'; 2 * PAGE_BYTES]);
        file.write_all_at(&vec![b'b'; 2 * PAGE_BYTES], 0)
            .expect("write");
        fs.fail(Fault::new(FaultOp::SyncData));
        let error = file.sync_data().expect_err("the injected fault");
        assert_eq!(error.raw_os_error(), Some(libc::EIO));
        assert_eq!(fs.faults_fired(), 1);
        // Page 1 is written again after the failure, page 0 is not: only
        // page 1 is durable after the next successful sync.
        file.write_all_at(&vec![b'c'; PAGE_BYTES], PAGE_BYTES as u64)
            .expect("write");
        file.sync_data().expect("a later sync succeeds");
        let mut first_pages = BTreeSet::new();
        for keep in every_keep() {
            let bytes = read(&fs.power_loss(keep), "/d/a").expect("durable");
            assert_eq!(
                &bytes[PAGE_BYTES..],
                vec![b'c'; PAGE_BYTES].as_slice(),
                "{keep:?}"
            );
            first_pages.insert(bytes[0]);
        }
        assert_eq!(first_pages, BTreeSet::from([b'a', b'b']));
        assert_eq!(
            read(&fs.power_loss(Keep::Nothing), "/d/a").expect("durable")[0],
            b'a'
        );
    }

    #[test]
    fn eviction_after_a_failed_sync_reads_back_what_the_disk_holds() {
        let fs = SimFs::new();
        let file = durable_file(&fs, "a", &vec![b'a'; PAGE_BYTES]);
        // Page 0 rewritten, page 1 new; page 2 is written after the failure.
        file.write_all_at(&vec![b'b'; 2 * PAGE_BYTES], 0)
            .expect("write");
        fs.fail(Fault::new(FaultOp::SyncData));
        file.sync_data().expect_err("the injected fault");
        file.write_all_at(&vec![b'c'; PAGE_BYTES], 2 * PAGE_BYTES as u64)
            .expect("write");
        fs.evict_lost_writeback();
        let live = read(&fs, "/d/a").expect("live");
        assert_eq!(live.len(), 3 * PAGE_BYTES, "the size stays");
        assert_eq!(&live[..PAGE_BYTES], vec![b'a'; PAGE_BYTES].as_slice());
        assert_eq!(
            &live[PAGE_BYTES..2 * PAGE_BYTES],
            vec![0; PAGE_BYTES].as_slice(),
            "a page that never reached the disk reads as zeros"
        );
        assert_eq!(&live[2 * PAGE_BYTES..], vec![b'c'; PAGE_BYTES].as_slice());
        // The disk holds what was read back: every image agrees on it.
        for keep in every_keep() {
            let bytes = read(&fs.power_loss(keep), "/d/a").expect("durable");
            assert_eq!(&bytes[..PAGE_BYTES], vec![b'a'; PAGE_BYTES].as_slice());
        }
    }

    #[test]
    fn a_removed_directory_can_come_back_in_part() {
        let fs = SimFs::new();
        durable_file(&fs, "a", b"a");
        durable_file(&fs, "b", b"b");
        fs.remove_dir_all(path("/d")).expect("remove");
        assert!(!fs.exists(path("/d")).expect("stat"));
        assert_eq!(
            read(&fs.power_loss(Keep::Nothing), "/d/a"),
            Some(b"a".to_vec())
        );
        assert!(
            !fs.power_loss(Keep::Everything)
                .exists(path("/d"))
                .expect("stat")
        );
        let outcomes: BTreeSet<(bool, bool, bool)> = (0..SEEDS)
            .map(|s| {
                let image = fs.power_loss(Keep::Random(s));
                let present = |p: &str| image.exists(path(p)).expect("stat");
                (present("/d"), present("/d/a"), present("/d/b"))
            })
            .collect();
        assert!(outcomes.contains(&(false, false, false)), "{outcomes:?}");
        assert!(outcomes.contains(&(true, false, true)), "{outcomes:?}");
        assert!(outcomes.contains(&(true, true, true)), "{outcomes:?}");
        fs.sync_dir(path("/")).expect("sync /");
        assert!(
            !fs.power_loss(Keep::Nothing)
                .exists(path("/d"))
                .expect("stat")
        );
    }

    #[test]
    fn the_crash_point_stops_every_change_and_no_read() {
        let fs = SimFs::new();
        fs.crash_at(3);
        fs.create_dir(path("/d")).expect("op 0");
        fs.sync_dir(path("/")).expect("op 1");
        let file = fs.open(path("/d/a"), OpenMode::CreateNew).expect("op 2");
        // Opening an existing file changes nothing and is not counted.
        let again = fs.open(path("/d/a"), OpenMode::Write).expect("not counted");
        assert_eq!(fs.ops(), 3);
        assert!(!fs.crashed());
        assert!(
            file.write_all_at(b"x", 0).is_err(),
            "op 3 is the crash point"
        );
        assert!(fs.crashed());
        assert!(again.sync_data().is_err());
        assert!(fs.sync_dir(path("/d")).is_err());
        assert!(fs.create_dir(path("/e")).is_err());
        assert!(fs.remove_dir_all(path("/d")).is_err());
        assert_eq!(fs.ops(), 8);
        assert_eq!((fs.count(FaultOp::Write), fs.count(FaultOp::Open)), (1, 1));
        assert_eq!(file.size().expect("reads work"), 0);
        assert_eq!(read(&fs, "/d/a"), Some(Vec::new()));
        assert!(fs.exists(path("/d/a")).expect("stat"));
        let tree = fs.power_loss(Keep::Everything).tree();
        assert_eq!(
            tree,
            vec![
                (PathBuf::from("/d"), None),
                (PathBuf::from("/d/a"), Some(0))
            ]
        );
        // The file's entry was never synced.
        assert_eq!(
            fs.power_loss(Keep::Nothing).tree(),
            vec![(PathBuf::from("/d"), None)]
        );
    }

    #[test]
    fn faults_count_down_persist_until_healed_and_tear_writes() {
        let fs = SimFs::new();
        let file = durable_file(&fs, "a", b"");
        fs.fail(
            Fault::new(FaultOp::Write)
                .after(1)
                .errno(libc::ENOSPC)
                .persist()
                .torn(),
        );
        file.write_all_at(b"0123", 0)
            .expect("the first write goes through");
        let error = file.write_all_at(b"4567", 4).expect_err("the second fails");
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(
            read(&fs, "/d/a"),
            Some(b"012345".to_vec()),
            "half of the torn write"
        );
        assert!(file.write_all_at(b"89", 6).is_err(), "persists");
        assert_eq!(fs.faults_fired(), 2);
        fs.heal();
        file.write_all_at(b"89", 6).expect("healed");
        assert_eq!(read(&fs, "/d/a"), Some(b"01234589".to_vec()));
        // Path filters, and faults on reads.
        fs.fail(Fault::new(FaultOp::Read).path_contains("/b"));
        durable_file(&fs, "b", b"b");
        assert_eq!(read(&fs, "/d/a"), Some(b"01234589".to_vec()));
        assert_eq!(read(&fs, "/d/b"), None, "fails once");
        assert_eq!(read(&fs, "/d/b"), Some(b"b".to_vec()));
        fs.fail(Fault::new(FaultOp::Map));
        assert!(file.map(2).is_err());
        assert_eq!(&*file.map(2).expect("once"), b"01");
        assert!(file.map(100).is_err(), "no map past the end");
    }

    #[test]
    fn a_restart_keeps_what_was_written_and_what_was_durable_apart() {
        let fs = SimFs::new();
        let file = durable_file(&fs, "a", b"old");
        file.write_all_at(b"new", 0).expect("write");
        fs.crash_at(fs.ops());
        let _held = fs.try_lock(path("/LOCK"));
        let restarted = fs.restart();
        assert!(restarted.try_lock(path("/LOCK")).expect("lock").is_some());
        assert_eq!(read(&restarted, "/d/a"), Some(b"new".to_vec()));
        restarted.create_dir(path("/e")).expect("no crash point");
        assert_eq!(
            read(&restarted.power_loss(Keep::Nothing), "/d/a"),
            Some(b"old".to_vec())
        );
        assert!(
            !restarted
                .power_loss(Keep::Nothing)
                .exists(path("/e"))
                .expect("stat")
        );
    }

    #[test]
    fn a_torn_remove_dir_all_leaves_part_of_the_tree() {
        let fs = SimFs::new();
        for name in ["a", "b", "c"] {
            durable_file(&fs, name, name.as_bytes());
        }
        fs.fail(Fault::new(FaultOp::Remove).torn());
        assert!(fs.remove_dir_all(path("/d")).is_err());
        // Four unlinks (three files, then the directory): two done.
        assert_eq!(
            fs.tree(),
            vec![
                (PathBuf::from("/d"), None),
                (PathBuf::from("/d/c"), Some(1))
            ]
        );
    }

    #[test]
    fn locks_are_exclusive_until_dropped() {
        let fs = SimFs::new();
        let held = fs.try_lock(path("/LOCK")).expect("lock").expect("free");
        assert!(fs.try_lock(path("/LOCK")).expect("lock").is_none());
        drop(held);
        assert!(fs.try_lock(path("/LOCK")).expect("lock").is_some());
    }

    #[test]
    fn sync_file_system_makes_everything_durable() {
        let fs = SimFs::new();
        fs.create_dir(path("/d")).expect("create");
        let file = fs.open(path("/d/a"), OpenMode::CreateNew).expect("create");
        file.write_all_at(b"a", 0).expect("write");
        fs.rename(path("/d/a"), path("/d/b")).expect("rename");
        fs.sync_file_system(path("/")).expect("syncfs");
        for keep in every_keep() {
            assert_eq!(fs.power_loss(keep).tree(), fs.tree(), "{keep:?}");
            assert_eq!(read(&fs.power_loss(keep), "/d/b"), Some(b"a".to_vec()));
        }
    }
}
