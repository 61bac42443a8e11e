//! Target "modules": types outside the core register when a table or `target-version` first
//! names them (the kernel's `request_module`), so `targets` lists what the kernel lists after
//! the same commands: the newest registration first.

use std::sync::Arc;
use udm_core::{MapResult, Target, TargetCtx, TargetError, TargetType, TargetTypes};
use udm_io::{Bio, IoError};

struct T(&'static str, [u32; 3]);
struct Nop;

impl Target for Nop {
    fn map(&self, bio: Bio) -> MapResult {
        MapResult::Kill(bio, IoError::Io)
    }
}

impl TargetType for T {
    fn name(&self) -> &'static str {
        self.0
    }
    fn version(&self) -> [u32; 3] {
        self.1
    }
    fn construct(
        &self,
        _: &mut TargetCtx<'_>,
        _: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        Ok(Box::new(Nop))
    }
}

fn names(t: &TargetTypes) -> Vec<String> {
    t.list().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn modules_register_on_first_use_newest_first() {
    let t = TargetTypes::new();
    t.register(Arc::new(T("error", [1, 5, 0])));
    t.register(Arc::new(T("linear", [1, 4, 0])));
    t.register(Arc::new(T("striped", [1, 6, 0])));
    t.register_module("zero", vec![Arc::new(T("zero", [1, 1, 0]))]);
    t.register_module(
        "snapshot",
        vec![
            Arc::new(T("snapshot-origin", [1, 9, 0])),
            Arc::new(T("snapshot", [1, 16, 0])),
            Arc::new(T("snapshot-merge", [1, 5, 0])),
        ],
    );
    assert_eq!(names(&t), ["striped", "linear", "error"]);
    // A table naming a module's type loads the whole module, in its registration order.
    assert_eq!(t.get("snapshot").unwrap().version(), [1, 16, 0]);
    assert_eq!(
        names(&t),
        [
            "snapshot-merge",
            "snapshot",
            "snapshot-origin",
            "striped",
            "linear",
            "error"
        ]
    );
    assert!(t.get("nosuch").is_none());
    // modprobe dm-zero (by module name, with or without the dm- prefix).
    assert!(t.load_module("dm-zero"));
    assert!(t.load_module("zero"), "already loaded counts");
    assert!(!t.load_module("dm-nosuch"));
    assert_eq!(names(&t)[0], "zero");
    assert_eq!(names(&t).len(), 7);
}
