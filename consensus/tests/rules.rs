//! Step tables for the rules of docs/PROTOCOL.md: an input, the effects expected, the state
//! after. Four validators from the fixture genesis, deciding height 2.

use std::collections::BTreeSet;

use kasane_consensus::{
    Config, DropReason, Effect, Input, Message, Proposal, Role, SignedVote, Sumeragi, Timer, ViewChangeVote,
};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_model::block::{Certificate, Vote, VoteKind};
use kasane_model::{Block, KeyPair, PublicKey};

struct Cluster {
    keys: Vec<KeyPair>,
    validators: BTreeSet<PublicKey>,
    chain: FixtureChain,
    block: Block,
}

fn cluster() -> Cluster {
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks: 1,
        transactions_per_block: 2,
        accounts: 4,
        validators: 4,
        seed: 9,
    })
    .expect("fixture");
    let keys = chain.validators.clone();
    let validators = keys.iter().map(KeyPair::public_key).collect();
    let fresh = FixtureChain::new(chain.config.clone()).expect("fixture");
    let (committed, _) = chain.next_block().expect("block");
    Cluster {
        keys,
        validators,
        chain: fresh,
        block: committed.block,
    }
}

impl Cluster {
    fn replica(&self, index: usize) -> Sumeragi {
        Sumeragi::new(
            self.keys[index].clone(),
            Config::default(),
            2,
            self.chain.genesis.block.hash(),
            &self.validators,
            None,
        )
    }

    /// The index of the validator with `role` in `view`.
    fn with_role(&self, role: Role, view: u64) -> usize {
        let replica = self.replica(0);
        (0..4)
            .find(|index| replica.topology().role(&self.keys[*index].public_key(), view) == role)
            .expect("role present")
    }

    /// Replica `index` after the view-0 leader's proposal reached it and validated.
    fn after_valid_proposal(&self, index: usize) -> (Sumeragi, Vec<Effect>) {
        let leader = self.with_role(Role::Leader, 0);
        let mut replica = self.replica(index);
        replica.step(Input::Message {
            from: self.key(leader),
            message: self.proposal(0, None),
        });
        let effects = replica.step(Input::BlockValidated {
            height: 2,
            hash: self.block.hash(),
            valid: true,
        });
        (replica, effects)
    }

    fn key(&self, index: usize) -> PublicKey {
        self.keys[index].public_key()
    }

    fn proposal(&self, view: u64, justify: Option<Certificate>) -> Message {
        Message::Proposal(Box::new(Proposal {
            height: 2,
            view,
            block: self.block.clone(),
            justify,
            proof: Vec::new(),
        }))
    }

    fn vote(&self, kind: VoteKind, view: u64) -> Vote {
        Vote {
            kind,
            height: 2,
            view,
            block_hash: self.block.hash(),
        }
    }

    fn certificate(&self, kind: VoteKind, view: u64, signers: &[usize]) -> Certificate {
        let keys: Vec<&KeyPair> = signers.iter().map(|index| &self.keys[*index]).collect();
        Certificate::sign(self.vote(kind, view), &keys)
    }
}

fn sends_vote(effects: &[Effect], kind: VoteKind) -> Option<PublicKey> {
    effects.iter().find_map(|effect| match effect {
        Effect::Send {
            to,
            message: Message::Vote(vote),
        } if vote.vote.kind == kind => Some(*to),
        _ => None,
    })
}

#[test]
fn r4_leader_builds_a_proposal_when_its_block_timer_fires() {
    let cluster = cluster();
    let leader = cluster.with_role(Role::Leader, 0);
    let mut replica = cluster.replica(leader);
    let effects = replica.step(Input::QueueLength(3));
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::ScheduleTimer {
            timer: Timer::BlockTime { height: 2, view: 0 },
            ..
        }
    )));
    let effects = replica.step(Input::TimerFired(Timer::BlockTime { height: 2, view: 0 }));
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::BuildProposal { height: 2, view: 0, .. })));
    // Not twice in one view.
    let effects = replica.step(Input::TimerFired(Timer::BlockTime { height: 2, view: 0 }));
    assert!(!effects.iter().any(|e| matches!(e, Effect::BuildProposal { .. })));
    // A validator that is not the leader never builds.
    let other = cluster.with_role(Role::ValidatingPeer, 0);
    let mut replica = cluster.replica(other);
    replica.step(Input::QueueLength(3));
    let effects = replica.step(Input::TimerFired(Timer::BlockTime { height: 2, view: 0 }));
    assert!(!effects.iter().any(|e| matches!(e, Effect::BuildProposal { .. })));
}

#[test]
fn r5_a_proposal_from_a_non_leader_is_dropped_and_a_valid_one_is_validated() {
    let cluster = cluster();
    let leader = cluster.with_role(Role::Leader, 0);
    let peer = cluster.with_role(Role::ValidatingPeer, 0);
    let mut replica = cluster.replica(peer);
    let effects = replica.step(Input::Message {
        from: cluster.key(peer),
        message: cluster.proposal(0, None),
    });
    assert!(effects.is_empty());
    assert_eq!(replica.counters().dropped.get(&DropReason::NotTheLeader), Some(&1));
    let effects = replica.step(Input::Message {
        from: cluster.key(leader),
        message: cluster.proposal(0, None),
    });
    assert!(effects.iter().any(|e| matches!(e, Effect::ValidateBlock { .. })));
}

#[test]
fn r6_r7_a_validated_proposal_gets_a_prepare_vote_to_the_proxy_tail() {
    let cluster = cluster();
    let peer = cluster.with_role(Role::ValidatingPeer, 0);
    let proxy_tail = cluster.with_role(Role::ProxyTail, 0);
    let (_, effects) = cluster.after_valid_proposal(peer);
    // The vote is made durable (R17) before it is sent.
    let persist = effects
        .iter()
        .position(|e| matches!(e, Effect::PersistLock { .. }))
        .expect("persist");
    let send = effects
        .iter()
        .position(|e| matches!(e, Effect::Send { .. }))
        .expect("send");
    assert!(persist < send);
    assert_eq!(sends_vote(&effects, VoteKind::Prepare), Some(cluster.key(proxy_tail)));
    // Observers (set B) do not vote in view 0.
    let observer = cluster.with_role(Role::Observer, 0);
    let (_, effects) = cluster.after_valid_proposal(observer);
    assert_eq!(sends_vote(&effects, VoteKind::Prepare), None);
}

#[test]
fn r7_the_proxy_tail_certifies_at_quorum_and_drops_forged_votes() {
    let cluster = cluster();
    let leader = cluster.with_role(Role::Leader, 0);
    let peer = cluster.with_role(Role::ValidatingPeer, 0);
    let proxy_tail = cluster.with_role(Role::ProxyTail, 0);
    let (mut replica, own) = cluster.after_valid_proposal(proxy_tail);
    assert!(!own.iter().any(|e| matches!(
        e,
        Effect::Broadcast {
            message: Message::PrepareCertificate(_)
        }
    )));
    // A vote signed by someone else than its sender is dropped.
    let forged = SignedVote::new(cluster.vote(VoteKind::Prepare, 0), &cluster.keys[leader]);
    replica.step(Input::Message {
        from: cluster.key(peer),
        message: Message::Vote(forged),
    });
    assert_eq!(replica.counters().dropped.get(&DropReason::SignerIsNotSender), Some(&1));
    let mut bad = SignedVote::new(cluster.vote(VoteKind::Prepare, 0), &cluster.keys[peer]);
    bad.signature.signature.0[0] ^= 1;
    replica.step(Input::Message {
        from: cluster.key(peer),
        message: Message::Vote(bad),
    });
    assert_eq!(replica.counters().dropped.get(&DropReason::BadSignature), Some(&1));
    let mut effects = Vec::new();
    for voter in [leader, peer] {
        let vote = SignedVote::new(cluster.vote(VoteKind::Prepare, 0), &cluster.keys[voter]);
        effects = replica.step(Input::Message {
            from: cluster.key(voter),
            message: Message::Vote(vote),
        });
    }
    assert!(effects.iter().any(
        |e| matches!(e, Effect::Broadcast { message: Message::PrepareCertificate(c) } if c.signatures.len() == 3)
    ));
}

#[test]
fn r8_a_prepare_certificate_locks_then_votes_commit() {
    let cluster = cluster();
    let leader = cluster.with_role(Role::Leader, 0);
    let peer = cluster.with_role(Role::ValidatingPeer, 0);
    let proxy_tail = cluster.with_role(Role::ProxyTail, 0);
    let (mut replica, _) = cluster.after_valid_proposal(peer);
    let certificate = cluster.certificate(VoteKind::Prepare, 0, &[leader, peer, proxy_tail]);
    let effects = replica.step(Input::Message {
        from: cluster.key(proxy_tail),
        message: Message::PrepareCertificate(certificate.clone()),
    });
    assert_eq!(replica.lock(), Some(&certificate));
    let persist = effects
        .iter()
        .position(|e| matches!(e, Effect::PersistLock { record } if record.lock.is_some()))
        .expect("lock persisted");
    let send = effects
        .iter()
        .position(|e| matches!(e, Effect::Send { .. }))
        .expect("commit vote");
    assert!(
        persist < send,
        "the lock is durable before the commit vote leaves (R17)"
    );
    assert_eq!(sends_vote(&effects, VoteKind::Commit), Some(cluster.key(proxy_tail)));
    // A certificate below quorum is dropped.
    let short = cluster.certificate(VoteKind::Prepare, 0, &[leader, peer]);
    replica.step(Input::Message {
        from: cluster.key(proxy_tail),
        message: Message::PrepareCertificate(short),
    });
    assert_eq!(replica.counters().dropped.get(&DropReason::BadCertificate), Some(&1));
}

#[test]
fn r6_a_locked_replica_refuses_another_block_without_a_higher_certificate() {
    let cluster = cluster();
    let leader = cluster.with_role(Role::Leader, 0);
    let peer = cluster.with_role(Role::ValidatingPeer, 0);
    let proxy_tail = cluster.with_role(Role::ProxyTail, 0);
    let (mut replica, _) = cluster.after_valid_proposal(peer);
    let certificate = cluster.certificate(VoteKind::Prepare, 0, &[leader, peer, proxy_tail]);
    replica.step(Input::Message {
        from: cluster.key(proxy_tail),
        message: Message::PrepareCertificate(certificate),
    });
    assert!(replica.lock().is_some());
    // Move to view 1 with three view-change votes.
    for voter in 0..4 {
        if voter == peer {
            continue;
        }
        let vote = ViewChangeVote::new(2, 1, None, &cluster.keys[voter]);
        replica.step(Input::Message {
            from: cluster.key(voter),
            message: Message::ViewChange(vote),
        });
    }
    assert_eq!(replica.view(), 1);
    // The new leader proposes a different block (another timestamp) without a certificate.
    let new_leader = cluster.with_role(Role::Leader, 1);
    let mut other = cluster.block.clone();
    other.header.timestamp_ms += 1;
    let proposal = Message::Proposal(Box::new(Proposal {
        height: 2,
        view: 1,
        block: other.clone(),
        justify: None,
        proof: Vec::new(),
    }));
    replica.step(Input::Message {
        from: cluster.key(new_leader),
        message: proposal,
    });
    let effects = replica.step(Input::BlockValidated {
        height: 2,
        hash: other.hash(),
        valid: true,
    });
    assert_eq!(sends_vote(&effects, VoteKind::Prepare), None, "locked on another block");
}

#[test]
fn r10_a_commit_certificate_commits_the_validated_block() {
    let cluster = cluster();
    let leader = cluster.with_role(Role::Leader, 0);
    let observer = cluster.with_role(Role::Observer, 0);
    let proxy_tail = cluster.with_role(Role::ProxyTail, 0);
    let peer = cluster.with_role(Role::ValidatingPeer, 0);
    let (mut replica, _) = cluster.after_valid_proposal(observer);
    let certificate = cluster.certificate(VoteKind::Commit, 0, &[leader, peer, proxy_tail]);
    let effects = replica.step(Input::Message {
        from: cluster.key(proxy_tail),
        message: Message::CommitCertificate(certificate),
    });
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::CommitBlock { block } if block.block.hash() == cluster.block.hash())));
    let hash = cluster.block.hash();
    replica.step(Input::BlockCommitted {
        height: 2,
        hash,
        validators: cluster.validators.clone(),
    });
    assert_eq!(replica.height(), 3);
    assert_eq!(replica.view(), 0);
    assert!(replica.lock().is_none());
}

#[test]
fn r13_r14_r15_suspicion_join_and_view_change() {
    let cluster = cluster();
    let mut replica = cluster.replica(0);
    replica.step(Input::QueueLength(1));
    // R13: the view timer fires with work pending: broadcast a view-change vote for view 1.
    let effects = replica.step(Input::TimerFired(Timer::View { height: 2, view: 0 }));
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Broadcast { message: Message::ViewChange(v) } if v.view == 1)));
    // R14: another replica asking for view 2 plus one more (f + 1 = 2) makes it join view 2.
    let mut replica = cluster.replica(0);
    let vote = ViewChangeVote::new(2, 2, None, &cluster.keys[1]);
    let effects = replica.step(Input::Message {
        from: cluster.key(1),
        message: Message::ViewChange(vote),
    });
    assert!(!effects.iter().any(|e| matches!(
        e,
        Effect::Broadcast {
            message: Message::ViewChange(_)
        }
    )));
    let vote = ViewChangeVote::new(2, 2, None, &cluster.keys[2]);
    let effects = replica.step(Input::Message {
        from: cluster.key(2),
        message: Message::ViewChange(vote),
    });
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Broadcast { message: Message::ViewChange(v) } if v.view == 2)));
    // R15: its own vote makes three: a quorum, so it enters view 2.
    assert_eq!(replica.view(), 2);
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::ViewChanged { height: 2, view: 2 })));
    // A view-change vote with a bad signature is dropped.
    let mut bad = ViewChangeVote::new(2, 3, None, &cluster.keys[3]);
    bad.signature.signature.0[1] ^= 1;
    replica.step(Input::Message {
        from: cluster.key(3),
        message: Message::ViewChange(bad),
    });
    assert_eq!(replica.counters().dropped.get(&DropReason::BadSignature), Some(&1));
}

#[test]
fn messages_from_outsiders_and_other_heights_are_dropped() {
    let cluster = cluster();
    let mut replica = cluster.replica(0);
    let outsider = KeyPair::derive(b"outsider", 0);
    replica.step(Input::Message {
        from: outsider.public_key(),
        message: cluster.proposal(0, None),
    });
    assert_eq!(replica.counters().dropped.get(&DropReason::NotAValidator), Some(&1));
    let stale = ViewChangeVote::new(1, 1, None, &cluster.keys[1]);
    replica.step(Input::Message {
        from: cluster.key(1),
        message: Message::ViewChange(stale),
    });
    assert_eq!(replica.counters().dropped.get(&DropReason::StaleHeight), Some(&1));
    let far = ViewChangeVote::new(9, 1, None, &cluster.keys[1]);
    replica.step(Input::Message {
        from: cluster.key(1),
        message: Message::ViewChange(far),
    });
    assert_eq!(replica.counters().dropped.get(&DropReason::FutureHeight), Some(&1));
}
