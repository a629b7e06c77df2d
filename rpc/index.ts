// The RPC component: protobuf-es services over grpc-js with mutual TLS 1.3 and certificate identities.
export { KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS, createRpcClient } from "./client.js";
export type { CallOptions, ClientMethod, RpcClient, RpcClientOptions } from "./client.js";
export { createRpcServer } from "./server.js";
export type { CallContext, Implementation, MethodImpl, RpcServer, RpcServerOptions, ServiceImpl, ServiceOptions } from "./server.js";
export { describeIdentity, identityOfCertificate, identityUri, parseIdentityUri, validateIdentityName } from "./identity.js";
export type { PeerIdentity, Role } from "./identity.js";
export type { ExpectedPeer, TlsMaterial } from "./tls.js";
