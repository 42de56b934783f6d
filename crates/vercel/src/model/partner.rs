//! The partner API: what Vercel sends to the provider, and what the provider
//! answers.

use super::plan::BillingPlan;
use super::{Balance, Notification, Secret};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `PUT /v1/installations/{installationId}`.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpsertInstallation {
    /// Permission scopes granted to the integration.
    pub scopes: Vec<String>,
    /// Policy id → when it was accepted (RFC 3339).
    pub accepted_policies: BTreeMap<String, String>,
    /// The installation's token for the Vercel API.
    pub credentials: InstallationCredentials,
    /// The team behind the installation.
    #[serde(default)]
    pub account: Option<InstallationAccount>,
}

/// The installation's Vercel API credential (snake_case on the wire).
#[derive(Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct InstallationCredentials {
    /// The bearer token; it does not expire.
    pub access_token: String,
    /// Token type (`Bearer`).
    #[serde(default)]
    pub token_type: Option<String>,
}

impl std::fmt::Debug for InstallationCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallationCredentials")
            .field("access_token", &"***")
            .field("token_type", &self.token_type)
            .finish()
    }
}

/// The team behind an installation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstallationAccount {
    /// Team name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Team URL on Vercel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Main contact; Vercel may send null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
}

/// A contact person.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Answer of `GET /v1/installations/{id}` (and of PATCH): the installation's
/// plan when billing is per installation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Installation {
    /// The installation-level plan; absent when billing is per resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_plan: Option<BillingPlan>,
    /// A notice for the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
}

/// `PATCH /v1/installations/{installationId}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateInstallation {
    /// The installation-level plan to switch to.
    #[serde(default)]
    pub billing_plan_id: Option<String>,
}

/// Optional body of `DELETE /v1/installations/{installationId}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteInstallation {
    /// Delete every resource of the installation too.
    #[serde(default)]
    pub cascade_resource_deletion: Option<bool>,
    /// Why (values undocumented).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Answer of `DELETE /v1/installations/{installationId}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletedInstallation {
    /// True when nothing is left to invoice (Vercel skips the 24 h wait).
    pub finalized: bool,
}

/// `POST /v1/installations/{installationId}/resources`.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"productId": "database", "name": "main-db", "metadata": {"region": "fra1"}, "billingPlanId": "free"}))]
pub struct ProvisionResource {
    /// Product id or slug.
    pub product_id: String,
    /// Customer-chosen name.
    pub name: String,
    /// Values of the product's metadata schema.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// The chosen plan.
    pub billing_plan_id: String,
    /// The Deploy Button's `external-id`, if any.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Protocol settings (`authentication.appUrls`, `experimentation`);
    /// kept and served back on the resource.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub protocol_settings: Option<Value>,
}

/// `PATCH /v1/installations/{installationId}/resources/{resourceId}`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"name": "renamed"}))]
pub struct UpdateResource {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New metadata (replaces the stored one).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// New plan.
    #[serde(default)]
    pub billing_plan_id: Option<String>,
    /// Deprecated by Vercel; tolerated and ignored.
    #[serde(default)]
    pub status: Option<Value>,
    /// Protocol settings: each part given (`authentication.appUrls`,
    /// `experimentation`) replaces the stored one.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub protocol_settings: Option<Value>,
}

/// Lifecycle of a resource as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResourceStatus {
    /// Usable.
    Ready,
    /// Being provisioned.
    Pending,
    /// Provisioned; setup steps left.
    Onboarding,
    /// Access refused.
    Suspended,
    /// Access restored.
    Resumed,
    /// Deleted.
    Uninstalled,
    /// Broken.
    Error,
}

impl ResourceStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceStatus::Ready => "ready",
            ResourceStatus::Pending => "pending",
            ResourceStatus::Onboarding => "onboarding",
            ResourceStatus::Suspended => "suspended",
            ResourceStatus::Resumed => "resumed",
            ResourceStatus::Uninstalled => "uninstalled",
            ResourceStatus::Error => "error",
        }
    }
}

/// A resource (answer of provision, get and update).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// Our resource id.
    pub id: String,
    /// Product id.
    pub product_id: String,
    /// Name.
    pub name: String,
    /// Metadata.
    pub metadata: Value,
    /// Status.
    pub status: ResourceStatus,
    /// Plan in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_plan: Option<BillingPlan>,
    /// A notice for the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    /// The protocol settings as stored (`authentication.appUrls`,
    /// `experimentation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub protocol_settings: Option<Value>,
}

/// Answer of provisioning: the resource and its secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProvisionedResource {
    /// The resource.
    #[serde(flatten)]
    pub resource: Resource,
    /// Its secrets, known ahead of time.
    pub secrets: Vec<Secret>,
}

/// Answer of the deprecated resource listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceList {
    /// The resources.
    pub resources: Vec<Resource>,
}

/// `POST .../resources/{resourceId}/secrets/rotate`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"reason": "leaked", "delayOldSecretsExpirationHours": 1}))]
pub struct RotateSecrets {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// Hours the old secrets stay valid, 0 to 720, possibly fractional.
    #[serde(default)]
    pub delay_old_secrets_expiration_hours: Option<f64>,
}

/// Longest grace period of old secrets, in hours.
pub const MAX_OLD_SECRETS_HOURS: f64 = 720.0;

/// Answer of a rotation: the new secrets (`sync`), or a promise to push them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RotatedSecrets {
    /// True when `secrets` holds the new secrets.
    pub sync: bool,
    /// The new secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<Secret>>,
    /// True when only some secrets changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<bool>,
}

/// `POST /v1/installations/{installationId}/billing/provision`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionPurchase {
    /// The paid Vercel invoice of the purchase.
    pub invoice_id: String,
}

/// Balances at a moment (answer of `billing/provision`, body of the Vercel
/// balance push).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Balances {
    /// When they were computed (RFC 3339).
    pub timestamp: String,
    /// The balances.
    pub balances: Vec<Balance>,
}

/// A time Vercel sends as epoch milliseconds; older callers sent a string
/// (digits, or RFC 3339).
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EpochMillis {
    /// Milliseconds since the epoch.
    Number(f64),
    /// Digits or an RFC 3339 time.
    Text(String),
}

impl EpochMillis {
    /// The time, when it reads as one.
    pub fn to_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            EpochMillis::Number(ms) if ms.is_finite() => {
                chrono::DateTime::from_timestamp_millis(ms.round() as i64)
            }
            EpochMillis::Number(_) => None,
            EpochMillis::Text(text) => {
                let text = text.trim();
                match text.parse::<i64>() {
                    Ok(ms) => chrono::DateTime::from_timestamp_millis(ms),
                    Err(_) => chrono::DateTime::parse_from_rfc3339(text)
                        .ok()
                        .map(|t| t.with_timezone(&chrono::Utc)),
                }
            }
        }
    }
}

/// `POST /v1/installations/{installationId}/resource-transfer-requests`
/// (and the older `PUT .../{transferId}`, which names the time `expiration`
/// and may carry a `claimId`).
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateTransferRequest {
    /// The resources offered.
    pub resource_ids: Vec<String>,
    /// When the claim expires.
    #[serde(default, alias = "expiration")]
    pub expires_at: Option<EpochMillis>,
    /// A claim id the caller chose (older shape).
    #[serde(default)]
    pub claim_id: Option<String>,
}

/// Answer of a created transfer request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTransferRequest {
    /// Our claim id, which Vercel passes to verify and accept.
    pub provider_claim_id: String,
}

/// Answer of a transfer verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedTransferRequest {
    /// True: the claim can be accepted by the calling installation.
    pub valid: bool,
    /// The plan the resources are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_plan: Option<BillingPlan>,
}

/// `POST .../resource-transfer-requests/{providerClaimId}/accept`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptTransferRequest {
    /// The installation taking the resources (the path's, when given).
    #[serde(default)]
    pub target_installation_id: Option<String>,
    /// Its team.
    #[serde(default)]
    pub target_team_id: Option<String>,
}

/// `POST .../resources/{resourceId}/repl`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"input": "info", "readOnly": true}))]
pub struct ReplRequest {
    /// The command line.
    pub input: String,
    /// True when the command must not change anything.
    #[serde(default)]
    pub read_only: Option<bool>,
}

/// A run of text in console output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplText {
    /// Always `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: String,
    /// A color name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// Bold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bold: Option<bool>,
    /// Italic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub italic: Option<bool>,
    /// A link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
}

/// One block of console output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ReplBlock {
    /// Text.
    Paragraph {
        /// Its runs of text.
        children: Vec<ReplText>,
    },
    /// A table.
    Table {
        /// Column titles.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<Vec<ReplText>>,
        /// Rows of cells.
        rows: Vec<Vec<ReplText>>,
    },
}
