//! CloudEvents 1.0 input in both Kafka modes.
//!
//! Structured mode carries the whole event as a JSON value. Binary mode carries
//! the attributes as `ce_*` headers and the event `data` as the JSON value.
//! Either way the event is decoded into a [`CloudEvent`] whose JSON form (the
//! structured one) is what the user-id pointer is evaluated against.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The event's data, kept as the JSON text it arrived as: intake passes it
    /// on to notifications without building it up and tearing it down.
    #[serde(default = "null")]
    pub data: Box<RawValue>,
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

/// Why an input record is not a usable event. Each ends on `tidings.intake.dlq`.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("value is not valid JSON: {0}")]
    Json(String),
    #[error("not a CloudEvent: {0}")]
    Shape(String),
    #[error("unsupported CloudEvents specversion `{0}` (expected 1.0)")]
    Version(String),
    #[error("binary-mode header `{0}` is missing")]
    MissingHeader(&'static str),
    #[error("no user id at JSON pointer `{0}`")]
    NoUser(String),
}

impl CloudEvent {
    /// Decodes a Kafka record. `headers` are (name, value) pairs; a
    /// `ce_specversion` header selects binary mode.
    pub fn decode(value: Option<&[u8]>, headers: &[(String, Vec<u8>)]) -> Result<Self, DecodeError> {
        let header =
            |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        let event = if let Some(specversion) = header("ce_specversion") {
            let data = match value {
                None | Some(b"") => null(),
                Some(bytes) => {
                    serde_json::from_slice::<&RawValue>(bytes).map_err(|e| DecodeError::Json(e.to_string()))?.to_owned()
                }
            };
            let time = match header("ce_time") {
                None => None,
                Some(t) => Some(
                    DateTime::parse_from_rfc3339(&t)
                        .map_err(|e| DecodeError::Shape(format!("ce_time `{t}`: {e}")))?
                        .with_timezone(&Utc),
                ),
            };
            CloudEvent {
                specversion,
                id: header("ce_id").ok_or(DecodeError::MissingHeader("ce_id"))?,
                ty: header("ce_type").ok_or(DecodeError::MissingHeader("ce_type"))?,
                source: header("ce_source").ok_or(DecodeError::MissingHeader("ce_source"))?,
                time,
                subject: header("ce_subject"),
                correlationid: header("ce_correlationid"),
                traceparent: header("ce_traceparent").or_else(|| header("traceparent")),
                data,
            }
        } else {
            let bytes = value.ok_or_else(|| DecodeError::Shape("empty value".into()))?;
            let json: Value = serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
            serde_json::from_value(json).map_err(|e| DecodeError::Shape(e.to_string()))?
        };
        if event.specversion != "1.0" {
            return Err(DecodeError::Version(event.specversion));
        }
        if event.id.is_empty() || event.ty.is_empty() {
            return Err(DecodeError::Shape("`id` and `type` must not be empty".into()));
        }
        Ok(event)
    }

    /// The user this event is about, found at a JSON pointer into the
    /// structured form (`/data/user_id` by default, `/subject` also works).
    pub fn user_id(&self, pointer: &str) -> Result<String, DecodeError> {
        let found = match pointer {
            "/subject" => self.subject.clone().map(Value::String),
            "/source" => Some(Value::String(self.source.clone())),
            p if p.starts_with("/data/") => lookup(&self.data, &p["/data".len()..]),
            // Anything else: look it up in the structured form.
            p => serde_json::to_value(self).ok().and_then(|j| j.pointer(p).cloned()),
        };
        match found {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(DecodeError::NoUser(pointer.to_string())),
        }
    }
}

/// The value at JSON `pointer` inside `raw`, walking only the objects and
/// arrays on the way: siblings are skipped, never built.
fn lookup(raw: &RawValue, pointer: &str) -> Option<Value> {
    let mut here: &RawValue = raw;
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        let mut de = serde_json::Deserializer::from_str(here.get());
        here = serde::de::DeserializeSeed::deserialize(Step(&token), &mut de).ok()??;
    }
    serde_json::from_str(here.get()).ok()
}

/// One step of a JSON pointer: the member `.0` of an object, or the element
/// at index `.0` of an array.
struct Step<'t>(&'t str);

impl<'de> serde::de::DeserializeSeed<'de> for Step<'_> {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Step<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object or an array")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if found.is_none() && key.0 == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let wanted: Option<usize> = self.0.parse().ok();
        let (mut i, mut found) = (0, None);
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if Some(i) == wanted {
                found = Some(item);
            }
            i += 1;
        }
        Ok(found)
    }
}

/// An object key, borrowed from the input unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_mode_decodes_and_finds_the_user() {
        let raw = br#"{"specversion":"1.0","id":"e1","type":"order.confirmed","source":"/shop",
            "time":"2026-11-26T10:00:00Z","data":{"user_id":"u-1","order_id":"o-9"}}"#;
        let event = CloudEvent::decode(Some(raw), &[]).unwrap();
        assert_eq!(event.ty, "order.confirmed");
        assert_eq!(event.user_id("/data/user_id").unwrap(), "u-1");
        assert_eq!(event.user_id("/data/nope"), Err(DecodeError::NoUser("/data/nope".into())));
    }

    #[test]
    fn binary_mode_reads_ce_headers() {
        let headers = vec![
            ("ce_specversion".to_string(), b"1.0".to_vec()),
            ("ce_id".to_string(), b"e2".to_vec()),
            ("ce_type".to_string(), b"shipment.dispatched".to_vec()),
            ("ce_source".to_string(), b"/wms".to_vec()),
            ("ce_subject".to_string(), b"u-7".to_vec()),
        ];
        let event = CloudEvent::decode(Some(br#"{"carrier":"UPS"}"#), &headers).unwrap();
        assert_eq!(event.id, "e2");
        assert_eq!(event.data.get(), r#"{"carrier":"UPS"}"#);
        assert_eq!(event.user_id("/subject").unwrap(), "u-7");
    }

    #[test]
    fn malformed_input_is_a_clear_error() {
        assert!(matches!(CloudEvent::decode(Some(b"{not json"), &[]), Err(DecodeError::Json(_))));
        assert!(matches!(CloudEvent::decode(Some(br#"{"id":"x"}"#), &[]), Err(DecodeError::Shape(_))));
        let v = br#"{"specversion":"0.3","id":"e","type":"t","source":"s"}"#;
        assert_eq!(CloudEvent::decode(Some(v), &[]).unwrap_err(), DecodeError::Version("0.3".into()));
        let headers = vec![("ce_specversion".to_string(), b"1.0".to_vec())];
        assert_eq!(CloudEvent::decode(Some(b"{}"), &headers).unwrap_err(), DecodeError::MissingHeader("ce_id"));
    }

    #[test]
    fn pointers_reach_into_nested_data_without_parsing_the_rest() {
        let raw = br#"{"specversion":"1.0","id":"e","type":"t","source":"s",
            "data":{"order":{"customer":{"id":"u-9"},"lines":[{"sku":"a"},{"sku":"b/c"}]},"n":7,"a~b":"x"}}"#;
        let event = CloudEvent::decode(Some(raw), &[]).unwrap();
        assert_eq!(event.user_id("/data/order/customer/id").unwrap(), "u-9");
        assert_eq!(event.user_id("/data/order/lines/1/sku").unwrap(), "b/c");
        assert_eq!(event.user_id("/data/n").unwrap(), "7");
        assert_eq!(event.user_id("/data/a~0b").unwrap(), "x");
        assert_eq!(event.user_id("/source").unwrap(), "s");
        assert!(event.user_id("/data/order/lines/5/sku").is_err());
    }
}
