//! Merkle hash trees in the style of Certificate Transparency.
//!
//! This module implements the Merkle Tree Hash (MTH) of RFC 6962 section 2.1,
//! as restated in RFC 9162 section 2.1, generically over the hash function:
//!
//! * the hash of an empty tree is the hash of the empty string, `H("")`;
//! * the hash of a leaf is `H(0x00 || data)`;
//! * the hash of a tree of `n > 1` leaves is `H(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`,
//!   where `k` is the largest power of two strictly smaller than `n`.
//!
//! The distinct `0x00`/`0x01` prefixes are what make the tree second-preimage
//! resistant: a leaf can never be confused with an interior node, so a prover
//! cannot present an interior node as if it were a leaf of a smaller tree.
//!
//! The split rule makes the left subtree of every node a perfect binary tree.
//! That is what lets a tree grow append-only and lets two tree sizes be proven
//! consistent with each other (RFC 6962 section 2.1.2), which a consensus node
//! uses to show that one block's transaction log extends another's.
//!
//! Proofs are built with the recursive `PATH` and `SUBPROOF` definitions of
//! RFC 6962 sections 2.1.1 and 2.1.2 (written iteratively here) and verified
//! with the bit-based algorithms of RFC 9162 sections 2.1.3.2 and 2.1.4.2.
//! Verification takes untrusted input, so it never panics, never allocates,
//! and rejects malformed proofs with a [`MerkleError`].

use core::fmt::Debug;

/// A hash function the tree is built with.
///
/// The tree only needs "hash the concatenation of these byte strings", so
/// implementations can feed the parts to an incremental hasher without first
/// copying them into one buffer.
pub trait MerkleHasher {
    /// The output of the hash function, for example `[u8; 32]`.
    type Digest: Copy + Eq + AsRef<[u8]> + Debug;
    /// Hash of the concatenation of `parts`.
    fn hash_parts(parts: &[&[u8]]) -> Self::Digest;
}

/// Domain-separation prefix for leaf hashes (RFC 6962 section 2.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix for interior node hashes (RFC 6962 section 2.1).
const NODE_PREFIX: u8 = 0x01;

/// Capacity of the fixed stack used by the root computation.
///
/// The stack holds the roots of the perfect subtrees that make up the leaves
/// seen so far, one per set bit of the leaf count, plus one freshly pushed
/// leaf before merging. A slice has fewer than 2^64 elements, so 65 entries
/// always suffice.
const STACK_CAPACITY: usize = u64::BITS as usize + 1;

/// Errors from building or verifying Merkle proofs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The leaf index does not name a leaf of the tree. Every index is out of
    /// range for an empty tree, so this is also the error for `tree_size == 0`.
    #[error("leaf index {index} is out of range for a tree of {size} leaves")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The number of leaves in the tree.
        size: u64,
    },
    /// A consistency proof was requested or presented for an old tree that
    /// is larger than the new one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    BadSizes {
        /// The size of the older tree.
        old_size: u64,
        /// The size of the newer tree.
        new_size: u64,
    },
    /// The proof does not have the number of hashes its sizes and index
    /// determine.
    #[error("proof path has {found} hashes, but {expected} are required")]
    WrongPathLength {
        /// The number of hashes the proof must contain.
        expected: usize,
        /// The number of hashes the proof contains.
        found: usize,
    },
    /// The proof is well formed but does not lead to the expected root, so
    /// either the proof, the leaf, or a root is wrong.
    #[error("proof does not match the expected root hash")]
    RootMismatch,
}

/// A proof that a leaf is in a tree (the audit path of RFC 6962 section 2.1.1).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InclusionProof<D> {
    /// Zero-based index of the leaf in the tree.
    pub leaf_index: u64,
    /// Number of leaves in the tree the proof is for.
    pub tree_size: u64,
    /// Sibling hashes from the leaf level up to just below the root.
    pub path: Vec<D>,
}

/// A proof that a tree of `old_size` leaves is a prefix of a tree of
/// `new_size` leaves (RFC 6962 section 2.1.2).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsistencyProof<D> {
    /// Number of leaves in the older tree.
    pub old_size: u64,
    /// Number of leaves in the newer tree.
    pub new_size: u64,
    /// The hashes of `SUBPROOF(old_size, D[new_size], true)`.
    pub path: Vec<D>,
}

/// The root of a tree with no leaves, `H("")`.
pub fn empty_root<H: MerkleHasher>() -> H::Digest {
    H::hash_parts(&[])
}

/// The hash of a leaf, `H(0x00 || data)`.
pub fn leaf_hash<H: MerkleHasher>(data: &[u8]) -> H::Digest {
    H::hash_parts(&[&[LEAF_PREFIX], data])
}

/// The hash of an interior node, `H(0x01 || left || right)`.
pub fn node_hash<H: MerkleHasher>(left: &H::Digest, right: &H::Digest) -> H::Digest {
    H::hash_parts(&[&[NODE_PREFIX], left.as_ref(), right.as_ref()])
}

/// Root over leaf data items.
///
/// Leaves are hashed as they are consumed, so no buffer of leaf hashes is
/// allocated.
pub fn root<H: MerkleHasher, D: AsRef<[u8]>>(leaves: &[D]) -> H::Digest {
    root_from_iter::<H, _>(leaves.iter().map(|leaf| leaf_hash::<H>(leaf.as_ref())))
}

/// Root over already-computed leaf hashes (so callers can cache leaf hashes).
pub fn root_from_leaf_hashes<H: MerkleHasher>(leaf_hashes: &[H::Digest]) -> H::Digest {
    root_from_iter::<H, _>(leaf_hashes.iter().copied())
}

/// Computes the RFC 6962 root of a sequence of leaf hashes in one pass.
///
/// The recursive definition splits at the largest power of two, so the tree
/// over `n` leaves is a sequence of perfect subtrees, one for each set bit of
/// `n` from the most significant down, folded together from the right:
/// for `n = 2^a + 2^b + 2^c` with `a > b > c` the root is
/// `node(P_a, node(P_b, P_c))`. The loop keeps exactly those perfect subtrees
/// on a stack, merging the top two whenever they have equal size (as a binary
/// counter carries), and folds the stack from the right at the end. This is
/// equivalent to pairing adjacent nodes level by level and carrying an odd
/// last node up unchanged, but it needs neither recursion nor a heap buffer,
/// and it uses exactly `n - 1` node hashes.
fn root_from_iter<H: MerkleHasher, I: Iterator<Item = H::Digest>>(mut hashes: I) -> H::Digest {
    let Some(first) = hashes.next() else {
        return empty_root::<H>();
    };
    let mut stack = [first; STACK_CAPACITY];
    let mut depth = 1usize;
    let mut count: u64 = 1;
    for hash in hashes {
        stack[depth] = hash;
        depth += 1;
        count += 1;
        // Each trailing zero bit of the new count is a pair of equal-sized
        // perfect subtrees on top of the stack that now form a larger one.
        let mut carries = count.trailing_zeros();
        while carries > 0 {
            stack[depth - 2] = node_hash::<H>(&stack[depth - 2], &stack[depth - 1]);
            depth -= 1;
            carries -= 1;
        }
    }
    let mut acc = stack[depth - 1];
    for left in stack[..depth - 1].iter().rev() {
        acc = node_hash::<H>(left, &acc);
    }
    acc
}

/// The largest power of two strictly smaller than `n`, for `n >= 2`.
///
/// This is the split point `k` of RFC 6962 section 2.1.
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2, "only trees of two or more leaves are split");
    let bits = usize::BITS - (n - 1).leading_zeros();
    1usize << bits.saturating_sub(1)
}

/// Converts an in-memory length or index to the `u64` used on the wire.
///
/// Rust supports no platform with pointers wider than 64 bits, so this never
/// truncates.
fn to_u64(n: usize) -> u64 {
    n as u64
}

/// Builds the inclusion proof for the leaf at `leaf_index` in a tree over
/// `leaves`.
pub fn inclusion_proof<H: MerkleHasher, D: AsRef<[u8]>>(
    leaves: &[D],
    leaf_index: usize,
) -> Result<InclusionProof<H::Digest>, MerkleError> {
    // Reject a bad index before hashing what may be thousands of leaves.
    check_index(leaf_index, leaves.len())?;
    let hashes = hash_leaves::<H, D>(leaves);
    inclusion_proof_from_leaf_hashes::<H>(&hashes, leaf_index)
}

/// Builds the inclusion proof for the leaf at `leaf_index` from cached leaf
/// hashes.
///
/// This is `PATH(m, D[n])` of RFC 6962 section 2.1.1. The recursion descends
/// from the root towards the leaf and appends one sibling per level on the
/// way back up, so the iterative form collects siblings top-down and then
/// reverses them into the leaf-to-root order of the RFC.
pub fn inclusion_proof_from_leaf_hashes<H: MerkleHasher>(
    leaf_hashes: &[H::Digest],
    leaf_index: usize,
) -> Result<InclusionProof<H::Digest>, MerkleError> {
    check_index(leaf_index, leaf_hashes.len())?;
    let mut path = Vec::new();
    let (mut lo, mut hi) = (0usize, leaf_hashes.len());
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if leaf_index < mid {
            path.push(root_from_leaf_hashes::<H>(&leaf_hashes[mid..hi]));
            hi = mid;
        } else {
            path.push(root_from_leaf_hashes::<H>(&leaf_hashes[lo..mid]));
            lo = mid;
        }
    }
    path.reverse();
    Ok(InclusionProof {
        leaf_index: to_u64(leaf_index),
        tree_size: to_u64(leaf_hashes.len()),
        path,
    })
}

/// Builds the proof that the tree over the first `old_size` of `leaves` is a
/// prefix of the tree over all of `leaves`.
pub fn consistency_proof<H: MerkleHasher, D: AsRef<[u8]>>(
    leaves: &[D],
    old_size: usize,
) -> Result<ConsistencyProof<H::Digest>, MerkleError> {
    check_sizes(old_size, leaves.len())?;
    let hashes = hash_leaves::<H, D>(leaves);
    consistency_proof_from_leaf_hashes::<H>(&hashes, old_size)
}

/// Builds a consistency proof from cached leaf hashes.
///
/// This is `PROOF(m, D[n]) = SUBPROOF(m, D[n], true)` of RFC 6962 section
/// 2.1.2, where `m` is `old_size` and `n` is the number of leaf hashes. Like
/// the inclusion proof, the recursion appends on the way back up, so the
/// iterative form collects hashes top-down and reverses them. The RFC leaves
/// `m == 0` and `m == n` undefined; both get an empty proof here, because an
/// empty tree is a prefix of every tree and a tree is a prefix of itself, and
/// the verifier checks those cases against the roots directly.
pub fn consistency_proof_from_leaf_hashes<H: MerkleHasher>(
    leaf_hashes: &[H::Digest],
    old_size: usize,
) -> Result<ConsistencyProof<H::Digest>, MerkleError> {
    let new_size = leaf_hashes.len();
    check_sizes(old_size, new_size)?;
    let mut path = Vec::new();
    if old_size != 0 && old_size != new_size {
        // `m` is the old size relative to the subtree D[lo:hi]. It stays in
        // 1..=hi-lo, so the loop ends at the latest when the subtree is a
        // single leaf.
        let (mut lo, mut hi, mut m) = (0usize, new_size, old_size);
        // `whole_old_tree` is the RFC's flag `b`: it is true while the
        // subtree being descended is the old tree itself, whose root the
        // verifier already knows and which therefore need not be sent.
        let mut whole_old_tree = true;
        loop {
            if m == hi - lo {
                if !whole_old_tree {
                    path.push(root_from_leaf_hashes::<H>(&leaf_hashes[lo..hi]));
                }
                break;
            }
            let k = split_point(hi - lo);
            if m <= k {
                path.push(root_from_leaf_hashes::<H>(&leaf_hashes[lo + k..hi]));
                hi = lo + k;
            } else {
                path.push(root_from_leaf_hashes::<H>(&leaf_hashes[lo..lo + k]));
                lo += k;
                m -= k;
                whole_old_tree = false;
            }
        }
        path.reverse();
    }
    Ok(ConsistencyProof {
        old_size: to_u64(old_size),
        new_size: to_u64(new_size),
        path,
    })
}

/// Verify that `leaf_data` is at proof.leaf_index in a tree of proof.tree_size
/// leaves with root `root`.
pub fn verify_inclusion<H: MerkleHasher>(
    leaf_data: &[u8],
    proof: &InclusionProof<H::Digest>,
    root: &H::Digest,
) -> Result<(), MerkleError> {
    verify_inclusion_of_leaf_hash::<H>(&leaf_hash::<H>(leaf_data), proof, root)
}

/// Same as [`verify_inclusion`] but from a leaf hash.
///
/// This is the algorithm of RFC 9162 section 2.1.3.2. `fn` walks the leaf's
/// position and `sn` the last leaf's position up the tree: a set low bit of
/// `fn`, or `fn == sn` (the node is the last at its level and has no right
/// sibling), means the next path element is a left sibling. The path length
/// is checked up front so a malformed proof is reported precisely and the
/// loop never needs more than the hashes the proof carries.
pub fn verify_inclusion_of_leaf_hash<H: MerkleHasher>(
    leaf_hash: &H::Digest,
    proof: &InclusionProof<H::Digest>,
    root: &H::Digest,
) -> Result<(), MerkleError> {
    let (index, size) = (proof.leaf_index, proof.tree_size);
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_path_len(index, size);
    if proof.path.len() != expected {
        return Err(MerkleError::WrongPathLength {
            expected,
            found: proof.path.len(),
        });
    }
    let mut f = index;
    let mut s = size - 1;
    let mut r = *leaf_hash;
    for p in &proof.path {
        if s == 0 {
            // Unreachable after the length check; kept so that a mistake in
            // the length formula could only reject proofs, never accept them.
            return Err(MerkleError::WrongPathLength {
                expected,
                found: proof.path.len(),
            });
        }
        if f & 1 == 1 || f == s {
            r = node_hash::<H>(p, &r);
            // Levels where the node is the last one and a left child have no
            // sibling in the proof; skip them.
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash::<H>(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 || r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Verify that the tree with root `old_root` and `proof.old_size` leaves is a
/// prefix of the tree with root `new_root` and `proof.new_size` leaves.
///
/// This is the algorithm of RFC 9162 section 2.1.4.2, which recomputes both
/// roots from the one path: `fr` accumulates the old root and `sr` the new
/// one. Where the RFC says to prepend `old_root` to the path when the old
/// size is a power of two, this uses it as the starting hash instead, so
/// nothing is copied. Two cases the RFC excludes are defined here: a proof
/// between equal sizes must be empty and the roots equal, and a proof from
/// size zero must be empty and `old_root` must be the empty-tree root (any
/// tree extends the empty tree, but a wrong claimed root is still an error).
pub fn verify_consistency<H: MerkleHasher>(
    proof: &ConsistencyProof<H::Digest>,
    old_root: &H::Digest,
    new_root: &H::Digest,
) -> Result<(), MerkleError> {
    let (old_size, new_size) = (proof.old_size, proof.new_size);
    if old_size > new_size {
        return Err(MerkleError::BadSizes { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.path.is_empty() {
            return Err(MerkleError::WrongPathLength {
                expected: 0,
                found: proof.path.len(),
            });
        }
        if old_size == 0 && *old_root != empty_root::<H>() {
            return Err(MerkleError::RootMismatch);
        }
        if old_size == new_size && old_root != new_root {
            return Err(MerkleError::RootMismatch);
        }
        return Ok(());
    }

    let expected = consistency_path_len(old_size, new_size);
    if proof.path.len() != expected {
        return Err(MerkleError::WrongPathLength {
            expected,
            found: proof.path.len(),
        });
    }
    // When the old tree is a perfect subtree of the new one its root is a
    // node of the new tree, so the proof starts from it instead of carrying
    // it; otherwise the first path element is the old tree's deepest
    // perfect-subtree node that the walk starts from.
    let (seed, rest) = if old_size.is_power_of_two() {
        (*old_root, proof.path.as_slice())
    } else {
        match proof.path.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(MerkleError::WrongPathLength { expected, found: 0 }),
        }
    };
    let mut f = old_size - 1;
    let mut s = new_size - 1;
    // Levels where the old tree's last node is a right child are inside the
    // old tree's own perfect subtree, which `seed` already covers.
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut fr = seed;
    let mut sr = seed;
    for c in rest {
        if s == 0 {
            // Unreachable after the length check, as in inclusion proofs.
            return Err(MerkleError::WrongPathLength {
                expected,
                found: proof.path.len(),
            });
        }
        if f & 1 == 1 || f == s {
            fr = node_hash::<H>(c, &fr);
            sr = node_hash::<H>(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash::<H>(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 || fr != *old_root || sr != *new_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// The number of hashes in the inclusion proof for `index` in a tree of
/// `size` leaves, for `index < size`.
///
/// The path splits into an "inner" part, the levels below the point where
/// the paths to the leaf and to the last leaf diverge (each has a sibling),
/// and a "border" part above it, where the leaf's ancestor lies on the right
/// edge of the tree and only has a sibling when it is a right child.
fn inclusion_path_len(index: u64, size: u64) -> usize {
    let inner = u64::BITS - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// The number of hashes in the consistency proof between sizes `old_size`
/// and `new_size`, for `0 < old_size < new_size`.
///
/// The proof is the inclusion proof of the old tree's last leaf in the new
/// tree, started at the lowest level where that leaf's ancestor is a
/// perfect subtree of the old tree (`old_size`'s trailing zero bits), plus
/// that ancestor itself unless it is the whole old tree.
fn consistency_path_len(old_size: u64, new_size: u64) -> usize {
    let shift = old_size.trailing_zeros();
    let last = old_size - 1;
    let inner = u64::BITS - (last ^ (new_size - 1)).leading_zeros();
    let border = last.checked_shr(inner).unwrap_or(0).count_ones();
    let seed = u32::from(!old_size.is_power_of_two());
    // `inner > shift` whenever old_size < new_size; saturate rather than
    // trust that in code that sees untrusted sizes.
    (seed + inner.saturating_sub(shift) + border) as usize
}

fn check_index(leaf_index: usize, size: usize) -> Result<(), MerkleError> {
    if leaf_index >= size {
        return Err(MerkleError::IndexOutOfRange {
            index: to_u64(leaf_index),
            size: to_u64(size),
        });
    }
    Ok(())
}

fn check_sizes(old_size: usize, new_size: usize) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::BadSizes {
            old_size: to_u64(old_size),
            new_size: to_u64(new_size),
        });
    }
    Ok(())
}

fn hash_leaves<H: MerkleHasher, D: AsRef<[u8]>>(leaves: &[D]) -> Vec<H::Digest> {
    leaves.iter().map(|leaf| leaf_hash::<H>(leaf.as_ref())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    struct Sha256Hasher;

    impl MerkleHasher for Sha256Hasher {
        type Digest = [u8; 32];
        fn hash_parts(parts: &[&[u8]]) -> [u8; 32] {
            let mut h = Sha256::new();
            for part in parts {
                h.update(part);
            }
            h.finalize().into()
        }
    }

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        for n in 2usize..=1100 {
            let k = split_point(n);
            assert!(k.is_power_of_two() && k < n && 2 * k >= n, "n={n} k={k}");
        }
        assert_eq!(split_point(usize::MAX), 1usize << (usize::BITS - 1));
    }

    #[test]
    fn path_length_formulas_match_built_proofs() {
        let leaves: Vec<[u8; 32]> = (0u32..40)
            .map(|i| leaf_hash::<Sha256Hasher>(&i.to_le_bytes()))
            .collect();
        for n in 1..=leaves.len() {
            let hashes = &leaves[..n];
            for i in 0..n {
                let proof = inclusion_proof_from_leaf_hashes::<Sha256Hasher>(hashes, i).expect("index is in range");
                assert_eq!(proof.path.len(), inclusion_path_len(i as u64, n as u64));
            }
            for m in 1..n {
                let proof = consistency_proof_from_leaf_hashes::<Sha256Hasher>(hashes, m).expect("sizes are ordered");
                assert_eq!(proof.path.len(), consistency_path_len(m as u64, n as u64));
            }
        }
    }

    #[test]
    fn path_length_formulas_do_not_overflow() {
        assert_eq!(inclusion_path_len(0, u64::MAX), 64);
        assert_eq!(inclusion_path_len(u64::MAX - 1, u64::MAX), 63);
        assert!(consistency_path_len(1, u64::MAX) <= 128);
        assert!(consistency_path_len(u64::MAX - 1, u64::MAX) <= 128);
        assert!(consistency_path_len(1 << 63, u64::MAX) <= 128);
    }
}
