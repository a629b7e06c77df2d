// The fat-chart half of the AgentService (ExportVolume, ImportVolume): thin adapters from the wire to agent/archive/.
// A claim is reached through the volume registry ("NAMESPACE/CLAIM", direct access for local and hostPath PVs). An
// import writes only into a claim that Stage created for the import's migration id: never into a claim that was
// there before (adopted or foreign), whose data the emptying would destroy.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ANNOTATION_STAGED, LABEL_MIGRATION } from "../app-model/index.js";
import { TheseusError } from "../common/index.js";
import type { Logger } from "../common/index.js";
import type { Implementation } from "../rpc/index.js";
import type { AgentService, ImportVolumeHeader, VolumeArchiveSummarySchema } from "../proto/gen/theseus/v1/agent_pb.js";
import { packVolume, restoreVolume } from "./archive/index.js";
import type { ArchiveSummary } from "./archive/index.js";
import { requireCluster, validateMigrationId } from "./cluster/index.js";
import type { ClusterAccess } from "./cluster/index.js";
import { CACHE_DIR, LOCK_NAME, STAGING_DIR } from "./sync/index.js";
import type { VolumeRegistry } from "./volumes.js";

export type ArchiveHandlers = Pick<Implementation<typeof AgentService>, "exportVolume" | "importVolume">;

export interface ArchiveServiceDeps {
  readonly cluster: ClusterAccess | undefined;
  readonly volumes: VolumeRegistry;
  readonly logger: Logger;
}

/** The most entries an import may announce, whatever its header says. */
const MAX_ENTRIES = 50_000_000;

export function createArchiveService(deps: ArchiveServiceDeps): ArchiveHandlers {
  const logger = deps.logger.child({ component: "archive" });
  return {
    async *exportVolume(request, ctx) {
      const volume = claimRef(request.volume);
      const root = await deps.volumes.root(volume, ctx.signal);
      logger.info({ volume, by: ctx.peer.name }, "exporting a volume archive");
      // Theseus's own entries at the root (a target's staging, the volume's sync state and lock) are not the app's.
      for await (const event of packVolume(root, ctx.signal, new Set([STAGING_DIR, CACHE_DIR, LOCK_NAME]))) {
        if (event.type === "data") yield { event: { case: "data", value: event.data } };
        else if (event.type === "progress") yield { event: { case: "progress", value: { entries: BigInt(event.progress.entries), bytes: BigInt(event.progress.bytes) } } };
        else {
          logger.info({ volume, entries: event.summary.entries, bytes: event.summary.bytes }, "volume archive exported");
          yield { event: { case: "done", value: summaryToWire(event.summary) } };
        }
      }
    },

    async importVolume(requests, ctx) {
      const iterator = requests[Symbol.asyncIterator]();
      const first = await iterator.next();
      if (first.done === true || first.value.item.case !== "header") throw new TheseusError("invalid_argument", "ImportVolume: the first message must be the header");
      const header = first.value.item.value;
      const migrationId = validateMigrationId(header.migrationId);
      const volume = claimRef(header.volume);
      await requireStagedClaim(requireCluster(deps.cluster), volume, migrationId, ctx.signal);
      const root = await deps.volumes.root(volume, ctx.signal);
      const limits = limitsOf(header);
      async function* chunks(): AsyncGenerator<Uint8Array> {
        for (;;) {
          const next = await iterator.next();
          if (next.done === true) return;
          if (next.value.item.case === "data") yield next.value.item.value;
          else if (next.value.item.case === "header") throw new TheseusError("invalid_argument", "ImportVolume: the header came twice");
        }
      }
      const log = logger.child({ volume, migrationId });
      log.info({ ...limits, by: ctx.peer.name }, "importing a volume archive");
      try {
        const summary = await restoreVolume(root, chunks(), { ...limits, digest: header.digest, signal: ctx.signal });
        log.info({ entries: summary.entries, bytes: summary.bytes }, "volume archive imported and verified");
        return { summary: summaryToWire(summary) };
      } catch (error) {
        log.warn({ err: TheseusError.from(error).message }, "volume archive refused; the volume was emptied");
        throw error;
      }
    },
  };
}

function claimRef(volume: string): string {
  if (!/^[^/]+\/[^/]+$/.test(volume)) throw new TheseusError("invalid_argument", `"${volume}" is not a claim reference NAMESPACE/CLAIM`, { hint: "for example shop/data-db-0" });
  return volume;
}

function limitsOf(header: ImportVolumeHeader): { maxEntries: number; maxBytes: number; maxTarBytes: number } {
  const maxTarBytes = Number(header.maxTarBytes);
  const maxEntries = Number(header.maxEntries);
  if (maxTarBytes <= 0 || maxEntries <= 0) throw new TheseusError("invalid_argument", "ImportVolume: the header must bound the archive (max_tar_bytes, max_entries)", { hint: "take them from the archive's manifest" });
  if (maxEntries > MAX_ENTRIES) throw new TheseusError("resource_exhausted", `ImportVolume: ${maxEntries} entries is more than this agent takes (${MAX_ENTRIES})`);
  return { maxEntries, maxBytes: maxTarBytes, maxTarBytes };
}

async function requireStagedClaim(cluster: ClusterAccess, volume: string, migrationId: string, signal: AbortSignal): Promise<void> {
  const [namespace = "", name = ""] = volume.split("/");
  const claim = await cluster.objects.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace, name }, signal);
  if (claim === undefined) throw new TheseusError("not_found", `claim ${volume} does not exist`, { hint: "stage the import first" });
  if (claim.metadata.labels?.[LABEL_MIGRATION] !== migrationId || claim.metadata.annotations?.[ANNOTATION_STAGED] !== "created") {
    throw new TheseusError("failed_precondition", `claim ${volume} was not created by import ${migrationId}, so it is not emptied and written`, {
      hint: "import into a namespace where the claim does not exist yet, or delete it first",
    });
  }
}

const summaryToWire = (s: ArchiveSummary): MessageInitShape<typeof VolumeArchiveSummarySchema> => ({
  digest: s.digest,
  entries: BigInt(s.entries),
  bytes: BigInt(s.bytes),
  tarBytes: BigInt(s.tarBytes),
  specialFilesSkipped: BigInt(s.specialFilesSkipped),
  firstSpecialFile: s.firstSpecialFile,
  filesChangedWhileRead: BigInt(s.filesChangedWhileRead),
});
