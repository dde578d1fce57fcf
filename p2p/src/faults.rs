//! Fault hooks for experiments: per-peer rules to drop, delay or cut traffic. Rules come from the
//! node's config and can be replaced at runtime through the admin endpoint. A cut applies in both
//! directions on this node (nothing sent to the peer, nothing accepted from it), so cutting the
//! same pairs on both sides of a partition is not needed for it to hold.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use kasane_model::PublicKey;
use serde::{Deserialize, Serialize};

/// What to do to traffic with one peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Drop everything to and from the peer (a partition).
    #[serde(default)]
    pub cut: bool,
    /// Probability in [0, 1] of dropping each message, in either direction.
    #[serde(default)]
    pub drop_rate: f64,
    /// Extra delay before a message received from the peer is delivered.
    #[serde(default)]
    pub delay_ms: u64,
}

/// The rules of one node, keyed by the peer's public key in hex, or "*" for every peer without
/// a rule of its own. This is the form of the config file and the admin endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRules {
    #[serde(default)]
    pub peers: BTreeMap<String, FaultRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum FaultRuleError {
    #[error("fault rule for {key:?}: not a public key in hex and not \"*\"")]
    BadKey { key: String },
    #[error("fault rule for {key:?}: drop_rate {rate} is not within [0, 1]")]
    BadRate { key: String, rate: f64 },
    #[error("fault rule for {key:?}: delay_ms {delay_ms} is over the limit of 600000")]
    BadDelay { key: String, delay_ms: u64 },
}

/// Parsed rules.
#[derive(Debug, Clone, Default)]
struct Parsed {
    default: Option<FaultRule>,
    peers: BTreeMap<PublicKey, FaultRule>,
}

impl FaultRules {
    fn parse(&self) -> Result<Parsed, FaultRuleError> {
        let mut parsed = Parsed::default();
        for (key, rule) in &self.peers {
            if !(0.0..=1.0).contains(&rule.drop_rate) {
                return Err(FaultRuleError::BadRate {
                    key: key.clone(),
                    rate: rule.drop_rate,
                });
            }
            if rule.delay_ms > 600_000 {
                return Err(FaultRuleError::BadDelay {
                    key: key.clone(),
                    delay_ms: rule.delay_ms,
                });
            }
            if key == "*" {
                parsed.default = Some(rule.clone());
            } else {
                let public = PublicKey::from_hex(key).map_err(|_| FaultRuleError::BadKey { key: key.clone() })?;
                parsed.peers.insert(public, rule.clone());
            }
        }
        Ok(parsed)
    }
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Deliver,
    Delay(Duration),
    Drop,
}

/// The live rules of a node and the randomness for drop rates.
#[derive(Debug, Default)]
pub struct Faults {
    rules: RwLock<(FaultRules, Parsed)>,
    rng: Mutex<u64>,
}

impl Faults {
    pub fn new(rules: FaultRules) -> Result<Faults, FaultRuleError> {
        let parsed = rules.parse()?;
        let mut seed = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        Ok(Faults {
            rules: RwLock::new((rules, parsed)),
            rng: Mutex::new(u64::from_le_bytes(seed) | 1),
        })
    }

    /// Replaces every rule at once.
    pub fn set(&self, rules: FaultRules) -> Result<(), FaultRuleError> {
        let parsed = rules.parse()?;
        if let Ok(mut live) = self.rules.write() {
            *live = (rules, parsed);
        }
        Ok(())
    }

    pub fn get(&self) -> FaultRules {
        self.rules.read().map(|live| live.0.clone()).unwrap_or_default()
    }

    fn rule(&self, peer: &PublicKey) -> Option<FaultRule> {
        let live = self.rules.read().ok()?;
        live.1.peers.get(peer).or(live.1.default.as_ref()).cloned()
    }

    fn roll(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        let Ok(mut state) = self.rng.lock() else {
            return true;
        };
        // xorshift64*: fast, and drop decisions need no cryptographic strength.
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let value = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        (value as f64 / (1u64 << 53) as f64) < rate
    }

    /// The fate of a message sent to `peer`.
    pub fn outgoing(&self, peer: &PublicKey) -> Fate {
        match self.rule(peer) {
            Some(rule) if rule.cut || self.roll(rule.drop_rate) => Fate::Drop,
            _ => Fate::Deliver,
        }
    }

    /// The fate of a message received from `peer`.
    pub fn incoming(&self, peer: &PublicKey) -> Fate {
        match self.rule(peer) {
            None => Fate::Deliver,
            Some(rule) if rule.cut || self.roll(rule.drop_rate) => Fate::Drop,
            Some(rule) if rule.delay_ms > 0 => Fate::Delay(Duration::from_millis(rule.delay_ms)),
            Some(_) => Fate::Deliver,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kasane_model::KeyPair;

    fn rules(entries: &[(&str, FaultRule)]) -> FaultRules {
        FaultRules {
            peers: entries
                .iter()
                .map(|(key, rule)| (key.to_string(), rule.clone()))
                .collect(),
        }
    }

    #[test]
    fn cut_drops_both_ways_and_only_for_that_peer() {
        let a = KeyPair::derive(b"faults", 1).public_key();
        let b = KeyPair::derive(b"faults", 2).public_key();
        let cut = FaultRule {
            cut: true,
            ..FaultRule::default()
        };
        let faults = Faults::new(rules(&[(&a.to_hex(), cut)])).expect("rules");
        assert_eq!(faults.outgoing(&a), Fate::Drop);
        assert_eq!(faults.incoming(&a), Fate::Drop);
        assert_eq!(faults.outgoing(&b), Fate::Deliver);
        faults.set(FaultRules::default()).expect("clear");
        assert_eq!(faults.incoming(&a), Fate::Deliver);
    }

    #[test]
    fn wildcard_delay_and_drop_rate() {
        let a = KeyPair::derive(b"faults", 1).public_key();
        let delay = FaultRule {
            delay_ms: 25,
            ..FaultRule::default()
        };
        let faults = Faults::new(rules(&[("*", delay)])).expect("rules");
        assert_eq!(faults.incoming(&a), Fate::Delay(Duration::from_millis(25)));
        assert_eq!(faults.outgoing(&a), Fate::Deliver);
        let half = FaultRule {
            drop_rate: 0.5,
            ..FaultRule::default()
        };
        faults.set(rules(&[("*", half)])).expect("rules");
        let dropped = (0..10_000).filter(|_| faults.outgoing(&a) == Fate::Drop).count();
        assert!(
            (4_000..6_000).contains(&dropped),
            "{dropped} of 10000 dropped at rate 0.5"
        );
    }

    #[test]
    fn bad_rules_are_refused_and_leave_the_old_ones() {
        let faults = Faults::new(FaultRules::default()).expect("rules");
        let rate = FaultRule {
            drop_rate: 1.5,
            ..FaultRule::default()
        };
        assert!(faults.set(rules(&[("*", rate)])).is_err());
        assert!(faults.set(rules(&[("not-hex", FaultRule::default())])).is_err());
        assert_eq!(faults.get(), FaultRules::default());
    }
}
