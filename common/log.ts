// Logging is injected, never global (STYLE.md habit 7): components take a Logger and derive a child with their tag.
// pino writes JSON lines to stderr so that stdout stays free for a command's own output (tables, --json).
import { pino } from "pino";
import type { Logger as PinoLogger, Level } from "pino";

export type Logger = PinoLogger;
export type LogLevel = Level | "silent";

export interface LoggerOptions {
  readonly level?: LogLevel;
  readonly name?: string;
  /** Where the JSON lines go; defaults to stderr. */
  readonly destination?: NodeJS.WritableStream;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? "info",
      ...(options.name === undefined ? {} : { name: options.name }),
      // Secrets travel in these fields; never let them reach a log line, even at debug.
      redact: { paths: ["token", "sessionToken", "*.token", "*.sessionToken", "key", "*.key", "privateKey"], censor: "[redacted]" },
      base: { pid: process.pid },
    },
    (options.destination as pino.DestinationStream | undefined) ?? pino.destination(2),
  );
}

/** A logger that drops everything: for tests and for library calls whose caller wants silence. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
