//! Encryption at rest for secrets (marketplace tokens, provisioned
//! credentials): AES-256-GCM with a random nonce per value. Ciphertexts are
//! text, `v1:<base64(nonce || ciphertext)>`, so they fit any text column.

use crate::error::{Error, Result};
use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::fmt;

const VERSION_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;

/// Encrypts and decrypts secrets with one key.
#[derive(Clone)]
pub struct Cipher {
    cipher: Aes256Gcm,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    /// A cipher from a base64-encoded 32-byte key.
    pub fn from_base64_key(key: &str) -> Result<Self> {
        let bytes = STANDARD
            .decode(key.trim())
            .map_err(|_| Error::validation("the encryption key is not valid base64"))?;
        if bytes.len() != 32 {
            return Err(Error::validation(format!(
                "the encryption key must be 32 bytes, got {}",
                bytes.len()
            )));
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| Error::validation("the encryption key must be 32 bytes"))?;
        Ok(Self { cipher })
    }

    /// A fresh random key, base64-encoded.
    pub fn generate_base64_key() -> String {
        STANDARD.encode(Aes256Gcm::generate_key(OsRng))
    }

    /// Encrypts `plaintext`.
    pub fn encrypt(&self, plaintext: &str) -> Result<String> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .map_err(|_| Error::internal("encryption failed"))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(format!("{VERSION_PREFIX}{}", STANDARD.encode(sealed)))
    }

    /// Encrypts bytes: the nonce, then the ciphertext with its tag.
    pub fn seal_bytes(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext)
            .map_err(|_| Error::internal("encryption failed"))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Decrypts what [`Cipher::seal_bytes`] produced.
    pub fn open_bytes(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        let corrupt =
            || Error::internal("a stored value cannot be decrypted (wrong key or corrupt value)");
        if sealed.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| corrupt())?;
        self.cipher
            .decrypt(&Nonce::from(nonce), ciphertext)
            .map_err(|_| corrupt())
    }

    /// Decrypts what [`Cipher::encrypt`] produced.
    pub fn decrypt(&self, sealed: &str) -> Result<SecretString> {
        let corrupt =
            || Error::internal("a stored secret cannot be decrypted (wrong key or corrupt value)");
        let encoded = sealed.strip_prefix(VERSION_PREFIX).ok_or_else(corrupt)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| corrupt())?;
        if bytes.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| corrupt())?;
        let plaintext = self
            .cipher
            .decrypt(&Nonce::from(nonce), ciphertext)
            .map_err(|_| corrupt())?;
        String::from_utf8(plaintext)
            .map(SecretString::new)
            .map_err(|_| corrupt())
    }
}

/// A string that never shows up in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is sent or used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret itself, owned.
    pub fn into_exposed(self) -> String {
        self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Random URL-safe token text of `bytes` random bytes (passwords, secrets).
pub fn random_token(bytes: usize) -> String {
    use rand::RngCore;
    let mut buffer = vec![0_u8; bytes];
    rand::thread_rng().fill_bytes(&mut buffer);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer)
}

/// Lowercase hex SHA-256 of `data` (request fingerprints).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypts_with_fresh_nonces_and_decrypts() {
        let cipher = Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap();
        let first = cipher.encrypt("token-123").unwrap();
        let second = cipher.encrypt("token-123").unwrap();
        assert_ne!(first, second);
        assert!(!first.contains("token-123"));
        assert_eq!(cipher.decrypt(&first).unwrap().expose(), "token-123");
    }

    #[test]
    fn wrong_key_or_tampering_fails() {
        let cipher = Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap();
        let other = Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap();
        let sealed = cipher.encrypt("secret").unwrap();
        assert!(other.decrypt(&sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(cipher.decrypt(&tampered).is_err());
        assert!(cipher.decrypt("plain").is_err());
    }

    #[test]
    fn bad_keys_are_rejected_and_secrets_hide() {
        assert!(Cipher::from_base64_key("short").is_err());
        assert!(Cipher::from_base64_key("c2hvcnQ=").is_err());
        let secret = SecretString::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "SecretString(***) ***");
        assert_eq!(random_token(24).len(), 32);
    }
}
