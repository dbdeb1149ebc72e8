//! What bevy's executor may run at once in the block schedule of a chain
//! with every plugin: the systems of a stage that touch disjoint data are
//! not ordered and do not conflict, so the multi-threaded executor runs
//! them together.

mod common;

use common::*;
use int_engine::world::Plugin;
use int_systems::market::MarketPlugin;
use int_systems::token::TokenPlugin;
use int_systems::{BpkPlugin, LedgerPlugin};

fn every_plugin() -> Vec<Box<dyn Plugin>> {
    vec![
        Box::new(LedgerPlugin),
        Box::new(BpkPlugin::new()),
        Box::new(MarketPlugin),
        Box::new(TokenPlugin),
    ]
}

#[test]
fn market_and_token_systems_do_not_conflict() {
    let mut net = Net::with_plugins(&[], config(true, 64), every_plugin, &[]);
    // The schedule's graph is built when it first runs.
    net.block_ok(vec![]);
    let chain = net.chain();
    let names: std::collections::HashMap<_, String> = chain
        .schedule()
        .systems()
        .expect("the schedule has run")
        .map(|(k, s)| (k, s.name().to_string()))
        .collect();
    let conflicts: Vec<(String, String)> = chain
        .schedule()
        .graph()
        .conflicting_systems()
        .iter()
        .map(|(a, b, _)| (names[a].clone(), names[b].clone()))
        .collect();
    let names: Vec<String> = names.into_values().collect();
    for sys in ["apply_market", "apply_token", "apply_bpk", "load_market"] {
        assert!(
            names.iter().any(|n| n.ends_with(sys)),
            "{sys} is not in the schedule: {names:?}"
        );
    }
    let conflict = |x: &str, y: &str| {
        conflicts
            .iter()
            .any(|(a, b)| (a.ends_with(x) && b.ends_with(y)) || (a.ends_with(y) && b.ends_with(x)))
    };
    // Both run in the Apply stage, unordered: no conflict means bevy may
    // run them at once.
    assert!(
        !conflict("apply_market", "apply_token"),
        "market and token conflict: {conflicts:?}"
    );
    // The only unordered conflicts are the Gather systems, which move each
    // plugin's effects into the block's outputs in any order (writes are
    // sorted by key, credits and supply deltas summed).
    for (a, b) in &conflicts {
        assert!(
            a.contains("gather") && b.contains("gather"),
            "unexpected conflict between {a} and {b}"
        );
    }
}
