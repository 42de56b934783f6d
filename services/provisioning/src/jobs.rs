//! Outbox jobs of the provisioning service: driver work in the background,
//! marketplace calls about subscriptions and resources, and hand-offs to
//! billing.

use crate::convert::status;
use crate::domain::ProvisioningDomain;
use crate::domain::proto_marketplace;
use crate::driver::Provisioned;
use crate::entity::resource;
use crate::marketplace::{ResourceChange, state};
use async_trait::async_trait;
use marketbridge_core::Error;
use marketbridge_core::time::to_timestamp;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::{MarketplaceRef, RequestContext};
use marketbridge_rpc::BillingClient;
use marketbridge_storage::db_error;
use marketbridge_storage::outbox::{Job, JobError, JobHandler, NewJob};
use sea_orm::{ActiveModelTrait, IntoActiveModel};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Job kinds.
pub mod kind {
    /// Provision a pending resource with its driver.
    pub const PROVISION: &str = "provisioning.provision";
    /// Apply a resource's plan with its driver.
    pub const APPLY_PLAN: &str = "provisioning.apply_plan";
    /// Finish an asynchronous secret rotation.
    pub const COMPLETE_ROTATION: &str = "provisioning.complete_rotation";
    /// Revoke secrets whose grace period ended.
    pub const REVOKE_OLD_SECRETS: &str = "provisioning.revoke_old_secrets";
    /// Suspend with the driver.
    pub const SUSPEND: &str = "provisioning.suspend";
    /// Resume with the driver.
    pub const RESUME: &str = "provisioning.resume";
    /// Tear down with the driver.
    pub const DEPROVISION: &str = "provisioning.deprovision";
    /// Tell the marketplace a resource changed.
    pub const NOTIFY: &str = "provisioning.notify_marketplace";
    /// Approve a subscription at the marketplace.
    pub const APPROVE: &str = "provisioning.approve_subscription";
    /// Reject a subscription at the marketplace.
    pub const REJECT: &str = "provisioning.reject_subscription";
    /// Approve or reject a plan change at the marketplace.
    pub const PLAN_CHANGE: &str = "provisioning.plan_change_decision";
    /// Revoke the secrets issued for the marketplace when a linked
    /// (imported) resource is detached.
    pub const DETACH: &str = "provisioning.detach_linked";
    /// Tell billing a subscription changed.
    pub const BILLING_CHANGE: &str = "provisioning.billing_subscription_change";
}

/// A rotation whose new secrets wait for the driver; encrypted.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceJob {
    /// The resource.
    pub resource_id: String,
    /// Push the current secrets to the marketplace too.
    #[serde(default)]
    pub push_secrets: bool,
    /// A pending rotation.
    #[serde(default)]
    pub sealed: Option<PendingRotation>,
}

impl ResourceJob {
    /// A job about a resource.
    pub fn plain(resource_id: &str) -> Self {
        Self {
            resource_id: resource_id.to_owned(),
            push_secrets: false,
            sealed: None,
        }
    }
}

/// Payload of subscription jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionJob {
    /// The subscription.
    pub subscription_id: String,
    /// Reason, for rejections.
    #[serde(default)]
    pub reason: String,
}

impl SubscriptionJob {
    /// A job about a subscription.
    pub fn new(subscription_id: &str) -> Self {
        Self {
            subscription_id: subscription_id.to_owned(),
            reason: String::new(),
        }
    }

    /// A job about a subscription, with a reason.
    pub fn with_reason(subscription_id: &str, reason: &str) -> Self {
        Self {
            subscription_id: subscription_id.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// Payload of plan change decisions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanChangeJob {
    /// The subscription.
    pub subscription_id: String,
    /// The plan decided on.
    pub pending_plan_id: String,
    /// Approve (or reject).
    pub approve: bool,
    /// Reason of a rejection.
    #[serde(default)]
    pub reason: String,
}

/// Runs the provisioning service's jobs.
pub struct ProvisioningJobs {
    domain: ProvisioningDomain,
    billing: Option<BillingClient>,
}

impl ProvisioningJobs {
    /// Jobs over the domain.
    pub fn new(domain: ProvisioningDomain, billing: Option<BillingClient>) -> Self {
        Self { domain, billing }
    }

    async fn resource(&self, id: &str) -> Result<Option<resource::Model>, JobError> {
        Ok(self.domain.load_resource(self.domain.db(), id).await?)
    }

    async fn save(&self, row: &resource::Model) -> Result<(), JobError> {
        row.clone()
            .into_active_model()
            .reset_all()
            .update(self.domain.db())
            .await
            .map_err(|e| JobError::from(db_error(e)))?;
        Ok(())
    }

    async fn provision(&self, job: &ResourceJob) -> Result<(), JobError> {
        let Some(mut row) = self.resource(&job.resource_id).await? else {
            return Ok(());
        };
        if row.status != status::PENDING {
            return Ok(());
        }
        let secrets = self.domain.open(&row.secrets)?;
        let driver = self.domain.driver_for(&row)?;
        let outcome = driver.driver.provision(&driver.context(), &secrets).await;
        match outcome {
            Ok(provisioned) => {
                row.status = match provisioned {
                    Provisioned::Ready => status::READY,
                    Provisioned::Onboarding => status::ONBOARDING,
                }
                .to_owned();
                row.status_message.clear();
            }
            Err(error) if matches!(JobError::from(error.clone()), JobError::Retry(_)) => {
                return Err(JobError::from(error));
            }
            Err(error) => {
                tracing::warn!(resource.id = %row.id, error = %error, "provisioning failed");
                row.status = status::ERROR.to_owned();
                row.status_message = error.user_message().unwrap_or(error.message()).to_owned();
            }
        }
        row.updated_at = self.domain.now();
        let txn = marketbridge_storage::begin_write(self.domain.db()).await?;
        row.clone()
            .into_active_model()
            .reset_all()
            .update(&txn)
            .await
            .map_err(|e| JobError::from(db_error(e)))?;
        self.domain
            .enqueue_notify(&txn, &row, row.status != status::ERROR)
            .await?;
        txn.commit()
            .await
            .map_err(|e| JobError::from(db_error(e)))?;
        self.domain.outbox().wake();
        tracing::info!(resource.id = %row.id, status = %row.status, "resource provisioned");
        Ok(())
    }

    async fn driver_step(&self, job: &ResourceJob, step: &str) -> Result<(), JobError> {
        let Some(row) = self.resource(&job.resource_id).await? else {
            return Ok(());
        };
        if row.ownership == crate::convert::ownership::LINKED {
            // The provider runs imported resources itself.
            return Ok(());
        }
        let driver = self.domain.driver_for(&row)?;
        let context = driver.context();
        match step {
            kind::APPLY_PLAN if row.status != status::UNINSTALLED => {
                driver.driver.apply_plan(&context).await?
            }
            kind::SUSPEND
                if row.status == status::SUSPENDED || row.status == status::UNINSTALLED =>
            {
                driver.driver.suspend(&context).await?
            }
            kind::RESUME
                if row.status != status::SUSPENDED && row.status != status::UNINSTALLED =>
            {
                driver.driver.resume(&context).await?
            }
            kind::DEPROVISION if row.status == status::UNINSTALLED => {
                driver.driver.deprovision(&context).await?
            }
            _ => {}
        }
        Ok(())
    }

    async fn complete_rotation(&self, job: &ResourceJob) -> Result<(), JobError> {
        let Some(pending) = &job.sealed else {
            return Ok(());
        };
        let Some(mut row) = self.resource(&job.resource_id).await? else {
            return Ok(());
        };
        if row.status == status::UNINSTALLED {
            return Ok(());
        }
        let new_secrets = self.domain.open(&pending.sealed_secrets)?;
        let driver = self.domain.driver_for(&row)?;
        driver
            .driver
            .complete_rotation(&driver.context(), &new_secrets)
            .await?;
        let current = self.domain.open(&row.secrets)?;
        let merged = crate::domain::merge_secrets(&current, &new_secrets, pending.partial);
        let now = self.domain.now();
        let expires = now + chrono::Duration::seconds(pending.old_valid_for_seconds as i64);
        row.previous_secrets = Some(row.secrets.clone());
        row.previous_secrets_expire_at = Some(expires);
        row.secrets = self.domain.seal(&merged)?;
        row.secrets_version += 1;
        row.driver_state = pending.state.to_string();
        row.updated_at = now;
        let txn = marketbridge_storage::begin_write(self.domain.db()).await?;
        row.clone()
            .into_active_model()
            .reset_all()
            .update(&txn)
            .await
            .map_err(|e| JobError::from(db_error(e)))?;
        self.domain.enqueue_notify(&txn, &row, true).await?;
        self.domain
            .enqueue(
                &txn,
                NewJob::new(kind::REVOKE_OLD_SECRETS, &ResourceJob::plain(&row.id))?
                    .run_at(expires),
            )
            .await?;
        txn.commit()
            .await
            .map_err(|e| JobError::from(db_error(e)))?;
        self.domain.outbox().wake();
        Ok(())
    }

    async fn detach(&self, job: &ResourceJob) -> Result<(), JobError> {
        let Some(row) = self.resource(&job.resource_id).await? else {
            return Ok(());
        };
        if row.status != status::UNINSTALLED {
            return Ok(());
        }
        let secrets = self.domain.open(&row.secrets)?;
        let driver = self.domain.driver_for(&row)?;
        driver.driver.revoke(&driver.context(), &secrets).await?;
        tracing::info!(resource.id = %row.id, "secrets issued for the marketplace revoked; linked resource detached");
        Ok(())
    }

    async fn revoke_old(&self, job: &ResourceJob) -> Result<(), JobError> {
        let Some(mut row) = self.resource(&job.resource_id).await? else {
            return Ok(());
        };
        let (Some(sealed), Some(expires)) =
            (row.previous_secrets.clone(), row.previous_secrets_expire_at)
        else {
            return Ok(());
        };
        if expires > self.domain.now() {
            // A later rotation moved the deadline; its own job revokes.
            return Ok(());
        }
        let old = self.domain.open(&sealed)?;
        let driver = self.domain.driver_for(&row)?;
        driver.driver.revoke(&driver.context(), &old).await?;
        row.previous_secrets = None;
        row.previous_secrets_expire_at = None;
        self.save(&row).await?;
        tracing::info!(resource.id = %row.id, "old secrets revoked");
        Ok(())
    }

    async fn notify(&self, job: &ResourceJob) -> Result<(), JobError> {
        let Some(row) = self.resource(&job.resource_id).await? else {
            return Ok(());
        };
        let marketplace = self.domain.marketplace_of_row(&row.marketplace)?;
        let Some(adapter) = self.domain.marketplaces().adapter(marketplace).cloned() else {
            return Ok(());
        };
        let (_, account_external_id) = self.domain.account_external_id(&row.account_id).await?;
        let secrets = if job.push_secrets {
            Some(self.domain.open(&row.secrets)?)
        } else {
            None
        };
        adapter
            .resource_changed(&ResourceChange {
                account_external_id,
                resource: row,
                secrets,
            })
            .await?;
        Ok(())
    }

    async fn approve(&self, job: &SubscriptionJob) -> Result<(), JobError> {
        let Some(row) = self
            .domain
            .load_subscription(self.domain.db(), &job.subscription_id)
            .await?
        else {
            return Ok(());
        };
        if row.state != state::REQUESTED {
            return Ok(());
        }
        let marketplace = crate::domain::subscription_marketplace(&row)?;
        match self.domain.marketplaces().adapter(marketplace).cloned() {
            Some(adapter) => {
                adapter.approve_subscription(&row).await?;
                self.domain.approval_done(&row.id, false).await?;
            }
            None => self.domain.approval_done(&row.id, true).await?,
        }
        tracing::info!(subscription.id = %row.id, "subscription approved at the marketplace");
        Ok(())
    }

    async fn reject(&self, job: &SubscriptionJob) -> Result<(), JobError> {
        let Some(row) = self
            .domain
            .load_subscription(self.domain.db(), &job.subscription_id)
            .await?
        else {
            return Ok(());
        };
        if row.state != state::REQUESTED {
            return Ok(());
        }
        let marketplace = crate::domain::subscription_marketplace(&row)?;
        if let Some(adapter) = self.domain.marketplaces().adapter(marketplace).cloned() {
            adapter.reject_subscription(&row, &job.reason).await?;
        }
        self.domain.rejection_done(&row.id, &job.reason).await?;
        Ok(())
    }

    async fn plan_change(&self, job: &PlanChangeJob) -> Result<(), JobError> {
        let Some(row) = self
            .domain
            .load_subscription(self.domain.db(), &job.subscription_id)
            .await?
        else {
            return Ok(());
        };
        if row.pending_plan_id != job.pending_plan_id {
            return Ok(());
        }
        let marketplace = crate::domain::subscription_marketplace(&row)?;
        match self.domain.marketplaces().adapter(marketplace).cloned() {
            Some(adapter) if job.approve => {
                adapter
                    .approve_plan_change(&row, &job.pending_plan_id)
                    .await?
            }
            Some(adapter) => {
                adapter
                    .reject_plan_change(&row, &job.pending_plan_id, &job.reason)
                    .await?
            }
            None => self.domain.plan_change_done_locally(job).await?,
        }
        Ok(())
    }

    async fn billing_change(&self, job_id: &str, job: &SubscriptionJob) -> Result<(), JobError> {
        let Some(row) = self
            .domain
            .load_subscription(self.domain.db(), &job.subscription_id)
            .await?
        else {
            return Ok(());
        };
        let Some(mut billing) = self.billing.clone() else {
            return Err(JobError::Retry(
                "the billing service is not configured".into(),
            ));
        };
        let (account_marketplace, account_external_id) =
            self.domain.account_external_id(&row.account_id).await?;
        let marketplace = crate::domain::subscription_marketplace(&row)?;
        let resource_ids = self
            .domain
            .resource_ids_of(self.domain.db(), &row.id)
            .await?;
        let change = billing_pb::SubscriptionChange {
            subscription_id: row.id.clone(),
            account_id: row.account_id.clone(),
            account_ref: Some(MarketplaceRef::new(
                proto_marketplace(account_marketplace),
                account_external_id,
            )),
            subscription_ref: Some(MarketplaceRef::new(
                proto_marketplace(marketplace),
                row.external_id.clone(),
            )),
            product_id: row.product_id.clone(),
            plan_id: row.plan_id.clone(),
            // Linked (imported) resources are never billed through the
            // marketplace.
            billable: state::is_usable(&row.state) && !crate::domain::is_linked_subscription(&row),
            resource_ids,
            usage_reporting_id: row.usage_reporting_id.clone(),
            effective_at: Some(to_timestamp(row.updated_at)),
            version: row.version.max(0) as u64,
            ended: state::is_final(&row.state),
        };
        billing
            .record_subscription_change(billing_pb::RecordSubscriptionChangeRequest {
                context: Some(RequestContext {
                    idempotency_key: job_id.to_owned(),
                    actor: None,
                }),
                change: Some(change),
            })
            .await
            .map_err(|status| JobError::from(Error::from(status)))?;
        Ok(())
    }
}

#[async_trait]
impl JobHandler for ProvisioningJobs {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        match job.kind.as_str() {
            kind::PROVISION => self.provision(&job.payload()?).await,
            kind::APPLY_PLAN | kind::SUSPEND | kind::RESUME | kind::DEPROVISION => {
                self.driver_step(&job.payload()?, &job.kind).await
            }
            kind::COMPLETE_ROTATION => self.complete_rotation(&job.payload()?).await,
            kind::REVOKE_OLD_SECRETS => self.revoke_old(&job.payload()?).await,
            kind::DETACH => self.detach(&job.payload()?).await,
            kind::NOTIFY => self.notify(&job.payload()?).await,
            kind::APPROVE => self.approve(&job.payload()?).await,
            kind::REJECT => self.reject(&job.payload()?).await,
            kind::PLAN_CHANGE => self.plan_change(&job.payload()?).await,
            kind::BILLING_CHANGE => self.billing_change(&job.id, &job.payload()?).await,
            other => Err(JobError::Permanent(format!("unknown job kind {other}"))),
        }
    }
}
