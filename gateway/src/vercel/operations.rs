//! The operations of the Vercel adapter: every call to the services (through
//! their traits) the partner API, the seed's simplified flow and the provider
//! pages make, each in one place.
//! A handler reads its wire shape, calls operations, and writes its wire
//! shape; the flow is an alias because it calls these same operations.
//!
//! Changes take a [`Call`] (the installation, the caller's idempotency key,
//! the person acting) and the name of the operation the key is scoped to, so
//! a key is only ever replayed for the same call.

use super::convert::billing_plan;
use crate::context::request_context;
use crate::state::AppState;
use marketbridge_core::ids::ResourceId;
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::{
    AccountSelector, Marketplace, MarketplaceRef, Metadata, PageRequest, Person, RequestContext,
};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_vercel::model::partner::{InstallationAccount, InstallationCredentials};
use marketbridge_vercel::model::plan::BillingPlan;
use std::collections::BTreeMap;

/// Account attribute holding the Vercel team id.
pub const TEAM_ATTRIBUTE: &str = "vercel_team_id";

/// A change asked of an installation: which one, under which idempotency
/// key, and who acts (`None` for Vercel itself).
#[derive(Debug, Clone)]
pub struct Call {
    /// The installation.
    pub installation_id: String,
    /// The caller's `Idempotency-Key`, if any.
    pub key: Option<String>,
    /// The person acting.
    pub actor: Option<Person>,
}

impl Call {
    /// The request context of `operation`: the key scoped by the
    /// installation and the operation.
    pub fn context(&self, operation: &str) -> RequestContext {
        request_context(
            &self.installation_id,
            operation,
            self.key.as_deref(),
            self.actor.clone(),
        )
    }
}

/// Forgets the installation's cached account when dropped: after a change
/// to it has answered, failed or been abandoned.
struct Forget<'a>(&'a AppState, &'a str);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.vercel.accounts.forget(self.1);
    }
}

/// `Err` of a read turned into `None` when its code is one of `absent`.
fn absent_as_none<T>(answer: Result<T>, absent: &[ErrorCode]) -> Result<Option<T>> {
    match answer {
        Ok(found) => Ok(Some(found)),
        Err(error) if absent.contains(&error.code()) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The marketplace identity of an installation.
pub fn installation_ref(installation_id: &str) -> MarketplaceRef {
    MarketplaceRef::new(Marketplace::Vercel, installation_id)
}

/// The account of an installation, whatever its state; `None` when unknown.
pub async fn find_account(
    state: &AppState,
    installation_id: &str,
) -> Result<Option<account_pb::Account>> {
    let answer = state
        .accounts
        .get_account(account_pb::GetAccountRequest {
            account: Some(AccountSelector::by_ref(
                Marketplace::Vercel,
                installation_id,
            )),
        })
        .await;
    absent_as_none(answer, &[ErrorCode::NotFound, ErrorCode::Validation])
}

/// The account of an installation for a read, whatever its state: from the
/// cache when it was read recently (see [`super::cache`]), else as
/// [`find_account`]. Changes use [`find_account`], never this.
pub async fn find_account_for_read(
    state: &AppState,
    installation_id: &str,
) -> Result<Option<account_pb::Account>> {
    let cache = &state.vercel.accounts;
    if let Some(account) = cache.account(installation_id) {
        return Ok(Some(account));
    }
    let lookup = cache.begin();
    let found = find_account(state, installation_id).await?;
    if let Some(account) = &found {
        cache.store(lookup, installation_id, account);
    }
    Ok(found)
}

/// The account of an installed (not uninstalled) installation, or 404.
pub async fn installed_account(
    state: &AppState,
    installation_id: &str,
) -> Result<account_pb::Account> {
    installed(find_account(state, installation_id).await?)
}

/// [`installed_account`] for a read, from the cache when it was read
/// recently.
pub async fn installed_account_for_read(
    state: &AppState,
    installation_id: &str,
) -> Result<account_pb::Account> {
    installed(find_account_for_read(state, installation_id).await?)
}

fn installed(found: Option<account_pb::Account>) -> Result<account_pb::Account> {
    match found {
        Some(account) if account.state == account_pb::AccountState::Active as i32 => Ok(account),
        Some(_) => Err(Error::not_found("the installation was uninstalled")),
        None => Err(Error::not_found("installation not found")),
    }
}

/// A plan of a product as a `BillingPlan`; `None` when it is no longer in
/// the catalog. Read from the gateway's catalog, as billing's `GetPlan`
/// would answer.
pub async fn plan(
    state: &AppState,
    product_id: &str,
    plan_id: &str,
) -> Result<Option<BillingPlan>> {
    if let Some(converted) = state
        .vercel
        .billing_plans
        .get(product_id)
        .and_then(|plans| plans.get(plan_id))
    {
        return Ok(Some(converted.clone()));
    }
    let Some(found) = state
        .vercel
        .catalog
        .product(product_id)
        .and_then(|product| product.plan(plan_id))
    else {
        return Ok(None);
    };
    Ok(Some(billing_plan(&found.to_proto(product_id)?)))
}

/// The plans Vercel may offer for `request`: billing's `ListPlans` answer,
/// computed from the gateway's catalog (the same file billing reads) unless
/// the request names a resource (whose product only billing knows).
pub async fn list_plans(
    state: &AppState,
    request: billing_pb::ListPlansRequest,
) -> Result<Vec<billing_pb::Plan>> {
    if !request.resource_id.is_empty() {
        return Ok(state.billing.list_plans(request).await?.plans);
    }
    let account_external_id = if request.account_id.is_empty() {
        None
    } else {
        Some(account_identity(state, &request.account_id).await?)
    };
    catalog_plans(
        &state.vercel.catalog,
        &state.vercel.served_plans,
        &request,
        account_external_id.as_deref(),
    )
}

/// The marketplace's id of account `account_id` (its installation), as
/// billing reads it for plans reserved to some accounts.
async fn account_identity(state: &AppState, account_id: &str) -> Result<String> {
    let account_id = marketbridge_core::ids::AccountId::parse("accountId", account_id)?;
    let cache = &state.vercel.accounts;
    if let Some(external_id) = cache.identity(account_id.as_str()) {
        return Ok(external_id);
    }
    let account = state
        .accounts
        .get_account(account_pb::GetAccountRequest {
            account: Some(AccountSelector::by_id(account_id.as_str())),
        })
        .await?;
    cache.remember_identity(&account);
    Ok(account.marketplace_ref.unwrap_or_default().external_id)
}

/// Billing's `ListPlans` over `catalog` for a request naming no resource.
fn catalog_plans(
    catalog: &marketbridge_catalog::Catalog,
    served: &marketbridge_catalog::ServedPlans,
    request: &billing_pb::ListPlansRequest,
    account_external_id: Option<&str>,
) -> Result<Vec<billing_pb::Plan>> {
    use marketbridge_catalog::{PlanQuery, PlanScope};
    let metadata = marketbridge_core::metadata::metadata_to_json(request.metadata.as_ref());
    let marketplace = if request.marketplace == 0 {
        None
    } else {
        Some(marketbridge_core::Marketplace::from_proto(
            "marketplace",
            request.marketplace,
        )?)
    };
    let scope = match billing_pb::PlanScope::try_from(request.scope).unwrap_or_default() {
        billing_pb::PlanScope::Resource => Some(PlanScope::Resource),
        billing_pb::PlanScope::Account => Some(PlanScope::Installation),
        billing_pb::PlanScope::Unspecified => None,
    };
    let query = PlanQuery {
        metadata: &metadata,
        marketplace: marketplace.map(marketbridge_core::Marketplace::as_str),
        scope,
        account_external_id,
    };
    let products: Vec<_> = if request.product_id.is_empty() {
        if scope.is_none() {
            return Err(Error::invalid_field("productId", "is required"));
        }
        catalog.products().iter().collect()
    } else {
        vec![
            catalog
                .require_product("productSlug", &request.product_id)
                .map_err(|e| {
                    Error::not_found(e.message().to_owned())
                        .with_user_message("This product does not exist")
                })?,
        ]
    };
    let mut plans = Vec::new();
    for product in products {
        for plan in product.plans_for(&query) {
            plans.push(served.get(product, plan)?);
        }
    }
    Ok(plans)
}

/// The resource plans of `product_id` Vercel may offer, quoted for
/// `metadata`; `account_id` (possibly empty) lets an installed team see the
/// plans reserved for it.
pub async fn resource_plans(
    state: &AppState,
    product_id: &str,
    metadata: Metadata,
    account_id: &str,
) -> Result<Vec<billing_pb::Plan>> {
    list_plans(
        state,
        billing_pb::ListPlansRequest {
            product_id: product_id.to_owned(),
            metadata: Some(metadata),
            marketplace: Marketplace::Vercel as i32,
            scope: billing_pb::PlanScope::Resource as i32,
            account_id: account_id.to_owned(),
            resource_id: String::new(),
        },
    )
    .await
}

/// The installation-level plans Vercel may offer the account.
pub async fn installation_plans(
    state: &AppState,
    account_id: &str,
) -> Result<Vec<billing_pb::Plan>> {
    list_plans(
        state,
        billing_pb::ListPlansRequest {
            marketplace: Marketplace::Vercel as i32,
            scope: billing_pb::PlanScope::Account as i32,
            account_id: account_id.to_owned(),
            ..Default::default()
        },
    )
    .await
}

/// The installation-level plan (an account-scoped subscription whose
/// marketplace id is the installation id), if there is one in force.
pub async fn installation_subscription(
    state: &AppState,
    installation_id: &str,
) -> Result<Option<provisioning_pb::Subscription>> {
    let answer = state
        .provisioning
        .get_subscription(provisioning_pb::GetSubscriptionRequest {
            selector: Some(
                provisioning_pb::get_subscription_request::Selector::MarketplaceRef(
                    installation_ref(installation_id),
                ),
            ),
        })
        .await;
    let subscription = absent_as_none(answer, &[ErrorCode::NotFound])?;
    Ok(subscription.filter(|subscription| {
        !matches!(
            provisioning_pb::SubscriptionState::try_from(subscription.state),
            Ok(provisioning_pb::SubscriptionState::Cancelled
                | provisioning_pb::SubscriptionState::Rejected)
        )
    }))
}

/// The installation's plan in force as a `BillingPlan`, if any.
pub async fn installation_billing_plan(
    state: &AppState,
    installation_id: &str,
) -> Result<Option<BillingPlan>> {
    match installation_subscription(state, installation_id).await? {
        Some(subscription) => plan(state, &subscription.product_id, &subscription.plan_id).await,
        None => Ok(None),
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
    let plans = list_plans(
        state,
        billing_pb::ListPlansRequest {
            product_id,
            marketplace: Marketplace::Vercel as i32,
            scope: billing_pb::PlanScope::Account as i32,
            account_id: account_id.to_owned(),
            ..Default::default()
        },
    )
    .await?;
    plans
        .into_iter()
        .find(|plan| plan.id == plan_id && !plan.disabled)
        .ok_or_else(|| {
            Error::invalid_field(field, format!("`{plan_id}` is not an installation plan"))
                .with_user_message("This plan is not available")
        })
}

/// The installation-scoped plan `plan_id` of `product_id`, when a
/// provisioning names one (Vercel's plan lists may mix both scopes); `None`
/// for a resource plan or anything unknown (creating the resource then
/// answers the 400).
pub async fn installation_scoped_plan(
    state: &AppState,
    product_id: &str,
    plan_id: &str,
    account_id: &str,
) -> Result<Option<billing_pb::Plan>> {
    if product_id.is_empty() || plan_id.is_empty() {
        return Ok(None);
    }
    let answer = list_plans(
        state,
        billing_pb::ListPlansRequest {
            product_id: product_id.to_owned(),
            marketplace: Marketplace::Vercel as i32,
            scope: billing_pb::PlanScope::Account as i32,
            account_id: account_id.to_owned(),
            ..Default::default()
        },
    )
    .await;
    let plans =
        absent_as_none(answer, &[ErrorCode::NotFound, ErrorCode::Validation])?.unwrap_or_default();
    Ok(plans
        .into_iter()
        .find(|plan| plan.id == plan_id && !plan.disabled))
}

/// Puts an installation on an installation-level plan: switches the plan in
/// force, or starts one.
pub async fn set_installation_plan(
    state: &AppState,
    call: &Call,
    account: &account_pb::Account,
    plan: &billing_pb::Plan,
) -> Result<provisioning_pb::Subscription> {
    let provisioning = &state.provisioning;
    match installation_subscription(state, &call.installation_id).await? {
        Some(subscription) if subscription.product_id == plan.product_id => Ok(provisioning
            .change_plan(provisioning_pb::ChangePlanRequest {
                context: Some(call.context("vercel.installation_plan.change")),
                subscription_id: subscription.id,
                plan_id: plan.id.clone(),
            })
            .await?),
        Some(_) => Err(Error::conflict(
            "the installation's plan belongs to another product",
        )),
        None => Ok(provisioning
            .upsert_subscription(provisioning_pb::UpsertSubscriptionRequest {
                context: Some(call.context("vercel.installation_plan.start")),
                account_id: account.id.clone(),
                marketplace_ref: Some(installation_ref(&call.installation_id)),
                product_id: plan.product_id.clone(),
                plan_id: plan.id.clone(),
                state: provisioning_pb::SubscriptionState::Active as i32,
                scope: provisioning_pb::SubscriptionScope::Account as i32,
                ..Default::default()
            })
            .await?),
    }
}

/// What an install says, whichever route it came through.
pub struct Install<'a> {
    /// The team, from the token or the body.
    pub team_id: Option<String>,
    /// Accepted policies.
    pub accepted_policies: &'a BTreeMap<String, String>,
    /// The Vercel API credential.
    pub credentials: Option<&'a InstallationCredentials>,
    /// The team's details.
    pub account: Option<&'a InstallationAccount>,
    /// Granted scopes.
    pub scopes: &'a [String],
}

/// Creates or updates the installation's account, then starts the default
/// installation-level plan when one is configured and none is in force.
pub async fn install(
    state: &AppState,
    call: &Call,
    request: Install<'_>,
) -> Result<account_pb::Account> {
    let terms = super::convert::accepted_terms(request.accepted_policies, "acceptedPolicies")?;
    let account_details = request.account.cloned().unwrap_or_default();
    // The team's contact from the body; without one, the installing user
    // (their verified `user_email`, contract §3.1).
    let contact = account_details
        .contact
        .as_ref()
        .filter(|c| c.email.as_deref().is_some_and(|e| !e.trim().is_empty()))
        .map(|c| Person {
            email: c.email.clone().unwrap_or_default(),
            name: c.name.clone().unwrap_or_default(),
            ..Default::default()
        })
        .or_else(|| {
            call.actor
                .as_ref()
                .filter(|actor| !actor.email.trim().is_empty())
                .map(|actor| Person {
                    email: actor.email.clone(),
                    name: actor.name.clone(),
                    ..Default::default()
                })
        });
    let mut attributes = BTreeMap::new();
    if let Some(team_id) = &request.team_id {
        attributes.insert(TEAM_ATTRIBUTE.to_owned(), team_id.clone());
    }
    let _forget = Forget(state, &call.installation_id);
    let account = state
        .accounts
        .upsert_account(account_pb::UpsertAccountRequest {
            context: Some(call.context("vercel.install")),
            marketplace_ref: Some(installation_ref(&call.installation_id)),
            display_name: account_details.name.clone().unwrap_or_default(),
            url: account_details.url.clone().unwrap_or_default(),
            contact,
            accepted_terms: terms,
            scopes: request.scopes.to_vec(),
            credential: request
                .credentials
                .map(|c| account_pb::MarketplaceCredential {
                    access_token: c.access_token.clone(),
                    token_type: c.token_type.clone().unwrap_or_else(|| "Bearer".to_owned()),
                    ..Default::default()
                }),
            signup_required: false,
            attributes,
            ..Default::default()
        })
        .await?;
    start_default_plan(state, call, &account).await?;
    Ok(account)
}

async fn start_default_plan(
    state: &AppState,
    call: &Call,
    account: &account_pb::Account,
) -> Result<()> {
    let configured = &state.vercel.default_installation_plan;
    if configured.is_empty()
        || installation_subscription(state, &call.installation_id)
            .await?
            .is_some()
    {
        return Ok(());
    }
    let plan = installation_plan(
        state,
        configured,
        &account.id,
        "vercel.default_installation_plan",
    )
    .await
    .map_err(|error| {
        tracing::error!(plan = %configured, error = %error, "the default installation plan is not an installation plan of the catalog");
        Error::internal("the default installation plan is misconfigured")
    })?;
    set_installation_plan(state, call, account, &plan).await?;
    Ok(())
}

/// Uninstalls: deletes the resources (when `cascade`), ends the
/// installation-level plan, asks billing whether anything is left to
/// invoice, and soft-deletes the account (closed at once when nothing is
/// left) for `reason`. Returns whether billing is final.
pub async fn uninstall(
    state: &AppState,
    call: &Call,
    account: &account_pb::Account,
    cascade: bool,
    reason: String,
) -> Result<bool> {
    let provisioning = &state.provisioning;
    if cascade {
        provisioning
            .delete_account_resources(provisioning_pb::DeleteAccountResourcesRequest {
                context: Some(call.context("vercel.uninstall.resources")),
                account_id: account.id.clone(),
            })
            .await?;
    }
    if let Some(subscription) = installation_subscription(state, &call.installation_id).await? {
        provisioning
            .cancel_subscription(provisioning_pb::CancelSubscriptionRequest {
                context: Some(call.context("vercel.uninstall.plan")),
                subscription_id: subscription.id,
                reason: "uninstalled".to_owned(),
            })
            .await?;
    }
    let billing = &state.billing;
    let closed = billing
        .close_account_billing(billing_pb::CloseAccountBillingRequest {
            context: Some(call.context("vercel.uninstall.billing")),
            account_id: account.id.clone(),
        })
        .await?;
    let _forget = Forget(state, &call.installation_id);
    let deleted = state
        .accounts
        .delete_account(account_pb::DeleteAccountRequest {
            context: Some(call.context("vercel.uninstall.account")),
            account: Some(AccountSelector::by_id(&account.id)),
            reason,
            finalized: closed.finalized,
            purge: false,
            end_subscriptions: false,
        })
        .await?;
    Ok(deleted.finalized)
}

/// A path's resource id checked before any call: one that cannot be ours
/// is a 404, like one that is not.
fn resource_id_of(resource_id: &str) -> Result<()> {
    ResourceId::parse("resourceId", resource_id)
        .map(|_| ())
        .map_err(|_| Error::not_found("resource not found"))
}

/// A live resource of the account, or 404 (also for ids that are not ours
/// and for uninstalled resources).
pub async fn owned_resource(
    state: &AppState,
    account_id: &str,
    resource_id: &str,
) -> Result<provisioning_pb::Resource> {
    resource_id_of(resource_id)?;
    let resource = state
        .provisioning
        .get_resource(provisioning_pb::GetResourceRequest {
            resource_id: resource_id.to_owned(),
            account_id: account_id.to_owned(),
        })
        .await?;
    if resource.status == provisioning_pb::ResourceStatus::Uninstalled as i32 {
        return Err(Error::not_found("the resource was deleted"));
    }
    Ok(resource)
}

/// Every live resource of the account (`ids` keeps only those), page by
/// page.
pub async fn account_resources(
    state: &AppState,
    account_id: &str,
    ids: &[String],
) -> Result<Vec<provisioning_pb::Resource>> {
    let mut resources = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = state
            .provisioning
            .list_resources(provisioning_pb::ListResourcesRequest {
                account_id: account_id.to_owned(),
                resource_ids: ids.to_vec(),
                include_deleted: false,
                page: Some(PageRequest {
                    page_size: 500,
                    page_token: page_token.clone(),
                }),
            })
            .await?;
        resources.extend(page.resources);
        page_token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if page_token.is_empty() {
            return Ok(resources);
        }
    }
}

/// The first page of the account's resources, as the provider page lists
/// them.
pub async fn first_resources(
    state: &AppState,
    account_id: &str,
) -> Result<Vec<provisioning_pb::Resource>> {
    Ok(state
        .provisioning
        .list_resources(provisioning_pb::ListResourcesRequest {
            account_id: account_id.to_owned(),
            ..Default::default()
        })
        .await?
        .resources)
}

/// A resource to create.
#[derive(Debug, Clone, Default)]
pub struct NewResource {
    /// The product.
    pub product_id: String,
    /// The plan.
    pub plan_id: String,
    /// Its name.
    pub name: String,
    /// The configuration the customer entered.
    pub metadata: Metadata,
    /// Vercel's id of it, if any.
    pub external_id: String,
    /// The installation-level subscription it joins, if any.
    pub subscription_id: String,
    /// Protocol settings, if any.
    pub protocol_settings: Option<provisioning_pb::ProtocolSettings>,
}

/// Provisions a resource for the account (`operation` scopes the key);
/// answers it with its secrets.
pub async fn create_resource(
    state: &AppState,
    call: &Call,
    operation: &str,
    account: &account_pb::Account,
    resource: NewResource,
) -> Result<(
    provisioning_pb::Resource,
    Vec<marketbridge_proto::common::v1::Secret>,
)> {
    let provisioning = &state.provisioning;
    let created = provisioning
        .create_resource(provisioning_pb::CreateResourceRequest {
            context: Some(call.context(operation)),
            account_id: account.id.clone(),
            product_id: resource.product_id,
            plan_id: resource.plan_id,
            name: resource.name,
            metadata: Some(resource.metadata),
            external_id: resource.external_id,
            subscription_id: resource.subscription_id,
            protocol_settings: resource.protocol_settings,
        })
        .await?;
    let provisioned = created
        .resource
        .ok_or_else(|| Error::internal("provisioning answered without a resource"))?;
    Ok((provisioned, created.secrets))
}

/// What an update changes of a resource (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct ResourceChange {
    /// A new name.
    pub name: Option<String>,
    /// New configuration.
    pub metadata: Option<Metadata>,
    /// Another plan.
    pub plan_id: Option<String>,
    /// New protocol settings.
    pub protocol_settings: Option<provisioning_pb::ProtocolSettings>,
    /// Whether only production may use it.
    pub production_only: Option<bool>,
}

/// Changes a resource of the account (`operation` scopes the key; the
/// caller checked with [`owned_resource`] that it is live); answers it as it
/// is now.
pub async fn update_resource(
    state: &AppState,
    call: &Call,
    operation: &str,
    account: &account_pb::Account,
    resource_id: &str,
    change: ResourceChange,
) -> Result<provisioning_pb::Resource> {
    state
        .provisioning
        .update_resource(provisioning_pb::UpdateResourceRequest {
            context: Some(call.context(operation)),
            resource_id: resource_id.to_owned(),
            account_id: account.id.clone(),
            name: change.name,
            metadata: change.metadata,
            plan_id: change.plan_id,
            status: 0,
            status_message: None,
            protocol_settings: change.protocol_settings,
            production_only: change.production_only,
        })
        .await
}

/// Deletes a resource of the account (`operation` scopes the key); also
/// when it was deleted before. Answers it as deleted.
pub async fn delete_resource(
    state: &AppState,
    call: &Call,
    operation: &str,
    account: &account_pb::Account,
    resource_id: &str,
) -> Result<provisioning_pb::Resource> {
    resource_id_of(resource_id)?;
    state
        .provisioning
        .delete_resource(provisioning_pb::DeleteResourceRequest {
            context: Some(call.context(operation)),
            resource_id: resource_id.to_owned(),
            account_id: account.id.clone(),
        })
        .await
}

/// Records that a live resource of the account is connected to a project
/// for `targets` (`operation` scopes the key).
pub async fn connect_project(
    state: &AppState,
    call: &Call,
    operation: &str,
    account: &account_pb::Account,
    resource_id: &str,
    project_id: &str,
    targets: &[String],
) -> Result<()> {
    owned_resource(state, &account.id, resource_id).await?;
    state
        .provisioning
        .record_project_connection(provisioning_pb::RecordProjectConnectionRequest {
            context: Some(call.context(operation)),
            resource_id: resource_id.to_owned(),
            project_id: project_id.to_owned(),
            connected: true,
            targets: targets.to_vec(),
        })
        .await?;
    Ok(())
}

/// Rotates the secrets of a live resource of the account, the old ones
/// valid `grace` seconds more, for `reason`.
pub async fn rotate_secrets(
    state: &AppState,
    call: &Call,
    account: &account_pb::Account,
    resource_id: &str,
    reason: String,
    grace: u64,
) -> Result<provisioning_pb::RotateSecretsResponse> {
    owned_resource(state, &account.id, resource_id).await?;
    state
        .provisioning
        .rotate_secrets(provisioning_pb::RotateSecretsRequest {
            context: Some(call.context("vercel.rotate_secrets")),
            resource_id: resource_id.to_owned(),
            account_id: account.id.clone(),
            reason,
            old_secrets_valid_for_seconds: grace,
        })
        .await
}

/// Runs one console command on a resource of the account (provisioning
/// checks it is the account's and not deleted).
pub async fn run_command(
    state: &AppState,
    account: &account_pb::Account,
    resource_id: &str,
    input: String,
    read_only: bool,
) -> Result<Vec<provisioning_pb::OutputBlock>> {
    resource_id_of(resource_id)?;
    Ok(state
        .provisioning
        .run_resource_command(provisioning_pb::RunResourceCommandRequest {
            resource_id: resource_id.to_owned(),
            account_id: account.id.clone(),
            input,
            read_only,
        })
        .await?
        .blocks)
}

/// Offers resources of the account for transfer until `expires_at`, under
/// `claim_id` (empty: a new id).
pub async fn offer_transfer(
    state: &AppState,
    call: &Call,
    account: &account_pb::Account,
    resource_ids: Vec<String>,
    expires_at: prost_types::Timestamp,
    claim_id: String,
) -> Result<provisioning_pb::TransferClaim> {
    state
        .provisioning
        .create_transfer_claim(provisioning_pb::CreateTransferClaimRequest {
            context: Some(call.context("vercel.create_transfer")),
            account_id: account.id.clone(),
            resource_ids,
            expires_at: Some(expires_at),
            claim_id,
        })
        .await
}

/// Whether the claim can be accepted by the target account.
pub async fn verify_transfer(
    state: &AppState,
    target: &account_pb::Account,
    claim_id: &str,
) -> Result<provisioning_pb::VerifyTransferClaimResponse> {
    state
        .provisioning
        .verify_transfer_claim(provisioning_pb::VerifyTransferClaimRequest {
            claim_id: claim_id.to_owned(),
            target_account_id: target.id.clone(),
        })
        .await
}

/// Moves the claim's resources to the target account.
pub async fn accept_transfer(
    state: &AppState,
    call: &Call,
    target: &account_pb::Account,
    claim_id: String,
) -> Result<provisioning_pb::TransferClaim> {
    state
        .provisioning
        .accept_transfer_claim(provisioning_pb::AcceptTransferClaimRequest {
            context: Some(call.context("vercel.accept_transfer")),
            claim_id,
            target_account_id: target.id.clone(),
        })
        .await
}

/// Credits a paid prepayment invoice to the account's balance (once per
/// invoice); answers the balances.
pub async fn provision_prepayment(
    state: &AppState,
    call: &Call,
    account: &account_pb::Account,
    invoice_id: &str,
) -> Result<billing_pb::Balances> {
    state
        .billing
        .provision_prepayment(billing_pb::ProvisionPrepaymentRequest {
            context: Some(call.context("vercel.provision_purchase")),
            account_id: account.id.clone(),
            marketplace_invoice_id: invoice_id.to_owned(),
        })
        .await
}

/// The invoice Vercel knows as `invoice_id`.
pub async fn marketplace_invoice(
    state: &AppState,
    invoice_id: &str,
) -> Result<billing_pb::Invoice> {
    state
        .billing
        .get_invoice(billing_pb::GetInvoiceRequest {
            selector: Some(
                billing_pb::get_invoice_request::Selector::MarketplaceInvoiceId(
                    invoice_id.to_owned(),
                ),
            ),
        })
        .await
}

/// The resources the provider made importable for the account (of
/// `product_id`, when not empty).
pub async fn importable_resources(
    state: &AppState,
    account: &account_pb::Account,
    product_id: &str,
) -> Result<Vec<provisioning_pb::ImportableResource>> {
    Ok(state
        .provisioning
        .list_importable_resources(provisioning_pb::ListImportableResourcesRequest {
            account_id: account.id.clone(),
            product_id: product_id.to_owned(),
        })
        .await?
        .resources)
}

/// Imports an importable resource as a linked resource of the account;
/// provisioning registers it with Vercel before answering.
pub async fn import_resource(
    state: &AppState,
    call: &Call,
    account: &account_pb::Account,
    importable_id: &str,
    product_id: &str,
) -> Result<provisioning_pb::Resource> {
    let provisioning = &state.provisioning;
    let imported = provisioning
        .import_resource(provisioning_pb::ImportResourceRequest {
            context: Some(call.context("vercel.import")),
            account_id: account.id.clone(),
            importable_id: importable_id.to_owned(),
            product_id: product_id.to_owned(),
        })
        .await?;
    imported
        .resource
        .ok_or_else(|| Error::internal("provisioning answered without a resource"))
}

/// Records a webhook event (deduplicated by its id); answers whether it was
/// recorded before.
pub async fn record_event(
    state: &AppState,
    event: account_pb::RecordMarketplaceEventRequest,
) -> Result<bool> {
    Ok(state
        .accounts
        .record_marketplace_event(event)
        .await?
        .duplicate)
}
