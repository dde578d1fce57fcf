//! The simulated network: what a replica sends, through its behaviour, Twins' round partitions,
//! timed partitions, loss, latency and duplication.

use super::*;

impl<'c> Simulation<'c> {
    pub(super) fn on_deliver(&mut self, to: usize, from: usize, message: Message) {
        let from_key = self.nodes[from].key.public_key();
        let behaviour = self.behaviour(to);
        if behaviour == Behaviour::VoteAll {
            self.coalition_votes(to, &message);
        }
        self.step(to, |replica, now| replica.on_message(now, from_key, message));
    }

    /// A coalition replica's votes for what it just received, beside its honest core's.
    pub(super) fn coalition_votes(&mut self, node: usize, message: &Message) {
        let Some(replica) = self.nodes[node].replica.as_ref() else {
            return;
        };
        let (height, topology) = (replica.core().height(), replica.core().topology().clone());
        let key = self.nodes[node].key.clone();
        let behaviour = self.behaviour(node);
        let votes = self.nodes[node]
            .mischief
            .incoming(behaviour, &key, message, height, &topology, &self.coalition);
        for (to_key, vote) in votes {
            for to in self.index.get(&to_key).cloned().unwrap_or_default() {
                if to != node {
                    self.deliver(node, to, vote.clone(), 0);
                }
            }
        }
    }

    /// Carries out a replica's outbound work, through its behaviour, and records its events.
    pub(super) fn dispatch(&mut self, node: usize, outbound: Vec<Outbound>) {
        let honest = self.is_honest(node);
        let Some(replica) = self.nodes[node].replica.as_mut() else {
            return;
        };
        let events = replica.take_events();
        let position = (replica.core().height(), replica.core().view());
        for event in events {
            match event {
                ReplicaEvent::Committed {
                    height,
                    hash,
                    transactions,
                    ..
                } if honest => {
                    for (payload, committed) in &transactions {
                        if *committed && !self.checker.chain().contains_key(&height) {
                            if let Some(submitted_at) = self.submitted.get(payload) {
                                self.latencies.push(self.now.saturating_sub(*submitted_at));
                            }
                        }
                    }
                    self.checker.on_commit(self.now, node, height, hash, &transactions);
                }
                // Appended below a restored checkpoint without execution (state sync): agreement is
                // checked; the outcomes were recorded by the nodes that executed it.
                ReplicaEvent::Backfilled { height, hash, .. } if honest => {
                    self.backfilled_blocks += 1;
                    self.checker.on_commit(self.now, node, height, hash, &[]);
                }
                ReplicaEvent::Restore(RestoreEvent::Installed { .. }) if honest => self.restores += 1,
                ReplicaEvent::Held { payloads } if honest && self.config.client.acknowledge == Acknowledge::Held => {
                    self.acknowledged.extend(payloads);
                }
                ReplicaEvent::ViewChanged { height, view } if honest => {
                    self.view_changes += 1;
                    if !self.amnesiac.contains(&node) {
                        self.oracle.observe_view(self.now, node, height, view);
                    }
                }
                _ => {}
            }
        }
        for item in outbound.into_iter().filter_map(Outbound::decoded) {
            match item {
                Outbound::Timer { timer, after_ms } => {
                    let generation = self.nodes[node].generation;
                    let at = self.now + after_ms;
                    self.schedule(
                        at,
                        Event::Timer {
                            node,
                            generation,
                            timer,
                        },
                    );
                }
                Outbound::Send { to, message } => {
                    for to in self.index.get(&to).cloned().unwrap_or_default() {
                        if to != node {
                            self.send_as(node, to, &message, position);
                        }
                    }
                }
                // Decoded into `Send` above.
                Outbound::SendFrame { .. } => {}
                Outbound::Broadcast { message } => {
                    for to in 0..self.nodes.len() {
                        if to != node {
                            self.send_as(node, to, &message, position);
                        }
                    }
                }
            }
        }
    }

    /// Sends through the sender's behaviour and, with Twins, the partition of the message's
    /// round (`position` is the sender's height and view).
    pub(super) fn send_as(&mut self, node: usize, to: usize, message: &Message, position: (u64, u64)) {
        if let Some(twins) = self.config.twins.as_ref().filter(|_| !self.partitions_lifted) {
            if !twins.allows(round_of(message, position.0, position.1), node, to) {
                return;
            }
        }
        let behaviour = self.behaviour(node);
        if behaviour == Behaviour::Honest {
            return self.deliver(node, to, message.clone(), 0);
        }
        let key = self.nodes[node].key.clone();
        let target = self.nodes[to].original;
        let outgoing = self.nodes[node].mischief.outgoing(
            behaviour,
            &key,
            target,
            message,
            self.now,
            &mut self.rng,
            &mut self.coalition,
        );
        for (delay_ms, message) in outgoing {
            self.deliver(node, to, message, delay_ms);
        }
    }

    pub(super) fn deliver(&mut self, from: usize, to: usize, message: Message, delay_ms: u64) {
        let (source, target) = (self.nodes[from].original, self.nodes[to].original);
        if self.blocked.contains(&(from, to)) || self.rng.chance(self.config.loss_per_million) {
            return;
        }
        self.messages += 1;
        *self.messages_by_kind.entry(message.kind()).or_default() += 1;
        let (low, high) = self
            .config
            .link_latency_ms
            .get(&(source, target))
            .copied()
            .unwrap_or(self.config.latency_ms);
        if self.rng.chance(self.config.duplicate_per_million) {
            let at = self.now + delay_ms + self.rng.between(low, high);
            self.schedule(
                at,
                Event::Deliver {
                    to,
                    from,
                    message: message.clone(),
                },
            );
        }
        let at = self.now + delay_ms + self.rng.between(low, high);
        self.schedule(at, Event::Deliver { to, from, message });
    }
}
