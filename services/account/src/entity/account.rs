//! `accounts`: one row per customer account of any marketplace.

use crate::model::{AccountState, SignupState};
use marketbridge_core::ids::AccountId;
use marketbridge_core::{Error, Result};
use sea_orm::entity::prelude::*;

/// A customer account.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    /// `acc_...`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// `vercel`, `google`, `direct`.
    pub marketplace: String,
    /// The marketplace's id; unique per marketplace.
    pub external_id: String,
    /// Display name.
    pub display_name: String,
    /// Marketplace URL of the account.
    pub url: String,
    /// Main contact, as JSON (`Person`).
    pub contact: String,
    /// People seen acting for it, as a JSON array.
    pub people: String,
    /// Company from the signup form.
    pub company: String,
    /// `active`, `deletion_pending`, `deleted`.
    pub state: AccountState,
    /// `not_required`, `pending`, `approving`, `approved`, `rejected`.
    pub signup_state: SignupState,
    /// Reason of the last signup rejection.
    pub signup_reason: String,
    /// Accepted terms, JSON object policy id → RFC 3339 time.
    pub accepted_terms: String,
    /// Granted scopes, JSON array.
    pub scopes: String,
    /// Encrypted marketplace access token.
    pub credential: Option<String>,
    /// Token type of the credential.
    pub credential_type: String,
    /// The marketplace's state, verbatim.
    pub marketplace_state: String,
    /// The marketplace's update time of that state.
    pub marketplace_update_time: Option<ChronoDateTimeUtc>,
    /// Extras, JSON object of strings.
    pub attributes: String,
    /// First seen.
    pub created_at: ChronoDateTimeUtc,
    /// Last changed.
    pub updated_at: ChronoDateTimeUtc,
    /// Deletion requested at.
    pub deletion_requested_at: Option<ChronoDateTimeUtc>,
    /// Billing finalized at.
    pub finalized_at: Option<ChronoDateTimeUtc>,
    /// Personal data erased.
    pub purged: bool,
    /// The superseded credential (encrypted) until the marketplace confirms
    /// it is revoked.
    pub previous_credential: Option<String>,
    /// When the credential was last rotated.
    pub credential_rotated_at: Option<ChronoDateTimeUtc>,
    /// The rotation that produced the current credential.
    pub credential_rotation_id: Option<String>,
    /// When the marketplace answered `410 Gone` for the account.
    pub marketplace_gone_at: Option<ChronoDateTimeUtc>,
    /// Why (the refused call and the answer).
    pub marketplace_gone_reason: Option<String>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// Our id of the account; a stored id that does not parse is an error.
    pub fn account_id(&self) -> Result<AccountId> {
        AccountId::parse("account.id", &self.id)
            .map_err(|_| Error::internal(format!("stored account id `{}` is malformed", self.id)))
    }
}
