//! One notification followed by its correlation id and its trace: from the
//! event, through intake and a worker, to its status records, its dead
//! letter, and the replay that delivers it; and its spans exported over
//! OTLP, each the child of the hop before it.

use crate::harness::smtp::SmtpServer;
use crate::harness::{self, order_event, smtp_and_twilio, Infra, StatusWatch};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::notification::notification_id;
use tidings_core::{Channel, Clock, State};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// Event `seq` for `user`, with a correlation id and the W3C trace it continues.
fn traced_event(seq: usize, user: &str, correlation_id: &str) -> String {
    let mut event: serde_json::Value = serde_json::from_str(&order_event(seq, user)).unwrap();
    event["correlationid"] = correlation_id.into();
    event["traceparent"] = format!("00-{TRACE}-{PARENT}-01").into();
    event.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_correlation_id_and_trace_id_follow_a_notification_to_its_dead_letter_and_replay() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let providers = smtp_and_twilio(smtp.port, "http://127.0.0.1:9");
    let config = Arc::new(infra.config(&providers, &[(Channel::Email, &["smtp"])]));
    let store = harness::store_with_email_users(&config, 3).await;
    let watch = StatusWatch::start(&config);
    // The relay refuses every message for good: it is dead-lettered.
    *smtp.shared.mail_reply.lock().unwrap() = Some("554 5.7.1 sender refused".into());
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();
    let events = traced_event(1, "u-1", "corr-42") + "\n" + &order_event(2, "u-2") + "\n";
    tidings::commands::dev::feed(&config, &events).await.unwrap();

    let id = notification_id("/test", "evt-1", Channel::Email, "u-1");
    let letter = watch.wait_for_status(&id, State::DeadLettered, Duration::from_secs(60)).await;
    assert_eq!(letter.correlation_id.as_deref(), Some("corr-42"));
    assert_eq!(letter.trace_id.as_deref(), Some(TRACE), "the event's trace");
    // An event without either gets its id as correlation id and a trace of its own.
    let other = notification_id("/test", "evt-2", Channel::Email, "u-2");
    let other = watch.wait_for_status(&other, State::DeadLettered, Duration::from_secs(60)).await;
    assert_eq!(other.correlation_id.as_deref(), Some("evt-2"));
    let other_trace = other.trace_id.clone().unwrap();
    assert!(other_trace.len() == 32 && other_trace != TRACE, "{other_trace}");

    // The dead letter carries both, as headers of the record it keeps.
    let letters = harness::read_topic(&config, &Channel::Email.dlq_topic(), 2);
    let letter = letters.iter().find(|r| r.value.contains(&id)).expect("its dead letter");
    let header = |name: &str| letter.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    assert_eq!(header("correlation_id").as_deref(), Some("corr-42"));
    let traceparent = header("traceparent").expect("a traceparent");
    assert!(traceparent.starts_with(&format!("00-{TRACE}-")), "{traceparent}");
    assert!(!traceparent.contains(PARENT), "intake's own span is the worker's parent: {traceparent}");

    // Replayed once the relay takes mail again: sent, in the same trace, with the same correlation id.
    *smtp.shared.mail_reply.lock().unwrap() = None;
    let dir = tempfile::tempdir().unwrap();
    let file = harness::config_file(dir.path(), &providers, "\n[channels.email]\nproviders = [\"smtp\"]\n", &[]);
    let out = infra.command(&file, &["dlq", "replay", "--from", "email"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sent = watch.wait_for_status(&id, State::Sent, Duration::from_secs(60)).await;
    assert_eq!(sent.correlation_id.as_deref(), Some("corr-42"));
    assert_eq!(sent.trace_id.as_deref(), Some(TRACE));
    let other = notification_id("/test", "evt-2", Channel::Email, "u-2");
    let other = watch.wait_for_status(&other, State::Sent, Duration::from_secs(60)).await;
    assert_eq!(other.trace_id.as_deref(), Some(other_trace.as_str()), "a replay keeps the trace intake began");
    fleet.shutdown().await.unwrap();
}

/// The spans a fake OTLP/HTTP collector received: (name, trace id, span id, parent span id), hex.
async fn spans(collector: &wiremock::MockServer) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for request in collector.received_requests().await.unwrap_or_default() {
        let Ok(export) = ExportTraceServiceRequest::decode(request.body.as_slice()) else { continue };
        for span in export.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            out.push((span.name.clone(), hex(&span.trace_id), hex(&span.span_id), hex(&span.parent_span_id)));
        }
    }
    out
}

/// Intake and a worker as processes exporting to a collector: the event's
/// trace holds intake's span (child of the event's parent), the worker's
/// (child of intake's) and the provider call (child of the worker's).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spans_are_exported_over_otlp_each_the_child_of_the_hop_before() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let collector = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/v1/traces"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&collector)
        .await;
    let providers = smtp_and_twilio(smtp.port, "http://127.0.0.1:9");
    let config = infra.config(&providers, &[(Channel::Email, &["smtp"])]);
    harness::store_with_email_users(&config, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("otlp_endpoint = \"{}\"", collector.uri());
    let file = harness::config_file(
        dir.path(),
        &providers,
        "\n[channels.email]\nproviders = [\"smtp\"]\n",
        &[("# otlp_endpoint = \"http://otel-collector:4318\"", &endpoint)],
    );
    let watch = StatusWatch::start(&config);
    let spawn = |args: &[&str]| -> harness::Process {
        // Batches leave every 200 ms rather than every 5 s.
        infra.command(&file, args).env("OTEL_BSP_SCHEDULE_DELAY", "200").spawn().unwrap().into()
    };
    let _intake = spawn(&["intake"]);
    let _worker = spawn(&["worker", "--channel", "email"]);
    tidings::commands::dev::feed(&config, &(traced_event(7, "u-1", "corr-7") + "\n")).await.unwrap();
    let id = notification_id("/test", "evt-7", Channel::Email, "u-1");
    let sent = watch.wait_for_status(&id, State::Sent, Duration::from_secs(60)).await;
    assert_eq!(sent.trace_id.as_deref(), Some(TRACE));

    let found = std::sync::Mutex::new(Vec::new());
    harness::eventually(
        "the three spans at the collector",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let all = spans(&collector).await;
            let ours: Vec<_> = all.into_iter().filter(|s| s.1 == TRACE).collect();
            let done =
                ["intake.event", "worker.deliver", "provider.call"].iter().all(|n| ours.iter().any(|s| s.0 == *n));
            *found.lock().unwrap() = ours;
            done
        },
    )
    .await;
    let found = found.into_inner().unwrap();
    let span = |name: &str| found.iter().find(|s| s.0 == name).unwrap().clone();
    let (intake, worker, call) = (span("intake.event"), span("worker.deliver"), span("provider.call"));
    assert_eq!(intake.3, PARENT, "intake's span continues the event's trace");
    assert_eq!(worker.3, intake.2, "the worker's span is intake's child, across Kafka");
    assert_eq!(call.3, worker.2, "the provider call is the worker's child");
}
