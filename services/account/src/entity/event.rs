//! `marketplace_events`: the inbox of every notification a marketplace sent.

use crate::model::EventStatus;
use marketbridge_core::ids::EventId;
use marketbridge_core::{Error, Result};
use sea_orm::entity::prelude::*;

/// A recorded marketplace event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "marketplace_events")]
pub struct Model {
    /// `evt_...`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Sender.
    pub marketplace: String,
    /// The marketplace's event id; unique per marketplace.
    pub external_id: String,
    /// Event type, verbatim.
    pub event_type: String,
    /// Payload as received (JSON).
    pub payload: String,
    /// When the marketplace says it happened.
    pub occurred_at: Option<ChronoDateTimeUtc>,
    /// When we recorded it.
    pub received_at: ChronoDateTimeUtc,
    /// `received`, `processed`, `ignored`, `failed`.
    pub status: EventStatus,
    /// Last processing error.
    pub error: String,
    /// `webhook`, `pubsub_push`, `pubsub_pull`.
    pub channel: String,
    /// Our account it concerns, once known.
    pub account_id: Option<String>,
    /// How many times the marketplace delivered it (more than one: the
    /// redeliveries were acknowledged as duplicates).
    pub deliveries: i32,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// Our id of the event; a stored id that does not parse is an error.
    pub fn event_id(&self) -> Result<EventId> {
        EventId::parse("event.id", &self.id)
            .map_err(|_| Error::internal(format!("stored event id `{}` is malformed", self.id)))
    }
}
