//! The simulated client: signed transfers over a load window, duplicates sent to two replicas,
//! conflicting pairs sent to different replicas at once, and the genesis authority's membership
//! changes.

use kasane_kura::fixture::{FixtureChain, FIXTURE_GENESIS_MS};
use kasane_model::instruction::Instruction;
use kasane_model::transaction::TTL_MS_MAX;
use kasane_model::{Hash, PublicKey, SignedTransaction, TransactionPayload};

use crate::config::ClientConfig;
use crate::rng::Rng;

/// Funded accounts the client signs from.
pub const CLIENT_ACCOUNTS: usize = 32;

/// One transaction to send, and to how many different replicas at once.
#[derive(Debug, Clone)]
pub struct Submission {
    pub transaction: SignedTransaction,
    pub copies: usize,
}

/// What the client sends and when, and the pairs of which at most one may commit.
#[derive(Debug, Default)]
pub struct Workload {
    pub submissions: Vec<(u64, Submission)>,
    pub conflicts: Vec<(Hash, Hash)>,
}

fn payload(
    fixture: &FixtureChain,
    sender: usize,
    instructions: Vec<Instruction>,
    at_ms: u64,
    nonce: u32,
) -> TransactionPayload {
    TransactionPayload {
        chain: fixture.wsv.chain().clone(),
        creator: fixture.accounts[sender].0.clone(),
        instructions,
        created_at_ms: FIXTURE_GENESIS_MS + at_ms,
        ttl_ms: TTL_MS_MAX,
        nonce,
    }
}

/// The client's transactions for a run, drawn with `rng`.
pub fn workload(config: &ClientConfig, fixture: &FixtureChain, rng: &mut Rng) -> Workload {
    let mut workload = Workload::default();
    let window = config.load_window_ms;
    for index in 0..config.transactions {
        let at = rng.between(0, window);
        let sender = index % CLIENT_ACCOUNTS;
        let transfer = Instruction::Transfer {
            source: fixture.coin_of(sender),
            destination: fixture.accounts[(sender + 1) % CLIENT_ACCOUNTS].0.clone(),
            amount: 1,
        };
        let payload = payload(fixture, sender, vec![transfer], at, index as u32);
        let transaction = if index < config.edge_signatures {
            edge_signed(payload, &fixture.accounts[sender].1, index)
        } else {
            SignedTransaction::sign(payload, &[&fixture.accounts[sender].1])
        };
        let copies = if index < config.duplicates { 2 } else { 1 };
        workload.submissions.push((at, Submission { transaction, copies }));
    }
    for pair in 0..config.conflicting_pairs {
        let at = rng.between(0, window);
        let domain: kasane_model::ids::DomainId = format!("contested{pair}").parse().expect("a valid domain name");
        let register = || Instruction::RegisterDomain {
            domain: domain.clone(),
            validator: "default".parse().expect("a valid plugin name"),
        };
        let first_sender = rng.below(CLIENT_ACCOUNTS as u64) as usize;
        let second_sender = (first_sender + 1 + rng.below(CLIENT_ACCOUNTS as u64 - 1) as usize) % CLIENT_ACCOUNTS;
        let nonce = (1 << 20) + pair as u32;
        let first = SignedTransaction::sign(
            payload(fixture, first_sender, vec![register()], at, nonce),
            &[&fixture.accounts[first_sender].1],
        );
        let second = SignedTransaction::sign(
            payload(fixture, second_sender, vec![register()], at, nonce),
            &[&fixture.accounts[second_sender].1],
        );
        workload.conflicts.push((first.payload.hash(), second.payload.hash()));
        for transaction in [first, second] {
            workload.submissions.push((at, Submission { transaction, copies: 1 }));
        }
    }
    workload
}

/// `payload` signed by `signer` with a torsion component in R (kasane_model::crypto::rule).
fn edge_signed(payload: TransactionPayload, signer: &kasane_model::KeyPair, index: usize) -> SignedTransaction {
    let message = kasane_model::transaction::signing_message(&payload.hash());
    let signature = kasane_model::crypto::rule::torsion_signature(signer, &message, 1 + index % 7);
    SignedTransaction {
        payload,
        signatures: vec![kasane_model::transaction::TransactionSignature {
            public_key: signer.public_key(),
            signature,
        }],
    }
}

/// The genesis authority registers (or removes) `peer` as a validator.
pub fn membership(
    fixture: &FixtureChain,
    peer: PublicKey,
    register: bool,
    at_ms: u64,
    nonce: u32,
) -> SignedTransaction {
    let instruction = if register {
        Instruction::RegisterPeer { peer }
    } else {
        Instruction::UnregisterPeer { peer }
    };
    let payload = TransactionPayload {
        chain: fixture.wsv.chain().clone(),
        creator: fixture.wsv.genesis_authority().clone(),
        instructions: vec![instruction],
        created_at_ms: FIXTURE_GENESIS_MS + at_ms,
        ttl_ms: TTL_MS_MAX,
        nonce: (1 << 24) + nonce,
    };
    SignedTransaction::sign(payload, &[&fixture.genesis_key])
}
