//! Behind a reverse proxy: the base path taskd serves under (`--base-path`), the proxies whose
//! `X-Forwarded-*` headers it believes (`--trusted-proxies`), and the outside view of each
//! request — [`Links`] — that every URL taskd hands out is built from (`Location`, the
//! dashboard's `<base>`).
//!
//! The prefix of links is the trusted proxy's `X-Forwarded-Prefix` when it sends one (it
//! says what the client's path to taskd's root is, so it replaces the base path), else the
//! base path. Links are path-absolute (`/taskd/v1/tasks/…`), which is right whatever name the
//! client used; when a trusted proxy states the origin (`X-Forwarded-Proto` or
//! `X-Forwarded-Host`) they are absolute URLs on that origin. From any other peer these
//! headers are ignored: a client cannot make taskd hand out links to a host of its choosing.
//! A trusted proxy's `X-Forwarded-Host` is also the name the `Host` allow-list checks
//! (`hosts.rs`): it is the name the browser used, which DNS rebinding would forge.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::uri::{Authority, PathAndQuery, Uri};
use axum::http::{HeaderMap, header};
use ipnet::IpNet;

use super::error::ApiError;

/// The path taskd serves under: empty (the root), or `/segment[/segment…]` without a final
/// slash, each segment of URL-safe characters (so it can go into a link or an HTML attribute
/// as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BasePath(String);

impl BasePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BasePath {
    type Err = String;

    fn from_str(text: &str) -> Result<BasePath, String> {
        let trimmed = text.trim();
        let path = trimmed.strip_suffix('/').unwrap_or(trimmed);
        if path.is_empty() {
            return Ok(BasePath::default());
        }
        let safe = |segment: &str| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        };
        match path.strip_prefix('/') {
            Some(rest) if rest.split('/').all(safe) => Ok(BasePath(path.to_owned())),
            _ => Err(format!(
                "`{trimmed}` is not a base path: give `/name` or `/a/b` (letters, digits, \
                 `-._~`), or nothing for the root"
            )),
        }
    }
}

/// The peers whose `X-Forwarded-*` headers are believed: addresses and CIDRs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn trusts(&self, peer: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        self.0.iter().any(|net| net.contains(&peer))
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated `10.0.0.0/8`, `127.0.0.1`, `::1`, `fd00::/8`; empty: none.
    fn from_str(list: &str) -> Result<TrustedProxies, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{entry}` is not an IP address or CIDR"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

/// What the serving layer needs to know about the proxy in front.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    pub base_path: BasePath,
    pub trusted: TrustedProxies,
}

/// How the client outside the proxy reaches taskd: the base of every URL taskd hands out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// `https://tasks.example.com`, when a trusted proxy stated it.
    origin: Option<String>,
    /// `/taskd`, or empty at the root.
    prefix: String,
}

impl Links {
    /// The URL a client uses for taskd's own `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}{}{path}",
            self.origin.as_deref().unwrap_or_default(),
            self.prefix
        )
    }

    /// The path of taskd's root as the client sees it, without a final slash.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Links {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Links, Self::Rejection> {
        Ok(parts.extensions.get::<Links>().cloned().unwrap_or_default())
    }
}

/// A trusted proxy's `X-Forwarded-Host`: the name the `Host` check reads instead of `Host`.
#[derive(Debug, Clone)]
pub struct ForwardedHost(pub String);

/// Takes the base path off the request's path (404 outside it) and records the outside view
/// of the request, believing `X-Forwarded-*` from a trusted peer only (400 if malformed).
pub(super) fn enter(config: &ProxyConfig, mut request: Request) -> Result<Request, ApiError> {
    let trusted = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| config.trusted.trusts(peer.ip()));
    let forwarded = if trusted {
        Forwarded::read(request.headers())?
    } else {
        Forwarded::default()
    };
    let inner = inner_path(config.base_path.as_str(), request.uri())?;
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(inner);
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| ApiError::RouteNotFound)?;
    // Stated by the proxy, or not at all: without it a path-absolute link is right whatever
    // name the client used, and taskd does not guess a scheme.
    let origin = if forwarded.proto.is_some() || forwarded.host.is_some() {
        let host = forwarded.host.clone().or_else(|| {
            let host = request.headers().get(header::HOST)?.to_str().ok()?;
            Some(host.parse::<Authority>().ok()?.to_string())
        });
        host.map(|host| format!("{}://{host}", forwarded.proto.unwrap_or("http")))
    } else {
        None
    };
    let links = Links {
        origin,
        prefix: forwarded
            .prefix
            .unwrap_or_else(|| config.base_path.as_str().to_owned()),
    };
    request.extensions_mut().insert(links);
    if let Some(host) = forwarded.host {
        request.extensions_mut().insert(ForwardedHost(host));
    }
    Ok(request)
}

/// The path and query below `base`: `/taskd/v1/tasks?x` → `/v1/tasks?x`, `/taskd` → `/`.
fn inner_path(base: &str, uri: &Uri) -> Result<PathAndQuery, ApiError> {
    let path = uri.path();
    let inner = match path.strip_prefix(base) {
        _ if base.is_empty() => return Ok(uri.path_and_query().cloned().unwrap_or(root())),
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => return Err(ApiError::RouteNotFound),
    };
    let text = match uri.query() {
        Some(query) => format!("{inner}?{query}"),
        None => inner.to_owned(),
    };
    text.parse().map_err(|_| ApiError::RouteNotFound)
}

fn root() -> PathAndQuery {
    PathAndQuery::from_static("/")
}

/// The `X-Forwarded-*` headers of a trusted proxy, checked.
#[derive(Debug, Default)]
struct Forwarded {
    proto: Option<&'static str>,
    host: Option<String>,
    prefix: Option<String>,
}

impl Forwarded {
    fn read(headers: &HeaderMap) -> Result<Forwarded, ApiError> {
        let proto = last_value(headers, "x-forwarded-proto")?
            .map(|proto| match proto.to_ascii_lowercase().as_str() {
                "http" => Ok("http"),
                "https" => Ok("https"),
                _ => Err(bad("X-Forwarded-Proto", &proto, "`http` or `https`")),
            })
            .transpose()?;
        let host = last_value(headers, "x-forwarded-host")?
            .map(|host| match host.parse::<Authority>() {
                Ok(authority) if !host.contains('@') => Ok(authority.to_string()),
                _ => Err(bad(
                    "X-Forwarded-Host",
                    &host,
                    "a host name with an optional port",
                )),
            })
            .transpose()?;
        let prefix = last_value(headers, "x-forwarded-prefix")?
            .map(|prefix| {
                prefix
                    .parse::<BasePath>()
                    .map(|path| path.0)
                    .map_err(|_| bad("X-Forwarded-Prefix", &prefix, "a path such as `/taskd`"))
            })
            .transpose()?;
        Ok(Forwarded {
            proto,
            host,
            prefix,
        })
    }
}

/// The last of a header's comma-separated values: the one the nearest proxy — the trusted
/// one — added, should a proxy append rather than replace.
fn last_value(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get_all(name).iter().next_back() else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::InvalidHeader(format!("{name} is not visible ASCII")))?;
    Ok(text
        .rsplit(',')
        .next()
        .map(str::trim)
        .filter(|last| !last.is_empty())
        .map(str::to_owned))
}

fn bad(name: &str, value: &str, want: &str) -> ApiError {
    ApiError::InvalidHeader(format!(
        "{name} from the trusted proxy must be {want}, got `{value}`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_paths_are_read_without_a_final_slash() {
        assert_eq!("".parse::<BasePath>().unwrap().as_str(), "");
        assert_eq!("/".parse::<BasePath>().unwrap().as_str(), "");
        assert_eq!("/taskd/".parse::<BasePath>().unwrap().as_str(), "/taskd");
        assert_eq!("/a/b-c".parse::<BasePath>().unwrap().as_str(), "/a/b-c");
        for bad in ["taskd", "//evil.example", "/a//b", "/a b", "/a\"b", "/a?b"] {
            assert!(bad.parse::<BasePath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_listed_peers_are_trusted() {
        let trusted: TrustedProxies = "10.0.0.0/8, 127.0.0.1".parse().unwrap();
        assert!(trusted.trusts("10.1.2.3".parse().unwrap()));
        assert!(trusted.trusts("127.0.0.1".parse().unwrap()));
        assert!(trusted.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!trusted.trusts("127.0.0.2".parse().unwrap()));
        assert!(!TrustedProxies::default().trusts("127.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.local".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn the_base_path_is_taken_off_or_the_path_is_not_found() {
        let inner = |base: &str, uri: &str| {
            inner_path(base, &uri.parse().unwrap()).map(|path| path.as_str().to_owned())
        };
        assert_eq!(inner("", "/v1/tasks?limit=1").unwrap(), "/v1/tasks?limit=1");
        assert_eq!(
            inner("/taskd", "/taskd/v1/tasks?a=b").unwrap(),
            "/v1/tasks?a=b"
        );
        assert_eq!(inner("/taskd", "/taskd").unwrap(), "/");
        assert_eq!(inner("/taskd", "/taskd/").unwrap(), "/");
        assert!(inner("/taskd", "/taskdx/v1/tasks").is_err());
        assert!(inner("/taskd", "/v1/tasks").is_err());
    }
}
