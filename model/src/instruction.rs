//! Instructions: the changes a transaction asks of the world state (Iroha 2's special
//! instructions). Their effects and permission rules live in the wsv crate.

use serde::{Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::ids::{AccountId, AssetDefinitionId, AssetId, DomainId, Name};

/// Longest metadata value in bytes.
pub const METADATA_VALUE_BYTES_MAX: usize = 1024;
/// Most metadata entries one object may hold.
pub const METADATA_ENTRIES_MAX: usize = 64;
/// Most signatories one account may have.
pub const SIGNATORIES_MAX: usize = 16;
/// Largest argument of one contract call, in bytes.
pub const CONTRACT_CALL_BYTES_MAX: usize = 16 * 1024;

/// How often an asset definition may be minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mintable {
    /// Any number of times, by the definition's owner or a granted account.
    Infinitely,
    /// Once; after the first mint the definition becomes `Not`.
    Once,
    /// Never again.
    Not,
}

/// The object a metadata instruction writes to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MetadataTarget {
    Domain(DomainId),
    Account(AccountId),
    AssetDefinition(AssetDefinitionId),
}

/// A right one account holds over an object it does not own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Move (transfer) the given asset on its holder's behalf.
    TransferAsset(AssetId),
    /// Burn the given asset on its holder's behalf.
    BurnAsset(AssetId),
    /// Mint the given asset definition.
    MintAsset(AssetDefinitionId),
    /// Register accounts and asset definitions in the domain.
    RegisterInDomain(DomainId),
    /// Set and remove metadata, and change signatories, of the account.
    ManageAccount(AccountId),
}

/// One change to the world state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Instruction {
    /// Registers a domain owned by the transaction's creator. `validator` names the validator
    /// plugin that checks transactions of the domain's accounts ("default" if unsure).
    RegisterDomain {
        domain: DomainId,
        validator: Name,
    },
    UnregisterDomain {
        domain: DomainId,
    },
    /// Registers an account with its first signatories; it signs with any one of them until a
    /// signing condition says otherwise.
    RegisterAccount {
        account: AccountId,
        signatories: Vec<PublicKey>,
    },
    UnregisterAccount {
        account: AccountId,
    },
    RegisterAssetDefinition {
        definition: AssetDefinitionId,
        /// Decimal places for display; amounts are integers in the smallest unit.
        scale: u8,
        mintable: Mintable,
    },
    UnregisterAssetDefinition {
        definition: AssetDefinitionId,
    },
    RegisterPeer {
        peer: PublicKey,
    },
    UnregisterPeer {
        peer: PublicKey,
    },
    Mint {
        asset: AssetId,
        amount: u128,
    },
    Burn {
        asset: AssetId,
        amount: u128,
    },
    Transfer {
        source: AssetId,
        destination: AccountId,
        amount: u128,
    },
    SetKeyValue {
        target: MetadataTarget,
        key: Name,
        value: String,
    },
    RemoveKeyValue {
        target: MetadataTarget,
        key: Name,
    },
    AddSignatory {
        account: AccountId,
        key: PublicKey,
    },
    RemoveSignatory {
        account: AccountId,
        key: PublicKey,
    },
    /// The account's transactions need `required` distinct signatories' signatures (m of n).
    SetSigningCondition {
        account: AccountId,
        required: u8,
    },
    GrantPermission {
        account: AccountId,
        permission: Permission,
    },
    RevokePermission {
        account: AccountId,
        permission: Permission,
    },
    /// Calls a contract every node registered under `contract` (the plasma contract, for one).
    /// `call` is the contract's own encoding of what to do; the contract reads and writes only
    /// its own section of the world state and the assets it holds (wsv/src/contract.rs).
    CallContract {
        contract: Name,
        #[serde(with = "crate::codec::bytes")]
        call: Vec<u8>,
    },
    /// Bytes no node interprets: the payload of a consensus-only benchmark (the workload of
    /// HotStuff's and Narwhal's benchmarks). It changes no state; only a chain whose genesis
    /// accepts opaque payloads takes it, and there a transaction of opaque instructions alone
    /// needs no signature (docs/PROTOCOL.md section 1.2).
    Opaque {
        #[serde(with = "crate::codec::bytes")]
        bytes: Vec<u8>,
    },
}

impl Instruction {
    pub fn is_opaque(&self) -> bool {
        matches!(self, Instruction::Opaque { .. })
    }
}
