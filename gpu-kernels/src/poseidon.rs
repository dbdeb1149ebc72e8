//! Batched Poseidon over the BN254 scalar field, circomlib's parameters: the
//! identity tree's node hash (2 inputs, width 3) and every other arity the
//! node uses (1..=12 inputs, widths 2..=13), one hash per GPU thread.
//!
//! The hash is exactly `int_zk::poseidon::hash` and `light-poseidon`'s
//! `Poseidon::<Fr>::new_circom(n)`: state `[0, in_1, …, in_n]`, 8 full
//! rounds (4 before and 4 after the partial ones), circomlib's partial-round
//! count per width, S-box `x^5`, then the MDS mix, each round; the output is
//! `state[0]`. The round constants and MDS matrix are `light-poseidon`'s
//! (never typed here); they travel to the kernel as one read-only buffer per
//! launch (`(8 + P)·t + t²` elements, at most 30 KiB), with the width and
//! round counts as parameters, so one WGSL module serves every width.
//!
//! Kernel layout: thread `i` loads its `n` inputs (Montgomery words, the
//! same as arkworks' own), keeps the `t` lanes in a private array, and runs
//! `8 + P` rounds: add the round constants, S-box on every lane (full
//! round) or lane 0 (partial), then the MDS mix, a `t × t` loop of
//! Montgomery multiply-adds. Per hash that is `(8t + P)` S-boxes of
//! 3 multiplications and `(8 + P)·t²` MDS multiplications: 600 field
//! multiplications for width 3 (P = 57).
//!
//! [`poseidon_cpu`] is the reference (light-poseidon on all cores); the
//! tests check the GPU against it on random and edge-case inputs.

use std::sync::OnceLock;

use ark_bn254::Fr;
use light_poseidon::parameters::bn254_x5::get_poseidon_parameters;
use light_poseidon::{Poseidon, PoseidonHasher, PoseidonParameters};
use rayon::prelude::*;

use crate::field::{self, GpuField, MulPath};
use crate::{Arg, GpuContext, GpuError};

/// Fewest inputs one hash takes (width 2).
pub const POSEIDON_MIN_ARITY: usize = 1;
/// Most inputs one hash takes (width 13, circomlib's largest table).
pub const POSEIDON_MAX_ARITY: usize = 12;

/// Most hashes in one launch: bounds one dispatch's run time (and the `u32`
/// thread count) whatever the adapter's binding limit.
const MAX_HASHES_PER_LAUNCH: usize = 1 << 20;

/// Words of one `Fr` element.
const FR_WORDS: usize = <Fr as GpuField>::LIMBS;

/// Parameters per arity, built once (building them converts hundreds of
/// constants into Montgomery form).
static PARAMS: [OnceLock<PoseidonParameters<Fr>>; POSEIDON_MAX_ARITY] =
    [const { OnceLock::new() }; POSEIDON_MAX_ARITY];

/// Constant buffers per arity: round constants then the MDS matrix, as
/// kernel words.
static CONSTS: [OnceLock<Vec<u32>>; POSEIDON_MAX_ARITY] =
    [const { OnceLock::new() }; POSEIDON_MAX_ARITY];

fn check_arity(arity: usize) -> Result<(), GpuError> {
    if (POSEIDON_MIN_ARITY..=POSEIDON_MAX_ARITY).contains(&arity) {
        Ok(())
    } else {
        Err(GpuError::BadInput(format!(
            "Poseidon takes {POSEIDON_MIN_ARITY}..={POSEIDON_MAX_ARITY} inputs, not {arity}"
        )))
    }
}

/// circomlib's Poseidon parameters for `arity` inputs (width `arity + 1`),
/// from `light-poseidon`; an error outside 1..=12.
pub fn poseidon_params(arity: usize) -> Result<&'static PoseidonParameters<Fr>, GpuError> {
    check_arity(arity)?;
    if let Some(p) = PARAMS[arity - 1].get() {
        return Ok(p);
    }
    // Width 2..=13: light-poseidon has a table for each.
    let width = u8::try_from(arity + 1).map_err(|e| GpuError::BadInput(e.to_string()))?;
    let p = get_poseidon_parameters::<Fr>(width).map_err(|e| GpuError::BadInput(e.to_string()))?;
    Ok(PARAMS[arity - 1].get_or_init(|| p))
}

/// The kernel's constant buffer for `arity`: `ark` (rounds × width) then
/// the MDS rows, each element as its Montgomery words.
fn constant_words(arity: usize) -> Result<&'static [u32], GpuError> {
    let p = poseidon_params(arity)?;
    Ok(CONSTS[arity - 1].get_or_init(|| {
        let mut w = Vec::with_capacity((p.ark.len() + p.width * p.width) * FR_WORDS);
        p.ark.iter().for_each(|c| c.push_words(&mut w));
        p.mds.iter().flatten().for_each(|c| c.push_words(&mut w));
        w
    }))
}

/// Widest state the kernel holds (`POSEIDON_MAX_ARITY + 1`).
const MAX_WIDTH: usize = POSEIDON_MAX_ARITY + 1;

/// WGSL of the Poseidon kernel, one module for every width. Bindings:
/// `inputs` (`n·(t−1)` elements), `consts` (round constants, then MDS rows),
/// `params = [n, t, full/2, partial]`, output (`n` elements).
///
/// The width and round counts are run-time values on purpose: with
/// constant bounds, GL drivers unroll the `t × t` mix into hundreds of
/// inlined multiplications, and Mesa's GLSL compiler crashes from width 10
/// on (lavapipe Vulkan survives but compiles per width). Uniform loop
/// bounds cost a real GPU nothing in divergence: every thread of a launch
/// has the same width.
pub fn poseidon_kernel(path: MulPath) -> String {
    let spec = <Fr as GpuField>::spec();
    let p = spec.prefix;
    let w = FR_WORDS;
    format!(
        "{mac}
{field}
{index}
alias state = array<{p}_el, {MAX_WIDTH}>;

@group(0) @binding(0) var<storage, read> inputs: array<u32>;
@group(0) @binding(1) var<storage, read> consts: array<u32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

fn cst(k: u32) -> {p}_el {{
    var r: {p}_el;
    for (var l = 0u; l < {w}u; l = l + 1u) {{ r[l] = consts[k * {w}u + l]; }}
    return r;
}}

fn sbox(x: {p}_el) -> {p}_el {{
    let x2 = {p}_sqr(x);
    let x4 = {p}_sqr(x2);
    return {p}_mul(x4, x);
}}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let i = thread_index(gid, nwg);
    if (i >= params[0]) {{ return; }}
    let t = params[1];
    let half_full = params[2];
    let rounds = 2u * half_full + params[3];
    // The MDS rows follow the rounds·t round constants.
    let mds_at = rounds * t;
    var s: state;
    var r: state;
    s[0] = {p}_zero();
    let base = i * (t - 1u) * {w}u;
    for (var k = 1u; k < t; k = k + 1u) {{
        for (var l = 0u; l < {w}u; l = l + 1u) {{ s[k][l] = inputs[base + (k - 1u) * {w}u + l]; }}
    }}
    for (var round = 0u; round < rounds; round = round + 1u) {{
        for (var k = 0u; k < t; k = k + 1u) {{ s[k] = {p}_add(s[k], cst(round * t + k)); }}
        if (round < half_full || round >= rounds - half_full) {{
            for (var k = 0u; k < t; k = k + 1u) {{ s[k] = sbox(s[k]); }}
        }} else {{
            s[0] = sbox(s[0]);
        }}
        for (var k = 0u; k < t; k = k + 1u) {{
            var acc = {p}_zero();
            for (var j = 0u; j < t; j = j + 1u) {{
                acc = {p}_add(acc, {p}_mul(s[j], cst(mds_at + k * t + j)));
            }}
            r[k] = acc;
        }}
        for (var k = 0u; k < t; k = k + 1u) {{ s[k] = r[k]; }}
    }}
    for (var l = 0u; l < {w}u; l = l + 1u) {{ out[i * {w}u + l] = s[0][l]; }}
}}
",
        mac = field::mac_wgsl(path),
        field = field::field_wgsl(&spec),
        index = field::index_wgsl(),
    )
}

/// Splits `inputs` into hashes of `arity` elements; an error when the
/// length is not a multiple of it.
fn hash_count(arity: usize, inputs: &[Fr]) -> Result<usize, GpuError> {
    check_arity(arity)?;
    if !inputs.len().is_multiple_of(arity) {
        return Err(GpuError::BadInput(format!(
            "{} Poseidon inputs are not a whole number of {arity}-input hashes",
            inputs.len()
        )));
    }
    Ok(inputs.len() / arity)
}

/// CPU reference: `light-poseidon`'s circom Poseidon of each `arity`-sized
/// chunk of `inputs`, on all cores.
pub fn poseidon_cpu(arity: usize, inputs: &[Fr]) -> Result<Vec<Fr>, GpuError> {
    hash_count(arity, inputs)?;
    let p = poseidon_params(arity)?;
    let hasher = || {
        Poseidon::new(PoseidonParameters::new(
            p.ark.clone(),
            p.mds.clone(),
            p.full_rounds,
            p.partial_rounds,
            p.width,
            p.alpha,
        ))
    };
    inputs
        .par_chunks(arity)
        .map_init(hasher, |h, c| {
            h.hash(c).map_err(|e| GpuError::BadInput(e.to_string()))
        })
        .collect()
}

impl GpuContext {
    /// Circom Poseidon of each `arity`-sized chunk of `inputs` (`inputs` is
    /// flat: hash `j` takes `inputs[j·arity .. (j+1)·arity]`), one GPU
    /// thread per hash, chunked under the adapter's binding limit. An error
    /// for an arity outside 1..=12 or a length that is not a multiple of it.
    pub fn poseidon_batch(&self, arity: usize, inputs: &[Fr]) -> Result<Vec<Fr>, GpuError> {
        let n = hash_count(arity, inputs)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let params = poseidon_params(arity)?;
        let consts = constant_words(arity)?;
        let path = self.mul_path();
        let key = format!("poseidon/{}", path.tag());
        let pipeline = self.pipeline(&key, || poseidon_kernel(path))?;
        // Width ≤ 13 and round counts below 100: they fit in u32.
        let shape = [
            params.width as u32,
            (params.full_rounds / 2) as u32,
            params.partial_rounds as u32,
        ];
        let per_hash = arity * FR_WORDS;
        // Uploaded once for all the launches (refused if over one binding).
        let consts = self.upload(consts)?;
        let chunk = self.items_per_launch(per_hash, MAX_HASHES_PER_LAUNCH);
        let mut out = Vec::with_capacity(n);
        self.pipelined(
            inputs.chunks(chunk * arity),
            |c| {
                let mut words = Vec::with_capacity(c.len() * FR_WORDS);
                c.iter().for_each(|x| x.push_words(&mut words));
                let m = c.len() / arity;
                let count = u32::try_from(m).map_err(|e| GpuError::BadInput(e.to_string()))?;
                let params = [count, shape[0], shape[1], shape[2]];
                let args = [Arg::Host(&words), Arg::Device(&consts), Arg::Host(&params)];
                self.submit(&pipeline, &args, m * FR_WORDS, count)
            },
            |got| {
                for w in got.chunks_exact(FR_WORDS) {
                    out.push(Fr::from_words(w).ok_or(GpuError::BadOutput("poseidon"))?);
                }
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// One level of a binary Poseidon tree: `level[2k], level[2k+1]` hash
    /// into parent `k` (width 3, the identity tree's node hash). An error
    /// for an odd length.
    pub fn poseidon_pairs(&self, level: &[Fr]) -> Result<Vec<Fr>, GpuError> {
        self.poseidon_batch(2, level)
    }
}
