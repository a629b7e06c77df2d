// A partition on 127.0.0.1 that a test can cut and heal per link: a TCP proxy in front of an agent that tells its
// clients apart by the process that owns the connecting socket (the coordinator and the peer agent dial the same
// registered address, so the address cannot tell them apart; the kernel's socket table can).
//
// Why not network namespaces: the agents must reach their clusters' API servers, which listen on the host's
// 127.0.0.1; an agent moved into a namespace of its own would need a forwarder back to them, and the only addresses a
// test may use are 127.0.0.0/8 and those inside namespaces it creates. So the substitution is this proxy; the
// partition semantics are kept: "drop" black-holes both directions of the link's connections (TCP stalls, calls hit
// their deadlines, nothing is refused), "refuse" resets them (as an ICMP unreachable would), "heal" lets new
// connections through and resets the stalled ones (as TCP eventually does after a long partition).
import { readFile, readlink, readdir } from "node:fs/promises";
import { createServer, connect } from "node:net";
import type { Server, Socket } from "node:net";

export type LinkState = "open" | "drop" | "refuse";

export interface CuttableProxy {
  readonly port: number;
  readonly address: string;
  /** Sets a link's state; `who` is a client's name as `classify` returns it. */
  set(who: string, state: LinkState): void;
  /** Connections accepted per client name (to prove a link was used and cut). */
  readonly stats: Record<string, { accepted: number; dropped: number; refused: number }>;
  close(): Promise<void>;
}

interface Pair {
  readonly who: string;
  readonly client: Socket;
  readonly upstream: Socket;
}

/**
 * Proxies 127.0.0.1:PORT (0: any) to `upstreamPort`; `pids()` names the client processes to tell apart (name → pid);
 * a connection from any other process is "other".
 */
export async function startProxy(upstreamPort: number, pids: () => Readonly<Record<string, number | undefined>>, port = 0): Promise<CuttableProxy> {
  const states = new Map<string, LinkState>();
  const pairs = new Set<Pair>();
  const stats: Record<string, { accepted: number; dropped: number; refused: number }> = {};
  const count = (who: string): { accepted: number; dropped: number; refused: number } => (stats[who] ??= { accepted: 0, dropped: 0, refused: 0 });

  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    void (async () => {
      const who = await ownerOf(client.remotePort ?? 0, client.localPort ?? 0, pids()).catch(() => "other");
      count(who).accepted++;
      const state = states.get(who) ?? "open";
      if (state === "refuse") {
        count(who).refused++;
        client.resetAndDestroy();
        return;
      }
      const upstream = connect({ host: "127.0.0.1", port: upstreamPort });
      const pair: Pair = { who, client, upstream };
      pairs.add(pair);
      const end = (): void => {
        pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on("error", end).on("close", end);
      upstream.on("error", end).on("close", end);
      upstream.once("connect", () => {
        client.pipe(upstream);
        upstream.pipe(client);
        if (state === "drop") stall(pair);
        else client.resume();
      });
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  const actualPort = typeof address === "object" && address !== null ? address.port : port;

  function stall(pair: Pair): void {
    count(pair.who).dropped++;
    // Stop reading both ways: the kernel buffers fill, the peers' writes stall, nothing is closed.
    pair.client.unpipe(pair.upstream);
    pair.upstream.unpipe(pair.client);
    pair.client.pause();
    pair.upstream.pause();
  }

  return {
    port: actualPort,
    address: `127.0.0.1:${actualPort}`,
    stats,
    set(who, state) {
      const before = states.get(who) ?? "open";
      states.set(who, state);
      for (const pair of [...pairs].filter((p) => p.who === who)) {
        if (state === "drop") stall(pair);
        else if (state === "refuse" || before === "drop") {
          pair.client.resetAndDestroy();
          pair.upstream.destroy();
        }
      }
    },
    async close() {
      for (const p of pairs) {
        p.client.destroy();
        p.upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Which of the named processes owns the client socket bound to 127.0.0.1:remotePort (Linux /proc). */
async function ownerOf(remotePort: number, proxyPort: number, pids: Readonly<Record<string, number | undefined>>): Promise<string> {
  const inode = await socketInode(remotePort, proxyPort);
  if (inode === undefined) return "other";
  for (const [name, pid] of Object.entries(pids)) {
    if (pid === undefined) continue;
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
      if (link === `socket:[${inode}]`) return name;
    }
  }
  return "other";
}

async function socketInode(localPort: number, remotePort: number): Promise<string | undefined> {
  const hex = (port: number): string => port.toString(16).toUpperCase().padStart(4, "0");
  const hexPort = hex(localPort);
  const hexRemote = hex(remotePort);
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await readFile(table, "utf8").catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      const local = cols[1];
      if (local?.endsWith(`:${hexPort}`) === true && cols[2]?.endsWith(`:${hexRemote}`) === true && cols[9] !== undefined && cols[9] !== "0") return cols[9];
    }
  }
  return undefined;
}
