// Types for wxhub-client (wxhub.js): the client, its options and events, and every
// command, reply and event of wxhub protocol v1 (docs/PROTOCOL.md in the wxhub repository).

// ---- protocol: commands (client -> hub) -------------------------------------------------

/** A JSON value: what `body` may be. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Request ids are set by the client; a command passed in without one gets one. */
export type Id = number | string;

/** A stream position: the epoch and the last offset seen (docs/PROTOCOL.md, "History and recovery"). */
export interface Position { epoch: string; offset: number }

export interface JoinCommand { type: 'join'; name: string; token?: string; since?: Position; id?: Id }
/** `mid`: the sender's message id, 1-64 of A-Z a-z 0-9 _ . : - (the client sets one). */
export interface DirectCommand { type: 'direct'; to: string; body: Json; mid?: string; id?: Id }
export interface BroadcastCommand { type: 'broadcast'; body: Json; mid?: string; id?: Id }
export interface SubscribeCommand { type: 'subscribe'; group: string; presence?: boolean; since?: Position; id?: Id }
export interface UnsubscribeCommand { type: 'unsubscribe'; group: string; id?: Id }
export interface PublishCommand { type: 'publish'; group: string; body: Json; mid?: string; id?: Id }
export interface UsersCommand { type: 'users'; group?: string; limit?: number; after?: string; id?: Id }
export interface HistoryCommand { type: 'history'; symbol: string; limit?: number; before?: number; id?: Id }
export interface GroupHistoryCommand { type: 'history'; group: string; limit?: number; id?: Id }
export interface PingCommand { type: 'ping'; id?: Id }

export type Command =
  | JoinCommand
  | DirectCommand
  | BroadcastCommand
  | SubscribeCommand
  | UnsubscribeCommand
  | PublishCommand
  | UsersCommand
  | HistoryCommand
  | GroupHistoryCommand
  | PingCommand;

// ---- protocol: replies and events (hub -> client) ----------------------------------------

/** `epoch`/`offset`: the stream's position (absent only from a cluster node that cannot reach Redis); `recovered`: only when the command asked to recover. */
export interface JoinedReply { type: 'joined'; id?: Id; name: string; session: number; epoch?: string; offset?: number; recovered?: boolean }
/** `stored`: a direct message kept for a recipient that has no live session now. */
export interface AckReply { type: 'ack'; id?: Id; delivered: number; stored?: true }
/** Market groups have no stream: no epoch or offset. */
export interface SubscribedReply { type: 'subscribed'; id?: Id; group: string; members: number; epoch?: string; offset?: number; recovered?: boolean }
export interface GroupHistoryReply { type: 'history'; id?: Id; group: string; epoch: string; offset: number; messages: MessageEvent[] }
/** A recovery asked for on a rejoin (`user`) or a resubscribe (`group`) came, or could not. */
/** `epoch`/`offset` are null when the hub gave no position (a cluster node without Redis): reload. */
export interface RecoveryEvent { recovered: boolean; epoch: string | null; offset: number | null; user?: string; group?: string }
export interface UnsubscribedReply { type: 'unsubscribed'; id?: Id; group: string }
export interface UsersReply { type: 'users'; id?: Id; users: string[]; count: number; next?: string; group?: string }
export interface HistoryReply { type: 'history'; id?: Id; symbol: string; quotes: Quote[] }
export interface PongReply { type: 'pong'; id?: Id }

/** The hub's error codes (docs/PROTOCOL.md, "error"). `code` is stable; `message` is for people. */
export type HubErrorCode =
  | 'bad_request'
  | 'not_joined'
  | 'already_joined'
  | 'invalid_name'
  | 'invalid_group'
  | 'not_found'
  | 'forbidden'
  | 'unauthorized'
  | 'rate_limited'
  | 'overloaded'
  | 'too_many_groups'
  | 'too_large'
  | 'internal';

/** The client's own codes: no reply in time, the connection dropped first, the offline queue full, the client closed, a subscribe() undone by unsubscribe(). */
export type ClientErrorCode = 'timeout' | 'disconnected' | 'queue_full' | 'closed' | 'cancelled';

export interface ErrorReply { type: 'error'; id?: Id; code: HubErrorCode; message: string }

export interface MessageEvent {
  type: 'message';
  kind: 'direct' | 'broadcast' | 'group';
  from: string;
  /** On direct messages. */
  to?: string;
  /** On group messages. */
  group?: string;
  /** The sender's message id, when it gave one; the client drops a (from, mid) it has seen. */
  mid?: string;
  /** Its offset in the group's stream, or in the recipient's for a direct message. */
  offset?: number;
  body: Json;
  /** Milliseconds since the Unix epoch, stamped by the hub. */
  ts: number;
}

export interface PresenceEvent { type: 'presence'; group: string; event: 'join' | 'leave'; name: string }

export interface Quote {
  symbol: string;
  name: string;
  open: number;
  price: number;
  change: number;
  change_pct: number;
  high: number;
  low: number;
  volume: number;
  turnover: number;
  ts: number;
}

/** To the `stock` group, once per tick. */
export interface TickEvent { type: 'tick'; ts: number; quotes: Quote[] }
/** To `stock.<SYMBOL>`, once per tick (and at once on subscribe). */
export interface QuoteEvent { type: 'quote'; quote: Quote }

/** The reply each command gets when it succeeds. */
export interface ReplyOf {
  join: JoinedReply;
  direct: AckReply;
  broadcast: AckReply;
  subscribe: SubscribedReply;
  unsubscribe: UnsubscribedReply;
  publish: AckReply;
  users: UsersReply;
  history: HistoryReply | GroupHistoryReply;
  ping: PongReply;
}

/** Everything the hub sends to a typed client, by `type`. */
export interface HubEvents {
  message: MessageEvent;
  presence: PresenceEvent;
  tick: TickEvent;
  quote: QuoteEvent;
  joined: JoinedReply;
  ack: AckReply;
  subscribed: SubscribedReply;
  unsubscribed: UnsubscribedReply;
  users: UsersReply;
  history: HistoryReply | GroupHistoryReply;
  pong: PongReply;
  error: ErrorReply;
}

// ---- the client's own events -----------------------------------------------------------

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export type StateEvent =
  | { state: 'idle' }
  /** `attempt`: failed connections in a row before this one (0 for the first). */
  | { state: 'connecting'; attempt: number }
  | { state: 'open' }
  /** Down; the next attempt is in `delayMs`. `code`/`reason`: how the last connection ended. */
  | { state: 'reconnecting'; delayMs: number; attempt: number; code: number; reason: string }
  /** Stays down until connect(): 1000 when the app closed it, 4500-4999 from the hub (e.g. 4500, three bad tokens). */
  | { state: 'closed'; code: number; reason: string };

export interface CloseEvent {
  /** The WebSocket close code; 1006 when none came (network loss, heartbeat or connect timeout). */
  code: number;
  reason: string;
  /** False for an attempt that never opened. */
  wasOpen: boolean;
}

export interface GroupState {
  group: string;
  presence: boolean;
  /** Confirmed by the hub on the current connection. */
  subscribed: boolean;
  /** The last error code for it (e.g. `not_joined`, kept to be sent again once joined), or null. */
  error: string | null;
}

/** The true state of the identity, as identity() returns it and the `identity` event carries it. */
export interface Identity {
  /** The name kept and replayed on every connection; null before join() or after a refusal. */
  name: string | null;
  /** Confirmed by the hub on the current connection. False while offline or unanswered (the name is still kept). */
  joined: boolean;
  session: number | null;
  /** The code of the last refusal of a join (invalid_name, unauthorized...), or null. */
  error: string | null;
  /** In the order first subscribed, which is the order of the replay. */
  groups: GroupState[];
}

export interface ClientEvents extends HubEvents {
  state: StateEvent;
  /** A connection opened and the identity and queue were sent (their replies follow). */
  open: undefined;
  /** A connection ended, or an attempt failed (wasOpen false). */
  close: CloseEvent;
  identity: Identity;
  /** The number of commands in the offline queue, when it changes. */
  queue: number;
  /** Round trip of the heartbeat's ping, in ms. */
  rtt: number;
  /** After a rejoin or resubscribe that asked to recover: `recovered: false` means reload (groupHistory). */
  recovery: RecoveryEvent;
  /** Any other `type` the hub may send. */
  [type: string]: unknown;
}

export interface Positions { user: (Position & { name: string }) | null; groups: { [group: string]: Position } }

// ---- options, clock, transports ---------------------------------------------------------

export interface Clock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

export interface TransportHandlers {
  onOpen(): void;
  onMessage(data: string | ArrayBuffer): void;
  onClose(event: { code?: number; reason?: string }): void;
  onError(error: unknown): void;
}

export interface TransportSocket {
  send(text: string): void;
  close(code: number, reason: string): void;
}

/**
 * Opens sockets for the client. A transport may report error, close or both for one
 * failure: the client acts once per connection. open() may throw: a SyntaxError (a bad URL)
 * closes the client, anything else counts as a failed attempt.
 */
export interface Transport {
  open(url: string, handlers: TransportHandlers): TransportSocket;
  /** Optional: calls `wake` when a retry should not wait for its backoff (network back, app shown). */
  watch?(wake: () => void): void;
}

export interface ClientOptions {
  /** ws:// or wss:// URL of the hub, e.g. wss://hub.example.com/ws; or a function called before every attempt. */
  url: string | (() => string);
  /** Default: browserTransport() where a global WebSocket exists, else wxTransport(wx) in a mini-program. */
  transport?: Transport;
  /** A reply later than this rejects with `timeout` (join and subscribe keep their state). Default 10000. */
  requestTimeoutMs?: number;
  /** A handshake slower than this is a failed attempt. Default 10000. */
  connectTimeoutMs?: number;
  /** App-level heartbeat interval; a ping unanswered by the next one drops the connection. 0: off. Default 20000. */
  pingMs?: number;
  /** Ceiling of the first retry's delay (the delay is uniform in [ceiling/2, ceiling]). Default 1000. */
  reconnectBaseMs?: number;
  /** The ceiling doubles per failed attempt up to this. Default 30000. */
  reconnectMaxMs?: number;
  /** Commands kept while offline; past it request() rejects with `queue_full`. Default 50. */
  maxQueue?: number;
  /** How long verify() waits for the hub's answer before it takes the connection for dead. Default 3000. */
  verifyTimeoutMs?: number;
  /** Received (from, mid) pairs remembered to drop a message sent again. Default 1000. */
  dedupeWindow?: number;
  /** Positions saved from positions() before the app last stopped: the first join and subscribes recover from them. */
  positions?: Positions;
  /** Timers; tests inject one to drive time. Default: the global setTimeout, clearTimeout and Date.now. */
  clock?: Clock;
  /** Random numbers in [0, 1) for the jitter. Default Math.random. */
  random?: () => number;
}

/** An Error with a `code`: the hub's, or the client's own. */
export interface HubError extends Error {
  name: 'HubError';
  code: HubErrorCode | ClientErrorCode | string;
  /** The hub's `error` frame, when the hub answered. */
  reply?: ErrorReply;
  /** The command that failed, when known. */
  command?: Command;
  /** For `closed`: the close code that closed the client. */
  closeCode?: number;
}

// ---- the client ---------------------------------------------------------------------------

type Listener<E> = (event: E, command?: Command) => void;

export declare class Client {
  constructor(options: ClientOptions);

  readonly state: ConnectionState;
  readonly options: Required<Omit<ClientOptions, 'transport' | 'clock' | 'random'>> & ClientOptions;
  /** Commands waiting in the offline queue. */
  get queued(): number;

  /**
   * Listens to a client event or a hub event or reply by its `type`. For a reply, `command`
   * is the command it answers. Returns the function that removes the listener.
   */
  on<K extends keyof ClientEvents>(type: K, fn: Listener<ClientEvents[K]>): () => void;
  off<K extends keyof ClientEvents>(type: K, fn: Listener<ClientEvents[K]>): void;

  /** Opens the connection, or retries at once if a retry is waiting. */
  connect(): void;
  /** Closes on purpose (close code 1000): no reconnect until connect(). What waits rejects with `closed`; the identity is kept. */
  close(): void;
  /** Skips the rest of a backoff wait. */
  retryNow(): void;
  /**
   * Checks the connection now with a ping answered within `timeoutMs` (default
   * verifyTimeoutMs). True if it was; false if the client was not open or got no answer,
   * in which case the connection is dropped and a new one opened at once. The transports
   * call it when the app or page comes back to the foreground.
   */
  verify(timeoutMs?: number): Promise<boolean>;
  isOpen(): boolean;

  /**
   * Sends a command (queued while offline) and resolves with its reply, matched by id.
   * Rejects with a HubError: the hub's code, or `timeout` / `disconnected` (it may still
   * have been done: it is not sent again; messages are, see direct()), `queue_full`, `closed`.
   */
  request<C extends Command>(command: C): Promise<C['type'] extends keyof ReplyOf ? ReplyOf[C['type']] : unknown>;
  request(command: { type: string; [field: string]: unknown }): Promise<{ type: string; [field: string]: unknown }>;
  /** Fire and forget: no id, no promise, queued while offline. False if dropped (queue full, closed). */
  send(command: Command | { type: string; [field: string]: unknown }): boolean;

  /**
   * Messages. Each carries a `mid` (options.mid, else a fresh one). Unlike other requests a
   * message survives a lost connection: it is sent again, with the same id and mid, on the
   * next connection until the hub answers; receivers drop the repeat. Rejects with the
   * hub's error, `timeout` (no answer within requestTimeoutMs while connected),
   * `queue_full` or `closed`; to retry, pass the same `{mid: err.command.mid}`.
   */
  direct(to: string, body: Json, options?: { mid?: string }): Promise<AckReply>;
  broadcast(body: Json, options?: { mid?: string }): Promise<AckReply>;
  publish(group: string, body: Json, options?: { mid?: string }): Promise<AckReply>;
  /** A fresh message id: this client's random prefix and a counter. */
  newMid(): string;
  users(options?: { group?: string; limit?: number; after?: string }): Promise<UsersReply>;
  history(symbol: string, options?: { limit?: number; before?: number }): Promise<HistoryReply>;
  ping(): Promise<PongReply>;
  /** The newest messages a group's stream holds, oldest first: to reload after `recovery` {recovered: false}, or at start. */
  groupHistory(group: string, options?: { limit?: number }): Promise<GroupHistoryReply>;
  /** The positions to keep across an app restart; pass them back as the `positions` option. */
  positions(): Positions;

  /**
   * Joins as `name` now and on every later connection. Resolves with `joined`. Rejects with
   * the hub's refusal (the name is then forgotten), `timeout` (the name is kept and still
   * tried), or `closed`. A lost connection or a busy hub is retried, not reported.
   */
  join(name: string, options?: { token?: string }): Promise<JoinedReply>;
  /**
   * Subscribes now and on every later connection, in the order first made. Resolves with
   * `subscribed`. Rejects with a refusal (invalid_group, forbidden, not_found,
   * too_many_groups: forgotten), `not_joined` or `timeout` (kept), `closed`, `cancelled`.
   */
  subscribe(group: string, options?: { presence?: boolean }): Promise<SubscribedReply>;
  /** Leaves the group and stops replaying it. */
  unsubscribe(group: string): Promise<UnsubscribedReply>;
  /** The true state of the name and groups. */
  identity(): Identity;
}

export declare function browserTransport(WebSocketImpl?: { new (url: string): WebSocketLike }): Transport;

/** The part of the WHATWG WebSocket the browser transport uses. */
export interface WebSocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export declare function wxTransport(wx: WxLike): Transport;

/** The part of the mini-program `wx` API the wx transport uses. */
export interface WxLike {
  connectSocket(options: { url: string; fail?: (res: { errMsg: string }) => void }): SocketTaskLike | undefined;
  onAppShow?(fn: () => void): void;
  onNetworkStatusChange?(fn: (res: { isConnected: boolean; networkType?: string }) => void): void;
}

export interface SocketTaskLike {
  onOpen(fn: (res: unknown) => void): void;
  onMessage(fn: (res: { data: string | ArrayBuffer }) => void): void;
  onError(fn: (res: { errMsg?: string }) => void): void;
  onClose(fn: (res: { code?: number; reason?: string }) => void): void;
  send(options: { data: string; fail?: (res: unknown) => void }): void;
  close(options: { code?: number; reason?: string; fail?: (res: unknown) => void }): void;
}

/** Delay before retry number `attempt` (0 first): equal jitter, uniform in [c/2, c] with c = min(max, base * 2^attempt). */
export declare function backoffDelay(attempt: number, base: number, max: number, random?: () => number): number;
/** False for close codes 4500-4999 ("do not reconnect until the cause is fixed"). */
export declare function mayReconnect(code: number): boolean;
/** A hub frame as an object, or null (binary, not JSON, an array). */
export declare function parseFrame(data: unknown): { type?: string; [field: string]: unknown } | null;
export declare function hubError(code: string, message?: string, extra?: object): HubError;
/** Error codes that make the client forget a refused name or group. */
export declare const REFUSALS: { readonly [code: string]: true };
/** Error codes after which a join or subscribe is retried on the same connection. */
export declare const TRANSIENT: { readonly [code: string]: true };
export declare const DEFAULTS: {
  readonly requestTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly pingMs: number;
  readonly reconnectBaseMs: number;
  readonly reconnectMaxMs: number;
  readonly maxQueue: number;
  readonly verifyTimeoutMs: number;
  readonly dedupeWindow: number;
};

export as namespace Wxhub;
