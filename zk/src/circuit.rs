//! The BPK (Behavior Private Key) circuit: "I am a registered user, my
//! behaviour vector belongs to cluster `k` of this epoch's centroids, and this
//! is my nullifier for this scope" — and nothing more.
//!
//! # Statement
//!
//! Public inputs, in this order (the order of [`PublicInputs::to_field_elements`]
//! and of the Groth16 instance):
//!
//! | # | input | meaning |
//! |---|---|---|
//! | 0 | `root` | a root of the identity tree ([`crate::tree`], depth 32) |
//! | 1 | `epoch` | the epoch the intent is for (a `u64`) |
//! | 2 | `scope` | the hash of the intent (binds the proof to it) |
//! | 3 | `nullifier` | `Poseidon(secret, epoch, scope)` |
//! | 4 | `cluster` | the claimed cluster id `k`, `k < K` |
//! | 5 | `centroid_commitment` | [`centroid_commitment`] of the epoch's K centroids |
//!
//! Private inputs: the user's `secret`, the behaviour vector `b` (D
//! coordinates), the K centroids (D coordinates each) and the Merkle path of
//! the user's leaf.
//!
//! The circuit proves:
//!
//! 1. **membership** — `leaf = Poseidon(secret_commitment, Poseidon(b))` with
//!    `secret_commitment = Poseidon(secret)` lies under `root`
//!    ([`identity_leaf`]);
//! 2. **nullifier** — `nullifier = Poseidon(secret, epoch, scope)`
//!    ([`nullifier`]);
//! 3. **cluster** — the centroids hash to `centroid_commitment`, and `b` is
//!    nearest to centroid `k`: `‖b − c_k‖² ≤ ‖b − c_j‖²` for every `j`, and
//!    strictly `<` for every `j < k`. So `k` is unique: on a tie the circuit
//!    accepts exactly the lowest tied index, the one [`nearest_centroid`]
//!    returns, and rejects the others;
//! 4. **scope binding** — `scope` feeds the nullifier, and a dummy constraint
//!    `scope² = scope · scope` (as Semaphore does) keeps it in the system even
//!    if an optimiser were to drop unused inputs.
//!
//! # Fixed point
//!
//! Coordinates are unsigned integers in `[0, 2^16)` ([`COORD_BITS`]). The
//! trainer quantises each real coordinate `x` of a behaviour vector or
//! centroid, with the epoch's per-dimension range `[lo, hi]`, to
//! `round((x − lo) / (hi − lo) · (2^16 − 1))` clamped to `[0, 2^16 − 1]`;
//! squared Euclidean distance is then computed exactly on these integers. The
//! circuit range-checks every coordinate to 16 bits, so a prover cannot use a
//! field element outside that range (e.g. a "negative" one) to move the
//! distances.
//!
//! # No overflow in the field (the bound argument)
//!
//! With every coordinate `< 2^16` (range-checked), each difference `b_i − c_i`
//! is an integer in `(−2^16, 2^16)`, its square an integer `< 2^32`, and a
//! squared distance (a sum of `D ≤ 12` squares) an integer
//! `dist < 12 · 2^32 < 2^36`. All of these are far below the field modulus
//! `p ≈ 2^254`, so the field values equal the integer values.
//!
//! For each `j`, the circuit forms `diff_j = dist_j − dist_k − before_j`, where
//! `before_j ∈ {0, 1}` is 1 exactly when `j < k`, and proves
//! `diff_j ∈ [0, 2^37)` ([`DIFF_BITS`]) by a 37-bit decomposition. As integers,
//! `diff_j ∈ (−2^36 − 1, 2^36)`:
//!
//! * if the integer `diff_j ≥ 0`, the field value is that integer, `< 2^36`,
//!   and it has a 37-bit decomposition: honest provers always pass;
//! * if the integer `diff_j < 0`, the field value is `p + diff_j ≥ p − 2^36 − 1`,
//!   which is `> 2^37`; a 37-bit sum `Σ bit_i · 2^i ≤ 2^37 − 1 < p` cannot equal
//!   it (no wrap: the sum is itself below `p`), so the check fails.
//!
//! Hence the check holds iff `dist_j ≥ dist_k + before_j` as integers: `≤` for
//! `j > k`, `<` for `j < k`, and `0 ∈ [0, 2^37)` for `j = k`.
//!
//! # Selecting `k`
//!
//! The prover supplies a one-hot vector `s_0 .. s_{K−1}` (booleans, `Σ s_j = 1`)
//! with `Σ j · s_j = cluster`. Since `Σ j · s_j ∈ [0, K)` and `K ≤ 12`, this
//! also enforces `cluster < K`. Then `dist_k = Σ s_j · dist_j` and
//! `before_j = Σ_{m > j} s_m`.
//!
//! # Constraint count
//!
//! For D = 8, K = 8 the circuit has 14,092 constraints (asserted in the tests;
//! see [`BpkCircuit`] for the breakdown).

use ark_ff::{AdditiveGroup, BigInteger, PrimeField};
use ark_r1cs_std::fields::fp::FpVar;
use ark_r1cs_std::prelude::*;
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};

use crate::poseidon::{self, hash_gadget, hash2};
use crate::tree::{DEPTH, MerklePath, path_gadget};
use crate::{Fr, ZkError};

/// Bits per coordinate: coordinates are integers in `[0, 2^16)`.
pub const COORD_BITS: usize = 16;
/// Bits of the range check on `dist_j − dist_k − before_j` (see the module
/// docs for why 37 bits leave no room for a wrap).
pub const DIFF_BITS: usize = 37;
/// Most dimensions D: one Poseidon hashes a vector (circomlib has 12 inputs).
pub const MAX_DIM: usize = poseidon::MAX_INPUTS;
/// Most clusters K: one Poseidon hashes the K centroid hashes.
pub const MAX_CLUSTERS: usize = poseidon::MAX_INPUTS;
/// Default dimension D.
pub const DEFAULT_DIM: usize = 8;
/// Default number of clusters K.
pub const DEFAULT_CLUSTERS: usize = 8;
/// Number of public inputs (see the module docs for their order).
pub const NUM_PUBLIC_INPUTS: usize = 6;

/// The setup parameters of the circuit: D and K. A proving/verifying key is
/// made for one pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BpkParams {
    dim: usize,
    clusters: usize,
}

impl BpkParams {
    /// `dim` (D) and `clusters` (K), each in `1..=12`.
    pub fn new(dim: usize, clusters: usize) -> Result<Self, ZkError> {
        if !(1..=MAX_DIM).contains(&dim) || !(1..=MAX_CLUSTERS).contains(&clusters) {
            return Err(ZkError::InvalidParams { dim, clusters });
        }
        Ok(Self { dim, clusters })
    }

    /// D, the number of coordinates of a behaviour vector or centroid.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// K, the number of centroids (clusters).
    pub fn clusters(&self) -> usize {
        self.clusters
    }
}

impl Default for BpkParams {
    /// D = 8, K = 8.
    fn default() -> Self {
        Self {
            dim: DEFAULT_DIM,
            clusters: DEFAULT_CLUSTERS,
        }
    }
}

// ---------------------------------------------------------------------------
// Native helpers: exactly what the circuit computes.
// ---------------------------------------------------------------------------

/// `Poseidon(secret)`.
pub fn secret_commitment(secret: Fr) -> Fr {
    // One input always has parameters.
    poseidon::hash(&[secret]).expect("poseidon has parameters for one input")
}

fn coords_to_fr(coords: &[u16]) -> Vec<Fr> {
    coords.iter().map(|c| Fr::from(*c)).collect()
}

/// `Poseidon(b_0, .., b_{D−1})` of a behaviour vector (`1 ≤ D ≤ 12`).
pub fn behaviour_hash(b: &[u16]) -> Result<Fr, ZkError> {
    poseidon::hash(&coords_to_fr(b))
}

/// The identity-tree leaf `Poseidon(Poseidon(secret), Poseidon(b))`.
pub fn identity_leaf(secret: Fr, b: &[u16]) -> Result<Fr, ZkError> {
    Ok(hash2(secret_commitment(secret), behaviour_hash(b)?))
}

/// `Poseidon(secret, epoch, scope)`.
pub fn nullifier(secret: Fr, epoch: u64, scope: Fr) -> Fr {
    poseidon::hash(&[secret, Fr::from(epoch), scope])
        .expect("poseidon has parameters for three inputs")
}

/// Checks that `centroids` are K vectors of D coordinates with
/// `1 ≤ D, K ≤ 12`, and returns the parameters.
fn centroid_shape<C: AsRef<[u16]>>(centroids: &[C]) -> Result<BpkParams, ZkError> {
    let dim = centroids.first().map_or(0, |c| c.as_ref().len());
    let params = BpkParams::new(dim, centroids.len())?;
    for c in centroids {
        if c.as_ref().len() != dim {
            return Err(ZkError::DimensionMismatch {
                expected: dim,
                got: c.as_ref().len(),
            });
        }
    }
    Ok(params)
}

/// The commitment to an epoch's centroids: `Poseidon(h_0, .., h_{K−1})` with
/// `h_j = Poseidon(c_j[0], .., c_j[D−1])`. Needs `1 ≤ D, K ≤ 12` and every
/// centroid of the same length.
pub fn centroid_commitment<C: AsRef<[u16]>>(centroids: &[C]) -> Result<Fr, ZkError> {
    centroid_shape(centroids)?;
    let hashes = centroids
        .iter()
        .map(|c| behaviour_hash(c.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    poseidon::hash(&hashes)
}

/// `‖a − b‖²` over the integers (exact: `< 12 · 2^32` for D ≤ 12, and never
/// overflows a `u64` for any length below 2^32).
pub fn squared_distance(a: &[u16], b: &[u16]) -> u64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = u64::from(x.abs_diff(*y));
            d * d
        })
        .sum()
}

/// The index of the centroid nearest to `b` (squared Euclidean distance);
/// on a tie the lowest index, the only one the circuit accepts.
pub fn nearest_centroid<C: AsRef<[u16]>>(b: &[u16], centroids: &[C]) -> Result<u32, ZkError> {
    let params = centroid_shape(centroids)?;
    if b.len() != params.dim {
        return Err(ZkError::DimensionMismatch {
            expected: params.dim,
            got: b.len(),
        });
    }
    let mut best = (0usize, u64::MAX);
    for (j, c) in centroids.iter().enumerate() {
        let d = squared_distance(b, c.as_ref());
        // Strict `<`: a later centroid at the same distance does not win.
        if d < best.1 {
            best = (j, d);
        }
    }
    // K ≤ 12.
    Ok(best.0 as u32)
}

// ---------------------------------------------------------------------------
// Inputs of the circuit.
// ---------------------------------------------------------------------------

/// The public inputs (see the module docs for their meaning and order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicInputs {
    /// A root of the identity tree.
    pub root: Fr,
    /// The epoch.
    pub epoch: u64,
    /// The hash of the intent.
    pub scope: Fr,
    /// `Poseidon(secret, epoch, scope)`.
    pub nullifier: Fr,
    /// The cluster id `k` (`k < K`).
    pub cluster: u32,
    /// [`centroid_commitment`] of the epoch's centroids.
    pub centroid_commitment: Fr,
}

impl PublicInputs {
    /// The Groth16 instance: `[root, epoch, scope, nullifier, cluster,
    /// centroid_commitment]`.
    pub fn to_field_elements(&self) -> Vec<Fr> {
        vec![
            self.root,
            Fr::from(self.epoch),
            self.scope,
            self.nullifier,
            Fr::from(self.cluster),
            self.centroid_commitment,
        ]
    }
}

/// The private inputs. Coordinates are field elements so that the circuit
/// can be given (and must reject) values outside `[0, 2^16)`; build honest
/// ones from `u16`s with [`BpkWitness::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpkWitness {
    /// The user's secret.
    pub secret: Fr,
    /// The behaviour vector b (D coordinates).
    pub behaviour: Vec<Fr>,
    /// The K centroids, D coordinates each.
    pub centroids: Vec<Vec<Fr>>,
    /// The Merkle path of the user's leaf.
    pub path: MerklePath,
}

impl BpkWitness {
    /// A witness from fixed-point coordinates.
    pub fn new<C: AsRef<[u16]>>(
        secret: Fr,
        behaviour: &[u16],
        centroids: &[C],
        path: MerklePath,
    ) -> Self {
        Self {
            secret,
            behaviour: coords_to_fr(behaviour),
            centroids: centroids.iter().map(|c| coords_to_fr(c.as_ref())).collect(),
            path,
        }
    }

    /// D and K of this witness; an error if its shape is not K vectors of D
    /// coordinates plus a D-vector, `1 ≤ D, K ≤ 12`.
    pub fn params(&self) -> Result<BpkParams, ZkError> {
        let params = BpkParams::new(self.behaviour.len(), self.centroids.len())?;
        self.check_shape(params)?;
        Ok(params)
    }

    fn check_shape(&self, params: BpkParams) -> Result<(), ZkError> {
        let lens = std::iter::once(self.behaviour.len()).chain(self.centroids.iter().map(Vec::len));
        for got in lens {
            if got != params.dim {
                return Err(ZkError::DimensionMismatch {
                    expected: params.dim,
                    got,
                });
            }
        }
        if self.centroids.len() != params.clusters {
            return Err(ZkError::DimensionMismatch {
                expected: params.clusters,
                got: self.centroids.len(),
            });
        }
        Ok(())
    }

    /// The honest public inputs for this witness at `epoch` and `scope`: the
    /// root its path leads to, its nullifier, its nearest centroid and the
    /// centroids' commitment. Fails if a coordinate is not below 2^16.
    pub fn public_inputs(&self, epoch: u64, scope: Fr) -> Result<PublicInputs, ZkError> {
        self.params()?;
        let b = fr_coords_to_u16(&self.behaviour)?;
        let centroids = self
            .centroids
            .iter()
            .map(|c| fr_coords_to_u16(c))
            .collect::<Result<Vec<_>, _>>()?;
        let leaf = identity_leaf(self.secret, &b)?;
        Ok(PublicInputs {
            root: self.path.root(leaf),
            epoch,
            scope,
            nullifier: nullifier(self.secret, epoch, scope),
            cluster: nearest_centroid(&b, &centroids)?,
            centroid_commitment: centroid_commitment(&centroids)?,
        })
    }
}

fn fr_coords_to_u16(coords: &[Fr]) -> Result<Vec<u16>, ZkError> {
    coords
        .iter()
        .map(|c| {
            let big = c.into_bigint();
            let limbs = big.as_ref();
            if limbs[1..].iter().any(|l| *l != 0) || limbs[0] >= 1 << COORD_BITS {
                Err(ZkError::CoordinateOutOfRange)
            } else {
                Ok(limbs[0] as u16)
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The circuit.
// ---------------------------------------------------------------------------

/// The BPK circuit for parameters D, K. With `witness` and `public` both
/// `None` it is the shape used by the setup; the prover gives both.
///
/// Constraints (D = 8, K = 8: 14,092 in all):
///
/// | part | count | D = 8, K = 8 |
/// |---|---|---|
/// | range checks of b and the centroids: 16 booleans + 1 sum each | 17 · D · (K + 1) | 1,224 |
/// | path index bits (booleans) | 32 | 32 |
/// | `Poseidon(secret)` | 213 | 213 |
/// | `Poseidon(b)` (D inputs) | P(D) | 402 |
/// | leaf `Poseidon(sc, hb)` | 240 | 240 |
/// | Merkle path (32 levels of swap + Poseidon(2)) and root equality | 241 · 32 + 1 | 7,713 |
/// | nullifier `Poseidon(secret, epoch, scope)` and equality | 261 + 1 | 262 |
/// | `scope²` | 1 | 1 |
/// | centroid hashes, their hash and equality | K · P(D) + P(K) + 1 | 3,619 |
/// | squared distances | K · D | 64 |
/// | one-hot selector: K booleans, Σ s = 1, Σ j·s = k | K + 2 | 10 |
/// | `dist_k = Σ s_j · dist_j` | K | 8 |
/// | `dist_j − dist_k − before_j` range checks: 37 booleans + 1 sum each | 38 · K | 304 |
///
/// `P(n) = 3 · (8(n + 1) − 1 + partial_rounds(n))` is Poseidon's cost with
/// `n` inputs (402 for 8).
#[derive(Debug, Clone)]
pub struct BpkCircuit {
    /// D and K.
    pub params: BpkParams,
    /// The private inputs (`None` at setup).
    pub witness: Option<BpkWitness>,
    /// The public inputs (`None` at setup).
    pub public: Option<PublicInputs>,
}

impl BpkCircuit {
    /// The circuit without values, for the setup.
    pub fn for_setup(params: BpkParams) -> Self {
        Self {
            params,
            witness: None,
            public: None,
        }
    }

    /// The circuit with values, for proving; D and K come from the witness.
    pub fn new(public: PublicInputs, witness: BpkWitness) -> Result<Self, ZkError> {
        let params = witness.params()?;
        Ok(Self {
            params,
            witness: Some(witness),
            public: Some(public),
        })
    }
}

/// `value` or, without one (setup), `AssignmentMissing`.
fn get<T: Copy>(value: Option<T>) -> Result<T, SynthesisError> {
    value.ok_or(SynthesisError::AssignmentMissing)
}

/// Enforces `x ∈ [0, 2^bits)` (`bits` < 254) by decomposing it into `bits`
/// boolean witnesses whose weighted sum must equal `x`: `bits + 1`
/// constraints. The bits are the low bits of `x`'s value, so an `x` outside
/// the range leaves the sum unequal and the system unsatisfied.
fn enforce_range(
    cs: &ConstraintSystemRef<Fr>,
    x: &FpVar<Fr>,
    bits: usize,
) -> Result<(), SynthesisError> {
    let value = x.value().ok().map(|v| v.into_bigint());
    let mut sum = FpVar::<Fr>::zero();
    let mut power = Fr::from(1u64);
    for i in 0..bits {
        let bit = Boolean::new_witness(cs.clone(), || Ok(get(value)?.get_bit(i)))?;
        sum += FpVar::from(bit) * power;
        power.double_in_place();
    }
    sum.enforce_equal(x)
}

impl ConstraintSynthesizer<Fr> for BpkCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let BpkParams { dim, clusters } = self.params;
        if let Some(w) = &self.witness {
            w.check_shape(self.params)
                .map_err(|_| SynthesisError::Unsatisfiable)?;
        }
        let public = self.public;
        let witness = self.witness.as_ref();

        // Public inputs, in the documented order.
        let input = |f: fn(&PublicInputs) -> Fr| {
            FpVar::new_input(cs.clone(), || {
                Ok(f(public
                    .as_ref()
                    .ok_or(SynthesisError::AssignmentMissing)?))
            })
        };
        let root = input(|p| p.root)?;
        let epoch = input(|p| Fr::from(p.epoch))?;
        let scope = input(|p| p.scope)?;
        let nullifier_in = input(|p| p.nullifier)?;
        let cluster = input(|p| Fr::from(p.cluster))?;
        let commitment = input(|p| p.centroid_commitment)?;

        // Private inputs.
        let secret = FpVar::new_witness(cs.clone(), || Ok(get(witness)?.secret))?;
        let coord = |v: Option<Fr>| -> Result<FpVar<Fr>, SynthesisError> {
            let x = FpVar::new_witness(cs.clone(), || get(v))?;
            enforce_range(&cs, &x, COORD_BITS)?;
            Ok(x)
        };
        let b = (0..dim)
            .map(|i| coord(witness.map(|w| w.behaviour[i])))
            .collect::<Result<Vec<_>, _>>()?;
        let centroids = (0..clusters)
            .map(|j| {
                (0..dim)
                    .map(|i| coord(witness.map(|w| w.centroids[j][i])))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let siblings = (0..DEPTH)
            .map(|l| FpVar::new_witness(cs.clone(), || Ok(get(witness)?.path.siblings[l])))
            .collect::<Result<Vec<_>, _>>()?;
        let index_bits = (0..DEPTH)
            .map(|l| Boolean::new_witness(cs.clone(), || Ok(get(witness)?.path.index_bits[l])))
            .collect::<Result<Vec<_>, _>>()?;

        // 1. Membership.
        let secret_commitment = hash_gadget(cs.clone(), std::slice::from_ref(&secret))?;
        let behaviour_hash = hash_gadget(cs.clone(), &b)?;
        let leaf = hash_gadget(cs.clone(), &[secret_commitment, behaviour_hash])?;
        path_gadget(cs.clone(), &leaf, &siblings, &index_bits)?.enforce_equal(&root)?;

        // 2. Nullifier.
        hash_gadget(cs.clone(), &[secret, epoch, scope.clone()])?.enforce_equal(&nullifier_in)?;

        // 4. Scope binding: a dummy square, as Semaphore does.
        let _scope_squared = scope.square()?;

        // 3a. Centroid commitment.
        let centroid_hashes = centroids
            .iter()
            .map(|c| hash_gadget(cs.clone(), c))
            .collect::<Result<Vec<_>, _>>()?;
        hash_gadget(cs.clone(), &centroid_hashes)?.enforce_equal(&commitment)?;

        // 3b. Squared distances (exact integers < 2^36, see the module docs).
        let dists = centroids
            .iter()
            .map(|c| {
                b.iter()
                    .zip(c)
                    .try_fold(FpVar::<Fr>::zero(), |acc, (x, y)| {
                        Ok::<_, SynthesisError>(acc + (x - y).square()?)
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;

        // 3c. One-hot selector of k: booleans, Σ s_j = 1, Σ j·s_j = cluster
        // (which also forces cluster < K).
        let claimed = public.map(|p| p.cluster as usize);
        let selector = (0..clusters)
            .map(|j| Boolean::new_witness(cs.clone(), || Ok(get(claimed)? == j)))
            .collect::<Result<Vec<_>, _>>()?;
        let selector: Vec<FpVar<Fr>> = selector.into_iter().map(FpVar::from).collect();
        let mut count = FpVar::<Fr>::zero();
        let mut index = FpVar::<Fr>::zero();
        for (j, s) in selector.iter().enumerate() {
            count += s;
            index += s * Fr::from(j as u64);
        }
        count.enforce_equal(&FpVar::Constant(Fr::from(1u64)))?;
        index.enforce_equal(&cluster)?;
        let mut dist_k = FpVar::<Fr>::zero();
        for (s, d) in selector.iter().zip(&dists) {
            dist_k += s * d;
        }

        // 3d. Nearest: dist_j − dist_k − before_j ∈ [0, 2^37) for every j,
        // with before_j = Σ_{m > j} s_m = [j < k].
        let mut before = FpVar::<Fr>::zero();
        for j in (0..clusters).rev() {
            let diff = &dists[j] - &dist_k - &before;
            enforce_range(&cs, &diff, DIFF_BITS)?;
            before += &selector[j];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_bounds() {
        assert!(BpkParams::new(8, 8).is_ok());
        assert!(BpkParams::new(12, 12).is_ok());
        assert!(BpkParams::new(1, 1).is_ok());
        for (d, k) in [(0, 8), (8, 0), (13, 8), (8, 13)] {
            assert_eq!(
                BpkParams::new(d, k).unwrap_err(),
                ZkError::InvalidParams {
                    dim: d,
                    clusters: k
                }
            );
        }
        assert_eq!(BpkParams::default(), BpkParams::new(8, 8).unwrap());
    }

    #[test]
    fn nearest_centroid_lowest_index_on_tie() {
        let centroids = [[10u16, 10], [0, 0], [20, 20], [0, 0]];
        assert_eq!(nearest_centroid(&[1, 1], &centroids).unwrap(), 1);
        // Equidistant from centroids 0 and 2: the lower index wins.
        assert_eq!(nearest_centroid(&[15, 15], &centroids).unwrap(), 0);
        assert_eq!(nearest_centroid(&[20, 21], &centroids).unwrap(), 2);
        assert!(nearest_centroid(&[1, 1, 1], &centroids).is_err());
        assert!(nearest_centroid::<[u16; 2]>(&[1, 1], &[]).is_err());
    }

    #[test]
    fn squared_distance_extremes() {
        let a = [u16::MAX; 12];
        let b = [0u16; 12];
        assert_eq!(squared_distance(&a, &b), 12 * 65535 * 65535);
        assert!(squared_distance(&a, &b) < 1 << 36);
    }

    #[test]
    fn centroid_commitment_shape_errors() {
        let ok = vec![vec![1u16, 2], vec![3, 4]];
        let c = centroid_commitment(&ok).unwrap();
        let h0 = behaviour_hash(&[1, 2]).unwrap();
        let h1 = behaviour_hash(&[3, 4]).unwrap();
        assert_eq!(c, poseidon::hash(&[h0, h1]).unwrap());
        let ragged = vec![vec![1u16, 2], vec![3]];
        assert_eq!(
            centroid_commitment(&ragged).unwrap_err(),
            ZkError::DimensionMismatch {
                expected: 2,
                got: 1
            }
        );
        assert!(centroid_commitment(&vec![vec![0u16; 13]; 2]).is_err());
        assert!(centroid_commitment(&vec![vec![0u16; 2]; 13]).is_err());
    }

    #[test]
    fn fr_coords_round_trip() {
        let c = [0u16, 1, 65535];
        assert_eq!(fr_coords_to_u16(&coords_to_fr(&c)).unwrap(), c);
        assert_eq!(
            fr_coords_to_u16(&[Fr::from(65536u64)]).unwrap_err(),
            ZkError::CoordinateOutOfRange
        );
        assert_eq!(
            fr_coords_to_u16(&[-Fr::from(1u64)]).unwrap_err(),
            ZkError::CoordinateOutOfRange
        );
    }
}
