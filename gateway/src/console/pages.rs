//! The console's pages and its one action endpoint.

use super::html::{self, Series, action_form, badge, details, escape, table};
use super::operator::{Operator, check_post, form, operator, query};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use marketbridge_proto::account::v1 as account;
use marketbridge_proto::billing::v1 as billing;
use marketbridge_proto::common::v1 as common;
use marketbridge_proto::provisioning::v1 as provisioning;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use tonic::Status;

/// Calls `method` of the named service's client: the three services serve
/// the same outbox and audit RPCs. Evaluates to the answer's message.
macro_rules! on_service {
    ($clients:expr, $service:expr, $method:ident($request:expr)) => {
        match $service {
            "account" => $clients.account.clone().$method($request).await,
            "provisioning" => $clients.provisioning.clone().$method($request).await,
            "billing" => $clients.billing.clone().$method($request).await,
            _ => Err(Status::invalid_argument(
                "service must be account, provisioning or billing",
            )),
        }
        .map(tonic::Response::into_inner)
    };
}

/// The services whose outbox the console shows.
const SERVICES: [&str; 3] = ["account", "provisioning", "billing"];

fn page_of(size: u32) -> Option<common::PageRequest> {
    Some(common::PageRequest {
        page_size: size,
        page_token: String::new(),
    })
}

/// `ENUM_PREFIX_NAME` as `name`.
fn short(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

fn marketplace(value: i32) -> String {
    common::Marketplace::try_from(value)
        .map(|m| short(m.as_str_name(), "MARKETPLACE_"))
        .unwrap_or_else(|_| "unknown".into())
}

fn account_state(value: i32) -> String {
    account::AccountState::try_from(value)
        .map(|s| short(s.as_str_name(), "ACCOUNT_STATE_"))
        .unwrap_or_default()
}

fn signup_state(value: i32) -> String {
    account::SignupState::try_from(value)
        .map(|s| short(s.as_str_name(), "SIGNUP_STATE_"))
        .unwrap_or_default()
}

fn subscription_state(value: i32) -> String {
    provisioning::SubscriptionState::try_from(value)
        .map(|s| short(s.as_str_name(), "SUBSCRIPTION_STATE_"))
        .unwrap_or_default()
}

fn resource_status(value: i32) -> String {
    provisioning::ResourceStatus::try_from(value)
        .map(|s| short(s.as_str_name(), "RESOURCE_STATUS_"))
        .unwrap_or_default()
}

fn report_status(value: i32) -> String {
    billing::ReportStatus::try_from(value)
        .map(|s| short(s.as_str_name(), "REPORT_STATUS_"))
        .unwrap_or_default()
}

fn event_status(value: i32) -> String {
    account::EventStatus::try_from(value)
        .map(|s| short(s.as_str_name(), "EVENT_STATUS_"))
        .unwrap_or_default()
}

fn time_of(ts: Option<&prost_types::Timestamp>) -> Option<chrono::DateTime<chrono::Utc>> {
    ts.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
}

fn ts(ts: Option<&prost_types::Timestamp>) -> String {
    time_of(ts).map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn day(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    time_of(ts).map(|t| t.format("%m-%d").to_string())
}

fn account_link(id: &str) -> String {
    if id.is_empty() {
        return String::new();
    }
    format!(
        r#"<a href="/console/accounts/{}"><code>{}</code></a>"#,
        escape(id),
        escape(id)
    )
}

fn mref(r: Option<&common::MarketplaceRef>) -> String {
    r.map(|r| {
        format!(
            "{} <code>{}</code>",
            escape(&marketplace(r.marketplace)),
            escape(&r.external_id)
        )
    })
    .unwrap_or_default()
}

fn counts_table(title: &str, counts: &BTreeMap<(String, String), u64>) -> String {
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|((m, s), n)| {
            vec![
                escape(m),
                badge(s),
                format!(r#"<span class="num">{n}</span>"#),
            ]
        })
        .collect();
    format!(
        r#"<div class="card"><h2>{}</h2>{}</div>"#,
        escape(title),
        table(&["Marketplace", "State", "Count"], &rows, "None yet.")
    )
}

/// What every page fetches through.
struct Calls<'a> {
    state: &'a AppState,
    op: &'a Operator,
}

impl Calls<'_> {
    async fn accounts(&self) -> Result<Vec<account::Account>, Status> {
        let answer = self
            .state
            .clients
            .account
            .clone()
            .list_accounts(self.op.call(account::ListAccountsRequest {
                page: page_of(500),
                ..Default::default()
            }))
            .await?;
        Ok(answer.into_inner().accounts)
    }

    async fn account(&self, id: &str) -> Result<account::Account, Status> {
        let selector = common::AccountSelector {
            selector: Some(common::account_selector::Selector::AccountId(id.to_owned())),
        };
        self.account_by(selector).await
    }

    async fn account_by(
        &self,
        selector: common::AccountSelector,
    ) -> Result<account::Account, Status> {
        Ok(self
            .state
            .clients
            .account
            .clone()
            .get_account(self.op.call(account::GetAccountRequest {
                account: Some(selector),
            }))
            .await?
            .into_inner())
    }

    async fn subscriptions(
        &self,
        account_id: &str,
    ) -> Result<Vec<provisioning::Subscription>, Status> {
        Ok(self
            .state
            .clients
            .provisioning
            .clone()
            .list_subscriptions(self.op.call(provisioning::ListSubscriptionsRequest {
                account_id: account_id.to_owned(),
                page: page_of(500),
                ..Default::default()
            }))
            .await?
            .into_inner()
            .subscriptions)
    }

    async fn resources(&self, account_id: &str) -> Result<Vec<provisioning::Resource>, Status> {
        Ok(self
            .state
            .clients
            .provisioning
            .clone()
            .list_resources(self.op.call(provisioning::ListResourcesRequest {
                account_id: account_id.to_owned(),
                include_deleted: true,
                page: page_of(500),
                ..Default::default()
            }))
            .await?
            .into_inner()
            .resources)
    }

    async fn all_resources(
        &self,
        accounts: &[account::Account],
    ) -> Result<Vec<provisioning::Resource>, Status> {
        let mut all = Vec::new();
        for account in accounts.iter().take(200) {
            all.extend(self.resources(&account.id).await?);
        }
        Ok(all)
    }

    async fn reports(&self, account_id: &str) -> Result<Vec<billing::UsageReport>, Status> {
        Ok(self
            .state
            .clients
            .billing
            .clone()
            .list_usage_reports(self.op.call(billing::ListUsageReportsRequest {
                account_id: account_id.to_owned(),
                page: page_of(500),
                ..Default::default()
            }))
            .await?
            .into_inner()
            .reports)
    }

    async fn events(&self, account_id: &str) -> Result<Vec<account::MarketplaceEvent>, Status> {
        Ok(self
            .state
            .clients
            .account
            .clone()
            .list_marketplace_events(self.op.call(account::ListMarketplaceEventsRequest {
                account_id: account_id.to_owned(),
                page: page_of(200),
                ..Default::default()
            }))
            .await?
            .into_inner()
            .events)
    }

    async fn outbox(
        &self,
        service: &str,
        status: &str,
        size: u32,
    ) -> Result<common::ListOutboxJobsResponse, Status> {
        let request = common::ListOutboxJobsRequest {
            status: status.to_owned(),
            kind: String::new(),
            page: page_of(size),
            // The page shows the done and discarded jobs' counts too.
            unfinished_counts_only: false,
        };
        on_service!(
            self.state.clients,
            service,
            list_outbox_jobs(self.op.call(request))
        )
    }

    async fn audit(&self, account_id: &str) -> Result<Vec<(String, common::AuditEntry)>, Status> {
        let request = || common::ListAuditEntriesRequest {
            account_id: account_id.to_owned(),
            page: page_of(200),
        };
        let mut all = Vec::new();
        for service in SERVICES {
            let entries = on_service!(
                self.state.clients,
                service,
                list_audit_entries(self.op.call(request()))
            )?
            .entries;
            all.extend(entries.into_iter().map(|e| (service.to_owned(), e)));
        }
        Ok(all)
    }
}

/// Renders `body` (or the failure) for a signed-in operator.
async fn render<F, Fut>(
    state: AppState,
    headers: HeaderMap,
    title: &str,
    current: &str,
    raw: Option<String>,
    build: F,
) -> Response
where
    F: FnOnce(AppState, Operator, HashMap<String, String>) -> Fut,
    Fut: std::future::Future<Output = (Operator, Result<String, Status>)>,
{
    let op = match operator(&state, &headers) {
        Ok(op) => op,
        Err(answer) => return *answer,
    };
    let params = query(raw);
    let notice = params.get("done").cloned().filter(|d| is_action(d));
    let (op, built) = build(state, op, params).await;
    match built {
        Ok(body) => {
            let notice = notice
                .map(|done| {
                    format!(
                        r#"<div class="notice" id="notice">Done: <code>{}</code>, recorded under your name.</div>"#,
                        escape(&done)
                    )
                })
                .unwrap_or_default();
            op.page(title, current, &format!("{notice}{body}"))
        }
        Err(status) => op.failure(&status),
    }
}

const ACTIONS: [&str; 8] = [
    "account.refresh",
    "subscription.sync",
    "outbox.retry",
    "outbox.discard",
    "resource.suspend",
    "resource.resume",
    "signup.approve",
    "signup.reject",
];

fn is_action(name: &str) -> bool {
    ACTIONS.contains(&name)
}

/// The overview.
#[utoipa::path(
    get,
    path = "/console",
    operation_id = "console_overview",
    tag = "console",
    responses((status = 200, description = "Accounts, subscriptions and resources per marketplace and state; outbox jobs; usage reports; charts", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to the sign-in page", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security(("console_session" = []))
)]
pub async fn overview(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    render(
        state,
        headers,
        "Overview",
        "/console",
        raw,
        |state, op, _| async move {
            let built = overview_body(&Calls {
                state: &state,
                op: &op,
            })
            .await;
            (op, built)
        },
    )
    .await
}

async fn overview_body(calls: &Calls<'_>) -> Result<String, Status> {
    let accounts = calls.accounts().await?;
    let subscriptions = calls.subscriptions("").await?;
    let resources = calls.all_resources(&accounts).await?;
    let reports = calls.reports("").await?;
    let mut by_account = BTreeMap::new();
    for a in &accounts {
        let m = a.marketplace_ref.as_ref().map_or(0, |r| r.marketplace);
        *by_account
            .entry((marketplace(m), account_state(a.state)))
            .or_insert(0) += 1;
    }
    let mut by_subscription = BTreeMap::new();
    for s in &subscriptions {
        let m = s.marketplace_ref.as_ref().map_or(0, |r| r.marketplace);
        *by_subscription
            .entry((marketplace(m), subscription_state(s.state)))
            .or_insert(0) += 1;
    }
    let mut by_resource = BTreeMap::new();
    for r in &resources {
        *by_resource
            .entry((marketplace(r.marketplace), resource_status(r.status)))
            .or_insert(0) += 1;
    }
    let mut body = String::from(r#"<h1>Overview</h1><div class="cards">"#);
    body.push_str(&counts_table("Accounts", &by_account));
    body.push_str(&counts_table("Subscriptions", &by_subscription));
    body.push_str(&counts_table("Resources", &by_resource));
    // Outbox counts per service.
    let mut rows = Vec::new();
    let mut outcomes: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for service in SERVICES {
        let listed = calls.outbox(service, "", 1).await?;
        let c = listed.counts.unwrap_or_default();
        rows.push(vec![
            format!(r#"<a href="/console/outbox?service={service}">{service}</a>"#),
            format!("{}", c.pending),
            format!("{}", c.retrying),
            format!("{}", c.running),
            format!(r#"<span id="dead-{service}">{}</span>"#, c.dead),
            format!("{}", c.done),
            format!("{}", c.discarded),
        ]);
        for (index, status) in ["done", "dead", "retrying"].into_iter().enumerate() {
            for job in calls.outbox(service, status, 500).await?.jobs {
                let when = if status == "retrying" {
                    job.updated_at.as_ref()
                } else {
                    job.finished_at.as_ref()
                };
                if let Some(d) = day(when) {
                    outcomes.entry(d).or_default()[index] += 1;
                }
            }
        }
    }
    let _ = write!(
        body,
        r#"<div class="card"><h2>Outbox jobs</h2>{}</div>"#,
        table(
            &[
                "Service",
                "Pending",
                "Retrying",
                "Running",
                "Dead",
                "Done",
                "Discarded"
            ],
            &rows,
            ""
        )
    );
    let mut report_counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_day: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for r in &reports {
        let status = report_status(r.status);
        *report_counts.entry(status.clone()).or_default() += 1;
        if let Some(d) = day(r.window_end.as_ref().or(r.created_at.as_ref())) {
            let slot = match status.as_str() {
                "sent" => 0,
                "failed" => 1,
                _ => 2,
            };
            per_day.entry(d).or_default()[slot] += 1;
        }
    }
    let due = report_counts.get("pending").copied().unwrap_or(0);
    let rows: Vec<Vec<String>> = report_counts
        .iter()
        .map(|(s, n)| vec![badge(s), n.to_string()])
        .collect();
    let _ = write!(
        body,
        r#"<div class="card"><h2>Usage reports</h2><p>Due (not yet sent): <strong id="reports-due">{due}</strong></p>{}</div></div>"#,
        table(&["Status", "Count"], &rows, "No usage report yet.")
    );
    let days: Vec<String> = per_day.keys().cloned().collect();
    body.push_str(&html::bar_chart(
        "Usage reports per window day",
        &days,
        &[
            Series {
                label: "sent",
                color: "#3b9c56",
                values: per_day.values().map(|v| v[0]).collect(),
            },
            Series {
                label: "failed",
                color: "#c0392b",
                values: per_day.values().map(|v| v[1]).collect(),
            },
            Series {
                label: "due",
                color: "#e0a100",
                values: per_day.values().map(|v| v[2]).collect(),
            },
        ],
    ));
    let days: Vec<String> = outcomes.keys().cloned().collect();
    body.push_str(&html::bar_chart(
        "Marketplace and service calls (outbox jobs) per day",
        &days,
        &[
            Series {
                label: "delivered",
                color: "#3b9c56",
                values: outcomes.values().map(|v| v[0]).collect(),
            },
            Series {
                label: "dead-lettered",
                color: "#c0392b",
                values: outcomes.values().map(|v| v[1]).collect(),
            },
            Series {
                label: "retrying",
                color: "#e0a100",
                values: outcomes.values().map(|v| v[2]).collect(),
            },
        ],
    ));
    Ok(body)
}

fn accounts_rows(accounts: &[account::Account]) -> Vec<Vec<String>> {
    accounts
        .iter()
        .map(|a| {
            vec![
                account_link(&a.id),
                mref(a.marketplace_ref.as_ref()),
                escape(&a.display_name),
                badge(&account_state(a.state)),
                badge(&signup_state(a.signup_state)),
                ts(a.created_at.as_ref()),
            ]
        })
        .collect()
}

/// The accounts, searchable by our id or any marketplace id.
#[utoipa::path(
    get,
    path = "/console/accounts",
    operation_id = "console_accounts",
    tag = "console",
    params(("q" = Option<String>, Query, description = "Our id (`acc_...`), a marketplace id (installation, procurement account, entitlement, resource) or part of a name")),
    responses((status = 200, description = "The accounts", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to the sign-in page", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security(("console_session" = []))
)]
pub async fn accounts(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    render(state, headers, "Accounts", "/console/accounts", raw, |state, op, params| async move {
        let calls = Calls { state: &state, op: &op };
        let q = params.get("q").map(|q| q.trim().to_owned()).unwrap_or_default();
        let built = async {
            let all = calls.accounts().await?;
            let found = if q.is_empty() {
                all
            } else {
                search(&calls, all, &q).await?
            };
            Ok(format!(
                r#"<h1>Accounts</h1><form method="get" action="/console/accounts"><input type="search" name="q" id="q" value="{}" placeholder="acc_…, icfg_…, entitlement or name" size="40"> <button type="submit" id="search">Search</button></form><h2>{} account(s)</h2>{}"#,
                escape(&q),
                found.len(),
                table(
                    &["Id", "Marketplace id", "Name", "State", "Signup", "Created"],
                    &accounts_rows(&found),
                    "No account matches."
                )
            ))
        }
        .await;
        (op, built)
    })
    .await
}

async fn search(
    calls: &Calls<'_>,
    all: Vec<account::Account>,
    q: &str,
) -> Result<Vec<account::Account>, Status> {
    let lower = q.to_ascii_lowercase();
    let mut ids: Vec<String> = Vec::new();
    for a in &all {
        let external = a
            .marketplace_ref
            .as_ref()
            .map(|r| r.external_id.as_str())
            .unwrap_or_default();
        if a.id == q
            || external == q
            || a.display_name.to_ascii_lowercase().contains(&lower)
            || a.attributes.values().any(|v| v == q)
        {
            ids.push(a.id.clone());
        }
    }
    for s in calls.subscriptions("").await? {
        let external = s
            .marketplace_ref
            .as_ref()
            .map(|r| r.external_id.as_str())
            .unwrap_or_default();
        if s.id == q
            || external == q
            || s.usage_reporting_id == q
            || s.resource_ids.iter().any(|r| r == q)
        {
            ids.push(s.account_id.clone());
        }
    }
    Ok(all.into_iter().filter(|a| ids.contains(&a.id)).collect())
}

/// One account: people, subscriptions, resources and its timeline.
#[utoipa::path(
    get,
    path = "/console/accounts/{account_id}",
    operation_id = "console_account",
    tag = "console",
    params(("account_id" = String, Path, description = "Our account id (`acc_...`)")),
    responses((status = 200, description = "The account", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to the sign-in page", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security(("console_session" = []))
)]
pub async fn account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    render(
        state,
        headers,
        "Account",
        "/console/accounts",
        raw,
        |state, op, _| async move {
            let built = account_body(
                &Calls {
                    state: &state,
                    op: &op,
                },
                &account_id,
            )
            .await;
            (op, built)
        },
    )
    .await
}

async fn account_body(calls: &Calls<'_>, account_id: &str) -> Result<String, Status> {
    let a = calls.account(account_id).await?;
    let csrf = calls.op.csrf.as_str();
    let back = format!("/console/accounts/{}", a.id);
    let mut body = format!(
        r#"<h1>Account <code id="account-id">{}</code></h1><div class="cards"><div class="card"><h2>Details</h2>{}</div>"#,
        escape(&a.id),
        table(
            &["Field", "Value"],
            &[
                vec!["Marketplace".into(), mref(a.marketplace_ref.as_ref())],
                vec!["Name".into(), escape(&a.display_name)],
                vec!["Company".into(), escape(&a.company)],
                vec![
                    "State".into(),
                    format!(
                        r#"<span id="account-state">{}</span>"#,
                        badge(&account_state(a.state))
                    )
                ],
                vec![
                    "Signup".into(),
                    format!(
                        r#"<span id="signup-state">{}</span> {}"#,
                        badge(&signup_state(a.signup_state)),
                        escape(&a.signup_reason)
                    )
                ],
                vec!["Marketplace state".into(), escape(&a.marketplace_state)],
                vec!["Updated".into(), ts(a.updated_at.as_ref())],
            ],
            ""
        )
    );
    let mut actions = action_form(
        csrf,
        "account.refresh",
        &[("target", &a.id), ("back", &back)],
        "Re-read from the marketplace",
        false,
        false,
    );
    let signup = signup_state(a.signup_state);
    if signup == "pending" || signup == "rejected" {
        actions.push_str("<br><br>");
        actions.push_str(&action_form(
            csrf,
            "signup.approve",
            &[("target", &a.id), ("back", &back)],
            "Approve signup",
            false,
            false,
        ));
    }
    if signup == "pending" {
        actions.push(' ');
        actions.push_str(&action_form(
            csrf,
            "signup.reject",
            &[("target", &a.id), ("back", &back)],
            "Reject signup",
            true,
            true,
        ));
    }
    let mut people: Vec<Vec<String>> = Vec::new();
    if let Some(c) = &a.contact {
        people.push(vec![
            "contact".into(),
            escape(&c.name),
            escape(&c.email),
            escape(&c.role),
        ]);
    }
    for p in &a.people {
        people.push(vec![
            escape(&p.external_id),
            escape(&p.name),
            escape(&p.email),
            escape(&p.role),
        ]);
    }
    let _ = write!(
        body,
        r#"<div class="card"><h2>Actions</h2>{actions}</div><div class="card"><h2>People</h2>{}</div></div>"#,
        table(
            &["Who", "Name", "E-mail", "Role"],
            &people,
            "No one recorded."
        )
    );
    let subscriptions = calls.subscriptions(&a.id).await?;
    body.push_str("<h2>Subscriptions</h2>");
    body.push_str(&subscriptions_table(csrf, &subscriptions, &back));
    let resources = calls.resources(&a.id).await?;
    body.push_str("<h2>Resources</h2>");
    body.push_str(&resources_table(csrf, &resources, &back));
    // The timeline: events received, reports sent, operator actions.
    let mut timeline: Vec<(Option<chrono::DateTime<chrono::Utc>>, Vec<String>)> = Vec::new();
    for e in calls.events(&a.id).await? {
        timeline.push((
            time_of(e.received_at.as_ref()),
            vec![
                ts(e.received_at.as_ref()),
                format!("event ({})", escape(&e.channel)),
                format!(
                    "{} <code>{}</code>",
                    escape(&e.event_type),
                    escape(&e.external_id)
                ),
                badge(&event_status(e.status)),
                details("payload", &e.payload_json),
            ],
        ));
    }
    for r in calls.reports(&a.id).await? {
        timeline.push((
            time_of(r.updated_at.as_ref().or(r.created_at.as_ref())),
            vec![
                ts(r.updated_at.as_ref().or(r.created_at.as_ref())),
                "usage report".into(),
                format!("{} <code>{}</code>", escape(&r.kind), escape(&r.id)),
                badge(&report_status(r.status)),
                format!(
                    "{}{}",
                    details("request", &r.request_json),
                    details("answer", &r.response)
                ),
            ],
        ));
    }
    for (service, entry) in calls.audit(&a.id).await? {
        timeline.push((
            time_of(entry.at.as_ref()),
            vec![
                ts(entry.at.as_ref()),
                format!("operator action ({service})"),
                format!(
                    r#"<span class="audit">{} by <strong>{}</strong> on <code>{}</code></span>"#,
                    escape(&entry.action),
                    escape(&entry.actor),
                    escape(&entry.target)
                ),
                badge(if entry.outcome == "ok" {
                    "ok"
                } else {
                    "failed"
                }),
                escape(&format!(
                    "{} {}",
                    entry.detail,
                    if entry.outcome == "ok" {
                        ""
                    } else {
                        &entry.outcome
                    }
                )),
            ],
        ));
    }
    timeline.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    let rows: Vec<Vec<String>> = timeline.into_iter().map(|(_, row)| row).collect();
    body.push_str(r#"<h2 id="timeline">Timeline</h2>"#);
    body.push_str(&table(
        &["When", "What", "Detail", "Outcome", "Bodies"],
        &rows,
        "Nothing happened yet.",
    ));
    Ok(body)
}

fn subscriptions_table(
    csrf: &str,
    subscriptions: &[provisioning::Subscription],
    back: &str,
) -> String {
    let rows: Vec<Vec<String>> = subscriptions
        .iter()
        .map(|s| {
            vec![
                format!("<code>{}</code>", escape(&s.id)),
                account_link(&s.account_id),
                mref(s.marketplace_ref.as_ref()),
                format!("{} / {}", escape(&s.product_id), escape(&s.plan_id)),
                badge(&subscription_state(s.state)),
                escape(&s.marketplace_state),
                format!(
                    r#"<a href="/console/usage?subscription_id={}">usage</a> {}"#,
                    escape(&s.id),
                    action_form(
                        csrf,
                        "subscription.sync",
                        &[("target", &s.id), ("back", back)],
                        "Re-read",
                        false,
                        false
                    )
                ),
            ]
        })
        .collect();
    table(
        &[
            "Id",
            "Account",
            "Marketplace id",
            "Product / plan",
            "State",
            "Marketplace state",
            "",
        ],
        &rows,
        "No subscription.",
    )
}

fn resources_table(csrf: &str, resources: &[provisioning::Resource], back: &str) -> String {
    let rows: Vec<Vec<String>> = resources
        .iter()
        .map(|r| {
            let status = resource_status(r.status);
            let action = if status == "suspended" {
                action_form(
                    csrf,
                    "resource.resume",
                    &[("target", &r.id), ("back", back)],
                    "Resume",
                    false,
                    false,
                )
            } else if status == "ready" || status == "error" || status == "onboarding" {
                action_form(
                    csrf,
                    "resource.suspend",
                    &[("target", &r.id), ("back", back)],
                    "Suspend",
                    true,
                    true,
                )
            } else {
                String::new()
            };
            vec![
                format!("<code>{}</code>", escape(&r.id)),
                account_link(&r.account_id),
                escape(&r.name),
                format!("{} / {}", escape(&r.product_id), escape(&r.plan_id)),
                format!(
                    r#"<span class="resource-status" data-resource="{}">{}</span> {}"#,
                    escape(&r.id),
                    badge(&status),
                    escape(&r.status_message)
                ),
                escape(&marketplace(r.marketplace)),
                action,
            ]
        })
        .collect();
    table(
        &[
            "Id",
            "Account",
            "Name",
            "Product / plan",
            "Status",
            "Marketplace",
            "",
        ],
        &rows,
        "No resource.",
    )
}

/// Every subscription.
#[utoipa::path(
    get,
    path = "/console/subscriptions",
    operation_id = "console_subscriptions",
    tag = "console",
    responses((status = 200, description = "The subscriptions", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to the sign-in page", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security(("console_session" = []))
)]
pub async fn subscriptions(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    render(
        state,
        headers,
        "Subscriptions",
        "/console/subscriptions",
        raw,
        |state, op, _| async move {
            let calls = Calls {
                state: &state,
                op: &op,
            };
            let built = calls.subscriptions("").await.map(|all| {
                format!(
                    "<h1>Subscriptions</h1>{}",
                    subscriptions_table(&op.csrf, &all, "/console/subscriptions")
                )
            });
            (op, built)
        },
    )
    .await
}

/// Every resource.
#[utoipa::path(
    get,
    path = "/console/resources",
    operation_id = "console_resources",
    tag = "console",
    responses((status = 200, description = "The resources", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to the sign-in page", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security(("console_session" = []))
)]
pub async fn resources(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    render(
        state,
        headers,
        "Resources",
        "/console/resources",
        raw,
        |state, op, _| async move {
            let calls = Calls {
                state: &state,
                op: &op,
            };
            let built = async {
                let accounts = calls.accounts().await?;
                let all = calls.all_resources(&accounts).await?;
                Ok(format!(
                    "<h1>Resources</h1>{}",
                    resources_table(&op.csrf, &all, "/console/resources")
                ))
            }
            .await;
            (op, built)
        },
    )
    .await
}

/// Usage windows and the reports sent for them.
#[utoipa::path(
    get,
    path = "/console/usage",
    operation_id = "console_usage",
    tag = "console",
    params(("subscription_id" = Option<String>, Query, description = "Show this subscription's usage windows")),
    responses((status = 200, description = "Usage windows and reports with their exact bodies and answers", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to the sign-in page", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security(("console_session" = []))
)]
pub async fn usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    render(
        state,
        headers,
        "Usage",
        "/console/usage",
        raw,
        |state, op, params| async move {
            let calls = Calls {
                state: &state,
                op: &op,
            };
            let subscription = params.get("subscription_id").cloned().unwrap_or_default();
            let built = usage_body(&calls, &subscription).await;
            (op, built)
        },
    )
    .await
}

async fn usage_body(calls: &Calls<'_>, subscription: &str) -> Result<String, Status> {
    let mut body = String::from("<h1>Usage</h1>");
    if !subscription.is_empty() {
        let now = chrono::Utc::now();
        let start = now - chrono::Duration::days(35);
        let answer = calls
            .state
            .clients
            .billing
            .clone()
            .query_usage(calls.op.call(billing::QueryUsageRequest {
                customer: Some(billing::query_usage_request::Customer::SubscriptionId(
                    subscription.to_owned(),
                )),
                metric_id: String::new(),
                start: Some(marketbridge_core::time::to_timestamp(start)),
                end: Some(marketbridge_core::time::to_timestamp(now)),
            }))
            .await?
            .into_inner();
        let rows: Vec<Vec<String>> = answer
            .windows
            .iter()
            .map(|w| {
                vec![
                    escape(&w.metric_id),
                    ts(w.start.as_ref()),
                    ts(w.end.as_ref()),
                    w.quantity.to_string(),
                    w.period_total.to_string(),
                    w.event_count.to_string(),
                ]
            })
            .collect();
        let mut per_day: BTreeMap<String, u64> = BTreeMap::new();
        for w in &answer.windows {
            if let Some(d) = day(w.start.as_ref()) {
                *per_day.entry(d).or_default() += w.quantity.max(0) as u64;
            }
        }
        let _ = write!(
            body,
            r#"<h2>Usage windows of <code>{}</code> (last 35 days)</h2>{}{}"#,
            escape(subscription),
            html::bar_chart(
                "Usage per day",
                &per_day.keys().cloned().collect::<Vec<_>>(),
                &[Series {
                    label: "quantity",
                    color: "#3867d6",
                    values: per_day.values().copied().collect()
                }]
            ),
            table(
                &[
                    "Metric",
                    "Start",
                    "End",
                    "Quantity",
                    "Period total",
                    "Events"
                ],
                &rows,
                "No usage recorded in these days."
            )
        );
    }
    let reports = calls.reports("").await?;
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                format!("<code>{}</code>", escape(&r.id)),
                account_link(&r.account_id),
                format!(
                    r#"<a href="/console/usage?subscription_id={}"><code>{}</code></a>"#,
                    escape(&r.subscription_id),
                    escape(&r.subscription_id)
                ),
                format!(
                    "{} {}",
                    escape(&marketplace(r.marketplace)),
                    escape(&r.kind)
                ),
                format!(
                    "{} → {}",
                    ts(r.window_start.as_ref()),
                    ts(r.window_end.as_ref())
                ),
                badge(&report_status(r.status)),
                r.attempts.to_string(),
                ts(r.sent_at.as_ref()),
                format!(
                    "{}{}",
                    details("request body", &r.request_json),
                    details("answer", &r.response)
                ),
            ]
        })
        .collect();
    let _ = write!(
        body,
        "<h2>Reports sent to the marketplaces</h2>{}",
        table(
            &[
                "Id",
                "Account",
                "Subscription",
                "Kind",
                "Window",
                "Status",
                "Attempts",
                "Sent",
                "Bodies"
            ],
            &rows,
            "No usage report yet."
        )
    );
    Ok(body)
}

/// The outbox of each service.
#[utoipa::path(
    get,
    path = "/console/outbox",
    operation_id = "console_outbox",
    tag = "console",
    params(("service" = Option<String>, Query, description = "`account`, `provisioning` or `billing`; all when absent"), ("status" = Option<String>, Query, description = "`pending`, `retrying`, `running`, `dead`, `done` or `discarded`; every unfinished job when absent")),
    responses((status = 200, description = "Outbox jobs with retry and discard", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to the sign-in page", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security(("console_session" = []))
)]
pub async fn outbox(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    render(
        state,
        headers,
        "Outbox",
        "/console/outbox",
        raw,
        |state, op, params| async move {
            let calls = Calls {
                state: &state,
                op: &op,
            };
            let built = outbox_body(&calls, &params).await;
            (op, built)
        },
    )
    .await
}

async fn outbox_body(
    calls: &Calls<'_>,
    params: &HashMap<String, String>,
) -> Result<String, Status> {
    let wanted = params
        .get("service")
        .map(String::as_str)
        .unwrap_or_default();
    let status = params.get("status").map(String::as_str).unwrap_or_default();
    if !wanted.is_empty() && !SERVICES.contains(&wanted) {
        return Err(Status::invalid_argument(
            "service must be account, provisioning or billing",
        ));
    }
    let mut body =
        String::from(r#"<h1>Outbox</h1><p>Filter: <a href="/console/outbox">unfinished</a>"#);
    for s in [
        "pending",
        "retrying",
        "running",
        "dead",
        "done",
        "discarded",
    ] {
        let _ = write!(body, r#" · <a href="/console/outbox?status={s}">{s}</a>"#);
    }
    body.push_str("</p>");
    let csrf = calls.op.csrf.as_str();
    for service in SERVICES
        .into_iter()
        .filter(|s| wanted.is_empty() || *s == wanted)
    {
        let listed = calls.outbox(service, status, 200).await?;
        let c = listed.counts.unwrap_or_default();
        let back = "/console/outbox";
        let rows: Vec<Vec<String>> = listed
            .jobs
            .iter()
            .map(|j| {
                let mut actions = String::new();
                if matches!(
                    j.status.as_str(),
                    "dead" | "discarded" | "pending" | "retrying"
                ) {
                    actions.push_str(&action_form(
                        csrf,
                        "outbox.retry",
                        &[("target", &j.id), ("service", service), ("back", back)],
                        "Retry now",
                        false,
                        false,
                    ));
                }
                if matches!(j.status.as_str(), "dead" | "pending" | "retrying") {
                    actions.push(' ');
                    actions.push_str(&action_form(
                        csrf,
                        "outbox.discard",
                        &[("target", &j.id), ("service", service), ("back", back)],
                        "Discard",
                        true,
                        true,
                    ));
                }
                vec![
                    format!(
                        r#"<code class="job" data-job="{}">{}</code>"#,
                        escape(&j.id),
                        escape(&j.id)
                    ),
                    escape(&j.kind),
                    format!(
                        r#"<span class="job-status" data-job="{}">{}</span>"#,
                        escape(&j.id),
                        badge(&j.status)
                    ),
                    format!("{}/{}", j.attempts, j.max_attempts),
                    ts(j.run_at.as_ref()),
                    escape(&j.last_error),
                    details("payload", &j.payload_json),
                    actions,
                ]
            })
            .collect();
        let _ = write!(
            body,
            r#"<h2 id="outbox-{service}">{service}: {} pending, {} retrying, {} running, {} dead, {} done, {} discarded</h2>{}"#,
            c.pending,
            c.retrying,
            c.running,
            c.dead,
            c.done,
            c.discarded,
            table(
                &[
                    "Job",
                    "Kind",
                    "Status",
                    "Attempts",
                    "Next run",
                    "Last error",
                    "Payload",
                    ""
                ],
                &rows,
                "No job here."
            )
        );
    }
    Ok(body)
}

/// The inbox of marketplace events.
#[utoipa::path(
    get,
    path = "/console/events",
    operation_id = "console_events",
    tag = "console",
    responses((status = 200, description = "Webhooks and notifications with their payloads", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to the sign-in page", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security(("console_session" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    render(state, headers, "Events", "/console/events", raw, |state, op, _| async move {
        let calls = Calls { state: &state, op: &op };
        let built = calls.events("").await.map(|events| {
            let mut seen: HashMap<(i32, String), usize> = HashMap::new();
            for e in &events {
                *seen.entry((e.marketplace, e.external_id.clone())).or_default() += 1;
            }
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    let duplicate = e.deliveries > 1
                        || seen.get(&(e.marketplace, e.external_id.clone())).copied().unwrap_or(0) > 1;
                    vec![
                        ts(e.received_at.as_ref()),
                        escape(&marketplace(e.marketplace)),
                        escape(&e.channel),
                        escape(&e.event_type),
                        format!("<code>{}</code>{}", escape(&e.external_id), if duplicate { format!(" {} <span class=\"muted\">delivered {}×</span>", badge("duplicate"), e.deliveries.max(2)) } else { String::new() }),
                        account_link(&e.account_id),
                        format!("{} {}", badge(&event_status(e.status)), escape(&e.error)),
                        details("payload", &e.payload_json),
                    ]
                })
                .collect();
            format!(
                r#"<h1>Event inbox</h1><p class="muted">Every webhook and notification a marketplace sent, newest first. A redelivery of an event id already recorded is acknowledged, counted and not processed again; such events are marked duplicate.</p>{}"#,
                table(&["Received", "Marketplace", "Channel", "Type", "Event id", "Account", "Status", "Payload"], &rows, "No event yet.")
            )
        });
        (op, built)
    })
    .await
}

/// An operator action's form.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ActionForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: Option<String>,
    /// `account.refresh`, `subscription.sync`, `outbox.retry`,
    /// `outbox.discard`, `resource.suspend`, `resource.resume`,
    /// `signup.approve` or `signup.reject`.
    #[serde(default)]
    pub action: Option<String>,
    /// What it is done to (account, subscription, job or resource id).
    #[serde(default)]
    pub target: Option<String>,
    /// For outbox actions: `account`, `provisioning` or `billing`.
    #[serde(default)]
    pub service: Option<String>,
    /// Why (recorded; sent to the marketplace for a rejection).
    #[serde(default)]
    pub reason: Option<String>,
    /// The idempotency key of the form.
    #[serde(default)]
    pub key: Option<String>,
    /// The console page to return to.
    #[serde(default)]
    pub back: Option<String>,
}

/// Performs an operator action through the services' API, as the operator.
#[utoipa::path(
    post,
    path = "/console/actions",
    operation_id = "console_action",
    tag = "console",
    request_body(content = ActionForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Done: back to the page it was asked from", headers(("location" = String))), crate::openapi::doc::PageErrors),
    security(("console_session" = []))
)]
pub async fn act(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let op = match operator(&state, &headers) {
        Ok(op) => op,
        Err(answer) => return *answer,
    };
    let fields = form(&body);
    if let Err(answer) = check_post(&state, &headers, &op, &fields) {
        return *answer;
    }
    let field = |name: &str| {
        fields
            .get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let action = field("action");
    let target = field("target");
    if !is_action(&action) {
        return op.failure(&Status::invalid_argument("unknown action"));
    }
    if target.is_empty() || target.len() > 200 {
        return op.failure(&Status::invalid_argument("the action needs a target"));
    }
    let back = field("back");
    let back = if back.starts_with("/console")
        && !back.starts_with("/console//")
        && !back.contains('\\')
    {
        back
    } else {
        "/console".to_owned()
    };
    let key = field("key");
    let context = Some(common::RequestContext {
        idempotency_key: if key.is_empty() {
            String::new()
        } else {
            format!("console:{action}:{target}:{key}")
        },
        actor: Some(common::Person {
            name: op.name.clone(),
            role: "operator".into(),
            ..Default::default()
        }),
    });
    tracing::Span::current().record("console.operator", op.name.as_str());
    tracing::info!(operator = %op.name, console.action = %action, console.target = %target, "console action");
    let done = perform(
        &state,
        &op,
        &action,
        &target,
        &field("service"),
        &field("reason"),
        context,
    )
    .await;
    match done {
        Ok(()) => {
            let separator = if back.contains('?') { '&' } else { '?' };
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, format!("{back}{separator}done={action}"))],
            )
                .into_response()
        }
        Err(status) => {
            tracing::warn!(operator = %op.name, console.action = %action, error = %status.message(), "console action failed");
            op.failure(&status)
        }
    }
}

async fn perform(
    state: &AppState,
    op: &Operator,
    action: &str,
    target: &str,
    service: &str,
    reason: &str,
    context: Option<common::RequestContext>,
) -> Result<(), Status> {
    let clients = &state.clients;
    let selector = || {
        Some(common::AccountSelector {
            selector: Some(common::account_selector::Selector::AccountId(
                target.to_owned(),
            )),
        })
    };
    match action {
        "account.refresh" => {
            clients
                .account
                .clone()
                .refresh_account(op.call(account::RefreshAccountRequest {
                    account: selector(),
                }))
                .await?;
        }
        "signup.approve" => {
            clients
                .account
                .clone()
                .approve_signup(op.call(account::ApproveSignupRequest {
                    context,
                    account: selector(),
                    person: None,
                    company: String::new(),
                }))
                .await?;
        }
        "signup.reject" => {
            let reason = if reason.is_empty() {
                "Rejected by the provider"
            } else {
                reason
            };
            clients
                .account
                .clone()
                .reject_signup(op.call(account::RejectSignupRequest {
                    context,
                    account: selector(),
                    reason: reason.to_owned(),
                }))
                .await?;
        }
        "subscription.sync" => {
            let subscription = clients
                .provisioning
                .clone()
                .get_subscription(op.call(provisioning::GetSubscriptionRequest {
                    selector: Some(
                        provisioning::get_subscription_request::Selector::SubscriptionId(
                            target.to_owned(),
                        ),
                    ),
                }))
                .await?
                .into_inner();
            clients
                .provisioning
                .clone()
                .sync_subscription(op.call(provisioning::SyncSubscriptionRequest {
                    context,
                    marketplace_ref: subscription.marketplace_ref,
                    approved_by_marketplace: false,
                }))
                .await?;
        }
        "resource.suspend" => {
            clients
                .provisioning
                .clone()
                .suspend_resource(op.call(provisioning::SuspendResourceRequest {
                    context,
                    resource_id: target.to_owned(),
                    reason: if reason.is_empty() {
                        "Suspended by the provider".into()
                    } else {
                        reason.to_owned()
                    },
                }))
                .await?;
        }
        "resource.resume" => {
            clients
                .provisioning
                .clone()
                .resume_resource(op.call(provisioning::ResumeResourceRequest {
                    context,
                    resource_id: target.to_owned(),
                }))
                .await?;
        }
        "outbox.retry" | "outbox.discard" => {
            let request = common::OutboxJobActionRequest {
                job_id: target.to_owned(),
                reason: reason.to_owned(),
            };
            if action == "outbox.retry" {
                on_service!(clients, service, retry_outbox_job(op.call(request)))?;
            } else {
                on_service!(clients, service, discard_outbox_job(op.call(request)))?;
            }
        }
        _ => return Err(Status::invalid_argument("unknown action")),
    }
    Ok(())
}
