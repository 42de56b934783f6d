//! AWS Marketplace in provisioning: a license is a subscription, read with
//! `GetEntitlements`. The contract dimension the catalog maps to a plan
//! (each plan's `marketplace_plan_ids.aws`) picks the plan; every
//! dimension's quantity is kept in the subscription's attributes
//! (`aws_dimension.<name>`), and the plan dimension's quantity as
//! `aws_quantity`. A license without current entitlements is gone at AWS
//! (deprovisioned, expired), which ends the subscription. AWS takes no
//! approvals or decisions: they succeed here, and approval activates.
//!
//! Subscription (pay-as-you-go) products have no entitlements: the account
//! service derives their state from the license events and writes it with
//! `UpsertSubscription`, so nothing here reads them (and they are never
//! taken for gone for lack of entitlements).

use crate::entity::subscription;
use crate::marketplace::{ProvisioningMarketplace, ResourceChange, SubscriptionSnapshot};
use crate::model::{ExternalId, PlanId};
use async_trait::async_trait;
use marketbridge_aws::MarketplaceClient;
use marketbridge_aws::entitlement::Entitlement;
use marketbridge_aws::metering::Licensee;
use marketbridge_catalog::{Catalog, Plan, Product};
use marketbridge_core::time::{SharedClock, to_rfc3339};
use marketbridge_core::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The marketplace name in `marketplace_plan_ids`.
const AWS: &str = "aws";

/// Provisioning's calls to AWS Marketplace.
pub struct AwsLicenses {
    client: MarketplaceClient,
    catalog: Arc<Catalog>,
    clock: SharedClock,
}

impl AwsLicenses {
    /// The adapter over `client`, mapping dimensions to plans with `catalog`.
    pub fn new(client: MarketplaceClient, catalog: Arc<Catalog>, clock: SharedClock) -> Self {
        Self {
            client,
            catalog,
            clock,
        }
    }

    /// The catalog plan a set of contract dimensions buys: the last plan
    /// (in catalog order) whose AWS dimension is among them.
    fn plan_for<'a>(&'a self, dimensions: &BTreeSet<&str>) -> Option<(&'a Product, &'a Plan)> {
        self.catalog
            .products()
            .iter()
            .flat_map(|product| product.plans.iter().map(move |plan| (product, plan)))
            .rfind(|(_, plan)| {
                plan.marketplace_plan_ids.contains_key(AWS)
                    && dimensions.contains(plan.marketplace_plan_id(AWS).as_str())
            })
    }

    /// What we keep of a license's current entitlements.
    pub fn snapshot(&self, key: &str, entitlements: &[Entitlement]) -> SubscriptionSnapshot {
        let dimensions: BTreeSet<&str> =
            entitlements.iter().map(|e| e.dimension.as_str()).collect();
        let chosen = self.plan_for(&dimensions);
        let plan_dimension = chosen.map(|(_, plan)| plan.marketplace_plan_id(AWS));
        let mut attributes = BTreeMap::new();
        for entitlement in entitlements {
            attributes.insert(
                format!("aws_dimension.{}", entitlement.dimension),
                entitlement.value.to_text(),
            );
            if Some(&entitlement.dimension) == plan_dimension.as_ref()
                && let Some(quantity) = entitlement.value.quantity()
            {
                attributes.insert("aws_quantity".to_owned(), quantity.to_string());
            }
        }
        if let Some(end) = entitlements
            .iter()
            .filter_map(|e| e.expiration_date)
            .reduce(f64::min)
            .and_then(|end| chrono::DateTime::from_timestamp(end as i64, 0))
        {
            attributes.insert("aws_expires_at".to_owned(), to_rfc3339(end));
        }
        let first = entitlements.first();
        let licensee = match (
            first.and_then(|e| e.license_arn.clone()),
            first.and_then(|e| e.customer_aws_account_id.clone()),
        ) {
            (Some(license_arn), Some(customer_aws_account_id)) => Licensee::License {
                license_arn,
                customer_aws_account_id,
            },
            _ => Licensee::Legacy {
                customer_identifier: key.to_owned(),
            },
        };
        if let Some(account) = first.and_then(|e| e.customer_aws_account_id.as_deref()) {
            attributes.insert("aws_customer_account_id".to_owned(), account.to_owned());
        }
        SubscriptionSnapshot {
            account_external_id: ExternalId::new(key),
            product_id: chosen
                .map(|(product, _)| product.id.clone())
                .unwrap_or_else(|| self.client.product_code().to_owned()),
            plan_id: chosen
                .map(|(_, plan)| plan.id.clone())
                .or_else(|| dimensions.iter().next().map(|d| d.to_string()))
                .unwrap_or_default(),
            pending_plan_id: String::new(),
            // AWS has no subscription states: new licenses start requested
            // (approved once the buyer signed up), entitled ones keep ours.
            state: None,
            marketplace_state: "entitled".to_owned(),
            update_time: None,
            usage_reporting_id: licensee.to_reporting_id(),
            order_id: String::new(),
            reason: String::new(),
            attributes,
            plan_change_needs_approval: false,
        }
    }
}

#[async_trait]
impl ProvisioningMarketplace for AwsLicenses {
    async fn fetch_subscription(
        &self,
        external_id: &ExternalId,
    ) -> Result<Option<SubscriptionSnapshot>> {
        let key = external_id.as_str();
        if !self.client.product_type().has_entitlements() {
            return Err(Error::unprocessable(
                "AWS subscription products follow their license events; there is nothing to re-read",
            ));
        }
        let licensee = if key.starts_with("arn:") {
            Licensee::License {
                license_arn: key.to_owned(),
                customer_aws_account_id: String::new(),
            }
        } else {
            Licensee::Legacy {
                customer_identifier: key.to_owned(),
            }
        };
        let now = self.clock.now().timestamp();
        let current: Vec<Entitlement> = self
            .client
            .entitlements_of(&licensee)
            .await?
            .into_iter()
            .filter(|e| e.is_current(now))
            .collect();
        if current.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.snapshot(key, &current)))
    }

    async fn approve_subscription(&self, _subscription: &subscription::Model) -> Result<()> {
        Ok(())
    }

    async fn reject_subscription(
        &self,
        subscription: &subscription::Model,
        reason: &str,
    ) -> Result<()> {
        tracing::warn!(subscription.id = %subscription.id, reason = %reason, "an aws license is refused here; AWS is not told and keeps billing the contract");
        Ok(())
    }

    async fn approve_plan_change(
        &self,
        _subscription: &subscription::Model,
        _pending_plan_id: &PlanId,
    ) -> Result<()> {
        Ok(())
    }

    async fn reject_plan_change(
        &self,
        _subscription: &subscription::Model,
        _pending_plan_id: &PlanId,
        _reason: &str,
    ) -> Result<()> {
        Ok(())
    }

    async fn resource_changed(&self, _change: &ResourceChange) -> Result<()> {
        Ok(())
    }

    async fn list_subscription_ids(&self) -> Result<Vec<ExternalId>> {
        if !self.client.product_type().has_entitlements() {
            return Ok(Vec::new());
        }
        let keys: BTreeSet<String> = self
            .client
            .all_entitlements()
            .await?
            .into_iter()
            .filter_map(|e| e.license_arn.or(e.customer_identifier))
            .filter(|key| !key.is_empty())
            .collect();
        Ok(keys.into_iter().map(ExternalId::new).collect())
    }

    fn activates_on_approval(&self) -> bool {
        true
    }
}
