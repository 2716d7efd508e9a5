//! taskd's own addresses: where it listens and where its database is. A task that reaches
//! them could drive taskd's own API (pause its queues) or talk to its database, so the
//! policy refuses them unless an entry names them exactly.
//!
//! Built once at start by `app::run` from the bound listener and the database URL; no
//! resolving happens here after that.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use url::Url;

use super::allow::normalize;

/// The default PostgreSQL port, as libpq and sqlx assume it.
const POSTGRES_PORT: u16 = 5432;

/// taskd's own addresses, each with what it is (for the refusal's message).
#[derive(Debug, Clone, Default)]
pub struct OwnAddrs {
    addrs: Vec<(SocketAddr, &'static str)>,
    /// The database's host name and port, in case it resolves differently later.
    names: Vec<(String, u16, &'static str)>,
}

const LISTEN: &str = "taskd's own listen address";
const DATABASE: &str = "taskd's database";

impl OwnAddrs {
    /// The listen address, and the database's address when the URL names a TCP host
    /// (PostgreSQL; SQLite has none). A database name that does not resolve now is kept by
    /// name.
    pub async fn of(listen: SocketAddr, database_url: &str) -> OwnAddrs {
        let mut own = OwnAddrs::default();
        own.addrs.push((listen, LISTEN));
        if let Some((host, port)) = database_host_port(database_url) {
            match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(found) => own.addrs.extend(found.map(|addr| (addr, DATABASE))),
                Err(error) => {
                    tracing::warn!(%host, %error, "cannot resolve the database host; refusing it by name")
                }
            }
            own.names.push((normalize(&host), port, DATABASE));
        }
        own
    }

    /// What `addr` (reached as `name`, if by name) is of taskd's own, if anything. A listener
    /// on 0.0.0.0 or [::] owns its port on every local address; connecting to 0.0.0.0 or
    /// [::] reaches this machine, so it counts as loopback.
    pub fn find(&self, name: Option<&str>, addr: SocketAddr) -> Option<&'static str> {
        let ip = addr.ip().to_canonical();
        let by_addr = self.addrs.iter().find(|(own, _)| {
            let own_ip = own.ip().to_canonical();
            own.port() == addr.port()
                && (own_ip == ip
                    || (own_ip.is_unspecified() && is_local(ip))
                    || (ip.is_unspecified() && (own_ip.is_loopback() || own_ip.is_unspecified())))
        });
        let by_name = || {
            let name = normalize(name?);
            self.names
                .iter()
                .find(|(own, port, _)| *own == name && *port == addr.port())
                .map(|(_, _, what)| *what)
        };
        by_addr.map(|(_, what)| *what).or_else(by_name)
    }
}

/// Whether `ip` is an address of this machine: loopback, unspecified, or one a socket can be
/// bound to (which the kernel allows only for its own interfaces' addresses).
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The TCP host and port of a PostgreSQL URL (`postgres://user@host:port/db`, with the
/// `host` and `port` query parameters sqlx also reads); `None` for SQLite or a Unix socket.
fn database_host_port(database_url: &str) -> Option<(String, u16)> {
    let url = Url::parse(database_url).ok()?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return None;
    }
    let param = |key: &str| {
        url.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let host = match (param("host"), url.host()) {
        (Some(host), _) => host,
        (None, Some(url::Host::Ipv6(v6))) => v6.to_string(),
        (None, Some(host)) if !host.to_string().is_empty() => host.to_string(),
        // No host: sqlx tries a local socket, then localhost; counting localhost refuses more.
        (None, _) => "localhost".to_owned(),
    };
    if host.starts_with('/') || host.is_empty() {
        return None;
    }
    let port = match param("port") {
        Some(port) => port.parse().ok()?,
        None => url.port().unwrap_or(POSTGRES_PORT),
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::database_host_port;

    #[test]
    fn the_database_address_comes_from_a_postgres_url() {
        for (database, expected) in [
            ("sqlite://taskd.db", None),
            ("sqlite::memory:", None),
            ("postgres://u@db.example:6543/x", Some(("db.example", 6543))),
            ("postgresql://u@DB.example/x", Some(("DB.example", 5432))),
            ("postgres://u@[::1]:7000/x", Some(("::1", 7000))),
            ("postgres:///x", Some(("localhost", 5432))),
            ("postgres://u@h/x?host=other&port=7", Some(("other", 7))),
            ("postgres:///x?host=/var/run/postgresql", None),
        ] {
            let found = database_host_port(database);
            let found = found.as_ref().map(|(host, port)| (host.as_str(), *port));
            assert_eq!(found, expected, "{database}");
        }
    }
}
