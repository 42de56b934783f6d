//! `billing_subscriptions`: billing's copy of each subscription, as
//! provisioning reported it.

use marketbridge_core::Result;
use marketbridge_core::ids::{AccountId, SubscriptionId};
use sea_orm::entity::prelude::*;

/// A subscription from billing's point of view.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "billing_subscriptions")]
pub struct Model {
    /// `sub_...`
    #[sea_orm(primary_key, auto_increment = false)]
    pub subscription_id: String,
    /// Owning account.
    pub account_id: String,
    /// The account's marketplace.
    pub account_marketplace: String,
    /// The account's marketplace id.
    pub account_external_id: String,
    /// The subscription's marketplace.
    pub marketplace: String,
    /// The subscription's marketplace id.
    pub external_id: String,
    /// Product.
    pub product_id: String,
    /// Plan in force.
    pub plan_id: String,
    /// Billable now.
    pub billable: bool,
    /// Ended for good.
    pub ended: bool,
    /// Google usage reporting id.
    pub usage_reporting_id: String,
    /// Version of the last applied change.
    pub version: i64,
    /// When the last change took effect.
    pub effective_at: ChronoDateTimeUtc,
    /// Last changed here.
    pub updated_at: ChronoDateTimeUtc,
    /// Usage before this time is in a marketplace submission (a usage
    /// report or an invoice) and is no longer accepted.
    pub usage_closed_before: Option<ChronoDateTimeUtc>,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The subscription.
    pub fn subscription(&self) -> Result<SubscriptionId> {
        super::subscription_id(&self.subscription_id)
    }

    /// The account it belongs to.
    pub fn account(&self) -> Result<AccountId> {
        super::account_id(&self.account_id)
    }
}
