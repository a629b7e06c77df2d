// Where a participant lives between calls and across agent restarts: in the agent's own cluster, in its namespace.
// - ConfigMap theseus-migration-<id>: the record (spec, state, rate, rounds), updated only by compare-and-swap on its
//   resourceVersion, so that the lease watchdog and a Commit racing for the same transition cannot both win.
// - Secret theseus-migration-<id>: the transfer sessions' tokens (the source restores its sessions from it after a
//   restart; the target presents them), never in the ConfigMap and never logged.
// - Lease theseus-migration-<id> (coordination.k8s.io/v1): the source's lease while it is quiesced; renewTime plus
//   leaseDurationSeconds is when it restores itself, and survives the agent.
import type { JsonValue } from "@bufbuild/protobuf";
import type { KubeObject } from "../../app-model/index.js";
import { TheseusError } from "../../common/index.js";
import type { KubeObjects } from "../../kube/index.js";
import type { MigrationMode, ParticipantRole, ParticipantState } from "./state.js";

export interface VolumeRecord {
  readonly sourceVolume: string;
  readonly targetVolume: string;
  readonly sessionId: string;
  readonly usedBytes: number;
  /** RoundStats in protobuf JSON, oldest first (the last ROUNDS_KEPT). */
  readonly rounds: readonly JsonValue[];
}

export interface ParticipantRecord {
  readonly id: string;
  readonly role: ParticipantRole;
  readonly mode: MigrationMode;
  readonly app: { readonly namespace: string; readonly labelSelector: string; readonly helmRelease: string };
  readonly peerCluster: string;
  readonly peerAddress: string;
  readonly leaseSeconds: number;
  readonly bandwidthBytesPerSecond: number;
  readonly volumes: readonly VolumeRecord[];
  readonly state: ParticipantState;
  readonly createdAtMs: number;
  readonly updatedAtMs: number;
  /** Target: when the final round ended (Unix ms); a rollback proves that nothing wrote to the volumes since. */
  readonly syncedAtMs?: number;
}

export const ROUNDS_KEPT = 50;
const LABEL_PARTICIPANT = "theseus.io/participant";
const RECORD_KEY = "participant.json";
const TOKENS_KEY = "tokens.json";
const LEASE_HOLDER = "theseus-coordinator";
/** Compare-and-swap retries before giving up: each retry means another writer won a race, which is rare. */
const CAS_ATTEMPTS = 10;

export interface StoredRecord {
  readonly record: ParticipantRecord;
  readonly resourceVersion: string;
}

export interface ParticipantStore {
  readonly namespace: string;
  /** Creates the record; when one exists already (a retried Begin), returns that one unchanged. */
  create(record: ParticipantRecord, signal?: AbortSignal): Promise<StoredRecord>;
  get(id: string, signal?: AbortSignal): Promise<StoredRecord | undefined>;
  list(signal?: AbortSignal): Promise<StoredRecord[]>;
  /**
   * Reads, applies `change` and writes back if the resourceVersion is still the one read; on a conflict reads again
   * and re-applies. `change` returns undefined to write nothing (and may throw to refuse).
   */
  update(id: string, change: (record: ParticipantRecord) => ParticipantRecord | undefined, signal?: AbortSignal): Promise<StoredRecord>;
  putTokens(id: string, tokens: Readonly<Record<string, string>>, signal?: AbortSignal): Promise<void>;
  getTokens(id: string, signal?: AbortSignal): Promise<Record<string, string>>;
  /** Starts or renews the lease; returns when it expires (Unix ms). */
  renewLease(id: string, leaseSeconds: number, nowMs: number, signal?: AbortSignal): Promise<number>;
  /** When the lease expires (Unix ms), or undefined when there is none. */
  leaseExpiry(id: string, signal?: AbortSignal): Promise<number | undefined>;
  /** Removes the secret and the lease (the record stays, as the participant's history). */
  release(id: string, signal?: AbortSignal): Promise<void>;
  /** Removes the record too (a finished move's source leaves nothing of the migration behind). */
  remove(id: string, signal?: AbortSignal): Promise<void>;
}

export function objectName(id: string): string {
  return `theseus-migration-${id}`;
}

export function createParticipantStore(objects: KubeObjects, namespace: string): ParticipantStore {
  const configMapRef = (id: string) => ({ apiVersion: "v1", kind: "ConfigMap", namespace, name: objectName(id) });
  const secretRef = (id: string) => ({ apiVersion: "v1", kind: "Secret", namespace, name: objectName(id) });
  const leaseRef = (id: string) => ({ apiVersion: "coordination.k8s.io/v1", kind: "Lease", namespace, name: objectName(id) });
  let namespaceReady: Promise<void> | undefined;

  const ensureNamespace = (signal?: AbortSignal): Promise<void> => {
    namespaceReady ??= (async () => {
      const ref = { apiVersion: "v1", kind: "Namespace", namespace: "", name: namespace };
      if ((await objects.get(ref, signal)) !== undefined) return;
      await objects.create({ apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } }, signal).catch(ignoreExists);
    })().catch((error: unknown) => {
      namespaceReady = undefined;
      throw error;
    });
    return namespaceReady;
  };

  const parse = (object: KubeObject): StoredRecord => {
    const text = (object["data"] as Record<string, string> | undefined)?.[RECORD_KEY];
    if (text === undefined) throw new TheseusError("internal", `ConfigMap ${namespace}/${object.metadata.name ?? ""} holds no participant record`);
    return { record: JSON.parse(text) as ParticipantRecord, resourceVersion: object.metadata.resourceVersion ?? "" };
  };
  const configMap = (record: ParticipantRecord, resourceVersion?: string): KubeObject => ({
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: {
      name: objectName(record.id),
      namespace,
      labels: { [LABEL_PARTICIPANT]: record.id },
      ...(resourceVersion === undefined ? {} : { resourceVersion }),
    },
    data: { [RECORD_KEY]: JSON.stringify(record) },
  });

  const get = async (id: string, signal?: AbortSignal): Promise<StoredRecord | undefined> => {
    const object = await objects.get(configMapRef(id), signal);
    return object === undefined ? undefined : parse(object);
  };

  return {
    namespace,
    async create(record, signal) {
      await ensureNamespace(signal);
      try {
        return parse(await objects.create(configMap(record), signal));
      } catch (error) {
        if (!(error instanceof TheseusError && error.code === "already_exists")) throw error;
        const existing = await get(record.id, signal);
        if (existing === undefined) throw error;
        return existing;
      }
    },

    get,

    async list(signal) {
      await ensureNamespace(signal);
      const resource = await objects.resourceFor("v1", "ConfigMap", signal);
      const items = await objects.list(resource, { namespace, labelSelector: LABEL_PARTICIPANT }, signal);
      return items.map(parse);
    },

    async update(id, change, signal) {
      for (let attempt = 0; ; attempt++) {
        const current = await get(id, signal);
        if (current === undefined) throw new TheseusError("not_found", `this agent has no participant for migration ${id}`, { hint: "Begin creates it; `theseus list` shows the migrations" });
        const next = change(current.record);
        if (next === undefined) return current;
        try {
          const written = await objects.rest.json<KubeObject>({
            method: "PUT",
            path: `/api/v1/namespaces/${namespace}/configmaps/${objectName(id)}`,
            body: configMap(next, current.resourceVersion),
            what: `update ConfigMap ${namespace}/${objectName(id)}`,
            signal,
          });
          return parse(written);
        } catch (error) {
          // Another writer changed the record since we read it: apply the change to what it wrote instead.
          const conflict = error instanceof TheseusError && error.code === "failed_precondition";
          if (!conflict || attempt + 1 >= CAS_ATTEMPTS) throw error;
        }
      }
    },

    async putTokens(id, tokens, signal) {
      await ensureNamespace(signal);
      const secret: KubeObject = {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: objectName(id), namespace, labels: { [LABEL_PARTICIPANT]: id } },
        type: "Opaque",
        stringData: { [TOKENS_KEY]: JSON.stringify(tokens) },
      };
      try {
        await objects.create(secret, signal);
      } catch (error) {
        if (!(error instanceof TheseusError && error.code === "already_exists")) throw error;
        await objects.mergePatch(secretRef(id), { stringData: { [TOKENS_KEY]: JSON.stringify(tokens) } }, signal);
      }
    },

    async getTokens(id, signal) {
      const secret = await objects.get(secretRef(id), signal);
      const encoded = (secret?.["data"] as Record<string, string> | undefined)?.[TOKENS_KEY];
      return encoded === undefined ? {} : (JSON.parse(Buffer.from(encoded, "base64").toString("utf8")) as Record<string, string>);
    },

    async renewLease(id, leaseSeconds, nowMs, signal) {
      await ensureNamespace(signal);
      const spec = { holderIdentity: LEASE_HOLDER, leaseDurationSeconds: leaseSeconds, renewTime: microTime(nowMs) };
      const existing = await objects.get(leaseRef(id), signal);
      if (existing === undefined) {
        await objects
          .create({ apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: objectName(id), namespace, labels: { [LABEL_PARTICIPANT]: id } }, spec: { ...spec, acquireTime: microTime(nowMs) } }, signal)
          .catch(async (error: unknown) => {
            ignoreExists(error);
            await objects.mergePatch(leaseRef(id), { spec }, signal);
          });
      } else {
        await objects.mergePatch(leaseRef(id), { spec }, signal);
      }
      return nowMs + leaseSeconds * 1000;
    },

    async leaseExpiry(id, signal) {
      const lease = await objects.get(leaseRef(id), signal);
      const spec = lease?.["spec"] as { renewTime?: string; leaseDurationSeconds?: number } | undefined;
      if (spec?.renewTime === undefined || spec.leaseDurationSeconds === undefined) return undefined;
      return Date.parse(spec.renewTime) + spec.leaseDurationSeconds * 1000;
    },

    async release(id, signal) {
      await objects.delete(secretRef(id), signal);
      await objects.delete(leaseRef(id), signal);
    },

    async remove(id, signal) {
      await objects.delete(secretRef(id), signal);
      await objects.delete(leaseRef(id), signal);
      await objects.delete(configMapRef(id), signal);
    },
  };
}

function ignoreExists(error: unknown): void {
  if (!(error instanceof TheseusError && error.code === "already_exists")) throw error;
}

/** Kubernetes' MicroTime: RFC 3339 with exactly six fractional digits. */
function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}
