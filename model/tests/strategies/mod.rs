//! proptest strategies for the model's wire types, shared by the codec property tests.
//! Identifiers are always valid (names are checked on decoding); keys, signatures and hashes
//! are random bytes.

use kasane_model::block::{BlockHeader, Certificate, ValidatorSignature};
use kasane_model::crypto::{PublicKey, Signature};
use kasane_model::hash::Hash;
use kasane_model::ids::{AccountId, AssetDefinitionId, AssetId, DomainId, Name};
use kasane_model::instruction::{Instruction, MetadataTarget, Mintable, Permission};
use kasane_model::transaction::TransactionSignature;
use kasane_model::{Block, CommittedBlock, SignedTransaction, TransactionPayload, Vote, VoteKind};
use proptest::prelude::*;

pub fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        // Short ASCII names, the common case.
        "[a-z][a-z0-9_.-]{0,11}",
        // Any characters names allow (no whitespace, '@' or '#'), multi-byte included.
        "[^\\s@#]{1,16}",
        // Names at the byte limit.
        "[a-z]{64}",
    ]
    .prop_map(|text| Name::new(&text).expect("the strategies only produce valid names"))
}

pub fn domain_id() -> impl Strategy<Value = DomainId> {
    name().prop_map(DomainId)
}

pub fn account_id() -> impl Strategy<Value = AccountId> {
    (name(), domain_id()).prop_map(|(name, domain)| AccountId { name, domain })
}

pub fn definition_id() -> impl Strategy<Value = AssetDefinitionId> {
    (name(), domain_id()).prop_map(|(name, domain)| AssetDefinitionId { name, domain })
}

pub fn asset_id() -> impl Strategy<Value = AssetId> {
    (definition_id(), account_id()).prop_map(|(definition, account)| AssetId::new(definition, account))
}

pub fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

pub fn public_key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

pub fn signature() -> impl Strategy<Value = Signature> {
    prop::collection::vec(any::<u8>(), 64).prop_map(|bytes| {
        let mut out = [0u8; 64];
        out.copy_from_slice(&bytes);
        Signature(out)
    })
}

/// Amounts biased towards the varint boundaries.
pub fn amount() -> impl Strategy<Value = u128> {
    prop_oneof![
        Just(0u128),
        Just(127),
        Just(128),
        Just(u128::MAX),
        any::<u128>(),
        0u128..1_000_000
    ]
}

pub fn mintable() -> impl Strategy<Value = Mintable> {
    prop_oneof![Just(Mintable::Infinitely), Just(Mintable::Once), Just(Mintable::Not)]
}

pub fn metadata_target() -> impl Strategy<Value = MetadataTarget> {
    prop_oneof![
        domain_id().prop_map(MetadataTarget::Domain),
        account_id().prop_map(MetadataTarget::Account),
        definition_id().prop_map(MetadataTarget::AssetDefinition),
    ]
}

pub fn permission() -> impl Strategy<Value = Permission> {
    prop_oneof![
        asset_id().prop_map(Permission::TransferAsset),
        asset_id().prop_map(Permission::BurnAsset),
        definition_id().prop_map(Permission::MintAsset),
        domain_id().prop_map(Permission::RegisterInDomain),
        account_id().prop_map(Permission::ManageAccount),
    ]
}

/// Every instruction variant.
pub fn instruction() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        (domain_id(), name()).prop_map(|(domain, validator)| Instruction::RegisterDomain { domain, validator }),
        domain_id().prop_map(|domain| Instruction::UnregisterDomain { domain }),
        (account_id(), prop::collection::vec(public_key(), 0..4))
            .prop_map(|(account, signatories)| Instruction::RegisterAccount { account, signatories }),
        account_id().prop_map(|account| Instruction::UnregisterAccount { account }),
        (definition_id(), any::<u8>(), mintable()).prop_map(|(definition, scale, mintable)| {
            Instruction::RegisterAssetDefinition {
                definition,
                scale,
                mintable,
            }
        }),
        definition_id().prop_map(|definition| Instruction::UnregisterAssetDefinition { definition }),
        public_key().prop_map(|peer| Instruction::RegisterPeer { peer }),
        public_key().prop_map(|peer| Instruction::UnregisterPeer { peer }),
        (asset_id(), amount()).prop_map(|(asset, amount)| Instruction::Mint { asset, amount }),
        (asset_id(), amount()).prop_map(|(asset, amount)| Instruction::Burn { asset, amount }),
        (asset_id(), account_id(), amount()).prop_map(|(source, destination, amount)| Instruction::Transfer {
            source,
            destination,
            amount
        }),
        (metadata_target(), name(), ".{0,40}").prop_map(|(target, key, value)| Instruction::SetKeyValue {
            target,
            key,
            value
        }),
        (metadata_target(), name()).prop_map(|(target, key)| Instruction::RemoveKeyValue { target, key }),
        (account_id(), public_key()).prop_map(|(account, key)| Instruction::AddSignatory { account, key }),
        (account_id(), public_key()).prop_map(|(account, key)| Instruction::RemoveSignatory { account, key }),
        (account_id(), any::<u8>())
            .prop_map(|(account, required)| Instruction::SetSigningCondition { account, required }),
        (account_id(), permission())
            .prop_map(|(account, permission)| Instruction::GrantPermission { account, permission }),
        (account_id(), permission())
            .prop_map(|(account, permission)| Instruction::RevokePermission { account, permission }),
        (name(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(contract, call)| Instruction::CallContract { contract, call }),
    ]
}

pub fn payload() -> impl Strategy<Value = TransactionPayload> {
    (
        name(),
        account_id(),
        prop::collection::vec(instruction(), 0..5),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(
            |(chain, creator, instructions, created_at_ms, ttl_ms, nonce)| TransactionPayload {
                chain,
                creator,
                instructions,
                created_at_ms,
                ttl_ms,
                nonce,
            },
        )
}

pub fn transaction_signature() -> impl Strategy<Value = TransactionSignature> {
    (public_key(), signature()).prop_map(|(public_key, signature)| TransactionSignature { public_key, signature })
}

pub fn transaction() -> impl Strategy<Value = SignedTransaction> {
    (payload(), prop::collection::vec(transaction_signature(), 0..4))
        .prop_map(|(payload, signatures)| SignedTransaction { payload, signatures })
}

pub fn header() -> impl Strategy<Value = BlockHeader> {
    (
        any::<u64>(),
        hash(),
        any::<u64>(),
        public_key(),
        hash(),
        hash(),
        any::<u64>(),
    )
        .prop_map(
            |(height, previous_hash, view, proposer, tx_merkle_root, state_commitment, timestamp_ms)| BlockHeader {
                height,
                previous_hash,
                view,
                proposer,
                tx_merkle_root,
                state_commitment,
                timestamp_ms,
                view_change_proof: None,
            },
        )
}

pub fn certificate() -> impl Strategy<Value = Certificate> {
    let kind = prop_oneof![Just(VoteKind::Prepare), Just(VoteKind::Commit)];
    let vote = (kind, any::<u64>(), any::<u64>(), hash()).prop_map(|(kind, height, view, block_hash)| Vote {
        kind,
        height,
        view,
        block_hash,
    });
    let signature =
        (public_key(), signature()).prop_map(|(validator, signature)| ValidatorSignature { validator, signature });
    (vote, prop::collection::vec(signature, 0..5)).prop_map(|(vote, signatures)| Certificate { vote, signatures })
}

pub fn committed_block() -> impl Strategy<Value = CommittedBlock> {
    (header(), prop::collection::vec(transaction(), 0..3), certificate()).prop_map(
        |(header, transactions, certificate)| CommittedBlock {
            block: Block { header, transactions },
            certificate,
        },
    )
}

/// A way to damage a valid encoding.
#[derive(Debug, Clone)]
pub enum Damage {
    /// XOR the byte at (index mod length) with a non-zero mask.
    Flip(usize, u8),
    /// Overwrite the byte at (index mod length).
    Set(usize, u8),
    /// Insert a byte at (index mod (length + 1)).
    Insert(usize, u8),
    /// Remove the byte at (index mod length).
    Remove(usize),
}

pub fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Damage::Flip(at, mask)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Set(at, byte)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert(at, byte)),
        any::<usize>().prop_map(Damage::Remove),
    ]
}

pub fn apply_damage(bytes: &mut Vec<u8>, damages: &[Damage]) {
    for damage in damages {
        let len = bytes.len();
        match *damage {
            Damage::Flip(at, mask) if len > 0 => bytes[at % len] ^= mask,
            Damage::Set(at, byte) if len > 0 => bytes[at % len] = byte,
            Damage::Insert(at, byte) => bytes.insert(at % (len + 1), byte),
            Damage::Remove(at) if len > 0 => {
                bytes.remove(at % len);
            }
            _ => {}
        }
    }
}
