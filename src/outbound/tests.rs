//! The policy's rules, one spelling at a time. The WHATWG URL parser normalises most odd
//! IPv4 spellings; each is checked here rather than assumed.

use std::net::{IpAddr, SocketAddr};

use reqwest::{Method, Url};

use super::*;

fn list(text: &str) -> AllowList {
    text.parse().expect("a valid allow-list")
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

fn url(text: &str) -> Url {
    Url::parse(text).expect("a URL")
}

fn policy(allow: &str) -> Policy {
    Policy::new(list(allow), OwnAddrs::default())
}

/// A policy whose taskd listens on `listen` and stores in `database`.
async fn policy_of(allow: &str, listen: &str, database: &str) -> Policy {
    let own = OwnAddrs::of(listen.parse().expect("an address"), database).await;
    Policy::new(list(allow), own)
}

#[track_caller]
fn refused(result: Result<impl std::fmt::Debug, Refused>) -> String {
    match result {
        Err(refused) => refused.to_string(),
        Ok(allowed) => panic!("expected a refusal, got {allowed:?}"),
    }
}

#[test]
fn the_default_allows_nothing_and_says_which_flag_would() {
    let allow = list(DEFAULT_ALLOW_OUTBOUND);
    assert!(allow.is_empty());
    assert_eq!(allow, AllowList::default());
    let policy = Policy::new(allow, OwnAddrs::default());
    for target in [
        "http://127.0.0.1:9000/",
        "http://example.com/",
        "https://[::1]/",
    ] {
        let message = refused(policy.check_url(&url(target)));
        assert!(message.contains("--allow-outbound"), "{message}");
        assert!(message.contains("TASKD_ALLOW_OUTBOUND"), "{message}");
    }
    refused(policy.screen("localhost", 80, [ip("127.0.0.1")]));
}

#[test]
fn entries_read_hosts_as_urls_do() {
    // `127.1` in the list is the address a URL with `127.1` reaches, not a name.
    let allow = list("127.1:80,0x7f000002,::ffff:10.0.0.0/104,::ffff:127.0.0.3,localhost.");
    assert!(allow.allows_ip(ip("127.0.0.1"), 80));
    assert!(allow.allows_ip(ip("127.0.0.2"), 1));
    assert!(allow.allows_ip(ip("10.1.2.3"), 1));
    assert!(allow.allows_ip(ip("::ffff:10.1.2.3"), 1));
    assert!(allow.allows_ip(ip("127.0.0.3"), 1));
    assert!(allow.allows_name("LOCALHOST", 1));
    assert_eq!(
        allow.to_string(),
        "127.0.0.1:80,127.0.0.2,10.0.0.0/8,127.0.0.3,localhost"
    );
}

/// Each odd spelling of 127.0.0.2, as the URL parser reads it: the address checked is the
/// address connected to.
#[test]
fn every_ip_spelling_is_normalised_before_the_check() {
    let two = url::Host::Ipv4("127.0.0.2".parse().unwrap());
    for spelling in [
        "http://127.0.0.2:8080/",
        "http://2130706434:8080/",
        "http://0x7f000002:8080/",
        "http://0x7F.0.0.2:8080/",
        "http://0177.0.0.2:8080/",
        "http://0177.0.0.02:8080/",
        "http://127.2:8080/",
        "http://127.0.2:8080/",
        "http://127.0.0.2.:8080/",
        "http://%31%32%37.0.0.2:8080/",
        "http://user@127.0.0.2:8080/",
        "http://user:pw@127.0.0.2:8080/",
        "http://evil.example@127.0.0.2:8080/",
    ] {
        let parsed = url(spelling);
        assert_eq!(parsed.host(), Some(two.clone()), "{spelling}");
        assert_eq!(parsed.port_or_known_default(), Some(8080), "{spelling}");
    }
    assert_eq!(url("http://127.1/").host_str(), Some("127.0.0.1"));
    let mapped = url("http://[::ffff:127.0.0.2]:8080/");
    assert_eq!(mapped.host_str(), Some("[::ffff:7f00:2]"));

    // Allowed on another port only: every spelling is refused; on its port, allowed.
    let other_port = policy("127.0.0.0/8:9000,[::1]:9000,localhost:9000");
    let right_port = policy("127.0.0.0/8:8080,[::1]:8080");
    for spelling in [
        "http://127.0.0.2:8080/",
        "http://2130706434:8080/",
        "http://0x7f000002:8080/",
        "http://0177.0.0.2:8080/",
        "http://127.2:8080/",
        "http://127.0.0.2.:8080/",
        "http://[::ffff:127.0.0.2]:8080/",
        "http://[::1]:8080/",
        "http://[0:0:0:0:0:0:0:1]:8080/",
        "http://user@127.0.0.2:8080/",
        "http://localhost:9000@127.0.0.2:8080/",
    ] {
        let message = refused(other_port.check_url(&url(spelling)));
        assert!(message.contains(":8080"), "{spelling}: {message}");
        assert!(right_port.check_url(&url(spelling)).is_ok(), "{spelling}");
    }
    // A default port is the port checked.
    refused(other_port.check_url(&url("http://127.0.0.1/")));
    assert!(
        policy("127.0.0.1:80")
            .check_url(&url("http://127.0.0.1/"))
            .is_ok()
    );
    assert!(
        policy("127.0.0.1:443")
            .check_url(&url("https://127.0.0.1/"))
            .is_ok()
    );
    // A name goes to the resolver, which screens with the port.
    assert!(
        other_port
            .check_url(&url("http://localhost.:8080/"))
            .is_ok()
    );
    refused(other_port.screen_name("localhost.", 8080));
    refused(other_port.screen("localhost.", 8080, [ip("127.0.0.1")]));
    assert!(other_port.screen_name("localhost.", 9000).is_ok());
    assert!(
        other_port.screen_name("any.example", 9000).is_ok(),
        "a network on 9000"
    );
    assert!(
        other_port
            .screen("localhost.", 9000, [ip("127.0.0.1")])
            .is_ok()
    );
}

#[test]
fn an_unlisted_name_needs_every_address_allowed_on_its_port() {
    let policy = policy("10.0.0.0/8:80");
    let addrs = |ips: &[&str], port| -> Vec<SocketAddr> {
        ips.iter().map(|i| SocketAddr::new(ip(i), port)).collect()
    };
    assert_eq!(
        policy.screen("a.example", 80, [ip("10.0.0.1"), ip("10.0.0.2")]),
        Ok(addrs(&["10.0.0.1", "10.0.0.2"], 80))
    );
    refused(policy.screen("a.example", 81, [ip("10.0.0.1")]));
    refused(policy.screen("a.example", 80, [ip("10.0.0.1"), ip("11.0.0.1")]));
    refused(policy.screen("a.example", 80, []));
    refused(policy.check_url(&url("ftp://10.0.0.1:80/")));
}

#[test]
fn link_local_and_metadata_are_never_allowed() {
    let policy = policy("0.0.0.0/0,::/0,metadata.internal");
    for never in [
        "169.254.169.254",
        "169.254.0.1",
        "fe80::1",
        "febf::1",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
    ] {
        assert!(never_allowed(ip(never)), "{never}");
        refused(policy.screen("x.example", 80, [ip(never)]));
    }
    refused(policy.check_url(&url("http://2852039166/")));
    refused(policy.check_url(&url("http://[::ffff:a9fe:a9fe]/")));
    assert!(policy.check_url(&url("http://[fd00:ec2::253]/")).is_ok());
    // A name listed by name keeps its other addresses, loses the forbidden ones.
    let screened = policy.screen(
        "metadata.internal",
        80,
        [ip("169.254.169.254"), ip("10.1.1.1")],
    );
    assert_eq!(screened, Ok(vec!["10.1.1.1:80".parse().unwrap()]));
    refused(policy.screen("metadata.internal", 80, [ip("169.254.169.254")]));
}

/// taskd's listen address: refused though `127.0.0.0/8` and `localhost` cover it; allowed
/// by an entry naming exactly its host and port.
#[tokio::test]
async fn the_own_listen_address_needs_an_exact_entry() {
    let sqlite = "sqlite://taskd.db";
    let covered = policy_of("127.0.0.0/8,localhost,[::1]", "127.0.0.1:8080", sqlite).await;
    for spelling in [
        "http://127.0.0.1:8080/",
        "http://2130706433:8080/",
        "http://[::ffff:127.0.0.1]:8080/",
        "http://0.0.0.0:8080/",
    ] {
        let message = refused(covered.check_url(&url(spelling)));
        assert!(
            message.contains("own listen address"),
            "{spelling}: {message}"
        );
    }
    refused(covered.screen("localhost", 8080, [ip("127.0.0.1")]));
    assert!(covered.check_url(&url("http://127.0.0.1:8081/")).is_ok());
    assert!(covered.check_url(&url("http://127.0.0.2:8080/")).is_ok());

    for exact in ["127.0.0.1:8080", "127.0.0.0/8,127.1:8080"] {
        let named = policy_of(exact, "127.0.0.1:8080", sqlite).await;
        assert!(
            named.check_url(&url("http://127.0.0.1:8080/")).is_ok(),
            "{exact}"
        );
        assert!(
            named.screen("localhost", 8080, [ip("127.0.0.1")]).is_ok(),
            "{exact}"
        );
    }
    let by_name = policy_of("localhost:8080", "127.0.0.1:8080", sqlite).await;
    assert!(by_name.screen("localhost", 8080, [ip("127.0.0.1")]).is_ok());
    refused(by_name.check_url(&url("http://127.0.0.1:8080/")));
    for not_exact in ["127.0.0.0/8:8080", "127.0.0.1", "*.localdomain:8080"] {
        let policy = policy_of(not_exact, "127.0.0.1:8080", sqlite).await;
        refused(policy.check_url(&url("http://127.0.0.1:8080/")));
    }

    // Listening on every address: every local address on that port is taskd's own.
    let everywhere = policy_of("0.0.0.0/0,::/0", "0.0.0.0:8080", sqlite).await;
    for spelling in [
        "http://127.0.0.1:8080/",
        "http://127.9.9.9:8080/",
        "http://0.0.0.0:8080/",
        "http://[::1]:8080/",
        "http://[::]:8080/",
    ] {
        refused(everywhere.check_url(&url(spelling)));
    }
    assert!(everywhere.check_url(&url("http://127.0.0.1:8081/")).is_ok());
    assert!(
        everywhere.check_url(&url("http://192.0.2.1:8080/")).is_ok(),
        "not local"
    );
}

/// The database's address (PostgreSQL) is taskd's own too; SQLite has none.
#[tokio::test]
async fn the_database_address_needs_an_exact_entry() {
    let database = "postgres://postgres@127.0.0.1:5433/test";
    let covered = policy_of("127.0.0.0/8,localhost", "127.0.0.1:8080", database).await;
    let message = refused(covered.check_url(&url("http://127.0.0.1:5433/")));
    assert!(message.contains("database"), "{message}");
    assert!(covered.check_url(&url("http://127.0.0.1:5432/")).is_ok());
    let named = policy_of("127.0.0.1:5433", "127.0.0.1:8080", database).await;
    assert!(named.check_url(&url("http://127.0.0.1:5433/")).is_ok());

    // By name, the name is own whatever it resolves to now.
    let by_name = policy_of("10.0.0.0/8", "127.0.0.1:8080", "postgres://u@DB.invalid/x").await;
    refused(by_name.screen("db.invalid", 5432, [ip("10.0.0.9")]));
    assert!(by_name.screen("db.invalid", 5433, [ip("10.0.0.9")]).is_ok());
}

#[tokio::test]
async fn a_refused_name_is_told_apart_from_a_failed_connection() {
    let outbound = Outbound::new(list("10.0.0.0/8,localhost:9"), OwnAddrs::default()).unwrap();
    let send = |target: &str| {
        let request = outbound.request(Method::GET, url(target));
        outbound.send(request)
    };
    // `localhost` is allowed on port 9 only: on port 10 the resolver refuses it.
    match send("http://localhost:10/").await {
        Err(OutboundError::Refused(refused)) => {
            assert!(refused.to_string().contains("localhost"), "{refused}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        send("http://127.0.0.1:10/").await,
        Err(OutboundError::Refused(_))
    ));
    // On port 9 it is allowed, and nothing listens: a failed connection, not a refusal.
    assert!(matches!(
        send("http://localhost:9/").await,
        Err(OutboundError::Failed(_))
    ));
}
