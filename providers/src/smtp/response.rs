//! Classifying SMTP failures: the reply code decides transient (4yz) or
//! permanent (5yz); the enhanced status code in the reply text (RFC 3463)
//! tells an invalid mailbox apart from a rejected message.

use crate::ProviderError;

pub fn classify(err: &lettre::transport::smtp::Error) -> ProviderError {
    let text = err.to_string();
    let enhanced = enhanced_code(&text);
    if err.is_transient() {
        ProviderError::transient(format!("smtp {text}"))
    } else if err.is_permanent() {
        match enhanced {
            // 5.1.x: bad destination mailbox or address.
            Some((5, 1, _)) => ProviderError::invalid_recipient(format!("smtp {text}")),
            // 5.7.x from a relay that refuses us is about us, not the message.
            Some((5, 7, 0 | 8)) => {
                tracing::error!(error = %text, "the SMTP relay refused our credentials");
                ProviderError::down(format!("smtp authentication: {text}"))
            }
            _ => ProviderError::permanent(format!("smtp {text}")),
        }
    } else if err.is_timeout() || text.starts_with("network error") {
        // Mid-transaction (lettre's `Network` kind, which it exposes only in
        // its text; `Connection` is the connect phase): possibly after DATA.
        ProviderError::ambiguous(format!("smtp no answer: {text}"))
    } else {
        // Connection refused or dropped, TLS failure, unexpected reply.
        ProviderError::down(format!("smtp unavailable: {text}"))
    }
}

/// The first `class.subject.detail` code in a reply text, e.g. `5.1.1`.
pub fn enhanced_code(text: &str) -> Option<(u8, u16, u16)> {
    text.split(|c: char| c.is_whitespace() || c == ':' || c == ',').find_map(|word| {
        let mut parts = word.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        (parts.next().is_none() && matches!(class, 2 | 4 | 5)).then_some((class, subject, detail))
    })
}

#[cfg(test)]
mod tests {
    use super::enhanced_code;

    #[test]
    fn finds_the_enhanced_status_code_in_reply_text() {
        assert_eq!(enhanced_code("permanent error (550): 5.1.1 <x@y.z>: user unknown"), Some((5, 1, 1)));
        assert_eq!(enhanced_code("transient error (452): 4.2.2 mailbox full"), Some((4, 2, 2)));
        assert_eq!(enhanced_code("version 1.2.3 of nothing"), None);
        assert_eq!(enhanced_code("no code here"), None);
    }
}
