//! `prepayment_credits`: each paid purchase invoice credited once.

use sea_orm::entity::prelude::*;

/// A purchase credited to a balance.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "prepayment_credits")]
pub struct Model {
    /// Marketplace of the invoice.
    #[sea_orm(primary_key, auto_increment = false)]
    pub marketplace: String,
    /// The marketplace's invoice id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub marketplace_invoice_id: String,
    /// Account credited.
    pub account_id: String,
    /// Amount credited, minor units.
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
    /// When.
    pub credited_at: ChronoDateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
