//! Outbound HTTP: the allow-list (`--allow-outbound`) and the one client that completion
//! webhooks and the `http` kind share.
//!
//! A request is allowed only if its host is listed by name, or every address the host
//! resolves to lies in a listed CIDR. Link-local and cloud metadata addresses are never
//! allowed, whatever the list says. The check happens where the address is chosen: the
//! client's DNS resolver resolves, screens, and hands the connector only the addresses it
//! checked (so a second lookup cannot swap in another one), and a URL whose host is an IP
//! literal — which skips the resolver — is checked before it is sent. A refused request never
//! opens a connection. Redirects are not followed (a redirect to an IP literal would skip the
//! resolver) and proxies from the environment are ignored (a proxy would resolve for us).
//!
//! No axum, no engine, no store here: this is a policy and a client.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, RequestBuilder, Response, Url};

/// The default of `--allow-outbound`: this machine only.
pub const DEFAULT_ALLOW_OUTBOUND: &str = "127.0.0.0/8,::1,localhost";

/// How long connecting may take, whatever the request's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The parsed `--allow-outbound`: host names (exact, or `*.example.com` for any subdomain)
/// and networks (a CIDR, or a single address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    names: Vec<String>,
    nets: Vec<IpNet>,
}

/// An entry of `--allow-outbound` that is neither a network nor a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is neither a host name nor an address or CIDR")]
pub struct BadEntry(String);

impl FromStr for AllowList {
    type Err = BadEntry;

    /// Comma-separated entries; blanks around them are ignored, an empty list allows nothing.
    fn from_str(list: &str) -> Result<AllowList, BadEntry> {
        let mut allow = AllowList {
            names: Vec::new(),
            nets: Vec::new(),
        };
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bare = entry.trim_start_matches('[').trim_end_matches(']');
            if let Ok(net) = bare.parse::<IpNet>() {
                allow.nets.push(net.trunc());
            } else if let Ok(ip) = bare.parse::<IpAddr>() {
                allow.nets.push(IpNet::from(ip));
            } else if is_host_pattern(entry) {
                allow.names.push(normalize(entry));
            } else {
                return Err(BadEntry(entry.to_owned()));
            }
        }
        Ok(allow)
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A single address prints as itself, not as a /32 or /128.
        let nets = self.nets.iter().map(|net| {
            if net.prefix_len() == net.max_prefix_len() {
                net.addr().to_string()
            } else {
                net.to_string()
            }
        });
        let entries: Vec<String> = nets.chain(self.names.iter().cloned()).collect();
        f.write_str(&entries.join(","))
    }
}

fn is_host_pattern(entry: &str) -> bool {
    let name = entry.strip_prefix("*.").unwrap_or(entry);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Host names compare case-insensitively and without a trailing dot.
fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl AllowList {
    /// Whether `host` (a name, not an address) is listed by name.
    pub fn allows_name(&self, host: &str) -> bool {
        let host = normalize(host);
        self.names.iter().any(|name| match name.strip_prefix("*.") {
            Some(parent) => host
                .strip_suffix(parent)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => *name == host,
        })
    }

    /// Whether `ip` lies in a listed network (and is not one that is never allowed).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !never_allowed(ip) && self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The addresses `host` resolved to that may be connected to. A host listed by name may
    /// use any of its addresses but the never-allowed ones; any other host is refused unless
    /// every address it has is allowed (one bad address is reason enough to distrust a name).
    pub fn screen(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        if addrs.is_empty() {
            return Err(Refused(format!("`{host}` resolved to no address")));
        }
        if self.allows_name(host) {
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| !never_allowed(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Refused(format!(
                    "`{host}` resolves only to link-local or metadata addresses"
                )));
            }
            return Ok(allowed);
        }
        match addrs.iter().find(|a| !self.allows_ip(a.ip())) {
            Some(bad) => Err(Refused(format!(
                "`{host}` resolves to {}, which the allow-list does not cover",
                bad.ip()
            ))),
            None => Ok(addrs),
        }
    }

    /// Checks what can be checked of `url` without resolving: the scheme, and an IP-literal
    /// host. A named host is screened by the resolver when the client connects.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!("scheme `{}` is not http(s)", url.scheme())));
        }
        let ip = match url.host() {
            None => return Err(Refused("the URL has no host".to_owned())),
            Some(url::Host::Domain(_)) => return Ok(()),
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        };
        if self.allows_ip(ip) {
            Ok(())
        } else {
            Err(Refused(format!("{ip} is not in the outbound allow-list")))
        }
    }
}

/// A request the allow-list refused; no connection was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by the outbound allow-list: {0}")]
pub struct Refused(String);

/// Why an outbound request got no response.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The allow-list refused it: no packet was sent, and trying again will not help.
    #[error(transparent)]
    Refused(Refused),
    #[error("timed out")]
    Timeout,
    /// Connecting, TLS, or reading the answer failed.
    #[error("{0}")]
    Failed(String),
}

impl From<reqwest::Error> for OutboundError {
    fn from(error: reqwest::Error) -> Self {
        // The resolver's refusal comes back wrapped by the connector and the client.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        let mut causes = Vec::new();
        while let Some(cause) = source {
            if let Some(refused) = cause.downcast_ref::<Refused>() {
                return OutboundError::Refused(refused.clone());
            }
            causes.push(cause.to_string());
            source = cause.source();
        }
        if error.is_timeout() {
            return OutboundError::Timeout;
        }
        causes.dedup();
        OutboundError::Failed(causes.join(": "))
    }
}

/// The screening resolver: the system's lookup, then the allow-list.
struct Screening(Arc<AllowList>);

impl Resolve for Screening {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = Arc::clone(&self.0);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the connector puts the URL's port in.
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = allow.screen(&host, found)?;
            tracing::debug!(%host, ?allowed, "outbound host resolved and allowed");
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The outbound client with its allow-list. Cheap to clone: clones share one connection
/// pool. The inner client is private, so every request goes through [`Outbound::send`].
#[derive(Clone, Debug)]
pub struct Outbound {
    allow: Arc<AllowList>,
    client: reqwest::Client,
}

impl Outbound {
    pub fn new(allow: AllowList) -> Result<Outbound, reqwest::Error> {
        let allow = Arc::new(allow);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(Screening(Arc::clone(&allow))))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("taskd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Outbound { allow, client })
    }

    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// A request to be finished by the caller (headers, body, timeout) and sent with
    /// [`Outbound::send`].
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends a request built by [`Outbound::request`] if the allow-list permits it.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, OutboundError> {
        let request = request.build()?;
        self.allow
            .check_url(request.url())
            .map_err(OutboundError::Refused)?;
        Ok(self.client.execute(request).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> AllowList {
        text.parse().expect("a valid allow-list")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn addrs(ips: &[&str]) -> Vec<SocketAddr> {
        ips.iter().map(|i| SocketAddr::new(ip(i), 0)).collect()
    }

    #[test]
    fn the_default_allows_loopback_only() {
        let allow = list(DEFAULT_ALLOW_OUTBOUND);
        assert!(allow.allows_ip(ip("127.0.0.1")));
        assert!(allow.allows_ip(ip("127.1.2.3")));
        assert!(allow.allows_ip(ip("::1")));
        assert!(allow.allows_ip(ip("::ffff:127.0.0.1")));
        assert!(allow.allows_name("localhost"));
        assert!(allow.allows_name("LocalHost."));
        assert!(!allow.allows_ip(ip("10.0.0.1")));
        assert!(!allow.allows_ip(ip("8.8.8.8")));
        assert!(!allow.allows_ip(ip("::2")));
        assert!(!allow.allows_name("example.com"));
        assert_eq!(allow.to_string(), DEFAULT_ALLOW_OUTBOUND);
    }

    #[test]
    fn entries_parse_as_networks_addresses_or_names() {
        let allow =
            list(" 10.0.0.0/8 , 192.168.1.7, [2001:db8::1], api.example.com, *.svc.local ,");
        assert!(allow.allows_ip(ip("10.200.3.4")));
        assert!(allow.allows_ip(ip("192.168.1.7")));
        assert!(!allow.allows_ip(ip("192.168.1.8")));
        assert!(allow.allows_ip(ip("2001:db8::1")));
        assert!(allow.allows_name("API.example.com"));
        assert!(!allow.allows_name("example.com"));
        assert!(!allow.allows_name("evil-api.example.com"));
        assert!(allow.allows_name("a.svc.local"));
        assert!(allow.allows_name("a.b.svc.local"));
        assert!(!allow.allows_name("svc.local"));
        assert!(!allow.allows_name("xsvc.local"));
        assert_eq!(list("").to_string(), "");
        assert!(!list("").allows_ip(ip("127.0.0.1")));
        for bad in ["http://x", "a b", "10.0.0.0/33", "*.", "a..b", "_x"] {
            assert!(bad.parse::<AllowList>().is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn link_local_and_metadata_are_never_allowed() {
        let allow = list("0.0.0.0/0,::/0,metadata.internal");
        for never in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(never_allowed(ip(never)), "{never}");
            assert!(!allow.allows_ip(ip(never)), "{never}");
        }
        assert!(allow.allows_ip(ip("fd00:ec2::253")));
        assert!(allow.allows_ip(ip("fec0::1")));
        // A name listed by name keeps its other addresses, loses the forbidden ones.
        let screened = allow.screen("metadata.internal", addrs(&["169.254.169.254", "10.1.1.1"]));
        assert_eq!(screened, Ok(addrs(&["10.1.1.1"])));
        assert!(
            allow
                .screen("metadata.internal", addrs(&["169.254.169.254"]))
                .is_err()
        );
    }

    #[test]
    fn an_unlisted_name_needs_every_address_allowed() {
        let allow = list("10.0.0.0/8");
        assert_eq!(
            allow.screen("a.example", addrs(&["10.0.0.1", "10.0.0.2"])),
            Ok(addrs(&["10.0.0.1", "10.0.0.2"]))
        );
        assert!(
            allow
                .screen("a.example", addrs(&["10.0.0.1", "11.0.0.1"]))
                .is_err()
        );
        assert!(allow.screen("a.example", Vec::new()).is_err());
    }

    #[test]
    fn ip_literal_urls_are_checked_before_sending() {
        let allow = list(DEFAULT_ALLOW_OUTBOUND);
        let url = |u: &str| Url::parse(u).expect("a URL");
        assert!(allow.check_url(&url("http://127.0.0.1:9/x")).is_ok());
        assert!(allow.check_url(&url("https://[::1]/")).is_ok());
        assert!(
            allow.check_url(&url("http://example.com/")).is_ok(),
            "names: the resolver"
        );
        assert!(allow.check_url(&url("http://10.0.0.1/")).is_err());
        assert!(allow.check_url(&url("http://[fe80::1]/")).is_err());
        // WHATWG URL parsing normalizes the odd spellings of IPv4 addresses.
        assert!(allow.check_url(&url("http://0x7f.1/")).is_ok());
        assert!(
            allow.check_url(&url("http://2852039166/")).is_err(),
            "169.254.169.254"
        );
        assert!(allow.check_url(&url("ftp://127.0.0.1/")).is_err());
    }

    #[tokio::test]
    async fn a_refused_name_is_told_apart_from_a_failed_connection() {
        let outbound = Outbound::new(list("10.0.0.0/8")).expect("a client");
        let request = outbound.request(Method::GET, Url::parse("http://localhost:9/").unwrap());
        match outbound.send(request).await {
            Err(OutboundError::Refused(refused)) => {
                assert!(refused.to_string().contains("localhost"), "{refused}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let request = outbound.request(Method::GET, Url::parse("http://127.0.0.1:9/").unwrap());
        assert!(matches!(
            outbound.send(request).await,
            Err(OutboundError::Refused(_))
        ));
    }
}
