// The images the emulated kubelet can run, in one place. There is no container engine: an image name maps to a
// program in this repository, run as a local process with `node`. A pod's `command` replaces the entrypoint (as in
// Docker) and its `args` replace the default arguments.
import { join } from "node:path";
import { repoRoot } from "./paths.js";

export interface KnownImage {
  /** Repository without tag or digest, e.g. theseus.local/demo-app. */
  readonly repository: string;
  readonly description: string;
  /** Script under the repository root that the image runs with node. */
  readonly script: string;
  readonly defaultArgs: readonly string[];
}

export const KNOWN_IMAGES: readonly KnownImage[] = [
  {
    repository: "theseus.local/demo-app",
    description: "the demo app (HTTP service appending acknowledged records to its volume)",
    script: "dist/local-clusters/demo-app/main.js",
    defaultArgs: ["serve"],
  },
  {
    repository: "theseus.local/agent",
    description: "the Theseus agent (movers)",
    script: "dist/agent/main.js",
    defaultArgs: [],
  },
  {
    repository: "theseus.local/test-sleeper",
    description: "a tiny test program: HTTP /healthz on $POD_IP:$PORT, optional file writes, clean SIGTERM",
    script: "dist/local-clusters/testing/sleeper.js",
    defaultArgs: [],
  },
];

export interface ResolvedImage {
  readonly image: string;
  readonly known: KnownImage;
  /** Entrypoint argv (node + script). */
  readonly entrypoint: readonly string[];
}

/** Repository part of an image reference: drops `@digest` and a `:tag` after the last slash. */
export function imageRepository(image: string): string {
  const noDigest = image.split("@")[0] ?? image;
  const slash = noDigest.lastIndexOf("/");
  const colon = noDigest.lastIndexOf(":");
  return colon > slash ? noDigest.slice(0, colon) : noDigest;
}

export function resolveImage(image: string): ResolvedImage | undefined {
  const repository = imageRepository(image);
  const known = KNOWN_IMAGES.find((k) => k.repository === repository);
  if (known === undefined) return undefined;
  return { image, known, entrypoint: [process.execPath, join(repoRoot, known.script)] };
}

export function knownImagesText(): string {
  return KNOWN_IMAGES.map((k) => `${k.repository} (${k.description})`).join(", ");
}
