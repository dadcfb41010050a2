//! The `--redis` URL: one Redis, or the sentinels that know which Redis is the master.
//!
//! Owns: parsing and printing (never the password). Does not touch: connections (the Redis
//! engine resolves and connects).
//!
//! Forms:
//! - `redis://[[user]:password@]host[:port][/db]` (port 6379, db 0 by default);
//! - `rediss://...`: the same over TLS;
//! - `redis+sentinel://[[user]:password@]host1[:port],host2[:port]/MASTER_NAME[/db]` (port
//!   26379 by default): ask these sentinels for the master named `MASTER_NAME`, and follow its
//!   failovers; `rediss+sentinel://` uses TLS to the sentinels and the master. The password is
//!   the master's; sentinels are asked without one.

use super::error::ConfigError;

/// Where the cluster's Redis is.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// The Redis (without sentinels), or the first sentinel.
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// `rediss://`: TLS (rustls), verified against `--redis-ca` or the system's store.
    pub tls: bool,
    /// `redis+sentinel://`: the master is found through these sentinels.
    pub sentinels: Option<Sentinels>,
}

/// The sentinels of a `redis+sentinel://` URL and the master's name.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Sentinels {
    pub hosts: Vec<(String, u16)>,
    pub master: String,
}

impl std::fmt::Debug for RedisUrl {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.sentinels {
            None => write!(f, "{scheme}://{}:{}/{}", self.host, self.port, self.db),
            Some(s) => {
                let hosts: Vec<String> = s.hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                write!(f, "{scheme}+sentinel://{}/{}/{}", hosts.join(","), s.master, self.db)
            }
        }
    }
}

const EXPECTED: &str = "expected redis://[[user]:password@]host:port[/db], rediss://..., or \
                        redis+sentinel://[[user]:password@]host:port,host:port/MASTER_NAME[/db]";

fn bad(why: &str) -> ConfigError {
    ConfigError::RedisUrl(format!("{why} ({EXPECTED})"))
}

/// `host[:port]`, IPv6 in brackets (`[::1]:6379`, `[::1]`).
fn host_port(s: &str, default: u16) -> Result<(String, u16), ConfigError> {
    let port_of = |p: &str| p.parse::<u16>().map_err(|_| bad("port must be a number 1-65535"));
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its ']'"))?;
            match after {
                "" => (host, default),
                p => (host, port_of(p.strip_prefix(':').ok_or_else(|| bad("':' after ']'"))?)?),
            }
        }
        None => match s.rsplit_once(':') {
            Some((h, p)) => (h, port_of(p)?),
            None => (s, default),
        },
    };
    if host.is_empty() || host.contains(':') && !s.starts_with('[') || port == 0 {
        return Err(bad("needs a host and a port"));
    }
    Ok((host.to_string(), port))
}

fn db_of(s: Option<&str>) -> Result<u32, ConfigError> {
    match s {
        None | Some("") => Ok(0),
        Some(d) => d.parse().map_err(|_| bad("db must be a number")),
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("not a URL"))?;
        let (tls, sentinel) = match scheme {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+sentinel" => (false, true),
            "rediss+sentinel" => (true, true),
            _ => return Err(bad("unknown scheme")),
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some(("", p)) => (None, Some(p.to_string())),
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (None, Some(a.to_string())),
            },
        };
        let mut parts = rest.splitn(3, '/');
        let hosts = parts.next().unwrap_or("");
        let (host, port, db, sentinels) = if sentinel {
            let master = parts.next().unwrap_or("");
            if master.is_empty() {
                return Err(bad("a sentinel URL names its master after the hosts"));
            }
            let db = db_of(parts.next())?;
            let hosts = hosts
                .split(',')
                .map(|h| host_port(h, 26379))
                .collect::<Result<Vec<_>, _>>()?;
            let (host, port) = hosts[0].clone();
            let sentinels = Sentinels {
                hosts,
                master: master.to_string(),
            };
            (host, port, db, Some(sentinels))
        } else {
            let db = db_of(parts.next())?;
            if parts.next().is_some() || hosts.contains(',') {
                return Err(bad("one host, then at most a db"));
            }
            let (host, port) = host_port(hosts, 6379)?;
            (host, port, db, None)
        };
        Ok(RedisUrl {
            host,
            port,
            username,
            password,
            db,
            tls,
            sentinels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        let u: RedisUrl = "redis://127.0.0.1:6380/2".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.db, u.password, u.tls),
            ("127.0.0.1", 6380, 2, None, false)
        );
        let u: RedisUrl = "redis://:s3cret@cache.local".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.password.as_deref()),
            ("cache.local", 6379, Some("s3cret"))
        );
        let u: RedisUrl = "redis://app:pw@h:1/".parse().unwrap();
        assert_eq!(
            (u.username.as_deref(), u.password.as_deref(), u.db),
            (Some("app"), Some("pw"), 0)
        );
        assert!(!format!("{u:?}").contains("pw"), "the password is never printed");
        let u: RedisUrl = "rediss://:pw@redis.example.com:6380".parse().unwrap();
        assert!(u.tls && u.sentinels.is_none());
        let u: RedisUrl = "redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380,[::1]/mymaster/3"
            .parse()
            .unwrap();
        let s = u.sentinels.clone().unwrap();
        assert_eq!(
            s.hosts,
            vec![
                ("10.0.0.1".to_string(), 26379),
                ("10.0.0.2".to_string(), 26380),
                ("::1".to_string(), 26379)
            ]
        );
        assert_eq!(
            (s.master.as_str(), u.db, u.password.as_deref(), u.tls),
            ("mymaster", 3, Some("pw"), false)
        );
        assert!(!format!("{u:?}").contains("pw"));
        let u: RedisUrl = "rediss+sentinel://s1/m".parse().unwrap();
        assert!(u.tls && u.sentinels.is_some());
        let u: RedisUrl = "redis://[::1]:6380".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 6380));
        let u: RedisUrl = "redis://[::1]".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 6379));
    }

    #[test]
    fn refuses_what_is_not_a_redis_url() {
        for bad in [
            "",
            "http://h:1",
            "redis://",
            "redis://h:x",
            "redis://h:0",
            "redis://h:1/x",
            "redis://h:99999",
            "redis://a,b",
            "redis+sentinel://h1,h2",
            "redis+sentinel://h1,h2/",
            "redis+sentinel://h1,:1/m",
            "redis+sentinel://h1/m/x",
            "redis://[::1",
            "redis://[::1]x",
            "redis://::1:6379",
        ] {
            assert!(bad.parse::<RedisUrl>().is_err(), "{bad}");
        }
    }
}
