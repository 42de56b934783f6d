//! Subscriptions and their state machine: requested → approved → active ⇄
//! pending plan change / pending cancellation → cancelled (or rejected).
//! Entering a usable state provisions, leaving for good deprovisions, and
//! every change is passed on to billing.

use super::{ProvisioningDomain, context_key};
use crate::convert::{
    from_json, marketplace_of, scope, state_from_proto, subscription_to_proto, to_json,
};
use crate::entity::subscription;
use crate::jobs::{self, kind};
use crate::marketplace::{SubscriptionSnapshot, state};
use chrono::{DateTime, Utc};
use marketbridge_core::ids::{AccountId, SubscriptionId};
use marketbridge_core::time::from_optional_timestamp;
use marketbridge_core::{Error, Marketplace, Result, Validator};
use marketbridge_proto::common::v1::{AccountSelector, MarketplaceRef};
use marketbridge_proto::provisioning::v1 as pb;
use marketbridge_storage::db_error;
use marketbridge_storage::idempotent_txn;
use marketbridge_storage::outbox::{NewJob, truncate_micros};
use marketbridge_storage::paging::Page;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};
use std::collections::BTreeMap;

/// A subscription as someone wants it to be.
#[derive(Debug, Clone, Default)]
pub(crate) struct Desired {
    pub account_id: String,
    pub marketplace: Option<Marketplace>,
    pub external_id: String,
    pub product_id: String,
    pub plan_id: String,
    pub pending_plan_id: String,
    pub state: Option<&'static str>,
    pub scope: Option<&'static str>,
    pub marketplace_state: String,
    pub update_time: Option<DateTime<Utc>>,
    pub usage_reporting_id: String,
    pub order_id: String,
    pub attributes: BTreeMap<String, String>,
    pub reason: String,
}

impl ProvisioningDomain {
    async fn find_by_ref(
        &self,
        conn: &impl ConnectionTrait,
        marketplace: Marketplace,
        external_id: &str,
    ) -> Result<Option<subscription::Model>> {
        subscription::Entity::find()
            .filter(subscription::Column::Marketplace.eq(marketplace.as_str()))
            .filter(subscription::Column::ExternalId.eq(external_id))
            // Writers re-read the row they change under a lock (`FOR UPDATE`
            // on PostgreSQL; SQLite write transactions are serial).
            .lock_exclusive()
            .one(conn)
            .await
            .map_err(db_error)
    }

    async fn to_proto(
        &self,
        conn: &impl ConnectionTrait,
        row: &subscription::Model,
    ) -> Result<pb::Subscription> {
        let ids = self.resource_ids_of(conn, &row.id).await?;
        Ok(subscription_to_proto(row, ids))
    }

    /// Creates or updates a subscription as `desired` says, in `conn`, with
    /// the effects of its state change. Returns `None` when `desired` is older
    /// than what is stored.
    pub(crate) async fn apply_desired(
        &self,
        conn: &impl ConnectionTrait,
        desired: Desired,
    ) -> Result<Option<subscription::Model>> {
        let marketplace = desired
            .marketplace
            .ok_or_else(|| Error::invalid_field("marketplaceRef", "is required"))?;
        let now = self.now();
        let existing = self
            .find_by_ref(conn, marketplace, &desired.external_id)
            .await?;
        if let (Some(row), Some(incoming)) = (&existing, desired.update_time)
            && row
                .marketplace_update_time
                .is_some_and(|stored| incoming < stored)
        {
            tracing::info!(subscription.id = %row.id, "ignoring a stale subscription description");
            return Ok(None);
        }
        let before = existing.clone();
        let mut row = match existing {
            Some(row) => row,
            None => {
                let mut validator = Validator::new();
                validator.require("productId", &desired.product_id);
                validator.require("planId", &desired.plan_id);
                validator.finish()?;
                let row = subscription::Model {
                    id: SubscriptionId::generate().into_string(),
                    account_id: desired.account_id.clone(),
                    marketplace: marketplace.as_str().to_owned(),
                    external_id: desired.external_id.clone(),
                    product_id: desired.product_id.clone(),
                    plan_id: desired.plan_id.clone(),
                    pending_plan_id: String::new(),
                    state: state::REQUESTED.to_owned(),
                    scope: desired.scope.unwrap_or(scope::ACCOUNT).to_owned(),
                    marketplace_state: String::new(),
                    marketplace_update_time: None,
                    usage_reporting_id: String::new(),
                    order_id: String::new(),
                    awaiting_account_approval: false,
                    reason: String::new(),
                    attributes: "{}".to_owned(),
                    version: 0,
                    created_at: now,
                    updated_at: now,
                    started_at: None,
                    ended_at: None,
                };
                let inserted = subscription::Entity::insert(row.clone().into_active_model())
                    .on_conflict(
                        OnConflict::columns([
                            subscription::Column::Marketplace,
                            subscription::Column::ExternalId,
                        ])
                        .do_nothing()
                        .to_owned(),
                    )
                    .exec_without_returning(conn)
                    .await
                    .map_err(db_error)?;
                if inserted == 0 {
                    return Err(Error::unavailable(
                        "subscription recorded concurrently; retry",
                    ));
                }
                row
            }
        };
        if !desired.product_id.is_empty() {
            row.product_id = desired.product_id.clone();
        }
        if !desired.plan_id.is_empty() {
            row.plan_id = desired.plan_id.clone();
        }
        row.pending_plan_id = desired.pending_plan_id.clone();
        if let Some(new_state) = desired.state {
            // "Requested" from a marketplace that has not activated yet does
            // not undo our approval.
            let undoes_approval = new_state == state::REQUESTED && row.state == state::APPROVED;
            if !undoes_approval {
                row.state = new_state.to_owned();
            }
        }
        if let Some(new_scope) = desired.scope {
            row.scope = new_scope.to_owned();
        }
        if !desired.marketplace_state.is_empty() {
            row.marketplace_state = desired.marketplace_state.clone();
        }
        if desired.update_time.is_some() {
            row.marketplace_update_time = desired.update_time;
        }
        if !desired.usage_reporting_id.is_empty() {
            row.usage_reporting_id = desired.usage_reporting_id.clone();
        }
        if !desired.order_id.is_empty() {
            row.order_id = desired.order_id.clone();
        }
        if !desired.reason.is_empty() {
            row.reason = desired.reason.clone();
        }
        if !desired.attributes.is_empty() {
            let mut attributes: BTreeMap<String, String> = from_json(&row.attributes);
            attributes.extend(desired.attributes.clone());
            row.attributes = to_json(&attributes);
        }
        self.save_with_effects(conn, before.as_ref(), row)
            .await
            .map(Some)
    }

    /// Stores `row` (a changed copy of `before`) and carries out what its
    /// state change implies: provisioning on activation, plan changes on
    /// resources, deprovisioning on cancellation, and telling billing.
    pub(crate) async fn save_with_effects(
        &self,
        conn: &impl ConnectionTrait,
        before: Option<&subscription::Model>,
        mut row: subscription::Model,
    ) -> Result<subscription::Model> {
        let now = self.now();
        let was_usable = before.is_some_and(Self::is_usable);
        let was_final = before.is_some_and(|b| state::is_final(&b.state));
        let usable = Self::is_usable(&row);
        if usable && !was_usable && row.started_at.is_none() {
            row.started_at = Some(now);
        }
        if state::is_final(&row.state) && !was_final {
            row.ended_at = Some(now);
            row.awaiting_account_approval = false;
        }
        if usable {
            row.awaiting_account_approval = false;
        }
        let changed = before.is_none_or(|b| {
            b.state != row.state
                || b.plan_id != row.plan_id
                || b.pending_plan_id != row.pending_plan_id
                || b.usage_reporting_id != row.usage_reporting_id
        });
        if changed {
            row.version += 1;
        }
        row.updated_at = now;
        row.clone()
            .into_active_model()
            .reset_all()
            .update(conn)
            .await
            .map_err(db_error)?;

        if let Some(before) = before
            && before.plan_id != row.plan_id
        {
            for mut resource in self.live_resources_of_subscription(conn, &row.id).await? {
                resource.plan_id = row.plan_id.clone();
                resource.updated_at = now;
                resource
                    .clone()
                    .into_active_model()
                    .reset_all()
                    .update(conn)
                    .await
                    .map_err(db_error)?;
                self.enqueue(
                    conn,
                    NewJob::new(kind::APPLY_PLAN, &jobs::ResourceJob::plain(&resource.id))?,
                )
                .await?;
            }
        }
        if usable
            && !was_usable
            && row.scope == scope::ACCOUNT
            && self.account_subscription_gets_resource(&row)?
        {
            self.provision_for_subscription(conn, &row).await?;
        }
        if state::is_final(&row.state) && !was_final {
            for resource in self.live_resources_of_subscription(conn, &row.id).await? {
                self.delete_in(conn, resource).await?;
            }
        }
        if changed {
            tracing::info!(subscription.id = %row.id, state = %row.state, plan = %row.plan_id, "subscription changed");
            self.enqueue_billing_change(conn, &row).await?;
        }
        Ok(row)
    }

    /// Whether an account-scoped subscription of this marketplace gets a
    /// resource of its own when it becomes usable (its adapter decides;
    /// without one it does).
    fn account_subscription_gets_resource(&self, row: &subscription::Model) -> Result<bool> {
        let marketplace = marketplace_of(&row.marketplace)?;
        Ok(self
            .marketplaces
            .adapter(marketplace)
            .is_none_or(|adapter| adapter.provisions_account_subscriptions()))
    }

    /// Records a subscription as a marketplace describes it.
    pub async fn upsert_subscription(
        &self,
        request: pb::UpsertSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let (marketplace, external_id) = parse_ref(request.marketplace_ref.as_ref())?;
        let desired = Desired {
            account_id: account_id.into_string(),
            marketplace: Some(marketplace),
            external_id,
            product_id: request.product_id.clone(),
            plan_id: request.plan_id.clone(),
            pending_plan_id: request.pending_plan_id.clone(),
            state: pb::SubscriptionState::try_from(request.state)
                .ok()
                .and_then(state_from_proto),
            scope: match pb::SubscriptionScope::try_from(request.scope).unwrap_or_default() {
                pb::SubscriptionScope::Resource => Some(scope::RESOURCE),
                pb::SubscriptionScope::Account => Some(scope::ACCOUNT),
                pb::SubscriptionScope::Unspecified => None,
            },
            marketplace_state: request.marketplace_state.clone(),
            update_time: from_optional_timestamp(
                "marketplaceUpdateTime",
                request.marketplace_update_time.as_ref(),
            )?
            .map(truncate_micros),
            usage_reporting_id: request.usage_reporting_id.clone(),
            order_id: request.order_id.clone(),
            attributes: request.attributes.clone().into_iter().collect(),
            reason: request.reason.clone(),
        };
        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.UpsertSubscription",
            &key,
            &request,
            self.now()
        );
        let row = match self.apply_desired(&*txn, desired.clone()).await? {
            Some(row) => row,
            None => self
                .find_by_ref(&*txn, marketplace, &desired.external_id)
                .await?
                .ok_or_else(|| Error::internal("stale subscription vanished"))?,
        };
        let response = self.to_proto(&*txn, &row).await?;
        let response = txn.finish(response).await?;
        self.outbox.wake();
        Ok(response)
    }

    /// Re-reads a subscription from its marketplace and applies it, then
    /// does what the provider owes (approvals).
    pub async fn sync_subscription(
        &self,
        request: pb::SyncSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        let (marketplace, external_id) = parse_ref(request.marketplace_ref.as_ref())?;
        let adapter = self
            .marketplaces
            .adapter(marketplace)
            .ok_or_else(|| {
                Error::unprocessable(format!(
                    "subscriptions of {marketplace} cannot be synchronised"
                ))
            })?
            .clone();
        let snapshot = adapter.fetch_subscription(&external_id).await?;
        let Some(snapshot) = snapshot else {
            return self.gone_at_marketplace(marketplace, &external_id).await;
        };
        let account = self
            .account_or_create(marketplace, &snapshot.account_external_id)
            .await?;
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        let desired = desired_from_snapshot(&account.id, marketplace, &external_id, &snapshot);
        let row = match self.apply_desired(&txn, desired).await? {
            Some(row) => row,
            None => self
                .find_by_ref(&txn, marketplace, &external_id)
                .await?
                .ok_or_else(|| Error::internal("stale subscription vanished"))?,
        };
        let row = if row.state == state::REQUESTED && request.approved_by_marketplace {
            tracing::info!(subscription.id = %row.id, "approved by the marketplace itself");
            let before = row.clone();
            let mut approved = row;
            approved.state = state::APPROVED.to_owned();
            self.save_with_effects(&txn, Some(&before), approved)
                .await?
        } else if row.state == state::REQUESTED && !row.awaiting_account_approval {
            self.start_approval(&txn, row, account.signup_done).await?
        } else {
            row
        };
        if snapshot.plan_change_needs_approval && !row.pending_plan_id.is_empty() {
            match self.plan_change_rejection_reason(&row) {
                None => self.enqueue_plan_change(&txn, &row, true, "").await?,
                Some(reason) => {
                    tracing::info!(subscription.id = %row.id, reason = %reason, "rejecting a plan change by provider rule");
                    self.enqueue_plan_change(&txn, &row, false, &reason).await?
                }
            }
        }
        let response = self.to_proto(&txn, &row).await?;
        txn.commit().await.map_err(db_error)?;
        self.outbox.wake();
        if row.state == state::REQUESTED && row.awaiting_account_approval {
            return self
                .recheck_account_approval(&row.id, &account.id, response)
                .await;
        }
        Ok(response)
    }

    /// A subscription committed as waiting for its account's signup: reads
    /// the account again now that the subscription is visible. Either the
    /// signup finished in between (this starts the approval), or it finishes
    /// later and `NotifyAccountApproved` finds the subscription. Without this
    /// second read, a signup completed between the first read and the commit
    /// (on another replica) would leave the subscription waiting for good.
    async fn recheck_account_approval(
        &self,
        subscription_id: &str,
        account_id: &str,
        waiting: pb::Subscription,
    ) -> Result<pb::Subscription> {
        let account = self.account(AccountSelector::by_id(account_id)).await?;
        if !account.signup_done {
            return Ok(waiting);
        }
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        let Some(row) = self.load_subscription(&txn, subscription_id).await? else {
            return Ok(waiting);
        };
        if row.state != state::REQUESTED || !row.awaiting_account_approval {
            return Ok(waiting);
        }
        tracing::info!(subscription.id = %row.id, "the account's signup finished meanwhile; approving");
        let row = self.start_approval(&txn, row, true).await?;
        let response = self.to_proto(&txn, &row).await?;
        txn.commit().await.map_err(db_error)?;
        self.outbox.wake();
        Ok(response)
    }

    async fn gone_at_marketplace(
        &self,
        marketplace: Marketplace,
        external_id: &str,
    ) -> Result<pb::Subscription> {
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        let Some(before) = self.find_by_ref(&txn, marketplace, external_id).await? else {
            return Err(Error::not_found(
                "the marketplace does not know this subscription",
            ));
        };
        let mut row = before.clone();
        if !state::is_final(&row.state) {
            row.state = state::CANCELLED.to_owned();
            row.reason = "deleted at the marketplace".to_owned();
        }
        let mut attributes: BTreeMap<String, String> = from_json(&row.attributes);
        attributes.insert("deleted_at_marketplace".into(), "true".into());
        row.attributes = to_json(&attributes);
        let row = self.save_with_effects(&txn, Some(&before), row).await?;
        let response = self.to_proto(&txn, &row).await?;
        txn.commit().await.map_err(db_error)?;
        self.outbox.wake();
        Ok(response)
    }

    /// Why the provider refuses a requested plan change, if it does.
    fn plan_change_rejection_reason(&self, row: &subscription::Model) -> Option<String> {
        let product = self.catalog.product(&row.product_id)?;
        if product.plan(&row.pending_plan_id).is_none() {
            return Some(format!("plan `{}` is not offered", row.pending_plan_id));
        }
        None
    }

    /// Why the provider refuses a requested subscription, if it does.
    fn rejection_reason(&self, row: &subscription::Model) -> Option<String> {
        let Some(product) = self.catalog.product(&row.product_id) else {
            return Some(format!("product `{}` is not offered", row.product_id));
        };
        if product.plan(&row.plan_id).is_none() {
            return Some(format!("plan `{}` is not offered", row.plan_id));
        }
        None
    }

    /// Approves (or, by provider rule, rejects) a requested subscription,
    /// waiting for the account's signup when it is not done.
    async fn start_approval(
        &self,
        conn: &impl ConnectionTrait,
        mut row: subscription::Model,
        signup_done: bool,
    ) -> Result<subscription::Model> {
        if let Some(reason) = self.rejection_reason(&row) {
            tracing::info!(subscription.id = %row.id, reason = %reason, "rejecting a subscription by provider rule");
            self.enqueue(
                conn,
                NewJob::new(
                    kind::REJECT,
                    &jobs::SubscriptionJob::with_reason(&row.id, &reason),
                )?
                .dedupe_key(format!("reject:{}", row.id)),
            )
            .await?;
            return Ok(row);
        }
        if !signup_done {
            if !row.awaiting_account_approval {
                row.awaiting_account_approval = true;
                row.updated_at = self.now();
                row.clone()
                    .into_active_model()
                    .reset_all()
                    .update(conn)
                    .await
                    .map_err(db_error)?;
                tracing::info!(subscription.id = %row.id, "approval waits for the account's signup");
            }
            return Ok(row);
        }
        if row.awaiting_account_approval {
            row.awaiting_account_approval = false;
            row.clone()
                .into_active_model()
                .reset_all()
                .update(conn)
                .await
                .map_err(db_error)?;
        }
        let stamp = row
            .marketplace_update_time
            .map(|t| t.timestamp_micros())
            .unwrap_or_default();
        self.enqueue(
            conn,
            NewJob::new(kind::APPROVE, &jobs::SubscriptionJob::new(&row.id))?
                .dedupe_key(format!("approve:{}:{stamp}", row.id)),
        )
        .await?;
        Ok(row)
    }

    async fn enqueue_plan_change(
        &self,
        conn: &impl ConnectionTrait,
        row: &subscription::Model,
        approve: bool,
        reason: &str,
    ) -> Result<()> {
        let job = jobs::PlanChangeJob {
            subscription_id: row.id.clone(),
            pending_plan_id: row.pending_plan_id.clone(),
            approve,
            reason: reason.to_owned(),
        };
        let stamp = row
            .marketplace_update_time
            .map(|t| t.timestamp_micros())
            .unwrap_or_default();
        self.enqueue(
            conn,
            NewJob::new(kind::PLAN_CHANGE, &job)?.dedupe_key(format!(
                "plan_change:{}:{}:{stamp}:{approve}",
                row.id, row.pending_plan_id
            )),
        )
        .await
    }

    async fn require_subscription(
        &self,
        conn: &impl ConnectionTrait,
        id: &str,
    ) -> Result<subscription::Model> {
        let id = SubscriptionId::parse("subscriptionId", id)?;
        self.load_subscription(conn, id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("subscription not found"))
    }

    /// One subscription.
    pub async fn get_subscription(
        &self,
        request: pb::GetSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        let row = match request.selector {
            Some(pb::get_subscription_request::Selector::SubscriptionId(id)) => {
                self.require_subscription(&self.db, &id).await?
            }
            Some(pb::get_subscription_request::Selector::MarketplaceRef(reference)) => {
                let (marketplace, external_id) = parse_ref(Some(&reference))?;
                self.find_by_ref(&self.db, marketplace, &external_id)
                    .await?
                    .ok_or_else(|| Error::not_found("subscription not found"))?
            }
            None => {
                return Err(Error::invalid_field(
                    "selector",
                    "a subscription id or marketplace reference is required",
                ));
            }
        };
        self.to_proto(&self.db, &row).await
    }

    /// A page of subscriptions, newest first.
    pub async fn list_subscriptions(
        &self,
        request: pb::ListSubscriptionsRequest,
    ) -> Result<pb::ListSubscriptionsResponse> {
        let page = Page::from_request(request.page.as_ref());
        let mut query = subscription::Entity::find()
            .order_by_desc(subscription::Column::Id)
            .limit(page.fetch_limit());
        if !request.account_id.is_empty() {
            query = query.filter(subscription::Column::AccountId.eq(request.account_id.clone()));
        }
        let states: Vec<&str> = request
            .states
            .iter()
            .filter_map(|s| {
                pb::SubscriptionState::try_from(*s)
                    .ok()
                    .and_then(state_from_proto)
            })
            .collect();
        if !states.is_empty() {
            query = query.filter(subscription::Column::State.is_in(states));
        }
        if request.marketplace != 0 {
            let marketplace = Marketplace::from_proto("marketplace", request.marketplace)?;
            query = query.filter(subscription::Column::Marketplace.eq(marketplace.as_str()));
        }
        if let Some(after) = &page.after {
            query = query.filter(subscription::Column::Id.lt(after.clone()));
        }
        let rows = query.all(&self.db).await.map_err(db_error)?;
        let (rows, next) = page.finish(rows, |row| row.id.clone());
        let mut subscriptions = Vec::with_capacity(rows.len());
        for row in &rows {
            subscriptions.push(self.to_proto(&self.db, row).await?);
        }
        Ok(pb::ListSubscriptionsResponse {
            subscriptions,
            page: Some(next),
        })
    }

    /// Approves a requested subscription (or queues it behind the signup).
    pub async fn approve_subscription(
        &self,
        request: pb::ApproveSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.ApproveSubscription",
            &key,
            &request,
            self.now()
        );
        let row = self
            .require_subscription(&*txn, &request.subscription_id)
            .await?;
        let row = match row.state.as_str() {
            state::REQUESTED => {
                let account = self
                    .account(AccountSelector::by_id(&row.account_id))
                    .await?;
                self.start_approval(&*txn, row, account.signup_done).await?
            }
            state::REJECTED | state::CANCELLED => {
                return Err(Error::conflict(format!(
                    "a {} subscription cannot be approved",
                    row.state
                )));
            }
            _ => row,
        };
        let response = self.to_proto(&*txn, &row).await?;
        let response = txn.finish(response).await?;
        self.outbox.wake();
        Ok(response)
    }

    /// Rejects a requested subscription.
    pub async fn reject_subscription(
        &self,
        request: pb::RejectSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        let mut validator = Validator::new();
        validator.max_len("reason", &request.reason, 256);
        validator.finish()?;
        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.RejectSubscription",
            &key,
            &request,
            self.now()
        );
        let row = self
            .require_subscription(&*txn, &request.subscription_id)
            .await?;
        if row.state != state::REQUESTED && row.state != state::REJECTED {
            return Err(Error::conflict(format!(
                "a {} subscription cannot be rejected",
                row.state
            )));
        }
        if row.state == state::REQUESTED {
            self.enqueue(
                &*txn,
                NewJob::new(
                    kind::REJECT,
                    &jobs::SubscriptionJob::with_reason(&row.id, &request.reason),
                )?
                .dedupe_key(format!("reject:{}", row.id)),
            )
            .await?;
        }
        let response = self.to_proto(&*txn, &row).await?;
        let response = txn.finish(response).await?;
        self.outbox.wake();
        Ok(response)
    }

    async fn plan_change_decision(
        &self,
        context_key_value: String,
        scope_name: &str,
        request: &impl prost::Message,
        subscription_id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<pb::Subscription> {
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            scope_name,
            &context_key_value,
            request,
            self.now()
        );
        let row = self.require_subscription(&*txn, subscription_id).await?;
        if row.pending_plan_id.is_empty() {
            return Err(Error::conflict("no plan change is pending"));
        }
        self.enqueue_plan_change(&*txn, &row, approve, reason)
            .await?;
        let response = self.to_proto(&*txn, &row).await?;
        let response = txn.finish(response).await?;
        self.outbox.wake();
        Ok(response)
    }

    /// Approves the pending plan change.
    pub async fn approve_plan_change(
        &self,
        request: pb::ApprovePlanChangeRequest,
    ) -> Result<pb::Subscription> {
        let key = context_key(request.context.as_ref());
        self.plan_change_decision(
            key,
            "provisioning.ApprovePlanChange",
            &request,
            &request.subscription_id,
            true,
            "",
        )
        .await
    }

    /// Rejects the pending plan change.
    pub async fn reject_plan_change(
        &self,
        request: pb::RejectPlanChangeRequest,
    ) -> Result<pb::Subscription> {
        let key = context_key(request.context.as_ref());
        self.plan_change_decision(
            key,
            "provisioning.RejectPlanChange",
            &request,
            &request.subscription_id,
            false,
            &request.reason,
        )
        .await
    }

    /// Switches a subscription's plan at once.
    pub async fn change_plan(&self, request: pb::ChangePlanRequest) -> Result<pb::Subscription> {
        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.ChangePlan",
            &key,
            &request,
            self.now()
        );
        let before = self
            .require_subscription(&*txn, &request.subscription_id)
            .await?;
        if state::is_final(&before.state) {
            return Err(Error::conflict(format!(
                "a {} subscription cannot change plan",
                before.state
            )));
        }
        let product = self
            .catalog
            .require_product("productId", &before.product_id)?;
        if product.plan(&request.plan_id).is_none() {
            return Err(Error::invalid_field(
                "billingPlanId",
                format!("unknown plan `{}`", request.plan_id),
            ));
        }
        let mut row = before.clone();
        row.plan_id = request.plan_id.clone();
        row.pending_plan_id.clear();
        let row = self.save_with_effects(&*txn, Some(&before), row).await?;
        let response = self.to_proto(&*txn, &row).await?;
        let response = txn.finish(response).await?;
        self.outbox.wake();
        Ok(response)
    }

    /// Cancels a subscription and deprovisions its resources.
    pub async fn cancel_subscription(
        &self,
        request: pb::CancelSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.CancelSubscription",
            &key,
            &request,
            self.now()
        );
        let before = self
            .require_subscription(&*txn, &request.subscription_id)
            .await?;
        let row = if state::is_final(&before.state) {
            before
        } else {
            let mut row = before.clone();
            row.state = state::CANCELLED.to_owned();
            row.reason = request.reason.clone();
            self.save_with_effects(&*txn, Some(&before), row).await?
        };
        let response = self.to_proto(&*txn, &row).await?;
        let response = txn.finish(response).await?;
        self.outbox.wake();
        Ok(response)
    }

    /// Starts the approvals that waited for this account's signup.
    pub async fn notify_account_approved(
        &self,
        request: pb::NotifyAccountApprovedRequest,
    ) -> Result<pb::NotifyAccountApprovedResponse> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.NotifyAccountApproved",
            &key,
            &request,
            self.now()
        );
        let waiting = subscription::Entity::find()
            .filter(subscription::Column::AccountId.eq(account_id.into_string()))
            .filter(subscription::Column::State.eq(state::REQUESTED))
            .order_by_asc(subscription::Column::Id)
            .lock_exclusive()
            .all(&*txn)
            .await
            .map_err(db_error)?;
        let mut approved = Vec::new();
        for row in waiting {
            let row = self.start_approval(&*txn, row, true).await?;
            approved.push(self.to_proto(&*txn, &row).await?);
        }
        tracing::info!(count = approved.len(), "approvals started after signup");
        let response = txn
            .finish(pb::NotifyAccountApprovedResponse { approved })
            .await?;
        self.outbox.wake();
        Ok(response)
    }

    /// After the marketplace accepted our approval: APPROVED, or ACTIVE for
    /// marketplaces that activate on approval.
    pub(crate) async fn approval_done(&self, subscription_id: &str, activates: bool) -> Result<()> {
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        if let Some(before) = self.load_subscription(&txn, subscription_id).await?
            && before.state == state::REQUESTED
        {
            let mut row = before.clone();
            row.state = if activates {
                state::ACTIVE
            } else {
                state::APPROVED
            }
            .to_owned();
            self.save_with_effects(&txn, Some(&before), row).await?;
        }
        txn.commit().await.map_err(db_error)?;
        self.outbox.wake();
        Ok(())
    }

    /// After the marketplace accepted our rejection.
    pub(crate) async fn rejection_done(&self, subscription_id: &str, reason: &str) -> Result<()> {
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        if let Some(before) = self.load_subscription(&txn, subscription_id).await?
            && before.state == state::REQUESTED
        {
            let mut row = before.clone();
            row.state = state::REJECTED.to_owned();
            row.reason = reason.to_owned();
            self.save_with_effects(&txn, Some(&before), row).await?;
        }
        txn.commit().await.map_err(db_error)?;
        self.outbox.wake();
        Ok(())
    }

    /// After a plan change decision for a marketplace that applies it at
    /// once (no adapter): the pending plan becomes the plan, or is dropped.
    pub(crate) async fn plan_change_done_locally(&self, job: &jobs::PlanChangeJob) -> Result<()> {
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        if let Some(before) = self.load_subscription(&txn, &job.subscription_id).await?
            && before.pending_plan_id == job.pending_plan_id
        {
            let mut row = before.clone();
            if job.approve {
                row.plan_id = job.pending_plan_id.clone();
            }
            row.pending_plan_id.clear();
            if row.state == state::PENDING_PLAN_CHANGE {
                row.state = state::ACTIVE.to_owned();
            }
            self.save_with_effects(&txn, Some(&before), row).await?;
        }
        txn.commit().await.map_err(db_error)?;
        self.outbox.wake();
        Ok(())
    }

    /// Re-reads every subscription the marketplace lists (repairing what a
    /// lost notification missed); returns how many were synchronised.
    pub async fn reconcile(&self, marketplace: Marketplace) -> Result<usize> {
        let Some(adapter) = self.marketplaces.adapter(marketplace).cloned() else {
            return Ok(0);
        };
        let mut external_ids = adapter.list_subscription_ids().await?;
        // Ours that the marketplace no longer lists (a lost deletion).
        let listed: std::collections::BTreeSet<String> = external_ids.iter().cloned().collect();
        let unfinished = subscription::Entity::find()
            .filter(subscription::Column::Marketplace.eq(marketplace.as_str()))
            .filter(subscription::Column::State.is_not_in([state::CANCELLED, state::REJECTED]))
            .order_by_asc(subscription::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        external_ids.extend(
            unfinished
                .into_iter()
                .map(|row| row.external_id)
                .filter(|id| !listed.contains(id)),
        );
        let mut count = 0;
        for external_id in external_ids {
            let request = pb::SyncSubscriptionRequest {
                context: None,
                marketplace_ref: Some(MarketplaceRef::new(
                    super::proto_marketplace(marketplace),
                    external_id.clone(),
                )),
                approved_by_marketplace: false,
            };
            match self.sync_subscription(request).await {
                Ok(_) => count += 1,
                Err(error) => {
                    tracing::warn!(subscription = %external_id, error = %error, "reconciliation of a subscription failed")
                }
            }
        }
        Ok(count)
    }
}

fn parse_ref(reference: Option<&MarketplaceRef>) -> Result<(Marketplace, String)> {
    let reference =
        reference.ok_or_else(|| Error::invalid_field("marketplaceRef", "is required"))?;
    let marketplace = Marketplace::from_proto("marketplaceRef.marketplace", reference.marketplace)?;
    let mut validator = Validator::new();
    validator.require("marketplaceRef.externalId", &reference.external_id);
    validator.max_len("marketplaceRef.externalId", &reference.external_id, 255);
    validator.finish()?;
    Ok((marketplace, reference.external_id.trim().to_owned()))
}

fn desired_from_snapshot(
    account_id: &str,
    marketplace: Marketplace,
    external_id: &str,
    snapshot: &SubscriptionSnapshot,
) -> Desired {
    Desired {
        account_id: account_id.to_owned(),
        marketplace: Some(marketplace),
        external_id: external_id.to_owned(),
        product_id: snapshot.product_id.clone(),
        plan_id: snapshot.plan_id.clone(),
        pending_plan_id: snapshot.pending_plan_id.clone(),
        state: known_state(&snapshot.state),
        scope: Some(scope::ACCOUNT),
        marketplace_state: snapshot.marketplace_state.clone(),
        update_time: snapshot.update_time.map(truncate_micros),
        usage_reporting_id: snapshot.usage_reporting_id.clone(),
        order_id: snapshot.order_id.clone(),
        attributes: snapshot.attributes.clone(),
        reason: snapshot.reason.clone(),
    }
}

fn known_state(value: &str) -> Option<&'static str> {
    [
        state::REQUESTED,
        state::APPROVED,
        state::ACTIVE,
        state::PENDING_PLAN_CHANGE,
        state::PENDING_CANCELLATION,
        state::CANCELLED,
        state::REJECTED,
    ]
    .into_iter()
    .find(|s| *s == value)
}

/// The marketplace of a stored subscription.
pub(crate) fn subscription_marketplace(row: &subscription::Model) -> Result<Marketplace> {
    marketplace_of(&row.marketplace)
}
