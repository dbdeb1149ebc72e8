//! Behaviour clusters: k-means on users' behaviour vectors, quantised to the
//! circuit's fixed point, and the commitment to the centroids that a BPK proof
//! names (public input 5, [`centroid_commitment`]).
//!
//! # From data to a commitment
//!
//! 1. **Data.** Training rows of D real numbers (`1 ≤ D ≤ 12`), e.g. from a
//!    CSV file ([`parse_csv`]; [`synthetic`] makes a data set for devnets and
//!    tests).
//! 2. **Quantiser.** Per dimension, the range `[min, max]` of the training
//!    data ([`Quantiser::fit`]).
//! 3. **k-means** (linfa's `KMeans`: k-means++ seeding, the best of
//!    [`KMEANS_RUNS`] runs by inertia, a ChaCha20 RNG seeded from `seed`, so a
//!    seed gives the same centroids every time) on the rows *normalised* by
//!    the quantiser, each dimension scaled to `[0, 1]`. That is the space the
//!    circuit measures distances in (up to rounding), so k-means' nearest
//!    centroid and the circuit's agree; in raw units a dimension with a wide
//!    range would dominate k-means but not the circuit.
//! 4. **Quantise** the centroids to `round(t · 65535)`, sort them
//!    lexicographically (so the result does not depend on the order k-means
//!    labels clusters in) and commit to them.
//!
//! # Fixed point
//!
//! A real coordinate `x` of dimension `i` becomes the 16-bit integer
//! ([`COORD_BITS`]) `round((x − min_i) / (max_i − min_i) · 65535)`, with `x`
//! first clamped to `[min_i, max_i]` ([`Quantiser::quantise`]); a dimension
//! that is constant in the training data (`min_i = max_i`) carries no
//! information and maps to 0. NaN and infinities are rejected. Users'
//! behaviour vectors must be quantised with the *same* quantiser as the
//! centroids, so the quantiser is saved with them ([`CentroidsFile`]); values
//! outside the training range are clamped to its ends.
//!
//! # Coinciding centroids
//!
//! Two centroids may quantise to the same vector (K larger than the number of
//! clusters the data has, or two clusters closer than one quantum). That is
//! allowed: the commitment and the circuit accept it, and the circuit's tie
//! rule ([`nearest_centroid`]: lowest index) sends every user to the first of
//! them, so the others have size 0. [`Clusters::coinciding`] lists them.

use std::io::{Read, Write};

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::KMeans;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::circuit::{
    BpkParams, COORD_BITS, MAX_CLUSTERS, MAX_DIM, centroid_commitment, nearest_centroid,
};
use crate::export::fr_to_hex;
use crate::{Fr, ZkError};

/// The largest coordinate: `2^16 − 1`.
pub const COORD_MAX: u16 = ((1u32 << COORD_BITS) - 1) as u16;
/// Default bound on k-means iterations per run.
pub const DEFAULT_MAX_ITER: u64 = 300;
/// k-means runs (from different k-means++ seedings); the one with the least
/// inertia is kept.
pub const KMEANS_RUNS: usize = 10;
/// k-means stops when the centroids move less than this (in the normalised
/// space, where one quantum is `1/65535 ≈ 1.5e-5`).
pub const KMEANS_TOLERANCE: f64 = 1e-7;
/// Largest CSV input [`parse_csv`] and [`read_csv`] accept.
pub const MAX_CSV_BYTES: usize = 256 << 20;
/// Most data rows [`parse_csv`] accepts and [`synthetic`] makes.
pub const MAX_ROWS: usize = 1_000_000;
/// Standard deviation of each synthetic blob, per dimension.
pub const SYNTHETIC_SPREAD: f64 = 1.0;
/// Least distance between two synthetic blob centres, in
/// [`SYNTHETIC_SPREAD`]s (when it can be had: see [`synthetic_blobs`]).
pub const SYNTHETIC_SEPARATION: f64 = 20.0;

// ---------------------------------------------------------------------------
// Quantisation.
// ---------------------------------------------------------------------------

/// The map from real behaviour coordinates to the circuit's 16-bit ones:
/// per dimension, `[min, max]` scaled to `[0, 65535]` (see the module docs).
///
/// Invariants (checked by [`Quantiser::new`] and when read from JSON):
/// `1 ≤ D ≤ 12` dimensions, every bound finite, `min ≤ max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawQuantiser")]
pub struct Quantiser {
    min: Vec<f64>,
    max: Vec<f64>,
}

/// A quantiser as read from JSON, before its checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuantiser {
    min: Vec<f64>,
    max: Vec<f64>,
}

impl TryFrom<RawQuantiser> for Quantiser {
    type Error = ZkError;

    fn try_from(raw: RawQuantiser) -> Result<Self, ZkError> {
        Self::new(raw.min, raw.max)
    }
}

impl Quantiser {
    /// A quantiser with these per-dimension ranges.
    pub fn new(min: Vec<f64>, max: Vec<f64>) -> Result<Self, ZkError> {
        let malformed = |reason: String| ZkError::Malformed {
            what: "quantiser",
            reason,
        };
        if min.len() != max.len() {
            return Err(malformed(format!(
                "{} minima but {} maxima",
                min.len(),
                max.len()
            )));
        }
        if !(1..=MAX_DIM).contains(&min.len()) {
            return Err(malformed(format!(
                "{} dimensions, not 1..={MAX_DIM}",
                min.len()
            )));
        }
        for (i, (lo, hi)) in min.iter().zip(&max).enumerate() {
            if !lo.is_finite() || !hi.is_finite() {
                return Err(ZkError::NotFinite {
                    what: format!("quantiser range of dimension {i} ([{lo:?}, {hi:?}])"),
                });
            }
            if lo > hi {
                return Err(malformed(format!("dimension {i}: min {lo:?} > max {hi:?}")));
            }
        }
        Ok(Self { min, max })
    }

    /// The per-dimension ranges of `data` (the checks of [`check_data`]).
    pub fn fit(data: &[Vec<f64>]) -> Result<Self, ZkError> {
        let dims = check_data(data)?;
        let mut min = vec![f64::INFINITY; dims];
        let mut max = vec![f64::NEG_INFINITY; dims];
        for row in data {
            for (i, x) in row.iter().enumerate() {
                min[i] = min[i].min(*x);
                max[i] = max[i].max(*x);
            }
        }
        Self::new(min, max)
    }

    /// D, the number of dimensions.
    pub fn dims(&self) -> usize {
        self.min.len()
    }

    /// Per-dimension lower ends (quantised to 0).
    pub fn min(&self) -> &[f64] {
        &self.min
    }

    /// Per-dimension upper ends (quantised to 65535).
    pub fn max(&self) -> &[f64] {
        &self.max
    }

    /// `x` scaled to `[0, 1]^D`: `(x − min) / (max − min)` after clamping to
    /// `[min, max]`, 0 where `min = max`. Errors on a wrong length or a
    /// coordinate that is NaN or infinite.
    pub fn normalise(&self, x: &[f64]) -> Result<Vec<f64>, ZkError> {
        if x.len() != self.dims() {
            return Err(ZkError::DimensionMismatch {
                expected: self.dims(),
                got: x.len(),
            });
        }
        x.iter()
            .zip(self.min.iter().zip(&self.max))
            .enumerate()
            .map(|(i, (&x, (&lo, &hi)))| {
                if !x.is_finite() {
                    return Err(ZkError::NotFinite {
                        what: format!("coordinate {i} ({x:?})"),
                    });
                }
                Ok(unit(x, lo, hi))
            })
            .collect()
    }

    /// `x` in the circuit's fixed point: `round(normalise(x) · 65535)` (see
    /// the module docs). Monotone in each coordinate.
    pub fn quantise(&self, x: &[f64]) -> Result<Vec<u16>, ZkError> {
        Ok(self.normalise(x)?.into_iter().map(quantise_unit).collect())
    }
}

/// `(x − lo) / (hi − lo)` with `x` clamped to `[lo, hi]`, in `[0, 1]`; 0 when
/// `lo = hi`. All finite, `lo ≤ hi`.
fn unit(x: f64, lo: f64, hi: f64) -> f64 {
    if hi <= lo {
        return 0.0;
    }
    let x = x.clamp(lo, hi);
    let width = hi - lo;
    let t = if width.is_finite() {
        (x - lo) / width
    } else {
        // A range wider than f64::MAX (e.g. [−1e308, 1e308]): halving is
        // exact, so the ratio is the same without the overflow. The choice
        // depends on the dimension only, so the map stays monotone.
        (x / 2.0 - lo / 2.0) / (hi / 2.0 - lo / 2.0)
    };
    t.clamp(0.0, 1.0)
}

/// `round(t · 65535)` for `t` in `[0, 1]` (clamped; NaN gives 0).
pub fn quantise_unit(t: f64) -> u16 {
    // `as` saturates and maps NaN to 0.
    (t.clamp(0.0, 1.0) * f64::from(COORD_MAX)).round() as u16
}

/// Checks training data: at least one row, every row of the same length D
/// with `1 ≤ D ≤ 12`, every value finite. Returns D.
pub fn check_data(data: &[Vec<f64>]) -> Result<usize, ZkError> {
    let Some(first) = data.first() else {
        return Err(ZkError::TrainingData("no rows".into()));
    };
    let dims = first.len();
    if !(1..=MAX_DIM).contains(&dims) {
        return Err(ZkError::TrainingData(format!(
            "rows have {dims} values; the circuit takes 1..={MAX_DIM} dimensions"
        )));
    }
    for (r, row) in data.iter().enumerate() {
        if row.len() != dims {
            return Err(ZkError::TrainingData(format!(
                "row {r} has {} values, row 0 has {dims}",
                row.len()
            )));
        }
        if let Some((c, x)) = row.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(ZkError::NotFinite {
                what: format!("row {r}, column {c} ({x:?})"),
            });
        }
    }
    Ok(dims)
}

// ---------------------------------------------------------------------------
// Training.
// ---------------------------------------------------------------------------

/// Trained behaviour clusters: the quantiser, the K quantised centroids in
/// lexicographic order and their commitment, with what training measured.
///
/// Made by [`train`] or read back by [`Clusters::from_json`]; either way the
/// commitment is that of the centroids.
#[derive(Debug, Clone, PartialEq)]
pub struct Clusters {
    quantiser: Quantiser,
    centroids: Vec<Vec<u16>>,
    commitment: Fr,
    sizes: Vec<u64>,
    inertia: f64,
    seed: u64,
}

/// Trains K = `k` behaviour clusters on `data` (see the module docs):
/// deterministic for a given `data`, `k`, `seed` and `max_iter` (k-means
/// iterations per run, at least 1).
///
/// Checks: `1 ≤ k ≤ 12`, the data as [`check_data`] does, at least `k` rows.
pub fn train(data: &[Vec<f64>], k: usize, seed: u64, max_iter: u64) -> Result<Clusters, ZkError> {
    if !(1..=MAX_CLUSTERS).contains(&k) {
        return Err(ZkError::InvalidParams {
            dim: data.first().map_or(0, Vec::len),
            clusters: k,
        });
    }
    let quantiser = Quantiser::fit(data)?;
    if data.len() < k {
        return Err(ZkError::TrainingData(format!(
            "{} rows, fewer than K = {k} clusters",
            data.len()
        )));
    }
    if max_iter == 0 {
        return Err(ZkError::TrainingData("max_iter must be at least 1".into()));
    }
    let dims = quantiser.dims();
    let mut flat = Vec::with_capacity(data.len() * dims);
    for row in data {
        flat.extend(quantiser.normalise(row)?);
    }
    let records = Array2::from_shape_vec((data.len(), dims), flat)
        .map_err(|e| ZkError::KMeans(e.to_string()))?;

    let model = KMeans::params_with_rng(k, ChaCha20Rng::seed_from_u64(seed))
        .n_runs(KMEANS_RUNS)
        .tolerance(KMEANS_TOLERANCE)
        .max_n_iterations(max_iter)
        .fit(&DatasetBase::from(records.view()))
        .map_err(|e| ZkError::KMeans(e.to_string()))?;
    let real = model.centroids();

    let mut centroids: Vec<Vec<u16>> = real
        .rows()
        .into_iter()
        .map(|c| c.iter().copied().map(quantise_unit).collect())
        .collect();
    centroids.sort_unstable();

    // Sizes as the circuit assigns (nearest quantised centroid, lowest index
    // on a tie); inertia in the normalised space, against the real centroids.
    let mut sizes = vec![0u64; k];
    let mut inertia = 0.0;
    let mut point = Vec::with_capacity(dims);
    for row in records.rows() {
        point.clear();
        point.extend(row.iter().copied().map(quantise_unit));
        sizes[nearest_centroid(&point, &centroids)? as usize] += 1;
        inertia += real
            .rows()
            .into_iter()
            .map(|c| {
                c.iter()
                    .zip(&row)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
            })
            .fold(f64::INFINITY, f64::min);
    }
    let commitment = centroid_commitment(&centroids)?;
    Ok(Clusters {
        quantiser,
        centroids,
        commitment,
        sizes,
        inertia: inertia / data.len() as f64,
        seed,
    })
}

impl Clusters {
    /// D, coordinates per vector.
    pub fn dims(&self) -> usize {
        self.quantiser.dims()
    }

    /// K, the number of clusters.
    pub fn k(&self) -> usize {
        self.centroids.len()
    }

    /// The BPK parameters (D, K) a proving key for these clusters needs.
    pub fn params(&self) -> BpkParams {
        BpkParams::new(self.dims(), self.k()).expect("checked when made")
    }

    /// The quantiser users' behaviour vectors must go through.
    pub fn quantiser(&self) -> &Quantiser {
        &self.quantiser
    }

    /// The K quantised centroids, D coordinates each, in lexicographic order
    /// as [`train`] leaves them.
    pub fn centroids(&self) -> &[Vec<u16>] {
        &self.centroids
    }

    /// [`centroid_commitment`] of [`Clusters::centroids`].
    pub fn commitment(&self) -> Fr {
        self.commitment
    }

    /// The commitment as [`fr_to_hex`] writes it.
    pub fn commitment_hex(&self) -> String {
        fr_to_hex(self.commitment)
    }

    /// Training rows per cluster, assigned as the circuit would (nearest
    /// quantised centroid, lowest index on a tie).
    pub fn sizes(&self) -> &[u64] {
        &self.sizes
    }

    /// Mean squared distance of the training rows to their nearest (real)
    /// centroid, in the normalised space (each dimension scaled to `[0, 1]`).
    pub fn inertia(&self) -> f64 {
        self.inertia
    }

    /// The seed k-means ran with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The cluster the circuit puts a raw behaviour vector in: its quantised
    /// form's nearest centroid.
    pub fn assign(&self, x: &[f64]) -> Result<u32, ZkError> {
        nearest_centroid(&self.quantiser.quantise(x)?, &self.centroids)
    }

    /// Pairs `(i, j)`, `i < j`, of centroids that quantised to the same vector
    /// (allowed; see the module docs).
    pub fn coinciding(&self) -> Vec<(usize, usize)> {
        let c = &self.centroids;
        (0..c.len())
            .flat_map(|i| (i + 1..c.len()).map(move |j| (i, j)))
            .filter(|&(i, j)| c[i] == c[j])
            .collect()
    }

    /// The JSON file form.
    pub fn to_file(&self) -> CentroidsFile {
        CentroidsFile {
            dims: self.dims(),
            clusters: self.k(),
            commitment: self.commitment_hex(),
            centroids: self.centroids.clone(),
            sizes: self.sizes.clone(),
            quantiser: self.quantiser.clone(),
            inertia: self.inertia,
            seed: self.seed,
        }
    }

    /// The JSON file, pretty-printed with a final newline (the same bytes for
    /// the same clusters).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(&self.to_file())
            .expect("a CentroidsFile always serialises (finite numbers, string keys)");
        out.push(b'\n');
        out
    }

    /// Checks a file's shape and recomputes its commitment: a commitment that
    /// is not that of the centroids is an error.
    pub fn from_file(file: CentroidsFile) -> Result<Self, ZkError> {
        let malformed = |reason: String| ZkError::Malformed {
            what: "centroids file",
            reason,
        };
        let params = BpkParams::new(file.dims, file.clusters)?;
        if file.centroids.len() != params.clusters() {
            return Err(malformed(format!(
                "{} centroids, but clusters is {}",
                file.centroids.len(),
                params.clusters()
            )));
        }
        if let Some((j, c)) = file
            .centroids
            .iter()
            .enumerate()
            .find(|(_, c)| c.len() != params.dim())
        {
            return Err(malformed(format!(
                "centroid {j} has {} coordinates, but dims is {}",
                c.len(),
                params.dim()
            )));
        }
        if file.quantiser.dims() != params.dim() {
            return Err(malformed(format!(
                "quantiser has {} dimensions, but dims is {}",
                file.quantiser.dims(),
                params.dim()
            )));
        }
        if file.sizes.len() != params.clusters() {
            return Err(malformed(format!(
                "{} sizes, but clusters is {}",
                file.sizes.len(),
                params.clusters()
            )));
        }
        if !(file.inertia.is_finite() && file.inertia >= 0.0) {
            return Err(malformed(format!(
                "inertia {:?} is not a finite number >= 0",
                file.inertia
            )));
        }
        let stated = crate::export::parse_fr(&file.commitment)?;
        let computed = centroid_commitment(&file.centroids)?;
        if stated != computed {
            return Err(ZkError::CommitmentMismatch {
                stated: fr_to_hex(stated),
                computed: fr_to_hex(computed),
            });
        }
        Ok(Self {
            quantiser: file.quantiser,
            centroids: file.centroids,
            commitment: computed,
            sizes: file.sizes,
            inertia: file.inertia,
            seed: file.seed,
        })
    }

    /// Reads a centroids JSON file (hostile input: every check of
    /// [`Clusters::from_file`]).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ZkError> {
        let file: CentroidsFile =
            serde_json::from_slice(bytes).map_err(|e| ZkError::Malformed {
                what: "centroids file",
                reason: e.to_string(),
            })?;
        Self::from_file(file)
    }
}

/// The JSON form of [`Clusters`] (`int zk clusters --out`):
///
/// ```json
/// {
///   "dims": 2,
///   "clusters": 3,
///   "commitment": "0x1a2b…",       // 64 hex digits, big-endian
///   "centroids": [[0, 12], …],     // K vectors of D integers in 0..=65535
///   "sizes": [10, 12, 9],          // training rows per cluster
///   "quantiser": { "min": [..], "max": [..] },
///   "inertia": 0.0012,
///   "seed": 0
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentroidsFile {
    /// D.
    pub dims: usize,
    /// K.
    pub clusters: usize,
    /// The centroid commitment, `0x` and 64 hex digits ([`fr_to_hex`]);
    /// decimal is accepted on reading.
    pub commitment: String,
    /// The K quantised centroids.
    pub centroids: Vec<Vec<u16>>,
    /// Training rows per cluster.
    pub sizes: Vec<u64>,
    /// The quantiser for users' behaviour vectors.
    pub quantiser: Quantiser,
    /// See [`Clusters::inertia`].
    pub inertia: f64,
    /// The k-means seed.
    pub seed: u64,
}

// ---------------------------------------------------------------------------
// Synthetic data.
// ---------------------------------------------------------------------------

/// A synthetic data set: rows drawn from Gaussian blobs, with the blob of each
/// row.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    /// The rows, D values each.
    pub rows: Vec<Vec<f64>>,
    /// The blob (index into `centres`) each row was drawn around.
    pub labels: Vec<usize>,
    /// The K blob centres.
    pub centres: Vec<Vec<f64>>,
}

/// `n` rows of `dims` values around `k` blob centres (deterministic from
/// `seed`), for devnets and tests.
///
/// Centres are uniform in `[0, 100·k)^dims`, drawn again (up to 1,000 times
/// each) until they are at least [`SYNTHETIC_SEPARATION`] spreads from every
/// earlier one, so the blobs are well separated; each row picks a blob
/// uniformly and adds independent `N(0, SYNTHETIC_SPREAD²)` noise to every
/// coordinate. Needs `1 ≤ n ≤ 1,000,000`, `1 ≤ dims, k ≤ 12`.
pub fn synthetic_blobs(n: usize, dims: usize, k: usize, seed: u64) -> Result<Synthetic, ZkError> {
    BpkParams::new(dims, k)?;
    if !(1..=MAX_ROWS).contains(&n) {
        return Err(ZkError::TrainingData(format!(
            "a synthetic data set has 1..={MAX_ROWS} rows, not {n}"
        )));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let side = 100.0 * k as f64;
    let min_sep2 = (SYNTHETIC_SEPARATION * SYNTHETIC_SPREAD).powi(2);
    let mut centres: Vec<Vec<f64>> = Vec::with_capacity(k);
    while centres.len() < k {
        let mut c = Vec::new();
        for _ in 0..1000 {
            c = (0..dims).map(|_| rng.gen_range(0.0..side)).collect();
            let far = centres.iter().all(|o| {
                o.iter()
                    .zip(&c)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
                    >= min_sep2
            });
            if far {
                break;
            }
        }
        centres.push(c);
    }
    let mut rows = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let j = rng.gen_range(0..k);
        let row = centres[j]
            .iter()
            .map(|c| c + SYNTHETIC_SPREAD * rng.sample::<f64, _>(StandardNormal))
            .collect();
        rows.push(row);
        labels.push(j);
    }
    Ok(Synthetic {
        rows,
        labels,
        centres,
    })
}

/// The rows of [`synthetic_blobs`].
pub fn synthetic(n: usize, dims: usize, k: usize, seed: u64) -> Result<Vec<Vec<f64>>, ZkError> {
    Ok(synthetic_blobs(n, dims, k, seed)?.rows)
}

// ---------------------------------------------------------------------------
// CSV.
// ---------------------------------------------------------------------------

/// Writes `rows` as CSV: a header `x0,x1,..` (as wide as the first row), then
/// one line per row. Numbers are written in Rust's shortest form that reads
/// back to the same `f64`, so [`parse_csv`] returns exactly `rows`.
pub fn write_csv<W: Write>(mut w: W, rows: &[Vec<f64>]) -> std::io::Result<()> {
    let dims = rows.first().map_or(0, Vec::len);
    let header: Vec<String> = (0..dims).map(|i| format!("x{i}")).collect();
    writeln!(w, "{}", header.join(","))?;
    let mut line = String::new();
    for row in rows {
        line.clear();
        for (i, x) in row.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&x.to_string());
        }
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    w.flush()
}

/// Reads CSV from `r` (at most [`MAX_CSV_BYTES`]) and parses it as
/// [`parse_csv`] does.
pub fn read_csv<R: Read>(r: R) -> Result<Vec<Vec<f64>>, ZkError> {
    let mut bytes = Vec::new();
    r.take(MAX_CSV_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ZkError::Malformed {
            what: "CSV",
            reason: e.to_string(),
        })?;
    parse_csv(&bytes)
}

/// A CSV field quoted in an error message, cut short if long.
fn show(field: &str) -> String {
    const MAX: usize = 32;
    match field.char_indices().nth(MAX) {
        Some((end, _)) => format!("{:?}…", &field[..end]),
        None => format!("{field:?}"),
    }
}

/// Parses CSV training data (hostile input): comma-separated numbers, one row
/// per line, every row as wide, 1..=12 columns.
///
/// * an optional header: a first line none of whose fields is a number;
/// * fields may be padded with spaces or tabs and wrapped in double quotes;
/// * blank lines are skipped; `\n` or `\r\n` line ends; a UTF-8 byte-order
///   mark is skipped;
/// * at most [`MAX_CSV_BYTES`] bytes and [`MAX_ROWS`] data rows.
///
/// Errors name the line (from 1) and column (from 1): a field that is not a
/// number, empty, NaN or infinite, a row of another width, text that is not
/// UTF-8; and a file with no data rows.
pub fn parse_csv(bytes: &[u8]) -> Result<Vec<Vec<f64>>, ZkError> {
    if bytes.len() > MAX_CSV_BYTES {
        return Err(ZkError::Malformed {
            what: "CSV",
            reason: format!("more than {MAX_CSV_BYTES} bytes"),
        });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut rows: Vec<Vec<f64>> = Vec::new();
    // (columns, line) of the first row, header or data.
    let mut width: Option<(usize, usize)> = None;
    let mut header = false;
    let mut fields: Vec<&str> = Vec::with_capacity(MAX_DIM);
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let err = |reason: String| ZkError::Csv { line, reason };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| err("not UTF-8 text".into()))?;
        if text.trim().is_empty() {
            continue;
        }
        fields.clear();
        for f in text.split(',') {
            if fields.len() == MAX_DIM {
                return Err(err(format!(
                    "more than {MAX_DIM} columns (the circuit takes at most {MAX_DIM} dimensions)"
                )));
            }
            let f = f.trim_matches([' ', '\t']);
            let f = f
                .strip_prefix('"')
                .and_then(|f| f.strip_suffix('"'))
                .unwrap_or(f);
            fields.push(f);
        }
        if let Some((w, wline)) = width {
            if fields.len() != w {
                return Err(err(format!(
                    "{} columns, but line {wline} has {w}",
                    fields.len()
                )));
            }
        } else {
            width = Some((fields.len(), line));
            if fields.iter().all(|f| f.parse::<f64>().is_err()) {
                header = true;
                continue;
            }
        }
        if rows.len() == MAX_ROWS {
            return Err(err(format!("more than {MAX_ROWS} data rows")));
        }
        let row = fields
            .iter()
            .enumerate()
            .map(|(c, f)| {
                let column = c + 1;
                if f.is_empty() {
                    return Err(err(format!("column {column} is empty")));
                }
                match f.parse::<f64>() {
                    Ok(x) if x.is_finite() => Ok(x),
                    Ok(_) => Err(err(format!(
                        "column {column}: {} is not a finite number",
                        show(f)
                    ))),
                    Err(_) => Err(err(format!("column {column}: {} is not a number", show(f)))),
                }
            })
            .collect::<Result<Vec<f64>, ZkError>>()?;
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(ZkError::Malformed {
            what: "CSV",
            reason: if header {
                "no data rows (only a header)".into()
            } else {
                "no data rows (empty file)".into()
            },
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(min: &[f64], max: &[f64]) -> Quantiser {
        Quantiser::new(min.to_vec(), max.to_vec()).unwrap()
    }

    #[test]
    fn quantise_ends_middle_clamp_and_zero_width() {
        let qz = q(&[0.0, -10.0, 5.0], &[1.0, 10.0, 5.0]);
        assert_eq!(qz.quantise(&[0.0, -10.0, 5.0]).unwrap(), [0, 0, 0]);
        assert_eq!(qz.quantise(&[1.0, 10.0, 7.0]).unwrap(), [65535, 65535, 0]);
        // 0.5 · 65535 = 32767.5 rounds away from zero.
        assert_eq!(qz.quantise(&[0.5, 0.0, -3.0]).unwrap(), [32768, 32768, 0]);
        // Clamped outside the training range.
        assert_eq!(qz.quantise(&[-7.0, 1e9, 0.0]).unwrap(), [0, 65535, 0]);
        assert_eq!(
            qz.quantise(&[f64::MIN, f64::MAX, f64::MAX]).unwrap(),
            [0, 65535, 0]
        );
    }

    #[test]
    fn quantise_a_range_wider_than_f64() {
        let wide = q(&[-1e308], &[1e308]);
        assert_eq!(wide.quantise(&[0.0]).unwrap(), [32768]);
        assert_eq!(wide.quantise(&[1e308]).unwrap(), [65535]);
        assert_eq!(wide.quantise(&[-1e308]).unwrap(), [0]);
    }

    #[test]
    fn quantise_rejects_non_finite_and_wrong_length() {
        let qz = q(&[0.0, 0.0], &[1.0, 1.0]);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = qz.quantise(&[0.5, bad]).unwrap_err();
            assert!(matches!(e, ZkError::NotFinite { .. }), "{e}");
            assert!(e.to_string().contains("coordinate 1"), "{e}");
        }
        assert_eq!(
            qz.quantise(&[0.5]).unwrap_err(),
            ZkError::DimensionMismatch {
                expected: 2,
                got: 1
            }
        );
    }

    #[test]
    fn quantiser_checks_its_ranges() {
        assert!(Quantiser::new(vec![0.0], vec![1.0, 2.0]).is_err());
        assert!(Quantiser::new(vec![], vec![]).is_err());
        assert!(Quantiser::new(vec![0.0; 13], vec![1.0; 13]).is_err());
        assert!(Quantiser::new(vec![2.0], vec![1.0]).is_err());
        assert!(Quantiser::new(vec![f64::NAN], vec![1.0]).is_err());
        assert!(Quantiser::new(vec![0.0], vec![f64::INFINITY]).is_err());
        assert!(Quantiser::new(vec![1.0], vec![1.0]).is_ok());
    }

    #[test]
    fn fit_takes_per_dimension_ranges() {
        let data = vec![vec![1.0, -2.0], vec![3.0, 4.0], vec![2.0, 0.0]];
        let qz = Quantiser::fit(&data).unwrap();
        assert_eq!(qz.min(), [1.0, -2.0]);
        assert_eq!(qz.max(), [3.0, 4.0]);
    }

    #[test]
    fn hex_reads_back() {
        for x in [Fr::from(0u64), Fr::from(255u64), -Fr::from(1u64)] {
            let h = fr_to_hex(x);
            assert_eq!(h.len(), 66);
            assert_eq!(crate::export::parse_fr(&h).unwrap(), x);
        }
        assert_eq!(
            fr_to_hex(Fr::from(255u64)),
            format!("0x{}ff", "0".repeat(62))
        );
    }

    #[test]
    fn one_distinct_point_gives_coinciding_centroids() {
        let data = vec![vec![4.0, 4.0]; 5];
        let c = train(&data, 3, 1, 50).unwrap();
        assert_eq!(c.centroids(), [[0, 0], [0, 0], [0, 0]]);
        assert_eq!(c.coinciding(), [(0, 1), (0, 2), (1, 2)]);
        assert_eq!(c.sizes(), [5, 0, 0]);
        assert_eq!(c.inertia(), 0.0);
        assert_eq!(c.assign(&[100.0, -3.0]).unwrap(), 0);
    }

    #[test]
    fn sizes_follow_the_circuit_and_centroids_are_sorted() {
        let data = vec![
            vec![10.0, 0.0],
            vec![10.0, 0.1],
            vec![0.0, 1.0],
            vec![0.1, 1.0],
            vec![0.0, 0.9],
        ];
        let c = train(&data, 2, 7, 100).unwrap();
        let mut sorted = c.centroids().to_vec();
        sorted.sort();
        assert_eq!(c.centroids(), sorted);
        assert_eq!(c.sizes(), [3, 2]);
        assert_eq!(c.assign(&[0.0, 1.0]).unwrap(), 0);
        assert_eq!(c.assign(&[10.0, 0.0]).unwrap(), 1);
        assert!(c.coinciding().is_empty());
        assert_eq!(c.commitment(), centroid_commitment(c.centroids()).unwrap());
    }
}
