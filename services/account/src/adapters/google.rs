//! Google Cloud Marketplace in the account service: procurement accounts
//! (approve, reject, reset, read), the processing of Marketplace
//! notifications, the Pub/Sub pull worker, and the periodic reconciliation of
//! accounts.
//!
//! Notifications are hints. Account events re-read the account from the
//! Procurement API and store what it says (older `updateTime`s are ignored
//! by the domain); an account Google no longer has is deleted, its personal
//! data purged and its resources deprovisioned. Entitlement events hand the
//! entitlement id to provisioning, which re-reads and acts.

use crate::domain::AccountDomain;
use crate::entity::{account, event};
use crate::marketplace::{
    AccountMarketplace, AccountSnapshot, EventOutcome, EventProcessor, EventServices,
    MarketplaceWorker, Marketplaces,
};
use crate::model::{AccountKey, ExternalId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marketbridge_config::Config;
use marketbridge_core::crypto::SecretString;
use marketbridge_core::ids::AccountId;
use marketbridge_core::time::{SharedClock, to_timestamp};
use marketbridge_core::{Error, ErrorCode, Marketplace, Result};
use marketbridge_google::GoogleClients;
use marketbridge_google::notification::{Notification, decode_message, event_type};
use marketbridge_google::procurement::{self, Account, ProcurementClient, approval_state};
use marketbridge_google::pubsub::PubsubClient;
use marketbridge_proto::account::v1 as pb;
use marketbridge_proto::common::v1::{
    AccountSelector, Marketplace as ProtoMarketplace, MarketplaceRef,
};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Channel name of notifications pulled from the subscription.
pub const PULL_CHANNEL: &str = "pubsub_pull";
/// Messages asked for per pull.
const PULL_BATCH: u32 = 100;
/// Pause between pulls when the subscription was empty.
const IDLE_PULL_PAUSE: Duration = Duration::from_secs(1);
/// A batch running longer than this gets its ack deadline extended.
const EXTEND_DEADLINE_AFTER: Duration = Duration::from_secs(5);
/// How far each extension moves the ack deadline, in seconds.
const DEADLINE_EXTENSION_SECONDS: u32 = 60;

/// Registers the Google adapter, event processor and workers when
/// `google.provider_id` is set.
pub fn register(
    marketplaces: Marketplaces,
    config: &Config,
    clock: SharedClock,
) -> Result<Marketplaces> {
    let Some(clients) = GoogleClients::from_config(config, clock)? else {
        return Ok(marketplaces);
    };
    let procurement = clients.procurement().clone();
    let accounts = Arc::new(GoogleAccounts {
        procurement: procurement.clone(),
    });
    let events = Arc::new(GoogleEvents {
        sync: AccountSync {
            procurement: procurement.clone(),
        },
        provider_id: procurement.provider_id().to_owned(),
    });
    let mut marketplaces = marketplaces
        .with_adapter(Marketplace::Google, accounts)
        .with_processor(Marketplace::Google, events)
        .with_worker(Arc::new(GoogleAccountReconciliation {
            sync: AccountSync { procurement },
            interval: Duration::from_secs(config.google.reconcile_interval_seconds.max(1)),
        }));
    if let Some(pubsub) = clients.pubsub() {
        marketplaces = marketplaces.with_worker(Arc::new(GooglePull::new(pubsub.clone())));
    }
    Ok(marketplaces)
}

fn google_ref(external_id: &ExternalId) -> MarketplaceRef {
    MarketplaceRef::new(ProtoMarketplace::Google, external_id.as_str())
}

fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// What we keep of a procurement account; `None` when Google considers it
/// deleted (no `signup` approval).
pub fn snapshot_of(account: &Account) -> Option<AccountSnapshot> {
    let signup = account.signup_approval()?;
    let signup_state = match signup.state.as_str() {
        approval_state::APPROVED => pb::SignupState::Approved,
        approval_state::REJECTED => pb::SignupState::Rejected,
        _ => pb::SignupState::Pending,
    };
    let mut attributes = BTreeMap::new();
    if let Some(provider) = account.provider.as_deref().filter(|p| !p.is_empty()) {
        attributes.insert("google_provider".to_owned(), provider.to_owned());
    }
    if let Some(parent) = account
        .reseller_parent_billing_account
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        attributes.insert(
            "reseller_parent_billing_account".to_owned(),
            parent.to_owned(),
        );
    }
    if let Some(reason) = signup.reason.as_deref().filter(|r| !r.is_empty()) {
        attributes.insert("google_signup_reason".to_owned(), reason.to_owned());
    }
    Some(AccountSnapshot {
        display_name: None,
        url: None,
        contact: None,
        marketplace_state: account
            .state
            .clone()
            .unwrap_or_else(|| procurement::account_state::ACTIVE.to_owned()),
        update_time: parse_time(account.update_time.as_deref()),
        signup: Some(signup_state),
        attributes,
    })
}

/// Calls the account service makes to Google about an account.
pub struct GoogleAccounts {
    procurement: ProcurementClient,
}

#[async_trait]
impl AccountMarketplace for GoogleAccounts {
    async fn approve_signup(&self, account: &account::Model) -> Result<()> {
        match self.procurement.approve_account(&account.external_id).await {
            Ok(()) => Ok(()),
            Err(error) if procurement::is_precondition_failure(&error) => {
                let approved = self
                    .procurement
                    .get_account(&account.external_id)
                    .await?
                    .and_then(|a| a.signup_approval().map(|s| s.state.clone()))
                    .is_some_and(|state| state == approval_state::APPROVED);
                if approved { Ok(()) } else { Err(error) }
            }
            Err(error) => Err(error),
        }
    }

    async fn reject_signup(&self, account: &account::Model, reason: &str) -> Result<()> {
        self.procurement
            .reject_account(&account.external_id, reason)
            .await
    }

    async fn reset(&self, account: &account::Model) -> Result<()> {
        self.procurement.reset_account(&account.external_id).await
    }

    async fn fetch(
        &self,
        account: &account::Model,
        _credential: Option<&SecretString>,
    ) -> Result<Option<AccountSnapshot>> {
        Ok(self
            .procurement
            .get_account(&account.external_id)
            .await?
            .as_ref()
            .and_then(snapshot_of))
    }
}

/// Brings our record of one procurement account in line with Google's.
struct AccountSync {
    procurement: ProcurementClient,
}

impl AccountSync {
    /// Re-reads the account and applies it; returns our account id when
    /// there is (or was) one.
    async fn refresh(
        &self,
        services: &EventServices,
        external_id: &ExternalId,
    ) -> Result<Option<AccountId>> {
        let fetched = self.procurement.get_account(external_id.as_str()).await?;
        self.apply(services, external_id, fetched.as_ref()).await
    }

    /// Applies what Google said about an account (`None`: it is gone).
    async fn apply(
        &self,
        services: &EventServices,
        external_id: &ExternalId,
        fetched: Option<&Account>,
    ) -> Result<Option<AccountId>> {
        let domain = &services.accounts;
        let key = AccountKey::Ref(Marketplace::Google, external_id.clone());
        let known = domain.find_key(domain.db(), &key).await?;
        let snapshot = fetched.and_then(snapshot_of);
        match (known, snapshot) {
            (Some(row), Some(snapshot)) => {
                let account_id = row.account_id()?;
                domain.apply_snapshot(&account_id, snapshot).await?;
                Ok(Some(account_id))
            }
            (None, Some(snapshot)) => {
                let account = domain
                    .upsert(upsert_from_snapshot(external_id, snapshot))
                    .await?;
                tracing::info!(account.id = %account.id, google.account = %external_id, "google account recorded");
                Ok(Some(AccountId::parse("account.id", &account.id)?))
            }
            (Some(row), None) => {
                account_gone(services, &row).await?;
                Ok(Some(row.account_id()?))
            }
            (None, None) => Ok(None),
        }
    }
}

fn upsert_from_snapshot(
    external_id: &ExternalId,
    snapshot: AccountSnapshot,
) -> pb::UpsertAccountRequest {
    pb::UpsertAccountRequest {
        marketplace_ref: Some(google_ref(external_id)),
        signup_required: true,
        marketplace_state: snapshot.marketplace_state,
        marketplace_update_time: snapshot.update_time.map(to_timestamp),
        attributes: snapshot.attributes.into_iter().collect(),
        marketplace_signup_state: snapshot.signup.map(|s| s as i32).unwrap_or_default(),
        ..Default::default()
    }
}

/// Google deleted the account: delete ours for good with its personal data;
/// a job committed with the deletion ends its subscriptions and
/// deprovisions its resources. Idempotent.
async fn account_gone(services: &EventServices, row: &account::Model) -> Result<()> {
    let domain: &AccountDomain = &services.accounts;
    domain
        .delete(
            &AccountKey::Id(row.account_id()?),
            pb::DeleteAccountRequest {
                context: None,
                account: Some(AccountSelector::by_id(&row.id)),
                reason: "deleted at Google Cloud Marketplace".into(),
                finalized: true,
                purge: true,
                end_subscriptions: true,
            },
        )
        .await?;
    tracing::info!(account.id = %row.id, "google account deleted and purged");
    Ok(())
}

/// Processes recorded Google notifications.
pub struct GoogleEvents {
    sync: AccountSync,
    provider_id: String,
}

#[async_trait]
impl EventProcessor for GoogleEvents {
    async fn process(
        &self,
        event: &event::Model,
        services: &EventServices,
    ) -> Result<EventOutcome> {
        let notification = Notification::from_json(&event.payload)?;
        if let Some(provider) = notification.provider_id.as_deref()
            && !provider.is_empty()
            && provider != self.provider_id
        {
            tracing::warn!(event.id = %event.id, provider = %provider, "notification for another provider; ignored");
            return Ok(EventOutcome::Ignored);
        }
        let kind = event.event_type.as_str();
        if event_type::is_account_event(kind) {
            let external_id = notification.account_id().ok_or_else(|| {
                Error::invalid_field("account.id", "an account event names no account")
            })?;
            let account_id = self
                .sync
                .refresh(services, &ExternalId::new(external_id))
                .await?;
            return Ok(EventOutcome::Processed { account_id });
        }
        if event_type::is_entitlement_event(kind) {
            let external_id = notification.entitlement_id().ok_or_else(|| {
                Error::invalid_field(
                    "entitlement.id",
                    "an entitlement event names no entitlement",
                )
            })?;
            return sync_entitlement(
                services,
                &ExternalId::new(external_id),
                kind == event_type::ENTITLEMENT_OFFER_ACCEPTED,
            )
            .await;
        }
        Ok(EventOutcome::Ignored)
    }
}

/// Hands an entitlement to provisioning, which re-reads it and acts.
async fn sync_entitlement(
    services: &EventServices,
    entitlement_id: &ExternalId,
    approved_by_marketplace: bool,
) -> Result<EventOutcome> {
    let Some(provisioning) = &services.provisioning else {
        return Err(Error::unavailable(
            "the provisioning service is not configured",
        ));
    };
    let synced = provisioning
        .sync_subscription(provisioning_pb::SyncSubscriptionRequest {
            context: None,
            marketplace_ref: Some(google_ref(entitlement_id)),
            approved_by_marketplace,
        })
        .await;
    match synced {
        Ok(subscription) => Ok(EventOutcome::Processed {
            account_id: AccountId::parse("accountId", &subscription.account_id).ok(),
        }),
        Err(error) if error.code() == ErrorCode::NotFound => {
            tracing::info!(google.entitlement = %entitlement_id, "entitlement unknown here and gone at Google");
            Ok(EventOutcome::Processed { account_id: None })
        }
        Err(error) => Err(error),
    }
}

/// Pulls notifications from the configured subscription, records each one
/// (channel `pubsub_pull`) and acknowledges only what was recorded.
pub struct GooglePull {
    pubsub: PubsubClient,
    extend_after: Duration,
}

impl GooglePull {
    /// A worker pulling from `pubsub`.
    pub fn new(pubsub: PubsubClient) -> Self {
        Self {
            pubsub,
            extend_after: EXTEND_DEADLINE_AFTER,
        }
    }

    /// Extends the ack deadline of a batch once it has run this long.
    pub fn extend_deadline_after(mut self, after: Duration) -> Self {
        self.extend_after = after;
        self
    }
}

#[async_trait]
impl MarketplaceWorker for GooglePull {
    fn name(&self) -> &'static str {
        "google.pull"
    }

    fn first_delay(&self) -> Duration {
        Duration::ZERO
    }

    fn pause_after(&self, done: usize) -> Duration {
        if done > 0 {
            Duration::ZERO
        } else {
            IDLE_PULL_PAUSE
        }
    }

    async fn run_once(&self, services: &EventServices) -> Result<usize> {
        let received = self.pubsub.pull(PULL_BATCH).await?;
        if received.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let mut extended_at = started;
        let mut acknowledged = Vec::with_capacity(received.len());
        for (index, item) in received.iter().enumerate() {
            if extended_at.elapsed() >= self.extend_after {
                let remaining: Vec<String> =
                    received[index..].iter().map(|r| r.ack_id.clone()).collect();
                if let Err(error) = self
                    .pubsub
                    .modify_ack_deadline(&remaining, DEADLINE_EXTENSION_SECONDS)
                    .await
                {
                    tracing::warn!(error = %error, "extending the ack deadline failed");
                }
                extended_at = Instant::now();
            }
            let decoded = match decode_message(&item.message) {
                Ok(decoded) => decoded,
                Err(error) => {
                    tracing::warn!(message.id = item.message.id().unwrap_or_default(), error = %error, "unreadable pulled message acknowledged and dropped");
                    acknowledged.push(item.ack_id.clone());
                    continue;
                }
            };
            let recorded = services
                .accounts
                .record_event(pb::RecordMarketplaceEventRequest {
                    marketplace: ProtoMarketplace::Google as i32,
                    external_id: decoded.event_id.clone(),
                    event_type: decoded.event_type.clone(),
                    payload_json: decoded.payload_json.clone(),
                    occurred_at: decoded.published_at.map(to_timestamp),
                    channel: PULL_CHANNEL.to_owned(),
                })
                .await;
            match recorded {
                Ok(_) => acknowledged.push(item.ack_id.clone()),
                Err(error) if error.code() == ErrorCode::Validation => {
                    tracing::warn!(event.external_id = %decoded.event_id, error = %error, "invalid pulled notification acknowledged and dropped");
                    acknowledged.push(item.ack_id.clone());
                }
                Err(error) => {
                    tracing::warn!(event.external_id = %decoded.event_id, error = %error, "recording a pulled notification failed; it will be redelivered");
                }
            }
        }
        self.pubsub.acknowledge(&acknowledged).await?;
        tracing::debug!(
            pulled = received.len(),
            acknowledged = acknowledged.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pulled notifications recorded"
        );
        Ok(received.len())
    }
}

/// Re-reads every procurement account on a timer and repairs what lost
/// notifications missed: new accounts, changed approvals, deletions.
pub struct GoogleAccountReconciliation {
    sync: AccountSync,
    interval: Duration,
}

#[async_trait]
impl MarketplaceWorker for GoogleAccountReconciliation {
    fn name(&self) -> &'static str {
        "google.reconcile_accounts"
    }

    fn first_delay(&self) -> Duration {
        self.interval
    }

    fn pause_after(&self, _done: usize) -> Duration {
        self.interval
    }

    async fn run_once(&self, services: &EventServices) -> Result<usize> {
        let listed = self.sync.procurement.list_all_accounts().await?;
        let mut seen = std::collections::BTreeSet::new();
        let mut count = 0;
        for account in &listed {
            let external_id = ExternalId::new(account.id());
            if external_id.is_empty() {
                continue;
            }
            seen.insert(external_id.clone());
            match self.sync.apply(services, &external_id, Some(account)).await {
                Ok(_) => count += 1,
                Err(error) => {
                    tracing::warn!(google.account = %external_id, error = %error, "reconciling an account failed")
                }
            }
        }
        for row in active_google_accounts(&services.accounts).await? {
            let external_id = ExternalId::new(
                row.marketplace_ref
                    .as_ref()
                    .map(|r| r.external_id.clone())
                    .unwrap_or_default(),
            );
            if external_id.is_empty() || seen.contains(&external_id) {
                continue;
            }
            match self.sync.refresh(services, &external_id).await {
                Ok(_) => count += 1,
                Err(error) => {
                    tracing::warn!(account.id = %row.id, error = %error, "reconciling an account failed")
                }
            }
        }
        tracing::info!(accounts = count, "google accounts reconciled");
        Ok(count)
    }
}

/// Our Google accounts that are not deleted.
async fn active_google_accounts(domain: &AccountDomain) -> Result<Vec<pb::Account>> {
    let mut accounts = Vec::new();
    let mut token = String::new();
    loop {
        let page = domain
            .list(pb::ListAccountsRequest {
                marketplace: ProtoMarketplace::Google as i32,
                state: pb::AccountState::Active as i32,
                page: Some(marketbridge_proto::common::v1::PageRequest {
                    page_size: 200,
                    page_token: token.clone(),
                }),
            })
            .await?;
        accounts.extend(page.accounts);
        match page
            .page
            .map(|p| p.next_page_token)
            .filter(|t| !t.is_empty())
        {
            Some(next) => token = next,
            None => return Ok(accounts),
        }
    }
}
