//! Strict init and the auditor judge a transaction signature as admission and block validation
//! do (docs/PROTOCOL.md section 1): a chain holding a signature with a torsion component in R,
//! valid under kasane's cofactored rule and refused by a cofactorless strict check, replays
//! under strict init and passes the audit; a chain holding a signature with a non-canonical s is
//! refused by strict init at that block, and by the batch check alone or mixed.

use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_kura::{init, Kura, KuraConfig, MemoryBackend};
use kasane_model::crypto::KeyCache;
use kasane_model::instruction::Instruction;
use kasane_model::transaction::{signing_message, verify_transaction_signatures, TransactionSignature, TTL_MS_MAX};
use kasane_model::{KeyPair, Signature, SignedTransaction, TransactionPayload};
use kasane_wsv::PluginRegistry;

/// A signature of `message` by `pair` whose R carries an order-8 torsion component: valid under
/// the cofactored equation, invalid under the cofactorless one.
fn torsion_signature(pair: &KeyPair, message: &[u8]) -> Signature {
    kasane_model::crypto::rule::torsion_signature(pair, message, 1)
}

/// `signature` with s replaced by s + l: the same value as a scalar, not a canonical encoding.
fn non_canonical_s(signature: Signature) -> Signature {
    let mut s = [0u8; 32];
    s.copy_from_slice(&signature.0[32..]);
    // l = 2^252 + 27742317777372353535851937790883648493, little endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    let mut out = signature;
    for index in 0..32 {
        let sum = u16::from(s[index]) + u16::from(L[index]) + carry;
        out.0[32 + index] = sum as u8;
        carry = sum >> 8;
    }
    out
}

fn fixture() -> FixtureChain {
    FixtureChain::new(FixtureConfig {
        blocks: 0,
        transactions_per_block: 2,
        accounts: 4,
        validators: 4,
        seed: 21,
    })
    .expect("fixture")
}

/// A transfer from account `sender` signed with `sign`.
fn transfer(
    chain: &FixtureChain,
    sender: usize,
    nonce: u32,
    sign: impl Fn(&KeyPair, &[u8]) -> Signature,
) -> SignedTransaction {
    let payload = TransactionPayload {
        chain: chain.wsv.chain().clone(),
        creator: chain.accounts[sender].0.clone(),
        instructions: vec![Instruction::Transfer {
            source: chain.coin_of(sender),
            destination: chain.accounts[(sender + 1) % chain.accounts.len()].0.clone(),
            amount: 1,
        }],
        created_at_ms: chain.timestamp_of(2),
        ttl_ms: TTL_MS_MAX,
        nonce,
    };
    let pair = &chain.accounts[sender].1;
    let signature = sign(pair, &signing_message(&payload.hash()));
    SignedTransaction {
        payload,
        signatures: vec![TransactionSignature {
            public_key: pair.public_key(),
            signature,
        }],
    }
}

/// A store holding genesis and one block of `transactions`.
fn store(mut chain: FixtureChain, transactions: Vec<SignedTransaction>) -> Kura<MemoryBackend> {
    let (mut kura, _) = Kura::open(MemoryBackend::new(), KuraConfig::default()).expect("open");
    kura.append(&chain.genesis).expect("genesis");
    let (block, _) = chain.next_block_of(transactions).expect("block");
    kura.append(&block).expect("block");
    kura
}

#[test]
fn a_cofactored_signature_is_valid_in_every_check_and_a_non_canonical_one_in_none() {
    let chain = fixture();
    let torsion = transfer(&chain, 0, 1, torsion_signature);
    let honest = transfer(&chain, 1, 2, |pair, message| pair.sign(message));
    let broken = transfer(&chain, 2, 3, |pair, message| non_canonical_s(pair.sign(message)));

    // Admission and block validation use this check, alone or in batches.
    let check = |transactions: &[SignedTransaction]| {
        let hashes: Vec<_> = transactions.iter().map(SignedTransaction::hashes).collect();
        verify_transaction_signatures(&mut KeyCache::new(), transactions, &hashes).map_err(|error| error.index)
    };
    assert_eq!(check(std::slice::from_ref(&torsion)), Ok(1));
    assert_eq!(check(&[honest.clone(), torsion.clone()]), Ok(2));
    assert_eq!(check(&[torsion.clone(), honest.clone()]), Ok(2));
    assert_eq!(check(std::slice::from_ref(&broken)), Err(0));
    assert_eq!(check(&[honest.clone(), broken.clone()]), Err(1));
    assert_eq!(check(&[broken.clone(), torsion.clone(), honest.clone()]), Err(0));

    // Strict init and the auditor accept the chain with the torsion signature.
    let kura = store(fixture(), vec![honest.clone(), torsion.clone()]);
    let (strict, report) = init::strict_init(&kura, PluginRegistry::builtin(), None).expect("strict init");
    assert_eq!(strict.height(), 2);
    assert!(report.signatures_verified >= 2, "{report:?}");
    let (live, _) = init::fast_init(&kura, PluginRegistry::builtin(), None).expect("fast init");
    init::audit(&kura, &live, PluginRegistry::builtin()).expect("audit");

    // Strict init refuses the chain with the non-canonical s, at its block.
    let kura = store(fixture(), vec![honest, broken]);
    let error =
        init::strict_init(&kura, PluginRegistry::builtin(), None).expect_err("strict init accepted a non-canonical s");
    assert_eq!(error.bad_height(), Some(2), "{error}");
}
