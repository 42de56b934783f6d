//! `BillingPlan`: a plan as the Vercel dashboard shows it.

use serde::{Deserialize, Serialize};

/// How a plan is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlanType {
    /// Invoiced by the provider every period.
    Subscription,
    /// Credits bought up front.
    Prepayment,
}

/// What a plan covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlanScope {
    /// The whole installation.
    Installation,
    /// One resource.
    Resource,
}

/// A label with an optional value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanDetail {
    /// Label.
    pub label: String,
    /// Value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// One line of a price quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuoteLine {
    /// What is charged.
    pub line: String,
    /// Decimal amount in USD (`"20.00"`).
    pub amount: String,
}

/// A policy the customer must accept to choose the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequiredPolicy {
    /// Policy id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Where to read it.
    pub url: String,
}

/// A billing plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillingPlan {
    /// Plan id.
    pub id: String,
    /// How it is paid.
    #[serde(rename = "type")]
    pub plan_type: PlanType,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// What it covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<PlanScope>,
    /// Subscriptions only: false for fully free plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method_required: Option<bool>,
    /// USD amount test-charged when a payment method is added (a number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preauthorization_amount: Option<f64>,
    /// USD decimal invoiced at sign-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_charge: Option<String>,
    /// Prepayment: smallest purchase, USD decimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_amount: Option<String>,
    /// Prepayment: largest purchase, USD decimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_amount: Option<String>,
    /// Prepayment: cap on automatic purchases per period, USD decimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_amount_auto_purchase_per_period: Option<String>,
    /// Display text of the price (`$20.00/month`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    /// Details.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<PlanDetail>,
    /// Details always shown expanded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub highlighted_details: Vec<PlanDetail>,
    /// Price quote for the metadata given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quote: Vec<QuoteLine>,
    /// When the plan takes effect on a change (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_date: Option<String>,
    /// Shown but not selectable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Policies to accept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_policies: Vec<RequiredPolicy>,
    /// Most resources per installation (deprecated by Vercel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resources: Option<u32>,
}

/// `{"plans": [...]}`, the answer of every plan listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanList {
    /// The plans, in catalog order.
    pub plans: Vec<BillingPlan>,
}
