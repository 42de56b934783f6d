//! What the simulated Vercel remembers: installations with their tokens, the
//! resources, secrets, events, billing data, invoices and balances the
//! provider sent, and pending SSO codes.

use super::refusal::{Refusal, gone, refusal};
use axum::http::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One installation of the integration on a team.
#[derive(Debug, Clone)]
pub struct SimInstallation {
    /// `icfg_...`.
    pub id: String,
    /// The team (`account_id` claim).
    pub team_id: String,
    /// The token handed to the provider at install.
    pub token: String,
    /// Tokens issued by credential rotation; all stay valid.
    pub rotated_tokens: Vec<String>,
    /// `{name, url, contact}` as `GET .../account` answers it.
    pub account: Value,
    /// Members by user id: `{id, role, userEmail}`.
    pub members: BTreeMap<String, Value>,
    /// True once the provider finalized billing; the tokens stop working.
    pub finalized: bool,
    /// Bodies of `PATCH /v1/installations/{id}`.
    pub updates: Vec<Value>,
    /// Resources by id.
    pub resources: BTreeMap<String, SimResource>,
    /// Bodies of `POST .../events`, in order.
    pub events: Vec<Value>,
    /// Bodies of `POST .../billing`, in order.
    pub billing_data: Vec<Value>,
    /// Invoices by Vercel id.
    pub invoices: BTreeMap<String, SimInvoice>,
    /// Bodies of `POST .../billing/balance`, in order.
    pub balances: Vec<Value>,
    /// Bodies of project connection requests.
    pub connections: Vec<Value>,
}

impl SimInstallation {
    /// True when `token` is one of the installation's working tokens.
    pub fn accepts(&self, token: &str) -> bool {
        !self.finalized && (self.token == token || self.rotated_tokens.iter().any(|t| t == token))
    }

    /// Events of a type, in order.
    pub fn events_of_type(&self, event_type: &str) -> Vec<Value> {
        self.events
            .iter()
            .filter(|e| e["event"]["type"] == event_type)
            .cloned()
            .collect()
    }
}

/// A resource as the simulated Vercel knows it.
#[derive(Debug, Clone, Default)]
pub struct SimResource {
    /// The provider's id.
    pub id: String,
    /// Product.
    pub product_id: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: String,
    /// Metadata.
    pub metadata: Value,
    /// Current notification (`Null` when cleared).
    pub notification: Value,
    /// Plan id.
    pub billing_plan_id: Option<String>,
    /// The secrets Vercel holds now (`[{name, value, ...}]`).
    pub secrets: Vec<Value>,
    /// Bodies of every `PUT .../secrets`, in order.
    pub secret_pushes: Vec<Value>,
    /// Bodies of every `PATCH` of the resource, in order.
    pub updates: Vec<Value>,
    /// True once deleted through the API.
    pub deleted: bool,
    /// `owned`, `linked` or `sandbox`, when the provider imported it.
    pub ownership: Option<String>,
}

impl SimResource {
    /// The value Vercel holds for secret `name`.
    pub fn secret(&self, name: &str) -> Option<String> {
        self.secrets
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["value"].as_str().map(str::to_owned))
    }
}

/// An invoice at the simulated Vercel.
#[derive(Debug, Clone)]
pub struct SimInvoice {
    /// Vercel's id.
    pub id: String,
    /// The provider's id, when the provider submitted it.
    pub external_id: Option<String>,
    /// State (`pending`, `invoiced`, `paid`, `notpaid`, `refund_requested`, ...).
    pub state: String,
    /// Total, USD decimal.
    pub total: String,
    /// True for a test invoice.
    pub test: bool,
    /// The submission, when the provider submitted it.
    pub submission: Value,
    /// Bodies of refund actions.
    pub refunds: Vec<Value>,
    /// Invoice date.
    pub invoice_date: String,
    /// Period.
    pub period: Value,
    /// When it was created.
    pub created: String,
}

impl SimInvoice {
    /// The invoice as `GET .../billing/invoices/{id}` answers it.
    pub fn to_json(&self) -> Value {
        let items = self
            .submission
            .get("items")
            .cloned()
            .unwrap_or_else(|| Value::Array(Vec::new()));
        let mut json = serde_json::json!({
            "invoiceId": self.id,
            "state": self.state,
            "invoiceDate": self.invoice_date,
            "period": self.period,
            "items": items,
            "total": self.total,
            "created": self.created,
            "updated": self.created,
        });
        if let Some(external_id) = &self.external_id {
            json["externalId"] = Value::String(external_id.clone());
        }
        if self.test {
            json["test"] = Value::Bool(true);
        }
        if let Some(refund) = self.refunds.last() {
            json["refundReason"] = refund["reason"].clone();
            json["refundTotal"] = refund["total"].clone();
        }
        json
    }
}

/// A code handed to the provider's Redirect Login URL, waiting to be
/// exchanged.
#[derive(Debug, Clone)]
pub(crate) struct PendingSso {
    pub(crate) state: String,
    pub(crate) id_token: String,
}

/// An import Vercel started: the `state` it handed to the provider's Import
/// Resource URL, waiting for the browser to come back with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimImport {
    /// The `state` (opaque, single-use).
    pub state: String,
    /// The installation it is for.
    pub installation_id: String,
    /// The product the user chose, if any.
    pub product_id: Option<String>,
    /// The resource the provider imported, once the browser came back and
    /// Vercel found it.
    pub completed_resource_id: Option<String>,
}

/// Everything the simulated Vercel remembers.
#[derive(Debug, Default)]
pub(crate) struct World {
    pub(crate) installations: BTreeMap<String, SimInstallation>,
    pub(crate) sso_codes: BTreeMap<String, PendingSso>,
    /// The integration's Redirect Login URL, once set.
    pub(crate) redirect_login_url: Option<String>,
    /// Short-lived tokens, revoked credentials, gone installations.
    pub(crate) credentials: CredentialBook,
    /// Imports started, by `state`.
    pub(crate) imports: BTreeMap<String, SimImport>,
}

/// Installation credentials beyond the token handed over at install:
/// short-lived tokens from the client-credentials grant (they expire),
/// revoked credentials, and installations that answer `410 Gone`.
#[derive(Debug, Default)]
pub(crate) struct CredentialBook {
    /// Short-lived tokens: token → (installation, expiry).
    pub(crate) short_lived: BTreeMap<String, (String, chrono::DateTime<chrono::Utc>)>,
    /// Retired long-lived credentials.
    pub(crate) revoked: BTreeSet<String>,
    /// Installations answering `410 Gone` to everything.
    pub(crate) gone: BTreeSet<String>,
    /// Lifetime of new short-lived tokens, in seconds (`None`: an hour).
    pub(crate) lifetime_seconds: Option<i64>,
    /// Grants answered, by installation.
    pub(crate) grants: BTreeMap<String, usize>,
}

impl CredentialBook {
    /// What the book says of `token` used for installation `id`: `None`
    /// when it does not know the token (the install token and rotated ones
    /// are checked by the caller).
    pub(crate) fn check(&self, id: &str, token: &str) -> Option<Result<(), Refusal>> {
        if self.gone.contains(id) {
            return Some(Err(gone()));
        }
        if self.revoked.contains(token) {
            return Some(Err(refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the credential was revoked",
            )));
        }
        let (installation, expires_at) = self.short_lived.get(token)?;
        if installation != id {
            return Some(Err(refusal(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the token belongs to another installation",
            )));
        }
        if *expires_at <= chrono::Utc::now() {
            return Some(Err(refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the token expired",
            )));
        }
        Some(Ok(()))
    }
}
