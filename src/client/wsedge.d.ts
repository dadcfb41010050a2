// Types for wsedge.js (served by every wsedge server at /client/wsedge.d.ts).

/** Whether a close invites a reconnect: never after 1002, 1003, 1007, 1009, 1010; after 1008
 * only for `token expired` with a token provider; after anything else, yes. */
export function shouldReconnect(code: number, reason: string, hasTokenProvider: boolean): boolean;

/** A JWT's `exp` in seconds, read without verifying; null if there is none. */
export function tokenExpiry(token: string): number | null;

export interface BackoffOptions {
  /** First window, ms (default 500). */
  base?: number;
  /** Largest window, ms (default 20000). */
  cap?: number;
  /** Failed attempts in a row before giving up; 0 = forever (default). */
  maxAttempts?: number;
  /** A connection that lasted this long (ms) resets the attempts (default 10000). */
  stableAfter?: number;
  /** A source of uniform numbers in [0, 1) (default Math.random; seed it in tests). */
  random?: () => number;
}

/** Delays drawn from [0, min(cap, base * 2^attempt)] ms: full jitter. */
export class Backoff {
  constructor(options?: BackoffOptions);
  attempt: number;
  window(): number;
  nextDelay(): number | null;
  connected(now?: number): void;
  disconnected(now?: number): void;
}

export interface Position {
  offset: number;
  epoch: string;
}

/** Where positions are kept, by channel (`user:<id>`, `event:<type>`, `room:<name>`). */
export interface PositionStore {
  get(channel: string): Position | null;
  set(channel: string, position: Position): void;
  delete(channel: string): void;
}

export class MemoryStore implements PositionStore {
  get(channel: string): Position | null;
  set(channel: string, position: Position): void;
  delete(channel: string): void;
}

export class LocalStorageStore implements PositionStore {
  constructor(prefix?: string);
  get(channel: string): Position | null;
  set(channel: string, position: Position): void;
  delete(channel: string): void;
}

export interface ClientOptions {
  /** A fixed token. */
  token?: string;
  /** Called for a token before connecting when there is none or it expires within
   * refreshBefore, and at that moment on an open connection (sent as token.refresh). */
  getToken?: () => Promise<string> | string;
  /** Refresh this many ms before the token expires (default 30000). */
  refreshBefore?: number;
  /** Where positions are kept (default: localStorage in browsers, else memory). */
  store?: PositionStore;
  backoff?: BackoffOptions;
  /** A WebSocket constructor (default: the global one). */
  WebSocket?: typeof WebSocket;
  /** Messages send() may queue while not connected (default 1000); past it send() throws. */
  maxQueued?: number;
  /** ping()'s default timeout, ms (default 10000). */
  pingTimeout?: number;
}

/** A server message: the protocol's envelope; history adds channel, offset, epoch. */
export interface ServerMessage {
  type: string;
  data: any;
  timestamp: string;
  id: string;
  channel?: string;
  offset?: number;
  epoch?: string;
}

export interface ClientEvents {
  connected: { data: any; reconnected: boolean };
  recovered: { channel: string; exact: boolean };
  message: ServerMessage;
  disconnected: { code: number; reason: string; retryIn: number };
  closed: { code: number; reason: string };
  error: unknown;
}

export class WsedgeClient {
  constructor(url: string, options?: ClientOptions);
  /** The last protocol ping's round trip, ms. */
  rtt: number | null;
  backoff: Backoff;
  on<K extends keyof ClientEvents>(type: K, listener: (event: ClientEvents[K]) => void): () => void;
  /** Resolves with connection.established's data once connected (retrying as the backoff
   * allows); rejects (an Error with `code` and `reason`) if the session ends for good first. */
  connect(): Promise<any>;
  subscribe(events: string[]): void;
  unsubscribe(events: string[]): void;
  join(rooms: string[]): void;
  leave(rooms: string[]): void;
  /** Resolves with the round trip in ms; rejects after `timeout` ms (default pingTimeout)
   * without a pong, or on close(). */
  ping(timeout?: number): Promise<number>;
  /** Sends now if connected; else queues (in order, at most maxQueued: then it throws)
   * until the connection is established and any RATE_LIMIT_EXCEEDED pause is over. */
  send(message: { type: string; data?: unknown }): void;
  recoveredExactly(channel: string): boolean | null;
  position(channel: string): Position | null;
  /** Closes with 1000; no reconnect; queued sends are discarded, pending pings rejected,
   * a pending connect() rejected. */
  close(): void;
}
