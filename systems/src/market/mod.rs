//! The resource market (whitepaper 2.1–2.3, 5): SKUs, discovery, the four
//! price models and standing policies, as a plugin of the block schedule.
