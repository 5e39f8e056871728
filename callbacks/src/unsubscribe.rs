//! `/u/{token}`: one-click unsubscribe (RFC 8058). A mailbox provider's
//! button POSTs `List-Unsubscribe=One-Click` and the user is opted out of
//! the token's category at once; a person following the link GETs a small
//! page whose button POSTs the same. A token no key made is 404, and
//! changes nothing.
//!
//! Opting out adds the category to the preferences' `opt_out` (the stored
//! text keeps every other field), by compare-and-set, so a preferences
//! write at the same moment is never overwritten.

use crate::routes::State;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use std::sync::Arc;
use tidings_core::persist::until_ok;
use tidings_providers::feedback::{form_pairs, param};

type Shared = axum::extract::State<Arc<State>>;

pub async fn page(axum::extract::State(s): Shared, Path(token): Path<String>) -> Response {
    let Some(said) = s.links.as_ref().and_then(|l| l.verify(&token)) else { return unknown() };
    let category = escape(&said.category);
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head><body>\
         <h1>Unsubscribe from {category} messages?</h1>\
         <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form></body></html>"
    );
    // Never cached, never followed by a prefetching scanner into a change: GET changes nothing.
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

pub async fn one_click(axum::extract::State(s): Shared, Path(token): Path<String>, body: Body) -> Response {
    let Some(said) = s.links.as_ref().and_then(|l| l.verify(&token)) else { return unknown() };
    let body = match crate::routes::read(body, s.limits.form, "unsubscribe").await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let form = form_pairs(&body);
    if param(&form, "List-Unsubscribe") != Some("One-Click") {
        return (StatusCode::BAD_REQUEST, "expected List-Unsubscribe=One-Click\n").into_response();
    }
    if !opt_out(s.store.as_ref(), &said.user_id, &said.category).await {
        // Nobody to opt out: the link's user is gone. Said plainly, nothing kept.
        return (StatusCode::OK, Html("<p>You are unsubscribed.</p>")).into_response();
    }
    metrics::counter!("tidings_unsubscribes_total", "category" => said.category.clone()).increment(1);
    tracing::info!(category = %said.category, "a user unsubscribed in one click");
    (StatusCode::OK, Html(format!("<p>You are unsubscribed from {} messages.</p>", escape(&said.category))))
        .into_response()
}

/// Adds `category` to `user`'s `opt_out` (by compare-and-set, every other
/// field kept); false when the user has no preferences.
pub(crate) async fn opt_out(store: &dyn tidings_core::store::Store, user: &str, category: &str) -> bool {
    let users = [user.to_string()];
    loop {
        let Some(old) = until_ok("read preferences", || store.prefs_many(&users)).await.pop().flatten() else {
            return false;
        };
        let Some(new) = opted_out(&old, category) else { return true };
        if until_ok("opt out", || store.swap_prefs(user, &old, &new)).await {
            return true;
        }
    }
}

/// `prefs` (stored JSON) with `category` in `opt_out`; `None` when it is
/// there already or the text is no JSON object (left as it is).
fn opted_out(prefs: &str, category: &str) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(prefs).ok()?;
    let object = value.as_object_mut()?;
    let list = object.entry("opt_out").or_insert_with(|| serde_json::json!([]));
    let list = list.as_array_mut()?;
    if list.iter().any(|c| c.as_str() == Some(category)) {
        return None;
    }
    list.push(category.into());
    Some(value.to_string())
}

fn unknown() -> Response {
    (StatusCode::NOT_FOUND, "this link is not valid\n").into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opting_out_adds_the_category_once_and_keeps_every_other_field() {
        let prefs = r#"{"user_id":"u-1","email":"a@b.io","opt_out":["sms_tips"],"loyalty_tier":"gold"}"#;
        let new = opted_out(prefs, "marketing").unwrap();
        let v: serde_json::Value = serde_json::from_str(&new).unwrap();
        assert_eq!(v["opt_out"], serde_json::json!(["sms_tips", "marketing"]));
        assert_eq!(v["loyalty_tier"], "gold");
        assert_eq!(opted_out(&new, "marketing"), None, "already out");
        let none = opted_out(r#"{"user_id":"u-1"}"#, "marketing").unwrap();
        assert!(none.contains(r#""opt_out":["marketing"]"#));
    }
}
