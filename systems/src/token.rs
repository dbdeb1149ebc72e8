//! The two token tiers (whitepaper 6): burning INT for GAS at the oracle
//! price, the oracles' reports, and the epoch's GAS auction.
