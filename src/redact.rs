//! Masking secrets in what `marketbridge config` prints: every setting that
//! is a secret, and every password-like part of any other value (the
//! password of a URL's userinfo, password-like query parameters and
//! `key=value` pairs), wherever they appear.

use serde_json::Value;

/// What a masked secret prints as.
pub const MASK: &str = "***";

/// True for a setting (`section.field`) whose whole value is a secret.
pub fn is_secret_setting(key: &str) -> bool {
    let field = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    // Paths and locations of secrets are not secrets themselves.
    if ["_dir", "_file", "_path", "_url", "_seconds", "_ms"]
        .iter()
        .any(|suffix| field.ends_with(suffix))
    {
        return false;
    }
    field.contains("secret")
        || field.contains("password")
        || field.ends_with("_token")
        || field == "token"
        || field.ends_with("_key")
        || field.contains("credential")
}

/// True for a parameter name whose value is a secret (`password`,
/// `sslpassword`, `api_key`, `access_token`, `client_secret`, ...).
fn is_secret_parameter(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "credential",
        "signature",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// `value` of setting `key` as printed: secrets masked.
pub fn redact_setting(key: &str, value: &Value) -> Value {
    match value {
        Value::String(text) if is_secret_setting(key) && !text.is_empty() => {
            Value::String(MASK.to_owned())
        }
        Value::String(text) => Value::String(redact_text(text)),
        Value::Array(items) => Value::Array(items.iter().map(|v| redact_setting(key, v)).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, v)| (name.clone(), redact_setting(&format!("{key}.{name}"), v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `text` with every password-like part masked: the password of any URL in
/// it (`postgres://u:***@h/db`) and the value of every password-like
/// `name=value` pair (`?password=***`, `sslmode=require&password=***`,
/// `host=h password=***`).
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        // One whitespace-separated word at a time: a URL, or pairs.
        let split = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(split);
        out.push_str(&redact_word(word));
        let spaces = tail.len() - tail.trim_start().len();
        out.push_str(&tail[..spaces]);
        rest = &tail[spaces..];
    }
    out
}

fn redact_word(word: &str) -> String {
    let without_userinfo = mask_userinfo_password(word);
    mask_pairs(&without_userinfo)
}

/// Masks the password of `scheme://user:password@host...`.
fn mask_userinfo_password(word: &str) -> String {
    let Some(scheme_end) = word.find("://") else {
        return word.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_len = word[authority_start..]
        .find(['/', '?', '#'])
        .unwrap_or(word.len() - authority_start);
    let authority = &word[authority_start..authority_start + authority_len];
    let Some(at) = authority.rfind('@') else {
        return word.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return word.to_owned();
    };
    format!(
        "{}{}:{MASK}{}",
        &word[..authority_start],
        &userinfo[..colon],
        &word[authority_start + at..]
    )
}

/// Masks the value of every password-like `name=value` pair separated by
/// `?`, `&`, `;` or `,`.
fn mask_pairs(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut start = 0;
    for (index, c) in word.char_indices() {
        if matches!(c, '?' | '&' | ';' | ',') {
            out.push_str(&mask_pair(&word[start..index]));
            out.push(c);
            start = index + c.len_utf8();
        }
    }
    out.push_str(&mask_pair(&word[start..]));
    out
}

fn mask_pair(pair: &str) -> String {
    match pair.split_once('=') {
        // A URL before its query is not a pair.
        Some((name, value))
            if !name.contains('/') && is_secret_parameter(name) && !value.is_empty() =>
        {
            format!("{name}={MASK}")
        }
        _ => pair.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_wherever_they_are() {
        assert_eq!(
            redact_text("postgres://u@h/db?password=secret"),
            "postgres://u@h/db?password=***"
        );
        assert_eq!(
            redact_text("postgres://u:hunter2@h:5432/db?sslmode=require&sslpassword=x"),
            "postgres://u:***@h:5432/db?sslmode=require&sslpassword=***"
        );
        assert_eq!(
            redact_text("host=h user=u password=secret dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(
            redact_text("sslmode=require&password=s3"),
            "sslmode=require&password=***"
        );
        assert_eq!(
            redact_text("https://api.example.com/x?api_key=k&page=2#f"),
            "https://api.example.com/x?api_key=***&page=2#f"
        );
        assert_eq!(
            redact_text("sqlite://./data/account.db?mode=rwc"),
            "sqlite://./data/account.db?mode=rwc"
        );
        assert_eq!(redact_text("http://[::1]:80/a"), "http://[::1]:80/a");
        assert!(is_secret_setting("security.encryption_key"));
        assert!(is_secret_setting("vercel.client_secret"));
        assert!(is_secret_setting("provisioning.plugin_token"));
        assert!(is_secret_setting("tls.gateway_key"));
        assert!(!is_secret_setting("security.secrets_dir"));
        assert!(!is_secret_setting("google.oauth_token_url"));
        assert!(!is_secret_setting("google.service_account_key_file"));
        assert!(!is_secret_setting("vercel.token_max_lifetime_seconds"));
        assert_eq!(
            redact_setting("gateway.session_secret", &json!("abc")),
            json!(MASK)
        );
        assert_eq!(
            redact_setting("gateway.session_secret", &json!("")),
            json!("")
        );
        assert_eq!(
            redact_setting(
                "x.list",
                &json!(["postgres://a:b@h/d", {"password": "p", "n": 1}])
            ),
            json!(["postgres://a:***@h/d", {"password": MASK, "n": 1}])
        );
    }
}
