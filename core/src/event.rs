//! CloudEvents 1.0 input in both Kafka modes.
//!
//! Structured mode carries the whole event as a JSON value. Binary mode carries
//! the attributes as `ce_*` headers and the event `data` as the JSON value.
//! Either way the event is decoded into a [`CloudEvent`] whose JSON form (the
//! structured one) is what the user-id pointer is evaluated against.

use crate::config::EventLimits;
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
    #[error("{0}")]
    Limit(String),
}

/// Refuses an identifier (`name` says which) longer than the limits allow.
pub fn check_id(name: &str, value: &str, limits: &EventLimits) -> Result<(), DecodeError> {
    if value.len() > limits.max_id_bytes {
        return Err(DecodeError::Limit(format!(
            "`{name}` is {} bytes, more than the {} allowed (intake.limits.max_id_bytes)",
            value.len(),
            limits.max_id_bytes
        )));
    }
    Ok(())
}

/// Refuses JSON whose objects and arrays nest deeper than `max` levels
/// below `above` enclosing ones, in one pass over the text before anything
/// is parsed: what builds or walks the data later never meets more depth.
fn too_deep(json: &[u8], max: usize, above: usize) -> Result<(), DecodeError> {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&b) = json.get(at) {
        match b {
            // Most of an event is inside strings: jump to the closing quote,
            // over escapes, without looking at each byte.
            b'"' => loop {
                at += 1;
                match json.get(at..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
                    None => return Ok(()),
                    Some(found) if json[at + found] == b'\\' => at += found + 1,
                    Some(found) => {
                        at += found;
                        break;
                    }
                }
            },
            b'{' | b'[' => {
                depth += 1;
                if depth > max + above {
                    return Err(DecodeError::Limit(format!(
                        "`data` nests deeper than the {max} levels allowed (intake.limits.max_depth)"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    Ok(())
}

/// At most `max` characters of `s`, for quoting input in a reason.
fn cut(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(at, _)| &s[..at])
}

impl CloudEvent {
    /// Decodes a Kafka record within `limits`. `headers` are (name, value)
    /// pairs; a `ce_specversion` header selects binary mode.
    pub fn decode(
        value: Option<&[u8]>,
        headers: &[(String, Vec<u8>)],
        limits: &EventLimits,
    ) -> Result<Self, DecodeError> {
        let size = value.map_or(0, <[u8]>::len) + headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if size > limits.max_event_bytes {
            return Err(DecodeError::Limit(format!(
                "the event is {size} bytes, more than the {} allowed (intake.limits.max_event_bytes)",
                limits.max_event_bytes
            )));
        }
        let header =
            |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        let event = if let Some(specversion) = header("ce_specversion") {
            let data = match value {
                None | Some(b"") => null(),
                Some(bytes) => {
                    too_deep(bytes, limits.max_depth, 0)?;
                    serde_json::from_slice::<&RawValue>(bytes).map_err(|e| DecodeError::Json(e.to_string()))?.to_owned()
                }
            };
            let time = match header("ce_time") {
                None => None,
                Some(t) => Some(
                    DateTime::parse_from_rfc3339(&t)
                        .map_err(|e| DecodeError::Shape(format!("ce_time `{}`: {e}", cut(&t, 64))))?
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
            // The envelope is one level above `data`.
            too_deep(bytes, limits.max_depth, 1)?;
            serde_json::from_slice(bytes).map_err(|e| match e.classify() {
                serde_json::error::Category::Data => DecodeError::Shape(e.to_string()),
                _ => DecodeError::Json(e.to_string()),
            })?
        };
        let ids = [
            ("specversion", Some(&event.specversion)),
            ("id", Some(&event.id)),
            ("type", Some(&event.ty)),
            ("source", Some(&event.source)),
            ("subject", event.subject.as_ref()),
            ("correlationid", event.correlationid.as_ref()),
            ("traceparent", event.traceparent.as_ref()),
        ];
        for (name, value) in ids {
            if let Some(value) = value {
                check_id(name, value, limits)?;
            }
        }
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
        self.string_at(pointer).ok_or_else(|| DecodeError::NoUser(pointer.to_string()))
    }

    /// The string (or number, as written) at JSON `pointer` in the
    /// structured event, if there is a non-empty one.
    pub fn string_at(&self, pointer: &str) -> Option<String> {
        let found = match pointer {
            "/subject" => self.subject.clone().map(Value::String),
            "/source" => Some(Value::String(self.source.clone())),
            p if p.starts_with("/data/") => lookup(&self.data, &p["/data".len()..]),
            // Anything else: look it up in the structured form.
            p => serde_json::to_value(self).ok().and_then(|j| j.pointer(p).cloned()),
        };
        match found {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// The value at JSON `pointer` inside `raw`, walking only the objects and
/// arrays on the way: siblings are skipped, never built.
fn lookup(raw: &RawValue, pointer: &str) -> Option<Value> {
    let mut here: &RawValue = raw;
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = match token.contains('~') {
            true => std::borrow::Cow::Owned(token.replace("~1", "/").replace("~0", "~")),
            false => std::borrow::Cow::Borrowed(token),
        };
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
        let event = CloudEvent::decode(Some(raw), &[], &EventLimits::default()).unwrap();
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
        let event = CloudEvent::decode(Some(br#"{"carrier":"UPS"}"#), &headers, &EventLimits::default()).unwrap();
        assert_eq!(event.id, "e2");
        assert_eq!(event.data.get(), r#"{"carrier":"UPS"}"#);
        assert_eq!(event.user_id("/subject").unwrap(), "u-7");
    }

    #[test]
    fn malformed_input_is_a_clear_error() {
        assert!(matches!(
            CloudEvent::decode(Some(b"{not json"), &[], &EventLimits::default()),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            CloudEvent::decode(Some(br#"{"id":"x"}"#), &[], &EventLimits::default()),
            Err(DecodeError::Shape(_))
        ));
        let v = br#"{"specversion":"0.3","id":"e","type":"t","source":"s"}"#;
        assert_eq!(
            CloudEvent::decode(Some(v), &[], &EventLimits::default()).unwrap_err(),
            DecodeError::Version("0.3".into())
        );
        let headers = vec![("ce_specversion".to_string(), b"1.0".to_vec())];
        assert_eq!(
            CloudEvent::decode(Some(b"{}"), &headers, &EventLimits::default()).unwrap_err(),
            DecodeError::MissingHeader("ce_id")
        );
    }

    #[test]
    fn pointers_reach_into_nested_data_without_parsing_the_rest() {
        let raw = br#"{"specversion":"1.0","id":"e","type":"t","source":"s",
            "data":{"order":{"customer":{"id":"u-9"},"lines":[{"sku":"a"},{"sku":"b/c"}]},"n":7,"a~b":"x"}}"#;
        let event = CloudEvent::decode(Some(raw), &[], &EventLimits::default()).unwrap();
        assert_eq!(event.user_id("/data/order/customer/id").unwrap(), "u-9");
        assert_eq!(event.user_id("/data/order/lines/1/sku").unwrap(), "b/c");
        assert_eq!(event.user_id("/data/n").unwrap(), "7");
        assert_eq!(event.user_id("/data/a~0b").unwrap(), "x");
        assert_eq!(event.user_id("/source").unwrap(), "s");
        assert!(event.user_id("/data/order/lines/5/sku").is_err());
    }

    fn binary(data: &[u8], extra: &[(&str, &[u8])]) -> Result<CloudEvent, DecodeError> {
        let base: [(&str, &[u8]); 4] =
            [("ce_specversion", b"1.0"), ("ce_id", b"e"), ("ce_type", b"t"), ("ce_source", b"s")];
        let headers: Vec<(String, Vec<u8>)> = extra
            .iter()
            .chain(base.iter().filter(|(k, _)| !extra.iter().any(|(e, _)| e == k)))
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        CloudEvent::decode(Some(data), &headers, &EventLimits::default())
    }

    #[test]
    fn limits_refuse_what_is_too_big_or_too_deep_without_quoting_it() {
        let limits = EventLimits::default();
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let err = binary(deep.as_bytes(), &[]).unwrap_err();
        assert_eq!(err.to_string(), "`data` nests deeper than the 32 levels allowed (intake.limits.max_depth)");
        let structured = format!(r#"{{"specversion":"1.0","id":"e","type":"t","source":"s","data":{deep}}}"#);
        let err = CloudEvent::decode(Some(structured.as_bytes()), &[], &limits).unwrap_err();
        assert!(matches!(err, DecodeError::Limit(_)), "{err}");

        // 32 levels are fine, in either mode; brackets inside strings do not count.
        let ok = format!(r#"{}"a[{{\"]"{}"#, "[".repeat(32), "]".repeat(32));
        assert!(binary(ok.as_bytes(), &[]).is_ok());
        let ok = format!(r#"{{"specversion":"1.0","id":"e","type":"t","source":"s","data":{ok}}}"#);
        assert!(CloudEvent::decode(Some(ok.as_bytes()), &[], &limits).is_ok());

        let long = "u".repeat(3_000);
        let err = binary(b"{}", &[("ce_subject", long.as_bytes())]).unwrap_err();
        assert_eq!(err.to_string(), "`subject` is 3000 bytes, more than the 256 allowed (intake.limits.max_id_bytes)");
        let err = binary(b"{}", &[("ce_id", &[b'i'; 300])]).unwrap_err();
        assert!(err.to_string().starts_with("`id` is 300 bytes"), "{err}");
        let big = format!(r#"{{"note":"{}"}}"#, "x".repeat(300_000));
        let err = binary(big.as_bytes(), &[]).unwrap_err();
        assert!(err.to_string().contains("more than the 262144 allowed"), "{err}");
        assert!(check_id("user id", &long, &limits).unwrap_err().to_string().len() < 100);

        let time = format!("not-a-time-{}", "9".repeat(10_000));
        let err = binary(b"{}", &[("ce_time", time.as_bytes())]).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::testing::arbitrary_json;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_never_panics_on_any_json(data in arbitrary_json(), id in any::<String>(), pointer in "(/[a-z0-9~]{0,3}){0,4}") {
            let limits = EventLimits::default();
            let event = serde_json::json!({"specversion": "1.0", "id": id, "type": "t", "source": "s", "data": data});
            let text = event.to_string();
            if let Ok(e) = CloudEvent::decode(Some(text.as_bytes()), &[], &limits) {
                let _ = e.user_id(&format!("/data{pointer}"));
            }
            let data_text = data.to_string();
            let headers = vec![
                ("ce_specversion".to_string(), b"1.0".to_vec()),
                ("ce_id".to_string(), id.into_bytes()),
                ("ce_type".to_string(), b"t".to_vec()),
                ("ce_source".to_string(), b"s".to_vec()),
            ];
            if let Ok(e) = CloudEvent::decode(Some(data_text.as_bytes()), &headers, &limits) {
                let _ = e.user_id(&format!("/data{pointer}"));
            }
        }

        /// The scan that jumps over strings finds what a byte-by-byte one does.
        #[test]
        fn depth_is_measured_outside_strings_only(parts in prop::collection::vec(prop::sample::select(vec!["{", "}", "[", "]", "\"", "\\", "\\\"", "a", ":", ","]), 0..200), max in 0..6usize) {
            let json = parts.concat();
            let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
            for b in json.bytes() {
                match b {
                    _ if in_string && escaped => escaped = false,
                    b'\\' if in_string => escaped = true,
                    b'"' => in_string = !in_string,
                    _ if in_string => {}
                    b'{' | b'[' => {
                        depth += 1;
                        deepest = deepest.max(depth);
                    }
                    b'}' | b']' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            prop_assert_eq!(too_deep(json.as_bytes(), max, 0).is_err(), deepest > max, "{}", json);
        }

        #[test]
        fn decode_never_panics_at_any_depth(depth in 0..400usize, kinds in prop::collection::vec(any::<bool>(), 400), binary in any::<bool>()) {
            let mut data = String::new();
            for object in &kinds[..depth] {
                data.push_str(if *object { r#"{"k":"# } else { "[" });
            }
            data.push('1');
            for object in kinds[..depth].iter().rev() {
                data.push(if *object { '}' } else { ']' });
            }
            let limits = EventLimits::default();
            let decoded = if binary {
                let headers: Vec<(String, Vec<u8>)> = [("ce_specversion", "1.0"), ("ce_id", "e"), ("ce_type", "t"), ("ce_source", "s")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect();
                CloudEvent::decode(Some(data.as_bytes()), &headers, &limits)
            } else {
                let text = format!(r#"{{"specversion":"1.0","id":"e","type":"t","source":"s","data":{data}}}"#);
                CloudEvent::decode(Some(text.as_bytes()), &[], &limits)
            };
            prop_assert_eq!(decoded.is_ok(), depth <= limits.max_depth);
            if let Ok(e) = decoded {
                let _ = e.user_id("/data/k/k/0/k");
            }
        }

        #[test]
        fn decode_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048), binary in any::<bool>()) {
            let headers = if binary { vec![("ce_specversion".to_string(), b"1.0".to_vec())] } else { vec![] };
            let _ = CloudEvent::decode(Some(&bytes), &headers, &EventLimits::default());
        }
    }
}
