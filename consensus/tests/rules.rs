//! Step tables for the rules of docs/PROTOCOL.md, one test per rule (R1-R19): each row is an
//! input, every effect it must produce in order, and checks of the state after it. Four
//! validators from the fixture genesis, deciding height 2 (`common/steps.rs`).

mod common;

use std::collections::BTreeSet;

use common::steps::{dropped, proposal_in, run, step, view_change_in, Cluster, Expect, TimerKind};
use kasane_consensus::message::SYNC_BLOCKS_MAX;
use kasane_consensus::{Config, DropReason, Input, LockRecord, Message, Role, Sumeragi, Timer, Validity, Verdict};
use kasane_model::block::VoteKind;
use kasane_model::{Block, KeyPair};

use Expect::{Broadcast, Commit, Persist, Send, Validate, ViewChanged};
use TimerKind::{Revalidate, Sync as SyncTimer, View};

fn vote(kind: VoteKind, view: u64, to: usize) -> Expect {
    Expect::Vote { kind, view, to }
}

fn timer(kind: TimerKind) -> Expect {
    Expect::Timer(kind)
}

/// The lock record made durable: its view, its lock's view, whether it holds the locked block.
fn persist(view: u64, lock: Option<u64>, block: bool) -> Expect {
    Persist { view, lock, block }
}

/// The leader's first rows at height 2: work arrives (view and block timers), then the block
/// timer asks for a block of view 0.
fn work_arrives<'a>() -> common::steps::Step<'a> {
    step(
        "work arrives: view timer and block timer",
        Input::QueueLength(3),
        vec![timer(View), timer(TimerKind::Block)],
    )
}

fn block_timer_builds<'a>() -> common::steps::Step<'a> {
    step(
        "the block timer fires: build a block of view 0",
        Input::TimerFired(Timer::BlockTime { height: 2, view: 0 }),
        vec![Expect::Build {
            view: 0,
            with_proof: false,
        }],
    )
}

fn proposal_built(block: &Block) -> Input {
    Input::ProposalBuilt {
        height: 2,
        view: 0,
        block: block.clone(),
    }
}

fn validated(block: &Block, verdict: Verdict) -> Input {
    Input::BlockValidated {
        height: 2,
        hash: block.hash(),
        verdict,
    }
}

fn proposal_message(
    cluster: &Cluster,
    view: u64,
    block: &Block,
    justify: Option<kasane_model::Certificate>,
) -> Message {
    Message::Proposal(Box::new(cluster.proposal(view, block, justify, Vec::new())))
}

/// `node` after the view-0 leader's proposal of `block` reached it and validated.
fn voted_in_view_0(cluster: &Cluster, node: usize, block: &Block) -> Sumeragi {
    let mut replica = cluster.replica(node);
    let leader = cluster.leader(0);
    replica.step(cluster.from(leader, proposal_message(cluster, 0, block, None)));
    replica.step(validated(block, Verdict::Valid));
    replica
}

/// `node` locked on `block` in view 0.
fn locked_in_view_0(cluster: &Cluster, node: usize, block: &Block) -> Sumeragi {
    let mut replica = voted_in_view_0(cluster, node, block);
    let certificate = cluster.certificate(VoteKind::Prepare, 0, block, &[0, 1, 2]);
    replica.step(cluster.from(cluster.proxy_tail(0), Message::PrepareCertificate(certificate)));
    assert!(replica.lock().is_some());
    replica
}

/// A proof of `view` from every node but `node`, delivered by the first of them.
fn enter_view(cluster: &Cluster, replica: &mut Sumeragi, node: usize, view: u64) {
    let others = cluster.others(node);
    let proof = cluster.proof(view, &others);
    replica.step(cluster.from(others[0], Message::ViewChangeProof(proof)));
    assert_eq!(replica.view(), view);
}

#[test]
fn r1_the_order_rotates_round_robin_by_height() {
    let cluster = Cluster::new();
    // Height 2 of four validators: the sorted order rotated by two.
    let sorted: Vec<_> = cluster.validators.iter().copied().collect();
    assert_eq!(cluster.key(cluster.leader(0)), sorted[2]);
    for height in [2u64, 3, 4, 5, 6] {
        let leader = (0..4)
            .find(|node| cluster.key(*node) == sorted[(height % 4) as usize])
            .expect("leader");
        for node in 0..4 {
            let mut replica = Sumeragi::new(
                cluster.keys[node].clone(),
                Config::default(),
                height,
                cluster.genesis,
                &cluster.validators,
                &BTreeSet::new(),
                None,
            );
            // Only the leader of (height, 0) arms its block timer when work arrives.
            let expected = if node == leader {
                vec![timer(View), timer(TimerKind::Block)]
            } else {
                vec![timer(View)]
            };
            let effects = replica.step(Input::QueueLength(1));
            assert_eq!(effects.len(), expected.len(), "height {height} node {node}");
            assert_eq!(replica.topology().is_leader(&cluster.key(node), 0), node == leader);
        }
    }
}

#[test]
fn r2_a_view_change_rotates_leader_and_proxy_tail() {
    let cluster = Cluster::new();
    let (leader_0, leader_1) = (cluster.leader(0), cluster.leader(1));
    assert_ne!(leader_0, leader_1);
    assert_ne!(cluster.proxy_tail(0), cluster.proxy_tail(1));
    let mut replica = cluster.replica(leader_1);
    replica.step(Input::QueueLength(2));
    let others = cluster.others(leader_1);
    run(
        &cluster,
        &mut replica,
        "R2",
        vec![step(
            "the leader of view 1 builds as soon as it enters the view, with the view's proof",
            cluster.from(others[0], Message::ViewChangeProof(cluster.proof(1, &others))),
            vec![
                ViewChanged(1),
                persist(1, None, false),
                timer(View),
                Expect::Build {
                    view: 1,
                    with_proof: true,
                },
            ],
        )],
    );
}

#[test]
fn r3_r3a_roles_and_who_votes() {
    let cluster = Cluster::new();
    let block = cluster.block(0, cluster.leader(0), 0);
    let proxy_tail = cluster.proxy_tail(0);
    let observer = cluster.node(Role::Observer, 0);
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let outsider = KeyPair::derive(b"rules-outsider", 0);
    // Set B votes in view 0 like every validator, to both collectors: the proxy tail and the
    // leader (R7). A silent member of set A then costs no view change.
    let mut replica = cluster.replica(observer);
    run(
        &cluster,
        &mut replica,
        "R3a view 0",
        vec![
            step(
                "set B validates the proposal",
                cluster.from(cluster.leader(0), proposal_message(&cluster, 0, &block, None)),
                vec![timer(View), Validate],
            ),
            step(
                "and votes Prepare in view 0, to the proxy tail and the leader",
                validated(&block, Verdict::Valid),
                vec![
                    persist(0, None, false),
                    vote(VoteKind::Prepare, 0, proxy_tail),
                    vote(VoteKind::Prepare, 0, cluster.leader(0)),
                ],
            ),
        ],
    );
    // The leader collects too: a vote for its own view is counted, not dropped.
    let mut replica = cluster.replica(cluster.leader(0));
    replica.step(cluster.vote_from(observer, VoteKind::Prepare, 0, &block));
    assert_eq!(dropped(&replica, DropReason::NotACollector), 0);
    assert_eq!(dropped(&replica, DropReason::NotAValidator), 0);
    // A validating peer collects nothing; a vote signed by a key outside the validator set is
    // dropped by the collector.
    let mut replica = cluster.replica(peer);
    replica.step(cluster.vote_from(cluster.leader(0), VoteKind::Prepare, 0, &block));
    assert_eq!(dropped(&replica, DropReason::NotACollector), 1);
    let mut replica = cluster.replica(proxy_tail);
    let stranger = kasane_consensus::SignedVote::new(Cluster::vote(VoteKind::Prepare, 0, &block), &outsider);
    replica.step(Input::Message {
        from: outsider.public_key(),
        message: Message::Vote(stranger),
    });
    assert_eq!(dropped(&replica, DropReason::NotAValidator), 1);
}

/// R7: the leader collects votes too. With the proxy tail silent, the leader's own vote and
/// those of the validating peer and set B make both certificates, and the height commits in
/// view 0 (with the proxy tail alone collecting, it needed a view change).
#[test]
fn r7_the_leader_certifies_when_the_proxy_tail_is_silent() {
    let cluster = Cluster::new();
    let leader = cluster.leader(0);
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let observer = cluster.node(Role::Observer, 0);
    let block = cluster.block(0, leader, 0);
    let mut replica = cluster.replica(leader);
    run(
        &cluster,
        &mut replica,
        "R7 leader",
        vec![
            work_arrives(),
            block_timer_builds(),
            step(
                "the leader proposes and votes, to the proxy tail and to itself",
                proposal_built(&block),
                vec![
                    Broadcast("proposal"),
                    persist(0, None, false),
                    vote(VoteKind::Prepare, 0, cluster.proxy_tail(0)),
                ],
            ),
            step(
                "the validating peer's vote",
                cluster.vote_from(peer, VoteKind::Prepare, 0, &block),
                vec![],
            ),
            step(
                "set B's vote makes the quorum: the leader broadcasts the prepare certificate, locks and votes Commit",
                cluster.vote_from(observer, VoteKind::Prepare, 0, &block),
                vec![
                    Broadcast("prepare-certificate"),
                    persist(0, Some(0), true),
                    vote(VoteKind::Commit, 0, cluster.proxy_tail(0)),
                ],
            ),
            step(
                "a Commit vote",
                cluster.vote_from(peer, VoteKind::Commit, 0, &block),
                vec![],
            ),
            step(
                "the third: the leader's commit certificate, and it commits",
                cluster.vote_from(observer, VoteKind::Commit, 0, &block),
                vec![Broadcast("commit-certificate"), Commit],
            ),
        ],
    );
}

#[test]
fn r4_the_leader_proposes_once_per_view() {
    let cluster = Cluster::new();
    let leader = cluster.leader(0);
    let block = cluster.block(0, leader, 0);
    let mut replica = cluster.replica(leader);
    run(
        &cluster,
        &mut replica,
        "R4",
        vec![
            work_arrives(),
            block_timer_builds(),
            step(
                "not twice in one view",
                Input::TimerFired(Timer::BlockTime { height: 2, view: 0 }),
                vec![],
            ),
            step(
                "the built block is broadcast, and the leader votes for it",
                proposal_built(&block),
                vec![
                    Broadcast("proposal"),
                    persist(0, None, false),
                    vote(VoteKind::Prepare, 0, cluster.proxy_tail(0)),
                ],
            ),
        ],
    );
    // A full queue proposes at once; a non-leader never builds.
    let mut replica = cluster.replica_with(
        leader,
        Config {
            block_txs_max: 5,
            ..Config::default()
        },
        None,
    );
    let effects = replica.step(Input::QueueLength(5));
    assert!(effects
        .iter()
        .any(|effect| matches!(effect, kasane_consensus::Effect::BuildProposal { .. })));
    let mut replica = cluster.replica(cluster.node(Role::ValidatingPeer, 0));
    replica.step(Input::QueueLength(3));
    let effects = replica.step(Input::TimerFired(Timer::BlockTime { height: 2, view: 0 }));
    assert!(effects.is_empty());
}

#[test]
fn r4_a_leader_re_proposes_the_highest_certified_block() {
    let cluster = Cluster::new();
    let block = cluster.block(0, cluster.leader(0), 0);
    let leader_1 = cluster.leader(1);
    let mut replica = locked_in_view_0(&cluster, leader_1, &block);
    let others = cluster.others(leader_1);
    let effects = run(
        &cluster,
        &mut replica,
        "R4 re-proposal",
        vec![step(
            "entering view 1, the locked leader re-proposes its block with the certificate",
            cluster.from(others[0], Message::ViewChangeProof(cluster.proof(1, &others))),
            vec![
                ViewChanged(1),
                persist(1, Some(0), true),
                timer(View),
                Broadcast("proposal"),
                persist(1, Some(0), true),
                vote(VoteKind::Prepare, 1, cluster.proxy_tail(1)),
            ],
        )],
    );
    let proposal = proposal_in(&effects[0]).expect("proposal");
    assert_eq!(proposal.block.hash(), block.hash());
    assert_eq!(proposal.justify.map(|justify| justify.vote.view), Some(0));
    assert_eq!(proposal.proof.len(), 3);
}

#[test]
fn r4a_a_leader_without_the_certified_block_fetches_it_by_hash() {
    let cluster = Cluster::new();
    let block = cluster.block(0, cluster.leader(0), 0);
    let leader_1 = cluster.leader(1);
    let certificate = cluster.certificate(VoteKind::Prepare, 0, &block, &[0, 1, 2]);
    let others = cluster.others(leader_1);
    let mut replica = cluster.replica(leader_1);
    run(
        &cluster,
        &mut replica,
        "R4a",
        vec![
            step(
                "a view-change vote carries a prepare certificate this leader never saw the block of",
                cluster.from(
                    others[0],
                    Message::ViewChange(cluster.view_change(others[0], 1, Some(certificate.clone()))),
                ),
                vec![],
            )
            .then(|replica| assert!(replica.highest().is_some())),
            step(
                "f + 1 votes: it joins, the quorum makes view 1, and as leader it asks for the block",
                cluster.from(others[1], Message::ViewChange(cluster.view_change(others[1], 1, None))),
                vec![
                    Broadcast("view-change"),
                    ViewChanged(1),
                    persist(1, None, false),
                    timer(View),
                    Broadcast("block-wanted"),
                ],
            ),
            step(
                "a block nobody asked for is dropped",
                cluster.from(
                    others[0],
                    Message::BlockFound(Box::new(cluster.block(0, cluster.leader(0), 7))),
                ),
                vec![],
            )
            .then(|replica| assert_eq!(dropped(replica, DropReason::Unsolicited), 1)),
            step(
                "the block arrives: re-proposed with its certificate, and validated",
                cluster.from(others[0], Message::BlockFound(Box::new(block.clone()))),
                vec![Broadcast("proposal"), Validate],
            ),
            step(
                "valid: the leader votes for it",
                validated(&block, Verdict::Valid),
                vec![
                    persist(1, None, false),
                    vote(VoteKind::Prepare, 1, cluster.proxy_tail(1)),
                ],
            ),
        ],
    );
    // A validator holding the block answers a request for it once per view.
    let holder = cluster.node(Role::Observer, 0);
    let leader_1 = cluster.leader(1);
    assert_ne!(holder, leader_1);
    let mut replica = voted_in_view_0(&cluster, holder, &block);
    let wanted = Message::BlockWanted {
        height: 2,
        hash: block.hash(),
    };
    run(
        &cluster,
        &mut replica,
        "R4a answer",
        vec![
            step(
                "asked for a block it holds",
                cluster.from(leader_1, wanted.clone()),
                vec![Send {
                    kind: "block-found",
                    to: leader_1,
                }],
            ),
            step("asked again in the same view", cluster.from(leader_1, wanted), vec![]),
            step(
                "asked for a block it does not hold",
                cluster.from(
                    leader_1,
                    Message::BlockWanted {
                        height: 2,
                        hash: cluster.block(0, 0, 9).hash(),
                    },
                ),
                vec![],
            ),
        ],
    );
}

#[test]
fn r5_proposals_are_checked_before_validation() {
    let cluster = Cluster::new();
    let leader = cluster.leader(0);
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let block = cluster.block(0, leader, 0);
    let suspected = vec![Broadcast("view-change"), timer(View)];
    let bad_cases: Vec<(&str, Input, DropReason, Vec<Expect>)> = vec![
        (
            "from a validator that is not the leader",
            cluster.from(peer, proposal_message(&cluster, 0, &block, None)),
            DropReason::NotTheLeader,
            vec![],
        ),
        (
            "a new block whose header names another proposer",
            cluster.from(leader, proposal_message(&cluster, 0, &cluster.block(0, peer, 0), None)),
            DropReason::BadProposal,
            suspected.clone(),
        ),
        (
            "a new block whose header claims another view",
            cluster.from(
                leader,
                proposal_message(&cluster, 0, &cluster.block(1, leader, 0), None),
            ),
            DropReason::BadProposal,
            suspected.clone(),
        ),
        (
            "a justification that is not of an earlier view",
            cluster.from(
                leader,
                proposal_message(
                    &cluster,
                    0,
                    &block,
                    Some(cluster.certificate(VoteKind::Prepare, 0, &block, &[0, 1, 2])),
                ),
            ),
            DropReason::BadProposal,
            suspected.clone(),
        ),
        (
            "a justification signed by too few validators",
            {
                let mut replica_view_1 = cluster.proposal(1, &block, None, cluster.proof(1, &[0, 1, 2]));
                replica_view_1.justify = Some(cluster.certificate(VoteKind::Prepare, 0, &block, &[0, 1]));
                cluster.from(cluster.leader(1), Message::Proposal(Box::new(replica_view_1)))
            },
            DropReason::BadProposal,
            vec![
                ViewChanged(1),
                persist(1, None, false),
                Broadcast("view-change"),
                timer(View),
            ],
        ),
        (
            "a proposal of a later view without a valid proof",
            cluster.from(
                cluster.leader(1),
                Message::Proposal(Box::new(cluster.proposal(
                    1,
                    &cluster.block(1, cluster.leader(1), 0),
                    None,
                    cluster.proof(1, &[0, 1]),
                ))),
            ),
            DropReason::BadProof,
            vec![],
        ),
    ];
    for (note, input, reason, effects) in bad_cases {
        let mut replica = cluster.replica(peer);
        run(&cluster, &mut replica, "R5", vec![step(note, input, effects)]);
        assert_eq!(dropped(&replica, reason), 1, "{note}");
    }
    // A good proposal is validated; an early verdict waits for the clock instead of refusing.
    let mut replica = cluster.replica(peer);
    run(
        &cluster,
        &mut replica,
        "R5 verdicts",
        vec![
            step(
                "a proposal of the leader, for the head, of this view",
                cluster.from(leader, proposal_message(&cluster, 0, &block, None)),
                vec![timer(View), Validate],
            ),
            step(
                "stamped too far ahead of this replica's clock: no vote, judge again later",
                validated(&block, Verdict::Early { retry_after_ms: 500 }),
                vec![Expect::TimerAfter(Revalidate, 500)],
            )
            .then(|replica| assert_eq!(replica.validity(&block.hash()), Some(Validity::Early))),
            step(
                "the clock caught up: validated again",
                Input::TimerFired(Timer::Revalidate {
                    height: 2,
                    hash: block.hash(),
                }),
                vec![Validate],
            ),
            step(
                "valid now: the Prepare vote",
                validated(&block, Verdict::Valid),
                vec![
                    persist(0, None, false),
                    vote(VoteKind::Prepare, 0, cluster.proxy_tail(0)),
                    vote(VoteKind::Prepare, 0, cluster.leader(0)),
                ],
            ),
            step(
                "a second proposal in the view is dropped",
                cluster.from(
                    leader,
                    proposal_message(&cluster, 0, &cluster.block(0, leader, 1), None),
                ),
                vec![],
            )
            .then(|replica| assert_eq!(dropped(replica, DropReason::Duplicate), 1)),
        ],
    );
    // An invalid block makes the validator suspect the leader.
    let mut replica = cluster.replica(peer);
    replica.step(cluster.from(leader, proposal_message(&cluster, 0, &block, None)));
    run(
        &cluster,
        &mut replica,
        "R5 invalid",
        vec![step(
            "invalid",
            validated(&block, Verdict::Invalid),
            vec![Broadcast("view-change")],
        )],
    );
}

#[test]
fn r6_a_locked_validator_votes_only_for_its_lock_or_a_higher_certificate() {
    let cluster = Cluster::new();
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let locked = cluster.block(0, cluster.leader(0), 0);
    let mut replica = locked_in_view_0(&cluster, peer, &locked);
    // View 2, whose leader is not this validator.
    enter_view(&cluster, &mut replica, peer, 2);
    assert_ne!(cluster.leader(2), peer);
    let other = cluster.block(2, cluster.leader(2), 5);
    run(
        &cluster,
        &mut replica,
        "R6 refuse",
        vec![
            step(
                "another new block",
                cluster.from(cluster.leader(2), proposal_message(&cluster, 2, &other, None)),
                vec![Validate],
            ),
            step(
                "valid, but against the lock: no vote",
                validated(&other, Verdict::Valid),
                vec![],
            ),
        ],
    );
    // View 4: the other block comes with a prepare certificate of view 1, above the lock's 0.
    enter_view(&cluster, &mut replica, peer, 4);
    assert_ne!(cluster.proxy_tail(4), peer);
    let certified = cluster.block(1, cluster.leader(1), 6);
    let higher = cluster.certificate(VoteKind::Prepare, 1, &certified, &[0, 1, 3]);
    run(
        &cluster,
        &mut replica,
        "R6 higher",
        vec![
            step(
                "a block with a certificate above the lock",
                cluster.from(
                    cluster.leader(4),
                    proposal_message(&cluster, 4, &certified, Some(higher)),
                ),
                vec![Validate],
            ),
            step(
                "it gets the vote",
                validated(&certified, Verdict::Valid),
                vec![
                    persist(4, Some(0), true),
                    vote(VoteKind::Prepare, 4, cluster.proxy_tail(4)),
                    vote(VoteKind::Prepare, 4, cluster.leader(4)),
                ],
            ),
        ],
    );
    // A certificate of the lock's own view for another block does not unlock.
    let mut replica = locked_in_view_0(&cluster, peer, &locked);
    enter_view(&cluster, &mut replica, peer, 2);
    let same_view = cluster.block(0, cluster.leader(0), 8);
    let equal = cluster.certificate(VoteKind::Prepare, 0, &same_view, &[0, 1, 3]);
    replica.step(cluster.from(
        cluster.leader(2),
        proposal_message(&cluster, 2, &same_view, Some(equal)),
    ));
    let effects = replica.step(validated(&same_view, Verdict::Valid));
    assert!(effects.is_empty(), "{effects:?}");
}

#[test]
fn r7_r9_the_proxy_tail_certifies_at_quorum() {
    let cluster = Cluster::new();
    let leader = cluster.leader(0);
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let proxy_tail = cluster.proxy_tail(0);
    let block = cluster.block(0, leader, 0);
    let mut forged =
        kasane_consensus::SignedVote::new(Cluster::vote(VoteKind::Prepare, 0, &block), &cluster.keys[peer]);
    forged.signature.signature.0[0] ^= 1;
    let relayed = kasane_consensus::SignedVote::new(Cluster::vote(VoteKind::Prepare, 0, &block), &cluster.keys[leader]);
    let mut replica = cluster.replica(proxy_tail);
    run(
        &cluster,
        &mut replica,
        "R7 R9",
        vec![
            step(
                "the proposal",
                cluster.from(leader, proposal_message(&cluster, 0, &block, None)),
                vec![timer(View), Validate],
            ),
            step(
                "valid: the proxy tail's own vote goes to itself and to the leader",
                validated(&block, Verdict::Valid),
                vec![persist(0, None, false), vote(VoteKind::Prepare, 0, leader)],
            ),
            step(
                "a vote with a broken signature",
                cluster.from(peer, Message::Vote(forged)),
                vec![],
            )
            .then(|replica| assert_eq!(dropped(replica, DropReason::BadSignature), 1)),
            step(
                "a vote signed by another validator than its sender",
                cluster.from(peer, Message::Vote(relayed)),
                vec![],
            )
            .then(|replica| assert_eq!(dropped(replica, DropReason::SignerIsNotSender), 1)),
            step(
                "the leader's vote",
                cluster.vote_from(leader, VoteKind::Prepare, 0, &block),
                vec![],
            ),
            step(
                "the same vote again",
                cluster.vote_from(leader, VoteKind::Prepare, 0, &block),
                vec![],
            )
            .then(|replica| assert_eq!(dropped(replica, DropReason::Duplicate), 1)),
            step(
                "the third distinct vote: a prepare certificate, and the proxy tail locks and votes Commit",
                cluster.vote_from(peer, VoteKind::Prepare, 0, &block),
                vec![
                    Broadcast("prepare-certificate"),
                    persist(0, Some(0), true),
                    vote(VoteKind::Commit, 0, leader),
                ],
            ),
            step(
                "a Commit vote",
                cluster.vote_from(leader, VoteKind::Commit, 0, &block),
                vec![],
            ),
            step(
                "the third: a commit certificate, and the proxy tail commits",
                cluster.vote_from(peer, VoteKind::Commit, 0, &block),
                vec![Broadcast("commit-certificate"), Commit],
            ),
        ],
    );
    // Votes of another view are dropped.
    let mut replica = cluster.replica(proxy_tail);
    replica.step(cluster.vote_from(leader, VoteKind::Prepare, 3, &block));
    assert_eq!(dropped(&replica, DropReason::FutureView), 1);
}

#[test]
fn r8_a_prepare_certificate_locks_then_votes_commit() {
    let cluster = Cluster::new();
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let block = cluster.block(0, cluster.leader(0), 0);
    let proxy_tail = cluster.proxy_tail(0);
    let certificate = cluster.certificate(VoteKind::Prepare, 0, &block, &[0, 1, 2]);
    let mut replica = voted_in_view_0(&cluster, peer, &block);
    run(
        &cluster,
        &mut replica,
        "R8",
        vec![
            step(
                "lock, durable with its block, then the Commit vote",
                cluster.from(proxy_tail, Message::PrepareCertificate(certificate.clone())),
                vec![
                    persist(0, Some(0), true),
                    vote(VoteKind::Commit, 0, proxy_tail),
                    vote(VoteKind::Commit, 0, cluster.leader(0)),
                ],
            )
            .then(|replica| assert_eq!(replica.lock().map(|lock| lock.vote.block_hash), Some(block.hash()))),
            step(
                "once per view",
                cluster.from(proxy_tail, Message::PrepareCertificate(certificate.clone())),
                vec![],
            ),
        ],
    );
    // A certificate that arrives before its block validated is acted on after.
    let mut replica = cluster.replica(peer);
    replica.step(cluster.from(cluster.leader(0), proposal_message(&cluster, 0, &block, None)));
    run(
        &cluster,
        &mut replica,
        "R8 early certificate",
        vec![
            step(
                "certificate first",
                cluster.from(proxy_tail, Message::PrepareCertificate(certificate)),
                vec![],
            ),
            step(
                "then validation: Prepare, lock, Commit",
                validated(&block, Verdict::Valid),
                vec![
                    persist(0, None, false),
                    vote(VoteKind::Prepare, 0, proxy_tail),
                    vote(VoteKind::Prepare, 0, cluster.leader(0)),
                    persist(0, Some(0), true),
                    vote(VoteKind::Commit, 0, proxy_tail),
                    vote(VoteKind::Commit, 0, cluster.leader(0)),
                ],
            ),
        ],
    );
    // A broken certificate is dropped.
    let mut broken = cluster.certificate(VoteKind::Prepare, 0, &block, &[0, 1, 2]);
    broken.signatures[1].signature.0[3] ^= 1;
    let mut replica = voted_in_view_0(&cluster, peer, &block);
    replica.step(cluster.from(proxy_tail, Message::PrepareCertificate(broken)));
    assert_eq!(dropped(&replica, DropReason::BadCertificate), 1);
    assert!(replica.lock().is_none());
}

#[test]
fn r10_a_commit_certificate_commits_and_the_height_moves_on() {
    let cluster = Cluster::new();
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let block = cluster.block(0, cluster.leader(0), 0);
    let proxy_tail = cluster.proxy_tail(0);
    let commit = cluster.certificate(VoteKind::Commit, 0, &block, &[0, 1, 2]);
    let mut replica = locked_in_view_0(&cluster, peer, &block);
    run(
        &cluster,
        &mut replica,
        "R10",
        vec![
            step(
                "a commit certificate for the held block",
                cluster.from(proxy_tail, Message::CommitCertificate(commit.clone())),
                vec![Commit],
            ),
            step(
                "committed: height 3, view 0, no lock",
                Input::BlockCommitted {
                    height: 2,
                    hash: block.hash(),
                    validators: cluster.validators.clone(),
                    demoted: BTreeSet::new(),
                },
                vec![],
            )
            .then(|replica| {
                assert_eq!((replica.height(), replica.view()), (3, 0));
                assert!(replica.lock().is_none() && replica.highest().is_none());
            }),
        ],
    );
    // A certificate for a block this replica never saw is fetched by block sync.
    let mut replica = cluster.replica(peer);
    run(
        &cluster,
        &mut replica,
        "R10 unknown block",
        vec![step(
            "fetch from the sender",
            cluster.from(proxy_tail, Message::CommitCertificate(commit)),
            vec![
                Send {
                    kind: "sync-request",
                    to: proxy_tail,
                },
                timer(SyncTimer),
            ],
        )],
    );
}

#[test]
fn r11_r12_r13_a_suspected_view_gets_one_vote_repeated_and_no_more_votes() {
    let cluster = Cluster::new();
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let block = cluster.block(0, cluster.leader(0), 0);
    let config = Config::default();
    let mut replica = cluster.replica(peer);
    let effects = run(
        &cluster,
        &mut replica,
        "R11 R13",
        vec![
            step("work arrives", Input::QueueLength(1), vec![timer(View)]),
            step(
                "no commit in the view: suspect it, vote for view 1",
                Input::TimerFired(Timer::View { height: 2, view: 0 }),
                vec![
                    Broadcast("view-change"),
                    Expect::TimerAfter(View, config.view_timeout(0)),
                ],
            )
            .then(|replica| assert_eq!(replica.view_change_sent(), Some(1))),
            step(
                "still no quorum: the same vote again, not one for view 2",
                Input::TimerFired(Timer::View { height: 2, view: 0 }),
                vec![Broadcast("view-change"), timer(View)],
            )
            .then(|replica| assert_eq!(replica.view_change_sent(), Some(1))),
            step(
                "a proposal of the abandoned view is still validated",
                cluster.from(cluster.leader(0), proposal_message(&cluster, 0, &block, None)),
                vec![Validate],
            ),
            step("but gets no vote (R13)", validated(&block, Verdict::Valid), vec![]),
        ],
    );
    // The repeated vote is the very vote first sent.
    assert_eq!(view_change_in(&effects[1]), view_change_in(&effects[2]));
    // Hundreds of timeouts later it is still a vote for view 1.
    for _ in 0..500 {
        replica.step(Input::TimerFired(Timer::View { height: 2, view: 0 }));
    }
    assert_eq!(replica.view_change_sent(), Some(1));
    // R12: an invalid proposal from the leader is a suspicion too.
    let mut replica = cluster.replica(peer);
    let bad = cluster.block(0, peer, 0);
    run(
        &cluster,
        &mut replica,
        "R12",
        vec![step(
            "a proposal with a forged header",
            cluster.from(cluster.leader(0), proposal_message(&cluster, 0, &bad, None)),
            vec![Broadcast("view-change"), timer(View)],
        )],
    );
}

#[test]
fn r14_f_plus_one_votes_make_a_validator_join() {
    let cluster = Cluster::new();
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let others = cluster.others(peer);
    let mut replica = cluster.replica(peer);
    let outsider = KeyPair::derive(b"not a validator", 0);
    run(
        &cluster,
        &mut replica,
        "R14",
        vec![
            step(
                "one validator wants view 50: not enough",
                cluster.from(others[0], Message::ViewChange(cluster.view_change(others[0], 50, None))),
                vec![],
            ),
            step(
                "a vote by a key that is not a validator, relayed by a validator, is dropped",
                cluster.from(
                    others[2],
                    Message::ViewChange(kasane_consensus::ViewChangeVote::new(2, 2, None, &outsider)),
                ),
                vec![],
            )
            .then(|replica| assert_eq!(dropped(replica, DropReason::NotAValidator), 1)),
            step(
                "a second validator wants view 2: f + 1 want view 2 or more, so join view 2",
                cluster.from(others[1], Message::ViewChange(cluster.view_change(others[1], 2, None))),
                vec![Broadcast("view-change")],
            )
            .then(|replica| {
                assert_eq!(replica.view_change_sent(), Some(2));
                assert_eq!(replica.view(), 0);
            }),
        ],
    );
}

#[test]
fn r15_a_quorum_of_votes_makes_the_view_at_any_distance() {
    let cluster = Cluster::new();
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let others = cluster.others(peer);
    let mut replica = cluster.replica(peer);
    let outsiders: Vec<KeyPair> = (0..3).map(|index| KeyPair::derive(b"minted", index)).collect();
    let minted: Vec<_> = outsiders
        .iter()
        .map(|key| kasane_consensus::ViewChangeVote::new(2, 9, None, key))
        .collect();
    let mut repeated = cluster.proof(9, &others[..2]);
    repeated.push(repeated[0].clone());
    run(
        &cluster,
        &mut replica,
        "R15",
        vec![
            step(
                "a proof of keys that are not validators",
                cluster.from(others[0], Message::ViewChangeProof(minted)),
                vec![],
            ),
            step(
                "a proof that repeats a signer",
                cluster.from(others[0], Message::ViewChangeProof(repeated)),
                vec![],
            )
            .then(|replica| assert_eq!((dropped(replica, DropReason::BadProof), replica.view()), (2, 0))),
            step(
                "three votes for view 2, collected one by one",
                cluster.from(others[0], Message::ViewChange(cluster.view_change(others[0], 2, None))),
                vec![],
            ),
            step(
                "the second makes this replica join",
                cluster.from(others[1], Message::ViewChange(cluster.view_change(others[1], 2, None))),
                vec![Broadcast("view-change"), ViewChanged(2), persist(2, None, false)],
            )
            .then(|replica| assert_eq!(replica.view(), 2)),
            step(
                "a whole proof of view 1000, far past the window of single votes",
                cluster.from(others[0], Message::ViewChangeProof(cluster.proof(1000, &others))),
                vec![ViewChanged(1000), persist(1000, None, false)],
            )
            .then(|replica| assert_eq!(replica.view(), 1000)),
        ],
    );
    // A proposal carrying a valid proof moves a replica into its view.
    let mut replica = cluster.replica(peer);
    let leader = cluster.leader(77);
    let block = cluster.block(77, leader, 0);
    let proposal = cluster.proposal(77, &block, None, cluster.proof(77, &[0, 1, 2]));
    run(
        &cluster,
        &mut replica,
        "R15 proposal",
        vec![step(
            "view 77's proposal with its proof",
            cluster.from(leader, Message::Proposal(Box::new(proposal))),
            vec![ViewChanged(77), persist(77, None, false), timer(View), Validate],
        )],
    );
}

#[test]
fn r15a_a_replica_ahead_hands_its_proof_to_one_behind() {
    let cluster = Cluster::new();
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let others = cluster.others(peer);
    let behind = others[0];
    let mut replica = cluster.replica(peer);
    replica.step(Input::QueueLength(1));
    enter_view(&cluster, &mut replica, peer, 3);
    let stale = || cluster.from(behind, Message::ViewChange(cluster.view_change(behind, 1, None)));
    run(
        &cluster,
        &mut replica,
        "R15a",
        vec![
            step(
                "a validator's own vote for a view this replica passed",
                stale(),
                vec![Send {
                    kind: "view-change-proof",
                    to: behind,
                }],
            ),
            step("again before the view timer fires: nothing more", stale(), vec![]),
            step(
                "a stale vote relayed by another validator is not answered",
                cluster.from(others[1], Message::ViewChange(cluster.view_change(behind, 1, None))),
                vec![],
            ),
            step(
                "the view timer fires: suspicion of view 3",
                Input::TimerFired(Timer::View { height: 2, view: 3 }),
                vec![Broadcast("view-change"), timer(View)],
            ),
            step(
                "and the laggard may be answered again",
                stale(),
                vec![Send {
                    kind: "view-change-proof",
                    to: behind,
                }],
            ),
        ],
    );
}

#[test]
fn r16_timeouts_double_per_view_up_to_a_bound() {
    let config = Config::default();
    assert_eq!(config.commit_timeout(0), 1_000);
    assert_eq!(config.commit_timeout(1), 2_000);
    assert_eq!(config.commit_timeout(5), 32_000);
    assert_eq!(config.commit_timeout(6), 32_000);
    assert_eq!(config.commit_timeout(u64::MAX), 32_000);
    let cluster = Cluster::new();
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let mut replica = cluster.replica(peer);
    replica.step(Input::QueueLength(1));
    let others = cluster.others(peer);
    run(
        &cluster,
        &mut replica,
        "R16",
        vec![step(
            "view 6: the view timer of view 6",
            cluster.from(others[0], Message::ViewChangeProof(cluster.proof(6, &others))),
            vec![
                ViewChanged(6),
                persist(6, None, false),
                Expect::TimerAfter(View, config.block_time_ms + 32_000),
            ],
        )],
    );
}

#[test]
fn r17_a_restarted_validator_keeps_its_view_lock_and_block_and_never_votes_twice() {
    let cluster = Cluster::new();
    let block = cluster.block(0, cluster.leader(0), 0);
    let node = cluster.proxy_tail(0);
    assert_ne!(cluster.leader(1), node);
    assert_ne!(cluster.leader(3), node);
    let lock = cluster.certificate(VoteKind::Prepare, 0, &block, &[0, 1, 2]);
    let record = LockRecord {
        height: 2,
        view: 1,
        proof: cluster.proof(1, &cluster.others(node)),
        lock: Some(lock.clone()),
        block: Some(block.clone()),
        voted_prepare: Some(1),
        voted_commit: Some(0),
    };
    let mut replica = cluster.replica_with(node, Config::default(), Some(record.clone()));
    assert_eq!(
        (replica.view(), replica.validity(&block.hash())),
        (1, Some(Validity::Unchecked))
    );
    let started = replica.start();
    assert_eq!(started.len(), 3, "status timer, status, view timer: {started:?}");
    let reproposal = cluster.proposal(1, &block, Some(lock.clone()), Vec::new());
    run(
        &cluster,
        &mut replica,
        "R17",
        vec![
            step(
                "the block it locked on, re-proposed in view 1",
                cluster.from(cluster.leader(1), Message::Proposal(Box::new(reproposal))),
                vec![Validate],
            ),
            step(
                "valid, but it voted Prepare in view 1 before the restart: no second vote",
                validated(&block, Verdict::Valid),
                vec![],
            ),
            step(
                "it serves the locked block to a leader that lacks it",
                cluster.from(
                    cluster.leader(3),
                    Message::BlockWanted {
                        height: 2,
                        hash: block.hash(),
                    },
                ),
                vec![Send {
                    kind: "block-found",
                    to: cluster.leader(3),
                }],
            ),
            step(
                "and shows a replica behind the proof of view 1 it restarted with",
                cluster.from(
                    cluster.leader(0),
                    Message::ViewChange(cluster.view_change(cluster.leader(0), 1, None)),
                ),
                vec![Send {
                    kind: "view-change-proof",
                    to: cluster.leader(0),
                }],
            ),
        ],
    );
    // Restarted as the leader of view 1, it re-proposes at once.
    let leader = cluster.leader(1);
    let record = LockRecord {
        proof: cluster.proof(1, &cluster.others(leader)),
        voted_prepare: Some(0),
        ..record
    };
    let mut replica = cluster.replica_with(leader, Config::default(), Some(record));
    let started = replica.start();
    let proposal = proposal_in(&started).expect("a re-proposal at start");
    assert_eq!((proposal.view, proposal.block.hash()), (1, block.hash()));
    // A record of another height is ignored.
    let stale = LockRecord {
        height: 1,
        view: 4,
        proof: Vec::new(),
        lock: None,
        block: None,
        voted_prepare: Some(4),
        voted_commit: None,
    };
    let replica = cluster.replica_with(node, Config::default(), Some(stale));
    assert_eq!(replica.view(), 0);
}

#[test]
fn r18_a_transaction_waiting_while_nothing_commits_makes_the_validator_suspect() {
    let cluster = Cluster::new();
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let mut replica = cluster.replica(peer);
    run(
        &cluster,
        &mut replica,
        "R18",
        vec![
            step("a transaction is queued", Input::QueueLength(1), vec![timer(View)]),
            step(
                "block time plus commit timeout later nothing committed: suspect the leader",
                Input::TimerFired(Timer::View { height: 2, view: 0 }),
                vec![Broadcast("view-change"), timer(View)],
            ),
        ],
    );
    // Without work, a view timer that fires changes nothing.
    let mut replica = cluster.replica(peer);
    let effects = replica.step(Input::TimerFired(Timer::View { height: 2, view: 0 }));
    assert!(effects.is_empty());
}

#[test]
fn r19_a_peer_whose_answer_adds_nothing_is_asked_again_only_on_its_status() {
    // Found by the Twins sample of seven: a peer that claims a height and answers every request
    // with nothing (a twin behind its double, or a liar) was asked again at once, forever.
    let cluster = Cluster::new();
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let others = cluster.others(peer);
    let block = cluster.block(0, cluster.leader(0), 0);
    let status = cluster.from(
        others[0],
        Message::Status {
            height: 500,
            head_hash: block.hash(),
        },
    );
    let requests = |effects: &[kasane_consensus::Effect]| {
        effects
            .iter()
            .filter(|effect| {
                matches!(
                    effect,
                    kasane_consensus::Effect::Send {
                        message: Message::BlockSyncRequest { .. },
                        ..
                    }
                )
            })
            .count()
    };
    let mut replica = cluster.replica(peer);
    assert_eq!(requests(&replica.step(status.clone())), 1);
    let empty = cluster.from(others[0], Message::BlockSyncResponse { blocks: Vec::new() });
    assert_eq!(requests(&replica.step(empty)), 0, "asked again at once");
    assert_eq!(requests(&replica.step(status)), 1, "its next status asks it again");
}

#[test]
fn r19_block_sync_asks_several_peers_and_drops_liars() {
    let cluster = Cluster::new();
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let others = cluster.others(peer);
    let block = cluster.block(0, cluster.leader(0), 0);
    let certificate = cluster.certificate(VoteKind::Commit, 0, &block, &[0, 1, 2]);
    let status = |from: usize, height: u64| {
        cluster.from(
            from,
            Message::Status {
                height,
                head_hash: block.hash(),
            },
        )
    };
    let sync_request = |to: usize| Send {
        kind: "sync-request",
        to,
    };
    let mut replica = cluster.replica(peer);
    let effects = run(
        &cluster,
        &mut replica,
        "R19",
        vec![
            step(
                "a peer is ahead: ask it",
                status(others[0], 500),
                vec![sync_request(others[0]), timer(SyncTimer)],
            ),
            step(
                "another peer is ahead: ask it too, in parallel, for the chunk after the first",
                status(others[1], 500),
                vec![sync_request(others[1]), timer(SyncTimer)],
            ),
            step(
                "a third: the next chunk is past the window of waiting blocks, (f + 1) * 100",
                status(others[2], 500),
                vec![],
            ),
            step(
                "the first request times out: its peer is slow, and the third peer is asked for its chunk at once",
                Input::TimerFired(Timer::Sync {
                    peer: cluster.key(others[0]),
                    from_height: 2,
                }),
                vec![sync_request(others[2]), timer(SyncTimer)],
            ),
            step(
                "its answer: the block of height 2 with its commit certificate",
                cluster.from(
                    others[2],
                    Message::BlockSyncResponse {
                        blocks: vec![kasane_model::CommittedBlock {
                            block: block.clone(),
                            certificate: certificate.clone(),
                        }],
                    },
                ),
                vec![sync_request(others[2]), timer(SyncTimer), Commit],
            ),
        ],
    );
    let asked = |effects: &[kasane_consensus::Effect]| {
        effects.iter().find_map(|effect| match effect {
            kasane_consensus::Effect::Send {
                message: Message::BlockSyncRequest { from_height, .. },
                ..
            } => Some(*from_height),
            _ => None,
        })
    };
    assert_eq!(asked(&effects[0]), Some(2));
    assert_eq!(
        asked(&effects[1]),
        Some(2 + SYNC_BLOCKS_MAX),
        "a second request asks for the next chunk: parallel requests fetch distinct chunks"
    );
    assert_eq!(
        asked(&effects[3]),
        Some(2),
        "the timed-out chunk is asked again, of another peer"
    );
    assert_eq!(
        asked(&effects[4]),
        Some(3),
        "after an answer, the same peer is asked for what follows it"
    );
    // The slow peer's status: it is asked again, but its request covers nothing for the others
    // until it answers, so the chain never waits on it twice in a row.
    let effects = replica.step(status(others[0], 500));
    assert!(
        effects.iter().any(|effect| matches!(
            effect,
            kasane_consensus::Effect::Send {
                message: Message::BlockSyncRequest { .. },
                ..
            }
        )),
        "a slow peer is asked again when its status comes: {effects:?}"
    );
    // A peer that sends a block whose certificate does not check out is not asked again.
    let mut replica = cluster.replica(peer);
    let mut forged = certificate.clone();
    forged.signatures[0].signature.0[9] ^= 1;
    replica.step(status(others[0], 500));
    replica.step(cluster.from(
        others[0],
        Message::BlockSyncResponse {
            blocks: vec![kasane_model::CommittedBlock {
                block: block.clone(),
                certificate: forged,
            }],
        },
    ));
    assert_eq!(dropped(&replica, DropReason::BadCertificate), 1);
    let effects = replica.step(status(others[0], 500));
    assert!(effects.is_empty(), "a liar was asked again: {effects:?}");
    // A request for committed blocks is served from the store.
    let mut replica = cluster.replica(peer);
    replica.step(Input::BlockCommitted {
        height: 2,
        hash: block.hash(),
        validators: cluster.validators.clone(),
        demoted: BTreeSet::new(),
    });
    let effects = replica.step(cluster.from(
        others[0],
        Message::BlockSyncRequest {
            from_height: 2,
            count: 1_000,
        },
    ));
    assert_eq!(
        effects,
        vec![kasane_consensus::Effect::ServeBlocks {
            to: cluster.key(others[0]),
            from_height: 2,
            count: 100,
        }]
    );
}

#[test]
fn r19_state_sync_pauses_block_sync_moves_past_a_restored_height_and_answers_peers_behind() {
    let cluster = Cluster::new();
    let peer = cluster.node(Role::ValidatingPeer, 0);
    let others = cluster.others(peer);
    let block = cluster.block(0, cluster.leader(0), 0);
    let status = |from: usize, height: u64| {
        cluster.from(
            from,
            Message::Status {
                height,
                head_hash: block.hash(),
            },
        )
    };
    let sends = |effects: &[kasane_consensus::Effect], wanted: fn(&Message) -> bool| {
        effects
            .iter()
            .filter(|effect| matches!(effect, kasane_consensus::Effect::Send { message, .. } if wanted(message)))
            .count()
    };
    let is_request = |message: &Message| matches!(message, Message::BlockSyncRequest { .. });
    let mut replica = cluster.replica(peer);
    // While a snapshot is restored, statuses from peers far ahead ask for nothing.
    replica.pause_sync();
    assert_eq!(sends(&replica.step(status(others[0], 500)), is_request), 0);
    assert_eq!(
        sends(&replica.resume_sync(), is_request),
        1,
        "resuming asks the peer ahead"
    );
    // The restored height: the replica moves past it, and asks from the height after it.
    let mut replica = cluster.replica(peer);
    replica.pause_sync();
    replica.step(status(others[0], 500));
    let validators = cluster.keys.iter().map(|key| key.public_key()).collect();
    let effects = replica.step(Input::Restored {
        height: 400,
        hash: block.hash(),
        validators,
        demoted: Default::default(),
    });
    assert_eq!(replica.height(), 401);
    assert!(
        effects.iter().any(|effect| matches!(
            effect,
            kasane_consensus::Effect::Send {
                message: Message::BlockSyncRequest { from_height: 401, .. },
                ..
            }
        )),
        "block sync goes on from the restored height: {effects:?}"
    );
    // A height below the replica's own is not a restore.
    replica.step(Input::Restored {
        height: 100,
        hash: block.hash(),
        validators: Default::default(),
        demoted: Default::default(),
    });
    assert_eq!(replica.height(), 401);
    // A peer more than a block behind hears this height at once; one just behind does not.
    let is_status = |message: &Message| matches!(message, Message::Status { height: 400, .. });
    assert_eq!(sends(&replica.step(status(others[1], 1)), is_status), 1);
    assert_eq!(sends(&replica.step(status(others[1], 399)), is_status), 0);
}
