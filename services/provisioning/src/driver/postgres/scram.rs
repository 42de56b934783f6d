//! SCRAM-SHA-256 password verifiers (RFC 5802, RFC 7677), the form
//! PostgreSQL stores passwords in.
//!
//! The driver hashes passwords itself and sends PostgreSQL only the
//! verifier, so a plain password never appears in a statement the server
//! might log. [`matches`] checks a password against a stored verifier the way
//! the server does during authentication.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use marketbridge_core::{Error, Result};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// PBKDF2 iterations; PostgreSQL's default (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;
/// Bytes of random salt per verifier.
const SALT_BYTES: usize = 16;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block (32 bytes), as SCRAM uses it.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1_u32.to_be_bytes());
    let mut block = hmac(password, &first);
    let mut result = block;
    for _ in 1..iterations {
        block = hmac(password, &block);
        for (out, byte) in result.iter_mut().zip(block.iter()) {
            *out ^= byte;
        }
    }
    result
}

fn keys(password: &str, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let salted = salted_password(password.as_bytes(), salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac(&salted, b"Server Key");
    (stored_key, server_key)
}

fn check_password(password: &str) -> Result<()> {
    // SASLprep leaves printable ASCII unchanged; other text would need it.
    if password.is_empty() || !password.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::internal(
            "database passwords must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// The verifier of `password` with the given salt and iteration count:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
pub fn verifier_with_salt(password: &str, salt: &[u8], iterations: u32) -> Result<String> {
    check_password(password)?;
    let (stored_key, server_key) = keys(password, salt, iterations);
    Ok(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(salt),
        BASE64.encode(stored_key),
        BASE64.encode(server_key)
    ))
}

/// The verifier of `password` with a fresh random salt.
pub fn verifier(password: &str) -> Result<String> {
    use rand::RngCore;
    let mut salt = [0_u8; SALT_BYTES];
    rand::thread_rng().fill_bytes(&mut salt);
    verifier_with_salt(password, &salt, ITERATIONS)
}

/// True when `password` is the one `verifier` was made from.
pub fn matches(verifier: &str, password: &str) -> bool {
    let Some(rest) = verifier.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((parameters, stored)) = rest.split_once('$') else {
        return false;
    };
    let (Some((iterations, salt)), Some((stored_key, server_key))) =
        (parameters.split_once(':'), stored.split_once(':'))
    else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(stored_key), Ok(server_key)) = (
        iterations.parse::<u32>(),
        BASE64.decode(salt),
        BASE64.decode(stored_key),
        BASE64.decode(server_key),
    ) else {
        return false;
    };
    if iterations == 0 || check_password(password).is_err() {
        return false;
    }
    let (expected_stored, expected_server) = keys(password, &salt, iterations);
    use subtle::ConstantTimeEq;
    bool::from(expected_stored.ct_eq(&stored_key[..]) & expected_server.ct_eq(&server_key[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_match_only_their_password() {
        let made = verifier("s3cret-Pass_word").unwrap();
        assert!(made.starts_with("SCRAM-SHA-256$4096:"));
        assert!(matches(&made, "s3cret-Pass_word"));
        assert!(!matches(&made, "s3cret-Pass_wore"));
        assert_ne!(made, verifier("s3cret-Pass_word").unwrap(), "fresh salt");
        assert!(!matches("md5abc", "x"));
        assert!(!matches("SCRAM-SHA-256$0:AA==$AA==:AA==", "x"));
        assert!(verifier("with space").is_err());
        assert!(verifier("").is_err());
    }

    #[test]
    fn pbkdf2_matches_the_published_vector() {
        // RFC 7914 §11: PBKDF2-HMAC-SHA-256, P="passwd", S="salt", c=1.
        let derived = salted_password(b"passwd", b"salt", 1);
        assert_eq!(
            hex::encode(derived),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }
}
