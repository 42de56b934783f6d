//! The Vercel API: what the provider sends to Vercel and what Vercel
//! answers.

use super::plan::BillingPlan;
use super::{Balance, Notification, Period, Secret};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A notification to set, or `null` to clear the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NotificationChange {
    /// Show this notification.
    Set(Notification),
    /// Remove the notification (`null` on the wire).
    Clear(()),
}

/// `PATCH /v1/installations/{id}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallationUpdate {
    /// Installation status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Our id for the installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The installation-level plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_plan: Option<BillingPlan>,
    /// Dashboard notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<NotificationChange>,
}

/// Answer of `GET /v1/installations/{id}/account`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountInfo {
    /// Team name.
    #[serde(default)]
    pub name: Option<String>,
    /// Team URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Contact, when there is one.
    #[serde(default)]
    pub contact: Option<AccountContact>,
}

/// The contact of [`AccountInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountContact {
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
}

/// Answer of `GET /v1/installations/{id}/member/{memberId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Member (user) id.
    pub id: String,
    /// `ADMIN` or `USER`.
    pub role: String,
    /// Vercel-wide user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_user_id: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
}

/// An event dispatched with `POST /v1/installations/{id}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum IntegrationEvent {
    /// The installation changed (its plan).
    #[serde(rename = "installation.updated", rename_all = "camelCase")]
    InstallationUpdated {
        /// The installation's plan now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        billing_plan_id: Option<String>,
    },
    /// A resource changed; Vercel re-reads it.
    #[serde(rename = "resource.updated", rename_all = "camelCase")]
    ResourceUpdated {
        /// Its product.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        product_id: Option<String>,
        /// The resource (our id).
        resource_id: String,
    },
}

/// Body of `POST /v1/installations/{id}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDispatch {
    /// The event.
    pub event: IntegrationEvent,
}

/// A resource as Vercel knows it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VercelResource {
    /// Our id (`id` when read one by one; listings name it `partnerId`).
    #[serde(default)]
    pub id: String,
    /// Our id, as listings name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    /// Vercel's own id.
    #[serde(default)]
    pub internal_id: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Product.
    #[serde(default)]
    pub product_id: String,
    /// Status.
    #[serde(default)]
    pub status: Option<String>,
    /// Notification.
    #[serde(default)]
    pub notification: Option<Notification>,
    /// Plan id.
    #[serde(default)]
    pub billing_plan_id: Option<String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// Answer of `GET /v1/installations/{id}/resources`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VercelResourceList {
    /// The resources.
    #[serde(default)]
    pub resources: Vec<VercelResource>,
}

/// `PUT /v1/installations/{id}/resources/{rid}`: create or replace a
/// resource at Vercel (import).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceImport {
    /// `owned`, `linked` or `sandbox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<String>,
    /// Product.
    pub product_id: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: String,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_plan: Option<BillingPlan>,
    /// Notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    /// Extra values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<Value>,
    /// Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<Secret>>,
}

/// `PATCH /v1/installations/{id}/resources/{rid}`: tell Vercel what changed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceUpdate {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Status (a [`super::partner::ResourceStatus`] wire name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_plan: Option<BillingPlan>,
    /// Notice, or `null` to clear it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<NotificationChange>,
}

/// `PUT /v1/installations/{id}/resources/{rid}/secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsUpdate {
    /// The secrets.
    pub secrets: Vec<Secret>,
    /// True when only the listed secrets are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<bool>,
}

/// `POST /v1/integrations/installations/{id}/resources/{rid}/connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectConnection {
    /// The project to connect.
    pub project_id: String,
    /// Environments that get the variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_var_environments: Option<Vec<String>>,
    /// Mark the variables sensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub make_env_vars_sensitive: Option<bool>,
}

/// One billed line (interim billing data and invoices).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingItem {
    /// The plan billed.
    pub billing_plan_id: String,
    /// The resource; absent for installation-level items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Start of the billed interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// End of the billed interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// What is billed.
    pub name: String,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Unit price, USD decimal.
    pub price: String,
    /// Quantity.
    pub quantity: f64,
    /// Units.
    pub units: String,
    /// Line total, USD decimal.
    pub total: String,
}

/// A discount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Discount {
    /// The plan discounted.
    pub billing_plan_id: String,
    /// The resource; absent for installation-level discounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// End.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// What.
    pub name: String,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Amount, USD decimal.
    pub amount: String,
}

/// The billed lines of interim billing data.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BillingLines {
    /// Items.
    pub items: Vec<BillingItem>,
    /// Discounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discounts: Vec<Discount>,
}

/// How a usage value adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageType {
    /// Latest value counts.
    Total,
    /// Summed over time.
    Interval,
    /// A rate.
    Rate,
}

/// One usage line of interim billing data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageLine {
    /// The resource; absent for installation-level usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Metric name.
    pub name: String,
    /// How it adds up.
    #[serde(rename = "type")]
    pub usage_type: UsageType,
    /// Units.
    pub units: String,
    /// Value for the day.
    pub day_value: f64,
    /// Value for the period so far.
    pub period_value: f64,
    /// Quantity included in the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_value: Option<f64>,
}

/// `POST /v1/installations/{id}/billing`: interim billing and usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingData {
    /// When the data was computed.
    pub timestamp: String,
    /// End of the day the data covers.
    pub eod: String,
    /// The billing period.
    pub period: Period,
    /// Billed lines.
    pub billing: BillingLines,
    /// Usage lines.
    pub usage: Vec<UsageLine>,
}

/// Test controls of an invoice submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceTest {
    /// Only validate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<bool>,
    /// The state the test invoice should reach (`paid`, `notpaid`, `overdue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// `POST /v1/installations/{id}/billing/invoices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceSubmission {
    /// Our id, unique per installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Invoice date, within the period.
    pub invoice_date: String,
    /// Memo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    /// Period.
    pub period: Period,
    /// Lines.
    pub items: Vec<BillingItem>,
    /// Discounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discounts: Option<Vec<Discount>>,
    /// Final invoice of an installation pending deletion.
    #[serde(default, rename = "final", skip_serializing_if = "Option::is_none")]
    pub is_final: Option<bool>,
    /// Test controls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<InvoiceTest>,
}

/// Answer of an invoice submission.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceReceipt {
    /// Vercel's invoice id.
    #[serde(default)]
    pub invoice_id: Option<String>,
    /// True for a test invoice.
    #[serde(default)]
    pub test: Option<bool>,
    /// Why a test submission would fail.
    #[serde(default)]
    pub validation_errors: Option<Vec<String>>,
}

/// An invoice as Vercel knows it (`GET .../billing/invoices/{id}`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    /// True for a test invoice.
    #[serde(default)]
    pub test: Option<bool>,
    /// Vercel's id.
    #[serde(default)]
    pub invoice_id: String,
    /// Our external id.
    #[serde(default)]
    pub external_id: Option<String>,
    /// State (`draft`, `pending`, `scheduled`, `invoiced`, `paid`, `notpaid`,
    /// `overdue`, `refund_requested`, `refunded`).
    #[serde(default)]
    pub state: String,
    /// Number.
    #[serde(default)]
    pub invoice_number: Option<String>,
    /// Date.
    #[serde(default)]
    pub invoice_date: Option<String>,
    /// Period.
    #[serde(default)]
    pub period: Option<Period>,
    /// When it was paid.
    #[serde(default)]
    pub paid_at: Option<String>,
    /// When it was refunded.
    #[serde(default)]
    pub refunded_at: Option<String>,
    /// Memo.
    #[serde(default)]
    pub memo: Option<String>,
    /// Lines, as sent.
    #[serde(default)]
    pub items: Vec<Value>,
    /// Total, USD decimal.
    #[serde(default)]
    pub total: String,
    /// Refund reason.
    #[serde(default)]
    pub refund_reason: Option<String>,
    /// Amount refunded.
    #[serde(default)]
    pub refund_total: Option<String>,
    /// Created at.
    #[serde(default)]
    pub created: Option<String>,
    /// Updated at.
    #[serde(default)]
    pub updated: Option<String>,
}

/// `POST .../billing/invoices/{invoiceId}/actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceAction {
    /// Always `refund`.
    pub action: String,
    /// Why.
    pub reason: String,
    /// Amount, USD decimal, at most the invoice total.
    pub total: String,
}

impl InvoiceAction {
    /// A refund of `total` (USD decimal).
    pub fn refund(reason: &str, total: &str) -> Self {
        Self {
            action: "refund".to_owned(),
            reason: reason.to_owned(),
            total: total.to_owned(),
        }
    }
}

/// `POST .../billing/balance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceSubmission {
    /// When the balances were computed.
    pub timestamp: String,
    /// The balances.
    pub balances: Vec<Balance>,
}

/// `POST /v1/installations/{id}/credentials/rotate` (snake_case).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRotation {
    /// The integration's client secret.
    pub client_secret: String,
    /// The integration's client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl std::fmt::Debug for CredentialRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRotation")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Answer of a credential rotation (snake_case).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotatedCredential {
    /// The new token.
    pub access_token: String,
    /// Token type.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Scope.
    #[serde(default)]
    pub scope: Option<String>,
    /// Lifetime in seconds, if it has one.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for RotatedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedCredential")
            .field("token_type", &self.token_type)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/integrations/sso/token` (snake_case).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoTokenRequest {
    /// The code from the redirect.
    pub code: String,
    /// The state from the redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The integration's client id.
    pub client_id: String,
    /// The integration's client secret.
    pub client_secret: String,
    /// Redirect URI, when one was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// `authorization_code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<String>,
}

impl std::fmt::Debug for SsoTokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoTokenRequest")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Answer of the SSO token exchange (snake_case).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoTokens {
    /// The OIDC id token of the user.
    pub id_token: String,
    /// An access token, when issued.
    #[serde(default)]
    pub access_token: Option<String>,
    /// Its type.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Its lifetime in seconds.
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// A refresh token, when issued.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for SsoTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoTokens")
            .field("token_type", &self.token_type)
            .finish_non_exhaustive()
    }
}
