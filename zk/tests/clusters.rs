//! The behaviour-cluster trainer from outside: k-means recovers well
//! separated synthetic blobs (as the circuit assigns users), training and the
//! data set are deterministic for a seed, the centroids file reads back and
//! rejects tampering, CSV input is hostile, and quantisation is monotone and
//! in range.

use std::io::Read;

use int_zk::ZkError;
use int_zk::circuit::{centroid_commitment, nearest_centroid};
use int_zk::clusters::{
    self, Clusters, MAX_ROWS, Quantiser, parse_csv, read_csv, synthetic, synthetic_blobs, train,
    write_csv,
};
use proptest::prelude::*;

fn csv_bytes(rows: &[Vec<f64>]) -> Vec<u8> {
    let mut out = Vec::new();
    write_csv(&mut out, rows).unwrap();
    out
}

/// Trains on blobs and checks that the circuit's assignment (nearest
/// quantised centroid of the quantised point) matches the blobs, up to a
/// renaming of the clusters, for at least 99% of the points.
fn recovers(n: usize, dims: usize, k: usize, seed: u64) {
    let blobs = synthetic_blobs(n, dims, k, seed).unwrap();
    let c = train(&blobs.rows, k, seed, clusters::DEFAULT_MAX_ITER).unwrap();
    assert_eq!((c.dims(), c.k()), (dims, k));
    assert!(
        c.coinciding().is_empty(),
        "D={dims} K={k}: {:?}",
        c.centroids()
    );
    assert_eq!(c.sizes().iter().sum::<u64>(), n as u64);

    // votes[blob][cluster]
    let mut votes = vec![vec![0usize; k]; k];
    for (row, &blob) in blobs.rows.iter().zip(&blobs.labels) {
        let b = c.quantiser().quantise(row).unwrap();
        let cluster = nearest_centroid(&b, c.centroids()).unwrap() as usize;
        assert_eq!(c.assign(row).unwrap() as usize, cluster);
        votes[blob][cluster] += 1;
    }
    // Each blob's majority cluster, all different: a renaming.
    let map: Vec<usize> = votes
        .iter()
        .map(|v| (0..k).max_by_key(|&j| v[j]).unwrap())
        .collect();
    let mut seen = map.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), k, "D={dims} K={k}: two blobs share a cluster");
    let agree: usize = (0..k).map(|b| votes[b][map[b]]).sum();
    assert!(
        agree * 100 >= n * 99,
        "D={dims} K={k}: only {agree} of {n} points in their blob's cluster"
    );
    // The sizes are the circuit's counts.
    let mut sizes = vec![0u64; k];
    for v in &votes {
        for (j, x) in v.iter().enumerate() {
            sizes[j] += *x as u64;
        }
    }
    assert_eq!(c.sizes(), sizes);
}

#[test]
fn kmeans_recovers_well_separated_blobs() {
    recovers(2_000, 2, 3, 1);
    recovers(4_000, 8, 8, 2);
    recovers(6_000, 12, 12, 3);
    recovers(2_000, 1, 4, 4);
    recovers(500, 3, 1, 5);
}

#[test]
fn same_seed_same_bytes() {
    let a = synthetic(3_000, 4, 5, 9).unwrap();
    let b = synthetic(3_000, 4, 5, 9).unwrap();
    assert_eq!(csv_bytes(&a), csv_bytes(&b));
    assert_ne!(a, synthetic(3_000, 4, 5, 10).unwrap());

    let ca = train(&a, 5, 11, 300).unwrap();
    let cb = train(&b, 5, 11, 300).unwrap();
    assert_eq!(ca.to_json(), cb.to_json());
    assert_eq!(ca.seed(), 11);

    // Another seed may start k-means elsewhere, but the quantiser is the
    // data's alone.
    let cc = train(&a, 5, 12, 300).unwrap();
    assert_eq!(cc.quantiser(), ca.quantiser());
    assert_eq!(cc.seed(), 12);
}

#[test]
fn centroids_file_reads_back_and_rejects_tampering() {
    let data = synthetic(1_000, 3, 4, 21).unwrap();
    let c = train(&data, 4, 0, 300).unwrap();
    let json = c.to_json();
    let back = Clusters::from_json(&json).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.to_json(), json);
    assert_eq!(
        back.commitment(),
        centroid_commitment(back.centroids()).unwrap()
    );
    // The quantiser's f64 ranges read back bit for bit.
    for (a, b) in back.quantiser().min().iter().zip(c.quantiser().min()) {
        assert_eq!(a.to_bits(), b.to_bits());
    }

    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert!(value["commitment"].as_str().unwrap().starts_with("0x"));
    let load = |v: &serde_json::Value| Clusters::from_json(v.to_string().as_bytes());

    // A decimal commitment is read too.
    let mut v = value.clone();
    v["commitment"] = c.commitment().to_string().into();
    assert_eq!(load(&v).unwrap(), c);

    // A moved centroid no longer matches the commitment.
    let mut v = value.clone();
    let x = v["centroids"][0][0].as_u64().unwrap();
    v["centroids"][0][0] = (x ^ 1).into();
    let e = load(&v).unwrap_err();
    assert!(matches!(e, ZkError::CommitmentMismatch { .. }), "{e}");
    assert!(e.to_string().contains("does not match"), "{e}");

    // Another commitment.
    let mut v = value.clone();
    v["commitment"] = "0x05".into();
    assert!(matches!(
        load(&v).unwrap_err(),
        ZkError::CommitmentMismatch { .. }
    ));

    let bad = |edit: &dyn Fn(&mut serde_json::Value), needle: &str| {
        let mut v = value.clone();
        edit(&mut v);
        let e = load(&v).unwrap_err().to_string();
        assert!(e.contains(needle), "expected {needle:?} in {e:?}");
    };
    bad(
        &|v| v["clusters"] = 5.into(),
        "4 centroids, but clusters is 5",
    );
    bad(&|v| v["clusters"] = 13.into(), "K = 13");
    bad(&|v| v["dims"] = 2.into(), "dims is 2");
    bad(
        &|v| v["centroids"][1] = serde_json::json!([1, 2]),
        "centroid 1 has 2 coordinates",
    );
    bad(&|v| v["centroids"][1][0] = 65536.into(), "centroids file");
    bad(&|v| v["sizes"] = serde_json::json!([1]), "1 sizes");
    bad(
        &|v| v["quantiser"]["min"] = serde_json::json!([0.0, 0.0]),
        "minima",
    );
    bad(
        &|v| v["quantiser"]["min"][0] = 1e300.into(),
        "min 1e300 > max",
    );
    bad(&|v| v["inertia"] = (-1.0).into(), "inertia");
    bad(&|v| v["extra"] = 1.into(), "unknown field");
    bad(
        &|v| v["commitment"] = "zz".into(),
        "not a decimal or 0x-hex",
    );
    assert!(Clusters::from_json(b"").is_err());
    assert!(Clusters::from_json(b"[1, 2]").is_err());
}

#[test]
fn train_checks_its_inputs() {
    let ok = vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]];
    assert_eq!(
        train(&ok, 0, 0, 10).unwrap_err(),
        ZkError::InvalidParams {
            dim: 2,
            clusters: 0
        }
    );
    assert!(matches!(
        train(&ok, 13, 0, 10).unwrap_err(),
        ZkError::InvalidParams { clusters: 13, .. }
    ));
    let e = train(&ok, 4, 0, 10).unwrap_err().to_string();
    assert!(e.contains("3 rows, fewer than K = 4"), "{e}");
    let e = train(&ok, 2, 0, 0).unwrap_err().to_string();
    assert!(e.contains("max_iter"), "{e}");
    let e = train(&[], 1, 0, 10).unwrap_err().to_string();
    assert!(e.contains("no rows"), "{e}");
    let e = train(&[vec![1.0, 2.0], vec![1.0]], 1, 0, 10)
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 1 has 1 values, row 0 has 2"), "{e}");
    let e = train(&[vec![1.0, f64::NAN]], 1, 0, 10)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("row 0, column 1 (NaN) is not a finite number"),
        "{e}"
    );
    let e = train(&[vec![0.0; 13]], 1, 0, 10).unwrap_err().to_string();
    assert!(e.contains("13 values"), "{e}");
    let e = train(&[vec![]], 1, 0, 10).unwrap_err().to_string();
    assert!(e.contains("0 values"), "{e}");
}

#[test]
fn synthetic_checks_its_inputs() {
    assert!(synthetic(0, 2, 2, 0).is_err());
    assert!(synthetic(MAX_ROWS + 1, 2, 2, 0).is_err());
    assert!(synthetic(10, 0, 2, 0).is_err());
    assert!(synthetic(10, 13, 2, 0).is_err());
    assert!(synthetic(10, 2, 0, 0).is_err());
    assert!(synthetic(10, 2, 13, 0).is_err());
    let s = synthetic_blobs(10, 12, 12, 0).unwrap();
    assert_eq!(
        (s.rows.len(), s.labels.len(), s.centres.len()),
        (10, 10, 12)
    );
    assert!(s.rows.iter().all(|r| r.len() == 12));
}

#[test]
fn csv_round_trips_exactly() {
    let rows = synthetic(500, 5, 3, 4).unwrap();
    let bytes = csv_bytes(&rows);
    assert!(bytes.starts_with(b"x0,x1,x2,x3,x4\n"));
    assert_eq!(parse_csv(&bytes).unwrap(), rows);
    assert_eq!(read_csv(&bytes[..]).unwrap(), rows);
    let odd = vec![vec![
        -0.0,
        1e-300,
        123456789.125,
        f64::MAX,
        f64::MIN_POSITIVE,
    ]];
    let back = parse_csv(&csv_bytes(&odd)).unwrap();
    for (a, b) in back[0].iter().zip(&odd[0]) {
        assert_eq!(a.to_bits(), b.to_bits());
    }
}

#[test]
fn csv_accepts_common_forms() {
    let want = vec![vec![1.0, 2.5], vec![-3.0, 4e2]];
    for text in [
        "1,2.5\n-3,4e2\n",
        "1,2.5\n-3,4e2",
        "a,b\n1,2.5\n-3,4e2\n",
        "\"a\", \"b\"\r\n1, 2.5\r\n\r\n-3 ,\t4e2\r\n\n",
        "\u{feff}x,y\n\"1\",\"2.5\"\n-3,4e2\n",
        "\n\n1,2.5\n   \n-3,400.0\n",
    ] {
        assert_eq!(parse_csv(text.as_bytes()).unwrap(), want, "{text:?}");
    }
}

#[test]
fn malformed_csv_is_a_clear_error() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "no data rows (empty file)"),
        (b"\n  \n", "no data rows (empty file)"),
        (b"a,b\n", "no data rows (only a header)"),
        (b"1,2\n3\n", "CSV line 2: 1 columns, but line 1 has 2"),
        (
            b"a,b\n1,2\n3,4,5\n",
            "CSV line 3: 3 columns, but line 1 has 2",
        ),
        (b"1,2\n3,x\n", "CSV line 2: column 2: \"x\" is not a number"),
        (b"1,2\n3,\n", "CSV line 2: column 2 is empty"),
        (
            b"1,2\nNaN,1\n",
            "CSV line 2: column 1: \"NaN\" is not a finite number",
        ),
        (
            b"inf,2\n",
            "CSV line 1: column 1: \"inf\" is not a finite number",
        ),
        (b"1,2\n1e999,2\n", "not a finite number"),
        (b"1,2\n\xff\xfe,2\n", "CSV line 2: not UTF-8 text"),
        (
            b"1,2,3,4,5,6,7,8,9,10,11,12,13\n",
            "CSV line 1: more than 12 columns",
        ),
    ];
    for (bytes, needle) in cases {
        let e = parse_csv(bytes).unwrap_err().to_string();
        assert!(
            e.contains(needle),
            "{:?}: expected {needle:?} in {e:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // "a,1" is not a header (a field is a number) but "a" is not a number.
    let e = parse_csv(b"a,1\n2,3\n").unwrap_err().to_string();
    assert!(
        e.contains("CSV line 1: column 1: \"a\" is not a number"),
        "{e}"
    );
    // A long field is cut short in the message.
    let long = format!("1,{}\n", "y".repeat(10_000));
    let e = parse_csv(format!("1,2\n{long}").as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.len() < 200 && e.contains('…'), "{e}");
    // Too many bytes.
    let big = std::io::repeat(b'\n').take(clusters::MAX_CSV_BYTES as u64 + 1);
    let e = read_csv(big).unwrap_err().to_string();
    assert!(e.contains("more than"), "{e}");
}

proptest! {
    #[test]
    fn quantise_is_monotone_and_in_range(
        bounds in prop::collection::vec((-1e12f64..1e12, 0f64..1e12), 1..=12),
        pairs in prop::collection::vec((any::<f64>(), any::<f64>()), 12),
    ) {
        let min: Vec<f64> = bounds.iter().map(|b| b.0).collect();
        let max: Vec<f64> = bounds.iter().map(|b| b.0 + b.1).collect();
        let q = Quantiser::new(min.clone(), max.clone()).unwrap();
        let d = bounds.len();
        // Finite pairs only (NaN and inf are errors, tested elsewhere),
        // ordered x <= y.
        let (x, y): (Vec<f64>, Vec<f64>) = pairs[..d]
            .iter()
            .map(|&(a, b)| {
                let a = if a.is_finite() { a } else { 0.0 };
                let b = if b.is_finite() { b } else { 0.0 };
                (a.min(b), a.max(b))
            })
            .unzip();
        let qx = q.quantise(&x).unwrap();
        let qy = q.quantise(&y).unwrap();
        for i in 0..d {
            prop_assert!(qx[i] <= qy[i], "dim {i}: {} -> {}, {} -> {}", x[i], qx[i], y[i], qy[i]);
            if max[i] > min[i] {
                if x[i] <= min[i] { prop_assert_eq!(qx[i], 0); }
                if y[i] >= max[i] { prop_assert_eq!(qy[i], 65535); }
            } else {
                prop_assert_eq!(qx[i], 0);
                prop_assert_eq!(qy[i], 0);
            }
        }
    }

    #[test]
    fn quantise_is_monotone_near_the_range(
        lo in -1e6f64..1e6,
        width in 0f64..1e3,
        a in -0.5f64..1.5,
        b in -0.5f64..1.5,
    ) {
        let q = Quantiser::new(vec![lo], vec![lo + width]).unwrap();
        let (a, b) = (a.min(b), a.max(b));
        let (x, y) = (lo + a * width, lo + b * width);
        let (qx, qy) = (q.quantise(&[x]).unwrap()[0], q.quantise(&[y]).unwrap()[0]);
        prop_assert!(qx <= qy, "{x} -> {qx}, {y} -> {qy}");
        let t = q.normalise(&[x]).unwrap()[0];
        prop_assert!((0.0..=1.0).contains(&t));
    }
}
