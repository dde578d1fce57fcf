//! Deliberate misbehaviour, for fault-injection experiments only (`kasane node
//! --unsafe-byzantine MODE`, used by `kasane testnet`).
//!
//! A Byzantine node runs the honest replica; what leaves it is rewritten by the same code that
//! plays Byzantine replicas in the simulator ([`kasane_sim_net::byzantine::Mischief`]), so a
//! behaviour means the same thing in sim-net and on a real cluster. Messages to itself are left
//! alone.

use std::fmt;
use std::str::FromStr;

use kasane_consensus::Message;
use kasane_model::{KeyPair, PublicKey};
use kasane_p2p::Network;
use kasane_sim_net::byzantine::{Coalition, Mischief};
use kasane_sim_net::rng::Rng;
use kasane_sim_net::Behaviour;

/// The behaviours a real node can be told to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByzantineMode {
    /// Sends nothing.
    Silent,
    /// As leader, shows half the peers one block and the other half another.
    Equivocate,
    /// As proxy tail, lets only the node at `victim` (its index in the cluster's peer list)
    /// learn of commits, and never commits itself.
    WithholdCommit { victim: usize },
    /// As leader, proposes blocks no honest validator accepts.
    InvalidBlock,
}

impl ByzantineMode {
    pub fn behaviour(self) -> Behaviour {
        match self {
            ByzantineMode::Silent => Behaviour::Silent,
            ByzantineMode::Equivocate => Behaviour::Equivocate,
            ByzantineMode::WithholdCommit { victim } => Behaviour::WithholdCommit { victim },
            ByzantineMode::InvalidBlock => Behaviour::InvalidBlock,
        }
    }

    /// Whether the replica's own commit step is skipped (withholding the commit from itself).
    pub fn skips_own_commit(self) -> bool {
        matches!(self, ByzantineMode::WithholdCommit { .. })
    }
}

impl fmt::Display for ByzantineMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByzantineMode::Silent => write!(f, "silent"),
            ByzantineMode::Equivocate => write!(f, "equivocate"),
            ByzantineMode::WithholdCommit { victim } => write!(f, "withhold-commit:{victim}"),
            ByzantineMode::InvalidBlock => write!(f, "invalid-block"),
        }
    }
}

impl FromStr for ByzantineMode {
    type Err = String;

    fn from_str(text: &str) -> Result<ByzantineMode, String> {
        match text {
            "silent" => Ok(ByzantineMode::Silent),
            "equivocate" => Ok(ByzantineMode::Equivocate),
            "invalid-block" => Ok(ByzantineMode::InvalidBlock),
            other => match other.strip_prefix("withhold-commit:") {
                Some(victim) => victim
                    .parse()
                    .map(|victim| ByzantineMode::WithholdCommit { victim })
                    .map_err(|_| format!("withhold-commit:{victim}: the victim must be a node index")),
                None => Err(format!(
                    "unknown Byzantine behaviour {other:?}: expected silent, equivocate, invalid-block or \
                     withhold-commit:<node index>"
                )),
            },
        }
    }
}

/// Rewrites what a Byzantine node sends.
pub struct Saboteur {
    behaviour: Behaviour,
    mischief: Mischief,
    /// What the node's coalition shares; a real Byzantine node is a coalition of one.
    coalition: Coalition,
    rng: Rng,
    key: KeyPair,
    /// Every node of the cluster in the config's order (this node included): a peer's index
    /// is its position here.
    nodes: Vec<PublicKey>,
}

impl fmt::Debug for Saboteur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Saboteur").field("behaviour", &self.behaviour).finish()
    }
}

impl Saboteur {
    pub fn new(mode: ByzantineMode, key: KeyPair, nodes: Vec<PublicKey>) -> Saboteur {
        let seed = u64::from_le_bytes(key.public_key().0[..8].try_into().unwrap_or([0; 8]));
        Saboteur {
            behaviour: mode.behaviour(),
            mischief: Mischief::default(),
            coalition: Coalition::default(),
            rng: Rng::new(seed),
            key,
            nodes,
        }
    }

    pub fn send(&mut self, network: &Network, to: &PublicKey, message: &Message) {
        let index = self.nodes.iter().position(|node| node == to).unwrap_or(usize::MAX);
        let now_ms = super::runtime::now_ms();
        for (_, rewritten) in self.mischief.outgoing(
            self.behaviour,
            &self.key,
            index,
            message,
            now_ms,
            &mut self.rng,
            &mut self.coalition,
        ) {
            network.send(to, &rewritten);
        }
    }

    pub fn broadcast(&mut self, network: &Network, message: &Message) {
        let me = self.key.public_key();
        for index in 0..self.nodes.len() {
            let to = self.nodes[index];
            if to != me {
                self.send(network, &to, message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_back() {
        for text in ["silent", "equivocate", "invalid-block", "withhold-commit:2"] {
            let mode: ByzantineMode = text.parse().unwrap();
            assert_eq!(mode.to_string(), text);
        }
        assert!("withhold-commit:x".parse::<ByzantineMode>().is_err());
        assert!("honest".parse::<ByzantineMode>().is_err());
        assert!("withhold-commit:1".parse::<ByzantineMode>().unwrap().skips_own_commit());
        assert!(!ByzantineMode::Silent.skips_own_commit());
    }
}
