//! Microsoft's side of Azure Marketplace SaaS offers: the offer's plans,
//! SaaS subscriptions with their states (§5), purchase tokens, operations
//! (§3.9) and accepted usage events (§6). Pure state; the HTTP edges and the
//! webhook sender live in the parent module.

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// Subscription states.
pub mod status {
    /// Purchased, not activated.
    pub const PENDING: &str = "PendingFulfillmentStart";
    /// Active.
    pub const SUBSCRIBED: &str = "Subscribed";
    /// Suspended.
    pub const SUSPENDED: &str = "Suspended";
    /// Ended.
    pub const UNSUBSCRIBED: &str = "Unsubscribed";
}

/// How long a ChangePlan/ChangeQuantity waits for the publisher before it
/// is accepted on its own (§4).
pub const DECISION_WINDOW: ChronoDuration = ChronoDuration::seconds(10);

/// A plan of the offer.
#[derive(Debug, Clone, PartialEq)]
pub struct SimPlan {
    /// Plan id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Priced per seat (has a quantity).
    pub per_seat: bool,
    /// Metering dimensions.
    pub dimensions: Vec<String>,
}

/// A SaaS subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSubscription {
    /// Id (a GUID).
    pub id: String,
    /// Name.
    pub name: String,
    /// Offer.
    pub offer_id: String,
    /// Plan.
    pub plan_id: String,
    /// Seats.
    pub quantity: Option<u64>,
    /// `saasSubscriptionStatus`.
    pub status: String,
    /// The buyer's email.
    pub purchaser_email: String,
    /// The buyer's tenant.
    pub customer_tenant: String,
    /// Test purchase.
    pub is_test: bool,
    /// Term start.
    pub term_start: Option<DateTime<Utc>>,
    /// Term end.
    pub term_end: Option<DateTime<Utc>>,
    /// Created.
    pub created: DateTime<Utc>,
    /// Last modified.
    pub last_modified: DateTime<Utc>,
    /// How many times it was activated (a repeat is a no-op).
    pub activations: u32,
    /// When it was unsubscribed: usage of hours that started before is
    /// still taken within the 24 hours (contract §6.4, UNVERIFIED).
    pub ended_at: Option<DateTime<Utc>>,
}

/// An operation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOperation {
    /// Id.
    pub id: String,
    /// Subscription.
    pub subscription_id: String,
    /// `ChangePlan`, `Suspend`, ...
    pub action: String,
    /// Plan after it.
    pub plan_id: String,
    /// Quantity after it.
    pub quantity: Option<u64>,
    /// `InProgress`, `Succeeded`, `Failed`.
    pub status: String,
    /// `Azure` or `Partner`.
    pub source: String,
    /// When it was created.
    pub time_stamp: DateTime<Utc>,
    /// When its webhook was answered with a 2xx (the decision window
    /// starts).
    pub webhook_answered_at: Option<DateTime<Utc>>,
    /// How the publisher decided (`Success`/`Failure`), when it did.
    pub decision: Option<String>,
    /// Why it failed.
    pub error_message: Option<String>,
}

/// An accepted usage event.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedUsage {
    /// Microsoft's id.
    pub usage_event_id: String,
    /// The subscription.
    pub resource_id: String,
    /// Dimension.
    pub dimension: String,
    /// Start of the hour.
    pub hour: DateTime<Utc>,
    /// Quantity.
    pub quantity: f64,
    /// Plan.
    pub plan_id: String,
    /// When it arrived (simulator clock).
    pub received_at: DateTime<Utc>,
}

/// A refusal with Microsoft's status and body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Error code.
    pub code: &'static str,
    /// Message.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"code": self.code, "message": self.message, "target": Value::Null, "details": []})
    }
}

/// Everything Microsoft holds.
#[derive(Debug)]
pub struct World {
    /// Publisher id.
    pub publisher_id: String,
    /// Offer id.
    pub offer_id: String,
    /// The offer's plans.
    pub plans: Vec<SimPlan>,
    /// Subscriptions by id.
    pub subscriptions: BTreeMap<String, SimSubscription>,
    /// Operations, in creation order.
    pub operations: Vec<SimOperation>,
    /// Purchase token → (subscription, expiry).
    pub tokens: HashMap<String, (String, DateTime<Utc>)>,
    /// Accepted usage, in arrival order.
    pub usage: Vec<AcceptedUsage>,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl World {
    /// The demo offer `database` with a flat plan, a per-seat plan with
    /// dimensions, and a plan the provider's catalog does not know.
    pub fn new(publisher_id: &str) -> Self {
        Self {
            publisher_id: publisher_id.to_owned(),
            offer_id: "database".into(),
            plans: vec![
                SimPlan {
                    id: "database-free".into(),
                    name: "Free".into(),
                    per_seat: false,
                    dimensions: vec!["requests".into()],
                },
                SimPlan {
                    id: "database-pro".into(),
                    name: "Pro".into(),
                    per_seat: true,
                    dimensions: vec!["requests".into(), "storage_gb".into()],
                },
                SimPlan {
                    id: "database-enterprise".into(),
                    name: "Enterprise".into(),
                    per_seat: false,
                    dimensions: vec![],
                },
            ],
            subscriptions: BTreeMap::new(),
            operations: Vec::new(),
            tokens: HashMap::new(),
            usage: Vec::new(),
        }
    }

    /// A plan of the offer.
    pub fn plan(&self, id: &str) -> Option<&SimPlan> {
        self.plans.iter().find(|p| p.id == id)
    }

    /// The customer buys `plan_id`: a pending subscription and its landing
    /// page token (valid 24 hours).
    pub fn purchase(
        &mut self,
        plan_id: &str,
        quantity: Option<u64>,
        email: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, String), ApiError> {
        let plan = self
            .plan(plan_id)
            .ok_or_else(|| ApiError::new(400, "BadArgument", "unknown plan"))?;
        let quantity = if plan.per_seat {
            Some(quantity.unwrap_or(1).max(1))
        } else {
            None
        };
        let id = guid();
        self.subscriptions.insert(
            id.clone(),
            SimSubscription {
                id: id.clone(),
                name: format!("Contoso {}", &id[..8]),
                offer_id: self.offer_id.clone(),
                plan_id: plan_id.to_owned(),
                quantity,
                status: status::PENDING.into(),
                purchaser_email: email.to_owned(),
                customer_tenant: guid(),
                is_test: false,
                term_start: None,
                term_end: None,
                created: now,
                last_modified: now,
                activations: 0,
                ended_at: None,
            },
        );
        let token = self.issue_token(&id, now);
        Ok((id, token))
    }

    /// A new landing page token for a subscription ("Manage account").
    pub fn issue_token(&mut self, subscription_id: &str, now: DateTime<Utc>) -> String {
        // Opaque, with the characters a real token has that a careless
        // query-string parser breaks (`+`, `/`, `=`).
        let raw = format!("{}{}", guid().replace('-', ""), guid().replace('-', ""));
        let token = format!("{}+{}/{}==", &raw[..20], &raw[20..40], &raw[40..]);
        self.tokens.insert(
            token.clone(),
            (subscription_id.to_owned(), now + ChronoDuration::hours(24)),
        );
        token
    }

    /// Resolve (§3.2).
    pub fn resolve(&self, token: &str, now: DateTime<Utc>) -> Result<Value, ApiError> {
        let Some((id, expires)) = self.tokens.get(token) else {
            return Err(ApiError::new(400, "BadArgument", "the token is not valid"));
        };
        if now > *expires {
            return Err(ApiError::new(400, "BadArgument", "the token has expired"));
        }
        let subscription = self
            .subscriptions
            .get(id)
            .ok_or_else(|| ApiError::new(400, "BadArgument", "the token is not valid"))?;
        let mut body = json!({
            "id": subscription.id,
            "subscriptionName": subscription.name,
            "offerId": subscription.offer_id,
            "planId": subscription.plan_id,
            "subscription": self.subscription_json(subscription),
        });
        if let Some(quantity) = subscription.quantity {
            body["quantity"] = json!(quantity);
        }
        Ok(body)
    }

    /// The Subscription object (§3.5).
    pub fn subscription_json(&self, s: &SimSubscription) -> Value {
        let mut body = json!({
            "id": s.id,
            "name": s.name,
            "publisherId": self.publisher_id,
            "offerId": s.offer_id,
            "planId": s.plan_id,
            "beneficiary": {"emailId": s.purchaser_email, "objectId": guid_of(&s.id, "b"), "tenantId": s.customer_tenant, "puid": "1234567890"},
            "purchaser": {"emailId": s.purchaser_email, "objectId": guid_of(&s.id, "p"), "tenantId": s.customer_tenant, "puid": "1234567890"},
            "allowedCustomerOperations": ["Read", "Update", "Delete"],
            "sessionMode": "None",
            "isFreeTrial": false,
            "isTest": s.is_test,
            "sandboxType": "None",
            "autoRenew": true,
            "saasSubscriptionStatus": s.status,
            "created": rfc3339(s.created),
            "lastModified": rfc3339(s.last_modified),
            "futureField": {"ignored": true},
        });
        if let Some(quantity) = s.quantity {
            body["quantity"] = json!(quantity);
        }
        if let (Some(start), Some(end)) = (s.term_start, s.term_end) {
            body["term"] =
                json!({"startDate": rfc3339(start), "endDate": rfc3339(end), "termUnit": "P1M"});
        }
        body
    }

    fn subscription_mut(&mut self, id: &str) -> Result<&mut SimSubscription, ApiError> {
        self.subscriptions
            .get_mut(id)
            .ok_or_else(|| ApiError::new(404, "EntityNotFound", "subscription not found"))
    }

    /// Activate (§3.3).
    pub fn activate(
        &mut self,
        id: &str,
        plan_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let subscription = self.subscription_mut(id)?;
        if subscription.status == status::UNSUBSCRIBED {
            return Err(ApiError::new(
                404,
                "EntityNotFound",
                "subscription not found",
            ));
        }
        if plan_id.is_empty() || plan_id != subscription.plan_id {
            return Err(ApiError::new(
                400,
                "BadArgument",
                "planId is missing or not the purchased plan",
            ));
        }
        if subscription.status == status::SUBSCRIBED {
            // Microsoft refuses a second activation.
            return Err(ApiError::new(
                400,
                "BadArgument",
                "the subscription is already activated",
            ));
        }
        if subscription.status != status::PENDING {
            return Err(ApiError::new(
                400,
                "BadArgument",
                "the subscription cannot be activated in its state",
            ));
        }
        subscription.status = status::SUBSCRIBED.into();
        subscription.term_start = Some(now);
        subscription.term_end = Some(now + ChronoDuration::days(30));
        subscription.last_modified = now;
        subscription.activations += 1;
        Ok(())
    }

    fn validate_change(
        &self,
        id: &str,
        plan_id: Option<&str>,
        quantity: Option<u64>,
    ) -> Result<(), ApiError> {
        let subscription = self
            .subscriptions
            .get(id)
            .ok_or_else(|| ApiError::new(404, "EntityNotFound", "subscription not found"))?;
        if subscription.status != status::SUBSCRIBED {
            return Err(ApiError::new(
                400,
                "BadArgument",
                "the subscription is not Subscribed",
            ));
        }
        if self
            .operations
            .iter()
            .any(|o| o.subscription_id == id && o.status == "InProgress")
        {
            return Err(ApiError::new(
                400,
                "BadArgument",
                "an operation is in progress for this subscription",
            ));
        }
        match (plan_id, quantity) {
            (Some(_), Some(_)) | (None, None) => Err(ApiError::new(
                400,
                "BadArgument",
                "give either planId or quantity",
            )),
            (Some(plan), None) => {
                if self.plan(plan).is_none() {
                    return Err(ApiError::new(
                        400,
                        "BadArgument",
                        "the plan is not in the offer",
                    ));
                }
                if plan == subscription.plan_id {
                    return Err(ApiError::new(400, "BadArgument", "the plan is the same"));
                }
                Ok(())
            }
            (None, Some(quantity)) => {
                let per_seat = self.plan(&subscription.plan_id).is_some_and(|p| p.per_seat);
                if !per_seat || quantity == 0 || quantity > 1_000_000 {
                    return Err(ApiError::new(
                        400,
                        "BadArgument",
                        "the quantity is not valid",
                    ));
                }
                if Some(quantity) == subscription.quantity {
                    return Err(ApiError::new(
                        400,
                        "BadArgument",
                        "the quantity is the same",
                    ));
                }
                Ok(())
            }
        }
    }

    /// A change of plan or quantity. From the publisher (`Partner`) it
    /// completes at once; from the customer (`Azure`) it waits for the
    /// publisher's decision. Returns the operation id.
    pub fn change(
        &mut self,
        id: &str,
        plan_id: Option<&str>,
        quantity: Option<u64>,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        self.validate_change(id, plan_id, quantity)?;
        let current = self.subscriptions[id].clone();
        let action = if plan_id.is_some() {
            "ChangePlan"
        } else {
            "ChangeQuantity"
        };
        let operation = SimOperation {
            id: guid(),
            subscription_id: id.to_owned(),
            action: action.into(),
            plan_id: plan_id
                .map(str::to_owned)
                .unwrap_or(current.plan_id.clone()),
            quantity: quantity.or(current.quantity),
            status: "InProgress".into(),
            source: source.into(),
            time_stamp: now,
            webhook_answered_at: None,
            decision: None,
            error_message: None,
        };
        let operation_id = operation.id.clone();
        self.operations.push(operation);
        if source == "Partner" {
            self.succeed(&operation_id, now);
        }
        Ok(operation_id)
    }

    /// An inform-only action (`Suspend`, `Reinstate`, `Unsubscribe`,
    /// `Renew`), applied at once with a `Succeeded` operation.
    pub fn inform(
        &mut self,
        id: &str,
        action: &str,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        let subscription = self.subscription_mut(id)?;
        let allowed = match action {
            "Suspend" | "Renew" => subscription.status == status::SUBSCRIBED,
            "Reinstate" => subscription.status == status::SUSPENDED,
            "Unsubscribe" => subscription.status != status::UNSUBSCRIBED,
            _ => false,
        };
        if !allowed {
            return Err(ApiError::new(
                400,
                "BadArgument",
                format!("{action} is not possible while {}", subscription.status),
            ));
        }
        match action {
            "Suspend" => subscription.status = status::SUSPENDED.into(),
            "Reinstate" => subscription.status = status::SUBSCRIBED.into(),
            "Unsubscribe" => {
                if subscription.status == status::SUBSCRIBED {
                    subscription.ended_at = Some(now);
                }
                subscription.status = status::UNSUBSCRIBED.into();
            }
            _ => {
                let start = subscription.term_end.unwrap_or(now);
                subscription.term_start = Some(start);
                subscription.term_end = Some(start + ChronoDuration::days(30));
            }
        }
        subscription.last_modified = now;
        let operation = SimOperation {
            id: guid(),
            subscription_id: id.to_owned(),
            action: action.into(),
            plan_id: subscription.plan_id.clone(),
            quantity: subscription.quantity,
            status: "Succeeded".into(),
            source: source.into(),
            time_stamp: now,
            webhook_answered_at: None,
            decision: None,
            error_message: None,
        };
        let operation_id = operation.id.clone();
        self.operations.push(operation);
        Ok(operation_id)
    }

    /// An operation by id.
    pub fn operation(&self, id: &str) -> Option<&SimOperation> {
        self.operations.iter().find(|o| o.id == id)
    }

    fn operation_mut(&mut self, id: &str) -> Option<&mut SimOperation> {
        self.operations.iter_mut().find(|o| o.id == id)
    }

    /// Completes a waiting operation: the change applies.
    pub fn succeed(&mut self, operation_id: &str, now: DateTime<Utc>) {
        let Some(operation) = self.operation_mut(operation_id) else {
            return;
        };
        if operation.status != "InProgress" {
            return;
        }
        operation.status = "Succeeded".into();
        let (subscription_id, plan_id, quantity) = (
            operation.subscription_id.clone(),
            operation.plan_id.clone(),
            operation.quantity,
        );
        if let Some(subscription) = self.subscriptions.get_mut(&subscription_id) {
            subscription.plan_id = plan_id;
            subscription.quantity = quantity;
            subscription.last_modified = now;
        }
    }

    /// Fails a waiting operation: nothing changes.
    pub fn fail(&mut self, operation_id: &str, message: &str) {
        if let Some(operation) = self.operation_mut(operation_id)
            && operation.status == "InProgress"
        {
            operation.status = "Failed".into();
            operation.error_message = Some(message.to_owned());
        }
    }

    /// Accepts on their own the changes the publisher let pass the
    /// decision window (or every waiting one, with `all`).
    pub fn settle_waiting(&mut self, now: DateTime<Utc>, all: bool) -> Vec<String> {
        let due: Vec<String> = self
            .operations
            .iter()
            .filter(|o| o.status == "InProgress" && o.source == "Azure")
            .filter(|o| {
                all || o
                    .webhook_answered_at
                    .is_some_and(|at| now >= at + DECISION_WINDOW)
            })
            .map(|o| o.id.clone())
            .collect();
        for id in &due {
            self.succeed(id, now);
        }
        due
    }

    /// The publisher's PATCH of an operation (§3.9).
    pub fn decide(
        &mut self,
        subscription_id: &str,
        operation_id: &str,
        decision: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        self.settle_waiting(now, false);
        let Some(operation) = self
            .operation(operation_id)
            .filter(|o| o.subscription_id == subscription_id)
            .cloned()
        else {
            return Err(ApiError::new(404, "EntityNotFound", "operation not found"));
        };
        if decision != "Success" && decision != "Failure" {
            return Err(ApiError::new(
                400,
                "InvalidValue",
                "status must be Success or Failure",
            ));
        }
        if operation.source == "Partner" {
            return Err(ApiError::new(
                500,
                "InternalError",
                "operation started by the publisher",
            ));
        }
        if !matches!(operation.action.as_str(), "ChangePlan" | "ChangeQuantity") {
            return Err(ApiError::new(
                400,
                "BadArgument",
                "this operation cannot be updated",
            ));
        }
        if operation.status != "InProgress" {
            return Err(ApiError::new(
                409,
                "Conflict",
                "the operation is already settled",
            ));
        }
        if let Some(op) = self.operation_mut(operation_id) {
            op.decision = Some(decision.to_owned());
        }
        if decision == "Success" {
            self.succeed(operation_id, now);
        } else {
            self.fail(operation_id, "declined by the publisher");
        }
        Ok(())
    }

    /// The Operation object (§3.9).
    pub fn operation_json(&self, o: &SimOperation) -> Value {
        let mut body = json!({
            "id": o.id,
            "activityId": guid_of(&o.id, "a"),
            "subscriptionId": o.subscription_id,
            "offerId": self.offer_id,
            "publisherId": self.publisher_id,
            "planId": o.plan_id,
            "action": o.action,
            "timeStamp": rfc3339(o.time_stamp),
            "status": o.status,
            "operationRequestSource": o.source,
            "errorStatusCode": "",
            "errorMessage": o.error_message.clone().unwrap_or_default(),
        });
        if let Some(quantity) = o.quantity {
            body["quantity"] = json!(quantity);
        }
        body
    }

    /// The webhook body of an operation: the operation, the subscription
    /// as it is now and `purchaseToken: null`.
    pub fn webhook_json(&self, operation_id: &str) -> Option<Value> {
        let operation = self.operation(operation_id)?;
        let subscription = self.subscriptions.get(&operation.subscription_id)?;
        let mut body = self.operation_json(operation);
        body["subscription"] = self.subscription_json(subscription);
        body["purchaseToken"] = Value::Null;
        Some(body)
    }

    /// One usage event (§6.1): its per-item status and result body.
    pub fn usage_event(&mut self, event: &Value, now: DateTime<Utc>) -> (String, Value) {
        let field = |name: &str| event.get(name).cloned().unwrap_or(Value::Null);
        let resource_id = field("resourceId").as_str().unwrap_or_default().to_owned();
        let dimension = field("dimension").as_str().unwrap_or_default().to_owned();
        let plan_id = field("planId").as_str().unwrap_or_default().to_owned();
        let quantity = field("quantity").as_f64().unwrap_or(0.0);
        let start = field("effectiveStartTime")
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let mut result = event.clone();
        let refuse = |mut result: Value, status: &str, message: &str| {
            result["status"] = json!(status);
            result["error"] = json!({"message": message, "target": "usageEvent", "code": status});
            (status.to_owned(), result)
        };
        let Some(start) = start else {
            return refuse(result, "BadArgument", "effectiveStartTime is not a date");
        };
        if quantity <= 0.0 || !quantity.is_finite() {
            return refuse(result, "InvalidQuantity", "quantity must be above 0");
        }
        if start < now - ChronoDuration::hours(24) {
            return refuse(result, "Expired", "the usage is more than 24 hours old");
        }
        if start > now {
            return refuse(result, "BadArgument", "the usage is in the future");
        }
        let Some(subscription) = self.subscriptions.get(&resource_id) else {
            return refuse(result, "ResourceNotFound", "unknown resource");
        };
        let hour = start
            .duration_trunc(ChronoDuration::hours(1))
            .unwrap_or(start);
        let ended_after_hour = subscription.ended_at.is_some_and(|end| hour < end);
        if subscription.status != status::SUBSCRIBED && !ended_after_hour {
            return refuse(
                result,
                "ResourceNotActive",
                "the subscription is not active",
            );
        }
        if plan_id != subscription.plan_id {
            return refuse(result, "BadArgument", "the plan is not the subscription's");
        }
        if !self
            .plan(&plan_id)
            .is_some_and(|p| p.dimensions.contains(&dimension))
        {
            return refuse(result, "InvalidDimension", "the plan has no such dimension");
        }
        if let Some(first) = self
            .usage
            .iter()
            .find(|u| u.resource_id == resource_id && u.dimension == dimension && u.hour == hour)
        {
            result["status"] = json!("Duplicate");
            result["error"] = json!({
                "message": "This usage event already exist.",
                "code": "Conflict",
                "additionalInfo": {"acceptedMessage": {"usageEventId": first.usage_event_id, "status": "Duplicate", "quantity": first.quantity}},
            });
            return ("Duplicate".into(), result);
        }
        let accepted = AcceptedUsage {
            usage_event_id: guid(),
            resource_id,
            dimension,
            hour,
            quantity,
            plan_id,
            received_at: now,
        };
        result["usageEventId"] = json!(accepted.usage_event_id);
        result["status"] = json!("Accepted");
        result["messageTime"] = json!(rfc3339(now));
        self.usage.push(accepted);
        ("Accepted".into(), result)
    }
}

/// A stable GUID-looking id derived from another.
fn guid_of(id: &str, salt: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{salt}:{id}").as_bytes(),
    )
    .to_string()
}
