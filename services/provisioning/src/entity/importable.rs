//! `importable_resources`: resources the provider runs outside marketbridge
//! that an account may import through the marketplace (Vercel "Import
//! existing resources").

use crate::model::ImportSource;
use sea_orm::entity::prelude::*;

/// An importable resource.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "importable_resources")]
pub struct Model {
    /// `{account_id}:{importable_id}`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The account that may import it.
    pub account_id: String,
    /// The provider's id.
    pub importable_id: String,
    /// Product.
    pub product_id: String,
    /// Name.
    pub name: String,
    /// Configuration, JSON object.
    pub metadata: String,
    /// Secrets reaching it, encrypted JSON.
    pub secrets: String,
    /// `registered` or `plugin`.
    pub source: ImportSource,
    /// Our resource once imported, empty before.
    pub imported_resource_id: String,
    /// Registered.
    pub created_at: ChronoDateTimeUtc,
    /// Last changed.
    pub updated_at: ChronoDateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
