//! `root_hash_sig_key_desc`: the root hash signature (dm-verity-verify-sig.c). The table names
//! a `user` key in the daemon's key store whose payload is a detached PKCS#7 / CMS SignedData
//! (DER) over the root hash as written in the table (hex text, no newline); it must verify
//! against one of the daemon's trusted X.509 certificates (`udm daemon --verity-trusted-certs
//! DIR`), which stand in for the kernel's builtin and secondary trusted keyrings.
//!
//! The signer is found as the kernel finds it in the trusted keyring: by issuer and serial
//! number, or by subject key identifier; certificates carried in the message are not trusted
//! by themselves (chains through intermediates are not followed). Signed attributes, when
//! present, must carry the data's message digest. RSA PKCS#1 v1.5 (SHA-256/384/512) and ECDSA
//! P-256/P-384 signatures are supported.

use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::ObjectIdentifier as Oid;
use der::{Decode, Encode};
use parking_lot::RwLock;
use ring::signature as rs;
use sha2::Digest as _;
use std::path::Path;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

const OID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
const OID_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
const OID_SKI: Oid = Oid::new_unwrap("2.5.29.14");
const OID_SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
const OID_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
const OID_RSA_SHA512: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
const OID_EC: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
const OID_ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
const OID_P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: Oid = Oid::new_unwrap("1.3.132.0.34");

/// Why a signature was not accepted; `errno` is what the kernel's verify_pkcs7_signature
/// returns for the same case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct SigError {
    pub errno: i32,
    pub msg: String,
}

fn err(errno: i32, msg: impl Into<String>) -> SigError {
    SigError {
        errno,
        msg: msg.into(),
    }
}

fn bad(msg: impl Into<String>) -> SigError {
    err(libc::EBADMSG, msg)
}

/// A trusted certificate, reduced to what signer lookup and verification need.
#[derive(Debug, Clone)]
struct Trusted {
    subject: String,
    issuer_der: Vec<u8>,
    serial: Vec<u8>,
    ski: Option<Vec<u8>>,
    key_alg: Oid,
    curve: Option<Oid>,
    key: Vec<u8>,
}

static TRUSTED: RwLock<Vec<Trusted>> = RwLock::new(Vec::new());

/// Trust one DER X.509 certificate; returns its subject.
pub fn add_trusted_cert_der(der: &[u8]) -> Result<String, SigError> {
    let c =
        Certificate::from_der(der).map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    let tbs = &c.tbs_certificate;
    let spki = &tbs.subject_public_key_info;
    let ski = tbs.extensions.iter().flatten().find_map(|x| {
        (x.extn_id == OID_SKI)
            .then(|| SubjectKeyIdentifier::from_der(x.extn_value.as_bytes()).ok())
            .flatten()
            .map(|s| s.0.as_bytes().to_vec())
    });
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<Oid>().ok());
    let t = Trusted {
        subject: tbs.subject.to_string(),
        issuer_der: tbs.issuer.to_der().map_err(|e| bad(e.to_string()))?,
        serial: tbs.serial_number.as_bytes().to_vec(),
        ski,
        key_alg: spki.algorithm.oid,
        curve,
        key: spki.subject_public_key.raw_bytes().to_vec(),
    };
    let subject = t.subject.clone();
    let mut v = TRUSTED.write();
    if !v
        .iter()
        .any(|o| o.issuer_der == t.issuer_der && o.serial == t.serial && o.key == t.key)
    {
        v.push(t);
    }
    Ok(subject)
}

/// Trust every certificate in `bytes` (PEM, one or more, or a single DER certificate).
pub fn add_trusted_certs(bytes: &[u8]) -> Result<Vec<String>, SigError> {
    if !bytes.starts_with(b"-----BEGIN") && !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return add_trusted_cert_der(bytes).map(|s| vec![s]);
    }
    let certs =
        Certificate::load_pem_chain(bytes).map_err(|e| bad(format!("bad PEM certificate: {e}")))?;
    let mut out = Vec::new();
    for c in certs {
        out.push(add_trusted_cert_der(
            &c.to_der().map_err(|e| bad(e.to_string()))?,
        )?);
    }
    Ok(out)
}

/// Trust every certificate file in `dir` (`udm daemon --verity-trusted-certs DIR`): each
/// regular file holds PEM or DER certificates. Returns the trusted subjects.
pub fn load_trusted_dir(dir: &Path) -> Result<Vec<String>, String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        out.extend(add_trusted_certs(&bytes).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    Ok(out)
}

/// Subjects of the trusted certificates.
pub fn trusted_subjects() -> Vec<String> {
    TRUSTED.read().iter().map(|t| t.subject.clone()).collect()
}

fn hash(alg: &Oid, data: &[u8]) -> Result<Vec<u8>, SigError> {
    Ok(match *alg {
        OID_SHA256 => sha2::Sha256::digest(data).to_vec(),
        OID_SHA384 => sha2::Sha384::digest(data).to_vec(),
        OID_SHA512 => sha2::Sha512::digest(data).to_vec(),
        _ => return Err(err(libc::ENOPKG, format!("unsupported digest {alg}"))),
    })
}

/// ring's verification algorithm for a key type, signature algorithm and digest.
fn algorithm(
    t: &Trusted,
    sig_alg: &Oid,
    digest: &Oid,
) -> Result<&'static dyn rs::VerificationAlgorithm, SigError> {
    let unsupported = || {
        err(
            libc::ENOPKG,
            format!("unsupported signature {sig_alg} with digest {digest} for this key"),
        )
    };
    let rsa_ok = [OID_RSA, OID_RSA_SHA256, OID_RSA_SHA384, OID_RSA_SHA512];
    let ec_ok = [OID_EC, OID_ECDSA_SHA256, OID_ECDSA_SHA384];
    match (t.key_alg, t.curve) {
        (OID_RSA, _) if rsa_ok.contains(sig_alg) => Ok(match *digest {
            OID_SHA256 => &rs::RSA_PKCS1_2048_8192_SHA256,
            OID_SHA384 => &rs::RSA_PKCS1_2048_8192_SHA384,
            OID_SHA512 => &rs::RSA_PKCS1_2048_8192_SHA512,
            _ => return Err(unsupported()),
        }),
        (OID_EC, Some(c)) if ec_ok.contains(sig_alg) => Ok(match (c, *digest) {
            (OID_P256, OID_SHA256) => &rs::ECDSA_P256_SHA256_ASN1,
            (OID_P256, OID_SHA384) => &rs::ECDSA_P256_SHA384_ASN1,
            (OID_P384, OID_SHA256) => &rs::ECDSA_P384_SHA256_ASN1,
            (OID_P384, OID_SHA384) => &rs::ECDSA_P384_SHA384_ASN1,
            _ => return Err(unsupported()),
        }),
        _ => Err(unsupported()),
    }
}

fn find_signer(si: &SignerInfo) -> Result<Trusted, SigError> {
    let trusted = TRUSTED.read();
    let found = match &si.sid {
        SignerIdentifier::IssuerAndSerialNumber(is) => {
            let issuer = is.issuer.to_der().map_err(|e| bad(e.to_string()))?;
            let serial = is.serial_number.as_bytes();
            trusted
                .iter()
                .find(|t| t.issuer_der == issuer && t.serial == serial)
                .ok_or_else(|| {
                    format!(
                        "signer (issuer {}, serial {}) is not a trusted certificate",
                        is.issuer,
                        udm_formats::verity::to_hex(serial)
                    )
                })
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            let id = ski.0.as_bytes();
            trusted
                .iter()
                .find(|t| t.ski.as_deref() == Some(id))
                .ok_or_else(|| {
                    format!(
                        "signer (key id {}) is not a trusted certificate",
                        udm_formats::verity::to_hex(id)
                    )
                })
        }
    };
    found.cloned().map_err(|m| err(libc::ENOKEY, m))
}

fn verify_signer(si: &SignerInfo, data: &[u8]) -> Result<(), SigError> {
    let digest = si.digest_alg.oid;
    let signer = find_signer(si)?;
    let alg = algorithm(&signer, &si.signature_algorithm.oid, &digest)?;
    let signed: Vec<u8> = match &si.signed_attrs {
        None => data.to_vec(),
        Some(attrs) => {
            let want = hash(&digest, data)?;
            let md = attrs
                .iter()
                .find(|a| a.oid == OID_MESSAGE_DIGEST)
                .and_then(|a| a.values.iter().next())
                .ok_or_else(|| bad("signed attributes without a message digest"))?;
            let md = md
                .decode_as::<der::asn1::OctetString>()
                .map_err(|e| bad(format!("bad message digest attribute: {e}")))?;
            if md.as_bytes() != want.as_slice() {
                return Err(err(libc::EKEYREJECTED, "message digest doesn't match"));
            }
            attrs.to_der().map_err(|e| bad(e.to_string()))?
        }
    };
    rs::UnparsedPublicKey::new(alg, &signer.key)
        .verify(&signed, si.signature.as_bytes())
        .map_err(|_| {
            err(
                libc::EKEYREJECTED,
                format!("signature by {} does not match", signer.subject),
            )
        })
}

/// Verify the detached PKCS#7 signature `sig` over `data` against the trusted certificates:
/// every signer must be trusted and verify, and there must be at least one.
pub fn verify_pkcs7(data: &[u8], sig: &[u8]) -> Result<(), SigError> {
    if data.is_empty() || sig.is_empty() {
        return Err(err(libc::EINVAL, "empty root hash or signature"));
    }
    let ci = ContentInfo::from_der(sig).map_err(|e| bad(format!("not PKCS#7 (DER): {e}")))?;
    if ci.content_type != OID_SIGNED_DATA {
        return Err(bad(format!(
            "PKCS#7 content is {}, not SignedData",
            ci.content_type
        )));
    }
    let sd: SignedData = ci
        .content
        .decode_as()
        .map_err(|e| bad(format!("bad PKCS#7 SignedData: {e}")))?;
    if let Some(c) = &sd.encap_content_info.econtent {
        // An attached signature: the kernel requires its content to be the data.
        if c.value() != data {
            return Err(err(
                libc::EKEYREJECTED,
                "the signed content is not the root hash",
            ));
        }
    }
    let mut n = 0;
    for si in sd.signer_infos.0.iter() {
        verify_signer(si, data)?;
        n += 1;
    }
    if n == 0 {
        return Err(bad("PKCS#7 message has no signers"));
    }
    Ok(())
}
