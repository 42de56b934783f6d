//! HTTPS at the gateway, mutual TLS between the gateway and the services.

use crate::support::set_on;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::billing::v1::billing_service_client::BillingServiceClient;
use marketbridge_storage::backend_test;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

struct Pki {
    folder: PathBuf,
}

impl Pki {
    /// A CA, a server certificate for localhost/127.0.0.1 and a client
    /// certificate, all signed by the CA.
    fn new() -> Self {
        let folder = std::env::temp_dir().join(format!(
            "marketbridge-pki-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&folder).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(folder.join("ca.pem"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        for (name, names) in [
            (
                "server",
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            ),
            ("client", vec!["gateway.internal".to_owned()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            std::fs::write(folder.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(folder.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Self { folder }
    }

    fn path(&self, name: &str) -> String {
        self.folder.join(name).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// SHA-256 (hex) of a PEM certificate's DER.
fn certificate_fingerprint(path: &Path) -> String {
    use base64::Engine;
    let pem = String::from_utf8(read(path)).unwrap();
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    marketbridge_core::crypto::sha256_hex(&der)
}

backend_test!(
    the_gateway_serves_https_and_services_require_client_certificates,
    |database| async move {
        let pki = Pki::new();
        let paths = (
            pki.path("server.pem"),
            pki.path("server.key"),
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client.key"),
        );
        let fingerprint = certificate_fingerprint(&pki.folder.join("client.pem"));
        let test = set_on(&database)
            .configure(move |config| {
                let (cert, key, ca, client_cert, client_key) = paths;
                config.tls.gateway_cert = cert.clone();
                config.tls.gateway_key = key.clone();
                config.tls.service_cert = cert;
                config.tls.service_key = key;
                config.tls.service_client_ca = ca.clone();
                config.tls.client_ca = ca;
                config.tls.client_cert = client_cert;
                config.tls.client_key = client_key;
                config.security.grpc_clients =
                    format!("metering-agent:usage:cert-sha256:{fingerprint}");
            })
            .start()
            .await;
        assert!(test.set.gateway_url().starts_with("https://"));
        assert!(test.set.config.gateway.billing_url.starts_with("https://"));

        // The gateway reaches every service over mTLS.
        let ca = reqwest::Certificate::from_pem(&read(&pki.folder.join("ca.pem"))).unwrap();
        let https = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        let ready = https.get(test.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
        let plain = format!("http://{}/healthz", test.set.addresses.gateway);
        assert!(
            test.http.get(plain).send().await.is_err(),
            "plain HTTP is refused"
        );

        // A client with the CA but without a certificate is turned away.
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(read(&pki.folder.join("ca.pem"))),
        );
        let channel =
            tonic::transport::Endpoint::from_shared(test.set.config.gateway.billing_url.clone())
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect_lazy();
        let refused = BillingServiceClient::new(channel)
            .list_plans(billing_pb::ListPlansRequest {
                product_id: "database".into(),
                ..Default::default()
            })
            .await;
        assert!(
            refused.is_err(),
            "a client without a certificate is refused"
        );
        // A named caller may prove who it is with its certificate alone:
        // the services know it by the certificate's SHA-256.
        let client_pem = read(&pki.folder.join("client.pem"));
        let identity = tonic::transport::Identity::from_pem(
            client_pem.clone(),
            read(&pki.folder.join("client.key")),
        );
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(
                &pki.folder.join("ca.pem"),
            )))
            .identity(identity);
        let channel =
            tonic::transport::Endpoint::from_shared(test.set.config.gateway.billing_url.clone())
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect_lazy();
        let mut by_certificate = BillingServiceClient::new(channel);
        let usage_only = by_certificate
            .query_usage(billing_pb::QueryUsageRequest {
                metric_id: "requests".into(),
                ..Default::default()
            })
            .await;
        assert!(
            !matches!(&usage_only, Err(status) if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)),
            "the certificate's caller holds `usage`: {usage_only:?}"
        );
        let listing = by_certificate
            .list_plans(billing_pb::ListPlansRequest {
                product_id: "database".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            listing.code(),
            tonic::Code::PermissionDenied,
            "`usage` does not reach ListPlans: {listing:?}"
        );

        let mut billing = test.set.clients.billing.clone();
        let plans = billing
            .list_plans(billing_pb::ListPlansRequest {
                product_id: "database".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(!plans.into_inner().plans.is_empty());
        test.stop().await;
    }
);
