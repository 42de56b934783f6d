//! Slow clients, made-up requests and oversized metadata cannot hold or
//! grow the gateway: half-sent requests and idle connections are closed,
//! connections beyond the cap wait unserved, metrics labels stay bounded,
//! and metadata beyond its limits is a 400 with the contract's error body
//! (an `INVALID_ARGUMENT` over gRPC), never a 500.

use crate::keys::scrape;
use crate::support::{TestSet, set_on};
use crate::vercel_support::{VercelOptions, assert_error, provision_body, vercel_set};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::testing::{TestBackend, run_on};
use prost_types::{Struct, Value as ProtoValue, value::Kind};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a test waits for the gateway to close a connection; the limits
/// under test are far shorter.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

async fn connect(test: &TestSet) -> TcpStream {
    TcpStream::connect(test.set.addresses.gateway)
        .await
        .expect("the gateway accepts connections")
}

/// Reads until the gateway closes the connection; returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let closed = tokio::time::timeout(CLOSE_WAIT, async {
        let mut buffer = [0_u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the gateway kept the connection open; it sent: {}",
        String::from_utf8_lossy(&received)
    );
    String::from_utf8_lossy(&received).into_owned()
}

/// Reads one whole `/healthz` answer (its body ends the JSON object).
async fn read_health_answer(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !String::from_utf8_lossy(&received).contains("\"ok\"}") {
        let n = stream.read(&mut buffer).await.expect("an answer");
        assert!(n > 0, "closed before answering");
        received.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

const HEALTH_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_after_the_header_timeout() {
    run_on(TestBackend::Sqlite, |database| async move {
        let test = set_on(&database)
            .configure(|config| {
                config.gateway.header_read_timeout_ms = 300;
                config.gateway.idle_timeout_ms = 60_000;
            })
            .start()
            .await;
        let mut stream = connect(&test).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\nx-slow: ")
            .await
            .unwrap();
        let sent = read_until_closed(&mut stream).await;
        assert!(!sent.contains("200 OK"), "{sent}");

        // A silent connection (nothing sent at all) is closed too.
        let mut silent = connect(&test).await;
        read_until_closed(&mut silent).await;

        // A request sent in time is answered.
        let mut prompt = connect(&test).await;
        prompt.write_all(HEALTH_REQUEST).await.unwrap();
        assert!(
            read_health_answer(&mut prompt)
                .await
                .starts_with("HTTP/1.1 200")
        );
        test.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    run_on(TestBackend::Sqlite, |database| async move {
        let test = set_on(&database)
            .configure(|config| {
                config.gateway.header_read_timeout_ms = 60_000;
                config.gateway.idle_timeout_ms = 300;
            })
            .start()
            .await;
        let mut stream = connect(&test).await;
        for _ in 0..3 {
            stream.write_all(HEALTH_REQUEST).await.unwrap();
            let answer = read_health_answer(&mut stream).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(!answer.to_ascii_lowercase().contains("connection: close"));
        }
        // Kept alive, then idle: closed well before the header timeout.
        let rest = read_until_closed(&mut stream).await;
        assert!(rest.is_empty(), "{rest}");
        test.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    run_on(TestBackend::Sqlite, |database| async move {
        let test = set_on(&database)
            .configure(|config| {
                config.gateway.max_connections = 2;
                config.gateway.header_read_timeout_ms = 60_000;
                config.gateway.idle_timeout_ms = 60_000;
            })
            .start()
            .await;
        let mut first = connect(&test).await;
        let mut second = connect(&test).await;
        for stream in [&mut first, &mut second] {
            stream.write_all(HEALTH_REQUEST).await.unwrap();
            assert!(read_health_answer(stream).await.starts_with("HTTP/1.1 200"));
        }
        let mut third = connect(&test).await;
        third.write_all(HEALTH_REQUEST).await.unwrap();
        let mut buffer = [0_u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buffer)).await;
        assert!(
            early.is_err(),
            "a third connection was served while two were held: {early:?}"
        );
        drop(first);
        let answer = read_health_answer(&mut third).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        drop(second);
        test.stop().await;
    })
    .await;
}

/// The number of series (lines without `#`) in a scrape.
fn series(scrape: &str) -> usize {
    scrape.lines().filter(|line| !line.starts_with('#')).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    run_on(TestBackend::Sqlite, |database| async move {
        let test = set_on(&database).start().await;
        let public = test.http.get(test.url("/metrics")).send().await.unwrap();
        assert_eq!(public.status(), 404, "the public port serves no metrics");

        let made_up =
            |i: usize| reqwest::Method::from_bytes(format!("FROB{i}").as_bytes()).unwrap();
        let grpc_url = format!("http://{}", test.set.addresses.provisioning);
        let channel = tonic::transport::Channel::from_shared(grpc_url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let call_made_up_rpc = |i: usize| {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            async move {
                grpc.ready().await.unwrap();
                let path = tonic::codegen::http::uri::PathAndQuery::try_from(format!(
                    "/made.up.Service{i}/Method{i}"
                ))
                .unwrap();
                let answer: Result<tonic::Response<()>, tonic::Status> = grpc
                    .unary(
                        tonic::Request::new(()),
                        path,
                        tonic_prost::ProstCodec::<(), ()>::default(),
                    )
                    .await;
                let status = answer.expect_err("no such method");
                assert!(
                    matches!(
                        status.code(),
                        tonic::Code::Unimplemented | tonic::Code::Unauthenticated
                    ),
                    "{status:?}"
                );
            }
        };
        // One of each kind first, so every bounded series exists.
        let send = |i: usize| {
            let (method, path) = match i % 3 {
                0 => (made_up(i), format!("/made/up/{i}")),
                1 => (made_up(i), "/healthz".to_owned()),
                _ => (reqwest::Method::GET, format!("/vercel/v1/nothing/{i}")),
            };
            test.http.request(method, test.url(&path)).send()
        };
        for i in 0..3 {
            let answer = send(i).await.unwrap();
            assert!(answer.status().is_client_error(), "{}", answer.status());
            call_made_up_rpc(i).await;
        }
        let before = scrape(&test).await;
        for i in 3..3_000 {
            let answer = send(i).await.unwrap();
            assert!(answer.status().is_client_error(), "{}", answer.status());
        }
        for i in 3..300 {
            call_made_up_rpc(i).await;
        }
        let after = scrape(&test).await;
        assert_eq!(series(&after), series(&before), "{after}");
        assert!(
            after.len() < before.len() + 2_000,
            "{} → {}",
            before.len(),
            after.len()
        );
        assert!(after.contains("http_request_method=\"_OTHER\""), "{after}");
        assert!(after.contains("rpc_method=\"_OTHER\""), "{after}");
        assert!(!after.contains("FROB"), "{after}");
        assert!(!after.contains("made.up"), "{after}");
        test.stop().await;
    })
    .await;
}

fn nested(levels: usize, wrap: impl Fn(Value) -> Value) -> Value {
    (0..levels).fold(json!("leaf"), |inner, _| wrap(inner))
}

fn nested_struct(levels: usize) -> Struct {
    (0..levels).fold(Struct::default(), |inner, _| Struct {
        fields: [(
            "a".to_owned(),
            ProtoValue {
                kind: Some(Kind::StructValue(inner)),
            },
        )]
        .into_iter()
        .collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_beyond_its_limits_is_refused_at_the_gateway_and_by_the_services() {
    run_on(TestBackend::Sqlite, |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let (installation, admin) = vercel.install().await;
        let resources = format!("/v1/installations/{}/resources", installation.id);
        let cases = [
            (
                "60 nested arrays",
                json!({ "a": nested(60, |inner| json!([inner])) }),
            ),
            (
                "35 nested objects",
                nested(35, |inner| json!({ "a": inner })),
            ),
            (
                "50,000 keys",
                Value::Object((0..50_000).map(|i| (format!("k{i}"), json!(1))).collect()),
            ),
            ("40 KB of text", json!({ "notes": "x".repeat(40 * 1024) })),
        ];
        for (index, (what, metadata)) in cases.into_iter().enumerate() {
            let answer = vercel
                .partner
                .post(&resources)
                .user(&admin)
                .json(&provision_body(
                    "database",
                    "free",
                    &format!("refused-{index}"),
                    metadata,
                ))
                .send()
                .await;
            assert_error(&answer, 400, "validation_error");
            assert!(answer.text.contains("metadata"), "{what}: {}", answer.text);
        }
        // Within the limits, provisioning works.
        let answer = vercel
            .partner
            .post(&resources)
            .user(&admin)
            .json(&provision_body(
                "database",
                "free",
                "nested-but-fine",
                json!({"region": "iad1", "labels": {"team": ["a", "b"]}}),
            ))
            .send()
            .await;
        assert!(answer.status < 300, "{}", answer.text);

        // Internal teams calling provisioning directly meet the same limits.
        let account = vercel.account(&installation).await;
        let mut provisioning = vercel.test.set.clients.provisioning.clone();
        let many_keys = Struct {
            fields: (0..2_000)
                .map(|i| {
                    (
                        format!("k{i}"),
                        ProtoValue {
                            kind: Some(Kind::NumberValue(1.0)),
                        },
                    )
                })
                .collect(),
        };
        for (what, fields) in [("deep", nested_struct(20)), ("wide", many_keys)] {
            let refused = provisioning
                .create_resource(provisioning_pb::CreateResourceRequest {
                    account_id: account.id.clone(),
                    product_id: "database".into(),
                    plan_id: "free".into(),
                    name: format!("direct-{what}"),
                    metadata: Some(marketbridge_proto::common::v1::Metadata {
                        fields: Some(fields),
                    }),
                    ..Default::default()
                })
                .await
                .expect_err("metadata beyond the limits is refused");
            assert_eq!(
                refused.code(),
                tonic::Code::InvalidArgument,
                "{what}: {refused:?}"
            );
            assert!(refused.message().contains("metadata"), "{refused:?}");
        }
        // Deeper than protobuf decoding allows: refused as the caller's fault
        // before any of our code runs, never INTERNAL.
        let refused = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                account_id: account.id.clone(),
                product_id: "database".into(),
                plan_id: "free".into(),
                name: "direct-too-deep-to-decode".into(),
                metadata: Some(marketbridge_proto::common::v1::Metadata {
                    fields: Some(nested_struct(60)),
                }),
                ..Default::default()
            })
            .await
            .expect_err("a message too deep to decode is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().contains("could not be decoded"),
            "{refused:?}"
        );
        vercel.test.stop().await;
    })
    .await;
}
