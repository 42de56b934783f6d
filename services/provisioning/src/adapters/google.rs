//! Google Cloud Marketplace in provisioning: an entitlement is a
//! subscription. Reads map Google's plan ids to catalog plans (through each
//! plan's `marketplace_plan_ids.google`) and Google's states to ours;
//! approvals and plan change decisions are Procurement API calls, each safe
//! to repeat, and plan change decisions always name the `newPendingPlan`
//! read just before the call.

use crate::entity::subscription;
use crate::marketplace::{ProvisioningMarketplace, ResourceChange, SubscriptionSnapshot};
use crate::model::{ExternalId, PlanId, SubscriptionState};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marketbridge_catalog::{Catalog, Product};
use marketbridge_core::{Error, Result};
use marketbridge_google::procurement::{
    self, Entitlement, ProcurementClient, entitlement_attributes, entitlement_state,
};
use std::sync::Arc;

/// The marketplace name in `marketplace_plan_ids`.
const GOOGLE: &str = "google";

/// Provisioning's calls to the Procurement API.
pub struct GoogleEntitlements {
    procurement: ProcurementClient,
    catalog: Arc<Catalog>,
}

impl GoogleEntitlements {
    /// The adapter over `procurement`, mapping plans with `catalog`.
    pub fn new(procurement: ProcurementClient, catalog: Arc<Catalog>) -> Self {
        Self {
            procurement,
            catalog,
        }
    }

    /// The catalog product an entitlement is for: the product whose id is
    /// Google's product name (or its first label, for a service domain),
    /// else the product offering Google's plan.
    fn product_for(&self, google_product: &str, google_plan: &str) -> Option<&Product> {
        let first_label = google_product.split('.').next().unwrap_or_default();
        self.catalog
            .products()
            .iter()
            .find(|p| p.id == google_product || (!first_label.is_empty() && p.id == first_label))
            .or_else(|| {
                self.catalog.products().iter().find(|p| {
                    p.plans
                        .iter()
                        .any(|plan| plan.marketplace_plan_id(GOOGLE) == google_plan)
                })
            })
    }

    /// Our plan id for Google's plan id in `product` (Google's id verbatim
    /// when the catalog does not know it; such plans are refused).
    fn plan_id(product: Option<&Product>, google_plan: &str) -> String {
        product
            .and_then(|p| {
                p.plans
                    .iter()
                    .find(|plan| plan.marketplace_plan_id(GOOGLE) == google_plan)
            })
            .map(|plan| plan.id.clone())
            .unwrap_or_else(|| google_plan.to_owned())
    }

    /// Google's plan id for our plan id.
    fn google_plan_id(&self, subscription: &subscription::Model, plan_id: &PlanId) -> String {
        self.catalog
            .product(&subscription.product_id)
            .and_then(|p| p.plan(plan_id.as_str()))
            .map(|plan| plan.marketplace_plan_id(GOOGLE))
            .unwrap_or_else(|| plan_id.to_string())
    }

    /// What we keep of an entitlement.
    pub fn snapshot(&self, entitlement: &Entitlement) -> SubscriptionSnapshot {
        let google_product = entitlement
            .product_external_name
            .clone()
            .or_else(|| entitlement.product.clone())
            .unwrap_or_default();
        let google_plan = entitlement.plan.clone().unwrap_or_default();
        let product = self.product_for(&google_product, &google_plan);
        let plan_id = Self::plan_id(product, &google_plan);
        let pending_plan_id = entitlement
            .new_pending_plan
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| Self::plan_id(product, p))
            .unwrap_or_default();
        let google_state = entitlement.state();
        let our_state = match google_state {
            entitlement_state::ACTIVATION_REQUESTED => Some(SubscriptionState::Requested),
            entitlement_state::ACTIVE => Some(SubscriptionState::Active),
            entitlement_state::PENDING_PLAN_CHANGE
            | entitlement_state::PENDING_PLAN_CHANGE_APPROVAL => {
                Some(SubscriptionState::PendingPlanChange)
            }
            entitlement_state::PENDING_CANCELLATION => Some(SubscriptionState::PendingCancellation),
            entitlement_state::CANCELLED => Some(SubscriptionState::Cancelled),
            // Suspension is not supported by Google yet; keep what we have.
            _ => None,
        };
        SubscriptionSnapshot {
            account_external_id: ExternalId::new(entitlement.account_id()),
            product_id: product
                .map(|p| p.id.clone())
                .unwrap_or_else(|| google_product.clone()),
            plan_id,
            pending_plan_id,
            state: our_state,
            marketplace_state: google_state.to_owned(),
            update_time: entitlement
                .update_time
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
                .map(|t| t.with_timezone(&Utc)),
            usage_reporting_id: entitlement.usage_reporting_id.clone().unwrap_or_default(),
            order_id: entitlement.order_id.clone().unwrap_or_default(),
            reason: entitlement.cancellation_reason.clone().unwrap_or_default(),
            attributes: entitlement_attributes(entitlement),
            plan_change_needs_approval: google_state
                == entitlement_state::PENDING_PLAN_CHANGE_APPROVAL,
        }
    }

    /// The entitlement now, or a not-found error.
    async fn current(&self, external_id: &ExternalId) -> Result<Option<Entitlement>> {
        self.procurement.get_entitlement(external_id.as_str()).await
    }
}

#[async_trait]
impl ProvisioningMarketplace for GoogleEntitlements {
    async fn fetch_subscription(
        &self,
        external_id: &ExternalId,
    ) -> Result<Option<SubscriptionSnapshot>> {
        Ok(self
            .current(external_id)
            .await?
            .map(|entitlement| self.snapshot(&entitlement)))
    }

    async fn approve_subscription(&self, subscription: &subscription::Model) -> Result<()> {
        let external_id = &ExternalId::new(&subscription.external_id);
        let refused = match self
            .procurement
            .approve_entitlement(external_id.as_str())
            .await
        {
            Ok(()) => return Ok(()),
            Err(error) if procurement::is_precondition_failure(&error) => error,
            Err(error) if error.code() == marketbridge_core::ErrorCode::NotFound => {
                tracing::info!(google.entitlement = %external_id, "entitlement gone before its approval");
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        // Refused: fine when it is already past activation.
        match self.current(external_id).await? {
            None => Ok(()),
            Some(entitlement) if entitlement.state() != entitlement_state::ACTIVATION_REQUESTED => {
                tracing::info!(google.entitlement = %external_id, state = %entitlement.state(), "entitlement already approved");
                Ok(())
            }
            Some(_) => Err(Error::unavailable(format!(
                "Google refused to approve entitlement {external_id} (its account's signup may not be approved yet): {}",
                refused.message()
            ))),
        }
    }

    async fn reject_subscription(
        &self,
        subscription: &subscription::Model,
        reason: &str,
    ) -> Result<()> {
        let external_id = &ExternalId::new(&subscription.external_id);
        match self
            .procurement
            .reject_entitlement(external_id.as_str(), reason)
            .await
        {
            Ok(()) => Ok(()),
            Err(error)
                if procurement::is_precondition_failure(&error)
                    || error.code() == marketbridge_core::ErrorCode::NotFound =>
            {
                match self.current(external_id).await? {
                    None => Ok(()),
                    Some(entitlement) => Err(Error::conflict(format!(
                        "entitlement {external_id} is {} and can no longer be rejected",
                        entitlement.state()
                    ))),
                }
            }
            Err(error) => Err(error),
        }
    }

    async fn approve_plan_change(
        &self,
        subscription: &subscription::Model,
        pending_plan_id: &PlanId,
    ) -> Result<()> {
        let Some(pending) = self.pending_plan_for(subscription, pending_plan_id).await? else {
            return Ok(());
        };
        self.procurement
            .approve_plan_change(&subscription.external_id, &pending)
            .await
    }

    async fn reject_plan_change(
        &self,
        subscription: &subscription::Model,
        pending_plan_id: &PlanId,
        reason: &str,
    ) -> Result<()> {
        let Some(pending) = self.pending_plan_for(subscription, pending_plan_id).await? else {
            return Ok(());
        };
        self.procurement
            .reject_plan_change(&subscription.external_id, &pending, reason)
            .await
    }

    async fn resource_changed(&self, _change: &ResourceChange) -> Result<()> {
        // Google is not told about individual resources.
        Ok(())
    }

    async fn list_subscription_ids(&self) -> Result<Vec<ExternalId>> {
        Ok(self
            .procurement
            .list_all_entitlements("")
            .await?
            .iter()
            .map(|e| e.id())
            .filter(|id| !id.is_empty())
            .map(ExternalId::new)
            .collect())
    }
}

impl GoogleEntitlements {
    /// Google's current `newPendingPlan` when it is the change we decide on
    /// and still waits for our decision; `None` when there is nothing (left)
    /// to decide.
    async fn pending_plan_for(
        &self,
        subscription: &subscription::Model,
        pending_plan_id: &PlanId,
    ) -> Result<Option<String>> {
        let external_id = ExternalId::new(&subscription.external_id);
        let Some(entitlement) = self.current(&external_id).await? else {
            return Ok(None);
        };
        if entitlement.state() != entitlement_state::PENDING_PLAN_CHANGE_APPROVAL {
            tracing::info!(google.entitlement = %subscription.external_id, state = %entitlement.state(), "no plan change waits for a decision");
            return Ok(None);
        }
        let Some(pending) = entitlement
            .new_pending_plan
            .clone()
            .filter(|p| !p.is_empty())
        else {
            return Ok(None);
        };
        let expected = self.google_plan_id(subscription, pending_plan_id);
        if pending != expected {
            tracing::info!(google.entitlement = %subscription.external_id, pending = %pending, decided = %expected, "the customer asked for another plan since; deciding later");
            return Ok(None);
        }
        Ok(Some(pending))
    }
}
