//! The nodes of the cluster, from `init`: every node gets the same
//! `node_ids`, sorted here, and a node's place in that order is its id in
//! the Raft groups. Membership is fixed by `init` (see `cluster.md`).

/// Nodes in one cluster. Every node replicates every group, so the work per
/// write grows with the count; 64 is far past Maelstrom's runs (at most a
/// handful) and bounds what an `init` can ask for.
pub const NODES_MAX: usize = 64;

/// The nodes of the cluster and this node's place among them.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// This node's id.
    me: String,
    /// Every node id, sorted: a node's index is its id in the Raft groups.
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

    /// The Raft id of node `id`: its index in the sorted ids.
    pub fn index_of(&self, id: &str) -> Option<u64> {
        self.ids
            .iter()
            .position(|known| known == id)
            .map(|i| i as u64)
    }

    /// This node's Raft id.
    pub fn my_index(&self) -> u64 {
        self.index_of(&self.me).unwrap_or(0)
    }

    /// Every node's name, by Raft id.
    pub fn by_raft_id(&self) -> std::collections::BTreeMap<u64, String> {
        (0u64..).zip(self.ids.iter().cloned()).collect()
    }

    /// The name of the node with Raft id `index`.
    pub fn name_of(&self, index: u64) -> Option<&str> {
        self.ids.get(index as usize).map(String::as_str)
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
    fn every_node_gives_every_node_the_same_raft_id_whatever_the_order() {
        let a = Cluster::new("n0", &ids(&["n0", "n1", "n2"])).expect("valid");
        let b = Cluster::new("n2", &ids(&["n2", "n0", "n1"])).expect("valid");
        for name in ["n0", "n1", "n2"] {
            assert_eq!(a.index_of(name), b.index_of(name));
        }
        assert_eq!((a.my_index(), b.my_index()), (0, 2));
        assert_eq!(b.name_of(1), Some("n1"));
        assert_eq!(b.index_of("c1"), None);
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
