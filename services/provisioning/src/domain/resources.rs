//! Resources: creation with secrets known ahead of time, updates, plan
//! changes, rotation, suspension and deletion. The lifecycle's moves are
//! decided by [`crate::lifecycle::resource`]; their effects are applied here,
//! in [`ProvisioningDomain::resource_effects`].

use super::subscriptions::machine_view;
use super::{ProvisioningDomain, context_key};
use crate::convert::{
    StoredConnection, connections, metadata, resource_to_proto, status_from_proto,
    subscription_to_proto, to_json,
};
use crate::driver::{Driver, DriverContext, Prepared, Secret};
use crate::entity::{resource, subscription};
use crate::lifecycle::resource::{self as lifecycle, Effect, Event};
use crate::lifecycle::subscription as subscription_machine;
use crate::model::{
    Ownership, PendingRotation, PlanId, ProductId, ProvisioningJob, ResourceJob, ResourceStatus,
    SubscriptionScope, SubscriptionState,
};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::ids::{AccountId, ResourceId, SubscriptionId};
use marketbridge_core::metadata::{json_to_metadata, metadata_to_json};
use marketbridge_core::{Error, Result, Validator};
use marketbridge_proto::common::v1::RequestContext;
use marketbridge_proto::provisioning::v1 as pb;
use marketbridge_storage::db_error;
use marketbridge_storage::outbox::NewJob;
use marketbridge_storage::paging::Page;
use marketbridge_storage::{Call, UnitOfWork, unit_of_work};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait,
};
use serde_json::Value as Json;

/// Longest resource name.
const MAX_NAME: usize = 128;
/// Longest time old secrets may stay valid (Vercel allows 720 hours).
const MAX_OLD_SECRETS_SECONDS: u64 = 720 * 3600;

/// Refuses text with control characters (NUL, newlines, escapes): no
/// driver has to represent them.
fn no_control_characters(validator: &mut Validator, field: &str, value: &str) {
    if value.chars().any(char::is_control) {
        validator.invalid(field, "must not contain control characters");
    }
}

/// The account a request restricts a resource to: none when empty; an id
/// that does not parse matches no resource.
pub(crate) fn owner_filter(text: &str) -> Result<Option<AccountId>> {
    if text.is_empty() {
        return Ok(None);
    }
    AccountId::parse("accountId", text)
        .map(Some)
        .map_err(|_| Error::not_found("resource not found"))
}

/// The row of a new resource's own subscription: active from `now` on
/// `plan`, known at the marketplace by the resource's id.
pub(super) fn resource_subscription(
    id: &SubscriptionId,
    account: &super::AccountInfo,
    resource_id: &ResourceId,
    product: &marketbridge_catalog::Product,
    plan: &marketbridge_catalog::Plan,
    attributes: String,
    now: DateTime<Utc>,
) -> subscription::Model {
    subscription::Model {
        id: id.to_string(),
        account_id: account.id.to_string(),
        marketplace: account.marketplace.as_str().to_owned(),
        external_id: resource_id.to_string(),
        product_id: product.id.clone(),
        plan_id: plan.id.clone(),
        pending_plan_id: String::new(),
        state: SubscriptionState::Active,
        scope: SubscriptionScope::Resource,
        marketplace_state: String::new(),
        marketplace_update_time: None,
        usage_reporting_id: String::new(),
        order_id: String::new(),
        awaiting_account_approval: false,
        reason: String::new(),
        attributes,
        version: 1,
        created_at: now,
        updated_at: now,
        started_at: Some(now),
        ended_at: None,
    }
}

impl ProvisioningDomain {
    /// What the lifecycle machine sees of a stored resource.
    pub(crate) fn machine_resource(row: &resource::Model) -> lifecycle::Resource {
        lifecycle::Resource {
            status: row.status,
            ownership: row.ownership,
        }
    }

    /// Creates a resource; see `CreateResource`.
    pub async fn create_resource(
        &self,
        request: pb::CreateResourceRequest,
    ) -> Result<pb::CreateResourceResponse> {
        let mut validator = Validator::new();
        validator.require("productId", &request.product_id);
        validator.require("billingPlanId", &request.plan_id);
        validator.require("name", &request.name);
        validator.max_len("name", &request.name, MAX_NAME);
        no_control_characters(&mut validator, "name", &request.name);
        validator.max_len("externalId", &request.external_id, 255);
        crate::protocol::validate(&mut validator, request.protocol_settings.as_ref());
        validator.finish()?;
        let (protocol_settings, _) =
            crate::protocol::merge("{}", request.protocol_settings.as_ref())?;
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let subscription_id = if request.subscription_id.is_empty() {
            None
        } else {
            Some(SubscriptionId::parse(
                "subscriptionId",
                &request.subscription_id,
            )?)
        };
        let product = self
            .catalog
            .require_product("productId", &request.product_id)?;
        let metadata = product.validate_metadata(&metadata_to_json(request.metadata.as_ref()))?;
        let plan = product.plan_for_metadata(&request.plan_id, &metadata)?;
        let driver = self.driver(&product.driver)?.clone();

        let key = context_key(request.context.as_ref());
        let mut call = Call::new("provisioning.CreateResource", &key, &request, self.now())
            .sealed(&self.cipher);
        // What happens before the transaction has no side effect (an account
        // read, the driver deciding secrets), so a repeated call is found at
        // the commit; one that fails before gets the first call's answer
        // instead of its error.
        // A new subscription's billing job is the one every provision
        // causes: the call waits for a slot of its lane while the worker is
        // behind, so provisions come no faster than their jobs run.
        let attempt = call
            .clone()
            .optimistic()
            .admitting(ProvisioningJob::BILLING_CHANGE);
        let created = async {
            let call = attempt;
            // Remote reads and the driver's decisions first: no call leaves
            // while the transaction is open.
            let account = self.account_by_id(&account_id).await?;
            if !account.active {
                return Err(Error::conflict(
                    "the account is uninstalled; it cannot provision resources",
                )
                .with_user_message("This installation has been removed"));
            }
            let resource_id = ResourceId::generate();
            let name = request.name.trim();
            let new = NewResource {
                resource_id: &resource_id,
                account_id: &account.id,
                subscription_id: None,
                product,
                plan,
                name,
                metadata: &metadata,
                marketplace: account.marketplace.as_str(),
                external_id: &request.external_id,
                protocol_settings: &protocol_settings,
            };
            let prepared = self.prepare(&new, driver.as_ref()).await?;

            let mut work = unit_of_work!(call, &self.db, &self.outbox);
            work.concerning(&account.id);
            let now = self.now();
            let existing_subscription = match &subscription_id {
                None => None,
                Some(id) => {
                    let found = self
                        .load_subscription(&*work, id)
                        .await?
                        .filter(|s| s.account_id == account.id.as_str())
                        .ok_or_else(|| Error::not_found("subscription not found"))?;
                    if !found.state.is_usable() {
                        return Err(Error::conflict("the subscription is not active"));
                    }
                    Some(found)
                }
            };
            if plan.max_resources > 0 {
                let live = resource::Entity::find()
                    .filter(resource::Column::AccountId.eq(account.id.as_str()))
                    .filter(resource::Column::PlanId.eq(plan.id.clone()))
                    .filter(resource::Column::Status.ne(ResourceStatus::Uninstalled))
                    .count(&*work)
                    .await
                    .map_err(db_error)?;
                if live >= u64::from(plan.max_resources) {
                    return Err(Error::conflict(format!(
                        "plan `{}` allows {} resources",
                        plan.id, plan.max_resources
                    ))
                    .with_user_message("You reached the number of resources this plan allows"));
                }
            }

            let subscription = match existing_subscription {
                Some(found) => found,
                None => {
                    let row = resource_subscription(
                        &SubscriptionId::generate(),
                        &account,
                        &resource_id,
                        product,
                        plan,
                        "{}".to_owned(),
                        now,
                    );
                    // Sent with the commit, as the resource and its job are: the
                    // call is one statement on PostgreSQL.
                    work.insert_at_commit(
                        subscription::Entity::insert(row.clone().into_active_model()).into_query(),
                    );
                    // Its one resource is the one inserted below.
                    self.enqueue_billing_change(
                        &mut work,
                        &row,
                        Some(vec![resource_id.to_string()]),
                    )?;
                    row
                }
            };
            let subscription_id = subscription.subscription_id()?;
            let new = NewResource {
                subscription_id: Some(&subscription_id),
                ..new
            };
            let row = self
                .insert_resource(&mut work, new, &prepared, Ownership::Owned)
                .await?;
            tracing::info!(resource.id = %row.id, product = %row.product_id, plan = %row.plan_id, status = %row.status, "resource created");
            let response = pb::CreateResourceResponse {
                resource: Some(resource_to_proto(&row)?),
                secrets: prepared.secrets.iter().map(Secret::to_proto).collect(),
            };
            work.finish(response).await
        };
        match created.await {
            Ok(answer) => Ok(answer),
            Err(error) => match call.replayed(&self.db).await? {
                Some(answer) => Ok(answer),
                None => Err(error),
            },
        }
    }

    pub(crate) async fn require_resource(
        &self,
        conn: &impl ConnectionTrait,
        resource_id: &ResourceId,
        owner: Option<&AccountId>,
    ) -> Result<resource::Model> {
        owned(self.load_resource(conn, resource_id).await?, owner)
    }

    /// [`Self::require_resource`] inside a write transaction, the row locked
    /// until it ends (on PostgreSQL; on SQLite the transaction holds the
    /// file's write lock already): for a change decided from a read before
    /// the transaction, so a replica's change to the row either committed
    /// before this read (and shows in it) or waits until this commits.
    pub(crate) async fn require_resource_locked(
        &self,
        conn: &impl ConnectionTrait,
        resource_id: &ResourceId,
        owner: Option<&AccountId>,
    ) -> Result<resource::Model> {
        let row = resource::Entity::find_by_id(resource_id.as_str().to_owned())
            .lock_exclusive()
            .one(conn)
            .await
            .map_err(db_error)?;
        owned(row, owner)
    }

    /// [`Self::require_resource`] for reading only, through the resource
    /// cache: the same answer for a row of another account (not found).
    pub(crate) async fn require_cached_resource(
        &self,
        resource_id: &ResourceId,
        owner: Option<&AccountId>,
    ) -> Result<std::sync::Arc<resource::Model>> {
        self.load_resource_cached(resource_id)
            .await?
            .filter(|row| owner.is_none_or(|owner| row.account_id == owner.as_str()))
            .ok_or_else(|| Error::not_found("resource not found"))
    }

    /// One resource, without secrets.
    pub async fn get_resource(&self, request: pb::GetResourceRequest) -> Result<pb::Resource> {
        let resource_id = ResourceId::parse("resourceId", &request.resource_id)?;
        let owner = owner_filter(&request.account_id)?;
        let row = self
            .require_cached_resource(&resource_id, owner.as_ref())
            .await?;
        resource_to_proto(&row)
    }

    /// A page of an account's resources, oldest first.
    pub async fn list_resources(
        &self,
        request: pb::ListResourcesRequest,
    ) -> Result<pb::ListResourcesResponse> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let page = Page::from_request(request.page.as_ref());
        let mut query = resource::Entity::find()
            .filter(resource::Column::AccountId.eq(account_id.into_string()))
            .order_by_asc(resource::Column::Id)
            .limit(page.fetch_limit());
        if !request.include_deleted {
            query = query.filter(resource::Column::Status.ne(ResourceStatus::Uninstalled));
        }
        if !request.resource_ids.is_empty() {
            query = query.filter(resource::Column::Id.is_in(request.resource_ids.clone()));
        }
        if let Some(after) = &page.after {
            query = query.filter(resource::Column::Id.gt(after.clone()));
        }
        let rows = query.all(&self.db).await.map_err(db_error)?;
        let (rows, next) = page.finish(rows, |row| row.id.clone());
        Ok(pb::ListResourcesResponse {
            resources: rows.iter().map(resource_to_proto).collect::<Result<_>>()?,
            page: Some(next),
        })
    }

    /// Updates name, metadata, plan or status.
    pub async fn update_resource(
        &self,
        request: pb::UpdateResourceRequest,
    ) -> Result<pb::Resource> {
        let mut validator = Validator::new();
        if let Some(name) = &request.name {
            validator.require("name", name);
            validator.max_len("name", name, MAX_NAME);
            no_control_characters(&mut validator, "name", name);
        }
        crate::protocol::validate(&mut validator, request.protocol_settings.as_ref());
        validator.finish()?;
        let new_status = match pb::ResourceStatus::try_from(request.status).unwrap_or_default() {
            pb::ResourceStatus::Unspecified => None,
            pb::ResourceStatus::Ready => Some(ResourceStatus::Ready),
            pb::ResourceStatus::Suspended => Some(ResourceStatus::Suspended),
            pb::ResourceStatus::Onboarding => Some(ResourceStatus::Onboarding),
            pb::ResourceStatus::Error => Some(ResourceStatus::Error),
            other => {
                return Err(Error::invalid_field(
                    "status",
                    format!("cannot be set to {}", other.as_str_name()),
                ));
            }
        };
        let resource_id = ResourceId::parse("resourceId", &request.resource_id)?;
        let owner = owner_filter(&request.account_id)?;
        let key = context_key(request.context.as_ref());
        let call = Call::new("provisioning.UpdateResource", &key, &request, self.now())
            .sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let mut row = self
            .require_resource(&*work, &resource_id, owner.as_ref())
            .await?;
        if row.status == ResourceStatus::Uninstalled {
            return Err(Error::conflict("the resource is deleted"));
        }
        let product = self.product(&ProductId::new(&row.product_id))?;
        let mut metadata = metadata(&row)?;
        if let Some(new_metadata) = &request.metadata {
            metadata = product.validate_metadata(&metadata_to_json(Some(new_metadata)))?;
            row.metadata = metadata.to_string();
        }
        if let Some(name) = &request.name {
            row.name = name.trim().to_owned();
        }
        if let Some(production_only) = request.production_only {
            row.production_only = production_only;
        }
        let plan_changed = match &request.plan_id {
            Some(plan_id) if *plan_id != row.plan_id => {
                product.plan_for_metadata(plan_id, &metadata)?;
                row.plan_id = plan_id.clone();
                true
            }
            Some(plan_id) => {
                product.plan_for_metadata(plan_id, &metadata)?;
                false
            }
            None => false,
        };
        let (protocol_settings, app_urls_changed) =
            crate::protocol::merge(&row.protocol_settings, request.protocol_settings.as_ref())?;
        row.protocol_settings = protocol_settings;
        let step = lifecycle::step(
            Self::machine_resource(&row),
            Event::Update {
                status: new_status,
                plan_changed,
                app_urls_changed,
            },
        )?;
        if step.changed {
            row.status_message = request.status_message.clone().unwrap_or_default();
        } else if let Some(message) = &request.status_message {
            row.status_message = message.clone();
        }
        let row = self.apply_resource(&mut work, row, step, None).await?;
        let response = resource_to_proto(&row)?;
        work.finish(response).await
    }

    /// Writes a resource as a step of its lifecycle left it and carries out
    /// the step's effects.
    async fn apply_resource(
        &self,
        work: &mut UnitOfWork,
        mut row: resource::Model,
        step: lifecycle::Step,
        scheduled_at: Option<DateTime<Utc>>,
    ) -> Result<resource::Model> {
        let now = self.now();
        row.status = step.after.status;
        row.updated_at = now;
        if step.after.status == ResourceStatus::Uninstalled && step.changed {
            row.deleted_at = Some(now);
        }
        row.update_in(&**work).await?;
        self.resource_effects(work, &row, &step.effects, scheduled_at)
            .await?;
        Ok(row)
    }

    /// Carries out the effects of a resource's step (after its row is
    /// written). `scheduled_at` is when a scheduled driver job (provision,
    /// deprovision) runs; now when none is given.
    async fn resource_effects(
        &self,
        work: &mut UnitOfWork,
        row: &resource::Model,
        effects: &[Effect],
        scheduled_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let resource_id = row.resource_id()?;
        let plain = ResourceJob::plain(&resource_id);
        let at = scheduled_at.unwrap_or_else(|| self.now());
        for effect in effects {
            match effect {
                Effect::Provision => {
                    let job = ProvisioningJob::Provision(plain.clone());
                    work.enqueue(
                        NewJob::of(&job)?
                            .dedupe_key(format!("provision:{}", row.id))
                            .run_at(at),
                    )
                    .await?;
                }
                Effect::ApplyPlan => {
                    work.enqueue(NewJob::of(&ProvisioningJob::ApplyPlan(plain.clone()))?)
                        .await?;
                }
                Effect::MoveSubscriptionToPlan => {
                    let Some(subscription) = self
                        .load_subscription(&**work, &row.paying_subscription_id()?)
                        .await?
                    else {
                        continue;
                    };
                    let step = subscription_machine::step(
                        Some(&machine_view(&subscription)),
                        subscription_machine::Event::ResourcePlanChanged {
                            plan_id: PlanId::new(&row.plan_id),
                        },
                    )?;
                    if step.save {
                        self.write_subscription(work, subscription, &step).await?;
                    }
                }
                Effect::DriverSuspend => {
                    work.enqueue(NewJob::of(&ProvisioningJob::Suspend(plain.clone()))?)
                        .await?;
                }
                Effect::DriverResume => {
                    work.enqueue(NewJob::of(&ProvisioningJob::Resume(plain.clone()))?)
                        .await?;
                }
                Effect::Deprovision => {
                    let job = ProvisioningJob::Deprovision(plain.clone());
                    work.enqueue(
                        NewJob::of(&job)?
                            .dedupe_key(format!("deprovision:{}", row.id))
                            .run_at(at),
                    )
                    .await?;
                }
                Effect::EndSubscription => {
                    let Some(mut subscription) = self
                        .load_subscription(&**work, &row.paying_subscription_id()?)
                        .await?
                    else {
                        continue;
                    };
                    let step = subscription_machine::step(
                        Some(&machine_view(&subscription)),
                        subscription_machine::Event::ResourceDeleted,
                    )?;
                    if step.save {
                        subscription.reason = "resource deleted".to_owned();
                        self.write_subscription(work, subscription, &step).await?;
                    }
                }
                Effect::Detach => {
                    self.detach_in(work, row).await?;
                    tracing::info!(resource.id = %row.id, "linked resource detached");
                }
                Effect::Notify { push_secrets } => {
                    self.enqueue_notify(work, row, *push_secrets).await?;
                }
            }
        }
        Ok(())
    }

    /// Deletes a resource; a second delete answers the same.
    pub async fn delete_resource(
        &self,
        request: pb::DeleteResourceRequest,
    ) -> Result<pb::Resource> {
        let resource_id = ResourceId::parse("resourceId", &request.resource_id)?;
        let owner = owner_filter(&request.account_id)?;
        let key = context_key(request.context.as_ref());
        let call = Call::new("provisioning.DeleteResource", &key, &request, self.now())
            .sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let row = self
            .require_resource(&*work, &resource_id, owner.as_ref())
            .await?;
        let row = self.delete_in(&mut work, row).await?;
        let response = resource_to_proto(&row)?;
        work.finish(response).await
    }

    /// Marks a resource deleted, ends its resource-scoped subscription and
    /// schedules its teardown (or detaches a linked one).
    pub(crate) async fn delete_in(
        &self,
        work: &mut UnitOfWork,
        row: resource::Model,
    ) -> Result<resource::Model> {
        // A driver with a grace period keeps the resource, suspended, until
        // the teardown is due.
        let grace_seconds = match self.driver_for(&row) {
            Ok(driver) => driver.driver.deletion_grace_seconds(&driver.context()),
            Err(_) => 0,
        };
        let step = lifecycle::step(
            Self::machine_resource(&row),
            Event::Delete {
                grace: grace_seconds > 0,
            },
        )?;
        if !step.changed {
            return Ok(row);
        }
        let at = self.now() + ChronoDuration::seconds(grace_seconds.min(i64::MAX as u64) as i64);
        let row = self.apply_resource(work, row, step, Some(at)).await?;
        tracing::info!(resource.id = %row.id, grace_seconds, "resource deleted");
        Ok(row)
    }

    /// New secrets; the old ones stay valid for the requested delay.
    pub async fn rotate_secrets(
        &self,
        request: pb::RotateSecretsRequest,
    ) -> Result<pb::RotateSecretsResponse> {
        if request.old_secrets_valid_for_seconds > MAX_OLD_SECRETS_SECONDS {
            return Err(Error::invalid_field(
                "delayOldSecretsExpirationHours",
                "must be at most 720 hours",
            ));
        }
        let resource_id = ResourceId::parse("resourceId", &request.resource_id)?;
        let owner = owner_filter(&request.account_id)?;
        let key = context_key(request.context.as_ref());
        let mut call = Call::new("provisioning.RotateSecrets", &key, &request, self.now())
            .sealed(&self.cipher);
        if let Some(answer) = call.replayed(&self.db).await? {
            return Ok(answer);
        }
        // The driver decides the new secrets before the transaction, so
        // rotations of one resource take turns in this process. One that
        // another replica's overtook in between starts again from the
        // secrets that one left, as if the two had come one after the
        // other; only one that keeps being overtaken gives up.
        let _turn = self.rotation_turns.take(&resource_id).await;
        for _ in 0..ROTATION_ATTEMPTS {
            let stored = self
                .require_resource(&self.db, &resource_id, owner.as_ref())
                .await?;
            lifecycle::step(Self::machine_resource(&stored), Event::RotateSecrets)?;
            let current = self.open(&stored.secrets)?;
            let driver = self.driver_for(&stored)?;
            let rotation = driver.driver.rotate(&driver.context(), &current).await?;

            let mut work = unit_of_work!(call.clone(), &self.db, &self.outbox);
            let mut row = self
                .require_resource_locked(&*work, &resource_id, owner.as_ref())
                .await?;
            lifecycle::step(Self::machine_resource(&row), Event::RotateSecrets)?;
            if row.secrets_version != stored.secrets_version {
                // Dropping the unit of work rolls it back.
                continue;
            }
            let now = self.now();
            let grace = ChronoDuration::seconds(request.old_secrets_valid_for_seconds as i64);
            let response = if rotation.sync {
                let merged = merge_secrets(&current, &rotation.secrets, rotation.partial);
                row.previous_secrets = Some(row.secrets.clone());
                row.previous_secrets_expire_at = Some(now + grace);
                row.secrets = self.seal(&merged)?;
                row.secrets_version += 1;
                row.driver_state = rotation.state.to_string();
                row.updated_at = now;
                row.update_in(&*work).await?;
                let job = ProvisioningJob::RevokeOldSecrets(ResourceJob::plain(&resource_id));
                work.enqueue(NewJob::of(&job)?.run_at(now + grace)).await?;
                pb::RotateSecretsResponse {
                    sync: true,
                    secrets: rotation
                        .secrets
                        .iter()
                        .map(|secret| {
                            if row.production_only {
                                secret.production_values().to_proto()
                            } else {
                                secret.to_proto()
                            }
                        })
                        .collect(),
                    partial: rotation.partial,
                    resource: Some(resource_to_proto(&row)?),
                }
            } else {
                let pending = PendingRotation {
                    sealed_secrets: self.seal(&rotation.secrets)?,
                    partial: rotation.partial,
                    state: rotation.state.clone(),
                    old_valid_for_seconds: request.old_secrets_valid_for_seconds,
                };
                let job = ProvisioningJob::CompleteRotation(ResourceJob {
                    resource_id: resource_id.clone(),
                    push_secrets: true,
                    sealed: Some(pending),
                });
                work.enqueue(NewJob::of(&job)?).await?;
                pb::RotateSecretsResponse {
                    sync: false,
                    secrets: Vec::new(),
                    partial: rotation.partial,
                    resource: Some(resource_to_proto(&row)?),
                }
            };
            tracing::info!(resource.id = %row.id, sync = response.sync, "secrets rotation started");
            return work.finish(response).await;
        }
        Err(
            Error::conflict("the resource's secrets kept changing during the rotation; try again")
                .with_user_message("The secrets are being rotated by another request; try again"),
        )
    }

    /// Current secrets (internal).
    pub async fn resource_secrets(
        &self,
        request: pb::GetResourceSecretsRequest,
    ) -> Result<pb::GetResourceSecretsResponse> {
        let resource_id = ResourceId::parse("resourceId", &request.resource_id)?;
        let row = self.require_cached_resource(&resource_id, None).await?;
        let secrets = self.open(&row.secrets)?;
        Ok(pb::GetResourceSecretsResponse {
            secrets: secrets.iter().map(Secret::to_proto).collect(),
            secrets_version: row.secrets_version.max(0) as u32,
        })
    }

    /// Suspends or resumes a resource.
    pub async fn set_suspended(
        &self,
        context: Option<&RequestContext>,
        resource_id: &ResourceId,
        suspended: bool,
        reason: &str,
        request: &impl prost::Message,
    ) -> Result<pb::Resource> {
        let key = context_key(context);
        let scope_name = if suspended {
            "provisioning.SuspendResource"
        } else {
            "provisioning.ResumeResource"
        };
        let call = Call::new(scope_name, &key, request, self.now()).sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let mut row = self.require_resource(&*work, resource_id, None).await?;
        let event = if suspended {
            Event::Suspend
        } else {
            Event::Resume
        };
        let step = lifecycle::step(Self::machine_resource(&row), event)?;
        if step.changed {
            row.status_message = if suspended {
                reason.to_owned()
            } else {
                String::new()
            };
            row = self.apply_resource(&mut work, row, step, None).await?;
        }
        let response = resource_to_proto(&row)?;
        work.finish(response).await
    }

    /// Deletes every live resource of an account.
    pub async fn delete_account_resources(
        &self,
        request: pb::DeleteAccountResourcesRequest,
    ) -> Result<pb::DeleteAccountResourcesResponse> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let key = context_key(request.context.as_ref());
        let call = Call::new(
            "provisioning.DeleteAccountResources",
            &key,
            &request,
            self.now(),
        )
        .sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        work.concerning(&account_id);
        let rows = resource::Entity::find()
            .filter(resource::Column::AccountId.eq(account_id.into_string()))
            .filter(resource::Column::Status.ne(ResourceStatus::Uninstalled))
            .order_by_asc(resource::Column::Id)
            .all(&*work)
            .await
            .map_err(db_error)?;
        let mut deleted = Vec::new();
        for row in rows {
            deleted.push(self.delete_in(&mut work, row).await?.id);
        }
        work.finish(pb::DeleteAccountResourcesResponse {
            deleted_resource_ids: deleted,
        })
        .await
    }

    /// Records a project connection or disconnection.
    pub async fn record_connection(
        &self,
        request: pb::RecordProjectConnectionRequest,
    ) -> Result<pb::Resource> {
        let mut validator = Validator::new();
        validator.require("projectId", &request.project_id);
        validator.max_len("projectId", &request.project_id, 255);
        validator.finish()?;
        let resource_id = ResourceId::parse("resourceId", &request.resource_id)?;
        let key = context_key(request.context.as_ref());
        let call = Call::new(
            "provisioning.RecordProjectConnection",
            &key,
            &request,
            self.now(),
        )
        .sealed(&self.cipher);
        let work = unit_of_work!(call, &self.db, &self.outbox);
        let mut row = self.require_resource(&*work, &resource_id, None).await?;
        let mut stored: Vec<StoredConnection> = connections(&row)?;
        stored.retain(|c| c.project_id != request.project_id);
        if request.connected {
            stored.push(StoredConnection {
                project_id: request.project_id.clone(),
                targets: request.targets.clone(),
                connected_at: self.now(),
            });
        }
        row.connections = to_json(&stored)?;
        row.updated_at = self.now();
        row.update_in(&*work).await?;
        let response = resource_to_proto(&row)?;
        work.finish(response).await
    }

    /// The subscription of a resource, for callers that need both.
    pub async fn subscription_of_resource(
        &self,
        resource_id: &ResourceId,
    ) -> Result<pb::Subscription> {
        let row = self.require_resource(&self.db, resource_id, None).await?;
        let subscription = self
            .load_subscription(&self.db, &row.paying_subscription_id()?)
            .await?
            .ok_or_else(|| Error::internal("resource without subscription"))?;
        let ids = self
            .resource_ids_of(&self.db, &subscription.subscription_id()?)
            .await?;
        subscription_to_proto(&subscription, ids)
    }

    /// Creates the resource of an account-scoped subscription that just
    /// became usable (a Google entitlement turning active).
    pub(crate) async fn provision_for_subscription(
        &self,
        work: &mut UnitOfWork,
        subscription: &subscription::Model,
    ) -> Result<Option<resource::Model>> {
        let subscription_id = subscription.subscription_id()?;
        if !self
            .live_resources_of_subscription(&**work, &subscription_id)
            .await?
            .is_empty()
        {
            return Ok(None);
        }
        let Some(product) = self.catalog.product(&subscription.product_id) else {
            tracing::warn!(subscription.id = %subscription.id, product = %subscription.product_id, "active subscription to a product not in the catalog");
            return Ok(None);
        };
        let plan = self.plan(product, &PlanId::new(&subscription.plan_id))?;
        let driver = self.driver(&product.driver)?.clone();
        let metadata = product.validate_metadata(&Json::Object(Default::default()))?;
        let resource_id = ResourceId::generate();
        let account_id = subscription.owner_id()?;
        let new = NewResource {
            resource_id: &resource_id,
            account_id: &account_id,
            subscription_id: Some(&subscription_id),
            product,
            plan,
            name: &product.name,
            metadata: &metadata,
            marketplace: &subscription.marketplace,
            external_id: &subscription.external_id,
            protocol_settings: "{}",
        };
        // The driver decides the secrets from what it is told; drivers do
        // not call out to prepare.
        let prepared = self.prepare(&new, driver.as_ref()).await?;
        let row = self
            .insert_resource(work, new, &prepared, Ownership::Owned)
            .await?;
        tracing::info!(resource.id = %row.id, subscription.id = %subscription.id, "resource created for subscription");
        Ok(Some(row))
    }

    /// A new resource's secrets and notes, decided by its driver.
    async fn prepare(&self, new: &NewResource<'_>, driver: &dyn Driver) -> Result<Prepared> {
        let empty_state = Json::Null;
        let app_urls = crate::protocol::app_urls(new.protocol_settings)?;
        let context = DriverContext {
            resource_id: new.resource_id.as_str(),
            account_id: new.account_id.as_str(),
            name: new.name,
            product: new.product,
            plan: new.plan,
            metadata: new.metadata,
            state: &empty_state,
            app_urls: &app_urls,
        };
        driver.prepare(&context).await
    }

    /// Stores a new resource: ready at once when its driver says so,
    /// otherwise pending with its provisioning scheduled.
    pub(crate) async fn insert_resource(
        &self,
        work: &mut UnitOfWork,
        new: NewResource<'_>,
        prepared: &Prepared,
        ownership: Ownership,
    ) -> Result<resource::Model> {
        let subscription_id = new
            .subscription_id
            .ok_or_else(|| Error::internal("a resource needs a subscription"))?;
        let step = lifecycle::created(ownership, prepared.ready);
        let now = self.now();
        let row = resource::Model {
            id: new.resource_id.to_string(),
            account_id: new.account_id.to_string(),
            subscription_id: subscription_id.to_string(),
            product_id: new.product.id.clone(),
            plan_id: new.plan.id.clone(),
            name: new.name.to_owned(),
            metadata: new.metadata.to_string(),
            status: step.after.status,
            status_message: String::new(),
            marketplace: new.marketplace.to_owned(),
            external_id: new.external_id.to_owned(),
            connections: "[]".to_owned(),
            secrets: self.seal(&prepared.secrets)?,
            secrets_version: 1,
            previous_secrets: None,
            previous_secrets_expire_at: None,
            driver: new.product.driver.clone(),
            driver_state: prepared.state.to_string(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
            ownership,
            protocol_settings: new.protocol_settings.to_owned(),
            production_only: false,
        };
        // Sent with the transaction's next statement or its commit.
        work.insert_at_commit(
            resource::Entity::insert(row.clone().into_active_model()).into_query(),
        );
        let at = now + ChronoDuration::seconds(prepared.delay_seconds as i64);
        self.resource_effects(work, &row, &step.effects, Some(at))
            .await?;
        Ok(row)
    }

    /// Records what a provisioning job's driver said: ready or onboarding
    /// (`Ok(onboarding)`), or failed for good (`Err(message)`).
    pub(crate) async fn record_provisioning(
        &self,
        resource_id: &ResourceId,
        outcome: std::result::Result<bool, String>,
    ) -> Result<()> {
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let Some(mut row) = self.load_resource(&*work, resource_id).await? else {
            return Ok(());
        };
        let event = match &outcome {
            Ok(onboarding) => Event::Provisioned {
                onboarding: *onboarding,
            },
            Err(_) => Event::ProvisioningFailed,
        };
        let step = lifecycle::step(Self::machine_resource(&row), event)?;
        if !step.changed {
            return Ok(());
        }
        row.status_message = outcome.err().unwrap_or_default();
        let row = self.apply_resource(&mut work, row, step, None).await?;
        work.commit().await?;
        tracing::info!(resource.id = %row.id, status = %row.status, "resource provisioned");
        Ok(())
    }

    /// Records a rotation its driver completed: the new secrets replace
    /// the current ones, which stay valid for the grace period asked for.
    pub(crate) async fn record_rotation(
        &self,
        resource_id: &ResourceId,
        pending: &PendingRotation,
        new_secrets: &[Secret],
    ) -> Result<()> {
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let Some(mut row) = self.load_resource(&*work, resource_id).await? else {
            return Ok(());
        };
        if lifecycle::step(Self::machine_resource(&row), Event::CompleteRotation).is_err() {
            return Ok(());
        }
        let current = self.open(&row.secrets)?;
        let merged = merge_secrets(&current, new_secrets, pending.partial);
        let now = self.now();
        let expires = now + ChronoDuration::seconds(pending.old_valid_for_seconds as i64);
        row.previous_secrets = Some(row.secrets.clone());
        row.previous_secrets_expire_at = Some(expires);
        row.secrets = self.seal(&merged)?;
        row.secrets_version += 1;
        row.driver_state = pending.state.to_string();
        row.updated_at = now;
        row.update_in(&*work).await?;
        self.enqueue_notify(&mut work, &row, true).await?;
        let job = ProvisioningJob::RevokeOldSecrets(ResourceJob::plain(resource_id));
        work.enqueue(NewJob::of(&job)?.run_at(expires)).await?;
        work.commit().await
    }

    /// Forgets the previous secrets once revoked (unless a later rotation
    /// replaced them meanwhile).
    pub(crate) async fn forget_previous_secrets(
        &self,
        resource_id: &ResourceId,
        expired_at: DateTime<Utc>,
    ) -> Result<()> {
        let work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        if let Some(mut row) = self.load_resource(&*work, resource_id).await?
            && row.previous_secrets_expire_at == Some(expired_at)
        {
            row.previous_secrets = None;
            row.previous_secrets_expire_at = None;
            row.update_in(&*work).await?;
        }
        work.commit().await
    }

    /// Converts proto metadata for callers.
    pub fn metadata_json(metadata: &Json) -> Result<marketbridge_proto::common::v1::Metadata> {
        json_to_metadata("metadata", metadata)
    }

    /// Parses a requested status.
    pub fn parse_status(value: i32) -> Option<ResourceStatus> {
        pb::ResourceStatus::try_from(value)
            .ok()
            .and_then(status_from_proto)
    }
}

/// `row` when it belongs to `owner` (any account when `None`), else not found.
fn owned(row: Option<resource::Model>, owner: Option<&AccountId>) -> Result<resource::Model> {
    row.filter(|row| owner.is_none_or(|owner| row.account_id == owner.as_str()))
        .ok_or_else(|| Error::not_found("resource not found"))
}

/// Times a rotation starts again when another replica's rotation of the
/// same resource overtook it between its read and its transaction.
const ROTATION_ATTEMPTS: usize = 5;

/// What a new resource is made of.
#[derive(Clone, Copy)]
pub(crate) struct NewResource<'a> {
    pub(crate) resource_id: &'a ResourceId,
    pub(crate) account_id: &'a AccountId,
    pub(crate) subscription_id: Option<&'a SubscriptionId>,
    pub(crate) product: &'a marketbridge_catalog::Product,
    pub(crate) plan: &'a marketbridge_catalog::Plan,
    pub(crate) name: &'a str,
    pub(crate) metadata: &'a Json,
    pub(crate) marketplace: &'a str,
    pub(crate) external_id: &'a str,
    pub(crate) protocol_settings: &'a str,
}

/// The secrets after a rotation: all new ones, or the old ones with the
/// changed ones replaced when the rotation was partial.
pub(crate) fn merge_secrets(current: &[Secret], rotated: &[Secret], partial: bool) -> Vec<Secret> {
    if !partial {
        return rotated.to_vec();
    }
    let mut merged: Vec<Secret> = current
        .iter()
        .filter(|c| !rotated.iter().any(|r| r.name == c.name))
        .cloned()
        .collect();
    merged.extend(rotated.iter().cloned());
    merged
}
