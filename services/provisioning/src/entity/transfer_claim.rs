//! `transfer_claims`: offers to move resources from one account to another.

use crate::model::ClaimState;
use sea_orm::entity::prelude::*;

/// A transfer claim.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "transfer_claims")]
pub struct Model {
    /// `clm_...`, or the id the marketplace chose.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The account giving the resources away.
    pub source_account_id: String,
    /// The resources offered, a JSON array of ids in order.
    pub resource_ids: String,
    /// `pending` or `accepted`.
    pub state: ClaimState,
    /// The account that accepted it; empty until then.
    pub target_account_id: String,
    /// When it stops being acceptable.
    pub expires_at: ChronoDateTimeUtc,
    /// When it was created.
    pub created_at: ChronoDateTimeUtc,
    /// When it was accepted.
    pub accepted_at: Option<ChronoDateTimeUtc>,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
