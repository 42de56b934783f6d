//! The plan catalog, as the marketplaces ask for it.

use super::BillingDomain;
use crate::entity::{billing_resource, billing_subscription};
use marketbridge_catalog::{Catalog, Plan, PlanQuery, PlanScope};
use marketbridge_core::ids::AccountId;
use marketbridge_core::metadata::metadata_to_json;
use marketbridge_core::{Error, Marketplace, Result};
use marketbridge_proto::billing::v1 as pb;
use marketbridge_storage::db_error;
use sea_orm::EntityTrait;
use std::collections::HashMap;

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
                plans.push(self.plan_protos.get(&product.id, plan)?);
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
        self.plan_protos.get(&product.id, plan)
    }
}

/// Every plan of the catalog as served over gRPC, built once when the
/// service starts (the catalog does not change while it runs), so a listing
/// copies plans instead of converting prices and quotes at every call.
pub(crate) struct PlanProtos(HashMap<String, HashMap<String, pb::Plan>>);

impl PlanProtos {
    /// The plans of `catalog`. A plan that does not convert is left out: it
    /// is converted again, and fails the same way, when it is asked for.
    pub(crate) fn of(catalog: &Catalog) -> Self {
        let mut products = HashMap::new();
        for product in catalog.products() {
            let plans = product
                .plans
                .iter()
                .filter_map(|plan| Some((plan.id.clone(), plan.to_proto(&product.id).ok()?)))
                .collect();
            products.insert(product.id.clone(), plans);
        }
        Self(products)
    }

    /// `plan` of product `product_id`, as served.
    fn get(&self, product_id: &str, plan: &Plan) -> Result<pb::Plan> {
        match self.0.get(product_id).and_then(|plans| plans.get(&plan.id)) {
            Some(proto) => Ok(proto.clone()),
            None => plan.to_proto(product_id),
        }
    }
}
