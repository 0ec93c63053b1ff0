//! The topics: their names, partition counts and retention, kept in one
//! small JSON file beside the store (`topics.json`), replaced atomically on
//! every change so that a crash leaves the old catalog or the new one.
//!
//! Each partition is one key of the store, named `<topic>.<id>-<partition>`.
//! The id is new for every topic created, so a topic deleted and created
//! again under the same name starts from empty logs, even if files of the
//! old one survive a crash during the deletion: those belong to a dead id,
//! and [`Catalog::owner_of`] tells the server to remove them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{Error, Result, Written};
use crate::storage::fsutil;

/// Name of the catalog file in the data directory.
pub const CATALOG_FILE_NAME: &str = "topics.json";

/// Version written in the catalog file; a reader refuses others.
pub const CATALOG_VERSION: u32 = 1;

/// Longest topic name, in bytes: Kafka's limit, so that names move between
/// the two unchanged.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Most partitions one topic may have. Each partition that holds records is
/// a directory with at least two files and, while used, an open log; 4,096
/// is what the store keeps open at once by default on a machine with a
/// normal file limit, and more than any single-node topic needs.
pub const PARTITIONS_MAX: u32 = 4096;

/// Most topics: bounds the catalog file, which is rewritten whole on every
/// change, to a few megabytes.
pub const TOPICS_MAX: usize = 10_000;

/// One topic.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    pub name: String,
    /// Unique over the catalog's life: part of every partition's key.
    pub id: u64,
    pub partitions: u32,
    /// Retention of this topic; `None` takes the server's default.
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    /// When the topic was created, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl Topic {
    /// The store key of one of the topic's partitions.
    pub fn key(&self, partition: u32) -> String {
        partition_key(&self.name, self.id, partition)
    }
}

/// The store key of partition `partition` of topic `name` with id `id`.
pub fn partition_key(name: &str, id: u64, partition: u32) -> String {
    format!("{name}.{id}-{partition}")
}

/// Splits a store key made by [`partition_key`] into its parts. Topic
/// names may contain `.` and `-`, but the id and partition are digits, so
/// the last `-` and the last `.` before it are the separators.
pub fn parse_key(key: &str) -> Option<(&str, u64, u32)> {
    let (rest, partition) = key.rsplit_once('-')?;
    let (name, id) = rest.rsplit_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(partition) || !digits(id) || check_name(name).is_err() {
        return None;
    }
    Some((name, id.parse().ok()?, partition.parse().ok()?))
}

/// Checks a topic name: 1 to 249 bytes of ASCII letters, digits, `.`, `_`
/// and `-`, and not `.` or `..` (Kafka's rule).
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "a topic name has 1 to {TOPIC_NAME_BYTES_MAX} bytes, not {}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' is not a topic name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "a topic name holds only ASCII letters, digits, '.', '_' and '-', not {c:?}"
        ));
    }
    Ok(())
}

/// The error for a topic the catalog does not hold.
fn not_found(name: &str) -> Error {
    Error::TopicNotFound {
        topic: name.to_string(),
    }
}

/// What to create.
#[derive(Clone, Debug)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    /// How many nodes of a cluster hold each partition; `None`: the
    /// cluster's default (min(3, nodes)). A single node takes only 1.
    pub replication_factor: Option<u32>,
}

/// Whose a store key is.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyOwner {
    /// A partition of a topic in the catalog.
    Live,
    /// A partition of a topic since deleted (or past its partition count):
    /// left by a crash during a deletion.
    Dead,
    /// Not a partition key at all.
    Foreign,
}

/// The file's contents.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    version: u32,
    /// The id the next topic gets.
    next_id: u64,
    topics: Vec<Topic>,
}

/// Why the catalog's file was not written.
enum Write {
    /// The catalog did not encode (a bug); the file was not touched.
    Encode(String),
    /// Writing, syncing or renaming the file failed.
    Storage(crate::storage::error::Error),
}

/// The topics, as on disk, or as a cluster's metadata holds them.
pub struct Catalog {
    /// The catalog's file; `None` for a cluster's [`Catalog::replica`].
    path: Option<PathBuf>,
    next_id: u64,
    topics: BTreeMap<String, Topic>,
}

impl Catalog {
    /// Reads the catalog of the data directory `dir`; a directory without
    /// one has no topics. A file that does not parse is an error, never an
    /// empty catalog: that would drop every topic.
    pub fn open(dir: &Path) -> std::result::Result<Catalog, String> {
        let path = dir.join(CATALOG_FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Catalog {
                    path: Some(path),
                    next_id: 0,
                    topics: BTreeMap::new(),
                });
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let file: CatalogFile = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a topic catalog: {e}", path.display()))?;
        if file.version != CATALOG_VERSION {
            return Err(format!(
                "{} has version {}; this seglog reads version {CATALOG_VERSION}",
                path.display(),
                file.version
            ));
        }
        let mut topics = BTreeMap::new();
        for topic in file.topics {
            check_name(&topic.name).map_err(|e| format!("{}: {e}", path.display()))?;
            if topic.id >= file.next_id || topic.partitions == 0 {
                return Err(format!(
                    "{}: topic '{}' has id {} and {} partitions, which the file's next id {} rules out",
                    path.display(),
                    topic.name,
                    topic.id,
                    topic.partitions,
                    file.next_id
                ));
            }
            if let Some(old) = topics.insert(topic.name.clone(), topic) {
                return Err(format!(
                    "{}: topic '{}' is listed twice",
                    path.display(),
                    old.name
                ));
            }
        }
        Ok(Catalog {
            path: Some(path),
            next_id: file.next_id,
            topics,
        })
    }

    /// A catalog of `topics` that has no file and refuses every change: a
    /// node of a cluster reads its topics from the cluster's metadata
    /// (`cluster::metadata`), which changes only through the metadata
    /// group, and is rebuilt from it after each change.
    pub fn replica(next_id: u64, topics: impl IntoIterator<Item = Topic>) -> Catalog {
        Catalog {
            path: None,
            next_id,
            topics: topics.into_iter().map(|t| (t.name.clone(), t)).collect(),
        }
    }

    /// The catalog's file, or the refusal of a change to a replica.
    fn file(&self) -> Result<PathBuf> {
        self.path.clone().ok_or_else(|| {
            Error::Unsupported(
                "a cluster's topics change through its metadata group, which takes creations \
                 and deletions only so far"
                    .into(),
            )
        })
    }

    pub fn get(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// Every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Creates a topic; durable when this returns.
    pub fn create(&mut self, new: NewTopic, now_ms: u64) -> Result<Topic> {
        self.file()?;
        check_name(&new.name).map_err(Error::Invalid)?;
        if new.partitions == 0 || new.partitions > PARTITIONS_MAX {
            return Err(Error::Invalid(format!(
                "a topic has 1 to {PARTITIONS_MAX} partitions, not {}",
                new.partitions
            )));
        }
        if self.topics.contains_key(&new.name) {
            return Err(Error::TopicExists { topic: new.name });
        }
        if self.topics.len() >= TOPICS_MAX {
            return Err(Error::Invalid(format!(
                "the server holds at most {TOPICS_MAX} topics"
            )));
        }
        let topic = Topic {
            name: new.name,
            id: self.next_id,
            partitions: new.partitions,
            retention_ms: new.retention_ms,
            retention_bytes: new.retention_bytes,
            created_ms: now_ms,
        };
        self.topics.insert(topic.name.clone(), topic.clone());
        self.next_id += 1;
        self.save()?;
        Ok(topic)
    }

    /// Raises a topic's partition count to `partitions` (Kafka's
    /// CreatePartitions: partitions are only ever added, so no key changes
    /// owner); durable when this returns. The new partitions' logs start
    /// empty with their first record.
    pub fn add_partitions(&mut self, name: &str, partitions: u32) -> Result<Topic> {
        let topic = self.topics.get(name).ok_or_else(|| not_found(name))?;
        if partitions <= topic.partitions || partitions > PARTITIONS_MAX {
            return Err(Error::Invalid(format!(
                "topic '{name}' has {} partitions: a new count is more than that and at most \
                 {PARTITIONS_MAX}, not {partitions}",
                topic.partitions
            )));
        }
        self.change(name, |t| t.partitions = partitions)
    }

    /// Sets a topic's own retention (`None`: the server's default);
    /// durable when this returns.
    pub fn set_retention(
        &mut self,
        name: &str,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> Result<Topic> {
        self.change(name, |t| {
            t.retention_ms = retention_ms;
            t.retention_bytes = retention_bytes;
        })
    }

    /// Applies `edit` to a topic and saves the catalog.
    fn change(&mut self, name: &str, edit: impl FnOnce(&mut Topic)) -> Result<Topic> {
        self.file()?;
        let topic = self.topics.get_mut(name).ok_or_else(|| not_found(name))?;
        edit(topic);
        let changed = topic.clone();
        self.save()?;
        Ok(changed)
    }

    /// Deletes a topic from the catalog; durable when this returns. Its
    /// partitions' logs are the caller's to remove.
    pub fn delete(&mut self, name: &str) -> Result<Topic> {
        self.file()?;
        let topic = self.topics.remove(name).ok_or_else(|| not_found(name))?;
        self.save()?;
        Ok(topic)
    }

    /// Whether `key` is a partition of a topic in the catalog.
    pub fn owner_of(&self, key: &str) -> KeyOwner {
        match parse_key(key) {
            None => KeyOwner::Foreign,
            Some((name, id, partition)) => match self.topics.get(name) {
                Some(topic) if topic.id == id && partition < topic.partitions => KeyOwner::Live,
                _ => KeyOwner::Dead,
            },
        }
    }

    /// Writes the catalog as it is in memory. On failure the file may hold
    /// the old catalog or the new one (the rename may have happened before
    /// the directory fsync failed): the catalog in memory is read back from
    /// the file, so that it never differs from what the next start reads,
    /// and the error says the change may or may not have happened.
    fn save(&mut self) -> Result<()> {
        let path = self.file()?;
        let source = match self.write(&path) {
            Ok(()) => return Ok(()),
            Err(Write::Storage(source)) => source,
            Err(Write::Encode(e)) => {
                return Err(Error::Internal(format!("cannot encode the catalog: {e}")));
            }
        };
        let context = match Catalog::open(path.parent().unwrap_or(Path::new("."))) {
            Ok(on_disk) => {
                self.next_id = on_disk.next_id;
                self.topics = on_disk.topics;
                "cannot write the topic catalog, which now holds what its file holds, \
                 with or without the change"
                    .to_string()
            }
            Err(reread) => format!(
                "cannot write the topic catalog, and its file cannot be read back ({reread}): \
                 the change may or may not survive a restart"
            ),
        };
        Err(Error::Storage {
            context,
            source: std::sync::Arc::new(source),
            written: Written::Maybe,
        })
    }

    fn write(&self, path: &Path) -> std::result::Result<(), Write> {
        let file = CatalogFile {
            version: CATALOG_VERSION,
            next_id: self.next_id,
            topics: self.topics.values().cloned().collect(),
        };
        let mut bytes = match serde_json::to_vec_pretty(&file) {
            Ok(bytes) => bytes,
            // Strings and numbers always encode: a bug, and nothing written.
            Err(e) => return Err(Write::Encode(e.to_string())),
        };
        bytes.push(b'\n');
        fsutil::rewrite_atomic(&crate::storage::backend::RealFs, path, &bytes)
            .map_err(Write::Storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_topic(name: &str, partitions: u32) -> NewTopic {
        NewTopic {
            name: name.to_string(),
            partitions,
            retention_ms: None,
            retention_bytes: Some(1 << 20),
            replication_factor: None,
        }
    }

    #[test]
    fn keys_split_back_into_their_parts() {
        for (name, id, partition) in [("a", 0, 0), ("a.b-c", 12, 99), ("x-1.2", 3, 4)] {
            let key = partition_key(name, id, partition);
            assert_eq!(parse_key(&key), Some((name, id, partition)), "{key}");
        }
        for key in [
            "", "a", "a-1", "a.1", "a.-1", "a.1-", "a.x-1", "a b.1-1", "..1-1",
        ] {
            assert_eq!(parse_key(key), None, "{key}");
        }
    }

    #[test]
    fn names_follow_kafkas_rule() {
        assert!(check_name("orders.v2_eu-1").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(250)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(249)).is_ok());
    }

    #[test]
    fn topics_survive_a_reopen_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut catalog = Catalog::open(dir.path()).expect("empty catalog");
        let a = catalog.create(new_topic("a", 3), 1).expect("create a");
        assert!(matches!(
            catalog.create(new_topic("a", 1), 2),
            Err(Error::TopicExists { .. })
        ));
        catalog.delete("a").expect("delete a");
        let again = catalog
            .create(new_topic("a", 2), 3)
            .expect("create a again");
        assert_ne!(a.id, again.id);
        let reopened = Catalog::open(dir.path()).expect("reopen");
        assert_eq!(reopened.get("a"), Some(&again));
        assert_eq!(reopened.owner_of(&again.key(1)), KeyOwner::Live);
        assert_eq!(reopened.owner_of(&again.key(2)), KeyOwner::Dead);
        assert_eq!(reopened.owner_of(&a.key(0)), KeyOwner::Dead);
        assert_eq!(reopened.owner_of("maelstrom-key"), KeyOwner::Foreign);
    }

    #[test]
    fn a_damaged_catalog_is_an_error_not_an_empty_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(CATALOG_FILE_NAME), b"{\"version\":1,").expect("write");
        let error = Catalog::open(dir.path()).err().expect("refused");
        assert!(error.contains("not a topic catalog"), "{error}");
    }

    #[test]
    fn a_failed_write_leaves_the_catalog_as_its_file_holds_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut catalog = Catalog::open(dir.path()).expect("empty catalog");
        let a = catalog.create(new_topic("a", 1), 1).expect("create a");
        // The temporary file cannot be created: the write fails before the
        // rename, so the file keeps the old catalog, and so does memory.
        let tmp = dir.path().join(format!("{CATALOG_FILE_NAME}.tmp"));
        std::fs::create_dir(&tmp).expect("block the temporary file");
        assert!(matches!(
            catalog.create(new_topic("b", 1), 2),
            Err(Error::Storage { .. })
        ));
        assert!(matches!(catalog.delete("a"), Err(Error::Storage { .. })));
        assert_eq!(catalog.get("a"), Some(&a));
        assert_eq!(catalog.get("b"), None);
        std::fs::remove_dir(&tmp).expect("unblock");
        let b = catalog.create(new_topic("b", 1), 3).expect("create b");
        assert_eq!(b.id, a.id + 1, "the failed create used no id");
        let reopened = Catalog::open(dir.path()).expect("reopen");
        assert_eq!(reopened.topics().collect::<Vec<_>>(), vec![&a, &b]);
    }

    #[test]
    fn a_replica_reads_like_a_catalog_and_refuses_every_change() {
        let topic = Topic {
            name: "a".into(),
            id: 4,
            partitions: 2,
            retention_ms: Some(1),
            retention_bytes: None,
            created_ms: 9,
        };
        let mut replica = Catalog::replica(5, [topic.clone()]);
        assert_eq!(replica.get("a"), Some(&topic));
        assert_eq!(replica.owner_of(&topic.key(1)), KeyOwner::Live);
        assert_eq!(replica.owner_of(&topic.key(2)), KeyOwner::Dead);
        let refused = |r: Result<Topic>| matches!(r, Err(Error::Unsupported(why)) if why.contains("metadata group"));
        assert!(refused(replica.create(new_topic("b", 1), 1)));
        assert!(refused(replica.add_partitions("a", 3)));
        assert!(refused(replica.set_retention("a", None, None)));
        assert!(refused(replica.delete("a")));
        assert_eq!(replica.topics().collect::<Vec<_>>(), vec![&topic]);
    }

    #[test]
    fn bad_counts_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut catalog = Catalog::open(dir.path()).expect("empty catalog");
        for partitions in [0, PARTITIONS_MAX + 1] {
            assert!(matches!(
                catalog.create(new_topic("a", partitions), 1),
                Err(Error::Invalid(_))
            ));
        }
        assert!(catalog.is_empty());
        assert!(!dir.path().join(CATALOG_FILE_NAME).exists());
    }
}
