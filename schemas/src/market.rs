//! The market and token payloads (whitepaper 2.1–2.3, 5, 6): their owned
//! forms, their limits, their builders and readers, and the signed messages
//! of the off-chain receipts (metering) and usage attestations (CPP).
//!
//! Every limit a node applies to these payloads is checked here, once, at
//! decode ([`check`]): enum values this node does not know, a region that is
//! not a geohash, lists above their bounds, and amounts whose escrow
//! (`qty × price`) does not fit `u128`. Execution may then compute
//! [`PayloadSpec::escrow`](crate::PayloadSpec::escrow) without overflow.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use crate::wire::{
    self, Authority, BidGas, BlsSignature, BurnForGas, Buy, Bytes32, CancelPolicy, ClaimChannel,
    ClusterBuy as WireClusterBuy, ConfirmUse, DealId, DelistSku, ListSku, OpenChannel,
    OracleReport, Order, Payload, PlaceBid, Preference, PriceModel, PriceTerms, RegisterKind,
    SetPolicy, SkuId, TxBody, Unit, UpdateSku,
};
use crate::{AccountId, DecodeError, Hash32, SignatureBytes, amount, wire_amount};

/// Longest geohash a region may have (12 characters: about 4 cm).
pub const GEOHASH_CHARS_MAX: usize = 12;
/// Most accounts in a SKU's allowlist.
pub const ALLOW_MAX: usize = 64;
/// Most BPK clusters a SKU may admit.
pub const CLUSTERS_MAX: usize = 64;
/// Longest name of a custom resource kind, in bytes.
pub const KIND_NAME_BYTES_MAX: usize = 32;
/// The first number given to a custom resource kind; 0–5 are built in.
pub const CUSTOM_KIND_FIRST: u16 = 256;
/// The built-in resource kinds, by number.
pub const BUILTIN_KINDS: [&str; 6] = ["power", "network", "data", "compute", "storage", "service"];
/// GAS base units in one fiat unit (GAS is the stable tier: one GAS unit is
/// a millionth of the oracle's fiat unit), and so in one lot of the GAS
/// auction.
pub const GAS_PER_FIAT: u128 = 1_000_000;

/// The file identifier of a [`ClusterBuy`] in an intent's payload.
pub const CLUSTER_BUY_IDENTIFIER: &str = "IMKB";

/// A purchase through an anonymous intent (`ClusterBuy` in `int.fbs`): the
/// payload of an `AnonIntent` whose target is the SKU's seller. The chain
/// recognises it by its file identifier; any other intent payload stays
/// opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterBuy {
    /// The SKU bought (price tag or CPP).
    pub sku: SkuRef,
    /// Units.
    pub qty: u64,
    /// Highest price per unit (the sender's lock is `qty ×` this).
    pub max_unit_price: u128,
    /// Makes two purchases of the same terms distinct intents (the
    /// nullifier admits one intent per payload per epoch).
    pub reference: u64,
}

impl ClusterBuy {
    /// The intent payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(128);
        let sku = self.sku.wire();
        let max = wire_amount(self.max_unit_price);
        let o = WireClusterBuy::create(
            &mut fbb,
            &wire::ClusterBuyArgs {
                sku: Some(&sku),
                qty: self.qty,
                max_unit_price: Some(&max),
                reference: self.reference,
            },
        );
        fbb.finish(o, Some(CLUSTER_BUY_IDENTIFIER));
        fbb.finished_data().to_vec()
    }

    /// The purchase an intent payload holds; `None` for any payload that is
    /// not one (no identifier, malformed, longer than an intent payload, or
    /// with an escrow that does not fit `u128`).
    pub fn decode(payload: &[u8]) -> Option<Self> {
        // The identifier check reads bytes 4..8 unchecked.
        if payload.len() < 8
            || payload.len() > crate::INTENT_PAYLOAD_BYTES_MAX
            || !flatbuffers::buffer_has_identifier(payload, CLUSTER_BUY_IDENTIFIER, false)
        {
            return None;
        }
        let opts = flatbuffers::VerifierOptions {
            max_depth: 4,
            max_tables: 4,
            max_apparent_size: 2 * crate::INTENT_PAYLOAD_BYTES_MAX,
            ignore_missing_null_terminator: false,
        };
        let b = flatbuffers::root_with_opts::<WireClusterBuy>(&opts, payload).ok()?;
        let c = Self {
            sku: SkuRef::from_wire(b.sku()),
            qty: b.qty(),
            max_unit_price: amount(b.max_unit_price()),
            reference: b.reference(),
        };
        total(c.qty, c.max_unit_price).map(|_| c)
    }
}

/// The characters of a geohash (base 32 without a, i, l, o).
const GEOHASH_ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

/// Whether `s` is a geohash of `min..=GEOHASH_CHARS_MAX` characters.
pub fn is_geohash(s: &str, min: usize) -> bool {
    (min..=GEOHASH_CHARS_MAX).contains(&s.len()) && s.bytes().all(|c| GEOHASH_ALPHABET.contains(&c))
}

/// A SKU id: the seller and the nonce of the `ListSku` that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SkuRef {
    /// The account that listed it and is paid for it.
    pub seller: AccountId,
    /// Nonce of the listing transaction.
    pub seq: u64,
}

impl SkuRef {
    /// Bytes of the id: seller ‖ seq (big-endian), 40 bytes.
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..32].copy_from_slice(&self.seller);
        b[32..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    /// The id from its 40 bytes.
    pub fn from_bytes(b: &[u8; 40]) -> Self {
        let mut seller = [0u8; 32];
        seller.copy_from_slice(&b[..32]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[32..]);
        Self {
            seller,
            seq: u64::from_be_bytes(seq),
        }
    }

    fn wire(&self) -> SkuId {
        SkuId::new(&Bytes32(self.seller), self.seq)
    }

    fn from_wire(s: &SkuId) -> Self {
        Self {
            seller: s.seller().0,
            seq: s.seq(),
        }
    }
}

/// A channel or a CPP order: its SKU, its buyer, and the nonce of the
/// buyer's `OpenChannel` or `Order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DealRef {
    /// The SKU the deal is on.
    pub sku: SkuRef,
    /// The buyer who escrowed.
    pub buyer: AccountId,
    /// Nonce of the buyer's opening transaction.
    pub nonce: u64,
}

impl DealRef {
    /// Bytes of the id: sku (40) ‖ buyer (32) ‖ nonce (8, big-endian).
    pub fn to_bytes(&self) -> [u8; 80] {
        let mut b = [0u8; 80];
        b[..40].copy_from_slice(&self.sku.to_bytes());
        b[40..72].copy_from_slice(&self.buyer);
        b[72..].copy_from_slice(&self.nonce.to_be_bytes());
        b
    }

    /// The id from its 80 bytes.
    pub fn from_bytes(b: &[u8; 80]) -> Self {
        let mut sku = [0u8; 40];
        sku.copy_from_slice(&b[..40]);
        let mut buyer = [0u8; 32];
        buyer.copy_from_slice(&b[40..72]);
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&b[72..]);
        Self {
            sku: SkuRef::from_bytes(&sku),
            buyer,
            nonce: u64::from_be_bytes(nonce),
        }
    }

    fn wire(&self) -> DealId {
        DealId::new(&self.sku.wire(), &Bytes32(self.buyer), self.nonce)
    }

    fn from_wire(d: &DealId) -> Self {
        Self {
            sku: SkuRef::from_wire(d.sku()),
            buyer: d.buyer().0,
            nonce: d.nonce(),
        }
    }
}

/// A price model and its parameters (see `PriceTerms` in `int.fbs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// Which of the four models.
    pub model: PriceModel,
    /// Challenge window (metered), bidding window (auction), timeout (CPP);
    /// 0 for a price tag.
    pub period_blocks: u32,
    /// Price per unit, advertised rate (metered) or reserve (auction), GAS.
    pub unit_price: u128,
}

/// The fields of a `ListSku`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuListing {
    /// Resource kind (0–5 built in, 256 and up registered).
    pub kind: u16,
    /// What a unit measures.
    pub unit: Unit,
    /// Price model and parameters.
    pub terms: Terms,
    /// Units on offer.
    pub capacity: u64,
    /// Geohash of where the resource is.
    pub region: String,
    /// Who may buy.
    pub authority: Authority,
    /// The accounts admitted under [`Authority::Allowlist`].
    pub allow: Vec<AccountId>,
    /// The clusters admitted under [`Authority::Clusters`].
    pub clusters: Vec<u32>,
    /// Hash of off-chain metadata.
    pub metadata_hash: Hash32,
}

/// The fields of a `SetPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    /// Resource kind to buy.
    pub kind: u16,
    /// Highest price per unit to pay.
    pub max_unit_price: u128,
    /// Most GAS spent per epoch.
    pub budget_per_epoch: u128,
    /// Geohash, 0 to 12 characters. Under `Cheapest`, the area the SKU
    /// must lie in (its region starts with this; empty: anywhere); under
    /// `Nearest`, the buyer's position: SKUs sharing a longer prefix with it
    /// come first, searched outward one character at a time.
    pub region: String,
    /// How to choose among matching SKUs.
    pub preference: Preference,
    /// Price model to buy through (price tag or CPP).
    pub model: PriceModel,
    /// Units per purchase.
    pub units: u64,
    /// Blocks between purchases.
    pub interval_blocks: u32,
    /// GAS added to the policy's escrow.
    pub deposit: u128,
}

/// What a payload locks from its sender's balances in the Debit stage,
/// before the plugin that owns it decides it: the plugin then spends,
/// escrows or refunds exactly this much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Escrow {
    /// INT locked.
    pub int: u128,
    /// GAS locked.
    pub gas: u128,
}

impl Escrow {
    /// Nothing locked.
    pub const NONE: Escrow = Escrow { int: 0, gas: 0 };

    /// Whether nothing is locked.
    pub fn is_none(&self) -> bool {
        self.int == 0 && self.gas == 0
    }
}

/// `qty × price`, or an error when it does not fit `u128`.
pub fn total(qty: u64, price: u128) -> Option<u128> {
    price.checked_mul(qty as u128)
}

fn known_model(m: PriceModel) -> bool {
    (PriceModel::ENUM_MIN..=PriceModel::ENUM_MAX).contains(&m.0)
}

fn bad(what: &'static str) -> DecodeError {
    DecodeError::InvalidPayload(what)
}

fn fits(qty: u64, price: &wire::U128) -> Result<(), DecodeError> {
    total(qty, amount(price))
        .map(|_| ())
        .ok_or(bad("quantity times price overflows u128"))
}

/// The limits of the market and token payloads; `Ok(false)` for a payload
/// type this module does not own.
pub(crate) fn check(body: &TxBody<'_>) -> Result<bool, DecodeError> {
    let unknown = || DecodeError::UnknownPayload(body.payload_type().0);
    match body.payload_type() {
        Payload::ListSku => {
            let l = body.payload_as_list_sku().ok_or_else(unknown)?;
            if !known_model(l.terms().model()) {
                return Err(bad("unknown price model"));
            }
            if !(Unit::ENUM_MIN..=Unit::ENUM_MAX).contains(&l.unit().0) {
                return Err(bad("unknown unit"));
            }
            if !(Authority::ENUM_MIN..=Authority::ENUM_MAX).contains(&l.authority().0) {
                return Err(bad("unknown authority"));
            }
            if !is_geohash(l.region(), 1) {
                return Err(bad("region is not a geohash of 1 to 12 characters"));
            }
            if l.allow().map_or(0, |a| a.len()) > ALLOW_MAX {
                return Err(bad("allowlist too long"));
            }
            if l.clusters().map_or(0, |c| c.len()) > CLUSTERS_MAX {
                return Err(bad("too many clusters"));
            }
        }
        Payload::UpdateSku => {
            body.payload_as_update_sku().ok_or_else(unknown)?;
        }
        Payload::DelistSku => {
            body.payload_as_delist_sku().ok_or_else(unknown)?;
        }
        Payload::Buy => {
            let b = body.payload_as_buy().ok_or_else(unknown)?;
            fits(b.qty(), b.max_unit_price())?;
        }
        Payload::OpenChannel => {
            body.payload_as_open_channel().ok_or_else(unknown)?;
        }
        Payload::ClaimChannel => {
            body.payload_as_claim_channel().ok_or_else(unknown)?;
        }
        Payload::PlaceBid => {
            let b = body.payload_as_place_bid().ok_or_else(unknown)?;
            fits(b.qty(), b.unit_price())?;
        }
        Payload::Order => {
            let o = body.payload_as_order().ok_or_else(unknown)?;
            fits(o.qty(), o.max_unit_price())?;
        }
        Payload::ConfirmUse => {
            body.payload_as_confirm_use().ok_or_else(unknown)?;
        }
        Payload::SetPolicy => {
            let p = body.payload_as_set_policy().ok_or_else(unknown)?;
            if !known_model(p.model()) {
                return Err(bad("unknown price model"));
            }
            if !(Preference::ENUM_MIN..=Preference::ENUM_MAX).contains(&p.preference().0) {
                return Err(bad("unknown preference"));
            }
            if !is_geohash(p.region(), 0) {
                return Err(bad("region is not a geohash of 0 to 12 characters"));
            }
            fits(p.units(), p.max_unit_price())?;
        }
        Payload::CancelPolicy => {
            body.payload_as_cancel_policy().ok_or_else(unknown)?;
        }
        Payload::RegisterKind => {
            let k = body.payload_as_register_kind().ok_or_else(unknown)?;
            let n = k.name();
            if n.is_empty()
                || n.len() > KIND_NAME_BYTES_MAX
                || !n
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            {
                return Err(bad("kind name is not 1 to 32 of [a-z0-9-]"));
            }
        }
        Payload::BurnForGas => {
            body.payload_as_burn_for_gas().ok_or_else(unknown)?;
        }
        Payload::OracleReport => {
            body.payload_as_oracle_report().ok_or_else(unknown)?;
        }
        Payload::BidGas => {
            let b = body.payload_as_bid_gas().ok_or_else(unknown)?;
            fits(b.lots(), b.int_per_lot())?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The owned form of a market or token payload; `None` for a payload type
/// this module does not own. Call after [`check`].
pub(crate) fn spec(body: &TxBody<'_>) -> Result<Option<crate::PayloadSpec>, DecodeError> {
    use crate::PayloadSpec as P;
    let unknown = || DecodeError::UnknownPayload(body.payload_type().0);
    let sku = |s: &SkuId| SkuRef::from_wire(s);
    Ok(Some(match body.payload_type() {
        Payload::ListSku => {
            let l = body.payload_as_list_sku().ok_or_else(unknown)?;
            let t = l.terms();
            P::ListSku(Box::new(SkuListing {
                kind: l.kind(),
                unit: l.unit(),
                terms: Terms {
                    model: t.model(),
                    period_blocks: t.period_blocks(),
                    unit_price: amount(t.unit_price()),
                },
                capacity: l.capacity(),
                region: l.region().to_string(),
                authority: l.authority(),
                allow: l
                    .allow()
                    .map(|a| a.iter().map(|x| x.0).collect())
                    .unwrap_or_default(),
                clusters: l.clusters().map(|c| c.iter().collect()).unwrap_or_default(),
                metadata_hash: l.metadata_hash().0,
            }))
        }
        Payload::UpdateSku => {
            let u = body.payload_as_update_sku().ok_or_else(unknown)?;
            P::UpdateSku {
                sku: sku(u.sku()),
                unit_price: amount(u.unit_price()),
                capacity: u.capacity(),
                metadata_hash: u.metadata_hash().0,
            }
        }
        Payload::DelistSku => {
            let d = body.payload_as_delist_sku().ok_or_else(unknown)?;
            P::DelistSku { sku: sku(d.sku()) }
        }
        Payload::Buy => {
            let b = body.payload_as_buy().ok_or_else(unknown)?;
            P::Buy {
                sku: sku(b.sku()),
                qty: b.qty(),
                max_unit_price: amount(b.max_unit_price()),
            }
        }
        Payload::OpenChannel => {
            let o = body.payload_as_open_channel().ok_or_else(unknown)?;
            P::OpenChannel {
                sku: sku(o.sku()),
                deposit: amount(o.deposit()),
                expiry: o.expiry(),
            }
        }
        Payload::ClaimChannel => {
            let c = body.payload_as_claim_channel().ok_or_else(unknown)?;
            P::ClaimChannel {
                channel: DealRef::from_wire(c.channel()),
                amount: amount(c.amount()),
                sequence: c.sequence(),
                buyer_signature: c.buyer_signature().0,
            }
        }
        Payload::PlaceBid => {
            let b = body.payload_as_place_bid().ok_or_else(unknown)?;
            P::PlaceBid {
                sku: sku(b.sku()),
                qty: b.qty(),
                unit_price: amount(b.unit_price()),
                window_end: b.window_end(),
            }
        }
        Payload::Order => {
            let o = body.payload_as_order().ok_or_else(unknown)?;
            P::Order {
                sku: sku(o.sku()),
                qty: o.qty(),
                max_unit_price: amount(o.max_unit_price()),
            }
        }
        Payload::ConfirmUse => {
            let c = body.payload_as_confirm_use().ok_or_else(unknown)?;
            P::ConfirmUse {
                order: DealRef::from_wire(c.order()),
                qty: c.qty(),
                attestation: c.attestation().map(|s| s.0),
            }
        }
        Payload::SetPolicy => {
            let p = body.payload_as_set_policy().ok_or_else(unknown)?;
            P::SetPolicy(Box::new(PolicySpec {
                kind: p.kind(),
                max_unit_price: amount(p.max_unit_price()),
                budget_per_epoch: amount(p.budget_per_epoch()),
                region: p.region().to_string(),
                preference: p.preference(),
                model: p.model(),
                units: p.units(),
                interval_blocks: p.interval_blocks(),
                deposit: amount(p.deposit()),
            }))
        }
        Payload::CancelPolicy => {
            let c = body.payload_as_cancel_policy().ok_or_else(unknown)?;
            P::CancelPolicy { kind: c.kind() }
        }
        Payload::RegisterKind => {
            let k = body.payload_as_register_kind().ok_or_else(unknown)?;
            P::RegisterKind {
                name: k.name().to_string(),
            }
        }
        Payload::BurnForGas => {
            let b = body.payload_as_burn_for_gas().ok_or_else(unknown)?;
            P::BurnForGas {
                int_amount: amount(b.int_amount()),
            }
        }
        Payload::OracleReport => {
            let r = body.payload_as_oracle_report().ok_or_else(unknown)?;
            P::OracleReport {
                int_per_fiat: amount(r.int_per_fiat()),
            }
        }
        Payload::BidGas => {
            let b = body.payload_as_bid_gas().ok_or_else(unknown)?;
            P::BidGas {
                lots: b.lots(),
                int_per_lot: amount(b.int_per_lot()),
                epoch: b.epoch(),
            }
        }
        _ => return Ok(None),
    }))
}

/// Writes a market or token payload; `None` for a payload type this module
/// does not own.
pub(crate) fn build<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    p: &crate::PayloadSpec,
) -> Option<(Payload, WIPOffset<UnionWIPOffset>)> {
    use crate::PayloadSpec as P;
    Some(match p {
        P::ListSku(l) => {
            let region = fbb.create_string(&l.region);
            let allow: Vec<Bytes32> = l.allow.iter().map(|a| Bytes32(*a)).collect();
            let allow = fbb.create_vector(&allow);
            let clusters = fbb.create_vector(&l.clusters);
            let terms = PriceTerms::new(
                l.terms.model,
                l.terms.period_blocks,
                &wire_amount(l.terms.unit_price),
            );
            let meta = Bytes32(l.metadata_hash);
            let o = ListSku::create(
                fbb,
                &wire::ListSkuArgs {
                    kind: l.kind,
                    unit: l.unit,
                    terms: Some(&terms),
                    capacity: l.capacity,
                    region: Some(region),
                    authority: l.authority,
                    allow: Some(allow),
                    clusters: Some(clusters),
                    metadata_hash: Some(&meta),
                },
            );
            (Payload::ListSku, o.as_union_value())
        }
        P::UpdateSku {
            sku,
            unit_price,
            capacity,
            metadata_hash,
        } => {
            let (s, p, m) = (
                sku.wire(),
                wire_amount(*unit_price),
                Bytes32(*metadata_hash),
            );
            let o = UpdateSku::create(
                fbb,
                &wire::UpdateSkuArgs {
                    sku: Some(&s),
                    unit_price: Some(&p),
                    capacity: *capacity,
                    metadata_hash: Some(&m),
                },
            );
            (Payload::UpdateSku, o.as_union_value())
        }
        P::DelistSku { sku } => {
            let s = sku.wire();
            let o = DelistSku::create(fbb, &wire::DelistSkuArgs { sku: Some(&s) });
            (Payload::DelistSku, o.as_union_value())
        }
        P::Buy {
            sku,
            qty,
            max_unit_price,
        } => {
            let (s, p) = (sku.wire(), wire_amount(*max_unit_price));
            let o = Buy::create(
                fbb,
                &wire::BuyArgs {
                    sku: Some(&s),
                    qty: *qty,
                    max_unit_price: Some(&p),
                },
            );
            (Payload::Buy, o.as_union_value())
        }
        P::OpenChannel {
            sku,
            deposit,
            expiry,
        } => {
            let (s, d) = (sku.wire(), wire_amount(*deposit));
            let o = OpenChannel::create(
                fbb,
                &wire::OpenChannelArgs {
                    sku: Some(&s),
                    deposit: Some(&d),
                    expiry: *expiry,
                },
            );
            (Payload::OpenChannel, o.as_union_value())
        }
        P::ClaimChannel {
            channel,
            amount,
            sequence,
            buyer_signature,
        } => {
            let (c, a, s) = (
                channel.wire(),
                wire_amount(*amount),
                BlsSignature(*buyer_signature),
            );
            let o = ClaimChannel::create(
                fbb,
                &wire::ClaimChannelArgs {
                    channel: Some(&c),
                    amount: Some(&a),
                    sequence: *sequence,
                    buyer_signature: Some(&s),
                },
            );
            (Payload::ClaimChannel, o.as_union_value())
        }
        P::PlaceBid {
            sku,
            qty,
            unit_price,
            window_end,
        } => {
            let (s, p) = (sku.wire(), wire_amount(*unit_price));
            let o = PlaceBid::create(
                fbb,
                &wire::PlaceBidArgs {
                    sku: Some(&s),
                    qty: *qty,
                    unit_price: Some(&p),
                    window_end: *window_end,
                },
            );
            (Payload::PlaceBid, o.as_union_value())
        }
        P::Order {
            sku,
            qty,
            max_unit_price,
        } => {
            let (s, p) = (sku.wire(), wire_amount(*max_unit_price));
            let o = Order::create(
                fbb,
                &wire::OrderArgs {
                    sku: Some(&s),
                    qty: *qty,
                    max_unit_price: Some(&p),
                },
            );
            (Payload::Order, o.as_union_value())
        }
        P::ConfirmUse {
            order,
            qty,
            attestation,
        } => {
            let d = order.wire();
            let a = attestation.map(BlsSignature);
            let o = ConfirmUse::create(
                fbb,
                &wire::ConfirmUseArgs {
                    order: Some(&d),
                    qty: *qty,
                    attestation: a.as_ref(),
                },
            );
            (Payload::ConfirmUse, o.as_union_value())
        }
        P::SetPolicy(p) => {
            let region = fbb.create_string(&p.region);
            let (m, b, d) = (
                wire_amount(p.max_unit_price),
                wire_amount(p.budget_per_epoch),
                wire_amount(p.deposit),
            );
            let o = SetPolicy::create(
                fbb,
                &wire::SetPolicyArgs {
                    kind: p.kind,
                    max_unit_price: Some(&m),
                    budget_per_epoch: Some(&b),
                    region: Some(region),
                    preference: p.preference,
                    model: p.model,
                    units: p.units,
                    interval_blocks: p.interval_blocks,
                    deposit: Some(&d),
                },
            );
            (Payload::SetPolicy, o.as_union_value())
        }
        P::CancelPolicy { kind } => {
            let o = CancelPolicy::create(fbb, &wire::CancelPolicyArgs { kind: *kind });
            (Payload::CancelPolicy, o.as_union_value())
        }
        P::RegisterKind { name } => {
            let n = fbb.create_string(name);
            let o = RegisterKind::create(fbb, &wire::RegisterKindArgs { name: Some(n) });
            (Payload::RegisterKind, o.as_union_value())
        }
        P::BurnForGas { int_amount } => {
            let a = wire_amount(*int_amount);
            let o = BurnForGas::create(
                fbb,
                &wire::BurnForGasArgs {
                    int_amount: Some(&a),
                },
            );
            (Payload::BurnForGas, o.as_union_value())
        }
        P::OracleReport { int_per_fiat } => {
            let a = wire_amount(*int_per_fiat);
            let o = OracleReport::create(
                fbb,
                &wire::OracleReportArgs {
                    int_per_fiat: Some(&a),
                },
            );
            (Payload::OracleReport, o.as_union_value())
        }
        P::BidGas {
            lots,
            int_per_lot,
            epoch,
        } => {
            let p = wire_amount(*int_per_lot);
            let o = BidGas::create(
                fbb,
                &wire::BidGasArgs {
                    lots: *lots,
                    int_per_lot: Some(&p),
                    epoch: *epoch,
                },
            );
            (Payload::BidGas, o.as_union_value())
        }
        _ => return None,
    })
}

/// Domain tag of a metering receipt.
pub const RECEIPT_DOMAIN: &[u8] = b"INT/market/receipt/v1";
/// Domain tag of a CPP usage attestation.
pub const ATTESTATION_DOMAIN: &[u8] = b"INT/market/usage/v1";

/// The message a buyer signs (BLS, min_sig) to pay a metered channel up to
/// `amount` GAS in total: `RECEIPT_DOMAIN ‖ chain id (u32 BE) ‖ channel (80
/// bytes) ‖ amount (u128 BE) ‖ sequence (u64 BE)`. Fixed size, so a device
/// builds it on the stack.
pub fn channel_receipt_message(
    chain_id: u32,
    channel: &DealRef,
    amount: u128,
    sequence: u64,
) -> [u8; RECEIPT_DOMAIN.len() + 4 + 80 + 16 + 8] {
    let mut m = [0u8; RECEIPT_DOMAIN.len() + 4 + 80 + 16 + 8];
    let mut o = 0;
    for part in [
        RECEIPT_DOMAIN,
        &chain_id.to_be_bytes(),
        &channel.to_bytes(),
        &amount.to_be_bytes(),
        &sequence.to_be_bytes(),
    ] {
        m[o..o + part.len()].copy_from_slice(part);
        o += part.len();
    }
    m
}

/// The message a buyer signs to attest that `total` units of a CPP order
/// were used in total (not per confirmation, so the seller cannot present
/// one attestation twice): `ATTESTATION_DOMAIN ‖ chain id ‖ order (80
/// bytes) ‖ total (u64 BE)`.
pub fn usage_attestation_message(
    chain_id: u32,
    order: &DealRef,
    total: u64,
) -> [u8; ATTESTATION_DOMAIN.len() + 4 + 80 + 8] {
    let mut m = [0u8; ATTESTATION_DOMAIN.len() + 4 + 80 + 8];
    let mut o = 0;
    for part in [
        ATTESTATION_DOMAIN,
        &chain_id.to_be_bytes(),
        &order.to_bytes(),
        &total.to_be_bytes(),
    ] {
        m[o..o + part.len()].copy_from_slice(part);
        o += part.len();
    }
    m
}

/// A metering receipt as a device keeps it: what the buyer signed and the
/// signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelReceipt {
    /// The channel.
    pub channel: DealRef,
    /// GAS paid in total up to this receipt.
    pub amount: u128,
    /// Increases with every receipt; a higher one supersedes a lower.
    pub sequence: u64,
    /// The buyer's BLS signature over [`channel_receipt_message`].
    pub signature: SignatureBytes,
}
