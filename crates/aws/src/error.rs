//! How an AWS call failed: the service's error (`{"__type", "message"}`)
//! or no usable answer at all.

use marketbridge_core::{Error, ErrorCode};

/// Error names of the Marketplace APIs (the part of `__type` after `#`).
pub mod names {
    /// The registration token is not valid.
    pub const INVALID_TOKEN: &str = "InvalidTokenException";
    /// The registration token expired (or was resubmitted).
    pub const EXPIRED_TOKEN: &str = "ExpiredTokenException";
    /// Too many requests.
    pub const THROTTLING: &str = "ThrottlingException";
    /// AWS failed.
    pub const INTERNAL: &str = "InternalServiceErrorException";
    /// A usage record's timestamp is outside the accepted window.
    pub const TIMESTAMP_OUT_OF_BOUNDS: &str = "TimestampOutOfBoundsException";
    /// The product code does not match.
    pub const INVALID_PRODUCT_CODE: &str = "InvalidProductCodeException";
    /// A dimension is not in the listing.
    pub const INVALID_USAGE_DIMENSION: &str = "InvalidUsageDimensionException";
    /// The license is not valid for the record.
    pub const INVALID_LICENSE: &str = "InvalidLicenseException";
    /// A bad tag.
    pub const INVALID_TAG: &str = "InvalidTagException";
    /// Allocations do not add up.
    pub const INVALID_USAGE_ALLOCATIONS: &str = "InvalidUsageAllocationsException";
    /// A bad parameter.
    pub const INVALID_PARAMETER: &str = "InvalidParameterException";
    /// The API is disabled in that region.
    pub const DISABLED_API: &str = "DisabledApiException";
    /// The signature or credentials were refused.
    pub const INVALID_SIGNATURE: &str = "InvalidSignatureException";
    /// The credentials are unknown.
    pub const UNRECOGNIZED_CLIENT: &str = "UnrecognizedClientException";
    /// The legacy customer identifier is unknown.
    pub const INVALID_CUSTOMER_IDENTIFIER: &str = "InvalidCustomerIdentifierException";
}

/// A failed call to AWS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// AWS answered with an error.
    #[error("aws answered {status} {name}: {message}")]
    Service {
        /// HTTP status.
        status: u16,
        /// The error name, e.g. `ThrottlingException`.
        name: String,
        /// AWS's message.
        message: String,
        /// `x-amzn-RequestId`.
        request_id: String,
    },
    /// No usable answer (network, timeout, unreadable body).
    #[error("aws could not be reached: {0}")]
    Transport(String),
}

impl CallError {
    /// The error name, when AWS gave one.
    pub fn name(&self) -> Option<&str> {
        match self {
            CallError::Service { name, .. } => Some(name),
            CallError::Transport(_) => None,
        }
    }

    /// True when the same call may succeed later unchanged.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Transport(_) => true,
            CallError::Service { status, name, .. } => {
                *status >= 500
                    || *status == 429
                    || name == names::THROTTLING
                    || name == names::INTERNAL
            }
        }
    }

    /// True when AWS refused a registration token.
    pub fn is_token_refused(&self) -> bool {
        matches!(
            self.name(),
            Some(names::INVALID_TOKEN | names::EXPIRED_TOKEN)
        )
    }
}

/// The error name from `__type` (`ns#Name:extra` → `Name`) or the
/// `x-amzn-ErrorType` header.
pub fn error_name(raw: &str) -> String {
    let after_hash = raw.rsplit('#').next().unwrap_or(raw);
    after_hash
        .split(':')
        .next()
        .unwrap_or(after_hash)
        .trim()
        .to_owned()
}

impl From<CallError> for Error {
    fn from(error: CallError) -> Self {
        let code = match &error {
            CallError::Transport(_) => ErrorCode::Unavailable,
            e if e.is_transient() => ErrorCode::Unavailable,
            e if e.is_token_refused() => ErrorCode::Unauthenticated,
            CallError::Service { name, .. }
                if name == names::INVALID_SIGNATURE || name == names::UNRECOGNIZED_CLIENT =>
            {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Unprocessable,
        };
        Error::new(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_drop_namespace_and_suffix() {
        assert_eq!(
            error_name("com.amazonaws.marketplace#ThrottlingException:http://x"),
            "ThrottlingException"
        );
        assert_eq!(error_name("InvalidTokenException"), "InvalidTokenException");
    }

    #[test]
    fn refused_tokens_are_unauthenticated_and_throttling_transient() {
        let refused = CallError::Service {
            status: 400,
            name: names::EXPIRED_TOKEN.into(),
            message: "expired".into(),
            request_id: String::new(),
        };
        assert_eq!(Error::from(refused).code(), ErrorCode::Unauthenticated);
        let throttled = CallError::Service {
            status: 400,
            name: names::THROTTLING.into(),
            message: "slow down".into(),
            request_id: String::new(),
        };
        assert!(throttled.is_transient());
        assert_eq!(Error::from(throttled).code(), ErrorCode::Unavailable);
    }
}
