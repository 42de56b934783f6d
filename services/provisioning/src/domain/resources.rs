//! Resources: creation with secrets known ahead of time, updates, plan
//! changes, rotation, suspension and deletion.

use super::{ProvisioningDomain, context_key};
use crate::convert::{
    StoredConnection, from_json, resource_to_proto, scope, status, status_from_proto,
    subscription_to_proto, to_json,
};
use crate::driver::{DriverContext, Secret};
use crate::entity::{resource, subscription};
use crate::jobs::{self, kind};
use crate::marketplace::state;
use chrono::Duration as ChronoDuration;
use marketbridge_core::ids::{AccountId, ResourceId, SubscriptionId};
use marketbridge_core::metadata::{json_to_metadata, metadata_to_json};
use marketbridge_core::{Error, Result, Validator};
use marketbridge_proto::common::v1::{AccountSelector, RequestContext};
use marketbridge_proto::provisioning::v1 as pb;
use marketbridge_storage::db_error;
use marketbridge_storage::idempotent_txn;
use marketbridge_storage::outbox::NewJob;
use marketbridge_storage::paging::Page;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
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

impl ProvisioningDomain {
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
        super::protocol::validate(&mut validator, request.protocol_settings.as_ref());
        validator.finish()?;
        let (protocol_settings, _) =
            super::protocol::merge("{}", request.protocol_settings.as_ref())?;
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let product = self
            .catalog
            .require_product("productId", &request.product_id)?;
        let metadata = product.validate_metadata(&metadata_to_json(request.metadata.as_ref()))?;
        let plan = product.plan_for_metadata(&request.plan_id, &metadata)?;
        let driver = self.driver(&product.driver)?.clone();

        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.CreateResource",
            &key,
            &request,
            self.now()
        );
        let account = self
            .account(AccountSelector::by_id(account_id.as_str()))
            .await?;
        if !account.active {
            return Err(Error::conflict(
                "the account is uninstalled; it cannot provision resources",
            )
            .with_user_message("This installation has been removed"));
        }
        let now = self.now();
        let existing_subscription = if request.subscription_id.is_empty() {
            None
        } else {
            let id = SubscriptionId::parse("subscriptionId", &request.subscription_id)?;
            let found = self
                .load_subscription(&*txn, id.as_str())
                .await?
                .filter(|s| s.account_id == account.id)
                .ok_or_else(|| Error::not_found("subscription not found"))?;
            if !Self::is_usable(&found) {
                return Err(Error::conflict("the subscription is not active"));
            }
            Some(found)
        };
        if plan.max_resources > 0 {
            let live = resource::Entity::find()
                .filter(resource::Column::AccountId.eq(account.id.clone()))
                .filter(resource::Column::PlanId.eq(plan.id.clone()))
                .filter(resource::Column::Status.ne(status::UNINSTALLED))
                .count(&*txn)
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

        let resource_id = ResourceId::generate().into_string();
        let subscription = match existing_subscription {
            Some(found) => found,
            None => {
                let row = subscription::Model {
                    id: SubscriptionId::generate().into_string(),
                    account_id: account.id.clone(),
                    marketplace: account.marketplace.as_str().to_owned(),
                    external_id: resource_id.clone(),
                    product_id: product.id.clone(),
                    plan_id: plan.id.clone(),
                    pending_plan_id: String::new(),
                    state: state::ACTIVE.to_owned(),
                    scope: scope::RESOURCE.to_owned(),
                    marketplace_state: String::new(),
                    marketplace_update_time: None,
                    usage_reporting_id: String::new(),
                    order_id: String::new(),
                    awaiting_account_approval: false,
                    reason: String::new(),
                    attributes: "{}".to_owned(),
                    version: 1,
                    created_at: now,
                    updated_at: now,
                    started_at: Some(now),
                    ended_at: None,
                };
                subscription::Entity::insert(row.clone().into_active_model())
                    .exec_without_returning(&*txn)
                    .await
                    .map_err(db_error)?;
                self.enqueue_billing_change(&*txn, &row).await?;
                row
            }
        };
        let (row, prepared) = self
            .insert_resource(
                &*txn,
                NewResource {
                    resource_id: &resource_id,
                    account_id: &account.id,
                    subscription_id: &subscription.id,
                    product,
                    plan,
                    name: request.name.trim(),
                    metadata: &metadata,
                    marketplace: account.marketplace.as_str(),
                    external_id: &request.external_id,
                    protocol_settings: &protocol_settings,
                },
                driver.as_ref(),
            )
            .await?;
        tracing::info!(resource.id = %row.id, product = %row.product_id, plan = %row.plan_id, status = %row.status, "resource created");
        let response = pb::CreateResourceResponse {
            resource: Some(resource_to_proto(&row)),
            secrets: prepared.secrets.iter().map(Secret::to_proto).collect(),
        };
        let response = txn.finish(response).await?;
        self.outbox.wake();
        Ok(response)
    }

    pub(crate) async fn require_resource(
        &self,
        conn: &impl ConnectionTrait,
        resource_id: &str,
        account_id: &str,
    ) -> Result<resource::Model> {
        let id = ResourceId::parse("resourceId", resource_id)?;
        self.load_resource(conn, id.as_str())
            .await?
            .filter(|row| account_id.is_empty() || row.account_id == account_id)
            .ok_or_else(|| Error::not_found("resource not found"))
    }

    /// One resource, without secrets.
    pub async fn get_resource(&self, request: pb::GetResourceRequest) -> Result<pb::Resource> {
        let row = self
            .require_resource(&self.db, &request.resource_id, &request.account_id)
            .await?;
        Ok(resource_to_proto(&row))
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
            query = query.filter(resource::Column::Status.ne(status::UNINSTALLED));
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
            resources: rows.iter().map(resource_to_proto).collect(),
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
        super::protocol::validate(&mut validator, request.protocol_settings.as_ref());
        validator.finish()?;
        let new_status = match pb::ResourceStatus::try_from(request.status).unwrap_or_default() {
            pb::ResourceStatus::Unspecified => None,
            pb::ResourceStatus::Ready => Some(status::READY),
            pb::ResourceStatus::Suspended => Some(status::SUSPENDED),
            pb::ResourceStatus::Onboarding => Some(status::ONBOARDING),
            pb::ResourceStatus::Error => Some(status::ERROR),
            other => {
                return Err(Error::invalid_field(
                    "status",
                    format!("cannot be set to {}", other.as_str_name()),
                ));
            }
        };
        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.UpdateResource",
            &key,
            &request,
            self.now()
        );
        let mut row = self
            .require_resource(&*txn, &request.resource_id, &request.account_id)
            .await?;
        if row.status == status::UNINSTALLED {
            return Err(Error::conflict("the resource is deleted"));
        }
        let product = self.product(&row.product_id)?;
        let now = self.now();
        let mut metadata: Json = serde_json::from_str(&row.metadata).unwrap_or_default();
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
        if let Some(new_status) = new_status
            && new_status != row.status
        {
            row.status = new_status.to_owned();
            row.status_message = request.status_message.clone().unwrap_or_default();
        } else if let Some(message) = &request.status_message {
            row.status_message = message.clone();
        }
        let (protocol_settings, app_urls_changed) =
            super::protocol::merge(&row.protocol_settings, request.protocol_settings.as_ref())?;
        row.protocol_settings = protocol_settings;
        row.updated_at = now;
        if app_urls_changed && !plan_changed && row.status != status::PENDING {
            // The driver (a plug-in) reconciles its redirect allow-list.
            self.enqueue(
                &*txn,
                NewJob::new(kind::APPLY_PLAN, &jobs::ResourceJob::plain(&row.id))?,
            )
            .await?;
        }
        if plan_changed {
            self.apply_plan_to_subscription(&*txn, &row).await?;
            self.enqueue(
                &*txn,
                NewJob::new(kind::APPLY_PLAN, &jobs::ResourceJob::plain(&row.id))?,
            )
            .await?;
        }
        row.clone()
            .into_active_model()
            .reset_all()
            .update(&*txn)
            .await
            .map_err(db_error)?;
        let response = txn.finish(resource_to_proto(&row)).await?;
        self.outbox.wake();
        Ok(response)
    }

    /// Moves a resource-scoped subscription to the resource's plan.
    async fn apply_plan_to_subscription(
        &self,
        conn: &impl ConnectionTrait,
        row: &resource::Model,
    ) -> Result<()> {
        let Some(mut subscription) = self.load_subscription(conn, &row.subscription_id).await?
        else {
            return Ok(());
        };
        if subscription.scope != scope::RESOURCE || subscription.plan_id == row.plan_id {
            return Ok(());
        }
        subscription.plan_id = row.plan_id.clone();
        subscription.version += 1;
        subscription.updated_at = self.now();
        subscription
            .clone()
            .into_active_model()
            .reset_all()
            .update(conn)
            .await
            .map_err(db_error)?;
        self.enqueue_billing_change(conn, &subscription).await
    }

    /// Deletes a resource; a second delete answers the same.
    pub async fn delete_resource(
        &self,
        request: pb::DeleteResourceRequest,
    ) -> Result<pb::Resource> {
        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.DeleteResource",
            &key,
            &request,
            self.now()
        );
        let row = self
            .require_resource(&*txn, &request.resource_id, &request.account_id)
            .await?;
        let row = self.delete_in(&*txn, row).await?;
        let response = txn.finish(resource_to_proto(&row)).await?;
        self.outbox.wake();
        Ok(response)
    }

    /// Marks a resource deleted, ends its resource-scoped subscription and
    /// schedules its teardown, in `conn`.
    pub(crate) async fn delete_in(
        &self,
        conn: &impl ConnectionTrait,
        mut row: resource::Model,
    ) -> Result<resource::Model> {
        if row.status == status::UNINSTALLED {
            return Ok(row);
        }
        let now = self.now();
        row.status = status::UNINSTALLED.to_owned();
        row.deleted_at = Some(now);
        row.updated_at = now;
        row.clone()
            .into_active_model()
            .reset_all()
            .update(conn)
            .await
            .map_err(db_error)?;
        if let Some(mut subscription) = self.load_subscription(conn, &row.subscription_id).await?
            && subscription.scope == scope::RESOURCE
            && !state::is_final(&subscription.state)
        {
            subscription.state = state::CANCELLED.to_owned();
            subscription.reason = "resource deleted".to_owned();
            subscription.ended_at = Some(now);
            subscription.updated_at = now;
            subscription.version += 1;
            subscription
                .clone()
                .into_active_model()
                .reset_all()
                .update(conn)
                .await
                .map_err(db_error)?;
            self.enqueue_billing_change(conn, &subscription).await?;
        }
        if row.ownership == crate::convert::ownership::LINKED {
            // Imported: the provider keeps it. It is detached (it can be
            // imported again); its driver is not asked to tear it down.
            self.detach_in(conn, &row).await?;
            tracing::info!(resource.id = %row.id, "linked resource detached");
            return Ok(row);
        }
        // A driver with a grace period keeps the resource, suspended, until
        // the teardown is due.
        let grace_seconds = match self.driver_for(&row) {
            Ok(driver) => driver.driver.deletion_grace_seconds(&driver.context()),
            Err(_) => 0,
        };
        if grace_seconds > 0 {
            self.enqueue(
                conn,
                NewJob::new(kind::SUSPEND, &jobs::ResourceJob::plain(&row.id))?,
            )
            .await?;
        }
        self.enqueue(
            conn,
            NewJob::new(kind::DEPROVISION, &jobs::ResourceJob::plain(&row.id))?
                .dedupe_key(format!("deprovision:{}", row.id))
                .run_at(now + ChronoDuration::seconds(grace_seconds.min(i64::MAX as u64) as i64)),
        )
        .await?;
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
        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.RotateSecrets",
            &key,
            &request,
            self.now()
        );
        let mut row = self
            .require_resource(&*txn, &request.resource_id, &request.account_id)
            .await?;
        if row.ownership == crate::convert::ownership::LINKED {
            return Err(Error::unprocessable(
                "the secrets of an imported resource are rotated by the provider",
            )
            .with_user_message("Rotate this resource's credentials with the provider"));
        }
        if matches!(row.status.as_str(), status::UNINSTALLED | status::PENDING) {
            return Err(Error::conflict(format!(
                "secrets cannot be rotated while the resource is {}",
                row.status
            )));
        }
        let current = self.open(&row.secrets)?;
        let driver = self.driver_for(&row)?;
        let rotation = driver.driver.rotate(&driver.context(), &current).await?;
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
            row.clone()
                .into_active_model()
                .reset_all()
                .update(&*txn)
                .await
                .map_err(db_error)?;
            self.enqueue(
                &*txn,
                NewJob::new(kind::REVOKE_OLD_SECRETS, &jobs::ResourceJob::plain(&row.id))?
                    .run_at(now + grace),
            )
            .await?;
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
                resource: Some(resource_to_proto(&row)),
            }
        } else {
            let pending = jobs::PendingRotation {
                sealed_secrets: self.seal(&rotation.secrets)?,
                partial: rotation.partial,
                state: rotation.state.clone(),
                old_valid_for_seconds: request.old_secrets_valid_for_seconds,
            };
            let job = jobs::ResourceJob {
                resource_id: row.id.clone(),
                push_secrets: true,
                sealed: Some(pending),
            };
            self.enqueue(&*txn, NewJob::new(kind::COMPLETE_ROTATION, &job)?)
                .await?;
            pb::RotateSecretsResponse {
                sync: false,
                secrets: Vec::new(),
                partial: rotation.partial,
                resource: Some(resource_to_proto(&row)),
            }
        };
        tracing::info!(resource.id = %row.id, sync = response.sync, "secrets rotation started");
        let response = txn.finish(response).await?;
        self.outbox.wake();
        Ok(response)
    }

    /// Current secrets (internal).
    pub async fn resource_secrets(
        &self,
        request: pb::GetResourceSecretsRequest,
    ) -> Result<pb::GetResourceSecretsResponse> {
        let row = self
            .require_resource(&self.db, &request.resource_id, "")
            .await?;
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
        resource_id: &str,
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
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            scope_name,
            &key,
            request,
            self.now()
        );
        let mut row = self.require_resource(&*txn, resource_id, "").await?;
        let wanted = if suspended {
            status::SUSPENDED
        } else {
            status::READY
        };
        let changeable = if suspended {
            matches!(
                row.status.as_str(),
                status::READY | status::ONBOARDING | status::ERROR
            )
        } else {
            row.status == status::SUSPENDED
        };
        if row.status != wanted {
            if !changeable {
                return Err(Error::conflict(format!(
                    "a {} resource cannot be {}",
                    row.status,
                    if suspended { "suspended" } else { "resumed" }
                )));
            }
            row.status = wanted.to_owned();
            row.status_message = if suspended {
                reason.to_owned()
            } else {
                String::new()
            };
            row.updated_at = self.now();
            row.clone()
                .into_active_model()
                .reset_all()
                .update(&*txn)
                .await
                .map_err(db_error)?;
            let kind = if suspended {
                kind::SUSPEND
            } else {
                kind::RESUME
            };
            self.enqueue(
                &*txn,
                NewJob::new(kind, &jobs::ResourceJob::plain(&row.id))?,
            )
            .await?;
            self.enqueue_notify(&*txn, &row, false).await?;
        }
        let response = txn.finish(resource_to_proto(&row)).await?;
        self.outbox.wake();
        Ok(response)
    }

    /// Deletes every live resource of an account.
    pub async fn delete_account_resources(
        &self,
        request: pb::DeleteAccountResourcesRequest,
    ) -> Result<pb::DeleteAccountResourcesResponse> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.DeleteAccountResources",
            &key,
            &request,
            self.now()
        );
        let rows = resource::Entity::find()
            .filter(resource::Column::AccountId.eq(account_id.into_string()))
            .filter(resource::Column::Status.ne(status::UNINSTALLED))
            .order_by_asc(resource::Column::Id)
            .all(&*txn)
            .await
            .map_err(db_error)?;
        let mut deleted = Vec::new();
        for row in rows {
            deleted.push(self.delete_in(&*txn, row).await?.id);
        }
        let response = txn
            .finish(pb::DeleteAccountResourcesResponse {
                deleted_resource_ids: deleted,
            })
            .await?;
        self.outbox.wake();
        Ok(response)
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
        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.RecordProjectConnection",
            &key,
            &request,
            self.now()
        );
        let mut row = self
            .require_resource(&*txn, &request.resource_id, "")
            .await?;
        let mut connections: Vec<StoredConnection> = from_json(&row.connections);
        connections.retain(|c| c.project_id != request.project_id);
        if request.connected {
            connections.push(StoredConnection {
                project_id: request.project_id.clone(),
                targets: request.targets.clone(),
                connected_at: self.now(),
            });
        }
        row.connections = to_json(&connections);
        row.updated_at = self.now();
        row.clone()
            .into_active_model()
            .reset_all()
            .update(&*txn)
            .await
            .map_err(db_error)?;
        txn.finish(resource_to_proto(&row)).await
    }

    /// The subscription of a resource, for callers that need both.
    pub async fn subscription_of_resource(&self, resource_id: &str) -> Result<pb::Subscription> {
        let row = self.require_resource(&self.db, resource_id, "").await?;
        let subscription = self
            .load_subscription(&self.db, &row.subscription_id)
            .await?
            .ok_or_else(|| Error::internal("resource without subscription"))?;
        let ids = self.resource_ids_of(&self.db, &subscription.id).await?;
        Ok(subscription_to_proto(&subscription, ids))
    }

    /// Creates the resource of an account-scoped subscription that just
    /// became usable (a Google entitlement turning active), in `conn`.
    pub(crate) async fn provision_for_subscription(
        &self,
        conn: &impl ConnectionTrait,
        subscription: &subscription::Model,
    ) -> Result<Option<resource::Model>> {
        if !self
            .live_resources_of_subscription(conn, &subscription.id)
            .await?
            .is_empty()
        {
            return Ok(None);
        }
        let Some(product) = self.catalog.product(&subscription.product_id) else {
            tracing::warn!(subscription.id = %subscription.id, product = %subscription.product_id, "active subscription to a product not in the catalog");
            return Ok(None);
        };
        let plan = self.plan(product, &subscription.plan_id)?;
        let driver = self.driver(&product.driver)?.clone();
        let metadata = product.validate_metadata(&Json::Object(Default::default()))?;
        let resource_id = ResourceId::generate().into_string();
        let (row, _) = self
            .insert_resource(
                conn,
                NewResource {
                    resource_id: &resource_id,
                    account_id: &subscription.account_id,
                    subscription_id: &subscription.id,
                    product,
                    plan,
                    name: &product.name,
                    metadata: &metadata,
                    marketplace: &subscription.marketplace,
                    external_id: &subscription.external_id,
                    protocol_settings: "{}",
                },
                driver.as_ref(),
            )
            .await?;
        tracing::info!(resource.id = %row.id, subscription.id = %subscription.id, "resource created for subscription");
        Ok(Some(row))
    }

    /// Decides a new resource's secrets with its driver and stores it, in
    /// `conn`: ready at once when the driver says so, otherwise pending with
    /// its provisioning scheduled.
    async fn insert_resource(
        &self,
        conn: &impl ConnectionTrait,
        new: NewResource<'_>,
        driver: &dyn crate::driver::Driver,
    ) -> Result<(resource::Model, crate::driver::Prepared)> {
        let empty_state = Json::Null;
        let app_urls = super::protocol::app_urls(new.protocol_settings);
        let context = DriverContext {
            resource_id: new.resource_id,
            account_id: new.account_id,
            name: new.name,
            product: new.product,
            plan: new.plan,
            metadata: new.metadata,
            state: &empty_state,
            app_urls: &app_urls,
        };
        let prepared = driver.prepare(&context).await?;
        let now = self.now();
        let row = resource::Model {
            id: new.resource_id.to_owned(),
            account_id: new.account_id.to_owned(),
            subscription_id: new.subscription_id.to_owned(),
            product_id: new.product.id.clone(),
            plan_id: new.plan.id.clone(),
            name: new.name.to_owned(),
            metadata: new.metadata.to_string(),
            status: if prepared.ready {
                status::READY
            } else {
                status::PENDING
            }
            .to_owned(),
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
            ownership: crate::convert::ownership::OWNED.to_owned(),
            protocol_settings: new.protocol_settings.to_owned(),
            production_only: false,
        };
        resource::Entity::insert(row.clone().into_active_model())
            .exec_without_returning(conn)
            .await
            .map_err(db_error)?;
        if !prepared.ready {
            let job = NewJob::new(kind::PROVISION, &jobs::ResourceJob::plain(&row.id))?
                .dedupe_key(format!("provision:{}", row.id))
                .run_at(now + ChronoDuration::seconds(prepared.delay_seconds as i64));
            self.enqueue(conn, job).await?;
        }
        Ok((row, prepared))
    }

    /// Converts proto metadata for callers.
    pub fn metadata_json(metadata: &Json) -> Result<marketbridge_proto::common::v1::Metadata> {
        json_to_metadata("metadata", metadata)
    }

    /// Parses a requested status.
    pub fn parse_status(value: i32) -> Option<&'static str> {
        pb::ResourceStatus::try_from(value)
            .ok()
            .and_then(status_from_proto)
    }
}

/// What a new resource is made of.
struct NewResource<'a> {
    resource_id: &'a str,
    account_id: &'a str,
    subscription_id: &'a str,
    product: &'a marketbridge_catalog::Product,
    plan: &'a marketbridge_catalog::Plan,
    name: &'a str,
    metadata: &'a Json,
    marketplace: &'a str,
    external_id: &'a str,
    protocol_settings: &'a str,
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
