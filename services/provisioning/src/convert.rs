//! Rows to protobuf messages, and stored JSON columns read back. A column
//! that does not parse is an error, never a default: a default would be
//! written back over the stored value on the next change.

use crate::entity::{resource, subscription};
use crate::model::{ResourceStatus, SubscriptionScope, SubscriptionState};
use chrono::{DateTime, Utc};
use marketbridge_core::metadata::json_to_metadata;
use marketbridge_core::time::to_timestamp;
use marketbridge_core::{Error, Marketplace, Result};
use marketbridge_proto::common::v1::MarketplaceRef;
use marketbridge_proto::provisioning::v1 as pb;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A project connection, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConnection {
    pub project_id: String,
    #[serde(default)]
    pub targets: Vec<String>,
    pub connected_at: DateTime<Utc>,
}

/// A value as JSON text for a column.
pub fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::internal(format!("cannot encode JSON: {e}")))
}

/// A stored JSON column read back; `column` names it in the error.
pub fn from_json<T: DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Error::internal(format!("stored {column} unreadable: {e}")))
}

/// A stored JSON object of strings (`subscriptions.attributes`).
pub fn attributes(row: &subscription::Model) -> Result<BTreeMap<String, String>> {
    from_json("subscriptions.attributes", &row.attributes)
}

pub fn marketplace_of(name: &str) -> Result<Marketplace> {
    Marketplace::parse("marketplace", name)
        .map_err(|_| Error::internal(format!("stored marketplace `{name}` unknown")))
}

pub fn state_to_proto(value: SubscriptionState) -> pb::SubscriptionState {
    match value {
        SubscriptionState::Requested => pb::SubscriptionState::Requested,
        SubscriptionState::Approved => pb::SubscriptionState::Approved,
        SubscriptionState::Active => pb::SubscriptionState::Active,
        SubscriptionState::PendingPlanChange => pb::SubscriptionState::PendingPlanChange,
        SubscriptionState::PendingCancellation => pb::SubscriptionState::PendingCancellation,
        SubscriptionState::Cancelled => pb::SubscriptionState::Cancelled,
        SubscriptionState::Rejected => pb::SubscriptionState::Rejected,
    }
}

pub fn state_from_proto(value: pb::SubscriptionState) -> Option<SubscriptionState> {
    match value {
        pb::SubscriptionState::Requested => Some(SubscriptionState::Requested),
        pb::SubscriptionState::Approved => Some(SubscriptionState::Approved),
        pb::SubscriptionState::Active => Some(SubscriptionState::Active),
        pb::SubscriptionState::PendingPlanChange => Some(SubscriptionState::PendingPlanChange),
        pb::SubscriptionState::PendingCancellation => Some(SubscriptionState::PendingCancellation),
        pb::SubscriptionState::Cancelled => Some(SubscriptionState::Cancelled),
        pb::SubscriptionState::Rejected => Some(SubscriptionState::Rejected),
        pb::SubscriptionState::Unspecified => None,
    }
}

pub fn scope_from_proto(value: pb::SubscriptionScope) -> Option<SubscriptionScope> {
    match value {
        pb::SubscriptionScope::Resource => Some(SubscriptionScope::Resource),
        pb::SubscriptionScope::Account => Some(SubscriptionScope::Account),
        pb::SubscriptionScope::Unspecified => None,
    }
}

pub fn status_to_proto(value: ResourceStatus) -> pb::ResourceStatus {
    match value {
        ResourceStatus::Pending => pb::ResourceStatus::Pending,
        ResourceStatus::Onboarding => pb::ResourceStatus::Onboarding,
        ResourceStatus::Ready => pb::ResourceStatus::Ready,
        ResourceStatus::Suspended => pb::ResourceStatus::Suspended,
        ResourceStatus::Error => pb::ResourceStatus::Error,
        ResourceStatus::Uninstalled => pb::ResourceStatus::Uninstalled,
    }
}

pub fn status_from_proto(value: pb::ResourceStatus) -> Option<ResourceStatus> {
    match value {
        pb::ResourceStatus::Pending => Some(ResourceStatus::Pending),
        pb::ResourceStatus::Onboarding => Some(ResourceStatus::Onboarding),
        pb::ResourceStatus::Ready => Some(ResourceStatus::Ready),
        pb::ResourceStatus::Suspended => Some(ResourceStatus::Suspended),
        pb::ResourceStatus::Error => Some(ResourceStatus::Error),
        pb::ResourceStatus::Uninstalled => Some(ResourceStatus::Uninstalled),
        pb::ResourceStatus::Unspecified => None,
    }
}

fn marketplace_value(name: &str) -> Result<i32> {
    marketplace_of(name).map(Marketplace::to_proto)
}

pub fn subscription_to_proto(
    row: &subscription::Model,
    resource_ids: Vec<String>,
) -> Result<pb::Subscription> {
    Ok(pb::Subscription {
        id: row.id.clone(),
        account_id: row.account_id.clone(),
        marketplace_ref: Some(MarketplaceRef {
            marketplace: marketplace_value(&row.marketplace)?,
            external_id: row.external_id.clone(),
        }),
        product_id: row.product_id.clone(),
        plan_id: row.plan_id.clone(),
        pending_plan_id: row.pending_plan_id.clone(),
        state: state_to_proto(row.state) as i32,
        scope: match row.scope {
            SubscriptionScope::Resource => pb::SubscriptionScope::Resource,
            SubscriptionScope::Account => pb::SubscriptionScope::Account,
        } as i32,
        marketplace_state: row.marketplace_state.clone(),
        marketplace_update_time: row.marketplace_update_time.map(to_timestamp),
        usage_reporting_id: row.usage_reporting_id.clone(),
        order_id: row.order_id.clone(),
        awaiting_account_approval: row.awaiting_account_approval,
        reason: row.reason.clone(),
        resource_ids,
        attributes: attributes(row)?.into_iter().collect(),
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
        started_at: row.started_at.map(to_timestamp),
        ended_at: row.ended_at.map(to_timestamp),
    })
}

/// A resource's stored connections.
pub fn connections(row: &resource::Model) -> Result<Vec<StoredConnection>> {
    from_json("resources.connections", &row.connections)
}

/// A resource's stored configuration.
pub fn metadata(row: &resource::Model) -> Result<serde_json::Value> {
    from_json("resources.metadata", &row.metadata)
}

pub fn resource_to_proto(row: &resource::Model) -> Result<pb::Resource> {
    let metadata = metadata(row)?;
    Ok(pb::Resource {
        id: row.id.clone(),
        account_id: row.account_id.clone(),
        subscription_id: row.subscription_id.clone(),
        product_id: row.product_id.clone(),
        plan_id: row.plan_id.clone(),
        name: row.name.clone(),
        metadata: json_to_metadata("metadata", &metadata).ok(),
        status: status_to_proto(row.status) as i32,
        status_message: row.status_message.clone(),
        marketplace: marketplace_value(&row.marketplace)?,
        external_id: row.external_id.clone(),
        connections: connections(row)?
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
        ownership: row.ownership.as_str().to_owned(),
        protocol_settings: crate::protocol::to_proto(&row.protocol_settings)?,
        production_only: row.production_only,
    })
}
