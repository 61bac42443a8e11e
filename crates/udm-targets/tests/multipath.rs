//! The `multipath` target: status and table lines as a 6.1 kernel printed them for the same
//! tables and messages (`kernel_mirror_multipath` checks them against a live kernel), I/O
//! moving to another path when one fails, queueing with no path until a path comes back,
//! and failing instead without `queue_if_no_path`.

mod common;
use common::*;
use std::sync::mpsc;
use std::time::Duration;
use udm_core::StatusType;
use udm_io::{Bio, IoBuf, Sectors};

const SECTORS: u64 = 8192;

fn st(reg: &udm_core::Registry, name: &str, ty: StatusType) -> String {
    let (_, s) = reg.status(&sel(name), false, ty).unwrap();
    s[0].params.clone()
}

fn msg(reg: &udm_core::Registry, name: &str, m: &str) -> Result<(), udm_core::DmError> {
    let argv: Vec<String> = m.split(' ').map(String::from).collect();
    reg.message(&sel(name), 0, &argv).map(|_| ())
}

#[test]
fn status_and_table_lines_follow_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a", SECTORS, 0);
    let b = image(dir.path(), "b", SECTORS, 0);
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let reg = registry();
    create(
        &reg,
        "p1",
        &format!(
            "0 {SECTORS} multipath 0 0 2 1 round-robin 0 1 1 {a} 1000 round-robin 0 1 1 {b} 1000"
        ),
    )
    .unwrap();
    let info = |r: &udm_core::Registry| st(r, "p1", StatusType::Info);
    assert_eq!(
        info(&reg),
        format!("2 1 0 0 2 1 E 0 1 0 {a} A 0 E 0 1 0 {b} A 0 ")
    );
    assert_eq!(
        st(&reg, "p1", StatusType::Table),
        format!("0 0 2 1 round-robin 0 1 1 {a} 1 round-robin 0 1 1 {b} 1 ")
    );
    msg(&reg, "p1", &format!("fail_path {a}")).unwrap();
    assert_eq!(
        info(&reg),
        format!("2 1 0 0 2 1 E 0 1 0 {a} F 1 E 0 1 0 {b} A 0 ")
    );
    msg(&reg, "p1", &format!("reinstate_path {a}")).unwrap();
    assert_eq!(
        info(&reg),
        format!("2 1 0 0 2 1 E 0 1 0 {a} A 1 E 0 1 0 {b} A 0 ")
    );
    msg(&reg, "p1", "switch_group 2").unwrap();
    assert_eq!(
        info(&reg),
        format!("2 1 0 0 2 2 E 0 1 0 {a} A 1 E 0 1 0 {b} A 0 ")
    );
    msg(&reg, "p1", "disable_group 1").unwrap();
    assert_eq!(
        info(&reg),
        format!("2 1 0 0 2 2 D 0 1 0 {a} A 1 E 0 1 0 {b} A 0 ")
    );
    // I/O makes group 2 active and clears queue_io.
    {
        let (dev, _g) = open(&reg, "p1");
        read(&*dev, 0, 512);
    }
    assert_eq!(
        info(&reg),
        format!("2 0 0 0 2 2 D 0 1 0 {a} A 1 A 0 1 0 {b} A 0 ")
    );
    for bad in [
        "switch_group 3",
        "disable_group 0",
        "fail_path /nope",
        "bogus 1",
        "a b c",
    ] {
        assert!(msg(&reg, "p1", bad).is_err(), "{bad}");
    }

    create(
        &reg,
        "p2",
        &format!("0 {SECTORS} multipath 3 queue_if_no_path pg_init_retries 5 0 1 1 service-time 0 2 2 {a} 1 1 {b} 2 1"),
    )
    .unwrap();
    assert_eq!(
        st(&reg, "p2", StatusType::Info),
        format!("2 1 0 0 1 1 E 0 2 2 {a} A 0 0 1 {b} A 0 0 1 ")
    );
    assert_eq!(
        st(&reg, "p2", StatusType::Table),
        format!("3 queue_if_no_path pg_init_retries 5 0 1 1 service-time 0 2 2 {a} 1 1 {b} 1 1 ")
    );
    msg(&reg, "p2", "fail_if_no_path").unwrap();
    assert_eq!(
        st(&reg, "p2", StatusType::Table),
        format!("2 pg_init_retries 5 0 1 1 service-time 0 2 2 {a} 1 1 {b} 1 1 ")
    );
    create(
        &reg,
        "p3",
        &format!("0 {SECTORS} multipath 2 queue_mode bio 0 1 1 queue-length 0 2 1 {b} 1 {a} 1"),
    )
    .unwrap();
    assert_eq!(
        st(&reg, "p3", StatusType::Info),
        format!("2 1 0 0 1 1 E 0 2 1 {b} A 0 0 {a} A 0 0 ")
    );
    assert_eq!(
        st(&reg, "p3", StatusType::Table),
        format!(
            "3 retain_attached_hw_handler queue_mode bio 0 1 1 queue-length 0 2 1 {b} 1 {a} 1 "
        )
    );
    create(
        &reg,
        "p4",
        &format!("0 {SECTORS} multipath 0 0 1 1 historical-service-time 0 1 1 {a} 1"),
    )
    .unwrap();
    assert_eq!(
        st(&reg, "p4", StatusType::Table),
        format!("0 0 1 1 historical-service-time 2 972 0 1 1 {a} 0 ")
    );
    let bad = [
        (
            format!("0 0 1 1 foo 0 1 1 {a} 1"),
            "unknown path selector type",
        ),
        (
            format!("1 bogus 0 1 1 round-robin 0 1 1 {a} 1"),
            "Unrecognised multipath feature request",
        ),
        (
            format!("0 0 2 1 round-robin 0 1 1 {a} 1"),
            "priority group count mismatch",
        ),
        (
            format!("0 0 1 0 round-robin 0 1 1 {a} 1"),
            "invalid initial priority group",
        ),
        (
            format!("0 0 1 1 round-robin 0 1 2 {a} 1"),
            "not enough path parameters",
        ),
        (
            format!("0 0 1 1 round-robin 0 1 1 {a} 1 2"),
            "not enough priority group arguments",
        ),
        (
            format!("0 0 1 1 round-robin 0 1 2 {a} 1 2"),
            "round-robin ps: incorrect number of arguments",
        ),
        (
            format!("2 pg_init_retries 51 0 1 1 round-robin 0 1 1 {a} 1"),
            "pg_init_retries must be between 1 and 50",
        ),
        (
            format!("0 1 alua 1 1 round-robin 0 1 1 {a} 1"),
            "error attaching hardware handler",
        ),
        ("9".to_string(), "invalid number of feature args"),
    ];
    for (t, want) in bad {
        let e = create(&reg, "bad", &format!("0 {SECTORS} multipath {t}")).unwrap_err();
        assert!(e.to_string().contains(want), "{t}: {e}");
    }
}

/// Submit a read of 8 sectors without waiting; the receiver gets the result.
fn read_async(dev: &dyn udm_io::BlockDevice) -> mpsc::Receiver<Result<Vec<u8>, udm_io::IoError>> {
    let (tx, rx) = mpsc::channel();
    dev.submit(Bio::read(
        Sectors(8),
        IoBuf::zeroed(4096),
        Box::new(move |r, buf| {
            let _ = tx.send(r.map(|_| buf.into_vec()));
        }),
    ));
    rx
}

#[test]
fn io_moves_to_another_path_and_waits_with_no_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = image(dir.path(), "data", SECTORS, 0x42);
    let reg = registry();
    let good = format!("0 {SECTORS} linear {} 0", data.display());
    let dead = format!("0 {SECTORS} error");
    create(&reg, "pa", &good).unwrap();
    create(&reg, "pb", &good).unwrap();
    let reload = |n: &str, t: &str| {
        reg.load(&sel(n), &lines(t), false).unwrap();
        reg.resume(&sel(n)).unwrap();
    };
    create(
        &reg,
        "mp",
        &format!("0 {SECTORS} multipath 1 queue_if_no_path 0 1 1 round-robin 0 2 1 /dev/mapper/pa 1 /dev/mapper/pb 1"),
    )
    .unwrap();
    let ev0 = reg.info(&sel("mp"), false).unwrap().event_nr;
    let (dev, _g) = open(&reg, "mp");
    reload("pa", &dead);
    for _ in 0..4 {
        assert_eq!(read(&*dev, 8, 4096), vec![0x42; 4096]);
    }
    let s = st(&reg, "mp", StatusType::Info);
    assert!(s.contains(" F 1 ") && s.contains(" A 0 "), "{s}");
    assert!(reg.info(&sel("mp"), false).unwrap().event_nr > ev0);
    // No path left: the read waits until a path is reinstated.
    reload("pb", &dead);
    let rx = read_async(&*dev);
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "completed with no path"
    );
    let s = st(&reg, "mp", StatusType::Info);
    assert!(s.contains(" F 1 ") && !s.contains(" A "), "{s}");
    reload("pa", &good);
    msg(&reg, "mp", "reinstate_path /dev/mapper/pa").unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("queued read ends");
    assert_eq!(got.unwrap(), vec![0x42; 4096]);
    // Without queue_if_no_path, I/O with no path fails at once.
    msg(&reg, "mp", "fail_if_no_path").unwrap();
    msg(&reg, "mp", "fail_path /dev/mapper/pa").unwrap();
    let got = read_async(&*dev)
        .recv_timeout(Duration::from_secs(30))
        .unwrap();
    assert_eq!(got.unwrap_err(), udm_io::IoError::Io);
    // A queued I/O fails when queueing is turned off.
    msg(&reg, "mp", "queue_if_no_path").unwrap();
    let rx = read_async(&*dev);
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    msg(&reg, "mp", "fail_if_no_path").unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(30)).unwrap().is_err());
}
