//! `resources`: what we run for customers, with their encrypted secrets.

use crate::model::{Ownership, ResourceStatus, stored_id};
use marketbridge_core::Result;
use marketbridge_core::ids::{AccountId, ResourceId, SubscriptionId};
use sea_orm::entity::prelude::*;

/// A resource.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "resources")]
pub struct Model {
    /// `res_...`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The subscription paying for it.
    pub subscription_id: String,
    /// Product.
    pub product_id: String,
    /// Plan.
    pub plan_id: String,
    /// Customer-chosen name.
    pub name: String,
    /// Customer configuration, JSON object.
    pub metadata: String,
    /// `pending`, `onboarding`, `ready`, `suspended`, `error`, `uninstalled`.
    pub status: ResourceStatus,
    /// Message about the status.
    pub status_message: String,
    /// Marketplace it was bought through.
    pub marketplace: String,
    /// Marketplace-attached id.
    pub external_id: String,
    /// Connected projects, JSON array.
    pub connections: String,
    /// Current secrets, encrypted JSON.
    pub secrets: String,
    /// Version of the current secrets.
    pub secrets_version: i32,
    /// Secrets replaced by the last rotation, encrypted JSON, while valid.
    pub previous_secrets: Option<String>,
    /// When the previous secrets stop working.
    pub previous_secrets_expire_at: Option<ChronoDateTimeUtc>,
    /// Driver name.
    pub driver: String,
    /// The driver's own notes about the resource (names it created), JSON.
    pub driver_state: String,
    /// Created.
    pub created_at: ChronoDateTimeUtc,
    /// Last changed.
    pub updated_at: ChronoDateTimeUtc,
    /// Deleted.
    pub deleted_at: Option<ChronoDateTimeUtc>,
    /// `owned` (created through the marketplace) or `linked` (imported:
    /// never billed through the marketplace, detached when removed).
    pub ownership: Ownership,
    /// The marketplace's protocol settings, JSON object
    /// (`{"appUrls":[{url,target}],"experimentation":{...}}`).
    pub protocol_settings: String,
    /// Production deployments only: pushed secrets carry no development
    /// or preview values.
    pub production_only: bool,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The resource's id, typed.
    pub fn resource_id(&self) -> Result<ResourceId> {
        stored_id("resources.id", &self.id)
    }

    /// The owning account's id, typed.
    pub fn owner_id(&self) -> Result<AccountId> {
        stored_id("resources.account_id", &self.account_id)
    }

    /// The paying subscription's id, typed.
    pub fn paying_subscription_id(&self) -> Result<SubscriptionId> {
        stored_id("resources.subscription_id", &self.subscription_id)
    }
}
