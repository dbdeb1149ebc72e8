//! Hash to G1 (RFC 9380, BLS12381G1_XMD:SHA-256_SSWU_RO_) on the GPU
//! against RFC 9380's test vectors, blst and arkworks, on every adapter the
//! machine has.

mod common;

use ark_bls12_381::{Fq, G1Affine, g1};
use ark_ec::CurveGroup;
use ark_ec::hashing::curve_maps::wb::WBMap;
use ark_ec::hashing::map_to_curve_hasher::MapToCurve;
use ark_ff::{Field, One, UniformRand, Zero};
use int_gpu::GpuContext;
use int_gpu::hash_to_g1::{expand_message_xmd, hash_to_field, hash_to_g1_cpu};

/// The node's signature tag (`int_engine::crypto::bls::DST_SIG`).
const DST_SIG: &[u8] = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";
/// The tag of RFC 9380's test vectors.
const DST_RFC: &[u8] = b"QUUX-V01-CS02-with-BLS12381G1_XMD:SHA-256_SSWU_RO_";

/// One RFC 9380 vector; `msg` is `(prefix, fill, count)`: the prefix and
/// then `count` copies of `fill`.
struct Vector {
    msg: (&'static str, char, usize),
    u: [&'static str; 2],
    q0: [&'static str; 2],
    q1: [&'static str; 2],
    p: [&'static str; 2],
}

/// RFC 9380 Appendix J.9.1 (BLS12381G1_XMD:SHA-256_SSWU_RO_), as in
/// ark-bls12-381's test data: message, u0, u1, Q0 (x, y), Q1 (x, y), P (x, y).
const RFC_VECTORS: [Vector; 5] = [
    Vector {
        msg: ("", ' ', 0),
        u: [
            "0ba14bd907ad64a016293ee7c2d276b8eae71f25a4b941eece7b0d89f17f75cb3ae5438a614fb61d6835ad59f29c564f",
            "019b9bd7979f12657976de2884c7cce192b82c177c80e0ec604436a7f538d231552f0d96d9f7babe5fa3b19b3ff25ac9",
        ],
        q0: [
            "11a3cce7e1d90975990066b2f2643b9540fa40d6137780df4e753a8054d07580db3b7f1f03396333d4a359d1fe3766fe",
            "0eeaf6d794e479e270da10fdaf768db4c96b650a74518fc67b04b03927754bac66f3ac720404f339ecdcc028afa091b7",
        ],
        q1: [
            "160003aaf1632b13396dbad518effa00fff532f604de1a7fc2082ff4cb0afa2d63b2c32da1bef2bf6c5ca62dc6b72f9c",
            "0d8bb2d14e20cf9f6036152ed386d79189415b6d015a20133acb4e019139b94e9c146aaad5817f866c95d609a361735e",
        ],
        p: [
            "052926add2207b76ca4fa57a8734416c8dc95e24501772c814278700eed6d1e4e8cf62d9c09db0fac349612b759e79a1",
            "08ba738453bfed09cb546dbb0783dbb3a5f1f566ed67bb6be0e8c67e2e81a4cc68ee29813bb7994998f3eae0c9c6a265",
        ],
    },
    Vector {
        msg: ("abc", ' ', 0),
        u: [
            "0d921c33f2bad966478a03ca35d05719bdf92d347557ea166e5bba579eea9b83e9afa5c088573c2281410369fbd32951",
            "003574a00b109ada2f26a37a91f9d1e740dffd8d69ec0c35e1e9f4652c7dba61123e9dd2e76c655d956e2b3462611139",
        ],
        q0: [
            "125435adce8e1cbd1c803e7123f45392dc6e326d292499c2c45c5865985fd74fe8f042ecdeeec5ecac80680d04317d80",
            "0e8828948c989126595ee30e4f7c931cbd6f4570735624fd25aef2fa41d3f79cfb4b4ee7b7e55a8ce013af2a5ba20bf2",
        ],
        q1: [
            "11def93719829ecda3b46aa8c31fc3ac9c34b428982b898369608e4f042babee6c77ab9218aad5c87ba785481eff8ae4",
            "0007c9cef122ccf2efd233d6eb9bfc680aa276652b0661f4f820a653cec1db7ff69899f8e52b8e92b025a12c822a6ce6",
        ],
        p: [
            "03567bc5ef9c690c2ab2ecdf6a96ef1c139cc0b2f284dca0a9a7943388a49a3aee664ba5379a7655d3c68900be2f6903",
            "0b9c15f3fe6e5cf4211f346271d7b01c8f3b28be689c8429c85b67af215533311f0b8dfaaa154fa6b88176c229f2885d",
        ],
    },
    Vector {
        msg: ("abcdef0123456789", ' ', 0),
        u: [
            "062d1865eb80ebfa73dcfc45db1ad4266b9f3a93219976a3790ab8d52d3e5f1e62f3b01795e36834b17b70e7b76246d4",
            "0cdc3e2f271f29c4ff75020857ce6c5d36008c9b48385ea2f2bf6f96f428a3deb798aa033cd482d1cdc8b30178b08e3a",
        ],
        q0: [
            "08834484878c217682f6d09a4b51444802fdba3d7f2df9903a0ddadb92130ebbfa807fffa0eabf257d7b48272410afff",
            "0b318f7ecf77f45a0f038e62d7098221d2dbbca2a394164e2e3fe953dc714ac2cde412d8f2d7f0c03b259e6795a2508e",
        ],
        q1: [
            "158418ed6b27e2549f05531a8281b5822b31c3bf3144277fbb977f8d6e2694fedceb7011b3c2b192f23e2a44b2bd106e",
            "1879074f344471fac5f839e2b4920789643c075792bec5af4282c73f7941cda5aa77b00085eb10e206171b9787c4169f",
        ],
        p: [
            "11e0b079dea29a68f0383ee94fed1b940995272407e3bb916bbf268c263ddd57a6a27200a784cbc248e84f357ce82d98",
            "03a87ae2caf14e8ee52e51fa2ed8eefe80f02457004ba4d486d6aa1f517c0889501dc7413753f9599b099ebcbbd2d709",
        ],
    },
    Vector {
        msg: ("q128_", 'q', 128),
        u: [
            "010476f6a060453c0b1ad0b628f3e57c23039ee16eea5e71bb87c3b5419b1255dc0e5883322e563b84a29543823c0e86",
            "0b1a912064fb0554b180e07af7e787f1f883a0470759c03c1b6509eb8ce980d1670305ae7b928226bb58fdc0a419f46e",
        ],
        q0: [
            "0cbd7f84ad2c99643fea7a7ac8f52d63d66cefa06d9a56148e58b984b3dd25e1f41ff47154543343949c64f88d48a710",
            "052c00e4ed52d000d94881a5638ae9274d3efc8bc77bc0e5c650de04a000b2c334a9e80b85282a00f3148dfdface0865",
        ],
        q1: [
            "06493fb68f0d513af08be0372f849436a787e7b701ae31cb964d968021d6ba6bd7d26a38aaa5a68e8c21a6b17dc8b579",
            "02e98f2ccf5802b05ffaac7c20018bc0c0b2fd580216c4aa2275d2909dc0c92d0d0bdc979226adeb57a29933536b6bb4",
        ],
        p: [
            "15f68eaa693b95ccb85215dc65fa81038d69629f70aeee0d0f677cf22285e7bf58d7cb86eefe8f2e9bc3f8cb84fac488",
            "1807a1d50c29f430b8cafc4f8638dfeeadf51211e1602a5f184443076715f91bb90a48ba1e370edce6ae1062f5e6dd38",
        ],
    },
    Vector {
        msg: ("a512_", 'a', 512),
        u: [
            "0a8ffa7447f6be1c5a2ea4b959c9454b431e29ccc0802bc052413a9c5b4f9aac67a93431bd480d15be1e057c8a08e8c6",
            "05d487032f602c90fa7625dbafe0f4a49ef4a6b0b33d7bb349ff4cf5410d297fd6241876e3e77b651cfc8191e40a68b7",
        ],
        q0: [
            "0cf97e6dbd0947857f3e578231d07b309c622ade08f2c08b32ff372bd90db19467b2563cc997d4407968d4ac80e154f8",
            "127f0cddf2613058101a5701f4cb9d0861fd6c2a1b8e0afe194fccf586a3201a53874a2761a9ab6d7220c68661a35ab3",
        ],
        q1: [
            "092f1acfa62b05f95884c6791fba989bbe58044ee6355d100973bf9553ade52b47929264e6ae770fb264582d8dce512a",
            "028e6d0169a72cfedb737be45db6c401d3adfb12c58c619c82b93a5dfcccef12290de530b0480575ddc8397cda0bbebf",
        ],
        p: [
            "082aabae8b7dedb0e78aeb619ad3bfd9277a2f77ba7fad20ef6aabdc6c31d19ba5a6d12283553294c1825c4b3ca2dcfe",
            "05b84ae5a942248eea39e1d91030458c40153f3b654ab7872d779ad1e942856a20c438e8d99bc8abfbf74729ce1f7ac8",
        ],
    },
];

fn msg_of(v: &Vector) -> Vec<u8> {
    let (prefix, fill, count) = v.msg;
    let mut m = prefix.as_bytes().to_vec();
    m.extend(std::iter::repeat_n(fill as u8, count));
    m
}

fn fq(hex: &str) -> Fq {
    let sixteen = Fq::from(16u64);
    hex.chars().fold(Fq::zero(), |acc, c| {
        let d = match c.to_digit(16) {
            Some(d) => d,
            None => panic!("bad hex digit {c:?}"),
        };
        acc * sixteen + Fq::from(u64::from(d))
    })
}

fn point(xy: &[&str; 2]) -> G1Affine {
    let p = G1Affine::new_unchecked(fq(xy[0]), fq(xy[1]));
    assert!(p.is_on_curve());
    p
}

/// Runs `f` on every context (GL work is serialised by `GpuContext`).
fn on_all(f: impl Fn(&str, &GpuContext)) {
    for (label, ctx) in common::all() {
        f(label, ctx);
    }
}

fn random_msgs(n: usize, seed: u64) -> Vec<Vec<u8>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let len = if i == 0 { 0 } else { rng.gen_range(1..200) };
            (0..len).map(|_| rng.r#gen::<u8>()).collect()
        })
        .collect()
}

#[test]
fn cpu_side_matches_rfc_vectors() {
    for v in &RFC_VECTORS {
        let m = msg_of(v);
        let u = hash_to_field(&m, DST_RFC).unwrap_or_default();
        assert_eq!(u, [fq(v.u[0]), fq(v.u[1])], "u of {:?}", v.msg);
        // The CPU reference (blst) gives P.
        let p = hash_to_g1_cpu(&[&m], DST_RFC).unwrap_or_default();
        assert_eq!(p, vec![point(&v.p)], "blst P of {:?}", v.msg);
    }
}

#[test]
fn expand_message_matches_rfc_k1() {
    // RFC 9380 Appendix K.1 (expand_message_xmd, SHA-256), msg "" and
    // "abc", len_in_bytes 0x20.
    let dst = b"QUUX-V01-CS02-with-expander-SHA256-128";
    let want = [
        (
            &b""[..],
            "68a985b87eb6b46952128911f2a4412bbc302a9d759667f87f7a21d803f07235",
        ),
        (
            &b"abc"[..],
            "d8ccab23b5985ccea865c6c97b6e5b8350e794e603b4b97902f53a8a0d605615",
        ),
    ];
    for (msg, hex) in want {
        let got = expand_message_xmd(msg, dst, 32).unwrap_or_default();
        let got: String = got.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, hex);
    }
}

#[test]
fn gpu_matches_rfc_vectors() {
    let msgs: Vec<Vec<u8>> = RFC_VECTORS.iter().map(msg_of).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    let u: Vec<Fq> = RFC_VECTORS
        .iter()
        .flat_map(|v| [fq(v.u[0]), fq(v.u[1])])
        .collect();
    let q_want: Vec<G1Affine> = RFC_VECTORS
        .iter()
        .flat_map(|v| [point(&v.q0), point(&v.q1)])
        .collect();
    let p_want: Vec<G1Affine> = RFC_VECTORS.iter().map(|v| point(&v.p)).collect();
    on_all(|label, ctx| {
        // map_to_curve alone: Q0 and Q1.
        let q = match ctx.map_to_g1(&u) {
            Ok(q) => g1::G1Projective::normalize_batch(&q),
            Err(e) => panic!("{label} map_to_g1: {e}"),
        };
        assert_eq!(q, q_want, "{label}: Q0, Q1");
        // The whole hash: P.
        match ctx.hash_to_g1(&refs, DST_RFC) {
            Ok(p) => assert_eq!(p, p_want, "{label}: P"),
            Err(e) => panic!("{label} hash_to_g1: {e}"),
        }
    });
}

#[test]
fn gpu_matches_blst_and_arkworks() {
    let msgs = random_msgs(6, 9);
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    let want = hash_to_g1_cpu(&refs, DST_SIG).unwrap_or_default();
    assert_eq!(want.len(), msgs.len());
    // A tag over 255 bytes is hashed first (RFC 9380 §5.3.3), as blst does.
    let long_dst = vec![b'D'; 300];
    let want_long = hash_to_g1_cpu(&refs[..2], &long_dst).unwrap_or_default();
    // map_to_curve on random and edge-case elements against arkworks.
    let mut rng = ark_std::test_rng();
    let mut u = vec![Fq::zero(), Fq::one(), -Fq::one()];
    u.extend((0..3).map(|_| Fq::rand(&mut rng)));
    let u_want: Vec<G1Affine> = u
        .iter()
        .map(|x| WBMap::<g1::Config>::map_to_curve(*x).unwrap_or_default())
        .collect();
    on_all(|label, ctx| {
        match ctx.hash_to_g1(&refs, DST_SIG) {
            Ok(got) => assert_eq!(got, want, "{label}: DST_SIG"),
            Err(e) => panic!("{label} hash_to_g1: {e}"),
        }
        match ctx.hash_to_g1(&refs[..2], &long_dst) {
            Ok(got) => assert_eq!(got, want_long, "{label}: long DST"),
            Err(e) => panic!("{label} hash_to_g1 long DST: {e}"),
        }
        match ctx.map_to_g1(&u) {
            Ok(q) => assert_eq!(
                g1::G1Projective::normalize_batch(&q),
                u_want,
                "{label}: map_to_curve"
            ),
            Err(e) => panic!("{label} map_to_g1: {e}"),
        }
    });
    // Every output is in G1 (cofactor cleared).
    for p in &want {
        assert!(p.is_in_correct_subgroup_assuming_on_curve());
    }
    let _ = Fq::one().square();
}

#[test]
fn empty_batch_and_bad_tags() {
    assert_eq!(hash_to_g1_cpu(&[], DST_SIG).map(|v| v.len()).ok(), Some(0));
    assert!(hash_to_g1_cpu(&[b"m"], b"").is_err());
    assert!(hash_to_field(b"m", b"").is_err());
    let Some(ctx) = common::native() else { return };
    match ctx.hash_to_g1(&[], DST_SIG) {
        Ok(v) => assert!(v.is_empty()),
        Err(e) => panic!("empty batch: {e}"),
    }
    match ctx.map_to_g1(&[]) {
        Ok(v) => assert!(v.is_empty()),
        Err(e) => panic!("empty map batch: {e}"),
    }
    assert!(ctx.hash_to_g1(&[b"m"], b"").is_err());
}
