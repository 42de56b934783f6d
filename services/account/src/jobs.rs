//! Outbox jobs of the account service: marketplace calls about accounts, the
//! hand-off to provisioning after signup, and processing recorded events.
//! The jobs themselves ([`AccountJob`]) are vocabulary ([`crate::model`]);
//! here they run, by calling the domain and the other services.

use crate::convert::marketplace_of;
use crate::domain::AccountDomain;
use crate::domain::credentials::RotationStep;
use crate::marketplace::{EventOutcome, EventServices, Marketplaces};
use crate::model::{AccountJob, AccountTask, EventStatus, EventTask, RotationTask, SignupState};
use async_trait::async_trait;
use marketbridge_core::ErrorCode;
use marketbridge_proto::common::v1::RequestContext;
use marketbridge_proto::provisioning::v1::{self as provisioning_pb, NotifyAccountApprovedRequest};
use marketbridge_storage::outbox::{Job, JobError, JobHandler};

/// Runs the account service's jobs.
pub struct AccountJobs {
    services: EventServices,
    marketplaces: Marketplaces,
}

impl AccountJobs {
    /// Jobs over the domain, the other services and the marketplaces'
    /// event processors.
    pub fn new(services: EventServices, marketplaces: Marketplaces) -> Self {
        Self {
            services,
            marketplaces,
        }
    }

    fn domain(&self) -> &AccountDomain {
        &self.services.accounts
    }

    async fn approve_signup(&self, job: &AccountTask) -> Result<(), JobError> {
        let row = self.domain().by_id(&job.account_id).await?;
        if row.signup_state != SignupState::Approving {
            return Ok(());
        }
        if let Some(adapter) = self.marketplaces.adapter(marketplace_of(&row.marketplace)?) {
            adapter.approve_signup(&row).await?;
        }
        self.domain()
            .signup_approved_at_marketplace(&job.account_id)
            .await?;
        tracing::info!(account.id = %row.id, "signup approved at the marketplace");
        Ok(())
    }

    async fn reject_signup(&self, job: &AccountTask) -> Result<(), JobError> {
        let row = self.domain().by_id(&job.account_id).await?;
        if row.signup_state != SignupState::Rejected {
            return Ok(());
        }
        if let Some(adapter) = self.marketplaces.adapter(marketplace_of(&row.marketplace)?) {
            adapter.reject_signup(&row, &job.reason).await?;
        }
        Ok(())
    }

    async fn reset(&self, job: &AccountTask) -> Result<(), JobError> {
        let row = self.domain().by_id(&job.account_id).await?;
        if let Some(adapter) = self.marketplaces.adapter(marketplace_of(&row.marketplace)?) {
            adapter.reset(&row).await?;
        }
        Ok(())
    }

    async fn notify_approved(&self, job_key: &str, job: &AccountTask) -> Result<(), JobError> {
        let Some(provisioning) = &self.services.provisioning else {
            return Err(JobError::Retry(
                "the provisioning service is not configured".into(),
            ));
        };
        provisioning
            .notify_account_approved(NotifyAccountApprovedRequest {
                context: Some(RequestContext {
                    idempotency_key: job_key.to_owned(),
                    actor: None,
                }),
                account_id: job.account_id.as_str().to_owned(),
            })
            .await?;
        Ok(())
    }

    async fn end_subscriptions(&self, job: &AccountTask) -> Result<(), JobError> {
        let Some(provisioning) = &self.services.provisioning else {
            return Err(JobError::Retry(
                "the provisioning service is not configured".into(),
            ));
        };
        let subscriptions = provisioning
            .list_subscriptions(provisioning_pb::ListSubscriptionsRequest {
                account_id: job.account_id.as_str().to_owned(),
                ..Default::default()
            })
            .await?
            .subscriptions;
        let reason = if job.reason.is_empty() {
            "account deleted at the marketplace"
        } else {
            job.reason.as_str()
        };
        for subscription in subscriptions {
            let ended = matches!(
                provisioning_pb::SubscriptionState::try_from(subscription.state),
                Ok(provisioning_pb::SubscriptionState::Cancelled
                    | provisioning_pb::SubscriptionState::Rejected)
            );
            if ended {
                continue;
            }
            provisioning
                .cancel_subscription(provisioning_pb::CancelSubscriptionRequest {
                    context: None,
                    subscription_id: subscription.id.clone(),
                    reason: reason.to_owned(),
                })
                .await?;
        }
        let deleted = provisioning
            .delete_account_resources(provisioning_pb::DeleteAccountResourcesRequest {
                context: None,
                account_id: job.account_id.as_str().to_owned(),
            })
            .await?
            .deleted_resource_ids;
        tracing::info!(account.id = %job.account_id, resources = deleted.len(), "subscriptions of a deleted account ended");
        Ok(())
    }

    async fn rotate_credential(&self, job: &RotationTask) -> Result<(), JobError> {
        match self
            .domain()
            .run_rotation(&job.account_id, &job.rotation_id)
            .await?
        {
            RotationStep::Done => Ok(()),
            RotationStep::Again => Err(JobError::Retry(
                "revoking the superseded credential failed; both are kept".into(),
            )),
        }
    }

    async fn process_event(&self, job: &EventTask) -> Result<(), JobError> {
        let domain = self.domain();
        let Some(event) = domain.event(&job.event_id).await? else {
            return Ok(());
        };
        if event.status != EventStatus::Received {
            return Ok(());
        }
        let event_id = &job.event_id;
        let marketplace = marketplace_of(&event.marketplace)?;
        let Some(processor) = self.marketplaces.processor(marketplace).cloned() else {
            tracing::info!(event.id = %event.id, event.type = %event.event_type, "no processor for this marketplace; ignored");
            domain
                .finish_event(event_id, EventStatus::Ignored, "", None)
                .await?;
            return Ok(());
        };
        match processor.process(&event, &self.services).await {
            Ok(EventOutcome::Processed { account_id }) => {
                domain
                    .finish_event(event_id, EventStatus::Processed, "", account_id)
                    .await?;
                Ok(())
            }
            Ok(EventOutcome::Ignored) => {
                tracing::info!(event.id = %event.id, event.type = %event.event_type, "event type not acted on; acknowledged");
                domain
                    .finish_event(event_id, EventStatus::Ignored, "", None)
                    .await?;
                Ok(())
            }
            Err(error) if error.code().is_transient() || error.code() == ErrorCode::Internal => {
                domain
                    .finish_event(event_id, EventStatus::Received, &error.to_string(), None)
                    .await?;
                Err(JobError::Retry(error.to_string()))
            }
            Err(error) => {
                tracing::warn!(event.id = %event.id, error = %error, "event processing failed");
                domain
                    .finish_event(event_id, EventStatus::Failed, &error.to_string(), None)
                    .await?;
                Ok(())
            }
        }
    }
}

#[async_trait]
impl JobHandler for AccountJobs {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        match job.decode::<AccountJob>()? {
            AccountJob::ApproveSignup(task) => self.approve_signup(&task).await,
            AccountJob::RejectSignup(task) => self.reject_signup(&task).await,
            AccountJob::Reset(task) => self.reset(&task).await,
            AccountJob::NotifyApproved(task) => self.notify_approved(&job.id, &task).await,
            AccountJob::ProcessEvent(task) => self.process_event(&task).await,
            AccountJob::EndSubscriptions(task) => self.end_subscriptions(&task).await,
            AccountJob::RotateCredential(task) => self.rotate_credential(&task).await,
        }
    }
}
