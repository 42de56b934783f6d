//! Catalog plans as the billing service's protobuf `Plan`.

use crate::model::{MetricKind, Plan, PlanKind, PlanScope};
use marketbridge_core::Result;
use marketbridge_core::money::Money;
use marketbridge_core::time::{parse_rfc3339, to_timestamp};
use marketbridge_proto::billing::v1 as pb;

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
