//! The Messages API form.

pub enum Sender {
    From(String),
    MessagingService(String),
}

pub fn form<'a>(sender: &'a Sender, to: &'a str, body: &'a str) -> Vec<(&'static str, &'a str)> {
    let mut form = vec![("To", to), ("Body", body)];
    match sender {
        Sender::From(from) => form.push(("From", from)),
        Sender::MessagingService(sid) => form.push(("MessagingServiceSid", sid)),
    }
    form
}
