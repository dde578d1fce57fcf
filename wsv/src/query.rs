//! Read-only queries over the committed world state, with pagination where a list can grow.

use kasane_model::ids::{AccountId, AssetDefinitionId, AssetId, DomainId};
use kasane_model::PublicKey;

use crate::state::{RecentTransaction, Wsv};
use crate::world::{Account, AssetDefinition, Domain};

/// Largest page a query returns.
pub const PAGE_LIMIT_MAX: usize = 1000;

/// Which slice of a list to return: `limit` items after skipping `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Default for Page {
    fn default() -> Page {
        Page { offset: 0, limit: 100 }
    }
}

impl Page {
    fn apply<T>(self, items: impl Iterator<Item = T>) -> Vec<T> {
        items.skip(self.offset).take(self.limit.min(PAGE_LIMIT_MAX)).collect()
    }
}

impl Wsv {
    pub fn domain(&self, id: &DomainId) -> Option<&Domain> {
        self.world.domain(id)
    }

    /// Domain identifiers in order.
    pub fn domains(&self, page: Page) -> Vec<DomainId> {
        let mut ids: Vec<&DomainId> = self.domain_ids().collect();
        ids.sort_unstable();
        page.apply(ids.into_iter().cloned())
    }

    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.world.account(id)
    }

    pub fn asset_definition(&self, id: &AssetDefinitionId) -> Option<&AssetDefinition> {
        self.world.asset_definition(id)
    }

    pub fn balance(&self, asset: &AssetId) -> u128 {
        self.world.balance(asset)
    }

    /// The non-zero balances of an account, by asset definition in order.
    pub fn balances(&self, account: &AccountId, page: Page) -> Vec<(AssetDefinitionId, u128)> {
        let Some(held) = self.world.holdings.get(account) else {
            return Vec::new();
        };
        page.apply(held.iter().map(|definition| {
            let asset = AssetId::new(definition.clone(), account.clone());
            (definition.clone(), self.world.balance(&asset))
        }))
    }

    /// Account identifiers in order, of one domain or of all. Sorts the matching ids, so a
    /// page costs O(accounts log accounts): fine for queries, not for a hot path.
    pub fn accounts(&self, domain: Option<&DomainId>, page: Page) -> Vec<AccountId> {
        let mut ids: Vec<&AccountId> = self
            .world
            .accounts
            .keys()
            .filter(|id| domain.is_none_or(|domain| id.domain == *domain))
            .collect();
        ids.sort_unstable();
        page.apply(ids.into_iter().cloned())
    }

    pub fn peers(&self) -> Vec<PublicKey> {
        self.world.peers.iter().copied().collect()
    }

    /// The account's most recent transactions (as creator), newest first.
    pub fn recent_transactions(&self, account: &AccountId) -> Vec<RecentTransaction> {
        self.recent_of(account)
            .map(|list| list.iter().rev().copied().collect())
            .unwrap_or_default()
    }
}
