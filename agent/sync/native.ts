// The sync engine's native addon (agent/sync/fingerprints: fingerprints.c on the vendored xxhash.h, and walk.c, built
// by `npm ci`), CommonJS: block hashes many blocks per call (block-list.ts), directory entries' lstat many per call
// (walk.ts).
import { createRequire } from "node:module";
import { TheseusError } from "../../common/index.js";
import type * as Addon from "theseus-block-fingerprints";

export const nativeAddon: typeof Addon = loadAddon();

function loadAddon(): typeof Addon {
  try {
    return createRequire(import.meta.url)("theseus-block-fingerprints") as typeof Addon;
  } catch (cause) {
    // An install with --ignore-scripts, or without a compiler, leaves it unbuilt: say so, not "Cannot find module".
    throw new TheseusError("failed_precondition", "the sync engine's native addon (theseus-block-fingerprints) is not built", {
      cause,
      hint: "run `npm rebuild theseus-block-fingerprints` (it needs python3, make and g++), or `npm ci` without --ignore-scripts",
    });
  }
}
