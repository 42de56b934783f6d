//! Webhooks as Vercel delivers them: a JSON envelope signed with the
//! integration's client secret (`x-vercel-signature`, hex HMAC-SHA1 of the
//! raw body), plus builders of the payloads the provider acts on.

use super::partner::PartnerAnswer;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

/// The signature Vercel puts on `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// An envelope with a fresh event id, stamped now.
pub fn envelope(event_type: &str, payload: Value) -> Value {
    json!({
        "id": format!("evt_{}", super::alnum_id(24)),
        "type": event_type,
        "createdAt": chrono::Utc::now().timestamp_millis(),
        "region": "iad1",
        "payload": payload,
    })
}

/// `marketplace.invoice.*` payload, in the example server's shape.
pub fn invoice_payload(installation_id: &str, invoice_id: &str, total: &str) -> Value {
    let now = chrono::Utc::now();
    json!({
        "installationId": installation_id,
        "invoiceId": invoice_id,
        "invoiceDate": now.to_rfc3339(),
        "invoiceTotal": total,
        "period": {"start": (now - chrono::Duration::days(30)).to_rfc3339(), "end": now.to_rfc3339()},
    })
}

/// `integration-configuration.removed` payload.
pub fn configuration_removed_payload(installation_id: &str) -> Value {
    json!({"configuration": {"id": installation_id, "projects": []}, "user": {"id": null}})
}

/// `integration-resource.project-(dis)connected` payload.
pub fn project_connection_payload(
    installation_id: &str,
    team_id: &str,
    resource_id: &str,
    project_id: &str,
) -> Value {
    json!({
        "installationId": installation_id,
        "projectId": project_id,
        "resourceId": resource_id,
        "team": {"id": team_id},
        "targets": ["production", "preview"],
    })
}

/// Delivers webhooks to one URL.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    http: reqwest::Client,
    url: String,
    secret: String,
}

impl WebhookSender {
    pub(crate) fn new(url: &str, secret: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            secret: secret.to_owned(),
        }
    }

    /// Delivers `envelope`, signed.
    pub async fn send(&self, envelope: &Value) -> PartnerAnswer {
        let body = envelope.to_string().into_bytes();
        let signed = signature(&self.secret, &body);
        self.send_raw(body, Some(&signed)).await
    }

    /// Delivers a new event of `event_type`; returns its envelope and the
    /// answer.
    pub async fn send_event(&self, event_type: &str, payload: Value) -> (Value, PartnerAnswer) {
        let envelope = envelope(event_type, payload);
        let answer = self.send(&envelope).await;
        (envelope, answer)
    }

    /// Delivers `body` with the given signature header (or none).
    pub async fn send_raw(&self, body: Vec<u8>, signature: Option<&str>) -> PartnerAnswer {
        let mut request = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-vercel-signature", signature);
        }
        let response = request.send().await.expect("the webhook endpoint answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        PartnerAnswer {
            status,
            headers,
            text,
            body,
        }
    }
}
