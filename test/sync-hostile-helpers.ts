// A hostile peer against real `theseus-agent` processes: real mTLS gRPC with valid certificates of the installation,
// and frames crafted by hand. Two roles:
// - a hostile SOURCE: a TransferService served by this test process with the certificate of agent "eu-1"; the real
//   target agent ("us-2") is told by a coordinator call (SyncVolume) to pull from it;
// - a hostile TARGET: a client holding agent "us-2"'s certificate and a session the coordinator opened on the real
//   source agent ("eu-1"), sending its own SyncUp frames.
// Peak memory of an agent is read from the kernel (VmHWM), and can be reset between attacks (clear_refs).
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import crypto from "node:crypto";
import { randomUUID } from "node:crypto";
import { createLocalInstallation, loadTlsMaterial, spawnAgent } from "../coordinator/index.js";
import type { AgentProcess } from "../coordinator/index.js";
import { createRpcClient, createRpcServer } from "../rpc/index.js";
import type { CallContext, RpcServer, TlsMaterial } from "../rpc/index.js";
import { AgentService } from "../proto/gen/theseus/v1/agent_pb.js";
import type { RoundStats } from "../proto/gen/theseus/v1/agent_pb.js";
import { TransferService } from "../proto/gen/theseus/v1/transfer_pb.js";
import type { SyncUp } from "../proto/gen/theseus/v1/transfer_pb.js";
import { FrameDecoder, FrameEncoder, decodeFrameRecords, encodeRecord } from "../agent/sync/codec.js";
import type { Meta, SyncRecord } from "../agent/sync/codec.js";
import { TheseusError } from "../common/index.js";

export const META: Meta = { mode: 0o644, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, mtimeUs: 1_600_000_000_000_000 };
export const DIR_META: Meta = { ...META, mode: 0o755 };
export const sha = (b: Uint8Array | string): Buffer => crypto.createHash("sha256").update(b).digest();
export const ROOT: SyncRecord = { t: "dir", path: "", meta: DIR_META };
/** A source's first record (protocol 6): it holds no block lists. */
export const HELD_NONE: SyncRecord = { t: "lists_held", hashes: new Uint8Array(0), last: true };

/** Encodes records into frames of at most ~256 KiB each (as a real peer would batch them). */
export function framesOf(records: Iterable<SyncRecord>): Buffer[] {
  const enc = new FrameEncoder();
  let w = FrameEncoder.writer();
  const out: Buffer[] = [];
  for (const r of records) {
    encodeRecord(w, r);
    if (w.length >= 256 * 1024) {
      out.push(enc.encode(w).frame);
      w = FrameEncoder.writer();
    }
  }
  if (w.length > 0) out.push(enc.encode(w).frame);
  return out;
}

export interface World {
  readonly work: string;
  readonly pki: string;
  /** The coordinator's certificate. */
  readonly coordinator: TlsMaterial;
  readonly eu1: TlsMaterial;
  readonly us2: TlsMaterial;
  readonly agents: AgentProcess[];
  spawn(cluster: "eu-1" | "us-2", volumes: Record<string, string>): Promise<AgentProcess>;
  cleanup(): Promise<void>;
}

export async function createWorld(name: string): Promise<World> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `theseus-${name}-`));
  const pki = path.join(work, "pki");
  const coordinator = await createLocalInstallation(pki, { installation: "test", agentClusters: ["eu-1", "us-2"], coordinator: "test" });
  const eu1 = await loadTlsMaterial(pki, { role: "agent", name: "eu-1" });
  const us2 = await loadTlsMaterial(pki, { role: "agent", name: "us-2" });
  const agents: AgentProcess[] = [];
  let seq = 0;
  return {
    work,
    pki,
    coordinator,
    eu1,
    us2,
    agents,
    async spawn(cluster, volumes) {
      const a = await spawnAgent({ cluster, pkiDir: pki, volumes, stateDir: path.join(work, `state-${cluster}-${++seq}`), logLevel: process.env["AGENT_LOG"] ?? "warn", ...(process.env["AGENT_LOG"] === undefined ? {} : { logFile: process.stderr }) });
      agents.push(a);
      return a;
    },
    async cleanup() {
      await Promise.all(agents.map((a) => a.stop()));
      fs.rmSync(work, { recursive: true, force: true });
    },
  };
}

/** What a hostile source does with one Sync call: given the target's frames, the frames to answer. */
export type HostileSourceScript = (up: AsyncIterator<SyncUp>, ctx: CallContext) => AsyncIterable<Uint8Array>;

export interface HostileSource {
  readonly address: string;
  close(): Promise<void>;
}

/** A TransferService with agent eu-1's certificate that plays `script` on every Sync call. */
export async function startHostileSource(world: World, script: HostileSourceScript): Promise<HostileSource> {
  const server: RpcServer = createRpcServer({ tls: world.eu1 });
  server.add(
    TransferService,
    {
      async *sync(requests, ctx) {
        for await (const frame of script(requests[Symbol.asyncIterator](), ctx)) yield { frame };
      },
    },
    { allowedRoles: ["agent"] },
  );
  const port = await server.listen("127.0.0.1", 0);
  return { address: `127.0.0.1:${port}`, close: () => server.shutdown(500) };
}

/** Reads the target's frames until its index ended (keeps draining its load reports after), then answers `frames`. */
export function answerAfterIndex(frames: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): HostileSourceScript {
  return async function* (up) {
    // What every source sends first, so that a target with large files goes on with its index.
    yield* framesOf([HELD_NONE]);
    const decoder = new FrameDecoder();
    for (let ended = false; !ended; ) {
      const r = await up.next();
      if (r.done === true) return;
      ended = decodeFrameRecords(decoder.decode(r.value.frame)).some((rec) => rec.t === "index_end");
    }
    void (async () => {
      try {
        for (let r = await up.next(); r.done !== true; r = await up.next());
      } catch {
        // the call ended
      }
    })();
    yield* frames;
  };
}

/** Tells the real target agent to pull `volume` from `sourceAddress` (as agent eu-1); the round's stats or its error. */
export async function pull(
  world: World,
  target: AgentProcess,
  sourceAddress: string,
  volume: string,
  session: { sessionId: string; token: string } = { sessionId: "s", token: "t" },
  bandwidthBytesPerSecond = 0,
): Promise<{ stats: RoundStats | undefined; error: TheseusError | undefined }> {
  const client = createRpcClient(AgentService, target.address, { tls: world.coordinator, expectedPeer: { role: "agent", name: "us-2" } });
  try {
    let stats: RoundStats | undefined;
    for await (const ev of client.syncVolume({
      migrationId: randomUUID(),
      volume,
      sourceAddress,
      sourceCluster: "eu-1",
      sessionId: session.sessionId,
      token: session.token,
      round: 0,
      bandwidthBytesPerSecond: BigInt(bandwidthBytesPerSecond),
    })) {
      if (ev.event.case === "done") stats = ev.event.value;
    }
    return { stats, error: undefined };
  } catch (e) {
    return { stats: undefined, error: TheseusError.from(e) };
  } finally {
    client.close();
  }
}

/** Opens a transfer session on the real source agent for agent us-2 (as a coordinator does). */
export async function openSession(world: World, source: AgentProcess, volume: string, ttlSeconds = 0): Promise<{ sessionId: string; token: string }> {
  const client = createRpcClient(AgentService, source.address, { tls: world.coordinator, expectedPeer: { role: "agent", name: "eu-1" } });
  try {
    const s = await client.openSession({ migrationId: randomUUID(), volume, peerCluster: "us-2", ttlSeconds });
    return { sessionId: s.sessionId, token: s.token };
  } finally {
    client.close();
  }
}

export async function closeSession(world: World, source: AgentProcess, sessionId: string): Promise<void> {
  const client = createRpcClient(AgentService, source.address, { tls: world.coordinator, expectedPeer: { role: "agent", name: "eu-1" } });
  try {
    await client.closeSession({ sessionId });
  } finally {
    client.close();
  }
}

export async function setBandwidth(world: World, source: AgentProcess, volume: string, bytesPerSecond: number): Promise<void> {
  const client = createRpcClient(AgentService, source.address, { tls: world.coordinator, expectedPeer: { role: "agent", name: "eu-1" } });
  try {
    await client.setBandwidth({ migrationId: "m", volume, bytesPerSecond: BigInt(bytesPerSecond) });
  } finally {
    client.close();
  }
}

/** A hostile target's Sync call on the real source agent: its own messages up, the source's frames down. */
export function hostileSync(
  world: World,
  source: AgentProcess,
  token: string,
  up: AsyncIterable<{ sessionId?: string; bandwidthBytesPerSecond?: bigint; frame: Uint8Array }>,
  signal?: AbortSignal,
): { frames: AsyncIterable<Uint8Array>; close(): void } {
  const client = createRpcClient(TransferService, source.address, { tls: world.us2, expectedPeer: { role: "agent", name: "eu-1" } });
  const stream = client.sync(up, { metadata: { "theseus-session-token": token }, ...(signal === undefined ? {} : { signal }) });
  return {
    frames: (async function* () {
      for await (const m of stream) yield m.frame;
    })(),
    close: () => client.close(),
  };
}

/** Decodes the records of frames as they come. */
export async function* recordsOf(frames: AsyncIterable<Uint8Array>): AsyncGenerator<SyncRecord> {
  const decoder = new FrameDecoder();
  for await (const f of frames) yield* decodeFrameRecords(decoder.decode(f));
}

/** Peak resident memory of a process since it started or since resetPeak (MiB), from the kernel. */
export function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  if (m === null) throw new Error(`no VmHWM for ${pid}`);
  return Number(m[1]) / 1024;
}

export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  if (m === null) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) / 1024;
}

/** Resets the kernel's peak RSS of `pid` to its current RSS (Linux >= 4.0). */
export function resetPeak(pid: number): void {
  fs.writeFileSync(`/proc/${pid}/clear_refs`, "5");
}

/** A queue of up messages a test pushes as it goes. */
export function pushable<T>(): { iterable: AsyncIterable<T>; push(v: T): void; end(): void } {
  const items: T[] = [];
  let ended = false;
  let wake: (() => void) | undefined;
  return {
    push(v) {
      items.push(v);
      wake?.();
    },
    end() {
      ended = true;
      wake?.();
    },
    iterable: (async function* () {
      for (;;) {
        while (items.length > 0) yield items.shift() as T;
        if (ended) return;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    })(),
  };
}
