//! The services' messages in Vercel's shapes, and Vercel's inputs as the
//! services' messages.

use marketbridge_core::money::Money;
use marketbridge_core::time::{from_timestamp, parse_rfc3339, to_rfc3339, to_timestamp};
use marketbridge_core::{Error, Result, Validator};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1 as common;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_vercel::model::partner::{
    Balances, ReplBlock, ReplText, Resource, ResourceStatus,
};
use marketbridge_vercel::model::plan::{
    BillingPlan, PlanDetail, PlanScope, PlanType, QuoteLine, RequiredPolicy,
};
use marketbridge_vercel::model::{Balance, Notification, NotificationLevel, Secret};
use serde_json::Value;
use std::collections::BTreeMap;

fn money(value: Option<&common::Money>) -> Option<Money> {
    value.map(Money::from_proto)
}

fn decimal(value: Option<&common::Money>) -> Option<String> {
    money(value).map(|m| m.to_decimal_string())
}

fn details(details: &[billing_pb::PlanDetail]) -> Vec<PlanDetail> {
    details
        .iter()
        .map(|d| PlanDetail {
            label: d.label.clone(),
            value: (!d.value.is_empty()).then(|| d.value.clone()),
        })
        .collect()
}

/// A catalog plan as a Vercel `BillingPlan`.
pub fn billing_plan(plan: &billing_pb::Plan) -> BillingPlan {
    let prepayment = plan.r#type == billing_pb::PlanType::Prepayment as i32;
    let scope = if plan.scope == billing_pb::PlanScope::Account as i32 {
        PlanScope::Installation
    } else {
        PlanScope::Resource
    };
    BillingPlan {
        id: plan.id.clone(),
        plan_type: if prepayment {
            PlanType::Prepayment
        } else {
            PlanType::Subscription
        },
        name: plan.name.clone(),
        description: plan.description.clone(),
        scope: Some(scope),
        payment_method_required: (!prepayment).then_some(plan.payment_method_required),
        preauthorization_amount: money(plan.preauthorization_amount.as_ref())
            .filter(|_| !prepayment)
            .map(|m| m.amount_minor as f64 / 100.0),
        initial_charge: decimal(plan.initial_charge.as_ref()).filter(|_| !prepayment),
        minimum_amount: decimal(plan.minimum_amount.as_ref()).filter(|_| prepayment),
        maximum_amount: decimal(plan.maximum_amount.as_ref()).filter(|_| prepayment),
        maximum_amount_auto_purchase_per_period: decimal(
            plan.maximum_amount_auto_purchase_per_period.as_ref(),
        )
        .filter(|_| prepayment),
        cost: (!plan.cost.is_empty()).then(|| plan.cost.clone()),
        details: details(&plan.details),
        highlighted_details: details(&plan.highlighted_details),
        quote: plan
            .quote
            .iter()
            .map(|line| QuoteLine {
                line: line.line.clone(),
                amount: decimal(line.amount.as_ref()).unwrap_or_else(|| "0.00".to_owned()),
            })
            .collect(),
        effective_date: plan
            .effective_date
            .as_ref()
            .and_then(|t| from_timestamp("effectiveDate", t).ok())
            .map(to_rfc3339),
        disabled: plan.disabled.then_some(true),
        required_policies: plan
            .required_policies
            .iter()
            .map(|p| RequiredPolicy {
                id: p.id.clone(),
                name: p.name.clone(),
                url: p.url.clone(),
            })
            .collect(),
        max_resources: (plan.max_resources > 0).then_some(plan.max_resources),
    }
}

/// The Vercel status of a resource.
pub fn resource_status(status: i32) -> ResourceStatus {
    match provisioning_pb::ResourceStatus::try_from(status).unwrap_or_default() {
        provisioning_pb::ResourceStatus::Pending => ResourceStatus::Pending,
        provisioning_pb::ResourceStatus::Onboarding => ResourceStatus::Onboarding,
        provisioning_pb::ResourceStatus::Ready => ResourceStatus::Ready,
        provisioning_pb::ResourceStatus::Suspended => ResourceStatus::Suspended,
        provisioning_pb::ResourceStatus::Uninstalled => ResourceStatus::Uninstalled,
        provisioning_pb::ResourceStatus::Error | provisioning_pb::ResourceStatus::Unspecified => {
            ResourceStatus::Error
        }
    }
}

/// The dashboard notice that goes with a resource's status, if any.
pub fn resource_notification(resource: &provisioning_pb::Resource) -> Option<Notification> {
    let message = Some(resource.status_message.clone()).filter(|m| !m.is_empty());
    match resource_status(resource.status) {
        ResourceStatus::Error => Some(Notification::new(
            NotificationLevel::Error,
            "Provisioning failed",
            message,
        )),
        ResourceStatus::Suspended => Some(Notification::new(
            NotificationLevel::Warn,
            "Suspended",
            message,
        )),
        ResourceStatus::Onboarding if message.is_some() => Some(Notification::new(
            NotificationLevel::Info,
            "Finish setting up",
            message,
        )),
        _ => None,
    }
}

/// A resource as Vercel shows it.
pub fn resource(resource: &provisioning_pb::Resource, plan: Option<BillingPlan>) -> Resource {
    Resource {
        id: resource.id.clone(),
        product_id: resource.product_id.clone(),
        name: resource.name.clone(),
        metadata: marketbridge_core::metadata::metadata_to_json(resource.metadata.as_ref()),
        status: resource_status(resource.status),
        billing_plan: plan,
        notification: resource_notification(resource),
        protocol_settings: resource
            .protocol_settings
            .as_ref()
            .and_then(protocol_settings_view),
    }
}

/// Stored protocol settings in Vercel's shape.
fn protocol_settings_view(settings: &provisioning_pb::ProtocolSettings) -> Option<Value> {
    let mut view = serde_json::Map::new();
    if let Some(app_urls) = &settings.app_urls {
        let urls: Vec<Value> = app_urls
            .urls
            .iter()
            .map(|u| serde_json::json!({"url": u.url, "target": u.target}))
            .collect();
        view.insert(
            "authentication".to_owned(),
            serde_json::json!({ "appUrls": urls }),
        );
    }
    if let Some(experimentation) = settings
        .experimentation_json
        .as_deref()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    {
        view.insert("experimentation".to_owned(), experimentation);
    }
    (!view.is_empty()).then_some(Value::Object(view))
}

/// `protocolSettings` of a provision or update, read leniently: unknown
/// parts are ignored; `authentication.appUrls` must be an array of
/// `{url, target}` and `experimentation` an object (provisioning checks the
/// URLs).
pub fn protocol_settings(
    value: Option<&Value>,
) -> Result<Option<provisioning_pb::ProtocolSettings>> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let object = value
        .as_object()
        .ok_or_else(|| Error::invalid_field("protocolSettings", "must be an object"))?;
    let app_urls = match object
        .get("authentication")
        .filter(|v| !v.is_null())
        .map(|a| a.get("appUrls"))
    {
        Some(Some(Value::Array(items))) => {
            let mut urls = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let text = |field: &str| item.get(field).and_then(Value::as_str).map(str::to_owned);
                let (Some(url), Some(target)) = (text("url"), text("target")) else {
                    return Err(Error::invalid_field(
                        format!("protocolSettings.authentication.appUrls[{index}]"),
                        "must be {url, target}",
                    ));
                };
                urls.push(provisioning_pb::AppUrl { url, target });
            }
            Some(provisioning_pb::AppUrls { urls })
        }
        Some(None) | Some(Some(Value::Null)) | None => None,
        Some(Some(_)) => {
            return Err(Error::invalid_field(
                "protocolSettings.authentication.appUrls",
                "must be an array",
            ));
        }
    };
    let experimentation_json = match object.get("experimentation") {
        None | Some(Value::Null) => None,
        Some(Value::Object(fields)) => Some(Value::Object(fields.clone()).to_string()),
        Some(_) => {
            return Err(Error::invalid_field(
                "protocolSettings.experimentation",
                "must be an object",
            ));
        }
    };
    Ok(Some(provisioning_pb::ProtocolSettings {
        app_urls,
        experimentation_json,
    }))
}

/// Secrets as Vercel takes them.
pub fn secrets(secrets: &[common::Secret]) -> Vec<Secret> {
    secrets
        .iter()
        .map(|s| Secret {
            name: s.name.clone(),
            value: s.value.clone(),
            prefix: None,
            environment_overrides: (!s.environment_overrides.is_empty())
                .then(|| s.environment_overrides.clone()),
        })
        .collect()
}

/// Balances as Vercel takes them (values in US cents).
pub fn balances(balances: &billing_pb::Balances) -> Balances {
    Balances {
        timestamp: balances
            .timestamp
            .as_ref()
            .and_then(|t| from_timestamp("timestamp", t).ok())
            .map(to_rfc3339)
            .unwrap_or_default(),
        balances: balances
            .balances
            .iter()
            .map(|b| Balance {
                resource_id: (!b.resource_id.is_empty()).then(|| b.resource_id.clone()),
                credit: (!b.credit.is_empty()).then(|| b.credit.clone()),
                name_label: (!b.name_label.is_empty()).then(|| b.name_label.clone()),
                currency_value_in_cents: b.value.as_ref().map(|v| v.amount_minor).unwrap_or(0),
            })
            .collect(),
    }
}

/// `acceptedPolicies` (policy → RFC 3339) as accepted terms.
pub fn accepted_terms(
    policies: &BTreeMap<String, String>,
    field: &str,
) -> Result<Vec<account_pb::AcceptedTerms>> {
    let mut validator = Validator::new();
    let mut terms = Vec::new();
    for (policy, at) in policies {
        let key = format!("{field}.{policy}");
        if policy.trim().is_empty() {
            validator.invalid(field, "policy ids must not be empty");
            continue;
        }
        match parse_rfc3339(&key, at) {
            Ok(time) => terms.push(account_pb::AcceptedTerms {
                policy_id: policy.clone(),
                accepted_at: Some(to_timestamp(time)),
            }),
            Err(_) => validator.invalid(key, "must be an ISO 8601 date-time"),
        }
    }
    validator.finish()?;
    Ok(terms)
}

/// A JSON object as protobuf metadata.
pub fn metadata(value: &serde_json::Value) -> Result<common::Metadata> {
    marketbridge_core::metadata::json_to_metadata("metadata", value)
}

/// Hours (possibly fractional, 0 to 720) as whole seconds.
pub fn grace_seconds(hours: Option<f64>) -> Result<u64> {
    let Some(hours) = hours else {
        return Ok(0);
    };
    if !hours.is_finite()
        || !(0.0..=marketbridge_vercel::model::partner::MAX_OLD_SECRETS_HOURS).contains(&hours)
    {
        return Err(Error::invalid_field(
            "delayOldSecretsExpirationHours",
            "must be a number of hours from 0 to 720",
        ));
    }
    Ok((hours * 3600.0).round() as u64)
}

fn repl_text(span: &provisioning_pb::TextSpan) -> ReplText {
    let non_empty = |value: &str| (!value.is_empty()).then(|| value.to_owned());
    ReplText {
        kind: "text".to_owned(),
        text: span.text.clone(),
        color: non_empty(&span.color),
        bold: span.bold.then_some(true),
        italic: span.italic.then_some(true),
        href: non_empty(&span.href),
    }
}

/// Console output as Vercel's blocks.
pub fn repl_blocks(blocks: &[provisioning_pb::OutputBlock]) -> Vec<ReplBlock> {
    use provisioning_pb::output_block::Block;
    blocks
        .iter()
        .filter_map(|block| match block.block.as_ref()? {
            Block::Paragraph(paragraph) => Some(ReplBlock::Paragraph {
                children: paragraph.spans.iter().map(repl_text).collect(),
            }),
            Block::Table(table) => Some(ReplBlock::Table {
                header: (!table.header.is_empty())
                    .then(|| table.header.iter().map(repl_text).collect()),
                rows: table
                    .rows
                    .iter()
                    .map(|row| row.cells.iter().map(repl_text).collect())
                    .collect(),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods_accept_fractions_in_range() {
        assert_eq!(grace_seconds(None).unwrap(), 0);
        assert_eq!(grace_seconds(Some(0.5)).unwrap(), 1800);
        assert_eq!(grace_seconds(Some(720.0)).unwrap(), 2_592_000);
        assert!(grace_seconds(Some(720.5)).is_err());
        assert!(grace_seconds(Some(-1.0)).is_err());
        assert!(grace_seconds(Some(f64::NAN)).is_err());
    }

    #[test]
    fn policies_need_valid_times() {
        let mut policies = BTreeMap::new();
        policies.insert("toc".to_owned(), "2024-02-28T10:00:00Z".to_owned());
        assert_eq!(
            accepted_terms(&policies, "acceptedPolicies").unwrap().len(),
            1
        );
        policies.insert("privacy".to_owned(), "yesterday".to_owned());
        let error = accepted_terms(&policies, "acceptedPolicies").unwrap_err();
        assert_eq!(error.fields()[0].field, "acceptedPolicies.privacy");
    }
}
