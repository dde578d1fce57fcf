//! Leader reputation (docs/PROTOCOL.md R1): the leaders of failed views, taken from the views
//! blocks were committed in, lead last for a window of heights; at most f of them.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use kasane_model::block::view_zero_order;
use kasane_model::{Hash, KeyPair, PublicKey};
use kasane_wsv::genesis::GenesisBuilder;
use kasane_wsv::state::DEMOTION_HEIGHTS_PER_VALIDATOR;
use kasane_wsv::{PluginRegistry, Wsv};

fn cluster(n: u64) -> Wsv {
    let genesis_key = KeyPair::derive(b"reputation", 1_000);
    let mut builder = GenesisBuilder::new("reputation".parse().unwrap(), genesis_key, 1_700_000_000_000);
    for index in 0..n {
        builder.peer(KeyPair::derive(b"reputation", index).public_key());
    }
    builder.build(PluginRegistry::builtin()).unwrap().1
}

/// Commits an empty block at the next height in `view`.
fn commit(wsv: &mut Wsv, view: u64) {
    let height = wsv.height() + 1;
    let executed = wsv.execute(height, wsv.last_timestamp_ms() + 1, &[], &[]).unwrap();
    wsv.commit(executed, Hash::of(&height.to_le_bytes()), view);
}

fn order_of_next(wsv: &Wsv) -> Vec<PublicKey> {
    view_zero_order(&wsv.validators(), wsv.height() + 1, &wsv.demoted())
}

#[test]
fn the_leader_of_a_failed_view_leads_last_for_the_window() {
    let mut wsv = cluster(4);
    assert!(wsv.demoted().is_empty());
    let failed = order_of_next(&wsv)[0];
    commit(&mut wsv, 1);
    assert_eq!(wsv.demoted(), BTreeSet::from([failed]));
    assert_eq!(order_of_next(&wsv).last(), Some(&failed), "demoted: it leads last");
    let failed_at = wsv.height();
    let window = DEMOTION_HEIGHTS_PER_VALIDATOR * 4;
    while wsv.height() + 1 < failed_at + window {
        commit(&mut wsv, 0);
        assert_eq!(wsv.demoted(), BTreeSet::from([failed]), "height {}", wsv.height());
    }
    commit(&mut wsv, 0);
    assert!(wsv.demoted().is_empty(), "forgotten after {window} heights");
}

#[test]
fn at_most_f_are_demoted_the_most_recent_first() {
    let mut wsv = cluster(4);
    // Views 0 and 1 fail at one height: two leaders failed, but f = 1.
    let order = order_of_next(&wsv);
    commit(&mut wsv, 2);
    assert_eq!(wsv.demoted(), BTreeSet::from([order[1]]), "the later view's leader");
    // Seven validators tolerate two.
    let mut wsv = cluster(7);
    let order = order_of_next(&wsv);
    commit(&mut wsv, 3);
    assert_eq!(wsv.demoted(), BTreeSet::from([order[1], order[2]]));
}

#[test]
fn the_demotions_are_a_function_of_the_chain() {
    // Two replicas applying the same views agree, whatever else they did in between.
    let views = [0u64, 1, 0, 0, 2, 0, 1, 1, 0, 3, 0, 0, 0, 1];
    let mut one = cluster(4);
    let mut two = cluster(4);
    for view in views {
        commit(&mut one, view);
        let _ = two.demoted();
        commit(&mut two, view);
        assert_eq!(one.demoted(), two.demoted());
        assert_eq!(order_of_next(&one), order_of_next(&two));
    }
    assert!(!one.demoted().is_empty());
}
