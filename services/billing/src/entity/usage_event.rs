//! `usage_events`: every usage event internal teams recorded, once.

use sea_orm::entity::prelude::*;

/// One recorded usage event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_events")]
pub struct Model {
    /// The client's event id; unique.
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: String,
    /// The subscription billed.
    pub subscription_id: String,
    /// The resource, or empty for account-level usage.
    pub resource_id: String,
    /// Metric id.
    pub metric_id: String,
    /// Quantity.
    pub quantity: i64,
    /// When it happened.
    pub occurred_at: ChronoDateTimeUtc,
    /// Start of its hour window.
    pub window_start: ChronoDateTimeUtc,
    /// When it was recorded.
    pub recorded_at: ChronoDateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
