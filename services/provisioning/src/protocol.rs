//! A resource's protocol settings (Vercel `protocolSettings`): the app URLs
//! of the customer's projects that sign in through an authentication
//! product, and the experimentation (Global Config) settings, stored as one
//! JSON object in Vercel's shape.

use marketbridge_core::{Error, Result, Validator};
use marketbridge_proto::provisioning::v1 as pb;
use serde_json::{Map, Value as Json, json};

/// Most app URLs a resource keeps.
const MAX_APP_URLS: usize = 100;
/// Longest app URL.
const MAX_URL: usize = 2048;
/// Largest experimentation object, serialised.
const MAX_EXPERIMENTATION: usize = 16 * 1024;

fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1") || host.ends_with(".localhost")
}

/// Checks app URLs: `https`, or `http` on localhost for `development`
/// only; a known target; no credentials or fragment.
pub fn validate_app_urls(validator: &mut Validator, urls: &[pb::AppUrl]) {
    const FIELD: &str = "protocolSettings.authentication.appUrls";
    if urls.len() > MAX_APP_URLS {
        validator.invalid(FIELD, format!("at most {MAX_APP_URLS} URLs"));
        return;
    }
    for (index, app_url) in urls.iter().enumerate() {
        let field = format!("{FIELD}[{index}]");
        if !matches!(
            app_url.target.as_str(),
            "development" | "preview" | "production"
        ) {
            validator.invalid(
                format!("{field}.target"),
                "must be development, preview or production",
            );
        }
        let Ok(parsed) = url::Url::parse(&app_url.url) else {
            validator.invalid(format!("{field}.url"), "must be an absolute URL");
            continue;
        };
        let host = parsed.host_str().unwrap_or_default();
        let scheme_ok = match parsed.scheme() {
            "https" => !host.is_empty(),
            "http" => app_url.target == "development" && is_local(host),
            _ => false,
        };
        if app_url.url.len() > MAX_URL
            || !scheme_ok
            || !parsed.username().is_empty()
            || parsed.password().is_some()
            || parsed.fragment().is_some()
        {
            validator.invalid(
                format!("{field}.url"),
                "must be an https URL (http://localhost only for development), without credentials or fragment",
            );
        }
    }
}

/// Checks an experimentation object.
pub fn validate_experimentation(validator: &mut Validator, text: &str) {
    const FIELD: &str = "protocolSettings.experimentation";
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(_)) if text.len() <= MAX_EXPERIMENTATION => {}
        Ok(Json::Object(_)) => validator.invalid(FIELD, "is too large"),
        _ => validator.invalid(FIELD, "must be an object"),
    }
}

/// Checks the settings of a request.
pub fn validate(validator: &mut Validator, settings: Option<&pb::ProtocolSettings>) {
    let Some(settings) = settings else {
        return;
    };
    if let Some(app_urls) = &settings.app_urls {
        validate_app_urls(validator, &app_urls.urls);
    }
    if let Some(text) = &settings.experimentation_json {
        validate_experimentation(validator, text);
    }
}

/// `stored` (JSON text) with the parts `change` sets replaced; the new
/// text and whether the app URLs changed.
pub fn merge(stored: &str, change: Option<&pb::ProtocolSettings>) -> Result<(String, bool)> {
    let mut object = stored_object(stored)?;
    let Some(change) = change else {
        return Ok((Json::Object(object).to_string(), false));
    };
    let mut app_urls_changed = false;
    if let Some(app_urls) = &change.app_urls {
        let urls: Vec<Json> = app_urls
            .urls
            .iter()
            .map(|u| json!({"url": u.url, "target": u.target}))
            .collect();
        let new = Json::Array(urls);
        app_urls_changed = object.get("appUrls") != Some(&new);
        object.insert("appUrls".to_owned(), new);
    }
    if let Some(text) = &change.experimentation_json {
        let value: Json = serde_json::from_str(text).map_err(|_| {
            Error::invalid_field("protocolSettings.experimentation", "must be an object")
        })?;
        object.insert("experimentation".to_owned(), value);
    }
    Ok((Json::Object(object).to_string(), app_urls_changed))
}

/// The stored settings object; stored text that is not one is an error.
fn stored_object(stored: &str) -> Result<Map<String, Json>> {
    match serde_json::from_str(stored) {
        Ok(Json::Object(object)) => Ok(object),
        _ => Err(Error::internal(
            "stored resources.protocol_settings unreadable: not a JSON object",
        )),
    }
}

fn urls_of(object: &Map<String, Json>) -> Vec<pb::AppUrl> {
    object
        .get("appUrls")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|u| pb::AppUrl {
            url: u["url"].as_str().unwrap_or_default().to_owned(),
            target: u["target"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// The app URLs of stored settings.
pub fn app_urls(stored: &str) -> Result<Vec<pb::AppUrl>> {
    Ok(urls_of(&stored_object(stored)?))
}

/// Stored settings as the protobuf message (`None` when there are none).
pub fn to_proto(stored: &str) -> Result<Option<pb::ProtocolSettings>> {
    let object = stored_object(stored)?;
    if object.is_empty() {
        return Ok(None);
    }
    Ok(Some(pb::ProtocolSettings {
        app_urls: object.contains_key("appUrls").then(|| pb::AppUrls {
            urls: urls_of(&object),
        }),
        experimentation_json: object.get("experimentation").map(Json::to_string),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(url: &str, target: &str) -> pb::AppUrl {
        pb::AppUrl {
            url: url.into(),
            target: target.into(),
        }
    }

    #[test]
    fn app_urls_are_https_or_local_development() {
        let mut validator = Validator::new();
        validate_app_urls(
            &mut validator,
            &[
                url("https://my-app.vercel.app", "production"),
                url("http://localhost:3000", "development"),
            ],
        );
        assert!(validator.finish().is_ok());
        for (bad, target) in [
            ("http://localhost:3000", "preview"),
            ("http://my-app.vercel.app", "development"),
            ("https://user:pw@my-app.vercel.app", "production"),
            ("javascript:alert(1)", "production"),
            ("https://my-app.vercel.app", "staging"),
            ("not a url", "production"),
        ] {
            let mut validator = Validator::new();
            validate_app_urls(&mut validator, &[url(bad, target)]);
            assert!(validator.finish().is_err(), "{bad} {target}");
        }
    }

    #[test]
    fn parts_replace_what_is_stored_and_absent_parts_keep_it() {
        let first = pb::ProtocolSettings {
            app_urls: Some(pb::AppUrls {
                urls: vec![url("https://a.example", "production")],
            }),
            experimentation_json: Some(r#"{"edgeConfigId":"ecfg_1"}"#.into()),
        };
        let (stored, changed) = merge("{}", Some(&first)).unwrap();
        assert!(changed);
        let (same, changed) = merge(
            &stored,
            Some(&pb::ProtocolSettings {
                app_urls: None,
                experimentation_json: Some(r#"{"globalConfigId":"gc_1"}"#.into()),
            }),
        )
        .unwrap();
        assert!(!changed);
        assert_eq!(app_urls(&same).unwrap(), first.app_urls.unwrap().urls);
        let proto = to_proto(&same).unwrap().unwrap();
        assert_eq!(
            proto.experimentation_json.as_deref(),
            Some(r#"{"globalConfigId":"gc_1"}"#)
        );
        assert_eq!(to_proto("{}").unwrap(), None);
        assert!(to_proto("not json").is_err());
        assert!(merge("[]", None).is_err());
    }
}
