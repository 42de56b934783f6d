//! `usage_windows`: usage summed per hour, customer and metric, updated in
//! the same transaction as each event.

use sea_orm::entity::prelude::*;

/// One hour of one metric for one customer.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_windows")]
pub struct Model {
    /// The subscription billed.
    #[sea_orm(primary_key, auto_increment = false)]
    pub subscription_id: String,
    /// The resource, or empty.
    #[sea_orm(primary_key, auto_increment = false)]
    pub resource_id: String,
    /// Metric id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub metric_id: String,
    /// Start of the hour.
    #[sea_orm(primary_key, auto_increment = false)]
    pub window_start: ChronoDateTimeUtc,
    /// Sum of quantities.
    pub quantity: i64,
    /// Number of events.
    pub event_count: i64,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
