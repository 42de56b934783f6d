//! The seller account's credentials: from configuration, else the standard
//! AWS environment variables. Never logged.

use marketbridge_config::AwsOptions;
use marketbridge_core::crypto::SecretString;
use marketbridge_core::{Error, Result};

/// An access key (with a session token for temporary credentials).
#[derive(Clone)]
pub struct AwsCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: SecretString,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<SecretString>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AwsCredentials {
    /// Static credentials.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: SecretString::new(secret_access_key.into()),
            session_token: session_token
                .filter(|t| !t.is_empty())
                .map(SecretString::new),
        }
    }

    /// `aws.access_key_id` / `aws.secret_access_key` / `aws.session_token`
    /// when set, else `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN`.
    pub fn from_options(options: &AwsOptions) -> Result<Self> {
        Self::resolve(options, |name| std::env::var(name).ok())
    }

    fn resolve(options: &AwsOptions, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let configured = !options.access_key_id.trim().is_empty();
        let (key, secret, token) = if configured {
            (
                options.access_key_id.trim().to_owned(),
                options.secret_access_key.clone(),
                Some(options.session_token.clone()),
            )
        } else {
            (
                env("AWS_ACCESS_KEY_ID").unwrap_or_default(),
                env("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
                env("AWS_SESSION_TOKEN"),
            )
        };
        if key.trim().is_empty() || secret.trim().is_empty() {
            return Err(Error::validation(
                "aws.product_code is set but no AWS credentials are: set aws.access_key_id and aws.secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
        }
        Ok(Self::new(
            key.trim(),
            secret.trim(),
            token.map(|t| t.trim().to_owned()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_wins_over_the_environment() {
        let options = AwsOptions {
            access_key_id: "AKIACONFIG".into(),
            secret_access_key: "configured".into(),
            ..AwsOptions::default()
        };
        let env = |name: &str| Some(format!("env-{name}"));
        let credentials = AwsCredentials::resolve(&options, env).unwrap();
        assert_eq!(credentials.access_key_id, "AKIACONFIG");
        assert!(credentials.session_token.is_none());
        let from_env = AwsCredentials::resolve(&AwsOptions::default(), env).unwrap();
        assert_eq!(from_env.access_key_id, "env-AWS_ACCESS_KEY_ID");
        assert_eq!(
            from_env.session_token.unwrap().expose(),
            "env-AWS_SESSION_TOKEN"
        );
        assert!(AwsCredentials::resolve(&AwsOptions::default(), |_| None).is_err());
    }
}
