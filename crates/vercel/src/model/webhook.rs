//! Webhooks Vercel sends: the envelope, and lenient readers of the payloads
//! the provider acts on. Payload shapes drift between Vercel's docs, its
//! SDK and its example server, so every reader accepts each known variant.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Event types the provider acts on.
pub mod event_type {
    /// The integration was removed from the team (an uninstall).
    pub const CONFIGURATION_REMOVED: &str = "integration-configuration.removed";
    /// A resource was connected to a project.
    pub const PROJECT_CONNECTED: &str = "integration-resource.project-connected";
    /// A resource was disconnected from a project.
    pub const PROJECT_DISCONNECTED: &str = "integration-resource.project-disconnected";
    /// Prefix of every invoice event (`.created`, `.paid`, `.notpaid`,
    /// `.refunded`, `.overdue`).
    pub const INVOICE_PREFIX: &str = "marketplace.invoice.";
}

/// `{"id","type","createdAt","region"?,"payload"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEnvelope {
    /// Event id; the deduplication key.
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened, epoch milliseconds.
    #[serde(default)]
    pub created_at: Option<Value>,
    /// Region, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The payload.
    #[serde(default)]
    pub payload: Value,
}

impl WebhookEnvelope {
    /// `createdAt` as epoch milliseconds, whether sent as a number or text.
    pub fn created_at_millis(&self) -> Option<i64> {
        match self.created_at.as_ref()? {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

fn text_at(value: &Value, path: &[&str]) -> Option<String> {
    let mut current = value;
    for key in path {
        current = current.get(key)?;
    }
    match current {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn first_text(value: &Value, paths: &[&[&str]]) -> Option<String> {
    paths.iter().find_map(|path| text_at(value, path))
}

/// The installation an event concerns: `installationId`, the
/// `integrations[]` list, `configuration.id`, an `invoice.installationId`, or
/// the deprecated `installationIds[]`.
pub fn installation_id(payload: &Value) -> Option<String> {
    first_text(
        payload,
        &[
            &["installationId"],
            &["invoice", "installationId"],
            &["configuration", "id"],
        ],
    )
    .or_else(|| {
        payload
            .get("integrations")
            .and_then(Value::as_array)
            .and_then(|items| items.iter().find_map(|i| text_at(i, &["installationId"])))
    })
    .or_else(|| {
        payload
            .get("installationIds")
            .and_then(Value::as_array)
            .and_then(|ids| ids.iter().find_map(|id| id.as_str().map(str::to_owned)))
    })
}

/// What an invoice event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceEvent {
    /// The installation billed.
    pub installation_id: String,
    /// Vercel's invoice id.
    pub invoice_id: String,
    /// The state the event type implies.
    pub state: &'static str,
    /// Total, USD decimal, when given.
    pub total: Option<String>,
    /// Period start, when given.
    pub period_start: Option<String>,
    /// Period end, when given.
    pub period_end: Option<String>,
}

/// The invoice state an invoice event type implies; `None` for types that
/// carry no state.
pub fn invoice_state_of(event_type: &str) -> Option<&'static str> {
    match event_type.strip_prefix(event_type::INVOICE_PREFIX)? {
        "created" => Some("invoiced"),
        "paid" => Some("paid"),
        "notpaid" => Some("notpaid"),
        "refunded" => Some("refunded"),
        "overdue" => Some("overdue"),
        _ => None,
    }
}

/// Reads an invoice event; `None` when the type carries no state or the
/// payload names no installation or invoice.
pub fn invoice_event(event_type: &str, payload: &Value) -> Option<InvoiceEvent> {
    let state = invoice_state_of(event_type)?;
    let invoice_id = first_text(payload, &[&["invoiceId"], &["invoice", "id"]])?;
    let installation_id = installation_id(payload)?;
    let total = first_text(
        payload,
        &[
            &["invoiceTotal"],
            &["invoice", "total"],
            &["invoice", "amount"],
        ],
    );
    let period_start = first_text(
        payload,
        &[&["period", "start"], &["invoice", "period", "start"]],
    );
    let period_end = first_text(
        payload,
        &[&["period", "end"], &["invoice", "period", "end"]],
    );
    Some(InvoiceEvent {
        installation_id,
        invoice_id,
        state,
        total,
        period_start,
        period_end,
    })
}

/// What a project connection event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectConnectionEvent {
    /// The installation.
    pub installation_id: Option<String>,
    /// The resource (our id).
    pub resource_id: String,
    /// The project.
    pub project_id: String,
    /// Environments (`production`, `preview`, `development`).
    pub targets: Vec<String>,
    /// True for a connection, false for a disconnection.
    pub connected: bool,
}

/// Reads a project (dis)connection event; `None` when the type is another or
/// the payload names no resource or project.
pub fn project_connection_event(
    event_type: &str,
    payload: &Value,
) -> Option<ProjectConnectionEvent> {
    let connected = match event_type {
        event_type::PROJECT_CONNECTED => true,
        event_type::PROJECT_DISCONNECTED => false,
        _ => return None,
    };
    let resource_id = first_text(
        payload,
        &[
            &["resourceId"],
            &["resource", "id"],
            &["externalResourceId"],
            &["resource", "externalResourceId"],
        ],
    )?;
    let project_id = first_text(payload, &[&["projectId"], &["project", "id"]])?;
    let targets = payload
        .get("targets")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Some(ProjectConnectionEvent {
        installation_id: installation_id(payload),
        resource_id,
        project_id,
        targets,
        connected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn invoice_events_are_read_from_every_known_shape() {
        let example = json!({"installationId": "icfg_a", "invoiceId": "inv_1", "invoiceTotal": "12.34",
            "period": {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}});
        let event = invoice_event("marketplace.invoice.paid", &example).unwrap();
        assert_eq!(event.state, "paid");
        assert_eq!(event.total.as_deref(), Some("12.34"));
        assert_eq!(event.period_end.as_deref(), Some("2026-11-01T00:00:00Z"));
        let prose = json!({"invoice": {"id": "inv_2", "installationId": "icfg_b", "amount": 5}});
        let event = invoice_event("marketplace.invoice.notpaid", &prose).unwrap();
        assert_eq!(
            (event.invoice_id.as_str(), event.installation_id.as_str()),
            ("inv_2", "icfg_b")
        );
        assert_eq!(event.total.as_deref(), Some("5"));
        let legacy = json!({"installationIds": ["icfg_c"], "invoiceId": "inv_3"});
        assert_eq!(
            invoice_event("marketplace.invoice.created", &legacy)
                .unwrap()
                .state,
            "invoiced"
        );
        assert!(invoice_event("marketplace.invoice.created", &json!({})).is_none());
        assert!(invoice_event("marketplace.member.changed", &example).is_none());
    }

    #[test]
    fn connection_events_and_installations() {
        let payload = json!({"installationId": "icfg_a", "projectId": "prj_1", "resourceId": "res_1",
            "team": {"id": "team_1"}, "targets": ["production", "preview"]});
        let event = project_connection_event(event_type::PROJECT_CONNECTED, &payload).unwrap();
        assert!(event.connected);
        assert_eq!(event.targets, ["production", "preview"]);
        assert!(project_connection_event(event_type::PROJECT_DISCONNECTED, &payload).is_some());
        let removed = json!({"configuration": {"id": "icfg_z", "projects": []}});
        assert_eq!(installation_id(&removed).as_deref(), Some("icfg_z"));
        let listed = json!({"integrations": [{"installationId": "icfg_y"}]});
        assert_eq!(installation_id(&listed).as_deref(), Some("icfg_y"));
    }

    #[test]
    fn created_at_is_read_as_number_or_text() {
        let envelope: WebhookEnvelope = serde_json::from_value(
            json!({"id": "evt_1", "type": "x", "createdAt": 1712345678901_i64, "payload": {}}),
        )
        .unwrap();
        assert_eq!(envelope.created_at_millis(), Some(1712345678901));
        let envelope: WebhookEnvelope =
            serde_json::from_value(json!({"id": "evt_1", "type": "x", "createdAt": "17"})).unwrap();
        assert_eq!(envelope.created_at_millis(), Some(17));
    }
}
