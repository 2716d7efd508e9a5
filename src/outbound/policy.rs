//! The decision: may taskd connect to this address on this port? The allow-list, the
//! addresses never allowed, and taskd's own addresses, combined in one place.
//!
//! Every check takes the address actually connected to — an IP literal as the URL parser
//! normalised it (`2130706434`, `0x7f000002`, `0177.0.0.2` and `127.2` are all 127.0.0.2
//! by then), or each address a name resolved to — with the port the connector will use.
//! IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

use super::Refused;
use super::allow::AllowList;
use super::own::OwnAddrs;

/// How refusals name the setting that would change them.
const FLAG: &str = "`--allow-outbound` (`TASKD_ALLOW_OUTBOUND`)";

/// Cloud metadata services, never reachable whatever the list says (AWS IMDSv2 over IPv6;
/// the IPv4 one, 169.254.169.254, is link-local and refused as such).
const METADATA: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// Whether `ip` is refused whatever the allow-list says: link-local (169.254.0.0/16,
/// fe80::/10, which is where metadata services live) or a metadata address. IPv4-mapped
/// IPv6 addresses count as the IPv4 address they carry.
pub fn never_allowed(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    METADATA.contains(&ip)
        || match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        }
}

/// The allow-list with taskd's own addresses: what the outbound client obeys.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: AllowList,
    own: OwnAddrs,
}

impl Policy {
    pub fn new(allow: AllowList, own: OwnAddrs) -> Policy {
        Policy { allow, own }
    }

    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// Checks what can be checked of `url` before resolving: the scheme, that outbound
    /// requests are on at all, and an IP-literal host with its port (such a URL skips the
    /// resolver). A named host is screened by the resolver when the client connects.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!("scheme `{}` is not http(s)", url.scheme())));
        }
        // http(s) always has a known default port.
        let port = url.port_or_known_default().unwrap_or(0);
        let ip = match url.host() {
            None => return Err(Refused("the URL has no host".to_owned())),
            Some(url::Host::Domain(_)) => return self.on(),
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        };
        self.admit(None, SocketAddr::new(ip, port))
    }

    /// Refuses `host` on `port` before it is looked up, when no address it could resolve to
    /// would be allowed: a lookup that fails (or is slow) must not decide the answer.
    pub fn screen_name(&self, host: &str, port: u16) -> Result<(), Refused> {
        self.on()?;
        if self.allow.may_allow(host, port) {
            Ok(())
        } else {
            Err(Refused(format!(
                "`{host}` on port {port} is not allowed by {FLAG}"
            )))
        }
    }

    /// The addresses `host` resolved to that may be connected to on `port`. A host listed by
    /// name (for this port) may use any of its addresses but the never-allowed ones; any
    /// other host is refused unless every address it has is allowed (one bad address is
    /// reason enough to distrust a name). taskd's own addresses refuse the whole name.
    pub fn screen(
        &self,
        host: &str,
        port: u16,
        ips: impl IntoIterator<Item = IpAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        self.on()?;
        let addrs: Vec<SocketAddr> = ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        if addrs.is_empty() {
            return Err(Refused(format!("`{host}` resolved to no address")));
        }
        let by_name = self.allow.allows_name(host, port);
        let mut allowed = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if by_name && never_allowed(addr.ip()) {
                continue;
            }
            self.admit(Some(host), addr)?;
            allowed.push(addr);
        }
        if allowed.is_empty() {
            return Err(Refused(format!(
                "`{host}` resolves only to link-local or metadata addresses"
            )));
        }
        Ok(allowed)
    }

    /// Whether outbound requests are on at all.
    fn on(&self) -> Result<(), Refused> {
        if self.allow.is_empty() {
            return Err(Refused(format!(
                "outbound requests are off until {FLAG} lists the hosts taskd may reach"
            )));
        }
        Ok(())
    }

    /// Whether `addr`, reached as `name` if by name, may be connected to.
    fn admit(&self, name: Option<&str>, addr: SocketAddr) -> Result<(), Refused> {
        self.on()?;
        let shown = match name {
            Some(name) => format!("`{name}` ({addr})"),
            None => addr.to_string(),
        };
        if never_allowed(addr.ip()) {
            return Err(Refused(format!(
                "{shown} is link-local or a metadata address, never allowed"
            )));
        }
        if let Some(what) = self.own.find(name, addr) {
            if self.allow.names_exactly(name, addr) {
                return Ok(());
            }
            return Err(Refused(format!(
                "{shown} is {what}; only an entry of {FLAG} naming exactly this host and port \
                 allows it"
            )));
        }
        let listed = name.is_some_and(|name| self.allow.allows_name(name, addr.port()))
            || self.allow.allows_ip(addr.ip(), addr.port());
        if listed {
            Ok(())
        } else {
            Err(Refused(format!("{shown} is not allowed by {FLAG}")))
        }
    }
}
