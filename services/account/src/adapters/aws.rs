//! AWS Marketplace in the account service: registration tokens resolved with
//! `ResolveCustomer`, and the processing of AWS's notifications.
//!
//! A purchase is recorded under its license: the account and the
//! subscription both take the `LicenseArn` (new products) or the legacy
//! `CustomerIdentifier` as their marketplace id, so concurrent purchases by
//! one AWS account stay apart. AWS has no account API: signup approval
//! needs no call, and an account is read back as it is stored.
//!
//! Notifications are hints. `purchase.resolved`, EventBridge license events
//! and legacy SNS messages hand the license to provisioning, which re-reads
//! its entitlements with `GetEntitlements` and acts; duplicates and any
//! order end in the same state. Agreement events carry no license and are
//! acknowledged only.

use crate::adapter::{PURCHASE_RESOLVED, PurchasePayload, ResolvedPurchase};
use crate::entity::{account, event};
use crate::marketplace::{
    AccountMarketplace, AccountSnapshot, EventOutcome, EventProcessor, EventServices, Marketplaces,
};
use async_trait::async_trait;
use marketbridge_aws::MarketplaceClient;
use marketbridge_aws::events::{Envelope, LegacyMessage, detail_type};
use marketbridge_aws::metering::Licensee;
use marketbridge_config::Config;
use marketbridge_core::crypto::{SecretString, sha256_hex};
use marketbridge_core::ids::AccountId;
use marketbridge_core::{Error, ErrorCode, Marketplace, Result};
use marketbridge_proto::common::v1::{Marketplace as ProtoMarketplace, MarketplaceRef};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Event types of legacy SNS messages: `sns.<action>`.
pub const SNS_EVENT_PREFIX: &str = "sns.";

/// How long a resolved token is answered from memory (a browser re-POST of
/// the same token must not fail because AWS refuses a resubmission).
const RESOLVED_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Registers the AWS adapter and event processor when `aws.product_code` is
/// set.
pub fn register(marketplaces: Marketplaces, config: &Config) -> Result<Marketplaces> {
    let Some(client) = MarketplaceClient::from_options(&config.aws, &config.tls)? else {
        return Ok(marketplaces);
    };
    Ok(marketplaces
        .with_adapter(
            Marketplace::Aws,
            Arc::new(AwsAccounts {
                client,
                resolved: Mutex::default(),
            }),
        )
        .with_processor(Marketplace::Aws, Arc::new(AwsEvents)))
}

/// The licensee a stored key stands for: a `LicenseArn` starts with `arn:`,
/// anything else is a legacy customer identifier. The buyer account is not
/// in the key; callers that meter get it from `GetEntitlements`.
pub fn license_key(text: &str) -> String {
    let text = text.trim();
    // EventBridge shows license ARNs without their `arn:` prefix.
    if text.starts_with("aws:license-manager") {
        format!("arn:{text}")
    } else {
        text.to_owned()
    }
}

/// Calls the account service makes to AWS.
pub struct AwsAccounts {
    client: MarketplaceClient,
    resolved: Mutex<HashMap<String, (ResolvedPurchase, Instant)>>,
}

impl AwsAccounts {
    fn remembered(&self, digest: &str) -> Option<ResolvedPurchase> {
        let mut resolved = self.resolved.lock().ok()?;
        resolved.retain(|_, (_, at)| at.elapsed() < RESOLVED_TOKEN_TTL);
        resolved.get(digest).map(|(purchase, _)| purchase.clone())
    }
}

#[async_trait]
impl AccountMarketplace for AwsAccounts {
    async fn approve_signup(&self, _account: &account::Model) -> Result<()> {
        // AWS has nothing to approve: the buyer registered with us.
        Ok(())
    }

    async fn reject_signup(&self, account: &account::Model, reason: &str) -> Result<()> {
        tracing::info!(account.id = %account.id, reason = %reason, "aws signup rejected here; AWS is not told");
        Ok(())
    }

    async fn reset(&self, _account: &account::Model) -> Result<()> {
        Ok(())
    }

    async fn fetch(
        &self,
        account: &account::Model,
        _credential: Option<&SecretString>,
    ) -> Result<Option<AccountSnapshot>> {
        // No account API at AWS: the account is what we stored.
        let attributes: BTreeMap<String, String> =
            serde_json::from_str(&account.attributes).unwrap_or_default();
        Ok(Some(AccountSnapshot {
            marketplace_state: account.marketplace_state.clone(),
            update_time: account.marketplace_update_time,
            attributes,
            ..AccountSnapshot::default()
        }))
    }

    async fn resolve_purchase(&self, token: &SecretString) -> Result<ResolvedPurchase> {
        let digest = sha256_hex(token.expose().as_bytes());
        if let Some(purchase) = self.remembered(&digest) {
            return Ok(purchase);
        }
        let answer = self
            .client
            .resolve_customer(token.expose())
            .await
            .map_err(|error| {
                if error.is_token_refused() {
                    Error::unauthenticated(
                        "the AWS Marketplace registration token is not valid or has expired",
                    )
                } else {
                    Error::from(error)
                }
            })?;
        if answer.product_code != self.client.product_code() {
            tracing::warn!(aws.product_code = %answer.product_code, "a registration token for another product");
            return Err(Error::unauthenticated(
                "the AWS Marketplace registration token is for another product",
            ));
        }
        let licensee = answer.licensee().ok_or_else(|| {
            Error::unavailable("ResolveCustomer named neither a license nor a customer")
        })?;
        let mut attributes = BTreeMap::new();
        attributes.insert("aws_product_code".to_owned(), answer.product_code.clone());
        if let Some(account) = answer.customer_aws_account_id.as_deref() {
            attributes.insert("aws_customer_account_id".to_owned(), account.to_owned());
        }
        match &licensee {
            Licensee::License { license_arn, .. } => {
                attributes.insert("aws_license_arn".to_owned(), license_arn.clone());
            }
            Licensee::Legacy {
                customer_identifier,
            } => {
                attributes.insert(
                    "aws_customer_identifier".to_owned(),
                    customer_identifier.clone(),
                );
            }
        }
        let key = licensee.key().to_owned();
        let purchase = ResolvedPurchase {
            account_external_id: key.clone(),
            snapshot: AccountSnapshot {
                marketplace_state: "registered".to_owned(),
                attributes: attributes.clone(),
                ..AccountSnapshot::default()
            },
            subscription_external_id: key,
            product_id: answer.product_code,
            plan_id: String::new(),
            quantity: None,
            purchaser: None,
            attributes,
        };
        if let Ok(mut resolved) = self.resolved.lock() {
            resolved.insert(digest, (purchase.clone(), Instant::now()));
        }
        Ok(purchase)
    }
}

/// What an AWS event names: the license to re-read, or nothing to do.
pub fn license_of(event_type: &str, payload: &str) -> Result<Option<String>> {
    if event_type == PURCHASE_RESOLVED {
        let purchase: PurchasePayload = serde_json::from_str(payload)
            .map_err(|e| Error::validation(format!("unreadable purchase payload: {e}")))?;
        return Ok(Some(license_key(&purchase.subscription_external_id)));
    }
    if let Some(action) = event_type.strip_prefix(SNS_EVENT_PREFIX) {
        let message = LegacyMessage::parse(payload)
            .ok_or_else(|| Error::validation(format!("unreadable SNS `{action}` message")))?;
        return Ok(Some(message.customer_identifier));
    }
    let envelope = Envelope::parse(payload.as_bytes())
        .ok_or_else(|| Error::validation("unreadable EventBridge event"))?;
    match envelope.kind() {
        detail_type::LICENSE_UPDATED | detail_type::LICENSE_DEPROVISIONED => Ok(envelope
            .detail()
            .license
            .map(|l| license_key(&l.arn))
            .filter(|key| !key.is_empty())),
        _ => Ok(None),
    }
}

/// Processes recorded AWS events.
pub struct AwsEvents;

#[async_trait]
impl EventProcessor for AwsEvents {
    async fn process(
        &self,
        event: &event::Model,
        services: &EventServices,
    ) -> Result<EventOutcome> {
        let Some(license) = license_of(&event.event_type, &event.payload)? else {
            tracing::info!(event.id = %event.id, event.type = %event.event_type, "aws event acknowledged; nothing to re-read");
            return Ok(EventOutcome::Ignored);
        };
        sync_license(services, &license).await
    }
}

/// Hands a license to provisioning, which re-reads it and acts.
async fn sync_license(services: &EventServices, license: &str) -> Result<EventOutcome> {
    let Some(provisioning) = &services.provisioning else {
        return Err(Error::unavailable(
            "the provisioning service is not configured",
        ));
    };
    let synced = provisioning
        .sync_subscription(provisioning_pb::SyncSubscriptionRequest {
            context: None,
            marketplace_ref: Some(MarketplaceRef::new(ProtoMarketplace::Aws, license)),
            approved_by_marketplace: false,
        })
        .await;
    match synced {
        Ok(subscription) => Ok(EventOutcome::Processed {
            account_id: AccountId::parse("accountId", &subscription.account_id).ok(),
        }),
        Err(error) if error.code() == ErrorCode::NotFound => {
            tracing::info!(aws.license = %license, "license unknown here and without entitlements at AWS");
            Ok(EventOutcome::Processed { account_id: None })
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_the_license_to_re_read() {
        let arn = "arn:aws:license-manager::1:license:l-1";
        let purchase =
            serde_json::json!({"account_external_id": arn, "subscription_external_id": arn})
                .to_string();
        assert_eq!(
            license_of(PURCHASE_RESOLVED, &purchase).unwrap(),
            Some(arn.to_owned())
        );
        let updated = serde_json::json!({"version":"0","id":"e","detail-type":"License Updated - Manufacturer",
            "source":"aws.agreement-marketplace","detail":{"license":{"arn":"aws:license-manager::1:license:l-1"}}})
        .to_string();
        assert_eq!(
            license_of("License Updated", &updated).unwrap(),
            Some(arn.to_owned())
        );
        let ended = updated.replace("License Updated", "Purchase Agreement Ended");
        assert_eq!(
            license_of("Purchase Agreement Ended", &ended).unwrap(),
            None
        );
        let sns =
            r#"{"action":"entitlement-updated","customer-identifier":"cust1","product-code":"p"}"#;
        assert_eq!(
            license_of("sns.entitlement-updated", sns).unwrap(),
            Some("cust1".to_owned())
        );
        assert!(license_of("License Updated", "{").is_err());
    }
}
