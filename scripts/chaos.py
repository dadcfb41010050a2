#!/usr/bin/env python3
"""Fault scenarios against a real wsedge cluster under steady publish load (run by scripts/chaos.sh).

Each run starts a fresh redis-server, two wsedge nodes (a: straight to Redis; b: through a TCP
proxy in this process, which can stall or cut b's link alone), SUBS WebSocket clients per node
(each its own user, on the user's channel) and publishers sending about RATE publishes/s to those
users round-robin, alternating between the two admin APIs; every publish carries a unique `seq`.
Timeline: STEADY s of load, the fault (about FAULT s), then recovery until full service (/ready
200 on both nodes, and a broadcast probe sent through each node reached every client) or BOUND s;
load goes on TAIL s more, stops, deliveries settle (bounded), and the run is judged.

What is checked, per publish: its HTTP answer (2xx, 504 unknown, 503, other: a transport error
or any other status). A client session *counts* for a publish if it was subscribed before the
publish was sent and stayed open until the answer came. Subscribed means: `connection.established`
carried `position` (history on: Redis answered, so the channel is subscribed), otherwise from the
moment PUBSUB NUMSUB first shows the user's channel (polled every 0.1 s). A 2xx publish is
*delivered* if every session that counted for it got it, live or through a later recovery
(`recover_offset`/`recover_epoch` at reconnect); a miss is *told* if that session was closed with
1012, or the client later got a reload cue (`recovered: false`, or a live message with a new
epoch); anything else is *lost after 2xx*. Also counted: duplicates (a seq a client got twice,
replays included), 503 publishes some client got anyway (must be 0), 1012 closes of sessions that
missed nothing they should have had (needless), time from fault start to /ready 503 on the
affected node(s) (polled every 50 ms), time from fault end to full service.

*Recovered* counts the delivered ones a client got only in a later session (by recovery or a
gap fill at reconnect), not live.

Per-user limit (`--max-connections-per-user 3`, the default): LIMIT_USERS more users hold 3
connections each (2 on a, 1 on b) that never reconnect; half a second into the fault each opens
one more, on the faulted node (a, then b, for faults of Redis itself), which a node cut off from
Redis admits on its own count. *Over the limit after recovery*: users whose open connections,
summed over both nodes (`GET /ws/connections?user_id=`), still exceed 3 once 2 x `--node-ttl`
(20 s) has passed after full service, polled every 0.2 s; the table gives the count and when the
last excess went.

Not checked: offset order, rooms/events (the load is on user channels only; broadcasts serve as
probes and carry no history), message contents beyond seq,
latency. NUMSUB can still show a channel that a stalled node has in effect lost, so history-off
sessions opened during a stall may count early. Clients reconnect after 0.05-0.3 s, not with the
client library's backoff.
"""
import argparse, base64, hashlib, hmac, http.client, json, os, random, signal, socket
import subprocess, sys, threading, time
from collections import Counter, defaultdict

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

SECRET, PREFIX = "chaos-secret", "chaos"
RATE = float(os.environ.get("CHAOS_RATE", 200))
SUBS = int(os.environ.get("CHAOS_SUBS", 100))
STEADY = float(os.environ.get("CHAOS_STEADY", 5))
FAULT = float(os.environ.get("CHAOS_FAULT", 5))
BOUND, TAIL, PUBLISHERS = 25.0, 2.0, 24
LIMIT_USERS, LIMIT, NODE_TTL = 10, 3, 10.0
now = time.monotonic


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(sub, **claims):
    head = b64(b'{"alg":"HS256","typ":"JWT"}')
    body = b64(json.dumps({"sub": sub, "exp": int(time.time()) + 3600, **claims}).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


ADMIN = token("chaos-admin", role="admin")


def utc():  # wall-clock time as in the nodes' logs
    t = time.time()
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


def wait_for(what, cond, timeout, step=0.05):
    deadline = now() + timeout
    while not cond():
        if now() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


class Procs:
    """Children of this run; their PIDs also go to WORK/pids for chaos.sh's trap."""

    def __init__(self, work):
        self.pids, self.live = os.path.join(work, "pids"), []

    def spawn(self, args, logfile):
        with open(logfile, "ab") as f:
            p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
        with open(self.pids, "a") as f:
            f.write(f"{p.pid}\n")
        self.live.append(p)
        return p

    def stop(self, p):  # TERM, KILL after 5 s; a frozen Redis is thawed first
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Redis:
    def __init__(self, procs, port, work, logfile, aof, password):
        self.procs, self.port, self.dir, self.logfile = procs, port, work, logfile
        self.aof, self.password, self.proc = aof, password, None

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--daemonize", "no", "--appendonly", "yes" if self.aof else "no"]
        args += ["--appendfsync", "always"] if self.aof else []
        args += ["--requirepass", self.password] if self.password else []
        self.proc = self.procs.spawn(args, self.logfile)
        wait_for("redis-server to answer PING", lambda: self.cli("PING") == "PONG", 10)

    def cli(self, *args):
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        try:
            return subprocess.run(["redis-cli", "-p", str(self.port), *auth, *args], capture_output=True,
                                  text=True, timeout=1).stdout.strip()
        except subprocess.TimeoutExpired:
            return ""

    def kill(self):
        self.proc.kill()
        self.proc.wait(5)


class Proxy:
    """TCP proxy for node b's link: pass, stall (hold every byte and EOF, keep sockets open;
    new connections are accepted but not connected through), or cut (close every connection)."""

    def __init__(self, port, upstream):
        self.upstream, self.flow, self.closed = upstream, threading.Event(), False
        self.flow.set()
        self.lock, self.socks = threading.Lock(), set()
        self.ls = socket.create_server(("127.0.0.1", port))
        self.ls.settimeout(0.2)
        threading.Thread(target=self.accept, daemon=True).start()

    def hold(self):  # while stalled; False once the proxy is closed
        while not self.flow.wait(0.1):
            if self.closed:
                return False
        return not self.closed

    def accept(self):
        while not self.closed:
            try:
                c, _ = self.ls.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self.pair, args=(c,), daemon=True).start()

    def pair(self, c):
        with self.lock:
            self.socks.add(c)
        if not self.hold():
            return self.drop(c)
        try:
            u = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
            u.settimeout(None)
        except OSError:
            return self.drop(c)
        with self.lock:
            self.socks.add(u)
        threading.Thread(target=self.pump, args=(u, c), daemon=True).start()
        self.pump(c, u)

    def pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not self.hold() or not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        self.drop(src, dst)

    def drop(self, *socks):
        for s in socks:
            with self.lock:
                self.socks.discard(s)
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def cut(self):
        with self.lock:
            socks = list(self.socks)
        self.drop(*socks)

    def close(self):
        self.closed = True
        self.flow.set()
        self.cut()
        self.ls.close()


class Admin:
    """One keep-alive HTTP connection to an admin API; (status or None, JSON or text)."""

    def __init__(self, port, timeout=5):
        self.port, self.timeout, self.c = port, timeout, None

    def req(self, method, path, body=None, auth=True):
        try:
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            headers = {"Authorization": f"Bearer {ADMIN}"} if auth else {}
            if body is not None:
                headers["Content-Type"] = "application/json"
            self.c.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            r = self.c.getresponse()
            raw = r.read()
            if (r.getheader("Connection") or "").lower() == "close":
                self.c.close()
                self.c = None
            try:
                return r.status, json.loads(raw)
            except ValueError:
                return r.status, raw.decode(errors="replace")
        except (OSError, http.client.HTTPException) as e:
            if self.c:
                self.c.close()
            self.c = None
            return None, repr(e)


class Session:
    __slots__ = ("est", "sub", "closed", "code", "reason", "got")

    def __init__(self):
        self.est = now()
        self.sub = self.closed = self.code = None
        self.reason, self.got = "", set()


class Client(threading.Thread):
    """One user on one node: a session at a time, reconnecting (with recovery when history is on)."""

    def __init__(self, run, user, port):
        super().__init__(daemon=True)
        self.run_, self.user, self.port = run, user, port
        self.sessions, self.got, self.probes, self.cues = [], Counter(), set(), []
        self.last = self.cur = None
        self.errors, self.recoveries = Counter(), Counter()

    def url(self):
        q = f"token={token(self.user)}"
        if self.run_.history and self.last:
            q += f"&recover_offset={self.last[0]}&recover_epoch={self.last[1]}"
        return f"ws://127.0.0.1:{self.port}/ws?{q}"

    def run(self):
        stop = self.run_.stop_clients
        while not stop.is_set():
            try:
                self.session(stop)
            except Exception as e:  # refused, timed out, reset: try again
                self.errors[type(e).__name__] += 1
            self.cur = None
            if not stop.is_set():
                time.sleep(random.uniform(0.05, 0.3))  # reconnect backoff

    def session(self, stop):
        with connect(self.url(), open_timeout=5, close_timeout=1, ping_interval=None, max_size=None,
                     compression=None) as ws:
            hello = json.loads(ws.recv(timeout=10))
            if hello.get("type") != "connection.established":
                raise RuntimeError(f"first message {hello.get('type')}")
            s, d = Session(), hello["data"]
            pos, rec = d.get("position"), d.get("recovery")
            if pos is not None:
                s.sub = s.est
            if self.run_.history:
                if rec is not None:
                    self.recoveries["recovered" if rec["recovered"] else "not recovered"] += 1
                    if not rec["recovered"]:
                        self.cues.append(now())
                elif self.last is not None:
                    self.recoveries["unanswered" if pos is None else "not in answer"] += 1
                if pos is not None and not (rec and rec["recovered"]):
                    self.last = (pos["offset"], pos["epoch"])
            self.sessions.append(s)
            self.cur = s
            try:
                while not stop.is_set():
                    try:
                        raw = ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    self.handle(s, json.loads(raw))
            except ConnectionClosed as e:
                s.code, s.reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd else (1006, "")
            finally:  # a session ended by anything but the end of the run is closed
                if not stop.is_set():
                    s.closed, s.code = now(), s.code or "error"

    def handle(self, s, m):
        if m.get("type") == "probe":
            self.probes.add(m["data"]["probe"])
        elif m.get("type") == "chaos":
            seq = m["data"]["seq"]
            self.got[seq] += 1
            s.got.add(seq)
            if "offset" in m:
                if self.last and m["epoch"] != self.last[1]:
                    self.cues.append(now())  # a new epoch: history was lost, reload
                self.last = (m["offset"], m["epoch"])


class Holder(threading.Thread):
    """One connection of a limit user, held until the server closes it or the run ends."""

    def __init__(self, run, user, port):
        super().__init__(daemon=True)
        self.run_, self.user, self.port, self.opened, self.code = run, user, port, False, None

    def run(self):
        try:
            with connect(f"ws://127.0.0.1:{self.port}/ws?token={token(self.user)}", open_timeout=10,
                         close_timeout=1, ping_interval=None, compression=None) as ws:
                hello = json.loads(ws.recv(timeout=10))
                self.opened = hello.get("type") == "connection.established"
                while not self.run_.stop_clients.is_set():
                    try:
                        ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
        except ConnectionClosed as e:
            self.code = e.rcvd.code if e.rcvd else 1006
        except Exception as e:  # refused at the handshake
            self.code = type(e).__name__


class Pub:
    __slots__ = ("seq", "user", "node", "ts", "ta", "status", "cls")


def classify(status, body):
    unknown = isinstance(body, dict) and body.get("outcome") == "unknown"
    return ("2xx" if status and 200 <= status < 300 else "504" if status == 504 and unknown
            else "503" if status == 503 else "other")


# Faults: (start, end), each taking the run; the end returns once the fault is over.
def wrong_password(r):
    r.redis.cli("ACL", "SETUSER", "default", "<bpass")  # b's password no longer works...
    r.proxy.cut()  # ...and b has to log in again


def right_password(r):
    r.redis.cli("ACL", "SETUSER", "default", ">bpass")


SCENARIOS = [  # key, title, affected nodes, history modes, start, end, fault length, options
    ("frozen", "Redis frozen (SIGSTOP, SIGCONT 5 s later)", "ab", (True, False),
     lambda r: os.kill(r.redis.proc.pid, signal.SIGSTOP), lambda r: os.kill(r.redis.proc.pid, signal.SIGCONT),
     FAULT, {}),
    ("restart-empty", "Redis killed (SIGKILL), restarted empty on the same port 5 s later", "ab",
     (True, False), lambda r: r.redis.kill(), lambda r: r.redis.start(), FAULT, {}),
    ("restart-aof", "Redis killed (SIGKILL), restarted with its AOF (appendfsync always) 5 s later", "ab",
     (True,), lambda r: r.redis.kill(), lambda r: r.redis.start(), FAULT, {"aof": True}),
    ("b-stall", "node b's link stalled 5 s (proxy holds every byte, connections stay open)", "b",
     (True, False), lambda r: r.proxy.flow.clear(), lambda r: r.proxy.flow.set(), FAULT, {}),
    ("b-cut", "node b's link cut once (proxy closes its connections)", "b", (True, False),
     lambda r: r.proxy.cut(), lambda r: None, 0, {}),
    ("b-password", "node b's password refused 5 s (ACL drops it, link cut; ACL gives it back)", "b",
     (True, False), wrong_password, right_password, FAULT, {"auth": True}),
]


class Run:
    def __init__(self, args, procs, index, scenario, history):
        self.key, self.title, self.affected, _, self.start_fault, self.end_fault, self.fault_len, opts = scenario
        self.args, self.procs, self.history = args, procs, history
        self.name = f"{self.key}-{'on' if history else 'off'}"
        base = args.base_port + 10 * index
        self.rport, self.pport = base, base + 1
        self.ports = {"a": (base + 2, base + 3), "b": (base + 4, base + 5)}
        self.aof, self.auth = opts.get("aof", False), opts.get("auth", False)
        self.stop_clients, self.stop_pub, self.stop_mon = threading.Event(), threading.Event(), threading.Event()
        self.pubs, self.ready, self.latest, self.lock, self.next_seq = [], [], {}, threading.Lock(), 1
        self.clients, self.nodes, self.proxy, self.redis, self.metrics, self.log_counts = [], {}, None, None, {}, {}
        self.holders, self.limit, self.base_holders = [], (0, None), 0
        self.full = self.t_fault = self.t_end = None

    def logfile(self, what):
        return os.path.join(self.args.logs, f"{self.name}-{what}.log")

    # --- setup -------------------------------------------------------------------------------
    def setup(self):
        rdir = os.path.join(self.args.work, self.name)
        os.makedirs(rdir, exist_ok=True)
        self.redis = Redis(self.procs, self.rport, rdir, self.logfile("redis"), self.aof,
                           "right" if self.auth else None)
        self.redis.start()
        if self.auth:
            self.redis.cli("ACL", "SETUSER", "default", ">bpass")  # b's own password, beside "right"
        self.proxy = Proxy(self.pport, self.rport)
        for n, pw, rp in (("a", "right", self.rport), ("b", "bpass", self.pport)):
            url = f"redis://{':' + pw + '@' if self.auth else ''}127.0.0.1:{rp}"
            port, aport = self.ports[n]
            cmd = [self.args.bin, "serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{aport}",
                   "--workers", "2", "--jwt-secret", SECRET, "--redis", url, "--redis-prefix", PREFIX,
                   "--node-id", n, "--redis-timeout", "1", "--max-connections-per-ip", "0",
                   "--rate-limit-messages", "0", "--log-level", os.environ.get("CHAOS_LOG_LEVEL", "warn"), "--drain-window", "0.2",
                   "--shutdown-timeout", "3"]
            self.nodes[n] = self.procs.spawn(cmd + ([] if self.history else ["--history-size", "0"]), self.logfile(n))
        admins = {n: Admin(self.ports[n][1], 1) for n in "ab"}
        wait_for("both nodes ready", lambda: all(admins[n].req("GET", "/ready", auth=False)[0] == 200
                                                 for n in "ab"), 20, 0.1)
        self.spawn(self.monitor)
        self.spawn(self.poll_subscriptions)
        for i in range(2 * SUBS):
            c = Client(self, f"u{i:03d}", self.ports["a" if i < SUBS else "b"][0])
            c.start()
            self.clients.append(c)
        wait_for("every client subscribed", lambda: all(c.cur and c.cur.sub for c in self.clients), 30, 0.1)
        for i in range(LIMIT_USERS):
            for n in "aab":
                h = Holder(self, f"L{i:02d}", self.ports[n][0])
                h.start()
                self.holders.append(h)
        self.base_holders = len(self.holders)
        wait_for("every limit user at the limit", lambda: all(h.opened for h in self.holders), 30, 0.1)

    def extra_connections(self):  # one more per limit user, on the faulted node, during the fault
        time.sleep(0.5)  # into the fault (a duration, not a synchronization)
        for i in range(LIMIT_USERS):
            n = self.affected[i % len(self.affected)]
            h = Holder(self, f"L{i:02d}", self.ports[n][0])
            h.start()
            self.holders.append(h)

    def over_limit(self):
        """(users over the limit, seconds after full service the last excess went or None)."""
        admins = {n: Admin(self.ports[n][1], 2) for n in "ab"}
        start, deadline, last = now(), now() + 2 * NODE_TTL, None
        while True:
            over = 0
            for i in range(LIMIT_USERS):
                total = 0
                for a in admins.values():
                    st, body = a.req("GET", f"/ws/connections?user_id=L{i:02d}&limit=1000")
                    total += len(body.get("connections", [])) if st == 200 and isinstance(body, dict) else 0
                over += total > LIMIT
            if over == 0:
                return 0, last if last is not None else 0.0
            last = now() - start
            if now() > deadline:
                return over, None
            time.sleep(0.2)

    def spawn(self, fn):
        (t := threading.Thread(target=fn, daemon=True)).start()
        return t

    def monitor(self):  # /ready of both nodes every 50 ms
        admins = {n: Admin(self.ports[n][1], 1) for n in "ab"}
        while not self.stop_mon.is_set():
            for n, a in admins.items():
                st, body = a.req("GET", "/ready", auth=False)
                why = (body.get("cluster") or body.get("status")) if isinstance(body, dict) else str(body)[:40]
                self.ready.append((now(), n, st, why))
                self.latest[n] = st
            time.sleep(0.05)

    def poll_subscriptions(self):  # sessions without `position`: subscribed once NUMSUB says so
        while not self.stop_clients.is_set():
            pending = [(c, c.cur) for c in self.clients if c.cur and c.cur.sub is None]
            if pending:
                out = self.redis.cli("PUBSUB", "NUMSUB", *(f"{PREFIX}:user:{c.user}" for c, _ in pending))
                t, vals = now(), out.split("\n")
                subscribed = {ch for ch, n in zip(vals[0::2], vals[1::2]) if n.strip() not in ("", "0")}
                for c, s in pending:
                    if f"{PREFIX}:user:{c.user}" in subscribed and s.closed is None:
                        s.sub = t
            time.sleep(0.1)

    def publisher(self):
        admins = {n: Admin(self.ports[n][1]) for n in "ab"}
        users = 2 * SUBS
        while not self.stop_pub.is_set():
            with self.lock:
                n, self.next_seq = self.next_seq, self.next_seq + 1
            delay = self.t_pub0 + n / RATE - now()
            if delay > 0:
                time.sleep(delay)  # pacing: this publish's slot
            if self.stop_pub.is_set():
                break
            p = Pub()
            p.seq, p.user, p.node = n, f"u{n % users:03d}", "ab"[(n + n // users) % 2]
            p.ts = now()
            p.status, body = admins[p.node].req("POST", f"/ws/users/{p.user}/messages",
                                                {"type": "chaos", "data": {"seq": n}})
            p.ta, p.cls = now(), classify(p.status, body)
            self.pubs.append(p)

    # --- the run -----------------------------------------------------------------------------
    def execute(self):
        self.t_pub0 = now()
        pubs = [self.spawn(self.publisher) for _ in range(PUBLISHERS)]
        time.sleep(STEADY)  # steady load before the fault (a duration, not a synchronization)
        self.t_fault, self.wall = now(), [utc()]
        self.start_fault(self)
        extra = self.spawn(self.extra_connections)
        time.sleep(self.fault_len)  # the fault's length
        self.end_fault(self)
        self.t_end = now()
        self.wall.append(utc())
        self.full = self.wait_full_service()
        extra.join(15)
        self.limit = self.over_limit()
        time.sleep(TAIL)  # load after recovery
        self.stop_pub.set()
        for t in pubs:
            t.join(10)
        self.settle()
        self.stop_clients.set()
        for c in self.clients:
            c.join(3)
        self.stop_mon.set()
        for n in "ab":
            text = Admin(self.ports[n][1], 2).req("GET", "/metrics", auth=False)[1]
            for line in str(text).splitlines():
                k, _, v = line.partition(" ")
                if k.startswith("wsedge_cluster_") and k.endswith(("gap_fills_total", "gaps_lost_total",
                                                                     "missed_resets_total", "timeouts_total")):
                    self.metrics[f"{n}:{k[len('wsedge_cluster_'):]}"] = v

    def wait_full_service(self):
        """Seconds from the fault's end until /ready is 200 on both nodes and a probe broadcast
        through each node reached every client; None past BOUND."""
        admins, k, deadline = {n: Admin(self.ports[n][1], 2) for n in "ab"}, 0, self.t_end + BOUND
        while now() < deadline:
            if all(self.latest.get(n) == 200 for n in "ab"):
                k += 1
                ids = {f"{k}{n}" for n in "ab"}
                answers = [admins[n].req("POST", "/ws/broadcast", {"type": "probe", "data": {"probe": f"{k}{n}"}})
                           for n in "ab"]
                if all(st == 200 for st, _ in answers):
                    try:
                        wait_for("probes", lambda: all(ids <= c.probes for c in self.clients),
                                 max(0.1, min(2.0, deadline - now())), 0.02)
                        return now() - self.t_end
                    except TimeoutError:
                        continue
            time.sleep(0.05)
        return None

    def settle(self):  # until every open session has what it counts for, 5 s at most
        by_user = defaultdict(list)
        for p in self.pubs:
            if p.cls == "2xx":
                by_user[p.user].append(p)

        def done():
            return not any((s := c.cur) and s.sub and any(p.seq not in c.got and s.sub < p.ts for p in by_user[c.user])
                           for c in self.clients)
        try:
            wait_for("deliveries to settle", done, 5, 0.1)
        except TimeoutError:
            pass

    # --- judging -----------------------------------------------------------------------------
    def judge(self):
        pubs, clients, by_user = self.pubs, {c.user: c for c in self.clients}, defaultdict(list)
        for p in pubs:
            by_user[p.user].append(p)
        got_any = set().union(*(c.got for c in self.clients))
        row = dict(delivered=0, recovered=0, lost=0, told_1012=0, told_reload=0, uncounted=0,
                   classes=Counter(p.cls for p in pubs), lost_examples=[])
        for p in (p for p in pubs if p.cls == "2xx"):
            c = clients[p.user]
            # The session that counts for p, if any (a client's sessions never overlap).
            s = next((s for s in c.sessions if s.sub is not None and s.sub < p.ts
                      and (s.closed is None or s.closed > p.ta)), None)
            v = ("uncounted" if s is None else "delivered" if p.seq in c.got else "told_1012" if s.code == 1012
                 else "told_reload" if any(t > p.ts for t in c.cues) else "lost")
            row[v] += 1
            if v == "delivered" and p.seq not in s.got:
                row["recovered"] += 1
            if v == "lost" and len(row["lost_examples"]) < 2:
                row["lost_examples"].append(
                    f"seq {p.seq} to {p.user} via {p.node}, sent {p.ts - self.t_fault:+.2f} s from the fault, "
                    f"answered {p.ta - self.t_fault:+.2f} s, session closed "
                    + (f"{s.closed - self.t_fault:+.2f} s ({s.code})" if s.closed else "never"))
        row["dups"] = sum(n - 1 for c in self.clients for n in c.got.values() if n > 1)
        row["503_got"] = sum(1 for p in pubs if p.cls == "503" and p.seq in got_any)
        row["504_got"] = sum(1 for p in pubs if p.cls == "504" and p.seq in got_any)
        closes, c1012, needless = Counter(), 0, 0
        for c in self.clients:
            for s in c.sessions:
                if s.closed is None:
                    continue
                closes[s.code] += 1
                if s.code == 1012:
                    c1012 += 1
                    start = s.sub or s.est
                    if not any(start < p.ts < s.closed and p.seq not in s.got
                               and (p.cls in ("2xx", "504") or p.seq in got_any) for p in by_user[c.user]):
                        needless += 1
        row.update(closes=closes, c1012=c1012, needless=needless)
        row["detect"] = {n: next(((t - self.t_fault, why) for t, m, st, why in self.ready
                                  if m == n and t >= self.t_fault and st != 200), None) for n in self.affected}
        row["others_down"] = {n: sum(1 for t, m, st, _ in self.ready if m == n and st != 200 and t >= self.t_fault)
                              for n in "ab" if n not in self.affected}
        row["recoveries"] = sum((c.recoveries for c in self.clients), Counter())
        row["conn_errors"] = sum((c.errors for c in self.clients), Counter())
        row["cues"] = sum(len(c.cues) for c in self.clients)
        extras = self.holders[self.base_holders:]
        row["limit_note"] = (f"limit users: {sum(h.opened for h in extras)} of {len(extras)} extra connections "
                             f"admitted during the fault; closes of held ones "
                             + (", ".join(f"{c}×{n}" for c, n in sorted(Counter(str(h.code) for h in self.holders
                                                                                 if h.code).items())) or "none"))
        return row

    def teardown(self):
        self.stop_pub.set()
        self.stop_clients.set()
        self.stop_mon.set()
        for n in self.nodes.values():
            self.procs.stop(n)
        if self.proxy:
            self.proxy.close()
        if self.redis and self.redis.proc:
            self.procs.stop(self.redis.proc)
        for n in self.nodes:
            with open(self.logfile(n), "rb") as f:
                self.log_counts[n] = Counter(w for line in f for w in (b"WARN", b"ERROR") if w in line)


def render(title, rows):
    out = [f"### {title}", "", "| history | 2xx / 504 / 503 / other | delivered (recovered) | lost after 2xx "
           "| duplicates | 1012 closes (needless) | users over the limit after recovery | time to detect "
           "| time to full service | notes |", "|---" * 10 + "|"]
    for hist, r in rows:
        if "error" in r:
            out.append(f"| {hist} | | | | | | | | | **run failed**: {r['error']} |")
            continue
        k, items = r["classes"], lambda d: ", ".join(f"{a} {b}" for a, b in sorted(d.items()))
        det = ", ".join(f"{n} {d[0]:.1f} s ({d[1]})" if d else f"{n} no 503 seen" for n, d in r["detect"].items())
        metrics = {m: v for m, v in r["metrics"].items() if v not in ("0", "")}
        logs = "; ".join(f"{n} {items({w.decode(): c for w, c in cnt.items()})}" for n, cnt in r["logs"].items() if cnt)
        notes = [r["503_got"] and f"**{r['503_got']} answered 503 yet delivered**",
                 r["lost_examples"] and "lost e.g. " + "; ".join(r["lost_examples"][:2]),
                 f"504s that reached their user {r['504_got']}",
                 (r["told_1012"] or r["told_reload"])
                 and f"missed but told: {r['told_1012']} by 1012, {r['told_reload']} by a reload cue",
                 r["uncounted"] and f"2xx with no session counting {r['uncounted']}",
                 r["closes"] and "closes " + ", ".join(f"{c}×{n}" for c, n in sorted(r["closes"].items())),
                 r["recoveries"] and "recoveries: " + items(r["recoveries"]),
                 r["cues"] and f"reload cues {r['cues']}", r["limit_note"],
                 *(f"{n} /ready " + (f"non-200 in {c} polls" if c else "200 throughout")
                   for n, c in r["others_down"].items()),
                 r["conn_errors"] and "connect errors: " + items(r["conn_errors"]),
                 metrics and "metrics: " + items(metrics), logs and "log lines: " + logs]
        full = f"{r['full']:.1f} s" if r["full"] is not None else f"> {BOUND:g} s"
        over, went = r["limit"]
        limit = f"**{over}**" + (f" (excess gone {went:.1f} s after full service)" if went else "")
        out.append(f"| {hist} | {k['2xx']} / {k['504']} / {k['503']} / {k['other']} | {r['delivered']} "
                   f"({r['recovered']}) | **{r['lost']}** | {r['dups']} | {r['c1012']} ({r['needless']}) | {limit} "
                   f"| {det} | {full} "
                   f"| {'; '.join(n for n in notes if n)} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for a in ("--bin", "--work", "--out", "--logs"):
        ap.add_argument(a, required=True)
    ap.add_argument("--base-port", type=int, default=int(os.environ.get("CHAOS_PORT", 19400)))
    ap.add_argument("only", nargs="*", help="scenario keys to run (default: all)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(args.logs, exist_ok=True)
    procs, index = Procs(args.work), 0
    head = (f"## wsedge chaos, {time.strftime('%Y-%m-%d %H:%M')}\n\n"
            f"Two nodes (`--workers 2 --redis-timeout 1`; b's Redis link through a proxy), {SUBS} clients per node "
            f"(one user each), {RATE:g} publishes/s to those users through both admin APIs; {STEADY:g} s steady, the "
            f"fault, recovery (bound {BOUND:g} s), {TAIL:g} s more. Detect: fault start to /ready 503 on the "
            f"affected node(s). Full service: fault end to /ready 200 on both and a probe broadcast through each "
            f"node at every client. Lost after 2xx: goal 0. Needless 1012: goal 0 with history on. "
            f"Node logs: {args.logs}\n")
    print(head, flush=True)
    with open(args.out, "w") as f:
        f.write(head + "\n")
    try:
        for scenario in SCENARIOS:
            if args.only and scenario[0] not in args.only:
                continue
            rows = []
            for history in scenario[3]:
                run = Run(args, procs, index, scenario, history)
                index += 1
                t0 = now()
                print(f">> {run.name}: {run.title}", file=sys.stderr, flush=True)
                try:
                    run.setup()
                    run.execute()
                    row = run.judge()
                    row.update(full=run.full, metrics=run.metrics, limit=run.limit)
                except Exception as e:
                    row = {"error": f"{type(e).__name__}: {e}"}
                finally:
                    run.teardown()
                if "error" not in row:
                    row["logs"] = run.log_counts
                rows.append(("on" if history else "off", row))
                wall = " to ".join(getattr(run, "wall", []))
                print(f"   done in {now() - t0:.0f} s; fault {wall} UTC (node logs' time)", file=sys.stderr, flush=True)
            table = render(f"{scenario[0]}: {scenario[1]}", rows)
            print(table, flush=True)
            with open(args.out, "a") as f:
                f.write(table + "\n")
    finally:
        for p in reversed(procs.live):
            procs.stop(p)


if __name__ == "__main__":
    main()
