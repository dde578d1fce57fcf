//! Roots and inclusion proofs of L2 blocks (docs/PLASMA.md section 2): the RFC 6962 tree over a
//! block's plasma transactions in order, hashed with blake2b-256 (`Blake2bMerkle`), each leaf the
//! transaction's whole encoding.

use kasane_model::hash::Blake2bMerkle;
use kasane_model::merkle::{self, InclusionProof, MerkleError};
use kasane_model::Hash;

use crate::ledger::PlasmaTx;

/// The root of a tree built one leaf at a time, in O(log n) space: the roots of its perfect
/// subtrees ("peaks"), largest first. Its root equals [`root`] over the same leaves (RFC 6962's
/// split at the largest power of two below n is a right fold over the peaks). The L2 ledger
/// keeps one per block in its state, so a block's root is part of the L2 chain's agreed state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootAccumulator {
    pub count: u64,
    pub peaks: Vec<Hash>,
}

impl RootAccumulator {
    /// Appends a leaf given by its leaf hash (`merkle::leaf_hash`).
    pub fn push(&mut self, leaf_hash: Hash) {
        let mut hash = leaf_hash;
        let mut count = self.count;
        while count & 1 == 1 {
            let Some(left) = self.peaks.pop() else { break };
            hash = merkle::node_hash::<Blake2bMerkle>(&left, &hash);
            count >>= 1;
        }
        self.peaks.push(hash);
        self.count += 1;
    }

    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return merkle::empty_root::<Blake2bMerkle>();
        };
        peaks.fold(*last, |right, left| merkle::node_hash::<Blake2bMerkle>(left, &right))
    }
}

/// The leaf hash of a plasma transaction.
pub fn leaf_hash(transaction: &PlasmaTx) -> Hash {
    merkle::leaf_hash::<Blake2bMerkle>(&transaction.leaf())
}

/// The root an L2 block commits to L1.
pub fn root(transactions: &[PlasmaTx]) -> Hash {
    let leaves: Vec<Vec<u8>> = transactions.iter().map(PlasmaTx::leaf).collect();
    merkle::root::<Blake2bMerkle, _>(&leaves)
}

/// The proof that leaf `index` is in the tree of `leaf_hashes`.
pub fn prove_leaf_hashes(leaf_hashes: &[Hash], index: usize) -> Result<InclusionProof<Hash>, MerkleError> {
    merkle::inclusion_proof_from_leaf_hashes::<Blake2bMerkle>(leaf_hashes, index)
}

/// The proof that transaction `index` is in the block of `transactions`.
pub fn prove(transactions: &[PlasmaTx], index: usize) -> Result<InclusionProof<Hash>, MerkleError> {
    let leaves: Vec<Vec<u8>> = transactions.iter().map(PlasmaTx::leaf).collect();
    merkle::inclusion_proof::<Blake2bMerkle, _>(&leaves, index)
}

/// Checks that `transaction` is at the proof's leaf index under `root`.
pub fn verify(transaction: &PlasmaTx, proof: &InclusionProof<Hash>, root: &Hash) -> Result<(), MerkleError> {
    merkle::verify_inclusion::<Blake2bMerkle>(&transaction.leaf(), proof, root)
}

#[cfg(test)]
mod tests {
    use kasane_model::KeyPair;

    #[test]
    fn the_accumulator_gives_the_rfc6962_root_at_every_size() {
        let all = block(40);
        let mut accumulator = RootAccumulator::default();
        assert_eq!(accumulator.root(), root(&[]));
        for (index, tx) in all.iter().enumerate() {
            accumulator.push(leaf_hash(tx));
            assert_eq!(accumulator.root(), root(&all[..=index]), "{} leaves", index + 1);
            assert!(accumulator.peaks.len() <= 64);
        }
        let hashes: Vec<Hash> = all.iter().map(leaf_hash).collect();
        assert_eq!(
            prove_leaf_hashes(&hashes, 7).expect("proof"),
            prove(&all, 7).expect("proof")
        );
    }

    use super::*;
    use crate::ledger::{Output, Position};

    fn block(count: u64) -> Vec<PlasmaTx> {
        let key = KeyPair::derive(b"plasma-proof-tests", 0);
        (0..count)
            .map(|number| {
                PlasmaTx::sign(
                    vec![Position::Deposit { number }],
                    vec![Output {
                        owner: key.public_key(),
                        asset: "coin#l1".parse().expect("asset id"),
                        amount: u128::from(number) + 1,
                    }],
                    &[&key],
                )
            })
            .collect()
    }

    #[test]
    fn every_transaction_proves_and_forgeries_do_not() {
        for size in [1, 2, 3, 7, 8] {
            let transactions = block(size);
            let root = root(&transactions);
            for (index, transaction) in transactions.iter().enumerate() {
                let proof = prove(&transactions, index).expect("an index in range");
                assert_eq!(verify(transaction, &proof, &root), Ok(()), "size {size} index {index}");
                // Another transaction, another position, another root, a changed amount: refused.
                let other = &transactions[(index + 1) % transactions.len()];
                if other != transaction {
                    assert!(verify(other, &proof, &root).is_err());
                }
                if size > 1 {
                    let mut moved = proof.clone();
                    moved.leaf_index = (proof.leaf_index + 1) % proof.tree_size;
                    assert!(verify(transaction, &moved, &root).is_err());
                }
                assert!(verify(transaction, &proof, &Hash::of(b"another root")).is_err());
                let mut changed = transaction.clone();
                changed.outputs[0].amount += 1;
                assert!(verify(&changed, &proof, &root).is_err());
            }
            assert!(prove(&transactions, transactions.len()).is_err());
        }
    }
}
