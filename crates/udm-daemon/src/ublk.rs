//! The ublk frontend (`udm daemon --ublk`, cargo feature `ublk`): every mapped device with
//! a live table becomes `/dev/ublkbN`, removed with the device. It does not hold the device
//! open (like a kernel dm device's node), so `remove` works and ends the ublk device.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use udm_core::device::DmBlockDevice;
use udm_core::{DevSel, Registry, RegistryEvent};

/// Running ublk devices by mapped-device name.
pub struct UblkExports {
    devs: Arc<Mutex<HashMap<String, udm_ublk::UblkDevice>>>,
}

fn add(reg: &Registry, devs: &Mutex<HashMap<String, udm_ublk::UblkDevice>>, name: &str) {
    if devs.lock().contains_key(name) {
        return;
    }
    let Ok(d) = reg.get(&DevSel::Name(name.to_string())) else {
        return;
    };
    if d.live_table().is_none() {
        return;
    }
    match udm_ublk::UblkDevice::add(Arc::new(DmBlockDevice(d))) {
        Ok(u) => {
            tracing::info!("ublk: {name} is {}", u.path().display());
            devs.lock().insert(name.to_string(), u);
        }
        Err(e) => tracing::warn!("ublk: cannot export {name}: {e}"),
    }
}

impl UblkExports {
    /// Export every device now and follow the registry from here on.
    pub fn start(reg: &Registry) -> UblkExports {
        let devs = Arc::new(Mutex::new(HashMap::new()));
        let (tx, rx) = crossbeam_channel::unbounded::<RegistryEvent>();
        reg.subscribe(move |ev| {
            let _ = tx.send(ev.clone());
        });
        for d in reg.list().into_iter().filter(|d| d.live_table) {
            add(reg, &devs, &d.name);
        }
        let (r, dv) = (reg.clone(), devs.clone());
        let _ = std::thread::Builder::new()
            .name("udm-ublk-events".into())
            .spawn(move || {
                for ev in rx {
                    match ev {
                        RegistryEvent::Resumed(n) => add(&r, &dv, &n),
                        RegistryEvent::Renamed { old, new } => {
                            let mut g = dv.lock();
                            if let Some(u) = g.remove(&old) {
                                g.insert(new, u);
                            }
                        }
                        RegistryEvent::Removed(n) => {
                            let u = dv.lock().remove(&n);
                            if let Some(u) = u {
                                let path = u.path();
                                if let Err(e) = u.remove() {
                                    tracing::warn!("ublk: remove {}: {e}", path.display());
                                }
                            }
                        }
                        RegistryEvent::Created(_) => {}
                    }
                }
            });
        UblkExports { devs }
    }

    /// Stop and delete every ublk device.
    pub fn shutdown(self) {
        let all: Vec<_> = self.devs.lock().drain().collect();
        for (name, u) in all {
            if let Err(e) = u.remove() {
                tracing::warn!("ublk: remove {name}: {e}");
            }
        }
    }
}
