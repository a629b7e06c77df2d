// The crash matrix, coordinator share: the coordinator killed (exit 137, as kill -9) at each of its failpoints during a
// live migration of the demo app under write load, then `theseus resume ID` (at once, or after the source's lease ran
// out); the four invariants checked on two real API servers. Report: test-results/invariants/coordinator.md.
import { registerMatrix } from "./invariants/matrix-file.js";

registerMatrix("coord", "Crash matrix: the coordinator", (c) => c.owner === "coordinator" && c.recovery === "restart");
