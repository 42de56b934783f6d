//! Rows to protobuf messages, and the states stored as text.

use crate::entity::{resource, subscription};
use crate::marketplace::state;
use chrono::{DateTime, Utc};
use marketbridge_core::metadata::json_to_metadata;
use marketbridge_core::time::to_timestamp;
use marketbridge_core::{Error, Marketplace, Result};
use marketbridge_proto::common::v1::MarketplaceRef;
use marketbridge_proto::provisioning::v1 as pb;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Resource statuses, as stored.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const ONBOARDING: &str = "onboarding";
    pub const READY: &str = "ready";
    pub const SUSPENDED: &str = "suspended";
    pub const ERROR: &str = "error";
    pub const UNINSTALLED: &str = "uninstalled";
}

/// Resource ownership, as stored.
pub mod ownership {
    /// Created through the marketplace.
    pub const OWNED: &str = "owned";
    /// Imported: billed by the provider, detached when removed.
    pub const LINKED: &str = "linked";
}

/// Subscription scopes, as stored.
pub mod scope {
    pub const RESOURCE: &str = "resource";
    pub const ACCOUNT: &str = "account";
}

/// A project connection, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConnection {
    pub project_id: String,
    #[serde(default)]
    pub targets: Vec<String>,
    pub connected_at: DateTime<Utc>,
}

pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

pub fn from_json<T: for<'de> Deserialize<'de> + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}

pub fn marketplace_of(name: &str) -> Result<Marketplace> {
    Marketplace::parse("marketplace", name)
        .map_err(|_| Error::internal(format!("stored marketplace `{name}` unknown")))
}

pub fn state_to_proto(value: &str) -> pb::SubscriptionState {
    match value {
        state::REQUESTED => pb::SubscriptionState::Requested,
        state::APPROVED => pb::SubscriptionState::Approved,
        state::ACTIVE => pb::SubscriptionState::Active,
        state::PENDING_PLAN_CHANGE => pb::SubscriptionState::PendingPlanChange,
        state::PENDING_CANCELLATION => pb::SubscriptionState::PendingCancellation,
        state::CANCELLED => pb::SubscriptionState::Cancelled,
        state::REJECTED => pb::SubscriptionState::Rejected,
        _ => pb::SubscriptionState::Unspecified,
    }
}

pub fn state_from_proto(value: pb::SubscriptionState) -> Option<&'static str> {
    match value {
        pb::SubscriptionState::Requested => Some(state::REQUESTED),
        pb::SubscriptionState::Approved => Some(state::APPROVED),
        pb::SubscriptionState::Active => Some(state::ACTIVE),
        pb::SubscriptionState::PendingPlanChange => Some(state::PENDING_PLAN_CHANGE),
        pb::SubscriptionState::PendingCancellation => Some(state::PENDING_CANCELLATION),
        pb::SubscriptionState::Cancelled => Some(state::CANCELLED),
        pb::SubscriptionState::Rejected => Some(state::REJECTED),
        pb::SubscriptionState::Unspecified => None,
    }
}

pub fn status_to_proto(value: &str) -> pb::ResourceStatus {
    match value {
        status::PENDING => pb::ResourceStatus::Pending,
        status::ONBOARDING => pb::ResourceStatus::Onboarding,
        status::READY => pb::ResourceStatus::Ready,
        status::SUSPENDED => pb::ResourceStatus::Suspended,
        status::ERROR => pb::ResourceStatus::Error,
        status::UNINSTALLED => pb::ResourceStatus::Uninstalled,
        _ => pb::ResourceStatus::Unspecified,
    }
}

pub fn status_from_proto(value: pb::ResourceStatus) -> Option<&'static str> {
    match value {
        pb::ResourceStatus::Pending => Some(status::PENDING),
        pb::ResourceStatus::Onboarding => Some(status::ONBOARDING),
        pb::ResourceStatus::Ready => Some(status::READY),
        pb::ResourceStatus::Suspended => Some(status::SUSPENDED),
        pb::ResourceStatus::Error => Some(status::ERROR),
        pb::ResourceStatus::Uninstalled => Some(status::UNINSTALLED),
        pb::ResourceStatus::Unspecified => None,
    }
}

fn marketplace_value(name: &str) -> i32 {
    Marketplace::parse("marketplace", name)
        .map(Marketplace::to_proto)
        .unwrap_or(0)
}

pub fn subscription_to_proto(
    row: &subscription::Model,
    resource_ids: Vec<String>,
) -> pb::Subscription {
    pb::Subscription {
        id: row.id.clone(),
        account_id: row.account_id.clone(),
        marketplace_ref: Some(MarketplaceRef {
            marketplace: marketplace_value(&row.marketplace),
            external_id: row.external_id.clone(),
        }),
        product_id: row.product_id.clone(),
        plan_id: row.plan_id.clone(),
        pending_plan_id: row.pending_plan_id.clone(),
        state: state_to_proto(&row.state) as i32,
        scope: if row.scope == scope::RESOURCE {
            pb::SubscriptionScope::Resource
        } else {
            pb::SubscriptionScope::Account
        } as i32,
        marketplace_state: row.marketplace_state.clone(),
        marketplace_update_time: row.marketplace_update_time.map(to_timestamp),
        usage_reporting_id: row.usage_reporting_id.clone(),
        order_id: row.order_id.clone(),
        awaiting_account_approval: row.awaiting_account_approval,
        reason: row.reason.clone(),
        resource_ids,
        attributes: from_json::<BTreeMap<String, String>>(&row.attributes),
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
        started_at: row.started_at.map(to_timestamp),
        ended_at: row.ended_at.map(to_timestamp),
    }
}

pub fn resource_to_proto(row: &resource::Model) -> pb::Resource {
    let metadata: serde_json::Value = serde_json::from_str(&row.metadata).unwrap_or_default();
    let connections: Vec<StoredConnection> = from_json(&row.connections);
    pb::Resource {
        id: row.id.clone(),
        account_id: row.account_id.clone(),
        subscription_id: row.subscription_id.clone(),
        product_id: row.product_id.clone(),
        plan_id: row.plan_id.clone(),
        name: row.name.clone(),
        metadata: json_to_metadata("metadata", &metadata).ok(),
        status: status_to_proto(&row.status) as i32,
        status_message: row.status_message.clone(),
        marketplace: marketplace_value(&row.marketplace),
        external_id: row.external_id.clone(),
        connections: connections
            .into_iter()
            .map(|c| pb::ProjectConnection {
                project_id: c.project_id,
                targets: c.targets,
                connected_at: Some(to_timestamp(c.connected_at)),
            })
            .collect(),
        secrets_version: row.secrets_version.max(0) as u32,
        driver: row.driver.clone(),
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
        deleted_at: row.deleted_at.map(to_timestamp),
        ownership: row.ownership.clone(),
        protocol_settings: crate::domain::protocol::to_proto(&row.protocol_settings),
        production_only: row.production_only,
    }
}
