// The invariant matrix (issue 9): every failpoint × the process that owns it, partitions and a full disk, each case a
// live migration on two local clusters. `npm test` runs it after the rest of the suite (and `npm run test:invariants`
// alone): 35 cases in about 14 minutes on a 2-core machine, two files at a time. It has its own config because its
// cases need a long timeout: a crashed agent's restart and a resumed coordinator are part of what each case measures.
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
