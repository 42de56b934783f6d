//! The gRPC calls the partner API and the simplified flow share: finding an
//! installation's account, reading plans, and the uninstall sequence.

use super::convert::billing_plan;
use crate::context::request_context;
use crate::state::AppState;
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace, MarketplaceRef, Person};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_vercel::model::plan::BillingPlan;

/// The marketplace identity of an installation.
pub fn installation_ref(installation_id: &str) -> MarketplaceRef {
    MarketplaceRef::new(Marketplace::Vercel, installation_id)
}

/// The account of an installation, whatever its state; `None` when unknown.
pub async fn find_account(
    state: &AppState,
    installation_id: &str,
) -> Result<Option<account_pb::Account>> {
    let mut accounts = state.clients.account.clone();
    let answer = accounts
        .get_account(account_pb::GetAccountRequest {
            account: Some(AccountSelector::by_ref(
                Marketplace::Vercel,
                installation_id,
            )),
        })
        .await;
    match answer {
        Ok(account) => Ok(Some(account.into_inner())),
        Err(status) => {
            let error = Error::from(status);
            if error.code() == ErrorCode::NotFound || error.code() == ErrorCode::Validation {
                Ok(None)
            } else {
                Err(error)
            }
        }
    }
}

/// The account of an installed (not uninstalled) installation, or 404.
pub async fn installed_account(
    state: &AppState,
    installation_id: &str,
) -> Result<account_pb::Account> {
    match find_account(state, installation_id).await? {
        Some(account) if account.state == account_pb::AccountState::Active as i32 => Ok(account),
        Some(_) => Err(Error::not_found("the installation was uninstalled")),
        None => Err(Error::not_found("installation not found")),
    }
}

/// A plan of a product as a `BillingPlan`; `None` when it is no longer in
/// the catalog.
pub async fn plan(
    state: &AppState,
    product_id: &str,
    plan_id: &str,
) -> Result<Option<BillingPlan>> {
    let mut billing = state.clients.billing.clone();
    let answer = billing
        .get_plan(billing_pb::GetPlanRequest {
            product_id: product_id.to_owned(),
            plan_id: plan_id.to_owned(),
            metadata: None,
        })
        .await;
    match answer {
        Ok(plan) => Ok(Some(billing_plan(&plan.into_inner()))),
        Err(status) => {
            let error = Error::from(status);
            if error.code() == ErrorCode::NotFound {
                Ok(None)
            } else {
                Err(error)
            }
        }
    }
}

/// The plans Vercel may offer, as `BillingPlan`s.
pub async fn list_plans(
    state: &AppState,
    request: billing_pb::ListPlansRequest,
) -> Result<Vec<BillingPlan>> {
    let mut billing = state.clients.billing.clone();
    let plans = billing.list_plans(request).await?.into_inner();
    Ok(plans.plans.iter().map(billing_plan).collect())
}

/// The installation-level plan (an account-scoped subscription whose
/// marketplace id is the installation id), if there is one in force.
pub async fn installation_subscription(
    state: &AppState,
    installation_id: &str,
) -> Result<Option<provisioning_pb::Subscription>> {
    let mut provisioning = state.clients.provisioning.clone();
    let answer = provisioning
        .get_subscription(provisioning_pb::GetSubscriptionRequest {
            selector: Some(
                provisioning_pb::get_subscription_request::Selector::MarketplaceRef(
                    installation_ref(installation_id),
                ),
            ),
        })
        .await;
    match answer {
        Ok(subscription) => {
            let subscription = subscription.into_inner();
            let ended = matches!(
                provisioning_pb::SubscriptionState::try_from(subscription.state),
                Ok(provisioning_pb::SubscriptionState::Cancelled
                    | provisioning_pb::SubscriptionState::Rejected)
            );
            Ok((!ended).then_some(subscription))
        }
        Err(status) => {
            let error = Error::from(status);
            if error.code() == ErrorCode::NotFound {
                Ok(None)
            } else {
                Err(error)
            }
        }
    }
}

/// The installation-scoped plan `plan_id` Vercel may offer, with its
/// product; a 400 on `field` when there is none.
pub async fn installation_plan(
    state: &AppState,
    plan_id: &str,
    account_id: &str,
    field: &str,
) -> Result<billing_pb::Plan> {
    let (product_id, plan_id) = match plan_id.split_once('/') {
        Some((product, plan)) => (product.to_owned(), plan.to_owned()),
        None => (String::new(), plan_id.to_owned()),
    };
    let mut billing = state.clients.billing.clone();
    let plans = billing
        .list_plans(billing_pb::ListPlansRequest {
            product_id,
            marketplace: Marketplace::Vercel as i32,
            scope: billing_pb::PlanScope::Account as i32,
            account_id: account_id.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    plans
        .plans
        .into_iter()
        .find(|plan| plan.id == plan_id && !plan.disabled)
        .ok_or_else(|| {
            Error::invalid_field(field, format!("`{plan_id}` is not an installation plan"))
                .with_user_message("This plan is not available")
        })
}

/// Puts an installation on an installation-level plan: switches the plan in
/// force, or starts one.
pub async fn set_installation_plan(
    state: &AppState,
    account: &account_pb::Account,
    installation_id: &str,
    plan: &billing_pb::Plan,
    key: Option<&str>,
    actor: Option<Person>,
) -> Result<provisioning_pb::Subscription> {
    let mut provisioning = state.clients.provisioning.clone();
    match installation_subscription(state, installation_id).await? {
        Some(subscription) if subscription.product_id == plan.product_id => Ok(provisioning
            .change_plan(provisioning_pb::ChangePlanRequest {
                context: Some(request_context(
                    installation_id,
                    "vercel.installation_plan.change",
                    key,
                    actor,
                )),
                subscription_id: subscription.id,
                plan_id: plan.id.clone(),
            })
            .await?
            .into_inner()),
        Some(_) => Err(Error::conflict(
            "the installation's plan belongs to another product",
        )),
        None => Ok(provisioning
            .upsert_subscription(provisioning_pb::UpsertSubscriptionRequest {
                context: Some(request_context(
                    installation_id,
                    "vercel.installation_plan.start",
                    key,
                    actor,
                )),
                account_id: account.id.clone(),
                marketplace_ref: Some(installation_ref(installation_id)),
                product_id: plan.product_id.clone(),
                plan_id: plan.id.clone(),
                state: provisioning_pb::SubscriptionState::Active as i32,
                scope: provisioning_pb::SubscriptionScope::Account as i32,
                ..Default::default()
            })
            .await?
            .into_inner()),
    }
}

/// What an uninstall asks for.
#[derive(Debug, Clone)]
pub struct Uninstall<'a> {
    /// The installation.
    pub installation_id: &'a str,
    /// Delete its resources too.
    pub cascade: bool,
    /// Why, verbatim.
    pub reason: String,
    /// The caller's idempotency key.
    pub key: Option<&'a str>,
    /// Who asked.
    pub actor: Option<Person>,
}

/// Uninstalls: deletes the resources (when cascading), ends the
/// installation-level plan, asks billing whether anything is left to
/// invoice, and soft-deletes the account (closed at once when nothing is
/// left). Returns whether billing is final.
pub async fn uninstall(
    state: &AppState,
    account: &account_pb::Account,
    uninstall: Uninstall<'_>,
) -> Result<bool> {
    let Uninstall {
        installation_id,
        cascade,
        reason,
        key,
        actor,
    } = uninstall;
    let context = |step: &str| request_context(installation_id, step, key, actor.clone());
    let mut provisioning = state.clients.provisioning.clone();
    if cascade {
        provisioning
            .delete_account_resources(provisioning_pb::DeleteAccountResourcesRequest {
                context: Some(context("vercel.uninstall.resources")),
                account_id: account.id.clone(),
            })
            .await?;
    }
    if let Some(subscription) = installation_subscription(state, installation_id).await? {
        provisioning
            .cancel_subscription(provisioning_pb::CancelSubscriptionRequest {
                context: Some(context("vercel.uninstall.plan")),
                subscription_id: subscription.id,
                reason: "uninstalled".to_owned(),
            })
            .await?;
    }
    let mut billing = state.clients.billing.clone();
    let closed = billing
        .close_account_billing(billing_pb::CloseAccountBillingRequest {
            context: Some(context("vercel.uninstall.billing")),
            account_id: account.id.clone(),
        })
        .await?
        .into_inner();
    let mut accounts = state.clients.account.clone();
    let deleted = accounts
        .delete_account(account_pb::DeleteAccountRequest {
            context: Some(context("vercel.uninstall.account")),
            account: Some(AccountSelector::by_id(&account.id)),
            reason,
            finalized: closed.finalized,
            purge: false,
            end_subscriptions: false,
        })
        .await?
        .into_inner();
    Ok(deleted.finalized)
}
