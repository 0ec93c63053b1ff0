//! A cluster's membership as the operator gives it: `--cluster-id NAME
//! --node-id N --peers 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT`, every node
//! listed, this one included. The cluster id is what the peer links'
//! hello checks; two nodes' lists may differ (a node being added or
//! removed, one node at a time) as long as each lists the other, and a
//! difference is logged.

use std::collections::BTreeMap;
use std::fmt;

use crate::raft::types::NodeId;

/// Most nodes a cluster may have: every node keeps a link to every other
/// and every metadata entry is replicated on all of them; a cluster of a
/// few machines is what this is for, and a typo in a long list is caught.
pub const NODES_MAX: usize = 16;

/// Largest node id: Kafka's Metadata names brokers by a signed 32-bit id,
/// and a node's id is its broker id.
pub const NODE_ID_MAX: NodeId = i32::MAX as NodeId;

/// The nodes of a cluster and the address each listens on for its peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    nodes: BTreeMap<NodeId, String>,
}

impl Membership {
    /// A membership from `(id, address)` pairs, checked as [`parse`] does.
    pub fn new(nodes: impl IntoIterator<Item = (NodeId, String)>) -> Result<Membership, String> {
        let mut map = BTreeMap::new();
        for (id, address) in nodes {
            if id > NODE_ID_MAX {
                return Err(format!(
                    "node id {id} is over {NODE_ID_MAX} (Kafka's broker ids are 32-bit)"
                ));
            }
            check_address(&address).map_err(|why| format!("node {id}'s address: {why}"))?;
            if let Some((other, _)) = map.iter().find(|(_, a)| **a == address) {
                return Err(format!(
                    "nodes {other} and {id} share the address {address}"
                ));
            }
            if map.insert(id, address).is_some() {
                return Err(format!("node {id} is listed twice"));
            }
        }
        if map.is_empty() {
            return Err("no node is listed".into());
        }
        if map.len() > NODES_MAX {
            return Err(format!(
                "{} nodes are listed; a cluster has at most {NODES_MAX}",
                map.len()
            ));
        }
        Ok(Membership { nodes: map })
    }

    /// Every node and its address, by id.
    pub fn nodes(&self) -> &BTreeMap<NodeId, String> {
        &self.nodes
    }

    /// Node `id`'s address.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.nodes.get(&id).map(String::as_str)
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id)
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a membership has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (id, address) in &self.nodes {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{id}={address}")?;
        }
        Ok(())
    }
}

/// Longest cluster id: a name an operator types and reads in logs.
pub const CLUSTER_ID_BYTES_MAX: usize = 64;

/// This node and its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// The cluster's id (`--cluster-id`): a node of another cluster is
    /// refused even if it holds the same secret.
    pub id: String,
    pub me: NodeId,
    pub membership: Membership,
}

/// Checks a cluster id: 1 to [`CLUSTER_ID_BYTES_MAX`] ASCII letters,
/// digits, `-`, `_` and `.`, so that it reads the same in every log and
/// refusal, unescaped.
pub fn check_cluster_id(id: &str) -> Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= CLUSTER_ID_BYTES_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "--cluster-id {id:?}: 1 to {CLUSTER_ID_BYTES_MAX} ASCII letters, digits, '-', '_' \
             and '.'"
        ))
    }
}

/// Parses `--cluster-id`, `--node-id` and `--peers`; the error says what
/// is wrong.
pub fn parse(id: &str, me: NodeId, peers: &str) -> Result<Cluster, String> {
    check_cluster_id(id)?;
    let mut nodes = Vec::new();
    for entry in peers.split(',') {
        let entry = entry.trim();
        let Some((id, address)) = entry.split_once('=') else {
            return Err(format!("--peers: {entry:?} is not ID=HOST:PORT"));
        };
        let id: NodeId = id.trim().parse().map_err(|_| {
            format!("--peers: {id:?} in {entry:?} is not a node id (0 to {NODE_ID_MAX})")
        })?;
        nodes.push((id, address.trim().to_string()));
    }
    let membership = Membership::new(nodes).map_err(|why| format!("--peers: {why}"))?;
    if !membership.contains(me) {
        return Err(format!(
            "--node-id {me} is not in --peers ({membership}): list every node, this one included"
        ));
    }
    Ok(Cluster {
        id: id.to_string(),
        me,
        membership,
    })
}

/// Checks that `address` is `HOST:PORT`: a host name, an IPv4 address or a
/// bracketed IPv6 address, and a port from 1 to 65535 (a peer cannot dial
/// port 0).
pub(crate) fn check_address(address: &str) -> Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("{address:?} is not HOST:PORT"));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("{address:?}: the port is 1 to 65535")),
        Ok(_) => {}
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ok = inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "{address:?}: {host:?} is not a bracketed IPv6 address"
            ))
        };
    }
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid_name {
        Ok(())
    } else {
        Err(format!(
            "{address:?}: {host:?} is not a host name or an IP address"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_list_parses() {
        let cluster = parse(
            "prod-1",
            2,
            "1=10.0.0.1:7000, 2=node-b.local:7000,3=[::1]:7001",
        )
        .expect("a valid membership");
        assert_eq!((cluster.id.as_str(), cluster.me), ("prod-1", 2));
        assert_eq!(cluster.membership.len(), 3);
        assert_eq!(cluster.membership.address(3), Some("[::1]:7001"));
        assert_eq!(
            cluster.membership.to_string(),
            "1=10.0.0.1:7000,2=node-b.local:7000,3=[::1]:7001"
        );
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        let cases = [
            ("1=a:1,2=b:2", 3, "is not in --peers"),
            ("1=a:1,1=b:2", 1, "listed twice"),
            ("1=a:1,2=a:1", 1, "share the address"),
            ("1=a", 1, "is not HOST:PORT"),
            ("1=a:0", 1, "the port is 1 to 65535"),
            ("1=a:70000", 1, "the port is 1 to 65535"),
            ("1=:7000", 1, "is not a host name"),
            ("1=a b:7000", 1, "is not a host name"),
            ("1=[zz]:7000", 1, "bracketed IPv6"),
            ("x=a:1", 1, "is not a node id"),
            ("1:a:1", 1, "is not ID=HOST:PORT"),
            ("", 1, "is not ID=HOST:PORT"),
            ("2147483648=a:1", 2_147_483_648, "32-bit"),
        ];
        for (peers, me, expected) in cases {
            let error = parse("c", me, peers).expect_err("refused");
            assert!(
                error.contains(expected),
                "{peers:?} as node {me}: {error:?} does not say {expected:?}"
            );
        }
        let many: Vec<String> = (0..=NODES_MAX).map(|i| format!("{i}=h{i}:7000")).collect();
        assert!(
            parse("c", 0, &many.join(","))
                .expect_err("refused")
                .contains("at most")
        );
        for id in ["", "a b", "é", "x/y", &"c".repeat(CLUSTER_ID_BYTES_MAX + 1)] {
            let error = parse(id, 1, "1=a:1").expect_err("refused");
            assert!(error.contains("--cluster-id"), "{id:?}: {error:?}");
        }
        assert!(parse(&"c".repeat(CLUSTER_ID_BYTES_MAX), 1, "1=a:1").is_ok());
    }
}
