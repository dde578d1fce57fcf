//! The state commitment: commitment(h) = blake2b-256(domain || commitment(h-1) || sorted writes).
//!
//! The writes of a block are its final (key, value) pairs, one per key it touched, deleted keys
//! included. Each key is encoded as a one-byte table tag followed by the postcard encoding of
//! its identifier, each value as 0x00 (deleted) or 0x01 followed by the postcard encoding of the
//! value; pairs are sorted by key bytes and hashed as length-prefixed byte strings. Two peers
//! that applied the same blocks to the same genesis hold the same commitment, whatever order
//! their hash maps iterate in.

use kasane_model::codec;
use kasane_model::hash::{Blake2b256, Hash};
use kasane_model::transaction::ChainId;
use kasane_model::PublicKey;

use crate::layer::BlockChanges;

const COMMITMENT_DOMAIN: &[u8] = b"kasane:state:v1";
const GENESIS_DOMAIN: &[u8] = b"kasane:state-genesis:v1";

pub(crate) const TAG_DOMAIN: u8 = 1;
pub(crate) const TAG_ACCOUNT: u8 = 2;
pub(crate) const TAG_ASSET_DEFINITION: u8 = 3;
pub(crate) const TAG_ASSET: u8 = 4;
pub(crate) const TAG_PEER: u8 = 5;
pub(crate) const TAG_RETIRED: u8 = 6;
pub(crate) const TAG_STORE: u8 = 7;

/// The commitment before the genesis block: it binds the chain id and the genesis key, which
/// determine the initial world (the genesis domain and authority).
pub fn initial_commitment(chain: &ChainId, genesis_key: &PublicKey) -> Hash {
    Hash::of_parts(&[GENESIS_DOMAIN, chain.as_str().as_bytes(), &genesis_key.0])
}

/// State entries (the writes of a block, or a whole world for a snapshot), encoded into two
/// flat buffers to avoid an allocation per entry.
pub(crate) struct Encoded {
    bytes: Vec<u8>,
    /// (key start, key end, value end); the value follows its key in `bytes`.
    entries: Vec<(usize, usize, usize)>,
}

impl Encoded {
    pub(crate) fn with_capacity(entries: usize) -> Encoded {
        Encoded {
            bytes: Vec::with_capacity(entries * 96),
            entries: Vec::with_capacity(entries),
        }
    }

    pub(crate) fn push<K: serde::Serialize, V: serde::Serialize>(&mut self, tag: u8, key: &K, value: Option<&V>) {
        let start = self.bytes.len();
        self.bytes.push(tag);
        codec::encode_body_into(key, &mut self.bytes);
        let key_end = self.bytes.len();
        match value {
            None => self.bytes.push(0),
            Some(value) => {
                self.bytes.push(1);
                codec::encode_body_into(value, &mut self.bytes);
            }
        }
        self.entries.push((start, key_end, self.bytes.len()));
    }

    /// Orders the entries by key bytes: the one order every peer agrees on.
    pub(crate) fn sort(&mut self) {
        let bytes = &self.bytes;
        self.entries
            .sort_unstable_by(|a, b| bytes[a.0..a.1].cmp(&bytes[b.0..b.1]));
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// (key, value) byte strings in the current order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .map(|&(start, key_end, end)| (&self.bytes[start..key_end], &self.bytes[key_end..end]))
    }
}

/// The commitment after a block with `changes` on top of `previous`.
pub fn next_commitment(previous: &Hash, changes: &BlockChanges) -> Hash {
    use blake2::Digest;
    let mut encoded = Encoded::with_capacity(changes.len());
    for (key, value) in &changes.domains {
        encoded.push(TAG_DOMAIN, key, value.as_ref());
    }
    for (key, value) in &changes.accounts {
        encoded.push(TAG_ACCOUNT, key, value.as_ref());
    }
    for (key, value) in &changes.asset_definitions {
        encoded.push(TAG_ASSET_DEFINITION, key, value.as_ref());
    }
    for (key, balance) in &changes.assets {
        encoded.push(TAG_ASSET, key, (*balance != 0).then_some(balance));
    }
    for (key, present) in &changes.peers {
        encoded.push(TAG_PEER, key, present.then_some(&()));
    }
    for key in changes.retired.keys() {
        encoded.push(TAG_RETIRED, key, Some(&()));
    }
    for (key, value) in &changes.store {
        encoded.push(TAG_STORE, key, value.as_ref());
    }
    encoded.sort();
    let mut hasher = Blake2b256::new();
    hasher.update(COMMITMENT_DOMAIN);
    hasher.update(previous.as_bytes());
    hasher.update((encoded.len() as u64).to_le_bytes());
    for (key, value) in encoded.iter() {
        hasher.update((key.len() as u32).to_le_bytes());
        hasher.update(key);
        hasher.update((value.len() as u32).to_le_bytes());
        hasher.update(value);
    }
    Hash(hasher.finalize().into())
}
