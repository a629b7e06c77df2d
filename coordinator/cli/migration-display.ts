// The live display of a migration: on a terminal, cli-progress bars (one per volume, for the round it runs, with
// rate and ETA) under a status line (phase, predicted downtime, what the policy says); anywhere else, plain lines,
// one per phase, round and prediction, and progress at most every few seconds, so a log file stays readable.
import { MultiBar, Presets } from "cli-progress";
import type { SingleBar } from "cli-progress";
import { formatBytes, formatDuration } from "../../common/index.js";
import type { MigrationEvent } from "../migration/index.js";

export interface MigrationDisplay {
  show(event: MigrationEvent): void;
  /** A line of its own (above the bars on a terminal). */
  say(text: string): void;
  stop(): void;
}

const PLAIN_PROGRESS_EVERY_MS = 5_000;

interface VolumeView {
  round: number;
  total: number;
  lastBytes: number;
  lastAtMs: number;
  rate: number;
  plainAtMs: number;
  bar: SingleBar | undefined;
}

export function createMigrationDisplay(stream: NodeJS.WriteStream): MigrationDisplay {
  const tty = stream.isTTY;
  const volumes = new Map<string, VolumeView>();
  let multi: MultiBar | undefined;
  let statusBar: SingleBar | undefined;
  let phase = "";
  let prediction = "";

  const bars = (): MultiBar => {
    if (multi === undefined) {
      multi = new MultiBar(
        { stream, format: "{label} {bar} {detail}", barsize: 30, hideCursor: true, clearOnComplete: false, autopadding: true, gracefulExit: false, linewrap: false },
        Presets.shades_classic,
      );
      statusBar = multi.create(1, 0, { label: "", detail: "" }, { format: "{label}" });
    }
    return multi;
  };
  const line = (text: string): void => {
    if (tty) bars().log(`${text}\n`);
    else stream.write(`${text}\n`);
  };
  const refreshStatus = (): void => {
    if (!tty) return;
    bars();
    statusBar?.update(0, { label: `phase ${phase}${prediction === "" ? "" : ` · ${prediction}`}` });
  };
  const volume = (name: string): VolumeView => {
    let v = volumes.get(name);
    if (v === undefined) {
      v = { round: 1, total: 0, lastBytes: 0, lastAtMs: Date.now(), rate: 0, plainAtMs: 0, bar: undefined };
      volumes.set(name, v);
    }
    return v;
  };

  return {
    show(event) {
      switch (event.type) {
        case "phase":
          phase = event.phase;
          line(`phase ${event.phase}`);
          refreshStatus();
          break;
        case "round": {
          const r = event.round;
          const v = volume(event.volume);
          v.round = r.round + 1;
          v.total = Math.max(Number(r.bytesChanged), 1);
          v.lastBytes = 0;
          v.bar?.update(v.bar.getTotal(), { label: event.volume, detail: `round ${r.round} done` });
          // Files taken as unchanged by size, mtime and mode after a side's cache was lost, not read yet (the quick
          // check; later rounds verify them): worth saying, since a commit after this round trusts them.
          const vouched = Number(r.vouchedUnverified) + Number(r.targetVouchedUnverified);
          line(
            `round ${r.round} of ${event.volume}: ${formatBytes(Number(r.bytesChanged))} changed in ${formatDuration(Number(r.durationMs))} ` +
              `(${formatBytes(Number(r.wireBytes))} on the wire), app writing ${formatBytes(r.dirtyBytesPerSecond)}/s` +
              (vouched > 0 ? `; ${vouched} files taken as unchanged by size and mtime (a lost cache), not read yet` : ""),
          );
          break;
        }
        case "progress": {
          const v = volume(event.volume);
          const bytes = Number(event.progress.bytes);
          const now = Date.now();
          if (bytes < v.lastBytes) v.lastBytes = 0;
          const elapsed = (now - v.lastAtMs) / 1000;
          if (elapsed > 0) v.rate = v.rate === 0 ? (bytes - v.lastBytes) / elapsed : 0.7 * v.rate + (0.3 * (bytes - v.lastBytes)) / elapsed;
          v.lastBytes = bytes;
          v.lastAtMs = now;
          // The first round copies the volume; later ones carry about what the previous one did.
          const total = Math.max(v.round <= 1 ? event.usedBytes : v.total, bytes, 1);
          const eta = v.rate > 0 ? formatDuration(((total - bytes) * 1000) / v.rate) : "?";
          const detail = `round ${v.round} ${formatBytes(bytes)}/${formatBytes(total)} ${formatBytes(Math.round(v.rate))}/s ETA ${eta}`;
          if (tty) {
            v.bar ??= bars().create(total, 0, { label: event.volume, detail });
            v.bar.setTotal(total);
            v.bar.update(bytes, { label: event.volume, detail });
          } else if (now - v.plainAtMs >= PLAIN_PROGRESS_EVERY_MS) {
            v.plainAtMs = now;
            line(`${event.volume}: ${detail}`);
          }
          break;
        }
        case "prediction": {
          const p = event.prediction;
          prediction = `predicted downtime ${formatDuration(p.downtimeMs)} (final round ${formatBytes(Math.round(p.finalRoundBytes))}, ${p.convergence.kind})`;
          line(`prediction: ${prediction}; ${event.decision.action}: ${event.decision.why}`);
          refreshStatus();
          break;
        }
        case "message":
          line(event.text);
          break;
      }
    },
    say: line,
    stop() {
      multi?.stop();
      multi = undefined;
    },
  };
}
