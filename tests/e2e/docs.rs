//! The documents and deployment files stay true to the code: every setting
//! is in README's reference, and docker-compose.yml and the Dockerfile only
//! use settings, commands, ports and files that exist.

use marketbridge_config::Config;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

fn repository_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

fn known_env_vars() -> BTreeSet<String> {
    Config::keys()
        .iter()
        .map(|key| Config::env_var(key))
        .collect()
}

#[test]
fn readme_lists_every_setting_with_its_variable() {
    let readme = repository_file("README.md");
    let mut missing = Vec::new();
    for key in Config::keys() {
        let row_start = format!("| `{key}` | `{}` |", Config::env_var(&key));
        if !readme.contains(&row_start) {
            missing.push(key);
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's configuration reference lacks: {missing:?}"
    );
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = repository_file("README.md");
    let ci = repository_file(".ci/run");
    let command = "cargo nextest run --workspace";
    assert!(
        readme.contains(&format!("```sh\n{command}\n```")),
        "README shows the test command"
    );
    assert!(
        ci.contains(command),
        ".ci/run runs the README's test command"
    );
    assert!(
        ci.contains("MARKETBRIDGE_TEST_POSTGRES_URL"),
        ".ci/run enables the PostgreSQL run"
    );
    assert!(
        readme.contains("```sh\ncargo run --release -- up\n```"),
        "README shows the run command"
    );
}

fn compose() -> Value {
    let mut value: Value =
        serde_yaml_ng::from_str(&repository_file("docker-compose.yml")).expect("valid YAML");
    value.apply_merge().expect("merge keys resolve");
    value
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn port_of(address: &str) -> String {
    address
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned()
}

/// Expands `${NAME:-default}` the way compose does when NAME is unset.
fn expand_defaults(value: &str) -> String {
    match (value.find("${"), value.find(":-"), value.rfind('}')) {
        (Some(start), Some(dash), Some(end)) if start < dash && dash < end => {
            format!(
                "{}{}{}",
                &value[..start],
                &value[dash + 2..end],
                &value[end + 1..]
            )
        }
        _ => value.to_owned(),
    }
}

#[test]
fn compose_uses_only_real_settings_commands_and_ports() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services.keys().map(text).collect();
    for required in [
        "secrets",
        "postgres",
        "jaeger",
        "account",
        "provisioning",
        "billing",
        "gateway",
    ] {
        assert!(names.contains(required), "compose runs {required}");
    }
    let known = known_env_vars();
    let help = Command::new(env!("CARGO_BIN_EXE_marketbridge"))
        .arg("--help")
        .output()
        .expect("run marketbridge");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let databases = repository_file("deploy/postgres-init.sql");
    let listen_key = |service: &str| format!("MARKETBRIDGE_{}__LISTEN", service.to_uppercase());

    let mut listen_ports = BTreeMap::new();
    for service in ["account", "provisioning", "billing", "gateway"] {
        let definition = &compose["services"][service];
        assert!(
            definition.get("build").is_some(),
            "{service} is built from the Dockerfile"
        );
        let command: Vec<String> = definition["command"]
            .as_sequence()
            .expect("command")
            .iter()
            .map(text)
            .collect();
        assert_eq!(
            command[0], service,
            "{service} runs `marketbridge {service}`"
        );
        assert!(
            help.contains(&format!("  {service} ")),
            "`marketbridge {service}` exists"
        );

        let environment = definition["environment"].as_mapping().expect("environment");
        let mut settings = serde_json::Map::new();
        for (name, value) in environment {
            let name = text(name);
            assert!(known.contains(&name), "{service}: {name} is not a setting");
            let key = name.trim_start_matches("MARKETBRIDGE_").to_lowercase();
            let (section, field) = key.split_once("__").expect("SECTION__KEY");
            let value = expand_defaults(&text(value));
            let section = settings
                .entry(section.to_owned())
                .or_insert_with(|| serde_json::json!({}));
            let parsed = value
                .parse::<u64>()
                .map(serde_json::Value::from)
                .unwrap_or(serde_json::Value::String(value));
            section[field] = parsed;
        }
        // The values are of the right type for the configuration.
        let figment = Config::figment(None).merge(figment_json(&settings));
        let config: Config = figment
            .extract()
            .unwrap_or_else(|e| panic!("{service}: {e}"));
        // Secrets come from the volume the `secrets` service fills, never
        // from the file.
        assert!(
            config.security.encryption_key.is_empty()
                && config.gateway.session_secret.is_empty()
                && config.security.service_token.is_empty()
                && config.security.grpc_clients.is_empty(),
            "{service}: no secret is written in compose"
        );
        assert!(
            !config.security.allow_unauthenticated,
            "{service} authenticates callers"
        );
        let secrets_dir = config.security.secrets_dir.clone();
        let mounts: Vec<String> = definition["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .map(text)
            .collect();
        assert!(
            mounts.contains(&format!("secrets:{secrets_dir}:ro")),
            "{service} reads the secrets volume at {secrets_dir}: {mounts:?}"
        );

        let listen = environment
            .get(Value::String(listen_key(service)))
            .map(text)
            .unwrap_or_else(|| panic!("{service} sets its listen address"));
        assert!(
            listen.starts_with("0.0.0.0:"),
            "{service} listens on every interface in its container"
        );
        let port = port_of(&listen);
        let ports: Vec<String> = definition
            .get("ports")
            .and_then(Value::as_sequence)
            .map(|ports| ports.iter().map(text).collect())
            .unwrap_or_default();
        if service == "gateway" {
            assert!(
                ports.iter().any(|p| p.ends_with(&format!(":{port}"))),
                "the gateway publishes {port}"
            );
        } else {
            assert!(
                ports.is_empty(),
                "{service} publishes no gRPC port to the host: {ports:?}"
            );
        }
        let probe: Vec<String> = definition["healthcheck"]["test"]
            .as_sequence()
            .expect("healthcheck")
            .iter()
            .map(text)
            .collect();
        assert_eq!(
            probe[..3],
            ["CMD", "marketbridge", "probe"],
            "{service} probes itself"
        );
        assert!(
            probe[3].contains(&format!(":{port}")),
            "{service}'s probe targets its port"
        );
        assert!(help.contains("  probe "), "`marketbridge probe` exists");
        listen_ports.insert(service.to_owned(), port);

        if service != "gateway" {
            let url = text(
                &environment[Value::String(format!(
                    "MARKETBRIDGE_{}__DATABASE_URL",
                    service.to_uppercase()
                ))],
            );
            assert!(
                url.starts_with("postgres://marketbridge@postgres:5432/"),
                "{service} uses the postgres service, with no password in the file: {url}"
            );
            assert!(
                databases.contains(&format!("CREATE DATABASE {service};")),
                "the {service} database is created"
            );
        }
        let otlp = config.telemetry.otlp_endpoint;
        assert_eq!(
            otlp, "http://jaeger:4317",
            "{service} exports traces to the viewer"
        );
    }
    // Every component reaches the services at the address they listen on.
    for service in ["account", "provisioning", "billing", "gateway"] {
        let environment = &compose["services"][service]["environment"];
        for target in ["account", "provisioning", "billing"] {
            let url = text(
                &environment[Value::String(format!(
                    "MARKETBRIDGE_GATEWAY__{}_URL",
                    target.to_uppercase()
                ))],
            );
            assert_eq!(
                url,
                format!("http://{target}:{}", listen_ports[target]),
                "{service} → {target}"
            );
        }
    }
    assert_eq!(
        text(&compose["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"]),
        "true"
    );

    // The secrets service makes the files on first start; PostgreSQL takes
    // its password from the same volume.
    let init: Vec<String> = compose["services"]["secrets"]["command"]
        .as_sequence()
        .expect("secrets command")
        .iter()
        .map(text)
        .collect();
    assert_eq!(init[..2], ["secrets", "init"]);
    assert!(help.contains("  secrets "), "`marketbridge secrets` exists");
    let postgres = &compose["services"]["postgres"]["environment"];
    assert!(postgres.get("POSTGRES_PASSWORD").is_none());
    let password_file = text(&postgres["POSTGRES_PASSWORD_FILE"]);
    let postgres_mounts: Vec<String> = compose["services"]["postgres"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    let folder = password_file
        .strip_suffix(&format!(
            "/{}",
            marketbridge_rpc::secrets::DATABASE_PASSWORD_FILE
        ))
        .expect("the password file is the one `secrets init` writes");
    assert!(postgres_mounts.contains(&format!("secrets:{folder}:ro")));

    // No literal secret anywhere in the file: every variable named like a
    // secret holds a file path.
    for (service, definition) in services {
        let Some(environment) = definition.get("environment").and_then(Value::as_mapping) else {
            continue;
        };
        for (name, value) in environment {
            let name = text(name).to_uppercase();
            let secret_like = ["KEY", "SECRET", "TOKEN", "PASSWORD"]
                .iter()
                .any(|word| name.contains(word));
            if secret_like {
                let value = text(value);
                assert!(
                    value.starts_with('/'),
                    "{}: {name} holds a literal, not a file path: {value}",
                    text(service)
                );
            }
        }
    }
    let raw = repository_file("docker-compose.yml");
    assert!(
        !raw.contains("${"),
        "no variable defaults that could carry a secret"
    );
}

fn figment_json(
    settings: &serde_json::Map<String, serde_json::Value>,
) -> figment::providers::Serialized<serde_json::Value> {
    figment::providers::Serialized::globals(serde_json::Value::Object(settings.clone()))
}

#[test]
fn the_dockerfile_builds_the_one_binary_and_uses_real_settings() {
    let dockerfile = repository_file("Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked --bin marketbridge"));
    assert!(dockerfile.contains("ENTRYPOINT [\"marketbridge\"]"));
    let known = known_env_vars();
    for line in dockerfile.lines().filter(|l| {
        l.trim_start().starts_with("ENV") || l.trim_start().starts_with("MARKETBRIDGE_")
    }) {
        for word in line
            .split_whitespace()
            .filter(|w| w.starts_with("MARKETBRIDGE_"))
        {
            let name = word.split('=').next().unwrap_or_default();
            assert!(
                known.contains(name),
                "Dockerfile sets {name}, which is not a setting"
            );
        }
    }
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let source = line.split_whitespace().nth(1).unwrap_or_default();
        if source != "." {
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(source).exists(),
                "Dockerfile copies missing {source}"
            );
        }
    }
}
