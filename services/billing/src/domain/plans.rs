//! The plan catalog, as the marketplaces ask for it.

use super::BillingDomain;
use crate::entity::{billing_resource, billing_subscription};
use marketbridge_catalog::{PlanQuery, PlanScope};
use marketbridge_core::ids::AccountId;
use marketbridge_core::metadata::metadata_to_json;
use marketbridge_core::{Error, Marketplace, Result};
use marketbridge_proto::billing::v1 as pb;
use marketbridge_storage::db_error;
use sea_orm::EntityTrait;

impl BillingDomain {
    /// Plans for a product, an account or a resource.
    pub async fn list_plans(&self, request: pb::ListPlansRequest) -> Result<pb::ListPlansResponse> {
        let metadata = metadata_to_json(request.metadata.as_ref());
        let marketplace = if request.marketplace == 0 {
            None
        } else {
            Some(Marketplace::from_proto("marketplace", request.marketplace)?)
        };
        let scope = match pb::PlanScope::try_from(request.scope).unwrap_or_default() {
            pb::PlanScope::Resource => Some(PlanScope::Resource),
            pb::PlanScope::Account => Some(PlanScope::Installation),
            pb::PlanScope::Unspecified => None,
        };
        let mut product_id = request.product_id.clone();
        if !request.resource_id.is_empty() {
            let mapping = billing_resource::Entity::find_by_id(request.resource_id.clone())
                .one(&self.db)
                .await
                .map_err(db_error)?
                .ok_or_else(|| Error::not_found("resource not found"))?;
            let subscription = billing_subscription::Entity::find_by_id(mapping.subscription_id)
                .one(&self.db)
                .await
                .map_err(db_error)?
                .ok_or_else(|| Error::not_found("resource not found"))?;
            product_id = subscription.product_id;
        }
        // Plans reserved for some accounts (private offers) are matched on the
        // marketplace's id of the account asking.
        let account_external_id = if request.account_id.is_empty() {
            None
        } else {
            let account_id = AccountId::parse("accountId", &request.account_id)?;
            Some(self.account_identity(&account_id).await?.1)
        };
        let query = PlanQuery {
            metadata: &metadata,
            marketplace: marketplace.map(Marketplace::as_str),
            scope,
            account_external_id: account_external_id.as_ref().map(|id| id.as_str()),
        };
        let products: Vec<_> = if product_id.is_empty() {
            if scope.is_none() {
                return Err(Error::invalid_field("productId", "is required"));
            }
            self.catalog.products().iter().collect()
        } else {
            vec![
                self.catalog
                    .require_product("productSlug", &product_id)
                    .map_err(|e| {
                        Error::not_found(e.message().to_owned())
                            .with_user_message("This product does not exist")
                    })?,
            ]
        };
        let mut plans = Vec::new();
        for product in products {
            for plan in product.plans_for(&query) {
                plans.push(self.served_plans.get(product, plan)?);
            }
        }
        Ok(pb::ListPlansResponse { plans })
    }

    /// One plan.
    pub async fn get_plan(&self, request: pb::GetPlanRequest) -> Result<pb::Plan> {
        let product = self
            .catalog
            .product(&request.product_id)
            .ok_or_else(|| Error::not_found(format!("unknown product `{}`", request.product_id)))?;
        let plan = product
            .plan(&request.plan_id)
            .ok_or_else(|| Error::not_found(format!("unknown plan `{}`", request.plan_id)))?;
        self.served_plans.get(product, plan)
    }
}
