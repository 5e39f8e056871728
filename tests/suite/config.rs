//! The shipped example configuration loads, so it cannot rot.

use tidings_core::config::UnknownTypes;
use tidings_core::{Channel, Config, Priority};

#[test]
fn the_example_config_loads_and_routes_every_shipped_event_type() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tidings.example.toml");
    let config = Config::load(Some(path.as_ref())).unwrap();
    for ty in [
        "order.confirmed",
        "payment.failed",
        "shipment.dispatched",
        "shipment.out_for_delivery",
        "shipment.delivered",
        "shipment.delivery_exception",
        "refund.issued",
        "account.password_reset",
        "marketing.campaign",
    ] {
        let route = config.events.get(ty).unwrap_or_else(|| panic!("{ty} has no route"));
        let folder = config.templates.dir.join(route.template.as_deref().unwrap_or(ty));
        assert!(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&folder).join("sample.json").exists(),
            "{ty} has no sample.json"
        );
    }
    assert_eq!(config.events["account.password_reset"].priority, Priority::Critical);
    assert_eq!(config.events["marketing.campaign"].priority, Priority::Bulk);
    assert_eq!(config.intake.unknown_types, UnknownTypes::DeadLetter);
    assert_eq!(config.channels[&Channel::Email].providers, vec!["smtp", "sendgrid"]);
    assert_eq!(config.channels[&Channel::Sms].max_segments, 4);
    for name in ["smtp", "sendgrid", "twilio", "vonage", "fcm", "apns", "webhook"] {
        assert_eq!(config.providers[name].kind, name);
    }
    // Every provider section reads as its own kind's configuration.
    tidings_providers::registry::check(&config).unwrap();
}

#[test]
fn unknown_fields_and_dangling_provider_names_are_refused() {
    let typo = "[kafka]\nbootstrap_servers = \"k:9092\"\nbootstrp = 1\n";
    assert!(Config::from_toml(typo).unwrap_err().to_string().contains("bootstrp"));
    let dangling = "[kafka]\nbootstrap_servers = \"k:9092\"\n[channels.email]\nproviders = [\"nope\"]\n";
    assert!(Config::from_toml(dangling).unwrap_err().to_string().contains("`nope` is not in [providers]"));
    let plain = "[kafka]\nbootstrap_servers = \"k:9092\"\n[providers.m]\nkind = \"smtp\"\nhost = \"h\"\ntls = \"none\"\nfrom = \"a@b.c\"\n";
    let refused = tidings_providers::registry::check(&Config::from_toml(plain).unwrap()).unwrap_err();
    assert!(refused.to_string().contains("providers.m: tls = \"none\" needs allow_plaintext"), "{refused}");
    // A write timeout the callbacks' producer cannot take (not above its linger).
    let instant = "[kafka]\nbootstrap_servers = \"k:9092\"\n[callbacks]\nwrite_timeout = \"5ms\"\n";
    assert!(Config::from_toml(instant)
        .unwrap_err()
        .to_string()
        .contains("callbacks.write_timeout must be at least 1s"));
}

#[test]
fn unsubscribe_categories_default_to_marketing_without_the_section() {
    let config = Config::from_toml("[kafka]\nbootstrap_servers = \"k:9092\"\n").unwrap();
    assert_eq!(config.unsubscribe.categories, ["marketing"]);
}

#[test]
fn secrets_never_print() {
    let text = "[kafka]\nbootstrap_servers = \"k:9092\"\n[providers.t]\nkind = \"twilio\"\naccount_sid = \"AC1\"\nauth_token = \"hunter2\"\nfrom = \"+15550001111\"\n";
    let config = Config::from_toml(text).unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
    // Credentials in the cluster settings: librdkafka's passwords and every Redis node's.
    let text = "[kafka]\nbootstrap_servers = \"k:9092\"\noptions = { \"security.protocol\" = \"SASL_SSL\", \"sasl.password\" = \"KafkaPw1\", \"ssl.key.password\" = \"KeyPw2\", \"sasl.oauthbearer.client.secret\" = \"OauthSecret3\", \"sasl.oauthbearer.config\" = \"principal=x secret=OauthCfg6\" }\n[redis]\nurl = \"redis://:RedisPw4@h1:7000,redis://:RedisPw5@h2:7000\"\n[traces]\notlp_endpoint = \"https://tenant:OtlpPw7@otel.example:4318\"\n";
    let printed = format!("{:?}", Config::from_toml(text).unwrap());
    for secret in ["KafkaPw1", "KeyPw2", "OauthSecret3", "RedisPw4", "RedisPw5", "OauthCfg6", "OtlpPw7"] {
        assert!(!printed.contains(secret), "{secret} printed: {printed}");
    }
    assert!(printed.contains("SASL_SSL") && printed.contains("h2:7000"), "what is no secret still shows: {printed}");
}

/// The example configuration's routes: each event type's template folder
/// and every channel it may go out on, with the templates loaded.
fn routes(mut each: impl FnMut(&tidings_workers::render::Renderer, &str, &str, Channel)) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tidings.example.toml");
    let config = Config::load(Some(path.as_ref())).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&config.templates.dir);
    let renderer = tidings_workers::render::Renderer::load(&dir).unwrap();
    for (ty, route) in &config.events {
        let template = route.template.as_deref().unwrap_or(ty);
        for channel in route.channels.iter().chain(&route.fallback) {
            each(&renderer, ty, template, *channel);
        }
    }
}

#[test]
fn every_routed_channel_and_fallback_has_its_templates() {
    routes(|renderer, ty, template, channel| {
        assert!(renderer.has_channel(template, channel), "{ty} routes to {channel} but has no {channel} templates");
    });
}

/// A French reader gets French copy in every part of every channel an event
/// routes to (never a French subject over an English body), a `fr-CA`
/// reader the same files, and an English reader the plain ones.
#[test]
fn every_routed_part_has_english_and_french_copy() {
    routes(|renderer, ty, template, channel| {
        for part in tidings_workers::render::parts(channel) {
            let english = format!("{template}/{part}");
            let french = format!("{english}.fr");
            assert_eq!(renderer.file_for(template, part, "en"), Some(english.as_str()));
            assert_eq!(renderer.file_for(template, part, "fr"), Some(french.as_str()), "{ty} {channel}");
            assert_eq!(renderer.file_for(template, part, "fr-CA"), Some(french.as_str()));
        }
    });
}

/// Caps and send windows that cannot work are refused when the
/// configuration loads (every role loads it first), naming the field.
#[test]
fn bad_caps_and_send_windows_are_refused_naming_the_field() {
    let base = crate::harness::example_toml();
    let refused = |extra: &str| Config::from_toml(&format!("{base}\n{extra}")).unwrap_err().to_string();
    let cases = [
        ("[caps.marketing]\nmax = 0\nper = \"1h\"", "caps.marketing.max must be at least 1"),
        ("[caps.\"a|b\"]\nmax = 2\nper = \"1h\"", "caps.\"a|b\": a name without `:`, `|`"),
        ("[caps.marketing]\nmax = 2\nper = \"0s\"", "caps.marketing.per must be at least 1s"),
        ("[caps.marketing]\nmax = 2\nper = \"soon\"", "caps.marketing.per"),
        ("[caps.daily]\nmax = 2\nper = \"1d\"", "caps.daily: no event type has category `daily`"),
        (
            "[caps.x]\nmax = 2\nper = \"1d\"\ncategories = [\"promos\"]",
            "caps.x.categories: no event type has category `promos`",
        ),
        ("[caps.x]\nmax = 2\nper = \"1d\"\ncategories = []", "caps.x.categories is empty"),
        (
            "[categories.marketing]\nsend_window = { from = \"10:00\", to = \"10:00\" }",
            "categories.marketing.send_window",
        ),
        ("[categories.marketing]\nsend_window = { from = \"25:00\", to = \"10:00\" }", "`25:00` is not a local time"),
        ("[categories.promos]\nover_cap = \"drop\"", "categories.promos: no event type has this category"),
        ("[categories.marketing]\nover_cap = \"queue\"", "over_cap"),
        (
            r#"[events."order.confirmed".digest]
window = "0s""#,
            "events.\"order.confirmed\".digest.window must be at least 1s",
        ),
        (
            r#"[events."order.confirmed".digest]
window = "1h"
max_items = 0"#,
            "events.\"order.confirmed\".digest.max_items must be within 1..=10000",
        ),
        (
            r#"[events."order.confirmed".digest]
window = "1h"
key = "data.order_id""#,
            "events.\"order.confirmed\".digest.key `data.order_id` is not a JSON pointer",
        ),
        (
            r#"[events."order.confirmed".digest]
window = "1h"
at = "09:00""#,
            "events.\"order.confirmed\".digest: give either `window` or `at`",
        ),
        (
            r#"[events."account.password_reset".digest]
window = "1h""#,
            "a critical event goes at once",
        ),
    ];
    for (extra, said) in cases {
        let error = refused(extra);
        assert!(error.contains(said), "{extra}: {error}");
    }
    // And what is right loads.
    let good = "[caps.marketing]\nmax = 2\nper = \"24h\"\n[caps.all]\nmax = 10\nper = \"1h\"\ncategories = [\"*\"]\n\
                [categories.marketing]\nover_cap = \"drop\"\nsend_window = { from = \"10:00\", to = \"18:00\" }";
    let config = Config::from_toml(&format!("{base}\n{good}")).unwrap();
    let names: Vec<&str> = config.caps_of("marketing", tidings_core::Priority::Bulk).map(|(n, _)| n).collect();
    assert_eq!(names, ["all", "marketing"]);
    assert_eq!(config.caps_of("security", tidings_core::Priority::Critical).count(), 0, "critical: never capped");
}
