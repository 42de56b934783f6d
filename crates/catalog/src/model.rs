//! The catalog file's shape, and the rules plans and metadata follow.

use marketbridge_core::money::Money;
use marketbridge_core::{Error, Result, Validator};
use serde::Deserialize;
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, BTreeSet};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CatalogFile {
    #[serde(default)]
    pub(crate) products: Vec<Product>,
}

/// A product customers can buy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// Product id (also the Vercel product slug).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Driver that provisions it: `template`, `postgres`, or `plugin`.
    #[serde(default = "default_driver")]
    pub driver: String,
    /// Metadata fields customers fill in.
    #[serde(default)]
    pub metadata: Vec<MetadataField>,
    /// Settings of the `template` driver.
    #[serde(default)]
    pub template: TemplateOptions,
    /// Settings of the `postgres` driver, read by that driver.
    #[serde(default)]
    pub postgres: Option<toml::Table>,
    /// Settings of the `plugin` driver, read by that driver.
    #[serde(default)]
    pub plugin: Option<toml::Table>,
    /// The A2A Agent Card when the product is listed as an AI agent on
    /// Google Cloud Marketplace (`[products.agent]`, A2A field names).
    #[serde(default)]
    pub agent: Option<toml::Table>,
    /// Plans, in the order they are shown.
    #[serde(default)]
    pub plans: Vec<Plan>,
}

fn default_driver() -> String {
    "template".into()
}

/// One metadata field.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataField {
    /// Key in the metadata object.
    pub key: String,
    /// Must be present (after defaults).
    #[serde(default)]
    pub required: bool,
    /// Allowed values; empty allows any string.
    #[serde(default)]
    pub values: Vec<String>,
    /// Value used when the customer gives none.
    #[serde(default)]
    pub default: Option<String>,
}

/// The `template` driver's settings.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateOptions {
    /// Seconds before the resource is ready; 0 means ready at once.
    #[serde(default)]
    pub provisioning_delay_seconds: u64,
    /// Secret name → template.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Secret name → environment → template (per-environment overrides).
    #[serde(default)]
    pub environment_overrides: BTreeMap<String, BTreeMap<String, String>>,
}

/// A label and optional value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detail {
    /// Label.
    pub label: String,
    /// Value.
    #[serde(default)]
    pub value: Option<String>,
}

/// A quote line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteLine {
    /// What.
    pub line: String,
    /// Decimal amount.
    pub amount: String,
}

/// A policy to accept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredPolicy {
    /// Policy id.
    pub id: String,
    /// Name.
    pub name: String,
    /// URL.
    pub url: String,
}

/// How a plan is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanKind {
    /// Invoiced every period.
    #[default]
    Subscription,
    /// Credits bought up front.
    Prepayment,
}

/// What a plan covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanScope {
    /// One resource.
    #[default]
    Resource,
    /// The whole account (Vercel "installation").
    #[serde(alias = "account")]
    Installation,
}

/// How a metric's usage adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// Summed over the period.
    #[default]
    Interval,
    /// Latest value counts.
    Total,
    /// A rate.
    Rate,
}

/// A metered quantity.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Metric id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unit.
    #[serde(default)]
    pub unit: String,
    /// How it adds up.
    #[serde(default)]
    pub kind: MetricKind,
    /// Included per period.
    #[serde(default)]
    pub included: i64,
    /// Decimal price of one unit beyond the included quantity (up to 6
    /// decimals).
    #[serde(default = "zero")]
    pub unit_price: String,
    /// Google Service Control metric name.
    #[serde(default)]
    pub google_metric: Option<String>,
    /// AWS Marketplace usage dimension (the listing's API name) that
    /// `BatchMeterUsage` reports this metric under.
    #[serde(default)]
    pub aws_dimension: Option<String>,
    /// Azure Marketplace metering dimension id (the plan's custom meter)
    /// this metric is reported under.
    #[serde(default)]
    pub azure_dimension: Option<String>,
}

fn zero() -> String {
    "0".into()
}

impl Metric {
    /// Unit price in micro-units.
    pub fn unit_price_micros(&self) -> Result<i64> {
        parse_micros(&format!("metrics.{}.unit_price", self.id), &self.unit_price)
    }

    /// The marketplace's name for this metric (`google` -> the Service
    /// Control metric name); `None` when the marketplace does not meter it.
    pub fn marketplace_metric_name(&self, marketplace: &str) -> Option<&str> {
        match marketplace {
            "google" => self
                .google_metric
                .as_deref()
                .filter(|name| !name.is_empty()),
            "aws" => self
                .aws_dimension
                .as_deref()
                .filter(|name| !name.is_empty()),
            "azure" => self
                .azure_dimension
                .as_deref()
                .filter(|name| !name.is_empty()),
            _ => None,
        }
    }
}

/// Parses a decimal with up to six digits into micro-units.
pub fn parse_micros(field: &str, text: &str) -> Result<i64> {
    let invalid = || {
        Error::invalid_field(
            field,
            format!("`{text}` is not a decimal with at most 6 digits"),
        )
    };
    let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if whole.is_empty()
        || fraction.len() > 6
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<6}").parse().map_err(|_| invalid())?
    };
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(invalid)
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Plan id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// How it is paid.
    #[serde(default, rename = "type")]
    pub kind: PlanKind,
    /// What it covers.
    #[serde(default)]
    pub scope: PlanScope,
    /// Currency of every amount.
    #[serde(default = "usd")]
    pub currency: String,
    /// Base price per period (decimal).
    #[serde(default)]
    pub price: Option<String>,
    /// Display text for the price.
    #[serde(default)]
    pub cost: Option<String>,
    /// False for fully free plans; defaults to true.
    #[serde(default)]
    pub payment_method_required: Option<bool>,
    /// Test charge when adding a payment method (decimal).
    #[serde(default)]
    pub preauthorization_amount: Option<String>,
    /// Charged at sign-up (decimal).
    #[serde(default)]
    pub initial_charge: Option<String>,
    /// Prepayment minimum purchase (decimal).
    #[serde(default)]
    pub minimum_amount: Option<String>,
    /// Prepayment maximum purchase (decimal).
    #[serde(default)]
    pub maximum_amount: Option<String>,
    /// Prepayment cap on automatic purchases per period (decimal).
    #[serde(default)]
    pub maximum_amount_auto_purchase_per_period: Option<String>,
    /// Details.
    #[serde(default)]
    pub details: Vec<Detail>,
    /// Highlighted details.
    #[serde(default)]
    pub highlighted_details: Vec<Detail>,
    /// Fixed quote lines.
    #[serde(default)]
    pub quote: Vec<QuoteLine>,
    /// Effective date for changes (RFC 3339).
    #[serde(default)]
    pub effective_date: Option<String>,
    /// Shown but not selectable.
    #[serde(default)]
    pub disabled: bool,
    /// Policies to accept.
    #[serde(default)]
    pub required_policies: Vec<RequiredPolicy>,
    /// Most resources per account; 0 = unlimited.
    #[serde(default)]
    pub max_resources: u32,
    /// Metered quantities.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Numeric limits.
    #[serde(default)]
    pub limits: BTreeMap<String, i64>,
    /// Features that are on.
    #[serde(default)]
    pub features: Vec<String>,
    /// Marketplace name → that marketplace's plan id.
    #[serde(default)]
    pub marketplace_plan_ids: BTreeMap<String, String>,
    /// Metadata key → values for which the plan is offered.
    #[serde(default)]
    pub when: BTreeMap<String, Vec<String>>,
    /// Marketplaces the plan is offered on; empty for all.
    #[serde(default)]
    pub marketplaces: Vec<String>,
    /// Marketplace account ids the plan is reserved for (private offers);
    /// empty for everyone.
    #[serde(default)]
    pub only_for_accounts: Vec<String>,
}

fn usd() -> String {
    "USD".into()
}

/// Which plans a caller may see.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanQuery<'a> {
    /// Metadata entered so far (a JSON object).
    pub metadata: &'a Json,
    /// The marketplace asking (`vercel`, `google`); `None` for all.
    pub marketplace: Option<&'a str>,
    /// Only plans of this scope.
    pub scope: Option<PlanScope>,
    /// The marketplace id of the account asking, for private offers.
    pub account_external_id: Option<&'a str>,
}

impl Plan {
    fn money(&self, field: &str, value: &Option<String>) -> Result<Option<Money>> {
        value
            .as_deref()
            .map(|text| {
                Money::parse_decimal(&format!("plans.{}.{field}", self.id), text, &self.currency)
            })
            .transpose()
    }

    /// Base price per period (zero when none is given).
    pub fn price(&self) -> Result<Money> {
        Ok(self
            .money("price", &self.price)?
            .unwrap_or_else(|| Money::zero(self.currency.clone())))
    }

    /// Test charge amount.
    pub fn preauthorization(&self) -> Result<Option<Money>> {
        self.money("preauthorization_amount", &self.preauthorization_amount)
    }

    /// Sign-up charge.
    pub fn initial_charge_money(&self) -> Result<Option<Money>> {
        self.money("initial_charge", &self.initial_charge)
    }

    /// Prepayment minimum.
    pub fn minimum(&self) -> Result<Option<Money>> {
        self.money("minimum_amount", &self.minimum_amount)
    }

    /// Prepayment maximum.
    pub fn maximum(&self) -> Result<Option<Money>> {
        self.money("maximum_amount", &self.maximum_amount)
    }

    /// Prepayment auto-purchase cap.
    pub fn maximum_auto_purchase(&self) -> Result<Option<Money>> {
        self.money(
            "maximum_amount_auto_purchase_per_period",
            &self.maximum_amount_auto_purchase_per_period,
        )
    }

    /// Whether a payment method is required.
    pub fn requires_payment_method(&self) -> bool {
        self.payment_method_required.unwrap_or(true)
    }

    /// True when nothing about the plan is ever billed.
    pub fn is_free(&self) -> bool {
        self.kind == PlanKind::Subscription
            && !self.requires_payment_method()
            && self.price().map(|p| p.amount_minor == 0).unwrap_or(false)
            && self
                .metrics
                .iter()
                .all(|m| m.unit_price_micros().map(|p| p == 0).unwrap_or(false))
    }

    /// A metric by id.
    pub fn metric(&self, id: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.id == id)
    }

    /// The plan's id at a marketplace (its own id unless mapped).
    pub fn marketplace_plan_id(&self, marketplace: &str) -> String {
        self.marketplace_plan_ids
            .get(marketplace)
            .cloned()
            .unwrap_or_else(|| self.id.clone())
    }

    /// Whether the plan is offered for this metadata: every `when` key the
    /// metadata names must hold one of the listed values.
    pub fn matches_metadata(&self, metadata: &Json) -> bool {
        self.when
            .iter()
            .all(|(key, allowed)| match metadata.get(key) {
                None | Some(Json::Null) => true,
                Some(value) => allowed
                    .iter()
                    .any(|a| json_as_text(value).as_deref() == Some(a.as_str())),
            })
    }

    fn visible_to(&self, query: &PlanQuery<'_>) -> bool {
        let marketplace_ok = match query.marketplace {
            Some(name) => {
                self.marketplaces.is_empty() || self.marketplaces.iter().any(|m| m == name)
            }
            None => true,
        };
        let scope_ok = query.scope.is_none_or(|scope| scope == self.scope);
        let account_ok = self.only_for_accounts.is_empty()
            || query
                .account_external_id
                .is_some_and(|id| self.only_for_accounts.iter().any(|a| a == id));
        marketplace_ok && scope_ok && account_ok && self.matches_metadata(query.metadata)
    }

    fn check(&self) -> Result<()> {
        if self.id.trim().is_empty() {
            return Err(Error::validation("catalog: a plan has an empty id"));
        }
        self.price()?;
        self.preauthorization()?;
        self.initial_charge_money()?;
        self.minimum()?;
        self.maximum()?;
        self.maximum_auto_purchase()?;
        for line in &self.quote {
            Money::parse_decimal(
                &format!("plans.{}.quote", self.id),
                &line.amount,
                &self.currency,
            )?;
        }
        let mut metric_ids = BTreeSet::new();
        for metric in &self.metrics {
            if !metric_ids.insert(metric.id.as_str()) {
                return Err(Error::validation(format!(
                    "catalog: plan `{}` lists metric `{}` twice",
                    self.id, metric.id
                )));
            }
            metric.unit_price_micros()?;
        }
        Ok(())
    }
}

fn json_as_text(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Product {
    /// A plan by id.
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }

    /// The plans a caller may see, in file order.
    pub fn plans_for(&self, query: &PlanQuery<'_>) -> Vec<&Plan> {
        self.plans
            .iter()
            .filter(|plan| plan.visible_to(query))
            .collect()
    }

    /// A plan that can be chosen with this metadata, or a validation error on
    /// `billingPlanId`.
    pub fn plan_for_metadata(&self, plan_id: &str, metadata: &Json) -> Result<&Plan> {
        let plan = self.plan(plan_id).ok_or_else(|| {
            Error::invalid_field(
                "billingPlanId",
                format!("unknown plan `{plan_id}` for product `{}`", self.id),
            )
        })?;
        if plan.disabled {
            return Err(Error::invalid_field(
                "billingPlanId",
                format!("plan `{plan_id}` cannot be selected"),
            ));
        }
        if !plan.matches_metadata(metadata) {
            return Err(Error::invalid_field(
                "billingPlanId",
                format!("plan `{plan_id}` is not offered for this configuration"),
            )
            .with_user_message("This plan is not available for the options you chose"));
        }
        Ok(plan)
    }

    /// Checks customer metadata against the product's fields and fills in
    /// defaults. Unknown keys are kept (within the limits of
    /// `marketbridge_core::metadata`); errors name the field key.
    pub fn validate_metadata(&self, metadata: &Json) -> Result<Json> {
        marketbridge_core::metadata::check_limits("metadata", metadata)?;
        let mut object = match metadata {
            Json::Object(map) => map.clone(),
            Json::Null => Map::new(),
            _ => return Err(Error::invalid_field("metadata", "must be an object")),
        };
        let mut validator = Validator::new();
        for field in &self.metadata {
            let present = object.get(&field.key).filter(|v| !v.is_null()).cloned();
            let value = match (present, &field.default) {
                (Some(value), _) => value,
                (None, Some(default)) => {
                    object.insert(field.key.clone(), Json::String(default.clone()));
                    continue;
                }
                (None, None) => {
                    if field.required {
                        validator.invalid(field.key.clone(), "is required");
                    }
                    continue;
                }
            };
            match json_as_text(&value) {
                Some(text) if field.values.is_empty() || field.values.contains(&text) => {}
                Some(text) => validator.invalid(
                    field.key.clone(),
                    format!("`{text}` is not one of {}", field.values.join(", ")),
                ),
                None => validator.invalid(field.key.clone(), "must be a string, number or boolean"),
            }
        }
        validator.finish()?;
        Ok(Json::Object(object))
    }

    /// The product's A2A Agent Card as JSON, when it is an agent.
    pub fn agent_card(&self) -> Option<Json> {
        self.agent
            .as_ref()
            .and_then(|table| serde_json::to_value(table).ok())
    }

    pub(crate) fn check(&self) -> Result<()> {
        if let Some(card) = self.agent_card() {
            crate::agent::check_agent_card(&self.id, &card)?;
        } else if self.agent.is_some() {
            return Err(Error::validation(format!(
                "catalog: product `{}`: the agent card cannot be read as JSON",
                self.id
            )));
        }
        let mut plan_ids = BTreeSet::new();
        for plan in &self.plans {
            if !plan_ids.insert(plan.id.as_str()) {
                return Err(Error::validation(format!(
                    "catalog: product `{}` lists plan `{}` twice",
                    self.id, plan.id
                )));
            }
            plan.check().map_err(|e| {
                Error::validation(format!("catalog: product `{}`: {}", self.id, e.message()))
            })?;
        }
        Ok(())
    }
}
