//! Vercel's side of provisioning. Vercel has no subscription API (plans are
//! chosen in its dashboard and arrive through the partner API), so only
//! resource changes travel this way: the status and notice are patched onto
//! the resource at Vercel, new secrets are pushed, and a `resource.updated`
//! event tells Vercel to re-read it. Calls use the installation's token from
//! the account service and run from the outbox, so a Vercel outage delays
//! them but loses nothing.

use crate::driver::Secret;
use crate::entity::subscription;
use crate::marketplace::{ProvisioningMarketplace, ResourceChange, SubscriptionSnapshot};
use crate::model::{ExternalId, PlanId, ResourceStatus as Status};
use async_trait::async_trait;
use marketbridge_core::crypto::SecretString;
use marketbridge_core::{Error, Result};
use marketbridge_rpc::AccountApi;
use marketbridge_vercel::VercelApi;
use marketbridge_vercel::api::credentials::AccountTokens;
use marketbridge_vercel::model::partner::ResourceStatus;
use marketbridge_vercel::model::vercel_api::{
    IntegrationEvent, NotificationChange, ResourceImport, ResourceUpdate, SecretsUpdate,
};
use marketbridge_vercel::model::{Notification, NotificationLevel};
use std::sync::Arc;

/// The Vercel provisioning adapter.
#[derive(Clone)]
pub struct VercelProvisioning {
    api: VercelApi,
    tokens: AccountTokens,
}

impl VercelProvisioning {
    /// An adapter calling the Vercel API with tokens from the account
    /// service.
    pub fn new(api: VercelApi, accounts: Arc<dyn AccountApi>) -> Self {
        Self {
            api,
            tokens: AccountTokens::new(accounts),
        }
    }

    /// The installation's token to call with now (short-lived when
    /// available); prefer [`VercelApi::with_token`], which also retries a
    /// 401 and records a 410.
    async fn token(&self, installation_id: &ExternalId) -> Result<SecretString> {
        Ok(self
            .tokens
            .token(installation_id.as_str(), None)
            .await?
            .secret)
    }
}

fn not_for_vercel(what: &str) -> Error {
    Error::unprocessable(format!(
        "{what} does not apply to Vercel: plans are chosen in the Vercel dashboard"
    ))
}

/// The Vercel status of a stored resource status.
pub fn vercel_status(stored: Status) -> ResourceStatus {
    match stored {
        Status::Pending => ResourceStatus::Pending,
        Status::Onboarding => ResourceStatus::Onboarding,
        Status::Ready => ResourceStatus::Ready,
        Status::Suspended => ResourceStatus::Suspended,
        Status::Uninstalled => ResourceStatus::Uninstalled,
        Status::Error => ResourceStatus::Error,
    }
}

/// The notice that goes with a status, or `Clear` when none does.
fn notification(stored: Status, message: &str) -> NotificationChange {
    let message = Some(message.to_owned()).filter(|m| !m.is_empty());
    match stored {
        Status::Error => NotificationChange::Set(Notification::new(
            NotificationLevel::Error,
            "Provisioning failed",
            message,
        )),
        Status::Suspended => NotificationChange::Set(Notification::new(
            NotificationLevel::Warn,
            "Suspended",
            message,
        )),
        Status::Onboarding if message.is_some() => NotificationChange::Set(Notification::new(
            NotificationLevel::Info,
            "Finish setting up",
            message,
        )),
        _ => NotificationChange::Clear(()),
    }
}

/// The secrets as Vercel gets them; a production-only resource's carry no
/// development or preview values (contract §2.8).
fn wire_secrets(
    secrets: &[Secret],
    production_only: bool,
) -> Vec<marketbridge_vercel::model::Secret> {
    secrets
        .iter()
        .map(|s| {
            if production_only {
                s.production_values()
            } else {
                s.clone()
            }
        })
        .map(|s| marketbridge_vercel::model::Secret {
            name: s.name.clone(),
            value: s.value.clone(),
            prefix: None,
            environment_overrides: (!s.environment_overrides.is_empty())
                .then(|| s.environment_overrides.clone()),
        })
        .collect()
}

#[async_trait]
impl ProvisioningMarketplace for VercelProvisioning {
    async fn fetch_subscription(
        &self,
        _external_id: &ExternalId,
    ) -> Result<Option<SubscriptionSnapshot>> {
        Err(not_for_vercel("reading a subscription"))
    }

    async fn approve_subscription(&self, _subscription: &subscription::Model) -> Result<()> {
        Err(not_for_vercel("approving a subscription"))
    }

    async fn reject_subscription(
        &self,
        _subscription: &subscription::Model,
        _reason: &str,
    ) -> Result<()> {
        Err(not_for_vercel("rejecting a subscription"))
    }

    async fn approve_plan_change(
        &self,
        _subscription: &subscription::Model,
        _pending_plan_id: &PlanId,
    ) -> Result<()> {
        Err(not_for_vercel("approving a plan change"))
    }

    async fn reject_plan_change(
        &self,
        _subscription: &subscription::Model,
        _pending_plan_id: &PlanId,
        _reason: &str,
    ) -> Result<()> {
        Err(not_for_vercel("rejecting a plan change"))
    }

    async fn resource_changed(&self, change: &ResourceChange) -> Result<()> {
        let installation_id = change.account_external_id.as_str();
        let resource = &change.resource;
        let update = ResourceUpdate {
            status: Some(vercel_status(resource.status).as_str().to_owned()),
            notification: Some(notification(resource.status, &resource.status_message)),
            ..Default::default()
        };
        let api = &self.api;
        let update = &update;
        api.with_token(&self.tokens, installation_id, |token| async move {
            api.update_resource(&token, installation_id, &resource.id, update)
                .await
        })
        .await?;
        if let Some(secrets) = &change.secrets {
            let update = SecretsUpdate {
                secrets: wire_secrets(secrets, resource.production_only),
                partial: None,
            };
            let update = &update;
            api.with_token(&self.tokens, installation_id, |token| async move {
                api.update_secrets(&token, installation_id, &resource.id, update)
                    .await
            })
            .await?;
        }
        api.with_token(&self.tokens, installation_id, |token| async move {
            api.dispatch_event(
                &token,
                installation_id,
                IntegrationEvent::ResourceUpdated {
                    product_id: Some(resource.product_id.clone()),
                    resource_id: resource.id.clone(),
                },
            )
            .await
        })
        .await?;
        tracing::info!(installation.id = %installation_id, resource.id = %resource.id, status = %resource.status, secrets_pushed = change.secrets.is_some(), "vercel told of a resource change");
        Ok(())
    }

    async fn import_resource(&self, change: &ResourceChange) -> Result<()> {
        let installation_id = change.account_external_id.as_str();
        let resource = &change.resource;
        let token = self.token(&change.account_external_id).await?;
        let metadata = crate::convert::metadata(resource)?;
        let import = ResourceImport {
            // Not billed through Vercel (§2.7).
            ownership: Some("linked".to_owned()),
            product_id: resource.product_id.clone(),
            name: resource.name.clone(),
            status: vercel_status(resource.status).as_str().to_owned(),
            metadata: metadata.is_object().then_some(metadata),
            billing_plan: None,
            notification: None,
            extras: None,
            secrets: change
                .secrets
                .as_deref()
                .map(|secrets| wire_secrets(secrets, change.resource.production_only)),
        };
        self.api
            .import_resource(&token, installation_id, &resource.id, &import)
            .await?;
        tracing::info!(installation.id = %installation_id, resource.id = %resource.id, "vercel resource imported (linked)");
        Ok(())
    }

    async fn list_subscription_ids(&self) -> Result<Vec<ExternalId>> {
        // Vercel has no subscriptions to re-read.
        Ok(Vec::new())
    }

    fn provisions_account_subscriptions(&self) -> bool {
        false
    }
}
