//! Which node holds a key: libmemcached's weighted ketama consistent hashing
//! (`MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`), so that apps in other languages that share the
//! pool through libmemcached (PHP's memcached, pylibmc) find the same sessions.
//!
//! Each node gets points on a ring of 32-bit values in proportion to its weight (160 per
//! node on average); a key belongs to the node of the first point at or after the key's
//! hash, wrapping around. Adding a node to N moves about 1/(N+1) of the keys, all to it.
//!
//! The definition, as libmemcached's `update_continuum` and its MD5 hash compute it:
//!
//! - A node's share is `floor(weight / total * 160 / 4 * nodes + 1e-10) * 4` points,
//!   every step in single precision (`float`) as libmemcached computes it: weights 4, 9,
//!   5, 3 and 4 get 124, 288, 160, 92 and 124 points, where exact arithmetic gives 128 and
//!   96 for two of them.
//! - Its points are made four at a time: for `i` from 0, the MD5 digest of the node's ring
//!   name (see [`Node::ring_name`](super::node::Node::ring_name)) followed by `-i` gives four
//!   values, each four bytes of the digest read little-endian.
//! - A key's hash is the first four bytes of its MD5 digest, read little-endian.

use md5::{Digest, Md5};

use super::node::Node;

/// libmemcached's `MEMCACHED_POINTS_PER_SERVER_KETAMA`.
const POINTS_PER_NODE: f32 = 160.0;
/// Points made from one MD5 digest.
const POINTS_PER_HASH: u32 = 4;

/// The ring of a list of nodes.
#[derive(Debug, Clone)]
pub(super) struct Ring {
    /// Sorted by value: (value, node index).
    points: Vec<(u32, usize)>,
}

impl Ring {
    /// The ring of `nodes`, in their order (a node's index is its place in the list).
    pub(super) fn new(nodes: &[Node]) -> Self {
        let total: u64 = nodes.iter().map(|node| u64::from(node.weight)).sum();
        #[allow(clippy::cast_precision_loss)] // as libmemcached: single precision
        let (total, count) = (total as f32, nodes.len() as f32);
        let mut points = Vec::new();
        for (index, node) in nodes.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)]
            let share = node.weight as f32 / total;
            let scaled = share * POINTS_PER_NODE / 4.0 * count;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let hashes = (scaled + 0.000_000_000_1).floor() as u32;
            let name = node.ring_name();
            for i in 0..hashes {
                let digest = Md5::digest(format!("{name}-{i}"));
                for part in digest.chunks_exact(4).take(POINTS_PER_HASH as usize) {
                    let value = u32::from_le_bytes([part[0], part[1], part[2], part[3]]);
                    points.push((value, index));
                }
            }
        }
        // Equal values: the node listed first wins, as in libmemcached.
        points.sort_unstable();
        Self { points }
    }

    /// The index of the node that holds `key`.
    pub(super) fn node_of(&self, key: &[u8]) -> usize {
        let hash = key_hash(key);
        let at = self.points.partition_point(|&(value, _)| value < hash);
        self.points
            .get(at)
            .or_else(|| self.points.first())
            .map_or(0, |&(_, node)| node)
    }

    /// How many points each of `nodes` nodes has, for tests.
    #[cfg(test)]
    fn points_of(&self, node: usize) -> usize {
        self.points.iter().filter(|&&(_, n)| n == node).count()
    }
}

/// A key's place on the ring: the first four bytes of its MD5 digest, little-endian.
fn key_hash(key: &[u8]) -> u32 {
    let digest = Md5::digest(key);
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(list: &[&str]) -> Vec<Node> {
        list.iter().map(|spec| Node::parse(spec).unwrap()).collect()
    }

    /// Vectors computed from the definition by an independent implementation and checked
    /// against libmemcached 1.1.4 itself (`memcached_generate_hash` with
    /// `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`), for five lists: equal weights, weights 1 to 3,
    /// the default port left out of names, the single-precision rounding, IPv6 hosts.
    #[test]
    fn keys_map_to_the_nodes_libmemcached_picks() {
        let mut ring = None;
        let mut checked = 0;
        for line in include_str!("ketama-vectors.txt").lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields[..] {
                ["#", ..] => {}
                ["list", _, ref rest @ ..] => {
                    let (specs, counts) = rest.split_at(rest.len() - 2);
                    let list = nodes(specs);
                    let built = Ring::new(&list);
                    let points: Vec<String> = (0..list.len())
                        .map(|n| built.points_of(n).to_string())
                        .collect();
                    assert_eq!(points.join(","), counts[1], "{line}");
                    ring = Some(built);
                }
                [list, key, index] => {
                    let key: Vec<u8> = (0..key.len())
                        .step_by(2)
                        .map(|at| u8::from_str_radix(&key[at..at + 2], 16).unwrap())
                        .collect();
                    let index: usize = index.parse().unwrap();
                    let ring = ring.as_ref().unwrap();
                    assert_eq!(ring.node_of(&key), index, "list {list}, key {key:?}");
                    checked += 1;
                }
                _ => panic!("a line of neither form: {line}"),
            }
        }
        assert_eq!(checked, 215);
    }

    #[test]
    fn every_node_gets_points_in_proportion_to_its_weight() {
        let ring = Ring::new(&nodes(&["a:1", "b:2", "c:3"]));
        assert_eq!(
            (0..3).map(|n| ring.points_of(n)).collect::<Vec<_>>(),
            [160; 3]
        );
        let ring = Ring::new(&nodes(&["a:1:1", "b:2:2", "c:3:3"]));
        assert_eq!(
            (0..3).map(|n| ring.points_of(n)).collect::<Vec<_>>(),
            [80, 160, 240]
        );
    }

    #[test]
    fn adding_a_node_moves_about_a_quarter_of_the_keys_all_to_it() {
        let three = Ring::new(&nodes(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]));
        let four = Ring::new(&nodes(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]));
        let keys = 10_000;
        let mut moved = 0;
        for i in 0..keys {
            let key = format!("session:{i:032x}");
            let (before, after) = (three.node_of(key.as_bytes()), four.node_of(key.as_bytes()));
            if before != after {
                assert_eq!(after, 3, "a key moved between old nodes");
                moved += 1;
            }
        }
        assert!((1_800..3_200).contains(&moved), "{moved} of {keys} moved");
    }
}
