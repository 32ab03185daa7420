//! Proves the harness: one round trip per AWS service through the shared client
//! factory against moto, and the SMTP sink and HTTP gateway over real connections.

use flare_aws as aws;
use flare_tests::{ServerProcess, free_port, gateway, moto, smtp, unique};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test]
async fn dynamodb_round_trip_on_moto() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
        ScalarAttributeType,
    };
    let db = aws::dynamodb(&moto().sdk_config().await);
    let table = unique("harness");
    db.create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create table");
    db.put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("ORG#acme".into()))
        .item("v", AttributeValue::N("42".into()))
        .send()
        .await
        .expect("put");
    let got = db
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("ORG#acme".into()))
        .send()
        .await
        .expect("get");
    assert_eq!(got.item().unwrap()["v"], AttributeValue::N("42".into()));
}

#[tokio::test]
async fn secretsmanager_round_trip_on_moto() {
    let sm = aws::secretsmanager(&moto().sdk_config().await);
    let name = format!("flare/{}/smtp/password", unique("org"));
    sm.create_secret()
        .name(&name)
        .secret_string("s3cret")
        .send()
        .await
        .expect("create");
    let got = sm
        .get_secret_value()
        .secret_id(&name)
        .send()
        .await
        .expect("get");
    assert_eq!(got.secret_string(), Some("s3cret"));
    sm.delete_secret()
        .secret_id(&name)
        .force_delete_without_recovery(true)
        .send()
        .await
        .expect("delete");
    let gone = sm.get_secret_value().secret_id(&name).send().await;
    assert!(
        gone.unwrap_err()
            .into_service_error()
            .is_resource_not_found_exception()
    );
}

#[tokio::test]
async fn sns_sms_is_read_back_from_moto() {
    let sns = aws::sns(&moto().sdk_config().await);
    let text = unique("sms");
    let out = sns
        .publish()
        .phone_number("+14155550142")
        .message(&text)
        .send()
        .await
        .expect("publish");
    let sent = moto().sent_sms().await.unwrap();
    let ours = sent
        .iter()
        .find(|m| m["message"] == text.as_str())
        .expect("our SMS");
    assert_eq!(ours["phone_number"], "+14155550142");
    assert_eq!(ours["message_id"], out.message_id().unwrap());
}

#[tokio::test]
async fn sns_push_to_a_platform_endpoint_is_read_back_from_moto() {
    let sns = aws::sns(&moto().sdk_config().await);
    let app = sns
        .create_platform_application()
        .name(unique("app"))
        .platform("GCM")
        .attributes("PlatformCredential", "fcm-key")
        .send()
        .await
        .expect("platform application");
    let ep = sns
        .create_platform_endpoint()
        .platform_application_arn(app.platform_application_arn().unwrap())
        .token(unique("token"))
        .send()
        .await
        .expect("endpoint");
    let arn = ep.endpoint_arn().unwrap();
    let out = sns
        .publish()
        .target_arn(arn)
        .message_structure("json")
        .message(json!({"default": "t", "GCM": json!({"notification": {"title": "t", "body": "b"}}).to_string()}).to_string())
        .send()
        .await
        .expect("publish");
    let messages = moto().endpoint_messages(arn).await.unwrap();
    assert!(
        messages[out.message_id().unwrap()]
            .as_str()
            .unwrap()
            .contains("GCM")
    );
}

#[tokio::test]
async fn sesv2_email_is_read_back_from_moto() {
    use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
    let ses = aws::sesv2(&moto().sdk_config().await);
    let from = format!("{}@acme.example", unique("alerts"));
    ses.create_email_identity()
        .email_identity(&from)
        .send()
        .await
        .expect("identity");
    let subject = unique("subject");
    let data = |s: &str| Content::builder().data(s).build().unwrap();
    ses.send_email()
        .from_email_address(&from)
        .destination(
            Destination::builder()
                .to_addresses("ana@example.org")
                .build(),
        )
        .content(
            EmailContent::builder()
                .simple(
                    Message::builder()
                        .subject(data(&subject))
                        .body(Body::builder().text(data("plain body")).build())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("send");
    let sent = moto().sent_email().await.unwrap();
    let ours = sent
        .iter()
        .find(|m| m["subject"] == subject.as_str())
        .expect("our email");
    assert_eq!(ours["source"], from.as_str());
    assert_eq!(ours["destinations"]["ToAddresses"][0], "ana@example.org");
}

#[tokio::test]
async fn sqs_round_trip_on_moto() {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    let sqs = aws::sqs(&moto().sdk_config().await);
    let url = sqs
        .create_queue()
        .queue_name(unique("jobs"))
        .send()
        .await
        .expect("queue")
        .queue_url()
        .unwrap()
        .to_string();
    let entries: Vec<_> = (0..3)
        .map(|i| {
            SendMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .message_body(format!("job {i}"))
                .build()
                .unwrap()
        })
        .collect();
    let sent = sqs
        .send_message_batch()
        .queue_url(&url)
        .set_entries(Some(entries))
        .send()
        .await
        .expect("batch");
    assert_eq!(sent.successful().len(), 3);
    let got = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("receive");
    let mut bodies: Vec<_> = got.messages().iter().filter_map(|m| m.body()).collect();
    bodies.sort();
    assert_eq!(bodies, ["job 0", "job 1", "job 2"]);
}

/// The SDK's HTTPS client (rustls on ring, `flare_aws::sdk_config`) against moto over
/// TLS: a call succeeds when the server's CA is trusted, and fails the handshake when
/// only the system's roots are.
#[tokio::test]
async fn the_sdk_speaks_tls_with_a_trusted_ca_and_refuses_an_unknown_one() {
    let dir = flare_tests::TempDir::new("moto-tls").unwrap();
    let moto = flare_tests::Moto::start_tls(&dir).expect("moto over TLS");
    assert!(moto.url.starts_with("https://"), "{}", moto.url);

    let mut opts = moto.aws_options();
    opts.extra_root_ca = Some(moto.ca_pem().unwrap());
    let sqs = aws::sqs(&aws::sdk_config(opts).await);
    let name = unique("tls");
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("create a queue over TLS")
        .queue_url
        .unwrap();
    assert!(url.ends_with(&name), "{url}");

    let untrusted = aws::sqs(&aws::sdk_config(moto.aws_options()).await);
    let err = untrusted
        .list_queues()
        .send()
        .await
        .expect_err("a certificate from an unknown CA must be refused");
    let chain = format!("{:?}", anyhow::Error::from(err));
    assert!(
        chain.contains("UnknownIssuer") || chain.contains("certificate"),
        "not a certificate failure: {chain}"
    );
}

async fn ehlo(port: u16) -> String {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220"), "greeting: {line}");
    w.write_all(b"EHLO flare.test\r\n").await.unwrap();
    let mut reply = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        reply.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] == b' ' {
            break;
        }
    }
    w.write_all(b"QUIT\r\n").await.unwrap();
    reply
}

#[tokio::test]
async fn smtp_sink_offers_starttls_and_has_its_ca() {
    let s = smtp();
    let reply = ehlo(s.port).await;
    assert!(reply.contains("STARTTLS"), "{reply}");
    let ca = std::fs::read_to_string(&s.ca_pem).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(s.messages().unwrap().iter().all(|m| m["tls"].is_boolean()));
    // The implicit-TLS port is listening too (the handshake itself is for the SMTP tests).
    tokio::net::TcpStream::connect(("127.0.0.1", s.tls_port))
        .await
        .expect("tls port");
}

#[tokio::test]
async fn gateway_records_requests_and_answers_scripts() {
    let g = gateway();
    let path = format!("/{}", unique("send"));
    g.script(&path, json!([{"status": 500}])).await.unwrap();
    let client = flare_tests::http();
    let first = client
        .post(format!("{}{path}", g.url))
        .header("X-Api-Key", "abc123")
        .json(&json!({"to": "+14155550100", "from": "ACME", "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 500);
    let second = client
        .post(format!("{}{path}", g.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    let body: serde_json::Value = second.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("gw-"));
    let seen = g.requests_to(&path).await.unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0]["headers"]["x-api-key"], "abc123");
    assert_eq!(
        seen[0]["body"],
        json!({"to": "+14155550100", "from": "ACME", "text": "hi"}).to_string()
    );
}

#[test]
fn a_server_that_cannot_start_fails_with_the_fix() {
    // An unknown kind makes serve.py exit without READY: the error must say how to fix it.
    let err = match ServerProcess::start(
        "no-such-server",
        &["--port".into(), free_port().to_string()],
    ) {
        Ok(_) => panic!("started a server that does not exist"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("did not start"), "{err}");
    assert!(err.contains("scripts/setup-test-servers"), "{err}");
}

#[test]
fn a_stopped_server_is_gone_by_pid() {
    let g = flare_tests::Gateway::start().unwrap();
    let pid = g.process.pid();
    drop(g);
    // SAFETY: signal 0 only checks whether the pid exists.
    let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    assert!(!alive, "gateway {pid} still running after drop");
}
