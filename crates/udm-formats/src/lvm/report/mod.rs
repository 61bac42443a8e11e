//! lvm2's reports over the metadata model: the `pvs`/`vgs`/`lvs` fields as `udm_report` field
//! definitions and their values ([`fields`]), the attribute strings and LV relations
//! ([`attrs`]), the active form of LVs up in udm ([`live`]), and sizes in lvm2's units ([`units`]). The report engine (columns, widths,
//! selection, JSON) is `udm_report`'s.

pub mod attrs;
pub mod fields;
pub mod live;
pub mod units;

pub use fields::{lookup, obj, value, Ctx, PvInfo, Val, FIELDS, TYPES};
pub use units::{long_size, size, Units};
