//! Conversions between the engine's types (`udm-core`) and the protocol's wire types
//! (`udm-proto`), which know nothing of each other. (Neither type is this crate's, so these
//! are a local trait rather than `From` impls.)

use udm_core::{registry, TableLine};
use udm_io::Sectors;
use udm_proto as proto;

/// `self` in the other crate's terms.
pub trait Wire<T> {
    fn wire(self) -> T;
}

impl Wire<registry::DevSel> for proto::DevSel {
    fn wire(self) -> registry::DevSel {
        match self {
            proto::DevSel::Name(n) => registry::DevSel::Name(n),
            proto::DevSel::Uuid(u) => registry::DevSel::Uuid(u),
            proto::DevSel::Dev(ma, mi) => registry::DevSel::Dev(ma, mi),
        }
    }
}

impl Wire<proto::DevInfo> for udm_core::DevInfo {
    fn wire(self) -> proto::DevInfo {
        proto::DevInfo {
            name: self.name,
            uuid: self.uuid,
            major: self.major,
            minor: self.minor,
            open_count: self.open_count,
            event_nr: self.event_nr,
            suspended: self.suspended,
            read_only: self.read_only,
            live_table: self.live_table,
            inactive_table: self.inactive_table,
            target_count: self.target_count,
            deferred_remove: self.deferred_remove,
            resumed: self.resumed,
        }
    }
}

impl Wire<proto::Dep> for registry::Dep {
    fn wire(self) -> proto::Dep {
        proto::Dep {
            id: self.id,
            devno: self.devno,
            dm_name: self.dm_name,
        }
    }
}

impl Wire<proto::TargetStatus> for registry::TargetStatus {
    fn wire(self) -> proto::TargetStatus {
        proto::TargetStatus {
            start: self.start,
            len: self.len,
            ttype: self.ttype,
            params: self.params,
        }
    }
}

impl Wire<TableLine> for proto::Line {
    fn wire(self) -> TableLine {
        TableLine {
            start: Sectors(self.start),
            len: Sectors(self.len),
            ttype: self.ttype,
            params: self.params,
        }
    }
}

impl<A: Wire<B>, B> Wire<Vec<B>> for Vec<A> {
    fn wire(self) -> Vec<B> {
        self.into_iter().map(Wire::wire).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire types serialize exactly as the engine's types did when the protocol used
    /// them directly (the protocol version did not change).
    #[test]
    fn wire_types_keep_the_engine_types_json() {
        let reg = udm_core::Registry::new(udm_core::TargetTypes::new());
        let info = reg.create("w", "uuid-w").unwrap();
        let same = |a: String, b: String| assert_eq!(a, b);
        same(
            serde_json::to_string(&info).unwrap(),
            serde_json::to_string(&info.clone().wire()).unwrap(),
        );
        let st = registry::TargetStatus {
            start: 0,
            len: 8,
            ttype: "zero".into(),
            params: String::new(),
        };
        same(
            serde_json::to_string(&st).unwrap(),
            serde_json::to_string(&st.clone().wire()).unwrap(),
        );
        let dep = registry::Dep {
            id: "7:0".into(),
            devno: Some((7, 0)),
            dm_name: None,
        };
        same(
            serde_json::to_string(&dep).unwrap(),
            serde_json::to_string(&dep.clone().wire()).unwrap(),
        );
        for (p, c) in [
            (
                proto::DevSel::Name("n".into()),
                registry::DevSel::Name("n".into()),
            ),
            (
                proto::DevSel::Uuid("u".into()),
                registry::DevSel::Uuid("u".into()),
            ),
            (proto::DevSel::Dev(253, 1), registry::DevSel::Dev(253, 1)),
        ] {
            same(
                serde_json::to_string(&p).unwrap(),
                serde_json::to_string(&c).unwrap(),
            );
            assert_eq!(p.wire(), c);
        }
    }
}
