//! LUKS keyslot work as a library, on an in-memory image: luksFormat's writes, unlocking,
//! adding, changing and destroying keyslots (LUKS1 and LUKS2), and the errors cryptsetup
//! reports for a wrong passphrase or a slot that is not free.

use std::cell::RefCell;
use udm_formats::luks::{create, edit, FormatParams, Header, KdfParams, KeyslotError, ReadAt};

struct Mem(RefCell<Vec<u8>>);

impl ReadAt for Mem {
    fn size(&self) -> u64 {
        self.0.borrow().len() as u64
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let b = self.0.borrow();
        let end = off as usize + buf.len();
        if end > b.len() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&b[off as usize..end]);
        Ok(())
    }
}

impl Mem {
    fn apply(&self, w: udm_formats::luks::Writes) {
        let mut b = self.0.borrow_mut();
        for (off, bytes) in w {
            b[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
        }
    }
    fn header(&self) -> Header {
        Header::load(self).unwrap()
    }
}

fn fast() -> KdfParams {
    KdfParams {
        pbkdf: Some("pbkdf2".into()),
        force_iterations: Some(1000),
        ..Default::default()
    }
}

fn lifecycle(v1: bool) {
    let dev = Mem(RefCell::new(vec![0u8; 20 << 20]));
    let kp = fast();
    let vk = udm_formats::luks::random_bytes(64);
    let params = FormatParams {
        v1,
        cipher: "aes-xts-plain64".into(),
        hash: "sha256".into(),
        uuid: "12345678-1234-4234-8234-123456789abc".into(),
        sector_size: 512,
        label: String::new(),
        subsystem: String::new(),
        digest_iterations: 1000,
        integrity: None,
    };
    let kdf = kp.keyslot_kdf(v1, vk.len()).unwrap();
    let w = create::format(&params, "mem", dev.size(), &vk, b"one", &kdf, &()).unwrap();
    dev.apply(w);
    let h = dev.header();
    assert_eq!(h.version(), if v1 { 1 } else { 2 });
    assert_eq!(h.uuid(), params.uuid);
    let (slot, got) = h.unlock(&dev, b"one", None, &()).unwrap();
    assert_eq!((slot, &got[..]), (0, &vk[..]));
    assert_eq!(
        h.unlock(&dev, b"two", None, &()).unwrap_err(),
        KeyslotError::WrongPassphrase { last: None }
    );
    assert_eq!(
        edit::pick_free(&h, Some(0)).unwrap_err(),
        KeyslotError::SlotInUse(0)
    );

    // Add slot 1 ("two"), then change "two" to "three".
    let new = edit::pick_free(&h, None).unwrap();
    assert_eq!(new, 1);
    dev.apply(edit::add_key(h, 0, new, &vk, b"two", &kp, &()).unwrap());
    let h = dev.header();
    assert_eq!(edit::active_count(&h), 2);
    let (s, got) = h.unlock(&dev, b"two", None, &()).unwrap();
    assert_eq!((s, &got[..]), (1, &vk[..]));
    let (now, w) = edit::change_key(h, 1, &vk, b"three", &kp, &()).unwrap();
    dev.apply(w);
    let h = dev.header();
    assert!(h.unlock(&dev, b"two", None, &()).is_err());
    let (s, got) = h.unlock(&dev, b"three", None, &()).unwrap();
    assert_eq!((s, &got[..]), (now, &vk[..]));
    assert_eq!(edit::active_count(&h), 2);

    // Destroy slot 0: "one" no longer opens, and only `now` is left.
    dev.apply(edit::destroy(h, 0).unwrap());
    let h = dev.header();
    assert_eq!(edit::active_count(&h), 1);
    assert!(!edit::slot_active(&h, 0));
    assert!(h.unlock(&dev, b"one", None, &()).is_err());
    assert_eq!(
        h.unlock(&dev, b"three", Some(0), &()).unwrap_err(),
        KeyslotError::NoUsableKeyslot
    );
    assert_eq!(h.unlock(&dev, b"three", None, &()).unwrap().0, now);
}

#[test]
fn luks2_keyslot_lifecycle() {
    lifecycle(false);
}

#[test]
fn luks1_keyslot_lifecycle() {
    lifecycle(true);
}

#[test]
fn format_refuses_small_devices_and_bad_options() {
    let kp = fast();
    let kdf = kp.keyslot_kdf(false, 64).unwrap();
    let params = FormatParams {
        v1: false,
        cipher: "aes-xts-plain64".into(),
        hash: "sha256".into(),
        uuid: udm_formats::luks::random_uuid(),
        sector_size: 512,
        label: String::new(),
        subsystem: String::new(),
        digest_iterations: 1000,
        integrity: None,
    };
    let e = create::format(&params, "small", 1 << 20, &[0u8; 64], b"p", &kdf, &()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Device small is too small. (LUKS2 requires at least 16781312 bytes.)"
    );
    assert_eq!(
        create::check_format(false, 12, "sha256", 512, None),
        Err(KeyslotError::KeySize)
    );
    assert_eq!(
        create::check_format(true, 256, "sha256", 4096, None),
        Err(KeyslotError::SectorSize)
    );
    assert_eq!(
        create::check_format(false, 256, "md5", 512, None),
        Err(KeyslotError::Hash("md5".into()))
    );
    assert!(kp.keyslot_kdf(true, 32).is_ok());
    let e = KdfParams {
        pbkdf: Some("argon2id".into()),
        ..Default::default()
    }
    .keyslot_kdf(true, 32)
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Requested PBKDF type argon2id is not supported for LUKS1."
    );
}

#[test]
fn plain_mode_key_is_hash_rounds_of_a_prefixes() {
    use sha2::Digest;
    let k = create::plain_key("sha256", b"pw", 48).unwrap();
    let mut want = sha2::Sha256::digest(b"pw").to_vec();
    want.extend_from_slice(&sha2::Sha256::digest(b"Apw")[..16]);
    assert_eq!(&k[..], &want[..]);
    assert_eq!(
        &create::plain_key("plain", b"pw", 4).unwrap()[..],
        b"pw\0\0"
    );
    assert!(create::plain_key("md4", b"pw", 16).is_none());
}
