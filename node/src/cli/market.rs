//! `int market`: what the resource market offers, from a data directory.
//!
//! `int market list --kind network --near wx4g --max-price P [--json]`
//! reads the market's discovery index (kind, geohash prefix, price) at the
//! committed head: the same query the gateway's RPC serves.
//!
//! `int market policies [--owner ACCOUNT] [--json]` lists the standing
//! policies (all, or one account's): terms, balance, purchases made.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use int_engine::storage::StateView;
use int_schemas::market::{BUILTIN_KINDS, is_geohash};
use int_systems::market::{self, PolicyView, SkuQuery, SkuView};
use serde_json::{Value, json};

use crate::cli::state::open;

/// `int market` subcommands.
#[derive(Subcommand)]
pub enum MarketCmd {
    /// SKUs on offer, cheapest first.
    List(ListArgs),
    /// Standing purchase policies, by owner then kind.
    Policies(PoliciesArgs),
}

/// Arguments of `int market policies`.
#[derive(Args)]
pub struct PoliciesArgs {
    /// Data directory of the node.
    #[arg(long, default_value = "int-data")]
    data_dir: PathBuf,
    /// Chain to read.
    #[arg(long, default_value_t = 1)]
    chain_id: u32,
    /// Only this account's policies (64 hex characters).
    #[arg(long)]
    owner: Option<String>,
    /// Most policies to show.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// One JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `int market list`.
#[derive(Args)]
pub struct ListArgs {
    /// Data directory of the node.
    #[arg(long, default_value = "int-data")]
    data_dir: PathBuf,
    /// Chain to read.
    #[arg(long, default_value_t = 1)]
    chain_id: u32,
    /// Resource kind: power, network, data, compute, storage, service, a
    /// registered custom kind's name, or a number.
    #[arg(long)]
    kind: Option<String>,
    /// Geohash prefix the SKU's region must start with (e.g. wx4g).
    #[arg(long, default_value = "")]
    near: String,
    /// Highest unit price, in GAS base units.
    #[arg(long)]
    max_price: Option<u128>,
    /// Most SKUs to show.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// One JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// The store in `data_dir` and the height of `chain_id`'s head, which the
/// reads below are made at.
fn open_at_head(data_dir: &Path, chain_id: u32) -> Result<(Arc<dyn StateView>, u64)> {
    let store = open(data_dir)?.snapshot()?;
    let head = store
        .head(chain_id)?
        .with_context(|| format!("chain {chain_id} has no blocks"))?;
    Ok((store, head.height))
}

/// A kind's number from its name (built in or registered) or number.
fn parse_kind(store: &dyn StateView, chain_id: u32, s: &str) -> Result<u16> {
    if let Some(k) = market::kind_by_name(store, chain_id, s)? {
        return Ok(k);
    }
    if let Ok(n) = s.parse::<u16>() {
        return Ok(n);
    }
    bail!(
        "unknown kind {s:?}: use one of {} or a registered custom kind",
        BUILTIN_KINDS.join(", ")
    )
}

fn kind_label(store: &dyn StateView, chain_id: u32, k: u16) -> Result<String> {
    Ok(market::kind_name(store, chain_id, k)?.unwrap_or_else(|| k.to_string()))
}

fn policy_json(store: &dyn StateView, chain_id: u32, p: &PolicyView) -> Result<Value> {
    let r = &p.record;
    Ok(json!({
        "owner": hex::encode(p.owner),
        "kind": kind_label(store, chain_id, p.kind)?,
        "model": r.model.variant_name().unwrap_or("?"),
        "preference": r.preference.variant_name().unwrap_or("?"),
        "region": r.region,
        "units": r.units,
        "interval_blocks": r.interval_blocks,
        "max_unit_price": r.max_unit_price.to_string(),
        "budget_per_epoch": r.budget_per_epoch.to_string(),
        "balance": r.balance.to_string(),
        "epoch": r.epoch,
        "spent_in_epoch": r.spent_in_epoch.to_string(),
        "next_due": r.next_due,
        "buys": r.buys,
        "spent_total": r.spent_total.to_string(),
    }))
}

/// `int market policies`.
fn list_policies(a: &PoliciesArgs) -> Result<()> {
    let owner = a
        .owner
        .as_deref()
        .map(|h| crate::cli::state::parse_account(h, "--owner"))
        .transpose()?;
    if a.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let (store, height) = open_at_head(&a.data_dir, a.chain_id)?;
    let found = market::policies(&*store, a.chain_id, owner.as_ref(), a.limit)?;
    let rows = found
        .iter()
        .map(|p| policy_json(&*store, a.chain_id, p))
        .collect::<Result<Vec<_>>>()?;
    let header = format!(
        "{:<16} {:<8} {:<8} {:<9} {:<12} {:>5} {:>8} {:>12} {:>6} {:>12} {:>8}",
        "owner",
        "kind",
        "model",
        "prefer",
        "region",
        "units",
        "interval",
        "balance",
        "buys",
        "spent",
        "next_due"
    );
    let lines = found.iter().zip(&rows).map(|(p, r)| {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
        format!(
            "{:<16} {:<8} {:<8} {:<9} {:<12} {:>5} {:>8} {:>12} {:>6} {:>12} {:>8}",
            hex::encode(&p.owner[..8]),
            s("kind"),
            s("model"),
            s("preference"),
            s("region"),
            p.record.units,
            p.record.interval_blocks,
            s("balance"),
            p.record.buys,
            s("spent_total"),
            p.record.next_due,
        )
    });
    print_rows(a.json, height, "policies", &rows, &header, lines)
}

/// Prints `rows` read at `height`: as one JSON document `{height, count,
/// <what in lower case>: rows}` with `json`, else as `header` and `lines`
/// with a count below (or a line saying there are none).
fn print_rows(
    json: bool,
    height: u64,
    what: &str,
    rows: &[Value],
    header: &str,
    lines: impl Iterator<Item = String>,
) -> Result<()> {
    if json {
        let mut doc = serde_json::Map::new();
        doc.insert("height".into(), height.into());
        doc.insert("count".into(), rows.len().into());
        doc.insert(what.to_lowercase(), rows.into());
        println!("{}", Value::Object(doc));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no {what} match (height {height})");
        return Ok(());
    }
    println!("{header}");
    for line in lines {
        println!("{line}");
    }
    println!("{} {what} at height {height}", rows.len());
    Ok(())
}

pub fn view_json(store: &dyn StateView, chain_id: u32, v: &SkuView) -> Result<Value> {
    Ok(json!({
        "sku": format!("{}:{}", hex::encode(v.id.seller), v.id.seq),
        "seller": hex::encode(v.id.seller),
        "seq": v.id.seq,
        "kind": kind_label(store, chain_id, v.listing.kind)?,
        "unit": v.listing.unit.variant_name().unwrap_or("?"),
        "model": v.listing.terms.model.variant_name().unwrap_or("?"),
        "unit_price": v.listing.terms.unit_price.to_string(),
        "period_blocks": v.listing.terms.period_blocks,
        "capacity": v.listing.capacity,
        "region": v.listing.region,
        "authority": v.listing.authority.variant_name().unwrap_or("?"),
        "listed_height": v.listed_height,
    }))
}

/// Runs `int market …`.
pub fn run(cmd: MarketCmd) -> Result<()> {
    match cmd {
        MarketCmd::Policies(a) => list_policies(&a)?,
        MarketCmd::List(a) => {
            if !a.near.is_empty() && !is_geohash(&a.near, 1) {
                bail!(
                    "--near {:?} is not a geohash prefix (1 to 12 of 0-9, b-z without a i l o)",
                    a.near
                );
            }
            if a.limit == 0 {
                bail!("--limit must be at least 1");
            }
            let (store, height) = open_at_head(&a.data_dir, a.chain_id)?;
            let kind = a
                .kind
                .as_deref()
                .map(|k| parse_kind(&*store, a.chain_id, k))
                .transpose()?;
            let q = SkuQuery {
                kind,
                near: a.near.clone(),
                max_price: a.max_price,
                limit: a.limit,
            };
            let skus = market::query(&*store, a.chain_id, &q)?;
            let rows = skus
                .iter()
                .map(|v| view_json(&*store, a.chain_id, v))
                .collect::<Result<Vec<_>>>()?;
            let header = format!(
                "{:<10} {:<9} {:>14} {:<8} {:>10} {:<12} {:<10} sku",
                "kind", "model", "unit_price", "unit", "capacity", "region", "authority"
            );
            let lines = rows.iter().map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                format!(
                    "{:<10} {:<9} {:>14} {:<8} {:>10} {:<12} {:<10} {}",
                    s("kind"),
                    s("model"),
                    s("unit_price"),
                    s("unit"),
                    // A JSON value ignores the width; the number keeps it.
                    r["capacity"].as_u64().unwrap_or_default(),
                    s("region"),
                    s("authority"),
                    s("sku")
                )
            });
            print_rows(a.json, height, "SKUs", &rows, &header, lines)?;
        }
    }
    Ok(())
}
