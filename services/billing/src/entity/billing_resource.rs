//! `billing_resources`: which subscription pays for each resource.

use sea_orm::entity::prelude::*;

/// A resource and its subscription.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "billing_resources")]
pub struct Model {
    /// `res_...`
    #[sea_orm(primary_key, auto_increment = false)]
    pub resource_id: String,
    /// `sub_...`
    pub subscription_id: String,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
