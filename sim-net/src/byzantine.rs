//! What Byzantine replicas do. A Byzantine replica runs the honest core; its behaviour
//! rewrites, multiplies, delays or withholds what leaves it, and the coalition behaviours also
//! act on what reaches it: they vote for every block they see, whatever their lock, and for the
//! conflicting blocks their coalition shows other peers.

use std::collections::BTreeMap;

use kasane_consensus::{Message, SignedVote, Topology, ViewChangeVote};
use kasane_model::block::{Vote, VoteKind};
use kasane_model::{Hash, KeyPair};

use crate::config::Behaviour;
use crate::rng::Rng;

/// Messages a `replay` replica remembers to send again later.
const REPLAY_MEMORY: usize = 64;
/// How much a `slow-signer` delays everything it sends.
pub const SLOW_SIGNER_DELAY_MS: u64 = 400;
/// Blocks the coalition remembers per (height, view).
const COALITION_BLOCKS_MAX: usize = 64;

/// What the Byzantine replicas of a run share: the blocks their leaders showed to some peers,
/// by (height, view), so the others can vote for all of them.
#[derive(Debug, Default)]
pub struct Coalition {
    blocks: BTreeMap<(u64, u64), Vec<Hash>>,
}

impl Coalition {
    fn remember(&mut self, height: u64, view: u64, hash: Hash) {
        let blocks = self.blocks.entry((height, view)).or_default();
        if !blocks.contains(&hash) && blocks.len() < COALITION_BLOCKS_MAX {
            blocks.push(hash);
        }
        // Older heights are of no use any more.
        while self.blocks.len() > 64 {
            self.blocks.pop_first();
        }
    }

    fn blocks(&self, height: u64, view: u64) -> Vec<Hash> {
        self.blocks.get(&(height, view)).cloned().unwrap_or_default()
    }
}

/// A Byzantine replica's state: what it remembers to replay, when it is silent, what it voted.
#[derive(Debug, Default)]
pub struct Mischief {
    sent: Vec<Message>,
    silent_until_ms: u64,
    /// Votes this replica's coalition side already sent, so it sends each once.
    voted: std::collections::BTreeSet<(VoteKind, u64, u64, Hash)>,
}

/// Who a message goes to and with what extra delay.
pub type Outgoing = Vec<(u64, Message)>;

impl Mischief {
    /// What actually goes to `to` when a replica with `behaviour` sends `message` at `now_ms`:
    /// each item is an extra delay in ms and a message.
    #[allow(clippy::too_many_arguments)]
    pub fn outgoing(
        &mut self,
        behaviour: Behaviour,
        key: &KeyPair,
        to: usize,
        message: &Message,
        now_ms: u64,
        rng: &mut Rng,
        coalition: &mut Coalition,
    ) -> Outgoing {
        let same = || vec![(0, message.clone())];
        match behaviour {
            Behaviour::Honest | Behaviour::VoteAll => same(),
            Behaviour::Silent => Vec::new(),
            Behaviour::WithholdCommit { .. } | Behaviour::WithholdBodies => withheld(behaviour, to, message),
            Behaviour::Equivocate
            | Behaviour::EquivocatePerPeer
            | Behaviour::InvalidBlock
            | Behaviour::MisstatedHeader => vec![(0, rewritten(behaviour, key, to, message, rng, coalition))],
            Behaviour::DoubleVote | Behaviour::Forge | Behaviour::Replay => {
                self.multiplied(behaviour, key, message, rng)
            }
            Behaviour::ViewChangeSpam | Behaviour::FarFutureViews | Behaviour::DigestSpam => {
                spam(behaviour, key, message, rng)
            }
            Behaviour::VoteThenSilent { silent_ms } => {
                if now_ms < self.silent_until_ms {
                    return Vec::new();
                }
                if matches!(message, Message::Vote(vote) if vote.vote.kind == VoteKind::Commit) {
                    self.silent_until_ms = now_ms + silent_ms;
                }
                same()
            }
            Behaviour::Mutate { per_million } => {
                let out = if rng.chance(per_million) {
                    mutation_of(message, key, &self.sent, rng)
                } else {
                    message.clone()
                };
                if matches!(message, Message::Proposal(_)) {
                    self.remember_sent(message, rng);
                }
                vec![(0, out)]
            }
            Behaviour::SlowSigner => vec![(SLOW_SIGNER_DELAY_MS, message.clone())],
        }
    }

    /// The message and a second one: another vote, a forgery, or an old message again.
    fn multiplied(&mut self, behaviour: Behaviour, key: &KeyPair, message: &Message, rng: &mut Rng) -> Outgoing {
        let mut out = vec![(0, message.clone())];
        match behaviour {
            Behaviour::DoubleVote => {
                if let Message::Vote(vote) = message {
                    let mut other = vote.vote;
                    other.block_hash = Hash::of(other.block_hash.as_bytes());
                    out.push((0, Message::Vote(SignedVote::new(other, key))));
                }
            }
            Behaviour::Forge => out.extend(forgery_of(message).map(|forged| (0, forged))),
            _ => {
                if !self.sent.is_empty() {
                    let old = self.sent[rng.below(self.sent.len() as u64) as usize].clone();
                    out.push((rng.between(0, 200), old));
                }
                self.remember_sent(message, rng);
            }
        }
        out
    }

    fn remember_sent(&mut self, message: &Message, rng: &mut Rng) {
        if self.sent.len() < REPLAY_MEMORY {
            self.sent.push(message.clone());
        } else {
            let slot = rng.below(REPLAY_MEMORY as u64) as usize;
            self.sent[slot] = message.clone();
        }
    }

    /// What a coalition replica sends, beyond its honest core, on receiving `message` when its
    /// topology is `topology` at `height`: a Prepare vote for every proposed block of its height
    /// and every block its coalition showed others in that view, and a Commit vote for every
    /// prepare certificate, to the view's proxy tail, whatever its lock. Each vote once.
    pub fn incoming(
        &mut self,
        behaviour: Behaviour,
        key: &KeyPair,
        message: &Message,
        height: u64,
        topology: &Topology,
        coalition: &Coalition,
    ) -> Vec<(kasane_model::PublicKey, Message)> {
        if behaviour != Behaviour::VoteAll {
            return Vec::new();
        }
        let (kind, vote_height, view, hashes) = match message {
            Message::Proposal(proposal) => {
                let mut hashes = coalition.blocks(proposal.height, proposal.view);
                hashes.push(proposal.block.hash());
                (VoteKind::Prepare, proposal.height, proposal.view, hashes)
            }
            Message::ProposalDigest(digest) => {
                let mut hashes = coalition.blocks(digest.height, digest.view);
                hashes.push(digest.header.hash());
                (VoteKind::Prepare, digest.height, digest.view, hashes)
            }
            Message::PrepareCertificate(certificate) => (
                VoteKind::Commit,
                certificate.vote.height,
                certificate.vote.view,
                vec![certificate.vote.block_hash],
            ),
            _ => return Vec::new(),
        };
        let Some(proxy_tail) = topology.proxy_tail(view).filter(|_| vote_height == height) else {
            return Vec::new();
        };
        hashes
            .into_iter()
            .filter(|hash| self.voted.insert((kind, vote_height, view, *hash)))
            .map(|block_hash| {
                let vote = Vote {
                    kind,
                    height: vote_height,
                    view,
                    block_hash,
                };
                (proxy_tail, Message::Vote(SignedVote::new(vote, key)))
            })
            .collect()
    }
}

/// What a withholding replica lets through to `to`.
fn withheld(behaviour: Behaviour, to: usize, message: &Message) -> Outgoing {
    let hidden = match behaviour {
        // Withholding the commit means withholding every way to learn of it: the certificate,
        // the status that announces the new height, and block sync.
        Behaviour::WithholdCommit { victim } => {
            to != victim
                && matches!(
                    message,
                    Message::CommitCertificate(_) | Message::Status { .. } | Message::BlockSyncResponse { .. }
                )
        }
        _ => matches!(
            message,
            Message::TransactionsFound { .. } | Message::BlockFound(_) | Message::BlockSyncResponse { .. }
        ),
    };
    if hidden {
        Vec::new()
    } else {
        vec![(0, message.clone())]
    }
}

/// A rewritten proposal of a misbehaving leader (other messages as they are).
fn rewritten(
    behaviour: Behaviour,
    key: &KeyPair,
    to: usize,
    message: &Message,
    rng: &mut Rng,
    coalition: &mut Coalition,
) -> Message {
    match behaviour {
        Behaviour::Equivocate if to % 2 == 1 => equivocation_of(message, 1),
        Behaviour::EquivocatePerPeer => {
            let variant = equivocation_of(message, to as u64 + 1);
            if let Message::Proposal(proposal) = &variant {
                coalition.remember(proposal.height, proposal.view, proposal.block.hash());
            }
            variant
        }
        Behaviour::InvalidBlock => invalid_block_of(message),
        Behaviour::MisstatedHeader => misstated_header_of(message, key, rng),
        _ => message.clone(),
    }
}

/// The message, and with every status some noise: view-change votes for random or far-future
/// views, a lie about its height, or digests nobody can rebuild.
fn spam(behaviour: Behaviour, key: &KeyPair, message: &Message, rng: &mut Rng) -> Outgoing {
    let Message::Status { height, head_hash } = message else {
        return match (behaviour, message) {
            (Behaviour::FarFutureViews, Message::BlockSyncResponse { .. }) => Vec::new(),
            _ => vec![(0, message.clone())],
        };
    };
    match behaviour {
        Behaviour::ViewChangeSpam => {
            // Properly signed votes for views nobody else wants: one signer must not be able to
            // move anyone (R14 needs f + 1).
            let mut out = vec![(0, message.clone())];
            for _ in 0..4 {
                let view = rng.between(1, 300);
                out.push((0, Message::ViewChange(ViewChangeVote::new(height + 1, view, None, key))));
            }
            out
        }
        Behaviour::FarFutureViews => {
            let view = rng.between(1_000, 1_000_000);
            let vote = ViewChangeVote::new(height + 1, view, None, key);
            // A claim of a height it does not have, so peers ask it for blocks.
            let lie = Message::Status {
                height: height + 1_000,
                head_hash: *head_hash,
            };
            vec![
                (0, lie),
                (0, Message::ViewChange(vote.clone())),
                // A "proof" of one signer, repeated: a quorum in count, not in validators.
                (0, Message::ViewChangeProof(vec![vote.clone(), vote.clone(), vote])),
            ]
        }
        _ => vec![
            (0, message.clone()),
            (0, Message::ProposalDigest(Box::new(spam_digest(height + 1, key, rng)))),
        ],
    }
}

/// The other block an equivocating leader shows a peer: its own new proposals get a timestamp
/// `shift` milliseconds later, which changes the block hash and nothing else.
fn equivocation_of(message: &Message, shift: u64) -> Message {
    match message {
        Message::Proposal(proposal) if proposal.justify.is_none() => {
            let mut other = proposal.clone();
            other.block.header.timestamp_ms += shift;
            Message::Proposal(other)
        }
        other => other.clone(),
    }
}

/// A digest of a block nobody can assemble: its transactions exist nowhere.
fn spam_digest(height: u64, key: &KeyPair, rng: &mut Rng) -> kasane_consensus::message::ProposalDigest {
    kasane_consensus::message::ProposalDigest {
        height,
        view: 0,
        header: kasane_model::BlockHeader {
            height,
            previous_hash: Hash::of(&rng.next_u64().to_le_bytes()),
            view: 0,
            proposer: key.public_key(),
            tx_merkle_root: Hash::ZERO,
            state_commitment: Hash::ZERO,
            timestamp_ms: 0,
            view_change_proof: None,
        },
        transactions: (0..4).map(|_| Hash::of(&rng.next_u64().to_le_bytes())).collect(),
        justify: None,
        proof: Vec::new(),
    }
}

/// A new proposal whose header misstates its view or its proposer: honest validators refuse it
/// (R5) before any of it reaches the ledger's record of failed views.
fn misstated_header_of(message: &Message, key: &KeyPair, rng: &mut Rng) -> Message {
    match message {
        Message::Proposal(proposal) if proposal.justify.is_none() => {
            let mut bad = proposal.clone();
            let header = &mut bad.block.header;
            match rng.below(3) {
                0 if header.view > 0 => {
                    header.view = 0;
                    header.view_change_proof = None;
                }
                0 | 1 => header.view += 1,
                _ => {
                    header.proposer =
                        KeyPair::derive(b"kasane-sim-misstated", key.public_key().0[0].into()).public_key()
                }
            }
            Message::Proposal(bad)
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

/// One small-scope mutation (ByzzFuzz): a view or height one off, re-signed where the message
/// is this replica's own vote, or an old proposal sent again.
fn mutation_of(message: &Message, key: &KeyPair, sent: &[Message], rng: &mut Rng) -> Message {
    let up = rng.below(2) == 0;
    let shift = |value: u64| if up { value + 1 } else { value.saturating_sub(1) };
    let on_height = rng.below(2) == 0;
    match message {
        Message::Vote(vote) => {
            let mut changed = vote.vote;
            if on_height {
                changed.height = shift(changed.height);
            } else {
                changed.view = shift(changed.view);
            }
            Message::Vote(SignedVote::new(changed, key))
        }
        Message::ViewChange(vote) => {
            let (height, view) = if on_height {
                (shift(vote.height), vote.view)
            } else {
                (vote.height, shift(vote.view))
            };
            Message::ViewChange(ViewChangeVote::new(height, view, vote.highest.clone(), key))
        }
        Message::Proposal(proposal) => {
            if !sent.is_empty() && rng.below(3) == 0 {
                return sent[rng.below(sent.len() as u64) as usize].clone();
            }
            let mut changed = proposal.clone();
            if on_height {
                changed.height = shift(changed.height);
            } else {
                changed.view = shift(changed.view);
            }
            Message::Proposal(changed)
        }
        Message::PrepareCertificate(certificate) | Message::CommitCertificate(certificate) => {
            let mut changed = certificate.clone();
            if on_height {
                changed.vote.height = shift(changed.vote.height);
            } else {
                changed.vote.view = shift(changed.vote.view);
            }
            match message {
                Message::PrepareCertificate(_) => Message::PrepareCertificate(changed),
                _ => Message::CommitCertificate(changed),
            }
        }
        Message::Status { height, head_hash } => Message::Status {
            height: shift(*height),
            head_hash: *head_hash,
        },
        other => other.clone(),
    }
}
