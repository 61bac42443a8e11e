//! udm-report: the column report engine libdm gives dmsetup and lvm2 (`dm_report`): field
//! definitions and `-o` lists, sort keys (`-O`), selection (`-S`), and aligned, unaligned,
//! name-prefixed and row output, byte-identical to libdm's (padding counts bytes); and, in
//! [`dm`], the rest of libdm's client side dmsetup prints with.

pub mod dm;
pub mod report;
pub mod select;
