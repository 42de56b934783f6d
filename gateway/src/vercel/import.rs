//! The Import Resource URL (`GET {base}/import`): Vercel sends the browser
//! here with `installation_id`, `product_id`, `state` and `return` when a
//! user chooses "Import Existing". The request carries no Vercel token, so
//! the user is known by our SSO session for that installation (or sent
//! through Vercel's sign-in first, the parameters sealed so they come back
//! unchanged). The user picks one of the resources the provider made
//! importable for the installation; the form post (`POST {base}/import`,
//! same-site, with a nonce bound to this browser) has provisioning record it
//! as a linked resource and register it with Vercel (Import Resource,
//! `ownership: "linked"`, with its secrets) before the browser is sent back
//! to `return` with `installation_id`, `resource_id` and `state` appended.
//! `return` must be on a configured origin (`vercel.import_return_origins`).

use super::body::query_map;
use super::operations::{Call, import_resource, importable_resources, installed_account};
use super::pages::{error_page, escape, is_installation_id, page, to_vercel_sign_in};
use super::session::{Session, cookie_value};
use super::state::VercelState;
use crate::cookies::{cookie_named, same_text};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use marketbridge_core::{Error, Result};
use marketbridge_proto::common::v1::Person;
use serde::{Deserialize, Serialize};

/// What the sealed import request is signed for.
const PURPOSE: &str = "vercel-import-request";
/// Cookie holding the nonce the import form must carry.
pub const NONCE_COOKIE: &str = "mb_vercel_import";
/// How long an import request stays usable, in seconds (Vercel's `state`
/// expires after 12 hours).
const REQUEST_SECONDS: i64 = 12 * 3600;
/// How long the form's nonce lives, in seconds.
const NONCE_SECONDS: i64 = 3600;
/// Longest `state` accepted.
const MAX_STATE: usize = 4096;
/// Longest `return` accepted.
const MAX_RETURN: usize = 2048;

/// The import Vercel asked for, as it travels sealed through the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ImportRequest {
    installation_id: String,
    #[serde(default)]
    product_id: String,
    state: String,
    #[serde(rename = "return")]
    return_url: String,
    expires_at: i64,
    /// The form nonce, once the page was shown.
    #[serde(default)]
    nonce: String,
}

/// The import form (`POST {base}/import`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportForm {
    /// The sealed import request of the page.
    pub request: Option<String>,
    /// The provider's id of the resource to import.
    pub importable_id: Option<String>,
}

fn plain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `return` parsed, when it is on a configured origin.
fn return_target(state: &VercelState, return_url: &str) -> Result<url::Url> {
    let invalid = || Error::invalid_field("return", "must be a Vercel URL");
    if return_url.len() > MAX_RETURN {
        return Err(invalid());
    }
    let parsed = url::Url::parse(return_url).map_err(|_| invalid())?;
    if !matches!(parsed.scheme(), "https" | "http")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return Err(invalid());
    }
    let origin = parsed.origin().ascii_serialization();
    if !state.import_return_origins.contains(&origin) {
        return Err(Error::permission_denied(
            "the import may only return to Vercel",
        ));
    }
    Ok(parsed)
}

/// The request of a first visit (Vercel's query) or of a return from
/// sign-in (`request`, sealed), checked.
fn request_of(state: &VercelState, query: Option<&str>) -> Result<ImportRequest> {
    let query = query_map(query);
    let now = chrono::Utc::now().timestamp();
    let request = if let Some(sealed) = query.get("request") {
        state
            .sessions
            .open_for::<ImportRequest>(PURPOSE, sealed)
            .filter(|r| r.expires_at > now)
            .ok_or_else(|| Error::invalid_field("request", "is not valid or has expired"))?
    } else {
        ImportRequest {
            installation_id: query.get("installation_id").cloned().unwrap_or_default(),
            product_id: query.get("product_id").cloned().unwrap_or_default(),
            state: query.get("state").cloned().unwrap_or_default(),
            return_url: query.get("return").cloned().unwrap_or_default(),
            expires_at: now + REQUEST_SECONDS,
            nonce: String::new(),
        }
    };
    if !is_installation_id(&request.installation_id) {
        return Err(Error::invalid_field(
            "installation_id",
            "must be an installation id",
        ));
    }
    if !request.product_id.is_empty() && !plain(&request.product_id) {
        return Err(Error::invalid_field("product_id", "is not a product id"));
    }
    if request.state.is_empty()
        || request.state.len() > MAX_STATE
        || request.state.chars().any(char::is_control)
    {
        return Err(Error::invalid_field("state", "is required"));
    }
    return_target(state, &request.return_url)?;
    Ok(request)
}

/// The session of a request, when it is for `installation_id`.
fn session_of(state: &VercelState, headers: &HeaderMap) -> Option<Session> {
    let value = cookie_value(headers)?;
    state.sessions.open(&value, chrono::Utc::now().timestamp())
}

/// Checks the signed-in user may import into the installation.
fn check_user(session: &Session, installation_id: &str) -> Result<()> {
    if session.installation_id != installation_id {
        return Err(Error::permission_denied(
            "this sign-in is for another installation",
        ));
    }
    if !session.user_role.eq_ignore_ascii_case("ADMIN") {
        return Err(Error::permission_denied(
            "only a team owner or member may import resources",
        ));
    }
    Ok(())
}

fn import_path(state: &VercelState) -> String {
    format!("{}/import", state.base_path)
}

fn nonce_cookie(state: &VercelState, value: &str, max_age: i64) -> String {
    let path = if state.base_path.is_empty() {
        "/"
    } else {
        state.base_path.as_str()
    };
    let secure = if state.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{NONCE_COOKIE}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    )
}

/// `GET {base}/import`: the Import Resource URL.
#[utoipa::path(
    operation_id = "vercel_import_page",
    get,
    path = "/import",
    tag = "vercel-pages",
    params(("installation_id" = Option<String>, Query, description = "The installation to import into (`icfg_...`)"), ("product_id" = Option<String>, Query, description = "The product the user chose, if any"), ("state" = Option<String>, Query, description = "Vercel's opaque single-use token, given back unchanged"), ("return" = Option<String>, Query, description = "Where the browser goes back to (a Vercel URL)"), ("request" = Option<String>, Query, description = "The same, sealed, after a sign-in")),
    responses((status = 200, description = "The resources the user may import", content_type = "text/html", body = String), (status = 303, description = "No session: through Vercel's sign-in and back", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security((), ("vercel_session" = []))
)]
pub async fn import_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let vercel = &state.vercel;
    let mut request = match request_of(vercel, query.as_deref()) {
        Ok(request) => request,
        Err(error) => return error_page(&error),
    };
    let Some(session) = session_of(vercel, &headers) else {
        // Through Vercel's sign-in, coming back with the request sealed.
        let back = format!(
            "{}?request={}",
            import_path(vercel),
            vercel.sessions.seal_for(PURPOSE, &request)
        );
        return to_vercel_sign_in(vercel, &request.installation_id, &back).unwrap_or_else(|| {
            error_page(&Error::unauthenticated(
                "sign in through the Vercel dashboard first",
            ))
        });
    };
    if let Err(error) = check_user(&session, &request.installation_id) {
        return error_page(&error);
    }
    let listed = async {
        let account = installed_account(&state, &request.installation_id).await?;
        importable_resources(&state, &account, &request.product_id).await
    }
    .await;
    let resources = match listed {
        Ok(resources) => resources,
        Err(error) => return error_page(&error),
    };
    request.nonce = marketbridge_core::crypto::random_token(24);
    let sealed = vercel.sessions.seal_for(PURPOSE, &request);
    let choices: String = resources
        .iter()
        .filter(|r| r.imported_resource_id.is_empty())
        .map(|r| {
            format!(
                "<p><label><input type=\"radio\" name=\"importable_id\" value=\"{id}\" required> \
                 <strong>{name}</strong> ({product}, <code>{id}</code>)</label></p>",
                id = escape(&r.importable_id),
                name = escape(&r.name),
                product = escape(&r.product_id),
            )
        })
        .collect();
    let form = if choices.is_empty() {
        "<p>You have no resources to import here.</p>".to_owned()
    } else {
        format!(
            "<form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"request\" value=\"{sealed}\">\
             {choices}<button type=\"submit\">Import</button></form>",
            action = escape(&import_path(vercel)),
            sealed = escape(&sealed),
        )
    };
    let mut response = page(
        "Import a resource",
        &format!(
            "<h1>Import a resource</h1><p>Into the Vercel installation <code>{installation}</code>. \
             Imported resources stay billed by us, not through Vercel.</p>{form}",
            installation = escape(&request.installation_id),
        ),
    );
    if let Ok(cookie) = HeaderValue::from_str(&nonce_cookie(vercel, &request.nonce, NONCE_SECONDS))
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Refuses a form post another site made: the browser says where it came
/// from (`Sec-Fetch-Site`, `Origin`) and it must be this site.
fn same_site(state: &VercelState, headers: &HeaderMap) -> Result<()> {
    let refused = || Error::permission_denied("the import form must be sent from this site");
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        if site != "same-origin" && site != "none" {
            return Err(refused());
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let public = url::Url::parse(&state.public_url)
            .map(|u| u.origin().ascii_serialization())
            .map_err(|_| refused())?;
        if origin.to_str().unwrap_or_default() != public {
            return Err(refused());
        }
    }
    Ok(())
}

/// `POST {base}/import`: imports the chosen resource, then sends the browser
/// back to Vercel.
#[utoipa::path(
    operation_id = "vercel_import_submit",
    post,
    path = "/import",
    tag = "vercel-pages",
    request_body(content = ImportForm, content_type = "application/x-www-form-urlencoded", description = "`request`: the page's sealed request; `importable_id`: the resource to import"),
    responses((status = 303, description = "Imported: back to Vercel's `return` URL with `installation_id`, `resource_id` and `state`", headers(("location" = String, description = "Where to go"))), crate::openapi::doc::PageErrors),
    security(("vercel_session" = []))
)]
pub async fn import_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let vercel = &state.vercel;
    let imported = async {
        same_site(vercel, &headers)?;
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
            .into_owned()
            .collect();
        let field = |name: &str| {
            form.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
                .unwrap_or_default()
        };
        let now = chrono::Utc::now().timestamp();
        let request = vercel
            .sessions
            .open_for::<ImportRequest>(PURPOSE, &field("request"))
            .filter(|r| r.expires_at > now && !r.nonce.is_empty())
            .ok_or_else(|| Error::invalid_field("request", "is not valid or has expired"))?;
        let cookie = cookie_named(&headers, NONCE_COOKIE).unwrap_or_default();
        if !same_text(&cookie, &request.nonce) {
            return Err(Error::permission_denied(
                "the import form was not shown in this browser",
            ));
        }
        let session = session_of(vercel, &headers)
            .ok_or_else(|| Error::unauthenticated("sign in through the Vercel dashboard first"))?;
        check_user(&session, &request.installation_id)?;
        let importable_id = field("importable_id");
        if !plain(&importable_id) {
            return Err(Error::invalid_field("importable_id", "choose a resource"));
        }
        let target = return_target(vercel, &request.return_url)?;
        let account = installed_account(&state, &request.installation_id).await?;
        let call = Call {
            installation_id: request.installation_id.clone(),
            key: Some(format!(
                "{}:{importable_id}",
                marketbridge_core::crypto::sha256_hex(request.state.as_bytes())
            )),
            actor: Some(Person {
                external_id: session.user_id.clone(),
                email: session.user_email.clone(),
                name: session.user_name.clone(),
                role: session.user_role.clone(),
                last_seen_at: None,
            }),
        };
        // Provisioning records the linked resource, then registers it with
        // Vercel before answering: the resource exists at Vercel before the
        // browser goes back.
        let resource =
            import_resource(&state, &call, &account, &importable_id, &request.product_id).await?;
        let mut back = target;
        back.query_pairs_mut()
            .append_pair("installation_id", &request.installation_id)
            .append_pair("resource_id", &resource.id)
            .append_pair("state", &request.state);
        tracing::info!(installation.id = %request.installation_id, resource.id = %resource.id, "vercel import completed; back to vercel");
        Ok::<_, Error>(back.to_string())
    }
    .await;
    let location = match imported {
        Ok(location) => location,
        Err(error) => return error_page(&error),
    };
    let Ok(location) = HeaderValue::from_str(&location) else {
        return error_page(&Error::internal("the return address is not valid"));
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::LOCATION, location);
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(clear) = HeaderValue::from_str(&nonce_cookie(vercel, "", 0)) {
        response_headers.append(header::SET_COOKIE, clear);
    }
    response
}
