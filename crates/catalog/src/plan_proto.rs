//! Catalog plans as the billing service's protobuf `Plan`.

use crate::Catalog;
use crate::model::{MetricKind, Plan, PlanKind, PlanScope, Product};
use marketbridge_core::Result;
use marketbridge_core::money::Money;
use marketbridge_core::time::{parse_rfc3339, to_timestamp};
use marketbridge_proto::billing::v1 as pb;
use std::collections::HashMap;

impl Plan {
    /// The plan as served over gRPC. `product_id` names its product.
    pub fn to_proto(&self, product_id: &str) -> Result<pb::Plan> {
        let money = |value: Option<Money>| value.map(|m| m.to_proto());
        let price = self.price()?;
        let mut quote = Vec::new();
        if price.amount_minor > 0 {
            quote.push(pb::QuoteLine {
                line: format!("{} base price", self.name),
                amount: Some(price.to_proto()),
            });
        }
        for line in &self.quote {
            quote.push(pb::QuoteLine {
                line: line.line.clone(),
                amount: Some(
                    Money::parse_decimal("quote.amount", &line.amount, &self.currency)?.to_proto(),
                ),
            });
        }
        let details = |details: &[crate::model::Detail]| {
            details
                .iter()
                .map(|d| pb::PlanDetail {
                    label: d.label.clone(),
                    value: d.value.clone().unwrap_or_default(),
                })
                .collect::<Vec<_>>()
        };
        let metrics = self
            .metrics
            .iter()
            .map(|metric| {
                Ok(pb::PlanMetric {
                    metric_id: metric.id.clone(),
                    name: metric.name.clone(),
                    unit: metric.unit.clone(),
                    kind: match metric.kind {
                        MetricKind::Interval => pb::MetricKind::Interval,
                        MetricKind::Total => pb::MetricKind::Total,
                        MetricKind::Rate => pb::MetricKind::Rate,
                    } as i32,
                    included_quantity: metric.included,
                    unit_price_micros: metric.unit_price_micros()?,
                    marketplace_metric_names: metric
                        .google_metric
                        .iter()
                        .map(|name| ("google".to_owned(), name.clone()))
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(pb::Plan {
            id: self.id.clone(),
            product_id: product_id.to_owned(),
            r#type: match self.kind {
                PlanKind::Subscription => pb::PlanType::Subscription,
                PlanKind::Prepayment => pb::PlanType::Prepayment,
            } as i32,
            name: self.name.clone(),
            description: self.description.clone(),
            scope: match self.scope {
                PlanScope::Resource => pb::PlanScope::Resource,
                PlanScope::Installation => pb::PlanScope::Account,
            } as i32,
            price: Some(price.to_proto()),
            cost: self.cost.clone().unwrap_or_default(),
            payment_method_required: self.requires_payment_method(),
            preauthorization_amount: money(self.preauthorization()?),
            initial_charge: money(self.initial_charge_money()?),
            minimum_amount: money(self.minimum()?),
            maximum_amount: money(self.maximum()?),
            maximum_amount_auto_purchase_per_period: money(self.maximum_auto_purchase()?),
            details: details(&self.details),
            highlighted_details: details(&self.highlighted_details),
            quote,
            effective_date: self
                .effective_date
                .as_deref()
                .map(|text| parse_rfc3339("effective_date", text).map(to_timestamp))
                .transpose()?,
            disabled: self.disabled,
            required_policies: self
                .required_policies
                .iter()
                .map(|p| pb::Policy {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    url: p.url.clone(),
                })
                .collect(),
            max_resources: self.max_resources,
            metrics,
            limits: self.limits.clone(),
            features: self.features.clone(),
            marketplace_plan_ids: self.marketplace_plan_ids.clone(),
        })
    }
}

/// Every plan of a catalog in its protobuf form, converted once (a catalog
/// does not change while a service runs), so a listing copies plans instead
/// of converting prices and quotes at every call.
#[derive(Debug, Default)]
pub struct ServedPlans(HashMap<String, HashMap<String, pb::Plan>>);

impl ServedPlans {
    /// The plans of `catalog`. A plan that does not convert is left out: it
    /// is converted again, and fails the same way, when it is asked for.
    pub fn of(catalog: &Catalog) -> Self {
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

    /// `plan` of `product`, as [`Plan::to_proto`] gives it.
    pub fn get(&self, product: &Product, plan: &Plan) -> Result<pb::Plan> {
        match self
            .0
            .get(&product.id)
            .and_then(|plans| plans.get(&plan.id))
        {
            Some(proto) => Ok(proto.clone()),
            None => plan.to_proto(&product.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_plans_are_what_each_plan_converts_to() {
        let catalog = Catalog::builtin().expect("the built-in catalog");
        let served = ServedPlans::of(&catalog);
        let mut compared = 0;
        for product in catalog.products() {
            for plan in &product.plans {
                assert_eq!(
                    served.get(product, plan).unwrap(),
                    plan.to_proto(&product.id).unwrap()
                );
                compared += 1;
            }
        }
        assert!(compared > 1, "the built-in catalog has plans");
    }
}
