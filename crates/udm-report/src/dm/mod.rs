//! dmsetup's library side (libdm's client code, minus the ioctls): the report fields and
//! the object `info -c` reports ([`fields`]), the dependency tree and its `ls --tree`
//! drawing ([`tree`]), name mangling ([`mangle`]), table text and name checks ([`table`]),
//! a task's device and failure lines ([`task`]), what `info`/`table`/`deps`/`ls` print about
//! a device ([`info`]), udev cookies ([`udev`]), dm-stats regions as `udm stats` shows them
//! ([`stats`]) and C's number parsing ([`cnum`]). The `udm` binary adds argv parsing, the
//! daemon connection and printing.

pub mod cnum;
pub mod fields;
pub mod info;
pub mod mangle;
pub mod stats;
pub mod table;
pub mod task;
pub mod tree;
pub mod udev;
