//! The parts run as separate processes, as they do under docker compose:
//! each `marketbridge <part>` on its own port, finding the others over gRPC,
//! and each stopping cleanly on SIGTERM.

use crate::support::unused_port;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::billing::v1::billing_service_client::BillingServiceClient;
use marketbridge_storage::backend_test;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Part {
    name: &'static str,
    child: Child,
}

impl Part {
    fn stop(mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                assert!(exit.success(), "{} exited with {exit}", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

backend_test!(
    each_part_runs_alone_and_stops_on_sigterm,
    |database| async move {
        let databases = [
            database.sibling().await,
            database.sibling().await,
            database.sibling().await,
        ];
        let ports = [unused_port(), unused_port(), unused_port(), unused_port()];
        let data = std::env::temp_dir().join(format!(
            "marketbridge-parts-{}",
            uuid::Uuid::new_v4().simple()
        ));
        // The secrets come from files, made as compose makes them.
        let secrets = data.join("secrets");
        let init = Command::new(env!("CARGO_BIN_EXE_marketbridge"))
            .args(["secrets", "init"])
            .arg(&secrets)
            .output()
            .unwrap();
        assert!(init.status.success(), "{init:?}");
        let token = std::fs::read_to_string(secrets.join("service.token")).unwrap();
        let environment = |part: &str| -> Vec<(String, String)> {
            let mut variables = vec![
                (
                    "MARKETBRIDGE_DATA__DIR".to_owned(),
                    data.display().to_string(),
                ),
                (
                    "MARKETBRIDGE_SECURITY__SECRETS_DIR".to_owned(),
                    secrets.display().to_string(),
                ),
                (
                    "MARKETBRIDGE_GATEWAY__ACCOUNT_URL".to_owned(),
                    format!("http://127.0.0.1:{}", ports[0]),
                ),
                (
                    "MARKETBRIDGE_GATEWAY__PROVISIONING_URL".to_owned(),
                    format!("http://127.0.0.1:{}", ports[1]),
                ),
                (
                    "MARKETBRIDGE_GATEWAY__BILLING_URL".to_owned(),
                    format!("http://127.0.0.1:{}", ports[2]),
                ),
                // The default filter: the logs are read below.
                (
                    "MARKETBRIDGE_TELEMETRY__LOG_FILTER".to_owned(),
                    "info".to_owned(),
                ),
                // Both backends' runs at once: no fixed metrics port.
                (
                    "MARKETBRIDGE_GATEWAY__METRICS_LISTEN".to_owned(),
                    "127.0.0.1:0".to_owned(),
                ),
            ];
            let (index, section) = match part {
                "account" => (0, "ACCOUNT"),
                "provisioning" => (1, "PROVISIONING"),
                "billing" => (2, "BILLING"),
                _ => (3, "GATEWAY"),
            };
            variables.push((
                format!("MARKETBRIDGE_{section}__LISTEN"),
                format!("127.0.0.1:{}", ports[index]),
            ));
            if index < 3 {
                variables.push((
                    format!("MARKETBRIDGE_{section}__DATABASE_URL"),
                    databases[index].url().to_owned(),
                ));
            }
            variables
        };
        let parts: Vec<Part> = ["account", "provisioning", "billing", "gateway"]
            .into_iter()
            .map(|name| Part {
                name,
                child: Command::new(env!("CARGO_BIN_EXE_marketbridge"))
                    .arg(name)
                    .envs(environment(name))
                    .stdout(std::fs::File::create(data.join(format!("{name}.log"))).unwrap())
                    .spawn()
                    .unwrap(),
            })
            .collect();

        marketbridge_rpc::tls::install_crypto_provider();
        let http = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{}/readyz", ports[3]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(answer) = http.get(&ready).send().await
                && answer.status() == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "the gateway never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut billing = BillingServiceClient::connect(format!("http://127.0.0.1:{}", ports[2]))
            .await
            .unwrap();
        let anonymous = billing
            .list_plans(billing_pb::ListPlansRequest {
                product_id: "database".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            anonymous.code(),
            tonic::Code::Unauthenticated,
            "a service alone answers no caller without credentials"
        );
        let mut request = tonic::Request::new(billing_pb::ListPlansRequest {
            product_id: "database".into(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let plans = billing.list_plans(request).await.unwrap();
        assert!(!plans.into_inner().plans.is_empty());
        let probe = Command::new(env!("CARGO_BIN_EXE_marketbridge"))
            .args(["probe", &format!("grpc://127.0.0.1:{}", ports[0])])
            .status()
            .unwrap();
        assert!(
            probe.success(),
            "the image health probe reports the account service healthy"
        );

        for part in parts.into_iter().rev() {
            part.stop();
        }
        // Logs written to a file (as under a container runtime or a
        // service manager) carry no terminal colour codes.
        for name in ["account", "provisioning", "billing", "gateway"] {
            let log = std::fs::read_to_string(data.join(format!("{name}.log"))).unwrap();
            assert!(log.contains("listening"), "{name} logged nothing: {log}");
            assert!(
                !log.contains('\u{1b}'),
                "{name}'s log has escape codes: {log}"
            );
        }
        let _ = std::fs::remove_dir_all(&data);
    }
);
