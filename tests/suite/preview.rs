//! `tidings templates preview` and `render --out`: every rendering written
//! where a browser or a mail client opens it, the index opened in headless
//! Chromium, and `--watch` rendering again when a template changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tidings(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["--config", &format!("{ROOT}/tidings.example.toml")])
        .args(args)
        .env_remove("TIDINGS_CONFIG")
        .current_dir(ROOT)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Every `href` of an HTML page.
fn links(html: &str) -> Vec<String> {
    html.split("href=\"").skip(1).filter_map(|rest| rest.split('"').next()).map(str::to_string).collect()
}

/// Headless Chromium, as root on a machine without a network.
fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Distinct colours of a PNG screenshot.
fn colours(png: &Path) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    let mut seen = std::collections::HashSet::new();
    for px in bytes.chunks(step) {
        seen.insert(px.to_vec());
    }
    seen.len()
}

#[test]
fn the_preview_writes_every_rendering_and_chromium_shows_the_index_with_no_broken_link() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("preview");
    let (ok, said) = tidings(&["templates", "preview", "--out", out.to_str().unwrap()]);
    assert!(ok, "{said}");
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    // As many renderings as `templates check` renders.
    let (_, checked) = tidings(&["templates", "check"]);
    let rendered = checked.lines().filter(|l| l.contains(": ") && !l.starts_with("error")).count();
    assert_eq!(index.matches("<tr><td>").count(), rendered, "{index}");
    assert!(index.contains("0 warnings"), "{index}");
    let hrefs = links(&index);
    assert!(hrefs.len() > rendered, "{hrefs:?}");
    for href in &hrefs {
        assert!(out.join(href).is_file(), "the index links {href}, which is not there");
    }
    // An email as a mail client opens it: the MIME the adapter sends.
    let eml = std::fs::read_to_string(out.join("order.confirmed/email.fr.eml")).unwrap();
    for header in [
        "From: Shop <no-reply@shop.example>\r\n",
        "To: preview@example.com\r\n",
        "Message-ID: <",
        "Content-Type: multipart/alternative",
    ] {
        assert!(eml.contains(header), "{header} in\n{eml}");
    }
    let sms = index.lines().find(|l| l.contains("order.confirmed/sms.fr")).unwrap();
    assert!(sms.contains("1 segment, GSM-7"), "{sms}");
    let push = index.lines().find(|l| l.contains("order.confirmed/push.body.fr")).unwrap();
    assert!(push.contains("bytes of 4096"), "{push}");

    // Opened in headless Chromium: the DOM it built links only files that
    // are there, and its screenshot shows a page, not a blank one.
    let profile = tmp.path().join("chromium");
    let url = format!("file://{}", out.join("index.html").display());
    let dom = chromium(&profile).args(["--dump-dom", &url]).output().unwrap();
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let parsed = links(&dom);
    assert_eq!(parsed.len(), hrefs.len(), "{dom}");
    for href in &parsed {
        assert!(out.join(href).is_file(), "Chromium sees a link to {href}, which is not there");
    }
    for (page, shot) in [
        (url.clone(), "index.png"),
        (format!("file://{}", out.join("order.confirmed/email.fr.html").display()), "email.png"),
    ] {
        let png = tmp.path().join(shot);
        let run = chromium(&profile)
            .args([&format!("--screenshot={}", png.display()), "--window-size=1200,900", &page])
            .output()
            .unwrap();
        assert!(run.status.success() && png.is_file(), "{}", String::from_utf8_lossy(&run.stderr));
        assert!(colours(&png) > 8, "{shot} is a blank page");
    }
}

/// A `fr-CA` reader gets the French files, and the preview of one says so.
#[test]
fn rendering_one_for_fr_ca_writes_its_preview_and_names_the_french_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("one");
    let (ok, said) = tidings(&[
        "templates",
        "render",
        "order.confirmed",
        "email",
        "--locale",
        "fr-CA",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{said}");
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        index
            .contains("order.confirmed/email.subject.fr, order.confirmed/email.text.fr, order.confirmed/email.html.fr"),
        "{index}"
    );
    let html = std::fs::read_to_string(out.join("order.confirmed/email.fr-CA.html")).unwrap();
    assert!(html.contains("29,95 €") && html.contains("Vous recevez cet e-mail"), "{html}");
}

/// `--watch` renders again when a template changes, and the index says when.
#[tokio::test]
async fn watching_renders_again_when_a_template_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("templates");
    crate::harness::copy_dir(&Path::new(ROOT).join("templates"), &dir);
    let out = tmp.path().join("preview");
    // Killed when dropped, whatever the test's outcome.
    let _watching: crate::harness::Process = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["templates", "preview", "--watch", "--dir"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .env_remove("TIDINGS_CONFIG")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
        .into();
    let rendered_at = |out: &PathBuf| -> Option<String> {
        let index = std::fs::read_to_string(out.join("index.html")).ok()?;
        Some(index.split("<time id=\"rendered\">").nth(1)?.split('<').next()?.to_string())
    };
    let (deadline, every) = (Duration::from_secs(30), Duration::from_millis(100));
    crate::harness::eventually("the first rendering", deadline, every, || async { rendered_at(&out).is_some() }).await;
    let first = rendered_at(&out).unwrap();
    std::fs::write(dir.join("order.confirmed/sms.hbs"), "Shop: your order {{order_id}} is confirmed.").unwrap();
    let sms = out.join("order.confirmed/sms.en.txt");
    crate::harness::eventually("a rendering of the change", deadline, every, || async {
        let text = std::fs::read_to_string(&sms).unwrap_or_default();
        text.contains("your order o-1042 is confirmed") && rendered_at(&out).is_some_and(|at| at != first)
    })
    .await;
}
