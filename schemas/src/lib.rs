//! INT wire formats.
//!
//! The FlatBuffers schemas under `fbs/` define everything that crosses a wire
//! or is signed; `generated/` holds the Rust code `flatc` 25.12.19 makes from
//! them (regenerate with `schemas/generate.sh`, a test checks it is fresh).
//! This module adds thin typed helpers: verified decoding with size limits
//! (inputs are hostile: every decoder returns an error, never panics) and
//! builders for the messages the node and devices produce.

#[allow(
    clippy::all,
    unused_imports,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    unsafe_op_in_unsafe_fn,
    mismatched_lifetime_syntaxes,
    missing_docs
)]
#[rustfmt::skip]
mod generated;

pub use generated::int::wire;

pub mod market;
pub use market::{
    ChannelReceipt, ClusterBuy, DealRef, Escrow, PolicySpec, SkuListing, SkuRef, Terms,
};

use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer, Verifiable, VerifierOptions};
use wire::{
    AnonIntent, Block, BlockHeader, BlockReceipts, BlockTx, BlsPublicKey, BlsSignature, Bytes32,
    DeviceKind, FieldElement, Groth16Proof, Payload, Receipt, RegisterDevice, RegisterIdentity,
    SetCentroids, Token, Transfer, TxBody, TxEnvelope, TxStatus, U128,
};

/// A 32-byte identifier: account ids, hashes, roots.
pub type Hash32 = [u8; 32];
/// An account id: `blake3(domain || public key)`, see `int_engine::crypto`.
pub type AccountId = [u8; 32];
/// A compressed min_sig BLS public key (G2).
pub type PublicKeyBytes = [u8; 96];
/// A compressed min_sig BLS signature (G1).
pub type SignatureBytes = [u8; 48];
/// A BN254 scalar-field element, 32 bytes big-endian (must be below the
/// modulus; the zk side checks that).
pub type FieldBytes = [u8; 32];
/// A Groth16 proof over BN254, arkworks' compressed form.
pub type ProofBytes = [u8; 128];

/// The BN254 scalar-field modulus r, big-endian: field elements on the
/// wire must be below it, so each value has exactly one encoding.
pub const BN254_MODULUS_BE: FieldBytes = [
    0x30, 0x64, 0x4e, 0x72, 0xe1, 0x31, 0xa0, 0x29, 0xb8, 0x50, 0x45, 0xb6, 0x81, 0x81, 0x58, 0x5d,
    0x28, 0x33, 0xe8, 0x48, 0x79, 0xb9, 0x70, 0x91, 0x43, 0xe1, 0xf5, 0x93, 0xf0, 0x00, 0x00, 0x01,
];

/// Whether `x` is a canonical BN254 scalar-field element (below r).
pub fn is_canonical_field(x: &FieldBytes) -> bool {
    x < &BN254_MODULUS_BE
}

fn field(x: &FieldElement) -> Result<(), DecodeError> {
    if is_canonical_field(&x.0) {
        Ok(())
    } else {
        Err(DecodeError::InvalidPayload(
            "field element not below the BN254 modulus",
        ))
    }
}

/// Largest `payload` of an anonymous intent, in bytes: an intent names a
/// SKU or a command, not a file.
pub const INTENT_PAYLOAD_BYTES_MAX: usize = 1024;
/// Most coordinates a `SetCentroids` carries (K, D ≤ 12 in the circuit).
pub const CENTROID_COORDS_MAX: usize = 12 * 12;

/// Largest transaction envelope accepted from a wire, in bytes. A transfer is
/// about 200 bytes and a registration about 300; the margin leaves room for
/// the payloads of later issues without letting a client make us allocate.
pub const TX_BYTES_MAX: usize = 4 * 1024;
/// Largest block accepted, in bytes.
pub const BLOCK_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Most transactions a block may carry, the one bound every layer uses: a
/// block with more is refused whole by [`decode_block`]
/// ([`DecodeError::TooManyTxs`]); `int run`'s config refuses a
/// `block_txs_max` above it; and the node's mempool holds exactly this many
/// verified transactions (one block of the largest size), refusing each
/// further one at admission until a block takes some.
pub const BLOCK_TXS_MAX: usize = 1 << 20;

/// Why bytes from a wire or a file were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer is larger than the message kind allows.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Bytes received.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// The FlatBuffers verifier rejected the buffer.
    #[error("malformed flatbuffer: {0}")]
    Malformed(#[from] InvalidFlatbuffer),
    /// The payload union holds a type this node does not know.
    #[error("unknown payload type {0}")]
    UnknownPayload(u8),
    /// A block carries more transactions than allowed.
    #[error("block carries {0} transactions, more than the limit")]
    TooManyTxs(usize),
    /// A payload whose fields are inconsistent (see the message).
    #[error("invalid payload: {0}")]
    InvalidPayload(&'static str),
    /// The header's transaction count disagrees with the block's list.
    #[error("header says {header} transactions, block holds {actual}")]
    TxCountMismatch {
        /// Count in the header.
        header: u32,
        /// Count in the block.
        actual: usize,
    },
}

fn opts(max_bytes: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: 16,
        max_tables: BLOCK_TXS_MAX * 4 + 64,
        max_apparent_size: max_bytes.saturating_mul(2),
        ignore_missing_null_terminator: false,
    }
}

fn root<'a, T>(bytes: &'a [u8], max: usize) -> Result<T::Inner, DecodeError>
where
    T: flatbuffers::Follow<'a> + Verifiable + 'a,
{
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    Ok(flatbuffers::root_with_opts::<T>(&opts(max), bytes)?)
}

/// Converts a wire amount to `u128`.
pub fn amount(x: &U128) -> u128 {
    (x.hi() as u128) << 64 | x.lo() as u128
}

/// Converts a `u128` to its wire form.
pub fn wire_amount(x: u128) -> U128 {
    U128::new(x as u64, (x >> 64) as u64)
}

/// A decoded, verified transaction: the envelope, its body, and the exact
/// body bytes that were signed.
#[derive(Clone, Copy)]
pub struct TxRef<'a> {
    /// The envelope as received.
    pub envelope: TxEnvelope<'a>,
    /// The body, verified as a FlatBuffer of its own.
    pub body: TxBody<'a>,
    /// The body bytes, exactly as signed.
    pub body_bytes: &'a [u8],
}

impl<'a> TxRef<'a> {
    /// The sender's signature.
    pub fn signature(&self) -> &'a SignatureBytes {
        &self.envelope.signature().0
    }
}

/// Verifies and decodes a transaction envelope from hostile bytes.
pub fn decode_tx(bytes: &[u8]) -> Result<TxRef<'_>, DecodeError> {
    let envelope = root::<TxEnvelope>(bytes, TX_BYTES_MAX)?;
    let body_bytes = envelope.body().bytes();
    let body = decode_body(body_bytes)?;
    Ok(TxRef {
        envelope,
        body,
        body_bytes,
    })
}

/// Verifies and decodes a transaction body and checks its payload ([`check_payload`]).
pub fn decode_body(bytes: &[u8]) -> Result<TxBody<'_>, DecodeError> {
    let body = root::<TxBody>(bytes, TX_BYTES_MAX)?;
    check_payload(&body)?;
    Ok(body)
}

/// The limits every node applies to a verified body's payload, checked
/// without copying anything: an unknown union member, a field element not
/// below the BN254 modulus, a `SetCentroids` whose coordinate count is not
/// `dims × clusters` (or above [`CENTROID_COORDS_MAX`]), an intent payload
/// above [`INTENT_PAYLOAD_BYTES_MAX`] are errors. [`decode_body`] (and so
/// [`decode_tx`] and [`decode_block`]) runs it on every body.
pub fn check_payload(body: &TxBody<'_>) -> Result<(), DecodeError> {
    let unknown = || DecodeError::UnknownPayload(body.payload_type().0);
    match body.payload_type() {
        Payload::RegisterDevice => {
            body.payload_as_register_device().ok_or_else(unknown)?;
        }
        Payload::Transfer => {
            body.payload_as_transfer().ok_or_else(unknown)?;
        }
        Payload::RegisterIdentity => {
            let r = body.payload_as_register_identity().ok_or_else(unknown)?;
            field(r.commitment())?;
        }
        Payload::SetCentroids => {
            let c = body.payload_as_set_centroids().ok_or_else(unknown)?;
            let n = c.coords().len();
            if n > CENTROID_COORDS_MAX {
                return Err(DecodeError::InvalidPayload("too many centroid coordinates"));
            }
            if n != c.dims() as usize * c.clusters() as usize {
                return Err(DecodeError::InvalidPayload(
                    "centroid coordinates are not dims x clusters",
                ));
            }
        }
        Payload::AnonIntent => {
            let a = body.payload_as_anon_intent().ok_or_else(unknown)?;
            if a.payload().len() > INTENT_PAYLOAD_BYTES_MAX {
                return Err(DecodeError::InvalidPayload("intent payload too large"));
            }
            field(a.root())?;
            field(a.nullifier())?;
            field(a.centroid_commitment())?;
        }
        _ => {
            if !market::check(body)? {
                return Err(unknown());
            }
        }
    }
    Ok(())
}

/// The payload of a verified body as a [`PayloadSpec`] (owned: an intent's
/// payload bytes are copied), after [`check_payload`]'s limits.
pub fn payload_spec(body: &TxBody<'_>) -> Result<PayloadSpec, DecodeError> {
    check_payload(body)?;
    let unknown = || DecodeError::UnknownPayload(body.payload_type().0);
    Ok(match body.payload_type() {
        Payload::RegisterDevice => {
            let r = body.payload_as_register_device().ok_or_else(unknown)?;
            PayloadSpec::RegisterDevice {
                public_key: r.public_key().0,
                pop: r.pop().0,
                kind: r.kind(),
                metadata_hash: r.metadata_hash().0,
            }
        }
        Payload::Transfer => {
            let t = body.payload_as_transfer().ok_or_else(unknown)?;
            PayloadSpec::Transfer {
                to: t.to().0,
                amount: amount(t.amount()),
                token: t.token(),
            }
        }
        Payload::RegisterIdentity => {
            let r = body.payload_as_register_identity().ok_or_else(unknown)?;
            PayloadSpec::RegisterIdentity {
                commitment: r.commitment().0,
            }
        }
        Payload::SetCentroids => {
            let c = body.payload_as_set_centroids().ok_or_else(unknown)?;
            PayloadSpec::SetCentroids {
                epoch: c.epoch(),
                dims: c.dims(),
                clusters: c.clusters(),
                coords: c.coords().iter().collect(),
            }
        }
        Payload::AnonIntent => {
            let a = body.payload_as_anon_intent().ok_or_else(unknown)?;
            PayloadSpec::AnonIntent(Box::new(AnonIntentSpec {
                proof: a.proof().0,
                root: a.root().0,
                epoch: a.epoch(),
                nullifier: a.nullifier().0,
                cluster: a.cluster(),
                centroid_commitment: a.centroid_commitment().0,
                target: a.target().0,
                payload: a.payload().bytes().to_vec(),
            }))
        }
        _ => market::spec(body)?.ok_or_else(unknown)?,
    })
}

/// A decoded, verified block: the block, its header, and each body.
pub struct BlockRef<'a> {
    /// The block as stored or received.
    pub block: Block<'a>,
    /// The header, verified as a FlatBuffer of its own.
    pub header: BlockHeader<'a>,
    /// The header bytes (the block hash is their BLAKE3 hash).
    pub header_bytes: &'a [u8],
    /// Each transaction body, verified, in block order.
    pub bodies: Vec<(TxBody<'a>, &'a [u8])>,
}

/// Verifies and decodes a whole block, headers and bodies included.
pub fn decode_block(bytes: &[u8]) -> Result<BlockRef<'_>, DecodeError> {
    let block = root::<Block>(bytes, BLOCK_BYTES_MAX)?;
    let header_bytes = block.header().bytes();
    let header = decode_header(header_bytes)?;
    let txs = block.txs();
    if txs.len() > BLOCK_TXS_MAX {
        return Err(DecodeError::TooManyTxs(txs.len()));
    }
    if header.tx_count() as usize != txs.len() {
        return Err(DecodeError::TxCountMismatch {
            header: header.tx_count(),
            actual: txs.len(),
        });
    }
    let mut bodies = Vec::with_capacity(txs.len());
    for tx in txs.iter() {
        let b = tx.body().bytes();
        bodies.push((decode_body(b)?, b));
    }
    Ok(BlockRef {
        block,
        header,
        header_bytes,
        bodies,
    })
}

/// Verifies and decodes a block header.
pub fn decode_header(bytes: &[u8]) -> Result<BlockHeader<'_>, DecodeError> {
    root::<BlockHeader>(bytes, 4 * 1024)
}

/// Verifies and decodes the receipts of a block.
pub fn decode_receipts(bytes: &[u8]) -> Result<BlockReceipts<'_>, DecodeError> {
    root::<BlockReceipts>(bytes, BLOCK_BYTES_MAX)
}

/// Verifies and decodes one receipt published on its own (the MQTT
/// gateway's receipt topic).
pub fn decode_receipt(bytes: &[u8]) -> Result<Receipt<'_>, DecodeError> {
    root::<Receipt>(bytes, RECEIPT_BYTES_MAX)
}

/// Bytes of a receipt on its own; far above the ~100 a receipt takes.
pub const RECEIPT_BYTES_MAX: usize = 1024;

/// The fields of an anonymous intent (see `AnonIntent` in `int.fbs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonIntentSpec {
    /// The Groth16 proof, compressed.
    pub proof: ProofBytes,
    /// The identity-tree root the proof was made against.
    pub root: FieldBytes,
    /// The epoch the proof is for.
    pub epoch: u64,
    /// `Poseidon(secret, epoch, scope)`.
    pub nullifier: FieldBytes,
    /// The behaviour cluster the sender proves to belong to.
    pub cluster: u32,
    /// Commitment to the epoch's centroids.
    pub centroid_commitment: FieldBytes,
    /// The device (or SKU owner) the intent is for.
    pub target: AccountId,
    /// What the user wants, opaque to the chain.
    pub payload: Vec<u8>,
}

/// The payload of a transaction: what a builder writes, and what ingress
/// extracts once from a verified body so later stages need not decode again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadSpec {
    /// Register the sender's key.
    RegisterDevice {
        /// The device's public key.
        public_key: PublicKeyBytes,
        /// Proof of possession of that key.
        pop: SignatureBytes,
        /// What the device is.
        kind: DeviceKind,
        /// Hash of off-chain metadata.
        metadata_hash: Hash32,
    },
    /// Move tokens.
    Transfer {
        /// Receiver.
        to: AccountId,
        /// Amount in the token's base unit.
        amount: u128,
        /// Which token.
        token: Token,
    },
    /// Append an identity commitment to the identity tree.
    RegisterIdentity {
        /// The leaf.
        commitment: FieldBytes,
    },
    /// Fix the centroids from `epoch` on (governance).
    SetCentroids {
        /// First epoch they apply to.
        epoch: u64,
        /// D.
        dims: u8,
        /// K.
        clusters: u8,
        /// K rows of D coordinates.
        coords: Vec<u16>,
    },
    /// An anonymous intent (boxed: it is much larger than the others).
    AnonIntent(Box<AnonIntentSpec>),
    /// List a resource (boxed, as the intent).
    ListSku(Box<SkuListing>),
    /// Change a SKU's price, capacity and metadata.
    UpdateSku {
        /// The sender's SKU.
        sku: SkuRef,
        /// New price per unit (the model stays).
        unit_price: u128,
        /// New remaining capacity.
        capacity: u64,
        /// New metadata hash.
        metadata_hash: Hash32,
    },
    /// Take a SKU off the market.
    DelistSku {
        /// The sender's SKU.
        sku: SkuRef,
    },
    /// Price tag: buy at once.
    Buy {
        /// What to buy.
        sku: SkuRef,
        /// Units.
        qty: u64,
        /// Highest price per unit the buyer accepts.
        max_unit_price: u128,
    },
    /// Metering: open a channel with a deposit.
    OpenChannel {
        /// A metered SKU.
        sku: SkuRef,
        /// GAS escrowed.
        deposit: u128,
        /// Height the channel is open until.
        expiry: u64,
    },
    /// Metering: the seller collects up to a signed receipt.
    ClaimChannel {
        /// The channel.
        channel: DealRef,
        /// Cumulative GAS the receipt pays.
        amount: u128,
        /// The receipt's sequence.
        sequence: u64,
        /// The buyer's signature over [`market::channel_receipt_message`].
        buyer_signature: SignatureBytes,
    },
    /// Competitive bidding: a bid in an auction window.
    PlaceBid {
        /// An auctioned SKU.
        sku: SkuRef,
        /// Units wanted.
        qty: u64,
        /// Highest price per unit.
        unit_price: u128,
        /// Close height of the window the bid is for.
        window_end: u64,
    },
    /// CPP: escrow an order.
    Order {
        /// A CPP SKU.
        sku: SkuRef,
        /// Units.
        qty: u64,
        /// Highest price per unit the buyer accepts.
        max_unit_price: u128,
    },
    /// CPP: release used units to the seller.
    ConfirmUse {
        /// The order.
        order: DealRef,
        /// Units used.
        qty: u64,
        /// The buyer's signature over [`market::usage_attestation_message`]
        /// of the units used in total (needed when the seller sends it).
        attestation: Option<SignatureBytes>,
    },
    /// A standing purchase policy (boxed, as the intent).
    SetPolicy(Box<PolicySpec>),
    /// End the sender's policy for a kind.
    CancelPolicy {
        /// The kind.
        kind: u16,
    },
    /// Register a custom resource kind.
    RegisterKind {
        /// Its name.
        name: String,
    },
    /// Burn INT for GAS at the oracle price.
    BurnForGas {
        /// INT burned.
        int_amount: u128,
    },
    /// An oracle's price report.
    OracleReport {
        /// INT base units per fiat unit.
        int_per_fiat: u128,
    },
    /// A bid in the epoch's GAS auction.
    BidGas {
        /// Lots of [`market::GAS_PER_FIAT`] GAS.
        lots: u64,
        /// INT offered per lot.
        int_per_lot: u128,
        /// The epoch whose auction the bid is for.
        epoch: u64,
    },
}

impl PayloadSpec {
    /// What the payload locks from its sender in the Debit stage (see
    /// [`Escrow`]). [`check_payload`] refuses a payload whose product
    /// overflows `u128`; one built by hand saturates, so it can never be
    /// paid and fails as `InsufficientBalance`.
    pub fn escrow(&self) -> Escrow {
        let product = |q: u64, p: u128| market::total(q, p).unwrap_or(u128::MAX);
        match self {
            PayloadSpec::Buy {
                qty,
                max_unit_price,
                ..
            }
            | PayloadSpec::Order {
                qty,
                max_unit_price,
                ..
            } => Escrow {
                int: 0,
                gas: product(*qty, *max_unit_price),
            },
            PayloadSpec::PlaceBid {
                qty, unit_price, ..
            } => Escrow {
                int: 0,
                gas: product(*qty, *unit_price),
            },
            PayloadSpec::OpenChannel { deposit, .. } => Escrow {
                int: 0,
                gas: *deposit,
            },
            PayloadSpec::AnonIntent(a) => {
                market::ClusterBuy::decode(&a.payload).map_or(Escrow::NONE, |c| Escrow {
                    int: 0,
                    gas: product(c.qty, c.max_unit_price),
                })
            }
            PayloadSpec::SetPolicy(p) => Escrow {
                int: 0,
                gas: p.deposit,
            },
            PayloadSpec::BurnForGas { int_amount } => Escrow {
                int: *int_amount,
                gas: 0,
            },
            PayloadSpec::BidGas {
                lots, int_per_lot, ..
            } => Escrow {
                int: product(*lots, *int_per_lot),
                gas: 0,
            },
            _ => Escrow::NONE,
        }
    }
}

/// The fields of a transaction body to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxBodySpec {
    /// Chain the transaction is meant for.
    pub chain_id: u32,
    /// Sending account.
    pub sender: AccountId,
    /// The sender's next nonce.
    pub nonce: u64,
    /// Fee in GAS.
    pub fee: u128,
    /// What to do.
    pub payload: PayloadSpec,
}

/// Builds the bytes of a transaction body (the bytes that get signed).
pub fn build_tx_body(spec: &TxBodySpec) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(320);
    let (payload_type, payload) = match &spec.payload {
        PayloadSpec::RegisterDevice {
            public_key,
            pop,
            kind,
            metadata_hash,
        } => {
            let pk = BlsPublicKey(*public_key);
            let pop = BlsSignature(*pop);
            let meta = Bytes32(*metadata_hash);
            let p = RegisterDevice::create(
                &mut fbb,
                &wire::RegisterDeviceArgs {
                    public_key: Some(&pk),
                    pop: Some(&pop),
                    kind: *kind,
                    metadata_hash: Some(&meta),
                },
            );
            (Payload::RegisterDevice, p.as_union_value())
        }
        PayloadSpec::Transfer { to, amount, token } => {
            let to = Bytes32(*to);
            let amount = wire_amount(*amount);
            let p = Transfer::create(
                &mut fbb,
                &wire::TransferArgs {
                    to: Some(&to),
                    amount: Some(&amount),
                    token: *token,
                },
            );
            (Payload::Transfer, p.as_union_value())
        }
        PayloadSpec::RegisterIdentity { commitment } => {
            let c = FieldElement(*commitment);
            let p = RegisterIdentity::create(
                &mut fbb,
                &wire::RegisterIdentityArgs {
                    commitment: Some(&c),
                },
            );
            (Payload::RegisterIdentity, p.as_union_value())
        }
        PayloadSpec::SetCentroids {
            epoch,
            dims,
            clusters,
            coords,
        } => {
            let coords = fbb.create_vector(coords);
            let p = SetCentroids::create(
                &mut fbb,
                &wire::SetCentroidsArgs {
                    epoch: *epoch,
                    dims: *dims,
                    clusters: *clusters,
                    coords: Some(coords),
                },
            );
            (Payload::SetCentroids, p.as_union_value())
        }
        PayloadSpec::AnonIntent(a) => {
            let payload = fbb.create_vector(&a.payload);
            let (proof, root, nullifier, cc, target) = (
                Groth16Proof(a.proof),
                FieldElement(a.root),
                FieldElement(a.nullifier),
                FieldElement(a.centroid_commitment),
                Bytes32(a.target),
            );
            let p = AnonIntent::create(
                &mut fbb,
                &wire::AnonIntentArgs {
                    proof: Some(&proof),
                    root: Some(&root),
                    epoch: a.epoch,
                    nullifier: Some(&nullifier),
                    cluster: a.cluster,
                    centroid_commitment: Some(&cc),
                    target: Some(&target),
                    payload: Some(payload),
                },
            );
            (Payload::AnonIntent, p.as_union_value())
        }
        other => market::build(&mut fbb, other)
            .expect("every payload variant has a builder: the others are in market::build"),
    };
    let sender = Bytes32(spec.sender);
    let fee = wire_amount(spec.fee);
    let body = TxBody::create(
        &mut fbb,
        &wire::TxBodyArgs {
            chain_id: spec.chain_id,
            sender: Some(&sender),
            nonce: spec.nonce,
            fee: Some(&fee),
            payload_type,
            payload: Some(payload),
        },
    );
    fbb.finish_minimal(body);
    fbb.finished_data().to_vec()
}

/// Wraps signed body bytes and their signature into an envelope.
pub fn build_envelope(body: &[u8], signature: &SignatureBytes) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(body.len() + 96);
    let body = fbb.create_vector(body);
    let sig = BlsSignature(*signature);
    let env = TxEnvelope::create(
        &mut fbb,
        &wire::TxEnvelopeArgs {
            body: Some(body),
            signature: Some(&sig),
        },
    );
    fbb.finish_minimal(env);
    fbb.finished_data().to_vec()
}

/// The fields of a block header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderFields {
    /// Chain the block belongs to.
    pub chain_id: u32,
    /// Height; genesis is 0.
    pub height: u64,
    /// Hash of the parent header.
    pub parent_hash: Hash32,
    /// State root after the block.
    pub state_root: Hash32,
    /// Merkle root of the transaction body hashes.
    pub tx_root: Hash32,
    /// Merkle root of the receipt hashes.
    pub receipts_root: Hash32,
    /// Proposer's clock, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Proposer's account id.
    pub proposer: AccountId,
    /// Number of transactions.
    pub tx_count: u32,
}

impl HeaderFields {
    /// Reads the fields of a decoded header.
    pub fn from_wire(h: &BlockHeader<'_>) -> Self {
        Self {
            chain_id: h.chain_id(),
            height: h.height(),
            parent_hash: h.parent_hash().0,
            state_root: h.state_root().0,
            tx_root: h.tx_root().0,
            receipts_root: h.receipts_root().0,
            time_ms: h.time_ms(),
            proposer: h.proposer().0,
            tx_count: h.tx_count(),
        }
    }
}

/// Builds the bytes of a block header.
pub fn build_header(h: &HeaderFields) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let (parent, state, tx, receipts, proposer) = (
        Bytes32(h.parent_hash),
        Bytes32(h.state_root),
        Bytes32(h.tx_root),
        Bytes32(h.receipts_root),
        Bytes32(h.proposer),
    );
    let hdr = BlockHeader::create(
        &mut fbb,
        &wire::BlockHeaderArgs {
            chain_id: h.chain_id,
            height: h.height,
            parent_hash: Some(&parent),
            state_root: Some(&state),
            tx_root: Some(&tx),
            receipts_root: Some(&receipts),
            time_ms: h.time_ms,
            proposer: Some(&proposer),
            tx_count: h.tx_count,
        },
    );
    fbb.finish_minimal(hdr);
    fbb.finished_data().to_vec()
}

/// Builds a sealed block from header bytes, transaction bodies in order,
/// the aggregate transaction signature and the proposer's signature.
pub fn build_block<'b>(
    header: &[u8],
    bodies: impl ExactSizeIterator<Item = &'b [u8]>,
    tx_signature: &SignatureBytes,
    proposer_signature: &SignatureBytes,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(header.len() + bodies.len() * 200 + 256);
    let mut txs = Vec::with_capacity(bodies.len());
    for b in bodies {
        let v = fbb.create_vector(b);
        txs.push(BlockTx::create(
            &mut fbb,
            &wire::BlockTxArgs { body: Some(v) },
        ));
    }
    let txs = fbb.create_vector(&txs);
    let header = fbb.create_vector(header);
    let (tx_sig, prop_sig) = (
        BlsSignature(*tx_signature),
        BlsSignature(*proposer_signature),
    );
    let block = Block::create(
        &mut fbb,
        &wire::BlockArgs {
            header: Some(header),
            txs: Some(txs),
            tx_signature: Some(&tx_sig),
            proposer_signature: Some(&prop_sig),
        },
    );
    fbb.finish_minimal(block);
    fbb.finished_data().to_vec()
}

/// The fields of one receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptFields {
    /// BLAKE3 hash of the transaction body.
    pub tx_hash: Hash32,
    /// Height of the block holding it.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
    /// Outcome.
    pub status: TxStatus,
    /// GAS taken as fee.
    pub fee_charged: u128,
}

impl ReceiptFields {
    /// Reads the fields of a decoded receipt.
    pub fn from_wire(r: &Receipt<'_>) -> Self {
        Self {
            tx_hash: r.tx_hash().0,
            height: r.height(),
            index: r.index(),
            status: r.status(),
            fee_charged: amount(r.fee_charged()),
        }
    }
}

/// Writes one receipt table into `fbb`.
fn create_receipt<'b>(
    fbb: &mut FlatBufferBuilder<'b>,
    r: &ReceiptFields,
) -> flatbuffers::WIPOffset<Receipt<'b>> {
    let (h, fee) = (Bytes32(r.tx_hash), wire_amount(r.fee_charged));
    Receipt::create(
        fbb,
        &wire::ReceiptArgs {
            tx_hash: Some(&h),
            height: r.height,
            index: r.index,
            status: r.status,
            fee_charged: Some(&fee),
        },
    )
}

/// Builds one receipt as a buffer of its own (see [`decode_receipt`]).
pub fn build_receipt(r: &ReceiptFields) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let off = create_receipt(&mut fbb, r);
    fbb.finish(off, None);
    fbb.finished_data().to_vec()
}

/// Builds the receipts of one block.
pub fn build_receipts(height: u64, receipts: &[ReceiptFields]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64 + receipts.len() * 96);
    let offs: Vec<_> = receipts
        .iter()
        .map(|r| create_receipt(&mut fbb, r))
        .collect();
    let v = fbb.create_vector(&offs);
    let br = BlockReceipts::create(
        &mut fbb,
        &wire::BlockReceiptsArgs {
            height,
            receipts: Some(v),
        },
    );
    fbb.finish_minimal(br);
    fbb.finished_data().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer() -> TxBodySpec {
        TxBodySpec {
            chain_id: 7,
            sender: [1; 32],
            nonce: 3,
            fee: 10,
            payload: PayloadSpec::Transfer {
                to: [2; 32],
                amount: u128::MAX - 5,
                token: Token::Int,
            },
        }
    }

    #[test]
    fn transfer_round_trips() {
        let body = build_tx_body(&transfer());
        let env = build_envelope(&body, &[9; 48]);
        let tx = decode_tx(&env).unwrap();
        assert_eq!(tx.body_bytes, &body[..]);
        assert_eq!(tx.body.chain_id(), 7);
        assert_eq!(tx.body.nonce(), 3);
        assert_eq!(amount(tx.body.fee()), 10);
        let t = tx.body.payload_as_transfer().unwrap();
        assert_eq!(amount(t.amount()), u128::MAX - 5);
        assert_eq!(t.to().0, [2; 32]);
        assert_eq!(tx.signature(), &[9; 48]);
    }

    fn round_trip(payload: PayloadSpec) {
        let spec = TxBodySpec {
            payload,
            ..transfer()
        };
        let body = build_tx_body(&spec);
        let decoded = decode_body(&body).unwrap();
        assert_eq!(payload_spec(&decoded).unwrap(), spec.payload);
    }

    #[test]
    fn bpk_payloads_round_trip() {
        round_trip(PayloadSpec::RegisterIdentity {
            commitment: [5; 32],
        });
        round_trip(PayloadSpec::SetCentroids {
            epoch: 9,
            dims: 2,
            clusters: 3,
            coords: vec![1, 2, 3, 4, 5, u16::MAX],
        });
        round_trip(PayloadSpec::AnonIntent(Box::new(AnonIntentSpec {
            proof: [7; 128],
            root: [1; 32],
            epoch: u64::MAX,
            nullifier: [2; 32],
            cluster: 3,
            centroid_commitment: [4; 32],
            target: [6; 32],
            payload: b"power 5 kWh".to_vec(),
        })));
    }

    #[test]
    fn field_elements_must_be_canonical() {
        let mut below = BN254_MODULUS_BE;
        below[31] -= 1;
        assert!(is_canonical_field(&below));
        assert!(is_canonical_field(&[0; 32]));
        assert!(!is_canonical_field(&BN254_MODULUS_BE));
        assert!(!is_canonical_field(&[0xff; 32]));
        let body = build_tx_body(&TxBodySpec {
            payload: PayloadSpec::RegisterIdentity {
                commitment: BN254_MODULUS_BE,
            },
            ..transfer()
        });
        assert!(matches!(
            decode_body(&body),
            Err(DecodeError::InvalidPayload(_))
        ));
    }

    #[test]
    fn inconsistent_bpk_payloads_are_refused() {
        let centroids = build_tx_body(&TxBodySpec {
            payload: PayloadSpec::SetCentroids {
                epoch: 1,
                dims: 2,
                clusters: 3,
                coords: vec![1; 5],
            },
            ..transfer()
        });
        assert!(matches!(
            decode_body(&centroids),
            Err(DecodeError::InvalidPayload(_))
        ));
        let big = build_tx_body(&TxBodySpec {
            payload: PayloadSpec::AnonIntent(Box::new(AnonIntentSpec {
                proof: [0; 128],
                root: [0; 32],
                epoch: 0,
                nullifier: [0; 32],
                cluster: 0,
                centroid_commitment: [0; 32],
                target: [0; 32],
                payload: vec![0; INTENT_PAYLOAD_BYTES_MAX + 1],
            })),
            ..transfer()
        });
        assert!(matches!(
            decode_body(&big),
            Err(DecodeError::InvalidPayload(_))
        ));
    }

    #[test]
    fn oversized_envelope_is_refused() {
        let big = vec![0u8; TX_BYTES_MAX + 1];
        assert!(matches!(decode_tx(&big), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn block_round_trips() {
        let body = build_tx_body(&transfer());
        let h = HeaderFields {
            chain_id: 7,
            height: 5,
            tx_count: 2,
            ..Default::default()
        };
        let hb = build_header(&h);
        let block = build_block(&hb, [&body[..], &body[..]].into_iter(), &[1; 48], &[2; 48]);
        let b = decode_block(&block).unwrap();
        assert_eq!(HeaderFields::from_wire(&b.header), h);
        assert_eq!(b.bodies.len(), 2);
        assert_eq!(b.bodies[1].1, &body[..]);
    }

    #[test]
    fn block_with_wrong_count_is_refused() {
        let hb = build_header(&HeaderFields {
            tx_count: 3,
            ..Default::default()
        });
        let block = build_block(&hb, std::iter::empty(), &[1; 48], &[2; 48]);
        assert!(matches!(
            decode_block(&block),
            Err(DecodeError::TxCountMismatch { .. })
        ));
    }
}
