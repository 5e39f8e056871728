//! The routes. Each provider's name in `[providers]` is part of its paths,
//! so two accounts of one provider each check with their own secret:
//!
//! - `POST /callbacks/<twilio provider>/status?n=<notification id>`: Twilio
//!   message status (the adapter gives each message this URL);
//! - `POST /callbacks/<twilio provider>/inbound`: Twilio inbound messages;
//! - `POST /callbacks/<sendgrid provider>/events`: SendGrid's Event Webhook;
//! - `GET|POST /callbacks/<vonage provider>/receipts`: Vonage delivery receipts;
//! - `GET|POST /u/<token>`: one-click unsubscribe ([`crate::unsubscribe`]).
//!
//! A request is answered once it is checked, read and written to
//! `tidings.callbacks` (acknowledged by the cluster): 401 when its
//! signature is missing, wrong or stale, 400 when it is not what the
//! provider sends, 404 for a path no provider has (its body unread), 413
//! for a body larger than its route takes, 503 when `callbacks.queue`
//! requests are being written already or the write took longer than
//! `callbacks.write_timeout` (the provider sends it again later; a copy
//! written after all is applied once), 200 otherwise; 408 past
//! `callbacks.request_timeout` ([`crate::listener`]). A refused request
//! changes nothing.

use crate::apply::{Callback, Work};
use crate::verify::{verifiers, Verifier};
use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rdkafka::producer::FutureProducer;
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::channel::CALLBACKS_TOPIC;
use tidings_core::kafka::{delivered, enqueue_json};
use tidings_core::redact::printable;
use tidings_core::store::SharedStore;
use tidings_core::unsubscribe::Links;
use tidings_core::{Clock, Config};
use tidings_providers::feedback::{form_pairs, param, Refused};
use tidings_providers::{sendgrid, twilio, vonage};
use tokio::sync::Semaphore;

/// What every route shares.
pub struct State {
    verifiers: HashMap<String, Verifier>,
    public_url: Option<url::Url>,
    tolerance: Duration,
    producer: FutureProducer,
    /// Requests being written, at most `callbacks.queue`.
    writing: Semaphore,
    write_timeout: Duration,
    pub(crate) links: Option<Links>,
    pub(crate) store: SharedStore,
    pub(crate) clock: Clock,
    pub(crate) limits: tidings_core::config::BodyLimits,
}

impl State {
    pub fn new(
        config: &Config,
        store: SharedStore,
        clock: Clock,
        producer: FutureProducer,
    ) -> Result<Arc<Self>, crate::Error> {
        Ok(Arc::new(State {
            verifiers: verifiers(config)?,
            public_url: config.callbacks.public_url.clone(),
            tolerance: config.callbacks.signature_tolerance,
            producer,
            writing: Semaphore::new(config.callbacks.queue.max(1)),
            write_timeout: config.callbacks.write_timeout,
            links: Links::new(&config.unsubscribe),
            store,
            clock,
            limits: config.callbacks.max_body.clone(),
        }))
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp()
    }

    /// The URL the provider called: the configured public URL with the
    /// request's path and query, else the request's `Host` over `http`.
    fn called_url(&self, uri: &axum::http::Uri, headers: &HeaderMap) -> String {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        match &self.public_url {
            Some(base) => format!("{}{path}", base.as_str().trim_end_matches('/')),
            None => {
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
                format!("http://{host}{path}")
            }
        }
    }

    /// Writes `work` to `tidings.callbacks`, answering the provider once
    /// it is acknowledged; 400 for an id, code, reason or address longer
    /// than any provider sends (nothing of it written).
    async fn enqueue(&self, provider: &str, work: Vec<Work>) -> Response {
        if let Some(why) = work.iter().find_map(oversized) {
            return refused(provider, Refused::Malformed(why));
        }
        let Ok(_writing) = self.writing.try_acquire() else {
            counted(provider, "queue_full");
            tracing::warn!(provider, "callbacks.queue requests are being written already: answering 503");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        let at = self.clock.now();
        let written = tokio::time::timeout(self.write_timeout, async {
            let mut deliveries = Vec::with_capacity(work.len());
            for work in work {
                let key = work.key().to_string();
                deliveries
                    .push(enqueue_json(&self.producer, CALLBACKS_TOPIC, &key, &Callback { at, work }, None).await?);
            }
            for d in deliveries {
                delivered(d).await?;
            }
            Ok::<(), rdkafka::error::KafkaError>(())
        })
        .await;
        match written {
            Ok(Ok(())) => {
                counted(provider, "accepted");
                StatusCode::OK.into_response()
            }
            Ok(Err(e)) => {
                counted(provider, "not_written");
                tracing::error!(provider, error = %e, "a callback could not be written: answering 503");
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
            Err(_) => {
                counted(provider, "not_written");
                tracing::warn!(provider, "a callback was not written within callbacks.write_timeout: answering 503");
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
        }
    }
}

/// Why `work` holds a field longer than any provider sends, if it does.
fn oversized(work: &Work) -> Option<String> {
    const ID: usize = 256;
    const TEXT: usize = 2048;
    let fields: Vec<(&str, Option<&str>, usize)> = match work {
        Work::Feedback { feedback: f, .. } => vec![
            ("notification id", f.notification_id.as_deref(), ID),
            ("message id", f.provider_message_id.as_deref(), ID),
            ("code", f.code.as_deref(), ID),
            ("address", f.address.as_deref(), ID),
            ("reason", Some(f.reason.as_str()), TEXT),
        ],
        Work::Keyword { number, .. } => vec![("number", Some(number.as_str()), ID)],
    };
    fields
        .into_iter()
        .find(|(_, value, max)| value.is_some_and(|v| v.len() > *max))
        .map(|(name, _, max)| format!("a {name} longer than {max} bytes"))
}

type Shared = axum::extract::State<Arc<State>>;

pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/callbacks/{provider}/status", post(twilio_status))
        .route("/callbacks/{provider}/inbound", post(twilio_inbound))
        .route("/callbacks/{provider}/events", post(sendgrid_events))
        .route("/callbacks/{provider}/receipts", get(vonage_receipt).post(vonage_receipt))
        .route("/u/{token}", get(crate::unsubscribe::page).post(crate::unsubscribe::one_click))
        .with_state(state)
}

fn counted(provider: &str, outcome: &'static str) {
    metrics::counter!("tidings_callbacks_total", "provider" => provider.to_string(), "outcome" => outcome).increment(1);
}

/// The answer to a refused request, counted and logged.
fn refused(provider: &str, why: Refused) -> Response {
    let (status, outcome) = match &why {
        Refused::Forged => (StatusCode::UNAUTHORIZED, "forged"),
        Refused::Stale => (StatusCode::UNAUTHORIZED, "stale"),
        Refused::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
    };
    counted(provider, outcome);
    // The reason may quote the request: a line break in it must not forge a log line.
    tracing::warn!(provider = %printable(provider), reason = %printable(&why.to_string()), "a callback was refused");
    (status, format!("{why}\n")).into_response()
}

fn not_found(provider: &str) -> Response {
    tracing::warn!(provider = %printable(provider), "a callback for no configured provider of its kind");
    (StatusCode::NOT_FOUND, "no such provider\n").into_response()
}

/// The body of a request, read once its provider or token is known: at
/// most `limit` bytes. A larger one (or one that stops short) is answered
/// 413; one whose length says it is larger, without reading any of it.
pub(crate) async fn read(body: Body, limit: usize, provider: &str) -> Result<Bytes, Response> {
    let too_large = || {
        counted(provider, "too_large");
        tracing::warn!(provider, limit, "a callback body was refused as too large");
        (StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {limit} bytes\n")).into_response()
    };
    // Its `Content-Length` says so: not a byte of it is read.
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large())
}

/// The form of a request to Twilio provider `name`, once its signature is
/// checked; else the answer: 404 for no such provider (the body unread).
async fn twilio_form(
    s: &State,
    name: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<(String, String)>, Response> {
    let Some(Verifier::Twilio { auth_token }) = s.verifiers.get(name) else { return Err(not_found(name)) };
    let body = read(body, s.limits.form, name).await?;
    let params = form_pairs(&body);
    let signature = headers.get(twilio::callback::SIGNATURE_HEADER).and_then(|h| h.to_str().ok());
    twilio::callback::verify(auth_token.expose_secret(), &s.called_url(uri, headers), &params, signature)
        .map_err(|why| refused(name, why))?;
    Ok(params)
}

async fn twilio_status(
    axum::extract::State(s): Shared,
    Path(name): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let params = match twilio_form(&s, &name, &uri, &headers, body).await {
        Ok(params) => params,
        Err(answer) => return answer,
    };
    let query = form_pairs(uri.query().unwrap_or_default().as_bytes());
    let notification = param(&query, "n").map(str::to_string);
    match twilio::callback::status(&params, notification) {
        Ok(feedback) => s.enqueue(&name, vec![Work::Feedback { provider: name.clone(), feedback }]).await,
        Err(why) => refused(&name, why),
    }
}

async fn twilio_inbound(
    axum::extract::State(s): Shared,
    Path(name): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let params = match twilio_form(&s, &name, &uri, &headers, body).await {
        Ok(params) => params,
        Err(answer) => return answer,
    };
    let work = match twilio::callback::inbound(&params) {
        Ok(Some((keyword, number))) => vec![Work::Keyword { provider: name.clone(), keyword, number }],
        Ok(None) => vec![],
        Err(why) => return refused(&name, why),
    };
    let answer = s.enqueue(&name, work).await;
    if answer.status() != StatusCode::OK {
        return answer;
    }
    // An empty TwiML answer: Twilio's own opt-out replies to the keywords.
    ([(header::CONTENT_TYPE, "text/xml")], "<Response></Response>").into_response()
}

async fn sendgrid_events(
    axum::extract::State(s): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(Verifier::Sendgrid { key }) = s.verifiers.get(&name) else { return not_found(&name) };
    let Some(key) = key else {
        tracing::warn!(provider = %name, "webhook_verification_key is not set: SendGrid events are refused");
        return refused(&name, Refused::Forged);
    };
    let body = match read(body, s.limits.batch, &name).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let (signature, timestamp) =
        (header(sendgrid::callback::SIGNATURE_HEADER), header(sendgrid::callback::TIMESTAMP_HEADER));
    if let Err(why) = sendgrid::callback::verify(key, signature, timestamp, &body, s.now(), s.tolerance) {
        return refused(&name, why);
    }
    match sendgrid::callback::events(&body) {
        Ok(events) => {
            let work = events.into_iter().map(|feedback| Work::Feedback { provider: name.clone(), feedback }).collect();
            s.enqueue(&name, work).await
        }
        Err(why) => refused(&name, why),
    }
}

async fn vonage_receipt(
    axum::extract::State(s): Shared,
    Path(name): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(Verifier::Vonage { secret, method, accept_unsigned }) = s.verifiers.get(&name) else {
        return not_found(&name);
    };
    if secret.is_none() && !accept_unsigned {
        // Nothing to check it with (the role warned at start): refused unread.
        return refused(&name, Refused::Forged);
    }
    let body = match read(body, s.limits.form, &name).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let params = if json {
        match vonage::callback::json_params(&body) {
            Ok(p) => p,
            Err(why) => return refused(&name, why),
        }
    } else if body.is_empty() {
        form_pairs(uri.query().unwrap_or_default().as_bytes())
    } else {
        form_pairs(&body)
    };
    match secret {
        Some(secret) => {
            if let Err(why) = vonage::callback::verify(*method, secret.expose_secret(), &params, s.now(), s.tolerance) {
                return refused(&name, why);
            }
        }
        None => {
            metrics::counter!("tidings_callbacks_unsigned_total", "provider" => name.clone()).increment(1);
        }
    }
    match vonage::callback::receipt(&params) {
        Ok(feedback) => s.enqueue(&name, vec![Work::Feedback { provider: name.clone(), feedback }]).await,
        Err(why) => refused(&name, why),
    }
}
