//! `plan_periods`: which plan was billable when, per subscription.

use sea_orm::entity::prelude::*;

/// One stretch of time on one plan.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "plan_periods")]
pub struct Model {
    /// `sub_...:<start micros>`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The subscription.
    pub subscription_id: String,
    /// The plan.
    pub plan_id: String,
    /// Start (inclusive).
    pub starts_at: ChronoDateTimeUtc,
    /// End (exclusive); open while in force.
    pub ends_at: Option<ChronoDateTimeUtc>,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
