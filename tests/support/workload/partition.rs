//! Network partitions: which nodes can reach which, and the shapes the partition nemesis draws.
//!
//! A partition splits the nodes into components; a message between two components is dropped,
//! both ways, as Jepsen's "complete grudges" do for the partition shapes Maelstrom's
//! `--nemesis partition` uses.

use std::fmt::Write as _;

use rand::Rng;
use rand::seq::SliceRandom;

/// The component of each node; nodes in different components cannot reach each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Indexed by node.
    component: Vec<usize>,
}

impl Partition {
    /// Every node reaches every other.
    pub fn healed(nodes: usize) -> Self {
        Partition {
            component: vec![0; nodes],
        }
    }

    /// Nodes in the same group reach each other; nodes in no group form one more group.
    pub fn from_groups(nodes: usize, groups: &[Vec<usize>]) -> Self {
        let mut component = vec![groups.len(); nodes];
        for (index, group) in groups.iter().enumerate() {
            for &node in group {
                component[node] = index;
            }
        }
        Partition { component }
    }

    /// Whether a message from `src` to `dest` is dropped.
    pub fn blocks(&self, src: usize, dest: usize) -> bool {
        self.component[src] != self.component[dest]
    }

    pub fn is_healed(&self) -> bool {
        self.component.windows(2).all(|pair| pair[0] == pair[1])
    }

    /// The groups of node indices, each sorted, ordered by their first node.
    pub fn groups(&self) -> Vec<Vec<usize>> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (node, &component) in self.component.iter().enumerate() {
            match groups
                .iter_mut()
                .find(|group| self.component[group[0]] == component)
            {
                Some(group) => group.push(node),
                None => groups.push(vec![node]),
            }
        }
        groups
    }

    /// `n0 | n1 n2`, for the nemesis log.
    pub fn describe(&self, node_ids: &[String]) -> String {
        let mut text = String::new();
        for (index, group) in self.groups().iter().enumerate() {
            if index > 0 {
                text.push_str(" |");
            }
            for &node in group {
                let _ = write!(text, " {}", node_ids[node]);
            }
        }
        text.trim_start().to_owned()
    }
}

/// The partition shapes the nemesis draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One random node cut off from all others (Jepsen's `:one`).
    IsolateOne,
    /// A random minority, as large as a minority can be, cut off from the majority (Jepsen's
    /// `:majority`): the majority can still decide, the minority must not.
    MajorityMinority,
    /// Nodes scattered over two or more random components.
    RandomSplit,
}

impl Shape {
    pub const ALL: [Shape; 3] = [
        Shape::IsolateOne,
        Shape::MajorityMinority,
        Shape::RandomSplit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::IsolateOne => "isolate-one",
            Shape::MajorityMinority => "majority-minority",
            Shape::RandomSplit => "random-split",
        }
    }

    /// A random partition of `nodes` nodes of this shape; healed if there is only one node.
    pub fn draw(self, nodes: usize, rng: &mut impl Rng) -> Partition {
        if nodes < 2 {
            return Partition::healed(nodes);
        }
        let mut order: Vec<usize> = (0..nodes).collect();
        order.shuffle(rng);
        match self {
            Shape::IsolateOne => Partition::from_groups(nodes, &[vec![order[0]]]),
            Shape::MajorityMinority => {
                // The largest minority: 1 of 3 or 4, 2 of 5 (and 1 of 2, which is half).
                let minority = ((nodes - 1) / 2).max(1);
                Partition::from_groups(nodes, &[order[..minority].to_vec()])
            }
            Shape::RandomSplit => {
                let count = rng.gen_range(2..=nodes);
                // The first `count` shuffled nodes seed one component each, so none is empty.
                let mut groups: Vec<Vec<usize>> =
                    order[..count].iter().map(|&node| vec![node]).collect();
                for &node in &order[count..] {
                    groups[rng.gen_range(0..count)].push(node);
                }
                Partition::from_groups(nodes, &groups)
            }
        }
    }
}
