//! The subcommands of `int`, one module each.

pub mod devnet;
pub mod gpu;
pub mod keys;
pub mod market;
pub mod run;
pub mod state;
pub mod tx;
pub mod zk;

/// Prints a result: one JSON object with `json`, else a `key value` line
/// per member.
pub fn print(v: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(v)?);
    } else if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            match val {
                serde_json::Value::String(s) => println!("{k:<18} {s}"),
                other => println!("{k:<18} {other}"),
            }
        }
    }
    Ok(())
}
