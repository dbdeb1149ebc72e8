//! `int zk`: Groth16 setup, prover, verifier and snarkjs export for BPK
//! proofs, and the behaviour-cluster trainer (`clusters`, with `synth` for a
//! synthetic data set). The work is in `int_zk`; this is the file and
//! terminal edge.
//!
//! Exit codes: 0 success (`verify`: the proof is valid), 1 `verify`: the
//! proof is INVALID, 2 any error (unreadable or malformed file, key for
//! another circuit, witness that does not satisfy the circuit, ...).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand, ValueEnum};
use int_zk::circuit::{BpkWitness, DEFAULT_CLUSTERS, DEFAULT_DIM, identity_leaf};
use int_zk::clusters::{self, MAX_CSV_BYTES};
use int_zk::export::{
    self, BpkProof, BpkProvingKey, BpkVerifyingKey, PROOF_FILE, PROVING_KEY_FILE,
    SNARKJS_PROOF_FILE, SNARKJS_PUBLIC_FILE, SNARKJS_VK_FILE, SnarkjsProof, SnarkjsVerifyingKey,
    VERIFYING_KEY_FILE,
};
use int_zk::groth;
use int_zk::tree::{CpuPairHasher, IdentityTree};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Deserialize;

/// Largest key or input file read (a proving key for D = K = 12 is a few MB).
const MAX_BIG_FILE: u64 = 1 << 30;
/// Largest proof, public-signal or snarkjs verification-key file read.
const MAX_SMALL_FILE: u64 = 16 << 20;

const INPUT_HELP: &str = r#"INPUT FILE (JSON, --input):
  {
    "secret":     "123456789",             the user's secret: decimal or 0x-hex field element
    "behaviour":  [100, 200, ...],         behaviour vector: D integers in 0..=65535
    "centroids":  [[0, 0, ...], ...],      the epoch's K centroids, D integers each
    "epoch":      7,                       the epoch (u64)
    "scope":      "0xabc...",              hash of the intent: decimal or 0x-hex field element
    "leaves":     ["0x...", "123", ...],   every identity-tree leaf, in insertion order
    "leaf_index": 1                        position of the user's leaf in `leaves`
  }
The tree is rebuilt from `leaves` and the path taken for `leaf_index`; that leaf
must be Poseidon(Poseidon(secret), Poseidon(behaviour)). D and K come from
`behaviour` and `centroids` and must match the proving key. The claimed cluster
is the nearest centroid (lowest index on a tie).

OUTPUT (in --out DIR):
  proof.json   the proof in snarkjs's format
  public.json  the public signals in snarkjs's format:
               [root, epoch, scope, nullifier, cluster, centroid_commitment]
  proof.bin    the proof in arkworks' compressed binary form (128 bytes)"#;

/// `int zk` subcommands.
#[derive(Subcommand)]
pub enum ZkCmd {
    /// Groth16 setup of the BPK circuit: writes DIR/proving.key,
    /// DIR/verifying.key (arkworks compressed) and DIR/verification_key.json
    /// (snarkjs).
    Setup(SetupArgs),
    /// Prove membership, nullifier and cluster from an input JSON file;
    /// writes proof.json and public.json (snarkjs format) and proof.bin.
    #[command(after_long_help = INPUT_HELP)]
    Prove(ProveArgs),
    /// Verify a proof: prints OK (exit 0) or INVALID (exit 1); errors exit 2.
    Verify(VerifyArgs),
    /// Convert a binary verifying key or proof to snarkjs JSON.
    Export(ExportArgs),
    /// Train the behaviour clusters (k-means) on a CSV data set, quantise
    /// the centroids to the circuit's fixed point and write them with their
    /// commitment to a JSON file; the last line printed is
    /// `commitment: 0x...`.
    #[command(after_long_help = CLUSTERS_HELP)]
    Clusters(ClustersArgs),
    /// Write a synthetic behaviour data set (Gaussian blobs) as CSV, for
    /// devnets and tests.
    Synth(SynthArgs),
}

const CLUSTERS_HELP: &str = r#"DATA (CSV, --data):
  One behaviour vector per line, D comma-separated numbers (1 <= D <= 12),
  every line as wide; an optional header line (no field a number); blank
  lines skipped. At most 256 MiB and 1,000,000 rows.

QUANTISATION:
  Each dimension's range [min, max] in the data is scaled to 0..=65535 (a
  constant dimension maps to 0); k-means runs in that scaled space. Users'
  behaviour vectors must be quantised with the same ranges, so they are saved
  in the output ("quantiser").

OUTPUT (JSON, --out):
  { "dims": D, "clusters": K, "commitment": "0x...", "centroids": [[..], ..],
    "sizes": [..], "quantiser": {"min": [..], "max": [..]}, "inertia": x,
    "seed": S }
  Centroids are sorted; the commitment is Poseidon over the centroid hashes,
  public input 5 of a BPK proof (public.json gives it in decimal)."#;

/// `int zk clusters`.
#[derive(Args)]
pub struct ClustersArgs {
    /// Training data (CSV; format below, in --help).
    #[arg(long, value_name = "FILE.csv")]
    data: PathBuf,
    /// K, the number of clusters (1..=12).
    #[arg(long, value_name = "K")]
    k: usize,
    /// Output JSON file (written atomically; overwritten if present).
    #[arg(long, value_name = "FILE.json")]
    out: PathBuf,
    /// k-means seed: the same data, K, seed and --max-iter give the same file.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Most k-means iterations per run (at least 1).
    #[arg(long, value_name = "N", default_value_t = clusters::DEFAULT_MAX_ITER)]
    max_iter: u64,
}

/// `int zk synth`.
#[derive(Args)]
pub struct SynthArgs {
    /// Output CSV file (written atomically; overwritten if present).
    #[arg(long, value_name = "FILE.csv")]
    out: PathBuf,
    /// Rows (1..=1000000).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    n: usize,
    /// D, values per row (1..=12).
    #[arg(long, value_name = "D", default_value_t = DEFAULT_DIM)]
    dims: usize,
    /// Number of Gaussian blobs (1..=12).
    #[arg(long, value_name = "K", default_value_t = DEFAULT_CLUSTERS)]
    k: usize,
    /// The data set is a function of N, D, K and this seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
}

/// `int zk setup`.
#[derive(Args)]
pub struct SetupArgs {
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// D, coordinates per behaviour vector (1..=12).
    #[arg(long, default_value_t = DEFAULT_DIM)]
    dims: usize,
    /// K, number of behaviour clusters (1..=12).
    #[arg(long, default_value_t = DEFAULT_CLUSTERS)]
    clusters: usize,
    /// Deterministic keys from this seed, FOR DEVNETS ONLY: anyone who knows
    /// the seed can forge proofs. Without it the setup draws OS randomness.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Overwrite keys already in DIR.
    #[arg(long)]
    force: bool,
}

/// `int zk prove`.
#[derive(Args)]
pub struct ProveArgs {
    /// Proving key (DIR/proving.key from `int zk setup`).
    #[arg(long, value_name = "FILE")]
    pk: PathBuf,
    /// Input JSON (format below, in --help).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Output directory for proof.json, public.json and proof.bin (created if
    /// missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// `int zk verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// Verifying key: verifying.key (binary) or a snarkjs
    /// verification_key.json (by the `.json` extension).
    #[arg(long, value_name = "FILE")]
    vk: PathBuf,
    /// Proof: snarkjs proof.json (by the `.json` extension) or proof.bin.
    #[arg(long, value_name = "FILE")]
    proof: PathBuf,
    /// Public signals (snarkjs public.json).
    #[arg(long, value_name = "FILE")]
    public: PathBuf,
}

/// Export formats.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// snarkjs's JSON (`snarkjs groth16 verify` reads it).
    Snarkjs,
}

/// `int zk export`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(false).args(["vk", "proof"])))]
pub struct ExportArgs {
    /// A binary verifying key (verifying.key).
    #[arg(long, value_name = "FILE")]
    vk: Option<PathBuf>,
    /// A binary proof (proof.bin).
    #[arg(long, value_name = "FILE")]
    proof: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "snarkjs")]
    format: Format,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Runs an `int zk` subcommand; errors are printed here and exit 2.
pub fn run(cmd: ZkCmd) -> ExitCode {
    let result = match cmd {
        ZkCmd::Setup(a) => setup(&a).map(|()| ExitCode::SUCCESS),
        ZkCmd::Prove(a) => prove(&a).map(|()| ExitCode::SUCCESS),
        ZkCmd::Verify(a) => verify(&a),
        ZkCmd::Export(a) => export_cmd(&a).map(|()| ExitCode::SUCCESS),
        ZkCmd::Clusters(a) => clusters_cmd(&a).map(|()| ExitCode::SUCCESS),
        ZkCmd::Synth(a) => synth(&a).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

// ---------------------------------------------------------------------------
// Files.
// ---------------------------------------------------------------------------

fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        meta.len() <= max,
        "{}: {} bytes, more than the {max} this file may have",
        path.display(),
        meta.len()
    );
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, max: u64) -> Result<T> {
    let bytes = read_limited(path, max)?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Writes through a temporary file and a rename, so a reader never sees a
/// half-written key.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn to_json_pretty<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(v)?;
    out.push(b'\n');
    Ok(out)
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

fn load_vk(path: &Path) -> Result<BpkVerifyingKey> {
    let vk = if is_json(path) {
        let json: SnarkjsVerifyingKey = read_json(path, MAX_SMALL_FILE)?;
        export::vk_from_snarkjs(&json)
    } else {
        export::verifying_key_from_bytes(&read_limited(path, MAX_BIG_FILE)?)
    };
    vk.with_context(|| format!("loading {}", path.display()))
}

fn load_proof(path: &Path) -> Result<BpkProof> {
    let proof = if is_json(path) {
        let json: SnarkjsProof = read_json(path, MAX_SMALL_FILE)?;
        export::proof_from_snarkjs(&json)
    } else {
        export::proof_from_bytes(&read_limited(path, MAX_SMALL_FILE)?)
    };
    proof.with_context(|| format!("loading {}", path.display()))
}

// ---------------------------------------------------------------------------
// Progress.
// ---------------------------------------------------------------------------

/// A one-line stage indicator on stderr: `[2/4] generating keys ⠹ 3.1s`,
/// redrawn four times a second while the stage runs if stderr is a
/// terminal; one line per stage otherwise (logs, tests). arkworks' setup has
/// no progress hooks, so the long stage shows elapsed time, not a percentage.
fn stage<T>(step: usize, steps: usize, label: &str, work: impl FnOnce() -> T) -> T {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    if !tty {
        eprintln!("[{step}/{steps}] {label}");
        return work();
    }
    let done = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<()>();
    let out = std::thread::scope(|s| {
        let done = &done;
        s.spawn(move || {
            const SPIN: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                eprint!(
                    "\r[{step}/{steps}] {label} {} {:.1}s\x1b[K",
                    SPIN[i % SPIN.len()],
                    start.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
                i += 1;
                let _ = rx.recv_timeout(Duration::from_millis(250));
            }
        });
        let out = work();
        done.store(true, Ordering::Relaxed);
        let _ = tx.send(());
        out
    });
    eprintln!(
        "\r[{step}/{steps}] {label}: {:.1}s\x1b[K",
        start.elapsed().as_secs_f64()
    );
    out
}

// ---------------------------------------------------------------------------
// Commands.
// ---------------------------------------------------------------------------

fn setup(a: &SetupArgs) -> Result<()> {
    // Check the parameters before any work or warning.
    int_zk::circuit::BpkParams::new(a.dims, a.clusters)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let paths = [PROVING_KEY_FILE, VERIFYING_KEY_FILE, SNARKJS_VK_FILE].map(|f| a.out.join(f));
    if !a.force
        && let Some(p) = paths.iter().find(|p| p.exists())
    {
        bail!("{} exists (pass --force to overwrite)", p.display());
    }
    if let Some(seed) = a.seed {
        eprintln!(
            "WARNING: --seed {seed} makes these keys reproducible: anyone who knows the seed \
             can forge proofs. Use them on devnets only. Production keys need a multi-party \
             ceremony (MPC, e.g. a powers-of-tau phase 1 and a circuit-specific phase 2 with \
             independent contributors), not a single-machine setup."
        );
    }
    let (dims, clusters) = (a.dims, a.clusters);
    let (pk, vk) = stage(
        1,
        3,
        &format!("generating Groth16 keys for D = {dims}, K = {clusters}"),
        || match a.seed {
            Some(seed) => groth::setup(dims, clusters, &mut ChaCha20Rng::seed_from_u64(seed)),
            None => groth::setup(dims, clusters, &mut rand::rngs::OsRng),
        },
    )?;
    let [pk_path, vk_path, json_path] = &paths;
    stage(2, 3, "writing proving.key and verifying.key", || {
        write_atomic(pk_path, &export::proving_key_to_bytes(&pk))?;
        write_atomic(vk_path, &export::verifying_key_to_bytes(&vk))
    })?;
    stage(3, 3, "writing verification_key.json (snarkjs)", || {
        write_atomic(json_path, &to_json_pretty(&export::vk_to_snarkjs(&vk))?)
    })?;
    for p in &paths {
        println!("{}", p.display());
    }
    Ok(())
}

/// The `int zk prove` input file (see [`INPUT_HELP`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProveInput {
    secret: String,
    behaviour: Vec<u16>,
    centroids: Vec<Vec<u16>>,
    epoch: u64,
    scope: String,
    leaves: Vec<String>,
    leaf_index: u64,
}

fn prove(a: &ProveArgs) -> Result<()> {
    let input: ProveInput = read_json(&a.input, MAX_BIG_FILE)?;
    let ctx = || format!("in {}", a.input.display());
    let secret = export::parse_fr(&input.secret)
        .context("secret")
        .with_context(ctx)?;
    let scope = export::parse_fr(&input.scope)
        .context("scope")
        .with_context(ctx)?;
    // Shapes first (D, K in range, every vector of length D), so that a
    // mistake there is named as such.
    int_zk::circuit::nearest_centroid(&input.behaviour, &input.centroids)
        .context("behaviour and centroids")
        .with_context(ctx)?;
    let leaf = identity_leaf(secret, &input.behaviour)
        .context("behaviour")
        .with_context(ctx)?;
    let leaves = input
        .leaves
        .iter()
        .enumerate()
        .map(|(i, l)| {
            export::parse_fr(l)
                .with_context(|| format!("leaves[{i}]"))
                .with_context(ctx)
        })
        .collect::<Result<Vec<_>>>()?;
    // One batched hash call per tree level, on all cores.
    let mut tree = IdentityTree::new(1)?;
    let done = tree.append_batch(&leaves, &CpuPairHasher)?;
    ensure!(
        done.refused == 0,
        "{}: {} leaves do not fit in the identity tree",
        a.input.display(),
        leaves.len()
    );
    let path = tree
        .path(input.leaf_index)
        .context("leaf_index")
        .with_context(ctx)?;
    ensure!(
        tree.leaf(input.leaf_index) == Some(leaf),
        "{}: leaves[{}] is not Poseidon(Poseidon(secret), Poseidon(behaviour)) = {leaf}",
        a.input.display(),
        input.leaf_index
    );
    let witness = BpkWitness::new(secret, &input.behaviour, &input.centroids, path);
    let public = witness
        .public_inputs(input.epoch, scope)
        .context("centroids")
        .with_context(ctx)?;

    let pk: BpkProvingKey = stage(1, 2, "loading proving key", || {
        let bytes = read_limited(&a.pk, MAX_BIG_FILE)?;
        export::proving_key_from_bytes(&bytes)
            .with_context(|| format!("loading {}", a.pk.display()))
    })?;
    let proof = stage(2, 2, "proving", || {
        groth::prove(&pk, &public, &witness, &mut rand::rngs::OsRng)
    })?;

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    write_atomic(
        &a.out.join(SNARKJS_PROOF_FILE),
        &to_json_pretty(&export::proof_to_snarkjs(&proof))?,
    )?;
    write_atomic(
        &a.out.join(SNARKJS_PUBLIC_FILE),
        &to_json_pretty(&export::public_to_snarkjs(&public))?,
    )?;
    write_atomic(&a.out.join(PROOF_FILE), &export::proof_to_bytes(&proof))?;
    println!("root                {}", public.root);
    println!("epoch               {}", public.epoch);
    println!("scope               {}", public.scope);
    println!("nullifier           {}", public.nullifier);
    println!("cluster             {}", public.cluster);
    println!("centroid_commitment {}", public.centroid_commitment);
    for f in [SNARKJS_PROOF_FILE, SNARKJS_PUBLIC_FILE, PROOF_FILE] {
        println!("{}", a.out.join(f).display());
    }
    Ok(())
}

fn verify(a: &VerifyArgs) -> Result<ExitCode> {
    let vk = load_vk(&a.vk)?;
    let proof = load_proof(&a.proof)?;
    let signals: Vec<String> = read_json(&a.public, MAX_SMALL_FILE)?;
    let public = export::public_from_snarkjs(&signals)
        .with_context(|| format!("loading {}", a.public.display()))?;
    let ok = groth::verify(&vk, &public, &proof)
        .with_context(|| format!("verifying against {}", a.vk.display()))?;
    if ok {
        println!("OK");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("INVALID");
        Ok(ExitCode::from(1))
    }
}

fn export_cmd(a: &ExportArgs) -> Result<()> {
    let Format::Snarkjs = a.format;
    let json = match (&a.vk, &a.proof) {
        (Some(vk), _) => to_json_pretty(&export::vk_to_snarkjs(&load_vk(vk)?))?,
        (None, Some(proof)) => to_json_pretty(&export::proof_to_snarkjs(&load_proof(proof)?))?,
        (None, None) => bail!("pass --vk FILE or --proof FILE"),
    };
    match &a.out {
        Some(path) => write_atomic(path, &json),
        None => Ok(std::io::stdout().write_all(&json)?),
    }
}

fn clusters_cmd(a: &ClustersArgs) -> Result<()> {
    // Before reading what may be a large file.
    ensure!(
        (1..=int_zk::circuit::MAX_CLUSTERS).contains(&a.k),
        "--k {}: the circuit takes 1..={} clusters",
        a.k,
        int_zk::circuit::MAX_CLUSTERS
    );
    let bytes = read_limited(&a.data, MAX_CSV_BYTES as u64)?;
    let data = clusters::parse_csv(&bytes).with_context(|| a.data.display().to_string())?;
    let trained = clusters::train(&data, a.k, a.seed, a.max_iter)
        .with_context(|| format!("training on {}", a.data.display()))?;
    write_atomic(&a.out, &trained.to_json())?;
    for (i, j) in trained.coinciding() {
        eprintln!(
            "note: centroids {i} and {j} quantise to the same vector; the circuit puts \
             every user nearest to it in cluster {i}"
        );
    }
    let sizes: Vec<String> = trained.sizes().iter().map(u64::to_string).collect();
    println!("rows: {}", data.len());
    println!("dims: {}", trained.dims());
    println!("k: {}", trained.k());
    println!("sizes: {}", sizes.join(" "));
    println!("inertia: {:e}", trained.inertia());
    println!("out: {}", a.out.display());
    println!("commitment_decimal: {}", trained.commitment());
    println!("commitment: {}", trained.commitment_hex());
    Ok(())
}

fn synth(a: &SynthArgs) -> Result<()> {
    let rows = clusters::synthetic(a.n, a.dims, a.k, a.seed)?;
    let mut csv = Vec::new();
    clusters::write_csv(&mut csv, &rows)?;
    write_atomic(&a.out, &csv)?;
    println!(
        "{}: {} rows, {} dims, {} blobs, seed {}",
        a.out.display(),
        a.n,
        a.dims,
        a.k,
        a.seed
    );
    Ok(())
}
