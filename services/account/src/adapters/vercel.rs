//! Vercel's side of the account service: re-reading an installation's team
//! from the Vercel API, and acting on Vercel's webhooks.
//!
//! | event | action |
//! |---|---|
//! | `integration-configuration.removed` | uninstall, as `DELETE /v1/installations/{id}` does |
//! | `marketplace.invoice.*` | `BillingService.RecordInvoiceState` |
//! | `integration-resource.project-(dis)connected` | `ProvisioningService.RecordProjectConnection` |
//! | anything else | ignored (logged and acknowledged) |

use crate::entity::{account, event};
use crate::marketplace::{
    AccountMarketplace, AccountSnapshot, EventOutcome, EventProcessor, EventServices,
};
use async_trait::async_trait;
use marketbridge_core::crypto::SecretString;
use marketbridge_core::money::Money;
use marketbridge_core::time::{parse_rfc3339, to_timestamp};
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_proto::account::v1 as pb;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::{
    AccountSelector, Marketplace, MarketplaceRef, Person, RequestContext,
};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_vercel::VercelApi;
use marketbridge_vercel::model::webhook::{
    event_type, installation_id, invoice_event, project_connection_event,
};
use serde_json::Value;

/// Reads installations from the Vercel API.
#[derive(Clone)]
pub struct VercelAccounts {
    api: VercelApi,
}

impl VercelAccounts {
    /// An adapter over the Vercel API client.
    pub fn new(api: VercelApi) -> Self {
        Self { api }
    }
}

fn not_for_vercel(what: &str) -> Error {
    Error::unprocessable(format!(
        "{what} does not apply to Vercel installations (they need no provider signup)"
    ))
}

#[async_trait]
impl AccountMarketplace for VercelAccounts {
    async fn approve_signup(&self, _account: &account::Model) -> Result<()> {
        Err(not_for_vercel("approving a signup"))
    }

    async fn reject_signup(&self, _account: &account::Model, _reason: &str) -> Result<()> {
        Err(not_for_vercel("rejecting a signup"))
    }

    async fn reset(&self, _account: &account::Model) -> Result<()> {
        Err(not_for_vercel("resetting an account"))
    }

    async fn fetch(
        &self,
        account: &account::Model,
        credential: Option<&SecretString>,
    ) -> Result<Option<AccountSnapshot>> {
        let token = credential.ok_or_else(|| {
            Error::unprocessable("no Vercel token is stored for this installation")
        })?;
        let info = match self.api.account_info(token, &account.external_id).await {
            Ok(info) => info,
            Err(error) if error.code() == ErrorCode::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        Ok(Some(AccountSnapshot {
            display_name: info.name.filter(|n| !n.is_empty()),
            url: info.url.filter(|u| !u.is_empty()),
            contact: info.contact.map(|contact| Person {
                email: contact.email.unwrap_or_default(),
                name: contact.name.unwrap_or_default(),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

/// Acts on Vercel's webhooks.
#[derive(Debug, Clone, Copy, Default)]
pub struct VercelEvents;

fn context(event: &event::Model, step: &str) -> Option<RequestContext> {
    Some(RequestContext {
        idempotency_key: format!("vercel-event:{}:{step}", event.id),
        actor: None,
    })
}

fn unconfigured(service: &str) -> Error {
    Error::unavailable(format!("the {service} service is not configured"))
}

async fn account_of(
    services: &EventServices,
    installation_id: &str,
) -> Result<Option<account::Model>> {
    services
        .accounts
        .find(
            services.accounts.db(),
            Some(&AccountSelector::by_ref(
                Marketplace::Vercel,
                installation_id,
            )),
        )
        .await
}

fn invoice_state(state: &str) -> billing_pb::InvoiceState {
    match state {
        "invoiced" => billing_pb::InvoiceState::Invoiced,
        "paid" => billing_pb::InvoiceState::Paid,
        "notpaid" => billing_pb::InvoiceState::Notpaid,
        "overdue" => billing_pb::InvoiceState::Overdue,
        "refunded" => billing_pb::InvoiceState::Refunded,
        _ => billing_pb::InvoiceState::Unspecified,
    }
}

impl VercelEvents {
    /// The same uninstall as `DELETE /v1/installations/{id}` with
    /// `cascadeResourceDeletion`.
    async fn uninstall(
        &self,
        event: &event::Model,
        payload: &Value,
        services: &EventServices,
    ) -> Result<EventOutcome> {
        let Some(installation_id) = installation_id(payload) else {
            return Err(Error::invalid_field(
                "payload.configuration.id",
                "names no installation",
            ));
        };
        let Some(account) = account_of(services, &installation_id).await? else {
            tracing::info!(installation.id = %installation_id, "removal of an unknown installation; ignored");
            return Ok(EventOutcome::Ignored);
        };
        let mut provisioning = services
            .provisioning
            .clone()
            .ok_or_else(|| unconfigured("provisioning"))?;
        let mut billing = services
            .billing
            .clone()
            .ok_or_else(|| unconfigured("billing"))?;
        provisioning
            .delete_account_resources(provisioning_pb::DeleteAccountResourcesRequest {
                context: context(event, "resources"),
                account_id: account.id.clone(),
            })
            .await
            .map_err(Error::from)?;
        let plan = provisioning
            .get_subscription(provisioning_pb::GetSubscriptionRequest {
                selector: Some(
                    provisioning_pb::get_subscription_request::Selector::MarketplaceRef(
                        MarketplaceRef::new(Marketplace::Vercel, installation_id.clone()),
                    ),
                ),
            })
            .await;
        match plan {
            Ok(subscription) => {
                provisioning
                    .cancel_subscription(provisioning_pb::CancelSubscriptionRequest {
                        context: context(event, "plan"),
                        subscription_id: subscription.into_inner().id,
                        reason: "uninstalled".to_owned(),
                    })
                    .await
                    .map_err(Error::from)?;
            }
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(Error::from(status)),
        }
        let closed = billing
            .close_account_billing(billing_pb::CloseAccountBillingRequest {
                context: context(event, "billing"),
                account_id: account.id.clone(),
            })
            .await
            .map_err(Error::from)?
            .into_inner();
        services
            .accounts
            .delete(pb::DeleteAccountRequest {
                context: context(event, "account"),
                account: Some(AccountSelector::by_id(&account.id)),
                reason: "integration-configuration.removed".to_owned(),
                finalized: closed.finalized,
                purge: false,
                end_subscriptions: false,
            })
            .await?;
        tracing::info!(installation.id = %installation_id, finalized = closed.finalized, "vercel installation removed");
        Ok(EventOutcome::Processed {
            account_id: Some(account.id),
        })
    }

    async fn invoice(
        &self,
        event: &event::Model,
        payload: &Value,
        services: &EventServices,
    ) -> Result<EventOutcome> {
        let Some(invoice) = invoice_event(&event.event_type, payload) else {
            tracing::info!(event.id = %event.id, event.type = %event.event_type, "invoice event without a state or invoice; ignored");
            return Ok(EventOutcome::Ignored);
        };
        let account = account_of(services, &invoice.installation_id)
            .await?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "invoice event for unknown installation {}",
                    invoice.installation_id
                ))
            })?;
        let mut billing = services
            .billing
            .clone()
            .ok_or_else(|| unconfigured("billing"))?;
        let time = |field: &str, text: &Option<String>| {
            text.as_deref()
                .and_then(|t| parse_rfc3339(field, t).ok())
                .map(to_timestamp)
        };
        billing
            .record_invoice_state(billing_pb::RecordInvoiceStateRequest {
                context: context(event, "invoice"),
                account_id: account.id.clone(),
                marketplace_invoice_id: invoice.invoice_id.clone(),
                state: invoice_state(invoice.state) as i32,
                occurred_at: event.occurred_at.map(to_timestamp),
                total: invoice
                    .total
                    .as_deref()
                    .and_then(|t| Money::parse_decimal("invoiceTotal", t, "USD").ok())
                    .map(|m| m.to_proto()),
                period_start: time("period.start", &invoice.period_start),
                period_end: time("period.end", &invoice.period_end),
            })
            .await
            .map_err(Error::from)?;
        Ok(EventOutcome::Processed {
            account_id: Some(account.id),
        })
    }

    async fn project_connection(
        &self,
        event: &event::Model,
        payload: &Value,
        services: &EventServices,
    ) -> Result<EventOutcome> {
        let Some(connection) = project_connection_event(&event.event_type, payload) else {
            return Err(Error::invalid_field(
                "payload",
                "names no resource or project",
            ));
        };
        let mut provisioning = services
            .provisioning
            .clone()
            .ok_or_else(|| unconfigured("provisioning"))?;
        let resource = provisioning
            .record_project_connection(provisioning_pb::RecordProjectConnectionRequest {
                context: context(event, "connection"),
                resource_id: connection.resource_id.clone(),
                project_id: connection.project_id.clone(),
                connected: connection.connected,
                targets: connection.targets.clone(),
            })
            .await
            .map_err(Error::from)?
            .into_inner();
        Ok(EventOutcome::Processed {
            account_id: Some(resource.account_id),
        })
    }
}

#[async_trait]
impl EventProcessor for VercelEvents {
    async fn process(
        &self,
        event: &event::Model,
        services: &EventServices,
    ) -> Result<EventOutcome> {
        let payload: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
        match event.event_type.as_str() {
            event_type::CONFIGURATION_REMOVED => self.uninstall(event, &payload, services).await,
            event_type::PROJECT_CONNECTED | event_type::PROJECT_DISCONNECTED => {
                self.project_connection(event, &payload, services).await
            }
            kind if kind.starts_with(event_type::INVOICE_PREFIX) => {
                self.invoice(event, &payload, services).await
            }
            _ => Ok(EventOutcome::Ignored),
        }
    }
}
