//! Where a webhook may go: http(s) only, on an allowed port, and not to
//! loopback, link-local, private, shared or unspecified addresses unless allowed.

use crate::ProviderError;
use std::net::{IpAddr, SocketAddr};

/// Whether `ip` is one a webhook must not reach from inside our network:
/// the special-purpose ranges of IANA's registries that are not the public
/// internet, with the well-known NAT64 prefix and 6to4 judged by the IPv4
/// address inside. A NAT64 prefix a network chose for itself is not known here.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                // 0.0.0.0/8 "this network" (the unspecified address among them).
                || a == 0
                // 100.64.0.0/10, carrier-grade NAT.
                || (a == 100 && (b & 0xc0) == 64)
                // 192.0.0.0/24, IETF protocol assignments.
                || (a == 192 && b == 0 && c == 0)
                // 192.88.99.0/24, 6to4 relay anycast (deprecated).
                || (a == 192 && b == 88 && c == 99)
                // 198.18.0.0/15, benchmarking.
                || (a == 198 && (b & 0xfe) == 18)
                // 240.0.0.0/4, reserved.
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded =
                |hi: u16, lo: u16| std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local, fec0::/10 site-local.
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // ::/96, IPv4-compatible (deprecated): nothing public is reached this way.
                || s[..6] == [0; 6]
                // ::ffff:0:0/96 IPv4-mapped and ::ffff:0:0:0/96 IPv4-translated: not
                // globally reachable (IANA), whatever the IPv4 address inside.
                || (s[..5] == [0; 5] && s[5] == 0xffff)
                || (s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0)
                // 64:ff9b::/96, NAT64: the IPv4 address it translates to.
                || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && is_internal(IpAddr::V4(embedded(s[6], s[7]))))
                // 64:ff9b:1::/48, local-use NAT64: a gateway of the network's own.
                || (s[..3] == [0x64, 0xff9b, 1])
                // 100::/64 discard-only, 100:0:0:1::/64 dummy prefix.
                || (s[..3] == [0x100, 0, 0] && s[3] <= 1)
                // 2001::/23, IETF protocol assignments (Teredo among them).
                || (s[0] == 0x2001 && s[1] < 0x200)
                // 2001:db8::/32 and 3fff::/20, documentation.
                || (s[0] == 0x2001 && s[1] == 0xdb8)
                || (s[0] == 0x3fff && s[1] < 0x1000)
                // 5f00::/16, segment routing (SRv6) identifiers.
                || s[0] == 0x5f00
                // 2002::/16, 6to4: the IPv4 address of the relay it goes through.
                || (s[0] == 0x2002 && is_internal(IpAddr::V4(embedded(s[1], s[2]))))
        }
    }
}

/// Parses and checks a destination URL: its scheme, its port, and an IP
/// literal here, a name when it is resolved. Reasons name the host at most:
/// a URL's path and query often hold a customer's token.
pub fn check_url(raw: &str, allow_private: bool, ports: &[u16]) -> Result<reqwest::Url, ProviderError> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| ProviderError::invalid_recipient(format!("the webhook URL is not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ProviderError::invalid_recipient("the webhook URL is not http(s)"));
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(ProviderError::invalid_recipient("the webhook URL has no host")),
    };
    let port = url.port_or_known_default().unwrap_or(0);
    if !ports.contains(&port) {
        return Err(ProviderError::invalid_recipient(format!(
            "webhook destination port {port} is not among the allowed ports {ports:?}"
        )));
    }
    if let Some(ip) = literal {
        if !allow_private && is_internal(ip) {
            return Err(ProviderError::invalid_recipient(format!("webhook destination {ip} is an internal address")));
        }
    }
    Ok(url)
}

/// A destination whose name resolves only to internal addresses.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves only to internal addresses", self.0)
    }
}

impl std::error::Error for Refused {}

/// A resolver that drops internal addresses from every answer.
pub struct Resolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                found.into_iter().filter(|a| allow_private || !is_internal(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(Refused(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.1.2.3",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.1",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::a00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::1",
            "fec0::1",
            "ff02::1",
            // Local-use NAT64 (a gateway of the operator's may translate it to 169.254.169.254).
            "64:ff9b:1:a9fe:a9:fe00::",
            "64:ff9b:1::1",
            // IPv4-mapped and IPv4-translated, whatever the IPv4 address.
            "::ffff:93.184.216.34",
            "::ffff:0:a9fe:a9fe",
            "100::1",
            "100:0:0:1::1",
            "192.88.99.1",
            "2001::1",
            "2001:1ff::1",
            "2001:db8::1",
            "3fff::1",
            "3fff:fff::1",
            "5f00::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:4700::1111",
            "100.128.0.1",
            "198.20.0.1",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
            "2001:200::1",
            "3fff:1000::1",
            "2a00:1450::1",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked() {
        let ports = [80, 443, 8080, 8443];
        assert!(check_url("https://hooks.example.com/x", false, &ports).is_ok());
        assert!(check_url("http://127.0.0.1:8080/x", false, &ports).unwrap_err().invalid_recipient);
        assert!(check_url("http://[::1]/x", false, &ports).is_err());
        assert!(check_url("http://127.0.0.1:8080/x", true, &ports).is_ok());
        assert!(check_url("ftp://example.com/x", false, &ports).is_err());
        assert!(check_url("not a url", false, &ports).is_err());
        for port in [22, 25, 6379, 9092, 1] {
            let e = check_url(&format!("https://hooks.example.com:{port}/x"), false, &ports).unwrap_err();
            assert!(e.invalid_recipient && e.message.contains("not among the allowed ports"), "{e}");
        }
        assert!(check_url("https://hooks.example.com:8443/x", false, &ports).is_ok());
        let e = check_url("https://user:pw@[::1]/x?token=s3cret", false, &ports).unwrap_err();
        assert!(!e.message.contains("s3cret") && !e.message.contains("pw"), "{e}");
    }
}
