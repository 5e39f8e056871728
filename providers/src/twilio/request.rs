//! The Messages API form.

pub enum Sender {
    From(String),
    MessagingService(String),
}

/// The form; `status_callback` is the message's own status URL, when
/// statuses are reported ([`status_url`]).
pub fn form<'a>(
    sender: &'a Sender,
    to: &'a str,
    body: &'a str,
    status_callback: Option<&'a str>,
) -> Vec<(&'static str, &'a str)> {
    let mut form = vec![("To", to), ("Body", body)];
    match sender {
        Sender::From(from) => form.push(("From", from)),
        Sender::MessagingService(sid) => form.push(("MessagingServiceSid", sid)),
    }
    if let Some(url) = status_callback {
        form.push(("StatusCallback", url));
    }
    form
}

/// A message's status URL: the configured one with our notification id as
/// `n`, so its callbacks name the notification without a lookup.
pub fn status_url(base: &url::Url, notification_id: &str) -> String {
    let mut url = base.clone();
    url.query_pairs_mut().append_pair("n", notification_id);
    url.into()
}
