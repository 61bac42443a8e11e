//! Typed params round-trip: `Display` parses back with `FromStr`, and a table built from the
//! printed params reports the same line in `status(Table)` (the kernel's canonical form).

mod common;
use common::*;
use proptest::prelude::*;
use udm_core::StatusType;
use udm_io::Sectors;
use udm_targets::linear::LinearParams;
use udm_targets::striped::StripedParams;

proptest! {
    #![proptest_config(udm_testkit::prop::config(32))]
    #[test]
    fn linear_round_trips(off in 0u64..1000, len in 1u64..1000) {
        let dir = tempfile::tempdir().unwrap();
        let a = image(dir.path(), "a.img", 2000, 0);
        let p = LinearParams { dev: a.display().to_string(), offset: Sectors(off) };
        let printed = p.to_string();
        prop_assert_eq!(printed.parse::<LinearParams>().unwrap(), p);
        let reg = registry();
        create(&reg, "l", &format!("0 {len} linear {printed}")).unwrap();
        let (_, t) = reg.status(&sel("l"), false, StatusType::Table).unwrap();
        prop_assert_eq!(&t[0].params, &printed);
        let (_, st) = reg.status(&sel("l"), false, StatusType::Info).unwrap();
        prop_assert_eq!(&st[0].params, "");
    }

    #[test]
    fn striped_round_trips(n in 1usize..5, chunk in 1u64..64, rows in 1u64..4, offs in proptest::collection::vec(0u64..100, 4)) {
        let dir = tempfile::tempdir().unwrap();
        let legs: Vec<(String, Sectors)> = (0..n)
            .map(|i| (image(dir.path(), &format!("l{i}"), 400 + chunk * rows, 0).display().to_string(), Sectors(offs[i])))
            .collect();
        let p = StripedParams { chunk: Sectors(chunk), legs };
        let printed = p.to_string();
        prop_assert_eq!(printed.parse::<StripedParams>().unwrap(), p.clone());
        let reg = registry();
        create(&reg, "s", &format!("0 {} striped {printed}", chunk * rows * n as u64)).unwrap();
        let (_, t) = reg.status(&sel("s"), false, StatusType::Table).unwrap();
        prop_assert_eq!(&t[0].params, &printed);
        let (_, st) = reg.status(&sel("s"), false, StatusType::Info).unwrap();
        let devs: Vec<String> = p.legs.iter().map(|l| l.0.clone()).collect();
        prop_assert_eq!(&st[0].params, &format!("{n} {} 1 {}", devs.join(" "), "A".repeat(n)));
    }
}
