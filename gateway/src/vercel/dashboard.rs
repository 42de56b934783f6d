//! The provider page a Vercel user lands on after SSO: a plain
//! server-rendered view of the installation, one resource, or one invoice,
//! readable only with the session the SSO handler opened for that
//! installation.

use super::body::query_map;
use super::convert::resource_status;
use super::operations::{first_resources, installed_account, marketplace_invoice, owned_resource};
use super::pages::{
    SECTIONS, error_page, escape, installation_path, is_installation_id, is_plain_id, page,
    to_vercel_sign_in,
};
use super::session::{Session, cookie_value};
use super::state::VercelState;
use crate::state::AppState;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_proto::billing::v1 as billing_pb;

fn checked_installation(installation_id: &str) -> Result<()> {
    if is_installation_id(installation_id) {
        Ok(())
    } else {
        Err(Error::not_found("no such installation"))
    }
}

/// Without a usable session: through Vercel's sign-in and back to `page`
/// (its path and query) when the integration's slug is configured, an
/// error page otherwise.
fn sign_in_again(
    state: &VercelState,
    installation_id: &str,
    page: &Uri,
    error: &Error,
) -> Response {
    if !is_installation_id(installation_id) {
        return error_page(&Error::not_found("no such installation"));
    }
    let back = page
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| installation_path(state, installation_id));
    to_vercel_sign_in(state, installation_id, &back).unwrap_or_else(|| error_page(error))
}

fn session_for(state: &VercelState, headers: &HeaderMap, installation_id: &str) -> Result<Session> {
    checked_installation(installation_id)?;
    let value = cookie_value(headers)
        .ok_or_else(|| Error::unauthenticated("sign in through the Vercel dashboard first"))?;
    let session = state
        .sessions
        .open(&value, chrono::Utc::now().timestamp())
        .ok_or_else(|| Error::unauthenticated("the session expired; sign in again"))?;
    if session.installation_id != installation_id {
        return Err(Error::permission_denied(
            "this session is for another installation",
        ));
    }
    Ok(session)
}

fn section_note(query: Option<&str>) -> String {
    let query = query_map(query);
    match query
        .get("section")
        .filter(|s| SECTIONS.contains(&s.as_str()))
    {
        Some(section) => format!("<p>Section: <strong>{}</strong></p>", escape(section)),
        None => String::new(),
    }
}

fn greeting(session: &Session) -> String {
    let who = if session.user_name.is_empty() {
        &session.user_id
    } else {
        &session.user_name
    };
    format!(
        "<p>Signed in as {} ({})</p>",
        escape(who),
        escape(&session.user_role)
    )
}

async fn render_installation(
    state: &AppState,
    session: &Session,
    installation_id: &str,
    query: Option<&str>,
) -> Result<Response> {
    let account = installed_account(state, installation_id).await?;
    let resources = first_resources(state, &account.id).await?;
    let base = installation_path(&state.vercel, installation_id);
    let rows: String = resources
        .iter()
        .map(|r| {
            format!(
                "<tr><td><a href=\"{base}/resources/{id}\">{name}</a></td><td>{product}</td><td>{plan}</td><td>{status}</td></tr>",
                id = escape(&r.id),
                name = escape(&r.name),
                product = escape(&r.product_id),
                plan = escape(&r.plan_id),
                status = resource_status(r.status).as_str(),
            )
        })
        .collect();
    let title = if account.display_name.is_empty() {
        installation_id.to_owned()
    } else {
        account.display_name.clone()
    };
    Ok(page(
        &title,
        &format!(
            "<h1>{title}</h1>{greeting}{section}<p>Installation <code>{id}</code></p>\
             <h2>Resources</h2><table><tr><th>Name</th><th>Product</th><th>Plan</th><th>Status</th></tr>{rows}</table>",
            title = escape(&title),
            greeting = greeting(session),
            section = section_note(query),
            id = escape(installation_id),
        ),
    ))
}

/// `GET {base}/dashboard/{installationId}`.
#[utoipa::path(
    operation_id = "dashboard_installation_page",
    get,
    path = "/dashboard/{installation_id}",
    tag = "vercel-pages",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("section" = Option<String>, Query, description = "A section of the page")),
    responses((status = 200, description = "The provider page of the installation", content_type = "text/html", body = String), (status = 303, description = "No session: through Vercel's sign-in and back", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security(("vercel_session" = []))
)]
pub async fn installation_page(
    State(state): State<AppState>,
    Path(installation_id): Path<String>,
    RawQuery(query): RawQuery,
    OriginalUri(requested): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let session = match session_for(&state.vercel, &headers, &installation_id) {
        Ok(session) => session,
        Err(error) => return sign_in_again(&state.vercel, &installation_id, &requested, &error),
    };
    let rendered =
        async { render_installation(&state, &session, &installation_id, query.as_deref()).await }
            .await;
    rendered.unwrap_or_else(|error| error_page(&error))
}

/// `GET {base}/dashboard/{installationId}/resources/{resourceId}`.
#[utoipa::path(
    operation_id = "dashboard_resource_page",
    get,
    path = "/dashboard/{installation_id}/resources/{resource_id}",
    tag = "vercel-pages",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("resource_id" = String, Path, description = "Our resource id (`res_...`)")),
    responses((status = 200, description = "The provider page of the resource", content_type = "text/html", body = String), (status = 303, description = "No session: through Vercel's sign-in and back", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security(("vercel_session" = []))
)]
pub async fn resource_page(
    State(state): State<AppState>,
    Path((installation_id, resource_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    OriginalUri(requested): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let session = match session_for(&state.vercel, &headers, &installation_id) {
        Ok(session) => session,
        Err(error) => return sign_in_again(&state.vercel, &installation_id, &requested, &error),
    };
    let rendered = async {
        let account = installed_account(&state, &installation_id).await?;
        let resource = owned_resource(&state, &account.id, &resource_id).await?;
        let metadata =
            marketbridge_core::metadata::metadata_to_json(resource.metadata.as_ref()).to_string();
        Ok::<_, Error>(page(
            &resource.name,
            &format!(
                "<h1>{name}</h1>{greeting}{section}<table>\
                 <tr><th>Resource</th><td><code>{id}</code></td></tr>\
                 <tr><th>Product</th><td>{product}</td></tr>\
                 <tr><th>Plan</th><td>{plan}</td></tr>\
                 <tr><th>Status</th><td>{status}</td></tr>\
                 <tr><th>Configuration</th><td><code>{metadata}</code></td></tr>\
                 <tr><th>Secrets version</th><td>{version}</td></tr></table>\
                 <p><a href=\"{back}\">All resources</a></p>",
                name = escape(&resource.name),
                greeting = greeting(&session),
                section = section_note(query.as_deref()),
                id = escape(&resource.id),
                product = escape(&resource.product_id),
                plan = escape(&resource.plan_id),
                status = resource_status(resource.status).as_str(),
                metadata = escape(&metadata),
                version = resource.secrets_version,
                back = installation_path(&state.vercel, &installation_id),
            ),
        ))
    }
    .await;
    rendered.unwrap_or_else(|error| error_page(&error))
}

/// `GET {base}/dashboard/{installationId}/invoices/{invoiceId}`.
#[utoipa::path(
    operation_id = "dashboard_invoice_page",
    get,
    path = "/dashboard/{installation_id}/invoices/{invoice_id}",
    tag = "vercel-pages",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("invoice_id" = String, Path, description = "The Vercel invoice id")),
    responses((status = 200, description = "The invoice", content_type = "text/html", body = String), (status = 303, description = "No session: through Vercel's sign-in and back", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security(("vercel_session" = []))
)]
pub async fn invoice_page(
    State(state): State<AppState>,
    Path((installation_id, invoice_id)): Path<(String, String)>,
    OriginalUri(requested): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let session = match session_for(&state.vercel, &headers, &installation_id) {
        Ok(session) => session,
        Err(error) => return sign_in_again(&state.vercel, &installation_id, &requested, &error),
    };
    let rendered = async {
        if !is_plain_id(&invoice_id) {
            return Err(Error::not_found("invoice not found"));
        }
        let account = installed_account(&state, &installation_id).await?;
        let invoice = marketplace_invoice(&state, &invoice_id).await;
        let details = match invoice {
            Ok(invoice) if invoice.account_id == account.id => {
                let state_name = billing_pb::InvoiceState::try_from(invoice.state)
                    .map(|s| s.as_str_name().trim_start_matches("INVOICE_STATE_").to_lowercase())
                    .unwrap_or_default();
                let total = invoice
                    .total
                    .as_ref()
                    .map(|t| marketbridge_core::money::Money::from_proto(t).to_string())
                    .unwrap_or_default();
                format!(
                    "<table><tr><th>State</th><td>{}</td></tr><tr><th>Total</th><td>{}</td></tr></table>",
                    escape(&state_name),
                    escape(&total)
                )
            }
            Ok(_) => return Err(Error::not_found("invoice not found")),
            Err(error) if error.code() == ErrorCode::NotFound => {
                "<p>This invoice is not recorded yet.</p>".to_owned()
            }
            Err(error) if error.code() == ErrorCode::Internal => {
                "<p>Invoice details are not available.</p>".to_owned()
            }
            Err(error) => return Err(error),
        };
        Ok::<_, Error>(page(
            &format!("Invoice {invoice_id}"),
            &format!(
                "<h1>Invoice <code>{id}</code></h1>{greeting}{details}<p><a href=\"{back}\">Installation</a></p>",
                id = escape(&invoice_id),
                greeting = greeting(&session),
                back = installation_path(&state.vercel, &installation_id),
            ),
        ))
    }
    .await;
    rendered.unwrap_or_else(|error| error_page(&error))
}
