//! Outbox jobs of the account service: marketplace calls about accounts, the
//! hand-off to provisioning after signup, and processing recorded events.

use crate::convert::{event_status, marketplace_of, signup_state};
use crate::domain::AccountDomain;
use crate::domain::credentials::RotationStep;
use crate::marketplace::{EventOutcome, EventServices};
use async_trait::async_trait;
use marketbridge_core::{Error, ErrorCode};
use marketbridge_proto::common::v1::RequestContext;
use marketbridge_proto::provisioning::v1::{self as provisioning_pb, NotifyAccountApprovedRequest};
use marketbridge_storage::outbox::{Job, JobError, JobHandler};
use serde::{Deserialize, Serialize};

/// Job kinds.
pub mod kind {
    /// Approve the account's signup at its marketplace.
    pub const APPROVE_SIGNUP: &str = "account.approve_signup";
    /// Reject the account's signup at its marketplace.
    pub const REJECT_SIGNUP: &str = "account.reject_signup";
    /// Reset the account at its marketplace.
    pub const RESET: &str = "account.reset";
    /// Tell provisioning the account's signup is approved.
    pub const NOTIFY_APPROVED: &str = "account.notify_provisioning_approved";
    /// Process a recorded marketplace event.
    pub const PROCESS_EVENT: &str = "account.process_event";
    /// End the subscriptions of an account gone at its marketplace and
    /// deprovision its resources.
    pub const END_SUBSCRIPTIONS: &str = "account.end_subscriptions";
    /// Rotate the account's marketplace credential and revoke the old one.
    pub const ROTATE_CREDENTIAL: &str = "account.rotate_credential";
}

/// Payload of credential rotation jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationJob {
    /// Our account id.
    pub account_id: String,
    /// The rotation (the request's idempotency key, or the schedule's
    /// round): the marketplace is asked to rotate once per id.
    pub rotation_id: String,
}

/// Payload of account jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountJob {
    /// Our account id.
    pub account_id: String,
    /// Reason, for rejections.
    #[serde(default)]
    pub reason: String,
}

impl AccountJob {
    /// A job about an account.
    pub fn new(account_id: &str) -> Self {
        Self {
            account_id: account_id.to_owned(),
            reason: String::new(),
        }
    }

    /// A job about an account, with a reason.
    pub fn with_reason(account_id: &str, reason: &str) -> Self {
        Self {
            account_id: account_id.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// Payload of event processing jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventJob {
    /// Our event id.
    pub event_id: String,
}

/// Runs the account service's jobs.
pub struct AccountJobs {
    services: EventServices,
}

impl AccountJobs {
    /// Jobs over the domain and the other services.
    pub fn new(services: EventServices) -> Self {
        Self { services }
    }

    fn domain(&self) -> &AccountDomain {
        &self.services.accounts
    }

    async fn approve_signup(&self, job: &AccountJob) -> Result<(), JobError> {
        let row = self.domain().by_id(&job.account_id).await?;
        if row.signup_state != signup_state::APPROVING {
            return Ok(());
        }
        if let Some(adapter) = self
            .domain()
            .marketplaces()
            .adapter(marketplace_of(&row.marketplace)?)
        {
            adapter.approve_signup(&row).await?;
        }
        self.domain()
            .signup_approved_at_marketplace(&row.id)
            .await?;
        tracing::info!(account.id = %row.id, "signup approved at the marketplace");
        Ok(())
    }

    async fn reject_signup(&self, job: &AccountJob) -> Result<(), JobError> {
        let row = self.domain().by_id(&job.account_id).await?;
        if row.signup_state != signup_state::REJECTED {
            return Ok(());
        }
        if let Some(adapter) = self
            .domain()
            .marketplaces()
            .adapter(marketplace_of(&row.marketplace)?)
        {
            adapter.reject_signup(&row, &job.reason).await?;
        }
        Ok(())
    }

    async fn reset(&self, job: &AccountJob) -> Result<(), JobError> {
        let row = self.domain().by_id(&job.account_id).await?;
        if let Some(adapter) = self
            .domain()
            .marketplaces()
            .adapter(marketplace_of(&row.marketplace)?)
        {
            adapter.reset(&row).await?;
        }
        Ok(())
    }

    async fn notify_approved(&self, job_id: &str, job: &AccountJob) -> Result<(), JobError> {
        let Some(mut provisioning) = self.services.provisioning.clone() else {
            return Err(JobError::Retry(
                "the provisioning service is not configured".into(),
            ));
        };
        provisioning
            .notify_account_approved(NotifyAccountApprovedRequest {
                context: Some(RequestContext {
                    idempotency_key: job_id.to_owned(),
                    actor: None,
                }),
                account_id: job.account_id.clone(),
            })
            .await
            .map_err(|status| JobError::from(Error::from(status)))?;
        Ok(())
    }

    async fn end_subscriptions(&self, job: &AccountJob) -> Result<(), JobError> {
        let Some(mut provisioning) = self.services.provisioning.clone() else {
            return Err(JobError::Retry(
                "the provisioning service is not configured".into(),
            ));
        };
        let subscriptions = provisioning
            .list_subscriptions(provisioning_pb::ListSubscriptionsRequest {
                account_id: job.account_id.clone(),
                ..Default::default()
            })
            .await
            .map_err(|status| JobError::from(Error::from(status)))?
            .into_inner()
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
                .await
                .map_err(|status| JobError::from(Error::from(status)))?;
        }
        let deleted = provisioning
            .delete_account_resources(provisioning_pb::DeleteAccountResourcesRequest {
                context: None,
                account_id: job.account_id.clone(),
            })
            .await
            .map_err(|status| JobError::from(Error::from(status)))?
            .into_inner()
            .deleted_resource_ids;
        tracing::info!(account.id = %job.account_id, resources = deleted.len(), "subscriptions of a deleted account ended");
        Ok(())
    }

    async fn rotate_credential(&self, job: &RotationJob) -> Result<(), JobError> {
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

    async fn process_event(&self, job: &EventJob) -> Result<(), JobError> {
        let Some(event) = self.domain().event(&job.event_id).await? else {
            return Ok(());
        };
        if event.status != event_status::RECEIVED {
            return Ok(());
        }
        let marketplace = marketplace_of(&event.marketplace)?;
        let Some(processor) = self.domain().marketplaces().processor(marketplace).cloned() else {
            tracing::info!(event.id = %event.id, event.type = %event.event_type, "no processor for this marketplace; ignored");
            self.domain()
                .finish_event(&event.id, event_status::IGNORED, "", None)
                .await?;
            return Ok(());
        };
        match processor.process(&event, &self.services).await {
            Ok(EventOutcome::Processed { account_id }) => {
                self.domain()
                    .finish_event(&event.id, event_status::PROCESSED, "", account_id)
                    .await?;
                Ok(())
            }
            Ok(EventOutcome::Ignored) => {
                tracing::info!(event.id = %event.id, event.type = %event.event_type, "event type not acted on; acknowledged");
                self.domain()
                    .finish_event(&event.id, event_status::IGNORED, "", None)
                    .await?;
                Ok(())
            }
            Err(error) if error.code().is_transient() || error.code() == ErrorCode::Internal => {
                self.domain()
                    .finish_event(&event.id, event_status::RECEIVED, &error.to_string(), None)
                    .await?;
                Err(JobError::Retry(error.to_string()))
            }
            Err(error) => {
                tracing::warn!(event.id = %event.id, error = %error, "event processing failed");
                self.domain()
                    .finish_event(&event.id, event_status::FAILED, &error.to_string(), None)
                    .await?;
                Ok(())
            }
        }
    }
}

#[async_trait]
impl JobHandler for AccountJobs {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        match job.kind.as_str() {
            kind::APPROVE_SIGNUP => self.approve_signup(&job.payload()?).await,
            kind::REJECT_SIGNUP => self.reject_signup(&job.payload()?).await,
            kind::RESET => self.reset(&job.payload()?).await,
            kind::NOTIFY_APPROVED => self.notify_approved(&job.id, &job.payload()?).await,
            kind::PROCESS_EVENT => self.process_event(&job.payload()?).await,
            kind::END_SUBSCRIPTIONS => self.end_subscriptions(&job.payload()?).await,
            kind::ROTATE_CREDENTIAL => self.rotate_credential(&job.payload()?).await,
            other => Err(JobError::Permanent(format!("unknown job kind {other}"))),
        }
    }
}
