//! Encryption at rest of stored entries.
//!
//! A registered server's entry holds secrets (an OAuth2 `client_secret`,
//! bearer tokens, passwords, header values), so with `store.encryption_key`
//! set the whole entry blob is sealed with XChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`):
//!
//! - key: the 32 bytes of `store.encryption_key`, written as 64 hex digits
//!   ([`discovery_config::parse_encryption_key`]); used as given, no KDF, so
//!   it must come from a random source (`openssl rand -hex 32`);
//! - nonce: 24 random bytes from the operating system for every write
//!   (192 bits: random nonces never realistically repeat under one key);
//! - associated data: a version label plus the server name, so a blob copied
//!   onto another row, or read as another format version, fails to open;
//! - stored value: `nonce || ciphertext || 16-byte tag`, with the format
//!   version ([`FORMAT_XCHACHA20POLY1305`]) in a column of its own. The
//!   server name stays in clear: it is the row's key.
//!
//! A wrong key and a tampered blob look the same to an AEAD: opening fails
//! and the caller reports the row by name. Nothing here panics.

use chacha20poly1305::aead::{Aead, Generate, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use discovery_config::{parse_encryption_key, Secret};

/// `format` column: the entry is plain JSON.
pub const FORMAT_PLAINTEXT: i16 = 0;
/// `format` column: the entry is `nonce || ciphertext || tag`, sealed with
/// XChaCha20-Poly1305 under the associated data of [`associated_data`].
pub const FORMAT_XCHACHA20POLY1305: i16 = 1;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Prefix of the associated data of an entry (version 1 of the format).
const ENTRY_AAD_LABEL: &[u8] = b"mcp-discovery/store/servers/v1\0";
/// Associated data of the key check value (see [`EntryCipher::key_check`]).
const KEY_CHECK_AAD: &[u8] = b"mcp-discovery/store/key-check/v1";

/// Why an entry could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// `store.encryption_key` is not a key (never contains the value).
    #[error("store.encryption_key {0}")]
    BadKey(String),
    /// The operating system's random source failed.
    #[error("no random nonce could be drawn from the operating system: {0}")]
    Random(String),
    /// The blob is shorter than a nonce and a tag: not written by this code.
    #[error("the encrypted entry is truncated ({0} bytes)")]
    Truncated(usize),
    /// Authentication failed: another key, or the bytes were changed.
    #[error(
        "the entry cannot be decrypted: store.encryption_key is not the key it was written \
         with, or the stored bytes were changed"
    )]
    Open,
    /// Sealing failed (only for absurd sizes).
    #[error("the entry cannot be encrypted")]
    Seal,
}

/// Seals and opens entry blobs under one key. Cheap to clone.
#[derive(Clone)]
pub struct EntryCipher {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for EntryCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntryCipher([redacted])")
    }
}

impl EntryCipher {
    /// The cipher for `store.encryption_key` (64 hex digits).
    pub fn from_secret(key: &Secret) -> Result<Self, CryptoError> {
        let bytes = parse_encryption_key(key.expose()).map_err(CryptoError::BadKey)?;
        Ok(Self::from_key(&bytes))
    }

    /// The cipher for 32 raw key bytes.
    pub fn from_key(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&Key::from(*key)),
        }
    }

    /// `nonce || ciphertext || tag` of `plaintext`, bound to the row `name`.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_with(&associated_data(name), plaintext)
    }

    /// The plaintext of a blob made by [`Self::seal`] for the same `name`.
    pub fn open(&self, name: &str, blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.open_with(&associated_data(name), blob)
    }

    /// A value that proves knowledge of the key without revealing it: the
    /// tag of an empty message. Stored once per database so that a wrong key
    /// is reported at connect, before any row is read.
    pub fn key_check(&self) -> Result<Vec<u8>, CryptoError> {
        self.seal_with(KEY_CHECK_AAD, &[])
    }

    /// Whether `value` was made by [`Self::key_check`] under this key.
    pub fn verify_key_check(&self, value: &[u8]) -> bool {
        self.open_with(KEY_CHECK_AAD, value).is_ok()
    }

    fn seal_with(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce = XNonce::try_generate().map_err(|e| CryptoError::Random(e.to_string()))?;
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(nonce.as_slice());
        blob.extend_from_slice(&sealed);
        Ok(blob)
    }

    fn open_with(&self, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Truncated(blob.len()));
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| CryptoError::Truncated(blob.len()))?;
        self.cipher
            .decrypt(&nonce, Payload { msg: sealed, aad })
            .map_err(|_| CryptoError::Open)
    }
}

/// Associated data of the entry of row `name`.
fn associated_data(name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(ENTRY_AAD_LABEL.len() + name.len());
    aad.extend_from_slice(ENTRY_AAD_LABEL);
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn cipher() -> EntryCipher {
        EntryCipher::from_secret(&Secret::new(KEY_HEX)).unwrap()
    }

    const ENTRY: &[u8] = br#"{"url":"http://x/mcp","auth":{"type":"bearer","token":"tok-123"}}"#;

    #[test]
    fn round_trip() {
        let c = cipher();
        let blob = c.seal("search", ENTRY).unwrap();
        assert_eq!(blob.len(), NONCE_LEN + ENTRY.len() + TAG_LEN);
        assert!(
            !blob.windows(7).any(|w| w == b"tok-123"),
            "plaintext in the blob"
        );
        assert_eq!(c.open("search", &blob).unwrap(), ENTRY);
        // A fresh nonce every time: the same entry never seals the same way.
        let again = c.seal("search", ENTRY).unwrap();
        assert_ne!(blob, again);
        assert_ne!(blob[..NONCE_LEN], again[..NONCE_LEN]);
        assert_eq!(c.open("search", &again).unwrap(), ENTRY);
        // An empty entry is fine too.
        assert_eq!(c.open("e", &c.seal("e", b"").unwrap()).unwrap(), b"");
    }

    #[test]
    fn tampering_is_detected() {
        let c = cipher();
        let blob = c.seal("search", ENTRY).unwrap();
        for i in [0, NONCE_LEN - 1, NONCE_LEN, NONCE_LEN + 10, blob.len() - 1] {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(c.open("search", &bad), Err(CryptoError::Open)),
                "flipped byte {i} went unnoticed"
            );
        }
        // Truncated, extended, or moved onto another row.
        assert!(matches!(
            c.open("search", &blob[..blob.len() - 1]),
            Err(CryptoError::Open)
        ));
        assert!(matches!(
            c.open("search", &blob[..NONCE_LEN + TAG_LEN - 1]),
            Err(CryptoError::Truncated(_))
        ));
        assert!(matches!(
            c.open("search", &[]),
            Err(CryptoError::Truncated(0))
        ));
        let mut longer = blob.clone();
        longer.push(0);
        assert!(matches!(c.open("search", &longer), Err(CryptoError::Open)));
        assert!(matches!(c.open("other", &blob), Err(CryptoError::Open)));
    }

    #[test]
    fn a_wrong_key_fails_cleanly() {
        let c = cipher();
        let blob = c.seal("search", ENTRY).unwrap();
        let other = EntryCipher::from_key(&[7u8; 32]);
        let err = other.open("search", &blob).unwrap_err();
        assert!(matches!(err, CryptoError::Open));
        assert!(err.to_string().contains("not the key"), "{err}");

        let check = c.key_check().unwrap();
        assert!(c.verify_key_check(&check));
        assert!(!other.verify_key_check(&check));
        // A key check is not an entry, and an entry is not a key check.
        assert!(c.open("search", &check).is_err());
        assert!(!c.verify_key_check(&blob));
    }

    #[test]
    fn bad_keys_are_refused_without_echo() {
        for bad in ["", "abc", &KEY_HEX.replace('0', "g")] {
            let err = EntryCipher::from_secret(&Secret::new(bad)).unwrap_err();
            assert!(matches!(err, CryptoError::BadKey(_)), "{bad:?}");
            let text = err.to_string();
            assert!(text.starts_with("store.encryption_key "), "{text}");
            if bad.len() > 3 {
                assert!(!text.contains(&bad[..10]), "{text}");
            }
        }
        // Upper case and surrounding whitespace are the same key.
        let upper = EntryCipher::from_secret(&Secret::new(format!(" {} ", KEY_HEX.to_uppercase())))
            .unwrap();
        let blob = cipher().seal("s", ENTRY).unwrap();
        assert_eq!(upper.open("s", &blob).unwrap(), ENTRY);
    }
}
