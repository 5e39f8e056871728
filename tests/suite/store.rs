//! The store's semantics, checked the same way against a real `redis-server`,
//! a real three-node Redis Cluster, and the in-process store `tidings dev`
//! falls back to.

use crate::harness;
use chrono::{DateTime, Duration as Span, Utc};
use std::collections::HashSet;
use std::time::Duration;
use tidings::embedded::{RedisCluster, RedisServer};
use tidings_core::store::{
    holder, lane, pinned_to, Claim, Claimed, MemoryStore, Placed, RedisStore, Store, StoreError, CLAIM_MARK,
};
use tidings_core::suppression::{Cause, Suppression};
use tidings_core::Channel;

async fn with_each(check: impl AsyncFn(&dyn Store)) {
    let server = RedisServer::start().unwrap();
    let redis = RedisStore::connect(&server.url(), "t").await.unwrap();
    check(&redis).await;
    let cluster = RedisCluster::start().unwrap();
    let clustered = RedisStore::connect(&cluster.url(), "t").await.unwrap();
    check(&clustered).await;
    check(&MemoryStore::new()).await;
}

#[tokio::test]
async fn many_tails_each_change_only_where_the_value_ends_with_them() {
    with_each(async |store: &dyn Store| {
        let lease = Duration::from_secs(30);
        for (id, record) in [("a", "{\"by\":\"w\",\"p\":0}"), ("b", "{\"by\":\"v\",\"p\":0}")] {
            store.claim(id, "w", lease).await.unwrap();
            assert!(store.finish(id, "w", record, lease).await.unwrap());
        }
        let tail = |by: &str, p: u8| format!("\"by\":\"{by}\",\"p\":{p}}}");
        let swaps =
            [("a", tail("w", 0), tail("w", 1)), ("b", tail("w", 0), tail("w", 1)), ("c", tail("w", 0), tail("w", 1))];
        let swaps: Vec<_> = swaps.into_iter().map(|(i, t, n)| (i.to_string(), t, n)).collect();
        store.swap_tails(&swaps).await.unwrap();
        assert_eq!(store.dedupe_value("a").await.unwrap().as_deref(), Some("{\"by\":\"w\",\"p\":1}"));
        assert_eq!(store.dedupe_value("b").await.unwrap().as_deref(), Some("{\"by\":\"v\",\"p\":0}"), "another end");
        assert_eq!(store.dedupe_value("c").await.unwrap(), None, "nothing written where nothing was");
        store.swap_tails(&[]).await.unwrap();
    })
    .await;
}

/// A changed end keeps the value's time to live.
#[tokio::test]
async fn a_changed_tail_keeps_the_time_to_live() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url(), "t").await.unwrap();
    let lease = Duration::from_secs(30);
    store.claim("a", "w", lease).await.unwrap();
    assert!(store.finish("a", "w", "{\"p\":0}", Duration::from_secs(600)).await.unwrap());
    store.swap_tails(&[("a".into(), "0}".into(), "1}".into())]).await.unwrap();
    let mut conn = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let (value, ttl): (String, i64) =
        redis::pipe().get("t:dedupe:a").pttl("t:dedupe:a").query_async(&mut conn).await.unwrap();
    assert_eq!(value, "{\"p\":1}");
    assert!((590_000..=600_000).contains(&ttl), "{ttl} ms left");
}

/// Many deliveries at once (the Redis store sends them in batches): each
/// claim and each swap gets its own answer, whatever else was in its batch.
#[tokio::test]
async fn concurrent_claims_and_swaps_each_get_their_own_answer() {
    with_each(async |store: &dyn Store| {
        let lease = Duration::from_secs(30);
        store.set_prefs("u-1", r#"{"user_id":"u-1"}"#).await.unwrap();
        assert_eq!(store.claim("done", "w", lease).await.unwrap(), Claim::Acquired);
        assert!(store.finish("done", "w", "{\"sent\":1}", lease).await.unwrap());
        assert_eq!(store.claim("held", "w", lease).await.unwrap(), Claim::Acquired);
        // 300 new claims (a third reading preferences, one user without any), and 100 on each of the others.
        let asks = (0..600).map(|i| async move {
            let (id, owner) = match i % 6 {
                0..=2 => (format!("n{i}"), "x".to_string()),
                3 => ("done".to_string(), format!("x{i}")),
                4 => ("held".to_string(), format!("x{i}")),
                _ => ("held".to_string(), "w".to_string()),
            };
            let user = ["u-1", "u-2", ""][i % 3];
            let answer = if user.is_empty() {
                (store.claim(&id, &owner, lease).await.unwrap(), None)
            } else {
                let c = store.claim_for_delivery(&id, &owner, lease, user, None).await.unwrap();
                (c.claim, c.prefs)
            };
            (i, answer)
        });
        for (i, (claim, prefs)) in futures::future::join_all(asks).await {
            let expected = match i % 6 {
                0..=2 => Claim::Acquired,
                3 => Claim::Done("{\"sent\":1}".into()),
                4 => Claim::Held,
                _ => Claim::Acquired,
            };
            assert_eq!(claim, expected, "claim {i}");
            let read = claim == Claim::Acquired && i % 3 == 0;
            assert_eq!(
                prefs.is_some(),
                read,
                "claim {i}: preferences are read for a claim had, of a user who has them"
            );
        }
        // Half the new claims end, the other half are compared with a value they do not have.
        let swaps = (0..600).filter(|i| i % 6 <= 2).map(|i| async move {
            let id = format!("n{i}");
            let expected = if i % 2 == 0 { format!("{CLAIM_MARK}x") } else { "{}".to_string() };
            (i, store.swap(&id, &expected, Some(&format!("{{\"n\":{i}}}")), lease).await.unwrap())
        });
        for (i, done) in futures::future::join_all(swaps).await {
            assert_eq!(done, i % 2 == 0, "swap {i}");
            let value = store.dedupe_value(&format!("n{i}")).await.unwrap().unwrap();
            assert_eq!(value.starts_with(CLAIM_MARK), i % 2 == 1, "n{i}: {value}");
        }
    })
    .await;
}

/// Scripts are called by their hash: one the server forgot (it restarted,
/// or its scripts were flushed) is loaded again, and the call goes through.
#[tokio::test]
async fn a_script_the_server_forgot_is_loaded_again() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url(), "t").await.unwrap();
    let lease = Duration::from_secs(30);
    assert_eq!(store.claim("a", "w", lease).await.unwrap(), Claim::Acquired);
    let mut conn = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    assert_eq!(store.claim("b", "w", lease).await.unwrap(), Claim::Acquired);
    assert!(store.finish("b", "w", "{}", lease).await.unwrap());
    let () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    store.swap_tails(&[("b".into(), "{}".into(), "{\"p\":1}".into())]).await.unwrap();
    assert_eq!(store.dedupe_value("b").await.unwrap().as_deref(), Some("{\"p\":1}"));
}

/// A cluster named by any one of its nodes is used as a cluster: claims of
/// ids spread over every node go through (a plain connection to that node
/// would be told to go elsewhere), and a ping reaches every node.
#[tokio::test]
async fn a_cluster_named_by_one_node_is_found_and_pinged_whole() {
    let mut cluster = RedisCluster::start().unwrap();
    let first = cluster.url().split(',').next().unwrap().to_string();
    let store = RedisStore::connect(&first, "t").await.unwrap();
    let lease = Duration::from_secs(30);
    for i in 0..50 {
        assert_eq!(store.claim(&format!("n{i}"), "w", lease).await.unwrap(), Claim::Acquired, "n{i}");
    }
    store.ping().await.unwrap();
    cluster.stop_node(2);
    // The others see it gone once the node timeout (5 s here) has passed.
    harness::eventually(
        "the ping to fail with a node gone",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { !tokio::time::timeout(Duration::from_secs(2), store.ping()).await.is_ok_and(|p| p.is_ok()) },
    )
    .await;
}

/// On a cluster, claims asked at once go as one script call per slot; a
/// group whose script fails (here every write to one node is refused, the
/// node out of memory) fails the claims of its slots only. On the code
/// before, one failing group failed the whole batch, and every claim the
/// other nodes had answered was retried: a retry reads what the first run
/// changed (a claim it took over reads `Acquired`, an outcome it recorded
/// reads "claim lost").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_node_fails_only_the_claims_of_its_slots() {
    let cluster = RedisCluster::start().unwrap();
    let store = RedisStore::connect(&cluster.url(), "t").await.unwrap();
    let lease = Duration::from_secs(30);
    // The third node serves slots 10923-16383: 20 of the keys `t:dedupe:n0` … `t:dedupe:n59`.
    let third = cluster.url().split(',').nth(2).unwrap().to_string();
    let mut node = redis::Client::open(third).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1).query_async(&mut node).await.unwrap();
    let ids: Vec<String> = (0..60).map(|i| format!("n{i}")).collect();
    let answers = futures::future::join_all(
        ids.iter().map(|id| tokio::time::timeout(Duration::from_secs(30), store.claim(id, "w", lease))),
    )
    .await;
    let acquired = answers.iter().filter(|a| matches!(a, Ok(Ok(Claim::Acquired)))).count();
    let failed = answers.iter().filter(|a| matches!(a, Ok(Err(_)))).count();
    assert_eq!((acquired, failed), (40, 20), "{answers:?}");
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[tokio::test]
async fn claims_exclude_other_owners_until_an_outcome_or_expiry() {
    with_each(async |store: &dyn Store| {
        let lease = Duration::from_secs(30);
        assert_eq!(store.claim("n1", "w1", lease).await.unwrap(), Claim::Acquired);
        assert_eq!(store.claim("n1", "w1", lease).await.unwrap(), Claim::Acquired, "the owner renews");
        assert_eq!(store.claim("n1", "w2", lease).await.unwrap(), Claim::Held);
        assert!(!store.finish("n1", "w2", "{\"sent\":2}", lease).await.unwrap(), "only the holder records");
        assert!(store.finish("n1", "w1", "{\"sent\":1}", lease).await.unwrap());
        assert_eq!(store.claim("n1", "w2", lease).await.unwrap(), Claim::Done("{\"sent\":1}".into()));
        assert!(!store.renew("n1", "w1", lease).await.unwrap(), "an outcome is no claim to renew");
        assert!(store.swap("n1", "{\"sent\":1}", Some("{\"sent\":1,\"p\":1}"), lease).await.unwrap());
        assert!(!store.swap("n1", "{\"sent\":1}", Some("{}"), lease).await.unwrap(), "compared with what is there");
        assert_eq!(store.dedupe_value("n1").await.unwrap().as_deref(), Some("{\"sent\":1,\"p\":1}"));
        assert!(store.swap("n1", "{\"sent\":1,\"p\":1}", None, lease).await.unwrap(), "forgotten");
        assert_eq!(store.dedupe_value("n1").await.unwrap(), None);
        assert_eq!(store.claim("n1", "w2", lease).await.unwrap(), Claim::Acquired);
        assert!(store.dedupe_value("n1").await.unwrap().unwrap().starts_with(CLAIM_MARK), "a claim");

        assert_eq!(store.claim("n2", "w1", Duration::from_millis(100)).await.unwrap(), Claim::Acquired);
        assert_eq!(store.claim("n2", "w2", lease).await.unwrap(), Claim::Held);
        assert!(store.renew("n2", "w1", Duration::from_millis(400)).await.unwrap(), "the holder renews");
        harness::eventually(
            "the expired claim to be taken over",
            Duration::from_secs(5),
            Duration::from_millis(20),
            || async { store.claim("n2", "w2", lease).await.unwrap() == Claim::TakenOver { pinned: None } },
        )
        .await;
        // w2 claiming again (a retry whose first answer was lost) still learns that w1 stopped part-way.
        let taken = Claim::TakenOver { pinned: None };
        assert_eq!(store.claim("n2", "w2", lease).await.unwrap(), taken, "a retry of the takeover");
        let w2 = holder("w2", &taken);
        assert!(store.renew("n2", &w2, lease).await.unwrap(), "held as the takeover's holder");
        assert_eq!(store.claim("n2", "w2", lease).await.unwrap(), taken, "a renewed takeover is one still");
        // w1 lost its claim: it can neither renew it nor record an outcome over w2's.
        assert!(!store.renew("n2", "w1", lease).await.unwrap());
        assert!(!store.finish("n2", "w1", "{}", lease).await.unwrap());
        assert!(!store.release("n2", "w1").await.unwrap());
        assert!(store.release("n2", &w2).await.unwrap(), "the holder gives its claim up");
        // A claim taken over and handed on (its delivery stopped): the next holder takes it over at once.
        assert_eq!(store.claim("n3", "w1", Duration::from_millis(100)).await.unwrap(), Claim::Acquired);
        harness::eventually(
            "w1's claim to be taken over",
            Duration::from_secs(5),
            Duration::from_millis(20),
            || async { store.claim("n3", "w2", lease).await.unwrap() == taken },
        )
        .await;
        assert!(store.pin("n3", &holder("w2", &taken), "").await.unwrap(), "handed on as taken over");
        assert_eq!(store.claim("n3", "w3", lease).await.unwrap(), taken, "at once, without a pin");
        assert_eq!(store.claim("n2", "w3", lease).await.unwrap(), Claim::Acquired);

        // A claim given up pinned by an ambiguous answer is taken over at once, with its pin.
        assert!(!store.pin("n2", "w2", "sendgrid").await.unwrap(), "only the holder pins");
        assert!(store.pin("n2", "w3", "sendgrid").await.unwrap());
        let pinned = Claim::TakenOver { pinned: Some("sendgrid".into()) };
        assert_eq!(store.claim("n2", "w4", Duration::from_millis(300)).await.unwrap(), pinned);
        assert_eq!(store.claim("n2", "w4", Duration::from_millis(300)).await.unwrap(), pinned, "a retry keeps the pin");
        assert_eq!(store.dedupe_value("n2").await.unwrap().as_deref().and_then(pinned_to).as_deref(), Some("sendgrid"));
        assert_eq!(store.claim("n2", "w5", lease).await.unwrap(), Claim::Held, "w4 holds it now");
        // w4 stops without giving it up: the pin outlives it.
        harness::eventually(
            "w4's claim to be taken over",
            Duration::from_secs(5),
            Duration::from_millis(20),
            || async { store.claim("n2", "w5", lease).await.unwrap() == pinned },
        )
        .await;
        assert!(store.pin("n2", &holder("w5", &pinned), "sendgrid").await.unwrap(), "held as the takeover's holder");
    })
    .await;
}

/// A claim had reads the user's preferences and the address's list entry
/// with it; one not had reads nothing.
#[tokio::test]
async fn a_claim_brings_the_users_preferences_and_the_list_entry_along() {
    with_each(async |store: &dyn Store| {
        let lease = Duration::from_secs(30);
        store.set_prefs("u-1", r#"{"user_id":"u-1"}"#).await.unwrap();
        let listed = entry("ana@example.com", Cause::HardBounce);
        store.suppress(&listed).await.unwrap();
        let ana = Some("ana@example.com");
        let c = store.claim_for_delivery("n1", "w1", lease, "u-1", ana).await.unwrap();
        assert_eq!(
            c,
            Claimed {
                claim: Claim::Acquired,
                prefs: Some(r#"{"user_id":"u-1"}"#.into()),
                suppressed: Some(listed.clone())
            }
        );
        let nothing = |claim| Claimed { claim, prefs: None, suppressed: None };
        assert_eq!(store.claim_for_delivery("n1", "w2", lease, "u-1", ana).await.unwrap(), nothing(Claim::Held));
        assert_eq!(
            store.claim_for_delivery("n2", "w1", lease, "u-2", Some("bo@example.com")).await.unwrap(),
            nothing(Claim::Acquired)
        );
        assert!(store.finish("n1", "w1", "{}", lease).await.unwrap());
        assert_eq!(
            store.claim_for_delivery("n1", "w2", lease, "u-1", ana).await.unwrap(),
            nothing(Claim::Done("{}".into()))
        );
    })
    .await;
}

fn entry(address: &str, cause: Cause) -> Suppression {
    let (channel, address) = tidings_core::suppression::normalize(address).unwrap();
    Suppression {
        address,
        channel,
        cause,
        reason: "said so".into(),
        source: "test".into(),
        at: at("2026-11-27T10:00:00Z"),
    }
}

/// The list keeps one entry an address, the latest; every entry is listed
/// once across pages; a removed one is gone.
#[tokio::test]
async fn the_suppression_list_adds_replaces_pages_and_removes() {
    with_each(async |store: &dyn Store| {
        for i in 0..250 {
            store.suppress(&entry(&format!("user{i}@example.com"), Cause::Complaint)).await.unwrap();
        }
        let stop = entry("+33612345678", Cause::Stop);
        store.suppress(&entry("+33612345678", Cause::HardBounce)).await.unwrap();
        store.suppress(&stop).await.unwrap();
        assert_eq!(store.suppression("+33612345678").await.unwrap(), Some(stop), "the latest entry wins");
        let (mut cursor, mut all, mut pages) = (0, Vec::new(), 0);
        loop {
            let (next, page) = store.suppressions(cursor).await.unwrap();
            all.extend(page.into_iter().map(|e| e.address));
            pages += 1;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!((all.len(), distinct.len()), (251, 251));
        assert!(pages > 1, "a list this long comes in pages");
        assert!(store.unsuppress("user7@example.com").await.unwrap());
        assert!(!store.unsuppress("user7@example.com").await.unwrap(), "already off");
        assert_eq!(store.suppression("user7@example.com").await.unwrap(), None);
    })
    .await;
}

/// An operator's entry is replaced by no provider's word, only by another
/// operator's; lifting for a cause lifts an entry of that cause only, made
/// no later than the lift's time (a late START leaves a later STOP).
#[tokio::test]
async fn an_operators_entry_outlasts_providers_and_a_lift_takes_only_its_own_cause() {
    with_each(async |store: &dyn Store| {
        let manual = entry("+33612345678", Cause::Manual);
        assert!(store.suppress(&manual).await.unwrap());
        assert!(!store.suppress(&entry("+33612345678", Cause::Stop)).await.unwrap(), "a STOP does not replace it");
        assert!(!store.suppress(&entry("+33612345678", Cause::HardBounce)).await.unwrap());
        let later = at("2026-11-27T10:00:01Z");
        assert!(!store.lift("+33612345678", Cause::Stop, later).await.unwrap(), "START does not lift it");
        assert_eq!(store.suppression("+33612345678").await.unwrap(), Some(manual));
        let again = Suppression { reason: "fraud ticket 124".into(), ..entry("+33612345678", Cause::Manual) };
        assert!(store.suppress(&again).await.unwrap(), "an operator's entry replaces another");
        assert_eq!(store.suppression("+33612345678").await.unwrap(), Some(again));

        let bounced = entry("+33698765432", Cause::HardBounce);
        store.suppress(&bounced).await.unwrap();
        assert!(!store.lift("+33698765432", Cause::Stop, later).await.unwrap(), "a bounce is no STOP");
        assert_eq!(store.suppression("+33698765432").await.unwrap(), Some(bounced));
        // A STOP at 10:00:00.5, by a time with a fraction as entries are written.
        let stop = Suppression { at: at("2026-11-27T10:00:00.5Z"), ..entry("+33698765432", Cause::Stop) };
        assert!(store.suppress(&stop).await.unwrap(), "the latest provider's word wins");
        let earlier = at("2026-11-27T10:00:00.25Z");
        assert!(!store.lift("+33698765432", Cause::Stop, earlier).await.unwrap(), "a START before the STOP, late");
        assert!(!store.lift("+33698765432", Cause::Stop, at("2026-11-27T10:00:00Z")).await.unwrap());
        assert!(store.lift("+33698765432", Cause::Stop, at("2026-11-27T10:00:00.5Z")).await.unwrap(), "the same time");
        assert_eq!(store.suppression("+33698765432").await.unwrap(), None);
        assert!(!store.lift("+33698765432", Cause::Stop, later).await.unwrap(), "nothing left to lift");
        assert!(store.unsuppress("+33612345678").await.unwrap(), "an operator removes any entry");
    })
    .await;
}

/// Soft bounces count within a window that the first one starts, each
/// once however often it is told; a sighting is first for whoever saw it
/// first while it is remembered; preferences swap only from what they are;
/// webhook keys are made once and swap only from what they are.
#[tokio::test]
async fn soft_bounces_count_in_a_window_and_sightings_are_first_once() {
    with_each(async |store: &dyn Store| {
        let window = Duration::from_millis(400);
        assert_eq!(store.soft_bounce("a@example.com", "cb/0/1", window).await.unwrap(), 1);
        assert_eq!(store.soft_bounce("a@example.com", "cb/0/1", window).await.unwrap(), 1, "told again");
        assert_eq!(store.soft_bounce("a@example.com", "cb/0/2", window).await.unwrap(), 2);
        assert_eq!(store.soft_bounce("b@example.com", "cb/0/3", window).await.unwrap(), 1);
        // Each new bounce counts one more, until the window the first started ends.
        let mut n = 10;
        let new_window = || {
            n += 1;
            let by = format!("cb/0/{n}");
            async move { store.soft_bounce("a@example.com", &by, window).await.unwrap() == 1 }
        };
        harness::eventually("a new window", Duration::from_secs(5), Duration::from_millis(100), new_window).await;
        let ttl = Duration::from_secs(60);
        assert!(store.first_sighting("cb:n1:delivered", "cb/0/1", ttl).await.unwrap());
        assert!(store.first_sighting("cb:n1:delivered", "cb/0/1", ttl).await.unwrap(), "read again: still first");
        assert!(!store.first_sighting("cb:n1:delivered", "cb/0/2", ttl).await.unwrap(), "a copy is not");
        assert!(store.first_sighting("cb:n1:bounced", "cb/0/2", ttl).await.unwrap());
        store.sighting_done("cb:n1:bounced", "cb/0/9").await.unwrap();
        assert!(store.first_sighting("cb:n1:bounced", "cb/0/2", ttl).await.unwrap(), "done only by who saw it first");
        store.sighting_done("cb:n1:bounced", "cb/0/2").await.unwrap();
        assert!(!store.first_sighting("cb:n1:bounced", "cb/0/2", ttl).await.unwrap(), "done: not again");
        let made = store.webhook_keys("u-1", "first").await.unwrap();
        assert_eq!((made.as_str(), store.webhook_keys("u-1", "second").await.unwrap().as_str()), ("first", "first"));
        assert!(!store.swap_webhook_keys("u-1", "other", "new").await.unwrap());
        assert!(store.swap_webhook_keys("u-1", "first", "new").await.unwrap());
        assert_eq!(store.webhook_keys("u-1", "third").await.unwrap(), "new");
        store.set_prefs("u-1", "old").await.unwrap();
        assert!(!store.swap_prefs("u-1", "other", "new").await.unwrap());
        assert!(store.swap_prefs("u-1", "old", "new").await.unwrap());
        assert_eq!(store.prefs_many(&["u-1".into()]).await.unwrap(), vec![Some("new".to_string())]);
    })
    .await;
}

/// A deferral retried after the scheduler claimed its member (the first
/// try went through, its answer was lost) holds nothing more: once the
/// member is published the lane is empty. On the code before, the retry
/// held the member again and counted it twice, and its lane stayed held
/// for good, every later message of the user going through the scheduler.
#[tokio::test]
async fn a_deferral_retried_after_its_member_was_claimed_leaves_the_lane_to_empty() {
    with_each(async |store: &dyn Store| {
        let l = lane("u1", Channel::Email);
        let night = at("2026-11-26T22:00:00Z");
        assert_eq!(store.defer(&l, "m", night).await.unwrap(), night);
        assert_eq!(store.claim_due(night, 10, Duration::from_secs(60)).await.unwrap(), vec!["m"]);
        assert_eq!(store.defer(&l, "m", night).await.unwrap(), night, "the retry");
        store.remove_deferred(&l, "m").await.unwrap();
        assert_eq!(store.hydrate(&[], std::slice::from_ref(&l)).await.unwrap().holds, vec![None]);
        assert_eq!(store.deferred_len().await.unwrap(), 0, "nothing is held");
    })
    .await;
}

#[tokio::test]
async fn a_lane_releases_its_members_in_order_and_never_before_what_it_holds() {
    with_each(async |store: &dyn Store| {
        let l = lane("u1", Channel::Email);
        let night = at("2026-11-26T22:00:00Z");
        let morning = at("2026-11-27T06:00:00Z");
        assert_eq!(store.hydrate(&[], std::slice::from_ref(&l)).await.unwrap().holds, vec![None]);
        assert_eq!(store.defer(&l, "first", morning).await.unwrap(), morning);
        // Due earlier, but queued behind the first.
        assert_eq!(store.defer(&l, "second", night).await.unwrap(), morning);
        assert_eq!(store.defer(&l, "third", morning).await.unwrap(), morning);
        // A retried write (its first try timed out after it went through) is not counted twice.
        assert_eq!(store.defer(&l, "second", night).await.unwrap(), morning);
        // Another user's lane is independent.
        let other = lane("u2", Channel::Email);
        assert_eq!(store.defer(&other, "elsewhere", night).await.unwrap(), night);
        assert_eq!(store.hydrate(&[], std::slice::from_ref(&l)).await.unwrap().holds, vec![Some(morning)]);

        let lease = Duration::from_secs(60);
        assert_eq!(store.deferred_due(night - Span::seconds(1)).await.unwrap(), 0);
        assert_eq!(store.deferred_due(night).await.unwrap(), 1, "only `elsewhere` is due at night");
        assert_eq!(store.claim_due(night, 10, lease).await.unwrap(), vec!["elsewhere"]);
        assert_eq!(store.deferred_due(night).await.unwrap(), 1, "claimed, not yet back on its topic");
        store.remove_deferred(&other, "elsewhere").await.unwrap();
        assert_eq!(store.deferred_due(night).await.unwrap(), 0);
        assert_eq!(store.deferred_due(morning).await.unwrap(), 3);
        assert_eq!(store.claim_due(morning, 10, lease).await.unwrap(), vec!["first", "second", "third"]);
        for m in ["first", "second", "third"] {
            store.remove_deferred(&l, m).await.unwrap();
        }
        assert_eq!(
            store.hydrate(&[], std::slice::from_ref(&l)).await.unwrap().holds,
            vec![None],
            "an empty lane holds nothing"
        );
        assert_eq!(store.deferred_len().await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn concurrent_claims_are_disjoint_and_an_abandoned_claim_comes_back() {
    with_each(async |store: &dyn Store| {
        let due = at("2026-11-27T06:00:00Z");
        for i in 0..200 {
            store.defer(&lane(&format!("u{i}"), Channel::Sms), &format!("m{i}"), due).await.unwrap();
        }
        let lease = Duration::from_secs(30);
        let (a, b) = tokio::join!(store.claim_due(due, 150, lease), store.claim_due(due, 150, lease));
        let (a, b) = (a.unwrap(), b.unwrap());
        let all: HashSet<_> = a.iter().chain(&b).collect();
        assert_eq!(a.len() + b.len(), 200);
        assert_eq!(all.len(), 200, "no member was claimed twice");
        // Nobody removes them (their scheduler died): after the lease they are claimed again.
        assert!(store.claim_due(due + Span::seconds(10), 500, lease).await.unwrap().is_empty());
        assert_eq!(store.claim_due(due + Span::seconds(31), 500, lease).await.unwrap().len(), 200);
    })
    .await;
}

/// A deferred member as intake writes it, as far as the schedule reads it;
/// `tag` sorts against the order the members are deferred in.
fn member(user: &str, tag: &str) -> String {
    format!(r#"{{"a":"{tag}","notification":{{"user_id":"{user}","channel":"email"}}}}"#)
}

#[tokio::test]
async fn a_claimed_member_holds_its_lane_until_published_or_its_claim_runs_out() {
    with_each(async |store: &dyn Store| {
        let (u, v) = (lane("u", Channel::Email), lane("v", Channel::Email));
        let early = at("2026-11-27T06:00:00Z");
        let later = at("2026-11-27T07:00:00Z");
        let (first, second, third) = (member("u", "z"), member("u", "y"), member("u", "x"));
        store.defer(&u, &first, early).await.unwrap();
        store.defer(&u, &second, early).await.unwrap();
        store.defer(&u, &third, later).await.unwrap();
        let elsewhere = member("v", "w");
        store.defer(&v, &elsewhere, later).await.unwrap();

        let lease = Duration::from_secs(7200);
        assert_eq!(store.claim_due(early, 10, lease).await.unwrap(), vec![first.clone(), second.clone()]);
        // Their scheduler died. The lane's third member is due, but its earlier ones are still claimed.
        assert_eq!(store.claim_due(later, 10, lease).await.unwrap(), vec![elsewhere.clone()]);
        assert!(store.claim_due(later, 10, lease).await.unwrap().is_empty());
        // The claim runs out: the lane's members come back in the order they were deferred.
        let after = later + Span::minutes(121);
        assert_eq!(store.claim_due(after, 10, lease).await.unwrap(), vec![first.clone(), second, elsewhere, third]);
        // Once the first is published, the rest of the lane is not held back by it.
        store.remove_deferred(&u, &first).await.unwrap();
        assert_eq!(store.deferred_len().await.unwrap(), 3);
    })
    .await;
}

#[tokio::test]
async fn hydrate_reads_preferences_and_holds_in_one_call() {
    with_each(async |store: &dyn Store| {
        store.set_prefs("u1", "{\"user_id\":\"u1\"}").await.unwrap();
        let l = lane("u1", Channel::Push);
        store.defer(&l, "m", at("2026-11-27T06:00:00Z")).await.unwrap();
        let h = store.hydrate(&["u1".into(), "nobody".into()], &[l, lane("u1", Channel::Sms)]).await.unwrap();
        assert_eq!(h.prefs, vec![Some("{\"user_id\":\"u1\"}".to_string()), None]);
        assert_eq!(h.holds, vec![Some(at("2026-11-27T06:00:00Z")), None]);
    })
    .await;
}

/// A preferences key holding something that is no string (an operator's
/// mistake, another program sharing the prefix) reads as no preferences, one
/// user or many: intake routes the event as such instead of retrying the read
/// for ever.
#[tokio::test]
async fn a_preferences_key_of_another_type_reads_as_none() {
    let server = RedisServer::start().unwrap();
    let cluster = RedisCluster::start().unwrap();
    for url in [server.url(), cluster.url()] {
        let store = RedisStore::connect(&url, "t").await.unwrap();
        store.set_prefs("u-ok", "{\"user_id\":\"u-ok\"}").await.unwrap();
        let push = redis::cmd("RPUSH").arg("t:prefs:u-list").arg("x").clone();
        if url == server.url() {
            let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
            let _: () = push.query_async(&mut conn).await.unwrap();
        } else {
            let client = redis::cluster::ClusterClient::new(url.split(',').collect::<Vec<_>>()).unwrap();
            let _: () = push.query_async(&mut client.get_async_connection().await.unwrap()).await.unwrap();
        }
        assert_eq!(store.prefs_many(&["u-list".to_string()]).await.unwrap(), vec![None], "{url}");
        let both = store.prefs_many(&["u-list".to_string(), "u-ok".to_string()]).await.unwrap();
        assert_eq!(both, vec![None, Some("{\"user_id\":\"u-ok\"}".to_string())]);
        // A worker's claim reads it too, with the claim: absent, and the claim is had.
        let claimed = store.claim_for_delivery("n-1", "w", Duration::from_secs(30), "u-list", None).await.unwrap();
        assert_eq!((claimed.claim, claimed.prefs), (Claim::Acquired, None), "{url}");
    }
}

/// With `redis.deferral_replicas`, a deferral counts only once a replica
/// holds it. While the replica stalls, a deferral is written on the primary
/// but not acknowledged (an error: intake or the worker holds the record
/// and writes no `deferred` status); once the replica goes on, the retry is
/// acknowledged, held once, and the replica has every member a failover
/// would need. Without it, the primary's answer alone counted.
#[tokio::test]
async fn a_deferral_counts_only_once_a_replica_holds_it() {
    let primary = RedisServer::start().unwrap();
    let replica = RedisServer::replica_of(&primary).unwrap();
    let mut on_replica = redis::Client::open(replica.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    harness::eventually("the replica to follow", Duration::from_secs(30), Duration::from_millis(50), || {
        let mut c = on_replica.clone();
        async move {
            let info: String = redis::cmd("INFO").arg("replication").query_async(&mut c).await.unwrap();
            info.contains("master_link_status:up")
        }
    })
    .await;
    let wait = Duration::from_millis(300);
    let store = RedisStore::connect(&primary.url(), "t").await.unwrap();
    let store = store.replicate_deferrals(&primary.url(), 1, wait).await.unwrap();
    let (l, due) = (lane("u-1", Channel::Email), at("2026-11-26T22:00:00Z"));
    assert_eq!(store.defer(&l, "m-1", due).await.unwrap(), due, "acknowledged with the replica following");

    replica.freeze(true).unwrap();
    let stalled = store.defer(&l, "m-2", due).await;
    assert!(matches!(stalled, Err(StoreError::NotReplicated { on: 0, wanted: 1 })), "{stalled:?}");
    // Another process holds the same member (the record read again after the
    // first died): the script writes nothing, and its connection is new.
    let other = RedisStore::connect(&primary.url(), "t").await.unwrap();
    let other = other.replicate_deferrals(&primary.url(), 1, wait).await.unwrap();
    let again = other.defer(&l, "m-2", due).await;
    assert!(matches!(again, Err(StoreError::NotReplicated { on: 0, wanted: 1 })), "{again:?}");
    replica.freeze(false).unwrap();
    let released = tidings_core::persist::until_ok("defer", || store.defer(&l, "m-2", due)).await;
    assert_eq!(released, due);

    let replica_store = RedisStore::connect(&replica.url(), "t").await.unwrap();
    assert_eq!(replica_store.deferred_len().await.unwrap(), 2, "both members on the replica");
    let lanes: String = redis::cmd("HGET").arg("t:lanes").arg(&l).query_async(&mut on_replica).await.unwrap();
    assert!(lanes.contains(",2,"), "two members held on the lane, the retry not counted again: {lanes}");

    // On a cluster, WAIT goes to the primary of the schedule's slot (these
    // primaries have no replicas: none ever holds the deferral).
    let cluster = RedisCluster::start().unwrap();
    let clustered = RedisStore::connect(&cluster.url(), "t").await.unwrap();
    let clustered = clustered.replicate_deferrals(&cluster.url(), 1, wait).await.unwrap();
    let unreplicated = clustered.defer(&l, "m-1", due).await;
    assert!(matches!(unreplicated, Err(StoreError::NotReplicated { on: 0, wanted: 1 })), "{unreplicated:?}");
}

/// Frequency caps: the Redis store (one server and a cluster, users spread
/// over its slots) answers exactly as the specification in
/// `tidings_core::caps::admit` does, over a long random run of admissions:
/// ids asked again (redelivery), drops, asks that move an admission later,
/// several caps at once, several users in one call.
#[tokio::test]
async fn caps_admit_as_the_specification_says() {
    use tidings_core::caps::{self, CapAsk};
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let caps_of = |i: u64| -> Vec<(String, u32, Duration)> {
        let short = ("short".to_string(), 2, Duration::from_secs(60));
        let long = ("long".to_string(), 5, Duration::from_secs(600));
        match i {
            0 => vec![short],
            1 => vec![long],
            _ => vec![long, short],
        }
    };
    // Batches of asks, made once, so every store gets the same.
    let start = at("2026-12-07T12:00:00Z");
    let mut now = start;
    let mut batches = Vec::new();
    let mut asked: Vec<(String, String, u64)> = Vec::new();
    for _ in 0..60 {
        now += Span::seconds(next(40) as i64);
        let mut batch = Vec::new();
        for _ in 0..=next(6) {
            let (user, id, kind) = if !asked.is_empty() && next(4) == 0 {
                asked[next(asked.len() as u64) as usize].clone()
            } else {
                let made = (format!("u{}", next(3)), format!("n{}", asked.len()), next(3));
                asked.push(made.clone());
                made
            };
            let again = next(8) == 0;
            let floor = if again { now + Span::seconds(next(300) as i64) } else { now };
            batch.push(CapAsk {
                user,
                channel: if kind == 2 { Channel::Sms } else { Channel::Email },
                id,
                caps: caps_of(kind),
                at: floor,
                now,
                drop: next(5) == 0,
                again,
            });
        }
        batches.push(batch);
    }
    // The specification's answers.
    let mut windows: std::collections::HashMap<(String, String, Channel), Vec<(i64, u64)>> = Default::default();
    let mut dropped: std::collections::HashMap<String, Vec<(i64, u64)>> = Default::default();
    let mut expected = Vec::new();
    for ask in batches.iter().flatten() {
        let keys: Vec<_> = ask.caps.iter().map(|c| (ask.user.clone(), c.0.clone(), ask.channel)).collect();
        let mut w: Vec<_> = keys.iter().map(|k| windows.remove(k).unwrap_or_default()).collect();
        let d = dropped.entry(ask.user.clone()).or_default();
        let (code, ms, by) = caps::admit(ask, &mut w, d);
        windows.extend(keys.into_iter().zip(w));
        expected.push(caps::answer(ask, code, ms, by));
    }
    let (held, drops) = (
        expected.iter().filter(|a| matches!(a, caps::Admission::Admitted { by: Some(_), .. })).count(),
        expected.iter().filter(|a| matches!(a, caps::Admission::Dropped { .. })).count(),
    );
    assert!(held > 10 && drops > 5, "the run exercises the caps: {held} held later, {drops} dropped");
    with_each(async |store: &dyn Store| {
        let mut answers = Vec::new();
        for batch in &batches {
            answers.extend(store.admit(batch).await.unwrap());
        }
        assert_eq!(answers, expected);
        let counts = store.cap_counts("u0", &[("long".into(), Duration::from_secs(600))], &[Channel::Email], now).await;
        let counts = counts.unwrap();
        let spec = &windows[&("u0".to_string(), "long".to_string(), Channel::Email)];
        let in_window = spec.iter().filter(|(s, _)| *s > (now - Span::seconds(600)).timestamp_millis()).count() as u64;
        assert_eq!(counts[0].in_window + counts[0].ahead, in_window);
    })
    .await;
}

/// Caps written by two processes at once: each store admits the same asks
/// for the same users, one in order and one in reverse, many times over, so
/// each keeps replacing users' caps the other has just replaced. Both give
/// every notification the same answer, and no user gets more than the cap
/// in any window: a write that lost the race is read and admitted again.
/// Each starts from values it holds already, as intake does: one from what
/// it wrote itself last (stale once the other writes), the other from a
/// read made before the batch (stale once either writes).
#[tokio::test]
async fn caps_written_by_two_processes_at_once_count_each_notification_once() {
    use tidings_core::caps::{Admission, CapAsk};
    let server = RedisServer::start().unwrap();
    let (one, two) = (
        RedisStore::connect(&server.url(), "t").await.unwrap(),
        RedisStore::connect(&server.url(), "t").await.unwrap(),
    );
    let now = at("2026-12-07T12:00:00Z");
    let cap = vec![("hourly".to_string(), 3, Duration::from_secs(3600))];
    let batches: Vec<Vec<CapAsk>> = (0..40)
        .map(|b| {
            (0..5)
                .map(|i| CapAsk {
                    user: format!("u{}", i % 3),
                    channel: Channel::Email,
                    id: format!("n{b}-{i}"),
                    caps: cap.clone(),
                    at: now,
                    now,
                    drop: false,
                    again: false,
                })
                .collect()
        })
        .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let ask_all =
        async |store: &RedisStore, order: Vec<&Vec<CapAsk>>, read_ahead: bool, out: &mut Vec<(String, Admission)>| {
            let mut known = tidings_core::store::CapsRead::new();
            let users: Vec<String> = (0..3).map(|u| format!("u{u}")).collect();
            for batch in order {
                if read_ahead {
                    known = users.iter().cloned().zip(store.caps_values(&users).await.unwrap()).collect();
                    tokio::task::yield_now().await;
                }
                let (answers, seen) = store.admit_from(batch, &known).await.unwrap();
                known.extend(seen.into_iter().map(|(user, seen)| (user, seen.value)));
                out.extend(batch.iter().map(|a| a.id.clone()).zip(answers));
            }
        };
    tokio::join!(
        ask_all(&one, batches.iter().collect(), false, &mut a),
        ask_all(&two, batches.iter().rev().collect(), true, &mut b),
    );
    let instant = |answer: &Admission| match answer {
        Admission::Admitted { at, .. } | Admission::Before { at } => *at,
        Admission::Dropped { .. } => panic!("nothing drops here"),
    };
    let first: std::collections::HashMap<String, DateTime<Utc>> =
        a.iter().map(|(id, answer)| (id.clone(), instant(answer))).collect();
    let mut admitted_by_both = 0;
    for (id, answer) in &b {
        assert_eq!(instant(answer), first[id], "{id}: the two processes disagree");
        admitted_by_both += usize::from(matches!(answer, Admission::Admitted { .. }));
    }
    let admitted_by_one = a.iter().filter(|(_, answer)| matches!(answer, Admission::Admitted { .. })).count();
    assert_eq!(admitted_by_one + admitted_by_both, 200, "each notification admitted once, by one or the other");
    for u in 0..3 {
        let mut instants: Vec<DateTime<Utc>> =
            (batches.iter().flatten()).filter(|ask| ask.user == format!("u{u}")).map(|ask| first[&ask.id]).collect();
        instants.sort();
        for w in instants.windows(4) {
            assert!(w[3] - w[0] >= Span::hours(1), "u{u}: four in an hour: {w:?}");
        }
    }
}

/// A schedule member of notification `id` for user `u` by email, as a
/// read made at `made` holds it.
fn member_of(id: &str, made: &str) -> String {
    format!(r#"{{"notification":{{"notification_id":"{id}","user_id":"u","channel":"email","created_at":"{made}"}}}}"#)
}

/// Two reads of one event make two members of one notification (they
/// differ in when they were made): while the first waits, the second is
/// not held, and gets the first's release time; intake taking the
/// notification back removes whichever member holds it. Once the first is
/// claimed (on its way out), a new member of it is held: the worker holds
/// a message again when quiet hours begin at delivery, maybe before the
/// scheduler removed the member it published.
#[tokio::test]
async fn a_notification_waits_on_the_schedule_once_whichever_read_held_it() {
    let of = member_of;
    with_each(async |store: &dyn Store| {
        let l = lane("u", Channel::Email);
        let (morning, later) = (at("2026-11-27T06:00:00Z"), at("2026-11-27T09:00:00Z"));
        assert_eq!(store.defer(&l, &of("n1", "1"), morning).await.unwrap(), morning);
        assert_eq!(store.defer(&l, &of("n1", "2"), later).await.unwrap(), morning, "the second read");
        assert_eq!(store.deferred_len().await.unwrap(), 1);
        // Taken back through the second read's member: the first one goes.
        store.undefer(&l, &of("n1", "2")).await.unwrap();
        assert_eq!(store.deferred_len().await.unwrap(), 0);
        assert_eq!(store.hydrate(&[], std::slice::from_ref(&l)).await.unwrap().holds, vec![None], "the lane is free");
        assert_eq!(store.defer(&l, &of("n1", "2"), later).await.unwrap(), later, "held again where intake wants it");
        // Claimed: a new member of it is held, and the published one's removal leaves it be.
        assert_eq!(store.claim_due(later, 10, Duration::from_secs(60)).await.unwrap(), vec![of("n1", "2")]);
        let evening = at("2026-11-27T20:00:00Z");
        assert_eq!(store.defer(&l, &of("n1", "3"), evening).await.unwrap(), evening);
        store.remove_deferred(&l, &of("n1", "2")).await.unwrap();
        assert_eq!(store.defer(&l, &of("n1", "4"), evening).await.unwrap(), evening, "the third still waits");
        assert_eq!(store.deferred_len().await.unwrap(), 1);
        assert_eq!(store.claim_due(evening, 10, Duration::from_secs(60)).await.unwrap(), vec![of("n1", "3")]);
    })
    .await;
}

/// An answer from caps read ahead stands only if they are still what is
/// stored when it is given, changed or not: a notification counted when
/// they were read and dropped by another process since is answered
/// dropped, not as counted.
#[tokio::test]
async fn caps_read_ahead_are_checked_even_where_nothing_changes() {
    use tidings_core::caps::{Admission, CapAsk};
    with_each(async |store: &dyn Store| {
        let t0 = at("2026-12-07T12:00:00Z");
        let ask = |id: &str, at: DateTime<Utc>, again: bool| CapAsk {
            user: "u".into(),
            channel: Channel::Email,
            id: id.into(),
            caps: vec![("daily".to_string(), 1, Duration::from_secs(24 * 3600))],
            at,
            now: t0,
            drop: true,
            again,
        };
        let day = chrono::Duration::hours(24);
        assert!(matches!(store.admit(&[ask("x", t0, false)]).await.unwrap()[..], [Admission::Admitted { .. }]));
        assert!(matches!(store.admit(&[ask("y", t0 + day, false)]).await.unwrap()[..], [Admission::Admitted { .. }]));
        let users = ["u".to_string()];
        let read: tidings_core::store::CapsRead =
            users.iter().cloned().zip(store.caps_values(&users).await.unwrap()).collect();
        let (before, seen) = store.admit_from(&[ask("x", t0, false)], &read).await.unwrap();
        assert_eq!(before, [Admission::Before { at: t0 }], "as read");
        assert!(seen.is_empty(), "checked, and still what was read: {seen:?}");
        // Another process moves x behind y, where the window has no room: dropped.
        let moved = ask("x", t0 + day + chrono::Duration::hours(1), true);
        assert!(matches!(store.admit(&[moved]).await.unwrap()[..], [Admission::Dropped { .. }]));
        let (after, seen) = store.admit_from(&[ask("x", t0, false)], &read).await.unwrap();
        assert_eq!(after, [Admission::Dropped { by: None }], "dropped since it was read");
        // Read again (a store that admits without reading answers none).
        if let [Some(stored)] = &store.caps_values(&users).await.unwrap()[..] {
            let again = tidings_core::store::CapsSeen { value: Some(stored.clone()), replaced: None };
            assert_eq!(seen.get("u"), Some(&again), "what was read again is answered");
        }
    })
    .await;
}

/// Placing says whether a member joined another read's member of its
/// notification (and its own member held again is not joined: a retry);
/// an exact placing goes at its instant, before what its lane holds for
/// later, and the lane still ends where it did.
#[tokio::test]
async fn a_placing_says_whether_it_joined_another_read_and_an_exact_one_goes_before_the_lane() {
    let of = member_of;
    with_each(async |store: &dyn Store| {
        let l = lane("u", Channel::Email);
        let (ten, eleven, noon) = (at("2026-11-27T10:00:00Z"), at("2026-11-27T11:00:00Z"), at("2026-11-27T12:00:00Z"));
        let placed = |at, joined| Placed { at, joined };
        assert_eq!(store.place(&l, &of("z", "1"), noon, false).await.unwrap(), placed(noon, false));
        assert_eq!(store.place(&l, &of("z", "1"), noon, false).await.unwrap(), placed(noon, false), "a retry");
        assert_eq!(store.place(&l, &of("z", "2"), ten, true).await.unwrap(), placed(noon, true), "another read");
        // Behind the lane, unless exact.
        assert_eq!(store.place(&l, &of("y", "1"), ten, false).await.unwrap(), placed(noon, false));
        assert_eq!(store.place(&l, &of("x", "1"), eleven, true).await.unwrap(), placed(eleven, false));
        assert_eq!(store.hydrate(&[], std::slice::from_ref(&l)).await.unwrap().holds, vec![Some(noon)]);
        let lease = Duration::from_secs(60);
        assert_eq!(store.claim_due(eleven, 10, lease).await.unwrap(), vec![of("x", "1")], "before the lane");
        store.remove_deferred(&l, &of("x", "1")).await.unwrap();
        assert_eq!(store.claim_due(noon, 10, lease).await.unwrap(), vec![of("z", "1"), of("y", "1")]);
    })
    .await;
}

/// The digest add and take, as `tidings_core::digest` specifies them: a
/// window opens with its first event and closes at its end, when full or when
/// taken; an event read again is answered with its window, however long ago
/// it was taken, up to a week; a taken window's items are forgotten a day
/// after.
#[tokio::test]
async fn digests_add_take_and_remember_as_the_specification_says() {
    use tidings_core::digest::{event_ref, DigestAdd, KEEP_TAKEN, REMEMBER};
    with_each(async |store: &dyn Store| {
        let t0 = at("2026-12-07T10:00:00Z");
        let add = |user: &str, id: &str, now: DateTime<Utc>| DigestAdd {
            user: user.to_string(),
            name: "shipment:A".to_string(),
            event: event_ref("shop", id),
            item: format!("{{\"id\":\"{id}\"}}"),
            now,
            closes: now + Span::hours(1),
            max_items: 3,
        };
        // Two events in one call, and another user's: one window each.
        let added = store.digest_add(&[add("ana", "a1", t0), add("ana", "a2", t0), add("bo", "b1", t0)]).await.unwrap();
        let seen: Vec<_> = added.iter().map(|a| (a.window, a.opened, a.count, a.fresh, a.full, a.taken)).collect();
        assert_eq!(
            seen,
            [(1, true, 1, true, false, false), (1, false, 2, true, false, false), (1, true, 1, true, false, false)]
        );
        assert_eq!((added[1].closes, added[1].opened_at), (t0 + Span::hours(1), t0));
        let open = store.open_digests("ana").await.unwrap();
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!(
            (open[0].name.as_str(), open[0].window, open[0].count, open[0].closes),
            ("shipment:A", 1, 2, t0 + Span::hours(1))
        );
        // Read again (a redelivery, later): its window, added nowhere.
        let again = store.digest_add(&[add("ana", "a1", t0 + Span::minutes(5))]).await.unwrap();
        assert_eq!((again[0].window, again[0].fresh, again[0].count, again[0].taken), (1, false, 2, false));
        assert_eq!(again[0].opened_at, t0);
        // The third fills it: released now, and the next event opens window 2.
        let t1 = t0 + Span::minutes(10);
        let added = store.digest_add(&[add("ana", "a3", t1), add("ana", "a4", t1)]).await.unwrap();
        assert_eq!((added[0].window, added[0].count, added[0].full, added[0].closes), (1, 3, true, t1));
        assert_eq!((added[1].window, added[1].opened, added[1].count, added[1].opened_at), (2, true, 1, t1));
        let open = store.open_digests("ana").await.unwrap();
        assert_eq!(open.iter().map(|o| (o.window, o.count)).collect::<Vec<_>>(), [(2, 1)]);
        // Taken: its items in order, the same when taken again; a read of its
        // events says it is taken.
        let taken = store.digest_take("ana", "shipment:A", 1, t0, t1).await.unwrap().unwrap();
        assert_eq!(taken.items, ["{\"id\":\"a1\"}", "{\"id\":\"a2\"}", "{\"id\":\"a3\"}"]);
        assert_eq!((taken.opened, taken.closed), (t0, t1));
        let t2 = t1 + Span::minutes(1);
        assert_eq!(store.digest_take("ana", "shipment:A", 1, t0, t2).await.unwrap().unwrap(), taken);
        let again = store.digest_add(&[add("ana", "a2", t2)]).await.unwrap();
        assert_eq!((again[0].window, again[0].fresh, again[0].taken), (1, false, true));
        assert_eq!(store.digest_take("ana", "shipment:A", 7, t2, t2).await.unwrap(), None, "a window never opened");
        // A release of another window 2 (one opened at another instant, of a
        // digest forgotten since) takes nothing, and leaves it open.
        assert_eq!(store.digest_take("ana", "shipment:A", 2, t0, t2).await.unwrap(), None);
        assert_eq!(store.open_digests("ana").await.unwrap().len(), 1);
        // Window 2 taken before its end: the next event opens window 3.
        store.digest_take("ana", "shipment:A", 2, t1, t2).await.unwrap().unwrap();
        assert!(store.open_digests("ana").await.unwrap().is_empty());
        let added = store.digest_add(&[add("ana", "a5", t2)]).await.unwrap();
        assert_eq!((added[0].window, added[0].opened), (3, true));
        // Past its end, window 3 is closed: the next event opens window 4,
        // a day and more after windows 1 and 2 were taken. Their items are
        // forgotten then; their events are still known.
        let t3 = t2 + Span::from_std(KEEP_TAKEN).unwrap() + Span::hours(2);
        let added = store.digest_add(&[add("ana", "a6", t3)]).await.unwrap();
        assert_eq!((added[0].window, added[0].opened), (4, true));
        assert_eq!(store.digest_take("ana", "shipment:A", 1, t0, t3).await.unwrap(), None, "forgotten a day after");
        let taken = store.digest_take("ana", "shipment:A", 3, t2, t3).await.unwrap().unwrap();
        assert_eq!(taken.items, ["{\"id\":\"a5\"}"], "window 3 was never taken: kept");
        let again = store.digest_add(&[add("ana", "a1", t3), add("ana", "a4", t3)]).await.unwrap();
        let seen: Vec<_> = again.iter().map(|a| (a.window, a.fresh, a.taken)).collect();
        assert_eq!(seen, [(1, false, true), (2, false, true)]);
        // Other users' digests are their own.
        let added = store.digest_add(&[add("bo", "b2", t3)]).await.unwrap();
        assert_eq!((added[0].window, added[0].opened), (2, true), "bo's window 1 closed an hour after t0");
        // A week after windows 1 and 2 were taken, their events are forgotten
        // when the next window opens (window 4, never taken, keeps its items;
        // window 3's events are remembered a while yet).
        let t4 = t2 + Span::from_std(REMEMBER).unwrap() + Span::hours(1);
        let added =
            store.digest_add(&[add("ana", "a7", t4), add("ana", "a1", t4), add("ana", "a5", t4)]).await.unwrap();
        let seen: Vec<_> = added.iter().map(|a| (a.window, a.opened, a.fresh, a.taken)).collect();
        assert_eq!(seen, [(5, true, true, false), (5, false, true, false), (3, false, false, true)]);
        assert_eq!(
            store.digest_take("ana", "shipment:A", 3, t2, t4).await.unwrap(),
            None,
            "window 3's items are forgotten"
        );
        let taken = store.digest_take("ana", "shipment:A", 4, t3, t4).await.unwrap().unwrap();
        assert_eq!(taken.items, ["{\"id\":\"a6\"}"]);
        // Window 5 is never taken (its release lost): a week after it closed
        // it goes as a taken one would, so the windows after it are pruned.
        let t5 = t4 + Span::from_std(REMEMBER).unwrap() + Span::hours(2);
        let added = store.digest_add(&[add("ana", "a8", t5), add("ana", "a7", t5)]).await.unwrap();
        let seen: Vec<_> = added.iter().map(|a| (a.window, a.opened, a.fresh)).collect();
        assert_eq!(seen, [(6, true, true), (6, false, true)], "a7 forgotten with window 5");
        assert_eq!(store.digest_take("ana", "shipment:A", 5, t4, t5).await.unwrap(), None);
    })
    .await;
}

/// A caps value that was not written as Redis's store writes it (its head
/// not a version: here a character across its 16th byte) is replaced by a
/// fresh count, not read again for ever.
#[tokio::test]
async fn a_caps_value_without_a_version_is_counted_afresh() {
    use tidings_core::caps::{Admission, CapAsk};
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url(), "t").await.unwrap();
    let mut conn = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () =
        redis::cmd("SET").arg("{t:caps:u1}").arg("0123456789abcdeé|garbage").query_async(&mut conn).await.unwrap();
    let now = at("2026-12-07T10:00:00Z");
    let ask = CapAsk {
        user: "u1".into(),
        channel: Channel::Email,
        id: "n1".into(),
        caps: vec![("all".into(), 1, Duration::from_secs(3600))],
        at: now,
        now,
        drop: false,
        again: false,
    };
    let answers = tokio::time::timeout(Duration::from_secs(10), store.admit(std::slice::from_ref(&ask))).await;
    assert_eq!(
        answers.expect("answered, not read again for ever").unwrap(),
        [Admission::Admitted { at: now, by: None }]
    );
    let value: String = redis::cmd("GET").arg("{t:caps:u1}").query_async(&mut conn).await.unwrap();
    assert!(value[16..].starts_with("c1|"), "{value}");
}
