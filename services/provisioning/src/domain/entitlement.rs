//! "What may this customer use right now?", answered from stored state.

use super::ProvisioningDomain;
use crate::convert::state_to_proto;
use crate::entity::{resource, subscription};
use crate::model::{ResourceStatus, SubscriptionState};
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_proto::provisioning::v1 as pb;
use marketbridge_storage::db_error;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

impl ProvisioningDomain {
    /// Answers an entitlement check.
    pub async fn check_entitlement(
        &self,
        request: pb::CheckEntitlementRequest,
    ) -> Result<pb::CheckEntitlementResponse> {
        let selector = request
            .account
            .clone()
            .ok_or_else(|| Error::invalid_field("account", "is required"))?;
        let denied = |account: String, reason: &str| pb::CheckEntitlementResponse {
            allowed: false,
            reason: reason.to_owned(),
            entitlements: Vec::new(),
            account_id: account,
        };
        let account = match self.account(selector).await {
            Ok(account) => account,
            Err(error) if error.code() == ErrorCode::NotFound => {
                return Ok(denied(String::new(), "account_not_found"));
            }
            Err(error) => return Err(error),
        };
        if !account.active {
            return Ok(denied(account.id.into_string(), "account_deleted"));
        }
        let mut query = subscription::Entity::find()
            .filter(subscription::Column::AccountId.eq(account.id.as_str()))
            .filter(
                subscription::Column::State
                    .is_in(SubscriptionState::ALL.into_iter().filter(|s| s.is_usable())),
            )
            .order_by_asc(subscription::Column::Id);
        if !request.product_id.is_empty() {
            query = query.filter(subscription::Column::ProductId.eq(request.product_id.clone()));
        }
        if !request.resource_id.is_empty() {
            let Some(resource) = resource::Entity::find_by_id(request.resource_id.clone())
                .one(&self.db)
                .await
                .map_err(db_error)?
                .filter(|r| r.account_id == account.id.as_str())
            else {
                return Ok(denied(account.id.into_string(), "resource_not_found"));
            };
            match resource.status {
                ResourceStatus::Suspended => {
                    return Ok(denied(account.id.into_string(), "resource_suspended"));
                }
                ResourceStatus::Uninstalled => {
                    return Ok(denied(account.id.into_string(), "resource_deleted"));
                }
                _ => {}
            }
            query = query.filter(subscription::Column::Id.eq(resource.subscription_id));
        }
        let subscriptions = query.all(&self.db).await.map_err(db_error)?;
        let mut entitlements = Vec::with_capacity(subscriptions.len());
        for row in &subscriptions {
            let plan = self
                .catalog
                .product(&row.product_id)
                .and_then(|p| p.plan(&row.plan_id));
            let resource_ids = self
                .live_resources_of_subscription(&self.db, &row.subscription_id()?)
                .await?
                .into_iter()
                .filter(|r| r.status != ResourceStatus::Suspended)
                .map(|r| r.id)
                .collect();
            entitlements.push(pb::Entitlement {
                subscription_id: row.id.clone(),
                product_id: row.product_id.clone(),
                plan_id: row.plan_id.clone(),
                state: state_to_proto(row.state) as i32,
                resource_ids,
                limits: plan.map(|p| p.limits.clone()).unwrap_or_default(),
                features: plan.map(|p| p.features.clone()).unwrap_or_default(),
            });
        }
        if entitlements.is_empty() {
            return Ok(denied(account.id.into_string(), "no_active_subscription"));
        }
        let allowed = request.feature.is_empty()
            || entitlements.iter().any(|e| {
                e.features.contains(&request.feature)
                    || e.limits.get(&request.feature).is_some_and(|&v| v > 0)
            });
        Ok(pb::CheckEntitlementResponse {
            allowed,
            reason: if allowed {
                String::new()
            } else {
                "feature_not_in_plan".to_owned()
            },
            entitlements,
            account_id: account.id.into_string(),
        })
    }
}
