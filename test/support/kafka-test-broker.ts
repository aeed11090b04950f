import { randomUUID } from 'node:crypto';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { gunzipSync } from 'node:zlib';

/**
 * An in-memory, single-node Kafka broker for integration tests. It speaks the Kafka wire
 * protocol over TCP, so the real kafkajs 2.2.4 client (idempotent producer, consumer
 * group, admin) talks to it unchanged. No Kafka can run on these machines (ARCHITECTURE.md,
 * "Testing on these machines"); wherever a real broker exists, prefer it.
 *
 * Served: node 0 on 127.0.0.1 is the only broker, the controller, every partition's leader
 * and every group's coordinator. kafkajs uses min(its newest version, the advertised max)
 * and ignores the advertised min, so each API is offered at exactly one old, non-flexible
 * version, the one decoded here:
 *   ApiVersions 0-2, Metadata 5, Produce 3, Fetch 4, ListOffsets 2, FindCoordinator 1,
 *   JoinGroup 2, SyncGroup 1, Heartbeat 1, LeaveGroup 1, OffsetCommit 3, OffsetFetch 3,
 *   DescribeGroups 1 (admin.setOffsets/resetOffsets check the group is empty with it),
 *   CreateTopics 2, InitProducerId 0.
 * Not served, hence not advertised (kafkajs then fails fast with "The Kafka server does not
 * support the requested API version"): transactions (AddPartitionsToTxn, EndTxn,
 * TxnOffsetCommit, ...), ListGroups, DeleteGroups, DeleteTopics, DeleteRecords, configs,
 * ACLs, SASL, TLS. A request the broker cannot decode closes its connection, as Kafka does,
 * after a process warning that names it. Not modelled either: replication, retention and
 * compaction, quotas, topic configs (CreateTopics ignores them), LogAppendTime, static
 * membership, Kafka's 3 s initial rebalance delay and its session timeout bounds.
 *
 * Log: per partition, the producer's record batches are kept as opaque bytes; only the
 * base offset is rewritten (the CRC, which is checked, starts after it). Produce v3 must
 * carry exactly one magic-2 batch per partition. acks 1 and -1 are the same here: an
 * append is durable (in memory) before the response. Fetch returns whole batches from the
 * one holding the fetch offset (kafkajs drops the records before it, as with Kafka).
 * ListOffsets by timestamp has batch granularity: the base offset of the first batch whose
 * max timestamp is at or after it.
 *
 * Idempotence: per partition and producer id the broker keeps the epoch, the last sequence
 * and the last 5 batches, as Kafka does. A batch whose first and last sequence equal one of
 * those is a retry of a batch already written: it is not appended again and is answered
 * with that batch's base offset. Any other batch must continue the sequence (0 for a new
 * producer id or epoch), else OUT_OF_ORDER_SEQUENCE_NUMBER (45); an older epoch gets
 * INVALID_PRODUCER_EPOCH (47). Like Kafka, this looks only at sequence numbers, not content.
 *
 * Groups (protocol type "consumer", kafkajs's assigners): Empty -> PreparingRebalance ->
 * CompletingRebalance -> Stable. Any JoinGroup (new or known member) starts a rebalance;
 * the JoinGroup responses wait until every known member has sent JoinGroup, or until the
 * largest rebalanceTimeout of the members has passed, when those that did not rejoin are
 * removed. Then the generation goes up, the leader (kept if it rejoined) gets the member
 * list with the chosen protocol's metadata, the others an empty list; SyncGroup waits for
 * the leader's assignments and hands each member its own. During a rebalance Heartbeat
 * answers REBALANCE_IN_PROGRESS (27), SyncGroup too before the join completes, and
 * OffsetCommit too while waiting for the leader's sync; OffsetCommit with the previous
 * generation still succeeds while members rejoin (kafkajs commits then). Unknown members
 * get UNKNOWN_MEMBER_ID (25), stale generations ILLEGAL_GENERATION (22). A member that
 * has sent no Heartbeat, JoinGroup, SyncGroup or OffsetCommit for its sessionTimeout is
 * removed (checked every 100 ms), which rebalances the rest. The first member of an empty
 * group is answered at once (no initial delay).
 *
 * Fetch: answered at once if any partition has an error or minBytes are available;
 * otherwise it is parked and woken by appends to one of its partitions (no polling), or
 * answered empty when maxWaitTime ends. Each connection's requests are handled one at a
 * time, in order, as Kafka does, so a parked Fetch or JoinGroup holds back that
 * connection (kafkajs sends Fetch on a connection of its own).
 *
 * Outages: stop() closes the listener and every connection (parked requests are dropped
 * unanswered) and keeps everything else: logs, producer state, groups and their members,
 * committed offsets. restart() listens on the same port and gives every member a fresh
 * session, as a coordinator loading a group does, so a short outage evicts no one.
 *
 * kafkajs facts that matter in tests:
 * - A consumer heartbeats only between fetches, so it notices a rebalance up to
 *   maxWaitTimeInMs (default 5000) + heartbeatInterval (default 3000) late. Keep both
 *   small (e.g. 100-200 ms). sessionTimeout (default 30000) is how long a dead member
 *   blocks the group; rebalanceTimeout (default 60000) only matters for a member that
 *   keeps heartbeating but never rejoins. heartbeatInterval must be below sessionTimeout.
 * - consumer.disconnect() waits for the fetch in flight, so up to maxWaitTimeInMs.
 * - Retries: the default retry (300 ms initial, 5 retries) gives a producer send roughly
 *   10 s of outage; a consumer that exhausts its retries crashes and, for retriable
 *   errors, restarts itself (restartOnFailure). On a failed produce, kafkajs rolls the
 *   sequence numbers back and resends the same sequences, which is what makes the retry
 *   of a batch that was in fact written a harmless duplicate here.
 * - A kafkajs producer or consumer with allowAutoTopicCreation false needs the topic to
 *   exist: create it with the `topics` option, createTopic() or admin.createTopics().
 */

export interface KafkaTestBrokerOptions {
  /** Topics created before the broker listens. */
  topics?: Array<{ name: string; partitions: number }>;
  /** Create unknown topics that a Metadata request names and allows to be created (Kafka's auto.create.topics.enable). Default true. */
  autoCreateTopics?: boolean;
  /** Partitions of auto-created topics, and of CreateTopics asking for the default (-1). Default 1. */
  defaultPartitions?: number;
}

export interface BrokerRecord {
  offset: bigint;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, Buffer>;
}

export interface KafkaTestBroker {
  /** `['127.0.0.1:PORT']`, for `new Kafka({ brokers })`. */
  brokers: string[];
  port: number;
  /** Closes the listener and every connection, like a crash; the data stays. */
  stop(): Promise<void>;
  /** Listens again on the same port, with the data kept. */
  restart(): Promise<void>;
  /** Creates a topic; a no-op if it exists with that many partitions, an error if with another count. */
  createTopic(name: string, partitions: number): void;
  /** Grows a topic to `partitions` (Kafka's CreatePartitions, as an operator adds partitions); clients see it at their next metadata read. */
  addPartitions(name: string, partitions: number): void;
  /** The partition's records, decoded (uncompressed or gzip batches), for assertions. */
  records(topic: string, partition: number): BrokerRecord[];
  /** The group's committed offsets by `topic:partition`. */
  committedOffsets(groupId: string): Map<string, bigint>;
}

export async function startKafkaTestBroker(options: KafkaTestBrokerOptions = {}): Promise<KafkaTestBroker> {
  const broker = new Broker(options);
  await broker.listen(0);
  return {
    brokers: [`${HOST}:${broker.port}`],
    port: broker.port,
    stop: () => broker.stop(),
    restart: () => broker.restart(),
    createTopic: (name, partitions) => broker.createTopic(name, partitions),
    addPartitions: (name, partitions) => broker.addPartitions(name, partitions),
    records: (topic, partition) => broker.records(topic, partition),
    committedOffsets: (groupId) => broker.committedOffsets(groupId),
  };
}

const HOST = '127.0.0.1';
const NODE_ID = 0;
const CLUSTER_ID = 'kafka-test-broker';
const EMPTY: Buffer = Buffer.alloc(0);
const MAX_FRAME = 100 * 1024 * 1024;
/**
 * Record batch v2 header, in bytes: base offset 8 (at 0), length 4 (8), leader epoch 4 (12),
 * magic 1 (16), crc 4 (17, CRC-32C of everything from 21 on), attributes 2 (21), last offset
 * delta 4 (23), first timestamp 8 (27), max timestamp 8 (35), producer id 8 (43), producer
 * epoch 2 (51), base sequence 4 (53), record count 4 (57).
 */
const BATCH_HEADER = 61;
/** Kafka keeps this many recent batches per producer and partition to recognise retries. */
const PRODUCER_BATCHES_KEPT = 5;

const E = {
  NONE: 0,
  OFFSET_OUT_OF_RANGE: 1,
  CORRUPT_MESSAGE: 2,
  UNKNOWN_TOPIC_OR_PARTITION: 3,
  INVALID_TOPIC: 17,
  INVALID_REQUIRED_ACKS: 21,
  ILLEGAL_GENERATION: 22,
  INCONSISTENT_GROUP_PROTOCOL: 23,
  INVALID_GROUP_ID: 24,
  UNKNOWN_MEMBER_ID: 25,
  INVALID_SESSION_TIMEOUT: 26,
  REBALANCE_IN_PROGRESS: 27,
  UNSUPPORTED_VERSION: 35,
  TOPIC_ALREADY_EXISTS: 36,
  INVALID_PARTITIONS: 37,
  INVALID_REPLICATION_FACTOR: 38,
  OUT_OF_ORDER_SEQUENCE_NUMBER: 45,
  INVALID_PRODUCER_EPOCH: 47,
} as const;

const Api = {
  Produce: 0,
  Fetch: 1,
  ListOffsets: 2,
  Metadata: 3,
  OffsetCommit: 8,
  OffsetFetch: 9,
  FindCoordinator: 10,
  JoinGroup: 11,
  Heartbeat: 12,
  LeaveGroup: 13,
  SyncGroup: 14,
  DescribeGroups: 15,
  ApiVersions: 18,
  CreateTopics: 19,
  InitProducerId: 22,
} as const;

/** api key -> [min, max] version served. */
const VERSIONS = new Map<number, readonly [number, number]>([
  [Api.Produce, [3, 3]],
  [Api.Fetch, [4, 4]],
  [Api.ListOffsets, [2, 2]],
  [Api.Metadata, [5, 5]],
  [Api.OffsetCommit, [3, 3]],
  [Api.OffsetFetch, [3, 3]],
  [Api.FindCoordinator, [1, 1]],
  [Api.JoinGroup, [2, 2]],
  [Api.Heartbeat, [1, 1]],
  [Api.LeaveGroup, [1, 1]],
  [Api.SyncGroup, [1, 1]],
  [Api.DescribeGroups, [1, 1]],
  [Api.ApiVersions, [0, 2]],
  [Api.CreateTopics, [2, 2]],
  [Api.InitProducerId, [0, 0]],
]);

// ---------------------------------------------------------------------------------------
// Wire primitives (big-endian; strings int16-length, bytes and arrays int32-length, -1 = null)

class Writer {
  private readonly chunks: Buffer[] = [];
  private fixed(size: number, put: (b: Buffer) => void): this {
    const b = Buffer.allocUnsafe(size);
    put(b);
    this.chunks.push(b);
    return this;
  }
  int8(v: number) {
    return this.fixed(1, (b) => b.writeInt8(v));
  }
  int16(v: number) {
    return this.fixed(2, (b) => b.writeInt16BE(v));
  }
  int32(v: number) {
    return this.fixed(4, (b) => b.writeInt32BE(v));
  }
  int64(v: number) {
    return this.fixed(8, (b) => b.writeBigInt64BE(BigInt(v)));
  }
  bool(v: boolean) {
    return this.int8(v ? 1 : 0);
  }
  raw(b: Buffer) {
    this.chunks.push(b);
    return this;
  }
  string(s: string | null) {
    if (s === null) return this.int16(-1);
    const b = Buffer.from(s, 'utf8');
    return this.int16(b.length).raw(b);
  }
  bytes(b: Buffer | null) {
    return b === null ? this.int32(-1) : this.int32(b.length).raw(b);
  }
  array<T>(items: readonly T[], each: (w: Writer, item: T) => void) {
    this.int32(items.length);
    for (const item of items) each(this, item);
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.chunks);
  }
  /** The pieces as written, not gathered into one buffer: a fetch response's stored batches go out as they lie. */
  pieces(): Buffer[] {
    return this.chunks;
  }
}

class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}
  private take(n: number): Buffer {
    if (n < 0 || this.pos + n > this.buf.length) throw new RangeError('truncated data');
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  int8() {
    return this.take(1).readInt8(0);
  }
  int16() {
    return this.take(2).readInt16BE(0);
  }
  int32() {
    return this.take(4).readInt32BE(0);
  }
  /** Offsets and timestamps fit a double exactly (< 2^53). */
  int64() {
    return Number(this.take(8).readBigInt64BE(0));
  }
  bool() {
    return this.int8() !== 0;
  }
  nullableString() {
    const n = this.int16();
    return n < 0 ? null : this.take(n).toString('utf8');
  }
  string() {
    return this.nullableString() ?? '';
  }
  bytes() {
    const n = this.int32();
    return n < 0 ? null : this.take(n);
  }
  nullableArray<T>(each: (r: Reader) => T): T[] | null {
    const n = this.int32();
    if (n < 0) return null;
    const items: T[] = [];
    for (let i = 0; i < n; i++) items.push(each(this));
    return items;
  }
  array<T>(each: (r: Reader) => T): T[] {
    return this.nullableArray(each) ?? [];
  }
  /** Zigzag varint/varlong of the record format (used only to decode records for assertions). */
  varint(): number {
    let value = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (shift > 63n) throw new RangeError('varint too long');
      const byte = this.take(1).readUInt8(0);
      value |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) break;
    }
    return Number((value >> 1n) ^ -(value & 1n));
  }
  varBytes() {
    const n = this.varint();
    return n < 0 ? null : this.take(n);
  }
}

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[i] = c >>> 0;
  }
  return table;
})();

function crc32c(data: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of data) crc = CRC32C_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

const validTopicName = (name: string) => /^[a-zA-Z0-9._-]{1,249}$/.test(name) && name !== '.' && name !== '..';

function decodeBatch(batch: Buffer): BrokerRecord[] {
  const attributes = batch.readInt16BE(21);
  if (attributes & 0x20) return []; // control batch (transaction markers): no user records
  const base = batch.readBigInt64BE(0);
  const count = batch.readInt32BE(57);
  const codec = attributes & 0x07;
  let body = batch.subarray(BATCH_HEADER);
  if (codec === 1) body = gunzipSync(body);
  else if (codec !== 0) throw new Error(`records(): compression codec ${codec} is not decoded here (only none and gzip)`);
  const r = new Reader(body);
  const records: BrokerRecord[] = [];
  for (let i = 0; i < count; i++) {
    const record = new Reader(r.varBytes() ?? EMPTY);
    record.int8(); // attributes, unused
    record.varint(); // timestamp delta
    const offset = base + BigInt(record.varint());
    const key = record.varBytes();
    const value = record.varBytes();
    const headers: Record<string, Buffer> = {};
    const headerCount = record.varint();
    for (let h = 0; h < headerCount; h++) {
      const name = (record.varBytes() ?? EMPTY).toString('utf8');
      headers[name] = record.varBytes() ?? EMPTY;
    }
    records.push({ offset, key: key && Buffer.from(key), value: value && Buffer.from(value), headers });
  }
  return records;
}

// ---------------------------------------------------------------------------------------
// Connections

class Connection {
  open = true;
  /** As Kafka shows it in DescribeGroups. */
  readonly host: string;
  /** Run once when the connection closes: parked requests give up here. */
  readonly onClose = new Set<() => void>();
  private inbox = EMPTY;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly socket: Socket,
    private readonly dispatch: (connection: Connection, frame: Buffer) => Promise<Buffer[] | null>,
  ) {
    this.host = `/${socket.remoteAddress ?? HOST}`;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', () => this.close());
    socket.on('close', () => this.close());
  }

  private receive(chunk: Buffer) {
    this.inbox = this.inbox.length > 0 ? Buffer.concat([this.inbox, chunk]) : chunk;
    while (this.open && this.inbox.length >= 4) {
      const size = this.inbox.readInt32BE(0);
      if (size < 0 || size > MAX_FRAME) return this.fail(new Error(`bad frame size ${size}`));
      if (this.inbox.length < 4 + size) return;
      const frame = this.inbox.subarray(4, 4 + size);
      this.inbox = this.inbox.subarray(4 + size);
      // One request at a time per connection, answers in request order (Kafka mutes a
      // connection while a request is in flight).
      this.queue = this.queue
        .then(async () => {
          if (!this.open) return;
          const response = await this.dispatch(this, frame);
          if (response && this.open) {
            // One writev of the pieces, uncopied (as Kafka sends a fetch's batches from its log files).
            this.socket.cork();
            for (const piece of response) this.socket.write(piece);
            this.socket.uncork();
          }
        })
        .catch((error: unknown) => this.fail(error));
    }
  }

  private fail(error: unknown) {
    if (!this.open) return;
    process.emitWarning(`kafka-test-broker closes a connection: ${error instanceof Error ? error.message : String(error)}`);
    this.close();
  }

  close() {
    if (!this.open) return;
    this.open = false;
    this.socket.destroy();
    const callbacks = [...this.onClose];
    this.onClose.clear();
    for (const callback of callbacks) callback();
  }
}

// ---------------------------------------------------------------------------------------
// State

interface StoredBatch {
  base: number;
  last: number;
  maxTimestamp: number;
  bytes: Buffer;
}

interface ProducerState {
  epoch: number;
  lastSeq: number;
  recent: Array<{ firstSeq: number; lastSeq: number; base: number }>;
}

interface PartitionLog {
  batches: StoredBatch[];
  /** Log end offset, which is also the high watermark and the last stable offset here. */
  end: number;
  producers: Map<number, ProducerState>;
}

interface JoinResult {
  error: number;
  generation: number;
  protocol: string;
  leader: string;
  memberId: string;
  members: Array<{ id: string; metadata: Buffer }>;
}

interface Member {
  id: string;
  clientId: string;
  clientHost: string;
  sessionTimeout: number;
  rebalanceTimeout: number;
  protocolType: string;
  protocols: Array<{ name: string; metadata: Buffer }>;
  /** The member is removed when this passes (unless its JoinGroup is parked). */
  deadline: number;
  assignment: Buffer;
  /** Answers the member's parked JoinGroup; null when its connection closed. */
  join?: (result: JoinResult | null) => void;
  /** Answers the member's parked SyncGroup with an error code; null when its connection closed. */
  sync?: (error: number | null) => void;
}

interface Group {
  state: 'Empty' | 'PreparingRebalance' | 'CompletingRebalance' | 'Stable';
  generation: number;
  protocol: string | null;
  leader: string | null;
  members: Map<string, Member>;
  rebalanceDeadline: number;
  /** topic -> partition -> committed offset */
  offsets: Map<string, Map<number, { offset: number; metadata: string }>>;
}

interface FetchWaiter {
  keys: ReadonlySet<string>;
  wake(): void;
}

interface FetchTopic {
  name: string;
  partitions: Array<{ index: number; offset: number; maxBytes: number }>;
}

class Broker {
  port = 0;
  private server: Server | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  private readonly connections = new Set<Connection>();
  private readonly topics = new Map<string, PartitionLog[]>();
  private readonly groups = new Map<string, Group>();
  private readonly fetchWaiters = new Set<FetchWaiter>();
  private nextProducerId = 1000;
  private readonly autoCreateTopics: boolean;
  private readonly defaultPartitions: number;

  constructor(options: KafkaTestBrokerOptions) {
    this.autoCreateTopics = options.autoCreateTopics ?? true;
    this.defaultPartitions = options.defaultPartitions ?? 1;
    for (const topic of options.topics ?? []) this.createTopic(topic.name, topic.partitions);
  }

  // --- lifecycle

  async listen(port: number) {
    const server = createServer((socket) => {
      const connection = new Connection(socket, (c, frame) => this.dispatch(c, frame));
      this.connections.add(connection);
      connection.onClose.add(() => this.connections.delete(connection));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, HOST, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    this.sweeper = setInterval(() => this.sweep(), 100);
    this.sweeper.unref();
  }

  async stop() {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    clearInterval(this.sweeper);
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const connection of [...this.connections]) connection.close();
    await closed;
  }

  async restart() {
    if (this.server) throw new Error('kafka-test-broker: restart() while listening');
    await this.listen(this.port);
    const now = Date.now();
    for (const group of this.groups.values()) {
      for (const member of group.members.values()) member.deadline = now + member.sessionTimeout;
      if (group.state === 'PreparingRebalance') group.rebalanceDeadline = now + this.rebalanceTimeout(group);
    }
  }

  // --- assertions and setup

  createTopic(name: string, partitions: number) {
    if (!validTopicName(name)) throw new Error(`invalid topic name ${JSON.stringify(name)}`);
    if (!Number.isInteger(partitions) || partitions < 1) throw new Error(`invalid partition count ${partitions}`);
    const existing = this.topics.get(name);
    if (existing) {
      if (existing.length !== partitions) throw new Error(`topic ${name} exists with ${existing.length} partitions`);
      return;
    }
    this.topics.set(
      name,
      Array.from({ length: partitions }, () => ({ batches: [], end: 0, producers: new Map() })),
    );
  }

  addPartitions(name: string, partitions: number) {
    const existing = this.topics.get(name);
    if (!existing) throw new Error(`no topic ${name}`);
    if (partitions < existing.length) throw new Error(`topic ${name} has ${existing.length} partitions already`);
    while (existing.length < partitions) existing.push({ batches: [], end: 0, producers: new Map() });
  }

  records(topic: string, partition: number): BrokerRecord[] {
    const log = this.topics.get(topic)?.[partition];
    if (!log) throw new Error(`no partition ${topic}:${partition}`);
    return log.batches.flatMap((batch) => decodeBatch(batch.bytes));
  }

  committedOffsets(groupId: string): Map<string, bigint> {
    const result = new Map<string, bigint>();
    for (const [topic, partitions] of this.groups.get(groupId)?.offsets ?? []) {
      for (const [partition, { offset }] of partitions) result.set(`${topic}:${partition}`, BigInt(offset));
    }
    return result;
  }

  // --- requests

  private async dispatch(connection: Connection, frame: Buffer): Promise<Buffer[] | null> {
    const r = new Reader(frame);
    const apiKey = r.int16();
    const version = r.int16();
    const correlationId = r.int32();
    const clientId = r.nullableString() ?? '';
    const range = VERSIONS.get(apiKey);
    let body: Buffer | Buffer[] | null;
    if (apiKey === Api.ApiVersions && range && version > range[1]) {
      // Kafka answers a too new ApiVersions in v0 form with the list, so the client can step down.
      body = this.apiVersions(0, E.UNSUPPORTED_VERSION);
    } else if (!range || version < range[0] || version > range[1]) {
      throw new Error(`unsupported request: api key ${apiKey} version ${version} from ${clientId}`);
    } else {
      body = await this.handle(apiKey, version, r, connection, clientId);
    }
    if (body === null) return null;
    const pieces = Array.isArray(body) ? body : [body];
    const header = Buffer.allocUnsafe(8);
    header.writeInt32BE(pieces.reduce((size, piece) => size + piece.length, 4), 0);
    header.writeInt32BE(correlationId, 4);
    return [header, ...pieces];
  }

  private handle(apiKey: number, version: number, r: Reader, connection: Connection, clientId: string) {
    switch (apiKey) {
      case Api.ApiVersions:
        return this.apiVersions(version, E.NONE);
      case Api.Metadata:
        return this.metadata(r);
      case Api.Produce:
        return this.produce(r);
      case Api.Fetch:
        return this.fetch(r, connection);
      case Api.ListOffsets:
        return this.listOffsets(r);
      case Api.InitProducerId:
        return this.initProducerId(r);
      case Api.FindCoordinator:
        return this.findCoordinator(r);
      case Api.JoinGroup:
        return this.joinGroup(r, connection, clientId);
      case Api.SyncGroup:
        return this.syncGroup(r, connection);
      case Api.Heartbeat:
        return this.heartbeat(r);
      case Api.LeaveGroup:
        return this.leaveGroup(r);
      case Api.DescribeGroups:
        return this.describeGroups(r);
      case Api.OffsetCommit:
        return this.offsetCommit(r);
      case Api.OffsetFetch:
        return this.offsetFetch(r);
      case Api.CreateTopics:
        return this.createTopics(r);
      default:
        throw new Error(`no handler for api key ${apiKey}`);
    }
  }

  private apiVersions(version: number, error: number) {
    const w = new Writer().int16(error).array([...VERSIONS], (w, [key, [min, max]]) => w.int16(key).int16(min).int16(max));
    if (version >= 1) w.int32(0); // throttle time
    return w.done();
  }

  private metadata(r: Reader) {
    const requested = r.nullableArray((r) => r.string()); // null: every topic
    const allowAutoCreation = r.bool();
    if (requested && allowAutoCreation && this.autoCreateTopics) {
      // Created and answered in one go; a real broker answers LEADER_NOT_AVAILABLE first.
      for (const name of requested) if (!this.topics.has(name) && validTopicName(name)) this.createTopic(name, this.defaultPartitions);
    }
    const names = requested ?? [...this.topics.keys()];
    return new Writer()
      .int32(0) // throttle time
      .array([NODE_ID], (w, id) => w.int32(id).string(HOST).int32(this.port).string(null))
      .string(CLUSTER_ID)
      .int32(NODE_ID) // controller: kafkajs sends InitProducerId there
      .array(names, (w, name) => {
        const log = this.topics.get(name);
        const error = log ? E.NONE : validTopicName(name) ? E.UNKNOWN_TOPIC_OR_PARTITION : E.INVALID_TOPIC;
        w.int16(error).string(name).bool(false);
        w.array(log ? log.map((_, index) => index) : [], (w, index) => {
          w.int16(E.NONE).int32(index).int32(NODE_ID);
          w.array([NODE_ID], (w, id) => w.int32(id)); // replicas
          w.array([NODE_ID], (w, id) => w.int32(id)); // in-sync replicas
          w.array([], () => undefined); // offline replicas
        });
      })
      .done();
  }

  private initProducerId(r: Reader) {
    r.nullableString(); // transactional id: transactions are not served (their APIs are not advertised)
    r.int32(); // transaction timeout
    return new Writer().int32(0).int16(E.NONE).int64(this.nextProducerId++).int16(0).done();
  }

  private produce(r: Reader) {
    r.nullableString(); // transactional id
    const acks = r.int16();
    r.int32(); // timeout: appends complete synchronously
    const topics = r.array((r) => ({
      name: r.string(),
      partitions: r.array((r) => ({ index: r.int32(), records: r.bytes() })),
    }));
    const results = topics.map((topic) => ({
      name: topic.name,
      partitions: topic.partitions.map((p) => ({
        index: p.index,
        ...(acks === 0 || acks === 1 || acks === -1
          ? this.append(topic.name, p.index, p.records)
          : { error: E.INVALID_REQUIRED_ACKS, base: -1 }),
      })),
    }));
    if (acks === 0) return null; // the client expects no response
    return new Writer()
      .array(results, (w, topic) =>
        w.string(topic.name).array(topic.partitions, (w, p) => w.int32(p.index).int16(p.error).int64(p.base).int64(-1)),
      )
      .int32(0) // throttle time
      .done();
  }

  private append(topic: string, partition: number, batch: Buffer | null): { error: number; base: number } {
    const log = this.topics.get(topic)?.[partition];
    if (!log) return { error: E.UNKNOWN_TOPIC_OR_PARTITION, base: -1 };
    const corrupt = { error: E.CORRUPT_MESSAGE, base: -1 };
    // Produce v3+ carries exactly one magic-2 record batch per partition.
    if (!batch || batch.length < BATCH_HEADER || batch.readInt32BE(8) + 12 !== batch.length) return corrupt;
    if (batch.readInt8(16) !== 2 || crc32c(batch.subarray(21)) !== batch.readUInt32BE(17)) return corrupt;
    const count = batch.readInt32BE(57);
    if (count < 1 || batch.readInt32BE(23) !== count - 1) return corrupt;

    const producerId = Number(batch.readBigInt64BE(43));
    const epoch = batch.readInt16BE(51);
    const firstSeq = batch.readInt32BE(53);
    const lastSeq = (firstSeq + count - 1) % 2 ** 31; // int32 sequences wrap to 0
    const state = producerId >= 0 ? log.producers.get(producerId) : undefined;
    if (producerId >= 0) {
      if (state && epoch < state.epoch) return { error: E.INVALID_PRODUCER_EPOCH, base: -1 };
      if (state && epoch === state.epoch) {
        const retried = state.recent.find((b) => b.firstSeq === firstSeq && b.lastSeq === lastSeq);
        if (retried) return { error: E.NONE, base: retried.base }; // already written: acknowledge, do not append
        if (firstSeq !== (state.lastSeq + 1) % 2 ** 31) return { error: E.OUT_OF_ORDER_SEQUENCE_NUMBER, base: -1 };
      } else if (firstSeq !== 0) {
        // A new producer id or epoch starts at 0 (this broker remembers every batch a producer id wrote).
        return { error: E.OUT_OF_ORDER_SEQUENCE_NUMBER, base: -1 };
      }
    }

    const base = log.end;
    const stored = Buffer.from(batch); // copy: the request buffer is not ours to keep
    stored.writeBigInt64BE(BigInt(base), 0); // outside the CRC, which starts at the attributes
    log.batches.push({ base, last: base + count - 1, maxTimestamp: Number(stored.readBigInt64BE(35)), bytes: stored });
    log.end += count;
    if (producerId >= 0) {
      const current = state && state.epoch === epoch ? state : { epoch, lastSeq, recent: [] };
      current.lastSeq = lastSeq;
      current.recent.push({ firstSeq, lastSeq, base });
      if (current.recent.length > PRODUCER_BATCHES_KEPT) current.recent.shift();
      log.producers.set(producerId, current);
    }
    // Wake parked fetches; they read after this (synchronous) Produce has appended everything.
    const key = `${topic}:${partition}`;
    for (const waiter of this.fetchWaiters) if (waiter.keys.has(key)) waiter.wake();
    return { error: E.NONE, base };
  }

  private async fetch(r: Reader, connection: Connection) {
    r.int32(); // replica id
    const maxWait = r.int32();
    const minBytes = r.int32();
    const maxBytes = r.int32();
    r.int8(); // isolation level: without transactions, read_committed reads everything
    const topics: FetchTopic[] = r.array((r) => ({
      name: r.string(),
      partitions: r.array((r) => ({ index: r.int32(), offset: r.int64(), maxBytes: r.int32() })),
    }));
    const keys = new Set(topics.flatMap((t) => t.partitions.map((p) => `${t.name}:${p.index}`)));
    const deadline = Date.now() + maxWait;
    let answer = this.readForFetch(topics, maxBytes);
    // Park until minBytes are there, an error shows or maxWait ends; appends wake it.
    while (answer.bytes < minBytes && !answer.error && connection.open && Date.now() < deadline) {
      await this.waitForAppend(keys, deadline - Date.now(), connection);
      answer = this.readForFetch(topics, maxBytes);
    }
    return connection.open ? answer.body : null;
  }

  private waitForAppend(keys: ReadonlySet<string>, ms: number, connection: Connection) {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.fetchWaiters.delete(waiter);
        connection.onClose.delete(done);
        resolve();
      };
      const waiter: FetchWaiter = { keys, wake: done };
      const timer = setTimeout(done, ms);
      this.fetchWaiters.add(waiter);
      connection.onClose.add(done);
    });
  }

  private readForFetch(topics: FetchTopic[], maxBytes: number) {
    let bytes = 0;
    let error = false;
    const body = new Writer()
      .int32(0) // throttle time
      .array(topics, (w, topic) => {
        w.string(topic.name).array(topic.partitions, (w, p) => {
          const log = this.topics.get(topic.name)?.[p.index];
          const code = !log ? E.UNKNOWN_TOPIC_OR_PARTITION : p.offset < 0 || p.offset > log.end ? E.OFFSET_OUT_OF_RANGE : E.NONE;
          const end = log?.end ?? -1;
          // partition, error, high watermark, last stable offset, aborted transactions (none)
          w.int32(p.index).int16(code).int64(end).int64(end).int32(0);
          if (code !== E.NONE || !log) {
            error = true;
            w.bytes(EMPTY);
            return;
          }
          const chunks: Buffer[] = [];
          let size = 0;
          for (let i = this.firstBatchAtOrAfter(log, p.offset); i < log.batches.length; i++) {
            const batch = log.batches[i]!.bytes;
            const fits = size + batch.length <= p.maxBytes && bytes + size + batch.length <= maxBytes;
            // As Kafka (KIP-74), the first batch of the response goes even if too big, so a consumer never sticks.
            if (!fits && bytes + size > 0) break;
            chunks.push(batch);
            size += batch.length;
          }
          bytes += size;
          w.int32(size);
          for (const chunk of chunks) w.raw(chunk);
        });
      })
      .pieces();
    return { body, bytes, error };
  }

  /** Index of the first batch holding an offset >= `offset`. */
  private firstBatchAtOrAfter(log: PartitionLog, offset: number) {
    let low = 0;
    let high = log.batches.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (log.batches[mid]!.last < offset) low = mid + 1;
      else high = mid;
    }
    return low;
  }

  private listOffsets(r: Reader) {
    r.int32(); // replica id
    r.int8(); // isolation level
    const topics = r.array((r) => ({
      name: r.string(),
      partitions: r.array((r) => ({ index: r.int32(), timestamp: r.int64() })),
    }));
    return new Writer()
      .int32(0) // throttle time
      .array(topics, (w, topic) =>
        w.string(topic.name).array(topic.partitions, (w, p) => {
          const log = this.topics.get(topic.name)?.[p.index];
          // partition, error, timestamp (-1: not looked up by timestamp), offset
          if (!log) w.int32(p.index).int16(E.UNKNOWN_TOPIC_OR_PARTITION).int64(-1).int64(-1);
          else if (p.timestamp === -1) w.int32(p.index).int16(E.NONE).int64(-1).int64(log.end); // latest
          else if (p.timestamp === -2) w.int32(p.index).int16(E.NONE).int64(-1).int64(0); // earliest
          else {
            const batch = log.batches.find((b) => b.maxTimestamp >= p.timestamp);
            w.int32(p.index).int16(E.NONE).int64(batch?.maxTimestamp ?? -1).int64(batch?.base ?? -1);
          }
        }),
      )
      .done();
  }

  private createTopics(r: Reader) {
    const topics = r.array((r) => ({
      name: r.string(),
      partitions: r.int32(),
      replicationFactor: r.int16(),
      assignments: r.array((r) => ({ partition: r.int32(), replicas: r.array((r) => r.int32()) })),
      configs: r.array((r) => ({ name: r.string(), value: r.nullableString() })), // ignored
    }));
    r.int32(); // timeout
    const validateOnly = r.bool();
    const results = topics.map(({ name, partitions, replicationFactor, assignments }) => {
      const count = assignments.length > 0 ? assignments.length : partitions === -1 ? this.defaultPartitions : partitions;
      if (!validTopicName(name)) return { name, error: E.INVALID_TOPIC, message: `Invalid topic name ${name}` };
      if (this.topics.has(name)) return { name, error: E.TOPIC_ALREADY_EXISTS, message: `Topic '${name}' already exists.` };
      if (count < 1) return { name, error: E.INVALID_PARTITIONS, message: 'Number of partitions must be larger than 0.' };
      if (replicationFactor !== -1 && replicationFactor !== 1) {
        return { name, error: E.INVALID_REPLICATION_FACTOR, message: 'A single broker: replication factor 1.' };
      }
      if (!validateOnly) this.createTopic(name, count);
      return { name, error: E.NONE, message: null };
    });
    return new Writer()
      .int32(0) // throttle time
      .array(results, (w, t) => w.string(t.name).int16(t.error).string(t.message))
      .done();
  }

  // --- group coordination

  private findCoordinator(r: Reader) {
    r.string(); // key
    r.int8(); // type: group or transaction, node 0 either way
    return new Writer().int32(0).int16(E.NONE).string(null).int32(NODE_ID).string(HOST).int32(this.port).done();
  }

  private group(groupId: string): Group {
    let group = this.groups.get(groupId);
    if (!group) {
      group = {
        state: 'Empty',
        generation: 0,
        protocol: null,
        leader: null,
        members: new Map(),
        rebalanceDeadline: 0,
        offsets: new Map(),
      };
      this.groups.set(groupId, group);
    }
    return group;
  }

  private async joinGroup(r: Reader, connection: Connection, clientId: string) {
    const groupId = r.string();
    const sessionTimeout = r.int32();
    const rebalanceTimeout = r.int32();
    const memberId = r.string();
    const protocolType = r.string();
    const protocols = r.array((r) => ({ name: r.string(), metadata: Buffer.from(r.bytes() ?? EMPTY) }));
    const encode = (result: JoinResult) =>
      new Writer()
        .int32(0) // throttle time
        .int16(result.error)
        .int32(result.generation)
        .string(result.protocol)
        .string(result.leader)
        .string(result.memberId)
        .array(result.members, (w, m) => w.string(m.id).bytes(m.metadata))
        .done();
    const fail = (error: number) => encode({ error, generation: -1, protocol: '', leader: '', memberId, members: [] });

    if (!groupId) return fail(E.INVALID_GROUP_ID);
    if (sessionTimeout <= 0 || rebalanceTimeout <= 0) return fail(E.INVALID_SESSION_TIMEOUT);
    const group = this.group(groupId);
    let member = memberId ? group.members.get(memberId) : undefined;
    if (memberId && !member) return fail(E.UNKNOWN_MEMBER_ID);
    const others = [...group.members.values()].filter((m) => m !== member);
    const compatible =
      protocols.length > 0 &&
      others.every((m) => m.protocolType === protocolType) &&
      protocols.some((p) => others.every((m) => m.protocols.some((q) => q.name === p.name)));
    if (!compatible) return fail(E.INCONSISTENT_GROUP_PROTOCOL);

    const latest = { sessionTimeout, rebalanceTimeout, protocolType, protocols, deadline: Date.now() + sessionTimeout };
    if (member) Object.assign(member, latest);
    else {
      const id = `${clientId}-${randomUUID()}`; // Kafka's form
      member = { id, clientId, clientHost: connection.host, assignment: EMPTY, ...latest };
      group.members.set(id, member);
    }
    const joining = member;
    const result = new Promise<JoinResult | null>((resolve) => {
      const answer = (result: JoinResult | null) => {
        connection.onClose.delete(cancel);
        resolve(result);
      };
      const cancel = () => {
        if (joining.join === answer) joining.join = undefined; // the member has to join again
        answer(null);
      };
      // A second JoinGroup of the same member replaces the first, which is told to retry.
      joining.join?.({ error: E.REBALANCE_IN_PROGRESS, generation: -1, protocol: '', leader: '', memberId, members: [] });
      joining.join = answer;
      connection.onClose.add(cancel);
    });
    this.prepareRebalance(group);
    this.tryCompleteJoin(group);
    const answer = await result;
    return answer && encode(answer);
  }

  private syncGroup(r: Reader, connection: Connection): Buffer | Promise<Buffer | null> {
    const groupId = r.string();
    const generation = r.int32();
    const memberId = r.string();
    const assignments = r.array((r) => ({ id: r.string(), assignment: Buffer.from(r.bytes() ?? EMPTY) }));
    const encode = (error: number, assignment = EMPTY) => new Writer().int32(0).int16(error).bytes(assignment).done();

    const group = this.groups.get(groupId);
    const member = group?.members.get(memberId);
    if (!group || !member) return encode(E.UNKNOWN_MEMBER_ID);
    if (generation !== group.generation) return encode(E.ILLEGAL_GENERATION);
    if (group.state === 'PreparingRebalance') return encode(E.REBALANCE_IN_PROGRESS);
    member.deadline = Date.now() + member.sessionTimeout;
    if (group.state === 'Stable') return encode(E.NONE, member.assignment);

    // CompletingRebalance: the leader's assignments complete it; followers wait for them.
    if (memberId === group.leader) {
      const given = new Map(assignments.map((a) => [a.id, a.assignment]));
      group.state = 'Stable';
      for (const m of group.members.values()) {
        m.assignment = given.get(m.id) ?? EMPTY;
        const waiting = m.sync;
        m.sync = undefined;
        waiting?.(E.NONE);
      }
      return encode(E.NONE, member.assignment);
    }
    return new Promise<Buffer | null>((resolve) => {
      const answer = (error: number | null) => {
        connection.onClose.delete(cancel);
        resolve(error === null ? null : encode(error, error === E.NONE ? member.assignment : EMPTY));
      };
      const cancel = () => {
        if (member.sync === answer) member.sync = undefined;
        answer(null);
      };
      member.sync?.(E.REBALANCE_IN_PROGRESS); // replaced by this one
      member.sync = answer;
      connection.onClose.add(cancel);
    });
  }

  private heartbeat(r: Reader) {
    const groupId = r.string();
    const generation = r.int32();
    const memberId = r.string();
    const group = this.groups.get(groupId);
    const member = group?.members.get(memberId);
    let error: number = E.NONE;
    if (!group || !member) error = E.UNKNOWN_MEMBER_ID;
    else if (generation !== group.generation) error = E.ILLEGAL_GENERATION;
    else {
      member.deadline = Date.now() + member.sessionTimeout;
      if (group.state !== 'Stable') error = E.REBALANCE_IN_PROGRESS;
    }
    return new Writer().int32(0).int16(error).done();
  }

  private leaveGroup(r: Reader) {
    const group = this.groups.get(r.string());
    const memberId = r.string();
    const known = !!group?.members.has(memberId);
    if (group && known) this.removeMember(group, memberId);
    return new Writer()
      .int32(0)
      .int16(known ? E.NONE : E.UNKNOWN_MEMBER_ID)
      .done();
  }

  private describeGroups(r: Reader) {
    const groupIds = r.array((r) => r.string());
    return new Writer()
      .int32(0) // throttle time
      .array(groupIds, (w, groupId) => {
        const group = this.groups.get(groupId);
        const members = [...(group?.members.values() ?? [])];
        const protocol = group?.protocol ?? '';
        w.int16(E.NONE)
          .string(groupId)
          .string(group?.state ?? 'Dead') // Kafka's name for a group it does not know
          .string(members[0]?.protocolType ?? '')
          .string(protocol)
          .array(members, (w, m) =>
            w
              .string(m.id)
              .string(m.clientId)
              .string(m.clientHost)
              .bytes(m.protocols.find((p) => p.name === protocol)?.metadata ?? EMPTY)
              .bytes(m.assignment),
          );
      })
      .done();
  }

  private offsetCommit(r: Reader) {
    const group = this.group(r.string());
    const generation = r.int32();
    const memberId = r.string();
    r.int64(); // retention time: offsets are kept for good
    const topics = r.array((r) => ({
      name: r.string(),
      partitions: r.array((r) => ({ index: r.int32(), offset: r.int64(), metadata: r.nullableString() })),
    }));
    // The checks and their order follow Kafka's GroupCoordinator.handleCommitOffsets.
    const member = group.members.get(memberId);
    let error: number = E.NONE;
    if (generation < 0 && group.state === 'Empty') error = E.NONE; // a group that only stores offsets
    else if (group.state === 'CompletingRebalance') error = E.REBALANCE_IN_PROGRESS;
    else if (!member) error = E.UNKNOWN_MEMBER_ID;
    else if (generation !== group.generation) error = E.ILLEGAL_GENERATION;
    if (member && error === E.NONE) member.deadline = Date.now() + member.sessionTimeout;
    return new Writer()
      .int32(0) // throttle time
      .array(topics, (w, topic) =>
        w.string(topic.name).array(topic.partitions, (w, p) => {
          const exists = !!this.topics.get(topic.name)?.[p.index];
          const code = error !== E.NONE ? error : exists ? E.NONE : E.UNKNOWN_TOPIC_OR_PARTITION;
          if (code === E.NONE) {
            const committed = group.offsets.get(topic.name) ?? new Map<number, { offset: number; metadata: string }>();
            committed.set(p.index, { offset: p.offset, metadata: p.metadata ?? '' });
            group.offsets.set(topic.name, committed);
          }
          w.int32(p.index).int16(code);
        }),
      )
      .done();
  }

  private offsetFetch(r: Reader) {
    const groupId = r.string();
    const requested = r.nullableArray((r) => ({ name: r.string(), partitions: r.array((r) => r.int32()) }));
    const offsets = this.groups.get(groupId)?.offsets ?? new Map<string, Map<number, { offset: number; metadata: string }>>();
    const topics = requested ?? [...offsets].map(([name, partitions]) => ({ name, partitions: [...partitions.keys()] }));
    return new Writer()
      .int32(0) // throttle time
      .array(topics, (w, topic) =>
        w.string(topic.name).array(topic.partitions, (w, partition) => {
          const committed = offsets.get(topic.name)?.get(partition);
          w.int32(partition)
            .int64(committed?.offset ?? -1)
            .string(committed?.metadata ?? '')
            .int16(E.NONE);
        }),
      )
      .int16(E.NONE)
      .done();
  }

  private rebalanceTimeout(group: Group) {
    return Math.max(0, ...[...group.members.values()].map((m) => m.rebalanceTimeout));
  }

  private prepareRebalance(group: Group) {
    if (group.state === 'PreparingRebalance') return;
    group.state = 'PreparingRebalance';
    group.rebalanceDeadline = Date.now() + this.rebalanceTimeout(group);
    for (const member of group.members.values()) {
      const waiting = member.sync;
      member.sync = undefined;
      waiting?.(E.REBALANCE_IN_PROGRESS);
    }
  }

  private tryCompleteJoin(group: Group) {
    if (group.state === 'PreparingRebalance' && [...group.members.values()].every((m) => m.join)) this.completeJoin(group);
  }

  private completeJoin(group: Group) {
    for (const member of [...group.members.values()]) if (!member.join) group.members.delete(member.id); // did not rejoin in time
    group.generation += 1;
    const members = [...group.members.values()];
    if (members.length === 0) {
      group.state = 'Empty';
      group.protocol = null;
      group.leader = null;
      return;
    }
    // Protocol: the one most members list first among those every member supports.
    const supportedByAll = (name: string) => members.every((m) => m.protocols.some((p) => p.name === name));
    const common = members[0]!.protocols.map((p) => p.name).filter(supportedByAll);
    const votes = new Map<string, number>();
    for (const m of members) {
      const choice = m.protocols.find((p) => common.includes(p.name))?.name ?? '';
      votes.set(choice, (votes.get(choice) ?? 0) + 1);
    }
    const protocol = [...votes].sort((a, b) => b[1] - a[1])[0]![0];
    const leader = group.leader && group.members.has(group.leader) ? group.leader : members[0]!.id;
    group.state = 'CompletingRebalance';
    group.protocol = protocol;
    group.leader = leader;
    const list = members.map((m) => ({ id: m.id, metadata: m.protocols.find((p) => p.name === protocol)?.metadata ?? EMPTY }));
    const now = Date.now();
    for (const m of members) {
      const reply = m.join;
      m.join = undefined;
      m.assignment = EMPTY;
      m.deadline = now + m.sessionTimeout;
      const members = m.id === leader ? list : [];
      reply?.({ error: E.NONE, generation: group.generation, protocol, leader, memberId: m.id, members });
    }
  }

  private removeMember(group: Group, memberId: string) {
    const member = group.members.get(memberId);
    if (!member) return;
    group.members.delete(memberId);
    const { join, sync } = member;
    member.join = undefined;
    member.sync = undefined;
    join?.({ error: E.UNKNOWN_MEMBER_ID, generation: -1, protocol: '', leader: '', memberId, members: [] });
    sync?.(E.UNKNOWN_MEMBER_ID);
    if (group.state !== 'Empty') {
      this.prepareRebalance(group);
      this.tryCompleteJoin(group);
    }
  }

  /** Session and rebalance timeouts. */
  private sweep() {
    const now = Date.now();
    for (const group of this.groups.values()) {
      for (const member of [...group.members.values()]) {
        if (!member.join && now > member.deadline) this.removeMember(group, member.id);
      }
      if (group.state === 'PreparingRebalance' && now >= group.rebalanceDeadline) this.completeJoin(group);
    }
  }
}
