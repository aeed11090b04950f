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
}
