//! `account_closures`: accounts whose billing is being closed after an
//! uninstall, and how far that got.

use crate::lifecycle::closing::ClosureStatus;
use marketbridge_core::Result;
use marketbridge_core::ids::AccountId;
use sea_orm::entity::prelude::*;

/// The closing of one account's billing.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "account_closures")]
pub struct Model {
    /// The account.
    #[sea_orm(primary_key, auto_increment = false)]
    pub account_id: String,
    /// Its marketplace.
    pub marketplace: String,
    pub status: ClosureStatus,
    /// When the uninstall was requested; usage after it is not billed.
    pub requested_at: ChronoDateTimeUtc,
    /// When the final invoices were prepared.
    pub invoiced_at: Option<ChronoDateTimeUtc>,
    /// When billing was finalized.
    pub finalized_at: Option<ChronoDateTimeUtc>,
    /// Last changed.
    pub updated_at: ChronoDateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The account closed.
    pub fn account(&self) -> Result<AccountId> {
        super::account_id(&self.account_id)
    }
}
