// The crash matrix, source share: the source agent killed at each of its failpoints and restarted (its participant
// resumes from its record in the cluster), plus the coordinator's crashes that leave the quiesced source to its lease.
// Report: test-results/invariants/source.md.
import { registerMatrix } from "./invariants/matrix-file.js";

registerMatrix("src", "Crash matrix: the source agent, and lease expiry", (c) => c.owner === "source" || c.recovery === "lease");
