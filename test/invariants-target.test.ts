// The crash matrix, target share: the target agent killed at each of its failpoints and restarted (its background
// pre-sync and its steps resume from its record in the cluster). Report: test-results/invariants/target.md.
import { registerMatrix } from "./invariants/matrix-file.js";

registerMatrix("dst", "Crash matrix: the target agent", (c) => c.owner === "target");
