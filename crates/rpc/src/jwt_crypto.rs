//! RSA signature checks of JSON Web Tokens with `ring`.
//!
//! Every token a marketplace sends (Vercel's OIDC tokens, Google's push and
//! signup tokens) is RSA-signed and checked against a key from a JWKS. The
//! pure-Rust RSA of `jsonwebtoken`'s default provider costs several times
//! what `ring` does (`ring` is already in the tree for TLS), and was the
//! largest share of a partner call's CPU. This provider checks RSA
//! signatures of keys given as modulus and exponent (what a JWKS holds) with
//! `ring`, and leaves every other key and algorithm, and all signing, to the
//! default provider, so nothing else changes.

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier};
use jsonwebtoken::signature::{Error as SignatureError, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use ring::signature::{self as ring_signature, RsaParameters, RsaPublicKeyComponents};
use std::sync::OnceLock;

/// Makes `ring` check the RSA signatures of JWKS keys, once per process.
/// Calling it again does nothing.
pub fn install() {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| {
        let fallback = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
        CryptoProvider {
            signer_factory: fallback.signer_factory,
            verifier_factory,
            key_utils: fallback.key_utils.clone(),
        }
    });
    // Installed already (by an earlier call): nothing to do.
    let _ = provider.install_default();
}

fn ring_parameters(algorithm: Algorithm) -> Option<&'static RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &ring_signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &ring_signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring_signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring_signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &ring_signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &ring_signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn verifier_factory(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    if let (Some(parameters), DecodingKeyKind::RsaModulusExponent { n, e }) =
        (ring_parameters(*algorithm), key.kind())
    {
        return Ok(Box::new(RingRsaVerifier {
            algorithm: *algorithm,
            parameters,
            n: n.clone(),
            e: e.clone(),
        }));
    }
    (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key)
}

struct RingRsaVerifier {
    algorithm: Algorithm,
    parameters: &'static RsaParameters,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl Verifier<Vec<u8>> for RingRsaVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), SignatureError> {
        RsaPublicKeyComponents {
            n: &self.n,
            e: &self.e,
        }
        .verify(self.parameters, message, signature)
        .map_err(|_| SignatureError::new())
    }
}

impl JwtVerifier for RingRsaVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header, Validation, decode, encode};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Claims {
        sub: String,
        exp: u64,
    }

    /// A fresh 2048-bit RSA key: its signing half and its public modulus
    /// and exponent, as a JWKS gives them.
    fn key_pair() -> (EncodingKey, Vec<u8>, Vec<u8>) {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        let public = private.to_public_key();
        (
            EncodingKey::from_rsa_der(der.as_bytes()),
            public.n().to_bytes_be(),
            public.e().to_bytes_be(),
        )
    }

    #[test]
    fn ring_checks_what_the_default_provider_signed_and_refuses_tampering() {
        install();
        let (encoding, n, e) = key_pair();
        let key = DecodingKey::from_rsa_raw_components(&n, &e);
        let claims = Claims {
            sub: "account:01".into(),
            exp: 4_000_000_000,
        };
        for algorithm in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS256] {
            let token = encode(&Header::new(algorithm), &claims, &encoding).unwrap();
            // `ring` itself checks the signature...
            let verifier = verifier_factory(&algorithm, &key).unwrap();
            assert_eq!(verifier.algorithm(), algorithm);
            let (message, signature) = token.rsplit_once('.').unwrap();
            let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
            verifier.verify(message.as_bytes(), &signature).unwrap();
            let mut flipped = signature.clone();
            flipped[10] ^= 1;
            assert!(verifier.verify(message.as_bytes(), &flipped).is_err());
            // ...and does so for `decode`, once installed.
            let decoded = decode::<Claims>(&token, &key, &Validation::new(algorithm)).unwrap();
            assert_eq!(decoded.claims, claims, "{algorithm:?}");
            let forged = format!("{message}x.{}", token.rsplit('.').next().unwrap());
            assert!(decode::<Claims>(&forged, &key, &Validation::new(algorithm)).is_err());
        }
        // Another key's signature is refused.
        let (other, _, _) = key_pair();
        let token = encode(&Header::new(Algorithm::RS256), &claims, &other).unwrap();
        let refused = decode::<Claims>(&token, &key, &Validation::new(Algorithm::RS256));
        assert!(refused.is_err());
    }
}
