//! Encryption at rest for the secret parts of specs (an AWS secret access key, a cluster
//! token): AES-256-GCM with a server key, bound to the field it belongs to.
//!
//! The API seals such a field before the spec is stored: a plain string becomes
//! `sealed:v1:<hex of nonce and ciphertext>`. Sealing is idempotent (a sealed value sent back,
//! as a client that read the object does, stays as it is), and only a holder of the key —
//! the controllers — can [`Sealer::open`] it. The database never holds the plain value.

use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use threeport_core::Error;

const PREFIX: &str = "sealed:v1:";

/// Seals and opens field values with one key. Cheap to share behind an `Arc`.
pub struct Sealer {
    key: LessSafeKey,
    derivation: hmac::Key,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { key: <redacted> }")
    }
}

impl Sealer {
    /// A sealer with `key` (32 bytes).
    pub fn new(key: &[u8; 32]) -> Self {
        let derivation = hmac::Key::new(
            hmac::HMAC_SHA256,
            &[b"threeport-derive:".as_slice(), key].concat(),
        );
        let key = UnboundKey::new(&AES_256_GCM, key).expect("AES-256 takes a 32-byte key");
        Sealer {
            key: LessSafeKey::new(key),
            derivation,
            random: SystemRandom::new(),
        }
    }

    /// A sealer with a fresh random key (tests; values sealed with it die with it).
    pub fn ephemeral() -> Result<Self, Error> {
        Ok(Self::new(&random_key()?))
    }

    /// A key from 64 hex digits (`THREEPORT_ENCRYPTION_KEY`).
    pub fn from_hex(hex_key: &str) -> Result<Self, Error> {
        let bytes = hex::decode(hex_key.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| Error::invalid("encryption_key", "must be 64 hex digits (32 bytes)"))?;
        Ok(Self::new(&bytes))
    }

    /// The key in `path` (64 hex digits), created with a random key (mode 0600) if missing.
    pub fn from_file_or_create(path: &Path) -> Result<Self, Error> {
        if !path.exists() {
            let key = hex::encode(random_key()?);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            use std::io::Write;
            match options.open(path) {
                Ok(mut file) => writeln!(file, "{key}").map_err(|e| {
                    Error::invalid(
                        "encryption_key",
                        format!("cannot write {}: {e}", path.display()),
                    )
                })?,
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::invalid(
                        "encryption_key",
                        format!("cannot create {}: {e}", path.display()),
                    ));
                }
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(
                "encryption_key",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Self::from_hex(&text)
    }

    /// A secret derived from the server's key and `label` (32 hex digits): the same every
    /// time, so a credential a controller generated (a database's master password) can be
    /// made again after a crash instead of being lost.
    pub fn derive(&self, label: &str) -> String {
        let tag = hmac::sign(&self.derivation, label.as_bytes());
        hex::encode(&tag.as_ref()[..16])
    }

    /// Whether `value` is already sealed.
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }

    /// Seals `plain` for the field `field` (the field is authenticated, not encrypted: a
    /// sealed value moved to another field does not open).
    pub fn seal(&self, field: &str, plain: &str) -> Result<String, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| Error::unavailable("the system random generator failed"))?;
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(field.as_bytes()),
                &mut data,
            )
            .map_err(|_| Error::backend("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}", hex::encode(out)))
    }

    /// Opens a value sealed for `field`.
    pub fn open(&self, field: &str, sealed: &str) -> Result<String, Error> {
        let invalid = || Error::invalid(field, "is not a value sealed with this server's key");
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or_else(invalid)?;
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| invalid())?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(field.as_bytes()), &mut data)
            .map_err(|_| invalid())?;
        String::from_utf8(plain.to_vec()).map_err(|_| invalid())
    }
}

fn random_key() -> Result<[u8; 32], Error> {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| Error::unavailable("the system random generator failed"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_key_and_field() {
        let sealer = Sealer::ephemeral().unwrap();
        let sealed = sealer.seal("spec.token", "hunter2").unwrap();
        assert!(Sealer::is_sealed(&sealed));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            sealer.seal("spec.token", "hunter2").unwrap(),
            "fresh nonce each time"
        );
        assert_eq!(sealer.open("spec.token", &sealed).unwrap(), "hunter2");
        assert!(
            sealer.open("spec.other", &sealed).is_err(),
            "bound to its field"
        );
        assert!(
            Sealer::ephemeral()
                .unwrap()
                .open("spec.token", &sealed)
                .is_err(),
            "bound to the key"
        );
        assert!(sealer.open("spec.token", "sealed:v1:00").is_err());
        assert!(Sealer::from_hex("abc").is_err());
        assert_eq!(sealer.derive("a"), sealer.derive("a"));
        assert_ne!(sealer.derive("a"), sealer.derive("b"));
        assert_ne!(
            sealer.derive("a"),
            Sealer::ephemeral().unwrap().derive("a"),
            "bound to the key"
        );
    }
}
