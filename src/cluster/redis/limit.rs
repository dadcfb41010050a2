//! The per-user connection limit across the cluster: one script over a sorted set per user.
//!
//! Owns: the script and its arguments. Does not touch: the connection it runs on or what the
//! verdict does (the reactor finishes or refuses the handshake).

use std::sync::atomic::Ordering;

use super::{ADMIT_WAIT, ADMIT_WAIT_FOR, CMD, Expect, Half, HeldAdmission, Script};
use crate::cluster::{Admission, wire};
use crate::reactor::reactor_ctx::ReactorCtx;

/// A user's connection list lives this long after its last admission (a safety net: members
/// of dead nodes are dropped by the script itself).
pub(super) const USER_KEY_TTL_MS: &str = "604800000";

/// Counts a new connection against the user's limit across the cluster. KEYS[1]: the user's
/// connections (members `node|connection`, scored by connect time). ARGV: member, score,
/// limit, evict (1) or refuse (0), liveness-key prefix, node-channel prefix, eviction payload
/// head, key ttl (ms). Members on nodes whose liveness key expired no longer count. Returns 1
/// (admitted; evictions published to the nodes holding them) or 0 (refused).
pub(super) const ADMIT_SCRIPT: &str = r#"
local live = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local node = string.match(m, '^(.*)|')
  if node and redis.call('EXISTS', ARGV[5] .. node) == 1 then
    live[#live + 1] = m
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
local over = #live - tonumber(ARGV[3]) + 1
if over > 0 then
  if ARGV[4] ~= '1' then return 0 end
  for i = 1, over do
    redis.call('ZREM', KEYS[1], live[i])
    local node, conn = string.match(live[i], '^(.*)|(.*)$')
    redis.call('PUBLISH', ARGV[6] .. node, ARGV[7] .. conn)
  end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
return 1
"#;

impl Half {
    pub(super) fn admit(
        &mut self,
        r: &mut ReactorCtx<'_>,
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
                if !self.cmd.retrying && !self.cmd.conn.is_open() {
                    self.connect(r, CMD);
                }
                return;
            }
            r.admitted(id, Admission::Local);
            return;
        }
        let s = &self.shared;
        let key = s.channels.user_connections(user);
        let member = format!("{}|{}", s.node, connection);
        let score = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            .to_string();
        let limit = limit.to_string();
        let alive = s.channels.alive_prefix();
        let node_channels = s.channels.node_prefix();
        let head = wire::evict_head(&s.node);
        let evict: &[u8] = if evict { b"1" } else { b"0" };
        let args: [&[u8]; 8] = [
            member.as_bytes(),
            score.as_bytes(),
            limit.as_bytes(),
            evict,
            alive.as_bytes(),
            node_channels.as_bytes(),
            &head,
            USER_KEY_TTL_MS.as_bytes(),
        ];
        let mut cmd: Vec<&[u8]> = Vec::with_capacity(11);
        match &self.script_sha[Script::Admit as usize] {
            Some(sha) => cmd.extend([&b"EVALSHA"[..], sha]),
            None => cmd.extend([&b"EVAL"[..], ADMIT_SCRIPT.as_bytes()]),
        }
        cmd.extend([&b"1"[..], &key]);
        cmd.extend(args);
        self.cmd.conn.command(&cmd);
        self.expect.push_back(Expect::Admit(id));
    }
}
