// The migration service (MigrationService), called by coordinators: thin adapters over the agent's participants
// (agent/migration/), keyed by migration id. Every call is idempotent there; here requests only become arguments.
import type { Implementation } from "../rpc/index.js";
import type { MigrationService } from "../proto/gen/theseus/v1/migration_pb.js";
import type { Migrations } from "./migration/index.js";

export function createMigrationService(migrations: Migrations): Implementation<typeof MigrationService> {
  const ms = (seconds: number): number => seconds * 1000;
  return {
    begin: (request, ctx) => migrations.begin(request, ctx.signal),
    watch: (request, ctx) => migrations.watch(request.migrationId, ctx.signal),
    getStatus: (request, ctx) => migrations.status(request.migrationId, ctx.signal),
    list: async (_request, ctx) => ({ participants: await migrations.list(ctx.signal) }),
    setRate: async (request, ctx) => {
      await migrations.setRate(request.migrationId, Number(request.bytesPerSecond), ctx.signal);
      return {};
    },
    prepare: (request, ctx) => migrations.prepare(request.migrationId, ctx.signal),
    quiesce: async (request, ctx) => {
      const result = await migrations.quiesce(request.migrationId, ms(request.timeoutSeconds), ctx.signal);
      return { durationMs: BigInt(result.durationMs), changed: [...result.changed] };
    },
    finalRound: async (request, ctx) => {
      const result = await migrations.finalRound(request.migrationId, ctx.signal);
      return { volumes: result.volumes, durationMs: BigInt(result.durationMs) };
    },
    commit: async (request, ctx) => ({ status: await migrations.commit(request.migrationId, ms(request.timeoutSeconds), ctx.signal) }),
    abort: async (request, ctx) => ({ status: await migrations.abort(request.migrationId, request.reason, ctx.signal, request.rollback) }),
    renew: async (request, ctx) => ({ leaseExpiresAtUnixMs: BigInt(await migrations.renew(request.migrationId, request.leaseSeconds, ctx.signal)) }),
    finish: async (request, ctx) => ({ status: await migrations.finish(request.migrationId, ctx.signal) }),
  };
}
