//! The parsed `--allow-outbound`: which hosts, and on which ports, outbound requests may
//! reach. Only the list itself: what is never allowed and what is taskd's own live in
//! [`super::policy`].
//!
//! An entry is a host name (`api.example.com`), a domain's subdomains (`*.example.com`), an
//! address or a CIDR, each with an optional port (`host:443`, `10.0.0.0/8:5000`,
//! `[::1]:9000`). An entry without a port allows every port. Hosts are read the way a URL's
//! host is read (WHATWG): `127.1` or `0x7f000001` in the list is the address 127.0.0.1, as it
//! would be in a URL, not a name that nothing can match.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};

/// The default of `--allow-outbound`: nothing. Outbound requests are refused until the
/// operator names what taskd may reach.
pub const DEFAULT_ALLOW_OUTBOUND: &str = "";

/// The allow-list, entries in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: Host,
    /// `None`: every port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// Exactly this name (lowercase, no trailing dot).
    Name(String),
    /// Any name below this one (`*.example.com` holds `example.com`).
    Below(String),
    /// A network; a single address is a /32 or /128. IPv4-mapped IPv6 is stored as IPv4.
    Net(IpNet),
}

/// An entry of `--allow-outbound` that is neither a network nor a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a host name, `*.domain`, address or CIDR with an optional `:port`")]
pub struct BadEntry(String);

impl FromStr for AllowList {
    type Err = BadEntry;

    /// Comma-separated entries; blanks around them are ignored, an empty list allows nothing.
    fn from_str(list: &str) -> Result<AllowList, BadEntry> {
        let entries = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|entry| parse_entry(entry).ok_or_else(|| BadEntry(entry.to_owned())))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { entries })
    }
}

fn parse_entry(entry: &str) -> Option<Entry> {
    let (host, port) = split_port(entry)?;
    let port = match port {
        None => None,
        Some(port) => Some(port.parse::<u16>().ok().filter(|p| *p != 0)?),
    };
    Some(Entry {
        host: parse_host(host)?,
        port,
    })
}

/// `[v6]:port` and `host:port` have a port; a bare IPv6 address or network has colons that
/// are not one.
fn split_port(entry: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        return match after {
            "" => Some((inside, None)),
            _ => Some((inside, Some(after.strip_prefix(':')?))),
        };
    }
    match entry.split_once(':') {
        Some((host, port)) if !port.contains(':') => Some((host, Some(port))),
        _ => Some((entry, None)),
    }
}

fn parse_host(text: &str) -> Option<Host> {
    if text.contains('/') {
        let net: IpNet = text.parse().ok()?;
        return Some(Host::Net(canonical(net.trunc())));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(Host::Net(IpNet::from(ip.to_canonical())));
    }
    if let Some(parent) = text.strip_prefix("*.") {
        let parent = normalize(parent);
        return is_name(&parent).then_some(Host::Below(parent));
    }
    match url::Host::parse(text).ok()? {
        url::Host::Ipv4(v4) => Some(Host::Net(IpNet::from(IpAddr::V4(v4)))),
        url::Host::Domain(name) => {
            let name = normalize(&name);
            is_name(&name).then_some(Host::Name(name))
        }
        url::Host::Ipv6(_) => None,
    }
}

/// `::ffff:10.0.0.0/104` is `10.0.0.0/8`: addresses are compared in their IPv4 form.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Host names compare case-insensitively and without a trailing dot.
pub(super) fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Entry {
    fn takes_port(&self, port: u16) -> bool {
        self.port.is_none_or(|own| own == port)
    }

    fn names(&self, host: &str) -> bool {
        match &self.host {
            Host::Name(name) => *name == host,
            Host::Below(parent) => host
                .strip_suffix(parent.as_str())
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            Host::Net(_) => false,
        }
    }
}

impl AllowList {
    /// Whether the list allows nothing at all (outbound requests are off).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `host` (a name, not an address) is listed by name for `port`.
    pub fn allows_name(&self, host: &str, port: u16) -> bool {
        let host = normalize(host);
        self.entries
            .iter()
            .any(|e| e.takes_port(port) && e.names(&host))
    }

    /// Whether any address on `port` could be allowed for `host`: it is listed by name, or
    /// some network is listed for the port. If not, a name need not even be looked up.
    pub fn may_allow(&self, host: &str, port: u16) -> bool {
        self.allows_name(host, port)
            || (self.entries.iter()).any(|e| matches!(e.host, Host::Net(_)) && e.takes_port(port))
    }

    /// Whether `ip` lies in a network listed for `port`. The never-allowed addresses are
    /// the policy's to refuse, not the list's.
    pub fn allows_ip(&self, ip: IpAddr, port: u16) -> bool {
        let ip = ip.to_canonical();
        self.entries.iter().any(|e| match e.host {
            Host::Net(net) => e.takes_port(port) && net.contains(&ip),
            _ => false,
        })
    }

    /// Whether one entry names exactly this host and port: the name it was reached by, or
    /// its single address, with the same port. A CIDR, a `*.domain` or a portless entry that
    /// merely covers it does not count; that is what taskd's own addresses require.
    pub fn names_exactly(&self, name: Option<&str>, addr: SocketAddr) -> bool {
        let name = name.map(normalize);
        let ip = addr.ip().to_canonical();
        self.entries.iter().any(|e| {
            e.port == Some(addr.port())
                && match &e.host {
                    Host::Name(listed) => name.as_ref() == Some(listed),
                    Host::Net(net) => net.prefix_len() == net.max_prefix_len() && net.addr() == ip,
                    Host::Below(_) => false,
                }
        })
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A single address prints as itself, not as a /32 or /128; IPv6 takes brackets
        // when a port follows.
        let host = match &self.host {
            Host::Name(name) => name.clone(),
            Host::Below(parent) => format!("*.{parent}"),
            Host::Net(net) if net.prefix_len() == net.max_prefix_len() => net.addr().to_string(),
            Host::Net(net) => net.to_string(),
        };
        let v6 = matches!(self.host, Host::Net(IpNet::V6(_)));
        match self.port {
            None => f.write_str(&host),
            Some(port) if v6 => write!(f, "[{host}]:{port}"),
            Some(port) => write!(f, "{host}:{port}"),
        }
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self.entries.iter().map(Entry::to_string).collect();
        f.write_str(&entries.join(","))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn list(text: &str) -> AllowList {
        text.parse().expect("a valid allow-list")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn entries_take_an_optional_port() {
        let allow = list(
            " api.example.com , *.svc.local:8443, 10.0.0.0/8:5000, 192.168.1.7, 192.168.1.8:80, \
             [2001:db8::1]:443, [::1], fd00::/8, [fe00::/8]:7, hooks.example.com:9000 ,",
        );
        assert!(allow.allows_name("API.example.com.", 1));
        assert!(allow.allows_name("a.b.svc.local", 8443));
        assert!(!allow.allows_name("a.svc.local", 443));
        assert!(!allow.allows_name("svc.local", 8443));
        assert!(!allow.allows_name("xsvc.local", 8443));
        assert!(allow.allows_name("hooks.example.com", 9000));
        assert!(!allow.allows_name("hooks.example.com", 9001));
        assert!(allow.allows_ip(ip("10.200.3.4"), 5000));
        assert!(!allow.allows_ip(ip("10.200.3.4"), 5001));
        assert!(allow.allows_ip(ip("192.168.1.7"), 22));
        assert!(allow.allows_ip(ip("192.168.1.8"), 80));
        assert!(!allow.allows_ip(ip("192.168.1.8"), 81));
        assert!(allow.allows_ip(ip("2001:db8::1"), 443));
        assert!(!allow.allows_ip(ip("2001:db8::1"), 80));
        assert!(allow.allows_ip(ip("::1"), 1));
        assert!(allow.allows_ip(ip("fd12::1"), 1));
        assert!(allow.allows_ip(ip("fe12::1"), 7));
        assert_eq!(
            allow.to_string(),
            "api.example.com,*.svc.local:8443,10.0.0.0/8:5000,192.168.1.7,192.168.1.8:80,\
             [2001:db8::1]:443,::1,fd00::/8,[fe00::/8]:7,hooks.example.com:9000"
        );
        assert_eq!(list(&allow.to_string()), allow, "the display parses back");
        for bad in [
            "http://x",
            "a b",
            "10.0.0.0/33",
            "*.",
            "a..b",
            "_x",
            "h:0",
            "h:65536",
            "h:x",
            "h:",
            "[::1",
            "[::1]x",
            "[::1]:",
            "::1:80:x:y:z:w:v:u",
            "1.2.3.4:80:80",
        ] {
            assert!(bad.parse::<AllowList>().is_err(), "{bad} is refused");
        }
    }
}
