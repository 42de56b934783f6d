//! Signature Version 4 through the `aws-sigv4` crate: signing our calls, and
//! checking a received call's signature (the simulator's side) by signing
//! the same canonical request again.

use crate::AwsCredentials;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use chrono::{DateTime, NaiveDateTime, Utc};
use std::time::SystemTime;

/// Format of `X-Amz-Date`.
pub const AMZ_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

fn identity(credentials: &AwsCredentials) -> Identity {
    Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.expose().to_owned(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        None,
        "marketbridge",
    )
    .into()
}

/// The headers to add to a `POST` of `body` to `url` carrying `headers`,
/// signed for `region` and `service` at `time`: `authorization`,
/// `x-amz-date`, and `x-amz-security-token` with temporary credentials.
pub fn sign_headers(
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    time: SystemTime,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let identity = identity(credentials);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("signable request: {e}"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    let (added, _params) = instructions.into_parts();
    Ok(added
        .into_iter()
        .map(|header| (header.name().to_owned(), header.value().to_owned()))
        .collect())
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Access key id.
    pub access_key_id: String,
    /// `yyyymmdd` of the scope.
    pub date: String,
    /// Region of the scope.
    pub region: String,
    /// Service of the scope.
    pub service: String,
    /// Signed header names, lower case.
    pub signed_headers: Vec<String>,
    /// The signature, hex.
    pub signature: String,
}

impl Authorization {
    /// Reads the header; `None` when it is not a SigV4 authorization.
    pub fn parse(header: &str) -> Option<Self> {
        let rest = header.trim().strip_prefix("AWS4-HMAC-SHA256")?.trim();
        let mut credential = None;
        let mut signed = None;
        let mut signature = None;
        for part in rest.split(',') {
            let (key, value) = part.trim().split_once('=')?;
            match key.trim() {
                "Credential" => credential = Some(value.trim().to_owned()),
                "SignedHeaders" => signed = Some(value.trim().to_owned()),
                "Signature" => signature = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        let credential = credential?;
        let mut scope = credential.split('/');
        let access_key_id = scope.next()?.to_owned();
        let date = scope.next()?.to_owned();
        let region = scope.next()?.to_owned();
        let service = scope.next()?.to_owned();
        if scope.next()? != "aws4_request" || scope.next().is_some() {
            return None;
        }
        Some(Self {
            access_key_id,
            date,
            region,
            service,
            signed_headers: signed?.split(';').map(|h| h.to_ascii_lowercase()).collect(),
            signature: signature?,
        })
    }
}

/// Why a received signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No or an unreadable `Authorization` header, or no `X-Amz-Date`.
    #[error("the request is not signed with SigV4")]
    Unsigned,
    /// The access key is not the expected one.
    #[error("the access key is unknown")]
    UnknownKey,
    /// The scope names another region or service.
    #[error("the credential scope does not match {0}")]
    WrongScope(String),
    /// The time is too far from now.
    #[error("the signature is expired or from the future")]
    Skewed,
    /// The signature does not match.
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks a received `POST` of `body` to `url` with `headers` (name, value;
/// any case) against `credentials`, `region` and `service`, at `now`.
pub fn verify(
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    now: DateTime<Utc>,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), Refusal> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let authorization = Authorization::parse(header("authorization").ok_or(Refusal::Unsigned)?)
        .ok_or(Refusal::Unsigned)?;
    if authorization.access_key_id != credentials.access_key_id {
        return Err(Refusal::UnknownKey);
    }
    if authorization.region != region || authorization.service != service {
        return Err(Refusal::WrongScope(format!("{region}/{service}")));
    }
    let amz_date = header("x-amz-date").ok_or(Refusal::Unsigned)?;
    let signed_at = NaiveDateTime::parse_from_str(amz_date, AMZ_DATE_FORMAT)
        .map_err(|_| Refusal::Unsigned)?
        .and_utc();
    if (now - signed_at).num_minutes().abs() > 15 {
        return Err(Refusal::Skewed);
    }
    if !authorization
        .date
        .eq_ignore_ascii_case(&signed_at.format("%Y%m%d").to_string())
    {
        return Err(Refusal::Mismatch);
    }
    let presented_token = header("x-amz-security-token");
    let expected_token = credentials.session_token.as_ref().map(|t| t.expose());
    if presented_token != expected_token {
        return Err(Refusal::Mismatch);
    }
    let signed: Vec<(&str, &str)> = authorization
        .signed_headers
        .iter()
        .filter(|name| !matches!(name.as_str(), "x-amz-date" | "x-amz-security-token"))
        .map(|name| header(name).map(|value| (name.as_str(), value)))
        .collect::<Option<_>>()
        .ok_or(Refusal::Mismatch)?;
    let again = sign_headers(
        credentials,
        region,
        service,
        SystemTime::from(signed_at),
        url,
        &signed,
        body,
    )
    .map_err(|_| Refusal::Mismatch)?;
    let expected = again
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| Authorization::parse(value))
        .ok_or(Refusal::Mismatch)?;
    let same_headers = expected.signed_headers == authorization.signed_headers;
    let same_signature: bool = subtle::ConstantTimeEq::ct_eq(
        expected.signature.as_bytes(),
        authorization.signature.as_bytes(),
    )
    .into();
    if same_headers && same_signature {
        Ok(())
    } else {
        Err(Refusal::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> AwsCredentials {
        AwsCredentials::new("AKIDEXAMPLE", "secret-key", None)
    }

    fn signed(body: &[u8], time: SystemTime) -> Vec<(String, String)> {
        let base = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "AWSMPMeteringService.ResolveCustomer"),
            ("host", "127.0.0.1:9000"),
        ];
        let mut headers: Vec<(String, String)> = base
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        headers.extend(
            sign_headers(
                &credentials(),
                "us-east-1",
                "aws-marketplace",
                time,
                "http://127.0.0.1:9000/",
                &base,
                body,
            )
            .unwrap(),
        );
        headers
    }

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let now = Utc::now();
        let body = br#"{"RegistrationToken":"t"}"#;
        let headers = signed(body, SystemTime::from(now));
        let check = |body: &[u8], headers: &[(String, String)], key: &AwsCredentials| {
            verify(
                key,
                "us-east-1",
                "aws-marketplace",
                now,
                "http://127.0.0.1:9000/",
                headers,
                body,
            )
        };
        assert_eq!(check(body, &headers, &credentials()), Ok(()));
        assert_eq!(
            check(br#"{"RegistrationToken":"u"}"#, &headers, &credentials()),
            Err(Refusal::Mismatch)
        );
        let other = AwsCredentials::new("AKIDEXAMPLE", "other-secret", None);
        assert_eq!(check(body, &headers, &other), Err(Refusal::Mismatch));
        let mut retargeted = headers.clone();
        retargeted[1].1 = "AWSMPMeteringService.BatchMeterUsage".into();
        assert_eq!(
            check(body, &retargeted, &credentials()),
            Err(Refusal::Mismatch)
        );
        let unsigned: Vec<_> = headers[..3].to_vec();
        assert_eq!(
            check(body, &unsigned, &credentials()),
            Err(Refusal::Unsigned)
        );
        let old = signed(body, SystemTime::from(now - chrono::Duration::hours(1)));
        assert_eq!(check(body, &old, &credentials()), Err(Refusal::Skewed));
    }
}
