//! `tidings templates check` on a copy of the shipped templates broken one
//! way at a time: each fails with the file (and line) and what is wrong,
//! and the shipped tree passes.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `templates check` with the example configuration on `dir`: exit code and everything it said.
fn check(dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["--config", &format!("{ROOT}/tidings.example.toml"), "templates", "check", "--dir"])
        .arg(dir)
        .env_remove("TIDINGS_CONFIG")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// A copy of the shipped templates, changed by `change`.
fn broken(change: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("templates");
    crate::harness::copy_dir(Path::new(ROOT).join("templates").as_path(), &dir);
    change(&dir);
    (tmp, dir)
}

fn fails_saying(change: impl FnOnce(&Path), said: &[&str]) {
    let (_tmp, dir) = broken(change);
    let (code, out) = check(&dir);
    assert_eq!(code, Some(1), "{out}");
    for s in said {
        assert!(out.contains(s), "expected `{s}` in:\n{out}");
    }
}

#[test]
fn the_shipped_templates_pass_and_say_which_file_each_rendering_used() {
    let (code, out) = check(&Path::new(ROOT).join("templates"));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("order.confirmed email fr: order.confirmed/email.subject.fr, order.confirmed/email.text.fr"),
        "{out}"
    );
}

#[test]
fn a_template_that_does_not_compile() {
    fails_saying(
        |d| std::fs::write(d.join("order.confirmed/email.html.hbs"), "<p>\n{{#each items}}\n<p>x</p>\n").unwrap(),
        &["order.confirmed/email.html.hbs:4:1 does not compile"],
    );
}

#[test]
fn a_variable_the_sample_lacks() {
    fails_saying(
        |d| std::fs::write(d.join("refund.issued/email.text.hbs"), "Hello\n{{refund_reference}}\n").unwrap(),
        &["refund.issued/email.text.hbs:2:1:", "refund_reference"],
    );
}

#[test]
fn a_partial_that_does_not_exist_and_one_nobody_uses() {
    fails_saying(
        |d| {
            std::fs::write(d.join("refund.issued/email.text.hbs"), "Hello\n\n{{> legal_notice}}\n").unwrap();
            std::fs::write(d.join("partials/old_banner.hbs"), "<p>Sale!</p>").unwrap();
        },
        &["refund.issued/email.text.hbs:3:1:", "Partial not found legal_notice", "partials/old_banner.hbs: never used"],
    );
}

#[test]
fn an_sms_over_the_segment_limit() {
    let long = "Shop: order {{order_id}} confirmed. ".repeat(20) + "{{order_url}}";
    fails_saying(
        |d| std::fs::write(d.join("order.confirmed/sms.hbs"), long).unwrap(),
        &["order.confirmed/sms.hbs: the sample takes 5 GSM-7 segments, more than channels.sms.max_segments (4)"],
    );
}

#[test]
fn an_sms_made_ucs2_by_its_own_text() {
    fails_saying(
        |d| {
            std::fs::write(
                d.join("order.confirmed/sms.fr.hbs"),
                "Shop :\ncommande {{order_id}} prête ! {{order_url}}\n",
            )
            .unwrap()
        },
        &["order.confirmed/sms.fr.hbs:2: `ê` is not in the GSM-7 alphabet"],
    );
}

#[test]
fn a_push_payload_over_4_kb() {
    fails_saying(
        |d| std::fs::write(d.join("order.confirmed/push.body.hbs"), "x".repeat(4100)).unwrap(),
        &["order.confirmed/push.title.hbs and order.confirmed/push.body.hbs: the sample's push payload is 4179 bytes"],
    );
}

#[test]
fn a_subject_with_a_line_break() {
    fails_saying(
        |d| std::fs::write(d.join("order.confirmed/email.subject.hbs"), "Order {{order_id}}\nconfirmed").unwrap(),
        &["order.confirmed/email.subject.hbs: the subject renders with a line break"],
    );
}

#[test]
fn a_marketing_email_without_the_unsubscribe_link() {
    fails_saying(
        |d| {
            std::fs::write(d.join("marketing.campaign/email.text.fr.hbs"), "{{headline}}\n\n{{body}}\n\n{{cta_url}}\n")
                .unwrap()
        },
        &["marketing.campaign/email.text.fr.hbs: an email of an unsubscribe category without {{unsubscribe_url}}"],
    );
}

#[test]
fn unescaped_output_where_html_renders() {
    fails_saying(
        |d| {
            let html = d.join("order.confirmed/email.html.hbs");
            let source = std::fs::read_to_string(&html).unwrap();
            std::fs::write(&html, format!("{source}\n<p>{{{{{{order_id}}}}}}</p>\n")).unwrap();
            std::fs::write(
                d.join("partials/footer.hbs"),
                "<small>{{~& order_id}}</small>\n<i>{{\n  {order_id} }}</i>\n",
            )
            .unwrap();
            // Text parts are not HTML: nothing is escaped there, and nothing is said.
            std::fs::write(d.join("refund.issued/email.text.hbs"), "Refund for {{{order_id}}}\n").unwrap();
        },
        &[
            "order.confirmed/email.html.hbs:",
            "`{{{order_id}}}` writes its value without HTML escaping",
            "partials/footer.hbs:1: `{{~& order_id}}` writes its value without HTML escaping",
            "partials/footer.hbs:2: `{{ {order_id} }}` writes its value without HTML escaping",
        ],
    );
    let (_tmp, dir) =
        broken(|d| std::fs::write(d.join("refund.issued/email.text.hbs"), "Refund {{{order_id}}}\n").unwrap());
    let (code, out) = check(&dir);
    assert_eq!(code, Some(0), "{out}");
}
