//! The marketplace metered billing API (§6): batches of at most 25 usage
//! events, each answered with its own status. `Duplicate` (the hour was
//! taken before) counts as delivered.

use crate::api::{AzureApi, CallOptions};
use crate::model::{BatchUsageRequest, BatchUsageResponse, MAX_BATCH, UsageEvent, usage_status};
use marketbridge_core::{Error, Result};
use reqwest::Method;

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Taken now or before (`Accepted`, `Duplicate`).
    Delivered,
    /// Microsoft failed on it; send again.
    Retry,
    /// Refused for good (`Expired`, `ResourceNotActive`, bad input).
    Refused,
}

/// How a per-item status is handled.
pub fn outcome_of(status: &str) -> EventOutcome {
    match status {
        usage_status::ACCEPTED | usage_status::DUPLICATE => EventOutcome::Delivered,
        usage_status::ERROR | "" => EventOutcome::Retry,
        _ => EventOutcome::Refused,
    }
}

/// The client of the metering API.
#[derive(Debug, Clone)]
pub struct MeteringClient {
    api: AzureApi,
}

impl MeteringClient {
    /// A client over `api` (base URL `.../api`).
    pub fn new(api: AzureApi) -> Self {
        Self { api }
    }

    /// Sends up to [`MAX_BATCH`] events; the answer has one result per
    /// event. A `409` for the whole batch means every event was a
    /// duplicate.
    pub async fn send_batch(&self, events: &[UsageEvent]) -> Result<BatchUsageResponse> {
        if events.is_empty() || events.len() > MAX_BATCH {
            return Err(Error::validation(format!(
                "a usage batch holds 1 to {MAX_BATCH} events, not {}",
                events.len()
            )));
        }
        let body = BatchUsageRequest {
            request: events.to_vec(),
        };
        let answer = self
            .api
            .send(
                Method::POST,
                "/batchUsageEvent",
                "/batchUsageEvent",
                Some(&body),
                &CallOptions::default(),
            )
            .await?;
        match answer.status {
            200..=299 => answer.json(),
            409 => Ok(BatchUsageResponse {
                count: Some(events.len() as u64),
                result: events
                    .iter()
                    .map(|_| crate::model::UsageResult {
                        status: usage_status::DUPLICATE.to_owned(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            _ => Err(marketbridge_rpc::http::error_for_status(
                &answer,
                "Azure Marketplace batch usage",
            )),
        }
    }
}
