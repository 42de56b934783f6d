//! The seam where a marketplace plugs into provisioning: reading and
//! approving subscriptions at the marketplace, and telling it when a resource
//! changed. A marketplace without an adapter (direct customers) approves
//! everything at once and needs no notifications.

use crate::driver::Secret;
use crate::entity::{resource, subscription};
use crate::model::{ExternalId, PlanId, SubscriptionState};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marketbridge_core::{Marketplace, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// A subscription as the marketplace describes it now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriptionSnapshot {
    /// The marketplace id of the owning account.
    pub account_external_id: ExternalId,
    /// Our product id.
    pub product_id: String,
    /// Our plan id in force.
    pub plan_id: String,
    /// Our plan id the customer asked for, if a change is pending.
    pub pending_plan_id: String,
    /// Our state, when the marketplace's maps to one.
    pub state: Option<SubscriptionState>,
    /// The marketplace's state, verbatim.
    pub marketplace_state: String,
    /// The marketplace's update time.
    pub update_time: Option<DateTime<Utc>>,
    /// Usage reporting id.
    pub usage_reporting_id: String,
    /// Order id.
    pub order_id: String,
    /// Cancellation reason, when cancelled.
    pub reason: String,
    /// Extras.
    pub attributes: BTreeMap<String, String>,
    /// True when the marketplace waits for the provider to approve a plan
    /// change.
    pub plan_change_needs_approval: bool,
}

/// A change of a resource the marketplace should hear about.
#[derive(Debug, Clone)]
pub struct ResourceChange {
    /// The marketplace id of the owning account.
    pub account_external_id: ExternalId,
    /// The resource after the change.
    pub resource: resource::Model,
    /// New secrets to push, when they changed.
    pub secrets: Option<Vec<Secret>>,
}

/// Calls provisioning makes to a marketplace.
#[async_trait]
pub trait ProvisioningMarketplace: Send + Sync + 'static {
    /// Reads a subscription; `None` when the marketplace no longer has it.
    async fn fetch_subscription(
        &self,
        external_id: &ExternalId,
    ) -> Result<Option<SubscriptionSnapshot>>;
    /// Approves a requested subscription. Must succeed when already approved.
    async fn approve_subscription(&self, subscription: &subscription::Model) -> Result<()>;
    /// Rejects a requested subscription.
    async fn reject_subscription(
        &self,
        subscription: &subscription::Model,
        reason: &str,
    ) -> Result<()>;
    /// Approves the pending plan change to `pending_plan_id` (our id).
    async fn approve_plan_change(
        &self,
        subscription: &subscription::Model,
        pending_plan_id: &PlanId,
    ) -> Result<()>;
    /// Rejects the pending plan change.
    async fn reject_plan_change(
        &self,
        subscription: &subscription::Model,
        pending_plan_id: &PlanId,
        reason: &str,
    ) -> Result<()>;
    /// Tells the marketplace a resource changed (status, secrets).
    async fn resource_changed(&self, change: &ResourceChange) -> Result<()>;
    /// Marketplace ids of subscriptions to re-read during reconciliation.
    async fn list_subscription_ids(&self) -> Result<Vec<ExternalId>>;
    /// Registers an imported (linked) resource with the marketplace, with
    /// its secrets (Vercel Import Resource, `ownership: "linked"`). Must be
    /// safe to repeat. Marketplaces without an import flow refuse.
    async fn import_resource(&self, change: &ResourceChange) -> Result<()> {
        let _ = change;
        Err(marketbridge_core::Error::unprocessable(
            "this marketplace has no import flow",
        ))
    }
    /// Whether our approval makes the subscription active at once (AWS: the
    /// buyer already paid and the marketplace waits for no answer). By
    /// default the marketplace activates it later, and says so when the
    /// subscription is read again (Google).
    fn activates_on_approval(&self) -> bool {
        false
    }
    /// Whether an account-scoped subscription that becomes usable gets a
    /// resource of its own (a Google entitlement does). A marketplace whose
    /// account-level plans cover resources the customer creates one by one
    /// (Vercel installation-level plans) answers false.
    fn provisions_account_subscriptions(&self) -> bool {
        true
    }
}

/// Adapters per marketplace.
#[derive(Clone, Default)]
pub struct Marketplaces {
    adapters: HashMap<Marketplace, Arc<dyn ProvisioningMarketplace>>,
    reconciliations: Vec<(Marketplace, Duration)>,
}

impl Marketplaces {
    /// Registers the adapter of a marketplace.
    pub fn with_adapter(
        mut self,
        marketplace: Marketplace,
        adapter: Arc<dyn ProvisioningMarketplace>,
    ) -> Self {
        self.adapters.insert(marketplace, adapter);
        self
    }

    /// Reconciles a marketplace's subscriptions every `interval`.
    pub fn with_reconciliation(mut self, marketplace: Marketplace, interval: Duration) -> Self {
        self.reconciliations.push((marketplace, interval));
        self
    }

    /// The periodic reconciliations.
    pub fn reconciliations(&self) -> &[(Marketplace, Duration)] {
        &self.reconciliations
    }

    /// The adapter of a marketplace, if registered.
    pub fn adapter(&self, marketplace: Marketplace) -> Option<&Arc<dyn ProvisioningMarketplace>> {
        self.adapters.get(&marketplace)
    }
}
