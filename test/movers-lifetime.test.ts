// The mover pool's life cycle without a cluster (an in-memory API server whose pods serve at once): a migration's
// rounds of one claim share one mover pod until the migration ends, a copy's round gets a pod of its own, a kept
// mover whose pod is deleted is replaced by the next round, and the limit on running movers can neither deadlock a
// migration of more claims than it (an idle kept mover gives its slot up) nor be exceeded after a failed start.
// test/movers.test.ts proves the same on real local clusters, pods counted from the API servers' watches.
import anyTest from "ava";
import { createMoverAccess } from "../agent/cluster/index.js";
import type { MoverHandle, VolumeAccess } from "../agent/cluster/index.js";
import type { KubeObject, ObjectRef, ServedResource } from "../app-model/index.js";
import { TheseusError, silentLogger, sleep } from "../common/index.js";
import type { KubeObjects } from "../kube/index.js";

const test = anyTest;

/** Pods and Secrets in memory; a pod is Running and Ready as soon as it is created. Counts what it was asked to do. */
class FakeApi {
  readonly objects = new Map<string, KubeObject>();
  readonly podsCreated: string[] = [];
  /** The most mover pods that existed at once. */
  maxPods = 0;
  failNextPodCreate = false;
  #uid = 0;

  static key(ref: { kind: string; namespace: string; name: string }): string {
    return `${ref.kind}/${ref.namespace}/${ref.name}`;
  }

  pods(): KubeObject[] {
    return [...this.objects.values()].filter((o) => o.kind === "Pod");
  }

  secrets(): KubeObject[] {
    return [...this.objects.values()].filter((o) => o.kind === "Secret");
  }

  api(): KubeObjects {
    const get = async (ref: ObjectRef): Promise<KubeObject | undefined> => this.objects.get(FakeApi.key(ref));
    return {
      rest: undefined as never,
      discovery: () => Promise.reject(new Error("not in the fake")),
      resourceFor: async (apiVersion, kind) => ({ apiVersion, kind }) as unknown as ServedResource,
      list: async (resource, options) => {
        const { kind } = resource as unknown as { kind: string };
        const wanted = (options.labelSelector ?? "").split(",").filter((s) => s !== "").map((s) => s.split("="));
        return [...this.objects.values()].filter(
          (o) => o.kind === kind && (options.namespace === undefined || o.metadata.namespace === options.namespace) && wanted.every(([k = "", v]) => o.metadata.labels?.[k] === v),
        );
      },
      get,
      create: async (object) => {
        if (object.kind === "Pod" && this.failNextPodCreate) {
          this.failNextPodCreate = false;
          throw new TheseusError("unavailable", "the fake API server refused the pod");
        }
        const created: KubeObject = { ...object, metadata: { ...object.metadata, uid: `uid-${++this.#uid}` } };
        if (object.kind === "Pod") {
          created["status"] = { phase: "Running", podIP: `10.0.0.${this.#uid}`, conditions: [{ type: "Ready", status: "True" }] };
          this.podsCreated.push(object.metadata.name ?? "");
        }
        this.objects.set(FakeApi.key({ kind: object.kind, namespace: object.metadata.namespace ?? "", name: object.metadata.name ?? "" }), created);
        this.maxPods = Math.max(this.maxPods, this.pods().length);
        return created;
      },
      mergePatch: async (ref, patch) => {
        const current = await get(ref);
        if (current === undefined) throw new TheseusError("not_found", `${FakeApi.key(ref)} does not exist`);
        const merged: KubeObject = { ...current, metadata: { ...current.metadata, ...((patch["metadata"] ?? {})) } };
        this.objects.set(FakeApi.key(ref), merged);
        return merged;
      },
      delete: async (ref) => this.objects.delete(FakeApi.key(ref)),
    };
  }
}

function setup(limit: number): { fake: FakeApi; access: VolumeAccess; claim: (name: string) => Promise<MoverHandle> } {
  const fake = new FakeApi();
  for (const name of ["a", "b"]) {
    fake.objects.set(FakeApi.key({ kind: "PersistentVolumeClaim", namespace: "shop", name }), {
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: { name, namespace: "shop" },
      spec: { accessModes: ["ReadWriteOnce"] },
    });
  }
  const access = createMoverAccess({
    objects: fake.api(),
    clusterName: "eu-1",
    tls: { caPem: "ca", certPem: "cert", keyPem: "key" },
    image: "theseus.local/agent",
    limit,
    startTimeoutMs: 10_000,
    logger: silentLogger(),
    watchIntervalMs: 10,
  });
  return {
    fake,
    access,
    claim: async (name) => {
      const handle = await access.resolve({ namespace: "shop", name });
      if (handle.kind !== "mover") throw new Error("expected a mover handle");
      return handle;
    },
  };
}

const labels = { "theseus.io/migration": "m1" };

test("a migration's rounds of a claim share one mover pod until endMigration deletes it and its Secret; a copy's round gets its own", async (t) => {
  const { fake, access, claim } = setup(4);
  const a = await claim("a");
  const first = await a.start(undefined, labels, "m1");
  await first.release();
  t.is(fake.pods().length, 1, "a round's end leaves the migration's mover running");
  const second = await a.start(undefined, labels, "m1");
  t.is(second.endpoint.pod, first.endpoint.pod, "the next round reuses it");
  const third = await a.start(undefined, labels, "m1");
  t.is(third.endpoint.pod, first.endpoint.pod, "a round beside it shares it too");
  await Promise.all([second.release(), third.release()]);

  const copy = await a.start(undefined, {});
  t.not(copy.endpoint.pod, first.endpoint.pod, "a copy's round has a pod of its own");
  await copy.release();
  t.deepEqual(fake.pods().map((p) => p.metadata.name), [first.endpoint.pod], "the copy's pod went with its round");

  await access.endMigration?.("other", { untilGone: true });
  t.is(fake.pods().length, 1, "another migration's end leaves it");
  await access.endMigration?.("m1", { untilGone: true });
  t.deepEqual(fake.pods(), [], "no mover pod after the migration's end");
  t.deepEqual(fake.secrets(), [], "no mover Secret after the migration's end");
  t.is(fake.podsCreated.length, 2, `pods created: ${fake.podsCreated.join(", ")}`);
});

test("a kept mover whose pod is deleted fails its use through `lost`, and the next round starts a new one", async (t) => {
  const { fake, access, claim } = setup(4);
  const a = await claim("a");
  const first = await a.start(undefined, labels, "m1");
  fake.objects.delete(FakeApi.key({ kind: "Pod", namespace: "shop", name: first.endpoint.pod }));
  // The pool polls the pod (every 10 ms here): the round in flight learns of it through `lost`.
  await new Promise<void>((resolve) => first.lost.addEventListener("abort", () => resolve(), { once: true }));
  await first.release();
  const next = await a.start(undefined, labels, "m1");
  t.not(next.endpoint.pod, first.endpoint.pod);
  t.false(next.lost.aborted);
  await next.release();
  await access.endMigration?.("m1", { untilGone: true });
  t.deepEqual(fake.pods(), []);
  t.deepEqual(fake.secrets(), [], "the lost pod's Secret went too");
});

test("with every slot held by a migration's idle movers, another claim's round takes an idle one's slot instead of waiting forever", async (t) => {
  const { fake, access, claim } = setup(1);
  const [a, b] = [await claim("a"), await claim("b")];
  const onA = await a.start(undefined, labels, "m1");
  await onA.release();
  // Limit 1, taken by a's idle mover: b's round would wait for ever if idle kept movers held on to their slots.
  const onB = await b.start(undefined, labels, "m1");
  t.deepEqual(fake.pods().map((p) => p.metadata.name), [onB.endpoint.pod], "a's idle mover gave its slot up");
  // A round waiting for the slot gets it as soon as the busy kept mover's round ends.
  const waiting = a.start(undefined, labels, "m1");
  await onB.release();
  const again = await waiting;
  t.deepEqual(fake.pods().map((p) => p.metadata.name), [again.endpoint.pod]);
  await again.release();
  await access.endMigration?.("m1", { untilGone: true });
  t.is(fake.maxPods, 1, "never more movers than the limit");
  t.deepEqual(fake.pods(), []);
});

test("a failed start gives its slot back once: the limit still holds after it", async (t) => {
  const { fake, claim } = setup(1);
  const a = await claim("a");
  fake.failNextPodCreate = true;
  await t.throwsAsync(a.start(undefined, {}), { message: /refused the pod/ });
  const one = await a.start(undefined, {});
  const two = a.start(undefined, {});
  // The second waits for the first's slot; with the slot freed twice by the failure it would start at once (the fake
  // serves at once), which the bound below gives it time for. Never a false failure: a correct pool just waits.
  await Promise.race([two, sleep(300)]);
  t.is(fake.maxPods, 1, "the second start waits while the first runs");
  await one.release();
  await (await two).release();
  t.is(fake.maxPods, 1, "never more movers than the limit");
});

test("a round that arrives after its migration's movers were ended is refused, not given a pod nothing would delete", async (t) => {
  const { fake, access, claim } = setup(4);
  const a = await claim("a");
  await (await a.start(undefined, labels, "m1")).release();
  await access.endMigration?.("m1", { untilGone: true });
  const late = await t.throwsAsync(a.start(undefined, labels, "m1"), { instanceOf: TheseusError });
  t.is(late?.code, "failed_precondition");
  t.deepEqual(fake.pods(), [], "no pod for the late round");
  // A new migration under the same id (Begin) may keep movers again.
  access.beginMigration?.("m1");
  await (await a.start(undefined, labels, "m1")).release();
  t.is(fake.pods().length, 1);
  await access.endMigration?.("m1", { untilGone: true });
  t.deepEqual(fake.pods(), []);
});

test("an agent that shuts down deletes the movers its migrations kept", async (t) => {
  const { fake, access, claim } = setup(4);
  await (await (await claim("a")).start(undefined, labels, "m1")).release();
  await (await (await claim("b")).start(undefined, { "theseus.io/migration": "m2" }, "m2")).release();
  t.is(fake.pods().length, 2);
  await access.close?.();
  t.deepEqual(fake.pods(), []);
  t.deepEqual(fake.secrets(), []);
});
