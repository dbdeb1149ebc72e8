//! Supply accounting of the two token tiers (whitepaper 6, DESIGN "value
//! is conserved").
//!
//! The chain keeps one state object, [`SUPPLY_KEY`], with the totals of
//! INT and GAS, what was burned and minted, what plugins hold in escrow,
//! and the fees paid. Every block changes it by a [`SupplyDelta`] that the
//! systems fill, and the chain checks, per token, before it commits:
//!
//! ```text
//! locked from senders + released from escrow + minted
//!     == credited to accounts + put in escrow + burned
//! ```
//!
//! so a plugin that loses or invents a unit stops the block. The audit
//! ([`Supply::audit`]) checks the stored state itself: every account's
//! balance plus the escrow equals the total, to the unit.

use int_schemas::Escrow;

use crate::storage::{StateView, StorageError};

/// Key of the supply object in the state table.
pub const SUPPLY_KEY: &[u8] = b"ledger/supply";
const SUPPLY_VERSION: u8 = 1;
/// Encoded size of a [`Supply`].
pub const SUPPLY_BYTES: usize = 1 + 16 * 9;

/// The chain's token totals, as stored under [`SUPPLY_KEY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Supply {
    /// INT in existence: in accounts and in escrow.
    pub int_total: u128,
    /// GAS in existence: in accounts and in escrow.
    pub gas_total: u128,
    /// INT at genesis.
    pub int_genesis: u128,
    /// GAS at genesis.
    pub gas_genesis: u128,
    /// INT burned for GAS (by `BurnForGas` and the GAS auction).
    pub int_burned: u128,
    /// GAS minted from burned INT.
    pub gas_minted: u128,
    /// INT held in escrow by plugins (GAS-auction bids).
    pub int_escrow: u128,
    /// GAS held in escrow by plugins (channels, bids, orders, policies).
    pub gas_escrow: u128,
    /// GAS paid as fees, in total (the fees went to proposers' accounts).
    pub fees_paid: u128,
}

impl Supply {
    /// The supply of a genesis allocation.
    pub fn genesis(int: u128, gas: u128) -> Self {
        Self {
            int_total: int,
            gas_total: gas,
            int_genesis: int,
            gas_genesis: gas,
            ..Self::default()
        }
    }

    /// Encodes the record (fixed little-endian layout, version first).
    pub fn encode(&self) -> [u8; SUPPLY_BYTES] {
        let mut out = [0u8; SUPPLY_BYTES];
        out[0] = SUPPLY_VERSION;
        for (i, v) in self.fields().iter().enumerate() {
            out[1 + 16 * i..17 + 16 * i].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes a record; an error when the bytes are not one.
    pub fn decode(b: &[u8]) -> Result<Self, StorageError> {
        let corrupt = |what: &str| StorageError::Corrupt {
            table: "objects (ledger/supply)",
            what: what.to_string(),
        };
        if b.len() != SUPPLY_BYTES {
            return Err(corrupt("wrong length"));
        }
        if b[0] != SUPPLY_VERSION {
            return Err(corrupt("unknown version"));
        }
        let f = |i: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[1 + 16 * i..17 + 16 * i]);
            u128::from_le_bytes(a)
        };
        let s = Self {
            int_total: f(0),
            gas_total: f(1),
            int_genesis: f(2),
            gas_genesis: f(3),
            int_burned: f(4),
            gas_minted: f(5),
            int_escrow: f(6),
            gas_escrow: f(7),
            fees_paid: f(8),
        };
        s.check_identities().map_err(corrupt)?;
        Ok(s)
    }

    fn fields(&self) -> [u128; 9] {
        [
            self.int_total,
            self.gas_total,
            self.int_genesis,
            self.gas_genesis,
            self.int_burned,
            self.gas_minted,
            self.int_escrow,
            self.gas_escrow,
            self.fees_paid,
        ]
    }

    /// The identities the totals must satisfy on their own: INT total is
    /// genesis minus burned, GAS total genesis plus minted, escrow within
    /// the total.
    pub fn check_identities(&self) -> Result<(), &'static str> {
        if self.int_genesis.checked_sub(self.int_burned) != Some(self.int_total) {
            return Err("INT total is not genesis minus burned");
        }
        if self.gas_genesis.checked_add(self.gas_minted) != Some(self.gas_total) {
            return Err("GAS total is not genesis plus minted");
        }
        if self.int_escrow > self.int_total || self.gas_escrow > self.gas_total {
            return Err("escrow above the total");
        }
        Ok(())
    }

    /// Applies one block's delta. `None` when the result breaks an
    /// identity (escrow released that was never escrowed, a burn above the
    /// total, a mint above `u128::MAX`): the block is wrong.
    pub fn apply(&self, d: &SupplyDelta) -> Option<Self> {
        let s = Self {
            int_total: self.int_total.checked_sub(d.int_burned)?,
            gas_total: self.gas_total.checked_add(d.gas_minted)?,
            int_genesis: self.int_genesis,
            gas_genesis: self.gas_genesis,
            int_burned: self.int_burned.checked_add(d.int_burned)?,
            gas_minted: self.gas_minted.checked_add(d.gas_minted)?,
            int_escrow: self
                .int_escrow
                .checked_add(d.escrowed.int)?
                .checked_sub(d.released.int)?,
            gas_escrow: self
                .gas_escrow
                .checked_add(d.escrowed.gas)?
                .checked_sub(d.released.gas)?,
            fees_paid: self.fees_paid.checked_add(d.fees)?,
        };
        s.check_identities().ok()?;
        Some(s)
    }

    /// Checks the state against the totals: `accounts` is the sum of every
    /// account's balances, `escrow` the sum of every escrow object the
    /// plugins hold.
    pub fn audit(&self, accounts: Escrow, escrow: Escrow) -> Audit {
        let int_held = accounts.int.checked_add(escrow.int);
        let gas_held = accounts.gas.checked_add(escrow.gas);
        Audit {
            int_in_accounts: accounts.int,
            gas_in_accounts: accounts.gas,
            int_in_escrow: escrow.int,
            gas_in_escrow: escrow.gas,
            int_balanced: int_held == Some(self.int_total),
            gas_balanced: gas_held == Some(self.gas_total),
            escrow_matches: escrow.int == self.int_escrow && escrow.gas == self.gas_escrow,
            identities_hold: self.check_identities().is_ok(),
        }
    }
}

/// What [`Supply::audit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// INT summed over accounts.
    pub int_in_accounts: u128,
    /// GAS summed over accounts.
    pub gas_in_accounts: u128,
    /// INT summed over escrow objects.
    pub int_in_escrow: u128,
    /// GAS summed over escrow objects.
    pub gas_in_escrow: u128,
    /// Accounts plus escrow equal the INT total.
    pub int_balanced: bool,
    /// Accounts plus escrow equal the GAS total.
    pub gas_balanced: bool,
    /// The escrow objects sum to the escrow totals.
    pub escrow_matches: bool,
    /// The totals agree with genesis, burns and mints.
    pub identities_hold: bool,
}

impl Audit {
    /// Whether value is conserved to the unit.
    pub fn balanced(&self) -> bool {
        self.int_balanced && self.gas_balanced && self.escrow_matches && self.identities_hold
    }
}

/// How one block changes the supply; systems add to it (a resource of the
/// block world), the chain checks and applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SupplyDelta {
    /// Put into plugin escrow objects.
    pub escrowed: Escrow,
    /// Taken out of plugin escrow objects (paid or refunded by a credit).
    pub released: Escrow,
    /// INT destroyed.
    pub int_burned: u128,
    /// GAS created.
    pub gas_minted: u128,
    /// Fees paid.
    pub fees: u128,
}

/// The INT and GAS of every stored account of a chain, summed (one pass
/// over the state log's accounts); `None` when a sum exceeds u128, which a chain
/// whose totals fit cannot reach.
pub fn account_totals(
    store: &dyn StateView,
    chain_id: u32,
) -> Result<Option<Escrow>, StorageError> {
    let mut sum = Some(Escrow::NONE);
    store.for_each_account(chain_id, |_, r| {
        sum = sum.and_then(|s| {
            escrow_add(
                s,
                Escrow {
                    int: r.int,
                    gas: r.gas,
                },
            )
        });
    })?;
    Ok(sum)
}

/// Adds `b` to `a`, checked.
pub fn escrow_add(a: Escrow, b: Escrow) -> Option<Escrow> {
    Some(Escrow {
        int: a.int.checked_add(b.int)?,
        gas: a.gas.checked_add(b.gas)?,
    })
}

impl SupplyDelta {
    /// Adds another delta (two plugins' parts of one block), checked.
    pub fn merge(&mut self, o: &SupplyDelta) -> Option<()> {
        self.escrowed = escrow_add(self.escrowed, o.escrowed)?;
        self.released = escrow_add(self.released, o.released)?;
        self.int_burned = self.int_burned.checked_add(o.int_burned)?;
        self.gas_minted = self.gas_minted.checked_add(o.gas_minted)?;
        self.fees = self.fees.checked_add(o.fees)?;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let s = Supply::genesis(1000, 500)
            .apply(&SupplyDelta {
                escrowed: Escrow { int: 7, gas: 9 },
                released: Escrow { int: 2, gas: 3 },
                int_burned: 10,
                gas_minted: 20,
                fees: 4,
            })
            .unwrap();
        assert_eq!(Supply::decode(&s.encode()).unwrap(), s);
        assert_eq!((s.int_total, s.gas_total), (990, 520));
        assert_eq!((s.int_escrow, s.gas_escrow), (5, 6));
        assert!(Supply::decode(&s.encode()[1..]).is_err());
        let mut b = s.encode();
        b[0] = 9;
        assert!(Supply::decode(&b).is_err());
        // Totals that break the identities are corrupt.
        let mut b = s.encode();
        b[1] ^= 1;
        assert!(Supply::decode(&b).is_err());
    }

    #[test]
    fn impossible_deltas_are_refused() {
        let g = Supply::genesis(10, 10);
        let release = SupplyDelta {
            released: Escrow { int: 0, gas: 1 },
            ..Default::default()
        };
        assert_eq!(g.apply(&release), None);
        let burn = SupplyDelta {
            int_burned: 11,
            ..Default::default()
        };
        assert_eq!(g.apply(&burn), None);
        let mint = SupplyDelta {
            gas_minted: u128::MAX,
            ..Default::default()
        };
        assert_eq!(g.apply(&mint), None);
    }

    #[test]
    fn audit_balances_to_the_unit() {
        let s = Supply::genesis(100, 100)
            .apply(&SupplyDelta {
                escrowed: Escrow { int: 0, gas: 30 },
                ..Default::default()
            })
            .unwrap();
        assert!(
            s.audit(Escrow { int: 100, gas: 70 }, Escrow { int: 0, gas: 30 })
                .balanced()
        );
        assert!(
            !s.audit(Escrow { int: 100, gas: 71 }, Escrow { int: 0, gas: 30 })
                .balanced()
        );
        assert!(
            !s.audit(Escrow { int: 100, gas: 70 }, Escrow { int: 0, gas: 29 })
                .balanced()
        );
    }
}
