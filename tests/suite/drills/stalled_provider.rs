//! A provider that takes a message and then stalls past its timeout: the
//! answer never comes, but the message may well be delivered. It is never
//! sent through the next provider. A normal message (`at_most_once`) ends
//! `unconfirmed` with the reason; a critical one (`at_least_once`) is retried
//! on the same provider only, and the second copy is counted.

use super::{all_ended, Expected, Tally};
use crate::harness::smtp::SmtpServer;
use crate::harness::{self, fakes, order_event, Infra, StatusWatch};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::notification::notification_id;
use tidings_core::{Channel, Clock, State};

const USERS: usize = 50;
const ORDERS: usize = 100;
const STALLED: usize = 10;
const RESETS: usize = 5;
const STALLED_RESETS: usize = 3;

fn reset_event(i: usize) -> String {
    serde_json::json!({
        "specversion": "1.0", "id": format!("reset-{i}"), "type": "account.password_reset", "source": "/auth",
        "data": {"user_id": format!("u-{i}"), "reset_url": "https://shop.example/reset?t=1", "expires_in_minutes": 30, "requested_ip": "203.0.113.7"}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_that_accepts_then_stalls_never_gets_the_message_resent_elsewhere() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let sendgrid = fakes::sendgrid().await;
    let providers = harness::sendgrid_provider(&sendgrid.server.uri(), "1s")
        + &harness::smtp_and_twilio(smtp.port, "http://127.0.0.1:9");
    let mut config = infra.config(&providers, &[(Channel::Email, &["sendgrid", "smtp"])]);
    // The breaker stays closed: every message meets the stall on its own.
    config.worker.breaker.min_calls = 10_000;
    config.worker.retry.attempts = 2;
    config.worker.retry.passes = 1;
    let config = Arc::new(config);
    let store = harness::store_with_email_users(&config, USERS).await;
    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();
    *sendgrid.state.stall_for.lock().unwrap() = Duration::from_secs(3);

    // Normal priority: at most once.
    sendgrid.state.stall_next.store(STALLED, Ordering::SeqCst);
    let events: String = (0..ORDERS).map(|seq| order_event(seq, &format!("u-{}", seq % USERS)) + "\n").collect();
    tidings::commands::dev::feed(&config, &events).await.unwrap();
    let orders = Expected::orders(0, ORDERS, USERS, Channel::Email);
    let records = watch.wait_until("every order to end", Duration::from_secs(90), all_ended(&orders)).await;
    let stalled: HashSet<String> = sendgrid.state.accepted().into_iter().take(STALLED).collect();
    let at_smtp = || -> Vec<String> {
        smtp.received()
            .iter()
            .map(|m| m.header("Message-ID").unwrap().trim_matches(['<', '>']).trim_end_matches("@tidings").to_string())
            .collect()
    };
    let mut arrivals = sendgrid.state.accepted();
    arrivals.extend(at_smtp());
    let tally = Tally::of(&orders, &arrivals, &records);
    tally.assert_kept("stalled-provider (normal, at most once)");
    assert_eq!(tally.unconfirmed, STALLED, "each stalled message ends unconfirmed");
    for r in records.iter().filter(|r| r.state == State::Unconfirmed) {
        assert!(stalled.contains(&r.notification_id), "only a stalled message is unconfirmed");
        assert!(r.error.as_deref().unwrap_or_default().contains("not sent again"), "{:?}", r.error);
    }
    assert!(at_smtp().iter().all(|id| !stalled.contains(id)), "no stalled message went through SMTP");

    // Critical: at least once, on the same provider only.
    sendgrid.state.stall_next.store(STALLED_RESETS, Ordering::SeqCst);
    let before = sendgrid.state.accepted().len();
    let resets: String = (0..RESETS).map(|i| reset_event(i) + "\n").collect();
    tidings::commands::dev::feed(&config, &resets).await.unwrap();
    let ids: Vec<String> = (0..RESETS)
        .map(|i| notification_id("/auth", &format!("reset-{i}"), Channel::Email, &format!("u-{i}")))
        .collect();
    let records = watch
        .wait_until("every reset sent", Duration::from_secs(90), |rs| {
            ids.iter().all(|id| rs.iter().any(|r| &r.notification_id == id && r.state == State::Sent))
        })
        .await;
    let at_sendgrid: Vec<String> = sendgrid.state.accepted().split_off(before);
    let twice = ids.iter().filter(|id| at_sendgrid.iter().filter(|a| a == id).count() == 2).count();
    println!("drill stalled-provider (critical, at least once): messages {RESETS} | sent twice {twice}, all by the stalled provider");
    assert_eq!(twice, STALLED_RESETS, "each stalled reset was retried once on SendGrid, and counted");
    assert!(at_smtp().iter().all(|id| !ids.contains(id)), "no reset went through SMTP");
    assert_eq!(
        harness::terminal_counts(&records).iter().filter(|(id, _)| ids.contains(id)).map(|(_, n)| *n).sum::<usize>(),
        RESETS
    );
    fleet.shutdown().await.unwrap();
}
