//! Target lookup across devices (the kernel's pool table): a "pool" test target publishes an
//! object under its device, a "client" target finds it through the device it names, and the
//! object stops being found when the pool's table is cleared, replaced or removed.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use udm_core::{
    parse_table_text, MapResult, Publication, Registry, StatusFlags, StatusType, Target, TargetCtx,
    TargetError, TargetType, TargetTypes,
};
use udm_io::{Bio, DevId};
use udm_testkit::registry::sel;

/// What a pool publishes: a generation number telling its loads apart.
struct PoolObj {
    gen: u64,
}

struct PoolType {
    next: AtomicU64,
}

struct Pool {
    _obj: Arc<PoolObj>,
    _publication: Publication,
}

impl Target for Pool {
    fn map(&self, bio: Bio) -> MapResult {
        bio.complete(Ok(()));
        MapResult::Submitted
    }
}

impl TargetType for PoolType {
    fn name(&self) -> &'static str {
        "pool"
    }
    fn version(&self) -> [u32; 3] {
        [1, 0, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        _args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let obj = Arc::new(PoolObj {
            gen: self.next.fetch_add(1, SeqCst) + 1,
        });
        let publication = ctx.publish(&obj)?;
        Ok(Box::new(Pool {
            _obj: obj,
            _publication: publication,
        }))
    }
}

struct ClientType;

struct Client {
    pool: Arc<PoolObj>,
}

impl Target for Client {
    fn map(&self, bio: Bio) -> MapResult {
        bio.complete(Ok(()));
        MapResult::Submitted
    }
    fn status(&self, _ty: StatusType, _flags: StatusFlags) -> String {
        format!("gen {}", self.pool.gen)
    }
}

impl TargetType for ClientType {
    fn name(&self) -> &'static str {
        "client"
    }
    fn version(&self) -> [u32; 3] {
        [1, 0, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let h = ctx.get_device(&args[0])?;
        let pool = ctx
            .lookup::<PoolObj>(&h.id)
            .ok_or_else(|| TargetError::invalid("Couldn't find pool object"))?;
        Ok(Box::new(Client { pool }))
    }
}

fn registry() -> Registry {
    let types = TargetTypes::new();
    types.register(Arc::new(PoolType {
        next: AtomicU64::new(0),
    }));
    types.register(Arc::new(ClientType));
    Registry::new(types)
}

fn load(reg: &Registry, name: &str, table: &str) -> Result<(), udm_core::DmError> {
    reg.load(&sel(name), &parse_table_text(table).unwrap(), false)
        .map(|_| ())
}

fn client_gen(reg: &Registry, name: &str) -> String {
    reg.status(&sel(name), false, StatusType::Info).unwrap().1[0]
        .params
        .clone()
}

#[test]
fn lookup_finds_the_pool_and_follows_reload_clear_and_remove() {
    let reg = registry();
    reg.create("p", "").unwrap();
    let pool_id = DevId::Num(253, reg.info(&sel("p"), false).unwrap().minor);
    load(&reg, "p", "0 8 pool").unwrap();
    reg.resume(&sel("p")).unwrap();

    // A client finds the pool's object through the device it names.
    reg.create("c", "").unwrap();
    load(&reg, "c", "0 8 client /dev/mapper/p").unwrap();
    reg.resume(&sel("c")).unwrap();
    assert_eq!(client_gen(&reg, "c"), "gen 1");

    // A device whose table published nothing is not a pool.
    reg.create("c2", "").unwrap();
    let e = load(&reg, "c2", "0 8 client /dev/mapper/c").unwrap_err();
    assert!(e.to_string().contains("Couldn't find pool object"), "{e}");

    // Reload staged: the newest load is found; clearing it brings the live one back.
    load(&reg, "p", "0 8 pool").unwrap();
    load(&reg, "c2", "0 8 client 253:0").unwrap();
    assert_eq!(reg.published().lookup::<PoolObj>(&pool_id).unwrap().gen, 2);
    reg.clear(&sel("p")).unwrap();
    assert_eq!(reg.published().lookup::<PoolObj>(&pool_id).unwrap().gen, 1);
    reg.clear(&sel("c2")).unwrap();

    // Reload and resume: the old table's object is gone, the new one is found.
    load(&reg, "p", "0 8 pool").unwrap();
    reg.resume(&sel("p")).unwrap();
    let objs = reg.published().lookup_all::<PoolObj>(&pool_id);
    assert_eq!(objs.iter().map(|o| o.gen).collect::<Vec<_>>(), vec![3]);
    drop(objs);
    load(&reg, "c2", "0 8 client /dev/mapper/p").unwrap();
    reg.resume(&sel("c2")).unwrap();
    assert_eq!(client_gen(&reg, "c2"), "gen 3");
    // The first client keeps the object it found (as a thin keeps its pool referenced).
    assert_eq!(client_gen(&reg, "c"), "gen 1");

    // Removing the pool device unpublishes; clients hold it open until they go.
    assert_eq!(
        reg.remove(&sel("p"), false).unwrap_err().errno(),
        libc::EBUSY
    );
    reg.remove(&sel("c"), false).unwrap();
    reg.remove(&sel("c2"), false).unwrap();
    reg.remove(&sel("p"), false).unwrap();
    assert!(reg.published().lookup::<PoolObj>(&pool_id).is_none());
    assert!(reg.published().is_empty());
    // A new device that reuses the minor finds nothing stale.
    reg.create("p", "").unwrap();
    reg.create("c", "").unwrap();
    let e = load(&reg, "c", "0 8 client /dev/mapper/p").unwrap_err();
    assert!(e.to_string().contains("Device lookup failed") || e.to_string().contains("pool"));
}

#[test]
fn published_objects_are_held_weakly() {
    let p = udm_core::Published::new();
    let key = DevId::Num(253, 7);
    let obj = Arc::new(PoolObj { gen: 9 });
    let _publ = p.publish(key.clone(), &obj);
    assert_eq!(p.lookup::<PoolObj>(&key).unwrap().gen, 9);
    // Wrong type or key: nothing.
    assert!(p.lookup::<u32>(&key).is_none());
    assert!(p.lookup::<PoolObj>(&DevId::Num(253, 8)).is_none());
    // The object dies although its publication lives: no longer found.
    drop(obj);
    assert!(p.lookup::<PoolObj>(&key).is_none());
}
