//! Outbox jobs of the provisioning service: driver work in the background,
//! marketplace calls about subscriptions and resources, and hand-offs to
//! billing. The jobs themselves ([`ProvisioningJob`]) live in
//! [`crate::model`]; this module runs them, through the domain.

use crate::domain::{ProvisioningDomain, proto_marketplace};
use crate::driver::Provisioned;
use crate::entity::resource;
use crate::lifecycle::resource::{DriverStep, driver_step_applies};
use crate::marketplace::ResourceChange;
use crate::model::{
    BillingChangeJob, PlanChangeJob, PlanId, ProvisioningJob, ResourceJob, SubscriptionJob,
};
use async_trait::async_trait;
use marketbridge_core::ids::ResourceId;
use marketbridge_core::time::to_timestamp;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::{MarketplaceRef, RequestContext};
use marketbridge_rpc::BillingApi;
use marketbridge_storage::outbox::{Job, JobError, JobHandler};
use std::sync::Arc;

/// Runs the provisioning service's jobs.
pub struct ProvisioningJobs {
    domain: ProvisioningDomain,
    billing: Option<Arc<dyn BillingApi>>,
}

impl ProvisioningJobs {
    /// Jobs over the domain.
    pub fn new(domain: ProvisioningDomain, billing: Option<Arc<dyn BillingApi>>) -> Self {
        Self { domain, billing }
    }

    async fn resource(
        &self,
        resource_id: &ResourceId,
    ) -> Result<Option<resource::Model>, JobError> {
        Ok(self
            .domain
            .load_resource(self.domain.db(), resource_id)
            .await?)
    }

    async fn provision(&self, job: &ResourceJob) -> Result<(), JobError> {
        let Some(row) = self.resource(&job.resource_id).await? else {
            return Ok(());
        };
        if row.status != crate::model::ResourceStatus::Pending {
            return Ok(());
        }
        let secrets = self.domain.open(&row.secrets)?;
        let driver = self.domain.driver_for(&row)?;
        let outcome = match driver.driver.provision(&driver.context(), &secrets).await {
            Ok(provisioned) => Ok(provisioned == Provisioned::Onboarding),
            Err(error) if matches!(JobError::from(error.clone()), JobError::Retry(_)) => {
                return Err(JobError::from(error));
            }
            Err(error) => {
                tracing::warn!(resource.id = %row.id, error = %error, "provisioning failed");
                Err(error.user_message().unwrap_or(error.message()).to_owned())
            }
        };
        self.domain
            .record_provisioning(&job.resource_id, outcome)
            .await?;
        Ok(())
    }

    async fn driver_step(&self, job: &ResourceJob, step: DriverStep) -> Result<(), JobError> {
        let Some(row) = self.resource(&job.resource_id).await? else {
            return Ok(());
        };
        if !driver_step_applies(step, ProvisioningDomain::machine_resource(&row)) {
            return Ok(());
        }
        let driver = self.domain.driver_for(&row)?;
        let context = driver.context();
        match step {
            DriverStep::ApplyPlan => driver.driver.apply_plan(&context).await?,
            DriverStep::Suspend => driver.driver.suspend(&context).await?,
            DriverStep::Resume => driver.driver.resume(&context).await?,
            DriverStep::Deprovision => driver.driver.deprovision(&context).await?,
            DriverStep::Detach => {
                let secrets = self.domain.open(&row.secrets)?;
                driver.driver.revoke(&context, &secrets).await?;
                tracing::info!(resource.id = %row.id, "secrets issued for the marketplace revoked; linked resource detached");
            }
        }
        Ok(())
    }

    async fn complete_rotation(&self, job: &ResourceJob) -> Result<(), JobError> {
        let Some(pending) = &job.sealed else {
            return Ok(());
        };
        let Some(row) = self.resource(&job.resource_id).await? else {
            return Ok(());
        };
        if row.status == crate::model::ResourceStatus::Uninstalled {
            return Ok(());
        }
        let new_secrets = self.domain.open(&pending.sealed_secrets)?;
        let driver = self.domain.driver_for(&row)?;
        driver
            .driver
            .complete_rotation(&driver.context(), &new_secrets)
            .await?;
        self.domain
            .record_rotation(&job.resource_id, pending, &new_secrets)
            .await?;
        Ok(())
    }

    async fn revoke_old(&self, job: &ResourceJob) -> Result<(), JobError> {
        let Some(row) = self.resource(&job.resource_id).await? else {
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
        self.domain
            .forget_previous_secrets(&job.resource_id, expires)
            .await?;
        tracing::info!(resource.id = %row.id, "old secrets revoked");
        Ok(())
    }

    async fn notify(&self, job: &ResourceJob) -> Result<(), JobError> {
        let Some(row) = self.resource(&job.resource_id).await? else {
            return Ok(());
        };
        let marketplace = crate::convert::marketplace_of(&row.marketplace)?;
        let Some(adapter) = self.domain.marketplaces().adapter(marketplace).cloned() else {
            return Ok(());
        };
        let (_, account_external_id) = self.domain.account_external_id(&row.owner_id()?).await?;
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
        if row.state != crate::model::SubscriptionState::Requested {
            return Ok(());
        }
        let marketplace = crate::convert::marketplace_of(&row.marketplace)?;
        match self.domain.marketplaces().adapter(marketplace).cloned() {
            Some(adapter) => {
                adapter.approve_subscription(&row).await?;
                self.domain
                    .approval_done(&job.subscription_id, adapter.activates_on_approval())
                    .await?;
            }
            None => {
                self.domain
                    .approval_done(&job.subscription_id, true)
                    .await?
            }
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
        if row.state != crate::model::SubscriptionState::Requested {
            return Ok(());
        }
        let marketplace = crate::convert::marketplace_of(&row.marketplace)?;
        if let Some(adapter) = self.domain.marketplaces().adapter(marketplace).cloned() {
            adapter.reject_subscription(&row, &job.reason).await?;
        }
        self.domain
            .rejection_done(&job.subscription_id, &job.reason)
            .await?;
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
        if PlanId::new(&row.pending_plan_id) != job.pending_plan_id {
            return Ok(());
        }
        let marketplace = crate::convert::marketplace_of(&row.marketplace)?;
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

    async fn billing_change(
        &self,
        outbox_job: &Job,
        job: &BillingChangeJob,
    ) -> Result<(), JobError> {
        let read;
        let terms = match &job.as_of {
            Some(known) => known,
            None => {
                let Some(now) = self.domain.billing_terms_now(&job.subscription_id).await? else {
                    return Ok(());
                };
                read = now;
                &read
            }
        };
        let Some(billing) = &self.billing else {
            return Err(JobError::Retry(
                "the billing service is not configured".into(),
            ));
        };
        let (account_marketplace, account_external_id) =
            self.domain.account_external_id(&terms.account_id).await?;
        let marketplace = crate::convert::marketplace_of(&terms.marketplace)?;
        let change = billing_pb::SubscriptionChange {
            subscription_id: job.subscription_id.to_string(),
            account_id: terms.account_id.to_string(),
            account_ref: Some(MarketplaceRef::new(
                proto_marketplace(account_marketplace),
                account_external_id.into_string(),
            )),
            subscription_ref: Some(MarketplaceRef::new(
                proto_marketplace(marketplace),
                terms.external_id.clone(),
            )),
            product_id: terms.product_id.clone(),
            plan_id: terms.plan_id.clone(),
            billable: terms.billable,
            resource_ids: terms.resource_ids.clone(),
            usage_reporting_id: terms.usage_reporting_id.clone(),
            effective_at: Some(to_timestamp(terms.effective_at)),
            version: terms.version.max(0) as u64,
            ended: terms.ended,
        };
        billing
            .record_subscription_change(billing_pb::RecordSubscriptionChangeRequest {
                context: Some(RequestContext {
                    idempotency_key: outbox_job.id.clone(),
                    actor: None,
                }),
                change: Some(change),
            })
            .await?;
        Ok(())
    }
}

#[async_trait]
impl JobHandler for ProvisioningJobs {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        match job.decode::<ProvisioningJob>()? {
            ProvisioningJob::Provision(payload) => self.provision(&payload).await,
            ProvisioningJob::ApplyPlan(payload) => {
                self.driver_step(&payload, DriverStep::ApplyPlan).await
            }
            ProvisioningJob::Suspend(payload) => {
                self.driver_step(&payload, DriverStep::Suspend).await
            }
            ProvisioningJob::Resume(payload) => {
                self.driver_step(&payload, DriverStep::Resume).await
            }
            ProvisioningJob::Deprovision(payload) => {
                self.driver_step(&payload, DriverStep::Deprovision).await
            }
            ProvisioningJob::Detach(payload) => {
                self.driver_step(&payload, DriverStep::Detach).await
            }
            ProvisioningJob::CompleteRotation(payload) => self.complete_rotation(&payload).await,
            ProvisioningJob::RevokeOldSecrets(payload) => self.revoke_old(&payload).await,
            ProvisioningJob::Notify(payload) => self.notify(&payload).await,
            ProvisioningJob::Approve(payload) => self.approve(&payload).await,
            ProvisioningJob::Reject(payload) => self.reject(&payload).await,
            ProvisioningJob::PlanChange(payload) => self.plan_change(&payload).await,
            ProvisioningJob::BillingChange(payload) => self.billing_change(job, &payload).await,
        }
    }
}
