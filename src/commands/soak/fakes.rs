//! The soak's providers: one HTTP server speaking SendGrid's mail API (two
//! accounts), Vonage's SMS API (two accounts) and every user's webhook
//! endpoint, whose faults the schedule switches while the fleet runs. It
//! writes down every message it takes, in the order it took them: what a
//! user received, against which the soak counts sends, repeats, order and
//! quiet hours.

use super::schedule::{Endpoint, Mode};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A message a fake provider took.
#[derive(Debug, Clone)]
pub struct Taken {
    pub notification_id: String,
    pub endpoint: Endpoint,
    pub at: DateTime<Utc>,
}

#[derive(Default)]
struct Faults {
    /// The faults on each endpoint, by the token of the step that made
    /// them; the latest one applies.
    modes: HashMap<Endpoint, Vec<(usize, Mode)>>,
    /// Steps refusing recipients now.
    invalid: Vec<usize>,
}

pub struct Fakes {
    started: Instant,
    faults: Mutex<Faults>,
    taken: Mutex<Vec<Taken>>,
    refused: AtomicUsize,
}

/// Whether the fakes refuse user `s-<n>`'s recipients while recipients are
/// refused: one user in eight.
pub fn refusable(user: usize) -> bool {
    user % 8 == 5
}

impl Fakes {
    /// Serves on a free loopback port; returns the port.
    pub async fn serve() -> anyhow::Result<(Arc<Fakes>, u16)> {
        let fakes = Arc::new(Fakes {
            started: Instant::now(),
            faults: Mutex::default(),
            taken: Mutex::default(),
            refused: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/sendgrid/{account}/v3/mail/send", post(sendgrid))
            .route("/vonage/{account}/sms/json", post(vonage))
            .route("/hooks/{user}", post(hook))
            .with_state(fakes.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((fakes, port))
    }

    pub fn set(&self, token: usize, endpoint: Endpoint, mode: Mode) {
        self.faults.lock().unwrap().modes.entry(endpoint).or_default().push((token, mode));
    }

    pub fn refuse_recipients(&self, token: usize) {
        self.faults.lock().unwrap().invalid.push(token);
    }

    /// Lifts the fault of step `token`, wherever it is.
    pub fn lift(&self, token: usize) {
        let mut faults = self.faults.lock().unwrap();
        for modes in faults.modes.values_mut() {
            modes.retain(|(t, _)| *t != token);
        }
        faults.invalid.retain(|t| *t != token);
    }

    pub fn lift_all(&self) {
        *self.faults.lock().unwrap() = Faults::default();
    }

    /// Every message taken, in the order taken.
    pub fn taken(&self) -> Vec<Taken> {
        self.taken.lock().unwrap().clone()
    }

    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    /// What `endpoint` does with a message now.
    fn verdict(&self, endpoint: Endpoint, user: Option<usize>) -> Verdict {
        let faults = self.faults.lock().unwrap();
        if !faults.invalid.is_empty() && user.is_some_and(refusable) {
            return Verdict::Invalid;
        }
        match faults.modes.get(&endpoint).and_then(|m| m.last()).map(|(_, mode)| *mode) {
            None => Verdict::Take(Duration::ZERO),
            Some(Mode::Down) => Verdict::Down,
            Some(Mode::Flapping(half)) => {
                let phase = self.started.elapsed().as_millis() / half.as_millis().max(1);
                if phase % 2 == 1 {
                    Verdict::Down
                } else {
                    Verdict::Take(Duration::ZERO)
                }
            }
            Some(Mode::RateLimited(wait)) => Verdict::Limited(wait),
            Some(Mode::Slow(after) | Mode::Stall(after)) => Verdict::Take(after),
        }
    }

    /// Takes the message (writes it down) and waits `after` before the answer.
    async fn take(&self, id: String, endpoint: Endpoint, after: Duration) {
        self.taken.lock().unwrap().push(Taken { notification_id: id, endpoint, at: Utc::now() });
        if !after.is_zero() {
            tokio::time::sleep(after).await;
        }
    }

    fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
}

enum Verdict {
    Take(Duration),
    Down,
    Limited(Duration),
    Invalid,
}

/// `s-<n>` of an address, a number or a path: the user's index.
fn user_of(text: &str) -> Option<usize> {
    let start = text.find("s-")? + 2;
    let digits: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn account(name: &str, a: Endpoint, b: Endpoint) -> Option<Endpoint> {
    match name {
        "a" => Some(a),
        "b" => Some(b),
        _ => None,
    }
}

/// A fake's answers in its provider's own shapes: to a message it took, to
/// one while down, and to an invalid recipient.
struct Answers {
    taken: Response,
    down: Response,
    invalid: Response,
}

/// Takes, refuses or stalls message `id` to `user` at `endpoint`, as its faults say.
async fn answer(fakes: &Fakes, endpoint: Endpoint, user: Option<usize>, id: String, answers: Answers) -> Response {
    let verdict = fakes.verdict(endpoint, user);
    if !matches!(verdict, Verdict::Take(_)) {
        fakes.refuse();
    }
    match verdict {
        Verdict::Take(after) => {
            fakes.take(id, endpoint, after).await;
            answers.taken
        }
        Verdict::Down => answers.down,
        Verdict::Limited(wait) => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", wait.as_secs().max(1).to_string())]).into_response()
        }
        Verdict::Invalid => answers.invalid,
    }
}

async fn sendgrid(State(fakes): State<Arc<Fakes>>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(endpoint) = account(&name, Endpoint::SendgridA, Endpoint::SendgridB) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mail: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = mail["custom_args"]["notification_id"].as_str().unwrap_or_default().to_string();
    let to = mail["personalizations"][0]["to"][0]["email"].as_str().unwrap_or_default();
    let errors = |field: &str, message: &str| serde_json::json!({"errors": [{"field": field, "message": message}]});
    let answers = Answers {
        taken: (StatusCode::ACCEPTED, [("x-message-id", format!("sg-{id}"))]).into_response(),
        down: (StatusCode::SERVICE_UNAVAILABLE, errors("", "unavailable").to_string()).into_response(),
        invalid: (
            StatusCode::BAD_REQUEST,
            errors("personalizations.0.to", "Does not contain a valid address.").to_string(),
        )
            .into_response(),
    };
    answer(&fakes, endpoint, user_of(to), id, answers).await
}

async fn vonage(State(fakes): State<Arc<Fakes>>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(endpoint) = account(&name, Endpoint::VonageA, Endpoint::VonageB) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let id = form.get("client-ref").cloned().unwrap_or_default();
    let to = form.get("to").map(String::as_str).unwrap_or_default();
    let body = |status: &str, id: &str| {
        serde_json::json!({"message-count": "1", "messages": [{"status": status, "message-id": id, "error-text": ""}]})
            .to_string()
    };
    // The numbers are +1555 followed by the user's index on seven digits.
    let user = to.strip_prefix("1555").and_then(|n| n.parse().ok());
    let answers = Answers {
        taken: (StatusCode::OK, body("0", &format!("v-{id}"))).into_response(),
        down: StatusCode::SERVICE_UNAVAILABLE.into_response(),
        // 29: a destination the account may not send to.
        invalid: (StatusCode::OK, body("29", "")).into_response(),
    };
    answer(&fakes, endpoint, user, id, answers).await
}

async fn hook(State(fakes): State<Arc<Fakes>>, Path(user): Path<String>, headers: HeaderMap) -> Response {
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let answers = Answers {
        taken: StatusCode::NO_CONTENT.into_response(),
        down: StatusCode::SERVICE_UNAVAILABLE.into_response(),
        invalid: StatusCode::GONE.into_response(),
    };
    answer(&fakes, Endpoint::Hooks, user_of(&user), id, answers).await
}
