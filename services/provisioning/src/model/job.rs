//! The outbox jobs of the provisioning service, stored as kind and payload
//! exactly as before (`NewJob::of`, `Job::decode`): each variant keeps its
//! kind string and its payload's shape.

use super::ids::{PlanId, typed_id};
use chrono::{DateTime, Utc};
use marketbridge_core::ids::{AccountId, ResourceId, SubscriptionId};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Every job the provisioning service runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload")]
pub enum ProvisioningJob {
    /// Provision a pending resource with its driver.
    #[serde(rename = "provisioning.provision")]
    Provision(ResourceJob),
    /// Apply a resource's plan with its driver.
    #[serde(rename = "provisioning.apply_plan")]
    ApplyPlan(ResourceJob),
    /// Finish an asynchronous secret rotation.
    #[serde(rename = "provisioning.complete_rotation")]
    CompleteRotation(ResourceJob),
    /// Revoke secrets whose grace period ended.
    #[serde(rename = "provisioning.revoke_old_secrets")]
    RevokeOldSecrets(ResourceJob),
    /// Suspend with the driver.
    #[serde(rename = "provisioning.suspend")]
    Suspend(ResourceJob),
    /// Resume with the driver.
    #[serde(rename = "provisioning.resume")]
    Resume(ResourceJob),
    /// Tear down with the driver.
    #[serde(rename = "provisioning.deprovision")]
    Deprovision(ResourceJob),
    /// Tell the marketplace a resource changed.
    #[serde(rename = "provisioning.notify_marketplace")]
    Notify(ResourceJob),
    /// Approve a subscription at the marketplace.
    #[serde(rename = "provisioning.approve_subscription")]
    Approve(SubscriptionJob),
    /// Reject a subscription at the marketplace.
    #[serde(rename = "provisioning.reject_subscription")]
    Reject(SubscriptionJob),
    /// Approve or reject a plan change at the marketplace.
    #[serde(rename = "provisioning.plan_change_decision")]
    PlanChange(PlanChangeJob),
    /// Revoke the secrets issued for the marketplace when a linked
    /// (imported) resource is detached.
    #[serde(rename = "provisioning.detach_linked")]
    Detach(ResourceJob),
    /// Tell billing a subscription changed.
    #[serde(rename = "provisioning.billing_subscription_change")]
    BillingChange(BillingChangeJob),
}

impl ProvisioningJob {
    /// The kind of [`ProvisioningJob::BillingChange`], which every new
    /// subscription causes: a provision waits for a slot of its lane
    /// ([`marketbridge_storage::Call::admitting`]).
    pub const BILLING_CHANGE: &'static str = "provisioning.billing_subscription_change";
}

/// A rotation whose new secrets wait for the driver; encrypted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRotation {
    /// The new secrets, encrypted.
    pub sealed_secrets: String,
    /// Only some secrets changed.
    pub partial: bool,
    /// The driver's notes after rotation.
    pub state: Json,
    /// Grace period of the old secrets.
    pub old_valid_for_seconds: u64,
}

/// Payload of resource jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceJob {
    /// The resource.
    #[serde(with = "typed_id")]
    pub resource_id: ResourceId,
    /// Push the current secrets to the marketplace too.
    #[serde(default)]
    pub push_secrets: bool,
    /// A pending rotation.
    #[serde(default)]
    pub sealed: Option<PendingRotation>,
}

impl ResourceJob {
    /// A job about a resource.
    pub fn plain(resource_id: &ResourceId) -> Self {
        Self {
            resource_id: resource_id.clone(),
            push_secrets: false,
            sealed: None,
        }
    }
}

/// Payload of subscription jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionJob {
    /// The subscription.
    #[serde(with = "typed_id")]
    pub subscription_id: SubscriptionId,
    /// Reason, for rejections.
    #[serde(default)]
    pub reason: String,
}

impl SubscriptionJob {
    /// A job about a subscription.
    pub fn new(subscription_id: &SubscriptionId) -> Self {
        Self::with_reason(subscription_id, "")
    }

    /// A job about a subscription, with a reason.
    pub fn with_reason(subscription_id: &SubscriptionId, reason: &str) -> Self {
        Self {
            subscription_id: subscription_id.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// Payload of telling billing about a subscription's version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingChangeJob {
    /// The subscription.
    #[serde(with = "typed_id")]
    pub subscription_id: SubscriptionId,
    /// What billing is told, when the change that enqueued the job knew all
    /// of it (a new subscription and its one resource): the job then sends
    /// it without reading. Without it (jobs of every other change, and jobs
    /// stored before it existed) the job reads the subscription's latest
    /// state when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<SubscriptionAsOf>,
}

/// A subscription's billing terms at one version, with its live resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionAsOf {
    /// The owning account.
    #[serde(with = "typed_id")]
    pub account_id: AccountId,
    /// The marketplace the subscription was bought on.
    pub marketplace: String,
    /// The marketplace's id of the subscription.
    pub external_id: String,
    /// The product.
    pub product_id: String,
    /// The plan in force.
    pub plan_id: String,
    /// Whether the marketplace bills it.
    pub billable: bool,
    /// Whether it ended.
    pub ended: bool,
    /// The marketplace's id for usage reports.
    pub usage_reporting_id: String,
    /// Its live resources, oldest id first.
    pub resource_ids: Vec<String>,
    /// When this version took effect.
    pub effective_at: DateTime<Utc>,
    /// The version.
    pub version: i64,
}

/// Payload of plan change decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanChangeJob {
    /// The subscription.
    #[serde(with = "typed_id")]
    pub subscription_id: SubscriptionId,
    /// The plan decided on.
    pub pending_plan_id: PlanId,
    /// Approve (or reject).
    pub approve: bool,
    /// Reason of a rejection.
    #[serde(default)]
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jobs_keep_their_kinds_and_payload_shapes() {
        let resource = ResourceId::generate();
        let subscription = SubscriptionId::generate();
        let encoded =
            serde_json::to_value(ProvisioningJob::Notify(ResourceJob::plain(&resource))).unwrap();
        assert_eq!(
            encoded,
            json!({"kind": "provisioning.notify_marketplace", "payload": {
                "resource_id": resource.as_str(), "push_secrets": false, "sealed": null}})
        );
        let encoded = serde_json::to_value(ProvisioningJob::PlanChange(PlanChangeJob {
            subscription_id: subscription.clone(),
            pending_plan_id: PlanId::new("pro"),
            approve: true,
            reason: String::new(),
        }))
        .unwrap();
        assert_eq!(
            encoded,
            json!({"kind": "provisioning.plan_change_decision", "payload": {
                "subscription_id": subscription.as_str(), "pending_plan_id": "pro",
                "approve": true, "reason": ""}})
        );
        // Rows written before (no `sealed`, no `as_of`; a `reason` once
        // written by billing changes) still read.
        let unread = ProvisioningJob::BillingChange(BillingChangeJob {
            subscription_id: subscription.clone(),
            as_of: None,
        });
        for payload in [
            json!({"subscription_id": subscription.as_str()}),
            json!({"subscription_id": subscription.as_str(), "reason": ""}),
        ] {
            let old: ProvisioningJob = serde_json::from_value(json!({
                "kind": "provisioning.billing_subscription_change",
                "payload": payload}))
            .unwrap();
            assert_eq!(old, unread);
        }
        assert_eq!(
            serde_json::to_value(&unread).unwrap(),
            json!({"kind": "provisioning.billing_subscription_change",
                "payload": {"subscription_id": subscription.as_str()}})
        );
        assert_eq!(
            marketbridge_storage::outbox::NewJob::of(&unread)
                .unwrap()
                .kind(),
            ProvisioningJob::BILLING_CHANGE
        );
        // A corrupt id is refused, not defaulted.
        assert!(
            serde_json::from_value::<ProvisioningJob>(json!({
                "kind": "provisioning.provision", "payload": {"resource_id": "nope"}}))
            .is_err()
        );
    }
}
