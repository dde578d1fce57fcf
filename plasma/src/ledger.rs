//! The L2 ledger (docs/PLASMA.md section 1): outputs, positions, plasma transactions, and the set
//! of unspent outputs with the rules a plasma transaction must meet.

use std::collections::BTreeMap;

use kasane_model::codec::{self, Versioned};
use kasane_model::crypto::{verify_one, KeyCache};
use kasane_model::ids::AssetDefinitionId;
use kasane_model::{Hash, KeyPair, PublicKey, Signature};
use serde::{Deserialize, Serialize};

/// Most inputs, and most outputs, of one plasma transaction.
pub const INPUTS_MAX: usize = 4;
pub const OUTPUTS_MAX: usize = 4;

/// Domain of the signing hash, so a plasma signature means nothing anywhere else.
const SIGNING_DOMAIN: &[u8] = b"kasane:plasma:tx:v1";

/// An amount of an L1 asset, owned by a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub owner: PublicKey,
    pub asset: AssetDefinitionId,
    pub amount: u128,
}

/// Where an output was created: in an L2 block, or by an L1 deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Position {
    Block {
        block: u64,
        tx_index: u32,
        output_index: u8,
    },
    Deposit {
        number: u64,
    },
}

/// `BLOCK:TX:OUTPUT` or `deposit:N`, as the wallet takes them.
impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Block {
                block,
                tx_index,
                output_index,
            } => write!(f, "{block}:{tx_index}:{output_index}"),
            Position::Deposit { number } => write!(f, "deposit:{number}"),
        }
    }
}

impl Position {
    /// The exit priority key (lower exits first). `roots_before` is, for a deposit, how many
    /// roots L1 held when the deposit committed: the deposit comes after every output of those
    /// roots and before every output of later ones. Ignored for a block position.
    pub fn priority_key(&self, roots_before: u64) -> u128 {
        match *self {
            Position::Block {
                block,
                tx_index,
                output_index,
            } => (u128::from(block) << 48) | (u128::from(tx_index) << 8) | u128::from(output_index),
            // Bits 40-47 of a block key are always zero, so this lands strictly between the
            // last output of block `roots_before` and the first of the block after it.
            Position::Deposit { number } => ((u128::from(roots_before) + 1) << 48) - (1u128 << 47) + u128::from(number),
        }
    }
}

/// A plasma transaction: inputs spent, outputs created, and one signature per input by the
/// owner of the output it spends, over [`PlasmaTx::signing_hash`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlasmaTx {
    pub inputs: Vec<Position>,
    pub outputs: Vec<Output>,
    pub signatures: Vec<InputSignature>,
}

/// The signature of one input, with the key that made it. The key must be the spent output's
/// owner; carrying it lets a node check every signature of a transaction in batches before it
/// looks at any state (node/src/verifier.rs), as it does the transaction's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSignature {
    pub key: PublicKey,
    pub signature: Signature,
}

impl Versioned for PlasmaTx {
    const NAME: &'static str = "plasma transaction";
    const VERSION: u8 = 1;
    const ENCODED_BYTES_MAX: usize = 4096;
}

impl PlasmaTx {
    /// What input owners sign: the inputs and outputs, not the signatures.
    pub fn signing_hash(inputs: &[Position], outputs: &[Output]) -> Hash {
        let body = codec::encode_body(&(inputs, outputs));
        Hash::of_parts(&[SIGNING_DOMAIN, &body])
    }

    /// A transaction whose input `i` is signed by `signers[i]`.
    pub fn sign(inputs: Vec<Position>, outputs: Vec<Output>, signers: &[&KeyPair]) -> PlasmaTx {
        let hash = PlasmaTx::signing_hash(&inputs, &outputs);
        let signatures = signers
            .iter()
            .map(|key| InputSignature {
                key: key.public_key(),
                signature: key.sign(hash.as_bytes()),
            })
            .collect();
        PlasmaTx {
            inputs,
            outputs,
            signatures,
        }
    }

    /// What each input's signature must verify: (key, signing hash, signature).
    pub fn signed_messages(&self) -> (Hash, &[InputSignature]) {
        (PlasmaTx::signing_hash(&self.inputs, &self.outputs), &self.signatures)
    }

    /// The leaf of this transaction in its block's tree: its whole encoding, signatures
    /// included (docs/PLASMA.md section 2).
    pub fn leaf(&self) -> Vec<u8> {
        codec::encode(self)
    }
}

/// Why a plasma transaction is not valid against the unspent set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlasmaError {
    #[error("a plasma transaction needs 1 to {INPUTS_MAX} inputs and 1 to {OUTPUTS_MAX} outputs; this one has {inputs} and {outputs}")]
    Shape { inputs: usize, outputs: usize },
    #[error("{inputs} inputs but {signatures} signatures")]
    SignatureCount { inputs: usize, signatures: usize },
    #[error("input {index} is listed twice")]
    RepeatedInput { index: usize },
    #[error("output {index} has amount zero")]
    ZeroAmount { index: usize },
    #[error("input {index} ({position}) is not an unspent output (never created, or already spent)")]
    NotUnspent { index: usize, position: Position },
    #[error("the signature of input {index} is not its owner's (another key, or it does not verify)")]
    BadSignature { index: usize },
    #[error("asset {asset}: inputs carry {inputs}, outputs {outputs}")]
    Unbalanced { asset: String, inputs: u128, outputs: u128 },
    #[error("deposit {number} is noted out of order: the next is {expected}")]
    DepositOrder { number: u64, expected: u64 },
    #[error("position {position} is taken")]
    PositionTaken { position: Position },
}

/// Checks the shape of `tx` (counts, repeated inputs, zero amounts).
pub fn check_shape(tx: &PlasmaTx) -> Result<(), PlasmaError> {
    let (inputs, outputs) = (tx.inputs.len(), tx.outputs.len());
    if !(1..=INPUTS_MAX).contains(&inputs) || !(1..=OUTPUTS_MAX).contains(&outputs) {
        return Err(PlasmaError::Shape { inputs, outputs });
    }
    if tx.signatures.len() != inputs {
        return Err(PlasmaError::SignatureCount {
            inputs,
            signatures: tx.signatures.len(),
        });
    }
    if let Some(index) = tx.outputs.iter().position(|output| output.amount == 0) {
        return Err(PlasmaError::ZeroAmount { index });
    }
    if let Some(index) = (1..inputs).find(|&index| tx.inputs[..index].contains(&tx.inputs[index])) {
        return Err(PlasmaError::RepeatedInput { index });
    }
    Ok(())
}

/// Checks `tx` against an unspent set given by `unspent`: its shape, that every input is
/// unspent, that the amounts balance per asset and, when `keys` is given, that each input is
/// signed by its owner. Whoever passes `None` must have checked the signatures already.
pub fn check_transaction(
    tx: &PlasmaTx,
    unspent: impl Fn(&Position) -> Option<Output>,
    keys: Option<&mut KeyCache>,
) -> Result<(), PlasmaError> {
    check_shape(tx)?;
    let mut spent = Vec::with_capacity(tx.inputs.len());
    for (index, position) in tx.inputs.iter().enumerate() {
        spent.push(unspent(position).ok_or(PlasmaError::NotUnspent {
            index,
            position: *position,
        })?);
    }
    if let Some(keys) = keys {
        let hash = PlasmaTx::signing_hash(&tx.inputs, &tx.outputs);
        for (index, (output, signed)) in spent.iter().zip(&tx.signatures).enumerate() {
            if signed.key != output.owner {
                return Err(PlasmaError::BadSignature { index });
            }
            verify_one(keys, &output.owner, hash.as_bytes(), &signed.signature)
                .map_err(|_| PlasmaError::BadSignature { index })?;
        }
    }
    let mut balance: BTreeMap<&AssetDefinitionId, (u128, u128)> = BTreeMap::new();
    for output in &spent {
        let entry = balance.entry(&output.asset).or_default();
        entry.0 = entry.0.saturating_add(output.amount);
    }
    for output in &tx.outputs {
        let entry = balance.entry(&output.asset).or_default();
        entry.1 = entry.1.saturating_add(output.amount);
    }
    let unbalanced = balance.into_iter().find(|(_, (inputs, outputs))| inputs != outputs);
    match unbalanced {
        Some((asset, (inputs, outputs))) => Err(PlasmaError::Unbalanced {
            asset: asset.to_string(),
            inputs,
            outputs,
        }),
        None => Ok(()),
    }
}

/// The unspent outputs of the L2 chain, and how many L1 deposits were noted.
#[derive(Debug, Default, Clone)]
pub struct UtxoSet {
    unspent: BTreeMap<Position, Output>,
    deposits_noted: u64,
    keys: KeyCache,
}

impl UtxoSet {
    pub fn get(&self, position: &Position) -> Option<&Output> {
        self.unspent.get(position)
    }

    pub fn len(&self) -> usize {
        self.unspent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.unspent.is_empty()
    }

    /// Makes the output of L1 deposit `number` spendable; deposits are noted in number order,
    /// each once (docs/PLASMA.md section 4).
    pub fn note_deposit(&mut self, number: u64, output: Output) -> Result<(), PlasmaError> {
        if number != self.deposits_noted {
            return Err(PlasmaError::DepositOrder {
                number,
                expected: self.deposits_noted,
            });
        }
        if output.amount == 0 {
            return Err(PlasmaError::ZeroAmount { index: 0 });
        }
        self.unspent.insert(Position::Deposit { number }, output);
        self.deposits_noted += 1;
        Ok(())
    }

    /// Checks `tx` against the unspent set without changing it.
    pub fn check(&mut self, tx: &PlasmaTx) -> Result<(), PlasmaError> {
        let unspent = &self.unspent;
        check_transaction(tx, |position| unspent.get(position).cloned(), Some(&mut self.keys))
    }

    /// Checks `tx` and applies it as transaction `tx_index` of L2 block `block`: its inputs
    /// are spent and its outputs created at their positions. On error nothing changes.
    pub fn apply(&mut self, tx: &PlasmaTx, block: u64, tx_index: u32) -> Result<(), PlasmaError> {
        self.check(tx)?;
        let positions: Vec<Position> = (0..tx.outputs.len())
            .map(|output_index| Position::Block {
                block,
                tx_index,
                output_index: output_index as u8,
            })
            .collect();
        if let Some(position) = positions.iter().find(|position| self.unspent.contains_key(position)) {
            return Err(PlasmaError::PositionTaken { position: *position });
        }
        for position in &tx.inputs {
            self.unspent.remove(position);
        }
        for (position, output) in positions.into_iter().zip(&tx.outputs) {
            self.unspent.insert(position, output.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(index: u64) -> KeyPair {
        KeyPair::derive(b"plasma-ledger-tests", index)
    }

    fn output(owner: &KeyPair, asset: &str, amount: u128) -> Output {
        Output {
            owner: owner.public_key(),
            asset: asset.parse().expect("asset id"),
            amount,
        }
    }

    fn funded() -> (UtxoSet, KeyPair, KeyPair) {
        let (alice, bob) = (key(0), key(1));
        let mut utxos = UtxoSet::default();
        utxos
            .note_deposit(0, output(&alice, "coin#l1", 10))
            .expect("noted in order");
        utxos
            .note_deposit(1, output(&alice, "gem#l1", 3))
            .expect("noted in order");
        (utxos, alice, bob)
    }

    #[test]
    fn spends_once_balances_and_creates_outputs_at_their_positions() {
        let (mut utxos, alice, bob) = funded();
        let pay = PlasmaTx::sign(
            vec![Position::Deposit { number: 0 }, Position::Deposit { number: 1 }],
            vec![
                output(&bob, "coin#l1", 4),
                output(&alice, "coin#l1", 6),
                output(&bob, "gem#l1", 3),
            ],
            &[&alice, &alice],
        );
        utxos.apply(&pay, 7, 2).expect("a valid spend");
        let at = |output_index| Position::Block {
            block: 7,
            tx_index: 2,
            output_index,
        };
        assert_eq!(utxos.get(&at(0)), Some(&output(&bob, "coin#l1", 4)));
        assert_eq!(utxos.get(&at(2)), Some(&output(&bob, "gem#l1", 3)));
        assert!(utxos.get(&Position::Deposit { number: 0 }).is_none());
        assert!(matches!(
            utxos.apply(&pay, 8, 0),
            Err(PlasmaError::NotUnspent { index: 0, .. })
        ));

        // Bob spends his output; Alice cannot, and the set is unchanged by her try.
        let by_alice = PlasmaTx::sign(vec![at(0)], vec![output(&alice, "coin#l1", 4)], &[&alice]);
        assert_eq!(
            utxos.apply(&by_alice, 8, 0),
            Err(PlasmaError::BadSignature { index: 0 })
        );
        // Alice's signature labelled with Bob's key, and Bob's key over Alice's signature: the
        // key must be the owner's and the signature must verify under it.
        let mut relabelled = by_alice.clone();
        relabelled.signatures[0].key = bob.public_key();
        assert_eq!(utxos.check(&relabelled), Err(PlasmaError::BadSignature { index: 0 }));
        let by_bob = PlasmaTx::sign(vec![at(0)], vec![output(&alice, "coin#l1", 4)], &[&bob]);
        let mut borrowed = by_bob.clone();
        borrowed.signatures[0].signature = by_alice.signatures[0].signature;
        assert_eq!(utxos.check(&borrowed), Err(PlasmaError::BadSignature { index: 0 }));
        utxos.apply(&by_bob, 8, 0).expect("a valid spend");
        assert_eq!(utxos.len(), 3);
    }

    #[test]
    fn refuses_bad_shapes_amounts_and_repeated_inputs() {
        let (mut utxos, alice, bob) = funded();
        let deposit = Position::Deposit { number: 0 };
        let more = PlasmaTx::sign(vec![deposit], vec![output(&bob, "coin#l1", 11)], &[&alice]);
        assert!(matches!(
            utxos.check(&more),
            Err(PlasmaError::Unbalanced {
                inputs: 10,
                outputs: 11,
                ..
            })
        ));
        let other_asset = PlasmaTx::sign(vec![deposit], vec![output(&bob, "gem#l1", 10)], &[&alice]);
        assert!(matches!(utxos.check(&other_asset), Err(PlasmaError::Unbalanced { .. })));
        let twice = PlasmaTx::sign(
            vec![deposit, deposit],
            vec![output(&bob, "coin#l1", 20)],
            &[&alice, &alice],
        );
        assert_eq!(utxos.check(&twice), Err(PlasmaError::RepeatedInput { index: 1 }));
        let zero = PlasmaTx::sign(
            vec![deposit],
            vec![output(&bob, "coin#l1", 10), output(&bob, "coin#l1", 0)],
            &[&alice],
        );
        assert_eq!(utxos.check(&zero), Err(PlasmaError::ZeroAmount { index: 1 }));
        let unsigned = PlasmaTx {
            signatures: Vec::new(),
            ..PlasmaTx::sign(vec![deposit], vec![output(&bob, "coin#l1", 10)], &[&alice])
        };
        assert!(matches!(
            utxos.check(&unsigned),
            Err(PlasmaError::SignatureCount { .. })
        ));
        let none = PlasmaTx::sign(Vec::new(), vec![output(&bob, "coin#l1", 1)], &[]);
        assert!(matches!(utxos.check(&none), Err(PlasmaError::Shape { inputs: 0, .. })));
        // A signature over other outputs does not carry over.
        let mut swapped = PlasmaTx::sign(vec![deposit], vec![output(&bob, "coin#l1", 10)], &[&alice]);
        swapped.outputs[0].owner = key(9).public_key();
        assert_eq!(utxos.check(&swapped), Err(PlasmaError::BadSignature { index: 0 }));
    }

    #[test]
    fn deposits_are_noted_in_order_once() {
        let (mut utxos, alice, _) = funded();
        assert_eq!(
            utxos.note_deposit(5, output(&alice, "coin#l1", 1)),
            Err(PlasmaError::DepositOrder { number: 5, expected: 2 })
        );
        assert_eq!(
            utxos.note_deposit(1, output(&alice, "coin#l1", 1)),
            Err(PlasmaError::DepositOrder { number: 1, expected: 2 })
        );
        utxos
            .note_deposit(2, output(&alice, "coin#l1", 1))
            .expect("noted in order");
    }

    #[test]
    fn older_outputs_exit_first_and_deposits_sit_between_their_roots() {
        let block = |block, tx_index, output_index| Position::Block {
            block,
            tx_index,
            output_index,
        };
        let keys = [
            block(3, 0, 0).priority_key(0),
            block(3, 0, 1).priority_key(0),
            block(3, 1, 0).priority_key(0),
            block(3, u32::MAX, u8::MAX).priority_key(0),
            // Deposits made when L1 held 3 roots: after block 3, before block 4, in number order.
            Position::Deposit { number: 8 }.priority_key(3),
            Position::Deposit { number: 9 }.priority_key(3),
            block(4, 0, 0).priority_key(0),
        ];
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "{keys:?}");
    }
}
