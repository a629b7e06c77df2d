// The RPC adapter's contract: server streams honour backpressure, cancellation reaches the handler's AbortSignal, and
// a TheseusError thrown by a handler arrives at the client with its code and hint.
import test from "ava";
import { createRpcClient, createRpcServer } from "../rpc/index.js";
import type { Implementation, RpcServer, TlsMaterial } from "../rpc/index.js";
import { TheseusError } from "../common/index.js";
import { createThrowawayPki } from "../coordinator/index.js";
import { AgentService } from "../proto/gen/theseus/v1/agent_pb.js";

interface Probe {
  produced: number;
  aborted: Promise<unknown>;
}

async function serve(impl: Partial<Implementation<typeof AgentService>>): Promise<{ server: RpcServer; address: string; coordinator: TlsMaterial }> {
  const pki = await createThrowawayPki();
  const server = createRpcServer({ tls: await pki.material({ role: "agent", name: "eu-1" }) });
  const unimplemented = async (): Promise<never> => {
    throw new TheseusError("internal", "not part of this test");
  };
  const base: Implementation<typeof AgentService> = {
    getInfo: unimplemented,
    openSession: unimplemented,
    closeSession: unimplemented,
    syncVolume: async function* () {},
    setBandwidth: unimplemented,
    discover: async function* () {},
    describeCluster: unimplemented,
    stage: unimplemented,
    unstage: unimplemented,
    quiesce: unimplemented,
    unquiesce: unimplemented,
    activate: unimplemented,
    exportVolume: async function* () {},
    importVolume: unimplemented,
  };
  server.add(AgentService, { ...base, ...impl }, { allowedRoles: ["coordinator"] });
  const port = await server.listen("127.0.0.1", 0);
  return { server, address: `127.0.0.1:${port}`, coordinator: await pki.material({ role: "coordinator", name: "t" }) };
}

test("a server stream stops producing while the client does not read, and cancellation aborts the handler", async (t) => {
  let resolveAborted: (reason: unknown) => void = () => undefined;
  const probe: Probe = { produced: 0, aborted: new Promise((resolve) => (resolveAborted = resolve)) };
  // Big messages fill the socket buffers and the flow-control window after a few dozen; tiny ones would take 100k.
  const payload = new Uint8Array(256 * 1024);
  const { server, address, coordinator } = await serve({
    async *syncVolume(_request, ctx) {
      ctx.signal.addEventListener("abort", () => resolveAborted(ctx.signal.reason));
      for (;;) {
        probe.produced++;
        yield { event: { case: "done", value: { round: probe.produced, sourceDigest: payload } } };
      }
    },
  });
  const client = createRpcClient(AgentService, address, { tls: coordinator, expectedPeer: { role: "agent" }, flowControlWindowBytes: 64 * 1024 });
  const controller = new AbortController();
  try {
    const stream = client.syncVolume({ volume: "v" }, { signal: controller.signal })[Symbol.asyncIterator]();
    const first = await stream.next();
    t.false(first.done);
    // Stop reading: the producer must stall once the transport's buffers are full, however long we wait.
    let stalledAt = -1;
    for (let waited = 0; waited < 10_000 && stalledAt !== probe.produced; waited += 250) {
      stalledAt = probe.produced;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    t.is(probe.produced, stalledAt, "the producer never stalled while nobody read");
    t.true(stalledAt * payload.length < 128 * 1024 * 1024, `${stalledAt} messages of 256 KiB were buffered`);
    controller.abort();
    const reason = await probe.aborted;
    t.true(reason instanceof TheseusError && reason.code === "cancelled");
    await t.throwsAsync(stream.next(), { instanceOf: TheseusError });
  } finally {
    client.close();
    await server.shutdown(100);
  }
});

test("a handler's TheseusError reaches the client with its code and hint", async (t) => {
  const { server, address, coordinator } = await serve({
    async getInfo() {
      throw new TheseusError("resource_exhausted", "disk full on the target", { hint: "grow the volume" });
    },
  });
  const client = createRpcClient(AgentService, address, { tls: coordinator, expectedPeer: { role: "agent" } });
  try {
    const error = await t.throwsAsync(client.getInfo({}), { instanceOf: TheseusError });
    t.is(error?.code, "resource_exhausted");
    t.regex(error?.message ?? "", /disk full on the target/);
    t.is(error?.hint, "grow the volume");
  } finally {
    client.close();
    await server.shutdown(100);
  }
});

test("a client stream's handler keeps a live signal after the client's last message, and cancelling aborts it", async (t) => {
  let resolveAborted: (reason: unknown) => void = () => undefined;
  const aborted = new Promise((resolve) => (resolveAborted = resolve));
  const { server, address, coordinator } = await serve({
    async stage(requests, ctx) {
      ctx.signal.addEventListener("abort", () => resolveAborted(ctx.signal.reason));
      const names: string[] = [];
      for await (const request of requests) if (request.item.case === "objectJson") names.push(request.item.value);
      // Long work after the request stream ended (Stage waits for claims to bind) must not see a cancelled signal.
      await new Promise((resolve) => setTimeout(resolve, 200));
      if (ctx.signal.aborted) throw new TheseusError("cancelled", "the signal fired after the last message");
      return { objects: names.map((name) => ({ ref: { name }, action: "created" })) };
    },
  });
  const client = createRpcClient(AgentService, address, { tls: coordinator, expectedPeer: { role: "agent" } });
  try {
    async function* messages(): AsyncGenerator<{ item: { case: "header"; value: { migrationId: string } } | { case: "objectJson"; value: string } }> {
      yield { item: { case: "header", value: { migrationId: "m" } } };
      for (const name of ["a", "b", "c"]) yield { item: { case: "objectJson", value: name } };
    }
    const response = await client.stage(messages());
    t.deepEqual(response.objects.map((o) => o.ref?.name), ["a", "b", "c"]);

    const controller = new AbortController();
    async function* endless(): AsyncGenerator<{ item: { case: "header"; value: { migrationId: string } } }> {
      yield { item: { case: "header", value: { migrationId: "m" } } };
      await new Promise(() => undefined);
    }
    const pending = client.stage(endless(), { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 200));
    controller.abort();
    await t.throwsAsync(pending);
    const reason = await aborted;
    t.true(reason instanceof TheseusError && reason.code === "cancelled");
  } finally {
    client.close();
    await server.shutdown(100);
  }
});

test("a call whose deadline passes fails with deadline_exceeded, not cancelled, and the handler's signal fires", async (t) => {
  let calls = 0;
  let resolveAborted: () => void = () => undefined;
  const aborted = new Promise<void>((resolve) => (resolveAborted = resolve));
  const { server, address, coordinator } = await serve({
    async getInfo(_request, ctx) {
      // The first call only opens the connection, so that the deadlines below run out in the handler, not the handshake.
      if (++calls === 1) return {};
      ctx.signal.addEventListener("abort", () => resolveAborted());
      await new Promise(() => undefined);
      return {};
    },
  });
  const client = createRpcClient(AgentService, address, { tls: coordinator, expectedPeer: { role: "agent" } });
  try {
    await client.getInfo({});
    const byTimeout = await t.throwsAsync(client.getInfo({}, { timeoutMs: 1000 }), { instanceOf: TheseusError });
    t.is(byTimeout?.code, "deadline_exceeded");
    await aborted;
    const bySignal = await t.throwsAsync(client.getInfo({}, { signal: AbortSignal.timeout(1000) }), { instanceOf: TheseusError });
    t.is(bySignal?.code, "deadline_exceeded");
  } finally {
    client.close();
    await server.shutdown(100);
  }
});
