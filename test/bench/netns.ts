// The benchmark runs inside a network namespace of its own, so that its loopback carries nothing but the contenders'
// traffic, and an HTB qdisc on that loopback separates "the wire" from the rest: class 1:2 receives the traffic that
// would cross the network between two clusters (the stunnel-to-stunnel TLS connection; for Theseus everything, since
// its agents talk only to each other), class 1:1 the rest (the plain-text legs between rsync and stunnel, which in
// Crane, MTC and VolSync stay inside a pod). Class 1:2's counter measures every contender's wire bytes the same way
// (every packet, both directions, TCP/IP headers included) at no CPU cost to a contender, which a counting proxy could
// not; and shaping that class to 200 Mbit/s gives the shaped link without slowing the legs that stay local.
// (This kernel has HTB, TBF and u32 but no prio qdisc, flower or gact: the design uses only the former.)
import { spawn } from "node:child_process";
import { run } from "./exec.js";

export const NETNS_ENV = "THESEUS_BENCH_NETNS";
const PREFIX = "theseus-bench-";
// "Unlimited" must not throttle at all: HTB's default burst at 100 Gbit/s is ~0, which makes it hold back nearly every
// 64 KiB segment for a timer tick (measured: most packets "overlimits"). A 64 MB bucket refilled at 100 Gbit/s never
// empties at loopback speeds (< 5 GB/s here), so the class is a pure counter.
const UNLIMITED = ["rate", "100gbit", "ceil", "100gbit", "burst", "64mb", "cburst", "64mb"];

/** Which traffic of a contender is its wire: the connection to one TCP port, all of it, or none (a local pipe). */
export type WireSelector = { readonly port: number } | "all" | "none";

export interface Link {
  /** Routes the contender's wire traffic into the counted (and possibly shaped) class. */
  select(wire: WireSelector): Promise<void>;
  /** Bytes the wire class has carried so far. */
  bytes(): Promise<number>;
  /** Packets the qdisc has held back so far: must not grow while the link is not shaped. */
  overlimits(): Promise<number>;
  /** Limits the wire class to `rateBitsPerSecond`, or lifts the limit (undefined). */
  shape(rateBitsPerSecond: number | undefined): Promise<void>;
}

async function tc(args: readonly string[]): Promise<string> {
  const done = await run("tc", args);
  if (done.code !== 0) throw new Error(`tc ${args.join(" ")}: ${done.stderr.trim()}`);
  return done.stdout;
}

/** Sets up the loopback's classes; call inside the namespace. */
export async function createLink(): Promise<Link> {
  await run("tc", ["qdisc", "del", "dev", "lo", "root"]);
  await tc(["qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "1"]);
  for (const classid of ["1:1", "1:2"]) {
    await tc(["class", "add", "dev", "lo", "parent", "1:", "classid", classid, "htb", ...UNLIMITED, "quantum", "65536"]);
  }
  const filter = (match: string[]): Promise<string> =>
    tc(["filter", "add", "dev", "lo", "parent", "1:", "protocol", "all", "prio", "1", "u32", ...match, "flowid", "1:2"]);
  return {
    async select(wire) {
      await run("tc", ["filter", "del", "dev", "lo", "parent", "1:", "prio", "1"]);
      if (wire === "none") return;
      if (wire === "all") {
        await filter(["match", "u32", "0", "0"]);
        return;
      }
      await filter(["match", "ip", "sport", String(wire.port), "0xffff"]);
      await filter(["match", "ip", "dport", String(wire.port), "0xffff"]);
    },
    async bytes() {
      const text = await tc(["-s", "class", "show", "dev", "lo", "classid", "1:2"]);
      const match = /Sent (\d+) bytes/.exec(text);
      if (match?.[1] === undefined) throw new Error(`cannot read the wire counter from tc: ${text}`);
      return Number(match[1]);
    },
    async overlimits() {
      const text = await tc(["-s", "qdisc", "show", "dev", "lo"]);
      return Number(/overlimits (\d+)/.exec(text)?.[1] ?? 0);
    },
    async shape(rate) {
      const limit = rate === undefined
        ? UNLIMITED
        // A 256 KiB burst (more than one 64 KiB loopback segment), as `tbf ... burst 256kb` would have.
        : ["rate", `${Math.round(rate / 1000)}kbit`, "ceil", `${Math.round(rate / 1000)}kbit`, "burst", "256kb", "cburst", "256kb"];
      await tc(["class", "change", "dev", "lo", "parent", "1:", "classid", "1:2", "htb", ...limit, "quantum", "65536"]);
      if (rate === undefined) {
        await run("tc", ["qdisc", "del", "dev", "lo", "parent", "1:2", "handle", "20:"]);
      } else {
        // The queue `tbf ... latency 50ms` would allow (50 ms at the rate, plus the burst), tail-dropped beyond, instead of
        // the default 1000-packet fifo: 64 MB, seconds of buffering no real link has.
        const limitBytes = Math.round((rate / 8) * 0.05) + 256 * 1024;
        await tc(["qdisc", "replace", "dev", "lo", "parent", "1:2", "handle", "20:", "bfifo", "limit", String(limitBytes)]);
      }
    },
  };
}

/**
 * Re-runs this benchmark inside a fresh namespace and removes the namespace afterwards, whatever happens. Returns the
 * inner run's exit code, or a reason when no namespace can be made here (not root, no CAP_SYS_ADMIN, no `ip`).
 */
export async function runInNamespace(argv: readonly string[]): Promise<{ code: number } | { unavailable: string }> {
  await removeStaleNamespaces();
  const name = `${PREFIX}${process.pid}`;
  const added = await run("ip", ["netns", "add", name]).catch((error: unknown) => ({ code: 1, stderr: String(error) }));
  if (added.code !== 0) return { unavailable: `ip netns add failed: ${added.stderr.trim()}` };
  try {
    const up = await run("ip", ["-n", name, "link", "set", "lo", "up"]);
    if (up.code !== 0) return { unavailable: `cannot bring up the namespace's loopback: ${up.stderr.trim()}` };
    const child = spawn("ip", ["netns", "exec", name, process.execPath, ...argv], {
      stdio: "inherit",
      env: { ...process.env, [NETNS_ENV]: name },
    });
    const forward = (signal: NodeJS.Signals): void => {
      child.kill(signal);
    };
    process.on("SIGINT", forward);
    process.on("SIGTERM", forward);
    const code = await new Promise<number>((resolve) => child.on("close", (c) => resolve(c ?? 1)));
    process.off("SIGINT", forward);
    process.off("SIGTERM", forward);
    return { code };
  } finally {
    await deleteNamespace(name);
  }
}

/** Ends what is still running in the namespace (only the benchmark's own processes can be there), then removes it. */
async function deleteNamespace(name: string): Promise<void> {
  const pids = await run("ip", ["netns", "pids", name]);
  for (const pid of pids.stdout.split(/\s+/).filter(Boolean).map(Number)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  await run("ip", ["netns", "del", name]);
}

/** Namespaces left by a benchmark that was killed outright (its pid is in the name and no longer runs). */
async function removeStaleNamespaces(): Promise<void> {
  const list = await run("ip", ["netns", "list"]).catch(() => undefined);
  for (const line of list?.stdout.split("\n") ?? []) {
    const name = line.split(/\s/)[0] ?? "";
    if (!name.startsWith(PREFIX)) continue;
    const pid = Number(name.slice(PREFIX.length));
    if (Number.isInteger(pid) && !isAlive(pid)) await deleteNamespace(name);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
