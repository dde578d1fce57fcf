//! Determinism and conservation: independent states applying the same blocks agree on the
//! commitment, and random transfers (some invalid), mints and burns keep balances equal to a
//! simple model and their sum equal to the asset's total supply.

mod common;

use common::*;
use kasane_model::ids::{DomainId, Name};
use kasane_model::instruction::{Instruction, MetadataTarget, Mintable, Permission};
use kasane_model::{Block, KeyPair, SignedTransaction};
use kasane_wsv::genesis::GenesisBuilder;
use kasane_wsv::{Page, PluginRegistry, TransactionOutcome, Wsv};
use proptest::prelude::*;

const HOLDERS: [&str; 4] = [
    "alice@wonderland",
    "bob@wonderland",
    "carol@wonderland",
    "dave@wonderland",
];
/// Index of a destination that does not exist.
const GHOST: usize = HOLDERS.len();
const GHOST_NAME: &str = "ghost@wonderland";
const INITIAL: [u128; 4] = [1_000, 500, 1, 0];

fn holder_key(index: usize) -> KeyPair {
    key(10 + index as u64)
}

fn holders_builder() -> GenesisBuilder {
    let mut builder = GenesisBuilder::new(CHAIN.parse().expect("valid chain"), genesis_key(), T0);
    builder.peer(key(100).public_key());
    for (index, holder) in HOLDERS.iter().enumerate() {
        builder.funded_account(account(holder), holder_key(index).public_key(), INITIAL[index]);
    }
    builder
}

fn holders_wsv() -> Wsv {
    build(&holders_builder(), PluginRegistry::builtin())
}

/// Applies `block` (built on another state) and checks it lands on the same head.
fn replay_on(wsv: &mut Wsv, block: &Block) {
    let hashes = hashes_of(&block.transactions);
    wsv.apply_block(block, &hashes)
        .expect("a block built on an equal state applies");
    assert_eq!(wsv.head_hash(), block.hash());
    assert_eq!(wsv.state_commitment(), block.header.state_commitment);
}

/// Builds a block on `wsv`, applies it, and returns it.
fn build_and_apply(wsv: &mut Wsv, transactions: Vec<SignedTransaction>) -> (Block, Vec<TransactionOutcome>) {
    let time = next_time(wsv);
    let (block, hashes) = make_block(wsv, time, transactions).expect("executes");
    let outcomes = wsv.apply_block(&block, &hashes).expect("applies").outcomes;
    (block, outcomes)
}

#[test]
fn two_states_from_the_same_genesis_agree() {
    let (genesis_a, mut a) = standard_builder().build(PluginRegistry::builtin()).expect("genesis");
    let (genesis_b, mut b) = standard_builder().build(PluginRegistry::builtin()).expect("genesis");
    assert_eq!(genesis_a, genesis_b);
    assert_eq!(a.state_commitment(), b.state_commitment());
    let domain = DomainId::new("atlantis").expect("valid");
    let name = |text: &str| Name::new(text).expect("valid");
    // Blocks that write every table: domains, accounts, definitions, assets, peers, metadata.
    let rounds: Vec<Vec<SignedTransaction>> = vec![
        vec![
            tx(
                &a,
                ALICE,
                &alice_key(),
                vec![transfer(coin(ALICE), BOB, 10), transfer(coin(ALICE), CAROL, 20)],
                0,
            ),
            tx(&a, CAROL, &carol_key(), vec![transfer(coin(CAROL), ALICE, 5)], 0),
            tx(
                &a,
                "genesis@genesis",
                &genesis_key(),
                vec![Instruction::RegisterPeer {
                    peer: key(101).public_key(),
                }],
                0,
            ),
        ],
        vec![
            tx(
                &a,
                ALICE,
                &alice_key(),
                vec![
                    Instruction::RegisterDomain {
                        domain: domain.clone(),
                        validator: name("default"),
                    },
                    Instruction::RegisterAccount {
                        account: account("eve@atlantis"),
                        signatories: vec![key(50).public_key()],
                    },
                    Instruction::RegisterAssetDefinition {
                        definition: definition("pearl#atlantis"),
                        scale: 0,
                        mintable: Mintable::Once,
                    },
                    Instruction::Mint {
                        asset: asset("pearl#atlantis", "eve@atlantis"),
                        amount: 77,
                    },
                    Instruction::SetKeyValue {
                        target: MetadataTarget::Domain(domain.clone()),
                        key: name("k"),
                        value: "v".into(),
                    },
                    Instruction::GrantPermission {
                        account: account(BOB),
                        permission: Permission::TransferAsset(coin(ALICE)),
                    },
                ],
                0,
            ),
            tx(
                &a,
                BOB,
                &bob_key(),
                vec![transfer(coin(BOB), "nobody@wonderland", 1)],
                0,
            ),
        ],
        vec![tx(&a, BOB, &bob_key(), vec![transfer(coin(ALICE), BOB, 100)], 1)],
        vec![],
    ];
    for transactions in rounds {
        let (block, _) = build_and_apply(&mut a, transactions);
        replay_on(&mut b, &block);
        assert_eq!(a.state_commitment(), b.state_commitment());
        assert_eq!(
            a.balances(&account(ALICE), Page::default()),
            b.balances(&account(ALICE), Page::default())
        );
    }
    assert_eq!(a.balance(&asset("pearl#atlantis", "eve@atlantis")), 77);
    // Round 3: bob moved 100 of alice's coins under the permission of round 2.
    assert_eq!(a.balance(&coin(ALICE)), ALICE_COINS - 10 - 20 - 100);
    assert_eq!(a.balance(&asset("coin#looking_glass", ALICE)), 5);
    assert_eq!(a.peers().len(), 2);
    assert_eq!(a.domains(Page::default()), b.domains(Page::default()));
}

#[derive(Debug, Clone)]
enum Op {
    /// `creator` moves `holder`'s coins to `destination` (GHOST: an account that does not
    /// exist), signed by the creator's key or, if `!right_key`, by another holder's.
    Transfer {
        creator: usize,
        holder: usize,
        destination: usize,
        amount: u128,
        right_key: bool,
    },
    /// The genesis authority (the coin's owner) mints to `holder`.
    Mint { holder: usize, amount: u128 },
    /// `creator` burns `holder`'s coins.
    Burn {
        creator: usize,
        holder: usize,
        amount: u128,
    },
}

fn amount() -> impl Strategy<Value = u128> {
    prop_oneof![4 => 0u128..=30, 3 => 0u128..=1_200, 1 => Just(u128::MAX)]
}

/// The holder is usually the creator; sometimes another account (not permitted).
fn creator_and_holder() -> impl Strategy<Value = (usize, usize)> {
    (0..HOLDERS.len(), 0..HOLDERS.len(), prop::bool::weighted(0.15))
        .prop_map(|(creator, other, on_behalf)| (creator, if on_behalf { other } else { creator }))
}

fn transfer_op() -> impl Strategy<Value = Op> {
    (creator_and_holder(), 0..=GHOST, amount(), prop::bool::weighted(0.9)).prop_map(
        |((creator, holder), destination, amount, right_key)| Op::Transfer {
            creator,
            holder,
            destination,
            amount,
            right_key,
        },
    )
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => transfer_op(),
        1 => (0..HOLDERS.len(), amount()).prop_map(|(holder, amount)| Op::Mint { holder, amount }),
        1 => (creator_and_holder(), amount()).prop_map(|((creator, holder), amount)| Op::Burn { creator, holder, amount }),
    ]
}

/// What the ops should do to the coin of wonderland.
struct Model {
    balances: [u128; 4],
    supply: u128,
}

impl Model {
    /// Applies `op` if it is valid; returns whether it should commit.
    fn apply(&mut self, op: &Op) -> bool {
        match *op {
            Op::Transfer {
                creator,
                holder,
                destination,
                amount,
                right_key,
            } => {
                let valid = right_key
                    && creator == holder
                    && amount > 0
                    && destination != GHOST
                    && amount <= self.balances[holder];
                if valid {
                    self.balances[holder] -= amount;
                    self.balances[destination] += amount;
                }
                valid
            }
            Op::Mint { holder, amount } => {
                let valid = amount > 0 && self.supply.checked_add(amount).is_some();
                if valid {
                    self.supply += amount;
                    self.balances[holder] += amount;
                }
                valid
            }
            Op::Burn {
                creator,
                holder,
                amount,
            } => {
                let valid = creator == holder && amount > 0 && amount <= self.balances[holder];
                if valid {
                    self.supply -= amount;
                    self.balances[holder] -= amount;
                }
                valid
            }
        }
    }
}

fn op_transaction(wsv: &Wsv, op: &Op, nonce: u32) -> SignedTransaction {
    let time = next_time(wsv);
    let (creator, signer, instruction) = match *op {
        Op::Transfer {
            creator,
            holder,
            destination,
            amount,
            right_key,
        } => {
            let signer = if right_key {
                creator
            } else {
                (creator + 1) % HOLDERS.len()
            };
            let destination = if destination == GHOST {
                GHOST_NAME
            } else {
                HOLDERS[destination]
            };
            (
                HOLDERS[creator],
                holder_key(signer),
                transfer(coin(HOLDERS[holder]), destination, amount),
            )
        }
        Op::Mint { holder, amount } => (
            "genesis@genesis",
            genesis_key(),
            Instruction::Mint {
                asset: coin(HOLDERS[holder]),
                amount,
            },
        ),
        Op::Burn {
            creator,
            holder,
            amount,
        } => (
            HOLDERS[creator],
            holder_key(creator),
            Instruction::Burn {
                asset: coin(HOLDERS[holder]),
                amount,
            },
        ),
    };
    SignedTransaction::sign(payload(creator, vec![instruction], time, nonce), &[&signer])
}

/// Runs `blocks` of ops on a state, checking each outcome and the balances against the model,
/// then replays the blocks on a clone taken after genesis and on a state built independently
/// from the same genesis; all three must agree after every block.
fn run_ops(blocks: &[(Vec<Op>, bool)]) -> Result<Wsv, TestCaseError> {
    let mut wsv = holders_wsv();
    let mut clone = wsv.clone();
    let mut independent = holders_wsv();
    let mut model = Model {
        balances: INITIAL,
        supply: INITIAL.iter().sum(),
    };
    let coin_definition = definition("coin#wonderland");
    let mut nonce = 0u32;
    for (ops, duplicate_first) in blocks {
        let mut transactions: Vec<SignedTransaction> = ops
            .iter()
            .map(|op| {
                nonce += 1;
                op_transaction(&wsv, op, nonce)
            })
            .collect();
        if *duplicate_first {
            transactions.push(transactions[0].clone());
        }
        let (block, outcomes) = build_and_apply(&mut wsv, transactions);
        for (index, op) in ops.iter().enumerate() {
            let expected = model.apply(op);
            prop_assert_eq!(
                outcomes[index] == TransactionOutcome::Committed,
                expected,
                "op {:?} gave {:?}",
                op,
                outcomes[index]
            );
        }
        if *duplicate_first {
            // A payload is spent once its signatures authorize it; an unauthorized one is not
            // remembered, so its copy is refused again for the same reason.
            use kasane_wsv::RejectionReason as Reason;
            let authorized = !matches!(
                &outcomes[0],
                TransactionOutcome::Rejected(
                    Reason::NotASignatory { .. }
                        | Reason::NotEnoughSignatures { .. }
                        | Reason::NoSuchCreator(_)
                        | Reason::Expired { .. }
                        | Reason::FromTheFuture { .. }
                        | Reason::Stateless(_)
                )
            );
            let expected = if authorized {
                TransactionOutcome::Rejected(Reason::Replayed)
            } else {
                outcomes[0].clone()
            };
            prop_assert_eq!(outcomes.last(), Some(&expected));
        }
        let balances: Vec<u128> = HOLDERS.iter().map(|holder| wsv.balance(&coin(holder))).collect();
        prop_assert_eq!(&balances, &model.balances.to_vec());
        let sum = balances
            .iter()
            .try_fold(0u128, |sum, balance| sum.checked_add(*balance));
        let total_supply = wsv.asset_definition(&coin_definition).expect("coin").total_supply;
        prop_assert_eq!(sum, Some(total_supply));
        prop_assert_eq!(total_supply, model.supply);
        prop_assert_eq!(wsv.balance(&coin(GHOST_NAME)), 0);
        for (index, holder) in HOLDERS.iter().enumerate() {
            let listed = wsv.balances(&account(holder), Page::default());
            let expected: Vec<_> = (model.balances[index] > 0)
                .then(|| (coin_definition.clone(), model.balances[index]))
                .into_iter()
                .collect();
            prop_assert_eq!(listed, expected);
        }
        replay_on(&mut clone, &block);
        replay_on(&mut independent, &block);
        prop_assert_eq!(clone.state_commitment(), wsv.state_commitment());
        prop_assert_eq!(independent.state_commitment(), wsv.state_commitment());
    }
    Ok(wsv)
}

fn blocks_of(op: impl Strategy<Value = Op>) -> impl Strategy<Value = Vec<(Vec<Op>, bool)>> {
    prop::collection::vec((prop::collection::vec(op, 1..8), prop::bool::weighted(0.2)), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn transfers_conserve_the_supply(blocks in blocks_of(transfer_op())) {
        let wsv = run_ops(&blocks)?;
        // With transfers only, the supply is the genesis supply, however the coins moved.
        let genesis_supply: u128 = INITIAL.iter().sum();
        let sum: u128 = HOLDERS.iter().map(|holder| wsv.balance(&coin(holder))).sum();
        prop_assert_eq!(sum, genesis_supply);
        prop_assert_eq!(wsv.asset_definition(&definition("coin#wonderland")).expect("coin").total_supply, genesis_supply);
    }

    #[test]
    fn mints_and_burns_keep_supply_equal_to_balances(blocks in blocks_of(any_op())) {
        run_ops(&blocks)?;
    }
}
