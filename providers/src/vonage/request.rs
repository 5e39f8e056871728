//! The SMS API form: numbers without the `+`, `type=unicode` when the body
//! needs UCS-2, and the notification id as `client-ref`.

use crate::rules::sms_segments;

pub fn form<'a>(
    api_key: &'a str,
    api_secret: &'a str,
    from: &'a str,
    to: &'a str,
    text: &'a str,
    client_ref: &'a str,
) -> Vec<(&'static str, &'a str)> {
    let mut form = vec![
        ("api_key", api_key),
        ("api_secret", api_secret),
        ("from", from.trim_start_matches('+')),
        ("to", to.trim_start_matches('+')),
        ("text", text),
        ("client-ref", client_ref),
    ];
    if sms_segments(text).unicode {
        form.push(("type", "unicode"));
    }
    form
}
