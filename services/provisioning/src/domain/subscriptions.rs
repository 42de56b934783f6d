//! Subscriptions: recording them as marketplaces describe them, the
//! provider's decisions, and the effects of their state machine
//! ([`crate::lifecycle::subscription`]) applied in one place.

use super::{ProvisioningDomain, context_key};
use crate::convert::{
    attributes, marketplace_of, scope_from_proto, state_from_proto, subscription_to_proto, to_json,
};
use crate::entity::subscription;
use crate::lifecycle::subscription::{self as lifecycle, Described, Effect, Event, Step};
use crate::marketplace::SubscriptionSnapshot;
use crate::model::{
    ExternalId, PlanChangeJob, PlanId, ProvisioningJob, SubscriptionJob, SubscriptionScope,
    SubscriptionState,
};
use chrono::{DateTime, Utc};
use marketbridge_core::ids::{AccountId, SubscriptionId};
use marketbridge_core::time::from_optional_timestamp;
use marketbridge_core::{Error, Marketplace, Result, Validator};
use marketbridge_proto::common::v1::MarketplaceRef;
use marketbridge_proto::provisioning::v1 as pb;
use marketbridge_storage::db_error;
use marketbridge_storage::outbox::{NewJob, truncate_micros};
use marketbridge_storage::paging::Page;
use marketbridge_storage::{Call, RowLocks, UnitOfWork, locked_in, unit_of_work};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};
use std::collections::BTreeMap;

/// A subscription as someone wants it to be.
#[derive(Debug, Clone, Default)]
pub(crate) struct Desired {
    pub account_id: Option<AccountId>,
    pub marketplace: Option<Marketplace>,
    pub external_id: ExternalId,
    pub product_id: String,
    pub described: Described,
    pub marketplace_state: String,
    pub update_time: Option<DateTime<Utc>>,
    pub order_id: String,
    pub attributes: BTreeMap<String, String>,
    pub reason: String,
}

/// What the state machine sees of a stored subscription.
pub(crate) fn machine_view(row: &subscription::Model) -> lifecycle::Subscription {
    lifecycle::Subscription {
        state: row.state,
        scope: row.scope,
        plan_id: PlanId::new(&row.plan_id),
        pending_plan_id: Some(PlanId::new(&row.pending_plan_id)).filter(|p| !p.is_empty()),
        usage_reporting_id: row.usage_reporting_id.clone(),
        started: row.started_at.is_some(),
        awaiting_account_approval: row.awaiting_account_approval,
    }
}

impl ProvisioningDomain {
    async fn find_by_ref(
        &self,
        conn: &(impl ConnectionTrait + RowLocks),
        marketplace: Marketplace,
        external_id: &ExternalId,
    ) -> Result<Option<subscription::Model>> {
        let query = subscription::Entity::find()
            .filter(subscription::Column::Marketplace.eq(marketplace.as_str()))
            .filter(subscription::Column::ExternalId.eq(external_id.as_str()));
        // Writers re-read the row they change under a lock (`FOR UPDATE`
        // on PostgreSQL; SQLite write transactions are serial).
        locked_in(query, conn).one(conn).await.map_err(db_error)
    }

    async fn to_proto(
        &self,
        conn: &impl ConnectionTrait,
        row: &subscription::Model,
    ) -> Result<pb::Subscription> {
        let ids = self.resource_ids_of(conn, &row.subscription_id()?).await?;
        subscription_to_proto(row, ids)
    }

    /// Creates or updates a subscription as `desired` says, with the effects
    /// of its state change. Returns `None` when `desired` is older than what
    /// is stored.
    pub(crate) async fn apply_desired(
        &self,
        work: &mut UnitOfWork,
        desired: Desired,
    ) -> Result<Option<subscription::Model>> {
        let marketplace = desired
            .marketplace
            .ok_or_else(|| Error::invalid_field("marketplaceRef", "is required"))?;
        let now = self.now();
        let existing = self
            .find_by_ref(&**work, marketplace, &desired.external_id)
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
                validator.require(
                    "planId",
                    desired
                        .described
                        .plan_id
                        .as_ref()
                        .map(PlanId::as_str)
                        .unwrap_or_default(),
                );
                validator.finish()?;
                let account_id = desired
                    .account_id
                    .clone()
                    .ok_or_else(|| Error::invalid_field("accountId", "is required"))?;
                let row = subscription::Model {
                    id: SubscriptionId::generate().into_string(),
                    account_id: account_id.into_string(),
                    marketplace: marketplace.as_str().to_owned(),
                    external_id: desired.external_id.to_string(),
                    product_id: desired.product_id.clone(),
                    plan_id: String::new(),
                    pending_plan_id: String::new(),
                    state: SubscriptionState::Requested,
                    scope: desired
                        .described
                        .scope
                        .unwrap_or(SubscriptionScope::Account),
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
                    .exec_without_returning(&**work)
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
        let step = lifecycle::step(
            before.as_ref().map(machine_view).as_ref(),
            Event::Describe(desired.described.clone()),
        )?;
        if !desired.product_id.is_empty() {
            row.product_id = desired.product_id.clone();
        }
        if !desired.marketplace_state.is_empty() {
            row.marketplace_state = desired.marketplace_state.clone();
        }
        if desired.update_time.is_some() {
            row.marketplace_update_time = desired.update_time;
        }
        if !desired.order_id.is_empty() {
            row.order_id = desired.order_id.clone();
        }
        if !desired.reason.is_empty() {
            row.reason = desired.reason.clone();
        }
        if !desired.attributes.is_empty() {
            let mut stored = attributes(&row)?;
            stored.extend(desired.attributes.clone());
            row.attributes = to_json(&stored)?;
        }
        self.apply_subscription(work, row, step).await.map(Some)
    }

    /// Writes a subscription as a step of its state machine left it and
    /// carries out the step's effects: provisioning on activation, plan
    /// changes on resources, deprovisioning at the end, the marketplace
    /// decisions and telling billing. Every subscription change goes
    /// through here (or, for the changes a resource causes, through
    /// [`ProvisioningDomain::write_subscription`]).
    pub(crate) async fn apply_subscription(
        &self,
        work: &mut UnitOfWork,
        row: subscription::Model,
        step: Step,
    ) -> Result<subscription::Model> {
        let row = self.write_subscription(work, row, &step).await?;
        let subscription_id = row.subscription_id()?;
        let now = self.now();
        for effect in &step.effects {
            match effect {
                Effect::MoveResourcesToPlan => {
                    for mut resource in self
                        .live_resources_of_subscription(&**work, &subscription_id)
                        .await?
                    {
                        resource.plan_id = row.plan_id.clone();
                        resource.updated_at = now;
                        resource.update_in(&**work).await?;
                        let job = ProvisioningJob::ApplyPlan(crate::model::ResourceJob::plain(
                            &resource.resource_id()?,
                        ));
                        work.enqueue(NewJob::of(&job)?).await?;
                    }
                }
                Effect::ProvisionAccountResource => {
                    if self.account_subscription_gets_resource(&row)? {
                        self.provision_for_subscription(work, &row).await?;
                    }
                }
                Effect::DeprovisionResources => {
                    for resource in self
                        .live_resources_of_subscription(&**work, &subscription_id)
                        .await?
                    {
                        self.delete_in(work, resource).await?;
                    }
                }
                // Written with the row.
                Effect::MarkStarted
                | Effect::MarkEnded
                | Effect::TellBilling
                | Effect::RequestApproval
                | Effect::RequestRejection { .. }
                | Effect::RequestPlanDecision { .. } => {}
            }
        }
        Ok(row)
    }

    /// The part of [`ProvisioningDomain::apply_subscription`] that touches
    /// only the subscription: its row, its marketplace decisions and
    /// billing (jobs). Effects on resources are left to the caller.
    pub(crate) async fn write_subscription(
        &self,
        work: &mut UnitOfWork,
        mut row: subscription::Model,
        step: &Step,
    ) -> Result<subscription::Model> {
        let now = self.now();
        let after = &step.after;
        row.state = after.state;
        row.scope = after.scope;
        row.plan_id = after.plan_id.to_string();
        row.pending_plan_id = after
            .pending_plan_id
            .as_ref()
            .map(PlanId::to_string)
            .unwrap_or_default();
        row.usage_reporting_id = after.usage_reporting_id.clone();
        row.awaiting_account_approval = after.awaiting_account_approval;
        if step.has(&Effect::MarkStarted) && row.started_at.is_none() {
            row.started_at = Some(now);
        }
        if step.has(&Effect::MarkEnded) {
            row.ended_at = Some(now);
        }
        if step.has(&Effect::TellBilling) {
            row.version += 1;
        }
        if step.save {
            row.updated_at = now;
            row.update_in(&**work).await?;
        }
        let subscription_id = row.subscription_id()?;
        let stamp = row
            .marketplace_update_time
            .map(|t| t.timestamp_micros())
            .unwrap_or_default();
        for effect in &step.effects {
            match effect {
                Effect::RequestApproval => {
                    let job = ProvisioningJob::Approve(SubscriptionJob::new(&subscription_id));
                    work.enqueue(
                        NewJob::of(&job)?.dedupe_key(format!("approve:{}:{stamp}", row.id)),
                    )
                    .await?;
                }
                Effect::RequestRejection { reason } => {
                    tracing::info!(subscription.id = %row.id, reason = %reason, "rejecting a subscription");
                    let job = ProvisioningJob::Reject(SubscriptionJob::with_reason(
                        &subscription_id,
                        reason,
                    ));
                    work.enqueue(NewJob::of(&job)?.dedupe_key(format!("reject:{}", row.id)))
                        .await?;
                }
                Effect::RequestPlanDecision { approve, reason } => {
                    let job = ProvisioningJob::PlanChange(PlanChangeJob {
                        subscription_id: subscription_id.clone(),
                        pending_plan_id: PlanId::new(&row.pending_plan_id),
                        approve: *approve,
                        reason: reason.clone(),
                    });
                    work.enqueue(NewJob::of(&job)?.dedupe_key(format!(
                        "plan_change:{}:{}:{stamp}:{approve}",
                        row.id, row.pending_plan_id
                    )))
                    .await?;
                }
                Effect::TellBilling => {
                    tracing::info!(subscription.id = %row.id, state = %row.state, plan = %row.plan_id, "subscription changed");
                    self.enqueue_billing_change(work, &row, None)?;
                }
                Effect::MarkStarted | Effect::MarkEnded => {}
                Effect::MoveResourcesToPlan
                | Effect::ProvisionAccountResource
                | Effect::DeprovisionResources => {}
            }
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
            account_id: Some(account_id),
            marketplace: Some(marketplace),
            external_id,
            product_id: request.product_id.clone(),
            described: Described {
                state: pb::SubscriptionState::try_from(request.state)
                    .ok()
                    .and_then(state_from_proto),
                scope: scope_from_proto(
                    pb::SubscriptionScope::try_from(request.scope).unwrap_or_default(),
                ),
                plan_id: Some(PlanId::new(&request.plan_id)),
                pending_plan_id: Some(PlanId::new(&request.pending_plan_id)),
                usage_reporting_id: Some(request.usage_reporting_id.clone()),
            },
            marketplace_state: request.marketplace_state.clone(),
            update_time: from_optional_timestamp(
                "marketplaceUpdateTime",
                request.marketplace_update_time.as_ref(),
            )?
            .map(truncate_micros),
            order_id: request.order_id.clone(),
            attributes: request.attributes.clone().into_iter().collect(),
            reason: request.reason.clone(),
        };
        let key = context_key(request.context.as_ref());
        let call = Call::new(
            "provisioning.UpsertSubscription",
            &key,
            &request,
            self.now(),
        )
        .sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let row = match self.apply_desired(&mut work, desired.clone()).await? {
            Some(row) => row,
            None => self
                .find_by_ref(&*work, marketplace, &desired.external_id)
                .await?
                .ok_or_else(|| Error::internal("stale subscription vanished"))?,
        };
        let response = self.to_proto(&*work, &row).await?;
        work.finish(response).await
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
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let desired = desired_from_snapshot(&account.id, marketplace, &external_id, &snapshot);
        let row = match self.apply_desired(&mut work, desired).await? {
            Some(row) => row,
            None => self
                .find_by_ref(&*work, marketplace, &external_id)
                .await?
                .ok_or_else(|| Error::internal("stale subscription vanished"))?,
        };
        let row = if row.state == SubscriptionState::Requested && request.approved_by_marketplace {
            tracing::info!(subscription.id = %row.id, "approved by the marketplace itself");
            let step = lifecycle::step(Some(&machine_view(&row)), Event::ApprovedByMarketplace)?;
            self.apply_subscription(&mut work, row, step).await?
        } else if row.state == SubscriptionState::Requested && !row.awaiting_account_approval {
            self.start_approval(&mut work, row, account.signup_done)
                .await?
        } else {
            row
        };
        if snapshot.plan_change_needs_approval && !row.pending_plan_id.is_empty() {
            let (approve, reason) = match self.plan_change_rejection_reason(&row) {
                None => (true, String::new()),
                Some(reason) => {
                    tracing::info!(subscription.id = %row.id, reason = %reason, "rejecting a plan change by provider rule");
                    (false, reason)
                }
            };
            let step = lifecycle::step(
                Some(&machine_view(&row)),
                Event::DecidePlanChange { approve, reason },
            )?;
            self.apply_subscription(&mut work, row.clone(), step)
                .await?;
        }
        let response = self.to_proto(&*work, &row).await?;
        work.commit().await?;
        if row.state == SubscriptionState::Requested && row.awaiting_account_approval {
            return self
                .recheck_account_approval(&row.subscription_id()?, &account.id, response)
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
        subscription_id: &SubscriptionId,
        account_id: &AccountId,
        waiting: pb::Subscription,
    ) -> Result<pb::Subscription> {
        let account = self.account_by_id(account_id).await?;
        if !account.signup_done {
            return Ok(waiting);
        }
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let Some(row) = self.load_subscription(&*work, subscription_id).await? else {
            return Ok(waiting);
        };
        if row.state != SubscriptionState::Requested || !row.awaiting_account_approval {
            return Ok(waiting);
        }
        tracing::info!(subscription.id = %row.id, "the account's signup finished meanwhile; approving");
        let row = self.start_approval(&mut work, row, true).await?;
        let response = self.to_proto(&*work, &row).await?;
        work.commit().await?;
        Ok(response)
    }

    async fn gone_at_marketplace(
        &self,
        marketplace: Marketplace,
        external_id: &ExternalId,
    ) -> Result<pb::Subscription> {
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let Some(mut row) = self.find_by_ref(&*work, marketplace, external_id).await? else {
            return Err(Error::not_found(
                "the marketplace does not know this subscription",
            ));
        };
        let step = lifecycle::step(Some(&machine_view(&row)), Event::GoneAtMarketplace)?;
        if step.after.state != row.state {
            row.reason = "deleted at the marketplace".to_owned();
        }
        let mut stored = attributes(&row)?;
        stored.insert("deleted_at_marketplace".into(), "true".into());
        row.attributes = to_json(&stored)?;
        let row = self.apply_subscription(&mut work, row, step).await?;
        let response = self.to_proto(&*work, &row).await?;
        work.commit().await?;
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
        work: &mut UnitOfWork,
        row: subscription::Model,
        signup_done: bool,
    ) -> Result<subscription::Model> {
        let step = lifecycle::step(
            Some(&machine_view(&row)),
            Event::StartApproval {
                rejection: self.rejection_reason(&row),
                signup_done,
            },
        )?;
        if step.after.awaiting_account_approval && !row.awaiting_account_approval {
            tracing::info!(subscription.id = %row.id, "approval waits for the account's signup");
        }
        self.apply_subscription(work, row, step).await
    }

    async fn require_subscription(
        &self,
        conn: &(impl ConnectionTrait + RowLocks),
        subscription_id: &SubscriptionId,
    ) -> Result<subscription::Model> {
        self.load_subscription(conn, subscription_id)
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
                let id = SubscriptionId::parse("subscriptionId", &id)?;
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
        let states: Vec<SubscriptionState> = request
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
        let subscription_id = SubscriptionId::parse("subscriptionId", &request.subscription_id)?;
        let key = context_key(request.context.as_ref());
        let mut call = Call::new(
            "provisioning.ApproveSubscription",
            &key,
            &request,
            self.now(),
        )
        .sealed(&self.cipher);
        if let Some(answer) = call.replayed(&self.db).await? {
            return Ok(answer);
        }
        // The account's signup, read before the transaction: no remote call
        // while it is open.
        let stored = self
            .require_subscription(&self.db, &subscription_id)
            .await?;
        let signup_done = if stored.state == SubscriptionState::Requested {
            self.account_by_id(&stored.owner_id()?).await?.signup_done
        } else {
            false
        };
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let row = self.require_subscription(&*work, &subscription_id).await?;
        if row.state == SubscriptionState::Requested && stored.state != SubscriptionState::Requested
        {
            return Err(Error::unavailable(
                "the subscription changed meanwhile; retry",
            ));
        }
        let step = lifecycle::step(
            Some(&machine_view(&row)),
            Event::Approve {
                rejection: self.rejection_reason(&row),
                signup_done,
            },
        )?;
        let row = self.apply_subscription(&mut work, row, step).await?;
        let response = self.to_proto(&*work, &row).await?;
        work.finish(response).await
    }

    /// Rejects a requested subscription.
    pub async fn reject_subscription(
        &self,
        request: pb::RejectSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        let mut validator = Validator::new();
        validator.max_len("reason", &request.reason, 256);
        validator.finish()?;
        let subscription_id = SubscriptionId::parse("subscriptionId", &request.subscription_id)?;
        let key = context_key(request.context.as_ref());
        let call = Call::new(
            "provisioning.RejectSubscription",
            &key,
            &request,
            self.now(),
        )
        .sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let row = self.require_subscription(&*work, &subscription_id).await?;
        let step = lifecycle::step(
            Some(&machine_view(&row)),
            Event::Reject {
                reason: request.reason.clone(),
            },
        )?;
        let row = self.apply_subscription(&mut work, row, step).await?;
        let response = self.to_proto(&*work, &row).await?;
        work.finish(response).await
    }

    async fn plan_change_decision(
        &self,
        call: Call<'_>,
        subscription_id: &SubscriptionId,
        approve: bool,
        reason: &str,
    ) -> Result<pb::Subscription> {
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let row = self.require_subscription(&*work, subscription_id).await?;
        let step = lifecycle::step(
            Some(&machine_view(&row)),
            Event::DecidePlanChange {
                approve,
                reason: reason.to_owned(),
            },
        )?;
        let row = self.apply_subscription(&mut work, row, step).await?;
        let response = self.to_proto(&*work, &row).await?;
        work.finish(response).await
    }

    /// Approves the pending plan change.
    pub async fn approve_plan_change(
        &self,
        request: pb::ApprovePlanChangeRequest,
    ) -> Result<pb::Subscription> {
        let subscription_id = SubscriptionId::parse("subscriptionId", &request.subscription_id)?;
        let key = context_key(request.context.as_ref());
        let call = Call::new("provisioning.ApprovePlanChange", &key, &request, self.now())
            .sealed(&self.cipher);
        self.plan_change_decision(call, &subscription_id, true, "")
            .await
    }

    /// Rejects the pending plan change.
    pub async fn reject_plan_change(
        &self,
        request: pb::RejectPlanChangeRequest,
    ) -> Result<pb::Subscription> {
        let subscription_id = SubscriptionId::parse("subscriptionId", &request.subscription_id)?;
        let key = context_key(request.context.as_ref());
        let call = Call::new("provisioning.RejectPlanChange", &key, &request, self.now())
            .sealed(&self.cipher);
        self.plan_change_decision(call, &subscription_id, false, &request.reason)
            .await
    }

    /// Switches a subscription's plan at once.
    pub async fn change_plan(&self, request: pb::ChangePlanRequest) -> Result<pb::Subscription> {
        let subscription_id = SubscriptionId::parse("subscriptionId", &request.subscription_id)?;
        let key = context_key(request.context.as_ref());
        let call =
            Call::new("provisioning.ChangePlan", &key, &request, self.now()).sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let row = self.require_subscription(&*work, &subscription_id).await?;
        if row.state.is_final() {
            return Err(Error::conflict(format!(
                "a {} subscription cannot change plan",
                row.state
            )));
        }
        let product = self.catalog.require_product("productId", &row.product_id)?;
        if product.plan(&request.plan_id).is_none() {
            return Err(Error::invalid_field(
                "billingPlanId",
                format!("unknown plan `{}`", request.plan_id),
            ));
        }
        let step = lifecycle::step(
            Some(&machine_view(&row)),
            Event::ChangePlan {
                plan_id: PlanId::new(&request.plan_id),
            },
        )?;
        let row = self.apply_subscription(&mut work, row, step).await?;
        let response = self.to_proto(&*work, &row).await?;
        work.finish(response).await
    }

    /// Cancels a subscription and deprovisions its resources.
    pub async fn cancel_subscription(
        &self,
        request: pb::CancelSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        let subscription_id = SubscriptionId::parse("subscriptionId", &request.subscription_id)?;
        let key = context_key(request.context.as_ref());
        let call = Call::new(
            "provisioning.CancelSubscription",
            &key,
            &request,
            self.now(),
        )
        .sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let mut row = self.require_subscription(&*work, &subscription_id).await?;
        let step = lifecycle::step(Some(&machine_view(&row)), Event::Cancel)?;
        if step.save {
            row.reason = request.reason.clone();
        }
        let row = self.apply_subscription(&mut work, row, step).await?;
        let response = self.to_proto(&*work, &row).await?;
        work.finish(response).await
    }

    /// Starts the approvals that waited for this account's signup.
    pub async fn notify_account_approved(
        &self,
        request: pb::NotifyAccountApprovedRequest,
    ) -> Result<pb::NotifyAccountApprovedResponse> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let key = context_key(request.context.as_ref());
        let call = Call::new(
            "provisioning.NotifyAccountApproved",
            &key,
            &request,
            self.now(),
        )
        .sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        work.concerning(&account_id);
        let waiting = subscription::Entity::find()
            .filter(subscription::Column::AccountId.eq(account_id.as_str()))
            .filter(subscription::Column::State.eq(SubscriptionState::Requested))
            .order_by_asc(subscription::Column::Id)
            .lock_exclusive()
            .all(&*work)
            .await
            .map_err(db_error)?;
        let mut approved = Vec::new();
        for row in waiting {
            let row = self.start_approval(&mut work, row, true).await?;
            approved.push(self.to_proto(&*work, &row).await?);
        }
        tracing::info!(count = approved.len(), "approvals started after signup");
        work.finish(pb::NotifyAccountApprovedResponse { approved })
            .await
    }

    /// Applies `event` to the stored subscription in a transaction of its
    /// own (for jobs).
    async fn step_stored(
        &self,
        subscription_id: &SubscriptionId,
        event: impl FnOnce(&subscription::Model) -> Option<Event>,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        if let Some(mut row) = self.load_subscription(&*work, subscription_id).await?
            && let Some(event) = event(&row)
        {
            let step = lifecycle::step(Some(&machine_view(&row)), event)?;
            if step.save {
                if let Some(reason) = reason {
                    row.reason = reason.to_owned();
                }
                self.apply_subscription(&mut work, row, step).await?;
            }
        }
        work.commit().await
    }

    /// After the marketplace accepted our approval: APPROVED, or ACTIVE for
    /// marketplaces that activate on approval.
    pub(crate) async fn approval_done(
        &self,
        subscription_id: &SubscriptionId,
        activates: bool,
    ) -> Result<()> {
        self.step_stored(
            subscription_id,
            |_| Some(Event::ApprovalAccepted { activates }),
            None,
        )
        .await
    }

    /// After the marketplace accepted our rejection.
    pub(crate) async fn rejection_done(
        &self,
        subscription_id: &SubscriptionId,
        reason: &str,
    ) -> Result<()> {
        self.step_stored(
            subscription_id,
            |_| Some(Event::RejectionAccepted),
            Some(reason),
        )
        .await
    }

    /// After a plan change decision for a marketplace that applies it at
    /// once (no adapter): the pending plan becomes the plan, or is dropped.
    pub(crate) async fn plan_change_done_locally(&self, job: &PlanChangeJob) -> Result<()> {
        self.step_stored(
            &job.subscription_id,
            |row| {
                (PlanId::new(&row.pending_plan_id) == job.pending_plan_id).then_some(
                    Event::PlanChangeSettled {
                        approve: job.approve,
                    },
                )
            },
            None,
        )
        .await
    }

    /// Re-reads every subscription the marketplace lists (repairing what a
    /// lost notification missed); returns how many were synchronised.
    pub async fn reconcile(&self, marketplace: Marketplace) -> Result<usize> {
        let Some(adapter) = self.marketplaces.adapter(marketplace).cloned() else {
            return Ok(0);
        };
        let mut external_ids = adapter.list_subscription_ids().await?;
        // Ours that the marketplace no longer lists (a lost deletion).
        let listed: std::collections::BTreeSet<ExternalId> = external_ids.iter().cloned().collect();
        let unfinished = subscription::Entity::find()
            .filter(subscription::Column::Marketplace.eq(marketplace.as_str()))
            .filter(
                subscription::Column::State
                    .is_not_in([SubscriptionState::Cancelled, SubscriptionState::Rejected]),
            )
            .order_by_asc(subscription::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        external_ids.extend(
            unfinished
                .into_iter()
                .map(|row| ExternalId::new(row.external_id))
                .filter(|id| !listed.contains(id)),
        );
        let mut count = 0;
        for external_id in external_ids {
            let request = pb::SyncSubscriptionRequest {
                context: None,
                marketplace_ref: Some(MarketplaceRef::new(
                    super::proto_marketplace(marketplace),
                    external_id.to_string(),
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

fn parse_ref(reference: Option<&MarketplaceRef>) -> Result<(Marketplace, ExternalId)> {
    let reference =
        reference.ok_or_else(|| Error::invalid_field("marketplaceRef", "is required"))?;
    let marketplace = Marketplace::from_proto("marketplaceRef.marketplace", reference.marketplace)?;
    let mut validator = Validator::new();
    validator.require("marketplaceRef.externalId", &reference.external_id);
    validator.max_len("marketplaceRef.externalId", &reference.external_id, 255);
    validator.finish()?;
    Ok((marketplace, ExternalId::new(reference.external_id.trim())))
}

fn desired_from_snapshot(
    account_id: &AccountId,
    marketplace: Marketplace,
    external_id: &ExternalId,
    snapshot: &SubscriptionSnapshot,
) -> Desired {
    Desired {
        account_id: Some(account_id.clone()),
        marketplace: Some(marketplace),
        external_id: external_id.clone(),
        product_id: snapshot.product_id.clone(),
        described: Described {
            state: snapshot.state,
            scope: Some(SubscriptionScope::Account),
            plan_id: Some(PlanId::new(&snapshot.plan_id)),
            pending_plan_id: Some(PlanId::new(&snapshot.pending_plan_id)),
            usage_reporting_id: Some(snapshot.usage_reporting_id.clone()),
        },
        marketplace_state: snapshot.marketplace_state.clone(),
        update_time: snapshot.update_time.map(truncate_micros),
        order_id: snapshot.order_id.clone(),
        attributes: snapshot.attributes.clone(),
        reason: snapshot.reason.clone(),
    }
}
