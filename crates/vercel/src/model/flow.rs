//! The simplified marketplace flow (`/marketplace/account`,
//! `/marketplace/plans`, `/marketplace/resources`, ...) that storefronts
//! built from Vercel's early native-integration guide speak. It is served as
//! a thin alias of the partner API, with its own shapes and error body
//! (`{"error":{"code","message","details"}}`).

use super::partner::{Contact, InstallationAccount};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The environments a variable goes to when nothing narrower is said.
pub const ALL_TARGETS: [&str; 3] = ["production", "preview", "development"];

/// `POST /marketplace/account`: create the account (and accept the terms).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountRequest {
    /// The installation; must match the token's when given.
    #[serde(default)]
    pub installation_id: Option<String>,
    /// The team.
    #[serde(default)]
    pub team_id: Option<String>,
    /// Policy id → acceptance time (RFC 3339).
    #[serde(default)]
    pub accepted_policies: Option<BTreeMap<String, String>>,
    /// True when the user accepted the terms now (no policy ids given).
    #[serde(default)]
    pub accept_terms: Option<bool>,
    /// The installation's Vercel API credential.
    #[serde(default)]
    pub credentials: Option<FlowCredentials>,
    /// The team's details.
    #[serde(default)]
    pub account: Option<InstallationAccount>,
    /// A contact, when no `account` is given.
    #[serde(default)]
    pub contact: Option<Contact>,
    /// Granted scopes.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

/// A credential in the flow's account request.
#[derive(Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct FlowCredentials {
    /// The bearer token.
    pub access_token: String,
    /// Its type.
    #[serde(default)]
    pub token_type: Option<String>,
}

impl std::fmt::Debug for FlowCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowCredentials").finish_non_exhaustive()
    }
}

/// Answer of `POST /marketplace/account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// The installation.
    pub installation_id: String,
    /// The team, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// `active`.
    pub status: String,
    /// True once any policy was accepted.
    pub terms_accepted: bool,
}

/// One plan of `GET /marketplace/plans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = FlowPlan)]
pub struct Plan {
    /// Plan id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Price per period in cents.
    pub price: i64,
    /// Feature lines.
    pub features: Vec<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Answer of `GET /marketplace/plans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = FlowPlanList)]
pub struct PlanList {
    /// The plans.
    pub plans: Vec<Plan>,
}

/// `POST /marketplace/resources`.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"productId": "database", "planId": "free", "configuration": {"name": "main-db", "region": "fra1"}}))]
pub struct CreateResource {
    /// The team.
    #[serde(default)]
    pub team_id: Option<String>,
    /// The installation; must match the token's when given.
    #[serde(default)]
    pub installation_id: Option<String>,
    /// Product.
    pub product_id: String,
    /// Plan.
    pub plan_id: String,
    /// Name and product options (region, ...).
    pub configuration: Configuration,
}

/// The `configuration` of a resource: its name and options.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
pub struct Configuration {
    /// Resource name.
    pub name: String,
    /// Every other option (`region`, ...), as metadata.
    #[serde(flatten)]
    #[schema(ignore)]
    pub options: Map<String, Value>,
}

/// One environment variable of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvironmentVariable {
    /// Name.
    pub key: String,
    /// Value.
    pub value: String,
    /// Environments it goes to.
    pub target: Vec<String>,
}

/// Answer of `POST /marketplace/resources`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedResource {
    /// Resource id.
    pub resource_id: String,
    /// `active`, `pending`, `suspended`, `error`.
    pub status: String,
    /// Its variables.
    pub environment_variables: Vec<EnvironmentVariable>,
}

/// `POST /marketplace/resources/{id}/connect`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connect {
    /// The project.
    pub project_id: String,
    /// The resource; must match the path when given.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// Environments; all three when absent.
    #[serde(default)]
    pub targets: Option<Vec<String>>,
}

/// Answer of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// The resource.
    pub resource_id: String,
    /// The project.
    pub project_id: String,
    /// `connected`.
    pub status: String,
    /// Environments.
    pub targets: Vec<String>,
}

/// `PATCH /marketplace/resources/{id}/plan`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangePlan {
    /// The resource; must match the path when given.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// The plan to move to.
    pub new_plan_id: String,
}

/// A resource after a change or deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceState {
    /// Resource id.
    pub resource_id: String,
    /// `active`, `pending`, `deleted`, ...
    pub status: String,
    /// Product.
    pub product_id: String,
    /// Plan in force.
    pub plan_id: String,
    /// Name.
    pub name: String,
}

/// `{"error":{"code","message","details"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowErrorBody {
    /// The error.
    pub error: FlowError,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowError {
    /// Upper-case code (`VALIDATION_ERROR`, `NOT_FOUND`, ...).
    pub code: String,
    /// Message.
    pub message: String,
    /// Details (the invalid fields, or a message for the customer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// The flow's status word for a resource status.
pub fn status_word(status: &str) -> &'static str {
    match status {
        "ready" | "resumed" => "active",
        "pending" => "pending",
        "onboarding" => "onboarding",
        "suspended" => "suspended",
        "uninstalled" => "deleted",
        _ => "error",
    }
}
