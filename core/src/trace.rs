//! W3C trace context across Kafka: each hop of a notification (intake's
//! handling of its event, a worker's delivery, the provider call) is a span
//! whose parent is the `traceparent` header it arrived with, and the record
//! it writes carries its own span as the next hop's parent.
//!
//! The trace id is the event's when it brought a `traceparent`, else a new
//! one; it is on every status record (`trace_id`), with the correlation id,
//! and in every dead letter's headers, so one notification can be followed
//! from its event to its last outcome, through a replay. With the OTLP
//! exporter on ([`enable_export`]), the spans themselves are exported and
//! the header carries the exported span's id; with it off (the default) the
//! header carries a fresh span id and nothing else is done per message.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Spans are exported from now on (the binary installed the OTLP layer).
pub fn enable_export() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether spans are exported ([`enable_export`] was called).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// One hop's place in a trace (`traceparent`, version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl Hop {
    /// Reads a `traceparent` header value: `00-<32 hex>-<16 hex>-<2 hex>`,
    /// neither id all zeros. Anything else is no parent.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if version == "ff" || !hex(version, 2) || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        // Version 00 has exactly four parts; a later version may add more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        let sampled = u8::from_str_radix(flags, 16).ok()? & 1 == 1;
        Some(Hop { trace_id, span_id, sampled })
    }

    /// A new trace.
    pub fn root() -> Self {
        Hop { trace_id: rand::random::<u128>().max(1), span_id: rand::random::<u64>().max(1), sampled: true }
    }

    /// The next hop of the same trace.
    pub fn child(&self) -> Self {
        Hop { span_id: rand::random::<u64>().max(1), ..*self }
    }

    /// The `traceparent` header value.
    pub fn header(&self) -> String {
        // By hand rather than `format!`: intake writes one per notification.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        for (i, byte) in self.trace_id.to_be_bytes().into_iter().chain(self.span_id.to_be_bytes()).enumerate() {
            // The trace id's 16 bytes, then a dash, then the span id's 8.
            let at = 3 + 2 * i + usize::from(i >= 16);
            out[at] = HEX[usize::from(byte >> 4)];
            out[at + 1] = HEX[usize::from(byte & 0xf)];
        }
        out[35] = b'-';
        out[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        String::from_utf8(out.to_vec()).expect("ASCII")
    }

    /// The trace id as status records carry it (32 hex digits).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

/// Makes `span` the hop after `parent` (a `traceparent` value; a new trace
/// when there is none or it does not read), and returns the hop the records
/// this span writes carry. Call before the span is first entered.
pub fn hop(span: &tracing::Span, parent: Option<&str>) -> Hop {
    let parent = parent.and_then(Hop::parse).unwrap_or_else(Hop::root);
    if exporting() && !span.is_disabled() {
        let flags = if parent.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let remote = SpanContext::new(
            TraceId::from(parent.trace_id),
            SpanId::from(parent.span_id),
            flags,
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        let context = span.context();
        let own = context.span().span_context().clone();
        if own.is_valid() {
            return Hop {
                trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
                span_id: u64::from_be_bytes(own.span_id().to_bytes()),
                sampled: own.is_sampled(),
            };
        }
    }
    parent.child()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn a_header_is_the_w3c_format_of_its_ids(trace_id: u128, span_id: u64, sampled: bool) {
            let hop = Hop { trace_id, span_id, sampled };
            let expected = format!("00-{trace_id:032x}-{span_id:016x}-{:02x}", u8::from(sampled));
            proptest::prop_assert_eq!(hop.header(), expected);
        }
    }

    #[test]
    fn a_traceparent_reads_back_as_written() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let hop = Hop::parse(header).unwrap();
        assert_eq!(hop.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hop.span_id, 0x00f067aa0ba902b7);
        assert!(hop.sampled);
        assert_eq!(hop.header(), header);
        let child = hop.child();
        assert_eq!(child.trace_id, hop.trace_id);
        assert_ne!(child.span_id, hop.span_id);
    }

    #[test]
    fn a_malformed_traceparent_is_no_parent() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Hop::parse(bad), None, "{bad}");
        }
        assert!(Hop::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-later").is_some());
    }

    #[test]
    fn without_export_a_hop_continues_the_parents_trace() {
        let span = tracing::info_span!("test");
        let hop = hop(&span, Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(hop.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(hop.span_id, 0x00f067aa0ba902b7);
        let fresh = super::hop(&span, Some("not a traceparent"));
        assert_ne!(fresh.trace_id, hop.trace_id, "a new trace");
    }
}
