/**
 * The relay's outbound port: publishes messages and resolves only once the
 * broker has acknowledged all of them (for Kafka: acks from all in-sync replicas).
 * Adapter: `kafka-publisher.ts`.
 */
export interface OutboundMessage {
  /** Partitioning key: the stream id, so each user's events stay in order. */
  key: string;
  value: string;
  headers: Record<string, string>;
}

export interface EventPublisher {
  publish(messages: readonly OutboundMessage[]): Promise<void>;
  close(): Promise<void>;
  /**
   * Where the keys are spread over a number of partitions (Kafka): the count the relay
   * records with its resume point the first time (`seen`, the topic's count at the last
   * send) and pins from then on (`pin`), so that partitions added to the topic later
   * move no key and break no user's order.
   */
  partitions?: PartitionCount;
}

export interface PartitionCount {
  /** The topic's partition count at the last send; undefined before the first. */
  seen(): number | undefined;
  /** From now on, keys are spread over this many partitions (the first of the topic's). */
  pin(count: number): void;
}
