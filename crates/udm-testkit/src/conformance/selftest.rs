//! The suite's own tests: a healthy RAM disk passes every check, and each deliberately broken
//! device fails the check that is meant to catch its fault (so no check passes vacuously).

use super::*;
use std::sync::Mutex;
use std::thread::ThreadId;
use udm_io::{DevId, MemDevice, Op, PatternDevice};

const SIZE: Sectors = Sectors(65536);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    None,
    DropWrites,
    MisplaceWrites,
    WrongSize,
    PanicPastEnd,
    WrongErrorPastEnd,
    ShrinkReadBuffers,
    LoseFlushes,
    IgnoreWriteZeroes,
    ClaimReadOnlyButWrite,
    DropWriteOnThreadSwitch,
}

/// A RAM disk with one fault.
struct Broken {
    mem: MemDevice,
    fault: Fault,
    last_writer: Mutex<Option<ThreadId>>,
}

impl Broken {
    fn new(fault: Fault) -> Broken {
        Broken {
            mem: MemDevice::new("broken", SIZE),
            fault,
            last_writer: Mutex::new(None),
        }
    }
}

impl BlockDevice for Broken {
    fn submit(&self, mut bio: Bio) {
        let past_end = bio.sector.0.saturating_add(bio.len().0) > SIZE.0;
        match (self.fault, bio.op) {
            (Fault::DropWrites, Op::Write) if !past_end => return bio.complete(Ok(())),
            (Fault::MisplaceWrites, Op::Write) if !past_end && bio.end() < SIZE => {
                bio.sector += Sectors(1)
            }
            (Fault::PanicPastEnd, _) if past_end => panic!("past the end"),
            (Fault::WrongErrorPastEnd, _) if past_end => {
                return bio.complete(Err(IoError::Invalid))
            }
            (Fault::ShrinkReadBuffers, Op::Read) => {
                bio = bio.on_end(|r, buf| {
                    buf.resize(buf.len() / 2);
                    r
                })
            }
            (Fault::LoseFlushes, Op::Flush) => return std::mem::forget(bio),
            (Fault::IgnoreWriteZeroes, Op::WriteZeroes) => return bio.complete(Ok(())),
            (Fault::DropWriteOnThreadSwitch, Op::Write) => {
                let me = std::thread::current().id();
                let prev = self.last_writer.lock().unwrap().replace(me);
                if prev.is_some_and(|p| p != me) {
                    return bio.complete(Ok(()));
                }
            }
            _ => {}
        }
        self.mem.submit(bio)
    }
    fn size(&self) -> Sectors {
        match self.fault {
            Fault::WrongSize => SIZE + Sectors(8),
            _ => SIZE,
        }
    }
    fn id(&self) -> DevId {
        self.mem.id()
    }
    fn read_only(&self) -> bool {
        self.fault == Fault::ClaimReadOnlyButWrite
    }
}

fn spec() -> Spec {
    Spec {
        content: Some(zeroes),
        discard_zeroes: true,
        timeout: Duration::from_secs(2),
        ..Spec::writable(SIZE)
    }
}

fn check(name: &str) -> Check {
    CHECKS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("check exists")
        .1
}

/// `fault` fails `name`, and (when given) still passes `passes`.
fn caught(fault: Fault, name: &str, spec: &Spec, passes: &[&str]) {
    let dev = Broken::new(fault);
    let r = check(name)(&dev, spec);
    assert!(r.is_err(), "{fault:?} passed {name}");
    eprintln!("{fault:?} fails {name}: {}", r.unwrap_err());
    for p in passes {
        let dev = Broken::new(fault);
        check(p)(&dev, spec).unwrap_or_else(|e| panic!("{fault:?} should pass {p}: {e}"));
    }
}

#[test]
fn a_healthy_ram_disk_passes() {
    run("mem", &Broken::new(Fault::None), &spec());
    run("mem-4k", &MemDevice::new("m", SIZE), &spec());
}

#[test]
fn the_pattern_device_passes_read_only_and_a_wrong_content_fails() {
    let dev = PatternDevice::new(Sectors(20000));
    run(
        "pattern",
        &dev,
        &Spec::read_only(Sectors(20000), PatternDevice::fill),
    );
    let wrong = Spec::read_only(Sectors(20000), zeroes);
    assert!(initial_content(&dev, &wrong).is_err());
    assert!(concurrent(&dev, &wrong).is_err());
}

#[test]
fn lost_and_misplaced_writes_fail() {
    caught(
        Fault::DropWrites,
        "read_after_write",
        &spec(),
        &["out_of_range"],
    );
    caught(Fault::DropWrites, "exactly_once", &spec(), &[]);
    caught(Fault::MisplaceWrites, "read_after_write", &spec(), &[]);
    caught(
        Fault::IgnoreWriteZeroes,
        "write_zeroes_and_discard",
        &spec(),
        &["read_after_write"],
    );
    let no_promise = Spec {
        write_zeroes: false,
        ..spec()
    };
    caught(
        Fault::IgnoreWriteZeroes,
        "write_zeroes_and_discard",
        &no_promise,
        &[],
    );
}

#[test]
fn wrong_size_and_bad_ends_fail() {
    caught(Fault::WrongSize, "size_and_limits", &spec(), &[]);
    caught(
        Fault::PanicPastEnd,
        "out_of_range",
        &spec(),
        &["read_after_write"],
    );
    caught(
        Fault::WrongErrorPastEnd,
        "out_of_range",
        &spec(),
        &["read_after_write"],
    );
    let wrong_block = Spec {
        logical_block_size: 4096,
        ..spec()
    };
    assert!(size_and_limits(&MemDevice::new("m", SIZE), &wrong_block).is_err());
}

#[test]
fn lost_bios_and_short_buffers_fail() {
    caught(
        Fault::LoseFlushes,
        "fua_and_flush",
        &spec(),
        &["read_after_write"],
    );
    caught(Fault::LoseFlushes, "exactly_once", &spec(), &[]);
    caught(Fault::ShrinkReadBuffers, "exactly_once", &spec(), &[]);
}

#[test]
fn read_only_liars_and_thread_unsafe_devices_fail() {
    let ro = Spec {
        read_only: true,
        ..spec()
    };
    caught(
        Fault::ClaimReadOnlyButWrite,
        "read_only_refuses_writes",
        &ro,
        &["initial_content"],
    );
    caught(
        Fault::DropWriteOnThreadSwitch,
        "concurrent",
        &spec(),
        &["read_after_write", "exactly_once"],
    );
}
