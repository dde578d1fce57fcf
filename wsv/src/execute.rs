//! The instruction executor: the effect and the permission rule of every instruction.
//!
//! Permission rules (docs/ARCHITECTURE.md, "World state"):
//! - anyone registers a domain and owns it; only its owner unregisters it, once it is empty;
//! - a domain's owner, or a holder of `RegisterInDomain`, registers accounts and asset
//!   definitions in it;
//! - the holder of an asset, or a holder of `TransferAsset`/`BurnAsset` for it, moves or burns it;
//! - an asset definition's owner, or a holder of `MintAsset`, mints it;
//! - an account, or a holder of `ManageAccount` for it, changes its metadata and signatories;
//! - peers are registered and unregistered only by the genesis authority;
//! - a permission is granted and revoked by whoever owns the object it is about;
//! - an unregistered domain, account or asset definition identifier is retired, never reused,
//!   so nothing it owned and no permission granted over it passes to a newcomer.

use std::collections::BTreeSet;

use kasane_model::ids::{AccountId, AssetDefinitionId, AssetId, DomainId, Name};
use kasane_model::instruction::{
    Instruction, MetadataTarget, Mintable, Permission, CONTRACT_CALL_BYTES_MAX, METADATA_ENTRIES_MAX,
    METADATA_VALUE_BYTES_MAX, SIGNATORIES_MAX,
};
use kasane_model::PublicKey;

use crate::contract::ContractContext;
use crate::layer::Layered;
use crate::plugin::PluginRegistry;
use crate::state::PAYLOADS_KEY;
use crate::world::{Account, AssetDefinition, Domain, Metadata, RetiredId};

/// Most permissions one account may hold.
pub const PERMISSIONS_PER_ACCOUNT_MAX: usize = 256;

/// Why an instruction was refused. The transaction that carried it is rejected with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstructionError {
    #[error("domain {0} does not exist")]
    NoSuchDomain(DomainId),
    #[error("domain {0} already exists")]
    DomainExists(DomainId),
    #[error("domain {0} still holds accounts or asset definitions")]
    DomainNotEmpty(DomainId),
    #[error("account {0} does not exist")]
    NoSuchAccount(AccountId),
    #[error("account {0} already exists")]
    AccountExists(AccountId),
    #[error("account {0} still holds assets")]
    AccountNotEmpty(AccountId),
    #[error("asset definition {0} does not exist")]
    NoSuchAssetDefinition(AssetDefinitionId),
    #[error("asset definition {0} already exists")]
    AssetDefinitionExists(AssetDefinitionId),
    #[error("asset definition {0} still has assets in circulation")]
    AssetDefinitionInUse(AssetDefinitionId),
    #[error("peer {0} is already registered")]
    PeerExists(PublicKey),
    #[error("peer {0} is not registered")]
    NoSuchPeer(PublicKey),
    #[error("peer {0} is the last validator; a chain without validators cannot decide anything")]
    LastPeer(PublicKey),
    #[error("{authority} may not {action}")]
    NotPermitted { authority: AccountId, action: String },
    #[error("asset {asset} holds {balance}, less than {amount}")]
    InsufficientBalance {
        asset: AssetId,
        balance: u128,
        amount: u128,
    },
    #[error("amount must be positive")]
    ZeroAmount,
    #[error("amount overflows the largest balance")]
    Overflow,
    #[error("asset definition {0} may not be minted")]
    NotMintable(AssetDefinitionId),
    #[error("validator plugin {0} is not known to this node")]
    UnknownValidator(Name),
    #[error("{what}: {count} is over the limit of {limit}")]
    LimitExceeded {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("key {key} is already a signatory of {account}")]
    SignatoryExists { account: AccountId, key: PublicKey },
    #[error("key {key} is not a signatory of {account}")]
    NoSuchSignatory { account: AccountId, key: PublicKey },
    #[error("signing condition of {account} needs {required} of {signatories} signatories")]
    BadSigningCondition {
        account: AccountId,
        required: usize,
        signatories: usize,
    },
    #[error("public key {0} is not a usable ed25519 key")]
    BadKey(PublicKey),
    #[error("metadata key {0} does not exist")]
    NoSuchMetadata(Name),
    #[error("{0} was unregistered; identifiers are never reused")]
    Retired(String),
    #[error("{0} is the genesis domain or authority and may not be removed")]
    Protected(String),
    #[error("contract {0} is not known to this node")]
    UnknownContract(Name),
    #[error("contract {contract}: {reason}")]
    Contract { contract: Name, reason: String },
}

type Outcome = Result<(), InstructionError>;

/// The context one transaction's instructions run in.
#[derive(Debug)]
pub struct Executor<'a, 'w> {
    pub(crate) state: &'a mut Layered<'w>,
    pub(crate) authority: &'a AccountId,
    pub(crate) genesis_authority: &'a AccountId,
    pub(crate) plugins: &'a PluginRegistry,
    /// Height of the block being applied.
    pub(crate) height: u64,
}

/// Moves a balance by `amount` (up when `add`), keeping the holder's count of held assets. The
/// one way balances change: instructions and contracts (wsv/src/contract.rs) both come here.
pub(crate) fn add_balance(state: &mut Layered<'_>, asset: &AssetId, amount: u128, add: bool) -> Outcome {
    let before = state.balance(asset);
    let after = if add {
        before.checked_add(amount).ok_or(InstructionError::Overflow)?
    } else {
        before
            .checked_sub(amount)
            .ok_or_else(|| InstructionError::InsufficientBalance {
                asset: asset.clone(),
                balance: before,
                amount,
            })?
    };
    if (before == 0) != (after == 0) {
        let mut holder = state
            .account(&asset.account)
            .ok_or_else(|| InstructionError::NoSuchAccount(asset.account.clone()))?
            .clone();
        if after == 0 {
            holder.held_asset_count -= 1;
        } else {
            holder.held_asset_count += 1;
        }
        state.set_account(asset.account.clone(), Some(holder));
    }
    state.set_balance(asset.clone(), after);
    Ok(())
}

fn check_key(key: &PublicKey) -> Outcome {
    key.check().map_err(|_| InstructionError::BadKey(*key))
}

impl Executor<'_, '_> {
    pub fn execute(&mut self, instruction: &Instruction) -> Outcome {
        match instruction {
            Instruction::Transfer {
                source,
                destination,
                amount,
            } => self.transfer(source, destination, *amount),
            Instruction::Mint { asset, amount } => self.mint(asset, *amount),
            Instruction::Burn { asset, amount } => self.burn(asset, *amount),
            Instruction::RegisterDomain { domain, validator } => self.register_domain(domain, validator),
            Instruction::UnregisterDomain { domain } => self.unregister_domain(domain),
            Instruction::RegisterAccount { account, signatories } => self.register_account(account, signatories),
            Instruction::UnregisterAccount { account } => self.unregister_account(account),
            Instruction::RegisterAssetDefinition {
                definition,
                scale,
                mintable,
            } => self.register_asset_definition(definition, *scale, *mintable),
            Instruction::UnregisterAssetDefinition { definition } => self.unregister_asset_definition(definition),
            Instruction::RegisterPeer { peer } => self.set_peer(*peer, true),
            Instruction::UnregisterPeer { peer } => self.set_peer(*peer, false),
            Instruction::SetKeyValue { target, key, value } => self.set_key_value(target, key, Some(value)),
            Instruction::RemoveKeyValue { target, key } => self.set_key_value(target, key, None),
            Instruction::AddSignatory { account, key } => self.change_signatory(account, key, true),
            Instruction::RemoveSignatory { account, key } => self.change_signatory(account, key, false),
            Instruction::SetSigningCondition { account, required } => self.set_signing_condition(account, *required),
            Instruction::GrantPermission { account, permission } => self.change_permission(account, permission, true),
            Instruction::RevokePermission { account, permission } => self.change_permission(account, permission, false),
            Instruction::CallContract { contract, call } => self.call_contract(contract, call),
            // Only a chain that takes opaque payloads lets one this far (`check_stateless`), and
            // there it is ordered, not interpreted.
            Instruction::Opaque { .. } => Ok(()),
        }
    }

    fn call_contract(&mut self, name: &Name, call: &[u8]) -> Outcome {
        if call.len() > CONTRACT_CALL_BYTES_MAX {
            return Err(InstructionError::LimitExceeded {
                what: "contract call bytes",
                count: call.len(),
                limit: CONTRACT_CALL_BYTES_MAX,
            });
        }
        let contract = self
            .plugins
            .contract(name.as_str())
            .ok_or_else(|| InstructionError::UnknownContract(name.clone()))?;
        let mut context = ContractContext {
            state: self.state,
            contract: name,
            caller: self.authority,
            genesis_authority: self.genesis_authority,
            height: self.height,
        };
        contract
            .call(&mut context, call)
            .map_err(|reason| InstructionError::Contract {
                contract: name.clone(),
                reason,
            })
    }

    fn refuse(&self, action: impl Into<String>) -> InstructionError {
        InstructionError::NotPermitted {
            authority: self.authority.clone(),
            action: action.into(),
        }
    }

    /// Whether the authority holds `permission`.
    fn holds(&self, permission: &Permission) -> bool {
        self.state
            .account(self.authority)
            .is_some_and(|account| account.permissions.contains(permission))
    }

    fn domain(&self, id: &DomainId) -> Result<&Domain, InstructionError> {
        self.state
            .domain(id)
            .ok_or_else(|| InstructionError::NoSuchDomain(id.clone()))
    }

    fn account(&self, id: &AccountId) -> Result<&Account, InstructionError> {
        self.state
            .account(id)
            .ok_or_else(|| InstructionError::NoSuchAccount(id.clone()))
    }

    fn definition(&self, id: &AssetDefinitionId) -> Result<&AssetDefinition, InstructionError> {
        self.state
            .asset_definition(id)
            .ok_or_else(|| InstructionError::NoSuchAssetDefinition(id.clone()))
    }

    fn may_register_in(&self, domain: &DomainId) -> Outcome {
        let owner_ok = self.domain(domain)?.owner == *self.authority;
        if owner_ok || self.holds(&Permission::RegisterInDomain(domain.clone())) {
            Ok(())
        } else {
            Err(self.refuse(format!("register in domain {domain}")))
        }
    }

    fn may_manage_account(&self, account: &AccountId) -> Outcome {
        if account == self.authority || self.holds(&Permission::ManageAccount(account.clone())) {
            Ok(())
        } else {
            Err(self.refuse(format!("manage account {account}")))
        }
    }

    /// See [`add_balance`].
    fn add_balance(&mut self, asset: &AssetId, amount: u128, add: bool) -> Outcome {
        add_balance(self.state, asset, amount, add)
    }

    fn transfer(&mut self, source: &AssetId, destination: &AccountId, amount: u128) -> Outcome {
        if amount == 0 {
            return Err(InstructionError::ZeroAmount);
        }
        if source.account != *self.authority && !self.holds(&Permission::TransferAsset(source.clone())) {
            return Err(self.refuse(format!("transfer {source}")));
        }
        self.definition(&source.definition)?;
        self.account(destination)?;
        self.add_balance(source, amount, false)?;
        let target = AssetId::new(source.definition.clone(), destination.clone());
        self.add_balance(&target, amount, true)
    }

    fn mint(&mut self, asset: &AssetId, amount: u128) -> Outcome {
        if amount == 0 {
            return Err(InstructionError::ZeroAmount);
        }
        let mut definition = self.definition(&asset.definition)?.clone();
        if definition.owner != *self.authority && !self.holds(&Permission::MintAsset(asset.definition.clone())) {
            return Err(self.refuse(format!("mint {}", asset.definition)));
        }
        match definition.mintable {
            Mintable::Not => return Err(InstructionError::NotMintable(definition.id)),
            Mintable::Once => definition.mintable = Mintable::Not,
            Mintable::Infinitely => {}
        }
        self.account(&asset.account)?;
        definition.total_supply = definition
            .total_supply
            .checked_add(amount)
            .ok_or(InstructionError::Overflow)?;
        self.add_balance(asset, amount, true)?;
        self.state.set_asset_definition(definition.id.clone(), Some(definition));
        Ok(())
    }

    fn burn(&mut self, asset: &AssetId, amount: u128) -> Outcome {
        if amount == 0 {
            return Err(InstructionError::ZeroAmount);
        }
        if asset.account != *self.authority && !self.holds(&Permission::BurnAsset(asset.clone())) {
            return Err(self.refuse(format!("burn {asset}")));
        }
        let mut definition = self.definition(&asset.definition)?.clone();
        self.add_balance(asset, amount, false)?;
        // Balances sum to the total supply, so a successful debit leaves enough supply.
        definition.total_supply -= amount;
        self.state.set_asset_definition(definition.id.clone(), Some(definition));
        Ok(())
    }

    /// Refuses an identifier that was unregistered before.
    fn check_not_retired(&self, id: RetiredId, text: impl ToString) -> Outcome {
        if self.state.is_retired(&id) {
            return Err(InstructionError::Retired(text.to_string()));
        }
        Ok(())
    }

    fn register_domain(&mut self, id: &DomainId, validator: &Name) -> Outcome {
        if self.state.domain(id).is_some() {
            return Err(InstructionError::DomainExists(id.clone()));
        }
        self.check_not_retired(RetiredId::Domain(id.clone()), id)?;
        if !self.plugins.contains(validator.as_str()) {
            return Err(InstructionError::UnknownValidator(validator.clone()));
        }
        let domain = Domain {
            id: id.clone(),
            owner: self.authority.clone(),
            validator: validator.clone(),
            metadata: Metadata::new(),
            account_count: 0,
            asset_definition_count: 0,
        };
        self.state.set_domain(id.clone(), Some(domain));
        Ok(())
    }

    fn unregister_domain(&mut self, id: &DomainId) -> Outcome {
        if *id == self.genesis_authority.domain {
            return Err(InstructionError::Protected(id.to_string()));
        }
        let domain = self.domain(id)?;
        if domain.owner != *self.authority {
            return Err(self.refuse(format!("unregister domain {id}")));
        }
        if domain.account_count > 0 || domain.asset_definition_count > 0 {
            return Err(InstructionError::DomainNotEmpty(id.clone()));
        }
        self.state.set_domain(id.clone(), None);
        self.state.retire(RetiredId::Domain(id.clone()));
        Ok(())
    }

    /// Adds `delta` to a domain's count of accounts (or of asset definitions).
    fn count_in_domain(&mut self, id: &DomainId, accounts: bool, add: bool) -> Outcome {
        let mut domain = self.domain(id)?.clone();
        let counter = if accounts {
            &mut domain.account_count
        } else {
            &mut domain.asset_definition_count
        };
        *counter = if add { *counter + 1 } else { counter.saturating_sub(1) };
        self.state.set_domain(id.clone(), Some(domain));
        Ok(())
    }

    fn register_account(&mut self, id: &AccountId, signatories: &[PublicKey]) -> Outcome {
        self.may_register_in(&id.domain)?;
        if self.state.account(id).is_some() {
            return Err(InstructionError::AccountExists(id.clone()));
        }
        self.check_not_retired(RetiredId::Account(id.clone()), id)?;
        let keys: BTreeSet<PublicKey> = signatories.iter().copied().collect();
        if keys.is_empty() || keys.len() > SIGNATORIES_MAX || keys.len() != signatories.len() {
            return Err(InstructionError::LimitExceeded {
                what: "distinct signatories (at least 1)",
                count: signatories.len(),
                limit: SIGNATORIES_MAX,
            });
        }
        keys.iter().try_for_each(check_key)?;
        let account = Account {
            id: id.clone(),
            signatories: keys,
            signatures_required: 1,
            metadata: Metadata::new(),
            permissions: BTreeSet::new(),
            held_asset_count: 0,
        };
        self.state.set_account(id.clone(), Some(account));
        self.count_in_domain(&id.domain, true, true)
    }

    fn unregister_account(&mut self, id: &AccountId) -> Outcome {
        if id == self.genesis_authority {
            return Err(InstructionError::Protected(id.to_string()));
        }
        let owner = &self.domain(&id.domain)?.owner;
        if id != self.authority && owner != self.authority {
            return Err(self.refuse(format!("unregister account {id}")));
        }
        if self.account(id)?.held_asset_count > 0 {
            return Err(InstructionError::AccountNotEmpty(id.clone()));
        }
        self.state.set_account(id.clone(), None);
        self.state.retire(RetiredId::Account(id.clone()));
        self.count_in_domain(&id.domain, true, false)
    }

    fn register_asset_definition(&mut self, id: &AssetDefinitionId, scale: u8, mintable: Mintable) -> Outcome {
        self.may_register_in(&id.domain)?;
        if self.state.asset_definition(id).is_some() {
            return Err(InstructionError::AssetDefinitionExists(id.clone()));
        }
        self.check_not_retired(RetiredId::AssetDefinition(id.clone()), id)?;
        let definition = AssetDefinition {
            id: id.clone(),
            owner: self.authority.clone(),
            scale,
            mintable,
            total_supply: 0,
            metadata: Metadata::new(),
        };
        self.state.set_asset_definition(id.clone(), Some(definition));
        self.count_in_domain(&id.domain, false, true)
    }

    fn unregister_asset_definition(&mut self, id: &AssetDefinitionId) -> Outcome {
        let definition = self.definition(id)?;
        let domain_owner = &self.domain(&id.domain)?.owner;
        if definition.owner != *self.authority && domain_owner != self.authority {
            return Err(self.refuse(format!("unregister asset definition {id}")));
        }
        if definition.total_supply > 0 {
            return Err(InstructionError::AssetDefinitionInUse(id.clone()));
        }
        self.state.set_asset_definition(id.clone(), None);
        self.state.retire(RetiredId::AssetDefinition(id.clone()));
        self.count_in_domain(&id.domain, false, false)
    }

    fn set_peer(&mut self, peer: PublicKey, register: bool) -> Outcome {
        if self.authority != self.genesis_authority {
            return Err(self.refuse("change the peer set"));
        }
        match (register, self.state.is_peer(&peer)) {
            (true, true) => return Err(InstructionError::PeerExists(peer)),
            (false, false) => return Err(InstructionError::NoSuchPeer(peer)),
            (false, true) if self.state.peer_count() == 1 => return Err(InstructionError::LastPeer(peer)),
            _ => {}
        }
        if register {
            check_key(&peer)?;
        }
        self.state.set_peer(peer, register);
        Ok(())
    }

    fn set_key_value(&mut self, target: &MetadataTarget, key: &Name, value: Option<&String>) -> Outcome {
        if self.height > 1
            && key.as_str() == PAYLOADS_KEY
            && *target == MetadataTarget::Account(self.genesis_authority.clone())
        {
            // What the chain takes is fixed by its genesis block (docs/PROTOCOL.md section 1.2).
            return Err(InstructionError::NotPermitted {
                authority: self.authority.clone(),
                action: format!("change the chain's {PAYLOADS_KEY} after genesis"),
            });
        }
        if let Some(value) = value {
            if value.len() > METADATA_VALUE_BYTES_MAX {
                return Err(InstructionError::LimitExceeded {
                    what: "metadata value bytes",
                    count: value.len(),
                    limit: METADATA_VALUE_BYTES_MAX,
                });
            }
        }
        let edit = |metadata: &mut Metadata| -> Outcome {
            match value {
                Some(value) => {
                    metadata.insert(key.clone(), value.clone());
                    if metadata.len() > METADATA_ENTRIES_MAX {
                        return Err(InstructionError::LimitExceeded {
                            what: "metadata entries",
                            count: metadata.len(),
                            limit: METADATA_ENTRIES_MAX,
                        });
                    }
                    Ok(())
                }
                None => metadata
                    .remove(key)
                    .map(|_| ())
                    .ok_or_else(|| InstructionError::NoSuchMetadata(key.clone())),
            }
        };
        match target {
            MetadataTarget::Domain(id) => {
                let mut domain = self.domain(id)?.clone();
                if domain.owner != *self.authority {
                    return Err(self.refuse(format!("edit metadata of domain {id}")));
                }
                edit(&mut domain.metadata)?;
                self.state.set_domain(id.clone(), Some(domain));
            }
            MetadataTarget::Account(id) => {
                self.may_manage_account(id)?;
                let mut account = self.account(id)?.clone();
                edit(&mut account.metadata)?;
                self.state.set_account(id.clone(), Some(account));
            }
            MetadataTarget::AssetDefinition(id) => {
                let mut definition = self.definition(id)?.clone();
                if definition.owner != *self.authority {
                    return Err(self.refuse(format!("edit metadata of asset definition {id}")));
                }
                edit(&mut definition.metadata)?;
                self.state.set_asset_definition(id.clone(), Some(definition));
            }
        }
        Ok(())
    }

    fn change_signatory(&mut self, id: &AccountId, key: &PublicKey, add: bool) -> Outcome {
        self.may_manage_account(id)?;
        let mut account = self.account(id)?.clone();
        if add {
            check_key(key)?;
            if !account.signatories.insert(*key) {
                return Err(InstructionError::SignatoryExists {
                    account: id.clone(),
                    key: *key,
                });
            }
            if account.signatories.len() > SIGNATORIES_MAX {
                return Err(InstructionError::LimitExceeded {
                    what: "signatories",
                    count: account.signatories.len(),
                    limit: SIGNATORIES_MAX,
                });
            }
        } else {
            if !account.signatories.remove(key) {
                return Err(InstructionError::NoSuchSignatory {
                    account: id.clone(),
                    key: *key,
                });
            }
            if account.signatories.len() < usize::from(account.signatures_required) {
                return Err(InstructionError::BadSigningCondition {
                    account: id.clone(),
                    required: usize::from(account.signatures_required),
                    signatories: account.signatories.len(),
                });
            }
        }
        self.state.set_account(id.clone(), Some(account));
        Ok(())
    }

    fn set_signing_condition(&mut self, id: &AccountId, required: u8) -> Outcome {
        self.may_manage_account(id)?;
        let mut account = self.account(id)?.clone();
        if required == 0 || usize::from(required) > account.signatories.len() {
            return Err(InstructionError::BadSigningCondition {
                account: id.clone(),
                required: usize::from(required),
                signatories: account.signatories.len(),
            });
        }
        account.signatures_required = required;
        self.state.set_account(id.clone(), Some(account));
        Ok(())
    }

    /// Who may grant or revoke `permission`: the owner of the object it is about.
    fn may_grant(&self, permission: &Permission) -> Outcome {
        let allowed = match permission {
            Permission::TransferAsset(asset) | Permission::BurnAsset(asset) => asset.account == *self.authority,
            Permission::MintAsset(definition) => self.definition(definition)?.owner == *self.authority,
            Permission::RegisterInDomain(domain) => self.domain(domain)?.owner == *self.authority,
            Permission::ManageAccount(account) => account == self.authority,
        };
        if allowed {
            Ok(())
        } else {
            Err(self.refuse(format!("grant or revoke {permission:?}")))
        }
    }

    fn change_permission(&mut self, id: &AccountId, permission: &Permission, grant: bool) -> Outcome {
        self.may_grant(permission)?;
        let mut account = self.account(id)?.clone();
        if grant {
            account.permissions.insert(permission.clone());
            if account.permissions.len() > PERMISSIONS_PER_ACCOUNT_MAX {
                return Err(InstructionError::LimitExceeded {
                    what: "permissions of one account",
                    count: account.permissions.len(),
                    limit: PERMISSIONS_PER_ACCOUNT_MAX,
                });
            }
        } else if !account.permissions.remove(permission) {
            return Err(self.refuse(format!("revoke {permission:?}, which {id} does not hold")));
        }
        self.state.set_account(id.clone(), Some(account));
        Ok(())
    }
}
