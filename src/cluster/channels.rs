//! Channel names, `{prefix}:{kind}:{name}`, derived the same way by every node, and what an
//! incoming channel names.
//!
//! Owns: the naming. Does not touch: subscribing or publishing.

/// Channel names, `{prefix}:{kind}:{name}`. Every node of a cluster derives them the same way.
#[derive(Debug, Clone)]
#[doc(hidden)]
pub struct Channels {
    prefix: String,
    node: String,
}

/// What an incoming channel names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChannelKind<'a> {
    All,
    Event(&'a str),
    User(&'a str),
    Room(&'a str),
    /// Every node: requests, messages to one connection.
    Nodes,
    /// This node only: answers to its requests, probes, evictions.
    ThisNode,
}

impl Channels {
    pub fn new(prefix: &str, node: &str) -> Self {
        Channels {
            prefix: prefix.to_string(),
            node: node.to_string(),
        }
    }

    fn make(&self, kind: &str, name: &str) -> Box<[u8]> {
        let mut v = Vec::with_capacity(self.prefix.len() + kind.len() + name.len() + 2);
        v.extend_from_slice(self.prefix.as_bytes());
        v.push(b':');
        v.extend_from_slice(kind.as_bytes());
        if !name.is_empty() {
            v.push(b':');
            v.extend_from_slice(name.as_bytes());
        }
        v.into_boxed_slice()
    }

    pub fn all(&self) -> Box<[u8]> {
        self.make("all", "")
    }
    pub fn nodes(&self) -> Box<[u8]> {
        self.make("nodes", "")
    }
    pub fn node(&self, node: &str) -> Box<[u8]> {
        self.make("node", node)
    }
    pub fn this_node(&self) -> Box<[u8]> {
        self.node(&self.node)
    }
    pub fn event(&self, name: &str) -> Box<[u8]> {
        self.make("event", name)
    }
    pub fn user(&self, id: &str) -> Box<[u8]> {
        self.make("user", id)
    }
    pub fn room(&self, name: &str) -> Box<[u8]> {
        self.make("room", name)
    }
    /// The start of every node's channel (the limit script appends a node id).
    pub fn node_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }
    /// Key of a node's liveness (refreshed every third of `--node-ttl`).
    pub fn alive_prefix(&self) -> String {
        format!("{}:alive:", self.prefix)
    }
    /// The pub/sub channel of a history channel name (`event:x` → `{prefix}:event:x`).
    pub fn of_history(&self, name: &str) -> Box<[u8]> {
        self.make(name, "")
    }
    /// The stream and the hash (epoch, last offset) of a history channel.
    pub fn history_keys(&self, name: &str) -> (Vec<u8>, Vec<u8>) {
        (
            format!("{}:history:{name}", self.prefix).into_bytes(),
            format!("{}:history-meta:{name}", self.prefix).into_bytes(),
        )
    }
    /// The history channel name of a pub/sub channel (`None`: not an event, room or user, or
    /// everyone's).
    pub fn history_name<'a>(&self, channel: &'a [u8]) -> Option<&'a str> {
        let rest = channel.strip_prefix(self.prefix.as_bytes())?.strip_prefix(b":")?;
        let name = std::str::from_utf8(rest).ok()?;
        (name == super::broker::ALL || ["event:", "room:", "user:"].iter().any(|k| name.starts_with(k))).then_some(name)
    }
    /// Key remembering a publish's idempotency key for the window.
    pub fn idempotency(&self, key: &str) -> Vec<u8> {
        format!("{}:idem:{key}", self.prefix).into_bytes()
    }
    /// Key of a user's connections across the cluster (a sorted set).
    pub fn user_connections(&self, id: &str) -> Vec<u8> {
        format!("{}:conns:{id}", self.prefix).into_bytes()
    }

    /// What an incoming channel names (`None`: not one of ours).
    pub(crate) fn parse<'a>(&self, channel: &'a [u8]) -> Option<ChannelKind<'a>> {
        let rest = channel.strip_prefix(self.prefix.as_bytes())?.strip_prefix(b":")?;
        let rest = std::str::from_utf8(rest).ok()?;
        let (kind, name) = rest.split_once(':').unwrap_or((rest, ""));
        Some(match (kind, name) {
            ("all", "") => ChannelKind::All,
            ("nodes", "") => ChannelKind::Nodes,
            ("node", n) if n == self.node => ChannelKind::ThisNode,
            ("event", n) => ChannelKind::Event(n),
            ("user", n) => ChannelKind::User(n),
            ("room", n) => ChannelKind::Room(n),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_and_stay_inside_their_prefix() {
        let c = Channels::new("wsedge", "n1");
        assert_eq!(&*c.user("a:b"), b"wsedge:user:a:b");
        assert_eq!(c.parse(&c.user("a:b")), Some(ChannelKind::User("a:b")));
        assert_eq!(c.parse(&c.room("r")), Some(ChannelKind::Room("r")));
        assert_eq!(c.parse(&c.event("e.x")), Some(ChannelKind::Event("e.x")));
        assert_eq!(c.parse(&c.all()), Some(ChannelKind::All));
        assert_eq!(c.parse(&c.nodes()), Some(ChannelKind::Nodes));
        assert_eq!(c.parse(&c.this_node()), Some(ChannelKind::ThisNode));
        assert_eq!(c.parse(&c.node("n2")), None, "another node's channel");
        assert_eq!(c.parse(b"other:all"), None);
        assert_eq!(c.parse(b"wsedgeX:all"), None);
        assert_eq!(c.history_name(&c.of_history("room:r")), Some("room:r"));
        assert_eq!(&*c.of_history("user:a"), &*c.user("a"));
        assert_eq!(c.history_name(&c.all()), Some("all"));
        assert_eq!(c.history_name(&c.nodes()), None);
    }
}
