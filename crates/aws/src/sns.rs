//! Legacy SNS deliveries over HTTPS: the envelope, the string AWS signs,
//! and signature verification with the signing certificate, fetched only
//! from URLs the configured pattern allows and cached per URL.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Message types (`Type`, `x-amz-sns-message-type`).
pub mod message_type {
    /// A notification.
    pub const NOTIFICATION: &str = "Notification";
    /// Confirm the subscription by visiting `SubscribeURL`.
    pub const SUBSCRIPTION_CONFIRMATION: &str = "SubscriptionConfirmation";
    /// The subscription was removed.
    pub const UNSUBSCRIBE_CONFIRMATION: &str = "UnsubscribeConfirmation";
}

/// An SNS HTTP(S) delivery body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    /// [`message_type`].
    #[serde(rename = "Type")]
    pub kind: String,
    /// Unique per message; the deduplication key.
    pub message_id: String,
    /// Confirmation token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The topic.
    pub topic_arn: String,
    /// Subject, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The message (JSON text for Marketplace).
    pub message: String,
    /// Where to confirm a subscription.
    #[serde(
        default,
        rename = "SubscribeURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub subscribe_url: Option<String>,
    /// Where to unsubscribe.
    #[serde(
        default,
        rename = "UnsubscribeURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub unsubscribe_url: Option<String>,
    /// When it was published.
    pub timestamp: String,
    /// `1` (SHA1withRSA) or `2` (SHA256withRSA).
    pub signature_version: String,
    /// Base64 signature.
    pub signature: String,
    /// The signing certificate's URL.
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
}

/// Why a delivery is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not an SNS message, or a field the type needs is missing.
    #[error("not a readable SNS message: {0}")]
    Unreadable(String),
    /// The certificate URL is not one we trust.
    #[error("the signing certificate URL is not trusted")]
    UntrustedCertificate,
    /// The certificate could not be fetched (transient).
    #[error("the signing certificate could not be fetched: {0}")]
    CertificateUnavailable(String),
    /// The certificate is unreadable or not valid now.
    #[error("the signing certificate is not usable: {0}")]
    BadCertificate(String),
    /// Unknown signature version.
    #[error("unknown signature version")]
    UnknownVersion,
    /// The signature does not match.
    #[error("the signature does not match")]
    BadSignature,
}

impl SnsMessage {
    /// Reads a delivery body.
    pub fn parse(body: &[u8]) -> Result<Self, Refusal> {
        serde_json::from_slice(body).map_err(|e| Refusal::Unreadable(e.to_string()))
    }

    /// The text SNS signs: `key\nvalue\n` pairs in the order of the type.
    pub fn string_to_sign(&self) -> Result<String, Refusal> {
        let mut text = String::new();
        let mut add = |key: &str, value: Option<&str>, required: bool| -> Result<(), Refusal> {
            match value {
                Some(value) => {
                    text.push_str(key);
                    text.push('\n');
                    text.push_str(value);
                    text.push('\n');
                    Ok(())
                }
                None if required => Err(Refusal::Unreadable(format!("{key} is missing"))),
                None => Ok(()),
            }
        };
        match self.kind.as_str() {
            message_type::NOTIFICATION => {
                add("Message", Some(&self.message), true)?;
                add("MessageId", Some(&self.message_id), true)?;
                add("Subject", self.subject.as_deref(), false)?;
                add("Timestamp", Some(&self.timestamp), true)?;
                add("TopicArn", Some(&self.topic_arn), true)?;
                add("Type", Some(&self.kind), true)?;
            }
            message_type::SUBSCRIPTION_CONFIRMATION | message_type::UNSUBSCRIBE_CONFIRMATION => {
                add("Message", Some(&self.message), true)?;
                add("MessageId", Some(&self.message_id), true)?;
                add("SubscribeURL", self.subscribe_url.as_deref(), true)?;
                add("Timestamp", Some(&self.timestamp), true)?;
                add("Token", self.token.as_deref(), true)?;
                add("TopicArn", Some(&self.topic_arn), true)?;
                add("Type", Some(&self.kind), true)?;
            }
            other => return Err(Refusal::Unreadable(format!("unknown type `{other}`"))),
        }
        Ok(text)
    }

    /// Checks the signature with a certificate's RSA public key (PKCS#1
    /// `RSAPublicKey` DER).
    pub fn verify_with_key(&self, public_key: &[u8]) -> Result<(), Refusal> {
        let algorithm = match self.signature_version.trim() {
            "1" => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &RSA_PKCS1_2048_8192_SHA256,
            _ => return Err(Refusal::UnknownVersion),
        };
        let signature = STANDARD
            .decode(self.signature.trim())
            .map_err(|_| Refusal::BadSignature)?;
        let text = self.string_to_sign()?;
        UnparsedPublicKey::new(algorithm, public_key)
            .verify(text.as_bytes(), &signature)
            .map_err(|_| Refusal::BadSignature)
    }
}

/// The RSA public key of a PEM certificate valid at `now` (epoch seconds).
pub fn public_key_of(pem: &[u8], now: i64) -> Result<Vec<u8>, Refusal> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| Refusal::BadCertificate(format!("not PEM: {e}")))?;
    let certificate = pem
        .parse_x509()
        .map_err(|e| Refusal::BadCertificate(format!("not X.509: {e}")))?;
    let validity = certificate.validity();
    if now < validity.not_before.timestamp() || now > validity.not_after.timestamp() {
        return Err(Refusal::BadCertificate("expired or not yet valid".into()));
    }
    Ok(certificate.public_key().subject_public_key.data.to_vec())
}

/// Which certificate URLs are trusted: `scheme://host[:port]/path` where
/// `*` in the host stands for one DNS label and in the path for anything.
/// AWS's: `https://sns.*.amazonaws.com/*.pem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePolicy {
    scheme: String,
    host: String,
    port: Option<u16>,
    path: String,
}

/// The default trusted certificate URLs.
pub const DEFAULT_CERTIFICATE_PATTERN: &str = "https://sns.*.amazonaws.com/*.pem";

fn glob(pattern: &str, text: &str, star_stops_at: Option<char>) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(after) = text.strip_prefix(prefix) else {
                return false;
            };
            (0..=after.len())
                .filter(|i| after.is_char_boundary(*i))
                .any(|i| {
                    let taken = &after[..i];
                    let allowed =
                        !taken.is_empty() && star_stops_at.is_none_or(|stop| !taken.contains(stop));
                    allowed && glob(rest, &after[i..], star_stops_at)
                })
        }
    }
}

impl CertificatePolicy {
    /// Reads a pattern.
    pub fn parse(pattern: &str) -> Option<Self> {
        let (scheme, rest) = pattern.trim().split_once("://")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            None => (authority, None),
        };
        if host.is_empty() || !matches!(scheme, "https" | "http") {
            return None;
        }
        Some(Self {
            scheme: scheme.to_owned(),
            host: host.to_ascii_lowercase(),
            port,
            path: format!("/{path}"),
        })
    }

    /// True when `url` is on the pattern's scheme, host and port (a
    /// `SubscribeURL` is visited only there).
    pub fn allows_host(&self, url: &str) -> bool {
        let Ok(parsed) = url::Url::parse(url.trim()) else {
            return false;
        };
        parsed.scheme() == self.scheme
            && parsed.username().is_empty()
            && parsed.password().is_none()
            && parsed.port() == self.port
            && parsed
                .host_str()
                .is_some_and(|host| glob(&self.host, &host.to_ascii_lowercase(), Some('.')))
    }

    /// True when `url` may be fetched.
    pub fn allows(&self, url: &str) -> bool {
        let Ok(parsed) = url::Url::parse(url.trim()) else {
            return false;
        };
        if parsed.scheme() != self.scheme
            || !parsed.username().is_empty()
            || parsed.password().is_some()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || parsed.port() != self.port
        {
            return false;
        }
        let Some(host) = parsed.host_str() else {
            return false;
        };
        glob(&self.host, &host.to_ascii_lowercase(), Some('.'))
            && glob(&self.path, parsed.path(), None)
            && !parsed.path().contains("..")
    }
}

/// Verifies SNS messages, fetching each trusted certificate once.
#[derive(Clone)]
pub struct SnsVerifier {
    http: reqwest::Client,
    policy: CertificatePolicy,
    keys: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl SnsVerifier {
    /// A verifier trusting certificates under `policy`.
    pub fn new(http: reqwest::Client, policy: CertificatePolicy) -> Self {
        Self {
            http,
            policy,
            keys: Arc::default(),
        }
    }

    /// Checks a message's signature at `now` (epoch seconds).
    pub async fn verify(&self, message: &SnsMessage, now: i64) -> Result<(), Refusal> {
        if !self.policy.allows(&message.signing_cert_url) {
            return Err(Refusal::UntrustedCertificate);
        }
        // The text must be complete before anything is fetched.
        message.string_to_sign()?;
        let cached = self
            .keys
            .lock()
            .map_err(|_| Refusal::CertificateUnavailable("cache poisoned".into()))?
            .get(&message.signing_cert_url)
            .cloned();
        let key = match cached {
            Some(key) => key,
            None => {
                let response = self
                    .http
                    .get(&message.signing_cert_url)
                    .send()
                    .await
                    .map_err(|e| Refusal::CertificateUnavailable(e.to_string()))?;
                if !response.status().is_success() {
                    return Err(Refusal::CertificateUnavailable(format!(
                        "status {}",
                        response.status()
                    )));
                }
                let pem = response
                    .bytes()
                    .await
                    .map_err(|e| Refusal::CertificateUnavailable(e.to_string()))?;
                let key = public_key_of(&pem, now)?;
                if let Ok(mut keys) = self.keys.lock() {
                    keys.insert(message.signing_cert_url.clone(), key.clone());
                }
                key
            }
        };
        message.verify_with_key(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_certificates_at_the_pattern_are_trusted() {
        let aws = CertificatePolicy::parse(DEFAULT_CERTIFICATE_PATTERN).unwrap();
        assert!(
            aws.allows("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem")
        );
        for refused in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/x.pem",
            "https://evil.com/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.evil.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.pem?u=1",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://sns.a.b.amazonaws.com/x.pem",
        ] {
            assert!(!aws.allows(refused), "{refused}");
        }
        let local = CertificatePolicy::parse("http://127.0.0.1:4000/sns/*").unwrap();
        assert!(local.allows("http://127.0.0.1:4000/sns/cert.pem"));
        assert!(!local.allows("http://127.0.0.1:4001/sns/cert.pem"));
    }

    #[test]
    fn the_string_to_sign_follows_the_type() {
        let message = SnsMessage {
            kind: message_type::NOTIFICATION.into(),
            message_id: "m".into(),
            topic_arn: "t".into(),
            message: "{}".into(),
            timestamp: "2026-11-01T00:00:00.000Z".into(),
            signature_version: "1".into(),
            ..SnsMessage::default()
        };
        assert_eq!(
            message.string_to_sign().unwrap(),
            "Message\n{}\nMessageId\nm\nTimestamp\n2026-11-01T00:00:00.000Z\nTopicArn\nt\nType\nNotification\n"
        );
        let confirmation = SnsMessage {
            kind: message_type::SUBSCRIPTION_CONFIRMATION.into(),
            ..message
        };
        assert!(
            confirmation.string_to_sign().is_err(),
            "token and url are required"
        );
    }
}
