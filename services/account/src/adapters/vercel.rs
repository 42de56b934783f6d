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
    AccountMarketplace, AccountSnapshot, CallCredential, EventOutcome, EventProcessor,
    EventServices, MarketplaceWorker,
};
use crate::model::{AccountKey, ExternalId, TokenId};
use async_trait::async_trait;
use marketbridge_config::VercelOptions;
use marketbridge_core::crypto::SecretString;
use marketbridge_core::ids::AccountId;
use marketbridge_core::money::Money;
use marketbridge_core::time::SharedClock;
use marketbridge_core::time::{parse_rfc3339, to_timestamp};
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_proto::account::v1 as pb;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::{
    AccountSelector, Marketplace, MarketplaceRef, Person, RequestContext,
};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_vercel::VercelApi;
use marketbridge_vercel::api::credentials::{
    LONG_LIVED, SHORT_LIVED, TokenCache, TokenGrant, is_gone,
};
use marketbridge_vercel::model::vercel_api::CredentialRotation;
use marketbridge_vercel::model::webhook::{
    event_type, installation_id, invoice_event, project_connection_event,
};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Reads installations from the Vercel API and holds their credentials:
/// the one cache of short-lived installation tokens of the set (every
/// service asks for tokens through `GetMarketplaceCredential`), and the
/// rotation and revocation of the stored credential.
#[derive(Clone)]
pub struct VercelAccounts {
    api: VercelApi,
    credentials: Arc<VercelCredentials>,
}

/// How installation credentials are obtained, rotated and revoked.
pub struct VercelCredentials {
    /// Calls use short-lived tokens (else the stored long-lived one).
    pub short_lived: bool,
    /// The client-credentials grant (UNVERIFIED names, from configuration).
    pub grant: TokenGrant,
    /// The field of `credentials/revoke` naming the retired credential
    /// (UNVERIFIED).
    pub revoke_field: String,
    cache: TokenCache,
    clock: SharedClock,
}

impl VercelCredentials {
    /// Credentials as configured.
    pub fn from_config(options: &VercelOptions, clock: SharedClock) -> Result<Self> {
        let short_lived = match options.installation_tokens.as_str() {
            "short-lived" => true,
            "long-lived" => false,
            other => {
                return Err(Error::invalid_field(
                    "vercel.installation_tokens",
                    format!("must be `short-lived` or `long-lived`, not `{other}`"),
                ));
            }
        };
        Ok(Self {
            short_lived,
            grant: TokenGrant {
                endpoint: options.token_endpoint.clone(),
                encoding: options.token_request_encoding.clone(),
                grant_type: options.token_grant_type.clone(),
                client_id_field: options.token_client_id_field.clone(),
                client_secret_field: options.token_client_secret_field.clone(),
                installation_field: options.token_installation_field.clone(),
                token_field: options.token_response_token_field.clone(),
                expires_field: options.token_response_expires_field.clone(),
                client_id: options.client_id.clone(),
                client_secret: SecretString::new(options.client_secret.clone()),
            },
            revoke_field: options.revoke_token_field.clone(),
            cache: TokenCache::new(options.token_refresh_margin_seconds),
            clock,
        })
    }
}

impl VercelAccounts {
    /// An adapter over the Vercel API client.
    pub fn new(api: VercelApi, credentials: VercelCredentials) -> Self {
        Self {
            api,
            credentials: Arc::new(credentials),
        }
    }
}

fn stored_token(stored: Option<&SecretString>) -> Result<CallCredential> {
    let secret = stored
        .cloned()
        .ok_or_else(|| Error::unprocessable("no Vercel token is stored for this installation"))?;
    Ok(CallCredential {
        secret,
        kind: LONG_LIVED.to_owned(),
        expires_at: None,
    })
}

/// Scheduled rotation of installation credentials older than the
/// configured age (`vercel.credential_rotation_days`), run by the elected
/// replica.
pub struct VercelRotationSchedule {
    max_age: chrono::Duration,
}

impl VercelRotationSchedule {
    /// Rotates credentials older than `days`.
    pub fn new(days: u64) -> Self {
        Self {
            max_age: chrono::Duration::days(days.min(36_500) as i64),
        }
    }
}

#[async_trait]
impl MarketplaceWorker for VercelRotationSchedule {
    fn name(&self) -> &'static str {
        "vercel.rotate_credentials"
    }

    fn first_delay(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn pause_after(&self, _done: usize) -> Duration {
        Duration::from_secs(3600)
    }

    async fn run_once(&self, services: &EventServices) -> Result<usize> {
        services
            .accounts
            .schedule_rotations(marketbridge_core::Marketplace::Vercel, self.max_age)
            .await
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

    async fn call_token(
        &self,
        account: &account::Model,
        stored: Option<&SecretString>,
        stale_token: Option<&TokenId>,
    ) -> Result<CallCredential> {
        let credentials = &self.credentials;
        if !credentials.short_lived {
            return stored_token(stored);
        }
        let installation_id = account.external_id.as_str();
        let clock = credentials.clock.clone();
        let stale = stale_token.map(TokenId::as_str).filter(|id| !id.is_empty());
        let obtained = credentials
            .cache
            .get(installation_id, || clock.now(), stale, || async {
                let issued = self
                    .api
                    .request_installation_token(&credentials.grant, installation_id)
                    .await?;
                tracing::info!(installation.id = %installation_id, expires_in = issued.expires_in, vercel.token_kind = SHORT_LIVED, "short-lived installation token obtained");
                Ok(issued)
            })
            .await;
        match obtained {
            Ok(token) => Ok(CallCredential {
                secret: token.secret,
                kind: SHORT_LIVED.to_owned(),
                expires_at: Some(token.expires_at),
            }),
            Err(error) if is_gone(&error) => Err(error),
            Err(error) => {
                tracing::warn!(installation.id = %installation_id, error = %error, vercel.token_kind = LONG_LIVED, "no short-lived token could be obtained; falling back to the stored long-lived token");
                stored_token(stored)
            }
        }
    }

    fn rotates_credentials(&self) -> bool {
        true
    }

    async fn rotate_credential(
        &self,
        account: &account::Model,
        current: &SecretString,
    ) -> Result<SecretString> {
        let rotated = self
            .api
            .rotate_credentials(
                current,
                &account.external_id,
                &CredentialRotation {
                    client_secret: self.credentials.grant.client_secret.expose().to_owned(),
                    client_id: Some(self.credentials.grant.client_id.clone()),
                },
            )
            .await?;
        if rotated.access_token.is_empty() {
            return Err(Error::unavailable(
                "the rotation answer has no `access_token`",
            ));
        }
        Ok(SecretString::new(rotated.access_token))
    }

    async fn revoke_credential(
        &self,
        account: &account::Model,
        live: &SecretString,
        retired: &SecretString,
    ) -> Result<()> {
        let mut body = serde_json::Map::new();
        body.insert(
            "client_secret".into(),
            Value::String(self.credentials.grant.client_secret.expose().to_owned()),
        );
        body.insert(
            "client_id".into(),
            Value::String(self.credentials.grant.client_id.clone()),
        );
        body.insert(
            self.credentials.revoke_field.clone(),
            Value::String(retired.expose().to_owned()),
        );
        self.api
            .revoke_credentials(live, &account.external_id, &Value::Object(body))
            .await
    }

    fn is_gone(&self, error: &Error) -> bool {
        is_gone(error)
    }

    fn forget_tokens(&self, account: &account::Model) {
        self.credentials.cache.forget(&account.external_id);
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
    installation_id: &ExternalId,
) -> Result<Option<account::Model>> {
    let key = AccountKey::Ref(
        marketbridge_core::Marketplace::Vercel,
        installation_id.clone(),
    );
    services
        .accounts
        .find_key(services.accounts.db(), &key)
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
        let Some(installation_id) = installation_id(payload).map(ExternalId::new) else {
            return Err(Error::invalid_field(
                "payload.configuration.id",
                "names no installation",
            ));
        };
        let Some(account) = account_of(services, &installation_id).await? else {
            tracing::info!(installation.id = %installation_id, "removal of an unknown installation; ignored");
            return Ok(EventOutcome::Ignored);
        };
        let provisioning = services
            .provisioning
            .as_ref()
            .ok_or_else(|| unconfigured("provisioning"))?;
        let billing = services
            .billing
            .as_ref()
            .ok_or_else(|| unconfigured("billing"))?;
        provisioning
            .delete_account_resources(provisioning_pb::DeleteAccountResourcesRequest {
                context: context(event, "resources"),
                account_id: account.id.clone(),
            })
            .await?;
        let plan = provisioning
            .get_subscription(provisioning_pb::GetSubscriptionRequest {
                selector: Some(
                    provisioning_pb::get_subscription_request::Selector::MarketplaceRef(
                        MarketplaceRef::new(Marketplace::Vercel, installation_id.as_str()),
                    ),
                ),
            })
            .await;
        match plan {
            Ok(subscription) => {
                provisioning
                    .cancel_subscription(provisioning_pb::CancelSubscriptionRequest {
                        context: context(event, "plan"),
                        subscription_id: subscription.id,
                        reason: "uninstalled".to_owned(),
                    })
                    .await?;
            }
            Err(error) if error.code() == ErrorCode::NotFound => {}
            Err(error) => return Err(error),
        }
        let closed = billing
            .close_account_billing(billing_pb::CloseAccountBillingRequest {
                context: context(event, "billing"),
                account_id: account.id.clone(),
            })
            .await?;
        services
            .accounts
            .delete(
                &AccountKey::Id(account.account_id()?),
                pb::DeleteAccountRequest {
                    context: context(event, "account"),
                    account: Some(AccountSelector::by_id(&account.id)),
                    reason: "integration-configuration.removed".to_owned(),
                    finalized: closed.finalized,
                    purge: false,
                    end_subscriptions: false,
                },
            )
            .await?;
        tracing::info!(installation.id = %installation_id, finalized = closed.finalized, "vercel installation removed");
        Ok(EventOutcome::Processed {
            account_id: Some(account.account_id()?),
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
        let account = account_of(services, &ExternalId::new(invoice.installation_id.clone()))
            .await?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "invoice event for unknown installation {}",
                    invoice.installation_id
                ))
            })?;
        let billing = services
            .billing
            .as_ref()
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
            .await?;
        Ok(EventOutcome::Processed {
            account_id: Some(account.account_id()?),
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
        let provisioning = services
            .provisioning
            .as_ref()
            .ok_or_else(|| unconfigured("provisioning"))?;
        let resource = provisioning
            .record_project_connection(provisioning_pb::RecordProjectConnectionRequest {
                context: context(event, "connection"),
                resource_id: connection.resource_id.clone(),
                project_id: connection.project_id.clone(),
                connected: connection.connected,
                targets: connection.targets.clone(),
            })
            .await?;
        Ok(EventOutcome::Processed {
            account_id: AccountId::parse("accountId", &resource.account_id).ok(),
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
        // Recorded events are JSON (checked when recorded); one that is not
        // cannot be acted on and fails rather than being read as empty.
        let payload: Value = serde_json::from_str(&event.payload)
            .map_err(|e| Error::invalid_field("payload", format!("is not JSON: {e}")))?;
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
