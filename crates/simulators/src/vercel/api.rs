//! The fake Vercel API: every endpoint of the Vercel REST API the provider
//! calls, checking the installation's bearer token, the body's required
//! fields and the contract's rules, and remembering what it was sent.

use super::Shared;
use super::access::authorize;
use super::refusal::{Refusal, not_found, refusal};
use super::state::{SimInvoice, SimResource};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use serde_json::{Value, json};
use std::sync::Arc;

type Answer = Result<Response, Refusal>;

fn bad_request(message: &str) -> Refusal {
    refusal(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn status_only(status: StatusCode) -> Response {
    status.into_response()
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The routes of the Vercel API.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/installations/{id}", patch(update_installation))
        .route("/v1/installations/{id}/account", get(account_info))
        .route("/v1/installations/{id}/member/{member}", get(member))
        .route("/v1/installations/{id}/events", post(dispatch_event))
        .route("/v1/installations/{id}/resources", get(list_resources))
        .route(
            "/v1/installations/{id}/resources/{rid}",
            get(get_resource)
                .put(import_resource)
                .patch(update_resource)
                .delete(delete_resource),
        )
        .route(
            "/v1/installations/{id}/resources/{rid}/secrets",
            put(update_secrets),
        )
        .route(
            "/v1/integrations/installations/{id}/resources/{rid}/connections",
            post(connect_resource),
        )
        .route("/v1/installations/{id}/billing", post(submit_billing_data))
        .route(
            "/v1/installations/{id}/billing/invoices",
            post(submit_invoice),
        )
        .route(
            "/v1/installations/{id}/billing/invoices/{invoice}",
            get(get_invoice),
        )
        .route(
            "/v1/installations/{id}/billing/invoices/{invoice}/actions",
            post(invoice_action),
        )
        .route(
            "/v1/installations/{id}/billing/balance",
            post(submit_balances),
        )
        .route(
            "/v1/installations/{id}/billing/finalize",
            post(finalize_installation),
        )
        .route(
            "/v1/installations/{id}/credentials/rotate",
            post(rotate_credentials),
        )
        .route("/v1/integrations/sso/token", post(exchange_sso_code))
        .route(IMPORT_COMPLETE_PATH, get(complete_import))
}

/// Where the browser comes back to after an import (Vercel's example
/// `return` value, on the simulator's origin).
pub(crate) const IMPORT_COMPLETE_PATH: &str =
    "/api/v1/integrations/installations/resources/import/complete";

/// `GET {return}?installation_id&resource_id&state`: the end of an import,
/// as Vercel handles it: the `state` must be one Vercel handed out, unused,
/// for that installation, and the resource must already exist at Vercel
/// (imported through `PUT .../resources/{rid}`); otherwise the flow fails.
async fn complete_import(
    State(shared): State<Arc<Shared>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Answer {
    let pairs: std::collections::BTreeMap<String, String> =
        reqwest::Url::parse(&format!("http://query/?{}", query.unwrap_or_default()))
            .map(|url| url.query_pairs().into_owned().collect())
            .unwrap_or_default();
    let field = |name: &str| pairs.get(name).cloned().unwrap_or_default();
    let (installation_id, resource_id, state) = (
        field("installation_id"),
        field("resource_id"),
        field("state"),
    );
    let mut world = shared.world();
    let Some(import) = world.imports.get(&state).cloned() else {
        return Err(bad_request("unknown state"));
    };
    if import.completed_resource_id.is_some() {
        return Err(bad_request("the state was used already"));
    }
    if import.installation_id != installation_id {
        return Err(bad_request("the state belongs to another installation"));
    }
    let found = world
        .installations
        .get(&installation_id)
        .and_then(|i| i.resources.get(&resource_id))
        .is_some_and(|r| !r.deleted && r.ownership.is_some());
    if !found {
        return Err(not_found("the imported resource does not exist at Vercel"));
    }
    if let Some(import) = world.imports.get_mut(&state) {
        import.completed_resource_id = Some(resource_id.clone());
    }
    Ok(json_answer(
        StatusCode::OK,
        json!({"imported": true, "installationId": installation_id, "resourceId": resource_id}),
    ))
}

fn parse_body(body: &Bytes) -> Result<Value, Refusal> {
    serde_json::from_slice(body).map_err(|_| bad_request("the body is not JSON"))
}

fn require_text(value: &Value, field: &str, what: &str) -> Result<String, Refusal> {
    value
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| bad_request(&format!("{what}: `{field}` must be a non-empty string")))
}

fn is_decimal(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

fn cents(text: &str) -> Option<i64> {
    if !is_decimal(text) {
        return None;
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let fraction = format!("{fraction:0<2}");
    if fraction.len() > 2 {
        return None;
    }
    Some(whole.parse::<i64>().ok()? * 100 + fraction.parse::<i64>().ok()?)
}

fn check_secrets(secrets: &Value) -> Result<(), Refusal> {
    let items = secrets
        .as_array()
        .ok_or_else(|| bad_request("`secrets` must be an array"))?;
    for secret in items {
        require_text(secret, "name", "secret")?;
        if !secret.get("value").is_some_and(Value::is_string) {
            return Err(bad_request("secret: `value` must be a string"));
        }
    }
    Ok(())
}

async fn update_installation(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let body = parse_body(&body)?;
    if !body.is_object() {
        return Err(bad_request("the body must be an object"));
    }
    shared.with_installation(&id, |installation| installation.updates.push(body))?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

async fn account_info(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let account = shared.with_installation(&id, |installation| installation.account.clone())?;
    Ok(json_answer(StatusCode::OK, account))
}

async fn member(
    State(shared): State<Arc<Shared>>,
    Path((id, member)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let found = shared.with_installation(&id, |installation| {
        installation.members.get(&member).cloned()
    })?;
    found
        .map(|m| json_answer(StatusCode::OK, m))
        .ok_or_else(|| not_found("no such member"))
}

async fn dispatch_event(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let body = parse_body(&body)?;
    let event = body
        .get("event")
        .filter(|e| e.is_object())
        .ok_or_else(|| bad_request("`event` is required"))?;
    match event.get("type").and_then(Value::as_str) {
        Some("installation.updated") => {}
        Some("resource.updated") => {
            let resource_id = require_text(event, "resourceId", "resource.updated")?;
            let known = shared.with_installation(&id, |installation| {
                installation.resources.contains_key(&resource_id)
            })?;
            if !known {
                return Err(not_found("no such resource"));
            }
        }
        _ => {
            return Err(bad_request(
                "`event.type` must be installation.updated or resource.updated",
            ));
        }
    }
    shared.with_installation(&id, |installation| installation.events.push(body))?;
    Ok(status_only(StatusCode::CREATED))
}

fn resource_json(resource: &SimResource) -> Value {
    json!({
        "id": resource.id,
        "internalId": format!("store_{}", resource.id),
        "name": resource.name,
        "productId": resource.product_id,
        "status": resource.status,
        "metadata": resource.metadata,
        "notification": resource.notification,
        "billingPlanId": resource.billing_plan_id,
    })
}

async fn list_resources(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let resources = shared.with_installation(&id, |installation| {
        installation
            .resources
            .values()
            .filter(|r| !r.deleted)
            .map(|r| {
                let mut json = resource_json(r);
                if let Some(fields) = json.as_object_mut() {
                    let id = fields.remove("id").unwrap_or_default();
                    fields.insert("partnerId".to_owned(), id);
                }
                json
            })
            .collect::<Vec<_>>()
    })?;
    Ok(json_answer(
        StatusCode::OK,
        json!({ "resources": resources }),
    ))
}

async fn get_resource(
    State(shared): State<Arc<Shared>>,
    Path((id, rid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let found = shared.with_installation(&id, |installation| {
        installation
            .resources
            .get(&rid)
            .filter(|r| !r.deleted)
            .map(resource_json)
    })?;
    found
        .map(|r| json_answer(StatusCode::OK, r))
        .ok_or_else(|| not_found("no such resource"))
}

async fn import_resource(
    State(shared): State<Arc<Shared>>,
    Path((id, rid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let body = parse_body(&body)?;
    let product_id = require_text(&body, "productId", "import")?;
    let name = require_text(&body, "name", "import")?;
    let status = require_text(&body, "status", "import")?;
    if !matches!(
        status.as_str(),
        "ready" | "pending" | "onboarding" | "suspended" | "resumed" | "uninstalled" | "error"
    ) {
        return Err(bad_request("import: `status` is not a resource status"));
    }
    let ownership = match body.get("ownership") {
        None | Some(Value::Null) => "owned".to_owned(),
        Some(Value::String(value)) if matches!(value.as_str(), "owned" | "linked" | "sandbox") => {
            value.clone()
        }
        Some(_) => {
            return Err(bad_request(
                "import: `ownership` must be `owned`, `linked` or `sandbox`",
            ));
        }
    };
    if let Some(secrets) = body.get("secrets") {
        check_secrets(secrets)?;
    }
    if body
        .get("metadata")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return Err(bad_request("import: `metadata` must be an object"));
    }
    shared.with_installation(&id, |installation| {
        let resource = installation
            .resources
            .entry(rid.clone())
            .or_insert_with(|| SimResource {
                id: rid.clone(),
                ..Default::default()
            });
        resource.product_id = product_id;
        resource.name = name.clone();
        resource.status = status;
        resource.metadata = body.get("metadata").cloned().unwrap_or(json!({}));
        resource.notification = body.get("notification").cloned().unwrap_or(Value::Null);
        resource.deleted = false;
        resource.ownership = Some(ownership);
        if let Some(secrets) = body.get("secrets").and_then(Value::as_array) {
            resource.secrets = secrets.clone();
        }
        resource.updates.push(body.clone());
    })?;
    Ok(json_answer(StatusCode::OK, json!({ "name": name })))
}

async fn update_resource(
    State(shared): State<Arc<Shared>>,
    Path((id, rid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let body = parse_body(&body)?;
    if !body.is_object() {
        return Err(bad_request("the body must be an object"));
    }
    if let Some(status) = body.get("status") {
        let allowed = [
            "ready",
            "pending",
            "onboarding",
            "suspended",
            "resumed",
            "uninstalled",
            "error",
        ];
        if !status.as_str().is_some_and(|s| allowed.contains(&s)) {
            return Err(bad_request("`status` is not a resource status"));
        }
    }
    if let Some(notification) = body.get("notification").filter(|n| !n.is_null()) {
        require_text(notification, "title", "notification")?;
        let level = notification.get("level").and_then(Value::as_str);
        if !matches!(level, Some("info" | "warn" | "error")) {
            return Err(bad_request(
                "`notification.level` must be info, warn or error",
            ));
        }
    }
    if let Some(secrets) = body.get("secrets") {
        let list = secrets.get("secrets").unwrap_or(secrets);
        check_secrets(list)?;
    }
    let outcome = shared.with_installation(&id, |installation| {
        let resource = installation
            .resources
            .get_mut(&rid)
            .filter(|r| !r.deleted)?;
        if let Some(status) = body.get("status").and_then(Value::as_str) {
            resource.status = status.to_owned();
        }
        if let Some(name) = body.get("name").and_then(Value::as_str) {
            resource.name = name.to_owned();
        }
        if let Some(notification) = body.get("notification") {
            resource.notification = notification.clone();
        }
        if let Some(metadata) = body.get("metadata") {
            resource.metadata = metadata.clone();
        }
        resource.updates.push(body.clone());
        Some(resource.name.clone())
    })?;
    match outcome {
        Some(name) => Ok(json_answer(StatusCode::OK, json!({ "name": name }))),
        None => Err(not_found("no such resource")),
    }
}

async fn delete_resource(
    State(shared): State<Arc<Shared>>,
    Path((id, rid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let found = shared.with_installation(&id, |installation| {
        installation.resources.get_mut(&rid).map(|resource| {
            resource.deleted = true;
            resource.status = "uninstalled".to_owned();
        })
    })?;
    found
        .map(|_| status_only(StatusCode::NO_CONTENT))
        .ok_or_else(|| not_found("no such resource"))
}

async fn update_secrets(
    State(shared): State<Arc<Shared>>,
    Path((id, rid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let body = parse_body(&body)?;
    let secrets = body
        .get("secrets")
        .ok_or_else(|| bad_request("`secrets` is required"))?;
    check_secrets(secrets)?;
    let partial = body
        .get("partial")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let found = shared.with_installation(&id, |installation| {
        let resource = installation
            .resources
            .get_mut(&rid)
            .filter(|r| !r.deleted)?;
        let pushed = secrets.as_array().cloned().unwrap_or_default();
        if partial {
            for secret in pushed {
                resource.secrets.retain(|s| s["name"] != secret["name"]);
                resource.secrets.push(secret);
            }
        } else {
            resource.secrets = pushed;
        }
        resource.secret_pushes.push(body.clone());
        Some(())
    })?;
    found
        .map(|_| status_only(StatusCode::CREATED))
        .ok_or_else(|| not_found("no such resource"))
}

async fn connect_resource(
    State(shared): State<Arc<Shared>>,
    Path((id, rid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let mut body = parse_body(&body)?;
    require_text(&body, "projectId", "connection")?;
    body["resourceId"] = Value::String(rid.clone());
    let known = shared.with_installation(&id, |installation| {
        let known = installation.resources.get(&rid).is_some_and(|r| !r.deleted);
        if known {
            installation.connections.push(body.clone());
        }
        known
    })?;
    if !known {
        return Err(not_found("no such resource"));
    }
    Ok(status_only(StatusCode::CREATED))
}

fn check_item(item: &Value, what: &str, amount_fields: &[&str]) -> Result<(), Refusal> {
    require_text(item, "billingPlanId", what)?;
    require_text(item, "name", what)?;
    for field in amount_fields {
        let text = require_text(item, field, what)?;
        if !is_decimal(&text) {
            return Err(bad_request(&format!(
                "{what}: `{field}` must be a decimal string"
            )));
        }
    }
    Ok(())
}

fn check_period(body: &Value, what: &str) -> Result<(), Refusal> {
    let period = body
        .get("period")
        .ok_or_else(|| bad_request(&format!("{what}: `period` is required")))?;
    require_text(period, "start", &format!("{what} period"))?;
    require_text(period, "end", &format!("{what} period"))?;
    Ok(())
}

async fn submit_billing_data(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let body = parse_body(&body)?;
    require_text(&body, "timestamp", "billing data")?;
    require_text(&body, "eod", "billing data")?;
    check_period(&body, "billing data")?;
    let billing = body
        .get("billing")
        .ok_or_else(|| bad_request("billing data: `billing` is required"))?;
    let items = billing
        .as_array()
        .or_else(|| billing.get("items").and_then(Value::as_array))
        .ok_or_else(|| bad_request("billing data: `billing` must be a list or {items}"))?;
    for item in items {
        check_item(item, "billing item", &["price", "total"])?;
        if !item.get("quantity").is_some_and(Value::is_number) {
            return Err(bad_request("billing item: `quantity` must be a number"));
        }
    }
    let usage = body
        .get("usage")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_request("billing data: `usage` must be a list"))?;
    for line in usage {
        require_text(line, "name", "usage")?;
        if !matches!(
            line.get("type").and_then(Value::as_str),
            Some("total" | "interval" | "rate")
        ) {
            return Err(bad_request("usage: `type` must be total, interval or rate"));
        }
        for field in ["dayValue", "periodValue"] {
            if !line.get(field).is_some_and(Value::is_number) {
                return Err(bad_request(&format!("usage: `{field}` must be a number")));
            }
        }
    }
    shared.with_installation(&id, |installation| installation.billing_data.push(body))?;
    Ok(status_only(StatusCode::CREATED))
}

async fn submit_invoice(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let body = parse_body(&body)?;
    let invoice_date = require_text(&body, "invoiceDate", "invoice")?;
    check_period(&body, "invoice")?;
    let items = body
        .get("items")
        .and_then(Value::as_array)
        .filter(|items| !items.is_empty())
        .ok_or_else(|| bad_request("invoice: `items` must be a non-empty list"))?;
    let mut total_cents = 0_i64;
    for item in items {
        check_item(item, "invoice item", &["price", "total"])?;
        total_cents += item["total"].as_str().and_then(cents).unwrap_or_default();
    }
    let external_id = body
        .get("externalId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let test = body.get("test").filter(|t| t.is_object());
    let state = test
        .and_then(|t| t.get("result"))
        .and_then(Value::as_str)
        .unwrap_or("pending")
        .to_owned();
    let answer = shared.with_installation(&id, |installation| {
        // An externalId is unique per installation: a resubmission answers
        // the invoice it created first.
        if let Some(external_id) = &external_id
            && let Some(existing) = installation
                .invoices
                .values()
                .find(|i| i.external_id.as_deref() == Some(external_id))
        {
            return json!({"invoiceId": existing.id, "test": existing.test});
        }
        let invoice = SimInvoice {
            id: format!("inv_{}", super::alnum_id(20)),
            external_id: external_id.clone(),
            state: state.clone(),
            total: format!("{}.{:02}", total_cents / 100, total_cents % 100),
            test: test.is_some(),
            submission: body.clone(),
            refunds: Vec::new(),
            invoice_date: invoice_date.clone(),
            period: body["period"].clone(),
            created: chrono::Utc::now().to_rfc3339(),
        };
        let answer = json!({"invoiceId": invoice.id, "test": invoice.test});
        installation.invoices.insert(invoice.id.clone(), invoice);
        answer
    })?;
    Ok(json_answer(StatusCode::OK, answer))
}

async fn get_invoice(
    State(shared): State<Arc<Shared>>,
    Path((id, invoice)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let found = shared.with_installation(&id, |installation| {
        installation.invoices.get(&invoice).map(SimInvoice::to_json)
    })?;
    found
        .map(|i| json_answer(StatusCode::OK, i))
        .ok_or_else(|| not_found("no such invoice"))
}

async fn invoice_action(
    State(shared): State<Arc<Shared>>,
    Path((id, invoice)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let body = parse_body(&body)?;
    if body.get("action").and_then(Value::as_str) != Some("refund") {
        return Err(bad_request("`action` must be refund"));
    }
    require_text(&body, "reason", "refund")?;
    let total = require_text(&body, "total", "refund")?;
    let refund_cents =
        cents(&total).ok_or_else(|| bad_request("refund: `total` must be a decimal string"))?;
    let outcome = shared.with_installation(&id, |installation| {
        let Some(found) = installation.invoices.get_mut(&invoice) else {
            return Err(not_found("no such invoice"));
        };
        if refund_cents > cents(&found.total).unwrap_or_default() {
            return Err(bad_request("refund: `total` exceeds the invoice total"));
        }
        found.state = if found.state == "paid" {
            "refund_requested"
        } else {
            "refunded"
        }
        .to_owned();
        found.refunds.push(body.clone());
        Ok(())
    })?;
    outcome.map(|_| status_only(StatusCode::NO_CONTENT))
}

async fn submit_balances(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let body = parse_body(&body)?;
    require_text(&body, "timestamp", "balances")?;
    let balances = body
        .get("balances")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_request("`balances` must be a list"))?;
    for balance in balances {
        if !balance
            .get("currencyValueInCents")
            .is_some_and(|v| v.is_i64() || v.is_u64())
        {
            return Err(bad_request(
                "balance: `currencyValueInCents` must be an integer",
            ));
        }
    }
    shared.with_installation(&id, |installation| installation.balances.push(body))?;
    Ok(status_only(StatusCode::CREATED))
}

async fn finalize_installation(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    shared.with_installation(&id, |installation| installation.finalized = true)?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

async fn rotate_credentials(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let body = parse_body(&body)?;
    let secret = require_text(&body, "client_secret", "rotation")?;
    if secret != shared.client_secret {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            "wrong client secret",
        ));
    }
    let token = format!("vat_{}", super::alnum_id(32));
    shared.with_installation(&id, |installation| {
        installation.rotated_tokens.push(token.clone())
    })?;
    Ok(json_answer(
        StatusCode::OK,
        json!({"access_token": token, "token_type": "Bearer", "scope": "read-write", "expires_in": null}),
    ))
}

async fn exchange_sso_code(State(shared): State<Arc<Shared>>, body: Bytes) -> Answer {
    let body = parse_body(&body)?;
    let code = require_text(&body, "code", "sso")?;
    let client_id = require_text(&body, "client_id", "sso")?;
    let client_secret = require_text(&body, "client_secret", "sso")?;
    if client_id != shared.client_id || client_secret != shared.client_secret {
        return Err(refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong client credentials",
        ));
    }
    let pending = shared.world().sso_codes.remove(&code);
    let Some(pending) = pending else {
        return Err(bad_request("unknown or used code"));
    };
    if let Some(state) = body.get("state").and_then(Value::as_str)
        && state != pending.state
    {
        return Err(bad_request("the state does not match the code"));
    }
    Ok(json_answer(
        StatusCode::OK,
        json!({"id_token": pending.id_token, "access_token": null, "token_type": null}),
    ))
}
