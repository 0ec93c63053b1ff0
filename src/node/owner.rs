//! Who owns a key: the one node that assigns its offsets.
//!
//! Every node gets the same `node_ids` in `init`, so every node computes the
//! same owner without talking to the others: the node ids are sorted, and a
//! key belongs to the one at position `fnv1a64(key) % count`. FNV-1a is
//! fixed by its definition (unlike Rust's `DefaultHasher`, which is seeded
//! per process), so the owner of a key never changes across restarts or
//! builds. Ownership does not move when a node is unreachable: its keys
//! cannot take sends until it is back (the README's "Limits").

use crate::storage::keyname::fnv1a64;

/// Nodes in one cluster. Every node replicates to every other one, so the
/// work per write grows with the count; 64 is far past Maelstrom's runs
/// (at most a handful) and bounds what an `init` can ask for.
pub const NODES_MAX: usize = 64;

/// The nodes of the cluster and this node's place among them.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// This node's id.
    me: String,
    /// Every node id, sorted: the order ownership is computed over.
    ids: Vec<String>,
}

/// Whether `id` is safe as a node id: it names a data directory and is
/// compared byte for byte.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Cluster {
    /// The cluster of `node_ids` seen from `me`. Refuses an id that is not a
    /// safe name, a repeated id, a list without `me`, and more than
    /// [`NODES_MAX`] nodes.
    pub fn new(me: &str, node_ids: &[String]) -> Result<Cluster, String> {
        if node_ids.len() > NODES_MAX {
            return Err(format!(
                "{} nodes, more than the maximum of {NODES_MAX}",
                node_ids.len()
            ));
        }
        if let Some(bad) = node_ids.iter().find(|id| !valid_node_id(id)) {
            return Err(format!(
                "node id {bad:?} is not a safe name ([A-Za-z0-9_-]{{1,64}})"
            ));
        }
        let mut ids = node_ids.to_vec();
        ids.sort();
        ids.dedup();
        if ids.len() != node_ids.len() {
            return Err("node_ids names a node twice".into());
        }
        if !ids.iter().any(|id| id == me) {
            return Err(format!("node_ids does not include this node, {me:?}"));
        }
        Ok(Cluster {
            me: me.to_string(),
            ids,
        })
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The node that assigns offsets for `key`.
    pub fn owner(&self, key: &str) -> &str {
        let count = self.ids.len() as u64;
        let at = fnv1a64(key.as_bytes()) % count;
        &self.ids[at as usize]
    }

    /// Whether this node owns `key`.
    pub fn owns(&self, key: &str) -> bool {
        self.owner(key) == self.me
    }

    /// Every other node, in id order.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.ids
            .iter()
            .map(String::as_str)
            .filter(move |id| *id != self.me)
    }

    /// Whether `id` is another node of this cluster.
    pub fn is_peer(&self, id: &str) -> bool {
        id != self.me && self.ids.iter().any(|known| known == id)
    }

    /// Every node id, sorted: what `init` must name again on a re-init.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_node_computes_the_same_owner_whatever_the_order_of_ids() {
        let a = Cluster::new("n0", &ids(&["n0", "n1", "n2"])).expect("valid");
        let b = Cluster::new("n2", &ids(&["n2", "n0", "n1"])).expect("valid");
        for i in 0..1000 {
            let key = format!("key-{i}");
            assert_eq!(a.owner(&key), b.owner(&key));
        }
    }

    #[test]
    fn ownership_is_pinned_to_fnv1a_so_it_survives_rebuilds() {
        // fnv1a64("0") = 0xaf63ad4c86019caf, which is odd: n1 of two nodes.
        let cluster = Cluster::new("n0", &ids(&["n0", "n1"])).expect("valid");
        assert_eq!(fnv1a64(b"0"), 0xaf63_ad4c_8601_9caf);
        assert_eq!(cluster.owner("0"), "n1");
        assert!(!cluster.owns("0"));
    }

    #[test]
    fn keys_spread_over_every_node() {
        let cluster = Cluster::new("n0", &ids(&["n0", "n1", "n2", "n3", "n4"])).expect("valid");
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..5000 {
            *counts.entry(cluster.owner(&i.to_string())).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 5);
        assert!(counts.values().all(|&n| n > 800), "{counts:?}");
    }

    #[test]
    fn bad_clusters_are_refused() {
        assert!(Cluster::new("n0", &ids(&["n1"])).is_err());
        assert!(Cluster::new("n0", &ids(&["n0", "n0"])).is_err());
        assert!(Cluster::new("n0", &ids(&["n0", "../x"])).is_err());
        assert!(Cluster::new("n0", &ids(&[])).is_err());
        let many: Vec<String> = (0..=NODES_MAX).map(|i| format!("n{i}")).collect();
        assert!(Cluster::new("n0", &many).is_err());
    }

    #[test]
    fn peers_are_everyone_else() {
        let cluster = Cluster::new("n1", &ids(&["n2", "n1", "n0"])).expect("valid");
        assert_eq!(cluster.peers().collect::<Vec<_>>(), ["n0", "n2"]);
        assert!(cluster.is_peer("n0") && !cluster.is_peer("n1") && !cluster.is_peer("c1"));
    }
}
