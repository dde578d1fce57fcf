//! RFC 6962 conformance tests for `kasane_model::merkle`, instantiated with
//! SHA-256.
//!
//! The test vectors are the published Certificate Transparency ones, copied
//! by hand from github.com/transparency-dev/merkle:
//!
//! * leaf inputs, node hashes of all complete subtrees, the root for every
//!   tree size 0..=8 and the empty-tree hash: `testonly/constants.go`
//!   (`LeafInputs`, `NodeHashes`, `RootHashes`, `EmptyRootHash`);
//! * inclusion and consistency proofs with their hashes:
//!   `proof/verify_test.go` (`inclusionProofs`, `consistencyProofs`; the same
//!   values are in `log_verifier_test.go` and, base64-encoded, in
//!   `testdata/{inclusion,consistency}/*/happy-path.json`). They originate
//!   from the certificate-transparency C++ `merkle_tree_test.cc`;
//! * proof shapes as lists of node IDs (level, index):
//!   `proof/proof_test.go` (`TestInclusion`, `TestConsistency`).

use kasane_model::merkle::{
    consistency_proof, consistency_proof_from_leaf_hashes, empty_root, inclusion_proof,
    inclusion_proof_from_leaf_hashes, leaf_hash, node_hash, root, root_from_leaf_hashes, verify_consistency,
    verify_inclusion, verify_inclusion_of_leaf_hash, ConsistencyProof, InclusionProof, MerkleError, MerkleHasher,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

/// SHA-256, the hash function of RFC 6962.
struct Sha256Hasher;

impl MerkleHasher for Sha256Hasher {
    type Digest = [u8; 32];
    fn hash_parts(parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        hasher.finalize().into()
    }
}

type H = Sha256Hasher;
type Hash = [u8; 32];

// ---------------------------------------------------------------------------
// Published vectors.
// ---------------------------------------------------------------------------

/// `LeafInputs()` in testonly/constants.go.
const LEAVES_HEX: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// `EmptyRootHash()` in testonly/constants.go: SHA-256 of the empty string.
const EMPTY_ROOT_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// `RootHashes()[1..=8]` in testonly/constants.go: the root of the tree over
/// the first `i + 1` leaves.
const ROOTS_HEX: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// `NodeHashes()` in testonly/constants.go: `[level][index]` hashes of all
/// complete subtrees of the 8-leaf tree.
const NODE_HASHES_HEX: [&[&str]; 4] = [
    &[
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    &[
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    &[
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
];

/// `sha256SomeHash` in proof/verify_test.go, used as a random wrong hash.
const SOME_HASH_HEX: &str = "abacaba000000000000000000000000000000000000000000060061e00123456";

/// `inclusionProofs` in proof/verify_test.go as (leaf index, tree size,
/// path). The Go table numbers leaves from 1; the indices here are 0-based.
const INCLUSION_PROOFS: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// `consistencyProofs` in proof/verify_test.go as (old size, new size, path).
const CONSISTENCY_PROOFS: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

/// One element of a proof shape from proof/proof_test.go.
#[derive(Clone, Copy, Debug)]
enum Elem {
    /// The complete subtree at (level, index).
    N(u32, u64),
    /// The Go tests' "rehash": the listed nodes, which all lie on the right
    /// border of the tree, folded into their common ancestor. The first is
    /// the lowest, and each following one is the left sibling of the
    /// accumulated node.
    R(&'static [(u32, u64)]),
}

use Elem::{N, R};

/// `TestInclusion` in proof/proof_test.go as (tree size, leaf index, shape).
const INCLUSION_SHAPES: &[(u64, u64, &[Elem])] = &[
    (1, 0, &[]),
    (2, 0, &[N(0, 1)]),
    (2, 1, &[N(0, 0)]),
    (3, 1, &[N(0, 0), N(0, 2)]),
    (7, 0, &[N(0, 1), N(1, 1), R(&[(0, 6), (1, 2)])]),
    (7, 1, &[N(0, 0), N(1, 1), R(&[(0, 6), (1, 2)])]),
    (7, 2, &[N(0, 3), N(1, 0), R(&[(0, 6), (1, 2)])]),
    (7, 3, &[N(0, 2), N(1, 0), R(&[(0, 6), (1, 2)])]),
    (7, 4, &[N(0, 5), N(0, 6), N(2, 0)]),
    (7, 5, &[N(0, 4), N(0, 6), N(2, 0)]),
    (7, 6, &[N(1, 2), N(2, 0)]),
    (4, 2, &[N(0, 3), N(1, 0)]),
    (5, 3, &[N(0, 2), N(1, 0), N(0, 4)]),
    (6, 3, &[N(0, 2), N(1, 0), N(1, 2)]),
    (6, 4, &[N(0, 5), N(2, 0)]),
    (15, 10, &[N(0, 11), N(1, 4), R(&[(0, 14), (1, 6)]), N(3, 0)]),
    (31, 24, &[N(0, 25), N(1, 13), R(&[(0, 30), (1, 14)]), N(3, 2), N(4, 0)]),
    (
        95,
        81,
        &[
            N(0, 80),
            N(1, 41),
            N(2, 21),
            R(&[(0, 94), (1, 46), (2, 22)]),
            N(4, 4),
            N(6, 0),
        ],
    ),
];

/// The error cases of `TestInclusion` as (tree size, leaf index).
const INCLUSION_SHAPE_ERRORS: [(usize, usize); 5] = [(0, 0), (0, 1), (1, 2), (0, 3), (7, 8)];

/// `TestConsistency` in proof/proof_test.go as (old size, new size, shape).
const CONSISTENCY_SHAPES: &[(u64, u64, &[Elem])] = &[
    (1, 2, &[N(0, 1)]),
    (1, 4, &[N(0, 1), N(1, 1)]),
    (1, 6, &[N(0, 1), N(1, 1), N(1, 2)]),
    (2, 3, &[N(0, 2)]),
    (2, 8, &[N(1, 1), N(2, 1)]),
    (3, 7, &[N(0, 2), N(0, 3), N(1, 0), R(&[(0, 6), (1, 2)])]),
    (4, 7, &[R(&[(0, 6), (1, 2)])]),
    (5, 7, &[N(0, 4), N(0, 5), N(0, 6), N(2, 0)]),
    (6, 7, &[N(1, 2), N(0, 6), N(2, 0)]),
    (7, 8, &[N(0, 6), N(0, 7), N(1, 2), N(2, 0)]),
    (1, 1, &[]),
    (2, 2, &[]),
    (3, 3, &[]),
    (4, 4, &[]),
    (5, 5, &[]),
    (7, 7, &[]),
    (8, 8, &[]),
    (2, 4, &[N(1, 1)]),
    (3, 5, &[N(0, 2), N(0, 3), N(1, 0), N(0, 4)]),
    (3, 6, &[N(0, 2), N(0, 3), N(1, 0), N(1, 2)]),
    (4, 6, &[N(1, 2)]),
    (1, 7, &[N(0, 1), N(1, 1), R(&[(0, 6), (1, 2)])]),
    (10, 15, &[N(1, 4), N(1, 5), R(&[(0, 14), (1, 6)]), N(3, 0)]),
    (24, 31, &[N(3, 2), R(&[(0, 30), (1, 14), (2, 6)]), N(4, 0)]),
    (
        81,
        95,
        &[
            N(0, 80),
            N(0, 81),
            N(1, 41),
            N(2, 21),
            R(&[(0, 94), (1, 46), (2, 22)]),
            N(4, 4),
            N(6, 0),
        ],
    ),
];

/// The error cases of `TestConsistency` as (old size, new size).
const CONSISTENCY_SHAPE_ERRORS: [(usize, usize); 2] = [(5, 0), (9, 8)];

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

fn hash_hex(s: &str) -> Hash {
    let bytes = hex::decode(s).expect("test vector is valid hex");
    bytes.try_into().expect("test vector is a 32-byte hash")
}

fn path_hex(path: &[&str]) -> Vec<Hash> {
    path.iter().map(|s| hash_hex(s)).collect()
}

fn rfc_leaves() -> Vec<Vec<u8>> {
    LEAVES_HEX
        .iter()
        .map(|s| hex::decode(s).expect("test vector is valid hex"))
        .collect()
}

fn rfc_root(size: u64) -> Hash {
    match size {
        0 => hash_hex(EMPTY_ROOT_HEX),
        n => hash_hex(ROOTS_HEX[n as usize - 1]),
    }
}

/// Synthetic leaves for trees larger than the published 8-leaf one.
fn synthetic_leaves(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("kasane leaf {i}").into_bytes()).collect()
}

/// The Merkle Tree Hash exactly as RFC 6962 section 2.1 defines it, as an
/// independent reference for the library's iterative computation.
fn naive_mth(leaves: &[Vec<u8>]) -> Hash {
    match leaves.len() {
        0 => empty_root::<H>(),
        1 => leaf_hash::<H>(&leaves[0]),
        n => {
            let k = naive_split(n);
            node_hash::<H>(&naive_mth(&leaves[..k]), &naive_mth(&leaves[k..]))
        }
    }
}

fn naive_split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// `PATH(m, D[n])` of RFC 6962 section 2.1.1, recursively.
fn naive_path(m: usize, leaves: &[Vec<u8>]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = naive_split(n);
    if m < k {
        let mut p = naive_path(m, &leaves[..k]);
        p.push(naive_mth(&leaves[k..]));
        p
    } else {
        let mut p = naive_path(m - k, &leaves[k..]);
        p.push(naive_mth(&leaves[..k]));
        p
    }
}

/// `SUBPROOF(m, D[n], b)` of RFC 6962 section 2.1.2, recursively.
fn naive_subproof(m: usize, leaves: &[Vec<u8>], b: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if b { Vec::new() } else { vec![naive_mth(leaves)] };
    }
    let k = naive_split(n);
    if m <= k {
        let mut p = naive_subproof(m, &leaves[..k], b);
        p.push(naive_mth(&leaves[k..]));
        p
    } else {
        let mut p = naive_subproof(m - k, &leaves[k..], false);
        p.push(naive_mth(&leaves[..k]));
        p
    }
}

/// The hash of the complete subtree at (level, index): published for the
/// 8-leaf tree, computed with the naive reference for synthetic trees.
fn node_at(leaves: &[Vec<u8>], published: bool, level: u32, index: u64) -> Hash {
    if published {
        return hash_hex(NODE_HASHES_HEX[level as usize][index as usize]);
    }
    let width = 1usize << level;
    let start = index as usize * width;
    naive_mth(&leaves[start..start + width])
}

fn expand_shape(leaves: &[Vec<u8>], published: bool, shape: &[Elem]) -> Vec<Hash> {
    shape
        .iter()
        .map(|elem| match *elem {
            N(level, index) => node_at(leaves, published, level, index),
            R(nodes) => {
                let (&(level, index), rest) = nodes.split_first().expect("rehash is non-empty");
                let mut acc = node_at(leaves, published, level, index);
                for &(level, index) in rest {
                    acc = node_hash::<H>(&node_at(leaves, published, level, index), &acc);
                }
                acc
            }
        })
        .collect()
}

/// Leaves for a proof-shape test of a tree of `size` leaves, and whether
/// they are the published leaves (so published node hashes apply).
fn shape_leaves(size: u64) -> (Vec<Vec<u8>>, bool) {
    if size <= 8 {
        (rfc_leaves(), true)
    } else {
        (synthetic_leaves(size as usize), false)
    }
}

/// Every way of damaging an inclusion proof that must make it fail.
fn corrupt_inclusion(proof: &InclusionProof<Hash>) -> Vec<(String, InclusionProof<Hash>)> {
    let mut out = Vec::new();
    let mut add = |desc: String, f: &dyn Fn(&mut InclusionProof<Hash>)| {
        let mut p = proof.clone();
        f(&mut p);
        out.push((desc, p));
    };
    add("index - 1".into(), &|p| p.leaf_index = p.leaf_index.wrapping_sub(1));
    add("index + 1".into(), &|p| p.leaf_index += 1);
    add("index ^ 2".into(), &|p| p.leaf_index ^= 2);
    add("size * 2".into(), &|p| p.tree_size *= 2);
    add("size / 2".into(), &|p| p.tree_size /= 2);
    add("size 0".into(), &|p| p.tree_size = 0);
    add("size max".into(), &|p| p.tree_size = u64::MAX);
    add("trailing zero hash".into(), &|p| p.path.push([0; 32]));
    add("trailing some hash".into(), &|p| p.path.push(hash_hex(SOME_HASH_HEX)));
    add("preceding zero hash".into(), &|p| p.path.insert(0, [0; 32]));
    for i in 0..proof.path.len() {
        for byte in 0..32 {
            add(format!("path[{i}] byte {byte} flipped"), &|p| p.path[i][byte] ^= 0x08);
        }
    }
    if !proof.path.is_empty() {
        add("truncated".into(), &|p| {
            p.path.pop();
        });
        add("first removed".into(), &|p| {
            p.path.remove(0);
        });
    }
    if proof.path.len() > 1 {
        add("swapped".into(), &|p| p.path.swap(0, 1));
        add("inserted component".into(), &|p| {
            p.path.insert(1, hash_hex(SOME_HASH_HEX))
        });
    }
    out
}

/// Every way of damaging a non-trivial consistency proof that must make it
/// fail, with the roots to check it against.
fn corrupt_consistency(
    proof: &ConsistencyProof<Hash>,
    old_root: Hash,
    new_root: Hash,
) -> Vec<(String, ConsistencyProof<Hash>, Hash, Hash)> {
    let mut out = Vec::new();
    let mut add = |desc: String, f: &dyn Fn(&mut ConsistencyProof<Hash>), r1: Hash, r2: Hash| {
        let mut p = proof.clone();
        f(&mut p);
        out.push((desc, p, r1, r2));
    };
    let (r1, r2) = (old_root, new_root);
    let some = hash_hex(SOME_HASH_HEX);
    add("old - 1".into(), &|p| p.old_size -= 1, r1, r2);
    add("old + 1".into(), &|p| p.old_size += 1, r1, r2);
    add("old ^ 2".into(), &|p| p.old_size ^= 2, r1, r2);
    add("new * 2".into(), &|p| p.new_size *= 2, r1, r2);
    add("new / 2".into(), &|p| p.new_size /= 2, r1, r2);
    add("new max".into(), &|p| p.new_size = u64::MAX, r1, r2);
    add("wrong old root".into(), &|_| {}, some, r2);
    add("wrong new root".into(), &|_| {}, r1, some);
    add("swapped roots".into(), &|_| {}, r2, r1);
    add("empty path".into(), &|p| p.path.clear(), r1, r2);
    add("trailing zero hash".into(), &|p| p.path.push([0; 32]), r1, r2);
    add("trailing old root".into(), &|p| p.path.push(r1), r1, r2);
    add("trailing new root".into(), &|p| p.path.push(r2), r1, r2);
    add("preceding zero hash".into(), &|p| p.path.insert(0, [0; 32]), r1, r2);
    add("preceding old root".into(), &|p| p.path.insert(0, r1), r1, r2);
    add("preceding new root".into(), &|p| p.path.insert(0, r2), r1, r2);
    add("preceding path[0]".into(), &|p| p.path.insert(0, p.path[0]), r1, r2);
    add(
        "truncated".into(),
        &|p| {
            p.path.pop();
        },
        r1,
        r2,
    );
    for i in 0..proof.path.len() {
        for byte in 0..32 {
            add(
                format!("path[{i}] byte {byte} flipped"),
                &|p| p.path[i][byte] ^= 0x10,
                r1,
                r2,
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Published-vector tests.
// ---------------------------------------------------------------------------

#[test]
fn empty_tree_root_matches_published() {
    let expected = hash_hex(EMPTY_ROOT_HEX);
    assert_eq!(empty_root::<H>(), expected);
    assert_eq!(root::<H, Vec<u8>>(&[]), expected);
    assert_eq!(root_from_leaf_hashes::<H>(&[]), expected);
}

#[test]
fn roots_match_published_for_every_size() {
    let leaves = rfc_leaves();
    let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash::<H>(l)).collect();
    for size in 1..=8usize {
        let expected = rfc_root(size as u64);
        assert_eq!(root::<H, _>(&leaves[..size]), expected, "size {size}");
        assert_eq!(root_from_leaf_hashes::<H>(&hashes[..size]), expected, "size {size}");
    }
}

#[test]
fn leaf_and_node_hashes_match_published() {
    let leaves = rfc_leaves();
    for (i, leaf) in leaves.iter().enumerate() {
        assert_eq!(leaf_hash::<H>(leaf), hash_hex(NODE_HASHES_HEX[0][i]), "leaf {i}");
    }
    for level in 1..NODE_HASHES_HEX.len() {
        for (i, expected) in NODE_HASHES_HEX[level].iter().enumerate() {
            let left = hash_hex(NODE_HASHES_HEX[level - 1][2 * i]);
            let right = hash_hex(NODE_HASHES_HEX[level - 1][2 * i + 1]);
            assert_eq!(node_hash::<H>(&left, &right), hash_hex(expected), "node {level}/{i}");
        }
    }
}

#[test]
fn generated_inclusion_proofs_equal_published_paths() {
    let leaves = rfc_leaves();
    for &(index, size, path) in &INCLUSION_PROOFS {
        let proof = inclusion_proof::<H, _>(&leaves[..size as usize], index as usize)
            .expect("published proof parameters are valid");
        assert_eq!(proof.leaf_index, index);
        assert_eq!(proof.tree_size, size);
        assert_eq!(proof.path, path_hex(path), "index {index} size {size}");
    }
}

#[test]
fn published_inclusion_proofs_verify_and_corruptions_fail() {
    let leaves = rfc_leaves();
    for &(index, size, path) in &INCLUSION_PROOFS {
        let proof = InclusionProof {
            leaf_index: index,
            tree_size: size,
            path: path_hex(path),
        };
        let root = rfc_root(size);
        let data = &leaves[index as usize];
        verify_inclusion::<H>(data, &proof, &root).unwrap_or_else(|e| panic!("index {index} size {size}: {e}"));
        verify_inclusion_of_leaf_hash::<H>(&leaf_hash::<H>(data), &proof, &root)
            .unwrap_or_else(|e| panic!("index {index} size {size}: {e}"));

        assert!(verify_inclusion::<H>(b"WrongLeaf", &proof, &root).is_err());
        assert!(verify_inclusion::<H>(data, &proof, &hash_hex(EMPTY_ROOT_HEX)).is_err());
        assert!(verify_inclusion::<H>(data, &proof, &hash_hex(SOME_HASH_HEX)).is_err());
        // A leaf hash presented as leaf data must not verify: this is what the
        // 0x00 leaf prefix protects against.
        assert!(verify_inclusion::<H>(&leaf_hash::<H>(data), &proof, &root).is_err());
        for (desc, bad) in corrupt_inclusion(&proof) {
            assert!(
                verify_inclusion::<H>(data, &bad, &root).is_err(),
                "index {index} size {size}: {desc} verified"
            );
        }
    }
}

#[test]
fn generated_consistency_proofs_equal_published_paths() {
    let leaves = rfc_leaves();
    for &(old, new, path) in &CONSISTENCY_PROOFS {
        let proof = consistency_proof::<H, _>(&leaves[..new as usize], old as usize)
            .expect("published proof parameters are valid");
        assert_eq!((proof.old_size, proof.new_size), (old, new));
        assert_eq!(proof.path, path_hex(path), "{old} -> {new}");
    }
}

#[test]
fn published_consistency_proofs_verify_and_corruptions_fail() {
    for &(old, new, path) in &CONSISTENCY_PROOFS {
        let proof = ConsistencyProof {
            old_size: old,
            new_size: new,
            path: path_hex(path),
        };
        let (r1, r2) = (rfc_root(old), rfc_root(new));
        verify_consistency::<H>(&proof, &r1, &r2).unwrap_or_else(|e| panic!("{old} -> {new}: {e}"));
        if proof.path.is_empty() {
            continue;
        }
        for (desc, bad, b1, b2) in corrupt_consistency(&proof, r1, r2) {
            assert!(
                verify_consistency::<H>(&bad, &b1, &b2).is_err(),
                "{old} -> {new}: {desc} verified"
            );
        }
    }
}

#[test]
fn inclusion_proofs_have_published_shapes() {
    for &(size, index, shape) in INCLUSION_SHAPES {
        let (leaves, published) = shape_leaves(size);
        let leaves = &leaves[..size as usize];
        let proof = inclusion_proof::<H, _>(leaves, index as usize).expect("valid parameters");
        assert_eq!(
            proof.path,
            expand_shape(leaves, published, shape),
            "size {size} index {index}"
        );
        verify_inclusion::<H>(&leaves[index as usize], &proof, &root::<H, _>(leaves))
            .unwrap_or_else(|e| panic!("size {size} index {index}: {e}"));
    }
    let leaves = rfc_leaves();
    for &(size, index) in &INCLUSION_SHAPE_ERRORS {
        let err = inclusion_proof::<H, _>(&leaves[..size], index).expect_err("invalid");
        assert_eq!(
            err,
            MerkleError::IndexOutOfRange {
                index: index as u64,
                size: size as u64
            }
        );
    }
}

#[test]
fn consistency_proofs_have_published_shapes() {
    for &(old, new, shape) in CONSISTENCY_SHAPES {
        let (leaves, published) = shape_leaves(new);
        let leaves = &leaves[..new as usize];
        let proof = consistency_proof::<H, _>(leaves, old as usize).expect("valid parameters");
        assert_eq!(proof.path, expand_shape(leaves, published, shape), "{old} -> {new}");
        let old_root = root::<H, _>(&leaves[..old as usize]);
        verify_consistency::<H>(&proof, &old_root, &root::<H, _>(leaves))
            .unwrap_or_else(|e| panic!("{old} -> {new}: {e}"));
    }
    let leaves = rfc_leaves();
    for &(old, new) in &CONSISTENCY_SHAPE_ERRORS {
        let err = consistency_proof::<H, _>(&leaves[..new], old).expect_err("invalid");
        assert_eq!(
            err,
            MerkleError::BadSizes {
                old_size: old as u64,
                new_size: new as u64
            }
        );
    }
}

// ---------------------------------------------------------------------------
// Reference-implementation and edge-case tests.
// ---------------------------------------------------------------------------

#[test]
fn iterative_root_equals_recursive_definition() {
    let leaves = synthetic_leaves(70);
    let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash::<H>(l)).collect();
    for n in 0..=70 {
        let expected = naive_mth(&leaves[..n]);
        assert_eq!(root::<H, _>(&leaves[..n]), expected, "n = {n}");
        assert_eq!(root_from_leaf_hashes::<H>(&hashes[..n]), expected, "n = {n}");
    }
}

#[test]
fn proofs_equal_recursive_definitions() {
    let leaves = synthetic_leaves(40);
    let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash::<H>(l)).collect();
    for n in 1..=leaves.len() {
        for m in 0..n {
            let proof = inclusion_proof_from_leaf_hashes::<H>(&hashes[..n], m).expect("valid");
            assert_eq!(proof.path, naive_path(m, &leaves[..n]), "PATH({m}, D[{n}])");
        }
        for m in 1..n {
            let proof = consistency_proof_from_leaf_hashes::<H>(&hashes[..n], m).expect("valid");
            assert_eq!(proof.path, naive_subproof(m, &leaves[..n], true), "PROOF({m}, D[{n}])");
        }
    }
}

#[test]
fn trivial_consistency_proofs() {
    let leaves = rfc_leaves();
    let empty = hash_hex(EMPTY_ROOT_HEX);
    for n in 0..=8usize {
        let root_n = rfc_root(n as u64);
        // From the empty tree and to the same size the proof is empty.
        for old in [0, n] {
            let proof = consistency_proof::<H, _>(&leaves[..n], old).expect("valid");
            assert!(proof.path.is_empty());
            let old_root = rfc_root(old as u64);
            verify_consistency::<H>(&proof, &old_root, &root_n).expect("trivially consistent");
        }
        if n > 0 {
            // A wrong claimed root for the empty tree is rejected.
            let proof = ConsistencyProof {
                old_size: 0,
                new_size: n as u64,
                path: vec![],
            };
            assert_eq!(
                verify_consistency::<H>(&proof, &root_n, &root_n),
                Err(MerkleError::RootMismatch)
            );
            // Equal sizes need equal roots and an empty path.
            let same = ConsistencyProof {
                old_size: n as u64,
                new_size: n as u64,
                path: vec![],
            };
            assert_eq!(
                verify_consistency::<H>(&same, &empty, &root_n),
                Err(MerkleError::RootMismatch)
            );
            let padded = ConsistencyProof {
                path: vec![empty],
                ..same
            };
            assert_eq!(
                verify_consistency::<H>(&padded, &root_n, &root_n),
                Err(MerkleError::WrongPathLength { expected: 0, found: 1 })
            );
        }
    }
}

#[test]
fn inclusion_in_empty_tree_is_an_error() {
    let empty = hash_hex(EMPTY_ROOT_HEX);
    let proof = InclusionProof {
        leaf_index: 0,
        tree_size: 0,
        path: vec![],
    };
    assert_eq!(
        verify_inclusion::<H>(b"", &proof, &empty),
        Err(MerkleError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(
        inclusion_proof::<H, Vec<u8>>(&[], 0),
        Err(MerkleError::IndexOutOfRange { index: 0, size: 0 })
    );
}

#[test]
fn extreme_sizes_are_rejected_without_panicking() {
    let some = hash_hex(SOME_HASH_HEX);
    for (index, size) in [
        (0, u64::MAX),
        (u64::MAX - 1, u64::MAX),
        (u64::MAX, u64::MAX),
        (1 << 63, u64::MAX),
    ] {
        let proof = InclusionProof {
            leaf_index: index,
            tree_size: size,
            path: vec![some; 3],
        };
        assert!(verify_inclusion::<H>(b"x", &proof, &some).is_err());
    }
    for (old, new) in [
        (1, u64::MAX),
        (u64::MAX, u64::MAX),
        (u64::MAX - 1, u64::MAX),
        (u64::MAX, 1),
    ] {
        let proof = ConsistencyProof {
            old_size: old,
            new_size: new,
            path: vec![some; 3],
        };
        assert!(verify_consistency::<H>(&proof, &some, &some).is_err());
    }
    // Well-formed paths for the largest trees still run the full algorithm
    // and fail only on the hashes.
    let proof = InclusionProof {
        leaf_index: 0,
        tree_size: u64::MAX,
        path: vec![some; 64],
    };
    assert_eq!(
        verify_inclusion::<H>(b"x", &proof, &some),
        Err(MerkleError::RootMismatch)
    );
}

#[test]
fn proofs_round_trip_through_serde() {
    let leaves = rfc_leaves();
    let proof = inclusion_proof::<H, _>(&leaves, 5).expect("valid");
    let bytes = postcard::to_stdvec(&proof).expect("serializes");
    let back: InclusionProof<Hash> = postcard::from_bytes(&bytes).expect("deserializes");
    assert_eq!(back, proof);
    let proof = consistency_proof::<H, _>(&leaves, 3).expect("valid");
    let bytes = postcard::to_stdvec(&proof).expect("serializes");
    let back: ConsistencyProof<Hash> = postcard::from_bytes(&bytes).expect("deserializes");
    assert_eq!(back, proof);
}

// ---------------------------------------------------------------------------
// Property tests.
// ---------------------------------------------------------------------------

fn arb_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..300,
        any::<u64>(),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        (0u32..64).prop_map(|b| 1u64 << b),
    ]
}

fn arb_hash() -> impl Strategy<Value = Hash> {
    prop_oneof![any::<[u8; 32]>(), Just([0u8; 32])]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_inclusion_proofs_verify(
        (n, index) in (1usize..200).prop_flat_map(|n| (Just(n), 0..n)),
        salt in any::<u32>(),
    ) {
        let leaves: Vec<Vec<u8>> = (0..n).map(|i| format!("{salt}/{i}").into_bytes()).collect();
        let root = root::<H, _>(&leaves);
        let proof = inclusion_proof::<H, _>(&leaves, index).expect("valid");
        prop_assert_eq!(verify_inclusion::<H>(&leaves[index], &proof, &root), Ok(()));
        let other = (index + 1) % n;
        if other != index {
            prop_assert!(verify_inclusion::<H>(&leaves[other], &proof, &root).is_err());
            let moved = InclusionProof { leaf_index: other as u64, ..proof.clone() };
            prop_assert!(verify_inclusion::<H>(&leaves[index], &moved, &root).is_err());
        }
    }

    #[test]
    fn generated_consistency_proofs_verify(
        (new, old) in (1usize..200).prop_flat_map(|n| (Just(n), 0..=n)),
        salt in any::<u32>(),
    ) {
        let leaves: Vec<Vec<u8>> = (0..new).map(|i| format!("{salt}/{i}").into_bytes()).collect();
        let old_root = root::<H, _>(&leaves[..old]);
        let new_root = root::<H, _>(&leaves);
        let proof = consistency_proof::<H, _>(&leaves, old).expect("valid");
        prop_assert_eq!(verify_consistency::<H>(&proof, &old_root, &new_root), Ok(()));
        if old != 0 && old != new {
            // A tree that differs in its last old leaf is not a prefix.
            let mut forked = leaves.clone();
            forked[old - 1].push(0xff);
            let forked_old_root = root::<H, _>(&forked[..old]);
            prop_assert!(verify_consistency::<H>(&proof, &forked_old_root, &new_root).is_err());
        }
    }

    #[test]
    fn verify_inclusion_never_panics(
        index in arb_size(),
        size in arb_size(),
        path in prop::collection::vec(arb_hash(), 0..=70),
        leaf in arb_hash(),
        root in arb_hash(),
    ) {
        let proof = InclusionProof { leaf_index: index, tree_size: size, path };
        let _ = verify_inclusion_of_leaf_hash::<H>(&leaf, &proof, &root);
        // Retry with a path of exactly the required length so the hashing
        // loop runs on arbitrary sizes too.
        if let Err(MerkleError::WrongPathLength { expected, .. }) =
            verify_inclusion_of_leaf_hash::<H>(&leaf, &InclusionProof { path: vec![], ..proof.clone() }, &root)
        {
            prop_assert!(expected <= 64);
            let path = (0..expected).map(|i| proof.path.get(i).copied().unwrap_or(leaf)).collect();
            let full = InclusionProof { path, ..proof };
            prop_assert!(verify_inclusion_of_leaf_hash::<H>(&leaf, &full, &root).is_err());
        }
    }

    #[test]
    fn verify_consistency_never_panics(
        old in arb_size(),
        new in arb_size(),
        path in prop::collection::vec(arb_hash(), 0..=130),
        old_root in arb_hash(),
        new_root in arb_hash(),
    ) {
        let proof = ConsistencyProof { old_size: old, new_size: new, path };
        let _ = verify_consistency::<H>(&proof, &old_root, &new_root);
        if let Err(MerkleError::WrongPathLength { expected, .. }) =
            verify_consistency::<H>(&ConsistencyProof { path: vec![], ..proof.clone() }, &old_root, &new_root)
        {
            prop_assert!(expected <= 128);
            let path = (0..expected).map(|i| proof.path.get(i).copied().unwrap_or(old_root)).collect();
            let full = ConsistencyProof { path, ..proof };
            let _ = verify_consistency::<H>(&full, &old_root, &new_root);
        }
    }
}
