//! Azure Marketplace (SaaS offers) in the account service. An account is
//! one SaaS subscription (its id is the account's marketplace id and the
//! subscription's): the landing page token resolves to it, the provider
//! signup activates it at the Fulfillment API with the purchased plan (read
//! from Microsoft, never from the form), and the connection webhook's calls
//! are recorded as events and processed here.
//!
//! Webhook calls are hints: every action re-reads the operation (§4 "call
//! the Get Operation API to validate ... before taking action") and the
//! subscription, and provisioning re-reads the subscription again. Plan and
//! seat changes the customer asks for are decided at once (a plan the
//! catalog maps for the offer's product is accepted, any other refused)
//! through the operations API; Microsoft accepts them on its own after ten
//! seconds, and a decision it settled already is not an error. Suspension
//! suspends the account's resources; reinstatement resumes them.

use crate::entity::{account, event};
use crate::marketplace::{
    AccountMarketplace, AccountSnapshot, EventOutcome, EventProcessor, EventServices,
    MarketplaceWorker, Marketplaces, PURCHASE_RESOLVED, PurchasePayload, ResolvedPurchase,
};
use crate::model::{AccountKey, ExternalId};
use async_trait::async_trait;
use marketbridge_azure::fulfillment::{FulfillmentClient, OperationUpdate};
use marketbridge_azure::model::{Operation, Subscription, action, operation_status, status};
use marketbridge_azure::{AzureClients, CATALOG_NAME};
use marketbridge_catalog::Catalog;
use marketbridge_config::Config;
use marketbridge_core::crypto::SecretString;
use marketbridge_core::ids::AccountId;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, ErrorCode, Marketplace, Result};
use marketbridge_proto::common::v1::{Marketplace as ProtoMarketplace, MarketplaceRef, Person};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Registers the Azure adapter, event processor and reconciliation when
/// `azure.client_id` is set.
pub fn register(
    marketplaces: Marketplaces,
    config: &Config,
    clock: SharedClock,
) -> Result<Marketplaces> {
    let Some(clients) = AzureClients::from_config(config, clock)? else {
        return Ok(marketplaces);
    };
    let catalog = Arc::new(Catalog::load(&config.catalog.path)?);
    let fulfillment = clients.fulfillment().clone();
    Ok(marketplaces
        .with_adapter(
            Marketplace::Azure,
            Arc::new(AzureAccounts {
                fulfillment: fulfillment.clone(),
            }),
        )
        .with_processor(
            Marketplace::Azure,
            Arc::new(AzureEvents {
                fulfillment: fulfillment.clone(),
                catalog,
            }),
        )
        .with_worker(Arc::new(AzureReconciliation {
            fulfillment,
            interval: Duration::from_secs(config.azure.reconcile_interval_seconds.max(60)),
        })))
}

fn azure_ref(subscription_id: &ExternalId) -> MarketplaceRef {
    MarketplaceRef::new(ProtoMarketplace::Azure, subscription_id.as_str())
}

fn parse_time(text: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    text.and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// What we keep of a SaaS subscription as an account.
pub fn snapshot_of(subscription: &Subscription) -> AccountSnapshot {
    let mut attributes = BTreeMap::new();
    attributes.insert("azure_offer".to_owned(), subscription.offer().to_owned());
    attributes.insert("azure_plan".to_owned(), subscription.plan().to_owned());
    attributes.insert(
        "azure_customer_tenant".to_owned(),
        subscription.customer_tenant(),
    );
    if subscription.is_test_purchase() {
        attributes.insert("azure_test_purchase".to_owned(), "true".to_owned());
    }
    AccountSnapshot {
        display_name: subscription.name.clone().filter(|n| !n.is_empty()),
        url: None,
        contact: purchaser(subscription),
        marketplace_state: subscription.status().to_owned(),
        update_time: parse_time(subscription.last_modified.as_deref()),
        signup: None,
        attributes,
    }
}

fn purchaser(subscription: &Subscription) -> Option<Person> {
    let person = subscription
        .purchaser
        .as_ref()
        .or(subscription.beneficiary.as_ref())?;
    let email = person.email_id.clone().unwrap_or_default();
    if email.is_empty() {
        return None;
    }
    Some(Person {
        external_id: person.object_id.clone().unwrap_or_default(),
        email,
        ..Default::default()
    })
}

/// Calls the account service makes to Microsoft about an account (a SaaS
/// subscription).
pub struct AzureAccounts {
    fulfillment: FulfillmentClient,
}

#[async_trait]
impl AccountMarketplace for AzureAccounts {
    /// Activates the subscription with the plan and seats Microsoft says
    /// were bought. Already active is fine; a cancelled one cannot be.
    async fn approve_signup(&self, account: &account::Model) -> Result<()> {
        let Some(subscription) = self
            .fulfillment
            .get_subscription(&account.external_id)
            .await?
        else {
            return Err(Error::unprocessable(
                "the Azure subscription no longer exists",
            ));
        };
        match subscription.status() {
            status::SUBSCRIBED | status::SUSPENDED => Ok(()),
            status::UNSUBSCRIBED => Err(Error::unprocessable(
                "the Azure subscription was cancelled before it was activated",
            )),
            _ => {
                self.fulfillment
                    .activate(&subscription.id, subscription.plan(), subscription.quantity)
                    .await?;
                tracing::info!(azure.subscription = %subscription.id, plan = %subscription.plan(), "azure subscription activated");
                Ok(())
            }
        }
    }

    /// A refused signup cancels the purchase (nothing is billed).
    async fn reject_signup(&self, account: &account::Model, reason: &str) -> Result<()> {
        tracing::info!(azure.subscription = %account.external_id, reason, "signup refused; cancelling the azure subscription");
        self.fulfillment
            .delete_subscription(&account.external_id)
            .await
            .map(|_| ())
    }

    async fn reset(&self, _account: &account::Model) -> Result<()> {
        Err(Error::unprocessable(
            "Azure Marketplace subscriptions cannot be reset",
        ))
    }

    async fn fetch(
        &self,
        account: &account::Model,
        _credential: Option<&SecretString>,
    ) -> Result<Option<AccountSnapshot>> {
        Ok(self
            .fulfillment
            .get_subscription(&account.external_id)
            .await?
            .as_ref()
            .map(snapshot_of))
    }

    async fn resolve_purchase(&self, token: &SecretString) -> Result<ResolvedPurchase> {
        let resolved = self.fulfillment.resolve(token).await?;
        let subscription = match resolved.subscription.clone() {
            Some(subscription) if !subscription.id.is_empty() => subscription,
            _ => self
                .fulfillment
                .get_subscription(&resolved.id)
                .await?
                .ok_or_else(|| {
                    Error::unavailable("Azure resolved the token to an unknown subscription")
                })?,
        };
        let snapshot = snapshot_of(&subscription);
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "azure_customer_tenant".to_owned(),
            subscription.customer_tenant(),
        );
        if let Some(name) = resolved.subscription_name.clone() {
            attributes.insert("azure_subscription_name".to_owned(), name);
        }
        Ok(ResolvedPurchase {
            account_external_id: resolved.id.clone(),
            purchaser: snapshot.contact.clone(),
            snapshot,
            subscription_external_id: resolved.id.clone(),
            product_id: resolved
                .offer_id
                .clone()
                .unwrap_or_else(|| subscription.offer().to_owned()),
            plan_id: resolved
                .plan_id
                .clone()
                .unwrap_or_else(|| subscription.plan().to_owned()),
            quantity: resolved.quantity.or(subscription.quantity),
            attributes,
        })
    }
}

/// Processes recorded webhook calls and resolved purchases.
pub struct AzureEvents {
    fulfillment: FulfillmentClient,
    catalog: Arc<Catalog>,
}

impl AzureEvents {
    /// Whether we take a change to `operation`'s plan and seats: the plan
    /// must be one the catalog maps for Azure, in the product the
    /// subscription's current plan belongs to (or named like the offer).
    fn accepts(&self, operation: &Operation, current: Option<&Subscription>) -> bool {
        let target = operation.plan_id.as_deref().unwrap_or_default();
        let offer = operation
            .offer_id
            .as_deref()
            .or(current.and_then(|s| s.offer_id.as_deref()))
            .unwrap_or_default();
        let current_plan = current.map(Subscription::plan).unwrap_or_default();
        self.catalog.products().iter().any(|product| {
            let in_product = product.id == offer
                || product.plans.iter().any(|p| {
                    p.marketplace_plan_ids.get(CATALOG_NAME).map(String::as_str)
                        == Some(current_plan)
                });
            in_product
                && product.plans.iter().any(|p| {
                    p.marketplace_plan_ids.get(CATALOG_NAME).map(String::as_str) == Some(target)
                        && (p.marketplaces.is_empty()
                            || p.marketplaces.iter().any(|m| m == CATALOG_NAME))
                })
        })
    }

    /// Decides a waiting plan or seat change; true when the change went
    /// through (accepted by us, or settled as accepted by Microsoft).
    async fn decide(&self, operation: &Operation, current: Option<&Subscription>) -> Result<bool> {
        let accept = self.accepts(operation, current);
        let update = self
            .fulfillment
            .update_operation(&operation.subscription_id, &operation.id, accept)
            .await?;
        match update {
            OperationUpdate::Taken => {
                tracing::info!(azure.subscription = %operation.subscription_id, azure.operation = %operation.id, action = %operation.action, accepted = accept, "azure change decided")
            }
            OperationUpdate::AlreadySettled => {
                tracing::info!(azure.subscription = %operation.subscription_id, azure.operation = %operation.id, "azure change was settled before our decision");
                let settled = self
                    .fulfillment
                    .get_operation(&operation.subscription_id, &operation.id)
                    .await?;
                return Ok(settled.is_some_and(|o| o.status == operation_status::SUCCEEDED));
            }
        }
        Ok(accept)
    }
}

#[async_trait]
impl EventProcessor for AzureEvents {
    async fn process(
        &self,
        event: &event::Model,
        services: &EventServices,
    ) -> Result<EventOutcome> {
        if event.event_type == PURCHASE_RESOLVED {
            let payload: PurchasePayload = serde_json::from_str(&event.payload).map_err(|e| {
                Error::validation(format!("a purchase.resolved payload does not read: {e}"))
            })?;
            return sync_subscription(
                services,
                &ExternalId::new(&payload.subscription_external_id),
            )
            .await;
        }
        let hinted: Operation = serde_json::from_str(&event.payload)
            .map_err(|e| Error::validation(format!("an azure webhook body does not read: {e}")))?;
        if !action::ALL.contains(&hinted.action.as_str()) {
            return Ok(EventOutcome::Ignored);
        }
        // Validate the call against Microsoft before acting on it.
        let Some(operation) = self
            .fulfillment
            .get_operation(&hinted.subscription_id, &hinted.id)
            .await?
        else {
            tracing::warn!(azure.subscription = %hinted.subscription_id, azure.operation = %hinted.id, "webhook names an operation Microsoft does not know; ignored");
            return Ok(EventOutcome::Ignored);
        };
        if operation.action != hinted.action {
            tracing::warn!(azure.operation = %operation.id, hinted = %hinted.action, actual = %operation.action, "webhook action differs from the operation's; acting on the operation");
        }
        let current = self
            .fulfillment
            .get_subscription(&operation.subscription_id)
            .await?;
        let mut accepted = operation.status == operation_status::SUCCEEDED;
        if action::is_decidable(&operation.action)
            && operation.status == operation_status::IN_PROGRESS
            && operation.from_azure()
        {
            accepted = self.decide(&operation, current.as_ref()).await?;
        }
        let mut current = current;
        if action::is_decidable(&operation.action) && accepted {
            current = self
                .fulfillment
                .get_subscription(&operation.subscription_id)
                .await?;
            if let Some(subscription) = &current
                && !applied(&operation, subscription)
            {
                // Microsoft applies an accepted change a little later; come
                // back once it shows.
                return Err(Error::unavailable(format!(
                    "Azure has not applied operation {} to subscription {} yet",
                    operation.id, operation.subscription_id
                )));
            }
        }
        let subscription_id = ExternalId::new(&operation.subscription_id);
        let outcome = sync_subscription(services, &subscription_id).await?;
        match (
            operation.action.as_str(),
            current.as_ref().map(Subscription::status),
        ) {
            (action::SUSPEND, Some(status::SUSPENDED)) => {
                set_resources_suspended(services, &subscription_id, true).await?
            }
            (action::REINSTATE, Some(status::SUBSCRIBED)) => {
                set_resources_suspended(services, &subscription_id, false).await?
            }
            _ => {}
        }
        Ok(outcome)
    }
}

/// Whether the subscription shows what a plan or seat change asked for.
fn applied(operation: &Operation, subscription: &Subscription) -> bool {
    match operation.action.as_str() {
        action::CHANGE_PLAN => operation
            .plan_id
            .as_deref()
            .is_none_or(|plan| plan == subscription.plan()),
        _ => operation.quantity.is_none() || operation.quantity == subscription.quantity,
    }
}

/// Hands a subscription to provisioning, which re-reads it and acts.
async fn sync_subscription(
    services: &EventServices,
    subscription_id: &ExternalId,
) -> Result<EventOutcome> {
    let Some(provisioning) = &services.provisioning else {
        return Err(Error::unavailable(
            "the provisioning service is not configured",
        ));
    };
    let synced = provisioning
        .sync_subscription(provisioning_pb::SyncSubscriptionRequest {
            context: None,
            marketplace_ref: Some(azure_ref(subscription_id)),
            approved_by_marketplace: false,
        })
        .await;
    match synced {
        Ok(subscription) => Ok(EventOutcome::Processed {
            account_id: AccountId::parse("accountId", &subscription.account_id).ok(),
        }),
        Err(error) if error.code() == ErrorCode::NotFound => {
            tracing::info!(azure.subscription = %subscription_id, "subscription unknown here and gone at Microsoft");
            Ok(EventOutcome::Processed { account_id: None })
        }
        Err(error) => Err(error),
    }
}

/// Suspends (or resumes) the resources of the account a subscription is.
async fn set_resources_suspended(
    services: &EventServices,
    subscription_id: &ExternalId,
    suspended: bool,
) -> Result<()> {
    let Some(provisioning) = &services.provisioning else {
        return Err(Error::unavailable(
            "the provisioning service is not configured",
        ));
    };
    let domain = &services.accounts;
    let key = AccountKey::Ref(Marketplace::Azure, subscription_id.clone());
    let Some(row) = domain.find_key(domain.db(), &key).await? else {
        return Ok(());
    };
    let listed = provisioning
        .list_resources(provisioning_pb::ListResourcesRequest {
            account_id: row.id.clone(),
            ..Default::default()
        })
        .await?;
    for resource in listed.resources {
        let result = if suspended {
            provisioning
                .suspend_resource(provisioning_pb::SuspendResourceRequest {
                    context: None,
                    resource_id: resource.id.clone(),
                    reason: "suspended at Azure Marketplace (payment)".into(),
                })
                .await
        } else {
            provisioning
                .resume_resource(provisioning_pb::ResumeResourceRequest {
                    context: None,
                    resource_id: resource.id.clone(),
                })
                .await
        };
        match result {
            Ok(_) => {}
            // Already in that state, or ended: nothing to do.
            Err(error)
                if matches!(
                    error.code(),
                    ErrorCode::Unprocessable | ErrorCode::Conflict | ErrorCode::NotFound
                ) =>
            {
                tracing::info!(resource.id = %resource.id, error = %error, "resource left as it is")
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Re-reads every SaaS subscription on a timer (List subscriptions, §3.4)
/// and hands each we know to provisioning: what a lost webhook call missed.
pub struct AzureReconciliation {
    fulfillment: FulfillmentClient,
    interval: Duration,
}

#[async_trait]
impl MarketplaceWorker for AzureReconciliation {
    fn name(&self) -> &'static str {
        "azure.reconcile"
    }

    fn first_delay(&self) -> Duration {
        self.interval
    }

    fn pause_after(&self, _done: usize) -> Duration {
        self.interval
    }

    async fn run_once(&self, services: &EventServices) -> Result<usize> {
        let listed = self.fulfillment.list_subscriptions().await?;
        let domain = &services.accounts;
        let mut count = 0;
        for subscription in &listed {
            let key = crate::model::AccountKey::Ref(
                Marketplace::Azure,
                crate::model::ExternalId::new(&subscription.id),
            );
            let Some(row) = domain.find_key(domain.db(), &key).await? else {
                continue;
            };
            if let Err(error) = domain
                .apply_snapshot(&row.account_id()?, snapshot_of(subscription))
                .await
            {
                tracing::warn!(azure.subscription = %subscription.id, error = %error, "reconciling an account failed");
                continue;
            }
            match sync_subscription(services, &ExternalId::new(&subscription.id)).await {
                Ok(_) => count += 1,
                Err(error) => {
                    tracing::warn!(azure.subscription = %subscription.id, error = %error, "reconciling a subscription failed")
                }
            }
        }
        tracing::info!(subscriptions = count, "azure subscriptions reconciled");
        Ok(count)
    }
}
