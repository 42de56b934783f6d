//! AWS Marketplace in the account service: registration tokens resolved with
//! `ResolveCustomer`, and the processing of AWS's notifications.
//!
//! A purchase is recorded under its license: the account and the
//! subscription both take the `LicenseArn` (new products) or the legacy
//! `CustomerIdentifier` as their marketplace id, so concurrent purchases by
//! one AWS account stay apart. AWS has no account API: signup approval
//! needs no call, and an account is read back as it is stored.
//!
//! Notifications are hints. For contracts (`aws.product_type` `contract`
//! or `contract_with_consumption`), `purchase.resolved`, EventBridge license
//! events and legacy SNS messages hand the license to provisioning, which
//! re-reads its entitlements with `GetEntitlements` and acts; duplicates and
//! any order end in the same state.
//!
//! Subscription (pay-as-you-go) products have no entitlements and AWS has
//! no API that reads a subscription's state: the license's recorded events
//! are its state. Every event of a license re-derives it from all of them
//! (so duplicates and any order give the in-order answer; the phases only
//! move forward): purchased (`License Updated`, `subscribe-success`), then
//! deprovisioning (`License Deprovisioned`, `unsubscribe-pending`), then
//! inactive (`unsubscribe-success`, or the deprovisioning window over);
//! `subscribe-fail` without a success is failed and never provisioned.
//! Provisioning is told with `UpsertSubscription`: a purchased license is a
//! requested subscription that activates once the buyer signed up; the end
//! cancels it, which sends all unsent usage at once (the partial hour too).
//!
//! Agreement events name no license: license events carry both the
//! agreement id and the license, so the recorded events are the mapping.
//! `Purchase Agreement Amended` re-reads the licenses of the agreement,
//! `Purchase Agreement Ended` records the end on them (metering goes on
//! until the license says otherwise), and a renewal (`Created` with
//! `previousAgreementId`) is matched to licenses by its own agreement id
//! first, then by the previous one.

use crate::adapter::{PURCHASE_RESOLVED, PurchasePayload, ResolvedPurchase};
use crate::entity::{account, event};
use crate::marketplace::{
    AccountMarketplace, AccountSnapshot, EventOutcome, EventProcessor, EventServices, Marketplaces,
};
use crate::model::SignupState;
use async_trait::async_trait;
use marketbridge_aws::MarketplaceClient;
use marketbridge_aws::events::{Envelope, LegacyMessage, action, detail_type, same_license};
use marketbridge_aws::metering::Licensee;
use marketbridge_catalog::Catalog;
use marketbridge_config::{AwsProductType, Config};
use marketbridge_core::crypto::{SecretString, sha256_hex};
use marketbridge_core::ids::AccountId;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, ErrorCode, Marketplace, Result};
use marketbridge_proto::common::v1::AccountSelector;
use marketbridge_proto::common::v1::{Marketplace as ProtoMarketplace, MarketplaceRef};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::db_error;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Event types of legacy SNS messages: `sns.<action>`.
pub const SNS_EVENT_PREFIX: &str = "sns.";

/// How long a resolved token is answered from memory (a browser re-POST of
/// the same token must not fail because AWS refuses a resubmission).
const RESOLVED_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Registers the AWS adapter and event processor when `aws.product_code` is
/// set.
pub fn register(
    marketplaces: Marketplaces,
    config: &Config,
    clock: SharedClock,
) -> Result<Marketplaces> {
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
        .with_processor(Marketplace::Aws, Arc::new(AwsEvents::new(config, clock)?)))
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
pub struct AwsEvents {
    product_type: AwsProductType,
    /// Subscription products: the catalog (product, plan) a license is on.
    subscription_plan: Option<(String, String)>,
    deprovisioning_window: chrono::Duration,
    clock: SharedClock,
}

impl AwsEvents {
    /// The processor for the configured product type.
    pub fn new(config: &Config, clock: SharedClock) -> Result<Self> {
        let product_type = config.aws.product_type;
        let subscription_plan = if product_type == AwsProductType::Subscription {
            let catalog = Catalog::load(&config.catalog.path)?;
            let wanted = config.aws.subscription_plan.trim();
            let found = catalog
                .products()
                .iter()
                .flat_map(|product| product.plans.iter().map(move |plan| (product, plan)))
                .find(|(_, plan)| {
                    if wanted.is_empty() {
                        plan.marketplace_plan_ids.contains_key("aws")
                    } else {
                        plan.id == wanted
                    }
                })
                .map(|(product, plan)| (product.id.clone(), plan.id.clone()));
            if found.is_none() {
                return Err(Error::validation(format!(
                    "aws.subscription_plan: no catalog plan `{wanted}` (empty: the first plan with an AWS id)"
                )));
            }
            found
        } else {
            None
        };
        Ok(Self {
            product_type,
            subscription_plan,
            deprovisioning_window: chrono::Duration::minutes(
                config.aws.deprovisioning_window_minutes.min(7 * 24 * 60) as i64,
            ),
            clock,
        })
    }
}

#[async_trait]
impl EventProcessor for AwsEvents {
    async fn process(
        &self,
        event: &event::Model,
        services: &EventServices,
    ) -> Result<EventOutcome> {
        if let Some(outcome) = self.agreement_event(event, services).await? {
            return Ok(outcome);
        }
        let Some(license) = license_of(&event.event_type, &event.payload)? else {
            tracing::info!(event.id = %event.id, event.type = %event.event_type, "aws event acknowledged; nothing to re-read");
            return Ok(EventOutcome::Ignored);
        };
        let outcome = if self.product_type == AwsProductType::Subscription {
            self.subscription(services, &license).await?
        } else {
            sync_license(services, &license).await?
        };
        // An agreement's end that arrived before its first license event
        // found no license then: it is recorded now.
        if let Some((_, agreement)) = license_and_agreement(&event.event_type, &event.payload) {
            for ended in events_mentioning(services, &agreement).await? {
                if ended.event_type != detail_type::AGREEMENT_ENDED {
                    continue;
                }
                let Some(detail) = Envelope::parse(ended.payload.as_bytes())
                    .and_then(|e| e.detail().agreement)
                    .filter(|a| a.id == agreement)
                else {
                    continue;
                };
                self.agreement_ended(services, &license, &agreement, detail.status.as_deref())
                    .await?;
            }
        }
        Ok(outcome)
    }
}

/// A subscription license's phase, from all its recorded events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Registered at most: nothing to provision.
    Unknown,
    /// Bought (activates once the buyer signed up).
    Purchased,
    /// Revoked; the final usage goes out.
    Deprovisioning,
    /// Over.
    Inactive,
    /// `subscribe-fail`: never provisioned.
    Failed,
}

/// What the recorded events of one license say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicenseFacts {
    /// `License Updated` or `subscribe-success` seen.
    pub purchased: bool,
    /// `subscribe-fail` seen.
    pub failed: bool,
    /// The earliest `License Deprovisioned` / `unsubscribe-pending`.
    pub deprovisioned_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `unsubscribe-success` seen.
    pub ended: bool,
    /// The buyer's AWS account.
    pub customer_aws_account_id: Option<String>,
    /// The agreement.
    pub agreement_id: Option<String>,
    /// The offer.
    pub offer_id: Option<String>,
}

impl LicenseFacts {
    /// Adds what one recorded event of the license says.
    pub fn add(&mut self, event_type: &str, payload: &str, at: chrono::DateTime<chrono::Utc>) {
        let mut deprovisioned = false;
        if event_type == PURCHASE_RESOLVED {
            if let Ok(purchase) = serde_json::from_str::<PurchasePayload>(payload)
                && let Some(account) = purchase.attributes.get("aws_customer_account_id")
            {
                self.customer_aws_account_id
                    .get_or_insert_with(|| account.clone());
            }
        } else if let Some(action) = event_type.strip_prefix(SNS_EVENT_PREFIX) {
            let offer = LegacyMessage::parse(payload).and_then(|m| m.offer_identifier);
            if offer.is_some() {
                self.offer_id = offer;
            }
            match action {
                action::SUBSCRIBE_SUCCESS => self.purchased = true,
                action::SUBSCRIBE_FAIL => self.failed = true,
                action::UNSUBSCRIBE_PENDING => deprovisioned = true,
                action::UNSUBSCRIBE_SUCCESS => self.ended = true,
                _ => {}
            }
        } else if let Some(envelope) = Envelope::parse(payload.as_bytes()) {
            let detail = envelope.detail();
            if let Some(account) = detail.acceptor.map(|a| a.account_id)
                && !account.is_empty()
            {
                self.customer_aws_account_id = Some(account);
            }
            if let Some(agreement) = detail.agreement.map(|a| a.id)
                && !agreement.is_empty()
            {
                self.agreement_id = Some(agreement);
            }
            if let Some(offer) = detail.offer.map(|o| o.id)
                && !offer.is_empty()
            {
                self.offer_id = Some(offer);
            }
            match envelope.kind() {
                detail_type::LICENSE_UPDATED => self.purchased = true,
                detail_type::LICENSE_DEPROVISIONED => deprovisioned = true,
                _ => {}
            }
        }
        if deprovisioned {
            self.deprovisioned_at = Some(self.deprovisioned_at.map_or(at, |was| was.min(at)));
        }
    }

    /// The phase at `now`, `window` being the final metering window after
    /// deprovisioning.
    pub fn phase(&self, now: chrono::DateTime<chrono::Utc>, window: chrono::Duration) -> Phase {
        if self.failed && !self.purchased {
            Phase::Failed
        } else if self.ended {
            Phase::Inactive
        } else if let Some(at) = self.deprovisioned_at {
            if now >= at + window {
                Phase::Inactive
            } else {
                Phase::Deprovisioning
            }
        } else if self.purchased {
            Phase::Purchased
        } else {
            Phase::Unknown
        }
    }
}

/// The needle a license's events are looked up by: its trailing license
/// id, or the legacy customer identifier.
fn needle(license: &str) -> &str {
    license
        .trim()
        .rsplit(['/', ':'])
        .next()
        .filter(|tail| !tail.is_empty())
        .unwrap_or(license)
}

/// The recorded AWS events whose payload mentions `text` (oldest first).
async fn events_mentioning(services: &EventServices, text: &str) -> Result<Vec<event::Model>> {
    event::Entity::find()
        .filter(event::Column::Marketplace.eq(Marketplace::Aws.as_str()))
        .filter(event::Column::Payload.contains(text))
        .order_by_asc(event::Column::ReceivedAt)
        .order_by_asc(event::Column::Id)
        .all(services.accounts.db())
        .await
        .map_err(db_error)
}

/// The license a recorded event is about and the agreement it names, if
/// it is a license event (EventBridge) with both.
fn license_and_agreement(event_type: &str, payload: &str) -> Option<(String, String)> {
    if !matches!(
        event_type,
        detail_type::LICENSE_UPDATED | detail_type::LICENSE_DEPROVISIONED
    ) {
        return None;
    }
    let detail = Envelope::parse(payload.as_bytes())?.detail();
    let license = license_key(&detail.license?.arn);
    let agreement = detail.agreement?.id;
    (!license.is_empty() && !agreement.is_empty()).then_some((license, agreement))
}

impl AwsEvents {
    /// Everything the recorded events say about `license`.
    async fn facts(&self, services: &EventServices, license: &str) -> Result<LicenseFacts> {
        let mut facts = LicenseFacts::default();
        for recorded in events_mentioning(services, needle(license)).await? {
            let names_it = license_of(&recorded.event_type, &recorded.payload)
                .ok()
                .flatten()
                .is_some_and(|key| key == license || same_license(&key, license));
            if names_it {
                let at = recorded.occurred_at.unwrap_or(recorded.received_at);
                facts.add(&recorded.event_type, &recorded.payload, at);
            }
        }
        Ok(facts)
    }

    /// A subscription product's license: derives its phase from all its
    /// events and brings provisioning there.
    async fn subscription(&self, services: &EventServices, license: &str) -> Result<EventOutcome> {
        let provisioning = services
            .provisioning
            .as_ref()
            .ok_or_else(|| Error::unavailable("the provisioning service is not configured"))?;
        let facts = self.facts(services, license).await?;
        let phase = facts.phase(self.clock.now(), self.deprovisioning_window);
        let existing = match provisioning
            .get_subscription(provisioning_pb::GetSubscriptionRequest {
                selector: Some(
                    provisioning_pb::get_subscription_request::Selector::MarketplaceRef(
                        MarketplaceRef::new(ProtoMarketplace::Aws, license),
                    ),
                ),
            })
            .await
        {
            Ok(subscription) => Some(subscription),
            Err(error) if error.code() == ErrorCode::NotFound => None,
            Err(error) => return Err(error),
        };
        tracing::info!(aws.license = %license, phase = ?phase, known = existing.is_some(), "aws subscription license");
        let (state, marketplace_state, reason) = match phase {
            Phase::Unknown => return Ok(EventOutcome::Processed { account_id: None }),
            Phase::Failed if existing.is_none() => {
                tracing::info!(aws.license = %license, "subscription failed at AWS; nothing provisioned");
                return Ok(EventOutcome::Processed { account_id: None });
            }
            Phase::Failed => (
                provisioning_pb::SubscriptionState::Cancelled,
                "failed",
                "the subscription failed at AWS",
            ),
            Phase::Purchased => (
                provisioning_pb::SubscriptionState::Unspecified,
                "subscribed",
                "",
            ),
            Phase::Deprovisioning => (
                provisioning_pb::SubscriptionState::Cancelled,
                "deprovisioning",
                "deprovisioned at AWS",
            ),
            Phase::Inactive => (
                provisioning_pb::SubscriptionState::Cancelled,
                "inactive",
                "deprovisioned at AWS",
            ),
        };
        let ended = |s: &provisioning_pb::Subscription| {
            s.state == provisioning_pb::SubscriptionState::Cancelled as i32
                || s.state == provisioning_pb::SubscriptionState::Rejected as i32
        };
        if phase == Phase::Purchased && existing.as_ref().is_some_and(ended) {
            // Facts read before a concurrent end was recorded: the end stands.
            return Ok(EventOutcome::Processed {
                account_id: existing
                    .and_then(|s| AccountId::parse("accountId", &s.account_id).ok()),
            });
        }
        let account = self.account(services, license).await?;
        let base = self.describe(&account, license, &facts, existing.as_ref())?;
        if existing.is_none() {
            // Recorded as bought first, so an end that arrives together
            // with the purchase still ends a subscription.
            let mut created = base.clone();
            created.marketplace_state = "subscribed".to_owned();
            provisioning.upsert_subscription(created).await?;
        }
        let mut desired = base;
        desired.state = state as i32;
        desired.marketplace_state = marketplace_state.to_owned();
        desired.reason = reason.to_owned();
        let subscription = provisioning.upsert_subscription(desired).await?;
        if phase == Phase::Purchased
            && subscription.state == provisioning_pb::SubscriptionState::Requested as i32
        {
            // Read after the subscription is visible: a signup finished
            // before it was recorded is approved here, a later one by the
            // signup's own notification.
            let row = services
                .accounts
                .find(
                    services.accounts.db(),
                    Some(&AccountSelector::by_ref(ProtoMarketplace::Aws, license)),
                )
                .await?;
            if row.is_some_and(|row| row.signup_state == SignupState::Approved) {
                provisioning
                    .notify_account_approved(provisioning_pb::NotifyAccountApprovedRequest {
                        context: None,
                        account_id: account.as_str().to_owned(),
                    })
                    .await?;
            }
        }
        Ok(EventOutcome::Processed {
            account_id: Some(account),
        })
    }

    /// The license's account id, the account created (waiting for the
    /// signup) when the purchase is known before the registration.
    async fn account(&self, services: &EventServices, license: &str) -> Result<AccountId> {
        let selector = AccountSelector::by_ref(ProtoMarketplace::Aws, license);
        if let Some(row) = services
            .accounts
            .find(services.accounts.db(), Some(&selector))
            .await?
        {
            return AccountId::parse("accountId", &row.id);
        }
        let created = services
            .accounts
            .upsert(marketbridge_proto::account::v1::UpsertAccountRequest {
                marketplace_ref: Some(MarketplaceRef::new(ProtoMarketplace::Aws, license)),
                signup_required: true,
                ..Default::default()
            })
            .await?;
        AccountId::parse("accountId", &created.id)
    }

    /// The subscription as the license describes it (no state).
    fn describe(
        &self,
        account_id: &AccountId,
        license: &str,
        facts: &LicenseFacts,
        existing: Option<&provisioning_pb::Subscription>,
    ) -> Result<provisioning_pb::UpsertSubscriptionRequest> {
        let (product_id, plan_id) = match existing {
            Some(subscription) => (
                subscription.product_id.clone(),
                subscription.plan_id.clone(),
            ),
            None => self
                .subscription_plan
                .clone()
                .ok_or_else(|| Error::internal("no plan for aws subscriptions"))?,
        };
        let licensee = if license.starts_with("arn:") {
            facts
                .customer_aws_account_id
                .as_ref()
                .map(|account| Licensee::License {
                    license_arn: license.to_owned(),
                    customer_aws_account_id: account.clone(),
                })
        } else {
            Some(Licensee::Legacy {
                customer_identifier: license.to_owned(),
            })
        };
        let mut attributes = BTreeMap::new();
        attributes.insert("aws_product_type".to_owned(), "subscription".to_owned());
        if let Some(account) = &facts.customer_aws_account_id {
            attributes.insert("aws_customer_account_id".to_owned(), account.clone());
        }
        if let Some(agreement) = &facts.agreement_id {
            attributes.insert("aws_agreement_id".to_owned(), agreement.clone());
        }
        if let Some(offer) = &facts.offer_id {
            attributes.insert("aws_offer_id".to_owned(), offer.clone());
        }
        if let Some(at) = facts.deprovisioned_at {
            attributes.insert(
                "aws_deprovisioned_at".to_owned(),
                marketbridge_core::time::to_rfc3339(at),
            );
        }
        Ok(provisioning_pb::UpsertSubscriptionRequest {
            context: None,
            account_id: account_id.as_str().to_owned(),
            marketplace_ref: Some(MarketplaceRef::new(ProtoMarketplace::Aws, license)),
            product_id,
            plan_id,
            pending_plan_id: existing
                .map(|s| s.pending_plan_id.clone())
                .unwrap_or_default(),
            state: provisioning_pb::SubscriptionState::Unspecified as i32,
            scope: 0,
            marketplace_state: String::new(),
            marketplace_update_time: None,
            usage_reporting_id: licensee
                .map(|l| l.to_reporting_id())
                .or_else(|| existing.map(|s| s.usage_reporting_id.clone()))
                .unwrap_or_default(),
            order_id: String::new(),
            attributes,
            reason: String::new(),
        })
    }

    /// The licenses of an agreement: those whose license events name it,
    /// else (a renewal or replacement) those of the agreement it follows.
    async fn licenses_of_agreement(
        &self,
        services: &EventServices,
        agreement: &str,
    ) -> Result<BTreeSet<String>> {
        let mut seen = BTreeSet::new();
        let mut next = Some(agreement.to_owned());
        while let Some(agreement) = next.take() {
            if !seen.insert(agreement.clone()) || seen.len() > 20 {
                break;
            }
            let recorded = events_mentioning(services, &agreement).await?;
            let licenses: BTreeSet<String> = recorded
                .iter()
                .filter_map(|e| license_and_agreement(&e.event_type, &e.payload))
                .filter(|(_, of)| *of == agreement)
                .map(|(license, _)| license)
                .collect();
            if !licenses.is_empty() {
                return Ok(licenses);
            }
            next = recorded
                .iter()
                .filter_map(|e| Envelope::parse(e.payload.as_bytes()))
                .filter_map(|e| e.detail().agreement)
                .find(|a| a.id == agreement)
                .and_then(|a| a.previous_agreement_id)
                .filter(|previous| !previous.is_empty());
        }
        Ok(BTreeSet::new())
    }

    /// Acts on an agreement event; `None` for any other event.
    async fn agreement_event(
        &self,
        event: &event::Model,
        services: &EventServices,
    ) -> Result<Option<EventOutcome>> {
        if !matches!(
            event.event_type.as_str(),
            detail_type::AGREEMENT_AMENDED
                | detail_type::AGREEMENT_ENDED
                | detail_type::AGREEMENT_CREATED
        ) {
            return Ok(None);
        }
        let envelope = Envelope::parse(event.payload.as_bytes())
            .ok_or_else(|| Error::validation("unreadable EventBridge event"))?;
        let Some(agreement) = envelope.detail().agreement.filter(|a| !a.id.is_empty()) else {
            return Ok(Some(EventOutcome::Ignored));
        };
        let is_follow_up = agreement
            .previous_agreement_id
            .as_deref()
            .is_some_and(|previous| !previous.is_empty());
        if event.event_type == detail_type::AGREEMENT_CREATED && !is_follow_up {
            // A new purchase: its license event follows.
            tracing::info!(aws.agreement = %agreement.id, "aws agreement created; waiting for its license");
            return Ok(Some(EventOutcome::Ignored));
        }
        let licenses = self.licenses_of_agreement(services, &agreement.id).await?;
        if licenses.is_empty() {
            tracing::info!(aws.agreement = %agreement.id, event.type = %event.event_type, "no license known for this aws agreement yet");
            return Ok(Some(EventOutcome::Ignored));
        }
        let mut account_id = None;
        for license in &licenses {
            let outcome = if event.event_type == detail_type::AGREEMENT_ENDED {
                self.agreement_ended(
                    services,
                    license,
                    &agreement.id,
                    agreement.status.as_deref(),
                )
                .await?
            } else if self.product_type == AwsProductType::Subscription {
                self.subscription(services, license).await?
            } else {
                sync_license(services, license).await?
            };
            if let EventOutcome::Processed {
                account_id: Some(id),
            } = outcome
            {
                account_id = Some(id);
            }
        }
        Ok(Some(EventOutcome::Processed { account_id }))
    }

    /// Records on the license's subscription that its agreement ended.
    /// Metering goes on: the license events say when it stops.
    async fn agreement_ended(
        &self,
        services: &EventServices,
        license: &str,
        agreement: &str,
        status: Option<&str>,
    ) -> Result<EventOutcome> {
        let provisioning = services
            .provisioning
            .as_ref()
            .ok_or_else(|| Error::unavailable("the provisioning service is not configured"))?;
        let subscription = match provisioning
            .get_subscription(provisioning_pb::GetSubscriptionRequest {
                selector: Some(
                    provisioning_pb::get_subscription_request::Selector::MarketplaceRef(
                        MarketplaceRef::new(ProtoMarketplace::Aws, license),
                    ),
                ),
            })
            .await
        {
            Ok(subscription) => subscription,
            Err(error) if error.code() == ErrorCode::NotFound => {
                return Ok(EventOutcome::Processed { account_id: None });
            }
            Err(error) => return Err(error),
        };
        let mut attributes = BTreeMap::new();
        attributes.insert(
            format!("aws_agreement_ended.{agreement}"),
            status.unwrap_or("ENDED").to_owned(),
        );
        provisioning
            .upsert_subscription(provisioning_pb::UpsertSubscriptionRequest {
                context: None,
                account_id: subscription.account_id.clone(),
                marketplace_ref: Some(MarketplaceRef::new(ProtoMarketplace::Aws, license)),
                product_id: subscription.product_id.clone(),
                plan_id: subscription.plan_id.clone(),
                pending_plan_id: subscription.pending_plan_id.clone(),
                state: provisioning_pb::SubscriptionState::Unspecified as i32,
                scope: 0,
                marketplace_state: String::new(),
                marketplace_update_time: None,
                usage_reporting_id: subscription.usage_reporting_id.clone(),
                order_id: String::new(),
                attributes,
                reason: String::new(),
            })
            .await?;
        Ok(EventOutcome::Processed {
            account_id: AccountId::parse("accountId", &subscription.account_id).ok(),
        })
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

    #[test]
    fn a_subscription_phase_ignores_order_and_duplicates() {
        let at =
            |m: i64| chrono::DateTime::from_timestamp(1_795_000_000 + m * 60, 0).expect("a time");
        let event = |kind: &str| {
            serde_json::json!({"version":"0","id":"e","detail-type":format!("{kind} - Manufacturer"),
                "source":"aws.agreement-marketplace","detail":{"agreement":{"id":"agmt-1"},
                "license":{"arn":"aws:license-manager::1:license:l-1"},"acceptor":{"accountId":"012345678901"}}})
            .to_string()
        };
        let updated = event("License Updated");
        let deprovisioned = event("License Deprovisioned");
        let window = chrono::Duration::minutes(60);
        let in_order = [
            ("License Updated", updated.as_str(), at(0)),
            ("License Deprovisioned", deprovisioned.as_str(), at(30)),
        ];
        let mut facts = LicenseFacts::default();
        for (kind, payload, when) in in_order {
            facts.add(kind, payload, when);
        }
        let mut shuffled = LicenseFacts::default();
        for (kind, payload, when) in in_order.iter().rev().chain(in_order.iter()) {
            shuffled.add(kind, payload, *when);
        }
        assert_eq!(facts, shuffled);
        assert_eq!(facts.phase(at(40), window), Phase::Deprovisioning);
        assert_eq!(facts.phase(at(90), window), Phase::Inactive);
        assert_eq!(
            facts.customer_aws_account_id.as_deref(),
            Some("012345678901")
        );
        assert_eq!(facts.agreement_id.as_deref(), Some("agmt-1"));

        let fail = r#"{"action":"subscribe-fail","customer-identifier":"c","product-code":"p"}"#;
        let mut failed = LicenseFacts::default();
        failed.add("sns.subscribe-fail", fail, at(0));
        assert_eq!(failed.phase(at(1), window), Phase::Failed);
        let mut registered = LicenseFacts::default();
        registered.add(
            PURCHASE_RESOLVED,
            r#"{"account_external_id":"c","subscription_external_id":"c"}"#,
            at(0),
        );
        assert_eq!(registered.phase(at(1), window), Phase::Unknown);
    }
}
