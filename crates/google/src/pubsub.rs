//! The Pub/Sub REST pull API of one subscription: `:pull`, `:acknowledge`
//! and `:modifyAckDeadline`, for providers without a public push endpoint.

use crate::api::GoogleApi;
use crate::notification::PubsubMessage;
use marketbridge_core::{Error, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Longest ack deadline Pub/Sub allows, in seconds.
pub const MAX_ACK_DEADLINE_SECONDS: u32 = 600;

/// One message handed out by `:pull`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedMessage {
    /// The id to acknowledge it with.
    #[serde(default)]
    pub ack_id: String,
    /// The message.
    #[serde(default)]
    pub message: PubsubMessage,
    /// Delivery attempt, when a dead-letter policy is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_attempt: Option<i64>,
}

/// The answer of `:pull` (`{}` when nothing is waiting).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullResponse {
    /// Messages, possibly none.
    #[serde(default)]
    pub received_messages: Vec<ReceivedMessage>,
}

/// Client of one pull subscription.
#[derive(Debug, Clone)]
pub struct PubsubClient {
    api: GoogleApi,
    subscription: String,
}

impl PubsubClient {
    /// A client of `subscription` (`projects/p/subscriptions/s`).
    pub fn new(api: GoogleApi, subscription: &str) -> Result<Self> {
        let subscription = subscription.trim().trim_matches('/');
        let parts: Vec<&str> = subscription.split('/').collect();
        let valid = parts.len() == 4
            && parts[0] == "projects"
            && parts[2] == "subscriptions"
            && [parts[1], parts[3]].iter().all(|p| {
                !p.is_empty()
                    && p.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'%')
                    })
            });
        if !valid {
            return Err(Error::invalid_field(
                "google.pull_subscription",
                "must look like projects/<project>/subscriptions/<subscription>",
            ));
        }
        Ok(Self {
            api,
            subscription: subscription.to_owned(),
        })
    }

    /// The subscription name.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// Pulls up to `max_messages` messages.
    pub async fn pull(&self, max_messages: u32) -> Result<Vec<ReceivedMessage>> {
        let path = format!("/v1/{}:pull", self.subscription);
        let answer = self
            .api
            .call(
                Method::POST,
                "pubsub.subscriptions.pull",
                &path,
                Some(&json!({"maxMessages": max_messages.max(1)})),
            )
            .await?;
        if answer.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        let response: PullResponse = answer.json()?;
        Ok(response.received_messages)
    }

    /// Acknowledges messages (they will not be delivered again).
    pub async fn acknowledge(&self, ack_ids: &[String]) -> Result<()> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        let path = format!("/v1/{}:acknowledge", self.subscription);
        self.api
            .call(
                Method::POST,
                "pubsub.subscriptions.acknowledge",
                &path,
                Some(&json!({"ackIds": ack_ids})),
            )
            .await?;
        Ok(())
    }

    /// Sets the ack deadline of messages (0 hands them back at once).
    pub async fn modify_ack_deadline(&self, ack_ids: &[String], seconds: u32) -> Result<()> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        let path = format!("/v1/{}:modifyAckDeadline", self.subscription);
        self.api
            .call(
                Method::POST,
                "pubsub.subscriptions.modifyAckDeadline",
                &path,
                Some(&json!({
                    "ackIds": ack_ids,
                    "ackDeadlineSeconds": seconds.min(MAX_ACK_DEADLINE_SECONDS),
                })),
            )
            .await?;
        Ok(())
    }
}
