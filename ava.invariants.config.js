// The invariant matrix (issue 9): every failpoint × the process that owns it, partitions and a full disk, each case a
// live migration on two local clusters. It is its own run (`npm run test:invariants`), not part of `npm test`: on an
// idle 2-core machine it takes tens of minutes, and its cases need a long timeout because a crashed agent's restart
// and a resumed coordinator are part of what each case measures.
export default {
  files: [
    "test/invariants-coordinator.test.ts",
    "test/invariants-source.test.ts",
    "test/invariants-target.test.ts",
    "test/invariants-partitions.test.ts",
  ],
  typescript: { rewritePaths: { "test/": "dist/test/" }, compile: false },
  timeout: "30m",
  concurrency: 2,
  workerThreads: false,
};
