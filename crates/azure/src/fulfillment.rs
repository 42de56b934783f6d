//! The SaaS Fulfillment API v2 (§3): resolve, activate, read and list
//! subscriptions, the plans a subscription may move to, plan and quantity
//! changes, cancellation, and the operations API. Answers are read
//! leniently; the emulator's departures (§8.3: bare arrays, no paging, `[]`
//! for an unknown subscription's plans) are accepted too.

use crate::api::{AzureApi, CallOptions};
use crate::model::{AvailablePlan, Operation, Resolved, Subscription, status};
use marketbridge_core::crypto::SecretString;
use marketbridge_core::{Error, ErrorCode, Result};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

/// Most pages followed when listing subscriptions (100 each).
const MAX_PAGES: usize = 1000;

/// What became of an operation update (§3.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationUpdate {
    /// Microsoft took our decision.
    Taken,
    /// Microsoft had already settled it (auto-accepted, or a newer
    /// update): a `409` or another `4xx`.
    AlreadySettled,
}

/// The client of the Fulfillment API.
#[derive(Debug, Clone)]
pub struct FulfillmentClient {
    api: AzureApi,
}

fn subscription_path(id: &str) -> Result<String> {
    Ok(format!(
        "/saas/subscriptions/{}",
        path_segment("subscriptionId", id)?
    ))
}

/// Checks an id before it goes into a path: Microsoft's ids are GUIDs, and
/// anything with a separator could address another resource.
fn path_segment<'a>(field: &str, id: &'a str) -> Result<&'a str> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok && id != "." && id != ".." {
        Ok(id)
    } else {
        Err(Error::invalid_field(field, "is not a Marketplace id"))
    }
}

impl FulfillmentClient {
    /// A client over `api` (base URL `.../api`).
    pub fn new(api: AzureApi) -> Self {
        Self { api }
    }

    /// The API client.
    pub fn api(&self) -> &AzureApi {
        &self.api
    }

    /// Resolves a landing page token (already percent-decoded once). A
    /// token Microsoft refuses (`400`, `403`, `404`) is `Unauthenticated`.
    pub async fn resolve(&self, token: &SecretString) -> Result<Resolved> {
        let token = token.expose().trim();
        if token.is_empty() || token.len() > 8192 {
            return Err(Error::new(
                ErrorCode::Unauthenticated,
                "the purchase token is missing or too long",
            ));
        }
        let answer = self
            .api
            .send(
                Method::POST,
                "/saas/subscriptions/resolve",
                "/saas/subscriptions/resolve",
                None::<&Value>,
                &CallOptions {
                    marketplace_token: Some(token),
                    ..CallOptions::default()
                },
            )
            .await?;
        match answer.status {
            200..=299 => {
                let resolved: Resolved = answer.json()?;
                if resolved.id.is_empty() {
                    return Err(Error::unavailable(
                        "Azure Marketplace resolved the token to no subscription",
                    ));
                }
                Ok(resolved)
            }
            400 | 403 | 404 => Err(Error::new(
                ErrorCode::Unauthenticated,
                format!(
                    "Azure Marketplace does not accept the purchase token ({})",
                    answer.status
                ),
            )),
            _ => Err(marketbridge_rpc::http::error_for_status(
                &answer,
                "Azure Marketplace resolve",
            )),
        }
    }

    /// Activates a subscription with its purchased plan. Safe to repeat:
    /// a refusal is success when the subscription is `Subscribed` on that
    /// plan already.
    pub async fn activate(
        &self,
        subscription_id: &str,
        plan_id: &str,
        quantity: Option<u64>,
    ) -> Result<()> {
        let path = format!("{}/activate", subscription_path(subscription_id)?);
        let mut body = json!({ "planId": plan_id });
        if let Some(quantity) = quantity {
            body["quantity"] = json!(quantity);
        }
        let answer = self
            .api
            .send(
                Method::POST,
                "/saas/subscriptions/{id}/activate",
                &path,
                Some(&body),
                &CallOptions::default(),
            )
            .await?;
        if (200..300).contains(&answer.status) {
            return Ok(());
        }
        let error = marketbridge_rpc::http::error_for_status(&answer, "Azure Marketplace activate");
        if answer.status == 400 {
            let current = self.get_subscription(subscription_id).await?;
            if current
                .as_ref()
                .is_some_and(|s| s.status() == status::SUBSCRIBED && s.plan() == plan_id)
            {
                return Ok(());
            }
        }
        Err(error)
    }

    /// Reads a subscription; `None` when Microsoft does not know it.
    pub async fn get_subscription(&self, subscription_id: &str) -> Result<Option<Subscription>> {
        let answer = self
            .api
            .send(
                Method::GET,
                "/saas/subscriptions/{id}",
                &subscription_path(subscription_id)?,
                None::<&Value>,
                &CallOptions::default(),
            )
            .await?;
        match answer.status {
            200..=299 => Ok(Some(answer.json()?)),
            404 => Ok(None),
            _ => Err(marketbridge_rpc::http::error_for_status(
                &answer,
                "Azure Marketplace get subscription",
            )),
        }
    }

    /// Every subscription of the publisher, following `@nextLink`.
    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        #[derive(Deserialize, Default)]
        struct Page {
            #[serde(default)]
            subscriptions: Vec<Subscription>,
            #[serde(default, rename = "@nextLink")]
            next_link: Option<String>,
        }
        let mut all = Vec::new();
        let mut next = "/saas/subscriptions".to_owned();
        for _ in 0..MAX_PAGES {
            let answer = self
                .api
                .call(
                    Method::GET,
                    "/saas/subscriptions",
                    &next,
                    None::<&Value>,
                    &CallOptions::default(),
                )
                .await?;
            let page: Page = if answer.body.iter().all(u8::is_ascii_whitespace) {
                Page::default()
            } else {
                answer.json()?
            };
            all.extend(page.subscriptions);
            match page.next_link.filter(|l| !l.is_empty()) {
                Some(link) if self.same_origin(&link) => next = link,
                Some(link) => {
                    return Err(Error::unavailable(format!(
                        "Azure Marketplace sent a next page on another host: {link}"
                    )));
                }
                None => return Ok(all),
            }
        }
        Ok(all)
    }

    fn same_origin(&self, link: &str) -> bool {
        !link.contains("://") || {
            let origin = |url: &str| {
                let rest = url.split("://").nth(1).unwrap_or_default();
                rest.split('/').next().unwrap_or_default().to_owned()
            };
            origin(link) == origin(self.api.base_url())
        }
    }

    /// The plans the subscription may move to.
    pub async fn list_available_plans(&self, subscription_id: &str) -> Result<Vec<AvailablePlan>> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Plans {
            Wrapped { plans: Vec<AvailablePlan> },
            Bare(Vec<AvailablePlan>),
        }
        let answer = self
            .api
            .call(
                Method::GET,
                "/saas/subscriptions/{id}/listAvailablePlans",
                &format!("{}/listAvailablePlans", subscription_path(subscription_id)?),
                None::<&Value>,
                &CallOptions::default(),
            )
            .await?;
        Ok(match answer.json::<Plans>()? {
            Plans::Wrapped { plans } | Plans::Bare(plans) => plans,
        })
    }

    /// Moves the subscription to another plan; returns the
    /// `Operation-Location` to follow.
    pub async fn change_plan(&self, subscription_id: &str, plan_id: &str) -> Result<String> {
        self.patch(subscription_id, json!({ "planId": plan_id }))
            .await
    }

    /// Changes the seats; returns the `Operation-Location` to follow.
    pub async fn change_quantity(&self, subscription_id: &str, quantity: u64) -> Result<String> {
        if quantity == 0 {
            return Err(Error::invalid_field("quantity", "must be at least 1"));
        }
        self.patch(subscription_id, json!({ "quantity": quantity }))
            .await
    }

    async fn patch(&self, subscription_id: &str, body: Value) -> Result<String> {
        let answer = self
            .api
            .call(
                Method::PATCH,
                "/saas/subscriptions/{id}",
                &subscription_path(subscription_id)?,
                Some(&body),
                &CallOptions::default(),
            )
            .await?;
        Ok(operation_location(&answer))
    }

    /// Cancels the subscription (it ends `Unsubscribed`); returns the
    /// `Operation-Location`. A subscription Microsoft no longer has is
    /// already cancelled.
    pub async fn delete_subscription(&self, subscription_id: &str) -> Result<Option<String>> {
        let answer = self
            .api
            .send(
                Method::DELETE,
                "/saas/subscriptions/{id}",
                &subscription_path(subscription_id)?,
                None::<&Value>,
                &CallOptions::default(),
            )
            .await?;
        match answer.status {
            200..=299 => Ok(Some(operation_location(&answer))),
            404 => Ok(None),
            _ => Err(marketbridge_rpc::http::error_for_status(
                &answer,
                "Azure Marketplace delete subscription",
            )),
        }
    }

    /// The operations waiting for the publisher.
    pub async fn list_operations(&self, subscription_id: &str) -> Result<Vec<Operation>> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Operations {
            Wrapped { operations: Vec<Operation> },
            Bare(Vec<Operation>),
        }
        let answer = self
            .api
            .call(
                Method::GET,
                "/saas/subscriptions/{id}/operations",
                &format!("{}/operations", subscription_path(subscription_id)?),
                None::<&Value>,
                &CallOptions::default(),
            )
            .await?;
        Ok(match answer.json::<Operations>()? {
            Operations::Wrapped { operations } | Operations::Bare(operations) => operations,
        })
    }

    /// Reads an operation; `None` when Microsoft does not know it (`404`,
    /// or `400` as the real API answers for unknown ids).
    pub async fn get_operation(
        &self,
        subscription_id: &str,
        operation_id: &str,
    ) -> Result<Option<Operation>> {
        let answer = self
            .api
            .send(
                Method::GET,
                "/saas/subscriptions/{id}/operations/{operationId}",
                &operation_path(subscription_id, operation_id)?,
                None::<&Value>,
                &CallOptions::default(),
            )
            .await?;
        match answer.status {
            200..=299 => Ok(Some(answer.json()?)),
            400 | 404 => Ok(None),
            _ => Err(marketbridge_rpc::http::error_for_status(
                &answer,
                "Azure Marketplace get operation",
            )),
        }
    }

    /// Follows an `Operation-Location` URL.
    pub async fn get_operation_at(&self, location: &str) -> Result<Option<Operation>> {
        if !self.same_origin(location) {
            return Err(Error::unavailable(format!(
                "Azure Marketplace sent an operation on another host: {location}"
            )));
        }
        let answer = self
            .api
            .send(
                Method::GET,
                "/saas/subscriptions/{id}/operations/{operationId}",
                location,
                None::<&Value>,
                &CallOptions::default(),
            )
            .await?;
        match answer.status {
            200..=299 => Ok(Some(answer.json()?)),
            400 | 404 => Ok(None),
            _ => Err(marketbridge_rpc::http::error_for_status(
                &answer,
                "Azure Marketplace get operation",
            )),
        }
    }

    /// Accepts (`success`) or rejects an operation waiting for us. Any
    /// `4xx` means Microsoft settled it already (§3.9).
    pub async fn update_operation(
        &self,
        subscription_id: &str,
        operation_id: &str,
        success: bool,
    ) -> Result<OperationUpdate> {
        let body = json!({ "status": if success { "Success" } else { "Failure" } });
        let answer = self
            .api
            .send(
                Method::PATCH,
                "/saas/subscriptions/{id}/operations/{operationId}",
                &operation_path(subscription_id, operation_id)?,
                Some(&body),
                &CallOptions::default(),
            )
            .await?;
        match answer.status {
            200..=299 => Ok(OperationUpdate::Taken),
            429 => Err(marketbridge_rpc::http::error_for_status(
                &answer,
                "Azure Marketplace update operation",
            )),
            400..=499 => Ok(OperationUpdate::AlreadySettled),
            _ => Err(marketbridge_rpc::http::error_for_status(
                &answer,
                "Azure Marketplace update operation",
            )),
        }
    }
}

fn operation_path(subscription_id: &str, operation_id: &str) -> Result<String> {
    Ok(format!(
        "{}/operations/{}",
        subscription_path(subscription_id)?,
        path_segment("operationId", operation_id)?
    ))
}

fn operation_location(answer: &marketbridge_rpc::http::HttpAnswer) -> String {
    answer
        .headers
        .get("operation-location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_separators_never_reach_a_path() {
        assert!(subscription_path("0f1e2d3c-aaaa-bbbb-cccc-000000000001").is_ok());
        for bad in ["", "..", "a/b", "a?b", "a#b", "a%2Fb", "a b"] {
            assert!(subscription_path(bad).is_err(), "{bad}");
        }
    }
}
