//! The market as a user meets it: a devnet whose simulated devices trade
//! through all four price models, standing policies and the token tiers,
//! then `int market list`, `int market policies` and the supply audit of
//! `int state`.
//!
//! Runs the real binary.

mod common;

use common::{devnet_args, json, p, run};

fn ok(args: &[&str]) -> String {
    run(args, 0).0
}

#[test]
fn devnet_trades_through_every_model_and_conserves_value() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    // 100 ms blocks for 8 s: about 80 blocks, two token epochs (40
    // blocks), so oracle medians and a GAS auction close run too.
    let sum = json(&ok(&devnet_args(d, "8", &[])));
    for model in [
        "price_tag",
        "metered",
        "auction",
        "cpp",
        "policy_buys",
        "oracle_reports",
    ] {
        assert!(
            sum[model].as_u64().is_some_and(|n| n > 0),
            "no successful {model} transactions: {sum}"
        );
    }
    assert_eq!(sum["value_conserved"], true, "{sum}");
    assert!(sum["skus"].as_u64().is_some_and(|n| n >= 24), "{sum}");
    // Every simulated buyer set a standing policy first.
    assert_eq!(sum["policies"], 16, "{sum}");

    let state = json(&ok(&["state", "--data-dir", d, "--json"]));
    assert_eq!(state["value_conserved"], true, "{state}");
    assert_eq!(state["root_ok"], true, "{state}");
    assert!(state["supply"]["fees_paid"].as_str().is_some(), "{state}");
    // About 80 blocks of 40-block epochs: the oracles' median is in force
    // and at least one GAS auction has been cleared.
    let tokens = &state["tokens"];
    assert_eq!(tokens["oracles"], 3, "{state}");
    assert!(tokens["epoch"].as_u64().is_some_and(|e| e >= 1), "{state}");
    assert!(tokens["int_per_fiat"].as_str().is_some(), "{state}");
    assert!(
        tokens["last_auction"]["lots_sold"].as_u64().is_some(),
        "{state}"
    );

    // Discovery: every model of the network kind, cheapest first.
    let list = json(&ok(&[
        "market",
        "list",
        "--data-dir",
        d,
        "--kind",
        "network",
        "--json",
    ]));
    let skus = list["skus"].as_array().expect("skus");
    assert!(skus.len() >= 4, "{list}");
    assert!(skus.iter().all(|s| s["kind"] == "network"), "{list}");
    let prices: Vec<u128> = skus
        .iter()
        .map(|s| s["unit_price"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{list}");
    // A price bound and a region prefix narrow it.
    let cheap = json(&ok(&[
        "market",
        "list",
        "--data-dir",
        d,
        "--kind",
        "network",
        "--max-price",
        &prices[0].to_string(),
        "--json",
    ]));
    assert!(
        cheap["skus"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["unit_price"].as_str().unwrap().parse::<u128>().unwrap() <= prices[0]),
        "{cheap}"
    );
    let near = json(&ok(&[
        "market",
        "list",
        "--data-dir",
        d,
        "--near",
        "wx4g",
        "--json",
    ]));
    let near_skus = near["skus"].as_array().unwrap();
    assert!(!near_skus.is_empty(), "{near}");
    assert!(
        near_skus
            .iter()
            .all(|s| s["region"].as_str().unwrap().starts_with("wx4g")),
        "{near}"
    );
    // The custom kind the simulated seller registered is listed by name.
    let custom = json(&ok(&[
        "market",
        "list",
        "--data-dir",
        d,
        "--kind",
        "ev-charging",
        "--json",
    ]));
    assert!(custom["count"].as_u64().is_some_and(|n| n >= 1), "{custom}");
    // The table form prints a header and a count.
    let table = ok(&["market", "list", "--data-dir", d, "--kind", "power"]);
    assert!(
        table.contains("unit_price") && table.contains("SKUs at height"),
        "{table}"
    );

    // Bad input: clear errors, no panic.
    for (args, says) in [
        (vec!["--kind", "teleport"], "unknown kind"),
        (vec!["--near", "wx4a"], "geohash"),
        (vec!["--limit", "0"], "--limit"),
    ] {
        let mut all = vec!["market", "list", "--data-dir", d];
        all.extend(args);
        let (_, err) = run(&all, 1);
        assert!(err.contains(says), "{all:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let empty = tempfile::tempdir().unwrap();
    let (_, err) = run(&["market", "list", "--data-dir", p(empty.path())], 1);
    assert!(err.contains("int devnet"), "{err}");

    // The standing policies: every buyer's, their purchases summing to the
    // summary's; one owner's alone.
    let pols = json(&ok(&["market", "policies", "--data-dir", d, "--json"]));
    let all = pols["policies"].as_array().expect("policies");
    assert_eq!(all.len(), 16, "{pols}");
    let buys: u64 = all.iter().map(|p| p["buys"].as_u64().unwrap()).sum();
    assert_eq!(buys, sum["policy_buys"].as_u64().unwrap(), "{pols}");
    let owner = all[3]["owner"].as_str().unwrap();
    let one = json(&ok(&[
        "market",
        "policies",
        "--data-dir",
        d,
        "--owner",
        owner,
        "--json",
    ]));
    assert_eq!(one["count"], 1, "{one}");
    assert_eq!(one["policies"][0], all[3], "{one}");
    let table = ok(&["market", "policies", "--data-dir", d]);
    assert!(table.contains("policies at height"), "{table}");
    for (args, says) in [
        (vec!["--owner", "zz"], "not hex"),
        (vec!["--owner", "abcd"], "32 bytes"),
        (vec!["--limit", "0"], "--limit"),
    ] {
        let mut all = vec!["market", "policies", "--data-dir", d];
        all.extend(args);
        let (_, err) = run(&all, 1);
        assert!(err.contains(says), "{all:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
