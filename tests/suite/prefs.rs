//! `tidings prefs import` validates before it writes, and writes what it was given.

use tidings::commands::prefs::import;
use tidings_core::store::{MemoryStore, Store};

#[tokio::test]
async fn import_rejects_invalid_users_with_the_reason_and_writes_nothing_for_them() {
    let store = MemoryStore::new();
    let text = [
        r#"{"user_id": "ok", "email": "ok@example.com", "phone": "+33612345678", "loyalty_tier": "gold"}"#,
        r#"{"user_id": "bad-phone", "email": "b@example.com", "phone": "0612345678"}"#,
        r#"{"user_id": "bad-email", "email": "not an address"}"#,
        r#"{"user_id": "bad-zone", "timezone": "Mars/Olympus"}"#,
        r#"{"user_id": "bad-window", "quiet_hours": {"start": "late", "end": "07:00"}}"#,
        "not json",
    ]
    .join("\n");
    let (stored, rejected) = import(&store, &text).await.unwrap();
    assert_eq!(stored, 1);
    assert_eq!(rejected.len(), 5);
    assert!(
        rejected[0].starts_with("line 2:") && rejected[0].contains("`06123**678` is not an E.164 phone number"),
        "{}",
        rejected[0]
    );
    // Masked: what was given may be someone's real address or number.
    assert!(rejected[1].contains("`not ***` is not an email address"), "{}", rejected[1]);
    assert!(rejected[2].contains("`Mars/Olympus` is not an IANA time zone"), "{}", rejected[2]);
    assert!(rejected[3].contains("`late` is not a local time like 22:00"), "{}", rejected[3]);
    let users: Vec<String> = ["ok", "bad-phone", "bad-email", "bad-zone", "bad-window"].map(String::from).to_vec();
    let written = store.prefs_many(&users).await.unwrap();
    let ok = written[0].as_deref().unwrap();
    assert!(ok.contains(r#""loyalty_tier": "gold""#), "fields Tidings does not use are kept as written: {ok}");
    assert!(written[1..].iter().all(Option::is_none), "nothing is written for a rejected user");
}
