//! Azure Marketplace in provisioning: a SaaS subscription is a
//! subscription of the account of the same id. Reads map Azure's plan ids
//! to catalog plans (each plan's `marketplace_plan_ids.azure`) and its
//! states to ours (`PendingFulfillmentStart` → requested, `Subscribed` and
//! `Suspended` → active (suspension acts on the resources), `Unsubscribed`
//! → cancelled). Approving activates the subscription with the purchased
//! plan (Activate is synchronous, so approval makes it active); rejecting
//! and cancelling delete it. Customer plan and seat changes are decided by
//! the account service within Microsoft's ten seconds, so none waits here.

use crate::entity::subscription;
use crate::marketplace::{ProvisioningMarketplace, ResourceChange, SubscriptionSnapshot};
use crate::model::{ExternalId, PlanId, SubscriptionState};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marketbridge_azure::CATALOG_NAME;
use marketbridge_azure::fulfillment::FulfillmentClient;
use marketbridge_azure::model::{Subscription, status};
use marketbridge_catalog::{Catalog, Product};
use marketbridge_core::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Provisioning's calls to the Fulfillment API.
pub struct AzureSubscriptions {
    fulfillment: FulfillmentClient,
    catalog: Arc<Catalog>,
}

impl AzureSubscriptions {
    /// The adapter over `fulfillment`, mapping plans with `catalog`.
    pub fn new(fulfillment: FulfillmentClient, catalog: Arc<Catalog>) -> Self {
        Self {
            fulfillment,
            catalog,
        }
    }

    /// The catalog product of an offer: the product named like the offer,
    /// else the product with Azure's plan.
    fn product_for(&self, offer: &str, azure_plan: &str) -> Option<&Product> {
        self.catalog
            .products()
            .iter()
            .find(|p| p.id == offer)
            .or_else(|| {
                self.catalog.products().iter().find(|p| {
                    p.plans.iter().any(|plan| {
                        plan.marketplace_plan_ids
                            .get(CATALOG_NAME)
                            .map(String::as_str)
                            == Some(azure_plan)
                    })
                })
            })
    }

    /// Our plan id for Azure's (Azure's verbatim when the catalog does not
    /// map it; such plans are refused).
    fn plan_id(product: Option<&Product>, azure_plan: &str) -> String {
        product
            .and_then(|p| {
                p.plans.iter().find(|plan| {
                    plan.marketplace_plan_ids
                        .get(CATALOG_NAME)
                        .map(String::as_str)
                        == Some(azure_plan)
                })
            })
            .map(|plan| plan.id.clone())
            .unwrap_or_else(|| azure_plan.to_owned())
    }

    /// What we keep of a SaaS subscription.
    pub fn snapshot(&self, subscription: &Subscription) -> SubscriptionSnapshot {
        let product = self.product_for(subscription.offer(), subscription.plan());
        let state = match subscription.status() {
            status::PENDING_FULFILLMENT_START | status::NOT_STARTED => {
                Some(SubscriptionState::Requested)
            }
            status::SUBSCRIBED | status::SUSPENDED => Some(SubscriptionState::Active),
            status::UNSUBSCRIBED => Some(SubscriptionState::Cancelled),
            _ => None,
        };
        let mut attributes = BTreeMap::new();
        attributes.insert("azure_plan".to_owned(), subscription.plan().to_owned());
        if let Some(quantity) = subscription.quantity {
            attributes.insert("azure_quantity".to_owned(), quantity.to_string());
        }
        if let Some(term) = &subscription.term {
            if let Some(start) = &term.start_date {
                attributes.insert("azure_term_start".to_owned(), start.clone());
            }
            if let Some(end) = &term.end_date {
                attributes.insert("azure_term_end".to_owned(), end.clone());
            }
        }
        if subscription.is_test_purchase() {
            attributes.insert("azure_test_purchase".to_owned(), "true".to_owned());
        }
        SubscriptionSnapshot {
            account_external_id: ExternalId::new(&subscription.id),
            product_id: product
                .map(|p| p.id.clone())
                .unwrap_or_else(|| subscription.offer().to_owned()),
            plan_id: Self::plan_id(product, subscription.plan()),
            pending_plan_id: String::new(),
            state,
            marketplace_state: subscription.status().to_owned(),
            update_time: subscription
                .last_modified
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
                .map(|t| t.with_timezone(&Utc)),
            // The metering resourceId.
            usage_reporting_id: subscription.id.clone(),
            order_id: String::new(),
            reason: String::new(),
            attributes,
            plan_change_needs_approval: false,
        }
    }

    fn azure_plan_id(&self, subscription: &subscription::Model, plan_id: &PlanId) -> String {
        self.catalog
            .product(&subscription.product_id)
            .and_then(|p| p.plan(plan_id.as_str()))
            .map(|plan| plan.marketplace_plan_id(CATALOG_NAME))
            .unwrap_or_else(|| plan_id.to_string())
    }
}

#[async_trait]
impl ProvisioningMarketplace for AzureSubscriptions {
    async fn fetch_subscription(
        &self,
        external_id: &ExternalId,
    ) -> Result<Option<SubscriptionSnapshot>> {
        Ok(self
            .fulfillment
            .get_subscription(external_id.as_str())
            .await?
            .map(|s| self.snapshot(&s)))
    }

    async fn approve_subscription(&self, subscription: &subscription::Model) -> Result<()> {
        let Some(current) = self
            .fulfillment
            .get_subscription(&subscription.external_id)
            .await?
        else {
            tracing::info!(azure.subscription = %subscription.external_id, "subscription gone before its activation");
            return Ok(());
        };
        match current.status() {
            status::PENDING_FULFILLMENT_START | status::NOT_STARTED => {
                self.fulfillment
                    .activate(&current.id, current.plan(), current.quantity)
                    .await
            }
            _ => Ok(()),
        }
    }

    async fn reject_subscription(
        &self,
        subscription: &subscription::Model,
        reason: &str,
    ) -> Result<()> {
        tracing::info!(azure.subscription = %subscription.external_id, reason, "cancelling a refused azure subscription");
        self.fulfillment
            .delete_subscription(&subscription.external_id)
            .await
            .map(|_| ())
    }

    /// A plan change we start (the customer asked in our UI): PATCH.
    async fn approve_plan_change(
        &self,
        subscription: &subscription::Model,
        pending_plan_id: &PlanId,
    ) -> Result<()> {
        let target = self.azure_plan_id(subscription, pending_plan_id);
        let current = self
            .fulfillment
            .get_subscription(&subscription.external_id)
            .await?
            .ok_or_else(|| Error::not_found("the Azure subscription no longer exists"))?;
        if current.plan() == target {
            return Ok(());
        }
        self.fulfillment
            .change_plan(&subscription.external_id, &target)
            .await
            .map(|_| ())
    }

    async fn reject_plan_change(
        &self,
        _subscription: &subscription::Model,
        _pending_plan_id: &PlanId,
        _reason: &str,
    ) -> Result<()> {
        // Customer changes were decided when they arrived; nothing waits.
        Ok(())
    }

    async fn resource_changed(&self, _change: &ResourceChange) -> Result<()> {
        Ok(())
    }

    async fn list_subscription_ids(&self) -> Result<Vec<ExternalId>> {
        Ok(self
            .fulfillment
            .list_subscriptions()
            .await?
            .iter()
            .filter(|s| !s.id.is_empty())
            .map(|s| ExternalId::new(&s.id))
            .collect())
    }

    fn activates_on_approval(&self) -> bool {
        true
    }
}
