//! `Sectors` and `Bytes` newtypes: every address and length in udm carries its unit.

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// Size of a sector in bytes, as in the kernel (`SECTOR_SHIFT` 9).
pub const SECTOR_SIZE: u64 = 512;

/// A count or address in 512-byte sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sectors(pub u64);

/// A count or address in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Sectors {
    pub const ZERO: Sectors = Sectors(0);
    /// Bytes covered by this many sectors (saturating at `u64::MAX`, which is past the end
    /// of any device).
    pub fn bytes(self) -> Bytes {
        Bytes(self.0.saturating_mul(SECTOR_SIZE))
    }
    pub fn checked_add(self, o: Sectors) -> Option<Sectors> {
        self.0.checked_add(o.0).map(Sectors)
    }
}

impl Bytes {
    /// Whole sectors in this many bytes (rounding down).
    pub fn sectors(self) -> Sectors {
        Sectors(self.0 / SECTOR_SIZE)
    }
    /// True when this is a whole number of sectors.
    pub fn is_sector_aligned(self) -> bool {
        self.0.is_multiple_of(SECTOR_SIZE)
    }
}

macro_rules! arith {
    ($t:ident) => {
        impl Add for $t {
            type Output = $t;
            fn add(self, o: $t) -> $t {
                $t(self.0 + o.0)
            }
        }
        impl Sub for $t {
            type Output = $t;
            fn sub(self, o: $t) -> $t {
                $t(self.0 - o.0)
            }
        }
        impl AddAssign for $t {
            fn add_assign(&mut self, o: $t) {
                self.0 += o.0
            }
        }
        impl SubAssign for $t {
            fn sub_assign(&mut self, o: $t) {
                self.0 -= o.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}
arith!(Sectors);
arith!(Bytes);
