// The server half of the adapter: protobuf-es services served by grpc-js, with handlers written as plain async
// functions and async generators (STYLE.md habit 2), an AbortSignal per call, and the caller's certificate identity
// checked against the roles allowed to call each service before any handler runs.
import { Server } from "@grpc/grpc-js";
import type {
  Metadata,
  ServerDuplexStream,
  ServerReadableStream,
  ServerUnaryCall,
  ServerWritableStream,
  UntypedHandleCall,
  sendUnaryData,
} from "@grpc/grpc-js";
import type { DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { once } from "node:events";
import { TheseusError, silentLogger } from "../common/index.js";
import type { Logger } from "../common/index.js";
import { KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS } from "./client.js";
import { methodDefinition } from "./codec.js";
import { describeIdentity, identityOfCertificate } from "./identity.js";
import type { PeerIdentity, Role } from "./identity.js";
import { toStatus } from "./status.js";
import { serverCredentials } from "./tls.js";
import type { TlsMaterial } from "./tls.js";

export interface CallContext {
  /** Fires when the client cancels, its deadline passes, the connection drops or the server shuts down. */
  readonly signal: AbortSignal;
  /** Who called, from the client certificate (already checked against the service's allowed roles). */
  readonly peer: PeerIdentity;
  /** Request metadata, first value per key; binary keys are left out. */
  readonly metadata: Readonly<Record<string, string>>;
  /**
   * Ends the call from the server's side, now, with `reason` as its status: aborts `signal` (so the handler's work
   * stops) and, for streams, sends the status at once, whatever the handler is waiting for (a peer that never sends
   * or never reads). What revokes a call's authority after it started (a closed or expired session) uses this.
   */
  cancel(reason: TheseusError): void;
}

type MethodInfo = Pick<DescMethod, "input" | "output" | "methodKind">;
type In<M extends MethodInfo> = MessageShape<M["input"]>;
type Out<M extends MethodInfo> = MessageInitShape<M["output"]>;

export type MethodImpl<M extends MethodInfo> = M["methodKind"] extends "unary"
  ? (request: In<M>, ctx: CallContext) => Promise<Out<M>>
  : M["methodKind"] extends "server_streaming"
    ? (request: In<M>, ctx: CallContext) => AsyncIterable<Out<M>>
    : M["methodKind"] extends "client_streaming"
      ? (requests: AsyncIterable<In<M>>, ctx: CallContext) => Promise<Out<M>>
      : (requests: AsyncIterable<In<M>>, ctx: CallContext) => AsyncIterable<Out<M>>;

export type ServiceImpl<S extends GenServiceMethods> = { [K in keyof S]: MethodImpl<S[K]> };

/** The implementation type of a generated service: `Implementation<typeof AgentService>`. */
export type Implementation<T> = T extends GenService<infer S> ? ServiceImpl<S> : never;

export interface ServiceOptions {
  /** Roles whose certificates may call this service; everyone else gets PERMISSION_DENIED. */
  readonly allowedRoles: readonly Role[];
}

export interface RpcServerOptions {
  readonly tls: TlsMaterial;
  readonly logger?: Logger;
  /** Largest message accepted; callers chunk bulk data below it. */
  readonly maxReceiveMessageBytes?: number;
  /** The server pings each client connection this often (default 15 s, as clients do). */
  readonly keepaliveTimeMs?: number;
  /** A ping unanswered this long drops the connection, cancelling its calls (default 60 s). */
  readonly keepaliveTimeoutMs?: number;
}

export interface RpcServer {
  add<S extends GenServiceMethods>(service: GenService<S>, impl: ServiceImpl<S>, options: ServiceOptions): void;
  /** Binds and starts serving; returns the bound port (useful with port 0). */
  listen(host: string, port: number): Promise<number>;
  /** Stops accepting, lets in-flight calls finish for up to graceMs, then cancels them. */
  shutdown(graceMs?: number): Promise<void>;
  /** Serves new connections with new TLS material (a rotated certificate), without a restart. */
  updateTls(material: TlsMaterial): void;
}

const DEFAULT_MAX_RECEIVE_BYTES = 8 * 1024 * 1024;

export function createRpcServer(options: RpcServerOptions): RpcServer {
  const logger = options.logger ?? silentLogger();
  const server = new Server({
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_BYTES,
    "grpc.max_send_message_length": options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_BYTES,
    // The server side of keepalive matters most: a round's source is a server whose client (the target) may freeze
    // or vanish; the ping timeout then closes the connection, which cancels the call and ends the round, releasing
    // the volume for the next one (see client.ts for the values).
    "grpc.keepalive_time_ms": options.keepaliveTimeMs ?? KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": options.keepaliveTimeoutMs ?? KEEPALIVE_TIMEOUT_MS,
  });
  const credentials = serverCredentials(options.tls);

  return {
    add(service, impl, serviceOptions) {
      const definitions: Record<string, ReturnType<typeof methodDefinition>> = {};
      const handlers: Record<string, UntypedHandleCall> = {};
      for (const method of service.methods) {
        definitions[method.localName] = methodDefinition(method);
        const fn = (impl as Record<string, unknown>)[method.localName];
        if (typeof fn !== "function") throw new TheseusError("internal", `no implementation for ${method.parent.typeName}.${method.name}`);
        handlers[method.localName] = handlerFor(method, fn as AnyImpl, serviceOptions, logger);
      }
      server.addService(definitions, handlers);
    },

    updateTls(material) {
      credentials.update(material);
    },

    listen(host, port) {
      return new Promise((resolve, reject) => {
        server.bindAsync(`${host}:${port}`, credentials, (error, boundPort) => {
          if (error !== null) reject(TheseusError.from(error, "unavailable"));
          else resolve(boundPort);
        });
      });
    },

    async shutdown(graceMs = 5000) {
      const graceful = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
      });
      await Promise.race([graceful, deadline]);
      clearTimeout(timer);
    },
  };
}

type AnyImpl = (request: unknown, ctx: CallContext) => unknown;
// Every grpc-js server call is an EventEmitter with the auth context and metadata; that is all contextOf needs.
interface AnyCall extends Pick<ServerUnaryCall<unknown, unknown>, "metadata" | "getAuthContext"> {
  on(event: "cancelled" | "close", listener: () => void): unknown;
}

function handlerFor(method: DescMethod, fn: AnyImpl, options: ServiceOptions, logger: Logger): UntypedHandleCall {
  const name = `${method.parent.typeName}/${method.name}`;
  const fail = (error: unknown): void => {
    const e = TheseusError.from(error);
    if (e.code === "internal") logger.error({ method: name, err: e }, "call failed");
    else logger.debug({ method: name, code: e.code, msg: e.message }, "call refused or failed");
  };

  switch (method.methodKind) {
    case "unary":
      return (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
        void (async () => {
          try {
            const ctx = contextOf(call, options, name);
            callback(null, await fn(call.request, ctx));
          } catch (error) {
            fail(error);
            callback(toStatus(error));
          }
        })();
      };
    case "client_streaming":
      return (call: ServerReadableStream<unknown, unknown>, callback: sendUnaryData<unknown>) => {
        void (async () => {
          try {
            // The request stream closes when the client has sent its last message, which is no cancellation.
            const ctx = contextOf(call, options, name, { closeCancels: false });
            callback(null, await fn(call, ctx));
          } catch (error) {
            fail(error);
            callback(toStatus(error));
          }
        })();
      };
    case "server_streaming":
    case "bidi_streaming":
      return (call: ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>) => {
        void (async () => {
          let ctx: CallContext | undefined;
          try {
            ctx = contextOf(call, options, name, { endStream: true });
            // The client's half-close (its last message sent) ends the requests, not the call: a readable's default
            // iterator destroys the stream when it finishes, which closed the call under the handler still answering
            // (its status never sent, the call open for ever). The handler's answer ends the call.
            const input =
              method.methodKind === "bidi_streaming"
                ? (call as ServerDuplexStream<unknown, unknown>).iterator({ destroyOnReturn: false })
                : (call as ServerWritableStream<unknown, unknown>).request;
            for await (const message of fn(input, ctx) as AsyncIterable<unknown>) {
              // Backpressure: a slow client must slow the producer down, never make us buffer without bound.
              if (!call.write(message)) await once(call, "drain", { signal: ctx.signal });
            }
            call.end();
          } catch (error) {
            fail(error);
            if (ctx?.signal.aborted !== true) call.emit("error", toStatus(error));
          }
        })();
      };
  }
}

function contextOf(call: AnyCall, options: ServiceOptions, name: string, { closeCancels = true, endStream = false } = {}): CallContext {
  const controller = new AbortController();
  call.on("cancelled", () => controller.abort(new TheseusError("cancelled", `${name} was cancelled by the client`)));
  // For streams we write, a client that vanishes shows up as the stream closing before we ended it.
  if (closeCancels) call.on("close", () => controller.abort(new TheseusError("cancelled", `${name}: the call closed`)));
  const peer = identityOfCertificate(call.getAuthContext().sslPeerCertificate);
  if (peer === undefined) {
    throw new TheseusError("unauthenticated", "the client certificate carries no Theseus identity", {
      hint: "issue client certificates with `theseus certs issue`",
    });
  }
  if (!options.allowedRoles.includes(peer.role)) {
    throw new TheseusError("permission_denied", `${describeIdentity(peer)} may not call ${name}`, {
      hint: `only ${options.allowedRoles.join(" or ")} certificates may call this service`,
    });
  }
  const cancel = (reason: TheseusError): void => {
    if (controller.signal.aborted) return;
    controller.abort(reason);
    if (!endStream) return; // a unary handler answers through its callback once the signal stops its work
    // The handler's catch sees the signal aborted and stays silent, so the status is sent here, once, and at once.
    // Emitting "error" would end the stream only after the messages buffered for a peer that does not read (maybe
    // never), and a status sent while messages are still buffered makes grpc-js fail their writes and the stream
    // stall. So: drop what is buffered (destroying grpc-js's stream wrapper stops its writes, nothing else), then send
    // the status through the call the wrapper keeps in its undeclared `call` field.
    const status = toStatus(reason);
    const wrapper = call as unknown as { destroy?: () => void; emit(event: "error", s: typeof status): void; call?: { sendStatus?: (s: typeof status) => void } };
    const inner = wrapper.call;
    if (typeof inner?.sendStatus === "function" && typeof wrapper.destroy === "function") {
      wrapper.destroy();
      inner.sendStatus(status);
    } else wrapper.emit("error", status);
  };
  return { signal: controller.signal, peer, metadata: flattenMetadata(call.metadata), cancel };
}

function flattenMetadata(metadata: Metadata): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [key, values] of Object.entries(metadata.getMap())) {
    if (typeof values === "string") result[key] = values;
  }
  return result;
}
