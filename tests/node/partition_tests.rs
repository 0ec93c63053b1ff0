//! Unit tests of the partition shapes: each cuts the cluster the way its name says, the cut is
//! symmetric, and a healed network blocks nothing.

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::workload::partition::{Partition, Shape};

/// Seeds tried per shape and size: enough to hit every node as the isolated one.
const SEEDS: u64 = 64;

/// Cluster sizes the scenarios and Maelstrom's configurations use.
const SIZES: [usize; 4] = [2, 3, 4, 5];

fn draws(shape: Shape, nodes: usize) -> impl Iterator<Item = Partition> {
    (0..SEEDS).map(move |seed| shape.draw(nodes, &mut StdRng::seed_from_u64(seed)))
}

fn group_sizes(partition: &Partition) -> Vec<usize> {
    let mut sizes: Vec<usize> = partition.groups().iter().map(Vec::len).collect();
    sizes.sort_unstable();
    sizes
}

#[test]
fn healed_network_blocks_nothing() {
    let partition = Partition::healed(3);
    assert!(partition.is_healed());
    for src in 0..3 {
        for dest in 0..3 {
            assert!(!partition.blocks(src, dest), "{src} -> {dest}");
        }
    }
}

#[test]
fn groups_block_across_and_not_within() {
    let partition = Partition::from_groups(4, &[vec![0, 2]]);
    assert_eq!(partition.groups(), vec![vec![0, 2], vec![1, 3]]);
    assert!(!partition.blocks(0, 2) && !partition.blocks(1, 3));
    assert!(partition.blocks(0, 1) && partition.blocks(1, 0));
    assert!(partition.blocks(2, 3) && partition.blocks(3, 2));
    let ids: Vec<String> = (0..4).map(|i| format!("n{i}")).collect();
    assert_eq!(partition.describe(&ids), "n0 n2 | n1 n3");
}

#[test]
fn isolate_one_cuts_off_a_single_node() {
    for nodes in SIZES {
        let mut isolated = vec![false; nodes];
        for partition in draws(Shape::IsolateOne, nodes) {
            let groups = partition.groups();
            assert_eq!(group_sizes(&partition), [1, nodes - 1], "{groups:?}");
            let alone = groups
                .iter()
                .find(|group| group.len() == 1)
                .expect("a lone node");
            isolated[alone[0]] = true;
        }
        // Of two nodes, each is "the isolated one"; groups() names the first.
        if nodes > 2 {
            assert!(
                isolated.iter().all(|&hit| hit),
                "{nodes} nodes: {isolated:?}"
            );
        }
    }
}

#[test]
fn majority_minority_leaves_a_strict_majority_on_one_side() {
    for nodes in SIZES {
        for partition in draws(Shape::MajorityMinority, nodes) {
            let sizes = group_sizes(&partition);
            assert_eq!(sizes.len(), 2, "{sizes:?}");
            assert_eq!(sizes.iter().sum::<usize>(), nodes);
            if nodes > 2 {
                // The largest possible minority: a majority of the rest can still decide.
                assert_eq!(sizes[0], (nodes - 1) / 2, "{nodes} nodes: {sizes:?}");
                assert!(2 * sizes[1] > nodes, "{nodes} nodes: {sizes:?}");
            }
        }
    }
}

#[test]
fn random_split_makes_at_least_two_components_of_every_node() {
    for nodes in SIZES {
        let mut seen_sizes = std::collections::BTreeSet::new();
        for partition in draws(Shape::RandomSplit, nodes) {
            let sizes = group_sizes(&partition);
            assert!(sizes.len() >= 2, "{sizes:?}");
            assert_eq!(sizes.iter().sum::<usize>(), nodes);
            seen_sizes.insert(sizes);
        }
        if nodes > 2 {
            assert!(seen_sizes.len() > 1, "{nodes} nodes: always {seen_sizes:?}");
        }
    }
}

#[test]
fn every_shape_leaves_one_node_whole() {
    for shape in Shape::ALL {
        let partition = shape.draw(1, &mut StdRng::seed_from_u64(0));
        assert!(partition.is_healed(), "{}", shape.name());
    }
}
