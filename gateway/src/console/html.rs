//! The console's HTML: one layout, its stylesheet, and small builders.
//! Every value shown is escaped; pages carry no script.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// The stylesheet of every page (inline: the page CSP allows inline style
/// and nothing else).
const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1c2430;background:#f4f6f9}
header{display:flex;align-items:center;gap:18px;padding:10px 24px;background:#18212f;color:#fff}
header .brand{font-weight:600;letter-spacing:.02em}
header nav a{color:#c8d3e4;text-decoration:none;margin-right:14px}
header nav a.on,header nav a:hover{color:#fff;text-decoration:underline}
header .who{margin-left:auto;display:flex;gap:10px;align-items:center;color:#c8d3e4}
main{padding:20px 24px;max-width:1400px}
h1{font-size:20px;margin:0 0 14px}
h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde3ea;margin-bottom:10px}
th,td{text-align:left;padding:6px 9px;border-bottom:1px solid #edf0f4;vertical-align:top}
th{background:#f0f3f7;font-weight:600;font-size:12px;text-transform:uppercase;color:#566174}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
pre{white-space:pre-wrap;word-break:break-all;background:#f7f9fb;border:1px solid #e4e8ee;padding:6px;margin:4px 0;max-height:320px;overflow:auto}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:14px}
.card{background:#fff;border:1px solid #dde3ea;padding:12px 14px;overflow-x:auto}
.card h2{margin-top:0}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;background:#e8edf3}
.badge.dead,.badge.failed,.badge.error,.badge.rejected{background:#fde2e1;color:#9b1c16}
.badge.retrying,.badge.pending,.badge.suspended{background:#fff1cc;color:#7a5200}
.badge.done,.badge.sent,.badge.ok,.badge.active,.badge.ready,.badge.approved,.badge.processed{background:#dff5e3;color:#17632a}
form.inline{display:inline}
button{font:inherit;padding:3px 10px;border:1px solid #9aa8bb;background:#fff;border-radius:4px;cursor:pointer}
button.danger{border-color:#c0392b;color:#9b1c16}
input[type=text],input[type=search],input[type=password],select{font:inherit;padding:4px 8px;border:1px solid #b8c2cf;border-radius:4px}
.notice{background:#dff5e3;border:1px solid #9fd8ab;padding:8px 12px;margin-bottom:14px}
.error{background:#fde2e1;border:1px solid #f0a9a5;padding:8px 12px;margin-bottom:14px}
.muted{color:#6b778a}
.signin{max-width:460px;margin:80px auto;background:#fff;border:1px solid #dde3ea;padding:24px}
.signin input{width:100%;margin:6px 0 14px}
svg text{font:11px system-ui,sans-serif;fill:#566174}
.legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
"#;

/// The pages of the navigation bar: (path, title).
pub const NAV: [(&str, &str); 7] = [
    ("/console", "Overview"),
    ("/console/accounts", "Accounts"),
    ("/console/subscriptions", "Subscriptions"),
    ("/console/resources", "Resources"),
    ("/console/usage", "Usage"),
    ("/console/outbox", "Outbox"),
    ("/console/events", "Events"),
];

/// A whole page: `operator` and `csrf` for the header's sign-out (none on
/// the sign-in page).
pub fn page(
    status: StatusCode,
    title: &str,
    current: &str,
    operator: Option<(&str, &str)>,
    body: &str,
) -> Response {
    let mut html = String::with_capacity(body.len() + 4096);
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{} · marketbridge console</title><style>{STYLE}</style></head><body>
<header><span class="brand">marketbridge console</span>"#,
        escape(title)
    );
    if let Some((name, csrf)) = operator {
        html.push_str("<nav>");
        for (path, label) in NAV {
            let on = if path == current { " class=\"on\"" } else { "" };
            let _ = write!(html, r#"<a href="{path}"{on}>{label}</a>"#);
        }
        let _ = write!(
            html,
            r#"</nav><div class="who">signed in as <strong id="operator">{}</strong>
<form class="inline" method="post" action="/console/sign-out"><input type="hidden" name="csrf" value="{}"><button type="submit" id="sign-out">Sign out</button></form></div>"#,
            escape(name),
            escape(csrf)
        );
    }
    let _ = write!(html, "</header><main>{body}</main></body></html>");
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// A status badge.
pub fn badge(status: &str) -> String {
    let class: String = status
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    format!(r#"<span class="badge {class}">{}</span>"#, escape(status))
}

/// A table with `headers` and rows of already escaped cells.
pub fn table(headers: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!(r#"<p class="muted">{}</p>"#, escape(empty));
    }
    let mut html = String::from("<table><thead><tr>");
    for h in headers {
        let _ = write!(html, "<th>{}</th>", escape(h));
    }
    html.push_str("</tr></thead><tbody>");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    html
}

/// A collapsible block of preformatted text (a payload, a body).
pub fn details(summary: &str, text: &str) -> String {
    if text.is_empty() {
        return r#"<span class="muted">—</span>"#.into();
    }
    let pretty = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned());
    format!(
        "<details><summary>{}</summary><pre>{}</pre></details>",
        escape(summary),
        escape(&pretty)
    )
}

/// A POST form with one button: the CSRF token, an idempotency key, the
/// action and its fields (name, value), and optionally a reason box.
pub fn action_form(
    csrf: &str,
    action: &str,
    fields: &[(&str, &str)],
    label: &str,
    danger: bool,
    reason: bool,
) -> String {
    let mut html = String::from(r#"<form class="inline" method="post" action="/console/actions">"#);
    let _ = write!(
        html,
        r#"<input type="hidden" name="csrf" value="{}"><input type="hidden" name="key" value="{}"><input type="hidden" name="action" value="{}">"#,
        escape(csrf),
        marketbridge_core::crypto::random_token(16),
        escape(action)
    );
    for (name, value) in fields {
        let _ = write!(
            html,
            r#"<input type="hidden" name="{}" value="{}">"#,
            escape(name),
            escape(value)
        );
    }
    if reason {
        html.push_str(r#"<input type="text" name="reason" placeholder="reason" size="14"> "#);
    }
    let class = if danger { r#" class="danger""# } else { "" };
    let target = fields
        .iter()
        .find(|(name, _)| *name == "target")
        .map_or("", |(_, v)| v);
    let _ = write!(
        html,
        r#"<button type="submit"{class} data-action="{}" data-target="{}">{}</button></form>"#,
        escape(action),
        escape(target),
        escape(label)
    );
    html
}

/// One series of a bar chart.
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// Fill colour.
    pub color: &'a str,
    /// One value per category.
    pub values: Vec<u64>,
}

/// A stacked bar chart as inline SVG: one bar per category.
pub fn bar_chart(title: &str, categories: &[String], series: &[Series<'_>]) -> String {
    let width = 640.0_f64;
    let height = 180.0_f64;
    let (left, bottom, top) = (36.0, 24.0, 8.0);
    let totals: Vec<u64> = (0..categories.len())
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let slot = (width - left) / categories.len().max(1) as f64;
    let bar = (slot * 0.7).clamp(2.0, 48.0);
    let plot = height - bottom - top;
    let mut svg = format!(
        r#"<svg role="img" aria-label="{}" viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px;background:#fff;border:1px solid #dde3ea">"#,
        escape(title)
    );
    let _ = write!(
        svg,
        r##"<text x="2" y="{}">{max}</text><text x="2" y="{}">0</text><line x1="{left}" y1="{}" x2="{width}" y2="{}" stroke="#c8d0db"/>"##,
        top + 10.0,
        height - bottom,
        height - bottom,
        height - bottom
    );
    for (i, category) in categories.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = height - bottom;
        for s in series {
            let value = s.values.get(i).copied().unwrap_or(0);
            if value == 0 {
                continue;
            }
            let h = plot * value as f64 / max;
            y -= h;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{}"><title>{} {}: {value}</title></rect>"#,
                s.color,
                escape(category),
                escape(s.label)
            );
        }
        if categories.len() <= 16 || i % (categories.len() / 8).max(1) == 0 {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{}">{}</text>"#,
                x,
                height - 8.0,
                escape(category)
            );
        }
    }
    svg.push_str("</svg>");
    let mut legend = String::from(r#"<div class="legend">"#);
    for s in series {
        let _ = write!(
            legend,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            s.color,
            escape(s.label)
        );
    }
    legend.push_str("</div>");
    format!("<h2>{}</h2>{svg}{legend}", escape(title))
}
