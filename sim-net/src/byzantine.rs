//! What Byzantine replicas do to the messages they send. A Byzantine replica runs the honest
//! core; its behaviour rewrites, multiplies, delays or withholds what leaves it.

use kasane_consensus::{Message, SignedVote, ViewChangeVote};
use kasane_model::{Hash, KeyPair};

use crate::config::Behaviour;
use crate::rng::Rng;

/// Messages a `replay` replica remembers to send again later.
const REPLAY_MEMORY: usize = 64;
/// How much a `slow-signer` delays everything it sends.
pub const SLOW_SIGNER_DELAY_MS: u64 = 400;

/// A Byzantine replica's state: what it remembers to replay.
#[derive(Debug, Default)]
pub struct Mischief {
    sent: Vec<Message>,
}

impl Mischief {
    /// What actually goes to `to` when a replica with `behaviour` sends `message`: each item is
    /// an extra delay in ms and a message.
    pub fn outgoing(
        &mut self,
        behaviour: Behaviour,
        key: &KeyPair,
        to: usize,
        message: &Message,
        rng: &mut Rng,
    ) -> Vec<(u64, Message)> {
        match behaviour {
            Behaviour::Honest => vec![(0, message.clone())],
            Behaviour::Silent => Vec::new(),
            // Withholding the commit means withholding every way to learn of it: the
            // certificate, the status that announces the new height, and block sync.
            Behaviour::WithholdCommit { victim } => {
                let hides = matches!(
                    message,
                    Message::CommitCertificate(_) | Message::Status { .. } | Message::BlockSyncResponse { .. }
                );
                if to == victim || !hides {
                    vec![(0, message.clone())]
                } else {
                    Vec::new()
                }
            }
            Behaviour::Equivocate if to % 2 == 1 => vec![(0, equivocation_of(message))],
            Behaviour::Equivocate => vec![(0, message.clone())],
            Behaviour::InvalidBlock => vec![(0, invalid_block_of(message))],
            Behaviour::DoubleVote => {
                let mut out = vec![(0, message.clone())];
                if let Message::Vote(vote) = message {
                    let mut other = vote.vote;
                    other.block_hash = Hash::of(other.block_hash.as_bytes());
                    out.push((0, Message::Vote(SignedVote::new(other, key))));
                }
                out
            }
            Behaviour::Forge => {
                let mut out = vec![(0, message.clone())];
                if let Some(forged) = forgery_of(message) {
                    out.push((0, forged));
                }
                out
            }
            Behaviour::Replay => {
                let mut out = vec![(0, message.clone())];
                if !self.sent.is_empty() {
                    let old = self.sent[rng.below(self.sent.len() as u64) as usize].clone();
                    out.push((rng.between(0, 200), old));
                }
                if self.sent.len() < REPLAY_MEMORY {
                    self.sent.push(message.clone());
                } else {
                    let slot = rng.below(REPLAY_MEMORY as u64) as usize;
                    self.sent[slot] = message.clone();
                }
                out
            }
            Behaviour::ViewChangeSpam => {
                let mut out = vec![(0, message.clone())];
                if let Message::Status { height, .. } = message {
                    // Properly signed votes for views nobody else wants: one signer must not be
                    // able to move anyone (R14 needs f + 1).
                    for _ in 0..4 {
                        let view = rng.between(1, 300);
                        out.push((0, Message::ViewChange(ViewChangeVote::new(height + 1, view, None, key))));
                    }
                }
                out
            }
            Behaviour::SlowSigner => vec![(SLOW_SIGNER_DELAY_MS, message.clone())],
        }
    }
}

/// The other block an equivocating leader shows half the cluster: its own new proposals get a
/// timestamp one millisecond later, which changes the block hash and nothing else.
fn equivocation_of(message: &Message) -> Message {
    match message {
        Message::Proposal(proposal) if proposal.justify.is_none() => {
            let mut other = proposal.clone();
            other.block.header.timestamp_ms += 1;
            Message::Proposal(other)
        }
        other => other.clone(),
    }
}

/// A new proposal that no honest validator accepts: at even heights a state commitment no
/// execution produces, at odd heights a transaction whose signature is broken.
fn invalid_block_of(message: &Message) -> Message {
    match message {
        Message::Proposal(proposal) if proposal.justify.is_none() => {
            let mut bad = proposal.clone();
            if bad.height % 2 == 0 {
                bad.block.header.state_commitment = Hash::of(b"not the state");
            } else if let Some(signature) = bad
                .block
                .transactions
                .first_mut()
                .and_then(|t| t.signatures.first_mut())
            {
                signature.signature.0[0] ^= 0x40;
            }
            Message::Proposal(bad)
        }
        other => other.clone(),
    }
}

/// A copy of a signed message with its signature broken.
fn forgery_of(message: &Message) -> Option<Message> {
    match message {
        Message::Vote(vote) => {
            let mut forged = vote.clone();
            forged.signature.signature.0[7] ^= 1;
            Some(Message::Vote(forged))
        }
        Message::ViewChange(vote) => {
            let mut forged = vote.clone();
            forged.signature.signature.0[7] ^= 1;
            Some(Message::ViewChange(forged))
        }
        Message::PrepareCertificate(certificate) | Message::CommitCertificate(certificate) => {
            let mut forged = certificate.clone();
            if let Some(signature) = forged.signatures.first_mut() {
                signature.signature.0[7] ^= 1;
            }
            Some(match message {
                Message::PrepareCertificate(_) => Message::PrepareCertificate(forged),
                _ => Message::CommitCertificate(forged),
            })
        }
        _ => None,
    }
}
