//! One-click unsubscribe links (RFC 8058): a token that says which user
//! leaves which category, signed so nobody can make one for someone else.
//!
//! A token is `<key id>.<user>.<category>.<mac>`: user and category in
//! unpadded base64url, the mac HMAC-SHA256 (key `<key id>`'s secret) of
//! everything before it, in unpadded base64url. It never expires: a link
//! in a mail from last year still works. Keys rotate: the first key of
//! `[unsubscribe] keys` signs, every listed key verifies, so a key is
//! retired by moving a new one to the front and dropping the old one once
//! its links may go dead.

use crate::config::UnsubscribeConfig;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;

type Sha256Mac = Hmac<sha2_010::Sha256>;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub user_id: String,
    pub category: String,
}

/// The links of the messages of one configuration.
#[derive(Debug, Clone)]
pub struct Links {
    config: UnsubscribeConfig,
}

/// The two ways to leave a list that an email header offers (RFC 2369).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListUnsubscribe {
    /// `https://…/u/<token>`: one-click POST, or a page to confirm on.
    pub url: String,
    /// `mailto:…`, when configured.
    pub mailto: Option<String>,
}

impl ListUnsubscribe {
    /// The `List-Unsubscribe` header's value.
    pub fn header(&self) -> String {
        match &self.mailto {
            Some(m) => format!("<{}>, <{}>", self.url, m),
            None => format!("<{}>", self.url),
        }
    }
}

/// The `List-Unsubscribe-Post` value that makes a link one-click (RFC 8058).
pub const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

impl Links {
    /// `None` when unsubscribe links are not configured (no URL or no key).
    pub fn new(config: &UnsubscribeConfig) -> Option<Self> {
        (config.url.is_some() && !config.keys.is_empty()).then(|| Links { config: config.clone() })
    }

    /// The link for `user` to leave `category`, when email of that category carries one.
    pub fn for_message(&self, user_id: &str, category: &str) -> Option<ListUnsubscribe> {
        if !self.config.categories.iter().any(|c| c == category) {
            return None;
        }
        let base = self.config.url.as_ref()?;
        let url = format!("{}/{}", base.as_str().trim_end_matches('/'), self.token(user_id, category));
        let mailto = self.config.mailto.as_ref().map(|m| format!("mailto:{m}?subject=unsubscribe"));
        Some(ListUnsubscribe { url, mailto })
    }

    /// A token signed with the first key.
    pub fn token(&self, user_id: &str, category: &str) -> String {
        let key = &self.config.keys[0];
        let signed = format!("{}.{}.{}", key.id, B64.encode(user_id), B64.encode(category));
        let mac = mac(key.secret.expose_secret(), &signed).finalize().into_bytes();
        format!("{signed}.{}", B64.encode(mac))
    }

    /// What `token` says, if one of the keys signed it for a category of
    /// `categories` (a category taken out of them is no longer left by its
    /// old links).
    pub fn verify(&self, token: &str) -> Option<Unsubscribe> {
        let (signed, given) = token.rsplit_once('.')?;
        let mut parts = signed.split('.');
        let (id, user, category) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let key = self.config.keys.iter().find(|k| k.id == id)?;
        let given = B64.decode(given).ok()?;
        mac(key.secret.expose_secret(), signed).verify_slice(&given).ok()?;
        let text = |part: &str| B64.decode(part).ok().and_then(|b| String::from_utf8(b).ok());
        let said = Unsubscribe { user_id: text(user)?, category: text(category)? };
        // Only a category whose email carries links can be left by one.
        self.config.categories.contains(&said.category).then_some(said)
    }
}

fn mac(secret: &str, signed: &str) -> Sha256Mac {
    let mut mac = Sha256Mac::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(signed.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(keys: &[(&str, &str)]) -> Links {
        let config: UnsubscribeConfig = serde_json::from_value(serde_json::json!({
            "url": "https://hooks.shop.example/u",
            "mailto": "leave@shop.example",
            "keys": keys.iter().map(|(id, s)| serde_json::json!({"id": id, "secret": s})).collect::<Vec<_>>(),
        }))
        .unwrap();
        Links::new(&config).unwrap()
    }

    #[test]
    fn a_token_says_who_leaves_what_and_only_its_keys_made_it() {
        let l = links(&[("k1", "a-long-secret-of-the-first-key")]);
        let token = l.token("u-42", "marketing");
        let said = Unsubscribe { user_id: "u-42".into(), category: "marketing".into() };
        assert_eq!(l.verify(&token), Some(said));
        // Another user or category in the same signature does not verify.
        let (_, mac) = token.rsplit_once('.').unwrap();
        let forged = format!("k1.{}.{}.{mac}", B64.encode("u-43"), B64.encode("marketing"));
        assert_eq!(l.verify(&forged), None);
        assert_eq!(l.verify("k1.x.y"), None);
        assert_eq!(l.verify(&token.replace("k1.", "k9.")), None, "an unknown key");
        assert_eq!(links(&[("k1", "another-secret-entirely")]).verify(&token), None);
    }

    #[test]
    fn a_rotated_key_still_verifies_while_listed() {
        let old = links(&[("k1", "a-long-secret-of-the-first-key")]);
        let token = old.token("u-42", "marketing");
        let rotated = links(&[("k2", "the-new-key-signs-from-now"), ("k1", "a-long-secret-of-the-first-key")]);
        assert!(rotated.verify(&token).is_some());
        assert!(rotated.token("u-42", "marketing").starts_with("k2."));
        let retired = links(&[("k2", "the-new-key-signs-from-now")]);
        assert_eq!(retired.verify(&token), None);
    }

    #[test]
    fn only_configured_categories_carry_a_link() {
        let l = links(&[("k1", "a-long-secret-of-the-first-key")]);
        let link = l.for_message("u-42", "marketing").unwrap();
        assert!(link.url.starts_with("https://hooks.shop.example/u/k1."), "{}", link.url);
        assert_eq!(link.header(), format!("<{}>, <mailto:leave@shop.example?subject=unsubscribe>", link.url));
        assert_eq!(l.for_message("u-42", "transactional"), None);
    }

    /// A token signed by a key but for a category without links (one a
    /// leaked or placeholder key could mint, such as `security`) opts
    /// nobody out of anything.
    #[test]
    fn a_token_for_a_category_without_links_does_not_verify() {
        let l = links(&[("k1", "a-long-secret-of-the-first-key")]);
        assert_eq!(l.verify(&l.token("u-42", "security")), None);
        assert!(l.verify(&l.token("u-42", "marketing")).is_some());
    }
}
