//! The provider's Pub/Sub topic and its two subscriptions: a push
//! subscription that POSTs envelopes to the provider's endpoint and keeps
//! each message until it is acknowledged with a 2xx, and a pull subscription
//! with ack deadlines and redelivery.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use std::time::Instant;

/// A message published on the topic.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// Pub/Sub message id.
    pub message_id: String,
    /// The notification's `eventId`.
    pub event_id: String,
    /// The notification's `eventType`, when it has one.
    pub event_type: Option<String>,
    /// The notification (what `data` carries, decoded).
    pub data: Value,
    /// When it was published.
    pub publish_time: DateTime<Utc>,
}

impl Published {
    /// The Pub/Sub message JSON, `data` base64-encoded; push deliveries
    /// carry the id and time in both spellings.
    pub fn message_json(&self, both_spellings: bool) -> Value {
        let time = self
            .publish_time
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut message = json!({
            "data": STANDARD.encode(self.data.to_string()),
            "messageId": self.message_id,
            "publishTime": time,
        });
        if both_spellings {
            message["message_id"] = json!(self.message_id);
            message["publish_time"] = json!(time);
        }
        message
    }
}

/// One attempt to push a message to the provider.
#[derive(Debug, Clone, Serialize)]
pub struct PushAttempt {
    /// Pub/Sub message id.
    pub message_id: String,
    /// The notification's `eventId`.
    pub event_id: String,
    /// The notification's `eventType`.
    pub event_type: Option<String>,
    /// Status answered; 0 when the endpoint could not be reached.
    pub status: u16,
}

impl PushAttempt {
    /// True when Pub/Sub counts the answer as an acknowledgement.
    pub fn acknowledged(&self) -> bool {
        matches!(self.status, 102 | 200 | 201 | 202 | 204)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PendingPush {
    pub message: Published,
    pub attempts: u32,
    pub next_attempt: Instant,
}

#[derive(Debug, Clone)]
pub(crate) struct PullEntry {
    pub message: Published,
    pub ack_id: String,
    pub deadline: Option<DateTime<Utc>>,
    pub acked: bool,
    pub deliveries: u32,
}

/// The topic with its subscriptions.
#[derive(Debug)]
pub struct Topic {
    pub(crate) published: Vec<Published>,
    pub(crate) push_queue: Vec<PendingPush>,
    pub(crate) push_attempts: Vec<PushAttempt>,
    pub(crate) pull: Vec<PullEntry>,
    pub(crate) ack_deadline_seconds: i64,
    sequence: u64,
}

impl Topic {
    /// An empty topic whose pull subscription hands messages out for
    /// `ack_deadline_seconds`.
    pub fn new(ack_deadline_seconds: i64) -> Self {
        Self {
            published: Vec::new(),
            push_queue: Vec::new(),
            push_attempts: Vec::new(),
            pull: Vec::new(),
            ack_deadline_seconds,
            sequence: 0,
        }
    }

    /// Publishes a notification to both subscriptions.
    pub fn publish(
        &mut self,
        event_id: String,
        event_type: Option<String>,
        data: Value,
        now: DateTime<Utc>,
    ) {
        self.sequence += 1;
        let message = Published {
            message_id: format!("{}", 2_070_443_601_311_000 + self.sequence),
            event_id,
            event_type,
            data,
            publish_time: now,
        };
        self.published.push(message.clone());
        self.push_queue.push(PendingPush {
            message: message.clone(),
            attempts: 0,
            next_attempt: Instant::now(),
        });
        self.pull.push(PullEntry {
            message,
            ack_id: String::new(),
            deadline: None,
            acked: false,
            deliveries: 0,
        });
    }

    /// Hands out up to `max` available messages of the pull subscription.
    pub fn pull(&mut self, max: usize, now: DateTime<Utc>) -> Vec<Value> {
        let deadline = now + Duration::seconds(self.ack_deadline_seconds);
        let mut received = Vec::new();
        for entry in self.pull.iter_mut() {
            if received.len() >= max {
                break;
            }
            let available = !entry.acked && entry.deadline.is_none_or(|d| d <= now);
            if !available {
                continue;
            }
            entry.deliveries += 1;
            entry.ack_id = format!(
                "ack-{}-{}-{}",
                entry.message.message_id,
                entry.deliveries,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            entry.deadline = Some(deadline);
            received.push(json!({
                "ackId": entry.ack_id,
                "message": entry.message.message_json(false),
                "deliveryAttempt": entry.deliveries,
            }));
        }
        received
    }

    /// Acknowledges pull deliveries by ack id (stale ids are ignored).
    pub fn acknowledge(&mut self, ack_ids: &[String]) -> usize {
        let mut count = 0;
        for entry in self.pull.iter_mut() {
            if !entry.acked && !entry.ack_id.is_empty() && ack_ids.contains(&entry.ack_id) {
                entry.acked = true;
                count += 1;
            }
        }
        count
    }

    /// Moves the ack deadline of pull deliveries.
    pub fn modify_ack_deadline(&mut self, ack_ids: &[String], seconds: i64, now: DateTime<Utc>) {
        for entry in self.pull.iter_mut() {
            if !entry.acked && ack_ids.contains(&entry.ack_id) {
                entry.deadline = Some(now + Duration::seconds(seconds));
            }
        }
    }

    /// Messages of the pull subscription not acknowledged yet.
    pub fn unacknowledged_pulls(&self) -> usize {
        self.pull.iter().filter(|e| !e.acked).count()
    }
}
