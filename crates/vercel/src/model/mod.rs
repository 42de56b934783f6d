//! The JSON shapes of the Vercel Marketplace, by who sends them.
//!
//! - [`plan`]: `BillingPlan`, shared by the partner API and the Vercel API.
//! - [`partner`]: what Vercel sends to our partner API and what we answer.
//! - [`vercel_api`]: what we send to the Vercel API and what it answers.
//! - [`webhook`]: the webhook envelope and the payloads we act on.
//! - [`error`]: the partner API's error body.
//! - [`flow`]: the simplified `/marketplace/...` flow some storefronts speak.

pub mod error;
pub mod flow;
pub mod partner;
pub mod plan;
pub mod vercel_api;
pub mod webhook;

use serde::{Deserialize, Serialize};

/// A notice shown on the Vercel dashboard next to an installation or
/// resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// How serious it is.
    pub level: NotificationLevel,
    /// Headline, at most 100 characters.
    pub title: String,
    /// Longer text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Link: `https://...`, or `sso:https://...` to open through SSO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
}

/// Longest notification title Vercel shows.
pub const MAX_NOTIFICATION_TITLE: usize = 100;

impl Notification {
    /// A notification with a title cut to the length Vercel shows.
    pub fn new(level: NotificationLevel, title: &str, message: Option<String>) -> Self {
        Self {
            level,
            title: title.chars().take(MAX_NOTIFICATION_TITLE).collect(),
            message: message.filter(|m| !m.is_empty()),
            href: None,
        }
    }
}

/// Severity of a [`Notification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotificationLevel {
    /// Informational.
    Info,
    /// Something needs attention.
    Warn,
    /// Something is broken.
    Error,
}

/// A secret Vercel turns into an environment variable of connected
/// projects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// Variable name (`DATABASE_URL`).
    pub name: String,
    /// Value for every environment without an override.
    pub value: String,
    /// Deprecated prefix; never sent by us, tolerated on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Values per environment (`production`, `preview`, `development`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_overrides: Option<std::collections::BTreeMap<String, String>>,
}

/// A time range, both ends RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// Start.
    pub start: String,
    /// End.
    pub end: String,
}

/// A prepaid balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    /// The resource it belongs to; absent for the installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Display text of the credit (`2,000 Tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit: Option<String>,
    /// Label of the credit (`Tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_label: Option<String>,
    /// Value left, in US cents.
    pub currency_value_in_cents: i64,
}
