//! Fuzzing the control protocol's frame reader: valid request frames (length prefix and
//! JSON body, as `write_frame` makes them) mutated as bytes — bit flips, overwritten bytes
//! and length fields, truncation — and frames of random bytes. `read_frame` must return a
//! request, an error, or a clean end of stream: never panic, never take a length past
//! `MAX_FRAME`. Seeded and printed by `udm_testkit::prop`.

use proptest::prelude::*;
use udm_proto::{read_frame, write_frame, DevSel, Request, RequestFrame, MAX_FRAME, PROTO_VERSION};
use udm_testkit::mutate::{field_value, mutated, mutations};

fn frames() -> Vec<Vec<u8>> {
    [
        Request::Version,
        Request::List,
        Request::Create {
            name: "fuzz".into(),
            uuid: "UDM-1".into(),
        },
        Request::Remove {
            dev: DevSel::Name("fuzz".into()),
            deferred: true,
        },
        Request::Info {
            dev: DevSel::Name("a".into()),
            inactive: true,
        },
    ]
    .into_iter()
    .map(|req| {
        let mut v = Vec::new();
        write_frame(
            &mut v,
            &RequestFrame {
                v: PROTO_VERSION,
                req,
            },
        )
        .unwrap();
        v
    })
    .collect()
}

fn read(bytes: &[u8]) -> std::io::Result<Option<RequestFrame>> {
    read_frame::<RequestFrame>(&mut &bytes[..])
}

#[test]
fn the_valid_frames_read_back() {
    for f in frames() {
        let back = read(&f).unwrap().unwrap();
        let mut again = Vec::new();
        write_frame(&mut again, &back).unwrap();
        assert_eq!(again, f);
    }
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(2000))]

    #[test]
    fn mutated_frames_read_or_fail_cleanly(
        pick in any::<prop::sample::Index>(),
        muts in mutations(vec![0], 1, 4),
    ) {
        let all = frames();
        let f = mutated(&all[pick.index(all.len())], &muts);
        match read(&f) {
            // A frame that still parses re-encodes to one that reads back the same.
            Ok(Some(back)) => {
                let mut again = Vec::new();
                write_frame(&mut again, &back).unwrap();
                let back2 = read(&again).unwrap().unwrap();
                prop_assert_eq!(back2.req, back.req);
            }
            // A clean end only when not even the length prefix is there.
            Ok(None) => prop_assert!(f.len() < 4),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn random_frames_read_or_fail_cleanly(
        len in prop_oneof![0u64..128, field_value()],
        body in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let len = len as u32;
        let mut f = len.to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        let r = read(&f);
        if len > MAX_FRAME || len as usize > body.len() {
            prop_assert!(r.is_err(), "length {} over {} body bytes was accepted", len, body.len());
        }
    }
}
