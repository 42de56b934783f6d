//! The A2A Agent Card of a product listed as an AI agent on Google Cloud
//! Marketplace. The card is written in the catalog as `[products.agent]`
//! with the A2A field names (`protocolVersion`, `defaultInputModes`, ...),
//! checked when the catalog loads, and served as JSON by the gateway so the
//! provider uploads the very same file to Cloud Storage.
//!
//! The fields checked are those the A2A JSON schema requires
//! (`a2aproject/A2A:specification/json/a2a.json`); which fields Google's own
//! validation looks at is not published (UNVERIFIED), so every other field
//! is passed through as written.

use marketbridge_core::{Error, Result};
use serde_json::{Map, Value as Json};

/// Transports an A2A agent may prefer.
pub const TRANSPORTS: [&str; 3] = ["JSONRPC", "GRPC", "HTTP+JSON"];

/// Checks `card` (the product's `[products.agent]` table as JSON) and
/// returns it; the error names the first missing or malformed field.
pub fn check_agent_card(product_id: &str, card: &Json) -> Result<()> {
    let problem = |field: &str, what: &str| {
        Error::validation(format!(
            "catalog: product `{product_id}`: agent card field `{field}` {what}"
        ))
    };
    let Some(card) = card.as_object() else {
        return Err(problem("agent", "must be a table"));
    };
    for field in ["protocolVersion", "name", "description", "version"] {
        required_text(card, field).map_err(|what| problem(field, what))?;
    }
    let url = required_text(card, "url").map_err(|what| problem("url", what))?;
    check_https(url).map_err(|what| problem("url", what))?;
    let capabilities = card
        .get("capabilities")
        .ok_or("is required (a table, possibly empty)")
        .and_then(|value| value.as_object().ok_or("must be a table"))
        .map_err(|what| problem("capabilities", what))?;
    if let Some(extensions) = capabilities.get("extensions") {
        let extensions = extensions
            .as_array()
            .ok_or_else(|| problem("capabilities.extensions", "must be an array of tables"))?;
        for (index, extension) in extensions.iter().enumerate() {
            let field = format!("capabilities.extensions[{index}].uri");
            extension
                .as_object()
                .ok_or("must be a table")
                .and_then(|extension| required_text(extension, "uri"))
                .map_err(|what| problem(&field, what))?;
        }
    }
    for field in ["defaultInputModes", "defaultOutputModes"] {
        let modes = required_texts(card, field).map_err(|what| problem(field, what))?;
        if modes.is_empty() {
            return Err(problem(field, "must list at least one media type"));
        }
        if let Some(bad) = modes.iter().find(|mode| !mode.contains('/')) {
            return Err(problem(
                field,
                &format!("lists `{bad}`, which is not a media type (like `text/plain`)"),
            ));
        }
    }
    let skills = card
        .get("skills")
        .ok_or("is required (an array of `[[products.agent.skills]]` tables)")
        .and_then(|value| value.as_array().ok_or("must be an array of tables"))
        .map_err(|what| problem("skills", what))?;
    if skills.is_empty() {
        return Err(problem("skills", "must list at least one skill"));
    }
    let mut skill_ids = std::collections::BTreeSet::new();
    for (index, skill) in skills.iter().enumerate() {
        let Some(skill) = skill.as_object() else {
            return Err(problem(&format!("skills[{index}]"), "must be a table"));
        };
        for field in ["id", "name", "description"] {
            required_text(skill, field)
                .map_err(|what| problem(&format!("skills[{index}].{field}"), what))?;
        }
        required_texts(skill, "tags")
            .map_err(|what| problem(&format!("skills[{index}].tags"), what))?;
        let id = required_text(skill, "id").unwrap_or_default();
        if !skill_ids.insert(id.to_owned()) {
            return Err(problem(
                &format!("skills[{index}].id"),
                &format!("repeats skill `{id}`"),
            ));
        }
    }
    if let Some(transport) = card.get("preferredTransport") {
        let known = transport.as_str().is_some_and(|t| TRANSPORTS.contains(&t));
        if !known {
            return Err(problem(
                "preferredTransport",
                "must be one of `JSONRPC`, `GRPC`, `HTTP+JSON`",
            ));
        }
    }
    if let Some(interfaces) = card.get("additionalInterfaces") {
        let interfaces = interfaces
            .as_array()
            .ok_or_else(|| problem("additionalInterfaces", "must be an array of tables"))?;
        for (index, interface) in interfaces.iter().enumerate() {
            let Some(interface) = interface.as_object() else {
                return Err(problem(
                    &format!("additionalInterfaces[{index}]"),
                    "must be a table",
                ));
            };
            for field in ["url", "transport"] {
                required_text(interface, field).map_err(|what| {
                    problem(&format!("additionalInterfaces[{index}].{field}"), what)
                })?;
            }
        }
    }
    if let Some(provider) = card.get("provider") {
        let Some(provider) = provider.as_object() else {
            return Err(problem("provider", "must be a table"));
        };
        for field in ["organization", "url"] {
            required_text(provider, field)
                .map_err(|what| problem(&format!("provider.{field}"), what))?;
        }
    }
    Ok(())
}

fn required_text<'a>(table: &'a Map<String, Json>, field: &str) -> Result<&'a str, &'static str> {
    match table.get(field) {
        None => Err("is required"),
        Some(Json::String(text)) if !text.trim().is_empty() => Ok(text),
        Some(Json::String(_)) => Err("must not be empty"),
        Some(_) => Err("must be a string"),
    }
}

fn required_texts<'a>(
    table: &'a Map<String, Json>,
    field: &str,
) -> Result<Vec<&'a str>, &'static str> {
    let values = table
        .get(field)
        .ok_or("is required")?
        .as_array()
        .ok_or("must be an array of strings")?;
    values
        .iter()
        .map(|value| {
            value
                .as_str()
                .filter(|text| !text.trim().is_empty())
                .ok_or("must be an array of non-empty strings")
        })
        .collect()
}

fn check_https(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("must be an https:// URL (where the agent answers A2A calls)")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err("must be an https:// URL with a host");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Catalog;
    use serde_json::json;

    const AGENT: &str = r#"
[[products]]
id = "helper"
name = "Helper"

  [products.agent]
  protocolVersion = "0.3.0"
  name = "Helper agent"
  description = "Answers questions about your databases."
  url = "https://agent.example.com/a2a"
  version = "1.0.0"
  defaultInputModes = ["text/plain"]
  defaultOutputModes = ["text/plain", "application/json"]
  preferredTransport = "JSONRPC"

  [products.agent.capabilities]
  streaming = true

  [products.agent.provider]
  organization = "Example Inc."
  url = "https://example.com"

  [[products.agent.skills]]
  id = "explain"
  name = "Explain a query"
  description = "Explains what an SQL query does."
  tags = ["sql"]
  examples = ["What does SELECT 1 do?"]
"#;

    /// The example without the line `{field} = …` of the table whose
    /// header is `section` (the first one after it).
    fn without(section: &str, field: &str) -> String {
        let mut inside = false;
        let mut removed = false;
        let mut lines = Vec::new();
        for line in AGENT.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with('[') {
                inside = trimmed == section;
            }
            if inside && !removed && trimmed.starts_with(&format!("{field} =")) {
                removed = true;
                continue;
            }
            lines.push(line);
        }
        assert!(removed, "{section} {field}");
        lines.join("\n")
    }

    fn refusal(text: &str) -> String {
        Catalog::from_toml_str(text)
            .expect_err("the catalog is refused")
            .message()
            .to_owned()
    }

    #[test]
    fn an_agent_card_is_served_as_written() {
        let catalog = Catalog::from_toml_str(AGENT).unwrap();
        let card = catalog.product("helper").unwrap().agent_card().unwrap();
        assert_eq!(card["protocolVersion"], "0.3.0");
        assert_eq!(card["capabilities"], json!({"streaming": true}));
        assert_eq!(card["skills"][0]["examples"][0], "What does SELECT 1 do?");
        assert_eq!(card["provider"]["organization"], "Example Inc.");
        assert!(
            Catalog::builtin()
                .unwrap()
                .products()
                .iter()
                .all(|p| p.agent.is_none() || p.agent_card().is_some())
        );
    }

    #[test]
    fn every_field_a2a_requires_is_checked_at_load() {
        for field in [
            "protocolVersion",
            "name",
            "description",
            "url",
            "version",
            "defaultInputModes",
            "defaultOutputModes",
        ] {
            let message = refusal(&without("[products.agent]", field));
            assert!(
                message.contains(&format!("agent card field `{field}` is required")),
                "{field}: {message}"
            );
            assert!(message.contains("product `helper`"), "{message}");
        }
        let no_capabilities =
            AGENT.replace("  [products.agent.capabilities]\n  streaming = true\n", "");
        assert!(refusal(&no_capabilities).contains("`capabilities` is required"));
        let no_skills = AGENT.split("  [[products.agent.skills]]").next().unwrap();
        assert!(refusal(no_skills).contains("`skills` is required"));
        for field in ["id", "name", "description", "tags"] {
            let message = refusal(&without("[[products.agent.skills]]", field));
            assert!(
                message.contains(&format!("`skills[0].{field}` is required")),
                "{field}: {message}"
            );
        }
    }

    #[test]
    fn malformed_agent_cards_are_refused_with_the_field() {
        let cases = [
            (
                "url = \"https://agent.example.com/a2a\"",
                "url = \"http://agent.example.com\"",
                "`url` must be an https://",
            ),
            (
                "protocolVersion = \"0.3.0\"",
                "protocolVersion = \"\"",
                "`protocolVersion` must not be empty",
            ),
            (
                "version = \"1.0.0\"",
                "version = 1",
                "`version` must be a string",
            ),
            (
                "defaultInputModes = [\"text/plain\"]",
                "defaultInputModes = []",
                "at least one media type",
            ),
            (
                "defaultInputModes = [\"text/plain\"]",
                "defaultInputModes = [\"text\"]",
                "not a media type",
            ),
            (
                "preferredTransport = \"JSONRPC\"",
                "preferredTransport = \"SOAP\"",
                "`preferredTransport` must be one of",
            ),
            (
                "tags = [\"sql\"]",
                "tags = \"sql\"",
                "`skills[0].tags` must be an array",
            ),
            (
                "organization = \"Example Inc.\"",
                "",
                "`provider.organization` is required",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(AGENT.contains(from), "{from}");
            let message = refusal(&AGENT.replace(from, to));
            assert!(message.contains(expected), "{to}: {message}");
        }
        let twice = format!(
            "{AGENT}\n  [[products.agent.skills]]\n  id = \"explain\"\n  name = \"Again\"\n  description = \"d\"\n  tags = []\n"
        );
        assert!(refusal(&twice).contains("repeats skill `explain`"));
    }
}
