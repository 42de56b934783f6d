//! `balances`: prepaid credit left per account (and resource).

use sea_orm::entity::prelude::*;

/// A prepaid balance.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "balances")]
pub struct Model {
    /// Account.
    #[sea_orm(primary_key, auto_increment = false)]
    pub account_id: String,
    /// Resource, or empty for the account's balance.
    #[sea_orm(primary_key, auto_increment = false)]
    pub resource_id: String,
    /// Value left, minor units.
    pub value_minor: i64,
    /// Currency.
    pub currency: String,
    /// Last changed.
    pub updated_at: ChronoDateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
