//! Google's side of the world: procurement accounts and entitlements with the
//! Partner Procurement state machines, and the notifications each change
//! publishes. Handlers and customer actions both change state through here,
//! so the rules live in one place.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Account state (accounts are created active).
pub const ACCOUNT_ACTIVE: &str = "ACCOUNT_ACTIVE";
/// Entitlement states.
pub mod state {
    /// Waiting for approval (or for its offer's start).
    pub const ACTIVATION_REQUESTED: &str = "ENTITLEMENT_ACTIVATION_REQUESTED";
    /// In use.
    pub const ACTIVE: &str = "ENTITLEMENT_ACTIVE";
    /// Ends at the end of the term.
    pub const PENDING_CANCELLATION: &str = "ENTITLEMENT_PENDING_CANCELLATION";
    /// Ended.
    pub const CANCELLED: &str = "ENTITLEMENT_CANCELLED";
    /// An approved plan change waits for the end of the cycle.
    pub const PENDING_PLAN_CHANGE: &str = "ENTITLEMENT_PENDING_PLAN_CHANGE";
    /// A plan change waits for the provider.
    pub const PENDING_PLAN_CHANGE_APPROVAL: &str = "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL";
}

/// When an approved plan change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlanChangeTiming {
    /// At once (`ACTIVE` with the new plan).
    #[default]
    Immediately,
    /// At the end of the billing cycle (`PENDING_PLAN_CHANGE` until
    /// [`World::end_billing_cycle`]).
    EndOfCycle,
}

/// A procurement account.
#[derive(Debug, Clone)]
pub struct SimAccount {
    /// Account id.
    pub id: String,
    /// `PENDING`, `APPROVED` or `REJECTED`.
    pub signup: String,
    /// Reason of the last signup decision.
    pub signup_reason: String,
    /// When the signup approval changed.
    pub signup_time: DateTime<Utc>,
    /// Created.
    pub created: DateTime<Utc>,
    /// Last changed.
    pub updated: DateTime<Utc>,
}

/// An entitlement.
#[derive(Debug, Clone)]
pub struct SimEntitlement {
    /// Entitlement id.
    pub id: String,
    /// Owning account id.
    pub account_id: String,
    /// Product external name.
    pub product: String,
    /// Plan in force.
    pub plan: String,
    /// Plan asked for, while a change is pending.
    pub new_pending_plan: Option<String>,
    /// State.
    pub state: String,
    /// True when Google approved it itself (private offer with automatic
    /// approval) or the provider approved it.
    pub approved: bool,
    /// Private offer, when bought through one.
    pub offer: Option<String>,
    /// Start of the offer, when it starts later.
    pub offer_start: Option<DateTime<Utc>>,
    /// End of the current term.
    pub offer_end: Option<DateTime<Utc>>,
    /// Usage reporting id, once active.
    pub usage_reporting_id: Option<String>,
    /// Order id.
    pub order_id: String,
    /// Message to the customer.
    pub message_to_user: Option<String>,
    /// Why it was cancelled.
    pub cancellation_reason: Option<String>,
    /// Consumer project number.
    pub project_number: u64,
    /// Created.
    pub created: DateTime<Utc>,
    /// Last changed.
    pub updated: DateTime<Utc>,
}

/// A notification waiting to be published.
#[derive(Debug, Clone)]
pub struct Notice {
    /// `eventId`.
    pub event_id: String,
    /// `eventType`; `None` publishes without one (as Google's account
    /// creation example does).
    pub event_type: Option<String>,
    /// The payload.
    pub payload: Value,
}

/// A refusal in Google's error format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// `FAILED_PRECONDITION`, `NOT_FOUND`, ...
    pub code: &'static str,
    /// Message.
    pub message: String,
}

impl ApiError {
    /// `400 FAILED_PRECONDITION` with Google's message.
    pub fn precondition() -> Self {
        Self::new(400, "FAILED_PRECONDITION", "Precondition check failed.")
    }

    /// `404 NOT_FOUND`.
    pub fn not_found(what: &str) -> Self {
        Self::new(404, "NOT_FOUND", &format!("{what} not found."))
    }

    /// `400 INVALID_ARGUMENT`.
    pub fn invalid(message: &str) -> Self {
        Self::new(400, "INVALID_ARGUMENT", message)
    }

    /// An error.
    pub fn new(status: u16, code: &'static str, message: &str) -> Self {
        Self {
            status,
            code,
            message: message.to_owned(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.status, "message": self.message, "status": self.code}})
    }
}

/// Result of an API operation.
pub type ApiResult<T> = Result<T, ApiError>;

/// Accounts, entitlements and the notifications their changes produce.
#[derive(Debug, Default)]
pub struct World {
    /// The provider id.
    pub provider_id: String,
    /// Accounts by id.
    pub accounts: BTreeMap<String, SimAccount>,
    /// Entitlements by id.
    pub entitlements: BTreeMap<String, SimEntitlement>,
    /// How approved plan changes take effect.
    pub plan_change_timing: PlanChangeTiming,
    /// Publish account creation as the deprecated `ACCOUNT_CREATION_REQUESTED`.
    pub legacy_account_events: bool,
    /// Publish account creation without an `eventType`.
    pub untyped_account_events: bool,
    /// Notifications produced by the last changes, not yet published.
    pub outgoing: Vec<Notice>,
    last_time: Option<DateTime<Utc>>,
    sequence: u64,
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl World {
    /// An empty world for `provider_id`.
    pub fn new(provider_id: &str) -> Self {
        Self {
            provider_id: provider_id.to_owned(),
            ..Default::default()
        }
    }

    /// The next update time: `now`, but always later than the previous one
    /// (so updates stay ordered even when the clock stands still).
    pub fn tick(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let next = match self.last_time {
            Some(last) if now <= last => last + Duration::microseconds(1),
            _ => now,
        };
        self.last_time = Some(next);
        next
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.sequence += 1;
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{prefix}{:04}-{}", self.sequence, &random[..8])
    }

    fn notify(&mut self, event_type: &str, key: &str, body: Value) {
        let event_id = format!("{event_type}-{}", uuid::Uuid::new_v4());
        let mut payload = json!({"eventId": event_id, "providerId": self.provider_id});
        payload[key] = body;
        self.outgoing.push(Notice {
            event_id,
            event_type: Some(event_type.to_owned()),
            payload,
        });
    }

    fn notify_account(&mut self, event_type: &str, account_id: &str) {
        let Some(account) = self.accounts.get(account_id) else {
            return;
        };
        let body = json!({"id": account.id, "updateTime": rfc3339(account.updated)});
        self.notify(event_type, "account", body);
    }

    fn notify_entitlement(&mut self, event_type: &str, entitlement_id: &str, hints: Value) {
        let Some(entitlement) = self.entitlements.get(entitlement_id) else {
            return;
        };
        let mut body = json!({"id": entitlement.id, "updateTime": rfc3339(entitlement.updated)});
        if let Value::Object(extra) = hints {
            for (key, value) in extra {
                body[key] = value;
            }
        }
        self.notify(event_type, "entitlement", body);
    }

    /// Takes the notifications produced so far.
    pub fn take_outgoing(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.outgoing)
    }

    // ---- rendering -------------------------------------------------------

    /// The account as `accounts.get` returns it.
    pub fn account_json(&self, account: &SimAccount) -> Value {
        json!({
            "name": format!("providers/{}/accounts/{}", self.provider_id, account.id),
            "provider": self.provider_id,
            "state": ACCOUNT_ACTIVE,
            "approvals": [{
                "name": "signup",
                "state": account.signup,
                "reason": account.signup_reason,
                "updateTime": rfc3339(account.signup_time),
            }],
            "updateTime": rfc3339(account.updated),
            "createTime": rfc3339(account.created),
        })
    }

    /// The entitlement as `entitlements.get` returns it.
    pub fn entitlement_json(&self, entitlement: &SimEntitlement) -> Value {
        let mut value = json!({
            "name": format!("providers/{}/entitlements/{}", self.provider_id, entitlement.id),
            "account": format!("providers/{}/accounts/{}", self.provider_id, entitlement.account_id),
            "provider": self.provider_id,
            "product": entitlement.product,
            "productExternalName": entitlement.product,
            "plan": entitlement.plan,
            "offer": entitlement.offer.clone().unwrap_or_else(|| format!(
                "projects/{}/services/{}/standardOffers/{}",
                entitlement.project_number, entitlement.product, entitlement.plan
            )),
            "state": entitlement.state,
            "updateTime": rfc3339(entitlement.updated),
            "createTime": rfc3339(entitlement.created),
            "orderId": entitlement.order_id,
            "consumers": [{"project": format!("projects/{}", entitlement.project_number)}],
        });
        let mut put = |key: &str, text: Option<String>| {
            if let Some(text) = text {
                value[key] = Value::String(text);
            }
        };
        put("newPendingPlan", entitlement.new_pending_plan.clone());
        put("usageReportingId", entitlement.usage_reporting_id.clone());
        put("messageToUser", entitlement.message_to_user.clone());
        put(
            "cancellationReason",
            entitlement.cancellation_reason.clone(),
        );
        put("offerEndTime", entitlement.offer_end.map(rfc3339));
        put("newOfferStartTime", entitlement.offer_start.map(rfc3339));
        put(
            "subscriptionEndTime",
            (entitlement.state == state::PENDING_CANCELLATION)
                .then(|| entitlement.offer_end.map(rfc3339))
                .flatten(),
        );
        value
    }

    // ---- customer actions ------------------------------------------------

    /// A purchase: the account (created on the first purchase, with a
    /// pending signup) and a new entitlement waiting for approval.
    pub fn purchase(
        &mut self,
        now: DateTime<Utc>,
        account_id: Option<&str>,
        product: &str,
        plan: &str,
    ) -> (String, String) {
        let account_id = match account_id {
            Some(id) => id.to_owned(),
            None => self.next_id("acct-"),
        };
        self.ensure_account(now, &account_id);
        let entitlement_id = self.create_entitlement(now, &account_id, product, plan, None, None);
        self.notify_entitlement(
            "ENTITLEMENT_CREATION_REQUESTED",
            &entitlement_id,
            json!({"newPlan": plan, "newProduct": product, "orderId": self.entitlements[&entitlement_id].order_id}),
        );
        (account_id, entitlement_id)
    }

    /// A private offer accepted with automatic approval: the entitlement is
    /// approved by Google and activates at `start` (or at once).
    pub fn accept_private_offer(
        &mut self,
        now: DateTime<Utc>,
        account_id: Option<&str>,
        product: &str,
        plan: &str,
        start: Option<DateTime<Utc>>,
    ) -> (String, String) {
        let account_id = match account_id {
            Some(id) => id.to_owned(),
            None => self.next_id("acct-"),
        };
        self.ensure_account(now, &account_id);
        let offer = format!(
            "projects/1/services/{product}/privateOffers/{}",
            self.next_id("offer-")
        );
        let entitlement_id = self.create_entitlement(
            now,
            &account_id,
            product,
            plan,
            Some(offer.clone()),
            Some(start.unwrap_or(now)),
        );
        if let Some(entitlement) = self.entitlements.get_mut(&entitlement_id) {
            entitlement.approved = true;
        }
        let start = start.unwrap_or(now);
        self.notify_entitlement(
            "ENTITLEMENT_OFFER_ACCEPTED",
            &entitlement_id,
            json!({"newPlan": plan, "newProduct": product, "newOffer": offer,
                   "newOfferDuration": "P1Y", "newOfferStartTime": rfc3339(start),
                   "newOfferEndTime": rfc3339(start + Duration::days(365)),
                   "orderId": self.entitlements[&entitlement_id].order_id}),
        );
        (account_id, entitlement_id)
    }

    fn ensure_account(&mut self, now: DateTime<Utc>, account_id: &str) {
        if self.accounts.contains_key(account_id) {
            return;
        }
        let time = self.tick(now);
        self.accounts.insert(
            account_id.to_owned(),
            SimAccount {
                id: account_id.to_owned(),
                signup: "PENDING".into(),
                signup_reason: String::new(),
                signup_time: time,
                created: time,
                updated: time,
            },
        );
        if self.untyped_account_events {
            let event_id = format!("ACCOUNT-{}", uuid::Uuid::new_v4());
            let payload = json!({"eventId": event_id, "providerId": self.provider_id,
                "account": {"id": account_id, "updateTime": rfc3339(time)}});
            self.outgoing.push(Notice {
                event_id,
                event_type: None,
                payload,
            });
        } else if self.legacy_account_events {
            self.notify_account("ACCOUNT_CREATION_REQUESTED", account_id);
        } else {
            self.notify_account("ACCOUNT_ACTIVE", account_id);
        }
    }

    fn create_entitlement(
        &mut self,
        now: DateTime<Utc>,
        account_id: &str,
        product: &str,
        plan: &str,
        offer: Option<String>,
        offer_start: Option<DateTime<Utc>>,
    ) -> String {
        let id = self.next_id("ent-");
        let time = self.tick(now);
        let project_number = 100_000 + self.sequence;
        let order_id = self.next_id("order-");
        self.entitlements.insert(
            id.clone(),
            SimEntitlement {
                id: id.clone(),
                account_id: account_id.to_owned(),
                product: product.to_owned(),
                plan: plan.to_owned(),
                new_pending_plan: None,
                state: state::ACTIVATION_REQUESTED.into(),
                approved: false,
                offer,
                offer_start,
                offer_end: None,
                usage_reporting_id: None,
                order_id,
                message_to_user: None,
                cancellation_reason: None,
                project_number,
                created: time,
                updated: time,
            },
        );
        id
    }

    fn entitlement_mut(&mut self, id: &str) -> ApiResult<&mut SimEntitlement> {
        self.entitlements
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found("Entitlement"))
    }

    fn change(&mut self, now: DateTime<Utc>, id: &str, apply: impl FnOnce(&mut SimEntitlement)) {
        let time = self.tick(now);
        if let Some(entitlement) = self.entitlements.get_mut(id) {
            apply(entitlement);
            entitlement.updated = time;
        }
    }

    fn activate(&mut self, now: DateTime<Utc>, id: &str) {
        self.change(now, id, |e| {
            e.state = state::ACTIVE.into();
            e.message_to_user = None;
            e.usage_reporting_id
                .get_or_insert_with(|| format!("project_number:{}", e.project_number));
            e.offer_end.get_or_insert(now + Duration::days(30));
        });
        self.notify_entitlement("ENTITLEMENT_ACTIVE", id, json!({}));
    }

    /// The customer asks for another plan.
    pub fn request_plan_change(
        &mut self,
        now: DateTime<Utc>,
        id: &str,
        plan: &str,
    ) -> ApiResult<()> {
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.state != state::ACTIVE {
            return Err(ApiError::precondition());
        }
        let plan = plan.to_owned();
        let hint_plan = plan.clone();
        self.change(now, id, move |e| {
            e.state = state::PENDING_PLAN_CHANGE_APPROVAL.into();
            e.new_pending_plan = Some(plan);
        });
        self.notify_entitlement(
            "ENTITLEMENT_PLAN_CHANGE_REQUESTED",
            id,
            json!({"newPlan": hint_plan}),
        );
        Ok(())
    }

    /// The customer withdraws a plan change still waiting for approval.
    pub fn withdraw_plan_change(&mut self, now: DateTime<Utc>, id: &str) -> ApiResult<()> {
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.state != state::PENDING_PLAN_CHANGE_APPROVAL {
            return Err(ApiError::precondition());
        }
        self.change(now, id, |e| {
            e.state = state::ACTIVE.into();
            e.new_pending_plan = None;
            e.message_to_user = None;
        });
        self.notify_entitlement("ENTITLEMENT_PLAN_CHANGE_CANCELLED", id, json!({}));
        Ok(())
    }

    /// The billing cycle ends: an approved plan change takes effect.
    pub fn end_billing_cycle(&mut self, now: DateTime<Utc>, id: &str) -> ApiResult<()> {
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.state != state::PENDING_PLAN_CHANGE {
            return Err(ApiError::precondition());
        }
        self.apply_plan_change(now, id);
        Ok(())
    }

    fn apply_plan_change(&mut self, now: DateTime<Utc>, id: &str) {
        let mut new_plan = String::new();
        self.change(now, id, |e| {
            if let Some(plan) = e.new_pending_plan.take() {
                e.plan = plan;
            }
            new_plan = e.plan.clone();
            e.state = state::ACTIVE.into();
            e.message_to_user = None;
        });
        self.notify_entitlement("ENTITLEMENT_PLAN_CHANGED", id, json!({"newPlan": new_plan}));
    }

    /// The customer cancels at the end of the term.
    pub fn cancel(&mut self, now: DateTime<Utc>, id: &str) -> ApiResult<()> {
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.state != state::ACTIVE {
            return Err(ApiError::precondition());
        }
        self.change(now, id, |e| e.state = state::PENDING_CANCELLATION.into());
        self.notify_entitlement("ENTITLEMENT_PENDING_CANCELLATION", id, json!({}));
        Ok(())
    }

    /// The customer reverts a pending cancellation.
    pub fn revert_cancellation(&mut self, now: DateTime<Utc>, id: &str) -> ApiResult<()> {
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.state != state::PENDING_CANCELLATION {
            return Err(ApiError::precondition());
        }
        self.change(now, id, |e| e.state = state::ACTIVE.into());
        self.notify_entitlement("ENTITLEMENT_CANCELLATION_REVERTED", id, json!({}));
        Ok(())
    }

    /// The term ends for a pending cancellation: the entitlement is
    /// cancelled.
    pub fn end_term(&mut self, now: DateTime<Utc>, id: &str) -> ApiResult<()> {
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.state != state::PENDING_CANCELLATION {
            return Err(ApiError::precondition());
        }
        self.change(now, id, |e| {
            e.state = state::CANCELLED.into();
            e.cancellation_reason = Some("user-cancelled".into());
        });
        self.notify_entitlement("ENTITLEMENT_CANCELLED", id, json!({}));
        Ok(())
    }

    /// An immediate cancellation (billing disabled, account closed):
    /// `ENTITLEMENT_CANCELLING` then `ENTITLEMENT_CANCELLED`.
    pub fn cancel_immediately(
        &mut self,
        now: DateTime<Utc>,
        id: &str,
        reason: &str,
    ) -> ApiResult<()> {
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.state == state::CANCELLED {
            return Err(ApiError::precondition());
        }
        self.notify_entitlement("ENTITLEMENT_CANCELLING", id, json!({}));
        let reason = reason.to_owned();
        self.change(now, id, move |e| {
            e.state = state::CANCELLED.into();
            e.new_pending_plan = None;
            e.cancellation_reason = Some(reason);
        });
        self.notify_entitlement("ENTITLEMENT_CANCELLED", id, json!({}));
        Ok(())
    }

    /// The entitlement renews for another term.
    pub fn renew(&mut self, now: DateTime<Utc>, id: &str) -> ApiResult<()> {
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.state != state::ACTIVE {
            return Err(ApiError::precondition());
        }
        self.change(now, id, |e| {
            e.offer_end = Some(e.offer_end.unwrap_or(now) + Duration::days(30));
        });
        self.notify_entitlement("ENTITLEMENT_RENEWED", id, json!({}));
        Ok(())
    }

    /// A private offer's term ends; the entitlement stays at list price.
    pub fn end_offer(&mut self, now: DateTime<Utc>, id: &str) -> ApiResult<()> {
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.offer.is_none() {
            return Err(ApiError::precondition());
        }
        self.change(now, id, |e| {
            e.offer = None;
        });
        self.notify_entitlement("ENTITLEMENT_OFFER_ENDED", id, json!({}));
        Ok(())
    }

    /// Approved offers whose start passed become active.
    pub fn start_due_offers(&mut self, now: DateTime<Utc>) -> Vec<String> {
        let due: Vec<String> = self
            .entitlements
            .values()
            .filter(|e| {
                e.state == state::ACTIVATION_REQUESTED
                    && e.approved
                    && e.offer_start.is_some_and(|start| start <= now)
                    && self
                        .accounts
                        .get(&e.account_id)
                        .is_some_and(|a| a.signup == "APPROVED")
            })
            .map(|e| e.id.clone())
            .collect();
        for id in &due {
            self.activate(now, id);
        }
        due
    }

    /// A person approves the entitlement in Producer Portal (Private offers
    /// → Manage your offers) instead of the provider calling
    /// `entitlements.approve`: the same rules apply (activation requested,
    /// the account's signup approved), and Google publishes
    /// `ENTITLEMENT_ACTIVE` as for any activation. A later `approve` from
    /// the provider is refused with `FAILED_PRECONDITION`.
    pub fn approve_in_producer_portal(&mut self, now: DateTime<Utc>, id: &str) -> ApiResult<()> {
        self.approve_entitlement(now, id)
    }

    /// The entitlement's record is deleted (only once cancelled).
    pub fn delete_entitlement(&mut self, now: DateTime<Utc>, id: &str) -> ApiResult<()> {
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.state != state::CANCELLED {
            return Err(ApiError::precondition());
        }
        self.change(now, id, |_| {});
        self.notify_entitlement("ENTITLEMENT_DELETED", id, json!({}));
        self.entitlements.remove(id);
        Ok(())
    }

    /// The account is deleted from the Marketplace; its live entitlements
    /// are cancelled first.
    pub fn delete_account(&mut self, now: DateTime<Utc>, account_id: &str) -> ApiResult<()> {
        if !self.accounts.contains_key(account_id) {
            return Err(ApiError::not_found("Account"));
        }
        let live: Vec<String> = self
            .entitlements
            .values()
            .filter(|e| e.account_id == account_id && e.state != state::CANCELLED)
            .map(|e| e.id.clone())
            .collect();
        for id in live {
            self.cancel_immediately(now, &id, "account-closed")?;
        }
        let time = self.tick(now);
        if let Some(account) = self.accounts.get_mut(account_id) {
            account.updated = time;
        }
        self.notify_account("ACCOUNT_DELETED", account_id);
        self.accounts.remove(account_id);
        Ok(())
    }

    // ---- provider calls (Procurement API) --------------------------------

    /// `accounts.approve`.
    pub fn approve_account(
        &mut self,
        now: DateTime<Utc>,
        account_id: &str,
        approval: Option<&str>,
    ) -> ApiResult<()> {
        if approval.is_some_and(|name| name != "signup") {
            return Err(ApiError::invalid("Unknown approval name."));
        }
        let time = self.tick(now);
        let account = self
            .accounts
            .get_mut(account_id)
            .ok_or_else(|| ApiError::not_found("Account"))?;
        if account.signup == "APPROVED" {
            return Ok(());
        }
        account.signup = "APPROVED".into();
        account.signup_reason.clear();
        account.signup_time = time;
        account.updated = time;
        self.notify_account("ACCOUNT_ACTIVE", account_id);
        Ok(())
    }

    /// `accounts.reject`.
    pub fn reject_account(
        &mut self,
        now: DateTime<Utc>,
        account_id: &str,
        reason: &str,
    ) -> ApiResult<()> {
        let time = self.tick(now);
        let account = self
            .accounts
            .get_mut(account_id)
            .ok_or_else(|| ApiError::not_found("Account"))?;
        account.signup = "REJECTED".into();
        account.signup_reason = reason.to_owned();
        account.signup_time = time;
        account.updated = time;
        Ok(())
    }

    /// `accounts.reset`: signup back to pending, every entitlement
    /// cancelled, and no notification.
    pub fn reset_account(&mut self, now: DateTime<Utc>, account_id: &str) -> ApiResult<()> {
        let time = self.tick(now);
        let account = self
            .accounts
            .get_mut(account_id)
            .ok_or_else(|| ApiError::not_found("Account"))?;
        account.signup = "PENDING".into();
        account.signup_reason.clear();
        account.signup_time = time;
        account.updated = time;
        for entitlement in self.entitlements.values_mut() {
            if entitlement.account_id == account_id && entitlement.state != state::CANCELLED {
                entitlement.state = state::CANCELLED.into();
                entitlement.cancellation_reason = Some("account-reset".into());
                entitlement.new_pending_plan = None;
                entitlement.updated = time;
            }
        }
        Ok(())
    }

    /// `entitlements.approve`: only while activation is requested, and only
    /// once the account's signup is approved.
    pub fn approve_entitlement(&mut self, now: DateTime<Utc>, id: &str) -> ApiResult<()> {
        let entitlement = self
            .entitlements
            .get(id)
            .ok_or_else(|| ApiError::not_found("Entitlement"))?;
        if entitlement.state != state::ACTIVATION_REQUESTED {
            return Err(ApiError::precondition());
        }
        let signup_approved = self
            .accounts
            .get(&entitlement.account_id)
            .is_some_and(|a| a.signup == "APPROVED");
        if !signup_approved {
            return Err(ApiError::precondition());
        }
        let starts_later = entitlement.offer_start.is_some_and(|start| start > now);
        if entitlement.approved && starts_later {
            return Ok(());
        }
        if starts_later {
            self.change(now, id, |e| e.approved = true);
            return Ok(());
        }
        self.change(now, id, |e| e.approved = true);
        self.activate(now, id);
        Ok(())
    }

    /// `entitlements.reject`: the entitlement is removed.
    pub fn reject_entitlement(&mut self, id: &str) -> ApiResult<()> {
        let entitlement = self
            .entitlements
            .get(id)
            .ok_or_else(|| ApiError::not_found("Entitlement"))?;
        if entitlement.state != state::ACTIVATION_REQUESTED {
            return Err(ApiError::precondition());
        }
        self.entitlements.remove(id);
        Ok(())
    }

    /// `entitlements.approvePlanChange`.
    pub fn approve_plan_change(
        &mut self,
        now: DateTime<Utc>,
        id: &str,
        pending_plan: &str,
    ) -> ApiResult<()> {
        let timing = self.plan_change_timing;
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.state != state::PENDING_PLAN_CHANGE_APPROVAL
            || entitlement.new_pending_plan.as_deref() != Some(pending_plan)
        {
            return Err(ApiError::precondition());
        }
        match timing {
            PlanChangeTiming::Immediately => self.apply_plan_change(now, id),
            PlanChangeTiming::EndOfCycle => {
                self.change(now, id, |e| {
                    e.state = state::PENDING_PLAN_CHANGE.into();
                    e.message_to_user = None;
                });
            }
        }
        Ok(())
    }

    /// `entitlements.rejectPlanChange`.
    pub fn reject_plan_change(
        &mut self,
        now: DateTime<Utc>,
        id: &str,
        pending_plan: &str,
    ) -> ApiResult<()> {
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.state != state::PENDING_PLAN_CHANGE_APPROVAL
            || entitlement.new_pending_plan.as_deref() != Some(pending_plan)
        {
            return Err(ApiError::precondition());
        }
        self.change(now, id, |e| {
            e.state = state::ACTIVE.into();
            e.new_pending_plan = None;
            e.message_to_user = None;
        });
        self.notify_entitlement("ENTITLEMENT_PLAN_CHANGE_CANCELLED", id, json!({}));
        Ok(())
    }

    /// `entitlements.patch` of `messageToUser`.
    pub fn set_message_to_user(
        &mut self,
        now: DateTime<Utc>,
        id: &str,
        message: &str,
    ) -> ApiResult<Value> {
        let entitlement = self.entitlement_mut(id)?;
        if entitlement.state != state::ACTIVATION_REQUESTED
            && entitlement.state != state::PENDING_PLAN_CHANGE_APPROVAL
        {
            return Err(ApiError::precondition());
        }
        let message = message.to_owned();
        self.change(now, id, move |e| e.message_to_user = Some(message));
        Ok(self.entitlement_json(&self.entitlements[id]))
    }

    /// Entitlements matching a list filter, in id order.
    pub fn filter_entitlements(&self, filter: &str) -> ApiResult<Vec<&SimEntitlement>> {
        let terms = parse_filter(filter)?;
        Ok(self
            .entitlements
            .values()
            .filter(|e| terms.iter().all(|term| term.matches(self, e)))
            .collect())
    }
}

/// One `attr=value` (or `attr!=value`) term of a list filter.
#[derive(Debug, Clone)]
struct FilterTerm {
    attribute: String,
    value: String,
    negated: bool,
}

impl FilterTerm {
    fn matches(&self, world: &World, entitlement: &SimEntitlement) -> bool {
        let value = self.value.as_str();
        let hit = match self.attribute.as_str() {
            "state" => {
                let wanted = value.to_ascii_uppercase();
                let wanted = if wanted.starts_with("ENTITLEMENT_") {
                    wanted
                } else {
                    format!("ENTITLEMENT_{wanted}")
                };
                entitlement.state == wanted
            }
            "account" => {
                entitlement.account_id == value
                    || format!(
                        "providers/{}/accounts/{}",
                        world.provider_id, entitlement.account_id
                    ) == value
            }
            "plan" => entitlement.plan == value,
            "new_pending_plan" | "newPendingPlan" => {
                entitlement.new_pending_plan.as_deref() == Some(value)
            }
            "productExternalName" | "product_external_name" => entitlement.product == value,
            _ => false,
        };
        hit != self.negated
    }
}

fn parse_filter(filter: &str) -> ApiResult<Vec<FilterTerm>> {
    let mut terms = Vec::new();
    for word in filter.split_whitespace() {
        if word.eq_ignore_ascii_case("AND") {
            continue;
        }
        let (attribute, value, negated) = if let Some((a, v)) = word.split_once("!=") {
            (a, v, true)
        } else if let Some((a, v)) = word.split_once('=') {
            (a, v, false)
        } else {
            return Err(ApiError::invalid(&format!(
                "Unsupported filter term `{word}`."
            )));
        };
        let known = [
            "state",
            "account",
            "plan",
            "new_pending_plan",
            "newPendingPlan",
            "productExternalName",
            "product_external_name",
        ];
        if !known.contains(&attribute) {
            return Err(ApiError::invalid(&format!(
                "Unknown filter attribute `{attribute}`."
            )));
        }
        terms.push(FilterTerm {
            attribute: attribute.to_owned(),
            value: value.trim_matches('"').to_owned(),
            negated,
        });
    }
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    #[test]
    fn an_entitlement_cannot_be_approved_before_its_account() {
        let mut world = World::new("DEMO-p");
        let (account, entitlement) = world.purchase(now(), None, "database", "pro-plan");
        assert_eq!(
            world.approve_entitlement(now(), &entitlement),
            Err(ApiError::precondition())
        );
        world
            .approve_account(now(), &account, Some("signup"))
            .unwrap();
        world
            .approve_account(now(), &account, Some("signup"))
            .unwrap();
        world.approve_entitlement(now(), &entitlement).unwrap();
        assert_eq!(world.entitlements[&entitlement].state, state::ACTIVE);
        let types: Vec<_> = world
            .take_outgoing()
            .into_iter()
            .map(|n| n.event_type.unwrap_or_default())
            .collect();
        assert_eq!(
            types,
            [
                "ACCOUNT_ACTIVE",
                "ENTITLEMENT_CREATION_REQUESTED",
                "ACCOUNT_ACTIVE",
                "ENTITLEMENT_ACTIVE"
            ]
        );
    }

    #[test]
    fn an_entitlement_approved_in_producer_portal_refuses_a_later_approve() {
        let mut world = World::new("DEMO-p");
        let (account, entitlement) = world.purchase(now(), None, "database", "pro-plan");
        assert_eq!(
            world.approve_in_producer_portal(now(), &entitlement),
            Err(ApiError::precondition()),
            "not before the account's signup"
        );
        world.approve_account(now(), &account, None).unwrap();
        world.take_outgoing();
        world
            .approve_in_producer_portal(now(), &entitlement)
            .unwrap();
        assert_eq!(world.entitlements[&entitlement].state, state::ACTIVE);
        assert!(
            world.entitlements[&entitlement]
                .usage_reporting_id
                .is_some()
        );
        let types: Vec<_> = world
            .take_outgoing()
            .into_iter()
            .map(|n| n.event_type.unwrap_or_default())
            .collect();
        assert_eq!(types, ["ENTITLEMENT_ACTIVE"]);
        assert_eq!(
            world.approve_entitlement(now(), &entitlement),
            Err(ApiError::precondition())
        );
    }

    #[test]
    fn plan_changes_need_the_current_pending_plan() {
        let mut world = World::new("DEMO-p");
        let (account, entitlement) = world.purchase(now(), None, "database", "free-plan");
        world.approve_account(now(), &account, None).unwrap();
        world.approve_entitlement(now(), &entitlement).unwrap();
        world
            .request_plan_change(now(), &entitlement, "pro-plan")
            .unwrap();
        assert!(
            world
                .approve_plan_change(now(), &entitlement, "other")
                .is_err()
        );
        world
            .approve_plan_change(now(), &entitlement, "pro-plan")
            .unwrap();
        assert_eq!(world.entitlements[&entitlement].plan, "pro-plan");
        let before = world.entitlements[&entitlement].updated;
        world.cancel(now(), &entitlement).unwrap();
        assert!(
            world.entitlements[&entitlement].updated > before,
            "time moves on"
        );
        world.reset_account(now(), &account).unwrap();
        assert_eq!(world.entitlements[&entitlement].state, state::CANCELLED);
        assert_eq!(world.accounts[&account].signup, "PENDING");
        let filtered = world.filter_entitlements("state=cancelled").unwrap();
        assert_eq!(filtered.len(), 1);
        assert!(world.filter_entitlements("colour=red").is_err());
    }
}
