//! The Kubernetes base (`deploy/kubernetes`) and the Grafana dashboard
//! (`deploy/grafana/marketbridge.json`) stay true to the code: the manifests
//! use only real settings, subcommands and ports, probe what the parts listen
//! on, commit no secret, give every part a disruption budget, a network policy
//! and an autoscaler, and pass the Kubernetes schemas (with the
//! `kubernetes-validate` binary `MARKETBRIDGE_TEST_KUBERNETES_VALIDATE` names;
//! CI always sets it). The dashboard queries only metrics and labels the code
//! exports, and shows every metric. And what the README promises about
//! upgrades holds: replicas starting together on a fresh PostgreSQL database
//! all migrate it without a failure.

use marketbridge_config::Config;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const COMPONENTS: [&str; 4] = ["account", "provisioning", "billing", "gateway"];
const SECRET_NAME: &str = "marketbridge-secrets";
const GRPC_CLIENT_LABEL: &str = "marketbridge.dev/grpc-client";

fn repository_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn repository_file(path: &str) -> String {
    let full = repository_path(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// The manifest files of the base (every YAML file but kustomization.yaml).
fn manifest_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repository_path("deploy/kubernetes"))
        .expect("deploy/kubernetes exists")
        .map(|entry| entry.expect("a directory entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .filter(|name| name != "kustomization.yaml")
        .collect();
    files.sort();
    files
}

/// Every object of the base, with the file it is in.
fn objects() -> Vec<(String, Value)> {
    let mut objects = Vec::new();
    for file in manifest_files() {
        let text = repository_file(&format!("deploy/kubernetes/{file}"));
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
            if !value.is_null() {
                objects.push((file.clone(), value));
            }
        }
    }
    objects
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn list(value: &Value) -> Vec<Value> {
    value.as_sequence().cloned().unwrap_or_default()
}

fn kind_of(object: &Value) -> String {
    text(&object["kind"])
}

fn name_of(object: &Value) -> String {
    text(&object["metadata"]["name"])
}

fn find<'a>(objects: &'a [(String, Value)], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .map(|(_, object)| object)
        .find(|object| kind_of(object) == kind && name_of(object) == name)
}

fn port_of(address: &str) -> u64 {
    address
        .rsplit(':')
        .next()
        .and_then(|port| port.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {address}"))
}

/// True when the selector's labels all appear in `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(wanted) = selector.as_mapping() else {
        return false;
    };
    !wanted.is_empty()
        && wanted
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

fn known_env_vars() -> BTreeSet<String> {
    Config::keys()
        .iter()
        .map(|key| Config::env_var(key))
        .collect()
}

fn marketbridge_help() -> String {
    let help = Command::new(env!("CARGO_BIN_EXE_marketbridge"))
        .arg("--help")
        .output()
        .expect("run marketbridge");
    String::from_utf8_lossy(&help.stdout).into_owned()
}

#[test]
fn the_kustomization_lists_every_manifest_and_names_the_image() {
    let kustomization: Value =
        serde_yaml_ng::from_str(&repository_file("deploy/kubernetes/kustomization.yaml"))
            .expect("valid YAML");
    assert_eq!(text(&kustomization["kind"]), "Kustomization");
    let resources: BTreeSet<String> = list(&kustomization["resources"]).iter().map(text).collect();
    let files: BTreeSet<String> = manifest_files().into_iter().collect();
    assert_eq!(
        resources, files,
        "kustomization.yaml lists exactly the manifests of deploy/kubernetes"
    );
    assert!(
        !text(&kustomization["namespace"]).is_empty(),
        "the base names its namespace"
    );
    let images = list(&kustomization["images"]);
    assert!(
        images
            .iter()
            .any(|image| text(&image["name"]) == "marketbridge"),
        "the image `marketbridge` can be set in kustomization.yaml"
    );
    // Nothing a plain `kubectl apply -f` of each file would miss: the base
    // does no generation or patching the files do not show.
    for field in [
        "patches",
        "patchesStrategicMerge",
        "configMapGenerator",
        "secretGenerator",
        "replacements",
    ] {
        assert!(
            kustomization.get(field).is_none(),
            "kustomization.yaml uses no {field}: each file is valid on its own"
        );
    }
}

/// What one part runs with: its settings (ConfigMap and container variables).
struct Part {
    settings: BTreeMap<String, String>,
    pod: Value,
    container: Value,
}

fn part(objects: &[(String, Value)], component: &str) -> Part {
    let known = known_env_vars();
    let deployment = find(objects, "Deployment", &format!("marketbridge-{component}"))
        .unwrap_or_else(|| panic!("a Deployment marketbridge-{component}"));
    let pod = deployment["spec"]["template"].clone();
    let containers = list(&pod["spec"]["containers"]);
    assert_eq!(containers.len(), 1, "{component} runs one container");
    let container = containers[0].clone();
    let mut settings = BTreeMap::new();
    for source in list(&container["envFrom"]) {
        let name = text(&source["configMapRef"]["name"]);
        assert!(
            source.get("secretRef").is_none(),
            "{component}: secrets are files, not variables"
        );
        let config_map = find(objects, "ConfigMap", &name)
            .unwrap_or_else(|| panic!("{component} reads the ConfigMap {name}, which exists"));
        for (key, value) in config_map["data"].as_mapping().expect("data") {
            let key = text(key);
            assert!(
                known.contains(&key),
                "ConfigMap {name}: {key} is not a setting"
            );
            settings.insert(key, text(value));
        }
    }
    for variable in list(&container["env"]) {
        let name = text(&variable["name"]);
        assert!(
            known.contains(&name),
            "{component}: {name} is not a setting"
        );
        assert!(
            variable.get("valueFrom").is_none(),
            "{component}: {name} is given in the manifest, secrets come as files"
        );
        settings.insert(name, text(&variable["value"]));
    }
    Part {
        settings,
        pod,
        container,
    }
}

/// The configuration a part would run with, checked for type by the real
/// configuration loader.
fn config_of(component: &str, settings: &BTreeMap<String, String>) -> Config {
    let mut sections = serde_json::Map::new();
    for (name, value) in settings {
        let key = name.trim_start_matches("MARKETBRIDGE_").to_lowercase();
        let (section, field) = key.split_once("__").expect("SECTION__KEY");
        let section = sections
            .entry(section.to_owned())
            .or_insert_with(|| serde_json::json!({}));
        section[field] = value
            .parse::<u64>()
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| serde_json::Value::String(value.clone()));
    }
    Config::figment(None)
        .merge(figment::providers::Serialized::globals(
            serde_json::Value::Object(sections),
        ))
        .extract()
        .unwrap_or_else(|e| panic!("{component}: {e}"))
}

fn probe_port(probe: &Value, component: &str, which: &str) -> u64 {
    let port = if probe.get("grpc").is_some() {
        &probe["grpc"]["port"]
    } else if probe.get("httpGet").is_some() {
        &probe["httpGet"]["port"]
    } else {
        panic!("{component}: the {which} probe asks gRPC health or HTTP")
    };
    port.as_u64()
        .unwrap_or_else(|| panic!("{component}: the {which} probe names its port by number"))
}

#[test]
fn the_manifests_use_only_real_settings_commands_and_ports() {
    let objects = objects();
    let help = marketbridge_help();
    let mut service_ports = BTreeMap::new();

    for component in COMPONENTS {
        let Part {
            settings,
            pod,
            container,
        } = part(&objects, component);
        let config = config_of(component, &settings);

        // It runs the real subcommand of the one image.
        let args: Vec<String> = list(&container["args"]).iter().map(text).collect();
        assert_eq!(
            args,
            [component],
            "{component} runs `marketbridge {component}`"
        );
        assert!(
            help.contains(&format!("  {component} ")),
            "`marketbridge {component}` exists"
        );
        assert!(
            container.get("command").is_none(),
            "{component} keeps the image's entrypoint (`marketbridge`)"
        );
        let image = text(&container["image"]);
        assert!(
            image == "marketbridge" || image.starts_with("marketbridge:"),
            "{component} uses the image kustomization.yaml sets: {image}"
        );

        // It listens on every interface of the pod, on the port its probes
        // and its Service use.
        let listen = match component {
            "account" => &config.account.listen,
            "provisioning" => &config.provisioning.listen,
            "billing" => &config.billing.listen,
            _ => &config.gateway.listen,
        };
        assert!(
            listen.starts_with("0.0.0.0:"),
            "{component} listens on every interface of its pod: {listen}"
        );
        let port = port_of(listen);
        let port_name = if component == "gateway" {
            "http"
        } else {
            "grpc"
        };
        let ports = list(&container["ports"]);
        let named = |name: &str| {
            ports
                .iter()
                .find(|p| text(&p["name"]) == name)
                .and_then(|p| p["containerPort"].as_u64())
        };
        assert_eq!(
            named(port_name),
            Some(port),
            "{component}'s {port_name} port"
        );
        for which in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let probe = &container[which];
            assert!(!probe.is_null(), "{component} has a {which}");
            assert_eq!(
                probe_port(probe, component, which),
                port,
                "{component}'s {which} asks the port it listens on"
            );
            if component == "gateway" {
                let path = text(&probe["httpGet"]["path"]);
                let expected = if which == "readinessProbe" {
                    "/readyz"
                } else {
                    "/healthz"
                };
                assert_eq!(path, expected, "the gateway's {which}");
            } else {
                assert!(
                    probe.get("grpc").is_some(),
                    "{component}'s {which} asks gRPC health"
                );
            }
        }

        // Its metrics listen inside the pod, on the port Prometheus is told.
        let metrics_listen = match component {
            "account" => &config.account.metrics_listen,
            "provisioning" => &config.provisioning.metrics_listen,
            "billing" => &config.billing.metrics_listen,
            _ => &config.gateway.metrics_listen,
        };
        assert!(
            metrics_listen.starts_with("0.0.0.0:"),
            "{component} serves metrics to the scraper: {metrics_listen:?}"
        );
        let metrics_port = port_of(metrics_listen);
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(text(&annotations["prometheus.io/scrape"]), "true");
        assert_eq!(
            text(&annotations["prometheus.io/port"]),
            metrics_port.to_string(),
            "{component}'s scrape annotation names its metrics port"
        );
        assert_eq!(text(&annotations["prometheus.io/path"]), "/metrics");
        assert_eq!(named("metrics"), Some(metrics_port));
        assert_ne!(metrics_port, port, "metrics are not on the public port");

        // Traces and metrics go to a collector.
        assert!(
            config.telemetry.otlp_endpoint.starts_with("http"),
            "{component} exports OTLP"
        );

        // Secrets: none in the settings, every file from the Secret mounted
        // at security.secrets_dir, and the files this part needs among them.
        assert!(
            config.security.encryption_key.is_empty()
                && config.gateway.session_secret.is_empty()
                && config.security.service_token.is_empty()
                && config.security.grpc_clients.is_empty()
                && config.vercel.client_secret.is_empty()
                && config.provisioning.plugin_token.is_empty(),
            "{component}: no secret is written in the manifests"
        );
        assert!(
            !config.security.allow_unauthenticated,
            "{component} authenticates callers"
        );
        let secrets_dir = &config.security.secrets_dir;
        assert!(
            !secrets_dir.is_empty(),
            "{component} reads a secrets folder"
        );
        let mount = list(&container["volumeMounts"])
            .into_iter()
            .find(|m| &text(&m["mountPath"]) == secrets_dir)
            .unwrap_or_else(|| panic!("{component} mounts {secrets_dir}"));
        assert_eq!(mount["readOnly"].as_bool(), Some(true));
        let volume = list(&pod["spec"]["volumes"])
            .into_iter()
            .find(|v| text(&v["name"]) == text(&mount["name"]))
            .expect("the mounted volume");
        assert_eq!(
            text(&volume["secret"]["secretName"]),
            SECRET_NAME,
            "{component} mounts the Secret README tells how to create"
        );
        let files: BTreeSet<String> = list(&volume["secret"]["items"])
            .iter()
            .map(|item| {
                assert_eq!(text(&item["key"]), text(&item["path"]));
                text(&item["key"])
            })
            .collect();
        use marketbridge_rpc::secrets::{
            DATABASE_PASSWORD_FILE, ENCRYPTION_KEY_FILE, SERVICE_TOKEN_FILE, SESSION_SECRET_FILE,
        };
        let needed: Vec<&str> = match component {
            "account" | "provisioning" => vec![
                ENCRYPTION_KEY_FILE,
                SERVICE_TOKEN_FILE,
                DATABASE_PASSWORD_FILE,
            ],
            "billing" => vec![SERVICE_TOKEN_FILE, DATABASE_PASSWORD_FILE],
            _ => vec![SESSION_SECRET_FILE, SERVICE_TOKEN_FILE],
        };
        assert_eq!(
            files,
            needed.iter().map(|f| f.to_string()).collect(),
            "{component} mounts the secret files it reads, and only those"
        );
        assert_eq!(
            pod["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true)
        );

        // Services: an external PostgreSQL, the password from the Secret.
        if component != "gateway" {
            let url = match component {
                "account" => &config.account.database_url,
                "provisioning" => &config.provisioning.database_url,
                _ => &config.billing.database_url,
            };
            let parsed = url::Url::parse(url).expect("a database URL");
            assert_eq!(
                parsed.scheme(),
                "postgres",
                "{component} runs on PostgreSQL"
            );
            assert!(
                !parsed.username().is_empty() && parsed.password().is_none(),
                "{component}'s URL names a user and no password (database.password adds it): {url}"
            );
            service_ports.insert(component.to_owned(), port);
        }

        // Its Service routes to the named port, and its selector picks its pods.
        let service = find(&objects, "Service", &format!("marketbridge-{component}"))
            .unwrap_or_else(|| panic!("a Service marketbridge-{component}"));
        let labels = &pod["metadata"]["labels"];
        assert!(selects(&service["spec"]["selector"], labels));
        let service_port = list(&service["spec"]["ports"])
            .into_iter()
            .find(|p| text(&p["targetPort"]) == port_name)
            .unwrap_or_else(|| panic!("{component}'s Service targets {port_name}"));
        assert_eq!(service_port["port"].as_u64(), Some(port));
        assert_ne!(
            text(&service["spec"]["type"]),
            "LoadBalancer",
            "{component} is not exposed outside the cluster by the base"
        );
    }

    // Every part reaches each service through its Service, on its port.
    for component in COMPONENTS {
        let config = config_of(component, &part(&objects, component).settings);
        for (target, url) in [
            ("account", &config.gateway.account_url),
            ("provisioning", &config.gateway.provisioning_url),
            ("billing", &config.gateway.billing_url),
        ] {
            assert_eq!(
                url,
                &format!("http://marketbridge-{target}:{}", service_ports[target]),
                "{component} → {target}"
            );
        }
    }
}

#[test]
fn every_part_has_a_disruption_budget_an_autoscaler_and_a_network_policy() {
    let objects = objects();
    let deployments: Vec<&Value> = objects
        .iter()
        .map(|(_, o)| o)
        .filter(|o| kind_of(o) == "Deployment")
        .collect();
    assert_eq!(deployments.len(), COMPONENTS.len());
    for component in COMPONENTS {
        let part = part(&objects, component);
        let labels = &part.pod["metadata"]["labels"];
        let deployment_name = format!("marketbridge-{component}");
        let deployment = find(&objects, "Deployment", &deployment_name).unwrap();
        assert!(selects(
            &deployment["spec"]["selector"]["matchLabels"],
            labels
        ));
        assert!(
            deployment["spec"].get("replicas").is_none(),
            "{component}: the autoscaler owns the replica count"
        );
        let rolling = &deployment["spec"]["strategy"]["rollingUpdate"];
        assert_eq!(
            text(&rolling["maxUnavailable"]),
            "0",
            "{component}: a new pod serves before an old one stops"
        );

        let budget = objects
            .iter()
            .map(|(_, o)| o)
            .find(|o| {
                kind_of(o) == "PodDisruptionBudget"
                    && selects(&o["spec"]["selector"]["matchLabels"], labels)
            })
            .unwrap_or_else(|| panic!("{component} has a PodDisruptionBudget"));
        assert_eq!(text(&budget["apiVersion"]), "policy/v1");

        let autoscaler = objects
            .iter()
            .map(|(_, o)| o)
            .find(|o| {
                kind_of(o) == "HorizontalPodAutoscaler"
                    && text(&o["spec"]["scaleTargetRef"]["name"]) == deployment_name
            })
            .unwrap_or_else(|| panic!("{component} has a HorizontalPodAutoscaler"));
        assert_eq!(text(&autoscaler["apiVersion"]), "autoscaling/v2");
        assert_eq!(
            text(&autoscaler["spec"]["scaleTargetRef"]["kind"]),
            "Deployment"
        );
        let min = autoscaler["spec"]["minReplicas"].as_u64().unwrap_or(1);
        assert!(
            min >= 2,
            "{component} runs at least two replicas, so the budget lets one go"
        );
        assert!(autoscaler["spec"]["maxReplicas"].as_u64().unwrap() >= min);
        assert!(
            list(&autoscaler["spec"]["metrics"]).iter().any(|m| {
                text(&m["type"]) == "Resource" && text(&m["resource"]["name"]) == "cpu"
            }),
            "{component} scales on CPU"
        );
        // Requests and limits on every container.
        for field in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    !text(&part.container["resources"][field][resource]).is_empty(),
                    "{component} sets {field}.{resource}"
                );
            }
        }

        let policy = objects
            .iter()
            .map(|(_, o)| o)
            .find(|o| {
                kind_of(o) == "NetworkPolicy"
                    && selects(&o["spec"]["podSelector"]["matchLabels"], labels)
                    && o["spec"]["podSelector"]["matchLabels"]
                        .get("app.kubernetes.io/component")
                        .is_some()
            })
            .unwrap_or_else(|| panic!("{component} has a NetworkPolicy of its own"));
        let types: Vec<String> = list(&policy["spec"]["policyTypes"])
            .iter()
            .map(text)
            .collect();
        assert!(types.contains(&"Ingress".to_owned()));
        let config = config_of(component, &part.settings);
        if component == "gateway" {
            continue;
        }
        // A service's gRPC port: only the other parts and named clients.
        let grpc_port = port_of(match component {
            "account" => &config.account.listen,
            "provisioning" => &config.provisioning.listen,
            _ => &config.billing.listen,
        });
        let rules = list(&policy["spec"]["ingress"]);
        let covering: Vec<&Value> = rules
            .iter()
            .filter(|rule| {
                let ports = list(&rule["ports"]);
                ports.is_empty() || ports.iter().any(|p| p["port"].as_u64() == Some(grpc_port))
            })
            .collect();
        assert!(!covering.is_empty(), "{component}'s gRPC port is reachable");
        let mut allowed = BTreeSet::new();
        for rule in covering {
            let peers = list(&rule["from"]);
            assert!(
                !peers.is_empty(),
                "{component}: no rule opens the gRPC port to everyone"
            );
            for peer in peers {
                assert!(
                    peer.get("ipBlock").is_none() && peer.get("namespaceSelector").is_none(),
                    "{component}: gRPC only from pods of the namespace, picked by label: {peer:?}"
                );
                let labels = peer["podSelector"]["matchLabels"]
                    .as_mapping()
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(labels.len(), 1, "{component}: one label per peer");
                let (key, value) = labels.iter().next().unwrap();
                allowed.insert(format!("{}={}", text(key), text(value)));
            }
        }
        assert_eq!(
            allowed,
            BTreeSet::from([
                "app.kubernetes.io/name=marketbridge".to_owned(),
                format!("{GRPC_CLIENT_LABEL}=true"),
            ]),
            "{component}: the marketbridge parts and named clients reach gRPC"
        );
    }
    // The namespace's other marketbridge pods are closed unless a policy
    // opens them.
    let deny = objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| kind_of(o) == "NetworkPolicy" && o["spec"].get("ingress").is_none())
        .expect("a default-deny policy");
    assert!(
        deny["spec"]["podSelector"]["matchLabels"]
            .get("app.kubernetes.io/component")
            .is_none(),
        "the default-deny policy covers every part"
    );
}

/// True when `value` looks like a random credential: long, one word, and
/// mixing letters and digits.
fn looks_random(value: &str) -> bool {
    let value = value.trim();
    value.len() >= 24
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c))
        && value.chars().any(|c| c.is_ascii_digit())
        && value.chars().any(|c| c.is_ascii_uppercase())
        && value.chars().any(|c| c.is_ascii_lowercase())
}

fn strings_in(value: &Value, out: &mut Vec<(String, String)>, key: &str) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                strings_in(v, out, &text(k));
            }
        }
        Value::Sequence(items) => {
            for item in items {
                strings_in(item, out, key);
            }
        }
        Value::Tagged(tagged) => strings_in(&tagged.value, out, key),
        other => out.push((key.to_owned(), text(other))),
    }
}

#[test]
fn no_secret_is_committed() {
    let objects = objects();
    for (file, object) in &objects {
        if kind_of(object) == "Secret" {
            assert!(
                object.get("data").is_none() && object.get("stringData").is_none(),
                "{file} commits the data of Secret {}",
                name_of(object)
            );
        }
    }
    let mut values = Vec::new();
    for (_, object) in &objects {
        strings_in(object, &mut values, "");
    }
    for (key, value) in &values {
        assert!(
            !looks_random(value),
            "a literal secret under {key}: {value}"
        );
        if let Ok(url) = url::Url::parse(value) {
            assert!(url.password().is_none(), "a password in a URL: {key}");
        }
        let upper = key.to_uppercase();
        let secret_like = ["KEY", "SECRET", "TOKEN", "PASSWORD"]
            .iter()
            .any(|word| upper.starts_with("MARKETBRIDGE_") && upper.contains(word));
        assert!(
            !secret_like || value.is_empty() || value.starts_with('/'),
            "a secret setting given in the manifests: {key}"
        );
    }
    // The settings' own secret values are never set through the manifests'
    // variables either (checked with the real names above); and the
    // dashboard holds nothing but queries.
    let dashboard = repository_file("deploy/grafana/marketbridge.json");
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=_-".contains(c))) {
        assert!(
            !looks_random(word),
            "a literal secret in the dashboard: {word}"
        );
    }
}

#[test]
fn the_manifests_pass_the_kubernetes_schemas() {
    let Some(binary) = std::env::var("MARKETBRIDGE_TEST_KUBERNETES_VALIDATE")
        .ok()
        .filter(|path| !path.trim().is_empty())
    else {
        eprintln!("MARKETBRIDGE_TEST_KUBERNETES_VALIDATE is not set: schema validation skipped");
        return;
    };
    let files: Vec<PathBuf> = manifest_files()
        .iter()
        .map(|file| repository_path(&format!("deploy/kubernetes/{file}")))
        .collect();
    // The newest schemas the tool ships, and the oldest Kubernetes the base
    // is meant for (gRPC probes are GA from 1.27).
    for version in [None, Some("1.29.0")] {
        let mut command = Command::new(&binary);
        command.arg("--strict").arg("--quiet");
        if let Some(version) = version {
            command.arg("--kubernetes-version").arg(version);
        }
        let output = command
            .args(&files)
            .output()
            .expect("kubernetes-validate runs");
        assert!(
            output.status.success(),
            "kubernetes-validate {version:?} refuses the manifests:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // A broken manifest is refused, so a pass means something.
    let broken = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(
        broken.path(),
        repository_file("deploy/kubernetes/account.yaml")
            .replace("containerPort: 50051", "containerPort: \"fifty\""),
    )
    .unwrap();
    let output = Command::new(&binary)
        .arg("--strict")
        .arg("--quiet")
        .arg(broken.path())
        .output()
        .expect("kubernetes-validate runs");
    assert!(!output.status.success(), "the validator refuses a bad port");
}

/// The Prometheus names the code exports (crates/telemetry/src/metrics.rs),
/// each with the series names a query may use.
fn exported_metrics() -> BTreeMap<String, Vec<String>> {
    let source = repository_file("crates/telemetry/src/metrics.rs");
    let mut metrics = BTreeMap::new();
    let kinds = [
        ("u64_counter(", "counter"),
        ("f64_counter(", "counter"),
        ("u64_histogram(", "histogram"),
        ("f64_histogram(", "histogram"),
        ("u64_gauge(", "gauge"),
        ("i64_gauge(", "gauge"),
        ("f64_gauge(", "gauge"),
        ("i64_up_down_counter(", "gauge"),
        ("f64_up_down_counter(", "gauge"),
    ];
    for (marker, kind) in kinds {
        for (start, _) in source.match_indices(marker) {
            let rest = &source[start + marker.len()..];
            let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) else {
                continue;
            };
            let builder = &rest[..rest.find(".build()").unwrap_or(rest.len())];
            let unit = builder
                .split(".with_unit(\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default();
            let mut base: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            base.push_str(match unit {
                "s" => "_seconds",
                "ms" => "_milliseconds",
                "By" => "_bytes",
                _ => "",
            });
            let series = match kind {
                "counter" => vec![format!("{base}_total")],
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|suffix| format!("{base}{suffix}"))
                    .collect(),
                _ => vec![base.clone()],
            };
            metrics.insert(base, series);
        }
    }
    assert!(
        metrics.len() >= 9,
        "found the instruments in metrics.rs: {metrics:?}"
    );
    metrics
}

/// The labels the code puts on metrics, as Prometheus names them.
fn exported_labels() -> BTreeSet<String> {
    let mut labels = BTreeSet::from(["le".to_owned()]);
    let folder = repository_path("crates/telemetry/src");
    for entry in std::fs::read_dir(folder).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        for (start, _) in source.match_indices("KeyValue::new(\"") {
            let rest = &source[start + "KeyValue::new(\"".len()..];
            let key = rest.split('"').next().unwrap_or_default();
            labels.insert(
                key.chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect(),
            );
        }
    }
    labels
}

fn collect_queries(value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                let legend = map
                    .get("legendFormat")
                    .and_then(|l| l.as_str())
                    .unwrap_or_default();
                out.push((expr.to_owned(), legend.to_owned()));
            }
            for inner in map.values() {
                collect_queries(inner, out);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_queries(item, out);
            }
        }
        _ => {}
    }
}

/// PromQL's aggregation operators, which may be followed by `by (…)`.
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names and label names of a PromQL query.
fn parse_query(expr: &str) -> (Vec<String>, Vec<String>) {
    let chars: Vec<char> = expr.chars().collect();
    let mut metrics = Vec::new();
    let mut labels = Vec::new();
    let mut i = 0;
    let mut grouping = false;
    let mut in_braces = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            // A quoted label value.
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            // A range: `[5m]`, `[$__rate_interval]`.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            in_braces = true;
            i += 1;
        } else if c == '}' {
            in_braces = false;
            i += 1;
        } else if c == ')' {
            grouping = false;
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '-')
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next] == ' ' {
                next += 1;
            }
            let followed_by = chars.get(next).copied();
            if in_braces || grouping {
                labels.push(word);
            } else if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&word.as_str())
            {
                grouping = true;
                // Skip to the opening parenthesis of the label list.
                i = next + 1;
            } else if ["and", "or", "unless", "bool", "offset"].contains(&word.as_str()) {
            } else if followed_by == Some('(') || AGGREGATIONS.contains(&word.as_str()) {
                // A function, or an aggregation followed by `by (…)`.
            } else {
                metrics.push(word);
            }
        } else {
            i += 1;
        }
    }
    (metrics, labels)
}

#[test]
fn the_dashboard_queries_only_what_the_code_exports_and_shows_all_of_it() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repository_file("deploy/grafana/marketbridge.json"))
            .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "marketbridge");
    let exported = exported_metrics();
    let series: BTreeMap<String, String> = exported
        .iter()
        .flat_map(|(base, names)| names.iter().map(move |n| (n.clone(), base.clone())))
        .collect();
    let known_labels = exported_labels();
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "the dashboard has panels");
    let mut shown = BTreeSet::new();
    for (expr, legend) in &queries {
        let (metrics, labels) = parse_query(expr);
        assert!(!metrics.is_empty(), "no metric found in `{expr}`");
        for metric in metrics {
            let base = series.get(&metric).unwrap_or_else(|| {
                panic!(
                    "the dashboard queries {metric}, which marketbridge does not export: `{expr}`"
                )
            });
            shown.insert(base.clone());
        }
        for label in labels {
            assert!(
                known_labels.contains(&label),
                "the dashboard uses the label {label}, which no metric carries: `{expr}`"
            );
        }
        for (start, _) in legend.match_indices("{{") {
            let label = legend[start + 2..].split("}}").next().unwrap_or_default();
            assert!(
                known_labels.contains(label.trim()),
                "a legend names the unknown label {label}"
            );
        }
    }
    let missing: Vec<&String> = exported.keys().filter(|m| !shown.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "deploy/grafana/marketbridge.json has no panel for {missing:?}"
    );
}

#[test]
fn the_query_parser_finds_metrics_and_labels() {
    let (metrics, labels) = parse_query(
        "histogram_quantile(0.99, sum by (le, http_route) (rate(http_server_request_duration_seconds_bucket{http_response_status_code=~\"5..\"}[$__rate_interval]))) / clamp_min(sum(rate(x_total[5m])), 1e-9)",
    );
    assert_eq!(
        metrics,
        ["http_server_request_duration_seconds_bucket", "x_total"]
    );
    assert_eq!(labels, ["le", "http_route", "http_response_status_code"]);
}

/// Replicas of a new version starting together on PostgreSQL: every one of
/// them migrates its database without an error, and each migration is
/// applied once (README, "Run it on Kubernetes": the advisory lock in
/// `open_migrated`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_migrate_a_fresh_database_once() {
    use marketbridge_storage::sea_orm::{ConnectionTrait, DbBackend, Statement};
    use marketbridge_storage::sea_orm_migration::MigratorTrait;
    use marketbridge_storage::testing::{TestBackend, TestDatabase};

    async fn race<M: MigratorTrait + 'static>(service: &str) {
        let Some(database) = TestDatabase::create(TestBackend::Postgres).await else {
            eprintln!("skipping: MARKETBRIDGE_TEST_POSTGRES_URL is not set");
            return;
        };
        let replicas: Vec<_> = (0..4)
            .map(|_| {
                let url = database.url().to_owned();
                tokio::spawn(async move { marketbridge_storage::open_migrated::<M>(&url).await })
            })
            .collect();
        for replica in replicas {
            let db = replica
                .await
                .expect("the replica ran")
                .unwrap_or_else(|e| panic!("{service}: a replica failed to migrate: {e}"));
            db.close().await.ok();
        }
        let db = marketbridge_storage::connect(database.url()).await.unwrap();
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT COUNT(*) AS applied, COUNT(DISTINCT version) AS distinct_versions FROM seaql_migrations",
            ))
            .await
            .unwrap()
            .expect("a row");
        let applied: i64 = row.try_get("", "applied").unwrap();
        let distinct: i64 = row.try_get("", "distinct_versions").unwrap();
        assert_eq!(applied as usize, M::migrations().len(), "{service}");
        assert_eq!(applied, distinct, "{service}: each migration applied once");
        db.close().await.ok();
    }

    race::<marketbridge_account::migration::Migrator>("account").await;
    race::<marketbridge_provisioning::migration::Migrator>("provisioning").await;
    race::<marketbridge_billing::migration::Migrator>("billing").await;
}

#[test]
fn the_readme_tells_how_to_install_scale_and_upgrade_as_the_base_does() {
    let readme = repository_file("README.md");
    let start = readme
        .find("## Run it on Kubernetes")
        .expect("README has a Kubernetes section");
    let section = &readme[start..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    let kustomization: Value =
        serde_yaml_ng::from_str(&repository_file("deploy/kubernetes/kustomization.yaml"))
            .expect("valid YAML");
    let namespace = text(&kustomization["namespace"]);
    for step in [
        "marketbridge secrets init ./secrets".to_owned(),
        format!("kubectl create namespace {namespace}"),
        format!("kubectl -n {namespace} create secret generic {SECRET_NAME} --from-file=./secrets"),
        "kubectl apply -k deploy/kubernetes".to_owned(),
        "deploy/grafana/marketbridge.json".to_owned(),
        "pg_advisory_lock".to_owned(),
        "Migrations run once, by one replica, before\nthe new version serves".to_owned(),
    ] {
        assert!(
            section.contains(&step),
            "README's Kubernetes section: {step}"
        );
    }
    // The databases README creates are those the services use.
    let objects = objects();
    for service in ["account", "provisioning", "billing"] {
        let settings = part(&objects, service).settings;
        let url = &settings[&format!("MARKETBRIDGE_{}__DATABASE_URL", service.to_uppercase())];
        let parsed = url::Url::parse(url).unwrap();
        let database = parsed.path().trim_start_matches('/');
        assert!(
            section.contains(&format!(
                "CREATE DATABASE {database} OWNER {};",
                parsed.username()
            )),
            "README creates the database {database} for {url}"
        );
    }
    // The autoscalers' bounds and the startup allowance are the ones README gives.
    let bounds = |component: &str| {
        let autoscaler = find(
            &objects,
            "HorizontalPodAutoscaler",
            &format!("marketbridge-{component}"),
        )
        .unwrap();
        (
            autoscaler["spec"]["minReplicas"].as_u64().unwrap(),
            autoscaler["spec"]["maxReplicas"].as_u64().unwrap(),
        )
    };
    let (min, max) = bounds("account");
    assert_eq!(bounds("provisioning"), (min, max));
    assert_eq!(bounds("billing"), (min, max));
    assert!(section.contains(&format!("{min} to {max} replicas of each service")));
    let (min, max) = bounds("gateway");
    assert!(section.contains(&format!("{min} to {max} gateways")));
    for service in ["account", "provisioning", "billing"] {
        let startup = &part(&objects, service).container["startupProbe"];
        let seconds = startup["periodSeconds"].as_u64().unwrap()
            * startup["failureThreshold"].as_u64().unwrap();
        assert_eq!(seconds, 300, "{service}: README promises five minutes");
    }
    assert!(section.contains("the startup probe gives each five minutes"));
    // CI validates the manifests and hands the validator to this test.
    let ci = repository_file(".ci/run");
    assert!(ci.contains("kubernetes-validate"));
    assert!(ci.contains("export MARKETBRIDGE_TEST_KUBERNETES_VALIDATE"));
}
