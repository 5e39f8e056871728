//! DKIM signing (RFC 6376) of every message the SMTP adapter sends, with
//! lettre's signer: relaxed canonicalization of headers and body, over
//! `From`, `To`, `Subject`, `Date` and `Message-ID`, and the two
//! `List-Unsubscribe` headers when the message has them (RFC 8058 wants
//! them covered by the signature, or mailbox providers ignore one-click).

use super::config::{DkimAlgorithm, DkimSettings};
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm, DkimSigningKey,
};
use lettre::message::header::HeaderName;
use lettre::Message;
use secrecy::ExposeSecret;

/// The signer of one configuration: one set of signed headers for mail
/// with an unsubscribe link, one for mail without (lettre signs each
/// header it is given, present or not).
pub struct Signer {
    plain: DkimConfig,
    with_unsubscribe: DkimConfig,
}

impl Signer {
    pub fn new(settings: &DkimSettings) -> Result<Self, String> {
        let config = |extra: &[&'static str]| -> Result<DkimConfig, String> {
            let key = DkimSigningKey::new(&settings.key()?, algorithm(settings.algorithm))
                .map_err(|_| "dkim: the private key is not usable (not shown)".to_string())?;
            let mut headers: Vec<HeaderName> = ["From", "To", "Subject", "Date", "Message-ID"]
                .into_iter()
                .chain(extra.iter().copied())
                .map(HeaderName::new_from_ascii_str)
                .collect();
            headers.dedup();
            let relaxed = DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            };
            Ok(DkimConfig::new(settings.selector.clone(), settings.domain.clone(), key, headers, relaxed))
        };
        Ok(Signer { plain: config(&[])?, with_unsubscribe: config(&["List-Unsubscribe", "List-Unsubscribe-Post"])? })
    }

    pub fn sign(&self, message: &mut Message, has_unsubscribe: bool) {
        message.sign(if has_unsubscribe { &self.with_unsubscribe } else { &self.plain });
    }
}

fn algorithm(a: DkimAlgorithm) -> DkimSigningAlgorithm {
    match a {
        DkimAlgorithm::Rsa => DkimSigningAlgorithm::Rsa,
        DkimAlgorithm::Ed25519 => DkimSigningAlgorithm::Ed25519,
    }
}

impl DkimSettings {
    /// The private key's text, from the setting or the file.
    pub fn key(&self) -> Result<String, String> {
        match (&self.private_key, &self.private_key_file) {
            (Some(key), None) => Ok(key.expose_secret().to_string()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|k| k.trim().to_string())
                .map_err(|e| format!("dkim.private_key_file {}: {e}", path.display())),
            _ => Err("dkim: set one of `private_key` and `private_key_file`".into()),
        }
    }
}
