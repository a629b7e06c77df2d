// The agent's endpoint admits only peers from its own CA, and only in the role that fits the service called.
import anyTest from "ava";
import type { TestFn } from "ava";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { createRpcClient } from "../rpc/index.js";
import type { Agent } from "../agent/index.js";
import { TheseusError } from "../common/index.js";
import { createThrowawayPki } from "../coordinator/index.js";
import { AgentService } from "../proto/gen/theseus/v1/agent_pb.js";
import { TransferService } from "../proto/gen/theseus/v1/transfer_pb.js";
import { createTestInstallation } from "./helpers/installation.js";
import type { TestInstallation } from "./helpers/installation.js";

const test = anyTest as TestFn<{ installation: TestInstallation; agent: Agent }>;

test.before(async (t) => {
  const installation = await createTestInstallation();
  const data = join(installation.dir, "data");
  await mkdir(data);
  t.context = { installation, agent: await installation.startAgent("eu-1", { data }) };
});

test.after.always(async (t) => {
  await t.context.installation.cleanup();
});

test("a coordinator from the agent's CA is served", async (t) => {
  const { installation, agent } = t.context;
  const client = createRpcClient(AgentService, agent.address, { tls: await installation.pki.material({ role: "coordinator", name: "alice" }), expectedPeer: { role: "agent", name: "eu-1" } });
  try {
    const info = await client.getInfo({});
    t.is(info.clusterName, "eu-1");
    t.deepEqual(info.volumes.map((v) => v.name), ["data"]);
  } finally {
    client.close();
  }
});

test("a client whose certificate comes from another CA is refused at the handshake", async (t) => {
  const { installation, agent } = t.context;
  const stranger = await (await createThrowawayPki()).material({ role: "coordinator", name: "alice" });
  const caPem = (await installation.pki.material({ role: "coordinator", name: "alice" })).caPem;
  // It trusts the agent (right CA) and differs from the served client of the first test only in its own certificate.
  const client = createRpcClient(AgentService, agent.address, { tls: { caPem, certPem: stranger.certPem, keyPem: stranger.keyPem }, expectedPeer: { role: "agent" } });
  try {
    const error = await t.throwsAsync(client.getInfo({}, { timeoutMs: 5000 }), { instanceOf: TheseusError });
    t.is(error?.code, "unavailable");
  } finally {
    client.close();
  }
});

test("a client without any certificate is refused at the handshake", async (t) => {
  const { installation, agent } = t.context;
  const material = await installation.pki.material({ role: "coordinator", name: "alice" });
  // Same CA to verify the server, but no client certificate to present.
  const client = createRpcClient(AgentService, agent.address, { tls: { caPem: material.caPem, certPem: "", keyPem: "" }, expectedPeer: { role: "agent" } });
  try {
    const error = await t.throwsAsync(client.getInfo({}, { timeoutMs: 5000 }), { instanceOf: TheseusError });
    t.is(error?.code, "unavailable");
    t.regex(error?.message ?? "", /alert certificate required/, "the server itself must demand a certificate");
  } finally {
    client.close();
  }
});

test("an agent certificate may not call the control service", async (t) => {
  const { installation, agent } = t.context;
  const client = createRpcClient(AgentService, agent.address, { tls: await installation.pki.material({ role: "agent", name: "us-2" }), expectedPeer: { role: "agent" } });
  try {
    const error = await t.throwsAsync(client.getInfo({}), { instanceOf: TheseusError });
    t.is(error?.code, "permission_denied");
    t.regex(error?.message ?? "", /agent "us-2" may not call theseus\.v1\.AgentService/);
  } finally {
    client.close();
  }
});

test("a coordinator certificate may not call the transfer service", async (t) => {
  const { installation, agent } = t.context;
  const client = createRpcClient(TransferService, agent.address, { tls: await installation.pki.material({ role: "coordinator", name: "alice" }), expectedPeer: { role: "agent" } });
  try {
    const stream = client.sync(
      (async function* () {
        yield { sessionId: "anything" };
      })(),
    );
    const error = await t.throwsAsync(async () => {
      for await (const _ of stream) t.fail("no data may flow");
    }, { instanceOf: TheseusError });
    t.is(error?.code, "permission_denied");
  } finally {
    client.close();
  }
});

test("a client refuses a server that is not the agent it expected", async (t) => {
  const { installation, agent } = t.context;
  const client = createRpcClient(AgentService, agent.address, { tls: await installation.pki.material({ role: "coordinator", name: "alice" }), expectedPeer: { role: "agent", name: "us-2" } });
  try {
    const error = await t.throwsAsync(client.getInfo({}, { timeoutMs: 5000 }), { instanceOf: TheseusError });
    t.is(error?.code, "unavailable");
    t.regex(error?.message ?? "", /expected agent "us-2" but the server is agent "eu-1"/);
  } finally {
    client.close();
  }
});
