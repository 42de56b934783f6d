//! Webhook signatures: `x-vercel-signature` is the lowercase hex HMAC-SHA1
//! of the raw request body, keyed with the integration's client secret.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-vercel-signature";

type HmacSha1 = Hmac<Sha1>;

fn mac(secret: &str) -> HmacSha1 {
    // HMAC accepts keys of any length, so this cannot fail.
    HmacSha1::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!())
}

/// The signature of `body` under `secret`, as Vercel sends it.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// True when `signature` (hex, either case) is the signature of `body`
/// under `secret`. The comparison takes the same time wherever the
/// signatures differ.
pub fn verify(secret: &str, body: &[u8], signature: &str) -> bool {
    if secret.is_empty() {
        return false;
    }
    let Ok(expected) = hex::decode(signature.trim()) else {
        return false;
    };
    let mut mac = mac(secret);
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_reference_implementation() {
        // HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog").
        let signature = sign("key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(signature, "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9");
        assert!(verify(
            "key",
            b"The quick brown fox jumps over the lazy dog",
            &signature
        ));
        assert!(verify(
            "key",
            b"The quick brown fox jumps over the lazy dog",
            &signature.to_uppercase()
        ));
    }

    #[test]
    fn rejects_other_bodies_keys_and_garbage() {
        let signature = sign("secret", b"{}");
        assert!(!verify("secret", b"{ }", &signature));
        assert!(!verify("other", b"{}", &signature));
        assert!(!verify("secret", b"{}", "not-hex"));
        assert!(!verify("secret", b"{}", ""));
        assert!(!verify("", b"{}", &sign("", b"{}")));
    }
}
