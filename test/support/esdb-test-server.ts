import { randomUUID } from 'node:crypto';
import grpc from '@grpc/grpc-js';
import codePb from '@eventstore/db-client/generated/code_pb.js';
import anyPb from 'google-protobuf/google/protobuf/any_pb.js';
import emptyPb from 'google-protobuf/google/protobuf/empty_pb.js';
import featuresGrpc from '@eventstore/db-client/generated/serverfeatures_grpc_pb.js';
import featuresPb from '@eventstore/db-client/generated/serverfeatures_pb.js';
import sharedPb from '@eventstore/db-client/generated/shared_pb.js';
import statusPb from '@eventstore/db-client/generated/status_pb.js';
import streamsGrpc from '@eventstore/db-client/generated/streams_grpc_pb.js';
import streamsPb from '@eventstore/db-client/generated/streams_pb.js';
import type { SupportedMethods } from '@eventstore/db-client/generated/serverfeatures_pb.js';
import type { StreamIdentifier, UUID } from '@eventstore/db-client/generated/shared_pb.js';
import type {
  AppendReq,
  AppendResp,
  BatchAppendReq,
  BatchAppendResp,
  ReadReq,
  ReadResp,
} from '@eventstore/db-client/generated/streams_pb.js';

/**
 * An in-memory EventStoreDB for integration tests: a gRPC server speaking the
 * protocol of `@eventstore/db-client` through the client's own generated service
 * definitions, so the real client talks to it over TCP. It answers what the
 * client sends for append (Append and BatchAppend), stream and $all reads (forwards
 * and backwards), and catch-up subscriptions on $all and on streams, the way a 23.x
 * node does. Of a stream's metadata (the last event of `$$<stream>`), stream reads
 * apply `$maxCount`.
 *
 * Not served: deletes/tombstones, the other metadata, link resolution, idempotent
 * re-appends of the same event ids, checkpoints of filtered subscriptions,
 * structured UUIDs, TLS, authentication, persistent subscriptions, projections.
 * Unsupported options fail loudly (UNIMPLEMENTED) rather than being ignored.
 */
export interface EsdbTestServer {
  connectionString: string;
  port: number;
  /** Stops serving at once: the listener closes and open calls are cut (a crash). */
  stop(): Promise<void>;
  /** Serves again on the same port; what was appended before is still there. */
  restart(): Promise<void>;
  /** Ends every open subscription with an error status, as a node dropping them would. */
  dropSubscriptions(code?: grpc.status): void;
  /** Appends a `$statsCollected` event to a `$stats-…` stream, as a real node does now and then. */
  appendSystemEvent(): void;
}

export interface EsdbTestServerOptions {
  /** Offer BatchAppend in the server features (production servers do); else the client uses Append. */
  batchAppend?: boolean;
}

interface StoredEvent {
  id: string;
  streamId: string;
  streamIdentifier: StreamIdentifier;
  revision: number;
  /** Commit and prepare position alike: a growing byte-like offset, not consecutive. */
  position: number;
  type: string;
  contentType: string;
  /** .NET ticks (100 ns) since the Unix epoch, which is what the client decodes. */
  created: string;
  data: Uint8Array;
  customMetadata: Uint8Array;
}

/** What AppendReq.ProposedMessage and BatchAppendReq.ProposedMessage have in common. */
interface ProposedMessage {
  getId(): UUID | undefined;
  getMetadataMap(): { get(key: string): string | undefined };
  getData_asU8(): Uint8Array;
  getCustomMetadata_asU8(): Uint8Array;
}

type Expected = { kind: 'any' } | { kind: 'no_stream' } | { kind: 'stream_exists' } | { kind: 'revision'; revision: number };
type AppendOutcome = { ok: true; revision: number; position: number } | { ok: false; current: number };

interface Subscriber {
  call: grpc.ServerWritableStream<ReadReq, ReadResp>;
  matches(event: StoredEvent): boolean;
  /** Caught up: commit() sends it new events. Before, it is still going through the history. */
  live: boolean;
}

const { ReadResp: ReadRespMsg, AppendResp: AppendRespMsg, BatchAppendResp: BatchAppendRespMsg } = streamsPb;
const STREAMS = 'event_store.client.streams.Streams';

const streamName = (identifier: StreamIdentifier | undefined) =>
  Buffer.from(identifier?.getStreamName_asU8() ?? new Uint8Array()).toString('utf8');

/** The client sends UUIDs as strings; accept the structured form too, as the server does. */
function uuidString(uuid: UUID | undefined): string {
  if (!uuid) return randomUUID();
  if (uuid.hasString()) return uuid.getString();
  const s = uuid.getStructured()!;
  const hex = (v: string) => BigInt.asUintN(64, BigInt(v)).toString(16).padStart(16, '0');
  const h = hex(s.getMostSignificantBits()) + hex(s.getLeastSignificantBits());
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const grpcError = (code: grpc.status, details: string) => Object.assign(new Error(details), { code, details });

export async function startEsdbTestServer(options: EsdbTestServerOptions = {}): Promise<EsdbTestServer> {
  const batchAppend = options.batchAppend ?? true;
  const log: StoredEvent[] = [];
  const streams = new Map<string, StoredEvent[]>();
  const subscribers = new Set<Subscriber>();
  let nextPosition = 128;

  function commit(streamId: string, expected: Expected, messages: readonly ProposedMessage[]): AppendOutcome {
    const existing = streams.get(streamId);
    const current = existing ? existing.length - 1 : -1;
    const ok =
      expected.kind === 'any' ||
      (expected.kind === 'no_stream' && current === -1) ||
      (expected.kind === 'stream_exists' && current >= 0) ||
      (expected.kind === 'revision' && expected.revision === current);
    if (!ok) return { ok: false, current };
    const stream = existing ?? [];
    // An empty append does not create the stream.
    if (messages.length > 0) streams.set(streamId, stream);
    const created = (BigInt(Date.now()) * 10_000n).toString();
    const identifier = new sharedPb.StreamIdentifier().setStreamName(Buffer.from(streamId, 'utf8'));
    const appended = messages.map((message): StoredEvent => {
      const metadata = message.getMetadataMap();
      const event: StoredEvent = {
        id: uuidString(message.getId()),
        streamId,
        streamIdentifier: identifier,
        revision: stream.length,
        position: nextPosition,
        type: metadata.get('type') ?? '',
        contentType: metadata.get('content-type') ?? 'application/octet-stream',
        created,
        data: message.getData_asU8(),
        customMetadata: message.getCustomMetadata_asU8(),
      };
      // Positions are offsets in a transaction file: they grow by the record's size.
      nextPosition += 64 + event.data.byteLength + event.customMetadata.byteLength;
      stream.push(event);
      log.push(event);
      return event;
    });
    // Live subscribers get the new events now; nothing can interleave, JS is single-threaded.
    // One still going through the history reaches these in the log.
    for (const subscriber of subscribers) {
      if (!subscriber.live) continue;
      for (const event of appended) if (subscriber.matches(event)) subscriber.call.write(eventResp(event));
    }
    const last = stream.at(-1);
    return { ok: true, revision: last ? last.revision : -1, position: last ? last.position : -1 };
  }

  function eventResp(event: StoredEvent): ReadResp {
    const recorded = new ReadRespMsg.ReadEvent.RecordedEvent()
      .setId(new sharedPb.UUID().setString(event.id))
      .setStreamIdentifier(event.streamIdentifier)
      .setStreamRevision(String(event.revision))
      // Servers since 22.x fill positions for stream reads too (older ones sent 2^64-1).
      .setCommitPosition(String(event.position))
      .setPreparePosition(String(event.position))
      .setData(event.data)
      .setCustomMetadata(event.customMetadata);
    recorded
      .getMetadataMap()
      .set('type', event.type)
      .set('content-type', event.contentType)
      .set('created', event.created);
    const read = new ReadRespMsg.ReadEvent().setEvent(recorded).setCommitPosition(String(event.position));
    return new ReadRespMsg().setEvent(read);
  }

  /** The filter of a read or subscription: on stream name or event type, by prefixes or regex. */
  function filterOf(options: ReadReq.Options): (event: StoredEvent) => boolean {
    if (!options.hasFilter()) return () => true;
    const filter = options.getFilter()!;
    const onStream = filter.hasStreamIdentifier();
    const expression = onStream ? filter.getStreamIdentifier()! : filter.getEventType()!;
    const prefixes = expression.getPrefixList();
    const regex = expression.getRegex() ? new RegExp(expression.getRegex()) : undefined;
    return (event) => {
      const value = onStream ? event.streamId : event.type;
      return prefixes.length > 0 ? prefixes.some((p) => value.startsWith(p)) : (regex?.test(value) ?? true);
    };
  }

  /**
   * The first revision a read of the stream returns: with `$maxCount` in its metadata, the
   * last that many events are readable and the rest are not, as the server reads it
   * (last event number - $maxCount + 1); revisions and expected revisions are unchanged.
   */
  function firstReadable(streamId: string, events: readonly StoredEvent[]): number {
    const metadata = streamId.startsWith('$$') ? undefined : streams.get(`$$${streamId}`)?.at(-1);
    if (!metadata) return 0;
    let maxCount: unknown;
    try {
      maxCount = (JSON.parse(Buffer.from(metadata.data).toString('utf8')) as { $maxCount?: unknown }).$maxCount;
    } catch {
      return 0;
    }
    return typeof maxCount === 'number' && Number.isInteger(maxCount) && maxCount >= 1 ? Math.max(0, events.length - maxCount) : 0;
  }

  /**
   * Catch-up subscription: confirmation, history, CaughtUp, then live events from
   * commit(). The history goes out as the client takes it (paused while the call's
   * buffer is full), as a node reads it page by page: not serialised all at once
   * with the server's event loop blocked meanwhile. Events committed while it goes
   * out join the history; the switch to live happens with nothing in between.
   */
  function subscribe(call: grpc.ServerWritableStream<ReadReq, ReadResp>, matches: (event: StoredEvent) => boolean) {
    call.write(new ReadRespMsg().setConfirmation(new ReadRespMsg.SubscriptionConfirmation().setSubscriptionId(randomUUID())));
    // Open from now on (so that dropSubscriptions ends it too), live once through the history.
    const subscriber: Subscriber = { call, matches, live: false };
    subscribers.add(subscriber);
    const forget = () => subscribers.delete(subscriber);
    const open = () => subscribers.has(subscriber);
    call.on('cancelled', forget);
    call.on('error', forget);
    call.on('finish', forget);
    let next = 0;
    const history = () => {
      while (open() && next < log.length) {
        const event = log[next++]!;
        if (matches(event) && !call.write(eventResp(event))) {
          call.once('drain', history);
          return;
        }
      }
      if (!open()) return;
      call.write(new ReadRespMsg().setCaughtUp(new ReadRespMsg.CaughtUp()));
      subscriber.live = true;
    };
    history();
  }

  const streamsImpl = {
    read: (call: grpc.ServerWritableStream<ReadReq, ReadResp>) => {
      const options = call.request.getOptions();
      // Backwards: reads, not subscriptions, as EventStoreDB gives them: of a stream from its end or a revision; of $all from the end or before a position.
      const backwards = options?.getReadDirection() === streamsPb.ReadReq.Options.ReadDirection.BACKWARDS && !options.hasSubscription();
      if (!options || (options.getReadDirection() !== streamsPb.ReadReq.Options.ReadDirection.FORWARDS && !backwards) || options.getResolveLinks()) {
        call.emit('error', grpcError(grpc.status.UNIMPLEMENTED, 'test server: forward reads and subscriptions, and backward reads, without link resolution'));
        return;
      }
      const filter = filterOf(options);
      const count = options.hasCount() ? Number(BigInt(options.getCount())) : Infinity;
      const send = (events: readonly StoredEvent[]) => {
        for (const event of events.slice(0, count)) call.write(eventResp(event));
        call.end();
      };
      if (options.hasStream()) {
        const stream = options.getStream()!;
        const streamId = streamName(stream.getStreamIdentifier());
        const events = streams.get(streamId) ?? [];
        const revision = stream.hasRevision() ? Number(stream.getRevision()) : undefined;
        if (options.hasSubscription()) {
          // Subscriptions start *after* the given revision (exclusive), unlike reads.
          const after = revision ?? (stream.hasEnd() ? events.length - 1 : -1);
          subscribe(call, (e) => e.streamId === streamId && e.revision > after);
        } else if (!streams.has(streamId)) {
          call.write(new ReadRespMsg().setStreamNotFound(new ReadRespMsg.StreamNotFound().setStreamIdentifier(stream.getStreamIdentifier())));
          call.end();
        } else if (backwards) {
          const from = revision ?? (stream.hasStart() ? 0 : events.length - 1);
          const first = firstReadable(streamId, events);
          send(events.filter((e) => e.revision <= from && e.revision >= first).reverse());
        } else {
          const from = Math.max(revision ?? (stream.hasEnd() ? events.length : 0), firstReadable(streamId, events));
          send(events.filter((e) => e.revision >= from));
        }
        return;
      }
      const all = options.getAll()!;
      const position = all.hasPosition() ? Number(all.getPosition()!.getCommitPosition()) : undefined;
      if (options.hasSubscription()) {
        // $all subscriptions are exclusive of the position too; reads include the event at it.
        const after = position ?? (all.hasEnd() ? (log.at(-1)?.position ?? -1) : -1);
        subscribe(call, (e) => e.position > after && filter(e));
      } else if (backwards) {
        send(log.filter((e) => (position === undefined || e.position < position) && filter(e)).reverse());
      } else {
        const from = position ?? (all.hasEnd() ? nextPosition : 0);
        send(log.filter((e) => e.position >= from && filter(e)));
      }
    },

    /** Client-streaming: options first, then one message per event; one answer at the end. */
    append: (call: grpc.ServerReadableStream<AppendReq, AppendResp>, callback: grpc.sendUnaryData<AppendResp>) => {
      let options: AppendReq.Options | undefined;
      const messages: ProposedMessage[] = [];
      call.on('data', (req: AppendReq) => {
        if (req.hasOptions()) options = req.getOptions();
        else if (req.hasProposedMessage()) messages.push(req.getProposedMessage()!);
      });
      call.on('error', () => {});
      call.on('end', () => {
        if (!options) return callback(grpcError(grpc.status.INVALID_ARGUMENT, 'append without options'));
        const expected: Expected = options.hasRevision()
          ? { kind: 'revision', revision: Number(options.getRevision()) }
          : options.hasNoStream()
            ? { kind: 'no_stream' }
            : options.hasStreamExists()
              ? { kind: 'stream_exists' }
              : { kind: 'any' };
        const outcome = commit(streamName(options.getStreamIdentifier()), expected, messages);
        const resp = new AppendRespMsg();
        if (outcome.ok) {
          const success = new AppendRespMsg.Success();
          if (outcome.revision < 0) success.setNoStream(new sharedPb.Empty()).setNoPosition(new sharedPb.Empty());
          else {
            const position = new AppendRespMsg.Position().setCommitPosition(String(outcome.position)).setPreparePosition(String(outcome.position));
            success.setCurrentRevision(String(outcome.revision)).setPosition(position);
          }
          resp.setSuccess(success);
        } else {
          // Not a gRPC error: Append answers OK with a WrongExpectedVersion result, filling
          // both the current fields and the deprecated 20.6.0 ones, like the real server.
          const wrong = new AppendRespMsg.WrongExpectedVersion();
          if (outcome.current >= 0) wrong.setCurrentRevision(String(outcome.current)).setCurrentRevision2060(outcome.current);
          else wrong.setCurrentNoStream(new sharedPb.Empty()).setNoStream2060(new sharedPb.Empty());
          if (expected.kind === 'revision') wrong.setExpectedRevision(String(expected.revision)).setExpectedRevision2060(expected.revision);
          else if (expected.kind === 'no_stream') wrong.setExpectedNoStream(new sharedPb.Empty());
          else wrong.setExpectedStreamExists(new sharedPb.Empty()).setStreamExists2060(new sharedPb.Empty());
          resp.setWrongExpectedVersion(wrong);
        }
        callback(null, resp);
      });
    },

    /**
     * Bidi: the client keeps one BatchAppend call open per channel and multiplexes
     * appends over it by correlation id; a batch may span several requests and is
     * complete at `is_final`. Failures are a google.rpc.Status whose `details` packs
     * the reason; the client reads only the details and needs `stream_identifier`.
     */
    batchAppend: (call: grpc.ServerDuplexStream<BatchAppendReq, BatchAppendResp>) => {
      const pending = new Map<string, { options?: BatchAppendReq.Options; messages: ProposedMessage[] }>();
      call.on('data', (req: BatchAppendReq) => {
        const key = uuidString(req.getCorrelationId());
        const batch = pending.get(key) ?? { messages: [] };
        pending.set(key, batch);
        if (req.hasOptions()) batch.options = req.getOptions();
        batch.messages.push(...req.getProposedMessagesList());
        if (!req.getIsFinal()) return;
        pending.delete(key);
        const options = batch.options;
        const resp = new BatchAppendRespMsg().setCorrelationId(req.getCorrelationId());
        if (!options) {
          call.write(resp.setError(failure(codePb.Code.INVALID_ARGUMENT, 'Unknown', new sharedPb.Unknown())));
          return;
        }
        resp.setStreamIdentifier(options.getStreamIdentifier());
        let expected: Expected;
        if (options.hasStreamPosition()) {
          expected = { kind: 'revision', revision: Number(options.getStreamPosition()) };
          resp.setStreamPosition(options.getStreamPosition());
        } else if (options.hasNoStream()) {
          expected = { kind: 'no_stream' };
          resp.setNoStream(new emptyPb.Empty());
        } else if (options.hasStreamExists()) {
          expected = { kind: 'stream_exists' };
          resp.setStreamExists(new emptyPb.Empty());
        } else {
          expected = { kind: 'any' };
          resp.setAny(new emptyPb.Empty());
        }
        const deadline = options.getDeadline()?.toDate();
        if (deadline && deadline.getTime() < Date.now()) {
          call.write(resp.setError(failure(codePb.Code.DEADLINE_EXCEEDED, 'Timeout', new sharedPb.Timeout())));
          return;
        }
        const outcome = commit(streamName(options.getStreamIdentifier()), expected, batch.messages);
        if (outcome.ok) {
          const success = new BatchAppendRespMsg.Success();
          if (outcome.revision < 0) success.setNoStream(new emptyPb.Empty()).setNoPosition(new emptyPb.Empty());
          else {
            const position = new sharedPb.AllStreamPosition().setCommitPosition(String(outcome.position)).setPreparePosition(String(outcome.position));
            success.setCurrentRevision(String(outcome.revision)).setPosition(position);
          }
          call.write(resp.setSuccess(success));
        } else {
          const wrong = new sharedPb.WrongExpectedVersion();
          if (outcome.current >= 0) wrong.setCurrentStreamRevision(String(outcome.current));
          else wrong.setCurrentNoStream(new emptyPb.Empty());
          if (expected.kind === 'revision') wrong.setExpectedStreamPosition(String(expected.revision));
          else if (expected.kind === 'no_stream') wrong.setExpectedNoStream(new emptyPb.Empty());
          else wrong.setExpectedStreamExists(new emptyPb.Empty());
          call.write(resp.setError(failure(codePb.Code.FAILED_PRECONDITION, 'WrongExpectedVersion', wrong)));
        }
      });
      call.on('error', () => {});
      call.on('end', () => call.end());
    },
  };

  function failure(code: codePb.Code, name: string, details: { serializeBinary(): Uint8Array }) {
    const any = new anyPb.Any();
    any.pack(details.serializeBinary(), `event_store.client.${name}`);
    return new statusPb.Status().setCode(code).setMessage(name).setDetails(any);
  }

  const featuresImpl: grpc.UntypedServiceImplementation = {
    getSupportedMethods(_call: unknown, callback: grpc.sendUnaryData<SupportedMethods>) {
      // The client matches "/service/method" case-insensitively and only checks that
      // BatchAppend is listed; without it, it falls back to the Append call.
      const methods = new featuresPb.SupportedMethods().setEventStoreServerVersion('23.10.0-test');
      const names = [
        [STREAMS, 'Read'],
        [STREAMS, 'Append'],
        ...(batchAppend ? [[STREAMS, 'BatchAppend']] : []),
        ['event_store.client.server_features.ServerFeatures', 'GetSupportedMethods'],
      ];
      for (const [service, method] of names) {
        methods.addMethods(new featuresPb.SupportedMethod().setServiceName(service!).setMethodName(method!));
      }
      callback(null, methods);
    },
  };

  let server: grpc.Server | undefined;
  async function listen(port: number): Promise<number> {
    const candidate = new grpc.Server();
    const { read, append, batchAppend: batch } = streamsImpl;
    // Without BatchAppend the method is not served at all (UNIMPLEMENTED), like an old server.
    candidate.addService(streamsGrpc.StreamsService, batchAppend ? { read, append, batchAppend: batch } : { read, append });
    candidate.addService(featuresGrpc.ServerFeaturesService, featuresImpl);
    const bound = await new Promise<number>((resolve, reject) =>
      candidate.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error, p) =>
        error ? reject(error) : resolve(p),
      ),
    );
    server = candidate;
    return bound;
  }

  function appendSystemEvent() {
    const stats = new streamsPb.AppendReq.ProposedMessage().setData(Buffer.from('{"proc-cpu":1}'));
    stats.getMetadataMap().set('type', '$statsCollected').set('content-type', 'application/json');
    commit('$stats-127.0.0.1:2113', { kind: 'any' }, [stats]);
  }

  const port = await listen(0);
  // A fresh node writes system events before any user event.
  appendSystemEvent();

  return {
    port,
    connectionString: `esdb://127.0.0.1:${port}?tls=false`,
    async stop() {
      const current = server;
      server = undefined;
      subscribers.clear();
      if (!current) return;
      current.forceShutdown();
      // forceShutdown cuts sessions now; wait for the listener to be closed too.
      await new Promise<void>((resolve) => current.tryShutdown(() => resolve()));
    },
    async restart() {
      if (server) return;
      // The kernel may need a moment before the port can be bound again.
      for (let attempt = 0; ; attempt++) {
        try {
          await listen(port);
          return;
        } catch (error) {
          if (attempt >= 20) throw error;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    },
    dropSubscriptions(code = grpc.status.UNAVAILABLE) {
      for (const { call } of [...subscribers]) call.emit('error', grpcError(code, 'test server dropped the subscription'));
      subscribers.clear();
    },
    appendSystemEvent,
  };
}
