//! The feedback loop, through the running role over real HTTP: signed
//! provider callbacks become status records and suppressions, refused ones
//! change nothing, and listed addresses get nothing more (asserted at the
//! provider fakes).

use crate::harness::{self, fakes, Infra, StatusWatch};
use base64::Engine;
use p256::ecdsa::signature::Signer;
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::notification::notification_id;
use tidings_core::store::SharedStore;
use tidings_core::suppression::{Cause, Suppression, SUPPRESSED_PREFIX};
use tidings_core::{Channel, Clock, Config, State, StatusRecord};
use tidings_providers::twilio::callback::signature as twilio_signature;
use tidings_providers::vonage::callback::{signature as vonage_signature, SignatureMethod};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// SendGrid's published test key pair (its libraries' verification tests).
const SENDGRID_PUBLIC: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
const SENDGRID_PRIVATE: &str = "MHcCAQEEIEQmZgBEh9DcU9zMl34czK3xov4AYvm9P3r7rNB2dNXtoAoGCCqGSM49AwEHoUQDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
const TWILIO_TOKEN: &str = "5f0e8c2b9a7d4e1f3c6b8a0d2e4f6a8c";
const VONAGE_SECRET: &str = "vonage-signature-secret";
const WAIT: Duration = Duration::from_secs(30);

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// SendGrid's signature of `body` at `timestamp`.
fn sendgrid_sign(timestamp: &str, body: &str) -> String {
    let der = b64().decode(SENDGRID_PRIVATE).unwrap();
    let key = p256::ecdsa::SigningKey::from(p256::SecretKey::from_sec1_der(&der).unwrap());
    let signature: p256::ecdsa::Signature = key.sign(format!("{timestamp}{body}").as_bytes());
    b64().encode(signature.to_der().as_bytes())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn users() -> String {
    [
        serde_json::json!({"user_id": "u-1", "email": "a1@example.com", "phone": "+15550000001", "channels": {"email": true, "sms": true}}),
        serde_json::json!({"user_id": "u-2", "email": "b2@example.com", "channels": {"email": true}}),
        serde_json::json!({"user_id": "u-3", "phone": "+15550000003", "channels": {"sms": true}}),
        serde_json::json!({"user_id": "u-4", "phone": "+15550000004", "channels": {"sms": true}}),
    ]
    .iter()
    .map(|u| u.to_string() + "\n")
    .collect()
}

/// A Twilio provider section at `base_url`, signed with [`TWILIO_TOKEN`].
fn twilio_section(base_url: &str) -> String {
    format!(
        "\n[providers.twilio]\nkind = \"twilio\"\nbase_url = \"{base_url}\"\naccount_sid = \"AC123\"\nauth_token = \"{TWILIO_TOKEN}\"\nfrom = \"+15550001111\"\n"
    )
}

fn order(seq: usize, user: &str) -> String {
    harness::order_event(seq, user) + "\n"
}

fn id(seq: usize, channel: Channel, user: &str) -> String {
    notification_id("/test", &format!("evt-{seq}"), channel, user)
}

/// The fleet with every role and the callbacks role on a port of its own.
struct Rig {
    _infra: Infra,
    config: Arc<Config>,
    store: SharedStore,
    watch: StatusWatch,
    fleet: Option<fleet::Fleet>,
    base: String,
    http: reqwest::Client,
}

/// The fleet stops before the cluster and Redis it uses go (fields drop in
/// order, the infrastructure first): a consumer dropped after its cluster
/// waits for ever to leave its group, and the test with it.
impl Drop for Rig {
    fn drop(&mut self) {
        let Some(fleet) = self.fleet.take() else { return };
        let handle = tokio::runtime::Handle::current();
        if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            let _ = tokio::task::block_in_place(|| handle.block_on(fleet.shutdown()));
        }
    }
}

impl Rig {
    async fn start(providers: &str, channels: &[(Channel, &[&str])], port: u16) -> Self {
        Self::start_with(providers, channels, port, |_| {}).await
    }

    async fn start_with(
        providers: &str,
        channels: &[(Channel, &[&str])],
        port: u16,
        tune: impl FnOnce(&mut Config),
    ) -> Self {
        let infra = Infra::start();
        let mut config = infra.config(providers, channels);
        tune(&mut config);
        config.callbacks.listen = ([127, 0, 0, 1], port).into();
        config.callbacks.public_url = Some(format!("http://127.0.0.1:{port}").parse().unwrap());
        config.callbacks.soft_bounces = 2;
        let config = Arc::new(config);
        tidings_providers::registry::check(&config).unwrap();
        let store = fleet::open_store(&config).await.unwrap();
        tidings::commands::prefs::import(store.as_ref(), &users()).await.unwrap();
        let watch = StatusWatch::start(&config);
        let mut roles = Roles::all(&config);
        roles.callbacks = true;
        let fleet = fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), roles).unwrap();
        let base = format!("http://127.0.0.1:{port}");
        Rig { _infra: infra, config, store, watch, fleet: Some(fleet), base, http: reqwest::Client::new() }
    }

    async fn twilio_post(&self, url: &str, form: &[(&str, &str)], signed_with: Option<&str>) -> u16 {
        let pairs: Vec<(String, String)> = form.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut request = self.http.post(url).form(form);
        if let Some(token) = signed_with {
            request = request.header("X-Twilio-Signature", twilio_signature(token, url, &pairs));
        }
        request.send().await.unwrap().status().as_u16()
    }

    async fn sendgrid_post(&self, body: &str, timestamp: &str, signature: &str) -> u16 {
        self.http
            .post(format!("{}/callbacks/sendgrid/events", self.base))
            .header("content-type", "application/json")
            .header("X-Twilio-Email-Event-Webhook-Timestamp", timestamp)
            .header("X-Twilio-Email-Event-Webhook-Signature", signature)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn listed(&self, address: &str) -> Option<Cause> {
        self.store.suppression(address).await.unwrap().map(|e| e.cause)
    }

    /// Every callback written applied (its offset committed), every role
    /// stopped; then every status record of `users` written so far has been
    /// read (a marker written after them on each user's partition came back).
    async fn drained(&mut self, users: &[&str]) -> Vec<StatusRecord> {
        let (config, group) = (self.config.clone(), self.config.group("callbacks"));
        harness::eventually("every callback applied", WAIT, Duration::from_millis(100), || {
            let uncommitted = harness::uncommitted(&config, &group, tidings_core::channel::CALLBACKS_TOPIC);
            async move { uncommitted == 0 }
        })
        .await;
        self.fleet.take().unwrap().shutdown().await.unwrap();
        let producer = tidings_core::kafka::command_producer(&self.config.kafka).unwrap();
        for user in users {
            let marker = serde_json::json!({"notification_id": format!("marker-{user}"), "event_id": "-",
                "event_type": "-", "user_id": user, "state": "sent", "at": chrono::Utc::now()})
            .to_string();
            let record =
                rdkafka::producer::FutureRecord::to(tidings_core::channel::STATUS_TOPIC).key(*user).payload(&marker);
            producer.send(record, Duration::from_secs(10)).await.unwrap();
        }
        self.watch
            .wait_until("the markers", WAIT, |rs| {
                users.iter().all(|u| rs.iter().any(|r| r.notification_id == format!("marker-{u}")))
            })
            .await
    }
}

fn count(records: &[StatusRecord], id: &str, state: State) -> usize {
    records.iter().filter(|r| r.notification_id == id && r.state == state).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_callbacks_become_records_and_suppressions_and_listed_addresses_get_nothing_more() {
    let port = free_port();
    let sendgrid = fakes::sendgrid().await;
    let twilio = fakes::twilio().await;
    let providers = format!(
        "{}webhook_verification_key = \"{SENDGRID_PUBLIC}\"\n\n[providers.twilio]\nkind = \"twilio\"\nbase_url = \"{}\"\n\
         account_sid = \"AC123\"\nauth_token = \"{TWILIO_TOKEN}\"\nfrom = \"+15550001111\"\n\
         status_callback = \"http://127.0.0.1:{port}/callbacks/twilio/status\"\n",
        harness::sendgrid_provider(&sendgrid.server.uri(), "5s"),
        twilio.uri()
    );
    let mut rig = Rig::start(&providers, &[(Channel::Email, &["sendgrid"]), (Channel::Sms, &["twilio"])], port).await;
    let config = rig.config.clone();
    tidings::commands::dev::feed(&config, &(order(1, "u-1") + &order(2, "u-2") + &order(3, "u-3"))).await.unwrap();
    let (u1_sms, u1_mail, u2_mail, u3_sms) = (
        id(1, Channel::Sms, "u-1"),
        id(1, Channel::Email, "u-1"),
        id(2, Channel::Email, "u-2"),
        id(3, Channel::Sms, "u-3"),
    );
    for n in [&u1_sms, &u1_mail, &u2_mail, &u3_sms] {
        rig.watch.wait_for_status(n, State::Sent, WAIT).await;
    }

    // Twilio: the status URL each message carried, signed with the auth token.
    let sent = twilio.received_requests().await.unwrap();
    let form = |r: &wiremock::Request| serde_urlencoded::from_bytes::<Vec<(String, String)>>(&r.body).unwrap();
    let callback_of = |to: &str| {
        let r = sent.iter().find(|r| form(r).iter().any(|(k, v)| k == "To" && v == to)).unwrap();
        form(r).into_iter().find(|(k, _)| k == "StatusCallback").map(|(_, v)| v).unwrap()
    };
    let u1_status_url = callback_of("+15550000001");
    assert!(u1_status_url.ends_with(&format!("?n={u1_sms}")), "{u1_status_url}");
    let delivered =
        [("MessageSid", "SM1"), ("MessageStatus", "delivered"), ("To", "+15550000001"), ("AccountSid", "AC123")];
    assert_eq!(rig.twilio_post(&u1_status_url, &delivered, Some(TWILIO_TOKEN)).await, 200);
    let record = rig.watch.wait_for_status(&u1_sms, State::Delivered, WAIT).await;
    assert_eq!((record.user_id.as_str(), record.event_id.as_str()), ("u-1", "evt-1"));
    assert_eq!((record.provider.as_deref(), record.provider_message_id.as_deref()), (Some("twilio"), Some("SM1")));
    assert_eq!(record.channel, Some(Channel::Sms));
    assert!(record.correlation_id.is_some() && record.trace_id.is_some(), "{record:?}");
    // The same callback again: answered, and nothing more recorded (counted at the end).
    assert_eq!(rig.twilio_post(&u1_status_url, &delivered, Some(TWILIO_TOKEN)).await, 200);
    // Forged, unsigned, malformed: refused, nothing changed.
    let undelivered =
        [("MessageSid", "SM1"), ("MessageStatus", "undelivered"), ("ErrorCode", "30005"), ("To", "+15550000001")];
    assert_eq!(rig.twilio_post(&u1_status_url, &undelivered, Some("not-the-token")).await, 401);
    assert_eq!(rig.twilio_post(&u1_status_url, &undelivered, None).await, 401);
    assert_eq!(rig.twilio_post(&u1_status_url, &[("MessageSid", "SM1")], Some(TWILIO_TOKEN)).await, 400);
    let elsewhere = u1_status_url.replace(&u1_sms, &u3_sms);
    assert_eq!(rig.twilio_post(&elsewhere, &delivered, None).await, 401);

    // SendGrid: a signed batch, our notification id in each event.
    let now = chrono::Utc::now().timestamp().to_string();
    let batch = serde_json::json!([
        {"email": "b2@example.com", "event": "bounce", "type": "bounce", "status": "5.1.1",
         "reason": "550 5.1.1 no such user\u{1b}]0;pwned\u{7}\u{1b}[2J", "sg_message_id": "sg-2.filter01", "notification_id": u2_mail},
        {"email": "a1@example.com", "event": "delivered", "sg_message_id": "sg-1.filter01", "notification_id": u1_mail},
        {"email": "a1@example.com", "event": "spamreport", "sg_message_id": "sg-1.filter01", "notification_id": u1_mail},
        {"email": "a1@example.com", "event": "open", "notification_id": u1_mail},
        {"email": "d4@example.com", "event": "delivered", "notification_id": "n-not-ours"}
    ])
    .to_string();
    assert_eq!(rig.sendgrid_post(&batch, &now, &sendgrid_sign(&now, &batch)).await, 200);
    let bounced = rig.watch.wait_for_status(&u2_mail, State::Bounced, WAIT).await;
    assert_eq!(bounced.provider_code.as_deref(), Some("5.1.1"));
    assert_eq!(bounced.provider_message_id.as_deref(), Some("sg-2"));
    assert!(bounced.error.as_deref().unwrap().contains("no such user"), "{bounced:?}");
    rig.watch.wait_for_status(&u1_mail, State::Delivered, WAIT).await;
    rig.watch.wait_for_status(&u1_mail, State::Complained, WAIT).await;
    harness::eventually("both addresses listed", WAIT, Duration::from_millis(50), || async {
        rig.listed("b2@example.com").await == Some(Cause::HardBounce)
            && rig.listed("a1@example.com").await == Some(Cause::Complaint)
    })
    .await;
    // The terminal escapes in the bounce's reason are stored as text, not as escapes.
    let reason = rig.store.suppression("b2@example.com").await.unwrap().unwrap().reason;
    assert!(!reason.chars().any(char::is_control) && reason.contains("pwned"), "{reason:?}");
    assert!(!bounced.error.as_deref().unwrap().chars().any(char::is_control), "{bounced:?}");
    // The same batch replayed within the tolerance: answered, nothing more recorded.
    assert_eq!(rig.sendgrid_post(&batch, &now, &sendgrid_sign(&now, &batch)).await, 200);
    // Forged, stale, malformed, for an address not listed: refused, it stays unlisted.
    let other = serde_json::json!([{"email": "c3@example.com", "event": "bounce", "type": "bounce", "notification_id": "n-forged"}])
        .to_string();
    assert_eq!(rig.sendgrid_post(&other, &now, &sendgrid_sign(&now, &batch)).await, 401, "another body's signature");
    let hour_ago = (chrono::Utc::now().timestamp() - 3600).to_string();
    assert_eq!(rig.sendgrid_post(&other, &hour_ago, &sendgrid_sign(&hour_ago, &other)).await, 401, "stale");
    let broken = r#"{"email": "c3@example.com", "event": "bounce""#;
    assert_eq!(rig.sendgrid_post(broken, &now, &sendgrid_sign(&now, broken)).await, 400, "malformed");
    let nobody = rig.http.post(format!("{}/callbacks/nobody/events", rig.base)).body("[]").send().await.unwrap();
    assert_eq!(nobody.status().as_u16(), 404);

    // STOP from a number: listed, its next SMS suppressed and never sent.
    let inbound = format!("{}/callbacks/twilio/inbound", rig.base);
    let stop = [("From", "+15550000003"), ("To", "+15550001111"), ("Body", "Stop"), ("MessageSid", "SM9")];
    assert_eq!(rig.twilio_post(&inbound, &stop, Some("forged")).await, 401);
    assert_eq!(rig.twilio_post(&inbound, &stop, Some(TWILIO_TOKEN)).await, 200);
    harness::eventually("the number listed", WAIT, Duration::from_millis(50), || async {
        rig.listed("+15550000003").await == Some(Cause::Stop)
    })
    .await;
    tidings::commands::dev::feed(&config, &(order(4, "u-2") + &order(5, "u-3"))).await.unwrap();
    let bounced_again = rig.watch.wait_for_status(&id(4, Channel::Email, "u-2"), State::Suppressed, WAIT).await;
    let why = bounced_again.error.unwrap();
    assert!(why.starts_with(&format!("{SUPPRESSED_PREFIX}hard_bounce")), "{why}");
    let stopped = rig.watch.wait_for_status(&id(5, Channel::Sms, "u-3"), State::Suppressed, WAIT).await;
    assert!(stopped.error.unwrap().starts_with(&format!("{SUPPRESSED_PREFIX}stop")));
    assert!(!sendgrid.state.accepted().contains(&id(4, Channel::Email, "u-2")), "nothing reached SendGrid for it");
    let to_u3 = |sent: Vec<(String, String)>| sent.iter().filter(|(to, _)| to == "+15550000003").count();
    assert_eq!(to_u3(fakes::twilio_sent(&twilio).await), 1, "only the SMS before STOP");

    // An operator's entry stays through the number's STOP and START.
    let fraud = Suppression {
        address: "+15550000009".into(),
        channel: Channel::Sms,
        cause: Cause::Manual,
        reason: "fraud ticket 123".into(),
        source: "cli".into(),
        at: chrono::Utc::now(),
    };
    rig.store.suppress(&fraud).await.unwrap();
    for (body, sid) in [("STOP", "SM20"), ("START", "SM21")] {
        let form = [("From", "+15550000009"), ("To", "+15550001111"), ("Body", body), ("MessageSid", sid)];
        assert_eq!(rig.twilio_post(&inbound, &form, Some(TWILIO_TOKEN)).await, 200);
    }

    // START lifts it.
    let start = [("From", "+15550000003"), ("To", "+15550001111"), ("Body", "START"), ("MessageSid", "SM10")];
    assert_eq!(rig.twilio_post(&inbound, &start, Some(TWILIO_TOKEN)).await, 200);
    harness::eventually("the number lifted", WAIT, Duration::from_millis(50), || async {
        rig.listed("+15550000003").await.is_none()
    })
    .await;
    tidings::commands::dev::feed(&config, &order(6, "u-3")).await.unwrap();
    rig.watch.wait_for_status(&id(6, Channel::Sms, "u-3"), State::Sent, WAIT).await;
    assert_eq!(to_u3(fakes::twilio_sent(&twilio).await), 2);

    // A number's keywords in quick succession: applied in the order they came, the last one wins.
    for (i, body) in ["STOP", "START"].iter().cycle().take(11).enumerate() {
        let form =
            [("From", "+15550000004"), ("To", "+15550001111"), ("Body", body), ("MessageSid", &format!("SM7{i}"))];
        assert_eq!(rig.twilio_post(&inbound, &form, Some(TWILIO_TOKEN)).await, 200);
    }

    // Once everything queued is applied: one record per notification and
    // state, whatever came twice, and nothing from what was refused.
    let records = rig.drained(&["u-1", "u-2", "u-3"]).await;
    assert_eq!(rig.listed("+15550000004").await, Some(Cause::Stop), "the last keyword was a STOP");
    assert_eq!(count(&records, &u1_sms, State::Delivered), 1);
    assert_eq!(count(&records, &u1_sms, State::Undelivered), 0, "the forged one changed nothing");
    assert_eq!(count(&records, &u3_sms, State::Delivered), 0, "the unsigned one changed nothing");
    assert_eq!(count(&records, &u2_mail, State::Bounced), 1);
    assert_eq!(count(&records, &u1_mail, State::Delivered), 1);
    assert_eq!(count(&records, &u1_mail, State::Complained), 1);
    assert!(records.iter().all(|r| r.notification_id != "n-forged"));
    assert!(records.iter().all(|r| r.notification_id != "n-not-ours"), "unknown ids are counted, not recorded");
    assert_eq!(rig.listed("c3@example.com").await, None);
    assert_eq!(rig.listed("+15550000001").await, None, "the forged undelivered listed nothing");
    assert_eq!(rig.store.suppression("+15550000009").await.unwrap(), Some(fraud), "the operator's entry as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vonage_receipts_and_invalid_numbers_list_what_cannot_take_sms() {
    let port = free_port();
    let vonage = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "message-count": "1", "messages": [{"status": "0", "message-id": "0A00000001"}]
        })))
        .mount(&vonage)
        .await;
    let providers = format!(
        "\n[providers.vonage]\nkind = \"vonage\"\nbase_url = \"{}\"\napi_key = \"k\"\napi_secret = \"s\"\n\
         from = \"Shop\"\nsignature_secret = \"{VONAGE_SECRET}\"\nsignature_method = \"sha256\"\n",
        vonage.uri()
    );
    let mut rig = Rig::start(&providers, &[(Channel::Sms, &["vonage"])], port).await;
    let config = rig.config.clone();
    tidings::commands::dev::feed(&config, &(order(1, "u-3") + &order(2, "u-4"))).await.unwrap();
    let (u3_sms, u4_sms) = (id(1, Channel::Sms, "u-3"), id(2, Channel::Sms, "u-4"));
    rig.watch.wait_for_status(&u3_sms, State::Sent, WAIT).await;
    rig.watch.wait_for_status(&u4_sms, State::Sent, WAIT).await;

    let url = format!("{}/callbacks/vonage/receipts", rig.base);
    let receipt = |client_ref: &str, msisdn: &str, status: &str, code: &str, at: i64| {
        vec![
            ("msisdn".to_string(), msisdn.to_string()),
            ("to".to_string(), "Shop".to_string()),
            ("messageId".to_string(), "0A00000001".to_string()),
            ("status".to_string(), status.to_string()),
            ("err-code".to_string(), code.to_string()),
            ("client-ref".to_string(), client_ref.to_string()),
            ("timestamp".to_string(), at.to_string()),
            ("nonce".to_string(), "6c1b8bd2-1fa1-4b0e-9aa0-6a1b8c1d2e3f".to_string()),
        ]
    };
    let signed = |mut params: Vec<(String, String)>, secret: &str| {
        let sig = vonage_signature(SignatureMethod::Sha256, secret, &params);
        params.push(("sig".into(), sig));
        params
    };
    let now = chrono::Utc::now().timestamp();
    let post = |params: Vec<(String, String)>| {
        let (http, url) = (rig.http.clone(), url.clone());
        async move { http.post(url).form(&params).send().await.unwrap().status().as_u16() }
    };
    // A permanent failure (illegal number): undelivered, and the number listed.
    assert_eq!(post(signed(receipt(&u3_sms, "15550000003", "failed", "9", now), VONAGE_SECRET)).await, 200);
    let undelivered = rig.watch.wait_for_status(&u3_sms, State::Undelivered, WAIT).await;
    assert_eq!((undelivered.provider.as_deref(), undelivered.provider_code.as_deref()), (Some("vonage"), Some("9")));
    harness::eventually("the number listed", WAIT, Duration::from_millis(50), || async {
        rig.listed("+15550000003").await == Some(Cause::HardBounce)
    })
    .await;
    // A delivery receipt as a GET with the query, as Vonage may send it.
    let query = signed(receipt(&u4_sms, "15550000004", "delivered", "0", now), VONAGE_SECRET);
    let got = rig.http.get(&url).query(&query).send().await.unwrap().status().as_u16();
    assert_eq!(got, 200);
    rig.watch.wait_for_status(&u4_sms, State::Delivered, WAIT).await;
    // Refused: another secret, unsigned, stale, malformed; none lists +15550000004.
    let failed = || receipt(&u4_sms, "15550000004", "rejected", "9", now);
    assert_eq!(post(signed(failed(), "another-secret")).await, 401);
    assert_eq!(post(failed()).await, 401);
    assert_eq!(post(signed(receipt(&u4_sms, "15550000004", "rejected", "9", now - 3600), VONAGE_SECRET)).await, 401);
    let mut no_status = failed();
    no_status.retain(|(k, _)| k != "status");
    assert_eq!(post(signed(no_status, VONAGE_SECRET)).await, 400);

    // Soft failures list a number once `soft_bounces` (2 here) came in the window.
    let soft = |seq: usize| receipt(&format!("soft-{seq}"), "15550000004", "expired", "2", now);
    assert_eq!(post(signed(soft(1), VONAGE_SECRET)).await, 200);
    assert_eq!(post(signed(soft(2), VONAGE_SECRET)).await, 200);
    harness::eventually("two soft failures list it", WAIT, Duration::from_millis(50), || async {
        rig.listed("+15550000004").await == Some(Cause::SoftBounces)
    })
    .await;

    // The listed number's next SMS is suppressed, and Vonage never sees it.
    tidings::commands::dev::feed(&config, &order(3, "u-3")).await.unwrap();
    let suppressed = rig.watch.wait_for_status(&id(3, Channel::Sms, "u-3"), State::Suppressed, WAIT).await;
    assert!(suppressed.error.unwrap().starts_with(&format!("{SUPPRESSED_PREFIX}hard_bounce")));
    let sends = vonage.received_requests().await.unwrap();
    let to_u3 = sends.iter().filter(|r| String::from_utf8_lossy(&r.body).contains("to=15550000003")).count();
    assert_eq!(to_u3, 1, "only the SMS before the receipt");

    let records = rig.drained(&["u-3", "u-4"]).await;
    assert_eq!(count(&records, &u4_sms, State::Undelivered), 0, "refused receipts recorded nothing");
    assert_eq!(count(&records, &u3_sms, State::Undelivered), 1);
}

/// A number the provider refuses as invalid at send time is listed: its
/// next message is suppressed without a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_recipient_answer_lists_the_number() {
    let twilio = MockServer::start().await;
    let refused =
        serde_json::json!({"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400});
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(400).set_body_json(refused)).mount(&twilio).await;
    let providers = twilio_section(&twilio.uri());
    let mut rig = Rig::start(&providers, &[(Channel::Sms, &["twilio"])], free_port()).await;
    let config = rig.config.clone();
    tidings::commands::dev::feed(&config, &order(1, "u-3")).await.unwrap();
    let first = rig.watch.wait_for_status(&id(1, Channel::Sms, "u-3"), State::Suppressed, WAIT).await;
    assert!(first.error.unwrap().starts_with("invalid recipient"));
    let entry = rig.store.suppression("+15550000003").await.unwrap().expect("listed");
    assert_eq!((entry.cause, entry.source.as_str()), (Cause::HardBounce, "twilio"));
    tidings::commands::dev::feed(&config, &order(2, "u-3")).await.unwrap();
    let second = rig.watch.wait_for_status(&id(2, Channel::Sms, "u-3"), State::Suppressed, WAIT).await;
    assert!(second.error.unwrap().starts_with(SUPPRESSED_PREFIX));
    assert_eq!(twilio.received_requests().await.unwrap().len(), 1, "the second was never sent");
    rig.drained(&["u-3"]).await;
}

/// Twilio's 21610 is a STOP the number sent Twilio (one whose inbound
/// webhook never reached us, say): the number is listed as `stop`, so its
/// START lifts it, as Twilio's own block is lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_number_twilio_says_opted_out_is_listed_as_stop_and_its_start_lifts_it() {
    let twilio = MockServer::start().await;
    let refused =
        serde_json::json!({"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400});
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(400).set_body_json(refused)).mount(&twilio).await;
    let providers = twilio_section(&twilio.uri());
    let port = free_port();
    let rig = Rig::start(&providers, &[(Channel::Sms, &["twilio"])], port).await;
    tidings::commands::dev::feed(&rig.config, &order(1, "u-3")).await.unwrap();
    rig.watch.wait_for_status(&id(1, Channel::Sms, "u-3"), State::Suppressed, WAIT).await;
    assert_eq!(rig.listed("+15550000003").await, Some(Cause::Stop));
    let inbound = format!("{}/callbacks/twilio/inbound", rig.base);
    let start = [("From", "+15550000003"), ("To", "+15550001111"), ("Body", "START"), ("MessageSid", "SM60")];
    assert_eq!(rig.twilio_post(&inbound, &start, Some(TWILIO_TOKEN)).await, 200);
    harness::eventually("the number lifted", WAIT, Duration::from_millis(50), || async {
        rig.listed("+15550000003").await.is_none()
    })
    .await;
}

fn campaign(seq: usize, user: &str) -> String {
    serde_json::json!({
        "specversion": "1.0", "id": format!("evt-{seq}"), "type": "marketing.campaign", "source": "/test",
        "data": {"user_id": user, "campaign_id": "winter", "headline": "Winter sale", "body": "Coats 30% off.",
                 "cta_url": "https://shop.example/sale", "unsubscribe_url": "https://shop.example/old-link"}
    })
    .to_string()
        + "\n"
}

/// The headers of a received message, folded lines unfolded (RFC 5322).
fn unfolded_header(data: &str, name: &str) -> Option<String> {
    let data = data.replace("\r\n", "\n");
    let head = data.split("\n\n").next().unwrap_or_default().replace("\n ", " ").replace("\n\t", " ");
    let prefix = format!("{}:", name.to_ascii_lowercase());
    head.lines().find(|l| l.to_ascii_lowercase().starts_with(&prefix)).map(|l| l[prefix.len()..].trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_click_unsubscribe_opts_the_user_out_of_marketing_and_only_marketing() {
    let port = free_port();
    let smtp = harness::smtp::SmtpServer::start().await;
    let providers = harness::smtp_and_twilio(smtp.port, "http://127.0.0.1:9");
    let infra_config = |c: &mut Config| {
        c.unsubscribe = serde_json::from_value(serde_json::json!({
            "url": format!("http://127.0.0.1:{port}/u"),
            "mailto": "leave@shop.example",
            "keys": [{"id": "k2", "secret": "the-key-that-signs-now"}, {"id": "k1", "secret": "the-key-being-retired"}],
        }))
        .unwrap();
    };
    let mut rig = Rig::start_with(&providers, &[(Channel::Email, &["smtp"])], port, infra_config).await;
    let config = rig.config.clone();
    tidings::commands::dev::feed(&config, &campaign(1, "u-1")).await.unwrap();
    let first = notification_id("/test", "evt-1", Channel::Email, "u-1");
    rig.watch.wait_for_status(&first, State::Sent, WAIT).await;

    // The message as a mail client sees it: both headers, and the body's link the same as the header's.
    let received = smtp.received();
    let data = &received[0].data;
    let header = unfolded_header(data, "List-Unsubscribe").expect("List-Unsubscribe");
    assert_eq!(unfolded_header(data, "List-Unsubscribe-Post").as_deref(), Some("List-Unsubscribe=One-Click"));
    let url = header.split(['<', '>']).find(|p| p.starts_with("http://")).unwrap().to_string();
    assert!(url.starts_with(&format!("http://127.0.0.1:{port}/u/k2.")), "{url}");
    assert!(header.contains("<mailto:leave@shop.example?subject=unsubscribe>"), "{header}");
    // The parts are quoted-printable: soft breaks joined, `=3D` read as `=`.
    let body = data.replace("\r\n", "\n").replace("=\n", "").replace("=3D", "=");
    assert!(body.contains(&format!("Unsubscribe: {url}")), "the text part links the same URL:\n{body}");
    assert!(body.contains(&format!("<a href=\"{url}\">Unsubscribe</a>")), "so does the HTML part:\n{body}");
    assert!(!data.contains("shop.example/old-link"), "the event's own link gave way to the signed one");

    // A person following the link sees a page whose button posts.
    let page = rig.http.get(&url).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("<form method=\"post\">") && page.contains("marketing"), "{page}");
    // A tampered token, and a POST that is not one-click: refused, nothing changes.
    let tampered = format!("{}A", &url[..url.len() - 1]);
    let one_click = [("List-Unsubscribe", "One-Click")];
    assert_eq!(rig.http.post(&tampered).form(&one_click).send().await.unwrap().status().as_u16(), 404);
    assert_eq!(rig.http.post(&url).form(&[("List-Unsubscribe", "Yes")]).send().await.unwrap().status().as_u16(), 400);
    let prefs = |rig: &Rig| {
        let store = rig.store.clone();
        async move { store.prefs_many(&["u-1".into()]).await.unwrap().pop().flatten().unwrap() }
    };
    assert!(!prefs(&rig).await.contains("marketing"));

    // The mailbox provider's one-click POST.
    assert_eq!(rig.http.post(&url).form(&one_click).send().await.unwrap().status().as_u16(), 200);
    let stored: serde_json::Value = serde_json::from_str(&prefs(&rig).await).unwrap();
    assert_eq!(stored["opt_out"], serde_json::json!(["marketing"]));
    assert_eq!(stored["phone"], "+15550000001", "every other field kept");

    // The next marketing email is suppressed; a transactional one still goes.
    tidings::commands::dev::feed(&config, &(campaign(2, "u-1") + &order(3, "u-1"))).await.unwrap();
    let second = notification_id("/test", "evt-2", Channel::Email, "u-1");
    let suppressed = rig.watch.wait_for_status(&second, State::Suppressed, WAIT).await;
    assert_eq!(suppressed.error.as_deref(), Some("user opted out of marketing"));
    rig.watch.wait_for_status(&id(3, Channel::Email, "u-1"), State::Sent, WAIT).await;
    let received = smtp.received();
    assert_eq!(received.len(), 2, "the campaign once, then the order");
    assert!(unfolded_header(&received[1].data, "List-Unsubscribe").is_none(), "transactional mail carries no link");
    rig.drained(&["u-1"]).await;
}

/// `tidings suppressions`, as an operator runs it.
#[tokio::test]
async fn the_suppressions_command_adds_checks_lists_and_removes() {
    let infra = Infra::start();
    let dir = tempfile::tempdir().unwrap();
    let file = harness::config_file(dir.path(), "", "", &[]);
    let run = |args: &[&str]| {
        let out = infra.command(&file, args).stdout(std::process::Stdio::piped()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, said) = run(&["suppressions", "check", "Ana@Example.com"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("ana@example.com\tnot listed"), "{said}");
    let (code, said) = run(&["suppressions", "add", " Ana@Example.com ", "--reason", "asked by phone"]);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(run(&["suppressions", "add", "+15550000009"]).0, Some(0));
    let (code, said) = run(&["suppressions", "check", "ana@example.com"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.starts_with("ana@example.com\temail\tmanual\tcli\t") && said.contains("asked by phone"), "{said}");
    let (_, listed) = run(&["suppressions", "list", "--json"]);
    let entries: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut addresses: Vec<&str> = entries.iter().map(|e| e["address"].as_str().unwrap()).collect();
    addresses.sort();
    assert_eq!(addresses, ["+15550000009", "ana@example.com"]);
    assert_eq!(run(&["suppressions", "remove", "ANA@example.com"]).0, Some(0));
    assert_eq!(run(&["suppressions", "check", "ana@example.com"]).0, Some(1));
    assert_eq!(run(&["suppressions", "remove", "ana@example.com"]).0, Some(1), "not listed any more");
    let (code, said) = run(&["suppressions", "add", "not an address"]);
    assert_ne!(code, Some(0));
    assert!(said.contains("neither an email address nor an E.164 phone number"), "{said}");
    // An entry whose reason holds terminal escapes (an older callback's, say) prints them as text.
    let (code, said) =
        run(&["suppressions", "add", "+15550000008", "--reason", "x\u{1b}]0;pwned\u{7}\u{1b}[2J\nforged\tline"]);
    assert_eq!(code, Some(0), "{said}");
    for args in [&["suppressions", "check", "+15550000008"][..], &["suppressions", "list"][..]] {
        let (_, said) = run(args);
        assert!(said.contains("pwned") && !said.chars().any(|c| c.is_control() && c != '\n' && c != '\t'), "{said:?}");
        assert!(!said.lines().any(|l| l.starts_with("forged")), "one line an entry: {said:?}");
    }
}

/// Callbacks that cannot be verified change nothing unless the operator
/// said so: a Vonage account without a signature secret has its receipts
/// refused, one with `accept_unsigned = true` has them taken (and counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unverifiable_receipts_are_refused_unless_accepted_unsigned_on_purpose() {
    let port = free_port();
    let section = |name: &str, extra: &str| {
        format!(
            "\n[providers.{name}]\nkind = \"vonage\"\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"k\"\n\
             api_secret = \"s\"\nfrom = \"Shop\"\n{extra}"
        )
    };
    let providers = section("vonage", "") + &section("vonage_open", "accept_unsigned = true\n");
    let rig = Rig::start(&providers, &[(Channel::Sms, &["vonage"])], port).await;
    let receipt = [("msisdn", "15550000007"), ("messageId", "0A1"), ("status", "failed"), ("err-code", "3")];
    let get = |provider: &str| {
        let url = format!("{}/callbacks/{provider}/receipts", rig.base);
        let http = rig.http.clone();
        async move { http.get(url).query(&receipt).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("vonage").await, 401, "no secret to check it with");
    assert_eq!(get("vonage_open").await, 200, "taken unsigned, as configured");
    harness::eventually("the number listed", WAIT, Duration::from_millis(50), || async {
        rig.listed("+15550000007").await == Some(Cause::HardBounce)
    })
    .await;
}

/// A secret that checks callbacks or signs tokens must be one: empty,
/// short and placeholder values stop the role at start, naming the setting
/// and never printing the value.
#[test]
fn weak_callback_secrets_stop_the_role_at_start() {
    let base = "[kafka]\nbootstrap_servers = \"k:9092\"\n";
    let twilio = |token: &str| {
        format!("{base}[providers.t]\nkind = \"twilio\"\naccount_sid = \"AC1\"\nauth_token = \"{token}\"\nfrom = \"+15550001111\"\n")
    };
    let vonage = |secret: &str| {
        format!("{base}[providers.v]\nkind = \"vonage\"\napi_key = \"k\"\napi_secret = \"s\"\nfrom = \"Shop\"\nsignature_secret = \"{secret}\"\n")
    };
    for (text, setting, value) in [
        (twilio(""), "auth_token", ""),
        (twilio("0123456789"), "auth_token", "0123456789"),
        (twilio("replace-me-0123456789abcdef"), "auth_token", "replace-me-0123456789abcdef"),
        (vonage(""), "signature_secret", ""),
        (vonage("changeme-changeme-changeme"), "signature_secret", "changeme-changeme-changeme"),
        (vonage("at least 16 bytes of random"), "signature_secret", "at least 16 bytes of random"),
        (twilio("${TWILIO_AUTH_TOKEN}"), "auth_token", "${TWILIO_AUTH_TOKEN}"),
        (twilio("<your auth token here>"), "auth_token", "<your auth token here>"),
        (twilio("replace with a real secret"), "auth_token", "replace with a real secret"),
        (twilio("abababababababababab"), "auth_token", "abababababababababab"),
    ] {
        let config = tidings_core::Config::from_toml(&text).unwrap();
        let refused = match tidings_callbacks::verify::verifiers(&config) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{setting} = {value:?} was taken"),
        };
        assert!(refused.contains(setting), "{refused}");
        assert!(value.is_empty() || !refused.contains(value), "{refused}");
    }
    let good = tidings_core::Config::from_toml(&twilio("a3f1c09e7b5d4e2f8a6c1b0d9e7f5a3c")).unwrap();
    assert!(tidings_callbacks::verify::verifiers(&good).is_ok());

    // The placeholder key of `deploy/secret.yaml` signs no unsubscribe token.
    let shipped = format!(
        "{base}[unsubscribe]\nurl = \"https://hooks.shop.example/u\"\nkeys = [{{ id = \"2026-11\", secret = \"replace-me-with-32-random-bytes\" }}]\n"
    );
    let refused = tidings_core::Config::from_toml(&shipped).unwrap_err().to_string();
    assert!(refused.contains("unsubscribe.keys") && !refused.contains("replace-me-with"), "{refused}");
}

/// SendGrid's `unsubscribe` and `group_unsubscribe` (its own footer link or
/// an ASM group) opt the user out of the categories that carry unsubscribe
/// links, as the one-click link does; the address is not listed, so the
/// user's password resets and order confirmations still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sendgrid_unsubscribe_opts_out_of_marketing_and_lists_nothing() {
    let port = free_port();
    let sendgrid = fakes::sendgrid().await;
    let providers = format!(
        "{}webhook_verification_key = \"{SENDGRID_PUBLIC}\"\n",
        harness::sendgrid_provider(&sendgrid.server.uri(), "5s")
    );
    let rig = Rig::start(&providers, &[(Channel::Email, &["sendgrid"])], port).await;
    let config = rig.config.clone();
    tidings::commands::dev::feed(&config, &(order(1, "u-1") + &order(2, "u-2"))).await.unwrap();
    let (u1_mail, u2_mail) = (id(1, Channel::Email, "u-1"), id(2, Channel::Email, "u-2"));
    for n in [&u1_mail, &u2_mail] {
        rig.watch.wait_for_status(n, State::Sent, WAIT).await;
    }
    let now = chrono::Utc::now().timestamp().to_string();
    let batch = serde_json::json!([
        {"email": "a1@example.com", "event": "unsubscribe", "notification_id": u1_mail},
        {"email": "b2@example.com", "event": "group_unsubscribe", "asm_group_id": 7, "notification_id": u2_mail},
        {"email": "c3@example.com", "event": "unsubscribe", "notification_id": "n-forgotten"}
    ])
    .to_string();
    assert_eq!(rig.sendgrid_post(&batch, &now, &sendgrid_sign(&now, &batch)).await, 200);
    for user in ["u-1", "u-2"] {
        harness::eventually("the user opted out of marketing", WAIT, Duration::from_millis(50), || async {
            let prefs = rig.store.prefs_many(&[user.to_string()]).await.unwrap().pop().flatten().unwrap();
            let prefs: serde_json::Value = serde_json::from_str(&prefs).unwrap();
            prefs["opt_out"] == serde_json::json!(["marketing"])
        })
        .await;
    }
    // One on a notification no longer remembered has no user to opt out: its address is listed.
    harness::eventually("the address listed", WAIT, Duration::from_millis(50), || async {
        rig.listed("c3@example.com").await == Some(Cause::Unsubscribe)
    })
    .await;
    assert_eq!(rig.listed("a1@example.com").await, None, "not listed for every email");
    assert_eq!(rig.listed("b2@example.com").await, None);
    // The next order confirmation goes out; a campaign does not.
    tidings::commands::dev::feed(&config, &(order(3, "u-1") + &campaign(4, "u-1"))).await.unwrap();
    rig.watch.wait_for_status(&id(3, Channel::Email, "u-1"), State::Sent, WAIT).await;
    let campaign = rig.watch.wait_for_status(&id(4, Channel::Email, "u-1"), State::Suppressed, WAIT).await;
    assert!(campaign.error.as_deref().unwrap_or_default().contains("opted out"), "{:?}", campaign.error);
}

/// What a client sent to `port` got back within `deadline`: the text of the
/// answer, or `None` when the server said nothing and kept the connection.
async fn answer_to(port: u16, request: &[u8], deadline: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut got = vec![0; 4096];
    match tokio::time::timeout(deadline, stream.read(&mut got)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&got[..n]).into_owned()),
        Ok(Err(e)) => Some(format!("closed: {e}")),
        Err(_) => None,
    }
}

/// The role is on the internet: a client that sends headers slowly, a body
/// too large or that trickles, or a body for no provider holds nothing for
/// long, and a genuine callback gets through while the slots are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_large_requests_are_cut_off_and_genuine_callbacks_get_through() {
    let port = free_port();
    let twilio = fakes::twilio().await;
    let providers = twilio_section(&twilio.uri());
    let rig = Rig::start_with(&providers, &[(Channel::Sms, &["twilio"])], port, |c| {
        c.callbacks.max_connections = 8;
        c.callbacks.header_timeout = Duration::from_secs(1);
        c.callbacks.request_timeout = Duration::from_secs(2);
        c.callbacks.body_budget = 100 * 1024;
        c.callbacks.max_body.batch = 100 * 1024;
    })
    .await;
    let soon = Duration::from_secs(10);

    // Headers that never end: each connection is closed after the header timeout.
    let slow = tokio::task::JoinSet::from_iter(
        (0..8).map(|_| answer_to(port, b"POST /callbacks/twilio/inbound HTTP/1.1\r\nHost: x\r\nX-Slow:", soon)),
    );
    // Meanwhile a genuine STOP waits for a slot and is answered.
    let inbound = format!("{}/callbacks/twilio/inbound", rig.base);
    let stop = [("From", "+15550000005"), ("To", "+15550001111"), ("Body", "STOP"), ("MessageSid", "SM50")];
    assert_eq!(rig.twilio_post(&inbound, &stop, Some(TWILIO_TOKEN)).await, 200);
    for held in slow.join_all().await {
        assert!(held.is_some(), "a connection that never finished its headers was kept open");
    }

    // A body larger than a form may be: 413, without its bytes being sent.
    let large = b"POST /callbacks/twilio/inbound HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200000\r\n\r\n";
    let said = answer_to(port, large, soon).await.expect("an answer to a body too large");
    assert!(said.starts_with("HTTP/1.1 413"), "{said}");
    // For no provider: 404 before any of the body is read.
    let nobody = b"POST /callbacks/nobody/inbound HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n";
    let said = answer_to(port, nobody, soon).await.expect("an answer for no provider");
    assert!(said.starts_with("HTTP/1.1 404"), "{said}");
    // Two bodies that would take more than the budget at once: the second is 503 at once.
    let announced = b"POST /callbacks/twilio/inbound HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\nFrom=";
    let first = tokio::spawn(answer_to(port, announced, soon));
    harness::eventually("the first body to be read", soon, Duration::from_millis(20), || async {
        let said = answer_to(port, announced, Duration::from_secs(1)).await;
        said.is_some_and(|s| s.starts_with("HTTP/1.1 503"))
    })
    .await;
    // The body being read when the other was refused ends 408 (it stopped short), unless the
    // refused one was the first to arrive.
    let said = first.await.unwrap().expect("the first body's answer");
    assert!(said.starts_with("HTTP/1.1 408") || said.starts_with("HTTP/1.1 503"), "{said}");
    // A body that trickles and stops: 408 once the request timeout passes.
    let trickle = b"POST /callbacks/twilio/inbound HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nFrom=%2B1555";
    let said = answer_to(port, trickle, soon).await.expect("an answer to a body that stopped");
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");

    harness::eventually("the STOP applied", WAIT, Duration::from_millis(50), || async {
        rig.listed("+15550000005").await == Some(Cause::Stop)
    })
    .await;
}

/// Feedback about a notification counts only from the provider that sent
/// it: another account's callback (here one taken unsigned, as forgeable as
/// any) neither records a state nor makes the genuine one a "duplicate".
/// A parameter longer than any provider sends is refused (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feedback_counts_only_from_the_provider_that_sent_the_notification() {
    let port = free_port();
    let twilio = fakes::twilio().await;
    let providers = format!(
        "\n[providers.twilio]\nkind = \"twilio\"\nbase_url = \"{}\"\naccount_sid = \"AC123\"\nauth_token = \"{TWILIO_TOKEN}\"\n\
         from = \"+15550001111\"\nstatus_callback = \"http://127.0.0.1:{port}/callbacks/twilio/status\"\n\
         \n[providers.vonage]\nkind = \"vonage\"\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"k\"\napi_secret = \"s\"\n\
         from = \"Shop\"\naccept_unsigned = true\n",
        twilio.uri()
    );
    let mut rig = Rig::start(&providers, &[(Channel::Sms, &["twilio"])], port).await;
    tidings::commands::dev::feed(&rig.config, &order(1, "u-3")).await.unwrap();
    let sms = id(1, Channel::Sms, "u-3");
    rig.watch.wait_for_status(&sms, State::Sent, WAIT).await;

    let receipt = |message_id: &str| {
        vec![
            ("msisdn".to_string(), "15550000003".to_string()),
            ("messageId".to_string(), message_id.to_string()),
            ("status".to_string(), "failed".to_string()),
            ("err-code".to_string(), "1".to_string()),
            ("client-ref".to_string(), sms.clone()),
        ]
    };
    let vonage = format!("{}/callbacks/vonage/receipts", rig.base);
    let post = |params: Vec<(String, String)>| {
        let (http, url) = (rig.http.clone(), vonage.clone());
        async move { http.post(url).form(&params).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post(receipt("0A1")).await, 200, "taken, as configured");
    assert_eq!(post(receipt(&"9".repeat(5000))).await, 400, "a message id no provider sends");
    let status_url = format!("http://127.0.0.1:{port}/callbacks/twilio/status?n={sms}");
    let undelivered =
        [("MessageSid", "SM1"), ("MessageStatus", "undelivered"), ("ErrorCode", "30003"), ("To", "+15550000003")];
    assert_eq!(rig.twilio_post(&status_url, &undelivered, Some(TWILIO_TOKEN)).await, 200);
    let records = rig.drained(&["u-3"]).await;
    let undelivered: Vec<_> =
        records.iter().filter(|r| r.notification_id == sms && r.state == State::Undelivered).collect();
    assert_eq!(undelivered.len(), 1, "{undelivered:?}");
    assert_eq!(undelivered[0].provider.as_deref(), Some("twilio"));
    assert_eq!(undelivered[0].provider_code.as_deref(), Some("30003"));
}

/// The role is on the internet; its probes are for the cluster. With a
/// metrics listener (which serves them), the public listener has none;
/// without one, the probes are on the public listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probes_stay_off_the_public_listener_when_the_metrics_listener_serves_them() {
    let rig = Rig::start("", &[], free_port()).await;
    let public = rig.http.get(format!("{}/healthz", rig.base)).send().await.unwrap();
    assert_eq!(public.status().as_u16(), 200, "no metrics listener: the probes are here");

    // A `tidings callbacks` process with a metrics listener.
    let infra = Infra::start();
    let dir = tempfile::tempdir().unwrap();
    let (public, private) = (free_port(), free_port());
    let replace = [
        ("listen = \"0.0.0.0:8080\"", format!("listen = \"127.0.0.1:{public}\"")),
        ("listen = \"127.0.0.1:0\"", format!("listen = \"127.0.0.1:{private}\"")),
    ];
    let replace: Vec<(&str, &str)> = replace.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let file = harness::config_file(dir.path(), "", "", &replace);
    let _role = infra.spawn(&file, &["callbacks"]);
    let get = |port: u16| {
        let http = rig.http.clone();
        async move { http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.map(|r| r.status().as_u16()) }
    };
    harness::eventually("the metrics listener to answer", WAIT, Duration::from_millis(100), || async {
        get(private).await.is_ok_and(|s| s == 200)
    })
    .await;
    assert_eq!(get(public).await.unwrap(), 404, "not on the public listener");
}
