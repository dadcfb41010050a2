//! The per-user connection limit across the cluster: scripts over a sorted set per user.
//!
//! Owns: the scripts, their arguments, and the entries' layout: `node|incarnation|connection`,
//! scored by connect time (Unix ms). An entry counts only while `{prefix}:alive:{node}` holds
//! its incarnation, so a node's previous process (killed, or restarted with the same id) stops
//! counting the moment the new one marks itself alive, and a dead node's entries stop counting
//! within `--node-ttl`. Does not touch: the connection the scripts run on or what a verdict
//! does (the reactor finishes or refuses the handshake).

use std::sync::atomic::Ordering;

use redis_protocol::resp2::types::BytesFrame;

use super::state::{ADMIT_WAIT, ADMIT_WAIT_FOR, Expect, Half, HeldAdmission, MAX_UNSENT_RELEASES, Script};
use crate::cluster::broker::Admission;
use crate::cluster::broker::EngineHost;
use crate::cluster::resp::bytes_of;
use crate::cluster::wire;

/// A user's connection list lives this long after its last change (a safety net: entries of
/// dead incarnations are dropped by the scripts themselves).
pub(super) const USER_KEY_TTL_MS: &str = "604800000";

/// The part both scripts share: drops entries of dead incarnations, leaves `live` (oldest
/// first). ARGV[5]: liveness-key prefix.
macro_rules! live_entries {
    () => {
        r#"
local live = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local node, inst = string.match(m, '^([^|]*)|([^|]*)|')
  if node and redis.call('GET', ARGV[5] .. node) == inst then
    live[#live + 1] = m
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
"#
    };
}

/// Counts a new connection against the user's limit across the cluster. KEYS[1]: the user's
/// connections. ARGV: entry, score, limit, evict (1) or refuse (0), liveness-key prefix,
/// node-channel prefix, eviction payload head, key ttl (ms). Returns 1 (admitted; evictions
/// published to the nodes holding them) or 0 (refused).
pub(super) const ADMIT_SCRIPT: &str = concat!(
    live_entries!(),
    r#"
local over = #live - tonumber(ARGV[3]) + 1
if over > 0 then
  if ARGV[4] ~= '1' then return 0 end
  for i = 1, over do
    redis.call('ZREM', KEYS[1], live[i])
    local node, conn = string.match(live[i], '^([^|]*)|[^|]*|(.*)$')
    redis.call('PUBLISH', ARGV[6] .. node, ARGV[7] .. conn)
  end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
return 1
"#
);

/// Counts an open connection again (same KEYS and ARGV as the admit script; the score: when
/// it opened, or for one the node admitted alone, now, so it ranks after every connection the
/// cluster admitted; an entry Redis still has keeps its own score; ARGV[9]: this node's id). If the user is over the limit (two nodes each
/// admitted connections alone while Redis was away), the policy picks the excess: the oldest
/// (evict) or the newest (reject). Evictions on other nodes are published to them; this
/// node's are returned (its subscription may not be back yet).
pub(super) const REGISTER_SCRIPT: &str = concat!(
    r#"
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
"#,
    live_entries!(),
    r#"
local mine = {}
local over = #live - tonumber(ARGV[3])
for i = 1, over do
  local victim = live[i]
  if ARGV[4] ~= '1' then victim = live[#live + 1 - i] end
  redis.call('ZREM', KEYS[1], victim)
  local node, conn = string.match(victim, '^([^|]*)|[^|]*|(.*)$')
  if node == ARGV[9] then
    mine[#mine + 1] = conn
  else
    redis.call('PUBLISH', ARGV[6] .. node, ARGV[7] .. conn)
  end
end
return mine
"#
);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Half {
    /// This process's entry for `connection` in a user's set.
    fn entry(&self, connection: uuid::Uuid) -> String {
        format!("{}|{}|{}", self.shared.node, self.shared.instance, connection)
    }

    /// Runs the admit or register script for `connection` of `user`.
    #[allow(clippy::too_many_arguments)]
    fn limit_script(
        &mut self,
        which: Script,
        what: Expect,
        user: &str,
        connection: uuid::Uuid,
        score: u64,
        limit: usize,
        evict: bool,
    ) {
        let s = self.shared.clone();
        let key = s.channels.user_connections(user);
        let entry = self.entry(connection);
        let score = score.to_string();
        let limit = limit.to_string();
        let alive = s.channels.alive_prefix();
        let node_channels = s.channels.node_prefix();
        let head = wire::evict_head(&s.node);
        let evict: &[u8] = if evict { b"1" } else { b"0" };
        let args: [&[u8]; 9] = [
            entry.as_bytes(),
            score.as_bytes(),
            limit.as_bytes(),
            evict,
            alive.as_bytes(),
            node_channels.as_bytes(),
            &head,
            USER_KEY_TTL_MS.as_bytes(),
            s.node.as_bytes(),
        ];
        self.run_script(which, what, &[&key], &args);
    }

    pub(super) fn admit(
        &mut self,
        r: &mut dyn EngineHost,
        id: u64,
        user: &str,
        connection: uuid::Uuid,
        limit: usize,
        evict: bool,
    ) {
        if !self.is_up() {
            if self.shared.sub_up.load(Ordering::Acquire) {
                // Redis is there; only this reactor's connection is being made again.
                if self.held_admissions.is_empty() {
                    r.set_timer(ADMIT_WAIT, ADMIT_WAIT_FOR);
                }
                self.held_admissions.push(HeldAdmission {
                    id,
                    user: user.into(),
                    connection,
                    limit,
                    evict,
                });
                return;
            }
            self.counted_alone = true;
            r.admitted(id, Admission::Local);
            return;
        }
        self.limit_script(
            Script::Admit,
            Expect::Admit(id),
            user,
            connection,
            now_ms(),
            limit,
            evict,
        );
    }

    /// Counts an open connection again; see `REGISTER_SCRIPT`.
    pub(super) fn register(&mut self, user: &str, connection: uuid::Uuid, since: u64, limit: usize, evict: bool) {
        if self.cmd.conn.is_connected() {
            self.limit_script(
                Script::Register,
                Expect::Register,
                user,
                connection,
                since,
                limit,
                evict,
            );
        }
    }

    /// The register script's reply: this node's connections to close.
    pub(super) fn registered(&mut self, r: &mut dyn EngineHost, f: BytesFrame) {
        match f {
            BytesFrame::Array(ids) => {
                for id in ids.iter().filter_map(bytes_of) {
                    if let Some(c) = std::str::from_utf8(id).ok().and_then(|s| s.parse().ok()) {
                        r.evict(c);
                    }
                }
            }
            BytesFrame::Error(e) => log::warn!("cluster: counting a connection again failed: {e}"),
            _ => {}
        }
    }

    /// Keeps a release for when Redis is back (bounded: past it the oldest is dropped and
    /// logged; its entry expires with the user's key).
    pub(super) fn keep_release(&mut self, user: Box<str>, connection: uuid::Uuid) {
        if self.unsent_releases.len() >= MAX_UNSENT_RELEASES {
            log::error!("cluster: too many releases waiting for redis; the oldest is dropped");
            self.unsent_releases.pop_front();
        }
        self.unsent_releases.push_back((user, connection));
    }

    /// Connection `connection` of `user` no longer counts; kept until Redis takes it.
    pub(super) fn release(&mut self, user: &str, connection: uuid::Uuid) {
        if !self.cmd.conn.is_open() {
            return self.keep_release(user.into(), connection);
        }
        let key = self.shared.channels.user_connections(user);
        let entry = self.entry(connection);
        self.send(
            &[b"ZREM", &key, entry.as_bytes()],
            Expect::Release {
                user: user.into(),
                connection,
            },
        );
    }
}
