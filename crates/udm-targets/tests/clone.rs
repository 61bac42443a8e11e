//! The `clone` target against a model (fixed, printed seed): with hydration off, random reads
//! and writes see the source plus the writes; a reopen keeps the regions hydrated so far
//! (committed at suspend); with hydration on, every region hydrates, the destination equals
//! the model byte for byte, and the status line reports it as the kernel formats it.

mod common;
use common::*;
use udm_core::StatusType;
use udm_testkit::rng::XorShift;

const REGION: u64 = 32;
const SECTORS: u64 = REGION * 200 + 8; // a short last region

fn status(reg: &udm_core::Registry) -> String {
    let (_, st) = reg.status(&sel("c"), false, StatusType::Info).unwrap();
    st[0].params.clone()
}

#[test]
fn clone_model_then_hydrates_to_the_model() {
    let seed = udm_testkit::prop::seed();
    eprintln!("clone: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed);
    let dir = tempfile::tempdir().unwrap();
    let meta = image(dir.path(), "meta", 8192, 0);
    let dest = image(dir.path(), "dest", SECTORS, 0xdd);
    let source = dir.path().join("source");
    let mut model = udm_testkit::rng::pseudo((SECTORS * 512) as usize, seed);
    std::fs::write(&source, &model).unwrap();
    let table = |feat: &str| {
        format!(
            "0 {SECTORS} clone {} {} {} {REGION}{feat}",
            meta.display(),
            dest.display(),
            source.display()
        )
    };
    let reg = registry();
    create(&reg, "c", &table(" 1 no_hydration")).unwrap();
    let (_, t) = reg.status(&sel("c"), false, StatusType::Table).unwrap();
    assert!(
        t[0].params.ends_with(&format!(" {REGION} 1 no_hydration")),
        "{}",
        t[0].params
    );
    let st = status(&reg);
    let f: Vec<&str> = st.split(' ').collect();
    assert_eq!(f[0], "8", "{st}");
    assert!(f[1].ends_with("/1024"), "{st}");
    assert_eq!(
        f[2..].join(" "),
        "32 0/201 0 1 no_hydration 4 hydration_threshold 1 hydration_batch_size 1 rw"
    );
    {
        let (dev, _g) = open(&reg, "c");
        for i in 0..600 {
            let s = rng.below(SECTORS);
            let len = (1 + rng.below(2 * REGION)).min(SECTORS - s);
            let (a, b) = ((s * 512) as usize, ((s + len) * 512) as usize);
            if rng.below(2) == 0 {
                let data = rng.bytes(b - a);
                write(&*dev, s, &data);
                model[a..b].copy_from_slice(&data);
            } else {
                assert!(read(&*dev, s, b - a) == model[a..b], "op {i}: read at {s}");
            }
        }
        udm_io::sync::flush(&*dev).unwrap();
    }
    let hydrated = |s: &str| -> u64 {
        s.split(' ')
            .nth(3)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let partly = hydrated(&status(&reg));
    assert!(partly > 0 && partly < 201, "{}", status(&reg));
    reg.remove(&sel("c"), false).unwrap();
    // Reopen with hydration on: it starts from the committed regions and finishes.
    create(&reg, "c", &table("")).unwrap();
    assert!(hydrated(&status(&reg)) >= partly);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while hydrated(&status(&reg)) < 201 {
        assert!(
            std::time::Instant::now() < deadline,
            "stuck: {}",
            status(&reg)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let st = status(&reg);
    assert!(
        st.ends_with(" 201/201 0 0 4 hydration_threshold 1 hydration_batch_size 1 rw"),
        "{st}"
    );
    {
        let (dev, _g) = open(&reg, "c");
        assert!(read(&*dev, 0, model.len()) == model);
    }
    reg.message(&sel("c"), 0, &["hydration_batch_size".into(), "8".into()])
        .unwrap();
    assert!(status(&reg).contains("hydration_batch_size 8"));
    assert!(reg.message(&sel("c"), 0, &["bogus".into()]).is_err());
    reg.remove(&sel("c"), false).unwrap();
    assert!(
        std::fs::read(&dest).unwrap() == model,
        "destination equals the model"
    );
    for (t, why) in [
        (
            format!(
                "0 {SECTORS} clone {} {} {} 12",
                meta.display(),
                dest.display(),
                source.display()
            ),
            "Region size is not a power of 2",
        ),
        (
            format!(
                "0 {SECTORS} clone {} {} {} 32 1 bogus",
                meta.display(),
                dest.display(),
                source.display()
            ),
            "Invalid feature argument",
        ),
        (
            format!(
                "0 {SECTORS} clone {} {} {} 64",
                meta.display(),
                dest.display(),
                source.display()
            ),
            "Failed to load metadata",
        ),
    ] {
        let e = create(&reg, "bad", &t).unwrap_err();
        assert!(e.to_string().contains(why), "{t}: {e}");
    }
}
