//! `subscriptions`: what a customer bought (a Vercel resource's plan, a
//! Google entitlement, a Vercel installation-level plan).

use crate::model::{SubscriptionScope, SubscriptionState, stored_id};
use marketbridge_core::Result;
use marketbridge_core::ids::{AccountId, SubscriptionId};
use sea_orm::entity::prelude::*;

/// A subscription.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "subscriptions")]
pub struct Model {
    /// `sub_...`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Owning account (`acc_...`).
    pub account_id: String,
    /// `vercel`, `google`, `direct`.
    pub marketplace: String,
    /// The marketplace's id; unique per marketplace.
    pub external_id: String,
    /// Product.
    pub product_id: String,
    /// Plan in force.
    pub plan_id: String,
    /// Plan asked for while a change is pending.
    pub pending_plan_id: String,
    /// `requested`, `approved`, `active`, `pending_plan_change`,
    /// `pending_cancellation`, `cancelled`, `rejected`.
    pub state: SubscriptionState,
    /// `resource` or `account`.
    pub scope: SubscriptionScope,
    /// The marketplace's state, verbatim.
    pub marketplace_state: String,
    /// The marketplace's update time of that state.
    pub marketplace_update_time: Option<ChronoDateTimeUtc>,
    /// Google `usageReportingId`.
    pub usage_reporting_id: String,
    /// Marketplace order id.
    pub order_id: String,
    /// An approval waits for the account's signup.
    pub awaiting_account_approval: bool,
    /// Why it was cancelled or rejected.
    pub reason: String,
    /// Extras, JSON object of strings.
    pub attributes: String,
    /// Grows with every change; billing ignores older versions.
    pub version: i64,
    /// First recorded.
    pub created_at: ChronoDateTimeUtc,
    /// Last changed.
    pub updated_at: ChronoDateTimeUtc,
    /// Became billable.
    pub started_at: Option<ChronoDateTimeUtc>,
    /// Ended.
    pub ended_at: Option<ChronoDateTimeUtc>,
}

/// No relations are navigated; resources point here by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The subscription's id, typed.
    pub fn subscription_id(&self) -> Result<SubscriptionId> {
        stored_id("subscriptions.id", &self.id)
    }

    /// The owning account's id, typed.
    pub fn owner_id(&self) -> Result<AccountId> {
        stored_id("subscriptions.account_id", &self.account_id)
    }
}
