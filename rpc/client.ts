// The client half of the adapter: one typed method per RPC, promises for single responses, AsyncIterables for
// streams, an AbortSignal wired to call.cancel(), and errors rebuilt as TheseusError with the server's code and hint.
import { Client, Metadata } from "@grpc/grpc-js";
import type { CallOptions as GrpcCallOptions, ClientWritableStream, ServiceError } from "@grpc/grpc-js";
import type { DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { once } from "node:events";
import { TheseusError, abortReason } from "../common/index.js";
import { deserializer, methodPath, serializer } from "./codec.js";
import { fromServiceError } from "./status.js";
import { channelCredentials } from "./tls.js";
import type { ExpectedPeer, TlsMaterial } from "./tls.js";

export interface CallOptions {
  readonly signal?: AbortSignal;
  /** Extra request metadata (e.g. a session token). */
  readonly metadata?: Readonly<Record<string, string>>;
  readonly timeoutMs?: number;
}

type MethodInfo = Pick<DescMethod, "input" | "output" | "methodKind">;
type In<M extends MethodInfo> = MessageInitShape<M["input"]>;
type Out<M extends MethodInfo> = MessageShape<M["output"]>;

export type ClientMethod<M extends MethodInfo> = M["methodKind"] extends "unary"
  ? (request: In<M>, options?: CallOptions) => Promise<Out<M>>
  : M["methodKind"] extends "server_streaming"
    ? (request: In<M>, options?: CallOptions) => AsyncIterable<Out<M>>
    : M["methodKind"] extends "client_streaming"
      ? (requests: AsyncIterable<In<M>>, options?: CallOptions) => Promise<Out<M>>
      : (requests: AsyncIterable<In<M>>, options?: CallOptions) => AsyncIterable<Out<M>>;

export type RpcClient<S extends GenServiceMethods> = { readonly [K in keyof S]: ClientMethod<S[K]> } & {
  /** Closes the channel; calls in flight are cancelled. */
  close(): void;
};

export interface RpcClientOptions {
  readonly tls: TlsMaterial;
  /** Who must answer at that address; the handshake fails otherwise. */
  readonly expectedPeer: ExpectedPeer;
  readonly maxReceiveMessageBytes?: number;
  /** HTTP/2 flow-control window: large windows let a pulled server stream run at memory speed. */
  readonly flowControlWindowBytes?: number;
  /** HTTP/2 pings on an idle-looking connection, so that a peer that froze or vanished ends our calls (default 15 s). */
  readonly keepaliveTimeMs?: number;
  /** How long a ping may go unanswered before the connection, and every call on it, is dropped (default 60 s). */
  readonly keepaliveTimeoutMs?: number;
}

/**
 * Keepalive: without it, a peer that freezes or whose network path breaks without a reset leaves our calls waiting
 * forever (TCP alone notices after hours), and a sync round holding its volume never ends. 15 s pings with 4x as long
 * to answer tolerate a busy peer's event loop and a slow link, yet end a dead peer's calls within about a minute.
 */
export const KEEPALIVE_TIME_MS = 15_000;
export const KEEPALIVE_TIMEOUT_MS = 60_000;

const DEFAULT_MAX_RECEIVE_BYTES = 8 * 1024 * 1024;
const DEFAULT_WINDOW_BYTES = 8 * 1024 * 1024;

export function createRpcClient<S extends GenServiceMethods>(
  service: GenService<S>,
  address: string,
  options: RpcClientOptions,
): RpcClient<S> {
  const client = new Client(address, channelCredentials(options.tls, options.expectedPeer), {
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_BYTES,
    "grpc.max_send_message_length": options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_BYTES,
    "grpc-node.flow_control_window": options.flowControlWindowBytes ?? DEFAULT_WINDOW_BYTES,
    // Never let grpc-js compress: payloads are already zstd frames or tiny control messages.
    "grpc.default_compression_algorithm": 0,
    // SNI must not be an IP address (RFC 6066); the name is never checked, the certificate identity is (see tls.ts).
    "grpc.ssl_target_name_override": "theseus-agent",
    "grpc.keepalive_time_ms": options.keepaliveTimeMs ?? KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": options.keepaliveTimeoutMs ?? KEEPALIVE_TIMEOUT_MS,
    // A long round is one call: pings must run while it streams, and between calls on a kept channel.
    "grpc.keepalive_permit_without_calls": 1,
  });
  const methods: Record<string, unknown> = { close: () => client.close() };
  for (const method of service.methods) methods[method.localName] = clientMethod(client, method, address);
  return methods as RpcClient<S>;
}

function clientMethod(client: Client, method: DescMethod, address: string): unknown {
  const path = methodPath(method);
  const serialize = serializer(method.input) as (value: unknown) => Buffer;
  const deserialize = deserializer(method.output);
  const context = `${method.parent.name}.${method.name} at ${address}`;

  switch (method.methodKind) {
    case "unary":
      return (request: unknown, options: CallOptions = {}) =>
        new Promise((resolve, reject) => {
          const call = client.makeUnaryRequest(path, serialize, deserialize, request, toMetadata(options), grpcOptions(options), (error: ServiceError | null, response?: unknown) => {
            cleanup();
            // Our own signal ended the call: its reason (a cancel, a passed deadline) is the error, not grpc's CANCELLED.
            if (error !== null) reject(options.signal?.aborted === true ? abortReason(options.signal) : fromServiceError(error, context));
            else resolve(response);
          });
          const cleanup = linkSignal(options.signal, () => call.cancel());
        });
    case "server_streaming":
      return (request: unknown, options: CallOptions = {}) =>
        readStream(client.makeServerStreamRequest(path, serialize, deserialize, request, toMetadata(options), grpcOptions(options)), options, context);
    case "client_streaming":
      return (requests: AsyncIterable<unknown>, options: CallOptions = {}) =>
        new Promise((resolve, reject) => {
          const call = client.makeClientStreamRequest(path, serialize, deserialize, toMetadata(options), grpcOptions(options), (error: ServiceError | null, response?: unknown) => {
            cleanup();
            // Our own signal ended the call: its reason (a cancel, a passed deadline) is the error, not grpc's CANCELLED.
            if (error !== null) reject(options.signal?.aborted === true ? abortReason(options.signal) : fromServiceError(error, context));
            else resolve(response);
          });
          const cleanup = linkSignal(options.signal, () => call.cancel());
          pump(requests, call, options.signal);
        });
    case "bidi_streaming":
      return (requests: AsyncIterable<unknown>, options: CallOptions = {}) => {
        const call = client.makeBidiStreamRequest(path, serialize, deserialize, toMetadata(options), grpcOptions(options));
        pump(requests, call, options.signal);
        return readStream(call, options, context);
      };
  }
}

interface CancellableReadable extends AsyncIterable<unknown> {
  cancel(): void;
}

async function* readStream(call: CancellableReadable, options: CallOptions, context: string): AsyncGenerator<unknown> {
  const cleanup = linkSignal(options.signal, () => call.cancel());
  let finished = false;
  try {
    for await (const message of call) {
      // Messages already buffered when the caller cancelled are dropped: after abort, nothing more is delivered.
      if (options.signal?.aborted === true) throw abortReason(options.signal);
      yield message;
    }
    finished = true;
  } catch (error) {
    if (options.signal?.aborted === true) throw abortReason(options.signal);
    throw fromServiceError(error, context);
  } finally {
    cleanup();
    // The consumer stopped early (break, throw): tell the server instead of leaving the stream half-open.
    if (!finished) call.cancel();
  }
}

/** Writes an AsyncIterable into a client stream, honouring backpressure; a failing source cancels the call. */
function pump(source: AsyncIterable<unknown>, call: ClientWritableStream<unknown> & { cancel(): void }, signal: AbortSignal | undefined): void {
  void (async () => {
    try {
      for await (const message of source) {
        if (!call.write(message)) await once(call, "drain", signal === undefined ? {} : { signal });
      }
      call.end();
    } catch (error) {
      call.destroy(TheseusError.from(error));
      call.cancel();
    }
  })();
}

function linkSignal(signal: AbortSignal | undefined, onAbort: () => void): () => void {
  if (signal === undefined) return () => undefined;
  if (signal.aborted) {
    onAbort();
    return () => undefined;
  }
  signal.addEventListener("abort", onAbort, { once: true });
  return () => signal.removeEventListener("abort", onAbort);
}

function toMetadata(options: CallOptions): Metadata {
  const metadata = new Metadata();
  for (const [key, value] of Object.entries(options.metadata ?? {})) metadata.set(key, value);
  return metadata;
}

function grpcOptions(options: CallOptions): GrpcCallOptions {
  return options.timeoutMs === undefined ? {} : { deadline: Date.now() + options.timeoutMs };
}
