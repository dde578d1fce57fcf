//! Identifiers of the world state: names, domains, accounts, asset definitions, assets.
//!
//! Text forms follow Iroha 2: `alice@wonderland` is an account, `rose#wonderland` an asset
//! definition, `rose#wonderland#alice@wonderland` the asset `rose#wonderland` held by alice.
//! Names are checked when they are decoded, so an identifier in memory is always well formed.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest name in bytes.
pub const NAME_BYTES_MAX: usize = 64;

/// A non-empty name of at most [`NAME_BYTES_MAX`] bytes, without whitespace, `@` or `#`.
/// Shared (`Arc`) because the same names are cloned into many keys of the state.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

// Written by hand (not through String) so that encoding a name allocates nothing and decoding
// allocates at most once: names are in every transaction, and both are on the hot path. A
// decoded name is looked up among the names this thread decoded lately and shares that one's
// allocation when it is there (a transfer carries nine names, and the same few recur in
// thousands of transactions a second).
impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        struct NameVisitor;
        impl serde::de::Visitor<'_> for NameVisitor {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Name, E> {
                Name::decoded(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("name is empty")]
    Empty,
    #[error("name is {bytes} bytes, over the limit of {NAME_BYTES_MAX}")]
    TooLong { bytes: usize },
    #[error("name {name:?} contains {found:?}, which names may not contain")]
    BadCharacter { name: String, found: char },
    #[error("{text:?} is not of the form {form}")]
    BadForm { text: String, form: &'static str },
}

impl Name {
    pub fn new(text: &str) -> Result<Name, IdError> {
        if text.is_empty() {
            return Err(IdError::Empty);
        }
        if text.len() > NAME_BYTES_MAX {
            return Err(IdError::TooLong { bytes: text.len() });
        }
        if let Some(found) = text.chars().find(|c| c.is_whitespace() || *c == '@' || *c == '#') {
            return Err(IdError::BadCharacter {
                name: text.to_string(),
                found,
            });
        }
        Ok(Name(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// [`Name::new`] through this thread's table of recently decoded names.
    fn decoded(text: &str) -> Result<Name, IdError> {
        RECENT_NAMES.with(|recent| {
            let mut recent = recent.borrow_mut();
            if let Some(name) = recent.get(text) {
                return Ok(name.clone());
            }
            let name = Name::new(text)?;
            if recent.len() >= RECENT_NAMES_MAX {
                recent.clear();
            }
            recent.insert(name.clone());
            Ok(name)
        })
    }
}

/// Most names a thread keeps for [`Name::decoded`]; past it the table starts again empty.
const RECENT_NAMES_MAX: usize = 4096;

thread_local! {
    static RECENT_NAMES: std::cell::RefCell<std::collections::HashSet<Name, ahash::RandomState>> =
        std::cell::RefCell::new(std::collections::HashSet::default());
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = IdError;
    fn try_from(text: String) -> Result<Name, IdError> {
        Name::new(&text)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0.to_string()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A domain: a namespace with an owner, holding accounts and asset definitions.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DomainId(pub Name);

/// `name@domain`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountId {
    pub name: Name,
    pub domain: DomainId,
}

/// `name#domain`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AssetDefinitionId {
    pub name: Name,
    pub domain: DomainId,
}

/// One account's holding of one asset definition: `name#domain#account@domain`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AssetId {
    pub definition: AssetDefinitionId,
    pub account: AccountId,
}

impl DomainId {
    pub fn new(name: &str) -> Result<DomainId, IdError> {
        Ok(DomainId(Name::new(name)?))
    }
}

impl AccountId {
    pub fn new(name: &str, domain: &str) -> Result<AccountId, IdError> {
        Ok(AccountId {
            name: Name::new(name)?,
            domain: DomainId::new(domain)?,
        })
    }
}

impl AssetDefinitionId {
    pub fn new(name: &str, domain: &str) -> Result<AssetDefinitionId, IdError> {
        Ok(AssetDefinitionId {
            name: Name::new(name)?,
            domain: DomainId::new(domain)?,
        })
    }
}

impl AssetId {
    pub fn new(definition: AssetDefinitionId, account: AccountId) -> AssetId {
        AssetId { definition, account }
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.domain)
    }
}

impl fmt::Display for AssetDefinitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.domain)
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.definition, self.account)
    }
}

macro_rules! debug_as_display {
    ($($type:ty),*) => {$(
        impl fmt::Debug for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self)
            }
        }
    )*};
}
debug_as_display!(DomainId, AccountId, AssetDefinitionId, AssetId);

impl FromStr for Name {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Name, IdError> {
        Name::new(text)
    }
}

impl FromStr for DomainId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<DomainId, IdError> {
        DomainId::new(text)
    }
}

impl FromStr for AccountId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<AccountId, IdError> {
        let (name, domain) = text.split_once('@').ok_or_else(|| IdError::BadForm {
            text: text.to_string(),
            form: "name@domain",
        })?;
        AccountId::new(name, domain)
    }
}

impl FromStr for AssetDefinitionId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<AssetDefinitionId, IdError> {
        let (name, domain) = text.split_once('#').ok_or_else(|| IdError::BadForm {
            text: text.to_string(),
            form: "name#domain",
        })?;
        AssetDefinitionId::new(name, domain)
    }
}

impl FromStr for AssetId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<AssetId, IdError> {
        let bad = || IdError::BadForm {
            text: text.to_string(),
            form: "name#domain#account@domain",
        };
        let mut parts = text.splitn(3, '#');
        let (name, domain, account) = match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(domain), Some(account)) => (name, domain, account),
            _ => return Err(bad()),
        };
        Ok(AssetId {
            definition: AssetDefinitionId::new(name, domain)?,
            account: account.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        let asset: AssetId = "rose#wonderland#alice@wonderland".parse().expect("parse");
        assert_eq!(asset.to_string(), "rose#wonderland#alice@wonderland");
        assert_eq!(asset.account.to_string(), "alice@wonderland");
        assert!("alice".parse::<AccountId>().is_err());
        assert!("a b@c".parse::<AccountId>().is_err());
        assert!(Name::new(&"x".repeat(NAME_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn decoding_checks_names() {
        let bytes = postcard::to_stdvec(&"bad name".to_string()).expect("encode");
        assert!(postcard::from_bytes::<Name>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&"good".to_string()).expect("encode");
        assert_eq!(postcard::from_bytes::<Name>(&bytes).expect("decode").as_str(), "good");
    }
}
