//! The Cloud Commerce Partner Procurement API: accounts and entitlements of
//! one provider. Resources are read leniently (every field optional, unknown
//! fields kept); states are compared as the strings Google sends.

use crate::api::GoogleApi;
use marketbridge_core::{Error, ErrorCode, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Account states.
pub mod account_state {
    /// Deprecated; accounts start active now.
    pub const ACTIVATION_REQUESTED: &str = "ACCOUNT_ACTIVATION_REQUESTED";
    /// The account exists.
    pub const ACTIVE: &str = "ACCOUNT_ACTIVE";
}

/// Approval states.
pub mod approval_state {
    /// Waiting for the provider.
    pub const PENDING: &str = "PENDING";
    /// Approved by the provider.
    pub const APPROVED: &str = "APPROVED";
    /// Rejected by the provider (can be approved later).
    pub const REJECTED: &str = "REJECTED";
}

/// The approval the signup flow grants.
pub const SIGNUP_APPROVAL: &str = "signup";

/// Entitlement states.
pub mod entitlement_state {
    /// Created; waits for approval (or for its offer's start).
    pub const ACTIVATION_REQUESTED: &str = "ENTITLEMENT_ACTIVATION_REQUESTED";
    /// Usable; billing runs.
    pub const ACTIVE: &str = "ENTITLEMENT_ACTIVE";
    /// Ends at the end of its term.
    pub const PENDING_CANCELLATION: &str = "ENTITLEMENT_PENDING_CANCELLATION";
    /// Ended.
    pub const CANCELLED: &str = "ENTITLEMENT_CANCELLED";
    /// Usable; an approved plan change waits for the end of the cycle.
    pub const PENDING_PLAN_CHANGE: &str = "ENTITLEMENT_PENDING_PLAN_CHANGE";
    /// Usable; a plan change waits for the provider.
    pub const PENDING_PLAN_CHANGE_APPROVAL: &str = "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL";
    /// Not supported yet by Google.
    pub const SUSPENDED: &str = "ENTITLEMENT_SUSPENDED";
}

/// One approval of an account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// Approval name (`signup`).
    #[serde(default)]
    pub name: String,
    /// `PENDING`, `APPROVED` or `REJECTED`.
    #[serde(default)]
    pub state: String,
    /// Reason given with the last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
}

/// A procurement account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// `providers/{p}/accounts/{id}` (or `accounts/{id}`).
    #[serde(default)]
    pub name: String,
    /// When it last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    /// When it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// The provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The account state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Approvals (`signup`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,
    /// Parent billing account of a resold account (full view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseller_parent_billing_account: Option<String>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Account {
    /// The account id: the last segment of `name`.
    pub fn id(&self) -> &str {
        last_segment(&self.name)
    }

    /// The `signup` approval, if the account has one.
    pub fn signup_approval(&self) -> Option<&Approval> {
        self.approvals.iter().find(|a| a.name == SIGNUP_APPROVAL)
    }
}

/// A consumer project of an entitlement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Consumer {
    /// `projects/<number>`.
    #[serde(default)]
    pub project: String,
}

/// An entitlement: one purchase of a product on a plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entitlement {
    /// `providers/{p}/entitlements/{id}`.
    #[serde(default)]
    pub name: String,
    /// The owning account, `providers/{p}/accounts/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The product (deprecated; see `product_external_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// The product's external name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_external_name: Option<String>,
    /// The quote's external name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_external_name: Option<String>,
    /// The plan in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The plan the customer asked for, while a change is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_pending_plan: Option<String>,
    /// The offer in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// The offer pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_pending_offer: Option<String>,
    /// The offer's duration (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_duration: Option<String>,
    /// The pending offer's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_pending_offer_duration: Option<String>,
    /// When the offer ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_end_time: Option<String>,
    /// When the new offer starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_offer_start_time: Option<String>,
    /// When the new offer ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_offer_end_time: Option<String>,
    /// When the subscription ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_end_time: Option<String>,
    /// The state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When it last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    /// When it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// Id usage is reported against (usage-based plans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_reporting_id: Option<String>,
    /// Message shown to the customer while waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_to_user: Option<String>,
    /// Consumer projects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
    /// Order id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// Benefit ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entitlement_benefit_ids: Vec<String>,
    /// Why it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_reason: Option<String>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Entitlement {
    /// The entitlement id: the last segment of `name`.
    pub fn id(&self) -> &str {
        last_segment(&self.name)
    }

    /// The owning account's id.
    pub fn account_id(&self) -> &str {
        last_segment(self.account.as_deref().unwrap_or_default())
    }

    /// The state, or an empty string.
    pub fn state(&self) -> &str {
        self.state.as_deref().unwrap_or_default()
    }
}

/// A page of accounts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountPage {
    /// The accounts.
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// Token of the next page; empty at the end.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// A page of entitlements.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementPage {
    /// The entitlements.
    #[serde(default)]
    pub entitlements: Vec<Entitlement>,
    /// Token of the next page; empty at the end.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// The last `/`-separated segment of a resource name.
pub fn last_segment(name: &str) -> &str {
    name.trim().rsplit('/').next().unwrap_or_default()
}

/// Checks an id before it goes into a URL path.
pub fn path_segment(field: &str, value: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty()
        || value.len() > 255
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@'))
    {
        return Err(Error::invalid_field(field, "is not a valid Google id"));
    }
    Ok(value.to_owned())
}

/// Most items a list page may ask for.
const LIST_PAGE_SIZE: u32 = 200;
/// Most pages read by one `list_all_*` call.
const MAX_PAGES: usize = 1000;

/// Client of the Procurement API for one provider.
#[derive(Debug, Clone)]
pub struct ProcurementClient {
    api: GoogleApi,
    provider_id: String,
}

impl ProcurementClient {
    /// A client for `provider_id` over `api`.
    pub fn new(api: GoogleApi, provider_id: &str) -> Result<Self> {
        let provider_id = path_segment("google.provider_id", provider_id)?;
        Ok(Self { api, provider_id })
    }

    /// The provider id.
    pub fn provider_id(&self) -> &str {
        &self.provider_id
    }

    fn account_path(&self, account_id: &str) -> Result<String> {
        Ok(format!(
            "/v1/providers/{}/accounts/{}",
            self.provider_id,
            path_segment("accountId", account_id)?
        ))
    }

    fn entitlement_path(&self, entitlement_id: &str) -> Result<String> {
        Ok(format!(
            "/v1/providers/{}/entitlements/{}",
            self.provider_id,
            path_segment("entitlementId", entitlement_id)?
        ))
    }

    /// Reads a resource; `None` on 404.
    async fn get_optional<T: serde::de::DeserializeOwned>(
        &self,
        route: &str,
        path: &str,
    ) -> Result<Option<T>> {
        let answer = self
            .api
            .send(Method::GET, route, path, None::<&Value>)
            .await?;
        if answer.status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&answer.status) {
            return Err(marketbridge_rpc::http::error_for_status(
                &answer,
                &format!("Google GET {route}"),
            ));
        }
        answer.json().map(Some)
    }

    async fn post_action(&self, route: &str, path: &str, body: &Value) -> Result<()> {
        self.api.call(Method::POST, route, path, Some(body)).await?;
        Ok(())
    }

    /// `accounts.get` (full view); `None` when Google no longer has it.
    pub async fn get_account(&self, account_id: &str) -> Result<Option<Account>> {
        let path = format!("{}?view=ACCOUNT_VIEW_FULL", self.account_path(account_id)?);
        self.get_optional("procurement.accounts.get", &path).await
    }

    /// One page of `accounts.list`.
    pub async fn list_accounts(&self, page_token: Option<&str>) -> Result<AccountPage> {
        let query = query_string(&[
            ("pageSize", Some(LIST_PAGE_SIZE.to_string().as_str())),
            ("pageToken", page_token.filter(|t| !t.is_empty())),
        ]);
        let path = format!("/v1/providers/{}/accounts?{query}", self.provider_id);
        self.api
            .call(
                Method::GET,
                "procurement.accounts.list",
                &path,
                None::<&Value>,
            )
            .await?
            .json()
    }

    /// Every account, following pages.
    pub async fn list_all_accounts(&self) -> Result<Vec<Account>> {
        let mut accounts = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.list_accounts(token.as_deref()).await?;
            accounts.extend(page.accounts);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(accounts),
            }
        }
        Ok(accounts)
    }

    /// `accounts.approve` of the `signup` approval.
    pub async fn approve_account(&self, account_id: &str) -> Result<()> {
        let path = format!("{}:approve", self.account_path(account_id)?);
        self.post_action(
            "procurement.accounts.approve",
            &path,
            &json!({"approvalName": SIGNUP_APPROVAL}),
        )
        .await
    }

    /// `accounts.reject` of the `signup` approval, with a reason.
    pub async fn reject_account(&self, account_id: &str, reason: &str) -> Result<()> {
        let path = format!("{}:reject", self.account_path(account_id)?);
        self.post_action(
            "procurement.accounts.reject",
            &path,
            &json!({"approvalName": SIGNUP_APPROVAL, "reason": truncate_reason(reason)}),
        )
        .await
    }

    /// `accounts.reset` (a test tool: cancels every entitlement, signup back
    /// to pending, no notification).
    pub async fn reset_account(&self, account_id: &str) -> Result<()> {
        let path = format!("{}:reset", self.account_path(account_id)?);
        self.post_action("procurement.accounts.reset", &path, &json!({}))
            .await
    }

    /// `entitlements.get`; `None` when Google no longer has it.
    pub async fn get_entitlement(&self, entitlement_id: &str) -> Result<Option<Entitlement>> {
        let path = self.entitlement_path(entitlement_id)?;
        self.get_optional("procurement.entitlements.get", &path)
            .await
    }

    /// One page of `entitlements.list` with an optional filter
    /// (`state=activation_requested account=E-1234`).
    pub async fn list_entitlements(
        &self,
        filter: &str,
        page_token: Option<&str>,
    ) -> Result<EntitlementPage> {
        let query = query_string(&[
            ("filter", Some(filter.trim()).filter(|f| !f.is_empty())),
            ("pageSize", Some(LIST_PAGE_SIZE.to_string().as_str())),
            ("pageToken", page_token.filter(|t| !t.is_empty())),
        ]);
        let path = format!("/v1/providers/{}/entitlements?{query}", self.provider_id);
        self.api
            .call(
                Method::GET,
                "procurement.entitlements.list",
                &path,
                None::<&Value>,
            )
            .await?
            .json()
    }

    /// Every entitlement matching `filter`, following pages.
    pub async fn list_all_entitlements(&self, filter: &str) -> Result<Vec<Entitlement>> {
        let mut entitlements = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.list_entitlements(filter, token.as_deref()).await?;
            entitlements.extend(page.entitlements);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(entitlements),
            }
        }
        Ok(entitlements)
    }

    /// `entitlements.patch` of `messageToUser` (only while activation or a
    /// plan change waits for the provider).
    pub async fn set_message_to_user(
        &self,
        entitlement_id: &str,
        message: &str,
    ) -> Result<Entitlement> {
        let path = format!(
            "{}?updateMask=messageToUser",
            self.entitlement_path(entitlement_id)?
        );
        self.api
            .call(
                Method::PATCH,
                "procurement.entitlements.patch",
                &path,
                Some(&json!({"messageToUser": message})),
            )
            .await?
            .json()
    }

    /// `entitlements.approve`.
    pub async fn approve_entitlement(&self, entitlement_id: &str) -> Result<()> {
        let path = format!("{}:approve", self.entitlement_path(entitlement_id)?);
        self.post_action("procurement.entitlements.approve", &path, &json!({}))
            .await
    }

    /// `entitlements.reject` with a reason.
    pub async fn reject_entitlement(&self, entitlement_id: &str, reason: &str) -> Result<()> {
        let path = format!("{}:reject", self.entitlement_path(entitlement_id)?);
        self.post_action(
            "procurement.entitlements.reject",
            &path,
            &json!({"reason": truncate_reason(reason)}),
        )
        .await
    }

    /// `entitlements.approvePlanChange` of `pending_plan_name` (the current
    /// `newPendingPlan`).
    pub async fn approve_plan_change(
        &self,
        entitlement_id: &str,
        pending_plan_name: &str,
    ) -> Result<()> {
        let path = format!(
            "{}:approvePlanChange",
            self.entitlement_path(entitlement_id)?
        );
        self.post_action(
            "procurement.entitlements.approvePlanChange",
            &path,
            &json!({"pendingPlanName": pending_plan_name}),
        )
        .await
    }

    /// `entitlements.rejectPlanChange` of `pending_plan_name`, with a reason.
    pub async fn reject_plan_change(
        &self,
        entitlement_id: &str,
        pending_plan_name: &str,
        reason: &str,
    ) -> Result<()> {
        let path = format!(
            "{}:rejectPlanChange",
            self.entitlement_path(entitlement_id)?
        );
        self.post_action(
            "procurement.entitlements.rejectPlanChange",
            &path,
            &json!({"pendingPlanName": pending_plan_name, "reason": truncate_reason(reason)}),
        )
        .await
    }
}

/// A URL-encoded query of the pairs that have a value.
fn query_string(pairs: &[(&str, Option<&str>)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    query.finish()
}

/// Google accepts reasons of at most 256 bytes.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(256);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// True when an error is Google refusing an action in the resource's
/// current state (400 `Precondition check failed`, 409).
pub fn is_precondition_failure(error: &Error) -> bool {
    matches!(error.code(), ErrorCode::Validation | ErrorCode::Conflict)
}

/// Extra string attributes worth keeping from an entitlement.
pub fn entitlement_attributes(entitlement: &Entitlement) -> BTreeMap<String, String> {
    let mut attributes = BTreeMap::new();
    let mut put = |key: &str, value: &Option<String>| {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            attributes.insert(key.to_owned(), value.to_owned());
        }
    };
    put("google_plan", &entitlement.plan);
    put("google_product", &entitlement.product_external_name);
    put("offer", &entitlement.offer);
    put("offer_duration", &entitlement.offer_duration);
    put("offer_end_time", &entitlement.offer_end_time);
    put("new_offer_start_time", &entitlement.new_offer_start_time);
    put("new_offer_end_time", &entitlement.new_offer_end_time);
    put("subscription_end_time", &entitlement.subscription_end_time);
    put("quote", &entitlement.quote_external_name);
    if !entitlement.consumers.is_empty() {
        attributes.insert(
            "consumer_projects".to_owned(),
            entitlement
                .consumers
                .iter()
                .map(|c| c.project.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        let entitlement: Entitlement = serde_json::from_value(json!({
            "name": "providers/DEMO-p/entitlements/e-1",
            "account": "providers/DEMO-p/accounts/a-1",
            "state": "ENTITLEMENT_ACTIVE", "plan": "pro-plan", "newField": true,
            "consumers": [{"project": "projects/1"}]
        }))
        .unwrap();
        assert_eq!(entitlement.id(), "e-1");
        assert_eq!(entitlement.account_id(), "a-1");
        assert_eq!(entitlement.state(), entitlement_state::ACTIVE);
        assert!(entitlement.extra.contains_key("newField"));
        let attributes = entitlement_attributes(&entitlement);
        assert_eq!(attributes["google_plan"], "pro-plan");
        assert_eq!(attributes["consumer_projects"], "projects/1");
        let account: Account = serde_json::from_value(json!({"name": "accounts/a-2",
            "approvals": [{"name": "signup", "state": "PENDING"}]}))
        .unwrap();
        assert_eq!(account.id(), "a-2");
        assert_eq!(account.signup_approval().unwrap().state, "PENDING");
        assert!(path_segment("id", "a/b").is_err());
        assert!(path_segment("id", "").is_err());
        assert_eq!(path_segment("id", " E-1234 ").unwrap(), "E-1234");
        assert_eq!(truncate_reason(&"é".repeat(200)).len(), 256);
    }
}
