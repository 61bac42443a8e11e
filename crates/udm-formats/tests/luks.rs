//! LUKS header parsing never panics: random bytes behind a LUKS magic, and random byte flips
//! in valid LUKS1/LUKS2 headers, give a header or a clear error.

use proptest::prelude::*;
use serde_json::json;
use udm_formats::luks::{luks1, luks2};

fn valid_luks2() -> Vec<u8> {
    let json = json!({
        "keyslots": {"0": {"type": "luks2", "key_size": 64,
            "af": {"type": "luks1", "stripes": 4000, "hash": "sha256"},
            "area": {"type": "raw", "offset": "32768", "size": "258048",
                     "encryption": "aes-xts-plain64", "key_size": 64},
            "kdf": {"type": "pbkdf2", "hash": "sha256", "iterations": 1000, "salt": "AAAA"}}},
        "tokens": {},
        "segments": {"0": {"type": "crypt", "offset": "16777216", "size": "dynamic",
            "iv_tweak": "0", "encryption": "aes-xts-plain64", "sector_size": 512}},
        "digests": {"0": {"type": "pbkdf2", "keyslots": ["0"], "segments": ["0"],
            "hash": "sha256", "iterations": 1000, "salt": "AAAA", "digest": "AAAA"}},
        "config": {"json_size": "12288", "keyslots_size": "16744448"}
    });
    let bin = luks2::BinHeader {
        hdr_size: 16384,
        seqid: 0,
        label: String::new(),
        checksum_alg: "sha256".into(),
        salt: [3; 64],
        uuid: "12345678-9abc-4def-8123-456789abcdef".into(),
        subsystem: String::new(),
        hdr_offset: 0,
    };
    let mut m = luks2::Metadata::from_json(bin, json).unwrap();
    m.to_bytes().unwrap()
}

fn valid_luks1() -> Vec<u8> {
    let mut h = luks1::Header::new_layout("aes", "xts-plain64", "sha256", 64, "u", None).unwrap();
    h.set_digest(&[1; 64], 10).unwrap();
    h.slots[0].active = true;
    h.slots[0].iterations = 10;
    let mut b = h.to_bytes().unwrap();
    b.resize(4096, 0);
    b
}

#[test]
fn valid_headers_parse_and_secondary_takes_over() {
    let b = valid_luks2();
    let (m, bad) = luks2::Metadata::read(&b).unwrap();
    assert_eq!((m.bin.seqid, bad), (1, [false, false]));
    let mut c = b.clone();
    c[4096 + 3] ^= 0x40;
    let (_, bad) = luks2::Metadata::read(&c).unwrap();
    assert_eq!(bad, [true, false]);
    c[16384 + 4096 + 3] ^= 0x40;
    assert!(luks2::Metadata::read(&c).is_err());
    assert!(luks1::Header::parse(&valid_luks1(), Some(100_000)).is_ok());
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(300))]
    #[test]
    fn random_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..5000), v in 0u8..4) {
        let mut b = b"LUKS\xba\xbe\x00".to_vec();
        b.push(v);
        b.extend(tail);
        let _ = luks1::Header::parse(&b, Some(64));
        let _ = luks2::Metadata::read(&b);
    }

    #[test]
    fn flipped_headers_never_panic(flips in prop::collection::vec((0usize..32768, any::<u8>()), 1..8)) {
        let mut b = valid_luks2();
        let mut l1 = valid_luks1();
        for (at, x) in &flips {
            let m = b.len();
            b[*at % m] ^= x | 1;
            let n = l1.len();
            l1[*at % n] ^= x | 1;
        }
        let _ = luks2::Metadata::read(&b);
        let _ = luks1::Header::parse(&l1, Some(10_000));
        // JSON-level damage behind a valid checksum.
        let (h, mut js) = luks2::parse_copy(&valid_luks2(), false).unwrap();
        let (at, x) = flips[0];
        js["keyslots"]["0"]["af"]["stripes"] = json!(x as u64 * (at as u64));
        js["segments"]["0"]["sector_size"] = json!(at);
        if let Ok(c) = luks2::write_copy(&h, &js, false) {
            let _ = luks2::Metadata::read(&c);
        }
    }
}
